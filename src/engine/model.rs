//! A model ready to answer: its config, tokenizer, encoder, task head and sentence pooling.

use super::config::ModelConfig;
use super::encoder::{var_builder, Encoder, Head};
use super::error::{AiError, Result};
use super::files::ModelFiles;
use super::pooling::Pooling;
use super::text::TextTokenizer;

/// What a model can be asked to do, in the names transformers' pipelines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    FillMask,
    TextClassification,
    TokenClassification,
    FeatureExtraction,
}

impl Task {
    pub const ALL: [Task; 4] =
        [Task::FillMask, Task::TextClassification, Task::TokenClassification, Task::FeatureExtraction];

    pub fn name(self) -> &'static str {
        match self {
            Task::FillMask => "fill-mask",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
            Task::FeatureExtraction => "feature-extraction",
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
    /// Bytes of f32 parameters held in memory.
    pub parameter_bytes: usize,
}

impl Model {
    pub fn load(files: &ModelFiles) -> Result<Model> {
        let text = std::fs::read_to_string(files.dir.join("config.json"))
            .map_err(|e| AiError::missing_file(format!("cannot read config.json: {e}")))?;
        let config = ModelConfig::from_json(&text)?;
        let tokenizer = TextTokenizer::load(&files.dir, config.max_tokens())?;
        let vb = var_builder(&files.weights)?;
        let encoder = Encoder::load(&vb, &config)?;
        let head = Head::load(&vb, &config, encoder.word_embeddings())?;
        let pooling = Pooling::from_files(files)?;
        let parameter_bytes = encoder.parameter_count() * 4 + head.as_ref().map_or(0, Head::parameter_count) * 4;
        Ok(Model { config, tokenizer, encoder, head, pooling, parameter_bytes })
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

    pub fn require(&self, task: Task, model_name: &str) -> Result<()> {
        if self.can(task) {
            return Ok(());
        }
        let can: Vec<&str> = Task::ALL.into_iter().filter(|t| self.can(*t)).map(Task::name).collect();
        Err(AiError::wrong_task(format!("model \"{model_name}\" cannot do {}", task.name()))
            .with_hint(format!("Its weights support: {}.", can.join(", "))))
    }
}
