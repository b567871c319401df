//! Training: new models from rows (`pretrain`) or more training of a saved one (`finetune`), written
//! as save_pretrained directories that engine::models loads unchanged. No Postgres here: rows come
//! through `DataSource`, interrupts and progress go through `Progress`.

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod mask;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod options;
pub mod params;
pub mod row_file;
pub mod run;

pub use crate::models::bert::train::{BertTask, TrainableBert};
pub use crate::models::gpt2::train::TrainableGpt2;
pub use crate::models::llama::train::TrainableLlama;
pub use crate::models::t5::train::TrainableT5;
pub use batch::{Batch, Targets};
pub use checkpoint::TrainerState;
pub use nn::Dropout;
pub use optim::{AdamW, AdamWConfig, Gradients};
pub use options::TrainOptions;
pub use params::Params;

use crate::error::{AiError, Result};
use crate::text::training::{Style, TrainTokenizer};
use candle_core::Tensor;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// One training row. `text` is "" where the SQL value is NULL.
#[derive(Debug, Clone, Default)]
pub struct Example {
    pub text: String,
    pub label: Option<String>,
    /// What the model must answer for `text` (seq2seq); None where the SQL value is NULL.
    pub target: Option<String>,
    /// For token classification: one tag per whitespace-separated word of `text` (None where the
    /// SQL array element is NULL, which is refused).
    pub tags: Option<Vec<Option<String>>>,
}

pub trait DataSource {
    /// One full pass over all rows, in a stable order, handed over chunk by chunk (the SQL side reads a cursor).
    /// Called several times (tokenizer training, label discovery, each epoch).
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> Result<()>) -> Result<()>;
}

pub trait Progress {
    /// Called often (every batch at least); returns Err to stop (the SQL side checks interrupts here).
    fn check(&mut self) -> Result<()>;
    /// Whether a cancel or stop is pending, without acting on it: polled while work that cannot check for
    /// interrupts runs on another thread (see `watched`); `check` then reports it.
    fn interrupted(&mut self) -> bool {
        false
    }
    /// Called every log_every steps and at the end.
    fn report(&mut self, step: &StepReport);
    /// Called after every step but the last. Where a checkpoint is due (a background job that can resume),
    /// call `write` with an empty directory, which it fills, and keep what it wrote. The default keeps none.
    fn checkpoint(&mut self, _step: usize, _write: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    /// Mean training loss since the previous report.
    pub loss: f32,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    pub seconds_left: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Mlm,
    Clm,
    TextClassification,
    TokenClassification,
    /// Sequence to sequence (T5): the loss is on the decoder side, predicting each target from its source.
    Seq2Seq,
}

impl Objective {
    const ALL: [Objective; 5] = [
        Objective::Mlm,
        Objective::Clm,
        Objective::TextClassification,
        Objective::TokenClassification,
        Objective::Seq2Seq,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Objective::Mlm => "mlm",
            Objective::Clm => "clm",
            Objective::TextClassification => "text-classification",
            Objective::TokenClassification => "token-classification",
            Objective::Seq2Seq => "seq2seq",
        }
    }

    /// An objective by name; "translation" is seq2seq.
    pub fn parse(s: &str) -> Result<Self> {
        let s = if s == "translation" { "seq2seq" } else { s };
        Self::ALL.into_iter().find(|o| o.name() == s).ok_or_else(|| {
            AiError::invalid(format!("unknown training objective \"{s}\"")).with_hint(
                "Objectives: mlm (masked LM, BERT), clm (causal LM, GPT-2), seq2seq (T5, also called translation), \
                 text-classification, token-classification.",
            )
        })
    }

    /// The pipeline task the trained model answers.
    pub fn task(self) -> &'static str {
        match self {
            Objective::Mlm => "fill-mask",
            Objective::Clm => "text-generation",
            Objective::TextClassification => "text-classification",
            Objective::TokenClassification => "token-classification",
            Objective::Seq2Seq => "translation",
        }
    }

    /// Whether rows carry labels: one per row, or one per word.
    pub fn is_classification(self) -> bool {
        matches!(self, Objective::TextClassification | Objective::TokenClassification)
    }
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub metrics: Value,
    pub architecture: String,
    pub task: String,
    pub steps: usize,
    pub examples: usize,
    pub skipped: usize,
}

/// A model being trained: its parameters and the logits its loss compares with the batch's targets.
pub trait Trainable: Sync {
    fn params(&self) -> &Params;
    /// Logits for the batch's targets: (targets, vocab) for token targets, (rows, labels) for labels.
    /// Dropout applies when `dropout` is given.
    fn logits(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor>;
    /// The config.json that goes with the weights.
    fn config(&self) -> &Value;

    /// The token a sequence-to-sequence decoder starts from; None for other models.
    fn decoder_start(&self) -> Option<u32> {
        None
    }

    /// Mean cross-entropy over the batch's targets, as transformers' models compute `loss`.
    fn loss(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        crate::kernels::fused::cross_entropy(&self.logits(batch, dropout)?, batch.target_ids())
    }

    /// Writes config.json and model.safetensors into `dir`.
    fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self.config()).map_err(|e| AiError::internal(e.to_string()))?;
        std::fs::write(dir.join("config.json"), text + "\n")
            .map_err(|e| AiError::internal(format!("cannot write {}: {e}", dir.display())))?;
        self.params().save(&dir.join("model.safetensors"))
    }
}

/// Where the prepared rows' scratch file goes: beside the output directory (made if absent).
fn scratch_area(out_dir: &Path) -> Result<&Path> {
    let dir = out_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| AiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The prefix seq2seq puts before its sources; refused for other objectives.
fn source_prefix(objective: Objective, options: &TrainOptions) -> Result<&str> {
    match (&options.source_prefix, objective) {
        (Some(_), o) if o != Objective::Seq2Seq => {
            Err(AiError::invalid("option source_prefix applies to seq2seq only"))
        }
        (prefix, _) => Ok(prefix.as_deref().unwrap_or("")),
    }
}

/// Runs `work` (one long call that cannot check for interrupts itself, such as training a tokenizer on 64 MB of
/// text) on a thread of its own, while this thread watches `progress.interrupted()` and sets the flag `work`
/// stops at; then `progress.check()` reports the interrupt here, where the SQL side may raise it.
fn watched<T: Send>(progress: &mut dyn Progress, work: impl FnOnce(&AtomicBool) -> Result<T> + Send) -> Result<T> {
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn_scoped(scope, || {
                crate::threads::leave_signals_to_the_backend();
                work(&stop)
            })
            .map_err(|e| AiError::internal(format!("cannot start a thread: {e}")))?;
        while !handle.is_finished() {
            if progress.interrupted() {
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        handle.join().map_err(|_| AiError::internal("training the tokenizer failed"))?
    });
    progress.check()?;
    out
}

/// Train a new model from scratch (tokenizer trained on the same rows first): a BERT for mlm,
/// text-classification and token-classification, a GPT-2 for clm, a T5 for seq2seq.
pub fn pretrain(
    objective: Objective,
    data: &mut dyn DataSource,
    options: &TrainOptions,
    progress: &mut dyn Progress,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    let prefix = source_prefix(objective, options)?;
    let mut texts = data::collect_texts(data, objective == Objective::Seq2Seq)?;
    if !prefix.is_empty() {
        texts.push(prefix.to_string());
    }
    let vocab = options.vocab_size();
    if objective == Objective::Clm && vocab < 300 {
        return Err(AiError::invalid(format!("vocab_size {vocab} is too small for a byte-level BPE"))
            .with_hint("It holds the 256 bytes and <|endoftext|> before any merge; use 300 or more."));
    }
    let mut tokenizer = watched(progress, |stop| match objective {
        Objective::Clm => TrainTokenizer::train_byte_bpe(&texts, vocab, stop),
        Objective::Seq2Seq => TrainTokenizer::train_unigram(&texts, vocab, stop),
        _ => TrainTokenizer::train_wordpiece(&texts, vocab, stop),
    })?;
    drop(texts);
    let max_length = options.max_length;
    let prepared = data::prepare(data, &mut tokenizer, objective, max_length, options, scratch_area(out_dir)?)?;
    let size = options::ModelSize::new(options, tokenizer.vocab_size());
    let model: Box<dyn Trainable> = match objective {
        Objective::Clm => {
            let eos = tokenizer.eos_id.ok_or_else(|| AiError::internal("the new tokenizer lacks <|endoftext|>"))?;
            let config = crate::models::gpt2::train::new_config(&size, eos);
            Box::new(TrainableGpt2::build(config, HashMap::new(), options.seed)?)
        }
        Objective::Seq2Seq => Box::new(TrainableT5::build(
            crate::models::t5::train::new_config(&size, prefix),
            HashMap::new(),
            options.seed,
        )?),
        Objective::Mlm | Objective::TextClassification | Objective::TokenClassification => {
            let config = crate::models::bert::train::new_config(&size);
            Box::new(TrainableBert::build(config, bert_task(objective, &prepared), HashMap::new(), options.seed)?)
        }
    };
    let lr = options.learning_rate.unwrap_or(5e-4);
    let files = |dir: &Path| tokenizer.write(dir, max_length);
    let run = run::Job {
        model: &*model,
        objective,
        tokenizer: &tokenizer,
        data: &prepared,
        options,
        learning_rate: lr,
        tokenizer_files: &files,
        resume: None,
    };
    train_and_save(run, progress, out_dir)
}

/// Continue from an existing model directory (a save_pretrained dir: config.json, model.safetensors, tokenizer.json).
pub fn finetune(
    base_dir: &Path,
    objective: Objective,
    data: &mut dyn DataSource,
    options: &TrainOptions,
    progress: &mut dyn Progress,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    if let Some(key) = options.model_size_given().first() {
        return Err(AiError::invalid(format!("option {key} applies to pretraining only"))
            .with_hint("A fine-tuned model keeps its base model's size and vocabulary."));
    }
    continue_from(base_dir, None, objective, data, options, progress, out_dir)
}

/// Goes on with a run (pretrain or finetune, same objective, rows and options) from a checkpoint that
/// `Progress::checkpoint` saved: the result is the same as if it had never stopped.
pub fn resume(
    checkpoint_dir: &Path,
    objective: Objective,
    data: &mut dyn DataSource,
    options: &TrainOptions,
    progress: &mut dyn Progress,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    let state = TrainerState::read(checkpoint_dir)?;
    continue_from(checkpoint_dir, Some(&state), objective, data, options, progress, out_dir)
}

/// A base model's shape for the memory check: sizes from config.json (each family names them its own way) and
/// the parameters counted in the safetensors header, without reading the weights.
fn base_shape(config: &Value, weights: &Path) -> Result<options::Shape> {
    let field = |names: &[&str]| names.iter().find_map(|n| config.get(*n).and_then(Value::as_u64)).map(|n| n as usize);
    let hidden_size = field(&["hidden_size", "n_embd", "d_model", "dim"]).unwrap_or(0);
    Ok(options::Shape {
        parameters: Some(params::safetensors_parameters(weights)?),
        vocab_size: field(&["vocab_size"]).unwrap_or(0),
        hidden_size,
        layers: field(&["num_hidden_layers", "n_layer", "num_layers", "n_layers"]).unwrap_or(0),
        heads: field(&["num_attention_heads", "n_head", "num_heads", "n_heads"]).unwrap_or(0),
        intermediate_size: field(&["intermediate_size", "n_inner", "d_ff", "hidden_dim"])
            .unwrap_or(hidden_size.saturating_mul(4)),
    })
}

fn continue_from(
    base_dir: &Path,
    resume: Option<&TrainerState>,
    objective: Objective,
    data: &mut dyn DataSource,
    options: &TrainOptions,
    progress: &mut dyn Progress,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    let files = crate::files::ModelFiles::in_dir(base_dir.to_path_buf())?;
    let mut config: Value = files.read_json("config.json")?.unwrap_or(Value::Null);
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
    let training = crate::models::registry::training(&model_type, objective)?;
    let style = training.style;
    let prefix = source_prefix(objective, options)?;
    if files.weights.len() != 1 || files.gguf().is_some() {
        return Err(AiError::invalid("fine-tuning needs a single model.safetensors file")
            .with_hint("Sharded and GGUF models cannot be fine-tuned."));
    }
    let mut tokenizer = TrainTokenizer::from_dir(base_dir, style)?;
    if objective == Objective::Mlm && tokenizer.mask_id.is_none() {
        return Err(AiError::wrong_task("the base model's tokenizer has no mask token"));
    }
    // An encoder's own count leaves out RoBERTa's reserved positions.
    let encoder_config = if style == Style::Encoder {
        Some(crate::models::bert::config::ModelConfig::from_value(config.clone())?)
    } else {
        None
    };
    // T5's relative positions have no limit; n_positions is what it was trained for.
    let positions = match &encoder_config {
        Some(c) => c.max_tokens(),
        None => ["n_positions", "max_position_embeddings"]
            .iter()
            .find_map(|key| config.get(*key).and_then(Value::as_u64))
            .unwrap_or(512) as usize,
    };
    let max_length = options.max_length.min(positions);
    if (max_length as u64) < options::MIN_MAX_LENGTH {
        return Err(AiError::corrupt(format!(
            "the base model accepts {positions} tokens; training needs at least {}",
            options::MIN_MAX_LENGTH
        ))
        .with_hint("Check max_position_embeddings (n_positions for GPT-2) in the base model's config.json."));
    }
    base_shape(&config, &files.weights[0])?.check_memory(options)?;
    let prepared = data::prepare(data, &mut tokenizer, objective, max_length, options, scratch_area(out_dir)?)?;
    if let (Some(p), Some(obj)) = (options.dropout, config.as_object_mut()) {
        for key in training.dropout_keys {
            obj.insert(key.to_string(), serde_json::json!(p));
        }
    }
    if style == Style::Seq2Seq {
        // ai_translate puts the same prefix before its inputs when it is given no languages.
        config["task_specific_params"]["translation"] = serde_json::json!({"prefix": prefix});
    }
    let source = params::read_safetensors(&files.weights[0])?;
    let model = (training.build)(config, objective, &prepared, source, options.seed)?;
    let files = |dir: &Path| crate::text::training::copy_tokenizer_files(base_dir, dir);
    let run = run::Job {
        model: &*model,
        objective,
        tokenizer: &tokenizer,
        data: &prepared,
        options,
        learning_rate: resume.map_or(options.learning_rate.unwrap_or(5e-5), |s| s.learning_rate),
        tokenizer_files: &files,
        resume: resume.map(|state| (base_dir, state)),
    };
    train_and_save(run, progress, out_dir)
}

/// What a BERT-family model learns for `objective`: the labels of the rows for the classifiers.
pub(crate) fn bert_task(objective: Objective, prepared: &data::Prepared) -> BertTask {
    match objective {
        Objective::TextClassification => BertTask::Classifier(prepared.labels.clone()),
        Objective::TokenClassification => BertTask::TokenClassifier(prepared.labels.clone()),
        Objective::Mlm | Objective::Clm | Objective::Seq2Seq => BertTask::MaskedLm,
    }
}

/// Runs `job` and writes the trained model, with its tokenizer, into `out_dir`.
fn train_and_save(job: run::Job, progress: &mut dyn Progress, out_dir: &Path) -> Result<TrainOutcome> {
    let finished = job.run(progress)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| AiError::internal(format!("cannot create {}: {e}", out_dir.display())))?;
    job.model.save(out_dir)?;
    (job.tokenizer_files)(out_dir)?;
    let architecture = job.model.config()["architectures"][0].as_str().unwrap_or("").to_string();
    Ok(TrainOutcome {
        metrics: finished.metrics,
        architecture,
        task: job.objective.task().to_string(),
        steps: finished.steps,
        examples: job.data.examples(),
        skipped: job.data.skipped,
    })
}
