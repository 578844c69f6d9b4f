// Runs the f32 attention kernels of cu/attention.cu (v1 forward and backward, decode) on the
// CPU emulation, for kernels/tests/emulated.rs (which passes the source without the bf16
// tensor-core section: its inline PTX has no CPU meaning):
//   attention_emu <fwd|bwd|decode> <heads> <tq> <tk> <d> <heads_per_row, 0: no padding> <dir>
// Reads q, k, v (and dout, out, lse for bwd) as raw f32 and pads.i32; writes out, lse or dq,
// dk, dv, all poisoned with NaN first (dq zeroed, as the launcher does).
#include "emu.h"

#include "attention_f32.cu"

using Fwd = void (*)(const float*, const float*, const float*, float*, float*, int, int, float, const int*, int);
using Bwd = void (*)(const float*, const float*, const float*, const float*, const float*, const float*, float*, float*, float*, int, int, float, const int*, int);
using Dec = void (*)(const float*, const float*, const float*, float*, float*, int, float, const int*, int);

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
    auto q = emu_load<float>("q.f32", nq), kk = emu_load<float>("k.f32", nk), v = emu_load<float>("v.f32", nk);
    if (k == "fwd" || k == "decode") {
        std::vector<float> out(nq, nan), lse((size_t)heads * tq, nan);
        if (k == "fwd") {
            Fwd f = pick(attn_fwd_v1_f32_d32, attn_fwd_v1_f32_d64, attn_fwd_v1_f32_d128);
            emu_launch({(unsigned)heads, (unsigned)((tq + V1_BQ - 1) / V1_BQ)}, {V1_THREADS}, [&] {
                f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tq, tk, scale, pad, hpr_arg);
            });
        } else {
            Dec f = pick(attn_decode_f32_d32, attn_decode_f32_d64, attn_decode_f32_d128);
            emu_launch({(unsigned)heads}, {DEC_THREADS}, [&] { f(q.data(), kk.data(), v.data(), out.data(), lse.data(), tk, scale, pad, hpr_arg); });
        }
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
