//! Zero-shot classification: an NLI model asked, for each candidate label, whether the text entails a hypothesis
//! made from it ("This example is sport."), as transformers' zero-shot-classification pipeline asks.

use super::classify::{pair_logits, Classifier, Scored};
use super::ranked;
use crate::error::{AiError, Result};

/// transformers' default hypothesis.
pub const DEFAULT_TEMPLATE: &str = "This example is {}.";

pub struct ZeroShot<'a> {
    pub labels: &'a [&'a str],
    /// Holds `{}` once, where each label goes.
    pub hypothesis_template: &'a str,
    /// Each label scored on its own (entailment against contradiction) rather than the labels sharing one softmax;
    /// always so for a single label, as in transformers.
    pub multi_label: bool,
}

/// The labels of each text with their scores, best first.
pub fn zero_shot(
    model: &dyn Classifier,
    texts: &[&str],
    ask: &ZeroShot,
    between: &mut dyn FnMut(),
) -> Result<Vec<Vec<Scored>>> {
    if ask.labels.is_empty() {
        return Err(AiError::invalid("zero-shot classification needs at least one candidate label"));
    }
    if ask.hypothesis_template.matches("{}").count() != 1 {
        return Err(AiError::invalid(format!(
            "the hypothesis template \"{}\" must hold {{}} once, where each label goes",
            ask.hypothesis_template
        ))
        .with_hint(format!("The default is \"{DEFAULT_TEMPLATE}\".")));
    }
    let entailment = entailment_id(model)?;
    // transformers takes the first label as contradiction, or the last where entailment is first.
    let n_classes = model.labels().len();
    let contradiction = if entailment == 0 { n_classes - 1 } else { 0 };
    let hypotheses: Vec<String> = ask.labels.iter().map(|l| ask.hypothesis_template.replacen("{}", l, 1)).collect();
    let pairs: Vec<(&str, &str)> =
        texts.iter().flat_map(|t| hypotheses.iter().map(move |h| (*t, h.as_str()))).collect();
    let logits = pair_logits(model, &pairs, between)?;
    let multi_label = ask.multi_label || ask.labels.len() == 1;
    Ok(logits
        .chunks(ask.labels.len())
        .map(|per_label| {
            let scores: Vec<f32> = if multi_label {
                per_label.iter().map(|l| softmax(&[l[contradiction], l[entailment]])[1]).collect()
            } else {
                softmax(&per_label.iter().map(|l| l[entailment]).collect::<Vec<_>>())
            };
            ranked(&scores).into_iter().map(|i| Scored { label: ask.labels[i].to_string(), score: scores[i] }).collect()
        })
        .collect())
}

/// The class whose label starts with "entail" (any case), as transformers finds it.
fn entailment_id(model: &dyn Classifier) -> Result<usize> {
    let labels = model.labels();
    labels.iter().position(|l| l.to_lowercase().starts_with("entail")).filter(|_| labels.len() >= 2).ok_or_else(|| {
        AiError::wrong_task("zero-shot classification needs an NLI model: its labels name no entailment class")
            .with_hint(
                "Use a model trained on MNLI or XNLI, whose id2label holds entailment, neutral and contradiction.",
            )
    })
}

/// Softmax, computed in f64 from the largest logit down (the pipeline exponentiates the float32 logits as they are).
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}
