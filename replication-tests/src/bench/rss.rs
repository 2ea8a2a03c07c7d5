//! Memory of the child processes, read from `/proc/PID/status`: `VmHWM` is the peak
//! resident set the kernel recorded over the process's life, so one read at the end
//! of a workload is its peak, with no sampling to miss it.

use anyhow::{Context, Result};

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_field(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_field(&text, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn parse_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of process `pid`, in bytes.
pub fn peak(pid: u32) -> Result<u64> {
    status_field(pid, "VmHWM")
}

/// Current resident set size of process `pid`, in bytes.
pub fn current(pid: u32) -> Result<u64> {
    status_field(pid, "VmRSS")
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Total size of the files under `path` (a store's footprint on disk).
pub fn disk_usage(path: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { disk_usage(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kilobyte_fields_and_not_their_prefixes() {
        let text = "Name:\tx\nVmHWMX:\t1 kB\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(parse_field(text, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_field(text, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_field(text, "VmSwap"), None);
    }

    /// The RSS target is "200 MiB": a figure in MB would read 5% high and miss it early.
    #[test]
    fn sizes_are_reported_in_binary_mebibytes() {
        assert_eq!(mib(200 * 1024 * 1024), 200.0);
        assert_eq!(mib(1536 * 1024), 1.5);
    }

    /// A store is a folder of folders (sled keeps its blobs in one): its size on disk
    /// is every file's under it, not the folder entries' own sizes.
    #[test]
    fn disk_usage_counts_the_files_in_every_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 20]).unwrap();
        std::fs::write(dir.path().join("sub/deeper/c"), [0u8; 30]).unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), 60);
    }

    /// The peak is what the process held at its largest, not what it holds at the end:
    /// after 64 MiB is touched and given back to the kernel, the peak still counts it,
    /// and the current size (the provider's before a refresh, fanout's growth per
    /// session) no longer does. One test, so that no other of these blocks comes and goes
    /// between its reads.
    #[test]
    fn the_peak_remembers_memory_given_back_and_the_current_size_does_not() {
        let me = std::process::id();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let holding = current(me).unwrap();
        drop(block);
        // The kernel's RSS counters are summed from per-CPU parts approximately, so two
        // reads may differ by a little either way; 8 MiB is far above that and far
        // below the 64 MiB a peak read as the current size would lose.
        let peak = peak(me).unwrap();
        assert!(peak + (8 << 20) >= holding, "peak {peak} below the {holding} held before the free");
        let now = current(me).unwrap();
        assert!(now + (32 << 20) <= holding, "now {now}, still near the {holding} held before the free");
    }

    #[test]
    fn our_own_peak_is_at_least_our_current_size() {
        let me = std::process::id();
        assert!(peak(me).unwrap() > 0 && current(me).unwrap() > 0);
        // Within one read of the file: the kernel prints VmHWM as the larger of its
        // recorded peak and the VmRSS it prints beside it. Two reads may disagree
        // either way, since both come from per-CPU counters read approximately (the
        // peak read second came out below the size read first, once in CI).
        let text = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let (peak, now) = (parse_field(&text, "VmHWM").unwrap(), parse_field(&text, "VmRSS").unwrap());
        assert!(peak >= now, "VmHWM {peak} below VmRSS {now}");
    }
}
