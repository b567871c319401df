//! A differentiable T5 (T5ForConditionalGeneration, v1.0 and v1.1) with transformers' tensor names, so that
//! engine::models::t5 loads what it saves: RMS norms written out (candle's fused one has no backward pass), relative
//! position buckets shared with inference, and the loss on the decoder side only.

use crate::error::{AiError, Result};
use crate::kernels::fused::add_bias;
use crate::models::t5::{relative_bucket, T5Config};
use crate::train::batch::Batch;
use crate::train::nn::{attention_probs, causal_mask, dropout, linear, rms_norm, Activation, Dropout};
use crate::train::options::ModelSize;
use crate::train::params::{read_config, read_safetensors, ParamBuilder, Params};
use crate::train::Trainable;
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

struct Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
}

enum FeedForward {
    Plain { wi: Tensor, wo: Tensor },
    Gated { wi_0: Tensor, wi_1: Tensor, wo: Tensor },
}

struct Block {
    self_norm: Tensor,
    self_attention: Attention,
    /// Decoder blocks only: the norm before cross-attention, and the cross-attention.
    cross: Option<(Tensor, Attention)>,
    ff_norm: Tensor,
    ff: FeedForward,
}

pub struct TrainableT5 {
    pub config: Value,
    parsed: T5Config,
    params: Params,
    pub fresh: Vec<String>,
    shared: Tensor,
    encoder: Vec<Block>,
    encoder_bias: Tensor,
    encoder_norm: Tensor,
    decoder: Vec<Block>,
    decoder_bias: Tensor,
    decoder_norm: Tensor,
    /// None: tied to `shared`.
    lm_head: Option<Tensor>,
    act: Activation,
    dropout_rate: f64,
}

/// config.json of a new T5 (v1.0 layout: ReLU feed-forward, LM head tied to the embeddings) of the given size,
/// with <pad> 0 as the decoder's start token and </s> 1 ending every sequence, as T5's tokenizers number them.
pub fn new_config(size: &ModelSize, source_prefix: &str) -> Value {
    json!({
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": size.vocab_size,
        "d_model": size.hidden_size,
        "d_kv": size.hidden_size / size.heads,
        "d_ff": size.intermediate_size,
        "num_layers": size.layers,
        "num_decoder_layers": size.layers,
        "num_heads": size.heads,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": size.dropout,
        "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": true,
        "is_encoder_decoder": true,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "n_positions": size.positions,
        "task_specific_params": {"translation": {"prefix": source_prefix}},
        "dtype": "float32",
    })
}

/// (batch, len, heads * d_kv) -> (batch, heads, len, d_kv)
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, len, inner) = x.dims3()?;
    Ok(x.reshape((b, len, heads, inner / heads))?.transpose(1, 2)?.contiguous()?)
}

impl TrainableT5 {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::build(read_config(dir)?, read_safetensors(&dir.join("model.safetensors"))?, 0)
    }

    /// Builds the model from `config`, taking tensors from `source` where it has them and initialising the
    /// rest (seeded) with the spreads transformers' T5 `_init_weights` uses.
    pub fn build(mut config: Value, mut source: HashMap<String, Tensor>, seed: u64) -> Result<Self> {
        let c: T5Config = serde_json::from_value(config.clone())
            .map_err(|e| AiError::corrupt(format!("config.json is not a T5 config: {e}")))?;
        if c.num_heads == 0 || c.d_kv == 0 || c.relative_attention_num_buckets < 4 {
            return Err(AiError::corrupt(
                "config.json: num_heads, d_kv and relative_attention_num_buckets must be set",
            ));
        }
        let (gated, act_name) = match c.feed_forward_proj.strip_prefix("gated-") {
            Some("gelu") => (true, "gelu_new"),
            Some(name) => (true, name),
            None => (false, c.feed_forward_proj.as_str()),
        };
        let act = Activation::parse(act_name)?;
        // The copies save_pretrained may write of the tied embeddings.
        for alias in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
            source.remove(alias);
        }
        if c.tie_word_embeddings {
            source.remove("lm_head.weight");
        }
        let factor = config.get("initializer_factor").and_then(Value::as_f64).unwrap_or(1.0);
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(AiError::corrupt("config.json: initializer_factor must be a positive number"));
        }
        let (d, inner, heads) = (c.d_model, c.num_heads.saturating_mul(c.d_kv), c.num_heads);
        let spread = |fan: usize| factor * (fan as f64).powf(-0.5);
        let mut b = ParamBuilder::new(source, seed);
        let shared = b.normal("shared.weight", &[c.vocab_size, d], factor)?;
        let attention = |b: &mut ParamBuilder, p: &str| -> Result<Attention> {
            Ok(Attention {
                q: b.normal(&format!("{p}.q.weight"), &[inner, d], spread(d.saturating_mul(c.d_kv)))?,
                k: b.normal(&format!("{p}.k.weight"), &[inner, d], spread(d))?,
                v: b.normal(&format!("{p}.v.weight"), &[inner, d], spread(d))?,
                o: b.normal(&format!("{p}.o.weight"), &[d, inner], spread(inner))?,
            })
        };
        let feed_forward = |b: &mut ParamBuilder, p: &str| -> Result<FeedForward> {
            let wo = |b: &mut ParamBuilder| b.normal(&format!("{p}.wo.weight"), &[d, c.d_ff], spread(c.d_ff));
            Ok(if gated {
                FeedForward::Gated {
                    wi_0: b.normal(&format!("{p}.wi_0.weight"), &[c.d_ff, d], spread(d))?,
                    wi_1: b.normal(&format!("{p}.wi_1.weight"), &[c.d_ff, d], spread(d))?,
                    wo: wo(b)?,
                }
            } else {
                FeedForward::Plain { wi: b.normal(&format!("{p}.wi.weight"), &[c.d_ff, d], spread(d))?, wo: wo(b)? }
            })
        };
        // transformers' order: a block's self-attention (with the stack's position table in block 0), its norm,
        // then cross-attention and its norm (decoder), then the feed-forward and its norm.
        let stack = |b: &mut ParamBuilder, name: &str, layers: usize, decoder: bool| -> Result<(Vec<Block>, Tensor)> {
            // No capacity from config.json: a damaged layer count must fail at the first missing tensor.
            let mut blocks = Vec::new();
            let mut table = None;
            for i in 0..layers {
                let p = format!("{name}.block.{i}.layer");
                let self_attention = attention(b, &format!("{p}.0.SelfAttention"))?;
                if i == 0 {
                    let table_name = format!("{p}.0.SelfAttention.relative_attention_bias.weight");
                    table =
                        Some(b.normal_undecayed(&table_name, &[c.relative_attention_num_buckets, heads], spread(d))?);
                }
                let self_norm = b.scale(&format!("{p}.0.layer_norm.weight"), d)?;
                let cross = if decoder {
                    let a = attention(b, &format!("{p}.1.EncDecAttention"))?;
                    Some((b.scale(&format!("{p}.1.layer_norm.weight"), d)?, a))
                } else {
                    None
                };
                let f = if decoder { 2 } else { 1 };
                let ff = feed_forward(b, &format!("{p}.{f}.DenseReluDense"))?;
                let ff_norm = b.scale(&format!("{p}.{f}.layer_norm.weight"), d)?;
                blocks.push(Block { self_norm, self_attention, cross, ff_norm, ff });
            }
            let table = table.ok_or_else(|| AiError::corrupt(format!("config.json: the {name} has no layers")))?;
            Ok((blocks, table))
        };
        let (encoder, encoder_bias) = stack(&mut b, "encoder", c.num_layers, false)?;
        let encoder_norm = b.scale("encoder.final_layer_norm.weight", d)?;
        let (decoder, decoder_bias) = stack(&mut b, "decoder", c.num_decoder_layers.unwrap_or(c.num_layers), true)?;
        let decoder_norm = b.scale("decoder.final_layer_norm.weight", d)?;
        let lm_head =
            if c.tie_word_embeddings { None } else { Some(b.normal("lm_head.weight", &[c.vocab_size, d], factor)?) };
        let dropout_rate = config.get("dropout_rate").and_then(Value::as_f64).unwrap_or(0.1);
        if let Some(obj) = config.as_object_mut() {
            obj.insert("architectures".into(), json!(["T5ForConditionalGeneration"]));
        }
        Ok(TrainableT5 {
            config,
            parsed: c,
            fresh: std::mem::take(&mut b.fresh),
            params: b.params,
            shared,
            encoder,
            encoder_bias,
            encoder_norm,
            decoder,
            decoder_bias,
            decoder_norm,
            lm_head,
            act,
            dropout_rate,
        })
    }

    /// The relative-position bias (1, heads, queries, keys) from a stack's table.
    fn position_bias(&self, table: &Tensor, queries: usize, keys: usize, bidirectional: bool) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..queries)
            .flat_map(|q| (0..keys).map(move |k| k as i64 - q as i64))
            .map(|relative| relative_bucket(&self.parsed, relative, bidirectional))
            .collect();
        let buckets = Tensor::from_vec(buckets, queries * keys, &Device::Cpu)?;
        let heads = table.dim(1)?;
        Ok(table.index_select(&buckets, 0)?.reshape((queries, keys, heads))?.permute((2, 0, 1))?)
    }

    /// T5 attention: no 1/sqrt(d) scaling (folded into the initialisation). `position` is the learnt relative
    /// position bias (heads, queries, keys), self-attention only; `mask` the constant padding or causal mask.
    fn attend(
        &self,
        a: &Attention,
        x: &Tensor,
        memory: &Tensor,
        position: Option<&Tensor>,
        mask: &Tensor,
        d: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let heads = self.parsed.num_heads;
        let (q, k, v) = (
            split_heads(&linear(x, &a.q, None)?, heads)?,
            split_heads(&linear(memory, &a.k, None)?, heads)?,
            split_heads(&linear(memory, &a.v, None)?, heads)?,
        );
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(position) = position {
            scores = add_bias(&scores, position)?;
        }
        let probs = dropout(d, &attention_probs(&scores, 1.0, Some(mask))?, self.dropout_rate)?;
        let (b, _, len, _) = probs.dims4()?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, heads * self.parsed.d_kv))?;
        linear(&context, &a.o, None)
    }

    fn feed_forward(&self, ff: &FeedForward, x: &Tensor, d: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let (hidden, wo) = match ff {
            FeedForward::Plain { wi, wo } => (self.act.apply(&linear(x, wi, None)?)?, wo),
            FeedForward::Gated { wi_0, wi_1, wo } => {
                ((self.act.apply(&linear(x, wi_0, None)?)? * linear(x, wi_1, None)?)?, wo)
            }
        };
        linear(&dropout(d, &hidden, self.dropout_rate)?, wo, None)
    }

    /// The decoder's last hidden states, (rows, decoder len, d_model).
    fn decoded(&self, batch: &Batch, d: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let decoder =
            batch.decoder.as_ref().ok_or_else(|| AiError::internal("a sequence-to-sequence batch without targets"))?;
        let (rows, len, out_len) = (batch.rows, batch.len, decoder.len);
        let (eps, p, dim) = (self.parsed.layer_norm_epsilon, self.dropout_rate, self.parsed.d_model);
        let embed = |ids: &[u32], len: usize| -> Result<Tensor> {
            let ids = Tensor::from_vec(ids.to_vec(), rows * len, &Device::Cpu)?;
            Ok(self.shared.index_select(&ids, 0)?.reshape((rows, len, dim))?)
        };
        let padding = batch.padding_bias()?;

        let position = self.position_bias(&self.encoder_bias, len, len, true)?;
        let mut x = dropout(d, &embed(&batch.ids, len)?, p)?;
        for b in &self.encoder {
            let h = rms_norm(&x, &b.self_norm, eps)?;
            let a = self.attend(&b.self_attention, &h, &h, Some(&position), &padding, d)?;
            x = (&x + dropout(d, &a, p)?)?;
            let f = self.feed_forward(&b.ff, &rms_norm(&x, &b.ff_norm, eps)?, d)?;
            x = (&x + dropout(d, &f, p)?)?;
        }
        let memory = dropout(d, &rms_norm(&x, &self.encoder_norm, eps)?, p)?;

        let causal = causal_mask(out_len)?;
        let self_position = self.position_bias(&self.decoder_bias, out_len, out_len, false)?;
        let mut y = dropout(d, &embed(&decoder.ids, out_len)?, p)?;
        for b in &self.decoder {
            let h = rms_norm(&y, &b.self_norm, eps)?;
            let a = self.attend(&b.self_attention, &h, &h, Some(&self_position), &causal, d)?;
            y = (&y + dropout(d, &a, p)?)?;
            if let Some((norm, cross)) = &b.cross {
                // Cross-attention has no position bias, only the sources' padding.
                let a = self.attend(cross, &rms_norm(&y, norm, eps)?, &memory, None, &padding, d)?;
                y = (&y + dropout(d, &a, p)?)?;
            }
            let f = self.feed_forward(&b.ff, &rms_norm(&y, &b.ff_norm, eps)?, d)?;
            y = (&y + dropout(d, &f, p)?)?;
        }
        dropout(d, &rms_norm(&y, &self.decoder_norm, eps)?, p)
    }
}

impl Trainable for TrainableT5 {
    fn params(&self) -> &Params {
        &self.params
    }

    fn logits(&self, batch: &Batch, mut d: Option<&mut Dropout>) -> Result<Tensor> {
        let x = batch.at_targets(&self.decoded(batch, &mut d)?)?;
        let dim = x.dim(1)?;
        match &self.lm_head {
            Some(head) => linear(&x, head, None),
            // A tied head sees the states scaled by d_model^-0.5, as transformers does.
            None => linear(&(x * (dim as f64).powf(-0.5))?, &self.shared, None),
        }
    }

    fn config(&self) -> &Value {
        &self.config
    }

    fn decoder_start(&self) -> Option<u32> {
        let start = self.config.get("decoder_start_token_id").or_else(|| self.config.get("pad_token_id"));
        Some(start.and_then(Value::as_u64).unwrap_or(0) as u32)
    }
}
