#!/usr/bin/env python3
"""GPT-2 on the CPU: our train step and KV-cache generation against PyTorch/transformers, same run.

Builds the same models in transformers (GPT2LMHeadModel, same config, random init), times
  * a train step (forward, loss, backward, AdamW step) for `tiny` at 4x256 and `gpt2` at 4x64,
  * greedy `generate` with the cache on `tiny` (8 prompts x 32 tokens, 64 new tokens, no early stop),
and runs `instructgpt bench train-step|generate` for ours, interleaved (the machine is shared and
noisy), at 1 and 2 threads. Prints a markdown table of tokens/s and the ratio ours / theirs.

    cargo build --release && python3 scripts/compare_gpt2.py [--threads 1,2] [--rounds 2] [--quick]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "instructgpt")


def hf_model(name):
    from transformers import GPT2Config, GPT2LMHeadModel
    if name == "tiny":
        cfg = GPT2Config(n_layer=4, n_head=4, n_embd=256, n_positions=256, vocab_size=50257)
    else:
        cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
    # No dropout: ours applies none either.
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    cfg.use_cache = True
    return GPT2LMHeadModel(cfg)


def torch_train_step(name, b, t, reps):
    import torch
    torch.manual_seed(0)
    model = hf_model(name)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, 50257, (b, t))

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return b * t / times[len(times) // 2]


def hf_generate(name, prompts, prompt_len, new, reps):
    import torch
    torch.manual_seed(0)
    model = hf_model(name).eval()
    ids = torch.randint(0, 50256, (prompts, prompt_len))
    mask = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, use_cache=True,
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=50256)
        return (out.shape[1] - prompt_len) * prompts

    run()
    times = []
    n = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        n = run()
        times.append(time.perf_counter() - t0)
    times.sort()
    return n / times[len(times) // 2]


def ours(args, threads, reps):
    cmd = [BIN, "bench"] + args + ["--threads", str(threads), "--reps", str(reps), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each side is kept")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", default="tiny,gpt2,generate")
    a = ap.parse_args()
    import torch
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: run `cargo build --release` first")
    reps = 2 if a.quick else 3
    cases = {
        "tiny": ("train step tiny 4x256", ["train-step", "--model", "tiny", "--batch", "4", "--seq-len", "256"],
                 lambda r: torch_train_step("tiny", 4, 256, r), "PyTorch"),
        "gpt2": ("train step gpt2 4x64", ["train-step", "--model", "gpt2", "--batch", "4", "--seq-len", "64"],
                 lambda r: torch_train_step("gpt2", 4, 64, r), "PyTorch"),
        "generate": ("generate tiny 8x32 +64", ["generate", "--model", "tiny", "--prompts", "8", "--prompt-len", "32",
                                                 "--new-tokens", "64"],
                     lambda r: hf_generate("tiny", 8, 32, 64, r), "HF"),
    }
    rows = []
    for th in [int(x) for x in a.threads.split(",")]:
        torch.set_num_threads(th)
        for key in a.only.split(","):
            label, our_args, theirs_fn, who = cases[key]
            best_o, best_t = 0.0, 0.0
            for _ in range(a.rounds):
                best_t = max(best_t, theirs_fn(reps))
                best_o = max(best_o, ours(our_args, th, reps))
            print(f"[{th} threads] {label}: ours {best_o:.1f} tok/s, {who} {best_t:.1f} tok/s, x{best_o / best_t:.2f}",
                  file=sys.stderr, flush=True)
            rows.append((label, th, best_o, who, best_t))
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPUs; tokens/s, best of {a.rounds} interleaved rounds "
          f"(each the median of {reps} timed reps)\n")
    print("| workload | threads | ours tok/s | theirs | theirs tok/s | ours / theirs |")
    print("|---|---:|---:|---|---:|---:|")
    for label, th, o, who, t in rows:
        print(f"| {label} | {th} | {o:.1f} | {who} | {t:.1f} | {o / t:.2f}x |")


if __name__ == "__main__":
    main()
