//! Differentiable building blocks. candle's fused softmax_last_dim / layer_norm kernels have no
//! backward pass and would silently cut the graph; these use engine::kernels::fused (fused, with a
//! backward of their own) and plain tensor ops.

use crate::error::{AiError, Result};
use crate::kernels::fused;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// x (.., in) times a weight stored (out, in), as nn.Linear keeps it.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    fused::linear(x, w, b, fused::Stored::OutIn)
}

/// x (.., in) times a weight stored (in, out), as GPT-2's Conv1D keeps it.
pub fn conv1d(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    fused::linear(x, w, b, fused::Stored::InOut)
}

pub fn layer_norm(x: &Tensor, (w, b): &(Tensor, Tensor), eps: f64) -> Result<Tensor> {
    fused::layer_norm(x, w, b, eps)
}

/// The additive mask of a decoder's self-attention, (len, len): 0 where a token may look (itself and those
/// before it), -inf after it, which softmax turns into 0.
pub fn causal_mask(len: usize) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (len, len), &Device::Cpu)?)
}

/// An RMS norm (T5's and Llama's layer norm): x / sqrt(mean(x^2) + eps), scaled; no mean subtraction, no bias.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    fused::rms_norm(x, scale, eps)
}

/// Self-attention of packed sequences (see fused::attention), with dropout `p` on the probabilities when training.
pub fn attention(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    heads: &fused::Heads,
    spans: &[fused::Span],
    d: &mut Option<&mut Dropout>,
    p: f64,
) -> Result<Tensor> {
    let factors = match d {
        Some(d) if p > 0.0 => Some(d.factors(fused::probabilities(spans, heads.heads), p)),
        _ => None,
    };
    fused::attention(q, k, v, heads, spans, factors)
}

/// Attention probabilities: softmax over the keys of `scores * scale + mask`, the mask additive and constant.
pub fn attention_probs(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    fused::softmax(scores, scale, mask)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    /// Only in heads (BERT's pooler, RoBERTa's classifier), never read from hidden_act.
    Tanh,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(AiError::invalid(format!("activation \"{other}\" cannot be trained here"))
                .with_hint("Training supports gelu, gelu_new and relu.")),
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => fused::gelu(x, false)?,
            Activation::GeluTanh => fused::gelu(x, true)?,
            Activation::Relu => x.relu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

/// Elements whose dropout draws one parallel task makes.
const DRAWS_PER_TASK: usize = 16 * 1024;

/// Seeded dropout: candle's own draws from an unseeded generator, which would break reproducibility.
pub struct Dropout {
    rng: ChaCha8Rng,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Where its random stream stands, for checkpoints.
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub fn set_position(&mut self, position: u128) {
        self.rng.set_word_pos(position);
    }

    pub fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        fused::scale_by(x, self.factors(x.elem_count(), p))
    }

    /// For each of `n` elements, 0 (dropped, with probability p) or 1 / (1 - p). Element i takes one f64 draw,
    /// words 2i and 2i + 1 of the stream from where it stands, whichever task draws it: the same factors as one
    /// thread drawing in order, in parallel (drawn serially they were a sixth of a training step).
    fn factors(&mut self, n: usize, p: f64) -> Vec<f32> {
        let scale = (1.0 / (1.0 - p)) as f32;
        let start = self.rng.get_word_pos();
        let mut factors = vec![0f32; n];
        factors.par_chunks_mut(DRAWS_PER_TASK).enumerate().for_each(|(task, chunk)| {
            let mut rng = self.rng.clone();
            rng.set_word_pos(start + 2 * (task * DRAWS_PER_TASK) as u128);
            chunk.iter_mut().for_each(|f| *f = if rng.random::<f64>() < p { 0.0 } else { scale });
        });
        self.rng.set_word_pos(start + 2 * n as u128);
        factors
    }
}

/// Dropout when training (`Some`), nothing when evaluating.
pub fn dropout(d: &mut Option<&mut Dropout>, x: &Tensor, p: f64) -> Result<Tensor> {
    match d {
        Some(d) => d.apply(x, p),
        None => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_dropout_draws_what_one_thread_would() {
        let mut d = Dropout::new(7);
        // An odd start, and more than two tasks with a last one not full.
        d.rng.set_word_pos(3);
        let mut serial = d.rng.clone();
        let n = 2 * DRAWS_PER_TASK + 1000;
        let factors = d.factors(n, 0.25);
        let want: Vec<f32> = (0..n).map(|_| if serial.random::<f64>() < 0.25 { 0.0 } else { 4.0 / 3.0 }).collect();
        assert_eq!(factors, want);
        assert_eq!(d.position(), serial.get_word_pos());
        let dropped = factors.iter().filter(|f| **f == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
    }
}
