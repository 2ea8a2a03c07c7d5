//! Which cookies describe this store's own past.
//!
//! A CSN names a position only within one line of history. An operator can copy a
//! stopped provider's store and later restore the copy (a backup, a file-system or VM
//! snapshot); the restored provider then gives the CSNs after the copy to other changes
//! than the ones its consumers may already hold, and a consumer resumed by delta from such
//! a CSN would skip the new changes below it and keep the lost ones, for good.
//!
//! So cookies name a [`HistoryId`] as well as a CSN. The provider begins a new history
//! every time it starts serving ([`Directory::begin_history`](crate::Directory::begin_history)),
//! recording where the previous one ended. A cookie is ours when it names the current
//! history at or below the durable CSN, or an ended one at or below its end. A restored
//! copy knows only the histories begun before it was taken, and the last of them ends,
//! in the copy, where the copy ends: a consumer that followed the original further
//! presents a history the copy never heard of, or a CSN past the end, and gets a full
//! refresh. One that stopped before the copy was taken still resumes by delta, and so
//! does every consumer across an ordinary restart.
//!
//! The first history of a store is its [`StoreId`], so cookies issued before histories
//! were kept stay valid.

use std::sync::RwLock;

use sled::transaction::{ConflictableTransactionError, Transactional};
use sled::{Db, Tree};
use tether_protocol::{Cookie, Csn, HistoryId, StoreId};

use crate::error::{Result, StoreError};
use crate::record::u64_from;

/// Tree and key names; part of the on-disk format.
mod names {
    /// Ended history id (16 bytes) -> its last CSN (8 bytes, big-endian).
    pub const ENDED: &str = "dir/histories";
    /// Meta key of the current history id.
    pub const CURRENT: &[u8] = b"history";
}

/// The current history and the ended ones.
#[derive(Debug)]
pub(crate) struct Histories {
    /// Ended history id -> last CSN.
    ended: Tree,
    /// The history this store's writes are in now.
    current: RwLock<HistoryId>,
}

impl Histories {
    /// Reads the histories of the store whose meta tree is `meta`.
    pub(crate) fn open(db: &Db, meta: &Tree, store_id: StoreId) -> Result<Self> {
        let current = match meta.get(names::CURRENT)? {
            Some(id) => {
                HistoryId(id.as_ref().try_into().map_err(|_| StoreError::Corrupt("history id is not 16 bytes".into()))?)
            }
            None => store_id.into(),
        };
        Ok(Self { ended: db.open_tree(names::ENDED)?, current: RwLock::new(current) })
    }

    /// The history new cookies name.
    pub(crate) fn current(&self) -> HistoryId {
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the current history at `end` and begins a new one, in one transaction with
    /// `meta`; durable once the caller flushes.
    pub(crate) fn begin(&self, meta: &Tree, end: Csn) -> Result<HistoryId> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = HistoryId::new_random();
        (meta, &self.ended).transaction(|(meta, ended)| {
            ended.insert(&current.0, &end.0.to_be_bytes())?;
            meta.insert(names::CURRENT, &next.0)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        *current = next;
        Ok(next)
    }

    /// Whether `cookie` is a position in this store's own past, `durable` being the
    /// newest durable CSN of the current history.
    pub(crate) fn contains(&self, cookie: &Cookie, durable: Csn) -> Result<bool> {
        if cookie.history == self.current() {
            return Ok(cookie.csn <= durable);
        }
        match self.ended.get(cookie.history.0)? {
            Some(end) => Ok(cookie.csn.0 <= u64_from(names::ENDED, &end)?),
            None => Ok(false),
        }
    }

    /// How many histories have ended: the provider's starts since histories were kept.
    pub(crate) fn ended(&self) -> usize {
        self.ended.len()
    }
}
