#include "storage/sqlite_connection.h"

#include <sqlite3.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace adjutant {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

}  // namespace

absl::Status SqliteStatus(int rc, sqlite3* db, absl::string_view context) {
  // sqlite3_errmsg describes the connection's latest error, which is `rc`
  // when the caller reports it at once; otherwise fall back to the code's
  // generic text.
  const char* detail = (db != nullptr && sqlite3_extended_errcode(db) == rc)
                           ? sqlite3_errmsg(db)
                           : sqlite3_errstr(rc);
  std::string message = absl::StrCat(context, ": ", detail);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return absl::UnavailableError(message);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message);
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE ||
          rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(message);
      }
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return absl::FailedPreconditionError(message);
      }
      return absl::InternalError(message);
    default:
      return absl::InternalError(message);
  }
}

int64_t EncodeFiniteTime(absl::Time t) {
  // Compare in absl::Time first: ToUnixNanos of a time out of int64 range
  // is not meaningful.
  static const absl::Time kMax = absl::FromUnixNanos(kInt64Max - 1);
  // INT64_MIN is kept for InfinitePast in EncodeOrderedTime.
  static const absl::Time kMin = absl::FromUnixNanos(kInt64Min + 1);
  if (t > kMax) return kInt64Max;  // includes InfiniteFuture
  if (t < kMin) return kInt64Min + 1;
  return absl::ToUnixNanos(t);
}

absl::Time DecodeTime(int64_t ns) {
  if (ns == kInt64Max) return absl::InfiniteFuture();
  return absl::FromUnixNanos(ns);
}

int64_t EncodeOrderedTime(absl::Time t) {
  if (t == absl::InfinitePast()) return kInt64Min;
  return EncodeFiniteTime(t);
}

absl::Time DecodeOrderedTime(int64_t ns) {
  if (ns == kInt64Min) return absl::InfinitePast();
  return DecodeTime(ns);
}

int64_t EncodeDuration(absl::Duration d) {
  if (d >= absl::Nanoseconds(kInt64Max)) return kInt64Max;
  if (d <= absl::Nanoseconds(kInt64Min)) return kInt64Min;
  return absl::ToInt64Nanoseconds(d);
}

absl::Duration DecodeDuration(int64_t ns) {
  if (ns == kInt64Max) return absl::InfiniteDuration();
  if (ns == kInt64Min) return -absl::InfiniteDuration();
  return absl::Nanoseconds(ns);
}

// ---- SqliteStatement ----------------------------------------------------

SqliteStatement::SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, bool cached)
    : db_(db), stmt_(stmt), cached_(cached) {}

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      cached_(other.cached_),
      bind_status_(std::move(other.bind_status_)) {}

SqliteStatement::~SqliteStatement() {
  if (stmt_ == nullptr) return;
  if (cached_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  } else {
    sqlite3_finalize(stmt_);
  }
}

void SqliteStatement::NoteBind(int rc, int index) {
  if (rc != SQLITE_OK && bind_status_.ok()) {
    bind_status_ = SqliteStatus(
        rc, db_, absl::StrCat("binding parameter ", index, " failed"));
  }
}

void SqliteStatement::BindInt(int index, int64_t value) {
  NoteBind(sqlite3_bind_int64(stmt_, index, value), index);
}

void SqliteStatement::BindNull(int index) {
  NoteBind(sqlite3_bind_null(stmt_, index), index);
}

void SqliteStatement::BindText(int index, const std::string& value) {
  NoteBind(sqlite3_bind_text64(stmt_, index, value.data(), value.size(),
                               SQLITE_STATIC, SQLITE_UTF8),
           index);
}

void SqliteStatement::BindBlob(int index, const std::string& value) {
  // data() is never null, so an empty string binds as an empty blob, not
  // as NULL.
  NoteBind(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(),
                               SQLITE_STATIC),
           index);
}

void SqliteStatement::BindTime(int index, absl::Time value) {
  if (value == absl::InfinitePast()) {
    BindNull(index);
  } else {
    BindInt(index, EncodeFiniteTime(value));
  }
}

absl::StatusOr<bool> SqliteStatement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // The start of the statement says which one failed; it holds placeholders,
  // never bound values.
  absl::string_view sql = sqlite3_sql(stmt_);
  return SqliteStatus(
      rc, db_,
      absl::StrCat("SQLite statement failed (", sql.substr(0, 48),
                   sql.size() > 48 ? "...)" : ")"));
}

absl::Status SqliteStatement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

bool SqliteStatement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

int64_t SqliteStatement::ColumnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string SqliteStatement::ColumnString(int column) const {
  // Blob first, then bytes: the documented order that avoids a conversion
  // between the two calls.
  const void* data = sqlite3_column_blob(stmt_, column);
  int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

absl::Time SqliteStatement::ColumnTime(int column) const {
  if (ColumnIsNull(column)) return absl::InfinitePast();
  return DecodeTime(ColumnInt(column));
}

int SqliteStatement::ColumnCount() const { return sqlite3_column_count(stmt_); }

int SqliteStatement::Changes() const { return sqlite3_changes(db_); }

// ---- SqliteConnection ---------------------------------------------------

absl::StatusOr<std::unique_ptr<SqliteConnection>> SqliteConnection::Open(
    const std::string& path, int flags, const std::string& vfs) {
  // Once per process, before SQLite initializes: no memory statistics.
  // SQLite otherwise takes a global mutex around every allocation to count
  // it, and nothing here reads the counts. If SQLite was already
  // initialized (by another user in the process), the call is refused and
  // the statistics stay on: slower, not wrong.
  static const int memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)memstatus_off;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags,
                           vfs.empty() ? nullptr : vfs.c_str());
  if (rc != SQLITE_OK) {
    absl::Status status =
        SqliteStatus(rc, db, absl::StrCat("cannot open database ", path));
    sqlite3_close(db);  // a handle is returned even on failure
    return status;
  }
  sqlite3_extended_result_codes(db, 1);
  return std::unique_ptr<SqliteConnection>(new SqliteConnection(db));
}

SqliteConnection::~SqliteConnection() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

int SqliteConnection::FindOrPrepare(absl::string_view sql,
                                    sqlite3_stmt** stmt) {
  auto it = statements_.find(sql);  // no copy of the text on a hit
  if (it != statements_.end()) {
    *stmt = it->second;
    return SQLITE_OK;
  }
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
  if (rc == SQLITE_OK) statements_.emplace(std::string(sql), *stmt);
  return rc;
}

absl::StatusOr<SqliteStatement> SqliteConnection::Prepare(
    absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = FindOrPrepare(sql, &stmt);
  if (rc != SQLITE_OK) {
    return SqliteStatus(rc, db_, "preparing a SQLite statement failed");
  }
  return SqliteStatement(db_, stmt, /*cached=*/true);
}

absl::StatusOr<SqliteStatement> SqliteConnection::PrepareOnce(
    absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), 0,
                              &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return SqliteStatus(rc, db_, "preparing a SQLite statement failed");
  }
  if (stmt == nullptr) {
    return absl::InvalidArgumentError("the SQL text holds no statement");
  }
  return SqliteStatement(db_, stmt, /*cached=*/false);
}

absl::Status SqliteConnection::Exec(const char* sql) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    absl::string_view text = sql;
    return SqliteStatus(
        rc, db_,
        absl::StrCat("SQLite statement failed (", text.substr(0, 48),
                     text.size() > 48 ? "...)" : ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SqliteTransaction> SqliteConnection::Begin(const char* begin) {
  const bool write = absl::string_view(begin) != "BEGIN";
  int rc = RunCached(begin);
  if (rc != SQLITE_OK) {
    return SqliteStatus(rc, db_, "starting a SQLite transaction failed");
  }
  return SqliteTransaction(this, write ? &write_trouble_ : nullptr);
}

int SqliteConnection::RunCached(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (int rc = FindOrPrepare(sql, &stmt); rc != SQLITE_OK) return rc;
  int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

// ---- SqliteTransaction --------------------------------------------------

namespace {

// For a transaction already committed or moved from: its connection may
// have begun another one since, which this object must not touch.
absl::Status EndedError() {
  return absl::FailedPreconditionError(
      "the SQLite transaction was already committed or moved from");
}

}  // namespace

SqliteTransaction::SqliteTransaction(SqliteConnection* connection,
                                     absl::Status* write_trouble)
    : connection_(connection),
      db_(connection->db()),
      write_trouble_(write_trouble),
      changes_at_begin_(sqlite3_total_changes64(db_)) {}

SqliteTransaction::SqliteTransaction(SqliteTransaction&& other) noexcept
    : connection_(std::exchange(other.connection_, nullptr)),
      db_(std::exchange(other.db_, nullptr)),
      write_trouble_(other.write_trouble_),
      changes_at_begin_(other.changes_at_begin_),
      changes_undone_(other.changes_undone_) {}

SqliteTransaction::~SqliteTransaction() {
  if (db_ == nullptr) return;
  // Not committed: the latest error on the connection is what ended the
  // transaction (an early return right after the failed call).
  NoteOutcome(sqlite3_extended_errcode(db_), /*committed=*/false);
  // Some errors (IOERR, FULL, BUSY mid-statement) already rolled the
  // transaction back; then there is nothing left to undo.
  if (sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void SqliteTransaction::NoteOutcome(int rc, bool committed) {
  if (write_trouble_ == nullptr) return;
  if (rc == SQLITE_OK) {
    if (committed &&
        sqlite3_total_changes64(db_) - changes_undone_ > changes_at_begin_) {
      *write_trouble_ = absl::OkStatus();
    }
  } else if ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL) {
    *write_trouble_ = SqliteStatus(rc, db_, "the latest write failed");
  }
}

bool SqliteTransaction::active() const {
  return db_ != nullptr && sqlite3_get_autocommit(db_) == 0;
}

absl::Status SqliteTransaction::RunInSavepoint(
    absl::FunctionRef<absl::Status()> body) {
  if (db_ == nullptr) return EndedError();
  const int64_t changes_before = sqlite3_total_changes64(db_);
  int rc = connection_->RunCached("SAVEPOINT adjutant_call");
  if (rc != SQLITE_OK) {
    NoteOutcome(rc, /*committed=*/false);
    return SqliteStatus(rc, db_, "starting a SQLite savepoint failed");
  }
  absl::Status status = body();
  if (status.ok()) {
    rc = connection_->RunCached("RELEASE adjutant_call");
    if (rc == SQLITE_OK) return status;
    status = SqliteStatus(rc, db_, "releasing a SQLite savepoint failed");
  } else {
    // As in the destructor: the latest error on the connection is what
    // ended the body (an early return right after the failed call).
    NoteOutcome(sqlite3_extended_errcode(db_), /*committed=*/false);
  }
  if (sqlite3_get_autocommit(db_) != 0) return status;  // SQLite rolled back
  // The same name refers to the innermost savepoint, so nesting works.
  rc = sqlite3_exec(db_, "ROLLBACK TO adjutant_call; RELEASE adjutant_call",
                    nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    // Cannot undo the part: end the whole transaction rather than commit
    // half of a call.
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  changes_undone_ += sqlite3_total_changes64(db_) - changes_before;
  return status;
}

absl::Status SqliteTransaction::Commit() {
  if (db_ == nullptr) return EndedError();
  int rc = connection_->RunCached("COMMIT");
  if (rc != SQLITE_OK) {
    NoteOutcome(rc, /*committed=*/false);
    return SqliteStatus(rc, db_, "committing a SQLite transaction failed");
  }
  NoteOutcome(SQLITE_OK, /*committed=*/true);
  db_ = nullptr;
  connection_ = nullptr;
  return absl::OkStatus();
}

}  // namespace adjutant
