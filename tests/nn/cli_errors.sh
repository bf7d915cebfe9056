#!/usr/bin/env bash
# Bad-input tests for bf-init / bf-infer.
#
#   bash tests/nn/cli_errors.sh BIN_DIR
#
# Every case must: exit non-zero but < 128 (no signal, no abort), print
# "<prog>: error: ..." on stderr with a word naming the culprit (tensor name,
# 'header', 'offset', flag or file name), leave no output file (nor a
# temporary one) behind, and produce no sanitizer report. --help must exit 0
# and print a usage text. Bad files are made from a valid bf-init file with
# tools/safetensors_np.py. Exit 0 if all pass, 1 otherwise.
set -u

BIN=${1:?usage: cli_errors.sh BIN_DIR}
BIN=$(cd "$BIN" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
INIT=$BIN/bf-init
INFER=$BIN/bf-infer
W=$(mktemp -d "${TMPDIR:-/tmp}/bf_cli_errors.XXXXXX")
trap 'rm -rf "$W"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

pass=0
fail=0
failed_names=()

ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$1"; }
bad() {
  fail=$((fail + 1)); failed_names+=("$1")
  printf 'FAIL %s: %s\n' "$1" "$2"
  if [ -s "$W/stderr" ]; then sed -n '1,5s/^/       stderr: /p' "$W/stderr"; fi
}

# expect_fail NAME WORD_REGEX OUTFILE CMD...
#   OUTFILE: file that must not exist afterwards ('' for none).
expect_fail() {
  local name=$1 word=$2 out=$3
  shift 3
  local prog
  prog=$(basename "$1")
  [ -n "$out" ] && rm -f "$out" "$out".tmp*
  "$@" >"$W/stdout" 2>"$W/stderr" </dev/null
  local rc=$?
  if [ "$rc" -eq 0 ]; then bad "$name" "exit status 0"; return; fi
  if [ "$rc" -ge 128 ]; then bad "$name" "exit status $rc (killed by signal $((rc - 128)))"; return; fi
  if grep -q 'Sanitizer' "$W/stderr"; then bad "$name" "sanitizer report (exit $rc)"; return; fi
  if ! grep -q "^$prog: error: " "$W/stderr"; then bad "$name" "no '$prog: error: ' line on stderr (exit $rc)"; return; fi
  if ! grep -qiE -- "$word" "$W/stderr"; then bad "$name" "stderr does not match /$word/ (exit $rc)"; return; fi
  if [ -n "$out" ]; then
    local left
    left=$(ls -d "$out" "$out".tmp* 2>/dev/null | head -n 3)
    if [ -n "$left" ]; then bad "$name" "output left behind: $left"; return; fi
  fi
  ok "$name (exit $rc: $(grep -m1 "^$prog: error: " "$W/stderr" | cut -c1-110))"
}

# expect_help NAME CMD...
expect_help() {
  local name=$1
  shift
  "$@" >"$W/stdout" 2>"$W/stderr" </dev/null
  local rc=$?
  if [ "$rc" -ne 0 ]; then bad "$name" "exit status $rc"; return; fi
  if grep -q 'Sanitizer' "$W/stderr"; then bad "$name" "sanitizer report"; return; fi
  if ! cat "$W/stdout" "$W/stderr" | grep -qi 'usage'; then bad "$name" "no usage text"; return; fi
  ok "$name"
}

for exe in "$INIT" "$INFER"; do
  if [ ! -x "$exe" ]; then
    echo "FAIL $exe not found or not executable"
    echo "0 passed, 1 failed"
    exit 1
  fi
done
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "FAIL $PY with numpy is needed to make the bad files"
  echo "0 passed, 1 failed"
  exit 1
fi

# --- a valid model and input, and a baseline run that must succeed ----------------------
GOOD=$W/good.safetensors
OUT=$W/out.safetensors
SAVE=$W/saved.safetensors
if ! "$INIT" --classes 10 --split-after 8 --dr 5 --seed 1 --out "$GOOD" >"$W/stdout" 2>"$W/stderr"; then
  bad "baseline bf-init" "exit $?"
  echo "$pass passed, $fail failed"
  exit 1
fi
"$PY" - "$REPO/tools" "$W" <<'EOF' || { echo "FAIL making bad files"; echo "$pass passed, $((fail + 1)) failed"; exit 1; }
import json, os, struct, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st

w = sys.argv[2]
good = os.path.join(w, "good.safetensors")
P = lambda name: os.path.join(w, name)
blob = open(good, "rb").read()
tensors, meta = st.load(good)
header, buf = st.read_raw(good)

# framing
open(P("empty.safetensors"), "wb").close()
open(P("tiny.safetensors"), "wb").write(blob[:4])
open(P("trunc_header.safetensors"), "wb").write(blob[:8 + 20])
open(P("trunc_data.safetensors"), "wb").write(blob[:len(blob) // 2])
open(P("trunc_last.safetensors"), "wb").write(blob[:-4])
n = struct.unpack("<Q", blob[:8])[0]
open(P("hdrlen_past_end.safetensors"), "wb").write(struct.pack("<Q", len(blob) + 100) + blob[8:])
open(P("hdrlen_huge.safetensors"), "wb").write(struct.pack("<Q", 2**63 + 5) + blob[8:])
garbage = b"{this is not json" + b" " * (n - 17)
open(P("hdr_not_json.safetensors"), "wb").write(blob[:8] + garbage + blob[8 + n:])
st.save_raw(P("hdr_array.safetensors"), None, buf, header_bytes=b"[1, 2, 3]")
open(P("hdr_bad_utf8.safetensors"), "wb").write(blob[:8] + b"\xff\xfe" + blob[10:])

def edited(name, fn):
    h = json.loads(json.dumps(header))
    fn(h)
    st.save_raw(P(name), h, buf)

# tensor-level problems on a well-framed file
t = dict(tensors); t["conv1.weight"] = tensors["conv1.weight"].astype(np.float64)
st.save(P("dtype_f64.safetensors"), t, meta)
edited("dtype_i32.safetensors", lambda h: h["conv1.weight"].update(dtype="I32"))
edited("dtype_bogus.safetensors", lambda h: h["layer1.0.bn1.weight"].update(dtype="Q7"))
t = dict(tensors); t["bn1.num_batches_tracked"] = np.array(0.0, np.float64)
st.save(P("nbt_f64.safetensors"), t, meta)
t = dict(tensors); del t["layer2.1.bn2.running_var"]
st.save(P("missing.safetensors"), t, meta)
t = dict(tensors); t["layer9.0.conv1.weight"] = np.zeros((4, 4, 1, 1), np.float32)
st.save(P("extra.safetensors"), t, meta)
t = dict(tensors); t["fc.weight"] = tensors["fc.weight"].reshape(20, 1024)
st.save(P("shape_fc.safetensors"), t, meta)
t = dict(tensors); t["butterfly.reduce.conv.weight"] = tensors["butterfly.reduce.conv.weight"][:, :512].copy()
st.save(P("shape_bfly.safetensors"), t, meta)
t = dict(tensors); t["layer1.0.conv2.weight"] = tensors["layer1.0.conv2.weight"].reshape(64, 64, 9)
st.save(P("rank_conv.safetensors"), t, meta)
edited("offsets_past_end.safetensors",
       lambda h: h["conv1.weight"].update(data_offsets=[h["conv1.weight"]["data_offsets"][0], len(buf) + 64]))
edited("offsets_size_mismatch.safetensors",
       lambda h: h["conv1.weight"].update(data_offsets=[h["conv1.weight"]["data_offsets"][0],
                                                        h["conv1.weight"]["data_offsets"][1] - 4]))
edited("offsets_reversed.safetensors",
       lambda h: h["conv1.weight"].update(data_offsets=h["conv1.weight"]["data_offsets"][::-1]))
edited("offsets_missing.safetensors", lambda h: h["fc.bias"].pop("data_offsets"))
edited("shape_negative.safetensors", lambda h: h["fc.bias"].update(shape=[-10]))
m = dict(meta); m["split_after"] = "3"
st.save(P("meta_split_mismatch.safetensors"), tensors, m)
m = dict(meta); m["format"] = "something-else"
st.save(P("meta_format.safetensors"), tensors, m)
m = dict(meta); del m["num_classes"]
st.save(P("meta_no_classes.safetensors"), tensors, m)
t = dict(tensors); t["layer2.0.conv1.weight"] = tensors["layer2.0.conv1.weight"].copy()
t["layer2.0.conv1.weight"].flat[17] = np.nan
st.save(P("weights_nan.safetensors"), t, meta)

# inputs
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
y = np.array([3, 9], np.int64)
st.save(P("x_good.safetensors"), {"images": x, "labels": y})
st.save(P("x_nolabels.safetensors"), {"images": x})
xn = x.copy(); xn[1, 2, 5, 7] = np.nan
st.save(P("x_nan.safetensors"), {"images": xn, "labels": y})
xi = x.copy(); xi[0, 0, 0, 0] = np.inf
st.save(P("x_inf.safetensors"), {"images": xi, "labels": y})
st.save(P("x_label_high.safetensors"), {"images": x, "labels": np.array([3, 10], np.int64)})
st.save(P("x_label_neg.safetensors"), {"images": x, "labels": np.array([-1, 2], np.int64)})
st.save(P("x_label_f32.safetensors"), {"images": x, "labels": y.astype(np.float32)})
st.save(P("x_label_count.safetensors"), {"images": x, "labels": np.array([1, 2, 3], np.int64)})
st.save(P("x_rank3.safetensors"), {"images": x[0], "labels": y[:1]})
st.save(P("x_channels.safetensors"), {"images": x[:, :2].copy(), "labels": y})
st.save(P("x_f64.safetensors"), {"images": x.astype(np.float64), "labels": y})
st.save(P("x_noimages.safetensors"), {"pictures": x, "labels": y})
st.save(P("x_empty_batch.safetensors"), {"images": np.zeros((0, 3, 32, 32), np.float32),
                                         "labels": np.zeros((0,), np.int64)})
EOF

"$INFER" --weights "$GOOD" --input "$W/x_good.safetensors" --output "$OUT" --mode eval >"$W/stdout" 2>"$W/stderr"
rc=$?
if [ "$rc" -ne 0 ] || [ ! -s "$OUT" ] || grep -q Sanitizer "$W/stderr"; then
  bad "baseline bf-infer on valid files" "exit $rc"
  echo "$pass passed, $fail failed"
  exit 1
fi
ok "baseline bf-infer on valid files"
rm -f "$OUT"

X=$W/x_good.safetensors
infer_w() { # infer_w NAME REGEX WEIGHTS
  expect_fail "$1" "$2" "$OUT" "$INFER" --weights "$3" --input "$X" --output "$OUT" --mode eval
}
infer_x() { # infer_x NAME REGEX INPUT [extra args]
  local name=$1 re=$2 in=$3
  shift 3
  expect_fail "$name" "$re" "$OUT" "$INFER" --weights "$GOOD" --input "$in" --output "$OUT" "$@"
}
FRAMING='header|offset|truncat|size|short|length|end of file|eof|bytes'

# --- weights: framing
infer_w "weights: empty file" "$FRAMING|empty" "$W/empty.safetensors"
infer_w "weights: 4-byte file" "$FRAMING" "$W/tiny.safetensors"
infer_w "weights: truncated inside header" "$FRAMING|json" "$W/trunc_header.safetensors"
infer_w "weights: truncated inside data" "$FRAMING" "$W/trunc_data.safetensors"
infer_w "weights: last 4 bytes missing" "$FRAMING" "$W/trunc_last.safetensors"
infer_w "weights: header length past end of file" "$FRAMING" "$W/hdrlen_past_end.safetensors"
infer_w "weights: header length 2^63+5" "$FRAMING" "$W/hdrlen_huge.safetensors"
infer_w "weights: header not JSON" "header|json" "$W/hdr_not_json.safetensors"
infer_w "weights: header a JSON array" "header|json|object" "$W/hdr_array.safetensors"
infer_w "weights: header not UTF-8 / JSON" "header|json|utf" "$W/hdr_bad_utf8.safetensors"
# --- weights: tensors
infer_w "weights: conv1.weight stored as F64" 'conv1\.weight' "$W/dtype_f64.safetensors"
infer_w "weights: conv1.weight dtype I32" 'conv1\.weight' "$W/dtype_i32.safetensors"
infer_w "weights: unknown dtype Q7" 'layer1\.0\.bn1\.weight|Q7' "$W/dtype_bogus.safetensors"
infer_w "weights: num_batches_tracked as F64" 'bn1\.num_batches_tracked' "$W/nbt_f64.safetensors"
infer_w "weights: missing tensor" 'layer2\.1\.bn2\.running_var' "$W/missing.safetensors"
infer_w "weights: extra unknown tensor" 'layer9\.0\.conv1\.weight' "$W/extra.safetensors"
infer_w "weights: fc.weight shape [20,1024]" 'fc\.weight' "$W/shape_fc.safetensors"
infer_w "weights: butterfly reduce shape [5,512,1,1]" 'butterfly\.reduce\.conv\.weight' "$W/shape_bfly.safetensors"
infer_w "weights: conv weight of rank 3" 'layer1\.0\.conv2\.weight' "$W/rank_conv.safetensors"
infer_w "weights: data_offsets past end of buffer" 'conv1\.weight|offset' "$W/offsets_past_end.safetensors"
infer_w "weights: data_offsets size != dtype*shape" 'conv1\.weight|offset' "$W/offsets_size_mismatch.safetensors"
infer_w "weights: data_offsets reversed" 'conv1\.weight|offset' "$W/offsets_reversed.safetensors"
infer_w "weights: data_offsets missing" 'fc\.bias|offset' "$W/offsets_missing.safetensors"
infer_w "weights: negative dimension" 'fc\.bias|shape' "$W/shape_negative.safetensors"
infer_w "weights: __metadata__ split_after=3 for a K=8 file" 'split_after|butterfly|shape' "$W/meta_split_mismatch.safetensors"
infer_w "weights: __metadata__ format unknown" 'format|butterfly-1' "$W/meta_format.safetensors"
infer_w "weights: __metadata__ without num_classes" 'num_classes' "$W/meta_no_classes.safetensors"
infer_w "weights: NaN in layer2.0.conv1.weight" 'layer2\.0\.conv1\.weight|nan|finite' "$W/weights_nan.safetensors"
infer_w "weights: file does not exist" 'no_such_weights\.safetensors' "$W/no_such_weights.safetensors"
infer_w "weights: a directory" "$W|directory|read" "$W"
# --- inputs
infer_x "input: NaN in images" 'nan|finite|images' "$W/x_nan.safetensors" --mode eval
infer_x "input: Inf in images" 'inf|finite|images' "$W/x_inf.safetensors" --mode eval
infer_x "input: label 10 with 10 classes" 'label' "$W/x_label_high.safetensors" --mode train --grads
infer_x "input: label -1" 'label' "$W/x_label_neg.safetensors" --mode eval
infer_x "input: labels F32" 'label' "$W/x_label_f32.safetensors" --mode eval
infer_x "input: 3 labels for 2 images" 'label' "$W/x_label_count.safetensors" --mode eval
infer_x "input: images of rank 3" 'images' "$W/x_rank3.safetensors" --mode eval
infer_x "input: images with 2 channels" 'images|channel' "$W/x_channels.safetensors" --mode eval
infer_x "input: images F64" 'images' "$W/x_f64.safetensors" --mode eval
infer_x "input: no 'images' tensor" 'images' "$W/x_noimages.safetensors" --mode eval
infer_x "input: batch of 0 images" 'images|batch|empty' "$W/x_empty_batch.safetensors" --mode eval
infer_x "input: --grads without labels" 'label' "$W/x_nolabels.safetensors" --mode train --grads
infer_x "input: --grads without labels (eval mode)" 'label' "$W/x_nolabels.safetensors" --mode eval --grads
rm -f "$SAVE"
infer_x "input: --sgd-lr without labels" 'label' "$W/x_nolabels.safetensors" --mode train --sgd-lr 0.1 --save-weights "$SAVE"
if [ -e "$SAVE" ]; then bad "input: --sgd-lr without labels (save)" "--save-weights file written"; fi
infer_x "input: file does not exist" 'no_such_input\.safetensors' "$W/no_such_input.safetensors" --mode eval
infer_x "input: truncated file" "$FRAMING" "$W/trunc_data.safetensors" --mode eval
expect_fail "output: directory does not exist" 'no_such_dir' "" \
  "$INFER" --weights "$GOOD" --input "$X" --output "$W/no_such_dir/y.safetensors"
expect_fail "save-weights: directory does not exist" 'no_such_dir' "$OUT" \
  "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --mode train --sgd-lr 0.1 --save-weights "$W/no_such_dir/w.safetensors"
# --- bf-infer arguments
expect_fail "bf-infer: unknown flag" 'frobnicate' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --frobnicate
expect_fail "bf-infer: --output without value" 'output' "" "$INFER" --weights "$GOOD" --input "$X" --output
expect_fail "bf-infer: --weights missing" 'weights' "$OUT" "$INFER" --input "$X" --output "$OUT"
expect_fail "bf-infer: --mode bogus" 'mode|bogus' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --mode bogus
expect_fail "bf-infer: --threads abc" 'threads|abc' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --threads abc
expect_fail "bf-infer: --threads -2" 'threads' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --threads -2
expect_fail "bf-infer: --sgd-lr 0.1x" 'sgd-lr|0\.1x' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --sgd-lr 0.1x --save-weights "$SAVE"
expect_fail "bf-infer: --sgd-lr without --save-weights" 'save-weights' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --sgd-lr 0.1
expect_fail "bf-infer: --label-smoothing 1.5" 'label-smoothing' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --label-smoothing 1.5
expect_fail "bf-infer: --unfolded with --mode train" 'unfolded' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" --mode train --unfolded
expect_fail "bf-infer: stray positional argument" 'stray' "$OUT" "$INFER" --weights "$GOOD" --input "$X" --output "$OUT" stray
# --- bf-init arguments
I=$W/init.safetensors
expect_fail "bf-init: --seed abc" 'seed|abc' "$I" "$INIT" --classes 10 --split-after 4 --dr 2 --seed abc --out "$I"
expect_fail "bf-init: --seed 12x" 'seed|12x' "$I" "$INIT" --classes 10 --split-after 4 --dr 2 --seed 12x --out "$I"
expect_fail "bf-init: --split-after 17" 'split-after|17' "$I" "$INIT" --classes 10 --split-after 17 --dr 2 --seed 1 --out "$I"
expect_fail "bf-init: --split-after -1" 'split-after|-1' "$I" "$INIT" --classes 10 --split-after -1 --dr 2 --seed 1 --out "$I"
expect_fail "bf-init: --dr 0 with --split-after 4" '--dr|d_r|dr' "$I" "$INIT" --classes 10 --split-after 4 --dr 0 --seed 1 --out "$I"
expect_fail "bf-init: --dr 2000 > D=256" '--dr|d_r|dr' "$I" "$INIT" --classes 10 --split-after 2 --dr 2000 --seed 1 --out "$I"
expect_fail "bf-init: --classes 0" 'classes' "$I" "$INIT" --classes 0 --split-after 0 --seed 1 --out "$I"
expect_fail "bf-init: --classes missing value" 'classes' "" "$INIT" --split-after 0 --seed 1 --out "$I" --classes
expect_fail "bf-init: unknown flag" 'frobnicate' "$I" "$INIT" --classes 10 --split-after 0 --seed 1 --out "$I" --frobnicate
expect_fail "bf-init: --out missing" 'out' "" "$INIT" --classes 10 --split-after 0 --seed 1
expect_fail "bf-init: --out in a missing directory" 'no_such_dir' "" "$INIT" --classes 10 --split-after 0 --seed 1 --out "$W/no_such_dir/w.safetensors"
# --- option spellings: '_' for '-' and --opt=VALUE name the same options (the same file results)
if "$INIT" --classes 10 --split-after 4 --dr 2 --seed 1 --out "$W/dash.safetensors" >/dev/null 2>"$W/stderr" &&
  "$INIT" --classes=10 --split_after=4 --dr=2 --seed 1 --out="$W/under.safetensors" >/dev/null 2>"$W/stderr" &&
  cmp -s "$W/dash.safetensors" "$W/under.safetensors"; then
  ok "bf-init: --split_after=4 --out=X spell the same options as --split-after 4 --out X"
else
  bad "bf-init: option spellings" "the '_' / '=' spellings fail or give another file"
fi
expect_fail "bf-init: unknown option with a value" 'no-such-option' "$I" "$INIT" --classes 10 --split-after 0 --out "$I" --no-such-option=3
# --- help
expect_help "bf-infer --help" "$INFER" --help
expect_help "bf-init --help" "$INIT" --help

echo "$pass passed, $fail failed"
if [ "$fail" -ne 0 ]; then
  printf 'failed: %s\n' "${failed_names[@]}"
  exit 1
fi
exit 0
