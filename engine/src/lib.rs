//! The engine: model files, tokenisation, the models, the tasks, generation and training. Nothing here calls Postgres,
//! so all of it is tested with plain `cargo test -p pg_ai_engine`, on machines without PostgreSQL too.

pub mod allocator;
pub mod beam;
pub mod budget;
pub mod chat;
pub mod codec;
pub mod config;
pub mod device;
pub mod encoder;
pub mod error;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod gpt2_model;
pub mod int8;
pub mod kernels;
pub mod kv_cache;
pub mod llama;
pub mod llama_projected;
pub mod marian;
pub mod model;
pub mod pooling;
pub mod seq2seq;
pub mod t5;
pub mod tasks;
pub mod text;
pub mod threads;
pub mod timing;
pub mod train;
pub mod translator;
