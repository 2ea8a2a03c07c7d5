//! `tether-provider load`: the offline bulk loader (provider stopped).
//!
//! Two passes so that a bad file changes nothing: the first reads the whole file and
//! checks every record (syntax, suffix, duplicates, a parent for every entry, in the
//! store or the file, and what [`Directory::check_new_entry`] checks: objectClass, RDN
//! values, a size that replicates); only then does the second write, in large
//! transactions through [`Directory::bulk_add`]. In each pass a thread of its own reads
//! and parses the file ahead of the checks or the writes (`read_ahead`), so that the
//! load, which has the machine to itself, uses two cores. Both passes stream: memory
//! holds a digest of each of the file's names (to check parents and duplicates, see
//! `Names`), a batch, the records read ahead, and, for a file that lists an entry
//! before its parent (as slapcat's output does for an entry moved under a newer one),
//! only those entries, each written as soon as its parent is. An entry exported by
//! `slapcat` keeps its `entryUUID`; the other attributes its server maintained are left
//! out (see `Record`).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use tether_protocol::entry::operational::Operational;
use tether_protocol::{Attributes, Change, Dn, EntryUuid};
use tether_store::{Directory, Refusal, StoreError};

use crate::input::Input;

/// Entries per load transaction.
const LOAD_BATCH: usize = 2_000;

/// What a load does with a record whose DN is already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse the file (the default: a load adds a directory, it does not merge one).
    Refuse,
    /// Leave the entry as it is and load the rest: how a load that a storage failure
    /// cut short, after some of its transactions committed, is finished by running it
    /// again (`--skip-existing`).
    Skip,
}

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries added.
    pub entries: usize,
    /// Records left out because their DN was already in the store ([`Existing::Skip`]).
    pub skipped: usize,
    /// Entries listed before their parent (or below such an entry, before that
    /// parent), written once their parent was.
    pub reordered: usize,
    /// Entries added with the `entryUUID` the file gave them.
    pub kept_uuids: usize,
    /// Values of server-maintained attributes left out (`entryCSN`, timestamps, ...).
    pub dropped: usize,
    /// The entry count the store kept, when a scan at the end found it wrong (and set
    /// it right): a load cut short by a failing disk can leave it so.
    pub miscounted: Option<u64>,
}

/// An entry on its way to [`Directory::bulk_add`]: name, attributes, the UUID the file
/// gave it.
type Pending = (Dn, Attributes, Option<EntryUuid>);

/// One content record of the file, with what its server maintained taken out (see
/// [`tether_protocol::entry::operational`]): `slapcat` prints `entryUUID`, `entryCSN`,
/// timestamps and creators with every entry. The `entryUUID` is kept as the entry's
/// identity; the rest would go stale at the first change here, and is dropped.
struct Record {
    line: usize,
    dn: Dn,
    attrs: Attributes,
    operational: Operational,
}

fn records(input: &Input) -> Result<impl Iterator<Item = Result<Record>> + '_> {
    let file = input.shown();
    Ok(input.records(crate::input::RecordLimit::Load)?.map(move |record| {
        let record = record?;
        let line = record.line();
        match record.into_change() {
            Change::Add { dn, mut attrs } => {
                let operational = attrs.take_operational().with_context(|| format!("{file}:{line}: {dn}"))?;
                Ok(Record { line, dn, attrs, operational })
            }
            other => bail!("{file}:{line}: a {} record cannot be bulk-loaded; use `write`", other.kind()),
        }
    }))
}

/// Records the reader hands over at a time, and chunks it may be ahead by: enough that
/// neither thread waits on the other's every record, few enough that read-ahead holds
/// a few thousand records, not the file.
const READ_AHEAD_CHUNK: usize = 256;
const READ_AHEAD_CHUNKS: usize = 8;

/// Runs `consume` over `source`'s items while a thread of their own reads ahead (the
/// records of a file: reading and parsing LDIF was a quarter of a load's time, each
/// pass on one core while the other did nothing, and a load is an offline command with
/// the machine to itself). The reader stops at its next hand-over once `consume`
/// returns (a refusal, a stop), and is joined before this returns: no reading outlives
/// the pass, and it is never more than [`READ_AHEAD_CHUNKS`] chunks ahead.
fn read_ahead<T: Send, R>(
    source: impl Iterator<Item = T> + Send,
    consume: impl FnOnce(&mut dyn Iterator<Item = T>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (handed, taken) = std::sync::mpsc::sync_channel::<Vec<T>>(READ_AHEAD_CHUNKS);
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(READ_AHEAD_CHUNK);
            for item in source {
                chunk.push(item);
                if chunk.len() == READ_AHEAD_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(READ_AHEAD_CHUNK));
                    if handed.send(full).is_err() {
                        return;
                    }
                }
            }
            // Refused only when no one reads on: nothing then waits for it.
            let _ = handed.send(chunk);
        });
        let mut items = taken.into_iter().flatten();
        let result = consume(&mut items);
        // Ends the reader at its next hand-over, before the scope joins it.
        drop(items);
        result
    })
}

/// The line of the first record of `input` that `is`, read again from the start: pass 1
/// keeps digests of what it has seen, not lines, and a file of 300,000 entries refused
/// for a name given twice must say where the first one is. Only a refusal pays for it.
fn first_line(input: &Input, is: impl Fn(&Record) -> bool) -> Option<usize> {
    records(input).ok()?.filter_map(Result::ok).find(|r| is(r)).map(|r| r.line)
}

/// ` (first at line N)`, or nothing if the line is not known.
fn first_at(line: Option<usize>) -> String {
    line.map(|n| format!(" (first at line {n})")).unwrap_or_default()
}

/// The records pass 1 refused: the first [`Refusals::SHOWN`] of them said, the rest
/// counted, so that one run lists what to fix in a file of many faults (it stopped at
/// the first, and a file of 31 took 31 runs).
#[derive(Default)]
struct Refusals {
    shown: Vec<String>,
    count: usize,
}

impl Refusals {
    const SHOWN: usize = 20;

    fn add(&mut self, why: String) {
        self.count += 1;
        if self.shown.len() < Self::SHOWN {
            self.shown.push(why);
        }
    }

    /// Whether the next refusal is shown (worth finding the line it refers to).
    fn shows_next(&self) -> bool {
        self.shown.len() < Self::SHOWN
    }

    /// The refusals as one error, one to a line: a single one as it is.
    fn into_result(self, file: &str) -> Result<()> {
        match self.count {
            0 => Ok(()),
            1 => Err(anyhow::anyhow!("{}", self.shown.join(""))),
            n => {
                let more = match n - self.shown.len() {
                    0 => String::new(),
                    hidden => format!(" (the first {} shown, {hidden} more)", self.shown.len()),
                };
                bail!("{}\n{file}: {n} records refused{more}; nothing was written", self.shown.join("\n"))
            }
        }
    }
}

/// The names pass 1 has seen, each as a 128-bit keyed digest of its normal form: 16
/// bytes a name where a parsed [`Dn`] took about 450, which made the names most of a
/// large load's memory (pass 1 of a 300,000-entry file peaked at 161 MB with them, 22
/// MB with digests; a whole million-entry load at 539 MB, now 164). Two names share a
/// digest with odds of about n²/2¹²⁹ (10⁻²⁵ for ten million), and the keys are drawn
/// afresh for every load, so no file can be made to collide either.
struct Names {
    keys: (RandomState, RandomState),
    seen: HashSet<u128>,
}

impl Names {
    fn new() -> Self {
        Self { keys: (RandomState::new(), RandomState::new()), seen: HashSet::new() }
    }

    fn digest(&self, dn: &Dn) -> u128 {
        let name = dn.normalized();
        (u128::from(self.keys.0.hash_one(name)) << 64) | u128::from(self.keys.1.hash_one(name))
    }

    fn contains(&self, dn: &Dn) -> bool {
        self.seen.contains(&self.digest(dn))
    }

    /// Adds `dn`; false if it was there already.
    fn insert(&mut self, dn: &Dn) -> bool {
        self.seen.insert(self.digest(dn))
    }
}

/// Loads `file` into the store at `data_dir`: nothing if the file is refused (see the
/// module docs). A storage failure while writing (a full disk) keeps the transactions
/// that committed before it, and the error says how many entries that is and how to
/// finish: run the same load with `existing` = [`Existing::Skip`].
pub fn load(dir: &Directory, input: &Input, existing: Existing) -> Result<LoadReport> {
    load_watched(dir, input, existing, &AtomicBool::new(false), &mut |_| {})
}

/// [`load`], stopped once `stop` is set (between records while checking, after the
/// batch being written while writing), and telling `written` the count after each
/// batch: a load of a million entries takes a minute or more, and one cut off by a
/// signal left half the file in the store without a word.
pub fn load_watched(
    dir: &Directory,
    input: &Input,
    existing: Existing,
    stop: &AtomicBool,
    written: &mut dyn FnMut(usize),
) -> Result<LoadReport> {
    let file = input.shown();
    let suffix = dir.suffix().clone();
    // Pass 1: check everything; remember names (digests only, not entries).
    let mut names = Names::new();
    let mut pending_parents: Vec<(usize, Dn)> = Vec::new();
    let mut uuids: HashSet<EntryUuid> = HashSet::new();
    let (mut kept_uuids, mut dropped) = (0, 0);
    let mut refused = Refusals::default();
    // Records refused before their DN was known: any of them may be a parent.
    let mut unread = 0;
    read_ahead(records(input)?, |items| -> Result<()> {
        for item in items {
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted while the file was checked: nothing was written");
            }
            let Record { line, dn, attrs, operational } = match item {
                Ok(record) => record,
                // The reader goes on at the next record (after a read failure it ends).
                Err(e) => {
                    refused.add(format!("{e:#}"));
                    unread += 1;
                    continue;
                }
            };
            let at = || format!("{file}:{line}: {}", dn.described());
            // Taken even when the record is refused, so that its children are not refused
            // for want of it: each refusal is the record's own.
            let first_time = names.insert(&dn);
            if !dn.is_descendant_of(&suffix) {
                refused.add(format!("{}: outside the suffix {suffix}", at()));
                continue;
            }
            match Directory::check_new_entry(&dn, &attrs) {
                Ok(()) => {}
                // `at()` names the entry already.
                Err(StoreError::Refused(Refusal::InvalidChange { reason, .. })) => {
                    refused.add(format!("{}: {reason}", at()));
                    continue;
                }
                Err(e) => {
                    refused.add(format!("{}: {e}", at()));
                    continue;
                }
            }
            if !first_time {
                // The first's line is found by reading the file again: only for those shown.
                let first = refused.shows_next().then(|| first_line(input, |r| r.dn.normalized() == dn.normalized()));
                refused.add(format!("{}: entry appears twice in the file{}", at(), first_at(first.flatten())));
                continue;
            }
            let there = dir.entries().contains(&dn)?;
            if existing == Existing::Refuse && there {
                refused.add(format!(
                    "{}: entry already exists (to finish a load cut short, run it again with --skip-existing; to \
                     restore a backup, load it into an empty data_dir: move this one aside)",
                    at()
                ));
                continue;
            }
            // An entry `--skip-existing` leaves out keeps what it has in the store.
            if !there {
                if let Some(uuid) = operational.uuid {
                    if !uuids.insert(uuid) {
                        let first =
                            refused.shows_next().then(|| first_line(input, |r| r.operational.uuid == Some(uuid)));
                        refused.add(format!(
                            "{}: entryUUID {uuid} is given to another entry earlier in the file{}",
                            at(),
                            first_at(first.flatten())
                        ));
                        continue;
                    }
                    if let Some(holder) = dir.uuid_holder(&uuid)? {
                        refused.add(format!("{}: entryUUID {uuid} is already the UUID of {holder} in the store", at()));
                        continue;
                    }
                    kept_uuids += 1;
                }
                dropped += operational.dropped;
            }
            if dn != suffix {
                let parent = dn.parent().unwrap_or_default();
                if !names.contains(&parent) && !dir.entries().contains(&parent)? {
                    pending_parents.push((line, dn.clone()));
                }
            }
        }
        Ok(())
    })?;
    // With records unread, a parent not found may be one of them: the file is refused
    // for those, and their children are not refused for want of them.
    for (line, dn) in pending_parents.iter().filter(|_| unread == 0) {
        let parent = dn.parent().unwrap_or_default();
        if !names.contains(&parent) && !dir.entries().contains(&parent)? {
            refused.add(format!("{file}:{line}: {dn}: parent {parent} is neither in the store nor in the file"));
        }
    }
    refused.into_result(file)?;
    drop(names);
    drop(uuids);
    // The entries listed before their parent: each waits in pass 2 until its parent is
    // written, and so does anything below it that comes before the parent.
    let early: HashSet<Dn> = pending_parents.into_iter().map(|(_, dn)| dn).collect();
    // Pass 2: write, the store marked until it is done, so that a load cut short by
    // anything (`kill -9` too) is not served as the whole directory.
    dir.begin_load(file).context("marking the store as taking a load")?;
    let (mut total, mut skipped) = (0, 0);
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    let mut flush = |batch: &mut Vec<Pending>| -> Result<()> {
        if !batch.is_empty() {
            if let Err(e) = dir.bulk_add(batch) {
                return Err(e).with_context(|| {
                    format!(
                        "loading a batch; the {total} entries loaded before it may be in the store: fix the \
                         cause, then run the same load again with --skip-existing to add the rest"
                    )
                });
            }
            total += batch.len();
            batch.clear();
            written(total);
            if stop.load(Ordering::SeqCst) {
                bail!(
                    "interrupted: the {total} entries loaded so far are in the store; run the same load again with \
                     --skip-existing to add the rest"
                );
            }
        }
        Ok(())
    };
    // A record to write, or one to leave out as already in the store (only with
    // `Existing::Skip`: pass 1 refused it otherwise).
    let mut wanted = |dn: &Dn| -> Result<bool> {
        let there = existing == Existing::Skip && dir.entries().contains(dn)?;
        skipped += usize::from(there);
        Ok(!there)
    };
    // Parent -> the entries waiting for it; and the names of all waiting entries, whose
    // own children must wait too. Memory holds only the waiting entries, not the file.
    let mut waiting: HashMap<Dn, Vec<Pending>> = HashMap::new();
    let mut held: HashSet<Dn> = HashSet::new();
    let mut reordered = 0;
    read_ahead(records(input)?, |items| -> Result<()> {
        for item in items {
            let Record { dn, attrs, operational, .. } = item?;
            if let Some(parent) = dn.parent().filter(|p| early.contains(&dn) || held.contains(p)) {
                reordered += 1;
                held.insert(dn.clone());
                waiting.entry(parent).or_default().push((dn, attrs, operational.uuid));
                continue;
            }
            // Written (or left as it is in the store), then whatever waited for it.
            let mut ready = vec![(dn, attrs, operational.uuid)];
            while let Some((dn, attrs, uuid)) = ready.pop() {
                held.remove(&dn);
                let children = waiting.remove(&dn).unwrap_or_default();
                if wanted(&dn)? {
                    batch.push((dn, attrs, uuid));
                    if batch.len() >= LOAD_BATCH {
                        flush(&mut batch)?;
                    }
                }
                ready.extend(children);
            }
        }
        Ok(())
    })?;
    flush(&mut batch)?;
    if let Some((dn, ..)) = waiting.values().flatten().next() {
        bail!("{file}: {dn}: its parent was not in the file any more: the file changed since it was checked");
    }
    let miscounted = dir.recount_entries()?;
    dir.end_load().context("clearing the store's mark of a load under way")?;
    Ok(LoadReport { entries: total, skipped, reordered, kept_uuids, dropped, miscounted })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use std::path::Path;

    fn load_file(dir: &Directory, file: &Path, existing: Existing) -> Result<LoadReport> {
        load(dir, &Input::open(file)?, existing)
    }

    /// The pass sees every item the reader read, in its order, a last chunk cut short
    /// and a failed record among them.
    #[test]
    fn read_ahead_hands_over_every_item_in_order() {
        let source: Vec<Result<usize, String>> =
            (0..READ_AHEAD_CHUNK * 3 + 17).map(|i| if i == 300 { Err(format!("bad {i}")) } else { Ok(i) }).collect();
        let seen = read_ahead(source.clone().into_iter(), |items| items.collect::<Vec<_>>());
        assert_eq!(seen, source);
        let none = read_ahead(std::iter::empty::<usize>(), |items| items.count());
        assert_eq!(none, 0);
    }

    /// A pass that ends early (a refusal, a stop) ends its reader too, which has read
    /// no more than the chunks it may be ahead by: it neither reads the rest of a large
    /// file nor is left behind.
    #[test]
    fn a_pass_ending_early_stops_its_reader_within_its_read_ahead() {
        let read = std::sync::atomic::AtomicUsize::new(0);
        let source = (0..10_000_000usize).inspect(|_| {
            read.fetch_add(1, Ordering::SeqCst);
        });
        let taken = read_ahead(source, |items| items.take(10).collect::<Vec<_>>());
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        let read = read.load(Ordering::SeqCst);
        assert!(read <= (READ_AHEAD_CHUNKS + 2) * READ_AHEAD_CHUNK, "the reader read {read} items");
    }

    /// A file given as a named pipe (or standard input) is copied to a spool, which the
    /// refusal of a name given twice reads again from the start to find the first one,
    /// while the check reads on: the two reads must not move each other, or the check
    /// goes on from where the other stopped and lists refusals at wrong lines (or
    /// misses them). The refusals are those of the same file read by its name.
    #[test]
    fn a_piped_file_refused_for_a_name_given_twice_lists_the_refusals_a_file_does() {
        use std::fmt::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("store"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut text = String::from("dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n");
        for i in 0..400 {
            let _ = write!(text, "dn: cn=p{i},dc=example,dc=com\nobjectClass: person\ncn: p{i}\nsn: s\n\n");
        }
        text.push_str("dn: cn=p1,dc=example,dc=com\nobjectClass: person\ncn: p1\nsn: again\n\n");
        for i in 400..800 {
            let _ = write!(text, "dn: cn=p{i},dc=example,dc=com\nobjectClass: person\ncn: p{i}\nsn: s\n\n");
        }
        text.push_str("dn: cn=x,dc=example,dc=org\nobjectClass: person\ncn: x\nsn: s\n");
        let file = tmp.path().join("dup.ldif");
        std::fs::write(&file, &text).unwrap();
        let named = load_file(&dir, &file, Existing::Refuse).unwrap_err().to_string();
        assert!(named.contains("2 records refused"), "{named}");

        let fifo = tmp.path().join("piped.ldif");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let writer = {
            let (fifo, text) = (fifo.clone(), text.clone());
            std::thread::spawn(move || std::fs::write(fifo, text).unwrap())
        };
        let input = Input::open(&fifo).unwrap();
        writer.join().unwrap();
        assert!(input.is_spooled());
        let piped = load(&dir, &input, Existing::Refuse).unwrap_err().to_string();
        assert_eq!(piped.replace("piped.ldif", "dup.ldif"), named);
        assert_eq!(dir.entry_count().unwrap(), 0, "nothing was written");
    }

    /// An entry that would be too large to replicate, after more entries than one load
    /// transaction takes: refused with its line before anything is written.
    #[test]
    fn an_entry_too_large_to_replicate_is_refused_before_any_batch_is_written() {
        use std::fmt::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("store"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut text = String::from("dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n");
        for i in 0..LOAD_BATCH + 500 {
            let _ = write!(text, "dn: cn=p{i},dc=example,dc=com\nobjectClass: person\ncn: p{i}\nsn: s\n\n");
        }
        let line = text.lines().count() + 1;
        let _ = write!(
            text,
            "dn: cn=big,dc=example,dc=com\nobjectClass: person\ncn: big\nsn: {}\n",
            "x".repeat(tether_protocol::MAX_ENTRY)
        );
        let file = tmp.path().join("big.ldif");
        std::fs::write(&file, text).unwrap();
        let err = load_file(&dir, &file, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains(&format!("big.ldif:{line}: cn=big,dc=example,dc=com: the entry would take")), "{err}");
        assert_eq!(dir.entry_count().unwrap(), 0, "nothing was written");
    }

    /// The `search --uuids` output of entries the store accepts but whose LDIF is
    /// longer than the reader's default record limit restores: a large binary value
    /// (base64 is a third longer) and a group of many short values (each line counts
    /// a fixed overhead). `write` takes the value too, up to what a frame carries.
    #[test]
    fn a_backup_of_entries_whose_ldif_outgrows_the_default_record_limit_restores() {
        use tether_protocol::{Change, Value};
        let tmp = tempfile::tempdir().unwrap();
        let suffix = Dn::parse("dc=example,dc=com").unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &suffix).unwrap();
        let mut root = tether_protocol::Attributes::new();
        root.add("objectClass", [Value::from("domain")]).unwrap();
        root.add("dc", [Value::from("example")]).unwrap();
        dir.write(&Change::Add { dn: suffix.clone(), attrs: root }).unwrap();
        let mut photo = tether_protocol::Attributes::new();
        photo.add("objectClass", [Value::from("person")]).unwrap();
        photo.add("cn", [Value::from("big")]).unwrap();
        let octets: Vec<u8> = (0..13 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        photo.add("jpegPhoto", [Value::from_bytes(octets)]).unwrap();
        let big = Dn::parse("cn=big,dc=example,dc=com").unwrap();
        dir.write(&Change::Add { dn: big, attrs: photo }).unwrap();
        let mut group = tether_protocol::Attributes::new();
        group.add("objectClass", [Value::from("groupOfNames")]).unwrap();
        group.add("cn", [Value::from("all")]).unwrap();
        group.add("member", (0..400_000).map(|i| Value::from(format!("uid={i}")))).unwrap();
        let all = Dn::parse("cn=all,dc=example,dc=com").unwrap();
        dir.write(&Change::Add { dn: all, attrs: group }).unwrap();

        let mut text = Vec::new();
        for e in dir.search(&tether_protocol::SearchSpec::subtree(suffix.clone())) {
            tether_protocol::ldif::writer::write_search_result(&mut text, &e.unwrap(), true).unwrap();
        }
        let file = tmp.path().join("backup.ldif");
        std::fs::write(&file, &text).unwrap();
        let default: Vec<_> = tether_protocol::ldif::LdifReader::new(text.as_slice()).filter(Result::is_err).collect();
        assert_eq!(default.len(), 2, "both records are over the default limit: {default:?}");

        let restored = Directory::open(&tmp.path().join("r"), &suffix).unwrap();
        let report = load_file(&restored, &file, Existing::Refuse).unwrap();
        assert_eq!(report.entries, 3);
        let mut again = Vec::new();
        for e in restored.search(&tether_protocol::SearchSpec::subtree(suffix)) {
            tether_protocol::ldif::writer::write_search_result(&mut again, &e.unwrap(), true).unwrap();
        }
        assert!(again == text, "the restored directory prints as the backup");

        let input = Input::open(&file).unwrap();
        let read = input.records(crate::input::RecordLimit::Write).unwrap().filter(Result::is_ok).count();
        assert_eq!(read, 3, "write reads the records too, and checks them against max_frame");
    }

    /// A load that a storage failure cut short keeps the transactions that committed;
    /// running it again is refused, naming the way out, and with `--skip-existing` adds
    /// exactly the rest.
    #[test]
    fn a_load_cut_short_is_finished_by_running_it_again_with_skip_existing() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let whole = examples.join("sample.ldif");
        // What the committed transactions of a cut-short load leave: the file's first
        // records (parents first, as the sample lists them).
        let text = std::fs::read_to_string(&whole).unwrap();
        let first: String = text.split("\n\n").take(1200).map(|r| format!("{r}\n\n")).collect();
        let part = tmp.path().join("part.ldif");
        std::fs::write(&part, first).unwrap();
        let done = load_file(&dir, &part, Existing::Refuse).unwrap().entries;
        assert!(done > 1000, "{done}");

        let err = load_file(&dir, &whole, Existing::Refuse).unwrap_err().to_string();
        assert!(
            err.contains(
                "entry already exists (to finish a load cut short, run it again with --skip-existing; to \
                          restore a backup, load it into an empty data_dir: move this one aside)"
            ),
            "{err}"
        );
        assert_eq!(dir.entry_count().unwrap(), done as u64, "the refused load wrote nothing");
        let rest = load_file(&dir, &whole, Existing::Skip).unwrap();
        assert_eq!((rest.entries, rest.skipped), (2968 - done, done));
        assert_eq!(dir.entry_count().unwrap(), 2968);
        assert_eq!(load_file(&dir, &whole, Existing::Skip).unwrap().entries, 0, "nothing left to add");
    }

    /// A load stopped (a signal) while it checks the file writes nothing; stopped while
    /// it writes, it ends after the batch being written, saying how many entries are in
    /// the store and how to finish, which `--skip-existing` then does.
    #[test]
    fn a_stopped_load_says_what_it_left_and_skip_existing_finishes_it() {
        let whole = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample.ldif");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let input = Input::open(&whole).unwrap();
        let err = load_watched(&dir, &input, Existing::Refuse, &AtomicBool::new(true), &mut |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "interrupted while the file was checked: nothing was written");
        assert_eq!(dir.entry_count().unwrap(), 0);
        assert_eq!(dir.unfinished_load().unwrap(), None, "nothing was written: nothing to finish");

        let stop = AtomicBool::new(false);
        let mut told = Vec::new();
        let err = load_watched(&dir, &input, Existing::Refuse, &stop, &mut |n| {
            told.push(n);
            stop.store(true, Ordering::SeqCst);
        })
        .unwrap_err();
        assert_eq!(told, [LOAD_BATCH], "stopped after the batch being written");
        assert_eq!(
            err.to_string(),
            format!(
                "interrupted: the {LOAD_BATCH} entries loaded so far are in the store; run the same load again with \
                 --skip-existing to add the rest"
            )
        );
        assert_eq!(dir.entry_count().unwrap(), LOAD_BATCH as u64);
        // The store says so, to `serve` and `status`, until a load finishes.
        let cut = dir.unfinished_load().unwrap().expect("the load cut short is marked");
        assert_eq!(cut.file, input.shown());
        let rest = load(&dir, &input, Existing::Skip).unwrap();
        assert_eq!((rest.entries, rest.skipped), (2968 - LOAD_BATCH, LOAD_BATCH));
        assert_eq!(dir.entry_count().unwrap(), 2968);
        assert_eq!(dir.unfinished_load().unwrap(), None, "finished");
    }

    /// A file changed while it was written, so that an entry listed before its parent
    /// finds the parent gone, fails the load after batches went in: the store keeps its
    /// mark, as for a load cut short, since it holds part of a file.
    #[test]
    fn a_load_failing_on_a_file_changed_under_it_keeps_its_mark() {
        use std::fmt::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("store"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut text = String::from("dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n");
        text += "dn: ou=x,ou=late,dc=example,dc=com\nobjectClass: organizationalUnit\nou: x\n\n";
        // Past the first batch and what the reader may have read ahead of it.
        for i in 0..LOAD_BATCH + (READ_AHEAD_CHUNKS + 2) * READ_AHEAD_CHUNK + 500 {
            let _ = write!(text, "dn: ou=f{i},dc=example,dc=com\nobjectClass: organizationalUnit\nou: f{i}\n\n");
        }
        text += "dn: ou=late,dc=example,dc=com\nobjectClass: organizationalUnit\nou: late\n";
        let file = tmp.path().join("changing.ldif");
        std::fs::write(&file, &text).unwrap();
        let input = Input::open(&file).unwrap();
        // Once a batch is in, the parent is renamed in place, far past what was read ahead.
        let changed = text.replace("dn: ou=late,", "dn: ou=lat2,").replace("ou: late", "ou: lat2");
        let err = load_watched(&dir, &input, Existing::Refuse, &AtomicBool::new(false), &mut |_| {
            std::fs::write(&file, &changed).unwrap();
        })
        .unwrap_err();
        assert!(err.to_string().contains("its parent was not in the file any more"), "{err}");
        let cut = dir.unfinished_load().unwrap().expect("a load that failed after writing is marked");
        assert_eq!(cut.file, input.shown());
    }

    /// A file that lists entries before their parent (slapcat's output after an entry
    /// was moved under a newer one) loads whole, each entry written once its parent is,
    /// with only those entries held: the sample reversed, then a chain held behind its
    /// top, and the same chain finished with --skip-existing after its top was loaded.
    #[test]
    fn entries_listed_before_their_parent_are_written_after_it() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let text = std::fs::read_to_string(examples.join("sample.ldif")).unwrap();
        let mut records: Vec<&str> = text.split("\n\n").filter(|r| r.contains("dn:")).collect();
        records.reverse();
        let reversed = tmp.path().join("reversed.ldif");
        std::fs::write(&reversed, records.join("\n\n") + "\n").unwrap();
        let report = load_file(&dir, &reversed, Existing::Refuse).unwrap();
        // Every entry but the suffix comes before its parent.
        assert_eq!((report.entries, report.reordered), (2968, 2967));
        assert_eq!(dir.entry_count().unwrap(), 2968);

        let chain = |top: &str| {
            format!(
                "dn: cn=c,cn=b,ou={top},dc=example,dc=com\nobjectClass: person\ncn: c\nsn: s\n\n\
                 dn: uid=x,dc=example,dc=com\nobjectClass: person\nuid: x\ncn: x\nsn: s\n\n\
                 dn: cn=b,ou={top},dc=example,dc=com\nobjectClass: person\ncn: b\nsn: s\n\n\
                 dn: ou={top},dc=example,dc=com\nobjectClass: organizationalUnit\nou: {top}\n\n"
            )
        };
        let file = tmp.path().join("chain.ldif");
        std::fs::write(&file, chain("moved")).unwrap();
        let report = load_file(&dir, &file, Existing::Refuse).unwrap();
        assert_eq!((report.entries, report.reordered), (4, 2), "cn=c waits for cn=b, which waits for the ou");
        let c = Dn::parse("cn=c,cn=b,ou=moved,dc=example,dc=com").unwrap();
        assert!(dir.entries().contains(&c).unwrap());

        // The top already in the store: its children wait for nothing, and are added.
        let mut top = Attributes::default();
        top.add("objectClass", [tether_protocol::Value::from("organizationalUnit")]).unwrap();
        let ou = Dn::parse("ou=later,dc=example,dc=com").unwrap();
        dir.bulk_add(&[(ou, top, None)]).unwrap();
        std::fs::write(&file, chain("later").replace("uid: x", "uid: y").replace("uid=x", "uid=y")).unwrap();
        let report = load_file(&dir, &file, Existing::Skip).unwrap();
        assert_eq!((report.entries, report.skipped), (3, 1));
        assert!(dir.entries().contains(&Dn::parse("cn=c,cn=b,ou=later,dc=example,dc=com").unwrap()).unwrap());
    }

    /// An entry below one listed before its parent, itself listed before that parent,
    /// waits with it: written when read, it went into the store ahead of its own
    /// parent, and the load failed after pass 1 had passed the file.
    #[test]
    fn a_child_of_an_entry_listed_before_its_parent_waits_for_it_too() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let file = tmp.path().join("early.ldif");
        std::fs::write(
            &file,
            "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n\
             dn: ou=a,ou=p,dc=example,dc=com\nobjectClass: organizationalUnit\nou: a\n\n\
             dn: cn=c,ou=a,ou=p,dc=example,dc=com\nobjectClass: person\ncn: c\nsn: s\n\n\
             dn: ou=p,dc=example,dc=com\nobjectClass: organizationalUnit\nou: p\n",
        )
        .unwrap();
        let report = load_file(&dir, &file, Existing::Refuse).unwrap();
        assert_eq!((report.entries, report.reordered), (4, 2), "cn=c waits for ou=a, which waits for ou=p");
        let c = Dn::parse("cn=c,ou=a,ou=p,dc=example,dc=com").unwrap();
        assert!(dir.entries().contains(&c).unwrap());
    }

    /// A name given twice (spelled differently: the check compares normal forms) and an
    /// entry whose parent is neither in the store nor anywhere in the file each refuse
    /// the file with the line, before anything is written; a parent later in the file,
    /// or one given in another spelling, is found.
    #[test]
    fn a_name_given_twice_or_a_parent_found_nowhere_refuses_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let file = tmp.path().join("f.ldif");
        let head = "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n\
                    dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\
                    dn: uid=ann,ou=people,dc=example,dc=com\nobjectClass: person\nuid: ann\ncn: ann\nsn: s\n\n";
        let refused = |tail: &str| {
            std::fs::write(&file, format!("{head}{tail}")).unwrap();
            let err = load_file(&dir, &file, Existing::Refuse).unwrap_err().to_string();
            assert_eq!(dir.entry_count().unwrap(), 0, "nothing was written ({err})");
            err
        };
        let err = refused("dn: UID=Ann, OU=People,DC=Example,DC=com\nobjectClass: person\nuid: Ann\ncn: a\nsn: s\n");
        assert!(
            err.contains(
                "f.ldif:15: UID=Ann,OU=People,DC=Example,DC=com: entry appears twice in the file (first at line 9)"
            ),
            "{err}"
        );
        let err = refused("dn:\nobjectClass: top\n");
        assert!(err.contains("f.ldif:15: the empty DN (the root): outside the suffix"), "{err}");
        let err = refused("dn: cn=x,ou=groups,dc=example,dc=com\nobjectClass: person\ncn: x\nsn: s\n");
        assert!(
            err.contains("f.ldif:15: cn=x,ou=groups,dc=example,dc=com: parent ou=groups,dc=example,dc=com is neither"),
            "{err}"
        );
        std::fs::write(
            &file,
            format!(
                "dn: cn=x,OU=Groups,dc=example,dc=com\nobjectClass: person\ncn: x\nsn: s\n\n{head}\
                 dn: ou=groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: groups\n"
            ),
        )
        .unwrap();
        let report = load_file(&dir, &file, Existing::Refuse).unwrap();
        assert_eq!((report.entries, report.reordered), (5, 1));
    }

    /// A file of many faults is refused once with all of them, each at its line, the
    /// first twenty said and the rest counted (it stopped at the first: `nis_sample.ldif`
    /// took 31 runs to clean); a record refused takes no child down with it.
    #[test]
    fn every_fault_of_a_file_is_listed_in_one_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let file = tmp.path().join("f.ldif");
        let mut text = String::from(
            "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n\
             dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\nou: PEOPLE\n\n\
             dn: uid=kid,ou=people,dc=example,dc=com\nobjectClass: person\nuid: kid\ncn: k\nsn: s\n\n\
             dn: cn=x,,dc=example,dc=com\nobjectClass: person\n\n",
        );
        for i in 0..30 {
            text += &format!(
                "dn: uid=u{i},ou=people,dc=example,dc=com\nobjectClass: person\nuid: u{i}\ncn: a\ncn: A\nsn: s\n\n"
            );
        }
        std::fs::write(&file, text).unwrap();
        let err = load_file(&dir, &file, Existing::Refuse).unwrap_err().to_string();
        assert_eq!(dir.entry_count().unwrap(), 0, "nothing was written ({err})");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 21, "{err}");
        assert!(lines[0].contains("f.ldif:8: ") && lines[0].contains("\"PEOPLE\" twice"), "{err}");
        assert!(lines[1].contains("f.ldif:16: invalid DN"), "{err}");
        assert!(lines[2].contains("f.ldif:23: ") && lines[2].contains("\"A\" twice"), "{err}");
        assert!(!err.contains("uid=kid"), "the child of a refused entry is not refused for it: {err}");
        assert!(lines[20].ends_with("f.ldif: 32 records refused (the first 20 shown, 12 more); nothing was written"));
    }

    /// `slapcat` output: every entry keeps the entryUUID it had, and loses the attributes
    /// its server maintained; a UUID given twice, already in the store or not a UUID
    /// refuses the file, naming the line, before anything is written. A write may not
    /// give such attributes values either.
    #[test]
    fn slapcat_output_keeps_its_entry_uuids_and_leaves_out_what_its_server_maintained() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let slapcat = |dn: &str, uuid: &str| {
            let rdn = dn.split(',').next().unwrap();
            let (attr, value) = rdn.split_once('=').unwrap();
            let class = if attr == "dc" { "domain" } else { "organizationalUnit" };
            format!(
                "dn: {dn}\nobjectClass: {class}\n{attr}: {value}\nstructuralObjectClass: {class}\nentryUUID: {uuid}\n\
                 creatorsName: cn=admin,dc=example,dc=com\ncreateTimestamp: 20240101000000Z\n\
                 entryCSN: 20240101000000.000000Z#000000#000#000000\nmodifiersName: cn=admin,dc=example,dc=com\n\
                 modifyTimestamp: 20240101000000Z\n\n"
            )
        };
        let (u1, u2, u3) = (
            "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00",
            "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f01",
            "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f02",
        );
        let file = |name: &str, text: String| {
            let path = tmp.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = file(
            "good.ldif",
            slapcat("dc=example,dc=com", u1)
                + &slapcat("ou=people,dc=example,dc=com", u2)
                + "dn: ou=new,dc=example,dc=com\nobjectClass: organizationalUnit\nou: new\n\n",
        );
        let refused = |name: &str, text: String, why: &str| {
            let err = load_file(&dir, &file(name, text), Existing::Refuse).unwrap_err();
            let err = tether_config::shell::error_chain(&*err);
            assert!(err.contains(why), "{name}: {err}");
            assert_eq!(dir.entry_count().unwrap(), 0, "{name}: nothing was written");
        };
        refused(
            "twice.ldif",
            slapcat("dc=example,dc=com", u1) + &slapcat("ou=people,dc=example,dc=com", u1),
            &format!(
                "twice.ldif:12: ou=people,dc=example,dc=com: entryUUID {u1} is given to another entry earlier in the \
                 file (first at line 1)"
            ),
        );
        refused(
            "bad.ldif",
            slapcat("dc=example,dc=com", "6bd5c4e4-nonsense"),
            "bad.ldif:1: dc=example,dc=com: entryUUID \"6bd5c4e4-nonsense\" is not a UUID",
        );

        let report = load_file(&dir, &good, Existing::Refuse).unwrap();
        assert_eq!((report.entries, report.kept_uuids, report.dropped), (3, 2, 12));
        for (dn, uuid) in [("dc=example,dc=com", u1), ("ou=people,dc=example,dc=com", u2)] {
            let holder = dir.uuid_holder(&uuid.parse().unwrap()).unwrap();
            assert_eq!(holder, Some(Dn::parse(dn).unwrap()), "{dn} keeps its entryUUID");
        }
        let names: Vec<String> = dir
            .search(&tether_protocol::SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap()))
            .flat_map(|e| e.unwrap().attrs.iter().map(|a| a.name.clone()).collect::<Vec<_>>())
            .collect();
        assert!(names.iter().all(|n| !tether_protocol::entry::operational::is_operational(n)), "{names:?}");

        let err = load_file(&dir, &file("again.ldif", slapcat("ou=other,dc=example,dc=com", u2)), Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("entryUUID {u2} is already the UUID of ou=people,dc=example,dc=com in the store")),
            "{err}"
        );
        assert_eq!(load_file(&dir, &good, Existing::Skip).unwrap().entries, 0, "skipped entries keep their own");

        let write = |ldif: &str| {
            let records = tether_protocol::ldif::reader::parse_str(ldif).unwrap();
            dir.write(&records[0].clone().into_change()).map(drop).map_err(|e| e.to_string())
        };
        let err =
            write(&format!("dn: ou=w,dc=example,dc=com\nobjectClass: organizationalUnit\nou: w\nentryUUID: {u3}\n"))
                .unwrap_err();
        assert!(err.contains("entryUUID is maintained by the server, not written"), "{err}");
        let err = write("dn: ou=new,dc=example,dc=com\nchangetype: modify\nreplace: modifyTimestamp\nmodifyTimestamp: 20250101000000Z\n-\n").unwrap_err();
        assert!(err.contains("modifyTimestamp is maintained by the server"), "{err}");
        write("dn: ou=new,dc=example,dc=com\nchangetype: modify\nreplace: description\ndescription: fine\n-\n")
            .unwrap();
    }

    /// The README's walk-through: `load` of the sample, then `write` of the example
    /// change records, each of which must commit against it.
    #[test]
    fn the_examples_load_and_their_change_records_all_commit() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let report = load_file(&dir, &examples.join("sample.ldif"), Existing::Refuse).unwrap();
        assert_eq!(
            report,
            LoadReport { entries: 2968, skipped: 0, reordered: 0, kept_uuids: 0, dropped: 0, miscounted: None }
        );

        let text = std::fs::read_to_string(examples.join("changes.ldif")).unwrap();
        let records = tether_protocol::ldif::reader::parse_str(&text).unwrap();
        let kinds: Vec<_> = records.iter().map(|r| r.clone().into_change().kind()).collect();
        assert_eq!(kinds, ["add", "modify", "modify", "modrdn", "delete"]);
        for record in records {
            let line = record.line();
            dir.write(&record.into_change()).unwrap_or_else(|e| panic!("changes.ldif:{line}: {e}"));
        }
        assert_eq!(dir.entry_count().unwrap(), 2968);
    }
}
