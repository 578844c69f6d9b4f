// Reductions, f32 in, f32 accumulate. Deterministic: fixed grids and fixed summation
// orders, no atomics (same inputs and launch config -> bit-identical results).
//
// sum_rows: out[c] = sum_r x[r, c] for x [R, C] (the bias gradient). Stage 1: block (32, 8);
//   each thread owns VW consecutive columns (VW = 4 with float4 loads when C % 4 == 0, else 1),
//   a block covers 32 * VW columns of one split of the rows (blockIdx.y); a warp reads
//   512 contiguous bytes of a row per load. Rows of a split are summed per thread, then the
//   8 row-threads in shared memory, into part[split, C] (or straight into out when there is
//   one split). Stage 2 (sum_rows_finish_f32): out[c] = sum over splits, in split order.
// l2norm: the global L2 norm of many buffers in one launch (gradient clipping). Buffers are
//   given as device arrays of pointers (u64) and lengths (i64). Stage 1: a grid-stride pass
//   over each buffer in turn (float4 loads after a scalar prefix to 16-byte alignment),
//   per-thread sums of squares, block tree reduction -> partials[blockIdx.x]. Stage 2
//   (l2norm_finish_f32, one block): out[0] = sqrt(total), out[1] = total sum of squares.

#define FULL_MASK 0xffffffffu

template <int VW>
__device__ __forceinline__ void sum_rows_impl(const float* __restrict__ x, float* __restrict__ dst, int R, int C, int rows_per_split) {
    __shared__ float sh[8][32 * VW + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = (blockIdx.x * 32 + tx) * VW;
    const long long r0 = (long long)blockIdx.y * rows_per_split;
    const long long r1 = min((long long)R, r0 + rows_per_split);
    float acc[VW];
#pragma unroll
    for (int k = 0; k < VW; ++k) acc[k] = 0.0f;
    if (c0 < C) {
#pragma unroll 4
        for (long long r = r0 + ty; r < r1; r += 8) {
            const float* p = x + r * C + c0;
            if constexpr (VW == 4) {
                const float4 v = __ldg(reinterpret_cast<const float4*>(p));
                acc[0] += v.x; acc[1] += v.y; acc[2] += v.z; acc[3] += v.w;
            } else {
                acc[0] += __ldg(p);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < VW; ++k) sh[ty][tx * VW + k] = acc[k];
    __syncthreads();
    if (ty == 0 && c0 < C) {
        float* o = dst + (long long)blockIdx.y * C + c0;
#pragma unroll
        for (int k = 0; k < VW; ++k) {
            float t = 0.0f;
#pragma unroll
            for (int y = 0; y < 8; ++y) t += sh[y][tx * VW + k];
            o[k] = t;
        }
    }
}

// Block (32, 8), grid (ceil(C / (32 * VW)), splits). dst: out [C] when splits == 1, else part [splits, C].
extern "C" __global__ void __launch_bounds__(256) sum_rows_f32(const float* __restrict__ x, float* __restrict__ dst, int R, int C, int rows_per_split) {
    sum_rows_impl<1>(x, dst, R, C, rows_per_split);
}
// As sum_rows_f32, C % 4 == 0 and x 16-byte aligned.
extern "C" __global__ void __launch_bounds__(256) sum_rows_vec4_f32(const float* __restrict__ x, float* __restrict__ dst, int R, int C, int rows_per_split) {
    sum_rows_impl<4>(x, dst, R, C, rows_per_split);
}

// out[c] = sum_{s < splits} part[s, c], in order. 1-D grid over columns.
extern "C" __global__ void __launch_bounds__(256) sum_rows_finish_f32(const float* __restrict__ part, float* __restrict__ out, int splits, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float t = 0.0f;
    for (int s = 0; s < splits; ++s) t += part[(long long)s * C + c];
    out[c] = t;
}

// Sum of v over the block (blockDim.x a multiple of 32, <= 1024); valid in thread 0.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float sh[32];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) sh[w] = v;
    __syncthreads();
    v = 0.0f;
    if (w == 0) {
        v = l < nw ? sh[l] : 0.0f;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    }
    return v;
}

// Block 256 threads; any grid; partials[gridDim.x].
extern "C" __global__ void __launch_bounds__(256) l2norm_partial_f32(const unsigned long long* __restrict__ ptrs, const long long* __restrict__ lens,
                                                                     int nbuf, float* __restrict__ partials) {
    const long long gtid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long gsize = (long long)gridDim.x * blockDim.x;
    float a0 = 0.0f, a1 = 0.0f;  // two chains: more independent adds in flight
    for (int b = 0; b < nbuf; ++b) {
        const float* p = reinterpret_cast<const float*>(ptrs[b]);
        const long long n = lens[b];
        long long pre = (long long)((((16u - ((unsigned)(unsigned long long)p & 15u)) & 15u)) >> 2);
        if (pre > n) pre = n;
        if (gtid < pre) { const float v = p[gtid]; a0 += v * v; }
        const long long nv = (n - pre) >> 2;
        const float4* v4 = reinterpret_cast<const float4*>(p + pre);
        long long i = gtid;
        for (; i + gsize < nv; i += 2 * gsize) {
            const float4 u = __ldg(v4 + i), w = __ldg(v4 + i + gsize);
            a0 += u.x * u.x + u.y * u.y + u.z * u.z + u.w * u.w;
            a1 += w.x * w.x + w.y * w.y + w.z * w.z + w.w * w.w;
        }
        if (i < nv) {
            const float4 u = __ldg(v4 + i);
            a0 += u.x * u.x + u.y * u.y + u.z * u.z + u.w * u.w;
        }
        for (long long k = pre + nv * 4 + gtid; k < n; k += gsize) { const float v = p[k]; a1 += v * v; }
    }
    const float t = block_sum(a0 + a1);
    if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

// One block (any multiple of 32 up to 1024 threads). out[0] = sqrt(total), out[1] = total.
extern "C" __global__ void __launch_bounds__(1024) l2norm_finish_f32(const float* __restrict__ partials, int nparts, float* __restrict__ out) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partials[i];
    s = block_sum(s);
    if (threadIdx.x == 0) { out[0] = sqrtf(s); out[1] = s; }
}
