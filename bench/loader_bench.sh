#!/bin/sh
# Loader throughput: butterfly's loader (bf-loader-bench) vs Pillow doing the
# same work (bench/loader_bench_pil.py), 1 and 2 threads/processes, on
# synthetic 500x375 JPEGs and PNGs. Work per image: decode, resize shorter
# side to 256 (antialiased bilinear), random crop 224, random h-flip,
# normalise to float32 NHWC.
#
# usage: bench/loader_bench.sh [BUILD_DIR] [IMAGES]
#   BUILD_DIR  a CMake build of this repo (default: build); needs bin/bf-loader-bench
#   IMAGES     images timed per run (default 1500)
# Needs /usr/bin/python3 with numpy and PIL (python3-numpy, python3-pil).
set -eu
repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
build=${1:-$repo/build}
n=${2:-1500}
bench=$build/bin/bf-loader-bench
py=/usr/bin/python3
[ -x "$bench" ] || { echo "loader_bench: $bench not found (cmake --build $build)" >&2; exit 1; }
data=${TMPDIR:-/tmp}/bf-loader-bench
if [ ! -f "$data/.done" ]; then
  rm -rf "$data"
  "$py" "$repo/tools/make-synthetic-dataset" imagefolder "$data/jpg" --classes 4 --per-class 100 --size 500x375 --format jpg
  "$py" "$repo/tools/make-synthetic-dataset" imagefolder "$data/png" --classes 4 --per-class 100 --size 500x375 --format png
  touch "$data/.done"
fi
cat "$data"/jpg/*/* "$data"/png/*/* > /dev/null # page cache: time decoding, not the disk
rate() { sed -n 's/.*"images_per_s": \([0-9.]*\).*/\1/p'; }
cpurate() { sed -n 's/.*"images_per_cpu_s": \([0-9.]*\).*/\1/p'; }
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "images per run: $n; JPEG $(du -sh "$data/jpg" | cut -f1) / PNG $(du -sh "$data/png" | cut -f1) for 400 files"
printf "%-5s %-8s %14s %14s %14s %8s %8s\n" fmt threads "bf img/s" "Pillow img/s" "Pil+draft" ratio "r_draft"
cpu_lines=""
for fmt in jpg png; do
  for t in 1 2; do
    bf=$("$bench" "$data/$fmt" --threads "$t" --images "$n" | rate)
    pil=$("$py" "$repo/bench/loader_bench_pil.py" "$data/$fmt" --procs "$t" --images "$n" | rate)
    if [ "$fmt" = jpg ]; then
      pild=$("$py" "$repo/bench/loader_bench_pil.py" "$data/$fmt" --procs "$t" --images "$n" --draft | rate)
    else
      pild=$pil
    fi
    if [ "$t" = 1 ]; then
      bfc=$("$bench" "$data/$fmt" --threads 1 --images "$n" | cpurate)
      pilc=$("$py" "$repo/bench/loader_bench_pil.py" "$data/$fmt" --procs 1 --images "$n" | cpurate)
      cpu_lines="$cpu_lines$(printf "%-5s %14s %14s %7sx" "$fmt" "$bfc" "$pilc" "$(awk -v a="$bfc" -v b="$pilc" 'BEGIN{printf "%.2f", a/b}')")
"
    fi
    r=$(awk -v a="$bf" -v b="$pil" 'BEGIN{printf "%.2f", a/b}')
    rd=$(awk -v a="$bf" -v b="$pild" 'BEGIN{printf "%.2f", a/b}')
    printf "%-5s %-8s %14s %14s %14s %7sx %7sx\n" "$fmt" "$t" "$bf" "$pil" "$pild" "$r" "$rd"
  done
done
echo
echo "per CPU-second, 1 thread (insensitive to other load on the machine):"
printf "%-5s %14s %14s %8s\n" fmt "bf img/cpu-s" "Pillow img/cpu-s" ratio
printf "%s" "$cpu_lines"
