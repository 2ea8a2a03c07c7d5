//! The persist phase's feed: each recent change read from the store once, for every
//! session that sends it.
//!
//! A persist session sends the changes after its consumer's position: each changelog
//! record with the entry as it is stored, which the session's region then turns into an
//! upsert, a delete or nothing (see [`changelog`](crate::changelog)). With fifty
//! consumers, fifty sessions read the same record and entry, parsed the same DNs and
//! copied the same bytes. The feed keeps the most recent changes, each with its entry as
//! first read; sessions take them from here and only decide what each means for their
//! own region.
//!
//! The entry kept is the one stored when the first session read the change, which may be
//! older than the entry now. Any later change to it is a later record, which every
//! session sends too, so a consumer still ends at the latest state: the same as if its
//! session had read a moment earlier.

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
}

impl FedChange {
    /// The change's CSN.
    pub fn csn(&self) -> Csn {
        self.record.csn
    }

    /// The CSN of the entry as read (the change's own, or a later write's): a later
    /// write may be committed but not yet durable, and must be made durable before the
    /// entry is sent.
    pub fn entry_csn(&self) -> Option<Csn> {
        self.found.as_ref().map(|l| l.csn)
    }

    /// What a consumer of `spec` is sent for this change, given the entry as read: an
    /// upsert, a delete, or `None` if the entry never concerned that consumer (see
    /// [`changelog`](crate::changelog)).
    pub fn op_for(&self, spec: &SearchSpec) -> Result<Option<EncodedOp>> {
        let found = self.found.as_ref().map(|l| (l.key.as_slice(), l.bytes.as_ref()));
        op_for_found(self.record.uuid, self.record.csn, self.record.touches(spec), found, spec)
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
    pub fn read(
        &self,
        changelog: &Changelog,
        entries: &EntrySet,
        after: Csn,
        upto: Csn,
        max: usize,
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
        let mut read = Vec::new();
        for record in changelog.records(at, upto).take(max - out.len()) {
            let record = record?;
            let found = entries.locate_encoded(&record.uuid, Some(&record.dn.tree_key()))?;
            read.push(Arc::new(FedChange { record, found }));
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for change in &read {
            if let Some(old) = recent.changes.insert(change.csn(), Arc::clone(change)) {
                recent.bytes -= old.bytes();
            }
            recent.bytes += change.bytes();
        }
        while recent.bytes > FEED_BYTES {
            let Some((_, oldest)) = recent.changes.pop_first() else { break };
            recent.bytes -= oldest.bytes();
        }
        drop(recent);
        out.extend(read);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_changes::{add, suffix};
    use crate::Directory;
    use tether_protocol::Dn;

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
