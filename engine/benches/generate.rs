//! Generation speed, engine only: prompt processing and token generation, separately.
//!
//!     scripts/fetch-smollm2.sh && cargo bench -p pg_ai_engine --bench generate
//!
//! SmolLM2-135M-Instruct (GGUF Q4_1), GPT-2 and SmolLM2 sizes in f32 and int8, the tiny fixture GPT-2, and the
//! fixture T5 translating (greedy and 3 beams). PG_AI_THREADS sets the threads. benches/generate_transformers.py
//! measures transformers on the same fixtures and inputs; benches/generate.sh runs both and prints the ratios.
//!
//! A generated token reads every weight once, so generation is bounded by how fast the machine reads memory: the
//! bench measures that first and prints, for each model, the rate at which its generation read its weights.

use candle_core::Tensor;
use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::generate::translator::TranslateOptions;
use pg_ai_engine::generate::Decoder;
use pg_ai_engine::kernels::int8::Int8;
use pg_ai_engine::models::AnyModel;
use pg_ai_engine::threads::in_pool;
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

const PROMPT: &str = "PostgreSQL is a powerful, open source object-relational database system with over 35 years \
    of active development that has earned it a strong reputation for reliability, feature robustness, and \
    performance. It supports both SQL and JSON querying, and it runs on all major operating systems.";

/// Feeds `ids` on the compute threads, as ai_generate does (engine::threads::in_pool).
fn step(session: &mut (dyn Decoder + '_), ids: &[u32]) -> Tensor {
    in_pool(|| session.next_logits(ids)).unwrap()
}

/// `int8`: weights read from safetensors held as Q8_0 (pg_ai.int8_decoders).
fn bench(name: &str, source: &str, prompt: &str, new_tokens: usize, int8: bool) {
    let files = ModelFiles::locate(source, None).expect("model files");
    let loaded = AnyModel::load_with(&files, Int8 { decoders: int8, ..Int8::NONE }).expect("model loads");
    let model = loaded.causal().expect("a decoder");
    let prompt = model.codec().encode_prompt(prompt).unwrap();
    let mut session: Box<dyn Decoder + '_> = model.session().unwrap();
    // Warm up once, then time prompt processing and greedy generation separately.
    step(&mut *session, &prompt);
    session.reset().unwrap();
    let started = Instant::now();
    let mut logits = step(&mut *session, &prompt);
    let prompt_time = started.elapsed();
    let room = session.context_size() - prompt.len() - 1;
    let n = new_tokens.min(room);
    let started = Instant::now();
    for _ in 0..n {
        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        logits = step(&mut *session, &[next]);
    }
    let generation_time = started.elapsed();
    let weights = loaded.memory_bytes() as f64;
    println!("{name}");
    println!(
        "  prompt: {} tokens in {:.1} ms, {:.0} tokens/s",
        prompt.len(),
        prompt_time.as_secs_f64() * 1e3,
        prompt.len() as f64 / prompt_time.as_secs_f64()
    );
    println!(
        "  generation: {n} tokens in {:.1} ms, {:.1} tokens/s; weights {:.0} MB, read at {:.1} GB/s if all once a token",
        generation_time.as_secs_f64() * 1e3,
        n as f64 / generation_time.as_secs_f64(),
        weights / 1e6,
        weights * n as f64 / generation_time.as_secs_f64() / 1e9
    );
}

/// Inputs of the translation bench, shared with benches/generate_transformers.py.
const TRANSLATE_INPUTS: [&str; 4] = [
    "translate English to German: the cat sat in the park .",
    "translate English to German: alice is eating bread .",
    "translate English to German: bob lives in vienna .",
    "translate English to German: the horse ran to the river .",
];

/// Generated tokens per second translating the inputs one at a time.
fn bench_translate(name: &str, dir: &str, num_beams: usize) {
    let loaded =
        AnyModel::load(&ModelFiles::locate(dir, None).expect("model files"), &Default::default()).expect("model loads");
    let m = loaded.translator().expect("a translation model");
    let options = TranslateOptions { max_tokens: 24, num_beams };
    let run = || -> usize {
        TRANSLATE_INPUTS.iter().map(|t| m.generate_ids(&[t.to_string()], options, &mut || ()).unwrap()[0].len()).sum()
    };
    run();
    let started = Instant::now();
    let rounds = 20;
    let tokens: usize = (0..rounds).map(|_| run()).sum();
    let time = started.elapsed().as_secs_f64();
    println!("{name}, {num_beams} beam(s)");
    println!("  translation: {tokens} tokens in {:.1} ms, {:.0} tokens/s", time * 1e3, tokens as f64 / time);
}

/// GB/s at which the threads read memory: the best of 5 sums of 1 GiB of f32, far beyond the caches.
fn memory_read_bandwidth() -> f64 {
    let values = vec![1f32; 1 << 28];
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            let sum: f32 = values
                .par_chunks(1 << 16)
                .map(|chunk| {
                    pg_ai_engine::kernels::simd::widest(
                        #[inline(always)]
                        || {
                            let mut sums = [0f32; 16];
                            for block in chunk.chunks_exact(16) {
                                for i in 0..16 {
                                    sums[i] += block[i];
                                }
                            }
                            sums.iter().sum::<f32>()
                        },
                    )
                })
                .sum();
            assert_eq!(sum, values.len() as f32);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    (values.len() * 4) as f64 / best / 1e9
}

fn main() {
    let threads = std::env::var("PG_AI_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    // As a backend does with the default pg_ai.keep_freed_memory.
    pg_ai_engine::allocator::keep_freed_memory(pg_ai_engine::allocator::DEFAULT_KEEP_FREED);
    pg_ai_engine::threads::configure(threads);
    println!("memory read: {:.1} GB/s ({} threads)", memory_read_bandwidth(), rayon::current_num_threads());
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let smollm2 = root.join(".models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if smollm2.is_file() {
        bench("SmolLM2-135M-Instruct, GGUF Q4_1", smollm2.to_str().unwrap(), PROMPT, 64, false);
    } else {
        println!("skipping SmolLM2: run scripts/fetch-smollm2.sh first");
    }
    // Full-size f32 models with random weights (benches/make_bench_models.py), as benches/side_by_side.sh uses,
    // as stored and held in 8 bits.
    for (name, dir) in [("GPT-2 124M size", "gpt2-124m"), ("SmolLM2-135M size (Llama)", "smollm2-135m")] {
        let dir = root.join(".models/bench").join(dir);
        if dir.is_dir() {
            bench(&format!("{name}, f32"), dir.to_str().unwrap(), PROMPT, 64, false);
            bench(&format!("{name}, int8"), dir.to_str().unwrap(), PROMPT, 64, true);
        } else {
            println!("skipping {name}: run benches/make_bench_models.py first");
        }
    }
    let gpt2 = root.join("tests/fixtures/models/gpt2");
    let prompt = "the cat sat in the park . alice is eating bread . bob lives in";
    bench("tests/fixtures/models/gpt2 (tiny, 64-token context)", gpt2.to_str().unwrap(), prompt, 64, false);
    let t5 = root.join("tests/fixtures/models/t5");
    bench_translate("tests/fixtures/models/t5 (tiny)", t5.to_str().unwrap(), 1);
    bench_translate("tests/fixtures/models/t5 (tiny)", t5.to_str().unwrap(), 3);
}
