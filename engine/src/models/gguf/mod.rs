//! Quantized Llama-family models from a GGUF file (SmolLM2, Llama, Qwen-style llama GGUFs),
//! with the tokenizer and chat template the file itself carries.

use crate::error::{AiError, Result};
use crate::generate::kv_cache;
use crate::generate::{CausalLm, Decoder, TextCodec};
use crate::kernels::int8::Projection;
use crate::models::llama::projected::{Layer, ProjectedLlama, Variant};
use crate::text::decoder::DecoderTokenizer;
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::{RmsNorm, VarBuilder};
use candle_transformers::models::llama::Config;
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct GgufModel {
    pub architecture: String,
    /// The file's scalar metadata (general.*, llama.*), for ai.models.config.
    pub metadata: Value,
    /// Bytes of the weights in memory: on pg_ai's Llama its own (see `ProjectedLlama::weight_bytes`); on candle's
    /// quantized Llama the file's, plus the token embeddings in f32.
    pub weight_bytes: usize,
    pub parameters: usize,
    weights: Held,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
}

/// The weights: on pg_ai's Llama (engine::models::llama::projected) as the file stores them, re-quantised to Q8_0, or in
/// f32; a mixture of experts (Mixtral-style files) as stored on candle's quantized Llama, which has them.
enum Held {
    Projected { model: ProjectedLlama, requantised: bool },
    Experts { weights: ModelWeights, context: usize },
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

/// How a GGUF file's weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As the file stores them.
    AsStored,
    /// The default: a file with Q4_1, Q5_1 or Q8_1 weights, which candle multiplies with a scalar loop,
    /// re-quantised to Q8_0 (rows padded for candle's tiled kernels, see engine::kernels::int8); other files as stored.
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

impl GgufModel {
    /// Loads the file; one with Q4_1, Q5_1 or Q8_1 weights re-quantised to Q8_0 (`Weights::Fast`) where
    /// `requantize` (the pg_ai.gguf_requantize setting).
    pub fn load(path: &Path, requantize: bool) -> Result<Self> {
        Self::load_as(path, if requantize { Weights::Fast } else { Weights::AsStored })
    }

    /// Whether the weights were re-quantised to Q8_0 (see `Weights::Fast`).
    pub fn requantised(&self) -> bool {
        matches!(self.weights, Held::Projected { requantised: true, .. })
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
        // Why: candle multiplies Q4_1, Q5_1 and Q8_1 weights with a scalar loop (SmolLM2's Q4_1 prompt went through
        // about ten times slower than PyTorch). Q8_0 has SIMD kernels, and holds each block of 32 weights to within
        // max|w|/254, finer than the 4- and 5-bit steps it starts from, in 34 bytes a block where Q4_1 takes 20.
        let slow = content.tensor_infos.values().any(|info| scalar_only(info.ggml_dtype));
        let experts = content.metadata.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 0;
        let (weights, weight_bytes) = if experts && weights != Weights::F32 {
            let context = content
                .metadata
                .get("llama.context_length")
                .and_then(|v| v.to_u32().ok())
                .map_or(MAX_SEQ_LEN, |n| (n as usize).min(MAX_SEQ_LEN));
            let weight_bytes = bytes_in_memory(&content);
            let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).map_err(corrupt)?;
            (Held::Experts { weights, context }, weight_bytes)
        } else {
            let requantised = weights == Weights::Fast && slow;
            let model = if requantised || weights == Weights::F32 {
                let (tensors, config) = as_transformers_llama(&content, &mut file).map_err(corrupt)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
                ProjectedLlama::load(&vb, &config, Variant::default(), requantised)
            } else {
                as_stored(&content, &mut file)
            }
            .map_err(corrupt)?;
            let bytes = model.weight_bytes();
            (Held::Projected { model, requantised }, bytes)
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
/// gives.
pub fn as_transformers_llama<R: Read + Seek>(
    content: &gguf_file::Content,
    file: &mut R,
) -> candle_core::Result<(HashMap<String, Tensor>, Config)> {
    let config = llama_config(content)?;
    // A tensor in f32; query and key rows (of `heads` heads) reordered first, on the stored bytes.
    let mut read = |name: &str, heads: Option<usize>| {
        let stored = content.tensor(file, name, &Device::Cpu)?;
        match heads {
            Some(heads) => rotate_half_rows(stored, heads)?.dequantize(&Device::Cpu),
            None => stored.dequantize(&Device::Cpu),
        }
    };
    let mut tensors = HashMap::new();
    tensors.insert("model.embed_tokens.weight".to_string(), read("token_embd.weight", None)?);
    tensors.insert("model.norm.weight".to_string(), read("output_norm.weight", None)?);
    if !config.tie_word_embeddings {
        tensors.insert("lm_head.weight".to_string(), read("output.weight", None)?);
    }
    for i in 0..config.num_hidden_layers {
        let (hf, blk) = (format!("model.layers.{i}"), format!("blk.{i}"));
        let q = read(&format!("{blk}.attn_q.weight"), Some(config.num_attention_heads))?;
        let k = read(&format!("{blk}.attn_k.weight"), Some(config.num_key_value_heads))?;
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
            tensors.insert(format!("{hf}.{to}.weight"), read(&format!("{blk}.{from}.weight"), None)?);
        }
    }
    Ok((tensors, config))
}

/// pg_ai's Llama on the file's weights as stored (rows of the query and key weights reordered), the token
/// embeddings de-quantised to f16 for lookup.
fn as_stored<R: Read + Seek>(content: &gguf_file::Content, file: &mut R) -> candle_core::Result<ProjectedLlama> {
    let config = llama_config(content)?;
    let eps = config.rms_norm_eps;
    let mut stored = |name: &str| content.tensor(file, name, &Device::Cpu);
    let norm = |t: QTensor| Ok::<_, candle_core::Error>(RmsNorm::new(t.dequantize(&Device::Cpu)?, eps));
    let mut layers = Vec::new();
    for i in 0..config.num_hidden_layers {
        let mut part = |name: &str| stored(&format!("blk.{i}.{name}.weight"));
        let q = rotate_half_rows(part("attn_q")?, config.num_attention_heads)?;
        let k = rotate_half_rows(part("attn_k")?, config.num_key_value_heads)?;
        layers.push(Layer {
            attention_norm: norm(part("attn_norm")?)?,
            qkv: Projection::stored(vec![q, k, part("attn_v")?])?,
            query_norm: None,
            key_norm: None,
            attention_out: Projection::stored(vec![part("attn_output")?])?,
            mlp_norm: norm(part("ffn_norm")?)?,
            gate_up: Projection::stored(vec![part("ffn_gate")?, part("ffn_up")?])?,
            down: Projection::stored(vec![part("ffn_down")?])?,
        });
    }
    let output_norm = norm(stored("output_norm.weight")?)?;
    let embeddings = stored("token_embd.weight")?;
    let lookup = embeddings.dequantize(&Device::Cpu)?.to_dtype(DType::F16)?;
    let head = match config.tie_word_embeddings {
        true => embeddings,
        false => stored("output.weight")?,
    };
    ProjectedLlama::new(
        &config,
        Variant::default(),
        lookup,
        layers,
        output_norm,
        Projection::stored(vec![head])?,
        false,
    )
}

/// The rows of a query or key weight, which llama.cpp's converter interleaves within each head, back in
/// transformers' rotate-half order: a head's rows 0, 2, 4, ... and then 1, 3, 5, ...
fn rotate_half_rows(weight: QTensor, heads: usize) -> candle_core::Result<QTensor> {
    let (rows, columns) = weight.shape().dims2()?;
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        candle_core::bail!("{rows} rows do not split into {heads} heads of pairs");
    }
    let data = weight.data()?;
    let (row_bytes, per_head) = (data.len() / rows, rows / heads);
    let mut reordered = Vec::with_capacity(data.len());
    for head in 0..heads {
        for parity in 0..2 {
            for row in (head * per_head + parity..(head + 1) * per_head).step_by(2) {
                reordered.extend_from_slice(&data[row * row_bytes..(row + 1) * row_bytes]);
            }
        }
    }
    QTensor::new(QStorage::from_data(Cow::Owned(reordered), &Device::Cpu, weight.dtype())?, (rows, columns))
}

/// The transformers configuration a llama GGUF's metadata gives. Rope scaling is not read, as candle's quantized
/// Llama does not read it either.
fn llama_config(content: &gguf_file::Content) -> candle_core::Result<Config> {
    let meta = |key: &str| {
        content.metadata.get(key).ok_or_else(|| candle_core::Error::Msg(format!("the GGUF metadata lacks {key}")))
    };
    let size = |key: &str| Ok::<_, candle_core::Error>(meta(key)?.to_u32()? as usize);
    let embeddings = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| candle_core::Error::Msg("the GGUF file lacks token_embd.weight".to_string()))?;
    let (vocab_size, hidden_size) = embeddings.shape.dims2()?;
    Ok(Config {
        hidden_size,
        intermediate_size: size("llama.feed_forward_length")?,
        vocab_size,
        num_hidden_layers: size("llama.block_count")?,
        num_attention_heads: size("llama.attention.head_count")?,
        num_key_value_heads: size("llama.attention.head_count_kv")?,
        use_flash_attn: false,
        rms_norm_eps: meta("llama.attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
        rope_theta: content.metadata.get("llama.rope.freq_base").map_or(Ok(10000.0), |v| v.to_f32())?,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: size("llama.context_length").unwrap_or(MAX_SEQ_LEN),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
    })
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
            Held::Projected { model, .. } => Box::new(kv_cache::Session::new(model)),
            Held::Experts { weights, context } => {
                Box::new(Session { weights: weights.clone(), position: 0, context: *context })
            }
        })
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
