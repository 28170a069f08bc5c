#!/usr/bin/env python3
"""adjutantd speaks systemd's notify protocol (deploy/adjutantd.service,
Type=notify): READY=1 only once the port is bound and the port file written,
WATCHDOG=1 at half the watchdog interval, STATUS= lines, STOPPING=1 on
SIGTERM before a clean exit. The test plays systemd: it binds the AF_UNIX
datagram socket named in $NOTIFY_SOCKET and reads what the daemon sends.

Usage: systemd_notify_test.py ADJUTANTD
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon as d  # noqa: E402

ADJUTANTD = sys.argv[1]


class NotifySocket:
    """The service manager's end: an AF_UNIX SOCK_DGRAM socket in `dir`."""

    def __init__(self, dir):
        self.path = os.path.join(dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # every datagram received, as a dict of its lines

    def receive(self, timeout):
        """The next datagram as a dict, or None after `timeout` seconds of
        real time without one."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1)
                      for line in data.decode().split("\n") if line)
        self.messages.append(fields)
        return fields

    def receive_until(self, predicate, timeout=15.0, what="a message"):
        """Receives until a datagram satisfies `predicate`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %s; got %r"
                                     % (what, self.messages))
            message = self.receive(left)
            if message is not None and predicate(message):
                return message

    def close(self):
        self.sock.close()


def daemon_env(notify_path, **extra):
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    env["NOTIFY_SOCKET"] = notify_path
    env.update(extra)
    return env


def test_ready_watchdog_stopping():
    with tempfile.TemporaryDirectory(prefix="adjutant-notify-") as tmp:
        notify = NotifySocket(tmp)
        daemon = d.Daemon(ADJUTANTD, os.path.join(tmp, "jobs.db"), tmp,
                          env=daemon_env(notify.path, WATCHDOG_USEC="400000"))
        daemon.spawn()

        def ready_seen(message):
            if message.get("READY") != "1":
                return False
            # Checked the moment READY=1 arrives: the daemon wrote the port
            # file and accepts connections before it said so.
            if not os.path.exists(daemon.port_file):
                raise AssertionError("READY=1 before the port file was written")
            with open(daemon.port_file) as f:
                port = int(f.read().strip())
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            expected = "serving on 127.0.0.1:%d" % port
            if message.get("STATUS") != expected:
                raise AssertionError("READY=1 with STATUS=%r, expected %r"
                                     % (message.get("STATUS"), expected))
            return True

        notify.receive_until(ready_seen, what="READY=1")
        statuses = [m["STATUS"] for m in notify.messages if "STATUS" in m]
        assert statuses[0] == "opening the store", statuses
        daemon.await_listening()

        # WATCHDOG_USEC=400000: the store is checked, and the watchdog
        # pinged, every 200 ms. With the default 5 s interval, five pings
        # would take 20 s: more than this test waits.
        started = time.monotonic()
        for _ in range(5):
            notify.receive_until(lambda m: m.get("WATCHDOG") == "1",
                                 timeout=15.0 - (time.monotonic() - started),
                                 what="5 WATCHDOG=1 within 15 s")

        daemon.proc.send_signal(signal.SIGTERM)
        notify.receive_until(lambda m: m.get("STOPPING") == "1",
                             what="STOPPING=1")
        stopping = [m for m in notify.messages if m.get("STOPPING") == "1"][0]
        assert stopping.get("STATUS") == "stopping", stopping
        code = daemon.proc.wait(timeout=30)
        daemon.channel.close()
        assert code == 0, "adjutantd exited %d on SIGTERM" % code
        assert sum(1 for m in notify.messages if m.get("READY") == "1") == 1
        notify.close()


def test_no_watchdog_pings_when_not_asked():
    # WATCHDOG_PID names another process (the variables were inherited):
    # no watchdog for us, but READY=1 still.
    with tempfile.TemporaryDirectory(prefix="adjutant-notify-") as tmp:
        notify = NotifySocket(tmp)
        daemon = d.Daemon(ADJUTANTD, os.path.join(tmp, "jobs.db"), tmp,
                          env=daemon_env(notify.path, WATCHDOG_USEC="400000",
                                         WATCHDOG_PID="1"))
        daemon.start()
        notify.receive_until(lambda m: m.get("READY") == "1", what="READY=1")
        daemon.stop()
        notify.receive_until(lambda m: m.get("STOPPING") == "1",
                             what="STOPPING=1")
        pings = [m for m in notify.messages if "WATCHDOG" in m]
        assert not pings, "unasked watchdog pings: %r" % pings
        notify.close()


def test_invalid_watchdog_setting_is_refused():
    with tempfile.TemporaryDirectory(prefix="adjutant-notify-") as tmp:
        env = daemon_env(os.path.join(tmp, "absent.sock"), WATCHDOG_USEC="soon")
        result = subprocess.run(
            [ADJUTANTD, "--listen", "127.0.0.1:0",
             "--db", os.path.join(tmp, "jobs.db")],
            env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert "WATCHDOG_USEC" in result.stderr, result.stderr


def test_without_notify_socket_nothing_changes():
    # Started by hand (no NOTIFY_SOCKET): serves and stops as always.
    with tempfile.TemporaryDirectory(prefix="adjutant-notify-") as tmp:
        env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        daemon = d.Daemon(ADJUTANTD, os.path.join(tmp, "jobs.db"), tmp, env=env)
        daemon.start()
        daemon.stop()


if __name__ == "__main__":
    sys.exit(d.run_cases([
        ("READY=1 after the port is bound, WATCHDOG=1, STOPPING=1",
         test_ready_watchdog_stopping),
        ("no watchdog pings when WATCHDOG_PID is another process",
         test_no_watchdog_pings_when_not_asked),
        ("an invalid WATCHDOG_USEC is refused", test_invalid_watchdog_setting_is_refused),
        ("without NOTIFY_SOCKET the daemon runs as before",
         test_without_notify_socket_nothing_changes),
    ]))
