// CPU stand-ins for the PTX helpers of cu/attention.cu, cu/matmul_mma.cu and
// cu/matmul_epilogue.cuh (each file's section between its "PTX helpers" banners), so that the
// bf16 tensor-core kernels (attention v2, matmul v4 and the matmuls' epilogue) run on the
// emulation too (and, from hopper.h, cu/matmul_wgmma.cu's wgmma, TMA and mbarriers):
// - cp.async writes NaN (all ones) into its 16 bytes when issued and copies (zero-filling the
//   rest) when its group is waited for (cp.async.wait_group N: all but the N newest committed
//   groups), never before; a copy never committed is never waited for. So a read before the
//   wait and a refill of a buffer still in use both meet NaN. The kernel's __syncthreads
//   orders the copy for other threads;
// - mma.sync m16n8k16 and ldmatrix.x4.trans are warp-collective: every lane posts its fragments
//   (or row address), the warp meets at a barrier, each lane computes its own results from all
//   the lanes' posts, and the warp meets again before the scratch is reused. A divergent call
//   deadlocks, as it is undefined on the GPU;
// - cvt.rn.bf16x2.f32 rounds to nearest even (NaN to the canonical 0x7fff);
// - matmul v4 addresses shared memory by 32-bit offsets (cvta): here, offsets from the launch's
//   dynamic shared memory, its only shared array.
// The products are summed in double and rounded once: the GPU's own summation order is not
// modelled (the references' bf16 tolerance covers it).
#pragma once
#include "cuda_bf16.h"
#include "emu.h"

__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)emu_f32_to_bf16(lo) | ((unsigned)emu_f32_to_bf16(hi) << 16);
}

// cp.async: the copy happens when its group is waited for (emu.h's EmuAsync), not when issued.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) { emu_cp_async.issue(EmuCopy{smem, gmem, src_bytes}); }
__device__ __forceinline__ void cp_async_commit() { emu_cp_async.commit(); }
__device__ __forceinline__ void cp_async_wait_all() { emu_cp_async.wait(0); }  // cp.async.wait_group 0
__device__ __forceinline__ void cp_async_wait_1() { emu_cp_async.wait(1); }

// red.global.add.v4.f32: four atomic adds; the GPU needs a 16-byte aligned address (aborts here).
__device__ __forceinline__ void red_add_f32x4(float* dst, float a, float b, float c, float d) {
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) { fprintf(stderr, "red_add_f32x4: misaligned %p\n", (void*)dst); abort(); }
    atomicAdd(dst, a), atomicAdd(dst + 1, b), atomicAdd(dst + 2, c), atomicAdd(dst + 3, d);
}

// D(16x8) += A(16x16) B(16x8), the fragment layouts of cu/attention.cu's mma_bf16.
__device__ __forceinline__ void mma_bf16(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    unsigned* mine = emu_warp->frag[emu_lane];
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b0;
    mine[5] = b1;
    emu_warp->bar.arrive_and_wait();
    float A[16][16], B[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const unsigned* f = emu_warp->frag[lane];
        const int g = lane >> 2, t = lane & 3;
        for (int h = 0; h < 2; ++h) {  // low, high half: k and k + 1
            const int k = 2 * t + h;
            const int sh = 16 * h;
            A[g][k] = emu_bf16_to_f32((unsigned short)(f[0] >> sh));
            A[g + 8][k] = emu_bf16_to_f32((unsigned short)(f[1] >> sh));
            A[g][k + 8] = emu_bf16_to_f32((unsigned short)(f[2] >> sh));
            A[g + 8][k + 8] = emu_bf16_to_f32((unsigned short)(f[3] >> sh));
            B[k][g] = emu_bf16_to_f32((unsigned short)(f[4] >> sh));
            B[k + 8][g] = emu_bf16_to_f32((unsigned short)(f[5] >> sh));
        }
    }
    emu_warp->bar.arrive_and_wait();
    const int g = emu_lane >> 2, t = emu_lane & 3;
    for (int e = 0; e < 4; ++e) {
        const int row = g + (e < 2 ? 0 : 8), col = 2 * t + (e & 1);
        double acc = c[e];
        for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * (double)B[k][col];
        c[e] = (float)acc;
    }
}

// ldmatrix.sync.aligned.m8n8.x4.trans: lane L posts the address of row L % 8 of matrix L / 8;
// r[i] = (matrix i)[2t][g] | (matrix i)[2t + 1][g] << 16.
__device__ __forceinline__ void ldsm_x4_trans(unsigned r[4], const unsigned short* row_ptr) {
    std::memcpy(&emu_warp->slot[emu_lane], &row_ptr, sizeof(row_ptr));
    emu_warp->bar.arrive_and_wait();
    const int g = emu_lane >> 2, t = emu_lane & 3;
    for (int i = 0; i < 4; ++i) {
        const unsigned short *lo, *hi;
        std::memcpy(&lo, &emu_warp->slot[i * 8 + 2 * t], sizeof(lo));
        std::memcpy(&hi, &emu_warp->slot[i * 8 + 2 * t + 1], sizeof(hi));
        r[i] = (unsigned)lo[g] | ((unsigned)hi[g] << 16);
    }
    emu_warp->bar.arrive_and_wait();
}

// ldmatrix.sync.aligned.m8n8.x4 (not transposed): r[i] = (matrix i)[g][2t] | (matrix i)[g][2t + 1] << 16.
__device__ __forceinline__ void ldsm_x4(unsigned r[4], const unsigned short* row_ptr) {
    std::memcpy(&emu_warp->slot[emu_lane], &row_ptr, sizeof(row_ptr));
    emu_warp->bar.arrive_and_wait();
    const int g = emu_lane >> 2, t = emu_lane & 3;
    for (int i = 0; i < 4; ++i) {
        const unsigned short* row;
        std::memcpy(&row, &emu_warp->slot[i * 8 + g], sizeof(row));
        r[i] = (unsigned)row[2 * t] | ((unsigned)row[2 * t + 1] << 16);
    }
    emu_warp->bar.arrive_and_wait();
}

// matmul_epilogue.cuh
__device__ __forceinline__ unsigned mm_pack_bf16x2(float lo, float hi) { return pack_bf16x2(lo, hi); }

// matmul_mma.cu (v4): shared addresses are offsets into the dynamic shared memory.
inline unsigned short* emu_smem_at(unsigned offset) { return reinterpret_cast<unsigned short*>(static_cast<char*>(emu_dynamic_smem) + offset); }
__device__ __forceinline__ unsigned v4_smem_addr(const void* p) {
    return (unsigned)(static_cast<const char*>(p) - static_cast<const char*>(emu_dynamic_smem));
}
__device__ __forceinline__ void v4_cp_async16(unsigned smem, const void* gmem, int src_bytes) { cp_async16(emu_smem_at(smem), gmem, src_bytes); }
__device__ __forceinline__ void v4_cp_async_commit() { cp_async_commit(); }
template <int N>
__device__ __forceinline__ void v4_cp_async_wait() { emu_cp_async.wait(N); }
__device__ __forceinline__ void v4_ldsm_x4(unsigned r[4], unsigned addr) { ldsm_x4(r, emu_smem_at(addr)); }
__device__ __forceinline__ void v4_ldsm_x4_trans(unsigned r[4], unsigned addr) { ldsm_x4_trans(r, emu_smem_at(addr)); }
__device__ __forceinline__ void v4_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) { mma_bf16(c, a, b0, b1); }

#include "hopper.h"
