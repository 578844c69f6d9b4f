// Runs one row kernel (cu/softmax.cu, cu/layernorm.cu) on the CPU emulation, for
// kernels/tests/emulated/:   rows_emu <kernel> <rows> <cols> <dir> [blocks]
// Inputs are read from <dir>/<name>.f32 (raw little-endian f32; bf16 activations of the _bf16_
// kernels from <name>.u16, their bits), outputs written beside them; outputs start as NaN, as
// the GPU self-test poisons them.
#include "emu.h"
#include <map>

namespace sm {
#include "softmax.cu"
}
namespace ln {
#include "layernorm.cu"
}

// Files are named by the stored type: <name>.f32, or <name>.u16 for bf16 bits.
template <typename T = float>
static std::vector<T> load(const char* name, size_t n) {
    return emu_load<T>(std::string(name) + (sizeof(T) == 4 ? ".f32" : ".u16"), n);
}
template <typename T>
static void store(const char* name, const std::vector<T>& v) {
    emu_store(std::string(name) + (sizeof(T) == 4 ? ".f32" : ".u16"), v);
}
const unsigned short BF16_NAN = 0x7fc0;

int main(int argc, char** argv) {
    if (argc < 5) { fprintf(stderr, "usage: rows_emu <kernel> <rows> <cols> <dir> [blocks]\n"); return 2; }
    const std::string k = argv[1];
    const int rows = atoi(argv[2]), C = atoi(argv[3]), blocks = argc > 5 ? atoi(argv[5]) : 1;
    emu_dir = argv[4];
    const size_t n = (size_t)rows * C;
    const dim3 row_grid{(unsigned)std::max((rows + 3) / 4, 1)}, row_block{128};
    const float nan = NAN;

    using Softmax = void (*)(const float*, float*, int, int);
    const std::map<std::string, Softmax> softmax = {
        {"softmax_fwd_f32", sm::softmax_fwd_f32}, {"softmax_fwd_v2_f32_w1024", sm::softmax_fwd_v2_f32_w1024},
        {"softmax_fwd_v2_f32_w2048", sm::softmax_fwd_v2_f32_w2048}};
    using LnFwd = void (*)(const float*, const float*, const float*, float*, float*, float*, int, int, float);
    const std::map<std::string, LnFwd> ln_fwd = {
        {"layernorm_fwd_f32", ln::layernorm_fwd_f32}, {"layernorm_fwd_v2_f32_w1024", ln::layernorm_fwd_v2_f32_w1024},
        {"layernorm_fwd_v2_f32_w2048", ln::layernorm_fwd_v2_f32_w2048}};
    using LnBwdV2 = void (*)(const float*, const float*, const float*, const float*, const float*, float*, float*, int, int);
    const std::map<std::string, LnBwdV2> ln_bwd_v2 = {
        {"layernorm_bwd_v2_f32_w1024", ln::layernorm_bwd_v2_f32_w1024}, {"layernorm_bwd_v2_f32_w2048", ln::layernorm_bwd_v2_f32_w2048}};
    using bf = unsigned short;
    using SoftmaxBf = void (*)(const bf*, bf*, int, int);
    const std::map<std::string, SoftmaxBf> softmax_bf = {
        {"softmax_fwd_v2_bf16_w1024", sm::softmax_fwd_v2_bf16_w1024}, {"softmax_fwd_v2_bf16_w2048", sm::softmax_fwd_v2_bf16_w2048}};
    using LnFwdBf = void (*)(const bf*, const float*, const float*, bf*, float*, float*, int, int, float);
    const std::map<std::string, LnFwdBf> ln_fwd_bf = {
        {"layernorm_fwd_v2_bf16_w1024", ln::layernorm_fwd_v2_bf16_w1024}, {"layernorm_fwd_v2_bf16_w2048", ln::layernorm_fwd_v2_bf16_w2048}};
    using LnBwdBf = void (*)(const bf*, const float*, const float*, const float*, const bf*, bf*, float*, int, int);
    const std::map<std::string, LnBwdBf> ln_bwd_bf = {
        {"layernorm_bwd_v2_bf16_w1024", ln::layernorm_bwd_v2_bf16_w1024}, {"layernorm_bwd_v2_bf16_w2048", ln::layernorm_bwd_v2_bf16_w2048}};
    // f32 x with a bf16 y / dy (autocast's layernorm).
    using LnFwdMix = void (*)(const float*, const float*, const float*, bf*, float*, float*, int, int, float);
    const std::map<std::string, LnFwdMix> ln_fwd_mix = {
        {"layernorm_fwd_v2_f32_bf16_w1024", ln::layernorm_fwd_v2_f32_bf16_w1024}, {"layernorm_fwd_v2_f32_bf16_w2048", ln::layernorm_fwd_v2_f32_bf16_w2048}};
    using LnBwdMix = void (*)(const float*, const float*, const float*, const float*, const bf*, float*, float*, int, int);
    const std::map<std::string, LnBwdMix> ln_bwd_mix = {
        {"layernorm_bwd_v2_f32_bf16_w1024", ln::layernorm_bwd_v2_f32_bf16_w1024}, {"layernorm_bwd_v2_f32_bf16_w2048", ln::layernorm_bwd_v2_f32_bf16_w2048}};

    if (auto it = softmax.find(k); it != softmax.end()) {
        auto x = load("x", n);
        std::vector<float> y(n, nan);
        emu_launch(row_grid, row_block, [&] { it->second(x.data(), y.data(), rows, C); });
        store("y", y);
    } else if (auto it = ln_fwd.find(k); it != ln_fwd.end()) {
        auto x = load("x", n), g = load("gamma", C), b = load("beta", C);
        std::vector<float> y(n, nan), mean(rows, nan), rstd(rows, nan);
        emu_launch(row_grid, row_block, [&] { it->second(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f); });
        store("y", y), store("mean", mean), store("rstd", rstd);
    } else if (k == "layernorm_bwd_f32" || ln_bwd_v2.count(k)) {
        auto x = load("x", n), g = load("gamma", C), mean = load("mean", rows), rstd = load("rstd", rows), dy = load("dy", n);
        std::vector<float> dx(n, nan), dg(C, nan), db(C, nan);
        if (k == "layernorm_bwd_f32") {
            emu_launch(row_grid, row_block, [&] { ln::layernorm_bwd_dx_f32(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), rows, C); });
            emu_launch({(unsigned)std::max((C + 31) / 32, 1)}, {32, 8}, [&] {
                ln::layernorm_bwd_dparams_f32(x.data(), mean.data(), rstd.data(), dy.data(), dg.data(), db.data(), rows, C);
            });
        } else {
            std::vector<float> partial((size_t)blocks * 2 * C, nan);
            std::vector<float> block_sums(2 * (size_t)C, nan);  // the launch's dynamic shared memory
            emu_dynamic_smem = block_sums.data();
            auto kernel = ln_bwd_v2.at(k);
            emu_launch({(unsigned)blocks}, {256}, [&] { kernel(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), partial.data(), rows, C); });
            emu_launch({(unsigned)std::max((2 * C + 31) / 32, 1)}, {32, 8}, [&] { ln::layernorm_bwd_v2_finish_f32(partial.data(), dg.data(), db.data(), blocks, C); });
        }
        store("dx", dx), store("dgamma", dg), store("dbeta", db);
    } else if (auto it = softmax_bf.find(k); it != softmax_bf.end()) {
        auto x = load<bf>("x", n);
        std::vector<bf> y(n, BF16_NAN);
        emu_launch(row_grid, row_block, [&] { it->second(x.data(), y.data(), rows, C); });
        store("y", y);
    } else if (auto it = ln_fwd_bf.find(k); it != ln_fwd_bf.end()) {
        auto x = load<bf>("x", n);
        auto g = load("gamma", C), b = load("beta", C);
        std::vector<bf> y(n, BF16_NAN);
        std::vector<float> mean(rows, nan), rstd(rows, nan);
        emu_launch(row_grid, row_block, [&] { it->second(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f); });
        store("y", y), store("mean", mean), store("rstd", rstd);
    } else if (auto it = ln_bwd_bf.find(k); it != ln_bwd_bf.end()) {
        auto x = load<bf>("x", n), dy = load<bf>("dy", n);
        auto g = load("gamma", C), mean = load("mean", rows), rstd = load("rstd", rows);
        std::vector<bf> dx(n, BF16_NAN);
        std::vector<float> dg(C, nan), db(C, nan), partial((size_t)blocks * 2 * C, nan), block_sums(2 * (size_t)C, nan);
        emu_dynamic_smem = block_sums.data();
        emu_launch({(unsigned)blocks}, {256}, [&] { it->second(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), partial.data(), rows, C); });
        emu_launch({(unsigned)std::max((2 * C + 31) / 32, 1)}, {32, 8}, [&] { ln::layernorm_bwd_v2_finish_f32(partial.data(), dg.data(), db.data(), blocks, C); });
        store("dx", dx), store("dgamma", dg), store("dbeta", db);
    } else if (auto it = ln_fwd_mix.find(k); it != ln_fwd_mix.end()) {
        auto x = load("x", n), g = load("gamma", C), b = load("beta", C);
        std::vector<bf> y(n, BF16_NAN);
        std::vector<float> mean(rows, nan), rstd(rows, nan);
        emu_launch(row_grid, row_block, [&] { it->second(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f); });
        store("y", y), store("mean", mean), store("rstd", rstd);
    } else if (auto it = ln_bwd_mix.find(k); it != ln_bwd_mix.end()) {
        auto x = load("x", n), g = load("gamma", C), mean = load("mean", rows), rstd = load("rstd", rows);
        auto dy = load<bf>("dy", n);
        std::vector<float> dx(n, nan), dg(C, nan), db(C, nan), partial((size_t)blocks * 2 * C, nan), block_sums(2 * (size_t)C, nan);
        emu_dynamic_smem = block_sums.data();
        emu_launch({(unsigned)blocks}, {256}, [&] { it->second(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), partial.data(), rows, C); });
        emu_launch({(unsigned)std::max((2 * C + 31) / 32, 1)}, {32, 8}, [&] { ln::layernorm_bwd_v2_finish_f32(partial.data(), dg.data(), db.data(), blocks, C); });
        store("dx", dx), store("dgamma", dg), store("dbeta", db);
    } else {
        fprintf(stderr, "rows_emu: unknown kernel %s\n", k.c_str());
        return 2;
    }
    return 0;
}
