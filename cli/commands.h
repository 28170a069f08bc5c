// The `adjutant` command line: every RPC of adjutant.v1.JobQueue and
// adjutant.v1.Scheduler from a shell, through adjutant::Client.
//
//   adjutant [--server HOST:PORT] [--json] [--timeout D] [--token T]
//            [--tls] [--tls-ca F] [--tls-cert F --tls-key F]
//            [--tls-server-name N] COMMAND ...
//
// Commands: enqueue, dequeue, ack, nack, extend, jobs list|get|cancel|
// requeue, cron register|list|get|rm|pause|resume|preview, leader set|get,
// stats. `adjutant --help` and `adjutant COMMAND --help` describe each.
//
// Output: an aligned table (or FIELD VALUE lines for one record) by default;
// with --json one JSON document (protobuf's JSON mapping with the proto
// field names; bytes are base64), so scripts can parse it. Listing commands
// page through everything and print one document.
//
// Exit codes: 0 success; 1 the server answered an error (printed as
// "error: CODE: message"); 2 bad arguments (printed with the option at
// fault); --help exits 0.
#ifndef ADJUTANT_CLI_COMMANDS_H_
#define ADJUTANT_CLI_COMMANDS_H_

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace adjutant {
namespace cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;

// The server used when neither --server nor $ADJUTANT_SERVER names one.
inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

// Runs one command line. `args` excludes the program name. `env_server` is
// $ADJUTANT_SERVER (nullopt when unset); --server wins over it. Payloads
// read from stdin come from `in`; results go to `out`, errors to `err`.
// Returns the process exit code. Thread-compatible: touches no global state
// beyond gRPC's.
int RunCli(const std::vector<std::string>& args,
           const std::optional<std::string>& env_server, std::istream& in,
           std::ostream& out, std::ostream& err);

// The environment variables the command line reads; each is the default of
// the option named beside it, which wins over it. nullopt: unset.
struct CliEnvironment {
  std::optional<std::string> server;           // ADJUTANT_SERVER, --server
  std::optional<std::string> token;            // ADJUTANT_TOKEN, --token
  std::optional<std::string> tls_ca;           // ADJUTANT_TLS_CA, --tls-ca
  std::optional<std::string> tls_cert;         // ADJUTANT_TLS_CERT
  std::optional<std::string> tls_key;          // ADJUTANT_TLS_KEY
  std::optional<std::string> tls_server_name;  // ADJUTANT_TLS_SERVER_NAME
};

// Reads CliEnvironment's variables from the process environment.
CliEnvironment CliEnvironmentFromProcess();

// As above, with every variable of `env`. The token is never printed, not
// even in an error.
int RunCli(const std::vector<std::string>& args, const CliEnvironment& env,
           std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace cli
}  // namespace adjutant

#endif  // ADJUTANT_CLI_COMMANDS_H_
