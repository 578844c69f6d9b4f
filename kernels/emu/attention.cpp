// Runs the attention kernels of cu/attention.cu on the CPU emulation, for
// kernels/tests/emulated/ (which swaps the source's PTX helpers for emu/tensor_core.h):
//   attention_emu <fwd|bwd|decode|decode_bf16kv|fwd2|fwd3|bwd2|bwd3|bwd4> <heads> <tq> <tk> <d> <heads_per_row, 0: no padding> <dir> [kv_stride]
// fwd, bwd, decode: the f32 kernels (v1, decode), reading q, k, v (and dout, out, lse for bwd)
// as raw f32; decode and decode_bf16kv (k.u16, v.u16) read heads kv_stride elements apart
// (default tk * d: contiguous), as from a KV cache's buffer; fwd2, fwd3, bwd2, bwd3, bwd4: v2 (and the v3 forward, the v3, v4 backward) on the emulated tensor cores, reading q, k, v, dout as bf16 bits
// (.u16) and out, lse as f32. Padding from pads.i32. Writes out, lse or dq, dk, dv, all poisoned
// with NaN first (dq zeroed, as the launcher does).
#include "emu.h"

#include "attention.cu"

using Fwd = void (*)(const float*, const float*, const float*, float*, float*, int, int, float, const int*, int);
using Bwd = void (*)(const float*, const float*, const float*, const float*, const float*, const float*, float*, float*, float*, int, int, float, const int*, int);
using Fwd2 = void (*)(const bf16_t*, const bf16_t*, const bf16_t*, float*, float*, int, int, float, const int*, int);
using Bwd2 = void (*)(const bf16_t*, const bf16_t*, const bf16_t*, const bf16_t*, const float*, const float*, float*, float*, float*, int, int, float, const int*, int);
using Dec = void (*)(const float*, const float*, const float*, float*, float*, int, long long, float, const int*, int);
using Dec16 = void (*)(const float*, const bf16_t*, const bf16_t*, float*, float*, int, long long, float, const int*, int);

int main(int argc, char** argv) {
    if (argc < 8) { fprintf(stderr, "usage: attention_emu <fwd|bwd|decode> <heads> <tq> <tk> <d> <heads_per_row> <dir>\n"); return 2; }
    const std::string k = argv[1];
    const int heads = atoi(argv[2]), tq = atoi(argv[3]), tk = atoi(argv[4]), d = atoi(argv[5]), hpr = atoi(argv[6]);
    emu_dir = argv[7];
    const size_t nq = (size_t)heads * tq * d, nk = (size_t)heads * tk * d;
    const float scale = 1.0f / std::sqrt((float)d), nan = NAN;
    std::vector<int> pads;
    if (hpr > 0) pads = emu_load<int>("pads.i32", heads / hpr);
    const int* pad = hpr > 0 ? pads.data() : nullptr;
    const int hpr_arg = hpr > 0 ? hpr : 1;
    auto pick = [&](auto f32, auto f64, auto f128) { return d == 32 ? f32 : d == 64 ? f64 : f128; };
    if (k == "decode" || k == "decode_bf16kv") {
        const long long stride = argc > 8 ? atoll(argv[8]) : (long long)tk * d;
        const size_t nkv = (size_t)(heads - 1) * stride + (size_t)tk * d;
        auto q = emu_load<float>("q.f32", nq);
        std::vector<float> out(nq, nan), lse(heads, nan);
        if (k == "decode") {
            auto kk = emu_load<float>("k.f32", nkv), v = emu_load<float>("v.f32", nkv);
            Dec f = pick(attn_decode_f32_d32, attn_decode_f32_d64, attn_decode_f32_d128);
            emu_launch({(unsigned)heads}, {DEC_THREADS}, [&] { f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tk, stride, scale, pad, hpr_arg); });
        } else {
            auto kk = emu_load<bf16_t>("k.u16", nkv), v = emu_load<bf16_t>("v.u16", nkv);
            Dec16 f = pick(attn_decode_bf16kv_d32, attn_decode_bf16kv_d64, attn_decode_bf16kv_d128);
            emu_launch({(unsigned)heads}, {DEC_THREADS}, [&] { f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tk, stride, scale, pad, hpr_arg); });
        }
        emu_store("out.f32", out), emu_store("lse.f32", lse);
        return 0;
    }
    if (k == "fwd2" || k == "fwd3" || k == "bwd2" || k == "bwd3" || k == "bwd4") {
        auto q = emu_load<bf16_t>("q.u16", nq), kk = emu_load<bf16_t>("k.u16", nk), v = emu_load<bf16_t>("v.u16", nk);
        const unsigned tiles_q = (tq + V2_BQ - 1) / V2_BQ;
        if (k == "fwd2" || k == "fwd3") {
            std::vector<float> out(nq, nan), lse((size_t)heads * tq, nan);
            const bool v3 = k == "fwd3";  // 128 queries per block, 8 warps
            Fwd2 f = v3 ? pick(attn_fwd_v3_bf16_d32, attn_fwd_v3_bf16_d64, attn_fwd_v3_bf16_d128)
                        : pick(attn_fwd_v2_bf16_d32, attn_fwd_v2_bf16_d64, attn_fwd_v2_bf16_d128);
            const unsigned blocks_q = v3 ? (tq + 2 * V2_BQ - 1) / (2 * V2_BQ) : tiles_q;
            emu_launch({(unsigned)heads, blocks_q}, {(unsigned)(v3 ? 2 * V2_THREADS : V2_THREADS)}, [&] { f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tq, tk, scale, pad, hpr_arg); });
            emu_store("out.f32", out), emu_store("lse.f32", lse);
            return 0;
        }
        auto dout = emu_load<bf16_t>("dout.u16", nq);
        auto out = emu_load<float>("out.f32", nq), lse = emu_load<float>("lse.f32", (size_t)heads * tq);
        const int rows = heads * tq;
        std::vector<float> delta(rows, nan), dq(nq, 0.0f), dk(nk, nan), dv(nk, nan);
        emu_launch({(unsigned)((rows + 3) / 4)}, {128}, [&] { attn_bwd_preprocess_bf16(out.data(), dout.data(), delta.data(), rows, d); });
        // The launcher's dynamic shared memory (kernels::attention::BwdBf16::smem_bytes), exactly.
        const bool v4 = k == "bwd4";
        if (v4 && d == 32) { fprintf(stderr, "attention_emu: bwd4 has no d=32 build\n"); return 2; }
        const int lds = d + 8, bufs = k == "bwd2" ? 1 : 2, bk = v4 ? 128 : 64;
        std::vector<unsigned char> smem((size_t)(2 * bk * lds + 2 * bufs * B2_BQ * lds + B2_BQ * (bk + 8)) * 2 + 2 * bufs * B2_BQ * 4);
        emu_dynamic_smem = smem.data();
        Bwd2 f = v4 ? (d == 64 ? attn_bwd_v4_bf16_d64 : attn_bwd_v4_bf16_d128)
               : k == "bwd3" ? pick(attn_bwd_v3_bf16_d32, attn_bwd_v3_bf16_d64, attn_bwd_v3_bf16_d128)
                             : pick(attn_bwd_v2_bf16_d32, attn_bwd_v2_bf16_d64, attn_bwd_v2_bf16_d128);
        emu_launch({(unsigned)heads, (unsigned)((tk + bk - 1) / bk)}, {(unsigned)(v4 ? B4_THREADS : B2_THREADS)}, [&] {
            f(q.data(), kk.data(), v.data(), dout.data(), lse.data(), delta.data(), dq.data(), dk.data(), dv.data(), tq, tk, scale, pad, hpr_arg);
        });
        emu_store("dq.f32", dq), emu_store("dk.f32", dk), emu_store("dv.f32", dv);
        return 0;
    }
    auto q = emu_load<float>("q.f32", nq), kk = emu_load<float>("k.f32", nk), v = emu_load<float>("v.f32", nk);
    if (k == "fwd") {
        std::vector<float> out(nq, nan), lse((size_t)heads * tq, nan);
        Fwd f = pick(attn_fwd_v1_f32_d32, attn_fwd_v1_f32_d64, attn_fwd_v1_f32_d128);
        emu_launch({(unsigned)heads, (unsigned)((tq + V1_BQ - 1) / V1_BQ)}, {V1_THREADS}, [&] {
            f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tq, tk, scale, pad, hpr_arg);
        });
        emu_store("out.f32", out), emu_store("lse.f32", lse);
    } else if (k == "bwd") {
        auto dout = emu_load<float>("dout.f32", nq), out = emu_load<float>("out.f32", nq), lse = emu_load<float>("lse.f32", (size_t)heads * tq);
        const int rows = heads * tq;
        std::vector<float> delta(rows, nan), dq(nq, 0.0f), dk(nk, nan), dv(nk, nan);
        emu_launch({(unsigned)((rows + 3) / 4)}, {128}, [&] { attn_bwd_preprocess_f32(out.data(), dout.data(), delta.data(), rows, d); });
        Bwd f = pick(attn_bwd_v1_f32_d32, attn_bwd_v1_f32_d64, attn_bwd_v1_f32_d128);
        emu_launch({(unsigned)heads, (unsigned)((tk + V1B_BK - 1) / V1B_BK)}, {V1B_THREADS}, [&] {
            f(q.data(), kk.data(), v.data(), dout.data(), lse.data(), delta.data(), dq.data(), dk.data(), dv.data(), tq, tk, scale, pad, hpr_arg);
        });
        emu_store("dq.f32", dq), emu_store("dk.f32", dk), emu_store("dv.f32", dv);
    } else {
        fprintf(stderr, "attention_emu: unknown kernel %s\n", k.c_str());
        return 2;
    }
    return 0;
}
