#!/usr/bin/env bash
# Quantisation-aware training end to end (issue 16, item 1). A tiny butterfly
# ResNet-50 (configs/ci-tiny.ini: RB4, D_r 2, 32x32 synthetic data) trained
# for 3 steps of 8 images is fine-tuned for 2 steps with model.quant_bits 4
# and 2, and
# exported. For each:
# - manifest.json's quantization.bits/clip are the checkpoint's quant_bits and
#   its learned clip, float for float;
# - split_qat_codes: the device half + bf-client's encoder give the same codes
#   as the training op on the same features (and as the training model's eval
#   forward except at rounding ties);
# - bf-client --split through bf-serve sends exactly those codes
#   (--dump-codes, cmp), and its logits equal bf-infer's (eval: the folded
#   engine with the trained quantiser between reduce and restore) and
#   bf-client --local's within 1e-4, with the same top-1 on every image;
# - codec rans with tables of the b-bit codes (bf-export --rans-data): the
#   codes decoded from the stream are the raw codes, top-5 and logits equal
#   --codec raw's, and the frames are smaller (bytes printed, also for the
#   8-bit float model); tables of other bits are refused;
# - bad quantisation configs and manifests give one error naming the key or
#   the file and field.
#   qat_e2e.sh BIN_DIR SRC WORK
set -euo pipefail
BIN=$1
SRC=$2
W=$3
rm -rf "$W"
mkdir -p "$W"
SERVE_ARGS=(--listen 127.0.0.1:0)
. "$(dirname "$0")/serve_lib.sh"

/usr/bin/python3 "$SRC/tools/make-synthetic-dataset" imagefolder "$W/data" --classes 4 --per-class 16 --size 32x32 \
  --seed 1 >/dev/null
T=("$BIN/bf-train" --config "$SRC/configs/ci-tiny.ini" --data.root "$W/data" --quiet --no-progress --train.epochs 1
   --train.eval_max_batches 1 --train.batch_size 8 --threads 2)
"${T[@]}" --run-dir "$W/float" --train.max_steps_per_epoch 3 >"$W/float.log" 2>&1 || { cat "$W/float.log"; fail "bf-train float"; }
mapfile -t IMG < <(ls "$W"/data/class_0*/img_000[0-2].png)
[ "${#IMG[@]}" -eq 12 ] || fail "${#IMG[@]} images, not 12"
one_error() { # expected-substring command...
  local want=$1; shift
  if "$@" >"$W/err.out" 2>"$W/err.txt"; then fail "accepted: $*"; fi
  [ "$(wc -l <"$W/err.txt")" -eq 1 ] && grep -q -- "$want" "$W/err.txt" ||
    { cat "$W/err.txt"; fail "error for '$*' is not one line with '$want'"; }
}
# rans_vs_raw TAG DEPLOY PORT: --codec rans sends the raw codes (decoded back
# from its stream), gets raw's top-5 (classes and logits, as printed) and
# costs fewer bytes
rans_vs_raw() {
  local t=$1 d=$2 p=$3 r s
  local -a C=("$BIN/bf-client" --threads 1 --deploy "$d" --server "127.0.0.1:$p" --split 4)
  "${C[@]}" --codec raw --dump-codes "$W/codes$t.raw" "${IMG[@]}" >"$W/raw$t.txt" || fail "$t: --codec raw"
  "${C[@]}" --codec rans --dump-codes "$W/codes$t.rans" "${IMG[@]}" >"$W/rans$t.txt" || fail "$t: --codec rans"
  cmp "$W/codes$t.raw" "$W/codes$t.rans" || fail "$t: the rans stream decodes to other codes than raw's"
  [ "$(top5 "$W/rans$t.txt" | wc -l)" -eq 12 ] || fail "$t: not 12 rans results"
  diff <(top5 "$W/raw$t.txt") <(top5 "$W/rans$t.txt") || fail "$t: rans top-5/logits differ from raw"
  r=$(grep -o ' bytes=[0-9]*' "$W/raw$t.txt" | awk -F= '{ s += $2 } END { print s / NR }')
  s=$(grep -o ' bytes=[0-9]*' "$W/rans$t.txt" | awk -F= '{ s += $2 } END { print s / NR }')
  awk -v r="$r" -v s="$s" 'BEGIN { exit !(s < r) }' || fail "$t: rans $s B per frame, not below raw $r B"
  echo "$t: rans == raw (codes, top-5, logits); INFER frame bytes per image: raw $r, rans $s (12 images)"
}

for b in 4 2; do
  "${T[@]}" --run-dir "$W/q$b" --init "$W/float/last.safetensors" --model.quant_bits $b \
    --train.max_steps_per_epoch 2 >"$W/q$b.log" 2>&1 || { cat "$W/q$b.log"; fail "bf-train quant_bits $b"; }
  CK="$W/q$b/last.safetensors"
  "$BIN/bf-export" --checkpoint "$CK" --out-dir "$W/deploy$b" --rans-data "$W/data" >"$W/export$b.log" 2>&1 ||
    { cat "$W/export$b.log"; fail "bf-export $b bits"; }
  D="$W/deploy$b/split-4"
  /usr/bin/python3 - "$D/manifest.json" "$CK" $b <<'PY' || fail "manifest of the $b-bit export"
import json, struct, sys
m = json.load(open(sys.argv[1]))
q = m["quantization"]
f = open(sys.argv[2], "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
assert h["__metadata__"]["quant_bits"] == sys.argv[3], h["__metadata__"]
t = h["butterfly.reduce.quant.clip"]
f.seek(8 + n + t["data_offsets"][0])
clip = struct.unpack("<f", f.read(4))[0]
assert q["bits"] == int(sys.argv[3]) and q["granularity"] == "per_tensor", q
assert struct.pack("<f", q["clip"]) == struct.pack("<f", clip), (q["clip"], clip)
assert q["rans"]["symbols"] == 2 ** int(sys.argv[3]) and q["rans"]["channels"] == 2, q["rans"]
print(f"manifest: bits {q['bits']} clip {q['clip']} (checkpoint {clip})")
PY
  "$BIN/split_qat_codes" "$D" "$CK" "$W/codes$b.ref" "$W/input$b.safetensors" "${IMG[@]}" || fail "codes, $b bits"

  start_server S$b --deploy "$W/deploy$b"
  port=$(eval echo \$S${b}_PORT)
  C=("$BIN/bf-client" --threads 1 --deploy "$W/deploy$b")
  "${C[@]}" --server "127.0.0.1:$port" --split 4 --dump-codes "$W/codes$b.client" "${IMG[@]}" >"$W/split$b.txt" ||
    fail "bf-client --split, $b bits"
  cmp "$W/codes$b.ref" "$W/codes$b.client" || fail "$b bits: bf-client sent other codes than the training quantiser's"
  "${C[@]}" --local "${IMG[@]}" >"$W/local$b.txt" || fail "bf-client --local, $b bits"
  compare_logits "$W/local$b.txt" "$W/split$b.txt" || fail "$b bits: split logits differ from --local"
  rans_vs_raw "${b}-bit QAT" "$W/deploy$b" "$port"
  one_error "rans tables of $b bits, the codes have 8" "${C[@]}" --server "127.0.0.1:$port" --split 4 \
    --quant per-tensor --codec rans "${IMG[0]}"
  "$BIN/bf-infer" --weights "$CK" --input "$W/input$b.safetensors" --output "$W/infer$b.safetensors" --threads 1 \
    >/dev/null || fail "bf-infer, $b bits"
  /usr/bin/python3 - "$W/infer$b.safetensors" "$W/split$b.txt" <<'PY' || fail "$b bits: bf-client/bf-serve vs bf-infer"
import json, os, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
t = h["logits"]
N, C = t["shape"]
f.seek(8 + n + t["data_offsets"][0])
lg = struct.unpack(f"<{N*C}f", f.read(4 * N * C))
res = [l for l in open(sys.argv[2]) if l.startswith("RESULT")]
assert len(res) == N, (len(res), N)
ok_i = ok_c = 0
for i, line in enumerate(res):
    kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
    label = int(os.path.basename(os.path.dirname(kv["image"])).split("_")[1])
    row = lg[i * C:(i + 1) * C]
    top = max(range(C), key=lambda j: row[j])
    assert int(kv["top1"]) == top, (i, kv["top1"], top)
    for p in kv["top5"].split(","):
        c, l, _ = p.split(":")
        assert abs(float(l) - row[int(c)]) <= 1e-4 * max(1, abs(row[int(c)])), (i, c, l, row[int(c)])
    ok_i += top == label
print(f"bf-client/bf-serve == bf-infer: {N} images, same top-1, logits within 1e-4; top-1 accuracy {ok_i}/{N} both")
PY
done

# the float model's 8-bit codes (the range of each image) for comparison
"$BIN/bf-export" --checkpoint "$W/float/last.safetensors" --out-dir "$W/deploy8" --rans-data "$W/data" \
  >"$W/export8.log" 2>&1 || { cat "$W/export8.log"; fail "bf-export float"; }
start_server S8 --deploy "$W/deploy8"
rans_vs_raw "8-bit float" "$W/deploy8" "$S8_PORT"

# configuration and manifest errors: one line naming the key, or the file and field
TE=("$BIN/bf-train" --config "$SRC/configs/ci-tiny.ini" --data.root "$W/data" --run-dir "$W/bad" --quiet)
one_error "model.quant_bits: 1 is not supported" "${TE[@]}" --model.quant_bits 1
one_error "model.quant_bits" "${TE[@]}" --model.quant_bits 9
one_error "model.quant_bits: 4 needs a butterfly unit" "${TE[@]}" --model.quant_bits 4 --model.split_after 0
one_error "quant_bits=4" "$BIN/bf-train" --quiet --resume "$W/q4" --model.quant_bits 2 --train.epochs 2
one_error "per-tensor codes" "$BIN/bf-export" --checkpoint "$W/q4/last.safetensors" --out-dir "$W/bad" --quant per-channel
edit() { # key value-json -> a copy of the 4-bit export with quantization.<key> set (null: removed)
  rm -rf "$W/edit" && cp -r "$W/deploy4" "$W/edit"
  /usr/bin/python3 - "$W/edit/split-4/manifest.json" "$1" "$2" <<'PY'
import json, sys
p, k, v = sys.argv[1:]
m = json.load(open(p))
v = json.loads(v)
if v is None:
    del m["quantization"][k]
else:
    m["quantization"][k] = v
open(p, "w").write(json.dumps(m))
PY
}
L=("$BIN/bf-client" --threads 1 --deploy "$W/edit" --local "${IMG[0]}")
for v in 1 9 4.5 '"4"'; do
  edit bits "$v"
  one_error "manifest.json: quantization.bits must be an integer in 2..8" "${L[@]}"
done
for v in 0 -1 1e39 '"x"'; do
  edit clip "$v"
  one_error "manifest.json: quantization.clip must be a finite number > 0" "${L[@]}"
done
edit clip null
one_error "manifest.json: quantization.bits 4 needs quantization.clip" "${L[@]}"
edit bits null
one_error "manifest.json: quantization.clip needs quantization.bits" "${L[@]}"
edit clip 1.5
one_error "trained with bits 4" "${L[@]}"
# the 8-bit tables of the float export in the 4-bit export (SHA-256 updated)
edit bits 4
cp "$W/deploy8/split-4/rans_tables.bin" "$W/edit/split-4/"
/usr/bin/python3 - "$W/edit/split-4" <<'PY'
import hashlib, json, sys
p = sys.argv[1] + "/manifest.json"
m = json.load(open(p))
m["quantization"]["rans"]["sha256"] = hashlib.sha256(open(sys.argv[1] + "/rans_tables.bin", "rb").read()).hexdigest()
open(p, "w").write(json.dumps(m))
PY
one_error "tables for 2 channels of 8 bits, .*manifest.json has d_r 2, bits 4" "${L[@]}"
echo OK
