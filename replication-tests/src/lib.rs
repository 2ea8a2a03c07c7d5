//! `replication-tests`: everything that tests Tether as a user runs it.
//!
//! ## Layout
//! - [`harness`]: real provider and consumer processes on loopback, driven through
//!   their command-line interfaces.
//! - [`proxy`]: a fault-injecting TCP proxy between consumer and provider (stall, reset,
//!   clean close, delay, throttle, corruption, truncation, refusal), controlled live.
//! - [`pki`]: a CA and provider certificates generated per run, for runs over TLS.
//! - [`workload`]: generated directories and change workloads of every kind.
//! - [`chaos`]: the `tether-chaos` run: a seeded nemesis against a real cluster.
//! - [`bench`](mod@bench): the `tether-bench` workloads (fill, staleness, bursts, resync,
//!   dead-link detection, fan-out).
//!
//! The integration tests in `tests/` and the `tether-demo` and `tether-bench` binaries
//! build on these, as does `tether-chaos`.

pub mod bench;
pub mod chaos;
pub mod harness;
pub mod pki;
pub mod proxy;
pub mod workload;
