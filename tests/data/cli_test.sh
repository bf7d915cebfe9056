#!/bin/sh
# bf-data command line: help, argument errors, inspect, split file, grid.
# usage: cli_test.sh BF_DATA SYNTH_DIR TMP_DIR
set -u
bf=$1; synth=$2; tmp=$3
fail=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1" >&2; fail=1; }
expect_rc() { # want_rc description cmd...
  want=$1; what=$2; shift 2
  "$@" >"$tmp/out.txt" 2>"$tmp/err.txt"; rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$what"; else bad "$what: rc $rc, expected $want"; cat "$tmp/err.txt" >&2; fi
}
mkdir -p "$tmp"
expect_rc 0 "--help" "$bf" --help
grep -q "usage: bf-data inspect" "$tmp/out.txt" || bad "--help prints usage"
expect_rc 2 "no arguments" "$bf"
expect_rc 2 "unknown command" "$bf" frobnicate
expect_rc 2 "inspect without ROOT" "$bf" inspect
expect_rc 2 "unknown option" "$bf" inspect "$synth/if_flat" --bogus
expect_rc 2 "bad layout" "$bf" inspect "$synth/if_flat" --layout imagenet
expect_rc 2 "bad number" "$bf" inspect "$synth/if_flat" --grid-n abc
expect_rc 2 "missing value" "$bf" inspect "$synth/if_flat" --grid
expect_rc 1 "missing root" "$bf" inspect "$tmp/does-not-exist"
grep -q "does-not-exist" "$tmp/err.txt" || bad "missing root is named"
expect_rc 1 "bad data set fails" "$bf" inspect "$synth/bad" --quiet
grep -q "of 210 images" "$tmp/err.txt" || bad "bad data summary"
expect_rc 0 "bad data set listed with --max-bad 1" "$bf" inspect "$synth/bad" --max-bad 1 --quiet
grep -q "bad:       7" "$tmp/out.txt" || bad "7 bad files listed"
grep -q "huge.png: absurd" "$tmp/out.txt" || bad "absurd dimensions named"
expect_rc 0 "--max_bad=1: underscore and = spellings" "$bf" inspect "$synth/bad" --max_bad=1 --quiet
grep -q "bad:       7" "$tmp/out.txt" || bad "7 bad files listed (--max_bad=1)"
expect_rc 2 "--grid_n=abc: bad number, underscore spelling" "$bf" inspect "$synth/if_flat" --grid_n=abc
expect_rc 2 "--quiet=1: a flag takes no value" "$bf" inspect "$synth/if_flat" --quiet=1
rm -f "$tmp/split.csv" "$tmp/grid.png"
expect_rc 0 "inspect mini" "$bf" inspect "$synth/mini" --write-split "$tmp/split.csv" --grid "$tmp/grid.png" --grid-n 9 --size 64
grep -q "classes:   10" "$tmp/out.txt" || bad "class count printed"
grep -q "train:     170" "$tmp/out.txt" || bad "train count printed"
head -1 "$tmp/split.csv" | grep -q "# butterfly-split v1" || bad "split file header"
[ "$(grep -c '^test,' "$tmp/split.csv")" -eq 30 ] || bad "split file has 30 test rows"
head -c 8 "$tmp/grid.png" | od -An -c | grep -q "P   N   G" || bad "grid is a PNG"
expect_rc 0 "export-png" "$bf" export-png "$synth/idx_gz" "$tmp/exp" --quiet --limit 20
[ "$(find "$tmp/exp/train" -name '*.png' | wc -l)" -eq 20 ] || bad "export-png wrote 20 train PNGs"
exit $fail
