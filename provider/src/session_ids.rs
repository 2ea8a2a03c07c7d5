//! Session ids that no other session of this store's provider had, before a restart or
//! after it.
//!
//! Both sides' log lines carry `session=N` (and the provider's `status` lists it), so an
//! id that began at 1 at every start named several sessions in a consumer's log that
//! outlived its provider's restarts. The ids come from blocks the store reserves
//! durably; a restart begins at the first id no start reserved, so the ids of one
//! lifetime are skipped at most by the unused end of its last block.

use std::ops::Range;
use std::sync::Arc;

use tether_store::Directory;
use tokio::sync::Mutex;
use tracing::warn;

/// Ids reserved at a time: a store write and a flush every this many connections.
const BLOCK: u64 = 1024;

/// Hands out session ids from the block the store last reserved.
#[derive(Debug)]
pub struct SessionIds {
    dir: Arc<Directory>,
    /// What is left of the block; empty until the first connection.
    block: Mutex<Range<u64>>,
}

impl SessionIds {
    /// Reserves nothing until the first id is asked for.
    pub fn new(dir: Arc<Directory>) -> Self {
        Self { dir, block: Mutex::new(0..0) }
    }

    /// The next id. When the block is used up, the store reserves the next one (off the
    /// async workers: it flushes). A store that cannot (it failed, and the provider is
    /// stopping) still leaves ids unique in this process, counted on from the last.
    pub async fn next(&self) -> u64 {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            let dir = self.dir.clone();
            let reserved = match tokio::task::spawn_blocking(move || dir.reserve_session_ids(BLOCK)).await {
                Ok(reserved) => reserved.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let next = block.end.max(1);
            *block = reserved.unwrap_or_else(|why| {
                warn!(error = %why, "could not reserve session ids in the store: ids of this run may be given again after a restart");
                next..next.saturating_add(BLOCK)
            });
        }
        let id = block.start;
        block.start += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::Dn;

    #[tokio::test]
    async fn ids_run_on_across_blocks_and_the_next_start_gives_none_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let ids = SessionIds::new(dir.clone());
        let mut first = Vec::new();
        for _ in 0..BLOCK + 2 {
            first.push(ids.next().await);
        }
        let expected: Vec<u64> = (1..=BLOCK + 2).collect();
        assert_eq!(first, expected, "one after another, through the end of the first block");
        // What the next start makes of the store (the store's own tests reopen it).
        let next_start = SessionIds::new(dir);
        assert_eq!(next_start.next().await, 2 * BLOCK + 1, "past the last block reserved");
    }
}
