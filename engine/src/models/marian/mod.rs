//! The post-norm encoder-decoder of Marian (opus-mt translation models: sinusoidal positions) and BART
//! (summarisers such as bart-large-cnn and distilbart-cnn: learned positions numbered from 2, and a layer norm on
//! the embeddings of both stacks). The two differ in nothing else that inference sees.
//!
//! Written here rather than taken from candle-transformers, whose Marian has no encoder padding mask and
//! caches the encoder's keys in a way that must be reset by hand between calls (and which has no BART).

pub mod classifier;

use crate::error::{AiError, Result};
use crate::generate::seq2seq::{additive_mask, attend, cached, split_heads, DecoderCache, Memory, Seq2Seq};
use crate::models::bert::Activation;
use candle_core::{Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct MarianConfig {
    pub vocab_size: usize,
    pub decoder_vocab_size: Option<usize>,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "default_true")]
    pub share_encoder_decoder_embeddings: bool,
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, d: usize, heads: usize) -> candle_core::Result<Self> {
        let linear = |name: &str| candle_nn::linear(d, d, vb.pp(name));
        Ok(Attention {
            q: linear("q_proj")?,
            k: linear("k_proj")?,
            v: linear("v_proj")?,
            out: linear("out_proj")?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    fn heads(&self, linear: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        split_heads(&linear.forward(x)?, self.heads)
    }

    fn parameter_count(&self) -> usize {
        [&self.q, &self.k, &self.v, &self.out].iter().map(|l| linear_size(l)).sum()
    }
}

fn linear_size(l: &Linear) -> usize {
    l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count)
}

fn norm_size(n: &LayerNorm) -> usize {
    n.weight().elem_count() * 2
}

struct Layer {
    self_attention: Attention,
    self_norm: LayerNorm,
    /// Decoder layers only.
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, d: usize, heads: usize, ffn: usize, decoder: bool) -> candle_core::Result<Self> {
        let norm = |name: &str| candle_nn::layer_norm(d, 1e-5, vb.pp(name));
        let cross = if decoder {
            Some((Attention::load(vb.pp("encoder_attn"), d, heads)?, norm("encoder_attn_layer_norm")?))
        } else {
            None
        };
        Ok(Layer {
            self_attention: Attention::load(vb.pp("self_attn"), d, heads)?,
            self_norm: norm("self_attn_layer_norm")?,
            cross,
            fc1: candle_nn::linear(d, ffn, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn, d, vb.pp("fc2"))?,
            final_norm: norm("final_layer_norm")?,
        })
    }

    /// A decoder layer's cross-attention keys and values of the encoder's states.
    fn memory_kv(&self, states: &Tensor) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        self.cross.as_ref().map(|(a, _)| Ok((a.heads(&a.k, states)?, a.heads(&a.v, states)?))).transpose()
    }

    fn feed_forward(&self, x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
        let y = self.fc2.forward(&act.apply(&self.fc1.forward(x)?)?)?;
        self.final_norm.forward(&(x + y)?)
    }

    fn parameter_count(&self) -> usize {
        self.self_attention.parameter_count()
            + norm_size(&self.self_norm)
            + self.cross.as_ref().map_or(0, |(a, n)| a.parameter_count() + norm_size(n))
            + linear_size(&self.fc1)
            + linear_size(&self.fc2)
            + norm_size(&self.final_norm)
    }
}

/// Which of the two the weights are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Marian,
    Bart,
}

/// Position embeddings added to the token embeddings.
enum Positions {
    /// Marian's, computed rather than read (transformers does not save them), shared by both stacks.
    Sinusoidal(Tensor),
    /// BART's own table per stack, whose row for position p is p + 2.
    Learned { encoder: Tensor, decoder: Tensor },
}

/// BartLearnedPositionalEmbedding's offset: its first two rows are never used.
const BART_POSITION_OFFSET: usize = 2;

pub struct Marian {
    pub config: MarianConfig,
    encoder_embeddings: Embedding,
    decoder_embeddings: Embedding,
    positions: Positions,
    /// BART's layernorm_embedding of the encoder and the decoder.
    embedding_norms: Option<(LayerNorm, LayerNorm)>,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    lm_head: Linear,
    act: Activation,
    embed_scale: f64,
}

impl Marian {
    pub fn load(vb: &VarBuilder, config: MarianConfig, kind: Kind) -> Result<Self> {
        let c = &config;
        let act = Activation::parse(&c.activation_function)?;
        for heads in [c.encoder_attention_heads, c.decoder_attention_heads] {
            if heads == 0 || !c.d_model.is_multiple_of(heads) {
                return Err(AiError::corrupt("config.json: d_model is not a multiple of the attention heads"));
            }
        }
        let target_vocab = c.decoder_vocab_size.unwrap_or(c.vocab_size);
        // Marian's position table is computed, not read: its size comes from config.json alone.
        if kind == Kind::Marian {
            crate::budget::check(crate::budget::product(&[c.max_position_embeddings, c.d_model, 4]), || {
                format!("the position table of max_position_embeddings {}", c.max_position_embeddings)
            })?;
        }
        let load = || -> candle_core::Result<Marian> {
            let m = vb.pp("model");
            let embedding = |name: &str, vocab: usize| -> candle_core::Result<Embedding> {
                Ok(Embedding::new(m.pp(name).get((vocab, c.d_model), "weight")?, c.d_model))
            };
            let (encoder_embeddings, decoder_embeddings) = if c.share_encoder_decoder_embeddings {
                let shared = if m.contains_tensor("shared.weight") {
                    embedding("shared", c.vocab_size)?
                } else {
                    embedding("encoder.embed_tokens", c.vocab_size)?
                };
                (shared.clone(), shared)
            } else {
                (embedding("encoder.embed_tokens", c.vocab_size)?, embedding("decoder.embed_tokens", target_vocab)?)
            };
            let stack = |name: &str, layers: usize, heads: usize, ffn: usize, decoder: bool| {
                (0..layers)
                    .map(|i| Layer::load(m.pp(format!("{name}.layers.{i}")), c.d_model, heads, ffn, decoder))
                    .collect::<candle_core::Result<Vec<_>>>()
            };
            let head_weight = if vb.contains_tensor("lm_head.weight") {
                vb.pp("lm_head").get((target_vocab, c.d_model), "weight")?
            } else {
                decoder_embeddings.embeddings().clone()
            };
            let bias = if vb.contains_tensor("final_logits_bias") {
                vb.get((1, target_vocab), "final_logits_bias")?.squeeze(0)?
            } else {
                Tensor::zeros(target_vocab, candle_core::DType::F32, &Device::Cpu)?
            };
            let (positions, embedding_norms) = match kind {
                Kind::Marian => {
                    (Positions::Sinusoidal(sinusoidal_positions(c.max_position_embeddings, c.d_model)?), None)
                }
                Kind::Bart => {
                    let rows = c.max_position_embeddings.saturating_add(BART_POSITION_OFFSET);
                    let table = |stack: &str| m.pp(stack).pp("embed_positions").get((rows, c.d_model), "weight");
                    let norm =
                        |stack: &str| candle_nn::layer_norm(c.d_model, 1e-5, m.pp(stack).pp("layernorm_embedding"));
                    (
                        Positions::Learned { encoder: table("encoder")?, decoder: table("decoder")? },
                        Some((norm("encoder")?, norm("decoder")?)),
                    )
                }
            };
            Ok(Marian {
                encoder: stack("encoder", c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim, false)?,
                decoder: stack("decoder", c.decoder_layers, c.decoder_attention_heads, c.decoder_ffn_dim, true)?,
                encoder_embeddings,
                decoder_embeddings,
                positions,
                embedding_norms,
                lm_head: Linear::new(head_weight, Some(bias)),
                act,
                embed_scale: if c.scale_embedding { (c.d_model as f64).sqrt() } else { 1.0 },
                config: config.clone(),
            })
        };
        load().map_err(|e| AiError::corrupt(format!("the weights do not match config.json: {e}")))
    }

    pub fn parameter_count(&self) -> usize {
        let embeddings = self.encoder_embeddings.embeddings().elem_count()
            + if self.config.share_encoder_decoder_embeddings {
                0
            } else {
                self.decoder_embeddings.embeddings().elem_count()
            };
        let positions = match &self.positions {
            Positions::Sinusoidal(_) => 0,
            Positions::Learned { encoder, decoder } => encoder.elem_count() + decoder.elem_count(),
        };
        let norms = self.embedding_norms.as_ref().map_or(0, |(e, d)| norm_size(e) + norm_size(d));
        embeddings
            + positions
            + norms
            + self.encoder.iter().chain(&self.decoder).map(Layer::parameter_count).sum::<usize>()
    }

    /// The encoder's (or the decoder's) input: token embeddings, scaled, plus positions, then BART's norm.
    fn embed(&self, decoder: bool, ids: &Tensor, first_position: usize) -> Result<Tensor> {
        let len = ids.dim(1)?;
        if first_position + len > self.config.max_position_embeddings {
            return Err(AiError::invalid(format!(
                "this model reads and writes at most {} tokens",
                self.config.max_position_embeddings
            ))
            .with_hint("Split the text into shorter pieces, or lower max_tokens."));
        }
        let table = if decoder { &self.decoder_embeddings } else { &self.encoder_embeddings };
        let x = (table.forward(ids)? * self.embed_scale)?;
        let positions = match &self.positions {
            Positions::Sinusoidal(table) => table.narrow(0, first_position, len)?,
            Positions::Learned { encoder, decoder: d } => {
                (if decoder { d } else { encoder }).narrow(0, first_position + BART_POSITION_OFFSET, len)?
            }
        };
        let x = x.broadcast_add(&positions)?;
        Ok(match &self.embedding_norms {
            Some((e, d)) => (if decoder { d } else { e }).forward(&x)?,
            None => x,
        })
    }
}

/// transformers' MarianSinusoidalPositionalEmbedding: sines in the first half of each row, cosines in the second,
/// computed in f64 and stored as f32.
fn sinusoidal_positions(positions: usize, dim: usize) -> candle_core::Result<Tensor> {
    let half = dim.div_ceil(2);
    let mut table = vec![0f32; positions * dim];
    for pos in 0..positions {
        let row = &mut table[pos * dim..(pos + 1) * dim];
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[half + j / 2] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(table, (positions, dim), &Device::Cpu)
}

impl Marian {
    /// One decoder layer over `x` given its self-attention keys and values (the cache's, this step's last, or the
    /// whole sequence's with `causal` hiding later positions) and the memory's keys and values.
    fn decoder_layer(
        &self,
        layer: &Layer,
        x: Tensor,
        (k, v): (&Tensor, &Tensor),
        causal: Option<&Tensor>,
        memory_kv: Option<&(Tensor, Tensor)>,
        memory_mask: &Tensor,
    ) -> Result<Tensor> {
        let a = &layer.self_attention;
        let y = a.out.forward(&attend(&a.heads(&a.q, &x)?, k, v, a.scale, causal)?)?;
        let mut x = layer.self_norm.forward(&(x + y)?)?;
        if let (Some((a, norm)), Some((k, v))) = (&layer.cross, memory_kv) {
            let y = a.out.forward(&attend(&a.heads(&a.q, &x)?, k, v, a.scale, Some(memory_mask))?)?;
            x = norm.forward(&(x + y)?)?;
        }
        Ok(layer.feed_forward(&x, self.act)?)
    }

    /// The decoder's last hidden states (rows, len, d_model) for whole rows of decoder inputs, each position
    /// seeing itself and those before it: what BART's sequence classifier reads.
    pub fn decoder_states(&self, tokens: &Tensor, memory: &Memory) -> Result<Tensor> {
        let len = tokens.dim(1)?;
        let later: Vec<f32> = (0..len * len).map(|i| if i % len > i / len { -1e9 } else { 0.0 }).collect();
        let causal = Tensor::from_vec(later, (1, 1, len, len), &Device::Cpu)?;
        let mut x = self.embed(true, tokens, 0)?;
        for layer in &self.decoder {
            let a = &layer.self_attention;
            let (k, v) = (a.heads(&a.k, &x)?, a.heads(&a.v, &x)?);
            let memory_kv = layer.memory_kv(&memory.states)?;
            x = self.decoder_layer(layer, x, (&k, &v), Some(&causal), memory_kv.as_ref(), &memory.mask)?;
        }
        Ok(x)
    }
}

impl Seq2Seq for Marian {
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let bias = additive_mask(mask)?;
        let mut x = self.embed(false, ids, 0)?;
        for layer in &self.encoder {
            let a = &layer.self_attention;
            let (q, k, v) = (a.heads(&a.q, &x)?, a.heads(&a.k, &x)?, a.heads(&a.v, &x)?);
            let y = a.out.forward(&attend(&q, &k, &v, a.scale, Some(&bias))?)?;
            x = layer.self_norm.forward(&(x + y)?)?;
            x = layer.feed_forward(&x, self.act)?;
        }
        Ok(x)
    }

    fn decode_step(&self, tokens: &Tensor, memory: &Memory, cache: &mut DecoderCache) -> Result<Tensor> {
        let mut x = self.embed(true, tokens, cache.len)?;
        for (layer, kv) in self.decoder.iter().zip(cache.layers.iter_mut()) {
            let a = &layer.self_attention;
            let (k, v) = cached(&mut kv.self_kv, a.heads(&a.k, &x)?, a.heads(&a.v, &x)?)?;
            if kv.cross_kv.is_none() {
                kv.cross_kv = layer.memory_kv(&memory.states)?;
            }
            x = self.decoder_layer(layer, x, (&k, &v), None, kv.cross_kv.as_ref(), &memory.mask)?;
        }
        cache.len += 1;
        Ok(self.lm_head.forward(&x.squeeze(1)?)?)
    }

    fn layers(&self) -> usize {
        self.decoder.len()
    }
}
