"""Helpers for acceptance tests that drive real adjutantd processes through
stubs generated from proto/ by protoc (a client the project did not write).

Only Debian's python3-grpcio, python3-protobuf and grpc_python_plugin are
needed. Import this module after putting its folder on sys.path.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sanitized builds run a few times slower (scripts/sanitize.sh sets 4): every
# real-time wait below scales by this factor. Never a way to let time pass.
TIMEOUT_MULTIPLIER = float(os.environ.get("ADJUTANT_TEST_TIMEOUT_MULTIPLIER", "1"))


def scaled(seconds):
    """A real-time timeout of `seconds`, scaled for slow (sanitized) builds."""
    return seconds * TIMEOUT_MULTIPLIER


def load_stubs():
    """Generates the Python stubs into a temp dir (removed at exit) and puts
    it first on sys.path."""
    out = tempfile.mkdtemp(prefix="adjutant-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    protos = [os.path.join("adjutant", "v1", p)
              for p in ("job_queue.proto", "scheduler.proto")]
    subprocess.run(
        ["protoc", "--proto_path=" + os.path.join(ROOT, "proto"),
         "--python_out=" + out, "--grpc_python_out=" + out,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
        check=True)
    sys.path.insert(0, out)


def wait_for(predicate, timeout=15.0, what="condition"):
    """Polls `predicate` until it returns a truthy value; fails after
    `timeout` seconds of real time. For waiting on a real daemon's progress,
    never for letting time pass."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


_STARTED = []  # every process a Daemon started; killed at exit if still up


def _kill_leftovers():
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_kill_leftovers)


class Daemon:
    """One adjutantd process on 127.0.0.1:0 with its port read from a file.
    A test that fails midway leaves no daemon behind: they are killed at
    exit."""

    def __init__(self, binary, db, workdir, clock_offset_seconds=0, extra=(),
                 channel_credentials=None, log_level="warn", env=None):
        """`channel_credentials`: grpc.ssl_channel_credentials(...) for a
        daemon serving TLS; None for plaintext."""
        self.binary = binary
        self.log_level = log_level
        self.channel_credentials = channel_credentials
        self.db = db
        self.workdir = workdir
        self.clock_offset_seconds = clock_offset_seconds
        self.extra = list(extra)
        self.env = env  # the process's environment; None: ours
        self.proc = None
        self.port = None
        self.port_file = None

    def start(self):
        self.spawn()
        return self.await_listening()

    def spawn(self):
        """Starts the process without waiting for it to listen (then call
        await_listening)."""
        port_file = tempfile.mktemp(prefix="port-", dir=self.workdir)
        self.port_file = port_file
        args = [self.binary, "--listen", "127.0.0.1:0", "--db", self.db,
                "--port-file", port_file, "--log-level", self.log_level]
        if self.clock_offset_seconds:
            args += ["--clock-offset-for-test", "%ds" % self.clock_offset_seconds]
        self.log = open(os.path.join(self.workdir, "adjutantd-%d.log" % time.monotonic_ns()), "w")
        self.proc = subprocess.Popen(args + self.extra, stdout=self.log, stderr=self.log,
                                     env=self.env)
        _STARTED.append(self.proc)
        return self

    def await_listening(self):
        import grpc
        port_file = self.port_file

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("adjutantd exited with %s" % self.proc.returncode)
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                return text if text else None
            except FileNotFoundError:
                return None

        self.port = int(wait_for(ready, what="adjutantd to listen"))
        target = "127.0.0.1:%d" % self.port
        if self.channel_credentials is not None:
            self.channel = grpc.secure_channel(target, self.channel_credentials)
        else:
            self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=scaled(10))
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.channel.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=scaled(30))
        self.channel.close()
        if code != 0:
            raise AssertionError("adjutantd exited %d on SIGTERM" % code)


def run_cases(cases):
    """Runs each (name, function), prints a line per case and the closing
    count, and returns the process exit code."""
    passed = failed = 0
    for name, fn in cases:
        try:
            fn()
            passed += 1
            print("PASS", name, flush=True)
        except Exception as e:  # report every failure, then go on
            failed += 1
            print("FAIL", name + ":", repr(e), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1
