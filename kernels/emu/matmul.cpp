// Runs the f32 matmul kernels of cu/matmul_f32.cu (v1, v2 with the GELU epilogue, and v2 batched
// with its operand layouts) on the CPU emulation, for kernels/tests/emulated/:
//   matmul_emu <v1|gelu|nn|nt|tn> <batches> <m> <n> <k> <shared_b 0|1> <bias 0|1> <dir>
// Reads a, b (stored as the entry expects) and bias as raw f32; writes c (and pre for gelu),
// poisoned with NaN first.
#include "emu.h"

#include "matmul_f32.cu"

int main(int argc, char** argv) {
    if (argc < 9) { fprintf(stderr, "usage: matmul_emu <v1|nn|nt|tn> <batches> <m> <n> <k> <shared_b> <bias> <dir>\n"); return 2; }
    const std::string kind = argv[1];
    const int batches = atoi(argv[2]), m = atoi(argv[3]), n = atoi(argv[4]), k = atoi(argv[5]);
    const bool shared_b = atoi(argv[6]) != 0, with_bias = atoi(argv[7]) != 0;
    emu_dir = argv[8];
    auto a = emu_load<float>("a.f32", (size_t)batches * m * k), b = emu_load<float>("b.f32", (size_t)(shared_b ? 1 : batches) * k * n);
    std::vector<float> bias = with_bias ? emu_load<float>("bias.f32", n) : std::vector<float>();
    const float* bp = with_bias ? bias.data() : nullptr;
    std::vector<float> c((size_t)batches * m * n, NAN);
    if (kind == "v1") {
        emu_launch({(unsigned)((n + 31) / 32), (unsigned)((m + 31) / 32)}, {32, 32}, [&] { matmul_v1_f32(a.data(), b.data(), bp, c.data(), m, n, k); });
    } else if (kind == "gelu") {
        std::vector<float> pre((size_t)m * n, NAN);
        emu_launch({(unsigned)((n + 127) / 128), (unsigned)((m + 127) / 128)}, {256}, [&] { matmul_v2_f32_gelu(a.data(), b.data(), bp, c.data(), pre.data(), m, n, k); });
        emu_store("pre.f32", pre);
    } else {
        auto entry = kind == "nn" ? matmul_v2_f32_batched : kind == "nt" ? matmul_v2_f32_batched_nt : matmul_v2_f32_batched_tn;
        const long long sa = (long long)m * k, sb = shared_b ? 0 : (long long)k * n, sc = (long long)m * n;
        emu_launch({(unsigned)((n + 127) / 128), (unsigned)((m + 127) / 128), (unsigned)batches}, {256}, [&] {
            entry(a.data(), b.data(), bp, c.data(), m, n, k, sa, sb, sc);
        });
    }
    emu_store("c.f32", c);
    return 0;
}
