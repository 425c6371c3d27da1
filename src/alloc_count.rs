//! A global allocator that counts the heap each thread holds, for tests that measure bytes per
//! message (SPEC §8, §14) instead of computing them from a formula that cannot exceed its
//! budget. Install it with `#[global_allocator] static A: Counting = Counting;` — the library's
//! own unit tests do, and so does `tests/tracked_state.rs`. Counting per thread keeps tests
//! running in parallel from disturbing each other; measure on the thread that allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator and counts sizes.
pub struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = NET.try_with(|n| n.set(n.get() + delta));
}

/// Heap bytes this thread has allocated and not freed (since it started, under [`Counting`];
/// always 0 without it). Differences between two calls are what a piece of code kept.
pub fn net() -> isize {
    NET.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - l.size() as isize);
        System.realloc(p, l, new_size)
    }
}

#[cfg(test)]
#[global_allocator]
static ALLOC: Counting = Counting;
