// Strided gather, f32: dst (contiguous, row-major over `shape`) = src viewed with `strides`
// (elements, >= 0; 0 = broadcast). Rank <= 6, leading dims padded with size 1. What makes
// any view of a tensor (permuted, narrowed, broadcast) contiguous for the kernels that need it.
// One thread per output element, grid-stride; the coordinates are decoded innermost first.

extern "C" __global__ void __launch_bounds__(256) strided_copy_f32(
    const float* __restrict__ src, float* __restrict__ dst, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i, off = 0;
        off += (r % d5) * s5; r /= d5;
        off += (r % d4) * s4; r /= d4;
        off += (r % d3) * s3; r /= d3;
        off += (r % d2) * s2; r /= d2;
        off += (r % d1) * s1; r /= d1;
        off += r * s0;
        (void)d0;
        dst[i] = __ldg(src + off);
    }
}
