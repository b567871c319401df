//! A quantized weight held as a few blocks of rows, which the compute threads multiply side by side. candle
//! parallelises its own quantized products over a pool whose threads wait for each other by spinning; beside any
//! other busy process a spinning thread holds a core its partner needs, and generation slowed tenfold
//! (benches/fairness.sh). pg_ai gives candle's pool no threads (engine::threads) and parallelises here instead,
//! over rayon, whose threads sleep when they wait and whose caller takes back a part that no idle thread picked
//! up: on a busy machine a product simply runs on fewer threads.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor, D};
use rayon::prelude::*;
use std::borrow::Cow;

/// Rows in a part are a multiple of this: candle's tiled kernels take 16 rows at a time.
const ROW_GROUP: usize = 16;
/// Smaller weights are multiplied whole: handing half of one to another thread costs more than it saves.
const MIN_SPLIT_WEIGHTS: usize = 1 << 16;
/// Parts per compute thread. With one part each, a thread that wakes late leaves the caller waiting for its part
/// (SmolLM2 generation on 2 threads: 30 tokens/s, slower than one thread's 42); with two, the caller takes the
/// parts no other thread has picked up yet (68 tokens/s; four each gave no more, benches/fairness.sh).
const PARTS_PER_THREAD: usize = 2;

/// How many parts a weight is split into where this process has `threads` compute threads.
pub fn parts_for(threads: usize) -> usize {
    PARTS_PER_THREAD * threads.max(1)
}

#[derive(Clone)]
pub struct RowParts {
    parts: Vec<QMatMul>,
    rows: usize,
    columns: usize,
    bytes: usize,
}

impl RowParts {
    /// `weight` (rows, columns) in up to `parts` parts; one part where it is small or not quantized (candle
    /// multiplies f32 and f16 weights with gemm, which is parallel itself).
    pub fn new(weight: QTensor, parts: usize) -> candle_core::Result<Self> {
        Self::stacked(vec![weight], parts)
    }

    /// The rows of `weights` one after the other, as one weight: each run of weights of one type is joined, then
    /// split into up to `parts` parts.
    pub fn stacked(weights: Vec<QTensor>, parts: usize) -> candle_core::Result<Self> {
        let columns = match weights.first() {
            Some(w) => w.shape().dims2()?.1,
            None => candle_core::bail!("a weight of no rows"),
        };
        let (mut held, mut rows, mut bytes) = (Vec::new(), 0, 0);
        let mut run: Vec<QTensor> = Vec::new();
        for weight in weights {
            let (n, k) = weight.shape().dims2()?;
            if k != columns {
                candle_core::bail!("rows of {k} stacked on rows of {columns}");
            }
            (rows, bytes) = (rows + n, bytes + weight.storage_size_in_bytes());
            if run.last().is_some_and(|last| last.dtype() != weight.dtype()) {
                held.extend(split(joined(std::mem::take(&mut run))?, parts)?);
            }
            run.push(weight);
        }
        held.extend(split(joined(run)?, parts)?);
        Ok(RowParts { parts: held, rows, columns, bytes })
    }

    /// (rows, columns) of the whole weight.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.columns)
    }

    /// Bytes of the weight in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

/// Weights of one type as one, their rows one after the other.
fn joined(mut run: Vec<QTensor>) -> candle_core::Result<QTensor> {
    if run.len() == 1 {
        return Ok(run.remove(0));
    }
    let (dtype, columns) = (run[0].dtype(), run[0].shape().dims2()?.1);
    let rows: usize = run.iter().map(|w| w.shape().dims()[0]).sum();
    let mut data = Vec::with_capacity(run.iter().map(QTensor::storage_size_in_bytes).sum());
    for weight in &run {
        data.extend_from_slice(&weight.data()?);
    }
    QTensor::new(QStorage::from_data(Cow::Owned(data), &Device::Cpu, dtype)?, (rows, columns))
}

/// `weight` in up to `parts` parts of whole groups of rows; whole where it is small or not quantized (candle
/// multiplies f32 and f16 weights with gemm, which is parallel itself).
fn split(weight: QTensor, parts: usize) -> candle_core::Result<Vec<QMatMul>> {
    let (rows, columns) = weight.shape().dims2()?;
    let dtype = weight.dtype();
    let float = matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
    let groups = rows.div_ceil(ROW_GROUP);
    let parts = if float || rows * columns < MIN_SPLIT_WEIGHTS { 1 } else { parts.clamp(1, groups) };
    if parts == 1 {
        return Ok(vec![QMatMul::from_qtensor(weight)?]);
    }
    let data = weight.data()?;
    let row_bytes = data.len() / rows;
    let rows_per_part = groups.div_ceil(parts) * ROW_GROUP;
    (0..rows)
        .step_by(rows_per_part)
        .map(|start| {
            let n = rows_per_part.min(rows - start);
            let slice = &data[start * row_bytes..(start + n) * row_bytes];
            let storage = QStorage::from_data(Cow::Borrowed(slice), &Device::Cpu, dtype)?;
            QMatMul::from_qtensor(QTensor::new(storage, (n, columns))?)
        })
        .collect()
}

impl Module for RowParts {
    /// x (any leading dimensions, then `columns`) times the weight's transpose.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let [whole] = &self.parts[..] {
            return whole.forward(x);
        }
        let ys = self.parts.par_iter().map(|p| p.forward(x)).collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&ys, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight of 200 rows in 3 parts (rows 80, 80 and 40) answers exactly as the whole weight does, for one
    /// row and for several.
    #[test]
    fn parts_answer_as_the_whole_weight() {
        let w = Tensor::randn(0f32, 1.0, (200, 512), &Device::Cpu).unwrap();
        let q = |w: &Tensor| QTensor::quantize(w, GgmlDType::Q8_0).unwrap();
        let whole = QMatMul::from_qtensor(q(&w)).unwrap();
        let split = RowParts::new(q(&w), 3).unwrap();
        assert_eq!((split.parts(), split.dims(), split.bytes()), (3, (200, 512), 200 * 16 * 34));
        for shape in [(1, 1, 512), (2, 5, 512)] {
            let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
            let (a, b) = (whole.forward(&x).unwrap(), split.forward(&x).unwrap());
            assert_eq!(a.dims(), b.dims());
            let diff: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert_eq!(diff, 0.0);
        }
    }

    /// Weights of two types stacked: the Q8_0 rows joined and split, the Q4_0 rows split, answering as the
    /// three weights do one after the other.
    #[test]
    fn stacked_weights_answer_as_each_in_turn() {
        let w = |rows| Tensor::randn(0f32, 1.0, (rows, 256), &Device::Cpu).unwrap();
        let (a, b, c) = (w(160), w(96), w(320));
        let q = |w: &Tensor, dtype| QTensor::quantize(w, dtype).unwrap();
        let stacked =
            RowParts::stacked(vec![q(&a, GgmlDType::Q8_0), q(&b, GgmlDType::Q8_0), q(&c, GgmlDType::Q4_0)], 2).unwrap();
        assert_eq!((stacked.parts(), stacked.dims()), (4, (576, 256)));
        let x = Tensor::randn(0f32, 1.0, (1, 3, 256), &Device::Cpu).unwrap();
        let each = [(a, GgmlDType::Q8_0), (b, GgmlDType::Q8_0), (c, GgmlDType::Q4_0)]
            .iter()
            .map(|(w, dtype)| QMatMul::from_qtensor(q(w, *dtype)).unwrap().forward(&x).unwrap())
            .collect::<Vec<_>>();
        let diff: f32 = (Tensor::cat(&each, D::Minus1).unwrap() - stacked.forward(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    /// Small and f32 weights stay whole.
    #[test]
    fn small_and_float_weights_stay_whole() {
        let small = Tensor::randn(0f32, 1.0, (64, 64), &Device::Cpu).unwrap();
        assert_eq!(RowParts::new(QTensor::quantize(&small, GgmlDType::Q8_0).unwrap(), 4).unwrap().parts(), 1);
        let float = Tensor::randn(0f32, 1.0, (256, 512), &Device::Cpu).unwrap();
        assert_eq!(RowParts::new(QTensor::quantize(&float, GgmlDType::F32).unwrap(), 4).unwrap().parts(), 1);
    }
}
