//! The engine: model files, tokenisation, the models, the tasks, generation and training. Nothing here calls Postgres,
//! so all of it is tested with plain `cargo test`.

pub mod allocator;
#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod beam;
pub mod chat;
pub mod codec;
pub mod config;
pub mod device;
pub mod encoder;
pub mod error;
pub mod fast_math;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod gpt2_model;
pub mod int8;
pub mod kv_cache;
pub mod llama;
pub mod llama_projected;
pub mod marian;
pub mod matvec;
pub mod model;
pub mod packed;
pub mod pooling;
pub mod seq2seq;
pub mod simd;
pub mod t5;
pub mod tasks;
pub mod text;
pub mod threads;
pub mod timing;
pub mod train;
pub mod translator;
pub mod vnni;
