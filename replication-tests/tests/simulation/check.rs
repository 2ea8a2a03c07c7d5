//! The invariants every seed must keep, checked while the run goes and at its end.
//!
//! - **No half-loaded replica**: while a consumer builds a shadow (a full or present
//!   reload), what its live replica exposes does not change: readers see the old
//!   content until the switch, then the new, never a mix.
//! - **Nothing invented**: every entry a replica exposes is a state the provider once
//!   committed (same DN, UUID, CSN and attributes).
//! - **Cookie never regresses**: a replica's durable cookie only moves forward, across
//!   sessions, crashes and restarts.
//! - **Nothing lost below the cookie**: whenever its content is read, a replica holds
//!   every change the provider committed up to its cookie that concerns its region:
//!   each entry in the region then at that state or a later one, none left at a state
//!   older than the provider's then (a delete, a move or a modify out of the region
//!   missed). The replica may be past its cookie (an entry read later than the change
//!   that sent it, a delta under way), never behind it. Convergence only compares the
//!   end, after whatever reloads the faults caused, which replace a replica whole and
//!   so hide a change lost before them.
//! - **Exactly once**: the apply audit (on in every consumer store) counts no change
//!   applied twice.
//! - **Convergence** (after healing): each consumer's replica equals the provider's
//!   search of its scope, and its cookie is the provider's newest CSN.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use tether_protocol::{Csn, Entry, EntryUuid, SearchSpec};

use crate::world::World;

/// A replica's content as a number: an entry state is identified by its UUID and CSN
/// (the checker verifies each against the provider's committed state of that pair).
fn content_hash(entries: &[Entry]) -> u64 {
    let mut h = DefaultHasher::new();
    for e in entries {
        (e.uuid, e.csn).hash(&mut h);
    }
    h.finish()
}

/// What the checker remembers about one consumer.
#[derive(Debug, Default)]
struct Seen {
    /// Highest durable cookie seen.
    cookie: Option<Csn>,
    /// Active generation and its content hash when the current shadow was first seen.
    reload_base: Option<(u64, u64)>,
    /// Last active generation seen.
    active_gen: Option<u64>,
}

/// The invariant checker of one run.
#[derive(Debug, Default)]
pub struct Checker {
    /// Every entry state the provider ever committed, by UUID and CSN.
    committed: HashMap<(EntryUuid, Csn), Entry>,
    /// Each entry's states in CSN order, `None` once deleted (ordered, so that a
    /// failing seed names the same entry every time it is replayed).
    states: BTreeMap<EntryUuid, Vec<(Csn, Option<Entry>)>>,
    seen: BTreeMap<usize, Seen>,
}

impl Checker {
    /// Records the state a write left one entry in.
    pub fn record(&mut self, entry: &Entry) {
        self.committed.insert((entry.uuid, entry.csn), entry.clone());
        self.states.entry(entry.uuid).or_default().push((entry.csn, Some(entry.clone())));
    }

    /// Records a write at `csn` that deleted entry `uuid`.
    pub fn record_delete(&mut self, uuid: EntryUuid, csn: Csn) {
        self.states.entry(uuid).or_default().push((csn, None));
    }

    /// The first change up to `cookie` concerning `spec` that `have` (a replica's
    /// search of `spec`, whose cookie is `cookie`) lacks, if any, given every entry's
    /// `states`: see the module docs.
    fn lost_below(
        states: &BTreeMap<EntryUuid, Vec<(Csn, Option<Entry>)>>,
        spec: &SearchSpec,
        cookie: Csn,
        have: &[Entry],
    ) -> Option<String> {
        let held: HashMap<EntryUuid, &Entry> = have.iter().map(|e| (e.uuid, e)).collect();
        let in_region = |state: &Option<Entry>| state.as_ref().is_some_and(|e| spec.contains(e));
        for (uuid, states) in states {
            let upto = states.partition_point(|(csn, _)| *csn <= cookie);
            let Some((at, state)) = upto.checked_sub(1).map(|i| &states[i]) else { continue };
            match held.get(uuid) {
                Some(e) if e.csn < *at => {
                    let then = match state {
                        Some(s) if in_region(state) => format!("{} at {at}", s.dn),
                        Some(s) => format!("{} at {at}, outside the region", s.dn),
                        None => format!("deleted at {at}"),
                    };
                    return Some(format!(
                        "holds {} at CSN {} under cookie {cookie}, where the provider had it {then}",
                        e.dn, e.csn
                    ));
                }
                // Taken out of the region after the cookie: the replica may be past it.
                None if in_region(state) && states[upto..].iter().all(|(_, later)| in_region(later)) => {
                    let dn = state.as_ref().map_or_else(String::new, |s| s.dn.to_string());
                    return Some(format!("lacks {dn} (CSN {at}) under cookie {cookie}"));
                }
                _ => {}
            }
        }
        None
    }

    /// Checks every running consumer; returns trace events (replica switches, cookie
    /// moves) and the first violation. The replicas' content is read (which costs most
    /// of a run's time) when `full`, when a reload is in progress and when a replica was
    /// switched; the state (cookie, generations) always.
    pub fn observe(&mut self, world: &World, full: bool) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        for (i, c) in world.consumers.iter().enumerate() {
            let Some(live) = c.live.get() else { continue };
            let name = &c.plan.name;
            let duplicates = c.past_duplicates + live.status.snapshot().duplicates;
            if duplicates > 0 {
                return Err(format!("{name}: the apply audit counted {duplicates} change(s) applied twice"));
            }
            let state = live.replica.state().map_err(|e| format!("{name}: reading state: {e}"))?;
            let seen = self.seen.entry(i).or_default();
            let switched = seen.active_gen != Some(state.active_gen);
            let entries = if full || switched || state.shadow.is_some() {
                live.replica.search(&c.plan.spec).map_err(|e| format!("{name}: search: {e}"))?
            } else {
                Vec::new()
            };
            let content = content_hash(&entries);
            for e in &entries {
                if self.committed.get(&(e.uuid, e.csn)) != Some(e) {
                    return Err(format!(
                        "{name}: exposes {} at CSN {}, a state the provider never committed",
                        e.dn, e.csn
                    ));
                }
            }
            let cookie = state.cookie.map(|c| c.csn);
            if let (Some(at), true) = (cookie, full || switched || state.shadow.is_some()) {
                if let Some(lost) = Self::lost_below(&self.states, &c.plan.spec, at, &entries) {
                    return Err(format!("{name}: a change below the cookie is lost: {lost}"));
                }
            }
            match (seen.cookie, cookie) {
                (Some(old), None) => return Err(format!("{name}: cookie regressed from {old} to none")),
                (Some(old), Some(new)) if new < old => {
                    return Err(format!("{name}: cookie regressed from {old} to {new}"))
                }
                (old, Some(new)) if old != Some(new) => {
                    events.push(format!("{name} cookie {new}"));
                    seen.cookie = Some(new);
                }
                _ => {}
            }
            if switched {
                if seen.active_gen.is_some() {
                    events.push(format!("{name} switched to a reloaded replica ({} entries)", entries.len()));
                }
                seen.active_gen = Some(state.active_gen);
            }
            match (state.shadow, seen.reload_base) {
                (None, _) => seen.reload_base = None,
                (Some(_), Some((gen, base))) if gen == state.active_gen => {
                    if base != content {
                        return Err(format!(
                            "{name}: the live replica changed while a reload was in progress (half-loaded replica exposed)"
                        ));
                    }
                }
                (Some(_), _) => {
                    events.push(format!("{name} reloading"));
                    seen.reload_base = Some((state.active_gen, content));
                }
            }
        }
        Ok(events)
    }

    /// Whether every consumer has converged; `Err` describes who has not, and how.
    pub fn converged(world: &World) -> Result<(), String> {
        let dir = world.provider.get().ok_or("the provider is down")?;
        let newest = dir.durable_csn();
        let mut lagging = Vec::new();
        for c in &world.consumers {
            let name = &c.plan.name;
            let Some(live) = c.live.get() else {
                lagging.push(format!("{name} is down"));
                continue;
            };
            let want: Vec<Entry> =
                dir.search(&c.plan.spec).collect::<Result<_, _>>().map_err(|e| format!("provider search: {e}"))?;
            let have = live.replica.search(&c.plan.spec).map_err(|e| format!("{name}: search: {e}"))?;
            let cookie = live.replica.cookie().map_err(|e| format!("{name}: cookie: {e}"))?;
            if want != have {
                let missing = want.iter().filter(|e| !have.contains(e)).count();
                let extra = have.iter().filter(|e| !want.contains(e)).count();
                lagging.push(format!(
                    "{name}: content differs ({} entries vs provider {}: {missing} missing or stale, {extra} extra or stale)",
                    have.len(),
                    want.len()
                ));
            } else {
                // The newest position, in a history the provider recognizes as its own:
                // the current one, or an earlier one that a session kept because it
                // names the same CSN (the store's `kept_cookie`).
                let recognized = match cookie {
                    Some(c) => dir.recognizes(&c).map_err(|e| format!("provider recognizes: {e}"))?,
                    None => false,
                };
                if cookie.map(|c| c.csn) != Some(newest) || !recognized {
                    lagging.push(format!(
                        "{name}: content equal but cookie {} while the provider is at {}#{newest}",
                        cookie.map_or("none".to_owned(), |c| c.to_string()),
                        dir.history()
                    ));
                }
            }
        }
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(lagging.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use tether_protocol::{Attributes, Dn, RefreshKind, ReplOp, Value};

    use super::*;
    use crate::world::changes;

    const REGION: &str = "ou=people,dc=example,dc=com";

    /// Entry `uuid` (one byte, for short tests) named `dn` at `csn`.
    fn at(dn: &str, uuid: u8, csn: u64) -> Entry {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", [Value::from("person")]).unwrap();
        Entry { dn: Dn::parse(dn).unwrap(), uuid: EntryUuid([uuid; 16]), csn: Csn(csn), attrs }
    }

    fn person(n: u8, csn: u64) -> Entry {
        at(&format!("uid=p{n},{REGION}"), n, csn)
    }

    /// What `lost_below` says of a replica holding `have` under `cookie`, given the
    /// committed states of `checker`.
    fn lost(checker: &Checker, cookie: u64, have: &[Entry]) -> Option<String> {
        let spec = SearchSpec::subtree(Dn::parse(REGION).unwrap());
        Checker::lost_below(&checker.states, &spec, Csn(cookie), have)
    }

    #[test]
    fn a_change_committed_at_exactly_the_cookie_is_one_the_replica_must_hold() {
        let mut checker = Checker::default();
        checker.record(&person(1, 1));
        checker.record(&person(1, 5));
        checker.record(&person(2, 5));
        // Under cookie 4 the modify and the add at 5 may be missing ...
        assert_eq!(lost(&checker, 4, &[person(1, 1)]), None);
        // ... under cookie 5 neither may.
        let stale = lost(&checker, 5, &[person(1, 1), person(2, 5)]).unwrap();
        assert!(stale.contains(&format!("holds uid=p1,{REGION} at CSN 1 under cookie 5")), "{stale}");
        let missing = lost(&checker, 5, &[person(1, 5)]).unwrap();
        assert!(missing.contains(&format!("lacks uid=p2,{REGION} (CSN 5) under cookie 5")), "{missing}");
        assert_eq!(lost(&checker, 5, &[person(1, 5), person(2, 5)]), None);
    }

    #[test]
    fn an_entry_still_held_after_a_delete_or_a_move_out_below_the_cookie_is_a_lost_change() {
        let mut checker = Checker::default();
        checker.record(&person(1, 1));
        checker.record_delete(EntryUuid([1; 16]), Csn(3));
        checker.record(&person(2, 2));
        checker.record(&at("uid=p2,dc=example,dc=com", 2, 4));
        let deleted = lost(&checker, 3, &[person(1, 1), person(2, 2)]).unwrap();
        assert!(deleted.contains("where the provider had it deleted at 3"), "{deleted}");
        let moved = lost(&checker, 4, &[person(2, 2)]).unwrap();
        assert!(
            moved.contains("where the provider had it uid=p2,dc=example,dc=com at 4, outside the region"),
            "{moved}"
        );
        assert_eq!(lost(&checker, 4, &[]), None, "both gone, as the provider has them");
    }

    #[test]
    fn a_replica_past_its_cookie_loses_nothing() {
        let mut checker = Checker::default();
        checker.record(&person(1, 1));
        checker.record(&person(1, 6));
        checker.record(&person(2, 2));
        checker.record(&at("uid=p2,dc=example,dc=com", 2, 7));
        checker.record(&person(3, 3));
        checker.record_delete(EntryUuid([3; 16]), Csn(8));
        // Cookie 5: p1 already at its modify of 6, p2 already moved out at 7 and p3
        // already deleted at 8, each a change after the cookie applied (a delta under way).
        assert_eq!(lost(&checker, 5, &[person(1, 6)]), None);
    }

    /// A world of `initial` entries stepped until every consumer converged, with a
    /// checker that watched it get there; and the guard of its stores.
    fn converged_world(initial: usize) -> (World, Checker, Option<tempfile::TempDir>) {
        let (root, guard) = crate::store_root(1);
        let mut world = World::new(1, &root, initial);
        let mut checker = Checker::default();
        for e in &world.initial {
            checker.record(e);
        }
        loop {
            world.sim.step().unwrap();
            let now = world.now_ms();
            if now % crate::OBSERVE_EVERY_MS == 0 {
                checker.observe(&world, true).unwrap();
                if Checker::converged(&world).is_ok() {
                    return (world, checker, guard);
                }
            }
            assert!(now < crate::CONVERGE_WITHIN_MS, "no convergence: {:?}", Checker::converged(&world));
        }
    }

    /// Writes the workload's next changes on the provider until one leaves an entry
    /// (not a delete), records it as the simulation does, and returns that state.
    fn write_one(world: &mut World, checker: &mut Checker) -> Entry {
        let dir = world.provider.get().unwrap();
        loop {
            for change in changes(&world.workload.changes(1)) {
                let committed = dir.write(&change).unwrap();
                match dir.entries().get_by_uuid(&committed.uuid).unwrap() {
                    Some(entry) => {
                        checker.record(&entry);
                        return entry;
                    }
                    None => checker.record_delete(committed.uuid, committed.csn),
                }
            }
        }
    }

    #[test]
    fn observe_reports_a_change_applied_twice_a_state_never_committed_and_a_cookie_dropped_or_moved_back() {
        let (mut world, mut checker, _guard) = converged_world(10);
        // Each violation is put right before the next: observe returns the first it finds.
        world.consumers[0].past_duplicates = 1;
        let twice = checker.observe(&world, true).unwrap_err();
        assert!(twice.contains("c-all: the apply audit counted 1 change(s) applied twice"), "{twice}");
        world.consumers[0].past_duplicates = 0;

        // A state shown under the UUID and CSN of a committed one but with other
        // attributes is invented, though both numbers match.
        let all = world.consumers[0].live.get().unwrap();
        let shown = all.replica.search(&world.consumers[0].plan.spec).unwrap().pop().unwrap();
        let mut other = shown.clone();
        other.attrs.add("description", [Value::from("never written")]).unwrap();
        let committed = checker.committed.insert((shown.uuid, shown.csn), other).unwrap();
        let invented = checker.observe(&world, true).unwrap_err();
        let said = format!("c-all: exposes {} at CSN {}, a state the provider never committed", shown.dn, shown.csn);
        assert!(invented.contains(&said), "{invented}");
        checker.committed.insert((shown.uuid, shown.csn), committed);

        let people = world.consumers[1].live.get().unwrap();
        let cookie = people.replica.cookie().unwrap().unwrap();
        people.replica.forget_cookie().unwrap();
        let dropped = checker.observe(&world, true).unwrap_err();
        assert!(dropped.contains(&format!("c-people: cookie regressed from {} to none", cookie.csn)), "{dropped}");
        let back = Csn(cookie.csn.0 - 1);
        people.replica.advance(tether_protocol::Cookie { csn: back, ..cookie }).unwrap();
        let moved_back = checker.observe(&world, true).unwrap_err();
        assert!(
            moved_back.contains(&format!("c-people: cookie regressed from {} to {back}", cookie.csn)),
            "{moved_back}"
        );
    }

    #[test]
    fn observe_reports_a_live_replica_that_changes_while_a_reload_is_under_way() {
        let (mut world, mut checker, _guard) = converged_world(10);
        let live = world.consumers[0].live.get().unwrap();
        let _shadow = live.replica.begin_shadow(RefreshKind::Full).unwrap();
        let events = checker.observe(&world, false).unwrap();
        assert!(events.contains(&"c-all reloading".to_owned()), "{events:?}");
        // A state the provider committed, past the cookie (so nothing else is wrong with
        // it), reaching the live replica instead of the shadow: a half-loaded replica.
        let entry = write_one(&mut world, &mut checker);
        live.replica.apply(&[ReplOp::Upsert(entry)], None).unwrap();
        let half = checker.observe(&world, false).unwrap_err();
        assert!(half.contains("c-all: the live replica changed while a reload was in progress"), "{half}");
    }

    #[test]
    fn a_live_replica_that_changed_between_two_reloads_is_not_half_loaded() {
        let (mut world, mut checker, _guard) = converged_world(10);
        let live = world.consumers[0].live.get().unwrap();
        live.replica.begin_shadow(RefreshKind::Full).unwrap();
        checker.observe(&world, false).unwrap();
        // The reload given up, the live replica moves on by delta; the next reload is
        // held to the content it starts from, not the first one's.
        live.replica.abandon_shadow().unwrap();
        checker.observe(&world, false).unwrap();
        let entry = write_one(&mut world, &mut checker);
        live.replica.apply(&[ReplOp::Upsert(entry)], None).unwrap();
        live.replica.begin_shadow(RefreshKind::Full).unwrap();
        assert_eq!(checker.observe(&world, false), Ok(vec!["c-all reloading".to_owned()]));
    }

    #[test]
    fn converged_requires_each_cookie_at_the_providers_newest_csn() {
        let (world, _checker, _guard) = converged_world(10);
        // A write outside ou=people: c-people's and c-poll's content stays equal, but
        // their cookies are now behind the provider's.
        let dir = world.provider.get().unwrap();
        for change in changes(
            "dn: ou=elsewhere,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: elsewhere\n",
        ) {
            dir.write(&change).unwrap();
        }
        let why = Checker::converged(&world).unwrap_err();
        assert!(why.contains("c-people: content equal but cookie"), "{why}");
    }
}
