//! Tests that run inside PostgreSQL (`cargo pgrx test`), against the fixtures in tests/fixtures.

mod registry;
