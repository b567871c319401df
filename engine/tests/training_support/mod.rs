//! Shared by the training tests: fixture paths, an in-memory data source, a recording progress.
#![allow(dead_code)] // each test file uses a part of it

use pg_ai_engine::error::{AiError, Result};
use pg_ai_engine::train::{DataSource, Example, Progress, StepReport};
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/fixtures")
}

/// 200 short English sentences (tests/fixtures/train/sentences.txt).
pub fn sentences() -> Vec<String> {
    std::fs::read_to_string(fixtures().join("train/sentences.txt")).unwrap().lines().map(str::to_string).collect()
}

/// Rows in memory, handed over in chunks as a cursor would.
pub struct Rows {
    pub examples: Vec<Example>,
    pub chunk: usize,
    pub passes: usize,
}

impl Rows {
    pub fn texts(texts: &[String]) -> Rows {
        Rows::new(texts.iter().map(|t| Example { text: t.clone(), ..Default::default() }).collect())
    }

    pub fn labelled(rows: &[(String, Option<String>)]) -> Rows {
        Rows::new(
            rows.iter().map(|(t, l)| Example { text: t.clone(), label: l.clone(), ..Default::default() }).collect(),
        )
    }

    /// Texts with one tag per word (a tag list of None is a NULL array, a None tag a NULL element).
    pub fn tagged(rows: &[(String, Option<Vec<Option<String>>>)]) -> Rows {
        Rows::new(
            rows.iter()
                .map(|(t, tags)| Example { text: t.clone(), tags: tags.clone(), ..Default::default() })
                .collect(),
        )
    }

    pub fn new(examples: Vec<Example>) -> Rows {
        Rows { examples, chunk: 7, passes: 0 }
    }
}

impl DataSource for Rows {
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> Result<()>) -> Result<()> {
        self.passes += 1;
        for chunk in self.examples.chunks(self.chunk) {
            each(chunk.to_vec())?;
        }
        Ok(())
    }
}

/// Records reports; stops with an error after `stop_after` checks when set.
#[derive(Default)]
pub struct Recorder {
    pub reports: Vec<StepReport>,
    pub checks: usize,
    pub stop_after: Option<usize>,
}

impl Progress for Recorder {
    fn check(&mut self) -> Result<()> {
        self.checks += 1;
        match self.stop_after {
            Some(n) if self.checks > n => Err(AiError::invalid("canceling statement due to user request")),
            _ => Ok(()),
        }
    }

    fn report(&mut self, step: &StepReport) {
        self.reports.push(step.clone());
    }
}

/// A fresh directory under the system's temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pg_ai_train_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
