//! The engine: model files, tokenisation, the models, the tasks, generation and training. Nothing here calls Postgres,
//! so all of it is tested with plain `cargo test -p pg_ai_engine`, on machines without PostgreSQL too.

pub mod allocator;
pub mod budget;
pub mod device;
pub mod error;
pub mod files;
pub mod generate;
pub mod kernels;
pub mod models;
pub mod tasks;
pub mod text;
pub mod threads;
pub mod timing;
pub mod train;
