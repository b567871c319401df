//! A causal language model ready to generate: GPT-2 weights, its tokenizer and its end token.

use super::encoder::var_builder;
use super::error::{AiError, Result};
use super::files::ModelFiles;
use super::generate::{CausalLm, Decoder, TextCodec};
use super::gpt2::{Gpt2, Gpt2Config, KvCache};
use candle_core::Tensor;
use serde_json::Value;
use tokenizers::Tokenizer;

pub struct CausalModel {
    pub architecture: String,
    pub config: Value,
    model: Gpt2,
    tokenizer: Tokenizer,
    eos_id: Option<u32>,
    chat_template: Option<String>,
    pub parameter_bytes: usize,
}

impl CausalModel {
    pub fn load(files: &ModelFiles, config: Value) -> Result<Self> {
        let gpt2_config = Gpt2Config::from_json(&config)?;
        let path = files.dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| AiError::corrupt(format!("cannot read {}: {e}", path.display())))?;
        // Prompts are checked against the context size, never silently cut.
        tokenizer.with_truncation(None).map_err(|e| AiError::corrupt(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let eos_id = gpt2_config.eos_token_id;
        let chat_template = files
            .read_json("tokenizer_config.json")?
            .and_then(|c| c.get("chat_template")?.as_str().map(str::to_string));
        let model = Gpt2::load(&var_builder(&files.weights)?, gpt2_config)?;
        let parameter_bytes = model.parameter_count() * 4;
        let architecture =
            config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("GPT2LMHeadModel");
        Ok(CausalModel {
            architecture: architecture.to_string(),
            config,
            model,
            tokenizer,
            eos_id,
            chat_template,
            parameter_bytes,
        })
    }

    /// The next-token logits after `prompt`, for checks against transformers.
    pub fn next_token_logits(&self, prompt: &str) -> Result<Vec<f32>> {
        let ids = self.encode_prompt(prompt)?;
        Ok(self.model.forward(&ids, &mut KvCache::default())?.to_vec1()?)
    }
}

impl CausalLm for CausalModel {
    /// A generation session: its own KV cache over the shared weights.
    fn session(&self) -> Box<dyn Decoder + '_> {
        Box::new(Session { model: &self.model, cache: KvCache::default() })
    }

    fn codec(&self) -> &dyn TextCodec {
        self
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

struct Session<'a> {
    model: &'a Gpt2,
    cache: KvCache,
}

impl Decoder for Session<'_> {
    fn reset(&mut self) {
        self.cache = KvCache::default();
    }

    fn context_size(&self) -> usize {
        self.model.config.n_positions
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        self.model.forward(ids, &mut self.cache)
    }
}

impl TextCodec for CausalModel {
    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| AiError::invalid(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| AiError::internal(format!("cannot decode tokens: {e}")))
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }
}
