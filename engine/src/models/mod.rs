//! A model ready to answer: its config, tokenizer, encoder, task head and sentence pooling.

pub mod bert;
pub mod gguf;
pub mod gpt2;
pub mod llama;
pub mod marian;
pub mod t5;

use crate::device::Placement;
use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use crate::generate::translator::{Family, Translator};
use crate::generate::CausalLm;
use crate::kernels::int8::Int8;
use crate::models::bert::config::ModelConfig;
use crate::models::bert::pooling::Pooling;
use crate::models::bert::{var_builder, Encoder, Head};
use crate::models::gguf::GgufModel;
use crate::models::gpt2::Gpt2Model;
use crate::models::llama::LlamaModel;
use crate::text::TextTokenizer;
use candle_core::Device;

/// What a model can be asked to do, in the names transformers' pipelines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    FillMask,
    TextClassification,
    TokenClassification,
    FeatureExtraction,
    TextGeneration,
    Translation,
    Summarization,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::FillMask,
        Task::TextClassification,
        Task::TokenClassification,
        Task::FeatureExtraction,
        Task::TextGeneration,
        Task::Translation,
        Task::Summarization,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::FillMask => "fill-mask",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
            Task::FeatureExtraction => "feature-extraction",
            Task::TextGeneration => "text-generation",
            Task::Translation => "translation",
            Task::Summarization => "summarization",
        }
    }

    pub fn parse(name: &str) -> Result<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            AiError::invalid(format!("unknown task \"{name}\""))
                .with_hint(format!("Tasks: {}.", Task::ALL.map(Task::name).join(", ")))
        })
    }

    /// The task a transformers architecture name implies ("BertForMaskedLM" -> fill-mask).
    pub fn from_architecture(architecture: &str) -> Task {
        if architecture.ends_with("ForMaskedLM") {
            Task::FillMask
        } else if architecture.ends_with("ForSequenceClassification") {
            Task::TextClassification
        } else if architecture.ends_with("ForTokenClassification") {
            Task::TokenClassification
        } else if architecture.ends_with("LMHeadModel") || architecture.ends_with("ForCausalLM") {
            Task::TextGeneration
        } else if architecture.ends_with("ForConditionalGeneration") || architecture.ends_with("MTModel") {
            Task::Translation
        } else {
            Task::FeatureExtraction
        }
    }
}

pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: TextTokenizer,
    pub encoder: Encoder,
    pub head: Option<Head>,
    pub pooling: Pooling,
    pub parameters: usize,
    /// Bytes of the weights held in memory.
    pub weight_bytes: usize,
}

/// Any model pg_ai can load: an encoder with its task head, a decoder that generates, or an encoder-decoder
/// that translates.
#[allow(clippy::large_enum_variant)] // one per loaded model, behind an Rc
pub enum AnyModel {
    Encoder(Model),
    Gpt2(Gpt2Model),
    Llama(LlamaModel),
    Gguf(GgufModel),
    Seq2Seq(Translator),
}

impl AnyModel {
    /// Loads the model, in 8 bits where the pg_ai.int8_* settings say (see engine::kernels::int8), an encoder onto the
    /// device pg_ai.device says (see engine::device).
    pub fn load(files: &ModelFiles) -> Result<AnyModel> {
        let model = Self::load_on(files, Int8::current(), Placement::current());
        crate::allocator::give_back_freed_memory();
        model
    }

    /// Loads the model onto the CPU, in 8 bits where `int8` says.
    pub fn load_with(files: &ModelFiles, int8: Int8) -> Result<AnyModel> {
        Self::load_on(files, int8, Placement::Cpu)
    }

    /// Loads the model, in 8 bits where `int8` says; an encoder onto `placement`'s device (on a GPU in f32), other
    /// models onto the CPU.
    pub fn load_on(files: &ModelFiles, int8: Int8, placement: Placement) -> Result<AnyModel> {
        if let Some(path) = files.gguf() {
            return Ok(AnyModel::Gguf(GgufModel::load(path)?));
        }
        let text = std::fs::read_to_string(files.dir.join("config.json"))
            .map_err(|e| AiError::missing_file(format!("cannot read config.json: {e}")))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AiError::corrupt(format!("config.json is not valid JSON: {e}")))?;
        match config.get("model_type").and_then(serde_json::Value::as_str) {
            Some("gpt2") => Ok(AnyModel::Gpt2(Gpt2Model::load(files, config, int8.decoders)?)),
            Some("llama") => Ok(AnyModel::Llama(LlamaModel::load(files, config, int8.decoders)?)),
            Some("t5") => Ok(AnyModel::Seq2Seq(Translator::load(files, config, Family::T5)?)),
            Some("marian") => Ok(AnyModel::Seq2Seq(Translator::load(files, config, Family::Marian)?)),
            _ => {
                let device = placement.device()?;
                let int8 = int8.encoders && device.is_cpu();
                Ok(AnyModel::Encoder(Model::load(files, ModelConfig::from_value(config)?, int8, &device)?))
            }
        }
    }

    pub fn can(&self, task: Task) -> bool {
        match self {
            AnyModel::Encoder(m) => m.can(task),
            AnyModel::Gpt2(_) | AnyModel::Llama(_) | AnyModel::Gguf(_) => task == Task::TextGeneration,
            AnyModel::Seq2Seq(m) => {
                task == Task::Translation || (task == Task::Summarization && m.family == Family::T5)
            }
        }
    }

    pub fn default_task(&self) -> Task {
        match self {
            AnyModel::Encoder(m) => m.default_task(),
            AnyModel::Gpt2(_) | AnyModel::Llama(_) | AnyModel::Gguf(_) => Task::TextGeneration,
            AnyModel::Seq2Seq(_) => Task::Translation,
        }
    }

    /// config.json's architecture, or the family when it names none.
    pub fn architecture(&self) -> String {
        match self {
            AnyModel::Encoder(m) if m.config.architecture.is_empty() => m.config.family.name().to_string(),
            AnyModel::Encoder(m) => m.config.architecture.clone(),
            AnyModel::Gpt2(m) => m.architecture.clone(),
            AnyModel::Llama(m) => m.architecture.clone(),
            AnyModel::Gguf(m) => m.architecture.clone(),
            AnyModel::Seq2Seq(m) => m.architecture.clone(),
        }
    }

    pub fn config_json(&self) -> &serde_json::Value {
        match self {
            AnyModel::Encoder(m) => &m.config.raw,
            AnyModel::Gpt2(m) => &m.config,
            AnyModel::Llama(m) => &m.config,
            AnyModel::Gguf(m) => &m.metadata,
            AnyModel::Seq2Seq(m) => &m.config,
        }
    }

    pub fn parameters(&self) -> usize {
        match self {
            AnyModel::Gguf(m) => m.parameters,
            AnyModel::Gpt2(m) => m.parameters,
            AnyModel::Llama(m) => m.parameters,
            AnyModel::Encoder(m) => m.parameters,
            // The translators hold f32 tensors.
            other => other.memory_bytes() / 4,
        }
    }

    /// Bytes of weights held in memory.
    pub fn memory_bytes(&self) -> usize {
        match self {
            AnyModel::Encoder(m) => m.weight_bytes,
            AnyModel::Gpt2(m) => m.weight_bytes,
            AnyModel::Llama(m) => m.weight_bytes,
            AnyModel::Seq2Seq(m) => m.parameter_bytes,
            AnyModel::Gguf(m) => m.weight_bytes,
        }
    }

    pub fn require(&self, task: Task, model_name: &str) -> Result<()> {
        if self.can(task) {
            return Ok(());
        }
        let can: Vec<&str> = Task::ALL.into_iter().filter(|t| self.can(*t)).map(Task::name).collect();
        Err(AiError::wrong_task(format!("model \"{model_name}\" cannot do {}", task.name()))
            .with_hint(format!("Its weights support: {}.", can.join(", "))))
    }

    /// The encoder, for the encoder tasks; `require` has been called with one of them.
    pub fn encoder(&self) -> Result<&Model> {
        match self {
            AnyModel::Encoder(m) => Ok(m),
            _ => Err(AiError::wrong_task("a decoder model has no encoder tasks")),
        }
    }

    pub fn causal(&self) -> Result<&dyn CausalLm> {
        match self {
            AnyModel::Gpt2(m) => Ok(m),
            AnyModel::Llama(m) => Ok(m),
            AnyModel::Gguf(m) => Ok(m),
            AnyModel::Encoder(_) => Err(AiError::wrong_task("an encoder model cannot generate text")
                .with_hint("Use a decoder model such as GPT-2 for ai_generate.")),
            AnyModel::Seq2Seq(_) => Err(AiError::wrong_task("a translation model does not continue a prompt")
                .with_hint("Use ai_translate or ai_summarize with this model.")),
        }
    }

    pub fn translator(&self) -> Result<&Translator> {
        match self {
            AnyModel::Seq2Seq(m) => Ok(m),
            _ => Err(AiError::wrong_task("only T5 and Marian models translate")),
        }
    }
}

impl Model {
    /// Loads the encoder and its head onto `device`, their linear layers in 8 bits where `int8`.
    pub fn load(files: &ModelFiles, config: ModelConfig, int8: bool, device: &Device) -> Result<Model> {
        let tokenizer = TextTokenizer::load(&files.dir, config.max_tokens())?;
        let vb = var_builder(&files.weights, device)?;
        let encoder = Encoder::load(&vb, &config, int8)?;
        let head = Head::load(&vb, &config, encoder.word_embeddings(), int8)?;
        let pooling = Pooling::from_files(files)?;
        let parameters = encoder.parameter_count() + head.as_ref().map_or(0, Head::parameter_count);
        let weight_bytes = encoder.weight_bytes() + head.as_ref().map_or(0, Head::weight_bytes);
        Ok(Model { config, tokenizer, encoder, head, pooling, parameters, weight_bytes })
    }

    /// The tasks this model can answer: embeddings always, the rest by its head.
    pub fn can(&self, task: Task) -> bool {
        match (task, &self.head) {
            (Task::FeatureExtraction, _) => true,
            (Task::FillMask, Some(Head::MaskedLm { .. })) => self.tokenizer.mask.is_some(),
            (Task::TextClassification, Some(Head::SequenceClassifier { .. })) => true,
            (Task::TokenClassification, Some(Head::TokenClassifier { .. })) => true,
            _ => false,
        }
    }

    /// The task to register when the user names none: the head's task.
    pub fn default_task(&self) -> Task {
        match &self.head {
            Some(Head::MaskedLm { .. }) => Task::FillMask,
            Some(Head::SequenceClassifier { .. }) => Task::TextClassification,
            Some(Head::TokenClassifier { .. }) => Task::TokenClassification,
            None => Task::from_architecture(&self.config.architecture),
        }
    }
}
