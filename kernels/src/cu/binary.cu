// Elementwise binary ops with broadcasting, f32: out = op(a, b), out contiguous; a and b
// strided over up to 4 dims (stride 0 = broadcast), strides >= 0 in elements.
// ops: add, sub, mul, div (IEEE, correctly rounded: no fast math), min, max (fminf/fmaxf:
// a NaN operand yields the other operand, as Rust's f32::min/max in the CPU engine).
//
// Two kernels per op:
//   binary_<op>_f32_contig: a, b, out all contiguous with the same shape: grid-stride over
//     float4 (16-byte) vectors, then a scalar tail; 64-bit indices.
//   binary_<op>_f32: the general case. The launcher first drops size-1 dims and merges
//     adjacent dims that are contiguous in both operands, so the last dim (d3) is as long as
//     possible. 2-D blocks: threadIdx.x strides the last dim (coalesced when its stride is 1,
//     a broadcast read when 0), threadIdx.y the flattened outer rows (d0*d1*d2); the row's
//     coordinates are decoded once per row, not per element.

struct OpAdd { static __device__ __forceinline__ float f(float a, float b) { return a + b; } };
struct OpSub { static __device__ __forceinline__ float f(float a, float b) { return a - b; } };
struct OpMul { static __device__ __forceinline__ float f(float a, float b) { return a * b; } };
struct OpDiv { static __device__ __forceinline__ float f(float a, float b) { return a / b; } };
struct OpMin { static __device__ __forceinline__ float f(float a, float b) { return fminf(a, b); } };
struct OpMax { static __device__ __forceinline__ float f(float a, float b) { return fmaxf(a, b); } };

template <class Op>
__device__ __forceinline__ void contig(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long n) {
    const long long gtid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long gsize = (long long)gridDim.x * blockDim.x;
    const bool vec = ((((unsigned long long)a) | ((unsigned long long)b) | ((unsigned long long)out)) & 15ull) == 0;
    const long long n4 = vec ? (n >> 2) : 0;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* o4 = reinterpret_cast<float4*>(out);
    long long i = gtid;
    for (; i + gsize < n4; i += 2 * gsize) {  // two independent vector pairs in flight
        const float4 x0 = __ldg(a4 + i), y0 = __ldg(b4 + i), x1 = __ldg(a4 + i + gsize), y1 = __ldg(b4 + i + gsize);
        o4[i] = make_float4(Op::f(x0.x, y0.x), Op::f(x0.y, y0.y), Op::f(x0.z, y0.z), Op::f(x0.w, y0.w));
        o4[i + gsize] = make_float4(Op::f(x1.x, y1.x), Op::f(x1.y, y1.y), Op::f(x1.z, y1.z), Op::f(x1.w, y1.w));
    }
    if (i < n4) {
        const float4 x0 = __ldg(a4 + i), y0 = __ldg(b4 + i);
        o4[i] = make_float4(Op::f(x0.x, y0.x), Op::f(x0.y, y0.y), Op::f(x0.z, y0.z), Op::f(x0.w, y0.w));
    }
    for (long long k = n4 * 4 + gtid; k < n; k += gsize) out[k] = Op::f(__ldg(a + k), __ldg(b + k));
}

// Shape [d0, d1, d2, d3] (d0 implied by outer = d0*d1*d2); strides of a and b per dim.
template <class Op>
__device__ __forceinline__ void bcast(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                      long long outer, long long d1, long long d2, long long d3,
                                      long long as0, long long as1, long long as2, long long as3,
                                      long long bs0, long long bs1, long long bs2, long long bs3) {
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < outer; r += (long long)gridDim.y * blockDim.y) {
        const long long i2 = r % d2, q = r / d2;
        const long long i1 = q % d1, i0 = q / d1;
        const float* ar = a + i0 * as0 + i1 * as1 + i2 * as2;
        const float* br = b + i0 * bs0 + i1 * bs1 + i2 * bs2;
        float* orow = out + r * d3;
        for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < d3; c += (long long)gridDim.x * blockDim.x)
            orow[c] = Op::f(__ldg(ar + c * as3), __ldg(br + c * bs3));
    }
}

#define BCAST_PARAMS const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long outer, long long d1, long long d2, long long d3, long long as0, long long as1, long long as2, long long as3, long long bs0, long long bs1, long long bs2, long long bs3
#define BCAST_ARGS a, b, out, outer, d1, d2, d3, as0, as1, as2, as3, bs0, bs1, bs2, bs3
#define CONTIG_PARAMS const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, long long n

extern "C" __global__ void __launch_bounds__(256) binary_add_f32(BCAST_PARAMS) { bcast<OpAdd>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_sub_f32(BCAST_PARAMS) { bcast<OpSub>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_mul_f32(BCAST_PARAMS) { bcast<OpMul>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_div_f32(BCAST_PARAMS) { bcast<OpDiv>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_min_f32(BCAST_PARAMS) { bcast<OpMin>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_max_f32(BCAST_PARAMS) { bcast<OpMax>(BCAST_ARGS); }
extern "C" __global__ void __launch_bounds__(256) binary_add_f32_contig(CONTIG_PARAMS) { contig<OpAdd>(a, b, out, n); }
extern "C" __global__ void __launch_bounds__(256) binary_sub_f32_contig(CONTIG_PARAMS) { contig<OpSub>(a, b, out, n); }
extern "C" __global__ void __launch_bounds__(256) binary_mul_f32_contig(CONTIG_PARAMS) { contig<OpMul>(a, b, out, n); }
extern "C" __global__ void __launch_bounds__(256) binary_div_f32_contig(CONTIG_PARAMS) { contig<OpDiv>(a, b, out, n); }
extern "C" __global__ void __launch_bounds__(256) binary_min_f32_contig(CONTIG_PARAMS) { contig<OpMin>(a, b, out, n); }
extern "C" __global__ void __launch_bounds__(256) binary_max_f32_contig(CONTIG_PARAMS) { contig<OpMax>(a, b, out, n); }

// A contiguous f32 operand with a bf16 one (raw bits) of the same shape, out f32:
// out = op(a, widen(b)), or op(widen(b), a) when `bf16_first`. Autocast's residual adds (the f32
// stream plus a bf16 matmul output) read the bf16 side in place instead of widening it into an
// f32 temporary first (6 bytes an element fewer, one launch fewer). `op`: the order of
// kernels::memops::BinaryOp (add, sub, mul, div, min, max), the same for the whole grid.
__device__ __forceinline__ float binary_apply(int op, float x, float y) {
    switch (op) {
        case 0: return OpAdd::f(x, y);
        case 1: return OpSub::f(x, y);
        case 2: return OpMul::f(x, y);
        case 3: return OpDiv::f(x, y);
        case 4: return OpMin::f(x, y);
        default: return OpMax::f(x, y);
    }
}
__device__ __forceinline__ float bf16_bits_to_f32(unsigned short b) { return __uint_as_float((unsigned int)b << 16); }
__device__ __forceinline__ float binary_mixed(int op, float x, unsigned short b, int bf16_first) {
    const float y = bf16_bits_to_f32(b);
    return bf16_first ? binary_apply(op, y, x) : binary_apply(op, x, y);
}

extern "C" __global__ void __launch_bounds__(256) binary_f32_bf16_contig(const float* __restrict__ a, const unsigned short* __restrict__ b,
                                                                         float* __restrict__ out, long long n, int op, int bf16_first) {
    const long long gtid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long gsize = (long long)gridDim.x * blockDim.x;
    // Four elements at a time: a 16-byte load of a, an 8-byte load of b.
    const bool vec = ((((unsigned long long)a) | ((unsigned long long)out)) & 15ull) == 0 && (((unsigned long long)b) & 7ull) == 0;
    const long long n4 = vec ? (n >> 2) : 0;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const uint2* b4 = reinterpret_cast<const uint2*>(b);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (long long i = gtid; i < n4; i += gsize) {
        const float4 x = __ldg(a4 + i);
        const uint2 y = __ldg(b4 + i);
        o4[i] = make_float4(binary_mixed(op, x.x, (unsigned short)(y.x & 0xffffu), bf16_first), binary_mixed(op, x.y, (unsigned short)(y.x >> 16), bf16_first),
                            binary_mixed(op, x.z, (unsigned short)(y.y & 0xffffu), bf16_first), binary_mixed(op, x.w, (unsigned short)(y.y >> 16), bf16_first));
    }
    for (long long k = n4 * 4 + gtid; k < n; k += gsize) out[k] = binary_mixed(op, __ldg(a + k), __ldg(b + k), bf16_first);
}
