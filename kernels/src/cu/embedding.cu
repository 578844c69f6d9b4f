// Embedding (rows of a table), f32, the engine's semantics (engine/src/ops/index.rs):
//   forward:  out[n, :] = table[ids[n], :]            ids i64 [N], table [V, D], out [N, D]
//   backward: dtable[ids[n], :] += dout[n, :]        (scatter-add; ADDS into dtable)
// The host validates ids (the engine does); here an id outside 0..V gives a NaN output row
// in the forward and is skipped in the backward.
//
// Design: one warp per row (8 rows per 256-thread block), 16-byte float4 accesses when
// D % 4 == 0 and both base pointers are 16-byte aligned, 4 independent loads in flight per
// lane; 64-bit row offsets.
// Backward, two versions:
//   embedding_bwd_atomic_f32: f32 atomicAdd per element (a 16-byte vector atomic on sm_90).
//     NON-DETERMINISTIC in summation order when ids repeat (results may differ in the last
//     bits between runs); contention is per repeated id only.
//   embedding_bwd_sorted_f32: deterministic. The host groups the positions by id (a stable
//     sort of the ids, done where the ids already are: the engine validates them on the host):
//     perm [N] = positions sorted by id, seg [nseg + 1] = segment starts into perm, seg_id
//     [nseg] = the id of each segment. One warp per segment sums its rows in position order
//     and adds the sum to dtable once (segments have distinct ids: no race, no atomics).

#define QNAN __int_as_float(0x7fc00000)

__device__ __forceinline__ bool aligned16(const void* p) { return (((unsigned long long)p) & 15ull) == 0; }

extern "C" __global__ void __launch_bounds__(256) embedding_fwd_f32(const long long* __restrict__ ids, const float* __restrict__ table,
                                                                    float* __restrict__ out, int N, int V, int D) {
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;  // warp-uniform
    const long long id = ids[row];
    float* o = out + row * (long long)D;
    if (id < 0 || id >= V) {
        for (int c = lane; c < D; c += 32) o[c] = QNAN;
        return;
    }
    const float* src = table + id * (long long)D;
    if ((D & 3) == 0 && aligned16(table) && aligned16(out)) {
        const float4* s4 = reinterpret_cast<const float4*>(src);
        float4* o4 = reinterpret_cast<float4*>(o);
        const int n4 = D >> 2;
        int c = lane;
        for (; c + 96 < n4; c += 128) {
            const float4 a = __ldg(s4 + c), b = __ldg(s4 + c + 32), d = __ldg(s4 + c + 64), e = __ldg(s4 + c + 96);
            o4[c] = a; o4[c + 32] = b; o4[c + 64] = d; o4[c + 96] = e;
        }
        for (; c < n4; c += 32) o4[c] = __ldg(s4 + c);
    } else {
        for (int c = lane; c < D; c += 32) o[c] = __ldg(src + c);
    }
}

__device__ __forceinline__ void atomic_add4(float* p, float4 v) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(p), v);  // one 16-byte vector atomic (sm_90+)
#else
    atomicAdd(p, v.x); atomicAdd(p + 1, v.y); atomicAdd(p + 2, v.z); atomicAdd(p + 3, v.w);
#endif
}

extern "C" __global__ void __launch_bounds__(256) embedding_bwd_atomic_f32(const long long* __restrict__ ids, const float* __restrict__ dout,
                                                                           float* __restrict__ dtable, int N, int V, int D) {
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const long long id = ids[row];
    if (id < 0 || id >= V) return;
    const float* g = dout + row * (long long)D;
    float* dst = dtable + id * (long long)D;
    if ((D & 3) == 0 && aligned16(dout) && aligned16(dtable)) {
        const float4* g4 = reinterpret_cast<const float4*>(g);
        const int n4 = D >> 2;
        for (int c = lane; c < n4; c += 32) atomic_add4(dst + 4 * c, __ldg(g4 + c));
    } else {
        for (int c = lane; c < D; c += 32) atomicAdd(dst + c, __ldg(g + c));
    }
}

extern "C" __global__ void __launch_bounds__(256) embedding_bwd_sorted_f32(const int* __restrict__ perm, const int* __restrict__ seg,
                                                                           const long long* __restrict__ seg_id, int nseg,
                                                                           const float* __restrict__ dout, float* __restrict__ dtable,
                                                                           int V, int D) {
    const long long s = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (s >= nseg) return;
    const long long id = seg_id[s];
    if (id < 0 || id >= V) return;
    const int p0 = seg[s], p1 = seg[s + 1];
    float* dst = dtable + id * (long long)D;
    if ((D & 3) == 0 && aligned16(dout) && aligned16(dtable)) {
        const int n4 = D >> 2;
        for (int c = lane; c < n4; c += 32) {
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int p = p0; p < p1; ++p) {
                const float4 g = __ldg(reinterpret_cast<const float4*>(dout + (long long)perm[p] * D) + c);
                acc.x += g.x; acc.y += g.y; acc.z += g.z; acc.w += g.w;
            }
            float4* d4 = reinterpret_cast<float4*>(dst) + c;
            float4 cur = *d4;
            cur.x += acc.x; cur.y += acc.y; cur.z += acc.z; cur.w += acc.w;
            *d4 = cur;
        }
    } else {
        for (int c = lane; c < D; c += 32) {
            float acc = 0.0f;
            for (int p = p0; p < p1; ++p) acc += __ldg(dout + (long long)perm[p] * D + c);
            dst[c] += acc;
        }
    }
}
