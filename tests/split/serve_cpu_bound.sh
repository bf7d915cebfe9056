#!/usr/bin/env bash
# --threads bounds bf-serve's compute: 4 concurrent clients send INFER_IMAGE
# requests (the server runs the whole model) and the server's CPU time
# (utime + stime of /proc/PID/stat, all its threads) is divided by the wall
# time of the run: the cores it used.
#   serve_cpu_bound.sh BIN_DIR WORK_DIR [THREADS [MAX_CORES]]
# THREADS (default 1) is passed to --threads; with MAX_CORES (default 1.3 for
# one thread) the run fails if the server used more. The OpenMP default is
# set to 2 threads, so a server whose compute ignored --threads would use up
# to two cores. OMP_WAIT_POLICY defaults to passive (as tools/run-tests). On a busy machine the figure can only be lower (the bound is
# what is checked, not a speed). Load-independent too: the number of the
# server's threads that did at least 10% of its CPU work during the run must
# not exceed THREADS (connection threads only decode requests).
set -euo pipefail
BIN=$1
W=$2
THREADS=${3:-1}
MAX=${4:-}
[ -n "$MAX" ] || { [ "$THREADS" = 1 ] && MAX=1.3; }
rm -rf "$W"
mkdir -p "$W"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
SERVE_ARGS=(--deploy "$W/deploy" --listen 127.0.0.1:0)
. "$(dirname "$0")/serve_lib.sh"

"$BIN/split_testgen" model "$W/m.safetensors" 10 2 4 11
"$BIN/split_testgen" images "$W/img" 1 224 500
"$BIN/bf-export" --checkpoint "$W/m.safetensors" --out-dir "$W/deploy" --input-size 224 >/dev/null
IMG=("$W"/img/*.png)

start_server S --threads "$THREADS" # the later --threads is the one bf-serve keeps
SP=$S_PID PORT=$S_PORT

# utime + stime in clock ticks (fields 14, 15; the command name in field 2
# has no spaces here)
ticks() { awk '{print $14 + $15}' "/proc/$SP/stat"; }
# per thread: "tid ticks"
thread_ticks() { for t in /proc/"$SP"/task/*; do echo "${t##*/} $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"; done; }
HZ=$(getconf CLK_TCK)
thread_ticks >"$W/threads0"
c0=$(ticks)
t0=$(date +%s.%N)
CL=()
for i in 1 2 3 4; do
  "$BIN/bf-client" --threads 1 --deploy "$W/deploy" --server "127.0.0.1:$PORT" --cloud-only --repeat 6 \
    "${IMG[0]}" >"$W/client$i.txt" 2>&1 &
  CL+=($!)
done
for p in "${CL[@]}"; do wait "$p" || { cat "$W"/client*.txt; fail "a client failed"; }; done
t1=$(date +%s.%N)
c1=$(ticks)
thread_ticks >"$W/threads1"
BUSY=$(awk -v total="$((c1 - c0))" 'NR == FNR { t0[$1] = $2; next }
  { d = $2 - t0[$1]; if (total > 0 && d >= 0.1 * total) n++ } END { print n + 0 }' "$W/threads0" "$W/threads1")
n=$(cat "$W"/client*.txt | grep -c '^RESULT')
[ "$n" = 24 ] || fail "expected 24 results, got $n"
CORES=$(awk -v c="$((c1 - c0))" -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", c / hz / (b - a) }')
WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "bf-serve --threads $THREADS, 4 clients x 6 INFER_IMAGE 224x224: $CORES cores (CPU $(((c1 - c0) * 100 / HZ))e-2 s over ${WALL} s), $BUSY threads did >= 10% of it"
grep 'compute threads' "$W/S.log" || true
[ "$BUSY" -le "$THREADS" ] || fail "bf-serve --threads $THREADS computed on $BUSY threads"
if [ -n "$MAX" ]; then
  awk -v c="$CORES" -v m="$MAX" 'BEGIN { exit !(c <= m) }' || fail "bf-serve --threads $THREADS used $CORES cores (> $MAX)"
fi
echo OK
