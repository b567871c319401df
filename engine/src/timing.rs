//! Where a call's time goes: tokenising, the model's forward passes, and decoding its output into text.
//! The engine adds to per-thread counters as it works; the SQL layer reads them once per call
//! (`pg_ai.timing = on`). Reading a clock costs tens of nanoseconds, so the counters are always on.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Tokenize,
    Forward,
    Decode,
}

thread_local! {
    static SPENT: Cell<[Duration; 3]> = const { Cell::new([Duration::ZERO; 3]) };
}

/// Runs `f`, counting its time under `phase`.
pub fn time<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    SPENT.with(|s| {
        let mut spent = s.get();
        spent[phase as usize] += started.elapsed();
        s.set(spent);
    });
    out
}

/// The time counted since the last call, per phase (tokenize, forward, decode), and zeroes the counters.
pub fn take() -> [Duration; 3] {
    SPENT.with(|s| s.replace([Duration::ZERO; 3]))
}

/// A model's forward pass: timed under Forward, and run on the compute threads (threads::in_pool says why).
pub fn forward<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    time(Phase::Forward, || crate::threads::in_pool(f))
}
