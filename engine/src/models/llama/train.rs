//! A differentiable Llama (LlamaForCausalLM: RMS norms, rotary positions, grouped-query attention, SwiGLU), and Qwen2
//! and Qwen3 (Qwen2ForCausalLM: query, key and value biases; Qwen3ForCausalLM: norms of each query and key head, a
//! head_dim of its own), with transformers' tensor names, so that engine::models::llama loads what it saves. Rotary
//! positions and norms are written out: candle's fused rope and rms_norm kernels have no backward pass.

use crate::error::{AiError, Result};
use crate::train::batch::Batch;
use crate::train::nn::{attention_probs, causal_mask, dropout, linear, rms_norm, Dropout};
use crate::train::params::{read_config, read_safetensors, ParamBuilder, Params};
use crate::train::Trainable;
use candle_core::{Device, Tensor, D};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

struct Layer {
    input_norm: Tensor,
    q: (Tensor, Option<Tensor>),
    k: (Tensor, Option<Tensor>),
    v: (Tensor, Option<Tensor>),
    o: (Tensor, Option<Tensor>),
    /// Qwen3's norms of each query and key head.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct TrainableLlama {
    pub config: Value,
    params: Params,
    pub fresh: Vec<String>,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// None: tied to `embed`.
    lm_head: Option<Tensor>,
    heads: usize,
    /// Which key/value head each query head reads (grouped-query attention).
    kv_of_head: Tensor,
    head_dim: usize,
    /// Rotary frequencies, one per pair of dimensions.
    inv_freq: Vec<f32>,
    positions: usize,
    eps: f64,
    attention_dropout: f64,
}

fn field(config: &Value, name: &str) -> Option<f64> {
    config.get(name).and_then(Value::as_f64)
}

/// The rotary settings: transformers 5 writes them under `rope_parameters`, earlier versions at the top level
/// (`rope_theta`, `rope_scaling`).
fn rope(config: &Value) -> Value {
    let mut rope = config.get("rope_parameters").cloned().or_else(|| config.get("rope_scaling").cloned());
    let rope = rope.get_or_insert_with(|| json!({}));
    if rope.get("rope_theta").is_none() {
        rope["rope_theta"] = json!(field(config, "rope_theta").unwrap_or(10_000.0));
    }
    rope.clone()
}

/// Rotary frequencies as transformers computes them: the default, or Llama 3's scaling of long wavelengths.
fn inverse_frequencies(rope: &Value, head_dim: usize) -> Result<Vec<f32>> {
    let theta = rope["rope_theta"].as_f64().unwrap_or(10_000.0) as f32;
    let base: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32)).collect();
    match rope.get("rope_type").or_else(|| rope.get("type")).and_then(Value::as_str).unwrap_or("default") {
        "default" => Ok(base),
        "llama3" => {
            let get = |k: &str| rope.get(k).and_then(Value::as_f64).map(|v| v as f32);
            let (Some(factor), Some(low), Some(high), Some(original)) = (
                get("factor"),
                get("low_freq_factor"),
                get("high_freq_factor"),
                get("original_max_position_embeddings"),
            ) else {
                return Err(AiError::corrupt("config.json: llama3 rope scaling lacks one of its four settings"));
            };
            let (low_wavelen, high_wavelen) = (original / low, original / high);
            Ok(base
                .into_iter()
                .map(|freq| {
                    let wavelen = 2.0 * std::f32::consts::PI / freq;
                    if wavelen < high_wavelen {
                        freq
                    } else if wavelen > low_wavelen {
                        freq / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                })
                .collect())
        }
        other => Err(AiError::wrong_task(format!("rope scaling \"{other}\" cannot be trained here"))
            .with_hint("Training supports Llama models with default or llama3 rotary positions.")),
    }
}

impl TrainableLlama {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::build(read_config(dir)?, read_safetensors(&dir.join("model.safetensors"))?, 0)
    }

    /// Builds the model from `config`, taking tensors from `source` where it has them and initialising the
    /// rest (seeded) as transformers does: normal(0, initializer_range), norms at one.
    pub fn build(mut config: Value, mut source: HashMap<String, Tensor>, seed: u64) -> Result<Self> {
        let int = |name: &str| config.get(name).and_then(Value::as_u64).map(|v| v as usize);
        let (Some(vocab), Some(hidden), Some(layers), Some(heads), Some(inner)) = (
            int("vocab_size"),
            int("hidden_size"),
            int("num_hidden_layers"),
            int("num_attention_heads"),
            int("intermediate_size"),
        ) else {
            return Err(AiError::corrupt("config.json is not a Llama configuration"));
        };
        let kv_heads = int("num_key_value_heads").unwrap_or(heads);
        let head_dim = match int("head_dim") {
            Some(d) => d,
            None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
            None => 0,
        };
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || head_dim == 0 || head_dim % 2 == 1 {
            return Err(AiError::corrupt(
                "config.json: hidden_size, num_attention_heads, num_key_value_heads and head_dim disagree",
            ));
        }
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("llama").to_string();
        let act = config.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(AiError::wrong_task(format!("activation \"{act}\" cannot be trained here"))
                .with_hint("Training supports Llama models with silu."));
        }
        let tied = config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
        if tied {
            source.remove("lm_head.weight");
        }
        let std = field(&config, "initializer_range").unwrap_or(0.02);
        if !(std > 0.0 && std.is_finite()) {
            return Err(AiError::corrupt("config.json: initializer_range must be a positive number"));
        }
        let bias = |name: &str| config.get(name).and_then(Value::as_bool).unwrap_or(false);
        let (attention_bias, mlp_bias) = (bias("attention_bias"), bias("mlp_bias"));
        if mlp_bias {
            return Err(AiError::wrong_task("a Llama with biases in its MLP cannot be trained here"));
        }
        // Qwen2's query, key and value projections always have biases, its output projection none.
        let (qkv_bias, out_bias) = match model_type.as_str() {
            "qwen2" => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let qk_norm = model_type == "qwen3";
        let mut b = ParamBuilder::new(source, seed);
        let embed = b.normal("model.embed_tokens.weight", &[vocab, hidden], std)?;
        let proj = |b: &mut ParamBuilder,
                    name: String,
                    d_in: usize,
                    d_out: usize,
                    bias: bool|
         -> Result<(Tensor, Option<Tensor>)> {
            let w = b.normal(&format!("{name}.weight"), &[d_out, d_in], std)?;
            let bias = if bias { Some(b.bias(&format!("{name}.bias"), d_out)?) } else { None };
            Ok((w, bias))
        };
        let mut stack = Vec::new();
        for i in 0..layers {
            let p = format!("model.layers.{i}");
            let (q, kv) = (heads * head_dim, kv_heads * head_dim);
            let head_norm = |b: &mut ParamBuilder, name: &str| -> Result<Option<Tensor>> {
                qk_norm.then(|| b.scale(&format!("{p}.self_attn.{name}.weight"), head_dim)).transpose()
            };
            stack.push(Layer {
                q: proj(&mut b, format!("{p}.self_attn.q_proj"), hidden, q, qkv_bias)?,
                k: proj(&mut b, format!("{p}.self_attn.k_proj"), hidden, kv, qkv_bias)?,
                v: proj(&mut b, format!("{p}.self_attn.v_proj"), hidden, kv, qkv_bias)?,
                o: proj(&mut b, format!("{p}.self_attn.o_proj"), q, hidden, out_bias)?,
                q_norm: head_norm(&mut b, "q_norm")?,
                k_norm: head_norm(&mut b, "k_norm")?,
                gate: b.normal(&format!("{p}.mlp.gate_proj.weight"), &[inner, hidden], std)?,
                up: b.normal(&format!("{p}.mlp.up_proj.weight"), &[inner, hidden], std)?,
                down: b.normal(&format!("{p}.mlp.down_proj.weight"), &[hidden, inner], std)?,
                input_norm: b.scale(&format!("{p}.input_layernorm.weight"), hidden)?,
                post_norm: b.scale(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
            });
        }
        let norm = b.scale("model.norm.weight", hidden)?;
        let lm_head = if tied { None } else { Some(b.normal("lm_head.weight", &[vocab, hidden], std)?) };
        let group = heads / kv_heads;
        let kv_of_head: Vec<u32> = (0..heads).map(|h| (h / group) as u32).collect();
        let inv_freq = inverse_frequencies(&rope(&config), head_dim)?;
        let positions = super::context(&config, int("max_position_embeddings").unwrap_or(2048))?;
        let architecture = match model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        if let Some(obj) = config.as_object_mut() {
            obj.insert("architectures".into(), json!([architecture]));
        }
        Ok(TrainableLlama {
            fresh: std::mem::take(&mut b.fresh),
            params: b.params,
            embed,
            layers: stack,
            norm,
            lm_head,
            heads,
            kv_of_head: Tensor::from_vec(kv_of_head, heads, &Device::Cpu)?,
            head_dim,
            inv_freq,
            positions,
            eps: field(&config, "rms_norm_eps").unwrap_or(1e-6),
            attention_dropout: field(&config, "attention_dropout").unwrap_or(0.0),
            config,
        })
    }

    /// cos and sin of every position's angles, (len, head_dim / 2) each.
    fn rotary(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let angles: Vec<f32> = (0..len).flat_map(|t| self.inv_freq.iter().map(move |f| t as f32 * f)).collect();
        let angles = Tensor::from_vec(angles, (len, half), &Device::Cpu)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// transformers' rotate-half rotary embedding on (batch, heads, len, head_dim).
    fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
        let first = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let second = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Ok(Tensor::cat(&[first, second], D::Minus1)?)
    }

    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        rotary: &(Tensor, Tensor),
        mask: &Tensor,
        d: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let heads = |p: &(Tensor, Option<Tensor>), n: usize| -> Result<Tensor> {
            Ok(linear(x, &p.0, p.1.as_ref())?.reshape((b, len, n, self.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let normed = |x: Tensor, norm: &Option<Tensor>| match norm {
            Some(norm) => rms_norm(&x, norm, self.eps),
            None => Ok(x),
        };
        let kv_heads = l.k.0.dim(0)? / self.head_dim;
        let q = Self::rotate(&normed(heads(&l.q, self.heads)?, &l.q_norm)?, &rotary.0, &rotary.1)?;
        // Each query head reads its group's key and value head.
        let k = normed(heads(&l.k, kv_heads)?, &l.k_norm)?;
        let k = Self::rotate(&k, &rotary.0, &rotary.1)?.index_select(&self.kv_of_head, 1)?;
        let v = heads(&l.v, kv_heads)?.index_select(&self.kv_of_head, 1)?;
        let scores = q.matmul(&k.t()?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let probs = dropout(d, &attention_probs(&scores, scale, Some(mask))?, self.attention_dropout)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, self.heads * self.head_dim))?;
        linear(&context, &l.o.0, l.o.1.as_ref())
    }

    /// Hidden states after the final norm, (rows, len, hidden).
    pub fn hidden(&self, batch: &Batch, mut d: Option<&mut Dropout>) -> Result<Tensor> {
        let (rows, len) = (batch.rows, batch.len);
        if len > self.positions {
            return Err(AiError::invalid(format!(
                "a sequence of {len} tokens is longer than the model's {} positions",
                self.positions
            )));
        }
        let hidden = self.embed.dim(1)?;
        let ids = Tensor::from_vec(batch.ids.clone(), rows * len, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?.reshape((rows, len, hidden))?;
        let (cos, sin) = self.rotary(len)?;
        let rotary = (cos.reshape((1, 1, len, self.inv_freq.len()))?, sin.reshape((1, 1, len, self.inv_freq.len()))?);
        // Causal mask only: padding is on the right, so no real token ever attends to it.
        let mask = causal_mask(len)?;
        for l in &self.layers {
            let a = self.attention(l, &rms_norm(&x, &l.input_norm, self.eps)?, &rotary, &mask, &mut d)?;
            x = (x + a)?;
            let h = rms_norm(&x, &l.post_norm, self.eps)?;
            let m = linear(&(linear(&h, &l.gate, None)?.silu()? * linear(&h, &l.up, None)?)?, &l.down, None)?;
            x = (x + m)?;
        }
        rms_norm(&x, &self.norm, self.eps)
    }
}

impl Trainable for TrainableLlama {
    fn params(&self) -> &Params {
        &self.params
    }

    fn logits(&self, batch: &Batch, d: Option<&mut Dropout>) -> Result<Tensor> {
        let x = batch.at_targets(&self.hidden(batch, d)?)?;
        linear(&x, self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }

    fn config(&self) -> &Value {
        &self.config
    }
}
