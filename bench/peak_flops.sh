#!/usr/bin/env bash
# Builds and runs bench/peak_flops.c: this CPU's fp32 FMA peak (GFLOP/s) with
# the widest vector ISA it has, chosen at run time (docs/benchmarks.md).
#   bash bench/peak_flops.sh [THREADS...]      (default: 1 and all cores)
# Prints lines "peak_gflops isa=ISA threads=T gflops=G". Needs only gcc with OpenMP.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${TMPDIR:-/tmp}/bf_peak_flops.$$
trap 'rm -f "$BIN"' EXIT
# no -march: the kernels carry their own target attributes and the choice is made at run time
cc -O2 -fopenmp -Wall -Wextra "$HERE/peak_flops.c" -o "$BIN"
"$BIN" "$@"
