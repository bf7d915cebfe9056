#!/usr/bin/env bash
# Measured uplinks: bf-client and bf-serve in two network namespaces joined by
# a veth pair, the device's egress (the uplink) shaped with tc's tbf at each
# Table III rate, against the search's cost model (selection.h: latency =
# TM + F*8/t_u + TC, evaluated by search_selcost, which links that code).
#   bench/uplink_bench.sh [BUILD_DIR]
#   env: SIZE=224 REPEAT=5 (runs of each of 2 images per row) SPLITS="1:1 8:5 14:10"
#        BURST=1600 (tbf bucket, bytes; >= one full Ethernet frame) OUT=(table file; default: none)
# Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) for `ip netns`; where the
# namespaces cannot be made it prints SKIP and exits 77. Addresses exist only
# inside the two namespaces (10.203.0.1/30 server, 10.203.0.2/30 device);
# nothing is sent to any other address. The namespaces are removed on exit.
# The netem qdisc is not available here, so no delay is added to the link;
# the model gets this link's RTT instead: the per-request residual measured
# unshaped (RTT + reply + per-request overhead) is added to its latency.
# Each row: an unshaped run (the profile: TM, TC, F) right before the shaped
# one, as the load of a shared machine drifts. Table: docs/bench-split.md
# ("Measured uplinks").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)/bin
SIZE=${SIZE:-224}
REPEAT=${REPEAT:-5}
SPLITS=${SPLITS:-"1:1 8:5 14:10"}
BURST=${BURST:-1600}
OUT=${OUT:-}
for t in bf-init bf-export bf-serve bf-client split_testgen search_selcost; do
  [ -x "$B/$t" ] || { echo "uplink_bench: $B/$t not found (build the tests: tools/build)" >&2; exit 1; }
done
for t in ip tc bc; do
  command -v "$t" >/dev/null || { echo "uplink_bench: SKIP: $t not found"; exit 77; }
done

NS_D=bfub-dev-$$ NS_S=bfub-srv-$$ V_D=bfubd$$ V_S=bfubs$$
W=$(mktemp -d /tmp/bf-uplink-bench.XXXXXX)
SPID=
cleanup() {
  [ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  ip netns del "$NS_D" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! ip netns add "$NS_D" 2>"$W/err" || ! ip netns add "$NS_S" 2>>"$W/err"; then
  echo "uplink_bench: SKIP: cannot create network namespaces ($(head -1 "$W/err")); run as root"
  exit 77
fi
if ! ip link add "$V_D" netns "$NS_D" type veth peer name "$V_S" netns "$NS_S" 2>"$W/err"; then
  echo "uplink_bench: SKIP: cannot create a veth pair ($(head -1 "$W/err"))"
  exit 77
fi
ip -n "$NS_D" addr add 10.203.0.2/30 dev "$V_D"
ip -n "$NS_S" addr add 10.203.0.1/30 dev "$V_S"
for ns in "$NS_D:$V_D" "$NS_S:$V_S"; do
  ip -n "${ns%%:*}" link set lo up
  ip -n "${ns%%:*}" link set "${ns##*:}" up
done
MTU=$(ip -n "$NS_D" -o link show "$V_D" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
IN_D=(ip netns exec "$NS_D")
IN_S=(ip netns exec "$NS_S")

export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
CK=()
for s in $SPLITS; do
  k=${s%%:*} r=${s##*:}
  "$B/bf-init" --classes 100 --split-after "$k" --dr "$r" --seed "$k" --out "$W/m$k.safetensors" >/dev/null
  CK+=(--checkpoint "$W/m$k.safetensors")
done
"$B/bf-export" "${CK[@]}" --out-dir "$W/deploy" --input-size "$SIZE" >/dev/null 2>&1
"$B/split_testgen" images "$W/img" 2 $((SIZE * 8 / 7 + 16)) 1 2>/dev/null
IMGS=("$W"/img/*.png)
"${IN_S[@]}" "$B/bf-serve" --deploy "$W/deploy" --listen 10.203.0.1:0 --port-file "$W/port" --threads 1 \
  >"$W/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 1200); do
  [ -s "$W/port" ] && break
  kill -0 "$SPID" 2>/dev/null || { cat "$W/serve.log"; echo "uplink_bench: bf-serve died" >&2; exit 1; }
  sleep 0.1
done
[ -s "$W/port" ] || { echo "uplink_bench: bf-serve did not start" >&2; exit 1; }
C=("${IN_D[@]}" timeout 600 "$B/bf-client" --deploy "$W/deploy" --server "10.203.0.1:$(cat "$W/port")" --threads 1)

# run MODE_ARGS... -> RESULT lines in $W/run.txt; every request bounded by --repeat
run() { "${C[@]}" "$@" --repeat "$REPEAT" "${IMGS[@]}" | grep '^RESULT' >"$W/run.txt"; }
# med EXPR: median over the RESULT lines of an awk expression of their fields
med() {
  awk -v e="$1" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    p = v["prep_ms"]; d = v["device_ms"]; q = v["encode_ms"]; s = v["server_ms"]; t = v["total_ms"]; b = v["bytes"]
    if (e == "tm") x = d + q; else if (e == "tc") x = s; else if (e == "bytes") x = b
    else if (e == "lat") x = t - p; else if (e == "net") x = t - p - d - q - s
    print x }' "$W/run.txt" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (a[int((NR + 1) / 2)] + a[int(NR / 2) + 1]) / 2 }'
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# Warm-up: the server loads its whole model (cloud-only) on first use.
"${C[@]}" --cloud-only "${IMGS[0]}" >/dev/null
MODES=()
for s in $SPLITS; do MODES+=("split:${s%%:*}:${s##*:}"); done
MODES+=(cloud)
ROWS=$W/rows
: >"$ROWS"
for net in 3g 4g wifi; do
  rate=$("$B/search_selcost" rate "$net")
  for m in "${MODES[@]}"; do
    if [ "$m" = cloud ]; then
      args=(--cloud-only) label="cloud-only"
    else
      args=(--split "$(echo "$m" | cut -d: -f2)") label="RB$(echo "$m" | cut -d: -f2) (D_r $(echo "$m" | cut -d: -f3))"
    fi
    # The profile, right before the shaped run (the machine's load drifts):
    # the same requests over the unshaped veth give TM (device half +
    # encoding), TC (server queue + compute), F (frame bytes) and the
    # per-request residual total - prep - TM - TC (RTT, reply, decoding,
    # thread hand-offs) that the model does not have.
    "${IN_D[@]}" tc qdisc del dev "$V_D" root 2>/dev/null || true
    run "${args[@]}"
    tm=$(med tm) tc=$(med tc) f=$(med bytes) res0=$(med net)
    if [ "$m" = cloud ]; then
      tm=0 model=$("$B/search_selcost" cloud "$net" "$f" "$tc")
    else
      model=$("$B/search_selcost" split "$net" "$tm" "$tc" "$f")
    fi
    "${IN_D[@]}" tc qdisc replace dev "$V_D" root tbf rate "${rate}mbit" burst "$BURST" limit 4000000
    run "${args[@]}"
    lat=$(med lat) netms=$(med net) tu=$(echo "$model" | field tu_ms) mlat=$(echo "$model" | field latency_ms)
    # What tbf lets through: the frame plus TCP/IP/Ethernet headers per
    # segment (MSS = MTU - 52 with timestamps; 66 bytes of headers), less
    # the bucket's BURST bytes that leave at line rate after an idle gap.
    wire=$(awk -v f="$f" -v mtu="$MTU" -v burst="$BURST" -v r="$rate" 'BEGIN {
      mss = mtu - 52; seg = int((f + mss - 1) / mss); w = f + 66 * seg - burst; if (w < 0) w = 0
      printf "%.2f", w * 8 / (r * 1e3) }')
    # The model has no RTT and no per-request cost: the unshaped residual
    # (this link's RTT, the reply, decoding, thread hand-offs) is added to it.
    mrtt=$(echo "$mlat + $res0" | bc -l)
    printf '| %s %s Mbit/s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s | %s | %.2f | %.2f | %s | %+.0f%% |\n' \
      "$net" "$rate" "$label" "$f" "$tm" "$tc" "$tu" "$wire" "$res0" "$netms" "$mlat" "$mrtt" "$lat" \
      "$(echo "($lat - $mrtt) * 100 / $mrtt" | bc -l)" | sed 's/^| 3g/| 3G/; s/^| 4g/| 4G/; s/^| wifi/| Wi-Fi/' >>"$ROWS"
  done
done
"${IN_D[@]}" tc qdisc del dev "$V_D" root 2>/dev/null || true

{
  echo "| uplink (tbf) | mode | F bytes | TM ms | TC ms | model TU ms | tbf wire ms | RTT + overhead ms (unshaped) | network ms measured | model latency ms | model + RTT ms | measured latency ms | measured vs model + RTT |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  cat "$ROWS"
} | tee "$W/table"
echo "(SIZE=$SIZE REPEAT=$REPEAT x ${#IMGS[@]} images, medians; BURST=$BURST bytes, veth MTU $MTU; $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg))"
[ -n "$OUT" ] && cp "$W/table" "$OUT"
exit 0
