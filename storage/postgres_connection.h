// A thin layer over libpq for PostgresJobStore: one connection that runs
// parameterized statements, their results, SQLSTATEs mapped to absl::Status,
// and a small pool of connections.
//
// PgParams, PgResult and PgConnection are not thread-safe: a connection is
// used by one call at a time, which PgPool guarantees by handing each
// connection to one holder at a time. PgPool itself is thread-safe.
#ifndef ADJUTANT_STORAGE_POSTGRES_CONNECTION_H_
#define ADJUTANT_STORAGE_POSTGRES_CONNECTION_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

struct pg_conn;
struct pg_result;

namespace adjutant {

// Maps a SQLSTATE (five characters; empty when the server sent none, as
// when the connection broke) to a Status whose message is `context`, then
// PostgreSQL's own text:
//   class 08 (connection), 57P01-57P05 (server shutting down), 53300 (too
//   many connections), 55P03 (lock timeout), 57014 (statement timeout),
//   25006 (read-only: a standby), none at all     -> UNAVAILABLE
//   53100 (disk full), 53200 (out of memory)      -> RESOURCE_EXHAUSTED
//   40001 (serialization), 40P01 (deadlock)       -> ABORTED
//   23505 (unique violation)                      -> ALREADY_EXISTS
//   23503 (foreign key violation)                 -> FAILED_PRECONDITION
//   22021, 22P05 (bytes not valid in the encoding) -> INVALID_ARGUMENT
//   anything else                                 -> INTERNAL
// PostgreSQL's primary messages name tables, columns and constraints; the
// DETAIL line, which may quote values, is never included, so no payload or
// token leaks through.
absl::Status PostgresStatus(absl::string_view sqlstate,
                            absl::string_view context,
                            absl::string_view detail);

// True for the SQLSTATEs worth running a whole transaction again for
// (serialization failure, deadlock).
bool IsRetryableSqlState(absl::string_view sqlstate);

// `name` quoted as an SQL identifier ("a""b").
std::string QuoteIdentifier(absl::string_view name);

// The parameters of one statement ($1, $2, ... in the order added). Values
// are sent as text, except Bytes (binary bytea). Times use the encoding of
// storage/sqlite_connection.h: int64 Unix nanoseconds, NULL for unset.
class PgParams {
 public:
  PgParams& Text(absl::string_view value);
  PgParams& Int(int64_t value);
  PgParams& Bytes(absl::string_view value);
  PgParams& Null();
  // NULL for InfinitePast, otherwise EncodeFiniteTime.
  PgParams& Time(absl::Time value);
  // A text[] literal of `values` (for `= ANY($n::text[])`).
  PgParams& TextArray(const std::vector<std::string>& values);

  int size() const { return static_cast<int>(values_.size()); }

 private:
  friend class PgConnection;
  struct Value {
    std::string bytes;
    bool is_null = false;
    bool binary = false;
  };
  std::deque<Value> values_;
};

// The rows of a statement, in text format. Owns the PGresult. Movable.
class PgResult {
 public:
  explicit PgResult(pg_result* result);
  PgResult(PgResult&& other) noexcept;
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  ~PgResult();

  int rows() const;
  int columns() const;
  // Rows changed by an INSERT / UPDATE / DELETE.
  int64_t affected() const;
  bool IsNull(int row, int column) const;
  int64_t Int(int row, int column) const;       // NULL reads as 0
  std::string Text(int row, int column) const;  // NULL reads as ""
  // A bytea column, decoded from its text (hex) form.
  std::string Bytes(int row, int column) const;
  // NULL reads as InfinitePast; otherwise DecodeTime.
  absl::Time Time(int row, int column) const;

  pg_result* get() const { return result_; }

 private:
  pg_result* result_;
};

// One libpq connection. Owns the PGconn; closed when destroyed.
class PgConnection {
 public:
  // Connects with `conninfo` (a libpq key=value string or a postgresql://
  // URI); `setup` (may be empty) runs once connected, e.g. SET search_path.
  // UNAVAILABLE if the server cannot be reached.
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(
      const std::string& conninfo, absl::Duration connect_timeout,
      const std::string& setup);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement. The error's message names the statement (its first
  // words, never a bound value). The SQLSTATE of the last failure is kept
  // in last_sqlstate().
  absl::StatusOr<PgResult> Exec(absl::string_view sql,
                                const PgParams& params = PgParams());

  // Runs `sql`, one or more statements without parameters or results
  // wanted (migrations).
  absl::Status ExecScript(const std::string& sql);

  // False once the connection broke; it must then be replaced.
  bool ok() const;
  const std::string& last_sqlstate() const { return last_sqlstate_; }
  // The backend's process id (for tests that end a session).
  int backend_pid() const;

 private:
  explicit PgConnection(pg_conn* conn) : conn_(conn) {}

  // Turns a failed result into a Status; records its SQLSTATE.
  absl::Status Failure(pg_result* result, absl::string_view sql);

  pg_conn* const conn_;
  std::string last_sqlstate_;
};

// Up to `size` connections, opened when first needed. A connection is lent
// to one holder at a time; a broken one is dropped on return and replaced
// by a fresh one on a later Acquire.
class PgPool {
 public:
  PgPool(std::string conninfo, int size, absl::Duration connect_timeout,
         absl::Duration acquire_timeout, std::string setup);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // A lent connection; goes back to the pool when destroyed. Movable.
  class Handle {
   public:
    Handle(PgPool* pool, std::unique_ptr<PgConnection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    Handle(Handle&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          connection_(std::move(other.connection_)) {}
    Handle& operator=(Handle&&) = delete;
    ~Handle();
    PgConnection& operator*() const { return *connection_; }
    PgConnection* operator->() const { return connection_.get(); }
    // Closes the connection instead of returning it (its state is unknown).
    void Discard() { connection_.reset(); }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConnection> connection_;
  };

  // Waits up to acquire_timeout for a free slot, then returns an idle
  // connection or opens a new one. UNAVAILABLE if none frees up in time or
  // the server cannot be reached. Thread-safe.
  absl::StatusOr<Handle> Acquire();

  // Closes every idle connection (they are reopened on demand). Thread-safe.
  void CloseIdle();

 private:
  void Release(std::unique_ptr<PgConnection> connection);

  const std::string conninfo_;
  const int size_;
  const absl::Duration connect_timeout_;
  const absl::Duration acquire_timeout_;
  const std::string setup_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  std::vector<std::unique_ptr<PgConnection>> idle_ ABSL_GUARDED_BY(mu_);
  int lent_ ABSL_GUARDED_BY(mu_) = 0;  // connections (or slots) lent out
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_POSTGRES_CONNECTION_H_
