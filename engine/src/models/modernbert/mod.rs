//! ModernBERT (`modernbert`): pre-norm encoder layers without biases, a gated GELU (GeGLU) feed-forward, rotary
//! positions with one base for global layers and another for local ones, local layers that attend within a
//! window, and a final norm, as transformers' ModernBertModel computes them. Attention reads each row's real tokens
//! only, as transformers' unpadded path does; the projections still run over padded rows. The task heads are models::bert's, with ModernBERT's names.

use crate::error::{AiError, Result};
use crate::kernels::fused::{attention, Heads, PairBias};
use crate::kernels::int8::{bytes, Projection};
use crate::models::bert::config::ModelConfig;
use crate::models::bert::{Activation, Batch};
use crate::models::layer_norm_size;
use crate::models::packed::Packed;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde_json::Value;

struct Layer {
    /// None in the first layer, which reads the embeddings' norm.
    attention_norm: Option<LayerNorm>,
    qkv: Projection,
    attention_out: Projection,
    mlp_norm: LayerNorm,
    /// Input and gate halves in one product.
    mlp_in: Projection,
    mlp_out: Projection,
    /// Local (sliding-window) attention, else global.
    local: bool,
}

pub struct ModernBert {
    word_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    heads: usize,
    activation: Activation,
    /// Tokens each side a local layer attends to (local_attention / 2).
    window: usize,
    global_theta: f32,
    local_theta: f32,
}

/// A LayerNorm with or without its bias (norm_bias).
pub fn norm(vb: &VarBuilder, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    let weight = vb.get(dim, "weight")?;
    Ok(match vb.contains_tensor("bias") {
        true => LayerNorm::new(weight, vb.get(dim, "bias")?, eps),
        false => LayerNorm::new_no_bias(weight, eps),
    })
}

/// A linear layer with or without its bias, held in 8 bits where `int8`.
pub fn projection(vb: &VarBuilder, in_dim: usize, out_dim: usize, int8: bool) -> candle_core::Result<Projection> {
    let bias = if vb.contains_tensor("bias") { Some(vb.get(out_dim, "bias")?) } else { None };
    Projection::batched(vb.get((out_dim, in_dim), "weight")?, bias, int8)
}

/// A rope base from transformers 5's rope_parameters or the older global_/local_rope_theta keys.
fn theta(raw: &Value, layer_type: &str, old_key: &str, default: f64) -> f32 {
    raw.pointer(&format!("/rope_parameters/{layer_type}/rope_theta"))
        .or_else(|| raw.get(old_key))
        .and_then(Value::as_f64)
        .unwrap_or(default) as f32
}

impl ModernBert {
    pub fn load(vb: &VarBuilder, config: &ModelConfig, int8: bool) -> Result<Self> {
        let raw = &config.raw;
        let (h, eps, heads) = (config.hidden_size, config.layer_norm_eps, config.heads);
        if heads == 0 || !h.is_multiple_of(heads) || !(h / heads).is_multiple_of(2) {
            return Err(AiError::corrupt("hidden size is not a multiple of an even head size"));
        }
        // layer_types, or every global_attn_every_n_layers-th layer global (transformers' default: every third).
        let every = raw.get("global_attn_every_n_layers").and_then(Value::as_u64).unwrap_or(3).max(1) as usize;
        let types: Option<Vec<&str>> =
            raw.get("layer_types").and_then(Value::as_array).map(|t| t.iter().filter_map(Value::as_str).collect());
        let local = |i: usize| match &types {
            Some(types) => types.get(i) == Some(&"sliding_attention"),
            None => !i.is_multiple_of(every),
        };
        let inter = config.intermediate_size;
        let (qkv_size, mlp_in_size) = match (h.checked_mul(3), inter.checked_mul(2)) {
            (Some(q), Some(m)) => (q, m),
            _ => return Err(AiError::corrupt("config.json: hidden_size or intermediate_size is out of range")),
        };
        let base =
            if vb.contains_tensor("model.embeddings.tok_embeddings.weight") { vb.pp("model") } else { vb.clone() };
        let load = || -> candle_core::Result<ModernBert> {
            let mut layers = Vec::new(); // not sized by config.json, which may be damaged
            for i in 0..config.layers {
                let l = base.pp(format!("layers.{i}"));
                layers.push(Layer {
                    attention_norm: if i == 0 { None } else { Some(norm(&l.pp("attn_norm"), h, eps)?) },
                    qkv: projection(&l.pp("attn.Wqkv"), h, qkv_size, int8)?,
                    attention_out: projection(&l.pp("attn.Wo"), h, h, int8)?,
                    mlp_norm: norm(&l.pp("mlp_norm"), h, eps)?,
                    mlp_in: projection(&l.pp("mlp.Wi"), h, mlp_in_size, int8)?,
                    mlp_out: projection(&l.pp("mlp.Wo"), inter, h, int8)?,
                    local: local(i),
                });
            }
            let table = base.pp("embeddings.tok_embeddings").get((config.vocab_size, h), "weight")?;
            Ok(ModernBert {
                word_embeddings: Embedding::new(if int8 { table.to_dtype(DType::F16)? } else { table }, h),
                embeddings_norm: norm(&base.pp("embeddings.norm"), h, eps)?,
                layers,
                final_norm: norm(&base.pp("final_norm"), h, eps)?,
                heads,
                activation: Activation::Gelu,
                window: raw.get("local_attention").and_then(Value::as_u64).unwrap_or(128) as usize / 2,
                global_theta: theta(raw, "full_attention", "global_rope_theta", 160_000.0),
                local_theta: theta(raw, "sliding_attention", "local_rope_theta", 10_000.0),
            })
        };
        let mut model = load().map_err(|e| {
            AiError::corrupt(format!("the weights do not match config.json: {e}"))
                .with_hint("Check that config.json and the safetensors files come from the same model.")
        })?;
        model.activation = Activation::parse(&config.activation)?;
        Ok(model)
    }

    /// cos and sin, (seq, head size / 2), of the rotary positions 0..seq for base `theta`.
    fn rotary(&self, seq: usize, head_size: usize, theta: f32) -> candle_core::Result<(Tensor, Tensor)> {
        let half = head_size / 2;
        let inverse: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_size as f32)).collect();
        let angles: Vec<f32> = (0..seq).flat_map(|p| inverse.iter().map(move |f| p as f32 * f)).collect();
        let angles = Tensor::from_vec(angles, (seq, half), &Device::Cpu)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Last hidden states, (batch, seq, hidden).
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        crate::timing::forward(|| self.hidden_states(batch))
    }

    fn hidden_states(&self, batch: &Batch) -> Result<Tensor> {
        let seq = batch.ids.dim(1)?;
        let h = self.word_embeddings.embeddings().dim(1)?;
        let d = h / self.heads;
        // pg_ai's attention holds a (sequence, head)'s scores and probabilities, seq² floats each, on every
        // thread at once, beside the window's mask.
        let threads = rayon::current_num_threads();
        let scores = crate::budget::product(&[2 * threads + 1, seq, seq, 4]);
        crate::budget::check(scores, || format!("ModernBERT's attention over rows of {seq} tokens"))?;
        let mut x = self.word_embeddings.forward(&batch.ids)?.to_dtype(DType::F32)?;
        x = self.embeddings_norm.forward(&x)?;
        // The layers read the real tokens only, packed (1, tokens, hidden), as transformers' unpadded path does.
        let Some(rows) = Packed::of(&batch.mask)? else {
            return Ok(self.final_norm.forward(&x)?); // no real token: nothing reads padding's states
        };
        let mut x = rows.pack(&x)?.unsqueeze(0)?;
        let tokens = x.dim(1)?;
        let positions = Tensor::new(rows.positions(), &Device::Cpu)?;
        let outside = (0..seq * seq).map(|i| match (i / seq).abs_diff(i % seq) > self.window {
            true => f32::NEG_INFINITY,
            false => 0.0,
        });
        let scale = 1.0 / (d as f64).sqrt();
        let global = Heads { heads: self.heads, kv_heads: self.heads, scale, causal: false, bias: None };
        let local = Heads { bias: Some(PairBias::new(outside.collect(), 1, seq)?), ..global.clone() };
        // Each token's angles by its position in its row.
        let angles = |theta| -> Result<(Tensor, Tensor)> {
            let (cos, sin) = self.rotary(seq, d, theta)?;
            Ok((cos.index_select(&positions, 0)?, sin.index_select(&positions, 0)?))
        };
        let global_rotary = angles(self.global_theta)?;
        let local_rotary = angles(self.local_theta)?;
        for layer in &self.layers {
            let normed = match &layer.attention_norm {
                Some(n) => n.forward(&x)?,
                None => x.clone(),
            };
            let qkv = layer.qkv.forward(&normed)?.reshape((1, tokens, 3, self.heads, d))?;
            let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.contiguous();
            let ((cos, sin), heads) = if layer.local { (&local_rotary, &local) } else { (&global_rotary, &global) };
            let q = candle_nn::rotary_emb::rope_thd(&part(0)?, cos, sin)?.reshape((tokens, h))?;
            let k = candle_nn::rotary_emb::rope_thd(&part(1)?, cos, sin)?.reshape((tokens, h))?;
            let v = part(2)?.reshape((tokens, h))?;
            let context = attention(&q, &k, &v, heads, rows.spans(), None)?.unsqueeze(0)?;
            x = (x + layer.attention_out.forward(&context)?)?;
            let both = layer.mlp_in.forward(&layer.mlp_norm.forward(&x)?)?;
            let inter = both.dim(D::Minus1)? / 2;
            let gated =
                (self.activation.apply(&both.narrow(D::Minus1, 0, inter)?)? * both.narrow(D::Minus1, inter, inter)?)?;
            x = (x + layer.mlp_out.forward(&gated)?)?;
        }
        rows.unpack(&self.final_norm.forward(&x)?.squeeze(0)?)
    }

    pub fn word_embeddings(&self) -> &Tensor {
        self.word_embeddings.embeddings()
    }

    pub fn parameter_count(&self) -> usize {
        self.count(Projection::parameters, Tensor::elem_count)
    }

    /// Bytes of the weights in memory.
    pub fn weight_bytes(&self) -> usize {
        self.count(Projection::bytes, bytes)
    }

    fn count(&self, of: fn(&Projection) -> usize, tensor: fn(&Tensor) -> usize) -> usize {
        let norm = |n: &LayerNorm| layer_norm_size(n, tensor);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.qkv, &l.attention_out, &l.mlp_in, &l.mlp_out].map(of).iter().sum::<usize>()
                    + l.attention_norm.as_ref().map_or(0, norm)
                    + norm(&l.mlp_norm)
            })
            .sum();
        tensor(self.word_embeddings.embeddings()) + norm(&self.embeddings_norm) + norm(&self.final_norm) + layers
    }
}
