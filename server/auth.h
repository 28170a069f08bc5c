// Access control for the adjutant.v1 services: bearer tokens, each with a
// name and a set of roles, loaded from a file (adjutantd --auth-tokens), and
// the role each RPC needs.
//
// The token file has one token a line, written
//
//   NAME ROLE[,ROLE...] TOKEN      # a comment
//
// NAME ([A-Za-z0-9._-], at most 64 bytes) is what logs show instead of the
// token. TOKEN is 16 to 4096 printable ASCII characters without spaces or
// '#' (a '#' anywhere starts a comment). Blank lines are ignored. Names and
// tokens are unique. The file is read once, at start: changing it takes a
// restart.
//
// Who may call what (admin may call everything):
//
//   | RPC                                         | roles                  |
//   |---------------------------------------------|------------------------|
//   | JobQueue.Enqueue, EnqueueBatch              | producer, admin        |
//   | JobQueue.Dequeue, Ack, Nack, ExtendLease    | worker, admin          |
//   | Scheduler.SetLeadership                     | leader, admin          |
//   | JobQueue.CancelJob, RequeueJob              | admin                  |
//   | Scheduler.RegisterCron, UnregisterCron      | admin                  |
//   | JobQueue.GetJob, ListJobs, GetStats         | any valid token (read) |
//   | Scheduler.GetCron, ListCrons, PreviewCron,  | any valid token (read) |
//   |   GetLeadership                             |                        |
//   | any other method of these services          | admin                  |
//
// Reads are open to every valid token because every role needs some of them
// (a producer follows its job with GetJob, an elector reads GetLeadership)
// and none changes anything. grpc.health.v1.Health and server reflection are
// not adjutant.v1 services and stay open to everyone.
//
// A call without a valid token ("authorization: Bearer TOKEN" metadata) is
// UNAUTHENTICATED; a valid token without a role the RPC needs is
// PERMISSION_DENIED. Tokens are compared in constant time (SHA-256 digests
// of every known token compared byte by byte, without an early exit) and
// never logged nor put in an error message.
#ifndef ADJUTANT_SERVER_AUTH_H_
#define ADJUTANT_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace adjutant {

enum class Role : uint8_t {
  kProducer = 1 << 0,  // Enqueue, EnqueueBatch
  kWorker = 1 << 1,    // Dequeue, Ack, Nack, ExtendLease
  kLeader = 1 << 2,    // SetLeadership
  kAdmin = 1 << 3,     // everything
};

// "producer", "worker", "leader", "admin".
absl::string_view RoleName(Role role);
// The role named `name` (exactly as RoleName writes it); nullopt if none.
std::optional<Role> ParseRole(absl::string_view name);

// A set of roles. A value type.
class RoleSet {
 public:
  constexpr RoleSet() = default;
  constexpr RoleSet(std::initializer_list<Role> roles) {
    for (Role r : roles) bits_ |= static_cast<uint8_t>(r);
  }
  // Every role.
  static constexpr RoleSet All() {
    return {Role::kProducer, Role::kWorker, Role::kLeader, Role::kAdmin};
  }

  bool Contains(Role role) const {
    return (bits_ & static_cast<uint8_t>(role)) != 0;
  }
  bool Intersects(RoleSet other) const { return (bits_ & other.bits_) != 0; }
  bool empty() const { return bits_ == 0; }
  void Add(Role role) { bits_ |= static_cast<uint8_t>(role); }
  // E.g. "producer,worker" (in the order of Role); "" when empty.
  std::string ToString() const;

  friend bool operator==(RoleSet a, RoleSet b) { return a.bits_ == b.bits_; }
  friend bool operator!=(RoleSet a, RoleSet b) { return a.bits_ != b.bits_; }

 private:
  uint8_t bits_ = 0;
};

// The roles allowed to call `method`, a full proto method name such as
// "adjutant.v1.JobQueue.Enqueue" (MethodDescriptor::full_name()), per the
// table above. Always contains admin; a method the table does not know
// allows admin only.
RoleSet RolesAllowed(absl::string_view method);

// Who made a call, once authorized.
struct Caller {
  // The token's NAME; "" when the server does not check tokens.
  std::string name;
  // The token's roles; every role when the server does not check tokens.
  RoleSet roles = RoleSet::All();
};

// The tokens of a token file, and the check of each call against them.
// Immutable once built: thread-safe.
class Authorizer {
 public:
  struct Token {
    std::string name;
    RoleSet roles;
    std::string token;
  };

  // Parses a token file's text. `source` (the file's path) prefixes every
  // error: INVALID_ARGUMENT "SOURCE:LINE: reason" for a line with fewer or
  // more than three fields, a bad name, an unknown or empty role, a token
  // too short, too long or with a character outside printable ASCII, a
  // duplicate name or token (the error names both lines, never the token);
  // "SOURCE: no tokens" for a file without any.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Parse(
      absl::string_view text, absl::string_view source);
  // Reads and parses the file at `path`; INVALID_ARGUMENT naming the file if
  // it cannot be read.
  static absl::StatusOr<std::unique_ptr<Authorizer>> FromFile(
      const std::string& path);
  // Built from `tokens` (for tests); REQUIRES: names and tokens unique.
  explicit Authorizer(const std::vector<Token>& tokens);

  // Checks the call's "authorization" metadata against the tokens and
  // `method`'s roles: the caller, UNAUTHENTICATED (no, several or a
  // malformed authorization entry, or an unknown token) or
  // PERMISSION_DENIED (naming the caller, its roles and the roles needed).
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& context,
                                   absl::string_view method) const;
  // The same check on client metadata as gRPC hands it to the server.
  absl::StatusOr<Caller> AuthorizeMetadata(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
      absl::string_view method) const;

  // The tokens' names, in file order (for the start-up log line).
  std::vector<std::string> names() const;

 private:
  struct Entry {
    std::string name;
    RoleSet roles;
    std::array<uint8_t, 32> digest;  // SHA-256 of the token
  };
  // The entry whose token is `token`, or null; takes the same time whatever
  // `token` is and whichever entry matches.
  const Entry* Find(absl::string_view token) const;

  std::vector<Entry> entries_;
};

// What each RPC handler calls first, before validating anything: with no
// authorizer (tokens not checked) every call is allowed as an anonymous
// caller with every role; otherwise authorizer->Authorize(). A refusal is
// logged (method, peer address and reason; never the token; at most 20
// refusals per 10 s, then how many were not logged) and returned for the
// handler to finish the call with.
absl::StatusOr<Caller> AuthorizeCall(const Authorizer* authorizer,
                                     const grpc::CallbackServerContext& context,
                                     absl::string_view method);

// A warning for a token file whose permissions let any local user read it
// (mode o+r), or nullopt. OK if the file cannot be stat'ed (FromFile says
// why).
std::optional<std::string> TokenFilePermissionWarning(const std::string& path);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_AUTH_H_
