//! Text classification: every label with its score, best first.

use super::{encode_all, encode_pairs, in_batches, ranked};
use crate::error::{AiError, Result};
use crate::models::bert::Batch;
use crate::models::marian::classifier::BartClassifier;
use crate::models::Model;
use crate::text::TextTokenizer;
use candle_core::Tensor;

/// What classification, zero-shot classification and reranking need of a model: an encoder with a sequence
/// classification head, or BART's classifier.
pub trait Classifier {
    fn tokenizer(&self) -> &TextTokenizer;
    /// In id order.
    fn labels(&self) -> &[String];
    /// Whether scores are sigmoids (problem_type "multi_label_classification") rather than a softmax.
    fn multi_label(&self) -> bool;
    /// Logits (rows, labels) of a padded batch.
    fn logits(&self, batch: &Batch) -> Result<Tensor>;
}

impl Classifier for Model {
    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    fn labels(&self) -> &[String] {
        &self.config.labels
    }
    fn multi_label(&self) -> bool {
        self.config.multi_label
    }
    fn logits(&self, batch: &Batch) -> Result<Tensor> {
        let head = self.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no classification head"))?;
        head.sequence_logits(&self.encoder.forward(batch)?, &batch.mask)
    }
}

impl Classifier for BartClassifier {
    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    fn labels(&self) -> &[String] {
        &self.labels
    }
    fn multi_label(&self) -> bool {
        self.multi_label
    }
    fn logits(&self, batch: &Batch) -> Result<Tensor> {
        crate::timing::forward(|| BartClassifier::logits(self, batch))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

pub fn classify(model: &dyn Classifier, texts: &[&str], between: &mut dyn FnMut()) -> Result<Vec<Vec<Scored>>> {
    // Long texts are truncated, as classifying the start of a long row beats failing an INSERT.
    let encodings = encode_all(model.tokenizer(), texts, false, between)?;
    // transformers: sigmoid for multi-label problems or a single output, softmax otherwise.
    let n_labels = model.labels().len().max(1);
    let sigmoid = model.multi_label() || n_labels == 1;
    in_batches(model.tokenizer(), &encodings, between, |_, batch| {
        let logits = model.logits(batch)?;
        let scores =
            if sigmoid { candle_nn::ops::sigmoid(&logits)? } else { candle_nn::ops::softmax_last_dim(&logits)? };
        Ok(scores
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                ranked(&row)
                    .into_iter()
                    .map(|i| Scored { label: label_name(model.labels(), i), score: row[i] })
                    .collect()
            })
            .collect())
    })
}

/// The classifier's logits for each pair of texts read as one input (zero-shot classification, reranking).
pub fn pair_logits(model: &dyn Classifier, pairs: &[(&str, &str)], between: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
    let encodings = encode_pairs(model.tokenizer(), pairs, between)?;
    in_batches(model.tokenizer(), &encodings, between, |_, batch| Ok(model.logits(batch)?.to_vec2::<f32>()?))
}

/// The label of class `i`: from id2label, or "LABEL_i" as transformers names unnamed classes.
pub fn label_name(labels: &[String], i: usize) -> String {
    labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))
}
