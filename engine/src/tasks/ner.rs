//! Named-entity recognition, grouped as transformers' token-classification pipeline does with
//! aggregation_strategy="simple": each token takes its best label, then neighbours with the same
//! entity type merge unless a "B-" starts a new one; "O" is dropped.

use super::classify::label_name;
use super::{encode_all, in_batches};
use crate::error::{AiError, Result};
use crate::models::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// The entity's tokens joined back into text.
    pub text: String,
    /// The entity type, without its B-/I- prefix.
    pub label: String,
    /// Character offsets into the input, end exclusive (Python's convention).
    pub start: usize,
    pub end: usize,
    /// Mean of the tokens' scores.
    pub score: f32,
}

struct Token {
    word: String,
    label: String,
    score: f32,
    start: usize,
    end: usize,
}

pub fn ner(model: &Model, texts: &[&str], between: &mut dyn FnMut()) -> Result<Vec<Vec<Entity>>> {
    let head = model.head.as_ref().ok_or_else(|| AiError::wrong_task("the model has no token-classification head"))?;
    let encodings = encode_all(&model.tokenizer, texts, true, between)?;
    in_batches(&model.tokenizer, &encodings, between, |rows, batch| {
        let logits = head.token_logits(&model.encoder.forward(batch)?)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)?.to_vec3::<f32>()?;
        rows.iter()
            .zip(probabilities)
            .map(|(&i, scores)| {
                let encoding = &encodings[i];
                let chars: Vec<char> = texts[i].chars().collect();
                let mut tokens = Vec::new();
                for (t, row) in scores.iter().enumerate().take(encoding.len()) {
                    if encoding.get_special_tokens_mask()[t] == 1 {
                        continue;
                    }
                    let (start, end) = encoding.get_offsets()[t];
                    // numpy's argmax: the first of equal maxima.
                    let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                    let word = if Some(encoding.get_ids()[t]) == model.tokenizer.unk_id {
                        chars[start.min(chars.len())..end.min(chars.len())].iter().collect()
                    } else {
                        encoding.get_tokens()[t].clone()
                    };
                    tokens.push(Token {
                        word,
                        label: label_name(&model.config.labels, best),
                        score: row[best],
                        start,
                        end,
                    });
                }
                group(model, tokens)
            })
            .collect()
    })
}

/// Splits "B-PER" into ("B", "PER"); a label without a prefix counts as "I" of itself.
fn tag(label: &str) -> (&str, &str) {
    match label.split_once('-') {
        Some((bi @ ("B" | "I"), tag)) => (bi, tag),
        _ => ("I", label),
    }
}

fn group(model: &Model, tokens: Vec<Token>) -> Result<Vec<Entity>> {
    let mut groups: Vec<Vec<Token>> = Vec::new();
    for token in tokens {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            let (bi, t) = tag(&token.label);
            t == tag(&last.label).1 && bi != "B"
        });
        match groups.last_mut() {
            Some(g) if joins => g.push(token),
            _ => groups.push(vec![token]),
        }
    }
    let mut entities = Vec::new();
    for g in groups {
        let label = g[0].label.split_once('-').map_or(g[0].label.as_str(), |(_, t)| t).to_string();
        if label == "O" {
            continue;
        }
        let score = (g.iter().map(|t| t.score as f64).sum::<f64>() / g.len() as f64) as f32;
        let (start, end) = (g[0].start, g[g.len() - 1].end);
        let text = model.tokenizer.tokens_to_string(g.into_iter().map(|t| t.word).collect())?;
        entities.push(Entity { text, label, start, end, score });
    }
    Ok(entities)
}
