//! One replication session of an agreement: connect, handshake, receive the refresh and
//! (in persist mode) live changes, apply them durably, acknowledge, and end with a
//! [`Reason`].
//!
//! Three tasks with one job each:
//! - the **reader** only reads frames and forwards messages, stamping the time of every
//!   read that brings bytes (a refresh batch is one frame, which a slow link carries
//!   for longer than the keepalive timeout), so silence is measured even while the
//!   applier is busy;
//! - the **keepalive poller** pings every `keepalive.interval` and declares
//!   `keepalive-timeout` after `keepalive.timeout` without inbound bytes, whatever the
//!   reader or applier is doing;
//! - the **applier** (this task) applies each message to the replica on the session's
//!   store thread (a panic there becomes an `exception`, not a dead process), flushes,
//!   acks.
//!
//! Each task has a module of its own (`reader`, `keepalive`, `applier`); this one
//! connects, handshakes, starts them and ends the session.
//!
//! Apply rules: a full or present refresh goes into a shadow generation swapped in at
//! `RefreshDone`; a delta and live changes go straight to the replica, the live changes
//! already queued (up to `CHANGES_PER_APPLY`) in one transaction with the last one's
//! cookie, so a change and the position after it are never durable apart. Acks follow
//! flushes, never precede them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tether_config::certificate_watch::Watched as _;
use tether_config::info_or_debug;
use tether_protocol::auth::Secret;
use tether_protocol::connection::{self, BoxedRead, BoxedWrite, MessageReader, MessageWriter};
use tether_protocol::foreign::ForeignKind;
use tether_protocol::handshake::{client_handshake, HandshakeError, Limit, ProviderProof, MAX_RESUME_CURSOR};
use tether_protocol::liveness::Progress;
use tether_protocol::message::{
    GoodbyeReason, Hello, Message, Mode, RejectReason, Role, MUTUAL_AUTH_VERSION, SUPPORTED_VERSIONS,
};
use tether_protocol::{Cookie, RefreshKind, ResumePoint, SearchSpec};
use tether_store::{Replica, ReplicaStore, StoreError};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::ProofPolicy;
use crate::executor::Runner;
use crate::provider_certificate::Presented;
use crate::reason::{Reason, State};
use crate::status::{rfc3339_of_ms, Heard, StatusHandle};
use crate::tls::TlsClient;
use crate::transport::{self, Network, CONNECT_TIMEOUT};

/// Messages buffered between reader and applier.
mod applier;
mod keepalive;
mod reader;

use applier::Applier;
use keepalive::{keepalive_poller, Silence};
use reader::reader_loop;

const INBOUND_QUEUE: usize = 64;
/// Entries buffered between reader and applier (a batch counts its entries, anything
/// else one). During a refresh the reader decodes faster than the store takes entries, so
/// the queue fills up: counted in messages alone it held 64 decoded batches, about 80 MiB
/// of a consumer's memory at the default batch size. Four batches keep the applier fed.
const INBOUND_ENTRIES: usize = 2_000;
/// Live changes already waiting in the inbound queue are applied together, in one store
/// transaction with the last one's cookie, up to this many: a burst then costs one
/// transaction per run of queued changes instead of one per change, and the replica
/// still moves from one provider state to a later one atomically.
const CHANGES_PER_APPLY: usize = INBOUND_QUEUE;
/// How often received-but-unflushed changes are flushed and acknowledged.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// Limit on a single write to the provider (acks, pings, goodbye).
const SEND_LIMIT: Duration = Duration::from_secs(5);
/// How long a failed send looks in the inbound queue for the provider's goodbye (see
/// `Applier::goodbye_behind`): it was read before the reset, so it is there at once or
/// after the changes ahead of it.
const GOODBYE_LOOKUP: Duration = Duration::from_millis(250);
/// How long a poll whose refresh is durable and acknowledged waits for the provider's
/// `refresh-complete` goodbye, which follows the ack at once, before ending itself.
/// Nothing is left to receive: a provider that lost the ack (builds before the fix
/// of that, meeting one race) would otherwise hold the poll open for good.
const POLL_GOODBYE_WAIT: Duration = Duration::from_secs(10);

/// What a session needs to know about its agreement.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Agreement name.
    pub name: String,
    /// Provider `host:port`.
    pub provider: String,
    /// Refresh-only or persist.
    pub mode: Mode,
    /// The region replicated.
    pub spec: SearchSpec,
    /// The agreement's secret.
    pub secret: Secret,
    /// This consumer's id (stable per data_dir), sent in `Hello`.
    pub client_id: String,
    /// Close after this long without any inbound message.
    pub idle_timeout: Duration,
    /// Ping interval and silence limit; `None` disables the poller.
    pub keepalive: Option<(Duration, Duration)>,
    /// TLS towards the provider (`[agreement.tls]`); `None` for plain TCP.
    pub tls: Option<TlsClient>,
    /// The network to connect over ([`Network::Tcp`] outside the simulation).
    pub network: Network,
    /// When to refuse a provider that does not prove it knows the secret.
    pub provider_proof: ProofPolicy,
    /// The provider's addresses where a session connected and then failed in the
    /// handshake, tried after the others (see [`transport::FailedAddresses`]).
    pub failed_addresses: transport::FailedAddresses,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Why.
    pub reason: Reason,
    /// Detail for status and logs (the provider's words for a goodbye or rejection).
    pub detail: String,
    /// For `provider-goodbye`: the provider's reason.
    pub goodbye: Option<GoodbyeReason>,
    /// For `rejected`: the provider's reason.
    pub rejection: Option<RejectReason>,
    /// Whether a refresh-only session completed normally (not a failure).
    pub refresh_complete: bool,
    /// Whether the session got past the handshake (for backoff reset decisions).
    pub connected: bool,
    /// Whether retrying cannot fix the cause (a full disk, a damaged store): the
    /// agreement stops with the error in status instead of looping.
    pub fatal: bool,
    /// The provider's id for the session, once the handshake gave one: the line that
    /// reports the end names it, as every line of the session does (its span).
    pub session: Option<u64>,
    /// Whether the peer failed to prove it is the provider: like a wrong secret, this
    /// waits for an operator (or for the impostor to go), so retrying soon cannot help.
    pub unproven: bool,
}

impl Ended {
    /// A session end with no provider reason attached.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            goodbye: None,
            rejection: None,
            refresh_complete: false,
            connected: true,
            fatal: false,
            session: None,
            unproven: false,
        }
    }
}

/// Why the session was asked to stop from outside, set before cancelling.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    /// Cancelled to end the session.
    pub token: CancellationToken,
    /// The reason and detail to report and to say in the goodbye.
    why: Arc<std::sync::Mutex<Option<(Reason, &'static str)>>>,
}

impl StopSignal {
    /// Asks the session to end with `reason`; `detail` says why, in the goodbye and the
    /// log (the provider logs it beside the reason).
    pub fn stop(&self, reason: Reason, detail: &'static str) {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some((reason, detail));
        self.token.cancel();
    }

    /// How the session ends, `during` what it was doing when the stop came (empty once
    /// it runs).
    fn ended(&self, during: &str) -> Ended {
        let (reason, detail) =
            self.why.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or((Reason::Shutdown, "stopped"));
        Ended::new(reason, format!("{detail}{during}"))
    }
}

/// Runs one session to its end. `routine` marks a refresh-only poll that follows one
/// which completed: its connect and a delta that changes nothing log at DEBUG, and only
/// what changed the replica (or went wrong) at INFO.
///
/// The store failing ends it at once, fatally: a session waiting on a quiet provider
/// learned of it only at its next write, and showed `persisting` over a store that was
/// gone (its files taken away, say) for as long as the directory stayed quiet.
pub async fn run(
    cfg: &SessionConfig,
    store: &ReplicaStore,
    replica: &Replica,
    status: &StatusHandle,
    stop: &StopSignal,
    routine: bool,
) -> Ended {
    tokio::select! {
        biased;
        ended = run_session(cfg, store, replica, status, stop, routine) => ended,
        failure = replica.failure().failed() => {
            Ended { fatal: true, ..Ended::new(Reason::Exception, store_failed(&failure)) }
        }
    }
}

/// How an agreement's `last_error` names the store's failure, whether a session met it
/// or the agreement was waiting (see [`crate::supervision::Input::StoreFailed`]).
pub fn store_failed(failure: &tether_store::StoreFailure) -> String {
    format!("the store failed: {failure}")
}

async fn run_session(
    cfg: &SessionConfig,
    store: &ReplicaStore,
    replica: &Replica,
    status: &StatusHandle,
    stop: &StopSignal,
    routine: bool,
) -> Ended {
    status.update(|s| s.state = State::Connecting);
    // Read before connecting, so status shows the record while the provider is down too.
    let proved_at = match replica.provider_proved_at() {
        Ok(at) => at,
        Err(e) => {
            replica.failure().note(&e);
            return Ended {
                fatal: e.is_fatal(),
                connected: false,
                ..Ended::new(Reason::Exception, format!("reading the provider's proof: {e}"))
            };
        }
    };
    status.update(|s| s.provider_proved_at = proved_at.map(rfc3339_of_ms));
    // One limit for the TLS and Tether handshakes together, as a provider's
    // `handshake_timeout` is: each with its own, a peer that held the TLS handshake until
    // just before its limit and then answered no `Hello` kept the session `connecting`
    // for both, one after the other.
    let limit = cfg.keepalive.map_or(CONNECT_TIMEOUT, |(_, t)| t.max(CONNECT_TIMEOUT));
    let (mut reader, mut writer, reached, deadline) = match &cfg.network {
        Network::Tcp => match connect_tcp(cfg, stop, status, limit).await {
            Ok(connected) => connected,
            Err(ended) => return ended,
        },
        Network::Custom(connector) => {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(&cfg.provider));
            tokio::select! {
                biased;
                _ = stop.token.cancelled() => return Ended { connected: false, ..stop.ended(", while connecting") },
                r = connect => match r {
                    Ok(Ok(s)) => {
                        let (reader, writer) = connection::boxed(s);
                        (reader, writer, None, Instant::now() + limit)
                    }
                    Ok(Err(e)) => return Ended { connected: false, ..Ended::new(Reason::ConnectionLost, format!("connect {}: {e}", cfg.provider)) },
                    Err(_) => return Ended { connected: false, ..Ended::new(Reason::ConnectionLost, format!("connect {}: timed out", cfg.provider)) },
                },
            }
        }
    };
    let (cookie, resume) = match position(replica, &cfg.spec) {
        Ok(position) => position,
        Err(e) => {
            replica.failure().note(&e);
            return Ended { fatal: e.is_fatal(), ..Ended::new(Reason::Exception, format!("reading the cookie: {e}")) };
        }
    };
    // A scan cursor is the last DN key sent, and a DN may be far longer than a handshake
    // carries beside the region: offered, it would have every attempt refused as
    // hostile, so that reload starts over instead.
    let resume = resume.filter(|r| r.cursor.as_ref().is_none_or(|c| c.len() <= MAX_RESUME_CURSOR));
    let proof = match (cfg.provider_proof, proved_at) {
        (ProofPolicy::Required, _) | (ProofPolicy::OnceProved, Some(_)) => ProviderProof::Required,
        (ProofPolicy::OnceProved, None) | (ProofPolicy::Optional, _) => ProviderProof::Optional,
    };
    let role = Role::Consumer { agreement: cfg.name.clone(), mode: cfg.mode, cookie, spec: cfg.spec.clone(), resume };
    let hello = Hello { versions: SUPPORTED_VERSIONS.to_vec(), client_id: cfg.client_id.clone(), role };
    let left = Limit::shared(deadline, limit);
    let handshake = client_handshake(&mut reader, &mut writer, &hello, &cfg.secret, proof, left);
    let welcome = tokio::select! {
        biased;
        _ = stop.token.cancelled() => return Ended { connected: false, ..stop.ended(", while handshaking") },
        r = handshake => match r {
            Ok(w) => w,
            Err(e) => {
                let mut ended = match e {
                    HandshakeError::Unproven => unproven(cfg, proved_at),
                    e => handshake_failed(e),
                };
                ended.detail.push_str(&answered_at(cfg, reached));
                status.update(|s| s.protocol_version = None);
                if let Some(addr) = reached {
                    cfg.failed_addresses.failed(addr);
                }
                // As after the handshake, the provider's log says why we are leaving; a
                // peer that did not prove itself is told no more than that (not, say, when
                // the provider last proved itself).
                if ended.reason == Reason::Exception {
                    let detail = if ended.unproven {
                        "the provider did not prove it knows the agreement's secret".to_owned()
                    } else {
                        ended.detail.clone()
                    };
                    let bye = Message::Goodbye { reason: GoodbyeReason::ProtocolError, detail };
                    let _ = tokio::time::timeout(SEND_LIMIT, writer.send(&bye)).await;
                }
                return ended;
            }
        },
    };
    // Every line from here on is the session's, on this task, the reader, the poller
    // and the store thread alike (the runner carries its caller's span).
    let span = info_span!("session", session = welcome.session_id);
    if let Some(addr) = reached {
        cfg.failed_addresses.welcomed(addr);
    }
    let offered_cookie = cookie.map(|c| c.csn);
    let ended = async {
        let cookie = cookie.map_or_else(|| "none".to_owned(), |c| c.to_string());
        let proved = welcome.version >= MUTUAL_AUTH_VERSION;
        let address = reached.map(tracing::field::display);
        info_or_debug!(routine, history = %welcome.history, %cookie, version = welcome.version, proved, address, "connected");
        status.update(|s| s.protocol_version = Some(welcome.version));
        if proved && proved_at.is_none() {
            if let Err(ended) = remember_proof(cfg, replica, status) {
                return ended;
            }
        }
        // Linux shows a thread's first 15 bytes: "apply people" fits.
        let runner = match Runner::start(&format!("apply {}", cfg.name), replica.failure().clone()) {
            Ok(runner) => runner,
            Err(e) => return Ended::new(Reason::Exception, format!("starting the store thread: {e}")),
        };
        let writer = Arc::new(Mutex::new(writer));
        // Stamped by the reader as bytes arrive, not only whole frames: a refresh batch
        // is one frame that a slow link takes longer than the keepalive timeout to carry.
        let last_inbound = Arc::new(Progress::new());
        if let Some((interval, _)) = cfg.keepalive {
            status.update(|s| s.heard = Some(Heard::new(last_inbound.clone(), interval)));
        }
        let silence = Arc::new(Silence::new(last_inbound.clone()));
        let mut reader = reader;
        reader.report_progress(last_inbound.clone());
        let session_done = CancellationToken::new();
        // The session may also end by being dropped (`run` drops it when the store
        // fails): the reader and the poller end with it, and with them the connection.
        // Left running, the poller kept it open, pinging, until its silence limit, and the
        // provider went on sending to a consumer that applied nothing.
        let _end_tasks_with_the_session = session_done.clone().drop_guard();
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let budget = Arc::new(Semaphore::new(INBOUND_ENTRIES));
        let reader_task =
            tokio::spawn(reader_loop(reader, tx, budget, last_inbound.clone(), session_done.clone()).in_current_span());
        let keepalive_timed_out = CancellationToken::new();
        let poller = cfg.keepalive.map(|(interval, timeout)| {
            tokio::spawn(
                keepalive_poller(
                    writer.clone(),
                    silence.clone(),
                    interval,
                    timeout,
                    keepalive_timed_out.clone(),
                    session_done.clone(),
                )
                .in_current_span(),
            )
        });
        let mut applier = Applier {
            cfg,
            store,
            replica,
            status,
            writer: writer.clone(),
            history: welcome.history,
            offered_cookie,
            newest_cookie: None,
            version: welcome.version,
            runner,
            shadow: None,
            refreshing: false,
            scanning: false,
            refresh_done: false,
            goodbye_due: None,
            routine,
            refresh_applied: 0,
            pending_cookie: None,
            unacked: 0,
        };
        let ended = applier.run(rx, stop, &keepalive_timed_out, &silence).await;
        session_done.cancel();
        if let Some(shadow) = applier.shadow.take() {
            // An interrupted reload: the old replica stays as it was. A shadow the provider
            // gave a resume point is kept (durably) for the next session to continue.
            let (replica, store, spec) = (replica.clone(), store.clone(), cfg.spec.clone());
            let _ = applier
                .runner
                .run(move || match replica.resume_point(&spec) {
                    Ok(Some(_)) => store.flush(),
                    _ => shadow.abort(),
                })
                .await;
        }
        applier.runner.stop().await;
        // Say goodbye when we are the ones leaving (the provider logs why).
        let goodbye = match ended.reason {
            Reason::Shutdown => Some(GoodbyeReason::Shutdown),
            Reason::AdminStop => Some(GoodbyeReason::AdminStop),
            Reason::IdleTimeout => Some(GoodbyeReason::IdleTimeout),
            Reason::Exception => Some(GoodbyeReason::ProtocolError),
            _ => None,
        };
        {
            let mut w = writer.lock().await;
            if let Some(reason) = goodbye {
                let bye = Message::Goodbye { reason, detail: ended.detail.clone() };
                let _ = tokio::time::timeout(SEND_LIMIT, w.send(&bye)).await;
            }
            let _ = tokio::time::timeout(SEND_LIMIT, w.shutdown()).await;
        }
        reader_task.abort();
        if let Some(p) = poller {
            p.abort();
        }
        ended
    }
    .instrument(span)
    .await;
    Ended { session: Some(welcome.session_id), ..ended }
}

/// The halves of a connection to the provider, the address that answered, and when its
/// handshakes must be done.
type Connected = (MessageReader<BoxedRead>, MessageWriter<BoxedWrite>, Option<SocketAddr>, Instant);

/// Connects over the OS's TCP, tunes the socket and runs the TLS handshake if configured,
/// within [`CONNECT_TIMEOUT`] and the `limit` it shares with the Tether handshake, whose
/// deadline it returns.
async fn connect_tcp(
    cfg: &SessionConfig,
    stop: &StopSignal,
    status: &StatusHandle,
    limit: Duration,
) -> Result<Connected, Ended> {
    let stream = tokio::select! {
        _ = stop.token.cancelled() => return Err(Ended { connected: false, ..stop.ended(", while connecting") }),
        r = transport::connect(&cfg.provider, &cfg.failed_addresses) => match r {
            Ok(s) => s,
            Err(e) => return Err(Ended { connected: false, ..Ended::new(Reason::ConnectionLost, format!("connect {}: {e}", cfg.provider)) }),
        },
    };
    let deadline = Instant::now() + limit;
    let reached = stream.peer_addr().ok();
    if let Some((interval, timeout)) = cfg.keepalive {
        if let Err(e) = connection::tune_tcp(&stream, timeout, interval) {
            debug!(error = %e, "could not set TCP keepalive options");
        }
    }
    let halves = match &cfg.tls {
        None => match connection::boxed_tcp(stream) {
            Ok(halves) => {
                status.present(None);
                halves
            }
            Err(e) => return Err(Ended::new(Reason::ConnectionLost, e.to_string())),
        },
        // A TLS failure is a transport failure before any Tether message, like a refused
        // connect: `connection-lost`, retried per the schedule (a renewed certificate or
        // a corrected CA file and a reload can fix it), with the TLS error as detail.
        Some(tls) => {
            let handshake =
                tokio::time::timeout_at(deadline.min(Instant::now() + CONNECT_TIMEOUT), tls.handshake(stream));
            // Something answered, and did not prove itself: what answered last time (and
            // which version it spoke) is no longer what status may say answers.
            let tls_failed = |detail: String| {
                status.update(|s| s.protocol_version = None);
                if let Some(addr) = reached {
                    cfg.failed_addresses.failed(addr);
                }
                Ended {
                    connected: false,
                    ..Ended::new(
                        Reason::ConnectionLost,
                        format!("TLS handshake with {}: {detail}{}", cfg.provider, answered_at(cfg, reached)),
                    )
                }
            };
            tokio::select! {
                _ = stop.token.cancelled() => return Err(Ended { connected: false, ..stop.ended(", during the TLS handshake") }),
                r = handshake => match r {
                    Ok(Ok(stream)) => {
                        let chain = stream.get_ref().1.peer_certificates();
                        if let Some(warning) = met_certificate(&cfg.provider, status, chain, std::time::SystemTime::now()) {
                            warn!("{warning}");
                        }
                        connection::boxed(stream)
                    }
                    Ok(Err(e)) => return Err(tls_failed(crate::tls::describe_failure(&e))),
                    Err(_) => return Err(tls_failed("timed out".to_owned())),
                },
            }
        }
    };
    Ok((halves.0, halves.1, reached, deadline))
}

/// Records the certificate the provider presented in the TLS handshake just made, and
/// returns the warning of it coming to expire if it is another than the one the
/// agreement last met: a certificate met again (every poll's, every reconnect's) is the
/// watch's to remind of, once a day.
fn met_certificate(
    provider: &str,
    status: &StatusHandle,
    chain: Option<&[CertificateDer<'_>]>,
    now: std::time::SystemTime,
) -> Option<String> {
    let presented = chain.and_then(|chain| Presented::of(provider, chain));
    let warning = presented.as_ref().and_then(|p| p.warning(now));
    if status.present(presented) {
        warning
    } else {
        None
    }
}

/// Where a provider named by a host name answered, for the messages of a session that
/// failed after it connected: a name may have several addresses, and a refusal or a
/// stranger from one of them (an old provider left on IPv6 beside the real one on IPv4)
/// reads as the provider's, whose configuration is then checked in vain. Empty when
/// `provider` is the address itself.
fn answered_at(cfg: &SessionConfig, reached: Option<SocketAddr>) -> String {
    match reached {
        Some(addr) if addr.to_string() != cfg.provider => format!(" (answered at {addr})"),
        _ => String::new(),
    }
}

/// How a session ends whose provider did not offer to prove it knows the secret, when
/// this agreement requires the proof.
fn unproven(cfg: &SessionConfig, proved_at: Option<u64>) -> Ended {
    // The way out depends on why the proof is asked for: a provider rolled back after it
    // proved itself, or one that never could (an older build) under `required`.
    let (why, way_out) = match proved_at {
        Some(ms) if cfg.provider_proof == ProofPolicy::OnceProved => (
            format!("a provider of this agreement proved it at {}", rfc3339_of_ms(ms)),
            "If the provider was rolled back to a build older than protocol version 3",
        ),
        _ => (
            format!("provider_proof = {:?}", cfg.provider_proof.as_str()),
            "If the provider runs a build older than protocol version 3",
        ),
    };
    Ended {
        connected: false,
        unproven: true,
        ..Ended::new(
            Reason::Exception,
            format!(
                "handshake: the peer at {} did not prove it knows the agreement's secret, and {why}: it may be \
                 something other than the provider; nothing of the secret was sent. {way_out}, set provider_proof = \
                 \"optional\" for this agreement and run `tether-consumer reload` until it is upgraded",
                cfg.provider
            ),
        )
    }
}

/// Records, once, that a provider of this agreement proved itself: from now on one that
/// does not is refused (with `provider_proof = "once-proved"`).
fn remember_proof(cfg: &SessionConfig, replica: &Replica, status: &StatusHandle) -> Result<(), Ended> {
    let now = std::time::SystemTime::now();
    let ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if let Err(e) = replica.record_provider_proved(ms) {
        replica.failure().note(&e);
        return Err(Ended {
            fatal: e.is_fatal(),
            ..Ended::new(Reason::Exception, format!("recording the provider's proof: {e}"))
        });
    }
    status.update(|s| s.provider_proved_at = Some(rfc3339_of_ms(ms)));
    if cfg.provider_proof == ProofPolicy::OnceProved {
        info!(
            "the provider proved it knows the agreement's secret: from now on this agreement refuses a provider \
             that does not (provider_proof = \"once-proved\")"
        );
    }
    Ok(())
}

fn handshake_failed(e: HandshakeError) -> Ended {
    let not_connected = |reason, detail: String| Ended { connected: false, ..Ended::new(reason, detail) };
    match e {
        // The provider's deadline passed before the handshake was done: the link (a black
        // hole that cleared as the deadline ran out, a slow path), not a refusal, which
        // the monitoring table ties to credentials and scope and warns of.
        HandshakeError::Rejected(reject) if reject.reason == RejectReason::HandshakeTimeout => {
            not_connected(Reason::ConnectionLost, format!("{}: {}", reject.reason.as_str(), reject.detail))
        }
        HandshakeError::Rejected(reject) => {
            // The provider cannot say more without saying something about its secret.
            let hint = if reject.reason == RejectReason::BadCredentials {
                " (the agreement's secret_file must hold the same bytes as the provider's secret_file for it; \
                 one trailing newline is not part of the secret; a trailing space, or a byte order mark a Windows \
                 editor saved, is)"
            } else {
                ""
            };
            Ended {
                rejection: Some(reject.reason),
                ..not_connected(Reason::Rejected, format!("{}: {}{hint}", reject.reason.as_str(), reject.detail))
            }
        }
        // Reported, but its reason not acted on (`goodbye` stays unset): it came before
        // the provider proved anything, and no provider of this build says goodbye in
        // the handshake, so a stranger's `credentials-revoked` would close the agreement
        // and its `refresh-required` make it reconnect at once, in a loop.
        HandshakeError::Goodbye { reason, detail } => not_connected(
            Reason::ProviderGoodbye,
            format!(
                "{}: {detail} (said during the handshake, before the provider proved itself: retrying on the \
                 schedule)",
                reason.as_str()
            ),
        ),
        // A damaged frame or a message out of place is the same fault in the handshake as
        // after it, and is named the same (failure-cases.md: `exception`).
        HandshakeError::Unexpected { .. } | HandshakeError::BadVersion(_) => {
            not_connected(Reason::Exception, format!("handshake: protocol error: {e}"))
        }
        // Only a peer without the secret, or something between us, does these.
        HandshakeError::BadProof | HandshakeError::WelcomeUnproven(_) | HandshakeError::Unproven => {
            Ended { unproven: true, ..not_connected(Reason::Exception, format!("handshake: {e}")) }
        }
        HandshakeError::Wire(ref w) if w.is_protocol_violation() => {
            not_connected(Reason::Exception, format!("handshake: protocol error: {e}"))
        }
        HandshakeError::Timeout(_) => not_connected(Reason::ConnectionLost, format!("handshake: {e}")),
        HandshakeError::Foreign(peer) if peer.kind() == Some(ForeignKind::Tls) => not_connected(
            Reason::ConnectionLost,
            format!("handshake: {peer}: the provider answered with TLS: set [agreement.tls]"),
        ),
        HandshakeError::Foreign(peer) => not_connected(
            Reason::ConnectionLost,
            format!("handshake: {peer}: is `provider` the address of a Tether provider?"),
        ),
        other => not_connected(Reason::ConnectionLost, format!("handshake: {other}")),
    }
}

/// What a session presents: the replica's cookie and, if the replica went past it in a
/// delta that was cut short, where to (the provider reloads the replica unless that is a
/// position of its own; see [`Replica::apply_delta_batch`]), or else where an
/// interrupted reload stood. A replica past its cookie gives up resuming a reload: its
/// active data must be vouched for first.
///
/// A replica without a cookie (new, or reloaded for a changed region) gets a full
/// refresh whatever it holds, and the swap replaces the record: its reload is resumed
/// as any other's. The record used to hide the resume point then, and since it also
/// outlives refreshes that ended normally (their entries later writes than their
/// cookie), an interrupted reload started over every time.
fn position(replica: &Replica, spec: &SearchSpec) -> Result<(Option<Cookie>, Option<ResumePoint>), StoreError> {
    let cookie = replica.cookie()?;
    if let (Some(held), Some(beyond)) = (cookie, replica.beyond_cookie()?) {
        let since = held.csn;
        return Ok((cookie, Some(ResumePoint { kind: RefreshKind::Delta, since, start: beyond, cursor: None })));
    }
    Ok((cookie, replica.resume_point(spec)?))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tether_protocol::connection::WireError;
    use tether_protocol::encoded::Received;
    use tether_protocol::{Attributes, Csn, Dn, Entry, EntryUuid, HistoryId, ReplOp, Value};
    use tokio::time::Instant;

    use super::reader::inbound;
    use super::*;

    fn batch(first: usize, len: usize) -> Message {
        let ops = (first..first + len)
            .map(|i| {
                let mut attrs = Attributes::new();
                attrs.add("objectClass", [Value::from("person")]).unwrap();
                let dn = Dn::parse(&format!("cn=p{i},dc=example,dc=com")).unwrap();
                ReplOp::Upsert(Entry { dn, uuid: EntryUuid::new_time_ordered(), csn: Csn(i as u64 + 1), attrs })
            })
            .collect();
        Message::Batch { ops }
    }

    /// Hands the consumer its end of an in-memory pipe, once; the test drives the other.
    #[derive(Debug)]
    struct Pipe(std::sync::Mutex<Option<tokio::io::DuplexStream>>);

    impl crate::transport::Connector for Pipe {
        fn connect<'a>(&'a self, _addr: &'a str) -> crate::transport::ConnectFuture<'a> {
            let end = self.0.lock().unwrap().take();
            Box::pin(async move {
                end.map(|s| Box::new(s) as crate::transport::BoxedStream)
                    .ok_or_else(|| std::io::Error::other("the pipe was used"))
            })
        }
    }

    /// Agreement `people` in `mode`, connecting through an in-memory pipe; the other
    /// end is the test's, to play the provider.
    fn piped(mode: Mode) -> (SessionConfig, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let cfg = SessionConfig {
            name: "people".into(),
            provider: "provider.test:7389".into(),
            mode,
            spec: SearchSpec::subtree(tether_protocol::Dn::parse("dc=example,dc=com").unwrap()),
            secret: Secret::new(b"people-secret".to_vec()).unwrap(),
            client_id: "consumer".into(),
            idle_timeout: Duration::from_secs(300),
            keepalive: Some((Duration::from_secs(60), Duration::from_secs(120))),
            tls: None,
            network: Network::Custom(Arc::new(Pipe(std::sync::Mutex::new(Some(ours))))),
            provider_proof: ProofPolicy::OnceProved,
            failed_addresses: Default::default(),
        };
        (cfg, theirs)
    }

    /// A store with an empty replica `people`, in a folder of its own.
    fn empty_replica() -> (tempfile::TempDir, ReplicaStore, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("people").unwrap();
        (dir, store, replica)
    }

    /// A replica past its cookie presents where it went, in place of an unfinished
    /// reload's resume point; one without a cookie (reloaded for a changed region) is
    /// refreshed in full whatever it holds, so its reload is resumed as any other's
    /// (found by a walkthrough: it started over every time).
    #[test]
    fn a_replica_without_a_cookie_resumes_its_reload_whatever_record_it_holds() {
        let (_dir, _store, replica) = empty_replica();
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        let history = HistoryId::new_random();
        replica.apply_delta_batch(&batch_ops(0, 3), history).unwrap();
        replica.advance(Cookie { history, csn: Csn(2) }).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Present).unwrap();
        shadow.apply_scan(&batch_ops(10, 2)).unwrap();
        let start = Cookie { history, csn: Csn(20) };
        let resume = ResumePoint { kind: RefreshKind::Present, since: Csn(2), start, cursor: Some(b"k".to_vec()) };
        shadow.record_progress(&spec, resume.clone()).unwrap();
        let (cookie, presented) = position(&replica, &spec).unwrap();
        assert_eq!(cookie, Some(Cookie { history, csn: Csn(2) }));
        let beyond = Cookie { history, csn: Csn(3) };
        assert_eq!(
            presented,
            Some(ResumePoint { kind: RefreshKind::Delta, since: Csn(2), start: beyond, cursor: None })
        );
        replica.forget_cookie().unwrap();
        assert_eq!(position(&replica, &spec).unwrap(), (None, Some(resume)));
    }

    /// A reload stopped past a DN longer than a handshake carries beside the region is
    /// not offered for resuming (the provider would refuse every `Hello` as hostile, and
    /// the agreement retry for good); one at the limit is.
    #[tokio::test]
    async fn a_resume_point_past_a_dn_too_long_for_a_handshake_is_not_offered() {
        for (cursor_len, offered) in [(MAX_RESUME_CURSOR, true), (MAX_RESUME_CURSOR + 1, false)] {
            let (_dir, store, replica) = empty_replica();
            let (cfg, theirs) = piped(Mode::RefreshOnly);
            let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
            shadow.apply_scan(&batch_ops(0, 2)).unwrap();
            let start = Cookie { history: HistoryId::new_random(), csn: Csn(9) };
            let cursor = Some(vec![b'k'; cursor_len]);
            let resume = ResumePoint { kind: RefreshKind::Full, since: Csn::ZERO, start, cursor };
            shadow.record_progress(&cfg.spec, resume.clone()).unwrap();
            drop(shadow);
            // The provider: notes what the Hello offers and refuses it.
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = connection::boxed(theirs);
                let mut presented = None;
                let _ = tether_protocol::handshake::server_handshake(&mut r, &mut w, Duration::from_secs(10), |h| {
                    if let Role::Consumer { resume, .. } = &h.role {
                        presented = Some(resume.clone());
                    }
                    Err(tether_protocol::message::Reject::new(RejectReason::UnknownAgreement, "noted"))
                })
                .await;
                presented
            });
            session_ended(&cfg, &store, &replica).await;
            let presented = provider.await.unwrap().expect("a consumer's hello");
            let offered_it = presented.is_some();
            assert!(presented == offered.then_some(resume), "a cursor of {cursor_len} bytes, offered: {offered_it}");
        }
    }

    fn batch_ops(first: usize, len: usize) -> Vec<ReplOp> {
        let Message::Batch { ops } = batch(first, len) else { unreachable!() };
        ops
    }

    /// Runs one session of `cfg`, which must end within 30 s, and says how it ended.
    async fn session_ended(cfg: &SessionConfig, store: &ReplicaStore, replica: &Replica) -> Ended {
        session_shown(cfg, store, replica).await.0
    }

    /// Runs one session of `cfg` as [`session_ended`] does, and says also what its
    /// status showed at the end.
    async fn session_shown(
        cfg: &SessionConfig,
        store: &ReplicaStore,
        replica: &Replica,
    ) -> (Ended, crate::status::AgreementStatus) {
        let status = StatusHandle::new("people", &cfg.provider, &cfg.mode.to_string());
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            run(cfg, store, replica, &status, &StopSignal::default(), false),
        )
        .await
        .expect("the session must end");
        (ended, status.snapshot())
    }

    /// The test's end of the pipe after a provider's side of the handshake: the consumer
    /// was welcomed into `history`, and what follows is the test's to send.
    async fn welcomed(
        theirs: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
        secret: Secret,
        history: HistoryId,
    ) -> (MessageReader<BoxedRead>, MessageWriter<BoxedWrite>) {
        let (mut r, mut w) = connection::boxed(theirs);
        let admission = tether_protocol::handshake::Admission {
            secret,
            history,
            session_id: 1,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(120),
        };
        tether_protocol::handshake::server_handshake(&mut r, &mut w, Duration::from_secs(10), |_| Ok(admission))
            .await
            .unwrap();
        (r, w)
    }

    /// An address where a session connected and then failed in the handshake (here
    /// something that accepts and closes at once, a port forward with nothing behind
    /// it) is tried after the provider's other addresses, until a provider welcomes a
    /// session there: tried first every time, it kept the agreement from the address
    /// that works.
    #[tokio::test]
    async fn an_address_that_failed_in_the_handshake_is_tried_last_until_a_provider_welcomes_a_session_there() {
        let (_dir, store, replica) = empty_replica();
        let (mut cfg, _) = piped(Mode::RefreshOnly);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        cfg.network = Network::Tcp;
        cfg.provider = addr.to_string();
        let closer = tokio::spawn(async move {
            drop(listener.accept().await.unwrap());
            listener
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert!(!ended.connected, "{ended:?}");
        assert_eq!(cfg.failed_addresses.last(vec![addr, other]), [other, addr]);
        // A provider welcomes the next session there, and goes.
        let listener = closer.await.unwrap();
        let (secret, history) = (cfg.secret.clone(), HistoryId::new_random());
        let provider = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(welcomed(stream, secret, history).await);
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        provider.await.unwrap();
        assert!(ended.connected, "{ended:?}");
        assert_eq!(cfg.failed_addresses.last(vec![addr, other]), [addr, other]);
    }

    /// An address where the TLS handshake failed (here something that accepts and
    /// closes at once) is tried after the provider's other addresses too, as one where
    /// the Tether handshake failed is: over TLS, a port forward with nothing behind it
    /// fails there, and tried first every time, it kept the agreement from the address
    /// that works.
    #[tokio::test]
    async fn an_address_that_failed_in_the_tls_handshake_is_tried_last() {
        let (dir, store, replica) = empty_replica();
        let (mut cfg, _) = piped(Mode::RefreshOnly);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
        let trust = crate::config::AgreementTls { ca_file, server_name: None };
        cfg.tls = Some(TlsClient::new(&trust, "127.0.0.1").unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        cfg.network = Network::Tcp;
        cfg.provider = addr.to_string();
        let closer = tokio::spawn(async move { drop(listener.accept().await.unwrap()) });
        let ended = session_ended(&cfg, &store, &replica).await;
        closer.await.unwrap();
        assert!(ended.detail.starts_with("TLS handshake with "), "{ended:?}");
        assert_eq!(cfg.failed_addresses.last(vec![addr, other]), [other, addr]);
    }

    /// A certificate met in its notice of expiry is warned of as the session meets it,
    /// once: the agreement's later sessions meet it again (every poll's, every
    /// reconnect's), and saying it each time would fill the log of a poller; the watch
    /// reminds of it daily instead. A renewal is a new certificate, said if it must be.
    #[test]
    fn a_certificate_met_in_its_notice_is_warned_of_by_the_session_that_first_meets_it() {
        let status = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let key = rcgen::KeyPair::generate().unwrap();
        let chain = |ends: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
            params.not_before = rcgen::date_time_ymd(2026, 1, 1);
            params.not_after = rcgen::date_time_ymd(ends.0, ends.1, ends.2);
            vec![params.self_signed(&key).unwrap().der().clone()]
        };
        let now = humantime::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        let expiring = chain((2026, 12, 10));
        let said = met_certificate("127.0.0.1:7389", &status, Some(&expiring), now).expect("warned of");
        assert!(
            said.starts_with("the certificate of provider 127.0.0.1:7389 expires at 2026-12-10T00:00:00Z"),
            "{said}"
        );
        assert_eq!(met_certificate("127.0.0.1:7389", &status, Some(&expiring), now), None, "said again");
        assert_eq!(met_certificate("127.0.0.1:7389", &status, Some(&chain((2027, 12, 10))), now), None, "renewed");
        let renewed_badly = chain((2026, 12, 12));
        assert!(met_certificate("127.0.0.1:7389", &status, Some(&renewed_badly), now).is_some());
        let json = serde_json::to_value(status.snapshot()).unwrap();
        assert_eq!(json["provider_certificate_expires_at"], "2026-12-12T00:00:00Z");
    }

    /// The session judges the whole chain the provider presents, not its first
    /// certificate only: an intermediate CA certificate that ends before the provider's
    /// own ends the chain (this consumer checks its dates in every handshake), so it is
    /// the one warned of, by its place, and the end `status` and the metrics show.
    #[test]
    fn a_session_meets_the_end_of_the_whole_chain_presented() {
        let status = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let ca = |name: &str, ends: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = rcgen::date_time_ymd(2026, 1, 1);
            params.not_after = rcgen::date_time_ymd(ends.0, ends.1, ends.2);
            (params, rcgen::KeyPair::generate().unwrap())
        };
        let (root, root_key) = ca("Example Root", (2040, 1, 1));
        let root = root.self_signed(&root_key).unwrap();
        let (intermediate, intermediate_key) = ca("Example Intermediate", (2026, 12, 10));
        let intermediate = intermediate.signed_by(&intermediate_key, &root, &root_key).unwrap();
        let mut own = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        own.not_before = rcgen::date_time_ymd(2026, 1, 1);
        own.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let own = own.signed_by(&rcgen::KeyPair::generate().unwrap(), &intermediate, &intermediate_key).unwrap();
        let chain = [own.der().clone(), intermediate.der().clone(), root.der().clone()];
        let now = humantime::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        let said = met_certificate("127.0.0.1:7389", &status, Some(&chain), now).expect("warned of");
        assert!(
            said.starts_with("the 2nd certificate of the chain provider 127.0.0.1:7389 presents (a CA's, between its own and this consumer's ca_file) expires at 2026-12-10T00:00:00Z"),
            "{said}"
        );
        let json = serde_json::to_value(status.snapshot()).unwrap();
        assert_eq!(json["provider_certificate_expires_at"], "2026-12-10T00:00:00Z");
    }

    /// The TLS and Tether handshakes share one limit, as on the provider: a peer that
    /// held the TLS handshake until just before its limit and then answered no `Hello`
    /// kept the session `connecting` for the two limits one after the other. The clock is
    /// paused: the peer's hold and the limits pass at once, and `took` is the limits'
    /// time, not the machine's.
    #[tokio::test(start_paused = true)]
    async fn the_tls_and_tether_handshakes_share_one_limit() {
        let (dir, store, replica) = empty_replica();
        let (mut cfg, _) = piped(Mode::RefreshOnly);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let trust = crate::config::AgreementTls { ca_file, server_name: None };
        cfg.tls = Some(TlsClient::new(&trust, "127.0.0.1").unwrap());
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let served = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        cfg.network = Network::Tcp;
        cfg.provider = listener.local_addr().unwrap().to_string();
        // Keepalive off: the handshake's limit is then the TLS handshake's own.
        cfg.keepalive = None;
        let held = CONNECT_TIMEOUT - Duration::from_secs(1);
        // The peer: holds the TLS handshake, then reads the `Hello` and answers nothing.
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(held).await;
            let stream = tokio_rustls::TlsAcceptor::from(Arc::new(served)).accept(stream).await.unwrap();
            let (mut r, _w) = connection::boxed(stream);
            let _ = r.recv().await;
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        let ended = session_ended(&cfg, &store, &replica).await;
        let took = started.elapsed();
        peer.abort();
        // Named by the whole limit, not by the second the TLS handshake left of it.
        assert_eq!(ended.detail, format!("handshake: handshake did not complete within {CONNECT_TIMEOUT:?}"));
        assert!(
            took < CONNECT_TIMEOUT + held / 2,
            "the session ended after {took:?}, past the one limit of {CONNECT_TIMEOUT:?}"
        );
    }

    /// A provider that takes the connection and never answers the TLS handshake (a
    /// stopped process, a port forward with nothing behind it) ends the session at the
    /// limit, `connection-lost`, to be retried: the TLS handshake has a limit of its own
    /// as the Tether handshake has. The clock is paused, so the limit passes at once.
    #[tokio::test(start_paused = true)]
    async fn a_tls_handshake_the_provider_never_answers_ends_at_the_limit() {
        let (dir, store, replica) = empty_replica();
        let (mut cfg, _) = piped(Mode::RefreshOnly);
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let trust = crate::config::AgreementTls { ca_file, server_name: None };
        cfg.tls = Some(TlsClient::new(&trust, "127.0.0.1").unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        cfg.network = Network::Tcp;
        cfg.provider = listener.local_addr().unwrap().to_string();
        // Accepted, and then silent for good.
        let silent = tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        silent.abort();
        assert_eq!(
            (ended.reason, ended.detail.as_str()),
            (Reason::ConnectionLost, format!("TLS handshake with {}: timed out", cfg.provider).as_str())
        );
    }

    /// A poll whose refresh is durable and acknowledged ends itself if the provider's
    /// goodbye does not follow (an older provider could lose the ack and wait for it
    /// for good, pinging): as a completed poll, the cookie durable.
    #[tokio::test]
    async fn a_poll_ends_itself_when_the_goodbye_does_not_follow_its_ack() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshOnly);
        let secret = cfg.secret.clone();
        let history = HistoryId::new_random();
        let end = Cookie { history, csn: Csn(5) };
        // The provider: refreshes, reads the ack, and never says goodbye.
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: end }).await.unwrap();
            let mut acked = None;
            while let Ok(Some(msg)) = r.recv().await {
                if let Message::Ack { cookie } = msg {
                    acked = Some(cookie);
                }
            }
            acked
        });
        let status = StatusHandle::new("people", &cfg.provider, "refresh-only");
        let started = Instant::now();
        let ended = tokio::time::timeout(
            POLL_GOODBYE_WAIT * 3,
            run(&cfg, &store, &replica, &status, &StopSignal::default(), false),
        )
        .await
        .expect("the poll must end without the provider's goodbye");
        assert!(ended.refresh_complete, "{ended:?}");
        assert!(started.elapsed() >= POLL_GOODBYE_WAIT, "it waited for the goodbye first: {:?}", started.elapsed());
        assert_eq!(provider.await.unwrap(), Some(end), "the refresh was acknowledged");
        assert_eq!(replica.cookie().unwrap(), Some(end), "and is durable");
    }

    /// A store that fails while the session waits on its provider ends the session at
    /// once, and its connection with it: the reader and the keepalive poller, left
    /// running, held the connection open (pinging) until the silence limit, two minutes
    /// here, while the provider went on sending to a consumer that applied nothing.
    #[tokio::test]
    async fn a_store_that_fails_while_the_session_waits_ends_its_connection() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let history = HistoryId::new_random();
        let (refreshed_tx, refreshed) = tokio::sync::oneshot::channel();
        // The provider: an empty refresh, then it waits for what the consumer sends until
        // the connection ends.
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: Cookie { history, csn: Csn(1) } }).await.unwrap();
            while let Ok(Some(msg)) = r.recv().await {
                if matches!(msg, Message::Ack { .. }) {
                    let _ = refreshed_tx.send(());
                    break;
                }
            }
            while let Ok(Some(_)) = r.recv().await {}
        });
        let status = StatusHandle::new("people", &cfg.provider, "refresh-and-persist");
        let stop = StopSignal::default();
        let session = run(&cfg, &store, &replica, &status, &stop, false);
        let fail = async {
            refreshed.await.expect("the refresh acknowledged");
            replica.failure().note(&tether_store::StoreError::FilesMoved("the test".into()));
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(session, fail) })
            .await
            .expect("the session ends when the store fails");
        assert!(ended.fatal, "{ended:?}");
        tokio::time::timeout(Duration::from_secs(30), provider)
            .await
            .expect("the connection ends with the session")
            .unwrap();
    }

    /// Where [`one_change_when_told`]'s provider refreshes the consumer to, and its change.
    const REFRESHED: Cookie = Cookie { history: HISTORY, csn: Csn(1) };
    const HISTORY: HistoryId = HistoryId([7; 16]);

    /// A provider at the test's end of the pipe: an empty refresh to [`REFRESHED`]; once
    /// its ack is in it says so on the first channel, waits for the test's word on the
    /// second, and sends one change at CSN 2. It returns every ack it read, until the
    /// connection ends.
    fn one_change_when_told(
        theirs: tokio::io::DuplexStream,
        secret: Secret,
    ) -> (tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<Cookie>>)
    {
        let (refresh_acked_tx, refresh_acked) = tokio::sync::oneshot::channel();
        let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, HISTORY).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: REFRESHED }).await.unwrap();
            let mut acks = Vec::new();
            while let Ok(Some(msg)) = r.recv().await {
                if let Message::Ack { cookie } = msg {
                    acks.push(cookie);
                    if cookie == REFRESHED {
                        break;
                    }
                }
            }
            let _ = refresh_acked_tx.send(());
            go.await.unwrap();
            let op = batch_ops(1, 1).remove(0);
            w.send(&Message::Change { op, cookie: Cookie { history: HISTORY, csn: Csn(2) } }).await.unwrap();
            while let Ok(Some(msg)) = r.recv().await {
                if let Message::Ack { cookie } = msg {
                    acks.push(cookie);
                }
            }
            acks
        });
        (refresh_acked, go_tx, provider)
    }

    /// A live change is acknowledged only once it is durable: a flush that fails (here
    /// the store's files taken away under the session, which sled goes on writing into
    /// unnoticed until the flush checks them) ends the session without the ack. Sent
    /// before the flush, the ack told the provider the consumer held a change that a
    /// crash, or this failure, then took back: its position, and with it the changelog
    /// the provider holds for the consumer, ran ahead of the replica's durable cookie.
    #[tokio::test]
    async fn a_change_whose_flush_fails_is_not_acknowledged() {
        let (dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let (refresh_acked, taken_away_tx, provider) = one_change_when_told(theirs, cfg.secret.clone());
        let status = StatusHandle::new("people", &cfg.provider, "refresh-and-persist");
        let stop = StopSignal::default();
        let session = run(&cfg, &store, &replica, &status, &stop, false);
        let take_away = async {
            refresh_acked.await.expect("the refresh acknowledged");
            std::fs::rename(dir.path().join("db"), dir.path().join("db.moved")).unwrap();
            taken_away_tx.send(()).unwrap();
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(session, take_away) })
            .await
            .expect("the session ends when its flush fails");
        assert!(ended.fatal && ended.detail.contains("was removed or moved"), "{ended:?}");
        let acks = tokio::time::timeout(Duration::from_secs(30), provider)
            .await
            .expect("the connection ends with the session")
            .unwrap();
        assert_eq!(acks, [REFRESHED], "only the durable refresh is acknowledged, not the change: {ended:?}");
    }

    /// `wait --visible` answers once searches return the change, so the applied CSN it
    /// waits on moves only after the apply: a change whose apply fails (here its replica
    /// removed from the store under the session, so the apply finds no replica) must
    /// never show as visible. Moved ahead of the apply, a failed change answered the
    /// waits for it though no search would ever return it.
    #[tokio::test]
    async fn a_change_whose_apply_fails_is_never_visible() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let (refresh_acked, removed_tx, provider) = one_change_when_told(theirs, cfg.secret.clone());
        let status = StatusHandle::new("people", &cfg.provider, "refresh-and-persist");
        let stop = StopSignal::default();
        let session = run(&cfg, &store, &replica, &status, &stop, false);
        let remove = async {
            refresh_acked.await.expect("the refresh acknowledged");
            assert_eq!(status.visible_csn(), Some(Csn(1)), "the refresh is visible");
            store.remove("people").unwrap();
            removed_tx.send(()).unwrap();
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(session, remove) })
            .await
            .expect("the session ends when its apply fails");
        assert!(ended.reason == Reason::Exception && ended.detail.contains("applying changes"), "{ended:?}");
        assert_eq!(status.visible_csn(), Some(Csn(1)), "the change that failed is not visible: {ended:?}");
        tokio::time::timeout(Duration::from_secs(30), provider)
            .await
            .expect("the connection ends with the session")
            .unwrap();
    }

    /// A provider whose connection ends without a goodbye after the refresh (killed, its
    /// host rebooted) is a `connection-lost`, retried on the schedule; not an
    /// `exception`, which the log warns of and the monitoring table sends an operator to.
    #[tokio::test]
    async fn a_connection_that_ends_without_a_goodbye_is_a_lost_connection() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let history = HistoryId::new_random();
        let refreshed = Cookie { history, csn: Csn(1) };
        // The provider: an empty refresh; once it is acknowledged, the connection ends.
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: refreshed }).await.unwrap();
            while let Ok(Some(msg)) = r.recv().await {
                if matches!(msg, Message::Ack { .. }) {
                    break;
                }
            }
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        provider.await.unwrap();
        assert_eq!(
            (ended.reason, ended.detail.as_str()),
            (Reason::ConnectionLost, "provider closed the connection without goodbye"),
            "{ended:?}"
        );
        assert_eq!(replica.cookie().unwrap(), Some(refreshed), "the refresh stands");
    }

    /// A present refresh that names an entry the replica lacks ends the session as an
    /// `exception` and drops the replica's cookie, so the next session reloads in full:
    /// the cookie kept, the next session presented it again, the provider planned the same
    /// present refresh, and the agreement failed the same check on every retry, for good.
    #[tokio::test]
    async fn a_present_refresh_naming_an_entry_the_replica_lacks_drops_the_cookie() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        replica.advance(Cookie { history, csn: Csn(10) }).unwrap();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Present, resumed: false }).await.unwrap();
            w.send(&Message::PresentBatch { uuids: vec![EntryUuid::new_random()] }).await.unwrap();
            while let Ok(Some(_)) = r.recv().await {}
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
        assert!(ended.detail.contains("replica lacks 1 entries named present"), "{ended:?}");
        assert_eq!(replica.cookie().unwrap(), None, "the next session reloads in full");
        provider.abort();
    }

    /// A delta's batches, a live change and an `Advance` each move what status shows and
    /// what the provider is told: the entry count follows the replica (a delta and live
    /// changes move it batch by batch, nothing recounts it until a reload), and each
    /// cookie reached is acknowledged and shown. A count left behind showed `entries`
    /// short of what a search returns for as long as the session lasted; an `Advance`
    /// not acknowledged held the provider's changelog at the consumer's older position.
    #[tokio::test]
    async fn a_delta_a_live_change_and_an_advance_move_the_entry_count_and_the_cookie_acknowledged() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        let at = move |csn: u64| Cookie { history, csn: Csn(csn) };
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        async fn ack(r: &mut MessageReader<BoxedRead>) -> Option<Cookie> {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), r.recv()).await {
                    Ok(Ok(Some(Message::Ack { cookie }))) => return Some(cookie),
                    Ok(Ok(Some(_))) => {}
                    _ => return None,
                }
            }
        }
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            // The cookie each step was acknowledged with, as it came (None: nothing did).
            let mut acked = Vec::new();
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            w.send(&batch(0, 2)).await.unwrap();
            w.send(&Message::RefreshDone { cookie: at(2) }).await.unwrap();
            acked.push(ack(&mut r).await);
            w.send(&Message::Change { op: batch_ops(2, 1).remove(0), cookie: at(3) }).await.unwrap();
            acked.push(ack(&mut r).await);
            w.send(&Message::Advance { cookie: at(7) }).await.unwrap();
            acked.push(ack(&mut r).await);
            w.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: String::new() }).await.unwrap();
            while let Ok(Some(_)) = r.recv().await {}
            acked
        });
        let (ended, shown) = session_shown(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::ProviderGoodbye, "{ended:?}");
        assert_eq!(provider.await.unwrap(), [Some(at(2)), Some(at(3)), Some(at(7))], "the cookies acknowledged");
        assert_eq!(replica.len().unwrap(), 3);
        assert_eq!(shown.entries, 3, "status counts what the replica holds");
        assert_eq!(shown.cookie, Some(at(7).to_string()));
        assert_eq!(shown.lag_changes, 0, "every change applied was acknowledged");
        assert_eq!(replica.cookie().unwrap(), Some(at(7)));
    }

    /// A full refresh's catch-up, after the `RefreshProgress` that ends its scan, goes
    /// into the shadow through the checked apply: an entry renamed while the scan ran
    /// comes again under its new name, and takes the place of its old one. Taken for
    /// more of the scan, it looked like one entryUUID sent twice, and the shadow was
    /// discarded as a provider's fault: every reload of a directory where something is
    /// renamed during the scan failed and started over.
    #[tokio::test]
    async fn an_entry_renamed_while_the_scan_ran_comes_in_the_catch_up_under_its_new_name() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        let Message::Batch { ops: scanned } = batch(0, 2) else { unreachable!() };
        let ReplOp::Upsert(mut renamed) = scanned[0].clone() else { unreachable!() };
        renamed.dn = Dn::parse("cn=p0-renamed,dc=example,dc=com").unwrap();
        renamed.csn = Csn(4);
        let start = Cookie { history, csn: Csn(3) };
        let done = Cookie { history, csn: Csn(4) };
        let (cfg, theirs) = piped(Mode::RefreshOnly);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            w.send(&Message::Batch { ops: scanned }).await.unwrap();
            let resume = ResumePoint { kind: RefreshKind::Full, since: Csn::ZERO, start, cursor: None };
            w.send(&Message::RefreshProgress { resume }).await.unwrap();
            w.send(&Message::Batch { ops: vec![ReplOp::Upsert(renamed)] }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: done }).await.unwrap();
            w.send(&Message::Goodbye { reason: GoodbyeReason::RefreshComplete, detail: String::new() }).await.unwrap();
            while let Ok(Some(_)) = r.recv().await {}
        });
        let (ended, shown) = session_shown(&cfg, &store, &replica).await;
        assert!(ended.refresh_complete, "{ended:?}");
        assert_eq!(replica.cookie().unwrap(), Some(done));
        assert_eq!(shown.entries, 2, "status counts the reloaded replica");
        let mut dns: Vec<String> = replica.search(&cfg.spec).unwrap().into_iter().map(|e| e.dn.to_string()).collect();
        dns.sort();
        assert_eq!(dns, ["cn=p0-renamed,dc=example,dc=com", "cn=p1,dc=example,dc=com"]);
        provider.abort();
    }

    /// Every change of a run applied together has its cookie checked, not only the
    /// first: a change behind the session's position queued right behind one past it
    /// ends the session before either is applied. Taken, it moved the replica's cookie
    /// back, and the next session asked the provider again for what it held already.
    #[tokio::test]
    async fn a_change_behind_the_session_s_position_queued_behind_another_ends_it_unapplied() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        let at = move |csn: u64| Cookie { history, csn: Csn(csn) };
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            // All on the wire at once: the two changes are queued together.
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: at(12) }).await.unwrap();
            w.send(&Message::Change { op: batch_ops(12, 1).remove(0), cookie: at(13) }).await.unwrap();
            w.send(&Message::Change { op: batch_ops(10, 1).remove(0), cookie: at(11) }).await.unwrap();
            let _ = w.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: String::new() }).await;
            while let Ok(Some(_)) = r.recv().await {}
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
        assert!(ended.detail.contains("Change names cookie"), "{ended:?}");
        assert_eq!(replica.cookie().unwrap(), Some(at(12)), "the refresh's cookie stands");
        assert_eq!(replica.len().unwrap(), 0, "neither change applied");
        provider.abort();
    }

    /// A session an operator stops, or the process's shutdown ends, says goodbye with
    /// that reason and its detail, so the provider's log says why the consumer left
    /// (SPEC §4: `admin-stop`, `shutdown`); without it the provider saw a connection lost.
    #[tokio::test]
    async fn a_session_stopped_from_outside_says_goodbye_with_the_reason() {
        for (reason, said, detail) in [
            (Reason::AdminStop, GoodbyeReason::AdminStop, "stopped by the operator"),
            (Reason::Shutdown, GoodbyeReason::Shutdown, "the consumer is shutting down"),
        ] {
            let (_dir, store, replica) = empty_replica();
            let (cfg, theirs) = piped(Mode::RefreshAndPersist);
            let secret = cfg.secret.clone();
            let history = HistoryId::new_random();
            let (acked_tx, acked) = tokio::sync::oneshot::channel();
            // The provider: an empty refresh; then it collects the goodbyes it is told.
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = welcomed(theirs, secret, history).await;
                w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
                w.send(&Message::RefreshDone { cookie: Cookie { history, csn: Csn(1) } }).await.unwrap();
                let mut acked_tx = Some(acked_tx);
                let mut goodbyes = Vec::new();
                while let Ok(Some(msg)) = r.recv().await {
                    match msg {
                        Message::Ack { .. } => {
                            if let Some(tx) = acked_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Message::Goodbye { reason, detail } => goodbyes.push((reason, detail)),
                        _ => {}
                    }
                }
                goodbyes
            });
            let status = StatusHandle::new("people", &cfg.provider, "refresh-and-persist");
            let stop = StopSignal::default();
            let session = run(&cfg, &store, &replica, &status, &stop, false);
            let stopping = async {
                acked.await.expect("the refresh acknowledged");
                stop.stop(reason, detail);
            };
            let (ended, ()) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(session, stopping) })
                .await
                .expect("the session ends when stopped");
            assert_eq!((ended.reason, ended.detail.as_str()), (reason, detail), "{ended:?}");
            let goodbyes = tokio::time::timeout(Duration::from_secs(30), provider).await.unwrap().unwrap();
            assert_eq!(goodbyes, [(said, detail.to_owned())], "{reason}");
        }
    }

    /// An entry outside the agreement's region is a protocol error: the session ends as
    /// an `exception` before anything of that batch is applied.
    #[tokio::test]
    async fn an_entry_outside_the_region_ends_the_session_unapplied() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, HistoryId::new_random()).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            let mut attrs = Attributes::new();
            attrs.add("objectClass", [Value::from("person")]).unwrap();
            let evil = Dn::parse("cn=evil,dc=other,dc=org").unwrap();
            let op = ReplOp::Upsert(Entry { dn: evil, uuid: EntryUuid::new_random(), csn: Csn(3), attrs });
            let _ = w.send(&batch(0, 2)).await;
            let _ = w.send(&Message::Batch { ops: vec![op] }).await;
            while let Ok(Some(_)) = r.recv().await {}
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
        assert!(
            ended.detail.contains("cn=evil,dc=other,dc=org, outside the region (subtree of dc=example,dc=com)"),
            "{ended:?}"
        );
        assert_eq!(replica.cookie().unwrap(), None, "the refresh never completed");
        provider.abort();
    }

    /// A refresh batch before any `RefreshBegin`, a live change while the refresh
    /// runs, and a second `RefreshBegin` once it is done are protocol errors: each ends
    /// the session as an `exception` before anything of it is applied. A batch taken
    /// outside a refresh went straight into the replica as a delta's would, and a change
    /// taken during a reload went into the replica the reload was about to replace.
    #[tokio::test]
    async fn a_message_out_of_its_place_in_the_refresh_ends_the_session_unapplied() {
        let history = HistoryId::new_random();
        let refreshed = Cookie { history, csn: Csn(1) };
        let change = |csn| Message::Change { op: batch_ops(5, 1).remove(0), cookie: Cookie { history, csn: Csn(csn) } };
        for (says, msgs) in [
            ("protocol error: Batch outside a refresh", vec![batch(0, 2)]),
            (
                "protocol error: Change before the refresh finished",
                vec![Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }, change(6)],
            ),
            (
                "protocol error: a second RefreshBegin",
                vec![
                    Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false },
                    Message::RefreshDone { cookie: refreshed },
                    Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false },
                    batch(0, 2),
                ],
            ),
        ] {
            let (_dir, store, replica) = empty_replica();
            let (cfg, theirs) = piped(Mode::RefreshAndPersist);
            let secret = cfg.secret.clone();
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = welcomed(theirs, secret, history).await;
                for msg in msgs {
                    let _ = w.send(&msg).await;
                }
                let _ = w.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: String::new() }).await;
                while let Ok(Some(_)) = r.recv().await {}
            });
            let ended = session_ended(&cfg, &store, &replica).await;
            assert_eq!((ended.reason, ended.detail.as_str()), (Reason::Exception, says), "{ended:?}");
            assert_eq!(replica.len().unwrap(), 0, "{says}: nothing of it was applied");
            provider.abort();
        }
    }

    /// A provider's free text after the handshake (a `RefreshRequired`'s reason, a
    /// `Goodbye`'s detail) reaches the log and the status on one line, escaped: one that
    /// only knows the secret (any consumer host of the agreement) wrote forged lines.
    #[tokio::test]
    async fn a_providers_reason_is_shown_on_one_line() {
        for said in [
            Message::RefreshRequired { reason: "x\nforged line\u{1b}[2J".into() },
            Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "x\nforged line\u{1b}[2J".into() },
        ] {
            let (_dir, store, replica) = empty_replica();
            let (cfg, theirs) = piped(Mode::RefreshAndPersist);
            let secret = cfg.secret.clone();
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = welcomed(theirs, secret, HistoryId::new_random()).await;
                let _ = w.send(&said).await;
                while let Ok(Some(_)) = r.recv().await {}
            });
            let ended = session_ended(&cfg, &store, &replica).await;
            assert!(ended.detail.ends_with("x\\nforged line\\u{1b}[2J"), "{ended:?}");
            provider.abort();
        }
    }

    /// A cookie of another history than the session was welcomed into, or one behind
    /// where the session stands (the cookie a delta starts from, or an earlier message's),
    /// is a protocol error, and nothing of it is recorded (found by a walkthrough with a
    /// fake provider: one moved the durable cookie back without a word, the other made
    /// the next session reload the replica in full). A reload's cookie may be behind the
    /// one offered: it replaces the replica.
    #[tokio::test]
    async fn a_cookie_of_another_history_or_behind_the_session_s_ends_it_unrecorded() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        let held = Cookie { history, csn: Csn(10) };
        replica.advance(held).unwrap();
        // Sends `msgs` after a delta's `RefreshBegin`, or a full one's with a batch.
        let session = |kind: RefreshKind, msgs: Vec<Message>| {
            let (cfg, theirs) = piped(Mode::RefreshAndPersist);
            let secret = cfg.secret.clone();
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = welcomed(theirs, secret, history).await;
                w.send(&Message::RefreshBegin { kind, resumed: false }).await.unwrap();
                if kind == RefreshKind::Full {
                    w.send(&batch(0, 2)).await.unwrap();
                }
                for msg in msgs {
                    let _ = w.send(&msg).await;
                }
                w.send(&Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: String::new() }).await.unwrap();
                while let Ok(Some(_)) = r.recv().await {}
            });
            (cfg, provider)
        };
        let done = |cookie| Message::RefreshDone { cookie };
        let other = Cookie { history: HistoryId::new_random(), csn: Csn(12) };
        let behind = Cookie { history, csn: Csn(9) };
        for (what, msgs) in [("behind csn 10", vec![done(behind)]), ("not of the history", vec![done(other)])] {
            let (cfg, provider) = session(RefreshKind::Delta, msgs);
            let ended = session_ended(&cfg, &store, &replica).await;
            assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
            assert!(ended.detail.starts_with("protocol error: RefreshDone names cookie"), "{ended:?}");
            assert!(ended.detail.contains(what), "{what}: {ended:?}");
            assert_eq!(replica.cookie().unwrap(), Some(held), "{what}: nothing recorded");
            provider.abort();
        }
        // Live changes after a delta to csn 12: one behind it is refused, as is an
        // advance of another history.
        let later = Cookie { history, csn: Csn(12) };
        let change = |cookie| Message::Change { op: batch_ops(0, 1).remove(0), cookie };
        for (what, msg) in [
            ("Change names cookie", change(Cookie { history, csn: Csn(11) })),
            ("Advance names cookie", Message::Advance { cookie: other }),
        ] {
            let (cfg, provider) = session(RefreshKind::Delta, vec![done(later), msg]);
            let ended = session_ended(&cfg, &store, &replica).await;
            assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
            assert!(ended.detail.contains(what), "{what}: {ended:?}");
            assert_eq!(replica.cookie().unwrap(), Some(later), "{what}: the refresh's cookie stands");
            provider.abort();
        }
        // A change at or past the session's position is applied; a reload's cookie,
        // behind the one offered, replaces the replica as it should.
        let (cfg, provider) = session(RefreshKind::Delta, vec![done(later), change(later)]);
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::ProviderGoodbye, "{ended:?}");
        provider.abort();
        let reloaded = Cookie { history, csn: Csn(3) };
        let (cfg, provider) = session(RefreshKind::Full, vec![done(reloaded)]);
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::ProviderGoodbye, "{ended:?}");
        assert_eq!(replica.cookie().unwrap(), Some(reloaded));
        provider.abort();
    }

    /// A provider that welcomes the session and then only keeps it alive (pings, no
    /// refresh) does not keep the agreement `connecting` for good. The detail names the
    /// limit as the file writes it (`1s 500ms`; Debug's `1.5s` is no form the file takes).
    #[tokio::test]
    async fn a_session_whose_refresh_never_begins_ends_after_idle_timeout() {
        let (_dir, store, replica) = empty_replica();
        let (mut cfg, theirs) = piped(Mode::RefreshAndPersist);
        cfg.idle_timeout = Duration::from_millis(1500);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (_r, mut w) = welcomed(theirs, secret, HistoryId::new_random()).await;
            loop {
                if w.send(&Message::Ping { seq: 1 }).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::IdleTimeout, "{ended:?}");
        assert!(ended.detail.contains("began no refresh within 1s 500ms"), "{ended:?}");
        provider.abort();
    }

    /// A provider that goes silent once its refresh has begun ends the session after
    /// `idle_timeout` of silence, whatever the session does meanwhile: its own ack
    /// ticks, every 50 ms, are not the provider's. Counted afresh at each turn of the
    /// session's loop, the idle timeout never ran out, and with keepalive off a stalled
    /// provider held the agreement `refreshing` for good.
    #[tokio::test]
    async fn a_provider_silent_after_its_refresh_began_ends_the_session_after_idle_timeout() {
        let (_dir, store, replica) = empty_replica();
        let (mut cfg, theirs) = piped(Mode::RefreshAndPersist);
        cfg.idle_timeout = Duration::from_millis(1500);
        cfg.keepalive = None;
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (r, mut w) = welcomed(theirs, secret, HistoryId::new_random()).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Delta, resumed: false }).await.unwrap();
            // Silent from here on, the connection kept open.
            std::future::pending::<()>().await;
            drop((r, w));
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::IdleTimeout, "{ended:?}");
        assert!(ended.detail.contains("nothing received for 1s 500ms"), "{ended:?}");
        provider.abort();
    }

    /// A fake provider of protocol version 2: takes any answer to its challenge, and then
    /// refreshes the consumer to an empty replica. Returns what the consumer sent after
    /// its hello (an `Auth` when it believed the fake, a goodbye when it did not).
    async fn fake_older_provider(theirs: tokio::io::DuplexStream) -> Option<Message> {
        let (mut r, mut w) = connection::boxed(theirs);
        assert!(matches!(r.recv().await, Ok(Some(Message::Hello(_)))));
        w.send(&Message::Challenge { nonce: [1; 32] }).await.unwrap();
        let answer = r.recv().await.ok().flatten();
        if matches!(answer, Some(Message::Auth { .. })) {
            let history = HistoryId::new_random();
            let welcome = tether_protocol::Welcome {
                version: 2,
                history,
                session_id: 7,
                keepalive_interval_ms: 60_000,
                keepalive_timeout_ms: 120_000,
            };
            w.send(&Message::Welcome(welcome)).await.unwrap();
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            w.send(&Message::RefreshDone { cookie: Cookie { history, csn: Csn(1) } }).await.unwrap();
            while let Ok(Some(msg)) = r.recv().await {
                if matches!(msg, Message::Ack { .. }) {
                    break;
                }
            }
        }
        answer
    }

    /// Once a provider of the agreement has proved it knows the secret, a peer on its
    /// address that does not prove it (an impostor speaking an older version) is refused
    /// before anything of the secret is sent, and the replica is left as it was; with
    /// `provider_proof = "optional"` it is believed, and can empty the replica, which is
    /// what the default prevents.
    #[tokio::test]
    async fn once_a_provider_proved_itself_one_that_does_not_is_refused() {
        let (_dir, store, replica) = empty_replica();
        let history = HistoryId::new_random();
        let filled = Cookie { history, csn: Csn(3) };
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let secret = cfg.secret.clone();
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = welcomed(theirs, secret, history).await;
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            w.send(&batch(0, 3)).await.unwrap();
            w.send(&Message::RefreshDone { cookie: filled }).await.unwrap();
            while let Ok(Some(msg)) = r.recv().await {
                if matches!(msg, Message::Ack { .. }) {
                    break;
                }
            }
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        provider.await.unwrap();
        assert!(ended.connected, "{ended:?}");
        assert!(replica.provider_proved_at().unwrap().is_some(), "the proof is on record");
        assert_eq!((replica.len().unwrap(), replica.cookie().unwrap()), (3, Some(filled)));

        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        let provider = tokio::spawn(fake_older_provider(theirs));
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
        assert!(ended.unproven && !ended.connected, "{ended:?}");
        assert!(
            ended.detail.contains(
                "did not prove it knows the agreement's secret, and a provider of this agreement proved it at"
            ),
            "{ended:?}"
        );
        assert!(ended.detail.contains("rolled back"), "{ended:?}");
        assert!(ended.detail.contains("provider_proof = \"optional\""), "{ended:?}");
        assert!(ended.detail.contains("tether-consumer reload"), "{ended:?}");
        let Some(Message::Goodbye { reason, detail }) = provider.await.unwrap() else { panic!("no goodbye") };
        assert_eq!(reason, GoodbyeReason::ProtocolError, "told why, and sent no MAC");
        assert!(!detail.contains("proved it at"), "a stranger is not told when the provider proved itself: {detail}");
        assert_eq!((replica.len().unwrap(), replica.cookie().unwrap()), (3, Some(filled)), "the replica is untouched");

        let (mut cfg, theirs) = piped(Mode::RefreshAndPersist);
        cfg.provider_proof = ProofPolicy::Optional;
        let provider = tokio::spawn(fake_older_provider(theirs));
        let ended = session_ended(&cfg, &store, &replica).await;
        assert!(ended.connected, "{ended:?}");
        assert!(matches!(provider.await.unwrap(), Some(Message::Auth { .. })));
        assert_eq!(replica.len().unwrap(), 0, "optional believes whoever answers");
    }

    /// With `provider_proof = "required"` a provider that does not prove itself is refused
    /// from the first session on, and the policy is named.
    #[tokio::test]
    async fn a_required_proof_refuses_an_older_provider_from_the_start() {
        let (_dir, store, replica) = empty_replica();
        let (mut cfg, theirs) = piped(Mode::RefreshAndPersist);
        cfg.provider_proof = ProofPolicy::Required;
        let provider = tokio::spawn(fake_older_provider(theirs));
        // The last session's version, which the refused handshake must not leave standing.
        let status = StatusHandle::new("people", &cfg.provider, &cfg.mode.to_string());
        status.update(|s| s.protocol_version = Some(3));
        let stop = StopSignal::default();
        let ended = tokio::time::timeout(Duration::from_secs(30), run(&cfg, &store, &replica, &status, &stop, false))
            .await
            .unwrap();
        assert_eq!(status.snapshot().protocol_version, None, "the version of a failed handshake is not known");
        assert!(ended.unproven && ended.reason == Reason::Exception, "{ended:?}");
        assert!(ended.detail.contains("and provider_proof = \"required\""), "{ended:?}");
        assert!(!ended.detail.contains("rolled back"), "no rollback happened: {ended:?}");
        assert!(matches!(provider.await.unwrap(), Some(Message::Goodbye { .. })));
        assert_eq!(replica.provider_proved_at().unwrap(), None);
    }

    /// A goodbye in the handshake comes before the provider proved anything, and no
    /// provider of this build sends one there: it is shown, and none of its reasons acted
    /// on (a stranger's `credentials-revoked` would close the agreement, its
    /// `refresh-required` make the supervisor reconnect at once, in a loop).
    #[tokio::test]
    async fn a_goodbye_in_the_handshake_is_reported_but_not_acted_on() {
        let (_dir, store, replica) = empty_replica();
        for reason in [GoodbyeReason::CredentialsRevoked, GoodbyeReason::RefreshRequired] {
            let (cfg, theirs) = piped(Mode::RefreshAndPersist);
            let provider = tokio::spawn(async move {
                let (mut r, mut w) = connection::boxed(theirs);
                assert!(matches!(r.recv().await, Ok(Some(Message::Hello(_)))));
                w.send(&Message::Goodbye { reason, detail: "from a stranger".into() }).await.unwrap();
            });
            let ended = session_ended(&cfg, &store, &replica).await;
            provider.await.unwrap();
            assert_eq!((ended.reason, ended.goodbye, ended.connected), (Reason::ProviderGoodbye, None, false));
            assert!(ended.detail.contains("before the provider proved itself"), "{ended:?}");
            assert!(!ended.fatal && !ended.refresh_complete, "{ended:?}");
        }
    }

    /// A message out of place in the handshake is an `exception`, as it is after it, and
    /// the provider is told why the consumer leaves; so is a damaged frame. Running out
    /// of time is not the provider's fault in the same way, and stays `connection-lost`.
    #[tokio::test]
    async fn a_protocol_error_in_the_handshake_is_an_exception_with_a_goodbye() {
        let (_dir, store, replica) = empty_replica();
        let (cfg, theirs) = piped(Mode::RefreshAndPersist);
        // The provider: reads the hello and answers with a refresh instead of a challenge.
        let provider = tokio::spawn(async move {
            let (mut r, mut w) = connection::boxed(theirs);
            assert!(matches!(r.recv().await, Ok(Some(Message::Hello(_)))));
            w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await.unwrap();
            r.recv().await
        });
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.reason, Reason::Exception, "{ended:?}");
        assert!(ended.detail.starts_with("handshake: protocol error: handshake expected"), "{ended:?}");
        assert!(!ended.connected);
        let Ok(Some(Message::Goodbye { reason, .. })) = provider.await.unwrap() else { panic!("no goodbye") };
        assert_eq!(reason, GoodbyeReason::ProtocolError);

        let damaged = handshake_failed(HandshakeError::Wire(WireError::Checksum));
        assert_eq!(damaged.reason, Reason::Exception, "{damaged:?}");
        let late = handshake_failed(HandshakeError::Timeout(Duration::from_secs(20)));
        assert_eq!(late.reason, Reason::ConnectionLost, "{late:?}");
        // The provider's own deadline passing is the link's doing too, not a refusal.
        let theirs = handshake_failed(HandshakeError::Rejected(tether_protocol::message::Reject::new(
            RejectReason::HandshakeTimeout,
            "handshake not completed within 10s",
        )));
        assert_eq!((theirs.reason, theirs.rejection), (Reason::ConnectionLost, None), "{theirs:?}");
        assert!(theirs.detail.starts_with("handshake-timeout: "), "{theirs:?}");
        let refused = handshake_failed(HandshakeError::Rejected(tether_protocol::message::Reject::new(
            RejectReason::BadCredentials,
            "bad",
        )));
        assert_eq!(refused.reason, Reason::Rejected, "{refused:?}");
    }

    /// A reader ahead of its applier stops once the queue holds `INBOUND_ENTRIES`
    /// entries, however few messages that is, and continues as the applier takes them;
    /// nothing is lost or reordered.
    #[tokio::test]
    async fn the_reader_queues_at_most_the_entry_budget_and_loses_nothing() {
        const BATCH: usize = 500;
        const BATCHES: usize = 10;
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (reader, _w) = connection::boxed(ours);
        let (_r, mut provider) = connection::boxed(theirs);
        let sending = tokio::spawn(async move {
            for b in 0..BATCHES {
                provider.send(&batch(b * BATCH, BATCH)).await.unwrap();
            }
            provider
        });
        let (tx, mut rx) = mpsc::channel(INBOUND_QUEUE);
        let budget = Arc::new(Semaphore::new(INBOUND_ENTRIES));
        let done = CancellationToken::new();
        let task = tokio::spawn(reader_loop(reader, tx, budget.clone(), Arc::new(Progress::new()), done.clone()));
        let full = INBOUND_ENTRIES / BATCH;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx.len() < full || budget.available_permits() > 0 {
            assert!(
                Instant::now() < deadline,
                "the reader did not stop at the entry budget: {} messages queued, {} entries of budget left",
                rx.len(),
                budget.available_permits()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rx.len(), full, "queued past the entry budget");
        let mut next = 0;
        for _ in 0..BATCHES {
            let Ok(Received::Batch(ops)) = inbound(rx.recv().await) else { panic!("expected a batch") };
            assert_eq!(ops.len(), BATCH);
            for op in ops {
                assert_eq!(op.csn(), Csn(next as u64 + 1), "entries lost or out of order");
                next += 1;
            }
            assert!(rx.len() <= full, "queued past the entry budget");
        }
        let _provider = sending.await.unwrap();
        done.cancel();
        task.await.unwrap();
    }

    /// While the applier is behind, the reader holds a message it cannot queue and
    /// reads no more, so the provider's next bytes wait unread in the socket: the reader
    /// stamps the provider heard meanwhile. Unstamped, an apply that took longer than
    /// the keepalive timeout (a slow disk, a large batch) had the poller blame a live
    /// provider.
    #[tokio::test(start_paused = true)]
    async fn a_reader_waiting_on_its_applier_keeps_the_provider_heard() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (reader, _w) = connection::boxed(ours);
        let (_r, mut provider) = connection::boxed(theirs);
        // A queue of one that nothing takes: the reader waits with the second message.
        for seq in 0..2 {
            provider.send(&Message::Ping { seq }).await.unwrap();
        }
        let (tx, _rx) = mpsc::channel(1);
        let heard = Arc::new(Progress::new());
        let done = CancellationToken::new();
        let budget = Arc::new(Semaphore::new(INBOUND_ENTRIES));
        let task = tokio::spawn(reader_loop(reader, tx, budget, heard.clone(), done.clone()));
        let held = Duration::from_secs(10);
        tokio::time::sleep(held).await;
        assert!(
            heard.silent_for() <= ACK_INTERVAL,
            "the provider was last heard {:?} ago, its message held {held:?} for the applier",
            heard.silent_for()
        );
        done.cancel();
        task.await.unwrap();
    }

    /// A frame that breaks the protocol (here one that fails its checksum) ends the
    /// session as an `exception`, with a goodbye saying why; only a read that fails
    /// (a reset, an end of stream) is a `connection-lost`. Named `connection-lost`, a
    /// provider sending garbage read as a flaky link.
    #[test]
    fn a_damaged_frame_is_an_exception_and_a_failed_read_a_lost_connection() {
        let read = |msg| inbound(Some(super::reader::Queued { msg, _permit: None }));
        let Err(damaged) = read(Err(WireError::Checksum)) else { panic!("a damaged frame was taken") };
        assert_eq!(damaged.reason, Reason::Exception, "{damaged:?}");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let Err(lost) = read(Err(WireError::Io(reset))) else { panic!("a failed read was taken") };
        assert_eq!(lost.reason, Reason::ConnectionLost, "{lost:?}");
    }

    /// The handshake's limit is the agreement's keepalive timeout when that is longer
    /// than the connect limit (operations.md: "its agreement's keepalive timeout, but at
    /// least 10 s"): an agreement that allows its provider 20 s of silence gives it 20 s
    /// to answer the `Hello`, not 10.
    #[tokio::test(start_paused = true)]
    async fn the_handshake_is_given_the_keepalive_timeout_when_that_is_longer_than_the_connect_limit() {
        let (_dir, store, replica) = empty_replica();
        let (mut cfg, _theirs) = piped(Mode::RefreshOnly);
        let timeout = CONNECT_TIMEOUT * 2;
        cfg.keepalive = Some((Duration::from_secs(5), timeout));
        // The test's end of the pipe, kept open, never answers.
        let ended = session_ended(&cfg, &store, &replica).await;
        assert_eq!(ended.detail, format!("handshake: handshake did not complete within {timeout:?}"));
    }
}
