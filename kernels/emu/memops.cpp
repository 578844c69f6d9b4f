// Runs the memory-bound kernels of cu/cross_entropy.cu, cu/embedding.cu, cu/adamw.cu and
// cu/elementwise.cu on the CPU emulation, for kernels/tests/emulated.rs:
//   memops_emu <kernel> <dir> <args...>
//   ce_fwd_{warp,block}_{f32,bf16} N V          x.{f32,u16} t.i64 -> loss.f32 lse.f32
//   ce_bwd_{warp,block}_{f32,bf16} N V scale    x t lse.f32 -> dx.{f32,u16}
//   ce_loss_mean_f32 N                          loss.f32 t.i64 -> mean.f32 (sum / kept, kept)
//   embedding_fwd_f32 N V D                     ids.i64 table.f32 -> out.f32
//   embedding_bwd_atomic_f32 N V D              ids.i64 dout.f32 dtable.f32 (added into) -> dtable.f32
//   embedding_bwd_sorted_f32 NSEG N V D         perm.i32 seg.i32 seg_id.i64 dout.f32 dtable.f32 -> dtable.f32
//   adamw_f32 N lr b1 b2 eps wd bc1 bc2         p g m v (.f32) -> p m v
//   gelu_fwd_f32 N / gelu_bwd_f32 N             x (dy) -> y / dx
// Launch shapes as the launchers in memops.rs and device.rs; outputs poisoned with NaN.
#include "emu.h"

namespace ce {
#include "cross_entropy.cu"
}
namespace emb {
#include "embedding.cu"
}
namespace opt {
#include "adamw.cu"
}
namespace act {
#include "elementwise.cu"
}

int main(int argc, char** argv) {
    if (argc < 4) { fprintf(stderr, "usage: memops_emu <kernel> <dir> <args...>\n"); return 2; }
    const std::string k = argv[1];
    emu_dir = argv[2];
    auto arg = [&](int i) { return atoll(argv[3 + i]); };
    const float nan = NAN;
    const unsigned short bf_nan = 0x7fc0;
    auto warp_rows = [](long long rows) { return dim3{(unsigned)std::max((rows + 7) / 8, 1LL)}; };
    const dim3 threads{256}, flat{5};
    if (k.rfind("ce_fwd_", 0) == 0 || k.rfind("ce_bwd_", 0) == 0) {
        const int n = (int)arg(0), v = (int)arg(1);
        const bool warp = k.find("_warp_") != std::string::npos, bf = k.find("bf16") != std::string::npos;
        const dim3 grid = warp ? warp_rows(n) : dim3{(unsigned)n};
        auto t = emu_load<long long>("t.i64", n);
        if (k.rfind("ce_fwd_", 0) == 0) {
            std::vector<float> loss(n, nan), lse(n, nan);
            if (bf) {
                auto x = emu_load<unsigned short>("x.u16", (size_t)n * v);
                auto f = warp ? ce::ce_fwd_warp_bf16 : ce::ce_fwd_block_bf16;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), loss.data(), lse.data(), n, v); });
            } else {
                auto x = emu_load<float>("x.f32", (size_t)n * v);
                auto f = warp ? ce::ce_fwd_warp_f32 : ce::ce_fwd_block_f32;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), loss.data(), lse.data(), n, v); });
            }
            emu_store("loss.f32", loss), emu_store("lse.f32", lse);
        } else {
            const float scale = (float)atof(argv[5]);
            auto lse = emu_load<float>("lse.f32", n);
            if (bf) {
                auto x = emu_load<unsigned short>("x.u16", (size_t)n * v);
                std::vector<unsigned short> dx((size_t)n * v, bf_nan);
                auto f = warp ? ce::ce_bwd_warp_bf16 : ce::ce_bwd_block_bf16;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), lse.data(), dx.data(), n, v, scale); });
                emu_store("dx.u16", dx);
            } else {
                auto x = emu_load<float>("x.f32", (size_t)n * v);
                std::vector<float> dx((size_t)n * v, nan);
                auto f = warp ? ce::ce_bwd_warp_f32 : ce::ce_bwd_block_f32;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), lse.data(), dx.data(), n, v, scale); });
                emu_store("dx.f32", dx);
            }
        }
    } else if (k == "ce_loss_mean_f32") {
        const int n = (int)arg(0);
        auto loss = emu_load<float>("loss.f32", n);
        auto t = emu_load<long long>("t.i64", n);
        std::vector<float> out(2, nan);
        emu_launch({1}, {1024}, [&] { ce::ce_loss_mean_f32(loss.data(), t.data(), n, out.data()); });
        emu_store("mean.f32", out);
    } else if (k == "embedding_fwd_f32") {
        const int n = (int)arg(0), v = (int)arg(1), d = (int)arg(2);
        auto ids = emu_load<long long>("ids.i64", n);
        auto table = emu_load<float>("table.f32", (size_t)v * d);
        std::vector<float> out((size_t)n * d, nan);
        emu_launch(warp_rows(n), threads, [&] { emb::embedding_fwd_f32(ids.data(), table.data(), out.data(), n, v, d); });
        emu_store("out.f32", out);
    } else if (k == "embedding_bwd_atomic_f32") {
        const int n = (int)arg(0), v = (int)arg(1), d = (int)arg(2);
        auto ids = emu_load<long long>("ids.i64", n);
        auto dout = emu_load<float>("dout.f32", (size_t)n * d);
        auto dtable = emu_load<float>("dtable.f32", (size_t)v * d);
        emu_launch(warp_rows(n), threads, [&] { emb::embedding_bwd_atomic_f32(ids.data(), dout.data(), dtable.data(), n, v, d); });
        emu_store("dtable.f32", dtable);
    } else if (k == "embedding_bwd_sorted_f32") {
        const int nseg = (int)arg(0), n = (int)arg(1), v = (int)arg(2), d = (int)arg(3);
        auto perm = emu_load<int>("perm.i32", n);
        auto seg = emu_load<int>("seg.i32", nseg + 1);
        auto seg_id = emu_load<long long>("seg_id.i64", nseg);
        auto dout = emu_load<float>("dout.f32", (size_t)n * d);
        auto dtable = emu_load<float>("dtable.f32", (size_t)v * d);
        emu_launch(warp_rows(nseg), threads, [&] {
            emb::embedding_bwd_sorted_f32(perm.data(), seg.data(), seg_id.data(), nseg, dout.data(), dtable.data(), v, d);
        });
        emu_store("dtable.f32", dtable);
    } else if (k == "adamw_f32") {
        const long long n = arg(0);
        float h[7];
        for (int i = 0; i < 7; ++i) h[i] = (float)atof(argv[4 + i]);
        auto p = emu_load<float>("p.f32", n), g = emu_load<float>("g.f32", n), m = emu_load<float>("m.f32", n), v = emu_load<float>("v.f32", n);
        emu_launch(flat, threads, [&] { opt::adamw_f32(p.data(), g.data(), m.data(), v.data(), n, h[0], h[1], h[2], h[3], h[4], h[5], h[6]); });
        emu_store("p.f32", p), emu_store("m.f32", m), emu_store("v.f32", v);
    } else if (k == "gelu_fwd_f32" || k == "gelu_bwd_f32") {
        const long long n = arg(0);
        auto x = emu_load<float>("x.f32", n);
        std::vector<float> out(n, nan);
        if (k == "gelu_fwd_f32") {
            emu_launch(flat, threads, [&] { act::gelu_fwd_f32(x.data(), out.data(), n); });
        } else {
            auto dy = emu_load<float>("dy.f32", n);
            emu_launch(flat, threads, [&] { act::gelu_bwd_f32(x.data(), dy.data(), out.data(), n); });
        }
        emu_store("out.f32", out);
    } else {
        fprintf(stderr, "memops_emu: unknown kernel %s\n", k.c_str());
        return 2;
    }
    return 0;
}
