// The engine's remaining f32 ops, each the CPU backend's formula (engine/src/cpu, engine/src/ops):
// unary functions and clamp with their gradients, where, the gradient of minimum/maximum, a fill,
// a strided copy between two views (assign, cat), max/argmax over rows, sampling from rows,
// gather/scatter along rows, and log-softmax with the softmax/log-softmax backward. Memory-bound
// and simple: grid-stride loops for pointwise work, one warp per row for row work (a block per
// row for sampling).

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#define QNAN __int_as_float(0x7fc00000)

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Unary op codes: kernels::pointwise::Unary's discriminants.
#define U_EXP 0
#define U_LOG 1
#define U_TANH 2
#define U_SIGMOID 3
#define U_LOGSIGMOID 4
#define U_SQR 5
#define U_SQRT 6
#define U_RELU 7
#define U_CLAMP 8
#define U_AFFINE 9

__device__ __forceinline__ float sigmoid_f(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float log_sigmoid_f(float x) {
    return x >= 0.0f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

// y = op(x); `lo`, `hi` are clamp's bounds, or affine's multiplier and addend (unused
// otherwise). `op` is uniform: no divergence.
extern "C" __global__ void __launch_bounds__(256) unary_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                                                 long long n, int op, float lo, float hi) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        float r;
        switch (op) {
            case U_EXP: r = expf(v); break;
            case U_LOG: r = logf(v); break;
            case U_TANH: r = tanhf(v); break;
            case U_SIGMOID: r = sigmoid_f(v); break;
            case U_LOGSIGMOID: r = log_sigmoid_f(v); break;
            case U_SQR: r = v * v; break;
            case U_SQRT: r = sqrtf(v); break;
            case U_RELU: r = fmaxf(v, 0.0f); break;
            case U_AFFINE: r = v * lo + hi; break;
            default: r = v < lo ? lo : (v > hi ? hi : v); break;  // U_CLAMP (NaN stays NaN)
        }
        y[i] = r;
    }
}

// dx = g · op'(x), from the input x and the forward's output y (whichever the rule reads).
extern "C" __global__ void __launch_bounds__(256) unary_bwd_f32(const float* __restrict__ x, const float* __restrict__ y,
                                                                 const float* __restrict__ g, float* __restrict__ dx,
                                                                 long long n, int op, float lo, float hi) {
    GRID_STRIDE(i, n) {
        const float gv = g[i];
        float r;
        switch (op) {
            case U_EXP: r = gv * y[i]; break;
            case U_LOG: r = gv / x[i]; break;
            case U_TANH: { const float t = y[i]; r = gv * (1.0f - t * t); } break;
            case U_SIGMOID: { const float s = y[i]; r = gv * s * (1.0f - s); } break;
            case U_LOGSIGMOID: r = gv * sigmoid_f(-x[i]); break;
            case U_SQR: r = 2.0f * x[i] * gv; break;
            case U_SQRT: r = gv / (2.0f * y[i]); break;
            case U_RELU: r = x[i] > 0.0f ? gv : 0.0f; break;
            case U_AFFINE: r = gv * lo; break;
            default: { const float v = x[i]; r = (v >= lo && v <= hi) ? gv : 0.0f; } break;  // U_CLAMP
        }
        dx[i] = r;
    }
}

// out = cond != 0 ? a : b.
extern "C" __global__ void __launch_bounds__(256) where_f32(const float* __restrict__ c, const float* __restrict__ a,
                                                             const float* __restrict__ b, float* __restrict__ out, long long n) {
    GRID_STRIDE(i, n) { out[i] = c[i] != 0.0f ? a[i] : b[i]; }
}

// The gradient of minimum (is_max = 0) or maximum (is_max = 1): to the selected operand, a tie
// split evenly (as torch does).
extern "C" __global__ void __launch_bounds__(256) minmax_bwd_f32(const float* __restrict__ a, const float* __restrict__ b,
                                                                  const float* __restrict__ g, float* __restrict__ da,
                                                                  float* __restrict__ db, long long n, int is_max) {
    GRID_STRIDE(i, n) {
        const float x = a[i], y = b[i], gv = g[i];
        if (x == y) {
            da[i] = 0.5f * gv;
            db[i] = 0.5f * gv;
        } else {
            const bool a_wins = (x > y) == (is_max != 0);
            da[i] = a_wins ? gv : 0.0f;
            db[i] = a_wins ? 0.0f : gv;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) fill_f32(float* __restrict__ dst, long long n, float value) {
    GRID_STRIDE(i, n) { dst[i] = value; }
}

// Views of rank <= 6 (leading dims padded with size 1; the outermost size is implied by n):
// element i of a row-major walk over the shape sits at offset `so` in a view with strides s and
// `to` in one with strides t (elements; 0 = broadcast), decoded innermost dim first.
#define VIEW_DIMS long long d1, long long d2, long long d3, long long d4, long long d5
#define VIEW_STRIDES(s) long long s##0, long long s##1, long long s##2, long long s##3, long long s##4, long long s##5
__device__ __forceinline__ void view_offsets(long long i, long long d1, long long d2, long long d3, long long d4, long long d5,
                                             const long long* s, const long long* t, long long& so, long long& to) {
    const long long d[6] = {0, d1, d2, d3, d4, d5};
    long long r = i;
    so = 0;
    to = 0;
#pragma unroll
    for (int k = 5; k >= 1; --k) {
        const long long c = r % d[k];
        so += c * s[k];
        to += c * t[k];
        r /= d[k];
    }
    so += r * s[0];
    to += r * t[0];
}

// dst view = src view, both over one shape with their own strides (a source stride may be 0):
// a gather into a contiguous buffer (t row-major), assign into a view, cat. Offsets are applied
// by the launcher. f32, and bf16 as its 16-bit patterns (the KV cache under autocast).
template <typename T>
__device__ __forceinline__ void strided_assign(const T* __restrict__ src, T* __restrict__ dst, long long n, long long d1, long long d2,
                                               long long d3, long long d4, long long d5, const long long* s, const long long* t) {
    GRID_STRIDE(i, n) {
        long long so, to;
        view_offsets(i, d1, d2, d3, d4, d5, s, t, so, to);
        dst[to] = __ldg(src + so);
    }
}
extern "C" __global__ void __launch_bounds__(256) strided_assign_f32(
    const float* __restrict__ src, float* __restrict__ dst, long long n, VIEW_DIMS, VIEW_STRIDES(s), VIEW_STRIDES(t)) {
    const long long s[6] = {s0, s1, s2, s3, s4, s5}, t[6] = {t0, t1, t2, t3, t4, t5};
    strided_assign(src, dst, n, d1, d2, d3, d4, d5, s, t);
}
extern "C" __global__ void __launch_bounds__(256) strided_assign_u16(
    const unsigned short* __restrict__ src, unsigned short* __restrict__ dst, long long n, VIEW_DIMS, VIEW_STRIDES(s), VIEW_STRIDES(t)) {
    const long long s[6] = {s0, s1, s2, s3, s4, s5}, t[6] = {t0, t1, t2, t3, t4, t5};
    strided_assign(src, dst, n, d1, d2, d3, d4, d5, s, t);
}

// Row max and the index of its first maximum (the CPU's fold from element 0: strictly greater
// replaces, so a NaN is skipped unless it is element 0, which then stays), one warp per row.
extern "C" __global__ void __launch_bounds__(128) max_rows_f32(const float* __restrict__ x, float* __restrict__ vals,
                                                                long long* __restrict__ idx, int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const float* xr = x + (long long)row * cols;
    const float x0 = xr[0];
    if (x0 != x0) {  // warp-uniform: every lane read the same element
        if (lane == 0) { vals[row] = x0; idx[row] = 0; }
        return;
    }
    float best = NEG_INF;
    int at = cols;  // "none yet": loses every tie
    for (int c = lane; c < cols; c += 32) {
        const float v = xr[c];
        if (v == v && (at == cols || v > best)) { best = v; at = c; }
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float b2 = __shfl_xor_sync(FULL_MASK, best, off);
        const int a2 = __shfl_xor_sync(FULL_MASK, at, off);
        if (a2 < cols && (at == cols || b2 > best || (b2 == best && a2 < at))) { best = b2; at = a2; }
    }
    if (lane == 0) {
        vals[row] = best;
        idx[row] = at;
    }
}

// One draw per row from softmax(a·x) by inverse CDF: the first index whose running sum of
// w_j = exp(a·(x_j - max)), in id order, exceeds u·Σw. That is the CPU's walk (engine's
// `sample_rows`, the sampler of models::generate), so one uniform picks the same token on
// either device but for rounding at a boundary. One block per row: each thread sums a contiguous
// chunk, thread 0 finds the chunk the target falls in, and that chunk's owner walks it. Rows of
// no positive weight (all -inf) or with a NaN give their last index, as the CPU's walk does.
#define SAMPLE_THREADS 256
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows_f32(const float* __restrict__ x, const float* __restrict__ u,
                                                                            long long* __restrict__ idx, int cols, float a) {
    __shared__ float part[SAMPLE_THREADS];
    __shared__ float warp_max[SAMPLE_THREADS / 32];
    __shared__ int owner;
    __shared__ float base, target;
    const int t = threadIdx.x;
    const float* xr = x + (long long)blockIdx.x * cols;
    float m = NEG_INF;  // fmaxf skips NaN, as the CPU's f64::max
    for (int c = t; c < cols; c += SAMPLE_THREADS) m = fmaxf(m, xr[c]);
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, off));
    if ((t & 31) == 0) warp_max[t >> 5] = m;
    __syncthreads();
    for (int w = 0; w < SAMPLE_THREADS / 32; ++w) m = fmaxf(m, warp_max[w]);

    const int chunk = (cols + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = min(t * chunk, cols), hi = min(lo + chunk, cols);
    float s = 0.0f;
    for (int c = lo; c < hi; ++c) s += expf((xr[c] - m) * a);
    part[t] = s;
    __syncthreads();
    if (t == 0) {
        float total = 0.0f;
        for (int i = 0; i < SAMPLE_THREADS; ++i) total += part[i];
        target = u[blockIdx.x] * total;
        // A NaN anywhere (or no positive weight) makes the CPU's walk find nothing: the last index.
        const bool none = !(total > 0.0f);
        // The chunk whose running sum first exceeds the target; rounding may leave the target at
        // or past the total, and then the last chunk of positive weight takes it.
        float acc = 0.0f;
        owner = -1;
        for (int i = 0; i < SAMPLE_THREADS && !none; ++i) {
            if (part[i] > 0.0f) {
                owner = i;
                base = acc;
                if (target < acc + part[i]) break;
            }
            acc += part[i];
        }
        if (owner < 0) idx[blockIdx.x] = cols - 1;
    }
    __syncthreads();
    if (t == owner) {
        float acc = base;
        int pick = lo;
        for (int c = lo; c < hi; ++c) {
            const float w = expf((xr[c] - m) * a);
            if (w > 0.0f) {
                pick = c;
                if (target < acc + w) break;
            }
            acc += w;
        }
        idx[blockIdx.x] = pick;
    }
}

// out[r, j] = x[r, ids[r, j]] over rows of `v` entries, `k` ids per row; a bad id gives NaN.
extern "C" __global__ void __launch_bounds__(256) gather_rows_f32(const float* __restrict__ x, const long long* __restrict__ ids,
                                                                   float* __restrict__ out, long long n, int v, int k) {
    GRID_STRIDE(i, n) {
        const long long id = ids[i];
        out[i] = (id >= 0 && id < v) ? x[(i / k) * v + id] : QNAN;
    }
}

// dx[r, ids[r, j]] += g[r, j]: the gradient of gather and of max (dx zeroed by the launcher;
// repeated ids add up). Bad ids are skipped (gather wrote NaN for them).
extern "C" __global__ void __launch_bounds__(256) scatter_add_rows_f32(const float* __restrict__ g, const long long* __restrict__ ids,
                                                                        float* __restrict__ dx, long long n, int v, int k) {
    GRID_STRIDE(i, n) {
        const long long id = ids[i];
        if (id >= 0 && id < v) atomicAdd(dx + (i / k) * v + id, g[i]);
    }
}

// Log-softmax over rows: y = x - logsumexp(x), one warp per row, online max/sum.
extern "C" __global__ void __launch_bounds__(128) log_softmax_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                                                       int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + (long long)row * cols;
    float* yr = y + (long long)row * cols;
    float m = NEG_INF, s = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        const float v = xr[c];
        if (v > m) { s = (m == NEG_INF ? 0.0f : s * expf(m - v)) + 1.0f; m = v; }
        else if (v != NEG_INF) { s += expf(v - m); }
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, off);
        const float s2 = __shfl_xor_sync(FULL_MASK, s, off);
        const float mn = fmaxf(m, m2);
        s = (mn == NEG_INF) ? 0.0f : s * expf(m - mn) + s2 * expf(m2 - mn);
        m = mn;
    }
    const float lse = m + logf(s);
    for (int c = lane; c < cols; c += 32) yr[c] = xr[c] - lse;
}

// Row backward from the forward's output y: softmax (is_log = 0) dx = y (g - Σ y g);
// log-softmax (is_log = 1) dx = g - exp(y) Σ g.
extern "C" __global__ void __launch_bounds__(128) softmax_bwd_f32(const float* __restrict__ y, const float* __restrict__ g,
                                                                   float* __restrict__ dx, int rows, int cols, int is_log) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const long long off = (long long)row * cols;
    const float *yr = y + off, *gr = g + off;
    float* dr = dx + off;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += is_log ? gr[c] : yr[c] * gr[c];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
    for (int c = lane; c < cols; c += 32) {
        const float yv = yr[c], gv = gr[c];
        dr[c] = is_log ? gv - expf(yv) * s : yv * (gv - s);
    }
}

// Element casts over views (rank <= 6, leading dims padded with size 1): dst = src viewed with
// its strides, converted. The elements, row-major, form rows of `cols`; dst rows are `pitch`
// apart (pitch > cols pads a matmul operand to a multiple of 8 for the tensor cores' fast path).
// bf16 travels as its bit pattern (unsigned short): f32 -> bf16 rounds to nearest even (the
// operands of autocast's tensor-core kernels, from the f32 master copies), bf16 -> bf16 copies
// bits (a bf16 view gathered or padded), bf16 -> f32 is exact (ops without a bf16 kernel).
__device__ __forceinline__ unsigned short f32_to_bf16_rne(float x) {
    const unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays a (quiet) NaN
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ void convert(float x, unsigned short& y) { y = f32_to_bf16_rne(x); }
__device__ __forceinline__ void convert(unsigned short x, unsigned short& y) { y = x; }
__device__ __forceinline__ void convert(unsigned short x, float& y) { y = __uint_as_float((unsigned int)x << 16); }

template <typename S, typename D>
__device__ __forceinline__ void cast_strided(const S* __restrict__ src, D* __restrict__ dst, long long n, long long cols,
                                             long long pitch, VIEW_DIMS, const long long* s) {
    const long long none[6] = {0, 0, 0, 0, 0, 0};
    GRID_STRIDE(i, n) {
        long long so, unused;
        view_offsets(i, d1, d2, d3, d4, d5, s, none, so, unused);
        convert(__ldg(src + so), dst[(i / cols) * pitch + i % cols]);
    }
}

// The entries (spelled out: the registry test finds each extern "C" name in the source).
extern "C" __global__ void __launch_bounds__(256) cast_bf16_strided(const float* __restrict__ src, unsigned short* __restrict__ dst, long long n,
                                                                    long long cols, long long pitch, VIEW_DIMS, VIEW_STRIDES(s)) {
    const long long s[6] = {s0, s1, s2, s3, s4, s5};
    cast_strided(src, dst, n, cols, pitch, d1, d2, d3, d4, d5, s);
}
extern "C" __global__ void __launch_bounds__(256) copy_bf16_strided(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                                                    long long n, long long cols, long long pitch, VIEW_DIMS, VIEW_STRIDES(s)) {
    const long long s[6] = {s0, s1, s2, s3, s4, s5};
    cast_strided(src, dst, n, cols, pitch, d1, d2, d3, d4, d5, s);
}
extern "C" __global__ void __launch_bounds__(256) widen_bf16_strided(const unsigned short* __restrict__ src, float* __restrict__ dst, long long n,
                                                                     long long cols, long long pitch, VIEW_DIMS, VIEW_STRIDES(s)) {
    const long long s[6] = {s0, s1, s2, s3, s4, s5};
    cast_strided(src, dst, n, cols, pitch, d1, d2, d3, d4, d5, s);
}

// The same casts for a batch of transposed matrices, the view the tensor-core matmuls' operands
// most often are (Xᵀ·dY, dY·Wᵀ): dst row (b·R + r), column c (rows `pitch` apart) = src element
// (r, c) of matrix b, stored at src[b·bs + c·ld + r]. Through a 32x32 tile in shared memory, so
// that both the reads (along r) and the writes (along c) are coalesced; the strided kernel above
// reads such a view 32 rows apart per warp. Block (32, 8); grid (ceil(C/32), ceil(R/32), B).
template <typename S, typename D>
__device__ __forceinline__ void cast_transposed(const S* __restrict__ src, D* __restrict__ dst, long long R, long long C,
                                                long long ld, long long bs, long long pitch) {
    __shared__ S tile[32][33];
    const long long b = blockIdx.z, r0 = (long long)blockIdx.y * 32, c0 = (long long)blockIdx.x * 32;
    const S* sm = src + b * bs;
    for (int j = threadIdx.y; j < 32; j += 8) {
        const long long r = r0 + threadIdx.x, c = c0 + j;
        if (r < R && c < C) tile[j][threadIdx.x] = __ldg(sm + c * ld + r);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        const long long r = r0 + j, c = c0 + threadIdx.x;
        if (r < R && c < C) convert(tile[threadIdx.x][j], dst[(b * R + r) * pitch + c]);
    }
}

extern "C" __global__ void __launch_bounds__(256) cast_bf16_transposed(const float* __restrict__ src, unsigned short* __restrict__ dst,
                                                                       long long R, long long C, long long ld, long long bs, long long pitch) {
    cast_transposed(src, dst, R, C, ld, bs, pitch);
}
extern "C" __global__ void __launch_bounds__(256) copy_bf16_transposed(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                                                       long long R, long long C, long long ld, long long bs, long long pitch) {
    cast_transposed(src, dst, R, C, ld, bs, pitch);
}
