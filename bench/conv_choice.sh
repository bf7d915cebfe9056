#!/usr/bin/env bash
# Builds and runs bench/conv_choice.c: one fused inference conv (conv + bias +
# ReLU, NHWC, batch 1) on ResNet-50 layer shapes as im2col + OpenBLAS sgemm,
# as a oneDNN primitive, and as an own blocked direct kernel prototype, same
# process and threads (docs/benchmarks.md, "Inference convolution").
#   bash bench/conv_choice.sh [ITERS] [THREADS]     (defaults 30, 2)
#   bash bench/conv_choice.sh sgemm [ITERS] [THREADS]   OpenBLAS sgemm peak (2048^3)
# Needs libdnnl-dev and libopenblas-openmp-dev (tools/install-deps).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${TMPDIR:-/tmp}/bf_conv_choice.$$
trap 'rm -f "$BIN"' EXIT
ARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
cc -O3 -march=native -fopenmp -Wall -Wextra -I/usr/include/$ARCH/openblas-openmp "$HERE/conv_choice.c" -o "$BIN" \
  -L/usr/lib/$ARCH/openblas-openmp -Wl,-rpath,/usr/lib/$ARCH/openblas-openmp -lopenblas -ldnnl -lm
"$BIN" "$@"
