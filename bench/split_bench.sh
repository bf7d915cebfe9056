#!/usr/bin/env bash
# End-to-end latency of split inference vs cloud-only vs local on loopback,
# with the uplink paced to Table III's rates (3G 1.1, 4G 5.85, Wi-Fi 18.88 Mbit/s),
# each networked row over plain TCP and over TLS 1.3; then what TLS costs
# (handshake, per-request wire time) for one split (TLS_SPLIT, RB4 8-bit).
#   bench/split_bench.sh [BUILD_DIR]   (env: SIZE=224 REPEAT=3 SPLITS="1:1 8:5 14:10" THREADS=1
#                                       TLS_SPLIT=4:2 TLS_REPEAT=20 TLS_CONNECTS=20 OUT=docs/bench-split.md)
# Random-weight models (accuracy is not measured here), CPU on both sides.
# Needs the openssl CLI (test certificates, made in a temporary directory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build}/bin
SIZE=${SIZE:-224}
REPEAT=${REPEAT:-3}
SPLITS=${SPLITS:-"1:1 8:5 14:10"}
THREADS=${THREADS:-1}
OUT=${OUT:-$ROOT/docs/bench-split.md}
TLS_SPLIT=${TLS_SPLIT:-4:2}
TLS_REPEAT=${TLS_REPEAT:-20}
TLS_CONNECTS=${TLS_CONNECTS:-20}
command -v openssl >/dev/null || { echo "split_bench: needs the openssl CLI (tools/install-deps)" >&2; exit 1; }
W=$(mktemp -d /tmp/bf-split-bench.XXXXXX)
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive
SPIDS=()
cleanup() { for p in "${SPIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# test PKI (docs/security.md's recipe): a CA, a server certificate for 127.0.0.1, a client certificate
P=$W/pki
mkdir -p "$P"
ossl() { openssl "$@" 2>>"$P/log" || { cat "$P/log" >&2; exit 1; }; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" -keyout "$P/ca.key" -out "$P/ca.pem"
for n in server client; do
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" -keyout "$P/$n.key" -out "$P/$n.csr"
  [ $n = server ] && echo "subjectAltName=IP:127.0.0.1" >"$P/$n.ext" || echo "extendedKeyUsage=clientAuth" >"$P/$n.ext"
  ossl x509 -req -in "$P/$n.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial -days 1 -extfile "$P/$n.ext" -out "$P/$n.pem"
done
start_server() { # deploy portfile log args...
  local d=$1 pf=$2 log=$3; shift 3
  "$B/bf-serve" --deploy "$d" --listen 127.0.0.1:0 --port-file "$pf" --threads "$THREADS" "$@" >"$log" 2>&1 &
  SPIDS+=($!)
  for _ in $(seq 1200); do [ -s "$pf" ] && break; sleep 0.1; done
  [ -s "$pf" ] || { cat "$log" >&2; exit 1; }
}
TLS_SRV=(--tls-cert "$P/server.pem" --tls-key "$P/server.key")
TLS_CLI=(--tls-ca "$P/ca.pem")

CK=()
for s in $SPLITS; do
  k=${s%%:*} r=${s##*:}
  "$B/bf-init" --classes 100 --split-after "$k" --dr "$r" --seed "$k" --out "$W/m$k.safetensors" >/dev/null
  CK+=(--checkpoint "$W/m$k.safetensors")
done
"$B/bf-export" "${CK[@]}" --out-dir "$W/deploy" --input-size "$SIZE" >/dev/null
"$B/split_testgen" images "$W/img" 2 $((SIZE * 8 / 7 + 16)) 1 2>/dev/null || {
  echo "split_bench: needs split_testgen (build the tests)" >&2; exit 1; }
IMGS=("$W"/img/*.png)
start_server "$W/deploy" "$W/port" "$W/serve.log"
start_server "$W/deploy" "$W/port_tls" "$W/serve_tls.log" "${TLS_SRV[@]}"
C=("$B/bf-client" --deploy "$W/deploy" --server "127.0.0.1:$(cat "$W/port")" --threads "$THREADS")
CT=("$B/bf-client" --deploy "$W/deploy" --server "127.0.0.1:$(cat "$W/port_tls")" --threads "$THREADS" "${TLS_CLI[@]}")
# warm-up: loads each server's whole model (cloud-only) and touches every half
warm() {
  "$@" --cloud-only "${IMGS[0]}" >/dev/null
  for s in $SPLITS; do "$@" --split "${s%%:*}" "${IMGS[0]}" >/dev/null; done
}
warm "${C[@]}"
warm "${CT[@]}"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" | tail -1; }
run() { "${C[@]}" "$@" --repeat "$REPEAT" "${IMGS[@]}" | grep '^SUMMARY'; }
run_tls() { "${CT[@]}" "$@" --repeat "$REPEAT" "${IMGS[@]}" | grep '^SUMMARY'; }

LOCAL=$(run --local)
LOCAL_MS=$(echo "$LOCAL" | field total_ms_median)
{
  echo "| uplink | mode | bytes/image | device ms | upload ms | server ms | total ms (median) | vs cloud-only | vs local | TLS total ms (median) | TLS / plain |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$W/table"
for net in "3G:1.1" "4G:5.85" "Wi-Fi:18.88"; do
  name=${net%%:*} mbps=${net##*:}
  CLOUD=$(run --cloud-only --uplink-mbps "$mbps")
  CLOUD_MS=$(echo "$CLOUD" | field total_ms_median)
  # each networked row: plain|TLS summaries (local has no connection)
  rows=("cloud-only|$CLOUD|$(run_tls --cloud-only --uplink-mbps "$mbps")")
  for s in $SPLITS; do
    a=(--split "${s%%:*}" --uplink-mbps "$mbps")
    rows+=("split RB${s%%:*} (D_r ${s##*:})|$(run "${a[@]}")|$(run_tls "${a[@]}")")
  done
  rows+=("auto|$(run --split auto --uplink-mbps "$mbps")|$(run_tls --split auto --uplink-mbps "$mbps")")
  rows+=("local|$LOCAL|")
  for row in "${rows[@]}"; do
    mode=${row%%|*} rest=${row#*|}
    sum=${rest%%|*} tsum=${rest#*|}
    t=$(echo "$sum" | field total_ms_median)
    tt=- ratio=-
    if [ -n "$tsum" ]; then
      tt=$(echo "$tsum" | field total_ms_median)
      ratio=$(printf "%.2fx" "$(echo "$tt / $t" | bc -l)")
    fi
    printf "| %s %s Mbps | %s | %s | %s | %s | %s | %s | %.2fx | %.2fx | %s | %s |\n" "$name" "$mbps" "$mode" \
      "$(echo "$sum" | field bytes_mean)" "$(echo "$sum" | field device_ms_mean)" "$(echo "$sum" | field upload_ms_mean)" \
      "$(echo "$sum" | field server_ms_mean)" "$t" "$(echo "$CLOUD_MS / $t" | bc -l)" "$(echo "$LOCAL_MS / $t" | bc -l)" \
      "$tt" "$ratio" >>"$W/table"
  done
done
cat "$W/table"

# --- what TLS costs: one split, 8-bit features, no pacing (loopback speed)
tk=${TLS_SPLIT%%:*} tr=${TLS_SPLIT##*:}
"$B/bf-init" --classes 100 --split-after "$tk" --dr "$tr" --seed "$tk" --out "$W/tls_m.safetensors" >/dev/null
"$B/bf-export" --checkpoint "$W/tls_m.safetensors" --out-dir "$W/deploy_tls" --input-size "$SIZE" >/dev/null
start_server "$W/deploy_tls" "$W/port4" "$W/serve4.log"
start_server "$W/deploy_tls" "$W/port4_tls" "$W/serve4_tls.log" "${TLS_SRV[@]}"
start_server "$W/deploy_tls" "$W/port4_mtls" "$W/serve4_mtls.log" "${TLS_SRV[@]}" --tls-client-ca "$P/ca.pem"
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# wire ms of a request: what bf-client waited for beyond its own work and the
# server's (total - decode - device - encode - server queue+compute)
wire() { grep '^RESULT' | sed 's/.* prep_ms=\([^ ]*\) device_ms=\([^ ]*\) encode_ms=\([^ ]*\) upload_ms=[^ ]* server_ms=\([^ ]*\) total_ms=\([^ ]*\) .*/\5 - \1 - \2 - \3 - \4/' | bc -l; }
{
  echo "| transport | handshake: connect_ms (median of $TLS_CONNECTS) | wire ms per request (median of $((TLS_REPEAT * ${#IMGS[@]}))) | total ms per request (median) | frame bytes |"
  echo "|---|---:|---:|---:|---:|"
} >"$W/tls_table"
for tr_name in "plain TCP:port4:" "TLS 1.3:port4_tls:${TLS_CLI[*]}" \
               "TLS 1.3, mutual:port4_mtls:${TLS_CLI[*]} --tls-cert $P/client.pem --tls-key $P/client.key"; do
  IFS=: read -r label pf extra <<<"$tr_name"
  # shellcheck disable=SC2206
  CC=("$B/bf-client" --deploy "$W/deploy_tls" --server "127.0.0.1:$(cat "$W/$pf")" --threads "$THREADS" --split "$tk" $extra)
  "${CC[@]}" "${IMGS[0]}" >/dev/null # warm-up
  hs=$(for _ in $(seq "$TLS_CONNECTS"); do "${CC[@]}" "${IMGS[0]}" | grep '^SUMMARY' | field connect_ms; done | median)
  "${CC[@]}" --repeat "$TLS_REPEAT" "${IMGS[@]}" >"$W/tls_run.txt"
  wm=$(wire <"$W/tls_run.txt" | median)
  tm=$(grep '^RESULT' "$W/tls_run.txt" | sed 's/.* total_ms=\([^ ]*\) .*/\1/' | median)
  printf "| %s | %.3f | %.3f | %.2f | %s |\n" "$label" "$hs" "$wm" "$tm" \
    "$(grep '^SUMMARY' "$W/tls_run.txt" | field bytes_mean)" >>"$W/tls_table"
done
cat "$W/tls_table"
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
# bench/uplink_bench.sh's section (measured uplinks) and bench/serve_bench.sh's are kept as they are
KEEP=
if [ -f "$OUT" ]; then KEEP=$(sed -n '/^## Measured uplinks\|^<!-- serve_bench:/,$p' "$OUT"); fi
{
  echo "# Split inference benchmark (loopback)"
  echo
  echo "Generated by \`bench/split_bench.sh\` on $(date -u +%Y-%m-%d). Command:"
  echo
  echo '```'
  echo "SIZE=$SIZE REPEAT=$REPEAT SPLITS=\"$SPLITS\" THREADS=$THREADS TLS_SPLIT=$TLS_SPLIT TLS_REPEAT=$TLS_REPEAT TLS_CONNECTS=$TLS_CONNECTS bench/split_bench.sh build"
  echo '```'
  echo
  echo "- Machine: $CPU, $(nproc) cores; client and server are both on this machine, CPU backend,"
  echo "  $THREADS compute thread(s) each, over 127.0.0.1. The uplink is *emulated* by pacing the"
  echo "  client's socket (\`--uplink-mbps\`, Table III rates); there is no radio, no RTT, no loss, and the"
  echo "  reply comes back at loopback speed. The 'server' is no faster than the 'device' here, unlike"
  echo "  the paper's TX2 vs GTX 1080 Ti (about 30x), so split points deep in the network are not"
  echo "  penalised for running on a slow device."
  echo "- Models: ResNet-50 + butterfly, random weights (bf-init), 100 classes, input ${SIZE}x${SIZE};"
  echo "  split points and D_r as in the paper's accuracy table (RB1-3: 1, RB4-7: 2, RB8-13: 5, RB14-16: 10)."
  echo "  Features: uint8 per-tensor, raw. Cloud-only sends the RGB8 input (${SIZE}x${SIZE}x3 bytes)."
  echo "- $REPEAT runs of each of 2 images per row; 'total' is the median wall-clock time per image in"
  echo "  bf-client (decode + device half + encode + paced upload + server + reply). 'vs cloud-only' and"
  echo "  'vs local' are speedups (their total / this row's total; > 1 = this row is faster)."
  echo "- Timings on a shared 2-core machine are noisy (other jobs ran at the same time); treat"
  echo "  differences below ~20% as noise. The upload column is what the pacing makes exact."
  echo "- TLS columns: the same row against a second server with TLS 1.3 (server certificate, ECDSA"
  echo "  P-256, verified by the client; \`bf-client --tls-ca\`), same models, same images. The pacing"
  echo "  counts frame bytes, not TLS record overhead (about 22 bytes per 1 KiB record)."
  echo
  cat "$W/table"
  echo
  echo "## What TLS costs (split RB$tk, D_r $tr, uint8 per-tensor features, no pacing)"
  echo
  echo "Three servers of the same model on 127.0.0.1: plain TCP, TLS 1.3 (server certificate), TLS 1.3"
  echo "with mutual authentication (client certificate). 'handshake' is bf-client's connect_ms (TCP"
  echo "connect plus the TLS handshake, certificate verification included), the median over"
  echo "$TLS_CONNECTS fresh clients. 'wire ms' is, per request, bf-client's total time minus image decode,"
  echo "device half, encoding and the server's own queue+compute time: sending the frame, the reply"
  echo "and the framing on both sides, i.e. where TLS adds its encryption and records."
  echo
  cat "$W/tls_table"
  echo
  echo "Reading: the upload time of cloud-only (${SIZE}x${SIZE}x3 bytes) dominates on 3G/4G, and the"
  echo "butterfly features (a few hundred bytes to a few KB) make it negligible; what remains is"
  echo "compute, which on this machine is the same wherever the split is."
  if [ -n "$KEEP" ]; then printf '\n%s\n' "$KEEP"; fi
} >"$OUT"
echo "wrote $OUT"
