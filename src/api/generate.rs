//! ai_generate, ai_generate_stream and ai_chat: text generation with decoder models.

use super::interrupts;
use crate::engine::error::AiError;
use crate::engine::generate::{generate_with, CausalLm, GenerateOptions, Generation};
use crate::engine::models::AnyModel;
use crate::engine::models::Task;
use crate::engine::text::chat;
use crate::error::OrRaise;
use pgrx::prelude::*;
use std::rc::Rc;

#[allow(clippy::too_many_arguments)]
fn options(
    max_tokens: Option<i32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    seed: Option<i64>,
    stop: Option<Array<&str>>,
    repetition_penalty: Option<f32>,
) -> GenerateOptions {
    GenerateOptions {
        // Out-of-range values fail GenerateOptions::check with the allowed range in the message.
        max_tokens: max_tokens.map_or(GenerateOptions::default().max_tokens, |n| usize::try_from(n).unwrap_or(0)),
        temperature: temperature.unwrap_or(0.0) as f64,
        top_p: top_p.unwrap_or(1.0) as f64,
        top_k: match top_k.map(usize::try_from) {
            None => 0,
            Some(Ok(k)) => k,
            Some(Err(_)) => crate::error::raise(AiError::invalid("top_k must be 0 (no limit) or more")),
        },
        seed: seed.map(|s| s as u64),
        stop: stop.map(|a| a.iter().flatten().map(str::to_string).collect()).unwrap_or_default(),
        repetition_penalty: repetition_penalty.unwrap_or(1.0),
    }
}

/// The pieces of the continuation of `prompt` by `m`.
fn pieces(m: &dyn CausalLm, prompt: &str, options: &GenerateOptions) -> Vec<String> {
    let mut pieces = Vec::new();
    generate_with(m, prompt, options, &mut interrupts, &mut |p| pieces.push(p.to_string())).or_raise();
    pieces
}

/// Generates the pieces of the continuation of `prompt`; NULL prompt or model gives None.
fn run(prompt: Option<&str>, model: Option<&str>, options: GenerateOptions) -> Option<Vec<String>> {
    let (prompt, model) = (prompt?, model?);
    let loaded = crate::store::model_for(model, Task::TextGeneration);
    Some(pieces(loaded.causal().or_raise(), prompt, &options))
}

/// The continuation of `prompt` (without the prompt). temperature 0 is greedy; a seed makes
/// sampling repeatable; generation ends at the end-of-text token, at max_tokens, or before the
/// first stop string.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::too_many_arguments)]
fn ai_generate(
    prompt: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 64),
    temperature: default!(Option<f32>, 0),
    top_p: default!(Option<f32>, 1),
    top_k: default!(Option<i32>, 0),
    seed: default!(Option<i64>, "NULL"),
    stop: default!(Option<Array<&str>>, "NULL"),
    repetition_penalty: default!(Option<f32>, 1),
) -> Option<String> {
    let options = options(max_tokens, temperature, top_p, top_k, seed, stop, repetition_penalty);
    run(prompt, model, options).map(|pieces| pieces.concat())
}

/// The same continuation as ai_generate, one row per piece, each made when its row is fetched (so a cursor or
/// a client reading rows as they come sees the first piece before the rest exist); pieces never split a
/// character and concatenate to exactly what ai_generate returns.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::too_many_arguments)]
fn ai_generate_stream(
    prompt: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 64),
    temperature: default!(Option<f32>, 0),
    top_p: default!(Option<f32>, 1),
    top_k: default!(Option<i32>, 0),
    seed: default!(Option<i64>, "NULL"),
    stop: default!(Option<Array<&str>>, "NULL"),
    repetition_penalty: default!(Option<f32>, 1),
) -> SetOfIterator<'static, String> {
    let options = options(max_tokens, temperature, top_p, top_k, seed, stop, repetition_penalty);
    let (Some(prompt), Some(model)) = (prompt, model) else {
        return SetOfIterator::new(std::iter::empty());
    };
    let loaded = crate::store::model_for(model, Task::TextGeneration).into_shared();
    SetOfIterator::new(Pieces::start(loaded, prompt, &options))
}

/// The pieces of one generation, made as the rows are fetched.
struct Pieces {
    // Declared first, so dropped first: it borrows the model below.
    generation: Generation<'static>,
    _model: Rc<AnyModel>,
}

impl Pieces {
    fn start(model: Rc<AnyModel>, prompt: &str, options: &GenerateOptions) -> Pieces {
        let generation = Generation::start(model.causal().or_raise(), prompt, options).or_raise();
        // SAFETY: the generation borrows the model inside the Rc's allocation, which never moves and lives as
        // long as the Rc, which this struct owns and drops after the generation.
        let generation = unsafe { std::mem::transmute::<Generation<'_>, Generation<'static>>(generation) };
        Pieces { generation, _model: model }
    }
}

impl Iterator for Pieces {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.generation.next_piece(&mut interrupts).or_raise()
    }
}

/// The assistant's reply to `messages` ('[{"role": "user", "content": "..."}]'), prompted with the
/// model's own chat template (ChatML for SmolLM2). Generation options as for ai_generate.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::too_many_arguments)]
fn ai_chat(
    messages: Option<super::json_arg::JsonArg>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, 256),
    temperature: default!(Option<f32>, 0),
    top_p: default!(Option<f32>, 1),
    top_k: default!(Option<i32>, 0),
    seed: default!(Option<i64>, "NULL"),
    stop: default!(Option<Array<&str>>, "NULL"),
    repetition_penalty: default!(Option<f32>, 1),
) -> Option<String> {
    let (messages, model) = (messages?, model?);
    let options = options(max_tokens, temperature, top_p, top_k, seed, stop, repetition_penalty);
    let messages = chat::parse_messages(&messages.value("messages")).or_raise();
    let loaded = crate::store::model_for(model, Task::TextGeneration);
    let m = loaded.causal().or_raise();
    let template = m.chat_template().ok_or_else(|| {
        AiError::wrong_task(format!("model \"{model}\" has no chat template"))
            .with_hint("Use ai_generate with a prompt written for the model.")
    });
    let codec = m.codec();
    let eos = codec.eos_id().and_then(|id| codec.id_to_token(id)).unwrap_or_default();
    let prompt = chat::render(template.or_raise(), &messages, "", &eos).or_raise();
    Some(pieces(m, &prompt, &options).concat().trim().to_string())
}
