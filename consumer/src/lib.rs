//! `tether-consumer`: the replicating side of Tether. It runs one supervised
//! replication agreement per `[[agreement]]` of `consumer.toml`, each keeping its own
//! replica of a region of a provider's directory.
//!
//! Per agreement, a [`supervisor`] runs [`session`]s one after another: a session
//! connects, handshakes, applies the refresh (through a shadow for full and present
//! refreshes) and live changes, acknowledges durable positions, and ends with a
//! [`reason`]; the supervisor turns that reason into the next state (reconnect, back off
//! per the [`retry`] schedule, poll, stay stopped, give up). [`daemon`] owns the store
//! and the supervisors, and the [`control`] socket lets operators see [`status`] and
//! steer agreements.
//!
//! ## Layout
//! - [`config`]: `consumer.toml`: every key, its default and the checks that refuse a
//!   bad file with the file, key and reason; secret files.
//! - [`retry`]: an agreement's reconnect schedule (`retry = ["1s x5", "1m forever"]`)
//!   and its jitter.
//! - [`reason`]: states and disconnect reasons, named as in SPEC §4.
//! - [`status`]: what each agreement publishes; [`metrics`]: the same, as the page the
//!   metrics endpoint (`metrics_listen`) serves to Prometheus.
//! - [`tls`]: an agreement's `[agreement.tls]` as a TLS client;
//!   [`provider_certificate`]: what the provider presented in it, warned of as it comes
//!   to expire (the supervisor runs `tether_config`'s watch on it).
//! - [`session`]: one connection's life: reader, keepalive poller, applier, a module each
//!   under `session/`, whose `mod.rs` connects, handshakes, starts them and ends it.
//! - [`supervision`]: the supervisor's decisions as a sans-IO state machine.
//! - [`supervisor`]: its tokio shell: sessions, timers, status.
//! - [`control`]: the control socket.
//! - [`daemon`]: the `run` process: agreements, reload, signals, shutdown.
//! - [`identity`]: the consumer's id for providers, one per store and never shared by
//!   a copy of it.
//! - [`executor`], [`transport`]: where blocking store calls run and how a session
//!   connects; production gives each session a store thread of its own and uses TCP,
//!   the deterministic simulation swaps in inline execution and turmoil's network.
//! - [`verify`]: what the check of a stopped consumer's replicas says.
//! - [`failpoint`]: test hooks that make apply panic or fail inside a real process.

pub mod config;
pub mod control;
pub mod daemon;
pub mod executor;
pub mod failpoint;
pub mod identity;
pub mod metrics;
pub mod provider_certificate;
pub mod reason;
pub mod retry;
pub mod session;
pub mod status;
pub mod supervision;
pub mod supervisor;
pub mod tls;
pub mod transport;
pub mod verify;
