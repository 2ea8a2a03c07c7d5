//! `tether-config`: what the two process shells (`tether-provider`, `tether-consumer`)
//! share and neither may take from the other, while `tether-protocol` stays free of
//! config files and process handling.
//!
//! ## Layout
//! - `source` (re-exported at the root): reading a TOML file with errors that name the
//!   file, dotted key and reason; the value parsers; relative paths; secret files.
//! - [`shell`]: logging set-up and the process signals (shutdown, reload).
//! - [`output`]: the commands' standard output, whose write errors are the command's.

pub mod output;
pub mod shell;
mod source;

pub use source::*;
