"""A throwaway PostgreSQL 15 for the acceptance tests: initdb into a temp
dir, a Unix socket only (no TCP port); as root the server runs as the
`postgres` user through runuser. Import this module after putting its folder
on sys.path."""
import os
import shutil
import subprocess
import tempfile

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_PORT = 5432  # names the socket file only


class Postgres:
    """A throwaway PostgreSQL 15 listening on a Unix socket in a temp dir."""

    def __init__(self):
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
                raise SystemExit("PostgreSQL 15 is not installed (%s/%s is missing): "
                                 "run scripts/install-deps.sh" % (PG_BIN, tool))
        self.dir = tempfile.mkdtemp(prefix="adjutant-pg-")
        self.data = os.path.join(self.dir, "data")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        self._run([PG_BIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("\nlisten_addresses = ''\nunix_socket_directories = '%s'\n"
                       "port = %d\nfsync = off\nfull_page_writes = off\n"
                       "max_connections = 200\n" % (self.dir, PG_PORT))
        self.start()

    def _run(self, argv):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, cwd=self.dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start(self):
        self._run([PG_BIN + "/pg_ctl", "-D", self.data, "-l",
                   os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"])

    def stop(self, mode="fast"):
        self._run([PG_BIN + "/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"])

    def create_db(self, name):
        self._run(["/usr/bin/psql", "-X", "-q", "-h", self.dir, "-p", str(PG_PORT),
                   "-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE " + name])

    def uri(self, dbname):
        return "postgresql://postgres@/%s?host=%s&port=%d" % (dbname, self.dir, PG_PORT)

    def destroy(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
