//! The chaos run's final checks (`chaos::checker`), seen to fail. `tether-chaos` passes
//! when they find nothing, so a check that could never fire would pass every run and
//! prove nothing: here each is given a real cluster in the state it exists to catch (a
//! replica that lost an entry its cookie covers, a consumer cut off from a write, a
//! panic) and must name it, and must pass the same cluster once it is put right.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Result;
use replication_tests::chaos::checker;
use replication_tests::chaos::cluster::Cluster;
use replication_tests::proxy::Fault;
use replication_tests::workload::{Workload, OTHERS};
use tether_protocol::{Csn, Dn, ReplOp};
use tether_store::ReplicaStore;

/// Time a healthy cluster gets to converge.
const CONVERGE: Duration = Duration::from_secs(60);
/// Time a cluster that cannot converge gets before the check reports it: a few of the
/// check's own polls.
const NOT_CONVERGING: Duration = Duration::from_secs(3);
/// An anchor entry: the chaos workload only ever raises its `employeeNumber`.
const ANCHOR: &str = "uid=m0anchor,ou=people,dc=example,dc=com";

/// A chaos cluster of one consumer, whose agreements are `people` and `all`, both
/// persisting, converged.
fn converged_cluster(root: &std::path::Path) -> Result<Cluster> {
    let mut work = Workload::new(60, 1);
    let cluster = Cluster::start(root, &mut work, 1, false)?;
    if let Err(diff) = checker::converge(&cluster, CONVERGE) {
        panic!("a fresh cluster did not converge: {diff:#?}");
    }
    Ok(cluster)
}

/// The differences that name `agreement` of consumer 0.
fn naming<'a>(diff: &'a [String], agreement: &str) -> Vec<&'a String> {
    diff.iter().filter(|d| d.starts_with(&format!("consumer0 {agreement}:"))).collect()
}

/// A replica that lost an entry below its cookie converges by no later change: only the
/// final comparison with the provider shows it, and it must name the replica and the
/// entry, and only that replica.
#[test]
fn the_final_check_names_a_replica_that_lost_an_entry_its_cookie_covers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cluster = converged_cluster(tmp.path())?;
    {
        let mut state = cluster.nodes[0].lock();
        assert!(state.consumer.stop()?.success());
        // The entry taken out of the stopped consumer's `people` replica, its cookie left
        // as it was: a change lost on the way looks so to everything after it.
        let store = ReplicaStore::open(&state.consumer.dir.join("data"))?;
        let replica = store.replica("people")?;
        let entry = replica.entries()?.get(&Dn::parse(ANCHOR)?)?.expect("the anchor replicated");
        let cookie = replica.cookie()?;
        let stats = replica.apply(&[ReplOp::Delete { uuid: entry.uuid, csn: Csn(entry.csn.0 + 1) }], None)?;
        assert_eq!(stats.removed, 1);
        assert_eq!(replica.cookie()?, cookie);
        store.flush()?;
        drop((replica, store));
        state.consumer.start()?;
    }

    let diff = checker::converge(&cluster, NOT_CONVERGING).expect_err("a replica short of an entry passed");
    let people = naming(&diff, "people");
    assert_eq!(people.len(), 1, "{diff:#?}");
    assert!(people[0].contains(&format!("provider has \"dn: {ANCHOR}\"")), "{}", people[0]);
    assert!(naming(&diff, "all").is_empty(), "the untouched replica was reported: {diff:#?}");
    assert_eq!(diff.len(), 1, "{diff:#?}");
    Ok(())
}

/// A consumer cut off from its provider while a write is made outside `people`: its
/// `all` replica differs (named with the changed value), its `people` replica is equal
/// but does not know it is current (its next session would replay what it holds), and
/// its durable cookies after a clean stop are behind; once the link is back, every
/// check passes, and the counters the exactly-once check reads are the consumer's own.
#[test]
fn the_final_checks_name_a_consumer_that_missed_a_write_and_pass_it_once_it_caught_up() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cluster = converged_cluster(tmp.path())?;
    cluster.nodes[0].proxy.set_fault(Fault::Reset);
    cluster.provider().provider.write_ok(&format!(
        "dn: uid=m0anchor,{OTHERS}\nchangetype: modify\nreplace: employeeNumber\nemployeeNumber: 777\n-\n"
    ))?;
    let csn = cluster.provider().provider.status()?["csn"].as_u64().unwrap();

    let diff = checker::converge(&cluster, NOT_CONVERGING).expect_err("a replica behind its provider passed");
    assert_eq!(diff.len(), 2, "{diff:#?}");
    let all = naming(&diff, "all");
    assert!(all.len() == 1 && all[0].contains("provider has \"employeeNumber: 777\""), "{diff:#?}");
    let people = naming(&diff, "people");
    assert!(
        people.len() == 1
            && people[0].ends_with(&format!("replica equal, cookie at Some({}), provider at Some({csn})", csn - 1)),
        "{diff:#?}"
    );
    // It stops the consumer, cleanly although it cannot reach its provider.
    let durable = checker::durable_cookies(&cluster);
    assert_eq!(durable.len(), 2, "{durable:#?}");
    for agreement in ["people", "all"] {
        let named = naming(&durable, agreement);
        assert_eq!(named.len(), 1, "{agreement}: {durable:#?}");
        assert!(named[0].contains(&format!("after a clean stop, provider at Some({csn})")), "{}", named[0]);
    }

    cluster.nodes[0].proxy.heal();
    cluster.nodes[0].lock().consumer.start()?;
    if let Err(diff) = checker::converge(&cluster, CONVERGE) {
        panic!("the healed cluster did not converge: {diff:#?}");
    }
    let totals = checker::totals(&cluster);
    assert!(totals[0].applied >= 2, "the write applied to both replicas, counted {totals:?}");
    assert_eq!(checker::exactly_once(&totals), Vec::<String>::new());
    // The exactly-once check reads the apply audit's count from the consumer's status
    // under the name the consumer gives it: the same status with a count in it fails.
    let mut status = cluster.nodes[0].lock().consumer.status()?;
    let audited = status["agreements"][1]["duplicates"].take();
    assert!(audited.is_u64(), "no count of the apply audit in {status}");
    status["agreements"][1]["duplicates"] = 1.into();
    let mut doubled = totals[0].clone();
    doubled.fold(&status, None);
    assert_eq!(checker::exactly_once(&[doubled]), ["consumer0: 1 changes applied twice (apply audit)"]);
    assert_eq!(checker::durable_cookies(&cluster), Vec::<String>::new());
    Ok(())
}

/// A panic in the apply path is survived (the agreement restarts and converges), so
/// only the log shows it: the log check must find it in the consumer's log, and name
/// nothing in a log without one.
#[test]
fn the_log_check_finds_a_consumer_panic_that_the_replicas_recovered_from() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cluster = converged_cluster(tmp.path())?;
    assert_eq!(checker::log_findings(&cluster), Vec::<String>::new());
    {
        let mut state = cluster.nodes[0].lock();
        assert!(state.consumer.stop()?.success());
        state.consumer.env.push(("TETHER_FAILPOINTS".into(), "apply-panic=1".into()));
        state.consumer.start()?;
    }
    cluster
        .provider()
        .provider
        .write_ok(&format!("dn: {ANCHOR}\nchangetype: modify\nreplace: employeeNumber\nemployeeNumber: 778\n-\n"))?;
    if let Err(diff) = checker::converge(&cluster, CONVERGE) {
        panic!("the consumer did not recover from its panic: {diff:#?}");
    }
    let found = checker::log_findings(&cluster);
    assert!(!found.is_empty(), "the panic was not found");
    assert!(found.iter().all(|f| f.starts_with("consumer0 log: ") && f.contains("panicked at")), "{found:#?}");
    Ok(())
}
