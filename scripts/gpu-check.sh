#!/usr/bin/env bash
# ONE prepared run on the GPU machine (H100/H200, driver 580, CUDA 13.0, PyTorch; no
# Rust, no network). Needs a prebuilt `target/release/instructgpt` built with
# `--features cuda` (override with $IGPT_BIN). Writes two files to $OUT (the device tool
# brings back at most 8): gpu-check.md (the report, every step's log inside) and selftest.json;
# the step logs themselves stay in $LOGS.
# Every step runs under `timeout`; a failed step is recorded and the script goes on.
# The summary is printed last (the caller sees only the tail of stdout). ~2-4 minutes; never
# more than GPU_CHECK_BUDGET seconds (450) of steps.
set -u
OUT="${OUT:-$PWD/gpu-check-out}"
LOGS="${LOGS:-/tmp/gpu-check-logs}"
mkdir -p "$OUT" "$LOGS"
BIN="${IGPT_BIN:-target/release/instructgpt}"
REPORT="$OUT/gpu-check.md"
declare -a SUMMARY=()
export RUST_BACKTRACE=0
export IGPT_KERNEL_CACHE=/tmp/igpt-kcache  # outside $OUT: only 8 files come back

# The whole run stays under 8 minutes: each step's timeout is cut to what is left of the budget,
# and a step with under 5 s left is skipped (and says so in the summary).
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_BUDGET:-450} ))
step() { # step NAME SECONDS LOGFILE CMD...
  local name=$1 secs=$2 log=$3; shift 3
  local t0=$(date +%s)
  local left=$(( DEADLINE - t0 ))
  if [ "$left" -lt 5 ]; then
    SUMMARY+=("| $name | SKIPPED (8-minute budget spent) | 0s | - |")
    return 1
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  timeout "$secs" "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local verdict=ok; [ $rc -ne 0 ] && verdict="FAILED rc=$rc"; [ $rc -eq 124 ] && verdict="TIMEOUT ${secs}s"
  SUMMARY+=("| $name | $verdict | ${dt}s | $(basename "$log") |")
  return $rc
}

# --- find the toolkit: libnvrtc.so.13 and headers (system toolkit first, then torch's wheels)
SITE=$(python3 -c "import nvidia, os; print(os.pathsep.join(list(nvidia.__path__)))" 2>/dev/null || true)
LIBDIRS=""
for d in ${CUDA_HOME:-} /usr/local/cuda /usr/local/cuda-13*; do
  for l in "$d/lib64" "$d/targets/x86_64-linux/lib"; do [ -e "$l/libnvrtc.so.13" ] && LIBDIRS="$LIBDIRS:$l"; done
  [ -z "${CUDA_HOME:-}" ] && [ -f "$d/include/cuda_bf16.h" ] && export CUDA_HOME="$d"
done
IFS=: read -ra SPS <<<"$SITE"
for s in "${SPS[@]}"; do [ -e "$s/cu13/lib/libnvrtc.so.13" ] && LIBDIRS="$LIBDIRS:$s/cu13/lib"; done
export LD_LIBRARY_PATH="${LIBDIRS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "${CUDA_HOME:-/nonexistent}/bin" ] && export PATH="$CUDA_HOME/bin:$PATH"

{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo; echo '## Environment'; echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -5
  nvidia-smi 2>&1 | grep -m1 "CUDA Version"
  (nvcc --version 2>&1 | tail -2) || echo "nvcc: not found"
  ldd --version 2>&1 | head -1
  echo "binary: $BIN"; ls -l "$BIN" 2>&1
  ldd "$BIN" 2>&1
  echo "--- $BIN info:"; "$BIN" info 2>&1
  echo "CUDA_HOME=${CUDA_HOME:-unset}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "python site-packages nvidia: $SITE"
  echo '--- libcuda.so*, libnvrtc.so*, libcublas.so*, cuda_bf16.h, ptxas:'
  find /usr/local/cuda* /usr/lib/x86_64-linux-gnu /usr/local/nvidia ${SPS[@]/%//cu13} -maxdepth 4 \
    \( -name 'libcuda.so*' -o -name 'libnvrtc.so*' -o -name 'libcublas.so*' -o -name cuda_bf16.h -o -name ptxas \) 2>/dev/null | sort -u | head -40
  echo '```'
} >"$LOGS/env.log" 2>&1
cat "$LOGS/env.log" >"$REPORT"
SUMMARY+=("| environment | ok | - | env.log |")

if [ ! -x "$BIN" ]; then
  SUMMARY+=("| binary | MISSING: $BIN (build with --features cuda) | - | - |")
else
  step "kernels compile --arch sm_90a" 60 "$LOGS/compile.log" "$BIN" kernels compile --arch sm_90a
  # The kernels no GPU has run yet (matmul v6, the 128 x 192 Hopper tiles, attention backward v3
  # and v4) stay out of the full self-test and get processes of their own afterwards: a fault
  # poisons the CUDA context for every later check and timing in its process.
  step "selftest --device cuda (IGPT_SKIP_UNPROVEN=1)" 180 "$LOGS/selftest.log" env IGPT_SKIP_UNPROVEN=1 "$BIN" selftest --device cuda --json-out "$OUT/selftest.json"
  step "selftest --matmul-only (v4, v5, v6 at both tile widths; engine on v6, tile_plan's widths)" 90 "$LOGS/selftest_v6.log" env IGPT_MATMUL=v6 IGPT_TILE_N=auto "$BIN" selftest --device cuda --matmul-only
  step "selftest --attention-only (forward v2, v3; backward v2, v3, v4; engine on fwd v3, bwd v4)" 60 "$LOGS/selftest_attn.log" env IGPT_ATTN_FWD=v3 IGPT_ATTN_BWD=v4 "$BIN" selftest --device cuda --attention-only
  { echo; echo '## kernels compile --arch sm_90a'; echo; cat "$LOGS/compile.log"; } >>"$REPORT"
  { echo; echo '## selftest --device cuda (IGPT_SKIP_UNPROVEN=1)'; echo; cat "$LOGS/selftest.log"; } >>"$REPORT"
  { echo; echo '## selftest --device cuda --matmul-only, IGPT_MATMUL=v6 IGPT_TILE_N=auto'; echo; cat "$LOGS/selftest_v6.log"; } >>"$REPORT"
  { echo; echo '## selftest --device cuda --attention-only, IGPT_ATTN_FWD=v3 IGPT_ATTN_BWD=v4'; echo; cat "$LOGS/selftest_attn.log"; } >>"$REPORT"
fi
bench_all() {
  local bad=0
  for op in "cross-entropy --backward" "cross-entropy --backward --shape 8192x50257" "token-logprobs --backward --shape 2048x50257" "softmax --backward" "layernorm --backward" "gelu --backward" adamw "embedding --backward" sum-rows l2norm binary cast; do
    echo "### bench $op"; "$BIN" bench $op --device cuda || { echo "bench $op FAILED"; bad=1; }
  done
  return $bad
}
export BIN; export -f bench_all
step "kernel bandwidth (bench --device cuda)" 120 "$LOGS/bench.log" bash -c bench_all
{ echo; echo '## bench <op> --device cuda'; echo; cat "$LOGS/bench.log"; } >>"$REPORT"
step "engine GPT-2 124M train step, bf16 autocast" 60 "$LOGS/train_step.log" "$BIN" bench train-step --device cuda --bf16 --model gpt2 --batch 8 --seq-len 1024 --reps 3 --profile
step "engine GPT-2 124M train step, bf16 autocast, matmul v6" 60 "$LOGS/train_step.log" env IGPT_MATMUL=v6 "$BIN" bench train-step --device cuda --bf16 --model gpt2 --batch 8 --seq-len 1024 --reps 3
step "engine GPT-2 124M train step, bf16 autocast, tile widths by tile_plan" 60 "$LOGS/train_step.log" env IGPT_TILE_N=auto "$BIN" bench train-step --device cuda --bf16 --model gpt2 --batch 8 --seq-len 1024 --reps 3
step "engine GPT-2 124M train step, bf16 autocast, attention bwd v4" 60 "$LOGS/train_step.log" env IGPT_ATTN_BWD=v4 "$BIN" bench train-step --device cuda --bf16 --model gpt2 --batch 8 --seq-len 1024 --reps 3
step "engine GPT-2 124M train step, bf16 autocast, attention fwd v3" 60 "$LOGS/train_step.log" env IGPT_ATTN_FWD=v3 "$BIN" bench train-step --device cuda --bf16 --model gpt2 --batch 8 --seq-len 1024 --reps 3
step "engine GPT-2 124M train step, f32" 60 "$LOGS/train_step.log" "$BIN" bench train-step --device cuda --model gpt2 --batch 8 --seq-len 1024 --reps 3
{ echo; echo '## bench train-step --device cuda [--bf16] (our engine; the first with its op-level profile)'; echo; cat "$LOGS/train_step.log"; } >>"$REPORT"
# Rollout-shaped generation: 64 prompts of 64 tokens, 64 new ones, the KV cache f32 and bf16.
step "engine GPT-2 124M generation, f32" 45 "$LOGS/generate.log" "$BIN" bench generate --device cuda --model gpt2 --prompts 64 --prompt-len 64 --new-tokens 64 --reps 3
step "engine GPT-2 124M generation, bf16 autocast" 45 "$LOGS/generate.log" "$BIN" bench generate --device cuda --bf16 --model gpt2 --prompts 64 --prompt-len 64 --new-tokens 64 --reps 3
step "engine GPT-2 124M generation sampled at T=1 (PPO's rollouts), bf16" 45 "$LOGS/generate.log" "$BIN" bench generate --device cuda --bf16 --temperature 1 --model gpt2 --prompts 64 --prompt-len 64 --new-tokens 64 --reps 3 --profile
{ echo; echo '## bench generate --device cuda [--bf16] [--temperature 1] (our engine, KV cache; the token chosen on the GPU)'; echo; cat "$LOGS/generate.log"; } >>"$REPORT"
step "allocators (bench alloc --device cuda)" 60 "$LOGS/alloc.log" "$BIN" bench alloc --device cuda
{ echo; echo '## bench alloc --device cuda'; echo; cat "$LOGS/alloc.log"; } >>"$REPORT"
step "pipeline --preset smoke --device cuda" 90 "$LOGS/pipeline.log" "$BIN" pipeline --preset smoke --device cuda --out "$LOGS/pipeline-smoke"
{ echo; echo '## pipeline --preset smoke --device cuda (every stage on the GPU)'; echo; echo '```'; tail -40 "$LOGS/pipeline.log"; echo '```'; } >>"$REPORT"
step "pipeline --preset smoke --device cuda --bf16" 60 "$LOGS/pipeline_bf16.log" "$BIN" pipeline --preset smoke --device cuda --bf16 --out "$LOGS/pipeline-smoke"
{ echo; echo '## pipeline --preset smoke --device cuda --bf16 (autocast; its stages are its own)'; echo; echo '```'; tail -25 "$LOGS/pipeline_bf16.log"; echo '```'; } >>"$REPORT"
step "torch baseline" 150 "$LOGS/torch.log" python3 scripts/torch_baseline.py
{ echo; echo '## PyTorch baseline'; echo; cat "$LOGS/torch.log"; } >>"$REPORT"

# --- compact summary: last lines of the report and of stdout
{
  echo; echo '## Summary'; echo
  echo '| step | result | time | log |'; echo '|---|---|---|---|'
  printf '%s\n' "${SUMMARY[@]}"
  echo
  grep -m1 '^device:' "$LOGS/selftest.log" 2>/dev/null
  grep -m1 '^NVRTC' "$LOGS/selftest.log" 2>/dev/null
  grep -E '^spills:' "$LOGS/compile.log" 2>/dev/null
  sed -n '/^| kernel | worst max rel err/,/^$/p' "$LOGS/selftest.log" 2>/dev/null
  sed -n '/^| kernel | M x N x K/,/^$/p' "$LOGS/selftest.log" 2>/dev/null
  echo "matmul-only run (IGPT_MATMUL=v6 IGPT_TILE_N=auto):"
  sed -n '/^| kernel | worst max rel err/,/^$/p' "$LOGS/selftest_v6.log" 2>/dev/null
  sed -n '/^| kernel | M x N x K/,/^$/p' "$LOGS/selftest_v6.log" 2>/dev/null | grep -E 'matmul_v[456]|cublas_bf16'
  grep -E '^selftest:|^error|^Error' "$LOGS/selftest_v6.log" 2>/dev/null
  echo "attention-only run (forward v2, v3; backward v2, v3, v4; engine step on fwd v3, bwd v4):"
  sed -n '/^| kernel | worst max rel err/,/^$/p' "$LOGS/selftest_attn.log" 2>/dev/null
  grep -E '^\| attention' "$LOGS/selftest_attn.log" 2>/dev/null
  grep -E '^selftest:|^error|^Error' "$LOGS/selftest_attn.log" 2>/dev/null
  grep -E '^\| [a-z_]+.*%' "$LOGS/bench.log" 2>/dev/null | grep -v '^| kernel' | head -40
  grep -E '^train-step' "$LOGS/train_step.log" 2>/dev/null
  sed -n '/^profile/,/^$/p' "$LOGS/train_step.log" 2>/dev/null | head -18
  grep -E '^generate' "$LOGS/generate.log" 2>/dev/null
  grep -E '^\| (cuMemAlloc|pool|caching)' "$LOGS/alloc.log" 2>/dev/null
  grep -E '^selftest:|^error' "$LOGS/selftest.log" 2>/dev/null
  grep -E '^\| (torch|device|SDPA|GPT-2)' "$LOGS/torch.log" 2>/dev/null
} >"$OUT/summary.tmp"
cat "$OUT/summary.tmp" >>"$REPORT"
cat "$OUT/summary.tmp"; rm -f "$OUT/summary.tmp"
