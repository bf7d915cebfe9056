#!/usr/bin/env bash
# Builds a libFuzzer target with clang and runs it for a bounded time on a
# seed corpus of valid frames.
#   fuzz_frame.sh CLANG SRC_DIR BIN_DIR WORK_DIR SECONDS [TARGET]
# TARGET: fuzz_frame (default: the server's parsers, requests) or fuzz_client
# (bf-client's parsers: RESULT, STATUS_REPLY, ERROR) or fuzz_rans (the rANS
# decoder and tables parser: hostile payloads and tables).
# Fails (does not skip) when clang or its libFuzzer runtime is missing:
# Debian needs the packages clang and libclang-rt-14-dev (or the matching version).
set -euo pipefail
CLANG=$1 SRC=$2 BIN=$3 W=$4 SECS=$5 TARGET=${6:-fuzz_frame}
case "$TARGET" in
  fuzz_frame) CORPUS=corpus ;;
  fuzz_client) CORPUS=corpus-client ;;
  fuzz_rans) CORPUS=corpus-rans ;;
  *) echo "FAIL: unknown fuzz target '$TARGET'" >&2; exit 1 ;;
esac
rm -rf "$W"
mkdir -p "$W/corpus"
if [ -z "$CLANG" ] || ! command -v "$CLANG" >/dev/null; then
  echo "FAIL: clang not found; install the Debian packages clang and libclang-rt-14-dev, or configure with -DBF_FUZZ=OFF" >&2
  exit 1
fi
ZSTD_FLAGS=$(pkg-config --cflags --libs libzstd)
if ! "$CLANG" -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
    -I"$SRC/src/split" -I"$SRC/src/nn" \
    "$SRC/tests/split/$TARGET.c" "$SRC/src/split/frame.c" "$SRC/src/split/quant.c" "$SRC/src/split/rans.c" "$SRC/src/nn/bf_core.c" \
    $ZSTD_FLAGS -lz -lm -o "$W/$TARGET" 2>"$W/build.log"; then
  cat "$W/build.log" >&2
  echo "FAIL: cannot build the fuzzer (libFuzzer runtime missing? Debian: libclang-rt-14-dev)" >&2
  exit 1
fi
"$BIN/split_testgen" "$CORPUS" "$W/corpus"
cd "$W"
"$W/$TARGET" -max_total_time="$SECS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$W/corpus" 2>&1 | tail -15
echo "OK: fuzzed for $SECS s without a crash"
