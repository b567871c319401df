//! The answers pg_ai gives, each as transformers' pipeline of the same name computes it.

pub mod answer;
pub mod chunk;
pub mod classify;
pub mod embed;
pub mod fill_mask;
pub mod ner;
pub mod rerank;
pub mod zero_shot;

use super::error::Result;
use crate::models::bert::Batch;
use crate::text::TextTokenizer;
use tokenizers::Encoding;

/// Rows per forward pass for the array forms.
pub const BATCH_SIZE: usize = 32;

use crate::text::ENCODING_BYTES_PER_CHAR;

/// Encodes every text (`whole`: refusing those longer than the model reads, else truncating them), checking the
/// memory the encodings will hold against the call's budget first and running `between` every few texts.
pub fn encode_all(
    tokenizer: &TextTokenizer,
    texts: &[&str],
    whole: bool,
    between: &mut dyn FnMut(),
) -> Result<Vec<Encoding>> {
    let read = texts.iter().map(|t| tokenizer.read_length(t)).fold(0, usize::saturating_add);
    encode_each(texts.len(), read, between, |i| {
        if whole {
            tokenizer.encode_whole(texts[i])
        } else {
            tokenizer.encode(texts[i])
        }
    })
}

/// Encodes every pair of texts as one input (`TextTokenizer::encode_pair`), as `encode_all` encodes texts.
pub fn encode_pairs(
    tokenizer: &TextTokenizer,
    pairs: &[(&str, &str)],
    between: &mut dyn FnMut(),
) -> Result<Vec<Encoding>> {
    let read = pairs.iter().map(|(a, b)| tokenizer.read_length(a).saturating_add(tokenizer.read_length(b)));
    encode_each(pairs.len(), read.fold(0, usize::saturating_add), between, |i| {
        tokenizer.encode_pair(pairs[i].0, pairs[i].1)
    })
}

/// `count` encodings of `read` bytes of input in all, made by `encode`, after checking their memory against the
/// budget; `between` runs every 256.
fn encode_each(
    count: usize,
    read: usize,
    between: &mut dyn FnMut(),
    mut encode: impl FnMut(usize) -> Result<Encoding>,
) -> Result<Vec<Encoding>> {
    crate::budget::check(read.saturating_mul(ENCODING_BYTES_PER_CHAR), || {
        format!("tokenising {count} texts of {read} bytes")
    })?;
    let mut encodings = Vec::with_capacity(count);
    for i in 0..count {
        if i % 256 == 255 {
            between();
        }
        encodings.push(encode(i)?);
    }
    Ok(encodings)
}

/// Runs `run` over the inputs in batches of similar length (less padding) and returns the
/// results in input order. `run` gets the batch's input indices and its padded tensors.
/// `between` runs before each batch: the SQL layer checks for interrupts there.
pub fn in_batches<T>(
    tokenizer: &TextTokenizer,
    encodings: &[Encoding],
    between: &mut dyn FnMut(),
    mut run: impl FnMut(&[usize], &Batch) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut results: Vec<Option<T>> = (0..encodings.len()).map(|_| None).collect();
    for rows in order.chunks(BATCH_SIZE) {
        between();
        let batch: Vec<&Encoding> = rows.iter().map(|&i| &encodings[i]).collect();
        for (&i, result) in rows.iter().zip(run(rows, &tokenizer.batch(&batch)?)?) {
            results[i] = Some(result);
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every input has a result")).collect())
}

/// Indices of `scores` from best to worst; ties keep the lower index first, like a stable sort.
pub fn ranked(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}
