//! The store's failure latch.
//!
//! sled 0.34 keeps the first I/O error it meets while writing its log (a full disk, a
//! file-size limit, a failing device) and returns it from every later read, write and
//! flush of that open database: freeing space does not bring it back, only reopening
//! does, which recovers everything that reached the disk. So a storage I/O error is
//! not a failed operation to retry but the end of this handle. The latch records the
//! first one, so the process learns at once that its store is gone (a provider stops,
//! a consumer refuses to restart agreements on it) instead of each session, write and
//! command finding out separately and retrying in a loop.
//!
//! sled's report that a page it read is corrupt is latched too: the damage is on disk,
//! so every read of that page fails again, and a provider that went on acknowledging
//! writes into a store it can no longer read back would serve its consumers errors in a
//! loop. Unlike an I/O error it is not cured by fixing the device and reopening, which
//! the failure says ([`StoreFailure::damaged`]), so the process can name the way out:
//! a backup, or a rebuild from a replica.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// The first storage failure of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// The error's text.
    text: Arc<str>,
    /// Whether sled found the store's files damaged, rather than failing to write them.
    damaged: bool,
}

impl StoreFailure {
    /// Whether the store's files are damaged (sled read a corrupt page): what was on
    /// the disk is not all there any more, so the way out is a backup or a rebuild from
    /// a replica, not freeing space and restarting.
    pub fn damaged(&self) -> bool {
        self.damaged
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Shared by every handle of one open store; clones observe the same latch.
#[derive(Debug, Clone)]
pub struct FailureLatch {
    /// The first storage failure, once there is one.
    tx: Arc<watch::Sender<Option<StoreFailure>>>,
}

impl Default for FailureLatch {
    fn default() -> Self {
        Self { tx: Arc::new(watch::channel(None).0) }
    }
}

impl FailureLatch {
    /// Passes `result` through, latching its error if it is a storage failure.
    pub fn observe<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.note(e);
        }
        result
    }

    /// Latches `error` if it is a storage failure; the first one wins.
    pub fn note(&self, error: &StoreError) {
        if error.is_fatal() {
            self.tx.send_if_modified(|latched| {
                let first = latched.is_none();
                if first {
                    *latched = Some(StoreFailure { text: Arc::from(error.to_string()), damaged: error.is_damage() });
                }
                first
            });
        }
    }

    /// The latched failure, if the store has failed.
    pub fn latched(&self) -> Option<StoreFailure> {
        self.tx.borrow().clone()
    }

    /// Waits until the store fails, and returns the failure.
    pub async fn failed(&self) -> StoreFailure {
        let mut rx = self.tx.subscribe();
        let latched = match rx.wait_for(Option::is_some).await {
            Ok(latched) => latched.clone(),
            // The sender lives in `self`, so it cannot close while this waits.
            Err(_) => None,
        };
        match latched {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::error::Refusal;

    fn io(kind: std::io::ErrorKind) -> StoreError {
        StoreError::Sled(sled::Error::Io(std::io::Error::new(kind, format!("{kind:?}"))))
    }

    #[tokio::test]
    async fn the_first_storage_failure_is_latched_and_wakes_the_waiters() {
        let latch = FailureLatch::default();
        let waiter = tokio::spawn({
            let latch = latch.clone();
            async move { latch.failed().await }
        });
        // Refusals and corrupt records are errors of one request, not of the store.
        let refused: Result<()> =
            Err(StoreError::Refused(Refusal::NoSuchObject(tether_protocol::Dn::parse("cn=x").unwrap())));
        assert!(latch.observe(refused).is_err());
        latch.note(&StoreError::Corrupt("an index points at nothing".into()));
        assert_eq!(latch.latched(), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());

        let full = latch.observe::<()>(Err(io(std::io::ErrorKind::StorageFull))).unwrap_err();
        latch.note(&io(std::io::ErrorKind::FileTooLarge));
        let first = full.to_string();
        let latched = latch.latched().unwrap();
        assert_eq!(latched.to_string(), first, "the first failure stays");
        assert!(!latched.damaged(), "a write that failed is not damage");
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(woken.to_string(), first);
        // Waiting after the fact returns at once.
        assert_eq!(latch.failed().await.to_string(), first);
    }

    #[tokio::test]
    async fn a_corrupt_page_is_latched_as_damage() {
        let latch = FailureLatch::default();
        let corrupt = StoreError::Sled(sled::Error::Corruption { at: None, bt: () });
        assert!(corrupt.is_fatal() && corrupt.is_damage());
        assert!(latch.observe::<()>(Err(corrupt)).is_err());
        let failure = tokio::time::timeout(Duration::from_secs(5), latch.failed()).await.unwrap();
        assert!(failure.damaged(), "{failure}");
        assert!(failure.to_string().contains("corrupt"), "{failure}");
    }
}
