//! Resuming training jobs after a restart, when pg_ai is in shared_preload_libraries: the launcher starts
//! with the server (and again after a crash restart), removes what killed processes left in the data
//! directory, and has each database's interrupted jobs started again (see jobs.rs for the jobs themselves), and
//! the workers of its active derivations (src/derivations.rs).

use super::jobs::{cannot_run_jobs, current_database, try_start_worker, Worker};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

/// With pg_ai in shared_preload_libraries: a worker that starts with the server (and again after a crash),
/// removes what killed processes left in the data directory, finds the jobs that a stop interrupted in every
/// database, and resumes them. It then waits for the
/// shutdown, so that the postmaster starts it again after a crash restart.
pub fn register_launcher() {
    BackgroundWorkerBuilder::new("pg_ai launcher")
        .set_type("pg_ai launcher")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .set_library("pg_ai")
        .set_function("ai_launcher_main")
        .enable_spi_access()
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn ai_launcher_main(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&crate::guc::launcher_database()), None);
    crate::store::stored_files::remove_orphans(|| {
        BackgroundWorker::transaction(|| {
            Spi::connect(|client| {
                let rows = client.select("SELECT oid::int8 FROM pg_catalog.pg_database", None, &[])?;
                rows.map(|row| row.get::<i64>(1).map(|oid| oid.unwrap_or_default() as u32))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap_or_else(|e: pgrx::spi::Error| error!("cannot list databases: {e}"))
        })
    });
    let databases: Vec<String> = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate
                 ORDER BY datname",
                None,
                &[],
            )?;
            rows.map(|row| row.get::<String>(1).map(Option::unwrap_or_default)).collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e: pgrx::spi::Error| error!("cannot list databases: {e}"))
    });
    // One database at a time, so that the look-ups do not take the worker slots the jobs need.
    for database in databases {
        let started = BackgroundWorkerBuilder::new(&format!("pg_ai resume in {database}"))
            .set_type("pg_ai resume")
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_library("pg_ai")
            .set_function("ai_resume_main")
            .set_extra(&database)
            .enable_spi_access()
            // SAFETY: this process's pid, for the postmaster to report the worker's end to.
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        match started {
            Ok(worker) => {
                let _ = worker.wait_for_shutdown();
            }
            Err(_) => warning!("pg_ai: no background worker slot to resume the jobs of database \"{database}\""),
        }
    }
    while BackgroundWorker::wait_latch(None) {}
}

/// Starts the workers of one database's active derivations and resumes its interrupted jobs (if it has pg_ai),
/// and records the end of the jobs whose cancel request the stop interrupted.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn ai_resume_main(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // The jobs to resume and the derivations whose workers to start, read in one transaction.
    let (jobs, derivations) = BackgroundWorker::transaction(|| {
        Spi::connect_mut(|client| {
            // This worker is a superuser: nothing a database's users created may stand in for a built-in.
            client.update("SET search_path = pg_catalog, pg_temp", None, &[])?;
            if !has_function(client, "ai.job_worker_alive")? {
                return Ok((Vec::new(), Vec::new()));
            }
            client.update(
                "UPDATE ai.jobs SET status = 'cancelled', error = 'the job was cancelled', finished_at = clock_timestamp()
                 WHERE status = 'cancelling' AND NOT ai.job_worker_alive(pid)",
                None,
                &[],
            )?;
            let rows = client.select(
                "SELECT id, owner::oid::bigint,
                        (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())::bigint
                 FROM ai.jobs
                 WHERE status = 'queued' OR status = 'running' AND NOT ai.job_worker_alive(pid)
                 ORDER BY id",
                None,
                &[],
            )?;
            let jobs = rows
                .map(|row| {
                    Ok(Worker {
                        job: row.get::<i64>(1)?.unwrap_or_default(),
                        owner: row.get::<i64>(2)?.unwrap_or_default(),
                        database: row.get::<i64>(3)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()?;
            // A catalog made before derived columns existed has no ai.derivations.
            let derivations = match has_function(client, "ai.derivation_worker_alive")? {
                false => Vec::new(),
                true => client
                    .select(
                        "SELECT id, owner::oid::bigint FROM ai.derivations
                         WHERE status = 'active' AND NOT ai.derivation_worker_alive(pid) ORDER BY id",
                        None,
                        &[],
                    )?
                    .map(|row| Ok((row.get::<i64>(1)?.unwrap_or_default(), row.get::<i64>(2)?.unwrap_or_default())))
                    .collect::<Result<Vec<_>, pgrx::spi::Error>>()?,
            };
            Ok((jobs, derivations))
        })
        .unwrap_or_else(|e: pgrx::spi::Error| error!("cannot read ai.jobs and ai.derivations: {e}"))
    });
    start_derivations(&database, derivations);
    for worker in jobs {
        let id = worker.job;
        // A worker logs in as the job's owner; a role that no longer can would make it fail before it could
        // record why.
        let refused = BackgroundWorker::transaction(|| {
            let error = format!("{}, and a background job runs as its owner", cannot_run_jobs(worker.owner)?);
            Spi::run_with_args(
                "UPDATE ai.jobs SET status = 'failed', error = $2, finished_at = clock_timestamp() WHERE id = $1",
                &[id.into(), error.as_str().into()],
            )
            .unwrap_or_else(|e| error!("cannot update ai.jobs: {e}"));
            Some(error)
        });
        if let Some(error) = refused {
            warning!("pg_ai: job {id} in database \"{database}\" cannot resume: {error}");
        } else if try_start_worker(worker) {
            log!("pg_ai: resuming job {id} in database \"{database}\"");
        } else {
            warning!("pg_ai: no background worker slot to resume job {id} in database \"{database}\"");
        }
    }
}

/// Starts the workers of `derivations` (id, owner) of the database this worker is connected to.
fn start_derivations(database: &str, derivations: Vec<(i64, i64)>) {
    for (id, owner) in derivations {
        let refused = BackgroundWorker::transaction(|| cannot_run_jobs(owner));
        match refused {
            Some(reason) => warning!("pg_ai: derivation {id} in database \"{database}\" cannot start: {reason}"),
            None if crate::derivations::try_start(id, current_database(), owner) => {
                log!("pg_ai: starting derivation {id} in database \"{database}\"")
            }
            None => warning!("pg_ai: no background worker slot for derivation {id} in database \"{database}\""),
        }
    }
}

/// Whether the function `name` exists: whether this database has pg_ai's catalog (or the part of it made by a
/// newer version).
fn has_function(client: &pgrx::spi::SpiClient, name: &str) -> Result<bool, pgrx::spi::Error> {
    let found = client.select("SELECT to_regproc($1) IS NOT NULL", None, &[name.into()])?.first().get_one::<bool>()?;
    Ok(found.unwrap_or(false))
}
