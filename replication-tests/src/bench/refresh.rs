//! `refresh --entries N`: how long a new replica takes to fill. The provider is loaded
//! with N people offline, an empty consumer starts (through the proxy, which counts
//! the bytes), and the clock stops when the consumer reports `persisting` with every
//! entry; its replica is then compared with the provider's whole.

use std::time::Instant;

use anyhow::{bail, Result};
use tokio::runtime::Runtime;

use super::cluster::{Cluster, STEP};
use super::cpu;
use super::report::{Bound, Report};
use super::rss;

/// Entries per second the issue asks for (50x OpenLDAP syncrepl).
pub const TARGET_RATE: f64 = 100_000.0;
/// RSS ceiling for each process at a million entries, MiB.
pub const TARGET_RSS_MIB: f64 = 200.0;
/// From this many entries the RSS target applies.
pub const RSS_TARGET_FROM: usize = 1_000_000;

/// Runs the workload.
pub fn run(rt: &Runtime, people: usize) -> Result<Report> {
    let mut cluster = Cluster::provider(people)?;
    cluster.start_proxy()?;
    let i = cluster.add_consumer(true)?;
    // What the provider holds with its store open, before serving anything.
    let provider_idle = rss::current(cluster.provider_pid()?)?;
    let provider_cpu = cpu::used(cluster.provider_pid()?)?;
    let started = Instant::now();
    cluster.consumers[i].start()?;
    rt.block_on(cluster.wait_persisting(i, STEP))?;
    let elapsed = started.elapsed();
    // The consumer process started with the refresh: all its CPU is the refresh's.
    let cpu = (cpu::used(cluster.provider_pid()?)? - provider_cpu, cpu::used(cluster.consumer_pid(i)?)?);
    let bytes = cluster.proxy()?.stats().bytes_to_client;
    let provider_rss = rss::peak(cluster.provider_pid()?)?;
    let consumer_rss = rss::peak(cluster.consumer_pid(i)?)?;
    let provider_disk = rss::disk_usage(&cluster.provider.dir.join("data"))?;
    let consumer_disk = rss::disk_usage(&cluster.consumers[i].dir.join("data"))?;
    if !cluster.identical(i)? {
        bail!("the refreshed replica differs from the provider's directory");
    }
    let rate = people as f64 / elapsed.as_secs_f64();
    let mut r = Report::new("refresh");
    r.param("entries", people);
    r.figure("offline load", cluster.load_time.as_secs_f64(), "s");
    r.figure("refresh time", elapsed.as_secs_f64(), "s");
    r.target("refresh rate", rate, "entries/s", Bound::AtLeast, TARGET_RATE);
    r.figure("bytes on the wire", bytes as f64, "B");
    r.figure("bytes per entry", bytes as f64 / cluster.entries as f64, "B");
    r.figure("provider CPU per entry", cpu.0.as_secs_f64() * 1e6 / people.max(1) as f64, "us");
    r.figure("consumer CPU per entry", cpu.1.as_secs_f64() * 1e6 / people.max(1) as f64, "us");
    if people >= RSS_TARGET_FROM {
        r.target("provider peak RSS", rss::mib(provider_rss), "MiB", Bound::AtMost, TARGET_RSS_MIB);
        r.target("consumer peak RSS", rss::mib(consumer_rss), "MiB", Bound::AtMost, TARGET_RSS_MIB);
    } else {
        r.figure("provider peak RSS", rss::mib(provider_rss), "MiB");
        r.figure("consumer peak RSS", rss::mib(consumer_rss), "MiB");
    }
    r.figure("provider RSS before the refresh", rss::mib(provider_idle), "MiB");
    r.figure("provider store size", rss::mib(provider_disk), "MiB");
    r.figure("consumer store size", rss::mib(consumer_disk), "MiB");
    r.fact("content", "identical to the provider's");
    Ok(r)
}
