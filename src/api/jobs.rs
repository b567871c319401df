//! Training as background jobs. ai_pretrain_async and ai_finetune_async check the request, record it in
//! ai.jobs and start a dynamic background worker (no shared_preload_libraries needed), then return the job's id
//! at once. The worker trains with the caller's role, so it reads only what the caller may read, and commits
//! the job's status as it goes; it goes on when the client disconnects. ai_cancel_job asks it to stop.
//!
//! Training runs outside any transaction: each pass over the rows reads them in one of its own, and every few
//! minutes (or `checkpoint_every` steps) a checkpoint commits into ai.job_checkpoints. A job that a server stop
//! interrupts resumes from it, bit for bit as if it had not stopped: by itself after the restart when pg_ai is
//! in shared_preload_libraries (launcher.rs), else with ai_resume_job.

use super::train::{self, Request, Rows, RowsQuery, Scratch, SqlProgress, Start};
use crate::engine::error::{AiError, ErrorKind, Result as EngineResult};
use crate::engine::train::{DataSource, Example, Objective, Progress, StepReport, TrainerState};
use crate::error::{raise, OrRaise};
use crate::store::checkpoints;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a worker waits for the transaction that submitted its job to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(60);
/// How often a running job looks for a cancel request.
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// How often a job saves a checkpoint unless its checkpoint_every option says otherwise.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

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
    start_worker(id, &current_database());
    id
}

/// Starts a job that stopped with the server (see ai.job_status's 'interrupted'): from its last checkpoint
/// if it has one, else from the beginning. True if a worker was started; false if the job is still running
/// or has ended. Not needed when pg_ai is in shared_preload_libraries: then interrupted jobs resume by
/// themselves after a restart.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_resume_job(id: i64) -> bool {
    super::require_writable(c"ai_resume_job()");
    let resumable = Spi::get_one_with_args::<bool>(
        "SELECT (SELECT status IN ('queued', 'running') AND NOT ai.job_worker_alive(pid) FROM ai.jobs
                 WHERE id = $1 AND pg_catalog.pg_has_role(owner, 'MEMBER'))",
        &[id.into()],
    )
    .unwrap_or_else(|e| error!("cannot read ai.jobs: {e}"));
    match resumable {
        None => train::sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("there is no job {id} of yours"),
            "SELECT id, status FROM ai.job_status lists the jobs.",
        ),
        Some(true) => {
            start_worker(id, &current_database());
            true
        }
        Some(false) => false,
    }
}

fn current_database() -> String {
    Spi::get_one::<String>("SELECT current_database()::text").ok().flatten().unwrap_or_default()
}

/// Starts the background worker of job `id` in `database`; an ERROR when no worker slot is free.
fn start_worker(id: i64, database: &str) {
    if !try_start_worker(id, database) {
        raise(
            AiError::internal("cannot start a background worker for the job")
                .with_hint("All background worker slots are taken; raise max_worker_processes."),
        );
    }
}

pub(super) fn try_start_worker(id: i64, database: &str) -> bool {
    BackgroundWorkerBuilder::new(&format!("pg_ai job {id}"))
        .set_type("pg_ai job")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_library("pg_ai")
        .set_function("ai_job_main")
        .set_argument(id.into_datum())
        .set_extra(database)
        .enable_spi_access()
        .load_dynamic()
        .is_ok()
}

/// Whether the server asked this worker to stop (a shutdown). Read, unlike sigterm_received, without
/// resetting it.
fn shutting_down() -> bool {
    // SAFETY: a sig_atomic_t the SIGTERM handler sets.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

/// Runs `f` in a transaction of its own, or in the current one if there is one.
fn in_transaction<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: reads the backend's transaction state.
    if unsafe { pg_sys::IsTransactionState() } {
        f()
    } else {
        let f = std::panic::AssertUnwindSafe(f);
        BackgroundWorker::transaction(move || {
            let f = f;
            (f.0)()
        })
    }
}

fn set_role(owner: &str) {
    // regrole's text form is already a quoted identifier where one is needed.
    Spi::run(&format!("SET LOCAL ROLE {owner}")).unwrap_or_else(|e| error!("{e}"));
}

struct Job {
    kind: String,
    model: String,
    args: serde_json::Value,
    owner: String,
}

impl Job {
    fn text(&self, key: &str) -> &str {
        self.args.get(key).and_then(|v| v.as_str()).unwrap_or_default()
    }
}

/// The background worker: claims its job once the submitting transaction has committed (or, resuming, once
/// the previous worker is gone), runs it, records how it ended.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn ai_job_main(argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: the argument is the int8 job id that `start_worker` passed.
    let Some(id) = (unsafe { i64::from_datum(argument, false) }) else { return };
    BackgroundWorker::connect_worker_to_spi(Some(BackgroundWorker::get_extra()), None);
    let Some(job) = claim(id) else { return };
    let failure = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        run(id, &job);
        None
    }))
    .catch_others(|e| Some(error_report(e)))
    .execute();
    if let Some((code, message)) = failure {
        // SAFETY: abort whatever transaction the error left open (none is fine) before recording why.
        unsafe { pg_sys::AbortCurrentTransaction() };
        if shutting_down() {
            // The job stays 'running': it resumes from its last checkpoint once the server is back.
            return;
        }
        let cancelled = code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED;
        BackgroundWorker::transaction(|| {
            set_status(id, if cancelled { "cancelled" } else { "failed" }, Some(&message));
            checkpoints::delete(id).or_raise();
        });
    }
}

fn run(id: i64, job: &Job) {
    let options = job.args.get("options").cloned().unwrap_or(json!({}));
    let objective = Objective::parse(job.text(if job.kind == "pretrain" { "objective" } else { "task" })).or_raise();
    let parent = (job.kind == "finetune").then(|| job.text("base_model"));
    let request = Request { name: &job.model, source: job.text("source"), objective, options: &options, parent };
    let trainer_options = request.trainer_options();
    crate::guc::apply_compute_settings();
    let started = Instant::now();
    let checkpoint = Scratch::new();
    // The checkpoint is read as the worker's own (superuser) role; all else runs with the owner's rights.
    let (start, query) = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        let resuming = checkpoints::load(id, &checkpoint.0).or_raise();
        set_role(&job.owner);
        super::require_new_name(request.name);
        if resuming {
            let step = TrainerState::read(&checkpoint.0).or_raise().step;
            log!("pg_ai: job {id} goes on from its checkpoint at step {step}");
        }
        let start = match parent {
            _ if resuming => Start::Resume(checkpoint.0.clone()),
            Some(base) => Start::finetune(base),
            None => Start::Pretrain,
        };
        (start, Spi::connect(|client| request.rows_query(client)))
    }));
    // Training runs outside any transaction: each pass over the rows and each checkpoint commits on its own.
    let out = Scratch::new();
    let mut rows = JobRows { owner: &job.owner, query };
    let mut progress = JobProgress {
        sql: SqlProgress { model: request.name },
        id,
        every: trainer_options.checkpoint_every,
        last_checkpoint: Instant::now(),
        last_poll: Instant::now(),
    };
    let outcome = start.train(objective, &mut rows, &trainer_options, &mut progress, &out.0).or_raise();
    BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        set_role(&job.owner);
        train::register(&request, &out.0, outcome, started);
        Spi::run("RESET ROLE").unwrap_or_else(|e| error!("{e}"));
        checkpoints::delete(id).or_raise();
        set_status(id, "done", None);
    }));
}

/// The source's rows for a job: each pass reads them in a transaction of its own, with the owner's rights.
struct JobRows<'a> {
    owner: &'a str,
    query: RowsQuery,
}

impl DataSource for JobRows<'_> {
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> EngineResult<()>) -> EngineResult<()> {
        in_transaction(|| {
            set_role(self.owner);
            Spi::connect(|client| Rows { client, query: &self.query }.pass(each))
        })
    }
}

/// A job's progress: the SQL progress, plus cancel requests, shutdown and checkpoints.
struct JobProgress<'a> {
    sql: SqlProgress<'a>,
    id: i64,
    /// Checkpoint every this many steps; None: every CHECKPOINT_INTERVAL.
    every: Option<usize>,
    last_checkpoint: Instant,
    last_poll: Instant,
}

impl Progress for JobProgress<'_> {
    fn check(&mut self) -> EngineResult<()> {
        self.sql.check()?;
        if shutting_down() {
            return Err(AiError::new(ErrorKind::Cancelled, "the server is shutting down"));
        }
        if self.last_poll.elapsed() >= CANCEL_POLL {
            self.last_poll = Instant::now();
            let status = in_transaction(|| {
                Spi::get_one_with_args::<String>("SELECT status FROM ai.jobs WHERE id = $1", &[self.id.into()])
            });
            if status.ok().flatten().as_deref() == Some("cancelling") {
                return Err(AiError::new(ErrorKind::Cancelled, "the job was cancelled"));
            }
        }
        Ok(())
    }

    fn report(&mut self, step: &StepReport) {
        self.sql.report(step);
    }

    fn checkpoint(&mut self, step: usize, write: &mut dyn FnMut(&Path) -> EngineResult<()>) -> EngineResult<()> {
        let due = match self.every {
            Some(every) => step.is_multiple_of(every),
            None => self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL,
        };
        if !due {
            return Ok(());
        }
        let dir = Scratch::new();
        write(&dir.0)?;
        in_transaction(|| checkpoints::save(self.id, step, &dir.0))?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// The job once it can be claimed: its submitting transaction has committed and no live worker has it.
/// Claiming sets status and pid in one UPDATE, so two workers never run the same job.
fn claim(id: i64) -> Option<Job> {
    let started = Instant::now();
    while started.elapsed() < COMMIT_WAIT && !shutting_down() {
        let claimed = BackgroundWorker::transaction(|| {
            Spi::connect_mut(|client| {
                let visible = client.select("SELECT FROM ai.jobs WHERE id = $1", None, &[id.into()])?.len() == 1;
                if !visible {
                    return Ok::<_, pgrx::spi::Error>(None);
                }
                let rows = client.update(
                    "UPDATE ai.jobs SET status = 'running', pid = pg_backend_pid(), error = NULL,
                            started_at = coalesce(started_at, clock_timestamp())
                     WHERE id = $1 AND (status = 'queued' OR status = 'running' AND NOT ai.job_worker_alive(pid))
                     RETURNING kind, model, args, owner::text",
                    None,
                    &[id.into()],
                )?;
                let job = rows.into_iter().next().map(|row| -> Result<Job, pgrx::spi::Error> {
                    Ok(Job {
                        kind: row.get::<String>(1)?.unwrap_or_default(),
                        model: row.get::<String>(2)?.unwrap_or_default(),
                        args: row.get::<JsonB>(3)?.map_or(json!({}), |j| j.0),
                        owner: row.get::<String>(4)?.unwrap_or_default(),
                    })
                });
                Ok(Some(job.transpose()?))
            })
            .unwrap_or(Some(None))
        });
        match claimed {
            Some(job) => return job,
            None => {
                BackgroundWorker::wait_latch(Some(Duration::from_millis(100)));
            }
        }
    }
    None
}

fn set_status(id: i64, status: &str, error: Option<&str>) {
    Spi::run_with_args(
        "UPDATE ai.jobs SET status = $2, error = $3, finished_at = clock_timestamp() WHERE id = $1",
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
