//! Reranking: a cross-encoder reads a query and each document as one input and scores how well the document
//! answers it, as sentence-transformers' CrossEncoder scores them (the sigmoid of a single output).

use super::classify::{pair_logits, Classifier};
use crate::error::{AiError, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// The document's position among those given.
    pub index: usize,
    pub score: f32,
}

/// Each document's relevance to `query`, between 0 and 1, in the documents' order.
pub fn relevance(
    model: &dyn Classifier,
    query: &str,
    documents: &[&str],
    between: &mut dyn FnMut(),
) -> Result<Vec<f32>> {
    if model.labels().len() > 1 {
        return Err(AiError::wrong_task(format!(
            "a reranker has one output; this model classifies into {} labels",
            model.labels().len()
        ))
        .with_hint("Use a cross-encoder such as cross-encoder/ms-marco-MiniLM-L6-v2 or BAAI/bge-reranker-v2-m3."));
    }
    let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
    let logits = pair_logits(model, &pairs, between)?;
    Ok(logits.iter().map(|l| 1.0 / (1.0 + (-l[0]).exp())).collect())
}

/// The documents from most to least relevant (ties in the order given).
pub fn rerank(
    model: &dyn Classifier,
    query: &str,
    documents: &[&str],
    between: &mut dyn FnMut(),
) -> Result<Vec<Ranked>> {
    let scores = relevance(model, query, documents, between)?;
    Ok(super::ranked(&scores).into_iter().map(|index| Ranked { index, score: scores[index] }).collect())
}
