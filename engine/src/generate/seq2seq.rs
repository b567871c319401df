//! What T5 and Marian share: the encoder-decoder interface, the decoder's key/value cache, multi-head
//! attention, and the generation settings read from generation_config.json.

use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::softmax_last_dim;
use serde_json::Value;

/// An encoder-decoder model, fed one decoder token per row and step.
pub trait Seq2Seq: Sync {
    /// Encoder states (rows, source, hidden) of padded `ids` (rows, source); `mask` is 1 for real tokens.
    fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
    /// Next-token logits (rows, vocab) after feeding `tokens` (rows, 1) behind the tokens in `cache`.
    fn decode_step(&self, tokens: &Tensor, memory: &Memory, cache: &mut DecoderCache) -> Result<Tensor>;
    fn layers(&self) -> usize;
}

/// The encoder's output and the additive mask (rows, 1, 1, source) that hides its padding.
pub struct Memory {
    pub states: Tensor,
    pub mask: Tensor,
}

impl Memory {
    pub fn new(states: Tensor, mask: &Tensor) -> Result<Memory> {
        Ok(Memory { states, mask: additive_mask(mask)? })
    }

    /// Keeps (and repeats) the rows named by `rows`, as beam search and finished inputs require.
    pub fn select(&self, rows: &Tensor) -> Result<Memory> {
        Ok(Memory { states: self.states.index_select(rows, 0)?, mask: self.mask.index_select(rows, 0)? })
    }
}

/// 1/0 mask (rows, source) to 0/-1e9 added to attention scores, (rows, 1, 1, source).
pub fn additive_mask(mask: &Tensor) -> Result<Tensor> {
    let (rows, source) = mask.dims2()?;
    let hidden = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?;
    Ok(hidden.reshape((rows, 1, 1, source))?)
}

/// Per decoder layer: self-attention keys/values so far, and the cross-attention keys/values of the memory,
/// computed once per call.
#[derive(Default, Clone)]
pub struct LayerCache {
    pub self_kv: Option<(Tensor, Tensor)>,
    pub cross_kv: Option<(Tensor, Tensor)>,
}

#[derive(Default)]
pub struct DecoderCache {
    pub layers: Vec<LayerCache>,
    /// Decoder tokens fed so far.
    pub len: usize,
}

impl DecoderCache {
    pub fn new(layers: usize) -> Self {
        DecoderCache { layers: vec![LayerCache::default(); layers], len: 0 }
    }

    /// Keeps the rows named by `rows` in this order (beam search reorders its beams every step).
    pub fn select(&mut self, rows: &Tensor) -> Result<()> {
        let pick = |kv: &mut Option<(Tensor, Tensor)>| -> Result<()> {
            if let Some((k, v)) = kv.take() {
                *kv = Some((k.index_select(rows, 0)?, v.index_select(rows, 0)?));
            }
            Ok(())
        };
        for layer in &mut self.layers {
            pick(&mut layer.self_kv)?;
            pick(&mut layer.cross_kv)?;
        }
        Ok(())
    }
}

/// (rows, len, heads * head_dim) -> (rows, heads, len, head_dim).
pub fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, len, inner) = x.dims3()?;
    x.reshape((rows, len, heads, inner / heads))?.transpose(1, 2)?.contiguous()
}

/// Scaled (or, for T5, unscaled) dot-product attention with an additive bias; returns (rows, len, inner).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let mut scores = q.matmul(&k.t()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let context = softmax_last_dim(&scores)?.matmul(v)?;
    let (rows, heads, len, d) = context.dims4()?;
    context.transpose(1, 2)?.reshape((rows, len, heads * d))
}

/// Appends this step's keys/values to the cache and returns all of them.
pub fn cached(kv: &mut Option<(Tensor, Tensor)>, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (k, v) = match kv.take() {
        Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        None => (k, v),
    };
    *kv = Some((k.clone(), v.clone()));
    Ok((k, v))
}

/// Token ids (rows, 1) on the CPU.
pub fn token_column(ids: &[u32]) -> Result<Tensor> {
    Ok(Tensor::from_slice(ids, (ids.len(), 1), &Device::Cpu)?)
}

/// How transformers' generate() runs for this model, from generation_config.json (config.json as fallback).
#[derive(Debug, Clone)]
pub struct GenerationSettings {
    pub decoder_start: u32,
    pub eos: Vec<u32>,
    pub pad: u32,
    /// Forced as the last token when max_tokens is reached (BART, Marian).
    pub forced_eos: Option<u32>,
    /// Single tokens never generated (Marian forbids its pad token this way).
    pub bad_tokens: Vec<u32>,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// transformers' default: stop when the best running beam cannot beat the worst finished one at its length.
    Heuristic,
    /// Stop as soon as num_beams hypotheses are finished.
    Yes,
    /// Go on until no better hypothesis is possible at all.
    Never,
}

impl GenerationSettings {
    pub fn load(files: &ModelFiles, config: &Value) -> Result<Self> {
        let generation = files.read_json("generation_config.json")?.unwrap_or(Value::Null);
        let field = |name: &str| generation.get(name).filter(|v| !v.is_null()).or_else(|| config.get(name));
        let id = |name: &str| field(name).and_then(Value::as_u64).map(|v| v as u32);
        let eos = match field("eos_token_id") {
            Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
            Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            None => Vec::new(),
        };
        let pad = id("pad_token_id").ok_or_else(|| AiError::corrupt("config.json names no pad_token_id"))?;
        let bad_tokens = field("bad_words_ids")
            .and_then(Value::as_array)
            .map(|words| {
                words
                    .iter()
                    .filter_map(|w| match w.as_array().map(Vec::as_slice) {
                        Some([one]) => one.as_u64().map(|v| v as u32),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let early_stopping = match field("early_stopping") {
            Some(Value::Bool(true)) => EarlyStopping::Yes,
            Some(Value::String(s)) if s == "never" => EarlyStopping::Never,
            _ => EarlyStopping::Heuristic,
        };
        Ok(GenerationSettings {
            decoder_start: id("decoder_start_token_id").unwrap_or(pad),
            eos,
            pad,
            forced_eos: id("forced_eos_token_id"),
            bad_tokens,
            length_penalty: field("length_penalty").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            early_stopping,
        })
    }

    pub fn is_end(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// transformers' logits processors, applied to (rows, vocab) scores: forbidden tokens get -inf, and at the
    /// last step allowed (`last_step`) a forced end token gets 0 and every other token -inf.
    pub fn process(&self, scores: &Tensor, last_step: bool) -> Result<Tensor> {
        let (rows, vocab) = scores.dims2()?;
        if let Some(eos) = self.forced_eos.filter(|_| last_step) {
            let mut forced = vec![f32::NEG_INFINITY; vocab];
            if let Some(s) = forced.get_mut(eos as usize) {
                *s = 0.0;
            }
            return Ok(Tensor::from_vec(forced, (1, vocab), scores.device())?.repeat((rows, 1))?);
        }
        if self.bad_tokens.is_empty() {
            return Ok(scores.clone());
        }
        let mut bad = vec![0f32; vocab];
        for &t in &self.bad_tokens {
            if let Some(b) = bad.get_mut(t as usize) {
                *b = f32::NEG_INFINITY;
            }
        }
        Ok(scores.broadcast_add(&Tensor::from_vec(bad, (1, vocab), scores.device())?)?)
    }
}
