//! The accept loop: admits connections up to the limit, runs the TLS handshake (when
//! `[tls]` is set) and then the Tether handshake under one deadline, and hands each
//! authenticated connection to a consumer or write session.
//!
//! Every connection task is tracked and holds a child of the server's shutdown token,
//! so one cancellation makes each session say goodbye and the server waits for all of
//! them. A failed handshake or a protocol error closes that one connection, logged with
//! its peer and reason, and touches nothing else.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use tether_config::info_or_debug;
use tether_protocol::auth::Secret;
use tether_protocol::connection::{self, BoxedRead, BoxedWrite, MessageReader, MessageWriter};
use tether_protocol::foreign::ForeignKind;
use tether_protocol::handshake::{server_handshake, Admission, HandshakeError, Limit};
use tether_protocol::message::{shown, GoodbyeReason, Hello, Message, Mode, Reject, RejectReason, Role};
use tether_protocol::Dn;
use tether_store::Directory;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::handshakes::Handshakes;
use crate::probe::{self, Watched};
use crate::registry::{rfc3339, Registration, Registry, SessionInfo};
use crate::session::{self, ConsumerRequest, SessionEnd, SessionParams};
use crate::session_ids::SessionIds;
use crate::throttle::Throttle;

/// Who may connect: agreement secrets and widest bases, and the writer secret.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Agreement name -> (secret, widest base it may ask for).
    pub agreements: std::collections::HashMap<String, (Secret, Dn)>,
    /// The write clients' secret, if writes are enabled.
    pub writer: Option<Secret>,
}

/// Server settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerParams {
    /// Most connections at once (handshaking or in session).
    pub max_connections: usize,
    /// Deadline for a complete handshake.
    pub handshake_timeout: Duration,
    /// Largest frame read from a client after its handshake (`max_frame`); the
    /// handshake itself is held to less.
    pub max_frame: usize,
    /// Session tuning.
    pub session: SessionParams,
}

/// The replication server.
#[derive(Debug, Clone)]
pub struct Server {
    /// The store.
    dir: Arc<Directory>,
    /// Current grants; replaced on reload.
    grants: Arc<RwLock<Grants>>,
    /// Live sessions.
    registry: Registry,
    /// Settings.
    params: ServerParams,
    /// Cancelled on shutdown.
    shutdown: CancellationToken,
    /// Tracks every connection task.
    tracker: TaskTracker,
    /// Session ids, unique across restarts.
    session_ids: Arc<SessionIds>,
    /// Caps concurrent connections.
    slots: Arc<Semaphore>,
    /// The connections holding a slot still in their handshake, whose slots a
    /// connection over the limit takes (from the source holding the most) rather than
    /// being refused.
    handshakes: Arc<Handshakes>,
    /// TLS settings from `[tls]`, `None` for plain TCP; replaced on reload, so a renewed
    /// certificate takes effect for new connections without a restart.
    tls: Arc<RwLock<Option<Arc<ServerConfig>>>>,
    /// Warnings of connections refused over the limit and of failed handshakes (TLS's
    /// too): anyone who reaches the port can cause them in a loop.
    noise: Arc<Throttle>,
}

/// Logs a warning a stranger can cause through `throttle`, at most one a second per kind
/// (`kind`, or the message itself), with the number of that kind held back since
/// (`held_back`). On tokio's clock, which the deterministic simulation drives.
macro_rules! throttled_warn {
    ($throttle:expr, kind = $kind:expr, $message:literal $(, $($field:tt)+)?) => {
        if let Some(held_back) = $throttle.admit($kind, Instant::now().into_std()) {
            if held_back == 0 {
                warn!($($($field)+,)? $message);
            } else {
                warn!($($($field)+,)? held_back, $message);
            }
        }
    };
    ($throttle:expr, $message:literal $(, $($field:tt)+)?) => {
        if let Some(held_back) = $throttle.admit($message, Instant::now().into_std()) {
            if held_back == 0 {
                warn!($($($field)+,)? $message);
            } else {
                warn!($($($field)+,)? held_back, $message);
            }
        }
    };
}

/// The kind a failed handshake's warning is throttled as: its cause without what a
/// stranger can vary (the bytes it sent, a length, an agreement or base it made up),
/// so that a flood of junk is a few kinds, not a new one for each connection filling
/// the table. A bad secret keeps its detail, which names an agreement of the
/// configuration (or the writer): one consumer's refusal is not held back by another's.
fn noise_kind(e: &HandshakeError) -> String {
    use tether_protocol::connection::WireError;
    match e {
        HandshakeError::Refused(reject) if reject.reason == RejectReason::BadCredentials => {
            format!("refused: {}: {}", reject.reason, reject.detail)
        }
        HandshakeError::Refused(reject) => format!("refused: {}", reject.reason),
        HandshakeError::Goodbye { reason, .. } => format!("goodbye: {reason}"),
        HandshakeError::Foreign(peer) => format!("foreign: {:?}", peer.kind()),
        HandshakeError::Timeout(_) => "timeout".to_owned(),
        HandshakeError::Wire(WireError::Io(io)) => format!("i/o: {:?}", io.kind()),
        HandshakeError::Wire(WireError::FrameTooLarge { .. }) => "frame too large".to_owned(),
        HandshakeError::Wire(WireError::TruncatedFrame { .. }) => "truncated frame".to_owned(),
        HandshakeError::Wire(WireError::Decode(_)) => "undecodable message".to_owned(),
        other => other.to_string(),
    }
}

/// The kind a failed TLS handshake's warning is throttled as: its cause (an alert the
/// client sent, such as `UnknownCA` from a consumer that does not trust the
/// certificate, or bytes that are not TLS), so that a stranger's junk does not hold back
/// a consumer's refusal. rustls words its errors from a fixed set of causes; the length
/// bound keeps anything else from growing the table by much.
fn tls_kind(e: &std::io::Error) -> String {
    let mut kind = format!("TLS handshake failed: {e}");
    if kind.len() > 120 {
        let end = (0..=120).rev().find(|&i| kind.is_char_boundary(i)).unwrap_or(0);
        kind.truncate(end);
    }
    kind
}

impl Server {
    /// Creates a server; nothing runs until [`Server::serve`]. With `tls`, every
    /// connection is TLS.
    pub fn new(
        dir: Arc<Directory>,
        grants: Grants,
        tls: Option<Arc<ServerConfig>>,
        params: ServerParams,
        shutdown: CancellationToken,
    ) -> Self {
        let session_ids = Arc::new(SessionIds::new(dir.clone()));
        Self {
            dir,
            grants: Arc::new(RwLock::new(grants)),
            registry: Registry::default(),
            params,
            shutdown,
            tracker: TaskTracker::new(),
            session_ids,
            slots: Arc::new(Semaphore::new(params.max_connections)),
            handshakes: Arc::default(),
            tls: Arc::new(RwLock::new(tls)),
            noise: Arc::default(),
        }
    }

    /// Replaces the TLS settings for connections accepted from now on; sessions already
    /// running keep theirs.
    /// Returns whether TLS was on before.
    pub fn replace_tls(&self, tls: Option<Arc<ServerConfig>>) -> bool {
        std::mem::replace(&mut *self.tls.write().unwrap_or_else(|p| p.into_inner()), tls).is_some()
    }

    /// The live-session registry (for status).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Replaces the grants and ends, with goodbye `credentials-revoked`, the sessions
    /// whose agreement was removed or got another secret, and those whose base the
    /// agreement's new base no longer covers. A widened base (or one narrowed but still
    /// above a session's) leaves the session alone: ending it would close the consumer's
    /// agreement until an operator started it again. Returns how many ended.
    pub fn replace_grants(&self, new: Grants) -> usize {
        let old = std::mem::replace(&mut *self.grants.write().unwrap_or_else(|p| p.into_inner()), new.clone());
        self.registry.revoke(|info| revoked(&old, &new, info), GoodbyeReason::CredentialsRevoked)
    }

    /// Registers the session `info` authenticated under `granted`, and revokes it at
    /// once if a reload replaced those grants meanwhile with ones that do not keep it.
    /// [`Server::replace_grants`] ends only the sessions registered when it runs, and a
    /// handshake checks the grants read before it began: without this, a session whose
    /// handshake a reload overtook (its agreement removed, its secret changed) ran on
    /// under the old grant for as long as it stayed connected. Registered first, then
    /// compared: a reload either finds the session registered or is seen here.
    fn register_under(&self, info: SessionInfo, granted: &Grants) -> Registration {
        let session_id = info.session_id;
        let reg = self.registry.register(info, &self.shutdown);
        let now = self.grants.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.registry.revoke(
            |info| info.session_id == session_id && revoked(granted, &now, info),
            GoodbyeReason::CredentialsRevoked,
        );
        reg
    }

    /// Accepts connections until shutdown, then waits for every session to finish.
    pub async fn serve(&self, listener: TcpListener) {
        let mut held_back = tokio::time::interval(crate::throttle::EVERY);
        held_back.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = held_back.tick() => {
                    for (kind, held_back) in self.noise.overdue(Instant::now().into_std()) {
                        warn!(kind, held_back, "warnings held back since the last line of this kind");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let peer = canonical(peer);
                        let this = self.clone();
                        let span = info_span!("connection", %peer);
                        self.tracker.spawn(async move { this.handle(stream, peer).await }.instrument(span));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, keep
                        // serving, and say so once a second, not at every retry.
                        let why = tether_protocol::control::accept_failure(&e);
                        throttled_warn!(self.noise, kind = "accept failed", "accept failed", error = %why);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    async fn handle(self, stream: TcpStream, peer: SocketAddr) {
        let session = self.params.session;
        if session.keepalive_enabled {
            let (interval, timeout) = (session.keepalive_interval, session.keepalive_timeout);
            if let Err(e) = connection::tune_tcp(&stream, timeout, interval) {
                debug!(error = %e, "could not set TCP keepalive options");
            }
        }
        let _ = stream.set_nodelay(true);
        self.handle_with(stream, peer, connection::boxed_tcp).await;
    }

    /// Serves one connection over any byte stream (the deterministic simulation feeds
    /// turmoil's streams here): TLS if configured, handshake, then the session. Track
    /// the returned future as [`Server::serve`] does if shutdown must wait for it.
    pub async fn handle_stream<S>(self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.handle_with(stream, peer, |s| Ok(connection::boxed(s))).await;
    }

    /// `plain` splits the stream when no TLS is configured.
    async fn handle_with<S, P>(self, stream: S, peer: SocketAddr, plain: P)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        P: FnOnce(S) -> std::io::Result<(MessageReader<BoxedRead>, MessageWriter<BoxedWrite>)>,
    {
        let peer = canonical(peer);
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => self.slot_of_a_handshake(peer).await,
        };
        // Listed until its handshake ends, so that a connection over the limit can take
        // its slot; then it is a session's, which nothing takes.
        let pending = slot.as_ref().map(|_| self.handshakes.begin(peer.ip()));
        let taken = pending.as_ref().map(|p| p.taken().clone()).unwrap_or_default();
        // One deadline for TLS and Tether handshakes together; a connection over the
        // limit only gets as long as its refusal may take.
        let limit = if slot.is_some() { self.params.handshake_timeout } else { REFUSE_GRACE };
        let deadline = Instant::now() + limit;
        let Ok(transport) = unless_cut(&taken, &self.shutdown, self.transport(stream, deadline, plain)).await else {
            return;
        };
        let Some((mut reader, mut writer, tls)) = transport else { return };
        reader.set_max_frame(self.params.max_frame);
        let Some(_slot) = slot else {
            throttled_warn!(self.noise, "connection limit reached; refusing");
            refuse(&mut writer, RejectReason::TooManyConnections, "connection limit reached").await;
            return;
        };
        let session_id = self.session_ids.next().await;
        let grants = self.grants.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (dir, params) = (self.dir.clone(), self.params);
        // The configured agreement the client asked for, named by the warning if its
        // handshake fails, so a search of the log by agreement finds its refusals (a
        // name the configuration does not hold is a stranger's, quoted in the refusal).
        let mut asked: Option<String> = None;
        let authorize = |hello: &Hello| {
            asked = configured_agreement(&grants, hello);
            authorize(&grants, &dir, hello, session_id, params.session)
        };
        let handshake = server_handshake(&mut reader, &mut writer, Limit::shared(deadline, limit), authorize);
        let handshake = match unless_cut(&taken, &self.shutdown, handshake).await {
            Ok(handshake) => handshake,
            Err(Cut::Taken) => {
                // Told, so that a client's status says why (a silent flood reads nothing,
                // and the refusal waits in its socket's buffer, not here).
                let detail = "connection limit reached: a connection from a source holding fewer handshakes took \
                              this one's slot";
                refuse(&mut writer, RejectReason::TooManyConnections, detail).await;
                return;
            }
            // Closed: a provider says no goodbye in a handshake, and the client retries.
            Err(Cut::Shutdown) => return,
        };
        drop(pending);
        let accepted = match handshake {
            Ok(a) => a,
            Err(HandshakeError::Foreign(peer)) if peer.kind() == Some(ForeignKind::Tls) => {
                throttled_warn!(
                    self.noise,
                    "handshake failed: the client speaks TLS and this provider has no [tls]",
                    error = %peer
                );
                return;
            }
            Err(HandshakeError::Closed { heard: false, .. }) => {
                debug!("{}", probe::PROBE);
                return;
            }
            Err(e) => {
                match &asked {
                    Some(agreement) => {
                        throttled_warn!(self.noise, kind = &noise_kind(&e), "handshake failed", agreement = %agreement, error = %e)
                    }
                    None => throttled_warn!(self.noise, kind = &noise_kind(&e), "handshake failed", error = %e),
                }
                return;
            }
        };
        let (hello, version) = (accepted.hello, accepted.welcome.version);
        match ConsumerRequest::from_hello(&hello, version) {
            Some(req) => {
                let span =
                    info_span!("session", agreement = %req.agreement, session = session_id, consumer = %req.client_id);
                async {
                    // A refresh-only consumer connects at every poll: what its session
                    // sends says whether it was routine (see `session::run`).
                    let polling = req.mode == Mode::RefreshOnly;
                    info_or_debug!(polling, mode = req.mode.as_str(), cookie = %req.cookie.map_or_else(|| "none".to_owned(), |c| c.to_string()), version, "consumer session started");
                    let info = SessionInfo {
                        session_id,
                        peer: peer.to_string(),
                        agreement: req.agreement.clone(),
                        client: req.client_id.clone(),
                        mode: req.mode.as_str().to_owned(),
                        cookie: req.cookie.map(|c| c.to_string()),
                        lag_changes: 0,
                        lag_seconds: None,
                        queue_len: 0,
                        connected_since: rfc3339(SystemTime::now()),
                        refresh: None,
                        tls,
                        protocol_version: version,
                        base: Some(req.spec.base.clone()),
                    };
                    let twins = self.registry.same_consumer_elsewhere(&req.agreement, &req.client_id, peer);
                    if !twins.is_empty() {
                        warn!(
                            open = %twins.join(", "),
                            "this consumer id is that of a session of this agreement open from another host: two \
                             consumers share one identity, a copy of one's data_dir run at the same path on another \
                             host (a cloned VM or image; or one consumer whose address changed, if the other session \
                             ends within keepalive.timeout). Their positions overwrite each other, so trimming may \
                             pass the slower one and cost it a present refresh: give the copy its own identity (stop \
                             it, delete consumer.id in its data_dir, start it)"
                        );
                    }
                    let reg = self.register_under(info, &grants);
                    let end = session::run(self.dir.clone(), reader, writer, req, reg, self.params.session).await;
                    let routine = polling && end == SessionEnd::Goodbye(GoodbyeReason::RefreshComplete);
                    if matches!(end, SessionEnd::StoreError(_)) {
                        // Not the consumer's doing, nor the network's: the operator's.
                        error!(%end, "consumer session ended");
                    } else if matches!(end, SessionEnd::ProtocolError(_)) {
                        // A bug in the consumer, or a peer that is not one: for alerting.
                        warn!(%end, "consumer session ended");
                    } else {
                        info_or_debug!(routine, %end, "consumer session ended");
                    }
                }
                .instrument(span)
                .await;
            }
            None => {
                let span = info_span!("session", agreement = %WRITER, session = session_id, client = %hello.client_id);
                async {
                    info!("write client connected");
                    let info = SessionInfo {
                        session_id,
                        peer: peer.to_string(),
                        agreement: WRITER.to_owned(),
                        client: hello.client_id.clone(),
                        mode: WRITER.to_owned(),
                        cookie: None,
                        lag_changes: 0,
                        lag_seconds: None,
                        queue_len: 0,
                        connected_since: rfc3339(SystemTime::now()),
                        refresh: None,
                        tls,
                        protocol_version: version,
                        base: None,
                    };
                    let reg = self.register_under(info, &grants);
                    let idle = self.params.session.keepalive_timeout;
                    let revoked = || reg.revocation();
                    crate::writes::run(self.dir.clone(), reader, writer, reg.cancel.clone(), revoked, idle).await;
                    info!("write client left");
                }
                .instrument(span)
                .await;
            }
        }
    }

    /// A slot for a connection from `peer` over the limit: that of a connection still
    /// in its handshake from the source holding the most, which ends (see
    /// [`crate::handshakes`]); `None` if `peer`'s source holds as many, if every slot is a
    /// session's, or if another connection took the slot freed first.
    async fn slot_of_a_handshake(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        if !self.handshakes.take_for(peer.ip()) {
            return None;
        }
        throttled_warn!(
            self.noise,
            "connection limit reached: ended a handshake of the source holding the most to admit this connection"
        );
        tokio::time::timeout(REFUSE_GRACE, self.slots.clone().acquire_owned()).await.ok()?.ok()
    }

    /// The connection's byte stream as message halves: plain TCP, or TLS after a server
    /// handshake finished by `deadline`. `None` (logged) if TLS failed: that connection
    /// is closed and nothing else is touched.
    async fn transport<S, P>(
        &self,
        stream: S,
        deadline: Instant,
        plain: P,
    ) -> Option<(MessageReader<BoxedRead>, MessageWriter<BoxedWrite>, bool)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        P: FnOnce(S) -> std::io::Result<(MessageReader<BoxedRead>, MessageWriter<BoxedWrite>)>,
    {
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tls) = tls else {
            let (reader, writer) = plain(stream).map_err(|e| warn!(error = %e, "connection setup failed")).ok()?;
            return Some((reader, writer, false));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (stream, heard) = Watched::new(stream);
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let (reader, writer) = connection::boxed(stream);
                Some((reader, writer, true))
            }
            Ok(Err(e)) if probe::is_close(&e) && !heard.load(Ordering::Relaxed) => {
                debug!("{}", probe::PROBE);
                None
            }
            // A client gone before the handshake's end (stopping, or a probe that only
            // connects) is said in words rather than as rustls' "tls handshake eof".
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                throttled_warn!(self.noise, "TLS handshake failed: the client closed the connection during it");
                None
            }
            Ok(Err(e)) => {
                throttled_warn!(self.noise, kind = &tls_kind(&e), "TLS handshake failed", error = %e);
                None
            }
            Err(_) => {
                throttled_warn!(self.noise, "TLS handshake did not complete within the handshake deadline");
                None
            }
        }
    }
}

/// Whether replacing grants `old` by `new` takes away the grant the session `info` was
/// let in under: its agreement removed, or given another secret, or a base that no
/// longer covers the session's; for a write client, the writer secret changed or
/// removed.
fn revoked(old: &Grants, new: &Grants, info: &SessionInfo) -> bool {
    if info.agreement == WRITER {
        return old.writer != new.writer && old.writer.is_some();
    }
    match (old.agreements.get(&info.agreement), new.agreements.get(&info.agreement)) {
        (_, None) => true,
        (Some((old_secret, _)), Some((new_secret, new_base))) => {
            old_secret != new_secret || !info.base.as_ref().is_some_and(|base| base.is_descendant_of(new_base))
        }
        (None, Some(_)) => false,
    }
}

/// The agreement name sessions of write clients are listed under.
pub const WRITER: &str = tether_config::WRITER_AGREEMENT;
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a refusal may take to send.
const REFUSE_GRACE: Duration = Duration::from_secs(1);

/// `peer` with an IPv4 client's address as IPv4: a listener on `[::]` accepts IPv4
/// clients as IPv4-mapped IPv6 addresses, which were logged, listed by `status` and
/// counted against the handshake limit as `[::ffff:127.0.0.1]:55350`, so the same
/// client read as two sources on a dual-stack host and a search of the log for its
/// address missed it.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// Why a connection's handshake ended before it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A connection over the limit took its slot.
    Taken,
    /// The provider is shutting down.
    Shutdown,
}

/// `work`, or why it was cut short: `taken` is cancelled once a connection over the
/// limit took this one's slot during its handshake, which ends here and frees the slot
/// (once the caller has said so, if it can); `shutdown` once the provider stops, which
/// waits for every connection task and would otherwise wait out the handshake's deadline
/// of a client that went silent in it (the whole shutdown has no more than that).
async fn unless_cut<T>(
    taken: &CancellationToken,
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Cut> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {
            debug!("handshake ended: the provider is shutting down");
            Err(Cut::Shutdown)
        }
        _ = taken.cancelled() => {
            debug!("handshake ended: a newer connection over the limit took its slot");
            Err(Cut::Taken)
        }
        done = work => Ok(done),
    }
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(writer: &mut MessageWriter<W>, reason: RejectReason, detail: &str) {
    let msg = Message::Reject(Reject::new(reason, detail));
    let _ = tokio::time::timeout(REFUSE_GRACE, writer.send(&msg)).await;
}

/// The agreement of the configuration `hello` asks for (`writer` for a writer), if the
/// configuration holds it.
fn configured_agreement(grants: &Grants, hello: &Hello) -> Option<String> {
    match &hello.role {
        Role::Consumer { agreement, .. } => grants.agreements.contains_key(agreement).then(|| agreement.clone()),
        Role::Writer => Some("writer".to_owned()),
    }
}

/// Decides whether `hello` may proceed, and with which secret.
fn authorize(
    grants: &Grants,
    dir: &Directory,
    hello: &Hello,
    session_id: u64,
    params: SessionParams,
) -> Result<Admission, Reject> {
    let secret = match &hello.role {
        Role::Consumer { agreement, spec, .. } => {
            let Some((secret, widest)) = grants.agreements.get(agreement) else {
                return Err(Reject::new(RejectReason::UnknownAgreement, format!("no agreement named {agreement:?}")));
            };
            if !spec.is_within(widest) {
                // The base is a stranger's text, logged with the refusal before anything
                // is proved: a DN escapes only ASCII controls, so it is shown as a
                // peer's text is (line separators and bidirectional overrides escaped,
                // cut at 1 KiB), not as it came.
                let base = shown(spec.base.to_string());
                return Err(Reject::new(
                    RejectReason::ScopeNotAllowed,
                    format!("base {base} is outside {widest} allowed for {agreement:?}"),
                ));
            }
            secret.clone()
        }
        Role::Writer => match &grants.writer {
            Some(secret) => secret.clone(),
            None => return Err(Reject::new(RejectReason::UnknownAgreement, "writes are not enabled on this provider")),
        },
    };
    Ok(Admission {
        secret,
        history: dir.history(),
        session_id,
        keepalive_interval: params.keepalive_interval,
        keepalive_timeout: params.keepalive_timeout,
    })
}

/// Settings for a server under test: long keepalives, so that only what a test does
/// ends a session.
#[cfg(test)]
pub(crate) fn test_params() -> ServerParams {
    ServerParams {
        max_connections: 4,
        handshake_timeout: Duration::from_secs(10),
        max_frame: 1 << 20,
        session: SessionParams {
            batch_size: 10,
            queue_len: 16,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            keepalive_enabled: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use tether_protocol::foreign::ForeignPeer;

    use super::*;

    /// Junk varies in what it sends, and is still one kind for the throttle; a bad
    /// secret is a kind per agreement of the configuration.
    #[test]
    fn a_handshake_failure_s_kind_leaves_out_what_a_stranger_varies() {
        let junk = |prefix: &[u8; 4]| {
            let peer = ForeignPeer::from_first_frame_len(u32::from_be_bytes(*prefix) as usize).unwrap();
            noise_kind(&HandshakeError::Foreign(peer))
        };
        assert_eq!(junk(b"\xf1\x02\x03\x04"), junk(b"\xe9\x99\x00\x01"));
        assert_ne!(junk(b"GET "), junk(b"\xf1\x02\x03\x04"), "an HTTP probe is a kind of its own");
        let refused = |reason, detail: &str| noise_kind(&HandshakeError::Refused(Reject::new(reason, detail)));
        assert_eq!(
            refused(RejectReason::UnknownAgreement, "no agreement named \"a1\""),
            refused(RejectReason::UnknownAgreement, "no agreement named \"zz9\"")
        );
        assert_ne!(
            refused(RejectReason::BadCredentials, "authentication failed for agreement \"people\""),
            refused(RejectReason::BadCredentials, "authentication failed for agreement \"groups\"")
        );
        let wire = |len| noise_kind(&HandshakeError::Wire(connection::WireError::FrameTooLarge { len, max: 16 }));
        assert_eq!(wire(17), wire(1 << 20));
    }

    /// A stranger's refusal is logged (`handshake failed error=refused the client: ...`)
    /// before it has proved anything, and the region of a `Hello` naming an agreement
    /// (names are not secret) is the stranger's text: its base must reach the log as
    /// `shown` text is, with the characters that break a line or reorder it escaped
    /// (a DN escapes only ASCII controls) and cut, not as it came.
    #[test]
    fn a_stranger_s_base_is_refused_in_words_that_cannot_forge_the_log() {
        use tether_protocol::SearchSpec;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let allowed = Dn::parse("ou=people,dc=example,dc=com").unwrap();
        let mut grants = Grants::default();
        grants.agreements.insert("people".into(), (Secret::new("s").unwrap(), allowed));
        let forged = "x\u{2028}2026-12-02T21:00:00Z  INFO provider reload done\u{202e}\u{85}";
        let base = Dn::parse(&format!("cn={forged}{},dc=elsewhere", "y".repeat(4096))).unwrap();
        let role = Role::Consumer {
            agreement: "people".into(),
            mode: Mode::RefreshOnly,
            cookie: None,
            spec: SearchSpec::subtree(base),
            resume: None,
        };
        let hello = Hello { versions: vec![tether_protocol::PROTOCOL_VERSION], client_id: "c".into(), role };
        let Err(reject) = authorize(&grants, &dir, &hello, 1, test_params().session) else { panic!("admitted") };
        assert_eq!(reject.reason, RejectReason::ScopeNotAllowed);
        let logged = HandshakeError::Refused(reject).to_string();
        for c in ['\u{2028}', '\u{202e}', '\u{85}'] {
            assert!(!logged.contains(c), "{c:?} reaches the log as it came: {logged:?}");
        }
        assert!(logged.len() < 1_500, "a base of {} bytes is logged whole", logged.len());
        assert!(logged.contains("outside ou=people,dc=example,dc=com allowed for \"people\""), "{logged}");
    }

    /// A reload ends exactly the sessions whose grant it took away: an agreement removed,
    /// given another secret, or a base that no longer covers the session's; for a write
    /// client, the writer secret changed or `[writer]` removed. An unchanged or widened
    /// grant ends nothing (it would close the consumer's agreement until `start`).
    #[test]
    fn a_reload_revokes_exactly_the_sessions_whose_grant_it_took_away() {
        const PEOPLE: &str = "ou=people,dc=example,dc=com";
        let grants = |agreements: &[(&str, &str, &str)], writer: Option<&str>| Grants {
            agreements: agreements
                .iter()
                .map(|(name, secret, base)| {
                    ((*name).to_owned(), (Secret::new(*secret).unwrap(), Dn::parse(base).unwrap()))
                })
                .collect(),
            writer: writer.map(|w| Secret::new(w).unwrap()),
        };
        let old = grants(&[("people", "s1", PEOPLE)], Some("w1"));
        let mut reader = SessionInfo::for_test(1, "127.0.0.1:40000", "people", "c1");
        reader.base = Some(Dn::parse(PEOPLE).unwrap());
        let writer = SessionInfo::for_test(2, "127.0.0.1:40001", WRITER, "w");
        let cases = [
            (grants(&[("people", "s1", PEOPLE)], Some("w1")), (false, false), "nothing changed"),
            (grants(&[("people", "s1", "dc=example,dc=com")], Some("w1")), (false, false), "a widened base"),
            (grants(&[("people", "s1", &format!("ou=staff,{PEOPLE}"))], Some("w1")), (true, false), "a narrowed base"),
            (grants(&[("people", "s2", PEOPLE)], Some("w1")), (true, false), "another secret"),
            (grants(&[], Some("w1")), (true, false), "the agreement removed"),
            (grants(&[("people", "s1", PEOPLE)], Some("w2")), (false, true), "another writer secret"),
            (grants(&[("people", "s1", PEOPLE)], None), (false, true), "[writer] removed"),
        ];
        for (new, expected, change) in cases {
            assert_eq!((revoked(&old, &new, &reader), revoked(&old, &new, &writer)), expected, "{change}");
        }
    }

    /// A reload that changes the writer's secret while a writer is in its handshake: the
    /// handshake was checked against the grants read before it, and the session that
    /// follows must not outlive the grant the reload took away.
    #[tokio::test]
    async fn a_session_whose_grant_a_reload_took_away_during_its_handshake_is_revoked() {
        use tether_protocol::auth::{compute_mac, new_nonce};
        use tether_protocol::PROTOCOL_VERSION;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let old = Secret::new("old secret").unwrap();
        let grants = Grants { agreements: Default::default(), writer: Some(old.clone()) };
        let server = Server::new(dir, grants, None, test_params(), CancellationToken::new());
        let (client, provider) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(server.clone().handle_stream(provider, "127.0.0.1:40000".parse().unwrap()));
        let (mut reader, mut writer) = connection::split(client);

        let hello = Hello { versions: vec![PROTOCOL_VERSION], client_id: "w".into(), role: Role::Writer };
        writer.send(&Message::Hello(hello.clone())).await.unwrap();
        let Some(Message::MutualChallenge { nonce }) = reader.recv().await.unwrap() else { panic!("no challenge") };
        // The reload: the writer's secret changes while this client proves the old one.
        let new = Grants { agreements: Default::default(), writer: Some(Secret::new("new secret").unwrap()) };
        server.replace_grants(new);
        let mac = compute_mac(&old, &nonce, &hello).unwrap();
        writer.send(&Message::MutualAuth { mac, nonce: new_nonce().unwrap() }).await.unwrap();
        assert!(matches!(reader.recv().await.unwrap(), Some(Message::ProvenWelcome { .. })));

        let next = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await;
        assert!(
            matches!(next, Ok(Ok(Some(Message::Goodbye { reason: GoodbyeReason::CredentialsRevoked, .. })))),
            "the session outlived the grant the reload took away: {next:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
    }

    /// A connection that stops answering in its handshake (a probe, a stalled client)
    /// must not hold the provider's shutdown for its handshake's deadline: the server
    /// waits for every connection task, and the daemon gives the whole shutdown no more
    /// than the default deadline, after which it stops "anyway" with a warning.
    #[tokio::test]
    async fn a_connection_silent_in_its_handshake_does_not_hold_up_shutdown() {
        use tether_protocol::PROTOCOL_VERSION;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let grants = Grants { agreements: Default::default(), writer: Some(Secret::new("secret").unwrap()) };
        let mut params = test_params();
        params.handshake_timeout = Duration::from_secs(60);
        let shutdown = CancellationToken::new();
        let server = Server::new(dir, grants, None, params, shutdown.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(async move { server.serve(listener).await });

        // In its handshake for sure: challenged, and then silent.
        let (mut reader, mut writer) = connection::split(TcpStream::connect(addr).await.unwrap());
        let hello = Hello { versions: vec![PROTOCOL_VERSION], client_id: "w".into(), role: Role::Writer };
        writer.send(&Message::Hello(hello)).await.unwrap();
        assert!(matches!(reader.recv().await.unwrap(), Some(Message::MutualChallenge { .. })));

        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), serving).await;
        assert!(stopped.is_ok(), "the server waited for a handshake that was not going anywhere");
    }

    /// A certificate and its key for `provider.test`, as `[tls]` names them, in `dir`.
    fn tls_files(dir: &std::path::Path) -> crate::config::TlsConfig {
        let generated = rcgen::generate_simple_self_signed(vec!["provider.test".to_owned()]).unwrap();
        let (cert_file, key_file) = (dir.join("provider.crt"), dir.join("provider.key"));
        std::fs::write(&cert_file, generated.cert.pem()).unwrap();
        std::fs::write(&key_file, generated.key_pair.serialize_pem()).unwrap();
        crate::config::TlsConfig { cert_file, key_file }
    }

    /// `handshake_timeout` covers the TLS handshake too (operations.md): a client that
    /// starts one and goes silent is closed at the deadline, not held for ever with a
    /// slot of `max_connections`.
    #[tokio::test]
    async fn a_client_silent_in_its_tls_handshake_is_closed_at_the_handshake_deadline() {
        use tokio::io::AsyncWriteExt;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let tls = crate::tls::server_config(&tls_files(tmp.path())).unwrap();
        let mut params = test_params();
        params.handshake_timeout = Duration::from_secs(1);
        let server = Server::new(dir, Grants::default(), Some(tls), params, CancellationToken::new());
        let (mut client, provider) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(server.handle_stream(provider, "127.0.0.1:40000".parse().unwrap()));
        // The header of a handshake record whose body never comes, and the connection
        // left open: only the deadline can end it.
        client.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40]).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(30), served).await;
        assert!(ended.is_ok(), "a TLS handshake silent for 30 s outlived a handshake_timeout of 1 s");
        drop(client);
    }

    /// A session that came in over TLS is shown as such: `status`'s `TLS` column, and
    /// what a reload turning TLS on counts as still in plain TCP, read this mark.
    #[tokio::test]
    async fn a_session_over_tls_is_registered_as_tls() {
        use tether_protocol::handshake::{client_handshake, ProviderProof};
        use tether_protocol::PROTOCOL_VERSION;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let files = tls_files(tmp.path());
        let secret = Secret::new("secret").unwrap();
        let grants = Grants { agreements: Default::default(), writer: Some(secret.clone()) };
        let tls = crate::tls::server_config(&files).unwrap();
        let server = Server::new(dir, grants, Some(tls), test_params(), CancellationToken::new());
        let (client, provider) = tokio::io::duplex(1 << 16);
        let _served = tokio::spawn(server.clone().handle_stream(provider, "127.0.0.1:40000".parse().unwrap()));
        // As `write` connects: the pinned certificate of `[tls]`.
        let own = crate::tls::self_client(&files, "127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(own.config).connect(own.server_name, client).await.unwrap();
        let (mut reader, mut writer) = connection::split(stream);
        let hello = Hello { versions: vec![PROTOCOL_VERSION], client_id: "w".into(), role: Role::Writer };
        let limit = Duration::from_secs(30);
        client_handshake(&mut reader, &mut writer, &hello, &secret, ProviderProof::Required, limit).await.unwrap();

        // Registered just after the welcome is sent.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let sessions = loop {
            let sessions = server.registry().snapshot();
            if !sessions.is_empty() {
                break sessions;
            }
            assert!(std::time::Instant::now() < deadline, "the write session was never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(sessions.iter().map(|s| (s.mode.as_str(), s.tls)).collect::<Vec<_>>(), [(WRITER, true)]);
    }

    /// A consumer that does not trust the certificate (its alert) is a kind apart from
    /// a stranger's bytes that are not TLS.
    #[test]
    fn a_tls_failure_s_kind_is_its_cause() {
        use tokio_rustls::rustls::{AlertDescription, Error, InvalidMessage};
        let kind = |e: Error| tls_kind(&std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        let distrust = kind(Error::AlertReceived(AlertDescription::UnknownCA));
        assert!(distrust.contains("UnknownCA"), "{distrust}");
        assert_ne!(distrust, kind(Error::InvalidMessage(InvalidMessage::InvalidContentType)));
        assert_eq!(distrust, kind(Error::AlertReceived(AlertDescription::UnknownCA)));
        let long = kind(Error::General("é".repeat(200)));
        assert!(long.len() <= 120, "bounded: {}", long.len());
    }

    /// A server of writers whose secret is `secret`, with `params`, serving a new store.
    fn writers_server(params: ServerParams) -> (tempfile::TempDir, Server) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let grants = Grants { agreements: Default::default(), writer: Some(Secret::new("secret").unwrap()) };
        (tmp, Server::new(dir, grants, None, params, CancellationToken::new()))
    }

    /// A connection to `server` from `peer`, served in a task of its own: the client's
    /// halves, and the task, which ends when the server is done with the connection.
    fn connect(
        server: &Server,
        peer: &str,
    ) -> (
        MessageReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        MessageWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client, provider) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(server.clone().handle_stream(provider, peer.parse().unwrap()));
        let (reader, writer) = connection::split(client);
        (reader, writer, served)
    }

    /// A writer's `Hello`.
    fn writer_hello() -> Message {
        Message::Hello(Hello {
            versions: vec![tether_protocol::PROTOCOL_VERSION],
            client_id: "w".into(),
            role: Role::Writer,
        })
    }

    /// `max_connections` counts a connection in its handshake: the next one, from the
    /// same host (which may not take its slot), is refused `too-many-connections`; once
    /// the first has ended, its slot is free for the next.
    #[tokio::test]
    async fn a_connection_past_max_connections_is_refused_until_one_ends() {
        const LONG: Duration = Duration::from_secs(30);
        let (_tmp, server) = writers_server(ServerParams { max_connections: 1, ..test_params() });
        let (mut reader, mut writer, first) = connect(&server, "127.0.0.1:40000");
        writer.send(&writer_hello()).await.unwrap();
        let challenged = tokio::time::timeout(LONG, reader.recv()).await.unwrap().unwrap();
        assert!(matches!(challenged, Some(Message::MutualChallenge { .. })), "{challenged:?}");

        let (mut over, _over_writer, _) = connect(&server, "127.0.0.1:40001");
        let refused = tokio::time::timeout(LONG, over.recv()).await.expect("refused at once").unwrap();
        assert!(
            matches!(&refused, Some(Message::Reject(r)) if r.reason == RejectReason::TooManyConnections),
            "the connection past the limit: {refused:?}"
        );

        // The first gives up its handshake; its slot is the next connection's.
        drop((reader, writer));
        tokio::time::timeout(LONG, first).await.unwrap().unwrap();
        let (mut reader, mut writer, _) = connect(&server, "127.0.0.1:40002");
        writer.send(&writer_hello()).await.unwrap();
        let next = tokio::time::timeout(LONG, reader.recv()).await.unwrap().unwrap();
        assert!(matches!(next, Some(Message::MutualChallenge { .. })), "the slot given back: {next:?}");
    }

    /// A client that connects and sends nothing holds its slot for `handshake_timeout`
    /// and no longer: then the provider closes it. On tokio's paused clock, so the limit
    /// is exact.
    #[tokio::test(start_paused = true)]
    async fn a_connection_silent_in_its_handshake_is_closed_at_the_handshake_timeout() {
        let (_tmp, server) = writers_server(test_params());
        // A first connection has the store reserve the session ids (a flush, off the
        // runtime, while the paused clock could run ahead), so that the silent one's
        // handshake runs on the clock alone.
        let (mut reader, mut writer, first) = connect(&server, "127.0.0.1:40000");
        writer.send(&writer_hello()).await.unwrap();
        assert!(matches!(reader.recv().await.unwrap(), Some(Message::MutualChallenge { .. })));
        drop((reader, writer));
        first.await.unwrap();

        let (_reader, _writer, mut silent) = connect(&server, "127.0.0.1:40001");
        let just_before = test_params().handshake_timeout - Duration::from_millis(1);
        assert!(tokio::time::timeout(just_before, &mut silent).await.is_err(), "closed before its handshake_timeout");
        let closed = tokio::time::timeout(Duration::from_secs(30), silent).await;
        assert!(closed.is_ok(), "still open past its handshake_timeout");
    }
}
