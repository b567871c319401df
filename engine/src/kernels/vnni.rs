//! 8-bit matrix products for many rows at once on CPUs with AVX-512 VNNI: an encoder's linear layers over a
//! batch of texts (pg_ai.int8_encoders).
//!
//! Why written here: candle's Q8_0 kernel (engine::kernels::int8) converts its integer sums to floats every 32 values
//! and reuses a loaded weight for four input rows, and it rounds the inputs to 8 bits one value at a time
//! through the C library's roundf: together 55% of an 8-bit array embed (perf, engine/benches/encoder.rs). Here a
//! weight and an input row each have one scale per block of 128 values along k (outliers in the inputs stay in
//! their block, as with Q8_0's blocks), the integer sums run over a whole block, each loaded 64-byte weight
//! vector is used for 8 input rows and each broadcast input for 48 output columns, and the inputs are rounded
//! in vectors. No crate offers an 8-bit product of this kind on stable Rust (gemm has none in 8 bits).
//!
//! The instruction, vpdpbusd, multiplies unsigned bytes by signed ones: inputs are held offset by +128, and 128
//! times each block's sum of weights, kept per row, is taken away again.

use super::fast_math::round_to_i32;
use super::tiles::{run_tasks, tile_bias_values, Destination, Task, TILE};
use rayon::prelude::*;

/// Values along k that share one scale, for weights and inputs alike.
pub const BLOCK: usize = 128;
/// Input rows and column tiles one task multiplies at once (8 x 3 sums in 24 of the 32 vector registers).
const ROWS: usize = 8;
const TILES: usize = 3;

/// Whether this CPU has the instructions.
pub fn available() -> bool {
    super::cpu::avx512_vnni()
}

/// A weight matrix (n rows of k) in 8 bits, packed for vpdpbusd: for each tile of 16 rows, for each group of 4
/// values along k, the 16 rows' 4 bytes side by side (one 64-byte vector).
pub struct VnniMatrix {
    n: usize,
    k: usize,
    /// k rounded up to whole blocks; the padding holds zeros.
    pub(super) k_padded: usize,
    pub(super) packed: Vec<i8>,
    /// Per tile, per block, per row of the tile: the scale, and 128 times the sum of the block's bytes.
    scales: Vec<f32>,
    offsets: Vec<i32>,
    /// Added to each output row: n values, then zeros to a whole tile.
    bias: Vec<f32>,
}

/// One block's scale (its largest magnitude over 127) and 1 / scale, 0 for a block of zeros.
#[inline(always)]
fn block_scale(values: &[f32]) -> (f32, f32) {
    let largest = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = largest / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

impl VnniMatrix {
    /// `weight` holds n rows of k values, row after row; `bias`, if any, n values.
    pub fn new(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> VnniMatrix {
        assert_eq!(weight.len(), n * k, "a weight of n rows of k");
        let padded_bias = tile_bias_values(bias, n);
        let k_padded = k.div_ceil(BLOCK) * BLOCK;
        let (tiles, blocks) = (n.div_ceil(TILE), k_padded / BLOCK);
        let mut packed = vec![0i8; tiles * TILE * k_padded];
        let mut scales = vec![0f32; tiles * blocks * TILE];
        let mut offsets = vec![0i32; tiles * blocks * TILE];
        let mut row_bytes = vec![0i8; k_padded];
        for row in 0..n {
            let (tile, lane) = (row / TILE, row % TILE);
            let values = &weight[row * k..(row + 1) * k];
            for block in 0..blocks {
                let span = &values[(block * BLOCK).min(k)..((block + 1) * BLOCK).min(k)];
                let (scale, inverse) = block_scale(span);
                let bytes = &mut row_bytes[block * BLOCK..block * BLOCK + span.len()];
                for (b, v) in bytes.iter_mut().zip(span) {
                    *b = round_to_i32(v * inverse) as i8;
                }
                let at = (tile * blocks + block) * TILE + lane;
                scales[at] = scale;
                offsets[at] = 128 * bytes.iter().map(|&b| b as i32).sum::<i32>();
            }
            // Group g of 4 values along k goes to bytes [g][lane][0..4] of the tile.
            let tile_bytes = &mut packed[tile * TILE * k_padded..(tile + 1) * TILE * k_padded];
            for (g, four) in row_bytes.chunks_exact(4).enumerate() {
                tile_bytes[(g * TILE + lane) * 4..(g * TILE + lane) * 4 + 4].copy_from_slice(four);
            }
        }
        VnniMatrix { n, k, k_padded, packed, scales, offsets, bias: padded_bias }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn columns(&self) -> usize {
        self.k
    }

    /// Bytes held: the packed weights (rows padded to a multiple of 16, k to whole blocks), scales, sums, bias.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * (self.scales.len() + self.offsets.len() + self.bias.len())
    }

    /// x (m rows of k) times the weight's transpose, plus the bias: m rows of n, row after row. Call only where
    /// `available()`.
    pub fn times(&self, x: &[f32], m: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        let amx = m >= super::amx::ROWS && super::amx::available();
        #[cfg(not(target_arch = "x86_64"))]
        let amx = false;
        self.times_on(x, m, amx)
    }

    /// `times` on AMX or not.
    fn times_on(&self, x: &[f32], m: usize, amx: bool) -> Vec<f32> {
        assert!(available(), "VnniMatrix::times needs AVX-512 VNNI");
        assert_eq!(x.len(), m * self.k, "an input of m rows of k");
        #[cfg(target_arch = "x86_64")]
        if amx {
            use super::amx::ROWS;
            // AMX reads whole tiles of 32 input rows: the rows after m are padding (zeros), not stored.
            let (inputs, input_scales) = self.quantize_inputs(x, m, m.next_multiple_of(ROWS));
            // Tasks of 32 rows by up to 16 tiles (256 columns): a task loads the tile configuration once.
            const TILES_PER_TASK: usize = 16;
            // SAFETY: AMX is available; each task writes all of its rows and tiles.
            return unsafe {
                run_tasks(m, self.n, ROWS, TILES_PER_TASK, |task, out, width| {
                    super::amx::multiply(self, &inputs, &input_scales, task, out.get(), width)
                })
            };
        }
        let (inputs, input_scales) = self.quantize_inputs(x, m, m);
        // SAFETY: available() was checked; each task's kernel writes all of its rows and tiles.
        unsafe {
            run_tasks(m, self.n, ROWS, TILES, |task, out, width| {
                self.multiply(&inputs, &input_scales, task, out, width)
            })
        }
    }

    /// Each input row in 8 bits per block of 128, offset by +128, and each block's scale; `rows` rows, those
    /// after the m of x zeros.
    fn quantize_inputs(&self, x: &[f32], m: usize, rows: usize) -> (Vec<u8>, Vec<f32>) {
        let (k, k_padded, blocks) = (self.k, self.k_padded, self.k_padded / BLOCK);
        // Padding (and blocks of zeros) hold 128: an offset zero.
        let mut inputs = vec![128u8; rows * k_padded];
        let mut scales = vec![0f32; rows * blocks];
        inputs.par_chunks_mut(k_padded).zip(scales.par_chunks_mut(blocks)).take(m).enumerate().for_each(
            |(row, (bytes, scales))| {
                let values = &x[row * k..(row + 1) * k];
                super::simd::widest(
                    #[inline(always)]
                    || {
                        for (block, scale) in scales.iter_mut().enumerate() {
                            let span = &values[(block * BLOCK).min(k)..((block + 1) * BLOCK).min(k)];
                            let (s, inverse) = block_scale(span);
                            *scale = s;
                            let bytes = &mut bytes[block * BLOCK..block * BLOCK + span.len()];
                            for i in 0..bytes.len() {
                                bytes[i] = (round_to_i32(span[i] * inverse) + 128) as u8;
                            }
                        }
                    },
                )
            },
        );
        (inputs, scales)
    }

    /// Dispatches a task to the kernel compiled for its numbers of rows and tiles.
    #[cfg(target_arch = "x86_64")]
    unsafe fn multiply(&self, inputs: &[u8], input_scales: &[f32], task: Task, out: Destination, width: usize) {
        macro_rules! dispatch {
            ($($rows:literal)*) => {
                match (task.rows, task.tiles) {
                    $(($rows, 3) => self.kernel::<$rows, 3>(inputs, input_scales, task, out, width),
                      ($rows, 2) => self.kernel::<$rows, 2>(inputs, input_scales, task, out, width),
                      ($rows, 1) => self.kernel::<$rows, 1>(inputs, input_scales, task, out, width),)*
                    _ => unreachable!("tasks have 1 to {ROWS} rows and 1 to {TILES} tiles"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn multiply(&self, _: &[u8], _: &[f32], _: Task, _: Destination, _: usize) {
        unreachable!("available() is false off x86-64")
    }

    /// R input rows times T tiles of 16 weight rows, over all of k.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const R: usize, const T: usize>(
        &self,
        inputs: &[u8],
        input_scales: &[f32],
        task: Task,
        out: Destination,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        let (k_padded, blocks) = (self.k_padded, self.k_padded / BLOCK);
        let tile_bytes = TILE * k_padded;
        let weights = self.packed.as_ptr().add(task.tile0 * tile_bytes);
        let input = inputs.as_ptr().add(task.row0 * k_padded);
        let mut totals = [std::array::from_fn::<_, T, _>(|t| self.tile_bias(task.tile0 + t)); R];
        for b in 0..blocks {
            let mut sums = [[_mm512_setzero_si512(); T]; R];
            for g in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
                let mut w = [_mm512_setzero_si512(); T];
                for (t, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(weights.add(t * tile_bytes + g * TILE * 4) as *const _);
                }
                for (r, sums) in sums.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32((input.add(r * k_padded + g * 4) as *const i32).read_unaligned());
                    for (sum, w) in sums.iter_mut().zip(&w) {
                        *sum = _mm512_dpbusd_epi32(*sum, x, *w);
                    }
                }
            }
            for t in 0..T {
                let (scale, offset) = self.block_weights(task.tile0 + t, b);
                for r in 0..R {
                    let x_scale = input_scales[(task.row0 + r) * blocks + b];
                    totals[r][t] = add_block(totals[r][t], sums[r][t], scale, offset, x_scale);
                }
            }
        }
        for (r, totals) in totals.iter().enumerate() {
            for (t, total) in totals.iter().enumerate() {
                _mm512_storeu_ps(out.get().add((task.row0 + r) * width + (task.tile0 + t) * TILE), *total);
            }
        }
    }
}

// What the AVX-512 kernel and AMX's (engine::kernels::amx) do alike with their integer sums, so that both give the same
// answers to the bit.
#[cfg(target_arch = "x86_64")]
impl VnniMatrix {
    /// The 16 bias values of a tile: where its outputs' totals start.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn tile_bias(&self, tile: usize) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(self.bias.as_ptr().add(tile * TILE))
    }

    /// The 16 rows' scales and offsets (128 times their bytes' sum) of a tile in block b.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn block_weights(
        &self,
        tile: usize,
        b: usize,
    ) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512i) {
        use std::arch::x86_64::*;
        let at = (tile * (self.k_padded / BLOCK) + b) * TILE;
        (_mm512_loadu_ps(self.scales.as_ptr().add(at)), _mm512_loadu_si512(self.offsets.as_ptr().add(at) as *const _))
    }
}

/// `total` plus one block's share of 16 outputs: the integer sums less the offsets, times the weights' scales and
/// the input row's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn add_block(
    total: std::arch::x86_64::__m512,
    sums: std::arch::x86_64::__m512i,
    scale: std::arch::x86_64::__m512,
    offset: std::arch::x86_64::__m512i,
    input_scale: f32,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, offset));
    _mm512_fmadd_ps(exact, _mm512_mul_ps(scale, _mm512_set1_ps(input_scale)), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact products in f64.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum();
            }
        }
        out
    }

    /// `rows` rows of k values in [-1, 1] from a small LCG (no dependency for test data). With `on_grid`, each a
    /// multiple of 1/127 and each row's blocks starting with 1: 8 bits then hold them exactly.
    fn values(rows: usize, k: usize, seed: u64, on_grid: bool) -> Vec<f32> {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut v: Vec<f32> = (0..rows * k).map(|_| next()).collect();
        if on_grid {
            v.iter_mut().for_each(|v| *v = (*v * 127.0).round() / 127.0);
            (0..rows).for_each(|r| (0..k).step_by(BLOCK).for_each(|b| v[r * k + b] = 1.0));
        }
        v
    }

    /// Up to 32 rows on AVX-512 alone, from 32 on AMX where the CPU has it.
    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 16, 128),
        (3, 7, 5),
        (8, 48, 384),
        (9, 50, 130),
        (17, 100, 256),
        (25, 33, 1000),
        (2, 3, 1),
        (32, 32, 128),
        (40, 17, 384),
        (70, 50, 300),
    ];

    /// Every shape of block (1 to 8 rows, 1 to 3 tiles), k within, at and beyond a block, n off a tile: with
    /// values 8 bits hold exactly, the products are exact but for f32's rounding of the scales and sums.
    #[test]
    #[cfg_attr(cpu_lacks_avx512_vnni, ignore = "this CPU has no AVX-512 VNNI")]
    fn products_of_values_8_bits_hold_are_exact() {
        if !available() {
            return;
        }
        for (m, n, k) in SHAPES {
            let (x, w) = (values(m, k, 1, true), values(n, k, 2, true));
            let got = VnniMatrix::new(&w, n, k, None).times(&x, m);
            let want = reference(&x, &w, m, n, k);
            assert_eq!(got.len(), m * n);
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!((g as f64 - e).abs() < 1e-5 * k as f64, "m {m} n {n} k {k}, output {i}: {g} for {e}");
            }
        }
    }

    /// Any values: within the rounding of two 8-bit operands. Each output sums k products of values in [-1, 1]
    /// (spread sqrt(k) / 3); each operand is off by up to 1/254 of its block's largest, which leaves each
    /// output off by about 0.5% of that spread (1.9% at worst in these 8,600 outputs).
    #[test]
    #[cfg_attr(cpu_lacks_avx512_vnni, ignore = "this CPU has no AVX-512 VNNI")]
    fn products_match_f64_within_8_bit_rounding() {
        if !available() {
            return;
        }
        for (m, n, k) in SHAPES {
            let (x, w) = (values(m, k, 3, false), values(n, k, 4, false));
            let got = VnniMatrix::new(&w, n, k, None).times(&x, m);
            let want = reference(&x, &w, m, n, k);
            let typical = (k as f64).sqrt() / 3.0;
            let worst = got.iter().zip(&want).map(|(&g, &e)| (g as f64 - e).abs()).fold(0.0, f64::max);
            assert!(worst < 0.04 * typical, "m {m} n {n} k {k}: off by {worst}, typical {typical}");
        }
    }

    /// AMX and AVX-512 add the same integers and scale them in the same order: the same answers to the bit.
    #[test]
    #[cfg(target_arch = "x86_64")]
    #[cfg_attr(cpu_lacks_amx, ignore = "this CPU has no AMX")]
    fn amx_answers_as_avx512_does() {
        if !crate::kernels::amx::available() {
            eprintln!("AMX is switched off or not permitted here: nothing to compare");
            return;
        }
        for (m, n, k) in [(32, 16, 128), (33, 48, 384), (64, 50, 1000), (100, 31, 130), (40, 600, 256)] {
            let (x, w) = (values(m, k, 5, false), values(n, k, 6, false));
            let matrix = VnniMatrix::new(&w, n, k, Some(&values(1, n, 7, false)));
            assert_eq!(matrix.times_on(&x, m, true), matrix.times_on(&x, m, false), "m {m} n {n} k {k}");
        }
    }

    /// Zero rows and blocks add exactly zero to the bias, and a row of one value is exact.
    #[test]
    #[cfg_attr(cpu_lacks_avx512_vnni, ignore = "this CPU has no AVX-512 VNNI")]
    fn zeros_and_exact_values() {
        if !available() {
            return;
        }
        let (n, k) = (2, 200);
        let mut w = vec![0f32; n * k];
        w[k..].iter_mut().for_each(|v| *v = 0.5);
        let x = vec![2.0f32; k];
        let y = VnniMatrix::new(&w, n, k, Some(&[1.0, -1.0])).times(&x, 1);
        // The scales 0.5 / 127 and 2 / 127 are rounded to f32; the bytes, 127 each, are exact.
        assert!(y[0] == 1.0 && (y[1] - 199.0).abs() < 1e-4, "{y:?}");
    }
}
