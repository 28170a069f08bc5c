#include "tests/fakes/postgres_server.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace adjutant {
namespace {

// The port only names the socket file (.s.PGSQL.<port>); no TCP listener.
constexpr int kPort = 5432;

std::string Tail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (text.size() > bytes) text = text.substr(text.size() - bytes);
  return text;
}

std::string Bin(const char* name) {
  return absl::StrCat(PostgresServer::kBinDir, "/", name);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start() {
  for (const char* tool : {"initdb", "pg_ctl", "postgres", "psql"}) {
    std::string path =
        tool == std::string("psql") ? "/usr/bin/psql" : Bin(tool);
    if (access(path.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PostgreSQL 15 is not installed (", path,
          " is missing): run scripts/install-deps.sh, which installs the "
          "Debian packages postgresql and libpq-dev"));
    }
  }
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "adjutant-pg-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", tmpl, " failed"));
  }
  std::unique_ptr<PostgresServer> server(new PostgresServer(tmpl));
  if (geteuid() == 0) {
    // initdb refuses root: the server runs as the package's system user.
    struct passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, but there is no `postgres` system user to run "
          "PostgreSQL as: run scripts/install-deps.sh (the Debian postgresql "
          "package creates it)");
    }
    if (chown(tmpl.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", tmpl, " failed"));
    }
  }
  chmod(tmpl.c_str(), 0700);
  const std::string data = tmpl + "/data";
  if (absl::Status s =
          server->Run({Bin("initdb"), "-D", data, "-U", "postgres", "-A",
                       "trust", "-E", "UTF8", "--no-locale", "--no-sync"});
      !s.ok()) {
    return s;
  }
  {
    std::ofstream conf(data + "/postgresql.conf", std::ios::app);
    conf << "\n# adjutant test server\n"
         << "listen_addresses = ''\n"
         << "unix_socket_directories = '" << tmpl << "'\n"
         << "port = " << kPort << "\n"
         << "fsync = off\n"
         << "synchronous_commit = off\n"
         << "full_page_writes = off\n"
         << "max_connections = 200\n";
    if (!conf) {
      return absl::InternalError(
          absl::StrCat("cannot write ", data, "/postgresql.conf"));
    }
  }
  if (absl::Status s = server->StartServer(); !s.ok()) return s;
  return server;
}

absl::StatusOr<PostgresServer*> PostgresServer::Shared() {
  static absl::once_flag once;
  static absl::StatusOr<PostgresServer*>* shared = nullptr;
  absl::call_once(once, [] {
    absl::StatusOr<std::unique_ptr<PostgresServer>> started = Start();
    if (started.ok()) {
      shared = new absl::StatusOr<PostgresServer*>(started->release());
      std::atexit([] { delete **shared; });
    } else {
      shared = new absl::StatusOr<PostgresServer*>(started.status());
    }
  });
  return *shared;
}

PostgresServer::~PostgresServer() {
  if (running_) {
    (void)Run(
        {Bin("pg_ctl"), "-D", dir_ + "/data", "-m", "immediate", "-w", "stop"});
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PostgresServer::ConnInfo(const std::string& dbname) const {
  return absl::StrCat("host=", dir_, " port=", kPort,
                      " user=postgres dbname=", dbname);
}

absl::Status PostgresServer::Stop() {
  absl::Status s =
      Run({Bin("pg_ctl"), "-D", dir_ + "/data", "-m", "fast", "-w", "stop"});
  if (s.ok()) running_ = false;
  return s;
}

absl::Status PostgresServer::Resume() { return StartServer(); }

absl::Status PostgresServer::StartServer() {
  absl::Status s = Run({Bin("pg_ctl"), "-D", dir_ + "/data", "-l",
                        dir_ + "/server.log", "-w", "-t", "120", "start"});
  if (s.ok()) running_ = true;
  return s;
}

absl::Status PostgresServer::Psql(const std::string& sql,
                                  const std::string& dbname) {
  return Run({"/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dir_,
              "-p", absl::StrCat(kPort), "-U", "postgres", "-d", dbname, "-c",
              sql});
}

absl::Status PostgresServer::Run(const std::vector<std::string>& argv) {
  std::vector<std::string> full;
  if (geteuid() == 0) full = {"runuser", "-u", "postgres", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (std::string& arg : full) args.push_back(arg.data());
  args.push_back(nullptr);

  const std::string log = dir_ + "/commands.log";
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (null >= 0) dup2(null, 0);
    // Relative paths and the server's cwd: a dir the postgres user can use.
    if (chdir(dir_.c_str()) != 0) _exit(126);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return absl::InternalError("waitpid failed");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      "`", absl::StrJoin(full, " "), "` failed (status ", status,
      "); end of its output:\n", Tail(log, 1500), "\nend of the server log:\n",
      Tail(dir_ + "/server.log", 1500)));
}

}  // namespace adjutant
