#!/usr/bin/env bash
# bf-serve sets its own OpenMP wait policy: started WITHOUT OMP_WAIT_POLICY it
# runs with OMP_WAIT_POLICY=passive and a short spin, GOMP_SPINCOUNT=1000
# (read from /proc/PID/environ of the server
# process: the re-exec happened before the OpenMP runtime started), answers a
# request, and then uses little CPU while idle (< 0.25 cores over 2 s: sleeping,
# not spinning, threads; a generous bound, only ever lower on a busy machine).
# An explicit OMP_WAIT_POLICY is kept as the user set it.
#   serve_wait_policy.sh BIN_DIR WORK_DIR
set -euo pipefail
BIN=$1
W=$2
rm -rf "$W"
mkdir -p "$W"
unset OMP_WAIT_POLICY GOMP_SPINCOUNT
export OMP_NUM_THREADS=2
SP=
trap '[ -z "$SP" ] || kill -KILL "$SP" 2>/dev/null || true' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN/split_testgen" model "$W/m.safetensors" 10 2 4 11
"$BIN/split_testgen" images "$W/img" 1 64 500
"$BIN/bf-export" --checkpoint "$W/m.safetensors" --out-dir "$W/deploy" --input-size 64 >/dev/null

start() { # start [ENV=VALUE]: a server in the background, its pid in SP
  rm -f "$W/port"
  env "$@" "$BIN/bf-serve" --deploy "$W/deploy" --listen 127.0.0.1:0 --port-file "$W/port" --threads 2 \
    --exit-after-sec 60 >"$W/serve.log" 2>&1 &
  SP=$!
  for _ in $(seq 300); do
    [ -s "$W/port" ] && return 0
    kill -0 "$SP" 2>/dev/null || { cat "$W/serve.log"; fail "bf-serve died at startup"; }
    sleep 0.1
  done
  fail "bf-serve did not start"
}
policy() { tr '\0' '\n' <"/proc/$SP/environ" | sed -n 's/^OMP_WAIT_POLICY=//p'; }
spincount() { tr '\0' '\n' <"/proc/$SP/environ" | sed -n 's/^GOMP_SPINCOUNT=//p'; }
stop() { kill -TERM "$SP"; wait "$SP" || true; SP=; }

start
[ "$(policy)" = passive ] || fail "bf-serve started without OMP_WAIT_POLICY runs with '$(policy)', not passive"
[ "$(spincount)" = 1000 ] || fail "bf-serve started without GOMP_SPINCOUNT runs with '$(spincount)', not 1000"
"$BIN/bf-client" --threads 1 --deploy "$W/deploy" --server "127.0.0.1:$(cat "$W/port")" --cloud-only \
  "$W"/img/img_000.png >"$W/client.txt" || { cat "$W/client.txt" "$W/serve.log"; fail "request failed"; }
grep -q '^RESULT' "$W/client.txt" || fail "no RESULT line"
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$SP/stat"; }
HZ=$(getconf CLK_TCK)
c0=$(ticks)
t0=$(date +%s.%N)
sleep 2
c1=$(ticks)
t1=$(date +%s.%N)
cores=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.3f", (b - a) / hz / (t1 - t0) }')
echo "idle after a request: $cores cores ($((c1 - c0)) ticks)"
awk -v c="$cores" 'BEGIN { exit !(c < 0.25) }' || fail "idle server used $cores cores (> 0.25): threads spin"
stop

start OMP_WAIT_POLICY=active
[ "$(policy)" = active ] || fail "an explicit OMP_WAIT_POLICY=active became '$(policy)'"
[ -z "$(spincount)" ] || fail "with an explicit OMP_WAIT_POLICY bf-serve still set GOMP_SPINCOUNT=$(spincount)"
stop
echo "OK"
