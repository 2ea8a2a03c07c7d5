//! What a workload found: named figures, each with its target when the issue sets one,
//! printed as a table for people and written as JSON for tools. A missed target is what
//! makes `tether-bench` exit with status 2, so it can gate a release.

use std::fmt::Write as _;

use serde_json::{json, Value};

/// Which side of the target a figure must be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The figure must be at least the target (throughput).
    AtLeast,
    /// The figure must be at most the target (latency, memory).
    AtMost,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub metric: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The target it is held to, if any.
    pub target: Option<(Bound, f64)>,
}

impl Figure {
    /// Whether the target is met (`None` when there is none).
    pub fn met(&self) -> Option<bool> {
        self.target.map(|(bound, t)| match bound {
            Bound::AtLeast => self.value >= t,
            Bound::AtMost => self.value <= t,
        })
    }
}

/// The result of one workload run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// Its parameters (`entries`, `ops`, ...).
    pub params: Vec<(String, Value)>,
    /// Figures in the order they print.
    pub figures: Vec<Figure>,
    /// Facts that are not numbers (refresh kind used, content identical).
    pub facts: Vec<(String, String)>,
}

impl Report {
    /// An empty report for `workload`.
    pub fn new(workload: &str) -> Self {
        Self { workload: workload.to_owned(), params: Vec::new(), figures: Vec::new(), facts: Vec::new() }
    }

    /// Records a parameter.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.params.push((name.to_owned(), value.into()));
        self
    }

    /// Records a figure without a target.
    pub fn figure(&mut self, metric: &str, value: f64, unit: &str) -> &mut Self {
        self.figures.push(Figure { metric: metric.to_owned(), value, unit: unit.to_owned(), target: None });
        self
    }

    /// Records a figure held to a target.
    pub fn target(&mut self, metric: &str, value: f64, unit: &str, bound: Bound, target: f64) -> &mut Self {
        self.figures.push(Figure {
            metric: metric.to_owned(),
            value,
            unit: unit.to_owned(),
            target: Some((bound, target)),
        });
        self
    }

    /// Records a fact.
    pub fn fact(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.facts.push((name.to_owned(), value.into()));
        self
    }

    /// The figure named `metric`, if the report has it.
    pub fn get(&self, metric: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.metric == metric)
    }

    /// Number of targets missed.
    pub fn missed(&self) -> usize {
        self.figures.iter().filter(|f| f.met() == Some(false)).count()
    }

    /// The human table.
    pub fn table(&self) -> String {
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut out = format!("== {} ({})\n", self.workload, params.join(" "));
        let _ = writeln!(out, "{:<40} {:>14} {:<9} {:<16} MET", "METRIC", "VALUE", "UNIT", "TARGET");
        for f in &self.figures {
            let target = f.target.map_or("-".to_owned(), |(b, t)| {
                format!("{} {}", if b == Bound::AtLeast { ">=" } else { "<=" }, number(t))
            });
            let met = match f.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            let _ = writeln!(out, "{:<40} {:>14} {:<9} {:<16} {}", f.metric, number(f.value), f.unit, target, met);
        }
        for (k, v) in &self.facts {
            let _ = writeln!(out, "{k}: {v}");
        }
        out
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "metric": f.metric,
                    "value": f.value,
                    "unit": f.unit,
                    "target": f.target.map(|(b, t)| json!({
                        "bound": if b == Bound::AtLeast { "at-least" } else { "at-most" },
                        "value": t,
                    })),
                    "met": f.met(),
                })
            })
            .collect();
        let params: serde_json::Map<String, Value> = self.params.iter().cloned().collect();
        let facts: serde_json::Map<String, Value> =
            self.facts.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        json!({
            "workload": self.workload,
            "params": params,
            "figures": figures,
            "facts": facts,
            "missed_targets": self.missed(),
        })
    }
}

/// A figure printed with sensible precision.
fn number(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The `p`-th percentile (0..=100) of sorted `values`, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Less a hair, so that 99.9% of 1000 is rank 999 despite binary fractions.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    /// The latency targets are fractions of a millisecond and the fanout lags hundreds of
    /// milliseconds: the table keeps microseconds below 10, a tenth below 1000, and
    /// whole numbers from there (and for whole values), as docs/benchmarks.md quotes them.
    #[test]
    fn the_table_prints_each_figure_to_the_precision_that_tells_runs_apart() {
        assert_eq!(number(0.131), "0.131");
        assert_eq!(number(5.0), "5");
        assert_eq!(number(18.94), "18.9");
        assert_eq!(number(466.34), "466.3");
        assert_eq!(number(111_485.4), "111485");
    }

    #[test]
    fn a_missed_target_is_counted_and_shown() {
        let mut r = Report::new("x");
        r.target("rate", 10.0, "ops/s", Bound::AtLeast, 20.0).target("lag", 1.0, "ms", Bound::AtMost, 2.0);
        assert_eq!(r.missed(), 1);
        assert!(r.table().contains("NO"));
        assert_eq!(r.to_json()["missed_targets"], 1);
    }

    /// A target is a bound the figure may reach: a resync of exactly 20 ms meets "at
    /// most 20 ms", a refresh of exactly 100,000 entries/s meets "at least 100,000".
    #[test]
    fn a_figure_exactly_at_its_target_meets_it() {
        let mut r = Report::new("x");
        r.target("rate", 20.0, "ops/s", Bound::AtLeast, 20.0).target("lag", 2.0, "ms", Bound::AtMost, 2.0);
        assert_eq!(r.figures.iter().map(Figure::met).collect::<Vec<_>>(), [Some(true), Some(true)]);
        assert_eq!(r.missed(), 0);
    }

    /// Figures without a target (bytes on the wire, CPU per entry) are there to read,
    /// not to judge: they never count as missed, so they cannot make the run exit 2.
    #[test]
    fn a_figure_without_a_target_is_never_missed() {
        let mut r = Report::new("x");
        r.figure("bytes", 5.0, "B").target("lag", 1.0, "ms", Bound::AtMost, 2.0);
        assert_eq!(r.missed(), 0);
        assert_eq!(r.to_json()["missed_targets"], 0);
        assert!(!r.table().contains("NO"), "{}", r.table());
    }

    /// Tools read the JSON and people the table, and both must say which side of its
    /// target each figure must be on, the target itself, and whether it was met.
    #[test]
    fn the_table_and_the_json_give_each_targets_side_value_and_verdict() {
        let mut r = Report::new("x");
        r.target("rate", 10.0, "ops/s", Bound::AtLeast, 20.0).target("lag", 1.0, "ms", Bound::AtMost, 2.0);
        r.figure("bytes", 5.0, "B");
        assert_eq!(
            r.to_json()["figures"],
            json!([
                {"metric": "rate", "value": 10.0, "unit": "ops/s",
                 "target": {"bound": "at-least", "value": 20.0}, "met": false},
                {"metric": "lag", "value": 1.0, "unit": "ms",
                 "target": {"bound": "at-most", "value": 2.0}, "met": true},
                {"metric": "bytes", "value": 5.0, "unit": "B", "target": null, "met": null},
            ])
        );
        let table = r.table();
        let line = |metric: &str| {
            table.lines().find(|l| l.starts_with(metric)).unwrap().split_whitespace().collect::<Vec<_>>()
        };
        assert_eq!(line("rate"), ["rate", "10", "ops/s", ">=", "20", "NO"]);
        assert_eq!(line("lag"), ["lag", "1", "ms", "<=", "2", "yes"]);
        assert_eq!(line("bytes"), ["bytes", "5", "B", "-"]);
    }

    /// A figure means little without the run it came from: both forms name the workload,
    /// its parameters (a resync of deletes or of modifications, over how many entries)
    /// and its facts (the refresh kind the provider chose).
    #[test]
    fn the_table_and_the_json_name_the_runs_parameters_and_facts() {
        let mut r = Report::new("resync");
        r.param("entries", 100).param("deletes", true).fact("refresh kind", "delta");
        let table = r.table();
        assert!(table.starts_with("== resync (entries=100 deletes=true)\n"), "{table}");
        assert!(table.ends_with("\nrefresh kind: delta\n"), "{table}");
        let doc = r.to_json();
        assert_eq!(doc["workload"], "resync");
        assert_eq!(doc["params"], json!({"entries": 100, "deletes": true}));
        assert_eq!(doc["facts"], json!({"refresh kind": "delta"}));
    }
}
