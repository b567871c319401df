//! ai_answer: extractive question answering, as transformers' question-answering pipeline answers.

use super::{interrupts, present};
use crate::engine::models::Task;
use crate::engine::tasks::answer::{answer, Answer};
use crate::error::OrRaise;
use pgrx::prelude::*;

/// Offsets count characters from 0, end exclusive: `substr(context, start_pos + 1, end_pos - start_pos)`.
fn row(a: Answer) -> (String, f32, i32, i32) {
    (a.text, a.score as f32, a.start as i32, a.end as i32)
}

/// `top_k` and `max_answer_len` as the engine takes them (a number below 1 is refused there).
fn sizes(top_k: i32, max_answer_len: i32) -> (usize, usize) {
    (usize::try_from(top_k).unwrap_or(0), usize::try_from(max_answer_len).unwrap_or(0))
}

/// The `top_k` best answers to `question` found in `context`, best first: the answer as it stands in the
/// context (whole words), its score (the probability that it starts and ends there; the same text found in
/// several places adds up) and where it stands. Answers are at most `max_answer_len` tokens long; a context longer
/// than the model reads is read in overlapping windows.
#[pg_extern(stable, parallel_safe, strict)]
fn ai_answer(
    question: &str,
    context: &str,
    model: &str,
    top_k: default!(i32, 1),
    max_answer_len: default!(i32, 15),
) -> TableIterator<'static, (name!(answer, String), name!(score, f32), name!(start_pos, i32), name!(end_pos, i32))> {
    let loaded = crate::store::model_for(model, Task::QuestionAnswering);
    let (top_k, max_answer_len) = sizes(top_k, max_answer_len);
    let found =
        answer(loaded.encoder().or_raise(), &[(question, context)], top_k, max_answer_len, &mut interrupts).or_raise();
    TableIterator::new(found.into_iter().flatten().map(row))
}

/// One question over many contexts, each answered as alone, with `ord` the context's position in the array
/// (NULL contexts are skipped).
#[pg_extern(stable, parallel_safe, strict, name = "ai_answer")]
fn ai_answer_array(
    question: &str,
    contexts: Array<&str>,
    model: &str,
    top_k: default!(i32, 1),
    max_answer_len: default!(i32, 15),
) -> TableIterator<
    'static,
    (name!(ord, i32), name!(answer, String), name!(score, f32), name!(start_pos, i32), name!(end_pos, i32)),
> {
    let (positions, texts) = present(&contexts);
    let loaded = crate::store::model_for(model, Task::QuestionAnswering);
    let (top_k, max_answer_len) = sizes(top_k, max_answer_len);
    let pairs: Vec<(&str, &str)> = texts.iter().map(|c| (question, c.as_str())).collect();
    let found = answer(loaded.encoder().or_raise(), &pairs, top_k, max_answer_len, &mut interrupts).or_raise();
    TableIterator::new(positions.into_iter().zip(found).flat_map(|(ord, answers)| {
        answers.into_iter().map(move |a| {
            let (text, score, start, end) = row(a);
            (ord, text, score, start, end)
        })
    }))
}
