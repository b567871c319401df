//! What the decoders keep between generation steps, and the mask that keeps each token from seeing later ones.

use crate::error::{AiError, Result};
use crate::generate::Decoder;
use candle_core::{DType, Device, Tensor};

/// Keys and values of the tokens seen so far, per layer: (1, heads, seen, head_dim).
#[derive(Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `new` tokens after the cached ones, in a model of `layers` layers that attends to at most
    /// `context` tokens. Returns how many tokens are cached.
    pub(crate) fn prepare(&mut self, new: usize, layers: usize, context: usize) -> Result<usize> {
        let past = self.len();
        if past + new > context {
            return Err(AiError::invalid(format!(
                "the prompt and the generated text need {} tokens; this model accepts at most {context}",
                past + new
            ))
            .with_hint("Shorten the prompt or lower max_tokens."));
        }
        self.layers.resize(layers, None);
        Ok(past)
    }
}

/// A decoder that keeps its keys and values in a KvCache (GPT-2, the 8-bit Llama).
pub trait CachedDecoder: Sync {
    /// The most tokens, prompt and generated together, it attends to.
    fn context(&self) -> usize;
    /// Feeds `ids` after the tokens in `cache` and returns the logits of the last one, (vocab).
    fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor>;
}

/// A generation session: its own cache over the model's shared weights.
pub struct Session<'a, M> {
    model: &'a M,
    cache: KvCache,
}

impl<'a, M: CachedDecoder> Session<'a, M> {
    pub fn new(model: &'a M) -> Self {
        Session { model, cache: KvCache::default() }
    }
}

impl<M: CachedDecoder> Decoder for Session<'_, M> {
    fn reset(&mut self) -> Result<()> {
        self.cache = KvCache::default();
        Ok(())
    }

    fn context_size(&self) -> usize {
        self.model.context()
    }

    fn next_logits(&mut self, ids: &[u32]) -> Result<Tensor> {
        self.model.forward(ids, &mut self.cache)
    }
}

/// causal_mask for layers that attend through a sliding window: query i sees key j only where
/// i - window < j <= i, as transformers' sliding-window masks have it; None where no key is hidden.
pub(crate) fn sliding_mask(seq: usize, past: usize, window: usize) -> candle_core::Result<Option<Tensor>> {
    let total = past + seq;
    if total <= window {
        return causal_mask(seq, past);
    }
    let hidden = |i: usize, j: usize| j > past + i || j + window <= past + i;
    let mask: Vec<f32> =
        (0..seq).flat_map(|i| (0..total).map(move |j| if hidden(i, j) { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (seq, total), &Device::Cpu).map(Some)
}

/// (seq, past + seq) additive mask: token i sees the past and itself, nothing after. None for one token.
pub(crate) fn causal_mask(seq: usize, past: usize) -> candle_core::Result<Option<Tensor>> {
    if seq == 1 {
        return Ok(None);
    }
    let total = past + seq;
    let mask: Vec<f32> =
        (0..seq).flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Some(Tensor::from_vec(mask, (seq, total), &Device::Cpu)?.to_dtype(DType::F32)?))
}
