// Row softmax over the last dim, f32: one warp per row, online max/sum (one read
// pass for the statistics, one for the output). Rows that are entirely -inf
// produce zeros (torch produces NaN there; attention masks never do this).

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
    const float inv = (s > 0.0f) ? 1.0f / s : 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float v = xr[c];
        yr[c] = (m == NEG_INF) ? 0.0f : expf(v - m) * inv;
    }
}
