// Row-major C[M,N] = A[M,K] B[K,N] (+ bias[N] if bias != nullptr), f32.
// Every version is kept as a rung of the ladder; all are bounds-checked for any M, N, K.
// v2 also reads transposed operands in place (the batched entries): A stored as [K, M] (`_tn`)
// or B stored as [N, K] (`_nt`), the layouts of a backward pass (dX = dY W^T, dW = X^T dY).

// v1: shared-memory tiling. Block (32, 32), one output per thread.
#define V1_T 32
extern "C" __global__ void __launch_bounds__(1024)
matmul_v1_f32(const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,
              float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[V1_T][V1_T];
    __shared__ float Bs[V1_T][V1_T + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * V1_T + ty;
    const int col = blockIdx.x * V1_T + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += V1_T) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[(long long)row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(long long)(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < V1_T; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[(long long)row * N + col] = acc + (bias ? bias[col] : 0.0f);
}

// v2: register blocking. 128x128 block tile, BK = 8, 256 threads, 8x8 outputs per
// thread. A is stored transposed in shared memory so both operands are read as
// float4. Global loads are float4 when the row length is a multiple of 4 and the
// base is 16-byte aligned, else scalar; out-of-range elements load as 0.
// A_T / B_T: the operand is stored transposed; its tile is then loaded the way the other
// operand's is (4 consecutive elements along its contiguous dim), so loads stay coalesced.
#define V2_BM 128
#define V2_BN 128
#define V2_BK 8
#define V2_TM 8
#define V2_TN 8
// 4 consecutive floats from src (float4 when `vec`), those at index >= `limit` as 0.
__device__ __forceinline__ float4 load4(const float* __restrict__ src, bool vec, int at, int limit) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (vec && at + 3 < limit) return *reinterpret_cast<const float4*>(src);
    if (at + 0 < limit) v.x = src[0];
    if (at + 1 < limit) v.y = src[1];
    if (at + 2 < limit) v.z = src[2];
    if (at + 3 < limit) v.w = src[3];
    return v;
}

// GELU: C = gelu(A B + bias), and `pre` = A B + bias (the pre-activation a backward reads).
template <bool A_T, bool B_T, bool GELU = false>
__device__ __forceinline__ void matmul_v2_tile(const float* __restrict__ A, const float* __restrict__ B,
                                               const float* __restrict__ bias, float* __restrict__ C,
                                               int M, int N, int K, float* __restrict__ pre = nullptr) {
    __shared__ __align__(16) float As[V2_BK][V2_BM];  // transposed: As[k][m]
    __shared__ __align__(16) float Bs[V2_BK][V2_BN];
    const int tid = threadIdx.x;
    const int tr = tid / 16, tc = tid % 16;  // 16x16 threads, each 8x8 outputs
    const int bm = blockIdx.y * V2_BM, bn = blockIdx.x * V2_BN;
    const bool vecA = (((A_T ? M : K) & 3) == 0) && ((((unsigned long long)A) & 15) == 0);
    const bool vecB = (((B_T ? K : N) & 3) == 0) && ((((unsigned long long)B) & 15) == 0);
    const bool vecC = ((N & 3) == 0) && ((((unsigned long long)C) & 15) == 0) && (!GELU || (((unsigned long long)pre) & 15) == 0);

    // Each thread loads one 4-wide piece of each tile per k-step: along k for a 128 x 8 piece
    // (A, or B stored transposed), along m or n for an 8 x 128 one (B, or A stored transposed).
    const int a_row = tid / 2, a_col = (tid % 2) * 4;   // 128 rows x 8 cols
    const int b_row = tid / 32, b_col = (tid % 32) * 4; // 8 rows x 128 cols

    float acc[V2_TM][V2_TN];
#pragma unroll
    for (int i = 0; i < V2_TM; ++i)
#pragma unroll
        for (int j = 0; j < V2_TN; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += V2_BK) {
        if (!A_T) {  // A [M, K]: rows m, 4 along k, stored transposed
            const int gr = bm + a_row, gc = k0 + a_col;
            const float4 va = gr < M ? load4(A + (long long)gr * K + gc, vecA, gc, K) : make_float4(0.f, 0.f, 0.f, 0.f);
            As[a_col + 0][a_row] = va.x;
            As[a_col + 1][a_row] = va.y;
            As[a_col + 2][a_row] = va.z;
            As[a_col + 3][a_row] = va.w;
        } else {  // A stored [K, M]: rows k, 4 along m, stored as they are
            const int gr = k0 + b_row, gc = bm + b_col;
            const float4 va = gr < K ? load4(A + (long long)gr * M + gc, vecA, gc, M) : make_float4(0.f, 0.f, 0.f, 0.f);
            *reinterpret_cast<float4*>(&As[b_row][b_col]) = va;
        }
        if (!B_T) {  // B [K, N]: rows k, 4 along n
            const int gr = k0 + b_row, gc = bn + b_col;
            const float4 vb = gr < K ? load4(B + (long long)gr * N + gc, vecB, gc, N) : make_float4(0.f, 0.f, 0.f, 0.f);
            *reinterpret_cast<float4*>(&Bs[b_row][b_col]) = vb;
        } else {  // B stored [N, K]: rows n, 4 along k, stored transposed
            const int gr = bn + a_row, gc = k0 + a_col;
            const float4 vb = gr < N ? load4(B + (long long)gr * K + gc, vecB, gc, K) : make_float4(0.f, 0.f, 0.f, 0.f);
            Bs[a_col + 0][a_row] = vb.x;
            Bs[a_col + 1][a_row] = vb.y;
            Bs[a_col + 2][a_row] = vb.z;
            Bs[a_col + 3][a_row] = vb.w;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < V2_BK; ++k) {
            float a[V2_TM], b[V2_TN];
            const float4 a0 = *reinterpret_cast<const float4*>(&As[k][tr * V2_TM]);
            const float4 a1 = *reinterpret_cast<const float4*>(&As[k][tr * V2_TM + 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tc * V2_TN]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][tc * V2_TN + 4]);
            a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w;
            a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
            b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w;
            b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
            for (int i = 0; i < V2_TM; ++i)
#pragma unroll
                for (int j = 0; j < V2_TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < V2_TM; ++i) {
        const int gr = bm + tr * V2_TM + i;
        if (gr >= M) continue;
        float* crow = C + (long long)gr * N;
#pragma unroll
        for (int j4 = 0; j4 < V2_TN; j4 += 4) {
            const int gc = bn + tc * V2_TN + j4;
            float4 o = make_float4(acc[i][j4], acc[i][j4 + 1], acc[i][j4 + 2], acc[i][j4 + 3]);
            if (vecC && gc + 3 < N) {
                if (bias) { o.x += bias[gc]; o.y += bias[gc + 1]; o.z += bias[gc + 2]; o.w += bias[gc + 3]; }
                if (GELU) {
                    *reinterpret_cast<float4*>(pre + (long long)gr * N + gc) = o;
                    o = make_float4(mm_gelu(o.x), mm_gelu(o.y), mm_gelu(o.z), mm_gelu(o.w));
                }
                *reinterpret_cast<float4*>(crow + gc) = o;
            } else {
                const float ov[4] = {o.x, o.y, o.z, o.w};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (gc + j >= N) continue;
                    const float v = ov[j] + (bias ? bias[gc + j] : 0.0f);
                    if (GELU) pre[(long long)gr * N + gc + j] = v;
                    crow[gc + j] = GELU ? mm_gelu(v) : v;
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
matmul_v2_f32(const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,
              float* __restrict__ C, int M, int N, int K) {
    matmul_v2_tile<false, false>(A, B, bias, C, M, N, K);
}

// C = gelu(A B + bias) and pre = A B + bias (an MLP's up-projection; GELU of matmul_epilogue.cuh).
extern "C" __global__ void __launch_bounds__(256)
matmul_v2_f32_gelu(const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,
                   float* __restrict__ C, float* __restrict__ pre, int M, int N, int K) {
    matmul_v2_tile<false, false, true>(A, B, bias, C, M, N, K, pre);
}

// v2 over a batch in one launch (attention's Q·Kᵀ and P·V, per batch and head): blockIdx.z picks
// the matrix, each operand at z times its batch stride (0 for a B shared by all). `_nt`: B
// stored transposed ([N, K] per matrix); `_tn`: A stored transposed ([K, M]).
#define MATMUL_V2_BATCHED_PARAMS                                                                             \
    const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,               \
        float* __restrict__ C, int M, int N, int K, long long sA, long long sB, long long sC
extern "C" __global__ void __launch_bounds__(256) matmul_v2_f32_batched(MATMUL_V2_BATCHED_PARAMS) {
    const long long z = blockIdx.z;
    matmul_v2_tile<false, false>(A + z * sA, B + z * sB, bias, C + z * sC, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) matmul_v2_f32_batched_nt(MATMUL_V2_BATCHED_PARAMS) {
    const long long z = blockIdx.z;
    matmul_v2_tile<false, true>(A + z * sA, B + z * sB, bias, C + z * sC, M, N, K);
}
extern "C" __global__ void __launch_bounds__(256) matmul_v2_f32_batched_tn(MATMUL_V2_BATCHED_PARAMS) {
    const long long z = blockIdx.z;
    matmul_v2_tile<true, false>(A + z * sA, B + z * sB, bias, C + z * sC, M, N, K);
}
