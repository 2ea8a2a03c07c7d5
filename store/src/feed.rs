//! The persist phase's feed: each recent change as the writer committed it, for every
//! session that sends it.
//!
//! A persist session sends the changes after its consumer's position: each changelog
//! record with the entry as it is stored, which the session's region then turns into an
//! upsert, a delete or nothing (see [`changelog`](crate::changelog)). Read from the store,
//! that is a changelog scan, a record decoded with its DN parsed, and an entry looked up,
//! for every change and every session, all of it what the writer held in memory a moment
//! before. So the writer hands each change it commits to the feed with the record and the
//! entry bytes it wrote, and sessions at or near the newest change take them from here
//! and only decide what each means for their own region. A session behind the feed's
//! reach reads the store as before and keeps what it read for the next one.
//!
//! The entry kept may be older than the entry now: the one written by the change itself,
//! or the one stored when a session read it from the store. Any later change to it is a
//! later record, which every session sends too, so a consumer still ends at the latest
//! state: the same as if its session had read a moment earlier.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tether_protocol::encoded::EncodedOp;
use tether_protocol::{Csn, SearchSpec};

use crate::changelog::{op_for_found, ChangeRecord, Changelog};
use crate::entry_set::{EntrySet, Located};
use crate::error::Result;

/// Bytes of entries the feed keeps, at most: a few thousand changes of ordinary
/// entries, which covers sessions at or near the newest change; one far behind reads
/// from the store as before.
const FEED_BYTES: usize = 4 << 20;

/// One change with its entry as read.
#[derive(Debug)]
pub struct FedChange {
    /// The changelog record.
    record: ChangeRecord,
    /// Where the entry was stored, its record and that record's CSN; `None` if it no
    /// longer existed.
    found: Option<Located>,
    /// The CSN of the state read: the entry's, or for an entry gone one at or after its
    /// removal (see `op_for_found`).
    state: Csn,
}

impl FedChange {
    /// A change with its entry as its writer wrote it (`None` for a delete).
    pub(crate) fn new(record: ChangeRecord, found: Option<Located>) -> Self {
        let state = found.as_ref().map_or(record.csn, |l| l.csn);
        Self { record, found, state }
    }

    /// A change with its entry as a session read it from the store: `found`, or, gone,
    /// removed at or before `removed_by`.
    fn read(record: ChangeRecord, found: Option<Located>, removed_by: Csn) -> Self {
        let state = found.as_ref().map_or(record.csn.max(removed_by), |l| l.csn);
        Self { record, found, state }
    }

    /// The change's CSN.
    pub fn csn(&self) -> Csn {
        self.record.csn
    }

    /// The CSN of the entry's state as read (the change's own, or a later write's, its
    /// removal's included): a later write may be committed but not yet durable, and
    /// must be made durable before what was read is sent.
    pub fn state_csn(&self) -> Csn {
        self.state
    }

    /// What a consumer of `spec` is sent for this change, given the entry as read: an
    /// upsert, a delete, or `None` if the entry never concerned that consumer (see
    /// [`changelog`](crate::changelog)).
    pub fn op_for(&self, spec: &SearchSpec) -> Result<Option<EncodedOp>> {
        let found = self.found.as_ref().map(|l| (l.key.as_slice(), l.bytes.as_ref()));
        op_for_found(self.record.uuid, self.record.csn, self.record.touches(spec), found, self.state, spec)
    }

    fn bytes(&self) -> usize {
        self.found.as_ref().map_or(0, |l| l.key.len() + l.bytes.len())
    }
}

/// The most recent changes read, by CSN.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    changes: BTreeMap<Csn, Arc<FedChange>>,
    bytes: usize,
}

impl Feed {
    /// Changes with `after < csn <= upto`, at most `max`, in CSN order: from the feed
    /// while it has them in sequence, then from the store (and kept for the next session).
    /// `committed` gives the store's newest committed CSN, for entries read gone.
    pub fn read(
        &self,
        changelog: &Changelog,
        entries: &EntrySet,
        after: Csn,
        upto: Csn,
        max: usize,
        committed: &dyn Fn() -> Csn,
    ) -> Result<Vec<Arc<FedChange>>> {
        let mut out = Vec::new();
        let mut at = after;
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            while out.len() < max && at < upto {
                let Some(change) = recent.changes.get(&at.next()) else { break };
                out.push(Arc::clone(change));
                at = at.next();
            }
        }
        if out.len() == max || at >= upto {
            return Ok(out);
        }
        // Read outside the lock: two sessions missing together read twice, and both
        // keep the same change.
        let mut looked = Vec::new();
        for record in changelog.records(at, upto).take(max - out.len()) {
            let record = record?;
            let found = entries.locate_encoded(&record.uuid, Some(&record.dn.tree_key()))?;
            looked.push((record, found));
        }
        // Asked once every entry is read, so that it is at or after any removal seen.
        let removed_by = looked.iter().any(|(_, found)| found.is_none()).then(committed).unwrap_or(Csn::ZERO);
        let read: Vec<Arc<FedChange>> =
            looked.into_iter().map(|(record, found)| Arc::new(FedChange::read(record, found, removed_by))).collect();
        self.keep(read.iter().cloned());
        out.extend(read);
        Ok(out)
    }

    /// Keeps `changes` for the sessions to come, dropping the oldest kept past
    /// [`FEED_BYTES`]. A change kept already is replaced: both versions lead a consumer to
    /// the same end (see the module docs).
    pub fn keep(&self, changes: impl IntoIterator<Item = Arc<FedChange>>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            recent.bytes += change.bytes();
            if let Some(old) = recent.changes.insert(change.csn(), change) {
                recent.bytes -= old.bytes();
            }
        }
        while recent.bytes > FEED_BYTES {
            let Some((_, oldest)) = recent.changes.pop_first() else { break };
            recent.bytes -= oldest.bytes();
        }
    }

    /// Drops every change kept, as if every session were behind the feed's reach.
    #[cfg(test)]
    pub(crate) fn forget(&self) {
        *self.recent.lock().unwrap() = Recent::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_changes::{add, suffix};
    use crate::Directory;
    use tether_protocol::{Change, Dn, Filter, ModOp, Modification, Rdn, Scope, Value};

    /// A change read from the store whose entry is gone since, deleted or moved out of
    /// the region by a later write, is sent as a delete carrying that later write's CSN
    /// (or one after it), not the change's: the consumer then holds a state past the
    /// cookie that comes with the change, and says so (found by a walkthrough: a
    /// provider restored from a snapshot taken before the later write resumed it by
    /// delta, and the entry stayed missing).
    #[test]
    fn a_change_whose_entry_is_gone_since_is_a_delete_at_or_after_the_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let dn = |s: &str| Dn::parse(s).unwrap();
        let people = "ou=people,dc=example,dc=com";
        let person = |uid: &str| {
            add(&format!("uid={uid},{people}"), &[("objectClass", "person"), ("uid", uid), ("cn", uid), ("sn", "In")])
        };
        let sn = |uid: &str, sn: &str| Change::Modify {
            dn: dn(&format!("uid={uid},{people}")),
            mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from(sn)] }],
        };
        for change in [suffix(), add(people, &[("objectClass", "organizationalUnit"), ("ou", "people")])] {
            d.write(&change).unwrap();
        }
        d.write(&person("ann")).unwrap();
        let first = d.write(&sn("ann", "Still in")).unwrap().csn;
        d.write(&person("bob")).unwrap();
        let second = d.write(&sn("bob", "Still in")).unwrap().csn;
        let removed = d.write(&Change::Delete { dn: dn(&format!("uid=ann,{people}")) }).unwrap().csn;
        let moved = d.write(&sn("bob", "Out")).unwrap().csn;
        d.feed.forget();
        let spec = SearchSpec {
            base: dn(people),
            scope: Scope::One,
            filter: Filter::parse("(!(sn=Out))").unwrap(),
            attrs: Vec::new(),
        };
        let read = d.recent_changes(Csn(first.0 - 1), first, 1).unwrap();
        assert!(read[0].state_csn() >= removed, "{:?}", read[0]);
        match read[0].op_for(&spec).unwrap() {
            Some(EncodedOp::Delete { csn, .. }) => assert!(csn >= removed, "{csn} < {removed}"),
            other => panic!("a delete, not {other:?}"),
        }
        let read = d.recent_changes(Csn(second.0 - 1), second, 1).unwrap();
        match read[0].op_for(&spec).unwrap() {
            Some(EncodedOp::Delete { csn, .. }) => assert_eq!(csn, moved, "the state that took it out"),
            other => panic!("a delete, not {other:?}"),
        }
        // The delta reads the same way.
        let mut delta = d.changelog().delta(Csn(first.0 - 1), second, &spec).unwrap();
        let ops = delta.next_encoded(d.entries(), 10, usize::MAX, &|| d.newest_committed()).unwrap();
        let csns: Vec<Csn> = ops
            .iter()
            .map(|op| match op {
                EncodedOp::Delete { csn, .. } => *csn,
                other => panic!("a delete, not {other:?}"),
            })
            .collect();
        assert!(csns.len() == 2 && csns[0] >= removed && csns[1] == moved, "{csns:?}");
        assert!(delta.newest_read() >= moved, "made durable before it is sent");
    }

    /// A read that takes its first changes from the feed and the rest from the store
    /// goes on in the store after the last change the feed gave, so that each change
    /// comes once: the feed can hold the head of a range and not its tail when a session
    /// behind its reach kept what it read there.
    #[test]
    fn a_read_partly_from_the_feed_returns_each_change_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        for uid in ["a", "b", "c", "d"] {
            let dn = format!("uid={uid},dc=example,dc=com");
            d.write(&add(&dn, &[("objectClass", "person"), ("cn", uid), ("sn", uid)])).unwrap();
        }
        let upto = d.durable_csn();
        d.feed.forget();
        // A session at 2 reads one change from the store, which the feed keeps.
        assert_eq!(d.recent_changes(Csn(2), Csn(3), 1).unwrap()[0].csn(), Csn(3));
        let csns: Vec<u64> = d.recent_changes(Csn(2), upto, 10).unwrap().iter().map(|c| c.csn().0).collect();
        assert_eq!(csns, (3..=upto.0).collect::<Vec<_>>());
    }

    #[test]
    fn a_committed_change_is_fed_as_written_and_sends_what_the_store_would() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let dn = |s: &str| Dn::parse(s).unwrap();
        let people = "ou=people,dc=example,dc=com";
        let ann = "uid=ann,ou=people,dc=example,dc=com";
        let modify = |sn: &str| Change::Modify {
            dn: dn(ann),
            mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from(sn)] }],
        };
        let rename = Change::ModDn {
            dn: dn(ann),
            new_rdn: Rdn::parse("uid=anne").unwrap(),
            delete_old_rdn: true,
            new_superior: Some(dn("dc=example,dc=com")),
        };
        let anne = "uid=anne,dc=example,dc=com";
        let changes = [
            suffix(),
            add(people, &[("objectClass", "organizationalUnit"), ("ou", "people")]),
            add(ann, &[("objectClass", "person"), ("uid", "ann"), ("cn", "Ann"), ("sn", "One")]),
            modify("Two"),
            rename,
            Change::Delete { dn: dn(anne) },
        ];
        // Whole entries, a filtered and trimmed region, and one the rename leaves.
        let specs = [
            SearchSpec::subtree(dn("dc=example,dc=com")),
            SearchSpec {
                base: dn("dc=example,dc=com"),
                scope: Scope::Subtree,
                filter: Filter::parse("(sn=Two)").unwrap(),
                attrs: vec!["cn".into()],
            },
            SearchSpec::subtree(dn(people)),
        ];
        for (i, change) in changes.iter().enumerate() {
            // One alone, the rest as a group of one (the pipelined path).
            let csn = if i == 0 {
                d.write(change).unwrap().csn
            } else {
                d.write_group(std::slice::from_ref(change)).remove(0).unwrap().csn
            };
            d.sync(csn).unwrap();
            let fed = {
                let recent = d.feed.recent.lock().unwrap();
                Arc::clone(recent.changes.get(&csn).expect("the writer fed its change"))
            };
            let served = d.recent_changes(Csn(csn.0 - 1), csn, 1).unwrap();
            assert!(Arc::ptr_eq(&served[0], &fed), "a session at the newest change reads no store");
            // The same change read from the store, as a session behind the feed does.
            d.feed.forget();
            let read = d.recent_changes(Csn(csn.0 - 1), csn, 1).unwrap();
            assert!(!Arc::ptr_eq(&read[0], &fed));
            assert_eq!(fed.record, read[0].record);
            assert_eq!(fed.state_csn(), read[0].state_csn());
            for spec in &specs {
                assert_eq!(fed.op_for(spec).unwrap(), read[0].op_for(spec).unwrap(), "change {i}, {spec:?}");
            }
        }
    }

    #[test]
    fn a_change_is_read_once_for_every_session_and_the_oldest_go_past_the_byte_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        // 40 entries of 256 KiB: 10 MiB, more than the feed keeps.
        let big = "x".repeat(256 << 10);
        for i in 0..40 {
            let uid = format!("u{i}");
            let dn = format!("uid={uid},dc=example,dc=com");
            d.write(&add(&dn, &[("objectClass", "person"), ("cn", &uid), ("sn", &uid), ("description", &big)]))
                .unwrap();
        }
        let upto = d.durable_csn();
        let first = d.recent_changes(Csn::ZERO, upto, 1000).unwrap();
        let csns: Vec<u64> = first.iter().map(|c| c.csn().0).collect();
        assert_eq!(csns, (1..=41).collect::<Vec<_>>());
        // A session behind reads the recent part from the feed.
        let tail = d.recent_changes(Csn(upto.0 - 3), upto, 2).unwrap();
        assert_eq!(tail.len(), 2);
        assert!(Arc::ptr_eq(&tail[0], &first[38]) && Arc::ptr_eq(&tail[1], &first[39]), "read once");
        {
            let recent = d.feed.recent.lock().unwrap();
            assert!(recent.bytes <= FEED_BYTES, "{} bytes kept", recent.bytes);
            assert_eq!(recent.bytes, recent.changes.values().map(|c| c.bytes()).sum::<usize>());
        }
        // The oldest went past the limit, and are read from the store again.
        let oldest = d.recent_changes(Csn::ZERO, upto, 1).unwrap();
        assert_eq!(oldest[0].csn(), Csn(1));
        assert!(!Arc::ptr_eq(&oldest[0], &first[0]), "evicted");
        assert_eq!(
            oldest[0].op_for(&SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())).unwrap(),
            first[0].op_for(&SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())).unwrap()
        );
    }
}
