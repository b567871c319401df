//! ai_translate and ai_summarize: T5 and Marian encoder-decoder models, greedy or beam search.

use super::{in_place, interrupts, present};
use crate::engine::generate::translator::{TranslateOptions, Translator};
use crate::engine::models::Task;
use crate::error::OrRaise;
use pgrx::prelude::*;

fn options(max_tokens: Option<i32>, num_beams: Option<i32>, default_max_tokens: usize) -> TranslateOptions {
    // Out-of-range values fail TranslateOptions::check with the allowed range in the message.
    let count = |n: Option<i32>, default: usize| n.map_or(default, |n| usize::try_from(n).unwrap_or(0));
    TranslateOptions { max_tokens: count(max_tokens, default_max_tokens), num_beams: count(num_beams, 1) }
}

/// Runs `m` on the prefixed texts.
fn run(m: &Translator, prefix: &str, texts: &[String], options: TranslateOptions) -> Vec<String> {
    let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
    m.generate(&inputs, options, &mut interrupts).or_raise()
}

/// `texts` translated, in order.
fn translate(
    texts: &[String],
    model: &str,
    source_lang: Option<&str>,
    target_lang: Option<&str>,
    options: TranslateOptions,
) -> Vec<String> {
    let loaded = crate::store::model_for(model, Task::Translation);
    let m = loaded.translator().or_raise();
    let prefix = m.translation_prefix(source_lang, target_lang).or_raise();
    run(m, &prefix, texts, options)
}

fn summarize(texts: &[String], model: &str, options: TranslateOptions) -> Vec<String> {
    let loaded = crate::store::model_for(model, Task::Summarization);
    let m = loaded.translator().or_raise();
    run(m, &m.summarization_prefix(), texts, options)
}

/// `input` translated. T5 models take source_lang and target_lang (defaults from the model's config when it
/// was trained for one pair); Marian models translate their own pair. num_beams 1 is greedy decoding.
#[pg_extern(stable, parallel_safe)]
fn ai_translate(
    input: Option<&str>,
    model: Option<&str>,
    source_lang: default!(Option<&str>, "NULL"),
    target_lang: default!(Option<&str>, "NULL"),
    max_tokens: default!(Option<i32>, 256),
    num_beams: default!(Option<i32>, 1),
) -> Option<String> {
    let texts = [input?.to_string()];
    translate(&texts, model?, source_lang, target_lang, options(max_tokens, num_beams, 256)).pop()
}

/// The array form: one batch through the model; NULL elements stay NULL.
#[pg_extern(stable, parallel_safe, name = "ai_translate")]
fn ai_translate_array(
    inputs: Option<Array<&str>>,
    model: Option<&str>,
    source_lang: default!(Option<&str>, "NULL"),
    target_lang: default!(Option<&str>, "NULL"),
    max_tokens: default!(Option<i32>, 256),
    num_beams: default!(Option<i32>, 1),
) -> Option<Vec<Option<String>>> {
    let (inputs, model) = (inputs?, model?);
    let (positions, texts) = present(&inputs);
    let answers = translate(&texts, model, source_lang, target_lang, options(max_tokens, num_beams, 256));
    Some(in_place(inputs.len(), positions, answers))
}

/// A summary of `input` by a T5-style model (the "summarize: " task prefix).
#[pg_extern(stable, parallel_safe)]
fn ai_summarize(
    input: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 128),
    num_beams: default!(Option<i32>, 1),
) -> Option<String> {
    let texts = [input?.to_string()];
    summarize(&texts, model?, options(max_tokens, num_beams, 128)).pop()
}

/// The array form of ai_summarize; NULL elements stay NULL.
#[pg_extern(stable, parallel_safe, name = "ai_summarize")]
fn ai_summarize_array(
    inputs: Option<Array<&str>>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 128),
    num_beams: default!(Option<i32>, 1),
) -> Option<Vec<Option<String>>> {
    let (inputs, model) = (inputs?, model?);
    let (positions, texts) = present(&inputs);
    let answers = summarize(&texts, model, options(max_tokens, num_beams, 128));
    Some(in_place(inputs.len(), positions, answers))
}
