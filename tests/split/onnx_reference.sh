#!/usr/bin/env bash
# ONNX export against ONNX Runtime (ctest split_onnx_reference, label reference):
# makes or reuses the venv of tools/ort-venv, then tests/split/onnx_export.py.
# Exit 77 (skipped) when onnxruntime/onnx cannot be installed.
#   usage: onnx_reference.sh BIN_DIR VENV_DIR WORK_DIR
set -euo pipefail
bin=$1 venv=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
rc=0
py=$("$here/../../tools/ort-venv" "$venv") || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "onnx_reference: SKIP: no onnxruntime (tools/ort-venv exit $rc)"
  exit 77
fi
rm -rf "$work"
exec "$py" "$here/onnx_export.py" reference "$bin" "$work"
