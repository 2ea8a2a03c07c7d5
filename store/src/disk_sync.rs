//! The syncs sled's flush leaves out, which make a flushed write survive a power cut and
//! not only the death of the process.
//!
//! sled 0.34 writes its log with `pwrite` and syncs each buffer with
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`. That hands the data to the
//! device, which is all a killed process needs (the kernel has it either way), but it
//! writes none of the file's metadata and flushes no device cache (sync_file_range(2):
//! "there are no guarantees that data will be available after a crash"). sled appends
//! its segments at the end of its log file, so after a power cut the log may come back
//! shorter than its last flushes, and a device with a volatile write cache (`write back`
//! in `/sys/block/*/queue/write_cache`, as on the machines this project is measured on)
//! may not have written them at all. sled's background thread `fsync`s the log every
//! 500 ms, so about half a second of acknowledged writes was at stake. Values too large
//! for its log buffers (over about 128 KiB with the default segments: a node of large
//! entries) go to files of their own under `blobs/`, which sled never syncs, nor the
//! folder that names them: after a power cut the log can name a blob that is not there,
//! and sled's recovery skips that update without a word.
//!
//! [`DiskSync::sync`] runs after each of sled's flushes that an acknowledgement waits on
//! ([`crate::failure::FailureLatch::flush`]), and once on a backup's finished copy: the
//! blob files not yet synced and their folder first, then `fdatasync` of the log, which
//! writes the file's size with its data and flushes the device's cache.
//! docs/benchmarks.md has what it costs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::{Result, StoreError};

/// sled's settings file in a store: empty after a power cut that came before its
/// contents were written out, which sled takes as no file and writes again.
const CONF: &str = "conf";

/// The folder in a store where sled keeps its large values, a file each.
const BLOBS: &str = "blobs";

/// How long after its last change a blob file is taken as written whole. sled writes a
/// blob in three `write`s in a row and never changes it after; a blob this much older
/// than a look is not looked at again.
const SETTLED_AFTER: Duration = Duration::from_secs(1);

/// One store's files to sync: its log, and its blobs.
#[derive(Debug)]
pub(crate) struct DiskSync {
    /// sled's log, `db` in the store's folder.
    log_path: PathBuf,
    /// An open handle to it: `fdatasync` on any descriptor of the file syncs the file.
    log: File,
    /// The folder of the store's blobs.
    blobs: PathBuf,
    /// The blob files synced so far, by name; one look at a time.
    synced: Mutex<HashMap<OsString, Synced>>,
}

/// What a blob file was when it was last synced.
#[derive(Debug, Clone, Copy)]
struct Synced {
    /// Its length: sled only appends to a blob while writing it, so a length that
    /// changed is a blob written since.
    len: u64,
    /// Whether it was last changed long enough before that look ([`SETTLED_AFTER`]) to
    /// be complete; a settled blob is not looked at again.
    settled: bool,
}

impl DiskSync {
    /// Opens the store whose log is `log_path` (sled's `db` in its folder) for syncing,
    /// and syncs sled's settings file (`conf`, which it writes once and never syncs), the
    /// folder and the folder above once: a store made by this open has its files named
    /// durably before anything in them is acknowledged.
    pub(crate) fn open(log_path: &Path) -> io::Result<Self> {
        let log = File::open(log_path)?;
        let folder = log_path.parent().unwrap_or(Path::new("."));
        if let Ok(conf) = File::open(folder.join(CONF)) {
            conf.sync_all()?;
        }
        sync_folder(folder)?;
        // The folder above may be closed to the service's user (a parent of mode 0711):
        // then whoever made the store's folder in it named it, and could have synced it.
        if let Some(above) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_folder(above)?;
        }
        Ok(Self { log_path: log_path.to_owned(), log, blobs: folder.join(BLOBS), synced: Mutex::new(HashMap::new()) })
    }

    /// Syncs what sled's last flush wrote to the device: the blob files written since
    /// the last sync, then the log. Returns how many blob files it synced; an error
    /// names the file or folder whose sync failed.
    pub(crate) fn sync(&self) -> Result<usize> {
        let blobs = self.sync_blobs()?;
        self.log.sync_data().map_err(failed(&self.log_path))?;
        Ok(blobs)
    }

    /// Syncs the blob files not synced as they are now, and their folder if any is new.
    fn sync_blobs(&self) -> Result<usize> {
        let mut synced = self.synced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let began = SystemTime::now();
        let items = match std::fs::read_dir(&self.blobs) {
            Ok(items) => items,
            // A store sled never opened here (a test's log file of its own).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(failed(&self.blobs)(e)),
        };
        let mut now = HashMap::with_capacity(synced.len());
        let (mut fresh, mut named) = (0, false);
        for item in items {
            let item = item.map_err(failed(&self.blobs))?;
            let name = item.file_name();
            let known = synced.get(&name).copied();
            if let Some(known) = known.filter(|k| k.settled) {
                now.insert(name, known);
                continue;
            }
            let meta = match item.metadata() {
                Ok(meta) => meta,
                // Removed by sled since the folder was read: nothing names it any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(&item.path())(e)),
            };
            if known.map(|k| k.len) != Some(meta.len()) {
                let path = item.path();
                match File::open(&path) {
                    Ok(file) => file.sync_all().map_err(failed(&path))?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(failed(&path)(e)),
                }
                fresh += 1;
                named |= known.is_none();
            }
            let settled = meta.modified().ok().and_then(|m| m.checked_add(SETTLED_AFTER)).is_some_and(|m| m < began);
            now.insert(name, Synced { len: meta.len(), settled });
        }
        if named {
            sync_folder(&self.blobs).map_err(failed(&self.blobs))?;
        }
        *synced = now;
        Ok(fresh)
    }
}

#[cfg(test)]
impl DiskSync {
    /// Syncs for a store in `folder` whose log refuses every sync: its handle is a
    /// socket's, which `fdatasync` does not take.
    pub(crate) fn failing(folder: &Path) -> Self {
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        Self {
            log_path: folder.join("db"),
            log: File::from(std::os::fd::OwnedFd::from(socket)),
            blobs: folder.join(BLOBS),
            synced: Mutex::new(HashMap::new()),
        }
    }
}

/// The error of a sync of `path` that failed.
fn failed(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Sync { path: path.display().to_string(), error }
}

/// Syncs a folder, so that the names in it survive a power cut. Some file systems will
/// not open a folder for reading or sync one (`EACCES`, `EINVAL`, `EBADF`, as PostgreSQL
/// also allows for): there the names are as durable as the file system makes them, and
/// a store on it must still open, and a backup be put in place there.
pub(crate) fn sync_folder(folder: &Path) -> io::Result<()> {
    let refused = |e: &io::Error, codes: &[rustix::io::Errno]| {
        e.raw_os_error().is_some_and(|code| codes.iter().any(|c| c.raw_os_error() == code))
    };
    use rustix::io::Errno;
    match File::open(folder) {
        Ok(file) => match file.sync_all() {
            Err(e) if refused(&e, &[Errno::INVAL, Errno::BADF]) => Ok(()),
            synced => synced,
        },
        Err(e) if refused(&e, &[Errno::ACCESS, Errno::ISDIR]) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A value too large for sled's log buffers, which it writes to a blob file.
    fn blob_sized(fill: u8) -> Vec<u8> {
        vec![fill; 300 * 1024]
    }

    /// Every blob file sled writes is synced at the sync after the flush that wrote it,
    /// once: a store with no new blob syncs none, and one that grew after its first sync
    /// (sled still writing it) is synced again.
    #[test]
    fn each_blob_file_sled_writes_is_synced_once_after_the_flush_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let disk = DiskSync::open(&dir.path().join("db")).unwrap();
        db.insert("small", "value").unwrap();
        db.flush().unwrap();
        assert_eq!(disk.sync().unwrap(), 0, "a small value makes no blob");

        db.insert("large", blob_sized(1)).unwrap();
        db.flush().unwrap();
        let blobs = || std::fs::read_dir(dir.path().join(BLOBS)).unwrap().count();
        assert!(blobs() >= 1, "sled wrote no blob for a value of 300 KiB");
        assert_eq!(disk.sync().unwrap(), blobs());
        assert_eq!(disk.sync().unwrap(), 0, "synced again with nothing new");

        db.insert("larger", blob_sized(2)).unwrap();
        db.flush().unwrap();
        let before = blobs();
        assert!(disk.sync().unwrap() >= 1, "the new blob was not synced");
        assert_eq!(disk.sync().unwrap(), 0);

        // A blob file that grew since it was synced: sled writes a blob in three writes,
        // and a flush of other writes may come between them.
        let growing = dir.path().join(BLOBS).join("999999999");
        std::fs::write(&growing, b"crc!").unwrap();
        assert_eq!(disk.sync().unwrap(), 1);
        std::fs::write(&growing, b"crc!kind and data").unwrap();
        assert_eq!(disk.sync().unwrap(), 1, "a blob that grew was not synced again");
        assert_eq!(disk.sync().unwrap(), 0);
        assert_eq!(blobs(), before + 1);
    }

    /// A sync the device refuses is an error: the flush it follows must not be
    /// acknowledged (see `failure::tests`).
    #[test]
    fn a_log_that_cannot_be_synced_fails_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskSync::failing(dir.path());
        let err = disk.sync().unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert!(err.to_string().contains(&format!("syncing {}/db to the device", dir.path().display())), "{err}");
    }
}
