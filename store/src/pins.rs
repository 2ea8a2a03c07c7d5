//! Changelog pins: a refresh that will read the changelog above some CSN holds a pin
//! there, and trimming never raises the floor past the lowest pin.
//!
//! Without pins a refresh could check the floor, then lose the records it was about to
//! read to a trim (the `max_changes` cap trims past any consumer): a delta planned from
//! cookie C, or the catch-up after a full scan that began at C, silently missed the
//! changes between C and the new floor. Taking a pin and checking the floor happen under
//! the same lock the trimmer holds while it raises the floor, so a pin either lands at or
//! above the floor for good, or is refused and the caller plans another refresh.
//!
//! A pin lives as long as the refresh that needs it (a [`Pin`] releases itself on drop),
//! so the cap can be exceeded by what the running refreshes still need, never for longer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tether_protocol::Csn;

/// The live pins of one directory.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pins {
    table: Arc<Mutex<PinTable>>,
}

/// Pin id -> pinned CSN.
#[derive(Debug, Default)]
pub(crate) struct PinTable {
    next: u64,
    pins: BTreeMap<u64, Csn>,
}

impl PinTable {
    /// The lowest pinned CSN: trimming stops there.
    pub(crate) fn lowest(&self) -> Option<Csn> {
        self.pins.values().min().copied()
    }
}

impl Pins {
    /// Locks the table: the trimmer holds this while it raises the floor, and a pin is
    /// checked against the floor and inserted under it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PinTable> {
        // The table is a map of plain values; a panic elsewhere cannot leave it torn.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a pin at `csn` to the locked `table`.
    pub(crate) fn insert(&self, table: &mut PinTable, csn: Csn) -> Pin {
        let id = table.next;
        table.next += 1;
        table.pins.insert(id, csn);
        Pin { table: self.table.clone(), id, csn }
    }
}

/// Keeps the changelog above [`Pin::csn`] from being trimmed until dropped.
#[derive(Debug)]
pub struct Pin {
    table: Arc<Mutex<PinTable>>,
    id: u64,
    csn: Csn,
}

impl Pin {
    /// The pinned CSN: every record above it stays in the changelog.
    pub fn csn(&self) -> Csn {
        self.csn
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).pins.remove(&self.id);
    }
}
