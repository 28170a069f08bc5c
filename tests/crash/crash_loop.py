#!/usr/bin/python3
"""The crash loop: a real adjutantd under mixed load, killed with SIGKILL at
random moments and restarted on the same store each time.

    crash_loop.py PATH/TO/adjutantd [--kills N] [--startup-kills K]
                  [--store sqlite|postgres] [--daemons 1|2] [--seed S]

The store is a SQLite file in a temp dir, or (--store postgres) a database
on a throwaway PostgreSQL 15 the script starts (tests/acceptance/
throwaway_postgres.py) and removes; --daemons 2 runs two daemons on that
one database, the clients split between them.

Load, all through Python stubs that protoc generates from proto/:
  * producers enqueue jobs to queue "work", each with its own idempotency
    key, retrying a call whose answer was lost (UNAVAILABLE, DEADLINE_EXCEEDED,
    CANCELLED) with the same key until one is answered OK, and pausing
    while 200 answered enqueues wait to be acked (so the drain stays short);
  * workers lease from "work" and "ticks" (2 s leases), then ack, or nack
    with retry_after 0 about a third of the time (never dead);
  * three per-second schedules (`* * * * * *`) fire into "ticks" while the
    daemon is leader; after each restart the daemon is told it is leader
    again with a higher term (SetLeadership, long TTL).
After a random 100-1500 ms of load (seeded RNG; the seed is printed) a
daemon (with two, either at random) is killed with SIGKILL and started again
on the same store with --port-file; the clients reconnect and retry. With two
daemons, leadership then goes to either at random with a higher term, and
the other is told to stop firing.

Kills during start-up: before the first start (while the fresh store is
created and migrated) and before each restart (while the store is opened:
SQLite's WAL recovered, the file checked, the schema checked), a daemon is
started and killed --startup-kills times (default 1) a random moment into
its start-up (0 to the time the last start took to write its port file;
the first start is measured on a scratch store); the output counts the
kills that landed before the port file was written. Every check below
covers them too.

At the end the schedules are paused, the producers stop, and the workers
drain the queues. Then, from what the clients saw and what the store holds:
  1. every enqueue answered OK exists and is SUCCEEDED (lost = 0), and the
     store holds no "work" job that no producer was answered for;
  2. no job whose Ack was answered OK was leased again afterwards
     (redelivered = 0). Exact, independent of the order in which answers
     arrived: a lease carries the job's attempt number, so a delivery after
     an Ack answered OK for attempt k would carry an attempt number above k;
  3. every other job was eventually acked: every job is SUCCEEDED;
  4. no cron tick appears on two jobs: (cron_name, cron_tick_time) is unique
     (duplicate ticks = 0).
Exits 0 and prints the counts when all hold; 1 otherwise.

Sleeping here only lets load run between kills; no check depends on timing.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "acceptance"))
import daemon as testlib  # noqa: E402

testlib.load_stubs()
import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from adjutant.v1 import job_queue_pb2 as pb  # noqa: E402
from adjutant.v1 import job_queue_pb2_grpc as pb_grpc  # noqa: E402
from adjutant.v1 import scheduler_pb2 as spb  # noqa: E402
from adjutant.v1 import scheduler_pb2_grpc as spb_grpc  # noqa: E402

# Codes that mean "the answer was lost" (the daemon died or restarted): the
# call may or may not have taken effect.
LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED)
RPC_TIMEOUT = 10  # seconds; a guard against a hung daemon, not a wait
LEASE = duration_pb2.Duration(seconds=2)
CRONS = ("tick-a", "tick-b", "tick-c")
# Producers pause while this many answered enqueues are not yet acked.
MAX_BACKLOG = 200
MAX_ATTEMPTS = 1000  # the most allowed; nothing goes DEAD, every job ends SUCCEEDED


class Target:
    """The stubs of whichever daemon is up now; swapped at each restart."""

    def __init__(self):
        self._mu = threading.Lock()
        self._queue = None
        self._sched = None
        self.channels = []

    def set(self, daemon):
        with self._mu:
            self._queue = pb_grpc.JobQueueStub(daemon.channel)
            self._sched = spb_grpc.SchedulerStub(daemon.channel)
            self.channels.append(daemon.channel)

    def queue(self):
        with self._mu:
            return self._queue

    def sched(self):
        with self._mu:
            return self._sched


def call_until_answered(target, stop, fn):
    """Calls fn(target) until it is answered (OK or an error that is a real
    answer), retrying lost answers with backoff. Returns (response, None) or
    (None, RpcError); (None, None) if `stop` was set while retrying."""
    delay = 0.02
    while True:
        try:
            return fn(target), None
        except grpc.RpcError as e:
            if e.code() not in LOST:
                return None, e
        if stop is not None and stop.is_set():
            return None, None
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class Record:
    """What the clients saw; shared by every client thread."""

    def __init__(self):
        self.mu = threading.Lock()
        self.enqueued = {}      # idempotency key -> job id answered OK
        self.key_mismatch = []  # a retried key answered with another id
        self.deliveries = {}    # job id -> [(attempts, lease token)]
        self.acked = {}         # job id -> attempt number of the OK Ack
        self.nacks = 0
        self.lost_acks = 0      # Ack whose answer was lost or refused
        self.errors = []        # unexpected answers

    def note_error(self, what, e):
        with self.mu:
            self.errors.append("%s: %s %s" % (what, e.code(), e.details()))


def producer(index, target, record, stop):
    n = 0
    while not stop.is_set():
        with record.mu:
            backlog = len(record.enqueued) - len(record.acked)
        if backlog > MAX_BACKLOG:
            time.sleep(0.01)  # keeps the final drain short; not a check
            continue
        key = "p%d-%d" % (index, n)
        n += 1
        request = pb.EnqueueRequest(queue="work", job_type="crash",
                                    payload=key.encode(), idempotency_key=key,
                                    max_attempts=MAX_ATTEMPTS)
        # A lost answer is retried with the same key even after `stop`: the
        # key is then answered OK exactly once (maybe as a duplicate).
        response, error = call_until_answered(
            target, None,
            lambda t: t.queue().Enqueue(request, timeout=RPC_TIMEOUT))
        if error is not None:
            record.note_error("Enqueue " + key, error)
            continue
        with record.mu:
            previous = record.enqueued.get(key)
            if previous is not None and previous != response.job_id:
                record.key_mismatch.append(key)
            record.enqueued[key] = response.job_id


def worker(index, target, record, stop, seed):
    rng = random.Random(seed)
    worker_id = "w%d" % index
    while not stop.is_set():
        for queue in ("work", "ticks"):
            request = pb.DequeueRequest(
                queue=queue, max_jobs=4, lease_duration=LEASE,
                wait=duration_pb2.Duration(nanos=100 * 1000 * 1000),
                worker_id=worker_id)
            response, error = call_until_answered(
                target, stop,
                lambda t: t.queue().Dequeue(request, timeout=RPC_TIMEOUT))
            if response is None:
                if error is not None:
                    record.note_error("Dequeue", error)
                continue
            for leased in response.jobs:
                job = leased.job
                with record.mu:
                    record.deliveries.setdefault(job.job_id, []).append(
                        (job.attempts, leased.lease_token))
                if rng.random() < 0.33:
                    try:
                        target.queue().Nack(pb.NackRequest(
                            job_id=job.job_id, lease_token=leased.lease_token,
                            error="crash loop nack",
                            retry_after=duration_pb2.Duration()),
                            timeout=RPC_TIMEOUT)
                        with record.mu:
                            record.nacks += 1
                    except grpc.RpcError:
                        pass  # the lease ends anyway; the job comes back
                    continue
                try:
                    target.queue().Ack(pb.AckRequest(
                        job_id=job.job_id, lease_token=leased.lease_token),
                        timeout=RPC_TIMEOUT)
                except grpc.RpcError as e:
                    # Lost answer (the job is acked or comes back), or a
                    # lease that expired meanwhile (FAILED_PRECONDITION).
                    if e.code() not in LOST + (
                            grpc.StatusCode.FAILED_PRECONDITION,):
                        record.note_error("Ack", e)
                    with record.mu:
                        record.lost_acks += 1
                    continue
                with record.mu:
                    if job.job_id in record.acked:
                        record.errors.append(
                            "Ack answered OK twice for %s" % job.job_id)
                    record.acked[job.job_id] = job.attempts


def all_jobs(target, queue):
    jobs = []
    token = ""
    while True:
        page, error = call_until_answered(
            target, None, lambda t: t.queue().ListJobs(
                pb.ListJobsRequest(queue=queue, page_size=1000,
                                   page_token=token), timeout=RPC_TIMEOUT))
        if error is not None:
            raise AssertionError("ListJobs: %s" % error)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs


def lead(target, term):
    response, error = call_until_answered(
        target, None, lambda t: t.sched().SetLeadership(
            spb.SetLeadershipRequest(
                leader=True, term=term,
                ttl=duration_pb2.Duration(seconds=3600)),
            timeout=RPC_TIMEOUT))
    if error is not None:
        raise AssertionError("SetLeadership(term %d): %s" % (term, error))
    return response


def step_down(target, term):
    _, error = call_until_answered(
        target, None, lambda t: t.sched().SetLeadership(
            spb.SetLeadershipRequest(leader=False, term=term),
            timeout=RPC_TIMEOUT))
    if error is not None:
        raise AssertionError("SetLeadership(false, term %d): %s" % (term, error))


def register_crons(target, paused):
    for name in CRONS:
        _, error = call_until_answered(
            target, None, lambda t: t.sched().RegisterCron(
                spb.RegisterCronRequest(
                    name=name, schedule="* * * * * *", paused=paused,
                    job=spb.JobTemplate(queue="ticks", job_type="tick",
                                        max_attempts=MAX_ATTEMPTS)),
                timeout=RPC_TIMEOUT))
        if error is not None:
            raise AssertionError("RegisterCron %s: %s" % (name, error))


def start_timed(binary, store, work):
    """Starts adjutantd on `store`; returns it, listening, and the seconds
    until it wrote its port file (polled every millisecond)."""
    daemon = testlib.Daemon(binary, store, work)
    t0 = time.monotonic()
    daemon.spawn()

    def written():
        try:
            with open(daemon.port_file) as f:
                return time.monotonic() if f.read().strip() else None
        except FileNotFoundError:
            return None

    deadline = t0 + testlib.scaled(30)
    while True:
        t = written()
        if t is not None:
            break
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("adjutantd did not start on %s (log: %s)"
                                 % (store, daemon.log.name))
        time.sleep(0.001)
    return daemon.await_listening(), t - t0


def spawn_and_kill_early(binary, store, work, rng, startup):
    """Starts adjutantd and kills it with SIGKILL a random moment into its
    start-up (0 to `startup`, the time the last start took to write its
    port file): while it opens the store, migrates it, or recovers. Returns
    whether the port file was still absent (killed before serving)."""
    daemon = testlib.Daemon(binary, store, work)
    daemon.spawn()
    time.sleep(rng.uniform(0.0, startup))  # a kill moment, not a wait
    daemon.proc.kill()  # SIGKILL
    daemon.proc.wait()
    try:
        with open(daemon.port_file) as f:
            serving = bool(f.read().strip())
    except FileNotFoundError:
        serving = False
    return not serving


class Slot:
    """One daemon position: the process now up, restarted in place."""

    def __init__(self, binary, store, work, target):
        self.binary = binary
        self.store = store
        self.work = work
        self.target = target
        self.daemon = None

    def start(self):
        """Returns the seconds the start took to write the port file."""
        self.daemon, seconds = start_timed(self.binary, self.store, self.work)
        self.target.set(self.daemon)
        return seconds

    def kill(self):
        self.daemon.proc.kill()  # SIGKILL
        self.daemon.proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("adjutantd")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--startup-kills", type=int, default=1,
                        help="kills during start-up before each (re)start")
    parser.add_argument("--store", choices=("sqlite", "postgres"),
                        default="sqlite")
    parser.add_argument("--daemons", type=int, default=1,
                        help="daemons on the one store (2 needs postgres)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    args = parser.parse_args()
    if args.daemons not in (1, 2):
        parser.error("--daemons: 1 or 2")
    if args.daemons > 1 and args.store != "postgres":
        parser.error("--daemons 2 needs --store postgres (one SQLite file "
                     "serves one daemon)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print("seed %d (rerun with --seed %d)" % (seed, seed), flush=True)
    rng = random.Random(seed)

    work = tempfile.mkdtemp(prefix="adjutant-crash-")
    pg = None
    if args.store == "postgres":
        from throwaway_postgres import Postgres
        pg = Postgres()
        pg.create_db("crash")
        store = pg.uri("crash")
    else:
        store = os.path.join(work, "adjutant.db")
    targets = [Target() for _ in range(args.daemons)]
    slots = [Slot(args.adjutantd, store, work, t) for t in targets]
    record = Record()
    started = time.monotonic()
    early_kills = 0      # start-up kills that landed before the port file
    startup_attempts = 0
    startup = 0.0        # seconds a start took to write its port file
    stop_producers = threading.Event()
    stop_workers = threading.Event()

    try:
        # How long a start takes to write the port file (creating and
        # migrating a store of its own): the range of the start-up kill
        # moments.
        if pg is not None:
            pg.create_db("scratch")
            scratch = pg.uri("scratch")
        else:
            scratch = os.path.join(work, "scratch.db")
        scratch_daemon, startup = start_timed(args.adjutantd, scratch, work)
        scratch_daemon.stop()
        # Kills while the fresh store is created and migrated.
        for _ in range(args.startup_kills):
            startup_attempts += 1
            early_kills += spawn_and_kill_early(args.adjutantd, store, work,
                                                rng, startup)
        for slot in slots:
            startup = slot.start()
        term = 1
        leader = 0
        register_crons(targets[0], paused=False)
        lead(targets[leader], term)

        threads = []
        for i in range(args.producers):
            threads.append(threading.Thread(
                target=producer,
                args=(i, targets[i % len(targets)], record, stop_producers)))
        workers = []
        for i in range(args.workers):
            workers.append(threading.Thread(
                target=worker,
                args=(i, targets[i % len(targets)], record, stop_workers,
                      rng.randrange(1 << 31))))
        for t in threads + workers:
            t.start()
        # The schedules fire before the first kill.
        testlib.wait_for(lambda: all_jobs(targets[0], "ticks"), timeout=30,
                         what="the first tick")

        for kill in range(args.kills):
            time.sleep(rng.uniform(0.1, 1.5))  # load runs meanwhile
            victim = rng.randrange(len(slots))
            slots[victim].kill()
            for _ in range(args.startup_kills):
                startup_attempts += 1
                early_kills += spawn_and_kill_early(
                    args.adjutantd, store, work, rng, startup)
            startup = slots[victim].start()  # the next kills' range
            # Leadership: one daemon, told again after its restart; two,
            # handed to either at random with a higher term, the other told
            # to stop (it may fire until then: the store fences old terms).
            term += 1
            previous, leader = leader, rng.randrange(len(slots))
            lead(targets[leader], term)
            if previous != leader:
                step_down(targets[previous], term)
            print("kill %d/%d: daemon %d killed (then %d times in start-up) "
                  "and restarted; daemon %d leader with term %d"
                  % (kill + 1, args.kills, victim, args.startup_kills,
                     leader, term), flush=True)

        # The end: no new ticks, no new jobs; drain what is left.
        register_crons(targets[0], paused=True)
        stop_producers.set()
        for t in threads:
            t.join()
        give_up = time.monotonic() + args.drain_timeout
        while True:
            unfinished = [j for q in ("work", "ticks") for j in all_jobs(targets[0], q)
                          if j.state != pb.JOB_STATE_SUCCEEDED]
            if not unfinished:
                break
            if time.monotonic() > give_up:
                raise AssertionError("%d jobs not SUCCEEDED after the drain, e.g. %s"
                                     % (len(unfinished), unfinished[0]))
            time.sleep(0.2)  # the workers make progress meanwhile
        stop_workers.set()
        for t in workers:
            t.join()

        work_jobs = {j.job_id: j for j in all_jobs(targets[0], "work")}
        tick_jobs = all_jobs(targets[0], "ticks")
        for slot in slots:
            slot.daemon.stop()
    finally:
        stop_producers.set()
        stop_workers.set()
        for target in targets:
            for channel in target.channels:
                channel.close()
        if pg is not None:
            pg.destroy()

    failures = []
    enqueued_ids = set(record.enqueued.values())
    lost = sorted(i for i in enqueued_ids if i not in work_jobs)
    phantom = sorted(i for i in work_jobs if i not in enqueued_ids)
    not_succeeded = [j.job_id for j in list(work_jobs.values()) + tick_jobs
                     if j.state != pb.JOB_STATE_SUCCEEDED]
    redelivered = []
    for job_id, attempt in record.acked.items():
        later = [d for d in record.deliveries.get(job_id, []) if d[0] > attempt]
        if later:
            redelivered.append((job_id, attempt, later))
    double_leases = []
    for job_id, leases in record.deliveries.items():
        attempts = [a for a, _ in leases]
        if len(attempts) != len(set(attempts)):
            double_leases.append((job_id, sorted(attempts)))
    ticks = [(j.cron_name, j.cron_tick_time.seconds, j.cron_tick_time.nanos)
             for j in tick_jobs]
    duplicate_ticks = len(ticks) - len(set(ticks))
    tick_counts = {name: sum(1 for t in ticks if t[0] == name) for name in CRONS}

    print("store: %s, daemons: %d" % (args.store, args.daemons))
    print("kills: %d while serving, %d in start-up (%d before the port file; "
          "the last start took %.0f ms)"
          % (args.kills, startup_attempts, early_kills, startup * 1000))
    print("enqueues answered OK: %d (jobs in the store: %d)"
          % (len(enqueued_ids), len(work_jobs)))
    print("deliveries: %d, nacks: %d, acks answered OK: %d, acks lost or refused: %d"
          % (sum(len(d) for d in record.deliveries.values()), record.nacks,
             len(record.acked), record.lost_acks))
    print("cron jobs: %d (%s)" % (len(tick_jobs), ", ".join(
        "%s %d" % (n, c) for n, c in sorted(tick_counts.items()))))
    print("acknowledged enqueues lost: %d" % len(lost))
    print("jobs enqueued without an answered enqueue: %d" % len(phantom))
    print("jobs not SUCCEEDED: %d" % len(not_succeeded))
    print("acked jobs redelivered: %d" % len(redelivered))
    print("jobs leased twice with one attempt number: %d" % len(double_leases))
    print("duplicate ticks: %d" % duplicate_ticks)
    print("wall time: %.1f s" % (time.monotonic() - started), flush=True)

    if lost:
        failures.append("lost enqueues, e.g. %s" % lost[:5])
    if phantom:
        failures.append("jobs no producer was answered for, e.g. %s" % phantom[:5])
    if not_succeeded:
        failures.append("jobs not SUCCEEDED, e.g. %s" % not_succeeded[:5])
    if redelivered:
        failures.append("acked jobs redelivered, e.g. %s" % redelivered[:5])
    if double_leases:
        failures.append("double leases, e.g. %s" % double_leases[:5])
    if duplicate_ticks:
        failures.append("%d duplicate ticks" % duplicate_ticks)
    if record.key_mismatch:
        failures.append("idempotency keys answered with two ids, e.g. %s"
                        % record.key_mismatch[:5])
    if record.errors:
        failures.append("unexpected answers, e.g. %s" % record.errors[:5])
    if not record.acked or not tick_jobs:
        failures.append("no load ran (acks %d, cron jobs %d)"
                        % (len(record.acked), len(tick_jobs)))
    for f in failures:
        print("FAIL", f, flush=True)
    if failures:
        print("the daemons' logs and the store are in", work, flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS" if not failures else "FAILED", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
