//! The changelog: one record per committed change, keyed by CSN, and the two ways
//! replication reads it.
//!
//! A record names the entry (UUID), what happened and the DNs it had before and after,
//! not the entry's content: the content is read from the entry set when the change is
//! sent, so the log stays small and a consumer always receives the latest state. Two
//! readers:
//! - [`Delta`]: for a refresh, every entry touched since a CSN, coalesced to one
//!   operation per entry in the order of their last change.
//! - [`Changelog::records`]: for the persist phase, record by record in CSN order, each
//!   with its own cookie; sessions read them through the [`feed`](crate::feed), which
//!   reads each record and its entry once for all of them.
//!
//! Whether an entry concerns a consumer is decided from the DNs a record mentions and
//! the entry's current state: an entry whose names never fell in the consumer's base
//! and scope is skipped; one that is in scope now arrives as an upsert; any other
//! arrives as a delete (it left the scope, was deleted, or stopped matching the filter).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sled::Tree;
use tether_protocol::encoded::EncodedOp;
use tether_protocol::{Csn, Dn, EntryUuid, ReplOp, SearchSpec};

use crate::entry_set::EntrySet;
use crate::error::Result;
use crate::record::{decode, encode};

/// Tree name used in errors.
const CHANGELOG: &str = "changelog";
/// The entries tree's name in errors (entries are read to build ops).
const ENTRIES: &str = "entries";

/// What a committed change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The entry was created.
    Add,
    /// Its attributes changed.
    Modify,
    /// It was removed.
    Delete,
    /// It was renamed or moved.
    ModDn,
}

/// One changelog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The change's CSN (also the key).
    pub csn: Csn,
    /// When it committed, in milliseconds since the Unix epoch (for `max_age` and lag).
    pub time_ms: u64,
    /// The entry it changed.
    pub uuid: EntryUuid,
    /// What happened.
    pub kind: ChangeKind,
    /// The entry's DN after the change (for a delete: the DN it had).
    pub dn: Dn,
    /// For a rename: the DN it had before.
    pub old_dn: Option<Dn>,
}

impl ChangeRecord {
    /// Whether any DN this record mentions falls in `spec`'s base and scope.
    pub(crate) fn touches(&self, spec: &SearchSpec) -> bool {
        spec.scope.contains(&spec.base, &self.dn)
            || self.old_dn.as_ref().is_some_and(|old| spec.scope.contains(&spec.base, old))
    }
}

/// The changelog tree.
#[derive(Debug, Clone)]
pub struct Changelog {
    /// CSN key -> encoded [`ChangeRecord`].
    pub(crate) tree: Tree,
}

impl Changelog {
    /// Encodes a record for insertion inside a write transaction.
    pub(crate) fn encode(record: &ChangeRecord) -> Result<Vec<u8>> {
        encode(CHANGELOG, record)
    }

    /// Records with `after < csn <= upto`, in CSN order.
    pub fn records(&self, after: Csn, upto: Csn) -> impl Iterator<Item = Result<ChangeRecord>> {
        let start = after.next().to_key();
        let end = upto.to_key();
        let range = if after >= upto { self.tree.range(start..start) } else { self.tree.range(start..=end) };
        range.map(|item| {
            let (_, v) = item?;
            decode(CHANGELOG, &v)
        })
    }

    /// The oldest retained record's CSN, if any.
    pub fn oldest(&self) -> Result<Option<Csn>> {
        Ok(self.tree.first()?.and_then(|(k, _)| Csn::from_key(&k)))
    }

    /// The newest record's CSN, if any.
    pub fn newest(&self) -> Result<Option<Csn>> {
        Ok(self.tree.last()?.and_then(|(k, _)| Csn::from_key(&k)))
    }

    /// The record of `csn`.
    pub fn get(&self, csn: Csn) -> Result<Option<ChangeRecord>> {
        self.tree.get(csn.to_key())?.map(|v| decode(CHANGELOG, &v)).transpose()
    }

    /// Removes records with `csn <= upto`; returns how many went.
    pub(crate) fn remove_through(&self, upto: Csn) -> Result<u64> {
        let mut removed = 0;
        let end = upto.to_key();
        for item in self.tree.range(..=end) {
            let (key, _) = item?;
            self.tree.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// A coalesced delta over `(after, upto]` for `spec` (see [`Delta`]).
    pub fn delta(&self, after: Csn, upto: Csn, spec: &SearchSpec) -> Result<Delta> {
        // uuid -> (last csn, whether any record's DN fell in scope, last DN key)
        let mut touched: HashMap<EntryUuid, (Csn, bool, Vec<u8>)> = HashMap::new();
        for record in self.records(after, upto) {
            let record = record?;
            let in_scope = record.touches(spec);
            let slot = touched.entry(record.uuid).or_insert((record.csn, false, Vec::new()));
            slot.0 = record.csn;
            slot.1 |= in_scope;
            slot.2 = record.dn.tree_key();
        }
        let mut order: Vec<Changed> =
            touched.into_iter().map(|(uuid, (csn, named, key))| Changed { csn, uuid, named, key }).collect();
        order.sort_unstable_by_key(|c| c.csn);
        Ok(Delta { order: order.into_iter(), spec: spec.clone(), newest_read: Csn::ZERO })
    }
}

/// What to send about `uuid` given its current state, `found` where and as it is stored
/// (`None` if it no longer exists; looked up at the DN key its last change left it at
/// first, which finds it without the UUID index unless it moved again since). The entry
/// goes as stored when the region takes whole entries, and is decoded, filtered and
/// trimmed otherwise.
///
/// `state` is the CSN of the state read: the entry's own, or for an entry gone one at
/// or after the change that removed it. A delete the state calls for carries it, not the
/// change's `csn`: the state may be a later write than the change (the entry deleted,
/// or moved out of the region, since), and a consumer that applies the delete holds
/// that later state, past a cookie at the change; the CSN tells it so (it records how
/// far past its cookie it went, which a provider restored from a copy made before that
/// write does not recognize).
pub(crate) fn op_for_found(
    uuid: EntryUuid,
    csn: Csn,
    named_in_scope: bool,
    found: Option<(&[u8], &[u8])>,
    state: Csn,
    spec: &SearchSpec,
) -> Result<Option<EncodedOp>> {
    let csn = csn.max(state);
    let Some((key, bytes)) = found else {
        return Ok(named_in_scope.then_some(EncodedOp::Delete { uuid, csn }));
    };
    let (in_reach, content) = if spec.takes_whole_entries() {
        let in_reach = spec.scope.contains_key(&spec.base.tree_key(), key);
        (in_reach, in_reach.then(|| bytes.to_vec()))
    } else {
        let entry: tether_protocol::Entry = decode(ENTRIES, bytes)?;
        let in_reach = spec.scope.contains(&spec.base, &entry.dn);
        let content = match spec.contains(&entry) {
            true => Some(encode(ENTRIES, &spec.project(entry))?),
            false => None,
        };
        (in_reach, content)
    };
    Ok(match content {
        Some(bytes) => Some(EncodedOp::Upsert(bytes)),
        None if named_in_scope || in_reach => Some(EncodedOp::Delete { uuid, csn }),
        None => None,
    })
}

/// Decodes an op read from the store (for callers that want entries, not bytes).
fn decoded(op: &EncodedOp) -> Result<ReplOp> {
    op.decode().map_err(|source| crate::error::StoreError::Codec { tree: ENTRIES, source })
}

/// One entry of a [`Delta`].
#[derive(Debug)]
struct Changed {
    /// Its last change in the range.
    csn: Csn,
    /// The entry.
    uuid: EntryUuid,
    /// Whether any of its records in the range named a DN in the consumer's scope.
    named: bool,
    /// The DN key its last change left it at.
    key: Vec<u8>,
}

/// A coalesced delta: one operation per entry changed in the range, in the order of each
/// entry's last change, with the entry's current content. Memory is one small slot per
/// changed entry (not per change, not per entry content); contents are read as the
/// batches are drawn.
#[derive(Debug)]
pub struct Delta {
    /// One per changed entry, in CSN order.
    order: std::vec::IntoIter<Changed>,
    /// The consumer's region.
    spec: SearchSpec,
    /// The newest CSN of any entry read so far (see [`Delta::newest_read`]).
    newest_read: Csn,
}

impl Delta {
    /// Entries left to examine.
    pub fn remaining(&self) -> usize {
        self.order.len()
    }

    /// Up to `max` operations; an empty batch means the delta is exhausted. `committed`
    /// is the store's newest committed CSN (see [`Delta::next_encoded`]).
    pub fn next_batch(&mut self, entries: &EntrySet, max: usize, committed: &dyn Fn() -> Csn) -> Result<Vec<ReplOp>> {
        self.next_encoded(entries, max, usize::MAX, committed)?.iter().map(decoded).collect()
    }

    /// [`Delta::next_batch`] with entries as stored, ready for a message, ending early
    /// once the operations hold `max_bytes` or more (always at least one): counted in
    /// operations alone, a batch of entries near the frame limit held `max` of them at
    /// once. An entry found gone was removed at a CSN nothing records any more;
    /// `committed`, asked once the batch's entries are read, gives one at or after it
    /// (the store's newest committed CSN: see `op_for_found` for why its deletes carry
    /// it).
    pub fn next_encoded(
        &mut self,
        entries: &EntrySet,
        max: usize,
        max_bytes: usize,
        committed: &dyn Fn() -> Csn,
    ) -> Result<Vec<EncodedOp>> {
        let mut batch = Vec::new();
        let mut gone = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < max && bytes < max_bytes {
            let Some(c) = self.order.next() else { break };
            let found = entries.locate_encoded(&c.uuid, Some(&c.key))?;
            let state = match &found {
                Some(l) => l.csn,
                None => c.csn,
            };
            self.newest_read = self.newest_read.max(state);
            let located = found.as_ref().map(|l| (l.key.as_slice(), l.bytes.as_ref()));
            if let Some(op) = op_for_found(c.uuid, c.csn, c.named, located, state, &self.spec)? {
                if found.is_none() {
                    gone.push(batch.len());
                }
                bytes = bytes.saturating_add(op.size());
                batch.push(op);
            }
        }
        if !gone.is_empty() {
            let removed_by = committed();
            self.newest_read = self.newest_read.max(removed_by);
            for i in gone {
                if let Some(EncodedOp::Delete { csn, .. }) = batch.get_mut(i) {
                    *csn = (*csn).max(removed_by);
                }
            }
        }
        Ok(batch)
    }

    /// The newest CSN of any entry read so far (for an entry found gone, the one its
    /// delete carries). Entries are read as they are now, so this may be a later write
    /// than the delta's range, committed but not yet durable: the caller makes it
    /// durable before sending what it read.
    pub fn newest_read(&self) -> Csn {
        self.newest_read
    }
}

/// How long the changelog is kept (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Hard cap on retained records; trimming past a held consumer happens only here.
    pub max_changes: Option<u64>,
    /// Records older than this are trimmed unless a recently seen consumer still needs them.
    pub max_age: Option<Duration>,
    /// A consumer seen within this window holds back age-based trimming.
    pub hold_for_consumers: Duration,
    /// When the provider started (milliseconds since the epoch; 0 for no such grace):
    /// a consumer's absence is counted from then at the earliest. While the provider
    /// was down no consumer could connect, so a provider stopped for longer than the
    /// window would otherwise reload every consumer not exactly caught up, pollers
    /// that never stopped polling included, the moment it came back.
    pub up_since_ms: u64,
}

/// What a trim did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrimReport {
    /// Records removed.
    pub removed: u64,
    /// The new floor: a cookie at or above it can still get a delta.
    pub floor: Csn,
    /// The consumers (as the provider keys them: agreement and consumer id) whose
    /// positions fell below the floor and were forgotten: each gets a present refresh
    /// when it comes back, and an operator wondering why asks the log who they were.
    pub forgotten: Vec<String>,
}
