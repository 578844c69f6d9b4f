// A CPU emulation of CUDA thread blocks, enough to run our warp-synchronous kernels (and, with
// tensor_core.h, attention's mma.sync / ldmatrix / cp.async helpers) on a machine without a GPU: one std::thread per CUDA thread of a
// block, the grid's blocks run one after another by the same threads, warp shuffles and
// __syncthreads on std::barrier. Slow, but it runs the kernel's own source (after one textual
// edit, see tests/emulated/harness.rs), so indexing, bounds, reductions and barriers are checked.
// A warp-divergent shuffle or barrier deadlocks here, as it is undefined on the GPU.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct EmuWarp {
    std::barrier<> bar{32};
    unsigned long long slot[32];  // one value per lane, any type of up to 8 bytes
    unsigned frag[32][6];         // one mma's A and B fragments per lane (tensor_core.h)
};
inline thread_local EmuWarp* emu_warp;
inline thread_local int emu_lane;
// The thread's warpgroup (4 warps, 128 threads: wgmma's unit) when the block has whole ones.
inline thread_local std::barrier<>* emu_warpgroup;
inline std::barrier<>* emu_block_barrier;
// Dynamic shared memory: tests/emulated/harness.rs rewrites `extern __shared__ float NAME[];` into a
// pointer to this, which a driver points at a buffer of exactly the launch's size (ASan checks).
inline void* emu_dynamic_smem;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared arrays become function statics: one copy, shared by the block's threads
// (blocks run one at a time).
#define __shared__ static

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// Shared-memory addresses (the Hopper matmuls' descriptors, TMA and mbarriers): offsets into
// the launch's dynamic shared memory, its only shared array there.
inline unsigned long long __cvta_generic_to_shared(const void* p) {
    return (unsigned long long)(static_cast<const char*>(p) - static_cast<const char*>(emu_dynamic_smem));
}
#define __grid_constant__
inline void __trap() { abort(); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
// Every lane posts its value, waits for the warp, reads its partner's, waits again (so that no
// lane overwrites a slot another has yet to read).
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(unsigned long long));
    std::memcpy(&emu_warp->slot[emu_lane], &v, sizeof(T));
    emu_warp->bar.arrive_and_wait();
    T r;
    std::memcpy(&r, &emu_warp->slot[emu_lane ^ lane_mask], sizeof(T));
    emu_warp->bar.arrive_and_wait();
    return r;
}
inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    std::memcpy(&u, &x, 4);
    return u;
}
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
// The whole warp only: a partial mask would deadlock here (no kernel uses one).
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp->bar.arrive_and_wait(); }

struct alignas(16) float4 {  // as on the GPU: a misaligned float4 access is UB (UBSan)
    float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct alignas(8) float2 {
    float x, y;
};
inline float2 make_float2(float a, float b) { return {a, b}; }
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct alignas(8) uint2 {
    unsigned int x, y;
};
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }

// A driver's inputs and outputs: raw little-endian arrays in files under one directory.
inline std::string emu_dir;
template <typename T>
inline std::vector<T> emu_load(const std::string& file, size_t n) {
    std::vector<T> v(n);
    std::ifstream f(emu_dir + "/" + file, std::ios::binary);
    if (!f.read(reinterpret_cast<char*>(v.data()), n * sizeof(T))) {
        fprintf(stderr, "emu: cannot read %zu values of %s\n", n, file.c_str());
        exit(2);
    }
    return v;
}
template <typename T>
inline void emu_store(const std::string& file, const std::vector<T>& v) {
    std::ofstream f(emu_dir + "/" + file, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// One thread's asynchronous operations (cp.async copies, wgmma): issued into an open group,
// `commit` closes it, `wait(n)` completes the oldest committed groups until n are left pending,
// as cp.async.wait_group / wgmma.wait_group do; operations never committed are never waited
// for. An op may act at issue too (a copy poisons its destination then), so that both of a
// buffer's hazards show: read before the wait (poison or stale data), and overwritten while
// still in use (poison at issue; a wgmma's product taken late, from what the buffer holds then).
template <typename Op>
struct EmuAsync {
    std::vector<Op> open;
    std::deque<std::vector<Op>> committed;
    void issue(Op op) {
        op.issue();
        open.push_back(op);
    }
    void commit() {
        committed.push_back(std::move(open));
        open.clear();
    }
    void wait(size_t n) {
        while (committed.size() > n) {
            for (Op& op : committed.front()) op.complete();
            committed.pop_front();
        }
    }
    // At the end of a block: what was never waited for is dropped (the next block reuses the
    // shared memory it would have written).
    void reset() {
        open.clear();
        committed.clear();
    }
};
// cp.async.cg 16 bytes: `bytes` from global, the rest of the 16 zero-filled; NaN (all ones,
// for f32 and bf16 alike) from issue until then.
struct EmuCopy {
    void* dst;
    const void* src;
    int bytes;
    void issue() { std::memset(dst, 0xFF, 16); }
    void complete() {
        std::memcpy(dst, src, bytes);
        std::memset(static_cast<char*>(dst) + bytes, 0, 16 - bytes);
    }
};
inline thread_local EmuAsync<EmuCopy> emu_cp_async;
// wgmma groups (hopper.h): each op runs its product when its group is waited for.
struct EmuDeferred {
    std::function<void()> run;
    void issue() {}
    void complete() { run(); }
};
inline thread_local EmuAsync<EmuDeferred> emu_wgmma_async;

// Runs `kernel` (a closure calling the entry point) over the grid. Block size: a multiple of 32.
inline void emu_launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = block;
    const unsigned n = block.x * block.y * block.z;
    std::barrier<> in_block(n), between_blocks(n);
    emu_block_barrier = &in_block;
    std::vector<std::unique_ptr<EmuWarp>> warps;
    for (unsigned w = 0; w < (n + 31) / 32; ++w) warps.emplace_back(new EmuWarp);
    std::vector<std::unique_ptr<std::barrier<>>> groups;
    for (unsigned w = 0; n % 128 == 0 && w < n / 128; ++w) groups.emplace_back(new std::barrier<>(128));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n; ++t) {
        threads.emplace_back([&, t] {
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            emu_warp = warps[t / 32].get();
            emu_warpgroup = n % 128 == 0 ? groups[t / 128].get() : nullptr;
            emu_lane = t % 32;
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = {bx, by, bz};
                        kernel();
                        emu_cp_async.reset();
                        emu_wgmma_async.reset();
                        between_blocks.arrive_and_wait();  // the block's statics are free again
                    }
        });
    }
    for (auto& t : threads) t.join();
}
