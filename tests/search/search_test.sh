#!/bin/bash
# bf-search end-to-end tests (issue 6), tiny: search_test.sh MODE BF_SEARCH SRC WORK
#   config_errors  bad configs fail with exit status 2 and a message naming the key
#   tiny           splits {1, 4}, D_r 1..2, linear: all three phases, files exist and parse
#   resume         --max-trainings 2 stops the search; the rerun retrains nothing finished
set -u
mode=$1 bin=$2 src=$3 work=$4
py=/usr/bin/python3
cfg=$src/configs/search-ci-tiny.ini
data=$work/data
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

make_data() {
  [ -d "$data" ] && return
  rm -rf "$data.tmp"
  $py "$src/tools/make-synthetic-dataset" imagefolder "$data.tmp" --classes 3 --per-class 16 --size 32x32 --seed 1 \
    >/dev/null || fail "make-synthetic-dataset"
  mv "$data.tmp" "$data"
}

common() { echo --config "$cfg" --search.train_config "$src/configs/ci-tiny.ini" --data.root "$data"; }

expect_error() { # expect_error "needle" args...
  local needle=$1; shift
  local out rc
  out=$("$bin" $(common) --search.dir "$work/err" "$@" 2>&1); rc=$?
  [ $rc -eq 2 ] || fail "expected exit 2 for '$*', got $rc: $out"
  grep -qF -- "$needle" <<<"$out" || fail "'$*': message does not name '$needle': $out"
  echo "ok: $* -> $(tail -1 <<<"$out")"
}

check_outputs() { # dir
  local d=$1
  for f in search.jsonl profile.json selection.json report.md accuracy_vs_dr.csv; do
    [ -s "$d/$f" ] || fail "$d/$f missing"
  done
  $py - "$d" <<'PY' || fail "output files do not parse"
import json, sys, os
d = sys.argv[1]
sel = json.load(open(os.path.join(d, "selection.json")))
prof = json.load(open(os.path.join(d, "profile.json")))
lines = [json.loads(l) for l in open(os.path.join(d, "search.jsonl"))]
assert [n["name"] for n in sel["networks"]] == ["3g", "4g", "wifi"], sel["networks"]
splits = sorted(p["split"] for p in sel["partitions"])
assert splits == [1, 4], splits
for p in prof["models"]:
    assert p["d_r"] == 1, p  # tolerance 50 points: D_r = 1 is accepted
    assert p["device_ms"] > 0 and p["server_ms"] > 0, p
    h, w, c = p["feature_shape"]
    assert p["payload_bytes"] == h * w * c and p["frame_bytes"] == h * w * c + 76, p
    assert os.path.exists(os.path.join(p["deploy_dir"], "manifest.json")), p
assert prof["whole_model_device_ms"] > 0 and prof["whole_model_server_ms"] > 0
assert sel["whole_model"]["input_bytes"] == 32 * 32 * 3
for n in sel["networks"]:
    for t in ("min_latency", "min_energy"):
        ch = n[t]
        assert ch["split"] in (1, 4) and ch["d_r"] == 1, ch
        assert abs(ch["latency_improvement"] - n["cloud_only"]["latency_ms"] / ch["cost"]["latency_ms"]) < 1e-6
    lat = {p["split"]: p["cost"][n["name"]]["latency_ms"] for p in sel["partitions"]}
    assert lat[n["min_latency"]["split"]] == min(lat.values())
keys = [(l["split"], l["d_r"]) for l in lines]
assert keys == [(0, 0), (1, 1), (4, 1)], keys
rows = open(os.path.join(d, "accuracy_vs_dr.csv")).read().splitlines()
assert rows[0].startswith("split,d_r,top1") and len(rows) == 3, rows
md = open(os.path.join(d, "report.md")).read()
assert open(os.path.join(d, "accuracy_vs_dr.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
assert "Table IV" in md and "Table V" in md and "Cloud-only" in md
print("outputs ok:", keys)
PY
}

case $mode in
config_errors)
  expect_error "select.networks" --select.networks 3g,5g
  expect_error "search.dr_min/search.dr_max" --search.dr_min 3 --search.dr_max 2
  expect_error "search.splits" --search.splits 1,17
  expect_error "search.splits" --search.splits 0
  expect_error "search.strategy" --search.strategy golden
  expect_error "search.init" --search.init imagenet
  expect_error "select.k_cloud" --select.k_cloud 1
  expect_error "search.dr_max" --search.splits 1 --search.dr_max 300
  expect_error "search.bogus" --search.bogus 1
  expect_error "train.epochs" --train.epochs abc
  # a bad key in the INI file names FILE:LINE
  printf '[search]\nstrategy = golden\n' > "$work/bad.ini"
  out=$("$bin" --config "$work/bad.ini" 2>&1); [ $? -eq 2 ] || fail "bad.ini accepted"
  grep -qF "bad.ini:2: search.strategy" <<<"$out" || fail "bad.ini message: $out"
  out=$("$bin" 2>&1); [ $? -eq 2 ] || fail "no --config accepted"
  echo "config errors ok"
  ;;
tiny)
  make_data
  d=$work/tiny; rm -rf "$d"
  "$bin" $(common) --search.dir "$d" > "$work/tiny.out" 2> "$work/tiny.log" || { cat "$work/tiny.log"; fail "search failed"; }
  cat "$work/tiny.out"
  grep -q "trainings done" "$work/tiny.log" || fail "no progress line"
  grep -q "ETA" "$work/tiny.log" || fail "no ETA"
  grep -q "cloud-only" "$work/tiny.out" || fail "no selection table"
  check_outputs "$d"
  ;;
resume)
  make_data
  d=$work/resume; rm -rf "$d"
  "$bin" $(common) --search.dir "$d" --max-trainings 2 2> "$work/resume1.log" || { cat "$work/resume1.log"; fail "first run"; }
  grep -q "stopped after 2 new trainings" "$work/resume1.log" || fail "first run did not stop: $(cat "$work/resume1.log")"
  [ "$(wc -l < "$d/search.jsonl")" -eq 2 ] || fail "expected 2 state lines"
  [ ! -e "$d/selection.json" ] || fail "stopped search wrote selection.json"
  "$bin" $(common) --search.dir "$d" > /dev/null 2> "$work/resume2.log" || { cat "$work/resume2.log"; fail "rerun"; }
  grep -E "^bf-search: (baseline|RB)" "$work/resume2.log"
  grep -q "resuming: 2 trainings" "$work/resume2.log" || fail "rerun did not read the state"
  grep -q "baseline: done before" "$work/resume2.log" || fail "baseline not taken from the state"
  grep -q "RB1 D_r 1: done before" "$work/resume2.log" || fail "RB1 D_r 1 not taken from the state"
  n=$(grep -c ": training " "$work/resume2.log")
  [ "$n" -eq 1 ] || fail "rerun trained $n models, expected 1 (RB4 D_r 1)"
  grep -q "RB4 D_r 1: training" "$work/resume2.log" || fail "RB4 D_r 1 not trained"
  check_outputs "$d"
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "search_$mode: ok"
