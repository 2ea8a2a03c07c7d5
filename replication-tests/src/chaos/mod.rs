//! `tether-chaos`: one provider and several consumers as real processes, a write
//! workload, and a nemesis breaking processes, links, configs and stores on a schedule
//! drawn from a seed; at the end everything is healed and the invariants are checked.
//!
//! ## Layout
//! - [`cluster`]: the processes, their proxies, agreements and anchor entries.
//! - [`writer`]: the write workload through the provider's write API.
//! - [`nemesis`]: the seeded fault schedule and the final heal.
//! - [`sampler`]: what consumers expose meanwhile (half-loaded or regressed replicas).
//! - [`checker`]: convergence and exactly-once at the end.
//! - [`report`]: the report.
//!
//! The seed fixes the schedule (fault kinds, targets, gaps, fault parameters) and the
//! workload; the processes' own timing is not under its control, so a replay reruns the
//! same faults in the same order, not the same interleaving.

pub mod checker;
pub mod cluster;
pub mod nemesis;
pub mod report;
pub mod sampler;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::workload::Workload;
use cluster::{Cluster, Totals};
use nemesis::Nemesis;
use report::Report;

/// How long the writer goes on once the nemesis has healed everything, before the
/// final checks: changes that only the incremental path carries to the replicas.
const QUIET_WRITES: Duration = Duration::from_secs(8);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the nemesis works.
    pub duration: Duration,
    /// The seed of the schedule and the workload.
    pub seed: u64,
    /// Number of consumers.
    pub consumers: usize,
    /// Write operations per second.
    pub rate: u32,
    /// Initial directory size.
    pub entries: usize,
    /// How long the healed cluster may take to converge.
    pub converge_timeout: Duration,
    /// Keep the run's folder even when it passes.
    pub keep: bool,
    /// Replicate over TLS.
    pub tls: bool,
}

/// What each check of a run found wrong, the verdict's sources: every one of them fails
/// the run, and a check whose findings went nowhere would pass every run.
#[derive(Debug)]
struct Found {
    /// The fault injector's (a process that would not restart, a fault it could not set).
    faults: Vec<String>,
    /// The sampler's, while the faults ran (a lost change, a fork, a cookie moved back).
    samples: Vec<String>,
    /// How long convergence took after the last heal, or how the replicas differ.
    converged: Result<Duration, Vec<String>>,
    /// Changes applied more than once.
    exactly_once: Vec<String>,
    /// Cookies not durable.
    durable: Vec<String>,
    /// Panics and the like in the processes' logs.
    logs: Vec<String>,
}

impl Found {
    /// Every violation, in the order of the checks, and the convergence time when the
    /// replicas converged.
    fn verdict(self) -> (Vec<String>, Option<Duration>) {
        let mut violations = self.faults;
        violations.extend(self.samples);
        let converged_in = match self.converged {
            Ok(d) => Some(d),
            Err(diff) => {
                violations.extend(diff.into_iter().map(|d| format!("not converged: {d}")));
                None
            }
        };
        violations.extend(self.exactly_once);
        violations.extend(self.durable);
        violations.extend(self.logs);
        (violations, converged_in)
    }
}

/// Runs one chaos run. `Err` only for a broken setup (binaries missing, a process that
/// would not start at all); everything the system under test did wrong is a violation
/// in the report.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("tether-chaos-").tempdir().context("creating the run folder")?;
    let root = tmp.path().to_owned();
    let mut work = Workload::new(opts.entries, opts.seed);
    let cluster = Cluster::start(&root, &mut work, opts.consumers.max(1), opts.tls)?;
    let stop_writer = AtomicBool::new(false);
    let stop_sampler = AtomicBool::new(false);
    let rng = StdRng::seed_from_u64(opts.seed);

    let (writer, sampler, nemesis, converged) = std::thread::scope(|s| {
        let writer = s.spawn(|| writer::run(&cluster, work, opts.rate, &stop_writer));
        let sampler = s.spawn(|| sampler::run(&cluster, started, &stop_sampler));
        let mut nemesis = Nemesis::new(&cluster, rng, started);
        nemesis.run_until(Instant::now() + opts.duration);
        let healed = nemesis.heal_all();
        // The writer goes on a little in the healed cluster: the changes the consumers
        // then take are applied incrementally, with no reload after them to put right
        // what they got wrong (the faults' reloads replace a replica whole, and one late
        // in the run hid a change the incremental path lost).
        if healed.is_ok() {
            std::thread::sleep(QUIET_WRITES);
        }
        stop_writer.store(true, Ordering::Relaxed);
        let writer = writer.join();
        let converged = match healed {
            Ok(()) => checker::converge(&cluster, opts.converge_timeout),
            Err(e) => Err(vec![format!("healing the cluster: {e:#}")]),
        };
        stop_sampler.store(true, Ordering::Relaxed);
        let sampler = sampler.join();
        (writer, sampler, nemesis.stats, converged)
    });
    let writer = writer.map_err(|_| anyhow!("the writer thread panicked"))??;
    let sampler = sampler.map_err(|_| anyhow!("the sampler thread panicked"))?;

    let per_node = checker::totals(&cluster);
    let durable = if converged.is_ok() { checker::durable_cookies(&cluster) } else { Vec::new() };
    let mut totals = Totals::default();
    for t in &per_node {
        totals.add(t);
    }
    let found = Found {
        faults: nemesis.violations.clone(),
        samples: sampler.violations.clone(),
        converged,
        exactly_once: checker::exactly_once(&per_node),
        durable,
        logs: checker::log_findings(&cluster),
    };
    let (violations, converged_in) = found.verdict();
    let restores = cluster.restores.load(Ordering::SeqCst);
    drop(cluster);
    let keep = opts.keep || !violations.is_empty();
    let root_text = root.display().to_string();
    if keep {
        let _ = tmp.keep();
    }
    Ok(Report {
        options: opts.clone(),
        faults: nemesis.faults,
        stores_failed: nemesis.stores_failed,
        restores,
        online_backups: nemesis.online_backups,
        backup_writers_killed: nemesis.backup_writers_killed,
        totals,
        changes: writer.changes,
        failed_writes: writer.failed_writes,
        samples: sampler.samples,
        converged_in,
        elapsed: started.elapsed(),
        violations,
        root: root_text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run in which no check found anything, converged in `converged_in`.
    fn clean(converged_in: Duration) -> Found {
        Found {
            faults: Vec::new(),
            samples: Vec::new(),
            converged: Ok(converged_in),
            exactly_once: Vec::new(),
            durable: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Each check's findings are violations of the run, a sampler's included (left out,
    /// every run would pass whatever the sampler saw), and the convergence time is kept
    /// only when the replicas converged.
    #[test]
    fn every_check_s_findings_fail_the_run() {
        let one = |what: &str| vec![what.to_owned()];
        let found = Found {
            faults: one("fault"),
            samples: one("sample"),
            converged: Err(one("differ")),
            exactly_once: one("twice"),
            durable: one("cookie"),
            logs: one("panic"),
        };
        let (violations, converged_in) = found.verdict();
        assert_eq!(violations, ["fault", "sample", "not converged: differ", "twice", "cookie", "panic"]);
        assert_eq!(converged_in, None);
        let second = Duration::from_secs(1);
        assert_eq!(clean(second).verdict(), (Vec::new(), Some(second)));
        let sampled = Found { samples: one("lost"), ..clean(second) };
        assert_eq!(sampled.verdict(), (one("lost"), Some(second)), "the sampler's alone");
    }
}
