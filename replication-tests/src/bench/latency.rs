//! `latency --ops K`: how stale a replica is. K single modifications, one at a time;
//! for each, the time from the moment the provider's acknowledgement reached the writer
//! to the moment the consumer reported the change durable (its `WaitCsn` answer,
//! requested before the write so no connect time is counted). Both instants are taken
//! in this process, on one clock.

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
    let (lags, acks) = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let path = cluster.control(i);
        let mut writer = cluster.writer().await?;
        let mut csn = cluster.provider_csn().await?;
        let (mut lags, mut acks) = (Vec::with_capacity(ops), Vec::with_capacity(ops));
        for op in 0..ops {
            let next = Csn(csn.0 + 1);
            let path = path.clone();
            let waiter =
                tokio::spawn(async move { client::wait_csn(&path, AGREEMENT, next, Duration::from_secs(30)).await });
            let sent = Instant::now();
            csn = writer.write(data::modify(op % PEOPLE, op)?).await?;
            let acked = Instant::now();
            if csn != next {
                bail!("the provider assigned csn {csn}, expected {next}: another writer is active");
            }
            let visible = waiter.await??;
            acks.push(acked.duration_since(sent).as_secs_f64() * 1e3);
            lags.push(visible.saturating_duration_since(acked).as_secs_f64() * 1e3);
        }
        writer.close().await;
        anyhow::Ok((lags, acks))
    })?;
    let (mut lags, mut acks) = (lags, acks);
    lags.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    let mut r = Report::new("latency");
    r.param("ops", ops).param("entries", PEOPLE);
    r.figure("write ack p50 (write API)", percentile(&acks, 50.0), "ms");
    r.figure("write ack p99 (write API)", percentile(&acks, 99.0), "ms");
    r.target("ack-to-durable-on-consumer p50", percentile(&lags, 50.0), "ms", Bound::AtMost, TARGET_P50_MS);
    r.target("ack-to-durable-on-consumer p99", percentile(&lags, 99.0), "ms", Bound::AtMost, TARGET_P99_MS);
    r.figure("ack-to-durable-on-consumer p999", percentile(&lags, 99.9), "ms");
    r.figure("ack-to-durable-on-consumer max", lags.last().copied().unwrap_or(0.0), "ms");
    Ok(r)
}
