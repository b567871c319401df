//! 8-bit weights for the decoders read from safetensors (GPT-2, Llama): each run of 32 weights in a row is held
//! as one f16 scale and 32 signed bytes (GGML's Q8_0), which candle multiplies with SIMD dot products.
//!
//! Why: generating a token reads every weight once, so on a CPU the bytes of the weights set the pace. Q8_0 holds
//! a weight to within max|w|/254 of its block in 34 bytes where f32 takes 128: about a quarter of the memory and
//! of the bytes read per token. The answers move slightly (tests/golden.rs measures by how much), so it is a
//! setting, off by default: pg_ai.int8_decoders.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use candle_nn::Linear;
use std::sync::atomic::{AtomicBool, Ordering};

static INT8_DECODERS: AtomicBool = AtomicBool::new(false);

/// Whether GPT-2 and Llama models loaded from now on hold their weights as Q8_0 (the pg_ai.int8_decoders setting).
pub fn hold_decoders_in_int8(on: bool) {
    INT8_DECODERS.store(on, Ordering::Relaxed);
}

pub fn decoders_in_int8() -> bool {
    INT8_DECODERS.load(Ordering::Relaxed)
}

/// `weight` (rows, k) as Q8_0 where its rows split into whole blocks of 32, else as it is (f32).
pub fn quantize(weight: &Tensor) -> candle_core::Result<QTensor> {
    let k = weight.dims().last().copied().unwrap_or(0);
    let dtype = if k.is_multiple_of(GgmlDType::Q8_0.block_size()) { GgmlDType::Q8_0 } else { GgmlDType::F32 };
    QTensor::quantize(weight, dtype)
}

/// A linear layer, y = x W^T + b, with its weight in f32 or in 8-bit blocks.
#[derive(Clone)]
pub enum Projection {
    F32(Linear),
    /// Asked for in 8 bits: Q8_0 where the rows are whole blocks, else an f32 copy (see `quantize`).
    Int8 {
        weight: QMatMul,
        bias: Option<Tensor>,
    },
}

impl Projection {
    /// `weight` is (out, in), as candle's Linear takes it.
    pub fn new(weight: Tensor, bias: Option<Tensor>, int8: bool) -> candle_core::Result<Self> {
        if !int8 {
            return Ok(Projection::F32(Linear::new(weight, bias)));
        }
        Ok(Projection::Int8 { weight: QMatMul::from_qtensor(quantize(&weight)?)?, bias })
    }

    /// Bytes of the weight and bias in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Projection::F32(l) => (l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count)) * 4,
            Projection::Int8 { weight, bias } => {
                let w = match weight {
                    QMatMul::QTensor(q) => q.storage_size_in_bytes(),
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count() * t.dtype().size_in_bytes(),
                };
                w + bias.as_ref().map_or(0, |b| b.elem_count() * 4)
            }
        }
    }

    pub fn parameters(&self) -> usize {
        match self {
            Projection::F32(l) => l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count),
            Projection::Int8 { weight, bias } => {
                let w = match weight {
                    QMatMul::QTensor(q) => q.shape().elem_count(),
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count(),
                };
                w + bias.as_ref().map_or(0, Tensor::elem_count)
            }
        }
    }
}

impl Module for Projection {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Projection::F32(l) => l.forward(x),
            Projection::Int8 { weight, bias } => {
                let y = weight.forward(x)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn project(k: usize) -> (Projection, Projection, Tensor) {
        let weight = Tensor::randn(0f32, 1.0, (16, k), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 16, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, k), &Device::Cpu).unwrap();
        let f32 = Projection::new(weight.clone(), Some(bias.clone()), false).unwrap();
        (f32, Projection::new(weight, Some(bias), true).unwrap(), x)
    }

    fn largest_change(a: &Projection, b: &Projection, x: &Tensor) -> f32 {
        let diff = (a.forward(x).unwrap() - b.forward(x).unwrap()).unwrap().abs().unwrap();
        diff.flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F32).unwrap().to_scalar().unwrap()
    }

    /// Rows of 64 become two Q8_0 blocks each: a quarter of the bytes, answers within rounding of 8 bits.
    #[test]
    fn whole_blocks_are_held_in_8_bits() {
        let (exact, int8, x) = project(64);
        assert_eq!(int8.bytes(), 16 * 2 * 34 + 16 * 4);
        assert_eq!((exact.bytes(), exact.parameters(), int8.parameters()), (16 * 65 * 4, 16 * 65, 16 * 65));
        // Each output sums 64 products of N(0, 1) values, each off by about 1% (both sides rounded to 8 bits).
        let change = largest_change(&exact, &int8, &x);
        assert!(change > 0.0 && change < 0.5, "{change}");
    }

    /// Rows of 48 are not whole blocks: they stay in f32 and answer exactly.
    #[test]
    fn rows_that_are_not_whole_blocks_stay_in_f32() {
        let (exact, int8, x) = project(48);
        assert_eq!(int8.bytes(), exact.bytes());
        assert_eq!(largest_change(&exact, &int8, &x), 0.0);
    }
}
