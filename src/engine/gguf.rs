//! Quantized Llama-family models from a GGUF file (SmolLM2, Llama, Qwen-style llama GGUFs),
//! with the tokenizer and chat template the file itself carries.

use super::codec::DecoderTokenizer;
use super::error::{AiError, Result};
use super::generate::{CausalLm, Decoder, TextCodec};
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde_json::{Map, Value};
use std::io::{Cursor, Read, Seek};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct GgufModel {
    pub architecture: String,
    /// The file's scalar metadata (general.*, llama.*), for ai.models.config.
    pub metadata: Value,
    /// Bytes of the weights in memory: the file's, the token embeddings also in f32, more where re-quantised.
    pub weight_bytes: usize,
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

/// Whether candle multiplies weights of this type with a plain scalar loop: it has SIMD dot products for Q4_0,
/// Q8_0 and the k-quants, but not for Q4_1, Q5_1 and Q8_1.
fn scalar_only(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_1 | GgmlDType::Q8_1)
}

static REQUANTIZE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether `GgufModel::load` rewrites Q4_1, Q5_1 and Q8_1 weights as Q8_0 (the pg_ai.gguf_requantize setting).
pub fn requantize_slow_weights(on: bool) {
    REQUANTIZE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// How a GGUF file's weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As the file stores them.
    AsStored,
    /// Q4_1, Q5_1 and Q8_1 weights rewritten as Q8_0, the rest as stored: the default (see `rewrite`).
    Fast,
    /// Every weight de-quantised to f32: the reference that measures what quantisation changes.
    F32,
}

/// Bytes the weights take once candle's quantized Llama holds them: each as stored, plus the token embeddings
/// de-quantised to f32 for lookup; the stored embeddings stay only where they are also the output head.
pub fn bytes_in_memory(content: &gguf_file::Content) -> usize {
    let stored = |info: &gguf_file::TensorInfo| {
        info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()
    };
    let all: usize = content.tensor_infos.values().map(stored).sum();
    match content.tensor_infos.get("token_embd.weight") {
        Some(embed) if content.tensor_infos.contains_key("output.weight") => {
            all - stored(embed) + embed.shape.elem_count() * 4
        }
        Some(embed) => all + embed.shape.elem_count() * 4,
        None => all,
    }
}

/// Rewrites the weights `weights` asks for, in memory, as a GGUF data section that `content` then describes; None
/// when nothing changes.
///
/// Why `Fast`: candle multiplies Q4_1, Q5_1 and Q8_1 weights with a scalar loop, and SmolLM2's Q4_1 prompt went
/// through about ten times slower than PyTorch; Q8_0 has SIMD dot products. Q8_0 holds each block of 32 weights to
/// within max|w|/254, finer than the 4- and 5-bit steps it starts from, in 34 bytes a block where Q4_1 takes 20.
fn rewrite<R: Read + Seek>(
    content: &mut gguf_file::Content,
    file: &mut R,
    weights: Weights,
) -> candle_core::Result<Option<Cursor<Vec<u8>>>> {
    let target = |dtype: GgmlDType| match weights {
        Weights::Fast if scalar_only(dtype) => Some(GgmlDType::Q8_0),
        Weights::F32 if dtype != GgmlDType::F32 => Some(GgmlDType::F32),
        _ => None,
    };
    if !content.tensor_infos.values().any(|info| target(info.ggml_dtype).is_some()) {
        return Ok(None);
    }
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut data = Vec::new();
    for name in names {
        let mut tensor = content.tensor(file, &name, &Device::Cpu)?;
        if let Some(to) = target(tensor.dtype()) {
            tensor = QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, to)?;
        }
        data.resize(data.len().next_multiple_of(gguf_file::DEFAULT_ALIGNMENT as usize), 0);
        if let Some(info) = content.tensor_infos.get_mut(&name) {
            (info.offset, info.ggml_dtype) = (data.len() as u64, tensor.dtype());
        }
        data.extend_from_slice(&tensor.data()?);
    }
    content.tensor_data_offset = 0;
    Ok(Some(Cursor::new(data)))
}

impl GgufModel {
    /// Loads the file, with Q4_1, Q5_1 and Q8_1 weights re-quantised to Q8_0 (see `rewrite`) unless
    /// `requantize_slow_weights(false)` was called.
    pub fn load(path: &Path) -> Result<Self> {
        let fast = REQUANTIZE.load(std::sync::atomic::Ordering::Relaxed);
        Self::load_as(path, if fast { Weights::Fast } else { Weights::AsStored })
    }

    pub fn load_as(path: &Path, weights: Weights) -> Result<Self> {
        let corrupt = |e: candle_core::Error| {
            AiError::corrupt(format!("cannot read {}: {e}", path.display()))
                .with_hint("pg_ai reads GGUF files of llama-architecture models.")
        };
        let mut file = std::fs::File::open(path)
            .map_err(|e| AiError::missing_file(format!("cannot open {}: {e}", path.display())))?;
        let mut content = gguf_file::Content::read(&mut file).map_err(corrupt)?;
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
        let rewritten = rewrite(&mut content, &mut file, weights).map_err(corrupt)?;
        let weight_bytes = bytes_in_memory(&content);
        let weights = match rewritten {
            Some(mut data) => ModelWeights::from_gguf(content, &mut data, &Device::Cpu),
            None => ModelWeights::from_gguf(content, &mut file, &Device::Cpu),
        }
        .map_err(corrupt)?;
        Ok(GgufModel {
            architecture: "llama (gguf)".to_string(),
            metadata: Value::Object(metadata),
            weight_bytes,
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

/// A generation session on quantized Llama weights, for GGUF files and Llama models held in int8.
pub fn session<'a>(weights: &ModelWeights, context: usize) -> Box<dyn Decoder + 'a> {
    Box::new(Session { weights: weights.clone(), position: 0, context })
}

impl CausalLm for GgufModel {
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        Ok(session(&self.weights, self.context))
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
