//! A check of a stopped store, or of a backup's copy, that its trees agree with each
//! other: what an operator runs before trusting a copy to restore from.
//!
//! Besides what every entry set is held to (`consistency`):
//! - every entry lies under the suffix, has its parent (the directory is a tree), and
//!   is no newer than the store's last CSN;
//! - the kept entry count is the number of entries;
//! - every changelog record decodes, is stored under its CSN, no newer than the last
//!   CSN; and for each entry the changelog names, its newest record agrees with the
//!   entries: a deleted entry is gone, any other is stored as of that record's CSN.
//!
//! The newest record of each entry the changelog names is held in memory while the
//! entries are read (about 40 bytes an entry).

use std::collections::HashMap;

use tether_protocol::{Csn, Entry, EntryUuid};

use super::{names, Directory};
use crate::changelog::{ChangeKind, ChangeRecord};
use crate::consistency::{check_entry_set, hex, Problems, Reading};
use crate::error::Result;
use crate::record::{decode, u64_from};

/// What [`Directory::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries read.
    pub entries: u64,
    /// Changelog records read.
    pub changelog: u64,
    /// The store's last CSN.
    pub csn: Csn,
    /// What is wrong; none when the store is sound.
    pub problems: Problems,
}

impl Directory {
    /// Reads every record of the store and checks that its trees agree (see the module
    /// docs). For a store no one writes to meanwhile (a stopped provider's, a backup's
    /// copy): writes made while it reads would be found as problems. `watch` is called
    /// with the records read so far every few thousand. An error is a record sled could
    /// not read (damage), not a disagreement, which is a problem in the result.
    pub fn verify(&self, watch: &mut dyn FnMut(u64)) -> Result<Verified> {
        let csn = *self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (mut found, mut reading) = (Problems::default(), Reading::new(watch));

        // The newest record of each entry the changelog names.
        let mut newest: HashMap<EntryUuid, (Csn, ChangeKind)> = HashMap::new();
        let mut changelog = 0;
        for item in self.changelog.tree.iter() {
            let (key, value) = item?;
            reading.tick();
            changelog += 1;
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
            if newest.get(&record.uuid).is_none_or(|(seen, _)| *seen < record.csn) {
                newest.insert(record.uuid, (record.csn, record.kind));
            }
        }

        let mut each = |_: &[u8], entry: &Entry, found: &mut Problems| -> Result<()> {
            let dn = &entry.dn;
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
            match newest.remove(&entry.uuid) {
                Some((deleted, ChangeKind::Delete)) => {
                    found.found(format!("entry {dn} is stored, though the changelog deleted it at csn {deleted}"))
                }
                Some((last, _)) if last != entry.csn => found.found(format!(
                    "entry {dn} is as of csn {}, where the changelog's last change to it is csn {last}",
                    entry.csn
                )),
                _ => {}
            }
            Ok(())
        };
        let entries = check_entry_set(&self.set, &mut found, &mut reading, &mut each)?;
        let mut missing: Vec<_> =
            newest.into_iter().filter(|(_, (_, kind))| *kind != ChangeKind::Delete).map(|(u, (c, _))| (c, u)).collect();
        missing.sort();
        for (at, uuid) in missing {
            found.found(format!(
                "the changelog changed entry {uuid} at csn {at}, as its last change, but it is not stored"
            ));
        }

        let kept = self.meta.get(names::ENTRY_COUNT)?.map(|v| u64_from(names::META, &v)).transpose()?;
        if let Some(kept) = kept.filter(|kept| *kept != entries) {
            found.found(format!("the entry count kept is {kept}, where the store holds {entries} entries"));
        }
        Ok(Verified { entries, changelog, csn, problems: found })
    }
}

/// A changelog key as a CSN, or as bytes when it is none.
fn shown_csn(at: Option<Csn>, key: &[u8]) -> String {
    match at {
        Some(csn) => format!("csn {csn}"),
        None => format!("key {}", hex(key)),
    }
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
        assert!(found.problems.is_empty(), "{:?}", found.problems);
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
            found.problems.said,
            [
                r#"entry uid=p1,dc=example,dc=com is stored under another name's key "cn=stray,dc=example,dc=com""#
                    .to_owned(),
                format!(
                    r#"entry uid=p1,dc=example,dc=com: its entryUUID {} is indexed to another key, "uid=p1,dc=example,dc=com""#,
                    moved.uuid
                ),
                format!(
                    "entry cn=orphan,ou=gone,dc=example,dc=com: its entryUUID {} is not in the UUID index",
                    orphan.uuid
                ),
                "entry cn=orphan,ou=gone,dc=example,dc=com has no parent: no entry ou=gone,dc=example,dc=com"
                    .to_owned(),
                "entry uid=p0,dc=example,dc=com is as of csn 2, where the changelog's last change to it is csn 7"
                    .to_owned(),
                format!(r#"the UUID index maps {p3_uuid} to key "uid=p3,dc=example,dc=com", where no entry of it is"#),
                format!("the changelog changed entry {p3_uuid} at csn 5, as its last change, but it is not stored"),
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
            found.problems.said,
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
        assert_eq!((found.problems.said.len(), found.problems.more), (50, 10));
    }
}
