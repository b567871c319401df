//! Undoing what a statement did outside the database (a model directory written out, a model loaded) when its
//! work does not commit: the whole transaction aborts, or a savepoint it ran under is rolled back.

use pgrx::{pg_sys, PgSubXactCallbackEvent, PgXactCallbackEvent};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

type Undo = Mutex<Option<Box<dyn FnOnce()>>>;

/// Runs `undo` once if the work of the current (sub)transaction does not commit. A savepoint released passes the
/// work on to the enclosing one, as PostgreSQL does with its own resources.
pub fn on_rollback(undo: impl FnOnce() + 'static) {
    let undo: Rc<Undo> = Rc::new(Mutex::new(Some(Box::new(undo))));
    let run = |undo: &Undo| {
        if let Some(f) = undo.lock().ok().and_then(|mut u| u.take()) {
            f()
        }
    };
    let whole = undo.clone();
    pgrx::register_xact_callback(PgXactCallbackEvent::Abort, move || run(&whole));
    // SAFETY: reads the id of the current subtransaction (the top-level one outside any savepoint).
    let owner = Rc::new(AtomicU32::new(unsafe { pg_sys::GetCurrentSubTransactionId() }));
    let passed_on = owner.clone();
    pgrx::register_subxact_callback(PgSubXactCallbackEvent::CommitSub, move |mine, parent| {
        let _ = passed_on.compare_exchange(mine, parent, Ordering::Relaxed, Ordering::Relaxed);
    });
    pgrx::register_subxact_callback(PgSubXactCallbackEvent::AbortSub, move |mine, _| {
        if owner.load(Ordering::Relaxed) == mine {
            run(&undo)
        }
    });
}
