//! The command-line side of a running provider: `write` (LDIF change records over the
//! replication port with the writer's credentials, over TLS when `[tls]` is set) and
//! the control-socket commands.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tether_protocol::connection;
use tether_protocol::control::{self, ControlRequest};
use tether_protocol::handshake::client_handshake;
use tether_protocol::ldif;
use tether_protocol::message::{Hello, Message, Role, WriteOutcome, SUPPORTED_VERSIONS};

use crate::config::{load_secret, ProviderConfig};
use crate::tls;

/// Limit on connecting and on each reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a control request, printing the reply; `Ok(None)` if no provider is running
/// at that socket.
pub async fn control_call(path: &Path, request: &ControlRequest) -> Result<Option<()>> {
    Ok(control::call_at(path, request).await?.then_some(()))
}

/// `tether-provider write`: parses the whole file first, then applies records in
/// order, each durably; stops at the first refusal, naming its line and reason and how
/// many records were applied (ldapmodify's behaviour).
pub async fn write(config: &ProviderConfig, file: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let records = ldif::reader::parse_str(&text).map_err(|e| anyhow::anyhow!("{}:{e}", file.display()))?;
    let Some(writer) = &config.writer else {
        bail!("{}: no [writer] section: writes are not enabled", config.file.display());
    };
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
    let mut applied = 0;
    for (id, record) in records.into_iter().enumerate() {
        let line = record.line();
        let change = record.into_change();
        let id = id as u64;
        writer_half.send(&Message::WriteRequest { id, change }).await?;
        let reply =
            tokio::time::timeout(CLIENT_TIMEOUT, reader.recv()).await.context("waiting for the provider's reply")??;
        match reply {
            Some(Message::WriteResult { id: got, outcome }) if got == id => match outcome {
                WriteOutcome::Committed { .. } => applied += 1,
                WriteOutcome::Refused { kind, message } => {
                    bail!(
                        "{}:{line}: refused ({}): {message}; {applied} records applied",
                        file.display(),
                        kind.as_str()
                    )
                }
            },
            Some(Message::Goodbye { reason, detail }) => {
                bail!("provider closed the session ({}: {detail}); {applied} records applied", reason.as_str())
            }
            other => bail!("unexpected reply {:?}; {applied} records applied", other.map(|m| m.name())),
        }
    }
    let _ = writer_half
        .send(&Message::Goodbye {
            reason: tether_protocol::message::GoodbyeReason::Shutdown,
            detail: "write finished".into(),
        })
        .await;
    Ok(applied)
}
