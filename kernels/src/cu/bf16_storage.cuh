// Prepended by the registry to the modules whose kernels store f32 or bf16 (softmax,
// layernorm, elementwise): bf16 as raw bits (no headers needed), read as f32, written
// rounded to nearest even (a NaN stays a quiet NaN). The math is f32 either way.
typedef unsigned short bf16_t;
__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t* p, long long i) { return __uint_as_float(((unsigned)p[i]) << 16); }
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t* p, long long i, float v) {
    const unsigned u = __float_as_uint(v);
    p[i] = (u & 0x7fffffffu) > 0x7f800000u ? (bf16_t)0x7fc0 : (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

