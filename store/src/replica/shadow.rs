//! A replica generation under construction: a full or present refresh fills it while
//! readers keep the active generation, and [`Shadow::finish`] swaps it in with its
//! cookie in one write.

use sled::transaction::{ConflictableTransactionError, Transactional};
use sled::IVec;
use tether_protocol::{Cookie, Csn, EntryUuid, RefreshKind, ReplOp, ResumePoint, SearchSpec};

use super::{
    apply_op, audit_tree_name, count_at_key, count_record, newest_csn, shadow_beyond_key, take_shadow, ApplyStats,
    Incoming, IncomingOp, Replica, ShadowProgress, BEYOND, REPLICAS, SHADOW_ENTRIES,
};
use crate::entry_set::{EntrySet, TxEntrySet};
use crate::error::{Result, StoreError};
use crate::fill_order::fill_order;
use crate::record::encode;
use crate::reshapes;

/// A replica generation under construction. Readers keep seeing the active generation
/// until [`Shadow::finish`].
#[derive(Debug)]
pub struct Shadow {
    /// The replica it will replace.
    pub(super) replica: Replica,
    /// Its generation number.
    pub(super) gen: u64,
    /// Its trees.
    pub(super) set: EntrySet,
    /// The refresh filling it.
    pub(super) kind: RefreshKind,
    /// Entries received into it so far, across resumptions (see [`ShadowProgress`]).
    pub(super) received: u64,
    /// The entries it holds, kept from each apply's counts while that is exact: from an
    /// empty start within one session. `None` for a resumed shadow, counted by a scan in
    /// [`Shadow::finish`] (a scan of a million entries takes a second and more).
    pub(super) entries: Option<u64>,
    /// Where the refresh's catch-up starts (the `start` of the last progress recorded):
    /// states past it are recorded before [`Shadow::apply`] writes them.
    pub(super) catch_up_from: Option<Csn>,
}

impl Shadow {
    /// The refresh kind being built.
    pub fn kind(&self) -> RefreshKind {
        self.kind
    }

    /// Entries written to the shadow so far.
    pub fn len(&self) -> usize {
        self.entries.map_or_else(|| self.set.len(), |n| n as usize)
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Entries received into the shadow so far (upserts and present UUIDs), including
    /// those of the sessions it was resumed from.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Records that everything the provider sent up to `resume` is in the shadow, so an
    /// interrupted refresh of `spec` can continue from there. Call it only after the
    /// data it covers was applied: sled recovers a prefix of the writes made, so after a
    /// crash the resume point never claims more than the shadow holds. Not durable until
    /// [`super::ReplicaStore::flush`] (an older resume point only means more is re-sent).
    pub fn record_progress(&mut self, spec: &SearchSpec, resume: ResumePoint) -> Result<()> {
        let mut state = self.replica.state()?;
        if state.shadow != Some(self.gen) {
            return Err(StoreError::StaleShadow(self.replica.name.to_string()));
        }
        self.catch_up_from = Some(resume.start.csn);
        state.shadow_progress = Some(ShadowProgress { resume, spec: spec.clone(), received: self.received });
        self.replica.store.put_state(&self.replica.name, &state)
    }

    /// Applies refresh operations to the shadow in one transaction. States newer than
    /// the start of the refresh's catch-up (the scan over, the changes made meanwhile;
    /// a scan's entries are never newer) are recorded first, ahead of them in sled's
    /// log, for [`Shadow::finish`] and [`Replica::resume_point`]: the catch-up reads
    /// entries as they are, later writes than its `RefreshDone` cookie perhaps.
    pub fn apply<O: IncomingOp>(&mut self, ops: &[O]) -> Result<ApplyStats> {
        if let (Some(newest), Some(start)) = (newest_csn(ops), self.catch_up_from) {
            if newest > start && self.replica.shadow_beyond()?.is_none_or(|held| held < newest) {
                let key = shadow_beyond_key(&self.replica.name);
                self.replica.store.beyond.insert(key, &newest.0.to_be_bytes())?;
            }
        }
        let stats = (&self.set.entries, &self.set.uuids).transaction(|(entries, uuids)| {
            let tx = TxEntrySet { entries, uuids };
            let mut stats = ApplyStats::default();
            for incoming in ops {
                apply_op(&tx, incoming.incoming(), &mut stats, None)?;
            }
            Ok(stats)
        })?;
        self.replica.store.wrote(stats.written)?;
        self.received += ops.iter().filter(|op| matches!(op.incoming(), Incoming::Upsert { .. })).count() as u64;
        self.count(&stats);
        Ok(stats)
    }

    /// Writes a batch of the refresh's scan: upserts that each name an entry no earlier
    /// scan batch held, under a DN none of them took, which the provider guarantees by
    /// leaving entries changed during the scan to the catch-up delta (`docs/protocol.md`);
    /// a batch that breaks it discards the shadow ([`StoreError::RefreshFault`]).
    /// So nothing is looked up: the writes go straight in, the batch's index entries
    /// first, so that after a crash (sled recovers a prefix of its log) an index entry
    /// can only point at nothing (ignored), never an entry lack its index. A batch need
    /// not land whole: a resumed scan rewrites everything after its last recorded
    /// position, so the order within a batch is free, and `fill_order` picks one that
    /// leaves sled's leaves full. Single inserts, a tree at a time: a `sled::Batch` takes
    /// sled's global write lock and rolls the log buffer twice, and inserts alternating
    /// between the two trees held a million-entry refresh 50 MiB higher
    /// (`docs/benchmarks-history.md`). Anything else goes through [`Shadow::apply`].
    pub fn apply_scan<O: IncomingOp>(&mut self, ops: &[O]) -> Result<ApplyStats> {
        if ops.iter().any(|op| !matches!(op.incoming(), Incoming::Upsert { .. })) {
            return self.apply(ops);
        }
        let mut entries = Vec::with_capacity(ops.len());
        let mut written = 0;
        for incoming in ops {
            if let Incoming::Upsert { dn, uuid, entry, .. } = incoming.incoming() {
                // One allocation for the key, shared by both trees.
                let key = IVec::from(dn.tree_key());
                let bytes = entry.to_ivec(SHADOW_ENTRIES)?;
                written += bytes.len() as u64;
                entries.push((uuid, key, bytes, dn));
            }
        }
        // What sled held under each key tells, for nothing more, whether the provider
        // sent one entry twice: a scan sends each entry once, at or below the scan's
        // start (a rename meanwhile comes in the catch-up), so a UUID held at another
        // DN, or a DN held by another UUID, is a provider's fault. Kept, it would leave
        // an entry in the replica that no delete could reach.
        let mut fresh = vec![false; entries.len()];
        for i in fill_order(entries.len()) {
            let (uuid, key, _, dn) = &entries[i];
            match self.set.uuids.insert(uuid.as_bytes(), key.clone())? {
                None => fresh[i] = true,
                Some(held) if held == *key => {}
                Some(_) => return Err(self.discard(format!("entryUUID {uuid} twice, the second time as {dn}"))),
            }
        }
        let mut created = 0;
        for i in fill_order(entries.len()) {
            let (_, key, bytes, dn) = &entries[i];
            match self.set.entries.insert(key.clone(), bytes.clone())? {
                None => created += 1,
                Some(_) if fresh[i] => return Err(self.discard(format!("{dn} twice, under two entryUUIDs"))),
                Some(_) => {}
            }
        }
        self.replica.store.wrote(written)?;
        let n = ops.len() as u64;
        self.received += n;
        let stats = ApplyStats { applied: n, created, written, ..ApplyStats::default() };
        self.count(&stats);
        Ok(stats)
    }

    /// Gives up the shadow after a provider's fault in what it sent, which it holds now,
    /// and says so: neither finished nor continued, the next session's reload starts
    /// afresh, and the active generation stays as it was.
    fn discard(&mut self, fault: String) -> StoreError {
        let given_up = self.replica.state().and_then(|mut state| {
            if state.shadow != Some(self.gen) {
                return Ok(());
            }
            let discarded = take_shadow(&mut state);
            self.replica.store.put_state(&self.replica.name, &state)?;
            self.replica.free_shadow(discarded)
        });
        match given_up {
            Ok(()) => StoreError::RefreshFault(fault),
            Err(e) => e,
        }
    }

    /// Moves the kept count by what an apply did.
    fn count(&mut self, stats: &ApplyStats) {
        // Fewer than none would mean the count is wrong: the swap counts instead.
        self.entries = self.entries.and_then(|n| n.checked_add_signed(stats.entries_delta()));
    }

    /// Copies entries the provider named as unchanged from the active generation. Fails
    /// with [`StoreError::MissingPresentEntries`] if any is missing locally: the replica
    /// then needs a full refresh.
    pub fn copy_present(&mut self, uuids: &[EntryUuid]) -> Result<()> {
        let active = self.replica.entries()?;
        let mut found = Vec::with_capacity(uuids.len());
        let mut missing = 0;
        for uuid in uuids {
            match active.get_by_uuid(uuid)? {
                Some(e) => found.push(ReplOp::Upsert(e)),
                None => missing += 1,
            }
        }
        if missing > 0 {
            return Err(StoreError::MissingPresentEntries(missing));
        }
        self.apply(&found).map(drop)
    }

    /// Makes the shadow the active generation with `cookie`, durably, and drops the old
    /// generation. Returns the number of entries it holds, which is also how
    /// [`Replica::len`] learns it.
    pub fn finish(self, cookie: Cookie) -> Result<usize> {
        let name = self.replica.name.clone();
        let store = &self.replica.store;
        let mut state = self.replica.state()?;
        if state.shadow != Some(self.gen) {
            return Err(StoreError::StaleShadow(name.to_string()));
        }
        let entries = self.len();
        store.counts.insert(name.as_bytes(), &count_record(self.gen, entries as u64))?;
        store.counts.insert(count_at_key(&name), &cookie.csn.0.to_be_bytes())?;
        // The shadow's entries (and its count) must be on disk before the switch that
        // exposes them.
        store.flush()?;
        let old = state.active_gen;
        state.active_gen = self.gen;
        state.shadow = None;
        state.shadow_progress = None;
        state.cookie = Some(cookie);
        // The generation that was past its cookie goes; this one is past it if its
        // catch-up read later writes than the cookie names (this session's: a shadow
        // whose catch-up applied anything is never continued by another).
        let beyond = self.replica.shadow_beyond()?.filter(|newest| *newest > cookie.csn);
        let beyond = beyond.map(|csn| encode(BEYOND, &Cookie { history: cookie.history, csn })).transpose()?;
        {
            let mut reshapes = reshapes::lock(&self.replica.reshapes);
            // The region on record is this shadow's from the switch on (it was filled for
            // the region adopted at its agreement's start): moved with it, in one write,
            // as is the record of data past the cookie.
            let mark = store.regions.contains_key(name.as_bytes())?.then(|| count_record(self.gen, state.next_gen));
            let bytes = encode(REPLICAS, &state)?;
            (&store.replicas, &store.region_gens, &store.beyond).transaction(|(replicas, region_gens, past)| {
                replicas.insert(name.as_bytes(), bytes.as_slice())?;
                if let Some(mark) = &mark {
                    region_gens.insert(name.as_bytes(), mark)?;
                }
                match &beyond {
                    Some(claim) => past.insert(name.as_bytes(), claim.as_slice())?,
                    None => past.remove(name.as_bytes())?,
                };
                past.remove(shadow_beyond_key(&name))?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })?;
            reshapes.swap();
        }
        store.flush()?;
        store.drop_generation(&name, old)?;
        if self.kind == RefreshKind::Full {
            // The audit names a change by (entry, CSN), which is unique only within one
            // history of the provider: a provider restored from a copy of its store gives
            // the CSNs after the copy to other changes, and sends a replica that followed
            // the original a full refresh. From a full refresh on, what was applied before
            // says nothing about what comes next (a replayed older change is a no-op,
            // never applied, and so never in the audit).
            store.db.drop_tree(audit_tree_name(&name))?;
        }
        Ok(entries)
    }

    /// Discards the shadow; the active generation is untouched.
    pub fn abort(self) -> Result<()> {
        let mut state = self.replica.state()?;
        if state.shadow == Some(self.gen) {
            let discarded = take_shadow(&mut state);
            self.replica.store.put_state(&self.replica.name, &state)?;
            return self.replica.free_shadow(discarded);
        }
        // Not the shadow on record any more: its record, if any, is another's.
        self.replica.store.drop_generation(&self.replica.name, self.gen)
    }
}
