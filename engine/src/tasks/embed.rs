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

/// How alike two texts are: the cosine of their embeddings, as sentence-transformers' `util.cos_sim` computes it
/// (0 where an embedding is all zeros).
pub fn similarity(model: &Model, a: &str, b: &str, between: &mut dyn FnMut()) -> Result<f32> {
    let vectors = embed(model, &[a, b], between)?;
    Ok(cosine(&vectors[0], &vectors[1]))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
    // torch.nn.functional.normalize divides by max(norm, 1e-12).
    let norms = dot(a, a).sqrt().max(1e-12) * dot(b, b).sqrt().max(1e-12);
    (dot(a, b) / norms) as f32
}

#[cfg(test)]
mod tests {
    #[test]
    fn cosine_of_parallel_opposite_orthogonal_and_zero_vectors() {
        assert!((super::cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-7);
        assert!((super::cosine(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-7);
        assert_eq!(super::cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0);
        assert_eq!(super::cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
