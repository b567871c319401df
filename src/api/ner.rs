//! ai_ner: named entities, grouped like transformers' pipeline with aggregation_strategy="simple".

use super::{interrupts, present};
use crate::engine::models::Task;
use crate::engine::tasks::ner::{ner, Entity};
use crate::error::OrRaise;
use pgrx::prelude::*;

/// Offsets count characters from 0, end exclusive: `substr(input, start_pos + 1, end_pos - start_pos)`.
fn row(e: Entity) -> (String, String, i32, i32, f32) {
    (e.text, e.label, e.start as i32, e.end as i32, e.score)
}

#[pg_extern(stable, parallel_safe)]
fn ai_ner(
    input: &str,
    model: &str,
) -> TableIterator<
    'static,
    (name!(entity, String), name!(label, String), name!(start_pos, i32), name!(end_pos, i32), name!(score, f32)),
> {
    let loaded = crate::store::model_for(model, Task::TokenClassification);
    let m = loaded.encoder().or_raise();
    let entities = ner(m, &[input], &mut interrupts).or_raise();
    TableIterator::new(entities.into_iter().flatten().map(row))
}

/// The array form; `ord` is the input's position in the array.
#[pg_extern(stable, parallel_safe, name = "ai_ner")]
fn ai_ner_array(
    inputs: Array<&str>,
    model: &str,
) -> TableIterator<
    'static,
    (
        name!(ord, i32),
        name!(entity, String),
        name!(label, String),
        name!(start_pos, i32),
        name!(end_pos, i32),
        name!(score, f32),
    ),
> {
    let (positions, texts) = present(&inputs);
    let loaded = crate::store::model_for(model, Task::TokenClassification);
    let m = loaded.encoder().or_raise();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let entities = ner(m, &texts, &mut interrupts).or_raise();
    TableIterator::new(positions.into_iter().zip(entities).flat_map(|(ord, es)| {
        es.into_iter().map(move |e| {
            let (text, label, start, end, score) = row(e);
            (ord, text, label, start, end, score)
        })
    }))
}
