// CPU stand-in for <mma.h>'s WMMA API (nvcuda::wmma), as much as matmul v3 (cu/matmul_bf16.cu)
// uses: 16x16x16 fragments, bf16 operands and f32 accumulators. The hardware's distribution of a
// fragment over the lanes is unspecified, so a kernel must not depend on it; here lane l holds
// the 8 elements (row-major) 8l .. 8l + 7, not what the v3 epilogue reads back from its scratch
// per lane, so a missing __syncwarp between store and read shows. Loads and stores are per lane;
// mma_sync is warp-collective: each lane posts its fragments, the warp meets at a barrier, each
// lane computes its own 8 results from every lane's posts (products summed in double, rounded
// once), and the warp meets again. A divergent call deadlocks, as it is undefined on the GPU.
#pragma once
#include <type_traits>

#include "cuda_bf16.h"
#include "emu.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the stand-in has 16x16x16 fragments only");
    static constexpr int num_elements = 8;
    float x[num_elements];  // bf16 operands held widened (exactly)
};

// Element e of lane l's fragment: (row, col) of the 16x16 tile.
inline int emu_frag_row(int l, int e) { return (8 * l + e) / 16; }
inline int emu_frag_col(int l, int e) { return (8 * l + e) % 16; }
inline float emu_widen(float v) { return v; }
inline float emu_widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, typename T, typename Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float v) {
    for (float& x : f.x) x = v;
}

// An operand tile at p, rows (row_major) or columns (col_major) ldm elements apart.
template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
    static_assert(!std::is_same_v<Use, accumulator>, "the stand-in loads operands only");
    constexpr bool row = std::is_same_v<Layout, row_major>;
    for (int e = 0; e < 8; ++e) {
        const int r = emu_frag_row(emu_lane, e), c = emu_frag_col(emu_lane, e);
        f.x[e] = emu_widen(p[row ? r * ldm + c : c * ldm + r]);
    }
}

template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t layout) {
    for (int e = 0; e < 8; ++e) {
        const int r = emu_frag_row(emu_lane, e), c = emu_frag_col(emu_lane, e);
        p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[e];
    }
}

// d = a·b + c (d may be c).
template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
    const void* mine[2] = {&a, &b};
    static_assert(sizeof(mine) <= sizeof(emu_warp->frag[0]));
    std::memcpy(emu_warp->frag[emu_lane], mine, sizeof(mine));
    emu_warp->bar.arrive_and_wait();
    double A[16][16], B[16][16];
    for (int lane = 0; lane < 32; ++lane) {
        const void* posted[2];
        std::memcpy(posted, emu_warp->frag[lane], sizeof(posted));
        const auto* fa = static_cast<const fragment<matrix_a, 16, 16, 16, T, LA>*>(posted[0]);
        const auto* fb = static_cast<const fragment<matrix_b, 16, 16, 16, T, LB>*>(posted[1]);
        for (int e = 0; e < 8; ++e) {
            A[emu_frag_row(lane, e)][emu_frag_col(lane, e)] = fa->x[e];
            B[emu_frag_row(lane, e)][emu_frag_col(lane, e)] = fb->x[e];
        }
    }
    emu_warp->bar.arrive_and_wait();
    for (int e = 0; e < 8; ++e) {
        const int r = emu_frag_row(emu_lane, e), col = emu_frag_col(emu_lane, e);
        double acc = c.x[e];
        for (int k = 0; k < 16; ++k) acc += A[r][k] * B[k][col];
        d.x[e] = (float)acc;
    }
}
}  // namespace wmma
}  // namespace nvcuda
