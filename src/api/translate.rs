//! ai_translate and ai_summarize: T5, Marian and BART encoder-decoder models, greedy or beam search.

use super::{in_place, interrupts, present};
use crate::engine::generate::translator::{TranslateOptions, Translator};
use crate::engine::models::Task;
use crate::error::OrRaise;
use pgrx::prelude::*;

/// The caller's sizes; where NULL, `default_max_tokens` and the model's own number of beams (its generation
/// config's num_beams, else 1: greedy).
struct Sizes {
    max_tokens: Option<i32>,
    num_beams: Option<i32>,
    default_max_tokens: usize,
}

/// Runs `m` on the prefixed texts.
fn run(m: &Translator, prefix: &str, texts: &[String], sizes: Sizes) -> Vec<String> {
    // Out-of-range values fail TranslateOptions::check with the allowed range in the message.
    let count = |n: Option<i32>, default: usize| n.map_or(default, |n| usize::try_from(n).unwrap_or(0));
    let options = TranslateOptions {
        max_tokens: count(sizes.max_tokens, sizes.default_max_tokens),
        num_beams: count(sizes.num_beams, m.settings.num_beams),
    };
    let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
    m.generate(&inputs, options, &mut interrupts).or_raise()
}

/// `texts` translated, in order.
fn translate(
    texts: &[String],
    model: &str,
    source_lang: Option<&str>,
    target_lang: Option<&str>,
    sizes: Sizes,
) -> Vec<String> {
    let loaded = crate::store::model_for(model, Task::Translation);
    let m = loaded.translator().or_raise();
    let prefix = m.translation_prefix(source_lang, target_lang).or_raise();
    run(m, &prefix, texts, sizes)
}

fn summarize(texts: &[String], model: &str, sizes: Sizes) -> Vec<String> {
    let loaded = crate::store::model_for(model, Task::Summarization);
    let m = loaded.translator().or_raise();
    run(m, &m.summarization_prefix(), texts, sizes)
}

/// `input` translated. T5 models take source_lang and target_lang (defaults from the model's config when it
/// was trained for one pair); Marian models translate their own pair. num_beams 1 is greedy decoding; NULL,
/// the model's own (its generation config's num_beams, else 1).
#[pg_extern(stable, parallel_safe)]
fn ai_translate(
    input: Option<&str>,
    model: Option<&str>,
    source_lang: default!(Option<&str>, "NULL"),
    target_lang: default!(Option<&str>, "NULL"),
    max_tokens: default!(Option<i32>, 256),
    num_beams: default!(Option<i32>, "NULL"),
) -> Option<String> {
    let texts = [input?.to_string()];
    translate(&texts, model?, source_lang, target_lang, Sizes { max_tokens, num_beams, default_max_tokens: 256 }).pop()
}

/// The array form: one batch through the model; NULL elements stay NULL.
// Volatile, though its answers are not: the planner evaluates a stable function of constants once more to
// estimate unnest(f(ARRAY[...])), running the model twice.
#[pg_extern(volatile, parallel_safe, name = "ai_translate")]
fn ai_translate_array(
    inputs: Option<Array<&str>>,
    model: Option<&str>,
    source_lang: default!(Option<&str>, "NULL"),
    target_lang: default!(Option<&str>, "NULL"),
    max_tokens: default!(Option<i32>, 256),
    num_beams: default!(Option<i32>, "NULL"),
) -> Option<Vec<Option<String>>> {
    let (inputs, model) = (inputs?, model?);
    let (positions, texts) = present(&inputs);
    let answers =
        translate(&texts, model, source_lang, target_lang, Sizes { max_tokens, num_beams, default_max_tokens: 256 });
    Some(in_place(inputs.len(), positions, answers))
}

/// A summary of `input` by a T5 model (the "summarize: " task prefix) or a BART summariser; num_beams NULL is the
/// model's own.
#[pg_extern(stable, parallel_safe)]
fn ai_summarize(
    input: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 128),
    num_beams: default!(Option<i32>, "NULL"),
) -> Option<String> {
    let texts = [input?.to_string()];
    summarize(&texts, model?, Sizes { max_tokens, num_beams, default_max_tokens: 128 }).pop()
}

/// The array form of ai_summarize; NULL elements stay NULL.
// Volatile, though its answers are not: the planner evaluates a stable function of constants once more to
// estimate unnest(f(ARRAY[...])), running the model twice.
#[pg_extern(volatile, parallel_safe, name = "ai_summarize")]
fn ai_summarize_array(
    inputs: Option<Array<&str>>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 128),
    num_beams: default!(Option<i32>, "NULL"),
) -> Option<Vec<Option<String>>> {
    let (inputs, model) = (inputs?, model?);
    let (positions, texts) = present(&inputs);
    let answers = summarize(&texts, model, Sizes { max_tokens, num_beams, default_max_tokens: 128 });
    Some(in_place(inputs.len(), positions, answers))
}
