//! The command-line side of a running provider: `write` (LDIF change records over the
//! replication port with the writer's credentials, over TLS when `[tls]` is set) and
//! the control-socket commands.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tether_config::output::Stdout;
use tether_protocol::connection::{self, BoxedRead, BoxedWrite, MessageReader, MessageWriter};
use tether_protocol::control::{self, ControlRequest};
use tether_protocol::handshake::client_handshake;
use tether_protocol::message::{Hello, Message, Role, WriteErrorKind, WriteOutcome, SUPPORTED_VERSIONS};
use tether_protocol::{Change, Csn};

use crate::config::{load_secret, ProviderConfig};
use crate::input::Input;
use crate::tls;

/// Limit on connecting and on each reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a control request, printing the reply on standard output; `Ok(None)` if no
/// provider is running at that socket.
pub async fn control_call(path: &Path, request: &ControlRequest) -> Result<Option<()>> {
    Ok(control::call_at(path, request, &mut Stdout::lock()).await?.then_some(()))
}

/// `tether-provider write`: reads the whole file once to check every record (so a
/// malformed one sends nothing), then reads it again and applies records in order,
/// each durably; stops at the first refusal, naming its line and reason and how many
/// records were applied (ldapmodify's behaviour). Memory holds one record at a time.
pub async fn write(config: &ProviderConfig, input: &Input) -> Result<WriteReport> {
    let file = input.shown();
    let Some(writer) = &config.writer else {
        bail!("{}: no [writer] section: writes are not enabled", config.file.display());
    };
    // A record over the provider's `max_frame` would close the session unread, and its
    // outcome would then read as unknown: refuse the file before sending any of it.
    for (id, record) in input.records()?.enumerate() {
        let record = record?;
        let line = record.line();
        let request = Message::WriteRequest { id: id as u64, change: record.into_change() };
        let len = tether_protocol::codec::encoded_len(&request)?;
        if len > config.max_frame as usize {
            bail!(
                "{}:{}: the record takes {len} bytes encoded, over the provider's max_frame of {} bytes ({}); \
                 nothing was written",
                file,
                line,
                config.max_frame,
                config.file.display()
            );
        }
    }
    let secret = load_secret(&writer.secret_file)?;
    let secret = secret.secret;
    let (host, port) = config.listen.addr();
    let host = if host == "0.0.0.0" || host == "::" || host == "[::]" { "127.0.0.1" } else { host };
    let tls_client = match &config.tls {
        Some(t) => Some(tls::self_client(t, host).map_err(|e| e.in_config(&config.file))?),
        None => None,
    };
    let stream = tokio::time::timeout(CLIENT_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?
        .with_context(|| format!("connecting to {host}:{port}: is the provider running?"))?;
    let (mut reader, mut writer_half) = match tls_client {
        Some(client) => {
            stream.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(client.config);
            let tls_stream = tokio::time::timeout(CLIENT_TIMEOUT, connector.connect(client.server_name, stream))
                .await
                .with_context(|| format!("TLS handshake with {host}:{port}: timed out"))?
                .with_context(|| {
                    format!(
                        "TLS handshake with {host}:{port} failed (the provider must present the certificate \
                         of {})",
                        client.pinned_file.display()
                    )
                })?;
            connection::boxed(tls_stream)
        }
        None => connection::boxed_tcp(stream)?,
    };
    let hello = Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        client_id: format!("tether-provider-write-{}", std::process::id()),
        role: Role::Writer,
    };
    client_handshake(&mut reader, &mut writer_half, &hello, &secret, CLIENT_TIMEOUT).await?;
    let mut report = WriteReport { applied: 0, last_csn: None };
    for (id, record) in input.records()?.enumerate() {
        let applied = report.applied;
        // Checked above; a file edited since then is refused from here on.
        let record =
            record.with_context(|| format!("the file changed since it was checked; {}", records_applied(applied)))?;
        let line = record.line();
        match write_one(&mut reader, &mut writer_half, id as u64, record.into_change()).await {
            Ok(WriteOutcome::Committed { csn, .. }) => {
                report.applied += 1;
                report.last_csn = Some(csn);
            }
            // The store failed under this record: it may be on disk or not, and the
            // provider stops, so the operator looks once it is back.
            Ok(WriteOutcome::Refused { kind: WriteErrorKind::StoreFailed, message }) => bail!(
                "{}:{line}: the provider's store failed ({message}); {}; the outcome of this record is unknown \
                 (once the provider is back, search for it before writing it again)",
                file,
                records_applied(applied)
            ),
            Ok(WriteOutcome::Refused { kind, message }) => {
                bail!("{}:{line}: refused ({}): {message}; {}", file, kind.as_str(), records_applied(applied))
            }
            // The record was sent, or about to be, when the session failed: it may have
            // committed without its answer arriving, and the operator must look before
            // sending it again.
            Err(e) => bail!(
                "{}:{line}: {}; {}; the outcome of this record is unknown (search for it before writing it again)",
                file,
                tether_config::shell::error_chain(&*e),
                records_applied(applied)
            ),
        }
    }
    let _ = writer_half
        .send(&Message::Goodbye {
            reason: tether_protocol::message::GoodbyeReason::Shutdown,
            detail: "write finished".into(),
        })
        .await;
    Ok(report)
}

/// What a complete `write` run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Records committed.
    pub applied: usize,
    /// The CSN of the last one, which `tether-consumer wait --csn` takes to read these
    /// writes on a replica; `None` for a file with no records.
    pub last_csn: Option<Csn>,
}

/// Sends one change and waits for its answer.
async fn write_one(
    reader: &mut MessageReader<BoxedRead>,
    writer: &mut MessageWriter<BoxedWrite>,
    id: u64,
    change: Change,
) -> Result<WriteOutcome> {
    writer.send(&Message::WriteRequest { id, change }).await.context("sending")?;
    let reply =
        tokio::time::timeout(CLIENT_TIMEOUT, reader.recv()).await.context("waiting for the provider's answer")??;
    match reply {
        Some(Message::WriteResult { id: got, outcome }) if got == id => Ok(outcome),
        Some(Message::Goodbye { reason, detail }) => {
            bail!("the provider closed the session ({}: {detail})", reason.as_str())
        }
        None => bail!("the provider closed the connection"),
        Some(other) => bail!("unexpected answer {}", other.name()),
    }
}

/// "1 record applied", "2 records applied": the count `write` reports on stderr, at the
/// end of its error when it stops early. Scripts read it from there (see the chaos writer).
pub fn records_applied(n: usize) -> String {
    format!("{n} record{} applied", if n == 1 { "" } else { "s" })
}
