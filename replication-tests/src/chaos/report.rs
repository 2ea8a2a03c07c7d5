//! The run's report: what was injected, how the consumers recovered, what was written,
//! how long convergence took, and the verdict, as text and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::cluster::Totals;
use super::Options;

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options, seed included.
    pub options: Options,
    /// Faults injected by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Times the provider's store did fail under a `provider-store-fails` limit.
    pub stores_failed: u64,
    /// Times the provider's store was restored from a backup.
    pub restores: u64,
    /// Consumer counters summed over consumers and their lives.
    pub totals: Totals,
    /// Changes the provider acknowledged.
    pub changes: u64,
    /// Writes that failed (provider down or killed mid-write).
    pub failed_writes: u64,
    /// Replica samples checked.
    pub samples: u64,
    /// Time from the end of the faults to convergence (`None`: never converged).
    pub converged_in: Option<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Every violation found.
    pub violations: Vec<String>,
    /// Where the processes' folders and logs are (kept on failure).
    pub root: String,
}

impl Report {
    /// Whether the run found nothing wrong.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run's schedule.
    pub fn replay(&self) -> String {
        let o = &self.options;
        format!(
            "tether-chaos --seed {} --duration {} --consumers {} --rate {} --entries {}{}",
            o.seed,
            humantime::format_duration(o.duration),
            o.consumers,
            o.rate,
            o.entries,
            if o.tls { " --tls" } else { "" }
        )
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "seed": self.options.seed,
            "duration_s": self.options.duration.as_secs_f64(),
            "consumers": self.options.consumers,
            "rate": self.options.rate,
            "entries": self.options.entries,
            "tls": self.options.tls,
            "faults": self.faults,
            "faults_total": self.faults.values().sum::<u64>(),
            "provider_stores_failed": self.stores_failed,
            "provider_restores": self.restores,
            "recoveries": self.totals.disconnects,
            "refreshes": self.totals.refreshes,
            "resumed_refreshes": self.totals.resumed,
            "changes_written": self.changes,
            "failed_writes": self.failed_writes,
            "applied_incrementally": self.totals.applied,
            "duplicates": self.totals.duplicates,
            "samples": self.samples,
            "converge_s": self.converged_in.map(|d| d.as_secs_f64()),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "violations": self.violations,
            "verdict": if self.passed() { "pass" } else { "FAIL" },
            "replay": self.replay(),
        })
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "tether-chaos seed {} duration {} consumers {} rate {}/s entries {}{}",
            o.seed,
            humantime::format_duration(o.duration),
            o.consumers,
            o.rate,
            o.entries,
            if o.tls { " over TLS" } else { "" }
        );
        let _ = writeln!(out, "faults injected ({} total):", self.faults.values().sum::<u64>());
        for (k, v) in &self.faults {
            let _ = writeln!(out, "  {k:<28} {v}");
        }
        let _ = writeln!(out, "  {:<28} {}", "(provider stores failed)", self.stores_failed);
        let _ = writeln!(out, "  {:<28} {}", "(provider restores)", self.restores);
        let _ = writeln!(out, "recoveries by reason (consumer disconnects):");
        for (k, v) in &self.totals.disconnects {
            let _ = writeln!(out, "  {k:<28} {v}");
        }
        let _ = writeln!(out, "refreshes by kind:");
        for (k, v) in &self.totals.refreshes {
            let _ = writeln!(out, "  {k:<28} {v}");
        }
        let _ = writeln!(out, "  {:<28} {}", "(resumed)", self.totals.resumed);
        let _ = writeln!(
            out,
            "changes written {} (failed writes {}), applied incrementally {}, duplicates {}",
            self.changes, self.failed_writes, self.totals.applied, self.totals.duplicates
        );
        let _ = writeln!(out, "replica samples checked {}", self.samples);
        match self.converged_in {
            Some(d) => {
                let _ = writeln!(out, "converged {:.2}s after the last fault was healed", d.as_secs_f64());
            }
            None => {
                let _ = writeln!(out, "did NOT converge within {}", humantime::format_duration(o.converge_timeout));
            }
        }
        let _ = writeln!(out, "run took {:.1}s", self.elapsed.as_secs_f64());
        if self.passed() {
            let _ = writeln!(out, "verdict: PASS (0 violations)");
        } else {
            let _ = writeln!(out, "verdict: FAIL ({} violations)", self.violations.len());
            for v in &self.violations {
                let _ = writeln!(out, "  - {v}");
            }
            let _ = writeln!(out, "logs kept in {}", self.root);
            let _ = writeln!(out, "replay: {}", self.replay());
        }
        out
    }
}
