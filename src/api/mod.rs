//! The SQL functions: short adapters from SQL values to the engine and back.

mod answer;
mod chunk;
mod classify;
mod embed;
mod fill_mask;
mod generate;
mod jobs;
mod json_arg;
mod models;
mod ner;
mod rerank;
mod train;
mod translate;

use crate::error::check_interrupts as interrupts;

/// Functions that write the catalog fail cleanly (25006) in read-only transactions and on standbys, before
/// doing any work.
fn require_writable(function: &std::ffi::CStr) {
    // SAFETY: raises a Postgres ERROR or returns; the name is a static C string.
    unsafe { pgrx::pg_sys::PreventCommandIfReadOnly(function.as_ptr()) };
}

/// One answer per array element: the answers for the non-NULL elements back at their 1-based `positions`
/// (from `present`), NULL elsewhere.
fn in_place<T: Clone>(len: usize, positions: Vec<i32>, answers: impl IntoIterator<Item = T>) -> Vec<Option<T>> {
    let mut out = vec![None; len];
    for (ord, answer) in positions.into_iter().zip(answers) {
        out[ord as usize - 1] = Some(answer);
    }
    out
}

/// The non-NULL texts of an array with their 1-based positions; NULL elements are skipped.
fn present(inputs: &pgrx::Array<&str>) -> (Vec<i32>, Vec<String>) {
    let mut positions = Vec::new();
    let mut texts = Vec::new();
    for (i, text) in inputs.iter().enumerate() {
        if let Some(text) = text {
            positions.push(i as i32 + 1);
            texts.push(text.to_string());
        }
    }
    (positions, texts)
}

/// A training call's options as JSON, read after the call's memory budget and reserve are set: the options are
/// checked against the budget as they are read.
fn training_options(options: Option<json_arg::JsonArg>) -> serde_json::Value {
    crate::guc::apply_memory_budget();
    crate::out_of_memory::prepare();
    options.map_or(serde_json::json!({}), |j| j.value("options"))
}
