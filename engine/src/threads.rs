//! The compute threads of one backend. candle parallelises matrix products over rayon's global pool
//! and sizes its kernels by RAYON_NUM_THREADS; both are fixed at a backend's first model call, so
//! many connections need not each claim every core.

use std::sync::Once;

static CONFIGURE: Once = Once::new();

/// The environment variable candle reads, when its barrier pool starts, for the threads it has (the caller's
/// own among them).
const BARRIER_THREADS: &str = "CANDLE_NUM_THREADS";

/// Sets the thread count once per process; 0 means one per core. Later calls change nothing.
pub fn configure(threads: usize) {
    CONFIGURE.call_once(|| {
        let n = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        // SAFETY: called before any compute thread exists, from the single-threaded backend.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        // candle's barrier pool (its quantized products and element-wise ops on large tensors) has its threads
        // and its caller wait for each other by spinning: beside any other busy process a spinning thread holds
        // the core its partner needs, and generation slowed tenfold (benches/fairness.sh). Without workers the
        // pool runs each op on the calling thread; pg_ai splits quantized products over rayon itself
        // (engine::kernels::row_parts). An administrator's own value, set for the server, stays.
        if std::env::var_os(BARRIER_THREADS).is_none() {
            // SAFETY: as above, before any thread that reads the environment exists.
            unsafe { std::env::set_var(BARRIER_THREADS, "1") };
        }
        // An error means the pool already exists (another caller won); the env var still applies.
        // Stacks as large as a backend's own (Linux's default 8 MiB): whole forward passes and candle's recursive
        // backward pass run on these threads (in_pool), not only the kernels. Untouched stack costs no memory.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .stack_size(8 << 20)
            .start_handler(|_| leave_signals_to_the_backend())
            .build_global();
    });
}

/// Blocks, in a compute thread, the signals sent to the process (Postgres's cancel, terminate, timeouts), so that
/// the kernel delivers them to the backend's own thread, where Postgres's handlers expect to run. Faults a thread
/// causes itself stay unblocked: blocked, they would kill the process without a handler.
pub fn leave_signals_to_the_backend() {
    // SAFETY: plain libc calls on a local signal set; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for fault in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut set, fault);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Runs `f` on one of the compute threads and waits for it. A forward pass hands the pool many small parallel steps (a
/// generated token some 50 matrix-vector products, a short text's embedding some 100 products and element-wise ops);
/// run from the backend's own thread, every step wakes the pool and puts the backend thread to sleep until it is done,
/// where from a compute thread the caller works on and wakes one other. Measured on this 2-core machine: a single
/// MiniLM embed 7.5 -> 5.9 ms in f32 and 2.5 -> 1.1 ms in int8, f32 generation of GPT-2 and SmolLM2 size 7% and 12%
/// more tokens/s (throwaway loops over the benches' models), training steps 6% (MLM), 9% (CLM) and 19% (seq2seq) more
/// tokens/s (`cargo bench -p pg_ai_engine --bench train`). `f` must not call Postgres (it runs on another thread):
/// callers wrap the model's arithmetic only, and check for interrupts outside.
pub fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| f())
}
