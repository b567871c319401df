//! Text generation for decoder models: greedy or sampled, ending at the end-of-text token, at
//! max_tokens, or where a stop string appears; pieces come out as valid UTF-8 as they are made.

use super::error::{AiError, Result};
use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};

/// Upper bound on max_tokens: one call should not hold a backend for hours.
pub const MAX_TOKENS_LIMIT: usize = 4096;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    /// 1 keeps every token.
    pub top_p: f64,
    /// 0 keeps every token.
    pub top_k: usize,
    /// None draws a seed; the same seed gives the same text.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// 1 is none; above 1 makes tokens already seen less likely.
    pub repetition_penalty: f32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            stop: Vec::new(),
            repetition_penalty: 1.0,
        }
    }
}

impl GenerateOptions {
    pub fn check(&self) -> Result<()> {
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(AiError::invalid(format!("max_tokens must be between 1 and {MAX_TOKENS_LIMIT}")));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(AiError::invalid("temperature must be 0 (greedy) or more"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(AiError::invalid("top_p must be above 0 and at most 1"));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(AiError::invalid("repetition_penalty must be above 0 (1 means none)"));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(AiError::invalid("stop strings must not be empty"));
        }
        Ok(())
    }

    fn sampler(&self) -> LogitsProcessor {
        let seed = self.seed.unwrap_or_else(rand_seed);
        let temperature = self.temperature;
        let sampling = if temperature == 0.0 {
            Sampling::ArgMax
        } else {
            match (self.top_k, self.top_p) {
                (0, p) if p >= 1.0 => Sampling::All { temperature },
                (0, p) => Sampling::TopP { p, temperature },
                (k, p) if p >= 1.0 => Sampling::TopK { k, temperature },
                (k, p) => Sampling::TopKThenTopP { k, p, temperature },
            }
        };
        LogitsProcessor::from_sampling(seed, sampling)
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A decoder that returns the next-token logits after feeding more tokens.
pub trait Decoder {
    /// Forgets earlier calls' tokens.
    fn reset(&mut self) -> Result<()>;
    /// The most tokens, prompt and generated together, the model can attend to.
    fn context_size(&self) -> usize;
    /// Feeds `ids` after the tokens fed so far; returns the last position's logits, (vocab).
    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor>;
}

/// A model that generates: a fresh decoding session per call, its tokenizer, its chat template.
pub trait CausalLm {
    fn session(&self) -> Result<Box<dyn Decoder + '_>>;
    fn codec(&self) -> &dyn TextCodec;
    /// The Jinja chat template the model ships, if any.
    fn chat_template(&self) -> Option<&str>;
}

/// Generates with `model`; see `generate`.
pub fn generate_with(
    model: &dyn CausalLm,
    prompt: &str,
    options: &GenerateOptions,
    between: &mut dyn FnMut(),
    on_piece: &mut dyn FnMut(&str),
) -> Result<Vec<u32>> {
    generate(model.session()?.as_mut(), model.codec(), prompt, options, between, on_piece)
}

/// What generation needs from a tokenizer: ids for the prompt, text for ids.
pub trait TextCodec {
    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
    fn eos_id(&self) -> Option<u32>;
    /// Whether `id` ends generation; models with several end tokens override it.
    fn is_end(&self, id: u32) -> bool {
        Some(id) == self.eos_id()
    }
    fn id_to_token(&self, id: u32) -> Option<String>;
}

/// Generates a continuation of `prompt`. `on_piece` receives the text as it is made, never split
/// inside a character nor into a stop string; it returns false to stop early. `between` runs
/// before each token (the SQL layer checks for interrupts there). Returns the generated token ids.
pub fn generate(
    model: &mut dyn Decoder,
    codec: &dyn TextCodec,
    prompt: &str,
    options: &GenerateOptions,
    between: &mut dyn FnMut(),
    on_piece: &mut dyn FnMut(&str),
) -> Result<Vec<u32>> {
    options.check()?;
    let prompt_ids = codec.encode_prompt(prompt)?;
    if prompt_ids.is_empty() {
        return Err(AiError::invalid("the prompt is empty").with_hint("Give at least one word to continue."));
    }
    let context = model.context_size();
    if prompt_ids.len() >= context {
        return Err(AiError::invalid(format!(
            "the prompt is {} tokens; this model reads at most {context}, generated tokens included",
            prompt_ids.len()
        ))
        .with_hint("Shorten the prompt."));
    }
    model.reset()?;
    let mut sampler = options.sampler();
    let mut generated: Vec<u32> = Vec::new();
    let mut text = Stream::new(&options.stop);
    let mut input = prompt_ids.clone();
    // Generation also ends when the context is full, as if max_tokens were reached.
    for _ in 0..options.max_tokens.min(context - prompt_ids.len()) {
        between();
        let mut logits = model.next_logits(&input)?;
        if options.repetition_penalty != 1.0 {
            let seen: Vec<u32> = prompt_ids.iter().chain(&generated).copied().collect();
            logits = candle_transformers::utils::apply_repeat_penalty(&logits, options.repetition_penalty, &seen)?;
        }
        let next = sampler.sample(&logits)?;
        if codec.is_end(next) {
            break;
        }
        generated.push(next);
        input = vec![next];
        let decoded = codec.decode(&generated)?;
        if text.update(&decoded, on_piece) {
            break;
        }
    }
    text.finish(on_piece);
    Ok(generated)
}

/// Turns the growing decoded text into pieces: holds back an incomplete character (the decoder
/// shows it as U+FFFD) and any tail that could still become a stop string.
struct Stream<'a> {
    stop: &'a [String],
    /// The decoded text so far (cut at a stop string once one appears).
    text: String,
    emitted: usize,
    stopped: bool,
}

impl<'a> Stream<'a> {
    fn new(stop: &'a [String]) -> Self {
        Stream { stop, text: String::new(), emitted: 0, stopped: false }
    }

    /// Takes the whole decoded text; returns true once a stop string has appeared.
    fn update(&mut self, decoded: &str, on_piece: &mut dyn FnMut(&str)) -> bool {
        self.text = decoded.to_string();
        if let Some(at) = self.stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(at);
            self.stopped = true;
            return true;
        }
        // A trailing replacement character is usually half a UTF-8 sequence still being built.
        let mut ready = self.text.trim_end_matches('\u{FFFD}').len();
        ready -= self.stop_prefix_len(&self.text[..ready]);
        if ready > self.emitted {
            on_piece(&self.text[self.emitted..ready]);
            self.emitted = ready;
        }
        false
    }

    /// The longest tail of `text` that begins some stop string.
    fn stop_prefix_len(&self, text: &str) -> usize {
        self.stop
            .iter()
            .flat_map(|s| (1..s.len()).rev().filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|prefix| text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0)
    }

    fn finish(&mut self, on_piece: &mut dyn FnMut(&str)) {
        if self.text.len() > self.emitted {
            on_piece(&self.text[self.emitted..]);
            self.emitted = self.text.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    fn pieces(stop: &[&str], growing: &[&str]) -> Vec<String> {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut stream = Stream::new(&stop);
        for text in growing {
            if stream.update(text, &mut |p| out.push(p.to_string())) {
                break;
            }
        }
        stream.finish(&mut |p| out.push(p.to_string()));
        out
    }

    #[test]
    fn holds_back_half_characters() {
        assert_eq!(pieces(&[], &["a", "a\u{FFFD}", "aé", "aé!"]), ["a", "é", "!"]);
    }

    #[test]
    fn cuts_at_a_stop_string_without_emitting_it() {
        assert_eq!(pieces(&["\n\n"], &["one", "one\n", "one\ntwo", "one\ntwo\n\nthree"]), ["one", "\ntwo"]);
        assert_eq!(pieces(&["END"], &["abc E", "abc EN", "abc END more"]), ["abc "]);
    }
}
