//! Registering, listing and dropping models.

use crate::engine::error::{AiError, ErrorKind};
use crate::engine::files::ModelFiles;
use crate::engine::models::{AnyModel, Task};
use crate::error::{raise, OrRaise};
use crate::store::{cache, catalog, stored_files};
use pgrx::prelude::*;
use std::time::{Instant, UNIX_EPOCH};

/// Registers a model from a save_pretrained directory, a GGUF file, or `hf:ORG/NAME` in the local
/// Hugging Face cache; checks that it loads, and keeps it loaded in this backend. Returns the name,
/// or NULL when the name or the source is NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_load_model(
    name: Option<&str>,
    source: Option<&str>,
    task: default!(Option<&str>, "NULL"),
    store: default!(Option<bool>, false),
) -> Option<String> {
    // Not STRICT because task may be NULL; NULL name or source still gives NULL.
    let (name, source) = (name?, source?);
    super::require_writable(c"ai_load_model()");
    let store = store.unwrap_or(false);
    crate::store::catalog::require_new_name(name);
    if !catalog::may_read_server_files(&catalog::current_role()) {
        raise(
            AiError::new(ErrorKind::Privilege, "permission denied to load a model from the server's files")
                .with_hint("Only superusers and members of pg_read_server_files may load models from a path."),
        );
    }
    crate::guc::apply_compute_settings();
    let started = Instant::now();
    let files = ModelFiles::locate(source, crate::guc::hf_cache_dir().as_deref()).or_raise();
    crate::store::require_allowed_path(&files).or_raise();
    let model = AnyModel::load(&files, &crate::guc::load_options()).or_raise();
    let load_time = started.elapsed();
    let task = match task {
        Some(task) => {
            let task = Task::parse(task).or_raise();
            model.require(task, name).or_raise();
            task
        }
        None => model.default_task(),
    };
    let (sha256, files_sha256) = if store {
        let (sha256, files_sha256) = files.sha256_with_digest(&mut super::interrupts).or_raise();
        (sha256, Some(files_sha256))
    } else {
        (files.weights_sha256().or_raise(), None)
    };
    let architecture = model.architecture();
    let entry = catalog::insert(catalog::NewModel {
        name,
        task: task.name(),
        architecture: &architecture,
        source,
        stored: store,
        config: model.config_json().clone(),
        sha256: &sha256,
        files_sha256: files_sha256.as_deref(),
        parent: None,
        training: None,
    });
    // Models loaded from files are for everyone to use, as before model grants; ai_revoke_model takes it back.
    catalog::grant_to_public(name);
    if store {
        stored_files::store(name, &files).or_raise();
    }
    cache::insert(&entry, model, load_time, 0);
    Some(name.to_string())
}

/// Forgets the model in this backend (the next call loads it again); true if it was loaded.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_unload_model(name: &str) -> bool {
    cache::unload(name)
}

/// Removes the model from the catalog, with its stored files; errors if there is none.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_drop_model(name: &str) -> bool {
    super::require_writable(c"ai_drop_model()");
    let entry = catalog::find(name);
    if !catalog::delete(name) {
        if catalog::exists(name) {
            // Row-level security on ai.models hid the row from DELETE.
            raise(
                AiError::new(ErrorKind::Privilege, format!("must be the owner of model \"{name}\" to drop it"))
                    .with_hint("SELECT owner FROM ai.models shows who registered it."),
            );
        }
        raise(AiError::new(ErrorKind::UndefinedModel, format!("model \"{name}\" does not exist")));
    }
    if let Some(entry) = entry {
        stored_files::remove_when_dropped(&entry);
    }
    cache::unload(name);
    true
}

fn timestamp(t: std::time::SystemTime) -> TimestampWithTimeZone {
    // Postgres counts microseconds from 2000-01-01 UTC.
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let micros = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64) - POSTGRES_EPOCH_MICROS;
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| TimestampWithTimeZone::negative_infinity())
}

/// The models loaded in this backend, with their size in memory: those whose catalog row the caller sees and
/// that were loaded for that row (not a registration rolled back since, in a subtransaction too, nor a model
/// dropped or registered again elsewhere).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // pgrx needs the column names inline
fn ai_loaded_models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(architecture, String),
        name!(parameters, i64),
        name!(memory_bytes, i64),
        name!(load_ms, f64),
        name!(loaded_at, TimestampWithTimeZone),
        name!(last_used, TimestampWithTimeZone),
        name!(calls, i64),
    ),
> {
    let mut rows = Vec::new();
    cache::for_each(|name, l| {
        rows.push((
            name.to_string(),
            l.model.architecture(),
            l.model.parameters() as i64,
            l.model.memory_bytes() as i64,
            l.load_time.as_secs_f64() * 1000.0,
            timestamp(l.loaded_at),
            timestamp(l.last_used),
            l.calls as i64,
        ));
    });
    rows.retain(|row| catalog::find(&row.0).is_some_and(|entry| cache::is_loaded_for(&row.0, &entry)));
    TableIterator::new(rows)
}
