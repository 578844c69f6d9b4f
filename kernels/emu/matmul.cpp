// Runs the f32 matmul kernels of cu/matmul_f32.cu (v1, and v2 batched with its operand layouts)
// on the CPU emulation, for kernels/tests/emulated.rs:
//   matmul_emu <v1|nn|nt|tn> <batches> <m> <n> <k> <shared_b 0|1> <bias 0|1> <dir>
// Reads a, b (stored as the entry expects) and bias as raw f32; writes c, poisoned with NaN first.
#include "emu.h"
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "matmul_f32.cu"

static std::string dir;
static std::vector<float> load(const char* name, size_t n) {
    std::vector<float> v(n);
    std::ifstream f(dir + "/" + name, std::ios::binary);
    if (!f.read(reinterpret_cast<char*>(v.data()), n * 4)) { fprintf(stderr, "matmul_emu: cannot read %zu floats of %s\n", n, name); exit(2); }
    return v;
}

int main(int argc, char** argv) {
    if (argc < 9) { fprintf(stderr, "usage: matmul_emu <v1|nn|nt|tn> <batches> <m> <n> <k> <shared_b> <bias> <dir>\n"); return 2; }
    const std::string kind = argv[1];
    const int batches = atoi(argv[2]), m = atoi(argv[3]), n = atoi(argv[4]), k = atoi(argv[5]);
    const bool shared_b = atoi(argv[6]) != 0, with_bias = atoi(argv[7]) != 0;
    dir = argv[8];
    auto a = load("a.f32", (size_t)batches * m * k), b = load("b.f32", (size_t)(shared_b ? 1 : batches) * k * n);
    std::vector<float> bias = with_bias ? load("bias.f32", n) : std::vector<float>();
    const float* bp = with_bias ? bias.data() : nullptr;
    std::vector<float> c((size_t)batches * m * n, NAN);
    if (kind == "v1") {
        emu_launch({(unsigned)((n + 31) / 32), (unsigned)((m + 31) / 32)}, {32, 32}, [&] { matmul_v1_f32(a.data(), b.data(), bp, c.data(), m, n, k); });
    } else {
        auto entry = kind == "nn" ? matmul_v2_f32_batched : kind == "nt" ? matmul_v2_f32_batched_nt : matmul_v2_f32_batched_tn;
        const long long sa = (long long)m * k, sb = shared_b ? 0 : (long long)k * n, sc = (long long)m * n;
        emu_launch({(unsigned)((n + 127) / 128), (unsigned)((m + 127) / 128), (unsigned)batches}, {256}, [&] {
            entry(a.data(), b.data(), bp, c.data(), m, n, k, sa, sb, sc);
        });
    }
    std::ofstream f(dir + "/c.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(c.data()), c.size() * 4);
    return 0;
}
