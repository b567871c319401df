//! f32 matrix products for linear layers (encoders' and decoders') on CPUs with AVX-512, the weights packed once
//! at load.
//!
//! Why written here: candle's product (the gemm crate, in AVX2 as pg_ai is built for any x86-64) packs the weight
//! into tiles on every call; for the few rows of a single text that packing was half of the time (perf, a MiniLM
//! embed of one sentence), and on batches its AVX2 kernels do half the arithmetic per instruction AVX-512 does.
//! For a generated token's single row the packed weight streams through as fast as engine::kernels::matvec reads it.
//! gemm's own AVX-512 kernels (its x86-v4 feature) switch every product in the process and were slower on few rows
//! (see the README's benchmarks). Here the weight is packed at load, 16 output columns side by side, and each task
//! multiplies 8 input rows by 48 columns in 24 of the 32 vector registers, as engine::kernels::vnni does in 8 bits.

use super::tiles::{run_tasks, tile_bias_values, Destination, Task, TILE};

/// Input rows and column tiles one task multiplies at once.
const ROWS: usize = 8;
const TILES: usize = 3;

/// Whether this CPU has the instructions.
pub fn available() -> bool {
    super::cpu::avx512()
}

/// A weight matrix (n rows of k) packed for the kernel: for each tile of 16 rows, for each of the k columns, the
/// 16 rows' values side by side (one 64-byte vector). Rows past n, to a whole tile, are zeros.
pub struct PackedMatrix {
    n: usize,
    k: usize,
    packed: Vec<f32>,
    /// Added to each output row: n values, then zeros to a whole tile.
    bias: Vec<f32>,
}

impl PackedMatrix {
    /// `weight` holds n rows of k values, row after row; `bias`, if any, n values.
    pub fn new(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> PackedMatrix {
        assert_eq!(weight.len(), n * k, "a weight of n rows of k");
        let padded_bias = tile_bias_values(bias, n);
        let mut packed = vec![0f32; n.next_multiple_of(TILE) * k];
        for (row, values) in weight.chunks_exact(k.max(1)).enumerate() {
            let (tile, lane) = (row / TILE, row % TILE);
            let tile_values = &mut packed[tile * TILE * k..(tile + 1) * TILE * k];
            for (column, &v) in values.iter().enumerate() {
                tile_values[column * TILE + lane] = v;
            }
        }
        PackedMatrix { n, k, packed, bias: padded_bias }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn columns(&self) -> usize {
        self.k
    }

    /// Bytes held: the packed weights (rows padded to a multiple of 16) and the bias.
    pub fn bytes(&self) -> usize {
        4 * (self.packed.len() + self.bias.len())
    }

    /// x (m rows of k) times the weight's transpose, plus the bias: m rows of n, row after row. Call only where
    /// `available()`.
    pub fn times(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!(available(), "PackedMatrix::times needs AVX-512");
        assert_eq!(x.len(), m * self.k, "an input of m rows of k");
        // SAFETY: available() was checked; each task's kernel writes all of its rows and tiles.
        unsafe { run_tasks(m, self.n, ROWS, TILES, |task, out, width| self.multiply(x, task, out, width)) }
    }

    /// Dispatches a task to the kernel compiled for its numbers of rows and tiles.
    #[cfg(target_arch = "x86_64")]
    unsafe fn multiply(&self, x: &[f32], task: Task, out: Destination, width: usize) {
        macro_rules! dispatch {
            ($($rows:literal)*) => {
                match (task.rows, task.tiles) {
                    $(($rows, 3) => self.kernel::<$rows, 3>(x, task, out, width),
                      ($rows, 2) => self.kernel::<$rows, 2>(x, task, out, width),
                      ($rows, 1) => self.kernel::<$rows, 1>(x, task, out, width),)*
                    _ => unreachable!("tasks have 1 to {ROWS} rows and 1 to {TILES} tiles"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn multiply(&self, _: &[f32], _: Task, _: Destination, _: usize) {
        unreachable!("available() is false off x86-64")
    }

    /// R input rows times T tiles of 16 weight rows, over all of k: each loaded weight vector serves R rows, each
    /// broadcast input value T tiles.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize, const T: usize>(&self, x: &[f32], task: Task, out: Destination, width: usize) {
        use std::arch::x86_64::*;
        let k = self.k;
        let weights = self.packed.as_ptr().add(task.tile0 * TILE * k);
        let input = x.as_ptr().add(task.row0 * k);
        let bias: [__m512; T] =
            std::array::from_fn(|t| _mm512_loadu_ps(self.bias.as_ptr().add((task.tile0 + t) * TILE)));
        let mut sums = [bias; R];
        for column in 0..k {
            let w: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(weights.add((t * k + column) * TILE)));
            for (r, sums) in sums.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*input.add(r * k + column));
                for (sum, w) in sums.iter_mut().zip(&w) {
                    *sum = _mm512_fmadd_ps(x, *w, *sum);
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            for (t, sum) in sums.iter().enumerate() {
                _mm512_storeu_ps(out.get().add((task.row0 + r) * width + (task.tile0 + t) * TILE), *sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x W^T + b in f64, one value at a time.
    fn reference(w: &[f32], n: usize, k: usize, bias: &[f32], x: &[f32], m: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum();
                y[r * n + c] = dot + bias[c] as f64;
            }
        }
        y
    }

    #[test]
    #[cfg_attr(cpu_lacks_avx512, ignore = "this CPU has no AVX-512")]
    fn products_agree_with_a_plain_loop() {
        if !available() {
            return;
        }
        // n within a tile, at one, past 3 tiles (a partial tile group and a partial tile); m within, at and past
        // a row group; k of 1 and odd lengths.
        for (n, k) in [(5, 1), (16, 7), (53, 37), (100, 384)] {
            for m in [1, 3, 8, 11, 17] {
                let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0).collect();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 / 10.0 - 2.0).collect();
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 5 % 17) as f32 - 8.0) / 5.0).collect();
                let got = PackedMatrix::new(&w, n, k, Some(&bias)).times(&x, m);
                let want = reference(&w, n, k, &bias, &x, m);
                assert_eq!(got.len(), m * n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "n {n} k {k} m {m} at {i}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    #[cfg_attr(cpu_lacks_avx512, ignore = "this CPU has no AVX-512")]
    fn no_bias_adds_nothing() {
        if !available() {
            return;
        }
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let got = PackedMatrix::new(&w, 2, 3, None).times(&[1.0, 0.0, -1.0], 1);
        assert_eq!(got, [-2.0, -2.0]);
        assert_eq!(PackedMatrix::new(&w, 2, 3, None).bytes(), 4 * (16 * 3 + 16));
    }
}
