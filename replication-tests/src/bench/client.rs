//! The benchmark's own clients: a write client on the replication port (what
//! `tether-provider write` does, kept connected and able to keep several writes in
//! flight) and a control client for the consumers' `WaitCsn` and `Status` requests,
//! so timing never includes starting a command-line process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tether_protocol::connection::{boxed_tcp, BoxedRead, BoxedWrite};
use tether_protocol::control::{self, ControlRequest};
use tether_protocol::handshake::{client_handshake, ProviderProof};
use tether_protocol::message::{GoodbyeReason, Hello, Message, Role, WriteOutcome, SUPPORTED_VERSIONS};
use tether_protocol::{Change, Csn, MessageReader, MessageWriter, Secret};
use tokio::net::{TcpStream, UnixStream};

/// Limit on the handshake and on each reply.
const REPLY_LIMIT: Duration = Duration::from_secs(60);

/// A connected write client.
pub struct Writer {
    reader: MessageReader<BoxedRead>,
    writer: MessageWriter<BoxedWrite>,
    next_id: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl Writer {
    /// Connects to the provider on `port` with the writer's secret.
    pub async fn connect(port: u16, secret: &str) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting the write client")?;
        let (mut reader, mut writer) = boxed_tcp(stream)?;
        let secret = Secret::new(secret.as_bytes().to_vec()).map_err(|e| anyhow::anyhow!("writer secret: {e}"))?;
        let hello = Hello {
            versions: SUPPORTED_VERSIONS.to_vec(),
            client_id: format!("tether-bench-{}", std::process::id()),
            role: Role::Writer,
        };
        client_handshake(&mut reader, &mut writer, &hello, &secret, ProviderProof::Required, REPLY_LIMIT)
            .await
            .context("write handshake")?;
        Ok(Self { reader, writer, next_id: 0 })
    }

    /// Applies `changes` with at most `depth` in flight, calling `on_ack` with each
    /// change's index, CSN and the moment its acknowledgement arrived. Depth 1 is one at
    /// a time: each write is sent only after the previous one was acknowledged.
    pub async fn apply(
        &mut self,
        changes: Vec<Change>,
        depth: usize,
        mut on_ack: impl FnMut(usize, Csn, Instant),
    ) -> Result<()> {
        let n = changes.len();
        let first = self.next_id;
        let mut pending = changes.into_iter();
        let (mut sent, mut acked) = (0usize, 0usize);
        while acked < n {
            // Refill the window in one write, as a pipelining client would.
            let before = sent;
            while sent < n && sent - acked < depth.max(1) {
                let change = pending.next().context("change list ended early")?;
                self.writer.feed(&Message::WriteRequest { id: self.next_id, change }).await?;
                self.next_id += 1;
                sent += 1;
            }
            if sent > before {
                self.writer.flush().await?;
            }
            // Wait for one acknowledgement, then take every one already received.
            let mut reply =
                Some(tokio::time::timeout(REPLY_LIMIT, self.reader.recv()).await.context("waiting for an ack")??);
            while let Some(r) = reply.take() {
                let at = Instant::now();
                let csn = check_ack(r, first + acked as u64, acked)?;
                on_ack(acked, csn, at);
                acked += 1;
                if acked < sent {
                    // `recv` is cancellation-safe: an ack not yet complete stays buffered.
                    reply = tokio::select! {
                        biased;
                        r = self.reader.recv() => Some(r?),
                        () = std::future::ready(()) => None,
                    };
                }
            }
        }
        Ok(())
    }

    /// One write; returns its CSN.
    pub async fn write(&mut self, change: Change) -> Result<Csn> {
        let mut csn = Csn::ZERO;
        self.apply(vec![change], 1, |_, c, _| csn = c).await?;
        Ok(csn)
    }

    /// Says goodbye.
    pub async fn close(mut self) {
        let bye = Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "benchmark done".into() };
        let _ = self.writer.send(&bye).await;
    }
}

/// The CSN of write `index`'s acknowledgement `reply`, which must carry `id`.
fn check_ack(reply: Option<Message>, id: u64, index: usize) -> Result<Csn> {
    match reply {
        Some(Message::WriteResult { id: got, outcome }) if got == id => match outcome {
            WriteOutcome::Committed { csn, .. } => Ok(csn),
            WriteOutcome::Refused { kind, message } => bail!("write {index} refused ({}): {message}", kind.as_str()),
        },
        Some(Message::WriteResult { id: got, .. }) => bail!("ack for write {got} out of order (expected {id})"),
        Some(Message::Goodbye { reason, detail }) => bail!("provider said goodbye ({}: {detail})", reason.as_str()),
        other => bail!("unexpected reply {:?}", other.map(|m| m.name())),
    }
}

/// Runs a control request against the socket at `path`, returning its output.
pub async fn control_call(path: &Path, request: &ControlRequest) -> Result<String> {
    let stream = UnixStream::connect(path).await.with_context(|| format!("connecting to {}", path.display()))?;
    let mut out = String::new();
    control::call(stream, request, |text| {
        out.push_str(text);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Waits until the consumer whose control socket is `path` has `csn` durable in
/// agreement `name`, and returns the moment it learned so.
/// A consumer answers one request after at most a minute, so longer waits repeat it.
pub async fn wait_csn(path: &Path, name: &str, csn: Csn, limit: Duration) -> Result<Instant> {
    wait(path, name, csn, limit, false).await
}

/// [`wait_csn`] until the consumer's searches return `csn` (`wait --visible`), which
/// does not wait for its flush.
pub async fn wait_visible(path: &Path, name: &str, csn: Csn, limit: Duration) -> Result<Instant> {
    wait(path, name, csn, limit, true).await
}

async fn wait(path: &Path, name: &str, csn: Csn, limit: Duration, visible: bool) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).min(WAIT_REQUEST);
        let timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        let request = ControlRequest::wait(name.to_owned(), csn, timeout_ms, visible);
        match control_call(path, &request).await {
            Ok(_) => return Ok(Instant::now()),
            // Tried again at once (a wait that raced the `start` before it is answered
            // "stopped", and resync times that retry), but after yielding: a consumer gone
            // (a workload that failed and stopped its cluster) refuses the connection
            // without the task ever yielding, which would hold a runtime thread in this
            // loop until the deadline.
            Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => return Err(e.context(format!("waiting for csn {csn} on {}", path.display()))),
        }
    }
}

/// Longest single `WaitCsn` request (the consumer caps them at 60 s).
const WAIT_REQUEST: Duration = Duration::from_secs(50);

/// `status --json` of the process whose control socket is `path`.
pub async fn status(path: &Path) -> Result<serde_json::Value> {
    let text = control_call(path, &ControlRequest::Status { json: true }).await?;
    Ok(serde_json::from_str(&text)?)
}

/// One agreement's status object from a consumer.
pub async fn agreement_status(path: &Path, name: &str) -> Result<serde_json::Value> {
    crate::harness::agreement_in(&status(path).await?, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::message::WriteErrorKind;
    use tether_protocol::EntryUuid;

    fn committed(id: u64, csn: u64) -> Option<Message> {
        Some(Message::WriteResult { id, outcome: WriteOutcome::Committed { csn: Csn(csn), uuid: EntryUuid([0; 16]) } })
    }

    /// A pipelined burst keeps `depth` writes in flight and never one more (the figure
    /// is reported at that depth): the provider here reads everything the client sent
    /// before it waited, counts what it has not acknowledged, then acknowledges the
    /// oldest, so the count at each ack is what the client had in flight.
    #[tokio::test]
    async fn a_pipelined_burst_keeps_depth_writes_in_flight_and_no_more() {
        const WRITES: u64 = 100;
        for depth in [1usize, 4, 64] {
            let (client_end, provider_end) = tokio::io::duplex(1 << 20);
            let (reader, writer) = tether_protocol::connection::boxed(client_end);
            let mut client = Writer { reader, writer, next_id: 0 };
            let (mut requests, mut acks) = tether_protocol::connection::boxed(provider_end);
            let provider = tokio::spawn(async move {
                let (mut in_flight, mut most, mut received) = (std::collections::VecDeque::new(), 0, 0);
                for _ in 0..WRITES {
                    // After each ack a client with writes left sends the next: wait for
                    // it, then take every one sent with it.
                    let mut next = (received < WRITES).then_some(None);
                    while let Some(message) = next.take() {
                        let message = match message {
                            Some(message) => message,
                            None => requests.recv().await.unwrap(),
                        };
                        match message {
                            Some(Message::WriteRequest { id, .. }) => in_flight.push_back(id),
                            other => panic!("{:?}", other.map(|m| m.name())),
                        }
                        received += 1;
                        next = tokio::select! {
                            biased;
                            m = requests.recv(), if received < WRITES => Some(Some(m.unwrap())),
                            () = std::future::ready(()) => None,
                        };
                    }
                    most = most.max(in_flight.len());
                    let id = in_flight.pop_front().unwrap();
                    acks.send(&committed(id, id + 1).unwrap()).await.unwrap();
                }
                most
            });
            let changes = (0..WRITES as usize).map(|k| super::super::data::modify(k, k)).collect::<Result<Vec<_>>>();
            let mut csns = Vec::new();
            client.apply(changes.unwrap(), depth, |_, csn, _| csns.push(csn)).await.unwrap();
            assert_eq!(provider.await.unwrap(), depth, "in flight at depth {depth}");
            assert_eq!(csns, (1..=WRITES).map(Csn).collect::<Vec<_>>());
        }
    }

    /// The benchmark times each write by its acknowledgement, so it takes an ack only
    /// for the write it waits on: one for another write, or a refusal, stops the run
    /// instead of being counted as that write's.
    #[test]
    fn an_ack_counts_only_for_the_write_it_names_and_only_when_committed() {
        assert_eq!(check_ack(committed(7, 42), 7, 0).unwrap(), Csn(42));
        let other = check_ack(committed(8, 42), 7, 0).unwrap_err().to_string();
        assert!(other.contains("out of order"), "{other}");
        let refused = Some(Message::WriteResult {
            id: 7,
            outcome: WriteOutcome::Refused { kind: WriteErrorKind::NoSuchObject, message: "gone".into() },
        });
        let refused = check_ack(refused, 7, 3).unwrap_err().to_string();
        assert!(refused.starts_with("write 3 refused") && refused.ends_with("gone"), "{refused}");
        assert!(check_ack(None, 7, 0).is_err());
    }
}
