//! Tests that run inside PostgreSQL (`cargo pgrx test`). The SQL surface is also covered, with
//! exact SQLSTATEs, by tests/sql run through psql.

mod encoder_tasks;
mod out_of_memory;
mod registry;

/// A fixture model directory, as the server sees it.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/models/{name}", env!("CARGO_MANIFEST_DIR"))
}
