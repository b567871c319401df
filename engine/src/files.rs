//! Finding a model's files: a `save_pretrained` directory, or `hf:ORG/NAME` in the local
//! Hugging Face cache. pg_ai never downloads; it reads what is on the server's disk.

use crate::error::{AiError, ErrorKind, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    /// Safetensors files, one or the shards named by `model.safetensors.index.json`.
    pub weights: Vec<PathBuf>,
}

/// Files that the loaders read when present but `store => true` does not copy.
const UNSTORED_FILES: &[&str] = &["generation_config.json"];

/// Files that make up a model besides its weights; `store => true` copies the ones present.
pub const SIDE_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "model.safetensors.index.json",
];

impl ModelFiles {
    /// Resolves a source string to a directory and checks that the files pg_ai needs are there.
    pub fn locate(source: &str, hf_cache: Option<&Path>) -> Result<Self> {
        let dir = match source.strip_prefix("hf:") {
            Some(repo) => hf_snapshot(repo, hf_cache)?,
            None => {
                let path = PathBuf::from(source);
                if path.is_absolute() && path.extension().is_some_and(|e| e == "gguf") {
                    if !path.exists() {
                        return Err(AiError::missing_file(format!("model file \"{source}\" does not exist"))
                            .with_hint("The path is read by the database server, not by the client."));
                    }
                    require_regular(&path)?;
                    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    return Ok(ModelFiles { dir, weights: vec![path] });
                }
                if !path.is_absolute() {
                    return Err(AiError::invalid(format!("model source \"{source}\" is not an absolute path"))
                        .with_hint(
                            "Give a directory written by save_pretrained, e.g. '/srv/models/bert', or 'hf:ORG/NAME'.",
                        ));
                }
                if !path.is_dir() {
                    return Err(AiError::missing_file(format!("model directory \"{source}\" does not exist"))
                        .with_hint("The path is read by the database server, not by the client."));
                }
                path
            }
        };
        Self::in_dir(dir)
    }

    /// The GGUF file, when the model is one.
    pub fn gguf(&self) -> Option<&Path> {
        match self.weights.as_slice() {
            [only] if only.extension().is_some_and(|e| e == "gguf") => Some(only),
            _ => None,
        }
    }

    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        // Tell an unreadable directory from one that lacks files.
        std::fs::read_dir(&dir).map_err(|e| {
            AiError::new(ErrorKind::System, format!("cannot read model directory {}: {e}", dir.display()))
                .with_hint("The directory is read by the database server's operating-system user.")
        })?;
        for name in SIDE_FILES.iter().chain(UNSTORED_FILES) {
            require_regular(&dir.join(name))?;
        }
        // A stored GGUF model comes back as a directory holding just its file.
        if !dir.join("config.json").is_file() {
            let ggufs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| Some(e.ok()?.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                        .collect()
                })
                .unwrap_or_default();
            if let [only] = ggufs.as_slice() {
                require_regular(only)?;
                return Ok(ModelFiles { dir, weights: vec![only.clone()] });
            }
        }
        for needed in ["config.json", "tokenizer.json"] {
            if !dir.join(needed).is_file() {
                return Err(AiError::missing_file(format!("{} has no {needed}", dir.display())).with_hint(
                    "pg_ai reads directories written by transformers' save_pretrained (model and tokenizer).",
                ));
            }
        }
        let weights = weight_files(&dir)?;
        for path in &weights {
            require_regular(path)?;
        }
        Ok(ModelFiles { dir, weights })
    }

    /// Every file of the model that exists, as the operating system resolves it (links followed), for checking
    /// where a model's files really are.
    pub fn resolved_files(&self) -> Result<Vec<PathBuf>> {
        self.all_files()
            .iter()
            .map(String::as_str)
            .chain(UNSTORED_FILES.iter().copied())
            .map(|relative| self.dir.join(relative))
            .filter(|path| path.exists())
            .map(|path| {
                std::fs::canonicalize(&path)
                    .map_err(|e| AiError::missing_file(format!("cannot resolve {}: {e}", path.display())))
            })
            .collect()
    }

    /// The relative paths of every file of the model that exists, weights included.
    pub fn all_files(&self) -> Vec<String> {
        if let Some(gguf) = self.gguf() {
            return gguf.file_name().and_then(|n| n.to_str()).map(str::to_string).into_iter().collect();
        }
        let mut files: Vec<String> =
            SIDE_FILES.iter().filter(|f| self.dir.join(f).is_file()).map(|f| f.to_string()).collect();
        files.extend(self.weights.iter().filter_map(|w| w.file_name()?.to_str().map(str::to_string)));
        files
    }

    /// `weights_sha256` and the `FilesDigest` of every file `all_files` lists, reading each file once (a stored
    /// model needs both, and its weights can be gigabytes); `between` runs before each file.
    pub fn sha256_with_digest(&self, between: &mut dyn FnMut()) -> Result<(String, String)> {
        let (mut weights, mut digest) = (Sha256::new(), FilesDigest::default());
        // all_files lists the weights last, in the order weights_sha256 reads them.
        for relative in self.all_files() {
            between();
            let path = self.dir.join(&relative);
            let is_weight = self.weights.contains(&path);
            let mut file = Sha256::new();
            read_chunks(&path, |bytes| {
                file.update(bytes);
                if is_weight {
                    weights.update(bytes);
                }
            })?;
            digest.add(&relative, file.finalize().into());
        }
        Ok((format!("{:x}", weights.finalize()), digest.hex()))
    }

    /// sha256 over the weight files in order, so a model can be recognised whatever its name.
    pub fn weights_sha256(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        for path in &self.weights {
            read_chunks(path, |bytes| hasher.update(bytes))?;
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    pub fn read_json(&self, name: &str) -> Result<Option<Value>> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AiError::corrupt(format!("{} is not valid JSON: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AiError::missing_file(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// A file the model reads, when present, must be a regular file (links are followed): opening a FIFO or a
/// device would block the backend or read without end.
fn require_regular(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(AiError::corrupt(format!("{} is not a regular file", path.display()))
            .with_hint("Model files must be plain files (a link to one is fine), not FIFOs, devices or directories.")),
        // Absent, or a link that leads nowhere: the loaders say which files they miss.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AiError::new(ErrorKind::System, format!("cannot read {}: {e}", path.display()))),
    }
}

/// Calls `f` with the file's bytes, a megabyte at a time.
fn read_chunks(path: &Path, mut f: impl FnMut(&[u8])) -> Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut file =
        std::fs::File::open(path).map_err(|e| AiError::missing_file(format!("cannot open {}: {e}", path.display())))?;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| AiError::missing_file(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        f(&buffer[..n]);
    }
}

/// sha256 over a set of files, from each file's relative path and the sha256 of its bytes, in the byte order of
/// the paths: it names a stored model's files whatever order they are written in.
#[derive(Default)]
pub struct FilesDigest {
    files: Vec<(String, [u8; 32])>,
}

impl FilesDigest {
    pub fn add(&mut self, path: &str, content_sha256: [u8; 32]) {
        self.files.push((path.to_string(), content_sha256));
    }

    pub fn hex(mut self) -> String {
        self.files.sort();
        let mut hasher = Sha256::new();
        for (path, content) in &self.files {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(content);
        }
        format!("{:x}", hasher.finalize())
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| AiError::missing_file(format!("cannot read {}: {e}", index.display())))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| AiError::corrupt(format!("{} is not valid JSON: {e}", index.display())))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| AiError::corrupt(format!("{} has no weight_map", index.display())))?;
        let mut shards: Vec<String> = map.values().filter_map(Value::as_str).map(str::to_string).collect();
        shards.sort();
        shards.dedup();
        let mut paths = Vec::with_capacity(shards.len());
        for shard in shards {
            // Shard names come from the file; keep them inside the model directory.
            if shard.contains('/') || shard.contains("..") {
                return Err(AiError::corrupt(format!("{} names a shard outside the directory", index.display())));
            }
            let path = dir.join(&shard);
            if !path.is_file() {
                return Err(AiError::missing_file(format!("weight shard {} is missing", path.display())));
            }
            paths.push(path);
        }
        return Ok(paths);
    }
    let hint = if dir.join("pytorch_model.bin").is_file() {
        "Only safetensors weights are read; convert pytorch_model.bin with save_pretrained(safe_serialization=True)."
    } else {
        "Save the model with transformers' save_pretrained, which writes model.safetensors."
    };
    Err(AiError::missing_file(format!("{} has no model.safetensors", dir.display())).with_hint(hint))
}

/// The snapshot directory of `ORG/NAME` in the Hugging Face cache (hub layout: refs/main).
fn hf_snapshot(repo: &str, cache_dir: Option<&Path>) -> Result<PathBuf> {
    if repo.is_empty() || repo.contains("..") || repo.starts_with('/') {
        return Err(AiError::invalid(format!("\"hf:{repo}\" is not a Hugging Face model id")).with_hint(
            "Write it as 'hf:ORG/NAME', e.g. 'hf:bert-base-uncased' or 'hf:google-bert/bert-base-uncased'.",
        ));
    }
    let cache = match cache_dir {
        Some(dir) => hf_hub::Cache::new(dir.to_path_buf()),
        None => hf_hub::Cache::from_env(),
    };
    let config = cache.model(repo.to_string()).get("config.json").ok_or_else(|| {
        AiError::missing_file(format!("model \"{repo}\" is not in the Hugging Face cache at {}", cache.path().display()))
            .with_hint("pg_ai does not download models. Fetch it on the server first (huggingface-cli download) or set pg_ai.hf_cache_dir.")
    })?;
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_snapshot_in_the_hub_cache() {
        let root = std::env::temp_dir().join(format!("pg_ai_hf_{}", std::process::id()));
        let snapshot = root.join("models--org--tiny/snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(root.join("models--org--tiny/refs")).unwrap();
        std::fs::write(root.join("models--org--tiny/refs/main"), "abc123").unwrap();
        std::fs::write(snapshot.join("config.json"), "{}").unwrap();
        assert_eq!(hf_snapshot("org/tiny", Some(&root)).unwrap(), snapshot);
        let missing = hf_snapshot("org/absent", Some(&root)).unwrap_err();
        assert_eq!(missing.kind, crate::error::ErrorKind::MissingFile);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn model_files_must_be_regular_files() {
        let dir = std::env::temp_dir().join(format!("pg_ai_fifo_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        let fifo = std::ffi::CString::new(dir.join("modules.json").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // Refused from its metadata: nothing opens the FIFO, so nothing blocks.
        let e = ModelFiles::in_dir(dir.clone()).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::CorruptFile);
        assert!(e.message.ends_with("modules.json is not a regular file"), "{}", e.message);
        std::fs::remove_file(dir.join("modules.json")).unwrap();
        std::os::unix::fs::symlink(dir.join("config.json"), dir.join("modules.json")).unwrap();
        // A link to a regular file is fine; the directory has no weights.
        assert!(ModelFiles::in_dir(dir.clone()).unwrap_err().message.contains("has no model.safetensors"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn one_read_gives_the_weights_sha256_and_the_files_digest() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/fixtures/models/bert-classifier");
        let files = ModelFiles::in_dir(dir).unwrap();
        let mut calls = 0;
        let (weights, digest) = files.sha256_with_digest(&mut || calls += 1).unwrap();
        assert_eq!(weights, files.weights_sha256().unwrap());
        assert_eq!(calls, files.all_files().len());
        let mut expected = FilesDigest::default();
        for relative in files.all_files() {
            let bytes = std::fs::read(files.dir.join(&relative)).unwrap();
            expected.add(&relative, Sha256::digest(&bytes).into());
        }
        assert_eq!(digest, expected.hex());
    }

    #[test]
    fn relative_paths_are_refused() {
        let e = ModelFiles::locate("models/bert", None).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidParameter);
    }
}
