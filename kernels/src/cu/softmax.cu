// Row softmax over the last dim, f32, one warp per row, in two versions (the bench
// compares them). v1: online max/sum (one read pass for the statistics, one for the
// output), any width. v2 (below): the row held in registers. Rows that are entirely
// -inf produce zeros (torch produces NaN there; attention masks never do this).

#define FULL_MASK 0xffffffffu
// NVRTC has no math.h INFINITY without headers.
#define NEG_INF (-__int_as_float(0x7f800000))

extern "C" __global__ void softmax_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                           int rows, int cols) {
    const int warps_per_block = blockDim.x >> 5;
    const int row = blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warp exits together: row is warp-uniform
    const float* xr = x + (long long)row * cols;
    float* yr = y + (long long)row * cols;

    float m = NEG_INF, s = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float v = xr[c];
        if (v > m) { s = (m == NEG_INF ? 0.0f : s * expf(m - v)) + 1.0f; m = v; }
        else if (v != NEG_INF) { s += expf(v - m); }
    }
    // Merge (m, s) pairs across the warp; guard -inf - -inf = NaN.
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, off);
        float s2 = __shfl_xor_sync(FULL_MASK, s, off);
        float mn = fmaxf(m, m2);
        if (mn == NEG_INF) { s = 0.0f; }
        else { s = s * expf(m - mn) + s2 * expf(m2 - mn); }
        m = mn;
    }
    // 0 only for an all -inf row; a NaN anywhere (s = NaN) spreads over the row, as on the CPU.
    const float inv = (m == NEG_INF) ? 0.0f : 1.0f / s;
    for (int c = lane; c < cols; c += 32) {
        float v = xr[c];
        yr[c] = (m == NEG_INF) ? 0.0f : expf(v - m) * inv;
    }
}

// v2: the row lives in registers, N elements per lane (column lane + 32 j), so it is read
// from memory once and every load of a lane is issued before the first reduction needs it
// (v1's online loop waits on each load in turn). Rows up to 32 N wide; wider rows use v1.
// Same -inf convention as v1. Builds for f32 and bf16 rows (_bf16: bf16 in and out).
// Stored types: ld/st and bf16_t come from bf16_storage.cuh, which the registry prepends.

__device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

template <int N, typename T>
__device__ __forceinline__ void softmax_fwd_v2(const T* __restrict__ x, T* __restrict__ y, int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const T* xr = x + (long long)row * cols;
    T* yr = y + (long long)row * cols;

    float v[N];
    float m = NEG_INF;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const int c = lane + 32 * j;
        v[j] = c < cols ? ld(xr, c) : NEG_INF;
        m = fmaxf(m, v[j]);
    }
    m = warp_max(m);
    // An all -inf row: exp(-inf - 0) = 0 everywhere, s = 0, and the row comes out zeros.
    const float shift = (m == NEG_INF) ? 0.0f : m;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        v[j] = expf(v[j] - shift);
        s += v[j];
    }
    s = warp_sum(s);
    const float inv = (m == NEG_INF) ? 0.0f : 1.0f / s;  // as v1
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const int c = lane + 32 * j;
        if (c < cols) st(yr, c, v[j] * inv);
    }
}

extern "C" __global__ void __launch_bounds__(128) softmax_fwd_v2_f32_w1024(const float* __restrict__ x, float* __restrict__ y,
                                                                          int rows, int cols) {
    softmax_fwd_v2<32, float>(x, y, rows, cols);
}

extern "C" __global__ void __launch_bounds__(128) softmax_fwd_v2_f32_w2048(const float* __restrict__ x, float* __restrict__ y,
                                                                          int rows, int cols) {
    softmax_fwd_v2<64, float>(x, y, rows, cols);
}

extern "C" __global__ void __launch_bounds__(128) softmax_fwd_v2_bf16_w1024(const bf16_t* __restrict__ x, bf16_t* __restrict__ y,
                                                                           int rows, int cols) {
    softmax_fwd_v2<32, bf16_t>(x, y, rows, cols);
}

extern "C" __global__ void __launch_bounds__(128) softmax_fwd_v2_bf16_w2048(const bf16_t* __restrict__ x, bf16_t* __restrict__ y,
                                                                           int rows, int cols) {
    softmax_fwd_v2<64, bf16_t>(x, y, rows, cols);
}
