//! `tether-chaos`: randomized fault injection against real provider and consumer
//! processes, with a verdict. See docs/testing.md, "Chaos runs".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use replication_tests::chaos::{self, Options};

/// Runs one provider and several consumers under a seeded nemesis, then checks that
/// they converge, that every change was applied exactly once and that no consumer ever
/// exposed a half-loaded replica. Exits 1 on any violation (printing the seed and the
/// replay command), 2 if the run itself could not be set up.
#[derive(Debug, Parser)]
#[command(name = "tether-chaos", version)]
struct Cli {
    /// How long faults are injected (then everything is healed and checked).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the workload (random if absent; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of consumers.
    #[arg(long, default_value_t = 3)]
    consumers: usize,
    /// Write operations per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Entries in the initial directory.
    #[arg(long, default_value_t = 2000)]
    entries: usize,
    /// How long the healed cluster may take to converge.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    converge_timeout: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the run's folder (processes' logs and stores) even when it passes.
    #[arg(long)]
    keep: bool,
    /// Replicate over TLS, with a CA and a provider certificate made for the run.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!("tether-chaos: seed {seed}");
    let opts = Options {
        duration: cli.duration,
        seed,
        consumers: cli.consumers,
        rate: cli.rate,
        entries: cli.entries,
        converge_timeout: cli.converge_timeout,
        keep: cli.keep,
        tls: cli.tls,
    };
    match run(&opts, cli.json.as_deref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tether-chaos: the run could not complete (seed {seed}): {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(opts: &Options, json: Option<&std::path::Path>) -> Result<bool> {
    let report = chaos::run(opts)?;
    print!("{}", report.to_text());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.passed() {
        eprintln!("tether-chaos: FAILED with seed {}; replay: {}", opts.seed, report.replay());
    }
    Ok(report.passed())
}
