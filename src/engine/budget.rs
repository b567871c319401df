//! The memory one call may take (the pg_ai.max_memory_per_call setting). Sizes that inputs, configs or
//! training options choose are checked against it before anything that size is allocated: Rust ends the
//! process when an allocation fails, and a backend that ends that way makes PostgreSQL reset every session.

use super::error::{AiError, ErrorKind, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget in bytes; 0: a quarter of the machine's memory.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The budget in bytes: the setting (or a quarter of the machine's memory), and never more than the process can
/// still map under its address-space limit (prlimit, ulimit -v) or the kernel will still commit where
/// vm.overcommit_memory is 2, as production servers often run.
pub fn limit() -> usize {
    let configured = match LIMIT.load(Ordering::Relaxed) {
        0 => physical_memory() / 4,
        bytes => bytes,
    };
    configured.min(address_space_left()).min(commit_left())
}

/// Bytes of address space left under RLIMIT_AS.
fn address_space_left() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    // /proc/self/statm: the process's size in pages first.
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads system values.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    (limit.rlim_cur as usize).saturating_sub(pages.saturating_mul(page))
}

/// Bytes the kernel will still commit under strict overcommit (vm.overcommit_memory = 2); unbounded otherwise.
fn commit_left() -> usize {
    let strict = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|mode| mode.trim() == "2");
    if !strict {
        return usize::MAX;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |key: &str| {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
    };
    match (kb("CommitLimit:"), kb("Committed_AS:")) {
        (Some(limit), Some(committed)) => limit.saturating_sub(committed).saturating_mul(1024),
        _ => usize::MAX,
    }
}

fn physical_memory() -> usize {
    // SAFETY: sysconf only reads system values.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages <= 0 || page <= 0 {
        return 4 << 30;
    }
    (pages as usize).saturating_mul(page as usize)
}

/// The product of `factors`, saturating: sizes from configs and options can be absurd.
pub fn product(factors: &[usize]) -> usize {
    factors.iter().fold(1usize, |acc, &f| acc.saturating_mul(f))
}

/// Refuses `bytes` for `what` (in words: "the position table of max_position_embeddings 2000000000") when it is
/// beyond the budget: 53200, as PostgreSQL answers memory it cannot have.
pub fn check(bytes: usize, what: impl FnOnce() -> String) -> Result<()> {
    check_within(bytes, limit(), what)
}

fn check_within(bytes: usize, limit: usize, what: impl FnOnce() -> String) -> Result<()> {
    if bytes <= limit {
        return Ok(());
    }
    Err(AiError::new(
        ErrorKind::OutOfMemory,
        format!("{} would take {}, more than the {} one call may use", what(), size(bytes), size(limit)),
    )
    .with_hint("A superuser can raise pg_ai.max_memory_per_call; or give a smaller input or size."))
}

/// Bytes as PostgreSQL writes sizes (pg_size_pretty's units, 1 kB = 1024 bytes), to one decimal.
pub fn size(bytes: usize) -> String {
    const UNITS: [(&str, f64); 4] =
        [("TB", 1_099_511_627_776.0), ("GB", 1_073_741_824.0), ("MB", 1_048_576.0), ("kB", 1024.0)];
    if bytes == usize::MAX {
        return "more than any machine has".to_string();
    }
    let b = bytes as f64;
    UNITS
        .iter()
        .find(|(_, unit)| b >= *unit)
        .map_or(format!("{bytes} bytes"), |(name, unit)| format!("{:.1} {name}", b / unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_with_53200_and_saturates() {
        // The setting is process-wide and other tests run alongside: check against a given limit.
        assert!(check_within(1 << 20, 1 << 20, || "x".into()).is_ok());
        let e = check_within((1 << 20) + 1, 1 << 20, || "the table".into()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutOfMemory);
        assert_eq!(e.message, "the table would take 1.0 MB, more than the 1.0 MB one call may use");
        assert_eq!(product(&[usize::MAX, 2]), usize::MAX);
        assert_eq!(size(usize::MAX), "more than any machine has");
        assert_eq!(size(5 << 29), "2.5 GB");
        assert_eq!(size(512), "512 bytes");
        assert!(limit() > 0);
    }
}
