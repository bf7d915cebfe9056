#!/usr/bin/env bash
# CPU throughput of our ResNet-50 (bf-bench) against PyTorch, same threads, same run.
#
#   bash bench/cpu_bench.sh [BUILD_DIR]          (default BUILD_DIR: build)
#
# Environment: THREADS (default nproc), CLASSES (default 1000),
#   TORCH_FORMAT auto|contiguous|channels_last (default auto: torch is timed in
#   both memory formats and the faster one is reported),
#   ITERS_T32/WARM_T32, ITERS_T224/WARM_T224, ITERS_I224/WARM_I224 (iterations).
# Cases: train 32x32 batch 64, train 224x224 batch 16, infer 224x224 batch 1.
# Prints a table: case, ours img/s, torch img/s, ratio ours/torch. Takes a
# few minutes on 2 cores with the defaults. Exit 1 if a run failed.
set -u

BUILD=${1:-build}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OURS=$BUILD/bin/bf-bench
PY=/usr/bin/python3
THREADS=${THREADS:-$(nproc)}
CLASSES=${CLASSES:-1000}
TORCH_FORMAT=${TORCH_FORMAT:-auto}
LOG=$(mktemp "${TMPDIR:-/tmp}/bf_cpu_bench.XXXXXX")
trap 'rm -f "$LOG"' EXIT

#        name          mode  size batch iters                 warmup
CASES=("train-32-b64   train 32   64    ${ITERS_T32:-3}       ${WARM_T32:-1}"
       "train-224-b16  train 224  16    ${ITERS_T224:-2}      ${WARM_T224:-1}"
       "infer-224-b1   infer 224  1     ${ITERS_I224:-10}     ${WARM_I224:-2}")

ips() { grep -m1 -E '^images_per_sec=' "$LOG" | cut -d= -f2; }

status=0
rows=()
echo "cpu_bench: threads=$THREADS classes=$CLASSES ours=$OURS torch_format=$TORCH_FORMAT host=$(hostname) $(date -u +%FT%TZ)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${CASES[@]}"; do
  read -r name mode size batch iters warmup <<<"$c"
  args=(--mode "$mode" --size "$size" --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "$THREADS")

  ours=n/a
  if [ -x "$OURS" ]; then
    t0=$(date +%s)
    if "$OURS" "${args[@]}" --classes "$CLASSES" >"$LOG" 2>&1 && [ -n "$(ips)" ]; then
      ours=$(ips)
    else
      ours=FAIL; status=1
      echo "  $name: bf-bench failed:"; tail -n 5 "$LOG" | sed 's/^/    /'
    fi
    echo "  $name ours: $ours img/s ($(( $(date +%s) - t0 ))s)"
  else
    echo "  $name ours: $OURS not built, skipped"
  fi

  t0=$(date +%s)
  if "$PY" "$HERE/torch_cpu.py" "${args[@]}" --classes "$CLASSES" --memory-format "$TORCH_FORMAT" >"$LOG" 2>&1 \
     && [ -n "$(ips)" ]; then
    torch=$(ips)
    fmt=$(grep -m1 '^memory_format=' "$LOG" | cut -d= -f2)
  else
    torch=FAIL; fmt=-; status=1
    echo "  $name: torch failed:"; tail -n 5 "$LOG" | sed 's/^/    /'
  fi
  echo "  $name torch: $torch img/s [$fmt] ($(( $(date +%s) - t0 ))s)"

  ratio=-
  if [[ $ours =~ ^[0-9.]+$ && $torch =~ ^[0-9.]+$ ]]; then
    ratio=$(awk -v a="$ours" -v b="$torch" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  fi
  rows+=("$(printf '%-14s %12s %12s %8s   %s' "$name" "$ours" "$torch" "$ratio" "$fmt")")
done

echo
printf '%-14s %12s %12s %8s   %s\n' "case" "ours img/s" "torch img/s" "ratio" "torch format"
printf '%s\n' "${rows[@]}"
exit $status
