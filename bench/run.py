#!/usr/bin/env python3
"""Adjutant's benchmark, in one command (docs/BENCHMARKS.md).

Builds adjutantd and adjutant_bench (or takes them from --build-dir), then
for each scenario starts a fresh adjutantd on a temporary SQLite file
(127.0.0.1:0, --port-file) and runs the load generator against it; then runs
each peer (bench/peers/*/run) with the same settings. Prints a table
(scenario, system, figure, durability, target, verdict, ratio) and, as its
last line, one JSON object with every figure and every check.

    bench/run.py                          # everything, 10 s per phase
    bench/run.py --scenarios enqueue,lifecycle --seconds 5 --no-peers
    bench/run.py --smoke                  # a few seconds, small sizes

Exit status: 0 when every scenario ran (missed targets included: this is a
measurement), 1 when an Adjutant scenario failed or a daemon did not start,
2 on a bad option.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The scenarios a user picks, and the load generator's phases behind each.
SCENARIOS = {
    "echo": ["echo"],
    "enqueue": ["enqueue"],
    "lifecycle": ["lifecycle"],
    "batched": ["batched", "batched_stream"],
    "latency": ["latency"],
    "cron": ["cron", "cron_idle"],
    "scale": ["scale"],
}
# The scenarios the peers implement (bench/peers/*/run).
PEER_SCENARIOS = ("enqueue", "lifecycle", "latency")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                   help="CMake build directory (default: build/)")
    p.add_argument("--no-build", action="store_true",
                   help="use the binaries in --build-dir as they are")
    p.add_argument("--adjutantd", help="adjutantd binary (skips the build)")
    p.add_argument("--loadgen", help="adjutant_bench binary (skips the build)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated, of: " + ", ".join(SCENARIOS))
    p.add_argument("--seconds", type=float, default=10,
                   help="measured seconds per phase (default 10)")
    p.add_argument("--warmup-seconds", type=float, default=1,
                   help="unmeasured seconds before each phase (default 1)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--payload-bytes", type=int, default=256)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--latency-rate", type=float, default=50.0,
                   help="jobs/s of the latency scenario, for Adjutant and the "
                   "peers alike (50: each peer with an fsync per write keeps "
                   "up on this class of machine)")
    p.add_argument("--cron-schedules", type=int, default=1000)
    p.add_argument("--idle-schedules", type=int, default=10000)
    p.add_argument("--scale-jobs", type=int, default=1000000)
    p.add_argument("--scale-baseline-jobs", type=int, default=1000)
    p.add_argument("--sqlite-synchronous", choices=("full", "normal"),
                   default="full", help="the daemon's durability (default full)")
    p.add_argument("--no-peers", action="store_true", help="skip the peers")
    p.add_argument("--peers", help="comma-separated peer names (default: all "
                   "of bench/peers/*/run)")
    p.add_argument("--peers-dir", default=os.path.join(ROOT, "bench", "peers"),
                   help="where the peers are: DIR/NAME/run (default bench/peers)")
    p.add_argument("--smoke", action="store_true",
                   help="CI smoke sizes: 1 s phases, 20 cron schedules, 200 "
                   "idle ones, scale with 10 000 jobs, no peers")
    p.add_argument("--json-out", help="also write the JSON line here")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directories (daemon logs)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seconds = 1
        args.warmup_seconds = 0.2
        # Small enough that a batched cycle completes within the second
        # even in a sanitizer build on a busy machine.
        args.concurrency = 16
        args.batch = 20
        args.cron_schedules = 20
        args.idle_schedules = 200
        args.scale_jobs = 10000
        args.no_peers = True
    args.scenario_list = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in args.scenario_list if s not in SCENARIOS]
    if unknown:
        p.error("--scenarios: unknown %s (known: %s)"
                % (", ".join(unknown), ", ".join(SCENARIOS)))
    if args.seconds <= 0 or args.warmup_seconds < 0:
        p.error("--seconds must be > 0 and --warmup-seconds >= 0")
    if args.concurrency < 1 or args.payload_bytes < 8 or not 1 <= args.batch <= 1000:
        p.error("--concurrency >= 1, --payload-bytes >= 8 and --batch 1..1000")
    return args


def binaries(args):
    """(adjutantd, adjutant_bench), building them unless told not to."""
    if args.adjutantd and args.loadgen:
        return args.adjutantd, args.loadgen
    build = args.build_dir
    if not args.no_build:
        if not os.path.exists(os.path.join(build, "build.ninja")):
            launcher = []
            if shutil.which("ccache"):
                launcher = ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
                            "-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
            subprocess.run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja",
                            "-DCMAKE_BUILD_TYPE=RelWithDebInfo"] + launcher,
                           check=True, stdout=sys.stderr)
        subprocess.run(["cmake", "--build", build, "--target", "adjutantd",
                        "adjutant_bench"], check=True, stdout=sys.stderr)
    return (args.adjutantd or os.path.join(build, "server", "adjutantd"),
            args.loadgen or os.path.join(build, "bench", "adjutant_bench"))


def durability_label(sync):
    if sync == "full":
        return "fsync per commit (SQLite FULL)"
    return "WAL fsync at checkpoints only (SQLite NORMAL)"


class Daemon:
    """A fresh adjutantd on a temporary SQLite file, 127.0.0.1:0."""

    def __init__(self, binary, sync, keep):
        self.dir = tempfile.mkdtemp(prefix="adjutant-bench-")
        self.keep = keep
        port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "adjutantd.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--port-file", port_file,
             "--db", os.path.join(self.dir, "adjutant.db"),
             "--sqlite-synchronous", sync, "--log-level", "warn"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("adjutantd exited with %d: %s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("adjutantd did not listen within 30 s")
            time.sleep(0.02)
        self.pid = self.proc.pid
        self.target = "127.0.0.1:%d" % self.port

    def log_tail(self):
        self.log.flush()
        with open(self.log_path) as f:
            return "".join(f.readlines()[-5:]).strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_phase(args, adjutantd, loadgen, phase, durability):
    """Runs one load generator phase against a fresh daemon; its JSON lines."""
    daemon = Daemon(adjutantd, args.sqlite_synchronous, args.keep)
    try:
        cmd = [loadgen, "--target", daemon.target, "--scenario", phase,
               "--seconds", str(args.seconds),
               "--warmup-seconds", str(args.warmup_seconds),
               "--concurrency", str(args.concurrency),
               "--payload-bytes", str(args.payload_bytes),
               "--batch", str(args.batch),
               "--latency-rate", str(args.latency_rate),
               "--daemon-pid", str(daemon.pid),
               "--durability", durability,
               "--cron-schedules", str(args.cron_schedules),
               "--idle-schedules", str(args.idle_schedules),
               "--scale-jobs", str(args.scale_jobs),
               "--scale-baseline-jobs", str(args.scale_baseline_jobs)]
        print("bench: %s ..." % phase, file=sys.stderr, flush=True)
        # Generous: scale fills a million jobs before it measures.
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                             timeout=args.seconds * 10 + 900)
        lines = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
        if not lines:
            lines = [{"system": "adjutant", "scenario": phase, "ops_per_s": None,
                      "p50_ms": None, "p99_ms": None, "durability": durability,
                      "status": "error",
                      "message": "adjutant_bench exited %d with no result"
                                 % out.returncode}]
        if daemon.proc.poll() is not None:
            for line in lines:
                line["status"] = "error"
                line["message"] = "adjutantd died: " + daemon.log_tail()
        return lines
    finally:
        daemon.stop()


def discover_peers(args):
    peers = sorted(glob.glob(os.path.join(args.peers_dir, "*", "run")))
    peers = [p for p in peers if os.access(p, os.X_OK)]
    if args.peers:
        wanted = set(args.peers.split(","))
        peers = [p for p in peers if os.path.basename(os.path.dirname(p)) in wanted]
    return peers


def run_peer(args, run, scenario):
    name = os.path.basename(os.path.dirname(run))
    print("bench: peer %s %s ..." % (name, scenario), file=sys.stderr, flush=True)
    base = {"system": name, "scenario": scenario, "ops_per_s": None,
            "p50_ms": None, "p99_ms": None, "durability": ""}
    try:
        out = subprocess.run(
            [run, "--scenario", scenario, "--seconds", str(args.seconds),
             "--concurrency", str(args.concurrency),
             "--payload-bytes", str(args.payload_bytes),
             "--rate", str(args.latency_rate)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=args.seconds * 10 + 300)
    except subprocess.TimeoutExpired:
        return dict(base, status="error", message="timed out")
    why = out.stderr.strip().splitlines()[-1:] or [""]
    if out.returncode == 2:
        return dict(base, status="skipped", message=why[0])
    lines = [l for l in out.stdout.splitlines() if l.strip().startswith("{")]
    if out.returncode != 0 or not lines:
        return dict(base, status="error",
                    message="exit %d: %s" % (out.returncode, why[0]))
    try:
        line = json.loads(lines[-1])
    except ValueError as e:
        return dict(base, status="error", message="bad JSON: %s" % e)
    line.setdefault("status", "ok")
    return line


def extra(result, key):
    value = result.get(key)
    return value if isinstance(value, (int, float)) else None


def evaluate(results):
    """The targets of issue 6, as rows: scenario, system, figure, durability,
    target, verdict, ratio. The ratio is the measured value over the target's
    bound: at least 1 meets a "more than" target, under 1 a "less than" one."""
    ours = {r["scenario"]: r for r in results if r["system"] == "adjutant"}
    rows = []

    def ok(r):
        return r is not None and r.get("status") == "ok"

    def row(result, figure, target, value, bound, higher_is_better):
        verdict, ratio = "n/a", None
        if result is None:
            verdict = "not run"
        elif result.get("status") != "ok":
            verdict = result.get("status", "error")
            figure = "-"
        elif value is not None and bound:
            ratio = value / bound
            met = value >= bound if higher_is_better else value < bound
            verdict = "met" if met else "missed"
        rows.append({"scenario": result["scenario"] if result else "?",
                     "system": result["system"] if result else "adjutant",
                     "figure": figure, "durability": result.get("durability", "")
                     if result else "", "target": target, "verdict": verdict,
                     "ratio": ratio})

    def ops(r):
        return extra(r, "ops_per_s") if r else None

    echo = ours.get("echo")
    echo_ops = ops(echo) if ok(echo) else None
    if echo:
        row(echo, fmt_ops(ops(echo)), "baseline (gRPC ceiling)", None, None, True)
    r = ours.get("enqueue")
    if r:
        row(r, fmt_ops(ops(r)), ">= 0.6 x echo", ops(r),
            0.6 * echo_ops if echo_ops else None, True)
    r = ours.get("lifecycle")
    if r:
        row(r, fmt_ops(ops(r)) + " jobs", ">= 0.5 x echo / 3", ops(r),
            0.5 * echo_ops / 3 if echo_ops else None, True)
    for name in ("batched", "batched_stream"):
        r = ours.get(name)
        if r:
            row(r, fmt_ops(ops(r)) + " jobs", ">= 50000 jobs/s", ops(r), 50000, True)
    r = ours.get("latency")
    if r:
        row(r, "p50 %s" % fmt_ms(r.get("p50_ms")), "p50 < 1 ms",
            extra(r, "p50_ms"), 1.0, False)
        row(r, "p99 %s" % fmt_ms(r.get("p99_ms")), "p99 < 5 ms",
            extra(r, "p99_ms"), 5.0, False)
    r = ours.get("cron")
    if r:
        row(r, "lateness p50 %s p99 %s" % (fmt_ms(r.get("p50_ms")),
                                          fmt_ms(r.get("p99_ms"))),
            "p99 < 10 ms", extra(r, "p99_ms"), 10.0, False)
        fired = extra(r, "ops")
        expected = extra(r, "expected_fires")
        if expected:
            row(r, "fired %d of %d ticks" % (fired or 0, expected),
                "every tick fired", fired, expected, True)
    r = ours.get("cron_idle")
    if r:
        row(r, "CPU %.2f %%" % (extra(r, "cpu_percent") or 0), "idle CPU < 1 %",
            extra(r, "cpu_percent"), 1.0, False)
    base = ours.get("scale_baseline")
    r = ours.get("scale")
    if base:
        row(base, fmt_ops(ops(base)) + " dequeue+ack at %d queued"
            % (extra(base, "queued") or 0), "baseline of scale", None, None, True)
    if r:
        row(r, fmt_ops(ops(r)) + " dequeue+ack at %d queued"
            % (extra(r, "queued") or 0), ">= 0.8 x baseline", ops(r),
            0.8 * ops(base) if ok(base) and ops(base) else None, True)
        row(r, "RSS %.1f MB" % (extra(r, "rss_mb") or 0), "RSS < 150 MB",
            extra(r, "rss_mb"), 150.0, False)
    # The peers: Adjutant at least twice each one's figure. Ratio: ours over
    # twice theirs (throughput), or their p50 over twice ours (latency);
    # met when >= 1.
    for peer in (x for x in results if x["system"] != "adjutant"):
        mine = ours.get(peer["scenario"])
        latency = peer["scenario"] == "latency"
        if latency:
            figure = "p50 %s p99 %s" % (fmt_ms(peer.get("p50_ms")),
                                        fmt_ms(peer.get("p99_ms")))
            target = "adjutant p50 <= 0.5 x this"
        else:
            figure = fmt_ops(ops(peer))
            target = "adjutant >= 2 x this"
        entry = {"scenario": peer["scenario"], "system": peer["system"],
                 "figure": figure, "durability": peer.get("durability", ""),
                 "target": target, "verdict": "n/a", "ratio": None}
        if peer.get("status", "ok") != "ok":
            entry["verdict"] = peer.get("status", "error")
            entry["figure"] = peer.get("message", "")[:60]
        elif not ok(mine):
            entry["verdict"] = "adjutant not run"
        else:
            if latency:
                theirs, twice = extra(peer, "p50_ms"), 2 * (extra(mine, "p50_ms") or 0)
            else:
                theirs, twice = ops(mine), 2 * (ops(peer) or 0)
            if theirs is not None and twice > 0:
                entry["ratio"] = theirs / twice
                entry["verdict"] = "met" if entry["ratio"] >= 1 else "missed"
        rows.append(entry)
    return rows


def fmt_ops(v):
    return "n/a" if v is None else "%.0f/s" % v


def fmt_ms(v):
    return "n/a" if v is None else "%.2f ms" % v


def print_table(rows, out):
    headers = ("scenario", "system", "figure", "durability", "target",
               "verdict", "ratio")
    cells = [[r["scenario"], r["system"], r["figure"], r["durability"],
              r["target"], r["verdict"],
              "" if r["ratio"] is None else "%.2f" % r["ratio"]] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells])
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=out)


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release()}


def main(argv):
    args = parse_args(argv)
    adjutantd, loadgen = binaries(args)
    durability = durability_label(args.sqlite_synchronous)
    results = []
    failed = False
    for scenario in args.scenario_list:
        for phase in SCENARIOS[scenario]:
            try:
                lines = run_phase(args, adjutantd, loadgen, phase, durability)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                lines = [{"system": "adjutant", "scenario": phase,
                          "ops_per_s": None, "p50_ms": None, "p99_ms": None,
                          "durability": durability, "status": "error",
                          "message": str(e)}]
            for line in lines:
                if line.get("status") == "error":
                    failed = True
                    print("bench: %s failed: %s" % (line["scenario"],
                                                    line.get("message", "")),
                          file=sys.stderr)
            results.extend(lines)
    if not args.no_peers:
        for run in discover_peers(args):
            for scenario in PEER_SCENARIOS:
                if scenario in args.scenario_list:
                    results.append(run_peer(args, run, scenario))
    rows = evaluate(results)
    print_table(rows, sys.stdout)
    report = {
        "bench": "adjutant",
        "date": datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "config": {"seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
                   "concurrency": args.concurrency,
                   "payload_bytes": args.payload_bytes, "batch": args.batch,
                   "cron_schedules": args.cron_schedules,
                   "idle_schedules": args.idle_schedules,
                   "scale_jobs": args.scale_jobs,
                   "scale_baseline_jobs": args.scale_baseline_jobs,
                   "durability": durability},
        "results": results,
        "checks": rows,
    }
    line = json.dumps(report, separators=(",", ":"))
    print(line, flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
