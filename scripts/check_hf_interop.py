"""Checkpoints both ways between instructgpt and Hugging Face transformers (run by hand; needs torch
and transformers): a model transformers saved is read by `instructgpt eval/generate` with the same
loss and the same greedy tokens, and a model `instructgpt pretrain` saved loads in transformers'
GPT2LMHeadModel.from_pretrained with the same loss.

    python3 scripts/check_hf_interop.py [--bin target/release/instructgpt]
"""
import argparse
import json
import math
import subprocess
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast  # noqa: F401

TEXT_FILE = Path(__file__).resolve().parent.parent / "data/pretrain/gutenberg_11_alice_in_wonderland.txt"


def hf_windowed_loss(model, ids, ctx):
    """Mean next-token loss over context-length windows, each window's first token unpredicted."""
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), ctx):
            w = ids[s : s + ctx]
            if len(w) < 2:
                continue
            x = torch.tensor([w])
            logits = model(x).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits.double(), x[0, 1:], reduction="sum")
            total += loss.item()
            count += len(w) - 1
    return total / count


def r50k():
    """GPT-2's BPE from the r50k_base file that ships in the tiktoken-rs crate (no download)."""
    import glob

    import tiktoken

    path = sorted(glob.glob(str(Path.home() / ".cargo/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken")))[-1]
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(
        name="r50k_base",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(path),
        special_tokens={"<|endoftext|>": 50256},
    )


def ours(bin_, *args):
    return subprocess.run([bin_, *args], check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/instructgpt")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hf-interop-"))
    text = TEXT_FILE.read_text()[:3000]
    (tmp / "sample.txt").write_text(text)
    enc = r50k()
    ids = enc.encode_ordinary(text)

    # 1. transformers writes, we read.
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=50257)
    hf = GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp / "hf")
    ours_eval = json.loads(ours(args.bin, "eval", "--model", str(tmp / "hf"), "--text", str(tmp / "sample.txt"), "--json"))
    ref = hf_windowed_loss(hf, ids, 128)
    print(f"transformers -> ours: eval loss ours {ours_eval['loss']:.6f}, transformers {ref:.6f}, |diff| {abs(ours_eval['loss'] - ref):.2e}")
    assert abs(ours_eval["loss"] - ref) < 1e-4, "loss mismatch"
    prompt = "Alice was beginning to get very tired"
    ours_text = ours(args.bin, "generate", "--model", str(tmp / "hf"), "--prompt", prompt, "--max-new-tokens", "20").rstrip("\n")
    p = enc.encode_ordinary(prompt)
    with torch.no_grad():
        g = hf.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, pad_token_id=50256, eos_token_id=None)
    hf_text = enc.decode(g[0, len(p):].tolist())
    print(f"transformers -> ours: greedy continuation identical: {ours_text == hf_text}")
    assert ours_text == hf_text, f"ours {ours_text!r} vs transformers {hf_text!r}"

    # 2. we write, transformers reads.
    (tmp / "micro.json").write_text(json.dumps({"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": 50257}))
    subprocess.run(
        [args.bin, "pretrain", "--data", str(TEXT_FILE), "--model", str(tmp / "micro.json"), "--out", str(tmp / "ours"), "--steps", "5", "--batch", "2", "--seq-len", "64"],
        check=True, capture_output=True,
    )
    loaded = GPT2LMHeadModel.from_pretrained(tmp / "ours").eval()
    ours_eval = json.loads(ours(args.bin, "eval", "--model", str(tmp / "ours"), "--text", str(tmp / "sample.txt"), "--json"))
    ref = hf_windowed_loss(loaded, ids, 128)
    print(f"ours -> transformers: eval loss ours {ours_eval['loss']:.6f}, transformers {ref:.6f}, |diff| {abs(ours_eval['loss'] - ref):.2e}")
    assert abs(ours_eval["loss"] - ref) < 1e-4, "loss mismatch"
    print(f"interop OK ({tmp})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
