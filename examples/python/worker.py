#!/usr/bin/python3
"""A worker for adjutantd, from Python: lease, process, ack.

Long-polls one queue for jobs, processes each, and acks it; a job that fails
is nacked with the error text. Handles job_type "square" (payload the JSON
text {"n": <integer>}, as producer.py enqueues them):

- a payload that is not such JSON, or a job_type without a handler, can never
  succeed: the job is nacked with dead = true and goes DEAD at once;
- any other exception is nacked for a retry after the server's backoff.

    /usr/bin/python3 examples/python/worker.py --server 127.0.0.1:50051 \\
        --queue squares --idle-exit 5

It exits 0 after --max-jobs jobs, or once the queue has stayed empty for
--idle-exit seconds, or on SIGTERM / SIGINT after the job in hand (jobs
leased but not started are handed back with a Nack, runnable at once). It
prints one line per job ("acked <job_id> attempt <k> n=<n> result=<n*n>" or
"nacked <job_id> attempt <k> dead|retry: <error>") and a closing line
"worker: <N> jobs, <A> acked, <K> nacked". A bad flag exits 2; an RPC error
other than a lost lease exits 1 with the gRPC code and message on stderr.
With $ADJUTANT_TOKEN set, every call carries it as "authorization: Bearer"
(for an adjutantd started with --auth-tokens; the token needs the worker
role).
"""
import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from job_life import call_metadata, load_stubs  # noqa: E402

RPC_TIMEOUT_SECONDS = 30  # a guard against a hung daemon, not a pace


class PermanentError(Exception):
    """A job that no retry can make succeed."""


def square(payload):
    """The "square" handler: returns (n, n*n) for a payload {"n": n}."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PermanentError("payload is not JSON: %s" % e)
    n = body.get("n") if isinstance(body, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise PermanentError('payload needs an integer "n", got %r' % (body,))
    return n, n * n


HANDLERS = {"square": square}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="worker.py",
        description="Lease jobs from one queue, process them, ack or nack.")
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="adjutantd's HOST:PORT (default %(default)s)")
    parser.add_argument("--queue", default="squares",
                        help="queue to lease from (default %(default)s)")
    parser.add_argument("--worker-id", default="python-%d" % os.getpid(),
                        help="worker_id stored on leased jobs "
                             "(default python-<pid>)")
    parser.add_argument("--max-jobs", type=int, default=0,
                        help="exit after this many jobs; 0 means no limit "
                             "(default %(default)s)")
    parser.add_argument("--idle-exit", type=float, default=10.0,
                        help="exit once the queue has stayed empty this many "
                             "seconds (default %(default)s)")
    parser.add_argument("--poll", type=float, default=5.0,
                        help="long-poll wait of each Dequeue, seconds, at "
                             "most 300 (default %(default)s)")
    parser.add_argument("--lease", type=int, default=30,
                        help="lease duration, seconds, 1 to 86400 "
                             "(default %(default)s)")
    parser.add_argument("--batch", type=int, default=1,
                        help="jobs leased per Dequeue, 1 to 100 "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    if args.max_jobs < 0:
        parser.error("--max-jobs must not be negative, got %d" % args.max_jobs)
    if not args.idle_exit > 0:
        parser.error("--idle-exit must be positive, got %s" % args.idle_exit)
    if not 0 < args.poll <= 300:
        parser.error("--poll must be in (0, 300] seconds, got %s" % args.poll)
    if not 1 <= args.lease <= 86400:
        parser.error("--lease must be between 1 and 86400, got %d" % args.lease)
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be between 1 and 100, got %d" % args.batch)
    return args


def main(argv):
    args = parse_args(argv)
    load_stubs()
    import grpc
    from google.protobuf import duration_pb2
    from adjutant.v1 import job_queue_pb2 as pb
    from adjutant.v1 import job_queue_pb2_grpc as rpc

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))

    def fail(what, e):
        print("worker: %s failed: %s: %s" % (what, e.code().name, e.details()),
              file=sys.stderr, flush=True)
        return 1

    handled = acked = nacked = 0
    metadata = call_metadata()  # $ADJUTANT_TOKEN, if set
    with grpc.insecure_channel(args.server) as channel:
        queue = rpc.JobQueueStub(channel)
        idle_since = time.monotonic()
        while not stopping:
            if args.max_jobs and handled >= args.max_jobs:
                break
            idle_left = args.idle_exit - (time.monotonic() - idle_since)
            if idle_left <= 0:
                break
            wait = min(args.poll, idle_left)
            want = args.batch
            if args.max_jobs:
                want = min(want, args.max_jobs - handled)
            try:
                leased = queue.Dequeue(
                    pb.DequeueRequest(
                        queue=args.queue, max_jobs=want,
                        worker_id=args.worker_id,
                        lease_duration=duration_pb2.Duration(seconds=args.lease),
                        wait=duration_pb2.Duration(
                            seconds=int(wait), nanos=int(wait % 1 * 1e9))),
                    timeout=wait + RPC_TIMEOUT_SECONDS,
                    metadata=metadata).jobs
            except grpc.RpcError as e:
                return fail("Dequeue", e)
            if leased:
                idle_since = time.monotonic()
            for lj in leased:
                job = lj.job
                if stopping:
                    # Hands back the jobs not started, runnable at once.
                    try:
                        queue.Nack(pb.NackRequest(
                            job_id=job.job_id, lease_token=lj.lease_token,
                            error="worker stopping",
                            retry_after=duration_pb2.Duration(seconds=0)),
                            timeout=RPC_TIMEOUT_SECONDS, metadata=metadata)
                    except grpc.RpcError:
                        pass  # the lease expires on its own
                    continue
                handled += 1
                handler = HANDLERS.get(job.job_type)
                try:
                    if handler is None:
                        raise PermanentError(
                            "no handler for job_type %r" % job.job_type)
                    n, result = handler(job.payload)
                except Exception as e:  # every failure becomes a Nack
                    dead = isinstance(e, PermanentError)
                    try:
                        queue.Nack(pb.NackRequest(job_id=job.job_id,
                                                  lease_token=lj.lease_token,
                                                  error=str(e), dead=dead),
                                   timeout=RPC_TIMEOUT_SECONDS, metadata=metadata)
                    except grpc.RpcError as nack_error:
                        if nack_error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                            return fail("Nack", nack_error)
                        print("lost lease", job.job_id, nack_error.details(),
                              flush=True)
                        continue
                    nacked += 1
                    print("nacked", job.job_id, "attempt", job.attempts,
                          "dead:" if dead else "retry:", e, flush=True)
                    continue
                try:
                    queue.Ack(pb.AckRequest(job_id=job.job_id,
                                            lease_token=lj.lease_token),
                              timeout=RPC_TIMEOUT_SECONDS, metadata=metadata)
                except grpc.RpcError as e:
                    # FAILED_PRECONDITION: the job was cancelled or the lease
                    # expired and another worker may hold it now.
                    if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        return fail("Ack", e)
                    print("lost lease", job.job_id, e.details(), flush=True)
                    continue
                acked += 1
                print("acked", job.job_id, "attempt", job.attempts,
                      "n=%d" % n, "result=%d" % result, flush=True)
    print("worker: %d jobs, %d acked, %d nacked" % (handled, acked, nacked),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
