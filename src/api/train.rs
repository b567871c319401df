//! ai_pretrain and ai_finetune: training in the caller's session and transaction (see crate::training).

use super::json_arg::JsonArg;
use crate::engine::train::Objective;
use crate::error::OrRaise;
use crate::training::{train_now, Request, Start};
use pgrx::prelude::*;

/// Trains a new model from scratch on the rows of `source` (a table, a view or a SELECT query):
/// objective 'mlm' (BERT-style masked LM), 'clm' (GPT-2-style causal LM), 'seq2seq' (T5-style, from a source to a
/// target column), 'text-classification' or 'token-classification'. The tokenizer is trained on the same rows
/// first. Returns the new model's name.
/// NULL name, source or objective gives NULL; NULL options are the defaults.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_pretrain(
    name: Option<&str>,
    source: Option<&str>,
    objective: Option<&str>,
    options: default!(Option<JsonArg>, "'{}'"),
) -> Option<String> {
    let (name, source, objective) = (name?, source?, objective?);
    super::require_writable(c"ai_pretrain()");
    let options = super::training_options(options);
    let objective = Objective::parse(objective).or_raise();
    Some(train_now(&Request { name, source, objective, options: &options, parent: None }, Start::Pretrain))
}

/// Continues training the registered model `base_model` on the rows of `source`: task 'mlm', 'clm', 'seq2seq'
/// (or 'translation'), 'text-classification' (a new head over the distinct values of the label column) or
/// 'token-classification'. Returns the new name.
/// NULL name, base model, source or task gives NULL; NULL options are the defaults.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_finetune(
    name: Option<&str>,
    base_model: Option<&str>,
    source: Option<&str>,
    task: Option<&str>,
    options: default!(Option<JsonArg>, "'{}'"),
) -> Option<String> {
    let (name, base_model, source, task) = (name?, base_model?, source?, task?);
    super::require_writable(c"ai_finetune()");
    let options = super::training_options(options);
    let objective = Objective::parse(task).or_raise();
    let request = Request { name, source, objective, options: &options, parent: Some(base_model) };
    Some(train_now(&request, Start::finetune(base_model)))
}
