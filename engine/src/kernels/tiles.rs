//! The tiling that the packed f32 products (kernels::packed) and the 8-bit ones (kernels::vnni, kernels::amx)
//! share: weight rows in tiles of 16 (one 64-byte vector of f32 per column), the output in rows of whole tiles,
//! and the product cut into tasks of a few input rows by a few tiles, run over the compute threads.

use rayon::prelude::*;

/// Weight rows side by side in one vector.
pub const TILE: usize = 16;

/// Input rows row0.. and weight tiles tile0.. that one task multiplies.
#[derive(Clone, Copy)]
pub struct Task {
    pub row0: usize,
    pub rows: usize,
    pub tile0: usize,
    pub tiles: usize,
}

/// The output, written by many tasks at disjoint places.
#[derive(Clone, Copy)]
pub struct Destination(*mut f32);
// SAFETY: tasks write disjoint elements (see `run_tasks`).
unsafe impl Send for Destination {}
unsafe impl Sync for Destination {}

impl Destination {
    /// The pointer (a method, so closures capture the Sync wrapper rather than its field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `multiply` on every task of a product of m input rows by n weight rows, tasks of up to `rows` rows by
/// `tiles` tiles, in parallel; returns the m output rows of n. Tasks go row group after row group inside a group
/// of tiles, so that a group's weights stay in cache while every row group goes past them. `multiply` gets the
/// task, the output (m rows of `width`, whole tiles) and `width`.
///
/// # Safety
/// `multiply` must write every output element of its task's rows and tiles, and nothing else: the output is not
/// zeroed first (that took a tenth of an 8-bit array embed), and its length is set once the tasks are done.
pub unsafe fn run_tasks(
    m: usize,
    n: usize,
    rows: usize,
    tiles: usize,
    multiply: impl Fn(Task, Destination, usize) + Sync,
) -> Vec<f32> {
    let all_tiles = n.div_ceil(TILE);
    let width = all_tiles * TILE;
    let mut out: Vec<f32> = Vec::with_capacity(m * width);
    let at = Destination(out.as_mut_ptr());
    let row_groups = m.div_ceil(rows);
    (0..all_tiles.div_ceil(tiles) * row_groups).into_par_iter().for_each(|task| {
        let (tile0, row0) = ((task / row_groups) * tiles, (task % row_groups) * rows);
        let task = Task { row0, rows: (m - row0).min(rows), tile0, tiles: (all_tiles - tile0).min(tiles) };
        multiply(task, at, width);
    });
    // SAFETY: the tasks wrote all m rows of `width` (the caller's promise).
    unsafe { out.set_len(m * width) };
    without_padding(out, m, n)
}

/// The m output rows without the columns of the last tile's padding rows: n of each.
fn without_padding(out: Vec<f32>, m: usize, n: usize) -> Vec<f32> {
    let width = out.len() / m.max(1);
    if width == n {
        return out;
    }
    out.chunks_exact(width).flat_map(|row| &row[..n]).copied().collect()
}

/// A bias of n values (zeros without one) followed by zeros to a whole tile, as the kernels add it.
pub fn tile_bias_values(bias: Option<&[f32]>, n: usize) -> Vec<f32> {
    let mut padded = vec![0f32; n.next_multiple_of(TILE)];
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "a bias of n values");
        padded[..n].copy_from_slice(bias);
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output element is written by exactly one task, whatever m, n and task sizes.
    #[test]
    fn tasks_cover_the_output_once() {
        for (m, n, rows, tiles) in
            [(1usize, 1usize, 8usize, 3usize), (9, 17, 8, 3), (33, 100, 32, 16), (8, 48, 8, 3), (70, 300, 8, 3)]
        {
            let width = n.div_ceil(TILE) * TILE;
            let writes: Vec<std::sync::atomic::AtomicU32> = (0..m * width).map(|_| 0.into()).collect();
            // SAFETY: each task writes exactly its own elements.
            let out = unsafe {
                run_tasks(m, n, rows, tiles, |task, out, w| {
                    assert_eq!(w, width);
                    assert!(task.rows >= 1 && task.rows <= rows && task.tiles >= 1 && task.tiles <= tiles);
                    for r in task.row0..task.row0 + task.rows {
                        for c in task.tile0 * TILE..(task.tile0 + task.tiles) * TILE {
                            writes[r * width + c].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            *out.get().add(r * width + c) = (r * 1000 + c) as f32;
                        }
                    }
                })
            };
            assert!(writes.iter().all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 1), "m {m} n {n}");
            let want: Vec<f32> = (0..m).flat_map(|r| (0..n).map(move |c| (r * 1000 + c) as f32)).collect();
            assert_eq!(out, want, "m {m} n {n}");
        }
    }
}
