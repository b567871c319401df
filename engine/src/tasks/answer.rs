//! Extractive question answering, as transformers' question-answering pipeline answers (its defaults: answers
//! aligned to whole words, no empty answer): the context is read in windows after the question
//! (`TextTokenizer::encode_windows`); in each window the start and end logits of the context's tokens become
//! probabilities, every span of at most `max_answer_len` tokens scores start x end, and the best spans of all
//! windows are the answers, those with the same text (in any case) adding up their scores.

use super::in_batches;
use crate::error::{AiError, Result};
use crate::models::Model;
use std::collections::hash_map::{Entry, HashMap};
use tokenizers::Encoding;

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer's text, as it stands in the context.
    pub text: String,
    pub score: f64,
    /// Character offsets into the context, end exclusive (Python's convention).
    pub start: usize,
    pub end: usize,
}

/// The `top_k` best answers (fewer where the context has fewer spans) to each (question, context) pair, best first.
pub fn answer(
    model: &Model,
    pairs: &[(&str, &str)],
    top_k: usize,
    max_answer_len: usize,
    between: &mut dyn FnMut(),
) -> Result<Vec<Vec<Answer>>> {
    if top_k == 0 || max_answer_len == 0 {
        return Err(AiError::invalid("top_k and max_answer_len must be at least 1"));
    }
    let head = model.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no question-answering head"))?;
    let tokenizer = &model.tokenizer;
    let mut encodings = Vec::new();
    let mut owner = Vec::new();
    for (i, (question, context)) in pairs.iter().enumerate() {
        between();
        for window in tokenizer.encode_windows(question, context)? {
            encodings.push(window);
            owner.push(i);
        }
    }
    let logits = in_batches(tokenizer, &encodings, between, |rows, batch| {
        let spans = head.span_logits(&model.encoder.forward(batch)?)?.to_vec3::<f32>()?;
        Ok(rows.iter().zip(spans).map(|(&i, row)| row[..encodings[i].len()].to_vec()).collect())
    })?;
    let mut answers: Vec<Vec<Answer>> = vec![Vec::new(); pairs.len()];
    // Per pair: its context's characters, and where each answer text (in lower case) stands among its answers.
    let mut context: Vec<char> = Vec::new();
    let mut found: HashMap<String, usize> = HashMap::new();
    for (w, ((window, logits), &i)) in encodings.iter().zip(&logits).zip(&owner).enumerate() {
        if w == 0 || owner[w - 1] != i {
            context = pairs[i].1.chars().collect();
            found.clear();
        }
        let candidates = top_k.saturating_mul(2).saturating_add(10);
        for (s, e, score) in best_spans(window, logits, tokenizer.cls_id, candidates, max_answer_len) {
            let (start, end) = word_bounds(window, s, e);
            let (start, end) = (start.min(context.len()), end.min(context.len()));
            let text: String = context[start..end.max(start)].iter().collect();
            match found.entry(text.to_lowercase()) {
                Entry::Occupied(at) => answers[i][*at.get()].score += score as f64,
                Entry::Vacant(slot) => {
                    slot.insert(answers[i].len());
                    answers[i].push(Answer { text, score: score as f64, start, end });
                }
            }
        }
    }
    for found in &mut answers {
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(top_k);
    }
    Ok(answers)
}

/// The `candidates` best (start, end, score) spans of one window, best first: the pipeline's select_starts_ends
/// and decode_spans. Only the context's tokens may start or end an answer; their logits become probabilities
/// over the window (the others weigh nothing), and a span scores its start's times its end's.
fn best_spans(
    window: &Encoding,
    logits: &[Vec<f32>],
    cls: Option<u32>,
    candidates: usize,
    max_answer_len: usize,
) -> Vec<(usize, usize, f32)> {
    let n = logits.len();
    let sequence = window.get_sequence_ids();
    // The pipeline lets the [CLS] token in (its "no answer"), then scores it zero.
    let allowed: Vec<bool> = (0..n).map(|t| sequence[t] == Some(1) || Some(window.get_ids()[t]) == cls).collect();
    let probabilities = |column: usize| -> Vec<f32> {
        let masked: Vec<f32> = (0..n).map(|t| if allowed[t] { logits[t][column] } else { -10000.0 }).collect();
        let max = masked.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = masked.iter().map(|x| (x - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut p: Vec<f32> = exp.iter().map(|x| x / sum).collect();
        if let Some(first) = p.first_mut() {
            *first = 0.0;
        }
        p
    };
    let (start, end) = (probabilities(0), probabilities(1));
    let mut spans = Vec::new();
    for s in (0..n).filter(|&s| allowed[s]) {
        for e in (s..n.min(s.saturating_add(max_answer_len))).filter(|&e| allowed[e]) {
            let score = start[s] * end[e];
            // Spans that score nothing are what the pipeline would fill a short list with (end before start,
            // [CLS]); they answer nothing.
            if score > 0.0 {
                spans.push((s, e, score));
            }
        }
    }
    spans.sort_by(|a, b| b.2.total_cmp(&a.2));
    spans.truncate(candidates);
    spans
}

/// The character span of the context's words from token `s`'s to token `e`'s (the pipeline's align_to_words),
/// or of the tokens themselves where a token has no word.
fn word_bounds(window: &Encoding, s: usize, e: usize) -> (usize, usize) {
    let word = |t: usize| window.token_to_word(t).and_then(|(_, w)| window.word_to_chars(w, 1));
    match (word(s), word(e)) {
        (Some((start, _)), Some((_, end))) => (start, end),
        _ => (window.get_offsets()[s].0, window.get_offsets()[e].1),
    }
}
