// The emulated GPU's kernel registry (driver_api.cpp): each kernel translation unit that
// `instructgpt kernels emulate` generates registers its module's entry points by name at load,
// each as a function that unpacks cuLaunchKernel's argument array into the kernel's own
// parameter types (deduced from the entry's signature, so no list is repeated) and runs the grid.
#pragma once
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "emu.h"

typedef void (*EmuEntry)(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, void** params);

// The registry: name -> entry (null for a name nothing registered).
EmuEntry emu_find_entry(const char* name);
void emu_register(const char* name, EmuEntry entry);

// One argument, copied out of cuLaunchKernel's array: the caller's copy may be less aligned
// than the kernel's type (a tensor map: 64 in cudarc, 128 in the kernel).
template <typename T>
inline T emu_arg(const void* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <typename... A, size_t... I>
inline void emu_call(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(emu_arg<std::remove_cv_t<A>>(params[I])...);
}

// One launch: the dynamic shared memory exactly as large as asked (on a 1024-byte boundary, as
// the Hopper kernels align it), the blocks in turn.
template <typename... A>
inline void emu_run(void (*kernel)(A...), unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, void** params) {
    void* dynamic = smem ? std::aligned_alloc(1024, (smem + 1023) / 1024 * 1024) : nullptr;
    emu_dynamic_smem = dynamic;
    emu_launch(dim3{gx, gy, gz}, dim3{bx, by, bz}, [&] { emu_call(kernel, params, std::index_sequence_for<A...>{}); });
    emu_dynamic_smem = nullptr;
    std::free(dynamic);
}
