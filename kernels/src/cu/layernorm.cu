// LayerNorm over the last dim (C), f32. Forward and dx: one warp per row.
// dgamma/dbeta: column sums over rows, a 32x8 block per 32 columns.

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

// y = (x - mean) * rstd * gamma + beta; saves mean and rstd per row for backward.
// Two passes for the statistics (mean, then centred variance) for accuracy.
extern "C" __global__ void layernorm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                                             const float* __restrict__ beta, float* __restrict__ y,
                                             float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                             int rows, int C, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const float* xr = x + (long long)row * C;
    float* yr = y + (long long)row * C;

    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    const float mean = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = xr[c] - mean; v += d * d; }
    const float rstd = rsqrtf(warp_sum(v) / (float)C + eps);
    for (int c = lane; c < C; c += 32) yr[c] = (xr[c] - mean) * rstd * gamma[c] + beta[c];
    if (lane == 0) { mean_out[row] = mean; rstd_out[row] = rstd; }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma. Overwrites dx.
extern "C" __global__ void layernorm_bwd_dx_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                                const float* __restrict__ dy, float* __restrict__ dx,
                                                int rows, int C) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const long long base = (long long)row * C;
    const float mu = mean[row], rs = rstd[row];

    float s1 = 0.0f, s2 = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float g = dy[base + c] * gamma[c];
        float xhat = (x[base + c] - mu) * rs;
        s1 += g;
        s2 += g * xhat;
    }
    s1 = warp_sum(s1) / (float)C;
    s2 = warp_sum(s2) / (float)C;
    for (int c = lane; c < C; c += 32) {
        float g = dy[base + c] * gamma[c];
        float xhat = (x[base + c] - mu) * rs;
        dx[base + c] = rs * (g - s1 - xhat * s2);
    }
}

// dgamma[c] = sum_r dy*xhat, dbeta[c] = sum_r dy. Block (32, 8): x = column, y strides rows.
// Overwrites dgamma/dbeta. Deterministic (fixed reduction order, no atomics).
extern "C" __global__ void layernorm_bwd_dparams_f32(const float* __restrict__ x, const float* __restrict__ mean,
                                                     const float* __restrict__ rstd, const float* __restrict__ dy,
                                                     float* __restrict__ dgamma, float* __restrict__ dbeta,
                                                     int rows, int C) {
    __shared__ float sg[8][33];
    __shared__ float sb[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float ag = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int r = threadIdx.y; r < rows; r += 8) {
            const long long i = (long long)r * C + c;
            float d = dy[i];
            ag += d * (x[i] - mean[r]) * rstd[r];
            ab += d;
        }
    }
    sg[threadIdx.y][threadIdx.x] = ag;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tg = 0.0f, tb = 0.0f;
        for (int k = 0; k < 8; ++k) { tg += sg[k][threadIdx.x]; tb += sb[k][threadIdx.x]; }
        dgamma[c] = tg;
        dbeta[c] = tb;
    }
}
