#!/usr/bin/env bash
# Acceptance 2 of issue 4: bf-train vs PyTorch on real data, then a butterfly
# fine-tune from the bf-train baseline. Results go to docs/results.md by hand.
#
#   bench/train_compare.sh [BUILD_DIR] [OUT_DIR]
#
# Environment (defaults = the documented run):
#   EPOCHS=1 THREADS=2 MAX_STEPS=0 (0 = whole epochs) SKIP_TORCH=0 SKIP_FT=0
#   FT_SPLIT=8 FT_DR=2 FT_EPOCHS=1 FT_LR=0.005 (fine-tune base lr; same schedule)
#   SKIP_BASE=1 reuses OUT/bf-baseline
#
# 1. bf-train: configs/fashion-mnist.ini (plain ResNet-50, Fashion-MNIST from
#    Debian at 32x32, batch 128, lr 0.02, warm-up 0.2 epoch + cosine, wd 5e-4).
# 2. PyTorch: bench/train_compare_torch.py, same data, augmentation, recipe
#    and thread count (Debian's python3-torch).
# 3. bf-train: butterfly after RB${FT_SPLIT} with D_r = ${FT_DR}, warm-started
#    (--init) from step 1's weights, fine-tuned for ${FT_EPOCHS} epoch(s).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-runs/train_compare}
EPOCHS=${EPOCHS:-1}
THREADS=${THREADS:-2}
MAX_STEPS=${MAX_STEPS:-0}
FT_SPLIT=${FT_SPLIT:-8}
FT_DR=${FT_DR:-2}
FT_EPOCHS=${FT_EPOCHS:-1}
FT_LR=${FT_LR:-0.005}
BF=$BUILD/bin/bf-train
[ -x "$BF" ] || { echo "no $BF: build first (cmake -S . -B $BUILD && cmake --build $BUILD)" >&2; exit 1; }
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS

common=(--config configs/fashion-mnist.ini --threads "$THREADS" --data.threads "$THREADS"
        --train.epochs "$EPOCHS" --train.max_steps_per_epoch "$MAX_STEPS" --no-progress --force)

if [ "${SKIP_BASE:-0}" != 1 ]; then
  echo "== 1. bf-train baseline (ResNet-50, $EPOCHS epoch(s), $THREADS threads)"
  "$BF" "${common[@]}" --run_dir "$OUT/bf-baseline" 2> >(tee "$OUT/bf-baseline.log" >&2)
fi

if [ "${SKIP_TORCH:-0}" != 1 ]; then
  echo "== 2. PyTorch baseline (same recipe)"
  /usr/bin/python3 bench/train_compare_torch.py --epochs "$EPOCHS" --threads "$THREADS" \
    --max-steps-per-epoch "$MAX_STEPS" --out "$OUT/torch.json" 2>&1 | tee "$OUT/torch.log"
fi

if [ "${SKIP_FT:-0}" != 1 ]; then
  echo "== 3. butterfly RB$FT_SPLIT, D_r=$FT_DR, warm start from the bf-train baseline, $FT_EPOCHS epoch(s), lr $FT_LR"
  "$BF" "${common[@]}" --train.epochs "$FT_EPOCHS" --train.lr "$FT_LR" --model.split_after "$FT_SPLIT" --model.d_r "$FT_DR" \
    --init "$OUT/bf-baseline/last.safetensors" --name "fashion-rb$FT_SPLIT-dr$FT_DR" \
    --run_dir "$OUT/bf-rb$FT_SPLIT-dr$FT_DR" 2> >(tee "$OUT/bf-ft.log" >&2)
fi

echo "== summary"
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def show(label, path):
    if not os.path.exists(path):
        print("%-34s (not run)" % label); return
    r = json.load(open(path))
    print("%-34s top-1 %.4f  top-5 %.4f  %7.1f s  %6.1f img/s" %
          (label, r["top1"], r["top5"], r["train_time_sec"], r["images_per_sec"]))
show("bf-train ResNet-50", os.path.join(out, "bf-baseline", "result.json"))
show("PyTorch ResNet-50", os.path.join(out, "torch.json"))
for d in sorted(os.listdir(out)):
    if d.startswith("bf-rb"):
        show("bf-train " + d[3:] + " (warm start)", os.path.join(out, d, "result.json"))
PY
