//! Training speed, engine only: tokens per second for MLM (BERT), CLM (GPT-2) and seq2seq (T5: each row to its
//! words in reverse order) pretraining on a fixed small configuration (hidden 128, 2 layers, 4 heads, vocabulary
//! 2000, batch 16, up to 128 tokens a row), 100 steps each, on Debian's fortunes (or
//! tests/fixtures/train/sentences.txt where the fortunes package is absent). Seq2seq counts source and target
//! tokens.
//!
//!     cargo bench -p pg_ai_engine --bench train   # benches/train.sh runs PyTorch on the same configuration and rows
//!
//! The trained directories go to target/bench-train/{mlm,clm,seq2seq}: benches/train_torch.py reads their config and
//! tokenizer so that both sides train the same architecture on the same tokens.

use pg_ai_engine::error::Result;
use pg_ai_engine::train::{pretrain, DataSource, Example, Objective, Progress, StepReport, TrainOptions};
use std::path::{Path, PathBuf};

/// The rows; with `reversed`, each text's words in reverse order are its target.
struct Texts {
    texts: Vec<String>,
    reversed: bool,
}

impl DataSource for Texts {
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> Result<()>) -> Result<()> {
        let target = |t: &str| self.reversed.then(|| t.split(' ').rev().collect::<Vec<_>>().join(" "));
        for chunk in self.texts.chunks(256) {
            each(chunk.iter().map(|t| Example { text: t.clone(), target: target(t), ..Default::default() }).collect())?;
        }
        Ok(())
    }
}

struct Quiet;

impl Progress for Quiet {
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
    fn report(&mut self, _: &StepReport) {}
}

/// Every fortune of the fortunes package (strfile text files: entries end at a line holding "%").
pub fn fortunes() -> Option<Vec<String>> {
    let dir = Path::new("/usr/share/games/fortunes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none() && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(file).ok()?).into_owned();
        out.extend(
            text.split("\n%\n").map(|f| f.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|f| !f.is_empty()),
        );
    }
    (!out.is_empty()).then_some(out)
}

fn main() {
    let threads = std::env::var("PG_AI_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    // As a backend does with the default pg_ai.keep_freed_memory.
    pg_ai_engine::allocator::keep_freed_memory(pg_ai_engine::allocator::DEFAULT_KEEP_FREED);
    pg_ai_engine::threads::configure(threads);
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let (texts, source) = match fortunes() {
        Some(t) => (t, "fortunes"),
        None => {
            let s = std::fs::read_to_string(root.join("tests/fixtures/train/sentences.txt")).unwrap();
            (s.lines().map(str::to_string).collect(), "sentences.txt")
        }
    };
    println!("{} rows of {source}", texts.len());
    let options = TrainOptions::from_json(&serde_json::json!({
        "max_steps": 100, "batch_size": 16, "max_length": 128, "hidden_size": 128, "layers": 2, "heads": 4,
        "intermediate_size": 512, "vocab_size": 2000, "test_size": 0.01, "dropout": 0.1,
    }))
    .unwrap();
    for (objective, name) in [(Objective::Mlm, "mlm"), (Objective::Clm, "clm"), (Objective::Seq2Seq, "seq2seq")] {
        let out = root.join("target/bench-train").join(name);
        let _ = std::fs::remove_dir_all(&out);
        let mut rows = Texts { texts: texts.clone(), reversed: objective == Objective::Seq2Seq };
        let outcome = pretrain(objective, &mut rows, &options, &mut Quiet, &out).unwrap();
        let m = &outcome.metrics;
        println!("{name} (hidden 128, 2 layers, batch 16)");
        println!(
            "  training: {} steps in {:.1} s, {:.0} tokens/s",
            outcome.steps,
            m["seconds"].as_f64().unwrap(),
            m["tokens_per_second"].as_f64().unwrap()
        );
    }
}
