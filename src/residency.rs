//! Keeping the driver's own code out of its resident memory once it has
//! started.
//!
//! Most of an idle driver's resident memory is not data but its binary's
//! pages: start-up (TLS, the AWS SDK, kube-rs, clap, tracing) runs code from
//! all over an 11 MB text, and the kernel maps what it faults in, plus the
//! pages around it (fault-around, and whole large page-cache folios on
//! newer kernels). Measured on the 6.18 kernel of our machines: a node
//! process maps ~11 MiB of its file, of which it uses a fraction later.
//!
//! So once every dependency is ready, the driver drops its read-only mappings
//! of the binary from its page tables with `MADV_DONTNEED`. They are file
//! pages: the next use faults the identical bytes back in from the page cache
//! (a minor fault, microseconds), so only what the driver runs from then on
//! comes back (with the kernel's fault-around and folio granularity).
//!
//! The dropped ranges are also marked `MADV_RANDOM`: the kernel maps
//! neighbouring pages on a fault (fault-around) except in such ranges, and
//! under load the controller ran code from so much of its text that it had
//! mapped back 10.3 MiB of its file at 500 requests in flight (release
//! build), nearly all it held at start. The cost is no readahead for these
//! ranges: should the page cache lose the binary, its pages come back from
//! disk one fault at a time.
//!
//! Not done, measured: `MADV_PAGEOUT` as well (it evicts the page-cache
//! folios too, so that refaults come back page by page: node idle RssFile
//! 3.7 MiB instead of ~8 on a debug build) — but every later first use of a
//! code path would then read the disk (a major fault per page; on a node,
//! the first NodeStage after idle would pay them), and a non-root controller
//! may not page out a file it does not own anyway.
//!
//! Only mappings with no anonymous (copied-on-write) page qualify: the RELRO segment is
//! read-only but holds relocated pointers that exist nowhere in the file,
//! and dropping it would crash the process; writable segments are never
//! touched. The page cache itself is untouched (and reclaimable as before);
//! what shrinks is what this process holds mapped: its RSS and PSS, and the
//! active-file pages a container's working set counts.

use std::path::Path;

/// One mapping of the binary from /proc/self/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: usize,
    /// End address (exclusive).
    pub end: usize,
    /// `r-xp`, `r--p`, `rw-p`.
    pub perms: String,
    /// `Anonymous:` in KiB: pages copied on write (relocations), which exist
    /// nowhere in the file. (Private_Dirty would also count file pages that
    /// are merely dirty in the page cache, as a just-written binary's are.)
    pub anonymous_kib: u64,
}

impl Mapping {
    /// Whether dropping it is safe: read-only, and every page the file's own
    /// (nothing relocated or written, so no copy exists only here).
    pub fn droppable(&self) -> bool {
        !self.perms.contains('w') && self.perms.starts_with('r') && self.anonymous_kib == 0
    }
}

/// The mappings of `exe` in an smaps text.
pub fn mappings_of(smaps: &str, exe: &Path) -> Vec<Mapping> {
    let exe = exe.to_string_lossy();
    let mut out: Vec<Mapping> = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A mapping header: range perms offset dev inode [path].
            out.extend(current.take());
            let perms = fields.next().unwrap_or_default().to_string();
            let path = fields.nth(3).unwrap_or_default();
            if path == exe {
                current = Some(Mapping {
                    start,
                    end,
                    perms,
                    anonymous_kib: 0,
                });
            }
        } else if let Some(m) = current.as_mut()
            && first == "Anonymous:"
        {
            m.anonymous_kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out.extend(current);
    out
}

/// Drops the binary's read-only file pages from this process's page tables.
/// Returns the KiB of mappings dropped; logs and gives up on anything
/// unexpected (it is an optimisation only).
pub fn shed_startup_code() -> u64 {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return 0;
    };
    let mut dropped = 0;
    for m in mappings_of(&smaps, &exe).iter().filter(|m| m.droppable()) {
        let (addr, len) = (m.start as *mut libc::c_void, m.end - m.start);
        // SAFETY: the range is one whole mapping of our own binary that is
        // read-only and holds no private modification (checked above), so
        // discarding its pages cannot change what the process reads: the
        // kernel faults the same file bytes back in on the next access.
        let ok = unsafe { libc::madvise(addr, len, libc::MADV_DONTNEED) == 0 };
        // SAFETY: as above; MADV_RANDOM only changes how later faults map
        // the range (see the module docs).
        if ok && unsafe { libc::madvise(addr, len, libc::MADV_RANDOM) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), perms = %m.perms, "MADV_RANDOM on the binary's mapping failed");
        }
        if ok {
            dropped += (len / 1024) as u64;
        } else {
            tracing::debug!(error = %std::io::Error::last_os_error(), perms = %m.perms, "madvise on the binary's mapping failed");
        }
    }
    dropped
}

/// This process's file-backed resident memory (RssFile), KiB.
fn rss_file_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (up to ten minutes) until `ready` holds, then sheds the start-up
/// code once.
pub async fn shed_when_ready(ready: impl Fn() -> bool) {
    for _ in 0..6000 {
        if ready() {
            // Let the first requests after readiness (kubelet's and the
            // sidecars' probes) run their code before it is dropped.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let before = rss_file_kib();
            let kib = tokio::task::spawn_blocking(shed_startup_code)
                .await
                .unwrap_or(0);
            tracing::debug!(
                mapped_kib = kib,
                rss_file_kib_before = before,
                rss_file_kib_after = rss_file_kib(),
                "start-up code unmapped; what runs from now on faults back in"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
559096004000-559097135000 r--p 00000000 fe:00 8106289                    /usr/bin/ebs-csi-driver
Size:              17604 kB
Anonymous:             0 kB
559097135000-5590992ed000 r-xp 01130000 fe:00 8106289                    /usr/bin/ebs-csi-driver
Size:              34528 kB
Private_Dirty:      4924 kB
Anonymous:             0 kB
5590992ed000-5590994e0000 r--p 032e7000 fe:00 8106289                    /usr/bin/ebs-csi-driver
Size:               1996 kB
Anonymous:          1996 kB
5590994e0000-5590994e7000 rw-p 034d9000 fe:00 8106289                    /usr/bin/ebs-csi-driver
Size:                 28 kB
Anonymous:            28 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 42                         /usr/lib/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           132 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_mappings_are_dropped() {
        let maps = mappings_of(SMAPS, Path::new("/usr/bin/ebs-csi-driver"));
        assert_eq!(maps.len(), 4, "libc and the stack are not ours");
        let droppable: Vec<&str> = maps
            .iter()
            .filter(|m| m.droppable())
            .map(|m| m.perms.as_str())
            .collect();
        // rodata and text (dirty in the page cache is fine); not RELRO
        // (relocated: anonymous copies) nor data.
        assert_eq!(droppable, ["r--p", "r-xp"]);
        assert_eq!(maps[2].anonymous_kib, 1996);
        assert_eq!(maps[0].start, 0x559096004000);
    }

    #[test]
    fn shedding_our_own_test_binary_leaves_it_running() {
        // The test binary sheds its own code and goes on running it.
        let kib = shed_startup_code();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(
            kib > 0,
            "some mapping of the test binary was droppable: {:?}",
            mappings_of(&smaps, &exe)
        );
        let v: Vec<u64> = (0..1000).map(|i| i * 3).collect();
        assert_eq!(v.iter().sum::<u64>(), 1_498_500);
        assert_eq!(
            mappings_of(SMAPS, Path::new("/nope")),
            Vec::<Mapping>::new()
        );
    }
}
