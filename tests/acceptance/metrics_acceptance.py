#!/usr/bin/python3
"""Acceptance check of the metrics endpoint, as an operator sees it: a real
adjutantd with --metrics-listen 127.0.0.1:0, some traffic through Python
stubs generated from proto/, then GET /metrics over HTTP (what curl or
Prometheus does), parsed line by line.

    metrics_acceptance.py PATH/TO/adjutantd

1. Enqueue 3 jobs to queue q, lease 2, ack 1, nack 1 to DEAD: the job
   counters, jobs by state, RPC counts and latencies and the store's write
   histograms show exactly that; the oldest runnable job's age is plausible.
2. A per-second schedule fires while the daemon leads (term 5): fires,
   leadership and term show; the daemon's log never has a payload.
(The log lines themselves are checked at debug level by the C++ test
DaemonTest.MetricsOverHttpAndLogsWithoutPayloadsOrTokens.)
"""
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request

ADJUTANTD = sys.argv[1] if len(sys.argv) > 1 else ""
WORK = tempfile.mkdtemp(prefix="adjutant-metrics-acc-")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as testlib  # noqa: E402

testlib.load_stubs()
from google.protobuf import duration_pb2  # noqa: E402
from adjutant.v1 import job_queue_pb2 as pb  # noqa: E402
from adjutant.v1 import job_queue_pb2_grpc as pb_grpc  # noqa: E402
from adjutant.v1 import scheduler_pb2 as spb  # noqa: E402
from adjutant.v1 import scheduler_pb2_grpc as spb_grpc  # noqa: E402

PAYLOAD = b"acceptance-payload-c0ffee"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')


def start(name):
    port_file = os.path.join(WORK, name + ".metrics-port")
    d = testlib.Daemon(ADJUTANTD, os.path.join(WORK, name + ".db"), WORK,
                       extra=["--metrics-listen", "127.0.0.1:0",
                              "--metrics-port-file", port_file]).start()
    with open(port_file) as f:
        d.metrics_port = int(f.read())
    return d


def scrape(d):
    """{ 'name{labels}': value } from GET /metrics."""
    url = "http://127.0.0.1:%d/metrics" % d.metrics_port
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200, r.status
        ctype = r.headers["Content-Type"]
        assert ctype == "text/plain; version=0.0.4; charset=utf-8", ctype
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def expect(samples, key, value):
    got = samples.get(key)
    assert got == value, "%s: want %s, got %s" % (key, value, got)


def case_job_traffic():
    d = start("jobs")
    try:
        stub = pb_grpc.JobQueueStub(d.channel)
        for _ in range(3):
            stub.Enqueue(pb.EnqueueRequest(queue="q", job_type="t",
                                           payload=PAYLOAD), timeout=10)
        leased = stub.Dequeue(pb.DequeueRequest(
            queue="q", max_jobs=2,
            lease_duration=duration_pb2.Duration(seconds=60)),
            timeout=10).jobs
        assert len(leased) == 2, len(leased)
        stub.Ack(pb.AckRequest(job_id=leased[0].job.job_id,
                               lease_token=leased[0].lease_token), timeout=10)
        stub.Nack(pb.NackRequest(job_id=leased[1].job.job_id,
                                 lease_token=leased[1].lease_token,
                                 dead=True, error="boom"), timeout=10)
        s = scrape(d)
        for key, value in [
                ('adjutant_jobs_enqueued_total{queue="q"}', 3),
                ('adjutant_jobs_leased_total{queue="q"}', 2),
                ('adjutant_jobs_acked_total{queue="q"}', 1),
                ('adjutant_jobs_nacked_total{queue="q"}', 1),
                ('adjutant_jobs_dead_total{queue="q"}', 1),
                ('adjutant_jobs{queue="q",state="pending"}', 1),
                ('adjutant_jobs{queue="q",state="leased"}', 0),
                ('adjutant_jobs{queue="q",state="succeeded"}', 1),
                ('adjutant_jobs{queue="q",state="dead"}', 1),
                ('adjutant_jobs_runnable{queue="q"}', 1),
                ('adjutant_long_polls_waiting', 0),
                ('adjutant_rpcs_total{method="adjutant.v1.JobQueue/Enqueue",'
                 'code="OK"}', 3),
                ('adjutant_rpc_duration_seconds_count{method='
                 '"adjutant.v1.JobQueue/Enqueue",code="OK"}', 3),
                ('adjutant_rpc_duration_seconds_bucket{method='
                 '"adjutant.v1.JobQueue/Enqueue",code="OK",le="+Inf"}', 3),
                ('adjutant_store_write_duration_seconds_count{op="enqueue"}', 3),
                ('adjutant_store_batch_size_sum{op="dequeue"}', 2),
                ('adjutant_is_leader', 0),
                ('adjutant_metrics_store_errors_total', 0)]:
            expect(s, key, value)
        # Real time on a real file: measured, and plausible.
        total = s['adjutant_rpc_duration_seconds_sum{method='
                  '"adjutant.v1.JobQueue/Enqueue",code="OK"}']
        assert 0 < total < 30, total
        age = s['adjutant_queue_oldest_runnable_age_seconds{queue="q"}']
        assert 0 < age < 60, age
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % d.metrics_port,
                                   timeout=10)
            raise AssertionError("/ answered")
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code
    finally:
        d.stop()
    with open(d.log.name) as f:
        log = f.read()
    assert PAYLOAD.decode() not in log, log


def case_cron_and_leadership():
    d = start("cron")
    try:
        sched = spb_grpc.SchedulerStub(d.channel)
        sched.RegisterCron(spb.RegisterCronRequest(
            name="tick", schedule="* * * * * *",
            job=spb.JobTemplate(queue="cron", job_type="t", payload=PAYLOAD)),
            timeout=10)
        sched.SetLeadership(spb.SetLeadershipRequest(leader=True, term=5),
                            timeout=10)
        # Waits for the daemon's progress: a tick every second of real time.
        s = testlib.wait_for(
            lambda: (lambda s: s if s.get(
                'adjutant_cron_fired_total{schedule="tick"}', 0) >= 2 else None)(
                scrape(d)),
            what="two ticks fired")
        expect(s, 'adjutant_is_leader', 1)
        expect(s, 'adjutant_leader_term', 5)
        expect(s, 'adjutant_highest_term', 5)
        expect(s, 'adjutant_cron_skipped_total{schedule="tick"}', 0)
        assert 'adjutant_cron_missed_total{schedule="tick"}' in s, s
        assert s.get('adjutant_jobs_enqueued_total{queue="cron"}', 0) >= 1, s
        sched.SetLeadership(spb.SetLeadershipRequest(leader=False, term=5),
                            timeout=10)
        expect(scrape(d), 'adjutant_is_leader', 0)
    finally:
        d.stop()
    with open(d.log.name) as f:
        log = f.read()
    assert PAYLOAD.decode() not in log, log


if __name__ == "__main__":
    sys.exit(testlib.run_cases([
        ("job traffic shows in /metrics", case_job_traffic),
        ("cron fires and leadership show in /metrics",
         case_cron_and_leadership),
    ]))
