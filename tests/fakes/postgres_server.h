// A throwaway PostgreSQL 15 server for tests.
//
// Start() runs `initdb` into a fresh temp dir and `pg_ctl start` on it,
// listening only on a Unix socket in that dir (no TCP port), with fsync,
// synchronous_commit and full_page_writes off: durability against power
// loss is not what the tests check, and it makes them fast. The destructor
// stops the server and removes the dir.
//
// The binaries come from /usr/lib/postgresql/15/bin (Debian's postgresql-15
// package). When they are missing, Start() fails with a message saying to
// run scripts/install-deps.sh: tests must fail, not skip, without them.
// initdb refuses to run as root, so as root every server command runs as
// the `postgres` system user (created by the Debian package) through
// runuser, with the temp dir chowned to it.
//
// Thread-safe: Shared() may be called from any thread; the other methods
// must not run concurrently with each other (the tests call them from the
// test thread).
#ifndef ADJUTANT_TESTS_FAKES_POSTGRES_SERVER_H_
#define ADJUTANT_TESTS_FAKES_POSTGRES_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace adjutant {

class PostgresServer {
 public:
  // Where the Debian package installs the server binaries.
  static constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";

  // Starts a new server. FAILED_PRECONDITION (with the fix) if the
  // binaries are missing; INTERNAL with the tail of the server's log if
  // initdb or pg_ctl fail.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start();

  // The server of this test process: started by the first call, stopped
  // and removed when the process exits. Later calls return the same server
  // (or the same error).
  static absl::StatusOr<PostgresServer*> Shared();

  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A libpq connection string for `dbname` as the superuser "postgres".
  std::string ConnInfo(const std::string& dbname = "postgres") const;

  // Stops the server (pg_ctl stop -m fast: sessions are ended) keeping its
  // data; Resume() starts it again on the same socket.
  absl::Status Stop();
  absl::Status Resume();

  // Runs `sql` through psql on database `dbname` (for fixtures that create
  // databases). INTERNAL with psql's output on failure.
  absl::Status Psql(const std::string& sql,
                    const std::string& dbname = "postgres");

  const std::string& dir() const { return dir_; }

 private:
  explicit PostgresServer(std::string dir) : dir_(std::move(dir)) {}

  // Runs `argv` (as the postgres user when root) and waits for it; output
  // goes to dir_/commands.log. INTERNAL naming the command and quoting the
  // end of the logs when it fails.
  absl::Status Run(const std::vector<std::string>& argv);
  absl::Status StartServer();

  const std::string dir_;  // the socket dir; the data is in dir_/data
  bool running_ = false;
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_FAKES_POSTGRES_SERVER_H_
