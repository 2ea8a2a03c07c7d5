//! Wire messages: everything a provider, a consumer and a writer client say to each
//! other, one [`Message`] per frame. This is the layer above `codec` (which turns a
//! message into a payload) and below the session logic in the provider and consumer
//! crates (which decides what to send when). `docs/protocol.md` is the normative
//! description of when each message may be sent.
//!
//! Compatibility: every enum here is encoded by its variant index, so variants only
//! ever grow at the end, and a new variant is sent only to peers whose negotiated
//! version knows it. Structs are encoded as their fields in order with no names, so any
//! change to a struct's fields (or a variant's) needs a new protocol version,
//! negotiated through [`Hello::versions`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::cookie::{Cookie, HistoryId};
use crate::csn::Csn;
use crate::entry::{Entry, EntryUuid};
use crate::scope::SearchSpec;

/// The protocol version this build prefers.
pub const PROTOCOL_VERSION: u16 = 3;

/// Every protocol version this build can speak, oldest first. The handshake picks the
/// highest version both sides list. Version 2 is version 1 with
/// [`ModOp::Increment`](crate::change::ModOp::Increment) in writer requests and a
/// refresh-only consumer's `Ack` of its refresh ([`POLL_ACK_VERSION`]); version 3 adds
/// the provider's proof that it knows the secret ([`MUTUAL_AUTH_VERSION`]). Builds speak
/// all three, so a provider and its consumers can be upgraded one at a time.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2, PROTOCOL_VERSION];

/// The first version whose handshake proves the provider to the client as well as the
/// client to the provider ([`Message::MutualChallenge`], [`Message::MutualAuth`],
/// [`Message::ProvenWelcome`]). Before it, anything that answered on the provider's
/// address was believed, so on plain TCP whoever could take that address could feed a
/// consumer a refresh that emptied its replica.
pub const MUTUAL_AUTH_VERSION: u16 = 3;

/// The first version in which a refresh-only consumer acknowledges its refresh once it
/// is durable, and the provider waits for that before its goodbye. At version 1 the
/// provider said goodbye and closed at once, so an `Ack` sent then could meet a closed
/// socket (its reset can discard the goodbye before the consumer reads it), and the
/// provider only learned a poller's position at its next poll.
pub const POLL_ACK_VERSION: u16 = 2;

/// The first version whose writer requests may carry an increment: a provider of
/// version 1 could not decode one and would close the session, leaving the writer
/// unsure whether anything before it applied.
pub const INCREMENT_VERSION: u16 = 2;

/// Length of the handshake challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Length of the handshake MAC (HMAC-SHA256 output).
pub const MAC_LEN: usize = 32;

/// How a consumer replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Refresh, then the provider says goodbye (`refresh-complete`); the consumer polls
    /// again after its interval.
    RefreshOnly,
    /// Refresh, then stay connected and receive each change as it commits.
    RefreshAndPersist,
}

impl Mode {
    /// The config and status word for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RefreshOnly => "refresh-only",
            Mode::RefreshAndPersist => "refresh-and-persist",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a mode word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode {0:?}: expected refresh-and-persist or refresh-only")]
pub struct ModeParseError(String);

impl FromStr for Mode {
    type Err = ModeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refresh-only" => Ok(Mode::RefreshOnly),
            "refresh-and-persist" => Ok(Mode::RefreshAndPersist),
            _ => Err(ModeParseError(s.to_owned())),
        }
    }
}

/// What a connecting client wants to be.
// One per connection, built once: boxing the consumer's fields would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A replica following one agreement.
    Consumer {
        /// The agreement name, which selects the provider's `[[consumer]]` entry and
        /// with it the secret and the widest allowed scope.
        agreement: String,
        /// Refresh-only or refresh-and-persist.
        mode: Mode,
        /// The consumer's durable position, if it has one; decides the refresh kind.
        cookie: Option<Cookie>,
        /// The region it replicates; must lie within the agreement's allowed base.
        spec: SearchSpec,
        /// Where an interrupted full or present refresh of this agreement stood, from
        /// the provider's last `RefreshProgress`; the provider continues it if it still
        /// can (see [`ResumePoint`]).
        resume: Option<ResumePoint>,
    },
    /// A client submitting changes and searches, with the `[writer]` credentials.
    Writer,
}

impl Role {
    /// The role's name for logs and the MAC: `consumer` or `writer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Role::Consumer { .. } => "consumer",
            Role::Writer => "writer",
        }
    }

    /// The agreement name for a consumer, `None` for a writer.
    pub fn agreement(&self) -> Option<&str> {
        match self {
            Role::Consumer { agreement, .. } => Some(agreement),
            Role::Writer => None,
        }
    }
}

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the client speaks; the provider picks the highest it shares.
    pub versions: Vec<u16>,
    /// Who the client is (host or instance name), for the provider's logs and status,
    /// and bound into the MAC.
    pub client_id: String,
    /// What the client wants to do.
    pub role: Role,
}

/// The provider's acceptance, ending the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u16,
    /// The history the provider's store is in now (it began at the provider's start):
    /// every change this session sends belongs to it. A consumer that applies part of a
    /// delta refresh, which moves its replica past its cookie, records this history with
    /// the newest CSN applied, so the next provider can tell whether that data is its own
    /// (it was the store id in the first protocol text; the bytes are the same).
    pub history: HistoryId,
    /// Identifies this session in both sides' logs.
    pub session_id: u64,
    /// How often the provider pings an idle session, in milliseconds.
    pub keepalive_interval_ms: u64,
    /// How long the provider waits for any message before dropping the session, in
    /// milliseconds; the client should ping well within it.
    pub keepalive_timeout_ms: u64,
}

impl Welcome {
    /// [`Welcome::keepalive_interval_ms`] as a duration.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    /// [`Welcome::keepalive_timeout_ms`] as a duration.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }
}

/// Why the provider refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// No protocol version in common.
    VersionMismatch,
    /// The MAC did not verify: wrong secret (or a tampered handshake).
    BadCredentials,
    /// The provider has no such agreement.
    UnknownAgreement,
    /// The requested region lies outside what the agreement allows.
    ScopeNotAllowed,
    /// The provider is at its connection limit.
    TooManyConnections,
    /// The client sent something other than the next handshake message.
    ProtocolViolation,
    /// The client did not finish the handshake within the deadline.
    HandshakeTimeout,
}

impl RejectReason {
    /// The reason's name in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::VersionMismatch => "version-mismatch",
            RejectReason::BadCredentials => "bad-credentials",
            RejectReason::UnknownAgreement => "unknown-agreement",
            RejectReason::ScopeNotAllowed => "scope-not-allowed",
            RejectReason::TooManyConnections => "too-many-connections",
            RejectReason::ProtocolViolation => "protocol-violation",
            RejectReason::HandshakeTimeout => "handshake-timeout",
        }
    }

    /// Whether reconnecting with the same configuration cannot succeed: the operator
    /// has to change a secret, the config or a version first, so the client should
    /// back off at its longest delay.
    pub fn is_permanent(self) -> bool {
        match self {
            RejectReason::VersionMismatch
            | RejectReason::BadCredentials
            | RejectReason::UnknownAgreement
            | RejectReason::ScopeNotAllowed => true,
            RejectReason::TooManyConnections | RejectReason::ProtocolViolation | RejectReason::HandshakeTimeout => {
                false
            }
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most of a peer's free text (a `Reject`'s or a `Goodbye`'s detail) that is shown.
pub const MAX_SHOWN: usize = 1_024;

/// A peer's free text as it may be shown in a log line or a status: control characters
/// escaped (`\n`, `\u{1b}`), and the characters that break a line or reorder the text
/// around them (U+2028, U+2029, the bidirectional marks and overrides: `\u{202e}` shows
/// what follows it backwards), and cut at [`MAX_SHOWN`] bytes. Before the handshake the
/// peer is anyone who answers at the provider's address, and a `Reject` whose detail
/// held a newline and a forged log line, or a terminal's escape sequences, was written
/// as it came into the consumer's log and its `status` (found by an audit: a fake
/// `refresh complete` line, and a screen cleared and turned red).
pub fn shown(text: String) -> String {
    if text.len() <= MAX_SHOWN && !text.chars().any(unshowable) {
        return text;
    }
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN) + 32);
    for (at, c) in text.char_indices() {
        if out.len() >= MAX_SHOWN {
            out.push_str(&format!("... ({} more bytes)", text.len() - at));
            break;
        }
        if unshowable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` is shown escaped in a peer's text (see [`shown`]); the provider refuses a
/// `client_id` holding one, since it names the session's log lines as it came.
pub(crate) fn unshowable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A handshake refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// What went wrong, for the client's state machine.
    pub reason: RejectReason,
    /// Human-readable detail for the client's status and logs (never a secret).
    pub detail: String,
}

impl Reject {
    /// A refusal with its detail.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.reason, self.detail)
        }
    }
}

pub use crate::repl::{RefreshKind, ReplOp, ResumePoint};

/// Why a side is closing the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GoodbyeReason {
    /// The sender's process is shutting down.
    Shutdown,
    /// A refresh-only session delivered its refresh.
    RefreshComplete,
    /// The agreement's credentials were removed or changed; do not retry until the
    /// configuration changes.
    CredentialsRevoked,
    /// The consumer fell too far behind for the provider to keep serving it live.
    TooSlow,
    /// The peer missed its keepalive deadline.
    KeepaliveTimeout,
    /// Nothing was received for the idle timeout.
    IdleTimeout,
    /// An operator stopped the agreement.
    AdminStop,
    /// The peer broke the protocol (unexpected message, undecodable frame).
    ProtocolError,
    /// The consumer's position can no longer be served incrementally; it must reconnect
    /// and take a fresh refresh.
    RefreshRequired,
    /// The provider's store has never held a change, and the consumer has a position in
    /// a directory that had some: the provider was started on the wrong folder (a
    /// mistyped `data_dir`, a volume not mounted) or lost its store, and a full refresh
    /// from it would empty the replica. Keep the replica and retry at the longest delay.
    EmptyStore,
    /// The region's base names no entry in the provider's directory, and the consumer
    /// needs a full refresh, which could bring nothing (a mistyped `base`, or a branch
    /// not created yet). Retry at the longest delay.
    NoSuchBase,
}

impl GoodbyeReason {
    /// The reason's name in logs and status (SPEC's words).
    pub fn as_str(self) -> &'static str {
        match self {
            GoodbyeReason::Shutdown => "shutdown",
            GoodbyeReason::RefreshComplete => "refresh-complete",
            GoodbyeReason::CredentialsRevoked => "credentials-revoked",
            GoodbyeReason::TooSlow => "too-slow",
            GoodbyeReason::KeepaliveTimeout => "keepalive-timeout",
            GoodbyeReason::IdleTimeout => "idle-timeout",
            GoodbyeReason::AdminStop => "admin-stop",
            GoodbyeReason::ProtocolError => "protocol-error",
            GoodbyeReason::RefreshRequired => "refresh-required",
            GoodbyeReason::EmptyStore => "empty-store",
            GoodbyeReason::NoSuchBase => "no-such-base",
        }
    }
}

impl GoodbyeReason {
    /// Whether the session ended on a state only an operator (or time) changes on the
    /// provider's side: its store missing, or the region's base. The consumer keeps its
    /// replica, retries at its longest delay and logs it as a warning.
    pub fn awaits_operator(self) -> bool {
        matches!(self, GoodbyeReason::EmptyStore | GoodbyeReason::NoSuchBase)
    }
}

impl fmt::Display for GoodbyeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the provider refused a client's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteErrorKind {
    /// The target entry does not exist.
    NoSuchObject,
    /// An entry with that DN exists already.
    AlreadyExists,
    /// The new entry's parent does not exist.
    NoParent,
    /// The entry has children, so it cannot be deleted (or moved, where refused).
    NotAllowedOnNonLeaf,
    /// The change itself is invalid (bad attribute, missing value, RDN rules).
    InvalidChange,
    /// The client may not make this change.
    NotAuthorized,
    /// The provider failed (store error); the change was not applied.
    Internal,
    /// The provider's storage failed while committing the change or making it durable:
    /// whether it reached the disk is unknown until the provider is back (where it was
    /// not durable, a restart leaves it out, so no replica ever saw it).
    StoreFailed,
}

impl WriteErrorKind {
    /// The kind's name in logs and client output.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteErrorKind::NoSuchObject => "no-such-object",
            WriteErrorKind::AlreadyExists => "already-exists",
            WriteErrorKind::NoParent => "no-parent",
            WriteErrorKind::NotAllowedOnNonLeaf => "not-allowed-on-non-leaf",
            WriteErrorKind::InvalidChange => "invalid-change",
            WriteErrorKind::NotAuthorized => "not-authorized",
            WriteErrorKind::Internal => "internal",
            WriteErrorKind::StoreFailed => "store-failed",
        }
    }
}

impl fmt::Display for WriteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a write request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Applied atomically and durably.
    Committed {
        /// The CSN the change committed at.
        csn: Csn,
        /// The entry it touched (new for an add).
        uuid: EntryUuid,
    },
    /// Refused; nothing changed.
    Refused {
        /// Why, for the client's logic.
        kind: WriteErrorKind,
        /// Why, for a human.
        message: String,
    },
}

/// One wire message. Which side sends each, and when, is in `docs/protocol.md`.
///
/// Variants only ever grow at the end: the variant index is the wire tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Client -> provider, first message: versions, identity, role.
    Hello(Hello),
    /// Provider -> client: prove knowledge of the secret by MACing this nonce.
    Challenge {
        /// Fresh random bytes, never reused, so a recorded `Auth` cannot be replayed.
        nonce: [u8; NONCE_LEN],
    },
    /// Client -> provider: the MAC over the nonce and the client's identity.
    Auth {
        /// HMAC-SHA256 as described in `auth`.
        mac: [u8; MAC_LEN],
    },
    /// Provider -> client: the handshake succeeded.
    Welcome(Welcome),
    /// Provider -> client: the handshake failed; the provider closes after sending it.
    Reject(Reject),
    /// Provider -> consumer: a refresh starts and which kind it is.
    RefreshBegin {
        /// Full, delta or present.
        kind: RefreshKind,
        /// Whether this continues the interrupted refresh named by the `Hello`'s resume
        /// point: the consumer then keeps filling the shadow it has, instead of
        /// starting a new one.
        resumed: bool,
    },
    /// Provider -> consumer: refresh data (full: upserts; delta: upserts and deletes,
    /// coalesced to the latest state per entry; present: the changed entries).
    Batch {
        /// The ops, applied in order.
        ops: Vec<ReplOp>,
    },
    /// Provider -> consumer, present refresh only: unchanged entries, named by uuid.
    PresentBatch {
        /// Entries the consumer keeps as they are.
        uuids: Vec<EntryUuid>,
    },
    /// Provider -> consumer: the refresh is complete; the cookie covers all of it.
    RefreshDone {
        /// The consumer's position once everything before this is applied.
        cookie: Cookie,
    },
    /// Provider -> consumer, persist phase: one committed change.
    Change {
        /// The change.
        op: ReplOp,
        /// The position it brings the consumer to.
        cookie: Cookie,
    },
    /// Consumer -> provider: the consumer's durable position, giving the provider exact
    /// lag and a changelog hold point.
    Ack {
        /// Everything up to here is applied and durable on the consumer.
        cookie: Cookie,
    },
    /// Either side: are you there? Answered by `Pong` with the same `seq`.
    Ping {
        /// Matches the answer to the question.
        seq: u64,
    },
    /// Either side: the answer to `Ping`.
    Pong {
        /// The `seq` of the ping answered.
        seq: u64,
    },
    /// Provider -> consumer: the consumer's position cannot be served incrementally
    /// any more; it must reconnect and take a fresh refresh.
    RefreshRequired {
        /// Why, for the consumer's logs.
        reason: String,
    },
    /// Either side: the session ends now, and why.
    Goodbye {
        /// Why, for the peer's state machine.
        reason: GoodbyeReason,
        /// Why, for a human.
        detail: String,
    },
    /// Writer -> provider: apply one change.
    WriteRequest {
        /// Chosen by the client, echoed in the result.
        id: u64,
        /// The change.
        change: Change,
    },
    /// Provider -> writer: the outcome of a `WriteRequest`.
    WriteResult {
        /// The request's id.
        id: u64,
        /// Committed or refused.
        outcome: WriteOutcome,
    },
    /// Writer -> provider: search the provider's store.
    SearchRequest {
        /// Chosen by the client, echoed in the replies.
        id: u64,
        /// What to search.
        spec: SearchSpec,
    },
    /// Provider -> writer: some of the entries found, in tree order.
    SearchEntries {
        /// The request's id.
        id: u64,
        /// The entries of this batch.
        entries: Vec<Entry>,
    },
    /// Provider -> writer: the search is complete.
    SearchDone {
        /// The request's id.
        id: u64,
        /// How many entries were sent in all.
        count: u64,
    },
    /// Provider -> consumer, persist phase: the changes up to `cookie` did not concern
    /// this consumer's region; its position moves on without data, so its cookie (and
    /// the lag the provider reports) stays exact.
    Advance {
        /// The position the consumer is now at.
        cookie: Cookie,
    },
    /// Provider -> consumer, during the scan of a full or present refresh: everything
    /// sent so far is covered by this resume point. A consumer that keeps it with what
    /// it applied can continue from here after any interruption.
    RefreshProgress {
        /// Hand this back in `Hello` to continue.
        resume: ResumePoint,
    },
    /// Provider -> client, in place of `Challenge` when the version chosen is
    /// [`MUTUAL_AUTH_VERSION`] or later: prove knowledge of the secret by MACing this
    /// nonce, and send a nonce of your own for the provider to prove it too.
    MutualChallenge {
        /// Fresh random bytes, as in `Challenge`.
        nonce: [u8; NONCE_LEN],
    },
    /// Client -> provider, the answer to `MutualChallenge`.
    MutualAuth {
        /// The same MAC as in `Auth`.
        mac: [u8; MAC_LEN],
        /// The client's fresh random bytes, which the provider's proof covers, so a
        /// recorded proof cannot be replayed to another client.
        nonce: [u8; NONCE_LEN],
    },
    /// Provider -> client, in place of `Welcome` after `MutualAuth`: the handshake
    /// succeeded, and the provider knows the secret.
    ProvenWelcome {
        /// What `Welcome` says.
        welcome: Welcome,
        /// HMAC-SHA256 over both nonces, the client's identity and the welcome, as
        /// described in `auth`.
        proof: [u8; MAC_LEN],
    },
}

impl Message {
    /// The message's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Challenge { .. } => "challenge",
            Message::Auth { .. } => "auth",
            Message::Welcome(_) => "welcome",
            Message::Reject(_) => "reject",
            Message::RefreshBegin { .. } => "refresh-begin",
            Message::Batch { .. } => "batch",
            Message::PresentBatch { .. } => "present-batch",
            Message::RefreshDone { .. } => "refresh-done",
            Message::Change { .. } => "change",
            Message::Ack { .. } => "ack",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::RefreshRequired { .. } => "refresh-required",
            Message::Goodbye { .. } => "goodbye",
            Message::WriteRequest { .. } => "write-request",
            Message::WriteResult { .. } => "write-result",
            Message::SearchRequest { .. } => "search-request",
            Message::SearchEntries { .. } => "search-entries",
            Message::SearchDone { .. } => "search-done",
            Message::Advance { .. } => "advance",
            Message::RefreshProgress { .. } => "refresh-progress",
            Message::MutualChallenge { .. } => "mutual-challenge",
            Message::MutualAuth { .. } => "mutual-auth",
            Message::ProvenWelcome { .. } => "proven-welcome",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{self, CodecError};
    use crate::dn::{Dn, Rdn};
    use crate::entry::Attributes;
    use crate::scope::Scope;

    pub(crate) fn entry(name: &str) -> Entry {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["person".into(), "top".into()]).unwrap();
        attrs.add("cn", [name.into()]).unwrap();
        attrs.add("jpegPhoto", [crate::entry::Value::from_bytes(vec![0xff, 0xd8, 0x00])]).unwrap();
        Entry {
            dn: Dn::parse(&format!("cn={name},ou=people,dc=example,dc=com")).unwrap(),
            uuid: EntryUuid::new_random(),
            csn: Csn(42),
            attrs,
        }
    }

    fn cookie() -> Cookie {
        Cookie { history: HistoryId::new_random(), csn: Csn(7) }
    }

    pub(crate) fn consumer_hello(agreement: &str) -> Hello {
        Hello {
            versions: vec![PROTOCOL_VERSION],
            client_id: "replica-1".into(),
            role: Role::Consumer {
                agreement: agreement.into(),
                mode: Mode::RefreshAndPersist,
                cookie: Some(cookie()),
                spec: SearchSpec {
                    base: Dn::parse("ou=people,dc=example,dc=com").unwrap(),
                    scope: Scope::Subtree,
                    filter: crate::filter::Filter::And(vec![
                        crate::filter::Filter::match_all(),
                        crate::filter::Filter::Not(Box::new(crate::filter::Filter::Present { attr: "x".into() })),
                    ]),
                    attrs: vec!["cn".into()],
                },
                resume: Some(ResumePoint {
                    kind: RefreshKind::Full,
                    since: Csn::ZERO,
                    start: cookie(),
                    cursor: Some(b"dc=com\0dc=example".to_vec()),
                }),
            },
        }
    }

    /// One sample of every variant, in wire-tag order.
    pub(crate) fn samples() -> Vec<Message> {
        let e = entry("Ann");
        vec![
            Message::Hello(consumer_hello("people")),
            Message::Challenge { nonce: [9; NONCE_LEN] },
            Message::Auth { mac: [3; MAC_LEN] },
            Message::Welcome(Welcome {
                version: 1,
                history: HistoryId::new_random(),
                session_id: 77,
                keepalive_interval_ms: 5_000,
                keepalive_timeout_ms: 20_000,
            }),
            Message::Reject(Reject::new(RejectReason::ScopeNotAllowed, "outside dc=example,dc=com")),
            Message::RefreshBegin { kind: RefreshKind::Present, resumed: true },
            Message::Batch {
                ops: vec![ReplOp::Upsert(e.clone()), ReplOp::Delete { uuid: EntryUuid::new_random(), csn: Csn(9) }],
            },
            Message::PresentBatch { uuids: vec![EntryUuid::new_random(), EntryUuid::new_random()] },
            Message::RefreshDone { cookie: cookie() },
            Message::Change { op: ReplOp::Upsert(e.clone()), cookie: cookie() },
            Message::Ack { cookie: cookie() },
            Message::Ping { seq: u64::MAX },
            Message::Pong { seq: 0 },
            Message::RefreshRequired { reason: "changelog trimmed".into() },
            Message::Goodbye { reason: GoodbyeReason::RefreshComplete, detail: String::new() },
            Message::WriteRequest {
                id: 1,
                change: Change::ModDn {
                    dn: e.dn.clone(),
                    new_rdn: Rdn::parse("cn=Bea").unwrap(),
                    delete_old_rdn: true,
                    new_superior: Some(Dn::parse("ou=staff,dc=example,dc=com").unwrap()),
                },
            },
            Message::WriteResult {
                id: 1,
                outcome: WriteOutcome::Refused { kind: WriteErrorKind::NoParent, message: "no ou=staff".into() },
            },
            Message::SearchRequest { id: 2, spec: SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap()) },
            Message::SearchEntries { id: 2, entries: vec![e] },
            Message::SearchDone { id: 2, count: 1 },
            Message::Advance { cookie: Cookie { history: HistoryId([9; 16]), csn: Csn(7) } },
            Message::RefreshProgress {
                resume: ResumePoint { kind: RefreshKind::Present, since: Csn(3), start: cookie(), cursor: None },
            },
            Message::MutualChallenge { nonce: [4; NONCE_LEN] },
            Message::MutualAuth { mac: [5; MAC_LEN], nonce: [6; NONCE_LEN] },
            Message::ProvenWelcome {
                welcome: Welcome {
                    version: MUTUAL_AUTH_VERSION,
                    history: HistoryId::new_random(),
                    session_id: 78,
                    keepalive_interval_ms: 5_000,
                    keepalive_timeout_ms: 20_000,
                },
                proof: [7; MAC_LEN],
            },
        ]
    }

    /// The wire tag of each variant. The match has no wildcard, so adding a variant
    /// fails to compile until it is given a tag here (at the end) and a sample above.
    fn wire_tag(m: &Message) -> u8 {
        match m {
            Message::Hello(_) => 0,
            Message::Challenge { .. } => 1,
            Message::Auth { .. } => 2,
            Message::Welcome(_) => 3,
            Message::Reject(_) => 4,
            Message::RefreshBegin { .. } => 5,
            Message::Batch { .. } => 6,
            Message::PresentBatch { .. } => 7,
            Message::RefreshDone { .. } => 8,
            Message::Change { .. } => 9,
            Message::Ack { .. } => 10,
            Message::Ping { .. } => 11,
            Message::Pong { .. } => 12,
            Message::RefreshRequired { .. } => 13,
            Message::Goodbye { .. } => 14,
            Message::WriteRequest { .. } => 15,
            Message::WriteResult { .. } => 16,
            Message::SearchRequest { .. } => 17,
            Message::SearchEntries { .. } => 18,
            Message::SearchDone { .. } => 19,
            Message::Advance { .. } => 20,
            Message::RefreshProgress { .. } => 21,
            Message::MutualChallenge { .. } => 22,
            Message::MutualAuth { .. } => 23,
            Message::ProvenWelcome { .. } => 24,
        }
    }

    #[test]
    fn every_variant_round_trips_with_its_pinned_tag() {
        let samples = samples();
        let names: std::collections::BTreeSet<&str> = samples.iter().map(Message::name).collect();
        assert_eq!(names.len(), samples.len(), "one sample per variant, each with its own name");
        for (i, msg) in samples.iter().enumerate() {
            assert_eq!(usize::from(wire_tag(msg)), i, "samples are in tag order");
            let bytes = codec::encode(msg).unwrap();
            assert_eq!(bytes[0], wire_tag(msg), "{} keeps its wire tag", msg.name());
            assert_eq!(codec::decode::<Message>(&bytes).unwrap(), *msg, "{}", msg.name());
        }
    }

    #[test]
    fn small_messages_stay_small() {
        assert_eq!(codec::encode(&Message::Ping { seq: 5 }).unwrap(), [11, 5]);
        // Tag, 16-byte store id, varint CSN.
        assert_eq!(codec::encode(&Message::Ack { cookie: cookie() }).unwrap().len(), 1 + 16 + 1);
        // Tag, varint length, 16 bytes per uuid: SPEC's "16 bytes per unchanged entry".
        let uuids = vec![EntryUuid::default(); 100];
        assert_eq!(codec::encode(&Message::PresentBatch { uuids }).unwrap().len(), 1 + 1 + 1600);
    }

    #[test]
    fn unknown_variant_tags_are_refused() {
        assert!(matches!(codec::decode::<Message>(&[200, 0]), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn a_dn_that_does_not_parse_is_refused() {
        // SearchRequest { id: 1, spec.base: "not a dn" ... }
        let mut bytes = vec![17, 1];
        bytes.push(8);
        bytes.extend_from_slice(b"not a dn");
        assert!(codec::decode::<Message>(&bytes).is_err());
    }

    #[test]
    fn words_match_the_spec() {
        assert_eq!("refresh-and-persist".parse::<Mode>(), Ok(Mode::RefreshAndPersist));
        assert_eq!(Mode::RefreshOnly.to_string(), "refresh-only");
        assert!("persist".parse::<Mode>().is_err());
        assert_eq!(GoodbyeReason::KeepaliveTimeout.to_string(), "keepalive-timeout");
        assert_eq!(GoodbyeReason::RefreshRequired.as_str(), "refresh-required");
        assert_eq!(RejectReason::BadCredentials.to_string(), "bad-credentials");
        assert_eq!(WriteErrorKind::NotAllowedOnNonLeaf.as_str(), "not-allowed-on-non-leaf");
        assert_eq!(RefreshKind::Delta.as_str(), "delta");
        assert_eq!(Reject::new(RejectReason::UnknownAgreement, "x").to_string(), "unknown-agreement: x");
    }

    /// A peer's text cannot begin a line of its own or drive the terminal, and a long
    /// one is cut; plain text of any script passes as it came.
    #[test]
    fn a_peers_text_is_shown_on_one_line_without_escapes_and_cut() {
        let forged = "x\n2026-12-05T08:00:00Z  INFO refresh complete\r\u{1b}[2J\u{1b}]0;title\u{7}".to_owned();
        let said = shown(forged);
        assert!(!said.chars().any(char::is_control), "{said:?}");
        assert_eq!(said, "x\\n2026-12-05T08:00:00Z  INFO refresh complete\\r\\u{1b}[2J\\u{1b}]0;title\\u{7}");
        assert_eq!(shown("caf\u{e9} \u{65e5}\u{672c} ok".to_owned()), "caf\u{e9} \u{65e5}\u{672c} ok");
        // A line separator, and an override that shows `gpj.exe` as `exe.jpg`.
        assert_eq!(shown("a\u{2028}b \u{202e}gpj.exe".to_owned()), "a\\u{2028}b \\u{202e}gpj.exe");
        let long = shown("\u{e9}".repeat(2_000));
        assert!(long.len() < MAX_SHOWN + 40 && long.ends_with("... (2976 more bytes)"), "{}", &long[1000..]);
    }

    mod prop {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Arbitrary bytes decode to a message or an error, never a panic; whatever
            /// decodes keeps the `frame_message` fuzz target's message properties.
            #[test]
            fn arbitrary_bytes_keep_the_message_properties(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                crate::properties::message(&bytes);
            }

            /// Valid encodings with one byte changed, or cut short, decode to a message or
            /// an error, never a panic: this reaches much deeper than random bytes. What
            /// decodes re-encodes to the same message, and its attributes are well formed.
            #[test]
            fn mutated_messages_keep_the_message_properties(which in 0usize..20, pos in any::<proptest::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
                let mut bytes = codec::encode(&samples()[which]).unwrap();
                let at = pos.index(bytes.len());
                if cut {
                    bytes.truncate(at);
                } else {
                    bytes[at] = byte;
                }
                crate::properties::message(&bytes);
            }

            /// Every sample message framed into one stream, delivered in random chunks
            /// with cancelled reads: the frame and message properties end to end.
            #[test]
            fn sample_streams_keep_the_frame_and_message_properties(chunk in any::<u8>(), cut in any::<proptest::sample::Index>()) {
                let payloads: Vec<Vec<u8>> = samples().iter().map(|m| codec::encode(m).unwrap()).collect();
                let mut stream = crate::properties::framed(&payloads);
                stream.truncate(cut.index(stream.len() + 1));
                crate::properties::frames_and_messages(&crate::properties::FrameCase::from_fuzz_input(&[&[0, chunk][..], &stream].concat()));
            }
        }

        /// A 12-byte message claiming a Vec of 2^62 ops is refused at once: bincode
        /// without a limit would try to allocate for the claim and abort the process.
        #[test]
        fn hostile_length_claims_are_refused_quickly() {
            // Batch tag, varint marker for u64, 2^62 little-endian, then 2 stray bytes.
            let mut hostile = vec![6, 253];
            hostile.extend_from_slice(&(1u64 << 62).to_le_bytes());
            hostile.extend_from_slice(&[0, 0]);
            assert_eq!(hostile.len(), 12);
            assert!(codec::decode::<Message>(&hostile).is_err());
            // The same claim on a string (RefreshRequired's reason): refused.
            let mut hostile = vec![13, 253];
            hostile.extend_from_slice(&(1u64 << 62).to_le_bytes());
            hostile.extend_from_slice(&[0, 0]);
            assert!(codec::decode::<Message>(&hostile).is_err());
        }
    }
}
