#!/usr/bin/env bash
# A deployed model classifies as bf-train evaluates (issue 15, part 4): a
# butterfly ResNet-50 (RB4, D_r 2) trained for 25 steps of 100 images on Debian's
# Fashion-MNIST (configs/fashion-mnist.ini) is exported with NO preprocessing
# flags (bf-export takes them from the checkpoint's recipe: 32x32, no resize,
# the 28x28 image zero-padded by the center crop, mean/std 0.2860/0.3530) and
# bf-client --local classifies the first 200 test images, exported as PNG by
# bf-data; bf-train --eval-predictions gives its evaluation's top-1 for the
# same 200 images. They must agree on >= 99% (BN folding changes the float
# sums a little, so a near-tie may flip). The model must predict at least 3
# classes (a constant model would agree trivially).
#   deploy_matches_eval.sh BIN_DIR SRC WORK
set -euo pipefail
BIN=$1
SRC=$2
W=$3
FM=/usr/share/datasets/fashion-mnist
if [ ! -d "$FM" ]; then
  echo "SKIP: $FM missing (apt-get install dataset-fashion-mnist)"
  exit 77
fi
rm -rf "$W"
mkdir -p "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN/bf-train" --config "$SRC/configs/fashion-mnist.ini" --data.root "$FM" --run-dir "$W/run" --no-progress --quiet \
  --model.split_after 4 --model.d_r 2 --train.batch_size 100 --train.max_steps_per_epoch 25 \
  --train.warmup_epochs 0 --train.eval_max_batches 2 --eval-predictions "$W/eval.csv" >"$W/train.log" 2>&1 ||
  { tail -20 "$W/train.log"; fail "bf-train"; }
[ "$(tail -n +2 "$W/eval.csv" | wc -l)" -eq 200 ] || fail "eval.csv does not hold 200 predictions"

"$BIN/bf-export" --checkpoint "$W/run/last.safetensors" --out-dir "$W/deploy" >"$W/export.log" 2>&1 ||
  { cat "$W/export.log"; fail "bf-export"; }
! grep -q warning "$W/export.log" || fail "bf-export found no recipe in a new checkpoint: $(cat "$W/export.log")"
/usr/bin/python3 - "$W/deploy/split-4/manifest.json" <<'PY' || fail "manifest preprocessing"
import json, sys
m = json.load(open(sys.argv[1]))
i, n = m["input"], m["normalization"]
assert (i["height"], i["width"], i["resize_shorter"]) == (32, 32, 0), i
assert all(abs(v - 0.2860) < 1e-6 for v in n["mean"]) and all(abs(v - 0.3530) < 1e-6 for v in n["std"]), n
PY

"$BIN/bf-data" export-png "$FM" "$W/png" --limit 200 --quiet >/dev/null
mapfile -t IMG < <(ls "$W"/png/test/*/*.png)
[ "${#IMG[@]}" -eq 200 ] || fail "${#IMG[@]} test PNGs, not 200"
"$BIN/bf-client" --deploy "$W/deploy" --local --threads 2 "${IMG[@]}" >"$W/client.log" 2>&1 ||
  { tail "$W/client.log"; fail "bf-client"; }

/usr/bin/python3 - "$W/eval.csv" "$W/client.log" <<'PY'
import csv, os, sys
ev = {int(r["index"]): int(r["top1"]) for r in csv.DictReader(open(sys.argv[1]))}
cl = {}
for line in open(sys.argv[2]):
    if not line.startswith("RESULT"):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    cl[int(os.path.basename(kv["image"]).split(".")[0])] = int(kv["top1"])
assert len(cl) == 200, f"{len(cl)} RESULT lines"
assert set(cl) <= set(ev), "client images missing from the evaluation"
agree = sum(cl[i] == ev[i] for i in cl)
classes = len(set(ev[i] for i in cl))
print(f"bf-client --local agrees with bf-train's evaluation on {agree}/200 images; {classes} classes predicted")
assert classes >= 3, "the model predicts fewer than 3 classes: the comparison would prove nothing"
assert agree >= 198, f"only {agree}/200 agree (need >= 99%)"
PY
echo OK
