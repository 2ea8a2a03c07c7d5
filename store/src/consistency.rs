//! Checks that stored trees agree with each other, shared by the provider's
//! [`Directory::verify`](crate::Directory::verify) and the consumer's
//! [`ReplicaStore::verify`](crate::ReplicaStore::verify).
//!
//! sled checksums its pages, so damage on disk is found by reading them (every record
//! is read here); what sled cannot see is trees that disagree, which no single write
//! can leave (each is one transaction) but a copy made wrong, or a bug, could. Every
//! entry set is held to the same rules: each entry decodes and is stored under its own
//! DN's key, and the UUID index maps each entry's UUID to that key and holds nothing
//! else. The directory and the replicas add their own (see each).

use tether_protocol::{Entry, EntryHead, EntryUuid};

use crate::entry_set::{EntrySet, ENTRIES};
use crate::error::Result;
use crate::record::decode;

/// Problems said in full; the rest are counted.
const PROBLEMS_SAID: usize = 50;

/// Records read between two calls of a check's watch.
pub(crate) const WATCH_EVERY: u64 = 10_000;

/// What a check found wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    /// The first 50 problems, in the order found.
    pub said: Vec<String>,
    /// Problems found past those.
    pub more: u64,
}

impl Problems {
    /// Whether nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.said.is_empty()
    }

    /// How many problems were found.
    pub fn count(&self) -> u64 {
        self.said.len() as u64 + self.more
    }

    pub(crate) fn found(&mut self, problem: String) {
        if self.said.len() < PROBLEMS_SAID {
            self.said.push(problem);
        } else {
            self.more += 1;
        }
    }
}

/// Each problem on a line of its own, indented as a list, then how many more: what the
/// commands print below their verdict.
impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in &self.said {
            write!(f, "\n  - {problem}")?;
        }
        if self.more > 0 {
            write!(f, "\n  and {} more", self.more)?;
        }
        Ok(())
    }
}

/// Counts the records a check reads, calling its watch every [`WATCH_EVERY`].
pub(crate) struct Reading<'a> {
    read: u64,
    watch: &'a mut dyn FnMut(u64),
}

impl<'a> Reading<'a> {
    pub(crate) fn new(watch: &'a mut dyn FnMut(u64)) -> Self {
        Self { read: 0, watch }
    }

    pub(crate) fn tick(&mut self) {
        self.read += 1;
        if self.read % WATCH_EVERY == 0 {
            (self.watch)(self.read);
        }
    }
}

/// A caller's own checks of an entry that decoded, stored under the key given.
pub(crate) type EntryCheck<'a> = dyn FnMut(&[u8], &Entry, &mut Problems) -> Result<()> + 'a;

/// Reads every entry of `set` and every record of its UUID index, holding each to the
/// rules every entry set keeps (see the module docs); `each` adds the caller's checks of
/// an entry that decoded (`key` is where it is stored). Returns the entries read.
pub(crate) fn check_entry_set(
    set: &EntrySet,
    found: &mut Problems,
    reading: &mut Reading<'_>,
    each: &mut EntryCheck<'_>,
) -> Result<u64> {
    let mut entries = 0;
    for item in set.entries.iter() {
        let (key, value) = item?;
        reading.tick();
        entries += 1;
        let entry: Entry = match decode(ENTRIES, &value) {
            Ok(entry) => entry,
            Err(e) => {
                found.found(format!("entry stored under key {}: {e}", shown_key(&key)));
                continue;
            }
        };
        let dn = &entry.dn;
        if dn.tree_key() != key.as_ref() {
            found.found(format!("entry {dn} is stored under another name's key {}", shown_key(&key)));
        }
        match set.uuids.get(entry.uuid.as_bytes())? {
            Some(indexed) if indexed == key => {}
            Some(indexed) => found.found(format!(
                "entry {dn}: its entryUUID {} is indexed to another key, {}",
                entry.uuid,
                shown_key(&indexed)
            )),
            None => found.found(format!("entry {dn}: its entryUUID {} is not in the UUID index", entry.uuid)),
        }
        each(&key, &entry, found)?;
    }
    for item in set.uuids.iter() {
        let (uuid, key) = item?;
        reading.tick();
        let named = match set.entries.get(&key)? {
            Some(bytes) => EntryHead::decode(&bytes).ok().map(|head| head.uuid.as_bytes() == uuid.as_ref()),
            None => Some(false),
        };
        // A record that does not decode was said above.
        if named == Some(false) {
            found.found(format!(
                "the UUID index maps {} to key {}, where no entry of it is",
                shown_uuid(&uuid),
                shown_key(&key)
            ));
        }
    }
    Ok(entries)
}

/// A DN key as the normalized DN it is made of ([`tether_protocol::Dn::tree_key`]: the
/// RDNs from the root down, each ended by a zero byte), quoted.
pub(crate) fn shown_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let rdns: Vec<&str> = text.split('\0').filter(|rdn| !rdn.is_empty()).rev().collect();
    format!("\"{}\"", rdns.join(","))
}

/// A UUID index key as a UUID, or as bytes when it is none.
fn shown_uuid(key: &[u8]) -> String {
    match <[u8; 16]>::try_from(key) {
        Ok(bytes) => EntryUuid(bytes).to_string(),
        Err(_) => hex(key),
    }
}

/// Bytes in hexadecimal, for keys that are not text.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
