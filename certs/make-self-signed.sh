#!/usr/bin/env bash
# Makes a self-signed TLS certificate for localhost / 127.0.0.1 / ::1 (subjectAltName), for
# http.tls and sip.tls in development: server.key.pem (EC P-256) and server.cert.pem.
# Idempotent: an existing pair is kept when it still matches and is valid for 7 more days.
# Usage: certs/make-self-signed.sh [output-dir]   (default: the directory of this script)
#        FORCE=1 certs/make-self-signed.sh        (make a new pair anyway)
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")" && pwd)}"
days="${DAYS:-825}"
key="$dir/server.key.pem"
cert="$dir/server.cert.pem"
command -v openssl >/dev/null || { echo "make-self-signed: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir"

if [ "${FORCE:-0}" != 1 ] && [ -s "$key" ] && [ -s "$cert" ] \
  && openssl x509 -in "$cert" -noout -checkend 604800 >/dev/null 2>&1 \
  && [ "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" = "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]; then
  echo "make-self-signed: keeping $cert (valid, matches $key)"
  exit 0
fi

tmp="$(mktemp -d "$dir/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days "$days" -sha256 \
  -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=serverAuth"
chmod 600 "$tmp/key.pem"
chmod 644 "$tmp/cert.pem"
mv -f "$tmp/key.pem" "$key"
mv -f "$tmp/cert.pem" "$cert"
echo "make-self-signed: wrote $key and $cert (CN=localhost, SAN localhost, 127.0.0.1, ::1; $days days)"
