//! A differentiable GPT-2 (GPT2LMHeadModel) with transformers' tensor names and Conv1D layout
//! (weights stored (in, out)), so that engine::models::gpt2::network loads what it saves. The LM head is tied to wte.

use crate::error::{AiError, Result};
use crate::kernels::fused::{Heads, Span};
use crate::models::gpt2::network::Gpt2Config;
use crate::train::batch::{rows_of, Batch, Packed};
use crate::train::nn::{attention, conv1d, dropout, layer_norm, linear, Activation, Dropout};
use crate::train::options::ModelSize;
use crate::train::params::{read_config, read_safetensors, ParamBuilder, Params};
use crate::train::Trainable;
use candle_core::Tensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

type Pair = (Tensor, Tensor);

struct Block {
    ln_1: Pair,
    c_attn: Pair,
    attn_proj: Pair,
    ln_2: Pair,
    c_fc: Pair,
    mlp_proj: Pair,
}

pub struct TrainableGpt2 {
    pub config: Value,
    params: Params,
    pub fresh: Vec<String>,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Pair,
    heads: usize,
    eps: f64,
    act: Activation,
    embd_pdrop: f64,
    attn_pdrop: f64,
    resid_pdrop: f64,
}

/// config.json of a new GPT-2 of the given size; `eos` is <|endoftext|>'s id.
pub fn new_config(size: &ModelSize, eos: u32) -> Value {
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": size.vocab_size,
        "n_embd": size.hidden_size,
        "n_layer": size.layers,
        "n_head": size.heads,
        "n_inner": size.intermediate_size,
        "n_positions": size.positions,
        "activation_function": "gelu_new",
        "resid_pdrop": size.dropout,
        "embd_pdrop": size.dropout,
        "attn_pdrop": size.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": true,
        "dtype": "float32",
    })
}

impl TrainableGpt2 {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::build(read_config(dir)?, read_safetensors(&dir.join("model.safetensors"))?, 0)
    }

    pub fn build(mut config: Value, source: HashMap<String, Tensor>, seed: u64) -> Result<Self> {
        let c = Gpt2Config::from_json(&config)?;
        if c.n_head == 0 || !c.n_embd.is_multiple_of(c.n_head) {
            return Err(AiError::corrupt("n_embd is not a multiple of n_head"));
        }
        if config.get("scale_attn_by_inverse_layer_idx").and_then(Value::as_bool) == Some(true)
            || config.get("scale_attn_weights").and_then(Value::as_bool) == Some(false)
        {
            return Err(AiError::invalid("this GPT-2 scales its attention in a way training does not support"));
        }
        // Bare GPT2Model files lack the "transformer." prefix.
        let source: HashMap<String, Tensor> = source
            .into_iter()
            .map(|(n, t)| {
                if n.starts_with("transformer.") || n.starts_with("lm_head.") {
                    (n, t)
                } else {
                    (format!("transformer.{n}"), t)
                }
            })
            .collect();
        let get = |name: &str, default: f64| config.get(name).and_then(Value::as_f64).unwrap_or(default);
        let std = get("initializer_range", 0.02);
        if !(std > 0.0 && std.is_finite()) {
            return Err(AiError::corrupt("config.json: initializer_range must be a positive number"));
        }
        // transformers scales the residual projections' init by 1/sqrt(2 * n_layer).
        let proj_std = std / (2.0 * c.n_layer as f64).sqrt();
        let (h, inner) = (c.n_embd, c.n_inner);
        let mut b = ParamBuilder::new(source, seed);
        let wte = b.embedding("transformer.wte.weight", c.vocab_size, h, std, None)?;
        let wpe = b.embedding("transformer.wpe.weight", c.n_positions, h, std, None)?;
        let conv = |b: &mut ParamBuilder, name: String, d_in: usize, d_out: usize, std: f64| -> Result<Pair> {
            Ok((b.normal(&format!("{name}.weight"), &[d_in, d_out], std)?, b.bias(&format!("{name}.bias"), d_out)?))
        };
        let mut blocks = Vec::new();
        for i in 0..c.n_layer {
            let p = format!("transformer.h.{i}");
            blocks.push(Block {
                ln_1: b.norm(&format!("{p}.ln_1"), h)?,
                c_attn: conv(&mut b, format!("{p}.attn.c_attn"), h, 3 * h, std)?,
                attn_proj: conv(&mut b, format!("{p}.attn.c_proj"), h, h, proj_std)?,
                ln_2: b.norm(&format!("{p}.ln_2"), h)?,
                c_fc: conv(&mut b, format!("{p}.mlp.c_fc"), h, inner, std)?,
                mlp_proj: conv(&mut b, format!("{p}.mlp.c_proj"), inner, h, proj_std)?,
            });
        }
        let ln_f = b.norm("transformer.ln_f", h)?;
        if b.has_source("lm_head.weight") {
            return Err(AiError::invalid("this GPT-2 has an LM head not tied to its embeddings")
                .with_hint("Training supports GPT-2 models whose lm_head is the token embedding matrix."));
        }
        let act = Activation::parse(config.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"))?;
        let (embd_pdrop, attn_pdrop, resid_pdrop) =
            (get("embd_pdrop", 0.1), get("attn_pdrop", 0.1), get("resid_pdrop", 0.1));
        if let Some(obj) = config.as_object_mut() {
            obj.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
        }
        Ok(TrainableGpt2 {
            config,
            fresh: std::mem::take(&mut b.fresh),
            params: b.params,
            wte,
            wpe,
            blocks,
            ln_f,
            heads: c.n_head,
            eps: c.layer_norm_epsilon,
            act,
            embd_pdrop,
            attn_pdrop,
            resid_pdrop,
        })
    }

    /// Hidden states after ln_f of the batch's real tokens, packed: (tokens, hidden).
    pub fn hidden(&self, batch: &Batch, packed: &Packed, mut d: Option<&mut Dropout>) -> Result<Tensor> {
        let len = batch.len;
        if len > self.wpe.dim(0)? {
            return Err(AiError::invalid(format!(
                "a sequence of {len} tokens is longer than the model's {} positions",
                self.wpe.dim(0)?
            )));
        }
        let mut x = dropout(&mut d, &packed.embeddings(&self.wte, &self.wpe, 0)?, self.embd_pdrop)?;
        for block in &self.blocks {
            x = self.block(block, &x, &packed.spans, &mut d)?;
        }
        layer_norm(&x, &self.ln_f, self.eps)
    }

    fn block(&self, b: &Block, x: &Tensor, spans: &[Span], d: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let h = x.dim(1)?;
        let scale = 1.0 / ((h / self.heads) as f64).sqrt();
        let heads = Heads { heads: self.heads, kv_heads: self.heads, scale, causal: true, bias: None };
        let normed = layer_norm(x, &b.ln_1, self.eps)?;
        // c_attn's columns are the query, key and value projections side by side: narrowing the weight (h x 3h)
        // costs less than narrowing its output (a value per token), and the attention reads each in place.
        let project =
            |i: usize| conv1d(&normed, &b.c_attn.0.narrow(1, i * h, h)?, Some(&b.c_attn.1.narrow(0, i * h, h)?));
        let context = attention((&project(0)?, &project(1)?, &project(2)?), &heads, spans, d, self.attn_pdrop)?;
        let a = dropout(d, &conv1d(&context, &b.attn_proj.0, Some(&b.attn_proj.1))?, self.resid_pdrop)?;
        let x = (x + a)?;
        let m = self.act.apply(&conv1d(&layer_norm(&x, &b.ln_2, self.eps)?, &b.c_fc.0, Some(&b.c_fc.1))?)?;
        let m = dropout(d, &conv1d(&m, &b.mlp_proj.0, Some(&b.mlp_proj.1))?, self.resid_pdrop)?;
        Ok((x + m)?)
    }
}

impl Trainable for TrainableGpt2 {
    fn params(&self) -> &Params {
        &self.params
    }

    fn logits(&self, batch: &Batch, d: Option<&mut Dropout>) -> Result<Tensor> {
        let packed = batch.packed()?;
        let hidden = self.hidden(batch, &packed, d)?;
        linear(&rows_of(&hidden, &packed.targets)?, &self.wte, None)
    }

    fn config(&self) -> &Value {
        &self.config
    }
}
