#!/usr/bin/python3
"""The Python and Node examples against a real daemon (issue 4, "Polyglot,
proven").

    polyglot_test.py PATH/TO/adjutantd

Starts one adjutantd on a temp SQLite file, then runs the examples as a user
would, each case on its own queue:

- examples/python/producer.py enqueues 50 jobs, examples/python/worker.py
  leases, processes and acks them; ListJobs shows the queue drained: exactly
  the produced jobs, every one SUCCEEDED with attempts 1, acked once by the
  worker with the right result for its payload.
- The same for examples/node/{producer,worker}.js on another queue. When
  examples/node/node_modules is missing, `npm ci` installs it from the
  committed package-lock.json; if that fails (no npm, no registry) the Node
  cases FAIL with the reason: they are never skipped.
- Both producers feed one queue that a Python and a Node worker drain
  together: every job is acked exactly once, by one of them.
- Each worker nacks a job it can never process (DEAD, attempts 1, its error
  kept), and each producer refuses a bad flag or reports the daemon's
  INVALID_ARGUMENT, exiting non-zero and storing nothing.

Prints a line per case and "N passed, M failed"; exits non-zero on failure.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon  # noqa: E402

ROOT = daemon.ROOT
PYTHON_EXAMPLES = os.path.join(ROOT, "examples", "python")
NODE_EXAMPLES = os.path.join(ROOT, "examples", "node")
PYTHON = "/usr/bin/python3"
JOBS = 50
EXAMPLE_TIMEOUT_SECONDS = 120  # a guard against a hung example, not a pace
RPC_TIMEOUT_SECONDS = 30


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def run(argv, cwd=None, expect_code=0, timeout=EXAMPLE_TIMEOUT_SECONDS):
    """Runs an example to its end; returns its CompletedProcess after checking
    its exit code (None: any code)."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL,
                          env=EXAMPLE_ENV)
    if expect_code is not None and proc.returncode != expect_code:
        raise AssertionError("%s exited %d, expected %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(argv), proc.returncode, expect_code,
                                proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


class NodeExamples:
    """Finds node and npm, and installs examples/node/node_modules with
    `npm ci` when missing. Fails (never skips) with the reason when it
    cannot; the outcome of the first attempt is reused by later cases."""

    def __init__(self):
        self.error = None
        self.ready = False

    def node(self):
        if not self.ready and self.error is None:
            try:
                self._prepare()
                self.ready = True
            except AssertionError as e:
                self.error = e
        if self.error is not None:
            raise AssertionError("Node examples cannot run: %s" % self.error)
        return self.node_path

    def _prepare(self):
        self.node_path = shutil.which("node") or shutil.which("nodejs")
        check(self.node_path, "no `node` on PATH (Debian 12: apt-get install "
              "nodejs npm, or run scripts/install-deps.sh)")
        wanted = [os.path.join(NODE_EXAMPLES, "node_modules", "@grpc", p,
                               "package.json")
                  for p in ("grpc-js", "proto-loader")]
        if all(os.path.exists(p) for p in wanted):
            return
        npm = shutil.which("npm")
        check(npm, "examples/node/node_modules is missing and there is no "
              "`npm` on PATH to install it (Debian 12: apt-get install npm)")
        print("running npm ci in examples/node", flush=True)
        # --ignore-scripts: the examples need no install script, so none of
        # the dependencies' scripts is run.
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NODE_EXAMPLES, capture_output=True, text=True, timeout=600,
            stdin=subprocess.DEVNULL)
        check(proc.returncode == 0,
              "`npm ci` in examples/node failed (exit %d); is the npm registry "
              "reachable?\n%s%s" % (proc.returncode, proc.stdout[-2000:],
                                    proc.stderr[-3000:]))
        check(all(os.path.exists(p) for p in wanted),
              "`npm ci` succeeded but @grpc/grpc-js or @grpc/proto-loader is "
              "still missing from examples/node/node_modules")


NODE = NodeExamples()


def producer(lang, *args, expect_code=0):
    if lang == "python":
        argv = [PYTHON, os.path.join(PYTHON_EXAMPLES, "producer.py")]
    else:
        argv = [NODE.node(), os.path.join(NODE_EXAMPLES, "producer.js")]
    return run(argv + ["--server", SERVER] + list(args),
               expect_code=expect_code)


def worker_argv(lang, *args):
    if lang == "python":
        argv = [PYTHON, os.path.join(PYTHON_EXAMPLES, "worker.py")]
    else:
        argv = [NODE.node(), os.path.join(NODE_EXAMPLES, "worker.js")]
    return argv + ["--server", SERVER] + list(args)


def parse_enqueued(stdout):
    """{job_id: payload text} from a producer's "enqueued <id> <payload>"
    lines, checked against its closing "enqueued <N> jobs to queue <Q>"."""
    jobs, closing = {}, None
    for line in stdout.splitlines():
        m = re.fullmatch(r"enqueued (\d+) jobs to queue \S+", line)
        if m:
            closing = int(m.group(1))
            continue
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "enqueued":
            check(parts[1] not in jobs, "producer printed %s twice" % parts[1])
            jobs[parts[1]] = parts[2]
    check(closing == len(jobs), "producer says it enqueued %s jobs, printed %d"
          " ids" % (closing, len(jobs)))
    return jobs


def parse_worker(stdout):
    """([(job_id, attempt, n, result)] acked, [(job_id, attempt, text)]
    nacked) from a worker's output."""
    acked, nacked = [], []
    for line in stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "acked":
            check(len(parts) == 6 and parts[2] == "attempt"
                  and parts[4].startswith("n=") and parts[5].startswith("result="),
                  "malformed worker line: %r" % line)
            acked.append((parts[1], int(parts[3]), int(parts[4][2:]),
                          int(parts[5][len("result="):])))
        elif parts[0] == "nacked":
            nacked.append((parts[1], int(parts[3]), " ".join(parts[4:])))
    return acked, nacked


def list_jobs(queue):
    """Every job of `queue`, through ListJobs, following next_page_token."""
    jobs, token = [], ""
    while True:
        page = STUB.ListJobs(pb.ListJobsRequest(queue=queue, page_size=17,
                                                page_token=token),
                             timeout=RPC_TIMEOUT_SECONDS)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs


def check_drained(queue, enqueued, acked):
    """The queue holds exactly the `enqueued` jobs, each SUCCEEDED with
    attempts 1 and its payload intact, and `acked` names each exactly once
    with the square of its payload's n."""
    check(len(enqueued) > 0, "nothing was enqueued")
    ack_count = {}
    for job_id, attempt, n, result in acked:
        ack_count[job_id] = ack_count.get(job_id, 0) + 1
        check(job_id in enqueued, "worker acked %s, which no producer enqueued"
              % job_id)
        check(attempt == 1, "job %s acked on attempt %d" % (job_id, attempt))
        want_n = json.loads(enqueued[job_id])["n"]
        check(n == want_n, "job %s processed n=%d, its payload says %d"
              % (job_id, n, want_n))
        check(result == want_n * want_n, "job %s: result %d for n=%d"
              % (job_id, result, n))
    twice = sorted(j for j, c in ack_count.items() if c > 1)
    check(not twice, "acked more than once: %s" % twice)
    never = sorted(set(enqueued) - set(ack_count))
    check(not never, "%d jobs never acked, e.g. %s" % (len(never), never[:3]))

    jobs = list_jobs(queue)
    listed = {j.job_id: j for j in jobs}
    check(len(listed) == len(jobs), "ListJobs repeated a job across pages")
    check(set(listed) == set(enqueued),
          "queue %s lists %d jobs, %d were enqueued (extra %s, missing %s)"
          % (queue, len(listed), len(enqueued),
             sorted(set(listed) - set(enqueued))[:3],
             sorted(set(enqueued) - set(listed))[:3]))
    for job_id, job in listed.items():
        check(job.state == pb.JOB_STATE_SUCCEEDED, "job %s is %s, not SUCCEEDED"
              % (job_id, pb.JobState.Name(job.state)))
        check(job.attempts == 1, "job %s has attempts %d, not 1"
              % (job_id, job.attempts))
        check(job.payload.decode("utf-8") == enqueued[job_id],
              "job %s payload %r, the producer sent %r"
              % (job_id, job.payload, enqueued[job_id]))


def produce_and_work(lang, queue):
    enqueued = parse_enqueued(
        producer(lang, "--queue", queue, "--count", str(JOBS)).stdout)
    check(len(enqueued) == JOBS, "producer printed %d job ids, asked for %d"
          % (len(enqueued), JOBS))
    out = run(worker_argv(lang, "--queue", queue, "--max-jobs", str(JOBS),
                          "--idle-exit", "60", "--batch", "4")).stdout
    check("worker: %d jobs, %d acked, 0 nacked" % (JOBS, JOBS) in out,
          "worker's closing line is not 'worker: %d jobs, %d acked, 0 nacked':"
          "\n%s" % (JOBS, JOBS, out[-2000:]))
    acked, nacked = parse_worker(out)
    check(not nacked, "worker nacked %s" % nacked)
    check_drained(queue, enqueued, acked)


def poison_is_nacked_dead(lang, queue):
    good = parse_enqueued(producer(lang, "--queue", queue, "--count", "1").stdout)
    poison = parse_enqueued(producer(lang, "--queue", queue, "--count", "1",
                                     "--payload", "not json").stdout)
    check(len(good) == 1 and len(poison) == 1, "producer printed no job id")
    out = run(worker_argv(lang, "--queue", queue, "--max-jobs", "2",
                          "--idle-exit", "60")).stdout
    acked, nacked = parse_worker(out)
    check([a[0] for a in acked] == list(good),
          "worker acked %s, expected only %s" % (acked, list(good)))
    poison_id = list(poison)[0]
    check(len(nacked) == 1 and nacked[0][0] == poison_id
          and nacked[0][2].startswith("dead:"),
          "worker did not nack %s dead: %s" % (poison_id, nacked))
    job = STUB.GetJob(pb.GetJobRequest(job_id=poison_id),
                      timeout=RPC_TIMEOUT_SECONDS)
    check(job.state == pb.JOB_STATE_DEAD, "poison job is %s, not DEAD"
          % pb.JobState.Name(job.state))
    check(job.attempts == 1, "poison job has attempts %d" % job.attempts)
    check("payload is not JSON" in job.last_error,
          "poison job's last_error %r does not say why" % job.last_error)
    good_job = STUB.GetJob(pb.GetJobRequest(job_id=list(good)[0]),
                           timeout=RPC_TIMEOUT_SECONDS)
    check(good_job.state == pb.JOB_STATE_SUCCEEDED, "good job is %s"
          % pb.JobState.Name(good_job.state))


def bad_input_stores_nothing(lang, queue):
    proc = producer(lang, "--queue", queue, "--count", "0", expect_code=2)
    check("--count" in proc.stderr and "got" in proc.stderr,
          "a bad --count is not named: %r" % proc.stderr[-500:])
    proc = producer(lang, "--queue", queue, "--count", "3", "--job-type", "",
                    expect_code=1)
    check("INVALID_ARGUMENT" in proc.stderr and "job_type" in proc.stderr,
          "the daemon's INVALID_ARGUMENT on job_type is not shown: %r"
          % proc.stderr[-500:])
    check(list_jobs(queue) == [], "a rejected producer stored jobs in %s"
          % queue)
    proc = run(worker_argv(lang, "--queue", queue, "--lease", "0"),
               expect_code=2)
    check("--lease" in proc.stderr, "a bad --lease is not named: %r"
          % proc.stderr[-500:])


def mixed_workers_share_a_queue():
    """Both producers feed one queue; a Python and a Node worker drain it at
    the same time. Each worker exits once the queue stays empty for 2 s."""
    queue = "mixed-squares"
    enqueued = parse_enqueued(
        producer("python", "--queue", queue, "--count", str(JOBS // 2)).stdout)
    node_jobs = parse_enqueued(
        producer("node", "--queue", queue, "--count", str(JOBS - JOBS // 2)).stdout)
    check(not set(enqueued) & set(node_jobs), "two producers got one job id")
    enqueued.update(node_jobs)
    args = ("--queue", queue, "--idle-exit", "2", "--batch", "3")
    workers = [subprocess.Popen(worker_argv(lang, *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=EXAMPLE_ENV)
               for lang in ("python", "node")]
    acked = []
    for lang, w in zip(("python", "node"), workers):
        out, err = w.communicate(timeout=EXAMPLE_TIMEOUT_SECONDS)
        check(w.returncode == 0, "%s worker exited %d: %s"
              % (lang, w.returncode, err[-2000:]))
        a, nacked = parse_worker(out)
        check(not nacked, "%s worker nacked %s" % (lang, nacked))
        acked.extend(a)
    check_drained(queue, enqueued, acked)


def main():
    global EXAMPLE_ENV, SERVER, STUB, pb
    binary = sys.argv[1] if len(sys.argv) > 1 else ""
    check(os.access(binary, os.X_OK),
          "usage: polyglot_test.py PATH/TO/adjutantd (got %r)" % binary)
    work = tempfile.mkdtemp(prefix="adjutant-polyglot-")
    # The stubs the Python examples and this test generate go under `work`,
    # removed at the end.
    tempfile.tempdir = work
    EXAMPLE_ENV = dict(os.environ, TMPDIR=work)
    daemon.load_stubs()
    from adjutant.v1 import job_queue_pb2
    from adjutant.v1 import job_queue_pb2_grpc
    pb = job_queue_pb2
    d = daemon.Daemon(binary, os.path.join(work, "adjutant.db"), work).start()
    SERVER = "127.0.0.1:%d" % d.port
    STUB = job_queue_pb2_grpc.JobQueueStub(d.channel)
    cases = []
    for lang in ("python", "node"):
        cases += [
            ("%s producer enqueues %d, worker acks each once" % (lang, JOBS),
             lambda lang=lang: produce_and_work(lang, lang + "-squares")),
            ("%s worker nacks a job it cannot process as DEAD" % lang,
             lambda lang=lang: poison_is_nacked_dead(lang, lang + "-poison")),
            ("%s examples refuse bad input, storing nothing" % lang,
             lambda lang=lang: bad_input_stores_nothing(lang, lang + "-bad")),
        ]
    cases.append(("python and node workers drain one queue together",
                  mixed_workers_share_a_queue))
    code = daemon.run_cases(cases)
    d.stop()
    shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
