//! `resync --missed M [--deletes]`: a consumer of N entries is stopped (its agreement,
//! through the control socket), M changes are made, and it is started again; the time
//! from the start command (it connects at once) to the last change durable on the
//! consumer, the refresh kind the provider chose, and the bytes it sent, which must
//! grow with M and not with N.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tether_protocol::control::ControlRequest;
use tether_protocol::Csn;
use tokio::runtime::Runtime;

use super::client;
use super::cluster::{Cluster, AGREEMENT, STEP};
use super::data;
use super::report::{Bound, Report};

/// Target, ms from connect to caught up.
pub const TARGET_MS: f64 = 20.0;
/// Writes in flight while making the missed changes.
const WRITE_DEPTH: usize = 64;

/// Runs the workload on a directory of `people` entries.
pub fn run(rt: &Runtime, people: usize, missed: usize, deletes: bool) -> Result<Report> {
    if missed > people {
        bail!("--missed {missed} is more than the {people} entries");
    }
    let mut cluster = Cluster::provider(people)?;
    cluster.start_proxy()?;
    let i = cluster.add_consumer(true)?;
    cluster.consumers[i].start()?;
    let path = cluster.control(i);
    let (elapsed, bytes, kind) = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        client::control_call(&path, &ControlRequest::Stop { name: AGREEMENT.into() }).await?;
        let deadline = Instant::now() + STEP;
        while client::agreement_status(&path, AGREEMENT).await?["state"] != "stopped" {
            if Instant::now() > deadline {
                bail!("the agreement did not stop");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let changes = (0..missed)
            .map(|k| if deletes { data::delete(k) } else { data::modify(k, k) })
            .collect::<Result<Vec<_>>>()?;
        let mut writer = cluster.writer().await?;
        let mut last = Csn::ZERO;
        writer.apply(changes, WRITE_DEPTH, |_, csn, _| last = csn).await?;
        writer.close().await;
        let before = cluster.proxy()?.stats().bytes_to_client;
        let started = Instant::now();
        client::control_call(&path, &ControlRequest::Start { name: AGREEMENT.into() }).await?;
        client::wait_csn(&path, AGREEMENT, last, Duration::from_secs(60)).await?;
        let elapsed = started.elapsed();
        let bytes = cluster.proxy()?.stats().bytes_to_client - before;
        let kind = client::agreement_status(&path, AGREEMENT).await?["last_refresh"].as_str().unwrap_or("?").to_owned();
        anyhow::Ok((elapsed, bytes, kind))
    })?;
    if deletes {
        cluster.entries -= missed;
    }
    if !cluster.identical(i)? {
        bail!("after the resync the replica differs from the provider's directory");
    }
    Ok(report(people, missed, deletes, elapsed, bytes, kind))
}

/// The report of a resync of `missed` changes on `people` entries that took `elapsed`
/// from the start command to caught up, the provider sending `bytes` in a refresh of
/// `kind`.
pub fn report(people: usize, missed: usize, deletes: bool, elapsed: Duration, bytes: u64, kind: String) -> Report {
    let mut r = Report::new(if deletes { "resync-deletes" } else { "resync" });
    r.param("entries", people).param("missed", missed).param("deletes", deletes);
    r.target("connect to caught up", elapsed.as_secs_f64() * 1e3, "ms", Bound::AtMost, TARGET_MS);
    r.figure("bytes sent", bytes as f64, "B");
    r.figure("bytes per missed change", bytes as f64 / missed.max(1) as f64, "B");
    r.fact("refresh kind", kind);
    r.fact("content", "identical to the provider's");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time is in milliseconds against the 20 ms target, and the bytes are per
    /// missed change (what must not grow with the directory), not per entry.
    #[test]
    fn the_resync_is_timed_in_ms_and_its_bytes_counted_per_missed_change() {
        let r = report(100_000, 1_000, true, Duration::from_micros(12_500), 250_000, "delta".into());
        assert_eq!(r.workload, "resync-deletes");
        let figure = |name: &str| r.get(name).map(|f| (f.value, f.unit.as_str(), f.met()));
        assert_eq!(figure("connect to caught up"), Some((12.5, "ms", Some(true))));
        assert_eq!(figure("bytes sent"), Some((250_000.0, "B", None)));
        assert_eq!(figure("bytes per missed change"), Some((250.0, "B", None)));
        let late = report(100_000, 1_000, false, Duration::from_millis(21), 1, "delta".into());
        assert_eq!((late.workload.as_str(), late.missed()), ("resync", 1));
        assert!(r.facts.contains(&("refresh kind".to_owned(), "delta".to_owned())));
    }
}
