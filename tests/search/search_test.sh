#!/bin/bash
# bf-search end-to-end tests (issue 6), tiny: search_test.sh MODE BF_SEARCH SRC WORK
#   config_errors  bad configs fail with exit status 2 and a message naming the key
#   tiny           splits {1, 4}, D_r 1..2, linear: all three phases, files exist and parse; run
#                  through tools/search-live (as tools/demo does): a live line per finished training
#                  and the progress/ETA lines on stderr, the full log kept
#   resume         --max-trainings 2 stops the search; the rerun retrains nothing finished
#   kill           kill -9 mid-search (after 2 trainings), with --jobs 1 and 2: the rerun retrains
#                  nothing recorded, every training is recorded once, the outputs are complete
#   jobs           --jobs 2: split points train at once in subprocesses, with the same results
#                  (bitwise, same thread count) as the in-process search, bisect strategy
#   slurm          --emit-slurm waves run task by task with bash: each array task trains exactly
#                  its one model; the waves follow the bisection; the final run trains nothing
#   reprofile      a finished search, re-profiled with --reprofile at 64x64 (trained at 32x32): nothing
#                  trains; offloaded bytes = h*w*D_r of the 64x64 feature map; selection.json,
#                  profile.json, report.md and report.html state both sizes; --reprofile on an
#                  unfinished search fails naming the training still to run, and trains nothing;
#                  tools/paper-tables formats that directory's numbers (Table V rows = selection.json)
#   qat            candidates trained quantisation-aware (--candidate.model.quant_bits 2): their
#                  bytes per codec count their own 2-bit codes (bits 2 in rate_accuracy.csv and
#                  profile.json, tables of 4 symbols), raw is still D_r*H*W + 76, rans is below it
#   report         (after tiny) report.html in headless Chromium: the DOM holds the selection
#                  table's numbers from selection.json, the four inline figures and working links
#                  to every training's files; the screenshot is not blank
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

check_outputs() { # dir [splits, e.g. 1,2,4]
  local d=$1 splits=${2:-1,4}
  for f in search.jsonl profile.json selection.json report.md report.html accuracy_vs_dr.csv; do
    [ -s "$d/$f" ] || fail "$d/$f missing"
  done
  $py - "$d" "$splits" <<'PY' || fail "output files do not parse"
import glob, json, sys, os
d = sys.argv[1]
want = [int(k) for k in sys.argv[2].split(",")]
sel = json.load(open(os.path.join(d, "selection.json")))
prof = json.load(open(os.path.join(d, "profile.json")))
lines = [json.loads(l) for l in open(os.path.join(d, "search.jsonl"))]
assert [n["name"] for n in sel["networks"]] == ["3g", "4g", "wifi"], sel["networks"]
splits = sorted(p["split"] for p in sel["partitions"])
assert splits == want, splits
for p in prof["models"]:
    assert p["d_r"] == 1, p  # tolerance 50 points: D_r = 1 is accepted
    assert p["device_ms"] > 0 and p["server_ms"] > 0, p
    h, w, c = p["feature_shape"]
    assert p["payload_bytes"] == h * w * c and p["frame_bytes"] == h * w * c + 76, p
    man = json.load(open(os.path.join(p["deploy_dir"], "manifest.json")))
    # the chosen model's deploy carries the rans tables the bytes were measured
    # with: the same tables as its rate/ export (same checkpoint, size, images)
    # (profile.rate_images = 0 measures no bytes and builds no tables)
    if prof.get("codec_bytes"):
        rm = glob.glob(os.path.join(d, "rate", "k%d_dr%d" % (p["split"], p["d_r"]), "split-*", "manifest.json"))
        assert "rans" in man["quantization"] and len(rm) == 1, (man["quantization"], rm)
        assert man["quantization"]["rans"] == json.load(open(rm[0]))["quantization"]["rans"], (man, rm)
    else:
        assert "rans" not in man["quantization"], man["quantization"]
assert prof["whole_model_device_ms"] > 0 and prof["whole_model_server_ms"] > 0
assert sel["whole_model"]["input_bytes"] == 32 * 32 * 3
for n in sel["networks"]:
    for t in ("min_latency", "min_energy"):
        ch = n[t]
        assert ch["split"] in want and ch["d_r"] == 1, ch
        assert abs(ch["latency_improvement"] - n["cloud_only"]["latency_ms"] / ch["cost"]["latency_ms"]) < 1e-6
    lat = {p["split"]: p["cost"][n["name"]]["latency_ms"] for p in sel["partitions"]}
    assert lat[n["min_latency"]["split"]] == min(lat.values())
for l in lines:  # search.keep = last: a recorded candidate keeps only its final weights
    have = {f for f in ("last.safetensors", "best.safetensors", "last.state.safetensors")
            if os.path.exists(os.path.join(l["run_dir"], f))}
    want_files = {"last.safetensors", "best.safetensors", "last.state.safetensors"} if l["split"] == 0 else {"last.safetensors"}
    assert have == want_files, (l["run_dir"], have)
keys = [(l["split"], l["d_r"]) for l in lines]
assert keys[0] == (0, 0) and sorted(keys) == [(0, 0)] + [(k, 1) for k in want], keys
rows = open(os.path.join(d, "accuracy_vs_dr.csv")).read().splitlines()
assert rows[0].startswith("split,d_r,top1") and len(rows) == 1 + len(want), rows
# issue 16: every candidate's measured bytes per codec; 8-bit raw is exactly
# the frame of h*w*D_r codes (header 64 + one pair 8 + CRC 4), so the
# measurement runs the real device half at the profiling size
import csv
rate = list(csv.DictReader(open(os.path.join(d, "rate_accuracy.csv"))))
cands = [l for l in lines if l["split"]]
assert sorted((int(r["split"]), int(r["d_r"])) for r in rate) == sorted((l["split"], l["d_r"]) for l in cands), rate
assert prof["codec_bytes"] and len(prof["codec_bytes"]) == len(cands), prof.get("codec_bytes")
for r, cb in zip(rate, prof["codec_bytes"]):
    k, dr, n = int(r["split"]), int(r["d_r"]), int(r["input_size"])
    f = (n + 6 - 7) // 2 + 1
    f = (f + 2 - 3) // 2 + 1
    for first in (4, 8, 14):
        f = (f + 2 - 3) // 2 + 1 if k >= first else f
    assert float(r["frame_bytes_raw"]) == f * f * dr + 76, r
    assert float(r["frame_bytes_zstd"]) > 76 and float(r["frame_bytes_rans"]) > 76, r
    assert int(r["test_images"]) == 12 and int(r["rans_train_images"]) == 36, r  # 48 images, test_fraction 0.25
    assert (cb["split"], cb["d_r"]) == (k, dr) and abs(cb["frame_bytes_rans"] - float(r["frame_bytes_rans"])) < 1e-3, (cb, r)
    assert int(r["bits"]) == 8 and cb["bits"] == 8, (cb, r)  # float candidates: 8-bit codes
assert "Bytes per image with each codec" in open(os.path.join(d, "report.md")).read()
md = open(os.path.join(d, "report.md")).read()
for fig in ("accuracy_vs_dr", "rate_accuracy", "latency", "energy"):
    assert open(os.path.join(d, fig + ".png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n", fig
    assert "<svg" in open(os.path.join(d, fig + ".svg")).read(), fig
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
  expect_error "search.jobs" --jobs 0
  expect_error "--train-one" --train-one 17:1
  expect_error "--train-one: RB2 is not in search.splits" --train-one 2:1
  expect_error "--train-one: D_r 3 outside" --train-one 1:3
  expect_error "--train-one" --train-one one
  expect_error "slurm.partition" --slurm.partition "gpu long"
  expect_error "slurm.gpus_per_task" --slurm.gpus_per_task x
  expect_error "exclude each other" --emit-slurm "$work/x.sbatch" --train-one 1:1
  expect_error "--reprofile excludes" --reprofile --emit-slurm "$work/x.sbatch"
  expect_error "candidate.train.lr" --candidate.train.lr -1
  expect_error "candidate.train.bogus" --candidate.train.bogus 1
  expect_error "search.keep" --search.keep none
  # dash spellings name the same keys; unknown options are refused
  expect_error "search.dr_min/search.dr_max" --search.dr-min 3 --search.dr-max=2
  expect_error "select.k_cloud" --select.k-cloud 1
  expect_error "search.jobs" --jobs=0
  expect_error "no_such_option" --no-such-option 1
  expect_error "needs a value" --search.dr-min
  echo "config errors ok"
  ;;
tiny)
  make_data
  d=$work/tiny; rm -rf "$d"
  # through tools/search-live, as tools/demo runs it: the whole log in
  # tiny.log, the live view (stderr) in tiny.live
  "$src/tools/search-live" "$work/tiny.log" "$bin" $(common) --search.dir "$d" > "$work/tiny.out" 2> "$work/tiny.live" ||
    { cat "$work/tiny.log"; fail "search failed"; }
  cat "$work/tiny.out"
  grep -q "trainings done" "$work/tiny.log" || fail "no progress line"
  grep -q "ETA" "$work/tiny.log" || fail "no ETA"
  # live: one line per finished training (as many as search.jsonl records),
  # each followed by a progress line with the ETA; all of it from the log,
  # which also keeps what the live view leaves out
  ntrain=$(wc -l < "$d/search.jsonl")
  nlive=$(grep -cE '^   (baseline|RB[0-9]+ D_r [0-9]+): top1 ' "$work/tiny.live")
  [ "$nlive" -eq "$ntrain" ] || fail "live view: $nlive finished trainings shown, search.jsonl has $ntrain"
  nprog=$(grep -c 'trainings done .* ETA ' "$work/tiny.live")
  [ "$nprog" -ge "$((ntrain - 1))" ] || fail "live view: $nprog progress lines for $ntrain trainings"
  while IFS= read -r l; do
    grep -qxF "bf-search: ${l#   }" "$work/tiny.log" || fail "live line not in the log: $l"
  done < "$work/tiny.live"
  [ "$(wc -l < "$work/tiny.log")" -gt "$(wc -l < "$work/tiny.live")" ] || fail "the log is not fuller than the live view"
  grep -q "bf-search: .*: training " "$work/tiny.log" || fail "the log lacks the training lines"
  grep -q "cloud-only" "$work/tiny.out" || fail "no selection table"
  check_outputs "$d"
  ;;
qat)
  make_data
  d=$work/qat; rm -rf "$d"
  "$bin" $(common) --search.dir "$d" --candidate.model.quant_bits 2 > "$work/qat.log" 2>&1 ||
    { cat "$work/qat.log"; fail "search with quantisation-aware candidates failed"; }
  grep 'bf-search:   raw' "$work/qat.log"
  grep -q 'rans .* per image (2-bit codes' "$work/qat.log" || fail "the log does not say 2-bit codes"
  $py - "$d" <<'PY' || fail "bytes per codec of the 2-bit candidates"
import csv, glob, json, os, sys
d = sys.argv[1]
rate = list(csv.DictReader(open(os.path.join(d, "rate_accuracy.csv"))))
prof = json.load(open(os.path.join(d, "profile.json")))
assert rate and len(prof["codec_bytes"]) == len(rate), (rate, prof.get("codec_bytes"))
for r, cb in zip(rate, prof["codec_bytes"]):
    k, dr = int(r["split"]), int(r["d_r"])
    f = 8 if k < 4 else 4  # 32x32 input: 8x8 after RB1, 4x4 after RB4
    assert int(r["bits"]) == 2 and cb["bits"] == 2, (r, cb)
    assert float(r["frame_bytes_raw"]) == f * f * dr + 76, r
    assert 76 < float(r["frame_bytes_rans"]) < float(r["frame_bytes_raw"]), r
    m = json.load(open(glob.glob(os.path.join(d, "rate", f"k{k}_dr{dr}", "split-*", "manifest.json"))[0]))
    q = m["quantization"]
    assert q["bits"] == 2 and q["clip"] > 0 and q["rans"]["symbols"] == 4, q
print(f"{len(rate)} quantisation-aware candidates: 2-bit codes, tables of 4 symbols, rans below raw")
PY
  ;;
report)
  d=$work/tiny
  [ -s "$d/report.html" ] || fail "$d/report.html missing (search_tiny makes it)"
  "$src/tools/report-screenshot" "$d/report.html" "$work/report.png" "$work/report.dom.html" ||
    fail "headless chromium"
  $py - "$d" "$work/report.dom.html" "$work/report.png" <<'PY' || fail "report.html"
import json, os, sys
from html.parser import HTMLParser
from PIL import Image, ImageStat
d, dom_path, png = sys.argv[1:4]
class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.table, self.row, self.cell = {}, None, None, None
        self.svgs, self.links, self.figures = 0, [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table": self.table = a.get("id"); self.tables[self.table] = []
        elif tag == "tr" and self.table: self.row = []; self.tables[self.table].append(self.row)
        elif tag in ("td", "th") and self.row is not None: self.cell = ""
        elif tag == "svg": self.svgs += 1
        elif tag == "a": self.links.append(a["href"])
        elif tag == "figure": self.figures.append(a.get("id"))
    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None: self.row.append(self.cell.strip()); self.cell = None
        elif tag == "table": self.table = self.row = None
    def handle_data(self, data):
        if self.cell is not None: self.cell += data
p = Dom()
p.feed(open(dom_path).read())
assert p.figures == ["fig-accuracy_vs_dr", "fig-rate_accuracy", "fig-latency", "fig-energy"], p.figures
assert p.svgs == 4, p.svgs
for t in ("selection", "table4", "table5", "trainings", "config"):
    assert t in p.tables, (t, list(p.tables))
sel = json.load(open(os.path.join(d, "selection.json")))
rows = [r for r in p.tables["selection"][1:]]
f2 = lambda v: f"{v:.2f}"
want = []
for n in sel["networks"]:
    name = n["name"]
    for setup in ("mobile_only", "cloud_only"):
        c = n[setup]
        want.append([name, "-", setup.replace("_", "-"), "", f2(100 * sel["baseline_top1"]), f2(c["latency_ms"]),
                     f2(c["energy_mj"])])
    for t in ("min_latency", "min_energy"):
        ch = n[t]
        want.append([name, t[4:], f"RB{ch['split']}", str(ch["d_r"]), f2(100 * ch["accuracy"]),
                     f2(ch["cost"]["latency_ms"]), f2(ch["cost"]["energy_mj"]), f"{ch['offloaded_bytes']:.0f}",
                     f"{ch['latency_improvement']:.1f}x", f"{ch['energy_improvement']:.1f}x"])
got = [r[:len(w)] for r, w in zip(rows, want)]
assert len(rows) == len(want) and got == want, (rows, want)
# every training links to its metrics, result and config, and the links resolve
runs = [json.loads(l) for l in open(os.path.join(d, "search.jsonl"))]
assert len(p.tables["trainings"]) == 1 + len(runs), p.tables["trainings"]
metrics = [h for h in p.links if h.endswith("/metrics.jsonl")]
assert len(metrics) == len(runs), p.links
for h in p.links:
    assert not h.startswith(("http:", "https:")), h
    assert os.path.exists(os.path.join(d, h)), h
# the screenshot shows a page, not a blank window
im = Image.open(png).convert("L")
st = ImageStat.Stat(im)
dark = sum(im.histogram()[:128]) / (im.width * im.height)
assert st.stddev[0] > 20 and dark > 0.01, (st.stddev, dark)
print(f"report ok: {len(want)} selection rows, {p.svgs} figures, {len(p.links)} links; "
      f"screenshot {im.width}x{im.height}, stddev {st.stddev[0]:.1f}, {100 * dark:.1f}% dark pixels")
PY
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
reprofile)
  make_data
  d=$work/reprofile; rm -rf "$d"
  "$bin" $(common) --search.dir "$d" > /dev/null 2> "$work/reprofile1.log" || { cat "$work/reprofile1.log"; fail "search"; }
  "$bin" $(common) --search.dir "$d" --reprofile --profile.input_size 64 > "$work/reprofile.out" \
    2> "$work/reprofile2.log" || { cat "$work/reprofile2.log"; fail "--reprofile"; }
  grep -q "(0 new trainings)" "$work/reprofile2.log" || fail "--reprofile trained: $(cat "$work/reprofile2.log")"
  grep -q "profiling at 64x64 (trained at 32x32)" "$work/reprofile2.log" || fail "no profiling size in the log"
  $py - "$d" <<'PY' || fail "profiling at 64x64"
import json, os, sys
d = sys.argv[1]
def feat(n, k):  # ResNet-50: stem conv 7x7/2 pad 3, max pool 3x3/2 pad 1, stride 2 entering RB4, RB8, RB14
    n = (n + 6 - 7) // 2 + 1
    n = (n + 2 - 3) // 2 + 1
    for first in (4, 8, 14):
        if k >= first:
            n = (n + 2 - 3) // 2 + 1
    return n
assert feat(224, 1) == 56 and feat(224, 4) == 28 and feat(224, 8) == 14 and feat(224, 14) == 7
prof = json.load(open(os.path.join(d, "profile.json")))
sel = json.load(open(os.path.join(d, "selection.json")))
for j in (prof, sel):
    assert j["train_input_size"] == 32 and j["profile_input_size"] == 64 and j["input_size"] == 64, j
assert sel["whole_model"]["input_bytes"] == 64 * 64 * 3, sel["whole_model"]
got = {}
for m in prof["models"]:
    k, r = m["split"], m["d_r"]
    h = feat(64, k)
    assert m["feature_shape"] == [h, h, r], m
    assert m["payload_bytes"] == h * h * r and m["frame_bytes"] == h * h * r + 76, m
    got[k] = m["frame_bytes"]
    man = json.load(open(os.path.join(m["deploy_dir"], "manifest.json")))
    assert (man["input"]["height"], man["input"]["width"]) == (64, 64), man["input"]
for p in sel["partitions"]:
    assert p["offloaded_bytes"] == got[p["split"]], (p, got)
assert sorted(got) == [1, 4] and got[1] != got[4], got
# accuracy is the trained model's (search.jsonl), not re-measured
top1 = {(l["split"], l["d_r"]): l["top1"] for l in map(json.loads, open(os.path.join(d, "search.jsonl")))}
for p in sel["partitions"]:
    assert p["accuracy"] == top1[(p["split"], p["d_r"])], p
for f in ("report.md", "report.html"):
    t = open(os.path.join(d, f)).read()
    assert "trained and evaluated at 32x32" in t and "Profiled at 64x64" in t and "upload 12288 B" in t, f
# the bytes per codec measured again at 64x64 (the 32x32 ones no longer apply)
for cb in prof["codec_bytes"]:
    h = feat(64, cb["split"])
    assert cb["frame_bytes_raw"] == h * h * cb["d_r"] + 76, cb
print("profiled at 64x64, trained at 32x32: frame bytes", got)
PY
  # tools/paper-tables (docs/results.md) formats exactly these files
  $py "$src/tools/paper-tables" "$d" > "$work/reprofile.tables.md" || fail "tools/paper-tables"
  $py - "$d" "$work/reprofile.tables.md" <<'PY' || fail "tools/paper-tables output"
import json, os, sys
d, md = sys.argv[1], open(sys.argv[2]).read()
sel = json.load(open(os.path.join(d, "selection.json")))
prof = json.load(open(os.path.join(d, "profile.json")))
assert "trained and evaluated at 32x32; profiled at 64x64" in md, md[:400]
rows = [l.split(" | ") for l in md.splitlines() if l.startswith("| Collaborative")]
names = {"3g": "3G", "4g": "4G", "wifi": "Wi-Fi"}
for n in sel["networks"]:
    mine = [r for r in rows if r[1] == names[n["name"]]]
    assert mine, (n["name"], rows)
    lat = n["min_latency"]
    r = mine[0]
    assert r[2] == f"{lat['cost']['latency_ms']:.1f}" and r[4] == f"After RB{lat['split']} (D_r {lat['d_r']})", r
    pay = {m["split"]: m["payload_bytes"] for m in prof["models"]}
    assert r[5] == str(pay[lat["split"]]), r
    assert r[9] == {"3g": "14.3", "4g": "5.2", "wifi": "2.4"}[n["name"]], r  # the paper's, beside ours
print(f"paper-tables: {len(rows)} collaborative rows match selection.json")
PY
  # an unfinished search: --reprofile names what is left and trains nothing
  out=$("$bin" $(common) --search.dir "$d" --search.splits 1,2,4 --reprofile 2>&1); rc=$?
  [ $rc -eq 1 ] || fail "--reprofile of an unfinished search: exit $rc, expected 1: $out"
  grep -qF -- "--reprofile: the training phase is not complete (RB2 D_r 1 is still to train)" <<<"$out" ||
    fail "--reprofile message: $out"
  [ ! -e "$d/runs/k2_dr1" ] || fail "--reprofile started a training"
  echo "--reprofile of an unfinished search refused: $(tail -1 <<<"$out")"
  ;;
kill)
  make_data
  for jobs in 1 2; do
    d=$work/kill$jobs; rm -rf "$d"
    args="--search.splits 1,2,4,8 --search.dir $d --jobs $jobs"
    "$bin" $(common) $args > /dev/null 2> "$work/kill$jobs.log" &
    pid=$!
    for _ in $(seq 600); do
      [ -s "$d/search.jsonl" ] && [ "$(wc -l < "$d/search.jsonl")" -ge 2 ] && break
      sleep 0.05
    done
    kill -9 $pid; wait $pid 2>/dev/null
    [ ! -e "$d/selection.json" ] || fail "jobs $jobs: the kill came after the end"
    cp "$d/search.jsonl" "$work/kill$jobs.before"
    nb=$(wc -l < "$work/kill$jobs.before")
    [ "$nb" -ge 2 ] && [ "$nb" -lt 5 ] || fail "jobs $jobs: $nb trainings recorded at the kill"
    sleep 1 # orphaned subprocesses get SIGTERM (PDEATHSIG) and stop
    "$bin" $(common) $args > /dev/null 2> "$work/kill$jobs.rerun" || { cat "$work/kill$jobs.rerun"; fail "rerun"; }
    $py - "$work/kill$jobs.before" "$d/search.jsonl" "$work/kill$jobs.rerun" <<'PY' || fail "jobs $jobs: rerun after kill -9"
import json, re, sys
before = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
after = [json.loads(l) for l in open(sys.argv[2])]
log = open(sys.argv[3]).read()
key = lambda e: (e["split"], e["d_r"])
assert after[:len(before)] == before, "the state was rewritten"
keys = [key(e) for e in after]
assert len(keys) == len(set(keys)), f"a training recorded twice: {keys}"
assert sorted(keys) == [(0, 0), (1, 1), (2, 1), (4, 1), (8, 1)], keys
trained = set()
for m in re.finditer(r"^bf-search: (baseline|RB(\d+) D_r (\d+)): training ", log, re.M):
    trained.add((0, 0) if m.group(1) == "baseline" else (int(m.group(2)), int(m.group(3))))
redone = trained & {key(e) for e in before}
assert not redone, f"retrained after the kill: {redone}"
print(f"killed after {len(before)} trainings; the rerun trained {sorted(trained)}")
PY
    check_outputs "$d" 1,2,4,8
  done
  ;;
jobs)
  make_data
  # same thread count on both sides (the children get threads / jobs = 1)
  args="--threads 1 --data.threads 1 --search.strategy bisect --search.dr_max 3 --search.tolerance 0"
  rm -rf "$work/jobs1" "$work/jobs2"
  "$bin" $(common) $args --search.dir "$work/jobs1" > /dev/null 2> "$work/jobs1.log" || { cat "$work/jobs1.log"; fail "jobs 1"; }
  "$bin" $(common) $args --search.dir "$work/jobs2" --jobs 2 > "$work/jobs2.out" 2> "$work/jobs2.log" ||
    { cat "$work/jobs2.log"; fail "jobs 2"; }
  cat "$work/jobs2.log"
  grep -q "cloud-only" "$work/jobs2.out" || fail "no selection table"
  # both split points were started before either finished
  first_result=$(grep -n "RB[14] D_r [0-9]*: top1" "$work/jobs2.log" | head -1 | cut -d: -f1)
  started=$(head -n "$first_result" "$work/jobs2.log" | grep -c "RB[14] D_r 2: training .* in a subprocess")
  [ "$started" -eq 2 ] || fail "the two split points did not train at once"
  grep -q "1 compute + 1 decoder threads each" "$work/jobs2.log" || fail "threads not shared out"
  $py - "$work/jobs1" "$work/jobs2" <<'PY' || fail "--jobs 2 differs from --jobs 1"
import json, os, sys
def runs(d):
    out = {}
    for l in open(os.path.join(d, "search.jsonl")):
        e = json.loads(l)
        r = json.load(open(os.path.join(e["run_dir"], "result.json")))
        out[(e["split"], e["d_r"])] = (e["top1"], r["test_loss"])
    return out
a, b = runs(sys.argv[1]), runs(sys.argv[2])
assert a == b, (a, b)
sa = json.load(open(os.path.join(sys.argv[1], "selection.json")))["partitions"]
sb = json.load(open(os.path.join(sys.argv[2], "selection.json")))["partitions"]
assert [(p["split"], p["d_r"]) for p in sa] == [(p["split"], p["d_r"]) for p in sb], (sa, sb)
assert os.path.getsize(os.path.join(sys.argv[2], "logs", "k1_dr2.log")) > 0
print("jobs 1 == jobs 2:", sorted(a))
PY
  ;;
slurm)
  make_data
  d=$work/slurm; rm -rf "$d"; s=$work/wave.sbatch
  args="--search.strategy bisect --search.dr_max 3 --search.tolerance 0 --search.dir $d --slurm.partition gpu"
  args="$args --slurm.time 2:00:00 --slurm.extra --qos=long;--exclusive"
  expected_waves=""
  for wave in 1 2 3 4 5; do
    "$bin" $(common) $args --emit-slurm "$s" 2> "$work/emit$wave.log" || { cat "$work/emit$wave.log"; fail "emit $wave"; }
    cat "$work/emit$wave.log"
    grep -q "training phase is complete" "$work/emit$wave.log" && break
    bash -n "$s" || fail "wave $wave: bash syntax"
    grep -q "^#SBATCH --partition=gpu$" "$s" && grep -q "^#SBATCH --time=2:00:00$" "$s" &&
      grep -q "^#SBATCH --qos=long$" "$s" && grep -q "^#SBATCH --exclusive$" "$s" || fail "wave $wave: #SBATCH options"
    grep -q '^exec .* --train-one "${TASKS\[$id\]}"$' "$s" || fail "wave $wave: no --train-one exec line"
    ! grep '^exec' "$s" | grep -q -- "--emit-slurm" || fail "wave $wave: the task command re-emits"
    mapfile -t tasks < <(sed -n '/^TASKS=(/,/^)/p' "$s" | sed '1d;$d' | awk '{print $1}')
    n=${#tasks[@]}
    grep -q "^#SBATCH --array=0-$((n - 1))$" "$s" || fail "wave $wave: --array does not match $n tasks"
    [ "$wave" -gt 1 ] || [ "${tasks[*]}" = "baseline" ] || fail "wave 1 must be the baseline: ${tasks[*]}"
    for i in $(seq 0 $((n - 1))); do
      before=$(ls "$d/runs" 2>/dev/null | sort)
      SLURM_ARRAY_TASK_ID=$i bash "$s" > "$work/task.log" 2>&1 || { cat "$work/task.log"; fail "wave $wave task $i"; }
      new=$(comm -13 <(echo "$before") <(ls "$d/runs" | sort) | tr '\n' ' ')
      want=${tasks[$i]/baseline/baseline}; [ "$want" = baseline ] || want="k${want%%:*}_dr${want##*:}"
      [ "$new" = "$want " ] || fail "wave $wave task $i (${tasks[$i]}): new run dirs '$new', expected '$want'"
      [ -s "$d/runs/$want/result.json" ] || fail "task $i did not finish $want"
      [ "$(grep -c ": training " "$work/task.log")" -eq 1 ] || fail "task $i trained more than one model"
    done
    expected_waves="$expected_waves|${tasks[*]}"
    # a task run twice does nothing
    SLURM_ARRAY_TASK_ID=0 bash "$s" 2>&1 | grep -q "finished before" || fail "a re-run task trained again"
  done
  grep -q "training phase is complete" "$work/emit$wave.log" || fail "no end after $wave waves"
  ! SLURM_ARRAY_TASK_ID=9 bash "$s" 2>/dev/null || fail "task 9 accepted"
  echo "waves: $expected_waves"
  # bisection over 1..3 starts at 2 for both split points
  case $expected_waves in "|baseline|1:2 4:2"*) ;; *) fail "unexpected waves $expected_waves" ;; esac
  "$bin" $(common) $args > "$work/final.out" 2> "$work/final.log" || { cat "$work/final.log"; fail "final run"; }
  grep -q "(0 new trainings)" "$work/final.log" || fail "the final run trained: $(cat "$work/final.log")"
  # every training is recorded and the trainings are exactly the bisection's
  $py - "$d" <<'PY' || fail "the search is not the bisection over its own results"
import json, os, sys
d = sys.argv[1]
lines = [json.loads(l) for l in open(os.path.join(d, "search.jsonl"))]
top1 = {(e["split"], e["d_r"]): e["top1"] for e in lines}
target = top1[(0, 0)] - 0.0
sel = json.load(open(os.path.join(d, "selection.json")))
chosen = {p["split"]: p["d_r"] for p in sel["partitions"]}
trained = set()
for k in (1, 4):
    lo, hi, best = 1, 3, -1
    while lo <= hi:
        mid = lo + (hi - lo) // 2
        trained.add((k, mid))
        if 100 * top1[(k, mid)] >= 100 * target - 1e-9:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    if best > 0:
        assert chosen[k] == best, (k, chosen, best)
    else:
        assert k not in chosen, (k, chosen)
assert set(top1) - {(0, 0)} == trained, (sorted(top1), sorted(trained))
print("bisection replayed:", sorted(trained), "chosen", chosen)
PY
  ;;
*) fail "unknown mode $mode" ;;
esac
# each training leaves ~100 MB (ResNet-50 weights): free the disk on success;
# search_report reads tiny's reports and the small files they link to; the
# exported halves in deploy/ stay for search_profiles, which removes them
if [ "$mode" = tiny ]; then find "$work/tiny" -type f -size +1M -not -path "$work/tiny/deploy/*" -delete
else rm -rf "$work/$mode" "$work/$mode"[0-9]; fi
echo "search_$mode: ok"
