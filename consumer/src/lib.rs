//! `tether-consumer`: the replicating side of Tether. It runs one supervised
//! replication agreement per `[[agreement]]` of `consumer.toml`, each keeping its own
//! replica of a region of a provider's directory.
//!
//! ## Layout
//! - [`config`]: `consumer.toml`: every key, its default and the checks that refuse a
//!   bad file with the file, key and reason; secret files.
//! - [`retry`]: an agreement's reconnect schedule (`retry = ["1s x5", "1m forever"]`)
//!   and its jitter.

pub mod config;
pub mod retry;
