//! Freeing the trees of replica generations no reader uses any more, in the background.
//!
//! sled's `drop_tree` frees a tree's pages under one epoch guard, so every page it reads
//! back from disk to free stays in memory until the last one is freed: discarding a
//! replica of a million entries (a full reload over it, a region change, an agreement
//! removed) took the consumer from 200 MiB to 1 GiB for seconds, which a service
//! manager's memory limit turns into a kill at every full reload. Removing the keys a
//! batch at a time keeps each guard short and memory at the cache's size, but costs
//! about 12 us a key (15 s for a million, against 1.5 s for `drop_tree`), so it runs on
//! a thread of its own rather than in the session that swapped the generation, or the
//! `reload` that removed an agreement. `drop_tree` then frees what little is left.
//!
//! Nothing records what is being freed: a generation's trees that no replica's state
//! names are garbage by definition, and a store opened after a crash (or a stop in the
//! middle of freeing) finds them so ([`crate::ReplicaStore::open`]) and hands them here
//! again. The names are never handed out again while a tree of that name exists, so
//! freeing one cannot touch a live replica (see `ReplicaStore::replica`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sled::{Batch, Db};

use crate::error::Result;
use crate::failure::FailureLatch;

/// Keys removed per batch: each batch's guard holds the pages it touched, a few MiB.
const BATCH: usize = 2_000;

/// The thread freeing trees, and the queue it takes names from. Dropping it (with the
/// store's last handle) stops the thread between batches and waits for it, so that the
/// store can be opened again at once; what it had not finished is found at that open.
#[derive(Debug)]
pub(crate) struct Reaper {
    queue: Mutex<Option<Sender<String>>>,
    /// Trees queued or being freed.
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reaper {
    /// Starts the thread on `db`; a storage failure it meets is latched on `failure`,
    /// as any other.
    pub(crate) fn start(db: &Db, failure: &FailureLatch) -> Self {
        let (tx, rx) = mpsc::channel::<String>();
        let (pending, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (db, failure, left, stopping) = (db.clone(), failure.clone(), pending.clone(), stop.clone());
        let spawned = std::thread::Builder::new().name("store reaper".into()).spawn(move || {
            while let Ok(name) = rx.recv() {
                match free(&db, &name, &stopping) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        failure.note(&e);
                        tracing::warn!(tree = %name, error = %e, "could not free a discarded replica's tree");
                        return;
                    }
                }
                left.fetch_sub(1, Ordering::SeqCst);
            }
        });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                // Nothing is lost: the trees are freed at the next open with a thread.
                tracing::warn!(error = %e, "no thread to free discarded replicas' trees: they stay until a restart");
                None
            }
        };
        Self { queue: Mutex::new(Some(tx)), pending, stop, thread: Mutex::new(thread) }
    }

    /// Frees tree `name` in the background. Its generation must be named by no
    /// replica's state any more, and no reader may be walking it.
    pub(crate) fn free(&self, name: String) {
        if let Some(queue) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if queue.send(name).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Trees queued or being freed.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Removes tree `name`'s keys a batch at a time, then the tree. `Ok(false)` when
/// stopped first.
fn free(db: &Db, name: &str, stop: &AtomicBool) -> Result<bool> {
    let tree = db.open_tree(name)?;
    let mut after: Option<sled::IVec> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let keys = match &after {
            None => tree.iter(),
            Some(after) => {
                tree.range::<&[u8], _>((std::ops::Bound::Excluded(after.as_ref()), std::ops::Bound::Unbounded))
            }
        };
        let keys: Vec<sled::IVec> = keys.keys().take(BATCH).collect::<std::result::Result<_, _>>()?;
        let Some(last) = keys.last().cloned() else { break };
        let mut batch = Batch::default();
        for key in keys {
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
        after = Some(last);
    }
    drop(tree);
    db.drop_tree(name)?;
    Ok(true)
}
