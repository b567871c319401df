//! Text generation for decoder models: greedy or sampled, ending at the end-of-text token, at
//! max_tokens, or where a stop string appears; pieces come out as valid UTF-8 as they are made.

pub mod beam;
pub mod kv_cache;
pub mod seq2seq;
pub mod translator;

use crate::error::{AiError, Result};
use crate::timing::forward;
use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use std::collections::VecDeque;

/// Prompt tokens fed at once: long enough for the matrix products to run at full speed, short enough that a part
/// of a small model's prompt takes well under a second. Every decoder pg_ai runs (its own and candle's, which
/// masks a part against the keys cached before it) takes a prompt in parts.
pub const PROMPT_PART: usize = 128;

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
pub trait Decoder: Send {
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

/// Generates a continuation of `prompt` with `model`. `on_piece` receives the text as it is made, never split
/// inside a character nor into a stop string. `between` runs before each token (the SQL layer checks for
/// interrupts there). Returns the generated token ids.
pub fn generate_with(
    model: &dyn CausalLm,
    prompt: &str,
    options: &GenerateOptions,
    between: &mut dyn FnMut(),
    on_piece: &mut dyn FnMut(&str),
) -> Result<Vec<u32>> {
    let mut generation = Generation::start(model, prompt, options)?;
    while let Some(piece) = generation.next_piece(between)? {
        on_piece(&piece);
    }
    Ok(generation.generated)
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
    /// Characters in the vocabulary's longest token, which bounds how much prompt is worth tokenising.
    fn longest_token(&self) -> usize {
        usize::MAX
    }
}

/// A generation in progress, made one piece at a time as the caller asks for them (ai_generate_stream
/// returns each piece as its row is fetched). It ends at the end-of-text token, at max_tokens, when the
/// context is full, or before the first stop string.
pub struct Generation<'m> {
    decoder: Box<dyn Decoder + 'm>,
    codec: &'m dyn TextCodec,
    repetition_penalty: f32,
    sampler: LogitsProcessor,
    prompt_ids: Vec<u32>,
    generated: Vec<u32>,
    /// The tokens to feed next: the prompt, then each new token.
    input: Vec<u32>,
    tokens_left: usize,
    detokenizer: Detokenizer,
    text: Stream,
    ready: VecDeque<String>,
    finished: bool,
}

impl<'m> Generation<'m> {
    /// Checks the options and the prompt; no token is generated yet.
    pub fn start(model: &'m dyn CausalLm, prompt: &str, options: &GenerateOptions) -> Result<Self> {
        options.check()?;
        let codec = model.codec();
        let mut decoder = model.session()?;
        let context = decoder.context_size();
        let too_long = |tokens: String| {
            AiError::invalid(format!(
                "the prompt is {tokens} tokens; this model reads at most {context}, generated tokens included"
            ))
            .with_hint("Shorten the prompt.")
        };
        // A prompt that surely holds more tokens than the context is refused before it is tokenised.
        if crate::text::worth_reading(prompt, context, codec.longest_token()).len() < prompt.len() {
            return Err(too_long(format!("more than {context}")));
        }
        let prompt_ids = codec.encode_prompt(prompt)?;
        if prompt_ids.is_empty() {
            return Err(AiError::invalid("the prompt is empty").with_hint("Give at least one word to continue."));
        }
        if prompt_ids.len() >= context {
            return Err(too_long(prompt_ids.len().to_string()));
        }
        decoder.reset()?;
        Ok(Generation {
            decoder,
            codec,
            repetition_penalty: options.repetition_penalty,
            sampler: options.sampler(),
            input: prompt_ids.clone(),
            // Generation also ends when the context is full, as if max_tokens were reached.
            tokens_left: options.max_tokens.min(context - prompt_ids.len()),
            prompt_ids,
            generated: Vec::new(),
            detokenizer: Detokenizer::default(),
            text: Stream::new(options.stop.clone()),
            ready: VecDeque::new(),
            finished: false,
        })
    }

    /// The next piece of text, or None once the generation has ended. `between` runs before each token.
    pub fn next_piece(&mut self, between: &mut dyn FnMut()) -> Result<Option<String>> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            if self.finished {
                return Ok(None);
            }
            between();
            self.step()?;
        }
    }

    /// The token ids generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    fn step(&mut self) -> Result<()> {
        if self.input.len() > PROMPT_PART {
            // A long prompt is read a part at a time; `next_piece` runs `between` before each, and attention
            // never holds more than a part's rows of scores.
            let head: Vec<u32> = self.input.drain(..PROMPT_PART).collect();
            let decoder = &mut self.decoder;
            forward(|| decoder.next_logits(&head))?;
            return Ok(());
        }
        if self.tokens_left == 0 {
            return self.finish();
        }
        self.tokens_left -= 1;
        let (decoder, input) = (&mut self.decoder, &self.input);
        let mut logits = forward(|| decoder.next_logits(input))?;
        if self.repetition_penalty != 1.0 {
            let seen: Vec<u32> = self.prompt_ids.iter().chain(&self.generated).copied().collect();
            logits = candle_transformers::utils::apply_repeat_penalty(&logits, self.repetition_penalty, &seen)?;
        }
        let next = self.sampler.sample(&logits)?;
        if self.codec.is_end(next) {
            return self.finish();
        }
        self.generated.push(next);
        self.input = vec![next];
        let new_text = self.detokenizer.next(self.codec, &self.generated)?;
        let ready = &mut self.ready;
        if self.text.push(&new_text, &mut |p| ready.push_back(p.to_string())) {
            self.finished = true;
        }
        Ok(())
    }

    /// Releases what is left: characters still being built, and text held back for a stop string.
    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        let rest = self.detokenizer.rest(self.codec, &self.generated)?;
        let ready = &mut self.ready;
        if !self.text.push(&rest, &mut |p| ready.push_back(p.to_string())) {
            self.text.finish(&mut |p| ready.push_back(p.to_string()));
        }
        Ok(())
    }
}

/// Decodes generated ids as they come, looking only at the last few tokens (as text-generation-inference
/// does), so that the cost per token does not grow with the output. Text is released only once it ends in a
/// whole character: a byte-level token may carry half of one.
#[derive(Default)]
struct Detokenizer {
    /// Tokens before `prefix` are released; `prefix..read` are decoded again as context for the next ones,
    /// so that spaces and merges at the seam come out as a full decode gives them.
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    fn next(&mut self, codec: &dyn TextCodec, ids: &[u32]) -> Result<String> {
        let before = codec.decode(&ids[self.prefix..self.read])?;
        let now = codec.decode(&ids[self.prefix..])?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') || !now.is_char_boundary(before.len()) {
            return Ok(String::new());
        }
        self.prefix = self.read;
        self.read = ids.len();
        Ok(now[before.len()..].to_string())
    }

    /// What is left at the end, unfinished characters included.
    fn rest(&self, codec: &dyn TextCodec, ids: &[u32]) -> Result<String> {
        let before = codec.decode(&ids[self.prefix..self.read])?;
        let now = codec.decode(&ids[self.prefix..])?;
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }
}

/// Turns the decoded text into pieces as it grows, holding back any tail that could still become a stop string.
struct Stream {
    stop: Vec<String>,
    /// The decoded text so far.
    text: String,
    emitted: usize,
}

impl Stream {
    fn new(stop: Vec<String>) -> Self {
        Stream { stop, text: String::new(), emitted: 0 }
    }

    /// Appends newly decoded text; returns true once a stop string has appeared (the text before it is then
    /// emitted, the stop string is not).
    fn push(&mut self, new_text: &str, on_piece: &mut dyn FnMut(&str)) -> bool {
        self.text.push_str(new_text);
        // Emitted text never holds the start of a stop string, so a new one can only start after it.
        let tail = &self.text[self.emitted..];
        if let Some(at) = self.stop.iter().filter_map(|s| tail.find(s.as_str())).min() {
            if at > 0 {
                on_piece(&tail[..at]);
            }
            return true;
        }
        let ready = self.text.len() - self.stop_prefix_len(tail);
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
    use super::{Detokenizer, Stream, TextCodec};
    use crate::text::decoder::DecoderTokenizer;

    #[test]
    fn incremental_decoding_equals_decoding_everything() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("tests/fixtures/models/gpt2/tokenizer.json");
        let codec = DecoderTokenizer::new(tokenizers::Tokenizer::from_file(dir).unwrap(), vec![0]).unwrap();
        // Byte-level BPE splits these characters into several tokens each.
        let text = "the cat sat in the park. Ünïcödé 日本語 ok 🐘!";
        let ids = codec.encode_prompt(text).unwrap();
        let mut detokenizer = Detokenizer::default();
        let mut out = String::new();
        for n in 1..=ids.len() {
            let piece = detokenizer.next(&codec, &ids[..n]).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "no half characters: {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&detokenizer.rest(&codec, &ids).unwrap());
        assert_eq!(out, codec.decode(&ids).unwrap());
        assert_eq!(out, text);
    }

    fn pieces(stop: &[&str], new_texts: &[&str]) -> Vec<String> {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut stream = Stream::new(stop);
        for text in new_texts {
            if stream.push(text, &mut |p| out.push(p.to_string())) {
                return out;
            }
        }
        stream.finish(&mut |p| out.push(p.to_string()));
        out
    }

    #[test]
    fn passes_text_through_without_stop_strings() {
        assert_eq!(pieces(&[], &["a", "é", "!"]), ["a", "é", "!"]);
    }

    #[test]
    fn cuts_at_a_stop_string_without_emitting_it() {
        assert_eq!(pieces(&["\n\n"], &["one", "\n", "two", "\n\nthree"]), ["one", "\ntwo"]);
        assert_eq!(pieces(&["END"], &["abc E", "N", "D more"]), ["abc "]);
        assert_eq!(pieces(&["END"], &["abc EN", "X"]), ["abc ", "ENX"]);
    }
}
