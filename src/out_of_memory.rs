//! Allocation failure as ERROR 53200 rather than the end of the server's sessions.
//!
//! Stable Rust ends the process when an allocation fails (the hook that could do otherwise is unstable), and a
//! backend that ends that way makes the postmaster reset every session. The engine checks the sizes inputs,
//! configs and options choose against the call's budget before it allocates them (engine::budget); this is for
//! the failure no check foresaw. The process's allocator keeps a reserve of address space, mapped but never
//! touched (no resident memory; under strict overcommit it is counted against the commit limit, where it must
//! be to help). When an allocation fails, it gives the reserve back to the kernel and tries once more; the call
//! is then stopped with ERROR 53200 at its next check for interrupts, which frees what it holds, and the next
//! call takes the reserve again, or is refused up front with 53200 while memory is still short.
//!
//! An allocation that fails even then (larger than the reserve and what was left) makes Rust abort. The backend
//! catches that abort (SIGABRT) and ends with FATAL 53200 instead: its transaction is rolled back and it exits as
//! a backend whose client went away does, so the postmaster leaves the other sessions alone. Only an abort that
//! follows a failed allocation in the backend's own thread is caught; any other (a failed assertion in
//! PostgreSQL, an abort in a compute thread) still ends the process as before, and the server resets.

use crate::engine::error::{AiError, ErrorKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Enough for the allocations of one step of the models pg_ai runs, which the budget does not count one by one.
const RESERVE_BYTES: usize = 64 << 20;

static RESERVE: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());
/// Set when the reserve was given back for a failed allocation, until the next call takes it again.
static SPENT: AtomicBool = AtomicBool::new(false);
/// The size of an allocation that failed for good during this call (0: none), for the abort that follows.
static FAILED: AtomicUsize = AtomicUsize::new(0);
/// The backend's own thread, where PostgreSQL's error reporting may run.
static BACKEND_THREAD: OnceLock<libc::pthread_t> = OnceLock::new();

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

/// `allocate` (of `size` bytes), tried again once the reserve is given back if it failed.
fn with_reserve(size: usize, allocate: impl Fn() -> *mut u8) -> *mut u8 {
    let mut block = allocate();
    if block.is_null() && release() {
        block = allocate();
    }
    if block.is_null() {
        FAILED.store(size.max(1), Ordering::Release);
    }
    block
}

// SAFETY: every call goes to System with the caller's arguments; a retry after a failure repeats a call that
// changed nothing (a failed realloc leaves the block as it was).
unsafe impl GlobalAlloc for WithReserve {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        with_reserve(layout.size(), || System.alloc(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        with_reserve(layout.size(), || System.alloc_zeroed(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        with_reserve(new_size, || System.realloc(ptr, layout, new_size))
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
    // A failure a caller handled itself (try_reserve) says nothing about the aborts of later calls.
    FAILED.store(0, Ordering::Release);
    BACKEND_THREAD.get_or_init(|| {
        catch_aborts();
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() }
    });
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

/// Installs `on_abort` for SIGABRT in this process (a backend or background worker: `prepare` runs in no other).
fn catch_aborts() {
    // SAFETY: a zeroed sigaction with the handler set and an empty mask is a valid argument.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

/// SIGABRT: FATAL 53200 if the abort follows a failed allocation in the backend's thread. Otherwise it returns,
/// and abort() goes on to end the process as if no handler were set.
extern "C" fn on_abort(_signal: libc::c_int) {
    // Taken, not read: should the report below fail to allocate too, the abort that follows is not caught again.
    let size = FAILED.swap(0, Ordering::AcqRel);
    // SAFETY: pthread_self and pthread_equal have no preconditions.
    let backend = BACKEND_THREAD.get().is_some_and(|&t| unsafe { libc::pthread_equal(t, libc::pthread_self()) != 0 });
    if size == 0 || !backend {
        return;
    }
    // The abort came from Rust's handler for a failed allocation, raised synchronously in this thread: not
    // inside malloc or PostgreSQL's own code, so reporting and exiting are safe here. FATAL does not return;
    // it rolls the transaction back and exits the process with status 1, which the postmaster takes as the end
    // of one session, not a crash. The reserve was given back (for this failure or an earlier one of the call),
    // which leaves the report some memory.
    let message = format!("pg_ai could not allocate {} and ended this session", crate::engine::budget::size(size));
    pgrx::pg_sys::panic::ErrorReport::new(pgrx::PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, message, "pg_ai")
        .set_hint(
            "The server's other sessions go on. Lower pg_ai.max_memory_per_call so that sizes are refused before \
             they are allocated, or give the server more memory.",
        )
        .report(pgrx::PgLogLevel::FATAL);
}

/// Whether this process holds its reserve.
#[cfg(any(test, feature = "pg_test"))]
pub fn held() -> bool {
    !RESERVE.load(Ordering::Acquire).is_null()
}
