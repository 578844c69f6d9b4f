// Elementwise activations, f32 math over f32 or bf16 storage. Grid-stride loops so any launch size is correct.

// GPT-2 "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

// ld/st and bf16_t: bf16_storage.cuh, which the registry prepends.

template <typename T>
__device__ __forceinline__ void gelu_fwd(const T* __restrict__ x, T* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = ld(x, i);
        float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        st(y, i, 0.5f * v * (1.0f + t));
    }
}

// dx = dy * d/dx gelu(x); overwrites dx (callers accumulate elsewhere if needed).
template <typename T>
__device__ __forceinline__ void gelu_bwd(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = ld(x, i);
        float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        float dt = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        st(dx, i, ld(dy, i) * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dt));
    }
}

extern "C" __global__ void gelu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) { gelu_fwd(x, y, n); }
extern "C" __global__ void gelu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    gelu_bwd(x, dy, dx, n);
}
extern "C" __global__ void gelu_fwd_bf16(const bf16_t* __restrict__ x, bf16_t* __restrict__ y, long long n) { gelu_fwd(x, y, n); }
extern "C" __global__ void gelu_bwd_bf16(const bf16_t* __restrict__ x, const bf16_t* __restrict__ dy, bf16_t* __restrict__ dx, long long n) {
    gelu_bwd(x, dy, dx, n);
}
