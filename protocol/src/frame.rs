//! Framing: the bottom layer of the wire. A frame is a 4-byte big-endian length, that
//! many payload bytes, and a 4-byte big-endian CRC-32 (IEEE) of the payload; this module
//! moves frames over any async byte stream and knows nothing of what the payloads mean
//! (that is `codec` and `message`, one layer up).
//!
//! Why a checksum when TCP has one: a byte damaged between the sockets (a broken
//! middlebox, a proxy, memory) inside an attribute value still decodes into a valid
//! message, and the consumer would store the damaged value and move its cookie past it,
//! never to repair it. With the trailer such a frame is refused as a protocol error, the
//! session restarts from the last durable cookie, and nothing wrong is ever applied.
//!
//! The reader enforces a maximum frame size *before* it allocates for the payload, and
//! buffers partial input so that [`FrameReader::read_frame`] can be cancelled (for
//! example as one arm of a `tokio::select!` beside a ping timer) without losing bytes.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::liveness::Progress;

/// Size of the length prefix in front of every payload.
pub const LENGTH_PREFIX: usize = 4;

/// Size of the CRC-32 trailer after every payload.
pub const CHECKSUM: usize = 4;

/// The largest payload either side accepts: 16 MiB. Senders size their batches to fit;
/// a peer announcing more is refused before anything is allocated for it.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The most buffer the reader grows by per read while a frame is incomplete, so memory
/// follows the bytes that actually arrived, not the length a peer merely announced.
const READ_CHUNK: usize = 64 * 1024;

/// The least room the reader makes before a read, so one read can pick up several small
/// frames (pings, single changes) instead of one syscall per prefix and per payload.
const MIN_READ: usize = 4 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than the limit was announced (reading) or offered (writing).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced or offered payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended part-way through a frame: the peer died or cut the connection
    /// mid-message, as opposed to closing cleanly between frames.
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame (prefix included) had arrived.
        buffered: usize,
    },
    /// The payload does not match its checksum: damaged in transit. Nothing of it is
    /// used; the stream must be closed.
    #[error("frame checksum mismatch (damaged in transit)")]
    Checksum,
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    /// The stream frames arrive on.
    inner: R,
    /// Bytes received but not yet returned as a frame; survives cancellation of
    /// `read_frame`, which is what makes that method cancellation-safe.
    buf: BytesMut,
    /// The largest payload this reader accepts; at most [`MAX_FRAME`].
    max_frame: usize,
    /// Stamped whenever a read brings bytes, whole frame or not.
    progress: Option<Arc<Progress>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader accepting payloads up to [`MAX_FRAME`].
    pub fn new(inner: R) -> Self {
        Self::with_max_frame(inner, MAX_FRAME)
    }

    /// A reader accepting payloads up to `max_frame` (clamped to [`MAX_FRAME`], the most
    /// the codec can decode).
    pub fn with_max_frame(inner: R, max_frame: usize) -> Self {
        Self { inner, buf: BytesMut::new(), max_frame: max_frame.min(MAX_FRAME), progress: None }
    }

    /// Stamps `progress` from now on whenever a read brings bytes, so that a peer
    /// sending a frame over a slow link is seen to be alive before the frame is whole.
    pub fn report_progress(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// The largest payload currently accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How many bytes have arrived that no frame returned yet: the start of the next.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Changes the largest payload accepted from the next frame on (clamped to
    /// [`MAX_FRAME`]). The handshake lowers it while the peer is unauthenticated.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(MAX_FRAME);
    }

    /// The next frame's payload; `Ok(None)` when the peer closed the stream cleanly
    /// between frames.
    ///
    /// Cancellation-safe: if the future is dropped before it completes, every byte read
    /// so far stays buffered and the next call continues where this one stopped.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a prefix announces more than the limit (the
    /// stream is then out of step and must be closed); [`FrameError::Truncated`] if the
    /// stream ends inside a frame; [`FrameError::Io`] if the stream fails.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(Some(frame));
            }
            let read = match self.inner.read_buf(&mut self.buf).await {
                Ok(read) => read,
                // TLS reports a stream that ended without its close_notify so. It reads
                // as an end here, as a plain FIN does: a session's orderly end is its
                // Goodbye, which neither carries, and a cut inside a frame is still
                // `Truncated`. (rustls' words for it, a link to its manual, told an
                // operator nothing a plain connection's end did not.)
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if read > 0 {
                if let Some(progress) = &self.progress {
                    progress.mark();
                }
            }
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated { buffered: self.buf.len() })
                };
            }
        }
    }

    /// Takes one complete frame off the buffer if there is one; otherwise makes room for
    /// the next read. An incomplete frame is not an error.
    fn parse_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = self.buf.get(..LENGTH_PREFIX) else {
            self.buf.reserve(MIN_READ);
            return Ok(None);
        };
        let mut len_bytes = [0u8; LENGTH_PREFIX];
        len_bytes.copy_from_slice(prefix);
        // A u32 always fits in usize on the 32- and 64-bit targets Tether supports; if
        // it did not, the saturated value is over the limit and refused below.
        let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        let total = LENGTH_PREFIX + len + CHECKSUM;
        if self.buf.len() < total {
            self.buf.reserve((total - self.buf.len()).clamp(MIN_READ, READ_CHUNK));
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX);
        let payload = self.buf.split_to(len).freeze();
        let mut sum = [0u8; CHECKSUM];
        sum.copy_from_slice(&self.buf[..CHECKSUM]);
        self.buf.advance(CHECKSUM);
        if u32::from_be_bytes(sum) != crc32fast::hash(&payload) {
            return Err(FrameError::Checksum);
        }
        Ok(Some(payload))
    }

    /// Gives the stream back, with any bytes read past the last returned frame.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// Writes frames to a byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    /// The stream frames leave on.
    inner: W,
    /// The largest payload this writer sends: the peer's limit, so an oversize payload
    /// fails here, clearly, instead of getting the connection dropped by the peer.
    max_frame: usize,
    /// Small frames fed ([`FrameWriter::feed_frame`]) and not yet written: a run of them
    /// leaves in one write at the next flush, one system call and a few TCP segments
    /// instead of one of each per frame (a provider pushing a group of changes to fifty
    /// consumers made fifty times as many calls).
    gathered: Vec<u8>,
    /// Stamped whenever a write moves bytes, whole frame or not.
    progress: Option<Arc<Progress>>,
}

/// Frames are gathered up to this many bytes; a larger frame is written on its own.
const GATHER_LIMIT: usize = 64 * 1024;
/// Bytes a frame adds to its payload: length prefix and checksum.
const FRAME_OVERHEAD: usize = 8;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer sending payloads up to [`MAX_FRAME`].
    pub fn new(inner: W) -> Self {
        Self { inner, max_frame: MAX_FRAME, gathered: Vec::new(), progress: None }
    }

    /// Stamps `progress` from now on whenever a write moves bytes, so that a frame
    /// crossing a slow link is seen to be moving before it is all written.
    pub fn report_progress(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// The largest payload this writer sends.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Writes one frame (prefix and payload in one vectored write where the stream
    /// supports it) and flushes it.
    ///
    /// Not cancellation-safe: a write abandoned half-way leaves a partial frame on the
    /// stream, after which the connection can only be closed. Give the writer to one task
    /// and let it finish each frame.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] if the payload exceeds the limit (nothing is written);
    /// [`FrameError::Io`] if the stream fails.
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        self.feed_frame(payload).await?;
        self.flush().await
    }

    /// Writes one frame without flushing: a small one is only gathered, to leave with
    /// the frames fed after it at the next [`FrameWriter::flush`]; a large one is
    /// written at once (after what was gathered), without copying. Frames leave in the
    /// order fed. Not cancellation-safe, as [`FrameWriter::write_frame`].
    ///
    /// # Errors
    /// As [`FrameWriter::write_frame`].
    pub async fn feed_frame(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|_| payload.len() <= self.max_frame)
            .ok_or(FrameError::TooLarge { len: payload.len(), max: self.max_frame })?;
        let prefix = len.to_be_bytes();
        let sum = crc32fast::hash(payload).to_be_bytes();
        let size = payload.len() + FRAME_OVERHEAD;
        if self.gathered.len() + size > GATHER_LIMIT {
            self.write_gathered().await?;
        }
        if size > GATHER_LIMIT {
            let mut frame = Buf::chain(Buf::chain(&prefix[..], payload), &sum[..]);
            while frame.has_remaining() {
                // Vectored where the stream supports it, as `write_all_buf` wrote.
                let n = retried(self.inner.write_buf(&mut frame).await)?;
                self.moved(n)?;
            }
        } else {
            self.gathered.extend_from_slice(&prefix);
            self.gathered.extend_from_slice(payload);
            self.gathered.extend_from_slice(&sum);
        }
        Ok(())
    }

    /// Writes what was fed and flushes the stream.
    ///
    /// # Errors
    /// [`FrameError::Io`] if the stream fails.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.write_gathered().await?;
        self.inner.flush().await?;
        Ok(())
    }

    async fn write_gathered(&mut self) -> Result<(), FrameError> {
        let mut from = 0;
        while from < self.gathered.len() {
            let n = retried(self.inner.write(&self.gathered[from..]).await)?;
            from += self.moved(n)?;
        }
        self.gathered.clear();
        Ok(())
    }

    /// The bytes a write moved, its progress stamped: 0 for one interrupted (`None`,
    /// tried again). A write that moved none cannot finish the frame (the stream is
    /// closed), as `write_all` says.
    fn moved(&self, n: Option<usize>) -> Result<usize, FrameError> {
        let Some(n) = n else { return Ok(0) };
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        if let Some(progress) = &self.progress {
            progress.mark();
        }
        Ok(n)
    }

    /// Shuts the write side down (TCP FIN) after flushing, so the peer reads a clean
    /// end of stream instead of a reset.
    pub async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.write_gathered().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// Gives the stream back; frames fed since the last flush are dropped.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// A write's outcome, `None` if a signal interrupted it before it moved anything (to
/// be tried again, as `write_all` does).
fn retried(written: std::io::Result<usize>) -> Result<Option<usize>, FrameError> {
    match written {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Splits one bidirectional stream into a frame reader and a frame writer, so reading
/// and writing can live in different tasks.
pub fn split<S: AsyncRead + AsyncWrite>(stream: S) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
    let (read, write) = tokio::io::split(stream);
    (FrameReader::new(read), FrameWriter::new(write))
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncWriteExt};

    use super::*;

    /// Enough duplex buffer for every test frame, so writes never wait on the reader.
    const PIPE: usize = 1024 * 1024;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        out
    }

    /// A stream that yields its bytes, then fails as rustls does when the TCP stream
    /// ends without a TLS close_notify.
    struct CutWithoutCloseNotify(std::io::Cursor<Vec<u8>>);

    impl AsyncRead for CutWithoutCloseNotify {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0.position() < self.0.get_ref().len() as u64 {
                return std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
            }
            std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            )))
        }
    }

    /// A frame still arriving stamps its progress with each read, before it is whole:
    /// its sender is seen to be alive while a slow link carries it.
    #[tokio::test]
    async fn a_frame_still_arriving_stamps_its_progress() {
        let (mut tx, rx) = duplex(PIPE);
        let mut reader = FrameReader::new(rx);
        let progress = Arc::new(Progress::new());
        reader.report_progress(progress.clone());
        let frame = framed(&[7u8; 1000]);
        tx.write_all(&frame[..500]).await.unwrap();
        let before = progress.last();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), reader.read_frame()).await;
        assert!(read.is_err(), "half a frame is no frame");
        assert!(progress.last() > before, "the half that came was not stamped");
        tx.write_all(&frame[500..]).await.unwrap();
        assert_eq!(reader.read_frame().await.unwrap().as_deref(), Some(&[7u8; 1000][..]));
    }

    #[tokio::test]
    async fn a_tls_stream_cut_without_close_notify_ends_like_a_plain_one() {
        let whole = framed(b"cn: Alice");
        let mut reader = FrameReader::new(CutWithoutCloseNotify(std::io::Cursor::new(whole.clone())));
        assert_eq!(reader.read_frame().await.unwrap().as_deref(), Some(&b"cn: Alice"[..]));
        assert!(reader.read_frame().await.unwrap().is_none(), "a cut between frames is the stream's end");

        let half = whole[..whole.len() - 3].to_vec();
        let mut reader = FrameReader::new(CutWithoutCloseNotify(std::io::Cursor::new(half)));
        match reader.read_frame().await {
            Err(FrameError::Truncated { buffered }) => assert_eq!(buffered, whole.len() - 3),
            other => panic!("a cut inside a frame must be Truncated, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_damaged_payload_is_refused_by_its_checksum() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        let mut bytes = framed(b"cn: Alice");
        bytes[LENGTH_PREFIX + 4] ^= 0x20; // "cn: alice" would decode as a valid value
        b.write_all(&bytes).await.unwrap();
        assert!(matches!(reader.read_frame().await, Err(FrameError::Checksum)));
    }

    #[tokio::test]
    async fn frames_round_trip_in_order() {
        let (a, b) = duplex(PIPE);
        let (mut reader, _) = split(a);
        let (_, mut writer) = split(b);
        let payloads: [&[u8]; 4] = [b"hello", b"", &[0u8; 70_000], b"last"];
        for p in payloads {
            writer.write_frame(p).await.unwrap();
        }
        drop(writer);
        for p in payloads {
            assert_eq!(reader.read_frame().await.unwrap().unwrap(), p);
        }
    }

    /// A stream that records the size of every write it takes.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes.push(buf.len());
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Small frames fed together leave in one write at the flush; a frame too large to
    /// gather goes out at once, after what was gathered before it; order is kept.
    #[tokio::test]
    async fn fed_frames_are_gathered_into_one_write_until_the_flush() {
        let mut writer = FrameWriter::new(Recorder::default());
        let small: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
        for p in &small {
            writer.feed_frame(p).await.unwrap();
        }
        assert!(writer.inner.writes.is_empty(), "small frames were written before the flush");
        writer.flush().await.unwrap();
        assert_eq!(writer.inner.writes, [10 * (100 + FRAME_OVERHEAD)], "one write for the run");

        let large = vec![7u8; GATHER_LIMIT + 1];
        writer.feed_frame(b"before").await.unwrap();
        writer.feed_frame(&large).await.unwrap();
        assert!(writer.inner.writes.len() > 1, "a frame too large to gather waits for no flush");
        writer.feed_frame(b"after").await.unwrap();
        writer.shutdown().await.unwrap();
        let mut expected: Vec<u8> = small.iter().flat_map(|p| framed(p)).collect();
        for p in [&b"before"[..], &large, b"after"] {
            expected.extend(framed(p));
        }
        assert!(writer.inner.bytes == expected, "frames out of order or damaged");
    }

    #[tokio::test]
    async fn clean_eof_between_frames_is_none() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        b.write_all(&framed(b"one")).await.unwrap();
        drop(b);
        assert_eq!(reader.read_frame().await.unwrap().unwrap(), &b"one"[..]);
        assert!(reader.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn eof_mid_frame_is_truncated() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        let bytes = framed(b"payload");
        b.write_all(&bytes[..LENGTH_PREFIX + 3]).await.unwrap();
        drop(b);
        assert!(matches!(reader.read_frame().await, Err(FrameError::Truncated { buffered: 7 })));
    }

    #[tokio::test]
    async fn eof_inside_the_prefix_is_truncated() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        b.write_all(&[0, 0]).await.unwrap();
        drop(b);
        assert!(matches!(reader.read_frame().await, Err(FrameError::Truncated { buffered: 2 })));
    }

    #[tokio::test]
    async fn oversize_length_is_refused_before_the_payload_arrives_or_is_allocated() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        let claimed = u32::try_from(MAX_FRAME + 1).unwrap();
        // Only the prefix: the refusal must not wait for (or make room for) the payload.
        b.write_all(&claimed.to_be_bytes()).await.unwrap();
        match reader.read_frame().await {
            Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (MAX_FRAME + 1, MAX_FRAME)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(reader.buf.capacity() < READ_CHUNK, "no room was made for the payload");
        drop(b);
    }

    #[tokio::test]
    async fn a_lower_limit_applies_per_reader() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::with_max_frame(a, 8);
        b.write_all(&framed(b"12345678")).await.unwrap();
        b.write_all(&framed(b"123456789")).await.unwrap();
        assert_eq!(reader.read_frame().await.unwrap().unwrap().len(), 8);
        assert!(matches!(reader.read_frame().await, Err(FrameError::TooLarge { len: 9, max: 8 })));
        assert_eq!(FrameReader::with_max_frame(&b""[..], usize::MAX).max_frame(), MAX_FRAME);
    }

    #[tokio::test]
    async fn writer_refuses_oversize_payloads_and_writes_nothing() {
        let (a, b) = duplex(PIPE);
        let mut writer = FrameWriter { inner: b, max_frame: 4, gathered: Vec::new(), progress: None };
        assert!(matches!(writer.write_frame(b"12345").await, Err(FrameError::TooLarge { len: 5, max: 4 })));
        writer.write_frame(b"1234").await.unwrap();
        drop(writer);
        let mut reader = FrameReader::new(a);
        assert_eq!(reader.read_frame().await.unwrap().unwrap(), &b"1234"[..]);
        assert!(reader.read_frame().await.unwrap().is_none());
    }

    /// Feeds two frames one byte at a time and cancels `read_frame` after every poll
    /// that could not complete, as a `select!` with a timer arm would: no byte may be
    /// lost or duplicated.
    #[tokio::test]
    async fn partial_frames_byte_by_byte_survive_cancellation() {
        let (a, mut b) = duplex(PIPE);
        let mut reader = FrameReader::new(a);
        let mut stream = framed(b"first frame");
        stream.extend(framed(&[7u8; 300]));
        let mut got = Vec::new();
        let mut cancelled = 0;
        for byte in stream {
            b.write_all(&[byte]).await.unwrap();
            tokio::select! {
                biased;
                frame = reader.read_frame() => got.push(frame.unwrap().unwrap()),
                () = std::future::ready(()) => cancelled += 1,
            }
        }
        assert_eq!(got, vec![Bytes::from_static(b"first frame"), Bytes::from(vec![7u8; 300])]);
        assert!(cancelled > 300, "most polls found an incomplete frame and were cancelled");
        drop(b);
        assert!(reader.read_frame().await.unwrap().is_none());
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        fn run<F: std::future::Future>(f: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
        }

        /// Streams as the fuzz target's inputs: random bytes, or frames of random
        /// payloads followed by random bytes, under each of the target's settings.
        fn frame_cases() -> impl Strategy<Value = crate::properties::FrameCase> {
            let payloads = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4);
            let tail = proptest::collection::vec(any::<u8>(), 0..16);
            let stream = prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                (payloads, tail).prop_map(|(p, t)| [crate::properties::framed(&p), t].concat()),
            ];
            (any::<[u8; crate::properties::FRAME_HEADER]>(), stream).prop_map(|(header, stream)| {
                crate::properties::FrameCase::from_fuzz_input(&[&header[..], &stream].concat())
            })
        }

        proptest! {
            /// The `frame_message` fuzz target's properties: whatever arrives, the reader
            /// returns frames within the limit, a clean end or an error, never a panic;
            /// the same however the bytes are chunked and reads cancelled; and the frames
            /// written back are the bytes read.
            #[test]
            fn arbitrary_streams_keep_the_frame_properties(case in frame_cases()) {
                crate::properties::frames_and_messages(&case);
            }

            /// Any sequence of frames written comes back identical.
            #[test]
            fn written_frames_read_back(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
                run(async {
                    let mut wire = Vec::new();
                    {
                        let mut writer = FrameWriter::new(&mut wire);
                        for f in &frames {
                            writer.write_frame(f).await.unwrap();
                        }
                    }
                    let mut reader = FrameReader::new(&wire[..]);
                    for f in &frames {
                        prop_assert_eq!(&reader.read_frame().await.unwrap().unwrap()[..], &f[..]);
                    }
                    prop_assert!(reader.read_frame().await.unwrap().is_none());
                    Ok(())
                })?;
            }
        }
    }
}
