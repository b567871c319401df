//! ai_chunk: a long text cut into pieces an encoder reads whole, for embedding each.

use crate::engine::error::AiError;
use crate::engine::models::Task;
use crate::engine::tasks::chunk::chunks;
use crate::error::{raise, OrRaise};
use pgrx::prelude::*;

/// The chunks of `input`, in order: each at most `max_tokens` of the model's tokens (by default as many as it
/// reads at once), cut between words, each after the first repeating up to `overlap` tokens of the one before;
/// `start_pos` and `end_pos` count characters from 0, end exclusive. NULL input or model: no rows (not STRICT,
/// as max_tokens may be NULL).
#[pg_extern(stable, parallel_safe)]
fn ai_chunk(
    input: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, "NULL"),
    overlap: default!(i32, 0),
) -> TableIterator<
    'static,
    (name!(ord, i32), name!(chunk, String), name!(start_pos, i32), name!(end_pos, i32), name!(tokens, i32)),
> {
    let (Some(input), Some(model)) = (input, model) else { return TableIterator::new(Vec::new()) };
    let loaded = crate::store::model_for(model, Task::FeatureExtraction);
    let tokenizer = &loaded.encoder().or_raise().tokenizer;
    let max_tokens = match max_tokens {
        None => tokenizer.max_tokens.saturating_sub(tokenizer.special_tokens()),
        // Below 1: the engine's range check names the model's limit.
        Some(k) => usize::try_from(k).unwrap_or(0),
    };
    let Ok(overlap) = usize::try_from(overlap) else { raise(AiError::invalid("overlap must be 0 or more")) };
    let found = chunks(tokenizer, input, max_tokens, overlap, &mut crate::error::check_interrupts).or_raise();
    TableIterator::new(
        found
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as i32 + 1, c.text, c.start as i32, c.end as i32, c.tokens as i32)),
    )
}
