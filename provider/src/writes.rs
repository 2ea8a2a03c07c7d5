//! Write-client sessions: `WriteRequest`s applied in order, each durable before its
//! `WriteResult`, and `SearchRequest`s answered in bounded pages. This is how
//! `tether-provider write` reaches a running provider (which alone holds the store).

use std::sync::Arc;
use std::time::Duration;

use tether_protocol::connection::{MessageReader, MessageWriter};
use tether_protocol::message::{GoodbyeReason, Message, WriteErrorKind, WriteOutcome};
use tether_store::{Directory, Refusal, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Entries per `SearchEntries` message.
const SEARCH_PAGE: usize = 500;
/// Limit on one blocked write to a client.
const WRITE_LIMIT: Duration = Duration::from_secs(30);

/// Maps a store error to what the client is told.
fn outcome_for(err: &StoreError) -> WriteOutcome {
    let kind = match err.refusal() {
        Some(Refusal::NoSuchObject(_)) => WriteErrorKind::NoSuchObject,
        Some(Refusal::AlreadyExists(_)) => WriteErrorKind::AlreadyExists,
        Some(Refusal::NoParent(_)) => WriteErrorKind::NoParent,
        Some(Refusal::NotAllowedOnNonLeaf(_)) => WriteErrorKind::NotAllowedOnNonLeaf,
        Some(Refusal::OutsideSuffix { .. } | Refusal::InvalidChange { .. }) => WriteErrorKind::InvalidChange,
        None => WriteErrorKind::Internal,
    };
    WriteOutcome::Refused { kind, message: err.to_string() }
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut MessageWriter<W>, msg: &Message) -> bool {
    matches!(tokio::time::timeout(WRITE_LIMIT, writer.send(msg)).await, Ok(Ok(())))
}

/// Serves one write client until it leaves or the provider shuts down.
pub async fn run<R, W>(
    dir: Arc<Directory>,
    mut reader: MessageReader<R>,
    mut writer: MessageWriter<W>,
    cancel: CancellationToken,
    idle_timeout: Duration,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => {
                let bye = Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "provider shutting down".into() };
                let _ = send(&mut writer, &bye).await;
                return;
            }
            msg = tokio::time::timeout(idle_timeout, reader.recv()) => msg,
        };
        let msg = match msg {
            Err(_) => {
                let bye = Message::Goodbye { reason: GoodbyeReason::IdleTimeout, detail: "write client idle".into() };
                let _ = send(&mut writer, &bye).await;
                return;
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "write client connection failed");
                return;
            }
        };
        let reply_ok = match msg {
            Message::WriteRequest { id, change } => {
                let d = dir.clone();
                let kind = change.kind();
                let dn = change.dn().to_string();
                let result = tokio::task::spawn_blocking(move || d.write(&change)).await;
                let outcome = match result {
                    Ok(Ok(c)) => {
                        info!(csn = %c.csn, kind, dn = %dn, "write committed");
                        WriteOutcome::Committed { csn: c.csn, uuid: c.uuid }
                    }
                    Ok(Err(e)) => {
                        info!(kind, dn = %dn, error = %e, "write refused");
                        outcome_for(&e)
                    }
                    Err(e) => {
                        warn!(error = %e, "write task failed");
                        WriteOutcome::Refused { kind: WriteErrorKind::Internal, message: e.to_string() }
                    }
                };
                send(&mut writer, &Message::WriteResult { id, outcome }).await
            }
            Message::SearchRequest { id, spec } => search(&dir, &mut writer, id, &spec).await,
            Message::Ping { seq } => send(&mut writer, &Message::Pong { seq }).await,
            Message::Goodbye { .. } => return,
            other => {
                let bye = Message::Goodbye {
                    reason: GoodbyeReason::ProtocolError,
                    detail: format!("unexpected {} from a write client", other.name()),
                };
                let _ = send(&mut writer, &bye).await;
                return;
            }
        };
        if !reply_ok {
            return;
        }
    }
}

async fn search<W: AsyncWrite + Unpin>(
    dir: &Directory,
    writer: &mut MessageWriter<W>,
    id: u64,
    spec: &tether_protocol::SearchSpec,
) -> bool {
    let mut cursor: Option<Vec<u8>> = None;
    let mut count = 0u64;
    loop {
        let (entries, next) = match dir.entries().search_page(spec, cursor.as_deref(), SEARCH_PAGE) {
            Ok(page) => page,
            Err(e) => {
                let outcome = WriteOutcome::Refused { kind: WriteErrorKind::Internal, message: e.to_string() };
                return send(writer, &Message::WriteResult { id, outcome }).await;
            }
        };
        count += entries.len() as u64;
        if !entries.is_empty() && !send(writer, &Message::SearchEntries { id, entries }).await {
            return false;
        }
        match next {
            Some(key) => cursor = Some(key),
            None => return send(writer, &Message::SearchDone { id, count }).await,
        }
    }
}
