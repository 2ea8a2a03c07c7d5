//! `tether-config`: what the two process shells (`tether-provider`, `tether-consumer`)
//! share and neither may take from the other, while `tether-protocol` stays free of
//! config files and process handling.
//!
//! ## Layout
//! - `source` (re-exported at the root): reading a TOML file with errors that name the
//!   file, dotted key and reason; the value parsers; relative paths; secret files.
//! - [`shell`]: logging set-up and the process signals (shutdown, reload); what a
//!   process checks and sets up around its store (the threads and open files it needs,
//!   the `data_dir`'s mode, root's commands run again as the store's owner, which
//!   processes hold a store a command waits for); serving the control socket, and a
//!   command's request to the running process when the file has errors.
//! - [`certificate`]: a TLS certificate's validity and stage, read from its DER, and
//!   [`certificate_watch`]: the log's warnings as one in use comes to expire; each
//!   process words them for its side (the provider of its own, a consumer of its
//!   provider's).
//! - [`log_pipe`]: the daemons' log lines on their way to stderr, on a thread of their
//!   own, so a reader of stderr that stalls or goes away cannot stop a server.
//! - [`output`]: the commands' standard output, whose write errors are the command's.
//! - [`metrics`]: the Prometheus text format, and the HTTP endpoint that serves each
//!   process's page of it (`metrics_listen`).

pub mod certificate;
pub mod certificate_watch;
pub mod log_pipe;
pub mod metrics;
pub mod output;
pub mod shell;
mod source;

pub use source::*;
