//! Metrics for Prometheus: each process renders its `status` as a page in the text
//! format ([`exposition`]) and serves it on a listener of its own ([`endpoint`]), when
//! its configuration names one (`metrics_listen`).

pub mod endpoint;
pub mod exposition;

pub use exposition::{parse, value, Exposition, Kind, Sample, Value};

/// An RFC 3339 time as `status` writes it, in seconds since the Unix epoch, as
/// Prometheus writes times (`..._timestamp_seconds`); `None` if it is not one.
pub fn unix_seconds(rfc3339: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}
