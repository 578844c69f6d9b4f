// Runs one kernel of cu/pointwise.cu on the CPU emulation, for kernels/tests/emulated/:
//   pointwise_emu <kernel> <rows> <cols> <dir>
// Row kernels (max_rows_f32, sample_rows_f32 <a>, log_softmax_fwd_f32, softmax_bwd_f32 / _log)
// read <dir>/x.f32 (and g.f32, or sample's u.f32); the view kernels (strided_assign_f32 and _u16, cast_bf16_strided; copy_ and
// widen_bf16_strided read x.u16 instead) also read <dir>/view.i64: n, cols, pitch, d1..d5, s0..s5, t0..t5 (padded to rank 6 as the launchers do).
// Elementwise kernels (unary_fwd_f32 <op> <lo> <hi>, unary_bwd_f32 <op> <lo> <hi>, where_f32,
// minmax_bwd_f32 <is_max>, fill_f32 <value>, gather_rows_f32, scatter_add_rows_f32) take
// rows x cols elements and read a.f32, b.f32, c.f32, g.f32 and ids.i64 as they need; the extra
// arguments follow <dir>.
// Outputs start poisoned (NaN, or 0x1234 for bf16 bits), as in the GPU self-test.
#include "emu.h"

#include "pointwise.cu"

int main(int argc, char** argv) {
    if (argc < 5) { fprintf(stderr, "usage: pointwise_emu <kernel> <rows> <cols> <dir>\n"); return 2; }
    const std::string k = argv[1];
    const int rows = atoi(argv[2]), cols = atoi(argv[3]);
    emu_dir = argv[4];
    const size_t n = (size_t)rows * cols;
    const dim3 row_grid{(unsigned)std::max((rows + 3) / 4, 1)}, row_block{128}, flat_grid{3}, flat_block{256};
    const float nan = NAN;
    if (k == "max_rows_f32") {
        auto x = emu_load<float>("x.f32", n);
        std::vector<float> vals(rows, nan);
        std::vector<long long> idx(rows, -7);
        emu_launch(row_grid, row_block, [&] { max_rows_f32(x.data(), vals.data(), idx.data(), rows, cols); });
        emu_store("vals.f32", vals), emu_store("idx.i64", idx);
    } else if (k == "sample_rows_f32") {
        // <dir>/u.f32: a uniform per row; argv[5]: the scale a (1 / temperature). A block per row.
        auto x = emu_load<float>("x.f32", n), u = emu_load<float>("u.f32", rows);
        std::vector<long long> idx(rows, -7);
        const float a = (float)atof(argv[5]);
        emu_launch(dim3{(unsigned)rows}, dim3{256}, [&] { sample_rows_f32(x.data(), u.data(), idx.data(), cols, a); });
        emu_store("idx.i64", idx);
    } else if (k == "log_softmax_fwd_f32") {
        auto x = emu_load<float>("x.f32", n);
        std::vector<float> y(n, nan);
        emu_launch(row_grid, row_block, [&] { log_softmax_fwd_f32(x.data(), y.data(), rows, cols); });
        emu_store("y.f32", y);
    } else if (k == "softmax_bwd_f32" || k == "softmax_bwd_f32_log") {
        auto y = emu_load<float>("x.f32", n), g = emu_load<float>("g.f32", n);
        std::vector<float> dx(n, nan);
        const int is_log = k == "softmax_bwd_f32_log";
        emu_launch(row_grid, row_block, [&] { softmax_bwd_f32(y.data(), g.data(), dx.data(), rows, cols, is_log); });
        emu_store("dx.f32", dx);
    } else if (k == "strided_assign_f32" || k == "strided_assign_u16" || k == "cast_bf16_strided" || k == "copy_bf16_strided" || k == "widen_bf16_strided") {
        // rows x cols: the source buffer's size is rows * cols; the view reads inside it.
        auto a = emu_load<long long>("view.i64", 20);
        const long long vn = a[0], vcols = a[1], pitch = a[2], *d = &a[3], *s = &a[8], *t = &a[14];
        const size_t out_len = (vn / vcols) * pitch;
        if (k == "strided_assign_f32") {
            auto src = emu_load<float>("x.f32", n);
            std::vector<float> dst(vn, nan);
            emu_launch(flat_grid, flat_block, [&] {
                strided_assign_f32(src.data(), dst.data(), vn, d[0], d[1], d[2], d[3], d[4], s[0], s[1], s[2], s[3], s[4], s[5], t[0], t[1], t[2], t[3], t[4], t[5]);
            });
            emu_store("dst.f32", dst);
        } else if (k == "strided_assign_u16") {
            auto src = emu_load<unsigned short>("x.u16", n);
            std::vector<unsigned short> dst(vn, 0x1234);
            emu_launch(flat_grid, flat_block, [&] {
                strided_assign_u16(src.data(), dst.data(), vn, d[0], d[1], d[2], d[3], d[4], s[0], s[1], s[2], s[3], s[4], s[5], t[0], t[1], t[2], t[3], t[4], t[5]);
            });
            emu_store("dst.u16", dst);
        } else if (k == "cast_bf16_strided") {
            auto src = emu_load<float>("x.f32", n);
            std::vector<unsigned short> dst(out_len, 0x1234);
            emu_launch(flat_grid, flat_block, [&] {
                cast_bf16_strided(src.data(), dst.data(), vn, vcols, pitch, d[0], d[1], d[2], d[3], d[4], s[0], s[1], s[2], s[3], s[4], s[5]);
            });
            emu_store("dst.u16", dst);
        } else if (k == "copy_bf16_strided") {
            auto src = emu_load<unsigned short>("x.u16", n);
            std::vector<unsigned short> dst(out_len, 0x1234);
            emu_launch(flat_grid, flat_block, [&] {
                copy_bf16_strided(src.data(), dst.data(), vn, vcols, pitch, d[0], d[1], d[2], d[3], d[4], s[0], s[1], s[2], s[3], s[4], s[5]);
            });
            emu_store("dst.u16", dst);
        } else {
            auto src = emu_load<unsigned short>("x.u16", n);
            std::vector<float> dst(out_len, nan);
            emu_launch(flat_grid, flat_block, [&] {
                widen_bf16_strided(src.data(), dst.data(), vn, vcols, pitch, d[0], d[1], d[2], d[3], d[4], s[0], s[1], s[2], s[3], s[4], s[5]);
            });
            emu_store("dst.f32", dst);
        }
    } else if (k == "cast_bf16_transposed" || k == "copy_bf16_transposed") {
        // <dir>/tview.i64: B, R, C, ld, bs, pitch; the source (from its offset) is rows x cols long.
        auto a = emu_load<long long>("tview.i64", 6);
        const long long B = a[0], R = a[1], Cc = a[2], ld = a[3], bs = a[4], pitch = a[5];
        std::vector<unsigned short> dst((size_t)(B * R * pitch), 0x1234);
        const dim3 grid{(unsigned)((Cc + 31) / 32), (unsigned)((R + 31) / 32), (unsigned)B}, block{32, 8};
        if (k == "cast_bf16_transposed") {
            auto src = emu_load<float>("x.f32", n);
            emu_launch(grid, block, [&] { cast_bf16_transposed(src.data(), dst.data(), R, Cc, ld, bs, pitch); });
        } else {
            auto src = emu_load<unsigned short>("x.u16", n);
            emu_launch(grid, block, [&] { copy_bf16_transposed(src.data(), dst.data(), R, Cc, ld, bs, pitch); });
        }
        emu_store("dst.u16", dst);
    } else if (k == "unary_fwd_f32" || k == "unary_bwd_f32") {
        const int op = atoi(argv[5]);
        const float lo = (float)atof(argv[6]), hi = (float)atof(argv[7]);
        auto x = emu_load<float>("a.f32", n);
        std::vector<float> y(n, nan);
        if (k == "unary_fwd_f32") {
            emu_launch(flat_grid, flat_block, [&] { unary_fwd_f32(x.data(), y.data(), (long long)n, op, lo, hi); });
            emu_store("out.f32", y);
        } else {
            auto fy = emu_load<float>("b.f32", n), g = emu_load<float>("g.f32", n);
            emu_launch(flat_grid, flat_block, [&] { unary_bwd_f32(x.data(), fy.data(), g.data(), y.data(), (long long)n, op, lo, hi); });
            emu_store("out.f32", y);
        }
    } else if (k == "where_f32") {
        auto c = emu_load<float>("c.f32", n), a = emu_load<float>("a.f32", n), b = emu_load<float>("b.f32", n);
        std::vector<float> out(n, nan);
        emu_launch(flat_grid, flat_block, [&] { where_f32(c.data(), a.data(), b.data(), out.data(), (long long)n); });
        emu_store("out.f32", out);
    } else if (k == "minmax_bwd_f32") {
        auto a = emu_load<float>("a.f32", n), b = emu_load<float>("b.f32", n), g = emu_load<float>("g.f32", n);
        std::vector<float> da(n, nan), db(n, nan);
        const int is_max = atoi(argv[5]);
        emu_launch(flat_grid, flat_block, [&] { minmax_bwd_f32(a.data(), b.data(), g.data(), da.data(), db.data(), (long long)n, is_max); });
        emu_store("da.f32", da), emu_store("db.f32", db);
    } else if (k == "fill_f32") {
        std::vector<float> out(n, nan);
        const float value = (float)atof(argv[5]);
        emu_launch(flat_grid, flat_block, [&] { fill_f32(out.data(), (long long)n, value); });
        emu_store("out.f32", out);
    } else if (k == "gather_rows_f32" || k == "scatter_add_rows_f32") {
        // rows of `cols` (v) entries, `kk` ids per row.
        const int kk = atoi(argv[5]);
        auto ids = emu_load<long long>("ids.i64", (size_t)rows * kk);
        const long long m = (long long)rows * kk;
        if (k == "gather_rows_f32") {
            auto x = emu_load<float>("a.f32", n);
            std::vector<float> out(m, nan);
            emu_launch(flat_grid, flat_block, [&] { gather_rows_f32(x.data(), ids.data(), out.data(), m, cols, kk); });
            emu_store("out.f32", out);
        } else {
            auto g = emu_load<float>("g.f32", m);
            std::vector<float> dx(n, 0.0f);  // zeroed by the launcher
            emu_launch(flat_grid, flat_block, [&] { scatter_add_rows_f32(g.data(), ids.data(), dx.data(), m, cols, kk); });
            emu_store("out.f32", dx);
        }
    } else {
        fprintf(stderr, "pointwise_emu: unknown kernel %s\n", k.c_str());
        return 2;
    }
    return 0;
}
