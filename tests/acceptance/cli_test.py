#!/usr/bin/python3
"""Issue 4's acceptance from a shell: the `adjutant` binary against a real
adjutantd, and the conventions the gRPC ecosystem expects.

    cli_test.py PATH/TO/adjutantd PATH/TO/adjutant

- `adjutant enqueue` then `adjutant jobs list --json` shows the job;
  `adjutant dequeue` and `adjutant ack` complete it.
- `adjutant cron preview '0 9 * * MON-FRI' --timezone Europe/Paris` prints
  the next fire times.
- A bad argument exits non-zero with a clear message; a server refusal
  prints the gRPC code.
- `adjutant stats` shows the queue's counts.
- A reflection client (stubs from our own copy of the public
  grpc.reflection.v1alpha protocol, tests/cli/reflection.proto) lists
  adjutant.v1.JobQueue, adjutant.v1.Scheduler and grpc.health.v1.Health, and
  fetches the descriptor of JobQueue; the health check answers SERVING.

Prints a line per case and "N passed, M failed"; exits non-zero on failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon  # noqa: E402

TIMEOUT_SECONDS = 60  # a guard against a hung command, not a pace


def check(condition, message):
    if not condition:
        raise AssertionError(message)


class Cli:
    def __init__(self, binary, port):
        self.binary = binary
        self.env = dict(os.environ, ADJUTANT_SERVER="127.0.0.1:%d" % port)

    def run(self, *args, stdin="", expect=0):
        proc = subprocess.run([self.binary] + list(args), input=stdin,
                              capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS, env=self.env)
        if expect is not None and proc.returncode != expect:
            raise AssertionError("adjutant %s exited %d, expected %d\n"
                                 "stdout:\n%s\nstderr:\n%s"
                                 % (" ".join(args), proc.returncode, expect,
                                    proc.stdout, proc.stderr))
        return proc

    def json(self, *args, stdin=""):
        return json.loads(self.run("--json", *args, stdin=stdin).stdout)


def load_test_stubs(workdir):
    """Generates stubs for the health and reflection protocols (our copies)
    and for descriptor.proto's users into `workdir`."""
    protos_dir = os.path.join(daemon.ROOT, "tests", "cli")
    subprocess.run(
        ["protoc", "--proto_path=" + protos_dir,
         "--python_out=" + workdir, "--grpc_python_out=" + workdir,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         "health.proto", "reflection.proto"], check=True)
    sys.path.insert(0, workdir)


def main():
    adjutantd, adjutant = sys.argv[1], sys.argv[2]
    workdir = tempfile.mkdtemp(prefix="adjutant-cli-")
    load_test_stubs(os.path.join(workdir))
    d = daemon.Daemon(adjutantd, os.path.join(workdir, "adjutant.db"),
                      workdir).start()
    cli = Cli(adjutant, d.port)

    def enqueue_list_dequeue_ack():
        out = cli.json("enqueue", "--queue", "shell", "resize",
                       '{"w": 640}', "--priority", "3")
        job_id = out["job_id"]
        check(job_id and out["duplicate"] is False, out)
        listed = cli.json("jobs", "list", "--queue", "shell")
        check([j["job_id"] for j in listed["jobs"]] == [job_id], listed)
        check(listed["jobs"][0]["state"] == "JOB_STATE_PENDING", listed)
        check(listed["jobs"][0]["job_type"] == "resize", listed)

        leased = cli.json("dequeue", "--queue", "shell", "--worker-id", "sh")
        check(len(leased["jobs"]) == 1, leased)
        token = leased["jobs"][0]["lease_token"]
        check(leased["jobs"][0]["job"]["job_id"] == job_id, leased)
        acked = cli.run("ack", job_id, token)
        check(job_id in acked.stdout, acked.stdout)
        job = cli.json("jobs", "get", job_id)
        check(job["state"] == "JOB_STATE_SUCCEEDED", job)
        check(job["attempts"] == 1, job)

        # A human table too: header and the job's row.
        table = cli.run("jobs", "list", "--queue", "shell").stdout
        lines = table.splitlines()
        check(lines[0].split()[:4] == ["JOB_ID", "QUEUE", "TYPE", "STATE"],
              table)
        check(lines[1].split()[:4] == [job_id, "shell", "resize", "SUCCEEDED"],
              table)

    def payload_from_stdin():
        out = cli.json("enqueue", "--queue", "stdin", "t", "-",
                       stdin="line one\nline two\n")
        job = cli.json("jobs", "get", out["job_id"])
        import base64
        check(base64.b64decode(job["payload"]) == b"line one\nline two\n", job)

    def cron_preview_paris():
        out = cli.run("cron", "preview", "0 9 * * MON-FRI", "--timezone",
                      "Europe/Paris", "--after", "2026-03-27T00:00:00Z",
                      "--count", "3").stdout
        # Friday 27 March is winter time (08:00Z); Monday 30 March, after
        # the switch on the 29th, summer time (07:00Z).
        for expected in ("2026-03-27T08:00:00Z", "2026-03-30T07:00:00Z",
                         "2026-03-31T07:00:00Z", "09:00:00 Mon CEST"):
            check(expected in out, out)
        default = cli.run("cron", "preview", "0 9 * * MON-FRI",
                          "--timezone", "Europe/Paris").stdout
        check(len(default.splitlines()) == 1 + 5, default)

    def bad_arguments():
        for args, needle in (
                (["enqueue"], "type"),
                (["enqueue", "t", "--delay", "soon"], "--delay"),
                (["jobs", "list", "--state", "sleeping"], "--state"),
                (["frobnicate"], "frobnicate"),
                (["cron", "preview", "0 9 * * MON-FRI", "--count", "0"],
                 "--count")):
            proc = cli.run(*args, expect=2)
            check(needle in proc.stderr, (args, proc.stderr))
        refused = cli.run("cron", "preview", "0 25 * * *", expect=1)
        check("INVALID_ARGUMENT" in refused.stderr, refused.stderr)
        missing = cli.run("jobs", "get", "no-such-job", expect=1)
        check("NOT_FOUND" in missing.stderr, missing.stderr)
        help_text = cli.run("--help").stdout
        for command in ("enqueue", "dequeue", "ack", "nack", "extend", "jobs",
                        "cron", "leader", "stats"):
            check(command in help_text, help_text)

    def stats():
        for _ in range(3):
            cli.run("enqueue", "--queue", "stats", "t")
        cli.run("cron", "register", "nightly", "0 3 * * *", "--type", "r")
        out = cli.json("stats")
        queues = {q["queue"]: q for q in out["queues"]}
        check(queues["stats"]["pending"] == "3", out)  # int64: a JSON string
        check(queues["stats"]["runnable"] == "3", out)
        check("oldest_runnable_age" in queues["stats"], out)
        check(out["schedules"] == "1", out)
        human = cli.run("stats").stdout
        check("stats" in human and "QUEUE" in human, human)

    def reflection_and_health():
        import grpc
        import health_pb2
        import health_pb2_grpc
        import reflection_pb2
        import reflection_pb2_grpc
        from google.protobuf import descriptor_pb2

        stub = reflection_pb2_grpc.ServerReflectionStub(d.channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="adjutant.v1.JobQueue"),
        ]
        responses = list(stub.ServerReflectionInfo(iter(requests),
                                                   timeout=TIMEOUT_SECONDS))
        names = {s.name for s in responses[0].list_services_response.service}
        for service in ("adjutant.v1.JobQueue", "adjutant.v1.Scheduler",
                        "grpc.health.v1.Health"):
            check(service in names, names)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in
                 responses[1].file_descriptor_response.file_descriptor_proto]
        methods = {m.name for f in files for s in f.service
                   if s.name == "JobQueue" for m in s.method}
        check({"Enqueue", "Dequeue", "Ack", "GetStats"} <= methods, methods)

        health = health_pb2_grpc.HealthStub(d.channel)
        for service in ("", "adjutant.v1.JobQueue", "adjutant.v1.Scheduler"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service),
                                  timeout=TIMEOUT_SECONDS)
            check(answer.status == health_pb2.HealthCheckResponse.SERVING,
                  (service, answer))

    try:
        code = daemon.run_cases([
            ("enqueue, jobs list --json, dequeue, ack", enqueue_list_dequeue_ack),
            ("payload from stdin", payload_from_stdin),
            ("cron preview in Europe/Paris", cron_preview_paris),
            ("bad arguments and refusals", bad_arguments),
            ("stats", stats),
            ("reflection lists the services; health is SERVING",
             reflection_and_health),
        ])
    finally:
        d.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
