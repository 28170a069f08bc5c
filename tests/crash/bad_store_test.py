#!/usr/bin/python3
"""adjutantd refuses a store file it must not use, and touches nothing.

    bad_store_test.py PATH/TO/adjutantd

For each of: a file of random bytes, a real database cut short, a real
database with garbled pages (its header intact), a real database whose
schema version is newer than the build's, and a SQLite database of another
application: adjutantd exits 1, its stderr names the file and the reason,
and afterwards the file's bytes (SHA-256) and mtime are unchanged and its
folder holds exactly the files it held before (no -wal, -shm or journal
left behind, no port file written).
"""
import atexit
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "acceptance"))
import daemon as testlib  # noqa: E402

testlib.load_stubs()
from adjutant.v1 import job_queue_pb2 as pb  # noqa: E402
from adjutant.v1 import job_queue_pb2_grpc as pb_grpc  # noqa: E402

BINARY = sys.argv[1] if len(sys.argv) > 1 else ""
WORK = tempfile.mkdtemp(prefix="adjutant-bad-store-")
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
RNG = random.Random(20261127)
PAGE = 4096


def real_database(name, jobs=300):
    """A database adjutantd wrote and closed cleanly (several pages)."""
    folder = os.path.join(WORK, name)
    os.mkdir(folder)
    db = os.path.join(folder, "adjutant.db")
    d = testlib.Daemon(BINARY, db, folder).start()
    stub = pb_grpc.JobQueueStub(d.channel)
    stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[
        pb.EnqueueRequest(queue="q", job_type="t", payload=bytes(500))
        for _ in range(jobs)]), timeout=30)
    d.stop()
    for leftover in os.listdir(folder):  # logs and the port file
        if not leftover.startswith("adjutant.db"):
            os.remove(os.path.join(folder, leftover))
    assert sorted(os.listdir(folder)) == ["adjutant.db"], os.listdir(folder)
    assert os.path.getsize(db) > 8 * PAGE, os.path.getsize(db)
    return db


def fresh_file(name, content):
    folder = os.path.join(WORK, name)
    os.mkdir(folder)
    db = os.path.join(folder, "adjutant.db")
    with open(db, "wb") as f:
        f.write(content)
    return db


def snapshot(db):
    with open(db, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    folder = os.path.dirname(db)
    return digest, os.stat(db).st_mtime_ns, sorted(os.listdir(folder))


def expect_refusal(db, reasons):
    """Runs adjutantd on `db`: exit 1, stderr naming the file and one of
    `reasons`, nothing changed."""
    before = snapshot(db)
    port_file = db + ".port"
    proc = subprocess.run(
        [BINARY, "--listen", "127.0.0.1:0", "--db", db, "--port-file", port_file],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, (proc.returncode, stderr)
    assert db in stderr, ("the message does not name the file", stderr)
    assert any(r in stderr for r in reasons), ("no reason among %s" % (reasons,), stderr)
    after = snapshot(db)
    assert after[0] == before[0], "the file's bytes changed"
    assert after[1] == before[1], "the file's mtime changed"
    assert after[2] == before[2], ("files appeared or vanished", before[2], after[2])
    print("   ", stderr.strip().splitlines()[-1], flush=True)


def random_bytes():
    db = fresh_file("random", bytes(RNG.getrandbits(8) for _ in range(16 * PAGE)))
    expect_refusal(db, ["not a usable SQLite database"])


def truncated():
    db = real_database("truncated")
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.truncate((size // PAGE // 2) * PAGE + 100)  # mid-page, half gone
    expect_refusal(db, ["corrupt", "not a usable SQLite database"])


def garbled_pages():
    db = real_database("garbled")
    pages = os.path.getsize(db) // PAGE
    with open(db, "r+b") as f:
        for page in RNG.sample(range(1, pages), max(2, pages // 3)):
            f.seek(page * PAGE)
            f.write(bytes(RNG.getrandbits(8) for _ in range(PAGE)))
    expect_refusal(db, ["corrupt"])


def newer_schema():
    db = real_database("newer")
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version = 99")
    c.close()
    folder = os.path.dirname(db)
    assert sorted(os.listdir(folder)) == ["adjutant.db"], os.listdir(folder)
    expect_refusal(db, ["newer than this build supports"])


def other_application():
    folder = os.path.join(WORK, "other")
    os.mkdir(folder)
    db = os.path.join(folder, "adjutant.db")
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes (body TEXT)")
        c.execute("INSERT INTO notes VALUES ('keep me')")
    c.close()
    expect_refusal(db, ["another application"])


if __name__ == "__main__":
    sys.exit(testlib.run_cases([
        ("random bytes", random_bytes),
        ("a database cut short", truncated),
        ("garbled pages", garbled_pages),
        ("a newer schema version", newer_schema),
        ("another application's database", other_application),
    ]))
