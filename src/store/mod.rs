//! The model registry (rows of `ai.models`, files in `ai.model_files`) and the per-backend cache
//! of loaded models.

pub mod cache;
pub mod catalog;
pub mod checkpoints;
pub mod citus;
mod read_only;
pub mod rollback;
pub mod stored_files;

use crate::engine::error::{AiError, ErrorKind};
use crate::engine::files::ModelFiles;
use crate::engine::models::{AnyModel, Task};
use crate::error::OrRaise;
use std::ops::Deref;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// This statement: its start time and local transaction id.
fn statement() -> cache::Statement {
    // SAFETY: MyProc is set for every backend before any SQL function runs.
    unsafe { (pgrx::pg_sys::GetCurrentStatementStartTimestamp(), (*pgrx::pg_sys::MyProc).lxid) }
}

/// The model registered as `name`, loaded once per backend, checked able to do `task`, for one SQL call.
pub fn model_for(name: &str, task: Task) -> ModelCall {
    crate::engine::timing::take();
    crate::guc::apply_memory_budget();
    crate::out_of_memory::prepare();
    let started = Instant::now();
    let statement = statement();
    let model = match cache::checked(name, statement) {
        Some(model) => model,
        None => {
            let model = load_registered(name);
            cache::mark_checked(name, statement);
            model
        }
    };
    model.require(task, name).or_raise();
    ModelCall { model, name: name.to_string(), task, started, lookup: started.elapsed(), report: true }
}

/// A model lent to one SQL call. With `pg_ai.timing` on, the end of the call (when the adapter drops it)
/// reports where the call's time went as a NOTICE.
pub struct ModelCall {
    model: Rc<AnyModel>,
    name: String,
    task: Task,
    started: Instant,
    /// Finding the catalog row and, on a backend's first call, loading the files.
    lookup: Duration,
    report: bool,
}

impl ModelCall {
    /// The model itself, for work that outlives the call (a set-returning function's rows); no timing report.
    pub fn into_shared(mut self) -> Rc<AnyModel> {
        self.report = false;
        self.model.clone()
    }
}

impl Deref for ModelCall {
    type Target = AnyModel;

    fn deref(&self) -> &AnyModel {
        &self.model
    }
}

impl Drop for ModelCall {
    fn drop(&mut self) {
        // Not while an ERROR unwinds: nothing may call into Postgres then.
        if std::thread::panicking() || !self.report || !crate::guc::timing() {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let [tokenize, forward, decode] = crate::engine::timing::take();
        let total = self.started.elapsed();
        let other = total.saturating_sub(self.lookup + tokenize + forward + decode);
        pgrx::notice!(
            "pg_ai.timing: {} with \"{}\": {:.3} ms = lookup and load {:.3} + tokenize {:.3} + forward {:.3} + decode {:.3} + other {:.3}",
            self.task.name(),
            self.name,
            ms(total),
            ms(self.lookup),
            ms(tokenize),
            ms(forward),
            ms(decode),
            ms(other)
        );
    }
}

/// Reads the catalog row of `name` and returns its model, loading it if this backend has not.
fn load_registered(name: &str) -> Rc<AnyModel> {
    let entry = catalog::find(name).unwrap_or_else(|| {
        crate::error::raise(
            AiError::new(ErrorKind::UndefinedModel, format!("model \"{name}\" does not exist")).with_hint(
                "Register it with ai_load_model(name, source); SELECT name FROM ai.models lists the models.",
            ),
        )
    });
    cache::get_or_load(&entry, || {
        crate::guc::apply_compute_settings();
        AnyModel::load(&files_of(&entry)?, &crate::guc::load_options())
    })
    .or_raise()
}

/// The files of a registered model: its stored files written out, or its source path, read only while the
/// role that registered it may still read the server's files there (a row written by hand gains nothing).
pub fn files_of(entry: &catalog::CatalogEntry) -> crate::engine::error::Result<ModelFiles> {
    if entry.stored {
        return stored_files::materialise(entry);
    }
    if !catalog::may_read_server_files(&entry.owner) {
        return Err(AiError::new(
            ErrorKind::Privilege,
            format!(
                "model \"{}\" is registered from a path by role {}, which may not read the server's files",
                entry.name, entry.owner
            ),
        )
        .with_hint("Only superusers and members of pg_read_server_files may register models from a path."));
    }
    let files = ModelFiles::locate(&entry.source, crate::guc::hf_cache_dir().as_deref())?;
    require_allowed_path(&files)?;
    Ok(files)
}

/// With pg_ai.model_paths set, models load only from below one of its directories: the directory and every
/// file of the model, links resolved.
pub fn require_allowed_path(files: &ModelFiles) -> crate::engine::error::Result<()> {
    let allowed = crate::guc::model_paths();
    if allowed.is_empty() {
        return Ok(());
    }
    let roots: Vec<std::path::PathBuf> =
        allowed.iter().map(|a| std::fs::canonicalize(a).unwrap_or_else(|_| a.clone())).collect();
    let dir = std::fs::canonicalize(&files.dir).unwrap_or_else(|_| files.dir.clone());
    for path in std::iter::once(dir).chain(files.resolved_files()?) {
        if !roots.iter().any(|root| path.starts_with(root)) {
            return Err(AiError::new(
                ErrorKind::Privilege,
                format!("{} is outside the directories models may be loaded from", path.display()),
            )
            .with_hint(format!(
                "pg_ai.model_paths allows: {}.",
                allowed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}
