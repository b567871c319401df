//! The models pg_ai runs, one folder per family, and what they share: `AnyModel` (any loaded model), `Task` (what
//! it can be asked, in transformers' pipeline names), `LoadOptions`, and the registry of model types.

pub mod bert;
pub mod deberta;
pub mod gguf;
pub mod gpt2;
pub mod llama;
pub mod marian;
pub mod modernbert;
pub mod packed;
pub mod position_buckets;
pub mod registry;
pub mod t5;

pub use bert::model::Model;

use crate::device::Placement;
use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use crate::generate::translator::Translator;
use crate::generate::CausalLm;
use crate::kernels::int8::Int8;
use crate::models::gguf::GgufModel;
use crate::models::gpt2::Gpt2Model;
use crate::models::llama::LlamaModel;
use crate::models::marian::classifier::BartClassifier;
use crate::tasks::classify::Classifier;
use candle_core::{Device, Tensor};
use registry::Int8Setting;

/// A LayerNorm's weight and bias (where it has one), measured by `tensor` (elements or bytes): the models' parameter
/// and memory counts share it.
pub fn layer_norm_size(n: &candle_nn::LayerNorm, tensor: fn(&Tensor) -> usize) -> usize {
    tensor(n.weight()) + n.bias().map_or(0, tensor)
}

/// What a model can be asked to do, in the names transformers' pipelines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    FillMask,
    TextClassification,
    TokenClassification,
    QuestionAnswering,
    FeatureExtraction,
    TextGeneration,
    Translation,
    Summarization,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::FillMask,
        Task::TextClassification,
        Task::TokenClassification,
        Task::QuestionAnswering,
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
            Task::QuestionAnswering => "question-answering",
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
        } else if architecture.ends_with("ForQuestionAnswering") {
            Task::QuestionAnswering
        } else if architecture.ends_with("LMHeadModel") || architecture.ends_with("ForCausalLM") {
            Task::TextGeneration
        } else if architecture.ends_with("ForConditionalGeneration") || architecture.ends_with("MTModel") {
            Task::Translation
        } else {
            Task::FeatureExtraction
        }
    }
}

/// How a load holds the weights and where it puts them: the pg_ai.int8_*, pg_ai.device and pg_ai.gguf_requantize
/// settings, passed down by the caller.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub int8: Int8,
    /// Where models that can run on a GPU (see registry::ModelType::gpu) go; others run on the CPU.
    pub placement: Placement,
    /// GGUF files with Q4_1, Q5_1 or Q8_1 weights re-quantised to Q8_0 (see gguf::Weights::Fast).
    pub gguf_requantize: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { int8: Int8::NONE, placement: Placement::Cpu, gguf_requantize: true }
    }
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
    /// BART's sequence classifier (an encoder-decoder read as a classifier).
    BartClassifier(BartClassifier),
}

impl AnyModel {
    /// Loads the model as `options` say, then gives the memory that loading freed back to the kernel.
    pub fn load(files: &ModelFiles, options: &LoadOptions) -> Result<AnyModel> {
        let model = Self::load_files(files, options);
        crate::allocator::give_back_freed_memory();
        model
    }

    /// Loads the model onto the CPU, in 8 bits where `int8` says, other options at their defaults, keeping the
    /// memory loading freed (for tests and benches, which load many models one after another).
    pub fn load_with(files: &ModelFiles, int8: Int8) -> Result<AnyModel> {
        Self::load_files(files, &LoadOptions { int8, ..LoadOptions::default() })
    }

    fn load_files(files: &ModelFiles, options: &LoadOptions) -> Result<AnyModel> {
        if let Some(path) = files.gguf() {
            return Ok(AnyModel::Gguf(GgufModel::load(path, options.gguf_requantize)?));
        }
        let text = std::fs::read_to_string(files.dir.join("config.json"))
            .map_err(|e| AiError::missing_file(format!("cannot read config.json: {e}")))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AiError::corrupt(format!("config.json is not valid JSON: {e}")))?;
        let model_type = registry::find(config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or(""))?;
        let device = if model_type.gpu { options.placement.device()? } else { Device::Cpu };
        let int8 = match model_type.int8 {
            Int8Setting::Encoders => options.int8.encoders && device.is_cpu(),
            Int8Setting::Decoders => options.int8.decoders,
            Int8Setting::None => false,
        };
        (model_type.load)(files, config, &registry::Target { int8, device })
    }

    /// What its type can answer (the registry's tasks), narrowed for an encoder to the head its weights have.
    pub fn can(&self, task: Task) -> bool {
        let tasks = match self {
            // GGUF files of every architecture pg_ai reads generate text.
            AnyModel::Gguf(_) => &[Task::TextGeneration][..],
            _ => {
                let model_type = self.config_json().get("model_type").and_then(serde_json::Value::as_str);
                registry::find(model_type.unwrap_or("")).map_or(&[][..], |t| t.tasks)
            }
        };
        let narrowed = match self {
            AnyModel::Encoder(m) => m.can(task),
            AnyModel::Seq2Seq(_) => task != Task::TextClassification,
            AnyModel::BartClassifier(_) => task == Task::TextClassification,
            _ => true,
        };
        tasks.contains(&task) && narrowed
    }

    pub fn default_task(&self) -> Task {
        match self {
            AnyModel::Encoder(m) => m.default_task(),
            AnyModel::Gpt2(_) | AnyModel::Llama(_) | AnyModel::Gguf(_) => Task::TextGeneration,
            AnyModel::Seq2Seq(_) => Task::Translation,
            AnyModel::BartClassifier(_) => Task::TextClassification,
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
            AnyModel::BartClassifier(m) => m.architecture.clone(),
        }
    }

    pub fn config_json(&self) -> &serde_json::Value {
        match self {
            AnyModel::Encoder(m) => &m.config.raw,
            AnyModel::Gpt2(m) => &m.config,
            AnyModel::Llama(m) => &m.config,
            AnyModel::Gguf(m) => &m.metadata,
            AnyModel::Seq2Seq(m) => &m.config,
            AnyModel::BartClassifier(m) => &m.config,
        }
    }

    pub fn parameters(&self) -> usize {
        match self {
            AnyModel::Gguf(m) => m.parameters,
            AnyModel::Gpt2(m) => m.parameters,
            AnyModel::Llama(m) => m.parameters,
            AnyModel::Encoder(m) => m.parameters,
            AnyModel::BartClassifier(m) => m.parameters,
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
            AnyModel::BartClassifier(m) => m.parameters * 4,
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

    /// The model as a text classifier, for classification, zero-shot classification and reranking.
    pub fn classifier(&self) -> Result<&dyn Classifier> {
        match self {
            AnyModel::Encoder(m) => Ok(m),
            AnyModel::BartClassifier(m) => Ok(m),
            _ => Err(AiError::wrong_task("this model does not classify text")),
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
            AnyModel::BartClassifier(_) => Err(AiError::wrong_task("a classifier cannot generate text")),
        }
    }

    pub fn translator(&self) -> Result<&Translator> {
        match self {
            AnyModel::Seq2Seq(m) => Ok(m),
            _ => Err(AiError::wrong_task("only T5, Marian and BART models translate")),
        }
    }
}
