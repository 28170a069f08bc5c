#!/usr/bin/python3
"""Checks of what an operator installs (deploy/, deploy/packaging.cmake):

  deploy_test.py install CMAKE BUILD_DIR  files land where docs/OPERATIONS.md
                                          says, and the installed ones work
  deploy_test.py verify  CMAKE BUILD_DIR  `systemd-analyze verify` passes on
                                          the installed units
  deploy_test.py deb     CPACK BUILD_DIR  the .deb: name, Depends, conffiles,
                                          files, maintainer scripts

Exits 77 (ctest's SKIP_RETURN_CODE) when a tool a check needs is missing.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77

# Where `DESTDIR=... cmake --install BUILD --prefix /usr` puts each file.
INSTALLED = {
    "usr/bin/adjutantd": "exec",
    "usr/bin/adjutant": "exec",
    "usr/libexec/adjutant/adjutant-pg-leader": "exec",
    "lib/systemd/system/adjutantd.service": "file",
    "lib/systemd/system/adjutant-pg-leader.service": "file",
    "etc/adjutant/adjutantd.toml": "file",
    "usr/share/doc/adjutant/README.md": "file",
    "usr/share/doc/adjutant/OPERATIONS.md": "file",
    "usr/share/doc/adjutant/POSTGRES.md": "file",
    "usr/share/doc/adjutant/API.md": "file",
}


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def install(cmake, build, destdir):
    env = dict(os.environ, DESTDIR=destdir)
    subprocess.run([cmake, "--install", build, "--prefix", "/usr"], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def files_under(root):
    found = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def check_install(cmake, build):
    with tempfile.TemporaryDirectory(prefix="adjutant-install-") as stage:
        install(cmake, build, stage)
        found = files_under(stage)
        assert found == set(INSTALLED), (
            "unexpected: %s; missing: %s"
            % (sorted(found - set(INSTALLED)), sorted(set(INSTALLED) - found)))
        for path, kind in INSTALLED.items():
            full = os.path.join(stage, path)
            assert os.access(full, os.X_OK) == (kind == "exec"), (
                path, "should%s be executable" % ("" if kind == "exec" else " not"))

        # The unit runs the installed binary on the installed configuration
        # from the state directory: that configuration is valid there.
        unit = open(os.path.join(stage, "lib/systemd/system/adjutantd.service")).read()
        exec_start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.M)
        assert exec_start, "adjutantd.service has no ExecStart"
        assert exec_start.group(1) == "/usr/bin/adjutantd", exec_start.group(1)
        assert exec_start.group(2) == "--config /etc/adjutant/adjutantd.toml", \
            exec_start.group(2)
        with tempfile.TemporaryDirectory(prefix="adjutant-state-") as state:
            result = subprocess.run(
                [os.path.join(stage, "usr/bin/adjutantd"), "--config",
                 os.path.join(stage, "etc/adjutant/adjutantd.toml"),
                 "--check-config"],
                cwd=state, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert "configuration OK" in result.stdout, result.stdout

        result = subprocess.run(
            [os.path.join(stage, "usr/bin/adjutant"), "--help"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "leader" in result.stdout, result
        result = subprocess.run(
            [os.path.join(stage, "usr/libexec/adjutant/adjutant-pg-leader"),
             "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "--lock-key" in result.stdout, result


def check_verify(cmake, build):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip("systemd-analyze is not installed (Debian package systemd): "
             "the units are not verified")
    with tempfile.TemporaryDirectory(prefix="adjutant-verify-") as stage:
        install(cmake, build, stage)
        units = os.path.join(stage, "lib/systemd/system")
        # verify requires ExecStart's program to exist: point the units at
        # the staged programs (the only change).
        for name in os.listdir(units):
            path = os.path.join(units, name)
            text = open(path).read()
            text, n = re.subn(r"^ExecStart=/", "ExecStart=%s/" % stage, text,
                              flags=re.M)
            assert n == 1, (name, "has %d ExecStart= lines" % n)
            open(path, "w").write(text)
        paths = [os.path.join(units, n) for n in sorted(os.listdir(units))]
        result = subprocess.run([analyze, "verify"] + paths,
                                capture_output=True, text=True, timeout=120)
        # Warnings (an unknown key, a bad value) exit 0 but name the unit.
        complaints = [line for line in (result.stdout + result.stderr).splitlines()
                      if "adjutant" in line]
        assert result.returncode == 0 and not complaints, (
            result.returncode, result.stdout + result.stderr)
        print("systemd-analyze verify: %s OK" % ", ".join(os.listdir(units)))


def control_field(info, name):
    match = re.search(r"^ %s: (.*)$" % name, info, re.M)
    return match.group(1) if match else None


def check_deb(cpack, build):
    for tool, package in (("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"),
                          ("file", "file")):
        if shutil.which(tool) is None:
            skip("%s is not installed (Debian package %s): the .deb is not "
                 "built" % (tool, package))
    with tempfile.TemporaryDirectory(prefix="adjutant-deb-") as out:
        subprocess.run([cpack, "--config", os.path.join(build, "CPackConfig.cmake"),
                        "-G", "DEB", "-B", out], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        assert len(debs) == 1, os.listdir(out)
        deb = os.path.join(out, debs[0])
        assert re.match(r"adjutant_[0-9.]+_[a-z0-9]+\.deb$", debs[0]), debs[0]

        info = subprocess.run(["dpkg-deb", "--info", deb], check=True,
                              capture_output=True, text=True).stdout
        assert control_field(info, "Package") == "adjutant", info
        depends = control_field(info, "Depends") or ""
        for library in ("libgrpc++1.51", "libprotobuf32", "libsqlite3-0",
                        "libpq5", "libsystemd0", "libspdlog1.10", "tzdata"):
            assert library in depends, "Depends lacks %s: %s" % (library, depends)

        control = os.path.join(out, "control")
        subprocess.run(["dpkg-deb", "--control", deb, control], check=True)
        conffiles = open(os.path.join(control, "conffiles")).read().split()
        assert conffiles == ["/etc/adjutant/adjutantd.toml"], conffiles
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(control, script)
            assert os.access(path, os.X_OK), script + " is not executable"
            subprocess.run(["sh", "-n", path], check=True)

        listing = subprocess.run(["dpkg-deb", "--contents", deb], check=True,
                                 capture_output=True, text=True).stdout
        packaged = {line.split()[-1][2:] for line in listing.splitlines()
                    if not line.startswith("d")}
        assert packaged == set(INSTALLED), (
            "unexpected: %s; missing: %s"
            % (sorted(packaged - set(INSTALLED)), sorted(set(INSTALLED) - packaged)))
        print("%s: Depends: %s" % (debs[0], depends))


def main():
    mode, tool, build = sys.argv[1:4]
    {"install": check_install, "verify": check_verify, "deb": check_deb}[mode](
        tool, build)
    print("PASS " + mode, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
