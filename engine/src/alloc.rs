//! A global allocator that keeps freed large blocks for reuse.
//!
//! glibc serves blocks above its mmap threshold with fresh `mmap`s and gives them back with
//! `munmap` on free, so every training step page-faults its activations, logits and gradients in
//! again (4 KiB at a time, with TLB-shootdown IPIs on unmap): a third of a `tiny` train step on a
//! 2-core machine. This allocator keeps up to [`CACHE_BYTES`] of freed blocks of at least
//! [`MIN_BLOCK`] bytes, in size classes of 1/8 of a power of two, and hands them out again: after
//! the first step, a step's big buffers come back already mapped. Smaller blocks go straight to
//! the system allocator.
//!
//! Opt in per binary: `#[global_allocator] static A: engine::alloc::CachingAlloc = engine::alloc::CachingAlloc;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks below this size are not cached.
pub const MIN_BLOCK: usize = 1 << 20;
/// Most bytes kept in freed blocks.
pub const CACHE_BYTES: usize = 3 << 30;
const SLOTS: usize = 256;
/// Alignment of every cached block (requests for more pass through).
const ALIGN: usize = 64;

pub struct CachingAlloc;

struct Cache {
    /// (pointer, class size); null pointer = free slot.
    slots: [(*mut u8, usize); SLOTS],
    bytes: usize,
}

struct Locked {
    busy: AtomicBool,
    cache: UnsafeCell<Cache>,
}

// SAFETY: `cache` is only touched while `busy` is held.
unsafe impl Sync for Locked {}

static CACHE: Locked =
    Locked { busy: AtomicBool::new(false), cache: UnsafeCell::new(Cache { slots: [(std::ptr::null_mut(), 0); SLOTS], bytes: 0 }) };

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    while CACHE.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    // SAFETY: we hold the lock; `f` does not allocate.
    let r = f(unsafe { &mut *CACHE.cache.get() });
    CACHE.busy.store(false, Ordering::Release);
    r
}

/// Size class of a large request: rounded up to 1/8 of its power of two (at most 12.5% slack).
fn class(size: usize) -> usize {
    let below = 1usize << (usize::BITS - 1 - size.leading_zeros());
    let step = (below / 8).max(4096);
    size.next_multiple_of(step)
}

fn cached(layout: &Layout) -> bool {
    layout.size() >= MIN_BLOCK && layout.align() <= ALIGN
}

fn take(size: usize) -> *mut u8 {
    with_cache(|c| {
        for s in c.slots.iter_mut() {
            if !s.0.is_null() && s.1 == size {
                let p = s.0;
                *s = (std::ptr::null_mut(), 0);
                c.bytes -= size;
                return p;
            }
        }
        std::ptr::null_mut()
    })
}

/// Keeps the block if there is room; false: the caller frees it.
fn keep(p: *mut u8, size: usize) -> bool {
    with_cache(|c| {
        if c.bytes + size > CACHE_BYTES {
            return false;
        }
        for s in c.slots.iter_mut() {
            if s.0.is_null() {
                *s = (p, size);
                c.bytes += size;
                return true;
            }
        }
        false
    })
}

/// Frees every cached block (e.g. before a phase that needs the memory elsewhere).
pub fn release_cached() {
    let mut blocks = [(std::ptr::null_mut::<u8>(), 0usize); SLOTS];
    with_cache(|c| {
        blocks = c.slots;
        c.slots = [(std::ptr::null_mut(), 0); SLOTS];
        c.bytes = 0;
    });
    for (p, size) in blocks {
        if !p.is_null() {
            // SAFETY: every cached block came from System with this layout.
            unsafe { System.dealloc(p, Layout::from_size_align_unchecked(size, ALIGN)) };
        }
    }
}

unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cached(&layout) {
            // SAFETY: forwarded.
            return unsafe { System.alloc(layout) };
        }
        let size = class(layout.size());
        let p = take(size);
        if !p.is_null() {
            return p;
        }
        // SAFETY: size > 0, ALIGN is a power of two.
        unsafe { System.alloc(Layout::from_size_align_unchecked(size, ALIGN)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cached(&layout) {
            // SAFETY: forwarded.
            return unsafe { System.alloc_zeroed(layout) };
        }
        let size = class(layout.size());
        let p = take(size);
        if !p.is_null() {
            // SAFETY: the block holds at least layout.size() bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as in alloc; fresh pages from the system are already zero.
        unsafe { System.alloc_zeroed(Layout::from_size_align_unchecked(size, ALIGN)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !cached(&layout) {
            // SAFETY: forwarded.
            return unsafe { System.dealloc(ptr, layout) };
        }
        let size = class(layout.size());
        if !keep(ptr, size) {
            // SAFETY: allocated by System with this layout (see alloc).
            unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(size, ALIGN)) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc::realloc's contract.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            if !cached(&layout) && !cached(&new) {
                return System.realloc(ptr, layout, new_size);
            }
            if cached(&layout) && cached(&new) && class(layout.size()) == class(new_size) {
                return ptr;
            }
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_requests_with_bounded_slack() {
        for size in [MIN_BLOCK, MIN_BLOCK + 1, 3 << 20, 205_852_672, (1 << 30) + 5] {
            let c = class(size);
            assert!(c >= size && c as f64 <= size as f64 * 1.126, "{size} -> {c}");
            assert_eq!(class(c), c);
        }
    }

    #[test]
    fn blocks_round_trip_through_the_cache() {
        let a = CachingAlloc;
        unsafe {
            let l = Layout::from_size_align(5 << 20, 32).unwrap();
            let p = a.alloc(l);
            assert!(!p.is_null() && (p as usize).is_multiple_of(32));
            p.write_bytes(7, l.size());
            a.dealloc(p, l);
            let q = a.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(q, l.size()).iter().all(|&b| b == 0));
            let r = a.realloc(q, l, 9 << 20);
            assert!(!r.is_null());
            a.dealloc(r, Layout::from_size_align(9 << 20, 32).unwrap());
            // Small blocks pass through.
            let s = Layout::from_size_align(100, 8).unwrap();
            let p = a.alloc(s);
            a.dealloc(a.realloc(p, s, 200), Layout::from_size_align(200, 8).unwrap());
        }
        release_cached();
    }
}
