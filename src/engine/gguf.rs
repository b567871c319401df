//! Quantized Llama-family models from a GGUF file (SmolLM2, Llama, Qwen-style llama GGUFs),
//! with the tokenizer and chat template the file itself carries.

use super::codec::DecoderTokenizer;
use super::error::{AiError, Result};
use super::generate::{CausalLm, Decoder, TextCodec};
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde_json::{Map, Value};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct GgufModel {
    pub architecture: String,
    /// The file's scalar metadata (general.*, llama.*), for ai.models.config.
    pub metadata: Value,
    pub file_bytes: usize,
    pub parameters: usize,
    weights: ModelWeights,
    codec: DecoderTokenizer,
    context: usize,
    chat_template: Option<String>,
}

fn scalar(v: &gguf_file::Value) -> Option<Value> {
    use gguf_file::Value as G;
    Some(match v {
        G::U8(x) => Value::from(*x),
        G::I8(x) => Value::from(*x),
        G::U16(x) => Value::from(*x),
        G::I16(x) => Value::from(*x),
        G::U32(x) => Value::from(*x),
        G::I32(x) => Value::from(*x),
        G::U64(x) => Value::from(*x),
        G::I64(x) => Value::from(*x),
        G::F32(x) => Value::from(*x),
        G::F64(x) => Value::from(*x),
        G::Bool(x) => Value::from(*x),
        G::String(x) => Value::from(x.as_str()),
        G::Array(_) => return None,
    })
}

impl GgufModel {
    pub fn load(path: &Path) -> Result<Self> {
        let corrupt = |e: candle_core::Error| {
            AiError::corrupt(format!("cannot read {}: {e}", path.display()))
                .with_hint("pg_ai reads GGUF files of llama-architecture models.")
        };
        let mut file = std::fs::File::open(path)
            .map_err(|e| AiError::missing_file(format!("cannot open {}: {e}", path.display())))?;
        let file_bytes = file.metadata().map_or(0, |m| m.len() as usize);
        let content = gguf_file::Content::read(&mut file).map_err(corrupt)?;
        let parameters = content.tensor_infos.values().map(|t| t.shape.elem_count()).sum();
        let architecture =
            content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if architecture != "llama" {
            return Err(AiError::invalid(format!("GGUF architecture \"{architecture}\" is not supported"))
                .with_hint("pg_ai reads GGUF files of llama-architecture models (Llama, SmolLM2 and the like)."));
        }
        let mut metadata = Map::new();
        for (key, value) in &content.metadata {
            if let Some(v) = scalar(value).filter(|_| !key.starts_with("tokenizer.")) {
                metadata.insert(key.clone(), v);
            }
        }
        let eos_id = content.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok());
        let codec =
            DecoderTokenizer::new(Tokenizer::from_gguf(&content).map_err(corrupt)?, eos_id.into_iter().collect())?;
        let chat_template = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| (n as usize).min(MAX_SEQ_LEN));
        let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).map_err(corrupt)?;
        Ok(GgufModel {
            architecture: "llama (gguf)".to_string(),
            metadata: Value::Object(metadata),
            file_bytes,
            parameters,
            weights,
            codec,
            context,
            chat_template,
        })
    }
}

/// A generation session: a copy of the weights' handles (the tensors are shared) with its own KV cache.
struct Session {
    weights: ModelWeights,
    position: usize,
    context: usize,
}

impl Decoder for Session {
    fn reset(&mut self) -> Result<()> {
        self.weights.clear_kv_cache();
        self.position = 0;
        Ok(())
    }

    fn context_size(&self) -> usize {
        self.context
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = self.weights.forward(&input, self.position)?;
        self.position += ids.len();
        Ok(logits.squeeze(0)?)
    }
}

impl CausalLm for GgufModel {
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        Ok(Box::new(Session { weights: self.weights.clone(), position: 0, context: self.context }))
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
