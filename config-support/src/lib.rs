//! `tether-config`: what the two process shells (`tether-provider`, `tether-consumer`)
//! share and neither may take from the other, while `tether-protocol` stays free of
//! config files and process handling.
//!
//! ## Layout
//! - `source` (re-exported at the root): reading a TOML file with errors that name the
//!   file, dotted key and reason; the value parsers; relative paths; secret files.
//! - [`shell`]: logging set-up and the process signals (shutdown, reload).
//! - [`log_pipe`]: the daemons' log lines on their way to stderr, on a thread of their
//!   own, so a reader of stderr that stalls or goes away cannot stop a server.
//! - [`output`]: the commands' standard output, whose write errors are the command's.

pub mod log_pipe;
pub mod output;
pub mod shell;
mod source;

pub use source::*;
