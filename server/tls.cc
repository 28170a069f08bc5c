#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace adjutant {
namespace {

absl::StatusOr<std::string> ReadPem(absl::string_view flag,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

std::unique_ptr<BIO, BioDeleter> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate in `pem`, or null.
std::unique_ptr<X509, X509Deleter> FirstCertificate(const std::string& pem) {
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Deleter> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

// The PEM texts of TlsFiles, read once and checked.
struct TlsPem {
  std::string cert;
  std::string key;
  std::string client_ca;  // empty without --tls-client-ca
};

// Reads and checks the files (see CheckTlsFiles). Null without TLS.
absl::StatusOr<std::optional<TlsPem>> LoadTlsFiles(const TlsFiles& files) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        files.cert_file.empty()
            ? "--tls-key: given without --tls-cert (both or neither)"
            : "--tls-cert: given without --tls-key (both or neither)");
  }
  if (!files.client_ca_file.empty() && files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca: requires --tls-cert and --tls-key (mutual TLS is "
        "TLS first)");
  }
  if (files.cert_file.empty()) return std::nullopt;

  TlsPem pem;
  absl::StatusOr<std::string> cert_pem = ReadPem("--tls-cert", files.cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  pem.cert = *std::move(cert_pem);
  std::unique_ptr<X509, X509Deleter> cert = FirstCertificate(pem.cert);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert: '", files.cert_file,
        "' holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  absl::StatusOr<std::string> key_pem = ReadPem("--tls-key", files.key_file);
  if (!key_pem.ok()) return key_pem.status();
  pem.key = *std::move(key_pem);
  auto key_bio = MemoryBio(pem.key);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key: '", files.key_file,
                     "' holds no unencrypted PEM private key (-----BEGIN "
                     "PRIVATE KEY-----)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key: '", files.key_file,
                     "' is not the key of the certificate in --tls-cert '",
                     files.cert_file, "'"));
  }
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem =
        ReadPem("--tls-client-ca", files.client_ca_file);
    if (!ca_pem.ok()) return ca_pem.status();
    pem.client_ca = *std::move(ca_pem);
    if (FirstCertificate(pem.client_ca) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-client-ca: '", files.client_ca_file,
          "' holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
  }
  return pem;
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files) {
  return LoadTlsFiles(files).status();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  // The credentials are built from the very bytes that were checked, so a
  // file replaced in between cannot slip past the check.
  absl::StatusOr<std::optional<TlsPem>> pem = LoadTlsFiles(files);
  if (!pem.ok()) return pem.status();
  if (!pem->has_value()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      files.client_ca_file.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_key_cert_pairs.push_back({(*pem)->key, (*pem)->cert});
  if (!files.client_ca_file.empty()) options.pem_root_certs = (*pem)->client_ca;
  return grpc::SslServerCredentials(options);
}

}  // namespace adjutant
