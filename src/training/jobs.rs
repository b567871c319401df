//! Training as background jobs. ai_pretrain_async and ai_finetune_async (api::jobs) check the request, record it
//! in ai.jobs (`submit`) and start a dynamic background worker (no shared_preload_libraries needed), then return the job's id
//! at once. The worker connects as the job's owner, so its session has exactly the owner's rights (no SET ROLE
//! in a source can gain more), and commits the job's status as it goes; it goes on when the client
//! disconnects. ai_cancel_job asks it to stop.
//!
//! Training runs outside any transaction: each pass over the rows reads them in one of its own, and every few
//! minutes (or `checkpoint_every` steps) a checkpoint commits into ai.job_checkpoints. A job that a server stop
//! interrupts resumes from it, bit for bit as if it had not stopped: by itself after the restart when pg_ai is
//! in shared_preload_libraries (launcher.rs), else with ai_resume_job.

use super::{Request, Rows, RowsQuery, Scratch, SqlProgress, Start};
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

/// Asks a queued or running job to stop; true if it was still going. It stops between two batches.
pub(crate) fn cancel(id: i64) -> bool {
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

/// Records a job of the current role in ai.jobs and starts its worker; returns its id.
pub(crate) fn submit(kind: &str, model: &str, args: serde_json::Value) -> i64 {
    let owner = Spi::get_one::<i64>("SELECT current_user::regrole::oid::bigint")
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("cannot read the current role"));
    require_can_run_jobs(owner);
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO ai.jobs (kind, model, args) VALUES ($1, $2, $3) RETURNING id",
        &[kind.into(), model.into(), JsonB(args).into()],
    )
    .unwrap_or_else(|e| error!("cannot record the job in ai.jobs: {e}"))
    .expect("INSERT ... RETURNING gives a row");
    start_worker(Worker { job: id, database: current_database(), owner });
    id
}

fn require_can_run_jobs(owner: i64) {
    if let Some(reason) = cannot_run_jobs(owner) {
        raise(
            AiError::new(ErrorKind::Privilege, format!("{reason}, and a background job runs as its owner")).with_hint(
                "Give the role LOGIN and CONNECT on the database, or train in this session with ai_pretrain or ai_finetune.",
            ),
        );
    }
}

/// Why role `owner` cannot have a job worker connect as it, if it cannot: a worker logs in as the job's owner.
pub(crate) fn cannot_run_jobs(owner: i64) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT CASE WHEN NOT r.rolcanlogin THEN format('role %s cannot log in', r.oid::regrole)
                     WHEN NOT pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'CONNECT')
                     THEN format('role %s may not connect to this database', r.oid::regrole)
                     WHEN r.rolconnlimit >= 0 AND r.rolconnlimit <= (SELECT count(*) FROM pg_catalog.pg_stat_activity
                                                                    WHERE usesysid = r.oid)
                     THEN format('role %s has used its connection limit', r.oid::regrole) END
         FROM pg_catalog.pg_roles AS r WHERE r.oid = $1::bigint::oid",
        &[owner.into()],
    )
    .unwrap_or_else(|e| error!("cannot read pg_roles: {e}"))
}

/// Starts a job that stopped with the server (see ai.job_status's 'interrupted'): from its last checkpoint
/// if it has one, else from the beginning. True if a worker was started; false if the job is still running
/// or has ended. Not needed when pg_ai is in shared_preload_libraries: then interrupted jobs resume by
/// themselves after a restart.
pub(crate) fn resume(id: i64) -> bool {
    // One row whatever the id: NULLs when there is no such job of the caller's.
    let (resumable, owner) = Spi::get_two_with_args::<bool, i64>(
        "SELECT j.status IN ('queued', 'running') AND NOT ai.job_worker_alive(j.pid), j.owner::oid::bigint
         FROM (SELECT) AS one LEFT JOIN ai.jobs AS j ON j.id = $1 AND pg_catalog.pg_has_role(j.owner, 'MEMBER')",
        &[id.into()],
    )
    .unwrap_or_else(|e| error!("cannot read ai.jobs: {e}"));
    match resumable.zip(owner) {
        None => super::sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("there is no job {id} of yours"),
            "SELECT id, status FROM ai.job_status lists the jobs.",
        ),
        Some((true, owner)) => {
            require_can_run_jobs(owner);
            start_worker(Worker { job: id, database: current_database(), owner });
            true
        }
        Some((false, _)) => false,
    }
}

/// The oid of the database this backend or worker is connected to.
pub(crate) fn current_database() -> i64 {
    // SAFETY: MyDatabaseId is set once the backend has connected, before any SQL function runs.
    unsafe { pg_sys::MyDatabaseId }.to_u32().into()
}

/// A job's background worker: which job, in which database (oid), connected as which role (oid).
pub(crate) struct Worker {
    pub job: i64,
    pub database: i64,
    pub owner: i64,
}

/// Starts the background worker of a job; an ERROR when no worker slot is free.
fn start_worker(worker: Worker) {
    if !try_start_worker(worker) {
        raise(
            AiError::internal("cannot start a background worker for the job")
                .with_hint("All background worker slots are taken; raise max_worker_processes."),
        );
    }
}

pub(crate) fn try_start_worker(worker: Worker) -> bool {
    BackgroundWorkerBuilder::new(&format!("pg_ai job {}", worker.job))
        .set_type("pg_ai job")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_library("pg_ai")
        .set_function("ai_job_main")
        .set_argument(worker.job.into_datum())
        .set_extra(&format!("{} {}", worker.database, worker.owner))
        .enable_spi_access()
        .load_dynamic()
        .is_ok()
}

/// The database and role oids that `try_start_worker` wrote into the worker's extra data.
fn worker_target() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let mut oids = BackgroundWorker::get_extra().split(' ').map(|n| n.parse::<u32>().ok().map(pg_sys::Oid::from));
    Some((oids.next()??, oids.next()??))
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

struct Job {
    kind: String,
    model: String,
    args: serde_json::Value,
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
    let Some((database, owner)) = worker_target() else { return };
    // The session user is the owner: nothing the job runs can take more rights than the owner has.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), Some(owner));
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
    crate::out_of_memory::prepare();
    let started = Instant::now();
    let checkpoint = Scratch::new();
    let (start, query) = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        let resuming = checkpoints::load(id, &checkpoint.0).or_raise();
        crate::store::catalog::require_new_name(request.name);
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
    let mut rows = JobRows { query };
    let mut progress = JobProgress {
        sql: SqlProgress { model: request.name },
        id,
        every: trainer_options.checkpoint_every,
        last_checkpoint: Instant::now(),
        last_poll: Instant::now(),
        cancelled: false,
    };
    let outcome = start.train(objective, &mut rows, &trainer_options, &mut progress, &out.0).or_raise();
    BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
        super::register(&request, &out.0, outcome, started);
        checkpoints::delete(id).or_raise();
        set_status(id, "done", None);
    }));
}

/// The source's rows for a job: each pass reads them in a transaction of its own.
struct JobRows {
    query: RowsQuery,
}

impl DataSource for JobRows {
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> EngineResult<()>) -> EngineResult<()> {
        in_transaction(|| Spi::connect(|client| Rows { client, query: &self.query }.pass(each)))
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
    /// The owner's cancel request, once seen.
    cancelled: bool,
}

impl JobProgress<'_> {
    /// Whether the owner asked the job to stop; asks ai.jobs at most every CANCEL_POLL.
    fn cancel_requested(&mut self) -> bool {
        if self.cancelled || self.last_poll.elapsed() < CANCEL_POLL {
            return self.cancelled;
        }
        self.last_poll = Instant::now();
        let status = in_transaction(|| {
            Spi::get_one_with_args::<String>("SELECT status FROM ai.jobs WHERE id = $1", &[self.id.into()])
        });
        self.cancelled = status.ok().flatten().as_deref() == Some("cancelling");
        self.cancelled
    }
}

impl Progress for JobProgress<'_> {
    fn check(&mut self) -> EngineResult<()> {
        self.sql.check()?;
        if shutting_down() {
            return Err(AiError::new(ErrorKind::Cancelled, "the server is shutting down"));
        }
        if self.cancel_requested() {
            return Err(AiError::new(ErrorKind::Cancelled, "the job was cancelled"));
        }
        Ok(())
    }

    fn interrupted(&mut self) -> bool {
        self.sql.interrupted() || shutting_down() || self.cancel_requested()
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
/// Claiming sets status and pid in one UPDATE, so two workers never run the same job. Only a job of the role
/// the worker connected as is claimed.
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
                     WHERE id = $1 AND pg_catalog.pg_get_userbyid(owner) = session_user
                       AND (status = 'queued' OR status = 'running' AND NOT ai.job_worker_alive(pid))
                     RETURNING kind, model, args",
                    None,
                    &[id.into()],
                )?;
                let job = rows.into_iter().next().map(|row| -> Result<Job, pgrx::spi::Error> {
                    Ok(Job {
                        kind: row.get::<String>(1)?.unwrap_or_default(),
                        model: row.get::<String>(2)?.unwrap_or_default(),
                        args: row.get::<JsonB>(3)?.map_or(json!({}), |j| j.0),
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

pub(crate) fn error_report(e: pg_sys::panic::CaughtError) -> (PgSqlErrorCode, String) {
    match e {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report)
        | pg_sys::panic::CaughtError::RustPanic { ereport: report, .. } => {
            (report.sql_error_code(), report.message().to_string())
        }
    }
}
