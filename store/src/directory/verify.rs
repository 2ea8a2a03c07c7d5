//! A check of a stopped store, or of a backup's copy, that its trees agree with each
//! other: what an operator runs before trusting a copy to restore from.
//!
//! sled checksums its pages, so damage on disk is found by reading them (every record
//! is read here); what sled cannot see is trees that disagree, which no single write
//! can leave (each is one transaction) but a copy made wrong, or a bug, could. The
//! checks:
//! - every entry decodes, is stored under its own DN's key, lies under the suffix, has
//!   its parent (the directory is a tree), and is no newer than the store's last CSN;
//! - the UUID index maps each entry's UUID to the entry's key, and holds nothing else;
//! - the kept entry count is the number of entries;
//! - every changelog record decodes, is stored under its CSN, no newer than the last
//!   CSN; and for each entry the changelog names, its newest record agrees with the
//!   entries: a deleted entry is gone, any other is stored as of that record's CSN.
//!
//! The newest record of each entry the changelog names is held in memory while the
//! entries are read (about 40 bytes an entry).

use std::collections::HashMap;

use tether_protocol::{Csn, Entry, EntryHead};

use super::{names, Directory};
use crate::changelog::{ChangeKind, ChangeRecord};
use crate::error::Result;
use crate::record::{decode, u64_from};

/// Problems said in full; the rest are counted.
const PROBLEMS_SAID: usize = 50;

/// Records read between two calls of the caller's watch.
const WATCH_EVERY: u64 = 10_000;

/// What [`Directory::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries read.
    pub entries: u64,
    /// Changelog records read.
    pub changelog: u64,
    /// The store's last CSN.
    pub csn: Csn,
    /// What is wrong, the first 50 problems in the order found; empty when the store
    /// is sound.
    pub problems: Vec<String>,
    /// Problems found past those.
    pub more_problems: u64,
}

impl Verified {
    /// Whether nothing was found wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    fn found(&mut self, problem: String) {
        if self.problems.len() < PROBLEMS_SAID {
            self.problems.push(problem);
        } else {
            self.more_problems += 1;
        }
    }
}

impl Directory {
    /// Reads every record of the store and checks that its trees agree (see the module
    /// docs). For a store no one writes to meanwhile (a stopped provider's, a backup's
    /// copy): writes made while it reads would be found as problems. `watch` is called
    /// with the records read so far every few thousand. An error is a record sled could
    /// not read (damage), not a disagreement, which is a problem in the result.
    pub fn verify(&self, watch: &mut dyn FnMut(u64)) -> Result<Verified> {
        let csn = *self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = Verified { entries: 0, changelog: 0, csn, problems: Vec::new(), more_problems: 0 };
        let mut read = 0u64;
        let mut tick = |read: &mut u64| {
            *read += 1;
            if *read % WATCH_EVERY == 0 {
                watch(*read);
            }
        };

        // The newest record of each entry the changelog names.
        let mut newest: HashMap<[u8; 16], (Csn, ChangeKind)> = HashMap::new();
        for item in self.changelog.tree.iter() {
            let (key, value) = item?;
            tick(&mut read);
            found.changelog += 1;
            let at = Csn::from_key(&key);
            let record: ChangeRecord = match decode(names::CHANGELOG, &value) {
                Ok(record) => record,
                Err(e) => {
                    found.found(format!("changelog record {}: {e}", shown_csn(at, &key)));
                    continue;
                }
            };
            if at != Some(record.csn) {
                found.found(format!("changelog record of csn {} is stored under {}", record.csn, shown_csn(at, &key)));
            }
            if record.csn > csn {
                found.found(format!("changelog record of csn {} is newer than the store's last csn {csn}", record.csn));
            }
            let newer = newest.get(&record.uuid.0).is_none_or(|(seen, _)| *seen < record.csn);
            if newer {
                newest.insert(record.uuid.0, (record.csn, record.kind));
            }
        }

        for item in self.set.entries.iter() {
            let (key, value) = item?;
            tick(&mut read);
            found.entries += 1;
            let entry: Entry = match decode(names::ENTRIES, &value) {
                Ok(entry) => entry,
                Err(e) => {
                    found.found(format!("entry stored under key {}: {e}", shown_key(&key)));
                    continue;
                }
            };
            let dn = &entry.dn;
            if entry.dn.tree_key() != key.as_ref() {
                found.found(format!("entry {dn} is stored under another name's key {}", shown_key(&key)));
            }
            if dn != &self.suffix && !dn.is_descendant_of(&self.suffix) {
                found.found(format!("entry {dn} is outside the suffix {}", self.suffix));
            } else if dn != &self.suffix {
                match dn.parent() {
                    Some(parent) if self.set.entries.contains_key(parent.tree_key())? => {}
                    Some(parent) => found.found(format!("entry {dn} has no parent: no entry {parent}")),
                    None => found.found(format!("entry {dn} has no parent")),
                }
            }
            if entry.csn > csn {
                found.found(format!("entry {dn} is as of csn {}, newer than the store's last csn {csn}", entry.csn));
            }
            match self.set.uuids.get(entry.uuid.as_bytes())? {
                Some(indexed) if indexed == key => {}
                Some(indexed) => found.found(format!(
                    "entry {dn}: its entryUUID {} is indexed to another key, {}",
                    entry.uuid,
                    shown_key(&indexed)
                )),
                None => found.found(format!("entry {dn}: its entryUUID {} is not in the UUID index", entry.uuid)),
            }
            match newest.remove(&entry.uuid.0) {
                Some((deleted, ChangeKind::Delete)) => {
                    found.found(format!("entry {dn} is stored, though the changelog deleted it at csn {deleted}"))
                }
                Some((last, _)) if last != entry.csn => found.found(format!(
                    "entry {dn} is as of csn {}, where the changelog's last change to it is csn {last}",
                    entry.csn
                )),
                _ => {}
            }
        }
        let mut missing: Vec<_> =
            newest.into_iter().filter(|(_, (_, kind))| *kind != ChangeKind::Delete).map(|(u, (c, _))| (c, u)).collect();
        missing.sort();
        for (at, uuid) in missing {
            let uuid = tether_protocol::EntryUuid(uuid);
            found.found(format!(
                "the changelog changed entry {uuid} at csn {at}, as its last change, but it is not stored"
            ));
        }

        for item in self.set.uuids.iter() {
            let (uuid, key) = item?;
            tick(&mut read);
            let named = match self.set.entries.get(&key)? {
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

        let kept = match self.meta.get(names::ENTRY_COUNT)? {
            Some(v) => Some(u64_from(names::META, &v)?),
            None => None,
        };
        if let Some(kept) = kept.filter(|kept| *kept != found.entries) {
            found.found(format!("the entry count kept is {kept}, where the store holds {} entries", found.entries));
        }
        Ok(found)
    }
}

/// A changelog key as a CSN, or as bytes when it is none.
fn shown_csn(at: Option<Csn>, key: &[u8]) -> String {
    match at {
        Some(csn) => format!("csn {csn}"),
        None => format!("key {}", hex(key)),
    }
}

/// A DN key as the normalized DN it is made of ([`tether_protocol::Dn::tree_key`]: the
/// RDNs from the root down, each ended by a zero byte), quoted.
fn shown_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let rdns: Vec<&str> = text.split('\0').filter(|rdn| !rdn.is_empty()).rev().collect();
    format!("\"{}\"", rdns.join(","))
}

/// A UUID index key as a UUID, or as bytes when it is none.
fn shown_uuid(key: &[u8]) -> String {
    match <[u8; 16]>::try_from(key) {
        Ok(bytes) => tether_protocol::EntryUuid(bytes).to_string(),
        Err(_) => hex(key),
    }
}

/// Bytes in hexadecimal, for keys that are not text.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{Change, Dn};

    use super::*;
    use crate::record::encode;
    use crate::test_changes::{modify_sn, person, suffix};

    /// A directory of the suffix and `n` people (csn 2 to n + 1), `p0` then modified.
    fn directory(path: &std::path::Path, n: usize) -> Directory {
        let dir = Directory::open(path, &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        dir.write(&suffix()).unwrap();
        for i in 0..n {
            dir.write(&person(&format!("p{i}"))).unwrap();
        }
        dir.write(&modify_sn("p0", "changed")).unwrap();
        dir
    }

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap()
    }

    fn stored(dir: &Directory, dn: &Dn) -> Entry {
        dir.entries().get(dn).unwrap().unwrap()
    }

    #[test]
    fn a_store_written_through_the_directory_is_sound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(tmp.path(), 30);
        let mut watched = Vec::new();
        let found = dir.verify(&mut |n| watched.push(n)).unwrap();
        assert!(found.is_sound(), "{:?}", found.problems);
        assert_eq!((found.entries, found.changelog, found.csn), (31, 32, Csn(32)));
        assert!(watched.is_empty(), "under the watch's interval");
    }

    /// Each kind of disagreement a copy made wrong could leave is found, named.
    #[test]
    fn trees_that_disagree_are_found_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(tmp.path(), 5);
        let (p1, p2, p3) =
            (dn("uid=p1,dc=example,dc=com"), dn("uid=p2,dc=example,dc=com"), dn("uid=p3,dc=example,dc=com"));
        // An entry under another name's key: p1's record copied to a new key.
        let moved = stored(&dir, &p1);
        let stray = dn("cn=stray,dc=example,dc=com");
        dir.set.entries.insert(stray.tree_key(), encode(names::ENTRIES, &moved).unwrap()).unwrap();
        // An entry whose parent is gone, and not in the UUID index.
        let mut orphan = stored(&dir, &p2);
        orphan.dn = dn("cn=orphan,ou=gone,dc=example,dc=com");
        orphan.uuid = tether_protocol::EntryUuid([7; 16]);
        dir.set.entries.insert(orphan.dn.tree_key(), encode(names::ENTRIES, &orphan).unwrap()).unwrap();
        // An entry older than its last change (p0 was modified at csn 7).
        let p0 = dn("uid=p0,dc=example,dc=com");
        let mut old = stored(&dir, &p0);
        old.csn = Csn(2);
        dir.set.entries.insert(p0.tree_key(), encode(names::ENTRIES, &old).unwrap()).unwrap();
        // An entry gone without its delete, and its index record left behind.
        let p3_uuid = stored(&dir, &p3).uuid;
        dir.set.entries.remove(p3.tree_key()).unwrap();

        let found = dir.verify(&mut |_| {}).unwrap();
        assert_eq!(
            found.problems,
            [
                r#"entry uid=p1,dc=example,dc=com is stored under another name's key "cn=stray,dc=example,dc=com""#
                    .to_owned(),
                format!(
                    r#"entry uid=p1,dc=example,dc=com: its entryUUID {} is indexed to another key, "uid=p1,dc=example,dc=com""#,
                    moved.uuid
                ),
                "entry cn=orphan,ou=gone,dc=example,dc=com has no parent: no entry ou=gone,dc=example,dc=com"
                    .to_owned(),
                format!(
                    "entry cn=orphan,ou=gone,dc=example,dc=com: its entryUUID {} is not in the UUID index",
                    orphan.uuid
                ),
                "entry uid=p0,dc=example,dc=com is as of csn 2, where the changelog's last change to it is csn 7"
                    .to_owned(),
                format!("the changelog changed entry {p3_uuid} at csn 5, as its last change, but it is not stored"),
                format!(r#"the UUID index maps {p3_uuid} to key "uid=p3,dc=example,dc=com", where no entry of it is"#),
                "the entry count kept is 6, where the store holds 7 entries".to_owned(),
            ]
        );
    }

    #[test]
    fn a_deleted_entry_still_stored_and_a_record_under_another_key_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(tmp.path(), 3);
        let p1 = dn("uid=p1,dc=example,dc=com");
        let kept = stored(&dir, &p1);
        dir.write(&Change::Delete { dn: p1.clone() }).unwrap();
        // Put back, as a copy that missed the delete would hold it.
        dir.set.entries.insert(p1.tree_key(), encode(names::ENTRIES, &kept).unwrap()).unwrap();
        dir.set.uuids.insert(kept.uuid.as_bytes(), p1.tree_key()).unwrap();
        dir.meta.insert(names::ENTRY_COUNT, &4u64.to_be_bytes()).unwrap();
        // A record copied under the wrong CSN.
        let record = dir.changelog.get(Csn(2)).unwrap().unwrap();
        dir.changelog.tree.insert(Csn(900).to_key(), encode(names::CHANGELOG, &record).unwrap()).unwrap();

        let found = dir.verify(&mut |_| {}).unwrap();
        assert_eq!(
            found.problems,
            [
                "changelog record of csn 2 is stored under csn 900".to_owned(),
                "entry uid=p1,dc=example,dc=com is stored, though the changelog deleted it at csn 6".to_owned(),
            ]
        );
    }

    #[test]
    fn problems_past_the_first_fifty_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(tmp.path(), 60);
        for i in 0..60 {
            let uuid = stored(&dir, &dn(&format!("uid=p{i},dc=example,dc=com"))).uuid;
            dir.set.uuids.remove(uuid.as_bytes()).unwrap();
        }
        let found = dir.verify(&mut |_| {}).unwrap();
        assert_eq!((found.problems.len(), found.more_problems), (PROBLEMS_SAID, 10));
    }
}
