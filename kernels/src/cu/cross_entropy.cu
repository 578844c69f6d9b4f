// Fused cross-entropy over rows of logits [N, V] (row-major, contiguous), i64 targets [N]
// (negative = ignored), the engine's semantics (engine/src/cpu/cross_entropy.rs):
//   forward:  lse[r] = logsumexp(x[r, :]);  loss[r] = lse[r] - x[r, t] (0 when t < 0)
//   backward: d[r, c] = exp(x[r, c] - lse[r]) * scale - (c == t ? scale : 0), 0 for ignored rows
//             (written straight into the gradient: no probability buffer anywhere)
//   mean:     out[0] = sum(loss over kept rows) / max(kept, 1), out[1] = kept (as float)
// A target >= V (the host normally rejects it) gives a NaN loss and a NaN gradient row, so
// it cannot pass silently.
//
// Design: one pass over the row for the statistics, keeping an online (max, sum) pair per
// thread (rescaled once per 16-byte vector, not per element), merged across the group with
// full-mask shuffles (and shared memory across warps). Loads are 16 bytes (uint4: 4 f32 or
// 8 bf16) after a scalar prefix that brings the row pointer to 16-byte alignment (V = 50257
// makes every row start at a different alignment), then a scalar tail; the vector loop keeps
// 4 independent loads in flight per thread. Two group sizes:
//   *_warp:  one warp per row, 8 rows per 256-thread block (small V, e.g. V < 4096)
//   *_block: one 256-thread block per row (large V, e.g. 50257)
// Row offsets are 64-bit (row * V exceeds 2^31 at 8192 x 50257). Logits are f32 or bf16
// (bf16 as raw u16 bits; the gradient then is bf16 too, rounded to nearest even); the
// statistics, loss and lse are always f32. No headers needed.

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#define QNAN __int_as_float(0x7fc00000)
#define CE_BLOCK 256

typedef unsigned short bf16_t;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16_t v) { return __uint_as_float(((unsigned)v) << 16); }

__device__ __forceinline__ bf16_t f2bf(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                              // round to nearest even
    return (bf16_t)(u >> 16);
}
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16_t* p, float v) { *p = f2bf(v); }

// 16 bytes <-> W floats.
template <typename T> struct Pack;
template <> struct Pack<float> {
    static constexpr int W = 4;
    static __device__ __forceinline__ void unpack(uint4 u, float* f) {
        f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
    }
    static __device__ __forceinline__ uint4 pack(const float* f) {
        return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
    }
};
template <> struct Pack<bf16_t> {
    static constexpr int W = 8;
    static __device__ __forceinline__ void unpack2(unsigned u, float* f) {
        f[0] = __uint_as_float(u << 16);          // element 0 is the low half (little endian)
        f[1] = __uint_as_float(u & 0xffff0000u);
    }
    static __device__ __forceinline__ void unpack(uint4 u, float* f) {
        unpack2(u.x, f); unpack2(u.y, f + 2); unpack2(u.z, f + 4); unpack2(u.w, f + 6);
    }
    static __device__ __forceinline__ unsigned pack2(float a, float b) {
        return (unsigned)f2bf(a) | ((unsigned)f2bf(b) << 16);
    }
    static __device__ __forceinline__ uint4 pack(const float* f) {
        return make_uint4(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]), pack2(f[6], f[7]));
    }
};

// Elements before the first 16-byte boundary of p (p is at least sizeof(T)-aligned), at most n.
template <typename T>
__device__ __forceinline__ int align_prefix(const T* p, int n) {
    int pre = (int)(((16u - ((unsigned)(unsigned long long)p & 15u)) & 15u) / sizeof(T));
    return pre < n ? pre : n;
}

// Online (max, sum of exp(x - max)) update with one value.
__device__ __forceinline__ void online1(float& m, float& s, float v) {
    if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }  // m = -inf: expf(-inf) = 0
    else if (m != NEG_INF) { s += expf(v - m); }        // all seen are -inf: contributes 0
}

// Online update with W values: one rescale per vector.
template <int W>
__device__ __forceinline__ void onlineW(float& m, float& s, const float* v) {
    float lm = v[0];
#pragma unroll
    for (int k = 1; k < W; ++k) lm = fmaxf(lm, v[k]);
    if (lm > m) { s *= expf(m - lm); m = lm; }
    if (m != NEG_INF) {
#pragma unroll
        for (int k = 0; k < W; ++k) s += expf(v[k] - m);
    }
}

__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    s = (mn == NEG_INF) ? 0.0f : s * expf(m - mn) + s2 * expf(m2 - mn);  // guards -inf - -inf
    m = mn;
}

// (max, sum) of one row over a group of G threads; lane in [0, G). Unreduced.
template <typename T, int G>
__device__ __forceinline__ void row_stats(const T* __restrict__ xr, int V, int lane, float& m, float& s) {
    constexpr int W = Pack<T>::W;
    m = NEG_INF;
    s = 0.0f;
    const int pre = align_prefix(xr, V);
    if (lane < pre) online1(m, s, to_f(xr[lane]));  // pre < W <= G
    const int nvec = (V - pre) / W;
    const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(xr + pre);
    int j = lane;
    for (; j + 3 * G < nvec; j += 4 * G) {
        uint4 u[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) u[q] = __ldg(xv + j + q * G);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            float f[W];
            Pack<T>::unpack(u[q], f);
            onlineW<W>(m, s, f);
        }
    }
    for (; j < nvec; j += G) {
        float f[W];
        Pack<T>::unpack(__ldg(xv + j), f);
        onlineW<W>(m, s, f);
    }
    for (int k = pre + nvec * W + lane; k < V; k += G) online1(m, s, to_f(xr[k]));
}

// Reduces (m, s) over the group; the result is valid in lane 0 (of the group).
// Every thread of the group must call it (the callers return only whole groups).
template <int G>
__device__ __forceinline__ void group_reduce(float& m, float& s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, off);
        const float s2 = __shfl_xor_sync(FULL_MASK, s, off);
        merge(m, s, m2, s2);
    }
    if (G > 32) {
        constexpr int NW = G / 32;
        __shared__ float sm[NW], ss[NW];
        const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
        if (l == 0) { sm[w] = m; ss[w] = s; }
        __syncthreads();
        if (w == 0) {
            m = l < NW ? sm[l] : NEG_INF;
            s = l < NW ? ss[l] : 0.0f;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                const float m2 = __shfl_xor_sync(FULL_MASK, m, off);
                const float s2 = __shfl_xor_sync(FULL_MASK, s, off);
                merge(m, s, m2, s2);
            }
        }
    }
}

// Row and lane of this thread: G = 32 -> a warp per row; otherwise a block (of G threads) per row.
template <int G>
__device__ __forceinline__ void row_lane(long long& row, int& lane) {
    if (G == 32) {
        row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        lane = threadIdx.x & 31;
    } else {
        row = blockIdx.x;
        lane = threadIdx.x;
    }
}

template <typename T, int G>
__device__ __forceinline__ void ce_fwd(const T* __restrict__ x, const long long* __restrict__ targets,
                                       float* __restrict__ loss, float* __restrict__ lse, int N, int V) {
    long long row;
    int lane;
    row_lane<G>(row, lane);
    if (row >= N) return;  // uniform over the group (warp or block)
    const T* xr = x + row * (long long)V;
    float m, s;
    row_stats<T, G>(xr, V, lane, m, s);
    group_reduce<G>(m, s);
    if (lane == 0) {
        const float l = m + logf(s);  // all -inf row: -inf
        const long long t = targets[row];
        lse[row] = l;
        loss[row] = t < 0 ? 0.0f : (t >= V ? QNAN : l - to_f(xr[t]));
    }
}

// d = exp(x - lse) * scale - onehot * scale (the CPU's order of operations), 0 for ignored rows.
template <typename T, int G>
__device__ __forceinline__ void ce_bwd(const T* __restrict__ x, const long long* __restrict__ targets,
                                       const float* __restrict__ lse, T* __restrict__ dx, int N, int V, float scale) {
    constexpr int W = Pack<T>::W;
    long long row;
    int lane;
    row_lane<G>(row, lane);
    if (row >= N) return;
    const long long off = row * (long long)V;
    const T* xr = x + off;
    T* dr = dx + off;
    const long long t = targets[row];
    const float l = lse[row];
    // Same 16-byte phase for x and d is needed for the vector path (always true for
    // cudarc allocations; otherwise everything goes through the scalar loop).
    const bool same_phase = (((unsigned long long)xr ^ (unsigned long long)dr) & 15ull) == 0;
    const int pre = same_phase ? align_prefix(dr, V) : V;
    const int nvec = (V - pre) / W;
    const int tail0 = pre + nvec * W;
    uint4* dv = reinterpret_cast<uint4*>(dr + pre);
    if (t < 0 || t >= V) {  // ignored row: zeros without reading x; bad target: NaN
        const float fill = t < 0 ? 0.0f : QNAN;
        float f[W];
#pragma unroll
        for (int k = 0; k < W; ++k) f[k] = fill;
        const uint4 z = Pack<T>::pack(f);
        for (int k = lane; k < pre; k += G) st(dr + k, fill);
        for (int j = lane; j < nvec; j += G) dv[j] = z;
        for (int k = tail0 + lane; k < V; k += G) st(dr + k, fill);
        return;
    }
    const int ti = (int)t;
    for (int k = lane; k < pre; k += G) {
        float d = expf(to_f(xr[k]) - l) * scale;
        if (k == ti) d -= scale;
        st(dr + k, d);
    }
    const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(xr + pre);
    int j = lane;
    for (; j + 3 * G < nvec; j += 4 * G) {
        uint4 u[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) u[q] = __ldg(xv + j + q * G);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            float f[W];
            Pack<T>::unpack(u[q], f);
            const int c0 = pre + (j + q * G) * W;
#pragma unroll
            for (int k = 0; k < W; ++k) {
                f[k] = expf(f[k] - l) * scale;
                if (c0 + k == ti) f[k] -= scale;
            }
            dv[j + q * G] = Pack<T>::pack(f);
        }
    }
    for (; j < nvec; j += G) {
        float f[W];
        Pack<T>::unpack(__ldg(xv + j), f);
        const int c0 = pre + j * W;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            f[k] = expf(f[k] - l) * scale;
            if (c0 + k == ti) f[k] -= scale;
        }
        dv[j] = Pack<T>::pack(f);
    }
    for (int k = tail0 + lane; k < V; k += G) {
        float d = expf(to_f(xr[k]) - l) * scale;
        if (k == ti) d -= scale;
        st(dr + k, d);
    }
}

// Launch: *_warp with 256 threads, ceil(N / 8) blocks; *_block with CE_BLOCK threads, N blocks.
extern "C" __global__ void __launch_bounds__(256) ce_fwd_warp_f32(const float* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, int N, int V) { ce_fwd<float, 32>(x, t, loss, lse, N, V); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_fwd_block_f32(const float* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, int N, int V) { ce_fwd<float, CE_BLOCK>(x, t, loss, lse, N, V); }
extern "C" __global__ void __launch_bounds__(256) ce_fwd_warp_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, int N, int V) { ce_fwd<bf16_t, 32>(x, t, loss, lse, N, V); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_fwd_block_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, int N, int V) { ce_fwd<bf16_t, CE_BLOCK>(x, t, loss, lse, N, V); }
extern "C" __global__ void __launch_bounds__(256) ce_bwd_warp_f32(const float* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, float* __restrict__ dx, int N, int V, float scale) { ce_bwd<float, 32>(x, t, lse, dx, N, V, scale); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_bwd_block_f32(const float* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, float* __restrict__ dx, int N, int V, float scale) { ce_bwd<float, CE_BLOCK>(x, t, lse, dx, N, V, scale); }
extern "C" __global__ void __launch_bounds__(256) ce_bwd_warp_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, bf16_t* __restrict__ dx, int N, int V, float scale) { ce_bwd<bf16_t, 32>(x, t, lse, dx, N, V, scale); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_bwd_block_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, bf16_t* __restrict__ dx, int N, int V, float scale) { ce_bwd<bf16_t, CE_BLOCK>(x, t, lse, dx, N, V, scale); }

// Mean loss over kept rows, one block of 1024 threads, fixed summation order (deterministic).
// out[0] = sum / max(kept, 1) (0 when nothing is kept, as the engine), out[1] = kept.
extern "C" __global__ void __launch_bounds__(1024) ce_loss_mean_f32(const float* __restrict__ loss, const long long* __restrict__ targets,
                                                                    int N, float* __restrict__ out) {
    __shared__ float ssum[32], scnt[32];
    float s = 0.0f, c = 0.0f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        if (targets[i] >= 0) { s += loss[i]; c += 1.0f; }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        s += __shfl_xor_sync(FULL_MASK, s, off);
        c += __shfl_xor_sync(FULL_MASK, c, off);
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    if (l == 0) { ssum[w] = s; scnt[w] = c; }
    __syncthreads();
    if (w == 0) {
        s = l < nw ? ssum[l] : 0.0f;
        c = l < nw ? scnt[l] : 0.0f;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            s += __shfl_xor_sync(FULL_MASK, s, off);
            c += __shfl_xor_sync(FULL_MASK, c, off);
        }
        if (l == 0) { out[0] = s / fmaxf(c, 1.0f); out[1] = c; }
    }
}
