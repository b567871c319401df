//! Llama-family decoders from safetensors (Llama, SmolLM and the like), on candle-transformers'
//! Llama with its KV cache.

use super::codec::DecoderTokenizer;
use super::encoder::var_builder;
use super::error::{AiError, Result};
use super::files::ModelFiles;
use super::generate::{CausalLm, Decoder, TextCodec};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig, LlamaEosToks};
use serde_json::Value;

pub struct LlamaModel {
    pub architecture: String,
    pub config: Value,
    model: Llama,
    llama_config: Config,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
    pub parameter_bytes: usize,
}

impl LlamaModel {
    pub fn load(files: &ModelFiles, config: Value) -> Result<Self> {
        let parsed: LlamaConfig = serde_json::from_value(top_level_rope(config.clone())?)
            .map_err(|e| AiError::corrupt(format!("config.json is not a Llama configuration: {e}")))?;
        let llama_config = parsed.clone().into_config(false);
        let eos_ids = match parsed.eos_token_id {
            Some(LlamaEosToks::Single(id)) => vec![id],
            Some(LlamaEosToks::Multiple(ids)) => ids,
            None => Vec::new(),
        };
        let codec = DecoderTokenizer::from_dir(files, eos_ids)?;
        let chat_template = files
            .read_json("tokenizer_config.json")?
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_string));
        let model = Llama::load(var_builder(&files.weights)?, &llama_config)
            .map_err(|e| AiError::corrupt(format!("the weights do not match config.json: {e}")))?;
        let c = &llama_config;
        let kv = c.hidden_size / c.num_attention_heads * c.num_key_value_heads;
        let per_layer =
            c.hidden_size * (2 * c.hidden_size + 2 * kv) + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size;
        let head = if c.tie_word_embeddings { 0 } else { c.vocab_size * c.hidden_size };
        let parameters = c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer + c.hidden_size + head;
        let architecture =
            config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("LlamaForCausalLM");
        Ok(LlamaModel {
            architecture: architecture.to_string(),
            config,
            model,
            llama_config,
            codec,
            chat_template,
            parameter_bytes: parameters * 4,
        })
    }
}

/// transformers 5 writes the rotary settings under `rope_parameters`; candle reads `rope_theta` and
/// `rope_scaling` at the top level and would otherwise fall back to theta 10000 without a word.
fn top_level_rope(mut config: Value) -> Result<Value> {
    let Some(rope) = config.get("rope_parameters").cloned() else { return Ok(config) };
    if config.get("rope_theta").is_none() {
        if let Some(theta) = rope.get("rope_theta") {
            config["rope_theta"] = theta.clone();
        }
    }
    match rope.get("rope_type").and_then(Value::as_str) {
        None | Some("default") => {}
        Some("llama3") if config.get("rope_scaling").is_none() => config["rope_scaling"] = rope,
        Some("llama3") => {}
        Some(other) => {
            return Err(AiError::invalid(format!("rotary embeddings of type \"{other}\" are not supported"))
                .with_hint("pg_ai runs Llama models with default or llama3 rotary embeddings."))
        }
    }
    Ok(config)
}

struct Session<'a> {
    model: &'a LlamaModel,
    cache: Cache,
    position: usize,
}

impl Session<'_> {
    fn fresh_cache(model: &LlamaModel) -> Result<Cache> {
        Ok(Cache::new(true, DType::F32, &model.llama_config, &Device::Cpu)?)
    }
}

impl Decoder for Session<'_> {
    fn reset(&mut self) -> Result<()> {
        self.cache = Session::fresh_cache(self.model)?;
        self.position = 0;
        Ok(())
    }

    fn context_size(&self) -> usize {
        self.model.llama_config.max_position_embeddings
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = self.model.model.forward(&input, self.position, &mut self.cache)?;
        self.position += ids.len();
        Ok(logits.squeeze(0)?)
    }
}

impl CausalLm for LlamaModel {
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        Ok(Box::new(Session { model: self, cache: Session::fresh_cache(self)?, position: 0 }))
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
