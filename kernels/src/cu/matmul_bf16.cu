// v3: bf16 tensor cores. Row-major C[M,N] = A[M,K] B[K,N] (+ bias[N], f32), bf16 in,
// f32 accumulate, f32 or bf16 out. WMMA 16x16x16 fragments (mma.sync m16n8k16 on
// sm_80+), 128x128x32 block tile, 8 warps each owning 64x32, two shared-memory
// stages filled with cp.async (16-byte chunks) while the other stage is consumed.
// cp.async needs 16-byte aligned rows: when K or N is not a multiple of 8 (or a base
// pointer is misaligned) the tile loads fall back to scalar loads. Out-of-range
// elements are zero-filled, so any M, N, K is correct.
#include <cuda_bf16.h>
#include <mma.h>
using namespace nvcuda;

#define BM 128
#define BN 128
#define BK 32
#define A_LD (BK + 8)   // padded row pitch (elements): 80 bytes, keeps 16 B / 32 B alignment
#define B_LD (BN + 8)   // 272 bytes
#define NTHREADS 256

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    // src_bytes < 16 zero-fills the rest (0 = pure zero fill, nothing read).
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::); }
// --- PTX helpers (end)

// Load the (k0) A and B tiles into one stage. 512 16-byte chunks per operand, 2 per thread.
__device__ __forceinline__ void load_tiles(__nv_bfloat16* As, __nv_bfloat16* Bs,
                                           const __nv_bfloat16* __restrict__ A,
                                           const __nv_bfloat16* __restrict__ B,
                                           int M, int N, int K, int bm, int bn, int k0, bool vec) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int it = 0; it < 2; ++it) {
        const int chunk = tid + it * NTHREADS;
        // A: 128 rows x 4 chunks of 8
        {
            const int r = chunk / (BK / 8), c = (chunk % (BK / 8)) * 8;
            const int gr = bm + r, gc = k0 + c;
            __nv_bfloat16* dst = As + r * A_LD + c;
            if (vec) {
                const bool ok = gr < M && gc < K;  // K % 8 == 0: whole chunk in range
                cp_async16(dst, ok ? (const void*)(A + (long long)gr * K + gc) : (const void*)A, ok ? 16 : 0);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    dst[e] = (gr < M && gc + e < K) ? A[(long long)gr * K + gc + e] : __float2bfloat16(0.0f);
            }
        }
        // B: 32 rows x 16 chunks of 8
        {
            const int r = chunk / (BN / 8), c = (chunk % (BN / 8)) * 8;
            const int gr = k0 + r, gc = bn + c;
            __nv_bfloat16* dst = Bs + r * B_LD + c;
            if (vec) {
                const bool ok = gr < K && gc < N;  // N % 8 == 0: whole chunk in range
                cp_async16(dst, ok ? (const void*)(B + (long long)gr * N + gc) : (const void*)B, ok ? 16 : 0);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e)
                    dst[e] = (gr < K && gc + e < N) ? B[(long long)gr * N + gc + e] : __float2bfloat16(0.0f);
            }
        }
    }
}

template <bool OUT_BF16>
__device__ __forceinline__ void matmul_v3(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                                          const float* __restrict__ bias, void* __restrict__ Cv,
                                          int M, int N, int K) {
    __shared__ __align__(128) __nv_bfloat16 As[2][BM * A_LD];
    __shared__ __align__(128) __nv_bfloat16 Bs[2][BK * B_LD];
    __shared__ __align__(128) float Cs[NTHREADS / 32][16 * 16];  // per-warp epilogue scratch

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warp_m = warp >> 2;  // 0..1 -> 64-row slab
    const int warp_n = warp & 3;   // 0..3 -> 32-col slab
    const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
    const bool vec = ((K & 7) == 0) && ((N & 7) == 0) &&
                     ((((unsigned long long)A) & 15) == 0) && ((((unsigned long long)B) & 15) == 0);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    const int ktiles = (K + BK - 1) / BK;
    load_tiles(As[0], Bs[0], A, B, M, N, K, bm, bn, 0, vec);
    cp_async_commit();
    for (int kt = 0; kt < ktiles; ++kt) {
        const int cur = kt & 1;
        if (kt + 1 < ktiles) {
            // Stage cur^1 was last read in iteration kt-1, which ended with a barrier.
            load_tiles(As[cur ^ 1], Bs[cur ^ 1], A, B, M, N, K, bm, bn, (kt + 1) * BK, vec);
            cp_async_commit();
            cp_async_wait_1();  // the group for stage cur is complete
        } else {
            cp_async_wait_all();
        }
        __syncthreads();  // make every thread's copies (async or scalar) visible

        const __nv_bfloat16* as = As[cur] + (warp_m * 64) * A_LD;
        const __nv_bfloat16* bs = Bs[cur] + warp_n * 32;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> af[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bf[2];
#pragma unroll
            for (int i = 0; i < 4; ++i) wmma::load_matrix_sync(af[i], as + (i * 16) * A_LD + kk, A_LD);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bf[j], bs + kk * B_LD + j * 16, B_LD);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
        }
        __syncthreads();  // stage cur is overwritten by the next iteration's loads
    }

    // Epilogue: each 16x16 fragment goes through the warp's scratch so stores can be
    // bounds-checked per element and the bias added.
    float* cs = Cs[warp];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            wmma::store_matrix_sync(cs, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            const int r0 = bm + warp_m * 64 + i * 16, c0 = bn + warp_n * 32 + j * 16;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int idx = lane + 32 * e;
                const int gr = r0 + idx / 16, gc = c0 + idx % 16;
                if (gr < M && gc < N) {
                    const float v = cs[idx] + (bias ? bias[gc] : 0.0f);
                    if (OUT_BF16) ((__nv_bfloat16*)Cv)[(long long)gr * N + gc] = __float2bfloat16(v);
                    else ((float*)Cv)[(long long)gr * N + gc] = v;
                }
            }
            __syncwarp();  // scratch is rewritten by the next fragment
        }
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
matmul_v3_bf16_f32out(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                      const float* __restrict__ bias, float* __restrict__ C, int M, int N, int K) {
    matmul_v3<false>(A, B, bias, C, M, N, K);
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
matmul_v3_bf16_bf16out(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                       const float* __restrict__ bias, __nv_bfloat16* __restrict__ C, int M, int N, int K) {
    matmul_v3<true>(A, B, bias, C, M, N, K);
}
