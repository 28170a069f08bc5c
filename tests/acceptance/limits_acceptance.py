#!/usr/bin/python3
"""Limits and overload (issue 8) on a real adjutantd, through Python stubs
that protoc generates at test time.

    limits_acceptance.py PATH/TO/adjutantd

1. 10 000 concurrent long-polls (2000 against a sanitized build): a daemon on a temp SQLite file takes
   10 000 Dequeue calls with a wait (grpc.aio, over 20 connections). Once
   the daemon reports them parked (adjutant_long_polls_waiting), its thread
   count (/proc/PID/status Threads) is what it was before them, give or take
   a few (bounded by its pools, not by the callers), and its resident memory
   grew by less than 40 KiB per parked call (a generous bound: a parked call
   holds its gRPC call state and our small reactor). Then 10 000 jobs are
   enqueued in batches, and every job is delivered to exactly one call.
2. The message and payload limits: with --max-payload-bytes 1000 and
   --max-message-bytes 70000, an Enqueue of 2000 bytes is INVALID_ARGUMENT
   naming --max-payload-bytes; one of 100 000 bytes is RESOURCE_EXHAUSTED
   from gRPC itself, whose message gives the limit ("larger than max (N vs.
   70000)"). Nothing is stored.
3. Inconsistent limits stop the daemon at start (exit 2) with a message
   naming the flag.

The daemon's fd use is one socket per connection (20 here), so no fd limit
needs raising.
"""
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ADJUTANTD = sys.argv[1] if len(sys.argv) > 1 else ""
WORK = tempfile.mkdtemp(prefix="adjutant-limits-acc-")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as testlib  # noqa: E402

testlib.load_stubs()
import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from adjutant.v1 import job_queue_pb2 as pb  # noqa: E402
from adjutant.v1 import job_queue_pb2_grpc as pb_grpc  # noqa: E402

def sanitized(binary):
    """Whether `binary` was built with ASan or TSan (scripts/sanitize.sh)."""
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"__tsan_init" in data


# A sanitized daemon is several times slower and its RSS holds the
# sanitizer's shadow memory and quarantine: there the case runs 2000 calls
# and checks threads and delivery, not memory.
SANITIZED = sanitized(ADJUTANTD)
CALLS = 2000 if SANITIZED else 10000
CONNECTIONS = 20
BATCH = 1000
# Bounds, generous on purpose (the figures measured are printed).
MAX_EXTRA_THREADS = 8
MAX_RSS_BYTES_PER_CALL = 40 * 1024


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def proc_status(pid):
    """Threads and VmRSS (bytes) of a process."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=testlib.scaled(10)) as r:
        text = r.read().decode()
    m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def start_daemon(*extra):
    db = os.path.join(WORK, "adjutant-%d.db" % time.monotonic_ns())
    metrics_port_file = os.path.join(WORK, "metrics-port-%d" % time.monotonic_ns())
    d = testlib.Daemon(ADJUTANTD, db, WORK, extra=[
        "--sqlite-synchronous", "normal",
        "--metrics-listen", "127.0.0.1:0",
        "--metrics-port-file", metrics_port_file] + list(extra))
    d.start()
    d.metrics_port = int(testlib.wait_for(
        lambda: open(metrics_port_file).read().strip()
        if os.path.exists(metrics_port_file) else None,
        what="the metrics port"))
    return d


async def ten_thousand_long_polls(d):
    target = "127.0.0.1:%d" % d.port
    channels = [grpc.aio.insecure_channel(
        target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)]
    stubs = [pb_grpc.JobQueueStub(c) for c in channels]
    for c in channels:
        await asyncio.wait_for(c.channel_ready(), testlib.scaled(10))

    # A warm-up call: the pools the first calls start are part of the
    # baseline, not of what the waiters cost.
    await stubs[0].Dequeue(pb.DequeueRequest(queue="warm-up"),
                           timeout=testlib.scaled(30))
    threads_before, rss_before = proc_status(d.proc.pid)

    wait = duration_pb2.Duration(seconds=120)
    calls = [stubs[i % CONNECTIONS].Dequeue(
        pb.DequeueRequest(queue="scale", wait=wait, worker_id="w%d" % i),
        timeout=testlib.scaled(240)) for i in range(CALLS)]
    tasks = [asyncio.ensure_future(c) for c in calls]

    deadline = time.monotonic() + testlib.scaled(60)
    while True:
        waiting = metric(d.metrics_port, "adjutant_long_polls_waiting")
        if waiting == CALLS:
            break
        check(time.monotonic() < deadline,
              "only %s of %d long-polls parked" % (waiting, CALLS))
        check(not any(t.done() for t in tasks),
              "a long-poll ended early: %r" %
              [t for t in tasks if t.done()][:1])
        await asyncio.sleep(0.05)
    threads_parked, rss_parked = proc_status(d.proc.pid)
    print("threads: %d before, %d with %d parked; RSS: %.1f MiB before, "
          "%.1f MiB parked (%.1f KiB per call)" % (
              threads_before, threads_parked, CALLS, rss_before / 2**20,
              rss_parked / 2**20, (rss_parked - rss_before) / CALLS / 1024),
          flush=True)
    check(threads_parked <= threads_before + MAX_EXTRA_THREADS,
          "threads grew from %d to %d with %d parked calls" %
          (threads_before, threads_parked, CALLS))
    check(SANITIZED or
          rss_parked - rss_before <= MAX_RSS_BYTES_PER_CALL * CALLS,
          "RSS grew by %d bytes for %d parked calls" %
          (rss_parked - rss_before, CALLS))

    enqueued = set()
    started = time.monotonic()
    for b in range(CALLS // BATCH):  # CALLS is a multiple of BATCH
        r = await stubs[b % CONNECTIONS].EnqueueBatch(pb.EnqueueBatchRequest(
            jobs=[pb.EnqueueRequest(queue="scale", job_type="t",
                                    payload=b"%d" % (b * BATCH + i))
                  for i in range(BATCH)]), timeout=testlib.scaled(60))
        enqueued.update(x.job_id for x in r.results)
    responses = await asyncio.wait_for(asyncio.gather(*tasks),
                                       testlib.scaled(120))
    print("%d jobs delivered to %d calls in %.1f s" % (
        len(enqueued), CALLS, time.monotonic() - started), flush=True)
    delivered = [j.job.job_id for r in responses for j in r.jobs]
    check(len(enqueued) == CALLS, "%d distinct ids enqueued" % len(enqueued))
    check(len(delivered) == CALLS,
          "%d jobs delivered to %d calls" % (len(delivered), CALLS))
    check(set(delivered) == enqueued,
          "delivered %d distinct jobs of %d" % (len(set(delivered)), CALLS))
    threads_after, _ = proc_status(d.proc.pid)
    check(threads_after <= threads_before + MAX_EXTRA_THREADS,
          "threads grew to %d while delivering" % threads_after)
    for c in channels:
        await c.close()


def case_ten_thousand_long_polls():
    d = start_daemon()
    try:
        asyncio.run(ten_thousand_long_polls(d))
    finally:
        d.stop()


def case_message_and_payload_limits():
    d = start_daemon("--max-payload-bytes", "1000",
                     "--max-message-bytes", "70000")
    try:
        stub = pb_grpc.JobQueueStub(d.channel)
        timeout = testlib.scaled(30)
        try:
            stub.Enqueue(pb.EnqueueRequest(queue="q", job_type="t",
                                           payload=b"x" * 2000), timeout=timeout)
            raise AssertionError("a 2000-byte payload was accepted")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, repr(e))
            check("payload" in e.details() and
                  "--max-payload-bytes" in e.details(), e.details())
        try:
            stub.Enqueue(pb.EnqueueRequest(queue="q", job_type="t",
                                           payload=b"x" * 100000),
                         timeout=timeout)
            raise AssertionError("a 100000-byte message was accepted")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, repr(e))
            check("larger than max" in e.details() and
                  "70000" in e.details(), e.details())
        listed = stub.ListJobs(pb.ListJobsRequest(queue="q"), timeout=timeout)
        check(len(listed.jobs) == 0, "something was stored")
        # Within the limits all is well.
        stub.Enqueue(pb.EnqueueRequest(queue="q", job_type="t",
                                       payload=b"x" * 1000), timeout=timeout)
    finally:
        d.stop()


def case_inconsistent_limits_stop_the_daemon():
    db = os.path.join(WORK, "never.db")
    for args, flag in [
            (["--max-payload-bytes", "1048576", "--max-message-bytes",
              "1048576"], "--max-message-bytes"),
            (["--max-lease-duration", "25h"], "--max-lease-duration"),
            (["--max-lease-duration", "soon"], "--max-lease-duration")]:
        r = subprocess.run([ADJUTANTD, "--db", db, "--check-config"] + args,
                           capture_output=True, text=True,
                           timeout=testlib.scaled(30))
        check(r.returncode == 2, "%s: exit %d" % (args, r.returncode))
        check(flag in r.stderr, "%s: %r" % (args, r.stderr))
    for args, flag in [(["--max-long-polls", "0"], "--max-long-polls"),
                       (["--max-batch-size", "0"], "--max-batch-size"),
                       (["--max-pending-per-queue", "-1"],
                        "--max-pending-per-queue")]:
        r = subprocess.run([ADJUTANTD, "--db", db, "--check-config"] + args,
                           capture_output=True, text=True,
                           timeout=testlib.scaled(30))
        check(r.returncode != 0, "%s: exit 0" % args)
        check(flag in r.stderr, "%s: %r" % (args, r.stderr))
    check(not os.path.exists(db), "a refused start created the store")


if __name__ == "__main__":
    if not ADJUTANTD:
        sys.exit("usage: limits_acceptance.py PATH/TO/adjutantd")
    try:
        code = testlib.run_cases([
            ("ten_thousand_long_polls", case_ten_thousand_long_polls),
            ("message_and_payload_limits", case_message_and_payload_limits),
            ("inconsistent_limits_stop_the_daemon",
             case_inconsistent_limits_stop_the_daemon),
        ])
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    sys.exit(code)
