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
use super::cpu;
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
    let (provider, consumer) = (cluster.provider_pid()?, cluster.consumer_pid(i)?);
    let (to_ack, to_consumer, cpu) = rt.block_on(async {
        cluster.wait_persisting(i, STEP).await?;
        let changes = (0..ops).map(|op| data::modify(op % PEOPLE, op)).collect::<Result<Vec<_>>>()?;
        let mut writer = cluster.writer().await?;
        let cpu_before = (cpu::used(provider)?, cpu::used(consumer)?);
        let mut last = Csn::ZERO;
        let started = Instant::now();
        writer.apply(changes, pipeline, |_, csn, _| last = csn).await?;
        let acked = started.elapsed();
        client::wait_csn(&cluster.control(i), AGREEMENT, last, Duration::from_secs(60)).await?;
        let caught_up = started.elapsed();
        let cpu = (cpu::used(provider)? - cpu_before.0, cpu::used(consumer)? - cpu_before.1);
        writer.close().await;
        anyhow::Ok((acked, caught_up, cpu))
    })?;
    let target = if pipeline > 1 { TARGET_PIPELINED } else { TARGET_SINGLE };
    let mut r = Report::new("burst");
    r.param("ops", ops).param("pipeline", pipeline);
    r.figure("provider acked rate", ops as f64 / to_ack.as_secs_f64(), "ops/s");
    r.target("end-to-end rate", ops as f64 / to_consumer.as_secs_f64(), "ops/s", Bound::AtLeast, target);
    r.figure("consumer caught up after", to_consumer.as_secs_f64(), "s");
    r.figure("consumer behind last ack by", (to_consumer - to_ack).as_secs_f64() * 1e3, "ms");
    r.figure("provider CPU per op", cpu.0.as_secs_f64() * 1e6 / ops.max(1) as f64, "us");
    r.figure("consumer CPU per op", cpu.1.as_secs_f64() * 1e6 / ops.max(1) as f64, "us");
    Ok(r)
}
