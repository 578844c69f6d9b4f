// Hopper matmuls (sm_90a only): v5, wgmma fed by cp.async; v6 (below), the same wgmma fed by
// TMA, warp-specialized and persistent.
//
// v5: Hopper warpgroup MMA. Row-major C[M,N] = A[M,K] B[K,N] (+ bias[N], f32),
// bf16 in (raw bits), f32 accumulate, f32 or bf16 out, or bf16 GELU with its pre-activation
// (matmul_epilogue.cuh, prepended by the registry). No headers.
//
// Design:
//   block tile 128 x 256 x 64 (or 128 x 192: below), 256 threads = 2 warpgroups; warpgroup w
//   owns rows 64w..64w+63 and all 256 columns: one wgmma.mma_async.m64n256k16 per 16 of K (4
//   per k-tile), 128 f32 accumulators per thread; both operands read from shared memory through wgmma matrix
//   descriptors with the 128-byte swizzle:
//     A stage, K-major: 128 rows x 128 bytes (64 bf16 of K); 16-byte chunk c of row r sits at
//       r*128 + ((c ^ (r & 7)) * 16). Descriptor: start = stage + 64w*128 + 32*kk (kk = k16 step
//       inside the tile), LBO = 16 (unused for swizzled K-major), SBO = 1024 (8 rows).
//     B stage, N-major (imm-trans-b = 1): 4 (3) column blocks of 64 n (128 bytes) x 64 k rows;
//       chunk c (n/8 within the block) of k row r in block j at j*8192 + r*128 + ((c ^ (r&7))*16).
//       Descriptor: start = stage + 2048*kk, LBO = 8192 (next 64 n), SBO = 1024 (next 8 k).
//     Every stage starts on a 1024-byte boundary (the swizzle pattern repeats every 1024 bytes
//     and is taken from address bits [7:9], so the descriptors' base offset is 0).
//   4 stages filled by cp.async (16-byte chunks, the swizzle applied to the destination),
//   prefetch distance 2, one wgmma group in flight: at k-tile kt every thread waits for its
//   copies of tile kt, fences them into the async proxy (fence.proxy.async), barrier, issues the
//   copies of tile kt+2 into the stage that tile kt-2 used (its wgmma group was retired by
//   wgmma.wait_group 1 in iteration kt-1, before this barrier), then wgmma.fence, 4 wgmma,
//   commit, wait_group 1.
//   Epilogue straight from the accumulators (same per-8-column layout as mma.sync's C).
// Needs K % 8 == 0, N % 8 == 0 and 16-byte aligned A and B (the launcher sends other shapes to
// v4); M, N, K edges are zero-filled by cp.async, so any such shape is correct.
//
// Tile width BN (v5 and v6): 256, or 192 (entries ending _n192: wgmma m64n192k16, 96
// accumulators per thread, three 64-column blocks of B per stage). An N of 768 (GPT-2's
// attention and MLP output projections, and every input gradient) is 3 tiles of 256 but 4 of
// 192: at 8192 rows, 256 tiles on an H100's 132 SMs (97% of two waves busy) instead of 192 (73%).
// The launcher's `tile_plan` picks the width, and the slices of K, from a model of the time.
//
// Compiled for anything but compute_90a (sm_80, or the plain compute_90 that Gpu::new uses),
// the entries are stubs that trap: wgmma exists only on sm_90a. The launcher loads its own
// compute_90a build.

typedef unsigned short bf16_t;

#define V5_BM 128
#define V5_BK 64
#define V5_STAGES 4
#define V5_PREF 2  // tiles loaded ahead (STAGES - 2: one more stage is held by the wgmma in flight)
#define V5_THREADS 256
#define V5_A_STAGE_BYTES (V5_BM * V5_BK * 2)  // 16384
#define V5_B_STAGE_BYTES(BN) (V5_BK * (BN) * 2)  // 32768 at BN = 256
// Dynamic shared memory (the launcher in matmul_tc.rs must agree): 4 * 49152 + 1024 for
// alignment at BN = 256, 4 * 40960 + 1024 at 192.
#define V5_SMEM_BYTES(BN) (V5_STAGES * (V5_A_STAGE_BYTES + V5_B_STAGE_BYTES(BN)) + 1024)

// v6's tensor maps (CUtensorMap: 128 opaque bytes; sm_90 needs 64-byte alignment, CUDA 13's
// header declares 128), passed by value.
struct __align__(128) v6_tensor_map {
    unsigned long long opaque[16];
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
__device__ __forceinline__ void v5_cp_async16(unsigned smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void v5_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void v5_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void v5_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void v5_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void v5_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void v5_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// --- PTX helpers (end)

// wgmma shared-memory matrix descriptor, 128-byte swizzle, base offset 0.
__device__ __forceinline__ unsigned long long v5_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
// Keeps the compiler from moving accumulator accesses across wgmma issue / wait.
// In groups of 8 (N = 128 or 96: the accumulators of a 256- or 192-wide tile).
template <int N>
__device__ __forceinline__ void v5_fence_acc(float* d) {
    static_assert(N % 8 == 0, "accumulators come in groups of 8");
#pragma unroll
    for (int i = 0; i < N; i += 8)
        asm volatile("" : "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])::"memory");
}
// D (64x256 f32, registers) += A (64x16 bf16, smem, K-major) * B (16x256 bf16, smem, N-major).
// scale-d = 1 (accumulate, as predicate p), imm-scale-a = imm-scale-b = 1, imm-trans-a = 0
// (A K-major), imm-trans-b = 1 (B N-major, i.e. row-major [K, N]).
__device__ __forceinline__ void v5_wgmma_m64n256k16(float d[128], unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "%128, %129, p, 1, 1, 0, 1;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(1));
}
// As above, 64 x 192 (96 accumulators per thread).
__device__ __forceinline__ void v5_wgmma_m64n192k16(float d[96], unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, "
        "%96, %97, p, 1, 1, 0, 1;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "l"(da), "l"(db), "r"(1));
}
// --- PTX helpers (end)

// One k16 step of a warpgroup's 64 x BN accumulators.
template <int BN>
__device__ __forceinline__ void v5_wgmma(float* d, unsigned long long da, unsigned long long db) {
    static_assert(BN == 256 || BN == 192, "wgmma tile widths: 256 or 192");
    if constexpr (BN == 256) v5_wgmma_m64n256k16(d, da, db);
    else v5_wgmma_m64n192k16(d, da, db);
}

// One k-tile (k0) into a stage. A: 128 rows x 8 chunks (4 per thread); B: 64 rows x BN/8 chunks
// (8 per thread at BN = 256, 6 at 192). Chunks out of range are zero-filled (nothing read).
template <int BN>
__device__ __forceinline__ void v5_load_stage(unsigned sa, unsigned sb, const bf16_t* __restrict__ A,
                                              const bf16_t* __restrict__ B, int M, int N, int K, int bm, int bn, int k0) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int it = 0; it < (V5_BM * 8) / V5_THREADS; ++it) {
        const int q = tid + it * V5_THREADS;
        const int r = q >> 3, c = q & 7;
        const int gr = bm + r, gc = k0 + c * 8;
        const bool ok = gr < M && gc < K;
        v5_cp_async16(sa + r * 128 + ((c ^ (r & 7)) << 4), ok ? (const void*)(A + (long long)gr * K + gc) : (const void*)A, ok ? 16 : 0);
    }
#pragma unroll
    for (int it = 0; it < (V5_BK * (BN / 8)) / V5_THREADS; ++it) {
        const int q = tid + it * V5_THREADS;
        // k row, 16-byte chunk along N (BN / 8 per row; at 256 the shifts v5 was measured with)
        const int r = BN == 256 ? q >> 5 : q / (BN / 8), cn = BN == 256 ? q & 31 : q % (BN / 8);
        const int j = cn >> 3, c = cn & 7;   // 64-column block, chunk inside it
        const int gr = k0 + r, gc = bn + cn * 8;
        const bool ok = gr < K && gc < N;
        v5_cp_async16(sb + j * 8192 + r * 128 + ((c ^ (r & 7)) << 4), ok ? (const void*)(B + (long long)gr * N + gc) : (const void*)B, ok ? 16 : 0);
    }
}

// One k-tile of a warpgroup's 64 rows: 4 wgmma (k16 each) from the stage at a0 (its 64 rows of
// A) and b0 (B), committed as one group; returns once at most this group is in flight (the
// previous one has retired, so its stage may be refilled).
template <int BN>
__device__ __forceinline__ void v5_mma_ktile(float* d, unsigned a0, unsigned b0) {
    v5_fence_acc<BN / 2>(d);
    v5_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < V5_BK / 16; ++kk)
        v5_wgmma<BN>(d, v5_desc(a0 + kk * 32, 16, 1024), v5_desc(b0 + kk * 2048, 8192, 1024));
    v5_wgmma_commit();
    v5_fence_acc<BN / 2>(d);
    v5_wgmma_wait<1>();
    v5_fence_acc<BN / 2>(d);
}

// Grouped rasterisation of tile index `pid` (8 tile rows walk the N tiles together, so the
// tiles running at one time share their A rows and B columns in L2): the tile's first row and column.
template <int BN>
__device__ __forceinline__ void v5_tile_origin(int pid, int M, int N, int& bm, int& bn) {
    const int tiles_m = (M + V5_BM - 1) / V5_BM, tiles_n = (N + BN - 1) / BN;
    const int per_group = 8 * tiles_n;
    const int first_m = (pid / per_group) * 8;
    const int gsize = min(tiles_m - first_m, 8);
    bm = (first_m + (pid % per_group) % gsize) * V5_BM;
    bn = ((pid % per_group) / gsize) * BN;
}

// Epilogue of one warpgroup's 64 x BN accumulators (rows rows0.., columns bn..), + bias, straight
// from registers. Layout (per warp w of the warpgroup, g = lane/4, t = lane%4), as mma.sync's C:
// d[4j + 0..1] = (row 16w + g, cols 8j + 2t, +1), d[4j + 2..3] = (row 16w + g + 8, same cols).
template <int EPI, int BN>
__device__ __forceinline__ void v5_store_tile(const float* d, const float* __restrict__ bias, void* __restrict__ Cv,
                                              bf16_t* __restrict__ aux, int M, int N, int rows0, int bn) {
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row0 = rows0 + warp * 16 + g;
    const bool pair_ok = mm_pairs_aligned<EPI>(N, Cv, aux);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
        const int gc = bn + j * 8 + 2 * t;
        if (gc >= N) continue;
        const bool two = gc + 1 < N;
        const float b0v = bias ? bias[gc] : 0.0f;
        const float b1v = (bias && two) ? bias[gc + 1] : 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int gr = row0 + h * 8;
            if (gr >= M) continue;
            mm_store_pair<EPI>(Cv, aux, (long long)gr * N + gc, d[4 * j + 2 * h] + b0v, d[4 * j + 2 * h + 1] + b1v, two, two && pair_ok);
        }
    }
}

template <int EPI, int BN>
__device__ __forceinline__ void matmul_v5(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                                          void* __restrict__ Cv, bf16_t* __restrict__ aux, int M, int N, int K) {
    extern __shared__ __align__(1024) unsigned char v5_smem[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(v5_smem);
    const unsigned base = (raw + 1023u) & ~1023u;
    const unsigned sA = base, sB = base + V5_STAGES * V5_A_STAGE_BYTES;

    int bm, bn;
    v5_tile_origin<BN>(blockIdx.x, M, N, bm, bn);

    const int wg = threadIdx.x >> 7;  // warpgroup: rows 64 wg ..
    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;

    int kt0, ktiles;  // this block's k-tiles (all of them unless K is split)
    mm_split_range((K + V5_BK - 1) / V5_BK, kt0, ktiles);
    Cv = mm_split_out(Cv, M, N);
#pragma unroll
    for (int s = 0; s < V5_PREF; ++s) {
        if (s < ktiles) v5_load_stage<BN>(sA + s * V5_A_STAGE_BYTES, sB + s * V5_B_STAGE_BYTES(BN), A, B, M, N, K, bm, bn, (kt0 + s) * V5_BK);
        v5_cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        v5_cp_async_wait<V5_PREF - 1>();  // this thread's copies of tile kt have landed
        v5_fence_proxy_async();            // ... and are visible to the async proxy (wgmma)
        __syncthreads();                   // everyone's; and tile kt-2's wgmma groups are retired
        {
            const int nt = kt + V5_PREF, s = nt % V5_STAGES;
            if (nt < ktiles) v5_load_stage<BN>(sA + s * V5_A_STAGE_BYTES, sB + s * V5_B_STAGE_BYTES(BN), A, B, M, N, K, bm, bn, (kt0 + nt) * V5_BK);
            v5_cp_async_commit();
        }
        const int cur = kt % V5_STAGES;
        v5_mma_ktile<BN>(d, sA + cur * V5_A_STAGE_BYTES + wg * (64 * 128), sB + cur * V5_B_STAGE_BYTES(BN));
    }
    v5_wgmma_wait<0>();
    v5_fence_acc<BN / 2>(d);
    v5_cp_async_wait<0>();

    v5_store_tile<EPI, BN>(d, bias, Cv, aux, M, N, bm + wg * 64, bn);
}

extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_f32out(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                      float* __restrict__ C, int M, int N, int K) {
    matmul_v5<EPI_F32, 256>(A, B, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_bf16out(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                       bf16_t* __restrict__ C, int M, int N, int K) {
    matmul_v5<EPI_BF16, 256>(A, B, bias, C, nullptr, M, N, K);
}

// C = gelu(A B + bias) and pre = A B + bias, both bf16 (see matmul_epilogue.cuh).
extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_gelu(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                    bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N, int K) {
    matmul_v5<EPI_BF16_GELU, 256>(A, B, bias, C, pre, M, N, K);
}

// The same three with 128 x 192 tiles.
extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_f32out_n192(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                           float* __restrict__ C, int M, int N, int K) {
    matmul_v5<EPI_F32, 192>(A, B, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_bf16out_n192(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                            bf16_t* __restrict__ C, int M, int N, int K) {
    matmul_v5<EPI_BF16, 192>(A, B, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V5_THREADS, 1)
matmul_v5_bf16_gelu_n192(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                         bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N, int K) {
    matmul_v5<EPI_BF16_GELU, 192>(A, B, bias, C, pre, M, N, K);
}

// ---------------------------------------------------------------------------------------------
// v6: v5's wgmma fed by TMA, warp-specialized and persistent (sm_90a only).
//
//   Same tile (128 x BN x 64), the same swizzled shared-memory layouts and wgmma descriptors as
//   v5: the tensor-memory accelerator writes exactly the layout v5's cp.async wrote by hand
//   (CU_TENSOR_MAP_SWIZZLE_128B: 16-byte chunk c of 128-byte row r lands at c ^ (r & 7) inside
//   each 1024-byte, 8-row atom). A is one box of 64 k x 128 rows; B is BN / 64 boxes of 64 n x
//   64 k (its 8192-byte column blocks: four at BN = 256, three at 192). Boxes past the matrix
//   edges are zero-filled by the TMA unit and still count their full bytes, so the transaction
//   count per stage is a constant.
//
//   384 threads = 3 warpgroups. Warpgroup 0 is the producer: it gives registers back
//   (setmaxnreg 40) and one thread issues all TMA copies. Warpgroups 1 and 2 are consumers
//   (setmaxnreg 232): rows 0..63 and 64..127 of the tile, BN / 2 f32 accumulators per thread.
//   4 stages, each with two mbarriers:
//     full[s]  (1 arrival + 49152 transaction bytes, 40960 at BN = 192): the producer arms it with
//              arrive.expect_tx, the TMA copies complete it;
//     empty[s] (8 arrivals: lane 0 of each consumer warp): a consumer warp arrives once the
//              wgmma groups that read stage s have retired (wgmma.wait_group), after which the
//              producer may overwrite it.
//   Phases: pass p over the ring waits for parity p & 1 of full[s]; the producer waits for
//   parity (p & 1) ^ 1 of empty[s], which a fresh barrier reports complete at once (pass 0).
//   Consumers keep one wgmma group in flight: stage s is released after the next stage's group
//   is issued and wait_group 1 has retired s's.
//
//   Persistent: grid = min(tiles, SMs); block b takes tiles b, b + grid, ... in v5's grouped
//   order. The producer runs ahead into the next tile while the consumers store this one, so
//   the epilogue's global stores overlap the next tile's loads. With split-K the grid has S
//   slices in z, each persistent over the tiles for its share of the k-tiles.
//
//   Every mbarrier wait gives up after 10 s (%globaltimer) and traps: a protocol bug shows as
//   a launch error in the self-test instead of a hung GPU.
//
// Needs K % 8 == 0, N % 8 == 0, K > 0 and 16-byte aligned A and B (TMA: global strides are
// multiples of 16 bytes); the launcher sends other shapes to v4. The tensor maps are encoded on
// the host (cuTensorMapEncodeTiled) for each call and passed by value (__grid_constant__).

#define V6_THREADS 384
#define V6_STAGES 4
#define V6_STAGE_BYTES(BN) (V5_A_STAGE_BYTES + V5_B_STAGE_BYTES(BN))  // 49152 at 256: the tx count of full[s]
// Dynamic shared memory (matmul_tc.rs must agree): 4 stages, 1024 for alignment, 8 mbarriers.
#define V6_SMEM_BYTES(BN) (V6_STAGES * V6_STAGE_BYTES(BN) + 1024 + 2 * V6_STAGES * 8)

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
__device__ __forceinline__ void v6_mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void v6_mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void v6_mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ unsigned long long v6_clock_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    return t;
}
// Waits until the phase of parity `parity` has completed; traps after 10 s (a wait here
// normally lasts microseconds: only a protocol bug gets there).
__device__ __forceinline__ void v6_mbar_wait(unsigned bar, unsigned parity) {
    unsigned done = 0, polls = 0;
    unsigned long long deadline = 0;
    while (true) {
        asm volatile(
            "{\n"
            ".reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n"
            "}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
        if (done) return;
        if ((++polls & 1023u) == 0) {
            const unsigned long long now = v6_clock_ns();
            if (deadline == 0) deadline = now + 10000000000ull;
            else if (now > deadline) __trap();
        }
    }
}
// 2-D tile copy global -> shared (coordinates: innermost first), completing on `bar`.
__device__ __forceinline__ void v6_tma_load(unsigned dst, const v6_tensor_map* map, unsigned bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
// The initialized mbarriers made visible to the TMA unit (the async proxy).
__device__ __forceinline__ void v6_fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// Registers handed back by the producer warpgroup, taken by the consumers.
__device__ __forceinline__ void v6_producer_regs() { asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory"); }
__device__ __forceinline__ void v6_consumer_regs() { asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory"); }
__device__ __forceinline__ void v6_prefetch_map(const v6_tensor_map* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((unsigned long long)map) : "memory");
}
// --- PTX helpers (end)

template <int EPI, int BN>
__device__ __forceinline__ void matmul_v6(const v6_tensor_map* a_map, const v6_tensor_map* b_map, const float* __restrict__ bias,
                                          void* __restrict__ Cv, bf16_t* __restrict__ aux, int M, int N, int K) {
    extern __shared__ __align__(1024) unsigned char v6_smem[];
    const unsigned raw = (unsigned)__cvta_generic_to_shared(v6_smem);
    const unsigned base = (raw + 1023u) & ~1023u;
    const unsigned sA = base, sB = base + V6_STAGES * V5_A_STAGE_BYTES;
    const unsigned full = base + V6_STAGES * V6_STAGE_BYTES(BN), empty = full + V6_STAGES * 8;

    const int tiles = ((M + V5_BM - 1) / V5_BM) * ((N + BN - 1) / BN);
    int kt0, ktiles;  // the k-tiles of every tile this block takes (all unless K is split)
    mm_split_range((K + V5_BK - 1) / V5_BK, kt0, ktiles);
    Cv = mm_split_out(Cv, M, N);
    const int wg = threadIdx.x >> 7;

    if (threadIdx.x == 0) {
        for (int s = 0; s < V6_STAGES; ++s) {
            v6_mbar_init(full + 8 * s, 1);
            v6_mbar_init(empty + 8 * s, 8);
        }
        v6_fence_mbar_init();
    }
    __syncthreads();

    if (wg == 0) {
        v6_producer_regs();
        if (threadIdx.x == 0) {
            v6_prefetch_map(a_map);
            v6_prefetch_map(b_map);
            int s = 0;
            unsigned phase = 0;
            for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                int bm, bn;
                v5_tile_origin<BN>(tile, M, N, bm, bn);
                for (int kt = kt0; kt < kt0 + ktiles; ++kt) {
                    v6_mbar_wait(empty + 8 * s, phase ^ 1);
                    const unsigned bar = full + 8 * s;
                    v6_mbar_arrive_expect_tx(bar, V6_STAGE_BYTES(BN));
                    v6_tma_load(sA + s * V5_A_STAGE_BYTES, a_map, bar, kt * V5_BK, bm);
#pragma unroll
                    for (int j = 0; j < BN / 64; ++j) v6_tma_load(sB + s * V5_B_STAGE_BYTES(BN) + j * 8192, b_map, bar, bn + 64 * j, kt * V5_BK);
                    if (++s == V6_STAGES) { s = 0; phase ^= 1; }
                }
            }
        }
        return;
    }

    v6_consumer_regs();
    const int cw = wg - 1;  // consumer warpgroup: rows 64 cw .. of each tile
    const bool signals = (threadIdx.x & 31) == 0;
    int s = 0;
    unsigned phase = 0;
    float d[BN / 2];
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        int bm, bn;
        v5_tile_origin<BN>(tile, M, N, bm, bn);
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;
        int held = -1;  // the stage whose wgmma group may still be in flight
        for (int kt = 0; kt < ktiles; ++kt) {
            v6_mbar_wait(full + 8 * s, phase);
            v5_mma_ktile<BN>(d, sA + s * V5_A_STAGE_BYTES + cw * (64 * 128), sB + s * V5_B_STAGE_BYTES(BN));  // the previous stage's group has retired
            if (held >= 0 && signals) v6_mbar_arrive(empty + 8 * held);
            held = s;
            if (++s == V6_STAGES) { s = 0; phase ^= 1; }
        }
        v5_wgmma_wait<0>();
        v5_fence_acc<BN / 2>(d);
        if (held >= 0 && signals) v6_mbar_arrive(empty + 8 * held);
        v5_store_tile<EPI, BN>(d, bias, Cv, aux, M, N, bm + cw * 64, bn);
    }
}

extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_f32out(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                      const float* __restrict__ bias, float* __restrict__ C, int M, int N, int K) {
    matmul_v6<EPI_F32, 256>(&a_map, &b_map, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_bf16out(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                       const float* __restrict__ bias, bf16_t* __restrict__ C, int M, int N, int K) {
    matmul_v6<EPI_BF16, 256>(&a_map, &b_map, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_gelu(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                    const float* __restrict__ bias, bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N, int K) {
    matmul_v6<EPI_BF16_GELU, 256>(&a_map, &b_map, bias, C, pre, M, N, K);
}

// The same three with 128 x 192 tiles.
extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_f32out_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                           const float* __restrict__ bias, float* __restrict__ C, int M, int N, int K) {
    matmul_v6<EPI_F32, 192>(&a_map, &b_map, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_bf16out_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                            const float* __restrict__ bias, bf16_t* __restrict__ C, int M, int N, int K) {
    matmul_v6<EPI_BF16, 192>(&a_map, &b_map, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V6_THREADS, 1)
matmul_v6_bf16_gelu_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                         const float* __restrict__ bias, bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N, int K) {
    matmul_v6<EPI_BF16_GELU, 192>(&a_map, &b_map, bias, C, pre, M, N, K);
}

#else  // not compute_90a: stubs (wgmma and setmaxnreg need sm_90a; the launcher never calls these)

extern "C" __global__ void matmul_v5_bf16_f32out(const bf16_t* A, const bf16_t* B, const float* bias, float* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v5_bf16_bf16out(const bf16_t* A, const bf16_t* B, const float* bias, bf16_t* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v5_bf16_gelu(const bf16_t* A, const bf16_t* B, const float* bias, bf16_t* C, bf16_t* pre, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_gelu(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                               const float* bias, bf16_t* C, bf16_t* pre, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_f32out(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                                 const float* bias, float* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_bf16out(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                                  const float* bias, bf16_t* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v5_bf16_f32out_n192(const bf16_t* A, const bf16_t* B, const float* bias, float* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v5_bf16_bf16out_n192(const bf16_t* A, const bf16_t* B, const float* bias, bf16_t* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v5_bf16_gelu_n192(const bf16_t* A, const bf16_t* B, const float* bias, bf16_t* C, bf16_t* pre, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_f32out_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                                      const float* bias, float* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_bf16out_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                                       const float* bias, bf16_t* C, int M, int N, int K) {
    __trap();
}

extern "C" __global__ void matmul_v6_bf16_gelu_n192(const __grid_constant__ v6_tensor_map a_map, const __grid_constant__ v6_tensor_map b_map,
                                                    const float* bias, bf16_t* C, bf16_t* pre, int M, int N, int K) {
    __trap();
}

#endif
