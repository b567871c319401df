//! Sharing identical weight pages between backends through the kernel's same-page merging (KSM).
//!
//! candle keeps weights in memory each process owns, so every backend that loads a model holds its own copy.
//! Linux can merge identical private pages across processes when they are marked mergeable and the
//! administrator runs KSM (`echo 1 > /sys/kernel/mm/ksm/run`). Process-wide marking (PR_SET_MEMORY_MERGE)
//! needs CAP_SYS_RESOURCE, which the server does not have, so after each model load the backend marks its
//! anonymous private mappings with madvise(MADV_MERGEABLE), which needs no privilege.

use std::io::BufRead;

/// Marks this process's anonymous read-write private mappings mergeable. Mappings marked before are marked
/// again, which the kernel accepts.
pub fn mark_mergeable() {
    let Ok(maps) = std::fs::File::open("/proc/self/maps") else { return };
    for line in std::io::BufReader::new(maps).lines().map_while(Result::ok) {
        // "start-end perms offset dev inode [path]": anonymous mappings have inode 0 and no path.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let anonymous = fields.len() == 5 || fields.get(5) == Some(&"[heap]");
        if fields.len() < 5 || fields[1] != "rw-p" || fields[4] != "0" || !anonymous {
            continue;
        }
        let Some((start, end)) = fields[0].split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: advice on a whole mapping of this process; MADV_MERGEABLE changes no contents. A refusal
        // (a mapping the kernel cannot merge) only means those pages stay unshared.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_MERGEABLE) };
    }
}
