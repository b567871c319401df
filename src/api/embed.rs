//! ai_embed: sentence embeddings with the model's own pooling and normalisation; ai_similarity: the cosine of two.

use super::{interrupts, present};
use crate::engine::models::Task;
use crate::engine::tasks::embed::{embed, similarity};
use crate::error::OrRaise;
use pgrx::prelude::*;

#[pg_extern(stable, parallel_safe)]
fn ai_embed(input: &str, model: &str) -> Vec<f32> {
    let loaded = crate::store::model_for(model, Task::FeatureExtraction);
    let m = loaded.encoder().or_raise();
    embed(m, &[input], &mut interrupts).or_raise().remove(0)
}

/// The array form: one row per input, `ord` its position in the array; NULL inputs give NULL.
#[pg_extern(stable, parallel_safe, name = "ai_embed")]
fn ai_embed_array(
    inputs: Array<&str>,
    model: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let (positions, texts) = present(&inputs);
    let loaded = crate::store::model_for(model, Task::FeatureExtraction);
    let m = loaded.encoder().or_raise();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut vectors = embed(m, &texts, &mut interrupts).or_raise().into_iter();
    let mut rows = Vec::with_capacity(inputs.len());
    let mut next = positions.into_iter().peekable();
    for ord in 1..=inputs.len() as i32 {
        let vector = if next.peek() == Some(&ord) { next.next().and(vectors.next()) } else { None };
        rows.push((ord, vector));
    }
    TableIterator::new(rows)
}

/// How alike two texts are by the model's embeddings: their cosine, from -1 to 1.
#[pg_extern(stable, parallel_safe)]
fn ai_similarity(a: &str, b: &str, model: &str) -> f32 {
    let loaded = crate::store::model_for(model, Task::FeatureExtraction);
    similarity(loaded.encoder().or_raise(), a, b, &mut interrupts).or_raise()
}
