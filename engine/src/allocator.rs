//! How much freed memory a process keeps for reuse. glibc's malloc gives blocks of more than 128 kB back to the
//! kernel as soon as they are freed, and trims the heap above 128 kB of free space. A tensor op's output is
//! often megabytes, so each op then pays fresh page faults and, with compute threads running, TLB shootdowns:
//! perf put a third of a training step there (engine/benches/train.rs, 2 cores). Keeping up to 128 MB of freed memory
//! made training 1.4x faster; 256 MB gained little more.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The default: enough for the activations of the models pg_ai trains and runs on CPU.
pub const DEFAULT_KEEP_FREED: usize = 128 << 20;

/// Largest block served from the heap rather than its own mapping.
const MAX_HEAP_BLOCK: usize = 64 << 20;

static APPLIED: AtomicUsize = AtomicUsize::new(0);

/// Keeps up to `bytes` of freed memory in this process for reuse; 0 leaves glibc's own behaviour (applied
/// before, it stays). Cheap to call again with the same value. Call it before the compute threads start
/// (engine::threads::configure): set afterwards it helps less, for reasons glibc does not document.
pub fn keep_freed_memory(bytes: usize) {
    if bytes == 0 || APPLIED.swap(bytes, Ordering::Relaxed) == bytes {
        return;
    }
    let clamp = |n: usize| n.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: mallopt only changes malloc's thresholds; a refused value leaves the old one.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, clamp(bytes.min(MAX_HEAP_BLOCK)));
        libc::mallopt(libc::M_TRIM_THRESHOLD, clamp(bytes));
    }
}

/// Gives the freed memory this process keeps back to the kernel. Loading a model frees f32 copies of its weights
/// (those read from the files, those quantised), up to the whole model: kept, they would stay in the backend's
/// memory, which `keep_freed_memory` is not for.
pub fn give_back_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of malloc's heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
