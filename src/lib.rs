//! pg_ai: transformer models inside PostgreSQL.
//!
//! `engine` is the pg_ai_engine crate: the models, with no Postgres in them; `api` holds the SQL functions, short
//! adapters over the engine; `store` is the model registry and the per-backend model cache; `training` reads rows
//! for training and runs background jobs; `memory` lets the kernel share identical weight pages between backends;
//! `out_of_memory` turns a failed allocation into an ERROR.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod api;
mod derivations;
pub use pg_ai_engine as engine;
mod error;
mod guc;
mod memory;
mod out_of_memory;
mod store;
mod training;

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!("../sql/citus.sql", name = "citus", requires = ["catalog"]);
extension_sql_file!("../sql/derivations.sql", name = "derivations", requires = ["catalog"]);
extension_sql_file!("../sql/derivation_chunks.sql", name = "derivation_chunks", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    // SAFETY: a flag the postmaster sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        training::launcher::register_launcher();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
