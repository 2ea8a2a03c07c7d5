//! The command-line side of a running provider: `write` (LDIF change records over the
//! replication port with the writer's credentials, over TLS when `[tls]` is set) and
//! the control-socket commands.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tether_config::output::Stdout;
use tether_protocol::connection::{self, BoxedRead, BoxedWrite, MessageReader, MessageWriter};
use tether_protocol::control::{self, ControlRequest};
use tether_protocol::foreign::ForeignKind;
use tether_protocol::handshake::{client_handshake, HandshakeError, ProviderProof};
use tether_protocol::message::{
    GoodbyeReason, Hello, Message, RejectReason, Role, WriteErrorKind, WriteOutcome, SUPPORTED_VERSIONS,
};
use tether_protocol::{Change, Csn};

use crate::config::{load_secret, ProviderConfig};
use crate::input::Input;
use crate::tls;

/// Limit on connecting and on each reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a control request to the provider `config` names, printing the reply on
/// standard output; `Ok(None)` if no provider is running at its socket. A provider
/// started with another file does nothing ([`control::call_from`]).
pub async fn control_call(config: &ProviderConfig, request: &ControlRequest) -> Result<Option<()>> {
    let to = control::Process::Provider;
    Ok(control::call_from(&config.control, to, &config.file, request, &mut Stdout::lock()).await?.then_some(()))
}

/// [`control_call`] with the reload of a command given the configuration file `file`,
/// which the running provider must have been started with ([`control::reload_at`]).
pub async fn control_reload(path: &Path, file: &Path) -> Result<Option<()>> {
    Ok(control::reload_at(path, control::Process::Provider, file, &mut Stdout::lock()).await?.then_some(()))
}

/// `tether-provider write`: reads the whole file once to check every record (so a
/// malformed one sends nothing), then reads it again and applies records in order,
/// each durably; stops at the first refusal, naming its line and reason and how many
/// records were applied (ldapmodify's behaviour). Memory holds one record at a time.
///
/// A provider that does not prove it knows the `[writer]` secret (a build before
/// protocol version 3, or something else on its address) is refused before any record
/// is sent, unless `proof` is [`ProviderProof::Optional`] (`--allow-unproven`, for a
/// provider still running the older build during an upgrade).
pub async fn write(config: &ProviderConfig, input: &Input, proof: ProviderProof) -> Result<WriteReport> {
    let file = input.shown();
    let Some(writer) = &config.writer else {
        bail!("{}: no [writer] section: writes are not enabled", config.file.display());
    };
    // The first record a provider of an older protocol version could not take: its
    // line, and the version it needs.
    let mut needs: Option<(usize, u16)> = None;
    // A record over the provider's `max_frame` would close the session unread, and its
    // outcome would then read as unknown: refuse the file before sending any of it.
    for (id, record) in input.records(crate::input::RecordLimit::Write)?.enumerate() {
        // Said as every refusal of this pass says it: after an interrupted run, an
        // operator must know that no record of this one went in.
        let record = record.map_err(|e| anyhow::anyhow!("{e:#}; nothing was written"))?;
        let line = record.line();
        let change = record.into_change();
        if let Some(refusal) = tether_store::refused_anywhere(&change) {
            bail!("{file}:{line}: refused: {refusal}; nothing was written");
        }
        let version = change.min_version();
        if version > needs.map_or(1, |(_, v)| v) {
            needs = Some((line, version));
        }
        let request = Message::WriteRequest { id: id as u64, change };
        let len = tether_protocol::codec::encoded_len(&request)?;
        if len > config.max_frame as usize {
            // At the largest max_frame there is, raising it is no way out: an entry
            // could not be that large anyway (`MAX_ENTRY`, with room for the message).
            let way_out = if config.max_frame as usize >= tether_protocol::frame::MAX_FRAME {
                format!("the most any record may take; an entry may take at most {} bytes", tether_protocol::MAX_ENTRY)
            } else {
                format!("{}", config.file.display())
            };
            bail!(
                "{}:{}: the record takes {len} bytes encoded, over the provider's max_frame of {} bytes ({way_out}); \
                 nothing was written",
                file,
                line,
                config.max_frame,
            );
        }
    }
    // Named as a start names it: the file and the key that points to the secret.
    let secret = load_secret(&writer.secret_file)
        .with_context(|| format!("{}: key 'writer.secret_file'", config.file.display()))?
        .secret;
    let (host, port) = config.listen.addr();
    let host = own_listener_host(host);
    let port = match port {
        0 => bound_port(config).await?,
        port => port,
    };
    // As the configuration spells it: an IPv6 address in brackets.
    let at = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let tls_client = match &config.tls {
        Some(t) => Some(tls::self_client(t, host).map_err(|e| e.in_config(&config.file))?),
        None => None,
    };
    let stream = tokio::time::timeout(CLIENT_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .with_context(|| format!("connecting to {at}"))?
        .with_context(|| {
            format!(
                "connecting to {at}: is the provider running, and listening there? (a `listen` changed in \
                 {} takes effect at its next start, not at a reload)",
                config.file.display()
            )
        })?;
    let (mut reader, mut writer_half) = match tls_client {
        Some(client) => {
            stream.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(client.config);
            let tls_stream = tokio::time::timeout(CLIENT_TIMEOUT, connector.connect(client.server_name, stream))
                .await
                .with_context(|| format!("TLS handshake with {at}: timed out"))?
                .map_err(|e| {
                    // A provider answering in plain TCP: its running configuration has
                    // no [tls], whatever this file now says.
                    let why = if tether_config::shell::answered_in_plain_tcp(&e) {
                        format!(
                            "the provider does not seem to serve TLS: was [tls] added to {} since it started? \
                             `tether-provider reload` applies it",
                            config.file.display()
                        )
                    } else {
                        format!(
                            "the provider must present the certificate of {}: if that file was replaced since the \
                             provider started or last reloaded, `tether-provider reload` makes it present the new one",
                            client.pinned_file.display()
                        )
                    };
                    anyhow::Error::new(e).context(format!("TLS handshake with {at} failed ({why})"))
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
    let welcome =
        client_handshake(&mut reader, &mut writer_half, &hello, &secret, proof, CLIENT_TIMEOUT).await.map_err(|e| {
            let hint = match &e {
                // The provider cannot say more without saying something about its secret.
                HandshakeError::Rejected(r) if r.reason == RejectReason::BadCredentials => format!(
                    " (if this is the provider, its running [writer] secret differs from the one {} names now: was \
                 the secret file changed without a reload? One trailing newline is not part of the secret)",
                    writer.secret_file.display()
                ),
                HandshakeError::Unproven => " (it runs a build older than this command, or is not the provider; \
                     nothing was sent: restart the provider on this build, or pass --allow-unproven to write to it \
                     anyway)"
                    .to_owned(),
                HandshakeError::Foreign(peer) if peer.kind() == Some(ForeignKind::Tls) && config.tls.is_none() => {
                    format!(
                        " (the provider serves TLS and {} has no [tls]: is it the running provider's file?)",
                        config.file.display()
                    )
                }
                // Connected, since the kernel takes connections into the listener's
                // backlog for the process, which did not go on to answer.
                HandshakeError::Timeout(_) => " (the connection was made, but the provider did not answer: stopped \
                     (SIGSTOP), hung, overloaded, or out of open files; its log says which)"
                    .to_owned(),
                _ => String::new(),
            };
            anyhow::Error::new(e).context(format!("handshake with {at}{hint}"))
        })?;
    if let Some((line, version)) = needs.filter(|(_, v)| *v > welcome.version) {
        bail!(
            "{file}:{line}: the record needs protocol version {version} (an increment:), and the provider at \
             {at} speaks version {}: it runs an older build than this command; restart it on this \
             build; nothing was written",
            welcome.version
        );
    }
    let mut report = WriteReport { applied: 0, last_csn: None };
    let mut interrupts = Interrupts::new()?;
    // How to go on from the record at `line`, none of it or after it having applied.
    let resume = |line: usize| match input.is_spooled() {
        true => "write the input again from this line".to_owned(),
        false => format!("tail -n +{line} {file} | tether-provider write -c {} -", config.file.display()),
    };
    for (id, record) in input.records(crate::input::RecordLimit::Write)?.enumerate() {
        let applied = report.applied;
        // Checked above; a file edited since then is refused from here on.
        let record =
            record.with_context(|| format!("the file changed since it was checked; {}", records_applied(applied)))?;
        let line = record.line();
        // The two ways a run stops short of its file besides a refusal: this record and
        // those after it known not applied, or this one's outcome unknown.
        let not_applied = |why: String| {
            anyhow::anyhow!(
                "{file}:{line}: {why}; {}; this record and those after it were not applied (to go on: {})",
                records_applied(applied),
                resume(line)
            )
        };
        let unknown = |why: String| {
            anyhow::anyhow!(
                "{file}:{line}: {why}; {}; the outcome of this record is unknown (search for it before writing it \
                 again)",
                records_applied(applied)
            )
        };
        if let Some(signal) = interrupts.received().await {
            return Err(not_applied(format!("interrupted ({signal}) before this record was sent")));
        }
        let sent = write_one(&mut reader, &mut writer_half, id as u64, record.into_change());
        let Some(outcome) = interrupts.unless_twice(sent).await else {
            return Err(unknown("interrupted twice, while the provider applied this record".to_owned()));
        };
        match outcome {
            // Every write a provider takes is answered before any goodbye (since
            // protocol version 3, by this build's rule): this one was not applied.
            Ok(Answer::Goodbye(reason, detail)) if welcome.version >= 3 => {
                let hint = match reason {
                    GoodbyeReason::CredentialsRevoked => format!(
                        " (the provider runs on with another [writer] secret: once {} holds it, write again)",
                        writer.secret_file.display()
                    ),
                    _ => String::new(),
                };
                let why = format!(
                    "the provider closed the session before applying this record ({}: {detail}){hint}",
                    reason.as_str()
                );
                return Err(not_applied(why));
            }
            Ok(Answer::Goodbye(reason, detail)) => {
                return Err(unknown(format!("the provider closed the session ({}: {detail})", reason.as_str())));
            }
            Ok(Answer::Outcome(WriteOutcome::Committed { csn, .. })) => {
                report.applied += 1;
                report.last_csn = Some(csn);
            }
            // The store failed under this record: it may be on disk or not, and the
            // provider stops, so the operator looks once it is back.
            Ok(Answer::Outcome(WriteOutcome::Refused { kind: WriteErrorKind::StoreFailed, message })) => bail!(
                "{}:{line}: the provider's store failed ({message}); {}; the outcome of this record is unknown \
                 (once the provider is back, search for it before writing it again)",
                file,
                records_applied(applied)
            ),
            Ok(Answer::Outcome(WriteOutcome::Refused { kind, message })) => {
                bail!("{}:{line}: refused ({}): {message}; {}", file, kind.as_str(), records_applied(applied))
            }
            // The record was sent, or about to be, when the session failed: it may have
            // committed without its answer arriving, and the operator must look before
            // sending it again.
            Err(e) => return Err(unknown(tether_config::shell::error_chain(&*e))),
        }
    }
    let _ =
        writer_half.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "write finished".into() }).await;
    Ok(report)
}

/// SIGINT, SIGTERM and SIGHUP during `write`'s sending. Killed at once, `write` said nothing,
/// and the operator could not tell where it stopped. The first signal lets the record
/// being applied get its answer and stops before the next one, naming its line; a
/// second one stops at once.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// A terminal closed or an SSH session dropped under a long `write`: stopped as
    /// the others stop it, not killed without a word (or a line to go on from).
    hup: tokio::signal::unix::Signal,
    /// The first signal, once received.
    first: Option<&'static str>,
}

impl Interrupts {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        Ok(Self { int, term, hup, first: None })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }

    /// The first signal, if one has come (a signal received meanwhile waits in its
    /// stream).
    async fn received(&mut self) -> Option<&'static str> {
        if self.first.is_none() {
            self.first = tokio::select! {
                biased;
                signal = self.next() => Some(signal),
                () = std::future::ready(()) => None,
            };
        }
        self.first
    }

    /// `work`'s output, or `None` if a second signal comes first.
    async fn unless_twice<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            if self.first.is_some() {
                return tokio::select! {
                    out = &mut work => Some(out),
                    _ = self.next() => None,
                };
            }
            tokio::select! {
                out = &mut work => return Some(out),
                signal = self.next() => {
                    tether_config::say!("{signal}: stopping once the provider has answered for the record it is applying (again to stop at once)");
                    self.first = Some(signal);
                }
            }
        }
    }
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

/// What the provider answered to one write.
enum Answer {
    /// The write's outcome.
    Outcome(WriteOutcome),
    /// A goodbye instead, with its reason and detail.
    Goodbye(GoodbyeReason, String),
}

/// Sends one change and waits for its answer.
async fn write_one(
    reader: &mut MessageReader<BoxedRead>,
    writer: &mut MessageWriter<BoxedWrite>,
    id: u64,
    change: Change,
) -> Result<Answer> {
    writer.send(&Message::WriteRequest { id, change }).await.context("sending")?;
    let reply = tokio::time::timeout(CLIENT_TIMEOUT, reader.recv()).await.with_context(|| {
        format!(
            "no answer from the provider within {}s (stopped with SIGSTOP, hung, or its disk stalled)",
            CLIENT_TIMEOUT.as_secs()
        )
    })??;
    match reply {
        Some(Message::WriteResult { id: got, outcome }) if got == id => Ok(Answer::Outcome(outcome)),
        Some(Message::Goodbye { reason, detail }) => {
            Ok(Answer::Goodbye(reason, tether_protocol::message::shown(detail)))
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

/// The port a provider whose `listen` has port 0 bound at its start, a free one the
/// system picked, which only the running provider can say (its status does): `write`
/// connected to port 0 itself and was refused.
async fn bound_port(config: &ProviderConfig) -> Result<u16> {
    let mut out = Vec::new();
    let request = ControlRequest::Status { json: true };
    let to = control::Process::Provider;
    if !control::call_from(&config.control, to, &config.file, &request, &mut out).await? {
        bail!(
            "{}: key 'listen': port 0 is a free port the provider picks as it starts, and nothing answers on {} to \
             say which: is the provider running?",
            config.file.display(),
            config.control.display()
        );
    }
    let status: serde_json::Value = serde_json::from_slice(&out).context("reading the running provider's status")?;
    let listen = status
        .get("listen")
        .and_then(serde_json::Value::as_str)
        .context("the running provider's status names no address it listens on")?;
    let bound: std::net::SocketAddr =
        listen.parse().with_context(|| format!("the running provider's status says it listens on {listen:?}"))?;
    Ok(bound.port())
}

/// The host `write` connects to for the provider's own `listen` host: a listener on
/// every interface is reached over the loopback of its family. `[::]` was reached as
/// 127.0.0.1, which a host with `net.ipv6.bindv6only = 1` (or a listener with
/// `IPV6_V6ONLY`) does not serve there: `write` was refused by its own provider.
fn own_listener_host(host: &str) -> &str {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1",
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "::1",
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tether_protocol::message::{Welcome, NONCE_LEN};
    use tether_protocol::HistoryId;

    use super::*;

    /// A listener on a free loopback port, a provider configuration in `dir` with a
    /// writer on that port, and an LDIF file of a modify and then an increment (line 6).
    async fn setup(dir: &Path) -> (tokio::net::TcpListener, u16, ProviderConfig, std::path::PathBuf) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let secret = dir.join("writer.key");
        std::fs::write(&secret, "a writer secret of enough length\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("provider.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\nsuffix = \"dc=example,dc=com\"\n\
                 [writer]\nsecret_file = \"writer.key\"\n"
            ),
        )
        .unwrap();
        let ldif = dir.join("changes.ldif");
        std::fs::write(
            &ldif,
            "dn: ou=a,dc=example,dc=com\nchangetype: modify\nreplace: description\ndescription: x\n\n\
             dn: ou=counters,dc=example,dc=com\nchangetype: modify\nincrement: uidNumber\nuidNumber: 1\n",
        )
        .unwrap();
        (listener, port, ProviderConfig::load(&config).unwrap(), ldif)
    }

    /// A stand-in for a provider of protocol `version` (before 3: it does not prove
    /// itself): answers one connection's handshake and returns the names of the messages
    /// it was sent after it (or after the challenge, if the client left there).
    async fn older_provider(listener: tokio::net::TcpListener, version: u16) -> Vec<&'static str> {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = connection::boxed_tcp(stream).unwrap();
        let Some(Message::Hello(hello)) = reader.recv().await.unwrap() else { panic!("no hello") };
        assert!(hello.versions.contains(&1), "a new build still speaks version 1: {:?}", hello.versions);
        writer.send(&Message::Challenge { nonce: [7; NONCE_LEN] }).await.unwrap();
        let mut received = Vec::new();
        match reader.recv().await {
            Ok(Some(Message::Auth { .. })) => {}
            Ok(Some(other)) => received.push(other.name()),
            _ => return received,
        }
        let welcome = Welcome {
            version,
            history: HistoryId([1; 16]),
            session_id: 1,
            keepalive_interval_ms: 5000,
            keepalive_timeout_ms: 20000,
        };
        writer.send(&Message::Welcome(welcome)).await.unwrap();
        // Everything the writer sends until it closes the connection.
        while let Ok(Some(msg)) = reader.recv().await {
            received.push(msg.name());
        }
        received
    }

    /// A provider of protocol version 1 cannot decode an increment and would close the
    /// session on it, after the records before it applied: `write` must find that out
    /// at the handshake and send nothing, even when told to take an unproven provider.
    #[tokio::test]
    async fn an_increment_for_a_provider_of_version_1_sends_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, port, config, ldif) = setup(tmp.path()).await;
        let old_provider = tokio::spawn(older_provider(listener, 1));

        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Optional).await.unwrap_err();
        let shown = format!("{}:6", ldif.display());
        assert_eq!(
            err.to_string(),
            format!(
                "{shown}: the record needs protocol version 2 (an increment:), and the provider at 127.0.0.1:{port} \
                 speaks version 1: it runs an older build than this command; restart it on this build; nothing was \
                 written"
            )
        );
        let received = old_provider.await.unwrap();
        assert!(received.iter().all(|name| *name != "write-request"), "sent to the old provider: {received:?}");
    }

    /// A run stopped before a record it has not applied (here a provider's goodbye in
    /// place of record 2's answer; Ctrl-C stops it the same way) names that record's
    /// line to go on from, and so does the command it gives for going on: a command one
    /// line off would skip the record, or send again the one before it, whose adds are
    /// then refused as `already-exists` (found by a mutation audit: the tests checked the
    /// line of the error's prefix, not the one in the command the operator copies).
    #[tokio::test]
    async fn a_run_stopped_before_a_record_gives_the_command_to_go_on_from_that_record_s_line() {
        use tether_protocol::handshake::{server_handshake, Admission};
        let tmp = tempfile::tempdir().unwrap();
        let (listener, _, config, ldif) = setup(tmp.path()).await;
        let secret = load_secret(&tmp.path().join("writer.key")).unwrap().secret;
        // Answers record 1, then says goodbye in place of record 2's answer.
        let provider = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut reader, mut writer) = connection::boxed_tcp(stream).unwrap();
            let admission = Admission {
                secret,
                history: HistoryId([1; 16]),
                session_id: 1,
                keepalive_interval: Duration::from_secs(5),
                keepalive_timeout: Duration::from_secs(20),
            };
            server_handshake(&mut reader, &mut writer, CLIENT_TIMEOUT, |_: &Hello| Ok(admission)).await.unwrap();
            let Some(Message::WriteRequest { id, .. }) = reader.recv().await.unwrap() else { panic!("no write") };
            let outcome = WriteOutcome::Committed { csn: Csn(7), uuid: tether_protocol::EntryUuid::new_time_ordered() };
            writer.send(&Message::WriteResult { id, outcome }).await.unwrap();
            let Some(Message::WriteRequest { .. }) = reader.recv().await.unwrap() else { panic!("no second write") };
            let detail = "the provider is shutting down".to_owned();
            writer.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail }).await.unwrap();
        });

        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        provider.await.unwrap();
        let shown = format!("{err:#}");
        assert!(shown.starts_with(&format!("{}:6: the provider closed the session", ldif.display())), "{shown}");
        assert!(shown.contains("1 record applied; this record and those after it were not applied"), "{shown}");
        let go_on = format!("(to go on: tail -n +6 {} | tether-provider write -c ", ldif.display());
        assert!(shown.contains(&go_on), "{shown}");
    }

    /// A provider whose `listen` has port 0 took a free port at its start: `write`
    /// connects to the port it bound, which its status says, where it connected to
    /// port 0 and was refused (`connecting to 127.0.0.1:0: is the provider running`).
    #[tokio::test]
    async fn a_write_to_a_provider_on_port_0_connects_to_the_port_it_bound() {
        use tether_protocol::control::StartedWith;
        let tmp = tempfile::tempdir().unwrap();
        let (listener, port, config, ldif) = setup(tmp.path()).await;
        let text = std::fs::read_to_string(&config.file).unwrap().replace(&format!(":{port}\""), ":0\"");
        std::fs::write(&config.file, text).unwrap();
        let config = ProviderConfig::load(&config.file).unwrap();
        assert_eq!(config.listen.port(), 0);
        // The running provider's control socket, which says where it listens.
        let dir = std::sync::Arc::new(tether_store::Directory::open(&config.data_dir, &config.suffix).unwrap());
        let (reload, _requests) = tokio::sync::mpsc::channel(1);
        let ctx = crate::control::ControlContext {
            dir,
            registry: crate::registry::Registry::default(),
            reload,
            config_file: StartedWith::new(&config.file),
            listen: listener.local_addr().unwrap(),
            served: tokio::sync::watch::channel(None).1,
            metrics_listen: None,
            backup_writer: crate::backup::writer::Writer::Here,
        };
        let (socket, _file) = tether_protocol::control::bind(&config.control, None).await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let control = tokio::spawn(crate::control::serve(socket, None, ctx, shutdown.clone()));
        let old_provider = tokio::spawn(older_provider(listener, 1));

        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Optional).await.unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains(&format!("the provider at 127.0.0.1:{port} speaks version 1")), "{shown}");
        old_provider.await.unwrap();
        shutdown.cancel();
        control.await.unwrap();
    }

    /// A provider that takes the connection and says nothing (stopped with SIGSTOP: the
    /// kernel still takes connections into its backlog) is said to be connected and
    /// silent once the handshake's time is up; one that stops answering after it, to
    /// have sent no answer in that time. The clock is paused, and runs on when idle.
    #[tokio::test(start_paused = true)]
    async fn a_provider_that_does_not_answer_is_said_to_have_been_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, port, config, ldif) = setup(tmp.path()).await;
        // Holds the connection, reading what comes, until the writer leaves.
        let stopped = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut Vec::new()).await;
            listener
        });
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = format!("{err:#}");
        let said = "(the connection was made, but the provider did not answer: stopped (SIGSTOP)";
        assert!(shown.contains(&format!("handshake with 127.0.0.1:{port} {said}")), "{shown}");

        // Past the handshake, no answer to the first record.
        let silent = tokio::spawn(older_provider(stopped.await.unwrap(), 2));
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Optional).await.unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("no answer from the provider within 30s (stopped with SIGSTOP"), "{shown}");
        assert_eq!(silent.await.unwrap(), ["write-request"]);
    }

    /// A writer secret that cannot be read is named as a start names it, with the file
    /// and the key that points to it (it named the secret's path alone).
    #[tokio::test]
    async fn a_writer_secret_that_cannot_be_read_names_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (_listener, _, config, ldif) = setup(tmp.path()).await;
        std::fs::remove_file(tmp.path().join("writer.key")).unwrap();
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = format!("{err:#}");
        let key = format!("{}: key 'writer.secret_file': ", config.file.display());
        assert!(shown.starts_with(&key), "{shown}");
        assert!(shown.contains("writer.key: cannot read secret file"), "{shown}");
    }

    /// A record the provider would refuse whatever it holds (a server-maintained
    /// attribute: the `entryUUID` of an exported entry) stops the file before anything
    /// is sent, rather than after the records before it applied.
    #[tokio::test]
    async fn a_record_with_an_entry_uuid_is_refused_before_anything_is_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, _, config, ldif) = setup(tmp.path()).await;
        // Nothing listens there: the check comes before the connection.
        drop(listener);
        std::fs::write(
            &ldif,
            "dn: ou=a,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: a\n\n\
             dn: ou=b,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: b\n\
             entryUUID: 0190c4e4-3b2a-7c1d-8e9f-0a1b2c3d4e5f\n",
        )
        .unwrap();
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("{}:6: refused: ", ldif.display())), "{shown}");
        assert!(shown.contains("entryUUID is maintained by the server"), "{shown}");
        assert!(shown.ends_with("nothing was written"), "{shown}");
    }

    /// A malformed record stops the file in the check, before anything is sent, and says
    /// so as the other refusals of the check do; an IPv6 `listen` is named in brackets.
    #[tokio::test]
    async fn a_malformed_record_says_nothing_was_written_and_an_ipv6_address_is_bracketed() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, _, config, ldif) = setup(tmp.path()).await;
        drop(listener);
        std::fs::write(&ldif, "dn: ou=a,dc=example,dc=com\nchangetype: modfy\n").unwrap();
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.starts_with(&format!("{}:2: ", ldif.display())), "{shown}");
        assert!(shown.ends_with("; nothing was written"), "{shown}");

        // Nothing listens on port 1 of the IPv6 loopback.
        let text = std::fs::read_to_string(&config.file).unwrap();
        let listen = text.lines().find(|l| l.starts_with("listen")).unwrap();
        std::fs::write(&config.file, text.replace(listen, "listen = \"[::1]:1\"")).unwrap();
        let config = ProviderConfig::load(&config.file).unwrap();
        std::fs::write(&ldif, "dn: ou=a,dc=example,dc=com\nchangetype: delete\n").unwrap();
        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("connecting to [::1]:1: "), "{err:#}");
    }

    /// A listener on every interface is reached over the loopback of its own family:
    /// `[::]` over `::1`, which a host with `net.ipv6.bindv6only = 1` serves while it
    /// does not serve 127.0.0.1 there.
    #[test]
    fn a_listener_on_every_interface_is_reached_over_the_loopback_of_its_family() {
        assert_eq!(own_listener_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(own_listener_host("::"), "::1");
        assert_eq!(own_listener_host("0:0::0"), "::1");
        for host in ["127.0.0.1", "::1", "192.0.2.7", "2001:db8::7", "provider.example.com"] {
            assert_eq!(own_listener_host(host), host);
        }
    }

    /// A provider listening on `[::]` is written to over `::1`: here only `::1` is
    /// listened on, as 127.0.0.1 is not with `net.ipv6.bindv6only = 1`.
    #[tokio::test]
    async fn a_write_to_a_listener_on_every_ipv6_address_connects_over_ipv6() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, _, config, ldif) = setup(tmp.path()).await;
        drop(listener);
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let text = std::fs::read_to_string(&config.file).unwrap();
        let listen = text.lines().find(|l| l.starts_with("listen")).unwrap();
        std::fs::write(&config.file, text.replace(listen, &format!("listen = \"[::]:{port}\""))).unwrap();
        let config = ProviderConfig::load(&config.file).unwrap();
        let old_provider = tokio::spawn(older_provider(listener, 2));

        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains(&format!("handshake with [::1]:{port}")), "{shown}");
        assert!(shown.contains("nothing was sent"), "{shown}");
        old_provider.abort();
    }

    /// Without `--allow-unproven`, a provider that does not prove it knows the writer
    /// secret gets nothing: not the MAC, not a record; the error says what to do.
    #[tokio::test]
    async fn a_provider_that_does_not_prove_itself_is_sent_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (listener, port, config, ldif) = setup(tmp.path()).await;
        let old_provider = tokio::spawn(older_provider(listener, 2));

        let err = write(&config, &Input::open(&ldif).unwrap(), ProviderProof::Required).await.unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains(&format!("handshake with 127.0.0.1:{port}")), "{shown}");
        assert!(shown.contains("nothing was sent") && shown.contains("--allow-unproven"), "{shown}");
        assert_eq!(old_provider.await.unwrap(), Vec::<&str>::new(), "not even the MAC was sent");
    }
}
