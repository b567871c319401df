//! ai_fill_mask: the most likely tokens for the input's mask token.

use super::{interrupts, present};
use crate::engine::models::Task;
use crate::engine::tasks::fill_mask::fill_mask;
use crate::error::OrRaise;
use pgrx::prelude::*;

fn top_k(k: i32) -> usize {
    // Negative values fail the engine's range check with the vocabulary size in the message.
    usize::try_from(k).unwrap_or(0)
}

/// Best first, scores are softmax probabilities, as transformers' fill-mask pipeline answers.
#[pg_extern(stable, parallel_safe)]
fn ai_fill_mask(
    input: &str,
    model: &str,
    top_k: default!(i32, 5),
) -> TableIterator<'static, (name!(token, String), name!(score, f32), name!(sequence, String))> {
    let loaded = crate::store::model_for(model, Task::FillMask);
    let m = loaded.encoder().or_raise();
    let answers = fill_mask(m, &[input], self::top_k(top_k), &mut interrupts).or_raise();
    TableIterator::new(answers.into_iter().flatten().map(|f| (f.token, f.score, f.sequence)))
}

/// The array form: one forward pass per batch of inputs; `ord` is the input's position in the array.
#[pg_extern(stable, parallel_safe, name = "ai_fill_mask")]
fn ai_fill_mask_array(
    inputs: Array<&str>,
    model: &str,
    top_k: default!(i32, 5),
) -> TableIterator<'static, (name!(ord, i32), name!(token, String), name!(score, f32), name!(sequence, String))> {
    let (positions, texts) = present(&inputs);
    let loaded = crate::store::model_for(model, Task::FillMask);
    let m = loaded.encoder().or_raise();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let answers = fill_mask(m, &texts, self::top_k(top_k), &mut interrupts).or_raise();
    TableIterator::new(
        positions
            .into_iter()
            .zip(answers)
            .flat_map(|(ord, filled)| filled.into_iter().map(move |f| (ord, f.token, f.score, f.sequence))),
    )
}
