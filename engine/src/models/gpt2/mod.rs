//! A GPT-2 ready to generate: its weights, tokenizer, end token and chat template.

pub mod network;
pub mod train;

use crate::error::Result;
use crate::files::ModelFiles;
use crate::generate::kv_cache::Session;
use crate::generate::{CausalLm, Decoder, TextCodec};
use crate::models::bert::var_builder;
use crate::models::gpt2::network::{Gpt2, Gpt2Config};
use crate::text::decoder::DecoderTokenizer;
use candle_core::Device;
use serde_json::Value;

pub struct Gpt2Model {
    pub architecture: String,
    pub config: Value,
    model: Gpt2,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
    pub parameters: usize,
    /// Bytes of the weights in memory: 4 per parameter in f32; in int8 about 1.06 for the linear weights and the
    /// head's copy of the token embeddings, 2 for the embeddings themselves (kept in f16 for lookup).
    pub weight_bytes: usize,
}

impl Gpt2Model {
    /// Loads the model, its weights in 8 bits where `int8` (see engine::kernels::int8).
    pub fn load(files: &ModelFiles, config: Value, int8: bool) -> Result<Self> {
        let gpt2_config = Gpt2Config::from_json(&config)?;
        let codec = DecoderTokenizer::from_dir(files, gpt2_config.eos_token_id.into_iter().collect())?;
        let chat_template = files
            .read_json("tokenizer_config.json")?
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_string));
        let model = Gpt2::load(&var_builder(&files.weights, &Device::Cpu)?, gpt2_config, int8)?;
        let (parameters, weight_bytes) = (model.parameter_count(), model.weight_bytes());
        let architecture =
            config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("GPT2LMHeadModel");
        Ok(Gpt2Model {
            architecture: architecture.to_string(),
            config,
            model,
            codec,
            chat_template,
            parameters,
            weight_bytes,
        })
    }
}

impl CausalLm for Gpt2Model {
    /// A generation session: its own KV cache over the shared weights.
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        Ok(Box::new(Session::new(&self.model)))
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
