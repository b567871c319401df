//! ai_rerank and ai_rerank_score: documents scored against a query by a cross-encoder.

use super::{interrupts, present};
use crate::engine::error::AiError;
use crate::engine::models::Task;
use crate::engine::tasks::rerank::{relevance, rerank};
use crate::error::OrRaise;
use pgrx::prelude::*;

/// The documents from most to least relevant to `query`, each with its position in the array (`ord`) and its
/// score between 0 and 1, as sentence-transformers' CrossEncoder scores them; `top_k` keeps the best ones. NULL
/// documents are skipped; a NULL query, array or model gives no rows (not STRICT, as top_k may be NULL).
#[pg_extern(stable, parallel_safe)]
fn ai_rerank(
    query: Option<&str>,
    documents: Option<Array<&str>>,
    model: Option<&str>,
    top_k: default!(Option<i32>, "NULL"),
) -> TableIterator<'static, (name!(ord, i32), name!(document, String), name!(score, f32))> {
    let (Some(query), Some(documents), Some(model)) = (query, documents, model) else {
        return TableIterator::new(Vec::new());
    };
    let (positions, texts) = present(&documents);
    let loaded = crate::store::model_for(model, Task::TextClassification);
    let documents: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ranked = rerank(loaded.classifier().or_raise(), query, &documents, &mut interrupts).or_raise();
    let keep = match top_k {
        None => ranked.len(),
        Some(k) if k >= 1 => k as usize,
        Some(_) => crate::error::raise(AiError::invalid("top_k must be 1 or more, or NULL for every document")),
    };
    TableIterator::new(
        ranked.into_iter().take(keep).map(move |r| (positions[r.index], texts[r.index].clone(), r.score)),
    )
}

/// One document's relevance to `query` (0 to 1), for ORDER BY over a table's rows.
#[pg_extern(stable, parallel_safe)]
fn ai_rerank_score(query: &str, document: &str, model: &str) -> f32 {
    let loaded = crate::store::model_for(model, Task::TextClassification);
    relevance(loaded.classifier().or_raise(), query, &[document], &mut interrupts).or_raise()[0]
}
