//! 8-bit weights: each run of 32 weights in a row is held as one f16 scale and 32 signed bytes (GGML's Q8_0),
//! which candle multiplies with SIMD dot products. Settings ask for it: pg_ai.int8_decoders (GPT-2 and Llama
//! read from safetensors), pg_ai.int8_encoders (BERT, DistilBERT, RoBERTa), and pg_ai.gguf_requantize for GGUF
//! files whose weights candle can only multiply with a scalar loop (engine::models::gguf). An encoder's layers, which
//! multiply a whole batch of rows at once, take engine::kernels::vnni's 8-bit format instead where the CPU has AVX-512
//! VNNI (`Projection::batched`); in f32 they take engine::kernels::packed's packed weights where the CPU has AVX-512.
//!
//! Why: a call on one row, and generating a token, reads every weight once, so on a CPU the bytes of the weights set
//! the pace. Q8_0 holds a weight to within max|w|/254 of its block in 34 bytes where f32 takes 128: about a quarter of
//! the memory and of the bytes read. On CPUs with VNNI, candle also multiplies many rows at once faster in 8 bits than
//! gemm does in f32. The answers move slightly (engine/tests/golden.rs measures by how much), so the int8 settings are
//! off by default (GGUF weights are quantized already: there it is on).

use crate::device::cpu_kernels;
use crate::kernels::fused::values;
use crate::kernels::matvec::one_row_times;
use crate::kernels::packed::PackedMatrix;
use crate::kernels::row_parts::{parts_for, RowParts};
use crate::kernels::vnni::VnniMatrix;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor, D};
use candle_nn::Linear;
use std::sync::Arc;

/// Which models a load holds as Q8_0 (the pg_ai.int8_* settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int8 {
    /// BERT, DistilBERT and RoBERTa encoders with their task heads.
    pub encoders: bool,
    /// GPT-2 and Llama-family models read from safetensors.
    pub decoders: bool,
}

impl Int8 {
    pub const NONE: Int8 = Int8 { encoders: false, decoders: false };
    pub const ALL: Int8 = Int8 { encoders: true, decoders: true };
}

/// The shape to hold a Q8_0 weight of `n` rows of `k` at: (rows, row length). candle's tiled VNNI kernels take
/// rows in whole blocks of 256, 16 rows at a time, and multiply 2-10x faster than the block-by-block dot products
/// other weights get (rows of 384 and 576, 10 and 384 at a time; a 30522-row head 2.6x for one input row, 10x for
/// eight). So where those kernels run, rows are padded with zeros to a multiple of 256 and zero rows are added up
/// to a multiple of 16 (their bytes are held too), unless the rows would grow by more than half: short rows
/// (hidden sizes under 192) are faster unpadded, or in f32. Elsewhere padding would only add work.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn tiled_shape(n: usize, k: usize) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if k.is_multiple_of(GgmlDType::Q8_0.block_size()) {
        let vnni = crate::kernels::cpu::avx512_vnni() || crate::kernels::cpu::avx_vnni();
        if let Some(padded) = padded_by_at_most_half(k, 256).filter(|_| vnni) {
            return (n.next_multiple_of(16), padded);
        }
    }
    (n, k)
}

/// Rows of `k` padded to whole blocks of `block`, unless that would add more than half of `k`: short rows lose
/// more to the padding than the blocked kernels win.
fn padded_by_at_most_half(k: usize, block: usize) -> Option<usize> {
    let padded = k.next_multiple_of(block);
    (padded - k <= k / 2).then_some(padded)
}

/// Bytes a tensor holds in memory.
pub fn bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
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
    /// Asked for in 8 bits: Q8_0 where the rows are whole blocks, else an f32 copy (see `quantize`); or a GGUF
    /// file's weights as stored (`stored`). `padding` zeros end each row, and inputs get as many; `extra_rows`
    /// zero rows follow the weight's own, and their outputs are dropped (see `tiled_shape`).
    Quantized {
        weight: RowParts,
        bias: Option<Tensor>,
        padding: usize,
        extra_rows: usize,
    },
    /// Asked for in 8 bits for many rows at once (an encoder's), on a CPU with AVX-512 VNNI: engine::kernels::vnni.
    Vnni {
        weight: Arc<VnniMatrix>,
        bias: Option<Tensor>,
    },
    /// In f32, on a CPU with AVX-512: engine::kernels::packed.
    Packed {
        weight: Arc<PackedMatrix>,
        bias: Option<Tensor>,
    },
}

impl Projection {
    /// `weight` is (out, in), as candle's Linear takes it. In f32, packed for engine::kernels::packed where the CPU has
    /// AVX-512 (its own copy: see `head`).
    pub fn new(weight: Tensor, bias: Option<Tensor>, int8: bool) -> candle_core::Result<Self> {
        if !int8 {
            if crate::kernels::packed::available() && cpu_kernels(weight.device()) {
                let (n, k) = weight.dims2()?;
                let (values, bias_values) = f32_values(&weight, bias.as_ref())?;
                let packed = PackedMatrix::new(&values, n, k, bias_values.as_deref());
                return Ok(Projection::Packed { weight: Arc::new(packed), bias });
            }
            return Ok(Projection::F32(Linear::new(weight, bias)));
        }
        let (n, k) = weight.dims2()?;
        let (rows, row_length) = tiled_shape(n, k);
        let (padding, extra_rows) = (row_length - k, rows - n);
        let weight = if padding > 0 { weight.pad_with_zeros(1, 0, padding)? } else { weight };
        let weight = if extra_rows > 0 { weight.pad_with_zeros(0, 0, extra_rows)? } else { weight };
        let weight = RowParts::new(quantize(&weight)?, parts_for(rayon::current_num_threads()))?;
        Ok(Projection::Quantized { weight, bias, padding, extra_rows })
    }

    /// Quantized weights as a file stores them, their rows one after the other (a GGUF file's query, key and
    /// value rows, say), and the bias of all those rows, if any.
    pub fn stored(weights: Vec<QTensor>, bias: Option<Tensor>) -> candle_core::Result<Self> {
        let weight = RowParts::stacked(weights, parts_for(rayon::current_num_threads()))?;
        Ok(Projection::Quantized { weight, bias, padding: 0, extra_rows: 0 })
    }

    /// A model's output head. One `tied` to the token embeddings is, in f32, held as it is (the same tensor as the
    /// embeddings, not a copy) and multiplied by candle (one row at a time by engine::kernels::matvec); otherwise, and
    /// in 8 bits, as `new` does.
    pub fn head(weight: Tensor, bias: Option<Tensor>, int8: bool, tied: bool) -> candle_core::Result<Self> {
        match tied && !int8 {
            true => Ok(Projection::F32(Linear::new(weight, bias))),
            false => Self::new(weight, bias, int8),
        }
    }

    /// For layers that multiply many rows at once (an encoder's over a batch of texts): in 8 bits as
    /// engine::kernels::vnni holds them where the CPU has AVX-512 VNNI, else as `new` does. Rows that blocks of 128
    /// would pad by more than half (k of 85 or less, or 129 to 170) also go to `new`.
    pub fn batched(weight: Tensor, bias: Option<Tensor>, int8: bool) -> candle_core::Result<Self> {
        let (n, k) = weight.dims2()?;
        let blocks_fit = padded_by_at_most_half(k, crate::kernels::vnni::BLOCK).is_some();
        if !int8 || !crate::kernels::vnni::available() || !cpu_kernels(weight.device()) || !blocks_fit {
            return Self::new(weight, bias, int8);
        }
        let (values, bias_values) = f32_values(&weight, bias.as_ref())?;
        Ok(Projection::Vnni { weight: Arc::new(VnniMatrix::new(&values, n, k, bias_values.as_deref())), bias })
    }

    /// Bytes of the weight and bias in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Projection::F32(l) => bytes(l.weight()) + l.bias().map_or(0, bytes),
            Projection::Quantized { weight, bias, .. } => weight.bytes() + bias.as_ref().map_or(0, bytes),
            // The matrix holds its own copy of the bias, which it adds.
            Projection::Vnni { weight, .. } => weight.bytes(),
            Projection::Packed { weight, .. } => weight.bytes(),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Projection::F32(l) => l.bias(),
            Projection::Quantized { bias, .. } | Projection::Vnni { bias, .. } | Projection::Packed { bias, .. } => {
                bias.as_ref()
            }
        }
    }

    /// The model's parameters, not counting padding.
    pub fn parameters(&self) -> usize {
        match self {
            Projection::F32(l) => l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count),
            Projection::Quantized { weight, bias, padding, extra_rows } => {
                let (n, k) = weight.dims();
                (n - extra_rows) * (k - padding) + bias.as_ref().map_or(0, Tensor::elem_count)
            }
            Projection::Vnni { weight, bias } => {
                weight.rows() * weight.columns() + bias.as_ref().map_or(0, Tensor::elem_count)
            }
            Projection::Packed { weight, bias } => {
                weight.rows() * weight.columns() + bias.as_ref().map_or(0, Tensor::elem_count)
            }
        }
    }
}

impl Module for Projection {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Projection::F32(l) => match one_row_times(x, l.weight())? {
                // A generated token's single row.
                Some(y) => match l.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                },
                None => l.forward(x),
            },
            Projection::Quantized { weight, bias, padding, extra_rows } => {
                let mut y = match padding {
                    // candle's quantized product reads its input in place (a pooler's first tokens are strided).
                    0 => weight.forward(&x.contiguous()?)?,
                    &p => weight.forward(&x.pad_with_zeros(D::Minus1, 0, p)?)?,
                };
                if *extra_rows > 0 {
                    let n = y.dim(D::Minus1)? - extra_rows;
                    y = y.narrow(D::Minus1, 0, n)?.contiguous()?;
                }
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Projection::Vnni { weight, .. } => x.contiguous()?.apply_op1_no_bwd(&Times(weight.clone())),
            Projection::Packed { weight, .. } => x.contiguous()?.apply_op1_no_bwd(&Times(weight.clone())),
        }
    }
}

/// A weight's and a bias's values in f32, row after row.
fn f32_values(weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<(Vec<f32>, Option<Vec<f32>>)> {
    let values = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((values, bias.map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?))
}

/// A weight held for many rows at once: engine::kernels::vnni's and engine::kernels::packed's.
trait Batched: Send + Sync {
    const NAME: &'static str;
    fn rows(&self) -> usize;
    fn columns(&self) -> usize;
    /// x (m rows of `columns`) times the weight's transpose plus its bias: m rows of `rows`.
    fn times(&self, x: &[f32], m: usize) -> Vec<f32>;
}

/// Hands the trait's methods to the matrix's own.
macro_rules! batched {
    ($matrix:ty, $name:literal) => {
        impl Batched for $matrix {
            const NAME: &'static str = $name;
            fn rows(&self) -> usize {
                <$matrix>::rows(self)
            }
            fn columns(&self) -> usize {
                <$matrix>::columns(self)
            }
            fn times(&self, x: &[f32], m: usize) -> Vec<f32> {
                <$matrix>::times(self, x, m)
            }
        }
    };
}
batched!(VnniMatrix, "pg_ai-vnni-times");
batched!(PackedMatrix, "pg_ai-packed-times");

/// x (any leading dimensions, then k) times a batched weight's transpose plus its bias, as a candle op on the CPU.
struct Times<M>(Arc<M>);

impl<M: Batched> CustomOp1 for Times<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(xs, xl)?;
        let (leading, k) = xl.shape().dims().split_at(xl.shape().rank() - 1);
        if k != [self.0.columns()] {
            candle_core::bail!("{}: rows of {k:?} for a weight of {} columns", M::NAME, self.0.columns());
        }
        let m = leading.iter().product();
        let shape: Vec<usize> = leading.iter().copied().chain([self.0.rows()]).collect();
        Ok((CpuStorage::F32(self.0.times(x, m)), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The same (n, k) projection in f32 and in 8 bits, and an input of 3 rows.
    fn project(n: usize, k: usize) -> (Projection, Projection, Tensor) {
        let weight = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, k), &Device::Cpu).unwrap();
        // candle's f32 Linear (engine::kernels::packed's own tests check its products).
        let f32 = Projection::F32(Linear::new(weight.clone(), Some(bias.clone())));
        (f32, Projection::new(weight, Some(bias), true).unwrap(), x)
    }

    fn largest_change(a: &Projection, b: &Projection, x: &Tensor) -> f32 {
        let diff = (a.forward(x).unwrap() - b.forward(x).unwrap()).unwrap().abs().unwrap();
        diff.flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F32).unwrap().to_scalar().unwrap()
    }

    /// Rows of 64 become two Q8_0 blocks each: a quarter of the bytes, answers within rounding of 8 bits.
    /// (Rows of 64 are never padded, see `tiled_shape`.)
    #[test]
    fn whole_blocks_are_held_in_8_bits() {
        let (exact, int8, x) = project(15, 64);
        assert_eq!(int8.bytes(), 15 * 2 * 34 + 15 * 4);
        assert_eq!((exact.bytes(), exact.parameters(), int8.parameters()), (15 * 65 * 4, 15 * 65, 15 * 65));
        // Each output sums 64 products of N(0, 1) values, each off by about 1% (both sides rounded to 8 bits).
        let change = largest_change(&exact, &int8, &x);
        assert!(change > 0.0 && change < 0.5, "{change}");
    }

    /// In f32, `new` (packed where the CPU has AVX-512) answers as candle's Linear does, for batches and a single
    /// row, with and without a bias.
    #[test]
    fn f32_projections_answer_as_candles_linear() {
        for (n, k) in [(15, 64), (50, 37)] {
            let weight = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let bias = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
            for bias in [Some(bias), None] {
                let new = Projection::new(weight.clone(), bias.clone(), false).unwrap();
                let linear = Projection::F32(Linear::new(weight.clone(), bias));
                for shape in [(2, 3, k), (1, 1, k)] {
                    let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
                    assert_eq!(new.forward(&x).unwrap().dims(), [shape.0, shape.1, n]);
                    assert!(largest_change(&new, &linear, &x) < 1e-4);
                }
            }
        }
    }

    /// Rows of 48 are not whole blocks: they stay in f32 and answer exactly.
    /// Every kind of projection takes a strided input, as a classifier's pooler reads each row's first token.
    #[test]
    fn strided_inputs_answer_as_contiguous_ones() {
        for (n, k) in [(15, 64), (16, 384), (30, 256)] {
            let weight = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let hidden = Tensor::randn(0f32, 1.0, (4, 5, k), &Device::Cpu).unwrap();
            let first = hidden.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
            assert!(!first.is_contiguous());
            for int8 in [false, true] {
                for p in [Projection::new(weight.clone(), None, int8), Projection::batched(weight.clone(), None, int8)]
                {
                    let p = p.unwrap();
                    let want = p.forward(&first.contiguous().unwrap()).unwrap();
                    let got = p.forward(&first).unwrap();
                    assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
                }
            }
        }
    }

    #[test]
    fn rows_that_are_not_whole_blocks_stay_in_f32() {
        let (exact, int8, x) = project(16, 48);
        assert_eq!(int8.bytes(), exact.bytes());
        assert_eq!(largest_change(&exact, &int8, &x), 0.0);
    }

    /// Rows of 384 are padded to 512 where the tiled kernels run; the zeros change no answer and are not
    /// counted as parameters, but are held.
    #[test]
    fn padded_rows_answer_as_unpadded_ones() {
        let (exact, int8, x) = project(16, 384);
        let (rows, held) = tiled_shape(16, 384);
        assert!((rows, held) == (16, 384) || (rows, held) == (16, 512), "{rows} {held}");
        assert_eq!(int8.bytes(), 16 * held / 32 * 34 + 16 * 4);
        assert_eq!(int8.parameters(), exact.parameters());
        // 384 products of N(0, 1) values: about sqrt(6) times the rounding of the 64-long rows above.
        let change = largest_change(&exact, &int8, &x);
        assert!(change > 0.0 && change < 1.25, "{change}");
        assert!(matches!(int8, Projection::Quantized { padding, .. } if padding == held - 384));
    }

    /// 30 rows of 256 get 2 zero rows where the tiled kernels run; their outputs are dropped, and the rest answer
    /// as unpadded rows do.
    #[test]
    fn extra_rows_are_dropped_from_the_answer() {
        let (exact, int8, x) = project(30, 256);
        let (rows, held) = tiled_shape(30, 256);
        assert!((rows, held) == (30, 256) || (rows, held) == (32, 256), "{rows} {held}");
        assert_eq!(int8.forward(&x).unwrap().dims(), &[1, 3, 30]);
        assert_eq!(int8.bytes(), rows * 256 / 32 * 34 + 30 * 4);
        assert_eq!(int8.parameters(), exact.parameters());
        let change = largest_change(&exact, &int8, &x);
        assert!(change > 0.0 && change < 1.25, "{change}");
    }
}
