#!/usr/bin/env bash
# The CUDA path without a GPU: builds the emulated GPU (every kernel compiled as C++ for the CPU
# emulation of kernels/emu, behind a fake libcuda and libnvrtc; `instructgpt kernels emulate`)
# and runs the release binary built with `--features cuda` on it, unchanged. With no arguments it
# runs the engine's device checks (`selftest --device cuda --engine-only`: every engine op, the
# GPT-2 train step and decode against the CPU; about 2 minutes on 2 cores); otherwise the
# arguments are the instructgpt command to run, e.g.
#   scripts/emulated-gpu.sh bench train-step --device cuda --model tiny --batch 2 --seq-len 32 --reps 1
# IGPT_EMU_CC=90 makes the device an sm_90, so the engine's matmuls take the Hopper kernels (v5;
# IGPT_MATMUL=v6 for the TMA-fed one). It checks what the emulated kernel tests cannot: the launchers' argument lists and launch
# shapes, the engine's buffers, copies and views, and every read of memory nothing wrote
# (fresh allocations are NaN). Not speed: the emulated device runs one CPU thread per CUDA thread.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/instructgpt}
DIR=${EMU_GPU_DIR:-target/emulated-gpu}  # rebuilt each run; kernel cache inside
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
# IGPT_EMU_SANITIZER=address: the kernels and the fake driver under AddressSanitizer and UBSan
# (device buffers are allocated exactly, so a kernel reading past one fails the run).
if [ "${IGPT_EMU_SANITIZER:-}" = address ]; then
  "$BIN" kernels emulate --out "$DIR" --cxx "${CXX:-c++}" --sanitize
  export LD_PRELOAD="$("${CXX:-c++}" -print-file-name=libasan.so)" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
else
  "$BIN" kernels emulate --out "$DIR" --cxx "${CXX:-c++}"
fi
export LD_LIBRARY_PATH="$DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export IGPT_CUDA_INCLUDE="$DIR/include" IGPT_KERNEL_CACHE="$DIR/kernel-cache"
if [ $# -eq 0 ]; then
  set -- selftest --device cuda --engine-only
fi
exec "$BIN" "$@"
