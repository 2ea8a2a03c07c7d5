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
    let lags = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let path = cluster.control(i);
        let mut writer = cluster.writer().await?;
        let mut csn = cluster.provider_csn().await?;
        let mut lags = Lags { visible: Vec::new(), durable: Vec::new(), acks: Vec::with_capacity(ops) };
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
            let lag = waiter.await??.saturating_duration_since(acked).as_secs_f64() * 1e3;
            if visible { &mut lags.visible } else { &mut lags.durable }.push(lag);
            lags.acks.push(acked.duration_since(sent).as_secs_f64() * 1e3);
        }
        writer.close().await;
        anyhow::Ok(lags)
    })?;
    let Lags { mut visible, mut durable, mut acks } = lags;
    for v in [&mut visible, &mut durable, &mut acks] {
        v.sort_by(f64::total_cmp);
    }
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
    Ok(r)
}

/// Per write, in ms: from the provider's ack to the consumer's visible or durable
/// answer, and from sending the write to its ack.
struct Lags {
    visible: Vec<f64>,
    durable: Vec<f64>,
    acks: Vec<f64>,
}
