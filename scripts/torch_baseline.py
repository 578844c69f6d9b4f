"""PyTorch baselines on the GPU machine: bf16 matmul, device copy bandwidth, SDPA flash
attention fwd+bwd. CUDA events, warm-up, median of many, random inputs. Prints a
markdown table."""
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


def main():
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
    print("\n| baseline | shape | median ms | rate |\n|---|---|---:|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
