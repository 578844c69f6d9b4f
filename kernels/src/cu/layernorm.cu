// LayerNorm over the last dim (C), f32, in two versions (the bench compares them).
// v1, any C: forward and dx one warp per row; dgamma/dbeta column sums over rows, a 32x8
// block per 32 columns. v2 (below), C <= 2048: rows in registers, backward in one pass.

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

// ---- v2: rows in registers; backward fused into one pass ------------------------------
// A lane owns the columns lane + 32 j (j < N), so rows up to 32 N wide; wider rows use v1.
// Builds for f32 and bf16 activations (_bf16: x, y, dy, dx bf16; gamma, beta, mean, rstd and
// the parameter gradients f32, the master weights' precision).
// Stored types: ld/st and bf16_t come from bf16_storage.cuh, which the registry prepends.


// v1's forward reads each row three times, each loop waiting on its loads; v2 reads it once
// into registers (all loads in flight together). Same arithmetic and order as v1. x is TX and
// y is TY: f32/f32, bf16/bf16, or f32/bf16 (autocast: the f32 residual stream in, the bf16
// activation that feeds the next matmul out).
template <int N, typename TX, typename TY>
__device__ __forceinline__ void layernorm_fwd_v2(const TX* __restrict__ x, const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, TY* __restrict__ y,
                                                 float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                                 int rows, int C, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const TX* xr = x + (long long)row * C;
    TY* yr = y + (long long)row * C;

    float v[N];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const int c = lane + 32 * j;
        v[j] = c < C ? ld(xr, c) : 0.0f;
        s += v[j];
    }
    const float mean = warp_sum(s) / (float)C;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const float d = v[j] - mean;
        if (lane + 32 * j < C) q += d * d;
    }
    const float rstd = rsqrtf(warp_sum(q) / (float)C + eps);
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const int c = lane + 32 * j;
        if (c < C) st(yr, c, (v[j] - mean) * rstd * gamma[c] + beta[c]);
    }
    if (lane == 0) { mean_out[row] = mean; rstd_out[row] = rstd; }
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_f32_w1024(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<32, float, float>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_f32_w2048(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<64, float, float>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_bf16_w1024(
    const bf16_t* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, bf16_t* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<32, bf16_t, bf16_t>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_bf16_w2048(
    const bf16_t* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, bf16_t* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<64, bf16_t, bf16_t>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_f32_bf16_w1024(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, bf16_t* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<32, float, bf16_t>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

extern "C" __global__ void __launch_bounds__(128) layernorm_fwd_v2_f32_bf16_w2048(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, bf16_t* __restrict__ y,
    float* __restrict__ mean_out, float* __restrict__ rstd_out, int rows, int C, float eps) {
    layernorm_fwd_v2<64, float, bf16_t>(x, gamma, beta, y, mean_out, rstd_out, rows, C, eps);
}

// Backward in one pass over x and dy (v1 reads both twice, and its dgamma/dbeta kernel has only
// C/32 blocks). A block of W warps strides over rows, one warp per row: dx as in v1 (the second
// loop re-reads the row the warp just read, from L1), while each lane keeps dgamma/dbeta sums
// for its own columns in registers. At the end the block adds its warps' sums in warp order in
// shared memory (2C floats, dynamic) and writes them as row blockIdx.x of `partial` [gridDim.x,
// 2C]; layernorm_bwd_v2_finish_f32 sums those rows. Deterministic for a given grid. x and dx
// are TX, dy is TY (the forward's y type).
template <int N, typename TX, typename TY>
__device__ __forceinline__ void layernorm_bwd_v2(const TX* __restrict__ x, const float* __restrict__ gamma,
                                                 const float* __restrict__ mean, const float* __restrict__ rstd,
                                                 const TY* __restrict__ dy, TX* __restrict__ dx,
                                                 float* __restrict__ partial, int rows, int C) {
    extern __shared__ float block_sums[];  // [2C]: dgamma then dbeta
    const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float dg[N], db[N];
#pragma unroll
    for (int j = 0; j < N; ++j) { dg[j] = 0.0f; db[j] = 0.0f; }

    for (int row = blockIdx.x * warps + warp; row < rows; row += gridDim.x * warps) {  // warp-uniform
        const long long base = (long long)row * C;
        const float mu = mean[row], rs = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const int c = lane + 32 * j;
            if (c < C) {
                const float d = ld(dy, base + c), xhat = (ld(x, base + c) - mu) * rs, g = d * gamma[c];
                s1 += g;
                s2 += g * xhat;
                dg[j] += d * xhat;
                db[j] += d;
            }
        }
        s1 = warp_sum(s1) / (float)C;
        s2 = warp_sum(s2) / (float)C;
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const int c = lane + 32 * j;
            if (c < C) {
                const float g = ld(dy, base + c) * gamma[c], xhat = (ld(x, base + c) - mu) * rs;
                st(dx, base + c, rs * (g - s1 - xhat * s2));
            }
        }
    }

    // Every thread reaches these barriers (no early return above).
    for (int w = 0; w < warps; ++w) {
        if (warp == w) {
#pragma unroll
            for (int j = 0; j < N; ++j) {
                const int c = lane + 32 * j;
                if (c < C) {
                    block_sums[c] = (w == 0 ? 0.0f : block_sums[c]) + dg[j];
                    block_sums[C + c] = (w == 0 ? 0.0f : block_sums[C + c]) + db[j];
                }
            }
        }
        __syncthreads();
    }
    float* out = partial + (long long)blockIdx.x * 2 * C;
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) out[i] = block_sums[i];
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_f32_w1024(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<32, float, float>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_f32_w2048(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<64, float, float>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_bf16_w1024(
    const bf16_t* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const bf16_t* __restrict__ dy, bf16_t* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<32, bf16_t, bf16_t>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_bf16_w2048(
    const bf16_t* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const bf16_t* __restrict__ dy, bf16_t* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<64, bf16_t, bf16_t>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_f32_bf16_w1024(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const bf16_t* __restrict__ dy, float* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<32, float, bf16_t>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_f32_bf16_w2048(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ rstd, const bf16_t* __restrict__ dy, float* __restrict__ dx,
    float* __restrict__ partial, int rows, int C) {
    layernorm_bwd_v2<64, float, bf16_t>(x, gamma, mean, rstd, dy, dx, partial, rows, C);
}

// dgamma[c] = sum_b partial[b][c], dbeta[c] = sum_b partial[b][C + c]: column sums of the
// [blocks, 2C] partials. Block (32, 8): x = column, y strides the partial rows; the 8 sums are
// then added in a fixed order (no atomics). Overwrites dgamma/dbeta.
extern "C" __global__ void __launch_bounds__(256) layernorm_bwd_v2_finish_f32(
    const float* __restrict__ partial, float* __restrict__ dgamma, float* __restrict__ dbeta, int blocks, int C) {
    __shared__ float s[8][33];
    const int i = blockIdx.x * 32 + threadIdx.x;  // column of the partials, < 2C
    float a = 0.0f;
    if (i < 2 * C) {
        for (int b = threadIdx.y; b < blocks; b += 8) a += partial[(long long)b * 2 * C + i];
    }
    s[threadIdx.y][threadIdx.x] = a;
    __syncthreads();
    if (threadIdx.y == 0 && i < 2 * C) {
        float t = 0.0f;
        for (int k = 0; k < 8; ++k) t += s[k][threadIdx.x];
        if (i < C) dgamma[i] = t; else dbeta[i - C] = t;
    }
}
