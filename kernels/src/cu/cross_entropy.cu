// Fused cross-entropy over rows of logits [N, V] (row-major, contiguous), i64 targets [N]
// (negative = ignored), the engine's semantics (engine/src/cpu/cross_entropy.rs), on the logits
// scaled by `a` (1 for the loss; 1 / temperature for PPO's per-token log-probs, which are -loss):
//   forward:  z = a * x[r, :];  lse[r] = logsumexp(z);  loss[r] = lse[r] - z[t] (0 when t < 0);
//             ent[r] = -sum_c p_c log p_c, p = softmax(z), the entropy (only when ent != NULL)
//   backward: s = scale * (gscale ? gscale[r] : 1);
//             d[r, c] = exp(z_c - lse[r]) * s - (c == t ? s : 0), 0 for ignored rows
//             (written straight into the gradient: no probability buffer anywhere)
//   mean:     out[0] = sum(loss over kept rows) / max(kept, 1), out[1] = kept (as float)
// a = 1 multiplies exactly, so the loss's arithmetic is the same as without the scale.
// A target >= V (the host normally rejects it) gives a NaN loss and a NaN gradient row, so
// it cannot pass silently.
//
// Design: one pass over the row for the statistics, keeping an online (max, sum) pair per
// thread (and for the entropy the sum of exp(z - max) * (z - max)), rescaled once per 16-byte
// vector, not per element, merged across the group with full-mask shuffles (and shared memory
// across warps). Loads are 16 bytes (uint4: 4 f32 or 8 bf16) after a scalar prefix that brings
// the row pointer to 16-byte alignment (V = 50257 makes every row start at a different
// alignment), then a scalar tail; the vector loop keeps 4 independent loads in flight per thread. Two group sizes:
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

// Online update of (max m, sum s of exp(v - m)) with one value, and with ENT of the sum
// w of exp(v - m) * (v - m): relative to the running max, so that the entropy log(s) - w / s
// takes no difference of large numbers. A -inf value adds nothing (0 * -inf would be NaN).
// A new max m' rescales w to r * (w + s * (m - m')), r = exp(m - m'); nothing to rescale while
// m is still -inf (s = w = 0).
template <bool ENT>
__device__ __forceinline__ void online1(float& m, float& s, float& w, float v) {
    if (v > m) {  // m = -inf: expf(-inf) = 0
        const float r = expf(m - v);
        if (ENT) w = (m == NEG_INF) ? 0.0f : r * (w + s * (m - v));
        s = s * r + 1.0f;
        m = v;
    } else if (m != NEG_INF) {  // all seen are -inf: contributes 0
        const float e = expf(v - m);
        s += e;
        if (ENT && v != NEG_INF) w += e * (v - m);
    }
}

// Online update with W values: one rescale per vector.
template <int W, bool ENT>
__device__ __forceinline__ void onlineW(float& m, float& s, float& w, const float* v) {
    float lm = v[0];
#pragma unroll
    for (int k = 1; k < W; ++k) lm = fmaxf(lm, v[k]);
    if (lm > m) {
        const float r = expf(m - lm);
        if (ENT) w = (m == NEG_INF) ? 0.0f : r * (w + s * (m - lm));
        s *= r;
        m = lm;
    }
    if (m != NEG_INF) {
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const float e = expf(v[k] - m);
            s += e;
            if (ENT && v[k] != NEG_INF) w += e * (v[k] - m);
        }
    }
}

template <bool ENT>
__device__ __forceinline__ void merge(float& m, float& s, float& w, float m2, float s2, float w2) {
    const float mn = fmaxf(m, m2);
    if (mn == NEG_INF) {  // guards -inf - -inf
        s = 0.0f;
        if (ENT) w = 0.0f;
    } else {
        const float r = expf(m - mn), r2 = expf(m2 - mn);
        if (ENT) w = (m == NEG_INF ? 0.0f : r * (w + s * (m - mn))) + (m2 == NEG_INF ? 0.0f : r2 * (w2 + s2 * (m2 - mn)));
        s = s * r + s2 * r2;
    }
    m = mn;
}

// (max, sum[, weighted sum]) of one row of z = a * x over a group of G threads; lane in [0, G).
// Unreduced.
template <typename T, int G, bool ENT>
__device__ __forceinline__ void row_stats(const T* __restrict__ xr, int V, float a, int lane, float& m, float& s, float& w) {
    constexpr int W = Pack<T>::W;
    m = NEG_INF;
    s = 0.0f;
    w = 0.0f;
    const int pre = align_prefix(xr, V);
    if (lane < pre) online1<ENT>(m, s, w, a * to_f(xr[lane]));  // pre < W <= G
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
#pragma unroll
            for (int k = 0; k < W; ++k) f[k] *= a;
            onlineW<W, ENT>(m, s, w, f);
        }
    }
    for (; j < nvec; j += G) {
        float f[W];
        Pack<T>::unpack(__ldg(xv + j), f);
#pragma unroll
        for (int k = 0; k < W; ++k) f[k] *= a;
        onlineW<W, ENT>(m, s, w, f);
    }
    for (int k = pre + nvec * W + lane; k < V; k += G) online1<ENT>(m, s, w, a * to_f(xr[k]));
}

// Reduces (m, s, w) over the group; the result is valid in lane 0 (of the group).
// Every thread of the group must call it (the callers return only whole groups).
template <int G, bool ENT>
__device__ __forceinline__ void group_reduce(float& m, float& s, float& w) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, off);
        const float s2 = __shfl_xor_sync(FULL_MASK, s, off);
        const float w2 = ENT ? __shfl_xor_sync(FULL_MASK, w, off) : 0.0f;
        merge<ENT>(m, s, w, m2, s2, w2);
    }
    if (G > 32) {
        constexpr int NW = G / 32;
        __shared__ float sm[NW], ss[NW], sw[NW];
        const int wi = threadIdx.x >> 5, l = threadIdx.x & 31;
        if (l == 0) { sm[wi] = m; ss[wi] = s; if (ENT) sw[wi] = w; }
        __syncthreads();
        if (wi == 0) {
            m = l < NW ? sm[l] : NEG_INF;
            s = l < NW ? ss[l] : 0.0f;
            w = (ENT && l < NW) ? sw[l] : 0.0f;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                const float m2 = __shfl_xor_sync(FULL_MASK, m, off);
                const float s2 = __shfl_xor_sync(FULL_MASK, s, off);
                const float w2 = ENT ? __shfl_xor_sync(FULL_MASK, w, off) : 0.0f;
                merge<ENT>(m, s, w, m2, s2, w2);
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

template <typename T, int G, bool ENT>
__device__ __forceinline__ void ce_fwd_rows(const T* __restrict__ x, const long long* __restrict__ targets, float* __restrict__ loss,
                                            float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) {
    long long row;
    int lane;
    row_lane<G>(row, lane);
    if (row >= N) return;  // uniform over the group (warp or block)
    const T* xr = x + row * (long long)V;
    float m, s, w;
    row_stats<T, G, ENT>(xr, V, a, lane, m, s, w);
    group_reduce<G, ENT>(m, s, w);
    if (lane == 0) {
        const float l = m + logf(s);  // all -inf row: -inf
        const long long t = targets[row];
        lse[row] = l;
        loss[row] = t < 0 ? 0.0f : (t >= V ? QNAN : l - a * to_f(xr[t]));
        if (ENT) ent[row] = logf(s) - w / s;
    }
}

// The entropy's accumulator only where it is asked for (a branch uniform over the grid).
template <typename T, int G>
__device__ __forceinline__ void ce_fwd(const T* __restrict__ x, const long long* __restrict__ targets, float* __restrict__ loss,
                                       float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) {
    if (ent) ce_fwd_rows<T, G, true>(x, targets, loss, lse, ent, N, V, a);
    else ce_fwd_rows<T, G, false>(x, targets, loss, lse, ent, N, V, a);
}

// d = exp(a * x - lse) * s - onehot * s (the CPU's order of operations), 0 for ignored rows;
// s = scale, times gscale[row] when gscale is given (the upstream gradient of per-row outputs).
template <typename T, int G>
__device__ __forceinline__ void ce_bwd(const T* __restrict__ x, const long long* __restrict__ targets, const float* __restrict__ lse,
                                       const float* __restrict__ gscale, T* __restrict__ dx, int N, int V, float a, float scale_all) {
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
    const float scale = gscale ? scale_all * gscale[row] : scale_all;
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
        float d = expf(a * to_f(xr[k]) - l) * scale;
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
                f[k] = expf(a * f[k] - l) * scale;
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
            f[k] = expf(a * f[k] - l) * scale;
            if (c0 + k == ti) f[k] -= scale;
        }
        dv[j] = Pack<T>::pack(f);
    }
    for (int k = tail0 + lane; k < V; k += G) {
        float d = expf(a * to_f(xr[k]) - l) * scale;
        if (k == ti) d -= scale;
        st(dr + k, d);
    }
}

// Launch: *_warp with 256 threads, ceil(N / 8) blocks; *_block with CE_BLOCK threads, N blocks.
// ent and gscale may be NULL.
extern "C" __global__ void __launch_bounds__(256) ce_fwd_warp_f32(const float* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) { ce_fwd<float, 32>(x, t, loss, lse, ent, N, V, a); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_fwd_block_f32(const float* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) { ce_fwd<float, CE_BLOCK>(x, t, loss, lse, ent, N, V, a); }
extern "C" __global__ void __launch_bounds__(256) ce_fwd_warp_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) { ce_fwd<bf16_t, 32>(x, t, loss, lse, ent, N, V, a); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_fwd_block_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, float* __restrict__ loss, float* __restrict__ lse, float* __restrict__ ent, int N, int V, float a) { ce_fwd<bf16_t, CE_BLOCK>(x, t, loss, lse, ent, N, V, a); }
extern "C" __global__ void __launch_bounds__(256) ce_bwd_warp_f32(const float* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, const float* __restrict__ gscale, float* __restrict__ dx, int N, int V, float a, float scale) { ce_bwd<float, 32>(x, t, lse, gscale, dx, N, V, a, scale); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_bwd_block_f32(const float* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, const float* __restrict__ gscale, float* __restrict__ dx, int N, int V, float a, float scale) { ce_bwd<float, CE_BLOCK>(x, t, lse, gscale, dx, N, V, a, scale); }
extern "C" __global__ void __launch_bounds__(256) ce_bwd_warp_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, const float* __restrict__ gscale, bf16_t* __restrict__ dx, int N, int V, float a, float scale) { ce_bwd<bf16_t, 32>(x, t, lse, gscale, dx, N, V, a, scale); }
extern "C" __global__ void __launch_bounds__(CE_BLOCK) ce_bwd_block_bf16(const bf16_t* __restrict__ x, const long long* __restrict__ t, const float* __restrict__ lse, const float* __restrict__ gscale, bf16_t* __restrict__ dx, int N, int V, float a, float scale) { ce_bwd<bf16_t, CE_BLOCK>(x, t, lse, gscale, dx, N, V, a, scale); }

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
