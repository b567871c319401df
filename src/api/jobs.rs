//! Training as background jobs. ai_pretrain_async and ai_finetune_async check the request, record it in
//! ai.jobs and start a dynamic background worker (no shared_preload_libraries needed), then return the job's id
//! at once. The worker trains with the caller's role, so it reads only what the caller may read, and commits
//! the job's status as it goes; it goes on when the client disconnects. ai_cancel_job asks it to stop.

use super::train;
use crate::engine::error::{AiError, ErrorKind};
use crate::error::{raise, OrRaise};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long a worker waits for the transaction that submitted its job to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(60);
/// How often a running job looks for a cancel request.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Starts training a new model in the background; returns the job id. See ai_pretrain for the arguments.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_pretrain_async(name: &str, source: &str, objective: &str, options: default!(Option<JsonB>, "'{}'")) -> i64 {
    super::require_writable(c"ai_pretrain_async()");
    let options = train::options_value(options);
    train::check_request(name, objective, &options);
    submit("pretrain", name, json!({"source": source, "objective": objective, "options": options}))
}

/// Starts fine-tuning in the background; returns the job id. See ai_finetune for the arguments.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_finetune_async(
    name: &str,
    base_model: &str,
    source: &str,
    task: &str,
    options: default!(Option<JsonB>, "'{}'"),
) -> i64 {
    super::require_writable(c"ai_finetune_async()");
    let options = train::options_value(options);
    train::check_request(name, task, &options);
    train::find_base(base_model);
    submit("finetune", name, json!({"base_model": base_model, "source": source, "task": task, "options": options}))
}

/// Asks a queued or running job to stop; true if it was still going. It stops between two batches.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_cancel_job(id: i64) -> bool {
    super::require_writable(c"ai_cancel_job()");
    Spi::connect_mut(|client| {
        let updated = client.update(
            "UPDATE ai.jobs SET status = 'cancelling' WHERE id = $1 AND status IN ('queued', 'running')",
            None,
            &[id.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(updated.len() == 1)
    })
    .unwrap_or_else(|e| error!("cannot update ai.jobs: {e}"))
}

fn submit(kind: &str, model: &str, args: serde_json::Value) -> i64 {
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO ai.jobs (kind, model, args) VALUES ($1, $2, $3) RETURNING id",
        &[kind.into(), model.into(), JsonB(args).into()],
    )
    .unwrap_or_else(|e| error!("cannot record the job in ai.jobs: {e}"))
    .expect("INSERT ... RETURNING gives a row");
    let database = Spi::get_one::<String>("SELECT current_database()::text").ok().flatten().unwrap_or_default();
    let started = BackgroundWorkerBuilder::new(&format!("pg_ai job {id}"))
        .set_type("pg_ai job")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_library("pg_ai")
        .set_function("ai_job_main")
        .set_argument(id.into_datum())
        .set_extra(&database)
        .enable_spi_access()
        .load_dynamic();
    if started.is_err() {
        raise(
            AiError::internal("cannot start a background worker for the job")
                .with_hint("All background worker slots are taken; raise max_worker_processes."),
        );
    }
    id
}

struct Job {
    kind: String,
    model: String,
    args: serde_json::Value,
    owner: String,
}

/// The background worker: waits for its job to be committed, runs it, records how it ended.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn ai_job_main(argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: the argument is the int8 job id that `submit` passed.
    let Some(id) = (unsafe { i64::from_datum(argument, false) }) else { return };
    BackgroundWorker::connect_worker_to_spi(Some(BackgroundWorker::get_extra()), None);
    let Some(job) = wait_for(id) else { return };
    set_status(id, "running", None);
    let mut last_poll = Instant::now();
    let mut stop = move || -> Option<AiError> {
        if BackgroundWorker::sigterm_received() {
            return Some(AiError::new(ErrorKind::Cancelled, "the server is shutting down"));
        }
        if last_poll.elapsed() < CANCEL_POLL {
            return None;
        }
        last_poll = Instant::now();
        cancel_requested(id).then(|| AiError::new(ErrorKind::Cancelled, "the job was cancelled"))
    };
    let failure = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
            run(&job, &mut stop);
            Spi::run("RESET ROLE").unwrap_or_else(|e| error!("{e}"));
            set_status_now(id, "done", None);
        }));
        None
    }))
    .catch_others(|e| Some(error_report(e)))
    .execute();
    if let Some((code, message)) = failure {
        // SAFETY: the worker's own transaction failed; abort it before recording why.
        unsafe { pg_sys::AbortCurrentTransaction() };
        let cancelled = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED;
        set_status(id, if cancelled { "cancelled" } else { "failed" }, Some(&message));
    }
}

fn run(job: &Job, stop: &mut dyn FnMut() -> Option<AiError>) {
    // The job runs with the rights of the role that submitted it.
    // regrole's text form is already a quoted identifier where one is needed.
    Spi::run(&format!("SET LOCAL ROLE {}", job.owner)).unwrap_or_else(|e| error!("{e}"));
    let text = |key: &str| job.args.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let options = job.args.get("options").cloned().unwrap_or(json!({}));
    if job.kind == "pretrain" {
        let objective = crate::engine::train::Objective::parse(&text("objective")).or_raise();
        train::pretrain(&job.model, &text("source"), objective, options, Some(stop));
    } else {
        let objective = crate::engine::train::Objective::parse(&text("task")).or_raise();
        train::finetune(&job.model, &text("base_model"), &text("source"), objective, options, Some(stop));
    }
}

/// Whether ai_cancel_job has asked this job to stop. Read under a fresh snapshot: read-only SPI would use the
/// training transaction's first one, which never sees the request.
fn cancel_requested(id: i64) -> bool {
    // SAFETY: a snapshot pushed and popped around one query; an ERROR in between aborts the transaction,
    // which pops it.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let status = Spi::get_one_with_args::<String>("SELECT status FROM ai.jobs WHERE id = $1", &[id.into()]);
    unsafe { pg_sys::PopActiveSnapshot() };
    status.ok().flatten().as_deref() == Some("cancelling")
}

/// The job once its submitting transaction has committed; None if it never does or is not queued.
fn wait_for(id: i64) -> Option<Job> {
    let started = Instant::now();
    while started.elapsed() < COMMIT_WAIT && !BackgroundWorker::sigterm_received() {
        let job = BackgroundWorker::transaction(|| {
            Spi::connect(|client| {
                let rows = client.select(
                    "SELECT kind, model, args, owner::text, status FROM ai.jobs WHERE id = $1",
                    None,
                    &[id.into()],
                )?;
                let row = rows.into_iter().next();
                Ok::<_, pgrx::spi::Error>(match row {
                    Some(row) => Some((
                        Job {
                            kind: row.get::<String>(1)?.unwrap_or_default(),
                            model: row.get::<String>(2)?.unwrap_or_default(),
                            args: row.get::<JsonB>(3)?.map_or(json!({}), |j| j.0),
                            owner: row.get::<String>(4)?.unwrap_or_default(),
                        },
                        row.get::<String>(5)?.unwrap_or_default(),
                    )),
                    None => None,
                })
            })
            .unwrap_or(None)
        });
        match job {
            Some((job, status)) if status == "queued" => return Some(job),
            Some(_) => return None,
            None => {
                BackgroundWorker::wait_latch(Some(Duration::from_millis(100)));
            }
        }
    }
    None
}

fn set_status(id: i64, status: &str, error: Option<&str>) {
    BackgroundWorker::transaction(|| set_status_now(id, status, error));
}

fn set_status_now(id: i64, status: &str, error: Option<&str>) {
    let (started, finished) = match status {
        "running" => ("clock_timestamp()", "NULL"),
        _ => ("started_at", "clock_timestamp()"),
    };
    Spi::run_with_args(
        &format!(
            "UPDATE ai.jobs SET status = $2, error = $3, pid = pg_backend_pid(), started_at = {started},
             finished_at = {finished} WHERE id = $1"
        ),
        &[id.into(), status.into(), error.into()],
    )
    .unwrap_or_else(|e| error!("cannot update ai.jobs: {e}"));
}

fn error_report(e: pg_sys::panic::CaughtError) -> (PgSqlErrorCode, String) {
    match e {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report)
        | pg_sys::panic::CaughtError::RustPanic { ereport: report, .. } => {
            (report.sql_error_code(), report.message().to_string())
        }
    }
}
