//! Quantized decoders from a GGUF file (Llama, SmolLM2, Qwen2, Qwen3, Phi-3: the architectures in `ARCHITECTURES`), with
//! the tokenizer and chat template the file itself carries.

mod sentencepiece;

use crate::error::{AiError, ErrorKind, Result};
use crate::generate::kv_cache;
use crate::generate::{CausalLm, Decoder, TextCodec};
use crate::kernels::int8::Projection;
use crate::models::llama::projected::{head_dim, Layer, ProjectedLlama, Variant};
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

/// A GGUF architecture pg_ai reads, as llama.cpp names it. What else differs from Llama (biases, head norms, a
/// head width of its own) the file's tensors and metadata say.
struct Architecture {
    name: &'static str,
    /// llama.cpp's converter interleaves the query and key rows of each head for its Llama rotation; for the
    /// others, rotated NEOX-style as transformers does, it keeps transformers' order.
    interleaved: bool,
}

const ARCHITECTURES: &[Architecture] = &[
    Architecture { name: "llama", interleaved: true },
    Architecture { name: "qwen2", interleaved: false },
    Architecture { name: "qwen3", interleaved: false },
    // Query, key and value in one tensor (attn_qkv), gate and up in one (ffn_up), NEOX rotation of part of each head.
    Architecture { name: "phi3", interleaved: false },
];

/// "llama, qwen2, qwen3 and phi3", for hints.
pub fn architectures() -> String {
    crate::error::listed(ARCHITECTURES.iter().map(|a| a.name), "and")
}

fn architecture_of(content: &gguf_file::Content) -> candle_core::Result<&'static Architecture> {
    let name = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
    let name = name.unwrap_or_default();
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| candle_core::Error::Msg(format!("GGUF architecture \"{name}\" is not supported")))
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
                .with_hint(format!("pg_ai reads GGUF files of {} models.", architectures()))
        };
        let mut file = std::fs::File::open(path)
            .map_err(|e| AiError::missing_file(format!("cannot open {}: {e}", path.display())))?;
        let content = gguf_file::Content::read(&mut file).map_err(corrupt)?;
        let parameters = content.tensor_infos.values().map(|t| t.shape.elem_count()).sum();
        let architecture = architecture_of(&content).map_err(|e| {
            AiError::invalid(e.to_string()).with_hint(format!(
                "pg_ai reads GGUF files of {} models (Llama, SmolLM2, Mistral, Qwen, Phi-3).",
                architectures()
            ))
        })?;
        // Phi-3's long-context files rescale their rotary angles by tensors of factors (LongRoPE), which pg_ai's
        // Llama does not read: refused rather than answered otherwise than llama.cpp answers.
        if content.tensor_infos.keys().any(|t| t.starts_with("rope_factors_")) {
            return Err(AiError::new(
                ErrorKind::Unsupported,
                format!("{} rescales its rotary positions (LongRoPE), which pg_ai does not read", path.display()),
            )
            .with_hint("Phi-3 files of 4k context run; the long-context (128k) ones do not yet."));
        }
        let mut metadata = Map::new();
        for (key, value) in &content.metadata {
            if let Some(v) = scalar(value).filter(|_| !key.starts_with("tokenizer.")) {
                metadata.insert(key.clone(), v);
            }
        }
        let codec = DecoderTokenizer::new(tokenizer(&content).map_err(corrupt)?, end_ids(&content))?;
        let chat_template = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        // Why: candle multiplies Q4_1, Q5_1 and Q8_1 weights with a scalar loop (SmolLM2's Q4_1 prompt went through
        // about ten times slower than PyTorch). Q8_0 has SIMD kernels, and holds each block of 32 weights to within
        // max|w|/254, finer than the 4- and 5-bit steps it starts from, in 34 bytes a block where Q4_1 takes 20.
        let slow = content.tensor_infos.values().any(|info| scalar_only(info.ggml_dtype));
        let experts = content.metadata.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 0;
        let (weights, weight_bytes) = if experts && architecture.name == "llama" && weights != Weights::F32 {
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
                let (tensors, config, variant) = as_transformers(&content, &mut file).map_err(corrupt)?;
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
                ProjectedLlama::load(&vb, &config, variant, None, requantised)
            } else {
                as_stored(&content, &mut file)
            }
            .and_then(|model| with_rope_freqs(model, &content, &mut file))
            .map_err(corrupt)?;
            let bytes = model.weight_bytes();
            (Held::Projected { model, requantised }, bytes)
        };
        Ok(GgufModel {
            architecture: format!("{} (gguf)", architecture.name),
            metadata: Value::Object(metadata),
            weight_bytes,
            parameters,
            weights,
            codec,
            chat_template,
        })
    }
}

/// A GGUF's weights de-quantised to f32 under transformers' names, the query and key rows in transformers' order
/// (see `Architecture::interleaved`), and the configuration and variant its metadata and tensors give.
pub fn as_transformers<R: Read + Seek>(
    content: &gguf_file::Content,
    file: &mut R,
) -> candle_core::Result<(HashMap<String, Tensor>, Config, Variant)> {
    let architecture = architecture_of(content)?;
    let (config, variant) = llama_config(content, architecture)?;
    // A tensor in f32; query and key rows (of `heads` heads) reordered first where interleaved, on the stored bytes.
    let mut read = |name: &str, heads: Option<usize>| {
        let stored = content.tensor(file, name, &Device::Cpu)?;
        match heads.filter(|_| architecture.interleaved) {
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
    let (heads, kv_heads) = (Some(config.num_attention_heads), Some(config.num_key_value_heads));
    let fused = fused(content);
    for i in 0..config.num_hidden_layers {
        let (hf, blk) = (format!("model.layers.{i}"), format!("blk.{i}"));
        let mut parts = match fused {
            // Phi-3's names, which ProjectedLlama::load reads as they are.
            true => vec![
                ("self_attn.qkv_proj.weight", "attn_qkv.weight", None),
                ("mlp.gate_up_proj.weight", "ffn_up.weight", None),
            ],
            false => vec![
                ("self_attn.q_proj.weight", "attn_q.weight", heads),
                ("self_attn.k_proj.weight", "attn_k.weight", kv_heads),
                ("self_attn.v_proj.weight", "attn_v.weight", None),
                ("mlp.gate_proj.weight", "ffn_gate.weight", None),
                ("mlp.up_proj.weight", "ffn_up.weight", None),
            ],
        };
        parts.extend([
            ("self_attn.o_proj.weight", "attn_output.weight", None),
            ("mlp.down_proj.weight", "ffn_down.weight", None),
            ("input_layernorm.weight", "attn_norm.weight", None),
            ("post_attention_layernorm.weight", "ffn_norm.weight", None),
        ]);
        if variant.qkv_bias {
            parts.extend([
                ("self_attn.q_proj.bias", "attn_q.bias", heads),
                ("self_attn.k_proj.bias", "attn_k.bias", kv_heads),
                ("self_attn.v_proj.bias", "attn_v.bias", None),
            ]);
        }
        if variant.out_bias {
            parts.push(("self_attn.o_proj.bias", "attn_output.bias", None));
        }
        if variant.qk_norm {
            parts.extend([
                ("self_attn.q_norm.weight", "attn_q_norm.weight", None),
                ("self_attn.k_norm.weight", "attn_k_norm.weight", None),
            ]);
        }
        for (to, from, heads) in parts {
            tensors.insert(format!("{hf}.{to}"), read(&format!("{blk}.{from}"), heads)?);
        }
    }
    Ok((tensors, config, variant))
}

/// The file's tokenizer, splitting texts as llama.cpp does: a byte-level BPE (candle reads it), or a sentencepiece
/// vocabulary (tokenizer.ggml.model "llama", which candle does not).
pub fn tokenizer(content: &gguf_file::Content) -> candle_core::Result<Tokenizer> {
    if content.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).is_some_and(|m| m == "llama") {
        return sentencepiece::tokenizer(content);
    }
    let mut tokenizer = Tokenizer::from_gguf(content)?;
    let pre = content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned();
    split_as_llama_cpp(&mut tokenizer, pre.as_deref().unwrap_or_default())?;
    Ok(tokenizer)
}

/// Sets the pre-tokenizer of a GGUF's byte-level BPE to llama.cpp's for `pre` (tokenizer.ggml.pre) where candle's
/// reading differs: candle gives every name it does not know GPT-2's byte-level splitting with a space put before
/// the text, which llama.cpp never adds (SmolLM2's "the cat" became "Ġthe" "Ġcat", and the answers changed from the
/// first token), and it does not split digits one by one where llama.cpp does. The regular expressions are
/// llama.cpp's (src/llama-vocab.cpp); names candle reads as llama.cpp does are left to it.
fn split_as_llama_cpp(tokenizer: &mut Tokenizer, pre: &str) -> candle_core::Result<()> {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::SplitDelimiterBehavior::Isolated;
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = |regex: &str| -> candle_core::Result<PreTokenizerWrapper> {
        Ok(Split::new(SplitPattern::Regex(regex.to_string()), Isolated, false)
            .map_err(candle_core::Error::wrap)?
            .into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "qwen2" | "llama3" | "smaug-bpe" | "lfm2" => return Ok(()),
        // Llama 3's name in llama.cpp's converter.
        "llama-bpe" => Sequence::new(vec![split(LLAMA3)?, ByteLevel::new(false, true, false).into()]).into(),
        // Digits one by one, then GPT-2's expression.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Sequence::new(vec![split(r"\p{N}")?, ByteLevel::new(false, true, true).into()]).into()
        }
        // GPT-2's expression ("gpt-2", and what llama.cpp reads the same way).
        _ => ByteLevel::new(false, true, true).into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(())
}

/// pg_ai's Llama on the file's weights as stored (rows of the query and key weights reordered), the token
/// embeddings de-quantised to f16 for lookup.
fn as_stored<R: Read + Seek>(content: &gguf_file::Content, file: &mut R) -> candle_core::Result<ProjectedLlama> {
    let architecture = architecture_of(content)?;
    let (config, variant) = llama_config(content, architecture)?;
    let eps = config.rms_norm_eps;
    let mut stored = |name: &str| content.tensor(file, name, &Device::Cpu);
    let norm = |t: QTensor| Ok::<_, candle_core::Error>(RmsNorm::new(t.dequantize(&Device::Cpu)?, eps));
    let in_order = |t: QTensor, heads: usize| match architecture.interleaved {
        true => rotate_half_rows(t, heads),
        false => Ok(t),
    };
    let fused = fused(content);
    let mut layers = Vec::new();
    for i in 0..config.num_hidden_layers {
        let mut part = |name: &str| stored(&format!("blk.{i}.{name}"));
        let (qkv, gate_up) = match fused {
            true => (vec![part("attn_qkv.weight")?], vec![part("ffn_up.weight")?]),
            false => {
                let q = in_order(part("attn_q.weight")?, config.num_attention_heads)?;
                let k = in_order(part("attn_k.weight")?, config.num_key_value_heads)?;
                (vec![q, k, part("attn_v.weight")?], vec![part("ffn_gate.weight")?, part("ffn_up.weight")?])
            }
        };
        let qkv_bias = match variant.qkv_bias {
            true => {
                let q = in_order(part("attn_q.bias")?, config.num_attention_heads)?.dequantize(&Device::Cpu)?;
                let k = in_order(part("attn_k.bias")?, config.num_key_value_heads)?.dequantize(&Device::Cpu)?;
                Some(Tensor::cat(&[q, k, part("attn_v.bias")?.dequantize(&Device::Cpu)?], 0)?)
            }
            false => None,
        };
        let out_bias = variant.out_bias.then(|| part("attn_output.bias")?.dequantize(&Device::Cpu)).transpose()?;
        let mut head_norm = |name: &str| variant.qk_norm.then(|| norm(part(name)?)).transpose();
        let (query_norm, key_norm) = (head_norm("attn_q_norm.weight")?, head_norm("attn_k_norm.weight")?);
        layers.push(Layer {
            attention_norm: norm(part("attn_norm.weight")?)?,
            qkv: Projection::stored(qkv, qkv_bias)?,
            query_norm,
            key_norm,
            attention_out: Projection::stored(vec![part("attn_output.weight")?], out_bias)?,
            mlp_norm: norm(part("ffn_norm.weight")?)?,
            gate_up: Projection::stored(gate_up, None)?,
            down: Projection::stored(vec![part("ffn_down.weight")?], None)?,
            attention_out_norm: None,
            mlp_out_norm: None,
        });
    }
    let output_norm = norm(stored("output_norm.weight")?)?;
    let embeddings = stored("token_embd.weight")?;
    // In f16 for lookup, which rounds far below the stored blocks' steps; f32 embeddings stay exact.
    let lookup_type = if embeddings.dtype() == GgmlDType::F32 { DType::F32 } else { DType::F16 };
    let lookup = embeddings.dequantize(&Device::Cpu)?.to_dtype(lookup_type)?;
    let head = match config.tie_word_embeddings {
        true => embeddings,
        false => stored("output.weight")?,
    };
    ProjectedLlama::new(&config, variant, lookup, layers, output_norm, Projection::stored(vec![head], None)?, false)
}

/// `model` with its rotary frequencies divided by the file's rope_freqs factors, where it has them (Llama 3.1 and
/// 3.2 files: their rope scaling as the converter writes it, a factor per frequency).
fn with_rope_freqs<R: Read + Seek>(
    model: ProjectedLlama,
    content: &gguf_file::Content,
    file: &mut R,
) -> candle_core::Result<ProjectedLlama> {
    if !content.tensor_infos.contains_key("rope_freqs.weight") {
        return Ok(model);
    }
    let factors = content.tensor(file, "rope_freqs.weight", &Device::Cpu)?.dequantize(&Device::Cpu)?;
    model.with_frequency_factors(&factors.flatten_all()?.to_vec1::<f32>()?)
}

/// The tokens that end a generation, as llama.cpp finds them: the file's end-of-text token first (the chat
/// templates' eos_token), its end-of-turn and end-of-message tokens, and the control tokens whose text llama.cpp
/// takes for an end of turn where the file does not name one (Phi-3's <|end|>, ChatML's <|im_end|>, Llama 3's
/// <|eot_id|>, Gemma's <end_of_turn>).
fn end_ids(content: &gguf_file::Content) -> Vec<u32> {
    const END_TEXTS: [&str; 8] =
        ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>", "<|eom_id|>"];
    let id = |key: &str| content.metadata.get(&format!("tokenizer.ggml.{key}")).and_then(|v| v.to_u32().ok());
    let mut ids: Vec<u32> = ["eos_token_id", "eot_token_id", "eom_token_id"].into_iter().filter_map(id).collect();
    let tokens = content.metadata.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
    let types = content.metadata.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok());
    if let (Some(tokens), Some(types)) = (tokens, types) {
        for (i, (token, kind)) in tokens.iter().zip(types).enumerate() {
            // Control tokens (type 3) only: a normal piece with such a text is text.
            let control = kind.to_i32().is_ok_and(|k| k == 3);
            if control && token.to_string().is_ok_and(|t| END_TEXTS.contains(&t.as_str())) {
                ids.push(i as u32);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    ids
}

/// Whether the file holds query, key and value as one tensor and gate and up as another (Phi-3), as llama.cpp's
/// converter writes a model whose safetensors do.
fn fused(content: &gguf_file::Content) -> bool {
    content.tensor_infos.contains_key("blk.0.attn_qkv.weight")
}

/// The rows of a query or key weight (or the values of its bias), which llama.cpp's converter interleaves within
/// each head, back in transformers' rotate-half order: a head's rows 0, 2, 4, ... and then 1, 3, 5, ...
fn rotate_half_rows(weight: QTensor, heads: usize) -> candle_core::Result<QTensor> {
    let shape = weight.shape().clone();
    let rows = shape.dims()[0];
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
    QTensor::new(QStorage::from_data(Cow::Owned(reordered), &Device::Cpu, weight.dtype())?, shape)
}

/// The transformers configuration and the variant that a GGUF's metadata (under the architecture's name) and its
/// tensors give. Rope scaling is not read, as candle's quantized Llama does not read it either.
fn llama_config(content: &gguf_file::Content, architecture: &Architecture) -> candle_core::Result<(Config, Variant)> {
    let key = |name: &str| format!("{}.{name}", architecture.name);
    let meta = |name: &str| {
        let key = key(name);
        content.metadata.get(&key).ok_or_else(|| candle_core::Error::Msg(format!("the GGUF metadata lacks {key}")))
    };
    let size = |name: &str| Ok::<_, candle_core::Error>(meta(name)?.to_u32()? as usize);
    let embeddings = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| candle_core::Error::Msg("the GGUF file lacks token_embd.weight".to_string()))?;
    let (vocab_size, hidden_size) = embeddings.shape.dims2()?;
    let has = |tensor: &str| content.tensor_infos.contains_key(tensor);
    let variant = Variant {
        qkv_bias: has("blk.0.attn_q.bias"),
        out_bias: has("blk.0.attn_output.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        // llama.cpp's converter writes key_length where config.json has a head_dim of its own.
        head_dim: size("attention.key_length").ok(),
        rotary_dims: None,
    };
    let config = Config {
        hidden_size,
        intermediate_size: size("feed_forward_length")?,
        vocab_size,
        num_hidden_layers: size("block_count")?,
        num_attention_heads: size("attention.head_count")?,
        num_key_value_heads: size("attention.head_count_kv")?,
        use_flash_attn: false,
        rms_norm_eps: meta("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
        rope_theta: content.metadata.get(&key("rope.freq_base")).map_or(Ok(10000.0), |v| v.to_f32())?,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: size("context_length").unwrap_or(MAX_SEQ_LEN),
        tie_word_embeddings: !has("output.weight"),
    };
    // Partial rotation (where a converter writes rope.dimension_count below the head's width).
    let head_dim = head_dim(&config, variant)?;
    let rotary_dims = size("rope.dimension_count").ok().filter(|&r| r < head_dim);
    Ok((config, Variant { rotary_dims, ..variant }))
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
