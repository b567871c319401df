//! The compute threads of one backend. candle parallelises matrix products over rayon's global pool
//! and sizes its kernels by RAYON_NUM_THREADS; both are fixed at a backend's first model call, so
//! many connections need not each claim every core.

use std::sync::Once;

static CONFIGURE: Once = Once::new();

/// Sets the thread count once per process; 0 means one per core. Later calls change nothing.
pub fn configure(threads: usize) {
    CONFIGURE.call_once(|| {
        let n = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        // SAFETY: called before any compute thread exists, from the single-threaded backend.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        // An error means the pool already exists (another caller won); the env var still applies.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    });
}
