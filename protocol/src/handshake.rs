//! The handshake: the first exchange on every connection, over a message connection
//! (`connection`), before any session logic runs.
//!
//! ```text
//! client                                   provider
//!   Hello{versions, client_id, role}  ->
//!                                     <-   Challenge{nonce}      (or Reject)
//!   Auth{mac}                         ->
//!                                     <-   Welcome{...}          (or Reject)
//! ```
//!
//! From protocol version 3 ([`MUTUAL_AUTH_VERSION`]) the provider proves itself too:
//!
//! ```text
//!   Hello{versions, client_id, role}      ->
//!                                         <-   MutualChallenge{nonce}          (or Reject)
//!   MutualAuth{mac, nonce}                ->
//!                                         <-   ProvenWelcome{welcome, proof}   (or Reject)
//! ```
//!
//! A client cannot tell a provider of an older build from an impostor that pretends to
//! be one, so whether it takes a provider that does not prove itself is the caller's
//! [`ProviderProof`]; refusing one happens before the client's MAC is sent.
//!
//! The whole exchange runs under one deadline ([`HANDSHAKE_TIMEOUT`] by default), and
//! while it runs both sides accept frames of at most [`HANDSHAKE_MAX_FRAME`], so an
//! unauthenticated peer can neither hold a connection open nor make us buffer much. A
//! provider that refuses a client always sends a `Reject` saying why before it closes,
//! so the client can show the reason in its status.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

use crate::auth::{compute_mac, compute_proof, new_nonce, verify_mac, verify_proof, AuthError, Nonces, Secret};
use crate::connection::{MessageReader, MessageWriter, WireError};
use crate::cookie::HistoryId;
use crate::foreign::ForeignPeer;
use crate::message::{
    shown, unshowable, GoodbyeReason, Hello, Message, Reject, RejectReason, Welcome, MUTUAL_AUTH_VERSION,
    SUPPORTED_VERSIONS,
};

/// Default deadline for the whole handshake, from the first byte sent or awaited to the
/// `Welcome`. Generous for any real network; short enough that a silent peer does not
/// hold a connection slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame either side accepts during the handshake. A `Hello` with a long
/// filter is a few kilobytes; anything near this is hostile.
pub const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// The largest encoded region ([`SearchSpec`](crate::SearchSpec): base, filter and
/// attribute list) a consumer may ask for. Its `Hello` carries the region beside a
/// client id, an agreement name, a cookie and a resume point (a DN key) within
/// [`HANDSHAKE_MAX_FRAME`], and a `Hello` over it is refused as hostile without a word
/// on why; a consumer checks its agreements against this when it reads its
/// configuration, so a region too large is an error naming the agreement instead.
pub const MAX_REGION: usize = HANDSHAKE_MAX_FRAME / 2;

/// The longest scan cursor (a DN key) a consumer offers in a `Hello`'s resume point.
/// With a region of [`MAX_REGION`], the longest client id and agreement name and two
/// cookies, it leaves room within [`HANDSHAKE_MAX_FRAME`]; a reload stopped past a
/// longer DN starts over rather than be refused at every attempt.
pub const MAX_RESUME_CURSOR: usize = HANDSHAKE_MAX_FRAME / 4;

/// How long the provider tries to deliver a `Reject` once it has decided to refuse:
/// the refusal must not wait on a client that does not read.
const REJECT_GRACE: Duration = Duration::from_secs(1);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The handshake did not complete within its deadline.
    #[error("handshake did not complete within {:?}", tenths(*.0))]
    Timeout(Duration),
    /// Client side: the provider refused us, and said why.
    #[error("rejected by the provider: {0}")]
    Rejected(Reject),
    /// Provider side: we refused the client, and told it why.
    #[error("refused the client: {0}")]
    Refused(Reject),
    /// The peer ended the session during the handshake. No provider of this build does
    /// (it refuses with a `Reject`, or closes), and on the client side the goodbye comes
    /// before the provider proved anything, so the client reports it but acts on none of
    /// its reasons: a stranger's `credentials-revoked` must not close an agreement, nor
    /// its `refresh-required` make the client reconnect at once.
    #[error("peer said goodbye during the handshake: {reason}: {detail}")]
    Goodbye {
        /// The peer's reason.
        reason: GoodbyeReason,
        /// The peer's detail.
        detail: String,
    },
    /// Client side: the provider sent a message that has no place in the handshake.
    #[error("handshake expected {expected}, got {got}")]
    Unexpected {
        /// The message that was due.
        expected: &'static str,
        /// The message that came.
        got: &'static str,
    },
    /// Client side: the provider chose a protocol version the client did not offer.
    #[error("provider chose protocol version {0}, which was not offered")]
    BadVersion(u16),
    /// Client side: the provider did not offer to prove it knows the secret (it chose a
    /// version before [`MUTUAL_AUTH_VERSION`]), and the caller requires the proof. Nothing
    /// of the secret was sent.
    #[error(
        "the provider did not offer to prove it knows the secret (it speaks protocol version 2 or older, \
         or is not the provider), and this client requires the proof"
    )]
    Unproven,
    /// Client side: the provider welcomed us without the proof it owes: at
    /// [`MUTUAL_AUTH_VERSION`] or later, or after offering the proof with a
    /// `MutualChallenge`. Only a peer without the secret does that.
    #[error("the provider welcomed us at protocol version {0} without the proof it owes: it is not the provider")]
    WelcomeUnproven(u16),
    /// Client side: the provider's proof does not match the secret. The provider checked
    /// ours with its secret before proving, so this is not a mismatched configuration:
    /// the peer does not know the secret, or something changed the handshake in transit.
    #[error(
        "the provider's proof that it knows the secret is wrong: it is not the provider, \
         or something between us changed the handshake"
    )]
    BadProof,
    /// The peer closed the connection before the handshake completed, between
    /// messages: cleanly, or with a reset (a health checker that closes with `SO_LINGER`
    /// 0, as HAProxy's does, to leave no TIME_WAIT behind); `heard` whether a message of
    /// its had come first. A client that closes having sent nothing at all is a port
    /// probe (a TCP health check, a load balancer, a scanner), which a provider need not
    /// warn of. A reset inside a message is [`HandshakeError::Wire`].
    #[error("connection {} during the handshake", if *reset { "reset" } else { "closed" })]
    Closed {
        /// Whether the peer had sent a whole message.
        heard: bool,
        /// Whether it closed with a reset rather than a FIN.
        reset: bool,
    },
    /// The peer's first bytes cannot begin a Tether frame: something else is on the
    /// other end (a web or LDAP server, TLS on one side only).
    #[error("{0}")]
    Foreign(ForeignPeer),
    /// The connection failed, or the peer sent an oversize or undecodable frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No nonce or MAC could be made.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl HandshakeError {
    /// The rejection reason, on either side, if the handshake ended in a `Reject`.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            HandshakeError::Rejected(reject) | HandshakeError::Refused(reject) => Some(reject.reason),
            _ => None,
        }
    }

    /// Whether reconnecting with the same configuration cannot succeed (bad credentials,
    /// version mismatch, unknown agreement, scope not allowed, revoked credentials):
    /// back off at the longest delay, or stop, instead of retrying in a storm.
    pub fn is_permanent(&self) -> bool {
        match self {
            HandshakeError::Rejected(reject) | HandshakeError::Refused(reject) => reject.reason.is_permanent(),
            HandshakeError::BadVersion(_)
            | HandshakeError::Unproven
            | HandshakeError::WelcomeUnproven(_)
            | HandshakeError::BadProof => true,
            HandshakeError::Timeout(_)
            | HandshakeError::Goodbye { .. }
            | HandshakeError::Unexpected { .. }
            | HandshakeError::Closed { .. }
            | HandshakeError::Foreign(_)
            | HandshakeError::Wire(_)
            | HandshakeError::Auth(_) => false,
        }
    }
}

/// What the provider's authorizer grants a client it accepts.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The secret the client must prove it knows (the agreement's or the writer's).
    pub secret: Secret,
    /// The history the provider's store is in now, sent in the `Welcome`.
    pub history: HistoryId,
    /// The id the provider gives this session, sent in the `Welcome`.
    pub session_id: u64,
    /// How often the provider will ping an idle session.
    pub keepalive_interval: Duration,
    /// How long the provider waits for any message before dropping the session.
    pub keepalive_timeout: Duration,
}

/// A completed provider-side handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// What the client asked for (role, agreement, cookie, scope), now authenticated.
    pub hello: Hello,
    /// What was sent back, including the negotiated version.
    pub welcome: Welcome,
}

/// Whether a client takes a provider that does not prove it knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderProof {
    /// A provider of a version before [`MUTUAL_AUTH_VERSION`] is taken without a proof;
    /// one that offers the proof must give the right one.
    Optional,
    /// Only a provider that proves itself is taken; one that does not is refused
    /// ([`HandshakeError::Unproven`]) before the client's MAC is sent.
    Required,
}

/// The highest protocol version both this build and the client speak.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    offered.iter().copied().filter(|v| SUPPORTED_VERSIONS.contains(v)).max()
}

/// `limit` as a message shows it, to the millisecond, and from a second up to the
/// nearest tenth of a second: a provider's handshake gets what its deadline leaves
/// after TLS, and "within 9.999991408s" said `handshake_timeout = "10s"` badly.
fn tenths(limit: Duration) -> Duration {
    let ms = limit.as_millis();
    let shown = if ms < 1_000 { ms } else { (ms + 50) / 100 * 100 };
    Duration::from_millis(u64::try_from(shown).unwrap_or(u64::MAX))
}

/// How long a handshake may take: when it must be done, and the limit its timeout
/// names. The two differ when the handshake shares its limit with a TLS handshake
/// before it: what is left may be a second of ten, and an error saying "within 1s"
/// sent an operator after a limit no file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// When the handshake must be done.
    deadline: Instant,
    /// The whole limit, as configured.
    whole: Duration,
}

impl Limit {
    /// `whole` from now.
    pub fn from_now(whole: Duration) -> Self {
        Self { deadline: Instant::now() + whole, whole }
    }

    /// What is left of `whole` until `deadline`, taken by an earlier step (the TLS
    /// handshake) since it began.
    pub fn shared(deadline: Instant, whole: Duration) -> Self {
        Self { deadline, whole }
    }
}

impl From<Duration> for Limit {
    fn from(whole: Duration) -> Self {
        Self::from_now(whole)
    }
}

/// One handshake's connection and deadline.
struct Exchange<'a, R, W> {
    /// Where the peer's messages arrive.
    reader: &'a mut MessageReader<R>,
    /// Where ours leave.
    writer: &'a mut MessageWriter<W>,
    /// When the whole handshake must be done, and the limit its timeout names.
    limit: Limit,
    /// False once a send was cut off by the deadline: the stream may hold a partial
    /// frame, so nothing more may be written to it.
    writer_clean: bool,
    /// Whether a message has arrived: until one has, a frame no Tether peer could
    /// announce means a stranger ([`ForeignPeer`]).
    received: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Exchange<'_, R, W> {
    /// The next message, before the deadline.
    async fn recv(&mut self) -> Result<Message, HandshakeError> {
        match timeout_at(self.limit.deadline, self.reader.recv()).await {
            Err(_) => Err(HandshakeError::Timeout(self.limit.whole)),
            Ok(Err(WireError::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionReset && self.reader.buffered() == 0 =>
            {
                Err(HandshakeError::Closed { heard: self.received, reset: true })
            }
            Ok(Err(err)) => Err(self.stranger(&err).map_or_else(|| err.into(), HandshakeError::Foreign)),
            Ok(Ok(None)) => Err(HandshakeError::Closed { heard: self.received, reset: false }),
            Ok(Ok(Some(msg))) => {
                self.received = true;
                Ok(msg)
            }
        }
    }

    /// The stranger `err` reveals, if it came before any message did.
    fn stranger(&self, err: &WireError) -> Option<ForeignPeer> {
        match err {
            WireError::FrameTooLarge { len, .. } if !self.received => ForeignPeer::from_first_frame_len(*len),
            _ => None,
        }
    }

    /// Sends `msg`, before the deadline.
    async fn send(&mut self, msg: &Message) -> Result<(), HandshakeError> {
        match timeout_at(self.limit.deadline, self.writer.send(msg)).await {
            Err(_) => {
                self.writer_clean = false;
                Err(HandshakeError::Timeout(self.limit.whole))
            }
            Ok(result) => Ok(result?),
        }
    }
}

/// Client side: introduces itself with `hello`, answers the challenge with `secret`,
/// and returns the provider's `Welcome`. `limit` bounds the whole exchange (normally
/// [`HANDSHAKE_TIMEOUT`], or what a TLS handshake left of it: [`Limit::shared`]). A
/// provider that chose [`MUTUAL_AUTH_VERSION`] or later has proved it knows `secret` by
/// the time this returns; one of an older version only if `proof` allowed it.
///
/// # Errors
/// [`HandshakeError::Rejected`] carries the provider's reason; see
/// [`HandshakeError::is_permanent`] for whether retrying can help.
pub async fn client_handshake<R, W>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    hello: &Hello,
    secret: &Secret,
    proof: ProviderProof,
    limit: impl Into<Limit>,
) -> Result<Welcome, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let saved = reader.max_frame();
    reader.set_max_frame(HANDSHAKE_MAX_FRAME.min(saved));
    let mut ex = Exchange { reader, writer, limit: limit.into(), writer_clean: true, received: false };
    let result = client_steps(&mut ex, hello, secret, proof).await;
    ex.reader.set_max_frame(saved);
    result
}

async fn client_steps<R, W>(
    ex: &mut Exchange<'_, R, W>,
    hello: &Hello,
    secret: &Secret,
    proof: ProviderProof,
) -> Result<Welcome, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    ex.send(&Message::Hello(hello.clone())).await?;
    match ex.recv().await? {
        Message::Challenge { .. } if proof == ProviderProof::Required => Err(HandshakeError::Unproven),
        Message::Challenge { nonce } => {
            let mac = compute_mac(secret, &nonce, hello)?;
            ex.send(&Message::Auth { mac }).await?;
            match ex.recv().await? {
                Message::Welcome(welcome) if !hello.versions.contains(&welcome.version) => {
                    Err(HandshakeError::BadVersion(welcome.version))
                }
                Message::Welcome(welcome) if welcome.version >= MUTUAL_AUTH_VERSION => {
                    Err(HandshakeError::WelcomeUnproven(welcome.version))
                }
                Message::Welcome(welcome) => Ok(welcome),
                other => Err(client_unexpected("welcome", other)),
            }
        }
        Message::MutualChallenge { nonce } => {
            let ours = new_nonce()?;
            let mac = compute_mac(secret, &nonce, hello)?;
            ex.send(&Message::MutualAuth { mac, nonce: ours }).await?;
            match ex.recv().await? {
                // The proof first: it covers the version, so a peer without the secret
                // cannot pass for a provider with a version error by changing it.
                Message::ProvenWelcome { welcome, proof }
                    if !verify_proof(secret, Nonces { provider: &nonce, client: &ours }, hello, &welcome, &proof) =>
                {
                    Err(HandshakeError::BadProof)
                }
                Message::ProvenWelcome { welcome, .. }
                    if !hello.versions.contains(&welcome.version) || welcome.version < MUTUAL_AUTH_VERSION =>
                {
                    Err(HandshakeError::BadVersion(welcome.version))
                }
                Message::ProvenWelcome { welcome, .. } => Ok(welcome),
                // The provider offered the proof and then welcomed us without it: a
                // provider of any build that sends this challenge proves itself.
                Message::Welcome(welcome) => Err(HandshakeError::WelcomeUnproven(welcome.version)),
                other => Err(client_unexpected("proven-welcome", other)),
            }
        }
        other => Err(client_unexpected("challenge", other)),
    }
}

/// What a client makes of a message other than the one it awaits.
fn client_unexpected(expected: &'static str, got: Message) -> HandshakeError {
    match got {
        Message::Reject(reject) => HandshakeError::Rejected(Reject { detail: shown(reject.detail), ..reject }),
        Message::Goodbye { reason, detail } => HandshakeError::Goodbye { reason, detail: shown(detail) },
        other => HandshakeError::Unexpected { expected, got: other.name() },
    }
}

/// Provider side: reads the client's `Hello`, checks the version, asks `authorize`
/// whether this client may have what it asks for (and with which secret), challenges
/// it, verifies the proof and sends the `Welcome`. `limit` bounds the whole exchange
/// (normally [`HANDSHAKE_TIMEOUT`], or what a TLS handshake left of it:
/// [`Limit::shared`]).
///
/// `authorize` sees the unauthenticated `Hello` and returns the agreement's secret and
/// session parameters, or the `Reject` to send (unknown agreement, scope not allowed,
/// too many connections). It runs only after the version check.
///
/// Whenever the client is refused (version, authorizer, bad MAC, protocol violation,
/// timeout) a `Reject` naming the reason is sent before returning, on a best-effort
/// basis bounded by a short grace period; the caller then closes the connection.
///
/// # Errors
/// [`HandshakeError::Refused`] with the `Reject` that was sent, or the transport error
/// that ended the exchange.
pub async fn server_handshake<R, W, F>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    limit: impl Into<Limit>,
    authorize: F,
) -> Result<Accepted, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: FnOnce(&Hello) -> Result<Admission, Reject>,
{
    let saved = reader.max_frame();
    reader.set_max_frame(HANDSHAKE_MAX_FRAME.min(saved));
    let mut ex = Exchange { reader, writer, limit: limit.into(), writer_clean: true, received: false };
    let result = server_steps(&mut ex, authorize).await;
    if let Err(err) = &result {
        if let Some(reject) = reply_for(err) {
            if ex.writer_clean {
                // Best effort: the client may already be gone, and its reason for the
                // failure is the one we return, not this send's.
                let _ = tokio::time::timeout(REJECT_GRACE, ex.writer.send(&Message::Reject(reject))).await;
            }
        }
    }
    ex.reader.set_max_frame(saved);
    result
}

/// How many of a client's versions a refusal names.
const SHOWN_VERSIONS: usize = 8;

/// The longest `client_id` a provider takes (a consumer's is a UUID; a writer's a host
/// name and a process id).
pub const MAX_CLIENT_ID: usize = 256;

/// Refuses a `client_id` that would forge or flood the provider's log, where it names
/// every line of the session: control characters (a newline starts a line of the
/// client's making), the other characters that break a line or reorder the text around
/// it, which [`shown`] escapes in a peer's text (U+2028, a bidirectional override), and
/// more than [`MAX_CLIENT_ID`] bytes.
fn check_client_id(id: &str) -> Result<(), Reject> {
    let bad = if id.len() > MAX_CLIENT_ID {
        format!("is {} bytes, over {MAX_CLIENT_ID}", id.len())
    } else if id.chars().any(unshowable) {
        "holds a control character, a line separator or a bidirectional mark".to_owned()
    } else {
        return Ok(());
    };
    Err(Reject::new(RejectReason::ProtocolViolation, format!("client_id {bad}: not the id a Tether client sends")))
}

async fn server_steps<R, W, F>(ex: &mut Exchange<'_, R, W>, authorize: F) -> Result<Accepted, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: FnOnce(&Hello) -> Result<Admission, Reject>,
{
    let hello = match ex.recv().await? {
        Message::Hello(hello) => hello,
        other => return Err(server_unexpected("hello", other)),
    };
    let version = negotiate_version(&hello.versions).ok_or_else(|| {
        // At most a few of the client's, which anyone may send by the ten thousand.
        let offered: Vec<u16> = hello.versions.iter().copied().take(SHOWN_VERSIONS).collect();
        let more = hello.versions.len().saturating_sub(SHOWN_VERSIONS);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        HandshakeError::Refused(Reject::new(
            RejectReason::VersionMismatch,
            format!("client speaks versions {offered:?}{more}, provider speaks {SUPPORTED_VERSIONS:?}"),
        ))
    })?;
    check_client_id(&hello.client_id).map_err(HandshakeError::Refused)?;
    let admission = authorize(&hello).map_err(HandshakeError::Refused)?;
    let nonce = new_nonce()?;
    let mutual = version >= MUTUAL_AUTH_VERSION;
    let (mac, theirs) = if mutual {
        ex.send(&Message::MutualChallenge { nonce }).await?;
        match ex.recv().await? {
            Message::MutualAuth { mac, nonce } => (mac, Some(nonce)),
            other => return Err(server_unexpected("mutual-auth", other)),
        }
    } else {
        ex.send(&Message::Challenge { nonce }).await?;
        match ex.recv().await? {
            Message::Auth { mac } => (mac, None),
            other => return Err(server_unexpected("auth", other)),
        }
    };
    if !verify_mac(&admission.secret, &nonce, &hello, &mac) {
        let who = hello.role.agreement().map_or_else(|| "the writer role".to_owned(), |a| format!("agreement {a:?}"));
        return Err(HandshakeError::Refused(Reject::new(
            RejectReason::BadCredentials,
            format!("authentication failed for {who}"),
        )));
    }
    let welcome = Welcome {
        version,
        history: admission.history,
        session_id: admission.session_id,
        keepalive_interval_ms: millis(admission.keepalive_interval),
        keepalive_timeout_ms: millis(admission.keepalive_timeout),
    };
    let reply = match theirs {
        // Proved only now, after the client proved itself: the proof is never made for
        // a peer that has not shown it knows the secret.
        Some(theirs) => {
            let proof =
                compute_proof(&admission.secret, Nonces { provider: &nonce, client: &theirs }, &hello, &welcome)?;
            Message::ProvenWelcome { welcome: welcome.clone(), proof }
        }
        None => Message::Welcome(welcome.clone()),
    };
    ex.send(&reply).await?;
    Ok(Accepted { hello, welcome })
}

/// What a provider makes of a message other than the one it awaits.
fn server_unexpected(expected: &'static str, got: Message) -> HandshakeError {
    match got {
        Message::Goodbye { reason, detail } => HandshakeError::Goodbye { reason, detail: shown(detail) },
        other => HandshakeError::Refused(Reject::new(
            RejectReason::ProtocolViolation,
            format!("expected {expected}, got {}", other.name()),
        )),
    }
}

/// The `Reject` a provider owes the client after `err`, if any (none when the client
/// left or the connection broke: nobody would read it).
fn reply_for(err: &HandshakeError) -> Option<Reject> {
    match err {
        HandshakeError::Refused(reject) => Some(reject.clone()),
        HandshakeError::Timeout(limit) => Some(Reject::new(
            RejectReason::HandshakeTimeout,
            format!("handshake not completed within {:?}", tenths(*limit)),
        )),
        HandshakeError::Foreign(peer) => Some(Reject::new(RejectReason::ProtocolViolation, peer.to_string())),
        HandshakeError::Wire(wire) if wire.is_protocol_violation() => {
            Some(Reject::new(RejectReason::ProtocolViolation, wire.to_string()))
        }
        _ => None,
    }
}

/// A duration in whole milliseconds, saturating (for the `Welcome`'s fields).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::io::{duplex, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};

    use super::*;
    use crate::auth::compute_proof;
    use crate::connection::split;
    use crate::frame::MAX_FRAME;
    use crate::message::tests::consumer_hello;
    use crate::message::{Role, PROTOCOL_VERSION};

    /// Room for every handshake message in the duplex pipe.
    const PIPE: usize = 64 * 1024;
    const SECRET: &[u8] = b"correct horse battery staple 42!";

    type Reader = MessageReader<ReadHalf<DuplexStream>>;
    type Writer = MessageWriter<WriteHalf<DuplexStream>>;

    fn pair() -> ((Reader, Writer), (Reader, Writer)) {
        let (a, b) = duplex(PIPE);
        (split(a), split(b))
    }

    fn admission() -> Admission {
        Admission {
            secret: Secret::new(SECRET).unwrap(),
            history: HistoryId([5; 16]),
            session_id: 99,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(20),
        }
    }

    /// The provider's authorizer: one agreement, `people`, and the writer.
    fn authorize(hello: &Hello) -> Result<Admission, Reject> {
        match &hello.role {
            Role::Consumer { agreement, .. } if agreement == "people" => Ok(admission()),
            Role::Consumer { agreement, .. } => {
                Err(Reject::new(RejectReason::UnknownAgreement, format!("no agreement {agreement:?}")))
            }
            Role::Writer => Ok(admission()),
        }
    }

    /// Runs both sides of a handshake to completion.
    async fn run(hello: Hello, secret: &[u8]) -> (Result<Welcome, HandshakeError>, Result<Accepted, HandshakeError>) {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let secret = Secret::new(secret).unwrap();
        let client = client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT);
        let server = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize);
        tokio::join!(client, server)
    }

    /// What a client sends is quoted in the provider's log: a forged line or ten thousand
    /// versions are refused or cut, before any secret is checked.
    #[tokio::test]
    async fn a_hello_cannot_forge_or_flood_the_provider_s_log() {
        for (client_id, says) in [
            ("inj\n2026-12-02T21:00:00Z  WARN provider FORGED".to_owned(), "holds a control character"),
            ("x".repeat(MAX_CLIENT_ID + 1), "is 257 bytes, over 256"),
        ] {
            let hello = Hello { client_id, ..consumer_hello("people") };
            let (_, server) = run(hello, SECRET).await;
            let Err(HandshakeError::Refused(reject)) = server else { panic!("{server:?}") };
            assert_eq!(reject.reason, RejectReason::ProtocolViolation);
            assert!(reject.detail.contains(says), "{}", reject.detail);
        }
        let hello = Hello { versions: (10_000..31_000).collect(), ..consumer_hello("people") };
        let (_, server) = run(hello, SECRET).await;
        let Err(HandshakeError::Refused(reject)) = server else { panic!("{server:?}") };
        assert!(reject.detail.len() < 200 && reject.detail.contains("and 20992 more"), "{}", reject.detail);
    }

    /// The provider names every line of a session with its `client_id`: one that holds
    /// what breaks a line or reorders the text around it in a log viewer (U+2028,
    /// U+2029, the bidirectional marks and overrides), which `shown` escapes in a peer's
    /// text for that reason, is refused as a newline is.
    #[tokio::test]
    async fn a_client_id_that_breaks_or_reorders_a_line_is_refused() {
        for client_id in ["inj\u{2028}2026-12-02T21:00:00Z  WARN provider FORGED", "w\u{202e}detcennoc", "a\u{2069}b"] {
            let hello = Hello { client_id: client_id.to_owned(), ..consumer_hello("people") };
            let (_, server) = run(hello, SECRET).await;
            let Err(HandshakeError::Refused(reject)) = server else { panic!("{client_id:?} welcomed: {server:?}") };
            assert_eq!(reject.reason, RejectReason::ProtocolViolation);
            assert!(reject.detail.contains("holds a control character"), "{}", reject.detail);
        }
        // Any other character a name may hold is still taken.
        let hello = Hello { client_id: "réplica-ü 東京 #2".into(), ..consumer_hello("people") };
        let (_, server) = run(hello, SECRET).await;
        server.unwrap();
    }

    /// A consumer checks its region against [`MAX_REGION`] and its resume cursor against
    /// [`MAX_RESUME_CURSOR`]; a `Hello` at both, and at every other limit, must get
    /// through, and one with a region a frame long must not.
    #[tokio::test]
    async fn a_hello_at_every_limit_is_welcomed_and_a_region_a_frame_long_is_not() {
        let hello_with = |value_len: usize| {
            let mut hello = consumer_hello(&"a".repeat(64));
            hello.client_id = "c".repeat(MAX_CLIENT_ID);
            let Role::Consumer { spec, resume, .. } = &mut hello.role else { unreachable!() };
            spec.filter = crate::filter::Filter::Equality { attr: "cn".into(), value: "v".repeat(value_len).into() };
            resume.as_mut().unwrap().cursor = Some(vec![b'k'; MAX_RESUME_CURSOR]);
            let region = crate::codec::encoded_len(&*spec).unwrap();
            (hello, region)
        };
        let accept_any = |_: &Hello| Ok(admission());
        let shake = |hello: Hello| async move {
            let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
            let secret = Secret::new(SECRET).unwrap();
            let client =
                client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT);
            let server = async move {
                let accepted = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, accept_any).await;
                // A refusing provider closes: the client is not left to its deadline.
                drop((sr, sw));
                accepted
            };
            tokio::join!(client, server)
        };
        let (_, overhead) = hello_with(0);
        let (largest, region) = hello_with(MAX_REGION - overhead - 2);
        assert!((MAX_REGION - 2..=MAX_REGION).contains(&region), "{region}");
        let (client, server) = shake(largest).await;
        client.unwrap();
        server.unwrap();

        let (too_large, _) = hello_with(HANDSHAKE_MAX_FRAME);
        let (_, server) = shake(too_large).await;
        assert!(server.is_err(), "{server:?}");
    }

    #[tokio::test]
    async fn a_consumer_with_the_right_secret_is_welcomed() {
        let hello = consumer_hello("people");
        let (client, server) = run(hello.clone(), SECRET).await;
        let welcome = client.unwrap();
        let accepted = server.unwrap();
        assert_eq!(accepted.hello, hello);
        assert_eq!(accepted.welcome, welcome);
        assert_eq!(welcome.version, PROTOCOL_VERSION);
        assert_eq!(welcome.history, HistoryId([5; 16]));
        assert_eq!(welcome.session_id, 99);
        assert_eq!(welcome.keepalive_interval(), Duration::from_secs(5));
        assert_eq!(welcome.keepalive_timeout(), Duration::from_secs(20));
    }

    /// The welcome a provider written by hand sends, at `version`.
    fn impostor_welcome(version: u16) -> Welcome {
        Welcome {
            version,
            history: HistoryId([6; 16]),
            session_id: 1,
            keepalive_interval_ms: 5_000,
            keepalive_timeout_ms: 20_000,
        }
    }

    /// What a client taking an unproven provider makes of `reply`, from a provider written
    /// by hand after its challenge (`mutual`: the version 3 one) and the client's answer.
    async fn answered_with(mutual: bool, reply: Message) -> HandshakeError {
        let provider = move |mut sr: Reader, mut sw: Writer| async move {
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            let nonce = [1; 32];
            let challenge = if mutual { Message::MutualChallenge { nonce } } else { Message::Challenge { nonce } };
            sw.send(&challenge).await.unwrap();
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Auth { .. } | Message::MutualAuth { .. })));
            sw.send(&reply).await.unwrap();
        };
        against(ProviderProof::Optional, provider).await.unwrap_err()
    }

    /// Runs a client against `provider`, a provider written by hand.
    async fn against<F: std::future::Future<Output = ()>>(
        proof: ProviderProof,
        provider: impl FnOnce(Reader, Writer) -> F,
    ) -> Result<Welcome, HandshakeError> {
        let ((mut cr, mut cw), (sr, sw)) = pair();
        let secret = Secret::new(SECRET).unwrap();
        let hello = Hello { versions: SUPPORTED_VERSIONS.to_vec(), ..consumer_hello("people") };
        let client = async {
            let result = client_handshake(&mut cr, &mut cw, &hello, &secret, proof, HANDSHAKE_TIMEOUT).await;
            // The provider's last read then sees the end of the stream.
            drop((cr, cw));
            result
        };
        tokio::join!(client, provider(sr, sw)).0
    }

    #[tokio::test]
    async fn a_provider_of_this_version_proves_it_knows_the_secret() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let secret = Secret::new(SECRET).unwrap();
        let hello = Hello { versions: SUPPORTED_VERSIONS.to_vec(), ..consumer_hello("people") };
        let (client, server) = tokio::join!(
            client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Required, HANDSHAKE_TIMEOUT),
            server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize),
        );
        assert_eq!(client.unwrap().version, MUTUAL_AUTH_VERSION);
        assert_eq!(server.unwrap().welcome.version, MUTUAL_AUTH_VERSION);

        // A client of an older build is served as before, without the mutual messages.
        let (client, server) = run(Hello { versions: vec![1, 2], ..consumer_hello("people") }, SECRET).await;
        assert_eq!(client.unwrap().version, 2);
        assert_eq!(server.unwrap().welcome.version, 2);
    }

    #[tokio::test]
    async fn a_provider_without_the_secret_cannot_prove_it() {
        let impostor = |mut sr: Reader, mut sw: Writer| async move {
            let Some(Message::Hello(hello)) = sr.recv().await.unwrap() else { panic!("no hello") };
            sw.send(&Message::MutualChallenge { nonce: [1; 32] }).await.unwrap();
            let Some(Message::MutualAuth { nonce, .. }) = sr.recv().await.unwrap() else { panic!("no auth") };
            let welcome = impostor_welcome(MUTUAL_AUTH_VERSION);
            let guess = Secret::new("a guess").unwrap();
            let proof = compute_proof(&guess, Nonces { provider: &[1; 32], client: &nonce }, &hello, &welcome).unwrap();
            sw.send(&Message::ProvenWelcome { welcome, proof }).await.unwrap();
        };
        for proof in [ProviderProof::Optional, ProviderProof::Required] {
            let err = against(proof, impostor).await.unwrap_err();
            assert!(matches!(err, HandshakeError::BadProof), "{err}");
            assert!(err.is_permanent());
        }
    }

    #[tokio::test]
    async fn a_provider_that_does_not_offer_the_proof_is_refused_only_when_it_is_required() {
        // What a provider of an older build does, and an impostor may pretend to be one.
        let older = |mut sr: Reader, mut sw: Writer| async move {
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            sw.send(&Message::Challenge { nonce: [1; 32] }).await.unwrap();
            match sr.recv().await.unwrap() {
                Some(Message::Auth { .. }) => {}
                None => return,
                other => panic!("{other:?}"),
            }
            let welcome = impostor_welcome(2);
            sw.send(&Message::Welcome(welcome)).await.unwrap();
        };
        assert_eq!(against(ProviderProof::Optional, older).await.unwrap().version, 2);

        // Required: refused at the challenge, before the client's MAC goes out.
        let sent_auth = Arc::new(Mutex::new(None));
        let seen = sent_auth.clone();
        let err = against(ProviderProof::Required, |mut sr: Reader, mut sw: Writer| async move {
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            sw.send(&Message::Challenge { nonce: [1; 32] }).await.unwrap();
            *seen.lock().unwrap() = Some(sr.recv().await.unwrap());
        })
        .await
        .unwrap_err();
        assert!(matches!(err, HandshakeError::Unproven), "{err}");
        assert!(err.is_permanent());
        assert_eq!(*sent_auth.lock().unwrap(), Some(None), "the client sent nothing after its hello");
    }

    #[tokio::test]
    async fn a_welcome_at_the_proving_version_without_the_proof_is_refused() {
        let err = answered_with(false, Message::Welcome(impostor_welcome(MUTUAL_AUTH_VERSION))).await;
        assert!(matches!(err, HandshakeError::WelcomeUnproven(3)), "{err}");
    }

    #[tokio::test]
    async fn a_client_that_answers_a_mutual_challenge_with_a_plain_auth_is_refused() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let client = async {
            cw.send(&Message::Hello(consumer_hello("people"))).await.unwrap();
            assert!(matches!(cr.recv().await.unwrap(), Some(Message::MutualChallenge { .. })));
            cw.send(&Message::Auth { mac: [0; 32] }).await.unwrap();
            cr.recv().await.unwrap()
        };
        let (reply, server) = tokio::join!(client, server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize));
        assert_eq!(server.unwrap_err().reject_reason(), Some(RejectReason::ProtocolViolation));
        let Some(Message::Reject(reject)) = reply else { panic!("{reply:?}") };
        assert!(reject.detail.contains("expected mutual-auth, got auth"), "{}", reject.detail);
    }

    #[tokio::test]
    async fn a_writer_with_the_right_secret_is_welcomed() {
        let hello = Hello { role: Role::Writer, ..consumer_hello("people") };
        let (client, server) = run(hello, SECRET).await;
        client.unwrap();
        assert_eq!(server.unwrap().hello.role, Role::Writer);
    }

    #[tokio::test]
    async fn a_wrong_secret_is_bad_credentials_on_both_sides() {
        let (client, server) = run(consumer_hello("people"), b"wrong").await;
        let (client, server) = (client.unwrap_err(), server.unwrap_err());
        assert_eq!(client.reject_reason(), Some(RejectReason::BadCredentials), "{client}");
        assert_eq!(server.reject_reason(), Some(RejectReason::BadCredentials), "{server}");
        assert!(matches!(client, HandshakeError::Rejected(_)) && matches!(server, HandshakeError::Refused(_)));
        assert!(client.is_permanent());
        assert!(!client.to_string().contains("wrong") && !server.to_string().contains("correct horse"));
    }

    /// The writer role names no agreement, so its refusal takes another path through
    /// the check's wording; the check itself must not depend on the role. Asked at an
    /// older version too: a client of one proves nothing about the provider, so the
    /// provider's check is all that keeps a writer without the secret out.
    #[tokio::test]
    async fn a_writer_with_a_wrong_secret_is_bad_credentials_at_every_version() {
        for versions in [vec![PROTOCOL_VERSION], vec![1, 2]] {
            let hello = Hello { versions: versions.clone(), role: Role::Writer, ..consumer_hello("people") };
            let (client, server) = run(hello, b"wrong").await;
            let server = server.unwrap_err();
            assert_eq!(server.reject_reason(), Some(RejectReason::BadCredentials), "{versions:?}: {server}");
            assert!(server.to_string().contains("the writer role"), "{server}");
            let client = client.unwrap_err();
            assert_eq!(client.reject_reason(), Some(RejectReason::BadCredentials), "{versions:?}: {client}");
        }
    }

    #[tokio::test]
    async fn no_common_version_is_version_mismatch_before_authorizing() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let hello = Hello { versions: vec![99, 100], ..consumer_hello("people") };
        let secret = Secret::new(SECRET).unwrap();
        let client = client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT);
        let mut authorized = false;
        let server = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, |h| {
            authorized = true;
            authorize(h)
        });
        let (client, server) = tokio::join!(client, server);
        assert_eq!(client.unwrap_err().reject_reason(), Some(RejectReason::VersionMismatch));
        let server = server.unwrap_err();
        assert_eq!(server.reject_reason(), Some(RejectReason::VersionMismatch));
        assert!(server.to_string().contains("[99, 100]"), "{server}");
        assert!(!authorized, "the authorizer is not consulted without a common version");
    }

    #[test]
    fn the_highest_common_version_wins() {
        assert_eq!(negotiate_version(&[0, PROTOCOL_VERSION, 500]), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate_version(&[]), None);
    }

    #[tokio::test]
    async fn an_unknown_agreement_is_rejected_without_a_challenge() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let hello = consumer_hello("nope");
        cw.send(&Message::Hello(hello)).await.unwrap();
        let server = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize).await.unwrap_err();
        assert_eq!(server.reject_reason(), Some(RejectReason::UnknownAgreement));
        // Both halves: the provider closes the connection after a reject.
        drop((sr, sw));
        match cr.recv().await.unwrap() {
            Some(Message::Reject(r)) => {
                assert_eq!(r.reason, RejectReason::UnknownAgreement);
                assert!(r.detail.contains("nope"));
            }
            other => panic!("expected a reject, got {other:?}"),
        }
        assert_eq!(cr.recv().await.unwrap(), None, "no challenge follows a reject");
    }

    #[tokio::test]
    async fn the_client_sees_an_unknown_agreement_as_permanent() {
        let (client, _) = run(consumer_hello("nope"), SECRET).await;
        let client = client.unwrap_err();
        assert_eq!(client.reject_reason(), Some(RejectReason::UnknownAgreement));
        assert!(client.is_permanent());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out_and_is_told_so() {
        let ((mut cr, _cw), (mut sr, mut sw)) = pair();
        let started = Instant::now();
        let err = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(d) if d == HANDSHAKE_TIMEOUT), "{err}");
        assert_eq!(tenths(Duration::from_nanos(9_999_991_408)), Duration::from_secs(10));
        assert_eq!(tenths(Duration::from_millis(250)), Duration::from_millis(250));
        assert_eq!(started.elapsed(), HANDSHAKE_TIMEOUT);
        assert!(!err.is_permanent());
        match cr.recv().await.unwrap() {
            Some(Message::Reject(r)) => assert_eq!(r.reason, RejectReason::HandshakeTimeout),
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    /// A handshake given what an earlier step left of its limit ends at the deadline
    /// and names the whole limit, as configured: naming what was left, it sent an
    /// operator after "within 1s" when the file said ten.
    #[tokio::test(start_paused = true)]
    async fn a_handshake_sharing_its_limit_ends_at_its_deadline_and_names_the_whole_limit() {
        let ((_cr, _cw), (mut sr, mut sw)) = pair();
        let started = Instant::now();
        let left = Duration::from_secs(1);
        let limit = Limit::shared(started + left, HANDSHAKE_TIMEOUT);
        let err = server_handshake(&mut sr, &mut sw, limit, authorize).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(d) if d == HANDSHAKE_TIMEOUT), "{err}");
        assert_eq!(started.elapsed(), left);
    }

    /// The deadline covers every read of the handshake, not only the first: a client
    /// that sends its hello and then nothing, at either version, holds its connection
    /// slot no longer than one whose hello never came, and is told why.
    #[tokio::test(start_paused = true)]
    async fn a_client_silent_after_its_hello_times_out_and_is_told_so() {
        for versions in [vec![PROTOCOL_VERSION], vec![1, 2]] {
            let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
            cw.send(&Message::Hello(Hello { versions: versions.clone(), ..consumer_hello("people") })).await.unwrap();
            let started = Instant::now();
            let server = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize);
            let err = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, server)
                .await
                .unwrap_or_else(|_| panic!("versions {versions:?}: the handshake outlived its deadline"))
                .unwrap_err();
            assert!(matches!(err, HandshakeError::Timeout(d) if d == HANDSHAKE_TIMEOUT), "{err}");
            assert_eq!(started.elapsed(), HANDSHAKE_TIMEOUT, "versions {versions:?}");
            assert!(matches!(
                cr.recv().await.unwrap(),
                Some(Message::Challenge { .. } | Message::MutualChallenge { .. })
            ));
            match cr.recv().await.unwrap() {
                Some(Message::Reject(r)) => assert_eq!(r.reason, RejectReason::HandshakeTimeout),
                other => panic!("expected a reject, got {other:?}"),
            }
        }
    }

    /// The same on the client's side: a provider that challenges and then says nothing,
    /// at either version, ends the handshake at its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_provider_silent_after_its_challenge_times_out() {
        for mutual in [true, false] {
            let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
            let provider = async move {
                assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
                let nonce = [1; 32];
                let challenge = if mutual { Message::MutualChallenge { nonce } } else { Message::Challenge { nonce } };
                sw.send(&challenge).await.unwrap();
                let _answer = sr.recv().await;
                std::future::pending::<()>().await;
            };
            let limit = Duration::from_secs(3);
            let secret = Secret::new(SECRET).unwrap();
            let hello = Hello { versions: SUPPORTED_VERSIONS.to_vec(), ..consumer_hello("people") };
            let started = Instant::now();
            let client = client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, limit);
            let client = async { tokio::time::timeout(limit * 3, client).await };
            let err = tokio::select! {
                client = client => client.unwrap_or_else(|_| panic!("mutual {mutual}: the handshake outlived its deadline")),
                () = provider => unreachable!(),
            }
            .unwrap_err();
            assert!(matches!(err, HandshakeError::Timeout(d) if d == limit), "mutual {mutual}: {err}");
            assert_eq!(started.elapsed(), limit, "mutual {mutual}");
        }
    }

    /// A client holds a provider to the handshake's frame limit as the provider holds
    /// it: before the provider proved anything, whatever answers on its address cannot
    /// make the client wait for, or buffer, a frame of up to 16 MiB.
    #[tokio::test(start_paused = true)]
    async fn a_provider_s_frame_over_the_handshake_limit_is_refused_at_its_prefix() {
        let ((mut cr, mut cw), (sr, sw)) = pair();
        let provider = async move {
            let mut sr = sr;
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            let announced = u32::try_from(HANDSHAKE_MAX_FRAME + 1).unwrap();
            let mut raw = sw.into_frames().into_inner();
            raw.write_all(&announced.to_be_bytes()).await.unwrap();
            std::future::pending::<()>().await;
        };
        let secret = Secret::new(SECRET).unwrap();
        let hello = consumer_hello("people");
        let limit = Duration::from_secs(3);
        let err = tokio::select! {
            client = client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, limit) => client.unwrap_err(),
            () = provider => unreachable!(),
        };
        assert!(
            matches!(&err, HandshakeError::Wire(WireError::FrameTooLarge { len, max })
                if (*len, *max) == (HANDSHAKE_MAX_FRAME + 1, HANDSHAKE_MAX_FRAME)),
            "{err}"
        );
        assert_eq!(cr.max_frame(), MAX_FRAME, "the reader's own limit is restored");
    }

    /// A provider must choose among the versions the client offered: a client of
    /// version 1 only, welcomed at version 2, would take the session on terms it does not
    /// speak (an ack after a refresh-only poll that its provider never waits for, an
    /// increment its peer decodes).
    #[tokio::test]
    async fn a_welcome_at_a_version_the_client_did_not_offer_is_refused() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let provider = async move {
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            sw.send(&Message::Challenge { nonce: [1; 32] }).await.unwrap();
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Auth { .. })));
            sw.send(&Message::Welcome(impostor_welcome(2))).await.unwrap();
        };
        let secret = Secret::new(SECRET).unwrap();
        let hello = Hello { versions: vec![1], ..consumer_hello("people") };
        let (client, ()) = tokio::join!(
            client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT),
            provider
        );
        let err = client.unwrap_err();
        assert!(matches!(err, HandshakeError::BadVersion(2)), "{err}");
        assert!(err.is_permanent());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_times_out_on_a_silent_provider() {
        let ((mut cr, mut cw), (_sr, _sw)) = pair();
        let limit = Duration::from_secs(3);
        let started = Instant::now();
        let secret = Secret::new(SECRET).unwrap();
        let err =
            client_handshake(&mut cr, &mut cw, &consumer_hello("people"), &secret, ProviderProof::Optional, limit)
                .await
                .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(d) if d == limit), "{err}");
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test]
    async fn a_message_out_of_turn_is_a_protocol_violation() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        cw.send(&Message::Ping { seq: 1 }).await.unwrap();
        let err = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize).await.unwrap_err();
        assert_eq!(err.reject_reason(), Some(RejectReason::ProtocolViolation));
        match cr.recv().await.unwrap() {
            Some(Message::Reject(r)) => assert!(r.detail.contains("expected hello, got ping"), "{}", r.detail),
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_and_oversize_hellos_are_refused_with_a_reason() {
        let mut garbage = vec![0, 0, 0, 3, 0xEE, 0xEE, 0xEE];
        garbage.extend_from_slice(&crc32fast::hash(&[0xEE; 3]).to_be_bytes());
        let damaged = vec![0, 0, 0, 3, 0xEE, 0xEE, 0xEE, 0, 0, 0, 0];
        for bytes in [garbage, damaged, u32::try_from(HANDSHAKE_MAX_FRAME + 1).unwrap().to_be_bytes().to_vec()] {
            let (a, mut b) = duplex(PIPE);
            let (mut sr, mut sw) = split(a);
            b.write_all(&bytes).await.unwrap();
            let err = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize).await.unwrap_err();
            assert!(matches!(&err, HandshakeError::Wire(w) if w.is_protocol_violation()), "{err}");
            assert_eq!(sr.max_frame(), MAX_FRAME, "the reader's own limit is restored");
            let (mut cr, _) = split(b);
            match cr.recv().await.unwrap() {
                Some(Message::Reject(r)) => assert_eq!(r.reason, RejectReason::ProtocolViolation),
                other => panic!("expected a reject, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_is_not_tether_is_named_by_its_first_bytes() {
        let (a, mut b) = duplex(PIPE);
        let (mut sr, mut sw) = split(a);
        b.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let err = server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize).await.unwrap_err();
        let HandshakeError::Foreign(peer) = &err else { panic!("expected a foreign peer, got {err}") };
        assert_eq!(peer.kind(), Some(crate::foreign::ForeignKind::Http));
        assert!(err.to_string().contains("its first bytes are \"GET \""), "{err}");
        assert!(!err.is_permanent());
        assert_eq!(sr.max_frame(), MAX_FRAME, "the reader's own limit is restored");
    }

    #[tokio::test]
    async fn a_provider_that_is_not_tether_is_named_by_its_first_bytes() {
        let (a, mut b) = duplex(PIPE);
        let (mut cr, mut cw) = split(a);
        // A TLS alert record: what a TLS server answers to a plain-text hello.
        b.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await.unwrap();
        let secret = Secret::new(SECRET).unwrap();
        let err = client_handshake(
            &mut cr,
            &mut cw,
            &consumer_hello("people"),
            &secret,
            ProviderProof::Optional,
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap_err();
        let HandshakeError::Foreign(peer) = &err else { panic!("expected a foreign peer, got {err}") };
        assert_eq!(peer.kind(), Some(crate::foreign::ForeignKind::Tls), "{err}");
    }

    #[tokio::test]
    async fn an_oversize_frame_after_the_first_message_is_not_a_stranger() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let server = async {
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
            sw.send(&Message::Challenge { nonce: [7; 32] }).await.unwrap();
            assert!(matches!(sr.recv().await.unwrap(), Some(Message::Auth { .. })));
            // Four bytes that would read as "GET " had they come first.
            sw.into_frames().into_inner().write_all(b"GET ").await.unwrap();
        };
        let secret = Secret::new(SECRET).unwrap();
        let hello = consumer_hello("people");
        let (client, ()) = tokio::join!(
            client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT),
            server
        );
        let err = client.unwrap_err();
        assert!(matches!(&err, HandshakeError::Wire(WireError::FrameTooLarge { .. })), "{err}");
    }

    #[tokio::test]
    async fn after_the_handshake_full_size_frames_are_accepted_again() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = pair();
        let secret = Secret::new(SECRET).unwrap();
        let hello = consumer_hello("people");
        let (client, server) = tokio::join!(
            client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT),
            server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize),
        );
        client.unwrap();
        server.unwrap();
        assert_eq!((cr.max_frame(), sr.max_frame()), (MAX_FRAME, MAX_FRAME));
    }

    #[tokio::test]
    async fn a_proven_welcome_at_an_older_version_without_the_secret_is_a_bad_proof() {
        let err = answered_with(true, Message::ProvenWelcome { welcome: impostor_welcome(2), proof: [0; 32] }).await;
        assert!(matches!(err, HandshakeError::BadProof), "{err}");
    }

    #[tokio::test]
    async fn a_plain_welcome_after_offering_the_proof_is_refused() {
        let err = answered_with(true, Message::Welcome(impostor_welcome(2))).await;
        assert!(matches!(err, HandshakeError::WelcomeUnproven(2)), "{err}");
        assert!(err.is_permanent());
    }

    /// Whoever answers at the provider's address may refuse us with any text: it reaches
    /// the client's log and status on one line, with no terminal escapes.
    #[tokio::test]
    async fn a_strangers_refusal_or_goodbye_is_shown_without_control_characters() {
        let forged = "x\n2026-12-05T08:00:00Z  INFO refresh complete\u{1b}[2J";
        for answer in [
            Message::Reject(Reject::new(RejectReason::BadCredentials, forged)),
            Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: forged.into() },
        ] {
            let err = against(ProviderProof::Optional, |mut sr: Reader, mut sw: Writer| async move {
                assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
                sw.send(&answer).await.unwrap();
            })
            .await
            .unwrap_err();
            let said = err.to_string();
            assert!(said.contains("x\\n2026-12-05T08:00:00Z  INFO refresh complete\\u{1b}[2J"), "{said:?}");
            assert!(!said.chars().any(char::is_control), "{said:?}");
        }
    }

    #[tokio::test]
    async fn a_goodbye_before_the_provider_proved_itself_is_not_permanent_whatever_it_says() {
        for reason in [GoodbyeReason::CredentialsRevoked, GoodbyeReason::RefreshRequired, GoodbyeReason::Shutdown] {
            let err = against(ProviderProof::Optional, |mut sr: Reader, mut sw: Writer| async move {
                assert!(matches!(sr.recv().await.unwrap(), Some(Message::Hello(_))));
                sw.send(&Message::Goodbye { reason, detail: "from a stranger".into() }).await.unwrap();
            })
            .await
            .unwrap_err();
            assert!(matches!(&err, HandshakeError::Goodbye { reason: r, .. } if *r == reason), "{err}");
            assert!(!err.is_permanent(), "{reason:?}");
        }
    }

    /// A stream that records every byte that passes through it, both ways.
    struct Tap {
        inner: DuplexStream,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Tap {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
            let new = buf.filled()[before..].to_vec();
            self.seen.lock().unwrap().extend_from_slice(&new);
            poll
        }
    }

    impl AsyncWrite for Tap {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
            let poll = Pin::new(&mut self.inner).poll_write(cx, data);
            if let Poll::Ready(Ok(n)) = poll {
                self.seen.lock().unwrap().extend_from_slice(&data[..n]);
            }
            poll
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn the_secret_never_crosses_the_wire() {
        let (a, b) = duplex(PIPE);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut cr, mut cw) = split(Tap { inner: a, seen: seen.clone() });
        let (mut sr, mut sw) = split(b);
        let secret = Secret::new(SECRET).unwrap();
        let hello = consumer_hello("people");
        let (client, server) = tokio::join!(
            client_handshake(&mut cr, &mut cw, &hello, &secret, ProviderProof::Optional, HANDSHAKE_TIMEOUT),
            server_handshake(&mut sr, &mut sw, HANDSHAKE_TIMEOUT, authorize),
        );
        client.unwrap();
        server.unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.len() > 100, "the whole conversation was recorded");
        assert!(
            seen.windows(8).all(|w| !SECRET.windows(8).any(|s| s == w)),
            "no 8-byte run of the secret is on the wire"
        );
    }

    /// How a client that leaves before the handshake is done reads on the provider's
    /// side, over real loopback TCP (a reset needs a kernel): having sent nothing, a
    /// FIN and a reset are both `Closed` unheard (a port probe, which the provider logs
    /// at debug; HAProxy's checks reset); a reset after half a frame is a failure of
    /// the stream, and one after a whole hello is `Closed` heard.
    #[tokio::test]
    async fn a_client_leaving_mid_handshake_is_closed_or_reset_and_heard_or_not() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = crate::codec::encode(&Message::Hello(consumer_hello("people"))).unwrap();
        let mut framed = Vec::new();
        crate::frame::FrameWriter::new(&mut framed).write_frame(&hello).await.unwrap();
        for (sends, reset, expect) in [
            (&[][..], false, "closed unheard"),
            (&[][..], true, "reset unheard"),
            (&framed[..framed.len() / 2], true, "i/o"),
            (&framed[..], true, "reset heard"),
        ] {
            let client = async {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.write_all(sends).await.unwrap();
                // Whatever the provider answers is read, so that the close comes after it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if reset {
                    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
                }
                drop(stream);
            };
            let server = async {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut r, mut w) = crate::connection::from_tcp(stream).unwrap();
                server_handshake(&mut r, &mut w, HANDSHAKE_TIMEOUT, authorize).await
            };
            let ((), got) = tokio::join!(client, server);
            let said = match got {
                Err(HandshakeError::Closed { heard: false, reset: false }) => "closed unheard",
                Err(HandshakeError::Closed { heard: false, reset: true }) => "reset unheard",
                Err(HandshakeError::Closed { heard: true, reset: true }) => "reset heard",
                Err(HandshakeError::Wire(WireError::Io(ref e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    "i/o"
                }
                ref other => panic!("{expect}: {other:?}"),
            };
            assert_eq!(said, expect, "{got:?}");
        }
    }
}
