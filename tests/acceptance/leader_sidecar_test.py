#!/usr/bin/python3
"""The leader-election sidecar (deploy/adjutant-pg-leader) elects exactly
one of two adjutantd daemons sharing a throwaway PostgreSQL, hands
leadership over with a higher term when the leader's elector is killed, and
revokes at once when stopped with SIGTERM. Leadership is read the way an
operator reads it: `adjutant --json leader get`.

Usage: leader_sidecar_test.py ADJUTANTD ADJUTANT
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as d  # noqa: E402
from throwaway_postgres import Postgres  # noqa: E402

ADJUTANTD, ADJUTANT = sys.argv[1], sys.argv[2]
SIDECAR = os.path.join(d.ROOT, "deploy", "adjutant-pg-leader")
TTL = 3  # seconds; renewed every second
WORK = tempfile.mkdtemp(prefix="adjutant-sidecar-")


def leadership(daemon):
    """(leader, term, highest_term) as `adjutant leader get` reports it."""
    result = subprocess.run(
        [ADJUTANT, "--server", "127.0.0.1:%d" % daemon.port, "--json",
         "leader", "get"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, "adjutant leader get: " + result.stderr
    got = json.loads(result.stdout)
    return got["leader"], int(got["term"]), int(got["highest_term"])


class Sidecar:
    def __init__(self, daemon, db, name):
        self.log = open(os.path.join(WORK, "sidecar-%s.log" % name), "a")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", SIDECAR, "--db", db, "--server",
             "127.0.0.1:%d" % daemon.port, "--ttl", str(TTL),
             "--adjutant", ADJUTANT],
            stdout=self.log, stderr=self.log)
        d._STARTED.append(self.proc)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, "sidecar exited %d on SIGTERM" % code


def sole_leader(daemons):
    """The index of the one daemon reporting leader (and its term), or None
    while zero or two do."""
    states = [leadership(x) for x in daemons]
    leaders = [i for i, s in enumerate(states) if s[0]]
    if len(leaders) != 1:
        return None
    return leaders[0], states[leaders[0]][1]


def test_election_and_takeover(pg):
    db = pg.uri("election")
    pg.create_db("election")
    daemons = [d.Daemon(ADJUTANTD, db, WORK).start() for _ in range(2)]
    sidecars = [Sidecar(daemons[i], db, str(i)) for i in range(2)]

    first, term1 = d.wait_for(lambda: sole_leader(daemons),
                              what="exactly one leader")
    # Stays that way over several renewals of the leader's TTL.
    for _ in range(20):
        assert sole_leader(daemons) == (first, term1), [
            leadership(x) for x in daemons]
    other = 1 - first

    # The leader's elector dies without a word: its session ends, the lock
    # goes to the other elector, which draws a higher term; the old daemon's
    # leadership lapses at its TTL.
    sidecars[first].kill9()
    second, term2 = d.wait_for(
        lambda: (lambda s: s if s and s[0] == other else None)(
            sole_leader(daemons)),
        what="the other daemon to take over")
    assert term2 > term1, (term1, term2)
    assert leadership(daemons[first])[2] >= term2, "the store saw the new term"

    # A new elector next to the first daemon waits as a follower; the leader's
    # elector stopped with SIGTERM revokes its daemon at once and releases
    # the lock, so the first daemon leads again, with a still higher term.
    sidecars[first] = Sidecar(daemons[first], db, "%d-again" % first)
    for _ in range(10):
        assert sole_leader(daemons) == (other, term2)
    sidecars[other].stop()
    assert not leadership(daemons[other])[0], "revoked before the elector exited"
    back, term3 = d.wait_for(
        lambda: (lambda s: s if s and s[0] == first else None)(
            sole_leader(daemons)),
        what="the first daemon to lead again")
    assert term3 > term2, (term2, term3)

    # The leading daemon dies: its elector, unable to renew for a TTL, gives
    # up the lock, and the other daemon leads with a higher term.
    sidecars[other] = Sidecar(daemons[other], db, "%d-again" % other)
    daemons[first].kill9()
    d.wait_for(lambda: (lambda s: s[0] and s[1] > term3)(
                   leadership(daemons[other])),
               what="the surviving daemon to lead")

    for sidecar in sidecars:
        sidecar.stop()
    daemons[other].stop()


def test_bad_arguments_are_refused(pg):
    for argv, flag in ((["--server", "127.0.0.1:1"], "--db"),
                       (["--db", "postgresql:///x", "--ttl", "0.5"], "--ttl")):
        env = dict(os.environ)
        env.pop("ADJUTANT_LEADER_DB", None)
        result = subprocess.run(["/usr/bin/python3", SIDECAR] + argv, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (argv, result.returncode, result.stderr)
        assert flag in result.stderr, (argv, result.stderr)


def main():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise SystemExit("python3-psycopg2 is not installed: run "
                         "scripts/install-deps.sh")
    pg = Postgres()
    try:
        return d.run_cases([
            ("two electors, two daemons: one leader, takeover with a higher "
             "term, revoke on SIGTERM", lambda: test_election_and_takeover(pg)),
            ("bad arguments are refused", lambda: test_bad_arguments_are_refused(pg)),
        ])
    finally:
        pg.destroy()
        import shutil
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
