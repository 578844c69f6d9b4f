"""PyTorch baselines on the GPU machine: bf16 matmul, device copy bandwidth, SDPA flash
attention fwd+bwd, and a GPT-2 124M train step (bf16 autocast, SDPA, fused AdamW; eager).
CUDA events, warm-up, median of many, random inputs. Prints a markdown table.
`--smoke`: the train step of a tiny GPT-2 on the CPU, to check this script without a GPU."""
import statistics
import sys

import torch


def bench(fn, warmup=5, iters=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


class Block(torch.nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = torch.nn.LayerNorm(c), torch.nn.LayerNorm(c)
        self.qkv, self.proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)
        self.fc, self.fc_proj = torch.nn.Linear(c, 4 * c), torch.nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.fc_proj(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt2(torch.nn.Module):
    """GPT-2 as HF shapes it (tied embeddings, tanh GELU, pre-layernorm)."""

    def __init__(self, layers, heads, width, vocab, positions):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, width), torch.nn.Embedding(positions, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(width)

    def forward(self, ids, targets):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def train_step_row(dev, layers=12, heads=12, width=768, vocab=50257, batch=8, seq=1024, iters=20):
    """One GPT-2 train step (forward, loss, backward, AdamW): tokens/s and model TFLOP/s
    (6 N + 12 L C T per token, the PaLM count with attention; N without the position
    embeddings, as nanoGPT and `instructgpt bench train-step` count it)."""
    torch.manual_seed(0)
    model = Gpt2(layers, heads, width, vocab, seq).to(dev)
    cuda = dev == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    ids = torch.randint(0, vocab, (batch, seq + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    if cuda:
        ms = bench(step, warmup=3, iters=iters)
    else:
        import time
        step()
        t = time.perf_counter()
        for _ in range(iters):
            step()
        ms = (time.perf_counter() - t) * 1e3 / iters
    tokens = batch * seq
    flops = (6 * n + 12 * layers * width * seq) * tokens
    name = f"GPT-2 train step, {n / 1e6:.1f}M params, bf16 autocast" if cuda else f"GPT-2 train step, {n / 1e6:.2f}M params, f32 CPU"
    return (name, f"B{batch} T{seq}", ms, f"{tokens / ms * 1e3:,.0f} tokens/s, {flops / ms / 1e9:.1f} TFLOP/s")


def main():
    if "--smoke" in sys.argv:
        r = train_step_row("cpu", layers=2, heads=2, width=64, vocab=257, batch=2, seq=32, iters=3)
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]} |")
        return 0
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 1
    dev = "cuda"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
    rows = []
    n = 4096
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ms = bench(lambda: torch.matmul(a, b))
    rows.append(("torch.matmul bf16", f"{n}^3", ms, f"{2 * n**3 / ms / 1e9:.1f} TFLOP/s"))
    a32, b32 = a.float(), b.float()
    ms = bench(lambda: torch.matmul(a32, b32))
    rows.append(("torch.matmul f32 (tf32 off)", f"{n}^3", ms, f"{2 * n**3 / ms / 1e9:.1f} TFLOP/s"))
    m, k, nn = 8192, 768, 3072
    a2 = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    b2 = torch.randn(k, nn, device=dev, dtype=torch.bfloat16)
    ms = bench(lambda: torch.matmul(a2, b2))
    rows.append(("torch.matmul bf16", f"{m}x{nn}x{k}", ms, f"{2 * m * nn * k / ms / 1e9:.1f} TFLOP/s"))
    x = torch.randn(256 * 1024 * 1024, device=dev)  # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x), iters=20)
    rows.append(("device copy", "1 GiB", ms, f"{2 * x.numel() * 4 / ms / 1e6:.0f} GB/s (read+write)"))
    del x, y
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    B, H, T = 4, 16, 2048
    for D in (64, 128):
        q, kk, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        go = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
        flops_f = 4 * B * H * T * T * D / 2  # causal: half the scores
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                msf = bench(lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=True))
                def fb():
                    o = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
                    o.backward(go)
                msfb = bench(fb)
            rows.append((f"SDPA flash fwd causal D={D}", f"B{B} H{H} T{T}", msf, f"{flops_f / msf / 1e9:.1f} TFLOP/s"))
            rows.append((f"SDPA flash fwd+bwd causal D={D}", f"B{B} H{H} T{T}", msfb, f"{3.5 * flops_f / msfb / 1e9:.1f} TFLOP/s"))
        except Exception as e:  # report, keep going
            rows.append((f"SDPA flash D={D}", "error", float("nan"), str(e)[:120]))
    torch.cuda.empty_cache()
    try:
        rows.append(train_step_row(dev))
    except Exception as e:  # report, keep going
        rows.append(("GPT-2 train step", "error", float("nan"), str(e)[:120]))
    print("\n| baseline | shape | median ms | rate |\n|---|---|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
