//! Loops compiled for the widest vectors the CPU has, chosen when they run.
//!
//! Why: the extension is built for any x86-64, where LLVM may only use SSE2 (4 floats a vector), and a build for one
//! CPU (target-cpu=native) would crash on another. A loop passed to `widest` is compiled once more inside a function
//! allowed AVX-512 (16 floats) and once inside one allowed AVX2 and FMA (8 floats); the CPU's features pick one. Used
//! by the fused ops' element-wise loops (GELU, dropout), engine::kernels::vnni's rounding of inputs and
//! engine::kernels::matvec's dot products on CPUs without AVX-512; in SSE2, GELU alone took 15% of an 8-bit array embed
//! of MiniLM (perf), and f32 generation of GPT-2 size ran 12% slower. Softmax and the norms do not use it yet.

/// Runs `f`, compiled for the widest vector instructions this CPU has. `f` must be a closure marked
/// `#[inline(always)]` (else LLVM may leave it a call, compiled for SSE2) around a loop LLVM can vectorise (plain
/// arithmetic, no calls into the C library, and no closures or function values called inside: see ops' zip_map).
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::avx512() {
            // SAFETY: the CPU has the features the function is compiled with.
            return unsafe { avx512(f) };
        }
        if super::cpu::avx2_fma() {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
