//! What a piece of code costs: wall time and the peak of the heap it
//! allocated, counted per thread (the tests run in parallel), by a global
//! allocator that wraps the system's in the lib's test binary.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::{Duration, Instant},
};

struct Counting;

thread_local! {
    /// Bytes this thread has allocated and not freed (frees of another
    /// thread's allocations make it lower), and its peak.
    static IN_USE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn add(delta: i64) {
    // `try_with`: nothing is counted while a thread's locals are torn down.
    let _ = IN_USE.try_with(|used| {
        let now = used.get() + delta;
        used.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

// SAFETY: every call is handed to the system allocator unchanged; the
// counting touches only const-initialised thread locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(i64::try_from(new_size).unwrap_or(i64::MAX) - size(layout));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// What `f` cost on this thread.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub took: Duration,
    /// The most heap held at once above what was held before, in bytes.
    pub peak: u64,
}

/// Runs `f`, and says what it cost.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let before = IN_USE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let peak = PEAK.with(Cell::get) - before;
    (
        out,
        Cost {
            took,
            peak: u64::try_from(peak).unwrap_or(0),
        },
    )
}

/// Checks that `cost` (of reading `size` bytes) stayed within `time` and
/// `memory` bytes of heap; prints it.
pub fn check_cost(size: usize, cost: Cost, time: Duration, memory: u64) {
    println!(
        "{size} bytes: {:?}, heap peak {} bytes",
        cost.took, cost.peak
    );
    assert!(cost.took < time, "took {:?} (bound {time:?})", cost.took);
    assert!(
        cost.peak < memory,
        "heap peaked at {} bytes (bound {memory})",
        cost.peak
    );
}
