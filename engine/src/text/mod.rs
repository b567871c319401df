//! Tokenisation: loading `tokenizer.json`, encoding with character offsets, batching with padding,
//! and decoding the way transformers' fast tokenizers do.

pub mod chat;
pub mod decoder;
pub mod training;

use crate::error::{AiError, Result};
use crate::models::bert::Batch;
use crate::timing::{time, Phase};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{truncate_encodings, Encoding, PostProcessor, Tokenizer, TruncationParams, TruncationStrategy};

pub struct TextTokenizer {
    inner: Tokenizer,
    /// The mask token and its id, for fill-mask models.
    pub mask: Option<(String, u32)>,
    pad_id: u32,
    /// The unknown token's id: NER reports the input's own text for it.
    pub unk_id: Option<u32>,
    /// The token that opens an input ([CLS], <s>), where there is one.
    pub cls_id: Option<u32>,
    /// transformers' `clean_up_tokenization_spaces` (" ." -> "." and the like) on decoded text.
    cleanup: bool,
    /// Longest encoding the model accepts.
    pub max_tokens: usize,
    /// Characters in the vocabulary's longest token: how much text one token can cover (see `worth_reading`).
    longest_token: usize,
    /// The tokenizer without truncation, made on first use (`token_spans`): the tokenizers crate drops what
    /// truncation cuts off an encoding without special tokens.
    whole: OnceLock<Tokenizer>,
    /// tokenizer_config.json's `model_max_length`, where it is a real length.
    model_max_length: Option<usize>,
    /// The tokenizer without truncation or post-processing (`encode_windows`), made on first use.
    raw: OnceLock<Tokenizer>,
}

/// How transformers' question-answering pipeline cuts a context: windows of `length` tokens, question included,
/// each overlapping the one before by `stride` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub length: usize,
    pub stride: usize,
}

/// A special token in tokenizer_config.json is either a string or {"content": "..."}.
fn token_field(config: &Value, name: &str) -> Option<String> {
    match config.get(name)? {
        Value::String(s) => Some(s.clone()),
        other => other.get("content")?.as_str().map(str::to_string),
    }
}

/// A special token and its id: the one tokenizer_config.json names under `field`, else the first of the usual
/// spellings (BERT's, RoBERTa's) that the vocabulary holds.
fn special_token(tokenizer: &Tokenizer, config: &Value, field: &str, usual: [&str; 2]) -> Option<(String, u32)> {
    token_field(config, field)
        .into_iter()
        .chain(usual.map(str::to_string))
        .find_map(|t| tokenizer.token_to_id(&t).map(|id| (t, id)))
}

impl TextTokenizer {
    /// Loads `dir`'s tokenizer, which reads at most `model_max_tokens` (the model's positions), and at most
    /// tokenizer.json's own truncation or, where given, `sequence_limit` instead (sentence-transformers'
    /// max_seq_length, which it tokenises with whatever tokenizer.json says).
    pub fn load(dir: &Path, model_max_tokens: usize, sequence_limit: Option<usize>) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut inner = Tokenizer::from_file(&path)
            .map_err(|e| AiError::corrupt(format!("cannot read {}: {e}", path.display())))?;
        let config: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| AiError::corrupt(format!("tokenizer_config.json is not valid JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        let mask = special_token(&inner, &config, "mask_token", ["[MASK]", "<mask>"]);
        let pad_id = token_field(&config, "pad_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| inner.get_padding().map(|p| p.pad_id))
            .unwrap_or(0);
        let unk_id = special_token(&inner, &config, "unk_token", ["[UNK]", "<unk>"]).map(|(_, id)| id);
        let cls_id = special_token(&inner, &config, "cls_token", ["[CLS]", "<s>"]).map(|(_, id)| id);
        let cleanup = config.get("clean_up_tokenization_spaces").and_then(Value::as_bool).unwrap_or(false);
        // transformers writes 1e30 when a tokenizer has no length of its own.
        let model_max_length = config.get("model_max_length").and_then(Value::as_u64).map(|n| n as usize);
        // Truncate at the given limit or the file's own, within the model's; tasks that must not lose text refuse
        // instead (encode_whole).
        let limit = sequence_limit.or(inner.get_truncation().map(|t| t.max_length));
        let max_tokens = limit.map_or(model_max_tokens, |l| l.min(model_max_tokens));
        // The tokenizers crate subtracts the special tokens from the limit unchecked.
        let special = special_tokens(&inner);
        if max_tokens <= special {
            return Err(AiError::corrupt(format!(
                "the model accepts {max_tokens} tokens, no more than its {special} special tokens"
            ))
            .with_hint("Check max_position_embeddings in config.json and truncation in tokenizer.json."));
        }
        inner
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| AiError::corrupt(format!("tokenizer.json: {e}")))?;
        inner.with_padding(None);
        let longest_token = longest_token(&inner);
        Ok(TextTokenizer {
            inner,
            mask,
            pad_id,
            unk_id,
            cls_id,
            cleanup,
            max_tokens,
            longest_token,
            whole: OnceLock::new(),
            model_max_length,
            raw: OnceLock::new(),
        })
    }

    /// Encodes one text with special tokens, truncated to `max_tokens`; offsets are in characters, as Python
    /// counts them. Only the part of the text that can reach the kept tokens is tokenised (`worth_reading`).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let text = self.worth(text);
        time(Phase::Tokenize, || self.inner.encode_char_offsets(text, true))
            .map_err(|e| AiError::invalid(format!("cannot tokenize the input: {e}")))
    }

    /// Encodes a pair of texts as one input (a premise and a hypothesis, a query and a document), with the
    /// special tokens between and around them; when the two are too long together, tokens are taken from the
    /// end of the longer one first, as transformers' `truncation=True` does.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoding> {
        let (first, second) = (self.worth(first), self.worth(second));
        time(Phase::Tokenize, || self.inner.encode_char_offsets((first, second), true))
            .map_err(|e| AiError::invalid(format!("cannot tokenize the input: {e}")))
    }

    /// Every token of `text`, without special tokens and without truncation, as (start, end) character offsets.
    /// The text is read in pieces of about 16 kB cut at whitespace, with `between` after each, so that a long text
    /// can be cancelled; tokenisers split at whitespace before anything else, so the pieces give the tokens of
    /// the whole (but for a "word" of more than 32 kB, cut there).
    pub fn token_spans(&self, text: &str, between: &mut dyn FnMut()) -> Result<Vec<(usize, usize)>> {
        const PIECE: usize = 16 << 10;
        let whole = self.whole();
        let mut spans = Vec::new();
        let (mut at, mut chars_before) = (0, 0);
        while at < text.len() {
            let rest = &text[at..];
            // At whitespace past PIECE bytes; a run of 2 x PIECE bytes without any (no word is that long) is cut
            // where it reaches that length.
            let cut = rest
                .char_indices()
                .skip_while(|(i, _)| *i < PIECE)
                .find(|&(i, c)| c.is_whitespace() || i >= 2 * PIECE)
                .map_or(rest.len(), |(i, _)| i);
            let piece = &rest[..cut];
            let encoding = time(Phase::Tokenize, || whole.encode_char_offsets(piece, false))
                .map_err(|e| AiError::invalid(format!("cannot tokenize the input: {e}")))?;
            spans.extend(encoding.get_offsets().iter().map(|&(a, b)| (a + chars_before, b + chars_before)));
            chars_before += piece.chars().count();
            at += cut;
            between();
        }
        Ok(spans)
    }

    /// The question-answering pipeline's windows for this model: `min(model_max_length, 384)` tokens (and no more
    /// than the model reads), overlapping by half that, at most 128.
    pub fn windows(&self) -> Windows {
        let length = self.model_max_length.unwrap_or(usize::MAX).min(384).min(self.max_tokens);
        Windows { length, stride: (length / 2).min(128) }
    }

    /// A question and a context as the question-answering pipeline encodes them: the question, then as much of the
    /// context as fits, and again with the rest of the context in further windows (`windows`), each starting
    /// `stride` tokens before the last one ended. Offsets are in characters of their own text.
    pub fn encode_windows(&self, question: &str, context: &str) -> Result<Vec<Encoding>> {
        let Windows { length, stride } = self.windows();
        let processor = self.inner.get_post_processor();
        let pair = processor.map_or(0, |p| p.added_tokens(true));
        // The tokenizers crate asserts (a panic) that each window leaves the context more than `stride` tokens.
        let question_tokens = self.encode_plain(self.worth(question))?.len();
        if question_tokens.saturating_add(pair).saturating_add(stride) >= length {
            return Err(AiError::invalid(format!(
                "the question is longer than the {} tokens this model reads beside a context",
                length.saturating_sub(pair + stride + 1)
            ))
            .with_hint("Ask a shorter question."));
        }
        // Each context token is in at most this many windows.
        let room = length - question_tokens - pair;
        let copies = room.div_ceil(room - stride);
        crate::budget::check(context.len().saturating_mul(ENCODING_BYTES_PER_CHAR).saturating_mul(copies), || {
            format!("cutting a context of {} bytes into windows of {length} tokens", context.len())
        })?;
        // The steps of the crate's own pair encoding, taken one by one: asked for the pair with this truncation,
        // the tokenizers crate (0.23.2) stops reading the context at `length` tokens and loses the windows past
        // the first few.
        let raw = self.raw.get_or_init(|| {
            let mut raw = self.inner.clone();
            // Turning truncation off cannot fail.
            let _ = raw.with_truncation(None);
            raw.with_post_processor(None::<PostProcessorWrapper>);
            raw
        });
        let truncation = TruncationParams {
            max_length: length - pair,
            stride,
            strategy: TruncationStrategy::OnlySecond,
            ..Default::default()
        };
        let mut first = time(Phase::Tokenize, || {
            let question = raw.encode_char_offsets(question, false)?;
            let mut context = raw.encode_char_offsets(context, false)?;
            // The second text's type, which the windows after the first keep.
            context.set_type_ids(vec![1; context.len()]);
            let (question, context) = truncate_encodings(question, Some(context), &truncation)?;
            match processor {
                Some(processor) => processor.process(question, context, true),
                None => Ok(Encoding::merge(
                    <dyn PostProcessor>::default_process(vec![question, context.unwrap_or_default()], true)?,
                    false,
                )),
            }
        })
        .map_err(|e| AiError::invalid(format!("cannot tokenize the input: {e}")))?;
        let rest = first.take_overflowing();
        Ok(std::iter::once(first).chain(rest).collect())
    }

    /// `text`'s tokens without special tokens, truncated as `encode` truncates.
    fn encode_plain(&self, text: &str) -> Result<Encoding> {
        time(Phase::Tokenize, || self.inner.encode_char_offsets(text, false))
            .map_err(|e| AiError::invalid(format!("cannot tokenize the input: {e}")))
    }

    fn whole(&self) -> &Tokenizer {
        self.whole.get_or_init(|| {
            let mut whole = self.inner.clone();
            // Only truncation is turned off, which cannot fail.
            let _ = whole.with_truncation(None);
            whole
        })
    }

    /// Special tokens the model's inputs carry around a text ([CLS] and [SEP], <s> and </s>).
    pub fn special_tokens(&self) -> usize {
        special_tokens(&self.inner)
    }

    fn worth<'t>(&self, text: &'t str) -> &'t str {
        worth_reading(text, self.max_tokens, self.longest_token)
    }

    /// Bytes of `text` that `encode` reads.
    pub fn read_length(&self, text: &str) -> usize {
        self.worth(text).len()
    }

    /// Like `encode`, but an input longer than the model accepts is an error rather than truncated.
    pub fn encode_whole(&self, text: &str) -> Result<Encoding> {
        let too_long = || {
            AiError::invalid(format!("the input is longer than the {} tokens this model accepts", self.max_tokens))
                .with_hint("Split the text into shorter pieces.")
        };
        if self.worth(text).len() < text.len() {
            return Err(too_long());
        }
        let encoding = self.encode(text)?;
        if !encoding.get_overflowing().is_empty() {
            return Err(too_long());
        }
        Ok(encoding)
    }

    /// Pads encodings on the right into one batch.
    pub fn batch(&self, encodings: &[&Encoding]) -> Result<Batch> {
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let n = encodings.len();
        let (mut ids, mut types, mut mask) = (vec![self.pad_id; n * len], vec![0u32; n * len], vec![0u32; n * len]);
        for (row, e) in encodings.iter().enumerate() {
            let at = row * len;
            ids[at..at + e.len()].copy_from_slice(e.get_ids());
            types[at..at + e.len()].copy_from_slice(e.get_type_ids());
            mask[at..at + e.len()].fill(1);
        }
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, (n, len), &Device::Cpu);
        Ok(Batch { ids: tensor(ids)?, type_ids: tensor(types)?, mask: tensor(mask)? })
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = time(Phase::Decode, || self.inner.decode(ids, skip_special_tokens))
            .map_err(|e| AiError::internal(format!("cannot decode tokens: {e}")))?;
        Ok(if self.cleanup { clean_up_spaces(&text) } else { text })
    }

    /// Joins tokens into text with the tokenizer's decoder ("##" pieces glued to their word),
    /// as transformers' `convert_tokens_to_string` does (no extra clean-up there).
    pub fn tokens_to_string(&self, tokens: Vec<String>) -> Result<String> {
        match self.inner.get_decoder() {
            Some(decoder) => tokenizers::Decoder::decode(decoder, tokens)
                .map_err(|e| AiError::internal(format!("cannot decode tokens: {e}"))),
            None => Ok(tokens.join(" ")),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Bytes an encoding holds per character of input read (ids, offsets, masks and the token strings of every piece),
/// for the budget of encodings held at once.
pub const ENCODING_BYTES_PER_CHAR: usize = 32;

/// Special tokens `tokenizer` puts around a single text ([CLS] and [SEP], <s> and </s>).
fn special_tokens(tokenizer: &Tokenizer) -> usize {
    tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false))
}

/// Characters in the longest token of the vocabulary (at least 1).
pub fn longest_token(tokenizer: &Tokenizer) -> usize {
    tokenizer.get_vocab(true).keys().map(|t| t.chars().count()).max().unwrap_or(1).max(1)
}

/// The start of `text` that can reach a model's first `max_tokens` tokens: every whitespace-separated word gives
/// at least one token and a token covers at most `longest_token` characters, so nothing past the first
/// `max_tokens` + 16 words, or past twice as many characters as that many tokens can cover, is needed. Reading
/// no further keeps a huge text from holding the backend (and its memory) in the tokenizer. Only words the
/// tokenizer drops whole (control characters; accents a normaliser strips) or unknown words longer than the
/// longest token can make this cut differ from reading everything.
pub fn worth_reading(text: &str, max_tokens: usize, longest_token: usize) -> &str {
    let words = max_tokens.saturating_add(16);
    let chars = words.saturating_mul(longest_token).saturating_mul(2);
    let (mut seen, mut in_word) = (0usize, false);
    for (n, (at, c)) in text.char_indices().enumerate() {
        if n >= chars {
            return &text[..at];
        }
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            seen += 1;
            if seen > words {
                return &text[..at];
            }
        }
    }
    text
}

/// transformers' `clean_up_tokenization`: removes the spaces a word-piece decoder leaves before
/// punctuation and English contractions.
fn clean_up_spaces(text: &str) -> String {
    const PAIRS: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    PAIRS.iter().fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::worth_reading;

    #[test]
    fn reads_the_words_and_characters_that_can_reach_the_kept_tokens() {
        // 3 tokens: 19 words kept, the 20th cut with the space before it.
        let text = (0..40).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(worth_reading(&text, 3, 100), (0..19).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ") + " ");
        // One long word: cut at (3 + 16) * 2 * 2 = 76 characters, on a character boundary.
        let word = "é".repeat(1000);
        assert_eq!(worth_reading(&word, 3, 2).chars().count(), 76);
        // Short texts and unbounded tokens come back whole.
        assert_eq!(worth_reading("a b c", 3, 2), "a b c");
        assert_eq!(worth_reading(&text, usize::MAX, usize::MAX), text);
        assert_eq!(worth_reading("", 0, 1), "");
    }

    #[test]
    fn cleanup_matches_transformers() {
        assert_eq!(super::clean_up_spaces("hello , world ! it 's done ."), "hello, world! it's done.");
    }
}
