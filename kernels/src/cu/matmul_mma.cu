// v4: bf16 tensor cores through inline PTX (sm_80+). Row-major C[M,N] = A[M,K] B[K,N]
// (+ bias[N], f32), bf16 in (raw bits), f32 accumulate, f32 or bf16 out. No headers.
//
// Design:
//   block tile 128 x 256 x 32, 256 threads = 8 warps laid out 2 (M) x 4 (N), each warp owns a
//   64 x 64 tile of C = 4 x 8 mma.sync.m16n8k16 accumulators (128 f32 registers per thread);
//   a 4-stage cp.async pipeline in dynamic shared memory (one barrier per k-tile: the stage
//   refilled at iteration kt is the one consumed at kt-1);
//   A fragments by ldmatrix.x4, B fragments by ldmatrix.x4.trans (B is row-major [K, N]);
//   padded pitches (A: 32+8, B: 256+8 elements) make ldmatrix and the 16-byte cp.async stores
//   bank-conflict free (rows land 5 resp. 1 16-byte units apart modulo 8);
//   grouped rasterisation (GROUP_M tile rows walk the N tiles together) for L2 reuse;
//   epilogue straight from the accumulators: + bias, float2 / bf16x2 stores when N is even
//   (matmul_epilogue.cuh: f32, bf16, or bf16 GELU with its pre-activation);
//   split-K over gridDim.z, with the reduction kernels below (matmul_epilogue.cuh).
// Fast path: K % 8 == 0, N % 8 == 0 and 16-byte aligned A and B (whole 16-byte chunks are then
// in or out of range). Otherwise the tiles are filled by bounds-checked scalar loads (same
// pipeline, slower). Out-of-range elements are zero, so any M, N, K is correct.

typedef unsigned short bf16_t;

#define V4_BM 128
#define V4_BN 256
#define V4_BK 32
#define V4_STAGES 4
#define V4_THREADS 256
#define V4_A_LD (V4_BK + 8)   // 80 bytes
#define V4_B_LD (V4_BN + 8)   // 528 bytes
#define V4_A_STAGE (V4_BM * V4_A_LD)  // elements
#define V4_B_STAGE (V4_BK * V4_B_LD)
#define V4_GROUP_M 8
// Dynamic shared memory in bytes (the launcher in matmul_tc.rs must agree): 108544.
#define V4_SMEM_BYTES (V4_STAGES * (V4_A_STAGE + V4_B_STAGE) * 2)

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
__device__ __forceinline__ unsigned v4_smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void v4_cp_async16(unsigned smem, const void* gmem, int src_bytes) {
    // src_bytes < 16 zero-fills the rest (0: nothing is read).
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void v4_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void v4_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void v4_ldsm_x4(unsigned r[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void v4_ldsm_x4_trans(unsigned r[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

// D(16x8 f32) += A(16x16 bf16, row) * B(16x8 bf16, col). Fragments (g = lane>>2, t = lane&3):
//   a0: (row g, k 2t..2t+1) a1: (row g+8, k 2t..) a2: (row g, k 2t+8..) a3: (row g+8, k 2t+8..)
//   b0: (k 2t..2t+1, col g) b1: (k 2t+8..2t+9, col g)
//   c0,c1: (row g, cols 2t, 2t+1)  c2,c3: (row g+8, cols 2t, 2t+1)
__device__ __forceinline__ void v4_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// --- PTX helpers (end)


// Fills one pipeline stage with the k-tile starting at k0.
// A: 128 rows x 4 chunks (512 chunks), B: 32 rows x 32 chunks (1024 chunks); 6 per thread.
__device__ __forceinline__ void v4_load_stage(bf16_t* sa, bf16_t* sb, const bf16_t* __restrict__ A,
                                              const bf16_t* __restrict__ B, int M, int N, int K, int bm, int bn,
                                              int k0, bool vec) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int it = 0; it < (V4_BM * V4_BK / 8) / V4_THREADS; ++it) {
        const int chunk = tid + it * V4_THREADS;
        const int r = chunk / (V4_BK / 8), c = (chunk % (V4_BK / 8)) * 8;
        const int gr = bm + r, gc = k0 + c;
        bf16_t* dst = sa + r * V4_A_LD + c;
        if (vec) {
            const bool ok = gr < M && gc < K;
            v4_cp_async16(v4_smem_addr(dst), ok ? (const void*)(A + (long long)gr * K + gc) : (const void*)A, ok ? 16 : 0);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e] = (gr < M && gc + e < K) ? A[(long long)gr * K + gc + e] : (bf16_t)0;
        }
    }
#pragma unroll
    for (int it = 0; it < (V4_BK * V4_BN / 8) / V4_THREADS; ++it) {
        const int chunk = tid + it * V4_THREADS;
        const int r = chunk / (V4_BN / 8), c = (chunk % (V4_BN / 8)) * 8;
        const int gr = k0 + r, gc = bn + c;
        bf16_t* dst = sb + r * V4_B_LD + c;
        if (vec) {
            const bool ok = gr < K && gc < N;
            v4_cp_async16(v4_smem_addr(dst), ok ? (const void*)(B + (long long)gr * N + gc) : (const void*)B, ok ? 16 : 0);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e] = (gr < K && gc + e < N) ? B[(long long)gr * N + gc + e] : (bf16_t)0;
        }
    }
}

template <int EPI>
__device__ __forceinline__ void matmul_v4(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                                          void* __restrict__ Cv, bf16_t* __restrict__ aux, int M, int N, int K) {
    extern __shared__ __align__(128) unsigned char v4_smem[];
    bf16_t* sA = reinterpret_cast<bf16_t*>(v4_smem);
    bf16_t* sB = sA + V4_STAGES * V4_A_STAGE;

    // Grouped rasterisation over a 1-D grid.
    const int tiles_m = (M + V4_BM - 1) / V4_BM, tiles_n = (N + V4_BN - 1) / V4_BN;
    const int pid = blockIdx.x;
    const int per_group = V4_GROUP_M * tiles_n;
    const int first_m = (pid / per_group) * V4_GROUP_M;
    const int gsize = min(tiles_m - first_m, V4_GROUP_M);
    const int tile_m = first_m + (pid % per_group) % gsize;
    const int tile_n = (pid % per_group) / gsize;
    const int bm = tile_m * V4_BM, bn = tile_n * V4_BN;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp >> 2) * 64;  // warp's row offset in the block tile
    const int wn = (warp & 3) * 64;   // warp's column offset
    const bool vec = ((K & 7) == 0) && ((N & 7) == 0) && ((((unsigned long long)A) & 15) == 0) &&
                     ((((unsigned long long)B) & 15) == 0);

    float acc[4][8][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

    int kt0, ktiles;  // this block's k-tiles (all of them unless K is split)
    mm_split_range((K + V4_BK - 1) / V4_BK, kt0, ktiles);
    Cv = mm_split_out(Cv, M, N);
#pragma unroll
    for (int s = 0; s < V4_STAGES - 1; ++s) {
        if (s < ktiles) v4_load_stage(sA + s * V4_A_STAGE, sB + s * V4_B_STAGE, A, B, M, N, K, bm, bn, (kt0 + s) * V4_BK, vec);
        v4_cp_async_commit();  // always commit (possibly empty) so group counting stays uniform
    }

    // ldmatrix row addresses (lane L feeds row L%8 of matrix L/8).
    // A (non-trans, 16x16 per x4): matrices (rows 0-7,k 0-7) (rows 8-15,k 0-7) (rows 0-7,k 8-15) (rows 8-15,k 8-15)
    const int a_row = wm + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int a_col = (lane >> 4) * 8;
    // B (trans, 16k x 16n per x4): matrices (k 0-7,n 0-7) (k 8-15,n 0-7) (k 0-7,n 8-15) (k 8-15,n 8-15)
    const int b_row = (lane & 7) + ((lane >> 3) & 1) * 8;
    const int b_col = wn + (lane >> 4) * 8;
    const unsigned sA0 = v4_smem_addr(sA), sB0 = v4_smem_addr(sB);

    for (int kt = 0; kt < ktiles; ++kt) {
        v4_cp_async_wait<V4_STAGES - 2>();  // this thread's copies for tile kt have landed
        __syncthreads();                      // everyone's have; everyone is done with tile kt-1
        {
            const int nt = kt + V4_STAGES - 1;
            const int s = nt % V4_STAGES;  // == (kt-1) % STAGES: consumed last iteration
            if (nt < ktiles) v4_load_stage(sA + s * V4_A_STAGE, sB + s * V4_B_STAGE, A, B, M, N, K, bm, bn, (kt0 + nt) * V4_BK, vec);
            v4_cp_async_commit();
        }
        const int cur = kt % V4_STAGES;
        const unsigned as = sA0 + (unsigned)(cur * V4_A_STAGE * 2);
        const unsigned bs = sB0 + (unsigned)(cur * V4_B_STAGE * 2);
#pragma unroll
        for (int kk = 0; kk < V4_BK; kk += 16) {
            unsigned af[4][4], bfr[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
                v4_ldsm_x4(af[i], as + (unsigned)(((a_row + i * 16) * V4_A_LD + kk + a_col) * 2));
#pragma unroll
            for (int j = 0; j < 4; ++j)
                v4_ldsm_x4_trans(bfr[j], bs + (unsigned)(((kk + b_row) * V4_B_LD + b_col + j * 16) * 2));
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    v4_mma(acc[i][2 * j], af[i], bfr[j][0], bfr[j][1]);
                    v4_mma(acc[i][2 * j + 1], af[i], bfr[j][2], bfr[j][3]);
                }
        }
    }
    v4_cp_async_wait<0>();  // nothing may be in flight into shared memory at exit (only empty groups remain)

    // Epilogue straight from registers.
    const int g = lane >> 2, t = lane & 3;
    const bool pair_ok = mm_pairs_aligned<EPI>(N, Cv, aux);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int gc = bn + wn + j * 8 + 2 * t;
        if (gc >= N) continue;
        const bool two = gc + 1 < N;
        const float b0 = bias ? bias[gc] : 0.0f;
        const float b1 = (bias && two) ? bias[gc + 1] : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int gr = bm + wm + i * 16 + g + h * 8;
                if (gr >= M) continue;
                mm_store_pair<EPI>(Cv, aux, (long long)gr * N + gc, acc[i][j][2 * h] + b0, acc[i][j][2 * h + 1] + b1, two, two && pair_ok);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(V4_THREADS, 1)
matmul_v4_bf16_f32out(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                      float* __restrict__ C, int M, int N, int K) {
    matmul_v4<EPI_F32>(A, B, bias, C, nullptr, M, N, K);
}

extern "C" __global__ void __launch_bounds__(V4_THREADS, 1)
matmul_v4_bf16_bf16out(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                       bf16_t* __restrict__ C, int M, int N, int K) {
    matmul_v4<EPI_BF16>(A, B, bias, C, nullptr, M, N, K);
}

// C = gelu(A B + bias) and pre = A B + bias, both bf16 (see matmul_epilogue.cuh).
extern "C" __global__ void __launch_bounds__(V4_THREADS, 1)
matmul_v4_bf16_gelu(const bf16_t* __restrict__ A, const bf16_t* __restrict__ B, const float* __restrict__ bias,
                    bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N, int K) {
    matmul_v4<EPI_BF16_GELU>(A, B, bias, C, pre, M, N, K);
}

// Split-K's second pass, for v4, v5 and v6 alike (see matmul_epilogue.cuh): C (and pre) =
// epilogue(the sum of the splits' f32 partials `part` [splits, M, N] + bias).
extern "C" __global__ void __launch_bounds__(256) matmul_splitk_reduce_f32out(const float* __restrict__ part, int splits, const float* __restrict__ bias,
                                                                              float* __restrict__ C, int M, int N) {
    mm_splitk_reduce<EPI_F32>(part, splits, bias, C, nullptr, M, N);
}

extern "C" __global__ void __launch_bounds__(256) matmul_splitk_reduce_bf16out(const float* __restrict__ part, int splits, const float* __restrict__ bias,
                                                                               bf16_t* __restrict__ C, int M, int N) {
    mm_splitk_reduce<EPI_BF16>(part, splits, bias, C, nullptr, M, N);
}

extern "C" __global__ void __launch_bounds__(256) matmul_splitk_reduce_gelu(const float* __restrict__ part, int splits, const float* __restrict__ bias,
                                                                            bf16_t* __restrict__ C, bf16_t* __restrict__ pre, int M, int N) {
    mm_splitk_reduce<EPI_BF16_GELU>(part, splits, bias, C, pre, M, N);
}
