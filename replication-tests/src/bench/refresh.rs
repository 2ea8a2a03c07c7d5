//! `refresh --entries N`: how long a new replica takes to fill. The provider is loaded
//! with N people offline, an empty consumer starts (through the proxy, which counts
//! the bytes), and the clock stops when the consumer reports `persisting` with every
//! entry; its replica is then compared with the provider's whole.

use std::time::{Duration, Instant};

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
    let measured = Measured {
        load_time: cluster.load_time,
        elapsed,
        bytes,
        entries: cluster.entries,
        cpu,
        rss: (provider_rss, consumer_rss),
        provider_idle,
        disk: (provider_disk, consumer_disk),
    };
    Ok(report(people, &measured))
}

/// What a refresh of the workload measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The provider's offline load.
    pub load_time: Duration,
    /// From the consumer's start to `persisting` with every entry.
    pub elapsed: Duration,
    /// Bytes the provider sent.
    pub bytes: u64,
    /// Entries in the directory, the structural ones (suffix, organizational units)
    /// included: what was sent.
    pub entries: usize,
    /// CPU used by the refresh: the provider's, the consumer's.
    pub cpu: (Duration, Duration),
    /// Peak RSS in bytes: the provider's, the consumer's.
    pub rss: (u64, u64),
    /// The provider's RSS before the refresh.
    pub provider_idle: u64,
    /// Store sizes in bytes: the provider's, the consumer's.
    pub disk: (u64, u64),
}

/// The report of a refresh of `people` generated entries that measured `m`.
pub fn report(people: usize, m: &Measured) -> Report {
    let rate = people as f64 / m.elapsed.as_secs_f64();
    let mut r = Report::new("refresh");
    r.param("entries", people);
    r.figure("offline load", m.load_time.as_secs_f64(), "s");
    r.figure("refresh time", m.elapsed.as_secs_f64(), "s");
    r.target("refresh rate", rate, "entries/s", Bound::AtLeast, TARGET_RATE);
    r.figure("bytes on the wire", m.bytes as f64, "B");
    r.figure("bytes per entry", m.bytes as f64 / m.entries as f64, "B");
    r.figure("provider CPU per entry", m.cpu.0.as_secs_f64() * 1e6 / people.max(1) as f64, "us");
    r.figure("consumer CPU per entry", m.cpu.1.as_secs_f64() * 1e6 / people.max(1) as f64, "us");
    let (provider_rss, consumer_rss) = m.rss;
    if people >= RSS_TARGET_FROM {
        r.target("provider peak RSS", rss::mib(provider_rss), "MiB", Bound::AtMost, TARGET_RSS_MIB);
        r.target("consumer peak RSS", rss::mib(consumer_rss), "MiB", Bound::AtMost, TARGET_RSS_MIB);
    } else {
        r.figure("provider peak RSS", rss::mib(provider_rss), "MiB");
        r.figure("consumer peak RSS", rss::mib(consumer_rss), "MiB");
    }
    r.figure("provider RSS before the refresh", rss::mib(m.provider_idle), "MiB");
    r.figure("provider store size", rss::mib(m.disk.0), "MiB");
    r.figure("consumer store size", rss::mib(m.disk.1), "MiB");
    r.fact("content", "identical to the provider's");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn measured() -> Measured {
        Measured {
            load_time: Duration::from_secs(3),
            elapsed: Duration::from_millis(800),
            bytes: 58_000_000,
            entries: 100_004,
            cpu: (Duration::from_millis(200), Duration::from_millis(1_500)),
            rss: (150 * MIB, 120 * MIB),
            provider_idle: 90 * MIB,
            disk: (300 * MIB, 250 * MIB),
        }
    }

    /// Each side's figure is its own: the provider's RSS, CPU and store apart from the
    /// consumer's, the rate over the generated people alone.
    #[test]
    fn each_process_s_figures_are_its_own() {
        let r = report(100_000, &measured());
        let value = |name: &str| r.get(name).map(|f| f.value);
        assert_eq!(value("refresh rate"), Some(125_000.0));
        assert_eq!(value("provider peak RSS"), Some(150.0));
        assert_eq!(value("consumer peak RSS"), Some(120.0));
        assert_eq!(value("provider RSS before the refresh"), Some(90.0));
        assert_eq!(value("provider CPU per entry"), Some(2.0));
        assert_eq!(value("consumer CPU per entry"), Some(15.0));
        assert_eq!(value("provider store size"), Some(300.0));
        assert_eq!(value("consumer store size"), Some(250.0));
        assert_eq!(value("bytes per entry"), Some(58_000_000.0 / 100_004.0));
        assert_eq!(value("offline load"), Some(3.0));
    }

    /// The memory target applies from a million entries, that size included.
    #[test]
    fn the_rss_target_applies_from_a_million_entries() {
        let held = |people: usize| {
            let r = report(people, &measured());
            ["provider peak RSS", "consumer peak RSS"].map(|name| r.get(name).and_then(|f| f.target))
        };
        let target = Some((Bound::AtMost, TARGET_RSS_MIB));
        assert_eq!(held(RSS_TARGET_FROM), [target, target]);
        assert_eq!(held(RSS_TARGET_FROM - 1), [None, None]);
        assert_eq!(RSS_TARGET_FROM, 1_000_000);
    }
}
