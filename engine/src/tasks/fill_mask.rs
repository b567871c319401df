//! Fill-mask: the most likely tokens for the one mask token in the input.

use super::{encode_all, in_batches, ranked};
use crate::error::{AiError, Result};
use crate::models::Model;
use candle_core::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Filled {
    pub token: String,
    pub token_id: u32,
    pub score: f32,
    /// The input with the mask replaced by `token`, decoded without special tokens.
    pub sequence: String,
}

pub fn fill_mask(model: &Model, texts: &[&str], top_k: usize, between: &mut dyn FnMut()) -> Result<Vec<Vec<Filled>>> {
    let (mask_token, mask_id) =
        model.tokenizer.mask.clone().ok_or_else(|| AiError::wrong_task("the tokenizer has no mask token"))?;
    let vocab = model.config.vocab_size;
    if top_k == 0 || top_k > vocab {
        return Err(AiError::invalid(format!("top_k must be between 1 and {vocab}, the vocabulary size")));
    }
    let encodings = encode_all(&model.tokenizer, texts, true, between)?;
    let mut mask_positions = Vec::with_capacity(texts.len());
    for encoding in &encodings {
        let positions: Vec<usize> =
            encoding.get_ids().iter().enumerate().filter(|(_, &id)| id == mask_id).map(|(i, _)| i).collect();
        match positions.len() {
            1 => mask_positions.push(positions[0]),
            0 => {
                return Err(AiError::invalid(format!("the input has no mask token {mask_token}")).with_hint(format!(
                    "Write {mask_token} where a word should be filled in, e.g. 'Paris is the {mask_token} of France.'"
                )))
            }
            n => {
                return Err(AiError::invalid(format!("the input has {n} mask tokens; ai_fill_mask fills exactly one"))
                    .with_hint(format!("Keep one {mask_token} per input.")))
            }
        }
    }
    let head = model.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no masked-LM head"))?;
    in_batches(&model.tokenizer, &encodings, between, |rows, batch| {
        let hidden = model.encoder.forward(batch)?;
        let at_mask: Vec<Tensor> = rows
            .iter()
            .enumerate()
            .map(|(row, &i)| hidden.get(row)?.get(mask_positions[i]))
            .collect::<candle_core::Result<_>>()?;
        let logits = head.masked_lm_logits(&Tensor::stack(&at_mask, 0)?)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        rows.iter()
            .zip(probabilities)
            .map(|(&i, scores)| {
                ranked(&scores)
                    .into_iter()
                    .take(top_k)
                    .map(|id| {
                        let id = id as u32;
                        let mut ids = encodings[i].get_ids().to_vec();
                        ids[mask_positions[i]] = id;
                        Ok(Filled {
                            token: model.tokenizer.decode(&[id], false)?,
                            token_id: id,
                            score: scores[id as usize],
                            sequence: model.tokenizer.decode(&ids, true)?,
                        })
                    })
                    .collect()
            })
            .collect()
    })
}
