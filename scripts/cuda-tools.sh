#!/usr/bin/env bash
# Installs NVRTC 13.0 + CUDA headers + ptxas from PyPI wheels into a private dir
# (idempotent; does not touch the system or torch's own nvidia packages), then
# prints the env lines -- or sets them when sourced:
#   source scripts/cuda-tools.sh      # sets CUDA_HOME, LD_LIBRARY_PATH, PATH
#   eval "$(bash scripts/cuda-tools.sh)"
# Dir: $IGPT_CUDA_TOOLS (default ~/.cache/instructgpt/cuda-tools); cache it in CI.
_igpt_dir="${IGPT_CUDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/instructgpt/cuda-tools}"
_igpt_root="$_igpt_dir/nvidia/cu13"
if [ ! -f "$_igpt_root/lib/libnvrtc.so.13" ] || [ ! -x "$_igpt_root/bin/ptxas" ] || [ ! -f "$_igpt_root/include/crt/mma.h" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$_igpt_dir" \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-nvcc==13.0.88 >&2 \
    || { echo "cuda-tools: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
_igpt_lines="export IGPT_CUDA_TOOLS=$_igpt_dir
export CUDA_HOME=$_igpt_root
export LD_LIBRARY_PATH=$_igpt_root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH=$_igpt_root/bin:\$PATH"
if [ "${BASH_SOURCE[0]}" != "$0" ]; then eval "$_igpt_lines"; else echo "$_igpt_lines"; fi
unset _igpt_dir _igpt_root _igpt_lines
