//! `tether-provider`: the serving side of Tether. It owns the authoritative store and
//! serves replication sessions to consumers and writes to writers.
//!
//! ## Layout
//! - [`config`]: `provider.toml`: every key, its default and the checks that refuse a
//!   bad file with the file, key and reason; secret files.

pub mod config;
