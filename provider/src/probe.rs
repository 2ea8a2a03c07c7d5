//! Connections that close having sent nothing: port probes.
//!
//! A TCP health check (Nagios' `check_tcp`, a load balancer, a blackbox exporter's
//! `tcp_connect`) or a port scan connects and closes without a byte. The provider
//! warned of each as a failed handshake, so a check every minute wrote a warning every
//! minute, and an alert on the log's warnings fired on the monitoring itself. A client
//! that sends something and then fails (a wrong secret, bytes of another protocol, a
//! TLS handshake cut short) is still warned of; one that sent nothing is logged at
//! `debug`. A probe may close with a FIN or with a reset (HAProxy's checks and others
//! set `SO_LINGER` 0 so as to leave no TIME_WAIT behind): either is a probe. For a plain
//! connection the Tether handshake tells which it was (`HandshakeError::Closed { heard,
//! .. }`); under TLS the bytes are rustls', so the stream it reads is [`Watched`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The log line of a probe, at `debug`.
pub const PROBE: &str =
    "connection closed before sending anything (a port probe: a health check, a load balancer, a scan)";

/// Whether `e`, failing a TLS handshake, is the client closing the connection (a FIN
/// or a reset), rather than something it sent.
pub fn is_close(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset)
}

/// A stream that records whether any byte was read from it, in a flag that outlives it
/// (a TLS handshake that fails drops the stream it was given).
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    heard: Arc<AtomicBool>,
}

impl<S> Watched<S> {
    /// `inner`, and the flag set once a byte of it is read.
    pub fn new(inner: S) -> (Self, Arc<AtomicBool>) {
        let heard = Arc::new(AtomicBool::new(false));
        (Self { inner, heard: heard.clone() }, heard)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stream_tells_whether_a_byte_was_read_from_it() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut watched, heard) = Watched::new(near);
        watched.write_all(b"out").await.unwrap();
        let mut got = [0u8; 3];
        far.read_exact(&mut got).await.unwrap();
        assert!(!heard.load(Ordering::Relaxed), "writing is not hearing");
        far.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        watched.read_exact(&mut one).await.unwrap();
        drop(watched);
        assert!(heard.load(Ordering::Relaxed), "a byte read, remembered after the stream is gone");
    }
}
