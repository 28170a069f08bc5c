#!/usr/bin/python3
"""Acceptance checks of the cron scheduler (issue 3) against real adjutantd
processes on SQLite files, through stubs generated from proto/.

    scheduler_acceptance.py PATH/TO/adjutantd

Time: the seed scenario moves the daemon's wall clock with
--clock-offset-for-test instead of waiting; the per-second scenarios run in
real time for a few seconds each, since that is what they are about.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as testlib  # noqa: E402

testlib.load_stubs()
import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from adjutant.v1 import job_queue_pb2 as qpb  # noqa: E402
from adjutant.v1 import job_queue_pb2_grpc as qrpc  # noqa: E402
from adjutant.v1 import scheduler_pb2 as spb  # noqa: E402
from adjutant.v1 import scheduler_pb2_grpc as srpc  # noqa: E402

BINARY = sys.argv[1]
WORK = tempfile.mkdtemp(prefix="adjutant-sched-acc-")


def stubs(d):
    return qrpc.JobQueueStub(d.channel), srpc.SchedulerStub(d.channel)


def all_jobs(queue_stub, queue):
    jobs, token = [], ""
    while True:
        page = queue_stub.ListJobs(qpb.ListJobsRequest(queue=queue, page_size=1000,
                                                       page_token=token))
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs


def tick_times(jobs):
    return [j.cron_tick_time.seconds for j in jobs]


def lead(sched, term, ttl_seconds=0):
    return sched.SetLeadership(spb.SetLeadershipRequest(
        leader=True, term=term, ttl=duration_pb2.Duration(seconds=ttl_seconds)))


def register(sched, name, schedule, queue, **kw):
    return sched.RegisterCron(spb.RegisterCronRequest(
        name=name, schedule=schedule,
        job=spb.JobTemplate(queue=queue, job_type="tick"), **kw))


def seed_scenario():
    """A schedule due at T; the daemon down from before T until after T;
    restarted and told it is leader."""
    db = os.path.join(WORK, "seed.db")
    d = testlib.Daemon(BINARY, db, WORK).start()
    q, s = stubs(d)
    once = register(s, "once", "0 * * * *", "once",
                    misfire_policy=spb.MISFIRE_POLICY_FIRE_ONCE)
    skip = register(s, "skip", "0 * * * *", "skip",
                    misfire_policy=spb.MISFIRE_POLICY_SKIP)
    every = register(s, "all", "*/10 * * * *", "all",
                     misfire_policy=spb.MISFIRE_POLICY_FIRE_ALL,
                     catchup_window=duration_pb2.Duration(seconds=7200))
    t = once.next_fire_time.seconds
    assert skip.next_fire_time.seconds == t
    first_ten = every.next_fire_time.seconds
    d.kill9()  # down from before T ...

    # ... until T + 35 min: restart with the wall clock moved there.
    restart_at = t + 35 * 60
    offset = restart_at - int(time.time())
    d = testlib.Daemon(BINARY, db, WORK, clock_offset_seconds=offset).start()
    q, s = stubs(d)
    assert not s.GetLeadership(spb.GetLeadershipRequest()).leader, \
        "a restarted daemon must be a follower"
    # Nothing fires before leadership.
    assert all_jobs(q, "once") == []
    lead(s, 1)

    expected_all = list(range(first_ten, t + 30 * 60 + 1, 600))
    testlib.wait_for(lambda: len(all_jobs(q, "all")) >= len(expected_all)
                     and len(all_jobs(q, "once")) >= 1
                     and s.GetCron(spb.GetCronRequest(name="skip")).missed_count >= 1,
                     what="the missed ticks to be handled")
    once_jobs = all_jobs(q, "once")
    assert tick_times(once_jobs) == [t], tick_times(once_jobs)
    assert once_jobs[0].cron_name == "once"
    assert all_jobs(q, "skip") == []
    skip_cron = s.GetCron(spb.GetCronRequest(name="skip"))
    assert skip_cron.missed_count == 1 and skip_cron.fired_count == 0, skip_cron
    all_ticks = sorted(tick_times(all_jobs(q, "all")))
    assert all_ticks == expected_all, (all_ticks, expected_all)
    d.stop()


def leadership_per_second():
    """Fires nothing while not leader, about once a second while leader,
    stops within a second of the TTL lapsing; a lower term is refused."""
    db = os.path.join(WORK, "lead.db")
    d = testlib.Daemon(BINARY, db, WORK).start()
    q, s = stubs(d)
    register(s, "every-second", "* * * * * *", "lead")
    time.sleep(2.2)  # real time is the medium here: two ticks pass unfired
    assert all_jobs(q, "lead") == [], "fired while not leader"

    lead(s, 10, ttl_seconds=3)
    started = time.monotonic()
    testlib.wait_for(lambda: not s.GetLeadership(spb.GetLeadershipRequest()).leader,
                     timeout=10, what="the TTL to lapse")
    lapsed_after = time.monotonic() - started
    fired = len(all_jobs(q, "lead"))
    # About once a second for ~3 s.
    assert 2 <= fired <= 5, (fired, lapsed_after)
    time.sleep(1.5)
    after = len(all_jobs(q, "lead"))
    assert after - fired <= 1, ("kept firing after the TTL lapsed", fired, after)
    ticks = tick_times(all_jobs(q, "lead"))
    assert len(ticks) == len(set(ticks))

    try:
        lead(s, 9)
        raise AssertionError("a lower term was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
    assert not s.GetLeadership(spb.GetLeadershipRequest()).leader
    d.stop()


def kill9_while_firing():
    """kill -9 during per-second firing and a restart: no tick twice."""
    db = os.path.join(WORK, "kill.db")
    d = testlib.Daemon(BINARY, db, WORK).start()
    q, s = stubs(d)
    register(s, "every-second", "* * * * * *", "kill")
    for round_ in range(3):
        lead(s, 1)
        want = 2 * (round_ + 1)
        testlib.wait_for(lambda: len(all_jobs(q, "kill")) >= want,
                         what="%d ticks" % want)
        d.kill9()
        d = testlib.Daemon(BINARY, db, WORK).start()
        q, s = stubs(d)
    ticks = tick_times(all_jobs(q, "kill"))
    assert len(ticks) == len(set(ticks)), sorted(ticks)
    d.stop()


def two_leaders_one_store():
    """Two daemons on one SQLite file, both told they are leader (same term,
    then different terms): each tick enqueued once."""
    db = os.path.join(WORK, "two.db")
    a = testlib.Daemon(BINARY, db, WORK).start()
    b = testlib.Daemon(BINARY, db, WORK).start()
    qa, sa = stubs(a)
    qb, sb = stubs(b)
    register(sa, "every-second", "* * * * * *", "two")
    lead(sa, 3)
    lead(sb, 3)
    testlib.wait_for(lambda: len(all_jobs(qa, "two")) >= 4, what="4 ticks, same term")
    lead(sb, 4)  # b's term is now the highest: a is deposed
    before = len(all_jobs(qa, "two"))
    testlib.wait_for(lambda: len(all_jobs(qb, "two")) >= before + 3,
                     what="3 ticks after the term change")
    jobs = all_jobs(qb, "two")
    ticks = sorted(tick_times(jobs))
    assert len(ticks) == len(set(ticks)), ticks
    # No tick lost either: every second from the first tick to the last was
    # fired or counted missed.
    cron = sb.GetCron(spb.GetCronRequest(name="every-second"))
    span = ticks[-1] - ticks[0] + 1
    assert len(ticks) + cron.missed_count >= span, (len(ticks), cron.missed_count, span)
    a.stop()
    b.stop()


if __name__ == "__main__":
    sys.exit(testlib.run_cases([
        ("seed scenario: FIRE_ONCE, SKIP, FIRE_ALL across downtime", seed_scenario),
        ("leadership: per-second schedule, TTL lapse, lower term", leadership_per_second),
        ("kill -9 while firing: no tick twice", kill9_while_firing),
        ("two leaders on one store: each tick once", two_leaders_one_store),
    ]))
