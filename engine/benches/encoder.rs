//! Latency and throughput of the encoder tasks, engine only (no Postgres in the way):
//!
//!     scripts/fetch-minilm.sh && cargo bench -p pg_ai_engine --bench encoder
//!
//! Prints: model load time, first answer, warm single-call latency (median), and rows per second
//! over 1000 short texts one by one and through the array form. PG_AI_THREADS sets the threads
//! (default: one per core). The SQL-level figures come from benches/sql.sh.

use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::kernels::int8::Int8;
use pg_ai_engine::models::{AnyModel, Model};
use pg_ai_engine::tasks::{embed::embed, fill_mask::fill_mask};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROWS: usize = 1000;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn load(dir: PathBuf, int8: bool) -> (Model, Duration) {
    let started = Instant::now();
    let files = ModelFiles::in_dir(dir).expect("model files");
    let AnyModel::Encoder(model) =
        AnyModel::load_with(&files, Int8 { encoders: int8, ..Int8::NONE }).expect("model loads")
    else {
        panic!("an encoder model")
    };
    (model, started.elapsed())
}

/// Short, varied sentences like rows of a table.
fn texts(with_mask: bool) -> Vec<String> {
    let subjects = ["the cat", "alice", "bob", "the dog", "a man", "my neighbour", "the team", "grace"];
    let verbs = ["sat in", "is eating", "ran to", "lives in", "is playing", "looked at", "found"];
    let objects = ["the park", "bread", "paris", "the river", "tennis", "a new film", "the old house"];
    (0..ROWS)
        .map(|i| {
            let object = if with_mask { "[MASK]" } else { objects[(i / 56) % objects.len()] };
            format!("{} {} {} .", subjects[i % subjects.len()], verbs[(i / 8) % verbs.len()], object)
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(task: &str, load: Duration, first: Duration, single: Duration, one_by_one: Duration, array: Duration) {
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    println!("{task}");
    println!("  load {:.1} ms, first answer {:.2} ms", load.as_secs_f64() * 1e3, first.as_secs_f64() * 1e3);
    println!("  warm single call: median {:.2} ms", single.as_secs_f64() * 1e3);
    println!("  {ROWS} rows one by one: {:.0} rows/s", rate(one_by_one));
    println!("  {ROWS} rows as one array: {:.0} rows/s", rate(array));
}

fn bench(task: &str, dir: PathBuf, with_mask: bool, int8: bool, run: impl Fn(&Model, &[&str])) {
    let (model, load_time) = load(dir, int8);
    let texts = texts(with_mask);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    run(&model, &texts[..1]);
    let first = started.elapsed();
    let single = median(
        (0..50)
            .map(|i| {
                let started = Instant::now();
                run(&model, &texts[i..i + 1]);
                started.elapsed()
            })
            .collect(),
    );
    let started = Instant::now();
    for text in &texts {
        run(&model, &[text]);
    }
    let one_by_one = started.elapsed();
    let started = Instant::now();
    run(&model, &texts);
    report(task, load_time, first, single, one_by_one, started.elapsed());
}

fn main() {
    let threads = std::env::var("PG_AI_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    // As a backend does with the default pg_ai.keep_freed_memory.
    pg_ai_engine::allocator::keep_freed_memory(pg_ai_engine::allocator::DEFAULT_KEEP_FREED);
    pg_ai_engine::threads::configure(threads);
    let minilm = root().join(".models/all-MiniLM-L6-v2");
    for (int8, precision) in [(false, "f32"), (true, "int8 (pg_ai.int8_encoders)")] {
        if minilm.join("model.safetensors").is_file() {
            bench(
                &format!("ai_embed, all-MiniLM-L6-v2 (22.7M parameters), {precision}"),
                minilm.clone(),
                false,
                int8,
                |m, t| {
                    embed(m, t, &mut || ()).unwrap();
                },
            );
        } else {
            println!("skipping MiniLM: run scripts/fetch-minilm.sh first");
        }
        bench(
            &format!("ai_fill_mask, tests/fixtures/models/bert-mlm (tiny), {precision}"),
            root().join("tests/fixtures/models/bert-mlm"),
            true,
            int8,
            |m, t| {
                fill_mask(m, t, 5, &mut || ()).unwrap();
            },
        );
    }
}
