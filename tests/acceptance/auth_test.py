#!/usr/bin/python3
"""Access control from a shell: the `adjutant` binary with --token and TLS
options against real adjutantd processes.

    auth_test.py PATH/TO/adjutantd PATH/TO/adjutant PATH/TO/make_test_certs.sh

- With --auth-tokens (over TLS): no token -> UNAUTHENTICATED; a producer
  token calling SetLeadership (`adjutant leader set`) -> PERMISSION_DENIED;
  the leader token (from ADJUTANT_TOKEN) -> OK. Tokens appear in no output
  and no log line.
- Over TLS, a client without the CA cannot connect (UNAVAILABLE); health
  and reflection answer without a token.
- With --tls-client-ca, the command line needs --tls-cert/--tls-key.
- The Python examples (examples/python) send $ADJUTANT_TOKEN.
- adjutantd refuses --listen 0.0.0.0:0 without --auth-tokens (or
  --tls-client-ca) unless --insecure, also under --check-config; a bad
  token file is named with its line.

Prints a line per case and "N passed, M failed"; exits non-zero on failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_test  # noqa: E402
import daemon  # noqa: E402

TIMEOUT_SECONDS = 60  # a guard against a hung command, not a pace

TOKENS = {
    "web": ("producer", "web-producer-token-5f1c0a9e"),
    "jobs": ("worker", "jobs-worker-token-77d2b3c4"),
    "elector": ("leader", "elector-leader-token-a81e9c20"),
    "ops": ("admin", "ops-admin-token-3b6f0d11"),
}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def run(args, env=None, expect=0):
    # Hermetic: only the ADJUTANT_* variables a case sets.
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("ADJUTANT_")}
    full_env.update(env or {})
    proc = subprocess.run(args, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS, env=full_env)
    if expect is not None and proc.returncode != expect:
        raise AssertionError("%s exited %d, expected %d\nstdout:\n%s\n"
                             "stderr:\n%s" % (" ".join(args), proc.returncode,
                                              expect, proc.stdout, proc.stderr))
    for _, token in TOKENS.values():
        check(token not in proc.stdout and token not in proc.stderr,
              "a token was printed by %s" % " ".join(args))
    return proc


def main():
    adjutantd, adjutant, make_certs = sys.argv[1], sys.argv[2], sys.argv[3]
    workdir = tempfile.mkdtemp(prefix="adjutant-auth-")
    certs = os.path.join(workdir, "certs")
    subprocess.run([make_certs, certs], check=True)
    cert = lambda name: os.path.join(certs, name)  # noqa: E731
    cli_test.load_test_stubs(workdir)

    tokens_file = os.path.join(workdir, "tokens")
    with open(tokens_file, "w") as f:
        f.write("# NAME ROLES TOKEN\n")
        for name, (role, token) in TOKENS.items():
            f.write("%s %s %s\n" % (name, role, token))
    os.chmod(tokens_file, 0o600)

    import grpc

    def read(name):
        with open(cert(name), "rb") as f:
            return f.read()

    # One daemon with tokens over TLS, one with mutual TLS.
    tls = daemon.Daemon(
        adjutantd, os.path.join(workdir, "tls.db"), workdir,
        extra=["--auth-tokens", tokens_file, "--tls-cert", cert("server.crt"),
               "--tls-key", cert("server.key")],
        channel_credentials=grpc.ssl_channel_credentials(read("ca.crt")),
        log_level="info")
    mtls = daemon.Daemon(
        adjutantd, os.path.join(workdir, "mtls.db"), workdir,
        extra=["--tls-cert", cert("server.crt"), "--tls-key",
               cert("server.key"), "--tls-client-ca", cert("ca.crt")],
        channel_credentials=grpc.ssl_channel_credentials(
            read("ca.crt"), read("client.key"), read("client.crt")))
    # Tokens over plaintext on loopback, for the Python examples.
    plain = daemon.Daemon(adjutantd, os.path.join(workdir, "plain.db"),
                          workdir, extra=["--auth-tokens", tokens_file])
    started = []

    def cli(d, *args, env=None, expect=0):
        full_env = {"ADJUTANT_SERVER": "127.0.0.1:%d" % d.port}
        full_env.update(env or {})
        return run([adjutant] + list(args), env=full_env, expect=expect)

    def token(name):
        return TOKENS[name][1]

    def tokens_and_roles():
        ca = ["--tls-ca", cert("ca.crt")]
        refused = cli(tls, *ca, "stats", expect=1)
        check("UNAUTHENTICATED" in refused.stderr, refused.stderr)
        wrong = cli(tls, *ca, "--token", "not-a-token-of-this-server",
                    "stats", expect=1)
        check("UNAUTHENTICATED" in wrong.stderr, wrong.stderr)

        enqueued = cli(tls, *ca, "--token", token("web"), "--json", "enqueue",
                       "--queue", "auth", "t", "payload")
        check('"job_id"' in enqueued.stdout, enqueued.stdout)
        denied = cli(tls, *ca, "--token", token("web"), "leader", "set",
                     "--term", "1", expect=1)
        check("PERMISSION_DENIED" in denied.stderr and "'web'" in denied.stderr,
              denied.stderr)
        # The token from the environment, the CA too.
        leader = cli(tls, "leader", "set", "--term", "1",
                     env={"ADJUTANT_TOKEN": token("elector"),
                          "ADJUTANT_TLS_CA": cert("ca.crt")})
        check("leader" in leader.stdout and "yes" in leader.stdout,
              leader.stdout)
        # A flag beats the environment.
        flag_wins = cli(tls, *ca, "--token", token("web"), "leader", "set",
                        "--term", "2", env={"ADJUTANT_TOKEN": token("elector")},
                        expect=1)
        check("PERMISSION_DENIED" in flag_wins.stderr, flag_wins.stderr)

        # A worker takes the job; reads are open to every role.
        leased = cli(tls, *ca, "--token", token("jobs"), "--json", "dequeue",
                     "--queue", "auth")
        check('"lease_token"' in leased.stdout, leased.stdout)
        cli(tls, *ca, "--token", token("jobs"), "stats")
        cancel = cli(tls, *ca, "--token", token("jobs"), "cron", "rm", "x",
                     expect=1)
        check("PERMISSION_DENIED" in cancel.stderr, cancel.stderr)
        missing = cli(tls, *ca, "--token", token("ops"), "cron", "rm", "x",
                      expect=1)
        check("NOT_FOUND" in missing.stderr, missing.stderr)
        # A token a header cannot carry: named, not printed.
        spaced = cli(tls, *ca, "--token", "hidden value", "stats", expect=2)
        check("--token" in spaced.stderr and "hidden" not in spaced.stderr,
              spaced.stderr)

    def tls_needs_the_ca():
        # No CA: the system's roots do not know the test CA; plaintext is
        # not TLS.
        for args in (["--tls"], [], ["--tls-ca", cert("other-ca.crt")]):
            proc = cli(tls, *args, "--token", token("ops"), "--timeout", "20s",
                       "stats", expect=1)
            check("UNAVAILABLE" in proc.stderr, (args, proc.stderr))
        bad = cli(tls, "--tls-ca", cert("missing.crt"), "stats", expect=2)
        check("--tls-ca" in bad.stderr, bad.stderr)

    def health_and_reflection_need_no_token():
        import health_pb2
        import health_pb2_grpc
        import reflection_pb2
        import reflection_pb2_grpc

        health = health_pb2_grpc.HealthStub(tls.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""),
                              timeout=TIMEOUT_SECONDS)
        check(answer.status == health_pb2.HealthCheckResponse.SERVING, answer)
        stub = reflection_pb2_grpc.ServerReflectionStub(tls.channel)
        responses = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            timeout=TIMEOUT_SECONDS))
        names = {s.name for s in responses[0].list_services_response.service}
        check("adjutant.v1.JobQueue" in names, names)

    def mutual_tls():
        ca = ["--tls-ca", cert("ca.crt")]
        no_cert = cli(mtls, *ca, "--timeout", "20s", "stats", expect=1)
        check("UNAVAILABLE" in no_cert.stderr, no_cert.stderr)
        other = cli(mtls, *ca, "--tls-cert", cert("other-client.crt"),
                    "--tls-key", cert("other-client.key"), "--timeout", "20s",
                    "stats", expect=1)
        check("UNAVAILABLE" in other.stderr, other.stderr)
        cli(mtls, *ca, "--tls-cert", cert("client.crt"), "--tls-key",
            cert("client.key"), "stats")
        cli(mtls, "stats", env={"ADJUTANT_TLS_CA": cert("ca.crt"),
                                "ADJUTANT_TLS_CERT": cert("client.crt"),
                                "ADJUTANT_TLS_KEY": cert("client.key")})
        half = cli(mtls, *ca, "--tls-cert", cert("client.crt"), "stats",
                   expect=2)
        check("--tls-cert" in half.stderr and "--tls-key" in half.stderr,
              half.stderr)

    def public_address_needs_auth():
        base = [adjutantd, "--db", ":memory:", "--listen", "0.0.0.0:0"]
        for extra in ([], ["--check-config"]):
            proc = run(base + extra, expect=2)
            check("--listen" in proc.stderr and "--insecure" in proc.stderr,
                  proc.stderr)
        proc = run(base, env={"ADJUTANT_LISTEN": "[::]:0"}, expect=2)
        ok = run(base + ["--insecure", "--check-config"])
        check("configuration OK" in ok.stdout, ok.stdout)
        ok = run(base + ["--auth-tokens", tokens_file, "--check-config"])
        check("configuration OK" in ok.stdout and "warning" not in ok.stderr,
              (ok.stdout, ok.stderr))
        # A token file any local user can read: accepted, with a warning.
        os.chmod(tokens_file, 0o644)
        try:
            warned = run(base + ["--auth-tokens", tokens_file,
                                 "--check-config"])
            check("readable by every local user" in warned.stderr,
                  warned.stderr)
        finally:
            os.chmod(tokens_file, 0o600)
        bad_file = os.path.join(workdir, "bad-tokens")
        with open(bad_file, "w") as f:
            f.write("ops admin %s\nweb janitor web-token-0123456789\n"
                    % token("ops"))
        bad = run(base + ["--auth-tokens", bad_file], expect=2)
        check(bad_file + ":2: unknown role 'janitor'" in bad.stderr,
              bad.stderr)
        half = run([adjutantd, "--db", ":memory:", "--tls-cert",
                    cert("server.crt"), "--check-config"], expect=2)
        check("--tls-cert" in half.stderr and "--tls-key" in half.stderr,
              half.stderr)

    def python_examples_send_adjutant_token():
        examples = os.path.join(daemon.ROOT, "examples", "python")
        server = ["--server", "127.0.0.1:%d" % plain.port, "--queue", "py"]
        refused = run(["/usr/bin/python3", os.path.join(examples, "producer.py")]
                      + server + ["--count", "2"], expect=1)
        check("UNAUTHENTICATED" in refused.stderr, refused.stderr)
        run(["/usr/bin/python3", os.path.join(examples, "producer.py")]
            + server + ["--count", "2"], env={"ADJUTANT_TOKEN": token("web")})
        worker = ["/usr/bin/python3", os.path.join(examples, "worker.py")]
        worker += server + ["--max-jobs", "2", "--idle-exit", "20"]
        denied = run(worker, env={"ADJUTANT_TOKEN": token("web")}, expect=1)
        check("PERMISSION_DENIED" in denied.stderr, denied.stderr)
        done = run(worker, env={"ADJUTANT_TOKEN": token("jobs")})
        check("2 acked" in done.stdout, done.stdout)

    def no_token_in_the_log():
        with open(tls.log.name) as f:
            log = f.read()
        check("leadership set by elector" in log, log)
        check("tokens checked: web, jobs, elector, ops" in log, log)
        for _, secret in TOKENS.values():
            check(secret not in log, "a token is in the daemon's log")

    try:
        tls.start()
        started.append(tls)
        mtls.start()
        started.append(mtls)
        plain.start()
        started.append(plain)
        code = daemon.run_cases([
            ("tokens: none, a producer claiming leadership, the leader",
             tokens_and_roles),
            ("TLS: a client without the CA cannot connect", tls_needs_the_ca),
            ("health and reflection need no token",
             health_and_reflection_need_no_token),
            ("mutual TLS needs a client certificate", mutual_tls),
            ("a public address needs authentication or --insecure",
             public_address_needs_auth),
            ("the Python examples send $ADJUTANT_TOKEN",
             python_examples_send_adjutant_token),
            ("no token in the daemon's log", no_token_in_the_log),
        ])
    finally:
        for d in started:
            # Hang up first: the daemon's graceful shutdown would otherwise
            # wait for this idle client to notice it is going away.
            d.channel.close()
            d.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
