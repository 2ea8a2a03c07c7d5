//! `tether-bench`'s exit status and JSON, which a release gate reads: 2 when a target
//! was missed and only then, 1 for a command line it refuses, and the missed count in
//! the JSON. Run on the smallest workloads whose verdict is certain: a burst of no
//! writes has a rate of 0 and misses its target, and detection with no rounds has no
//! worst case and meets both of its.
//!
//! Then each workload's figures, from tiny runs of the debug build: what they read is
//! no measure of anything, but the target each is held to is fixed, and figures
//! computed from one another must agree (a rate times the time it was taken over is
//! the count it was taken of), which a rate taken over the wrong interval or a count
//! divided by the wrong number would break.

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

/// The one report of a run of `tether-bench` with `args`, which must run to the end
/// (exit 0 or 2: its targets may well be missed in a debug build).
fn report(args: &[&str]) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bench.json");
    let out = bench(&path, args)?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(matches!(out.status.code(), Some(0 | 2)), "{said}");
    Ok(json(&path)?["reports"][0].clone())
}

/// The figure `metric` of `report`: its value and its target's, if any.
fn figure(report: &serde_json::Value, metric: &str) -> (f64, Option<f64>) {
    let figures = report["figures"].as_array().unwrap();
    let f = figures.iter().find(|f| f["metric"] == metric).unwrap_or_else(|| panic!("no {metric:?} in {report}"));
    (f["value"].as_f64().unwrap(), f["target"]["value"].as_f64())
}

/// Whether `a` and `b` are equal but for the rounding of a division.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
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
    let report = verdict(&["burst", "--ops", "0"], "burst", 2, 1)?;
    let rate = report["figures"].as_array().unwrap().iter().find(|f| f["metric"] == "end-to-end rate").unwrap();
    assert_eq!(rate["met"], false, "{report}");
    // One write at a time is held to the single-writer target, not the pipelined one.
    assert_eq!(rate["target"]["value"], 5000.0, "{report}");
    Ok(())
}

/// Runs `tether-bench` with `args`, one `workload`, to its `exit` status, and holds its
/// last line and its JSON (the run's count and the report's) to `missed` targets; the
/// report.
fn verdict(args: &[&str], workload: &str, exit: i32, missed: u64) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bench.json");
    let out = bench(&path, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(exit), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with(&format!("{missed} target(s) missed\n")), "{stdout}");
    let doc = json(&path)?;
    assert_eq!(doc["missed_targets"], missed, "{doc}");
    let report = doc["reports"][0].clone();
    assert_eq!((&report["workload"], &report["missed_targets"]), (&workload.into(), &missed.into()), "{doc}");
    Ok(report)
}

/// And a run that met every target neither says nor counts one missed: the gate lets
/// it through.
#[test]
fn targets_all_met_exit_0_with_none_counted_in_the_json() -> Result<()> {
    let report = verdict(&["detect", "--rounds", "0"], "detect", 0, 0)?;
    let met: Vec<_> = report["figures"].as_array().unwrap().iter().filter(|f| !f["met"].is_null()).collect();
    assert!(met.len() == 2 && met.iter().all(|f| f["met"] == true), "{report}");
    // Detection is held to the keepalive timeout (5 s) plus one interval (1 s).
    assert!(met.iter().all(|f| f["target"]["value"] == 6.0), "{report}");
    Ok(())
}

/// A run with `--cache-size` measures stores at that size, so its reports say so, and
/// the stores start with it (the setting is a key of every process's config).
#[test]
fn a_run_with_a_cache_size_names_it_in_its_report() -> Result<()> {
    let r = report(&["--cache-size", "16MiB", "detect", "--rounds", "0"])?;
    assert_eq!(r["params"]["cache_size"], "16MiB", "{r}");
    Ok(())
}

/// A refresh's rate is the people it loaded over the refresh's own time (not the offline
/// load's, nor counting the two structural entries), and its bytes per entry are the
/// bytes on the wire over every entry sent.
#[test]
fn a_refresh_rate_is_its_people_over_its_refresh_time() -> Result<()> {
    let r = report(&["refresh", "--entries", "100"])?;
    let (rate, target) = figure(&r, "refresh rate");
    assert_eq!(target, Some(100_000.0), "{r}");
    assert!(same(rate * figure(&r, "refresh time").0, 100.0), "{r}");
    assert!(same(figure(&r, "bytes per entry").0 * 102.0, figure(&r, "bytes on the wire").0), "{r}");
    Ok(())
}

/// A burst's provider rate is its writes over the time to the last ack, its end-to-end
/// rate its writes over the time until the consumer had the last one, the gap between
/// the two times in milliseconds, and with writes in flight it is held to the pipelined
/// target (one at a time, the single one: see the missed-target test).
#[test]
fn a_burst_rate_is_its_writes_over_the_time_to_the_last_ack_or_to_the_consumer() -> Result<()> {
    let r = report(&["burst", "--ops", "20", "--pipeline", "4"])?;
    let (end_to_end, target) = figure(&r, "end-to-end rate");
    assert_eq!(target, Some(50_000.0), "{r}");
    let caught_up = figure(&r, "consumer caught up after").0;
    assert!(same(end_to_end * caught_up, 20.0), "{r}");
    let acked = 20.0 / figure(&r, "provider acked rate").0;
    assert!(same(figure(&r, "consumer behind last ack by").0, (caught_up - acked) * 1e3), "{r}");
    Ok(())
}

/// Latency is held to 0.15 ms at the median and 0.5 ms at p99, and each measure's
/// percentiles climb to its maximum, the slowest write.
#[test]
fn latency_percentiles_rise_to_the_slowest_write_and_meet_their_own_targets() -> Result<()> {
    let r = report(&["latency", "--ops", "6"])?;
    let visible = "ack-to-visible-on-consumer";
    assert_eq!(figure(&r, &format!("{visible} p50")).1, Some(0.15), "{r}");
    assert_eq!(figure(&r, &format!("{visible} p99")).1, Some(0.5), "{r}");
    for measure in [visible, "ack-to-durable-on-consumer"] {
        let at = |p: &str| figure(&r, &format!("{measure} {p}")).0;
        let climb = [at("p50"), at("p99"), at("p999"), at("max")];
        assert!(climb.windows(2).all(|w| w[0] <= w[1]), "{measure}: {climb:?} in {r}");
    }
    Ok(())
}

/// Each fault kind reports its worst round: a dead link takes time to notice and a
/// healed one time to converge, so neither worst can read 0, which a worst kept as the
/// smallest round (starting from 0) would always give, meeting the target unseen.
#[test]
fn detection_reports_the_time_each_fault_took_to_notice() -> Result<()> {
    let r = report(&["detect", "--rounds", "1"])?;
    for kind in ["black hole", "provider stall"] {
        let (detect, target) = figure(&r, &format!("{kind}: worst detection"));
        assert!(detect > 0.0 && target == Some(6.0), "{r}");
        assert!(figure(&r, &format!("{kind}: worst heal to converged")).0 > 0.0, "{r}");
    }
    Ok(())
}

/// A resync's bytes per missed change are the bytes it sent over the changes missed,
/// not over the directory's entries.
#[test]
fn a_resync_sends_its_bytes_per_missed_change() -> Result<()> {
    let r = report(&["resync", "--missed", "5", "--entries", "20"])?;
    assert_eq!(figure(&r, "connect to caught up").1, Some(20.0), "{r}");
    assert!(same(figure(&r, "bytes per missed change").0 * 5.0, figure(&r, "bytes sent").0), "{r}");
    Ok(())
}

/// Fanout's aggregate deliveries are every consumer's changes over the time until the
/// last consumer caught up.
#[test]
fn fanout_deliveries_count_every_consumers_changes() -> Result<()> {
    let r = report(&["fanout", "--consumers", "2", "--ops", "20"])?;
    assert_eq!(figure(&r, "slowest consumer lag (visible)").1, Some(100.0), "{r}");
    let all = figure(&r, "aggregate deliveries").0 * figure(&r, "all consumers caught up after").0;
    assert!(same(all, 40.0), "{r}");
    Ok(())
}
