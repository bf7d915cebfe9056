#!/usr/bin/env bash
# The arm64 device side against this (x86) build, under qemu-user:
#   arm64_qemu.sh SRC_ROOT X86_BIN_DIR ARM64_BUILD_DIR WORK_DIR
# 1. cross-builds the device side (tools/build-arm64 ARM64_BUILD_DIR;
#    incremental, so a tree built before costs nothing);
# 2. exports a small deploy directory (two split points, random models with
#    random BN statistics, 32x32 input) with the x86 tools;
# 3. runs the device half of each split on 3 images with the x86 and the arm64
#    split_device_dump and compares: float features within 1e-4 relative
#    (max |diff| / max |x86|), 8-bit codes (per tensor, per channel) within +-1;
# 4. runs the arm64 bf-client under qemu against an x86 bf-serve on
#    127.0.0.1: with float features its top-5 logits equal the x86 client's
#    within 1e-4; with 8-bit features its top-1 equals the x86 client's;
# 5. where the tree has bf-profile: the arm64 device profile names the same
#    split points, feature shapes and frame sizes as the x86 one.
# Exits 77 (skip) where the cross compiler or qemu-aarch64 is missing.
set -euo pipefail
SRC=$1
BIN=$2
ARMB=$3
W=$4
for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not found (tools/install-deps installs the arm64 cross toolchain and qemu-user)"
    exit 77
  fi
done
rm -rf "$W"
mkdir -p "$W"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
. "$SRC/tests/split/serve_lib.sh"  # cleanup, fail, top5/top1, compare_logits
# The cross libc's loader; the arm64 multiarch libraries are found in
# /usr/lib/aarch64-linux-gnu, as on a Debian arm64 system.
QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu)

t0=$(date +%s.%N)
JOBS=${JOBS:-2} "$SRC/tools/build-arm64" "$ARMB" >"$W/build-arm64.log" 2>&1 || {
  tail -30 "$W/build-arm64.log"
  fail "the arm64 cross-build failed (log above)"
}
t1=$(date +%s.%N)
aarch64-linux-gnu-readelf -h "$ARMB/bin/bf-client" | grep -q 'Machine:.*AArch64' || fail "$ARMB/bin/bf-client is not an arm64 executable"
printf 'cross-build: %.1f s\n' "$(echo "$t1 - $t0" | bc -l)"

"$BIN/split_testgen" model "$W/m3.safetensors" 10 3 2 31
"$BIN/split_testgen" model "$W/m9.safetensors" 10 9 4 32
"$BIN/split_testgen" images "$W/img" 3 40 700
"$BIN/bf-export" --checkpoint "$W/m3.safetensors" --checkpoint "$W/m9.safetensors" --out-dir "$W/deploy" \
  --input-size 32 >/dev/null
IMGS=("$W"/img/*.png)

for k in 3 9; do
  "$BIN/split_device_dump" dump "$W/deploy" $k "$W/x86_$k.safetensors" "${IMGS[@]}"
  "${QEMU[@]}" "$ARMB/bin/split_device_dump" dump "$W/deploy" $k "$W/arm64_$k.safetensors" "${IMGS[@]}" ||
    fail "split $k: the arm64 device half failed under qemu"
  echo "split $k: arm64 device half vs x86:"
  "$BIN/split_device_dump" compare "$W/x86_$k.safetensors" "$W/arm64_$k.safetensors" 1e-4 1 ||
    fail "split $k: the arm64 device half differs from the x86 one"
done
t2=$(date +%s.%N)

SERVE_ARGS=(--deploy "$W/deploy" --listen 127.0.0.1:0)
start_server S
ARGS=(--threads 1 --deploy "$W/deploy" --server "127.0.0.1:$S_PORT")

for k in 3 9; do
  for q in none per-tensor; do
    "$BIN/bf-client" "${ARGS[@]}" --split $k --quant $q "${IMGS[@]}" >"$W/x86_${k}_$q.txt"
    "${QEMU[@]}" "$ARMB/bin/bf-client" "${ARGS[@]}" --split $k --quant $q "${IMGS[@]}" >"$W/arm64_${k}_$q.txt" ||
      fail "split $k: the arm64 bf-client failed under qemu (--quant $q)"
    [ "$(grep -c '^RESULT' "$W/arm64_${k}_$q.txt")" = ${#IMGS[@]} ] || fail "split $k: expected ${#IMGS[@]} results"
  done
  compare_logits "$W/x86_${k}_none.txt" "$W/arm64_${k}_none.txt" ||
    fail "split $k: arm64 bf-client's float-feature logits differ from the x86 client's"
  [ "$(top1 "$W/x86_${k}_per-tensor.txt")" = "$(top1 "$W/arm64_${k}_per-tensor.txt")" ] ||
    fail "split $k: arm64 bf-client's 8-bit top-1 differs from the x86 client's"
  echo "split $k: arm64 bf-client (qemu) + x86 bf-serve: float-feature top-5 logits within 1e-4, 8-bit top-1 equal;" \
    "device_ms arm64 (qemu) $(grep -m1 -o 'device_ms=[0-9.]*' "$W/arm64_${k}_none.txt" | cut -d= -f2)" \
    "x86 $(grep -m1 -o 'device_ms=[0-9.]*' "$W/x86_${k}_none.txt" | cut -d= -f2)"
done
t3=$(date +%s.%N)

# The device profile (bf-profile, where this tree has it) on arm64: it runs
# and describes the same split points, feature shapes and frame sizes as x86.
if [ -x "$BIN/bf-profile" ] && [ -x "$ARMB/bin/bf-profile" ]; then
  P=(--deploy "$W/deploy" --side device --warmup 1 --runs 3)
  "$BIN/bf-profile" "${P[@]}" --out "$W/x86-profile.json" >/dev/null
  "${QEMU[@]}" "$ARMB/bin/bf-profile" "${P[@]}" --out "$W/arm64-profile.json" >/dev/null ||
    fail "the arm64 bf-profile failed under qemu"
  /usr/bin/python3 - "$W/x86-profile.json" "$W/arm64-profile.json" <<'PY' || fail "the arm64 device profile differs"
import json, sys
def shape(path):
    with open(path) as f:
        p = json.load(f)
    assert p["side"] == "device", path
    return [(s["model_id"], s["split"], s["d_r"], s["feature_shape"], s["frame_bytes"]["float32"],
             s["frame_bytes"]["raw"]) for s in p["splits"]]
a, b = shape(sys.argv[1]), shape(sys.argv[2])
if a != b or len(a) != 2:
    sys.exit("x86 %s\narm64 %s" % (a, b))
print("arm64 bf-profile: %d split points, same model ids, feature shapes and frame sizes as x86" % len(b))
PY
else
  echo "bf-profile is not in this tree: the arm64 device profile is not checked"
fi
t4=$(date +%s.%N)
printf 'times: cross-build %.1f s, device-half dumps %.1f s, bf-client runs %.1f s, bf-profile %.1f s\n' \
  "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t1" | bc -l)" "$(echo "$t3 - $t2" | bc -l)" "$(echo "$t4 - $t3" | bc -l)"
echo "PASS"
