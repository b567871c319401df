//! What this CPU can run, and the environment switches that keep pg_ai's own kernels off, in one place. std
//! caches its feature checks after the first; the switches are read once per process.

use std::sync::OnceLock;

/// AVX-512F: the packed f32 products and the one-row products of generation.
#[inline]
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// AVX2 with FMA: the widest vectors of CPUs without AVX-512 (see simd::widest).
#[inline]
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// AVX-512 VNNI (with BW): pg_ai's 8-bit products.
#[inline]
pub fn avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512() && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// AVX-VNNI (256-bit), which candle's tiled 8-bit kernels use where AVX-512 VNNI is missing.
#[inline]
pub fn avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn switched_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

/// PG_AI_PORTABLE (set to anything but 0): pg_ai's CPU kernels off everywhere, candle's own operations only.
pub fn portable() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| switched_on("PG_AI_PORTABLE"))
}

/// PG_AI_NO_AMX (set to anything but 0): the 8-bit products on AVX-512 VNNI where the CPU also has AMX.
pub fn amx_switched_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| switched_on("PG_AI_NO_AMX"))
}
