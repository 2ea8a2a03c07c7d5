//! The store's failure latch.
//!
//! sled 0.34 keeps the first I/O error it meets while writing its log (a full disk, a
//! file-size limit, a failing device) and returns it from every later read, write and
//! flush of that open database: freeing space does not bring it back, only reopening
//! does, which recovers everything that reached the disk. So a storage I/O error is
//! not a failed operation to retry but the end of this handle. The latch records the
//! first one, so the process learns at once that its store is gone (a provider stops,
//! a consumer refuses to restart agreements on it) instead of each session, write and
//! command finding out separately and retrying in a loop.
//!
//! sled's report that a page it read is corrupt is latched too: the damage is on disk,
//! so every read of that page fails again, and a provider that went on acknowledging
//! writes into a store it can no longer read back would serve its consumers errors in a
//! loop. Unlike an I/O error it is not cured by fixing the device and reopening, which
//! the failure says ([`StoreFailure::damaged`]), so the process can name the way out:
//! a backup, or a rebuild from a replica.
//!
//! One failure sled does not report: a write of a large value (one sled keeps in a blob
//! file of its own) that fails, on a full disk say, in its background thread or in a
//! write of ours, leaves its log buffer waiting for a writer that never finishes, so
//! every later flush waits for ever without an error, and so would the process at exit.
//! [`FailureLatch::flush`] counts the flushes under way, and a watchdog thread
//! ([`FailureLatch::watched`]) latches a failure once flushes have been under way for
//! [`STUCK_AFTER`] without one finishing: the process then acts on it as on any other
//! (a provider stops, a consumer closes its agreements), and does not wait for the
//! stuck flush, nor run sled's own at exit.
//!
//! Nor does sled notice its files being removed, moved or replaced under it (a backup
//! restored without stopping the process first): it writes on into the unlinked file,
//! and a provider acknowledged writes that vanished at its exit while `status` showed the
//! copy as a stopped store. A latch given the store's log file ([`FailureLatch::watched`])
//! checks after every flush, before any write it made durable is acknowledged, and the
//! watchdog every second, that the file at its path is still the one opened; if not,
//! that is the store's failure.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::disk_sync::DiskSync;
use crate::error::{Result, StoreError};

/// The first storage failure of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// The error's text.
    text: Arc<str>,
    /// Whether sled found the store's files damaged, rather than failing to write them.
    damaged: bool,
    /// Whether the store's files were taken away under the process ([`StoreError::FilesMoved`]).
    taken_away: bool,
}

impl StoreFailure {
    /// Whether the store's files are damaged (sled read a corrupt page): what was on
    /// the disk is not all there any more, so the way out is a backup or a rebuild from
    /// a replica, not freeing space and restarting.
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    /// Whether the store's files were removed, moved or replaced under the process: what
    /// it wrote since went with the files it had open, so "every acknowledged write is
    /// on disk" does not hold, and the way out is a restart on what the folder holds now.
    pub fn taken_away(&self) -> bool {
        self.taken_away
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How long flushes may be under way without one finishing before the store is taken
/// as stuck. A flush writes and syncs the last fraction of a second of changes, in
/// milliseconds; half a minute is a device that has stopped answering, or sled stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The flushes under way.
#[derive(Debug)]
struct Flushes {
    /// How many.
    running: usize,
    /// When one last finished, or, if later, when one began with none under way: a flush
    /// under way since then has had no other finish.
    since: Instant,
}

/// The file beside a store's log that holds the random text of the open that holds the
/// store: a copy written over the store's files in place (`cp -a backup/. data_dir/`
/// keeps every inode) brings the mark of the open it was copied from.
pub const INSTANCE_MARK: &str = "instance";

/// The store's log file as opened: the file at its path must stay that file (same
/// device and inode), and the instance mark beside it this open's, or the process
/// writes where no one will read (or into the middle of someone's copy).
#[derive(Debug)]
struct Anchor {
    path: PathBuf,
    file: (u64, u64),
    /// The mark file, and what this open wrote to it (none if it could not be written).
    mark: Option<(PathBuf, String)>,
}

/// Writes `text` as the mark at `mark`, by a new file renamed into place. Written where
/// it stood, a link that the folder's owner put at the mark's path was followed: root
/// running `status` on a service's stopped store truncated whatever file the link named
/// (found by an audit: a root-owned file outside the store held a UUID afterwards). A
/// rename replaces a link, and the new file is made with `O_EXCL`, which follows none.
/// Made by root in another user's store, it is given to the folder's owner, as the
/// files sled makes are ([`crate::ownership`]).
fn write_mark(mark: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let fresh = mark.with_file_name(format!(".{INSTANCE_MARK}.{text}"));
    let owner = mark.parent().and_then(|folder| std::fs::metadata(folder).ok()).map(|m| (m.uid(), m.gid()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&fresh)
        .and_then(|mut file| {
            if let Some((uid, gid)) =
                owner.filter(|&(uid, gid)| file.metadata().is_ok_and(|m| (m.uid(), m.gid()) != (uid, gid)))
            {
                // Refused unless root, who alone could have made it another user's.
                let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
            }
            file.write_all(text.as_bytes())
        })
        .and_then(|()| std::fs::rename(&fresh, mark));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written
}

impl Anchor {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let mark = path.with_file_name(INSTANCE_MARK);
        let ours = uuid::Uuid::new_v4().to_string();
        let mark = match write_mark(&mark, &ours) {
            Ok(()) => Some((mark, ours)),
            Err(e) => {
                tracing::warn!(file = %mark.display(), error = %e, "could not write the store's instance mark: a copy written over the store in place would go unnoticed");
                None
            }
        };
        Some(Self { path: path.to_owned(), file: (meta.dev(), meta.ino()), mark })
    }

    /// Why the file at the path is no longer the one opened, if it is not.
    fn moved(&self) -> Option<String> {
        let path = self.path.display();
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.file => {}
            Ok(_) => return Some(format!("{path} was replaced by another file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(format!("{path} was removed or moved")),
            // Unreadable for a while (a permission changed): not proof of a move.
            Err(_) => return None,
        }
        // Only another open's mark is proof: a mark unreadable or removed (an operator
        // tidying the folder, no descriptors left) is not.
        let (mark, ours) = self.mark.as_ref()?;
        match std::fs::read_to_string(mark) {
            Ok(found) if found != *ours => Some(format!(
                "{path} was overwritten in place by a copy ({} holds another open's mark)",
                mark.display()
            )),
            _ => None,
        }
    }
}

/// Shared by every handle of one open store; clones observe the same latch.
#[derive(Debug, Clone)]
pub struct FailureLatch {
    /// The first storage failure, once there is one.
    tx: Arc<watch::Sender<Option<StoreFailure>>>,
    /// The flushes under way, which the watchdog watches.
    flushes: Arc<Mutex<Flushes>>,
    /// The store's log file, checked after each flush and by the watchdog.
    anchor: Option<Arc<Anchor>>,
    /// The syncs after each flush that sled leaves out.
    disk: Option<Arc<DiskSync>>,
}

impl Default for FailureLatch {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
            flushes: Arc::new(Mutex::new(Flushes { running: 0, since: Instant::now() })),
            anchor: None,
            disk: None,
        }
    }
}

impl FailureLatch {
    /// A latch whose watchdog thread takes the store as failed once flushes have been
    /// under way for `limit` without one finishing ([`STUCK_AFTER`] for a real store),
    /// or once `log_file` (sled's `db` in the store's folder) is not the file it was at
    /// this call. The thread ends within a second of the last handle's drop. Without a
    /// thread (the system refused one) the latch works, unwatched, and the refusal is
    /// logged.
    ///
    /// Each flush is then followed by the syncs sled leaves out (`crate::disk_sync`),
    /// so that what it wrote survives a power cut. No log at `log_file` (tests) leaves
    /// the flushes as sled makes them; a log that cannot be opened or synced for them is
    /// the store's failure, latched at once: a store that could not keep what it
    /// acknowledged must not take writes.
    pub fn watched(limit: Duration, log_file: &Path) -> Self {
        let (disk, unsyncable) = match DiskSync::open(log_file) {
            Ok(disk) => (Some(Arc::new(disk)), None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(error) => (None, Some(StoreError::Sync { path: log_file.display().to_string(), error })),
        };
        let latch = Self { anchor: Anchor::of(log_file).map(Arc::new), disk, ..Self::default() };
        if let Some(e) = unsyncable {
            latch.note(&e);
        }
        let (tx, flushes) = (Arc::downgrade(&latch.tx), Arc::downgrade(&latch.flushes));
        let anchor = latch.anchor.clone();
        let tick = WATCH_EVERY.min(limit / 4);
        let spawned = std::thread::Builder::new()
            .name("store watchdog".into())
            .spawn(move || watch_flushes(tx, flushes, anchor, limit, tick));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no watchdog thread for the store's flushes: a stuck flush would go unnoticed");
        }
        latch
    }

    /// Flushes `db` and syncs what it wrote to the device, counted as under way
    /// meanwhile for the watchdog; a failure is latched, and so are the store's files
    /// moved away since the open: what the flush wrote went to a file no one will read,
    /// so it must not be acknowledged.
    pub fn flush(&self, db: &sled::Db) -> Result<usize> {
        let flushed = self.observe(self.flushing(|| {
            let flushed = db.flush()?;
            if let Some(disk) = &self.disk {
                disk.sync()?;
            }
            Ok(flushed)
        }))?;
        self.check_files()?;
        Ok(flushed)
    }

    /// Fails, latching it, if the store's log file is not the one opened.
    fn check_files(&self) -> Result<()> {
        match self.anchor.as_deref().and_then(Anchor::moved) {
            Some(how) => self.observe(Err(StoreError::FilesMoved(how))),
            None => Ok(()),
        }
    }

    /// Waits for `work` unless the store fails first: work that waits on the store
    /// (a flush above all) may then never end.
    pub async fn unless_failed<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, StoreFailure> {
        tokio::select! {
            biased;
            done = work => Ok(done),
            failure = self.failed() => Err(failure),
        }
    }

    /// Runs `flush`, counted as a flush under way meanwhile.
    pub fn flushing<T>(&self, flush: impl FnOnce() -> T) -> T {
        {
            let mut flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
            if flushes.running == 0 {
                flushes.since = Instant::now();
            }
            flushes.running += 1;
        }
        let result = flush();
        let mut flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
        flushes.running -= 1;
        flushes.since = Instant::now();
        result
    }

    /// How long flushes have been under way without one finishing, if one is under way.
    fn stalled_for(&self, now: Instant) -> Option<Duration> {
        let flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
        (flushes.running > 0).then(|| now.saturating_duration_since(flushes.since))
    }

    /// Latches that the store's flushes are stuck (first failure wins, as always).
    fn note_stuck(&self, stalled: Duration) {
        self.tx.send_if_modified(|latched| {
            let first = latched.is_none();
            if first {
                let text = format!(
                    "a flush of the store's log has not finished in {}s: the device stopped answering, or sled \
                     stopped writing its log after a write it could not finish (a large value on a full disk)",
                    stalled.as_secs()
                );
                *latched = Some(StoreFailure { text: Arc::from(text), damaged: false, taken_away: false });
            }
            first
        });
    }

    /// Passes `result` through, latching its error if it is a storage failure.
    pub fn observe<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.note(e);
        }
        result
    }

    /// Latches `error` if it is a storage failure; the first one wins.
    pub fn note(&self, error: &StoreError) {
        if error.is_fatal() {
            self.tx.send_if_modified(|latched| {
                let first = latched.is_none();
                if first {
                    *latched = Some(StoreFailure {
                        text: Arc::from(error.to_string()),
                        damaged: error.is_damage(),
                        taken_away: matches!(error, StoreError::FilesMoved(_)),
                    });
                }
                first
            });
        }
    }

    /// The latched failure, if the store has failed.
    pub fn latched(&self) -> Option<StoreFailure> {
        self.tx.borrow().clone()
    }

    /// Waits until the store fails, and returns the failure.
    pub async fn failed(&self) -> StoreFailure {
        let mut rx = self.tx.subscribe();
        let latched = match rx.wait_for(Option::is_some).await {
            Ok(latched) => latched.clone(),
            // The sender lives in `self`, so it cannot close while this waits.
            Err(_) => None,
        };
        match latched {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }
}

/// The watchdog's loop: ends once the store is dropped, or once it has latched.
fn watch_flushes(
    tx: Weak<watch::Sender<Option<StoreFailure>>>,
    flushes: Weak<Mutex<Flushes>>,
    anchor: Option<Arc<Anchor>>,
    limit: Duration,
    tick: Duration,
) {
    loop {
        std::thread::sleep(tick);
        let (Some(tx), Some(flushes)) = (tx.upgrade(), flushes.upgrade()) else { return };
        // The watchdog never flushes, so it holds no handle on the store's files.
        let latch = FailureLatch { tx, flushes, anchor: anchor.clone(), disk: None };
        if latch.latched().is_some() || latch.check_files().is_err() {
            return;
        }
        if let Some(stalled) = latch.stalled_for(Instant::now()).filter(|s| *s >= limit) {
            latch.note_stuck(stalled);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::error::Refusal;

    fn io(kind: std::io::ErrorKind) -> StoreError {
        StoreError::Sled(sled::Error::Io(std::io::Error::new(kind, format!("{kind:?}"))))
    }

    #[tokio::test]
    async fn the_first_storage_failure_is_latched_and_wakes_the_waiters() {
        let latch = FailureLatch::default();
        let waiter = tokio::spawn({
            let latch = latch.clone();
            async move { latch.failed().await }
        });
        // Refusals and corrupt records are errors of one request, not of the store.
        let refused: Result<()> =
            Err(StoreError::Refused(Refusal::NoSuchObject(tether_protocol::Dn::parse("cn=x").unwrap())));
        assert!(latch.observe(refused).is_err());
        latch.note(&StoreError::Corrupt("an index points at nothing".into()));
        assert_eq!(latch.latched(), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());

        let full = latch.observe::<()>(Err(io(std::io::ErrorKind::StorageFull))).unwrap_err();
        latch.note(&io(std::io::ErrorKind::FileTooLarge));
        let first = full.to_string();
        let latched = latch.latched().unwrap();
        assert_eq!(latched.to_string(), first, "the first failure stays");
        assert!(!latched.damaged(), "a write that failed is not damage");
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(woken.to_string(), first);
        // Waiting after the fact returns at once.
        assert_eq!(latch.failed().await.to_string(), first);
    }

    /// A flush that never returns (sled after a failed blob write) latches a failure
    /// once the limit passes without any flush finishing; flushes that overlap for
    /// longer than the limit, each finishing, do not.
    #[tokio::test]
    async fn flushes_under_way_past_the_limit_without_one_finishing_latch_a_stuck_store() {
        let limit = Duration::from_millis(300);
        let latch = FailureLatch::watched(limit, Path::new("/nonexistent/db"));
        let busy: Vec<_> = (0..2)
            .map(|i| {
                let latch = latch.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50 * i));
                    let until = Instant::now() + limit * 4;
                    while Instant::now() < until {
                        latch.flushing(|| std::thread::sleep(Duration::from_millis(100)));
                    }
                })
            })
            .collect();
        for thread in busy {
            thread.join().unwrap();
        }
        assert_eq!(latch.latched(), None, "flushes that finish are not stuck, however long they overlap");

        let (go, wait) = std::sync::mpsc::channel::<()>();
        let began = Instant::now();
        let stuck = std::thread::spawn({
            let latch = latch.clone();
            move || latch.flushing(|| wait.recv())
        });
        let failure = tokio::time::timeout(Duration::from_secs(10), latch.failed()).await.unwrap();
        assert!(began.elapsed() >= limit, "latched after {:?}", began.elapsed());
        assert!(!failure.damaged());
        assert!(failure.to_string().starts_with("a flush of the store's log has not finished in "), "{failure}");
        go.send(()).unwrap();
        stuck.join().unwrap().unwrap();
        assert_eq!(latch.latched(), Some(failure), "the failure stays once the flush returns");
    }

    /// A flush begun after a quiet spell is under way from its own start, not from the
    /// end of the flush before it: counted from there, the first flush after half a
    /// minute without writes was stuck at once for the watchdog, and a provider stopped
    /// on its store's failure at the next write after a quiet spell. The quiet spell here
    /// is as long as the clock takes to move on.
    #[test]
    fn a_flush_after_a_quiet_spell_is_under_way_only_since_it_began() {
        let latch = FailureLatch::default();
        latch.flushing(|| ());
        let finished = Instant::now();
        let quiet_since = loop {
            let now = Instant::now();
            if now > finished {
                break now;
            }
        };
        let (now, stalled) = latch.flushing(|| {
            let now = Instant::now();
            (now, latch.stalled_for(now).expect("a flush under way"))
        });
        assert!(
            stalled <= now - quiet_since,
            "under way for {stalled:?}, of which {:?} before it began",
            now - quiet_since
        );
    }

    /// The store's log file removed, moved or replaced under the process (a restore
    /// while it runs) fails the next flush, so nothing it wrote is acknowledged, and is
    /// latched by the watchdog even with no flush.
    #[tokio::test]
    async fn the_store_s_files_moved_away_fail_the_next_flush_and_are_latched() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = dir.path().join("db");
        let latch = FailureLatch::watched(STUCK_AFTER, &log);
        db.insert("k", "v").unwrap();
        latch.flush(&db).unwrap();
        std::fs::rename(&log, dir.path().join("db.old")).unwrap();
        std::fs::write(&log, b"a restored copy").unwrap();
        db.insert("k", "w").unwrap();
        let err = latch.flush(&db).unwrap_err();
        assert!(err.to_string().contains("was replaced by another file"), "{err}");
        assert!(err.is_fatal() && !err.is_damage());
        assert_eq!(latch.latched().unwrap().to_string(), err.to_string());
        assert!(latch.latched().unwrap().taken_away());

        // A copy written over the files in place keeps their inodes, and brings the
        // mark of the open it was copied from.
        let inplace = tempfile::tempdir().unwrap();
        let log = inplace.path().join("db");
        std::fs::write(&log, b"a log").unwrap();
        let latch = FailureLatch::watched(STUCK_AFTER, &log);
        let db = sled::Config::new().path(inplace.path().join("sled")).open().unwrap();
        latch.flush(&db).unwrap();
        std::fs::write(inplace.path().join(INSTANCE_MARK), b"another open's").unwrap();
        let err = latch.flush(&db).unwrap_err();
        assert!(err.to_string().contains("was overwritten in place by a copy"), "{err}");

        let other = tempfile::tempdir().unwrap();
        let log = other.path().join("db");
        std::fs::write(&log, b"a log").unwrap();
        let watched = FailureLatch::watched(STUCK_AFTER, &log);
        std::fs::remove_file(&log).unwrap();
        let failure = tokio::time::timeout(Duration::from_secs(10), watched.failed()).await.unwrap();
        assert!(failure.to_string().contains("was removed or moved"), "{failure}");
    }

    /// A sync after sled's flush that fails (the device refused it) fails the flush
    /// and is latched: what the flush wrote may not be on the device, so it must not be
    /// acknowledged, nor retried as if nothing were lost.
    #[tokio::test]
    async fn a_flush_whose_sync_fails_is_a_failed_flush_and_is_latched() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let latch = FailureLatch { disk: Some(Arc::new(DiskSync::failing(dir.path()))), ..FailureLatch::default() };
        db.insert("k", "v").unwrap();
        let err = latch.flush(&db).unwrap_err();
        assert!(err.to_string().contains("syncing") && err.is_fatal() && !err.is_damage(), "{err}");
        let failure = tokio::time::timeout(Duration::from_secs(5), latch.failed()).await.unwrap();
        assert_eq!(failure.to_string(), err.to_string());

        // The store's own latch syncs its log after each flush.
        let watched = FailureLatch::watched(STUCK_AFTER, &dir.path().join("db"));
        assert!(watched.disk.is_some(), "a store's latch does not sync after its flushes");
        watched.flush(&db).unwrap();

        // A log that cannot be opened to be synced (a socket at its path, which open(2)
        // refuses) fails the store at once.
        let other = tempfile::tempdir().unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(other.path().join("db")).unwrap();
        let unsyncable = FailureLatch::watched(STUCK_AFTER, &other.path().join("db"));
        let failure = unsyncable.latched().expect("a store whose log cannot be synced was taken");
        assert!(failure.to_string().contains("syncing"), "{failure}");
    }

    #[tokio::test]
    async fn a_corrupt_page_is_latched_as_damage() {
        let latch = FailureLatch::default();
        let corrupt = StoreError::Sled(sled::Error::Corruption { at: None, bt: () });
        assert!(corrupt.is_fatal() && corrupt.is_damage());
        assert!(latch.observe::<()>(Err(corrupt)).is_err());
        let failure = tokio::time::timeout(Duration::from_secs(5), latch.failed()).await.unwrap();
        assert!(failure.damaged(), "{failure}");
        assert!(failure.to_string().contains("corrupt"), "{failure}");
    }

    /// A mark that cannot be put in place (a folder at its path) leaves no file of its
    /// write behind: the store is opened by every `status` and `search` of a stopped
    /// process, and each would leave another in the store's folder.
    #[test]
    fn a_mark_that_cannot_be_put_in_place_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let mark = tmp.path().join(INSTANCE_MARK);
        std::fs::create_dir(&mark).unwrap();
        std::fs::write(mark.join("kept"), b"").unwrap();
        assert!(write_mark(&mark, "ours").is_err(), "a file renamed over a folder");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [INSTANCE_MARK], "only the folder that was there");
    }

    /// The instance mark is written by a new file renamed into place: a link put at its
    /// path by the folder's owner is replaced, not followed into the file it names.
    #[test]
    fn the_instance_mark_replaces_a_link_at_its_path_and_writes_nothing_through_it() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("passwd");
        std::fs::write(&elsewhere, "root:x:0:0\n").unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"log").unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.join(INSTANCE_MARK)).unwrap();
        let anchor = Anchor::of(&store.join("db")).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "root:x:0:0\n");
        let mark = std::fs::symlink_metadata(store.join(INSTANCE_MARK)).unwrap();
        assert!(mark.file_type().is_file(), "the link was replaced by the mark");
        let (_, ours) = anchor.mark.as_ref().unwrap();
        assert_eq!(&std::fs::read_to_string(store.join(INSTANCE_MARK)).unwrap(), ours);
        assert_eq!(anchor.moved(), None);
        let names: Vec<_> = std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no file of the write is left behind: {names:?}");
    }
}
