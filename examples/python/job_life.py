#!/usr/bin/python3
"""One job's life through adjutantd, from Python.

Generates the stubs from proto/ with protoc and Debian's grpc_python_plugin
into a temporary directory, then enqueues a job, leases it, extends the
lease, and acks it.

    /usr/bin/python3 examples/python/job_life.py [HOST:PORT]
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    out = tempfile.mkdtemp(prefix="adjutant-py-")
    protos = [os.path.join("adjutant", "v1", p) for p in ("job_queue.proto", "scheduler.proto")]
    subprocess.run(
        ["protoc", "--proto_path=" + os.path.join(ROOT, "proto"),
         "--python_out=" + out, "--grpc_python_out=" + out,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
        check=True)
    sys.path.insert(0, out)


def call_metadata():
    """The metadata to send with every call: "authorization: Bearer TOKEN"
    when $ADJUTANT_TOKEN is set (for an adjutantd started with
    --auth-tokens), else nothing."""
    token = os.environ.get("ADJUTANT_TOKEN")
    return (("authorization", "Bearer " + token),) if token else ()


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    load_stubs()
    import grpc
    from google.protobuf import duration_pb2
    from adjutant.v1 import job_queue_pb2 as pb
    from adjutant.v1 import job_queue_pb2_grpc as rpc

    queue = rpc.JobQueueStub(grpc.insecure_channel(target))

    enq = queue.Enqueue(pb.EnqueueRequest(queue="emails", job_type="send",
                                          payload=b'{"to":"ops@example.com"}'))
    print("enqueued", enq.job_id)

    got = queue.Dequeue(pb.DequeueRequest(
        queue="emails", worker_id="example",
        lease_duration=duration_pb2.Duration(seconds=30),
        wait=duration_pb2.Duration(seconds=10)))
    leased = got.jobs[0]
    print("leased", leased.job.job_id, "attempt", leased.job.attempts,
          "until", leased.lease_expires_at.ToJsonString())

    ext = queue.ExtendLease(pb.ExtendLeaseRequest(
        job_id=leased.job.job_id, lease_token=leased.lease_token,
        lease_duration=duration_pb2.Duration(seconds=60)))
    print("extended until", ext.lease_expires_at.ToJsonString())

    queue.Ack(pb.AckRequest(job_id=leased.job.job_id, lease_token=leased.lease_token))
    job = queue.GetJob(pb.GetJobRequest(job_id=leased.job.job_id))
    print("state", pb.JobState.Name(job.state))

    try:
        queue.Ack(pb.AckRequest(job_id=leased.job.job_id, lease_token="not-the-token"))
    except grpc.RpcError as e:
        print("a wrong token:", e.code().name, "-", e.details())


if __name__ == "__main__":
    main()
