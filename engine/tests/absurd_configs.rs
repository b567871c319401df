//! Every size in config.json is chosen by whoever registered the model. Set to absurd values one at a time, each
//! must give an error or a model that answers, never a panic, and nothing may ask for more memory than the budget
//! (pg_ai.max_memory_per_call) allows: an allocation that fails ends the backend, and with it every session.

mod training_support;

use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::generate::translator::TranslateOptions;
use pg_ai_engine::generate::{generate_with, GenerateOptions};
use pg_ai_engine::models::{AnyModel, Task};
use pg_ai_engine::tasks;
use pg_ai_engine::train::{finetune, Example, Objective, TrainOptions};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use training_support::{Recorder, Rows};

/// The budget these tests set.
const BUDGET: usize = 256 << 20;

/// The largest single allocation since a case last looked.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest request; a request far beyond the budget is refused, which ends
/// the test process as it would end a backend (run with --nocapture to see the case).
struct Recording;

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > 4 * BUDGET {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > 4 * BUDGET {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/fixtures/models")
}

/// Values a hostile or careless config may hold where a size belongs.
fn absurd_values() -> Vec<Value> {
    vec![
        Value::from(0),
        Value::from(1),
        Value::from(3),
        Value::from(-1),
        Value::from(i32::MAX),
        Value::from(1u64 << 40),
        Value::from(u64::MAX),
        Value::from(1e30),
        Value::from(0.5),
    ]
}

/// Every number in `config` (nested objects and arrays too), as a JSON pointer.
fn numbers(config: &Value, at: String, out: &mut Vec<String>) {
    match config {
        Value::Number(_) => out.push(at),
        Value::Object(map) => map.iter().for_each(|(k, v)| numbers(v, format!("{at}/{k}"), out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| numbers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// Asks the model what it can answer, briefly; the result itself does not matter here.
fn exercise(model: &AnyModel) {
    let texts = ["the cat sat on the mat", "a [MASK] <mask> day"];
    let mut between = || {};
    if let Ok(m) = model.encoder() {
        if model.can(Task::FillMask) {
            let _ = tasks::fill_mask::fill_mask(m, &texts, 3, &mut between);
        }
        if model.can(Task::TextClassification) {
            let _ = tasks::classify::classify(m, &texts, &mut between);
        }
        if model.can(Task::TokenClassification) {
            let _ = tasks::ner::ner(m, &texts, &mut between);
        }
        if model.can(Task::QuestionAnswering) {
            let context = texts[0].repeat(20);
            let _ = tasks::answer::answer(m, &[(texts[1], context.as_str())], 2, 15, &mut between);
        }
        let _ = tasks::embed::embed(m, &texts, &mut between);
    }
    if let Ok(m) = model.causal() {
        let options = GenerateOptions { max_tokens: 3, ..Default::default() };
        let _ = generate_with(m, texts[0], &options, &mut between, &mut |_| ());
    }
    if let Ok(m) = model.translator() {
        let inputs = texts.map(str::to_string);
        let _ = m.generate_ids(&inputs, TranslateOptions { max_tokens: 3, num_beams: 2 }, &mut between);
    }
}

/// A copy of `model`'s directory whose config.json is `config`.
fn with_config(model: &Path, config: &Value, case: usize) -> PathBuf {
    // A directory of its own per call: the sweeps run side by side in one process over the same models, and a
    // copy made onto another sweep's hard link would truncate the fixture itself.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let name = model.file_name().unwrap().to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("pg_ai-absurd-{}-{name}-{case}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            // Hard links keep the copies cheap (pg_ai refuses symbolic ones); the weights are only read.
            let to = dir.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &to).is_err() {
                std::fs::copy(entry.path(), &to).unwrap();
            }
        }
    }
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    dir
}

/// Loads `dir` and asks it what it can answer.
fn load_and_exercise(dir: &Path) -> pg_ai_engine::error::Result<()> {
    let files = ModelFiles::in_dir(dir.to_path_buf())?;
    exercise(&AnyModel::load(&files, &Default::default())?);
    Ok(())
}

/// Fine-tunes `dir` for two steps with `objective`, on a few sentences.
fn finetune_briefly(dir: &Path, objective: Objective) -> pg_ai_engine::error::Result<()> {
    let rows = training_support::sentences().into_iter().take(24).map(|text| {
        let target = (objective == Objective::Seq2Seq).then(|| text.to_uppercase());
        Example { text, target, ..Default::default() }
    });
    let options = TrainOptions::from_json(&serde_json::json!({"max_steps": 2, "batch_size": 4}))?;
    let out = training_support::scratch(&format!("absurd-{}", dir.file_name().unwrap().to_string_lossy()));
    let result = finetune(dir, objective, &mut Rows::new(rows.collect()), &options, &mut Recorder::default(), &out);
    let _ = std::fs::remove_dir_all(&out);
    result.map(|_| ())
}

/// Runs `run` for the case `what`: true if it answered; a panic or an allocation beyond the budget is added to
/// `failures`.
fn attempt(what: &str, failures: &mut Vec<String>, run: impl FnOnce() -> pg_ai_engine::error::Result<()>) -> bool {
    // An allocation the recording allocator refuses ends the process: --nocapture shows the case it was in.
    eprintln!("{what}");
    let outcome = catch_unwind(AssertUnwindSafe(run));
    // The tests run side by side: a request beyond the budget is reported by whichever case looks first.
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    if largest > BUDGET {
        failures.push(format!("{what} allocated {largest} bytes at once"));
    }
    match outcome {
        Ok(result) => result.is_ok(),
        Err(_) => {
            failures.push(format!("{what} panicked"));
            false
        }
    }
}

/// Changes every number in each model's config.json to each absurd value in turn and runs `run` on the copy.
fn sweep(names: &[&str], run: impl Fn(&Path) -> pg_ai_engine::error::Result<()>) {
    pg_ai_engine::budget::set_limit(BUDGET);
    let mut failures = Vec::new();
    for name in names {
        let model = fixtures().join(name);
        let original: Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
        let mut pointers = Vec::new();
        numbers(&original, String::new(), &mut pointers);
        let mut case = 0;
        let mut loaded = 0;
        for pointer in &pointers {
            for value in absurd_values() {
                case += 1;
                let mut config = original.clone();
                *config.pointer_mut(pointer).unwrap() = value.clone();
                let dir = with_config(&model, &config, case);
                loaded += attempt(&format!("{name}: {pointer} = {value}"), &mut failures, || run(&dir)) as usize;
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        // Most changes of one number still load (a value it had, a rope base, an epsilon): the sweep reaches the
        // models' code, not only the config's checks.
        eprintln!("{name}: {loaded} of {case} loaded");
        assert!(loaded * 4 >= case, "{name}: only {loaded} of {case} configs loaded");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn absurd_encoder_configs_are_errors_or_answer() {
    let encoders = [
        "bert-mlm",
        "bert-classifier",
        "bert-ner",
        "bert-qa",
        "distilbert-mlm",
        "roberta-classifier",
        "mpnet-mlm",
        "deberta-mlm",
        "deberta-classifier",
        "modernbert-mlm",
        "modernbert-classifier",
    ];
    sweep(&encoders, load_and_exercise);
}

#[test]
fn absurd_decoder_configs_are_errors_or_answer() {
    sweep(&["gpt2", "llama", "llama-rope", "qwen2", "qwen3", "mistral", "phi3", "gemma2", "gemma3"], load_and_exercise);
}

#[test]
fn absurd_seq2seq_configs_are_errors_or_answer() {
    sweep(&["t5", "marian", "bart"], load_and_exercise);
}

#[test]
fn absurd_configs_of_bases_to_fine_tune_are_errors_or_train() {
    sweep(&["bert-mlm", "distilbert-mlm", "roberta-mlm", "deberta-mlm"], |dir| finetune_briefly(dir, Objective::Mlm));
    sweep(&["gpt2", "llama", "qwen3"], |dir| finetune_briefly(dir, Objective::Clm));
    sweep(&["t5"], |dir| finetune_briefly(dir, Objective::Seq2Seq));
}

/// The same for a GGUF file's metadata: every number, within its stored type, at its extremes.
fn gguf_sweep(names: &[&str]) {
    use candle_core::quantized::gguf_file::{self, Value as Meta};
    pg_ai_engine::budget::set_limit(BUDGET);
    let absurd = |value: &Meta| -> Vec<Meta> {
        match value {
            Meta::U32(_) => vec![Meta::U32(0), Meta::U32(1), Meta::U32(3), Meta::U32(u32::MAX)],
            Meta::I32(_) => vec![Meta::I32(0), Meta::I32(-1), Meta::I32(i32::MAX), Meta::I32(i32::MIN)],
            Meta::U64(_) => vec![Meta::U64(0), Meta::U64(1 << 40), Meta::U64(u64::MAX)],
            Meta::I64(_) => vec![Meta::I64(-1), Meta::I64(i64::MAX)],
            Meta::F32(_) => vec![Meta::F32(0.0), Meta::F32(-1.0), Meta::F32(f32::NAN), Meta::F32(f32::INFINITY)],
            Meta::F64(_) => vec![Meta::F64(0.0), Meta::F64(f64::NAN), Meta::F64(1e300)],
            _ => Vec::new(),
        }
    };
    let mut failures = Vec::new();
    let dir = std::env::temp_dir().join(format!("pg_ai-absurd-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        let path = fixtures().join("../gguf").join(name);
        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let tensors: Vec<_> = content
            .tensor_infos
            .keys()
            .map(|t| (t.clone(), content.tensor(&mut file, t, &candle_core::Device::Cpu).unwrap()))
            .collect();
        let (mut case, mut loaded) = (0, 0);
        for (key, value) in &content.metadata {
            for changed in absurd(value) {
                case += 1;
                let metadata: Vec<(&str, &Meta)> =
                    content.metadata.iter().map(|(k, v)| (k.as_str(), if k == key { &changed } else { v })).collect();
                let tensor_refs: Vec<_> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let written = dir.join(format!("{case}.gguf"));
                let mut out = std::fs::File::create(&written).unwrap();
                gguf_file::write(&mut out, &metadata, &tensor_refs).unwrap();
                drop(out);
                let loads = attempt(&format!("{name}: {key} = {changed:?}"), &mut failures, || {
                    let files = ModelFiles::locate(written.to_str().unwrap(), None)?;
                    exercise(&AnyModel::load(&files, &Default::default())?);
                    Ok(())
                });
                loaded += loads as usize;
                let _ = std::fs::remove_file(&written);
            }
        }
        eprintln!("{name}: {loaded} of {case} loaded");
        assert!(loaded * 4 >= case, "{name}: only {loaded} of {case} files loaded");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn absurd_gguf_metadata_is_an_error_or_answers() {
    gguf_sweep(&["llama-q8_0.gguf", "qwen3-f32.gguf", "qwen2-q8_0.gguf", "spm-llama-q8_0.gguf", "spm-phi3-q8_0.gguf"]);
}

/// A GGUF sentencepiece vocabulary decides how many merge candidates there are (a piece of n characters has n - 1
/// cuts): a piece of 6 million characters is refused against the budget before the candidates are held.
#[test]
fn absurd_sentencepiece_pieces_are_refused() {
    use candle_core::quantized::gguf_file::{self, Value as Meta};
    pg_ai_engine::budget::set_limit(BUDGET);
    let strings = |s: Vec<String>| Meta::Array(s.into_iter().map(Meta::String).collect());
    let metadata = [
        ("tokenizer.ggml.model", Meta::String("llama".to_string())),
        ("tokenizer.ggml.tokens", strings(vec!["<unk>".to_string(), "a".repeat(6_000_000)])),
        ("tokenizer.ggml.scores", Meta::Array(vec![Meta::F32(0.0), Meta::F32(0.0)])),
        ("tokenizer.ggml.token_type", Meta::Array(vec![Meta::I32(2), Meta::I32(1)])),
    ];
    let mut written = Vec::new();
    let metadata: Vec<(&str, &Meta)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::io::Cursor::new(&mut written), &metadata, &[]).unwrap();
    let content = gguf_file::Content::read(&mut std::io::Cursor::new(&written)).unwrap();
    let refused = pg_ai_engine::models::gguf::tokenizer(&content).expect_err("the piece was not refused");
    assert!(refused.to_string().contains("the merges of 6000003 cuts of pieces would take"), "{refused}");
    assert!(LARGEST.swap(0, Ordering::Relaxed) < BUDGET, "the candidates were allocated before the check");
}
