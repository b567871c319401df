//! ai_classify and ai_classify_label: text classification with the model's labels; ai_zero_shot and
//! ai_zero_shot_label: with labels given at the call, by an NLI model.

use super::{in_place, interrupts, present};
use crate::engine::models::Task;
use crate::engine::tasks::classify::{classify, Scored};
use crate::engine::tasks::zero_shot::{zero_shot, ZeroShot};
use crate::error::OrRaise;
use pgrx::prelude::*;

/// Every label with its score, best first.
#[pg_extern(stable, parallel_safe)]
fn ai_classify(input: &str, model: &str) -> TableIterator<'static, (name!(label, String), name!(score, f32))> {
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let m = loaded.classifier().or_raise();
    let answers = classify(m, &[input], &mut interrupts).or_raise();
    TableIterator::new(answers.into_iter().flatten().map(|s| (s.label, s.score)))
}

/// The array form; `ord` is the input's position in the array.
#[pg_extern(stable, parallel_safe, name = "ai_classify")]
fn ai_classify_array(
    inputs: Array<&str>,
    model: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(label, String), name!(score, f32))> {
    let (positions, texts) = present(&inputs);
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let m = loaded.classifier().or_raise();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let answers = classify(m, &texts, &mut interrupts).or_raise();
    TableIterator::new(rows_by_ord(positions, answers))
}

/// The best label alone, for triggers and CHECKs.
#[pg_extern(stable, parallel_safe)]
fn ai_classify_label(input: &str, model: &str) -> String {
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let m = loaded.classifier().or_raise();
    let mut answers = classify(m, &[input], &mut interrupts).or_raise();
    answers.remove(0).remove(0).label
}

/// The best label of each input, in input order; NULL stays NULL.
// Volatile, though its answers are not: the planner evaluates a stable function of constants once more to
// estimate unnest(f(ARRAY[...])), running the model twice.
#[pg_extern(volatile, parallel_safe, name = "ai_classify_label")]
fn ai_classify_label_array(inputs: Array<&str>, model: &str) -> Vec<Option<String>> {
    let (positions, texts) = present(&inputs);
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let m = loaded.classifier().or_raise();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let answers = classify(m, &texts, &mut interrupts).or_raise();
    best_labels(inputs.len(), positions, answers)
}

/// Every candidate label with its score, best first, as transformers' zero-shot-classification pipeline answers:
/// the model is asked whether `input` entails the hypothesis made from each label. NULL labels are skipped.
#[pg_extern(stable, parallel_safe)]
fn ai_zero_shot(
    input: &str,
    labels: Array<&str>,
    model: &str,
    hypothesis_template: default!(&str, "'This example is {}.'"),
    multi_label: default!(bool, false),
) -> TableIterator<'static, (name!(label, String), name!(score, f32))> {
    let answers = zero_shot_of(&[input], &labels, model, hypothesis_template, multi_label).remove(0);
    TableIterator::new(answers.into_iter().map(|s| (s.label, s.score)))
}

/// The best candidate label alone, for triggers and CHECKs.
#[pg_extern(stable, parallel_safe)]
fn ai_zero_shot_label(
    input: &str,
    labels: Array<&str>,
    model: &str,
    hypothesis_template: default!(&str, "'This example is {}.'"),
) -> String {
    zero_shot_of(&[input], &labels, model, hypothesis_template, false).remove(0).remove(0).label
}

/// The array form: one forward pass per batch of (input, label) pairs; `ord` is the input's position in the array.
#[pg_extern(stable, parallel_safe, name = "ai_zero_shot")]
fn ai_zero_shot_array(
    inputs: Array<&str>,
    labels: Array<&str>,
    model: &str,
    hypothesis_template: default!(&str, "'This example is {}.'"),
    multi_label: default!(bool, false),
) -> TableIterator<'static, (name!(ord, i32), name!(label, String), name!(score, f32))> {
    let (positions, texts) = present(&inputs);
    let answers = zero_shot_of(&texts, &labels, model, hypothesis_template, multi_label);
    TableIterator::new(rows_by_ord(positions, answers))
}

/// The best candidate label of each input, in input order; NULL stays NULL.
// Volatile, though its answers are not: the planner evaluates a stable function of constants once more to
// estimate unnest(f(ARRAY[...])), running the model twice.
#[pg_extern(volatile, parallel_safe, name = "ai_zero_shot_label")]
fn ai_zero_shot_label_array(
    inputs: Array<&str>,
    labels: Array<&str>,
    model: &str,
    hypothesis_template: default!(&str, "'This example is {}.'"),
) -> Vec<Option<String>> {
    let (positions, texts) = present(&inputs);
    let answers = zero_shot_of(&texts, &labels, model, hypothesis_template, false);
    best_labels(inputs.len(), positions, answers)
}

/// Each text's labels with their scores, best first; NULL labels are skipped.
fn zero_shot_of<T: AsRef<str>>(
    texts: &[T],
    labels: &Array<&str>,
    model: &str,
    hypothesis_template: &str,
    multi_label: bool,
) -> Vec<Vec<Scored>> {
    let (_, labels) = present(labels);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let ask = ZeroShot { labels: &labels, hypothesis_template, multi_label };
    zero_shot(loaded.classifier().or_raise(), &texts, &ask, &mut interrupts).or_raise()
}

/// Every input's labels as rows (ord, label, score), `positions` being the inputs' places in their array.
fn rows_by_ord(positions: Vec<i32>, answers: Vec<Vec<Scored>>) -> impl Iterator<Item = (i32, String, f32)> {
    positions.into_iter().zip(answers).flat_map(|(ord, s)| s.into_iter().map(move |s| (ord, s.label, s.score)))
}

/// Each input's best label at its place in an array of `len`, NULL where the input was NULL.
fn best_labels(len: usize, positions: Vec<i32>, answers: Vec<Vec<Scored>>) -> Vec<Option<String>> {
    in_place(len, positions, answers.into_iter().map(|mut scored| scored.remove(0).label))
}
