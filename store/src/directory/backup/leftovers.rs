//! Copies a backup left beside its destination when the process making it died (a
//! SIGKILL, a power cut), found and removed by the next backup to that destination.
//!
//! A copy is written in `DEST.partial.<pid>-<nanoseconds>` and renamed to `DEST` once
//! whole; any failure the process lives through removes it. One whose process died
//! stays: a folder no tool reads, holding every entry (`userPassword` values too), and as
//! large as the store. The next backup to `DEST` is the one that knows its name, so it
//! removes it, but only when both say its maker is gone:
//! - no process of that pid runs here (a pid reused since keeps the folder: harmless);
//! - nothing in it was written for [`QUIET_FOR`]. A copy under way writes every few
//!   seconds; this guards against a process this host cannot see, another container's
//!   or another host's copying to the same shared folder.
//!
//! Both wrong the other way round would remove a live copy, which its maker then fails
//! to finish, saying so: nothing that was committed is lost either way.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a leftover must have been left unwritten before it is taken as dead.
pub(super) const QUIET_FOR: Duration = Duration::from_secs(60);

/// The name of the folder a copy for `dest` is written in, by process `pid`.
pub(super) fn partial_name(dest_name: &str, pid: u32, nanos: u32) -> String {
    format!("{dest_name}.partial.{pid}-{nanos}")
}

/// The process that wrote the leftover `name`, if it is one of `dest_name`'s.
fn maker(dest_name: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(dest_name)?.strip_prefix(".partial.")?;
    let (pid, nanos) = rest.split_once('-')?;
    nanos.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a process `pid` runs here (one of another user's included).
fn runs(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// The newest modification time of `folder` and everything in it, as far as it can be
/// read (an unreadable part counts as written now: it is not taken as dead).
fn last_written(folder: &Path) -> SystemTime {
    let now = SystemTime::now();
    let Ok(meta) = std::fs::symlink_metadata(folder) else { return now };
    let mut newest = meta.modified().unwrap_or(now);
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(folder) else { return now };
        for entry in entries {
            let Ok(entry) = entry else { return now };
            newest = newest.max(last_written(&entry.path()));
        }
    }
    newest
}

/// Removes the copies of backups to `dest` whose makers are gone (see the module docs),
/// returning the folders removed. One that cannot be removed is left, with a warning:
/// the backup under way does not depend on it.
pub(super) fn remove_dead(dest: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(dest_name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let Ok(entries) = std::fs::read_dir(parent) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| maker(dest_name, name)) else { continue };
        let path = entry.path();
        let quiet = SystemTime::now().duration_since(last_written(&path)).unwrap_or_default();
        if runs(pid) || quiet < QUIET_FOR || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(copy = %path.display(), pid, "removed a backup's copy its dead process left");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(copy = %path.display(), error = %e, "removing a backup's copy its dead process left")
            }
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A pid no process has: past the kernel's largest (`pid_max` is at most 2^22).
    const NO_PROCESS: u32 = (1 << 22) + 7;

    /// Sets the modification time of `path` and what it holds to `age` ago.
    fn age(path: &Path, age: Duration) {
        let then = SystemTime::now() - age;
        let set = |p: &Path| std::fs::File::open(p).unwrap().set_modified(then).unwrap();
        for entry in std::fs::read_dir(path).unwrap() {
            set(&entry.unwrap().path());
        }
        set(path);
    }

    /// A leftover copy `name` beside `dest`, with a file in it, last written `ago`.
    fn leftover(dest: &Path, name: &str, ago: Duration) -> PathBuf {
        let path = dest.with_file_name(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("db"), b"half a store").unwrap();
        age(&path, ago);
        path
    }

    #[test]
    fn the_copy_of_a_dead_process_left_unwritten_is_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("backup");
        let long = QUIET_FOR * 2;
        let dead = leftover(&dest, &partial_name("backup", NO_PROCESS, 12), long);
        // This process runs: its copy may be under way (a second backup at once).
        let live = leftover(&dest, &partial_name("backup", std::process::id(), 34), long);
        // Written to within the minute: perhaps a copy of a process this host cannot see.
        let recent = leftover(&dest, &partial_name("backup", NO_PROCESS, 56), QUIET_FOR / 2);
        // Another destination's, and names a backup never makes.
        let other = leftover(&dest, &partial_name("backup2", NO_PROCESS, 78), long);
        let odd = leftover(&dest, &format!("backup.partial.{NO_PROCESS}"), long);
        let file = dest.with_file_name(partial_name("backup", NO_PROCESS, 90));
        std::fs::write(&file, b"not a folder").unwrap();

        assert_eq!(remove_dead(&dest), std::slice::from_ref(&dead));
        assert!(!dead.exists());
        for kept in [live, recent, other, odd, file] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert_eq!(remove_dead(&dest), Vec::<PathBuf>::new(), "nothing more to remove");
    }

    #[test]
    fn a_leftover_with_one_file_written_lately_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("backup");
        let path = leftover(&dest, &partial_name("backup", NO_PROCESS, 1), QUIET_FOR * 2);
        std::fs::create_dir(path.join("blobs")).unwrap();
        std::fs::write(path.join("blobs").join("1"), b"a blob").unwrap();
        age(&path, QUIET_FOR * 2);
        // The blob alone is fresh, as a copy under way writes one.
        assert!(remove_dead(&dest).is_empty());
        age(&path.join("blobs"), QUIET_FOR * 2);
        assert_eq!(remove_dead(&dest), [path]);
    }

    #[test]
    fn a_process_is_found_running_or_not() {
        assert!(runs(std::process::id()));
        assert!(runs(1), "init runs, though another user's");
        assert!(!runs(NO_PROCESS));
    }
}
