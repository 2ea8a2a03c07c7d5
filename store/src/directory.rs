//! The provider's directory: the authoritative entry set, its changelog, and the writer
//! that keeps them in step.
//!
//! Every write takes the writer lock, checks the directory rules against current state,
//! assigns the next CSN, and commits the entry, its DN and UUID index records, the
//! changelog record and the new last CSN in one sled transaction; a group of pipelined
//! writes shares one transaction wherever no write reads what an earlier one in the
//! group changed (`footprint`), and hands each committed change to the `feed` the
//! persist sessions read, with the entry bytes it wrote. Durability is separate
//! ([`GroupCommit`]): `write` returns once the change is on disk, and only then does the
//! durable-CSN watch wake the replication sessions.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, Transactional};
use sled::{Db, Tree};
use tether_protocol::{
    Attributes, Change, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, SearchSpec, StoreId,
};
use tokio::sync::watch;

use crate::changelog::{ChangeKind, ChangeRecord, Changelog, RetentionPolicy, TrimReport};
use crate::durability::GroupCommit;
use crate::entry_set::{EntrySet, TxEntrySet};
use crate::error::{Refusal, Result, StoreError};
use crate::failure::FailureLatch;
use crate::feed::{FedChange, Feed};
use crate::footprint::Footprint;
use crate::history::Histories;
use crate::pins::{Pin, Pins};
use crate::record::{decode, encode, now_ms, u64_from};
use crate::rules::{self, Planned};

mod backup;
mod verify;

pub use backup::copy::{write_copy, CopyCounts, CopyWriter, SledCopy, StreamCopy};
pub use backup::{inside_store, BackupProgress, BackupReport};
pub use verify::Verified;

/// Tree and key names; part of the on-disk format.
mod names {
    pub const META: &str = "meta";
    pub const ENTRIES: &str = "dir/entries";
    pub const UUIDS: &str = "dir/uuids";
    pub const CHANGELOG: &str = "dir/changelog";
    pub const CONSUMERS: &str = "dir/consumers";
    pub const STORE_ID: &[u8] = b"store_id";
    pub const SUFFIX: &[u8] = b"suffix";
    pub const LAST_CSN: &[u8] = b"last_csn";
    pub const FLOOR: &[u8] = b"changelog_floor";
    /// The floor the last bulk load raised the changelog's to (absent in a store no
    /// load raised it in, and in stores of builds before it was kept).
    pub const LOAD_FLOOR: &[u8] = b"changelog_load_floor";
    pub const ENTRY_COUNT: &[u8] = b"entry_count";
    /// The last CSN when [`ENTRY_COUNT`] was last right: written with it by every
    /// commit of this build, so a store an older build wrote to since (a rollback,
    /// which adds and deletes without moving the count) is recounted at open.
    pub const ENTRY_COUNT_AT: &[u8] = b"entry_count_at";
    /// The first session id no start of this store has reserved (absent until one has).
    pub const SESSION_IDS: &[u8] = b"session_ids";
    /// A bulk load writing, or cut short (absent otherwise): see
    /// [`Directory::begin_load`](super::Directory::begin_load).
    pub const LOAD_UNDER_WAY: &[u8] = b"load_under_way";
}

/// A bulk load that began writing and has not finished: killed (`kill -9`, the OOM
/// killer, a power cut), stopped by a signal, or cut short by a failed store. The store
/// then holds part of the file, which nothing else tells from a whole directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnfinishedLoad {
    /// The file loaded, as the load named it.
    pub file: String,
    /// When it began writing, in milliseconds since the Unix epoch.
    pub began_ms: u64,
}

/// Whether a commit goes to the changelog (every write) or raises its floor past
/// itself (a bulk load; see [`Directory::bulk_add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    Logged,
    FloorRaised,
}

/// The result of a committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The change's CSN.
    pub csn: Csn,
    /// The entry it changed.
    pub uuid: EntryUuid,
}

/// Where a consumer was last seen, which holds back changelog trimming.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerPosition {
    /// Its acknowledged CSN.
    pub csn: Csn,
    /// When it was seen, ms since the epoch.
    pub seen_ms: u64,
}

/// The provider's store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Directory {
    /// The sled database (one per process; sled locks the folder).
    db: Db,
    /// Store id, suffix, last CSN, changelog floor.
    meta: Tree,
    /// The entries.
    set: EntrySet,
    /// The changelog.
    changelog: Changelog,
    /// Consumer id -> [`ConsumerPosition`].
    consumers: Tree,
    /// The store's identity, kept by every copy of it.
    store_id: StoreId,
    /// Which cookies name this store's own past (see [`crate::history`]).
    histories: Histories,
    /// The root of everything this store may hold.
    suffix: Dn,
    /// Serializes writers; holds the last assigned CSN.
    writer: Mutex<Csn>,
    /// Flushing and the durable-CSN watch.
    durability: GroupCommit,
    /// What running refreshes still need from the changelog.
    pins: Pins,
    /// Recent changes as persist sessions read them.
    pub(crate) feed: Feed,
    /// Whether the storage has failed under this handle (see [`crate::failure`]).
    failure: FailureLatch,
    /// The folder it was opened in: a backup is refused inside it.
    folder: PathBuf,
}

/// sled's page cache per store unless configured (`cache_size`). sled's own default
/// (1 GiB) let a provider reading out, or a consumer writing, a million-entry store grow
/// past a gigabyte of RSS; scans and refreshes are sequential and need little of it.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of sled's page cache. Pages outside it are read back from the log on use,
    /// at tens of microseconds each, so a store whose working set fits answers faster
    /// (a consumer applying a delta to a large replica, most of all); the cache is also
    /// most of the process's memory beyond sled's page table. Default
    /// [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: u64,
    /// How long to wait for another process to let go of the store before the open
    /// fails with [`StoreError::Locked`]. sled locks a store whole, reads too, so a
    /// command reading a stopped process's store holds it for the tens of milliseconds
    /// it takes: a start, or another such command, that meets it should wait that out,
    /// not fail (found by a walkthrough: `run` started beside a loop of `wait` commands
    /// failed one time in two). Default none.
    pub lock_wait: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { cache_bytes: DEFAULT_CACHE_BYTES, lock_wait: std::time::Duration::ZERO }
    }
}

/// How often an open waiting out another process's lock tries again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether a store was ever created at `path` (sled's log file is there). Opening a
/// store creates one, so read-only tools ask first: a mistyped `data_dir`, or a
/// `status` run before the first start, would otherwise leave an empty store behind,
/// owned by whoever ran the tool, and report it as if it were the real one.
/// A folder holding sled's `conf` without its log counts too: it is a copy that lost
/// its log, which the open then refuses by name ([`StoreError::Incomplete`]), not a
/// folder where no store ever was.
pub fn store_exists(path: &Path) -> bool {
    path.join("db").is_file() || path.join("conf").is_file()
}

/// Refuses a folder holding sled's `conf` whose log (`db`) is missing or empty: a copy
/// that lost it (a `cp` of some files, a transfer cut off). sled opened it as a new,
/// empty store under a new identity (or failed on its snapshot, naming damage), and
/// rewrote the folder as it did; an empty directory was then served as the real one.
fn check_whole(path: &Path) -> Result<()> {
    if !path.join("conf").is_file() {
        return Ok(());
    }
    let missing = match std::fs::metadata(path.join("db")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is missing",
        Ok(meta) if meta.len() == 0 => "is empty",
        _ => return Ok(()),
    };
    Err(StoreError::Incomplete { path: path.display().to_string(), missing })
}

/// Which of the two stores a folder holds. Both are sled databases, so either process
/// would open the other's folder, and a provider pointed at a consumer's `data_dir`
/// would serve an empty directory (every consumer then reloading to nothing), a
/// consumer pointed at a provider's would refresh its replicas into the directory's
/// file. Each kind is told apart by a tree only it makes, before either opens a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Directory,
    Replicas,
}

impl StoreKind {
    /// The tree only this kind of store has.
    fn marker(self) -> &'static str {
        match self {
            StoreKind::Directory => names::META,
            StoreKind::Replicas => crate::replica::REPLICAS,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            StoreKind::Directory => "a provider's directory",
            StoreKind::Replicas => "a consumer's replicas",
        }
    }
}

/// Opens sled at `path` as a store of `kind`, turning its lock failure into
/// [`StoreError::Locked`] and a store of the other kind into [`StoreError::WrongKind`].
pub(crate) fn open_db(path: &Path, options: &StoreOptions, kind: StoreKind) -> Result<Db> {
    check_whole(path)?;
    let open = || guard_recovery(path, || sled::Config::new().path(path).cache_capacity(options.cache_bytes).open());
    let mut opened = open()?;
    if matches!(opened, Err(sled::Error::Corruption { at: None, .. })) && remove_unfinished_snapshots(path) > 0 {
        opened = open()?;
    }
    let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"));
    let deadline = std::time::Instant::now() + options.lock_wait;
    let mut told = false;
    while opened.as_ref().is_err_and(locked) && std::time::Instant::now() < deadline {
        if !told {
            told = true;
            tracing::info!(store = %path.display(), wait = ?options.lock_wait, "the store is held by another process: waiting for it");
        }
        std::thread::sleep(LOCK_POLL);
        opened = open()?;
    }
    let db = opened.map_err(|e| match e {
        e if locked(&e) => StoreError::Locked(path.display().to_string()),
        // Met in recovery, before any tree is open: the store cannot be opened as it is.
        // Damage in its log comes with the offset; in its snapshot without.
        sled::Error::Corruption { at, .. } => unrecoverable(path, e.to_string(), at.is_none()),
        other => StoreError::Sled(other),
    })?;
    let other = match kind {
        StoreKind::Directory => StoreKind::Replicas,
        StoreKind::Replicas => StoreKind::Directory,
    };
    if db.tree_names().iter().any(|name| name.as_ref() == other.marker().as_bytes()) {
        return Err(StoreError::WrongKind {
            path: path.display().to_string(),
            holds: other.describe(),
            wanted: kind.describe(),
        });
    }
    crate::format::check(&db, path)?;
    crate::ownership::give_back(path);
    Ok(db)
}

/// Removes the snapshot files sled began and never finished in `path`, and says how
/// many. sled writes a snapshot to `snap.<lsn>.generating` and renames it once whole,
/// but at open reads whichever `snap.*` file sorts last, which is such a left-over
/// whenever a snapshot's write was cut short (a full disk at open, a crash while
/// opening): it then takes the store as damaged, and every command fails on it until
/// the file is moved away. A snapshot only spares sled a longer replay of its log, and
/// an unfinished one was never read, so removing it loses nothing. Called only after
/// an open failed, which holds sled's lock until it returns: no running process is
/// writing one.
fn remove_unfinished_snapshots(path: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(path) else { return 0 };
    let unfinished = dir.filter_map(|entry| entry.ok().map(|e| e.path())).filter(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
    });
    let mut removed = 0;
    for file in unfinished {
        match std::fs::remove_file(&file) {
            Ok(()) => {
                tracing::warn!(file = %file.display(), "removed a snapshot file sled began and never finished");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "could not remove an unfinished snapshot file")
            }
        }
    }
    removed
}

/// Runs sled's `open` of the store at `path`, turning a panic in it into
/// [`StoreError::Unrecoverable`]. sled 0.34 recovers its log at every open and panics on
/// some damage it meets there (`tried to serialize Uninitialized`, writing the snapshot
/// of a log with a damaged stretch): every command on the store would then end in a
/// panic and a backtrace instead of a message naming the store and the way out. The
/// panic's message goes into the error, so the panic hook is kept quiet for it: printed
/// as well, it read as a crash ahead of the error that explains it.
fn guard_recovery<T>(path: &Path, open: impl FnOnce() -> T) -> Result<T> {
    let caught = quiet_panics(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)));
    caught.map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        match refused_resources(&detail) {
            true => StoreError::Resources { detail },
            false => unrecoverable(path, detail, false),
        }
    })
}

/// Whether a panic's message is the OS refusing a thread or memory: sled spawns its
/// threads at open and unwraps the result (`EAGAIN`, which Rust names `WouldBlock`, for
/// threads; `ENOMEM` for a stack or an allocation refused by a memory limit).
fn refused_resources(detail: &str) -> bool {
    [
        "code: 11,",
        "code: 12,",
        "WouldBlock",
        "OutOfMemory",
        "Resource temporarily unavailable",
        "Cannot allocate memory",
    ]
    .iter()
    .any(|sign| detail.contains(sign))
}

thread_local! {
    /// Whether a panic on this thread is caught and reported by [`guard_recovery`].
    static PANIC_REPORTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the panic hook silent for panics on this thread; every other thread's
/// panics, and this thread's outside `f`, go to the hook that was installed before.
fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PANIC_REPORTED.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    PANIC_REPORTED.with(|flag| flag.set(true));
    let result = f();
    PANIC_REPORTED.with(|flag| flag.set(false));
    result
}

/// [`StoreError::Unrecoverable`] for the store at `path`, naming sled's snapshot file if
/// the damage may be in it and there is one (sled keeps one, `snap.<hex>`, and removes
/// the older ones).
fn unrecoverable(path: &Path, detail: String, in_snapshot: bool) -> StoreError {
    let snapshot = std::fs::read_dir(path).ok().filter(|_| in_snapshot).and_then(|dir| {
        dir.filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap.")))
            .max()
    });
    StoreError::Unrecoverable { detail, snapshot: snapshot.map(|p| p.display().to_string()) }
}

impl Directory {
    /// Opens (creating on first use) the directory at `path` for `suffix`. A store created
    /// for another suffix is refused rather than silently mixed.
    pub fn open(path: &Path, suffix: &Dn) -> Result<Self> {
        Self::open_with(path, suffix, &StoreOptions::default())
    }

    /// [`Directory::open`] with `options`.
    pub fn open_with(path: &Path, suffix: &Dn, options: &StoreOptions) -> Result<Self> {
        let db = open_db(path, options, StoreKind::Directory)?;
        let meta = db.open_tree(names::META)?;
        let store_id = match meta.get(names::STORE_ID)? {
            Some(id) => {
                StoreId(id.as_ref().try_into().map_err(|_| StoreError::Corrupt("store id is not 16 bytes".into()))?)
            }
            None => {
                let id = StoreId::new_random();
                meta.insert(names::STORE_ID, &id.0)?;
                meta.insert(names::SUFFIX, suffix.to_string().as_bytes())?;
                db.flush()?;
                id
            }
        };
        if let Some(stored) = meta.get(names::SUFFIX)? {
            let stored = String::from_utf8_lossy(&stored).into_owned();
            if Dn::parse(&stored).ok().as_ref() != Some(suffix) {
                return Err(StoreError::SuffixMismatch { stored, configured: suffix.to_string() });
            }
        }
        let last = match meta.get(names::LAST_CSN)? {
            Some(v) => Csn(u64_from(names::META, &v)?),
            None => Csn::ZERO,
        };
        let set = EntrySet::new(db.open_tree(names::ENTRIES)?, db.open_tree(names::UUIDS)?);
        let counted_at = meta.get(names::ENTRY_COUNT_AT)?.map(|v| u64_from(names::META, &v)).transpose()?;
        if meta.get(names::ENTRY_COUNT)?.is_none() {
            // A store from before the count was kept: counted once, before any write.
            meta.insert(names::ENTRY_COUNT, &(set.len() as u64).to_be_bytes())?;
            meta.insert(names::ENTRY_COUNT_AT, &last.0.to_be_bytes())?;
        } else if counted_at.is_some_and(|at| at != last.0) {
            // Writes this build did not count: a build from before the count's CSN was
            // kept wrote to the store since (a rollback), and the count is off by them.
            let counted = set.len() as u64;
            tracing::info!(
                entries = counted,
                "entry count redone: an older build wrote to the store since this build last did"
            );
            meta.insert(names::ENTRY_COUNT, &counted.to_be_bytes())?;
            meta.insert(names::ENTRY_COUNT_AT, &last.0.to_be_bytes())?;
        }
        let changelog = Changelog { tree: db.open_tree(names::CHANGELOG)? };
        let consumers = db.open_tree(names::CONSUMERS)?;
        let histories = Histories::open(&db, &meta, store_id)?;
        Ok(Self {
            db,
            meta,
            set,
            changelog,
            consumers,
            store_id,
            histories,
            suffix: suffix.clone(),
            writer: Mutex::new(last),
            durability: GroupCommit::new(last),
            pins: Pins::default(),
            feed: Feed::default(),
            failure: FailureLatch::watched(crate::failure::STUCK_AFTER, &path.join("db")),
            folder: path.to_path_buf(),
        })
    }

    /// The store's identity.
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The history the cookies this store issues now name.
    pub fn history(&self) -> HistoryId {
        self.histories.current()
    }

    /// Ends the current history at the last CSN and begins a new one, durably, and
    /// returns its id. A provider calls this each time it starts serving, before any
    /// cookie is sent: that is the only point from which a restored copy of its store can
    /// part from the original (see [`crate::history`]). Cookies of the ended history
    /// stay good up to its end, so a restart costs no consumer a reload.
    pub fn begin_history(&self) -> Result<HistoryId> {
        let last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let begun = self.histories.begin(&self.meta, *last).and_then(|id| {
            self.failure.flush(&self.db)?;
            Ok(id)
        });
        self.failure.observe(begun)
    }

    /// Reserves the next `count` session ids, durably, and returns them. None of them was
    /// reserved before, by this start or an earlier one, so a `session=N` in either
    /// side's log names one session across provider restarts (ids began at 1 at every
    /// start, and a consumer's log then showed `session=1` for each of its providers'
    /// lifetimes). A store of a build before this has none on record and begins at 1. A
    /// store restored from a copy begins again where the copy was: a restore rewinds
    /// everything else too, and its `history` tells the two lifetimes apart.
    pub fn reserve_session_ids(&self, count: u64) -> Result<std::ops::Range<u64>> {
        let reserved = loop {
            let held = self.meta.get(names::SESSION_IDS)?;
            let start = match &held {
                Some(v) => u64_from(names::META, v)?,
                None => 1,
            };
            let end = start.saturating_add(count);
            let swapped = self.meta.compare_and_swap(names::SESSION_IDS, held, Some(&end.to_be_bytes()[..]));
            if self.failure.observe(swapped.map_err(StoreError::from))?.is_ok() {
                break start..end;
            }
        };
        self.failure.flush(&self.db)?;
        Ok(reserved)
    }

    /// Whether `cookie` is a position in this store's own past, and so can be resumed
    /// from: it names the current history at or below the durable CSN, or an ended one
    /// at or below where it ended.
    pub fn recognizes(&self, cookie: &Cookie) -> Result<bool> {
        self.histories.contains(cookie, self.durable_csn())
    }

    /// How many times a history ended: the provider's starts since histories were kept.
    pub fn ended_histories(&self) -> usize {
        self.histories.ended()
    }

    /// The suffix.
    pub fn suffix(&self) -> &Dn {
        &self.suffix
    }

    /// The entries (read access).
    pub fn entries(&self) -> &EntrySet {
        &self.set
    }

    /// Number of entries: one lookup, not a scan. The count moves in the transaction of
    /// every write that adds or deletes an entry, so it is never out of step with them;
    /// status calls, which monitoring makes often, no longer read the whole directory
    /// (seconds, and the page cache flushed of what writes need, at a million entries).
    pub fn entry_count(&self) -> Result<u64> {
        match self.meta.get(names::ENTRY_COUNT)? {
            Some(v) => u64_from(names::META, &v),
            None => Ok(self.set.len() as u64),
        }
    }

    /// Counts the entries by a scan and sets the count kept for [`Directory::entry_count`]
    /// to it; returns the count it held when that was wrong. The count moves with every
    /// write's transaction, but a batch cut short on a full disk while sled wrote a large
    /// value to a blob file has been found torn (its count kept, entries of it gone);
    /// the offline loader, which an operator reruns after such a cut, calls this at its
    /// end so that `status` says what the store holds.
    pub fn recount_entries(&self) -> Result<Option<u64>> {
        let last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let counted = self.set.len() as u64;
        let kept = self.entry_count()?;
        if kept == counted {
            return Ok(None);
        }
        self.failure.observe(self.meta.insert(names::ENTRY_COUNT, &counted.to_be_bytes()).map_err(StoreError::from))?;
        self.failure
            .observe(self.meta.insert(names::ENTRY_COUNT_AT, &last.0.to_be_bytes()).map_err(StoreError::from))?;
        self.failure.flush(&self.db)?;
        Ok(Some(kept))
    }

    /// The changelog (read access).
    pub fn changelog(&self) -> &Changelog {
        &self.changelog
    }

    /// The newest committed CSN, read under the writer lock: a read that saw a write's
    /// effect (an entry gone) and asks this afterwards gets a CSN at or after that
    /// write's, which is committed and assigned before the lock is let go.
    pub fn newest_committed(&self) -> Csn {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest durable CSN: what sessions may send.
    pub fn durable_csn(&self) -> Csn {
        self.durability.last_durable()
    }

    /// The cookie describing the current durable state.
    pub fn cookie(&self) -> Cookie {
        Cookie { history: self.history(), csn: self.durable_csn() }
    }

    /// Whether the storage failed under this handle: the write paths latch their
    /// storage errors here, the provider latches what its reads meet (sessions,
    /// searches, status), and it stops when the latch fires.
    pub fn failure(&self) -> &FailureLatch {
        &self.failure
    }

    /// Watches the durable CSN; replication sessions wait on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<Csn> {
        self.durability.subscribe()
    }

    /// Applies `change` under the directory rules and returns once it is durable.
    pub fn write(&self, change: &Change) -> Result<Committed> {
        let committed = self.write_nowait(change)?;
        self.sync(committed.csn)?;
        Ok(committed)
    }

    /// Applies `change` but returns before it is durable; call [`Directory::sync`] before
    /// acknowledging it. Used to batch many writes into one flush.
    pub fn write_nowait(&self, change: &Change) -> Result<Committed> {
        let mut last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let csn = last.next();
        // Planning reads the store, which may be the first to meet a failure sled met
        // writing its log in the background.
        let planned = self.failure.observe(rules::plan(&self.set, &self.suffix, change, csn))?;
        let uuid = planned.uuid;
        self.failure.observe(self.commit_many(&[planned], csn, Logging::Logged))?;
        *last = csn;
        self.durability.committed(csn);
        Ok(Committed { csn, uuid })
    }

    /// Applies `changes` in order, with the outcome each would have as its own
    /// [`Directory::write_nowait`], but commits runs of them in one transaction: a
    /// transaction's fixed cost is most of a small write's. A run ends before a write
    /// that reads what the run changed (`footprint.rs`), so every write is still decided
    /// against the state all writes before it left. Not durable: [`Directory::sync`] to
    /// the last committed CSN before acknowledging any.
    ///
    /// A refused write takes no CSN and does not stop the writes after it. If a commit
    /// fails, its writes and all after it fail: the first with the storage error,
    /// the rest with [`StoreError::GroupFailed`].
    pub fn write_group(&self, changes: &[Change]) -> Vec<Result<Committed>> {
        let mut last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut results: Vec<Option<Result<Committed>>> = changes.iter().map(|_| None).collect();
        let mut run: Vec<Planned> = Vec::new();
        let mut members: Vec<usize> = Vec::new();
        let mut footprint = Footprint::default();
        let mut failure = None;
        for (i, change) in changes.iter().enumerate() {
            if !footprint.is_empty() && footprint.conflicts(change) {
                if let Err(e) = self.commit_run(&mut last, &run, &members, &mut results) {
                    failure = Some(e);
                    break;
                }
                run.clear();
                members.clear();
                footprint.clear();
            }
            let csn = Csn(last.0 + run.len() as u64 + 1);
            // Planning reads the store: see `write_nowait`.
            match self.failure.observe(rules::plan(&self.set, &self.suffix, change, csn)) {
                Ok(planned) => {
                    footprint.record(&planned);
                    run.push(planned);
                    members.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if failure.is_none() {
            if let Err(e) = self.commit_run(&mut last, &run, &members, &mut results) {
                failure = Some(e);
            }
        }
        let mut failure = failure.map(|e| (e.to_string(), Some(e)));
        results
            .into_iter()
            .map(|r| match (r, &mut failure) {
                (Some(r), _) => r,
                (None, Some((message, first))) => {
                    Err(first.take().unwrap_or_else(|| StoreError::GroupFailed(message.clone())))
                }
                (None, None) => Err(StoreError::Corrupt("a grouped write was neither committed nor failed".into())),
            })
            .collect()
    }

    /// Commits a run planned by [`Directory::write_group`] and records each member's result.
    fn commit_run(
        &self,
        last: &mut Csn,
        run: &[Planned],
        members: &[usize],
        results: &mut [Option<Result<Committed>>],
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let first = last.next();
        self.failure.observe(self.commit_many(run, first, Logging::Logged))?;
        for (k, (planned, &i)) in run.iter().zip(members).enumerate() {
            results[i] = Some(Ok(Committed { csn: Csn(first.0 + k as u64), uuid: planned.uuid }));
        }
        *last = Csn(first.0 + run.len() as u64 - 1);
        self.durability.committed(*last);
        Ok(())
    }

    /// Makes everything committed up to `csn` durable (group commit).
    pub fn sync(&self, csn: Csn) -> Result<()> {
        self.failure.observe(self.durability.make_durable(&self.db, &self.failure, csn))
    }

    /// Checks what an add of `dn` with `attrs` must satisfy whatever the store holds (an
    /// objectClass, RDN values that can be added, a size that replicates): the offline
    /// loader checks every record with it before it writes any, so a file that
    /// [`Directory::bulk_add`] would refuse part-way changes nothing.
    pub fn check_new_entry(dn: &Dn, attrs: &Attributes) -> Result<()> {
        rules::new_entry(dn, attrs, EntryUuid::new_time_ordered(), Csn::ZERO).map(drop)
    }

    /// Adds many entries in one transaction (the offline loader's fast path). The batch
    /// must list parents before children; each entry still passes the directory rules,
    /// against the store and the batch. All or nothing; returns the last CSN, durable.
    ///
    /// A bulk load is not logged: the changelog floor rises past it instead, in the same
    /// transaction (as `slapadd` leaves the accesslog alone). A consumer whose cookie
    /// predates the load then gets a present refresh, which sends the loaded entries in
    /// full as a delta would and 16 bytes for each entry it already had, instead of the
    /// store keeping a record per loaded entry until retention trims it: at a million
    /// entries those records cost the provider about 40 MiB of resident page table and
    /// a tenth of its store. While a refresh holds a pin (the store is serving, which
    /// the offline loader never is) the batch is logged as any write is, as raising the
    /// floor would take from that refresh the records it is about to read.
    ///
    /// An entry exported from another server keeps the entryUUID it had there when one
    /// is given (the others get a fresh one), so that what refers to it by UUID still
    /// finds it. A UUID already in the store or given twice in the batch is refused.
    ///
    /// A storage failure is latched, as every write's is: the loader must not drop a
    /// failed store (sled's flush as it goes may never return).
    pub fn bulk_add(&self, batch: &[(Dn, Attributes, Option<EntryUuid>)]) -> Result<Csn> {
        self.failure.observe(self.bulk_add_unobserved(batch))
    }

    fn bulk_add_unobserved(&self, batch: &[(Dn, Attributes, Option<EntryUuid>)]) -> Result<Csn> {
        let mut last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut csn = *last;
        let mut planned = Vec::with_capacity(batch.len());
        // Each name in the batch, and the DN it is stored under.
        let mut names_in_batch: HashMap<Dn, Dn> = HashMap::new();
        let mut uuids_in_batch = HashSet::new();
        for (dn, attrs, uuid) in batch {
            csn = csn.next();
            if names_in_batch.contains_key(dn) {
                return Err(Refusal::AlreadyExists(dn.clone()).into());
            }
            if let Some(uuid) = uuid {
                if let Some(holder) = self.uuid_holder(uuid)? {
                    return Err(rules::uuid_taken(dn, uuid, Some(&holder)).into());
                }
                if !uuids_in_batch.insert(*uuid) {
                    return Err(rules::uuid_taken(dn, uuid, None).into());
                }
            }
            // The parent may be earlier in this batch rather than in the store: the entry
            // is then named below it as it will be stored, as below a stored parent (an
            // entry written `cn=kid,OU=PEOPLE,...` below `ou=People,...` prints under it).
            let parent_in_batch = dn.parent().and_then(|p| names_in_batch.get(&p));
            let named = match (parent_in_batch, dn.rdn()) {
                (Some(parent), Some(rdn)) => parent.child(rdn.clone()),
                _ => dn.clone(),
            };
            let uuid = uuid.unwrap_or_else(EntryUuid::new_time_ordered);
            let plan = rules::plan_add(&self.set, &self.suffix, &named, attrs, uuid, csn, parent_in_batch.is_some())?;
            names_in_batch.insert(dn.clone(), plan.dn.clone());
            planned.push(plan);
        }
        if planned.is_empty() {
            return Ok(*last);
        }
        let first = last.next();
        // Held through the commit: a pin taken meanwhile must see the raised floor.
        let pins = self.pins.lock();
        let log = if pins.lowest().is_some() { Logging::Logged } else { Logging::FloorRaised };
        self.commit_many(&planned, first, log)?;
        drop(pins);
        *last = csn;
        self.durability.committed(csn);
        drop(last);
        self.durability.make_durable(&self.db, &self.failure, csn)?;
        if log == Logging::FloorRaised {
            // Records of earlier writes now below the floor: no refresh reads them again.
            self.changelog.remove_through(csn)?;
        }
        Ok(csn)
    }

    /// The DN of the entry whose entryUUID is `uuid`, if the store has one.
    pub fn uuid_holder(&self, uuid: &EntryUuid) -> Result<Option<Dn>> {
        Ok(self.set.get_by_uuid(uuid)?.map(|entry| entry.dn))
    }

    /// Commits planned changes with consecutive CSNs starting at `first`, and hands the
    /// logged ones to the feed with the bytes written (see [`crate::feed`]).
    fn commit_many(&self, planned: &[Planned], first: Csn, log: Logging) -> Result<()> {
        let time_ms = now_ms();
        let mut records = Vec::new();
        if log == Logging::Logged {
            records.reserve(planned.len());
            let mut csn = first;
            for p in planned {
                let record = ChangeRecord {
                    csn,
                    time_ms,
                    uuid: p.uuid,
                    kind: p.kind,
                    dn: p.dn.clone(),
                    old_dn: p.old_dn.clone(),
                };
                let encoded = Changelog::encode(&record)?;
                records.push((record, encoded));
                csn = csn.next();
            }
        }
        let last = Csn(first.0 + planned.len() as u64 - 1);
        let added = planned.iter().filter(|p| p.old_key.is_none() && p.after.is_some()).count() as i64;
        let deleted = planned.iter().filter(|p| p.old_key.is_some() && p.after.is_none()).count() as i64;
        (&self.meta, &self.set.entries, &self.set.uuids, &self.changelog.tree).transaction(
            |(meta, entries, uuids, changelog)| {
                let tx = TxEntrySet { entries, uuids };
                for p in planned {
                    match &p.after {
                        Some(w) => tx.put_encoded(p.old_key.as_deref(), w.key.clone(), &p.uuid, w.bytes.clone())?,
                        None => {
                            if let Some(key) = &p.old_key {
                                tx.remove(key, &p.uuid)?;
                            }
                        }
                    }
                }
                for (record, encoded) in &records {
                    changelog.insert(&record.csn.to_key(), encoded.as_slice())?;
                }
                if log == Logging::FloorRaised {
                    meta.insert(names::FLOOR, &last.0.to_be_bytes())?;
                    meta.insert(names::LOAD_FLOOR, &last.0.to_be_bytes())?;
                }
                meta.insert(names::LAST_CSN, &last.0.to_be_bytes())?;
                meta.insert(names::ENTRY_COUNT_AT, &last.0.to_be_bytes())?;
                if added != deleted {
                    if let Some(v) = meta.get(names::ENTRY_COUNT)? {
                        let count = u64_from(names::META, &v).map_err(ConflictableTransactionError::Abort)?;
                        let count = count.checked_add_signed(added - deleted).unwrap_or(0);
                        meta.insert(names::ENTRY_COUNT, &count.to_be_bytes())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        self.feed.keep(
            records
                .into_iter()
                .zip(planned)
                .map(|((record, _), p)| std::sync::Arc::new(FedChange::new(record, p.after.clone()))),
        );
        Ok(())
    }

    /// The changes after `after` up to `upto`, at most `max`, for a persist session:
    /// as the writer fed them, or read from the store once for all sessions
    /// ([`crate::feed`]). Only durable changes should be asked for; the caller checks the
    /// changelog floor around it.
    ///
    /// An entry read from the store is read as it is now, which may include a later write
    /// committed but not yet durable (another client's group); that write is made durable
    /// before this returns, so nothing sent can be taken back by a crash, and its CSN
    /// never reused.
    pub fn recent_changes(&self, after: Csn, upto: Csn, max: usize) -> Result<Vec<std::sync::Arc<FedChange>>> {
        let changes = self.feed.read(&self.changelog, &self.set, after, upto, max, &|| self.newest_committed())?;
        if let Some(newest) = changes.iter().map(|c| c.state_csn()).max() {
            self.sync(newest)?;
        }
        Ok(changes)
    }

    /// The refresh a consumer presenting `cookie` needs (SPEC §3).
    pub fn plan_refresh(&self, cookie: Option<&Cookie>) -> Result<RefreshKind> {
        let Some(cookie) = cookie else {
            return Ok(RefreshKind::Full);
        };
        if !self.recognizes(cookie)? {
            // Another store's cookie, or one from a history this store did not make: the
            // consumer followed a copy of this store past the point this one was
            // restored from, or claims changes never made durable. Nothing it holds
            // after the fork can be trusted, and nothing says where the fork is.
            return Ok(RefreshKind::Full);
        }
        if cookie.csn >= self.floor()? {
            Ok(RefreshKind::Delta)
        } else {
            Ok(RefreshKind::Present)
        }
    }

    /// Pins the changelog above `csn` for a refresh that will read it: `None` if it was
    /// already trimmed past `csn` (the caller must plan a refresh that does not need it).
    pub fn pin(&self, csn: Csn) -> Result<Option<Pin>> {
        let mut table = self.pins.lock();
        if csn < self.floor()? {
            return Ok(None);
        }
        Ok(Some(self.pins.insert(&mut table, csn)))
    }

    /// Pins the changelog above the current durable CSN, which is returned by
    /// [`Pin::csn`]. Always succeeds: the trimmer raises the floor only under the pin
    /// lock and never past the durable CSN it saw, which is at most the one read here.
    pub fn pin_current(&self) -> Pin {
        let mut table = self.pins.lock();
        let csn = self.durable_csn();
        self.pins.insert(&mut table, csn)
    }

    /// Every change above this CSN is in the changelog.
    pub fn floor(&self) -> Result<Csn> {
        Ok(match self.meta.get(names::FLOOR)? {
            Some(v) => Csn(u64_from(names::META, &v)?),
            None => Csn::ZERO,
        })
    }

    /// Marks the store, durably, as taking a bulk load of `file` before its first entry
    /// is written: until [`Directory::end_load`], a provider must not serve it as the
    /// directory (its consumers would replicate part of it, and those that reload drop
    /// the entries not loaded yet).
    pub fn begin_load(&self, file: &str) -> Result<()> {
        let mark = encode(names::META, &UnfinishedLoad { file: file.to_owned(), began_ms: now_ms() })?;
        self.failure.observe(self.meta.insert(names::LOAD_UNDER_WAY, mark).map_err(StoreError::from))?;
        self.failure.flush(&self.db).map(drop)
    }

    /// Clears [`Directory::begin_load`]'s mark, durably, once a load has written all it
    /// had to: whichever load it is, the store holds what it was given in full.
    pub fn end_load(&self) -> Result<()> {
        self.failure.observe(self.meta.remove(names::LOAD_UNDER_WAY).map_err(StoreError::from))?;
        self.failure.flush(&self.db).map(drop)
    }

    /// The load that began writing and did not finish, if one did not.
    pub fn unfinished_load(&self) -> Result<Option<UnfinishedLoad>> {
        self.meta.get(names::LOAD_UNDER_WAY)?.map(|v| decode(names::META, &v)).transpose()
    }

    /// The floor the last bulk load raised the changelog's to, if one did: a consumer
    /// whose position is below it gets a present refresh because of the load, whatever
    /// retention keeps, and an operator told it was retention would raise that for
    /// nothing.
    pub fn load_floor(&self) -> Result<Option<Csn>> {
        self.meta.get(names::LOAD_FLOOR)?.map(|v| u64_from(names::META, &v).map(Csn)).transpose()
    }

    /// How many adds, deletes and renames touching `spec`'s region were committed after
    /// `after`; `None` if retention has trimmed the changelog past `after`, so that this
    /// cannot be told. Those changes are what can leave a paged read of the region (a
    /// running provider's `search`) with an entry missing, printed twice, or printed
    /// without its parent; a modification cannot, since each entry is read once, whole.
    /// (No [`Pin`]: a reader that stalls for days would hold trimming back as long.)
    pub fn reshaped_since(&self, after: Csn, spec: &SearchSpec) -> Result<Option<usize>> {
        let mut reshaped = 0;
        for record in self.changelog().records(after, Csn(u64::MAX)) {
            let record = record?;
            reshaped += usize::from(record.kind != ChangeKind::Modify && record.touches(spec));
        }
        // Checked after reading: a floor still at or below `after` means that nothing
        // the read needed had been trimmed.
        Ok((self.floor()? <= after).then_some(reshaped))
    }

    /// Entries in `spec`'s region, in tree order.
    pub fn search<'a>(&self, spec: &'a SearchSpec) -> impl Iterator<Item = Result<Entry>> + 'a {
        self.set.search(spec)
    }

    /// Records where consumer `id` is, so trimming holds its position.
    pub fn record_consumer(&self, id: &str, csn: Csn) -> Result<()> {
        let pos = ConsumerPosition { csn, seen_ms: now_ms() };
        let inserted = self.consumers.insert(id.as_bytes(), encode(names::CONSUMERS, &pos)?);
        self.failure.observe(inserted.map_err(StoreError::from))?;
        Ok(())
    }

    /// Drops the position kept for the consumer `id` (as [`Directory::record_consumer`]
    /// keys it), and gives it back; `None` if none is kept. It then holds back no
    /// trimming, as if a trim had passed it; a session of it records it again.
    pub fn forget_consumer(&self, id: &str) -> Result<Option<ConsumerPosition>> {
        let removed = self.failure.observe(self.consumers.remove(id.as_bytes()).map_err(StoreError::from))?;
        removed.map(|v| decode(names::CONSUMERS, &v)).transpose()
    }

    /// Known consumer positions.
    pub fn consumer_positions(&self) -> Result<Vec<(String, ConsumerPosition)>> {
        self.consumers
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode(names::CONSUMERS, &v)?))
            })
            .collect()
    }

    /// Trims the changelog per `policy` as of `now_ms` (SPEC §2): age-based trimming
    /// stops at the oldest position of a consumer seen within `hold_for_consumers`; only
    /// `max_changes` may trim past it. Nothing trims past a [`Pin`] of a running refresh.
    pub fn trim(&self, policy: &RetentionPolicy, now_ms: u64) -> Result<TrimReport> {
        self.trim_connected(policy, now_ms, &HashSet::new())
    }

    /// [`Directory::trim`], with the consumers whose position ids are in `connected`
    /// (`agreement/client`, as [`Directory::record_consumer`] keys them) counted as seen
    /// now. A connected consumer's position is written again only every minute or so
    /// while it has nothing to acknowledge, so with a hold shorter than that, one paused
    /// for a few seconds (a slow disk, a stopped process) read as gone, its position
    /// was trimmed and it reloaded: the slow consumer the hold is for.
    pub fn trim_connected(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        connected: &HashSet<String>,
    ) -> Result<TrimReport> {
        let pins = self.pins.lock();
        let floor = self.floor()?;
        let newest = self.durable_csn();
        let mut target = floor;
        if let Some(max_age) = policy.max_age {
            let cutoff = now_ms.saturating_sub(duration_ms(max_age));
            for record in self.changelog.records(floor, newest) {
                let record = record?;
                if record.time_ms >= cutoff {
                    break;
                }
                target = record.csn;
            }
            let hold_since = now_ms.saturating_sub(duration_ms(policy.hold_for_consumers));
            let holding = !policy.hold_for_consumers.is_zero();
            // A position below the floor holds nothing: its consumer gets a present
            // refresh whatever is kept (it stays listed while its session runs, and its
            // session's end writes it again).
            let held = self
                .consumer_positions()?
                .into_iter()
                .filter(|(_, p)| p.csn >= floor)
                .filter(|(id, p)| {
                    holding && (connected.contains(id) || p.seen_ms.max(policy.up_since_ms) >= hold_since)
                })
                .map(|(_, p)| p.csn)
                .min();
            if let Some(held) = held {
                target = target.min(held);
            }
        }
        if let Some(max) = policy.max_changes {
            let retained = newest.0.saturating_sub(target.0);
            if retained > max {
                target = Csn(newest.0 - max);
            }
        }
        if let Some(pinned) = pins.lowest() {
            target = target.min(pinned);
        }
        if target <= floor {
            return Ok(TrimReport { removed: 0, floor, forgotten: Vec::new() });
        }
        // Raise the floor first: a crash mid-trim then leaves extra records, never a
        // floor below a hole.
        self.failure.observe(self.meta.insert(names::FLOOR, &target.0.to_be_bytes()).map_err(StoreError::from))?;
        self.failure.flush(&self.db)?;
        // New pins now see the raised floor; the records below it may go.
        drop(pins);
        let removed = self.failure.observe(self.changelog.remove_through(target))?;
        let forgotten = self.failure.observe(self.forget_consumers_below(target, connected))?;
        Ok(TrimReport { removed, floor: target, forgotten })
    }

    /// Forgets the consumer positions below `floor`. They can hold nothing back any more
    /// (the changes they would hold are gone, and no policy brings them back), and a
    /// consumer that comes back gets a present refresh and records its new position.
    /// Without this the table grew by one record for every consumer store that ever
    /// connected (each has its own id: a consumer whose store is recreated, every
    /// container started fresh), and each trim read all of them. A `connected` one is
    /// kept: its session writes its next position over it.
    fn forget_consumers_below(&self, floor: Csn, connected: &HashSet<String>) -> Result<Vec<String>> {
        let mut forgotten = Vec::new();
        for item in self.consumers.iter() {
            let (key, value) = item?;
            if connected.contains(String::from_utf8_lossy(&key).as_ref()) {
                continue;
            }
            let pos: ConsumerPosition = decode(names::CONSUMERS, &value)?;
            // Only if unchanged: a session recording a newer position meanwhile wins.
            if pos.csn < floor && self.consumers.compare_and_swap(&key, Some(&value), None::<&[u8]>)?.is_ok() {
                forgotten.push(String::from_utf8_lossy(&key).into_owned());
            }
        }
        Ok(forgotten)
    }

    /// Flushes everything to disk (shutdown): the writes, and what else the store holds
    /// unflushed (consumer positions, a trim's removals). With every write durable
    /// already, the flush used to stop there, and a disk that filled while no write came
    /// (sled's own background flush failing on those) went unnoticed: the provider
    /// stopped with exit status 0, sled logging `failed to flush data to disk` as it
    /// closed.
    pub fn flush(&self) -> Result<()> {
        self.sync(self.durability.last_committed())?;
        self.failure.flush(&self.db).map(drop)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_changes::{modify_sn, person, suffix, unlocked};
    use tether_protocol::Value;

    /// A copy that lost its log (missing, or empty) is refused by name and left as it
    /// is: sled opened it as a new, empty store under a new identity.
    #[test]
    fn a_store_without_its_log_is_refused_and_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let base = Dn::parse("dc=example,dc=com").unwrap();
        {
            let d = Directory::open(tmp.path(), &base).unwrap();
            d.write(&suffix()).unwrap();
            d.flush().unwrap();
        }
        let log = tmp.path().join("db");
        std::fs::remove_file(&log).unwrap();
        assert!(store_exists(tmp.path()), "a store, if a broken one");
        let e = Directory::open(tmp.path(), &base).err().unwrap();
        assert!(matches!(e, StoreError::Incomplete { missing: "is missing", .. }), "{e}");
        assert!(e.to_string().contains("db is missing: an incomplete copy?"), "{e}");
        assert!(!log.exists(), "nothing made");
        std::fs::write(&log, b"").unwrap();
        let e = crate::ReplicaStore::open(tmp.path()).err().unwrap();
        assert!(e.to_string().contains("db is empty: an incomplete copy?"), "{e}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0, "nothing written");
    }

    /// A snapshot sled began and never finished (a full disk at open, a crash while
    /// opening) sorts after every whole one, and sled reads it as a damaged store; it
    /// is removed and the store opens with everything it held.
    #[test]
    fn session_ids_reserved_are_never_reserved_again_after_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let base = Dn::parse("dc=example,dc=com").unwrap();
        {
            let d = Directory::open(tmp.path(), &base).unwrap();
            assert_eq!(d.reserve_session_ids(1024).unwrap(), 1..1025, "a new store begins at 1");
            assert_eq!(d.reserve_session_ids(3).unwrap(), 1025..1028);
        }
        let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
        assert_eq!(d.reserve_session_ids(1024).unwrap(), 1028..2052, "after the reopen");
    }

    #[test]
    fn an_unfinished_snapshot_file_is_removed_and_the_store_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let base = Dn::parse("dc=example,dc=com").unwrap();
        {
            let d = Directory::open(tmp.path(), &base).unwrap();
            d.write(&suffix()).unwrap();
            d.write(&person("kept")).unwrap();
            d.flush().unwrap();
        }
        let unfinished = tmp.path().join("snap.FFFFFFFFFFFFFFF0.generating");
        std::fs::write(&unfinished, b"").unwrap();
        let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
        assert!(!unfinished.exists());
        assert_eq!(d.entry_count().unwrap(), 2, "every entry is there");
        // A whole snapshot file that is damaged is still the error that names it.
        drop(d);
        let damaged = tmp.path().join("snap.FFFFFFFFFFFFFFF0");
        std::fs::write(&damaged, b"").unwrap();
        let Err(e) = unlocked(|| Directory::open(tmp.path(), &base)) else { panic!("opened on a damaged snapshot") };
        assert!(e.is_damage() && e.to_string().contains("snap.FFFFFFFFFFFFFFF0"), "{e}");
    }

    /// sled's recovery panics on some damage (measured: 256 bytes overwritten in the
    /// middle of a 27 MB log, `tried to serialize Uninitialized`); where the damage
    /// falls is up to sled's layout, so the guard is tested with a panicking open.
    #[test]
    fn a_panic_in_sled_s_recovery_is_an_error_naming_the_store() {
        let path = Path::new("/srv/provider/data");
        let err = guard_recovery(path, || -> u32 { panic!("tried to serialize Uninitialized") }).unwrap_err();
        assert!(err.is_damage(), "{err}");
        let shown = err.to_string();
        assert!(shown.starts_with("sled could not recover the store's files"), "{shown}");
        assert!(!shown.contains("snap"), "a panic does not say where the damage is: {shown}");
        assert!(shown.contains("(tried to serialize Uninitialized)") && shown.contains("backup"), "{shown}");
        let owned = guard_recovery(path, || -> u32 { panic!("{} of {}", 1, 2) }).unwrap_err();
        assert!(owned.to_string().contains("(1 of 2)"), "{owned}");
        assert_eq!(guard_recovery(path, || 7).unwrap(), 7);
    }

    /// sled unwraps its threads' spawn at open: under a limit on the user's threads
    /// (systemd's `TasksMax=`) or on memory, it panics as it does on damage. That is
    /// told as the limit, not as damage whose way out is a backup older than the store.
    #[test]
    fn a_thread_or_memory_refused_at_open_is_not_called_damage() {
        fn spawned(errno: i32) -> std::io::Result<u32> {
            Err(std::io::Error::from_raw_os_error(errno))
        }
        let path = Path::new("/srv/provider/data");
        // As sled's `.unwrap()` and tokio's `{}` print them: EAGAIN, then ENOMEM.
        let refusals: [Box<dyn Fn() -> u32>; 4] = [
            Box::new(|| spawned(11).unwrap()),
            Box::new(|| spawned(12).unwrap()),
            Box::new(|| panic!("OS can't spawn worker thread: {}", std::io::Error::from_raw_os_error(11))),
            Box::new(|| panic!("OS can't spawn worker thread: {}", std::io::Error::from_raw_os_error(12))),
        ];
        for refused in refusals {
            let err = guard_recovery(path, refused).unwrap_err();
            let shown = err.to_string();
            assert!(!err.is_damage() && matches!(err, StoreError::Resources { .. }), "{shown}");
            assert!(shown.contains("refused a thread or memory") && shown.contains("TasksMax="), "{shown}");
            assert!(!shown.contains("damaged") && !shown.contains("backup"), "{shown}");
        }
        // Damage that happens to mention a number is still damage.
        let err = guard_recovery(path, || -> u32 { panic!("bad frame at offset 11") }).unwrap_err();
        assert!(err.is_damage(), "{err}");
    }

    /// The recovery's panic is told once, in the error: the panic hook stays quiet for
    /// it, and only for it. Run in a child process of this test binary, where the hook
    /// prints to a stderr that can be read (the test harness captures it otherwise).
    #[test]
    fn a_caught_recovery_panic_is_not_printed_but_other_panics_are() {
        if std::env::var_os("TETHER_QUIET_PANIC_CHILD").is_some() {
            let err = guard_recovery(Path::new("/srv/data"), || -> u32 { panic!("caught in recovery") });
            assert!(err.is_err());
            let other = std::thread::spawn(|| panic!("a panic elsewhere")).join();
            assert!(other.is_err());
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "directory::tests::a_caught_recovery_panic_is_not_printed_but_other_panics_are"])
            .args(["--nocapture", "--test-threads=1"])
            .env("TETHER_QUIET_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "{stderr}");
        assert!(stderr.contains("a panic elsewhere"), "other panics still reach the hook: {stderr}");
        assert!(!stderr.contains("caught in recovery"), "{stderr}");
    }

    /// A load's mark is on disk once `begin_load` returns, and its clearing once
    /// `end_load` does: a process killed right after either (here, exiting without
    /// dropping the store, so sled neither flushes nor closes it) leaves what it said.
    /// Run in a child process of this test binary.
    #[test]
    fn a_load_mark_and_its_clearing_outlive_a_process_killed_right_after() {
        let base = Dn::parse("dc=example,dc=com").unwrap();
        if let Some(path) = std::env::var_os("TETHER_LOAD_MARK_CHILD") {
            // The parent's handle lets go of sled's lock from a background thread.
            let d = unlocked(|| Directory::open(Path::new(&path), &base)).unwrap();
            d.begin_load("people.ldif").unwrap();
            if std::env::var_os("TETHER_LOAD_MARK_END").is_some() {
                d.end_load().unwrap();
            }
            std::process::exit(0);
        }
        let tmp = tempfile::tempdir().unwrap();
        drop(Directory::open(tmp.path(), &base).unwrap());
        for end in [false, true] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args([
                    "--exact",
                    "directory::tests::a_load_mark_and_its_clearing_outlive_a_process_killed_right_after",
                ])
                .env("TETHER_LOAD_MARK_CHILD", tmp.path());
            if end {
                child.env("TETHER_LOAD_MARK_END", "1");
            }
            let out = child.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
            let mark = d.unfinished_load().unwrap().map(|load| load.file);
            assert_eq!(mark, (!end).then(|| "people.ldif".to_owned()), "ended: {end}");
        }
    }

    /// A damaged snapshot file stops every open; the error names it, and moving it out,
    /// as the error says, opens the store with everything in it.
    #[test]
    fn a_damaged_snapshot_is_named_and_the_store_opens_without_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = Dn::parse("dc=example,dc=com").unwrap();
        {
            let d = Directory::open(tmp.path(), &base).unwrap();
            d.write(&suffix()).unwrap();
            for uid in ["ann", "bob", "cy"] {
                d.write(&person(uid)).unwrap();
            }
            d.flush().unwrap();
        }
        // sled writes its snapshot when it opens a store it has to recover.
        drop(unlocked(|| Directory::open(tmp.path(), &base)).unwrap());
        let snap = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("snap."))
            .expect("a snapshot");
        let mut bytes = std::fs::read(&snap).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&snap, bytes).unwrap();

        let Err(err) = unlocked(|| Directory::open(tmp.path(), &base)) else { panic!("a damaged snapshot opened") };
        assert!(err.is_damage(), "{err}");
        let shown = err.to_string();
        assert!(shown.contains(&format!("move {} out of the folder", snap.display())), "{shown}");

        let aside = tempfile::tempdir().unwrap();
        std::fs::rename(&snap, aside.path().join("snap")).unwrap();
        let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
        assert_eq!(d.entry_count().unwrap(), 4, "every entry is back");
    }

    /// A count out of step with the entries (a batch torn on a full disk) is set right
    /// by a recount, which says what it held; a right one is left alone.
    #[test]
    fn a_recount_sets_a_wrong_entry_count_right() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        d.write(&person("ann")).unwrap();
        assert_eq!(d.recount_entries().unwrap(), None);
        d.meta.insert(names::ENTRY_COUNT, &10u64.to_be_bytes()).unwrap();
        assert_eq!(d.recount_entries().unwrap(), Some(10));
        assert_eq!(d.entry_count().unwrap(), 2);
        assert_eq!(d.recount_entries().unwrap(), None);
    }

    /// An older build (a rollback) adds and deletes without moving the count, nor the
    /// CSN it was right at: the next open by this build counts again. One that kept
    /// up with every commit is left alone.
    #[test]
    fn a_count_an_older_build_left_behind_is_redone_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let base = Dn::parse("dc=example,dc=com").unwrap();
        let d = Directory::open(tmp.path(), &base).unwrap();
        d.write(&suffix()).unwrap();
        d.write(&person("ann")).unwrap();
        let at = d.meta.get(names::ENTRY_COUNT_AT).unwrap().unwrap();
        d.write(&person("bob")).unwrap();
        d.sync(d.durable_csn()).unwrap();
        // What the older build leaves: a third entry, the count and its CSN as before.
        d.meta.insert(names::ENTRY_COUNT, &2u64.to_be_bytes()).unwrap();
        d.meta.insert(names::ENTRY_COUNT_AT, at).unwrap();
        d.db.flush().unwrap();
        drop(d);
        let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
        assert_eq!(d.entry_count().unwrap(), 3, "counted again");
        d.write(&person("cy")).unwrap();
        d.sync(d.durable_csn()).unwrap();
        // A count set wrong by hand while every commit kept its CSN is this build's own:
        // not counted again at open (the loader's recount is for those).
        d.meta.insert(names::ENTRY_COUNT, &10u64.to_be_bytes()).unwrap();
        d.db.flush().unwrap();
        drop(d);
        let d = unlocked(|| Directory::open(tmp.path(), &base)).unwrap();
        assert_eq!(d.entry_count().unwrap(), 10);
    }

    #[test]
    fn a_failed_commit_fails_its_writes_and_the_rest_of_the_group_but_not_the_run_before() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        d.write(&person("ann")).unwrap();
        // A damaged entry count: any commit that adds or removes an entry aborts on it.
        d.meta.insert(names::ENTRY_COUNT, b"bad".as_slice()).unwrap();
        let before = d.durable_csn();
        let group =
            [modify_sn("ann", "One"), modify_sn("ann", "Two"), person("bob"), person("cy"), modify_sn("ann", "Three")];
        let results = d.write_group(&group);
        // The first modify commits alone (the second reads what it changed); the second
        // shares a run with the adds, whose commit fails when the third modify needs it
        // committed; that one is never tried.
        let first = results[0].as_ref().expect("the run before the failure commits");
        assert_eq!(first.csn, before.next());
        assert!(matches!(results[1], Err(StoreError::Corrupt(_))), "{:?}", results[1]);
        for r in &results[2..] {
            assert!(matches!(r, Err(StoreError::GroupFailed(m)) if m.contains("expected 8 bytes")), "{r:?}");
        }
        d.sync(first.csn).unwrap();
        let ann = d.entries().get(&Dn::parse("uid=ann,dc=example,dc=com").unwrap()).unwrap().unwrap();
        assert_eq!(ann.attrs.values("sn"), [Value::from("One")]);
        assert!(!d.entries().contains(&Dn::parse("uid=bob,dc=example,dc=com").unwrap()).unwrap());
        assert_eq!(d.durable_csn(), first.csn, "nothing after the failed commit took a CSN");
        // The next write takes the CSN after the last committed one.
        d.meta.insert(names::ENTRY_COUNT, &2u64.to_be_bytes()).unwrap();
        assert_eq!(d.write(&person("dee")).unwrap().csn, first.csn.next());
    }

    #[test]
    fn a_change_read_from_the_store_with_a_later_write_not_yet_durable_makes_that_write_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        let before = d.write(&person("ann")).unwrap().csn;
        let first = d.write(&modify_sn("ann", "One")).unwrap().csn;
        // Another client's write to the same entry: committed, not yet durable.
        let later = d.write_nowait(&modify_sn("ann", "Two")).unwrap().csn;
        assert!(d.durable_csn() < later);
        // From the feed, the change comes with the entry it wrote: nothing to flush.
        let fed = d.recent_changes(before, first, 10).unwrap();
        assert_eq!(fed[0].state_csn(), first);
        assert!(d.durable_csn() < later);
        // A session behind the feed's reach reads the entry as it is now.
        d.feed.forget();
        let changes = d.recent_changes(before, first, 10).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state_csn(), later, "the entry as it is now");
        assert!(d.durable_csn() >= later, "what is sent is durable");
    }

    /// A delta that finds an entry gone sends its delete with the store's newest
    /// committed CSN (the write that removed it may be later than the delta's range),
    /// and counts that CSN among what it read: the refresh makes `newest_read` durable
    /// before it sends the batch, so the delete a consumer applies is never of a write
    /// a crash could take back, nor one whose CSN a restarted provider would give again.
    #[test]
    fn a_delta_finding_an_entry_deleted_by_a_write_not_yet_durable_reads_that_write() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        let before = d.write(&person("ann")).unwrap().csn;
        let upto = d.write(&modify_sn("ann", "One")).unwrap().csn;
        // Another client's delete: committed, not yet durable, past the delta's range.
        let removed =
            d.write_nowait(&Change::Delete { dn: Dn::parse("uid=ann,dc=example,dc=com").unwrap() }).unwrap().csn;
        assert!(d.durable_csn() < removed);
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        let mut delta = d.changelog().delta(before, upto, &spec).unwrap();
        let ops = delta.next_encoded(d.entries(), 10, usize::MAX, &|| d.newest_committed()).unwrap();
        match ops.as_slice() {
            [tether_protocol::encoded::EncodedOp::Delete { csn, .. }] => assert_eq!(*csn, removed),
            other => panic!("one delete, not {other:?}"),
        }
        assert_eq!(delta.newest_read(), removed, "the delete sent is of a write the caller must make durable");
    }
}
