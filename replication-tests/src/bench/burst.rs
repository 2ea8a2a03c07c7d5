//! `burst --ops K [--pipeline P]`: K modifications as fast as the write API takes them,
//! with P writes in flight on one connection (1: each sent after the previous ack).
//! Provider rate: K over the time to the last ack. End to end: K over the time until
//! the consumer has the last one durable.

use std::time::{Duration, Instant};

use anyhow::Result;
use tether_protocol::Csn;
use tokio::runtime::Runtime;

use super::client;
use super::cluster::{Cluster, AGREEMENT, STEP};
use super::data;
use super::report::{Bound, Report};

/// End-to-end target with pipelining, ops/s.
pub const TARGET_PIPELINED: f64 = 50_000.0;
/// End-to-end target one at a time, ops/s.
pub const TARGET_SINGLE: f64 = 5_000.0;
/// People in the directory.
const PEOPLE: usize = 10_000;

/// Runs the workload.
pub fn run(rt: &Runtime, ops: usize, pipeline: usize) -> Result<Report> {
    let mut cluster = Cluster::provider(PEOPLE)?;
    let i = cluster.add_consumer(false)?;
    cluster.consumers[i].start()?;
    let (to_ack, to_consumer) = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let changes = (0..ops).map(|op| data::modify(op % PEOPLE, op)).collect::<Result<Vec<_>>>()?;
        let mut writer = cluster.writer().await?;
        let mut last = Csn::ZERO;
        let started = Instant::now();
        writer.apply(changes, pipeline, |_, csn, _| last = csn).await?;
        let acked = started.elapsed();
        client::wait_csn(&cluster.control(i), AGREEMENT, last, Duration::from_secs(60)).await?;
        let caught_up = started.elapsed();
        writer.close().await;
        anyhow::Ok((acked, caught_up))
    })?;
    let target = if pipeline > 1 { TARGET_PIPELINED } else { TARGET_SINGLE };
    let mut r = Report::new("burst");
    r.param("ops", ops).param("pipeline", pipeline);
    r.figure("provider acked rate", ops as f64 / to_ack.as_secs_f64(), "ops/s");
    r.target("end-to-end rate", ops as f64 / to_consumer.as_secs_f64(), "ops/s", Bound::AtLeast, target);
    r.figure("consumer caught up after", to_consumer.as_secs_f64(), "s");
    r.figure("consumer behind last ack by", (to_consumer - to_ack).as_secs_f64() * 1e3, "ms");
    Ok(r)
}
