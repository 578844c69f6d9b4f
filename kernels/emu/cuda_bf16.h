// CPU stand-in for <cuda_bf16.h>, as much as the kernels use: the __nv_bfloat16 storage type and
// its conversions (round to nearest even; NaN to the canonical 0x7fff).
#pragma once
#include <cstring>

inline unsigned short emu_f32_to_bf16(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float emu_bf16_to_f32(unsigned short b) {
    const unsigned u = (unsigned)b << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct __nv_bfloat16 {
    unsigned short bits;
};
inline __nv_bfloat16 __float2bfloat16(float x) { return {emu_f32_to_bf16(x)}; }
inline float __bfloat162float(__nv_bfloat16 x) { return emu_bf16_to_f32(x.bits); }
