//! The heap bytes live, counted by the allocator itself: exact and
//! independent of timing, unlike RSS. A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: stampede_heap::Counting = stampede_heap::Counting;
//! ```
//!
//! and reads [`live`]. Threads that run the other side of what is measured
//! (a server, its clients) call [`uncounted`] first, so only one side's
//! bytes are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// Counts the bytes live on every thread but the ones that opted out.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Heap bytes live now, on the threads counted.
pub fn live() -> isize {
    LIVE.load(Relaxed)
}

/// This thread's allocations are not counted from now on.
pub fn uncounted() {
    UNCOUNTED.set(true);
}

fn counted() -> bool {
    // A thread being torn down has no thread-locals left: not counted.
    !UNCOUNTED.try_with(Cell::get).unwrap_or(true)
}

// SAFETY: every call goes straight to `System`; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}
