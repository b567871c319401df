//! Models stored in the database are written once per server into the data directory
//! (`pg_ai/models/<sha256>/`), then memory-mapped from there like any other model directory.

use super::catalog;
use crate::engine::error::{AiError, Result};
use crate::engine::files::ModelFiles;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Chunk size of `ai.model_files.data`: bytea values stay far below the 1 GB limit.
pub const CHUNK_BYTES: usize = 64 << 20;

fn models_dir() -> PathBuf {
    // SAFETY: DataDir is set by the postmaster before any backend runs extension code.
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::DataDir) };
    PathBuf::from(data_dir.to_string_lossy().into_owned()).join("pg_ai").join("models")
}

/// Copies a model's files into `ai.model_files`.
pub fn store(name: &str, files: &ModelFiles) -> Result<()> {
    for relative in files.all_files() {
        let path = files.dir.join(&relative);
        let bytes =
            std::fs::read(&path).map_err(|e| AiError::missing_file(format!("cannot read {}: {e}", path.display())))?;
        for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            pgrx::check_for_interrupts!();
            catalog::insert_file_chunk(name, &relative, i as i32, chunk);
        }
    }
    Ok(())
}

/// The directory holding the stored files of `name`, written out if this server has not yet.
pub fn materialise(name: &str, sha256: &str) -> Result<ModelFiles> {
    let dir = models_dir().join(sha256);
    if !dir.join("config.json").is_file() {
        // Write into a private directory, then rename: concurrent backends never see half a model.
        let tmp = models_dir().join(format!(".{sha256}.{}", std::process::id()));
        write_files(name, &tmp).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another backend finished first; its copy is identical.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    ModelFiles::in_dir(dir)
}

/// A fresh private directory for a model being trained; `adopt` moves it into place once it is stored.
pub fn scratch_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = models_dir().join(format!(".train.{}.{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| AiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Makes a freshly written model directory the server's copy of the stored model `sha256`, so that the first
/// use does not write it out again.
pub fn adopt(dir: &Path, sha256: &str) -> Result<ModelFiles> {
    let target = models_dir().join(sha256);
    if target.join("config.json").is_file() || std::fs::rename(dir, &target).is_err() {
        // The same weights are there already (or another backend won the race): keep those.
        let _ = std::fs::remove_dir_all(dir);
    }
    ModelFiles::in_dir(target)
}

/// Removes the scratch and half-written directories that processes which no longer exist left behind (a
/// backend killed mid-training, a crash). Their names carry the writer's pid: `.train.<pid>.<nanos>` and
/// `.<sha256>.<pid>`.
pub fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(models_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = match name.strip_prefix(".train.") {
            Some(rest) => rest.split('.').next(),
            None if name.starts_with('.') => name.rsplit('.').next(),
            None => None,
        };
        let Some(pid) = pid.and_then(|p| p.parse::<libc::pid_t>().ok()).filter(|p| *p > 0) else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_files(name: &str, dir: &Path) -> Result<()> {
    let io = |e: std::io::Error| AiError::internal(format!("cannot write stored model files: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut current: Option<(String, std::fs::File)> = None;
    let mut failure = None;
    catalog::for_each_file_chunk(name, |path, data| {
        if failure.is_some() {
            return;
        }
        let result = (|| -> std::io::Result<()> {
            if path.starts_with('/') || path.split('/').any(|part| part == ".." || part.is_empty()) {
                return Err(std::io::Error::other(format!("stored file path \"{path}\" leaves the model directory")));
            }
            if current.as_ref().map(|(p, _)| p.as_str()) != Some(path) {
                let target = dir.join(path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                current = Some((path.to_string(), std::fs::File::create(target)?));
            }
            current.as_mut().expect("file opened above").1.write_all(data)
        })();
        failure = result.err();
    });
    match failure {
        Some(e) => Err(io(e)),
        None => Ok(()),
    }
}
