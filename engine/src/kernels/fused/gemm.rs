//! Matrix products on strided views of slices, through the gemm crate that candle itself multiplies with.
//! Strides let one product read a weight transposed, a head's columns out of a (tokens, heads * dim) matrix, or
//! write a head's output into its columns, where candle would copy each into a contiguous tensor first.

use gemm::Parallelism;

/// An m x n matrix in a slice: element (r, c) at `offset + r * row + c * col`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub offset: usize,
    pub row: usize,
    pub col: usize,
}

impl View {
    /// A row-major matrix whose rows are `width` apart.
    pub fn rows(offset: usize, width: usize) -> View {
        View { offset, row: width, col: 1 }
    }

    /// The same matrix transposed.
    pub fn t(self) -> View {
        View { row: self.col, col: self.row, ..self }
    }

    /// Panics unless an m x n matrix so laid out lies within `len` values (what keeps the unsafe call sound).
    fn check(&self, m: usize, n: usize, len: usize) {
        if m > 0 && n > 0 {
            let last = self.offset + (m - 1) * self.row + (n - 1) * self.col;
            assert!(last < len, "a {m}x{n} matrix view ends at {last}, beyond {len} values");
        }
    }
}

/// Whether a product runs on rayon's threads (large ones) or on the calling thread (those already run in
/// parallel with others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

/// dst (m x n) = a (m x k) b (k x n), or dst += a b with `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn product(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    d: View,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    accumulate: bool,
    threads: Threads,
) {
    d.check(m, n, dst.len());
    av.check(m, k, a.len());
    bv.check(k, n, b.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|r| (0..n).for_each(|c| dst[d.offset + r * d.row + c * d.col] = 0.0));
        }
        return;
    }
    let parallelism = match threads {
        Threads::All if rayon::current_num_threads() > 1 => Parallelism::Rayon(rayon::current_num_threads()),
        _ => Parallelism::None,
    };
    // SAFETY: the checks above keep every element the views address inside its slice; dst is borrowed mutably,
    // so it overlaps neither a nor b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.offset),
            d.col as isize,
            d.row as isize,
            accumulate,
            a.as_ptr().add(av.offset),
            av.col as isize,
            av.row as isize,
            b.as_ptr().add(bv.offset),
            bv.col as isize,
            bv.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product computed the plain way.
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|t| a(i, t) * b(t, j)).sum());
            }
        }
        out
    }

    #[test]
    fn strided_views_multiply_as_plain_loops() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..40).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..40).map(|i| (i % 7) as f32 - 2.0).collect();
        // a read transposed from offset 2 (stored k x m, rows 6 apart); b as columns 1.. of a 3 x 9 matrix.
        let (av, bv) = (View::rows(2, 6).t(), View::rows(1, 9));
        let want = naive(m, n, k, |i, t| a[2 + t * 6 + i], |t, j| b[1 + t * 9 + j]);
        for threads in [Threads::One, Threads::All] {
            let mut dst = vec![1.0; m * n];
            product((m, n, k), &mut dst, View::rows(0, n), &a, av, &b, bv, false, threads);
            assert_eq!(dst, want);
            product((m, n, k), &mut dst, View::rows(0, n), &a, av, &b, bv, true, threads);
            assert_eq!(dst, want.iter().map(|w| 2.0 * w).collect::<Vec<_>>());
        }
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn a_view_past_the_slice_is_refused() {
        let mut dst = vec![0.0; 4];
        product(
            (2, 2, 2),
            &mut dst,
            View::rows(0, 2),
            &[0.0; 4],
            View::rows(1, 2),
            &[0.0; 4],
            View::rows(0, 2),
            false,
            Threads::One,
        );
    }
}
