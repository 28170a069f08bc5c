#!/bin/sh
# Makes throwaway certificates for the TLS tests in DIR (created if missing):
#   ca.crt ca.key               a test CA
#   server.crt server.key       signed by it, for 127.0.0.1 and localhost
#   client.crt client.key       signed by it, for client authentication
#   other-ca.crt other-ca.key   an unrelated CA
#   other-client.crt .key       signed by the unrelated CA
# Keys are P-256 (fast to make); certificates are valid for two days.
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"

ca() {  # NAME: a self-signed CA
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.crt" -days 2 -subj "/CN=adjutant test $1" \
    2>/dev/null
}

leaf() {  # NAME CA EXTENSIONS: a certificate signed by CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" \
    -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca
ca other-ca
leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf other-client other-ca "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
