//! `latency --ops K`: how stale a replica is. K single modifications, one at a time;
//! for each, the time from the moment the provider's acknowledgement reached the writer
//! to the moment the consumer reported the change visible (its searches return it:
//! `wait --visible`; even-numbered writes) or durable (on disk, acknowledged: `wait`;
//! odd-numbered writes). Each wait is requested before its write, so no connect time is
//! counted, and every instant is taken in this process, on one clock.
//!
//! The targets are the "ack-to-visible", the measure of its reference figures
//! (OpenLDAP's consumer showing a modification, Redis's replica showing a write without
//! an fsync). The durable figure, a stricter measure that includes the consumer's own
//! flush, is reported beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tether_protocol::Csn;
use tokio::runtime::Runtime;

use super::client;
use super::cluster::{Cluster, AGREEMENT, STEP};
use super::data;
use super::report::{percentile, Bound, Report};

/// p50 target, ms.
pub const TARGET_P50_MS: f64 = 0.15;
/// p99 target, ms.
pub const TARGET_P99_MS: f64 = 0.5;
/// People in the directory.
const PEOPLE: usize = 10_000;

/// Runs the workload.
pub fn run(rt: &Runtime, ops: usize) -> Result<Report> {
    let mut cluster = Cluster::provider(PEOPLE)?;
    let i = cluster.add_consumer(false)?;
    cluster.consumers[i].start()?;
    let writes = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let path = cluster.control(i);
        let mut writer = cluster.writer().await?;
        let mut csn = cluster.provider_csn().await?;
        let mut writes = Vec::with_capacity(ops);
        for op in 0..ops {
            let next = Csn(csn.0 + 1);
            let limit = Duration::from_secs(30);
            let path = path.clone();
            // One waiter per write, so one wait's answer never queues behind the other's.
            let visible = op % 2 == 0;
            let waiter = tokio::spawn(async move {
                if visible {
                    client::wait_visible(&path, AGREEMENT, next, limit).await
                } else {
                    client::wait_csn(&path, AGREEMENT, next, limit).await
                }
            });
            let sent = Instant::now();
            csn = writer.write(data::modify(op % PEOPLE, op)?).await?;
            let acked = Instant::now();
            if csn != next {
                bail!("the provider assigned csn {csn}, expected {next}: another writer is active");
            }
            let reached = waiter.await??;
            writes.push(Timed { visible, sent, acked, reached });
        }
        writer.close().await;
        anyhow::Ok(writes)
    })?;
    Ok(report(ops, &writes))
}

/// One write as the workload saw it, every instant on this process's clock.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Whether its wait was for visibility (`wait --visible`) rather than durability.
    pub visible: bool,
    /// When the write was sent.
    pub sent: Instant,
    /// When the provider's acknowledgement reached the writer.
    pub acked: Instant,
    /// When the consumer answered the wait.
    pub reached: Instant,
}

/// The report of `ops` writes timed as `writes`: each lag from the provider's
/// acknowledgement (not from the send, which would count the provider's own write) to
/// the consumer's answer, visible and durable apart.
pub fn report(ops: usize, writes: &[Timed]) -> Report {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let lag = |w: &Timed| ms(w.reached.saturating_duration_since(w.acked));
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let visible = sorted(writes.iter().filter(|w| w.visible).map(lag).collect());
    let durable = sorted(writes.iter().filter(|w| !w.visible).map(lag).collect());
    let acks = sorted(writes.iter().map(|w| ms(w.acked.duration_since(w.sent))).collect());
    let mut r = Report::new("latency");
    r.param("ops", ops).param("entries", PEOPLE);
    r.figure("write ack p50 (write API)", percentile(&acks, 50.0), "ms");
    r.figure("write ack p99 (write API)", percentile(&acks, 99.0), "ms");
    r.target("ack-to-visible-on-consumer p50", percentile(&visible, 50.0), "ms", Bound::AtMost, TARGET_P50_MS);
    r.target("ack-to-visible-on-consumer p99", percentile(&visible, 99.0), "ms", Bound::AtMost, TARGET_P99_MS);
    r.figure("ack-to-visible-on-consumer p999", percentile(&visible, 99.9), "ms");
    r.figure("ack-to-visible-on-consumer max", visible.last().copied().unwrap_or(0.0), "ms");
    r.figure("ack-to-durable-on-consumer p50", percentile(&durable, 50.0), "ms");
    r.figure("ack-to-durable-on-consumer p99", percentile(&durable, 99.0), "ms");
    r.figure("ack-to-durable-on-consumer p999", percentile(&durable, 99.9), "ms");
    r.figure("ack-to-durable-on-consumer max", durable.last().copied().unwrap_or(0.0), "ms");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible and durable lags are reported apart, each from the acknowledgement: a
    /// write sent 5 ms before its ack, visible 0.1 ms after it or durable 0.3 ms after.
    #[test]
    fn each_lag_runs_from_the_ack_to_the_answer_visible_and_durable_apart() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let writes: Vec<Timed> = (0..10u64)
            .map(|k| {
                let visible = k % 2 == 0;
                let sent = at(k * 10_000);
                let acked = at(k * 10_000 + 5_000);
                let reached = at(k * 10_000 + 5_000 + if visible { 100 } else { 300 });
                Timed { visible, sent, acked, reached }
            })
            .collect();
        let r = report(10, &writes);
        let ms = |name: &str| r.get(name).map(|f| (f.value * 1e6).round() / 1e6);
        assert_eq!(ms("write ack p50 (write API)"), Some(5.0));
        assert_eq!(ms("ack-to-visible-on-consumer p50"), Some(0.1));
        assert_eq!(ms("ack-to-visible-on-consumer max"), Some(0.1));
        assert_eq!(ms("ack-to-durable-on-consumer p50"), Some(0.3));
        assert_eq!(ms("ack-to-durable-on-consumer p99"), Some(0.3));
        assert_eq!(r.get("ack-to-visible-on-consumer p50").and_then(|f| f.met()), Some(true));
        assert_eq!(
            r.get("ack-to-visible-on-consumer p99").and_then(|f| f.target),
            Some((Bound::AtMost, TARGET_P99_MS))
        );
        assert_eq!(r.params[0], ("ops".to_owned(), serde_json::json!(10)));
    }
}
