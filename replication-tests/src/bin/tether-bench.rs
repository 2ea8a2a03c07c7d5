//! `tether-bench`: runs the benchmark workloads against real provider and consumer
//! processes and prints a table per workload (JSON with `--json FILE`). Exits 2 when a
//! target is missed, so it can gate a release, 1 when a workload fails, 0 otherwise.
//! Set `TETHER_BIN_DIR=target/release` to use the release binaries as built; see
//! docs/benchmarks.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use replication_tests::bench::report::Report;
use replication_tests::bench::{burst, cluster, detect, fanout, latency, refresh, resync};

#[derive(Debug, Parser)]
#[command(name = "tether-bench", version, about = "Benchmark workloads for Tether")]
struct Cli {
    /// Also write the reports as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Give every store this `cache_size` (e.g. 256MiB) instead of the shipped default,
    /// to measure the memory/speed trade-off; reports then name it.
    #[arg(long, global = true)]
    cache_size: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Fill an empty consumer from a provider of N entries.
    Refresh {
        /// Entries to load.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
    },
    /// Ack-to-visible-on-consumer latency of single modifications (held to the targets),
    /// and ack-to-durable beside it.
    Latency {
        /// Modifications, one at a time.
        #[arg(long, default_value_t = 1_000)]
        ops: usize,
    },
    /// A burst of modifications, optionally pipelined.
    Burst {
        /// Modifications.
        #[arg(long, default_value_t = 10_000)]
        ops: usize,
        /// Writes in flight on the one connection.
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
    },
    /// Catching up on M changes missed while stopped.
    Resync {
        /// Changes made while the consumer was stopped.
        #[arg(long, default_value_t = 1_000)]
        missed: usize,
        /// Entries in the directory.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
        /// Delete entries instead of modifying them.
        #[arg(long)]
        deletes: bool,
    },
    /// Dead-link detection (black hole, provider stall) and recovery.
    Detect {
        /// Rounds per fault kind.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Many persist consumers taking one burst.
    Fanout {
        /// Consumer processes.
        #[arg(long, default_value_t = 50)]
        consumers: usize,
        /// Changes in the burst.
        #[arg(long, default_value_t = 10_000)]
        ops: usize,
    },
    /// Every workload at the default sizes (smaller with the options).
    All {
        /// Entries for refresh and resync.
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
        /// Consumers for fanout.
        #[arg(long, default_value_t = 50)]
        consumers: usize,
        /// Operations for latency (a tenth of it) and burst and fanout.
        #[arg(long, default_value_t = 10_000)]
        ops: usize,
    },
}

/// Pipeline depth of the pipelined burst in `all`.
const ALL_PIPELINE: usize = 64;

fn run(cli: Cli) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut reports: Vec<Report> = Vec::new();
    if let Some(size) = cli.cache_size {
        cluster::use_cache_size(size)?;
    }
    let mut show = |mut r: Report| {
        if let Some(size) = cluster::cache_size() {
            r.param("cache_size", size);
        }
        println!("{}", r.table());
        reports.push(r);
    };
    match cli.workload {
        Workload::Refresh { entries } => show(refresh::run(&rt, entries)?),
        Workload::Latency { ops } => show(latency::run(&rt, ops)?),
        Workload::Burst { ops, pipeline } => show(burst::run(&rt, ops, pipeline)?),
        Workload::Resync { missed, entries, deletes } => show(resync::run(&rt, entries, missed, deletes)?),
        Workload::Detect { rounds } => show(detect::run(&rt, rounds)?),
        Workload::Fanout { consumers, ops } => show(fanout::run(&rt, consumers, ops)?),
        Workload::All { entries, consumers, ops } => {
            show(refresh::run(&rt, entries).context("refresh")?);
            show(latency::run(&rt, (ops / 10).max(1)).context("latency")?);
            show(burst::run(&rt, ops, 1).context("burst")?);
            show(burst::run(&rt, ops, ALL_PIPELINE).context("burst pipelined")?);
            let missed = 1_000.min(entries);
            show(resync::run(&rt, entries, missed, false).context("resync")?);
            show(resync::run(&rt, entries, missed, true).context("resync --deletes")?);
            show(detect::run(&rt, 3).context("detect")?);
            show(fanout::run(&rt, consumers, ops).context("fanout")?);
        }
    }
    let missed: usize = reports.iter().map(Report::missed).sum();
    if let Some(path) = &cli.json {
        let all: Vec<_> = reports.iter().map(Report::to_json).collect();
        let doc = serde_json::json!({ "reports": all, "missed_targets": missed });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{missed} target(s) missed");
    Ok(missed)
}

fn main() -> ExitCode {
    // Exit status 2 says "a target was missed" (a release gate reads it); clap's own
    // status for a command line it refuses is 2 as well, so usage errors are 1 here,
    // as a workload that cannot run is.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("tether-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
