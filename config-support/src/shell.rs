//! The process shell both binaries share: logging to stderr, and the Unix signals that
//! steer a running process (SIGTERM/SIGINT shut it down, SIGHUP reloads its config).

use tokio::signal::unix::{signal, SignalKind};

/// Environment variable holding the log filter (`info`, `debug`, `info,tether_consumer=debug`).
pub const LOG_ENV: &str = "TETHER_LOG";
/// The log filter when [`LOG_ENV`] is unset or invalid.
pub const DEFAULT_LOG: &str = "info";

/// Logs to stderr, filtered by [`LOG_ENV`]; colour only on a terminal, so logs written to
/// files stay greppable.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

/// What a signal asks of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (named): say goodbye, flush, exit 0.
    Shutdown(&'static str),
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// The signals a running process listens to, installed once at start.
#[derive(Debug)]
pub struct Signals {
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
    /// SIGINT.
    int: tokio::signal::unix::Signal,
    /// SIGHUP.
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancellation-safe, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Shutdown("SIGTERM"),
            _ = self.int.recv() => Signal::Shutdown("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
