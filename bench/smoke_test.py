#!/usr/bin/env python3
"""bench_smoke: keeps the benchmark harness from rotting (ctest, label bench).

Runs `bench/run.py --smoke` (every Adjutant scenario for about a second, with
small sizes, each against a fresh real adjutantd) and checks that the JSON
parses and that the counts are sane: every phase present, operations
counted, percentiles ordered, no tick fired twice, CPU and RSS read. Never
the speed. Then the runner's handling of peers, with two peers made here
(one that reports, one that cannot run), and the clear errors of bad
options.

Usage: smoke_test.py ADJUTANTD ADJUTANT_BENCH
"""
import json
import os
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run.py")

PHASES = ("echo", "enqueue", "lifecycle", "batched", "batched_stream",
          "latency", "cron", "cron_idle", "scale_baseline", "scale")
# Until the server has AckBatch and Work, these report "unimplemented".
MAY_BE_UNIMPLEMENTED = ("batched", "batched_stream")


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def run(args, expect_code=0):
    out = subprocess.run([sys.executable, RUN] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=300)
    sys.stderr.write(out.stderr)
    if out.returncode != expect_code:
        fail("run.py %s exited %d (expected %d):\n%s" % (
            " ".join(args), out.returncode, expect_code, out.stdout))
    return out


def report_of(out):
    lines = out.stdout.strip().splitlines()
    check(lines, "run.py printed nothing")
    try:
        return json.loads(lines[-1])
    except ValueError as e:
        fail("the last line is not JSON (%s): %r" % (e, lines[-1][:200]))


def check_smoke(adjutantd, loadgen):
    out = run(["--smoke", "--adjutantd", adjutantd, "--loadgen", loadgen])
    report = report_of(out)
    print(out.stdout.rsplit("\n", 2)[0])  # the table, for the log
    results = {r["scenario"]: r for r in report["results"]}
    check(sorted(results) == sorted(PHASES),
          "phases %s, expected %s" % (sorted(results), sorted(PHASES)))
    for name, r in results.items():
        for key in ("system", "scenario", "ops_per_s", "p50_ms", "p99_ms",
                    "durability", "status"):
            check(key in r, "%s: no %r in %s" % (name, key, r))
        check(r["system"] == "adjutant", "%s: system %r" % (name, r["system"]))
        check("FULL" in r["durability"], "%s: durability %r" % (name, r["durability"]))
        allowed = ("ok", "unimplemented") if name in MAY_BE_UNIMPLEMENTED else ("ok",)
        check(r["status"] in allowed, "%s: status %r: %s" % (
            name, r["status"], r.get("message")))
        if r["status"] != "ok" or name == "cron_idle":
            continue
        check(r["ops"] > 0 and r["ops_per_s"] > 0, "%s: no operation counted: %s" % (name, r))
        check(abs(r["ops_per_s"] * r["seconds"] - r["ops"]) < 1e-6 * r["ops"] + 1,
              "%s: ops_per_s x seconds != ops: %s" % (name, r))
        if r["p50_ms"] is not None:
            check(0 <= r["p50_ms"] <= r["p99_ms"], "%s: percentiles %s" % (name, r))
    for name in ("echo", "enqueue", "lifecycle", "latency"):
        check(results[name]["p50_ms"] is not None, "%s: no latency" % name)
    cron = results["cron"]
    check(cron["schedules"] == 20, "cron: %s schedules" % cron["schedules"])
    # At most one job per schedule and tick.
    check(cron["ops"] <= cron["expected_fires"],
          "cron: %d fires seen, at most %d ticks" % (cron["ops"], cron["expected_fires"]))
    # A tick fires up to --cron-fire-ahead (250 ms) before its instant, but
    # its job reaches no worker before the tick.
    check(cron["created_p50_ms"] >= -1000,
          "cron: a job created more than a second before its tick")
    check(cron["p50_ms"] >= 0, "cron: a job delivered before its tick")
    idle = results["cron_idle"]
    check(0 <= idle["cpu_percent"] <= 100 * os.cpu_count(), "cron_idle: %s" % idle)
    check(idle["rss_mb"] > 0 and idle["schedules"] == 200, "cron_idle: %s" % idle)
    check(results["scale_baseline"]["queued"] == 1000
          and results["scale"]["queued"] == 10000, "scale: queued sizes")
    for name in ("scale_baseline", "scale"):
        check(0 < results[name]["rss_mb"] <= results[name]["rss_peak_mb"],
              "%s: RSS %s" % (name, results[name]))
    # The checks: one row per target, each with a verdict.
    verdicts = {"met", "missed", "n/a", "unimplemented"}
    for row in report["checks"]:
        check(row["verdict"] in verdicts, "check %s" % row)
    checked = {row["scenario"] for row in report["checks"]}
    check(checked == set(PHASES), "checks cover %s" % sorted(checked))
    check(report["machine"]["nproc"] >= 1 and report["config"]["seconds"] == 1,
          "machine/config: %s %s" % (report["machine"], report["config"]))


def write_peer(root, name, body):
    os.makedirs(os.path.join(root, name))
    path = os.path.join(root, name, "run")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def check_peers(adjutantd, loadgen):
    with tempfile.TemporaryDirectory() as peers:
        # A peer that echoes its settings back in its figure, and one whose
        # package is missing.
        write_peer(peers, "reporting",
                   'echo "{\\"system\\": \\"reporting\\", \\"scenario\\": \\"$2\\", '
                   '\\"ops_per_s\\": 1, \\"p50_ms\\": null, \\"p99_ms\\": null, '
                   '\\"durability\\": \\"args $*\\"}"\n')
        write_peer(peers, "missing", 'echo "missing: not installed" >&2\nexit 2\n')
        out = run(["--adjutantd", adjutantd, "--loadgen", loadgen,
                   "--scenarios", "enqueue", "--seconds", "0.5",
                   "--warmup-seconds", "0", "--concurrency", "8",
                   "--payload-bytes", "100", "--latency-rate", "20",
                   "--peers-dir", peers])
        report = report_of(out)
        systems = [r["system"] for r in report["results"]]
        check(systems == ["adjutant", "missing", "reporting"], "systems %s" % systems)
        missing, reporting = report["results"][1], report["results"][2]
        check(missing["status"] == "skipped" and "not installed" in missing["message"],
              "missing peer: %s" % missing)
        check(reporting["durability"] == "args --scenario enqueue --seconds 0.5 "
              "--concurrency 8 --payload-bytes 100 --rate 20.0",
              "the peer got other settings: %s" % reporting["durability"])
        rows = {r["system"]: r for r in report["checks"]}
        check(rows["reporting"]["verdict"] == "met"
              and rows["reporting"]["target"] == "adjutant >= 2 x this",
              "peer check: %s" % rows["reporting"])
        check(rows["missing"]["verdict"] == "skipped", "skipped peer: %s" % rows["missing"])


def check_bad_options(adjutantd, loadgen):
    out = run(["--scenarios", "enqueue,nope"], expect_code=2)
    check("--scenarios: unknown nope" in out.stderr, "run.py: %s" % out.stderr)
    for argv, flag in ((["--target", "127.0.0.1:1", "--scenario", "nope"], "--scenario"),
                       (["--target", "127.0.0.1:1", "--scenario", "scale"], "--daemon-pid"),
                       (["--target", "127.0.0.1:1", "--scenario", "echo",
                         "--batch", "0"], "--batch")):
        bad = subprocess.run([loadgen] + argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=30)
        check(bad.returncode == 2 and flag in bad.stderr and not bad.stdout,
              "adjutant_bench %s: exit %d, %r" % (argv, bad.returncode, bad.stderr))


def main():
    if len(sys.argv) != 3:
        fail(__doc__)
    adjutantd, loadgen = sys.argv[1:]
    check_bad_options(adjutantd, loadgen)
    check_peers(adjutantd, loadgen)
    check_smoke(adjutantd, loadgen)
    print("bench_smoke: OK")


if __name__ == "__main__":
    main()
