#include "storage/postgres_connection.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "storage/sqlite_connection.h"  // the shared time encoding

namespace adjutant {
namespace {

// The start of a statement, to name it in errors without its parameters.
std::string StatementName(absl::string_view sql) {
  sql = absl::StripLeadingAsciiWhitespace(sql);
  if (sql.size() <= 48) return std::string(sql);
  return absl::StrCat(sql.substr(0, 48), "...");
}

// libpq's messages end in a newline.
std::string CleanMessage(const char* message) {
  if (message == nullptr) return "";
  return std::string(absl::StripAsciiWhitespace(message));
}

}  // namespace

absl::Status PostgresStatus(absl::string_view sqlstate,
                            absl::string_view context,
                            absl::string_view detail) {
  std::string message = absl::StrCat(context, ": ", detail);
  if (sqlstate.empty() || absl::StartsWith(sqlstate, "08") ||
      sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03" ||
      sqlstate == "57P04" || sqlstate == "57P05" || sqlstate == "53300" ||
      sqlstate == "55P03" || sqlstate == "57014" || sqlstate == "25006") {
    return absl::UnavailableError(message);
  }
  if (sqlstate == "53100" || sqlstate == "53200") {
    return absl::ResourceExhaustedError(message);
  }
  if (IsRetryableSqlState(sqlstate)) return absl::AbortedError(message);
  if (sqlstate == "23505") return absl::AlreadyExistsError(message);
  if (sqlstate == "23503") return absl::FailedPreconditionError(message);
  if (sqlstate == "22021" || sqlstate == "22P05") {
    return absl::InvalidArgumentError(message);
  }
  return absl::InternalError(message);
}

bool IsRetryableSqlState(absl::string_view sqlstate) {
  return sqlstate == "40001" || sqlstate == "40P01";
}

std::string QuoteIdentifier(absl::string_view name) {
  std::string out = "\"";
  for (char ch : name) {
    if (ch == '"') out.push_back('"');
    out.push_back(ch);
  }
  out.push_back('"');
  return out;
}

// ---- PgParams -------------------------------------------------------------

PgParams& PgParams::Text(absl::string_view value) {
  values_.push_back(Value{std::string(value), false, false});
  return *this;
}

PgParams& PgParams::Int(int64_t value) {
  values_.push_back(Value{absl::StrCat(value), false, false});
  return *this;
}

PgParams& PgParams::Bytes(absl::string_view value) {
  values_.push_back(Value{std::string(value), false, true});
  return *this;
}

PgParams& PgParams::Null() {
  values_.push_back(Value{"", true, false});
  return *this;
}

PgParams& PgParams::Time(absl::Time value) {
  if (value == absl::InfinitePast()) return Null();
  return Int(EncodeFiniteTime(value));
}

PgParams& PgParams::TextArray(const std::vector<std::string>& values) {
  std::string literal = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) literal.push_back(',');
    literal.push_back('"');
    for (char ch : values[i]) {
      if (ch == '"' || ch == '\\') literal.push_back('\\');
      literal.push_back(ch);
    }
    literal.push_back('"');
  }
  literal.push_back('}');
  return Text(literal);
}

// ---- PgResult -------------------------------------------------------------

PgResult::PgResult(pg_result* result) : result_(result) {}

PgResult::PgResult(PgResult&& other) noexcept
    : result_(std::exchange(other.result_, nullptr)) {}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) PQclear(result_);
    result_ = std::exchange(other.result_, nullptr);
  }
  return *this;
}

PgResult::~PgResult() {
  if (result_ != nullptr) PQclear(result_);
}

int PgResult::rows() const { return PQntuples(result_); }

int PgResult::columns() const { return PQnfields(result_); }

int64_t PgResult::affected() const {
  int64_t n = 0;
  if (!absl::SimpleAtoi(PQcmdTuples(result_), &n)) return 0;
  return n;
}

bool PgResult::IsNull(int row, int column) const {
  return PQgetisnull(result_, row, column) != 0;
}

int64_t PgResult::Int(int row, int column) const {
  if (IsNull(row, column)) return 0;
  int64_t value = 0;
  // The columns read here are integers; a failed parse reads as 0.
  (void)absl::SimpleAtoi(PQgetvalue(result_, row, column), &value);
  return value;
}

std::string PgResult::Text(int row, int column) const {
  if (IsNull(row, column)) return "";
  return std::string(PQgetvalue(result_, row, column),
                     PQgetlength(result_, row, column));
}

std::string PgResult::Bytes(int row, int column) const {
  if (IsNull(row, column)) return "";
  size_t length = 0;
  unsigned char* bytes = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_, row, column)),
      &length);
  if (bytes == nullptr) return "";
  std::string out(reinterpret_cast<char*>(bytes), length);
  PQfreemem(bytes);
  return out;
}

absl::Time PgResult::Time(int row, int column) const {
  if (IsNull(row, column)) return absl::InfinitePast();
  return DecodeTime(Int(row, column));
}

// ---- PgConnection ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(
    const std::string& conninfo, absl::Duration connect_timeout,
    const std::string& setup) {
  std::string timeout = absl::StrCat(std::max<int64_t>(
      2, absl::ToInt64Seconds(absl::Ceil(connect_timeout, absl::Seconds(1)))));
  // Keywords before "dbname" are defaults that the conninfo may override.
  const char* keywords[] = {"connect_timeout", "application_name",
                            "client_encoding", "dbname", nullptr};
  const char* values[] = {timeout.c_str(), "adjutant", "UTF8", conninfo.c_str(),
                          nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (conn == nullptr) {
    return absl::ResourceExhaustedError(
        "PostgreSQL: cannot allocate a connection");
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    // The message names host and port, never the password.
    absl::Status status = absl::UnavailableError(absl::StrCat(
        "cannot connect to PostgreSQL: ", CleanMessage(PQerrorMessage(conn))));
    PQfinish(conn);
    return status;
  }
  // Notices (e.g. "schema already exists, skipping") are not errors, and a
  // library must not print: drop them.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  std::unique_ptr<PgConnection> connection(new PgConnection(conn));
  if (!setup.empty()) {
    absl::StatusOr<PgResult> result = connection->Exec(setup);
    if (!result.ok()) return result.status();
  }
  return connection;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::ok() const { return PQstatus(conn_) == CONNECTION_OK; }

int PgConnection::backend_pid() const { return PQbackendPID(conn_); }

absl::StatusOr<PgResult> PgConnection::Exec(absl::string_view sql,
                                            const PgParams& params) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  values.reserve(params.values_.size());
  for (const PgParams::Value& value : params.values_) {
    values.push_back(value.is_null ? nullptr : value.bytes.data());
    lengths.push_back(static_cast<int>(value.bytes.size()));
    formats.push_back(value.binary ? 1 : 0);
  }
  std::string text(sql);
  PgResult result(PQexecParams(conn_, text.c_str(), params.size(),
                               /*paramTypes=*/nullptr, values.data(),
                               lengths.data(), formats.data(),
                               /*resultFormat=*/0));
  PGresult* raw = result.get();
  ExecStatusType status =
      raw == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    last_sqlstate_.clear();
    return result;
  }
  return Failure(raw, sql);
}

absl::Status PgConnection::ExecScript(const std::string& sql) {
  PgResult result(PQexec(conn_, sql.c_str()));
  PGresult* raw = result.get();
  ExecStatusType status =
      raw == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    last_sqlstate_.clear();
    return absl::OkStatus();
  }
  return Failure(raw, sql);
}

absl::Status PgConnection::Failure(pg_result* raw, absl::string_view sql) {
  const char* state =
      raw == nullptr ? nullptr : PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  last_sqlstate_ = state == nullptr ? "" : state;
  std::string detail;
  if (raw != nullptr) {
    detail = CleanMessage(PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY));
  }
  if (detail.empty()) detail = CleanMessage(PQerrorMessage(conn_));
  // A connection that broke has no SQLSTATE from the server: treat it as
  // unreachable, whatever the message.
  if (!ok()) last_sqlstate_.clear();
  return PostgresStatus(
      last_sqlstate_,
      absl::StrCat("PostgreSQL statement failed (", StatementName(sql), ")"),
      detail);
}

// ---- PgPool ---------------------------------------------------------------

PgPool::PgPool(std::string conninfo, int size, absl::Duration connect_timeout,
               absl::Duration acquire_timeout, std::string setup)
    : conninfo_(std::move(conninfo)),
      size_(std::max(size, 1)),
      connect_timeout_(connect_timeout),
      acquire_timeout_(acquire_timeout),
      setup_(std::move(setup)) {}

PgPool::~PgPool() {
  absl::MutexLock lock(&mu_);
  idle_.clear();
}

absl::StatusOr<PgPool::Handle> PgPool::Acquire() {
  std::unique_ptr<PgConnection> connection;
  {
    absl::MutexLock lock(&mu_);
    auto slot_free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return lent_ < size_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&slot_free), acquire_timeout_)) {
      return absl::UnavailableError(absl::StrCat(
          "PostgreSQL: all ", size_, " pooled connections stayed busy for ",
          absl::FormatDuration(acquire_timeout_)));
    }
    ++lent_;
    if (!idle_.empty()) {
      connection = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  // Connecting happens outside the lock; the slot is already ours.
  if (connection != nullptr && !connection->ok()) connection.reset();
  if (connection == nullptr) {
    absl::StatusOr<std::unique_ptr<PgConnection>> fresh =
        PgConnection::Connect(conninfo_, connect_timeout_, setup_);
    if (!fresh.ok()) {
      Release(nullptr);
      return fresh.status();
    }
    connection = std::move(*fresh);
  }
  return Handle(this, std::move(connection));
}

void PgPool::CloseIdle() {
  std::vector<std::unique_ptr<PgConnection>> closing;
  absl::MutexLock lock(&mu_);
  closing.swap(idle_);
}

void PgPool::Release(std::unique_ptr<PgConnection> connection) {
  absl::MutexLock lock(&mu_);
  --lent_;
  if (connection != nullptr && connection->ok()) {
    idle_.push_back(std::move(connection));
  }
}

PgPool::Handle::~Handle() {
  if (pool_ != nullptr) pool_->Release(std::move(connection_));
}

}  // namespace adjutant
