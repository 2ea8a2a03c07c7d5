//! A check of a stopped consumer's replicas, or of a copy of its store, that each
//! replica's trees agree with each other (`consistency`'s rules for an entry set), and
//! that the entry count kept for its active generation is the number of its entries.
//!
//! Replicas are not held to the directory's rules (a filtered region may hold a child
//! without its parent), and a shadow being filled is partial by design: only the active
//! generation, what readers see and the cookie describes, is checked.

use tether_protocol::Cookie;

use super::ReplicaStore;
use crate::consistency::{check_entry_set, Problems, Reading};
use crate::error::{Result, StoreError};

/// What [`ReplicaStore::verify`] found of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaVerified {
    /// The agreement whose replica it is.
    pub name: String,
    /// Entries read in its active generation.
    pub entries: u64,
    /// The position its entries reflect.
    pub cookie: Option<Cookie>,
    /// What is wrong; none when the replica is sound.
    pub problems: Problems,
}

impl ReplicaStore {
    /// Reads every entry of every replica's active generation and checks its trees
    /// agree (see the module docs), in the order of the agreements' names. For a store
    /// no one writes to meanwhile (a stopped consumer's). `watch` is called with the
    /// records read so far every few thousand. An error is a record sled could not read
    /// (damage), not a disagreement, which is a problem in the result.
    pub fn verify(&self, watch: &mut dyn FnMut(u64)) -> Result<Vec<ReplicaVerified>> {
        let mut reading = Reading::new(watch);
        let mut all = Vec::new();
        for name in self.names()? {
            let state = self.state(&name)?.ok_or_else(|| StoreError::NoSuchReplica(name.clone()))?;
            let mut problems = Problems::default();
            let set = self.set_for(&name, state.active_gen)?;
            let entries = check_entry_set(&set, &mut problems, &mut reading, &mut |_, _, _| Ok(()))?;
            // No count kept: a store from before counts, which `len` counts itself.
            if let Some(kept) = self.count(&name, state.active_gen)?.filter(|kept| *kept != entries) {
                problems.found(format!("the entry count kept is {kept}, where the replica holds {entries} entries"));
            }
            all.push(ReplicaVerified { name, entries, cookie: state.cookie, problems });
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{Csn, Dn, Entry, EntryUuid, HistoryId, ReplOp};

    use super::*;
    use crate::record::encode;

    fn person(uid: &str, csn: u64) -> Entry {
        let dn = Dn::parse(&format!("uid={uid},ou=people,dc=example,dc=com")).unwrap();
        let mut attrs = tether_protocol::Attributes::new();
        attrs.add("objectClass", [tether_protocol::Value::from("person")]).unwrap();
        attrs.add("sn", [tether_protocol::Value::from(uid)]).unwrap();
        Entry { dn, uuid: EntryUuid::new_random(), csn: Csn(csn), attrs }
    }

    #[test]
    fn replicas_applied_through_the_store_are_sound_and_a_torn_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(tmp.path()).unwrap();
        let cookie = Cookie { history: HistoryId::new_random(), csn: Csn(3) };
        // A child without its parent: a replica's region may hold that.
        let people = store.replica("people").unwrap();
        let ops: Vec<ReplOp> = (1..=3).map(|i| ReplOp::Upsert(person(&format!("p{i}"), i))).collect();
        people.apply(&ops, Some(cookie)).unwrap();
        let admins = store.replica("admins").unwrap();
        admins.apply(&[ReplOp::Upsert(person("a", 1))], None).unwrap();

        let found = store.verify(&mut |_| {}).unwrap();
        assert_eq!(
            found.iter().map(|r| (r.name.as_str(), r.entries, r.problems.is_empty())).collect::<Vec<_>>(),
            [("admins", 1, true), ("people", 3, true)]
        );
        assert_eq!(found[1].cookie, Some(cookie));

        // An entry written past the store's transactions: in no index, and not counted.
        let set = people.entries().unwrap();
        let stray = person("stray", 9);
        set.entries.insert(stray.dn.tree_key(), encode("entries", &stray).unwrap()).unwrap();
        let found = store.verify(&mut |_| {}).unwrap();
        assert!(found[0].problems.is_empty());
        assert_eq!(
            found[1].problems.said,
            [
                format!(
                    "entry uid=stray,ou=people,dc=example,dc=com: its entryUUID {} is not in the UUID index",
                    stray.uuid
                ),
                "the entry count kept is 3, where the replica holds 4 entries".to_owned(),
            ]
        );
    }
}
