//! `tether-store`: the sled-backed store behind both processes.
//!
//! A provider keeps one [`Directory`]: the authoritative entries, a changelog of every
//! committed change, and the writer that checks the directory rules and commits entry,
//! indexes and changelog record in one transaction. A consumer keeps a
//! [`ReplicaStore`]: one [`Replica`] per agreement, each with its own entries and cookie,
//! applied to atomically and reloaded through shadow generations.
//!
//! ## Layout
//! - [`error`]: refusals by the directory rules vs storage failures.
//! - `record` (private): how records and keys are encoded, in one place, with errors
//!   naming the tree that held a bad one.
//! - [`format`](mod@format): the layout a store was written in, checked on every open, so a build
//!   never reads a newer build's records (a downgrade).
//! - `disk_sync` (private): the syncs sled's flush leaves out (the log's size and the
//!   device's cache, its blob files), run after every flush an acknowledgement waits on,
//!   so that what was acknowledged survives a power cut.
//! - [`failure`]: the latch that records the first storage failure of an open store,
//!   which sled makes permanent for that handle, a flush that never ends, or the
//!   store's files taken away under the process.
//! - [`entry_set`]: entries clustered by DN in tree order, plus the UUID index; search.
//! - `rules` (private): what a write may do and the state it leads to.
//! - `footprint` (private): what a run of planned writes changed, so a group of writes
//!   shares one transaction only where none reads what an earlier one changed.
//! - [`changelog`]: change records by CSN, coalesced deltas, retention policy.
//! - [`feed`]: the persist phase's recent changes, as the writer committed them.
//! - [`durability`]: group commit and the durable-CSN watch that wakes sessions.
//! - [`pins`]: what running refreshes still need from the changelog, which trimming keeps.
//! - [`history`]: which cookies name this store's own past, so a consumer that followed
//!   a copy of the store past the point it was restored from is reloaded, not resumed.
//! - `ownership` (private): files root's commands write into another user's store,
//!   given back to that user at every open, so the service can still open it.
//! - [`directory`]: the provider's store, its copy made while it runs (a backup,
//!   `directory/backup.rs`, written here or by a process of its own through
//!   [`CopyWriter`]), and the check that a stopped store's or a copy's trees
//!   agree (`directory/verify.rs`).
//! - [`replica`]: the consumer's per-agreement replicas and shadow reloads (the shadow
//!   a reload fills, [`Shadow`], in a module of its own, `replica/shadow.rs`).
//! - `fill_order` (private): the order a run of keys arriving in key order goes into
//!   sled so that its leaves are left full, for a reload's scan and a backup's copy.
//! - [`reshapes`]: which entries of a replica were added, removed or renamed while a
//!   search printed it page by page, so the search can tell whether its output is whole.
//! - `reaper` (private): frees the trees of replica generations no state names any
//!   more, in the background and a batch at a time, so that discarding a large replica
//!   does not hold it all in memory.
//!
//! Testing only: `test_changes` (private, built for unit tests alone): the changes the
//! unit tests write (an add, the suffix entry), and opening a store again once sled has
//! let go of a dropped one's lock.
//!
//! Only one process may open a store at a time (sled locks the folder); tools reach a
//! running process through its control socket instead.

pub mod changelog;
mod consistency;
pub mod directory;
mod disk_sync;
pub mod durability;
pub mod entry_set;
pub mod error;
pub mod failure;
pub mod feed;
mod fill_order;
mod footprint;
pub mod format;
pub mod history;
mod ownership;
pub mod pins;
mod reaper;
mod record;
pub mod replica;
pub mod reshapes;
mod rules;
#[cfg(test)]
mod test_changes;

pub use changelog::{ChangeKind, ChangeRecord, Changelog, Delta, RetentionPolicy, TrimReport};
pub use consistency::Problems;
pub use directory::{
    inside_store, store_exists, write_copy, BackupProgress, BackupReport, Committed, ConsumerPosition, CopyCounts,
    CopyWriter, Directory, SledCopy, StoreOptions, StreamCopy, UnfinishedLoad, Verified, DEFAULT_CACHE_BYTES,
};
pub use entry_set::{EntrySet, Located, NoSuchBase, Spelling};
pub use error::{Refusal, Result, StoreError};
pub use failure::{FailureLatch, StoreFailure, INSTANCE_MARK};
pub use feed::FedChange;
pub use pins::Pin;
pub use replica::{
    ApplyStats, EntryForm, Incoming, IncomingOp, RegionAdopted, Replica, ReplicaState, ReplicaStore, ReplicaVerified,
    Shadow, ShadowProgress,
};
pub use reshapes::{ReshapeWatch, ReshapedSince, Reshapes};
pub use rules::refused_anywhere;
/// sled's error type, for callers that must build or match a storage error.
pub use sled::Error as SledError;
