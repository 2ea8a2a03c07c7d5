//! Failpoints: test hooks that make the apply path fail inside a real consumer process,
//! so the failure-scenario tests can prove that a panic or a store error in the
//! replication path becomes an `exception` (or, for an error retrying cannot fix, a
//! `closed` agreement) rather than a dead process or a silent loop.
//!
//! They are armed only through the `TETHER_FAILPOINTS` environment variable, read once:
//! a comma-separated list of `NAME=TRIGGER`, where TRIGGER is `N` (fire once, on the Nth
//! call) or `always`. Names:
//! - `apply-panic`: panic inside the apply task;
//! - `apply-error`: fail the apply with a store error that retrying cannot fix (disk full).
//!
//! Unset (as in every deployment) they cost one relaxed atomic load per apply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tether_store::StoreError;

/// The environment variable that arms failpoints.
pub const ENV: &str = "TETHER_FAILPOINTS";

/// When a failpoint fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Once, on this call (1-based).
    Nth(u64),
    /// On every call.
    Always,
}

/// One armed failpoint.
#[derive(Debug)]
struct Point {
    /// When it fires.
    trigger: Trigger,
    /// Calls so far.
    calls: AtomicU64,
}

impl Point {
    fn fires(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        match self.trigger {
            Trigger::Always => true,
            Trigger::Nth(k) => n == k,
        }
    }
}

/// The armed failpoints of this process.
#[derive(Debug, Default)]
struct Points {
    apply_panic: Option<Point>,
    apply_error: Option<Point>,
}

fn parse(spec: &str) -> Points {
    let mut points = Points::default();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, trigger)) = item.split_once('=') else { continue };
        let trigger = match trigger.trim() {
            "always" => Trigger::Always,
            n => match n.parse() {
                Ok(n) => Trigger::Nth(n),
                Err(_) => continue,
            },
        };
        let point = Some(Point { trigger, calls: AtomicU64::new(0) });
        match name.trim() {
            "apply-panic" => points.apply_panic = point,
            "apply-error" => points.apply_error = point,
            _ => {}
        }
    }
    points
}

fn points() -> &'static Points {
    static POINTS: OnceLock<Points> = OnceLock::new();
    POINTS.get_or_init(|| std::env::var(ENV).map(|s| parse(&s)).unwrap_or_default())
}

/// Called at the start of every apply on the blocking thread: panics or fails when a
/// failpoint says so.
pub fn on_apply() -> Result<(), StoreError> {
    let p = points();
    if p.apply_panic.as_ref().is_some_and(Point::fires) {
        panic!("failpoint apply-panic fired");
    }
    if p.apply_error.as_ref().is_some_and(Point::fires) {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "failpoint apply-error: no space left on device");
        return Err(StoreError::Sled(tether_store::SledError::Io(io)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_parse_and_fire_as_documented() {
        let p = parse("apply-panic=3, apply-error=always, bogus=1, apply-x");
        let panic = p.apply_panic.unwrap();
        assert_eq!([panic.fires(), panic.fires(), panic.fires(), panic.fires()], [false, false, true, false]);
        let error = p.apply_error.unwrap();
        assert!(error.fires() && error.fires());
        assert!(parse("").apply_panic.is_none());
    }
}
