//! engine::kernels::vnni's 8-bit products on Intel AMX (Sapphire Rapids and later), for 32 rows or more: one tile
//! instruction multiplies 16 rows by 16 columns over 64 values, eight times the work of AVX-512's vpdpbusd.
//! The weights keep engine::kernels::vnni's packing, which is AMX's layout for its second operand, and the inputs their
//! +128 offset (tdpbusd multiplies unsigned bytes by signed ones, as vpdpbusd does).
//!
//! Written in inline assembly: Rust's AMX intrinsics are not stable, and no crate offers an 8-bit product on
//! AMX. A thread's tile configuration is saved before and restored after each block, so other code in the
//! process using the tiles with its own (candle's GGUF kernels) is left as it was.

use super::tiles::{Task, TILE};
use super::vnni::{add_block, VnniMatrix, BLOCK};
use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Rows of inputs one task multiplies: two tiles of 16.
pub const ROWS: usize = 32;

/// Whether the CPU has AMX with 8-bit products, the OS saves its state, and Linux lets this process use it.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if super::cpu::amx_switched_off() || !super::vnni::available() {
            return false;
        }
        // SAFETY: cpuid is always there on x86-64; xgetbv is only run where cpuid says the OS enabled it.
        let cpu = unsafe {
            let leaf7 = __cpuid_count(7, 0);
            let os_xsave = __cpuid(1).ecx & (1 << 27) != 0;
            let tiles = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 25) != 0;
            // XCR0 bits 17 and 18: the OS saves the tile configuration and data.
            tiles && os_xsave && (_xgetbv(0) & (0b11 << 17)) == (0b11 << 17)
        };
        cpu && permitted()
    })
}

/// Linux hands out the large tile state only to processes that ask (arch_prctl ARCH_REQ_XCOMP_PERM).
#[cfg(target_os = "linux")]
fn permitted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn permitted() -> bool {
    false
}

/// The 64-byte tile configuration ldtilecfg reads: palette 1, then bytes per row and rows of each tile.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// A task of up to 32 input rows times up to 16 weight tiles (16 weight rows each), over all of k, into `out`
/// (rows of `width`). `inputs` must hold 32 rows from the task's first on (padding rows included).
///
/// # Safety
/// `available()` must be true; `out` must have room for the rows and columns written.
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn multiply(
    matrix: &VnniMatrix,
    inputs: &[u8],
    input_scales: &[f32],
    task: Task,
    out: *mut f32,
    width: usize,
) {
    let Task { row0, rows, tile0, tiles } = task;
    let tiles = tile0..tile0 + tiles;
    assert!(inputs.len() >= (row0 + ROWS) * matrix.k_padded && rows <= ROWS);
    // tmm0..3 the sums (rows 0-15 and 16-31 by tiles 0 and 1), tmm4-5 the inputs, tmm6-7 the weights: each 16
    // rows of 64 bytes. Palette 1 has 8 tiles; the entries of tiles 8-15 must be 0, or ldtilecfg faults.
    // Loaded once per call, not per pair: per pair, loading it was a quarter of this function's time (perf).
    let mut mine = Config { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
    mine.bytes_per_row[..8].fill(64);
    mine.rows[..8].fill(16);
    let mut saved = Config { palette: 0, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
    asm!("sttilecfg [{0}]", "ldtilecfg [{1}]", in(reg) &mut saved, in(reg) &mine, options(nostack));
    // Set once here rather than per pair: zeroing it took 5% of an 8-bit array embed.
    let mut sums = Sums([0; 4 * 256]);
    for tile0 in tiles.clone().step_by(2) {
        let pair_tiles = (tiles.end - tile0).min(2);
        pair(matrix, inputs, input_scales, row0, rows, tile0, pair_tiles, &mut sums, out, width);
    }
    if saved.palette == 0 {
        asm!("tilerelease", options(nostack));
    } else {
        asm!("ldtilecfg [{0}]", in(reg) &saved, options(nostack));
    }
}

/// The four tiles of sums as tilestored writes them: 16 rows of 16 i32 each.
#[repr(align(64))]
struct Sums([i32; 4 * 256]);

/// Up to 32 rows times one or two tiles, with the tiles configured.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair(
    matrix: &VnniMatrix,
    inputs: &[u8],
    input_scales: &[f32],
    row0: usize,
    rows: usize,
    tile0: usize,
    tiles: usize,
    sums: &mut Sums,
    out: *mut f32,
    width: usize,
) {
    let (k_padded, blocks) = (matrix.k_padded, matrix.k_padded / BLOCK);
    let a0 = inputs.as_ptr().add(row0 * k_padded);
    let a1 = a0.add(16 * k_padded);
    let tile_bytes = TILE * k_padded;
    let b0 = matrix.packed.as_ptr().add(tile0 * tile_bytes);
    // A single tile multiplies its weights twice; the second half is not stored.
    let b1 = if tiles == 2 { b0.add(tile_bytes) } else { b0 };
    // A single tile's second column of totals is never stored; it starts from the first's bias.
    let mut totals = [[matrix.tile_bias(tile0), matrix.tile_bias(tile0 + tiles - 1)]; ROWS];
    for b in 0..blocks {
        // Two steps of 64 values make one block of 128; weights advance 64 bytes per group of 4 values.
        let (k0, g0) = (b * BLOCK, b * BLOCK / 4 * 64);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{a0} + {sa}*1 + 64]",
            "tileloadd tmm6, [{b0} + {sb}*1 + 1024]",
            "tileloadd tmm7, [{b1} + {sb}*1 + 1024]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1 + 64]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "tilestored [{c} + {sc}*1], tmm0",
            "tilestored [{c} + {sc}*1 + 1024], tmm1",
            "tilestored [{c} + {sc}*1 + 2048], tmm2",
            "tilestored [{c} + {sc}*1 + 3072], tmm3",
            a0 = in(reg) a0.add(k0),
            a1 = in(reg) a1.add(k0),
            b0 = in(reg) b0.add(g0),
            b1 = in(reg) b1.add(g0),
            c = in(reg) sums.0.as_mut_ptr(),
            sa = in(reg) k_padded,
            sb = in(reg) 64usize,
            sc = in(reg) 64usize,
            options(nostack)
        );
        for t in 0..tiles {
            let (scale, offset) = matrix.block_weights(tile0 + t, b);
            for (r, totals) in totals.iter_mut().enumerate().take(rows) {
                // sums: tile (r / 16) * 2 + t, its row r % 16.
                let sum = _mm512_loadu_si512(sums.0.as_ptr().add(((r / 16) * 2 + t) * 256 + (r % 16) * 16) as *const _);
                totals[t] = add_block(totals[t], sum, scale, offset, input_scales[(row0 + r) * blocks + b]);
            }
        }
    }
    for (r, totals) in totals.iter().enumerate().take(rows) {
        for (t, total) in totals.iter().enumerate().take(tiles) {
            _mm512_storeu_ps(out.add((row0 + r) * width + (tile0 + t) * TILE), *total);
        }
    }
}
