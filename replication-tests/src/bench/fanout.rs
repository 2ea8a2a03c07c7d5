//! `fanout --consumers C`: C persist consumers (C processes) take a burst of changes.
//! At checkpoints through the burst, each consumer's time from the provider's ack of
//! the checkpoint write to that write being visible on the consumer (its searches
//! return it) is its lag; the worst over all consumers and checkpoints is held to the
//! target ("every consumer within 100 ms of the provider"). Odd checkpoints time
//! visibility, even ones durability (the write flushed on the consumer), reported
//! beside it: one wait per consumer and checkpoint, as in `latency`. Also the aggregate
//! deliveries per second and the provider's memory per session.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tether_protocol::Csn;
use tokio::runtime::Runtime;

use super::client;
use super::cluster::{Cluster, AGREEMENT, STEP};
use super::cpu;
use super::data;
use super::report::{Bound, Report};
use super::rss;

/// Worst lag allowed, ms.
pub const TARGET_LAG_MS: f64 = 100.0;
/// People in the directory.
const PEOPLE: usize = 1_000;
/// Checkpoints through the burst.
const CHECKPOINTS: usize = 10;
/// Writes in flight.
const WRITE_DEPTH: usize = 64;

/// Runs the workload.
pub fn run(rt: &Runtime, consumers: usize, ops: usize) -> Result<Report> {
    let mut cluster = Cluster::provider(PEOPLE)?;
    let provider_before = rss::current(cluster.provider_pid()?)?;
    for _ in 0..consumers {
        let i = cluster.add_consumer(false)?;
        cluster.consumers[i].start()?;
    }
    let every = (ops / CHECKPOINTS).max(1);
    let pids = (0..consumers).map(|i| cluster.consumer_pid(i)).collect::<Result<Vec<_>>>()?;
    let provider = cluster.provider_pid()?;
    let consumers_cpu = |pids: &[u32]| pids.iter().map(|&pid| cpu::used(pid)).sum::<Result<Duration>>();
    let (visible, durable, elapsed, cpu) = rt.block_on(async {
        for i in 0..consumers {
            cluster.wait_persisting(i, STEP).await?;
        }
        let changes = (0..ops).map(|op| data::modify(op % PEOPLE, op)).collect::<Result<Vec<_>>>()?;
        let base = cluster.provider_csn().await?;
        // Waiters for every checkpoint, registered before the burst.
        let mut waiters = Vec::new();
        for k in 1..=ops / every {
            let csn = Csn(base.0 + (k * every) as u64);
            let visible = k % 2 == 1;
            for i in 0..consumers {
                let path = cluster.control(i);
                waiters.push((
                    k * every - 1,
                    visible,
                    tokio::spawn(async move {
                        if visible {
                            client::wait_visible(&path, AGREEMENT, csn, STEP).await
                        } else {
                            client::wait_csn(&path, AGREEMENT, csn, STEP).await
                        }
                    }),
                ));
            }
        }
        let mut acks = vec![None; ops];
        let mut writer = cluster.writer().await?;
        let cpu_before = (cpu::used(provider)?, consumers_cpu(&pids)?);
        let started = Instant::now();
        writer
            .apply(changes, WRITE_DEPTH, |n, csn, at| {
                if csn.0 == base.0 + n as u64 + 1 {
                    acks[n] = Some(at);
                }
            })
            .await?;
        let mut last = started;
        // Per measure (visible, durable), per checkpoint: every consumer's lag.
        let mut lags: [BTreeMap<usize, Vec<Duration>>; 2] = Default::default();
        for (n, visible, waiter) in waiters {
            let reached = waiter.await??;
            let acked = acks[n].context("another writer was active during the burst")?;
            lags[usize::from(!visible)].entry(n).or_default().push(reached.saturating_duration_since(acked));
            last = last.max(reached);
        }
        let cpu = (cpu::used(provider)? - cpu_before.0, consumers_cpu(&pids)? - cpu_before.1);
        writer.close().await;
        let [visible, durable] = lags.map(worst_checkpoint);
        anyhow::Ok((visible, durable, last.duration_since(started), cpu))
    })?;
    let measured = Measured {
        visible,
        durable,
        elapsed,
        cpu,
        provider_rss: (provider_before, rss::current(cluster.provider_pid()?)?),
        provider_peak: rss::peak(cluster.provider_pid()?)?,
    };
    Ok(report(consumers, ops, &measured))
}

/// What a fanout run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The slowest consumer's visible lag at the worst checkpoint, and the median there.
    pub visible: (Duration, Duration),
    /// The same for durable lags.
    pub durable: (Duration, Duration),
    /// From the burst's start to the last consumer caught up.
    pub elapsed: Duration,
    /// CPU over the burst: the provider's, all consumers' together.
    pub cpu: (Duration, Duration),
    /// The provider's RSS in bytes before the consumers connected and after the burst.
    pub provider_rss: (u64, u64),
    /// The provider's peak RSS in bytes.
    pub provider_peak: u64,
}

/// The report of `consumers` consumers taking a burst of `ops` changes that measured `m`.
pub fn report(consumers: usize, ops: usize, m: &Measured) -> Report {
    let per_session = m.provider_rss.1.saturating_sub(m.provider_rss.0) as f64 / consumers.max(1) as f64;
    let mut r = Report::new("fanout");
    r.param("consumers", consumers).param("ops", ops).param("entries", PEOPLE);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    r.target("slowest consumer lag (visible)", ms(m.visible.0), "ms", Bound::AtMost, TARGET_LAG_MS);
    r.figure("median lag at that checkpoint (visible)", ms(m.visible.1), "ms");
    r.figure("slowest consumer lag (durable)", ms(m.durable.0), "ms");
    r.figure("median lag at that checkpoint (durable)", ms(m.durable.1), "ms");
    r.figure("aggregate deliveries", (ops * consumers) as f64 / m.elapsed.as_secs_f64(), "changes/s");
    r.figure("all consumers caught up after", m.elapsed.as_secs_f64(), "s");
    r.figure("provider CPU per change", m.cpu.0.as_secs_f64() * 1e6 / ops.max(1) as f64, "us");
    r.figure("consumer CPU per change delivered", m.cpu.1.as_secs_f64() * 1e6 / (ops * consumers).max(1) as f64, "us");
    r.figure("provider RSS per session", per_session / 1024.0, "KiB");
    r.figure("provider peak RSS", rss::mib(m.provider_peak), "MiB");
    r
}

/// The checkpoint with the worst lag, and the median consumer's lag there: one late
/// consumer, or all of them late together (something they share).
fn worst_checkpoint(lags: BTreeMap<usize, Vec<Duration>>) -> (Duration, Duration) {
    lags.into_values()
        .map(|mut l| {
            l.sort();
            (l.last().copied().unwrap_or_default(), l.get(l.len() / 2).copied().unwrap_or_default())
        })
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visible and durable lags each in their own figure, the target on the visible;
    /// the provider's memory per session in KiB over the consumers; deliveries over
    /// every consumer.
    #[test]
    fn each_figure_is_computed_from_its_own_measure() {
        let ms = Duration::from_millis;
        let m = Measured {
            visible: (ms(80), ms(20)),
            durable: (ms(150), ms(60)),
            elapsed: Duration::from_secs(8),
            cpu: (Duration::from_secs(1), Duration::from_secs(10)),
            provider_rss: (100 << 20, (100 << 20) + 50 * 64 * 1024),
            provider_peak: 120 << 20,
        };
        let r = report(50, 10_000, &m);
        let value = |name: &str| r.get(name).map(|f| f.value);
        assert_eq!(value("slowest consumer lag (visible)"), Some(80.0));
        assert_eq!(r.get("slowest consumer lag (visible)").and_then(|f| f.met()), Some(true));
        assert_eq!(value("median lag at that checkpoint (visible)"), Some(20.0));
        assert_eq!(value("slowest consumer lag (durable)"), Some(150.0));
        assert_eq!(value("median lag at that checkpoint (durable)"), Some(60.0));
        assert_eq!(value("provider RSS per session"), Some(64.0));
        assert_eq!(value("provider peak RSS"), Some(120.0));
        assert_eq!(value("aggregate deliveries"), Some(62_500.0));
        assert_eq!(value("provider CPU per change"), Some(100.0));
        assert_eq!(value("consumer CPU per change delivered"), Some(20.0));
        assert_eq!(r.missed(), 0);
    }

    /// The target holds the worst consumer at its worst checkpoint, and the median
    /// beside it tells one late consumer (here, at the first checkpoint) from all of them
    /// late together (the second): the figures come from the checkpoint with the
    /// slowest consumer, not the slowest median, in whatever order the lags arrived.
    #[test]
    fn the_worst_checkpoint_is_the_one_with_the_slowest_consumer() {
        let ms = Duration::from_millis;
        let lags = BTreeMap::from([
            (99, vec![ms(10), ms(300), ms(20)]),
            (199, vec![ms(120), ms(100), ms(110)]),
            (299, vec![ms(7), ms(5), ms(6)]),
        ]);
        assert_eq!(worst_checkpoint(lags), (ms(300), ms(20)));
        assert_eq!(worst_checkpoint(BTreeMap::new()), (Duration::ZERO, Duration::ZERO));
    }
}
