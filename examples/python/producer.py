#!/usr/bin/python3
"""Enqueues jobs into adjutantd, from Python.

Each job asks a worker (worker.py, or examples/node/worker.js) to square a
number: job_type "square", payload the JSON text {"n": <i>} for i = 0 .. N-1.
--payload replaces that payload with fixed text, to see what a worker does
with a job it cannot process.

    /usr/bin/python3 examples/python/producer.py --server 127.0.0.1:50051 \\
        --queue squares --count 50

Prints one line "enqueued <job_id> <payload>" per job, then
"enqueued <N> jobs to queue <queue>". A bad flag exits 2, an RPC error
exits 1, both with a message on stderr naming the cause. With
$ADJUTANT_TOKEN set, every call carries it as "authorization: Bearer" (for
an adjutantd started with --auth-tokens; the token needs the producer role).

The stubs are generated from proto/ by protoc with Debian's
grpc_python_plugin (see job_life.py); only Debian's python3-grpcio and
python3-protobuf are needed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from job_life import call_metadata, load_stubs  # noqa: E402

RPC_TIMEOUT_SECONDS = 30  # a guard against a hung daemon, not a pace


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="producer.py",
        description="Enqueue jobs that ask a worker to square a number.")
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="adjutantd's HOST:PORT (default %(default)s)")
    parser.add_argument("--queue", default="squares",
                        help="queue to enqueue into (default %(default)s)")
    parser.add_argument("--count", type=int, default=10,
                        help="how many jobs, 1 to 100000 (default %(default)s)")
    parser.add_argument("--job-type", default="square",
                        help="job_type of every job (default %(default)s)")
    parser.add_argument("--payload", default=None,
                        help='fixed payload text instead of {"n": i}')
    parser.add_argument("--max-attempts", type=int, default=0,
                        help="leases allowed before a job goes DEAD, 0 to 1000; "
                             "0 means the server default (default %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100000:
        parser.error("--count must be between 1 and 100000, got %d" % args.count)
    if not 0 <= args.max_attempts <= 1000:
        parser.error("--max-attempts must be between 0 and 1000, got %d"
                     % args.max_attempts)
    return args


def main(argv):
    args = parse_args(argv)
    load_stubs()
    import grpc
    from adjutant.v1 import job_queue_pb2 as pb
    from adjutant.v1 import job_queue_pb2_grpc as rpc

    metadata = call_metadata()  # $ADJUTANT_TOKEN, if set
    with grpc.insecure_channel(args.server) as channel:
        queue = rpc.JobQueueStub(channel)
        for i in range(args.count):
            payload = (args.payload if args.payload is not None
                       else json.dumps({"n": i}))
            try:
                response = queue.Enqueue(
                    pb.EnqueueRequest(queue=args.queue, job_type=args.job_type,
                                      payload=payload.encode("utf-8"),
                                      max_attempts=args.max_attempts),
                    timeout=RPC_TIMEOUT_SECONDS, metadata=metadata)
            except grpc.RpcError as e:
                print("producer: Enqueue of job %d failed: %s: %s"
                      % (i, e.code().name, e.details()), file=sys.stderr)
                return 1
            print("enqueued", response.job_id, payload, flush=True)
    print("enqueued %d jobs to queue %s" % (args.count, args.queue), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
