#include "server/auth.h"

#include <openssl/sha.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/log_rate_limiter.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

constexpr size_t kMaxNameBytes = 64;
constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 4096;

constexpr Role kRoles[] = {Role::kProducer, Role::kWorker, Role::kLeader,
                           Role::kAdmin};

std::array<uint8_t, 32> Sha256(absl::string_view text) {
  std::array<uint8_t, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest.data());
  return digest;
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

// Printable ASCII without space: what an HTTP/2 header value carries as is.
bool IsTokenChar(char c) { return c > ' ' && c < 0x7f; }

absl::Status LineError(absl::string_view source, int line,
                       absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", why));
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kProducer:
      return "producer";
    case Role::kWorker:
      return "worker";
    case Role::kLeader:
      return "leader";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Role> ParseRole(absl::string_view name) {
  for (Role role : kRoles) {
    if (RoleName(role) == name) return role;
  }
  return std::nullopt;
}

std::string RoleSet::ToString() const {
  std::vector<absl::string_view> names;
  for (Role role : kRoles) {
    if (Contains(role)) names.push_back(RoleName(role));
  }
  return absl::StrJoin(names, ",");
}

RoleSet RolesAllowed(absl::string_view method) {
  // Keep in step with the table in auth.h and docs/API.md.
  static const auto* const kTable =
      new absl::flat_hash_map<absl::string_view, RoleSet>({
          {"adjutant.v1.JobQueue.Enqueue", {Role::kProducer, Role::kAdmin}},
          {"adjutant.v1.JobQueue.EnqueueBatch",
           {Role::kProducer, Role::kAdmin}},
          {"adjutant.v1.JobQueue.Dequeue", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.Ack", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.Nack", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.AckBatch", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.Work", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.ExtendLease", {Role::kWorker, Role::kAdmin}},
          {"adjutant.v1.JobQueue.CancelJob", {Role::kAdmin}},
          {"adjutant.v1.JobQueue.RequeueJob", {Role::kAdmin}},
          {"adjutant.v1.JobQueue.GetJob", RoleSet::All()},
          {"adjutant.v1.JobQueue.ListJobs", RoleSet::All()},
          {"adjutant.v1.JobQueue.GetStats", RoleSet::All()},
          {"adjutant.v1.Scheduler.RegisterCron", {Role::kAdmin}},
          {"adjutant.v1.Scheduler.UnregisterCron", {Role::kAdmin}},
          {"adjutant.v1.Scheduler.GetCron", RoleSet::All()},
          {"adjutant.v1.Scheduler.ListCrons", RoleSet::All()},
          {"adjutant.v1.Scheduler.PreviewCron", RoleSet::All()},
          {"adjutant.v1.Scheduler.SetLeadership",
           {Role::kLeader, Role::kAdmin}},
          {"adjutant.v1.Scheduler.GetLeadership", RoleSet::All()},
      });
  const auto it = kTable->find(method);
  return it == kTable->end() ? RoleSet{Role::kAdmin} : it->second;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Parse(
    absl::string_view text, absl::string_view source) {
  std::vector<Token> tokens;
  // Name or token -> the line that first had it.
  absl::flat_hash_map<std::string, int> name_lines;
  absl::flat_hash_map<std::string, std::pair<int, std::string>> token_lines;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() < 3) {
      return LineError(
          source, line_number,
          absl::StrCat("missing fields: want NAME ROLE[,ROLE...] TOKEN, got ",
                       fields.size(), " field", fields.size() == 1 ? "" : "s"));
    }
    if (fields.size() > 3) {
      return LineError(source, line_number,
                       "too many fields: want NAME ROLE[,ROLE...] TOKEN (a "
                       "token has no spaces)");
    }
    Token token;
    token.name = std::string(fields[0]);
    if (token.name.size() > kMaxNameBytes) {
      return LineError(source, line_number,
                       absl::StrCat("name '", token.name, "' is longer than ",
                                    kMaxNameBytes, " bytes"));
    }
    for (char c : token.name) {
      if (!IsNameChar(c)) {
        return LineError(source, line_number,
                         absl::StrCat("name '", token.name,
                                      "' has a character outside A-Z a-z 0-9 "
                                      ". _ -"));
      }
    }
    for (absl::string_view role_name : absl::StrSplit(fields[1], ',')) {
      if (role_name.empty()) {
        return LineError(source, line_number,
                         absl::StrCat("empty role in '", fields[1],
                                      "' (roles are separated by single "
                                      "commas)"));
      }
      std::optional<Role> role = ParseRole(role_name);
      if (!role.has_value()) {
        return LineError(source, line_number,
                         absl::StrCat("unknown role '", role_name,
                                      "' (one of producer, worker, leader, "
                                      "admin)"));
      }
      token.roles.Add(*role);
    }
    token.token = std::string(fields[2]);
    // Never quote the token itself.
    if (token.token.size() < kMinTokenBytes) {
      return LineError(
          source, line_number,
          absl::StrCat("the token of '", token.name, "' is shorter than ",
                       kMinTokenBytes,
                       " characters (make one with `openssl rand -hex 32`)"));
    }
    if (token.token.size() > kMaxTokenBytes) {
      return LineError(
          source, line_number,
          absl::StrCat("the token of '", token.name, "' is longer than ",
                       kMaxTokenBytes, " characters"));
    }
    for (char c : token.token) {
      if (!IsTokenChar(c)) {
        return LineError(source, line_number,
                         absl::StrCat("the token of '", token.name,
                                      "' has a character outside printable "
                                      "ASCII"));
      }
    }
    if (auto [it, inserted] = name_lines.emplace(token.name, line_number);
        !inserted) {
      return LineError(source, line_number,
                       absl::StrCat("duplicate name '", token.name,
                                    "' (first on line ", it->second, ")"));
    }
    if (auto [it, inserted] = token_lines.emplace(
            token.token, std::make_pair(line_number, token.name));
        !inserted) {
      return LineError(
          source, line_number,
          absl::StrCat("the token of '", token.name, "' is also the token of '",
                       it->second.second, "' (line ", it->second.first,
                       "); tokens are unique"));
    }
    tokens.push_back(std::move(token));
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no tokens (want lines NAME ROLE[,ROLE...] TOKEN)"));
  }
  return std::make_unique<Authorizer>(tokens);
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::FromFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read the token file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read the token file"));
  }
  return Parse(text.str(), path);
}

Authorizer::Authorizer(const std::vector<Token>& tokens) {
  entries_.reserve(tokens.size());
  for (const Token& token : tokens) {
    entries_.push_back({token.name, token.roles, Sha256(token.token)});
  }
}

std::vector<std::string> Authorizer::names() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) names.push_back(entry.name);
  return names;
}

const Authorizer::Entry* Authorizer::Find(absl::string_view token) const {
  // Comparing digests makes every comparison the same length; every entry is
  // compared in full, and the match is selected with arithmetic, not a
  // branch, so that the time says neither which entry matched nor how much
  // of one did.
  const std::array<uint8_t, 32> digest = Sha256(token);
  size_t found = 0;  // index + 1 of the match; 0: none
  for (size_t i = 0; i < entries_.size(); ++i) {
    uint32_t diff = 0;
    for (size_t j = 0; j < digest.size(); ++j) {
      diff |= static_cast<uint32_t>(digest[j] ^ entries_[i].digest[j]);
    }
    // 1 when diff == 0, else 0 (diff < 256).
    const size_t equal = ((diff - 1) >> 8) & 1;
    const size_t mask = ~(equal - 1);  // all ones when equal
    found = (found & ~mask) | ((i + 1) & mask);
  }
  return found == 0 ? nullptr : &entries_[found - 1];
}

absl::StatusOr<Caller> Authorizer::Authorize(
    const grpc::CallbackServerContext& context,
    absl::string_view method) const {
  return AuthorizeMetadata(context.client_metadata(), method);
}

absl::StatusOr<Caller> Authorizer::AuthorizeMetadata(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    absl::string_view method) const {
  // gRPC lower-cases metadata keys.
  const auto [begin, end] = metadata.equal_range("authorization");
  if (begin == end) {
    return absl::UnauthenticatedError(
        "missing 'authorization: Bearer TOKEN' metadata");
  }
  if (std::next(begin) != end) {
    return absl::UnauthenticatedError(
        "more than one 'authorization' metadata entry");
  }
  absl::string_view value(begin->second.data(), begin->second.size());
  constexpr absl::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme) ||
      (value[kScheme.size()] != ' ' && value[kScheme.size()] != '\t')) {
    return absl::UnauthenticatedError(
        "'authorization' metadata is not of the form 'Bearer TOKEN'");
  }
  const absl::string_view token =
      absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "'authorization' metadata is not of the form 'Bearer TOKEN'");
  }
  const Entry* entry = Find(token);
  if (entry == nullptr) return absl::UnauthenticatedError("invalid token");
  const RoleSet allowed = RolesAllowed(method);
  if (!entry->roles.Intersects(allowed)) {
    return absl::PermissionDeniedError(
        absl::StrCat("'", entry->name, "' (roles ", entry->roles.ToString(),
                     ") may not call ", method, "; it needs one of the roles ",
                     allowed.ToString()));
  }
  return Caller{entry->name, entry->roles};
}

absl::StatusOr<Caller> AuthorizeCall(const Authorizer* authorizer,
                                     const grpc::CallbackServerContext& context,
                                     absl::string_view method) {
  if (authorizer == nullptr) return Caller{};
  absl::StatusOr<Caller> caller = authorizer->Authorize(context, method);
  if (!caller.ok()) {
    // A client retrying with a bad token, or a scan, must not flood the
    // log: at most 20 refusals per 10 s, then a count of those not logged.
    static LogRateLimiter* const limiter =
        new LogRateLimiter(20, absl::Seconds(10));
    const absl::Duration monotonic = absl::Nanoseconds(
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now().time_since_epoch())
            .count());
    int64_t suppressed = 0;
    if (limiter->Allow(monotonic, &suppressed)) {
      spdlog::warn(
          "{}: refused a call from {}: {}: {}{}", std::string(method),
          context.peer(), absl::StatusCodeToString(caller.status().code()),
          std::string(caller.status().message()),
          suppressed == 0 ? std::string()
                          : absl::StrCat(" (and ", suppressed,
                                         " more refused calls not logged)"));
    }
  }
  return caller;
}

std::optional<std::string> TokenFilePermissionWarning(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  if ((st.st_mode & S_IROTH) == 0) return std::nullopt;
  return absl::StrCat(
      "--auth-tokens ", path,
      ": the token file is readable by every local user; make it private "
      "(chmod 600 or 640)");
}

}  // namespace adjutant
