#!/usr/bin/env bash
# Batch-1/8 inference latency of our folded engine against ONNX Runtime and
# PyTorch: same machine, same threads, one run (docs/benchmarks.md).
#
#   bash bench/infer_bench.sh [BUILD_DIR]          (default BUILD_DIR: build)
#
# Environment: THREADS (default 2), ITERS (timed calls per round, default 20),
#   ROUNDS (default 2: each peer runs ITERS calls per round, peers interleaved,
#   so load drifts hit all of them alike), WARMUP (default 3), DR (the
#   butterfly unit's D_r, default 64), KS (split points, default "1 4 8 14"),
#   TORCH=0 to leave PyTorch out, WORK (cache dir, default BUILD_DIR/infer-bench),
#   WAIT: how idle pool threads wait between parallel regions, the same for
#   every peer (default passive):
#     passive - OMP_WAIT_POLICY=passive, ORT session.intra_op.allow_spinning
#               0: every parallel region pays a thread wake-up;
#     spin    - as each peer ships: a short spin, then sleep: ours as bf-serve
#               runs (OMP_WAIT_POLICY=passive, GOMP_SPINCOUNT default 1000),
#               ORT allow_spinning 1 (its default, also bounded);
#     active  - OMP_WAIT_POLICY=active (spin forever), ORT allow_spinning 1.
#   On a machine loaded by other work, spinning 2-thread teams lose a scheduler
#   slice at many barriers: measured 448 ms active vs 35 ms passive for our
#   whole model at load ~5 on 2 cores. A set OMP_WAIT_POLICY without WAIT is
#   taken as WAIT.
# Ours: bf-init makes a random-init 1000-class checkpoint per split point k,
#   bf-export folds and splits it, bf-bench --halves times the engine on the
#   device half, the server half, or both (the whole model: k = 14's halves).
# Peers: the same graphs built from torchvision's resnet50 (random weights:
#   the same shapes, not the same numbers): device = stem..RBk + reduction
#   (1x1 conv + BN + ReLU to D_r), server = restoration (1x1 conv + BN + ReLU)
#   + RBk+1..RB16 + head, exported with torch.onnx (opset 13) for ONNX Runtime
#   (CPU provider, intra-op threads = THREADS, all graph optimisations) and run
#   by PyTorch (eval, no_grad, torch.set_num_threads(THREADS)).
# Prints per case the median and p90 latency (ms) of each, ratio ORT/ours
#   (> 1: ours faster); per case the GFLOP/s of ours and ORT as a fraction of
#   this CPU's fp32 FMA peak (bench/peak_flops.sh at THREADS threads, the best
#   of a measurement before and one after the timings) and, for the whole
#   model, of the OpenBLAS sgemm peak; peak memory (max RSS) of the whole
#   model for ours and ORT. About 3 minutes on 2 cores with the defaults.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
export THREADS=${THREADS:-2} ITERS=${ITERS:-20} ROUNDS=${ROUNDS:-2} WARMUP=${WARMUP:-3} DR=${DR:-64}
export KS=${KS:-"1 4 8 14"} TORCH=${TORCH:-1}
WAIT=${WAIT:-${OMP_WAIT_POLICY:-passive}}
WAIT=$(echo "$WAIT" | tr '[:upper:]' '[:lower:]')
case $WAIT in
  passive | active) export OMP_WAIT_POLICY=$WAIT && unset GOMP_SPINCOUNT ;;
  spin) export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-1000} ;;
  *) echo "infer_bench: WAIT='$WAIT': expected passive, spin or active" >&2 && exit 1 ;;
esac
export WAIT
WORK=${WORK:-$BUILD/infer-bench}
mkdir -p "$WORK"
for t in bf-init bf-export bf-bench; do
  [ -x "$BUILD/bin/$t" ] || { echo "infer_bench: $BUILD/bin/$t missing (tools/build first)" >&2; exit 1; }
done
PY=$("$ROOT/tools/ort-venv" "$BUILD/ort-venv") || { echo "infer_bench: no ONNX Runtime venv (tools/ort-venv)" >&2; exit 1; }
echo "infer_bench: threads=$THREADS iters=$ITERS rounds=$ROUNDS dr=$DR ks='$KS' wait=$WAIT${GOMP_SPINCOUNT:+ (GOMP_SPINCOUNT=$GOMP_SPINCOUNT)} $(date -u +%FT%TZ)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours: $(grep -E '^(BF_DNNL|BF_CUDA):' "$BUILD/CMakeCache.txt" | tr '\n' ' ')"
for k in $KS; do
  d=$WORK/ours-k$k-dr$DR
  if [ ! -f "$d/split-$k/server.safetensors" ]; then
    "$BUILD/bin/bf-init" --classes 1000 --split-after "$k" --dr "$DR" --seed 1 --out "$WORK/ck-k$k.safetensors" >/dev/null
    "$BUILD/bin/bf-export" --checkpoint "$WORK/ck-k$k.safetensors" --out-dir "$d" 2>/dev/null >/dev/null
    rm -f "$WORK/ck-k$k.safetensors"
  fi
done
SGEMM=$(bash "$ROOT/bench/conv_choice.sh" sgemm 5 "$THREADS" | sed -n 's/^sgemm_gflops=//p')
PEAK0=$(bash "$ROOT/bench/peak_flops.sh" "$THREADS")
export SGEMM PEAK0 ROOT
exec "$PY" "$ROOT/bench/infer_bench.py" "$BUILD" "$WORK"
