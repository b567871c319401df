//! Text classification: every label with its score, best first.

use super::{encode_all, encode_pairs, in_batches, ranked};
use crate::error::{AiError, Result};
use crate::models::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

pub fn classify(model: &Model, texts: &[&str], between: &mut dyn FnMut()) -> Result<Vec<Vec<Scored>>> {
    let head = model.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no classification head"))?;
    // Long texts are truncated, as classifying the start of a long row beats failing an INSERT.
    let encodings = encode_all(&model.tokenizer, texts, false, between)?;
    // transformers: sigmoid for multi-label problems or a single output, softmax otherwise.
    let n_labels = model.config.labels.len().max(1);
    let sigmoid = model.config.multi_label || n_labels == 1;
    in_batches(&model.tokenizer, &encodings, between, |_, batch| {
        let logits = head.sequence_logits(&model.encoder.forward(batch)?)?;
        let scores =
            if sigmoid { candle_nn::ops::sigmoid(&logits)? } else { candle_nn::ops::softmax_last_dim(&logits)? };
        Ok(scores
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                ranked(&row).into_iter().map(|i| Scored { label: label_name(model, i), score: row[i] }).collect()
            })
            .collect())
    })
}

/// The classifier's logits for each pair of texts read as one input (zero-shot classification, reranking).
pub fn pair_logits(model: &Model, pairs: &[(&str, &str)], between: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
    let head = model.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no classification head"))?;
    let encodings = encode_pairs(&model.tokenizer, pairs, between)?;
    in_batches(&model.tokenizer, &encodings, between, |_, batch| {
        Ok(head.sequence_logits(&model.encoder.forward(batch)?)?.to_vec2::<f32>()?)
    })
}

/// The label of class `i`: from id2label, or "LABEL_i" as transformers names unnamed classes.
pub fn label_name(model: &Model, i: usize) -> String {
    model.config.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))
}
