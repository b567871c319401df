//! Random and damaged model files must give an error, never a panic (a panic inside the server is turned
//! into an ERROR by pgrx, but an abort or a runaway allocation would take the backend down).

use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::kernels::int8::Int8;
use pg_ai_engine::models::AnyModel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: a few lines instead of a dependency, and the same bytes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/fixtures/models").join(name)
}

/// A copy of a fixture directory in which `file` is replaced by `content`; `seed` and `case` name it apart from
/// the copies that tests running at the same time make.
fn damaged(model: &str, file: &str, content: &[u8], seed: u64, case: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pg_ai-fuzz-{}-{model}-{seed}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join(file), content).unwrap();
    dir
}

/// Loads `dir` (or the .gguf file in it) with `int8`'s weights in 8 bits; Some(true) if it loaded, Some(false) on
/// an error, None on a panic.
fn outcome(path: &Path, int8: Int8) -> Option<bool> {
    catch_unwind(AssertUnwindSafe(|| {
        ModelFiles::in_dir(path.to_path_buf()).and_then(|f| AnyModel::load_with(&f, int8)).is_ok()
    }))
    .ok()
}

/// Random bytes, a truncated file, and damaged copies of the real one (a few bytes overwritten).
fn variants(rng: &mut Rng, original: &[u8]) -> Vec<(String, Vec<u8>, bool)> {
    let mut out = vec![
        ("random bytes".to_string(), rng.bytes(4096), true),
        ("empty".to_string(), Vec::new(), true),
        ("first half".to_string(), original[..original.len() / 2].to_vec(), true),
    ];
    for i in 0..40 {
        let mut copy = original.to_vec();
        // Mostly in the header, where lengths and offsets live.
        let span = if i % 2 == 0 { copy.len().min(256) } else { copy.len() };
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(span);
            copy[at] = rng.next() as u8;
        }
        out.push((format!("damaged copy {i}"), copy, false));
    }
    out
}

fn fuzz(model: &str, file: &str, seed: u64) {
    fuzz_with(model, file, seed, Int8::NONE)
}

fn fuzz_with(model: &str, file: &str, seed: u64, int8: Int8) {
    let mut rng = Rng(seed);
    let original = std::fs::read(fixture(model).join(file)).unwrap();
    for (case, (what, content, must_fail)) in variants(&mut rng, &original).into_iter().enumerate() {
        let dir = damaged(model, file, &content, seed, case);
        let result = outcome(&dir, int8);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(result.is_some(), "{model}/{file}, {what}: loading panicked");
        if must_fail {
            assert_eq!(result, Some(false), "{model}/{file}, {what}: loaded");
        }
    }
}

#[test]
fn damaged_safetensors_are_errors() {
    fuzz("bert-mlm", "model.safetensors", 1);
    fuzz("gpt2", "model.safetensors", 2);
    fuzz("t5", "model.safetensors", 3);
}

/// The same through the 8-bit models (pg_ai.int8_encoders and int8_decoders), which read and pad the weights
/// their own way.
#[test]
fn damaged_safetensors_in_int8_are_errors() {
    fuzz_with("bert-mlm", "model.safetensors", 9, Int8::ALL);
    fuzz_with("gpt2", "model.safetensors", 10, Int8::ALL);
    fuzz_with("llama", "model.safetensors", 11, Int8::ALL);
    fuzz_with("llama", "config.json", 12, Int8::ALL);
}

#[test]
fn damaged_tokenizers_and_configs_are_errors() {
    fuzz("bert-classifier", "tokenizer.json", 4);
    fuzz("marian", "tokenizer.json", 5);
    fuzz("distilbert-mlm", "config.json", 6);
    fuzz("llama", "config.json", 7);
}

/// A small well-formed GGUF file: llama metadata, a token list and two quantized tensors (not a whole model).
fn small_gguf() -> Vec<u8> {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    let tensor = |n: usize| {
        let t = Tensor::arange(0f32, (32 * n) as f32, &Device::Cpu).unwrap().reshape((n, 32)).unwrap();
        QTensor::quantize(&t, GgmlDType::Q4_1).unwrap()
    };
    let (embeddings, norm) = (tensor(16), tensor(1));
    let tokens = gguf_file::Value::Array((0..16).map(|i| gguf_file::Value::String(format!("tok{i}"))).collect());
    let metadata = [
        ("general.architecture", &gguf_file::Value::String("llama".into())),
        ("llama.block_count", &gguf_file::Value::U32(1)),
        ("llama.embedding_length", &gguf_file::Value::U32(32)),
        ("llama.attention.head_count", &gguf_file::Value::U32(4)),
        ("tokenizer.ggml.tokens", &tokens),
    ];
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &[("token_embd.weight", &embeddings), ("output_norm.weight", &norm)])
        .unwrap();
    out.into_inner()
}

/// GGUF: the small file above, then damaged; it lacks most of a model, so each must be an error.
#[test]
fn damaged_gguf_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("pg_ai-fuzz-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(8);
    let mut cases = variants(&mut rng, &small_gguf());
    cases.push(("undamaged".to_string(), small_gguf(), true));
    for (case, (what, content, _)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("case-{case}.gguf"));
        std::fs::write(&path, &content).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| {
            ModelFiles::locate(path.to_str().unwrap(), None)
                .and_then(|f| AnyModel::load(&f, &Default::default()))
                .is_ok()
        }));
        assert_eq!(result.ok(), Some(false), "GGUF {what}: a panic or a load");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
