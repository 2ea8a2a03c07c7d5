//! The chaos run's writer: it counts and logs exactly what the provider acknowledged and
//! rebuilds its model after a failed write.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use replication_tests::chaos::cluster::{anchor_dns, Cluster};
use replication_tests::chaos::writer::{self, WriterStats};
use replication_tests::harness::wait_until;
use replication_tests::workload::{Workload, SUFFIX};

/// Time for the writer to make the batches a test waits for.
const WRITES: Duration = Duration::from_secs(60);

/// The provider's CSN.
fn csn(cluster: &Cluster) -> u64 {
    cluster.provider().provider.status().unwrap()["csn"].as_u64().unwrap()
}

/// Batches acknowledged so far.
fn bumps(cluster: &Cluster) -> usize {
    cluster.bumps.lock().unwrap().len()
}

/// Runs the writer on `cluster` at 20 operations per second while `during` runs, then
/// stops it.
fn write_while(cluster: &Cluster, work: Workload, during: impl FnOnce() -> Result<()>) -> WriterStats {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| writer::run(cluster, work, 20, &stop));
        let outcome = during();
        stop.store(true, Ordering::Relaxed);
        let stats = w.join().unwrap().unwrap();
        outcome.unwrap();
        stats
    })
}

/// The anchors' counters as the provider holds them.
fn provider_counters(cluster: &Cluster) -> BTreeMap<String, u64> {
    let text =
        cluster.provider().provider.search_attrs(SUFFIX, "subtree", "(description=anchor)", "employeeNumber").unwrap();
    let mut out = BTreeMap::new();
    for record in text.split("\n\n") {
        let dn = record.lines().find_map(|l| l.strip_prefix("dn: "));
        let n = record.lines().find_map(|l| l.strip_prefix("employeeNumber: "));
        if let (Some(dn), Some(n)) = (dn, n) {
            out.insert(dn.to_owned(), n.parse().unwrap());
        }
    }
    out
}

/// Every record the provider acknowledged is counted, once; each batch ends with the
/// bump of the next anchor's counter, logged with the CSN the provider gave it.
#[test]
fn the_writer_counts_and_logs_every_change_the_provider_acknowledged() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut work = Workload::new(60, 1);
    let cluster = Cluster::start(tmp.path(), &mut work, 1, false)?;
    let before = csn(&cluster);
    let stats = write_while(&cluster, work, || wait_until(WRITES, "8 batches", || Ok(bumps(&cluster) >= 8)));
    let after = csn(&cluster);
    assert_eq!((stats.failed_writes, stats.resyncs), (0, 0), "{stats:?}");
    assert_eq!(stats.changes, after - before, "records counted against the provider's CSNs: {stats:?}");
    let bumps = cluster.bumps.lock().unwrap().clone();
    assert_eq!(bumps.len() as u64, stats.last_counter, "{stats:?}");
    assert!(stats.changes >= 2 * stats.last_counter, "a batch without a change: {stats:?}");
    let anchors = anchor_dns();
    for (i, b) in bumps.iter().enumerate() {
        let counter = i as u64 + 1;
        assert_eq!(b.counter, counter, "{bumps:?}");
        assert_eq!(b.dn, anchors[counter as usize % anchors.len()], "{bumps:?}");
        assert_eq!(b.restores, 0);
        assert!(i == 0 || b.csn > bumps[i - 1].csn, "{bumps:?}");
    }
    assert_eq!(bumps.last().unwrap().csn, after, "the last bump is the last record written");
    // The provider holds each anchor's last bump.
    let held = provider_counters(&cluster);
    for b in &bumps {
        let last = bumps.iter().filter(|x| x.dn == b.dn).map(|x| x.counter).max().unwrap();
        assert_eq!(held.get(&b.dn), Some(&last), "{held:?}");
    }
    Ok(())
}

/// Writes that fail while the provider is down are counted, and the writer rebuilds its
/// model from the provider before it writes again, then goes on writing.
#[test]
fn the_writer_counts_failed_writes_and_resyncs_before_writing_again() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut work = Workload::new(60, 1);
    let cluster = Cluster::start(tmp.path(), &mut work, 1, false)?;
    let stats = write_while(&cluster, work, || {
        wait_until(WRITES, "2 batches", || Ok(bumps(&cluster) >= 2))?;
        let mut p = cluster.provider();
        p.provider.kill()?;
        // Down for four of the writer's ticks.
        std::thread::sleep(Duration::from_secs(1));
        p.provider.start()?;
        let down = bumps(&cluster);
        drop(p);
        wait_until(WRITES, "8 batches after the restart", || Ok(bumps(&cluster) >= down + 8))
    });
    assert!(stats.failed_writes >= 1, "{stats:?}");
    assert!(stats.resyncs >= 1, "{stats:?}");
    assert!(stats.last_counter as usize > cluster.bumps.lock().unwrap().len(), "{stats:?}");
    Ok(())
}
