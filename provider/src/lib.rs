//! `tether-provider`: serves a directory store to consumers (RFC 4533-style refresh and
//! persist), accepts writes, and answers operators.
//!
//! A connection goes: [`server`] (accept, limit, handshake, authorize) -> either a
//! consumer [`session`] (a [`refresh`] plan, then live changes from the changelog) or a
//! write-client session ([`writes`]). Sessions publish themselves in the [`registry`],
//! which [`status`] and the [`control`] socket read. [`daemon`] is the process: it owns
//! the store, the server, the control endpoint and changelog trimming, and the shutdown
//! order. [`load`] and [`client`] are the offline loader and the command-line clients.
//!
//! ## Layout
//! - [`config`]: `provider.toml`, defaults and validation.
//! - [`refresh`]: full / present / delta planning, streamed in batches.
//! - [`session`]: one consumer's session (refresh, persist, keepalive, acks);
//!   [`session_ids`]: its id, which no session had before, restarts included.
//! - [`outbound`]: what a session queues for its writer, messages or pre-encoded ones;
//!   and how a refresh's batches and a search's answers are split into messages within
//!   [`outbound::BATCH_BYTES`] of entries each.
//! - [`writes`]: write and search requests from clients.
//! - [`registry`]: live sessions, for status and revocation.
//! - [`server`]: accept loop, connection limit, TLS, handshake, authorization;
//!   [`handshakes`]: those under way, whose slots a connection over the limit takes;
//!   [`throttle`]: the warnings a stranger can cause there, one a second; [`probe`]:
//!   connections that close having sent nothing, which are not warned of.
//! - [`tls`]: the TLS configurations built from `[tls]`; [`validity`]: what the
//!   provider says of the certificate in them, which rustls does not check of one's own,
//!   at start, on reload, from `status` and (through `tether_config`'s watch) in its log
//!   as it comes to expire.
//! - [`control`], [`status`]: the operator's view; [`metrics`]: `status` as the page
//!   the metrics endpoint (`metrics_listen`) serves to Prometheus; [`backup`]: the store
//!   copied while the provider runs, through the control socket; [`verify`]: what
//!   the check of a stopped store or a backup's copy says.
//! - [`daemon`]: the `serve` process and its shutdown.
//! - [`load`], [`client`]: offline bulk load; `write` and control-socket clients.
//! - [`input`]: the LDIF they read, from a file or standard input.

pub mod backup;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod handshakes;
pub mod input;
pub mod load;
pub mod metrics;
pub mod outbound;
pub mod probe;
pub mod refresh;
pub mod registry;
pub mod server;
pub mod session;
pub mod session_ids;
pub mod status;
pub mod throttle;
pub mod tls;
pub mod validity;
pub mod verify;
pub mod writes;
