#!/usr/bin/env bash
# GPU throughput of our ResNet-50 (bf-bench --backend cuda) against PyTorch, same machine, same run.
#
#   bash bench/gpu_train.sh [BUILD_DIR]          (default BUILD_DIR: build)
#
# Cases:
#   train 224x224 batch 256, synthetic data: ours (fp32, no TF32) vs PyTorch
#     fp32 (TF32 off: the same arithmetic), AMP bf16 channels_last eager, and
#     bf16 under torch.compile when that works;
#   inference 224x224 batch 1 latency: ours (fp32) vs PyTorch fp32 and bf16.
# Prints images/s (and ms for batch 1) and the ratios ours/torch.
#
# Environment: BATCH (256), SIZE (224), ITERS (20), WARMUP (3), INFER_ITERS
#   (200), CLASSES (1000), PYTHON (python3; needs torch with CUDA +
#   torchvision), NO_COMPILE=1 skips torch.compile, BF_CUDA_MATH (passed
#   through to bf-bench: fp32 default, tf32, bf16).
# Needs an NVIDIA GPU (written for an H100). It has NOT been run by the
# project: the development machines have no GPU. Exit 1 if a run failed.
set -u

BUILD=${1:-build}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OURS=$BUILD/bin/bf-bench
PY=${PYTHON:-python3}
BATCH=${BATCH:-256}
SIZE=${SIZE:-224}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-3}
INFER_ITERS=${INFER_ITERS:-200}
CLASSES=${CLASSES:-1000}
LOG=$(mktemp "${TMPDIR:-/tmp}/bf_gpu_bench.XXXXXX")
TLOG=$(mktemp "${TMPDIR:-/tmp}/bf_gpu_bench_torch.XXXXXX")
trap 'rm -f "$LOG" "$TLOG"' EXIT

status=0
echo "gpu_train: batch=$BATCH size=$SIZE iters=$ITERS classes=$CLASSES ours=$OURS host=$(hostname) $(date -u +%FT%TZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n1)"
else
  echo "gpu: nvidia-smi not found"
fi

field() { grep -m1 -E "^$1=" "$LOG" | cut -d= -f2; }

# ---- ours ----
ours_train=n/a
ours_lat=n/a
if [ -x "$OURS" ]; then
  if "$OURS" --backend cuda --mode train --size "$SIZE" --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" \
       --classes "$CLASSES" >"$LOG" 2>&1 && [ -n "$(field images_per_sec)" ]; then
    ours_train=$(field images_per_sec)
  else
    ours_train=FAIL; status=1
    echo "  bf-bench train failed:"; tail -n 5 "$LOG" | sed 's/^/    /'
  fi
  echo "  ours train-$SIZE-b$BATCH: $ours_train img/s"
  if "$OURS" --backend cuda --mode infer --size "$SIZE" --batch 1 --iters "$INFER_ITERS" --warmup 20 \
       --classes "$CLASSES" >"$LOG" 2>&1 && [ -n "$(field sec_per_iter)" ]; then
    ours_lat=$(awk -v s="$(field sec_per_iter)" 'BEGIN { printf "%.3f", s * 1000 }')
  else
    ours_lat=FAIL; status=1
    echo "  bf-bench infer failed:"; tail -n 5 "$LOG" | sed 's/^/    /'
  fi
  echo "  ours infer-$SIZE-b1: $ours_lat ms"
else
  echo "  $OURS not built (configure with -DBF_CUDA=ON on a machine with nvcc), ours skipped"
fi

# ---- PyTorch ----
targs=(--batch "$BATCH" --size "$SIZE" --iters "$ITERS" --warmup "$WARMUP" --infer-iters "$INFER_ITERS"
       --classes "$CLASSES")
[ "${NO_COMPILE:-0}" = 1 ] && targs+=(--no-compile)
if ! "$PY" "$HERE/gpu_train_torch.py" "${targs[@]}" >"$TLOG" 2>&1; then
  status=1
  echo "  gpu_train_torch.py failed:"; tail -n 5 "$TLOG" | sed 's/^/    /'
fi
grep '^#' "$TLOG" | sed 's/^/  /'
tval() { grep -m1 -E "^$1 " "$TLOG" | tr ' ' '\n' | grep -m1 -E "^$2=" | cut -d= -f2; }

ratio() {  # ours/torch for throughputs, torch/ours for latencies ($3 = lat)
  case "$1$2" in *FAIL*|*n/a*|"$1") echo "-"; return ;; esac
  [ -z "$2" ] && { echo "-"; return; }
  if [ "${3:-}" = lat ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'
  else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}

echo
printf "%-42s %14s %14s %8s\n" "case" "ours" "torch" "speed"
for cfg in train.fp32 train.bf16 train.bf16.compile; do
  t=$(tval "$cfg" images_per_sec)
  printf "%-42s %14s %14s %8s\n" "train-$SIZE-b$BATCH img/s vs $cfg" "$ours_train" "${t:-n/a}" \
    "$(ratio "$ours_train" "$t")"
done
for cfg in infer1.fp32 infer1.bf16; do
  t=$(tval "$cfg" latency_ms)
  printf "%-42s %14s %14s %8s\n" "infer-$SIZE-b1 ms vs $cfg" "$ours_lat" "${t:-n/a}" \
    "$(ratio "$ours_lat" "$t" lat)"
done
echo "(speed = ours/torch in throughput: > 1 means ours is faster)"
exit $status
