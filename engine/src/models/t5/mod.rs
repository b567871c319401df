//! T5 (v1.0 and v1.1) for translation and summarisation.
//!
//! Written here rather than taken from candle-transformers, whose T5 has no encoder padding mask (so a
//! batch would not answer as single calls do) and gives the decoder bidirectional relative-position
//! buckets, where transformers' decoder uses causal ones.

pub mod train;

use crate::error::{AiError, Result};
use crate::generate::seq2seq::{attend, cached, split_heads, DecoderCache, Memory, Seq2Seq};
use crate::models::bert::Activation;
use crate::models::position_buckets;
use candle_core::{Device, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_feed_forward")]
    pub feed_forward_proj: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_feed_forward() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}

/// The bucket of a relative position (key minus query) under T5's settings.
pub fn relative_bucket(c: &T5Config, relative: i64, bidirectional: bool) -> u32 {
    position_buckets::bucket(
        relative,
        bidirectional,
        c.relative_attention_num_buckets,
        c.relative_attention_max_distance,
    )
}

/// T5's layer norm: scale only, no mean subtraction and no bias.
fn rms_norm(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, eps))
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Only the first layer of each stack has one; the others reuse its bias.
    relative_bias: Option<Embedding>,
}

impl Attention {
    fn load(vb: VarBuilder, c: &T5Config, relative: bool) -> candle_core::Result<Self> {
        let inner = c.num_heads.saturating_mul(c.d_kv);
        let linear = |name: &str, i: usize, o: usize| -> candle_core::Result<Linear> {
            Ok(Linear::new(vb.pp(name).get((o, i), "weight")?, None))
        };
        let relative_bias = if relative {
            let table =
                vb.pp("relative_attention_bias").get((c.relative_attention_num_buckets, c.num_heads), "weight")?;
            Some(Embedding::new(table, c.num_heads))
        } else {
            None
        };
        Ok(Attention {
            q: linear("q", c.d_model, inner)?,
            k: linear("k", c.d_model, inner)?,
            v: linear("v", c.d_model, inner)?,
            o: linear("o", inner, c.d_model)?,
            relative_bias,
        })
    }
}

enum FeedForward {
    Plain { wi: Linear, wo: Linear, act: Activation },
    Gated { wi_0: Linear, wi_1: Linear, wo: Linear, act: Activation },
}

impl FeedForward {
    fn load(vb: VarBuilder, c: &T5Config) -> candle_core::Result<Self> {
        let linear = |name: &str, i: usize, o: usize| -> candle_core::Result<Linear> {
            Ok(Linear::new(vb.pp(name).get((o, i), "weight")?, None))
        };
        // "relu", "gelu", or "gated-" and one of them; transformers runs "gated-gelu" (T5 v1.1) as gelu_new.
        let (gated, name) = match c.feed_forward_proj.strip_prefix("gated-") {
            Some("gelu") => (true, "gelu_new"),
            Some(name) => (true, name),
            None => (false, c.feed_forward_proj.as_str()),
        };
        let act = Activation::parse(name).map_err(|e| candle_core::Error::Msg(e.message))?;
        Ok(if gated {
            FeedForward::Gated {
                wi_0: linear("wi_0", c.d_model, c.d_ff)?,
                wi_1: linear("wi_1", c.d_model, c.d_ff)?,
                wo: linear("wo", c.d_ff, c.d_model)?,
                act,
            }
        } else {
            FeedForward::Plain { wi: linear("wi", c.d_model, c.d_ff)?, wo: linear("wo", c.d_ff, c.d_model)?, act }
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            FeedForward::Plain { wi, wo, act } => wo.forward(&act.apply(&wi.forward(x)?)?),
            FeedForward::Gated { wi_0, wi_1, wo, act } => {
                wo.forward(&(act.apply(&wi_0.forward(x)?)? * wi_1.forward(x)?)?)
            }
        }
    }
}

struct Block {
    self_norm: RmsNorm,
    self_attention: Attention,
    /// Decoder blocks only.
    cross: Option<(RmsNorm, Attention)>,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn load(vb: VarBuilder, c: &T5Config, index: usize, decoder: bool) -> candle_core::Result<Self> {
        let layer = |i: usize| vb.pp(format!("layer.{i}"));
        let cross = if decoder {
            Some((
                rms_norm(layer(1).pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?,
                Attention::load(layer(1).pp("EncDecAttention"), c, false)?,
            ))
        } else {
            None
        };
        let ff = layer(if decoder { 2 } else { 1 });
        Ok(Block {
            self_norm: rms_norm(layer(0).pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?,
            self_attention: Attention::load(layer(0).pp("SelfAttention"), c, index == 0)?,
            cross,
            ff_norm: rms_norm(ff.pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?,
            ff: FeedForward::load(ff.pp("DenseReluDense"), c)?,
        })
    }
}

pub struct T5 {
    pub config: T5Config,
    shared: Embedding,
    encoder: Vec<Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_norm: RmsNorm,
    /// None: tied to the shared embeddings (and scaled by d_model^-0.5 first, as transformers does).
    lm_head: Option<Linear>,
}

impl T5 {
    pub fn load(vb: &VarBuilder, config: T5Config) -> Result<Self> {
        let c = &config;
        if c.num_heads == 0 || c.relative_attention_num_buckets < 2 {
            return Err(AiError::corrupt("config.json: num_heads and relative_attention_num_buckets must be set"));
        }
        let load = || -> candle_core::Result<T5> {
            let stack = |name: &str, layers: usize, decoder: bool| -> candle_core::Result<Vec<Block>> {
                (0..layers).map(|i| Block::load(vb.pp(format!("{name}.block.{i}")), c, i, decoder)).collect()
            };
            let lm_head = if c.tie_word_embeddings {
                None
            } else {
                Some(Linear::new(vb.pp("lm_head").get((c.vocab_size, c.d_model), "weight")?, None))
            };
            Ok(T5 {
                shared: Embedding::new(vb.pp("shared").get((c.vocab_size, c.d_model), "weight")?, c.d_model),
                encoder: stack("encoder", c.num_layers, false)?,
                encoder_norm: rms_norm(vb.pp("encoder.final_layer_norm"), c.d_model, c.layer_norm_epsilon)?,
                decoder: stack("decoder", c.num_decoder_layers.unwrap_or(c.num_layers), true)?,
                decoder_norm: rms_norm(vb.pp("decoder.final_layer_norm"), c.d_model, c.layer_norm_epsilon)?,
                lm_head,
                config: config.clone(),
            })
        };
        load().map_err(|e| AiError::corrupt(format!("the weights do not match config.json: {e}")))
    }

    pub fn parameter_count(&self) -> usize {
        let attention = |a: &Attention| {
            [&a.q, &a.k, &a.v, &a.o].iter().map(|l| l.weight().elem_count()).sum::<usize>()
                + a.relative_bias.as_ref().map_or(0, |e| e.embeddings().elem_count())
        };
        let ff = |f: &FeedForward| match f {
            FeedForward::Plain { wi, wo, .. } => wi.weight().elem_count() + wo.weight().elem_count(),
            FeedForward::Gated { wi_0, wi_1, wo, .. } => {
                wi_0.weight().elem_count() + wi_1.weight().elem_count() + wo.weight().elem_count()
            }
        };
        let d = self.config.d_model;
        let block = |b: &Block| {
            attention(&b.self_attention) + ff(&b.ff) + 2 * d + b.cross.as_ref().map_or(0, |(_, a)| attention(a) + d)
        };
        self.shared.embeddings().elem_count()
            + self.encoder.iter().chain(&self.decoder).map(block).sum::<usize>()
            + 2 * d
            + self.lm_head.as_ref().map_or(0, |l| l.weight().elem_count())
    }

    /// The relative-position bias (1, heads, queries, keys) for queries at `first_query..` over keys `0..keys`.
    fn position_bias(
        &self,
        table: &Embedding,
        first_query: usize,
        queries: usize,
        keys: usize,
        bidirectional: bool,
    ) -> Result<Tensor> {
        let buckets: Vec<u32> = (first_query..first_query + queries)
            .flat_map(|q| (0..keys).map(move |k| k as i64 - q as i64))
            .map(|relative| relative_bucket(&self.config, relative, bidirectional))
            .collect();
        let buckets = Tensor::from_vec(buckets, (queries, keys), &Device::Cpu)?;
        Ok(table.forward(&buckets)?.permute((2, 0, 1))?.unsqueeze(0)?)
    }

    fn bias_table(blocks: &[Block]) -> Result<&Embedding> {
        blocks
            .first()
            .and_then(|b| b.self_attention.relative_bias.as_ref())
            .ok_or_else(|| AiError::corrupt("the first T5 block has no relative_attention_bias"))
    }
}

fn self_attention(a: &Attention, x: &Tensor, heads: usize, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (q, k, v) = (
        split_heads(&a.q.forward(x)?, heads)?,
        split_heads(&a.k.forward(x)?, heads)?,
        split_heads(&a.v.forward(x)?, heads)?,
    );
    a.o.forward(&attend(&q, &k, &v, 1.0, Some(bias))?)
}

impl Seq2Seq for T5 {
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let heads = self.config.num_heads;
        let len = ids.dim(1)?;
        let memory_mask = crate::generate::seq2seq::additive_mask(mask)?;
        let bias =
            self.position_bias(Self::bias_table(&self.encoder)?, 0, len, len, true)?.broadcast_add(&memory_mask)?;
        let mut x = self.shared.forward(ids)?;
        for b in &self.encoder {
            x = (&x + self_attention(&b.self_attention, &b.self_norm.forward(&x)?, heads, &bias)?)?;
            x = (&x + b.ff.forward(&b.ff_norm.forward(&x)?)?)?;
        }
        Ok(self.encoder_norm.forward(&x)?)
    }

    fn decode_step(&self, tokens: &Tensor, memory: &Memory, cache: &mut DecoderCache) -> Result<Tensor> {
        let heads = self.config.num_heads;
        let past = cache.len;
        let self_bias = self.position_bias(Self::bias_table(&self.decoder)?, past, 1, past + 1, false)?;
        let mut x = self.shared.forward(tokens)?;
        for (b, layer) in self.decoder.iter().zip(cache.layers.iter_mut()) {
            let a = &b.self_attention;
            let h = b.self_norm.forward(&x)?;
            let (k, v) = cached(
                &mut layer.self_kv,
                split_heads(&a.k.forward(&h)?, heads)?,
                split_heads(&a.v.forward(&h)?, heads)?,
            )?;
            let q = split_heads(&a.q.forward(&h)?, heads)?;
            x = (&x + a.o.forward(&attend(&q, &k, &v, 1.0, Some(&self_bias))?)?)?;
            if let Some((norm, a)) = &b.cross {
                if layer.cross_kv.is_none() {
                    let states = &memory.states;
                    layer.cross_kv =
                        Some((split_heads(&a.k.forward(states)?, heads)?, split_heads(&a.v.forward(states)?, heads)?));
                }
                let (k, v) = layer.cross_kv.as_ref().expect("set above");
                let q = split_heads(&a.q.forward(&norm.forward(&x)?)?, heads)?;
                x = (&x + a.o.forward(&attend(&q, k, v, 1.0, Some(&memory.mask))?)?)?;
            }
            x = (&x + b.ff.forward(&b.ff_norm.forward(&x)?)?)?;
        }
        cache.len += 1;
        let x = self.decoder_norm.forward(&x)?.squeeze(1)?;
        Ok(match &self.lm_head {
            Some(head) => head.forward(&x)?,
            None => (x * (self.config.d_model as f64).powf(-0.5))?.matmul(&self.shared.embeddings().t()?)?,
        })
    }

    fn layers(&self) -> usize {
        self.decoder.len()
    }
}
