//! The copy's end of a backup: what [`Directory::backup`](super::Directory::backup)
//! asks of the store it writes, done in this process or in another one.
//!
//! The copy is a sled database, and sled keeps a page table and a cache for each one a
//! process opens, as large as the copy is: a million-entry copy made inside a running
//! provider took it from 78 to 293 to 328 MiB, and left it at 212 to 247 MiB once the
//! copy was closed (freed memory the allocator could not give back, interleaved with the
//! store's own). The provider runs for months; a backup is a command. So the backup reads the
//! store in the provider and writes the copy through [`CopyWriter`]: [`SledCopy`] writes
//! it in this process (a command that copies a stopped store, and the tests);
//! [`StreamCopy`] sends the same requests down a pipe to a process of its own that runs
//! [`write_copy`], and whose memory goes when it exits.
//!
//! The requests are a few kinds of tree edit, sent in order and never answered but for
//! two: [`CopyWriter::settle`], which waits until the writer has done everything asked
//! before (so that the backup's last step, with the provider's writes held, does not wait
//! behind the bulk of the copy still in the pipe), and [`CopyWriter::finish`], which makes
//! the copy durable and counts it. A writer that fails says why in its answer, and
//! removes what it wrote; so does one whose input ends before `finish` (its backup was
//! abandoned, or the process that read the store died).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sled::{Db, Tree};
use tether_protocol::EntryUuid;

use super::super::names;
use crate::disk_sync::DiskSync;
use crate::error::{Result, StoreError};
use crate::fill_order::fill_order;

/// Bytes written to the copy between two flushes of it.
const FLUSH_AFTER_BYTES: usize = 4 << 20;

/// The copy's page cache: it is written in key order, and then changed where the
/// entries changed meanwhile are.
const COPY_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The buffers on each side of the pipe: large enough that the backup's last step,
/// which sends a few entries while writes are held, does not wait for the writer.
const PIPE_BUFFER: usize = 1 << 20;

/// The longest field a request may carry: above any record the store holds (entries are
/// bounded by the frame limit), so a longer one is a stream gone wrong, refused before
/// it is allocated.
const MAX_FIELD: usize = 1 << 30;

/// What a copy holds, counted once it is durable: the backup checks it against the
/// store it came from before putting it in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyCounts {
    /// Records in the entries tree.
    pub entries: u64,
    /// Records in the entryUUID index.
    pub uuids: u64,
    /// Changelog records.
    pub changelog: u64,
}

/// What a backup asks of its copy. Each request takes effect in order; an error from one
/// may be that of an earlier one (a writer in another process reports its failures at
/// the next request it cannot take, or at [`CopyWriter::settle`] or
/// [`CopyWriter::finish`]). Dropped without `finish`, the copy is abandoned and what it
/// wrote removed.
pub trait CopyWriter: Send {
    /// Sets `key` of `tree` to `value`.
    fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes `key` from `tree`, if it is there.
    fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<()>;
    /// Removes the entry the copy's entryUUID index names for `uuid`, and the index's
    /// record of it: the copy's own record, which may be older than the store's.
    fn forget(&mut self, uuid: &EntryUuid) -> Result<()>;
    /// Removes every key of `tree` up to and including `last`.
    fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<()>;
    /// Removes every key of `tree`.
    fn clear(&mut self, tree: &[u8]) -> Result<()>;
    /// Drops every tree of the copy whose name `trees` does not hold.
    fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<()>;
    /// Returns once everything asked before is done.
    fn settle(&mut self) -> Result<()>;
    /// Makes the copy durable and counts it. Nothing may be asked after.
    fn finish(&mut self) -> Result<CopyCounts>;
}

/// Inserts into one tree in rising key order held back and written together, in
/// [`fill_order`]: the copy's trees are read in key order, and written so they leave
/// sled's leaves full instead of half empty.
const FILL_RUN: usize = 256;

/// A key and its value.
type Record = (Vec<u8>, Vec<u8>);

/// The copy written in this process.
#[derive(Debug)]
pub struct SledCopy {
    db: Db,
    /// Its log file, synced once the copy is finished (see `crate::disk_sync`).
    log: PathBuf,
    trees: HashMap<Vec<u8>, Tree>,
    unflushed: usize,
    /// Inserts held back (see [`FILL_RUN`]): their tree, and their keys and values in
    /// rising key order. Any other request writes them first.
    held: Option<(Tree, Vec<Record>)>,
}

impl SledCopy {
    /// Makes a copy in `folder`, an empty folder (the one the backup made beside its
    /// destination). Anything else is refused untouched: a copy that fails is removed
    /// with its folder, which must then have held nothing else (a store named by
    /// mistake, say).
    pub fn create(folder: &Path) -> Result<Self> {
        let refused = |why: String| {
            StoreError::CopyWriter(format!(
                "{} {why}: a copy is written only into the empty folder its backup made; nothing was touched",
                folder.display()
            ))
        };
        match std::fs::read_dir(folder).map(|mut items| items.next().is_none()) {
            Ok(true) => {}
            Ok(false) => return Err(refused("is not empty".to_owned())),
            Err(e) => return Err(refused(format!("cannot be read as a folder ({e})"))),
        }
        let db = sled::Config::new().path(folder).cache_capacity(COPY_CACHE_BYTES).open()?;
        Ok(Self { db, log: folder.join("db"), trees: HashMap::new(), unflushed: 0, held: None })
    }

    /// Writes the inserts held back.
    fn write_held(&mut self) -> Result<()> {
        let Some((tree, run)) = self.held.take() else { return Ok(()) };
        let mut bytes = 0;
        for i in fill_order(run.len()) {
            let (key, value) = &run[i];
            bytes += key.len() + value.len();
            tree.insert(&key[..], &value[..])?;
        }
        self.wrote(bytes)
    }

    fn tree(&mut self, name: &[u8]) -> Result<Tree> {
        if let Some(tree) = self.trees.get(name) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(name)?;
        self.trees.insert(name.to_vec(), tree.clone());
        Ok(tree)
    }

    /// Counts `bytes` more written, and flushes once [`FLUSH_AFTER_BYTES`] are, as a
    /// consumer's replica is, so that sled's buffers of what it wrote stay bounded when
    /// the disk is slower than the copy. (On a disk that keeps up it changes little: a
    /// million entries copied alone peaked at 309 MiB unflushed, 296 flushed.)
    fn wrote(&mut self, bytes: usize) -> Result<()> {
        self.unflushed += bytes;
        if self.unflushed >= FLUSH_AFTER_BYTES {
            self.db.flush()?;
            self.unflushed = 0;
        }
        Ok(())
    }
}

impl CopyWriter for SledCopy {
    fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let follows = match &self.held {
            Some((held, run)) => held.name() == tree && run.last().is_some_and(|(last, _)| &last[..] < key),
            None => false,
        };
        if !follows || self.held.as_ref().is_some_and(|(_, run)| run.len() == FILL_RUN) {
            self.write_held()?;
        }
        if self.held.is_none() {
            self.held = Some((self.tree(tree)?, Vec::with_capacity(FILL_RUN)));
        }
        if let Some((_, run)) = &mut self.held {
            run.push((key.to_vec(), value.to_vec()));
        }
        Ok(())
    }

    fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<()> {
        self.write_held()?;
        self.tree(tree)?.remove(key)?;
        self.wrote(key.len())
    }

    fn forget(&mut self, uuid: &EntryUuid) -> Result<()> {
        self.write_held()?;
        if let Some(key) = self.tree(names::UUIDS.as_bytes())?.remove(uuid.as_bytes())? {
            self.tree(names::ENTRIES.as_bytes())?.remove(key)?;
        }
        self.wrote(uuid.as_bytes().len())
    }

    fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<()> {
        self.write_held()?;
        let tree = self.tree(tree)?;
        let mut removed = 0;
        for key in tree.range(..=last).keys() {
            let key = key?;
            removed += key.len();
            tree.remove(key)?;
        }
        self.wrote(removed)
    }

    fn clear(&mut self, tree: &[u8]) -> Result<()> {
        self.write_held()?;
        Ok(self.tree(tree)?.clear()?)
    }

    fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<()> {
        self.write_held()?;
        for name in self.db.tree_names() {
            if !trees.iter().any(|kept| kept[..] == name[..]) {
                self.trees.remove(&name[..]);
                self.db.drop_tree(&name)?;
            }
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        self.write_held()
    }

    fn finish(&mut self) -> Result<CopyCounts> {
        self.write_held()?;
        self.db.flush()?;
        // sled's flush leaves the log's size and its blobs unsynced: a copy a power cut
        // could cut short must not be put in place as a backup.
        let unsynced = |error| StoreError::Sync { path: self.log.display().to_string(), error };
        DiskSync::open(&self.log).map_err(unsynced)?.sync()?;
        let len = |copy: &mut Self, name: &str| copy.tree(name.as_bytes()).map(|t| t.len() as u64);
        Ok(CopyCounts {
            entries: len(self, names::ENTRIES)?,
            uuids: len(self, names::UUIDS)?,
            changelog: len(self, names::CHANGELOG)?,
        })
    }
}

/// The requests, one byte each, then their fields: a byte string is its length (4
/// bytes, little-endian) and its bytes; an entryUUID its 16 bytes.
mod request {
    /// Tree, key, value.
    pub const INSERT: u8 = b'I';
    /// Tree, key.
    pub const REMOVE: u8 = b'R';
    /// entryUUID.
    pub const FORGET: u8 = b'F';
    /// Tree, last key.
    pub const REMOVE_THROUGH: u8 = b'T';
    /// Tree.
    pub const CLEAR: u8 = b'C';
    /// A count (4 bytes, little-endian), then as many tree names.
    pub const KEEP_ONLY: u8 = b'K';
    /// Nothing.
    pub const SETTLE: u8 = b'S';
    /// Nothing.
    pub const FINISH: u8 = b'E';
}

/// The answers, one byte each, then their fields.
mod answer {
    /// To [`super::request::SETTLE`]: nothing.
    pub const SETTLED: u8 = b'S';
    /// To [`super::request::FINISH`]: the counts of entries, entryUUIDs and changelog
    /// records, 8 bytes each, little-endian.
    pub const FINISHED: u8 = b'D';
    /// To whatever request failed, the last thing the writer says: why, a byte string.
    pub const FAILED: u8 = b'X';
}

/// The copy written by another process, which runs [`write_copy`] on the other ends of
/// `requests` and `answers` (its standard input and output).
pub struct StreamCopy<W: Write, R: Read> {
    requests: BufWriter<W>,
    answers: BufReader<R>,
}

impl<W: Write, R: Read> std::fmt::Debug for StreamCopy<W, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCopy").field("buffered", &self.requests.buffer().len()).finish_non_exhaustive()
    }
}

impl<W: Write + Send, R: Read + Send> StreamCopy<W, R> {
    /// The copy written by whoever reads `requests` and answers on `answers`.
    pub fn new(requests: W, answers: R) -> Self {
        Self { requests: BufWriter::with_capacity(PIPE_BUFFER, requests), answers: BufReader::new(answers) }
    }

    fn send(&mut self, parts: &[&[u8]]) -> Result<()> {
        let sent = parts.iter().try_for_each(|part| self.requests.write_all(part));
        sent.map_err(|e| self.gone(&e))
    }

    /// Sends the fields of a request (its kind first).
    fn request(&mut self, kind: u8, fields: &[&[u8]]) -> Result<()> {
        self.send(&[&[kind]])?;
        fields.iter().try_for_each(|field| self.field(field))
    }

    /// Sends a byte string: its length, then its bytes.
    fn field(&mut self, field: &[u8]) -> Result<()> {
        let len = u32::try_from(field.len()).map_err(|_| StoreError::CopyWriter(too_long(field.len())))?;
        self.send(&[&len.to_le_bytes(), field])
    }

    /// Sends the requests still buffered and reads the answer to the last of them.
    fn ask(&mut self, kind: u8) -> Result<u8> {
        self.request(kind, &[])?;
        self.requests.flush().map_err(|e| self.gone(&e))?;
        let mut answer = [0];
        match self.answers.read_exact(&mut answer) {
            Ok(()) if answer[0] == answer::FAILED => Err(self.failed()),
            Ok(()) => Ok(answer[0]),
            Err(e) => Err(self.gone(&e)),
        }
    }

    /// Why the writer failed, as it said.
    fn failed(&mut self) -> StoreError {
        match read_field(&mut self.answers, &mut Vec::new()) {
            Ok(Some(why)) => StoreError::CopyWriter(String::from_utf8_lossy(why).into_owned()),
            Ok(None) | Err(_) => StoreError::CopyWriter("it failed without saying why".to_owned()),
        }
    }

    /// Why the writer stopped taking requests (`e`, the pipe's error): what it said
    /// before it went, if it said anything.
    fn gone(&mut self, e: &std::io::Error) -> StoreError {
        let mut answer = [0];
        match self.answers.read_exact(&mut answer) {
            Ok(()) if answer[0] == answer::FAILED => self.failed(),
            _ => StoreError::CopyWriter(format!("it stopped taking the copy without saying why ({e})")),
        }
    }
}

impl<W: Write + Send, R: Read + Send> CopyWriter for StreamCopy<W, R> {
    fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        self.request(request::INSERT, &[tree, key, value])
    }

    fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<()> {
        self.request(request::REMOVE, &[tree, key])
    }

    fn forget(&mut self, uuid: &EntryUuid) -> Result<()> {
        self.send(&[&[request::FORGET], uuid.as_bytes()])
    }

    fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<()> {
        self.request(request::REMOVE_THROUGH, &[tree, last])
    }

    fn clear(&mut self, tree: &[u8]) -> Result<()> {
        self.request(request::CLEAR, &[tree])
    }

    fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<()> {
        let count = u32::try_from(trees.len()).map_err(|_| StoreError::CopyWriter(too_long(trees.len())))?;
        self.send(&[&[request::KEEP_ONLY], &count.to_le_bytes()])?;
        trees.iter().try_for_each(|name| self.field(name))
    }

    fn settle(&mut self) -> Result<()> {
        match self.ask(request::SETTLE)? {
            answer::SETTLED => Ok(()),
            other => Err(StoreError::CopyWriter(format!("it answered {other:#04x} where it was to say it settled"))),
        }
    }

    fn finish(&mut self) -> Result<CopyCounts> {
        match self.ask(request::FINISH)? {
            answer::FINISHED => {
                let mut counts = [0u8; 24];
                self.answers.read_exact(&mut counts).map_err(|e| self.gone(&e))?;
                let at = |i: usize| u64::from_le_bytes(counts[i * 8..i * 8 + 8].try_into().unwrap_or_default());
                Ok(CopyCounts { entries: at(0), uuids: at(1), changelog: at(2) })
            }
            other => Err(StoreError::CopyWriter(format!("it answered {other:#04x} where it was to count the copy"))),
        }
    }
}

fn too_long(len: usize) -> String {
    format!("a field of {len} bytes is longer than a request may carry")
}

/// Reads a byte string into `buf`: `None` at the end of the stream before it began.
fn read_field<'b>(from: &mut impl Read, buf: &'b mut Vec<u8>) -> std::io::Result<Option<&'b [u8]>> {
    let mut len = [0u8; 4];
    match from.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FIELD {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, too_long(len)));
    }
    buf.clear();
    buf.resize(len, 0);
    from.read_exact(buf)?;
    Ok(Some(&buf[..]))
}

/// Writes the copy in `folder` (made empty by the backup) as `requests` ask, answering
/// on `answers`: the other end of a [`StreamCopy`]. Returns once the copy is finished;
/// on any failure, or when the requests end before the copy is finished (the backup was
/// abandoned, or its process died), the copy is removed with its folder, and the error
/// says why, on `answers` too. A folder that is not empty is refused and left as it is
/// (see [`SledCopy::create`]).
pub fn write_copy(folder: &Path, requests: impl Read, answers: impl Write) -> Result<CopyCounts> {
    let mut answers = BufWriter::new(answers);
    let mut copy = match SledCopy::create(folder) {
        Ok(copy) => copy,
        // Not a folder of its own to remove (see `SledCopy::create`).
        Err(e) => return Err(failed(&mut answers, e)),
    };
    let copied = serve_requests(&mut copy, &mut BufReader::with_capacity(PIPE_BUFFER, requests), &mut answers);
    drop(copy);
    // A finished copy whose backup cannot be told (its process died after asking) is
    // one no one will put in place: removed like an unfinished one.
    let copied = copied.and_then(|counts| say_finished(&mut answers, &counts).map(|()| counts).map_err(gone));
    match copied {
        Ok(counts) => Ok(counts),
        Err(e) => {
            // sled let go of the folder when the copy was dropped.
            if let Err(left) = std::fs::remove_dir_all(folder) {
                if left.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(copy = %folder.display(), error = %left, "removing an unfinished backup's files");
                }
            }
            Err(failed(&mut answers, e))
        }
    }
}

/// Tells the backup the copy is finished, and what it holds.
fn say_finished(answers: &mut impl Write, counts: &CopyCounts) -> std::io::Result<()> {
    answers.write_all(&[answer::FINISHED])?;
    for count in [counts.entries, counts.uuids, counts.changelog] {
        answers.write_all(&count.to_le_bytes())?;
    }
    answers.flush()
}

/// Tells the backup why the copy failed, if it still listens, and returns the error.
fn failed(answers: &mut impl Write, e: StoreError) -> StoreError {
    let why = match &e {
        StoreError::CopyWriter(why) => why.clone(),
        e => e.to_string(),
    };
    // The backup may be gone: then no one is told.
    let _ = say_failed(answers, &why);
    e
}

/// Tells the backup why the copy failed: the last answer.
fn say_failed(answers: &mut impl Write, why: &str) -> std::io::Result<()> {
    let why = &why.as_bytes()[..why.len().min(1 << 16)];
    answers.write_all(&[answer::FAILED])?;
    answers.write_all(&u32::try_from(why.len()).unwrap_or(0).to_le_bytes())?;
    answers.write_all(why)?;
    answers.flush()
}

/// An answer the backup did not take: it is gone.
fn gone(e: std::io::Error) -> StoreError {
    StoreError::CopyWriter(format!("the backup stopped reading its answers ({e})"))
}

/// Takes requests into `copy` until one finishes it; a settle is answered on `answers`.
fn serve_requests(copy: &mut SledCopy, requests: &mut impl BufRead, answers: &mut impl Write) -> Result<CopyCounts> {
    let (mut tree, mut key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let mut kind = [0];
        match requests.read_exact(&mut kind) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ended()),
            other => other.map_err(cut)?,
        }
        let field = |requests: &mut _, buf: &mut Vec<u8>| -> Result<()> {
            read_field(requests, buf).map_err(cut)?.ok_or_else(ended)?;
            Ok(())
        };
        match kind[0] {
            request::INSERT => {
                field(requests, &mut tree)?;
                field(requests, &mut key)?;
                field(requests, &mut value)?;
                copy.insert(&tree, &key, &value)?;
            }
            request::REMOVE => {
                field(requests, &mut tree)?;
                field(requests, &mut key)?;
                copy.remove(&tree, &key)?;
            }
            request::FORGET => {
                let mut uuid = [0u8; 16];
                requests.read_exact(&mut uuid).map_err(cut)?;
                copy.forget(&EntryUuid(uuid))?;
            }
            request::REMOVE_THROUGH => {
                field(requests, &mut tree)?;
                field(requests, &mut key)?;
                copy.remove_through(&tree, &key)?;
            }
            request::CLEAR => {
                field(requests, &mut tree)?;
                copy.clear(&tree)?;
            }
            request::KEEP_ONLY => {
                let mut count = [0u8; 4];
                requests.read_exact(&mut count).map_err(cut)?;
                let mut kept = Vec::new();
                for _ in 0..u32::from_le_bytes(count) {
                    field(requests, &mut tree)?;
                    kept.push(tree.clone());
                }
                copy.keep_only(&kept)?;
            }
            request::SETTLE => {
                answers.write_all(&[answer::SETTLED]).and_then(|()| answers.flush()).map_err(gone)?;
            }
            request::FINISH => return copy.finish(),
            other => return Err(StoreError::CopyWriter(format!("asked for {other:#04x}, which is no request"))),
        }
    }
}

/// What reading the requests met.
fn cut(e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ended(),
        _ => StoreError::CopyWriter(format!("reading the requests: {e}")),
    }
}

/// The requests ended before the copy was finished.
fn ended() -> StoreError {
    StoreError::CopyWriter(
        "the requests ended before the copy was finished (its backup was abandoned, or its process died): the copy \
         is removed"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A request stream of `inserts` single inserts into the entries tree.
    fn inserts(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(request::INSERT);
            for field in [names::ENTRIES.as_bytes(), format!("k{i}").as_bytes(), b"value"] {
                out.extend_from_slice(&(field.len() as u32).to_le_bytes());
                out.extend_from_slice(field);
            }
        }
        out
    }

    /// What the writer said last, when it failed.
    fn said_failed(answers: &[u8]) -> String {
        assert_eq!(answers.first(), Some(&answer::FAILED), "{answers:?}");
        let len = u32::from_le_bytes(answers[1..5].try_into().unwrap()) as usize;
        assert_eq!(answers.len(), 5 + len);
        String::from_utf8(answers[5..].to_vec()).unwrap()
    }

    /// Inserts held back to be written in fill order change nothing of what the copy
    /// holds, whatever comes between them: runs in key order, keys out of order or
    /// repeated, other trees, removals of what was just inserted, a finish.
    #[test]
    fn the_copy_holds_what_was_asked_in_the_order_it_was_asked() {
        use std::collections::BTreeMap;
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        let mut model: BTreeMap<&[u8], BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        let trees: [&[u8]; 2] = [b"entries", b"changelog"];
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut rising = 0u64;
        for step in 0..5_000u64 {
            let tree = trees[(next(10) == 0) as usize];
            let key = match next(4) {
                // Mostly rising runs, as a tree's copy is; sometimes a key seen before.
                0 => format!("k{:06}", next(rising + 1)),
                _ => {
                    rising += 1 + next(3);
                    format!("k{rising:06}")
                }
            }
            .into_bytes();
            if next(20) == 0 {
                copy.remove(tree, &key).unwrap();
                model.entry(tree).or_default().remove(&key);
            } else {
                let value = format!("v{step}").into_bytes();
                copy.insert(tree, &key, &value).unwrap();
                model.entry(tree).or_default().insert(key, value);
            }
        }
        copy.finish().unwrap();
        for tree in trees {
            let held: BTreeMap<Vec<u8>, Vec<u8>> =
                copy.tree(tree).unwrap().iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert!(held == model[tree], "{}", String::from_utf8_lossy(tree));
        }
    }

    /// Requests that end before the copy is finished (its backup abandoned, or the
    /// process that read the store killed) leave no copy: the writer removes it, there
    /// being no one else left to, also when they end inside a request.
    #[test]
    fn requests_that_end_before_the_finish_leave_no_copy() {
        let tmp = tempfile::tempdir().unwrap();
        for cut in [0, 3] {
            let folder = tmp.path().join(format!("copy-{cut}"));
            std::fs::create_dir(&folder).unwrap();
            let mut requests = inserts(100);
            requests.truncate(requests.len() - cut);
            let mut answers = Vec::new();
            let e = write_copy(&folder, Cursor::new(requests), &mut answers).unwrap_err().to_string();
            assert!(e.contains("the requests ended before the copy was finished"), "{e}");
            assert!(!folder.exists(), "cut {cut}: the copy is removed");
            assert!(said_failed(&answers).starts_with("the requests ended"), "{answers:?}");
        }
    }

    /// A writer given a folder that is not empty (`backup-writer` run by hand on a
    /// store, say) refuses it and touches nothing in it: a copy that fails is removed
    /// with its folder, which would have taken the store with it.
    #[test]
    fn a_writer_given_a_folder_holding_anything_touches_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), "the store's log").unwrap();
        for requests in [Vec::new(), inserts(3)] {
            let mut answers = Vec::new();
            let e = write_copy(&store, Cursor::new(requests), &mut answers).unwrap_err().to_string();
            assert!(e.contains("is not empty: a copy is written only into the empty folder its backup made"), "{e}");
            assert!(said_failed(&answers).ends_with("nothing was touched"));
            assert_eq!(std::fs::read_to_string(store.join("db")).unwrap(), "the store's log");
            assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1);
        }
        let missing = tmp.path().join("missing");
        assert!(write_copy(&missing, Cursor::new(inserts(1)), Vec::new()).is_err());
        assert!(!missing.exists(), "no folder made");
    }

    /// A finished copy whose backup is gone before it is told so (the provider died
    /// after asking for the finish) is removed: no one will put it in place, and it
    /// holds every entry.
    #[test]
    fn a_finished_copy_whose_backup_is_gone_is_removed() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("copy");
        std::fs::create_dir(&folder).unwrap();
        let mut requests = inserts(10);
        requests.push(request::FINISH);
        let e = write_copy(&folder, Cursor::new(requests), Gone).unwrap_err().to_string();
        assert!(e.contains("the backup stopped reading its answers"), "{e}");
        assert!(!folder.exists(), "the finished copy is removed");
    }

    /// A writer asked what it cannot do says why, as its last answer, and removes the
    /// copy.
    #[test]
    fn a_writer_asked_what_it_cannot_do_says_why_and_removes_the_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("copy");
        std::fs::create_dir(&folder).unwrap();
        let mut requests = inserts(3);
        requests.push(b'Z');
        let mut answers = Vec::new();
        assert!(write_copy(&folder, Cursor::new(requests), &mut answers).is_err());
        assert_eq!(said_failed(&answers), "asked for 0x5a, which is no request");
        assert!(!folder.exists());
    }

    /// A writer that fails while requests are still coming (its disk full, say) is
    /// heard: the backup's next request that cannot be sent, or its settle, returns
    /// what the writer said, not a broken pipe.
    #[test]
    fn a_writer_that_failed_is_heard_at_the_next_request_or_the_settle() {
        for settle_first in [true, false] {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            let writer = std::thread::spawn(move || {
                let mut first = [0u8; 64];
                theirs.read_exact(&mut first).unwrap();
                say_failed(&mut theirs, "storage error: No space left on device").unwrap();
            });
            let mut copy = StreamCopy::new(ours.try_clone().unwrap(), ours);
            let e = if settle_first {
                copy.insert(b"entries", b"k", &[0; 100]).unwrap();
                copy.settle().unwrap_err()
            } else {
                // Sent until the pipe breaks: the buffers fill first.
                (0..).find_map(|_| copy.insert(b"entries", b"k", &[0; 4096]).err()).unwrap()
            };
            writer.join().unwrap();
            assert_eq!(e.to_string(), "writing the copy: storage error: No space left on device");
        }
    }

    /// A writer gone without a word (killed) is told apart from one that failed.
    #[test]
    fn a_writer_gone_without_a_word_is_said_to_be() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut copy = StreamCopy::new(ours.try_clone().unwrap(), ours);
        let e = copy.settle().unwrap_err().to_string();
        assert!(e.starts_with("writing the copy: it stopped taking the copy without saying why ("), "{e}");
    }

    /// The copy's trees, key by key, once finished.
    fn held_in(copy: &mut SledCopy, tree: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        copy.tree(tree).unwrap().iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    fn kv(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (key.to_vec(), value.to_vec())
    }

    /// A key set twice in a row holds its second value: a repeat is not a rising key,
    /// so it does not join the run held back, whose fill order could write the first
    /// value last.
    #[test]
    fn a_key_set_twice_in_a_row_holds_its_second_value() {
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        // Positions 1 and 2 of a run: fill order writes 2 before 1.
        copy.insert(b"t", b"a", b"a").unwrap();
        copy.insert(b"t", b"k", b"first").unwrap();
        copy.insert(b"t", b"k", b"second").unwrap();
        copy.finish().unwrap();
        assert_eq!(held_in(&mut copy, b"t"), [kv(b"a", b"a"), kv(b"k", b"second")]);
    }

    /// Every other request takes effect after the inserts held back before it, as the
    /// trait promises: a removal, a forget, a removal through a key, a clear and a tree
    /// dropped each undo the inserts just asked, not the other way round.
    #[test]
    fn requests_take_effect_after_the_inserts_held_back_before_them() {
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        let (entries, uuids) = (names::ENTRIES.as_bytes(), names::UUIDS.as_bytes());

        copy.insert(b"removed", b"a", b"1").unwrap();
        copy.insert(b"removed", b"b", b"2").unwrap();
        copy.remove(b"removed", b"b").unwrap();

        let uuid = EntryUuid([7; 16]);
        copy.insert(entries, b"dn", b"entry").unwrap();
        copy.insert(uuids, uuid.as_bytes(), b"dn").unwrap();
        copy.forget(&uuid).unwrap();

        copy.insert(b"through", b"a", b"1").unwrap();
        copy.insert(b"through", b"b", b"2").unwrap();
        copy.insert(b"through", b"c", b"3").unwrap();
        copy.remove_through(b"through", b"b").unwrap();

        copy.insert(b"cleared", b"a", b"1").unwrap();
        copy.clear(b"cleared").unwrap();

        copy.insert(b"dropped", b"a", b"1").unwrap();
        let default = copy.db.name();
        let kept: Vec<Vec<u8>> =
            [&default[..], b"removed", entries, uuids, b"through", b"cleared"].map(<[u8]>::to_vec).to_vec();
        copy.keep_only(&kept).unwrap();

        let counts = copy.finish().unwrap();
        assert_eq!(held_in(&mut copy, b"removed"), [kv(b"a", b"1")]);
        assert_eq!((counts.entries, counts.uuids), (0, 0), "the entry forgotten, and its entryUUID");
        assert_eq!(held_in(&mut copy, b"through"), [kv(b"c", b"3")]);
        assert_eq!(held_in(&mut copy, b"cleared"), []);
        assert!(!copy.db.tree_names().iter().any(|name| &name[..] == b"dropped"), "the dropped tree stays dropped");
    }

    /// A tree dropped and then written again holds what was written since: the copy
    /// does not go on writing through the dropped tree's handle, which no longer
    /// belongs to the database.
    #[test]
    fn a_tree_dropped_and_written_again_holds_what_was_written_since() {
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        copy.insert(b"t", b"old", b"1").unwrap();
        copy.keep_only(&[copy.db.name().to_vec()]).unwrap();
        copy.insert(b"t", b"new", b"2").unwrap();
        copy.finish().unwrap();
        let fresh = copy.db.open_tree(b"t").unwrap();
        let held: Vec<_> = fresh.iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(held, [kv(b"new", b"2")]);
    }

    /// The inserts held back are bounded, however long a tree's rising run: a tree of
    /// a million keys is not held in memory whole before it is written.
    #[test]
    fn the_inserts_held_back_are_at_most_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        for i in 0..FILL_RUN * 3 + 5 {
            copy.insert(b"t", format!("k{i:06}").as_bytes(), b"v").unwrap();
            let held = copy.held.as_ref().map_or(0, |(_, run)| run.len());
            assert!(held <= FILL_RUN, "{held} inserts held back after {i}");
        }
        assert_eq!(copy.finish().unwrap().entries, 0);
        assert_eq!(copy.tree(b"t").unwrap().len(), FILL_RUN * 3 + 5);
    }

    /// What the copy wrote and sled has not flushed stays under the flush threshold,
    /// however much is written: sled's buffers are bounded when the disk is slower than
    /// the copy.
    #[test]
    fn what_the_copy_wrote_unflushed_stays_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut copy = SledCopy::create(tmp.path()).unwrap();
        let value = vec![0u8; 64 * 1024];
        let n = 2 * FLUSH_AFTER_BYTES / value.len();
        // Falling keys, each written as the next comes, none held back.
        for i in 0..n {
            copy.insert(b"t", format!("k{:06}", n - i).as_bytes(), &value).unwrap();
            assert!(copy.unflushed < FLUSH_AFTER_BYTES, "{} bytes unflushed", copy.unflushed);
        }
    }

    /// A copy written by another process counts what it holds as it holds it: the
    /// backup checks the entries and entryUUIDs counted against its store's, so each
    /// count must come back as what it counts.
    #[test]
    fn a_streamed_copy_counts_each_tree_as_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("copy");
        std::fs::create_dir(&folder).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let answers = theirs.try_clone().unwrap();
        let writer = std::thread::spawn(move || write_copy(&folder, theirs, answers));
        let mut copy = StreamCopy::new(ours.try_clone().unwrap(), ours);
        for (tree, n) in [(names::ENTRIES, 3), (names::UUIDS, 2), (names::CHANGELOG, 5)] {
            for i in 0..n {
                copy.insert(tree.as_bytes(), format!("k{i}").as_bytes(), b"v").unwrap();
            }
        }
        let counts = copy.finish().unwrap();
        assert_eq!(counts, CopyCounts { entries: 3, uuids: 2, changelog: 5 });
        assert_eq!(writer.join().unwrap().unwrap(), counts);
    }

    /// A request whose field claims more than any record can hold is a stream gone
    /// wrong: the writer says so and removes the copy, before it makes room for it.
    #[test]
    fn a_field_longer_than_a_request_may_carry_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("copy");
        std::fs::create_dir(&folder).unwrap();
        let mut requests = vec![request::INSERT];
        requests.extend_from_slice(&(MAX_FIELD as u32 + 1).to_le_bytes());
        let mut answers = Vec::new();
        assert!(write_copy(&folder, Cursor::new(requests), &mut answers).is_err());
        assert_eq!(said_failed(&answers), format!("reading the requests: {}", too_long(MAX_FIELD + 1)));
        assert!(!folder.exists());
    }

    /// A writer that answers a settle or a finish with anything but what it was asked
    /// (another build, or a stream gone wrong) is not taken at its word: the backup
    /// fails, and never takes counts it was not given for the copy's.
    #[test]
    fn a_writer_that_answers_out_of_turn_is_refused() {
        for finish in [false, true] {
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            let writer = std::thread::spawn(move || {
                let mut kind = [0u8];
                theirs.read_exact(&mut kind).unwrap();
                // The other answer, with room for counts.
                let other = if kind[0] == request::FINISH { answer::SETTLED } else { answer::FINISHED };
                theirs.write_all(&[other]).unwrap();
                theirs.write_all(&[0; 24]).unwrap();
                kind[0]
            });
            let mut copy = StreamCopy::new(ours.try_clone().unwrap(), ours);
            let e = if finish { copy.finish().map(drop) } else { copy.settle() }.unwrap_err().to_string();
            let kind = writer.join().unwrap();
            if finish {
                assert_eq!(kind, request::FINISH);
                assert_eq!(e, "writing the copy: it answered 0x53 where it was to count the copy");
            } else {
                assert_eq!(kind, request::SETTLE);
                assert_eq!(e, "writing the copy: it answered 0x44 where it was to say it settled");
            }
        }
    }
}
