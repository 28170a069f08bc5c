#!/usr/bin/env node
// Enqueues jobs into adjutantd, from Node.js with @grpc/grpc-js; the API is
// loaded from proto/ at run time by @grpc/proto-loader (no generated code).
//
// Each job asks a worker (worker.js, or examples/python/worker.py) to square
// a number: job_type "square", payload the JSON text {"n": <i>} for
// i = 0 .. N-1. --payload replaces that payload with fixed text, to see what
// a worker does with a job it cannot process.
//
//   node examples/node/producer.js --server 127.0.0.1:50051 --queue squares --count 50
//
// Prints one line "enqueued <job_id> <payload>" per job, then
// "enqueued <N> jobs to queue <queue>". A bad flag exits 2, an RPC error
// exits 1, both with a message on stderr naming the cause.
'use strict';

const path = require('path');
const {parseArgs} = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const RPC_TIMEOUT_MS = 30000;  // a guard against a hung daemon, not a pace

const USAGE = `usage: node producer.js [--server HOST:PORT] [--queue QUEUE] [--count N]
                        [--job-type TYPE] [--payload TEXT] [--max-attempts N]

Enqueue jobs that ask a worker to square a number.

  --server HOST:PORT  adjutantd's address (default 127.0.0.1:50051)
  --queue QUEUE       queue to enqueue into (default squares)
  --count N           how many jobs, 1 to 100000 (default 10)
  --job-type TYPE     job_type of every job (default square)
  --payload TEXT      fixed payload text instead of {"n": i}
  --max-attempts N    leases allowed before a job goes DEAD; 0 means the
                      server default (default 0)`;

function usageError(message) {
  console.error(`${USAGE}\nproducer.js: error: ${message}`);
  process.exit(2);
}

// Parses `text` as an integer flag value in [min, max], or exits 2 naming
// the flag.
function intFlag(name, text, min, max) {
  const value = Number(text);
  if (!/^-?\d+$/.test(text) || value < min || value > max) {
    usageError(`--${name} must be an integer between ${min} and ${max}, got '${text}'`);
  }
  return value;
}

function parseFlags(argv) {
  let values;
  try {
    ({values} = parseArgs({
      args: argv,
      options: {
        'server': {type: 'string', default: '127.0.0.1:50051'},
        'queue': {type: 'string', default: 'squares'},
        'count': {type: 'string', default: '10'},
        'job-type': {type: 'string', default: 'square'},
        'payload': {type: 'string'},
        'max-attempts': {type: 'string', default: '0'},
        'help': {type: 'boolean', short: 'h'},
      },
    }));
  } catch (e) {
    usageError(e.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  return {
    server: values['server'],
    queue: values['queue'],
    count: intFlag('count', values['count'], 1, 100000),
    jobType: values['job-type'],
    payload: values['payload'],
    maxAttempts: intFlag('max-attempts', values['max-attempts'], 0, 1000),
  };
}

// Returns a JobQueue client for `server`, built from proto/ at run time.
function jobQueueClient(server) {
  const definition = protoLoader.loadSync('adjutant/v1/job_queue.proto', {
    includeDirs: [path.join(__dirname, '..', '..', 'proto')],
    keepCase: true,    // field names as in the .proto: job_id, lease_token
    longs: String,     // Timestamp.seconds is an int64
    enums: String,     // state: 'JOB_STATE_SUCCEEDED'
    defaults: true,
  });
  const v1 = grpc.loadPackageDefinition(definition).adjutant.v1;
  return new v1.JobQueue(server, grpc.credentials.createInsecure());
}

// Calls the unary `method` of `client` with `request`, as a promise.
function call(client, method, request, timeoutMs = RPC_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, {deadline: Date.now() + timeoutMs},
                   (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const client = jobQueueClient(flags.server);
  try {
    for (let i = 0; i < flags.count; i++) {
      const payload = flags.payload !== undefined ? flags.payload : JSON.stringify({n: i});
      let response;
      try {
        response = await call(client, 'Enqueue', {
          queue: flags.queue,
          job_type: flags.jobType,
          payload: Buffer.from(payload, 'utf8'),
          max_attempts: flags.maxAttempts,
        });
      } catch (e) {
        console.error(`producer: Enqueue of job ${i} failed: ${grpc.status[e.code]}: ${e.details}`);
        return 1;
      }
      console.log(`enqueued ${response.job_id} ${payload}`);
    }
    console.log(`enqueued ${flags.count} jobs to queue ${flags.queue}`);
    return 0;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; });
