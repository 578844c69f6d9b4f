// The tensor-core matmuls' epilogue (v4, v5, v6; prepended to their sources by the registry):
// one pair of adjacent outputs C[row, col], C[row, col + 1] from f32 accumulators + bias.
//   EPI_F32        C f32.
//   EPI_BF16       C bf16 (round to nearest even).
//   EPI_BF16_GELU  aux = bf16(acc + bias), the pre-activation a backward needs, and
//                  C = bf16(gelu(aux)): GPT-2's "gelu_new", 0.5 x (1 + tanh(sqrt(2/pi) (x +
//                  0.044715 x^3))), of the stored (rounded) pre-activation, as the separate GELU
//                  kernel would compute it from that bf16 tensor.
// `pair_ok`: both columns exist and the pair's address is aligned for one 8-byte (f32) or
// 4-byte (bf16) store, in C and in aux.
// Split-K (v4, v5, v6): with gridDim.z = S > 1, block z sums only its share of the k-tiles
// (mm_split_range) and writes that partial product, f32 without bias, at C + z·M·N
// (mm_split_out); mm_splitk_reduce then adds the S partials, in order (the same sums every run),
// and applies the epilogue. A GEMM with few output tiles and a long K (a weight gradient,
// Xᵀ·dY over every token) so fills the GPU; S = 1 is the plain GEMM.

#define EPI_F32 0
#define EPI_BF16 1
#define EPI_BF16_GELU 2

// --- PTX helpers (begin): the CPU emulation (kernels/emu/tensor_core.h) replaces this section.
__device__ __forceinline__ unsigned mm_pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// --- PTX helpers (end)

__device__ __forceinline__ float mm_gelu(float x) {
    const float t = tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x));
    return 0.5f * x * (1.0f + t);
}

__device__ __forceinline__ void mm_store_bf16_pair(unsigned short* C, long long idx, unsigned p, bool two, bool pair_ok) {
    if (pair_ok) {
        *reinterpret_cast<unsigned*>(C + idx) = p;
    } else {
        C[idx] = (unsigned short)(p & 0xffffu);
        if (two) C[idx + 1] = (unsigned short)(p >> 16);
    }
}

template <int EPI>
__device__ __forceinline__ void mm_store_pair(void* __restrict__ Cv, unsigned short* __restrict__ aux, long long idx, float v0, float v1,
                                              bool two, bool pair_ok) {
    if (EPI == EPI_F32) {
        float* C = (float*)Cv;
        if (pair_ok) {
            *reinterpret_cast<float2*>(C + idx) = make_float2(v0, v1);
        } else {
            C[idx] = v0;
            if (two) C[idx + 1] = v1;
        }
        return;
    }
    unsigned p = mm_pack_bf16x2(v0, v1);
    if (EPI == EPI_BF16_GELU) {
        mm_store_bf16_pair(aux, idx, p, two, pair_ok);
        p = mm_pack_bf16x2(mm_gelu(__uint_as_float(p << 16)), mm_gelu(__uint_as_float(p & 0xffff0000u)));
    }
    mm_store_bf16_pair((unsigned short*)Cv, idx, p, two, pair_ok);
}

// Whether pairs may be stored whole: N even, and C (and aux) aligned for it.
template <int EPI>
__device__ __forceinline__ bool mm_pairs_aligned(int N, const void* Cv, const void* aux) {
    const unsigned long long mask = EPI == EPI_F32 ? 7 : 3;
    return (N & 1) == 0 && (((unsigned long long)Cv) & mask) == 0 && (EPI != EPI_BF16_GELU || (((unsigned long long)aux) & 3) == 0);
}

// Block z's k-tiles: [kt0, kt0 + nk) of `ktiles` (nk may be 0 for a trailing split).
__device__ __forceinline__ void mm_split_range(int ktiles, int& kt0, int& nk) {
    const int per = (ktiles + (int)gridDim.z - 1) / (int)gridDim.z;
    kt0 = min((int)blockIdx.z * per, ktiles);
    nk = min(ktiles - kt0, per);
}

// Where block z writes: its f32 partial's slot when K is split, else C itself.
__device__ __forceinline__ void* mm_split_out(void* Cv, int M, int N) {
    return gridDim.z > 1 ? (void*)((float*)Cv + (long long)blockIdx.z * M * N) : Cv;
}

// C (and aux) = epilogue(part[0] + ... + part[splits - 1] + bias), `part` [splits, M, N] f32;
// a pair of columns per thread, grid-stride.
template <int EPI>
__device__ __forceinline__ void mm_splitk_reduce(const float* __restrict__ part, int splits, const float* __restrict__ bias,
                                                 void* __restrict__ Cv, unsigned short* __restrict__ aux, int M, int N) {
    const int row_pairs = (N + 1) / 2;
    const long long pairs = (long long)M * row_pairs, mn = (long long)M * N;
    const bool pair_ok = mm_pairs_aligned<EPI>(N, Cv, aux);
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += (long long)gridDim.x * blockDim.x) {
        const int row = (int)(p / row_pairs), gc = (int)(p % row_pairs) * 2;
        const bool two = gc + 1 < N;
        const long long idx = (long long)row * N + gc;
        float v0 = 0.0f, v1 = 0.0f;
        for (int s = 0; s < splits; ++s) {
            v0 += part[s * mn + idx];
            if (two) v1 += part[s * mn + idx + 1];
        }
        if (bias) {
            v0 += bias[gc];
            if (two) v1 += bias[gc + 1];
        }
        mm_store_pair<EPI>(Cv, aux, idx, v0, v1, two, two && pair_ok);
    }
}
