"""What the peer `run` scripts share: the command line, throwaway servers
(beanstalkd, Redis, PostgreSQL 15) in temp dirs on free ports, the Node
drivers, and the one JSON line each run prints.

A run that cannot happen (a server or package missing, a server that does not
start, a driver that fails) calls `fail`, which prints the reason on stderr and
exits 2. Every server is started in its own process group and stopped, and its
temp dir removed, on the way out."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PEERS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = os.path.join(PEERS_DIR, "node")
PG_BIN = "/usr/lib/postgresql/15/bin"
SCENARIOS = ("enqueue", "lifecycle", "latency")


class CannotRun(Exception):
    """Raised when the run cannot produce a figure; the message says why."""


def fail(reason):
    sys.stderr.write("%s: cannot run: %s\n" % (_program_name(), reason))
    sys.exit(2)


def _program_name():
    # bench/peers/NAME/run -> NAME
    return os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive, got %d" % value)
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive, got %s" % text)
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be zero or more, got %s" % text)
    return value


def parse_args(system):
    """The command line every `run` takes. argparse exits 2 on a bad flag."""
    parser = argparse.ArgumentParser(
        prog="bench/peers/%s/run" % system,
        description="Start a throwaway %s, drive it, stop it and print one JSON line." % system)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS,
                        help="enqueue: C producers putting one job at a time; lifecycle: C workers "
                        "each doing put, reserve, complete; latency: one producer at --rate jobs/s, "
                        "one blocking consumer, enqueue-to-receive percentiles")
    parser.add_argument("--seconds", type=positive_float, required=True,
                        help="measured seconds, after the warm-up")
    parser.add_argument("--concurrency", type=positive_int, required=True,
                        help="concurrent clients (enqueue, lifecycle); latency always uses one "
                        "producer and one consumer")
    parser.add_argument("--payload-bytes", type=positive_int, required=True,
                        help="bytes of payload per job")
    parser.add_argument("--warmup", type=non_negative_float, default=2.0,
                        help="seconds driven before measuring (default 2)")
    parser.add_argument("--rate", type=positive_float, default=200.0,
                        help="latency scenario: jobs per second the producer aims at (default 200)")
    return parser.parse_args()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CannotRun("%s exited with status %d while starting" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise CannotRun("%s did not listen on 127.0.0.1:%d within %.0f s" % (what, port, timeout))


def require_executable(path, package):
    if shutil.which(path) is None:
        raise CannotRun("%s is missing: install the Debian package %s (bench/peers/install.sh)"
                        % (path, package))


def _stop_process(proc, timeout=20.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Beanstalkd:
    """beanstalkd with a binlog in a temp dir, fsync after every write (-f 0)."""

    DURABILITY = "binlog fsync per write (-f 0)"

    def __init__(self, max_job_bytes):
        require_executable("beanstalkd", "beanstalkd")
        self.dir = tempfile.mkdtemp(prefix="peer-beanstalkd-")
        self.proc = None
        try:
            binlog = os.path.join(self.dir, "binlog")
            os.mkdir(binlog)
            self.port = free_port()
            self.log = open(os.path.join(self.dir, "beanstalkd.log"), "wb")
            self.proc = subprocess.Popen(
                ["beanstalkd", "-l", "127.0.0.1", "-p", str(self.port), "-b", binlog, "-f", "0",
                 "-z", str(max(65535, max_job_bytes))],
                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
            wait_for_port(self.port, self.proc, "beanstalkd")
        except BaseException:
            self.destroy()
            raise

    def version(self):
        out = subprocess.run(["beanstalkd", "-v"], capture_output=True, text=True)
        return out.stdout.strip()

    def destroy(self):
        _stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """redis-server with only an append-only file in a temp dir, fsync before
    every reply (appendfsync always), no RDB snapshots."""

    DURABILITY = "AOF appendfsync always (fsync before each reply; no RDB saves)"

    def __init__(self):
        require_executable("redis-server", "redis-server")
        self.dir = tempfile.mkdtemp(prefix="peer-redis-")
        self.proc = None
        try:
            self.port = free_port()
            self.log = open(os.path.join(self.dir, "redis.log"), "wb")
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                 "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "always",
                 "--save", "", "--daemonize", "no", "--protected-mode", "no",
                 "--maxmemory-policy", "noeviction", "--maxclients", "10000"],
                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
            wait_for_port(self.port, self.proc, "redis-server")
        except BaseException:
            self.destroy()
            raise

    def version(self):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return out.stdout.split(" sha=")[0].strip()

    def destroy(self):
        _stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres:
    """A throwaway PostgreSQL 15 cluster in a temp dir listening on
    127.0.0.1:port, with fsync=on and synchronous_commit=on: a commit returns
    once its WAL is flushed. As root the server runs as `postgres`."""

    DURABILITY = "fsync=on, synchronous_commit=on (WAL flushed before each commit returns)"

    def __init__(self, max_connections):
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
                raise CannotRun("%s/%s is missing: install the Debian package postgresql-15 "
                                "(bench/peers/install.sh)" % (PG_BIN, tool))
        self.dir = tempfile.mkdtemp(prefix="peer-pg-")
        self.data = os.path.join(self.dir, "data")
        self.started = False
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
            self._run([PG_BIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--no-locale", "--no-sync"], "initdb")
            self.port = free_port()
            with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
                conf.write("\nlisten_addresses = '127.0.0.1'\nport = %d\n"
                           "unix_socket_directories = '%s'\n"
                           "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
                           "max_connections = %d\n" % (self.port, self.dir, max_connections))
            self._run([PG_BIN + "/pg_ctl", "-D", self.data, "-l",
                       os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"],
                      "pg_ctl start")
            self.started = True
        except BaseException:
            self.destroy()
            raise

    def _run(self, argv, what):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        result = subprocess.run(argv, cwd=self.dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise CannotRun("%s failed (status %d): %s" % (what, result.returncode,
                                                           result.stdout.strip()[-2000:]))

    def version(self):
        out = subprocess.run([PG_BIN + "/postgres", "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def uri(self):
        return "postgresql://postgres@127.0.0.1:%d/postgres" % self.port

    def destroy(self):
        if self.started:
            try:
                self._run([PG_BIN + "/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                          "pg_ctl stop")
            except CannotRun:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def run_node_driver(script, env_args, timeout):
    """Runs bench/peers/node/SCRIPT with the given flags; returns the JSON
    object it printed as its last stdout line. A driver still running after
    `timeout` seconds (a wedged server) is killed."""
    require_executable("node", "nodejs")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        raise CannotRun("%s/node_modules is missing: run bench/peers/install.sh" % NODE_DIR)
    argv = ["node", os.path.join(NODE_DIR, script)] + env_args
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_process(proc)
        raise CannotRun("the driver %s was still running after %.0f s" % (script, timeout))
    except BaseException:
        _stop_process(proc)
        raise
    if proc.returncode != 0:
        raise CannotRun("the driver %s exited with status %d" % (script, proc.returncode))
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise CannotRun("the driver %s printed nothing" % script)
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise CannotRun("the driver %s printed %r, not JSON" % (script, lines[-1]))


def node_package_version(name):
    """The installed version of a package under bench/peers/node."""
    path = os.path.join(NODE_DIR, "node_modules", name, "package.json")
    try:
        with open(path) as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def driver_timeout(args):
    """Seconds a driver may take: its warm-up and measured time, plus time to
    connect, set up (pg-boss creates its schema) and drain."""
    return args.warmup + args.seconds + 120.0


def driver_flags(args):
    return ["--scenario", args.scenario, "--seconds", str(args.seconds),
            "--concurrency", str(args.concurrency), "--payload-bytes", str(args.payload_bytes),
            "--warmup", str(args.warmup), "--rate", str(args.rate)]


def emit(system, args, durability, version, measured):
    """Prints the one JSON line. `measured` holds ops_per_s, p50_ms, p99_ms and,
    for latency, rate_per_s (the rate achieved)."""

    def rounded(value, digits):
        return None if value is None else round(float(value), digits)

    line = {
        "system": system,
        "scenario": args.scenario,
        "ops_per_s": rounded(measured["ops_per_s"], 1),
        "p50_ms": rounded(measured.get("p50_ms"), 3),
        "p99_ms": rounded(measured.get("p99_ms"), 3),
        "durability": durability,
        "concurrency": 1 if args.scenario == "latency" else args.concurrency,
        "payload_bytes": args.payload_bytes,
        "seconds": args.seconds if args.seconds != int(args.seconds) else int(args.seconds),
        "version": version,
    }
    if args.scenario == "latency":
        line["rate_per_s"] = rounded(measured.get("rate_per_s"), 1)
        if line["rate_per_s"] is not None and line["rate_per_s"] < 0.9 * args.rate:
            sys.stderr.write("%s: the producer, one durable put at a time, reached %.1f of the "
                             "%.1f jobs/s asked for\n" % (system, line["rate_per_s"], args.rate))
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(system, body):
    """Parses the flags and calls body(args); turns CannotRun and signals into
    exit 2 with the reason on stderr."""
    args = parse_args(system)

    def on_signal(signum, _frame):
        raise CannotRun("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        body(args)
    except CannotRun as e:
        fail(str(e))
