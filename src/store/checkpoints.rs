//! A background job's latest training checkpoint, kept in `ai.job_checkpoints` so that it survives a restart
//! and replicates like the rest of the database. Each checkpoint replaces the one before.

use super::stored_files::CHUNK_BYTES;
use crate::engine::error::{AiError, Result};
use pgrx::prelude::*;
use std::path::Path;

fn spi(e: pgrx::spi::Error) -> AiError {
    AiError::internal(format!("cannot access ai.job_checkpoints: {e}"))
}

/// Replaces job `id`'s checkpoint with the files of `dir`, written after `step` steps.
pub fn save(id: i64, step: usize, dir: &Path) -> Result<()> {
    Spi::run_with_args("DELETE FROM ai.job_checkpoints WHERE job_id = $1", &[id.into()]).map_err(spi)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .map_err(|e| AiError::internal(format!("cannot list {}: {e}", dir.display())))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes =
            std::fs::read(&path).map_err(|e| AiError::internal(format!("cannot read {}: {e}", path.display())))?;
        for (chunk, data) in bytes.chunks(CHUNK_BYTES).enumerate() {
            Spi::run_with_args(
                "INSERT INTO ai.job_checkpoints (job_id, path, chunk, data) VALUES ($1, $2, $3, $4)",
                &[id.into(), name.as_str().into(), (chunk as i32).into(), data.into()],
            )
            .map_err(spi)?;
        }
    }
    Spi::run_with_args("UPDATE ai.jobs SET checkpoint_step = $2 WHERE id = $1", &[id.into(), (step as i32).into()])
        .map_err(spi)
}

/// Writes job `id`'s checkpoint into `dir`, chunk by chunk; false when it has none.
pub fn load(id: i64, dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|e| AiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    let (mut current, mut failure): (Option<(String, std::fs::File)>, Option<AiError>) = (None, None);
    super::read_only::for_each_row(
        "SELECT path, data FROM ai.job_checkpoints WHERE job_id = $1::bigint ORDER BY path, chunk",
        &[&id.to_string()],
        |row| {
            if failure.is_some() {
                return;
            }
            let (name, data) = (row.get::<String>(1).unwrap_or_default(), row.get::<&[u8]>(2).unwrap_or_default());
            failure = write_chunk(dir, &mut current, &name, data).err();
        },
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(current.is_some()),
    }
}

fn write_chunk(dir: &Path, current: &mut Option<(String, std::fs::File)>, name: &str, data: &[u8]) -> Result<()> {
    use std::io::Write;
    if name.contains('/') || name.starts_with('.') {
        return Err(AiError::corrupt(format!("checkpoint file name \"{name}\" is not a plain file name")));
    }
    let io = |e: std::io::Error| AiError::internal(format!("cannot write checkpoint file {name}: {e}"));
    if current.as_ref().map(|(n, _)| n.as_str()) != Some(name) {
        *current = Some((name.to_string(), std::fs::File::create(dir.join(name)).map_err(io)?));
    }
    current.as_mut().expect("opened above").1.write_all(data).map_err(io)
}

pub fn delete(id: i64) -> Result<()> {
    Spi::run_with_args("DELETE FROM ai.job_checkpoints WHERE job_id = $1", &[id.into()]).map_err(spi)
}
