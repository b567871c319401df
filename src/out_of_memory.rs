//! Allocation failure as ERROR 53200 rather than the end of the server's sessions.
//!
//! Stable Rust ends the process when an allocation fails (the hook that could do otherwise is unstable), and a
//! backend that ends that way makes the postmaster reset every session. The engine checks the sizes inputs,
//! configs and options choose against the call's budget before it allocates them (engine::budget); this is for
//! the failure no check foresaw. The process's allocator keeps a reserve of address space, mapped but never
//! touched (no resident memory; under strict overcommit it is counted against the commit limit, where it must
//! be to help). When an allocation fails, it gives the reserve back to the kernel and tries once more; the call
//! is then stopped with ERROR 53200 at its next check for interrupts, which frees what it holds, and the next
//! call takes the reserve again, or is refused up front with 53200 while memory is still short. A failed
//! allocation larger than the reserve and what was left still ends the process.

use crate::engine::error::{AiError, ErrorKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// Enough for the allocations of one step of the models pg_ai runs, which the budget does not count one by one.
const RESERVE_BYTES: usize = 64 << 20;

static RESERVE: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());
/// Set when the reserve was given back for a failed allocation, until the next call takes it again.
static SPENT: AtomicBool = AtomicBool::new(false);

/// The system allocator, with the reserve behind it.
pub struct WithReserve;

#[global_allocator]
static ALLOCATOR: WithReserve = WithReserve;

/// Gives the reserve back to the kernel; false if there was none to give.
fn release() -> bool {
    let reserve = RESERVE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if reserve.is_null() {
        return false;
    }
    // SAFETY: the mapping made in `prepare`, which nothing else holds; munmap allocates nothing.
    unsafe { libc::munmap(reserve, RESERVE_BYTES) };
    SPENT.store(true, Ordering::Release);
    true
}

/// `allocate`, tried again once the reserve is given back if it failed.
fn with_reserve(allocate: impl Fn() -> *mut u8) -> *mut u8 {
    let first = allocate();
    if !first.is_null() || !release() {
        return first;
    }
    allocate()
}

// SAFETY: every call goes to System with the caller's arguments; a retry after a failure repeats a call that
// changed nothing (a failed realloc leaves the block as it was).
unsafe impl GlobalAlloc for WithReserve {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        with_reserve(|| System.alloc(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        with_reserve(|| System.alloc_zeroed(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        with_reserve(|| System.realloc(ptr, layout, new_size))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn out_of_memory(message: &str) -> AiError {
    AiError::new(ErrorKind::OutOfMemory, message).with_hint(
        "Give smaller or fewer inputs, lower pg_ai.max_memory_per_call so that sizes are refused before they are \
         allocated, or give the server more memory.",
    )
}

/// Before a call's work: takes the reserve if this process does not hold it (53200 if memory is too short).
pub fn prepare() {
    if !RESERVE.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: a fresh private anonymous mapping; never touched, it takes no resident memory.
    let reserve = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RESERVE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if reserve == libc::MAP_FAILED {
        crate::error::raise(out_of_memory(
            "pg_ai cannot map the memory it keeps in reserve: the server is out of memory",
        ));
    }
    RESERVE.store(reserve, Ordering::Release);
    SPENT.store(false, Ordering::Release);
}

/// Stops the call (53200) if an allocation failed during it; its memory is freed as the error unwinds.
pub fn check() {
    if SPENT.load(Ordering::Acquire) {
        crate::error::raise(out_of_memory("pg_ai ran out of memory during this call, which was stopped"));
    }
}

/// Whether this process holds its reserve.
#[cfg(any(test, feature = "pg_test"))]
pub fn held() -> bool {
    !RESERVE.load(Ordering::Acquire).is_null()
}
