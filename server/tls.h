// TLS for adjutantd: the server's certificate and key, and optionally the CA
// that client certificates must chain to (mutual TLS), read from PEM files
// (--tls-cert, --tls-key, --tls-client-ca) and checked before the server
// starts, so that a bad file is a clear error rather than a failed bind.
#ifndef ADJUTANT_SERVER_TLS_H_
#define ADJUTANT_SERVER_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace adjutant {

struct TlsFiles {
  // PEM certificate chain the server presents (--tls-cert). "": no TLS.
  std::string cert_file;
  // PEM private key of that certificate (--tls-key). Set with cert_file.
  std::string key_file;
  // PEM CA certificate(s) that client certificates must chain to
  // (--tls-client-ca). "": clients are not asked for a certificate.
  // Requires cert_file.
  std::string client_ca_file;
};

// Checks the files without starting anything: cert and key given together,
// a client CA only with them, each file readable and holding what it
// should (certificates, a private key), and the key matching the
// certificate. INVALID_ARGUMENT naming the flag and the reason. OK when no
// file is given (plaintext).
absl::Status CheckTlsFiles(const TlsFiles& files);

// Server credentials for `files`: TLS with the certificate and key, and with
// a client CA, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
// insecure (plaintext) credentials when no file is given. Reads each file
// once and builds the credentials from the bytes it checked as
// CheckTlsFiles does; returns the same errors.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_TLS_H_
