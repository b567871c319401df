//! The background worker of each derivation (ai_derive; the SQL side is sql/derivations.sql). Connected as the
//! derivation's owner, so it has exactly the owner's rights, it derives the queued rows batch by batch
//! (ai.derive_batch, a transaction each) and waits while none is due. It ends when the derivation is paused or
//! dropped. A server stop or a terminated worker rolls back the batch at hand, whose rows stay queued; with pg_ai
//! in shared_preload_libraries the launcher starts the workers of active derivations after a restart, otherwise
//! ai_resume_derivation does.

use crate::engine::error::{AiError, ErrorKind};
use crate::error::raise;
use crate::training::jobs::{cannot_run_jobs, current_database};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long a new worker waits for the transaction that declared its derivation to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(60);
/// How often an idle worker looks for queued rows.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The longest wait after a batch that failed as a whole (the table locked away, say).
const MOST_BACKOFF: Duration = Duration::from_secs(60);

/// What ai_derive and the other derivation functions in SQL call.
#[pg_schema]
mod ai {
    use super::*;

    /// Starts the worker of the caller's active derivation `id` unless one runs; true if it started one. ai_derive,
    /// ai_change_derivation and ai_resume_derivation call it.
    #[pg_extern(volatile)]
    fn start_derivation_worker(id: i64) -> bool {
        // One row whatever the id: NULLs when there is no such active derivation of the caller's.
        let found = Spi::get_two_with_args::<i64, bool>(
            "SELECT d.owner::oid::bigint, ai.derivation_worker_alive(d.pid)
             FROM (SELECT) AS one LEFT JOIN ai.derivations AS d ON d.id = $1 AND d.status = 'active'",
            &[id.into()],
        )
        .unwrap_or_else(|e| error!("cannot read ai.derivations: {e}"));
        let (Some(owner), Some(false)) = found else { return false };
        if let Some(reason) = cannot_run_jobs(owner) {
            raise(
                AiError::new(ErrorKind::Privilege, format!("{reason}, and a derivation's worker runs as its owner"))
                    .with_hint("Give the role LOGIN and CONNECT on the database."),
            );
        }
        if !try_start(id, current_database(), owner) {
            raise(
                AiError::internal("cannot start a background worker for the derivation")
                    .with_hint("All background worker slots are taken; raise max_worker_processes."),
            );
        }
        true
    }
}

/// Starts the worker of derivation `id` in database `database` (oid) as role `owner` (oid); false when no
/// worker slot is free.
pub(crate) fn try_start(id: i64, database: i64, owner: i64) -> bool {
    BackgroundWorkerBuilder::new(&format!("pg_ai derivation {id}"))
        .set_type("pg_ai derivation")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_library("pg_ai")
        .set_function("ai_derivation_main")
        .set_argument(id.into_datum())
        .set_extra(&format!("{database} {owner}"))
        .enable_spi_access()
        .load_dynamic()
        .is_ok()
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (pg_sys::die is pgrx's wrapper, not a signal handler).
    fn die(signal: std::ffi::c_int);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn ai_derivation_main(argument: pg_sys::Datum) {
    // SIGTERM (a server stop, pg_terminate_backend) ends the worker at its next interrupt check, in the middle of a
    // model call too: the batch's transaction rolls back and its rows stay queued.
    // SAFETY: installs PostgreSQL's own handler before signals are unblocked, as a worker's start does.
    unsafe {
        pg_sys::pqsignal(libc::SIGTERM as _, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    // SAFETY: the argument is the int8 derivation id that `try_start` passed.
    let Some(id) = (unsafe { i64::from_datum(argument, false) }) else { return };
    let mut oids = BackgroundWorker::get_extra().split(' ').map(|n| n.parse::<u32>().ok().map(pg_sys::Oid::from));
    let (Some(Some(database)), Some(Some(owner))) = (oids.next(), oids.next()) else { return };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), Some(owner));
    if !claim(id) {
        return;
    }
    crate::guc::apply_compute_settings();
    let mut failures = 0u32;
    loop {
        let outcome = PgTryBuilder::new(|| {
            BackgroundWorker::transaction(|| {
                Spi::get_one_with_args::<i32>("SELECT ai.derive_batch($1)", &[id.into()])
                    .unwrap_or_else(|e| error!("cannot derive a batch: {e}"))
            })
            .ok_or_else(String::new)
        })
        .catch_others(|e| Err(crate::training::jobs::error_report(e).1))
        .execute();
        match outcome {
            Ok(taken) if taken < 0 => return,
            Ok(0) => {
                failures = 0;
                if !BackgroundWorker::wait_latch(Some(IDLE_POLL)) {
                    return;
                }
            }
            Ok(_) => failures = 0,
            Err(message) => {
                // SAFETY: abort whatever transaction the error left open before recording why.
                unsafe { pg_sys::AbortCurrentTransaction() };
                // Recording it fails too where pg_ai (or the derivation) was dropped meanwhile: then the worker ends.
                let recorded = PgTryBuilder::new(|| {
                    BackgroundWorker::transaction(|| {
                        Spi::run_with_args(
                            "UPDATE ai.derivations SET last_error = $2 WHERE id = $1",
                            &[id.into(), message.as_str().into()],
                        )
                        .is_ok()
                    })
                })
                .catch_others(|_| false)
                .execute();
                if !recorded {
                    // SAFETY: as above.
                    unsafe { pg_sys::AbortCurrentTransaction() };
                    return;
                }
                failures = (failures + 1).min(6);
                if !BackgroundWorker::wait_latch(Some(MOST_BACKOFF.min(Duration::from_secs(1 << failures)))) {
                    return;
                }
            }
        }
    }
}

/// Takes derivation `id` for this worker once the declaring transaction has committed: true unless it is
/// paused, dropped, not the connected role's, or another live worker has it.
fn claim(id: i64) -> bool {
    let started = Instant::now();
    while started.elapsed() < COMMIT_WAIT {
        let claimed = BackgroundWorker::transaction(|| {
            Spi::connect_mut(|client| {
                if client.select("SELECT FROM ai.derivations WHERE id = $1", None, &[id.into()])?.is_empty() {
                    return Ok::<_, pgrx::spi::Error>(None);
                }
                let rows = client.update(
                    "UPDATE ai.derivations SET pid = pg_backend_pid()
                     WHERE id = $1 AND status = 'active' AND pg_catalog.pg_get_userbyid(owner) = session_user
                       AND (pid IS NULL OR NOT ai.derivation_worker_alive(pid))",
                    None,
                    &[id.into()],
                )?;
                Ok(Some(rows.len() == 1))
            })
            .unwrap_or(Some(false))
        });
        match claimed {
            Some(claimed) => return claimed,
            None if !BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) => return false,
            None => {}
        }
    }
    false
}
