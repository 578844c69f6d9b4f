// AdamW, torch.optim.AdamW semantics (decoupled decay):
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= lr * (m / bc1) / (sqrt(v / bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t.
// bc1/bc2 are computed on the host in f64 (t is the 1-based step).

__device__ __forceinline__ void adamw_element(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                              float* __restrict__ v, long long i, float lr, float b1, float b2, float eps,
                                              float wd, float bc1, float bc2) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    float pi = p[i] * (1.0f - lr * wd);
    pi -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
}

// One flat f32 buffer.
extern "C" __global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g,
                                     float* __restrict__ m, float* __restrict__ v, long long n,
                                     float lr, float b1, float b2, float eps, float wd,
                                     float bc1, float bc2) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        adamw_element(p, g, m, v, i, lr, b1, b2, eps, wd, bc1, bc2);
}

// Every parameter of a model in one launch: `tensors` holds one 64-byte record per parameter
// (its own buffers, length, learning rate, weight decay and bias corrections: steps and
// parameter groups may differ), `first_chunk[t]` the first of its ADAMW_CHUNK-element chunks
// (first_chunk[count] = the total, the grid). Block b updates one chunk of the tensor t with
// first_chunk[t] <= b < first_chunk[t + 1] (a binary search over the short list).
#define ADAMW_CHUNK 16384
struct AdamwTensor {
    float* p;
    const float* g;
    float* m;
    float* v;
    long long n;
    float lr, wd, bc1, bc2;
    long long pad;  // 64 bytes (the launcher writes 8 words per record)
};

extern "C" __global__ void adamw_multi_f32(const AdamwTensor* __restrict__ tensors, const long long* __restrict__ first_chunk,
                                           int count, float b1, float b2, float eps) {
    const long long b = blockIdx.x;
    int lo = 0, hi = count - 1;  // the last t with first_chunk[t] <= b
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (first_chunk[mid] <= b) lo = mid; else hi = mid - 1;
    }
    const AdamwTensor t = tensors[lo];
    const long long start = (b - first_chunk[lo]) * ADAMW_CHUNK;
    const long long end = start + ADAMW_CHUNK < t.n ? start + ADAMW_CHUNK : t.n;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x)
        adamw_element(t.p, t.g, t.m, t.v, i, t.lr, b1, b2, eps, t.wd, t.bc1, t.bc2);
}
