//! An encoder ready to answer: its config, tokenizer, encoder, task head and sentence pooling.

use super::config::{Family, ModelConfig};
use super::pooling::Pooling;
use super::{var_builder, Batch, Encoder, Head};
use crate::error::Result;
use crate::files::ModelFiles;
use crate::models::modernbert::ModernBert;
use crate::models::Task;
use crate::text::TextTokenizer;
use candle_core::{Device, Tensor};

/// The layers under the head: BERT's encoder (and its kin's), or ModernBERT's.
pub enum Network {
    Bert(Encoder),
    ModernBert(ModernBert),
}

impl Network {
    /// Last hidden states, (batch, seq, hidden).
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        match self {
            Network::Bert(e) => e.forward(batch),
            Network::ModernBert(m) => m.forward(batch),
        }
    }

    pub fn word_embeddings(&self) -> &Tensor {
        match self {
            Network::Bert(e) => e.word_embeddings(),
            Network::ModernBert(m) => m.word_embeddings(),
        }
    }

    fn parameter_count(&self) -> usize {
        match self {
            Network::Bert(e) => e.parameter_count(),
            Network::ModernBert(m) => m.parameter_count(),
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Network::Bert(e) => e.weight_bytes(),
            Network::ModernBert(m) => m.weight_bytes(),
        }
    }
}

pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: TextTokenizer,
    pub encoder: Network,
    pub head: Option<Head>,
    pub pooling: Pooling,
    pub parameters: usize,
    /// Bytes of the weights held in memory.
    pub weight_bytes: usize,
}

impl Model {
    /// Loads the encoder and its head onto `device`, their linear layers in 8 bits where `int8`.
    pub fn load(files: &ModelFiles, config: ModelConfig, int8: bool, device: &Device) -> Result<Model> {
        // sentence-transformers cuts inputs at its max_seq_length, not at tokenizer.json's truncation.
        let sequence_limit = files
            .read_json("sentence_bert_config.json")?
            .and_then(|c| c.get("max_seq_length")?.as_u64())
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let tokenizer = TextTokenizer::load(&files.dir, config.max_tokens(), sequence_limit)?;
        let vb = var_builder(&files.weights, device)?;
        let encoder = match config.family {
            Family::ModernBert => Network::ModernBert(ModernBert::load(&vb, &config, int8)?),
            _ => Network::Bert(Encoder::load(&vb, &config, int8)?),
        };
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
            (Task::QuestionAnswering, Some(Head::QuestionAnswering { .. })) => true,
            _ => false,
        }
    }

    /// The task to register when the user names none: the head's task.
    pub fn default_task(&self) -> Task {
        match &self.head {
            Some(Head::MaskedLm { .. }) => Task::FillMask,
            Some(Head::SequenceClassifier { .. }) => Task::TextClassification,
            Some(Head::TokenClassifier { .. }) => Task::TokenClassification,
            Some(Head::QuestionAnswering { .. }) => Task::QuestionAnswering,
            None => Task::from_architecture(&self.config.architecture),
        }
    }
}
