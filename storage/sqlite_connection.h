// A thin layer over the sqlite3 C API for SqliteJobStore: one connection
// with a cache of prepared statements, statements that reset themselves,
// SQLite result codes mapped to absl::Status, and the encoding of times.
//
// Nothing here is thread-safe: the owner (SqliteJobStore) serializes every
// call on a connection and on its statements under its own mutex.
#ifndef ADJUTANT_STORAGE_SQLITE_CONNECTION_H_
#define ADJUTANT_STORAGE_SQLITE_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace adjutant {

class SqliteConnection;

// Maps a SQLite result code (primary or extended) to a Status whose message
// starts with `context` and carries SQLite's own explanation:
//   BUSY, LOCKED, IOERR, CANTOPEN -> UNAVAILABLE
//   FULL                          -> RESOURCE_EXHAUSTED
//   CONSTRAINT (UNIQUE, PK)       -> ALREADY_EXISTS
//   CONSTRAINT (FOREIGN KEY)      -> FAILED_PRECONDITION
//   anything else                 -> INTERNAL
// `db` may be null (then only the generic text of `rc` is used). SQLite's
// messages name tables and columns, never bound values, so no payload or
// token can leak through them.
absl::Status SqliteStatus(int rc, sqlite3* db, absl::string_view context);

// Times are stored as int64 nanoseconds since the Unix epoch:
//   InfinitePast   <-> NULL (or INT64_MIN in NOT NULL columns that must sort
//                      before every time, see EncodeOrderedTime)
//   InfiniteFuture <-> INT64_MAX
// Finite times outside what int64 nanoseconds can hold (before 1677-09-21 or
// after 2262-04-11) saturate: later ones read back as InfiniteFuture,
// earlier ones as INT64_MIN + 1 ns.
// Durations are stored as int64 nanoseconds; +/-InfiniteDuration <->
// INT64_MAX / INT64_MIN.
int64_t EncodeFiniteTime(absl::Time t);  // REQUIRES: t != InfinitePast()
absl::Time DecodeTime(int64_t ns);
int64_t EncodeOrderedTime(absl::Time t);  // InfinitePast -> INT64_MIN
absl::Time DecodeOrderedTime(int64_t ns);
int64_t EncodeDuration(absl::Duration d);
absl::Duration DecodeDuration(int64_t ns);

// A prepared statement in use. Binding and column indexes are those of the
// SQLite API (bind from 1, columns from 0). When destroyed, a cached
// statement is reset and its bindings cleared, ready for its next use; an
// uncached one is finalized. Movable, not copyable.
//
// Bound strings and blobs are NOT copied: they must outlive the statement's
// use (the rvalue overloads are deleted to catch temporaries).
class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, bool cached);
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) = delete;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;
  ~SqliteStatement();

  void BindInt(int index, int64_t value);
  void BindNull(int index);
  void BindText(int index, const std::string& value);
  void BindText(int index, std::string&&) = delete;
  void BindBlob(int index, const std::string& value);
  void BindBlob(int index, std::string&&) = delete;
  // NULL for InfinitePast, otherwise as EncodeFiniteTime.
  void BindTime(int index, absl::Time value);

  // Runs one step: true if it produced a row, false when done. The first
  // failed Bind* is reported here.
  absl::StatusOr<bool> Step();
  // Steps to the end, ignoring rows (for INSERT / UPDATE / DELETE).
  absl::Status Run();

  bool ColumnIsNull(int column) const;
  int64_t ColumnInt(int column) const;
  // Text or blob contents, byte for byte (NULL reads as "").
  std::string ColumnString(int column) const;
  // NULL reads as InfinitePast.
  absl::Time ColumnTime(int column) const;
  int ColumnCount() const;

  // The number of rows changed by the last INSERT / UPDATE / DELETE run on
  // this connection.
  int Changes() const;

 private:
  void NoteBind(int rc, int index);

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool cached_;
  absl::Status bind_status_;
};

// An open transaction. Rolls back when destroyed unless Commit() succeeded,
// so an early `return status;` undoes everything. Statements used inside
// should be reset (destroyed) before Commit(). Movable, not copyable.
// REQUIRES: does not outlive its connection.
class SqliteTransaction {
 public:
  SqliteTransaction(SqliteTransaction&& other) noexcept;
  SqliteTransaction& operator=(SqliteTransaction&&) = delete;
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  ~SqliteTransaction();

  // COMMIT. On failure the transaction is rolled back (by the destructor).
  // FAILED_PRECONDITION, touching nothing, once committed or moved from.
  absl::Status Commit();

  // Runs `body` as a nested unit of this transaction (SAVEPOINT, then
  // RELEASE). If `body` fails, its changes alone are undone (ROLLBACK TO)
  // and the transaction goes on, unless the failure ended the whole
  // transaction (SQLite rolls back by itself on some I/O errors and on a
  // full disk): then active() is false and nothing is left to commit.
  // Returns `body`'s status, or the savepoint's own failure. Nests.
  // FAILED_PRECONDITION, without running `body`, once committed or moved
  // from.
  absl::Status RunInSavepoint(absl::FunctionRef<absl::Status()> body);

  // True while the transaction is open: not committed, not ended by an
  // error.
  bool active() const;

 private:
  friend class SqliteConnection;
  SqliteTransaction(SqliteConnection* connection, absl::Status* write_trouble);

  // Records an I/O error or disk full that ended the transaction (or a
  // savepoint of it) in *write_trouble_. Clears it only on a commit that
  // changed rows: a transaction that wrote nothing (a reaper round with no
  // expired lease), or whose changes were all rolled back to savepoints,
  // commits without touching the disk, which proves nothing about it.
  void NoteOutcome(int rc, bool committed);

  SqliteConnection* connection_;  // null once committed or moved from
  sqlite3* db_;                   // null once committed or moved from
  // The connection's write_trouble_ for a write transaction; null for reads.
  absl::Status* write_trouble_;
  // sqlite3_total_changes64 when the transaction began.
  int64_t changes_at_begin_;
  // Changes undone by ROLLBACK TO since then (they never reach the disk).
  int64_t changes_undone_ = 0;
};

// One open SQLite connection and its statement cache. Owns the sqlite3*;
// the destructor finalizes every cached statement and closes it.
class SqliteConnection {
 public:
  // sqlite3_open_v2(path, flags, vfs) with extended result codes on. An
  // empty `vfs` is SQLite's default VFS; otherwise the name of a registered
  // one (sqlite3_vfs_register).
  static absl::StatusOr<std::unique_ptr<SqliteConnection>> Open(
      const std::string& path, int flags, const std::string& vfs = "");
  ~SqliteConnection();
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  sqlite3* db() const { return db_; }

  // A statement for `sql`, prepared once with SQLITE_PREPARE_PERSISTENT and
  // reused on later calls with the same text. `sql` is one statement.
  absl::StatusOr<SqliteStatement> Prepare(absl::string_view sql);
  // A statement prepared for one use (test hooks, rare queries).
  absl::StatusOr<SqliteStatement> PrepareOnce(absl::string_view sql);

  // Runs `sql` (one or more statements, no results wanted).
  absl::Status Exec(const char* sql);

  // Opens a transaction with `begin`, one statement (run from the statement
  // cache): "BEGIN IMMEDIATE" for writes (the
  // write lock is taken up front, waiting up to the busy timeout, so two
  // connections never both decide on the same rows), "BEGIN" for reads that
  // want one snapshot. See SqliteTransaction.
  absl::StatusOr<SqliteTransaction> Begin(const char* begin);

  // The I/O error (UNAVAILABLE) or disk full (RESOURCE_EXHAUSTED) that ended
  // the latest write transaction (one begun with "BEGIN IMMEDIATE"), or OK
  // once a write transaction commits again. Reads succeed while the disk
  // refuses writes, so a health check probes with a write while this is set
  // (SqliteJobStore::Ping).
  const absl::Status& write_trouble() const { return write_trouble_; }

 private:
  friend class SqliteTransaction;
  explicit SqliteConnection(sqlite3* db) : db_(db) {}

  // Runs the one statement `sql`, which yields no rows, through the
  // statement cache: SQLITE_OK, or the error's (extended) result code. For
  // the statements every write call runs (SAVEPOINT, RELEASE, COMMIT),
  // which sqlite3_exec would parse anew each time.
  int RunCached(absl::string_view sql);
  // The cached statement for `sql`, prepared (SQLITE_PREPARE_PERSISTENT)
  // and cached on first use: SQLITE_OK, or the prepare's result code.
  int FindOrPrepare(absl::string_view sql, sqlite3_stmt** stmt);

  sqlite3* const db_;
  absl::Status write_trouble_;
  absl::flat_hash_map<std::string, sqlite3_stmt*> statements_;
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_SQLITE_CONNECTION_H_
