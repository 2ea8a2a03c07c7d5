//! Group commit: many writers share one flush.
//!
//! sled only makes writes durable when its log is flushed (its background flush runs
//! every 500 ms). A writer that must not acknowledge before its change is on disk calls
//! [`GroupCommit::make_durable`]: if a flush already covered its CSN it returns at once;
//! otherwise it flushes everything committed so far, so writers that queued behind one
//! flush are all covered by the next. The durable CSN is published on a
//! `tokio::sync::watch`, which is what wakes replication sessions: they never see a
//! change that a crash could still take back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tether_protocol::Csn;
use tokio::sync::watch;

use crate::error::Result;
use crate::failure::FailureLatch;

/// Shared flush state of one store.
#[derive(Debug)]
pub struct GroupCommit {
    /// Highest CSN whose transaction has committed (not necessarily durable).
    committed: AtomicU64,
    /// Highest CSN known durable; the lock serializes flushes.
    durable: Mutex<Csn>,
    /// Publishes the durable CSN to sessions.
    tx: watch::Sender<Csn>,
}

impl GroupCommit {
    /// Starts with everything up to `csn` durable (state found on open).
    pub fn new(csn: Csn) -> Self {
        let (tx, _) = watch::channel(csn);
        Self { committed: AtomicU64::new(csn.0), durable: Mutex::new(csn), tx }
    }

    /// Records that the transaction of `csn` committed.
    pub fn committed(&self, csn: Csn) {
        self.committed.fetch_max(csn.0, Ordering::SeqCst);
    }

    /// Highest committed CSN.
    pub fn last_committed(&self) -> Csn {
        Csn(self.committed.load(Ordering::SeqCst))
    }

    /// Highest durable CSN.
    pub fn last_durable(&self) -> Csn {
        *self.tx.borrow()
    }

    /// Returns once `csn` is durable, flushing `db` (watched by `failure`, see
    /// [`FailureLatch::flush`]) if no earlier flush covered it.
    /// `csn` must have committed: written by the caller, or read from the store (a
    /// refresh scan), which can happen just before its writer records it as committed.
    pub fn make_durable(&self, db: &sled::Db, failure: &FailureLatch, csn: Csn) -> Result<()> {
        let mut durable = self.durable.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *durable >= csn {
            return Ok(());
        }
        // Read before flushing: everything committed up to here is in the flushed log.
        // CSNs commit in order under the writer lock, so a committed `csn` means every
        // lower one committed too, even if the counter has not caught up with it yet.
        let target = self.last_committed().max(csn);
        failure.flush(db)?;
        *durable = target;
        self.tx.send_replace(target);
        Ok(())
    }

    /// A receiver that sees every new durable CSN.
    pub fn subscribe(&self) -> watch::Receiver<Csn> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A flush that fails makes nothing durable: the durable CSN, which wakes the
    /// sessions that send changes to consumers, stays where it was, and a writer asking
    /// again for the same CSN is not told it is durable. The store's log taken away
    /// under it (see [`FailureLatch::flush`]) is the failure here.
    #[test]
    fn a_failed_flush_makes_nothing_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = dir.path().join("db");
        let failure = FailureLatch::watched(crate::failure::STUCK_AFTER, &log);
        let commit = GroupCommit::new(Csn(1));
        let sessions = commit.subscribe();
        db.insert("k", "v").unwrap();
        commit.committed(Csn(2));
        std::fs::remove_file(&log).unwrap();
        assert!(commit.make_durable(&db, &failure, Csn(2)).is_err());
        assert_eq!(commit.last_durable(), Csn(1));
        assert!(!sessions.has_changed().unwrap(), "the sessions were woken for {:?}", *sessions.borrow());
        assert!(commit.make_durable(&db, &failure, Csn(2)).is_err(), "a second writer of CSN 2 told it is durable");
    }
}
