#!/usr/bin/env bash
# Codec rans end to end (issue 16):
#   split_rans.sh BIN_DIR WORK_DIR
# - bf-export --rans-data: a missing data set is one clear error and writes nothing;
#   with a data set the manifest names rans_tables.bin and its SHA-256, and counts the
#   channels coded with spatial prediction as the file does
# - the real features of both exported device halves round-trip losslessly
#   (test_split_rans features), with the bytes per image for raw, zstd, rans
# - bf-client --codec rans gets the same top-5 from bf-serve as --codec raw; truncated,
#   overlong and bad-state rans streams get ERROR BAD_PAYLOAD and the server goes on serving
# - a tables file changed after export is refused at load
set -euo pipefail
BIN=$1
W=$2
rm -rf "$W"
mkdir -p "$W"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
SERVE_ARGS=(--listen 127.0.0.1:0)
. "$(dirname "$0")/serve_lib.sh"

"$BIN/split_testgen" model "$W/m2.safetensors" 10 2 4 11
"$BIN/split_testgen" model "$W/m12.safetensors" 10 12 8 12
# an ImageFolder training set: two classes of generated images
"$BIN/split_testgen" images "$W/img" 12 80 500
mkdir -p "$W/data/a" "$W/data/b"
i=0
for f in "$W"/img/*.png; do
  if [ $((i % 2)) = 0 ]; then cp "$f" "$W/data/a/"; else cp "$f" "$W/data/b/"; fi
  i=$((i + 1))
done
IMGS=("$W"/img/img_00{0,1,2,3}.png)

if "$BIN/bf-export" --checkpoint "$W/m2.safetensors" --out-dir "$W/none" --input-size 64 \
    --rans-data "$W/no-such-data" >/dev/null 2>"$W/missing.err"; then
  fail "bf-export accepted a missing data set"
fi
grep -q "no-such-data" "$W/missing.err" || { cat "$W/missing.err"; fail "the error does not name the data set"; }
[ "$(grep -c error "$W/missing.err")" = 1 ] || { cat "$W/missing.err"; fail "not one error line"; }
[ ! -e "$W/none" ] || fail "bf-export wrote $(find "$W/none") without its data set"
echo "missing data set: $(grep error "$W/missing.err")"

"$BIN/bf-export" --checkpoint "$W/m2.safetensors" --checkpoint "$W/m12.safetensors" --out-dir "$W/deploy" \
  --input-size 64 --rans-data "$W/data" --rans-images 6 >/dev/null
for k in 2 12; do
  grep -q '"file":.*"rans_tables.bin"' "$W/deploy/split-$k/manifest.json" || fail "split $k: no rans tables"
  grep -q '"images":.*6' "$W/deploy/split-$k/manifest.json" || fail "split $k: not 6 images"
done
# spatial prediction: the manifest's count is the tables file's, and split 2's
# 16x16 maps have channels that chose it (so bf-serve below decodes predicted
# streams); a file with none predicted is version 01
/usr/bin/python3 - "$W/deploy" <<'PY' || fail "predicted channels"
import json, struct, sys
n = {}
for k in (2, 12):
    d = "%s/split-%d" % (sys.argv[1], k)
    r = json.load(open(d + "/manifest.json"))["quantization"]["rans"]
    b = open(d + "/rans_tables.bin", "rb").read()
    ch, bits = struct.unpack("<II", b[8:16])
    pred = b[20 + 2 * (ch << bits):]
    assert b[:8] == (b"BFRANS02" if any(pred) else b"BFRANS01"), (k, b[:8])
    assert r["predicted_channels"] == sum(1 for p in pred if p), (k, r["predicted_channels"], list(pred))
    n[k] = r["predicted_channels"]
assert n[2] >= 1, n
print("predicted channels: split 2: %d of 4, split 12: %d of 8" % (n[2], n[12]))
PY

"$BIN/test_split_rans" features "$W/deploy" "${IMGS[@]}"

start_server A --deploy "$W/deploy"
C=("$BIN/bf-client" --threads 1 --deploy "$W/deploy" --server "127.0.0.1:$A_PORT")
for k in 2 12; do
  for q in per-tensor per-channel; do
    "${C[@]}" --split $k --quant $q --codec raw "${IMGS[@]}" >"$W/raw_$k.txt"
    "${C[@]}" --split $k --quant $q --codec rans "${IMGS[@]}" >"$W/rans_$k.txt"
    [ "$(grep -c '^RESULT' "$W/rans_$k.txt")" = 4 ] || fail "split $k: expected 4 results"
    diff <(top5 "$W/raw_$k.txt") <(top5 "$W/rans_$k.txt") || fail "split $k $q: rans top-5 differs from raw"
    echo "split $k $q: rans top-5 == raw; bytes raw $(grep -m1 -o 'bytes=[0-9]*' "$W/raw_$k.txt")" \
      "rans $(grep -m1 -o 'bytes=[0-9]*' "$W/rans_$k.txt")"
  done
done

# hostile rans streams against the server: BAD_PAYLOAD, and it goes on serving
"$BIN/test_split_rans" serve "127.0.0.1:$A_PORT" "$W/deploy/split-2"

# a tables file changed after export
cp -r "$W/deploy/split-2" "$W/tampered"
printf '\001' | dd of="$W/tampered/rans_tables.bin" bs=1 seek=30 conv=notrunc 2>/dev/null
if "$BIN/bf-client" --deploy "$W/tampered" --local --split 2 "${IMGS[0]}" >/dev/null 2>"$W/tamper.err"; then
  fail "a changed tables file was accepted"
fi
grep -q "rans_tables.bin: SHA-256 differs" "$W/tamper.err" || { cat "$W/tamper.err"; fail "unclear tamper error"; }
echo "tampered tables: $(cat "$W/tamper.err")"
kill -TERM "$A_PID"
wait "$A_PID" || fail "bf-serve exited with $? after SIGTERM"
rm -rf "$W" # ~450 MB of ResNet-50 halves
echo "OK"
