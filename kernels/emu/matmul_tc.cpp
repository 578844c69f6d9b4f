// Runs the tensor-core matmuls on the CPU emulation, for kernels/tests/emulated/: v4 of
// cu/matmul_mma.cu (mma.sync, ldmatrix and cp.async on the stand-ins of tensor_core.h) and v3 of
// cu/matmul_bf16.cu (WMMA on the stand-in of mma.h):
//   matmul_tc_emu <f32|bf16|gelu|v3_f32|v3_bf16> <m> <n> <k> <bias 0|1> <dir> [splits]
// Reads a and b as bf16 bits (.u16) and bias as raw f32; writes c (f32 or bf16 bits) and, for
// gelu, pre (bf16 bits), all poisoned with NaN first. With splits > 1 (v4), split-K as the
// launcher runs it: the f32 partials of `splits` slices of K (grid.z), then the reduction.
#include "emu.h"

#include "matmul_mma.cu"
#include "matmul_bf16.cu"

int main(int argc, char** argv) {
    if (argc < 7) { fprintf(stderr, "usage: matmul_tc_emu <f32|bf16|gelu|v3_f32|v3_bf16> <m> <n> <k> <bias> <dir>\n"); return 2; }
    const std::string kind = argv[1];
    const int m = atoi(argv[2]), n = atoi(argv[3]), k = atoi(argv[4]);
    const bool with_bias = atoi(argv[5]) != 0;
    emu_dir = argv[6];
    auto a = emu_load<bf16_t>("a.u16", (size_t)m * k), b = emu_load<bf16_t>("b.u16", (size_t)k * n);
    std::vector<float> bias = with_bias ? emu_load<float>("bias.f32", n) : std::vector<float>();
    const float* bp = with_bias ? bias.data() : nullptr;
    if (kind == "v3_f32" || kind == "v3_bf16") {
        // 128x128 tiles, 8 warps; static shared memory only.
        const dim3 grid{(unsigned)((n + BN - 1) / BN), (unsigned)((m + BM - 1) / BM)};
        const auto* A = reinterpret_cast<const __nv_bfloat16*>(a.data());
        const auto* B = reinterpret_cast<const __nv_bfloat16*>(b.data());
        if (kind == "v3_f32") {
            std::vector<float> c((size_t)m * n, NAN);
            emu_launch(grid, {NTHREADS}, [&] { matmul_v3_bf16_f32out(A, B, bp, c.data(), m, n, k); });
            emu_store("c.f32", c);
        } else {
            std::vector<bf16_t> c((size_t)m * n, 0x7fc0);
            emu_launch(grid, {NTHREADS}, [&] { matmul_v3_bf16_bf16out(A, B, bp, reinterpret_cast<__nv_bfloat16*>(c.data()), m, n, k); });
            emu_store("c.u16", c);
        }
        return 0;
    }
    std::vector<unsigned char> smem(V4_SMEM_BYTES);  // the launcher's dynamic shared memory, exactly
    emu_dynamic_smem = smem.data();
    const unsigned blocks = ((m + V4_BM - 1) / V4_BM) * ((n + V4_BN - 1) / V4_BN);
    const unsigned splits = argc > 7 ? (unsigned)atoi(argv[7]) : 1;
    if (splits > 1) {
        if (kind != "f32" && kind != "bf16" && kind != "gelu") { fprintf(stderr, "matmul_tc_emu: split-K is v4's only\n"); return 2; }
        std::vector<float> part((size_t)splits * m * n, NAN), c32((size_t)m * n, NAN);
        std::vector<bf16_t> c16((size_t)m * n, 0x7fc0), pre((size_t)m * n, 0x7fc0);
        emu_launch({blocks, 1, splits}, {V4_THREADS}, [&] { matmul_v4_bf16_f32out(a.data(), b.data(), nullptr, part.data(), m, n, k); });
        const dim3 grid{3}, block{256};
        if (kind == "f32") {
            emu_launch(grid, block, [&] { matmul_splitk_reduce_f32out(part.data(), (int)splits, bp, c32.data(), m, n); });
            emu_store("c.f32", c32);
        } else if (kind == "bf16") {
            emu_launch(grid, block, [&] { matmul_splitk_reduce_bf16out(part.data(), (int)splits, bp, c16.data(), m, n); });
            emu_store("c.u16", c16);
        } else {
            emu_launch(grid, block, [&] { matmul_splitk_reduce_gelu(part.data(), (int)splits, bp, c16.data(), pre.data(), m, n); });
            emu_store("c.u16", c16);
            emu_store("pre.u16", pre);
        }
        return 0;
    }
    if (kind == "f32") {
        std::vector<float> c((size_t)m * n, NAN);
        emu_launch({blocks}, {V4_THREADS}, [&] { matmul_v4_bf16_f32out(a.data(), b.data(), bp, c.data(), m, n, k); });
        emu_store("c.f32", c);
        return 0;
    }
    std::vector<bf16_t> c((size_t)m * n, 0x7fc0), pre((size_t)m * n, 0x7fc0);
    if (kind == "bf16") {
        emu_launch({blocks}, {V4_THREADS}, [&] { matmul_v4_bf16_bf16out(a.data(), b.data(), bp, c.data(), m, n, k); });
    } else {
        emu_launch({blocks}, {V4_THREADS}, [&] { matmul_v4_bf16_gelu(a.data(), b.data(), bp, c.data(), pre.data(), m, n, k); });
        emu_store("pre.u16", pre);
    }
    emu_store("c.u16", c);
    return 0;
}
