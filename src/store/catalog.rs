//! Rows of `ai.models`, read and written through SPI.

use pgrx::prelude::*;
use pgrx::JsonB;

pub struct CatalogEntry {
    pub name: String,
    pub source: String,
    pub stored: bool,
    pub sha256: String,
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
    /// For trained models: the model they started from, and how they were trained.
    pub parent: Option<&'a str>,
    pub training: Option<serde_json::Value>,
}

pub fn find(name: &str) -> Option<CatalogEntry> {
    let mut found = None;
    super::read_only::for_each_row(
        "SELECT name, source, stored, sha256, created_at::text FROM ai.models WHERE name = $1",
        &[name],
        |row| {
            found = Some(CatalogEntry {
                name: row.get::<String>(1).unwrap_or_default(),
                source: row.get::<String>(2).unwrap_or_default(),
                stored: row.get::<bool>(3).unwrap_or(false),
                sha256: row.get::<String>(4).unwrap_or_default(),
                created_at: row.get::<String>(5).unwrap_or_default(),
            })
        },
    );
    found
}

pub fn exists(name: &str) -> bool {
    Spi::get_one_with_args::<bool>("SELECT EXISTS (SELECT 1 FROM ai.models WHERE name = $1)", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Adds the row and returns it as `find` would, without reading it back.
pub fn insert(m: NewModel) -> CatalogEntry {
    let created_at = Spi::get_one_with_args::<String>(
        "INSERT INTO ai.models (name, task, architecture, source, stored, config, sha256, parent, training)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at::text",
        &[
            m.name.into(),
            m.task.into(),
            m.architecture.into(),
            m.source.into(),
            m.stored.into(),
            JsonB(m.config).into(),
            m.sha256.into(),
            m.parent.into(),
            m.training.map(JsonB).into(),
        ],
    )
    .unwrap_or_else(|e| error!("cannot register the model: {e}"))
    .unwrap_or_default();
    CatalogEntry {
        name: m.name.to_string(),
        source: m.source.to_string(),
        stored: m.stored,
        sha256: m.sha256.to_string(),
        created_at,
    }
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
        "SELECT path, data FROM ai.model_files WHERE model = $1 ORDER BY path, chunk",
        &[model],
        |row| f(&row.get::<String>(1).unwrap_or_default(), row.get::<&[u8]>(2).unwrap_or_default()),
    );
}

/// Superusers and members of pg_read_server_files may read model files on the server.
pub fn may_read_server_files() -> bool {
    Spi::get_one::<bool>("SELECT pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'USAGE')")
        .ok()
        .flatten()
        .unwrap_or(false)
}
