//! What T5, Marian and BART share: the encoder-decoder interface, the decoder's key/value cache, multi-head
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
    /// Forced as the first token (BART's <s>).
    pub forced_bos: Option<u32>,
    /// No end token before the output (counting the decoder's start token) is this long.
    pub min_length: usize,
    /// No n-gram of this many tokens twice in an output (0: any).
    pub no_repeat_ngram_size: usize,
    /// Beams when the caller names no number (the model's num_beams, else 1: greedy).
    pub num_beams: usize,
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
        let count = |name: &str| field(name).and_then(Value::as_u64).map_or(0, |v| usize::try_from(v).unwrap_or(0));
        Ok(GenerationSettings {
            decoder_start: id("decoder_start_token_id").unwrap_or(pad),
            eos,
            pad,
            forced_eos: id("forced_eos_token_id"),
            forced_bos: id("forced_bos_token_id"),
            min_length: count("min_length"),
            no_repeat_ngram_size: count("no_repeat_ngram_size"),
            num_beams: count("num_beams").max(1),
            bad_tokens,
            length_penalty: field("length_penalty").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            early_stopping,
        })
    }

    pub fn is_end(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// transformers' logits processors, applied to (rows, vocab) scores, where row r has generated `outputs[r]` so
    /// far (the start token not included) and `last_step` is the last step allowed: forbidden tokens (bad words,
    /// an end token before min_length, a token that would repeat an n-gram) get -inf; a forced first token, or a
    /// forced end token at the last step, gets 0 and every other token -inf.
    pub fn process(&self, scores: &Tensor, outputs: &[&[u32]], last_step: bool) -> Result<Tensor> {
        let (rows, vocab) = scores.dims2()?;
        let generated = outputs.first().map_or(0, |o| o.len());
        let forced = match (self.forced_bos, self.forced_eos) {
            (Some(bos), _) if generated == 0 => Some(bos),
            (_, Some(eos)) if last_step => Some(eos),
            _ => None,
        };
        if let Some(token) = forced {
            let mut only = vec![f32::NEG_INFINITY; vocab];
            if let Some(s) = only.get_mut(token as usize) {
                *s = 0.0;
            }
            return Ok(Tensor::from_vec(only, (1, vocab), scores.device())?.repeat((rows, 1))?);
        }
        let too_short = generated + 1 < self.min_length;
        let n = self.no_repeat_ngram_size;
        let repeats = n > 0 && generated + 2 >= n;
        if self.bad_tokens.is_empty() && !too_short && !repeats {
            return Ok(scores.clone());
        }
        if outputs.len() != rows {
            return Err(AiError::internal("one output per row of scores"));
        }
        let mut banned = vec![0f32; rows * vocab];
        for (row, output) in banned.chunks_mut(vocab).zip(outputs) {
            let mut ban = |token: u32| {
                if let Some(b) = row.get_mut(token as usize) {
                    *b = f32::NEG_INFINITY;
                }
            };
            self.bad_tokens.iter().for_each(|&t| ban(t));
            if too_short {
                self.eos.iter().for_each(|&t| ban(t));
            }
            if repeats {
                repeated_ngram_ends(self.decoder_start, output, n).into_iter().for_each(ban);
            }
        }
        Ok((scores + Tensor::from_vec(banned, (rows, vocab), scores.device())?)?)
    }
}

/// The tokens that would end an n-gram already in `start` + `output` (transformers' NoRepeatNGramLogitsProcessor,
/// which counts the decoder's start token as part of the sequence).
fn repeated_ngram_ends(start: u32, output: &[u32], n: usize) -> Vec<u32> {
    let sequence: Vec<u32> = std::iter::once(start).chain(output.iter().copied()).collect();
    if sequence.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &sequence[sequence.len() + 1 - n..];
    sequence.windows(n).filter(|w| &w[..n - 1] == prefix).map(|w| w[n - 1]).collect()
}
