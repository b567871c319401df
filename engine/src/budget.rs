//! The memory one call may take (the pg_ai.max_memory_per_call setting). Sizes that inputs, configs or
//! training options choose are checked against it before anything that size is allocated: Rust ends the
//! process when an allocation fails, and a backend that ends that way makes PostgreSQL reset every session.

use crate::error::{AiError, ErrorKind, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget in bytes; 0: a quarter of the machine's memory.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Sizes up to this are not what the budget guards against: they pass without reading the system's limits (a
/// few files in /proc and /sys), which would cost a short call a few percent.
const SMALL: usize = 16 << 20;

/// The setting in bytes, or a quarter of the machine's memory.
fn configured() -> usize {
    match LIMIT.load(Ordering::Relaxed) {
        0 => physical_memory() / 4,
        bytes => bytes,
    }
}

/// The budget in bytes: the setting (or a quarter of the machine's memory), and never more than the process can
/// still map under its address-space limit (prlimit, ulimit -v) or the kernel will still commit where
/// vm.overcommit_memory is 2, as production servers often run.
pub fn limit() -> usize {
    configured()
        .min(address_space_left())
        .min(commit_left())
        .min(cgroup_left(&|path| std::fs::read_to_string(path).ok()))
}

/// Bytes the process's memory cgroup still allows (v2: memory.max less memory.current; v1: memory.limit_in_bytes
/// less memory.usage_in_bytes): beyond it the kernel's OOM killer ends a backend, which resets every session
/// too. `read` reads a file (a parameter, for the tests).
fn cgroup_left(read: &dyn Fn(&str) -> Option<String>) -> usize {
    let number = |path: String| read(&path)?.trim().parse::<usize>().ok();
    let left = |limit: Option<usize>, used: Option<usize>| match (limit, used) {
        (Some(limit), Some(used)) => limit.saturating_sub(used),
        _ => usize::MAX,
    };
    for line in read("/proc/self/cgroup").unwrap_or_default().lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            // v2: "max" for no limit does not parse, which leaves the budget alone.
            let dir = format!("/sys/fs/cgroup{path}");
            return left(number(format!("{dir}/memory.max")), number(format!("{dir}/memory.current")));
        }
        if controllers.split(',').any(|c| c == "memory") {
            // v1, where a container may see its own cgroup as the root of the hierarchy.
            for dir in [format!("/sys/fs/cgroup/memory{path}"), "/sys/fs/cgroup/memory".to_string()] {
                let limit = number(format!("{dir}/memory.limit_in_bytes"));
                if limit.is_some() {
                    return left(limit, number(format!("{dir}/memory.usage_in_bytes")));
                }
            }
        }
    }
    usize::MAX
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
    if bytes <= SMALL.min(configured()) {
        return Ok(());
    }
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

    #[test]
    fn reads_what_the_memory_cgroup_leaves() {
        let files = |entries: &'static [(&'static str, &'static str)]| {
            move |path: &str| entries.iter().find(|(p, _)| *p == path).map(|(_, text)| text.to_string())
        };
        let v2 = files(&[
            ("/proc/self/cgroup", "0::/system.slice/postgresql.service\n"),
            ("/sys/fs/cgroup/system.slice/postgresql.service/memory.max", "4294967296\n"),
            ("/sys/fs/cgroup/system.slice/postgresql.service/memory.current", "1073741824\n"),
        ]);
        assert_eq!(cgroup_left(&v2), 3 << 30);
        let v2_unlimited = files(&[
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/memory.max", "max\n"),
            ("/sys/fs/cgroup/memory.current", "1073741824\n"),
        ]);
        assert_eq!(cgroup_left(&v2_unlimited), usize::MAX);
        // v1 inside a container: the path named in /proc/self/cgroup is not there, the root is.
        let v1 = files(&[
            ("/proc/self/cgroup", "5:devices:/\n4:memory:/docker/abc\n0::/\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n"),
            ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "536870912\n"),
        ]);
        assert_eq!(cgroup_left(&v1), 3 << 29);
        assert_eq!(cgroup_left(&files(&[])), usize::MAX);
    }
}
