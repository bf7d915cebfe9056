#!/usr/bin/env bash
# A real Slurm cluster on this machine (tools/slurm-local: munged, slurmctld,
# slurmd), issue 18:
#   1. bf-search --emit-slurm's waves submitted with sbatch as job arrays
#      (sbatch --wait, wave after wave, as docs/search.md describes) give the
#      same search.jsonl (timing keys stripped) and selection as a sequential
#      run of the same search;
#   2. a data-parallel bf-train launched by `srun --mpi=pmix -n 2` trains as
#      2 ranks and gives the same weights, bit for bit, as `mpirun -np 2`.
# Exit 77 (skip) only when the cluster cannot start here (packages missing,
# daemons refused by the environment); the reason is printed.
# usage: slurm_test.sh BINDIR SRC WORK MPIRUN
set -u
bin=$1 src=$2 work=$3 mpirun=$4
py=/usr/bin/python3
cl=$work/cluster
# Time box: the body runs under timeout(1) in a child; this parent stops the
# cluster's daemons whatever happens to it (they outlive a killed test).
if [ -z "${BF_SLURM_TEST_INNER:-}" ]; then
  rm -rf "$work"; mkdir -p "$work"
  BF_SLURM_TEST_INNER=1 timeout 300 bash "$0" "$@"
  rc=$?
  "$src/tools/slurm-local" stop "$cl" >/dev/null 2>&1
  [ $rc -eq 0 ] && rm -rf "$work" # ~0.5 GB of checkpoints; kept when a check fails
  [ $rc -eq 124 ] && echo "FAIL: time box of 300 s exceeded" >&2
  exit $rc
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
t0=$(date +%s)
if ! out=$("$src/tools/slurm-local" start "$cl" 2>&1); then
  echo "SKIP: the local Slurm cluster did not start (outside bf's code): $out"
  exit 77
fi
eval "$out" # SLURM_CONF
sinfo || fail "sinfo"
echo "cluster up in $(( $(date +%s) - t0 )) s"

data=$work/data
$py "$src/tools/make-synthetic-dataset" imagefolder "$data" --classes 3 --per-class 16 --size 32x32 --seed 1 \
  >/dev/null || fail "make-synthetic-dataset"
common=(--config "$src/configs/search-ci-tiny.ini" --search.train_config "$src/configs/ci-tiny.ini" --data.root "$data")

# 1. the search, sequential and as Slurm job arrays
OMP_NUM_THREADS=2 "$bin/bf-search" "${common[@]}" --search.dir "$work/seq" > "$work/seq.out" 2> "$work/seq.log" ||
  { tail -20 "$work/seq.log"; fail "sequential search"; }
echo "sequential search: $(wc -l < "$work/seq/search.jsonl") trainings ($(( $(date +%s) - t0 )) s)"
s=$work/wave.sbatch
ntasks=0
for wave in 1 2 3 4 5 6; do
  "$bin/bf-search" "${common[@]}" --search.dir "$work/sl" --emit-slurm "$s" 2> "$work/emit$wave.log" ||
    { cat "$work/emit$wave.log"; fail "emit wave $wave"; }
  grep -q "training phase is complete" "$work/emit$wave.log" && break
  n=$(sed -n '/^TASKS=(/,/^)/p' "$s" | sed '1d;$d' | wc -l)
  ntasks=$((ntasks + n))
  # --wait: sbatch returns when every task of the array has ended, with the worst exit status
  OMP_NUM_THREADS=2 sbatch --wait --quiet "$s" || { tail -20 "$work/sl/logs"/slurm-*.out; fail "wave $wave: a job failed"; }
  echo "wave $wave: $n array task(s) done ($(( $(date +%s) - t0 )) s)"
done
grep -q "training phase is complete" "$work/emit$wave.log" || fail "no end after $wave waves"
nlogs=$(ls "$work/sl/logs"/slurm-*_*.out 2>/dev/null | wc -l)
[ "$nlogs" -eq "$ntasks" ] || fail "$nlogs Slurm task logs for $ntasks array tasks"
# the last step (profiling, selection) trains nothing
OMP_NUM_THREADS=2 "$bin/bf-search" "${common[@]}" --search.dir "$work/sl" > "$work/sl.out" 2> "$work/sl.log" ||
  { tail -20 "$work/sl.log"; fail "final search step"; }
grep -q "(0 new trainings)" "$work/sl.log" || fail "the final step trained: $(tail -5 "$work/sl.log")"
$py - "$work/seq" "$work/sl" <<'PY' || fail "the Slurm search differs from the sequential one"
import json, os, sys
TIMING = ("ms", "sec", "time", "wall", "elapsed", "latency", "energy", "seconds", "_s", "throughput", "per_sec")
def strip(o, root):
    if isinstance(o, dict):
        return {k: strip(v, root) for k, v in o.items()
                if not any(t in k for t in TIMING) and k not in ("run_dir", "dir", "deploy_dir", "started", "finished")}
    if isinstance(o, list):
        return [strip(v, root) for v in o]
    if isinstance(o, str) and o.startswith(root):
        return os.path.relpath(o, root)
    return o
def load(d):
    lines = [strip(json.loads(l), d) for l in open(os.path.join(d, "search.jsonl"))]
    sel = strip(json.load(open(os.path.join(d, "selection.json"))), d)
    return sorted(lines, key=lambda e: (e["split"], e["d_r"])), sel
(a, sa), (b, sb) = load(sys.argv[1]), load(sys.argv[2])
assert a == b, ("search.jsonl", a, b)
assert sa == sb, ("selection.json", sa, sb)
print("search.jsonl (%d trainings) and selection.json equal the sequential run's" % len(a))
PY

# 2. data-parallel bf-train through srun (PMIx), against mpirun
train=(--config "$src/configs/ci-tiny.ini" --data.root "$data" --threads 1 --data.threads 1 --no-progress
       --train.batch_size 16 --train.epochs 1 --train.max_steps_per_epoch 2 --train.eval_max_batches 1)
srun --mpi=list 2>&1 | grep -qw pmix || fail "srun has no pmix plugin (srun --mpi=list)"
OMP_NUM_THREADS=1 srun --mpi=pmix -n 2 "$bin/bf-train" "${train[@]}" --run_dir "$work/srun" > "$work/srun.log" 2>&1 ||
  { tail -20 "$work/srun.log"; fail "srun --mpi=pmix -n 2 bf-train"; }
grep -q "^data: 2 ranks, 8 images of every batch each" "$work/srun.log" || fail "srun: not 2 ranks: $(head -30 "$work/srun.log")"
[ "$(grep -c '^bf-train: done' "$work/srun.log")" -eq 1 ] || fail "srun: rank 0 alone should report"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
  "$mpirun" -np 2 --oversubscribe --bind-to none "$bin/bf-train" "${train[@]}" --run_dir "$work/mpirun" \
  > "$work/mpirun.log" 2>&1 || { tail -20 "$work/mpirun.log"; fail "mpirun -np 2 bf-train"; }
$py - "$work/srun/last.safetensors" "$work/mpirun/last.safetensors" <<'PY' || fail "srun and mpirun trained differently"
import struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return b[8 + n:]
assert tensors(sys.argv[1]) == tensors(sys.argv[2])
print("srun -n 2 and mpirun -np 2: identical weights")
PY
echo "OK ($(( $(date +%s) - t0 )) s)"
