//! The engine: model files, tokenisation, the encoder and the tasks. Nothing here calls Postgres,
//! so all of it is tested with plain `cargo test`.

pub mod causal;
pub mod chat;
pub mod config;
pub mod encoder;
pub mod error;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod model;
pub mod pooling;
pub mod tasks;
pub mod text;
pub mod threads;
