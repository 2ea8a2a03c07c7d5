//! A message connection: [`Message`]s over a framed byte stream. This is the layer the
//! handshake and the provider's and consumer's sessions talk to; below it `frame` moves
//! payloads and `codec` turns them into messages. The two halves are separate so that a
//! session can read in one task (or one `select!` arm) and write in another.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use tokio::net::TcpStream;

use crate::codec::{self, CodecError};
use crate::frame::{FrameError, FrameReader, FrameWriter};
use crate::message::Message;

/// The encode buffer a writer keeps between messages; a larger one (left by a big
/// batch) is released, so an idle session holds little memory.
const RETAINED_ENCODE_BUFFER: usize = 1024 * 1024;

/// Why a message could not be received or sent.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed (reset, broken pipe, ...).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame over the limit; the stream is out of step.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
    /// A frame arrived damaged (its checksum does not match).
    #[error("damaged frame: checksum mismatch")]
    Checksum,
    /// A frame arrived whole but is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[source] CodecError),
    /// A message we tried to send cannot be encoded (typically: too large for a frame).
    /// Nothing was sent; the connection is still usable.
    #[error("cannot encode message: {0}")]
    Encode(#[source] CodecError),
}

impl WireError {
    /// The transport failed or the peer vanished mid-message: SPEC's
    /// `connection-lost`. Reconnecting may well succeed.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, WireError::Io(_) | WireError::TruncatedFrame { .. })
    }

    /// The peer sent something we refuse (oversize frame, garbage): answer with
    /// `Goodbye(protocol-error)` if possible and close this connection, and only it.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, WireError::FrameTooLarge { .. } | WireError::Decode(_) | WireError::Checksum)
    }

    /// The error is ours, not the connection's: the message cannot be sent as it is, and
    /// sending it again on any connection fails the same way.
    pub fn is_local(&self) -> bool {
        matches!(self, WireError::Encode(_))
    }

    /// Whether a fresh connection may succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        !self.is_local()
    }
}

impl From<FrameError> for WireError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Io(err) => WireError::Io(err),
            FrameError::TooLarge { len, max } => WireError::FrameTooLarge { len, max },
            FrameError::Truncated { buffered } => WireError::TruncatedFrame { buffered },
            FrameError::Checksum => WireError::Checksum,
        }
    }
}

/// Receives messages.
#[derive(Debug)]
pub struct MessageReader<R> {
    /// The frames they arrive in.
    frames: FrameReader<R>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Reads messages from a byte stream, with the default frame limit.
    pub fn new(inner: R) -> Self {
        Self::from_frames(FrameReader::new(inner))
    }

    /// Reads messages from an existing frame reader.
    pub fn from_frames(frames: FrameReader<R>) -> Self {
        Self { frames }
    }

    /// The next message; `Ok(None)` when the peer closed cleanly between messages.
    ///
    /// Cancellation-safe (the frame reader buffers partial input), so it can sit in a
    /// `tokio::select!` beside timers and shutdown signals.
    pub async fn recv(&mut self) -> Result<Option<Message>, WireError> {
        let Some(frame) = self.frames.read_frame().await? else {
            return Ok(None);
        };
        codec::decode(&frame).map(Some).map_err(WireError::Decode)
    }

    /// [`MessageReader::recv`], keeping the bytes of the entries that `Batch` and
    /// `Change` carry ([`crate::encoded::Received`]), for a reader that stores them.
    pub async fn recv_received(&mut self) -> Result<Option<crate::encoded::Received>, WireError> {
        let Some(frame) = self.frames.read_frame().await? else {
            return Ok(None);
        };
        crate::encoded::Received::decode(&frame).map(Some).map_err(WireError::Decode)
    }

    /// The largest frame currently accepted.
    pub fn max_frame(&self) -> usize {
        self.frames.max_frame()
    }

    /// Bytes of a message not yet whole (see [`FrameReader::buffered`]).
    pub fn buffered(&self) -> usize {
        self.frames.buffered()
    }

    /// Stamps `progress` whenever bytes arrive (see [`FrameReader::report_progress`]).
    pub fn report_progress(&mut self, progress: Arc<crate::liveness::Progress>) {
        self.frames.report_progress(progress);
    }

    /// Changes the largest frame accepted (see [`FrameReader::set_max_frame`]).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.frames.set_max_frame(max_frame);
    }

    /// The frame reader underneath.
    pub fn into_frames(self) -> FrameReader<R> {
        self.frames
    }
}

/// Sends messages.
#[derive(Debug)]
pub struct MessageWriter<W> {
    /// The frames they leave in.
    frames: FrameWriter<W>,
    /// Reused encode buffer, so steady traffic does not allocate per message.
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Writes messages to a byte stream.
    pub fn new(inner: W) -> Self {
        Self::from_frames(FrameWriter::new(inner))
    }

    /// Writes messages to an existing frame writer.
    pub fn from_frames(frames: FrameWriter<W>) -> Self {
        Self { frames, buf: Vec::new() }
    }

    /// Stamps `progress` whenever bytes leave (see [`FrameWriter::report_progress`]).
    pub fn report_progress(&mut self, progress: Arc<crate::liveness::Progress>) {
        self.frames.report_progress(progress);
    }

    /// Encodes and sends one message, flushed.
    ///
    /// Not cancellation-safe (see [`FrameWriter::write_frame`]): let each send finish,
    /// or close the connection.
    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// Sends one message encoded ahead of time (see [`crate::encoded`]), flushed. Not
    /// cancellation-safe, as [`MessageWriter::send`].
    pub async fn send_encoded(&mut self, msg: &crate::encoded::EncodedMessage) -> Result<(), WireError> {
        self.feed_encoded(msg).await?;
        self.flush().await
    }

    /// Encodes and writes one message without flushing (see [`FrameWriter::feed_frame`]):
    /// a run of messages fed and then flushed leaves in one write.
    pub async fn feed(&mut self, msg: &Message) -> Result<(), WireError> {
        self.buf.clear();
        codec::encode_into(msg, &mut self.buf).map_err(WireError::Encode)?;
        let result = self.frames.feed_frame(&self.buf).await;
        if self.buf.capacity() > RETAINED_ENCODE_BUFFER {
            self.buf = Vec::new();
        }
        Ok(result?)
    }

    /// [`MessageWriter::feed`] for a message encoded ahead of time.
    pub async fn feed_encoded(&mut self, msg: &crate::encoded::EncodedMessage) -> Result<(), WireError> {
        Ok(self.frames.feed_frame(msg.as_bytes()).await?)
    }

    /// Writes what was fed and flushes.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        Ok(self.frames.flush().await?)
    }

    /// Flushes and shuts the write side down, so the peer reads a clean end of stream.
    pub async fn shutdown(&mut self) -> Result<(), WireError> {
        Ok(self.frames.shutdown().await?)
    }

    /// The frame writer underneath.
    pub fn into_frames(self) -> FrameWriter<W> {
        self.frames
    }
}

/// The read side of any byte stream a connection runs over (plain TCP, TLS over TCP),
/// so sessions have one type whatever the transport.
pub type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write side of any byte stream a connection runs over.
pub type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits any bidirectional stream (a TLS stream, a test duplex) into message halves.
pub fn split<S: AsyncRead + AsyncWrite>(stream: S) -> (MessageReader<ReadHalf<S>>, MessageWriter<WriteHalf<S>>) {
    let (read, write) = tokio::io::split(stream);
    (MessageReader::new(read), MessageWriter::new(write))
}

/// Splits a TCP connection into message halves (lock-free, unlike [`split`]) and turns
/// Nagle's algorithm off: every frame is a whole message that should leave at once, and
/// a ping held back waiting for an ACK would skew keepalive timing.
pub fn from_tcp(stream: TcpStream) -> std::io::Result<(MessageReader<OwnedReadHalf>, MessageWriter<OwnedWriteHalf>)> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((MessageReader::new(read), MessageWriter::new(write)))
}

/// Turns on the kernel's own dead-peer detection as a second line behind the keepalive
/// poller: TCP keepalive probes after `idle` of silence, every `interval`, which fail a
/// socket whose peer host is gone even when neither side has anything to say.
///
/// `TCP_USER_TIMEOUT` is deliberately left unset. It aborts a socket whose data stays
/// unacknowledged, and a closed receive window counts: a live consumer behind a link
/// slower than the provider writes had its session aborted (`Connection timed out`) a
/// few seconds after its window closed, while it was heard from throughout. The
/// provider already drops a session whose write makes no progress while nothing comes
/// from the consumer, and the consumer one whose provider sends nothing: what they hear
/// tells a slow peer from a dead one, which the kernel cannot.
///
/// Both times are capped at 32,767 s (about 9 hours): the kernel refuses a longer one, and
/// the whole setting with it, so a keepalive timeout of ten hours left the socket
/// without probes. Probing sooner than asked costs a few packets an hour.
pub fn tune_tcp(stream: &TcpStream, idle: Duration, interval: Duration) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let (idle, interval) = (idle.min(TCP_KEEPALIVE_MOST), interval.min(TCP_KEEPALIVE_MOST));
    sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle).with_interval(interval))?;
    Ok(())
}

/// The longest TCP keepalive idle time and probe interval Linux takes (`MAX_TCP_KEEPIDLE`
/// and `MAX_TCP_KEEPINTVL`, 32,767 s each: about 9 hours).
const TCP_KEEPALIVE_MOST: Duration = Duration::from_secs(32_767);

/// Splits any stream (a TLS stream) into message halves over boxed streams: the types
/// [`boxed_tcp`] gives for plain TCP, so the code above the transport is the same for
/// both.
pub fn boxed<S>(stream: S) -> (MessageReader<BoxedRead>, MessageWriter<BoxedWrite>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    (MessageReader::new(Box::new(read)), MessageWriter::new(Box::new(write)))
}

/// Splits a TCP connection as [`from_tcp`] does (lock-free halves, Nagle off), with the
/// halves boxed: the same types as [`boxed`] gives for a TLS stream.
pub fn boxed_tcp(stream: TcpStream) -> std::io::Result<(MessageReader<BoxedRead>, MessageWriter<BoxedWrite>)> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((MessageReader::new(Box::new(read)), MessageWriter::new(Box::new(write))))
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::message::tests::samples;
    use crate::message::GoodbyeReason;

    /// Room for the largest sample message in the duplex pipe.
    const PIPE: usize = 64 * 1024;

    #[tokio::test]
    async fn messages_round_trip_over_a_stream() {
        let (a, b) = duplex(PIPE);
        let (mut reader, _) = split(a);
        let (_, mut writer) = split(b);
        for msg in samples() {
            writer.send(&msg).await.unwrap();
            assert_eq!(reader.recv().await.unwrap(), Some(msg));
        }
        writer.shutdown().await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn messages_round_trip_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let (_, mut writer) = from_tcp(TcpStream::connect(addr).await.unwrap()).unwrap();
            writer.send(&Message::Ping { seq: 9 }).await.unwrap();
            writer.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: String::new() }).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let (mut reader, _) = from_tcp(listener.accept().await.unwrap().0).unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(Message::Ping { seq: 9 }));
        assert!(matches!(reader.recv().await.unwrap(), Some(Message::Goodbye { reason: GoodbyeReason::Shutdown, .. })));
        assert_eq!(reader.recv().await.unwrap(), None);
        client.await.unwrap();
    }

    /// A keepalive timeout past what the kernel takes (Linux: 32,767 s, about 9 hours)
    /// still turns TCP keepalive on, probing from the kernel's longest idle time: the
    /// kernel refused the whole setting, and the socket went without probes.
    #[tokio::test]
    async fn tcp_keepalive_past_the_kernels_longest_probes_from_the_longest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        tune_tcp(&client, hours(10), hours(10)).unwrap();
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(32_767));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(32_767));
        tune_tcp(&client, Duration::from_secs(60), Duration::from_secs(5)).unwrap();
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn boxed_halves_carry_messages_over_any_stream_and_tcp() {
        let (a, b) = duplex(PIPE);
        let (mut reader, _keep) = boxed(a);
        let (_, mut writer) = boxed(b);
        writer.send(&Message::Ping { seq: 3 }).await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(Message::Ping { seq: 3 }));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, mut writer) = boxed_tcp(TcpStream::connect(addr).await.unwrap()).unwrap();
        let (mut reader, _) = boxed_tcp(listener.accept().await.unwrap().0).unwrap();
        writer.send(&Message::Pong { seq: 4 }).await.unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(Message::Pong { seq: 4 }));
        assert_eq!(reader.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_violation_and_a_cut_is_connection_lost() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = MessageReader::new(a);
        b.write_all(&[0, 0, 0, 2, 250, 250]).await.unwrap();
        b.write_all(&crc32fast::hash(&[250, 250]).to_be_bytes()).await.unwrap();
        let err = reader.recv().await.unwrap_err();
        assert!(matches!(err, WireError::Decode(_)) && err.is_protocol_violation() && !err.is_connection_lost());

        b.write_all(&[0, 0, 0, 9, 11]).await.unwrap();
        drop(b);
        let err = reader.recv().await.unwrap_err();
        assert!(matches!(err, WireError::TruncatedFrame { buffered: 5 }) && err.is_connection_lost());
    }

    #[tokio::test]
    async fn oversize_frames_are_a_protocol_violation() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = MessageReader::new(a);
        reader.set_max_frame(16);
        b.write_all(&17u32.to_be_bytes()).await.unwrap();
        let err = reader.recv().await.unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { len: 17, max: 16 }) && err.is_protocol_violation());
    }

    #[tokio::test]
    async fn an_unencodable_message_is_local_and_sends_nothing() {
        let (a, b) = duplex(PIPE);
        let mut reader = MessageReader::new(a);
        let mut writer = MessageWriter::new(b);
        let huge = Message::RefreshRequired { reason: "x".repeat(crate::frame::MAX_FRAME) };
        let err = writer.send(&huge).await.unwrap_err();
        assert!(err.is_local() && !err.is_retryable(), "{err}");
        writer.send(&Message::Pong { seq: 1 }).await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(Message::Pong { seq: 1 }));
    }
}
