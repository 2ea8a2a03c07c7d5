//! Changelog reads and replica applies together: whatever happens on the provider, a
//! replica that applies the delta (or the per-record stream) ends up holding exactly the
//! provider's entries in its scope.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use tether_protocol::encoded::{EncodedMessage, Received};
use tether_protocol::{
    Cookie, Csn, Dn, Entry, Filter, HistoryId, ModOp, RefreshKind, ReplOp, ResumePoint, Scope, SearchSpec,
};
use tether_store::{Directory, RegionAdopted, ReplicaStore, RetentionPolicy, StoreError};

struct Pair {
    _tmp: (tempfile::TempDir, tempfile::TempDir),
    dir: Directory,
    replicas: ReplicaStore,
}

fn pair() -> Pair {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let dir = Directory::open(a.path(), &dn(SUFFIX)).unwrap();
    for c in base_tree() {
        dir.write(&c).unwrap();
    }
    let replicas = ReplicaStore::open(b.path()).unwrap();
    Pair { _tmp: (a, b), dir, replicas }
}

fn people_spec() -> SearchSpec {
    SearchSpec::subtree(dn("ou=people,dc=example,dc=com"))
}

fn filtered_spec() -> SearchSpec {
    SearchSpec {
        base: dn("ou=people,dc=example,dc=com"),
        scope: Scope::One,
        filter: Filter::Equality { attr: "sn".into(), value: "Keep".into() },
        attrs: vec![],
    }
}

fn provider_view(d: &Directory, spec: &SearchSpec) -> Vec<String> {
    d.search(spec).map(|e| format!("{:?}", e.unwrap())).collect()
}

fn replica_view(r: &ReplicaStore, name: &str) -> Vec<String> {
    let all = SearchSpec::subtree(tether_protocol::Dn::root());
    r.replica(name).unwrap().search(&all).unwrap().into_iter().map(|e| format!("{e:?}")).collect()
}

/// Full refresh of `spec` into a shadow, as a provider session would run it.
fn full_refresh(p: &Pair, name: &str, spec: &SearchSpec) -> Cookie {
    let start = p.dir.durable_csn();
    let mut shadow = p.replicas.replica(name).unwrap().begin_shadow(RefreshKind::Full).unwrap();
    // Page through the region as a provider session does; pages must add up to `search`.
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let (page, next) = p.dir.entries().search_page(spec, cursor.as_deref(), 3).unwrap();
        assert!(page.len() <= 3);
        paged.extend(page.iter().map(|e| format!("{e:?}")));
        // Unchecked, as a consumer writes a scan's pages.
        shadow.apply_scan(&page.into_iter().map(ReplOp::Upsert).collect::<Vec<_>>()).unwrap();
        match next {
            Some(key) => cursor = Some(key),
            None => break,
        }
    }
    assert_eq!(paged, provider_view(&p.dir, spec), "pages add up to the search");
    let cookie = Cookie { history: p.dir.history(), csn: start };
    shadow.finish(cookie).unwrap();
    cookie
}

fn delta_refresh(p: &Pair, name: &str, spec: &SearchSpec, from: Cookie) -> Cookie {
    let upto = p.dir.durable_csn();
    let mut delta = p.dir.changelog().delta(from.csn, upto, spec).unwrap();
    let replica = p.replicas.replica(name).unwrap();
    loop {
        let batch = delta.next_batch(p.dir.entries(), 5, &|| p.dir.newest_committed()).unwrap();
        if batch.is_empty() {
            break;
        }
        replica.apply(&batch, None).unwrap();
    }
    let cookie = Cookie { history: p.dir.history(), csn: upto };
    replica.advance(cookie).unwrap();
    cookie
}

/// A [`pair`] whose directory holds two people and, outside `ou=people`, a third.
fn people_pair() -> Pair {
    let p = pair();
    for d in
        ["uid=a,ou=people,dc=example,dc=com", "uid=b,ou=people,dc=example,dc=com", "uid=c,ou=groups,dc=example,dc=com"]
    {
        p.dir.write(&add_person(d)).unwrap();
    }
    p
}

#[test]
fn delta_coalesces_to_latest_state_and_follows_moves_across_scope() {
    let p = people_pair();
    let spec = people_spec();
    let cookie = full_refresh(&p, "people", &spec);
    assert_eq!(replica_view(&p.replicas, "people"), provider_view(&p.dir, &spec));

    // a: modified three times (coalesces to one upsert); b: moved out of scope;
    // c: moved into scope; d: added then deleted (never seen by the consumer).
    let a = "uid=a,ou=people,dc=example,dc=com";
    p.dir.write(&modify(a, ModOp::Add, "mail", &["a1@x"])).unwrap();
    p.dir.write(&modify(a, ModOp::Add, "mail", &["a2@x"])).unwrap();
    p.dir.write(&modify(a, ModOp::Delete, "mail", &["a1@x"])).unwrap();
    p.dir.write(&moddn("uid=b,ou=people,dc=example,dc=com", "uid=b", Some("ou=groups,dc=example,dc=com"))).unwrap();
    p.dir.write(&moddn("uid=c,ou=groups,dc=example,dc=com", "uid=c", Some("ou=people,dc=example,dc=com"))).unwrap();
    p.dir.write(&add_person("uid=d,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&delete("uid=d,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&modify("ou=groups,dc=example,dc=com", ModOp::Add, "description", &["out of scope"])).unwrap();

    let mut delta = p.dir.changelog().delta(cookie.csn, p.dir.durable_csn(), &spec).unwrap();
    let ops = delta.next_batch(p.dir.entries(), 100, &|| p.dir.newest_committed()).unwrap();
    let a_ops: Vec<_> = ops.iter().filter(|o| matches!(o, ReplOp::Upsert(e) if e.dn == dn(a))).collect();
    assert_eq!(a_ops.len(), 1, "three modifies coalesce into one upsert: {ops:#?}");
    assert!(matches!(a_ops[0], ReplOp::Upsert(e) if e.attrs.values("mail") == [tether_protocol::Value::from("a2@x")]));
    let b = p.dir.entries().get(&dn("uid=b,ou=groups,dc=example,dc=com")).unwrap().unwrap();
    assert!(ops.iter().any(|o| matches!(o, ReplOp::Delete { uuid, .. } if *uuid == b.uuid)), "move out -> delete");
    assert!(
        ops.iter().any(|o| matches!(o, ReplOp::Upsert(e) if e.dn == dn("uid=c,ou=people,dc=example,dc=com"))),
        "move in -> add"
    );
    assert!(
        !ops.iter().any(|o| matches!(o, ReplOp::Upsert(e) if e.dn == dn("ou=groups,dc=example,dc=com"))),
        "out of scope skipped"
    );
    let csns: Vec<Csn> = ops.iter().map(ReplOp::csn).collect();
    assert!(csns.windows(2).all(|w| w[0] <= w[1]), "ordered by last change");

    delta_refresh(&p, "people", &spec, cookie);
    assert_eq!(replica_view(&p.replicas, "people"), provider_view(&p.dir, &spec));
}

/// A delta sends each entry in the order of its last change (SPEC §3), not in the order
/// the entries were made: an entry moved under a parent made after it comes after the
/// parent, so a replica that applies the delta a batch at a time never holds it
/// without its parent.
/// A refresh's page of encoded entries ends once it holds its byte budget, not one
/// entry later: the budget is what keeps a page of entries near the frame limit from
/// holding one entry more than the memory it was sized for. It still always holds one.
#[test]
fn an_encoded_page_ends_at_its_byte_budget_exactly() {
    let p = people_pair();
    let spec = people_spec();
    let (all, none_after) = p.dir.entries().encoded_page(&spec, None, 100, usize::MAX).unwrap();
    assert_eq!((all.len(), none_after), (3, None), "ou=people and its two people");
    let first = all[0].len();
    let (page, next) = p.dir.entries().encoded_page(&spec, None, 100, first).unwrap();
    assert_eq!(page, all[..1], "one entry's worth of bytes: that entry alone");
    let (rest, _) = p.dir.entries().encoded_page(&spec, next.as_deref(), 100, 1).unwrap();
    assert_eq!(rest, all[1..2], "a budget below one entry still takes one");
    let two = first + all[1].len();
    let (page, _) = p.dir.entries().encoded_page(&spec, None, 100, two).unwrap();
    assert_eq!(page, all[..2]);
}

/// The DN a change record names is only a hint of where its entry is now: after a
/// rename another entry may hold that name. A change read for the renamed entry must
/// carry its own state, found by its UUID, not the newcomer's under the renamed one's
/// UUID, which a consumer would apply as the renamed entry moving back, losing it.
#[test]
fn an_entry_located_at_a_name_another_entry_took_since_is_found_where_it_moved() {
    let p = people_pair();
    let a = "uid=a,ou=people,dc=example,dc=com";
    let renamed = p.dir.entries().get(&dn(a)).unwrap().unwrap();
    p.dir.write(&moddn(a, "uid=x", None)).unwrap();
    p.dir.write(&add_person(a)).unwrap();
    let newcomer = p.dir.entries().get(&dn(a)).unwrap().unwrap();
    let at_x = p.dir.entries().get(&dn("uid=x,ou=people,dc=example,dc=com")).unwrap().unwrap();
    let hint = dn(a).tree_key();
    let found = p.dir.entries().locate_encoded(&renamed.uuid, Some(&hint)).unwrap().unwrap();
    assert_eq!((found.key, found.csn), (dn("uid=x,ou=people,dc=example,dc=com").tree_key(), at_x.csn));
    let found = p.dir.entries().locate_encoded(&newcomer.uuid, Some(&hint)).unwrap().unwrap();
    assert_eq!((found.key, found.csn), (hint.clone(), newcomer.csn));
    p.dir.write(&delete("uid=x,ou=people,dc=example,dc=com")).unwrap();
    assert!(p.dir.entries().locate_encoded(&renamed.uuid, Some(&hint)).unwrap().is_none(), "gone");
}

#[test]
fn a_delta_sends_an_entry_moved_under_a_newer_parent_after_the_parent() {
    let p = people_pair();
    let spec = people_spec();
    let cookie = full_refresh(&p, "people", &spec);
    let team = "ou=team,ou=people,dc=example,dc=com";
    p.dir.write(&add_ou(team)).unwrap();
    p.dir.write(&moddn("uid=a,ou=people,dc=example,dc=com", "uid=a", Some(team))).unwrap();
    p.dir.write(&modify("uid=b,ou=people,dc=example,dc=com", ModOp::Replace, "sn", &["Later"])).unwrap();

    let mut delta = p.dir.changelog().delta(cookie.csn, p.dir.durable_csn(), &spec).unwrap();
    let ops = delta.next_batch(p.dir.entries(), 100, &|| p.dir.newest_committed()).unwrap();
    let sent: Vec<String> = ops
        .iter()
        .map(|op| match op {
            ReplOp::Upsert(e) => e.dn.to_string(),
            other => panic!("an upsert, not {other:?}"),
        })
        .collect();
    assert_eq!(sent, [team, "uid=a,ou=team,ou=people,dc=example,dc=com", "uid=b,ou=people,dc=example,dc=com"]);
}

/// A delta carries the entries changed within its range and no others: an entry
/// changed only after its end comes in the changes that follow the refresh, once, not
/// in the delta as well.
#[test]
fn a_delta_carries_no_entry_changed_only_after_its_end() {
    let p = people_pair();
    let spec = people_spec();
    let cookie = full_refresh(&p, "people", &spec);
    let a = "uid=a,ou=people,dc=example,dc=com";
    p.dir.write(&modify(a, ModOp::Replace, "sn", &["In range"])).unwrap();
    let end = p.dir.durable_csn();
    p.dir.write(&modify("uid=b,ou=people,dc=example,dc=com", ModOp::Replace, "sn", &["After"])).unwrap();
    p.dir.write(&add_person("uid=d,ou=people,dc=example,dc=com")).unwrap();

    let mut delta = p.dir.changelog().delta(cookie.csn, end, &spec).unwrap();
    assert_eq!(delta.remaining(), 1, "one entry changed in the range");
    let ops = delta.next_batch(p.dir.entries(), 100, &|| p.dir.newest_committed()).unwrap();
    assert!(matches!(ops.as_slice(), [ReplOp::Upsert(e)] if e.dn == dn(a)), "{ops:#?}");
}

#[test]
fn applying_the_same_batch_twice_equals_once() {
    let p = people_pair();
    let ops: Vec<ReplOp> = p.dir.search(&people_spec()).map(|e| ReplOp::Upsert(e.unwrap())).collect();
    let r = p.replicas.replica("x").unwrap();
    let first = r.apply(&ops, None).unwrap();
    let once = replica_view(&p.replicas, "x");
    let second = r.apply(&ops, None).unwrap();
    assert_eq!(first.applied, ops.len() as u64);
    assert_eq!(second.applied, 0, "a replay applies nothing");
    assert_eq!(second.skipped, ops.len() as u64);
    assert_eq!(replica_view(&p.replicas, "x"), once);
    // An older state never overwrites a newer one.
    let a = p.dir.entries().get(&dn("uid=a,ou=people,dc=example,dc=com")).unwrap().unwrap();
    p.dir.write(&modify("uid=a,ou=people,dc=example,dc=com", ModOp::Add, "mail", &["new@x"])).unwrap();
    let newer = p.dir.entries().get_by_uuid(&a.uuid).unwrap().unwrap();
    r.apply(&[ReplOp::Upsert(newer.clone())], None).unwrap();
    let stale = r.apply(&[ReplOp::Upsert(a.clone())], None).unwrap();
    assert_eq!(stale.applied, 0);
    assert_eq!(r.entries().unwrap().get_by_uuid(&a.uuid).unwrap().unwrap(), newer);
    // Nor does a delete older than the state held, or at its CSN (a misbehaving
    // provider's: it used to remove the entry, which no later delta brought back); one
    // after it removes it.
    for csn in [a.csn, newer.csn] {
        let stale = r.apply(&[ReplOp::Delete { uuid: a.uuid, csn }], None).unwrap();
        assert_eq!((stale.applied, stale.skipped), (0, 1), "a delete at {csn} of a state at {}", newer.csn);
        assert_eq!(r.entries().unwrap().get_by_uuid(&a.uuid).unwrap().unwrap(), newer);
    }
    let gone = r.apply(&[ReplOp::Delete { uuid: a.uuid, csn: Csn(newer.csn.0 + 1) }], None).unwrap();
    assert_eq!((gone.applied, gone.removed), (1, 1));
    assert!(r.entries().unwrap().get_by_uuid(&a.uuid).unwrap().is_none());
}

/// A replay of an entry's older state, under a name another entry has taken since, is
/// a no-op like any replay: the entry holding the name now stays (found by a mutation
/// audit: an apply that made room at the name before asking whether the state was
/// older than the one held passed every store test, and removed the newer entry, which
/// no later delta brings back, as it did not change).
#[test]
fn a_replayed_older_state_leaves_the_entry_that_took_its_name_since() {
    let p = people_pair();
    let a = "uid=a,ou=people,dc=example,dc=com";
    let old = p.dir.entries().get(&dn(a)).unwrap().unwrap();
    p.dir.write(&moddn(a, "uid=a2", None)).unwrap();
    p.dir.write(&add_person(a)).unwrap();
    let ops: Vec<ReplOp> = p.dir.search(&people_spec()).map(|e| ReplOp::Upsert(e.unwrap())).collect();
    let r = p.replicas.replica("x").unwrap();
    r.apply(&ops, None).unwrap();
    let before = replica_view(&p.replicas, "x");
    let held = r.len().unwrap();

    let replay = r.apply(&[ReplOp::Upsert(old.clone())], None).unwrap();
    assert_eq!((replay.applied, replay.skipped, replay.removed), (0, 1, 0));
    assert_eq!(replica_view(&p.replicas, "x"), before, "the replay changed nothing");
    assert_eq!(r.len().unwrap(), held);
    let taker = r.entries().unwrap().get(&dn(a)).unwrap().expect("the entry that took the name");
    assert_ne!(taker.uuid, old.uuid);
}

#[test]
fn the_apply_audit_detects_a_change_applied_twice() {
    let p = people_pair();
    p.replicas.set_audit(true);
    let r = p.replicas.replica("audited").unwrap();
    let ops: Vec<ReplOp> = p.dir.search(&people_spec()).map(|e| ReplOp::Upsert(e.unwrap())).collect();
    let first = r.apply(&ops, None).unwrap();
    assert_eq!((first.applied, first.duplicates), (ops.len() as u64, 0));
    assert_eq!(r.apply(&ops, None).unwrap().duplicates, 0, "replays are skipped, not re-applied");
    // Lose the data behind the audit's back (a present reload that names nothing), then
    // apply the same changes incrementally again: that is applying them twice, and the
    // audit says so.
    let shadow = r.begin_shadow(RefreshKind::Present).unwrap();
    shadow.finish(Cookie { history: p.dir.history(), csn: Csn(1) }).unwrap();
    assert!(replica_view(&p.replicas, "audited").is_empty());
    let again = r.apply(&ops, None).unwrap();
    assert_eq!(again.duplicates, ops.len() as u64);
    // A full refresh starts the audit afresh: after a restored provider's fork, the same
    // (entry, CSN) can name another change, which is no duplicate.
    let shadow = r.begin_shadow(RefreshKind::Full).unwrap();
    shadow.finish(Cookie { history: p.dir.history(), csn: Csn(1) }).unwrap();
    assert_eq!(r.apply(&ops, None).unwrap().duplicates, 0);
}

#[test]
fn shadow_is_invisible_until_finished_and_abort_keeps_the_old_replica() {
    let p = people_pair();
    let spec = people_spec();
    let cookie = full_refresh(&p, "s", &spec);
    let before = replica_view(&p.replicas, "s");
    let r = p.replicas.replica("s").unwrap();

    let mut shadow = r.begin_shadow(RefreshKind::Full).unwrap();
    let one = p.dir.search(&spec).next().unwrap().unwrap();
    shadow.apply(&[ReplOp::Upsert(one)]).unwrap();
    assert_eq!(replica_view(&p.replicas, "s"), before, "readers see the old replica mid-reload");
    shadow.abort().unwrap();
    assert_eq!(replica_view(&p.replicas, "s"), before);
    assert_eq!(r.cookie().unwrap(), Some(cookie));

    // Present refresh: unchanged entries named by uuid are copied from the old replica.
    p.dir.write(&delete("uid=b,ou=people,dc=example,dc=com")).unwrap();
    let mut shadow = r.begin_shadow(RefreshKind::Present).unwrap();
    let uuids: Vec<_> = p.dir.search(&spec).map(|e| e.unwrap().uuid).collect();
    shadow.copy_present(&uuids).unwrap();
    let done = Cookie { history: p.dir.history(), csn: p.dir.durable_csn() };
    shadow.finish(done).unwrap();
    assert_eq!(replica_view(&p.replicas, "s"), provider_view(&p.dir, &spec));
    assert_eq!(r.cookie().unwrap(), Some(done));

    let mut shadow = r.begin_shadow(RefreshKind::Present).unwrap();
    let missing = [tether_protocol::EntryUuid::new_random()];
    assert!(matches!(shadow.copy_present(&missing), Err(StoreError::MissingPresentEntries(1))));
}

#[test]
fn an_unfinished_shadow_is_discarded_on_reopen() {
    let p = people_pair();
    full_refresh(&p, "s", &people_spec());
    let before = replica_view(&p.replicas, "s");
    let path = tempfile::tempdir().unwrap();
    {
        let store = ReplicaStore::open(path.path()).unwrap();
        let r = store.replica("s").unwrap();
        r.apply(&p.dir.search(&people_spec()).map(|e| ReplOp::Upsert(e.unwrap())).collect::<Vec<_>>(), None).unwrap();
        let mut shadow = r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply::<ReplOp>(&[]).unwrap();
        store.flush().unwrap();
        drop(shadow); // no Drop impl: dropping is not an abort, like a crash
    }
    let store = reopen_replicas(path.path());
    assert_eq!(store.replica("s").unwrap().state().unwrap().shadow, None);
    assert_eq!(replica_view(&store, "s"), before);
}

#[test]
fn plan_refresh_follows_cookie_and_retention() {
    let p = people_pair();
    assert_eq!(p.dir.plan_refresh(None).unwrap(), RefreshKind::Full);
    let foreign = Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(1) };
    assert_eq!(p.dir.plan_refresh(Some(&foreign)).unwrap(), RefreshKind::Full);
    let old = Cookie { history: p.dir.history(), csn: Csn(2) };
    assert_eq!(p.dir.plan_refresh(Some(&old)).unwrap(), RefreshKind::Delta);
    let ahead = Cookie { history: p.dir.history(), csn: Csn(999) };
    assert_eq!(p.dir.plan_refresh(Some(&ahead)).unwrap(), RefreshKind::Full);

    let policy = RetentionPolicy {
        max_changes: Some(2),
        max_age: None,
        hold_for_consumers: std::time::Duration::from_secs(60),
        up_since_ms: 0,
    };
    let report = p.dir.trim(&policy, u64::MAX / 2).unwrap();
    assert_eq!(report.floor, Csn(p.dir.durable_csn().0 - 2));
    assert_eq!(p.dir.changelog().oldest().unwrap(), Some(report.floor.next()));
    assert_eq!(p.dir.plan_refresh(Some(&old)).unwrap(), RefreshKind::Present);
}

/// Each start of the provider begins a new history and ends the last one where it
/// stood. A cookie is resumed from only if it lies in a history this store made: after an
/// ordinary restart every earlier cookie still gets a delta, while a copy restored from a
/// backup sends any consumer that followed the original past the copy a full refresh.
#[test]
fn a_store_restored_from_a_copy_does_not_resume_cookies_from_the_history_it_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, backup) = (tmp.path().join("p"), tmp.path().join("backup"));
    let person = |i: u32| add_person(&format!("uid=h{i},ou=people,dc=example,dc=com"));
    let plan = |d: &Directory, history, csn| d.plan_refresh(Some(&Cookie { history, csn: Csn(csn) })).unwrap();

    // The first history is the store id's, so cookies from before histories were kept
    // stay good.
    let (first, copied) = {
        let d = Directory::open(&path, &dn(SUFFIX)).unwrap();
        assert_eq!(d.history().0, d.store_id().0);
        for c in base_tree() {
            d.write(&c).unwrap();
        }
        d.flush().unwrap();
        (d.history(), d.durable_csn().0)
    };
    copy_folder(&path, &backup);

    // The original: started, it writes on past the copy.
    let lost = {
        let d = reopen_directory(&path, &dn(SUFFIX));
        let second = d.begin_history().unwrap();
        assert_ne!(second, first);
        for i in 0..10 {
            d.write(&person(i)).unwrap();
        }
        assert_eq!(plan(&d, first, copied), RefreshKind::Delta, "a restart costs no consumer a reload");
        assert_eq!(plan(&d, first, copied + 1), RefreshKind::Full, "the first history ended at the restart");
        assert_eq!(plan(&d, second, d.durable_csn().0), RefreshKind::Delta);
        d.flush().unwrap();
        Cookie { history: second, csn: d.durable_csn() }
    };

    // The copy, restored in its place: started, it writes other changes, past `lost`.
    std::fs::remove_dir_all(&path).unwrap();
    copy_folder(&backup, &path);
    let d = reopen_directory(&path, &dn(SUFFIX));
    let third = d.begin_history().unwrap();
    assert!(![first, lost.history].contains(&third));
    for i in 100..120 {
        d.write(&person(i)).unwrap();
    }
    assert!(d.durable_csn() > lost.csn, "the restored store's CSNs passed the lost position");
    assert!(!d.recognizes(&lost).unwrap());
    assert_eq!(d.plan_refresh(Some(&lost)).unwrap(), RefreshKind::Full, "a history the copy never made");
    assert_eq!(plan(&d, first, copied), RefreshKind::Delta, "a consumer that stopped before the copy resumes");
    assert_eq!(plan(&d, first, copied + 1), RefreshKind::Full);
    assert_eq!(plan(&d, third, d.durable_csn().0), RefreshKind::Delta);
    assert_eq!(d.ended_histories(), 1, "the copy knows one ended history: its own first");
}

/// The history a start begins is the store's from then on, across the next restart:
/// a consumer that followed the provider through two starts still resumes by delta.
#[test]
fn a_history_begun_at_a_start_is_still_recognized_after_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p");
    let (begun, at) = {
        let d = Directory::open(&path, &dn(SUFFIX)).unwrap();
        for c in base_tree() {
            d.write(&c).unwrap();
        }
        let begun = d.begin_history().unwrap();
        d.write(&add_person("uid=h0,ou=people,dc=example,dc=com")).unwrap();
        d.flush().unwrap();
        (begun, Cookie { history: begun, csn: d.durable_csn() })
    };
    let d = reopen_directory(&path, &dn(SUFFIX));
    assert_eq!(d.history(), begun, "the history begun, read back");
    d.begin_history().unwrap();
    assert_eq!(d.plan_refresh(Some(&at)).unwrap(), RefreshKind::Delta);
}

/// A session that moves a replica to the provider's newer history at the CSN it already
/// had (an empty delta after the provider restarted) leaves its cookie in the older
/// history, the same position, which a backup of the provider taken before that restart
/// also recognizes; a cookie with a newer CSN, or a reload's, is taken as offered.
#[test]
fn a_cookie_at_the_same_csn_in_a_newer_history_keeps_the_older_one() {
    let tmp = tempfile::tempdir().unwrap();
    let replicas = ReplicaStore::open(tmp.path()).unwrap();
    let replica = replicas.replica("people").unwrap();
    let (first, second, third) = (HistoryId::new_random(), HistoryId::new_random(), HistoryId::new_random());
    let at = |history, csn| Cookie { history, csn: Csn(csn) };

    let shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
    shadow.finish(at(first, 7)).unwrap();
    replica.advance(at(second, 7)).unwrap();
    assert_eq!(replica.cookie().unwrap(), Some(at(first, 7)), "the same position, in the older history");
    replica.apply::<ReplOp>(&[], Some(at(third, 7))).unwrap();
    assert_eq!(replica.cookie().unwrap(), Some(at(first, 7)));
    replica.advance(at(second, 9)).unwrap();
    assert_eq!(replica.cookie().unwrap(), Some(at(second, 9)), "a newer position is the provider's");
    // A reload may come from another store whose CSNs merely coincide: its cookie as is.
    let shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
    shadow.finish(at(third, 9)).unwrap();
    assert_eq!(replica.cookie().unwrap(), Some(at(third, 9)));
}

/// A delta batch moves the replica past its cookie; the replica records how far and in
/// which provider history until a cookie covers it again (the delta's end, or a reload),
/// across a reopen, and a later delta raises the record to its own history.
#[test]
fn a_delta_batch_records_how_far_past_its_cookie_the_replica_went_until_a_cookie_covers_it() {
    let p = people_pair();
    let spec = people_spec();
    let start = full_refresh(&p, "d", &spec);
    let r = p.replicas.replica("d").unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), None);
    let (h1, h2) = (tether_protocol::HistoryId([1; 16]), tether_protocol::HistoryId([2; 16]));
    let entry = p.dir.search(&spec).next().unwrap().unwrap();
    let at = |csn: u64| ReplOp::Upsert(Entry { csn: Csn(csn), ..entry.clone() });

    r.apply_delta_batch(&[at(40), at(30)], h1).unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), Some(Cookie { history: h1, csn: Csn(40) }));
    assert_eq!(r.cookie().unwrap(), Some(start), "the cookie waits for the delta's end");
    r.apply_delta_batch::<ReplOp>(&[], h2).unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), Some(Cookie { history: h1, csn: Csn(40) }), "nothing applied");
    r.apply_delta_batch(&[at(35)], h2).unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), Some(Cookie { history: h2, csn: Csn(40) }), "raised, not lowered");
    p.replicas.flush().unwrap();
    let Pair { _tmp, dir, replicas } = p;
    drop((r, replicas));
    let replicas = reopen_replicas(_tmp.1.path());
    let r = replicas.replica("d").unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), Some(Cookie { history: h2, csn: Csn(40) }), "durable");

    r.advance(Cookie { history: h2, csn: Csn(41) }).unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), None, "the delta's end covers it");
    r.apply_delta_batch(&[at(50)], h2).unwrap();
    let shadow = r.begin_shadow(RefreshKind::Full).unwrap();
    shadow.finish(Cookie { history: h2, csn: Csn(60) }).unwrap();
    assert_eq!(r.beyond_cookie().unwrap(), None, "a reload replaces the generation that was past it");
    drop(dir);
}

/// A replica remembers the region it was replicated for; another region drops its
/// cookie, durably and before the new region is on record, so the next session reloads
/// it in full instead of resuming a delta that would never bring the new region's
/// unchanged entries.
#[test]
fn a_provider_s_proof_is_remembered_from_the_first_time_until_the_replica_is_removed() {
    let p = people_pair();
    let r = p.replicas.replica("d").unwrap();
    assert_eq!(r.provider_proved_at().unwrap(), None);
    r.record_provider_proved(1_000).unwrap();
    r.record_provider_proved(2_000).unwrap();
    assert_eq!(r.provider_proved_at().unwrap(), Some(1_000), "the first time is kept");
    assert_eq!(p.replicas.replica("other").unwrap().provider_proved_at().unwrap(), None, "per agreement");

    let Pair { _tmp, dir, replicas } = p;
    drop((r, replicas));
    let replicas = reopen_replicas(_tmp.1.path());
    let r = replicas.replica("d").unwrap();
    assert_eq!(r.provider_proved_at().unwrap(), Some(1_000), "durable across a reopen");
    replicas.remove("d").unwrap();
    assert_eq!(replicas.replica("d").unwrap().provider_proved_at().unwrap(), None, "a removed agreement forgets it");
    drop(dir);
}

#[test]
fn a_replica_made_for_another_region_loses_its_cookie_when_the_region_changes() {
    let p = people_pair();
    let (people, filtered) = (people_spec(), filtered_spec());
    let r = p.replicas.replica("d").unwrap();
    assert_eq!(r.adopt_region(&people).unwrap(), RegionAdopted::Kept, "a new replica has no cookie to drop");
    let cookie = full_refresh(&p, "d", &people);
    assert_eq!(r.adopt_region(&people).unwrap(), RegionAdopted::Kept, "the same region");
    assert_eq!(r.cookie().unwrap(), Some(cookie));

    assert_eq!(r.adopt_region(&filtered).unwrap(), RegionAdopted::Reloads, "another filter");
    assert_eq!(r.cookie().unwrap(), None);
    assert!(!r.is_empty().unwrap(), "the entries stay readable until the full refresh replaces them");
    full_refresh(&p, "d", &filtered);
    let attrs = SearchSpec { attrs: vec!["cn".into()], ..filtered.clone() };
    assert_eq!(r.adopt_region(&attrs).unwrap(), RegionAdopted::Reloads, "another attribute list");

    // Durable across a reopen. A replica with a cookie and no region on record was made
    // before regions were recorded: a consumer upgraded in place, which must resume, not
    // reload every replica in full. It takes the region it is given.
    let cookie2 = full_refresh(&p, "d", &attrs);
    let legacy = p.replicas.replica("legacy").unwrap();
    legacy.advance(cookie2).unwrap();
    p.replicas.flush().unwrap();
    let Pair { _tmp, dir, replicas } = p;
    drop((r, legacy, replicas));
    let replicas = reopen_replicas(_tmp.1.path());
    let r = replicas.replica("d").unwrap();
    assert_eq!(r.adopt_region(&attrs).unwrap(), RegionAdopted::Kept, "the region is on record");
    let legacy = replicas.replica("legacy").unwrap();
    assert_eq!(legacy.adopt_region(&people).unwrap(), RegionAdopted::Unrecorded);
    assert_eq!(legacy.cookie().unwrap(), Some(cookie2), "it resumes from its cookie");
    assert_eq!(legacy.adopt_region(&people).unwrap(), RegionAdopted::Kept, "its region is now on record");
    assert_eq!(legacy.adopt_region(&attrs).unwrap(), RegionAdopted::Reloads, "and a change of it reloads it");

    // Removing a replica forgets its region with it.
    replicas.remove("d").unwrap();
    let r = replicas.replica("d").unwrap();
    r.advance(cookie2).unwrap();
    assert_eq!(
        r.adopt_region(&attrs).unwrap(),
        RegionAdopted::Unrecorded,
        "a new replica of the same name starts with no region"
    );
    drop(dir);
}

/// An offline load is not logged: it raises the changelog floor past itself and drops
/// the records below, so a cookie from before it gets a present refresh and one from its
/// end a delta. While a refresh holds a pin, a bulk add is logged as any write is.
#[test]
fn a_bulk_load_raises_the_floor_instead_of_logging_unless_a_refresh_holds_a_pin() {
    let p = people_pair();
    let people = |from: usize, to: usize| -> Vec<_> {
        (from..to)
            .map(|i| {
                (dn(&format!("uid=bulk{i},ou=people,dc=example,dc=com")), attrs(&[("objectClass", "person")]), None)
            })
            .collect()
    };
    let before = Cookie { history: p.dir.history(), csn: p.dir.durable_csn() };
    assert!(p.dir.changelog().oldest().unwrap().is_some(), "the writes before the load are logged");
    let loaded = p.dir.bulk_add(&people(0, 5)).unwrap();
    assert_eq!(p.dir.floor().unwrap(), loaded);
    assert_eq!(p.dir.changelog().oldest().unwrap(), None, "no records for the load, none left below the floor");
    assert_eq!(p.dir.plan_refresh(Some(&before)).unwrap(), RefreshKind::Present);
    let at_load = Cookie { history: p.dir.history(), csn: loaded };
    assert_eq!(p.dir.plan_refresh(Some(&at_load)).unwrap(), RefreshKind::Delta);
    let written = p.dir.write(&add_person("uid=after,ou=people,dc=example,dc=com")).unwrap().csn;
    assert_eq!(p.dir.changelog().oldest().unwrap(), Some(written), "writes after the load are logged");

    // A running refresh reads the changelog above its pin: a bulk add must not raise
    // the floor under it.
    let pin = p.dir.pin(loaded).unwrap().unwrap();
    let logged = p.dir.bulk_add(&people(5, 8)).unwrap();
    assert_eq!(p.dir.floor().unwrap(), loaded, "the floor stays at the pin");
    assert_eq!(p.dir.changelog().records(loaded, logged).count(), 4, "the write and the three pinned adds");
    assert_eq!(p.dir.plan_refresh(Some(&at_load)).unwrap(), RefreshKind::Delta);
    drop(pin);
    let last = p.dir.bulk_add(&people(8, 9)).unwrap();
    assert_eq!(p.dir.floor().unwrap(), last);
    assert_eq!(p.dir.changelog().oldest().unwrap(), None);
    assert_eq!(p.dir.plan_refresh(Some(&at_load)).unwrap(), RefreshKind::Present);
    assert_eq!(p.dir.entry_count().unwrap(), p.dir.entries().len() as u64);
}

/// Two refreshes running at once each hold their pin: a trim, even by the hard cap,
/// stops at the lower one, and each pin holds only until its refresh drops it.
#[test]
fn a_trim_stops_at_the_lowest_of_the_running_refreshes_pins() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    let everything = RetentionPolicy {
        max_changes: Some(0),
        max_age: None,
        hold_for_consumers: std::time::Duration::ZERO,
        up_since_ms: 0,
    };
    let older = p.dir.pin(Csn(2)).unwrap().unwrap();
    let newer = p.dir.pin(Csn(4)).unwrap().unwrap();
    assert_eq!(p.dir.trim(&everything, 0).unwrap().floor, Csn(2), "the older refresh's pin holds");
    drop(older);
    assert_eq!(p.dir.trim(&everything, 0).unwrap().floor, Csn(4), "then the newer one's");
    drop(newer);
    assert_eq!(p.dir.trim(&everything, 0).unwrap().floor, newest, "and then none");
}

#[test]
fn age_trimming_holds_for_recent_consumers_but_not_past_the_hard_cap() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    p.dir.record_consumer("slow", Csn(2)).unwrap();
    let far_future = tether_store_now() + 10 * 24 * 3600 * 1000;
    let hold = std::time::Duration::from_secs(365 * 24 * 3600);
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: hold,
        up_since_ms: 0,
    };
    let report = p.dir.trim(&policy, far_future).unwrap();
    assert_eq!(report.floor, Csn(2), "held at the consumer's position");
    let policy = RetentionPolicy { max_changes: Some(1), ..policy };
    p.dir.record_consumer("current", Csn(newest.0 - 1)).unwrap();
    let report = p.dir.trim(&policy, far_future).unwrap();
    assert_eq!(report.floor, Csn(newest.0 - 1), "the hard cap trims past the held consumer");
    // A position below the floor holds nothing ever again: forgotten, so the table does
    // not keep every consumer that ever connected.
    assert_eq!(report.forgotten, ["slow"], "named, for the provider's log");
    let ids: Vec<String> = p.dir.consumer_positions().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["current"]);
    let unheld = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: std::time::Duration::from_secs(1),
        up_since_ms: 0,
    };
    // A provider that started within the window holds every position again: its own
    // downtime is not the consumers' absence.
    let restarted = RetentionPolicy { up_since_ms: far_future - 500, ..unheld };
    assert_eq!(p.dir.trim(&restarted, far_future).unwrap().removed, 0, "held since the provider's start");
    let report = p.dir.trim(&unheld, far_future).unwrap();
    assert_eq!(report.floor, newest, "a consumer not seen within the window holds nothing");
}

/// Age trimming stops at the oldest position of the consumers seen within the hold, not
/// at a faster one's: the slow consumer still gets a delta.
#[test]
fn age_trimming_stops_at_the_slowest_of_the_recently_seen_consumers() {
    let p = people_pair();
    p.dir.record_consumer("people/slow", Csn(2)).unwrap();
    p.dir.record_consumer("people/fast", Csn(4)).unwrap();
    let far_future = tether_store_now() + 10 * 24 * 3600 * 1000;
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: std::time::Duration::from_secs(365 * 24 * 3600),
        up_since_ms: 0,
    };
    let report = p.dir.trim(&policy, far_future).unwrap();
    assert_eq!(report.floor, Csn(2), "{report:?}");
    let slow = Cookie { history: p.dir.history(), csn: Csn(2) };
    assert_eq!(p.dir.plan_refresh(Some(&slow)).unwrap(), RefreshKind::Delta);
}

/// A consumer forgotten (`tether-provider forget`) holds back no trimming from then on,
/// and the others keep theirs: its position is what is given back, and a second forget
/// finds nothing.
#[test]
fn a_forgotten_consumer_holds_back_no_trimming() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    p.dir.record_consumer("people/gone", Csn(2)).unwrap();
    p.dir.record_consumer("people/here", Csn(4)).unwrap();
    let forgotten = p.dir.forget_consumer("people/gone").unwrap().expect("its position");
    assert_eq!(forgotten.csn, Csn(2));
    assert!(p.dir.forget_consumer("people/gone").unwrap().is_none(), "forgotten once");
    let ids: Vec<String> = p.dir.consumer_positions().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["people/here"]);
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: std::time::Duration::from_secs(365 * 24 * 3600),
        up_since_ms: 0,
    };
    let far_future = tether_store_now() + 10 * 24 * 3600 * 1000;
    let report = p.dir.trim(&policy, far_future).unwrap();
    assert_eq!(report.floor, Csn(4), "held by the one left, not the one forgotten");
    assert!(newest > Csn(4));
}

/// `max_age` trims the records older than it and none younger, with no consumer seen to
/// hold them: a consumer away for less than `max_age` still gets a delta.
#[test]
fn age_trimming_keeps_every_record_younger_than_max_age() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    let hour = std::time::Duration::from_secs(3600);
    let policy = RetentionPolicy { max_changes: None, max_age: Some(hour), hold_for_consumers: hour, up_since_ms: 0 };
    let report = p.dir.trim(&policy, tether_store_now()).unwrap();
    assert_eq!((report.removed, report.floor), (0, Csn::ZERO), "no record is an hour old yet");
    // Two hours on, every record is past the age.
    let report = p.dir.trim(&policy, tether_store_now() + 2 * 3_600_000).unwrap();
    assert_eq!(report.floor, newest);
}

/// A consumer seen exactly `hold_for_consumers` ago is still within the hold: it keeps
/// what it has not received.
#[test]
fn a_consumer_seen_exactly_the_hold_ago_still_holds_age_trimming() {
    let p = people_pair();
    p.dir.record_consumer("people/away", Csn(2)).unwrap();
    let seen = p.dir.consumer_positions().unwrap()[0].1.seen_ms;
    let hold = std::time::Duration::from_secs(30);
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: hold,
        up_since_ms: 0,
    };
    // Every record is past its age then; only the consumer's position holds.
    let report = p.dir.trim(&policy, seen + 30_000).unwrap();
    assert_eq!(report.floor, Csn(2), "{report:?}");
    let report = p.dir.trim(&policy, seen + 30_001).unwrap();
    assert_eq!(report.floor, p.dir.durable_csn(), "a millisecond later it holds nothing");
}

fn tether_store_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A random workload over a small name space, so renames, moves across the scope and
/// filter flips collide often.
#[derive(Debug, Clone)]
enum Op {
    Add(u8, bool),
    Modify(u8, bool),
    Move(u8, u8, bool),
    Delete(u8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, any::<bool>()).prop_map(|(i, p)| Op::Add(i, p)),
        (0u8..12, any::<bool>()).prop_map(|(i, k)| Op::Modify(i, k)),
        (0u8..12, 0u8..12, any::<bool>()).prop_map(|(i, j, p)| Op::Move(i, j, p)),
        (0u8..12).prop_map(Op::Delete),
    ]
}

fn ou(people: bool) -> &'static str {
    if people {
        "ou=people,dc=example,dc=com"
    } else {
        "ou=groups,dc=example,dc=com"
    }
}

/// Runs `op` against the directory; refusals (missing entries, taken names) are fine.
fn run(d: &Directory, op: &Op) {
    let find = |i: u8| {
        [true, false].into_iter().map(|p| format!("uid=u{i},{}", ou(p))).find(|s| d.entries().contains(&dn(s)).unwrap())
    };
    let change = match op {
        Op::Add(i, p) => add_person(&format!("uid=u{i},{}", ou(*p))),
        Op::Modify(i, keep) => match find(*i) {
            Some(s) => modify(&s, ModOp::Replace, "sn", &[if *keep { "Keep" } else { "Drop" }]),
            None => return,
        },
        Op::Move(i, j, p) => match find(*i) {
            Some(s) => moddn(&s, &format!("uid=u{j}"), Some(ou(*p))),
            None => return,
        },
        Op::Delete(i) => match find(*i) {
            Some(s) => delete(&s),
            None => return,
        },
    };
    let _ = d.write(&change);
}

/// Applies every durable change after `position` to `replica` through the persist
/// phase's feed, seven at a time, each as a consumer receives it: the `Change` message
/// the session sends, decoded as the consumer's reader decodes it (the entry checked,
/// its bytes kept and stored as they are); returns the entry count's change by the
/// apply stats.
fn stream(dir: &Directory, replica: &tether_store::Replica, spec: &SearchSpec, position: &mut Csn) -> i64 {
    let mut delta = 0;
    loop {
        let changes = dir.recent_changes(*position, dir.durable_csn(), 7).unwrap();
        if changes.is_empty() {
            return delta;
        }
        for change in changes {
            if let Some(op) = change.op_for(spec).unwrap() {
                let cookie = Cookie { history: dir.history(), csn: change.csn() };
                let sent = EncodedMessage::change(&op, &cookie).unwrap();
                let Received::Change { op: received, cookie } = Received::decode(sent.as_bytes()).unwrap() else {
                    panic!("a change decodes as a change")
                };
                delta += replica.apply(&[received], Some(cookie)).unwrap().entries_delta();
            }
            *position = change.csn();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn delta_and_live_stream_converge_for_any_workload(
        before in proptest::collection::vec(op_strategy(), 0..25),
        after in proptest::collection::vec(op_strategy(), 0..40),
    ) {
        let p = pair();
        for op in &before {
            run(&p.dir, op);
        }
        for spec in [people_spec(), filtered_spec()] {
            let name = format!("{}", spec.scope);
            let cookie = full_refresh(&p, &format!("{name}-delta"), &spec);
            full_refresh(&p, &format!("{name}-live"), &spec);
            full_refresh(&p, &format!("{name}-late"), &spec);
            let start = p.dir.durable_csn();
            let live = p.replicas.replica(&format!("{name}-live")).unwrap();
            let late = p.replicas.replica(&format!("{name}-late")).unwrap();
            // The entry count a consumer keeps in status from the apply stats alone.
            let mut count = live.entries().unwrap().len() as i64;
            let mut position = start;
            for op in &after {
                run(&p.dir, op);
                // As the persist phase sends them: change by change from the feed, a
                // few at a time, as they are written.
                count += stream(&p.dir, &live, &spec, &mut position);
            }
            // Coalesced delta.
            delta_refresh(&p, &format!("{name}-delta"), &spec, cookie);
            prop_assert_eq!(replica_view(&p.replicas, &format!("{name}-delta")), provider_view(&p.dir, &spec));
            prop_assert_eq!(replica_view(&p.replicas, &format!("{name}-live")), provider_view(&p.dir, &spec));
            // A second session, behind the first: it takes the changes the first one read
            // from the feed, each with the entry as then stored, and still ends at the
            // latest state.
            let mut behind = start;
            stream(&p.dir, &late, &spec, &mut behind);
            prop_assert_eq!(replica_view(&p.replicas, &format!("{name}-late")), provider_view(&p.dir, &spec));
            prop_assert_eq!(count, live.entries().unwrap().len() as i64, "created - removed tracks the count");
            // The count the store keeps, for the delta replica (batches, after a reload)
            // and the live one (one op at a time).
            for replica in [format!("{name}-delta"), format!("{name}-live"), format!("{name}-late")] {
                let replica = p.replicas.replica(&replica).unwrap();
                prop_assert_eq!(replica.len().unwrap(), replica.entries().unwrap().len(), "stored count");
            }
        }
    }
}

#[test]
fn a_shadow_with_a_resume_point_survives_reopen_and_is_continued() {
    let p = people_pair();
    let spec = people_spec();
    let entries: Vec<Entry> = p.dir.search(&spec).map(|e| e.unwrap()).collect();
    let (first, rest) = entries.split_at(entries.len() / 2);
    let resume = ResumePoint {
        kind: RefreshKind::Full,
        since: Csn::ZERO,
        start: Cookie { history: p.dir.history(), csn: p.dir.durable_csn() },
        cursor: Some(first.last().unwrap().dn.tree_key()),
    };
    let path = tempfile::tempdir().unwrap();
    {
        let store = ReplicaStore::open(path.path()).unwrap();
        let r = store.replica("s").unwrap();
        let mut shadow = r.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply(&first.iter().cloned().map(ReplOp::Upsert).collect::<Vec<_>>()).unwrap();
        shadow.record_progress(&spec, resume.clone()).unwrap();
        store.flush().unwrap();
        drop(shadow); // like a crash
    }
    let store = reopen_replicas(path.path());
    let r = store.replica("s").unwrap();
    assert_eq!(r.resume_point(&spec).unwrap(), Some(resume), "the resume point outlives the process");
    assert_eq!(r.resume_point(&SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())).unwrap(), None);
    assert!(r.entries().unwrap().is_empty(), "readers still see the old (empty) replica");
    let mut shadow = r.resume_shadow().unwrap();
    assert_eq!((shadow.kind(), shadow.received()), (RefreshKind::Full, first.len() as u64));
    // The scan goes on unchecked, and the last entry before the resume point comes again,
    // as one written after the last recorded point does after a crash: held once,
    // counted once.
    let again: Vec<ReplOp> = first.last().into_iter().chain(rest).cloned().map(ReplOp::Upsert).collect();
    shadow.apply_scan(&again).unwrap();
    assert_eq!(shadow.received(), entries.len() as u64 + 1);
    let held = shadow.finish(Cookie { history: p.dir.history(), csn: p.dir.durable_csn() }).unwrap();
    assert_eq!(replica_view(&store, "s"), provider_view(&p.dir, &spec));
    assert_eq!((held, r.len().unwrap()), (entries.len(), entries.len()), "the count of a resumed reload");
    assert_eq!(r.resume_point(&spec).unwrap(), None, "finishing clears the resume point");

    // A shadow that will not be continued is dropped with its resume point.
    let mut shadow = r.begin_shadow(RefreshKind::Full).unwrap();
    shadow.apply(&[ReplOp::Upsert(entries[0].clone())]).unwrap();
    shadow.record_progress(&spec, ResumePoint { cursor: None, ..r_point(&p) }).unwrap();
    r.abandon_shadow().unwrap();
    assert_eq!(r.state().unwrap().shadow, None);
    assert!(matches!(r.resume_shadow(), Err(StoreError::StaleShadow(_))));
}

/// A reload's count is kept from its applies, not scanned when it is swapped in: a scan
/// written unchecked, then a catch-up that deletes, adds, renames and repeats entries.
#[test]
fn a_reload_knows_how_many_entries_it_holds() {
    let p = people_pair();
    let spec = people_spec();
    let start = Cookie { history: p.dir.history(), csn: p.dir.durable_csn() };
    let scanned: Vec<Entry> = p.dir.search(&spec).map(|e| e.unwrap()).collect();
    let r = p.replicas.replica("r").unwrap();
    let mut shadow = r.begin_shadow(RefreshKind::Full).unwrap();
    assert_eq!(shadow.len(), 0);
    shadow.apply_scan(&scanned.iter().cloned().map(ReplOp::Upsert).collect::<Vec<_>>()).unwrap();
    assert_eq!(shadow.len(), scanned.len());

    // Changes made during the scan, sent as its catch-up.
    p.dir.write(&delete("uid=a,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&add_person("uid=d,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&add_person("uid=e,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&moddn("uid=b,ou=people,dc=example,dc=com", "uid=b2", None)).unwrap();
    let mut delta = p.dir.changelog().delta(start.csn, p.dir.durable_csn(), &spec).unwrap();
    let mut catch_up = Vec::new();
    loop {
        let batch = delta.next_batch(p.dir.entries(), 5, &|| p.dir.newest_committed()).unwrap();
        if batch.is_empty() {
            break;
        }
        catch_up.extend(batch);
    }
    shadow.apply(&catch_up).unwrap();
    shadow.apply(&catch_up).unwrap();
    let held = shadow.finish(Cookie { history: p.dir.history(), csn: p.dir.durable_csn() }).unwrap();
    assert_eq!(replica_view(&p.replicas, "r"), provider_view(&p.dir, &spec));
    let scan = r.entries().unwrap().len();
    assert_eq!(scan, scanned.len() + 1, "one deleted, two added");
    assert_eq!((held, r.len().unwrap()), (scan, scan), "the count kept against a scan");
}

fn r_point(p: &Pair) -> ResumePoint {
    ResumePoint {
        kind: RefreshKind::Full,
        since: Csn::ZERO,
        start: Cookie { history: p.dir.history(), csn: p.dir.durable_csn() },
        cursor: None,
    }
}

/// The entry count is kept with the entries: it follows a reload, a delta and single
/// changes, survives a reopen, and a store that has no count yet (written before counts
/// were kept) is counted when opened.
#[test]
fn the_entry_count_is_kept_across_reloads_deltas_and_reopens() {
    let p = people_pair();
    let spec = people_spec();
    let path = p._tmp.1.path().to_owned();
    let scan = |replicas: &ReplicaStore| replicas.replica("r").unwrap().entries().unwrap().len();
    assert_eq!(p.replicas.replica("r").unwrap().len().unwrap(), 0, "a new replica");
    let cookie = full_refresh(&p, "r", &spec);
    let reloaded = p.replicas.replica("r").unwrap().len().unwrap();
    assert_eq!(reloaded, scan(&p.replicas));
    assert!(reloaded > 0);
    p.dir.write(&delete("uid=a,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&add_person("uid=d,ou=people,dc=example,dc=com")).unwrap();
    p.dir.write(&add_person("uid=e,ou=people,dc=example,dc=com")).unwrap();
    delta_refresh(&p, "r", &spec, cookie);
    assert_eq!(p.replicas.replica("r").unwrap().len().unwrap(), reloaded + 1);
    assert_eq!(p.replicas.replica("r").unwrap().len().unwrap(), scan(&p.replicas));

    let Pair { _tmp, dir, replicas } = p;
    replicas.flush().unwrap();
    drop(replicas);
    let replicas = reopen_replicas(&path);
    assert_eq!(replicas.replica("r").unwrap().len().unwrap(), reloaded + 1, "after a reopen");
    drop(replicas);

    // A store from before counts were kept: no count record at all.
    {
        let db = reopen_sled(&path);
        assert!(db.drop_tree("replica_counts").unwrap());
        db.flush().unwrap();
    }
    let replicas = reopen_replicas(&path);
    assert_eq!(replicas.replica("r").unwrap().len().unwrap(), reloaded + 1, "counted on open");
    drop(replicas);
    {
        let db = reopen_sled(&path);
        let record = db.open_tree("replica_counts").unwrap().get("r").unwrap().expect("the count was recorded");
        assert_eq!(record[8..], ((reloaded + 1) as u64).to_be_bytes());
    }
    let replicas = reopen_replicas(&path);
    let p = Pair { _tmp, dir, replicas };
    p.dir.write(&add_person("uid=f,ou=people,dc=example,dc=com")).unwrap();
    let cookie = p.replicas.replica("r").unwrap().cookie().unwrap().unwrap();
    delta_refresh(&p, "r", &spec, cookie);
    assert_eq!(p.replicas.replica("r").unwrap().len().unwrap(), reloaded + 2, "and kept from then on");
    assert_eq!(p.replicas.replica("r").unwrap().len().unwrap(), scan(&p.replicas));
}

/// A connected consumer is seen now, whenever its position was last written (a session
/// writes it again only every minute or so while nothing moves): with a hold shorter
/// than that, one paused a few seconds was trimmed past and reloaded. Its position is
/// kept too (its session writes the next one over it), while the cap trims past it.
#[test]
fn a_connected_consumer_holds_trimming_whenever_its_position_was_written() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    p.dir.record_consumer("people/paused", Csn(2)).unwrap();
    p.dir.record_consumer("people/gone", Csn(3)).unwrap();
    let far_future = tether_store_now() + 10 * 24 * 3600 * 1000;
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: std::time::Duration::from_secs(30),
        up_since_ms: 0,
    };
    let connected: std::collections::HashSet<String> = ["people/paused".to_owned()].into();
    let report = p.dir.trim_connected(&policy, far_future, &connected).unwrap();
    assert_eq!(report.floor, Csn(2), "held at the connected consumer's position, written long ago");
    assert!(report.forgotten.is_empty(), "{report:?}");

    let capped = RetentionPolicy { max_changes: Some(1), ..policy };
    let report = p.dir.trim_connected(&capped, far_future, &connected).unwrap();
    assert_eq!(report.floor, Csn(newest.0 - 1), "the hard cap trims past it");
    assert_eq!(report.forgotten, ["people/gone"], "the connected one's position stays, for its session");
    let ids: Vec<String> = p.dir.consumer_positions().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["people/paused"]);
    // Below the floor now, it holds nothing: its consumer gets a present refresh
    // whatever is kept, so age trimming goes on (it stopped for the whole hold).
    p.dir.record_consumer("people/paused", Csn(2)).unwrap();
    let report = p.dir.trim_connected(&policy, far_future, &connected).unwrap();
    assert_eq!(report.floor, newest, "trimmed by age past a position below the floor");
}

/// `hold_for_consumers = "0s"` turns the hold off, for connected consumers too.
#[test]
fn no_hold_holds_no_connected_consumer() {
    let p = people_pair();
    let newest = p.dir.durable_csn();
    p.dir.record_consumer("people/connected", Csn(2)).unwrap();
    let policy = RetentionPolicy {
        max_changes: None,
        max_age: Some(std::time::Duration::from_secs(1)),
        hold_for_consumers: std::time::Duration::ZERO,
        up_since_ms: 0,
    };
    let connected: std::collections::HashSet<String> = ["people/connected".to_owned()].into();
    let far_future = tether_store_now() + 10 * 24 * 3600 * 1000;
    let report = p.dir.trim_connected(&policy, far_future, &connected).unwrap();
    assert_eq!(report.floor, newest, "{report:?}");
}
