//! Sentence embeddings, pooled and normalised as the model's sentence-transformers files say.

use super::{encode_all, in_batches};
use crate::error::Result;
use crate::models::Model;

pub fn embed(model: &Model, texts: &[&str], between: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
    // Truncated at the model's limit, as sentence-transformers does.
    let encodings = encode_all(&model.tokenizer, texts, false, between)?;
    in_batches(&model.tokenizer, &encodings, between, |_, batch| {
        let hidden = model.encoder.forward(batch)?;
        Ok(model.pooling.apply(&hidden, &batch.mask)?.to_vec2::<f32>()?)
    })
}
