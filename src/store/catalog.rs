//! Rows of `ai.models`, read and written through SPI.

use crate::engine::error::{AiError, ErrorKind};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};

pub struct CatalogEntry {
    pub name: String,
    pub source: String,
    pub stored: bool,
    pub sha256: String,
    /// Stored models: sha256 over all their files, the name of the server's written-out copy.
    pub files_sha256: Option<String>,
    /// The registering role: a model from a path loads only while this role may read the server's files.
    pub owner: String,
    /// Whether this transaction registered it: what it writes out for the model goes if it rolls back.
    pub registered_here: bool,
    /// Registration time as text: with sha256 it tells a cached model from a re-registered one.
    pub created_at: String,
}

pub struct NewModel<'a> {
    pub name: &'a str,
    pub task: &'a str,
    pub architecture: &'a str,
    pub source: &'a str,
    pub stored: bool,
    pub config: serde_json::Value,
    pub sha256: &'a str,
    pub files_sha256: Option<&'a str>,
    /// For trained models: the model they started from, and how they were trained.
    pub parent: Option<&'a str>,
    pub training: Option<serde_json::Value>,
}

pub fn find(name: &str) -> Option<CatalogEntry> {
    let mut found = None;
    super::read_only::for_each_row(
        "SELECT name, source, stored, sha256, created_at::text, files_sha256, owner::text, xmin::text::bigint
         FROM ai.models WHERE name = $1",
        &[name],
        |row| {
            found = Some(CatalogEntry {
                name: row.get::<String>(1).unwrap_or_default(),
                source: row.get::<String>(2).unwrap_or_default(),
                stored: row.get::<bool>(3).unwrap_or(false),
                sha256: row.get::<String>(4).unwrap_or_default(),
                created_at: row.get::<String>(5).unwrap_or_default(),
                files_sha256: row.get::<String>(6),
                owner: row.get::<String>(7).unwrap_or_default(),
                registered_here: row.get::<i64>(8).is_some_and(|xmin| {
                    // SAFETY: asks whether an xid belongs to this transaction or one of its subtransactions.
                    unsafe { pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(xmin as u32)) }
                }),
            })
        },
    );
    found
}

/// Whether the name is taken, also by a model the caller may not see (names are unique on the server).
pub fn exists(name: &str) -> bool {
    Spi::get_one_with_args::<bool>("SELECT ai.model_name_taken($1)", &[name.into()]).ok().flatten().unwrap_or(false)
}

/// Adds the row and returns it as `find` would, without reading it back. A name taken meanwhile by another
/// session (or by a model the caller may not see) is 42710, as `require_new_name` says it.
pub fn insert(m: NewModel) -> CatalogEntry {
    let args = [
        m.name.into(),
        m.task.into(),
        m.architecture.into(),
        m.source.into(),
        m.stored.into(),
        JsonB(m.config).into(),
        m.sha256.into(),
        m.files_sha256.into(),
        m.parent.into(),
        m.training.map(JsonB).into(),
    ];
    let inserted = PgTryBuilder::new(|| {
        Spi::get_two_with_args::<String, String>(
            // Casts outside RETURNING: Citus allows only immutable functions there (the catalog may be its
            // reference tables, see ai_distribute_models).
            "WITH added AS (
                 INSERT INTO ai.models (name, task, architecture, source, stored, config, sha256, files_sha256,
                                        parent, training)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING created_at, owner)
             SELECT created_at::text, owner::text FROM added",
            &args,
        )
        .unwrap_or_else(|e| error!("cannot register the model: {e}"))
    })
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, |_| {
        crate::error::raise(
            AiError::new(ErrorKind::Duplicate, format!("model \"{}\" already exists", m.name))
                .with_hint("Another session registered it first; choose another name."),
        )
    })
    .execute();
    let (created_at, owner) = (inserted.0.unwrap_or_default(), inserted.1.unwrap_or_default());
    CatalogEntry {
        name: m.name.to_string(),
        source: m.source.to_string(),
        stored: m.stored,
        sha256: m.sha256.to_string(),
        files_sha256: m.files_sha256.map(str::to_string),
        owner,
        registered_here: true,
        created_at,
    }
}

/// Lets every role use the model (ai_grant_model's default).
pub fn grant_to_public(name: &str) {
    Spi::run_with_args("INSERT INTO ai.model_users (model, grantee) VALUES ($1, '-')", &[name.into()])
        .unwrap_or_else(|e| error!("cannot grant the model to public: {e}"));
}

/// Whether another model than `name` has its files written out under `files_sha256`.
pub fn files_shared(name: &str, files_sha256: &str) -> bool {
    Spi::get_one_with_args::<bool>("SELECT ai.files_in_use($1, $2)", &[name.into(), files_sha256.into()])
        .ok()
        .flatten()
        .unwrap_or(true)
}

/// Deletes the row (its stored files go with it); false if there was none.
pub fn delete(name: &str) -> bool {
    Spi::get_one_with_args::<String>("DELETE FROM ai.models WHERE name = $1 RETURNING name", &[name.into()])
        .ok()
        .flatten()
        .is_some()
}

pub fn insert_file_chunk(model: &str, path: &str, chunk: i32, data: &[u8]) {
    Spi::run_with_args(
        "INSERT INTO ai.model_files (model, path, chunk, data) VALUES ($1, $2, $3, $4)",
        &[model.into(), path.into(), chunk.into(), data.into()],
    )
    .unwrap_or_else(|e| error!("cannot store model file {path}: {e}"));
}

/// Calls `f` with each stored file chunk of `model`, in path and chunk order, a few chunks in memory at a time.
pub fn for_each_file_chunk(model: &str, mut f: impl FnMut(&str, &[u8])) {
    super::read_only::for_each_row(
        "SELECT path, data FROM ai.model_files WHERE model = $1 ORDER BY path COLLATE \"C\", chunk",
        &[model],
        |row| f(&row.get::<String>(1).unwrap_or_default(), row.get::<&[u8]>(2).unwrap_or_default()),
    );
}

/// The current role, as regrole writes it.
pub fn current_role() -> String {
    Spi::get_one::<String>("SELECT current_user::regrole::text").ok().flatten().unwrap_or_default()
}

/// Superusers and members of pg_read_server_files may read model files on the server; `role` is a role's name as
/// regrole writes it (quoted where needed).
pub fn may_read_server_files(role: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_has_role($1::regrole::oid, 'pg_read_server_files', 'USAGE')",
        &[role.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// A name for a new model: not empty, not taken (42710 with a hint otherwise).
pub fn require_new_name(name: &str) {
    use crate::engine::error::{AiError, ErrorKind};
    if name.trim().is_empty() {
        crate::error::raise(AiError::invalid("the model name is empty"));
    }
    if exists(name) {
        crate::error::raise(
            AiError::new(ErrorKind::Duplicate, format!("model \"{name}\" already exists"))
                .with_hint(format!("Drop it first with ai_drop_model('{name}'), or choose another name.")),
        );
    }
}
