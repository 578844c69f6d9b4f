"""Our SGEMM against PyTorch's (MKL) in the same run, interleaved round by
round, because the machine is shared and noisy. Prints a markdown table of median GFLOP/s.

    python3 scripts/compare_sgemm.py [--bin target/release/instructgpt] [--rounds 3]
"""
import argparse
import json
import statistics
import subprocess
import time


def time_lib(fn, reps):
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/instructgpt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    shapes = [(1024, 1024, 1024), (2048, 3072, 768)]
    rows = []
    for threads in (1, 2):
        for (m, n, k) in shapes:
            flop = 2 * m * n * k
            ours, th = [], []
            for _ in range(args.rounds):
                out = subprocess.run(
                    [args.bin, "bench", "matmul", "--shape", f"{m}x{n}x{k}", "--threads", str(threads), "--reps", str(args.reps), "--json"],
                    check=True, capture_output=True, text=True,
                ).stdout
                ours.append(json.loads(out)["gflops"])
                if torch is not None:
                    torch.set_num_threads(threads)
                    a, b = torch.randn(m, k), torch.randn(k, n)
                    th.append(flop / time_lib(lambda: torch.matmul(a, b), args.reps) / 1e9)
            rows.append((threads, f"{m}x{n}x{k}", statistics.median(ours), statistics.median(th) if th else None))
    isa = json.loads(subprocess.run([args.bin, "bench", "matmul", "--shape", "64x64x64", "--json"], check=True, capture_output=True, text=True).stdout)["isa"]
    tv = torch.__version__ if torch is not None else "not installed"
    print(f"ours: {isa} micro-kernel; torch {tv}; median GFLOP/s of {args.rounds} interleaved rounds, each a median of {args.reps} reps\n")
    print("| threads | M x N x K | ours | torch | ours / torch |\n|---:|---|---:|---:|---:|")
    for t, s, o, p in rows:
        ratio = f"{o / p:.2f}" if p else "-"
        ptxt = f"{p:.1f}" if p else "-"
        print(f"| {t} | {s} | {o:.1f} | {ptxt} | {ratio} |")


if __name__ == "__main__":
    main()
