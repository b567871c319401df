//! pg_ai's own queries on Citus, which needs two settings for them.
//!
//! `ai_distribute_models()` makes `ai.models`, `ai.model_files` and `ai.model_users` reference tables: a copy on
//! every node, written on all of them in one two-phase commit. A model call that Citus pushes to a worker runs
//! inside a query on a shard, where Citus refuses any further query on one of its tables ("cannot execute a
//! distributed query from a query on a shard") because a sharded table read there may miss rows after a shard
//! move. A reference table has all its rows on every node, so pg_ai lifts that check for its catalog reads.
//!
//! Training registers its model in those reference tables in the transaction that read the source; after a
//! read of a distributed table over several connections per worker, Citus refuses that write, so the read of
//! a training source takes one connection per worker.

use pgrx::pg_sys;
use std::ffi::CStr;

/// Runs `f`, which reads only pg_ai's catalog, with Citus's nested execution allowed where Citus is loaded.
pub fn reading_catalog<T>(f: impl FnOnce() -> T) -> T {
    with_setting(c"citus.allow_nested_distributed_execution", c"on", f)
}

/// Runs `f`, which reads a training source, on one connection per Citus worker where Citus is loaded.
pub fn reading_training_source<T>(f: impl FnOnce() -> T) -> T {
    with_setting(c"citus.multi_shard_modify_mode", c"sequential", f)
}

/// Runs `f` with the setting `name` at `value` where it exists (Citus is loaded); the setting is back as it
/// was when `f` returns (or with the (sub)transaction, if `f` raises an ERROR).
fn with_setting<T>(name: &CStr, value: &CStr, f: impl FnOnce() -> T) -> T {
    // SAFETY: GetConfigOption with missing_ok reads a GUC by name without raising; NULL where it does not exist.
    let exists = unsafe { !pg_sys::GetConfigOption(name.as_ptr(), true, false).is_null() };
    if !exists {
        return f();
    }
    // SAFETY: the same GUC nest level protocol as a function's SET clause (fmgr_security_definer): a new
    // level, the value saved in it, and the level popped after the call; an ERROR in between is popped by
    // the abort of the transaction or subtransaction.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}
