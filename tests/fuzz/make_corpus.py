#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

Seeds are real examples: the cron expressions and zones of the golden file
(tests/scheduler/reference/) and of the parser's tests, and requests like the
ones the tests and examples send, serialized with stubs that protoc generates
from proto/. Files named seed-* are rewritten; others (crash-*: inputs that
once crashed a target, kept as regression tests) are left alone.

Usage: tests/fuzz/make_corpus.py   (from anywhere; needs protoc and
python3-protobuf)
"""

import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "scheduler", "reference",
                      "cron_parser_golden.tsv")

# Must match kZones in cron_expression_fuzz.cc.
ZONES = ["UTC", "America/New_York", "Europe/London", "Europe/Berlin",
         "Australia/Sydney", "Australia/Lord_Howe", "Pacific/Chatham",
         "America/Santiago", "America/Havana", "Asia/Pyongyang",
         "Pacific/Apia", "Asia/Kolkata"]

# Quartz extensions, names, and errors the parser's tests exercise.
EXTRA_CRON = [
    ("0 0 L * *", "UTC"), ("0 0 L-2 * *", "Europe/Berlin"),
    ("0 0 LW * *", "UTC"), ("0 0 15W * *", "America/New_York"),
    ("0 0 1W 8 *", "UTC"), ("0 12 * * 5L", "Australia/Lord_Howe"),
    ("0 0 * * MON#5", "Pacific/Chatham"), ("0 0 ? 2 1#5", "UTC"),
    ("0 0 1 MAR-may *", "America/Santiago"), ("0 0 1,L * *", "UTC"),
    ("30 2 * * *", "America/Havana"), ("0 0 * * *", "Pacific/Apia"),
    ("0 0 30 2 *", "UTC"), ("0 0 32W * *", "UTC"), ("0 0 * * 8#1", "UTC"),
    ("@every 1h30m", "UTC"), ("@yearly", "Asia/Pyongyang"),
]


def cron_seed(expression, zone, mode, offset):
    if zone in ZONES:
        head = bytes([ZONES.index(zone)])
        text = expression.encode()
    else:
        head = b"\xff"
        text = zone.encode() + b"\n" + expression.encode()
    return head + bytes([mode]) + struct.pack("<I", offset) + text


def cron_corpus():
    seeds, seen = [], set()
    with open(GOLDEN) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            expression, zone, start = line.split("\t")[:3]
            if expression in seen:
                continue
            seen.add(expression)
            # Starts 2000-01-01 + offset (mode 0), as the golden file does.
            seeds.append(cron_seed(expression, zone, 0,
                                   int(start) - 946684800))
    for i, (expression, zone) in enumerate(EXTRA_CRON):
        seeds.append(cron_seed(expression, zone, i % 5, 86400 * 365 * 26))
    return seeds


def load_stubs(out):
    protos = ["adjutant/v1/job_queue.proto", "adjutant/v1/scheduler.proto"]
    subprocess.run(["protoc", "--proto_path=" + os.path.join(ROOT, "proto"),
                    "--python_out=" + out] + protos, check=True)
    sys.path.insert(0, out)
    from adjutant.v1 import job_queue_pb2, scheduler_pb2  # noqa: E402
    return job_queue_pb2, scheduler_pb2


# Must match the Kind enum of validation_fuzz.cc.
(ENQUEUE, ENQUEUE_BATCH, DEQUEUE, ACK, NACK, EXTEND_LEASE, JOB_ID, LIST_JOBS,
 REGISTER_CRON, CRON_NAME, PREVIEW_CRON, SET_LEADERSHIP, LIST_CRONS,
 ACK_BATCH, WORK_START) = range(15)


def validation_corpus(jq, sc):
    seeds = []

    def add(kind, message, tight=False):
        seeds.append(bytes([kind | (0x80 if tight else 0)]) +
                     message.SerializeToString())

    enqueue = jq.EnqueueRequest(queue="emails", job_type="send_welcome",
                                payload=b'{"user": 42}', priority=5,
                                max_attempts=3, idempotency_key="welcome-42")
    enqueue.run_at.seconds = 1767225600
    add(ENQUEUE, enqueue)
    add(ENQUEUE, jq.EnqueueRequest(job_type="resize", payload=b"x" * 20),
        tight=True)
    late = jq.EnqueueRequest(job_type="t")
    late.run_at.seconds = 7258118401
    add(ENQUEUE, late)
    add(ENQUEUE, jq.EnqueueRequest(queue="caf\u00e9", job_type="t",
                                   max_attempts=1001))
    batch = jq.EnqueueBatchRequest()
    for i in range(3):
        batch.jobs.add(queue="q", job_type="t%d" % i, payload=b"%d" % i)
    add(ENQUEUE_BATCH, batch)
    add(ENQUEUE_BATCH, batch, tight=True)
    add(ENQUEUE_BATCH, jq.EnqueueBatchRequest())
    dequeue = jq.DequeueRequest(queue="emails", job_types=["a", "b"],
                                max_jobs=10, worker_id="worker-1")
    dequeue.lease_duration.seconds = 60
    dequeue.wait.seconds = 30
    add(DEQUEUE, dequeue)
    bad = jq.DequeueRequest()
    bad.lease_duration.seconds = 1
    bad.lease_duration.nanos = -5
    add(DEQUEUE, bad)
    add(DEQUEUE, jq.DequeueRequest(max_jobs=5), tight=True)
    add(ACK, jq.AckRequest(job_id="01JABCDEF", lease_token="tok-1"))
    add(ACK, jq.AckRequest(job_id="01JABCDEF"))
    nack = jq.NackRequest(job_id="01JABCDEF", lease_token="tok-1",
                          error="Traceback:\n  boom")
    nack.retry_after.seconds = 10
    add(NACK, nack)
    add(NACK, jq.NackRequest(job_id="j", lease_token="t", dead=True))
    extend = jq.ExtendLeaseRequest(job_id="j", lease_token="t")
    extend.lease_duration.seconds = 86401
    add(EXTEND_LEASE, extend)
    add(EXTEND_LEASE, jq.ExtendLeaseRequest(job_id="j", lease_token="t"))
    add(JOB_ID, jq.GetJobRequest(job_id="01JABCDEF"))
    add(JOB_ID, jq.GetJobRequest(job_id="x" * 129))
    add(LIST_JOBS, jq.ListJobsRequest(queue="emails", state=2, page_size=50,
                                      page_token="abc"))
    add(LIST_JOBS, jq.ListJobsRequest(page_size=1001))
    register = sc.RegisterCronRequest(
        name="nightly-report", schedule="0 2 * * *",
        timezone="Europe/London", misfire_policy=2, overlap_policy=3)
    register.job.queue = "reports"
    register.job.job_type = "build_report"
    register.job.payload = b"{}"
    register.catchup_window.seconds = 3600
    add(REGISTER_CRON, register)
    every = sc.RegisterCronRequest(name="tick", schedule="@every 90s")
    every.job.job_type = "tick"
    add(REGISTER_CRON, every, tight=True)
    add(REGISTER_CRON, sc.RegisterCronRequest(name="no job", schedule="* * * * *"))
    add(CRON_NAME, sc.GetCronRequest(name="nightly-report"))
    add(CRON_NAME, sc.GetCronRequest(name="a/b:c.d_e-f"))
    preview = sc.PreviewCronRequest(schedule="30 2 * * *",
                                    timezone="America/New_York", count=5)
    preview.after.seconds = 1772928000
    add(PREVIEW_CRON, preview)
    add(PREVIEW_CRON, sc.PreviewCronRequest(schedule="0 0 L * *",
                                            timezone="../etc/passwd"))
    leadership = sc.SetLeadershipRequest(leader=True, term=7)
    leadership.ttl.seconds = 30
    add(SET_LEADERSHIP, leadership)
    add(SET_LEADERSHIP, sc.SetLeadershipRequest(leader=False, term=8))
    add(LIST_CRONS, sc.ListCronsRequest(page_size=20, page_token="next"))
    add(LIST_CRONS, sc.ListCronsRequest(page_size=-1))
    acks = jq.AckBatchRequest()
    for i in range(3):
        acks.acks.add(job_id="j%d" % i, lease_token="tok-%d" % i)
    add(ACK_BATCH, acks)
    add(ACK_BATCH, acks, tight=True)
    twice = jq.AckBatchRequest()
    twice.acks.add(job_id="j", lease_token="a")
    twice.acks.add(job_id="j", lease_token="b")
    add(ACK_BATCH, twice)
    start = jq.WorkStart(queue="emails", job_types=["a", "b"],
                         worker_id="worker-1", capacity=8)
    start.lease_duration.seconds = 60
    add(WORK_START, start)
    add(WORK_START, jq.WorkStart(capacity=5), tight=True)
    add(WORK_START, jq.WorkStart(capacity=0))
    return seeds


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("seed-"):
            os.remove(os.path.join(directory, name))
    for i, seed in enumerate(seeds):
        with open(os.path.join(directory, "seed-%03d" % i), "wb") as f:
            f.write(seed)
    print("%s: %d seeds" % (target, len(seeds)))


def main():
    write("cron_expression_fuzz", cron_corpus())
    with tempfile.TemporaryDirectory() as out:
        jq, sc = load_stubs(out)
        write("validation_fuzz", validation_corpus(jq, sc))


if __name__ == "__main__":
    main()
