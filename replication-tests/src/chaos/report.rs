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
    /// Of those backups, the ones made by `tether-provider backup` while it ran.
    pub online_backups: u64,
    /// Online backups whose writer process was killed mid-copy (each failed cleanly,
    /// and another was made).
    pub backup_writers_killed: u64,
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
            "provider_online_backups": self.online_backups,
            "provider_backup_writers_killed": self.backup_writers_killed,
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
        let _ = writeln!(out, "  {:<28} {}", "(of them backed up online)", self.online_backups);
        let _ = writeln!(out, "  {:<28} {}", "(backup writers killed)", self.backup_writers_killed);
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

#[cfg(test)]
mod tests {
    //! The report CI reads: every figure under its own name, with its own value (each
    //! made distinct here, so one read under another's name shows), and a verdict that
    //! follows the violations.

    use super::*;

    fn report(violations: &[&str]) -> Report {
        let mut totals = Totals::default();
        totals.disconnects.insert("keepalive-timeout".into(), 3);
        totals.disconnects.insert("connection-lost".into(), 4);
        totals.refreshes.insert("full".into(), 5);
        totals.refreshes.insert("delta".into(), 6);
        totals.resumed = 7;
        totals.duplicates = 8;
        totals.applied = 9;
        Report {
            options: Options {
                duration: Duration::from_secs(61),
                seed: 42,
                consumers: 5,
                rate: 23,
                entries: 321,
                converge_timeout: Duration::from_secs(99),
                keep: false,
                tls: true,
            },
            faults: [("black-hole", 10), ("reset", 11), ("delay", 0)].into_iter().collect(),
            stores_failed: 12,
            restores: 13,
            online_backups: 17,
            backup_writers_killed: 18,
            totals,
            changes: 14,
            failed_writes: 15,
            samples: 16,
            converged_in: Some(Duration::from_millis(1500)),
            elapsed: Duration::from_millis(70_500),
            violations: violations.iter().map(|v| (*v).to_owned()).collect(),
            root: "/tmp/run-folder".into(),
        }
    }

    #[test]
    fn the_json_names_every_figure_with_its_own_value() {
        let j = report(&[]).to_json();
        let expect = serde_json::json!({
            "seed": 42,
            "duration_s": 61.0,
            "consumers": 5,
            "rate": 23,
            "entries": 321,
            "tls": true,
            "faults": {"black-hole": 10, "reset": 11, "delay": 0},
            "faults_total": 21,
            "provider_stores_failed": 12,
            "provider_restores": 13,
            "provider_online_backups": 17,
            "provider_backup_writers_killed": 18,
            "recoveries": {"keepalive-timeout": 3, "connection-lost": 4},
            "refreshes": {"full": 5, "delta": 6},
            "resumed_refreshes": 7,
            "changes_written": 14,
            "failed_writes": 15,
            "applied_incrementally": 9,
            "duplicates": 8,
            "samples": 16,
            "converge_s": 1.5,
            "elapsed_s": 70.5,
            "violations": [],
            "verdict": "pass",
            "replay": "tether-chaos --seed 42 --duration 1m 1s --consumers 5 --rate 23 --entries 321 --tls",
        });
        assert_eq!(j, expect);
        let mut never = report(&[]);
        never.converged_in = None;
        assert_eq!(never.to_json()["converge_s"], serde_json::Value::Null);
    }

    #[test]
    fn a_violation_fails_the_verdict_in_the_json_and_the_text() {
        let passed = report(&[]);
        assert!(passed.passed());
        let text = passed.to_text();
        assert!(text.contains("verdict: PASS (0 violations)"), "{text}");
        assert!(!text.contains("replay:") && !text.contains("logs kept"), "{text}");

        let failed = report(&["consumer0 people: lost", "consumer1 all: duplicate"]);
        assert!(!failed.passed());
        let j = failed.to_json();
        assert_eq!(j["verdict"], "FAIL");
        assert_eq!(j["violations"], serde_json::json!(["consumer0 people: lost", "consumer1 all: duplicate"]));
        let text = failed.to_text();
        assert!(text.contains("verdict: FAIL (2 violations)"), "{text}");
        assert!(text.contains("  - consumer0 people: lost\n  - consumer1 all: duplicate\n"), "{text}");
        assert!(text.contains("logs kept in /tmp/run-folder"), "{text}");
        assert!(text.contains(&format!("replay: {}", failed.replay())), "{text}");
    }

    #[test]
    fn the_text_gives_every_figure() {
        let mut r = report(&[]);
        r.options.tls = false;
        let text = r.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "tether-chaos seed 42 duration 1m 1s consumers 5 rate 23/s entries 321");
        assert_eq!(lines[1], "faults injected (21 total):");
        for (name, n) in [
            ("black-hole", 10),
            ("delay", 0),
            ("reset", 11),
            ("(provider stores failed)", 12),
            ("(provider restores)", 13),
            ("(of them backed up online)", 17),
            ("(backup writers killed)", 18),
            ("keepalive-timeout", 3),
            ("connection-lost", 4),
            ("full", 5),
            ("delta", 6),
            ("(resumed)", 7),
        ] {
            assert!(lines.contains(&format!("  {name:<28} {n}").as_str()), "{name} {n}:\n{text}");
        }
        assert!(
            text.contains("changes written 14 (failed writes 15), applied incrementally 9, duplicates 8\n"),
            "{text}"
        );
        assert!(text.contains("replica samples checked 16\n"), "{text}");
        assert!(text.contains("converged 1.50s after the last fault was healed\n"), "{text}");
        assert!(text.contains("run took 70.5s\n"), "{text}");
        r.converged_in = None;
        assert!(r.to_text().contains("did NOT converge within 1m 39s\n"), "{}", r.to_text());
        assert_eq!(r.replay(), "tether-chaos --seed 42 --duration 1m 1s --consumers 5 --rate 23 --entries 321");
    }
}
