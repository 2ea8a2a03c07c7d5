//! Consumer replicas: one entry set and one cookie per agreement, inside the consumer's
//! store, with atomic batch apply and shadow reloads.
//!
//! Each replica lives in its own generation of trees (`r/<name>/<gen>/…`); a small
//! record per replica in the `replicas` tree says which generation is active, the cookie
//! that generation reflects, and any shadow being built. So:
//! - [`Replica::apply`] writes a batch and (optionally) the cookie covering it in one
//!   transaction; an operation whose CSN is not newer than the local state is a no-op,
//!   so replaying a batch after a crash changes nothing.
//! - A full or present refresh is built into a new generation ([`Shadow`]) while readers
//!   keep using the old one; [`Shadow::finish`] switches generations and sets the cookie in
//!   one write. A crash before that leaves the old replica and cookie untouched.
//! - A shadow also keeps the provider's newest [`ResumePoint`] ([`Shadow::record_progress`]),
//!   written after the data it covers. A shadow that has one survives a restart and is
//!   continued where it stood ([`Replica::resume_shadow`]) instead of being refilled; one
//!   without is discarded on open.
//! - Writes are durable when the caller flushes, but every write path also flushes once
//!   a few MiB of entries have gathered unflushed (`FLUSH_AFTER_BYTES`): sled puts no
//!   limit on the log waiting for the disk, and a reload would otherwise hold hundreds of
//!   MiB of it whenever writeback stalls.
//! - A generation no replica's state names any more (the old one after a swap, a
//!   discarded shadow, a removed replica's) is freed in the background by the
//!   reaper (`reaper.rs`), a batch of keys at a time: sled's own `drop_tree` held every
//!   page of it in memory at once.
//!
//! Replicas are not held to the directory rules (a filtered scope may hold a child
//! without its parent). When an incoming entry takes a DN another local entry still
//! holds, the newer state wins and the older entry is dropped locally: its own later
//! change, which must exist for the provider to have freed that DN, re-creates it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};
use sled::{Db, IVec, Tree};
use tether_protocol::encoded::ReceivedOp;
use tether_protocol::{Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, ResumePoint, SearchSpec};

use crate::directory::{open_db, StoreKind, StoreOptions};
use crate::entry_set::{EntrySet, TxEntrySet, TxError, ENTRIES};
use crate::error::{Result, StoreError};
use crate::failure::FailureLatch;
use crate::reaper::Reaper;
use crate::record::{decode, encode};
use crate::reshapes::{self, ReshapeWatch, Reshaped, Reshapes, SharedLog};

mod shadow;
mod verify;

pub use shadow::Shadow;
pub use verify::ReplicaVerified;

/// Tree holding one [`ReplicaState`] per agreement name; only a consumer's store has it.
pub(crate) const REPLICAS: &str = "replicas";
/// A shadow's entries tree, as named in errors.
const SHADOW_ENTRIES: &str = "entries";
/// Tree holding each replica's entry count (see [`Replica::len`]): agreement name ->
/// generation and count, two big-endian `u64`s. Kept apart from [`REPLICAS`], whose keys
/// are exactly the agreement names.
const COUNTS: &str = "replica_counts";
/// Tree holding, per agreement name, how far past its cookie a delta refresh that was
/// cut short took the replica (see [`Replica::beyond_cookie`]): an encoded [`Cookie`].
const BEYOND: &str = "replica_beyond_cookie";
/// Tree holding, per agreement name, the region (an encoded [`SearchSpec`]) the
/// replica's entries and cookie were replicated for (see [`Replica::adopt_region`]).
const REGIONS: &str = "replica_regions";
/// Tree holding, per agreement name, the replica's active generation and its next
/// generation when the region on record in [`REGIONS`] was written (two big-endian
/// `u64`s): see [`Replica::adopt_region`]. Its own tree, so that a store written by
/// this build still opens in an older one.
const REGION_GENS: &str = "replica_region_generations";
/// Next generations from here on are this build's: [`Replica::adopt_region`] moves a
/// replica's next generation to a random number at least this large, which an older
/// build that makes the replica again (counting from 0) does not reach.
const MARKED_GENERATIONS: u64 = 1 << 32;
/// Tree holding, per agreement name, when (milliseconds since the Unix epoch, 8 bytes
/// big-endian) a provider of the agreement first proved it knows the agreement's secret
/// (see [`Replica::provider_proved_at`]). Its own tree, not a field of [`ReplicaState`],
/// so that a store written by this build still opens in an older one.
const PROVED: &str = "replica_provider_proved";
/// Tree holding, per agreement name, when (milliseconds since the Unix epoch, 8 bytes
/// big-endian) the replica was last known current (see [`Replica::current_at`]). Its
/// own tree, so that a store written by this build still opens in an older one.
const CURRENT: &str = "replica_current_at";

/// The persistent state of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReplicaState {
    /// Generation of trees readers use.
    pub active_gen: u64,
    /// The position the active generation reflects; `None` before the first refresh.
    pub cookie: Option<Cookie>,
    /// A shadow generation being built, if any.
    pub shadow: Option<u64>,
    /// Next generation number to hand out (never reused, so a stale shadow is never
    /// mistaken for a new one).
    pub next_gen: u64,
    /// Stopped by an operator: stays stopped across restarts until started.
    pub admin_stopped: bool,
    /// Where the shadow's refresh stood, if the provider said; only with `shadow`.
    pub shadow_progress: Option<ShadowProgress>,
}

/// How far a shadow's refresh got: what a reconnecting session needs to continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowProgress {
    /// The provider's resume point; everything it covers is in the shadow.
    pub resume: ResumePoint,
    /// The region the refresh was for: a resume point is good for that region only (an
    /// agreement whose scope was reconfigured starts over).
    pub spec: SearchSpec,
    /// Entries received into the shadow so far (upserts and present UUIDs), for status.
    pub received: u64,
}

/// An operation to apply: one built here ([`ReplOp`]), or one off the wire
/// ([`ReceivedOp`]), whose entry is the bytes received (checked, not built) and is
/// stored as it is instead of being encoded again (about a fifth of a replica's cost per
/// entry, and building it was as much again).
pub trait IncomingOp {
    /// What the operation is, as applying it needs it.
    fn incoming(&self) -> Incoming<'_>;
}

/// An operation as [`Replica::apply`] needs it.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// Store this state of an entry if it is newer than the one held.
    Upsert {
        /// Its name.
        dn: &'a Dn,
        /// Its identity.
        uuid: EntryUuid,
        /// The CSN of the state.
        csn: Csn,
        /// The entry, in the form at hand.
        entry: EntryForm<'a>,
    },
    /// Remove the entry.
    Delete {
        /// Which entry.
        uuid: EntryUuid,
        /// The CSN of the change that removed it.
        csn: Csn,
    },
}

impl Incoming<'_> {
    /// The entry it is about.
    pub fn uuid(&self) -> EntryUuid {
        match self {
            Incoming::Upsert { uuid, .. } | Incoming::Delete { uuid, .. } => *uuid,
        }
    }

    /// The CSN of the state it carries.
    pub fn csn(&self) -> Csn {
        match self {
            Incoming::Upsert { csn, .. } | Incoming::Delete { csn, .. } => *csn,
        }
    }
}

/// An upserted entry's state, in the form at hand.
#[derive(Debug, Clone, Copy)]
pub enum EntryForm<'a> {
    /// Built: encoded to be stored.
    Entry(&'a Entry),
    /// Already the codec's encoding of the entry.
    Encoded(&'a [u8]),
}

impl EntryForm<'_> {
    /// The bytes to store under the entry's DN, as sled keeps them: received bytes are
    /// copied once, straight into the value sled stores (by way of a `Vec` it was two
    /// copies and two allocations per entry, on the thread that decides a refresh's pace).
    fn to_ivec(self, tree: &'static str) -> Result<IVec> {
        match self {
            EntryForm::Entry(entry) => encode(tree, entry).map(IVec::from),
            EntryForm::Encoded(bytes) => Ok(IVec::from(bytes)),
        }
    }
}

impl IncomingOp for ReplOp {
    fn incoming(&self) -> Incoming<'_> {
        match self {
            ReplOp::Upsert(e) => Incoming::Upsert { dn: &e.dn, uuid: e.uuid, csn: e.csn, entry: EntryForm::Entry(e) },
            ReplOp::Delete { uuid, csn } => Incoming::Delete { uuid: *uuid, csn: *csn },
        }
    }
}

impl IncomingOp for ReceivedOp {
    fn incoming(&self) -> Incoming<'_> {
        match self {
            ReceivedOp::Upsert { entry, encoded } => {
                Incoming::Upsert { dn: &entry.dn, uuid: entry.uuid, csn: entry.csn, entry: EntryForm::Encoded(encoded) }
            }
            ReceivedOp::Delete { uuid, csn } => Incoming::Delete { uuid: *uuid, csn: *csn },
        }
    }
}

/// Counts of what an apply did: the exactly-once evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Operations that changed the replica.
    pub applied: u64,
    /// Operations already reflected (replays), which changed nothing.
    pub skipped: u64,
    /// With the audit on: operations applied although the audit log shows the same
    /// change (entry and CSN) applied before. Always 0 unless exactly-once is broken.
    pub duplicates: u64,
    /// Entries the operations created (an upsert of an entry not held before).
    pub created: u64,
    /// Entries the operations removed (deletes, and older entries dropped because a
    /// newer one took their DN). With `created`, keeps an entry count current without
    /// scanning the replica.
    pub removed: u64,
    /// Entries the operations moved to another DN (renames).
    pub renamed: u64,
    /// Bytes of entries written.
    pub written: u64,
}

impl ApplyStats {
    /// How the number of entries changed.
    pub fn entries_delta(&self) -> i64 {
        self.created as i64 - self.removed as i64
    }
}

impl ApplyStats {
    /// Entries added, removed or renamed: the changes that move entries in or out of a
    /// place in DN order, which a search printing page by page can miss or see twice.
    pub fn reshaped(&self) -> u64 {
        self.created + self.removed + self.renamed
    }
}

/// The consumer's store: every replica of every agreement.
#[derive(Debug, Clone)]
pub struct ReplicaStore {
    /// The sled database.
    db: Db,
    /// Agreement name -> [`ReplicaState`].
    replicas: Tree,
    /// Agreement name -> entry count of a generation ([`COUNTS`]).
    counts: Tree,
    /// Agreement name -> how far past its cookie the replica is ([`BEYOND`]).
    beyond: Tree,
    /// Agreement name -> the region the replica was replicated for ([`REGIONS`]).
    regions: Tree,
    /// Agreement name -> the generation that region was recorded for ([`REGION_GENS`]).
    region_gens: Tree,
    /// Agreement name -> when a provider first proved itself ([`PROVED`]).
    proved: Tree,
    /// Agreement name -> when the replica was last known current ([`CURRENT`]).
    current: Tree,
    /// Whether incremental applies are recorded in an audit log (see [`ReplicaStore::set_audit`]).
    audit: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes of entries written since the last flush (see [`FLUSH_AFTER_BYTES`]).
    unflushed: Arc<AtomicU64>,
    /// Whether the storage has failed under this handle (see [`crate::failure`]); the
    /// consumer latches the storage errors its agreements meet.
    failure: FailureLatch,
    /// Held for reading while another thread reads a replica's active generation
    /// ([`Replica::read_active`]), for writing while a generation is dropped. sled
    /// drops a tree under a reader still walking it, which then loops forever at full
    /// CPU (seen in a test: `Tree::len` spinning), and a tree opened after its drop
    /// comes back empty, so a `search` racing a reload's swap hung or saw an empty
    /// replica. Reads are a page of 500 entries, so a swap waits at most that long.
    generations: Arc<std::sync::RwLock<()>>,
    /// Agreement name -> how its active entries changed shape ([`crate::reshapes`]).
    /// Kept in memory: only a search running in this process, beside the applies, needs
    /// it.
    reshapes: Arc<std::sync::Mutex<std::collections::HashMap<String, SharedLog>>>,
    /// Frees discarded generations' trees in the background.
    reaper: Arc<Reaper>,
}

/// Bytes of entries written without a flush after which the write that passes it
/// flushes. sled writes its log from a pool of threads and never makes a writer wait for
/// the disk, so while writeback holds those threads up, the log buffers of everything
/// written meanwhile wait in memory. A reload flushes only as it ends: a million-entry
/// refresh jumped by 40 to 90 MiB for half a second, one run in six, with every sled I/O
/// thread waiting on page writeback. An entry costs about six times its size in log
/// (node rewrites and splits), so this holds that backlog to some 25 MiB; at a flush per
/// few thousand entries the flushes cost little beside the writes.
const FLUSH_AFTER_BYTES: u64 = 4 << 20;

fn tree_name(name: &str, gen: u64, part: &str) -> String {
    format!("r/{name}/{gen}/{part}")
}

/// The replica name and generation a tree of a generation belongs to, if it is one.
fn generation_of(tree: &[u8]) -> Option<(&str, u64)> {
    let (rest, part) = std::str::from_utf8(tree).ok()?.strip_prefix("r/")?.rsplit_once('/')?;
    let (name, gen) = rest.rsplit_once('/')?;
    matches!(part, "entries" | "uuids").then_some(())?;
    Some((name, gen.parse().ok()?))
}

/// The audit log outlives generations (a present refresh keeps the entries it does not
/// name): it records what was applied incrementally since the last full refresh.
fn audit_tree_name(name: &str) -> String {
    format!("r/{name}/audit")
}

impl ReplicaStore {
    /// Opens (creating) the consumer store at `path`. Shadows left by an interrupted
    /// reload are kept if they can be continued (they have a resume point) and
    /// discarded otherwise; either way the old generation is still active and intact.
    /// A replica without a count of its active generation (a store from before counts
    /// were kept) is counted here, once, before any session can write to it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// [`ReplicaStore::open`] with `options`.
    pub fn open_with(path: &Path, options: &StoreOptions) -> Result<Self> {
        let db = open_db(path, options, StoreKind::Replicas)?;
        let replicas = db.open_tree(REPLICAS)?;
        let counts = db.open_tree(COUNTS)?;
        let beyond = db.open_tree(BEYOND)?;
        let regions = db.open_tree(REGIONS)?;
        let region_gens = db.open_tree(REGION_GENS)?;
        let proved = db.open_tree(PROVED)?;
        let current = db.open_tree(CURRENT)?;
        let failure = FailureLatch::watched(crate::failure::STUCK_AFTER, &path.join("db"));
        let reaper = Arc::new(Reaper::start(&db, &failure));
        let store = Self {
            db,
            replicas,
            counts,
            beyond,
            regions,
            region_gens,
            proved,
            current,
            audit: Arc::default(),
            unflushed: Arc::default(),
            failure,
            generations: Arc::default(),
            reshapes: Arc::default(),
            reaper,
        };
        for name in store.names()? {
            let mut state = store.state(&name)?.unwrap_or_default();
            // A shadow that cannot be continued is discarded: no state names it
            // then, and the sweep below frees it.
            if state.shadow_progress.is_none() && state.shadow.take().is_some() {
                store.put_state(&name, &state)?;
            }
            let counted_at = store.counts.get(count_at_key(&name))?;
            let behind = match (&state.cookie, counted_at) {
                (Some(cookie), Some(at)) => at.as_ref() != cookie.csn.0.to_be_bytes(),
                _ => false,
            };
            if behind || store.count(&name, state.active_gen)?.is_none() {
                let n = store.set_for(&name, state.active_gen)?.len() as u64;
                if behind {
                    tracing::info!(agreement = %name, entries = n, "entry count redone: an older build applied changes to the replica since this build last did");
                }
                store.counts.insert(name.as_bytes(), &count_record(state.active_gen, n))?;
                if let Some(cookie) = &state.cookie {
                    store.counts.insert(count_at_key(&name), &cookie.csn.0.to_be_bytes())?;
                }
            }
        }
        // What a crash or a stop left of discarded generations (the reaper had not
        // finished, or had not begun): every generation's tree no state names.
        let mut named = std::collections::HashSet::new();
        for name in store.names()? {
            let state = store.state(&name)?.unwrap_or_default();
            named.extend([Some(state.active_gen), state.shadow].into_iter().flatten().map(|gen| (name.clone(), gen)));
        }
        for tree in store.db.tree_names() {
            let orphan = generation_of(&tree).is_some_and(|(n, g)| !named.contains(&(n.to_owned(), g)));
            if orphan {
                store.reaper.free(String::from_utf8_lossy(&tree).into_owned());
            }
        }
        Ok(store)
    }

    /// The stored entry count of generation `gen` of replica `name`, if the count on
    /// record is that generation's.
    fn count(&self, name: &str, gen: u64) -> Result<Option<u64>> {
        match self.counts.get(name.as_bytes())? {
            Some(bytes) => Ok(Some(parse_count_record(&bytes)?).filter(|(g, _)| *g == gen).map(|(_, n)| n)),
            None => Ok(None),
        }
    }

    /// Whether the storage failed under this handle, shared by all its replicas.
    pub fn failure(&self) -> &FailureLatch {
        &self.failure
    }

    /// Names of all replicas.
    pub fn names(&self) -> Result<Vec<String>> {
        self.replicas.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect()
    }

    fn state(&self, name: &str) -> Result<Option<ReplicaState>> {
        self.replicas.get(name.as_bytes())?.map(|v| decode(REPLICAS, &v)).transpose()
    }

    fn put_state(&self, name: &str, state: &ReplicaState) -> Result<()> {
        self.replicas.insert(name.as_bytes(), encode(REPLICAS, state)?)?;
        Ok(())
    }

    fn set_for(&self, name: &str, gen: u64) -> Result<EntrySet> {
        Ok(EntrySet::new(
            self.db.open_tree(tree_name(name, gen, "entries"))?,
            self.db.open_tree(tree_name(name, gen, "uuids"))?,
        ))
    }

    /// Drops generation `gen`'s trees, once no other thread reads them. Never call it
    /// while holding [`ReplicaStore::generations`] (from inside a read).
    fn drop_generation(&self, name: &str, gen: u64) -> Result<()> {
        // No state names it any more, so no read begins in it; one under way ends first.
        drop(self.generations.write().unwrap_or_else(|p| p.into_inner()));
        self.reaper.free(tree_name(name, gen, "entries"));
        self.reaper.free(tree_name(name, gen, "uuids"));
        Ok(())
    }

    /// Trees of discarded generations not yet freed.
    pub fn trees_to_free(&self) -> usize {
        self.reaper.pending()
    }

    /// The replica of agreement `name`, created empty if new.
    pub fn replica(&self, name: &str) -> Result<Replica> {
        if self.state(name)?.is_none() {
            // Past any generation of a replica of that name still being freed (the
            // agreement removed and added again): the reaper would empty it.
            let names = self.db.tree_names();
            let first = names
                .iter()
                .filter_map(|tree| generation_of(tree).filter(|(n, _)| *n == name).map(|(_, gen)| gen + 1))
                .max()
                .unwrap_or(0);
            let state = ReplicaState { active_gen: first, next_gen: first + 1, ..ReplicaState::default() };
            self.counts.insert(name.as_bytes(), &count_record(state.active_gen, 0))?;
            self.put_state(name, &state)?;
        }
        Ok(self.handle(name))
    }

    fn handle(&self, name: &str) -> Replica {
        let reshapes = {
            let mut all = self.reshapes.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(name.to_owned()).or_default().clone()
        };
        Replica { store: self.clone(), name: Arc::from(name), reshapes }
    }

    /// The replica of agreement `name` if it has one, without creating it: for tools
    /// that read a stopped consumer's store and must change nothing.
    pub fn existing_replica(&self, name: &str) -> Result<Option<Replica>> {
        Ok(self.state(name)?.map(|_| self.handle(name)))
    }

    /// Deletes agreement `name`'s replica entirely (agreement removed from config).
    pub fn remove(&self, name: &str) -> Result<()> {
        let Some(state) = self.state(name)? else { return Ok(()) };
        self.replicas.remove(name.as_bytes())?;
        self.counts.remove(name.as_bytes())?;
        self.counts.remove(count_at_key(name))?;
        self.beyond.remove(name.as_bytes())?;
        self.beyond.remove(shadow_beyond_key(name))?;
        self.regions.remove(name.as_bytes())?;
        self.region_gens.remove(name.as_bytes())?;
        self.proved.remove(name.as_bytes())?;
        self.current.remove(name.as_bytes())?;
        self.failure.flush(&self.db)?;
        self.drop_generation(name, state.active_gen)?;
        self.db.drop_tree(audit_tree_name(name))?;
        if let Some(gen) = state.shadow {
            self.drop_generation(name, gen)?;
        }
        Ok(())
    }

    /// Turns the apply audit on: every change applied incrementally (delta and live, not
    /// reloads) is logged as (entry, CSN) in the same transaction, and applying one
    /// already logged counts as a duplicate. This is how the failure-scenario tests prove
    /// exactly-once application; it costs one small write per change.
    pub fn set_audit(&self, on: bool) {
        self.audit.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn audit_on(&self) -> bool {
        self.audit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        // Reset first: what is written during the flush is counted towards the next.
        self.unflushed.store(0, Ordering::Relaxed);
        self.failure.flush(&self.db)?;
        Ok(())
    }

    /// Counts `bytes` of entries written and flushes once [`FLUSH_AFTER_BYTES`] have
    /// gathered since the last flush.
    fn wrote(&self, bytes: u64) -> Result<()> {
        let before = self.unflushed.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes >= FLUSH_AFTER_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

/// The cookie an apply or advance stores when a session offers `offered`: the one held
/// if it names the same CSN, in whatever history. Applies and advances come only from a
/// session whose provider recognized the held cookie (a refresh the provider would not
/// resume from it is built in a shadow, and [`Shadow::finish`] sets its cookie as is), so
/// the provider's history descends from the held one's through that CSN and both name
/// one position. The earlier history is the one more copies of the provider's store
/// know: a provider begins a history at every start, and a consumer that took the new
/// one with nothing new to it (an empty delta after the restart) held a position that a
/// backup taken before that restart never made, so restoring the backup reloaded every
/// such consumer in full.
fn kept_cookie(held: Option<Cookie>, offered: Cookie) -> Cookie {
    match held {
        Some(held) if held.csn == offered.csn => held,
        _ => offered,
    }
}

/// The key in [`BEYOND`] of how far past its refresh's start an unfinished shadow holds
/// data: the newest CSN its catch-up applied (a big-endian `u64`; see
/// [`Shadow::apply`]). Beside the replica's own record, not in it; an agreement name
/// holds no NUL.
fn shadow_beyond_key(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.extend_from_slice(b"\0shadow");
    key
}

/// The newest CSN of the states `ops` carry.
fn newest_csn<O: IncomingOp>(ops: &[O]) -> Option<Csn> {
    ops.iter().map(|o| o.incoming().csn()).max()
}

/// Takes an unfinished shadow out of `state` (its generation, to free with
/// `Replica::free_shadow` once the state is written).
fn take_shadow(state: &mut ReplicaState) -> Option<u64> {
    state.shadow_progress = None;
    state.shadow.take()
}

/// The key in [`COUNTS`] of the CSN of the cookie the replica's count was last right
/// at: moved with the cookie by every apply of this build, so a replica an older build
/// applied to since (a rollback, which adds and deletes without moving the count) is
/// counted again at open. Beside the count, not in it, so that builds that read the
/// count (exactly 16 bytes) still do; an agreement name holds no NUL.
fn count_at_key(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.extend_from_slice(b"\0at");
    key
}

/// A [`COUNTS`] record: generation, then count.
fn count_record(gen: u64, count: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&gen.to_be_bytes());
    out[8..].copy_from_slice(&count.to_be_bytes());
    out
}

/// Reads a [`COUNTS`] record.
fn parse_count_record(bytes: &[u8]) -> Result<(u64, u64)> {
    if bytes.len() != 16 {
        return Err(StoreError::Corrupt(format!("{COUNTS}: expected 16 bytes, found {}", bytes.len())));
    }
    let (mut gen, mut count) = ([0; 8], [0; 8]);
    gen.copy_from_slice(&bytes[..8]);
    count.copy_from_slice(&bytes[8..]);
    Ok((u64::from_be_bytes(gen), u64::from_be_bytes(count)))
}

/// One agreement's replica.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The store it lives in.
    store: ReplicaStore,
    /// The agreement name.
    name: Arc<str>,
    /// How its active entries changed shape ([`Replica::reshapes`]), shared by every
    /// handle on the same agreement in this process.
    reshapes: SharedLog,
}

/// What [`Replica::adopt_region`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionAdopted {
    /// The region on record, or a replica without a cookie to drop.
    Kept,
    /// Another region was on record: the cookie is dropped, and the next session
    /// reloads the replica in full.
    Reloads,
    /// No region on record beside a cookie (a replica made before regions were
    /// recorded): the region is taken as given, and the replica resumes from its cookie.
    Unrecorded,
    /// The region on record is of a generation an older build has replaced since (a
    /// rollback that reloaded the replica, for another region perhaps): what it holds
    /// is unknown, so the cookie is dropped and the next session reloads it in full.
    Outdated,
}

impl Replica {
    /// The agreement name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The failure latch of the store it lives in.
    pub fn failure(&self) -> &FailureLatch {
        &self.store.failure
    }

    /// The persistent state.
    pub fn state(&self) -> Result<ReplicaState> {
        self.store.state(&self.name)?.ok_or_else(|| StoreError::NoSuchReplica(self.name.to_string()))
    }

    /// The durable position to resume from.
    pub fn cookie(&self) -> Result<Option<Cookie>> {
        Ok(self.state()?.cookie)
    }

    /// The active entries, for the thread that writes this replica (its session's),
    /// where no reload can swap generations under them. Any other thread reads through
    /// [`Replica::read_active`].
    pub fn entries(&self) -> Result<EntrySet> {
        self.store.set_for(&self.name, self.state()?.active_gen)
    }

    /// Runs `read` on the active entries (what readers see), from any thread: a reload
    /// that completes meanwhile drops the generation read only after `read` returns.
    /// Keep each read short (a page): a reload's swap waits for it.
    pub fn read_active<T>(&self, read: impl FnOnce(&EntrySet) -> Result<T>) -> Result<T> {
        let _reading = self.store.generations.read().unwrap_or_else(|p| p.into_inner());
        read(&self.entries()?)
    }

    /// Number of entries in the active generation: one lookup, not a scan. Every apply
    /// moves the count in the transaction that changes the entries, and a reload records
    /// the new generation's count as it is swapped in, so the count is never out of step
    /// with the entries (a million-entry replica took seconds to count, on every
    /// disconnect). Should the record be missing, the entries are counted.
    pub fn len(&self) -> Result<usize> {
        let gen = self.state()?.active_gen;
        match self.store.count(&self.name, gen)? {
            Some(n) => Ok(n as usize),
            // No count of the generation read: a store from before counts, or a reload
            // swapped generations between the two lookups.
            None => self.read_active(|entries| Ok(entries.len())),
        }
    }

    /// Whether the active generation holds no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Entries of the active generation in `spec`'s region, in tree order, read whole
    /// under [`Replica::read_active`] (a reload's swap waits for all of it): for tests
    /// and small regions. A region of any size is read a page at a time, as the control
    /// socket's `search` does.
    pub fn search(&self, spec: &SearchSpec) -> Result<Vec<Entry>> {
        self.read_active(|entries| entries.search(spec).collect())
    }

    /// Applies `ops` to the active generation and, if given, sets `cookie`, all in one
    /// transaction. Not durable until [`ReplicaStore::flush`].
    pub fn apply<O: IncomingOp>(&self, ops: &[O], cookie: Option<Cookie>) -> Result<ApplyStats> {
        // A change read from the provider's changelog comes with the entry as it is when
        // read, which may be a later write than the change's CSN, the cookie that comes
        // with it: the replica then holds data past its cookie, which the record must
        // say before the data is applied (ahead of it in sled's log).
        if let (Some(cookie), Some(newest)) = (cookie, newest_csn(ops)) {
            if newest > cookie.csn {
                self.claim_beyond_cookie(cookie.history, newest)?;
            }
        }
        let state = self.state()?;
        let set = self.store.set_for(&self.name, state.active_gen)?;
        let audit = self.store.db.open_tree(audit_tree_name(&self.name))?;
        let audit_on = self.store.audit_on();
        let name = self.name.clone();
        let mut reshapes = reshapes::lock(&self.reshapes);
        let watched = reshapes.watched();
        let (stats, noted) = (&self.store.replicas, &set.entries, &set.uuids, &audit, &self.store.counts).transaction(
            |(replicas, entries, uuids, audit, counts)| {
                let tx = TxEntrySet { entries, uuids };
                let mut stats = ApplyStats::default();
                let mut noted = Vec::new();
                for incoming in ops {
                    let op = incoming.incoming();
                    let applied = apply_op(&tx, op, &mut stats, watched.then_some(&mut noted))?;
                    if applied && audit_on {
                        let mut key = op.uuid().as_bytes().to_vec();
                        key.extend_from_slice(&op.csn().to_key());
                        if audit.insert(key, &[])?.is_some() {
                            stats.duplicates += 1;
                        }
                    }
                }
                let delta = stats.entries_delta();
                if delta != 0 {
                    let record = counts.get(name.as_bytes())?;
                    let parsed = record.as_deref().map(parse_count_record).transpose();
                    if let Some((gen, n)) = parsed.map_err(ConflictableTransactionError::Abort)? {
                        if gen == state.active_gen {
                            let n = n.checked_add_signed(delta).unwrap_or(0);
                            counts.insert(name.as_bytes(), &count_record(gen, n))?;
                        }
                    }
                }
                if let Some(cookie) = cookie {
                    // Re-read inside the transaction: the generation must still be the one written.
                    let current: ReplicaState = match replicas.get(name.as_bytes())? {
                        Some(v) => decode(REPLICAS, &v).map_err(ConflictableTransactionError::Abort)?,
                        None => {
                            return Err(ConflictableTransactionError::Abort(StoreError::NoSuchReplica(
                                name.to_string(),
                            )))
                        }
                    };
                    if current.active_gen != state.active_gen {
                        return Err(ConflictableTransactionError::Abort(StoreError::StaleShadow(name.to_string())));
                    }
                    let kept = kept_cookie(current.cookie, cookie);
                    let next = ReplicaState { cookie: Some(kept), ..current };
                    let bytes = encode(REPLICAS, &next).map_err(ConflictableTransactionError::Abort)?;
                    replicas.insert(name.as_bytes(), bytes)?;
                    counts.insert(count_at_key(&name), &kept.csn.0.to_be_bytes())?;
                }
                Ok((stats, noted))
            },
        )?;
        if let Some(cookie) = cookie {
            // After the cookie, in sled's log order: whatever survives a crash, a replica
            // is never left past its cookie without saying so. Only a cookie that covers
            // the record clears it: a refresh's `RefreshDone` names where its changelog
            // reading ended, and the entries it read may be later writes than that.
            self.settle_beyond_cookie(cookie.csn)?;
        }
        reshapes.entries(stats.reshaped(), noted);
        drop(reshapes);
        self.store.wrote(stats.written)?;
        Ok(stats)
    }

    /// How often the active entries changed shape since the store was opened in this
    /// process. A search that reads the replica a page at a time, while a session
    /// applies changes to it, compares a reading taken before with one taken after: an
    /// entry added, removed or renamed meanwhile could be missing from its output or in
    /// it twice, and a refresh swapped in meanwhile left it reading two generations.
    pub fn reshapes(&self) -> Reshapes {
        reshapes::lock(&self.reshapes).count()
    }

    /// Begins a search of the active entries printed page by page: until the watch is
    /// dropped, applies note which entries they add, remove or rename, so that at its
    /// end the search can tell whether any was within its scope
    /// ([`ReshapeWatch::since`]).
    pub fn watch_reshapes(&self) -> ReshapeWatch {
        ReshapeWatch::begin(&self.reshapes)
    }

    /// Applies a batch of a delta refresh from a provider whose store is in `history`.
    /// A delta is coalesced (each entry once, at its latest state), not in CSN order, so
    /// no cookie covers part of one: its batches move the replica past its cookie, which
    /// moves only at its end. Should it be cut short, a delta from the same cookie puts
    /// that right, but only from a provider whose history holds what was applied; one
    /// restored from a copy taken before it must reload the replica instead. So before
    /// the batch (ahead of it in sled's log, so durable whenever the batch is) this
    /// records `history` and the newest CSN applied past the cookie
    /// ([`Replica::beyond_cookie`]), which the next session presents.
    ///
    /// A record left by an earlier delta is raised to this one's history: this session's
    /// provider recognized it (or it would have sent a full refresh, not a delta), so its
    /// history descends from that one and holds everything the record covers.
    pub fn apply_delta_batch<O: IncomingOp>(&self, ops: &[O], history: HistoryId) -> Result<ApplyStats> {
        if let Some(newest) = newest_csn(ops) {
            self.claim_beyond_cookie(history, newest)?;
        }
        self.apply(ops, None)
    }

    /// Records that the replica holds data of provider history `history` up to `newest`
    /// past its cookie, raising a record already held (see [`Replica::apply_delta_batch`]
    /// for why its history may be taken over).
    fn claim_beyond_cookie(&self, history: HistoryId, newest: Csn) -> Result<()> {
        let held = self.beyond_cookie()?;
        let claim = Cookie { history, csn: held.map_or(newest, |h| h.csn.max(newest)) };
        if held != Some(claim) {
            self.store.beyond.insert(self.name.as_bytes(), encode(BEYOND, &claim)?)?;
        }
        Ok(())
    }

    /// Clears the record of data past the cookie once the cookie, now at `csn`, covers it.
    fn settle_beyond_cookie(&self, csn: Csn) -> Result<()> {
        if self.beyond_cookie()?.is_some_and(|held| held.csn <= csn) {
            self.store.beyond.remove(self.name.as_bytes())?;
        }
        Ok(())
    }

    /// How far past its cookie a delta refresh that was cut short took the replica: the
    /// provider history its data came from and the newest CSN applied (see
    /// [`Replica::apply_delta_batch`]). `None` when the replica is at its cookie. A
    /// session presents it, and a provider that does not recognize it as a position of
    /// its own reloads the replica in full.
    pub fn beyond_cookie(&self) -> Result<Option<Cookie>> {
        self.store.beyond.get(self.name.as_bytes())?.map(|v| decode(BEYOND, &v)).transpose()
    }

    /// The newest CSN an unfinished shadow's catch-up applied (see [`Shadow::apply`]).
    fn shadow_beyond(&self) -> Result<Option<Csn>> {
        let held = self.store.beyond.get(shadow_beyond_key(&self.name))?;
        held.map(|v| crate::record::u64_from(BEYOND, &v).map(Csn)).transpose()
    }

    /// Moves the cookie to `cookie` with nothing to apply (a delta's end, or changes
    /// outside the region). Not durable until [`ReplicaStore::flush`].
    pub fn advance(&self, cookie: Cookie) -> Result<()> {
        self.apply::<ReplOp>(&[], Some(cookie)).map(drop)
    }

    /// Drops the cookie, so the next session asks for a full refresh: used when the
    /// local replica fails a check and cannot be trusted as a base for a delta.
    pub fn forget_cookie(&self) -> Result<()> {
        let state = ReplicaState { cookie: None, ..self.state()? };
        self.store.put_state(&self.name, &state)?;
        self.store.flush()
    }

    /// Makes `spec` the region this replica is kept for, and says what that did. A
    /// replica kept for another region (the agreement's base, scope, filter or attribute
    /// list changed, even while the consumer was stopped) cannot resume by delta: a delta
    /// brings only changes, so the new region's entries that did not change would never
    /// arrive, nor would the old region's leave. Its cookie is dropped, durably, before
    /// the new region is recorded, so the next session reloads it in full whatever a
    /// crash interrupts.
    ///
    /// A replica with a cookie and no region on record was made by a build from before
    /// regions were recorded: nothing says what it holds, but a consumer upgraded in
    /// place, its configuration unchanged, is the case that makes one, and reloading
    /// every replica of every consumer in full at an upgrade is what operations.md
    /// promises does not happen. So `spec` is taken as its region and its cookie kept;
    /// the caller says so in the log, and operations.md asks that no region be changed
    /// in the restart that upgrades.
    ///
    /// The record names the generations it was written for, since a build from before
    /// regions were recorded (a rollback) writes on without updating it: its reload,
    /// for another region say, or its removal and remaking of the replica (an agreement
    /// taken out and put back), leaves the record naming the region it replaced, and
    /// the file set back to that region at the roll forward would then resume by delta
    /// a replica of the other region, diverged for good. Such a build's reload changes
    /// the active generation; its remaking counts generations from 0 again, below the
    /// next generation this build set past 2^32 (`MARKED_GENERATIONS`; a replica made again
    /// on one refresh would otherwise come back to the very generation on record).
    /// Either is [`RegionAdopted::Outdated`]; its deltas, which change neither, are not.
    pub fn adopt_region(&self, spec: &SearchSpec) -> Result<RegionAdopted> {
        let key = self.name.as_bytes();
        let recorded: Option<SearchSpec> = self.store.regions.get(key)?.map(|v| decode(REGIONS, &v)).transpose()?;
        let outdated = self.region_outdated()?;
        let adopted = match &recorded {
            Some(_) if outdated && self.cookie()?.is_some() => {
                self.forget_cookie()?;
                RegionAdopted::Outdated
            }
            Some(held) if held.same_region(spec) && !outdated && self.region_mark()?.is_some() => {
                return Ok(RegionAdopted::Kept)
            }
            Some(held) if held.same_region(spec) => RegionAdopted::Kept,
            Some(_) if self.cookie()?.is_some() => {
                self.forget_cookie()?;
                RegionAdopted::Reloads
            }
            None if self.cookie()?.is_some() => RegionAdopted::Unrecorded,
            _ => RegionAdopted::Kept,
        };
        let mut state = self.state()?;
        if state.next_gen < MARKED_GENERATIONS {
            // Only ever up: generations handed out stay below it.
            let random = uuid::Uuid::new_v4().as_u64_pair().0 >> 24;
            state.next_gen = MARKED_GENERATIONS + random;
            self.store.put_state(&self.name, &state)?;
        }
        // The generations of now; a shadow being built for this region takes the record
        // with it when it replaces the generation ([`Shadow::finish`]).
        self.store.regions.insert(key, encode(REGIONS, spec)?)?;
        self.store.region_gens.insert(key, &count_record(state.active_gen, state.next_gen))?;
        self.store.flush()?;
        Ok(adopted)
    }

    /// The region this replica was last kept for ([`Replica::adopt_region`]); `None` for
    /// a replica of a build that kept no record of it, or one never started.
    pub fn region(&self) -> Result<Option<SearchSpec>> {
        self.store.regions.get(self.name.as_bytes())?.map(|v| decode(REGIONS, &v)).transpose()
    }

    /// Whether the region on record was written for other generations than the
    /// replica's: a build that keeps no record of regions reloaded it, or made it again,
    /// since (see [`Replica::adopt_region`]), so the record says nothing of what it holds.
    pub fn region_outdated(&self) -> Result<bool> {
        let Some((gen, next)) = self.region_mark()? else { return Ok(false) };
        let state = self.state()?;
        Ok(state.active_gen != gen || state.next_gen < next)
    }

    /// The active and next generations the region on record was written for; `None` in
    /// stores of builds that did not record them.
    fn region_mark(&self) -> Result<Option<(u64, u64)>> {
        self.store.region_gens.get(self.name.as_bytes())?.map(|v| parse_count_record(&v)).transpose()
    }

    /// This replica's record in `tree` (named `tree_name` in errors), one big-endian `u64`.
    fn u64_record(&self, tree: &Tree, tree_name: &str) -> Result<Option<u64>> {
        match tree.get(self.name.as_bytes())? {
            None => Ok(None),
            Some(bytes) => match <[u8; 8]>::try_from(bytes.as_ref()) {
                Ok(value) => Ok(Some(u64::from_be_bytes(value))),
                Err(_) => Err(StoreError::Corrupt(format!(
                    "{tree_name} record of {:?} is {} bytes, not 8",
                    self.name,
                    bytes.len()
                ))),
            },
        }
    }

    /// When the replica was last known current (milliseconds since the Unix epoch), as
    /// [`Replica::record_current_at`] last recorded it: what its staleness counts from
    /// when the consumer starts again, which otherwise could tell only the time since
    /// its own start, and so showed a replica whose provider was down across a restart
    /// as fresher than it was.
    pub fn current_at(&self) -> Result<Option<u64>> {
        self.u64_record(&self.store.current, CURRENT)
    }

    /// Records that the replica was current at `at_ms` (milliseconds since the Unix
    /// epoch). Not flushed here: sled writes it within its flush interval, and a record
    /// a crash loses leaves an older one, which only overstates the staleness.
    pub fn record_current_at(&self, at_ms: u64) -> Result<()> {
        self.store.current.insert(self.name.as_bytes(), &at_ms.to_be_bytes())?;
        Ok(())
    }

    /// When a provider of this agreement first proved it knows the agreement's secret
    /// (milliseconds since the Unix epoch), if one has. From then on the consumer refuses a
    /// provider that does not prove itself: it cannot tell a provider rolled back to an
    /// older build from an impostor, and the impostor could empty the replica.
    pub fn provider_proved_at(&self) -> Result<Option<u64>> {
        self.u64_record(&self.store.proved, PROVED)
    }

    /// Records, durably, that a provider proved itself at `at_ms` (milliseconds since the
    /// Unix epoch), unless one already had: the first time is kept.
    pub fn record_provider_proved(&self, at_ms: u64) -> Result<()> {
        let recorded = self.store.proved.compare_and_swap(
            self.name.as_bytes(),
            None as Option<&[u8]>,
            Some(&at_ms.to_be_bytes()),
        )?;
        if recorded.is_ok() {
            self.store.flush()?;
        }
        Ok(())
    }

    /// Whether an operator stopped this agreement (persisted across restarts).
    pub fn is_admin_stopped(&self) -> Result<bool> {
        Ok(self.state()?.admin_stopped)
    }

    /// Records an operator's stop or start, durably.
    pub fn set_admin_stopped(&self, stopped: bool) -> Result<()> {
        let state = ReplicaState { admin_stopped: stopped, ..self.state()? };
        self.store.put_state(&self.name, &state)?;
        self.store.flush()
    }

    /// Starts a shadow reload for a refresh of `kind`; any earlier unfinished shadow is
    /// discarded.
    pub fn begin_shadow(&self, kind: RefreshKind) -> Result<Shadow> {
        let mut state = self.state()?;
        let discarded = take_shadow(&mut state);
        let gen = state.next_gen.max(state.active_gen + 1);
        state.next_gen = gen + 1;
        state.shadow = Some(gen);
        self.store.put_state(&self.name, &state)?;
        self.free_shadow(discarded)?;
        let set = self.store.set_for(&self.name, gen)?;
        // A new generation's trees are empty (generation numbers are never reused, and a
        // shadow's trees are dropped with it); checked anyway, one key, so that a count
        // started at zero is never wrong.
        let entries = set.is_empty().then_some(0);
        Ok(Shadow { replica: self.clone(), gen, set, kind, received: 0, entries, catch_up_from: None })
    }

    /// Discards an unfinished shadow, if any (a refresh that will not be continued).
    pub fn abandon_shadow(&self) -> Result<()> {
        let mut state = self.state()?;
        if state.shadow.is_some() {
            let discarded = take_shadow(&mut state);
            self.store.put_state(&self.name, &state)?;
            self.free_shadow(discarded)?;
        }
        Ok(())
    }

    /// Frees what [`take_shadow`] took out of the state, once the state without it is
    /// written (ahead in sled's log): whatever survives a crash, a state that names a
    /// shadow has its trees and its record of data past the catch-up's start.
    fn free_shadow(&self, discarded: Option<u64>) -> Result<()> {
        self.store.beyond.remove(shadow_beyond_key(&self.name))?;
        if let Some(old) = discarded {
            self.store.drop_generation(&self.name, old)?;
        }
        Ok(())
    }

    /// The resume point of an unfinished shadow refresh of region `spec`, to offer the
    /// provider; `None` if there is nothing to continue.
    ///
    /// A shadow whose catch-up applied anything is not continued: the entries it read
    /// may be later writes than any position the provider was asked about, and a
    /// provider restored from a copy since may not have made them. Nothing says, before
    /// the handshake, whether this one did; the refresh starts over instead.
    pub fn resume_point(&self, spec: &SearchSpec) -> Result<Option<ResumePoint>> {
        let state = self.state()?;
        if state.shadow.is_some() && self.shadow_beyond()?.is_some() {
            return Ok(None);
        }
        Ok(match (state.shadow, state.shadow_progress) {
            (Some(_), Some(p)) if p.spec == *spec => Some(p.resume),
            _ => None,
        })
    }

    /// The unfinished shadow, to continue filling it: the provider accepted its resume
    /// point. Fails with [`StoreError::StaleShadow`] if there is none any more.
    pub fn resume_shadow(&self) -> Result<Shadow> {
        let state = self.state()?;
        let (Some(gen), Some(progress)) = (state.shadow, state.shadow_progress) else {
            return Err(StoreError::StaleShadow(self.name.to_string()));
        };
        let set = self.store.set_for(&self.name, gen)?;
        // What it holds is not known without counting: data written after its last resume
        // point survives a crash and is sent again. Counted when it is swapped in.
        Ok(Shadow {
            replica: self.clone(),
            gen,
            set,
            kind: progress.resume.kind,
            received: progress.received,
            entries: None,
            catch_up_from: Some(progress.resume.start.csn),
        })
    }
}

/// Applies one op inside a transaction (see the module docs for the rules); returns
/// whether it changed the replica.
fn apply_op(
    tx: &TxEntrySet<'_>,
    op: Incoming<'_>,
    stats: &mut ApplyStats,
    mut noted: Option<&mut Vec<Reshaped>>,
) -> Result<bool, TxError> {
    // One note for each count of `stats.reshaped()`, when noting.
    let mut note = |change: Reshaped| {
        if let Some(noted) = noted.as_deref_mut() {
            noted.push(change);
        }
    };
    match op {
        Incoming::Upsert { dn, uuid, csn, entry } => {
            // Most upserts change an entry in place: the record at its DN is the entry
            // itself, found without the UUID index (a random read on a large replica).
            let new_key = dn.tree_key();
            let holder = tx.head_at(&new_key)?;
            let current = match holder {
                Some((held, held_csn)) if held == uuid => Some((new_key.clone(), held_csn)),
                _ => tx.locate(&uuid)?,
            };
            if let Some((_, held_csn)) = &current {
                if *held_csn >= csn {
                    stats.skipped += 1;
                    return Ok(false);
                }
            }
            if let Some((held, _)) = holder {
                if held != uuid {
                    tx.remove(&new_key, &held)?;
                    stats.removed += 1;
                    note(Reshaped::At(new_key.clone()));
                }
            }
            let bytes = entry.to_ivec(ENTRIES).map_err(ConflictableTransactionError::Abort)?;
            stats.written += bytes.len() as u64;
            match &current {
                None => {
                    stats.created += 1;
                    note(Reshaped::At(new_key.clone()));
                }
                Some((key, _)) if *key != new_key => {
                    stats.renamed += 1;
                    note(Reshaped::Moved(key.clone(), new_key.clone()));
                }
                Some(_) => {}
            }
            tx.put_encoded(current.as_ref().map(|(k, _)| k.as_slice()), new_key, &uuid, bytes)?;
            stats.applied += 1;
            Ok(true)
        }
        Incoming::Delete { uuid, csn } => match tx.locate(&uuid)? {
            // A state at or after the delete's: the delete is older than what is held
            // (protocol.md, section 5), like an upsert that is. No provider of ours sends
            // one (a delete carries the CSN of the state that removed the entry, later
            // than any state of it); one that did would otherwise remove an entry the
            // next delta never brings back.
            Some((_, held_csn)) if held_csn >= csn => {
                stats.skipped += 1;
                Ok(false)
            }
            Some((key, _)) => {
                tx.remove(&key, &uuid)?;
                stats.removed += 1;
                note(Reshaped::At(key));
                stats.applied += 1;
                Ok(true)
            }
            None => {
                tx.uuids.remove(uuid.as_bytes())?;
                stats.skipped += 1;
                Ok(false)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{
        Attributes, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, ResumePoint, SearchSpec, Value,
    };

    use super::{Replica, ReplicaStore, FLUSH_AFTER_BYTES};

    /// A fresh store in a temporary directory, its replica `people`, a history for its
    /// cookies and the region `dc=example`.
    struct Fixture {
        store: ReplicaStore,
        r: Replica,
        history: HistoryId,
        region: SearchSpec,
        /// Last, so that it is removed after the store is closed.
        tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let store = ReplicaStore::open(tmp.path()).unwrap();
            let r = store.replica("people").unwrap();
            let history = HistoryId::new_random();
            let region = SearchSpec::subtree(Dn::parse("dc=example").unwrap());
            Self { store, r, history, region, tmp }
        }

        /// The cookie at `csn` in the fixture's history.
        fn at(&self, csn: u64) -> Cookie {
            Cookie { history: self.history, csn: Csn(csn) }
        }

        /// A full refresh's resume point whose catch-up starts at `start`, its scan not begun.
        fn full_from(&self, start: u64) -> ResumePoint {
            ResumePoint { kind: RefreshKind::Full, since: Csn(0), start: self.at(start), cursor: None }
        }
    }

    fn big_entries(from: u32, n: u32) -> Vec<ReplOp> {
        entries_of(from, n, 64 << 10)
    }

    /// `n` entries numbered from `from`, each with a description of `size` bytes.
    fn entries_of(from: u32, n: u32, size: usize) -> Vec<ReplOp> {
        (from..from + n)
            .map(|i| {
                let mut attrs = Attributes::new();
                attrs.add("objectClass", [Value::from("person")]).unwrap();
                attrs.add("description", [Value::from("x".repeat(size).as_str())]).unwrap();
                ReplOp::Upsert(Entry {
                    dn: Dn::parse(&format!("uid=p{i:04},dc=example")).unwrap(),
                    uuid: EntryUuid::new_time_ordered(),
                    csn: Csn(u64::from(i) + 1),
                    attrs,
                })
            })
            .collect()
    }

    /// A reload's scan that sends one entryUUID at two DNs, or one DN under two
    /// entryUUIDs, in one batch or across two, is a provider's fault: the shadow is
    /// discarded and the replica stays as it was. Kept, the first entry stayed in the
    /// replica with no index leading to it, so no delete could ever remove it (found by
    /// a walkthrough of a hostile provider). An entry sent again as it was is no fault.
    #[test]
    fn a_reload_that_sends_one_entry_twice_is_discarded_and_the_replica_kept() {
        let f = Fixture::new();
        f.r.apply(&entries_of(0, 3, 10), Some(f.at(3))).unwrap();
        let before = f.r.search(&f.region).unwrap();
        let upsert = |op: &ReplOp| match op {
            ReplOp::Upsert(e) => e.clone(),
            _ => unreachable!(),
        };
        let scan = entries_of(10, 4, 10);
        let (a, b) = (upsert(&scan[0]), upsert(&scan[1]));
        let same_uuid = Entry { dn: Dn::parse("uid=elsewhere,dc=example").unwrap(), ..a.clone() };
        let same_dn = Entry { uuid: EntryUuid::new_time_ordered(), ..b.clone() };
        let cases: [(&str, Vec<Vec<ReplOp>>, &str); 4] = [
            ("a UUID across batches", vec![scan.clone(), vec![ReplOp::Upsert(same_uuid.clone())]], "twice, the second"),
            ("a UUID within a batch", vec![[scan.clone(), vec![ReplOp::Upsert(same_uuid)]].concat()], "entryUUID"),
            ("a DN across batches", vec![scan.clone(), vec![ReplOp::Upsert(same_dn.clone())]], "under two entryUUIDs"),
            ("a DN within a batch", vec![[scan.clone(), vec![ReplOp::Upsert(same_dn)]].concat()], "uid=p0011"),
        ];
        for (case, batches, says) in cases {
            let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
            let resume = ResumePoint { cursor: Some(b"k".to_vec()), ..f.full_from(20) };
            shadow.record_progress(&f.region, resume).unwrap();
            let (last, first) = batches.split_last().unwrap();
            for batch in first {
                shadow.apply_scan(batch).unwrap();
            }
            let err = shadow.apply_scan(last).expect_err(case).to_string();
            assert!(err.contains(says) && err.contains("the reload is discarded"), "{case}: {err}");
            assert_eq!(f.r.resume_point(&f.region).unwrap(), None, "{case}: the next session starts afresh");
            assert_eq!(f.r.search(&f.region).unwrap(), before, "{case}: the replica as it was");
            assert_eq!(f.r.len().unwrap(), 3, "{case}");
        }
        // The same entry again, as a resumed scan after a crash may send it, is taken.
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&scan).unwrap();
        shadow.apply_scan(&[ReplOp::Upsert(a), ReplOp::Upsert(b)]).unwrap();
        shadow.finish(f.at(20)).unwrap();
        assert_eq!(f.r.search(&f.region).unwrap().len(), 4);
        assert_eq!(f.r.len().unwrap(), 4, "counted once");
    }

    /// Entries a refresh read as they were when read can be later writes than the cookie
    /// its `RefreshDone` names, and a change read from the provider's changelog later
    /// than the change: the replica is then past its cookie, and says so until a cookie
    /// covers what it holds. `RefreshDone` used to clear the record, and a provider
    /// restored from a copy taken before those writes (which gives their CSNs to other
    /// changes) resumed the replica by delta: the lost write stayed in it, and the
    /// change that took its CSN was skipped as already held (found by a walkthrough).
    #[test]
    fn a_replica_holding_later_writes_than_its_cookie_says_so_until_a_cookie_covers_them() {
        let f = Fixture::new();
        // A delta's batch, its last entry read at csn 10; its RefreshDone names 9.
        f.r.apply_delta_batch(&entries_of(0, 10, 10), f.history).unwrap();
        f.r.advance(f.at(9)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), Some(f.at(10)), "past its cookie by the entry at 10");
        f.r.advance(f.at(10)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), None, "covered");
        // A live change at 11 carrying its entry as written at 13.
        f.r.apply(&entries_of(12, 1, 10), Some(f.at(11))).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), Some(f.at(13)));
        f.r.apply(&entries_of(13, 1, 10), Some(f.at(14))).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), None);

        // A full refresh whose catch-up read a write at 25, later than its cookie at 24:
        // the shadow is swapped in past its cookie, and says so.
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(20, 3, 10)).unwrap();
        let resume = f.full_from(23);
        shadow.record_progress(&f.region, resume.clone()).unwrap();
        assert_eq!(f.r.resume_point(&f.region).unwrap(), Some(resume.clone()), "a scan cut short is continued");
        shadow.apply(&entries_of(24, 1, 10)).unwrap();
        // Cut short in its catch-up, it would start over: what the catch-up applied may
        // be later writes than any position the next provider is asked about.
        assert_eq!(f.r.resume_point(&f.region).unwrap(), None);
        shadow.finish(f.at(24)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), Some(f.at(25)));
        assert_eq!(f.r.shadow_beyond().unwrap(), None, "the shadow's own record went with it");
        // A reload whose catch-up stayed at its cookie leaves none; nor do entries at or
        // below the catch-up's start (a present refresh's unchanged ones, copied).
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.record_progress(&f.region, f.full_from(29)).unwrap();
        shadow.apply(&entries_of(27, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), None);
        assert!(f.r.resume_point(&f.region).unwrap().is_some());
        shadow.apply(&entries_of(30, 1, 10)).unwrap();
        shadow.finish(f.at(31)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), None);
        // A shadow discarded or aborted takes its record with it.
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.record_progress(&f.region, f.full_from(39)).unwrap();
        shadow.apply(&entries_of(40, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), Some(Csn(41)));
        f.r.abandon_shadow().unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), None);
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.record_progress(&f.region, f.full_from(49)).unwrap();
        shadow.apply(&entries_of(50, 1, 10)).unwrap();
        shadow.abort().unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), None);
    }

    /// A shadow continued in a later session (its resume point accepted) keeps the start
    /// of its refresh's catch-up from that point on: what its catch-up applies past the
    /// start is recorded before it is written, as in the session that began it. Else a
    /// resumed reload swapped in holding later writes than its cookie would not say so,
    /// and a provider restored from a copy taken before those writes would resume it by
    /// delta, the lost writes kept for good.
    #[test]
    fn a_resumed_shadow_records_what_its_catch_up_applies_past_its_start() {
        let mut f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        let resume = f.full_from(23);
        shadow.record_progress(&f.region, resume.clone()).unwrap();
        f.store.flush().unwrap();
        drop((shadow, f.r, f.store));

        f.store = crate::test_changes::unlocked(|| ReplicaStore::open(f.tmp.path())).unwrap();
        f.r = f.store.replica("people").unwrap();
        assert_eq!(f.r.resume_point(&f.region).unwrap(), Some(resume));
        let mut shadow = f.r.resume_shadow().unwrap();
        // The catch-up's change at 24 carries its entry as written at 25.
        shadow.apply(&entries_of(24, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), Some(Csn(25)));
        assert_eq!(f.r.resume_point(&f.region).unwrap(), None, "cut short now, it would start over");
        shadow.finish(f.at(24)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), Some(f.at(25)), "swapped in past its cookie, and says so");
    }

    /// A state at the very CSN a refresh's catch-up starts from is one the provider had
    /// made when the refresh began, no later write: a shadow holding it (a present
    /// refresh's unchanged entry, say) is still continued after a cut, not refilled from
    /// nothing, which for a large replica costs the whole reload again.
    #[test]
    fn a_catch_up_state_at_its_start_keeps_the_shadow_continuable() {
        let f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        let resume = f.full_from(29);
        shadow.record_progress(&f.region, resume.clone()).unwrap();
        // The entry written at 29, the start itself.
        shadow.apply(&entries_of(28, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), None);
        assert_eq!(f.r.resume_point(&f.region).unwrap(), Some(resume));
        shadow.apply(&entries_of(29, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), Some(Csn(30)), "one past it is");
    }

    /// A refresh's catch-up is coalesced, not in CSN order: a later batch may carry
    /// older states than an earlier one. The shadow's record of how far past its start
    /// it holds data only ever rises, or the reload would be swapped in claiming less
    /// than it holds, and a provider restored from a copy without the newest of those
    /// writes would resume it by delta.
    #[test]
    fn a_shadow_s_record_past_its_start_is_never_lowered_by_an_older_batch() {
        let f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        let resume = f.full_from(39);
        shadow.record_progress(&f.region, resume).unwrap();
        shadow.apply(&entries_of(44, 1, 10)).unwrap();
        shadow.apply(&entries_of(41, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), Some(Csn(45)));
        shadow.finish(f.at(40)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), Some(f.at(45)));
    }

    /// A reload's progress in status counts the entries received (upserts, and the
    /// unchanged entries a present refresh names), not the deletes its catch-up brings:
    /// an operator comparing it with the provider's entry count would otherwise read a
    /// reload as further on than it is.
    #[test]
    fn a_shadow_counts_entries_received_not_deletes() {
        let f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        let scan = entries_of(0, 3, 10);
        shadow.apply_scan(&scan).unwrap();
        assert_eq!(shadow.received(), 3);
        let uuid = match &scan[0] {
            ReplOp::Upsert(e) => e.uuid,
            _ => unreachable!(),
        };
        let catch_up = [ReplOp::Delete { uuid, csn: Csn(9) }, entries_of(10, 1, 10).remove(0)];
        shadow.apply(&catch_up).unwrap();
        assert_eq!(shadow.received(), 4, "the upsert, not the delete");
        assert_eq!(shadow.len(), 3);
    }

    /// A resume point says what one shadow holds: a shadow replaced by a newer reload
    /// (its session outlived by the next one) cannot lend its point to the new shadow,
    /// which would then be continued past data it never received and swapped in
    /// missing entries for good.
    #[test]
    fn a_replaced_shadow_cannot_record_its_progress_for_the_new_one() {
        let f = Fixture::new();
        let resume = ResumePoint { cursor: Some(b"uid=p0099".to_vec()), ..f.full_from(20) };
        let mut old = f.r.begin_shadow(RefreshKind::Full).unwrap();
        old.apply_scan(&entries_of(0, 100, 10)).unwrap();
        let _new = f.r.begin_shadow(RefreshKind::Full).unwrap();
        let err = old.record_progress(&f.region, resume).expect_err("a stale shadow");
        assert!(matches!(err, crate::StoreError::StaleShadow(_)), "{err}");
        assert_eq!(f.r.resume_point(&f.region).unwrap(), None);
        assert_eq!(f.r.state().unwrap().shadow_progress, None);
    }

    /// A shadow another reload has replaced is being freed: swapped in, it would make
    /// the replica a generation the reaper is emptying, under a cookie that claims all
    /// of it. Its finish fails instead, and the replica stays as it was.
    #[test]
    fn a_replaced_shadow_cannot_be_swapped_in() {
        let f = Fixture::new();
        f.r.apply(&entries_of(0, 2, 10), Some(f.at(2))).unwrap();
        let mut old = f.r.begin_shadow(RefreshKind::Full).unwrap();
        old.apply_scan(&entries_of(10, 5, 10)).unwrap();
        let new = f.r.begin_shadow(RefreshKind::Full).unwrap();
        let err = old.finish(f.at(20)).expect_err("a stale shadow");
        assert!(matches!(err, crate::StoreError::StaleShadow(_)), "{err}");
        assert_eq!(f.r.cookie().unwrap(), Some(f.at(2)));
        assert_eq!(f.r.len().unwrap(), 2);
        assert_eq!(f.r.state().unwrap().shadow, Some(new.gen), "the newer reload is still the one on record");
    }

    /// An aborted reload is forgotten along with its trees: still on record with its
    /// resume point, the next session would continue a generation the reaper is
    /// emptying, and swap it in missing what it had.
    #[test]
    fn an_aborted_shadow_is_no_longer_offered_for_resumption() {
        let f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        let resume = ResumePoint { cursor: Some(b"uid=p0002".to_vec()), ..f.full_from(20) };
        shadow.record_progress(&f.region, resume).unwrap();
        let gen = shadow.gen;
        shadow.abort().unwrap();
        assert_eq!(f.r.state().unwrap().shadow, None);
        assert_eq!(f.r.resume_point(&f.region).unwrap(), None);
        assert!(matches!(f.r.resume_shadow(), Err(crate::StoreError::StaleShadow(_))));
        reaped(&f.store);
        let trees = generation_trees(&f.store);
        assert!(!trees.iter().any(|t| t.starts_with(&format!("r/people/{gen}/"))), "{trees:?}");
    }

    /// An entryUUID's index may lead to a DN another entry holds now (a scan cut short
    /// after writing a batch's index, its entries sent again under other UUIDs). The
    /// record's own UUID is the truth: a present refresh naming that UUID as unchanged
    /// finds it missing and asks for a full refresh, instead of copying the other entry
    /// in its place and losing the one named.
    #[test]
    fn an_index_leading_to_another_entry_finds_nothing() {
        let f = Fixture::new();
        let ops = entries_of(0, 2, 10);
        f.r.apply(&ops, Some(f.at(2))).unwrap();
        let (a, b) = match (&ops[0], &ops[1]) {
            (ReplOp::Upsert(a), ReplOp::Upsert(b)) => (a.clone(), b.clone()),
            _ => unreachable!(),
        };
        let set = f.r.entries().unwrap();
        let ghost = EntryUuid::new_time_ordered();
        set.uuids.insert(ghost.as_bytes(), b.dn.tree_key()).unwrap();
        assert_eq!(set.get_by_uuid(&ghost).unwrap(), None);
        assert_eq!(set.get_by_uuid(&b.uuid).unwrap(), Some(b.clone()));
        let mut shadow = f.r.begin_shadow(RefreshKind::Present).unwrap();
        let err = shadow.copy_present(&[a.uuid, ghost]).expect_err("one named entry is missing");
        assert!(matches!(err, crate::StoreError::MissingPresentEntries(1)), "{err}");
    }

    /// A search printed page by page while a reload is swapped in reads two generations,
    /// whatever its scope: the swap is counted, so that the search can say its output may
    /// mix them, where it would otherwise pass for a consistent copy.
    #[test]
    fn a_reload_s_swap_is_seen_by_a_search_under_way_whatever_its_scope() {
        let f = Fixture::new();
        f.r.apply(&entries_of(0, 3, 10), Some(f.at(9))).unwrap();
        let elsewhere = SearchSpec::subtree(Dn::parse("ou=elsewhere,dc=example").unwrap());
        let watch = f.r.watch_reshapes();
        let before = f.r.reshapes();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        assert_eq!(watch.since(&elsewhere).swaps, 0, "a shadow filled is not yet seen");
        shadow.finish(f.at(9)).unwrap();
        assert_eq!(watch.since(&elsewhere).swaps, 1);
        assert!(!watch.since(&elsewhere).is_whole());
        assert_eq!(f.r.reshapes().swaps, before.swaps + 1);
    }

    /// A reload by a build that keeps no record of regions (a rollback) leaves the
    /// record naming the generation it replaced: taken for what it says, the file set
    /// back to that region would resume a replica of another region by delta. The
    /// replica is reloaded in full instead; a shadow the switch to which a crash cut
    /// off is not taken for such a reload.
    #[test]
    fn a_region_recorded_before_an_older_build_s_reload_is_outdated() {
        use super::RegionAdopted;
        let f = Fixture::new();
        let cookie =
            |csn: u64| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        let refresh = |n: u32, csn: u64| {
            let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
            shadow.apply_scan(&entries_of(0, n, 10)).unwrap();
            shadow.finish(cookie(csn)).unwrap();
        };
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Kept);
        refresh(3, 10);
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Kept, "this build's reload moved the record");
        assert!(!f.r.region_outdated().unwrap());

        // What the older build leaves: its reload, and the record as it was before.
        let before = f.store.region_gens.get(b"people").unwrap().unwrap();
        refresh(2, 20);
        f.store.region_gens.insert(b"people", before).unwrap();
        assert!(f.r.region_outdated().unwrap());
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Outdated);
        assert_eq!(f.r.cookie().unwrap(), None, "reloaded in full at its next session");
        assert!(!f.r.region_outdated().unwrap(), "the record is of the generation it holds now");
        refresh(3, 30);
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Kept);

        assert!(f.r.state().unwrap().next_gen >= super::MARKED_GENERATIONS, "{:?}", f.r.state().unwrap());

        // A shadow begun since hands out a generation: the replica is still the one on
        // record, and an older build's deltas change no generation either.
        let shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.abort().unwrap();
        f.r.apply(&entries_of(10, 1, 10), Some(cookie(31))).unwrap();
        assert!(!f.r.region_outdated().unwrap());

        // What an older build leaves when it removes a replica and makes it again (an
        // agreement taken out, reloaded, put back with another region, reloaded), then
        // fills it: generations counted from 0 again, up to the very one on record for
        // a replica that had one refresh before this build first ran.
        let one_refresh =
            |csn| super::ReplicaState { active_gen: 1, next_gen: 2, cookie: Some(cookie(csn)), ..Default::default() };
        let legacy = f.store.replica("legacy").unwrap();
        f.store.put_state("legacy", &one_refresh(40)).unwrap();
        assert_eq!(legacy.adopt_region(&f.region).unwrap(), RegionAdopted::Unrecorded);
        assert_eq!(legacy.adopt_region(&f.region).unwrap(), RegionAdopted::Kept);
        f.store.put_state("legacy", &one_refresh(41)).unwrap();
        assert!(legacy.region_outdated().unwrap());
        assert_eq!(legacy.adopt_region(&f.region).unwrap(), RegionAdopted::Outdated);
        assert_eq!(legacy.cookie().unwrap(), None);
    }

    /// An operator's stop is kept until the operator starts the agreement again,
    /// whatever the replica goes through meanwhile: a reload that was swapping in as the
    /// stop came, or a delta applied then, must not start the agreement again at the next
    /// restart behind the operator's back.
    #[test]
    fn an_operator_s_stop_outlives_a_reload_and_a_delta_finished_after_it() {
        let f = Fixture::new();
        let cookie =
            |csn: u64| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        f.r.set_admin_stopped(true).unwrap();
        shadow.finish(cookie(10)).unwrap();
        assert!(f.r.is_admin_stopped().unwrap(), "after the reload's swap");
        f.r.apply(&entries_of(3, 1, 10), Some(cookie(11))).unwrap();
        assert!(f.r.is_admin_stopped().unwrap(), "after a delta");
        drop((f.r, f.store));
        let store = crate::test_changes::unlocked(|| ReplicaStore::open(f.tmp.path())).unwrap();
        let r = store.replica("people").unwrap();
        assert!(r.is_admin_stopped().unwrap(), "after a restart");
        assert_eq!(r.len().unwrap(), 4);
        r.set_admin_stopped(false).unwrap();
        assert!(!r.is_admin_stopped().unwrap());
    }

    /// A region recorded by a build from before the record named its generations is
    /// kept, and marked with them at this start: left unmarked, a rollback's later reload
    /// of the replica (for another region, say) would go unseen, and the roll forward
    /// resume by delta a replica of the other region.
    #[test]
    fn a_region_on_record_without_its_generations_is_marked_at_the_next_start() {
        use super::RegionAdopted;
        let f = Fixture::new();
        let cookie =
            |csn: u64| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        let refresh = |csn: u64| {
            let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
            shadow.apply_scan(&entries_of(0, 2, 10)).unwrap();
            shadow.finish(cookie(csn)).unwrap();
        };
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Kept);
        refresh(10);
        // As the build that recorded regions but not their generations left it.
        f.store.region_gens.remove(b"people").unwrap();
        assert_eq!(f.r.region_mark().unwrap(), None);
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Kept);
        assert!(f.r.cookie().unwrap().is_some(), "resumes from its cookie");
        let state = f.r.state().unwrap();
        assert_eq!(f.r.region_mark().unwrap(), Some((state.active_gen, state.next_gen)));
        // An older build's reload since is seen now.
        let before = f.store.region_gens.get(b"people").unwrap().unwrap();
        refresh(20);
        f.store.region_gens.insert(b"people", before).unwrap();
        assert_eq!(f.r.adopt_region(&f.region).unwrap(), RegionAdopted::Outdated);
    }

    /// An older build (a rollback) applies changes without moving the replica's count
    /// or the cookie it was right at: the next open by this build counts again, and
    /// leaves alone a count that kept up.
    #[test]
    fn a_replica_count_an_older_build_left_behind_is_redone_at_open() {
        let f = Fixture::new();
        let cookie =
            |csn: u64| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        shadow.finish(cookie(10)).unwrap();
        f.r.apply(&entries_of(3, 2, 10), Some(cookie(12))).unwrap();
        assert_eq!(f.r.len().unwrap(), 5);
        // What the older build leaves: two more entries and a later cookie, the count
        // and its cookie's CSN as they were.
        let (count, at) = (
            f.store.counts.get(b"people").unwrap().unwrap(),
            f.store.counts.get(super::count_at_key("people")).unwrap().unwrap(),
        );
        f.r.apply(&entries_of(5, 2, 10), Some(cookie(14))).unwrap();
        f.store.counts.insert(b"people", count).unwrap();
        f.store.counts.insert(super::count_at_key("people"), at).unwrap();
        assert_eq!(f.r.len().unwrap(), 5, "the count as the older build left it");
        f.store.flush().unwrap();
        drop((f.r, f.store));
        let store = crate::test_changes::unlocked(|| ReplicaStore::open(f.tmp.path())).unwrap();
        let r = store.replica("people").unwrap();
        assert_eq!(r.len().unwrap(), 7, "counted again at open");
        // One this build kept up is left alone (a scan at every open would cost seconds
        // at a million entries).
        r.apply(&entries_of(7, 1, 10), Some(cookie(15))).unwrap();
        store.counts.insert(b"people", &super::count_record(r.state().unwrap().active_gen, 100)).unwrap();
        store.flush().unwrap();
        drop((r, store));
        let store = crate::test_changes::unlocked(|| ReplicaStore::open(f.tmp.path())).unwrap();
        assert_eq!(store.replica("people").unwrap().len().unwrap(), 100);
    }

    /// A reload writes without flushing until it ends, and sled never makes a writer
    /// wait for the disk: the store flushes by itself once `FLUSH_AFTER_BYTES` of
    /// entries have gathered, on every write path, so the log waiting for the disk
    /// stays bounded.
    #[test]
    fn writes_flush_once_their_unflushed_bytes_pass_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(tmp.path()).unwrap();
        let unflushed = || store.unflushed.load(std::sync::atomic::Ordering::Relaxed);
        let mut shadow = store.replica("r").unwrap().begin_shadow(RefreshKind::Full).unwrap();
        // 64 KiB entries: a bound's worth is 64 of them.
        let per_bound = (FLUSH_AFTER_BYTES >> 16) as u32;
        shadow.apply_scan(&big_entries(0, per_bound / 2)).unwrap();
        let half = unflushed();
        assert!((FLUSH_AFTER_BYTES / 2..FLUSH_AFTER_BYTES).contains(&half), "{half}");
        shadow.apply_scan(&big_entries(per_bound / 2, per_bound / 2 + 1)).unwrap();
        assert_eq!(unflushed(), 0, "the scan write that passed the bound flushed");
        // The transactional path of a reload, and of the live replica, count too.
        shadow.apply(&big_entries(per_bound + 1, per_bound + 1)).unwrap();
        assert_eq!(unflushed(), 0, "the shadow's transactional write flushed");
        let cookie = tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(1) };
        shadow.finish(cookie).unwrap();
        let replica = store.replica("r").unwrap();
        replica.apply(&big_entries(3 * per_bound, per_bound / 2), None).unwrap();
        assert!(unflushed() >= FLUSH_AFTER_BYTES / 2);
        replica.apply(&big_entries(4 * per_bound, per_bound / 2 + 1), None).unwrap();
        assert_eq!(unflushed(), 0, "the replica's write that passed the bound flushed");
    }

    /// A reload swaps generations and drops the old one while other threads read the
    /// replica (a `search` through the control socket): a read that began on the old
    /// generation must not come back empty or cut short, nor fail, nor leave behind a
    /// tree it opened after the drop. Without the lock, sled's iterator spun forever on
    /// the dropped tree: the reader reports through a channel, so that fails the test
    /// instead of hanging it.
    #[test]
    fn a_reader_never_sees_the_generation_a_reload_drops() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        const N: usize = 300;
        let tmp = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(tmp.path()).unwrap();
        let cookie = |csn| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        let reload = |csn: u64| {
            let mut shadow = store.replica("r").unwrap().begin_shadow(RefreshKind::Full).unwrap();
            shadow.apply_scan(&entries_of(0, N as u32, 100)).unwrap();
            shadow.finish(cookie(csn)).unwrap();
        };
        reload(1);
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (replica, stop) = (store.replica("r").unwrap(), done.clone());
        std::thread::spawn(move || {
            let spec = tether_protocol::SearchSpec::subtree(Dn::parse("dc=example").unwrap());
            let (mut reads, mut wrong) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                match replica.search(&spec) {
                    Ok(found) if found.len() == N => {}
                    Ok(found) => wrong.push(format!("{} entries", found.len())),
                    Err(e) => wrong.push(e.to_string()),
                }
                match replica.len() {
                    Ok(N) => {}
                    other => wrong.push(format!("len {other:?}")),
                }
            }
            let _ = tx.send((reads, wrong));
        });
        for csn in 2..150 {
            reload(csn);
        }
        done.store(true, Ordering::Relaxed);
        let (reads, wrong) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the reader hung");
        assert!(reads > 10, "the reader ran alongside the reloads: {reads} reads");
        assert!(wrong.is_empty(), "{} of {reads} reads went wrong: {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
        reaped(&store);
        let trees = store.db.tree_names().into_iter().filter(|t| t.starts_with(b"r/")).count();
        assert_eq!(trees, 2, "the active generation's two trees, and no tree of a dropped one");
    }

    /// Waits until the reaper has freed every tree handed to it.
    fn reaped(store: &ReplicaStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while store.trees_to_free() > 0 {
            assert!(std::time::Instant::now() < deadline, "{} trees still to free", store.trees_to_free());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn generation_trees(store: &ReplicaStore) -> Vec<String> {
        let mut trees: Vec<String> = store
            .db
            .tree_names()
            .into_iter()
            .filter(|t| super::generation_of(t).is_some())
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .collect();
        trees.sort();
        trees
    }

    /// The old generation a full reload replaced is freed in the background, and the
    /// trees of generations no state names (a crash while they were freed, or before)
    /// are found and freed at the next open, the live replica untouched.
    #[test]
    fn discarded_generations_are_freed_in_the_background_and_found_again_after_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let cookie = |csn| tether_protocol::Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) };
        {
            let store = ReplicaStore::open(tmp.path()).unwrap();
            for csn in 1..=2 {
                let mut shadow = store.replica("people").unwrap().begin_shadow(RefreshKind::Full).unwrap();
                shadow.apply_scan(&entries_of(0, 3000, 100)).unwrap();
                shadow.finish(cookie(csn)).unwrap();
            }
            reaped(&store);
            assert_eq!(generation_trees(&store), ["r/people/2/entries", "r/people/2/uuids"]);
            // Left as a crash leaves them: a removed replica's generation, a swapped one.
            for orphan in ["r/ghost/3/entries", "r/people/1/uuids"] {
                store.db.open_tree(orphan).unwrap().insert("k", "v").unwrap();
            }
            store.flush().unwrap();
        }
        let store = crate::test_changes::unlocked(|| ReplicaStore::open(tmp.path())).unwrap();
        reaped(&store);
        assert_eq!(generation_trees(&store), ["r/people/2/entries", "r/people/2/uuids"]);
        assert_eq!(store.replica("people").unwrap().len().unwrap(), 3000);
    }

    /// A reload begun over an unfinished one (a session that could not continue it)
    /// discards the old shadow whole: its trees are freed now, not at the next restart,
    /// and its record of what its catch-up applied past its start goes with it, or the
    /// new reload would be swapped in claiming writes it never read.
    #[test]
    fn a_reload_begun_over_an_unfinished_one_discards_it_and_its_record() {
        let f = Fixture::new();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(0, 3, 10)).unwrap();
        let resume = f.full_from(39);
        shadow.record_progress(&f.region, resume).unwrap();
        shadow.apply(&entries_of(40, 1, 10)).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), Some(Csn(41)));
        let old = shadow.gen;
        drop(shadow);

        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        assert_eq!(f.r.shadow_beyond().unwrap(), None, "the discarded shadow's record went with it");
        reaped(&f.store);
        let trees = generation_trees(&f.store);
        assert!(!trees.iter().any(|t| t.starts_with(&format!("r/people/{old}/"))), "{trees:?}");
        shadow.apply_scan(&entries_of(0, 2, 10)).unwrap();
        shadow.finish(f.at(30)).unwrap();
        assert_eq!(f.r.beyond_cookie().unwrap(), None);
        assert_eq!(f.r.len().unwrap(), 2);
    }

    /// An agreement removed in the middle of a reload leaves nothing behind: the
    /// unfinished shadow's trees are freed with the active generation's, at once, not
    /// at some later restart (a reload of a million entries is gigabytes on disk).
    #[test]
    fn a_removed_replica_s_unfinished_shadow_is_freed_with_it() {
        let f = Fixture::new();
        f.r.apply(&entries_of(0, 3, 10), Some(f.at(5))).unwrap();
        let mut shadow = f.r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&entries_of(10, 3, 10)).unwrap();
        drop(shadow);
        f.store.replica("groups").unwrap().apply(&entries_of(20, 1, 10), Some(f.at(5))).unwrap();
        f.store.remove("people").unwrap();
        reaped(&f.store);
        let trees = generation_trees(&f.store);
        assert!(trees.iter().all(|t| t.starts_with("r/groups/")), "{trees:?}");
        assert_eq!(trees.len(), 2, "{trees:?}");
        assert!(f.store.existing_replica("people").unwrap().is_none());
    }

    /// When a replica was last current is its own, outlives a restart of the store
    /// (written without a flush of its own: closing the store writes it), and goes
    /// with its agreement, so that one added back under the name starts with none.
    #[test]
    fn when_a_replica_was_last_current_is_kept_per_agreement_until_it_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = ReplicaStore::open(tmp.path()).unwrap();
            let (people, groups) = (store.replica("people").unwrap(), store.replica("groups").unwrap());
            assert_eq!(people.current_at().unwrap(), None, "never current");
            people.record_current_at(1_700_000_000_000).unwrap();
            people.record_current_at(1_700_000_005_000).unwrap();
            groups.record_current_at(1_600_000_000_000).unwrap();
        }
        let store = ReplicaStore::open(tmp.path()).unwrap();
        assert_eq!(store.replica("people").unwrap().current_at().unwrap(), Some(1_700_000_005_000));
        assert_eq!(store.replica("groups").unwrap().current_at().unwrap(), Some(1_600_000_000_000));
        store.remove("people").unwrap();
        assert_eq!(store.replica("people").unwrap().current_at().unwrap(), None, "removed with its agreement");
        assert_eq!(store.replica("groups").unwrap().current_at().unwrap(), Some(1_600_000_000_000));
    }

    /// A replica made again under the name of one whose generations are still being
    /// freed (its agreement removed and added back) takes generations past theirs: the
    /// reaper would empty it otherwise.
    #[test]
    fn a_replica_made_again_takes_generations_past_those_still_being_freed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(tmp.path()).unwrap();
        // As if still being freed: a tree of generation 4 no state names.
        store.db.open_tree("r/people/4/entries").unwrap().insert("k", "v").unwrap();
        let replica = store.replica("people").unwrap();
        assert_eq!(replica.state().unwrap().active_gen, 5);
        assert_eq!(super::generation_of(b"r/a/b/7/uuids"), Some(("a/b", 7)));
        assert_eq!(super::generation_of(b"r/people/audit"), None);
    }
}
