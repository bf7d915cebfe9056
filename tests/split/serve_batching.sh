#!/usr/bin/env bash
# Dynamic batching in bf-serve (docs/split.md):
#   serve_batching.sh BIN_DIR WORK_DIR
# - 8 concurrent clients send 6 requests each with distinct features to a
#   server with batching on; each reply holds the top-5 logits of that
#   request's own features, equal (within 1e-5 relative) to the same features
#   sent alone by one client (batches of one);
# - batches of more than one request did form (the server's batch histogram),
#   otherwise this test would pass without batching;
# - --max-batch 1 turns batching off: the same load gives only batches of one.
set -euo pipefail
BIN=$1
W=$2
rm -rf "$W"
mkdir -p "$W"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive LC_ALL=C
SERVE_ARGS=(--deploy "$W/deploy" --listen 127.0.0.1:0)
. "$(dirname "$0")/serve_lib.sh"

stop_server() { # name: SIGTERM, clean exit; sets <name>_STATS to the batch histogram line
  local pid st=0
  eval "pid=\$${1}_PID"
  kill -TERM "$pid"
  wait "$pid" || st=$?
  [ "$st" -eq 0 ] || { cat "$W/$1.log"; fail "bf-serve $1 exited with status $st"; }
  local line
  line=$(grep '^bf-serve: batches:' "$W/$1.log") || fail "bf-serve $1 printed no batch statistics"
  eval "${1}_STATS=\$line"
}
# batches of SIZE in a histogram line ("sizes 1:40 2:3 ...")
hist() { sed -n 's/.*sizes\(.*\)/\1/p' | tr ' ' '\n' | awk -F: -v s="$1" '$1 == s { n = $2 } END { print n + 0 }'; }
largest() { sed -n 's/.*largest \([0-9]*\)).*/\1/p'; }

# a late split keeps the server half small (ASan tree); batching is the same code for every split
"$BIN/split_testgen" model "$W/m.safetensors" 10 15 8 41
"$BIN/bf-export" --checkpoint "$W/m.safetensors" --out-dir "$W/deploy" --input-size 64 >/dev/null

# A window far above the time 8 clients released together take to send: the
# batch closes when all 8 requests are in, not at the window's end.
start_server A --max-batch 8 --batch-window-ms 200
"$BIN/split_loadgen" "$W/deploy" 15 "127.0.0.1:$A_PORT" 8 6 7 "$W/batched.txt"
"$BIN/split_loadgen" "$W/deploy" 15 "127.0.0.1:$A_PORT" 1 48 7 "$W/single.txt"
stop_server A
echo "batching on: $A_STATS"

[ "$(wc -l <"$W/single.txt")" -eq 48 ] || fail "expected 48 single results"
# distinct inputs give distinct logits: a reply swapped between clients would show
[ "$(cut -d' ' -f2 "$W/single.txt" | sort -u | wc -l)" -eq 48 ] || fail "single-request logits are not all distinct"
# same ids, same classes, logits within 1e-5 of the largest |logit| of that reply
join <(sort "$W/batched.txt") <(sort "$W/single.txt") | awk '
  { n++
    m = split($2, a, ","); split($3, b, ",")
    scale = 0
    for (i = 1; i <= m; i++) { split(b[i], q, ":"); v = q[2] < 0 ? -q[2] : q[2]; if (v > scale) scale = v }
    for (i = 1; i <= m; i++) {
      split(a[i], p, ":"); split(b[i], q, ":")
      if (p[1] != q[1]) { print "id " $1 ": class " p[1] " batched vs " q[1] " alone"; bad = 1 }
      d = p[2] - q[2]; if (d < 0) d = -d
      if (d / scale > worst) worst = d / scale
      if (d > 1e-5 * scale) { print "id " $1 ": logit " p[2] " batched vs " q[2] " alone"; bad = 1 } } }
  END { printf "compared %d requests, largest relative logit difference %.3g\n", n, worst
        if (n != 48) { print "expected 48 matched ids"; bad = 1 }
        exit bad }' || fail "batched results differ from single-request results"
L=$(echo "$A_STATS" | largest)
[ "${L:-0}" -ge 2 ] || fail "no batch of more than one request formed (largest ${L:-?})"
# the 48 lone requests ran one at a time
[ "$(echo "$A_STATS" | hist 1)" -ge 48 ] || fail "lone requests did not run as batches of one"

start_server B --max-batch 1 --batch-window-ms 200
"$BIN/split_loadgen" "$W/deploy" 15 "127.0.0.1:$B_PORT" 8 2 7 "$W/off.txt"
stop_server B
echo "batching off: $B_STATS"
[ "$(echo "$B_STATS" | largest)" = 1 ] || fail "--max-batch 1 still formed batches"
echo "OK"
