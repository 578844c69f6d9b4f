// Runs the Hopper matmuls of cu/matmul_wgmma.cu (v5: wgmma fed by cp.async; v6: wgmma fed by
// TMA, warp-specialized on mbarriers, persistent) on the CPU emulation with the stand-ins of
// hopper.h, for kernels/tests/emulated/:
//   matmul_wgmma_emu <v5|v6> <f32|bf16|gelu> <m> <n> <k> <bias 0|1> <blocks> <dir> [splits] [tile width 256|192]
// Reads a and b as bf16 bits (.u16), bias as raw f32 and, for v6, maps.u64: the tensor maps'
// {cols, rows, row stride in bytes, box cols, box rows} for A then B (kernels::matmul_tc's
// v6_maps, as the launcher encodes them). Writes c (f32 or bf16 bits) and, for gelu, pre (bf16
// bits), all poisoned with NaN first. v5 runs one block per tile; v6 runs `blocks` persistent
// blocks (the launcher's min(tiles, SMs)). With splits > 1, split-K as the launcher runs it: the
// f32 partials of `splits` slices of K (grid.z; v6 `blocks` per slice), then the reduction.
#define __CUDA_ARCH_FEAT_SM90_ALL 1  // the sm_90a build, not the trapping stubs
#include "emu.h"

#include "matmul_wgmma.cu"

int main(int argc, char** argv) {
    if (argc < 9) { fprintf(stderr, "usage: matmul_wgmma_emu <v5|v6> <f32|bf16|gelu> <m> <n> <k> <bias> <blocks> <dir>\n"); return 2; }
    const std::string version = argv[1], kind = argv[2];
    const int m = atoi(argv[3]), n = atoi(argv[4]), k = atoi(argv[5]);
    const bool with_bias = atoi(argv[6]) != 0;
    const unsigned blocks = (unsigned)atoi(argv[7]);
    emu_dir = argv[8];
    auto a = emu_load<bf16_t>("a.u16", (size_t)m * k), b = emu_load<bf16_t>("b.u16", (size_t)k * n);
    std::vector<float> bias = with_bias ? emu_load<float>("bias.f32", n) : std::vector<float>();
    const float* bp = with_bias ? bias.data() : nullptr;
    const bool v6 = version == "v6";
    const int bn = argc > 10 ? atoi(argv[10]) : 256;
    if (bn != 256 && bn != 192) { fprintf(stderr, "matmul_wgmma_emu: tile width %d (256 or 192)\n", bn); return 2; }
    const bool narrow = bn == 192;
    // The launcher's dynamic shared memory, exactly, on a 1024-byte boundary (see hopper.h).
    const size_t smem_bytes = v6 ? (narrow ? V6_SMEM_BYTES(192) : V6_SMEM_BYTES(256)) : (narrow ? V5_SMEM_BYTES(192) : V5_SMEM_BYTES(256));
    std::unique_ptr<unsigned char, void (*)(unsigned char*)> smem(static_cast<unsigned char*>(::operator new(smem_bytes, std::align_val_t(1024))),
                                                                 [](unsigned char* p) { ::operator delete(p, std::align_val_t(1024)); });
    emu_dynamic_smem = smem.get();
    v6_tensor_map maps[2] = {};
    if (v6) {
        auto d = emu_load<unsigned long long>("maps.u64", 10);
        const bf16_t* bases[2] = {a.data(), b.data()};
        for (int i = 0; i < 2; ++i) {
            const EmuTensorMap em{bases[i], d[5 * i], d[5 * i + 1], d[5 * i + 2], d[5 * i + 3], d[5 * i + 4]};
            static_assert(sizeof(EmuTensorMap) <= sizeof(v6_tensor_map));
            std::memcpy(&maps[i], &em, sizeof em);
        }
    }
    const unsigned threads = v6 ? V6_THREADS : V5_THREADS;
    std::vector<float> c32((size_t)m * n, NAN);
    std::vector<bf16_t> c16((size_t)m * n, 0x7fc0), pre((size_t)m * n, 0x7fc0);
    const unsigned splits = argc > 9 ? (unsigned)atoi(argv[9]) : 1;
    if (splits > 1) {
        std::vector<float> part((size_t)splits * m * n, NAN);
        emu_launch({blocks, 1, splits}, {threads}, [&] {
            if (v6) (narrow ? matmul_v6_bf16_f32out_n192 : matmul_v6_bf16_f32out)(maps[0], maps[1], nullptr, part.data(), m, n, k);
            else (narrow ? matmul_v5_bf16_f32out_n192 : matmul_v5_bf16_f32out)(a.data(), b.data(), nullptr, part.data(), m, n, k);
        });
        // The reduction's entries live in cu/matmul_mma.cu; its body is the shared epilogue's.
        emu_launch({3}, {256}, [&] {
            if (kind == "f32") mm_splitk_reduce<EPI_F32>(part.data(), (int)splits, bp, c32.data(), nullptr, m, n);
            else if (kind == "bf16") mm_splitk_reduce<EPI_BF16>(part.data(), (int)splits, bp, c16.data(), nullptr, m, n);
            else mm_splitk_reduce<EPI_BF16_GELU>(part.data(), (int)splits, bp, c16.data(), pre.data(), m, n);
        });
    } else emu_launch({blocks}, {threads}, [&] {
        if (kind == "f32") {
            if (v6) (narrow ? matmul_v6_bf16_f32out_n192 : matmul_v6_bf16_f32out)(maps[0], maps[1], bp, c32.data(), m, n, k);
            else (narrow ? matmul_v5_bf16_f32out_n192 : matmul_v5_bf16_f32out)(a.data(), b.data(), bp, c32.data(), m, n, k);
        } else if (kind == "bf16") {
            if (v6) (narrow ? matmul_v6_bf16_bf16out_n192 : matmul_v6_bf16_bf16out)(maps[0], maps[1], bp, c16.data(), m, n, k);
            else (narrow ? matmul_v5_bf16_bf16out_n192 : matmul_v5_bf16_bf16out)(a.data(), b.data(), bp, c16.data(), m, n, k);
        } else {
            if (v6) (narrow ? matmul_v6_bf16_gelu_n192 : matmul_v6_bf16_gelu)(maps[0], maps[1], bp, c16.data(), pre.data(), m, n, k);
            else (narrow ? matmul_v5_bf16_gelu_n192 : matmul_v5_bf16_gelu)(a.data(), b.data(), bp, c16.data(), pre.data(), m, n, k);
        }
    });
    if (kind == "f32") {
        emu_store("c.f32", c32);
    } else {
        emu_store("c.u16", c16);
        if (kind == "gelu") emu_store("pre.u16", pre);
    }
    return 0;
}
