#!/bin/sh
# tools/prepare-fashion-mnist, then compare every PNG with the IDX data.
# usage: fashion_png.sh REPO BF_DATA TEST_DATA OUT LIMIT   (LIMIT -1 = all)
set -u
repo=$1; bf=$2; td=$3; out=$4; limit=$5
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "SKIP: /usr/share/datasets/fashion-mnist missing (apt-get install dataset-fashion-mnist)"
  exit 77
fi
lim=""
[ "$limit" -ge 0 ] && lim="--limit $limit"
# shellcheck disable=SC2086
BF_DATA=$bf "$repo/tools/prepare-fashion-mnist" --out "$out" $lim || exit 1
"$td" fashion_png "$out" "$limit"
