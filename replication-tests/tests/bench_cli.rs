//! `tether-bench`'s exit status and JSON, which a release gate reads: 2 when a target
//! was missed and only then, 1 for a command line it refuses, and the missed count in
//! the JSON. Run on the smallest workloads whose verdict is certain: a burst of no
//! writes has a rate of 0 and misses its target, and detection with no rounds has no
//! worst case and meets both of its.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use replication_tests::harness::{bin, BIN_DIR_ENV};

/// `tether-bench` with `args`, on the provider and consumer the tests run, writing its
/// JSON to `json`.
fn bench(json: &Path, args: &[&str]) -> Result<Output> {
    let dir = bin("tether-provider")?.parent().unwrap().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_tether-bench"))
        .arg("--json")
        .arg(json)
        .args(args)
        .env(BIN_DIR_ENV, dir)
        .output()?;
    Ok(out)
}

/// The JSON `tether-bench` wrote to `path`.
fn json(path: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// clap's own status for a refused command line is 2, which would tell a release gate
/// that a target was missed; `tether-bench` says 1, and 0 for `--help`.
#[test]
fn a_refused_command_line_exits_1_not_the_2_of_a_missed_target() -> Result<()> {
    let tether_bench = || Command::new(env!("CARGO_BIN_EXE_tether-bench"));
    let refused = tether_bench().args(["burst", "--no-such-option"]).output()?;
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let help = tether_bench().arg("--help").output()?;
    assert_eq!(help.status.code(), Some(0), "{}", String::from_utf8_lossy(&help.stderr));
    Ok(())
}

/// A missed target is what a release gate stops on: the status says it, and the JSON
/// counts it, in the run and in the report, beside the figure that missed.
#[test]
fn a_missed_target_exits_2_and_is_counted_in_the_json() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bench.json");
    let out = bench(&path, &["burst", "--ops", "0"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("1 target(s) missed\n"), "{stdout}");
    let doc = json(&path)?;
    assert_eq!(doc["missed_targets"], 1, "{doc}");
    let report = &doc["reports"][0];
    assert_eq!((&report["workload"], &report["missed_targets"]), (&"burst".into(), &1.into()), "{doc}");
    let rate = report["figures"].as_array().unwrap().iter().find(|f| f["metric"] == "end-to-end rate").unwrap();
    assert_eq!(rate["met"], false, "{doc}");
    Ok(())
}

/// And a run that met every target neither says nor counts one missed: the gate lets
/// it through.
#[test]
fn targets_all_met_exit_0_with_none_counted_in_the_json() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bench.json");
    let out = bench(&path, &["detect", "--rounds", "0"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("0 target(s) missed\n"), "{stdout}");
    let doc = json(&path)?;
    assert_eq!(doc["missed_targets"], 0, "{doc}");
    let report = &doc["reports"][0];
    assert_eq!((&report["workload"], &report["missed_targets"]), (&"detect".into(), &0.into()), "{doc}");
    let met: Vec<_> = report["figures"].as_array().unwrap().iter().filter(|f| !f["met"].is_null()).collect();
    assert!(met.len() == 2 && met.iter().all(|f| f["met"] == true), "{doc}");
    Ok(())
}
