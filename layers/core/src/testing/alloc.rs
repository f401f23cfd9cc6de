//! A counting global allocator for "no allocation per request" tests.
//!
//! It wraps the system allocator and counts the allocations (and reallocations) made by each
//! thread, so a test can measure its own thread's work while the harness's other threads
//! allocate as they like:
//!
//! ```no_run
//! use tollgate_core::testing::alloc::{Counting, thread_allocations};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! let before = thread_allocations();
//! let sum: u64 = (0..100).sum(); // the work under test
//! assert_eq!(thread_allocations() - before, 0, "{sum}");
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations made by every thread of the process.
static PROCESS: AtomicU64 = AtomicU64::new(0);

/// Allocations made by the current thread since it started (0 unless [`Counting`] is the
/// global allocator).
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made by every thread of the process since it started (0 unless [`Counting`] is
/// the global allocator): for work that runs on threads the test does not own, such as a
/// server's workers, measured while the test's own threads allocate nothing.
pub fn process_allocations() -> u64 {
    // Relaxed: a count read after the work it measures has been observed to finish.
    PROCESS.load(Ordering::Relaxed)
}

fn count() {
    // `try_with`: allocations happen while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    // Relaxed: a statistic.
    PROCESS.fetch_add(1, Ordering::Relaxed);
}

/// The system allocator, counting each thread's allocations; install it with
/// `#[global_allocator]` in a test binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; counting touches a thread-local `Cell`, no memory
// handed out, and a const-initialised thread local does not allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
