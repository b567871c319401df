//! Llama-family decoders from safetensors (Llama, SmolLM and the like, and Mistral, Qwen2, Qwen3, Phi-3, Gemma 2 and
//! Gemma 3, which differ from Llama as `projected::Variant` and `projected::Gemma` say), on pg_ai's own Llama
//! (engine::models::llama::projected: f32, or 8 bits with pg_ai.int8_decoders), or for llama3-scaled rotary embeddings,
//! which that one lacks, on candle-transformers' Llama in f32.

pub mod projected;
pub mod train;

use crate::error::{AiError, ErrorKind, Result};
use crate::files::ModelFiles;
use crate::generate::kv_cache;
use crate::generate::{CausalLm, Decoder, TextCodec};
use crate::models::bert::var_builder;
use crate::models::llama::projected::{head_dim, Gemma, ProjectedLlama, Variant, Window};
use crate::text::decoder::DecoderTokenizer;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig, LlamaEosToks};
use serde_json::Value;

pub struct LlamaModel {
    pub architecture: String,
    pub config: Value,
    weights: Weights,
    codec: DecoderTokenizer,
    chat_template: Option<String>,
    pub parameters: usize,
    /// Bytes of the weights in memory: 4 per parameter in f32; in int8 about 1.06 for the linear weights (more where
    /// rows are padded, see engine::kernels::int8) and the head, 2 for the token embeddings (kept in f16 for lookup).
    pub weight_bytes: usize,
}

/// The weights: on pg_ai's own Llama (f32 or 8 bits), or in f32 on candle-transformers' for llama3 rotary scaling.
enum Weights {
    Candle { model: Llama, config: Config },
    Projected(ProjectedLlama),
}

impl LlamaModel {
    /// Loads the model, its linear weights in 8 bits where `int8` (see engine::kernels::int8).
    pub fn load(files: &ModelFiles, config: Value, int8: bool) -> Result<Self> {
        let parsed: LlamaConfig = serde_json::from_value(top_level_rope(config.clone())?)
            .map_err(|e| AiError::corrupt(format!("config.json is not a Llama configuration: {e}")))?;
        let variant = variant(&config)?;
        let gemma = gemma(&config)?;
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
        let c = &llama_config;
        let d = head_dim(c, variant).map_err(|e| AiError::corrupt(format!("config.json: {e}")))?;
        let variant = Variant { rotary_dims: rotary_dims(&config, d), ..variant };
        let (q, kv) = (d * c.num_attention_heads, d * c.num_key_value_heads);
        // Saturating: config.json's sizes are not yet checked against the weights.
        let p = crate::budget::product;
        let per_layer = p(&[c.hidden_size, p(&[2, q]).saturating_add(p(&[2, kv]))])
            .saturating_add(p(&[3, c.hidden_size, c.intermediate_size]))
            .saturating_add(p(&[2, c.hidden_size]));
        let head = if c.tie_word_embeddings { 0 } else { p(&[c.vocab_size, c.hidden_size]) };
        let parameters = p(&[c.vocab_size, c.hidden_size])
            .saturating_add(p(&[c.num_hidden_layers, per_layer]))
            .saturating_add(c.hidden_size)
            .saturating_add(head);
        let vb = var_builder(&files.weights, &Device::Cpu)?;
        let mismatch = |e: candle_core::Error| AiError::corrupt(format!("the weights do not match config.json: {e}"));
        // pg_ai's Llama has transformers' default rotary embeddings only: llama3-scaled models stay on candle's, in
        // f32.
        let (weights, weight_bytes) = if c.rope_scaling.is_none() {
            let model =
                ProjectedLlama::load(&vb, c, variant, gemma, int8).map_err(mismatch)?.with_window(window(&config)?);
            let bytes = model.weight_bytes();
            (Weights::Projected(model), bytes)
        } else if variant == Variant::default() && gemma.is_none() {
            // candle's Llama has full attention only.
            let mut llama_config = llama_config;
            llama_config.max_position_embeddings = context(&config, llama_config.max_position_embeddings)?;
            let model = Llama::load(vb, &llama_config).map_err(mismatch)?;
            (Weights::Candle { model, config: llama_config }, parameters.saturating_mul(4))
        } else {
            return Err(AiError::new(
                ErrorKind::Unsupported,
                "llama3-scaled rotary embeddings with biases, head norms or a head_dim of its own are not supported",
            )
            .with_hint("pg_ai runs such models with default rotary embeddings."));
        };
        let architecture =
            config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("LlamaForCausalLM");
        Ok(LlamaModel {
            architecture: architecture.to_string(),
            config,
            weights,
            codec,
            chat_template,
            parameters,
            weight_bytes,
        })
    }
}

/// How the model in config.json differs from a Llama (see `Variant`).
fn variant(config: &Value) -> Result<Variant> {
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag("mlp_bias") {
        return Err(AiError::new(ErrorKind::Unsupported, "Llama models with mlp_bias are not supported"));
    }
    let head_dim = config.get("head_dim").and_then(Value::as_u64).map(|d| d as usize);
    let attention_bias = flag("attention_bias");
    let llama = Variant { qkv_bias: attention_bias, out_bias: attention_bias, head_dim, ..Variant::default() };
    Ok(match config.get("model_type").and_then(Value::as_str) {
        // Qwen2's query, key and value projections always have biases, its output projection none.
        Some("qwen2") => Variant { qkv_bias: true, out_bias: false, ..llama },
        Some("qwen3" | "gemma3_text") => Variant { qk_norm: true, ..llama },
        // Phi-3's partial rotation is set once the head's width is known (`rotary_dims`).
        Some("phi3") => Variant { qkv_bias: false, out_bias: false, ..llama },
        _ => llama,
    })
}

/// How many of each head's `head_dim` dimensions rotate where not all do: Phi-3's partial_rotary_factor (transformers 5
/// writes it under rope_parameters too), rounded down as transformers does: int(head_dim * partial_rotary_factor).
fn rotary_dims(config: &Value, head_dim: usize) -> Option<usize> {
    if config.get("model_type").and_then(Value::as_str) != Some("phi3") {
        return None;
    }
    let factor = [config.get("partial_rotary_factor"), config.pointer("/rope_parameters/partial_rotary_factor")]
        .into_iter()
        .flatten()
        .find_map(Value::as_f64)
        .unwrap_or(1.0);
    let rotary = (head_dim as f64 * factor) as usize;
    (rotary < head_dim).then_some(rotary)
}

/// What Gemma 2 and 3 (model_type gemma2, gemma3_text) change (see projected::Gemma); None for other models.
fn gemma(config: &Value) -> Result<Option<Gemma>> {
    let Some(model_type) = config.get("model_type").and_then(Value::as_str) else { return Ok(None) };
    if !matches!(model_type, "gemma2" | "gemma3_text") {
        return Ok(None);
    }
    let number = |key: &str| config.get(key).and_then(Value::as_f64);
    let head_dim = number("head_dim").unwrap_or(256.0);
    Ok(Some(Gemma {
        query_pre_attn_scalar: number("query_pre_attn_scalar").unwrap_or(head_dim),
        attention_softcap: number("attn_logit_softcapping"),
        final_softcap: number("final_logit_softcapping"),
        local_rope_theta: config
            .pointer("/rope_parameters/sliding_attention/rope_theta")
            .or_else(|| config.get("rope_local_base_freq"))
            .and_then(Value::as_f64)
            .filter(|_| model_type == "gemma3_text")
            .map(|theta| theta as f32),
        sliding_layers: sliding_layers(config)?,
    }))
}

/// Which layers are of the sliding-window kind: transformers 5's layer_types where config.json has them, else as
/// transformers fills them in: Mistral and Phi-3 every layer, Qwen2 and Qwen3 (with use_sliding_window) the layers
/// from max_window_layers on, Gemma 2 every other layer from the first, Gemma 3 all but every
/// sliding_window_pattern-th (6). A flag per layer of config.json's num_hidden_layers, not yet checked against the
/// weights: refused (53200) where the flags alone would take more than a call may.
fn sliding_layers(config: &Value) -> Result<Vec<bool>> {
    if let Some(types) = config.get("layer_types").and_then(Value::as_array) {
        return Ok(types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect());
    }
    let layers = config.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0) as usize;
    crate::budget::check(layers, || format!("the layer kinds of num_hidden_layers {layers}"))?;
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    let number = |key: &str, default: u64| config.get(key).and_then(Value::as_u64).unwrap_or(default) as usize;
    Ok(match config.get("model_type").and_then(Value::as_str) {
        Some("mistral" | "phi3") => vec![true; layers],
        Some("qwen2" | "qwen3") if flag("use_sliding_window") => {
            (0..layers).map(|i| i >= number("max_window_layers", 0)).collect()
        }
        Some("gemma2") => (0..layers).map(|i| i % 2 == 0).collect(),
        Some("gemma3_text") => {
            let pattern = number("sliding_window_pattern", 6).max(1);
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
        _ => vec![false; layers],
    })
}

/// The sliding window the model's layers attend through, if any: sliding_window positions (null: none) in the
/// layers `sliding_layers` marks.
fn window(config: &Value) -> Result<Option<Window>> {
    let Some(size) = config.get("sliding_window").and_then(Value::as_u64) else { return Ok(None) };
    let layers = sliding_layers(config)?;
    Ok(layers.contains(&true).then_some(Window { size: size as usize, layers }))
}

/// The positions a model of full attention only may see of a model with sliding-window layers (`window`): those
/// layers attend to the last sliding_window positions only, so up to that many full attention answers exactly as
/// they do. Training (and candle's Llama) keeps to it; pg_ai's own Llama attends through the window (`window`).
pub(crate) fn context(config: &Value, max_position_embeddings: usize) -> Result<usize> {
    Ok(match window(config)? {
        Some(w) if w.size > 0 => max_position_embeddings.min(w.size),
        _ => max_position_embeddings,
    })
}

/// transformers 5 writes the rotary settings under `rope_parameters`; candle reads `rope_theta` and
/// `rope_scaling` at the top level and would otherwise fall back to theta 10000 without a word.
fn top_level_rope(mut config: Value) -> Result<Value> {
    let Some(mut rope) = config.get("rope_parameters").cloned() else { return Ok(config) };
    // Gemma 3 keeps one set per kind of layer: the full-attention layers' is the model's rope_theta (its
    // sliding-window layers' is read by `gemma`).
    if let Some(full) = rope.get("full_attention").cloned() {
        rope = full;
    }
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
    model: &'a Llama,
    config: &'a Config,
    cache: Cache,
    position: usize,
}

impl Session<'_> {
    fn fresh_cache(config: &Config) -> Result<Cache> {
        // candle computes cosine and sine tables for every position config.json allows.
        let head_dim = config.hidden_size / config.num_attention_heads.max(1);
        crate::budget::check(crate::budget::product(&[config.max_position_embeddings, head_dim, 4]), || {
            format!("the rotary tables of max_position_embeddings {}", config.max_position_embeddings)
        })?;
        Ok(Cache::new(true, DType::F32, config, &Device::Cpu)?)
    }
}

impl Decoder for Session<'_> {
    fn reset(&mut self) -> Result<()> {
        self.cache = Session::fresh_cache(self.config)?;
        self.position = 0;
        Ok(())
    }

    fn context_size(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = self.model.forward(&input, self.position, &mut self.cache)?;
        self.position += ids.len();
        Ok(logits.squeeze(0)?)
    }
}

impl CausalLm for LlamaModel {
    fn session(&self) -> Result<Box<dyn Decoder + '_>> {
        match &self.weights {
            Weights::Candle { model, config } => {
                Ok(Box::new(Session { model, config, cache: Session::fresh_cache(config)?, position: 0 }))
            }
            Weights::Projected(model) => Ok(Box::new(kv_cache::Session::new(model))),
        }
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer kinds follow transformers' rules, and config.json's layer count is not trusted with an
    /// allocation: the flags of 2^40 layers are refused (53200) before they are asked of the allocator.
    #[test]
    fn sliding_layers_follow_transformers_and_refuse_absurd_counts() {
        let qwen = serde_json::json!({"model_type": "qwen2", "num_hidden_layers": 4, "use_sliding_window": true,
                                      "max_window_layers": 2});
        assert_eq!(sliding_layers(&qwen).unwrap(), [false, false, true, true]);
        let gemma3 = serde_json::json!({"model_type": "gemma3_text", "num_hidden_layers": 6});
        assert_eq!(sliding_layers(&gemma3).unwrap(), [true, true, true, true, true, false]);
        let absurd = serde_json::json!({"model_type": "gemma2", "num_hidden_layers": 1u64 << 40});
        assert_eq!(sliding_layers(&absurd).unwrap_err().kind, ErrorKind::OutOfMemory);
        let absurd = serde_json::json!({"model_type": "mistral", "num_hidden_layers": 1u64 << 40, "sliding_window": 8});
        assert_eq!(context(&absurd, 64).unwrap_err().kind, ErrorKind::OutOfMemory);
    }
}
