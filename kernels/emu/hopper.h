// CPU stand-ins for the PTX helpers of cu/matmul_wgmma.cu (matmul v5 and v6, sm_90a), so that
// the Hopper matmuls run on the emulation too. Shared addresses are offsets into the launch's
// dynamic shared memory, which the driver allocates 1024-byte aligned (the swizzle reads
// address bits 7..9, so offsets and real addresses swizzle alike).
// - wgmma.mma_async m64n256k16 and m64n192k16 (bf16, f32 accumulate): each thread computes its
//   own 128 (96) accumulators (the layout of mma.sync's C, per warp of the warpgroup) from the operands in
//   shared memory, decoding the matrix descriptors as the hardware does: start, leading and
//   stride byte offsets, the 128-byte swizzle (16-byte chunk bits 4..6 XOR row bits 7..9).
//   A is K-major: element (m, k) at start + (m / 8) SBO + (m % 8) 128 + 2k. B is N-major
//   (imm-trans-b): element (k, n) at start + (n / 64) LBO + (k / 8) SBO + (k % 8) 128 + 2(n % 64).
//   The product is computed when its group is waited for (wgmma.wait_group N: all but the N
//   newest), from shared memory as it is then, so a stage refilled before its group retired
//   shows; the wait is also a barrier of the warpgroup, so that no thread signals a stage free
//   while another of its warpgroup still reads it (on the GPU the warpgroup's group retires at
//   once). Summed in double, rounded once.
// - cp.async: copied when its group is waited for (tensor_core.h); the fences and setmaxnreg:
//   no-ops.
// - mbarrier: arrival count, pending arrivals, transaction bytes and phase parity under one
//   mutex; try_wait.parity(P) is true once the phase of parity P has completed (the current
//   phase's parity differs from P), so a fresh barrier reports parity 1 complete at once. A wait
//   that lasts 30 s aborts (a protocol deadlock; the kernel traps after 10 s on the GPU).
// - TMA (cp.async.bulk.tensor.2d, 128-byte swizzle): the emulation's own tensor map (the kernel
//   passes it through untouched as opaque bytes): a bf16 matrix, its dims {cols, rows}, row
//   stride and box {cols, rows}; elements outside the matrix are zeros and the box's full bytes
//   complete the barrier's transaction count, as the TMA unit does. A copy poisons its box when
//   issued and lands as late as it may: when a thread waits on its barrier.
#pragma once
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <unordered_map>

inline unsigned emu_sw128(unsigned addr) { return addr ^ (((addr >> 7) & 7u) << 4); }
inline unsigned char* emu_smem_bytes() { return static_cast<unsigned char*>(emu_dynamic_smem); }

__device__ __forceinline__ void v5_cp_async16(unsigned smem, const void* gmem, int src_bytes) { cp_async16(emu_smem_bytes() + smem, gmem, src_bytes); }
__device__ __forceinline__ void v5_cp_async_commit() { cp_async_commit(); }
template <int N>
__device__ __forceinline__ void v5_cp_async_wait() { emu_cp_async.wait(N); }
__device__ __forceinline__ void v5_fence_proxy_async() {}
__device__ __forceinline__ void v5_wgmma_fence() {}
__device__ __forceinline__ void v5_wgmma_commit() { emu_wgmma_async.commit(); }
// The retiring groups' products, then the warpgroup meets (its groups retire together).
template <int N>
__device__ __forceinline__ void v5_wgmma_wait() {
    emu_wgmma_async.wait(N);
    emu_warpgroup->arrive_and_wait();
}
template <int N>
__device__ __forceinline__ void v5_fence_acc(float*) {}

inline void emu_wgmma_m64nNk16(float* d, unsigned long long da, unsigned long long db, int n_cols);
// Issued: the product is taken when its group is waited for, from shared memory as it is then.
__device__ __forceinline__ void v5_wgmma_m64n256k16(float d[128], unsigned long long da, unsigned long long db) {
    emu_wgmma_async.issue(EmuDeferred{[d, da, db] { emu_wgmma_m64nNk16(d, da, db, 256); }});
}
__device__ __forceinline__ void v5_wgmma_m64n192k16(float d[96], unsigned long long da, unsigned long long db) {
    emu_wgmma_async.issue(EmuDeferred{[d, da, db] { emu_wgmma_m64nNk16(d, da, db, 192); }});
}

// D (64 x n_cols) += A (64 x 16) B (16 x n_cols): this thread's n_cols / 2 accumulators.
inline void emu_wgmma_m64nNk16(float* d, unsigned long long da, unsigned long long db, int n_cols) {
    for (unsigned long long desc : {da, db}) {
        if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0) {
            fprintf(stderr, "emu wgmma: descriptor %#llx: only the 128-byte swizzle with base offset 0 is modelled\n", desc);
            abort();
        }
    }
    auto field = [](unsigned long long desc, int lo) { return (unsigned)((desc >> lo) & 0x3FFF) << 4; };
    const unsigned a0 = field(da, 0), a_sbo = field(da, 32), b0 = field(db, 0), b_lbo = field(db, 16), b_sbo = field(db, 32);
    auto at = [](unsigned addr) {
        unsigned short v;
        std::memcpy(&v, emu_smem_bytes() + emu_sw128(addr), 2);
        return (double)emu_bf16_to_f32(v);
    };
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    double A[2][16];
    for (int h = 0; h < 2; ++h) {
        const int m = 16 * warp + g + 8 * h;
        for (int k = 0; k < 16; ++k) A[h][k] = at(a0 + (m >> 3) * a_sbo + (m & 7) * 128 + 2 * k);
    }
    for (int j = 0; j < n_cols / 8; ++j) {
        for (int e = 0; e < 4; ++e) {
            const int h = e >> 1, n = 8 * j + 2 * t + (e & 1);
            double acc = d[4 * j + e];
            for (int k = 0; k < 16; ++k) acc += A[h][k] * at(b0 + (n >> 6) * b_lbo + (k >> 3) * b_sbo + (k & 7) * 128 + 2 * (n & 63));
            d[4 * j + e] = (float)acc;
        }
    }
}

// The emulation's tensor map, in the first bytes of the kernel's opaque 128-byte map.
struct EmuTensorMap {
    const unsigned short* base;
    unsigned long long cols, rows, row_stride_bytes, box_cols, box_rows;
};
// A TMA box copy issued to complete on a barrier, not yet landed.
struct EmuTmaCopy {
    unsigned dst;
    EmuTensorMap map;
    int c0, c1;
};
struct EmuMbar {
    unsigned count, pending;
    long long tx;
    unsigned phase;  // parity of the phase in progress
    std::vector<EmuTmaCopy> copies;
};
inline std::mutex emu_mbar_mutex;
inline std::condition_variable emu_mbar_cv;
inline std::unordered_map<unsigned, EmuMbar> emu_mbars;

inline EmuMbar& emu_mbar(unsigned bar) {
    auto it = emu_mbars.find(bar);
    if (it == emu_mbars.end()) {
        fprintf(stderr, "emu mbarrier: shared offset %u used before mbarrier.init\n", bar);
        abort();
    }
    return it->second;
}
// Completes the phase once every arrival and every transaction byte is in.
inline void emu_mbar_settle(EmuMbar& b) {
    if (b.pending == 0 && b.tx == 0) {
        b.phase ^= 1;
        b.pending = b.count;
        emu_mbar_cv.notify_all();
    }
}
__device__ __forceinline__ void v6_mbar_init(unsigned bar, unsigned count) {
    std::lock_guard<std::mutex> lock(emu_mbar_mutex);
    emu_mbars[bar] = EmuMbar{count, count, 0, 0, {}};
}
inline void emu_mbar_arrive(unsigned bar, long long tx) {
    std::lock_guard<std::mutex> lock(emu_mbar_mutex);
    EmuMbar& b = emu_mbar(bar);
    if (b.pending == 0) {
        fprintf(stderr, "emu mbarrier at %u: more arrivals than its count %u\n", bar, b.count);
        abort();
    }
    b.tx += tx;
    b.pending -= 1;
    emu_mbar_settle(b);
}
__device__ __forceinline__ void v6_mbar_arrive(unsigned bar) { emu_mbar_arrive(bar, 0); }
__device__ __forceinline__ void v6_mbar_arrive_expect_tx(unsigned bar, unsigned bytes) { emu_mbar_arrive(bar, bytes); }
// Lands a box (zeros outside the matrix) at its swizzled place; under the lock.
inline void emu_tma_land(const EmuTmaCopy& c) {
    const EmuTensorMap& m = c.map;
    for (unsigned long long r = 0; r < m.box_rows; ++r) {
        for (unsigned long long e = 0; e < m.box_cols; ++e) {
            const long long x = c.c0 + (long long)e, y = c.c1 + (long long)r;
            unsigned short v = 0;
            if (x >= 0 && y >= 0 && (unsigned long long)x < m.cols && (unsigned long long)y < m.rows) v = m.base[y * (m.row_stride_bytes / 2) + x];
            std::memcpy(emu_smem_bytes() + emu_sw128(c.dst + (unsigned)(r * 128 + e * 2)), &v, 2);
        }
    }
}
// The barrier's copies land (as late as they may: when someone waits on it), each completing
// its full box's bytes; under the lock.
inline void emu_mbar_land_copies(EmuMbar& b) {
    for (const EmuTmaCopy& c : b.copies) {
        emu_tma_land(c);
        b.tx -= (long long)(c.map.box_cols * c.map.box_rows * 2);
    }
    b.copies.clear();
    emu_mbar_settle(b);
}
__device__ __forceinline__ unsigned long long v6_clock_ns() {
    return (unsigned long long)std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
__device__ __forceinline__ void v6_mbar_wait(unsigned bar, unsigned parity) {
    std::unique_lock<std::mutex> lock(emu_mbar_mutex);
    auto done = [&] {
        EmuMbar& b = emu_mbar(bar);
        emu_mbar_land_copies(b);
        return b.phase != parity;
    };
    if (!emu_mbar_cv.wait_for(lock, std::chrono::seconds(30), done)) {
        fprintf(stderr, "emu mbarrier at %u: waited 30 s for parity %u (a protocol deadlock)\n", bar, parity);
        abort();
    }
}
__device__ __forceinline__ void v6_fence_mbar_init() {}
__device__ __forceinline__ void v6_producer_regs() {}
__device__ __forceinline__ void v6_consumer_regs() {}
__device__ __forceinline__ void v6_prefetch_map(const void*) {}

// Issued: the box's shared memory reads NaN (all ones) until the copy lands, when a thread
// waits on its barrier.
__device__ __forceinline__ void v6_tma_load(unsigned dst, const void* map, unsigned bar, int c0, int c1) {
    EmuTmaCopy c{dst, {}, c0, c1};
    std::memcpy(&c.map, map, sizeof c.map);
    if (c.map.box_cols * 2 != 128 || dst % 1024 != 0) {
        fprintf(stderr, "emu TMA: boxes of 128-byte rows into 1024-byte aligned shared memory only (box %llu, dst %u)\n", c.map.box_cols, dst);
        abort();
    }
    std::lock_guard<std::mutex> lock(emu_mbar_mutex);
    std::memset(emu_smem_bytes() + dst, 0xFF, c.map.box_rows * 128);
    emu_mbar(bar).copies.push_back(c);
    emu_mbar_cv.notify_all();
}
