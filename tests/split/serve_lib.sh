# Shared by the shell tests that drive bf-serve and bf-client (sourced, not run).
# The caller sets BIN (the build's bin/) and W (its work directory) first, and
# SERVE_ARGS to the bf-serve flags every server of that test gets (e.g.
# --deploy DIR, --listen 127.0.0.1:0).
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_server NAME [bf-serve flags...]: sets NAME_PID and NAME_PORT once it listens
start_server() {
  local name=$1; shift
  rm -f "$W/$name.port"
  "$BIN/bf-serve" "${SERVE_ARGS[@]}" --port-file "$W/$name.port" --threads 1 "$@" >"$W/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do
    [ -s "$W/$name.port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$W/$name.log"; fail "bf-serve $name died at startup"; }
    sleep 0.1
  done
  [ -s "$W/$name.port" ] || fail "bf-serve $name did not start"
  eval "${name}_PID=$pid"
  eval "${name}_PORT=$(cat "$W/$name.port")"
}

# bf-client's RESULT lines: the top5 (class:logit,...) and top1 fields
top5() { grep '^RESULT' "$1" | sed 's/.* top5=\([^ ]*\) .*/\1/'; }
top1() { grep '^RESULT' "$1" | sed 's/.* top1=\([0-9]*\) .*/\1/'; }
compare_logits() { # a b : same classes, logits within 1e-4
  paste -d' ' <(top5 "$1" | tr ',' ' ') <(top5 "$2" | tr ',' ' ') | awk '{
    n = NF / 2
    for (i = 1; i <= n; i++) { split($i, a, ":"); split($(i + n), b, ":")
      if (a[1] != b[1]) { print "class mismatch " $i " vs " $(i+n); bad = 1 }
      d = a[2] - b[2]; if (d < 0) d = -d; if (d > 1e-4) { print "logit diff " d; bad = 1 } } }
    END { exit bad }'
}
