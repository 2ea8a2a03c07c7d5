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

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds as Prometheus's `time()` counts them, the fraction dropped (never rounded
    /// up: an expiry must not read as a second later than it is); what is not a time, or
    /// before 1970, is none.
    #[test]
    fn an_rfc3339_time_is_its_whole_seconds_since_the_epoch() {
        assert_eq!(unix_seconds("2026-12-06T08:00:00Z"), Some(1_796_544_000));
        assert_eq!(unix_seconds("2026-12-06T08:00:00.9Z"), Some(1_796_544_000));
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("1969-12-31T23:59:59Z"), None);
        assert_eq!(unix_seconds(""), None);
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
