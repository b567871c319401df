//! One input row times an f32 weight matrix, which a decoder asks for every token it generates. candle's matrix product
//! packs the weight into tiles on every call, and for a single row that costs more than the product. Here each weight
//! row is read once, straight through, rows split over the threads: generating a token reads every weight once, so its
//! speed is how fast the machine reads memory (`cargo bench -p pg_ai_engine --bench generate` prints both).

use super::fused::values;
use super::simd;
use crate::device::cpu_kernels;
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
        && cpu_kernels(x.device())
        && cpu_kernels(weight.device())
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

/// `rows` (y.len() rows of x.len() values) times `x`, into `y`.
fn rows_times(rows: &[f32], x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::rows_times(rows, x, y) };
    }
    simd::widest(
        #[inline(always)]
        || {
            for (y, row) in y.iter_mut().zip(rows.chunks(x.len())) {
                *y = dot(row, x);
            }
        },
    )
}

/// The dot product of two equally long slices, in 16 running sums that the compiler keeps in vector registers
/// (one running sum would have to add in order, one value at a time).
#[inline(always)]
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

/// Written with intrinsics because LLVM, given the plain loop, keeps one chain of additions per row (each waiting
/// for the last) or spills wider sums to the stack: either way it read weights at 15-20 GB/s where this machine
/// reads 26 (engine/benches/generate.rs).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Four rows at a time, each with its own running sums, so that four chains of additions overlap; the inputs'
    /// vector is loaded once for the four.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows_times(rows: &[f32], x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let done = y.len() / 4 * 4;
        let mut quads = y.chunks_exact_mut(4);
        for (i, y) in quads.by_ref().enumerate() {
            rows_of::<4>(&rows[i * 4 * k..(i + 1) * 4 * k], x, y);
        }
        for (i, y) in quads.into_remainder().chunks_mut(1).enumerate() {
            rows_of::<1>(&rows[(done + i) * k..(done + i + 1) * k], x, y);
        }
    }

    #[inline(always)]
    unsafe fn rows_of<const R: usize>(rows: &[f32], x: &[f32], y: &mut [f32]) {
        let k = x.len();
        debug_assert!(rows.len() == R * k && y.len() == R);
        let mut sums = [_mm512_setzero_ps(); R];
        let whole = k / 16 * 16;
        for at in (0..whole).step_by(16) {
            let xv = _mm512_loadu_ps(x.as_ptr().add(at));
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(_mm512_loadu_ps(rows.as_ptr().add(r * k + at)), xv, *sum);
            }
        }
        if whole < k {
            // The last 1-15 values: masked loads read no further than the slices.
            let mask: __mmask16 = (1 << (k - whole)) - 1;
            let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(whole));
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, rows.as_ptr().add(r * k + whole)), xv, *sum);
            }
        }
        for (y, sum) in y.iter_mut().zip(sums) {
            *y = _mm512_reduce_add_ps(sum);
        }
    }
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
            rows_times(rows, x, y);
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
        // 7103 rows (tasks of 64, the last 63: fours and 3 more) of 37 inputs (16s and a remainder): just over
        // MIN_WEIGHTS.
        let w = Tensor::randn(0f32, 1.0, (7103, 37), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 1, 37), &Device::Cpu).unwrap();
        let want = candle_nn::Linear::new(w.clone(), None).forward(&x).unwrap();
        let got = one_row_times(&x, &w).unwrap().unwrap();
        assert_eq!(got.dims(), [1, 1, 7103]);
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[cfg_attr(cpu_lacks_avx512, ignore = "this CPU has no AVX-512")]
    fn avx512_rows_agree_with_the_plain_loop() {
        if !crate::kernels::cpu::avx512() {
            return;
        }
        // Inputs shorter than, equal to and past a vector, with and without a remainder; 1-9 rows (fours and the
        // rest). Fused multiply-adds round once where the plain loop rounds twice: equal within float error.
        for k in [1, 15, 16, 17, 37, 768] {
            for n in 1..=9 {
                let x: Vec<f32> = (0..k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
                let rows: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 7.0).collect();
                let mut got = vec![f32::NAN; n];
                // SAFETY: checked above.
                unsafe { avx512::rows_times(&rows, &x, &mut got) };
                for (r, got) in got.iter().enumerate() {
                    let want = dot(&rows[r * k..(r + 1) * k], &x);
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "k {k}, row {r}: {got} vs {want}");
                }
            }
        }
    }
}
