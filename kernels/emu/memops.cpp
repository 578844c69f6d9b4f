// Runs the memory-bound kernels of cu/cross_entropy.cu, cu/embedding.cu, cu/adamw.cu and
// cu/elementwise.cu on the CPU emulation, for kernels/tests/emulated/:
//   memops_emu <kernel> <dir> <args...>
//   ce_fwd_{warp,block}_{f32,bf16} N V A ENT    x.{f32,u16} t.i64 -> loss.f32 lse.f32 (ENT=1: ent.f32)
//   ce_bwd_{warp,block}_{f32,bf16} N V A scale G  x t lse.f32 (G=1: gscale.f32) -> dx.{f32,u16}
//   ce_loss_mean_f32 N                          loss.f32 t.i64 -> mean.f32 (sum / kept, kept)
//   embedding_fwd_f32 N V D                     ids.i64 table.f32 -> out.f32
//   embedding_bwd_atomic_f32 N V D              ids.i64 dout.f32 dtable.f32 (added into) -> dtable.f32
//   embedding_bwd_sorted_f32 NSEG N V D         perm.i32 seg.i32 seg_id.i64 dout.f32 dtable.f32 -> dtable.f32
//   adamw_f32 N lr b1 b2 eps wd bc1 bc2         p g m v (.f32) -> p m v
//   adamw_multi_f32 COUNT FIRST_AT BLOCKS TOTAL b1 b2 eps   table.u64, p g m v (.f32) -> p m v
//   gelu_{fwd,bwd}_{f32,bf16} N                 x (dy) .{f32,u16} -> out
//   sum_rows R C VW GX SPLITS ROWS_PER          x.f32 -> out.f32 (memops::sum_rows_geometry)
//   l2norm NBUF BLOCKS                          data.f32 offsets.i64 lens.i64 -> out.f32 [norm, sumsq]
//   binary_<op> contig N GX TX                  a.f32 b.f32 -> out.f32 (memops::binary_launch)
//   binary_<op> bcast NA NB OUTER D1 D2 D3 SA0..3 SB0..3 GX GY TX TY
//   binary_f32_bf16_contig OP N GX TX BF16_FIRST   a.f32 b.u16 -> out.f32
// Launch shapes as the launchers in memops.rs and device.rs; outputs poisoned with NaN.
#include "emu.h"
#include <map>

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
namespace red {
#include "reduce.cu"
}
namespace bin {
#include "binary.cu"
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
        const float a = (float)atof(argv[5]);
        if (k.rfind("ce_fwd_", 0) == 0) {
            std::vector<float> loss(n, nan), lse(n, nan), ent(n, nan);
            float* e = arg(3) ? ent.data() : nullptr;
            if (bf) {
                auto x = emu_load<unsigned short>("x.u16", (size_t)n * v);
                auto f = warp ? ce::ce_fwd_warp_bf16 : ce::ce_fwd_block_bf16;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), loss.data(), lse.data(), e, n, v, a); });
            } else {
                auto x = emu_load<float>("x.f32", (size_t)n * v);
                auto f = warp ? ce::ce_fwd_warp_f32 : ce::ce_fwd_block_f32;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), loss.data(), lse.data(), e, n, v, a); });
            }
            emu_store("loss.f32", loss), emu_store("lse.f32", lse);
            if (e) emu_store("ent.f32", ent);
        } else {
            const float scale = (float)atof(argv[6]);
            auto lse = emu_load<float>("lse.f32", n);
            std::vector<float> gs = arg(4) ? emu_load<float>("gscale.f32", n) : std::vector<float>();
            const float* g = arg(4) ? gs.data() : nullptr;
            if (bf) {
                auto x = emu_load<unsigned short>("x.u16", (size_t)n * v);
                std::vector<unsigned short> dx((size_t)n * v, bf_nan);
                auto f = warp ? ce::ce_bwd_warp_bf16 : ce::ce_bwd_block_bf16;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), lse.data(), g, dx.data(), n, v, a, scale); });
                emu_store("dx.u16", dx);
            } else {
                auto x = emu_load<float>("x.f32", (size_t)n * v);
                std::vector<float> dx((size_t)n * v, nan);
                auto f = warp ? ce::ce_bwd_warp_f32 : ce::ce_bwd_block_f32;
                emu_launch(grid, threads, [&] { f(x.data(), t.data(), lse.data(), g, dx.data(), n, v, a, scale); });
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
    } else if (k == "adamw_multi_f32") {
        // table.u64: kernels::adamw::plan's words, each record's four buffer words being element
        // offsets into p, g, m, v (.f32, the tensors back to back), turned into pointers here.
        const int count = (int)arg(0), first_at = (int)arg(1), blocks = (int)arg(2);
        const long long total = arg(3);
        float h[3];
        for (int i = 0; i < 3; ++i) h[i] = (float)atof(argv[7 + i]);
        auto table = emu_load<unsigned long long>("table.u64", (size_t)first_at + count + 1);
        auto p = emu_load<float>("p.f32", total), g = emu_load<float>("g.f32", total), m = emu_load<float>("m.f32", total), v = emu_load<float>("v.f32", total);
        float* bases[4] = {p.data(), g.data(), m.data(), v.data()};
        for (int t = 0; t < count; ++t)
            for (int w = 0; w < 4; ++w) {
                float* ptr = bases[w] + table[(size_t)t * 8 + w];
                std::memcpy(&table[(size_t)t * 8 + w], &ptr, sizeof(ptr));
            }
        const auto* records = reinterpret_cast<const opt::AdamwTensor*>(table.data());
        const auto* first = reinterpret_cast<const long long*>(table.data() + first_at);
        emu_launch({(unsigned)blocks}, threads, [&] { opt::adamw_multi_f32(records, first, count, h[0], h[1], h[2]); });
        emu_store("p.f32", p), emu_store("m.f32", m), emu_store("v.f32", v);
    } else if (k == "gelu_fwd_bf16" || k == "gelu_bwd_bf16") {
        const long long n = arg(0);
        auto x = emu_load<unsigned short>("x.u16", n);
        std::vector<unsigned short> out(n, bf_nan);
        if (k == "gelu_fwd_bf16") {
            emu_launch(flat, threads, [&] { act::gelu_fwd_bf16(x.data(), out.data(), n); });
        } else {
            auto dy = emu_load<unsigned short>("dy.u16", n);
            emu_launch(flat, threads, [&] { act::gelu_bwd_bf16(x.data(), dy.data(), out.data(), n); });
        }
        emu_store("out.u16", out);
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
    } else if (k == "sum_rows") {
        const int r = (int)arg(0), c = (int)arg(1), vw = (int)arg(2), gx = (int)arg(3), splits = (int)arg(4), rows_per = (int)arg(5);
        auto x = emu_load<float>("x.f32", (size_t)r * c);
        std::vector<float> out(c, nan), scratch((size_t)splits * c, nan);
        float* dst = splits > 1 ? scratch.data() : out.data();
        auto f = vw == 4 ? red::sum_rows_vec4_f32 : red::sum_rows_f32;
        emu_launch({(unsigned)gx, (unsigned)splits}, {32, 8}, [&] { f(x.data(), dst, r, c, rows_per); });
        if (splits > 1) emu_launch({(unsigned)((c + 255) / 256)}, {256}, [&] { red::sum_rows_finish_f32(scratch.data(), out.data(), splits, c); });
        emu_store("out.f32", out);
    } else if (k == "l2norm") {
        const int nbuf = (int)arg(0), blocks = (int)arg(1);
        auto offsets = emu_load<long long>("offsets.i64", nbuf), lens = emu_load<long long>("lens.i64", nbuf);
        long long total = 0;
        for (int i = 0; i < nbuf; ++i) total = std::max(total, offsets[i] + lens[i]);
        auto data = emu_load<float>("data.f32", total);
        std::vector<unsigned long long> ptrs(nbuf);
        for (int i = 0; i < nbuf; ++i) ptrs[i] = (unsigned long long)(data.data() + offsets[i]);
        std::vector<float> partials(blocks, nan), out(2, nan);
        emu_launch({(unsigned)blocks}, {256}, [&] { red::l2norm_partial_f32(ptrs.data(), lens.data(), nbuf, partials.data()); });
        emu_launch({1}, {1024}, [&] { red::l2norm_finish_f32(partials.data(), blocks, out.data()); });
        emu_store("out.f32", out);
    } else if (k == "binary_f32_bf16_contig") {
        // argv[3..]: op code, n, grid x, threads x, bf16_first; a.f32 and b.u16.
        const int op = atoi(argv[3]), first = atoi(argv[7]);
        const long long n = atoll(argv[4]);
        const unsigned gx = (unsigned)atoll(argv[5]), tx = (unsigned)atoll(argv[6]);
        auto a = emu_load<float>("a.f32", n);
        auto b = emu_load<unsigned short>("b.u16", n);
        std::vector<float> out(n, nan);
        emu_launch({gx}, {tx}, [&] { bin::binary_f32_bf16_contig(a.data(), b.data(), out.data(), n, op, first); });
        emu_store("out.f32", out);
    } else if (k.rfind("binary_", 0) == 0) {
        using Contig = void (*)(const float*, const float*, float*, long long);
        using Bcast = void (*)(const float*, const float*, float*, long long, long long, long long, long long, long long, long long, long long,
                               long long, long long, long long, long long, long long);
        const std::string op = k.substr(7);
        const std::map<std::string, std::pair<Contig, Bcast>> ops = {
            {"add", {bin::binary_add_f32_contig, bin::binary_add_f32}}, {"sub", {bin::binary_sub_f32_contig, bin::binary_sub_f32}},
            {"mul", {bin::binary_mul_f32_contig, bin::binary_mul_f32}}, {"div", {bin::binary_div_f32_contig, bin::binary_div_f32}},
            {"min", {bin::binary_min_f32_contig, bin::binary_min_f32}}, {"max", {bin::binary_max_f32_contig, bin::binary_max_f32}}};
        const auto& fs = ops.at(op);
        if (std::string(argv[3]) == "contig") {
            const long long n = atoll(argv[4]);
            const unsigned gx = (unsigned)atoll(argv[5]), tx = (unsigned)atoll(argv[6]);
            auto a = emu_load<float>("a.f32", n), b = emu_load<float>("b.f32", n);
            std::vector<float> out(n, nan);
            emu_launch({gx}, {tx}, [&] { fs.first(a.data(), b.data(), out.data(), n); });
            emu_store("out.f32", out);
        } else {
            if (argc < 4 + 18) { fprintf(stderr, "memops_emu: binary bcast takes 18 numbers\n"); return 2; }
            long long v[18];
            for (int i = 0; i < 18; ++i) v[i] = atoll(argv[4 + i]);
            const long long na = v[0], nb = v[1], outer = v[2], d1 = v[3], d2 = v[4], d3 = v[5], *sa = &v[6], *sb = &v[10];
            auto a = emu_load<float>("a.f32", na), b = emu_load<float>("b.f32", nb);
            std::vector<float> out(outer * d3, nan);
            emu_launch({(unsigned)v[14], (unsigned)v[15]}, {(unsigned)v[16], (unsigned)v[17]}, [&] {
                fs.second(a.data(), b.data(), out.data(), outer, d1, d2, d3, sa[0], sa[1], sa[2], sa[3], sb[0], sb[1], sb[2], sb[3]);
            });
            emu_store("out.f32", out);
        }
    } else {
        fprintf(stderr, "memops_emu: unknown kernel %s\n", k.c_str());
        return 2;
    }
    return 0;
}
