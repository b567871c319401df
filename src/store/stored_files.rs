//! Models stored in the database are written once per server and database into the data directory
//! (`pg_ai/models/<database oid>/<files_sha256>/`), then memory-mapped from there like any other model directory.
//!
//! The directory is named by the sha256 of all the model's files (`FilesDigest`) and a copy is checked against
//! that name as it is written, so a catalog row can neither steer where files go nor make another model's
//! copy hold its files. Each database has copies of its own: a drop in one database can only see that
//! database's models, and so removes nothing another database uses.

use super::catalog::{self, CatalogEntry};
use crate::engine::error::{AiError, Result};
use crate::engine::files::{FilesDigest, ModelFiles};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Chunk size of `ai.model_files.data`: bytea values stay far below the 1 GB limit.
pub const CHUNK_BYTES: usize = 64 << 20;

/// The folder of every database's copies.
fn models_root() -> PathBuf {
    // SAFETY: DataDir is set by the postmaster before any backend runs extension code.
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::DataDir) };
    PathBuf::from(data_dir.to_string_lossy().into_owned()).join("pg_ai").join("models")
}

/// The folder of this database's copies.
fn models_dir() -> PathBuf {
    // SAFETY: MyDatabaseId is set before any SQL function or worker that uses stored models runs.
    models_root().join(unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32().to_string())
}

/// The server's copy of the files named `files_sha256`; only 64 lower-case hex digits name one.
fn copy_dir(files_sha256: &str) -> Result<PathBuf> {
    let hex =
        files_sha256.len() == 64 && files_sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(AiError::corrupt(format!("\"{files_sha256}\" is not the sha256 of a stored model's files")));
    }
    Ok(models_dir().join(files_sha256))
}

/// Copies a model's files into `ai.model_files`, one chunk in memory at a time.
pub fn store(name: &str, files: &ModelFiles) -> Result<()> {
    let mut chunk = Vec::new();
    for relative in files.all_files() {
        let path = files.dir.join(&relative);
        let cannot_read = |e: std::io::Error| AiError::missing_file(format!("cannot read {}: {e}", path.display()));
        let mut file = std::fs::File::open(&path).map_err(cannot_read)?;
        for i in 0.. {
            pgrx::check_for_interrupts!();
            chunk.clear();
            (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut chunk).map_err(cannot_read)?;
            // An empty file is stored as one empty chunk, so that it is written out again.
            if chunk.is_empty() && i > 0 {
                break;
            }
            catalog::insert_file_chunk(name, &relative, i, &chunk);
            if chunk.len() < CHUNK_BYTES {
                break;
            }
        }
    }
    Ok(())
}

/// The directory holding the stored files of the model, written out if this server has not yet.
pub fn materialise(entry: &CatalogEntry) -> Result<ModelFiles> {
    let files_sha256 = entry.files_sha256.as_deref().ok_or_else(|| {
        AiError::corrupt(format!("stored model \"{}\" has no files_sha256", entry.name))
            .with_hint("Register stored models with ai_load_model(..., store => true) or by training them.")
    })?;
    let dir = copy_dir(files_sha256)?;
    if !dir.is_dir() {
        // Write into a private directory, then rename: concurrent backends never see half a model.
        let tmp = models_dir().join(format!(".{files_sha256}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let written = write_files(&entry.name, &tmp).and_then(|digest| {
            if digest == files_sha256 {
                Ok(())
            } else {
                Err(AiError::corrupt(format!(
                    "the stored files of model \"{}\" do not match its files_sha256",
                    entry.name
                )))
            }
        });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if std::fs::rename(&tmp, &dir).is_ok() {
            if entry.registered_here {
                remove_on_abort(dir.clone());
            }
        } else {
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

/// Makes a freshly written model directory the server's copy of the stored files `files_sha256`, so that the
/// first use does not write it out again; removed again if the registering transaction does not commit.
pub fn adopt(dir: &Path, files_sha256: &str) -> Result<ModelFiles> {
    let target = copy_dir(files_sha256)?;
    if target.is_dir() || std::fs::rename(dir, &target).is_err() {
        // The same files are there already (or another backend won the race): keep those.
        let _ = std::fs::remove_dir_all(dir);
    } else {
        remove_on_abort(target.clone());
    }
    ModelFiles::in_dir(target)
}

/// Removes the server's copy of a dropped model's files once the drop commits, unless another model uses them.
/// Backends that have the files mapped keep their mapping.
pub fn remove_when_dropped(entry: &CatalogEntry) {
    let Some(files_sha256) = entry.files_sha256.as_deref() else { return };
    let Ok(dir) = copy_dir(files_sha256) else { return };
    if !catalog::files_shared(&entry.name, files_sha256) {
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
            let _ = std::fs::remove_dir_all(dir);
        });
    }
}

fn remove_on_abort(dir: PathBuf) {
    super::rollback::on_rollback(move || {
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// Removes what no process will use again: the copies of databases that were dropped (and those of versions
/// that kept one copy for all databases), and the scratch and half-written directories of processes that no
/// longer exist. `databases` reads pg_database's OIDs; the folder is read before it, so that a database created
/// meanwhile keeps its copies.
pub fn remove_orphans(databases: impl FnOnce() -> Vec<u32>) {
    let Ok(entries) = std::fs::read_dir(models_root()) else { return };
    let entries: Vec<_> = entries.flatten().collect();
    let databases = databases();
    for entry in entries {
        let live =
            entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()).filter(|oid| databases.contains(oid));
        match live {
            Some(_) => remove_dead_writers(&entry.path()),
            None => {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Removes the scratch and half-written directories in `dir` that processes which no longer exist left behind
/// (a backend killed mid-training, a crash). Their names carry the writer's pid: `.train.<pid>.<nanos>` and
/// `.<sha256>.<pid>`.
fn remove_dead_writers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
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

/// Whether a stored path stays inside the model's directory: relative, no empty, `.` or `..` parts (the
/// catalog's CHECK says the same; rows from before it are checked here).
fn inside(path: &str) -> bool {
    !path.starts_with('/') && path.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
}

/// Writes the model's stored files into the new directory `dir`; returns their `FilesDigest`.
fn write_files(name: &str, dir: &Path) -> Result<String> {
    let io = |e: std::io::Error| AiError::internal(format!("cannot write stored model files: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut digest = FilesDigest::default();
    let mut current: Option<(String, std::fs::File, Sha256)> = None;
    let mut failure: Option<AiError> = None;
    fn finish(current: &mut Option<(String, std::fs::File, Sha256)>, digest: &mut FilesDigest) {
        if let Some((path, _, hasher)) = current.take() {
            digest.add(&path, hasher.finalize().into());
        }
    }
    catalog::for_each_file_chunk(name, |path, data| {
        if failure.is_some() {
            return;
        }
        let result = (|| -> Result<()> {
            if !inside(path) {
                return Err(AiError::corrupt(format!("stored file path \"{path}\" leaves the model directory")));
            }
            if current.as_ref().map(|(p, _, _)| p.as_str()) != Some(path) {
                finish(&mut current, &mut digest);
                let target = dir.join(path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                // create_new: never through a link, never over a file written before.
                let file = std::fs::OpenOptions::new().write(true).create_new(true).open(target).map_err(io)?;
                current = Some((path.to_string(), file, Sha256::new()));
            }
            let (_, file, hasher) = current.as_mut().expect("file opened above");
            hasher.update(data);
            file.write_all(data).map_err(io)
        })();
        failure = result.err();
    });
    if let Some(e) = failure {
        return Err(e);
    }
    finish(&mut current, &mut digest);
    Ok(digest.hex())
}
