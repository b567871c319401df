//! The arithmetic under the models: SIMD dispatch and fast approximations, f32 products on packed weights
//! (AVX-512), one row times a weight (generation), 8-bit products with VNNI and AMX, quantized products split
//! across the compute threads, and the fused ops training differentiates (each with its backward).

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod cpu;
pub mod fast_math;
pub mod fused;
pub mod int8;
pub mod matvec;
pub mod packed;
pub mod row_parts;
pub mod simd;
pub mod tiles;
pub mod vnni;
