// Causal attention, FlashAttention-2 style. No headers: bf16 is handled as raw bits
// (unsigned short) and the tensor-core, ldmatrix and cp.async instructions are inline PTX.
//
// Layout (every tensor contiguous): q [heads, tq, D], k/v [heads, tk, D], o [heads, tq, D],
// lse [heads, tq] (natural log), tq <= tk. Query i sits at absolute position i + (tk - tq)
// and sees keys j <= i + (tk - tq) (a KV cache puts the new queries at the end). scale =
// 1/sqrt(D). D is a template parameter: 32, 64 or 128; the launchers reject anything else.
// Left padding (every kernel): with `key_pad` non-null, the heads of batch row b (heads b*hpr ..
// (b+1)*hpr - 1, hpr = heads_per_row) also hide their first key_pad[b] keys. A query that sees
// no key at all then outputs zeros with lse = +inf (so backward's P is exactly 0), as the CPU
// engine does; without padding key 0 is visible to every query.
//
// Kernels (extern "C" names end in _d32 / _d64 / _d128):
//   attn_fwd_v1_f32     f32 on CUDA cores: block = (head, 64 queries), 256 threads = 64 rows x 4
//                       lanes; Q row slice and O accumulator in registers; K/V tiles of 32 keys in
//                       shared memory; online softmax (expf).
//   attn_fwd_v2_bf16    bf16 in, f32 accumulate on tensor cores (mma.sync m16n8k16), f32 out,
//                       f32 lse: block = (head, 64 queries), 4 warps x 16 query rows, 64-key
//                       tiles; Q fragments in registers; K and V tiles single-buffered in shared
//                       memory, V(t) loaded by cp.async during S = QK^T, K(t+1) during O += PV;
//                       P never leaves registers (accumulator layout reused as the A operand);
//                       V's B fragments by ldmatrix.trans; online softmax in base 2 (exp2f).
//   attn_fwd_v3_bf16    v2 with 128 queries per block (8 warps): K/V tiles read from L2 once per
//                       128 queries; warps skip the key tiles their rows cannot see.
//   attn_bwd_preprocess delta_i = rowsum(dO * O) (dO f32 or bf16, O f32), one warp per row.
//   attn_bwd_v1_f32     block = (head, 32 keys), 256 threads = 32 keys x 8 lanes; K/V row slices
//                       and dK/dV accumulators in registers; loops over the 16-query tiles that
//                       see the keys, recomputing P = exp(S*scale - lse); dS goes to shared
//                       memory and dQ_tile = dS K is added into dq with f32 atomicAdd.
//   attn_bwd_v2_bf16    block = (head, 64 keys), 4 warps x 16 keys, 32-query tiles; S^T = K Q^T
//                       and dP^T = V dO^T on tensor cores, P^T/dS^T reused from the accumulators
//                       as A operands of dV += P^T dO and dK += dS^T Q (dK/dV in registers);
//                       dS (bf16) goes to shared memory, dQ_tile = dS K on tensor cores, added
//                       into dq (f32, zeroed by the launcher) with atomicAdd. Dynamic shared
//                       memory (57 KB at D=128: the launcher raises the limit).
//   attn_bwd_v3_bf16    v2 with the query tiles double-buffered: tile i+1's copies fly while
//                       tile i is computed, one barrier per tile fewer (74 KB at D=128).
//   attn_bwd_v4_bf16    v3 with 128 keys per block (8 warps; D = 64, 128): Q/dO tiles are read
//                       and the dQ tile reduced into dq once per 128 keys instead of per 64,
//                       and dQ goes out as 4-wide f32 reductions (red.global.add.v4.f32 on
//                       sm_90). 114 KB of shared memory at D=128.
//   attn_decode_f32     one query per head (generation): block = head, 256 threads = 32 groups
//                       of 8 lanes, each group walks keys grp, grp+32, ... with its own online
//                       softmax, then the 32 partial (m, l, o) are merged through shared memory.
//                       K/V are read in place from the cache (heads kv_stride apart, not
//                       contiguous); attn_decode_bf16kv reads a bf16 cache.

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define POS_INF __int_as_float(0x7f800000)

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t b) { return __uint_as_float(((unsigned)b) << 16); }

// Leading padding keys of `head` (0 without padding).
__device__ __forceinline__ int pad_of(const int* __restrict__ key_pad, int heads_per_row, int head) {
    return key_pad ? key_pad[head / heads_per_row] : 0;
}

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
// Two f32 -> packed bf16x2 (round to nearest even); `lo` goes to the low half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// 16-byte async copy global -> shared; src_bytes < 16 zero-fills the rest (0: nothing read).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// D(16x8 f32) += A(16x16 bf16, row) * B(16x8 bf16, col). Fragment layouts (g = lane>>2, t = lane&3):
//   a0: (row g,   k 2t..2t+1)   a1: (row g+8, k 2t..2t+1)   a2: (row g, k 2t+8..)   a3: (row g+8, k 2t+8..)
//   b0: (k 2t..2t+1, col g)     b1: (k 2t+8..2t+9, col g)
//   c0,c1: (row g, cols 2t, 2t+1)                            c2,c3: (row g+8, cols 2t, 2t+1)
__device__ __forceinline__ void mma_bf16(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices, transposed: lane L supplies the row address of matrix L/8, row L%8.
// Lane gets, of matrix i, elements [2t][g] (low half) and [2t+1][g] (high half) in r[i]:
// for a row-major [k][n] tile that is exactly the mma B fragment (k = 2t.., n = g).
__device__ __forceinline__ void ldsm_x4_trans(unsigned r[4], const bf16_t* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row_ptr))
                 : "memory");
}
// dst[0..3] += (a, b, c, d), f32, atomically per element; dst 16-byte aligned. On sm_90 one
// vector reduction (red.global.add.v4.f32) instead of four: a quarter of the atomic operations
// the L2 has to serialize; elsewhere four atomicAdd.
__device__ __forceinline__ void red_add_f32x4(float* dst, float a, float b, float c, float d) {
#if __CUDA_ARCH__ >= 900
    asm volatile("{\n.reg .u64 g;\ncvta.to.global.u64 g, %0;\nred.global.add.v4.f32 [g], {%1, %2, %3, %4};\n}\n" ::"l"(dst), "f"(a),
                 "f"(b), "f"(c), "f"(d)
                 : "memory");
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
    atomicAdd(dst + 2, c);
    atomicAdd(dst + 3, d);
#endif
}
// --- PTX helpers (end)

__device__ __forceinline__ bf16_t f32_to_bf16(float x) { return (bf16_t)(pack_bf16x2(x, 0.0f) & 0xffffu); }

__device__ __forceinline__ unsigned ld_b32(const bf16_t* p) { return *reinterpret_cast<const unsigned*>(p); }

// A fragment (16 rows x 16 k) of a row-major bf16 tile in shared memory with pitch `ld`,
// rows r0.., k columns k0.. (plain 32-bit loads: two consecutive k per register).
__device__ __forceinline__ void load_a_frag(unsigned a[4], const bf16_t* s, int ld, int r0, int k0, int g, int t) {
    const bf16_t* p = s + (r0 + g) * ld + k0 + 2 * t;
    a[0] = ld_b32(p);
    a[1] = ld_b32(p + 8 * ld);
    a[2] = ld_b32(p + 8);
    a[3] = ld_b32(p + 8 * ld + 8);
}

// ------------------------------------------------------------------------------------------
// v1: f32 forward on CUDA cores
// ------------------------------------------------------------------------------------------
#define V1_BQ 64
#define V1_BK 32
#define V1_THREADS 256

template <int D>
__device__ __forceinline__ void attn_fwd_v1(const float* __restrict__ q, const float* __restrict__ k,
                                            const float* __restrict__ v, float* __restrict__ o,
                                            float* __restrict__ lse, int tq, int tk, float scale,
                                            const int* __restrict__ key_pad, int heads_per_row) {
    constexpr int NC = D / 16;  // float4 chunks per thread: chunk index sub + 4c
    __shared__ __align__(16) float Ks[V1_BK * D];
    __shared__ __align__(16) float Vs[V1_BK * D];

    const int head = blockIdx.x;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * V1_BQ;  // heaviest (last) query tiles first
    const int tid = threadIdx.x, r = tid >> 2, sub = tid & 3;
    const int row = q0 + r;
    const bool row_ok = row < tq;
    const int off = tk - tq;
    const int limit = (row_ok ? row : tq - 1) + off;  // last visible key, <= tk - 1
    const int pad = pad_of(key_pad, heads_per_row, head);  // first visible key
    const float* qh = q + (long long)head * tq * D;
    const float* kh = k + (long long)head * tk * D;
    const float* vh = v + (long long)head * tk * D;

    float4 qr[NC], acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (row_ok) x = *reinterpret_cast<const float4*>(qh + (long long)row * D + (sub + 4 * c) * 4);
        qr[c] = make_float4(x.x * scale, x.y * scale, x.z * scale, x.w * scale);
        acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float m = NEG_INF, l = 0.0f;
    const int last_row = min(q0 + V1_BQ, tq) - 1;
    const int kv_end = min(tk, last_row + off + 1);  // causal: later keys are seen by no row here

    for (int j0 = pad - pad % V1_BK; j0 < kv_end; j0 += V1_BK) {  // tiles wholly padding skipped
        __syncthreads();  // everyone is done reading the previous tile
        for (int idx = tid; idx < V1_BK * D / 4; idx += V1_THREADS) {
            const int kr = idx / (D / 4), kc = idx % (D / 4);
            const int key = j0 + kr;
            float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
            if (key < tk && key >= pad) {  // padding keys are never read: garbage there stays out
                kv = *reinterpret_cast<const float4*>(kh + (long long)key * D + kc * 4);
                vv = *reinterpret_cast<const float4*>(vh + (long long)key * D + kc * 4);
            }
            *reinterpret_cast<float4*>(Ks + kr * D + kc * 4) = kv;
            *reinterpret_cast<float4*>(Vs + kr * D + kc * 4) = vv;
        }
        __syncthreads();

        float s[V1_BK];
        float tmax = NEG_INF;
#pragma unroll
        for (int j = 0; j < V1_BK; ++j) {
            const float4* kr = reinterpret_cast<const float4*>(Ks + j * D);
            float part = 0.0f;
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float4 kk = kr[sub + 4 * c];
                part = fmaf(qr[c].x, kk.x, part);
                part = fmaf(qr[c].y, kk.y, part);
                part = fmaf(qr[c].z, kk.z, part);
                part = fmaf(qr[c].w, kk.w, part);
            }
            part += __shfl_xor_sync(FULL_MASK, part, 1);
            part += __shfl_xor_sync(FULL_MASK, part, 2);
            s[j] = (j0 + j <= limit && j0 + j >= pad) ? part : NEG_INF;
            tmax = fmaxf(tmax, s[j]);
        }
        const float m_new = fmaxf(m, tmax);
        // m_new is -inf only while a row has seen no key (padding); the guard keeps
        // exp(-inf - -inf) = NaN out, and such a row keeps l = 0 and acc = 0.
        const float base = (m_new == NEG_INF) ? 0.0f : m_new;
        const float alpha = expf(m - base);
        float psum = 0.0f;
#pragma unroll
        for (int j = 0; j < V1_BK; ++j) {
            s[j] = expf(s[j] - base);
            psum += s[j];
        }
        l = l * alpha + psum;
        m = m_new;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            acc[c].x *= alpha; acc[c].y *= alpha; acc[c].z *= alpha; acc[c].w *= alpha;
        }
#pragma unroll
        for (int j = 0; j < V1_BK; ++j) {
            const float4* vr = reinterpret_cast<const float4*>(Vs + j * D);
            const float p = s[j];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float4 vv = vr[sub + 4 * c];
                acc[c].x = fmaf(p, vv.x, acc[c].x);
                acc[c].y = fmaf(p, vv.y, acc[c].y);
                acc[c].z = fmaf(p, vv.z, acc[c].z);
                acc[c].w = fmaf(p, vv.w, acc[c].w);
            }
        }
    }
    if (row_ok) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // 0: a padding query's row of zeros
        float* orow = o + ((long long)head * tq + row) * D;
#pragma unroll
        for (int c = 0; c < NC; ++c)
            *reinterpret_cast<float4*>(orow + (sub + 4 * c) * 4) =
                make_float4(acc[c].x * inv, acc[c].y * inv, acc[c].z * inv, acc[c].w * inv);
        if (sub == 0) lse[(long long)head * tq + row] = l > 0.0f ? m + logf(l) : POS_INF;
    }
}

extern "C" __global__ void __launch_bounds__(V1_THREADS)
attn_fwd_v1_f32_d32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v1<32>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V1_THREADS)
attn_fwd_v1_f32_d64(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v1<64>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V1_THREADS)
attn_fwd_v1_f32_d128(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v1<128>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}

// ------------------------------------------------------------------------------------------
// Backward preprocess: delta_i = sum_d dO[i][d] * O[i][d]
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ float load_as_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_as_f32(const bf16_t* p, long long i) { return bf16_to_f32(p[i]); }

template <typename DO>
__device__ __forceinline__ void attn_bwd_preprocess(const float* __restrict__ o, const DO* __restrict__ dout,
                                                    float* __restrict__ delta, int rows, int d) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const long long base = (long long)row * d;
    float s = 0.0f;
    for (int c = lane; c < d; c += 32) s = fmaf(o[base + c], load_as_f32(dout, base + c), s);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL_MASK, s, off);
    if (lane == 0) delta[row] = s;
}

extern "C" __global__ void attn_bwd_preprocess_f32(const float* __restrict__ o, const float* __restrict__ dout,
                                                   float* __restrict__ delta, int rows, int d) {
    attn_bwd_preprocess<float>(o, dout, delta, rows, d);
}
extern "C" __global__ void attn_bwd_preprocess_bf16(const float* __restrict__ o, const bf16_t* __restrict__ dout,
                                                    float* __restrict__ delta, int rows, int d) {
    attn_bwd_preprocess<bf16_t>(o, dout, delta, rows, d);
}

// ------------------------------------------------------------------------------------------
// v1: f32 backward on CUDA cores
// ------------------------------------------------------------------------------------------
#define V1B_BK 32
#define V1B_BQ 16
#define V1B_THREADS 256

template <int D>
__device__ __forceinline__ void attn_bwd_v1(const float* __restrict__ q, const float* __restrict__ k,
                                            const float* __restrict__ v, const float* __restrict__ dout,
                                            const float* __restrict__ lse, const float* __restrict__ delta,
                                            float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                                            int tq, int tk, float scale,
                                            const int* __restrict__ key_pad, int heads_per_row) {
    constexpr int NC = D / 32;   // float4 chunks per thread in the key-row phase: sub + 8c
    // float4 chunks per thread in the dQ phase: cg + 16c (at D = 32 only cg < 8 has one)
    constexpr int NCQ = D >= 64 ? D / 64 : 1;
    __shared__ __align__(16) float Ks[V1B_BK * D];
    __shared__ __align__(16) float Qs[V1B_BQ * D];
    __shared__ __align__(16) float dOs[V1B_BQ * D];
    __shared__ float dSs[V1B_BQ][V1B_BK + 1];
    __shared__ float lse_s[V1B_BQ], del_s[V1B_BQ];

    const int head = blockIdx.x;
    const int j0 = blockIdx.y * V1B_BK;
    const int tid = threadIdx.x, kr = tid >> 3, sub = tid & 7;
    const int off = tk - tq;
    const long long hq = (long long)head * tq * D, hk = (long long)head * tk * D;
    const int pad = pad_of(key_pad, heads_per_row, head);  // keys below it: no query sees them
    const int key = j0 + kr;
    const bool key_ok = key < tk;
    const bool key_read = key_ok && key >= pad;  // padding keys are never read (they get dK = dV = 0)

    float4 kreg[NC], vreg[NC], dka[NC], dva[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
        kreg[c] = key_read ? *reinterpret_cast<const float4*>(k + hk + (long long)key * D + (sub + 8 * c) * 4) : z;
        vreg[c] = key_read ? *reinterpret_cast<const float4*>(v + hk + (long long)key * D + (sub + 8 * c) * 4) : z;
        dka[c] = z;
        dva[c] = z;
    }
    for (int idx = tid; idx < V1B_BK * D / 4; idx += V1B_THREADS) {
        const int r = idx / (D / 4), c = idx % (D / 4);
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (j0 + r < tk && j0 + r >= pad) x = *reinterpret_cast<const float4*>(k + hk + (long long)(j0 + r) * D + c * 4);
        *reinterpret_cast<float4*>(Ks + r * D + c * 4) = x;
    }

    const int i_first = max(0, j0 - off);  // first query that sees key j0
    // A tile of padding keys only: no query tile to visit; dK = dV = 0.
    const int i_start = (j0 + V1B_BK <= pad) ? tq : (i_first / V1B_BQ) * V1B_BQ;
    for (int i0 = i_start; i0 < tq; i0 += V1B_BQ) {
        __syncthreads();  // previous tile's Qs/dOs/dSs readers are done (and Ks is written)
        for (int idx = tid; idx < V1B_BQ * D / 4; idx += V1B_THREADS) {
            const int r = idx / (D / 4), c = idx % (D / 4);
            float4 x = make_float4(0.f, 0.f, 0.f, 0.f), y = x;
            if (i0 + r < tq) {
                x = *reinterpret_cast<const float4*>(q + hq + (long long)(i0 + r) * D + c * 4);
                y = *reinterpret_cast<const float4*>(dout + hq + (long long)(i0 + r) * D + c * 4);
            }
            *reinterpret_cast<float4*>(Qs + r * D + c * 4) = x;
            *reinterpret_cast<float4*>(dOs + r * D + c * 4) = y;
        }
        if (tid < V1B_BQ) {
            const int i = i0 + tid;
            lse_s[tid] = i < tq ? lse[(long long)head * tq + i] : 0.0f;
            del_s[tid] = i < tq ? delta[(long long)head * tq + i] : 0.0f;
        }
        __syncthreads();

#pragma unroll 2
        for (int r = 0; r < V1B_BQ; ++r) {
            const int i = i0 + r;
            const float4* qrow = reinterpret_cast<const float4*>(Qs + r * D);
            const float4* grow = reinterpret_cast<const float4*>(dOs + r * D);
            float ps = 0.0f, pd = 0.0f;
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float4 a = qrow[sub + 8 * c], b = grow[sub + 8 * c];
                ps = fmaf(a.x, kreg[c].x, ps); ps = fmaf(a.y, kreg[c].y, ps);
                ps = fmaf(a.z, kreg[c].z, ps); ps = fmaf(a.w, kreg[c].w, ps);
                pd = fmaf(b.x, vreg[c].x, pd); pd = fmaf(b.y, vreg[c].y, pd);
                pd = fmaf(b.z, vreg[c].z, pd); pd = fmaf(b.w, vreg[c].w, pd);
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) {
                ps += __shfl_xor_sync(FULL_MASK, ps, o);
                pd += __shfl_xor_sync(FULL_MASK, pd, o);
            }
            const bool vis = key_ok && i < tq && key <= i + off && key >= pad;
            const float p = vis ? expf(ps * scale - lse_s[r]) : 0.0f;
            const float ds = p * (pd - del_s[r]);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float4 a = qrow[sub + 8 * c], b = grow[sub + 8 * c];
                dva[c].x = fmaf(p, b.x, dva[c].x); dva[c].y = fmaf(p, b.y, dva[c].y);
                dva[c].z = fmaf(p, b.z, dva[c].z); dva[c].w = fmaf(p, b.w, dva[c].w);
                dka[c].x = fmaf(ds, a.x, dka[c].x); dka[c].y = fmaf(ds, a.y, dka[c].y);
                dka[c].z = fmaf(ds, a.z, dka[c].z); dka[c].w = fmaf(ds, a.w, dka[c].w);
            }
            if (sub == 0) dSs[r][kr] = ds;
        }
        __syncthreads();

        // dQ[i0 + qr][:] += scale * sum_j dS[qr][j] K[j][:]
        const int qr = tid >> 4, cg = tid & 15;
        const int i = i0 + qr;
        if (i < tq) {
            float4 a[NCQ];
#pragma unroll
            for (int c = 0; c < NCQ; ++c) a[c] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
            for (int j = 0; j < V1B_BK; ++j) {
                const float ds = dSs[qr][j];
#pragma unroll
                for (int c = 0; c < NCQ; ++c) {
                    if ((cg + 16 * c) * 4 >= D) continue;
                    const float4 kk = *reinterpret_cast<const float4*>(Ks + j * D + (cg + 16 * c) * 4);
                    a[c].x = fmaf(ds, kk.x, a[c].x); a[c].y = fmaf(ds, kk.y, a[c].y);
                    a[c].z = fmaf(ds, kk.z, a[c].z); a[c].w = fmaf(ds, kk.w, a[c].w);
                }
            }
            float* dqrow = dq + hq + (long long)i * D;
#pragma unroll
            for (int c = 0; c < NCQ; ++c) {
                const int col = (cg + 16 * c) * 4;
                if (col >= D) continue;
                atomicAdd(dqrow + col + 0, a[c].x * scale);
                atomicAdd(dqrow + col + 1, a[c].y * scale);
                atomicAdd(dqrow + col + 2, a[c].z * scale);
                atomicAdd(dqrow + col + 3, a[c].w * scale);
            }
        }
    }
    if (key_ok) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const long long at = hk + (long long)key * D + (sub + 8 * c) * 4;
            *reinterpret_cast<float4*>(dk + at) =
                make_float4(dka[c].x * scale, dka[c].y * scale, dka[c].z * scale, dka[c].w * scale);
            *reinterpret_cast<float4*>(dv + at) = dva[c];
        }
    }
}

extern "C" __global__ void __launch_bounds__(V1B_THREADS, 1)
attn_bwd_v1_f32_d32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v1<32>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V1B_THREADS, 1)
attn_bwd_v1_f32_d64(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v1<64>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V1B_THREADS, 1)
attn_bwd_v1_f32_d128(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v1<128>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}

// ------------------------------------------------------------------------------------------
// v2: bf16 tensor cores
// ------------------------------------------------------------------------------------------
#define V2_BQ 64
#define V2_BK 64
#define V2_THREADS 128

// Copies rows [row0, row0 + ROWS) of a row-major [n, D] bf16 matrix into a shared tile with
// pitch D + 8 by 16-byte cp.async; rows >= n, and rows < lo (padding keys), are zero-filled and
// never read. Needs 16-byte aligned rows (D % 8 == 0 and a 16-byte aligned base; the launcher
// checks).
template <int D, int ROWS, int NTHREADS>
__device__ __forceinline__ void load_tile_async(bf16_t* s, const bf16_t* __restrict__ src, int row0, int n, int lo = 0) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
    constexpr int LDS = D + 8;
    static_assert((ROWS * CPR) % NTHREADS == 0, "tile chunks must divide evenly among the threads");
#pragma unroll
    for (int it = 0; it < ROWS * CPR / NTHREADS; ++it) {
        const int idx = threadIdx.x + it * NTHREADS;
        const int r = idx / CPR, c = idx % CPR;
        const int gr = row0 + r;
        const bool ok = gr < n && gr >= lo;
        cp_async16(s + r * LDS + c * 8, ok ? (const void*)(src + (long long)gr * D + c * 8) : (const void*)src,
                   ok ? 16 : 0);
    }
}

// WARPS = 8 (v3): 128 queries per block, so each K/V tile is read from L2 once per 128 queries
// instead of 64 (half the forward's L2 traffic); Q is staged through sK in halves of 64 rows,
// and a warp whose rows all end before a key tile skips it (exactly: a tile it cannot see
// changes none of its state). WARPS = 4 is v2 as measured.
template <int D, int WARPS>
__device__ __forceinline__ void attn_fwd_v2(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                                            const bf16_t* __restrict__ v, float* __restrict__ o,
                                            float* __restrict__ lse, int tq, int tk, float scale,
                                            const int* __restrict__ key_pad, int heads_per_row) {
    constexpr int LDS = D + 8;  // padded pitch: conflict-free fragment loads and ldmatrix
    constexpr int KS = D / 16;  // k-steps over the head dim
    constexpr int NT = V2_BK / 8;  // n-tiles of S per warp (keys)
    constexpr int DN = D / 8;   // n-tiles of O per warp (head dim)
    constexpr int BQ = 16 * WARPS;       // queries per block
    constexpr int THREADS = 32 * WARPS;
    static_assert(V2_BQ == V2_BK && BQ % V2_BQ == 0, "Q is staged through sK, V2_BK rows at a time");
    __shared__ __align__(128) bf16_t sK[V2_BK * LDS];  // also stages Q at the start
    __shared__ __align__(128) bf16_t sV[V2_BK * LDS];

    const int head = blockIdx.x;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;  // heaviest (last) query tiles first
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int off = tk - tq;
    const bf16_t* qh = q + (long long)head * tq * D;
    const bf16_t* kh = k + (long long)head * tk * D;
    const bf16_t* vh = v + (long long)head * tk * D;
    const float scale_log2 = scale * LOG2E;
    const int pad = pad_of(key_pad, heads_per_row, head);  // first visible key

    // Q tile -> shared (through sK, 64 rows at a time) -> A fragments in registers.
    unsigned qa[KS][4];
#pragma unroll
    for (int half = 0; half < BQ / V2_BQ; ++half) {
        load_tile_async<D, V2_BQ, THREADS>(sK, qh, q0 + half * V2_BQ, tq);
        cp_async_commit();
        cp_async_wait_all();
        __syncthreads();
        if (WARPS == 4 || warp / 4 == half) {
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) load_a_frag(qa[ks], sK, LDS, (WARPS == 4 ? warp : warp & 3) * 16, ks * 16, g, t);
        }
        __syncthreads();  // sK is overwritten by the next half, or K(0)
    }

    const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
    // Last visible key of each of this thread's two rows (rows >= tq are clamped; never stored).
    const int lim0 = min(row0, tq - 1) + off, lim1 = min(row1, tq - 1) + off;
    const int last_row = min(q0 + BQ, tq) - 1;
    const int kv_end = min(tk, last_row + off + 1);
    const int n_kt = (kv_end + V2_BK - 1) / V2_BK;

    float oacc[DN][4];
#pragma unroll
    for (int i = 0; i < DN; ++i) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f;

    const int it0 = pad / V2_BK;  // tiles wholly padding are skipped
    if (it0 < n_kt) load_tile_async<D, V2_BK, THREADS>(sK, kh, it0 * V2_BK, tk, pad);
    cp_async_commit();
    for (int it = it0; it < n_kt; ++it) {
        const int j0 = it * V2_BK;
        load_tile_async<D, V2_BK, THREADS>(sV, vh, j0, tk, pad);  // sV is free: last PV ended with a barrier
        cp_async_commit();
        cp_async_wait_1();  // K(it) has landed (groups complete in order)
        __syncthreads();
        // v3: this warp's last row sees no key of this tile: nothing to do until the next one.
        const bool active = WARPS == 4 || j0 <= min(q0 + warp * 16 + 15, tq - 1) + off;

        float sacc[NT][4];
        if (active) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                // B[k = d][n = key] = K[key][d]: two consecutive d per register.
                const bf16_t* kp = sK + (nt * 8 + g) * LDS + ks * 16 + 2 * t;
                mma_bf16(sacc[nt], qa[ks], ld_b32(kp), ld_b32(kp + 8));
            }
        }

        // Scale to base 2, mask (only tiles that cross the diagonal or the end of the keys, the
        // smallest limit in the block being q0 + off, or hold padding keys), online softmax.
        const bool need_mask = j0 + V2_BK - 1 > q0 + off || j0 < pad;
        float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = j0 + nt * 8 + 2 * t + (e & 1);
                float x = sacc[nt][e] * scale_log2;
                if (need_mask && (key > (e < 2 ? lim0 : lim1) || key < pad)) x = NEG_INF;
                sacc[nt][e] = x;
            }
            mx0 = fmaxf(mx0, fmaxf(sacc[nt][0], sacc[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(sacc[nt][2], sacc[nt][3]));
        }
        // The 4 lanes of a quad (same g) hold the same two rows.
        mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float b0 = (mn0 == NEG_INF) ? 0.0f : mn0, b1 = (mn1 == NEG_INF) ? 0.0f : mn1;
        const float alpha0 = exp2f(m0 - b0), alpha1 = exp2f(m1 - b1);  // 0 on the first tile
        m0 = mn0;
        m1 = mn1;
        float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            sacc[nt][0] = exp2f(sacc[nt][0] - b0);
            sacc[nt][1] = exp2f(sacc[nt][1] - b0);
            sacc[nt][2] = exp2f(sacc[nt][2] - b1);
            sacc[nt][3] = exp2f(sacc[nt][3] - b1);
            ps0 += sacc[nt][0] + sacc[nt][1];
            ps1 += sacc[nt][2] + sacc[nt][3];
        }
        l0 = l0 * alpha0 + ps0;  // per-lane partial sums; the quad is reduced at the end
        l1 = l1 * alpha1 + ps1;
#pragma unroll
        for (int dn = 0; dn < DN; ++dn) {
            oacc[dn][0] *= alpha0; oacc[dn][1] *= alpha0;
            oacc[dn][2] *= alpha1; oacc[dn][3] *= alpha1;
        }
        }  // active

        cp_async_wait_all();  // V(it) has landed
        __syncthreads();      // ... for every thread; and every warp is done reading sK
        if (it + 1 < n_kt) {
            load_tile_async<D, V2_BK, THREADS>(sK, kh, j0 + V2_BK, tk, pad);
            cp_async_commit();
        }

        // O += P V: P's accumulator layout is the A layout of two adjacent key n-tiles.
        if (active) {
#pragma unroll
        for (int kk = 0; kk < V2_BK / 16; ++kk) {
            unsigned pa[4];
            pa[0] = pack_bf16x2(sacc[2 * kk][0], sacc[2 * kk][1]);
            pa[1] = pack_bf16x2(sacc[2 * kk][2], sacc[2 * kk][3]);
            pa[2] = pack_bf16x2(sacc[2 * kk + 1][0], sacc[2 * kk + 1][1]);
            pa[3] = pack_bf16x2(sacc[2 * kk + 1][2], sacc[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                // Matrices: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15).
                unsigned b[4];
                ldsm_x4_trans(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + dp * 16 + (lane >> 4) * 8);
                mma_bf16(oacc[2 * dp], pa, b[0], b[1]);
                mma_bf16(oacc[2 * dp + 1], pa, b[2], b[3]);
            }
        }
        }  // active
        __syncthreads();  // every warp is done reading sV before the next V load
    }

    l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
    l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
    // l = 0: the row saw no key (all padding): zeros and lse = +inf, as v1.
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    if (row0 < tq) {
        float* orow = o + ((long long)head * tq + row0) * D;
#pragma unroll
        for (int dn = 0; dn < DN; ++dn)
            *reinterpret_cast<float2*>(orow + dn * 8 + 2 * t) = make_float2(oacc[dn][0] * inv0, oacc[dn][1] * inv0);
        if (t == 0) lse[(long long)head * tq + row0] = l0 > 0.0f ? (m0 + log2f(l0)) * LN2 : POS_INF;
    }
    if (row1 < tq) {
        float* orow = o + ((long long)head * tq + row1) * D;
#pragma unroll
        for (int dn = 0; dn < DN; ++dn)
            *reinterpret_cast<float2*>(orow + dn * 8 + 2 * t) = make_float2(oacc[dn][2] * inv1, oacc[dn][3] * inv1);
        if (t == 0) lse[(long long)head * tq + row1] = l1 > 0.0f ? (m1 + log2f(l1)) * LN2 : POS_INF;
    }
}

extern "C" __global__ void __launch_bounds__(V2_THREADS, 1)
attn_fwd_v2_bf16_d32(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<32, 4>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V2_THREADS, 1)
attn_fwd_v2_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<64, 4>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(V2_THREADS, 1)
attn_fwd_v2_bf16_d128(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<128, 4>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
// v3: 128 queries per block (8 warps).
extern "C" __global__ void __launch_bounds__(2 * V2_THREADS, 1)
attn_fwd_v3_bf16_d32(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<32, 8>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(2 * V2_THREADS, 1)
attn_fwd_v3_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<64, 8>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(2 * V2_THREADS, 1)
attn_fwd_v3_bf16_d128(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_fwd_v2<128, 8>(q, k, v, o, lse, tq, tk, scale, key_pad, heads_per_row);
}

// v2, v3 and v4 backward: WARPS warps of 16 keys each (a block of BK = 16 * WARPS keys: 64
// for v2/v3, 128 for v4). Dynamic shared memory layout (bytes), all offsets multiples of 16:
//   sK [BK][D+8] bf16, sV [BK][D+8] bf16, sQ [B][32][D+8] bf16, sdO [B][32][D+8] bf16,
//   sdS [32][BK+8] bf16 (dS as [query][key]), sL [B][32] f32 (lse * log2 e), sD [B][32] f32
//   (delta), with B = 1 buffer (v2) or 2 (v3, v4). Total: D=64 -> 32,512 B (v2), 41,984 B
//   (v3), 64,512 B (v4); D=128 -> 57,088 B (v2), 74,752 B (v3), 113,664 B (v4) (the launcher
//   computes the same numbers).
#define B2_BQ 32
#define B2_THREADS 128  // v2, v3
#define B4_THREADS 256  // v4

// PREFETCH (v3, v4): two buffers for the query tile (Q, dO, lse, delta); tile i+1 is copied in
// while tile i is computed, and the end-of-tile barrier goes (the next copy targets the buffer
// the previous tile used, which every thread has left at the top-of-tile barrier).
// WARPS = 8 (v4): 128 keys per block halve what every key block re-reads and re-adds per query
// tile (Q and dO from L2; the dQ tile's f32 reductions), and the dQ tile goes out as 4-wide
// reductions (VEC_RED: red.global.add.v4.f32 on sm_90; lanes t, t^1 swap a row's halves first).
template <int D, int WARPS, bool PREFETCH, bool VEC_RED>
__device__ __forceinline__ void attn_bwd_v2(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                                            const bf16_t* __restrict__ v, const bf16_t* __restrict__ dout,
                                            const float* __restrict__ lse, const float* __restrict__ delta,
                                            float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                                            int tq, int tk, float scale, const int* __restrict__ key_pad, int heads_per_row) {
    constexpr int LDS = D + 8;
    constexpr int KS = D / 16;
    constexpr int DN = D / 8;     // n-tiles of dK/dV per warp
    constexpr int NTQ = B2_BQ / 8;  // n-tiles of S^T per warp (queries)
    constexpr int BK = 16 * WARPS;  // keys per block
    constexpr int THREADS = 32 * WARPS;
    constexpr int LDS_S = BK + 8;
    constexpr int DQ_COLS = 2 * D / WARPS;  // dQ tile columns per warp (2 row halves x WARPS/2 column groups)
    constexpr int DQN = DQ_COLS / 8;        // n-tiles of the dQ tile per warp
    static_assert(DQ_COLS % 16 == 0, "dQ: each warp takes whole 16-column ldmatrix blocks");
    constexpr int QBUF = PREFETCH ? 2 : 1;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16_t* sK = reinterpret_cast<bf16_t*>(smem);
    bf16_t* sV = sK + BK * LDS;
    bf16_t* sQ0 = sV + BK * LDS;          // QBUF query tiles each
    bf16_t* sdO0 = sQ0 + QBUF * B2_BQ * LDS;
    bf16_t* sdS = sdO0 + QBUF * B2_BQ * LDS;
    float* sL0 = reinterpret_cast<float*>(sdS + B2_BQ * LDS_S);
    float* sD0 = sL0 + QBUF * B2_BQ;

    const int head = blockIdx.x;
    const int j0 = blockIdx.y * BK;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int off = tk - tq;
    const long long hq = (long long)head * tq * D, hk = (long long)head * tk * D;
    const float scale_log2 = scale * LOG2E;
    const int kr0 = j0 + warp * 16 + g, kr1 = kr0 + 8;  // this thread's two keys (rows of S^T)
    const int pad = pad_of(key_pad, heads_per_row, head);  // keys below it: no query sees them

    load_tile_async<D, BK, THREADS>(sK, k + hk, j0, tk, pad);
    load_tile_async<D, BK, THREADS>(sV, v + hk, j0, tk, pad);
    cp_async_commit();

    float dka[DN][4], dva[DN][4];
#pragma unroll
    for (int i = 0; i < DN; ++i) {
        dka[i][0] = dka[i][1] = dka[i][2] = dka[i][3] = 0.0f;
        dva[i][0] = dva[i][1] = dva[i][2] = dva[i][3] = 0.0f;
    }

    // First query that sees a key of this tile (the first key past the padding); < tq unless
    // every key of the tile is padding.
    const int i_first = max(0, max(j0, pad) - off);
    // A tile of padding keys only: no query tile to visit; dK = dV = 0.
    const int i_start = (j0 + BK <= pad) ? tq : (i_first / B2_BQ) * B2_BQ;
    // Query tile i0 (Q, dO by cp.async; lse, delta) into buffer `buf`.
    auto fetch = [&](int i0, int buf) {
        load_tile_async<D, B2_BQ, THREADS>(sQ0 + buf * B2_BQ * LDS, q + hq, i0, tq);
        load_tile_async<D, B2_BQ, THREADS>(sdO0 + buf * B2_BQ * LDS, dout + hq, i0, tq);
        cp_async_commit();
        if (threadIdx.x < B2_BQ) {
            const int i = i0 + threadIdx.x;
            sL0[buf * B2_BQ + threadIdx.x] = i < tq ? lse[(long long)head * tq + i] * LOG2E : 0.0f;
            sD0[buf * B2_BQ + threadIdx.x] = i < tq ? delta[(long long)head * tq + i] : 0.0f;
        }
    };
    if (PREFETCH && i_start < tq) fetch(i_start, 0);
    int buf = 0;
    for (int i0 = i_start; i0 < tq; i0 += B2_BQ) {
        if (!PREFETCH) fetch(i0, 0);
        cp_async_wait_all();  // tile i0 (and, the first time, K and V); the next is not issued yet
        __syncthreads();      // ... for every thread; and every thread is done with the other buffer
        if (PREFETCH && i0 + B2_BQ < tq) fetch(i0 + B2_BQ, buf ^ 1);
        const bf16_t* sQ = sQ0 + buf * B2_BQ * LDS;
        const bf16_t* sdO = sdO0 + buf * B2_BQ * LDS;
        const float* sL = sL0 + buf * B2_BQ;
        const float* sD = sD0 + buf * B2_BQ;
        if (PREFETCH) buf ^= 1;

        // S^T = K Q^T and dP^T = V dO^T: per warp 16 keys x 32 queries.
        float st[NTQ][4], dpt[NTQ][4];
#pragma unroll
        for (int nt = 0; nt < NTQ; ++nt) {
            st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = 0.0f;
            dpt[nt][0] = dpt[nt][1] = dpt[nt][2] = dpt[nt][3] = 0.0f;
        }
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            unsigned ka[4], va[4];
            load_a_frag(ka, sK, LDS, warp * 16, ks * 16, g, t);
            load_a_frag(va, sV, LDS, warp * 16, ks * 16, g, t);
#pragma unroll
            for (int nt = 0; nt < NTQ; ++nt) {
                const bf16_t* qp = sQ + (nt * 8 + g) * LDS + ks * 16 + 2 * t;
                const bf16_t* gp = sdO + (nt * 8 + g) * LDS + ks * 16 + 2 * t;
                mma_bf16(st[nt], ka, ld_b32(qp), ld_b32(qp + 8));
                mma_bf16(dpt[nt], va, ld_b32(gp), ld_b32(gp + 8));
            }
        }

        // P^T = exp(S^T * scale - lse), dS^T = P^T * (dP^T - delta); masked entries are exactly 0.
        const bool need_mask = (j0 + BK - 1 > i0 + off) || (i0 + B2_BQ > tq) || (j0 + BK > tk) || (j0 < pad);
#pragma unroll
        for (int nt = 0; nt < NTQ; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qi = nt * 8 + 2 * t + (e & 1);
                const int i = i0 + qi;
                const int key = e < 2 ? kr0 : kr1;
                const bool vis = !need_mask || (i < tq && key < tk && key <= i + off && key >= pad);
                const float p = vis ? exp2f(st[nt][e] * scale_log2 - sL[qi]) : 0.0f;
                st[nt][e] = p;
                dpt[nt][e] = vis ? p * (dpt[nt][e] - sD[qi]) : 0.0f;
            }
        }

        // dV += P^T dO and dK += dS^T Q (A from the accumulators, B = [query][d] tiles by ldmatrix.trans).
#pragma unroll
        for (int kk = 0; kk < B2_BQ / 16; ++kk) {
            unsigned pa[4], sa[4];
            pa[0] = pack_bf16x2(st[2 * kk][0], st[2 * kk][1]);
            pa[1] = pack_bf16x2(st[2 * kk][2], st[2 * kk][3]);
            pa[2] = pack_bf16x2(st[2 * kk + 1][0], st[2 * kk + 1][1]);
            pa[3] = pack_bf16x2(st[2 * kk + 1][2], st[2 * kk + 1][3]);
            sa[0] = pack_bf16x2(dpt[2 * kk][0], dpt[2 * kk][1]);
            sa[1] = pack_bf16x2(dpt[2 * kk][2], dpt[2 * kk][3]);
            sa[2] = pack_bf16x2(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
            sa[3] = pack_bf16x2(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
            const int lrow = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                unsigned b[4];
                ldsm_x4_trans(b, sdO + lrow + dp * 16);
                mma_bf16(dva[2 * dp], pa, b[0], b[1]);
                mma_bf16(dva[2 * dp + 1], pa, b[2], b[3]);
                ldsm_x4_trans(b, sQ + lrow + dp * 16);
                mma_bf16(dka[2 * dp], sa, b[0], b[1]);
                mma_bf16(dka[2 * dp + 1], sa, b[2], b[3]);
            }
        }

        // dS -> shared as [query][key] (bf16) for dQ = dS K.
#pragma unroll
        for (int nt = 0; nt < NTQ; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qi = nt * 8 + 2 * t + (e & 1);
                const int kl = warp * 16 + g + (e < 2 ? 0 : 8);
                sdS[qi * LDS_S + kl] = f32_to_bf16(dpt[nt][e]);
            }
        }
        __syncthreads();

        // dQ tile [32 x D] = dS [32 x BK] K [BK x D]: warp w owns query rows (w&1)*16.. and
        // head-dim columns (w>>1)*DQ_COLS.., accumulates in f32 and adds into dq.
        {
            const int qr = (warp & 1) * 16, dc = (warp >> 1) * DQ_COLS;
            float dqa[DQN][4];
#pragma unroll
            for (int i = 0; i < DQN; ++i) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < BK / 16; ++ks) {
                unsigned a[4];
                load_a_frag(a, sdS, LDS_S, qr, ks * 16, g, t);
                const int lrow = (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + dc + (lane >> 4) * 8;
#pragma unroll
                for (int dp = 0; dp < DQ_COLS / 16; ++dp) {
                    unsigned b[4];
                    ldsm_x4_trans(b, sK + lrow + dp * 16);
                    mma_bf16(dqa[2 * dp], a, b[0], b[1]);
                    mma_bf16(dqa[2 * dp + 1], a, b[2], b[3]);
                }
            }
            const int ia = i0 + qr + g, ib = ia + 8;
#pragma unroll
            for (int dn = 0; dn < DQN; ++dn) {
                if (VEC_RED) {
                    // Lane t (even) keeps row g's columns 2t, 2t+1 and takes 2t+2, 2t+3 from
                    // lane t+1, which takes row g+8's 2t, 2t+1 in exchange: 4 contiguous each.
                    const bool odd = t & 1;
                    const float x0 = __shfl_xor_sync(FULL_MASK, odd ? dqa[dn][0] : dqa[dn][2], 1);
                    const float x1 = __shfl_xor_sync(FULL_MASK, odd ? dqa[dn][1] : dqa[dn][3], 1);
                    const int row = odd ? ib : ia, col = dc + dn * 8 + 2 * (t & ~1);
                    const float v0 = odd ? x0 : dqa[dn][0], v1 = odd ? x1 : dqa[dn][1];
                    const float v2 = odd ? dqa[dn][2] : x0, v3 = odd ? dqa[dn][3] : x1;
                    if (row < tq) red_add_f32x4(dq + hq + (long long)row * D + col, v0 * scale, v1 * scale, v2 * scale, v3 * scale);
                    continue;
                }
                const int col = dc + dn * 8 + 2 * t;
                if (ia < tq) {
                    float* p = dq + hq + (long long)ia * D + col;
                    atomicAdd(p, dqa[dn][0] * scale);
                    atomicAdd(p + 1, dqa[dn][1] * scale);
                }
                if (ib < tq) {
                    float* p = dq + hq + (long long)ib * D + col;
                    atomicAdd(p, dqa[dn][2] * scale);
                    atomicAdd(p + 1, dqa[dn][3] * scale);
                }
            }
        }
        // v2: sQ, sdO, sL, sD are rewritten by the next tile's copies, issued before its first
        // barrier. v3 copies into the other buffer after that barrier, which also orders sdS.
        if (!PREFETCH) __syncthreads();
    }
    cp_async_wait_all();  // K and V's copies, when a padding tile skipped the loop

    if (kr0 < tk) {
        const long long at = hk + (long long)kr0 * D + 2 * t;
#pragma unroll
        for (int dn = 0; dn < DN; ++dn) {
            *reinterpret_cast<float2*>(dk + at + dn * 8) = make_float2(dka[dn][0] * scale, dka[dn][1] * scale);
            *reinterpret_cast<float2*>(dv + at + dn * 8) = make_float2(dva[dn][0], dva[dn][1]);
        }
    }
    if (kr1 < tk) {
        const long long at = hk + (long long)kr1 * D + 2 * t;
#pragma unroll
        for (int dn = 0; dn < DN; ++dn) {
            *reinterpret_cast<float2*>(dk + at + dn * 8) = make_float2(dka[dn][2] * scale, dka[dn][3] * scale);
            *reinterpret_cast<float2*>(dv + at + dn * 8) = make_float2(dva[dn][2], dva[dn][3]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v2_bf16_d32(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<32, 4, false, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v2_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<64, 4, false, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v2_bf16_d128(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<128, 4, false, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v3_bf16_d32(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<32, 4, true, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v3_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<64, 4, true, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B2_THREADS, 1)
attn_bwd_v3_bf16_d128(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<128, 4, true, false>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
// v4: 128 keys per block (8 warps), double-buffered query tiles, 4-wide dQ reductions. Head
// dims 64 and 128 (at 32 a warp's share of the dQ tile would be under one ldmatrix block).
extern "C" __global__ void __launch_bounds__(B4_THREADS, 1)
attn_bwd_v4_bf16_d64(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                     const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<64, 8, true, true>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(B4_THREADS, 1)
attn_bwd_v4_bf16_d128(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                      const bf16_t* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                      float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int tq, int tk, float scale,
                      const int* __restrict__ key_pad, int heads_per_row) {
    attn_bwd_v2<128, 8, true, true>(q, k, v, dout, lse, delta, dq, dk, dv, tq, tk, scale, key_pad, heads_per_row);
}

// ------------------------------------------------------------------------------------------
// Decode: one query per head over a KV cache of tk keys (any tk >= 1), read where it lies.
// q [heads, D] f32, o [heads, D] f32, lse [heads]; head h's keys are rows of D at
// k + h * kv_stride (kv_stride >= tk * D: the cache's capacity, so that a view of a longer
// buffer is read in place, never gathered), the same for v. K/V f32 or bf16 (the autocast
// cache, widened on load); the arithmetic is f32 either way. kv_stride and the pointers must
// keep 4-element loads aligned (the launcher checks).
// ------------------------------------------------------------------------------------------
#define DEC_THREADS 256
#define DEC_G 8                               // lanes per key
#define DEC_GROUPS (DEC_THREADS / DEC_G)      // keys in flight per block

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16_t* p) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);  // 4 bf16, element 0 in the low half
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}

template <int D, typename KV>
__device__ __forceinline__ void attn_decode(const float* __restrict__ q, const KV* __restrict__ k,
                                            const KV* __restrict__ v, float* __restrict__ o,
                                            float* __restrict__ lse, int tk, long long kv_stride, float scale,
                                            const int* __restrict__ key_pad, int heads_per_row) {
    constexpr int NC = D / (4 * DEC_G);  // 4-element chunks per lane: sub + 8c
    __shared__ float sm_m[DEC_GROUPS], sm_l[DEC_GROUPS];
    __shared__ __align__(16) float sm_o[DEC_GROUPS * D];

    const int head = blockIdx.x;
    const int tid = threadIdx.x, grp = tid / DEC_G, sub = tid % DEC_G;
    const KV* kh = k + (long long)head * kv_stride;
    const KV* vh = v + (long long)head * kv_stride;

    float4 qr[NC], acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const float4 x = *reinterpret_cast<const float4*>(q + (long long)head * D + (sub + 8 * c) * 4);
        qr[c] = make_float4(x.x * scale, x.y * scale, x.z * scale, x.w * scale);
        acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float m = NEG_INF, l = 0.0f;
    // The trip count is the same for every thread (shuffles need the whole warp); padding
    // keys are never visited.
    for (int jb = pad_of(key_pad, heads_per_row, head); jb < tk; jb += DEC_GROUPS) {
        const int j = jb + grp;
        const bool ok = j < tk;
        float4 kk[NC], vv[NC];
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            kk[c] = make_float4(0.f, 0.f, 0.f, 0.f);
            vv[c] = kk[c];
            if (ok) {
                kk[c] = load4(kh + (long long)j * D + (sub + 8 * c) * 4);
                vv[c] = load4(vh + (long long)j * D + (sub + 8 * c) * 4);
            }
        }
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            s = fmaf(qr[c].x, kk[c].x, s); s = fmaf(qr[c].y, kk[c].y, s);
            s = fmaf(qr[c].z, kk[c].z, s); s = fmaf(qr[c].w, kk[c].w, s);
        }
        s += __shfl_xor_sync(FULL_MASK, s, 1);
        s += __shfl_xor_sync(FULL_MASK, s, 2);
        s += __shfl_xor_sync(FULL_MASK, s, 4);
        if (ok) {
            const float m_new = fmaxf(m, s);  // finite: s is
            const float alpha = expf(m - m_new), p = expf(s - m_new);
            l = l * alpha + p;
            m = m_new;
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                acc[c].x = fmaf(acc[c].x, alpha, p * vv[c].x);
                acc[c].y = fmaf(acc[c].y, alpha, p * vv[c].y);
                acc[c].z = fmaf(acc[c].z, alpha, p * vv[c].z);
                acc[c].w = fmaf(acc[c].w, alpha, p * vv[c].w);
            }
        }
    }
    if (sub == 0) {
        sm_m[grp] = m;
        sm_l[grp] = l;
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) *reinterpret_cast<float4*>(sm_o + grp * D + (sub + 8 * c) * 4) = acc[c];
    __syncthreads();
    // Merge the groups' partial softmaxes; groups that saw no key have m = -inf, weight 0.
    if (tid < D) {
        float M = NEG_INF;
        for (int gi = 0; gi < DEC_GROUPS; ++gi) M = fmaxf(M, sm_m[gi]);
        float L = 0.0f, acc_o = 0.0f;
        for (int gi = 0; gi < DEC_GROUPS; ++gi) {
            const float w = (sm_m[gi] == NEG_INF) ? 0.0f : expf(sm_m[gi] - M);
            L = fmaf(sm_l[gi], w, L);
            acc_o = fmaf(sm_o[gi * D + tid], w, acc_o);
        }
        // L = 0: every key is padding; zeros and lse = +inf, as the forward kernels.
        o[(long long)head * D + tid] = L > 0.0f ? acc_o / L : 0.0f;
        if (tid == 0) lse[head] = L > 0.0f ? M + logf(L) : POS_INF;
    }
}

// Launch: grid = heads, DEC_THREADS threads.
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_f32_d32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<32>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_f32_d64(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                    float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                    const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<64>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_f32_d128(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                     const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<128>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
// bf16 K/V (the KV cache under autocast), f32 query and output.
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_bf16kv_d32(const float* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                       float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                       const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<32>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_bf16kv_d64(const float* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                       float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                       const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<64>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
extern "C" __global__ void __launch_bounds__(DEC_THREADS)
attn_decode_bf16kv_d128(const float* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v,
                        float* __restrict__ o, float* __restrict__ lse, int tk, long long kv_stride, float scale,
                        const int* __restrict__ key_pad, int heads_per_row) {
    attn_decode<128>(q, k, v, o, lse, tk, kv_stride, scale, key_pad, heads_per_row);
}
