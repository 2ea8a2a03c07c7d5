//! The consumer's control endpoint: a Unix socket (mode 0600) answering `status`,
//! `search`, `stop`/`start`/`restart NAME`, `reload` and `wait` (until a CSN is durable)
//! while the process runs.

use tether_protocol::control::{read_request, respond, ControlError, ControlRequest, ControlResponse};
use tether_protocol::{frame, ldif};
use tether_store::ReplicaStore;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::daemon::Agreements;
use crate::status::ConsumerStatus;
use crate::supervisor::Command;

/// Longest a `WaitCsn` request may wait: the control server waits for open requests
/// when the consumer shuts down, so none may be unbounded.
const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest output chunk: far under the frame limit, so the LDIF of a replica of any
/// size (a 100 000-entry one is about 50 MiB) streams instead of failing.
const OUTPUT_CHUNK: usize = 1 << 20;

/// `text` in pieces of at most `max` bytes (more only for a single longer line), cut
/// after a newline where there is one.
fn output_chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max.max(1));
        if end < rest.len() {
            // Bytes, not `str` slicing: `end` may fall inside a character; a newline
            // byte never does.
            end = match rest.as_bytes()[..end].iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => rest.find('\n').map_or(rest.len(), |nl| nl + 1),
            };
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

/// What the control endpoint can reach.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The store (for searches).
    pub store: ReplicaStore,
    /// The running agreements.
    pub agreements: Agreements,
    /// Asks the daemon to reload.
    pub reload: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
}

/// Serves control connections until `shutdown`.
pub async fn serve(listener: UnixListener, ctx: ControlContext, shutdown: CancellationToken) {
    let handler = move |stream: UnixStream| {
        let ctx = ctx.clone();
        async move {
            if let Err(e) = handle(stream, ctx).await {
                debug!(error = %e, "control connection ended");
            }
        }
    };
    tether_protocol::control::serve(listener, shutdown.cancelled_owned(), handler).await;
}

/// Canonical LDIF of the entries of `name`'s replica in `spec`.
pub fn search_text(store: &ReplicaStore, name: &str, spec: &tether_protocol::SearchSpec) -> Result<String, String> {
    if !store.names().map_err(|e| e.to_string())?.iter().any(|n| n == name) {
        return Err(format!("no agreement named {name:?}"));
    }
    let replica = store.replica(name).map_err(|e| e.to_string())?;
    let entries = replica.search(spec).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in &entries {
        ldif::writer::write_entry(&mut out, &e.dn, &e.attrs).map_err(|e| e.to_string())?;
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

async fn handle(stream: UnixStream, ctx: ControlContext) -> Result<(), ControlError> {
    let (mut reader, mut writer) = frame::split(stream);
    let request = read_request(&mut reader).await?;
    let reply: Result<String, String> = match request {
        ControlRequest::Status { json } => {
            let agreements = ctx.agreements.lock().await;
            let status = ConsumerStatus { agreements: agreements.values().map(|r| r.status.snapshot()).collect() };
            if json {
                serde_json::to_string_pretty(&status).map(|s| s + "\n").map_err(|e| e.to_string())
            } else {
                Ok(status.to_text())
            }
        }
        ControlRequest::Search { agreement, spec } => {
            let name = match agreement {
                Some(n) => Ok(n),
                None => {
                    let agreements = ctx.agreements.lock().await;
                    match agreements.keys().collect::<Vec<_>>().as_slice() {
                        [only] => Ok((*only).clone()),
                        _ => Err("several agreements: name one with --agreement".to_owned()),
                    }
                }
            };
            match name {
                Ok(name) => {
                    let store = ctx.store.clone();
                    tokio::task::spawn_blocking(move || search_text(&store, &name, &spec))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                Err(e) => Err(e),
            }
        }
        ControlRequest::Stop { name } => command(&ctx, &name, Command::Stop).await,
        ControlRequest::Start { name } => command(&ctx, &name, Command::Start).await,
        ControlRequest::Restart { name } => command(&ctx, &name, Command::Restart).await,
        ControlRequest::WaitCsn { name, csn, timeout_ms } => {
            let status = ctx.agreements.lock().await.get(&name).map(|r| r.status.clone());
            match status {
                None => Err(format!("no agreement named {name:?}")),
                Some(status) => {
                    let limit = std::time::Duration::from_millis(timeout_ms).min(WAIT_LIMIT);
                    if status.wait_csn(csn, limit).await {
                        Ok(format!("{}\n", status.durable_csn().unwrap_or(csn)))
                    } else {
                        Err(format!("{name}: csn {csn} not durable within {limit:?}"))
                    }
                }
            }
        }
        ControlRequest::Reload => {
            let (tx, rx) = oneshot::channel();
            if ctx.reload.send(tx).await.is_err() {
                Err("consumer is shutting down".to_owned())
            } else {
                rx.await.unwrap_or_else(|_| Err("reload was abandoned".to_owned()))
            }
        }
    };
    match reply {
        Ok(text) => {
            for chunk in output_chunks(&text, OUTPUT_CHUNK) {
                respond(&mut writer, &ControlResponse::Output(chunk.to_owned())).await?;
            }
            respond(&mut writer, &ControlResponse::Done).await
        }
        Err(e) => respond(&mut writer, &ControlResponse::Error(e)).await,
    }
}

async fn command(ctx: &ControlContext, name: &str, cmd: Command) -> Result<String, String> {
    let agreements = ctx.agreements.lock().await;
    let Some(running) = agreements.get(name) else { return Err(format!("no agreement named {name:?}")) };
    running.commands.send(cmd).await.map_err(|_| format!("agreement {name:?} is shutting down"))?;
    Ok(format!("{name}: {cmd:?}\n").to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_after_newlines_and_keeps_every_byte() {
        let text = "dn: a\ncn: æøå\n\ndn: b\n";
        for max in [1, 3, 7, 12, 100] {
            let parts: Vec<&str> = output_chunks(text, max).collect();
            assert_eq!(parts.concat(), text, "max {max}");
            assert!(parts.iter().all(|p| p.ends_with('\n')), "max {max}: {parts:?}");
        }
        assert_eq!(output_chunks(text, 100).count(), 1);
        assert_eq!(output_chunks("", 10).count(), 0);
    }
}
