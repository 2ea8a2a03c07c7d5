//! The chaos run's writer and its binary, whose verdict CI trusts: the writer counts and
//! logs exactly what the provider acknowledged and rebuilds its model after a failed
//! write; `tether-chaos` exits 0 with a passing report whose figures come from the run,
//! and 2 when the run cannot be set up.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use replication_tests::chaos::cluster::{anchor_dns, Cluster, Totals};
use replication_tests::chaos::writer::{self, WriterStats};
use replication_tests::harness::{bin, wait_until, BIN_DIR_ENV};
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

/// The consumer counters the report sums, read from a real consumer's status under the
/// names it gives them: each set to its own value in that status must land in its own
/// total (a counter read under a name the status does not use reads as 0 for good).
#[test]
fn the_totals_read_each_consumer_counter_under_the_name_its_status_gives_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut work = Workload::new(60, 1);
    let cluster = Cluster::start(tmp.path(), &mut work, 1, false)?;
    let mut status = cluster.nodes[0].lock().consumer.status()?;
    let agreement = &mut status["agreements"][0];
    for (key, value) in [("resumed_refreshes", 3u64), ("duplicates", 5), ("applied", 7)] {
        assert!(agreement[key].is_u64(), "no {key} in {agreement}");
        agreement[key] = value.into();
    }
    for key in ["disconnects", "refreshes"] {
        assert!(agreement[key].is_object(), "no {key} in {agreement}");
    }
    agreement["disconnects"]["keepalive-timeout"] = 11.into();
    agreement["refreshes"]["full"] = 13.into();
    let name = agreement["name"].as_str().unwrap().to_owned();
    status["agreements"] = serde_json::json!([status["agreements"][0].clone()]);
    let mut totals = Totals::default();
    totals.fold(&status, None);
    assert_eq!((totals.resumed, totals.duplicates, totals.applied), (3, 5, 7), "{totals:?}");
    assert_eq!(totals.disconnects.get("keepalive-timeout"), Some(&11), "{totals:?}");
    assert_eq!(totals.refreshes.get("full"), Some(&13), "{totals:?}");
    // Only the agreement named, when one is.
    let mut other = Totals::default();
    other.fold(&status, Some("no-such-agreement"));
    assert_eq!((other.resumed, other.applied), (0, 0), "{other:?}");
    other.fold(&status, Some(&name));
    assert_eq!((other.resumed, other.applied), (3, 7), "{other:?}");
    // And summed over consumers.
    let mut sum = Totals::default();
    sum.add(&totals);
    sum.add(&other);
    assert_eq!((sum.resumed, sum.duplicates, sum.applied), (6, 10, 14), "{sum:?}");
    assert_eq!(sum.disconnects.get("keepalive-timeout"), Some(&22), "{sum:?}");
    assert_eq!(sum.refreshes.get("full"), Some(&26), "{sum:?}");
    Ok(())
}

/// The folder of the provider and consumer the tests run.
fn bin_dir() -> std::path::PathBuf {
    bin("tether-provider").unwrap().parent().unwrap().to_owned()
}

/// A short run passes, exit status 0, and its report's figures are the run's: seed 1's
/// one fault is a `provider-store-fails`, whose store does fail.
#[test]
fn a_short_chaos_run_passes_and_reports_what_it_did() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let json = tmp.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tether-chaos"))
        .args(["--duration", "4s", "--seed", "1", "--consumers", "1", "--entries", "50", "--json"])
        .arg(&json)
        .env(BIN_DIR_ENV, bin_dir())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(stdout.starts_with("tether-chaos: seed 1\n"), "{said}");
    assert!(stdout.contains("verdict: PASS (0 violations)"), "{said}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!((j["seed"].as_u64(), j["consumers"].as_u64(), j["entries"].as_u64()), (Some(1), Some(1), Some(50)));
    let faults = j["faults"].as_object().unwrap();
    assert_eq!(faults.len(), 23, "every kind listed: {j}");
    let total: u64 = faults.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(j["faults_total"].as_u64(), Some(total));
    assert_eq!(faults["provider-store-fails"].as_u64(), Some(1), "{j}");
    assert!(stdout.contains(&format!("faults injected ({total} total):")), "{said}");
    assert_eq!(j["provider_stores_failed"].as_u64(), Some(1), "{j}");
    assert_eq!(j["provider_restores"].as_u64(), Some(0), "{j}");
    // The two agreements' first loads, summed from the consumer's counters.
    assert!(j["refreshes"]["full"].as_u64().unwrap() >= 2, "{j}");
    assert!(j["recoveries"]["provider-goodbye"].as_u64().unwrap() >= 1, "the provider's exits: {j}");
    assert!(j["changes_written"].as_u64().unwrap() >= 50, "{j}");
    assert!(j["failed_writes"].as_u64().unwrap() >= 1, "writes raced the store's failure: {j}");
    assert!(j["applied_incrementally"].as_u64().unwrap() >= 50, "{j}");
    assert!(j["samples"].as_u64().unwrap() >= 5, "{j}");
    assert_eq!(j["duplicates"].as_u64(), Some(0));
    assert!(j["converge_s"].is_f64(), "{j}");
    assert_eq!(j["violations"], serde_json::json!([]));
    assert_eq!(j["verdict"], "pass");
    Ok(())
}

/// A run that cannot start its processes exits 2, naming its seed.
#[test]
fn a_run_that_cannot_be_set_up_exits_2() -> Result<()> {
    let empty = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_tether-chaos"))
        .args(["--duration", "1s", "--seed", "5", "--consumers", "1", "--entries", "10"])
        .env(BIN_DIR_ENV, empty.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tether-chaos: the run could not complete (seed 5)"), "{stderr}");
    Ok(())
}

/// A run with a violation fails, exit status 1, with the seed to replay, a failed verdict
/// in its JSON and its folder kept: every consumer's apply path panics once (a failpoint,
/// which the consumers inherit), and the panic is in a log although the replicas recover.
#[test]
fn a_chaos_run_with_a_violation_exits_1_and_keeps_its_logs() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let json = tmp.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tether-chaos"))
        .args(["--duration", "1s", "--seed", "2", "--consumers", "1", "--entries", "50", "--json"])
        .arg(&json)
        .env(BIN_DIR_ENV, bin_dir())
        .env("TETHER_FAILPOINTS", "apply-panic=1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stdout.lines().find_map(|l| l.strip_prefix("logs kept in ")).map(std::path::PathBuf::from);
    if let Some(dir) = &kept {
        if dir.starts_with(std::env::temp_dir())
            && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tether-chaos-"))
        {
            std::fs::remove_dir_all(dir)?;
        }
    }
    let said = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(kept.is_some(), "no folder kept: {said}");
    assert!(
        stderr.contains("tether-chaos: FAILED with seed 2; replay: tether-chaos --seed 2 --duration 1s --consumers 1"),
        "{said}"
    );
    assert!(stdout.contains("verdict: FAIL ("), "{said}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!(j["verdict"], "FAIL", "{j}");
    let violations = j["violations"].as_array().unwrap();
    assert!(violations.iter().any(|v| v.as_str().unwrap().contains("panicked at")), "{j}");
    Ok(())
}
