//! The model registry (rows of `ai.models`, files in `ai.model_files`) and the per-backend cache
//! of loaded models.

pub mod cache;
pub mod catalog;
mod read_only;
pub mod stored_files;

use crate::engine::error::{AiError, ErrorKind};
use crate::engine::files::ModelFiles;
use crate::engine::model::{AnyModel, Task};
use crate::error::OrRaise;
use std::rc::Rc;

/// This statement: its start time and local transaction id.
fn statement() -> cache::Statement {
    // SAFETY: MyProc is set for every backend before any SQL function runs.
    unsafe { (pgrx::pg_sys::GetCurrentStatementStartTimestamp(), (*pgrx::pg_sys::MyProc).lxid) }
}

/// The model registered as `name`, loaded once per backend, checked able to do `task`.
pub fn model_for(name: &str, task: Task) -> Rc<AnyModel> {
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
    model
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
        crate::engine::threads::configure(crate::guc::threads());
        let files = if entry.stored {
            stored_files::materialise(&entry.name, &entry.sha256)
        } else {
            ModelFiles::locate(&entry.source, crate::guc::hf_cache_dir().as_deref())
        }?;
        AnyModel::load(&files)
    })
    .or_raise()
}
