//! Replication operations: what a provider sends a consumer to change its replica.
//!
//! Replication moves entry *states* addressed by [`EntryUuid`], not client requests
//! addressed by DN: applying a state whose CSN is not newer than the local one is a
//! no-op, which is what makes every replay after a crash or reconnect harmless.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cookie::Cookie;
use crate::csn::Csn;
use crate::entry::{Entry, EntryUuid};

/// One replicated state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplOp {
    /// The entry now looks like this (added, modified, renamed or moved into scope).
    Upsert(Entry),
    /// The entry is gone from the consumer's scope (deleted, or moved/changed out of it).
    Delete {
        /// Which entry.
        uuid: EntryUuid,
        /// The CSN of the change that removed it, or one after it: a provider that finds
        /// the entry gone since the change it sends knows only that the removal is at
        /// or before its newest write.
        csn: Csn,
    },
}

impl ReplOp {
    /// The entry the operation is about.
    pub fn uuid(&self) -> EntryUuid {
        match self {
            ReplOp::Upsert(e) => e.uuid,
            ReplOp::Delete { uuid, .. } => *uuid,
        }
    }

    /// The CSN of the state it carries.
    pub fn csn(&self) -> Csn {
        match self {
            ReplOp::Upsert(e) => e.csn,
            ReplOp::Delete { csn, .. } => *csn,
        }
    }
}

/// Which refresh the provider chose for a session (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefreshKind {
    /// No usable cookie: every in-scope entry; the consumer drops what it did not get.
    Full,
    /// The cookie is inside the retained changelog: only what changed since.
    Delta,
    /// The cookie is older than the changelog: changed entries in full, unchanged ones
    /// named by UUID; the consumer drops what was not named.
    Present,
}

impl RefreshKind {
    /// Every kind.
    pub const ALL: [RefreshKind; 3] = [RefreshKind::Full, RefreshKind::Delta, RefreshKind::Present];

    /// The name used in status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::Full => "full",
            RefreshKind::Delta => "delta",
            RefreshKind::Present => "present",
        }
    }

    /// Whether this refresh replaces the whole replica (and so goes through a shadow).
    pub fn replaces_replica(self) -> bool {
        !matches!(self, RefreshKind::Delta)
    }
}

/// Where an interrupted full or present refresh stood, so that a consumer reconnecting
/// after a crash or a lost link continues it instead of scanning the region again.
///
/// The provider makes one after each page of the scan (`RefreshProgress`); the consumer
/// keeps the newest with the shadow it is building and hands it back unchanged in its
/// `Hello`. The provider honours it only if it can still finish the refresh correctly:
/// same store, and a changelog that still reaches back to `start`, because every change
/// since the scan began is re-sent by the catch-up delta that follows every scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The refresh being continued: full or present, or a delta (then the position a
    /// replica applied past its cookie, see `docs/protocol.md`).
    pub kind: RefreshKind,
    /// Present refresh: entries whose CSN is at or below this go as UUIDs only (the
    /// consumer's cookie when the refresh began). Zero for a full refresh.
    pub since: Csn,
    /// The provider store and its durable CSN when the scan began: the catch-up delta
    /// starts here.
    pub start: Cookie,
    /// The provider's scan position, opaque to the consumer: the scan continues after
    /// it. `None` once the scan is complete and only the catch-up delta remains.
    pub cursor: Option<Vec<u8>>,
}

impl fmt::Display for RefreshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer's metrics write a `refreshes_total` series for each kind in
    /// `RefreshKind::ALL` from the first scrape: a kind left out of it has no series, and
    /// `increase()` over it sees nothing, until a restart after the fix.
    #[test]
    fn every_refresh_kind_is_in_the_list_the_metrics_write() {
        let named = [(RefreshKind::Full, "full"), (RefreshKind::Delta, "delta"), (RefreshKind::Present, "present")];
        for (kind, name) in named {
            // A kind added without a place here does not compile.
            match kind {
                RefreshKind::Full | RefreshKind::Delta | RefreshKind::Present => assert_eq!(kind.as_str(), name),
            }
        }
        assert_eq!(RefreshKind::ALL.to_vec(), named.map(|(kind, _)| kind).to_vec());
    }
}
