#!/usr/bin/env bash
# TLS between bf-client and bf-serve (issue 14, docs/security.md).
#   split_tls.sh BIN_DIR WORK_DIR
# Certificates are made here with the openssl CLI, in WORK_DIR (never committed).
# - a valid client (mutual TLS, allowed) gets the same logits as over plain TCP
# - wrong CA, server name mismatch, no client certificate, a certificate the
#   allow list does not let use a split: refused with a clear message
# - TLS client vs plain server and plain client vs TLS server fail cleanly
# - the idle timeout and the handshake timeout hold over TLS
# - a non-loopback listen address without TLS is refused unless --insecure
# Only 127.0.0.1 carries traffic; 0.0.0.0 is bound (never connected to) for
# the --insecure case.
set -euo pipefail
BIN=$1
W=$2
rm -rf "$W"
mkdir -p "$W"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
command -v openssl >/dev/null || { echo "SKIP: no openssl CLI (tools/install-deps installs it)"; exit 77; }
SERVE_ARGS=(--deploy "$W/deploy")
. "$(dirname "$0")/serve_lib.sh"
expect_fail() { # name pattern cmd... : cmd must fail and its stderr match pattern
  local name=$1 pat=$2; shift 2
  if "$@" >"$W/$name.out" 2>"$W/$name.err"; then fail "$name: succeeded"; fi
  grep -q -- "$pat" "$W/$name.err" || { cat "$W/$name.err"; fail "$name: message does not say '$pat'"; }
  echo "$name: $(grep -m1 "error" "$W/$name.err")"
}

# --- certificates: a CA, a server cert for 127.0.0.1/localhost, two clients, a stranger CA
P="$W/pki"
mkdir -p "$P"
ossl() { openssl "$@" 2>>"$P/openssl.log" || { cat "$P/openssl.log"; fail "openssl $1 failed"; }; }
mkca() { ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$2" \
  -keyout "$P/$1.key" -out "$P/$1.pem"; }
mkcert() { # name CN ca ext
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$P/$1.key" -out "$P/$1.csr"
  printf '%s\n' "$4" >"$P/$1.ext"
  ossl x509 -req -in "$P/$1.csr" -CA "$P/$3.pem" -CAkey "$P/$3.key" -CAcreateserial -days 2 \
    -extfile "$P/$1.ext" -out "$P/$1.pem"
}
mkca ca "bf test CA"
mkca stranger "another CA"
mkcert server bf-serve ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
mkcert dev-a dev-a ca "extendedKeyUsage=clientAuth"
mkcert dev-b dev-b ca "extendedKeyUsage=clientAuth"
mkcert dev-c dev-c ca "extendedKeyUsage=clientAuth"
FP_B=$(openssl x509 -in "$P/dev-b.pem" -noout -fingerprint -sha256 | cut -d= -f2)
# dev-a by name, dev-b by fingerprint; dev-c (same CA) is not listed
printf '# test allow list\ncn:dev-a 2\nsha256:%s *\n' "$FP_B" >"$P/allow"

# --- a model (one split: the sanitizer build exports and profiles slowly), images
"$BIN/split_testgen" model "$W/m2.safetensors" 10 2 4 11
"$BIN/split_testgen" images "$W/img" 2 80 500
"$BIN/bf-export" --checkpoint "$W/m2.safetensors" --out-dir "$W/deploy" --input-size 64 >/dev/null
IMGS=("$W"/img/*.png)

TLS_SRV=(--tls-cert "$P/server.pem" --tls-key "$P/server.key")
start_server PLAIN --listen 127.0.0.1:0
start_server MTLS --listen 127.0.0.1:0 "${TLS_SRV[@]}" --tls-client-ca "$P/ca.pem" --tls-allow "$P/allow" \
  --verbose --frame-timeout-ms 1000 --idle-timeout-ms 1500
C=("$BIN/bf-client" --threads 1 --deploy "$W/deploy")
A=(--tls-ca "$P/ca.pem" --tls-cert "$P/dev-a.pem" --tls-key "$P/dev-a.key")
# the top1 and top5 fields of each RESULT line, compared byte for byte
results() { grep '^RESULT' "$1" | sed 's/.* \(top1=[^ ]*\) .* \(top5=[^ ]*\) .*/\1 \2/'; }

# --- a valid client: the same logits, byte for byte, as over plain TCP
"${C[@]}" --server "127.0.0.1:$PLAIN_PORT" --split 2 "${IMGS[@]}" >"$W/plain.txt"
"${C[@]}" --server "127.0.0.1:$MTLS_PORT" "${A[@]}" --split 2 "${IMGS[@]}" >"$W/tls.txt"
[ "$(results "$W/tls.txt" | wc -l)" = 2 ] || fail "over TLS: expected 2 results"
cmp <(results "$W/plain.txt") <(results "$W/tls.txt") || fail "TLS results differ from plain TCP"
grep -q 'tls=1' "$W/tls.txt" && grep -q 'tls=0' "$W/plain.txt" || fail "SUMMARY tls= field"
# cloud-only (INFER_IMAGE), to the name localhost (DNS SAN)
"${C[@]}" --server "localhost:$MTLS_PORT" "${A[@]}" --cloud-only "${IMGS[0]}" >"$W/tls_cloud.txt"
"${C[@]}" --server "127.0.0.1:$PLAIN_PORT" --cloud-only "${IMGS[0]}" >"$W/plain_cloud.txt"
cmp <(results "$W/plain_cloud.txt") <(results "$W/tls_cloud.txt") || fail "cloud-only over TLS differs"
# the client allowed by its certificate's fingerprint
"${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/ca.pem" --tls-cert "$P/dev-b.pem" --tls-key "$P/dev-b.key" \
  --split 2 "${IMGS[@]}" >"$W/tls_b.txt"
cmp <(results "$W/plain.txt") <(results "$W/tls_b.txt") || fail "dev-b results differ"
echo "valid clients: same logits as plain TCP (features, cloud-only; cn and sha256 rules)"

# --- refusals
expect_fail wrong_ca "did not verify against the CA file .*stranger.pem" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/stranger.pem" --tls-cert "$P/dev-a.pem" \
  --tls-key "$P/dev-a.key" --split 2 "${IMGS[0]}"
expect_fail wrong_name "did not verify.*hostname mismatch" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" "${A[@]}" --tls-server-name other.example --split 2 "${IMGS[0]}"
expect_fail no_client_cert "certificate required" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/ca.pem" --split 2 "${IMGS[0]}"
expect_fail not_allowed "FORBIDDEN.*CN=dev-c.*may not use split-2" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/ca.pem" --tls-cert "$P/dev-c.pem" \
  --tls-key "$P/dev-c.key" --split 2 "${IMGS[0]}"
expect_fail client_stranger_cert "certificate required\|unknown ca\|alert" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/ca.pem" --tls-cert "$P/stranger.pem" \
  --tls-key "$P/stranger.key" --split 2 "${IMGS[0]}"
expect_fail tls_to_plain "TLS handshake with 127.0.0.1 failed: .*does not speak TLS" \
  "${C[@]}" --server "127.0.0.1:$PLAIN_PORT" "${A[@]}" --split 2 "${IMGS[0]}"
expect_fail plain_to_tls "BAD_FRAME (code 1): this server speaks TLS only" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --split 2 "${IMGS[0]}"
expect_fail key_mismatch "dev-b.key (for the certificate .*dev-a.pem): key values mismatch" \
  "${C[@]}" --server "127.0.0.1:$MTLS_PORT" --tls-ca "$P/ca.pem" --tls-cert "$P/dev-a.pem" \
  --tls-key "$P/dev-b.key" --split 2 "${IMGS[0]}"
grep -q "client certificate did not verify\|certificate required\|peer did not return a certificate" "$W/MTLS.log" ||
  { cat "$W/MTLS.log"; fail "server log does not name the failed client handshakes"; }

# --- timeouts over TLS: an idle TLS client gets ERROR TIMEOUT after the idle
# timeout (1.5 s); a TCP client that never starts the handshake is dropped
# after the frame timeout (1 s)
t0=$(date +%s%N)
timeout 10 openssl s_client -quiet -connect "127.0.0.1:$MTLS_PORT" -CAfile "$P/ca.pem" \
  -cert "$P/dev-a.pem" -key "$P/dev-a.key" < <(sleep 8) >"$W/idle.out" 2>"$W/idle.err" || true
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q "BFLY" "$W/idle.out" && grep -aq "idle timeout" "$W/idle.out" || { cat "$W/idle.err"; fail "no ERROR TIMEOUT over TLS"; }
[ "$ms" -lt 6000 ] || fail "idle TLS connection held ${ms} ms (idle timeout 1500 ms)"
exec 3<>"/dev/tcp/127.0.0.1/$MTLS_PORT"
sleep 2
exec 3<&-
grep -q "TLS handshake with the client timed out" "$W/MTLS.log" ||
  { cat "$W/MTLS.log"; fail "handshake timeout not logged"; }
echo "timeouts: idle TLS client closed after ${ms} ms with ERROR TIMEOUT; stalled handshake dropped"
# the server is still serving
"${C[@]}" --server "127.0.0.1:$MTLS_PORT" "${A[@]}" --split 2 "${IMGS[0]}" >/dev/null

# --- server-side configuration errors and the non-loopback rule
S=("$BIN/bf-serve" --deploy "$W/deploy" --threads 1)
expect_fail nonloopback "not a loopback address" "${S[@]}" --listen 0.0.0.0:0
grep -q -- "--insecure" "$W/nonloopback.err" || fail "refusal does not name --insecure"
expect_fail allow_without_ca "needs --tls-client-ca" "${S[@]}" --listen 127.0.0.1:0 "${TLS_SRV[@]}" \
  --tls-allow "$P/allow"
printf 'cn:dev-a 2\ncn:dev-b 2,7\n' >"$P/allow_bad"
expect_fail allow_unknown_split "allow_bad:2: split 7 is not served here" "${S[@]}" --listen 127.0.0.1:0 \
  "${TLS_SRV[@]}" --tls-client-ca "$P/ca.pem" --tls-allow "$P/allow_bad"
printf 'dev-a 2\n' >"$P/allow_bad2"
expect_fail allow_syntax "allow_bad2:1: identity 'dev-a' must start with cn: or sha256:" "${S[@]}" \
  --listen 127.0.0.1:0 "${TLS_SRV[@]}" --tls-client-ca "$P/ca.pem" --tls-allow "$P/allow_bad2"
expect_fail cert_missing "server certificate .*nope.pem: No such file or directory" "${S[@]}" --listen 127.0.0.1:0 \
  --tls-cert "$P/nope.pem" --tls-key "$P/server.key"
# --insecure, and TLS, lift the refusal: shown with a missing deploy directory,
# so that bf-serve stops at the next step and never binds 0.0.0.0
S0=("$BIN/bf-serve" --deploy "$W/nodeploy" --threads 1)
expect_fail insecure "cannot open deploy directory" "${S0[@]}" --listen 0.0.0.0:0 --insecure
grep -q "clear text" "$W/insecure.err" && ! grep -q "loopback" "$W/insecure.err" ||
  { cat "$W/insecure.err"; fail "--insecure: refused, or no warning"; }
expect_fail tls_any "cannot open deploy directory" "${S0[@]}" --listen 0.0.0.0:0 "${TLS_SRV[@]}"
! grep -q "loopback" "$W/tls_any.err" || fail "TLS on 0.0.0.0 refused"
echo "OK"
