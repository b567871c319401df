//! Marks the kernel tests that this machine's CPU cannot run as ignored, with the reason, so that `cargo test`
//! counts them rather than passing them without running anything. The tests check again as they run: a test
//! binary may be run on another machine than the one that built it.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for lack in ["avx512", "avx512_vnni", "amx"] {
        println!("cargo::rustc-check-cfg=cfg(cpu_lacks_{lack})");
    }
    let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    let (avx512, vnni, amx) = if native { features() } else { (false, false, false) };
    for (has, lack) in [(avx512, "avx512"), (vnni, "avx512_vnni"), (amx, "amx")] {
        if !has {
            println!("cargo::rustc-cfg=cpu_lacks_{lack}");
        }
    }
}

/// AVX-512F, AVX-512 VNNI (with BW), and AMX's 8-bit tiles (cpuid leaf 7: EDX bits 24 and 25; std's check for
/// them is not stable yet).
#[cfg(target_arch = "x86_64")]
fn features() -> (bool, bool, bool) {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let vnni =
        avx512 && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni");
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    (avx512, vnni, vnni && leaf7.edx & (0b11 << 24) == (0b11 << 24))
}

#[cfg(not(target_arch = "x86_64"))]
fn features() -> (bool, bool, bool) {
    (false, false, false)
}
