//! One input row times an f32 weight matrix, which a decoder asks for every token it generates. candle's matrix
//! product packs the weight into tiles on every call, and for a single row that costs more than the product: f32
//! GPT-2 generated 14 tokens/s, reading its weights at about 7 GB/s where this machine's two cores read 26 GB/s
//! (torch's matrix-vector product). Here each weight row is read once, straight through, rows split over the
//! threads.

use super::train::ops::values;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Weight rows a parallel task takes.
const ROWS_PER_TASK: usize = 64;

/// The smallest weight (in values: 1 MiB of f32) worth it. Below, handing rows to the threads costs more than
/// candle's packing: the tiny fixture GPT-2 (hidden size 32) generated a third as fast through here.
const MIN_WEIGHTS: usize = 1 << 18;

/// `x` (.., in) with a single row of `in` values times `weight` (out, in), as candle's Linear without its bias; None
/// where this does not apply (more rows, another device or dtype, a weight not laid out row by row), for the
/// caller to use candle's product.
pub fn one_row_times(x: &Tensor, weight: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (out, inputs) = weight.dims2()?;
    let applies = out * inputs >= MIN_WEIGHTS
        && x.elem_count() == inputs
        && x.dims().last() == Some(&inputs)
        && x.device().is_cpu()
        && weight.device().is_cpu()
        && (x.dtype(), weight.dtype()) == (candle_core::DType::F32, candle_core::DType::F32)
        && weight.is_contiguous();
    if !applies {
        return Ok(None);
    }
    let y = x.contiguous()?.apply_op2_no_bwd(weight, &OneRow)?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has dimensions") = out;
    Ok(Some(y.reshape(dims)?))
}

struct OneRow;

/// The dot product of two equally long slices, in 16 running sums that the compiler keeps in vector registers
/// (one running sum would have to add in order, one value at a time).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = a16.remainder().iter().zip(b16.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in a16.zip(b16) {
        for i in 0..16 {
            sums[i] += a[i] * b[i];
        }
    }
    sums.iter().sum::<f32>() + rest
}

impl CustomOp2 for OneRow {
    fn name(&self) -> &'static str {
        "pg_ai-one-row-times"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (values(xs, xl)?, values(ws, wl)?);
        let inputs = x.len();
        let mut y = vec![0f32; w.len() / inputs.max(1)];
        y.par_chunks_mut(ROWS_PER_TASK).zip(w.par_chunks(ROWS_PER_TASK * inputs)).for_each(|(y, rows)| {
            y.iter_mut().zip(rows.chunks(inputs)).for_each(|(y, row)| *y = dot(row, x));
        });
        let n = y.len();
        Ok((CpuStorage::F32(y), Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn one_row_answers_as_candles_product() {
        // 7100 rows (tasks of 64, the last not full) of 37 inputs (16s and a remainder): just over MIN_WEIGHTS.
        let w = Tensor::randn(0f32, 1.0, (7100, 37), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 1, 37), &Device::Cpu).unwrap();
        let want = candle_nn::Linear::new(w.clone(), None).forward(&x).unwrap();
        let got = one_row_times(&x, &w).unwrap().unwrap();
        assert_eq!(got.dims(), [1, 1, 7100]);
        let diff =
            (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        // Two rows, a transposed weight or a small one are left to candle.
        let two_rows = Tensor::zeros((2, 37), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(one_row_times(&two_rows, &w).unwrap().is_none());
        let transposed = Tensor::randn(0f32, 1.0, (37, 7100), &Device::Cpu).unwrap().t().unwrap();
        assert!(one_row_times(&x, &transposed).unwrap().is_none());
        assert!(one_row_times(&x, &w.narrow(0, 0, 7000).unwrap()).unwrap().is_none());
    }
}
