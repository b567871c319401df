//! Quantized Llama-family models from a GGUF file (SmolLM2, Llama, Qwen-style llama GGUFs),
//! with the tokenizer and chat template the file itself carries.

use super::codec::DecoderTokenizer;
use super::error::{AiError, Result};
use super::generate::{CausalLm, Decoder, TextCodec};
use super::kv_cache;
use super::llama_projected::ProjectedLlama;
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::Config;
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{Cursor, Read, Seek};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct GgufModel {
    pub architecture: String,
    /// The file's scalar metadata (general.*, llama.*), for ai.models.config.
    pub metadata: Value,
    /// Bytes of the weights in memory: on candle's quantized Llama the file's (or f32), plus the token embeddings in
    /// f32; on the 8-bit Llama its own (see `ProjectedLlama::weight_bytes`).
    pub weight_bytes: usize,
    pub parameters: usize,
    weights: Held,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
}

/// The weights: on candle's quantized Llama as the file stores them (or Q8_0, or f32), or on pg_ai's 8-bit Llama.
enum Held {
    Quantized { weights: ModelWeights, context: usize },
    Int8(ProjectedLlama),
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
    /// The default: a file with Q4_1, Q5_1 or Q8_1 weights, which candle multiplies with a scalar loop, on pg_ai's
    /// 8-bit Llama (engine::llama_projected: Q8_0, rows padded for candle's tiled kernels); other files as stored.
    Fast,
    /// Every weight de-quantised to f32: the reference that measures what quantisation changes.
    F32,
}

/// Bytes the weights take once candle's quantized Llama holds them: each as stored, plus the token embeddings
/// de-quantised to f32 for lookup; the stored embeddings stay only where they are also the output head.
fn bytes_in_memory(content: &gguf_file::Content) -> usize {
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

/// Rewrites every quantized weight as f32, in memory, as a GGUF data section that `content` then describes; None
/// when all are f32 already.
fn dequantize_all<R: Read + Seek>(
    content: &mut gguf_file::Content,
    file: &mut R,
) -> candle_core::Result<Option<Cursor<Vec<u8>>>> {
    if content.tensor_infos.values().all(|info| info.ggml_dtype == GgmlDType::F32) {
        return Ok(None);
    }
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut data = Vec::new();
    for name in names {
        let mut tensor = content.tensor(file, &name, &Device::Cpu)?;
        if tensor.dtype() != GgmlDType::F32 {
            tensor = QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::F32)?;
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
    /// Loads the file; one with Q4_1, Q5_1 or Q8_1 weights onto the 8-bit Llama (`Weights::Fast`) unless
    /// `requantize_slow_weights(false)` was called.
    pub fn load(path: &Path) -> Result<Self> {
        let fast = REQUANTIZE.load(std::sync::atomic::Ordering::Relaxed);
        Self::load_as(path, if fast { Weights::Fast } else { Weights::AsStored })
    }

    /// Whether the weights were re-quantised to Q8_0 and run on pg_ai's 8-bit Llama (see `Weights::Fast`).
    pub fn requantised(&self) -> bool {
        matches!(self.weights, Held::Int8(_))
    }

    pub fn load_as(path: &Path, weights: Weights) -> Result<Self> {
        let corrupt = |e: candle_core::Error| {
            // candle words a missing metadata key as the key's context over a bare "unwrap none" line.
            let message: Vec<String> =
                e.to_string().lines().map(str::trim).filter(|l| *l != "unwrap none").map(str::to_string).collect();
            AiError::corrupt(format!("cannot read {}: {}", path.display(), message.join(": ")))
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
        // Why: candle multiplies Q4_1, Q5_1 and Q8_1 weights with a scalar loop (SmolLM2's Q4_1 prompt went through
        // about ten times slower than PyTorch). Q8_0 has SIMD kernels, and holds each block of 32 weights to within
        // max|w|/254, finer than the 4- and 5-bit steps it starts from, in 34 bytes a block where Q4_1 takes 20.
        let slow = content.tensor_infos.values().any(|info| scalar_only(info.ggml_dtype));
        let (weights, weight_bytes) = if weights == Weights::Fast && slow {
            let (tensors, config) = as_transformers_llama(&content, &mut file).map_err(corrupt)?;
            let model =
                ProjectedLlama::load(&VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), &config, true)
                    .map_err(corrupt)?;
            let bytes = model.weight_bytes();
            (Held::Int8(model), bytes)
        } else {
            let context = content
                .metadata
                .get("llama.context_length")
                .and_then(|v| v.to_u32().ok())
                .map_or(MAX_SEQ_LEN, |n| (n as usize).min(MAX_SEQ_LEN));
            let rewritten =
                if weights == Weights::F32 { dequantize_all(&mut content, &mut file).map_err(corrupt)? } else { None };
            let weight_bytes = bytes_in_memory(&content);
            let weights = match rewritten {
                Some(mut data) => ModelWeights::from_gguf(content, &mut data, &Device::Cpu),
                None => ModelWeights::from_gguf(content, &mut file, &Device::Cpu),
            }
            .map_err(corrupt)?;
            (Held::Quantized { weights, context }, weight_bytes)
        };
        Ok(GgufModel {
            architecture: "llama (gguf)".to_string(),
            metadata: Value::Object(metadata),
            weight_bytes,
            parameters,
            weights,
            codec,
            chat_template,
        })
    }
}

/// A llama GGUF's weights de-quantised to f32 under transformers' names, the query and key rows back in
/// transformers' rotate-half order (llama.cpp's converter interleaves them), and the configuration its metadata
/// gives. Rope scaling is not read, as candle's quantized Llama does not read it either.
pub fn as_transformers_llama<R: Read + Seek>(
    content: &gguf_file::Content,
    file: &mut R,
) -> candle_core::Result<(HashMap<String, Tensor>, Config)> {
    let meta = |key: &str| {
        content.metadata.get(key).ok_or_else(|| candle_core::Error::Msg(format!("the GGUF metadata lacks {key}")))
    };
    let size = |key: &str| Ok::<_, candle_core::Error>(meta(key)?.to_u32()? as usize);
    let (heads, kv_heads, layers) =
        (size("llama.attention.head_count")?, size("llama.attention.head_count_kv")?, size("llama.block_count")?);
    let mut f32 = |name: &str| content.tensor(file, name, &Device::Cpu)?.dequantize(&Device::Cpu);
    let rotate_half_order = |t: Tensor, heads: usize| {
        let (rows, cols) = t.dims2()?;
        t.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
    };
    let embeddings = f32("token_embd.weight")?;
    let (vocab_size, hidden_size) = embeddings.dims2()?;
    let mut tensors = HashMap::new();
    tensors.insert("model.embed_tokens.weight".to_string(), embeddings);
    tensors.insert("model.norm.weight".to_string(), f32("output_norm.weight")?);
    let tie_word_embeddings = !content.tensor_infos.contains_key("output.weight");
    if !tie_word_embeddings {
        tensors.insert("lm_head.weight".to_string(), f32("output.weight")?);
    }
    for i in 0..layers {
        let (hf, blk) = (format!("model.layers.{i}"), format!("blk.{i}"));
        let q = rotate_half_order(f32(&format!("{blk}.attn_q.weight"))?, heads)?;
        let k = rotate_half_order(f32(&format!("{blk}.attn_k.weight"))?, kv_heads)?;
        tensors.insert(format!("{hf}.self_attn.q_proj.weight"), q);
        tensors.insert(format!("{hf}.self_attn.k_proj.weight"), k);
        for (to, from) in [
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
        ] {
            tensors.insert(format!("{hf}.{to}.weight"), f32(&format!("{blk}.{from}.weight"))?);
        }
    }
    let config = Config {
        hidden_size,
        intermediate_size: size("llama.feed_forward_length")?,
        vocab_size,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        use_flash_attn: false,
        rms_norm_eps: meta("llama.attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
        rope_theta: content.metadata.get("llama.rope.freq_base").map_or(Ok(10000.0), |v| v.to_f32())?,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: size("llama.context_length").unwrap_or(MAX_SEQ_LEN),
        tie_word_embeddings,
    };
    Ok((tensors, config))
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
        Ok(match &self.weights {
            Held::Quantized { weights, context } => {
                Box::new(Session { weights: weights.clone(), position: 0, context: *context })
            }
            Held::Int8(model) => Box::new(kv_cache::Session::new(model)),
        })
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
