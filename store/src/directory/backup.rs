//! A copy of a running provider's store, consistent at one CSN, made while writes go on.
//!
//! A copy of the folder's files is torn unless the provider is stopped or the volume is
//! snapshotted, and an LDIF backup restores as a new directory that every consumer
//! reloads in full. This copy is the store itself, every tree of it: restored in place
//! of `data_dir`, its consumers resume by delta, as from a copy of a stopped provider.
//!
//! Writes are not held for the whole copy, which at a million entries and a full
//! changelog takes tens of seconds. The copy is made in two steps:
//! 1. With the changelog pinned above the durable CSN `S` (so no trim removes a record
//!    after it), every tree is copied as it is read, while writes go on: each key comes
//!    out as it was at some moment of the copy, not all at the same one.
//! 2. What changed since `S` is brought in: every entry a changelog record after `S`
//!    names loses every key it may have in the copy (each DN it had since `S`, which the
//!    records name, and its UUID's) and gets its current state, and the records after
//!    `S` are copied. An entry no record names has not changed since `S`, so step 1
//!    copied it as it is. This is done in rounds while writes go on, each taking the
//!    changes up to the durable CSN it began at (an entry read as it moves is left to
//!    the next round, whose changes name it), and a last time under the writer lock (no
//!    write commits meanwhile) and the pin lock (no trim raises the floor), which then
//!    also drops the records below the floor and copies the small trees (the store's
//!    identity, last CSN, entry count, histories, consumers' positions) again whole.
//!
//! Writes wait for the last round only, which is as long as the changes made during the
//! round before it. The copy's entry count is checked against its entries before it is
//! kept, so a copy that is not the store is never left looking like one.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sled::Tree;
use tether_protocol::{Csn, EntryHead, EntryUuid, HistoryId};

use super::{names, Directory};
use crate::error::{Result, StoreError};

pub mod copy;
mod leftovers;

use copy::{CopyWriter, SledCopy};

/// Keys copied between two calls of the caller's watch.
const WATCH_EVERY: usize = 2_000;

/// Rounds of bringing changes in while writes go on, at most: each takes the changes
/// made during the one before, fewer each time unless writes come faster than they are
/// brought in.
const UNHELD_ROUNDS: usize = 4;

/// Changes few enough to bring in with writes held (well under a millisecond's work).
const HELD_ENOUGH: u64 = 16;

/// What [`Directory::backup`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The copy holds every change up to this CSN and none after it.
    pub csn: Csn,
    /// The history the store's cookies named when the copy was made: consumers whose
    /// cookies name it at or below [`BackupReport::csn`] resume by delta from the copy.
    pub history: HistoryId,
    /// Entries in the copy.
    pub entries: u64,
    /// Changelog records in the copy.
    pub changelog: u64,
    /// Changes committed while the trees were copied, brought in after.
    pub caught_up: u64,
    /// Of those, the ones brought in with writes held (the others were brought in while
    /// writes went on).
    pub caught_up_held: u64,
    /// How long writes waited for the copy's last step.
    pub writes_held: Duration,
    /// Copies of earlier backups to the destination that their process left when it
    /// died, removed (see `leftovers`).
    pub removed_leftovers: Vec<PathBuf>,
}

/// How far the first step of a backup has come, for the caller's watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupProgress {
    /// Keys copied so far, in every tree.
    pub keys: u64,
    /// Entries the store held when the copy began.
    pub entries: u64,
}

impl Directory {
    /// Copies the whole store into `dest`, a folder that must not exist or be empty,
    /// consistent at one CSN (see the module docs), while writes go on. `watch` is
    /// called every few thousand keys; returning `false` abandons the copy (the process
    /// is stopping). The copy is written beside `dest` and moved there whole, so on any
    /// failure `dest` is left as it was found, and what the copy wrote is removed.
    pub fn backup(&self, dest: &Path, watch: &mut dyn FnMut(BackupProgress) -> bool) -> Result<BackupReport> {
        self.backup_through(dest, &mut open_here, watch)
    }

    /// [`Directory::backup`], the copy written by what `open` makes of the folder it is
    /// written in (see [`CopyWriter`]): a writer in another process, whose memory is not this
    /// one's.
    pub fn backup_through(
        &self,
        dest: &Path,
        open: &mut dyn FnMut(&Path) -> Result<Box<dyn CopyWriter>>,
        watch: &mut dyn FnMut(BackupProgress) -> bool,
    ) -> Result<BackupReport> {
        self.backup_with(dest, open, watch, || {})
    }

    /// [`Directory::backup_through`], running `between` after the first step and
    /// before the second (the tests' writes made while the copy ran).
    pub(crate) fn backup_with(
        &self,
        dest: &Path,
        open: &mut dyn FnMut(&Path) -> Result<Box<dyn CopyWriter>>,
        watch: &mut dyn FnMut(BackupProgress) -> bool,
        between: impl FnOnce(),
    ) -> Result<BackupReport> {
        let (partial, removed_leftovers) = prepare(dest, &self.folder)?;
        let copied = open(&partial).and_then(|mut copy| {
            let report = self.copy_into(copy.as_mut(), watch, between);
            // The writer lets go of the folder before it is moved or removed.
            drop(copy);
            report
        });
        let copied = copied.and_then(|report| {
            put_in_place(&partial, dest)?;
            Ok(BackupReport { removed_leftovers, ..report })
        });
        if copied.is_err() {
            // Gone already when it was renamed into place and the rename's sync failed,
            // or when a writer of its own removed it.
            match std::fs::remove_dir_all(&partial) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(copy = %partial.display(), error = %e, "removing a failed backup's files")
                }
                _ => {}
            }
        }
        copied
    }

    fn copy_into(
        &self,
        copy: &mut dyn CopyWriter,
        watch: &mut dyn FnMut(BackupProgress) -> bool,
        between: impl FnOnce(),
    ) -> Result<BackupReport> {
        let pin = self.pin_current();
        let mut progress = BackupProgress { keys: 0, entries: self.entry_count()? };
        for name in self.db.tree_names() {
            copy_range(&self.db.open_tree(&name)?, &name, copy, .., &mut |n| {
                progress.keys += n;
                watch(progress)
            })?;
        }
        between();

        // The changes made while the trees were read, brought in without holding writes,
        // a round at a time while many came: writes then wait only for those made
        // during the last round.
        let (mut since, mut caught_up) = (pin.csn(), 0);
        for _ in 0..UNHELD_ROUNDS {
            let upto = self.durable_csn();
            if upto.0.saturating_sub(since.0) <= HELD_ENOUGH {
                break;
            }
            caught_up += self.bring_in(copy, since, upto, Writes::Going)?;
            since = upto;
        }
        // A writer of its own may be behind: writes are not held while it catches up.
        copy.settle()?;

        let last = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let pins = self.pins.lock();
        let held = Instant::now();
        // Nothing the copy holds goes unacknowledged by the store it came from.
        self.sync(*last)?;
        let caught_up_held = self.bring_in(copy, since, *last, Writes::Held)?;
        self.copy_small_trees(copy)?;
        let (csn, history, entries) = (*last, self.history(), self.entry_count()?);
        let writes_held = held.elapsed();
        drop(pins);
        drop(last);
        drop(pin);

        let counts = copy.finish()?;
        if counts.entries != entries || counts.uuids != entries {
            return Err(StoreError::Corrupt(format!(
                "the copy holds {} entries and {} entryUUIDs where the store counts {entries}: not kept",
                counts.entries, counts.uuids
            )));
        }
        // Asked once more before the copy is put in place: one whose client has gone
        // (the provider stopping cut it off) is not left at `dest` for a command that
        // then copies the stopped store there, and finds the folder taken.
        if !watch(progress) {
            return Err(StoreError::Abandoned);
        }
        Ok(BackupReport {
            csn,
            history,
            entries,
            changelog: counts.changelog,
            caught_up: caught_up + caught_up_held,
            caught_up_held,
            writes_held,
            removed_leftovers: Vec::new(),
        })
    }

    /// Brings into `copy` the changes after `since` up to `upto` (see the module docs):
    /// each entry they name loses every key it may have in the copy and gets its current
    /// state, and the changelog records after `since` are copied. With writes going on,
    /// an entry may move or go while it is read: it is then left out, for the changes
    /// after `upto`, which a later call brings in, made it so.
    fn bring_in(&self, copy: &mut dyn CopyWriter, since: Csn, upto: Csn, writes: Writes) -> Result<u64> {
        let (entries, uuids) = (names::ENTRIES.as_bytes(), names::UUIDS.as_bytes());
        // Each entry changed since `since`, with every DN key it had since.
        let mut touched: HashMap<EntryUuid, BTreeSet<Vec<u8>>> = HashMap::new();
        let mut changes = 0;
        for record in self.changelog.records(since, upto) {
            let record = record?;
            changes += 1;
            let keys = touched.entry(record.uuid).or_default();
            keys.insert(record.dn.tree_key());
            keys.extend(record.old_dn.as_ref().map(|dn| dn.tree_key()));
        }
        // Every key first, then every current state: an entry may have taken the name
        // another one changed since had when the copy read it.
        for (uuid, keys) in &touched {
            for key in keys {
                copy.remove(entries, key)?;
            }
            copy.forget(uuid)?;
        }
        for uuid in touched.keys() {
            let Some(key) = self.set.uuids.get(uuid.as_bytes())? else { continue };
            let entry = self.set.entries.get(&key)?;
            let holder = entry.as_ref().map(|bytes| EntryHead::decode(bytes).map(|head| head.uuid)).transpose();
            let holder = holder.map_err(|source| StoreError::Codec { tree: "entries", source })?;
            match (entry, writes) {
                (Some(entry), _) if holder == Some(*uuid) => {
                    copy.insert(entries, &key, &entry)?;
                    copy.insert(uuids, uuid.as_bytes(), &key)?;
                }
                (_, Writes::Going) => {}
                (_, Writes::Held) => {
                    return Err(StoreError::Corrupt(format!("entryUUID {uuid} leads to no entry of its own")));
                }
            }
        }
        let changelog = names::CHANGELOG.as_bytes();
        copy_range(&self.changelog.tree, changelog, copy, since.next().to_key().., &mut |_| true)?;
        Ok(changes)
    }

    /// Under the writer and pin locks, the last of the copy: the changelog records the
    /// floor has passed since they were read dropped, and the small trees (the store's
    /// identity, last CSN, entry count, histories, consumers' positions) copied again
    /// whole, a tree made or dropped since the first step too.
    fn copy_small_trees(&self, copy: &mut dyn CopyWriter) -> Result<()> {
        copy.remove_through(names::CHANGELOG.as_bytes(), &self.floor()?.to_key())?;
        let large = [names::ENTRIES, names::UUIDS, names::CHANGELOG].map(str::as_bytes);
        let names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        copy.keep_only(&names)?;
        for name in names.iter().filter(|n| !large.contains(&n.as_slice())) {
            copy.clear(name)?;
            copy_range(&self.db.open_tree(name)?, name, copy, .., &mut |_| true)?;
        }
        Ok(())
    }
}

/// The copy written in this process.
fn open_here(folder: &Path) -> Result<Box<dyn CopyWriter>> {
    Ok(Box::new(SledCopy::create(folder)?))
}

/// Whether writes go on while [`Directory::bring_in`] reads the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    Going,
    Held,
}

/// Copies the keys of `from` in `range` into the copy's tree `to`, telling `watch` every
/// [`WATCH_EVERY`] keys how many it copied; stops with [`StoreError::Abandoned`] when
/// `watch` says so. Key by key, not in sled batches: a batch takes sled's concurrency
/// lock for writing, which is one for every store of the process, so each batch of a
/// copy written in the provider held up its writes, where single inserts share it: one
/// at a time, about 2,700 a second alone, they ran at 340 to 530 a second beside a copy
/// of 100,000 entries made in batches of 2,000, and at 850 to 970 beside one made key by
/// key (which took as long, 2.4 to 3.0 s).
fn copy_range(
    from: &Tree,
    to: &[u8],
    copy: &mut dyn CopyWriter,
    range: impl std::ops::RangeBounds<[u8; 8]> + Clone,
    watch: &mut dyn FnMut(u64) -> bool,
) -> Result<()> {
    let range = (range.start_bound().map(|b| b.to_vec()), range.end_bound().map(|b| b.to_vec()));
    let mut copied = 0;
    for item in from.range::<Vec<u8>, _>(range) {
        let (key, value) = item?;
        copy.insert(to, &key, &value)?;
        copied += 1;
        if copied == WATCH_EVERY {
            if !watch(copied as u64) {
                return Err(StoreError::Abandoned);
            }
            copied = 0;
        }
    }
    if !watch(copied as u64) {
        return Err(StoreError::Abandoned);
    }
    Ok(())
}

/// Checks that `dest` can take a copy (absent, or an empty folder) and makes the folder
/// the copy is written in beside it, `DEST.partial.<pid>-<nanoseconds>` (mode 0700: it
/// holds every entry, `userPassword` values too), renamed to `dest` once the copy is
/// whole: a copy cut off (the process killed, the machine down) is then never found at
/// `dest`, looking like a store. Removes the copies of earlier backups to `dest` whose
/// process died meanwhile, returning them with the folder. A destination inside the
/// store's own folder (`store`) is refused.
fn prepare(dest: &Path, store: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let refused = |reason: String| StoreError::BackupDestination { path: dest.display().to_string(), reason };
    if inside_store(dest, store) {
        return Err(refused(format!(
            "is inside the store's folder {}: a copy there would go with the store it is to replace",
            store.display()
        )));
    }
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refused(e.to_string())),
        Ok(meta) if !meta.is_dir() => return Err(refused("is not a folder".to_owned())),
        Ok(_) => match std::fs::read_dir(dest).map(|mut entries| entries.next().is_none()) {
            Ok(true) => {}
            Ok(false) => return Err(refused("is not empty: a backup is made into a new or empty folder".to_owned())),
            Err(e) => return Err(refused(e.to_string())),
        },
    }
    let Some(name) = dest.file_name() else { return Err(refused("names no folder".to_owned())) };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let partial = dest.with_file_name(leftovers::partial_name(&name.to_string_lossy(), std::process::id(), nanos));
    let removed = leftovers::remove_dead(dest);
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial)
        .map_err(|e| refused(format!("cannot be written beside: making {}: {e}", partial.display())))?;
    Ok((partial, removed))
}

/// Whether a backup to `dest` would be made inside the store's folder `store` (however
/// either is spelled: links, `..`), where it would go with the store it is to replace.
/// `dest` need not exist; its folder must, to be told.
pub fn inside_store(dest: &Path, store: &Path) -> bool {
    let Some(parent) = dest.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }) else {
        return false;
    };
    match (parent.canonicalize(), store.canonicalize()) {
        (Ok(parent), Ok(store)) => parent.starts_with(store),
        _ => false,
    }
}

/// Puts the whole copy at `partial` in place as `dest`, durably.
fn put_in_place(partial: &Path, dest: &Path) -> Result<()> {
    let failed = |e: std::io::Error| StoreError::BackupDestination {
        path: dest.display().to_string(),
        reason: format!("could not take the copy from {}: {e}", partial.display()),
    };
    // An empty folder at `dest` is replaced (rename(2) allows that of a folder).
    std::fs::rename(partial, dest).map_err(failed)?;
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Err(e) = crate::disk_sync::sync_folder(parent) else { return Ok(()) };
    // The copy is whole at `dest`, but a crash could take its name back: a failed backup
    // leaves `dest` as it found it, so it is taken away, and the error says what is left.
    let reason = match std::fs::remove_dir_all(dest) {
        Ok(()) => format!("could not be made durable (syncing its folder: {e}); the copy was removed"),
        Err(left) => format!(
            "could not be made durable (syncing its folder: {e}), and the copy there could not be removed ({left}): \
             remove it"
        ),
    };
    Err(StoreError::BackupDestination { path: dest.display().to_string(), reason })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use tether_protocol::{Change, Dn, Entry, Rdn, SearchSpec};

    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::changelog::RetentionPolicy;
    use crate::directory::{open_db, StoreKind, StoreOptions};
    use crate::test_changes::{modify_sn, person, suffix, unlocked};
    use sled::Db;

    type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

    fn base() -> Dn {
        Dn::parse("dc=example,dc=com").unwrap()
    }

    /// The whole directory, as the tests search it.
    fn whole() -> SearchSpec {
        SearchSpec::subtree(base())
    }

    fn delete(uid: &str) -> Change {
        Change::Delete { dn: Dn::parse(&format!("uid={uid},dc=example,dc=com")).unwrap() }
    }

    fn rename(uid: &str, to: &str) -> Change {
        Change::ModDn {
            dn: Dn::parse(&format!("uid={uid},dc=example,dc=com")).unwrap(),
            new_rdn: Rdn::parse(&format!("uid={to}")).unwrap(),
            delete_old_rdn: true,
            new_superior: None,
        }
    }

    /// A store with the suffix and `n` people.
    fn directory(path: &Path, n: usize) -> Directory {
        let d = Directory::open(path, &base()).unwrap();
        d.write(&suffix()).unwrap();
        for i in 0..n {
            d.write(&person(&format!("p{i}"))).unwrap();
        }
        d
    }

    fn trees(db: &Db) -> Trees {
        db.tree_names()
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).unwrap();
                let kv = tree.iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                (name.to_vec(), kv)
            })
            .collect()
    }

    /// The copy at `dest`, opened as sled's database once the backup's handle let go.
    fn copy_trees(dest: &Path) -> Trees {
        let db = unlocked(|| open_db(dest, &StoreOptions::default(), StoreKind::Directory)).unwrap();
        trees(&db)
    }

    fn go_on(_: BackupProgress) -> bool {
        true
    }

    type Opener = fn(&Path) -> Result<Box<dyn CopyWriter>>;

    /// The copy written here, and by another thread through the requests a writer
    /// process takes.
    const WRITERS: [(&str, Opener); 2] = [("written here", open_here), ("streamed", open_streamed)];

    /// A copy written by a thread of its own through [`copy::StreamCopy`], as a running
    /// provider has a process of its own write it; dropped, it waits for the thread.
    struct Streamed {
        copy: Option<copy::StreamCopy<UnixStream, UnixStream>>,
        writer: Option<std::thread::JoinHandle<Result<copy::CopyCounts>>>,
    }

    impl Streamed {
        fn copy(&mut self) -> &mut copy::StreamCopy<UnixStream, UnixStream> {
            self.copy.as_mut().unwrap()
        }
    }

    impl CopyWriter for Streamed {
        fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
            self.copy().insert(tree, key, value)
        }
        fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<()> {
            self.copy().remove(tree, key)
        }
        fn forget(&mut self, uuid: &EntryUuid) -> Result<()> {
            self.copy().forget(uuid)
        }
        fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<()> {
            self.copy().remove_through(tree, last)
        }
        fn clear(&mut self, tree: &[u8]) -> Result<()> {
            self.copy().clear(tree)
        }
        fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<()> {
            self.copy().keep_only(trees)
        }
        fn settle(&mut self) -> Result<()> {
            self.copy().settle()
        }
        fn finish(&mut self) -> Result<copy::CopyCounts> {
            self.copy().finish()
        }
    }

    impl Drop for Streamed {
        fn drop(&mut self) {
            drop(self.copy.take());
            let _ = self.writer.take().unwrap().join().unwrap();
        }
    }

    fn open_streamed(folder: &Path) -> Result<Box<dyn CopyWriter>> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let folder = folder.to_owned();
        let answers = theirs.try_clone().unwrap();
        let writer = std::thread::spawn(move || copy::write_copy(&folder, theirs, answers));
        let copy = copy::StreamCopy::new(ours.try_clone().unwrap(), ours);
        Ok(Box::new(Streamed { copy: Some(copy), writer: Some(writer) }))
    }

    /// The copy of a store no write reaches while it is made is that store, every tree
    /// of it, key for key: served in its place it is the same directory, whose
    /// consumers' cookies it recognizes.
    #[test]
    fn a_copy_of_a_quiet_store_is_the_store_tree_by_tree() {
        for (how, mut open) in WRITERS {
            let tmp = tempfile::tempdir().unwrap();
            let d = directory(&tmp.path().join("store"), 50);
            d.write(&modify_sn("p3", "three")).unwrap();
            d.write(&delete("p4")).unwrap();
            d.record_consumer("people/host-a", Csn(20)).unwrap();
            let cookie = d.cookie();
            let dest = tmp.path().join("copy");

            let report = d.backup_through(&dest, &mut open, &mut go_on).unwrap();
            assert_eq!(report.csn, d.newest_committed());
            assert_eq!((report.entries, report.changelog, report.caught_up, report.caught_up_held), (50, 53, 0, 0));
            assert_eq!(report.history, d.history());
            assert_eq!(copy_trees(&dest), trees(&d.db), "{how}");

            let copy = unlocked(|| Directory::open(&dest, &base())).unwrap();
            assert_eq!(copy.store_id(), d.store_id());
            assert!(copy.recognizes(&cookie).unwrap(), "a consumer of the store resumes from the copy");
            let all = whole();
            let entries = |d: &Directory| d.search(&all).map(|e| e.unwrap()).collect::<Vec<Entry>>();
            assert_eq!(entries(&copy), entries(&d));
        }
    }

    /// Writes made while the entries are copied (adds, modifications, deletes, renames,
    /// a name taken over by another entry, a consumer's position, a trim) are in the
    /// copy, and nothing of the states they replaced: with no write after it, the copy
    /// is the store tree by tree. The copy's first step read none of them here, so
    /// only its second step can have brought them in.
    #[test]
    fn writes_made_while_the_copy_ran_are_in_it_and_what_they_replaced_is_not() {
        // Few enough to be brought in with writes held, and enough to be brought in
        // first with writes going on, the held step then finding none.
        for ((modified, held_only), (how, mut open)) in
            [(0, true), (40, false)].into_iter().flat_map(|c| WRITERS.map(|w| (c, w)))
        {
            let tmp = tempfile::tempdir().unwrap();
            let d = directory(&tmp.path().join("store"), 50);
            let dest = tmp.path().join("copy");
            let between = || {
                d.write(&person("new")).unwrap();
                d.write(&modify_sn("p1", "one")).unwrap();
                d.write(&delete("p2")).unwrap();
                d.write(&rename("p3", "moved")).unwrap();
                // p5's old name taken by p6 once p5 moved away.
                d.write(&rename("p5", "p5-away")).unwrap();
                d.write(&rename("p6", "p5")).unwrap();
                d.write(&delete("p7")).unwrap();
                d.write(&person("p7")).unwrap();
                for i in 0..modified {
                    d.write(&modify_sn(&format!("p{}", 10 + i), "changed")).unwrap();
                }
                d.record_consumer("people/host-a", Csn(35)).unwrap();
                let policy = RetentionPolicy {
                    max_changes: Some(5),
                    max_age: None,
                    hold_for_consumers: Duration::ZERO,
                    up_since_ms: 0,
                };
                let trimmed = d.trim(&policy, 0).unwrap();
                assert!(trimmed.removed > 0, "records the copy read are trimmed since");
            };
            let report = d.backup_with(&dest, &mut open, &mut go_on, between).unwrap();
            assert_eq!(report.caught_up, 8 + modified, "held only: {held_only}, {how}");
            assert_eq!(report.caught_up_held, if held_only { 8 } else { 0 });
            assert_eq!(report.entries, 51, "the suffix, 50 people, one added, one deleted");
            assert_eq!(copy_trees(&dest), trees(&d.db), "held only: {held_only}, {how}");
        }
    }

    /// Writes made while the copy is read, between its batches, leave a copy of the
    /// store as it was at the copy's CSN: each entry as its last change up to that CSN
    /// left it, and none added or deleted after. (The copy written by another thread,
    /// as a running provider's is, by a process of its own.)
    #[test]
    fn a_copy_made_while_writes_go_on_is_the_store_at_its_csn() {
        let tmp = tempfile::tempdir().unwrap();
        let d = std::sync::Arc::new(directory(&tmp.path().join("store"), 6_000));
        let initial: HashMap<EntryUuid, Entry> = d.search(&whole()).map(|e| e.unwrap()).map(|e| (e.uuid, e)).collect();
        let (written, stop) = (std::sync::Arc::new(AtomicU64::new(0)), std::sync::Arc::new(AtomicBool::new(false)));
        let writer = {
            let (d, written, stop) = (d.clone(), written.clone(), stop.clone());
            std::thread::spawn(move || {
                // (csn, uuid, the entry's state after the write)
                let mut log: Vec<(Csn, EntryUuid, Option<Entry>)> = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let change = match i % 4 {
                        0 => modify_sn(&format!("p{}", i * 7 % 6_000), &format!("sn{i}")),
                        1 => person(&format!("n{i}")),
                        2 => delete(&format!("n{}", i - 1)),
                        _ => rename(&format!("p{}", i * 13 % 6_000), &format!("r{i}")),
                    };
                    // A rename may name an entry already renamed away: refused, skipped.
                    if let Ok(done) = d.write(&change) {
                        log.push((done.csn, done.uuid, d.entries().get_by_uuid(&done.uuid).unwrap()));
                        written.fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                }
                log
            })
        };
        let mut watch = |_: BackupProgress| {
            // Each batch waits for writes, so that they land between the copy's reads.
            let (from, deadline) = (written.load(Ordering::SeqCst), Instant::now() + Duration::from_secs(10));
            while written.load(Ordering::SeqCst) < from + 3 {
                assert!(Instant::now() < deadline, "the writer made no progress");
                std::thread::yield_now();
            }
            true
        };
        let dest = tmp.path().join("copy");
        let report = d.backup_through(&dest, &mut open_streamed, &mut watch).unwrap();
        stop.store(true, Ordering::SeqCst);
        let log = writer.join().unwrap();
        assert!(report.caught_up >= 12, "writes landed while the copy ran: {report:?}");
        assert!(log.iter().any(|(csn, ..)| *csn > report.csn), "and after it");

        let mut expected = initial;
        for (_, uuid, state) in log.into_iter().filter(|(csn, ..)| *csn <= report.csn) {
            match state {
                Some(entry) => expected.insert(uuid, entry),
                None => expected.remove(&uuid),
            };
        }
        let copy = unlocked(|| Directory::open(&dest, &base())).unwrap();
        let held: HashMap<EntryUuid, Entry> = copy.search(&whole()).map(|e| e.unwrap()).map(|e| (e.uuid, e)).collect();
        assert_eq!(held.len(), expected.len());
        assert!(held == expected, "the copy is the store at csn {}", report.csn);
        assert_eq!(copy.newest_committed(), report.csn);
        assert_eq!(copy.entry_count().unwrap(), report.entries);
        // Its trees agree with each other: the changelog's records with the entries
        // they name, the index with the entries.
        let found = copy.verify(&mut |_| {}).unwrap();
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(found.changelog, copy.changelog().records(Csn::ZERO, report.csn).count() as u64);
    }

    /// A destination inside the store's own folder is refused by the store itself, to
    /// any caller (the command line refuses it first, but the control socket takes a
    /// request from any client of the provider's user), however it is spelled, and
    /// nothing is written there.
    #[test]
    fn a_destination_inside_the_stores_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let d = directory(&store, 10);
        std::fs::create_dir(store.join("sub")).unwrap();
        std::os::unix::fs::symlink(&store, tmp.path().join("link")).unwrap();
        for dest in [store.join("copy"), store.join("sub").join("copy"), tmp.path().join("link").join("copy")] {
            let e = d.backup(&dest, &mut go_on).unwrap_err().to_string();
            assert!(e.contains(&format!("is inside the store's folder {}", store.display())), "{e}");
            assert!(!dest.exists());
        }
        assert!(!inside_store(&tmp.path().join("beside"), &store));
        d.backup(&tmp.path().join("beside"), &mut go_on).unwrap();
    }

    /// A destination that is a file or a folder with something in it is refused, naming
    /// it, and left as it is; a copy abandoned part-way (the provider stopping) leaves
    /// no files behind, at a new destination, in an empty one or beside them.
    #[test]
    fn a_destination_in_use_is_refused_and_an_abandoned_copy_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let d = directory(&tmp.path().join("store"), 5_000);
        let file = tmp.path().join("file");
        std::fs::write(&file, "kept").unwrap();
        let e = d.backup(&file, &mut go_on).unwrap_err().to_string();
        assert!(e.contains("file") && e.contains("is not a folder"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("mine"), "kept").unwrap();
        let e = d.backup(&full, &mut go_on).unwrap_err().to_string();
        assert!(e.contains("is not empty"), "{e}");
        assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

        let mut stop_at_second = {
            let mut calls = 0;
            move |_: BackupProgress| {
                calls += 1;
                calls < 2
            }
        };
        let new = tmp.path().join("new");
        assert!(matches!(d.backup(&new, &mut stop_at_second), Err(StoreError::Abandoned)));
        // Abandoned after its last batch, the copy whole: not put in place either.
        let batches = {
            let mut calls = 0;
            d.backup(&new, &mut |_| {
                calls += 1;
                true
            })
            .unwrap();
            std::fs::remove_dir_all(&new).unwrap();
            calls
        };
        let mut stop_at_last = {
            let mut calls = 0;
            move |_: BackupProgress| {
                calls += 1;
                calls < batches
            }
        };
        assert!(matches!(d.backup(&new, &mut stop_at_last), Err(StoreError::Abandoned)));
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut stop = |_: BackupProgress| false;
        assert!(matches!(d.backup(&empty, &mut stop), Err(StoreError::Abandoned)));
        assert!(!new.exists(), "nothing at a new destination");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "an empty destination stays empty");
        let mut left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["empty", "file", "full", "store"], "nothing left beside them");
        // The store is as it was, and a copy made now is whole.
        assert_eq!(d.backup(&empty, &mut go_on).unwrap().entries, 5_001);
    }

    /// A copy abandoned once its trees are read, while the changes made meanwhile are
    /// brought in (the provider stopping then), is not put in place either: a stopped
    /// provider's `backup` to the same folder would find it taken, by a copy whose
    /// client was told nothing of it. Nothing is left beside it.
    #[test]
    fn a_copy_abandoned_after_its_trees_were_read_is_not_put_in_place() {
        for (how, mut open) in WRITERS {
            let tmp = tempfile::tempdir().unwrap();
            let d = directory(&tmp.path().join("store"), 50);
            let dest = tmp.path().join("copy");
            let stopping = AtomicBool::new(false);
            let mut watch = |_: BackupProgress| !stopping.load(Ordering::SeqCst);
            let between = || {
                d.write(&modify_sn("p1", "one")).unwrap();
                stopping.store(true, Ordering::SeqCst);
            };
            assert!(matches!(d.backup_with(&dest, &mut open, &mut watch, between), Err(StoreError::Abandoned)));
            assert!(!dest.exists());
            let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, ["store"], "nothing left beside it, {how}");
        }
    }

    /// What the small trees lost while the copy ran is not in it either: a consumer
    /// forgotten meanwhile (gone for good) is not brought back by a restore, to hold the
    /// changelog's trimming back again and be listed by `status`; and the copy counts
    /// the entries added meanwhile.
    #[test]
    fn a_consumer_forgotten_while_the_copy_ran_is_not_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let d = directory(&tmp.path().join("store"), 50);
        d.record_consumer("people/gone", Csn(20)).unwrap();
        d.record_consumer("people/kept", Csn(21)).unwrap();
        let dest = tmp.path().join("copy");
        let between = || {
            assert!(d.forget_consumer("people/gone").unwrap().is_some());
            d.write(&person("new")).unwrap();
        };
        let report = d.backup_with(&dest, &mut open_here, &mut go_on, between).unwrap();
        assert_eq!(report.entries, 52, "the suffix, 50 people and one added");
        assert_eq!(copy_trees(&dest), trees(&d.db));
        let copy = unlocked(|| Directory::open(&dest, &base())).unwrap();
        let kept: Vec<_> = copy.consumer_positions().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(kept, ["people/kept"]);
        assert_eq!(copy.entry_count().unwrap(), 52);
    }

    /// The copy holds every entry, `userPassword` values too: its folder is its owner's
    /// alone (0700), whatever the umask, so that a backup folder made under a readable
    /// parent does not hand the directory to every local user.
    #[test]
    fn the_copy_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = directory(&tmp.path().join("store"), 5);
        let dest = tmp.path().join("copy");
        d.backup(&dest, &mut go_on).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o700);
    }

    /// A damaged store (an entry gone from its entries tree without the write that
    /// would have counted it and taken its entryUUID away) gives no copy that would pass
    /// for a whole store once restored: the copy is refused, saying what is wrong (here
    /// a copy that does not hold what the store counts, there an entryUUID changed while
    /// it ran that leads to no entry), and nothing of it is left.
    #[test]
    fn a_copy_of_a_damaged_store_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let key = |uid: &str| Dn::parse(&format!("uid={uid},dc=example,dc=com")).unwrap().tree_key();
        let d = directory(&tmp.path().join("store"), 20);
        d.set.entries.remove(key("p1")).unwrap();
        let e = d.backup(&tmp.path().join("copy"), &mut go_on).unwrap_err().to_string();
        assert!(e.contains("the copy holds 20 entries and 21 entryUUIDs where the store counts 21: not kept"), "{e}");

        let changed = directory(&tmp.path().join("changed"), 20);
        let between = || {
            changed.write(&modify_sn("p2", "two")).unwrap();
            changed.set.entries.remove(key("p2")).unwrap();
        };
        let e =
            changed.backup_with(&tmp.path().join("copy"), &mut open_here, &mut go_on, between).unwrap_err().to_string();
        assert!(e.contains("leads to no entry of its own"), "{e}");
        let mut left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["changed", "store"], "nothing of either copy is left");
    }

    /// A copy told to stop (the provider stopping) stops at the batch it was told at,
    /// in the middle of a tree: a stop waits for one batch of the copy, not for the rest
    /// of a tree of a million entries.
    #[test]
    fn a_copy_told_to_stop_asks_no_more_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let d = directory(&tmp.path().join("store"), 5_000);
        let (mut before, mut told, mut asked_after) = (0, false, 0);
        let mut watch = |p: BackupProgress| {
            if told {
                asked_after += 1;
            }
            // A whole batch since the last call: the middle of a tree, not its end.
            told |= p.keys - before == WATCH_EVERY as u64;
            before = p.keys;
            !told
        };
        assert!(matches!(d.backup(&tmp.path().join("copy"), &mut watch), Err(StoreError::Abandoned)));
        assert!(told, "the copy went through a batch");
        assert_eq!(asked_after, 0);
    }

    /// A copy holds no change its store has not made durable: one committed and not yet
    /// synced when the copy ends is synced by it. A crash would otherwise take it from
    /// the store, which gives its CSN to another change, while the copy holds it: restored,
    /// the copy would tell a consumer that replicated the other change it is up to date.
    #[test]
    fn a_copy_holds_no_change_its_store_has_not_made_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let d = directory(&tmp.path().join("store"), 10);
        let between = || {
            d.write_nowait(&modify_sn("p1", "one")).unwrap();
        };
        let report = d.backup_with(&tmp.path().join("copy"), &mut open_here, &mut go_on, between).unwrap();
        assert_eq!(report.csn, d.newest_committed(), "the copy holds the change");
        assert_eq!(d.durable_csn(), report.csn);
    }

    /// A store damaged the other way (an entryUUID gone from its index, the entry kept)
    /// gives no copy either: the copy's entryUUIDs are counted against the store's
    /// entries as its entries are, so a restored copy never serves entries its index
    /// cannot find.
    #[test]
    fn a_copy_whose_index_lacks_an_entry_is_refused() {
        for (how, mut open) in WRITERS {
            let tmp = tempfile::tempdir().unwrap();
            let d = directory(&tmp.path().join("store"), 20);
            let (uuid, _) = d.set.uuids.first().unwrap().unwrap();
            d.set.uuids.remove(uuid).unwrap();
            let dest = tmp.path().join("copy");
            let e = d.backup_through(&dest, &mut open, &mut go_on).unwrap_err().to_string();
            assert!(
                e.contains("the copy holds 21 entries and 20 entryUUIDs where the store counts 21: not kept"),
                "{how}: {e}"
            );
            assert!(!dest.exists(), "{how}");
        }
    }

    /// A copy written here, asked to settle: once, after the changes made while the
    /// trees were read are brought in and before writes are held, and with writes
    /// going on (a write made meanwhile is not held up, and the held step brings it in).
    struct Settled {
        copy: SledCopy,
        dir: std::sync::Arc<Directory>,
        settled: std::sync::Arc<AtomicU64>,
    }

    impl CopyWriter for Settled {
        fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
            self.copy.insert(tree, key, value)
        }
        fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<()> {
            self.copy.remove(tree, key)
        }
        fn forget(&mut self, uuid: &EntryUuid) -> Result<()> {
            self.copy.forget(uuid)
        }
        fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<()> {
            self.copy.remove_through(tree, last)
        }
        fn clear(&mut self, tree: &[u8]) -> Result<()> {
            self.copy.clear(tree)
        }
        fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<()> {
            self.copy.keep_only(trees)
        }
        fn settle(&mut self) -> Result<()> {
            let (done, wrote) = std::sync::mpsc::channel();
            let dir = self.dir.clone();
            std::thread::spawn(move || {
                let _ = done.send(dir.write(&modify_sn("p1", "while settling")).is_ok());
            });
            let wrote = wrote.recv_timeout(Duration::from_secs(30));
            assert_eq!(wrote, Ok(true), "a write made while the copy settles is not held up");
            self.settled.fetch_add(1, Ordering::SeqCst);
            self.copy.settle()
        }
        fn finish(&mut self) -> Result<copy::CopyCounts> {
            self.copy.finish()
        }
    }

    /// A writer of its own that is behind (the bulk of the copy still in its pipe) is
    /// waited for before writes are held, not while they are: the copy is settled once,
    /// with writes going on, and what is written meanwhile is in the copy.
    #[test]
    fn the_copy_is_settled_before_writes_are_held() {
        let tmp = tempfile::tempdir().unwrap();
        let d = std::sync::Arc::new(directory(&tmp.path().join("store"), 50));
        let settled = std::sync::Arc::new(AtomicU64::new(0));
        let mut open = |folder: &Path| -> Result<Box<dyn CopyWriter>> {
            Ok(Box::new(Settled { copy: SledCopy::create(folder)?, dir: d.clone(), settled: settled.clone() }))
        };
        let dest = tmp.path().join("copy");
        let report = d.backup_through(&dest, &mut open, &mut go_on).unwrap();
        assert_eq!(settled.load(Ordering::SeqCst), 1, "settled once");
        assert_eq!((report.caught_up, report.caught_up_held), (1, 1), "the write made while it settled");
        assert_eq!(report.csn, d.newest_committed());
        assert_eq!(copy_trees(&dest), trees(&d.db));
    }
}
