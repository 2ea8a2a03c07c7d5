//! `replication-tests`: everything that tests Tether as a user runs it.
//!
//! ## Layout
//! - [`harness`]: real provider and consumer processes on loopback, driven through
//!   their command-line interfaces.
//! - [`workload`]: generated directories and change workloads of every kind.
//!
//! The integration tests in `tests/` and the `tether-demo` binary build on these.

pub mod harness;
pub mod workload;
