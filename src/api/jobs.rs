//! Training as background jobs, as SQL functions (see crate::training::jobs).

use super::json_arg::JsonArg;
use crate::training::{self, jobs};
use pgrx::prelude::*;
use serde_json::json;

/// Starts training a new model in the background; returns the job id. See ai_pretrain for the arguments.
/// NULL name, source or objective gives NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_pretrain_async(
    name: Option<&str>,
    source: Option<&str>,
    objective: Option<&str>,
    options: default!(Option<JsonArg>, "'{}'"),
) -> Option<i64> {
    let (name, source, objective) = (name?, source?, objective?);
    super::require_writable(c"ai_pretrain_async()");
    let options = super::training_options(options);
    training::check_request(name, objective, &options);
    Some(jobs::submit("pretrain", name, json!({"source": source, "objective": objective, "options": options})))
}

/// Starts fine-tuning in the background; returns the job id. See ai_finetune for the arguments.
/// NULL name, base model, source or task gives NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_finetune_async(
    name: Option<&str>,
    base_model: Option<&str>,
    source: Option<&str>,
    task: Option<&str>,
    options: default!(Option<JsonArg>, "'{}'"),
) -> Option<i64> {
    let (name, base_model, source, task) = (name?, base_model?, source?, task?);
    super::require_writable(c"ai_finetune_async()");
    let options = super::training_options(options);
    training::check_request(name, task, &options);
    training::find_base(base_model);
    Some(jobs::submit(
        "finetune",
        name,
        json!({"base_model": base_model, "source": source, "task": task, "options": options}),
    ))
}

/// Asks a queued or running job to stop; true if it was still going. It stops between two batches.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_cancel_job(id: i64) -> bool {
    super::require_writable(c"ai_cancel_job()");
    jobs::cancel(id)
}

/// Starts a job that stopped with the server (see ai.job_status's 'interrupted'): from its last checkpoint
/// if it has one, else from the beginning. True if a worker was started; false if the job is still running
/// or has ended. Not needed when pg_ai is in shared_preload_libraries: then interrupted jobs resume by
/// themselves after a restart.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_resume_job(id: i64) -> bool {
    super::require_writable(c"ai_resume_job()");
    jobs::resume(id)
}
