//! Fused training ops: each is one node of candle's graph with its backward written out here.
//!
//! Composed from candle's tensor ops, a layer norm is about ten graph nodes and a bias add two (a broadcast and an
//! add). candle's backward gives every node a zeroed gradient buffer and an extra add, and sums a broadcast's gradient
//! one element at a time with divisions per element; on the small BERT of engine/benches/train.rs that was most of a
//! step (perf: 16% of the main thread in those sums alone). Each op here is one parallel pass over rows, and its
//! backward one more. The unit tests check values and gradients against the same functions composed from candle's ops.

use crate::error::{AiError, Result};
use crate::kernels::fast_math::{erf, exp, tanh};
use crate::kernels::simd::widest;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

mod attention;
mod gemm;
mod linear;

pub use attention::{attention, probabilities, Heads, PairBias, Span};
pub use linear::{linear, Stored};

type CandleResult<T> = candle_core::Result<T>;

/// Rows a parallel task takes at a time: enough work to be worth a task, few enough to spread over the cores.
const ROWS_PER_TASK: usize = 16;

/// The f32 values of a contiguous CPU storage.
pub(crate) fn values<'a>(storage: &'a CpuStorage, layout: &Layout) -> CandleResult<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => bail!("pg_ai's fused ops take contiguous f32 tensors"),
    }
}

/// Runs `f` on the values of `t`, made contiguous first.
fn with_values<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> CandleResult<T>) -> CandleResult<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(values(s, layout)?),
        _ => bail!("pg_ai's training ops run on the CPU"),
    }
}

fn new_tensor(values: Vec<f32>, shape: &Shape) -> CandleResult<Tensor> {
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)
}

/// The width of a tensor's rows (its last dimension).
fn width(shape: &Shape) -> usize {
    shape.dims().last().copied().unwrap_or(1).max(1)
}

/// Sums `add` into `acc` element by element.
fn accumulate(acc: &mut [f32], add: &[f32]) {
    acc.iter_mut().zip(add).for_each(|(a, b)| *a += b);
}

/// Adds up per-task partial sums in task order: rayon's own reduce adds them in whatever order threads finish,
/// and a resumed training run must repeat an uninterrupted one bit for bit.
fn total(partials: Vec<Vec<f32>>, width: usize) -> Vec<f32> {
    partials.into_iter().fold(vec![0f32; width], |mut acc, p| {
        accumulate(&mut acc, &p);
        acc
    })
}

/// The sum of the rows of `g` (rows of `width` values): the gradient of whatever was broadcast over them.
fn row_sum(g: &[f32], width: usize) -> Vec<f32> {
    let partials = g
        .par_chunks(width * ROWS_PER_TASK)
        .map(|rows| {
            let mut acc = vec![0f32; width];
            rows.chunks(width).for_each(|row| accumulate(&mut acc, row));
            acc
        })
        .collect();
    total(partials, width)
}

/// `x + b`, with `b` repeated over x's leading dimensions (x's trailing dimensions are b's).
pub fn add_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (xd, bd) = (x.dims(), b.dims());
    if b.elem_count() == 0 || bd.len() > xd.len() || xd[xd.len() - bd.len()..] != *bd {
        return Err(AiError::internal(format!("a bias of shape {bd:?} does not end a tensor of shape {xd:?}")));
    }
    Ok(x.contiguous()?.apply_op2(&b.contiguous()?, AddBias)?)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "pg_ai-add-bias"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let (x, b) = (values(xs, xl)?, values(bs, bl)?);
        let mut y = x.to_vec();
        y.par_chunks_mut(b.len() * ROWS_PER_TASK)
            .for_each(|rows| rows.chunks_mut(b.len()).for_each(|row| accumulate(row, b)));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, b: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let db = with_values(g, |g| Ok(row_sum(g, b.elem_count())))?;
        Ok((Some(g.clone()), Some(new_tensor(db, b.shape())?)))
    }
}

/// Mean and 1 / standard deviation of a row, as torch's layer norm computes them (biased variance).
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer norm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps: eps as f32 })?)
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "pg_ai-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CandleResult<(CpuStorage, Shape)> {
        let (x, w, b) = (values(xs, xl)?, values(ws, wl)?, values(bs, bl)?);
        let n = width(xl.shape());
        if w.len() != n || b.len() != n {
            bail!("layer norm: weight and bias must have {n} values");
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n * ROWS_PER_TASK).zip(x.par_chunks(n * ROWS_PER_TASK)).for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
                let (mean, inv) = moments(x, self.eps);
                for i in 0..n {
                    y[i] = (x[i] - mean) * inv * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// With x̂ the normalised row and gw = g * weight: dx = (gw - mean(gw) - x̂ mean(gw x̂)) / std,
    /// dweight = sum over rows of g x̂, dbias = sum over rows of g.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> CandleResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = width(x.shape());
        let (dx, dw, db) = with_values(x, |x| {
            with_values(w, |w| {
                with_values(g, |g| {
                    let mut dx = vec![0f32; x.len()];
                    let chunk = n * ROWS_PER_TASK;
                    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
                        .par_chunks_mut(chunk)
                        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                        .map(|(dx, (x, g))| {
                            let (mut dw, mut db, mut xhat) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                            for (dx, (x, g)) in dx.chunks_mut(n).zip(x.chunks(n).zip(g.chunks(n))) {
                                let (mean, inv) = moments(x, self.eps);
                                let (mut gw_sum, mut gw_xhat_sum) = (0f32, 0f32);
                                for i in 0..n {
                                    xhat[i] = (x[i] - mean) * inv;
                                    let gw = g[i] * w[i];
                                    gw_sum += gw;
                                    gw_xhat_sum += gw * xhat[i];
                                    dw[i] += g[i] * xhat[i];
                                    db[i] += g[i];
                                }
                                let (m1, m2) = (gw_sum / n as f32, gw_xhat_sum / n as f32);
                                for i in 0..n {
                                    dx[i] = (g[i] * w[i] - m1 - xhat[i] * m2) * inv;
                                }
                            }
                            (dw, db)
                        })
                        .collect();
                    let (dw, db) = partials.into_iter().unzip();
                    Ok((dx, total(dw, n), total(db, n)))
                })
            })
        })?;
        Ok((Some(new_tensor(dx, x.shape())?), Some(new_tensor(dw, w.shape())?), Some(new_tensor(db, w.shape())?)))
    }
}

/// RMS norm over the last dimension (T5's and Llama's): x / sqrt(mean(x²) + eps) * scale.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op2(&scale.contiguous()?, RmsNorm { eps: eps as f32 })?)
}

struct RmsNorm {
    eps: f32,
}

fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (row.iter().map(|x| x * x).sum::<f32>() / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "pg_ai-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ss: &CpuStorage, sl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let (x, s) = (values(xs, xl)?, values(ss, sl)?);
        let n = width(xl.shape());
        if s.len() != n {
            bail!("rms norm: the scale must have {n} values");
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n * ROWS_PER_TASK).zip(x.par_chunks(n * ROWS_PER_TASK)).for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
                let inv = inverse_rms(x, self.eps);
                for i in 0..n {
                    y[i] = x[i] * inv * s[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// With x̂ = x / rms and gs = g * scale: dx = (gs - x̂ mean(gs x̂)) / rms, dscale = sum over rows of g x̂.
    fn bwd(&self, x: &Tensor, s: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<(Option<Tensor>, Option<Tensor>)> {
        let n = width(x.shape());
        let (dx, ds) = with_values(x, |x| {
            with_values(s, |s| {
                with_values(g, |g| {
                    let mut dx = vec![0f32; x.len()];
                    let chunk = n * ROWS_PER_TASK;
                    let partials = dx
                        .par_chunks_mut(chunk)
                        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                        .map(|(dx, (x, g))| {
                            let mut ds = vec![0f32; n];
                            for (dx, (x, g)) in dx.chunks_mut(n).zip(x.chunks(n).zip(g.chunks(n))) {
                                let inv = inverse_rms(x, self.eps);
                                let mut gs_xhat_sum = 0f32;
                                for i in 0..n {
                                    gs_xhat_sum += g[i] * s[i] * x[i] * inv;
                                    ds[i] += g[i] * x[i] * inv;
                                }
                                let m = gs_xhat_sum / n as f32;
                                for i in 0..n {
                                    dx[i] = (g[i] * s[i] - x[i] * inv * m) * inv;
                                }
                            }
                            ds
                        })
                        .collect();
                    Ok((dx, total(partials, n)))
                })
            })
        })?;
        Ok((Some(new_tensor(dx, x.shape())?), Some(new_tensor(ds, s.shape())?)))
    }
}

/// GELU, exact (erf) or with transformers' tanh approximation (gelu_new).
pub fn gelu(x: &Tensor, tanh: bool) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu { tanh })?)
}

/// The GELU op itself, for inference code written in candle's results (engine::models::bert's activations); takes a
/// contiguous f32 tensor on the CPU.
pub struct Gelu {
    pub tanh: bool,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi), the standard normal density at 0.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU by the tanh approximation: the value and the derivative at x.
#[inline(always)]
fn gelu_tanh(x: f32) -> (f32, f32) {
    let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let t = tanh(inner);
    let d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner)
}

/// GELU by erf: the value and the derivative at x.
#[inline(always)]
fn gelu_erf(x: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
    (x * cdf, cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x))
}

/// A function of two values that zip_map applies. A type rather than a closure or function value: those are
/// called through a shim that LLVM may leave out of the vectorised loop, which then goes one element at a time.
trait Elementwise {
    fn at(a: f32, b: f32) -> f32;
}

/// Declares unit types that implement Elementwise with the given body of `at(a, b)`.
macro_rules! elementwise {
    ($($name:ident($a:ident, $b:ident) => $body:expr;)*) => {$(
        struct $name;

        impl Elementwise for $name {
            #[inline(always)]
            fn at($a: f32, $b: f32) -> f32 {
                $body
            }
        }
    )*};
}

// GELU by erf at x (the second value unused), its gradient times g, the same by the tanh approximation, a times b.
elementwise! {
    ErfValue(x, _unused) => gelu_erf(x).0;
    ErfGradient(x, g) => g * gelu_erf(x).1;
    TanhValue(x, _unused) => gelu_tanh(x).0;
    TanhGradient(x, g) => g * gelu_tanh(x).1;
    Product(a, b) => a * b;
}

/// Elements a parallel task of an element-wise op takes.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// F::at(a[i], b[i]) for every i, in parallel and in the widest vectors the CPU has; a and b are equally long.
fn zip_map<F: Elementwise>(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(a.par_chunks(ELEMENTS_PER_TASK).zip(b.par_chunks(ELEMENTS_PER_TASK)))
        .for_each(|(out, (a, b))| {
            widest(
                #[inline(always)]
                || {
                    // Indexed, not zipped iterators: those LLVM would call out of line, compiled for SSE2.
                    let (a, b) = (&a[..out.len()], &b[..out.len()]);
                    for i in 0..out.len() {
                        out[i] = F::at(a[i], b[i]);
                    }
                },
            )
        });
    out
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "pg_ai-gelu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let x = values(xs, xl)?;
        // One input: x is passed as both. The choice is made outside the loop, which then vectorises.
        let y = match self.tanh {
            true => zip_map::<TanhValue>(x, x),
            false => zip_map::<ErfValue>(x, x),
        };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<Option<Tensor>> {
        let dx = with_values(x, |x| {
            with_values(g, |g| {
                Ok(match self.tanh {
                    true => zip_map::<TanhGradient>(x, g),
                    false => zip_map::<ErfGradient>(x, g),
                })
            })
        })?;
        Ok(Some(new_tensor(dx, x.shape())?))
    }
}

/// `x` times `factors` element by element, where the factors are constants (dropout's kept-or-zeroed scales).
pub fn scale_by(x: &Tensor, factors: Vec<f32>) -> Result<Tensor> {
    if factors.len() != x.elem_count() {
        return Err(AiError::internal("scale_by: one factor per element"));
    }
    Ok(x.contiguous()?.apply_op1(ScaleBy(Arc::new(factors)))?)
}

#[derive(Clone)]
struct ScaleBy(Arc<Vec<f32>>);

impl CustomOp1 for ScaleBy {
    fn name(&self) -> &'static str {
        "pg_ai-scale-by"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let x = values(xs, xl)?;
        Ok((CpuStorage::F32(zip_map::<Product>(x, &self.0)), xl.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Refuses a mask that does not broadcast to scores of shape `scores`: its dimensions, aligned on the right, must
/// be the scores' or 1, and its last the scores' own.
fn check_mask(mask: &[usize], scores: &[usize]) -> Result<()> {
    let fits = mask.len() <= scores.len()
        && mask.last() == scores.last()
        && mask.iter().rev().zip(scores.iter().rev()).all(|(m, x)| m == x || *m == 1);
    if !fits {
        return Err(AiError::internal(format!("a mask of shape {mask:?} does not fit scores of shape {scores:?}")));
    }
    Ok(())
}

/// Where each row of the scores starts in the mask, for scores whose leading dimensions (all but the last) are
/// `lead`, rows numbered row-major.
fn mask_offsets(mask: &[usize], lead: &[usize]) -> Vec<usize> {
    // The mask's stride along each leading dimension: 0 where it has none or 1.
    let mut strides = vec![0; lead.len()];
    let mut stride = mask[mask.len() - 1];
    for (d, m) in mask.iter().rev().skip(1).enumerate() {
        if *m > 1 {
            strides[lead.len() - 1 - d] = stride;
        }
        stride *= m;
    }
    let rows: usize = lead.iter().product();
    (0..rows)
        .map(|r| {
            let (mut rest, mut offset) = (r, 0);
            for (size, stride) in lead.iter().zip(&strides).rev() {
                offset += (rest % size) * stride;
                rest /= size;
            }
            offset
        })
        .collect()
}

/// Softmax over the last dimension of `x * scale + mask`. The mask is a constant (no gradient) whose dimensions,
/// aligned on the right, are x's or 1: the additive padding or causal mask of attention scores.
pub fn softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    if let Some(mask) = mask {
        check_mask(mask.dims(), x.dims())?;
    }
    let mask = mask.map(Tensor::contiguous).transpose()?;
    Ok(x.contiguous()?.apply_op1(Softmax { scale: scale as f32, mask })?)
}

struct Softmax {
    scale: f32,
    mask: Option<Tensor>,
}

impl Softmax {
    fn rows(&self, x: &[f32], shape: &Shape, mask: Option<&[f32]>) -> Vec<f32> {
        let n = width(shape);
        let offsets = self.mask.as_ref().map(|m| mask_offsets(m.dims(), &shape.dims()[..shape.rank() - 1]));
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).enumerate().for_each(|(r, (y, x))| {
            let mask = mask.zip(offsets.as_ref()).map(|(m, o)| &m[o[r]..o[r] + n]);
            softmax_row(y, x, self.scale, mask);
        });
        y
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "pg_ai-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let x = values(xs, xl)?;
        let y = match &self.mask {
            Some(mask) => with_values(mask, |m| Ok(self.rows(x, xl.shape(), Some(m))))?,
            None => self.rows(x, xl.shape(), None),
        };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// dx = scale * y * (g - sum(g y)) along the row.
    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> CandleResult<Option<Tensor>> {
        let n = width(x.shape());
        let dx = with_values(y, |y| {
            with_values(g, |g| {
                let mut dx = vec![0f32; y.len()];
                dx.par_chunks_mut(n).zip(y.par_chunks(n).zip(g.par_chunks(n))).for_each(|(dx, (y, g))| {
                    let along: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                    for i in 0..n {
                        dx[i] = self.scale * y[i] * (g[i] - along);
                    }
                });
                Ok(dx)
            })
        })?;
        Ok(Some(new_tensor(dx, x.shape())?))
    }
}

/// y = softmax(x * scale + mask) for one row.
fn softmax_row(y: &mut [f32], x: &[f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        Some(m) => y.iter_mut().zip(x).zip(m).for_each(|((y, x), m)| *y = x * scale + m),
        None => y.iter_mut().zip(x).for_each(|(y, x)| *y = x * scale),
    }
    let max = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Separate loops: the first vectorises, a running sum beside it would keep it scalar.
    y.iter_mut().for_each(|y| *y = exp(*y - max));
    let sum: f32 = y.iter().sum();
    y.iter_mut().for_each(|y| *y /= sum);
}

/// Mean cross-entropy of `logits` (rows, classes) against one class id per row, as torch's
/// F.cross_entropy computes it.
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if rows != targets.len() || rows == 0 {
        return Err(AiError::internal(format!("cross entropy: {rows} rows of logits for {} targets", targets.len())));
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= classes) {
        return Err(AiError::internal(format!("cross entropy: target {t} is beyond the {classes} classes")));
    }
    Ok(logits.contiguous()?.apply_op1(CrossEntropy(Arc::new(targets.to_vec())))?)
}

struct CrossEntropy(Arc<Vec<u32>>);

/// log(sum(exp(row))), kept finite for large values.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + row.iter().map(|x| exp(x - max)).sum::<f32>().ln()
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "pg_ai-cross-entropy"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CandleResult<(CpuStorage, Shape)> {
        let x = values(xs, xl)?;
        let n = width(xl.shape());
        let losses: Vec<f32> =
            x.par_chunks(n).zip(self.0.par_iter()).map(|(row, &t)| log_sum_exp(row) - row[t as usize]).collect();
        // Summed in row order, so that the same batch always gives the same loss.
        let mean = losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64;
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    /// d loss / d logits = (softmax(row) - one-hot(target)) / rows, times the incoming gradient.
    fn bwd(&self, x: &Tensor, _: &Tensor, g: &Tensor) -> CandleResult<Option<Tensor>> {
        let n = width(x.shape());
        let scale = g.to_scalar::<f32>()? / self.0.len() as f32;
        let dx = with_values(x, |x| {
            let mut dx = vec![0f32; x.len()];
            dx.par_chunks_mut(n).zip(x.par_chunks(n).zip(self.0.par_iter())).for_each(|(dx, (row, &t))| {
                let lse = log_sum_exp(row);
                for (d, x) in dx.iter_mut().zip(row) {
                    *d = exp(x - lse) * scale;
                }
                dx[t as usize] -= scale;
            });
            Ok(dx)
        })?;
        Ok(Some(new_tensor(dx, x.shape())?))
    }
}

/// One AdamW update of a parameter with its gradient and moments (none before the first step), as
/// torch.optim.AdamW computes it, in one parallel pass rather than a dozen tensor ops: the new parameter, first
/// and second moments.
pub fn adamw_update(p: &Tensor, g: &Tensor, moments: Option<&(Tensor, Tensor)>, c: &AdamWStep) -> Result<[Tensor; 3]> {
    let n = p.elem_count();
    let (mut new_p, mut new_m, mut new_v) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let zeros = vec![0f32; if moments.is_some() { 0 } else { n }];
    let mut update = |p: &[f32], g: &[f32], m: &[f32], v: &[f32]| {
        if [g.len(), m.len(), v.len()] != [n; 3] {
            bail!("adamw: a gradient or moment differs in size from its parameter");
        }
        let e = ELEMENTS_PER_TASK;
        let outputs = new_p.par_chunks_mut(e).zip(new_m.par_chunks_mut(e)).zip(new_v.par_chunks_mut(e));
        let inputs = p.par_chunks(e).zip(g.par_chunks(e)).zip(m.par_chunks(e).zip(v.par_chunks(e)));
        outputs.zip(inputs).for_each(|(((np, nm), nv), ((p, g), (m, v)))| {
            for i in 0..p.len() {
                nm[i] = m[i] + (g[i] - m[i]) * c.one_minus_beta1;
                nv[i] = v[i] * c.beta2 + g[i] * g[i] * c.one_minus_beta2;
                let denom = nv[i].sqrt() / c.bias_correction2_sqrt + c.eps;
                np[i] = p[i] * c.decay - c.step_size * nm[i] / denom;
            }
        });
        Ok(())
    };
    with_values(p, |p| {
        with_values(g, |g| match moments {
            Some((m, v)) => with_values(m, |m| with_values(v, |v| update(p, g, m, v))),
            None => update(p, g, &zeros, &zeros),
        })
    })?;
    Ok([new_tensor(new_p, p.shape())?, new_tensor(new_m, p.shape())?, new_tensor(new_v, p.shape())?])
}

/// The constants of one AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// 1 - beta1 and 1 - beta2 are taken in f64, as torch takes them from Python floats: 1 - 0.999 in f32 is
    /// 1.3e-5 off.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    /// lr / (1 - beta1^step).
    pub step_size: f32,
    /// sqrt(1 - beta2^step).
    pub bias_correction2_sqrt: f32,
    /// 1 - lr * weight_decay for decayed parameters, else 1.
    pub decay: f32,
}

#[cfg(test)]
mod tests {
    //! Each op against the same function composed from candle's differentiable ops: values and the gradients of
    //! a weighted sum of the output (random weights, so that every output element matters differently).
    use super::*;
    use candle_core::{Var, D};

    pub(super) fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect::<Vec<_>>(), shape, &Device::Cpu)
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Compares `fused` with `composed` on the given inputs: outputs and every input's gradient.
    pub(super) fn check(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Tensor,
        composed: impl Fn(&[Tensor]) -> Tensor,
    ) {
        let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
            let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ts);
            let weights = random(y.dims(), 99);
            let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            let g: Vec<Tensor> = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
            (y, g)
        };
        let (y1, g1) = run(&fused);
        let (y2, g2) = run(&composed);
        assert!(max_diff(&y1, &y2) < 1e-5, "values differ by {}", max_diff(&y1, &y2));
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            assert!(max_diff(a, b) < 1e-4, "gradient {i} differs by {}", max_diff(a, b));
        }
    }

    #[test]
    fn add_bias_matches_broadcast_add() {
        // 40 rows: more than one task of rows, and a last task that is not full.
        for bias_shape in [vec![7], vec![5, 7]] {
            check(
                &[random(&[8, 5, 7], 1), random(&bias_shape, 2)],
                |t| add_bias(&t[0], &t[1]).unwrap(),
                |t| t[0].broadcast_add(&t[1]).unwrap(),
            );
        }
    }

    #[test]
    fn layer_norm_matches_candle() {
        check(
            &[random(&[3, 13, 24], 3), random(&[24], 4), random(&[24], 5)],
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
            |t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-5).unwrap(),
        );
    }

    #[test]
    fn rms_norm_matches_composed() {
        check(
            &[random(&[3, 13, 24], 6), random(&[24], 7)],
            |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
            |t| {
                let variance = t[0].sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                let norm = t[0].broadcast_div(&(variance + 1e-6).unwrap().sqrt().unwrap()).unwrap();
                norm.broadcast_mul(&t[1]).unwrap()
            },
        );
    }

    #[test]
    fn gelu_matches_candle() {
        check(&[random(&[50, 41], 8)], |t| gelu(&t[0], false).unwrap(), |t| t[0].gelu_erf().unwrap());
        check(&[random(&[50, 41], 9)], |t| gelu(&t[0], true).unwrap(), |t| t[0].gelu().unwrap());
    }

    #[test]
    fn scale_by_matches_mul() {
        let factors = random(&[6, 9], 10);
        let values = factors.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        check(&[random(&[6, 9], 11)], |t| scale_by(&t[0], values.clone()).unwrap(), |t| (&t[0] * &factors).unwrap());
    }

    #[test]
    fn softmax_matches_composed_with_every_mask_shape() {
        let x = random(&[2, 3, 5, 5], 12);
        // Padding (rows, 1, 1, len), causal (len, len), per row and position (rows, 1, len, len), and none.
        let masks = [Some(random(&[2, 1, 1, 5], 13)), Some(random(&[5, 5], 14)), Some(random(&[2, 1, 5, 5], 15)), None];
        for mask in masks {
            check(
                std::slice::from_ref(&x),
                |t| softmax(&t[0], 0.5, mask.as_ref()).unwrap(),
                |t| {
                    let s = (&t[0] * 0.5).unwrap();
                    let s = match &mask {
                        Some(m) => s.broadcast_add(m).unwrap(),
                        None => s,
                    };
                    candle_nn::ops::softmax(&s, D::Minus1).unwrap()
                },
            );
        }
        // -inf in the mask (a causal mask) gives exact zeros.
        let causal = crate::train::nn::causal_mask(5).unwrap();
        let y = softmax(&x, 1.0, Some(&causal)).unwrap();
        assert_eq!(y.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap()[1..], [0.0; 4]);
    }

    #[test]
    fn adamw_update_matches_the_formula() {
        let c = AdamWStep {
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            step_size: 0.01,
            bias_correction2_sqrt: 0.5,
            decay: 0.99,
        };
        let (p, g) = (random(&[3, 4], 40), random(&[3, 4], 41));
        let moments = (random(&[3, 4], 42), random(&[3, 4], 43).abs().unwrap());
        for m in [None, Some(&moments)] {
            let [np, nm, nv] = adamw_update(&p, &g, m, &c).unwrap();
            let (m0, v0) = m.cloned().unwrap_or_else(|| (p.zeros_like().unwrap(), p.zeros_like().unwrap()));
            let want_m = ((&m0 * 0.9).unwrap() + (&g * 0.1).unwrap()).unwrap();
            let want_v = ((&v0 * 0.999).unwrap() + (g.sqr().unwrap() * 0.001).unwrap()).unwrap();
            let denom = ((want_v.sqrt().unwrap() / 0.5).unwrap() + 1e-8).unwrap();
            let want_p = ((&p * 0.99).unwrap() - ((&want_m / denom).unwrap() * 0.01).unwrap()).unwrap();
            assert!(max_diff(&nm, &want_m) < 1e-6 && max_diff(&nv, &want_v) < 1e-6 && max_diff(&np, &want_p) < 1e-6);
        }
    }

    #[test]
    fn cross_entropy_matches_candle_nn() {
        let targets = [3u32, 0, 6, 6, 1];
        let ids = Tensor::new(&targets, &Device::Cpu).unwrap();
        check(
            &[random(&[5, 7], 16)],
            |t| cross_entropy(&t[0], &targets).unwrap(),
            |t| candle_nn::loss::cross_entropy(&t[0], &ids).unwrap(),
        );
        assert!(cross_entropy(&random(&[5, 7], 16), &[0, 0, 0, 0, 7]).is_err());
    }
}
