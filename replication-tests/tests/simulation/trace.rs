//! A compact event log of one simulated run: what the nemesis did, what each replica
//! exposed, how the run ended. Printed when a seed fails (and with `TETHER_SIM_LOG=1`);
//! two runs of one seed must produce the same trace, line for line, so it names no
//! random identifiers (UUIDs, store ids, temp paths), only simulated times and CSNs.

use std::fmt::Write as _;

/// The log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    /// Records `what` at simulated time `ms`.
    pub fn event(&mut self, ms: u128, what: impl AsRef<str>) {
        self.lines.push(format!("{ms:>7} ms  {}", what.as_ref()));
    }

    /// Lines recorded.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// The whole log, one event per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}
