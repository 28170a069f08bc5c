#!/usr/bin/env node
// A worker for adjutantd, from Node.js with @grpc/grpc-js: lease, process,
// ack. The API is loaded from proto/ at run time by @grpc/proto-loader.
//
// Long-polls one queue for jobs, processes each, and acks it; a job that
// fails is nacked with the error text. Handles job_type "square" (payload the
// JSON text {"n": <integer>}, as producer.js enqueues them):
// - a payload that is not such JSON, or a job_type without a handler, can
//   never succeed: the job is nacked with dead = true and goes DEAD at once;
// - any other exception is nacked for a retry after the server's backoff.
//
//   node examples/node/worker.js --server 127.0.0.1:50051 --queue squares --idle-exit 5
//
// It exits 0 after --max-jobs jobs, or once the queue has stayed empty for
// --idle-exit seconds, or on SIGTERM / SIGINT after the job in hand (jobs
// leased but not started are handed back with a Nack, runnable at once). It
// prints one line per job ("acked <job_id> attempt <k> n=<n> result=<n*n>" or
// "nacked <job_id> attempt <k> dead|retry: <error>") and a closing line
// "worker: <N> jobs, <A> acked, <K> nacked". A bad flag exits 2; an RPC error
// other than a lost lease exits 1 with the gRPC code and message on stderr.
'use strict';

const path = require('path');
const {parseArgs} = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const RPC_TIMEOUT_MS = 30000;  // a guard against a hung daemon, not a pace

const USAGE = `usage: node worker.js [--server HOST:PORT] [--queue QUEUE] [--worker-id ID]
                      [--max-jobs N] [--idle-exit SECONDS] [--poll SECONDS]
                      [--lease SECONDS] [--batch N]

Lease jobs from one queue, process them, ack or nack.

  --server HOST:PORT   adjutantd's address (default 127.0.0.1:50051)
  --queue QUEUE        queue to lease from (default squares)
  --worker-id ID       worker_id stored on leased jobs (default node-<pid>)
  --max-jobs N         exit after this many jobs; 0 means no limit (default 0)
  --idle-exit SECONDS  exit once the queue has stayed empty this long (default 10)
  --poll SECONDS       long-poll wait of each Dequeue, at most 300 (default 5)
  --lease SECONDS      lease duration, 1 to 86400 (default 30)
  --batch N            jobs leased per Dequeue, 1 to 100 (default 1)`;

// A job that no retry can make succeed.
class PermanentError extends Error {}

// The "square" handler: returns {n, result: n*n} for a payload {"n": n}.
function square(payload) {
  let body;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch (e) {
    throw new PermanentError(`payload is not JSON: ${e.message}`);
  }
  const n = body !== null && typeof body === 'object' ? body.n : undefined;
  if (!Number.isSafeInteger(n)) {
    throw new PermanentError(`payload needs an integer "n", got ${JSON.stringify(body)}`);
  }
  return {n, result: BigInt(n) * BigInt(n)};
}

const HANDLERS = {square};

function usageError(message) {
  console.error(`${USAGE}\nworker.js: error: ${message}`);
  process.exit(2);
}

// Parses `text` as a number flag in [min, max] (an integer if `integer`), or
// exits 2 naming the flag. `min` itself is refused when `minExclusive`.
function numberFlag(name, text, {min, max, integer = false, minExclusive = false}) {
  const value = Number(text);
  const ok = text.trim() !== '' && Number.isFinite(value) &&
             (!integer || Number.isInteger(value)) &&
             (minExclusive ? value > min : value >= min) && value <= max;
  if (!ok) {
    const what = integer ? 'an integer' : 'a number';
    const range = minExclusive ? `in (${min}, ${max}]` : `between ${min} and ${max}`;
    usageError(`--${name} must be ${what} ${range}, got '${text}'`);
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
        'worker-id': {type: 'string', default: `node-${process.pid}`},
        'max-jobs': {type: 'string', default: '0'},
        'idle-exit': {type: 'string', default: '10'},
        'poll': {type: 'string', default: '5'},
        'lease': {type: 'string', default: '30'},
        'batch': {type: 'string', default: '1'},
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
    workerId: values['worker-id'],
    maxJobs: numberFlag('max-jobs', values['max-jobs'], {min: 0, max: 1e9, integer: true}),
    idleExitMs: 1000 * numberFlag('idle-exit', values['idle-exit'],
                                  {min: 0, max: 1e6, minExclusive: true}),
    pollMs: 1000 * numberFlag('poll', values['poll'], {min: 0, max: 300, minExclusive: true}),
    leaseSeconds: numberFlag('lease', values['lease'], {min: 1, max: 86400, integer: true}),
    batch: numberFlag('batch', values['batch'], {min: 1, max: 100, integer: true}),
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

// A google.protobuf.Duration of `ms` milliseconds.
function duration(ms) {
  return {seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6)};
}

// An RPC failure the worker cannot go on after.
class FatalRpcError extends Error {
  constructor(what, e) {
    super(`${what} failed: ${grpc.status[e.code]}: ${e.details}`);
  }
}

// Acks or nacks; a FAILED_PRECONDITION (the job was cancelled, or its lease
// expired and another worker may hold it) is reported and survived.
async function settle(client, method, request) {
  try {
    await call(client, method, request);
    return true;
  } catch (e) {
    if (e.code !== grpc.status.FAILED_PRECONDITION) throw new FatalRpcError(method, e);
    console.log(`lost lease ${request.job_id} ${e.details}`);
    return false;
  }
}

async function work(client, flags, stopping) {
  const counts = {handled: 0, acked: 0, nacked: 0};
  let idleSince = Date.now();
  while (!stopping.requested) {
    if (flags.maxJobs && counts.handled >= flags.maxJobs) break;
    const idleLeftMs = flags.idleExitMs - (Date.now() - idleSince);
    if (idleLeftMs <= 0) break;
    const waitMs = Math.min(flags.pollMs, idleLeftMs);
    let want = flags.batch;
    if (flags.maxJobs) want = Math.min(want, flags.maxJobs - counts.handled);
    let leased;
    try {
      ({jobs: leased} = await call(client, 'Dequeue', {
        queue: flags.queue,
        max_jobs: want,
        worker_id: flags.workerId,
        lease_duration: {seconds: flags.leaseSeconds, nanos: 0},
        wait: duration(waitMs),
      }, waitMs + RPC_TIMEOUT_MS));
    } catch (e) {
      throw new FatalRpcError('Dequeue', e);
    }
    if (leased.length > 0) idleSince = Date.now();
    for (const {job, lease_token} of leased) {
      if (stopping.requested) {
        // Hands back the jobs not started, runnable at once.
        await call(client, 'Nack', {job_id: job.job_id, lease_token, error: 'worker stopping',
                                    retry_after: {seconds: 0, nanos: 0}})
            .catch(() => {});  // the lease expires on its own
        continue;
      }
      counts.handled++;
      let outcome;
      try {
        if (!Object.prototype.hasOwnProperty.call(HANDLERS, job.job_type)) {
          throw new PermanentError(`no handler for job_type '${job.job_type}'`);
        }
        outcome = await HANDLERS[job.job_type](job.payload);
      } catch (e) {
        const dead = e instanceof PermanentError;
        const error = e instanceof Error ? e.message : String(e);
        if (await settle(client, 'Nack', {job_id: job.job_id, lease_token, error, dead})) {
          counts.nacked++;
          console.log(`nacked ${job.job_id} attempt ${job.attempts} ${dead ? 'dead' : 'retry'}: ${error}`);
        }
        continue;
      }
      if (await settle(client, 'Ack', {job_id: job.job_id, lease_token})) {
        counts.acked++;
        console.log(`acked ${job.job_id} attempt ${job.attempts} n=${outcome.n} result=${outcome.result}`);
      }
    }
  }
  return counts;
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const stopping = {requested: false};
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => { stopping.requested = true; });
  }
  const client = jobQueueClient(flags.server);
  try {
    const {handled, acked, nacked} = await work(client, flags, stopping);
    console.log(`worker: ${handled} jobs, ${acked} acked, ${nacked} nacked`);
    return 0;
  } catch (e) {
    if (!(e instanceof FatalRpcError)) throw e;
    console.error(`worker: ${e.message}`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; });
