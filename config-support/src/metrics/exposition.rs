//! The Prometheus text format (version 0.0.4, which every Prometheus and OpenMetrics
//! scraper reads): each family's `# HELP` and `# TYPE` lines, then its samples.
//!
//! A family is written whole before the next begins and never twice, and a label set
//! once per family: a scraper refuses the whole page otherwise, so the processes build
//! their pages through this type rather than by `format!`.

use std::fmt::Write as _;

/// What a family's samples are, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows while the process runs (from 0 at its start): a scraper's
    /// `rate()` reads a fall as a restart.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value. CSNs and counts are integers above 2^53 in principle, which a
/// float would print rounded: they are written as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Written as is.
    Int(u64),
    /// Written in Rust's shortest round-trip form (`1.5`, `1e-7`), `NaN`, `+Inf`, `-Inf`.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// One page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// Families begun so far, so none is begun twice (debug builds check it).
    families: Vec<&'static str>,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins the family `name` (letters, digits and `_`, a counter's ending in
    /// `_total`); its samples follow through [`Family::sample`].
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "counter {name:?} without _total");
        debug_assert!(!self.families.contains(&name), "family {name:?} begun twice");
        self.families.push(name);
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        Family { page: self, name }
    }

    /// The page's text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A family being written: its samples.
#[derive(Debug)]
pub struct Family<'a> {
    page: &'a mut Exposition,
    name: &'static str,
}

impl Family<'_> {
    /// One sample, with `labels` (name, value) in the order given.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let out = &mut self.page.out;
        out.push_str(self.name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(name) && !name.starts_with("__"), "label name {name:?}");
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        let _ = match value.into() {
            Value::Int(v) => write!(out, "{v}"),
            Value::Float(v) if v.is_nan() => write!(out, "NaN"),
            Value::Float(v) if v == f64::INFINITY => write!(out, "+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => write!(out, "-Inf"),
            Value::Float(v) => write!(out, "{v}"),
        };
        out.push('\n');
        self
    }
}

/// A metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*` (no `:`, which is for recording
/// rules).
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A label value between its quotes: a backslash, a double quote and a line feed are
/// the three characters the format escapes; everything else (UTF-8 included) stands.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample of a page read back by [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if it has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a page as a scraper does, refusing what one would refuse: a sample before
/// its family's `# TYPE` or of another family, a family begun twice, one series twice,
/// a malformed name, label or value. For the tests of each process's page, and for
/// anything that reads one back.
pub fn parse(page: &str) -> Result<Vec<Sample>, String> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut families: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in page.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return Err(at("a malformed metric name".into()));
                    }
                    if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                        return Err(at(format!("an unknown type {kind:?}")));
                    }
                    if families.iter().any(|f| f == name) {
                        return Err(at(format!("family {name} begun twice")));
                    }
                    families.push(name.to_owned());
                }
                (Some("HELP"), Some(name), _) if !valid_name(name) => return Err(at("a malformed metric name".into())),
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| at(format!("a value that is not a number: {v:?}")))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').ok_or_else(|| at("labels not closed".into()))?;
                (name, parse_labels(rest).map_err(at)?)
            }
        };
        if !valid_name(name) {
            return Err(at("a malformed metric name".into()));
        }
        if families.last().map(String::as_str) != Some(name) {
            return Err(at(format!("a sample of {name} outside its family")));
        }
        let mut key: Vec<&(String, String)> = labels.iter().collect();
        key.sort();
        if !seen.insert(format!("{name}{key:?}")) {
            return Err(at("a series written twice".into()));
        }
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok(samples)
}

/// The value of the one series of `name` in `page` that has every label of `labels`;
/// `None` when no series has them, or more than one (`labels` then names too few).
pub fn value(page: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = page.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)));
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one.value),
        _ => None,
    }
}

/// `a="1",b="x\"y"` read into its pairs, unescaped.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if !valid_name(name) || labels.iter().any(|(n, _)| n == name) {
            return Err(format!("a malformed or repeated label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("a label value not closed".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("an unknown escape in a label value".into()),
                },
                Some((_, '\n')) => return Err("a line feed in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(more) => more,
            None if rest.is_empty() => rest,
            None => return Err("labels not separated by ,".into()),
        };
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_its_help_its_type_and_its_samples_in_order() {
        let mut page = Exposition::new();
        page.family("tether_test_applied_total", Kind::Counter, "Changes applied.")
            .sample(&[("agreement", "people")], 3u64)
            .sample(&[("agreement", "groups")], 0u64);
        page.family("tether_test_up", Kind::Gauge, "Whether it runs.").sample(&[], true);
        assert_eq!(
            page.finish(),
            "# HELP tether_test_applied_total Changes applied.\n\
             # TYPE tether_test_applied_total counter\n\
             tether_test_applied_total{agreement=\"people\"} 3\n\
             tether_test_applied_total{agreement=\"groups\"} 0\n\
             # HELP tether_test_up Whether it runs.\n\
             # TYPE tether_test_up gauge\n\
             tether_test_up 1\n"
        );
    }

    /// A label value may hold anything an operator wrote (a provider's host name, an
    /// error's text): the three characters the format gives a meaning are escaped, and
    /// nothing else, so UTF-8 reads back as written.
    #[test]
    fn label_values_and_help_are_escaped_as_the_format_says() {
        let mut page = Exposition::new();
        page.family("t_x", Kind::Gauge, "a \\ b\nc").sample(&[("a", "q\"b\\s\nn é"), ("b", "")], 1u64);
        assert_eq!(page.finish(), "# HELP t_x a \\\\ b\\nc\n# TYPE t_x gauge\nt_x{a=\"q\\\"b\\\\s\\nn é\",b=\"\"} 1\n");
    }

    /// CSNs are integers that a float would round above 2^53; floats keep their
    /// fraction, and the format's words for the three values that are not numbers.
    #[test]
    fn integers_are_exact_and_floats_round_trip() {
        let mut page = Exposition::new();
        page.family("t_v", Kind::Gauge, "v")
            .sample(&[("k", "big")], u64::MAX)
            .sample(&[("k", "half")], 0.5)
            .sample(&[("k", "whole")], 1_700_000_000.0)
            .sample(&[("k", "nan")], f64::NAN)
            .sample(&[("k", "inf")], f64::INFINITY)
            .sample(&[("k", "-inf")], f64::NEG_INFINITY);
        let text = page.finish();
        let values: Vec<&str> = text.lines().skip(2).map(|l| l.rsplit(' ').next().unwrap()).collect();
        assert_eq!(values, ["18446744073709551615", "0.5", "1700000000", "NaN", "+Inf", "-Inf"]);
    }

    #[test]
    fn names_are_held_to_the_formats_alphabet() {
        assert!(valid_name("tether_consumer_lag_seconds"));
        assert!(valid_name("_x9"));
        for bad in ["", "9x", "a-b", "a.b", "a:b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
    /// What [`parse`] reads back is what was written, escapes undone; and it refuses
    /// the pages a scraper would.
    #[test]
    fn a_page_reads_back_and_a_malformed_one_is_refused() {
        let mut page = Exposition::new();
        page.family("t_a_total", Kind::Counter, "a").sample(&[("x", "q\"\\\n,}"), ("y", "")], 7u64);
        page.family("t_b", Kind::Gauge, "b").sample(&[], 0.25);
        let samples = parse(&page.finish()).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].name, "t_a_total");
        assert_eq!(samples[0].label("x"), Some("q\"\\\n,}"));
        assert_eq!(samples[0].label("y"), Some(""));
        assert_eq!(samples[0].value, 7.0);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("t_b", 0.25));
        assert_eq!(value(&samples, "t_a_total", &[("y", "")]), Some(7.0));
        assert_eq!(value(&samples, "t_a_total", &[("y", "1")]), None, "no such series");
        assert_eq!(value(&samples, "t_b", &[]), Some(0.25));
        let mut two = Exposition::new();
        two.family("t_c", Kind::Gauge, "c").sample(&[("x", "1")], 1u64).sample(&[("x", "2")], 2u64);
        let two = parse(&two.finish()).unwrap();
        assert_eq!(value(&two, "t_c", &[]), None, "two series match");
        assert_eq!(value(&two, "t_c", &[("x", "2")]), Some(2.0));
        for bad in [
            "t_a 1\n",
            "# TYPE t_a gauge\nt_b 1\n",
            "# TYPE t_a gauge\nt_a 1\n# TYPE t_a gauge\n",
            "# TYPE t_a gauge\nt_a{x=\"1\"} 1\nt_a{x=\"1\"} 2\n",
            "# TYPE t_a gauge\nt_a{x=\"1\",x=\"2\"} 1\n",
            "# TYPE t_a gauge\nt_a{x=\"1} 1\n",
            "# TYPE t_a gauge\nt_a{x=\"\\q\"} 1\n",
            "# TYPE t_a gauge\nt_a one\n",
            "# TYPE t_a gauge\nt_a\n",
            "# TYPE t-a gauge\n",
            "# TYPE t_a gauges\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} taken");
        }
    }

    /// A `# HELP` line names its family as a `# TYPE` line does: a scraper refuses the
    /// page when that name is malformed, so a reader that took it would pass a page no
    /// Prometheus reads.
    #[test]
    fn a_help_line_with_a_malformed_name_is_refused() {
        assert!(parse("# HELP t_a a\n# TYPE t_a gauge\nt_a 1\n").is_ok());
        let err = parse("# HELP t-a a\n# TYPE t_a gauge\nt_a 1\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("malformed metric name"), "{err}");
    }

    /// Labels are `{a="1",b="2"}`, comma-separated and closed by `}`: a scraper refuses
    /// a sample whose braces are not closed or whose labels run together, so `parse`
    /// must too, or a page only it reads would pass the tests.
    #[test]
    fn labels_not_closed_or_not_separated_are_refused() {
        assert!(parse("# TYPE t_a gauge\nt_a{x=\"1\",y=\"2\"} 1\n").is_ok());
        let err = parse("# TYPE t_a gauge\nt_a{x=\"1\" 1\n").unwrap_err();
        assert!(err.contains("labels not closed"), "{err}");
        let err = parse("# TYPE t_a gauge\nt_a{x=\"1\"y=\"2\"} 1\n").unwrap_err();
        assert!(err.contains("labels not separated by ,"), "{err}");
    }

    /// A series is its name and its set of labels, whatever their order: the same
    /// labels written in another order are the series written twice, which a scraper
    /// refuses.
    #[test]
    fn one_series_with_its_labels_in_another_order_is_refused_as_written_twice() {
        let err = parse("# TYPE t_a gauge\nt_a{x=\"1\",y=\"2\"} 1\nt_a{y=\"2\",x=\"1\"} 2\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("a series written twice"), "{err}");
    }

    /// A family's samples follow its `# TYPE` line together: one of an earlier family
    /// after another has begun is refused, as a scraper refuses it.
    #[test]
    fn a_sample_of_a_family_already_ended_is_refused() {
        let err = parse("# TYPE t_a gauge\nt_a{x=\"1\"} 1\n# TYPE t_b gauge\nt_b 1\nt_a{x=\"2\"} 2\n").unwrap_err();
        assert!(err.contains("line 5") && err.contains("a sample of t_a outside its family"), "{err}");
    }

    /// The values that are not numbers read back as the ones written, and an integer
    /// above 2^53 as the nearest float: a reader of the page sees what a scraper sees.
    #[test]
    fn every_kind_of_value_reads_back_as_written() {
        let mut page = Exposition::new();
        page.family("t_v", Kind::Gauge, "v")
            .sample(&[("k", "nan")], f64::NAN)
            .sample(&[("k", "inf")], f64::INFINITY)
            .sample(&[("k", "-inf")], f64::NEG_INFINITY)
            .sample(&[("k", "half")], -0.5)
            .sample(&[("k", "big")], u64::MAX);
        let samples = parse(&page.finish()).unwrap();
        let v = |k| value(&samples, "t_v", &[("k", k)]).unwrap();
        assert!(v("nan").is_nan());
        assert_eq!(v("inf"), f64::INFINITY);
        assert_eq!(v("-inf"), f64::NEG_INFINITY);
        assert_eq!(v("half"), -0.5);
        assert_eq!(v("big"), u64::MAX as f64);
    }
}
