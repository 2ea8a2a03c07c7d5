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

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// Shared by every handle of one open store; clones observe the same latch.
#[derive(Debug, Clone)]
pub struct FailureLatch {
    /// The first storage failure's text, once there is one.
    tx: Arc<watch::Sender<Option<Arc<str>>>>,
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
                    *latched = Some(Arc::from(error.to_string()));
                }
                first
            });
        }
    }

    /// The latched failure, if the store has failed.
    pub fn latched(&self) -> Option<Arc<str>> {
        self.tx.borrow().clone()
    }

    /// Waits until the store fails, and returns the failure.
    pub async fn failed(&self) -> Arc<str> {
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
        assert_eq!(latch.latched().as_deref(), Some(first.as_str()), "the first failure stays");
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(&*woken, first);
        // Waiting after the fact returns at once.
        assert_eq!(&*latch.failed().await, first);
    }
}
