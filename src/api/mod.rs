//! The SQL functions: short adapters from SQL values to the engine and back.

mod classify;
mod embed;
mod fill_mask;
mod generate;
mod jobs;
mod json_arg;
pub(crate) mod launcher;
mod models;
mod ner;
mod train;
mod translate;

/// Checks for query cancel, statement_timeout and a failed allocation between batches of work.
fn interrupts() {
    pgrx::check_for_interrupts!();
    crate::out_of_memory::check();
}

/// Functions that write the catalog fail cleanly (25006) in read-only transactions and on standbys, before
/// doing any work.
fn require_writable(function: &std::ffi::CStr) {
    // SAFETY: raises a Postgres ERROR or returns; the name is a static C string.
    unsafe { pgrx::pg_sys::PreventCommandIfReadOnly(function.as_ptr()) };
}

/// A name for a new model: not empty, not taken (42710 with a hint otherwise).
fn require_new_name(name: &str) {
    use crate::engine::error::{AiError, ErrorKind};
    if name.trim().is_empty() {
        crate::error::raise(AiError::invalid("the model name is empty"));
    }
    if crate::store::catalog::exists(name) {
        crate::error::raise(
            AiError::new(ErrorKind::Duplicate, format!("model \"{name}\" already exists"))
                .with_hint(format!("Drop it first with ai_drop_model('{name}'), or choose another name.")),
        );
    }
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
