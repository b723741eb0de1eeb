#!/usr/bin/env bash
# Fetches NVRTC (CUDA 13.0's run-time compiler, a library) from PyPI's
# `nvidia-cuda-nvrtc` wheel into fixtures/downloads/nvrtc/, so that
# sapo-cuda/tests/kernels_compile.rs compiles every kernel for sm_80 and
# sm_90 on a machine with no GPU and no CUDA toolkit. Prints the folder to
# put on LD_LIBRARY_PATH. Idempotent.
#
# CUDA 13.0 because the GPU machines' driver (580) runs CUDA 13.0: a newer
# NVRTC emits PTX that driver refuses, so CI checks with the same release.
#
# Usage: lib=$(bash sapo-cuda/fetch_nvrtc.sh)   (PIP=/path/to/pip to choose the pip)
set -euo pipefail

readonly PACKAGE="nvidia-cuda-nvrtc==13.0.88"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
destination="$root/fixtures/downloads/nvrtc"
lib="$destination/nvidia/cu13/lib"
if [[ -f "$lib/libnvrtc.so.13" ]]; then
    echo "$lib"
    exit 0
fi
pip="${PIP:-pip}"
if ! command -v "$pip" >/dev/null 2>&1; then
    pip="python3 -m pip"
fi
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
$pip download --no-deps --quiet "$PACKAGE" -d "$work_dir" >&2
wheel="$(find "$work_dir" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "$wheel" ]]; then
    echo "error: pip download $PACKAGE produced no wheel" >&2
    exit 1
fi
python3 -m zipfile -e "$wheel" "$work_dir/unpacked"
if [[ ! -f "$work_dir/unpacked/nvidia/cu13/lib/libnvrtc.so.13" ]]; then
    echo "error: libnvrtc.so.13 not found in $wheel" >&2
    exit 1
fi
mkdir -p "$(dirname "$destination")"
rm -rf "$destination.partial"
mv "$work_dir/unpacked" "$destination.partial"
rm -rf "$destination"
mv "$destination.partial" "$destination"
echo "$lib"
