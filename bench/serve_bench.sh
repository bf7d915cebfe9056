#!/usr/bin/env bash
# Dynamic batching in bf-serve: throughput and latency of the RB4 server half
# with batching on (defaults: --max-batch 8 --batch-window-ms 2) and off
# (--max-batch 1), for 1, 4 and 16 concurrent closed-loop clients on loopback.
#   bench/serve_bench.sh [BUILD_DIR]
#   env: SIZE=224 SPLIT=4 DR=2 CLASSES=100 THREADS=2 SEG=32 SEGMENTS=4 CLIENTS="1 4 16" RUNS=2
#        OUT=docs/bench-split.md (its section between the serve_bench markers is replaced; OUT=- prints only)
# The load is tests/split/split_loadgen (built with the tests): each client
# sends 8-bit features coded as the manifest says, as bf-client does, distinct
# per request, and waits for each reply.
# The machine may be shared: for each client count both servers (off, on) run
# side by side (an idle one sleeps) and the load alternates between them in
# SEGMENTS short segments (order flipped each time), so a burst of other work
# falls on both; throughput = requests / summed wall time, percentiles over the
# pooled latencies. Fresh servers per client count, so each batch histogram
# (printed by bf-serve at exit) is that count's alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build}/bin
SIZE=${SIZE:-224}
SPLIT=${SPLIT:-4}
DR=${DR:-2}
CLASSES=${CLASSES:-100}
THREADS=${THREADS:-2}
SEG=${SEG:-32}
SEGMENTS=${SEGMENTS:-4}
CLIENTS=${CLIENTS:-"1 4 16"}
RUNS=${RUNS:-2}
OUT=${OUT:-$ROOT/docs/bench-split.md}
for t in bf-init bf-export bf-serve split_loadgen split_enginebench; do
  [ -x "$B/$t" ] || { echo "serve_bench: $B/$t missing (build the project and its tests)" >&2; exit 1; }
done
W=$(mktemp -d /tmp/bf-serve-bench.XXXXXX)
# bf-serve's own default wait policy (bf_serve_main.c), for the engine bench as well
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-1000} LC_ALL=C
cleanup() { kill -TERM $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

"$B/bf-init" --classes "$CLASSES" --split-after "$SPLIT" --dr "$DR" --seed 1 --out "$W/m.safetensors" >/dev/null
"$B/bf-export" --checkpoint "$W/m.safetensors" --out-dir "$W/deploy" --input-size "$SIZE" >/dev/null 2>&1

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" | tail -1; }
start() { # MODE: bf-serve with batching on (defaults) or off; sets PID_<mode>, PORT_<mode>
  local flags=()
  [ "$1" = off ] && flags=(--max-batch 1)
  rm -f "$W/$1.port"
  "$B/bf-serve" --deploy "$W/deploy" --listen 127.0.0.1:0 --port-file "$W/$1.port" --threads "$THREADS" \
    "${flags[@]}" >"$W/$1.log" 2>&1 &
  eval "PID_$1=$!"
  for _ in $(seq 1200); do [ -s "$W/$1.port" ] && break; sleep 0.1; done
  [ -s "$W/$1.port" ] || { cat "$W/$1.log" >&2; echo "serve_bench: bf-serve did not start" >&2; exit 1; }
  eval "PORT_$1=$(cat "$W/$1.port")"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of a process
pct() { sort -n "$1" | awk -v p="$2" '{ v[NR] = $1 } END { i = int((NR * p + 99) / 100); if (i < 1) i = 1; print v[i] }'; }

FEAT=$(tr -d ' \n\t' <"$W/deploy/split-$SPLIT/manifest.json" | grep -o '"shape":\[1,[0-9]*' | head -1 | grep -o '[0-9]*$')
ENGREPS=${ENGREPS:-40}
TABLES=
for run in $(seq "$RUNS"); do
  # the engine alone, same run: the ceiling of batching's gain, and the lone request's cost of batching on
  eng=$("$B/split_enginebench" "$W/deploy/split-$SPLIT/server.safetensors" "$THREADS" "$FEAT" "$ENGREPS")
  echo "run $run: $eng" | tr '\n' ' ' >&2
  echo >&2
  bl=$(echo "$eng" | grep '^BATCH')
  ln=$(echo "$eng" | grep '^LONE')
  # what batching can gain at all here: the engine's batch-8 rate over its batch-1 rate, and
  # the FMA peak over the batch-1 rate (no batch size can beat the peak)
  peak=$(bash "$ROOT/bench/peak_flops.sh" "$THREADS" | sed -n 's/.*gflops=//p')
  gf=$(echo "$bl" | field gflop_per_image) b1=$(echo "$bl" | field n1_ms_per_image) b8=$(echo "$bl" | field n8_ms_per_image)
  ceiling_line=$(awk -v g="$gf" -v b1="$b1" -v b8="$b8" -v p="$peak" -v t="$THREADS" 'BEGIN {
    r1 = g / b1 * 1e3; r8 = g / b8 * 1e3
    printf "Ceiling: the half is %.3f GFLOP per image; batch 1 runs at %.0f GFLOP/s (%.0f%% of the fp32 FMA peak, %.0f GFLOP/s at %d threads, bench/peak_flops.sh), batch 8 at %.0f (%.0f%%). Batching can gain at most %.2fx here (batch 8 over batch 1), and no batch size more than %.2fx (the peak over batch 1).", g, r1, 100 * r1 / p, p, t, r8, 100 * r8 / p, r8 / r1, p / r1 }')
  echo "run $run: $ceiling_line" >&2
  engine_line="Engine alone (\`split_enginebench\`, $THREADS threads): ms per image at batch 1, 2, 4, 8: $(echo "$bl" | field n1_ms_per_image), $(echo "$bl" | field n2_ms_per_image), $(echo "$bl" | field n4_ms_per_image), $(echo "$bl" | field n8_ms_per_image) (batch 8 / batch 1: $(echo "$(echo "$bl" | field n8_ms_per_image) / $(echo "$bl" | field n1_ms_per_image)" | bc -l | xargs printf %.3f)). A lone request on an engine planned for 8 first (batching on) vs one planned for 1: $(echo "$ln" | field planned8_then1_ms) vs $(echo "$ln" | field planned1_ms) ms, ratio $(echo "$ln" | field ratio) (medians of $ENGREPS interleaved pairs)."
  table="| clients | requests | batching off: req/s | p50 ms | p99 ms | CPU ms/req | batching on: req/s | p50 ms | p99 ms | CPU ms/req | mean batch | throughput on/off | p50 on/off | CPU on/off |"$'\n'
  table+="|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"$'\n'
  for c in $CLIENTS; do
    start off
    start on
    per=$(((SEG + c - 1) / c))
    [ "$per" -lt 4 ] && per=4
    declare -A WALL=([off]=0 [on]=0) CPU0=([off]=$(cpu_ticks "$PID_off") [on]=$(cpu_ticks "$PID_on"))
    : >"$W/lat_off"
    : >"$W/lat_on"
    for seg in $(seq "$SEGMENTS"); do
      order="off on"
      [ $(((seg + run) % 2)) -eq 0 ] && order="on off"
      for mode in $order; do
        eval "port=\$PORT_$mode"
        load=$("$B/split_loadgen" "$W/deploy" "$SPLIT" "127.0.0.1:$port" "$c" "$per" "$seg" --warmup --lat "$W/lat")
        cat "$W/lat" >>"$W/lat_$mode"
        WALL[$mode]=$(echo "${WALL[$mode]} + $(echo "$load" | field wall_s)" | bc -l)
      done
    done
    # server CPU time per request (warm-ups included): less moved by other work than wall time
    hz=$(getconf CLK_TCK)
    reqs=$(((per + 1) * c * SEGMENTS))
    cpu_0=$(echo "($(cpu_ticks "$PID_off") - ${CPU0[off]}) * 1000 / $hz / $reqs" | bc -l)
    cpu_1=$(echo "($(cpu_ticks "$PID_on") - ${CPU0[on]}) * 1000 / $hz / $reqs" | bc -l)
    kill -TERM "$PID_off" "$PID_on"
    wait "$PID_off" "$PID_on"
    # mean batch of the "on" server (one warm-up request per client and segment included)
    mb=$(sed -n 's/.*(mean \([0-9.]*\),.*/\1/p' "$W/on.log")
    n=$(wc -l <"$W/lat_on")
    t0=$(echo "$n / ${WALL[off]}" | bc -l)
    t1=$(echo "$n / ${WALL[on]}" | bc -l)
    p50_0=$(pct "$W/lat_off" 50) p99_0=$(pct "$W/lat_off" 99) p50_1=$(pct "$W/lat_on" 50) p99_1=$(pct "$W/lat_on" 99)
    row=$(printf "| %d | %d | %.2f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2fx | %.3f | %.3f |" "$c" "$n" \
      "$t0" "$p50_0" "$p99_0" "$cpu_0" "$t1" "$p50_1" "$p99_1" "$cpu_1" "$mb" "$(echo "$t1 / $t0" | bc -l)" \
      "$(echo "$p50_1 / $p50_0" | bc -l)" "$(echo "$cpu_1 / $cpu_0" | bc -l)")
    echo "run $run: $row" >&2
    table+="$row"$'\n'
    unset WALL CPU0
  done
  TABLES+="Run $run:"$'\n\n'"$engine_line"$'\n\n'"$ceiling_line"$'\n\n'"$table"$'\n'
done

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
LOADED=
if awk -v n="$(nproc)" '{ exit !($1 > n) }' /proc/loadavg; then
  LOADED="- The machine was loaded by other work during this run (load average above its $(nproc) cores): the
  wall-clock columns (req/s, p50, p99) carry that noise, and small ratios are within it. Rerun on a quiet machine.
"
fi
SECTION=$(cat <<EOF
<!-- serve_bench: generated by bench/serve_bench.sh; bench/split_bench.sh keeps this section -->
## Dynamic batching in bf-serve

Generated by \`bench/serve_bench.sh\` on $(date -u +%Y-%m-%d). Command:

\`\`\`
SIZE=$SIZE SPLIT=$SPLIT DR=$DR CLASSES=$CLASSES THREADS=$THREADS SEG=$SEG SEGMENTS=$SEGMENTS CLIENTS="$CLIENTS" RUNS=$RUNS bench/serve_bench.sh build
\`\`\`

- Machine: $CPU, $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg).
  Server and clients on this machine over 127.0.0.1; bf-serve \`--threads $THREADS\` (1 worker), CPU backend,
  OMP_WAIT_POLICY=passive with GOMP_SPINCOUNT=$GOMP_SPINCOUNT (bf-serve's default) for the servers and the engine bench.
- Model: ResNet-50 + butterfly after RB$SPLIT (D_r $DR), $CLASSES classes, random weights, input ${SIZE}x${SIZE}:
  the server half runs restore + RB$((SPLIT + 1))..RB16 + head on ${DR}-channel features.
- Load: \`split_loadgen\` (tests/split), N closed-loop clients, each on its own connection, sending 8-bit
  per-tensor features (the manifest's coding, as bf-client sends them), distinct per request, and waiting
  for each reply. Per client count, both servers run side by side and the load alternates between them
  in $SEGMENTS segments of max(ceil($SEG / clients), 4) requests per client (order flipped each segment;
  one unrecorded warm-up request per client first), so bursts of other work on the machine fall on both.
  Latency = send to reply per request (percentiles over the pooled segments); throughput = requests /
  summed wall time of that mode's segments.
- Batching on: \`--max-batch 8 --batch-window-ms 2\` (defaults); off: \`--max-batch 1\`. 'mean batch' is
  from the batching server's histogram (warm-up requests included). 'CPU ms/req' is the server
  process's CPU time (utime + stime, /proc/PID/stat) over the cell divided by its requests (warm-ups
  included): on a shared machine it moves less than wall time, so 'CPU on/off' < 1 is the work a
  batch saves per request.
$LOADED
$TABLES
EOF
)
echo "$SECTION"
if [ "$OUT" != - ]; then
  # replace the section between its markers (other sections of the file stay), or append it
  : >"$W/doc"
  if [ -f "$OUT" ]; then
    sed -n '/^<!-- serve_bench:/q;p' "$OUT" >"$W/doc"
    grep -q '^<!-- serve_bench:' "$OUT" || echo >>"$W/doc"
  fi
  echo "$SECTION" >>"$W/doc"
  echo "<!-- /serve_bench -->" >>"$W/doc"
  [ -f "$OUT" ] && sed -n '/^<!-- \/serve_bench -->/,$p' "$OUT" | sed 1d >>"$W/doc"
  cp "$W/doc" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  echo "wrote $OUT" >&2
fi
