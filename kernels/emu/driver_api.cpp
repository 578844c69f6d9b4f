// The CUDA driver API and NVRTC, as much of them as cudarc and our launchers call, over the CPU
// emulation: built into a libcuda.so (and libnvrtc.so) by `instructgpt kernels emulate`, it lets
// the unchanged binary run its whole CUDA path (`selftest --device cuda --engine-only`, a
// training step, generation) on a machine without a GPU. What that checks that the kernel
// drivers of tests/emulated cannot: the launchers' argument lists and launch shapes, the
// engine's buffers, copies and views, dynamic shared memory sizes against the opt-in
// attribute, and every read of memory nothing wrote (fresh allocations are NaN, all ones).
//
// Device memory is host memory, a device pointer its address. Every stream is the one
// in-order queue and every call completes before it returns. NVRTC "compiles" by returning a
// placeholder; a module's functions are the emulated entry points registered by the kernel
// translation units built beside this file (emu_register), looked up by name. The device is an
// sm_80 with few SMs, so that grids sized by SM count stay small; IGPT_EMU_CC=90 makes it an
// sm_90 (Hopper: the wgmma matmuls v5 and v6, their TMA maps encoded by cuTensorMapEncodeTiled
// into the form emu/hopper.h reads).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "emu_entries.h"
#include "tensor_core.h"  // hopper.h's EmuTensorMap

typedef int CUresult;
typedef int nvrtcResult;
typedef unsigned long long CUdeviceptr;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

namespace {

constexpr int kSms = 4;
constexpr size_t kMemory = size_t(16) << 30;  // what cuMemGetInfo reports
constexpr int kDefaultSmem = 48 * 1024;       // a launch above this needs the opt-in attribute

// Compute capability major (8 or 9, IGPT_EMU_CC=80|90); minor 0.
int cc_major() {
    static const int major = [] {
        const char* v = getenv("IGPT_EMU_CC");
        if (!v || !*v || !strcmp(v, "80")) return 8;
        if (!strcmp(v, "90")) return 9;
        fprintf(stderr, "emulated GPU: IGPT_EMU_CC=%s: expected 80 or 90\n", v);
        exit(2);
    }();
    return major;
}
// Shared memory per block with the opt-in: an A100's or an H100's.
int max_smem_optin() { return cc_major() == 9 ? 227 * 1024 : 163 * 1024; }

std::mutex mu;
std::map<uintptr_t, size_t> live;  // allocations: address -> bytes
size_t used = 0, used_high = 0;

struct Function {
    std::string name;
    EmuEntry entry;  // null: not emulated (its launch fails)
    int max_dynamic_smem = kDefaultSmem;
};
int dummy_ctx, dummy_module, dummy_pool;

CUresult allocate(CUdeviceptr* p, size_t bytes) {
    if (!p || bytes == 0) {  // as the driver: no 0-byte allocations
        fprintf(stderr, "emulated GPU: an allocation of 0 bytes (the driver refuses them)\n");
        return CUDA_ERROR_INVALID_VALUE;
    }
    void* m = nullptr;  // exactly `bytes` (under AddressSanitizer, one past the end is caught)
    if (posix_memalign(&m, 256, bytes) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    memset(m, 0xFF, bytes);  // NaN as f32 and bf16: a read of what nothing wrote shows
    std::lock_guard<std::mutex> g(mu);
    live[(uintptr_t)m] = bytes;
    used += bytes;
    used_high = std::max(used_high, used);
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
    std::lock_guard<std::mutex> g(mu);
    auto it = live.find((uintptr_t)p);
    if (it == live.end()) {
        fprintf(stderr, "emulated GPU: free of %#llx, which is not an allocation\n", p);
        return CUDA_ERROR_INVALID_VALUE;
    }
    used -= it->second;
    live.erase(it);
    free((void*)(uintptr_t)p);
    return CUDA_SUCCESS;
}

// A copy's device side must lie inside one live allocation: an overrun is an error here, as it
// would be a fault (or silent corruption) on the GPU.
CUresult in_bounds(const char* what, CUdeviceptr p, size_t bytes) {
    if (bytes == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> g(mu);
    auto it = live.upper_bound((uintptr_t)p);
    if (it != live.begin()) {
        --it;
        if ((uintptr_t)p >= it->first && (uintptr_t)p + bytes <= it->first + it->second) return CUDA_SUCCESS;
    }
    fprintf(stderr, "emulated GPU: %s of %zu bytes at %#llx is outside every allocation\n", what, bytes, p);
    return CUDA_ERROR_INVALID_VALUE;
}

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

extern "C" {

// --- Driver, device, context ---
CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return CUDA_SUCCESS; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return CUDA_ERROR_INVALID_VALUE; *d = 0; return CUDA_SUCCESS; }
CUresult cuDeviceGetName(char* name, int len, int) {
    snprintf(name, len, "CPU emulation (kernels/emu)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, int) { *bytes = kMemory; return CUDA_SUCCESS; }
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    switch (attr) {
        case 1: *v = 1024; break;             // max threads per block
        case 2: *v = 1024; break;             // block dim x
        case 3: *v = 1024; break;             // block dim y
        case 4: *v = 64; break;               // block dim z
        case 5: *v = 2147483647; break;       // grid dim x
        case 6: case 7: *v = 65535; break;    // grid dim y, z
        case 8: *v = kDefaultSmem; break;     // shared memory per block
        case 10: *v = 32; break;              // warp size
        case 13: *v = 1410000; break;         // clock rate (kHz)
        case 16: *v = kSms; break;            // multiprocessors
        case 36: *v = 1593000; break;         // memory clock (kHz)
        case 37: *v = 5120; break;            // bus width
        case 38: *v = 40 << 20; break;        // L2 bytes
        case 39: *v = 2048; break;            // threads per SM
        case 75: *v = cc_major(); break;      // compute capability
        case 76: *v = 0; break;
        case 81: *v = 164 * 1024; break;      // shared memory per SM
        case 82: *v = 65536; break;           // registers per SM
        case 97: *v = max_smem_optin(); break;  // shared memory per block, opt-in
        case 106: *v = 32; break;             // blocks per SM
        case 115: *v = 1; break;              // memory pools supported
        default: *v = 0;
    }
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &dummy_ctx; return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void*) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(void** ctx) { *ctx = &dummy_ctx; return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent_v2(void*) { return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(void** ctx) { if (ctx) *ctx = &dummy_ctx; return CUDA_SUCCESS; }
CUresult cuCtxGetDevice(int* d) { *d = 0; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }
CUresult cuGetErrorString(CUresult e, const char** s) {
    switch (e) {
        case CUDA_SUCCESS: *s = "no error"; break;
        case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument (emulated GPU; see its message above)"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory (emulated GPU)"; break;
        case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found (emulated GPU)"; break;
        case CUDA_ERROR_NOT_SUPPORTED: *s = "operation not supported on the emulated GPU"; break;
        default: *s = "unspecified error (emulated GPU)";
    }
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult e, const char** s) { return cuGetErrorString(e, s); }

// --- Streams and events: everything has completed when its call returns ---
CUresult cuStreamCreate(void** s, unsigned) { *s = new int(0); return CUDA_SUCCESS; }
CUresult cuStreamCreateWithFlags(void** s, unsigned f) { return cuStreamCreate(s, f); }
CUresult cuStreamDestroy_v2(void* s) { delete static_cast<int*>(s); return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(void*) { return CUDA_SUCCESS; }
CUresult cuStreamQuery(void*) { return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return CUDA_SUCCESS; }
CUresult cuEventCreate(void** e, unsigned) { *e = new double(now_ms()); return CUDA_SUCCESS; }
CUresult cuEventRecord(void* e, void*) { *static_cast<double*>(e) = now_ms(); return CUDA_SUCCESS; }
CUresult cuEventRecordWithFlags(void* e, void* s, unsigned) { return cuEventRecord(e, s); }
CUresult cuEventSynchronize(void*) { return CUDA_SUCCESS; }
CUresult cuEventQuery(void*) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) { *ms = float(*static_cast<double*>(b) - *static_cast<double*>(a)); return CUDA_SUCCESS; }
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { return cuEventElapsedTime(ms, a, b); }
CUresult cuEventDestroy_v2(void* e) { delete static_cast<double*>(e); return CUDA_SUCCESS; }

// --- Memory ---
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return allocate(p, bytes); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void*) { return allocate(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, void*) { return release(p); }
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> g(mu);
    *total = kMemory;
    *free_bytes = kMemory > used ? kMemory - used : 0;
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, void*) {
    if (CUresult r = in_bounds("host-to-device copy", dst, bytes)) return r;
    memcpy((void*)(uintptr_t)dst, src, bytes);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) { return cuMemcpyHtoDAsync_v2(dst, src, bytes, nullptr); }
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, void*) {
    if (CUresult r = in_bounds("device-to-host copy", src, bytes)) return r;
    memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) { return cuMemcpyDtoHAsync_v2(dst, src, bytes, nullptr); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void*) {
    if (CUresult r = in_bounds("device-to-device copy (source)", src, bytes)) return r;
    if (CUresult r = in_bounds("device-to-device copy (destination)", dst, bytes)) return r;
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) { return cuMemcpyDtoDAsync_v2(dst, src, bytes, nullptr); }
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void*) {
    if (CUresult r = in_bounds("memset", dst, n)) return r;
    memset((void*)(uintptr_t)dst, v, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { return cuMemsetD8Async(dst, v, n, nullptr); }
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, void*) {
    if (CUresult r = in_bounds("memset", dst, 4 * n)) return r;
    for (size_t i = 0; i < n; ++i) memcpy((char*)(uintptr_t)dst + 4 * i, &v, 4);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) { return cuMemsetD32Async(dst, v, n, nullptr); }
CUresult cuDeviceGetDefaultMemPool(void** pool, int) { *pool = &dummy_pool; return CUDA_SUCCESS; }
CUresult cuMemPoolSetAttribute(void*, int, void*) { return CUDA_SUCCESS; }
CUresult cuMemPoolTrimTo(void*, size_t) { return CUDA_SUCCESS; }
CUresult cuMemPoolGetAttribute(void*, int attr, void* value) {
    std::lock_guard<std::mutex> g(mu);
    uint64_t v = 0;
    switch (attr) {
        case 4: v = UINT64_MAX; break;               // release threshold
        case 5: case 7: v = used; break;             // reserved, used (current)
        case 6: case 8: v = used_high; break;        // reserved, used (high)
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    memcpy(value, &v, 8);
    return CUDA_SUCCESS;
}

// --- Modules and launches ---
CUresult cuModuleLoadData(void** module, const void*) { *module = &dummy_module; return CUDA_SUCCESS; }
CUresult cuModuleUnload(void*) { return CUDA_SUCCESS; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
    *f = new Function{name, emu_find_entry(name)};
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(void* f, int attr, int value) {
    if (attr == 8) {  // max dynamic shared memory
        if (value > max_smem_optin()) return CUDA_ERROR_INVALID_VALUE;
        static_cast<Function*>(f)->max_dynamic_smem = value;
    }
    return CUDA_SUCCESS;
}
CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
    *v = attr == 8 ? static_cast<Function*>(f)->max_dynamic_smem : 0;
    return CUDA_SUCCESS;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void*, int threads, size_t smem) {
    *n = std::max(1, std::min<int>(2048 / std::max(threads, 1), smem ? int(max_smem_optin() / smem) : 32));
    return CUDA_SUCCESS;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, void* f, int threads, size_t smem, unsigned) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, threads, smem);
}
CUresult cuLaunchKernel(void* fp, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, void*, void** params, void** extra) {
    const Function* f = static_cast<Function*>(fp);
    const char* bad = nullptr;
    if (!f->entry) bad = "not emulated";
    else if (extra) bad = "launched with `extra` arguments";
    else if ((size_t)gx * gy * gz == 0 || (size_t)bx * by * bz == 0) bad = "an empty grid or block";
    else if (gy > 65535 || gz > 65535 || bx > 1024 || by > 1024 || bz > 64 || bx * by * bz > 1024) bad = "a grid or block past the limits";
    else if ((bx * by * bz) % 32 != 0) bad = "a block that is not whole warps (the emulation needs them)";
    else if ((int)smem > f->max_dynamic_smem) bad = "more dynamic shared memory than the function's attribute allows";
    if (bad) {
        fprintf(stderr, "emulated GPU: launch of %s grid (%u, %u, %u) block (%u, %u, %u) smem %u: %s\n", f->name.c_str(), gx, gy, gz, bx, by, bz, smem, bad);
        return CUDA_ERROR_INVALID_VALUE;
    }
    static std::mutex one_at_a_time;  // the emulation's grid state is global, as the stream is in-order
    std::lock_guard<std::mutex> g(one_at_a_time);
    f->entry(gx, gy, gz, bx, by, bz, smem, params);
    return CUDA_SUCCESS;
}
// The maps matmul v6 asks for (kernels/src/tma.rs): 2-D bf16, 128-byte swizzle, written in the
// form the TMA stand-in of emu/hopper.h reads (EmuTensorMap, in the map's first bytes).
CUresult cuTensorMapEncodeTiled(void* map, int dtype, unsigned rank, void* address, const unsigned long long* dims, const unsigned long long* strides,
                                const unsigned* box, const unsigned* element_strides, int interleave, int swizzle, int, int) {
    const char* bad = nullptr;
    if (cc_major() != 9) bad = "TMA needs an sm_90 (IGPT_EMU_CC=90)";
    else if (dtype != 9 || rank != 2 || interleave != 0 || swizzle != 3) bad = "only 2-D bf16 maps, 128-byte swizzle, no interleave are emulated";
    else if (element_strides[0] != 1 || element_strides[1] != 1) bad = "element strides other than 1";
    else if (dims[0] == 0 || dims[1] == 0) bad = "an empty tensor";
    else if ((uintptr_t)address % 16 || strides[0] % 16) bad = "the address and row stride must be multiples of 16 bytes";
    else if (in_bounds("tensor map", (CUdeviceptr)(uintptr_t)address, (dims[1] - 1) * strides[0] + 2 * dims[0])) bad = "the tensor is not inside one allocation";
    if (bad) {
        fprintf(stderr, "emulated GPU: cuTensorMapEncodeTiled: %s\n", bad);
        return CUDA_ERROR_INVALID_VALUE;
    }
    const EmuTensorMap m{static_cast<const unsigned short*>(address), dims[0], dims[1], strides[0], box[0], box[1]};
    memset(map, 0, 128);
    memcpy(map, &m, sizeof m);
    return CUDA_SUCCESS;
}

// --- NVRTC: every program compiles, to a placeholder the module loader ignores ---
struct Program {
    std::string name;
};
nvrtcResult nvrtcVersion(int* major, int* minor) { *major = 0; *minor = 0; return 0; }
nvrtcResult nvrtcCreateProgram(void** prog, const char*, const char* name, int, const char* const*, const char* const*) {
    *prog = new Program{name ? name : "program"};
    return 0;
}
nvrtcResult nvrtcDestroyProgram(void** prog) { delete static_cast<Program*>(*prog); *prog = nullptr; return 0; }
nvrtcResult nvrtcCompileProgram(void*, int, const char* const*) { return 0; }
static std::string placeholder(void* prog) { return "// emulated: " + static_cast<Program*>(prog)->name + "\n"; }
nvrtcResult nvrtcGetPTXSize(void* prog, size_t* n) { *n = placeholder(prog).size() + 1; return 0; }
nvrtcResult nvrtcGetPTX(void* prog, char* out) { const std::string s = placeholder(prog); memcpy(out, s.c_str(), s.size() + 1); return 0; }
nvrtcResult nvrtcGetProgramLogSize(void*, size_t* n) { *n = 1; return 0; }
nvrtcResult nvrtcGetProgramLog(void*, char* out) { out[0] = 0; return 0; }
const char* nvrtcGetErrorString(nvrtcResult) { return "NVRTC (emulated)"; }

}  // extern "C"

// --- The kernel registry (emu_entries.h) ---
static std::map<std::string, EmuEntry>& registry() {
    static std::map<std::string, EmuEntry> r;  // built by the kernel units' static initializers
    return r;
}
void emu_register(const char* name, EmuEntry entry) { registry()[name] = entry; }
EmuEntry emu_find_entry(const char* name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second;
}
