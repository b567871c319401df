//! Shared by the training tests: fixture paths, an in-memory data source, a silent progress.

use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
