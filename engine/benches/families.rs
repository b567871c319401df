//! Sequence classification with the BERT-base-size encoder families (benches/families.sh makes the models and
//! runs transformers on the same ones in the same sitting):
//!
//!     cargo bench -p pg_ai_engine --bench families -- DIR...
//!
//! For each model directory, in f32 and with 8-bit linear layers: the median of 20 warm single-row calls, and rows per second over 256 rows as one
//! array (batches of 32, as ai_classify over text[]). PG_AI_THREADS sets the threads (default: one per core).

use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::kernels::int8::Int8;
use pg_ai_engine::models::{AnyModel, LoadOptions};
use pg_ai_engine::tasks::classify::classify;
use std::time::{Duration, Instant};

/// The rows both sides classify: short, varied sentences like rows of a table (as benches/families.py).
fn texts(n: usize) -> Vec<String> {
    let subjects = ["the cat", "alice", "bob", "the dog", "a man", "my neighbour", "the team", "grace"];
    let verbs = ["sat in", "is eating", "ran to", "lives in", "is playing", "looked at", "found"];
    let objects = ["the park", "bread", "paris", "the river", "tennis", "a new film", "the old house"];
    (0..n)
        .map(|i| {
            let (s, v, o) = (subjects[i % 8], verbs[(i / 8) % 7], objects[(i / 56) % 7]);
            format!("{s} {v} {o} and then {s} {v} {o} again .")
        })
        .collect()
}

fn main() {
    let threads = std::env::var("PG_AI_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    pg_ai_engine::allocator::keep_freed_memory(pg_ai_engine::allocator::DEFAULT_KEEP_FREED);
    pg_ai_engine::threads::configure(threads);
    let rows = texts(256);
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    for dir in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let name = std::path::Path::new(&dir).file_name().unwrap().to_string_lossy().to_string();
        // In f32, and with the linear layers in 8 bits (pg_ai.int8_encoders).
        for (int8, kind) in [(false, ""), (true, " int8")] {
            let options = LoadOptions { int8: Int8 { encoders: int8, decoders: false }, ..Default::default() };
            let files = ModelFiles::in_dir(dir.clone().into()).expect("model files");
            let loaded = AnyModel::load(&files, &options).expect("model loads");
            let model = loaded.classifier().expect("a classifier");
            classify(model, &rows[..1], &mut || ()).unwrap();
            let mut single: Vec<Duration> = (0..20)
                .map(|i| {
                    let started = Instant::now();
                    classify(model, &rows[i..i + 1], &mut || ()).unwrap();
                    started.elapsed()
                })
                .collect();
            single.sort();
            let started = Instant::now();
            classify(model, &rows, &mut || ()).unwrap();
            let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
            println!(
                "pg_ai{kind} {name}: single row {:.1} ms, 256 rows as an array {rate:.1} rows/s",
                single[10].as_secs_f64() * 1e3
            );
        }
    }
}
