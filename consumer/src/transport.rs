//! How a session reaches its provider: real TCP, or a caller-supplied connector.
//!
//! Production always uses [`Network::Tcp`]. The deterministic simulation supplies a
//! [`Connector`] over turmoil's simulated network, so the real session and supervisor
//! code runs unchanged against simulated partitions, holds and crashes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// Limit on establishing the TCP connection, and separately on the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected byte stream from a [`Connector`].
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed stream.
pub type BoxedStream = Box<dyn Stream>;

/// What [`Connector::connect`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<BoxedStream>> + Send + 'a>>;

/// Opens connections to `host:port` addresses on some other network than the OS's.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects to `addr`.
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a>;
}

/// The network a session connects over.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// The operating system's TCP (production).
    #[default]
    Tcp,
    /// A custom connector (the simulation). TLS and TCP tuning do not apply.
    Custom(Arc<dyn Connector>),
}
