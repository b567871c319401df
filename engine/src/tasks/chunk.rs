//! Chunking: a long text cut into pieces that a model reads whole (an encoder reads its first max_tokens tokens
//! and drops the rest), for embedding or classifying each. Chunks are counted in the model's own tokens and cut
//! between words where a word boundary lies within the limit.

use crate::error::{AiError, Result};
use crate::text::TextTokenizer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    /// Character offsets into the input, end exclusive (Python's convention).
    pub start: usize,
    pub end: usize,
    pub tokens: usize,
}

/// Memory per byte of input while a text is chunked: its characters with their byte offsets (16 bytes each), a
/// token's offsets (16 bytes, at most one token a byte) and the chunks' text (the input once, more with overlap).
const BYTES_PER_INPUT_BYTE: usize = 40;

/// The chunks of `text`, in order, each of at most `max_tokens` tokens (special tokens not counted), each after
/// the first starting with up to `overlap` tokens of the one before, in whole words. A word longer than
/// `max_tokens` is cut between its tokens. Whitespace between chunks belongs to neither.
pub fn chunks(
    tokenizer: &TextTokenizer,
    text: &str,
    max_tokens: usize,
    overlap: usize,
    between: &mut dyn FnMut(),
) -> Result<Vec<Chunk>> {
    let fits = tokenizer.max_tokens.saturating_sub(tokenizer.special_tokens());
    if max_tokens == 0 || max_tokens > fits {
        return Err(AiError::invalid(format!("max_tokens must be between 1 and {fits}")).with_hint(format!(
            "{fits} tokens and the special tokens around them are what this model reads at once."
        )));
    }
    if overlap >= max_tokens {
        return Err(AiError::invalid("overlap must be less than max_tokens"));
    }
    crate::budget::check(text.len().saturating_mul(BYTES_PER_INPUT_BYTE), || {
        format!("chunking a text of {} bytes", text.len())
    })?;
    let spans = tokenizer.token_spans(text, between)?;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte = |char_at: usize| chars.get(char_at).map_or(text.len(), |&(b, _)| b);
    // A word starts at token i where whitespace comes before it (or it begins with whitespace itself, as
    // byte-level tokens whose offsets keep their space do).
    let word_start = |i: usize| {
        i == 0 || {
            let (before, (start, _)) = (spans[i - 1].1, spans[i]);
            text[byte(before.min(start))..byte(start + 1)].chars().any(char::is_whitespace)
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < spans.len() {
        let limit = (start + max_tokens).min(spans.len());
        let end = if limit == spans.len() {
            limit
        } else {
            (start + 1..=limit).rev().find(|&i| word_start(i)).unwrap_or(limit)
        };
        let (mut from, mut to) = (spans[start].0, spans[end - 1].1);
        // Byte-level and sentencepiece tokens may carry the space before their word.
        while from < to && chars[from].1.is_whitespace() {
            from += 1;
        }
        while to > from && chars[to - 1].1.is_whitespace() {
            to -= 1;
        }
        out.push(Chunk { text: text[byte(from)..byte(to)].to_string(), start: from, end: to, tokens: end - start });
        if end == spans.len() {
            break;
        }
        // The next chunk starts up to `overlap` tokens back, at a word's start, and always after this one's.
        let back = end.saturating_sub(overlap).max(start + 1);
        start = (back..end).find(|&i| word_start(i)).unwrap_or(end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> TextTokenizer {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/bert-mlm"));
        TextTokenizer::load(dir, 64, None).unwrap()
    }

    fn cut(text: &str, max_tokens: usize, overlap: usize) -> Vec<(String, usize, usize, usize)> {
        let chunks = chunks(&tokenizer(), text, max_tokens, overlap, &mut || ()).unwrap();
        chunks.into_iter().map(|c| (c.text, c.start, c.end, c.tokens)).collect()
    }

    fn owned(rows: &[(&str, usize, usize, usize)]) -> Vec<(String, usize, usize, usize)> {
        rows.iter().map(|&(t, s, e, n)| (t.to_string(), s, e, n)).collect()
    }

    const TEXT: &str = "the cat sat in the park . the dog ran to the river . bob lives in paris .";

    #[test]
    fn cuts_between_words_within_the_limit() {
        assert_eq!(
            cut(TEXT, 8, 0),
            owned(&[
                ("the cat sat in the park . the", 0, 29, 8),
                ("dog ran to the river . bob lives", 30, 62, 8),
                ("in paris .", 63, 73, 3),
            ])
        );
        assert_eq!(cut(TEXT, 64 - 2, 0), owned(&[(TEXT, 0, 73, 19)]));
    }

    #[test]
    fn overlapping_chunks_start_at_a_word() {
        assert_eq!(
            cut(TEXT, 8, 2),
            owned(&[
                ("the cat sat in the park . the", 0, 29, 8),
                (". the dog ran to the river .", 24, 52, 8),
                ("river . bob lives in paris .", 45, 73, 7),
            ])
        );
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_between_its_tokens() {
        // Not in the vocabulary: one token per letter ("u", "##n", ...).
        assert_eq!(cut("unbelievable", 5, 0), owned(&[("unbel", 0, 5, 5), ("ievab", 5, 10, 5), ("le", 10, 12, 2)]));
        // Offsets count characters: the accent (stripped by the tokenizer) stays in the text.
        assert_eq!(cut("café au lait", 62, 0), owned(&[("café au lait", 0, 12, 10)]));
        assert_eq!(cut("", 8, 0), owned(&[]));
    }

    /// Byte-level BPE (RoBERTa) and sentencepiece (XLM-RoBERTa) tokens, whose offsets may hold the space before
    /// their word: the same words in each chunk, no space at either end.
    #[test]
    fn other_tokenizers_cut_at_the_same_words() {
        for name in ["roberta-mlm", "xlm-roberta-mlm"] {
            let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models")).join(name);
            let t = TextTokenizer::load(&dir, 64, None).unwrap();
            let got = chunks(&t, TEXT, 8, 2, &mut || ()).unwrap();
            let chars: Vec<char> = TEXT.chars().collect();
            for c in &got {
                assert!(c.tokens <= 8 && !c.text.starts_with(' ') && !c.text.ends_with(' '), "{name}: {c:?}");
                assert_eq!(c.text, chars[c.start..c.end].iter().collect::<String>());
                // Whole words only: each chunk starts and ends where a word does.
                assert!(c.start == 0 || chars[c.start - 1] == ' ', "{name}: {c:?}");
                assert!(c.end == chars.len() || chars[c.end] == ' ', "{name}: {c:?}");
            }
            assert_eq!((got[0].start, got.last().unwrap().end), (0, chars.len()), "{name}");
        }
    }

    #[test]
    fn a_long_text_is_read_in_pieces_with_interrupt_checks() {
        let text = "the cat sat in the park . ".repeat(2000); // 52 kB: four pieces
        let mut checks = 0;
        let got = chunks(&tokenizer(), &text, 62, 0, &mut || checks += 1).unwrap();
        assert!(checks >= 4, "{checks}");
        assert_eq!(got.iter().map(|c| c.tokens).sum::<usize>(), 2000 * 7);
        // Every word is one token here: full chunks of 62, then the rest (14000 = 225 x 62 + 50).
        assert_eq!(got.len(), 226);
        assert!(got[..225].iter().all(|c| c.tokens == 62) && got[225].tokens == 50);
        let chars: Vec<char> = text.chars().collect();
        for c in &got {
            assert_eq!(c.text, chars[c.start..c.end].iter().collect::<String>());
            assert!(!c.text.starts_with(' ') && !c.text.ends_with(' '));
        }
        let e = chunks(&tokenizer(), TEXT, 63, 0, &mut || ()).unwrap_err();
        assert_eq!(e.message, "max_tokens must be between 1 and 62");
        let e = chunks(&tokenizer(), TEXT, 8, 8, &mut || ()).unwrap_err();
        assert_eq!(e.message, "overlap must be less than max_tokens");
    }
}
