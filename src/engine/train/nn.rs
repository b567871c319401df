//! Differentiable building blocks. candle's fused softmax_last_dim / layer_norm kernels have no
//! backward pass and would silently cut the graph, so these use plain tensor ops only.

use crate::engine::error::{AiError, Result};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// x (.., in) times a weight stored (out, in), as nn.Linear keeps it.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    conv1d(x, &w.t()?, b)
}

/// x (.., in) times a weight stored (in, out), as GPT-2's Conv1D keeps it.
pub fn conv1d(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (inner, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
    let mut y = x.reshape((rows, inner))?.matmul(w)?;
    if let Some(b) = b {
        y = y.broadcast_add(b)?;
    }
    let mut out = dims;
    *out.last_mut().expect("x has dims") = w.dim(1)?;
    Ok(y.reshape(out)?)
}

pub fn layer_norm(x: &Tensor, (w, b): &(Tensor, Tensor), eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)?)
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
    let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(x.broadcast_div(&(variance + eps)?.sqrt()?)?.broadcast_mul(scale)?)
}

/// Softmax over the last dimension, with a backward pass: candle's fused softmax has none and would silently cut
/// the graph, and composing it from max, sub, exp, sum and div costs five passes over the attention scores (and
/// more backwards), which made it a large part of a training step.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "pg_ai-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("softmax: contiguous f32 input only")
        };
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; end - start];
        out.par_chunks_mut(width).zip(data[start..end].par_chunks(width)).for_each(|(out, row)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (o, x) in out.iter_mut().zip(row) {
                *o = (x - max).exp();
                sum += *o;
            }
            out.iter_mut().for_each(|o| *o /= sum);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// d softmax: y * (g - sum(g * y)) along the row.
    fn bwd(&self, _arg: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let along = (grad * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * grad.broadcast_sub(&along)?)?))
    }
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
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Relu => x.relu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

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
        let scale = (1.0 / (1.0 - p)) as f32;
        let keep: Vec<f32> =
            (0..x.elem_count()).map(|_| if self.rng.random::<f64>() < p { 0.0 } else { scale }).collect();
        Ok((x * Tensor::from_vec(keep, x.shape(), &Device::Cpu)?)?)
    }
}

/// Dropout when training (`Some`), nothing when evaluating.
pub fn dropout(d: &mut Option<&mut Dropout>, x: &Tensor, p: f64) -> Result<Tensor> {
    match d {
        Some(d) => d.apply(x, p),
        None => Ok(x.clone()),
    }
}
