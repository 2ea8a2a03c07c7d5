//! One consumer's replication session on the provider: the refresh, then (in
//! refresh-and-persist) live changes, keepalive and acks, until someone says goodbye.
//!
//! Three parts with one owner each: this task decides what to send and reads the
//! consumer; a writer task owns the socket's write half and drains a bounded queue; the
//! [`Registry`](crate::registry) slot publishes status and carries cancellation. The
//! session never buffers changes itself: it reads the changelog from the consumer's
//! position only when the queue has room, so a slow consumer costs a bounded queue, not
//! provider memory, and catches up from the changelog instead of being cut off. Recent
//! changes come through the store's feed, which reads each once for all sessions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tether_config::info_or_debug;
use tether_protocol::connection::{MessageReader, MessageWriter};
use tether_protocol::encoded::EncodedMessage;
use tether_protocol::liveness::{self, Liveness, Progress, Verdict};
use tether_protocol::message::{GoodbyeReason, Hello, Message, Mode, Role, POLL_ACK_VERSION};
use tether_protocol::{Cookie, Csn, RefreshKind, ResumePoint, SearchSpec};
use tether_store::{Directory, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::outbound::Outbound;
use crate::refresh::Refresh;
use crate::registry::Registration;

/// Changelog records read per wake-up in the persist phase; bounds the pending buffer.
const RECORDS_PER_READ: usize = 256;
/// How long after an `Advance` for changes outside a session's region the next one
/// waits, gathering the ones after it (the first after a quiet spell goes at once).
/// Sent at each read, it went out once per write: a
/// consumer of many agreements then applied and flushed one per agreement per write
/// to any region (found by a walkthrough: with 200 agreements, 2,000 writes to one
/// region kept the consumer busy for 146 CPU-seconds, and the agreements not
/// concerned acknowledged them 107 s after the last). A position that much behind
/// costs nothing but its age: the lag shown, and `wait` for a CSN outside the region.
const ADVANCE_DELAY: Duration = Duration::from_millis(250);
/// Refresh batches queued for the writer at most. The queue's length (`queue_len`) is
/// counted in messages, and a refresh batch holds `batch_size` decoded entries: filling
/// a 1,024-message queue with batches held about 100,000 entries per session in memory.
/// A few batches keep the socket busy while the scan reads the next one.
const REFRESH_IN_FLIGHT: usize = 4;
/// How long a goodbye may take to reach the consumer before the socket is closed anyway.
const GOODBYE_GRACE: Duration = Duration::from_secs(2);
/// Acknowledged positions are written to the store at most this often per session
/// (they hold back changelog trimming; precision to a second is plenty).
const POSITION_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// How often a connected consumer's position is written again though it has not moved
/// (an idle replica acknowledges nothing), so its `last_seen` says it is there and it
/// holds trimming back for `hold_for_consumers` after it leaves, not after it came.
const POSITION_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Session tuning, from the provider config.
#[derive(Debug, Clone, Copy)]
pub struct SessionParams {
    /// Operations or UUIDs per refresh message.
    pub batch_size: usize,
    /// Capacity of the outbound queue (messages).
    pub queue_len: usize,
    /// Ping an idle consumer this often.
    pub keepalive_interval: Duration,
    /// Drop a consumer silent for this long; also the limit on one blocked write.
    pub keepalive_timeout: Duration,
    /// Whether to ping and check silence at all (`keepalive.enabled`).
    pub keepalive_enabled: bool,
}

/// How a session ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// We said goodbye with this reason.
    Goodbye(GoodbyeReason),
    /// The consumer said goodbye.
    ConsumerGoodbye(GoodbyeReason, String),
    /// The connection closed or failed without goodbye.
    ConnectionLost(String),
    /// The consumer broke the protocol.
    ProtocolError(String),
    /// The store failed.
    StoreError(String),
}

/// For the log line that ends a session: `goodbye shutdown`, `consumer goodbye
/// admin-stop: restarted by the operator`, `connection lost: ...`.
impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Goodbye(reason) => write!(f, "goodbye {}", reason.as_str()),
            SessionEnd::ConsumerGoodbye(reason, detail) => write!(f, "consumer goodbye {}: {detail}", reason.as_str()),
            SessionEnd::ConnectionLost(detail) => write!(f, "connection lost: {detail}"),
            SessionEnd::ProtocolError(detail) => write!(f, "protocol error: {detail}"),
            SessionEnd::StoreError(detail) => write!(f, "store error: {detail}"),
        }
    }
}

impl SessionEnd {
    /// The goodbye the provider says for this end, if any, given whether the store has
    /// failed. A store error that failed the store stops the provider: the consumer that
    /// met it is told so (`shutdown`, naming the failure), as every other session is,
    /// rather than finding its connection dropped. A consumer that broke the protocol is
    /// told how (protocol.md, section 9), so its status names the bug on its side rather
    /// than a lost connection.
    fn goodbye(&self, store_failed: bool) -> Option<GoodbyeReason> {
        match self {
            SessionEnd::Goodbye(reason) => Some(*reason),
            SessionEnd::StoreError(_) if store_failed => Some(GoodbyeReason::Shutdown),
            SessionEnd::ProtocolError(_) => Some(GoodbyeReason::ProtocolError),
            _ => None,
        }
    }
}

/// The consumer-side facts a session needs from its `Hello`.
#[derive(Debug, Clone)]
pub struct ConsumerRequest {
    /// The agreement name.
    pub agreement: String,
    /// The consumer's id (with the agreement, the key of its retention hold).
    pub client_id: String,
    /// Refresh-only or persist.
    pub mode: Mode,
    /// Its position.
    pub cookie: Option<Cookie>,
    /// Its region.
    pub spec: SearchSpec,
    /// Where its interrupted full or present refresh stood, if it has one.
    pub resume: Option<ResumePoint>,
    /// The protocol version of the session.
    pub version: u16,
}

impl ConsumerRequest {
    /// Extracts the request from a consumer `Hello` of a session negotiated at
    /// `version`; `None` for other roles.
    pub fn from_hello(hello: &Hello, version: u16) -> Option<Self> {
        match &hello.role {
            Role::Consumer { agreement, mode, cookie, spec, resume } => Some(Self {
                agreement: agreement.clone(),
                client_id: hello.client_id.clone(),
                mode: *mode,
                cookie: *cookie,
                spec: spec.clone(),
                resume: resume.clone(),
                version,
            }),
            Role::Writer => None,
        }
    }
}

/// Owns the write half: sends queued messages, and cancels `failed` if the socket breaks
/// or the consumer stops reading: a write moved no bytes for `limit` while the consumer
/// sent nothing either (`heard`, stamped by the session's reader). Messages queued
/// together (a group commit's changes, say) are written together and flushed once.
///
/// A write that waits is not by itself a consumer that stopped: a refresh batch is one
/// frame, which a slow link carries for longer than `limit`, and a relay on the way
/// (stunnel, `ssh -L`, a sidecar) holds megabytes and takes more only once its buffers
/// have drained by hundreds of kilobytes, so at 30 KB/s no write returned for 44 s
/// while the consumer read steadily. A consumer that pings meanwhile is there, reading
/// as fast as the link lets it; one that has stopped (hung, SIGSTOP) is silent too.
async fn writer_loop<W: AsyncWrite + Unpin>(
    mut writer: MessageWriter<W>,
    mut queue: mpsc::Receiver<Outbound>,
    limit: Duration,
    failed: CancellationToken,
    drained: Arc<Notify>,
    heard: Arc<Progress>,
) {
    let progress = Arc::new(Progress::new());
    writer.report_progress(progress.clone());
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut written = Ok(());
        while let Some(msg) = next.take() {
            written = within(limit, [&progress, &heard], msg.feed(&mut writer)).await;
            if written.is_err() {
                break;
            }
            // Out of the queue: a refresh waiting for room can queue its next batch.
            drained.notify_one();
            next = queue.try_recv().ok();
        }
        if written.is_ok() {
            written = within(limit, [&progress, &heard], writer.flush()).await;
        }
        match written {
            Ok(()) => {}
            Err(WriteStop::Failed(e)) => {
                debug!(error = %e, "write failed");
                failed.cancel();
                return;
            }
            Err(WriteStop::Stalled) => {
                warn!(
                    limit = ?limit,
                    "consumer stopped reading (nothing written to it, and nothing from it, for the keepalive timeout); \
                     dropping it"
                );
                failed.cancel();
                return;
            }
        }
    }
    let _ = tokio::time::timeout(GOODBYE_GRACE, writer.shutdown()).await;
}

/// Why the writer task stopped writing.
enum WriteStop {
    /// The socket failed.
    Failed(tether_protocol::connection::WireError),
    /// A write moved no bytes, and the consumer sent none, for the limit: it stopped.
    Stalled,
}

/// Runs one write until neither it nor the consumer has moved a byte (stamped on
/// `progress`) for `limit`, a limit which a stop of this process does not use up
/// ([`liveness::within_moving`]): the consumer may have read on meanwhile.
async fn within(
    limit: Duration,
    progress: [&Progress; 2],
    write: impl std::future::Future<Output = Result<(), tether_protocol::connection::WireError>>,
) -> Result<(), WriteStop> {
    match liveness::within_moving(limit, &progress, write).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(WriteStop::Failed(e)),
        None => Err(WriteStop::Stalled),
    }
}

/// The session's mutable state.
struct Session<'a, R> {
    dir: &'a Arc<Directory>,
    reader: MessageReader<R>,
    queue: mpsc::Sender<Outbound>,
    reg: &'a Registration,
    req: &'a ConsumerRequest,
    params: SessionParams,
    /// When any bytes last arrived from the consumer, stamped by its reader (the
    /// writer reads it too: see [`writer_loop`]).
    heard: Arc<Progress>,
    /// Judges its silence at each keepalive tick.
    liveness: Liveness,
    /// When the acked position was last written to the store, and which it was.
    last_recorded: Option<(Instant, Csn)>,
    /// The newest position the consumer acknowledged in this session, in this store's
    /// current history. Kept here, not by whichever loop read the `Ack`: a poller's ack
    /// of `RefreshDone` can arrive while the refresh loop is still taking its last turn.
    acked: Option<Csn>,
    /// An acknowledged position not yet written (acknowledgements come faster than
    /// [`POSITION_RECORD_INTERVAL`]); written at the next keepalive tick and when the
    /// session ends, so the position `status` lists is never left a burst behind.
    unrecorded: Option<Csn>,
    /// Cancelled by the writer task when the socket is unusable.
    failed: CancellationToken,
    /// Notified by the writer task after each message it took from the queue, so a
    /// refresh waiting for its queued batches to drain below [`REFRESH_IN_FLIGHT`] wakes
    /// up.
    drained: Arc<Notify>,
}

/// What woke the session up.
// An `Event` lives for one loop iteration; boxing the inbound message would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    /// The session must end.
    End(SessionEnd),
    /// A message (or the end of the stream) from the consumer.
    Inbound(Result<Option<Message>, tether_protocol::connection::WireError>),
    /// Keepalive time: the instant the tick was due.
    Tick(Instant),
    /// A slot in the outbound queue.
    Room(mpsc::OwnedPermit<Outbound>),
    /// The writer sent a message: the queue is shorter.
    Drained,
    /// Something new became durable.
    Durable,
    /// The deferred `Advance` is due.
    AdvanceDue,
    /// Nothing else is ready, and the changelog holds more to read now.
    ReadOn,
}

/// What the main loop should do after an inbound message.
enum Inbound {
    Continue,
    End(SessionEnd),
}

/// Runs a consumer session to its end.
pub async fn run<R, W>(
    dir: Arc<Directory>,
    reader: MessageReader<R>,
    writer: MessageWriter<W>,
    req: ConsumerRequest,
    reg: Registration,
    params: SessionParams,
) -> SessionEnd
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(params.queue_len.max(1));
    let failed = CancellationToken::new();
    let drained = Arc::new(Notify::new());
    let heard = Arc::new(Progress::new());
    let mut reader = reader;
    reader.report_progress(heard.clone());
    // In the session's span: "consumer stopped reading; dropping it" must say whom.
    let writer_task = tokio::spawn(
        writer_loop(writer, rx, params.keepalive_timeout, failed.clone(), Arc::clone(&drained), Arc::clone(&heard))
            .in_current_span(),
    );
    let mut session = Session {
        dir: &dir,
        reader,
        queue: tx,
        reg: &reg,
        req: &req,
        params,
        heard,
        liveness: Liveness::new(params.keepalive_timeout),
        last_recorded: None,
        acked: None,
        unrecorded: None,
        failed,
        drained,
    };
    let end = session.drive().await;
    session.record_seen();
    session.reg.withdraw();
    let goodbye = end.goodbye(session.dir.failure().latched().is_some());
    if let Some(reason) = goodbye {
        let detail = match reason {
            GoodbyeReason::Shutdown => shutdown_detail(session.dir),
            GoodbyeReason::RefreshComplete => "refresh complete".into(),
            GoodbyeReason::CredentialsRevoked => {
                "this agreement's grant was removed, or changed its secret or to a base that does not cover this \
                 session's"
                    .into()
            }
            GoodbyeReason::KeepaliveTimeout => "no message from the consumer within the keepalive timeout".into(),
            GoodbyeReason::RefreshRequired => "the consumer's position left the changelog".into(),
            GoodbyeReason::EmptyStore => format!(
                "the provider's store has never held a change, and this replica is at csn {} of a directory that \
                 had some: is the provider's data_dir mistyped, or its volume not mounted? The replica is kept until \
                 the provider's store has data",
                req.cookie.map_or(Csn::ZERO, |c| c.csn)
            ),
            GoodbyeReason::NoSuchBase => match session.dir.entries().missing_base(&req.spec.base) {
                Ok(Some(missing)) => format!(
                    "{missing} in the provider's directory: is the agreement's base mistyped, or its branch not created yet? It is \
                     refreshed once the base is an entry"
                ),
                _ => format!("the region's base {} names no entry in the provider's directory", req.spec.base),
            },
            GoodbyeReason::ProtocolError => match &end {
                SessionEnd::ProtocolError(detail) => detail.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let bye = Message::Goodbye { reason, detail };
        let _ = tokio::time::timeout(GOODBYE_GRACE, session.queue.send(bye.into())).await;
    }
    let Session { mut reader, queue, .. } = session;
    drop(queue);
    // Aborted past the grace: the session is over, and a writer stuck behind a consumer
    // that reads slowly would otherwise hold the connection open, untracked, until its
    // stall limit (the keepalive timeout).
    let mut writer_task = writer_task;
    if tokio::time::timeout(GOODBYE_GRACE * 2, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
    // The writer has sent the goodbye and shut its side. Read on until the consumer
    // closes its own: closing with its acks unread would send a reset, and a reset makes
    // the consumer's kernel discard what it had not read yet, the goodbye included, so
    // the consumer saw `connection-lost` and backed off where a `refresh-required` would
    // have had it reconnect at once.
    if goodbye.is_some() {
        let _ = tokio::time::timeout(GOODBYE_GRACE, async { while let Ok(Some(_)) = reader.recv().await {} }).await;
    }
    end
}

/// The detail of a `shutdown` goodbye: the provider stops on SIGTERM, or because its store
/// failed, which the consumer's operator should read in its log rather than take for a
/// routine restart.
pub(crate) fn shutdown_detail(dir: &Directory) -> String {
    match dir.failure().latched() {
        Some(failure) => format!("provider stopping: its store failed ({failure})"),
        None => "provider shutting down".into(),
    }
}

impl<R: AsyncRead + Unpin> Session<'_, R> {
    async fn drive(&mut self) -> SessionEnd {
        // The position a consumer presents holds back changelog trimming, for pollers
        // too; so does the start of a refresh it may want to resume.
        // Positions in a history this store did not make hold nothing: that consumer
        // reloads in full.
        let mut held = None;
        for c in [self.req.cookie.as_ref(), self.req.resume.as_ref().map(|r| &r.start)].into_iter().flatten() {
            match self.dir.recognizes(c) {
                Ok(true) => held = Some(held.map_or(c.csn, |h: Csn| h.min(c.csn))),
                Ok(false) => {}
                Err(e) => return self.store_error(&e),
            }
        }
        if let Some(csn) = held {
            self.record_position(csn);
        }
        if let Some(end) = self.refuse_to_empty() {
            return end;
        }
        let planned = Refresh::plan(
            self.dir,
            self.req.spec.clone(),
            self.req.cookie.as_ref(),
            self.req.resume.as_ref(),
            self.params.batch_size,
        );
        let mut refresh = match planned {
            Ok(r) => r,
            Err(e) => return self.store_error(&e),
        };
        if refresh.kind() == RefreshKind::Full && self.req.cookie.is_none() {
            // A full refresh of a region whose base names no entry could bring nothing: a
            // mistyped base would replicate as an empty region without a word. Refused
            // to a replica that has no cookie only (a new one, or one whose region
            // changed): a consumer that follows the region by delta still gets the
            // deletes that emptied it, the base's own included, and one that held the
            // region and needs a full refresh (this store restored from a copy made
            // before the base was, or loaded anew without it) must follow it too, or it
            // kept the branch the directory no longer has for as long as it had none.
            match self.dir.entries().missing_base(&self.req.spec.base) {
                Ok(None) => {}
                Ok(Some(missing)) => {
                    warn!(base = %self.req.spec.base, "{missing}: no full refresh of a region without a base entry");
                    return SessionEnd::Goodbye(GoodbyeReason::NoSuchBase);
                }
                Err(e) => return self.store_error(&e),
            }
        }
        if refresh.kind().replaces_replica() {
            // Its start is what the consumer presents to resume it if it is cut short,
            // and must hold back trimming while the consumer is away, as a cookie does:
            // a consumer in its first refresh has no cookie, and one in a present
            // refresh has one below the floor, which holds nothing. Neither held the
            // start, and a trim by age while it was away made it start over.
            self.record_position(refresh.start());
        }
        let scan_resume = self.req.resume.as_ref().is_some_and(|r| r.kind.replaces_replica());
        if scan_resume && !refresh.resumed() {
            info!("the interrupted refresh cannot be resumed (the changelog was trimmed past its start, or it began in another store or another history of it)");
        }
        // A poll's delta is routine; a reload (which may take long) is worth saying, and
        // why: an operator who sees present refreshes must know to raise the retention.
        let polling = self.req.mode == Mode::RefreshOnly;
        let why = match (refresh.kind(), self.req.cookie) {
            _ if refresh.resumed() => "an interrupted refresh resumed".to_owned(),
            (RefreshKind::Delta, _) => String::new(),
            (_, None) => {
                "the consumer has no cookie (a new or emptied replica, or one whose region changed)".to_owned()
            }
            (RefreshKind::Present, Some(cookie)) => {
                let floor = self.dir.floor().map_or_else(|_| "?".to_owned(), |f| f.to_string());
                match self.dir.load_floor() {
                    Ok(Some(loaded)) if cookie.csn < loaded => format!(
                        "its cookie's csn {} is below the changelog's floor {floor}: an offline load (not logged) \
                         raised the floor to {loaded} since",
                        cookie.csn
                    ),
                    _ => format!(
                        "its cookie's csn {} is below the changelog's floor {floor}: retention trimmed past it",
                        cookie.csn
                    ),
                }
            }
            (RefreshKind::Full, Some(_)) => {
                "its cookie names a position this store did not make (another store, changes lost to a restore, or \
                 the provider's build rolled back or forward across histories: see Upgrading in operations.md)"
                    .to_owned()
            }
        };
        // A consumer ahead of this store's history held changes this store does not: a
        // restore that lost them, or the wrong store. They go from that replica now, and
        // an operator must hear of it where warnings are read.
        let unknown_position = refresh.kind() == RefreshKind::Full && self.req.cookie.is_some() && !refresh.resumed();
        if why.is_empty() {
            info_or_debug!(polling, refresh = refresh.kind().as_str(), resumed = refresh.resumed(), "refresh planned");
        } else if unknown_position {
            warn!(refresh = refresh.kind().as_str(), resumed = refresh.resumed(), why, "refresh planned");
        } else {
            info!(refresh = refresh.kind().as_str(), resumed = refresh.resumed(), why, "refresh planned");
        }
        self.reg.update(|i| {
            i.refresh = Some(refresh.kind().as_str().to_owned());
            // What it had acknowledged (its cookie, perhaps of another store) is not what
            // it holds once this refresh replaces its replica: nothing, until it
            // acknowledges the refresh's end.
            if refresh.kind().replaces_replica() {
                i.cookie = None;
            }
        });
        if let Some(end) = self.run_refresh(&mut refresh).await {
            return end;
        }
        // The one line a poll that sent something leaves at INFO; an empty one is
        // routine, and `status` lists when each consumer was last seen.
        let quiet = polling && refresh.kind() == RefreshKind::Delta && refresh.sent() == 0;
        info_or_debug!(quiet, refresh = refresh.kind().as_str(), sent = refresh.sent(), csn = %refresh.end(), "refresh sent");
        match self.req.mode {
            Mode::RefreshOnly => match self.await_poll_ack(refresh.end()).await {
                Some(end) => end,
                None => SessionEnd::Goodbye(GoodbyeReason::RefreshComplete),
            },
            Mode::RefreshAndPersist => self.run_persist(refresh.end()).await,
        }
    }

    /// From protocol version 2 a poller acknowledges the refresh once it is durable, and
    /// the goodbye waits for that: its recorded position (which holds back trimming,
    /// and which `status` lists with its lag) is then what the poll brought it, not the
    /// cookie it came with. A version 1 consumer acknowledges nothing, and gets its
    /// goodbye at once. `None` once the acknowledgement of `end` is in.
    ///
    /// The acknowledgement may be in already: the consumer sends it as soon as the
    /// `RefreshDone` is durable, and on a busy machine it arrived while the refresh loop
    /// was still to take its last turn, which read it. Waiting for it here then waited
    /// for good, both sides pinging, the poller `refreshing` for as long (found in a
    /// 25-minute run: 14 minutes and counting).
    async fn await_poll_ack(&mut self, end: Csn) -> Option<SessionEnd> {
        if self.req.version < POLL_ACK_VERSION {
            return None;
        }
        let mut ping = keepalive_ticker(self.params.keepalive_interval);
        let mut seq = 0u64;
        loop {
            if self.acked.is_some_and(|csn| csn >= end) {
                // Recorded now if it was not: the goodbye follows.
                self.record_unrecorded();
                return None;
            }
            match self.next_event(&mut ping, false, None, false, None, false).await {
                Event::End(end) => return Some(end),
                Event::Inbound(msg) => {
                    if let Inbound::End(end) = self.on_inbound(msg) {
                        return Some(end);
                    }
                }
                Event::Tick(due) => {
                    if let Some(end) = self.keepalive(&mut seq, due) {
                        return Some(end);
                    }
                }
                Event::Room(_) | Event::Drained | Event::Durable | Event::AdvanceDue | Event::ReadOn => {}
            }
        }
    }

    /// A store that has never held a change is not the directory a consumer with a
    /// position in one followed: the provider was started on the wrong folder (a
    /// mistyped `data_dir`, a volume not mounted) or lost its store. Its full refresh
    /// would empty that consumer's replica, which may then be the only copy left; the
    /// session ends with `empty-store` instead, and the consumer keeps its replica until
    /// this store has data (a load, a first write) or the right store is back.
    fn refuse_to_empty(&self) -> Option<SessionEnd> {
        if self.dir.durable_csn() != Csn::ZERO {
            return None;
        }
        let at = self.req.cookie.map(|c| c.csn).filter(|csn| *csn > Csn::ZERO)?;
        warn!(
            consumer_csn = %at,
            "this store has never held a change, but the consumer's replica is at csn {at} of a directory that had \
             some: not emptying it (is data_dir mistyped, or its volume not mounted?)"
        );
        Some(SessionEnd::Goodbye(GoodbyeReason::EmptyStore))
    }

    /// Ends the session on a store error, latching it first if the storage failed: a
    /// read may be the first to meet a failure sled met writing its log in the
    /// background, and the provider must stop then rather than drop every consumer that
    /// connects (see `tether_store::failure`).
    fn store_error(&self, e: &StoreError) -> SessionEnd {
        self.dir.failure().note(e);
        SessionEnd::StoreError(e.to_string())
    }

    fn cancelled_end(&self) -> SessionEnd {
        SessionEnd::Goodbye(self.reg.revocation().unwrap_or(GoodbyeReason::Shutdown))
    }

    async fn run_refresh(&mut self, refresh: &mut Refresh) -> Option<SessionEnd> {
        let mut ping = keepalive_ticker(self.params.keepalive_interval);
        let mut seq = 0u64;
        loop {
            let room = self.queued() < REFRESH_IN_FLIGHT;
            let event = self.next_event(&mut ping, room, None, !room, None, false).await;
            match event {
                Event::End(end) => return Some(end),
                Event::Inbound(msg) => {
                    if let Inbound::End(end) = self.on_inbound(msg) {
                        return Some(end);
                    }
                }
                Event::Tick(due) => {
                    if let Some(end) = self.keepalive(&mut seq, due) {
                        return Some(end);
                    }
                }
                Event::Room(permit) => match refresh.next_message(self.dir) {
                    Ok(Some(msg)) => {
                        permit.send(msg);
                        // The writer just woke sits in this worker's LIFO slot, which no
                        // other worker steals: without a yield it would wait while the
                        // next batch is read, and the link would idle between batches.
                        tokio::task::yield_now().await;
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(self.store_error(&e)),
                },
                Event::Durable | Event::Drained | Event::AdvanceDue | Event::ReadOn => {}
            }
            self.publish_queue();
        }
    }

    /// Waits for the next thing that needs the session's attention. `want_room` asks
    /// for a queue slot; `durable` (when caught up) waits for the next commit;
    /// `want_drain` waits for the writer to send something; `advance_due`, when the
    /// deferred `Advance` is due; `read_on` answers at once, after anything else ready,
    /// when there is more to read.
    async fn next_event(
        &mut self,
        ping: &mut tokio::time::Interval,
        want_room: bool,
        durable: Option<&mut tokio::sync::watch::Receiver<Csn>>,
        want_drain: bool,
        advance_due: Option<tokio::time::Instant>,
        read_on: bool,
    ) -> Event {
        let queue = self.queue.clone();
        let wait_durable = async {
            match durable {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.reg.cancel.cancelled() => Event::End(self.cancelled_end()),
            _ = self.failed.cancelled() => Event::End(SessionEnd::ConnectionLost("write failed or timed out".into())),
            msg = self.reader.recv() => Event::Inbound(msg),
            due = ping.tick() => Event::Tick(due),
            alive = wait_durable => if alive { Event::Durable } else { Event::End(SessionEnd::Goodbye(GoodbyeReason::Shutdown)) },
            permit = queue.reserve_owned(), if want_room => match permit {
                Ok(p) => Event::Room(p),
                Err(_) => Event::End(SessionEnd::ConnectionLost("writer ended".into())),
            },
            _ = self.drained.notified(), if want_drain => Event::Drained,
            _ = tokio::time::sleep_until(advance_due.unwrap_or_else(tokio::time::Instant::now)), if advance_due.is_some() => Event::AdvanceDue,
            _ = std::future::ready(()), if read_on => Event::ReadOn,
        }
    }

    async fn run_persist(&mut self, mut position: Csn) -> SessionEnd {
        let mut durable = self.dir.subscribe();
        let mut ping = keepalive_ticker(self.params.keepalive_interval);
        let mut seq = 0u64;
        let mut pending: VecDeque<Outbound> = VecDeque::new();
        // The position an `Advance` is to move the consumer to, and when it goes.
        let mut advance: Option<(Csn, tokio::time::Instant)> = None;
        // When the last one went: the next goes at once if that was long enough ago, so
        // a lone write outside the region moves the consumer now (a `wait` for its CSN
        // took the whole delay, found by a walkthrough), and a burst by one per delay.
        let mut advanced_at: Option<tokio::time::Instant> = None;
        loop {
            let newest = *durable.borrow_and_update();
            // Whether the last read moved on and left more to read: the next read then
            // follows at once, not when something else wakes the session. A read that
            // found only changes outside the region sends nothing, and waiting then for
            // the deferred `Advance` read a backlog at one read per delay, holding the
            // region's next change behind it.
            let mut read_on = false;
            if pending.is_empty() && position < newest {
                match self.read_changes(position, newest, &mut pending) {
                    Ok(Some((next, skipped_tail))) => {
                        read_on = next > position && next < newest;
                        position = next;
                        advance = match (skipped_tail, advance) {
                            // Gathered into the one already waiting: it goes when that
                            // one was due, with the newest position.
                            (true, Some((_, due))) if pending.is_empty() => Some((next, due)),
                            (true, _) => {
                                let soonest = advanced_at.map(|at| at + ADVANCE_DELAY);
                                Some((next, soonest.unwrap_or_else(tokio::time::Instant::now)))
                            }
                            // The changes read carry later cookies.
                            (false, _) => None,
                        };
                    }
                    Ok(None) => return SessionEnd::Goodbye(GoodbyeReason::RefreshRequired),
                    Err(e) => return self.store_error(&e),
                }
            }
            let has_pending = !pending.is_empty();
            let caught_up = !has_pending && position >= newest;
            let due = advance.map(|(_, due)| due);
            let read_on = read_on && !has_pending;
            let event =
                self.next_event(&mut ping, has_pending, caught_up.then_some(&mut durable), false, due, read_on).await;
            match event {
                Event::AdvanceDue => {
                    if let Some((csn, _)) = advance.take() {
                        let cookie = Cookie { history: self.dir.history(), csn };
                        pending.push_back(Message::Advance { cookie }.into());
                        advanced_at = Some(tokio::time::Instant::now());
                    }
                }
                Event::End(end) => return end,
                Event::Inbound(msg) => {
                    if let Inbound::End(end) = self.on_inbound(msg) {
                        return end;
                    }
                }
                Event::Tick(due) => {
                    if let Some(end) = self.keepalive(&mut seq, due) {
                        return end;
                    }
                }
                Event::Room(permit) => {
                    if let Some(msg) = pending.pop_front() {
                        permit.send(msg);
                        // As in the refresh: let the writer go before reading on.
                        if pending.is_empty() {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                Event::ReadOn => {
                    // Reading on takes the store: let the session's neighbours run between
                    // reads of a long backlog.
                    tokio::task::yield_now().await;
                }
                Event::Durable | Event::Drained => {}
            }
            self.publish_queue();
        }
    }

    /// Reads up to [`RECORDS_PER_READ`] changelog records after `position` into
    /// `pending`; returns the new position and whether the records read end with ones
    /// outside the region (the consumer's position then moves by an `Advance`, which the
    /// caller defers: [`ADVANCE_DELAY`]), or `None` if `position` was trimmed away.
    fn read_changes(
        &self,
        position: Csn,
        newest: Csn,
        pending: &mut VecDeque<Outbound>,
    ) -> Result<Option<(Csn, bool)>, StoreError> {
        if position < self.dir.floor()? {
            return Ok(None);
        }
        let history = self.dir.history();
        let mut last = position;
        let mut skipped_tail = false;
        for change in self.dir.recent_changes(position, newest, RECORDS_PER_READ)? {
            last = change.csn();
            match change.op_for(&self.req.spec)? {
                Some(op) => {
                    let cookie = Cookie { history, csn: change.csn() };
                    let change = EncodedMessage::change(&op, &cookie)
                        .map_err(|source| StoreError::Codec { tree: "entries", source })?;
                    pending.push_back(change.into());
                    skipped_tail = false;
                }
                None => skipped_tail = true,
            }
        }
        if position < self.dir.floor()? {
            // Trimmed while we read (the floor rises before records go): some records
            // after `position` may have been skipped, so what was read cannot be sent.
            pending.clear();
            return Ok(None);
        }
        // Changes outside the region still move the consumer's position, so its cookie
        // and the provider's lag figure stay exact.
        Ok(Some((last, skipped_tail)))
    }

    /// Stores the consumer's position, which holds back changelog trimming.
    fn record_position(&mut self, csn: Csn) {
        let id = position_id(&self.req.agreement, &self.req.client_id);
        if let Err(e) = self.dir.record_consumer(&id, csn) {
            warn!(error = %e, "could not record consumer position");
        }
        self.last_recorded = Some((Instant::now(), csn));
        self.unrecorded = None;
    }

    /// Writes the newest acknowledged position if it is not yet written, and writes the
    /// recorded one again once [`POSITION_REFRESH_INTERVAL`] has passed without either.
    fn record_unrecorded(&mut self) {
        if let Some(csn) = self.unrecorded.take() {
            self.record_position(csn);
        } else if let Some((at, csn)) = self.last_recorded {
            if at.elapsed() >= POSITION_REFRESH_INTERVAL {
                self.record_position(csn);
            }
        }
    }

    /// At the session's end: the newest position this session knows, written with the
    /// time, so the consumer's absence is counted from when it left.
    fn record_seen(&mut self) {
        let newest = self.unrecorded.take().or(self.acked).or(self.last_recorded.map(|(_, csn)| csn));
        if let Some(csn) = newest {
            self.record_position(csn);
        }
    }

    /// Messages waiting for the writer (a reserved slot counts as one).
    fn queued(&self) -> usize {
        self.params.queue_len.max(1) - self.queue.capacity()
    }

    fn publish_queue(&self) {
        let len = self.queued();
        self.reg.update(|i| i.queue_len = len);
    }

    /// Pings when due, and ends the session if the consumer has been silent too long
    /// (unless this process was stopped meanwhile: see [`tether_protocol::liveness`]).
    fn keepalive(&mut self, seq: &mut u64, due: Instant) -> Option<SessionEnd> {
        self.record_unrecorded();
        if !self.params.keepalive_enabled {
            return None;
        }
        let now = Instant::now();
        match self.liveness.check(self.heard.last(), due, now) {
            Verdict::Alive => {}
            Verdict::Excused { late } => {
                info!(
                    late_ms = late.as_millis() as u64,
                    "keepalive check ran late: this process was not running, so the consumer's silence is counted afresh"
                );
                self.heard.mark();
            }
            Verdict::Silent { silent } => {
                warn!(
                    silent_ms = silent.as_millis() as u64,
                    timeout = ?self.params.keepalive_timeout,
                    "consumer silent past keepalive timeout"
                );
                return Some(SessionEnd::Goodbye(GoodbyeReason::KeepaliveTimeout));
            }
        }
        *seq += 1;
        // A full queue means data is flowing; the ping is not needed then.
        let _ = self.queue.try_send(Message::Ping { seq: *seq }.into());
        None
    }

    fn on_inbound(&mut self, msg: Result<Option<Message>, tether_protocol::connection::WireError>) -> Inbound {
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return Inbound::End(SessionEnd::ConnectionLost("consumer closed the connection".into())),
            Err(e) if e.is_protocol_violation() => return Inbound::End(SessionEnd::ProtocolError(e.to_string())),
            Err(e) => return Inbound::End(SessionEnd::ConnectionLost(e.to_string())),
        };
        match msg {
            Message::Ack { cookie } => {
                // The cookies this session sent name the current history; a consumer
                // acknowledging anything else is not at a position of ours (older
                // consumer builds acknowledged the cookie they kept, of an older
                // history, after an empty delta: ignored, not refused).
                if cookie.history != self.dir.history() {
                    return Inbound::Continue;
                }
                let durable = self.dir.durable_csn();
                if cookie.csn > durable {
                    // Nothing past the durable CSN was ever sent: recorded, such an ack
                    // showed the consumer as current (`lag 0`) for as long as its
                    // position was kept, whatever it held.
                    return Inbound::End(SessionEnd::ProtocolError(format!(
                        "an ack of {cookie}, past this provider's newest durable csn {durable}"
                    )));
                }
                // Acks of one session move forward; an older one says nothing new.
                if self.acked.is_none_or(|acked| cookie.csn >= acked) {
                    self.acked = Some(cookie.csn);
                    self.reg.acked(&cookie, durable);
                    if self.last_recorded.is_none_or(|(t, _)| t.elapsed() >= POSITION_RECORD_INTERVAL) {
                        self.record_position(cookie.csn);
                    } else if self.last_recorded.is_some_and(|(_, recorded)| recorded != cookie.csn) {
                        self.unrecorded = Some(cookie.csn);
                    }
                }
                Inbound::Continue
            }
            Message::Ping { seq } => {
                let _ = self.queue.try_send(Message::Pong { seq }.into());
                Inbound::Continue
            }
            Message::Pong { .. } => Inbound::Continue,
            Message::Goodbye { reason, detail } => {
                let detail = tether_protocol::message::shown(detail);
                info!(reason = reason.as_str(), detail = %detail, "consumer said goodbye");
                Inbound::End(SessionEnd::ConsumerGoodbye(reason, detail))
            }
            other => Inbound::End(SessionEnd::ProtocolError(format!("unexpected {} from a consumer", other.name()))),
        }
    }
}

/// A ticker for keepalive checks; the first tick is one interval from now.
fn keepalive_ticker(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// The store's id of a consumer's position: its agreement and the client id its `Hello`
/// gave, so that each consumer store replicating an agreement holds back trimming on
/// its own. Read back by [`split_position_id`].
pub(crate) fn position_id(agreement: &str, client: &str) -> String {
    format!("{agreement}/{client}")
}

/// The agreement and client id of a position id. The first '/' ends the agreement: the
/// config refuses a '/' in agreement names, while the client id is the consumer's to
/// choose and may hold one.
pub(crate) fn split_position_id(id: &str) -> (&str, &str) {
    id.split_once('/').unwrap_or((id, ""))
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};

    use super::*;

    /// A stream recording every write it takes, shared with the test.
    #[derive(Clone, Default)]
    struct Recorder(Arc<StdMutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_store_error_that_failed_the_store_ends_with_a_shutdown_goodbye() {
        let store = SessionEnd::StoreError("storage error: Read corrupted data".into());
        assert_eq!(store.goodbye(true), Some(GoodbyeReason::Shutdown));
        assert_eq!(store.goodbye(false), None, "one record's error: the provider goes on");
        assert_eq!(
            SessionEnd::Goodbye(GoodbyeReason::RefreshRequired).goodbye(false),
            Some(GoodbyeReason::RefreshRequired)
        );
        assert_eq!(SessionEnd::ConnectionLost("reset".into()).goodbye(true), None);
    }

    /// A write that moves slowly is not a consumer that stopped reading: a frame that
    /// takes ten times the limit to cross (a refresh batch on a slow link) is written
    /// whole. Nor is one that does not move while the consumer is heard from (a relay
    /// on the way takes more only once it has drained by hundreds of kilobytes). Only
    /// a write that moves nothing for the limit, while the consumer is silent too,
    /// drops the consumer.
    #[tokio::test]
    async fn a_slow_write_is_not_a_stalled_one() {
        use tokio::io::AsyncReadExt;
        let limit = Duration::from_millis(300);
        let heard = Arc::new(Progress::new());
        let (provider_side, consumer_side) = tokio::io::duplex(1024);
        let (tx, rx) = mpsc::channel(4);
        let failed = CancellationToken::new();
        let writer = tokio::spawn(writer_loop(
            MessageWriter::new(provider_side),
            rx,
            limit,
            failed.clone(),
            Arc::new(Notify::new()),
            heard.clone(),
        ));
        // About 20 KB at 512 bytes per 50 ms: 2 s, against a limit of 300 ms.
        let big = Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "x".repeat(20_000) };
        tx.send(Outbound::from(big.clone())).await.unwrap();
        let (mut consumer_reads, _consumer_writes) = tokio::io::split(consumer_side);
        let mut got = Vec::new();
        let mut chunk = [0u8; 512];
        // Until the frame is whole, or the writer gave up (the end of the stream).
        while !matches!(MessageReader::new(&got[..]).recv().await, Ok(Some(_))) {
            let n = consumer_reads.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!failed.is_cancelled(), "a consumer reading slowly was dropped");
        assert_eq!(MessageReader::new(&got[..]).recv().await.unwrap(), Some(big.clone()));
        // Reading nothing any more, but heard from: the next large write waits, for
        // ten times the limit, and the consumer stays.
        tx.send(Outbound::from(big)).await.unwrap();
        for _ in 0..30 {
            heard.mark();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!failed.is_cancelled(), "a consumer heard from was dropped");
        // Silent as well: the consumer goes.
        tokio::time::timeout(Duration::from_secs(10), failed.cancelled()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), writer).await.unwrap().unwrap();
    }

    /// Messages queued together leave in one write, in order, and each one taken from
    /// the queue wakes a refresh waiting for room.
    #[tokio::test]
    async fn the_writer_sends_what_was_queued_together_in_one_write() {
        let stream = Recorder::default();
        let (tx, rx) = mpsc::channel(64);
        for seq in 0..20 {
            tx.send(Outbound::from(Message::Ping { seq })).await.unwrap();
        }
        drop(tx);
        let drained = Arc::new(Notify::new());
        let failed = CancellationToken::new();
        let writer = MessageWriter::new(stream.clone());
        let heard = Arc::new(Progress::new());
        writer_loop(writer, rx, Duration::from_secs(5), failed.clone(), Arc::clone(&drained), heard).await;
        assert!(!failed.is_cancelled());
        let writes = stream.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 1, "twenty queued pings took {} writes", writes.len());
        let mut reader = MessageReader::new(&writes[0][..]);
        for seq in 0..20 {
            assert_eq!(reader.recv().await.unwrap(), Some(Message::Ping { seq }));
        }
        assert_eq!(reader.recv().await.unwrap(), None);
        // A permit was left for a refresh that waits for room.
        tokio::time::timeout(Duration::from_secs(5), drained.notified()).await.unwrap();
    }

    /// A poller's `Ack` of its refresh read while the refresh loop takes its last turn
    /// (here: waiting before the session starts, so its first read takes it) still
    /// ends the poll: the goodbye follows. It used to be lost with the loop, and the
    /// session waited for it until the keepalive gave up on a consumer that had done
    /// everything right (one that pings meanwhile: for good).
    #[tokio::test]
    async fn a_poll_acknowledged_before_the_refresh_loop_ends_gets_its_goodbye() {
        let (_store, dir, at) = directory_with_suffix();
        // The consumer's ack is on the wire before the session reads anything.
        let (end, seen) = session_answering(dir, Mode::RefreshOnly, at, &[Message::Ack { cookie: at }]).await;
        assert_eq!(end, SessionEnd::Goodbye(GoodbyeReason::RefreshComplete));
        let seen: Vec<_> = seen.iter().map(Message::name).collect();
        assert_eq!(seen, ["refresh-begin", "refresh-done", "goodbye"]);
    }

    /// An ack past the provider's newest durable CSN is a protocol error, told to the
    /// consumer in a goodbye; an ack behind an earlier one of the session is not
    /// recorded (found by a walkthrough with a hostile client: an ack of csn 2^64-1 was
    /// kept as the consumer's position, showing it current, `lag 0`, whatever it held,
    /// and a session that broke the protocol ended without a word to the consumer).
    #[tokio::test]
    async fn an_ack_past_the_newest_csn_ends_the_session_with_a_goodbye_and_an_older_one_is_not_recorded() {
        let (_store, dir, at) = directory_with_suffix();
        let history = at.history;
        let acks = [
            Message::Ack { cookie: at },
            Message::Ack { cookie: Cookie { history, csn: Csn(1) } },
            Message::Ack { cookie: Cookie { history, csn: Csn(u64::MAX) } },
        ];
        let (end, seen) = session_answering(dir.clone(), Mode::RefreshAndPersist, at, &acks).await;
        let detail =
            format!("an ack of {history}#18446744073709551615, past this provider's newest durable csn {}", at.csn);
        assert_eq!(end, SessionEnd::ProtocolError(detail.clone()));
        assert_eq!(
            seen.last(),
            Some(&Message::Goodbye { reason: GoodbyeReason::ProtocolError, detail }),
            "the consumer is told why"
        );
        let positions = dir.consumer_positions().unwrap();
        let csns: Vec<_> = positions.iter().map(|(id, p)| (id.as_str(), p.csn)).collect();
        assert_eq!(csns, [("people/poller", at.csn)], "neither the older ack nor the impossible one");
    }

    /// What [`run`] takes for a session of `mode` for a consumer at `at` replicating
    /// `spec`, ended by cancelling `cancel`.
    fn session_setup(
        mode: Mode,
        at: Cookie,
        spec: SearchSpec,
        cancel: &CancellationToken,
    ) -> (ConsumerRequest, Registration, SessionParams) {
        let req = ConsumerRequest {
            agreement: "people".into(),
            client_id: "poller".into(),
            mode,
            cookie: Some(at),
            spec,
            resume: None,
            version: POLL_ACK_VERSION,
        };
        let info = crate::registry::SessionInfo {
            mode: mode.to_string(),
            protocol_version: 2,
            ..crate::registry::SessionInfo::for_test(1, "test", "people", "poller")
        };
        let reg = crate::registry::Registry::default().register(info, cancel);
        let params = SessionParams {
            batch_size: 100,
            queue_len: 64,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(120),
            keepalive_enabled: true,
        };
        (req, reg, params)
    }

    /// Runs a session of `setup` (see [`session_setup`]) over an in-memory pipe: the
    /// session, and the consumer's end of the pipe.
    fn spawn_session(
        dir: &Arc<Directory>,
        (req, reg, params): (ConsumerRequest, Registration, SessionParams),
    ) -> (tokio::task::JoinHandle<SessionEnd>, tokio::io::DuplexStream) {
        let (provider_side, consumer_side) = tokio::io::duplex(64 * 1024);
        let (from_consumer, to_consumer) = tokio::io::split(provider_side);
        let reader = MessageReader::new(from_consumer);
        let session = tokio::spawn(run(dir.clone(), reader, MessageWriter::new(to_consumer), req, reg, params));
        (session, consumer_side)
    }

    /// What [`persisting`] hands a test: the store's folder, the directory, the
    /// consumer's reader, the consumer's writing half (kept open: its end ends the
    /// session), the session, and what stops it.
    type Persisting = (
        tempfile::TempDir,
        Arc<Directory>,
        MessageReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<SessionEnd>,
        CancellationToken,
    );

    /// A persist session of a region the writes to the suffix entry are outside of, past
    /// its refresh (see [`persisting`]).
    async fn persisting_outside_the_writes() -> Persisting {
        persisting(|_| SearchSpec::subtree(tether_protocol::Dn::parse("ou=people,dc=example,dc=com").unwrap())).await
    }

    /// A persist session of the region `region` names in the directory, past its
    /// refresh ([`Persisting`]).
    async fn persisting(region: impl FnOnce(&Directory) -> SearchSpec) -> Persisting {
        let (store, dir, at) = directory_with_suffix();
        let spec = region(&dir);
        let cancel = CancellationToken::new();
        let (session, consumer_side) = spawn_session(&dir, session_setup(Mode::RefreshAndPersist, at, spec, &cancel));
        let (consumer_reads, consumer_writes) = tokio::io::split(consumer_side);
        let mut reader = MessageReader::new(consumer_reads);
        let refreshed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(msg) = reader.recv().await.unwrap() {
                if matches!(msg, Message::RefreshDone { .. }) {
                    return;
                }
            }
        });
        assert!(refreshed.await.is_ok(), "the refresh ends, and persisting begins");
        (store, dir, reader, consumer_writes, session, cancel)
    }

    /// A write to the suffix entry, outside the session's region; its CSN.
    fn write_outside(dir: &Directory, i: usize) -> Csn {
        dir.write(&describe_suffix(dir, format!("write {i}"))).unwrap().csn
    }

    /// A modification of the suffix entry's description to `text`.
    fn describe_suffix(dir: &Directory, text: String) -> tether_protocol::Change {
        tether_protocol::Change::Modify {
            dn: dir.suffix().clone(),
            mods: vec![tether_protocol::Modification {
                op: tether_protocol::ModOp::Replace,
                attr: "description".into(),
                values: vec![tether_protocol::Value::from(text)],
            }],
        }
    }

    /// The next `Advance`'s CSN.
    async fn next_advance(reader: &mut MessageReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>) -> Csn {
        loop {
            if let Message::Advance { cookie } = reader.recv().await.unwrap().expect("a message") {
                return cookie.csn;
            }
        }
    }

    /// Writes outside a persist session's region move the consumer by a few `Advance`s
    /// carrying the newest position, not one per write (found by a walkthrough: with
    /// 200 agreements, one per write per agreement kept the consumer busy for minutes).
    #[tokio::test]
    async fn writes_outside_the_region_move_the_consumer_by_few_advances_to_the_newest() {
        let (_store, dir, mut reader, _writes, session, cancel) = persisting_outside_the_writes().await;
        let mut last = Csn::ZERO;
        for i in 0..40 {
            last = write_outside(&dir, i);
            // The session reads each write before the next, as with a client writing
            // one at a time.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut advances = Vec::new();
        let reached = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                advances.push(next_advance(&mut reader).await);
                if advances.last() == Some(&last) {
                    return;
                }
            }
        })
        .await;
        assert!(reached.is_ok(), "an advance to the newest write, {last}, came: {advances:?}");
        assert!(advances.len() <= 5, "40 writes, {} advances: {advances:?}", advances.len());
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// The first write outside the region after a quiet spell moves the consumer at
    /// once, and the next within the delay waits for it: a `wait` for a lone write's CSN
    /// on an agreement it is outside of took the whole delay (found by a walkthrough).
    /// On the runtime's paused clock, which moves only as timers fire.
    #[tokio::test(start_paused = true)]
    async fn a_lone_write_outside_the_region_moves_the_consumer_at_once() {
        let (_store, dir, mut reader, _writes, session, cancel) = persisting_outside_the_writes().await;
        let start = tokio::time::Instant::now();
        let first = write_outside(&dir, 0);
        assert_eq!(next_advance(&mut reader).await, first);
        assert!(start.elapsed() < ADVANCE_DELAY, "the first came after {:?}", start.elapsed());
        let sent = tokio::time::Instant::now();
        let second = write_outside(&dir, 1);
        assert_eq!(next_advance(&mut reader).await, second);
        assert!(sent.elapsed() >= ADVANCE_DELAY / 2, "the second came after {:?}", sent.elapsed());
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// A backlog of changes outside the region is read on at once, gathered into the
    /// deferred `Advance`: only the `Advance` waits, not the reading. A change in the
    /// region behind such a backlog then goes out without delay. (Each read of
    /// [`RECORDS_PER_READ`] records that found nothing to send waited for the deferred
    /// `Advance` before the next: a burst of 100,000 writes to another branch held the
    /// region's next change back by about 100 s.) On the paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_change_in_the_region_behind_a_backlog_outside_it_is_not_held_back() {
        let (_store, dir, mut reader, _writes, session, cancel) = persisting_outside_the_writes().await;
        let backlog: Vec<tether_protocol::Change> =
            (0..10 * RECORDS_PER_READ).map(|i| describe_suffix(&dir, format!("write {i}"))).collect();
        let mut attrs = tether_protocol::Attributes::new();
        attrs.add("objectClass", [tether_protocol::Value::from("organizationalUnit")]).unwrap();
        attrs.add("ou", [tether_protocol::Value::from("people")]).unwrap();
        let people = tether_protocol::Dn::parse("ou=people,dc=example,dc=com").unwrap();
        let changes: Vec<_> = backlog.into_iter().chain([tether_protocol::Change::Add { dn: people, attrs }]).collect();
        let committed = dir.write_group(&changes);
        let last = committed.last().unwrap().as_ref().unwrap().csn;
        dir.sync(last).unwrap();
        let written = tokio::time::Instant::now();
        let change = loop {
            match reader.recv().await.unwrap().expect("a message") {
                Message::Change { cookie, .. } => break cookie.csn,
                _ => continue,
            }
        };
        assert_eq!(change, last);
        assert!(
            written.elapsed() <= ADVANCE_DELAY,
            "the change in the region came {:?} after it was written",
            written.elapsed()
        );
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// An `Advance` held back for changes outside the region is dropped when a change in
    /// the region comes first: the change's cookie is past it, and an `Advance` sent
    /// after it would move the consumer back, which the consumer refuses as a protocol
    /// violation. On the paused clock, which moves only as timers fire.
    #[tokio::test(start_paused = true)]
    async fn an_advance_held_back_is_dropped_when_a_change_in_the_region_comes_first() {
        let (_store, dir, mut reader, _writes, session, cancel) = persisting_outside_the_writes().await;
        let first = write_outside(&dir, 0);
        assert_eq!(next_advance(&mut reader).await, first);
        // Within the delay: held back.
        write_outside(&dir, 1);
        tokio::task::yield_now().await;
        let mut attrs = tether_protocol::Attributes::new();
        attrs.add("objectClass", [tether_protocol::Value::from("organizationalUnit")]).unwrap();
        attrs.add("ou", [tether_protocol::Value::from("people")]).unwrap();
        let people = tether_protocol::Dn::parse("ou=people,dc=example,dc=com").unwrap();
        let change = dir.write(&tether_protocol::Change::Add { dn: people, attrs }).unwrap().csn;
        let mut after = Vec::new();
        let _ = tokio::time::timeout(ADVANCE_DELAY * 4, async {
            loop {
                match reader.recv().await.unwrap().expect("a message") {
                    Message::Ping { .. } => {}
                    msg => after.push(msg),
                }
            }
        })
        .await;
        let cookies: Vec<(&str, Csn)> = after
            .iter()
            .map(|m| match m {
                Message::Change { cookie, .. } => ("change", cookie.csn),
                Message::Advance { cookie } => ("advance", cookie.csn),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(cookies, [("change", change)]);
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// A consumer's acknowledgement is recorded as its position, not the newest durable
    /// CSN it was acknowledged under: the position holds back trimming, and one recorded
    /// ahead let a trim take changes the consumer had not applied, so that it came back
    /// to a present refresh, while `status` showed it current. On the paused clock, past
    /// the interval between two recordings.
    #[tokio::test(start_paused = true)]
    async fn an_ack_behind_the_newest_change_is_recorded_as_the_position_acknowledged() {
        let (_store, dir, at) = directory_with_suffix();
        write_outside(&dir, 0);
        let presented = Cookie { history: at.history, csn: Csn(at.csn.0 - 1) };
        let spec = SearchSpec::subtree(dir.suffix().clone());
        let cancel = CancellationToken::new();
        let (session, consumer_side) =
            spawn_session(&dir, session_setup(Mode::RefreshAndPersist, presented, spec, &cancel));
        let (consumer_reads, consumer_writes) = tokio::io::split(consumer_side);
        let mut reader = MessageReader::new(consumer_reads);
        while !matches!(reader.recv().await.unwrap().expect("a message"), Message::RefreshDone { .. }) {}
        tokio::time::advance(POSITION_RECORD_INTERVAL * 2).await;
        MessageWriter::new(consumer_writes).send(&Message::Ack { cookie: at }).await.unwrap();
        let position = || dir.consumer_positions().unwrap().into_iter().map(|(_, p)| p.csn).next();
        let recorded = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match position() {
                    Some(csn) if csn != presented.csn => return csn,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .expect("the ack is recorded");
        assert_eq!(recorded, at.csn, "the newest durable csn is {}", dir.durable_csn());
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// Trims the changelog to no record at all: its floor is then the newest durable CSN.
    fn trim_everything(dir: &Directory) -> Csn {
        let policy = tether_store::RetentionPolicy {
            max_changes: Some(0),
            max_age: None,
            hold_for_consumers: Duration::ZERO,
            up_since_ms: 0,
        };
        let floor = dir.trim(&policy, 0).unwrap().floor;
        assert_eq!(floor, dir.durable_csn(), "trimmed to the newest change");
        floor
    }

    /// A consumer whose position is the changelog's floor itself is served from the
    /// changelog, as every change above the floor is in it: a trim by age on a quiet
    /// provider stops at a connected consumer's position, so the floor is where a
    /// caught-up consumer stands, and the next write must reach it, not end its
    /// session with `refresh-required` (and the session after it the same way).
    #[tokio::test]
    async fn a_consumer_at_the_changelog_floor_is_sent_the_next_change() {
        let (_store, dir, mut reader, _writes, session, cancel) = persisting_outside_the_writes().await;
        trim_everything(&dir);
        let next = write_outside(&dir, 0);
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.recv().await.unwrap() {
                    Some(Message::Ping { .. }) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("a message after the write");
        assert_eq!(first, Some(Message::Advance { cookie: Cookie { history: dir.history(), csn: next } }));
        cancel.cancel();
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::Shutdown));
    }

    /// A trim past the position of a connected consumer that has not read every change
    /// yet (it reads slowly: its queue is full) ends its session with `refresh-required`
    /// once it has read what was sent before the trim, each change once and in order: it
    /// must not be left waiting, nor sent the changes after the trimmed ones as if
    /// nothing were missing.
    #[tokio::test]
    async fn a_trim_past_a_slow_consumers_position_ends_its_session_with_refresh_required() {
        let (_store, dir, mut reader, _writes, session, _cancel) =
            persisting(|dir| SearchSpec::subtree(dir.suffix().clone())).await;
        let at = dir.durable_csn();
        // Far more than the pipe, the writer's buffer, the queue and one read hold
        // (about 128 KiB and 320 messages): the session cannot have read them all.
        let text = "x".repeat(1024);
        let writes: Vec<tether_protocol::Change> =
            (0..2000).map(|i| describe_suffix(&dir, format!("{i} {text}"))).collect();
        let last = dir.write_group(&writes).pop().unwrap().unwrap().csn;
        dir.sync(last).unwrap();
        // The session reads, and fills what holds its messages, before the trim.
        let mut csns = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
            Ok(Ok(Some(Message::Change { cookie, .. }))) => csns.push(cookie.csn.0),
            other => panic!("the first change, not {other:?}"),
        }
        assert_eq!(trim_everything(&dir), last);
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match reader.recv().await.unwrap() {
                    Some(Message::Change { cookie, .. }) => csns.push(cookie.csn.0),
                    Some(Message::Ping { .. }) => continue,
                    other => return other,
                }
            }
        })
        .await;
        let Ok(Some(Message::Goodbye { reason, .. })) = end else {
            panic!("a goodbye after the changes sent before the trim, not {end:?} after {} changes", csns.len())
        };
        assert_eq!(reason, GoodbyeReason::RefreshRequired);
        let expected: Vec<u64> = (at.0 + 1..at.0 + 1 + csns.len() as u64).collect();
        assert!(csns == expected && (csns.len() as u64) < last.0 - at.0, "sent {csns:?}");
        assert_eq!(session.await.unwrap(), SessionEnd::Goodbye(GoodbyeReason::RefreshRequired));
    }

    /// A consumer whose first full refresh (no cookie yet) was cut short resumes it
    /// when it comes back, though age-based trimming ran while it was away: the
    /// refresh's start holds the changelog back as a recorded position does, for
    /// `hold_for_consumers`. Nothing was recorded for a consumer without a cookie, so
    /// a trim once a write made after the start was older than `max_age` took the
    /// start, and the refresh began again from the first entry (a reload of a million
    /// entries restarted from nothing).
    #[tokio::test]
    async fn an_interrupted_first_refresh_resumes_after_an_age_trim_while_its_consumer_was_away() {
        interrupted_refresh_resumes_after_an_age_trim(RefreshKind::Full).await;
    }

    /// The same for a present refresh cut short: its consumer's cookie is below the
    /// floor, which holds nothing, so only the refresh's start, recorded when it is
    /// planned, keeps the catch-up it needs from an age trim while it is away.
    #[tokio::test]
    async fn an_interrupted_present_refresh_resumes_after_an_age_trim_while_its_consumer_was_away() {
        interrupted_refresh_resumes_after_an_age_trim(RefreshKind::Present).await;
    }

    /// A `kind` refresh (full: no cookie; present: a cookie the changelog was trimmed
    /// past) cut short after its first page, a write, and a trim by age within the hold
    /// while the consumer is away: the refresh must resume.
    async fn interrupted_refresh_resumes_after_an_age_trim(kind: RefreshKind) {
        let (_store, dir, cookie) = directory_with_suffix();
        for i in 0..5 {
            let mut attrs = tether_protocol::Attributes::new();
            attrs.add("objectClass", [tether_protocol::Value::from("organizationalUnit")]).unwrap();
            attrs.add("ou", [tether_protocol::Value::from(format!("unit{i}"))]).unwrap();
            let dn = tether_protocol::Dn::parse(&format!("ou=unit{i},dc=example,dc=com")).unwrap();
            dir.write(&tether_protocol::Change::Add { dn, attrs }).unwrap();
        }
        if kind == RefreshKind::Present {
            assert!(trim_everything(&dir) > cookie.csn);
        }
        let spec = SearchSpec::subtree(dir.suffix().clone());
        let session = |resume: Option<ResumePoint>| {
            let (mut req, reg, mut params) =
                session_setup(Mode::RefreshAndPersist, dir.cookie(), spec.clone(), &CancellationToken::new());
            req.cookie = (kind == RefreshKind::Present).then_some(cookie);
            req.resume = resume;
            params.batch_size = 1;
            spawn_session(&dir, (req, reg, params))
        };

        let (first, consumer) = session(None);
        let (consumer_reads, consumer_writes) = tokio::io::split(consumer);
        let mut reader = MessageReader::new(consumer_reads);
        let resume = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(Message::RefreshProgress { resume }) = reader.recv().await.unwrap() {
                    return resume;
                }
            }
        })
        .await
        .expect("a first page of the scan, and its progress");
        assert!(resume.cursor.is_some(), "the scan is under way");
        // The consumer goes away mid-scan.
        drop((reader, consumer_writes));
        let end = tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap();
        assert!(matches!(end, SessionEnd::ConnectionLost(_)), "{end:?}");

        // A write after the refresh began; then trimming, once it is older than
        // `max_age` but the consumer left well within `hold_for_consumers`.
        write_outside(&dir, 0);
        let floor = trim_by_age_two_hours_on(&dir);
        let start = resume.start.csn;

        let (second, consumer) = session(Some(resume));
        let (consumer_reads, _consumer_writes) = tokio::io::split(consumer);
        let mut reader = MessageReader::new(consumer_reads);
        let begin = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await.unwrap().unwrap();
        assert_eq!(
            begin,
            Some(Message::RefreshBegin { kind, resumed: true }),
            "the changelog was trimmed to {floor}, the refresh began at {start}"
        );
        second.abort();
    }

    /// A poller of protocol version 1 acknowledges nothing: the cookie it presents is
    /// all that says where it is, so it is recorded as the session begins, and holds
    /// back trimming by age while the poller is away between polls within the hold.
    /// Not recorded, a poll every few minutes still found its cookie trimmed once the
    /// changes after it were older than `max_age`, and reloaded by a present refresh.
    #[tokio::test]
    async fn a_poller_that_acknowledges_nothing_is_held_at_the_cookie_it_presented() {
        let (_store, dir, at) = directory_with_suffix();
        for i in 0..3 {
            write_outside(&dir, i);
        }
        let (mut req, reg, params) =
            session_setup(Mode::RefreshOnly, at, SearchSpec::subtree(dir.suffix().clone()), &CancellationToken::new());
        req.version = 1;
        let (session, _consumer) = spawn_session(&dir, (req, reg, params));
        let end = tokio::time::timeout(Duration::from_secs(10), session).await.unwrap().unwrap();
        assert_eq!(end, SessionEnd::Goodbye(GoodbyeReason::RefreshComplete));

        let floor = trim_by_age_two_hours_on(&dir);
        assert_eq!(
            dir.plan_refresh(Some(&at)).unwrap(),
            RefreshKind::Delta,
            "the poller's cookie at {} was trimmed to {floor} within the hold",
            at.csn
        );
    }

    /// Trims as the trimmer would two hours from now, with a `max_age` of one hour and a
    /// `hold_for_consumers` of a day: every change made so far is past its age, and only
    /// what a consumer seen within the day holds stays. The new floor.
    fn trim_by_age_two_hours_on(dir: &Directory) -> Csn {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let hour = Duration::from_secs(3600);
        let policy = tether_store::RetentionPolicy {
            max_changes: None,
            max_age: Some(hour),
            hold_for_consumers: 24 * hour,
            up_since_ms: 0,
        };
        dir.trim(&policy, now_ms + 2 * 3_600_000).unwrap().floor
    }

    /// A directory holding its suffix entry, in a folder of its own, and its cookie.
    fn directory_with_suffix() -> (tempfile::TempDir, Arc<Directory>, Cookie) {
        let store = tempfile::tempdir().unwrap();
        let suffix = tether_protocol::Dn::parse("dc=example,dc=com").unwrap();
        let dir = Arc::new(Directory::open(store.path(), &suffix).unwrap());
        let mut attrs = tether_protocol::Attributes::new();
        attrs.add("objectClass", [tether_protocol::Value::from("domain")]).unwrap();
        attrs.add("dc", [tether_protocol::Value::from("example")]).unwrap();
        dir.write(&tether_protocol::Change::Add { dn: suffix, attrs }).unwrap();
        dir.write(&tether_protocol::Change::Modify {
            dn: tether_protocol::Dn::parse("dc=example,dc=com").unwrap(),
            mods: vec![tether_protocol::Modification {
                op: tether_protocol::ModOp::Replace,
                attr: "description".into(),
                values: vec![tether_protocol::Value::from("two")],
            }],
        })
        .unwrap();
        let at = Cookie { history: dir.history(), csn: dir.durable_csn() };
        (store, dir, at)
    }

    /// Runs a session of `mode` for a consumer at `at` whose messages `sent` are on the
    /// wire before the session reads anything, the consumer closing its side after them;
    /// returns how the session ended and everything it sent.
    async fn session_answering(
        dir: Arc<Directory>,
        mode: Mode,
        at: Cookie,
        sent: &[Message],
    ) -> (SessionEnd, Vec<Message>) {
        let (provider_side, consumer_side) = tokio::io::duplex(64 * 1024);
        let (from_consumer, to_consumer) = tokio::io::split(provider_side);
        let (consumer_reads, consumer_writes) = tokio::io::split(consumer_side);
        let mut consumer_writer = MessageWriter::new(consumer_writes);
        for msg in sent {
            consumer_writer.send(msg).await.unwrap();
        }
        let spec = SearchSpec::subtree(dir.suffix().clone());
        let (req, reg, params) = session_setup(mode, at, spec, &CancellationToken::new());
        let session = run(dir, MessageReader::new(from_consumer), MessageWriter::new(to_consumer), req, reg, params);
        let end = tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session must end once it has read what the consumer sent");
        drop(consumer_writer);
        let mut reader = MessageReader::new(consumer_reads);
        let mut seen = Vec::new();
        while let Some(msg) = reader.recv().await.unwrap() {
            seen.push(msg);
        }
        (end, seen)
    }

    #[test]
    fn a_session_end_reads_as_words_in_the_log() {
        let end = SessionEnd::ConsumerGoodbye(GoodbyeReason::AdminStop, "restarted by the operator".into());
        assert_eq!(end.to_string(), "consumer goodbye admin-stop: restarted by the operator");
        assert_eq!(SessionEnd::Goodbye(GoodbyeReason::Shutdown).to_string(), "goodbye shutdown");
        assert_eq!(SessionEnd::ConnectionLost("reset".into()).to_string(), "connection lost: reset");
    }

    /// `status` shows a session's `queue_len`: the messages waiting for a consumer that
    /// stopped reading, which is how an operator tells a stuck consumer from a slow one.
    #[tokio::test]
    async fn a_consumer_that_stops_reading_shows_its_queue_in_status() {
        let (_store, dir, at) = directory_with_suffix();
        let cancel = CancellationToken::new();
        let spec = SearchSpec::subtree(dir.suffix().clone());
        let (req, _, params) = session_setup(Mode::RefreshAndPersist, at, spec, &cancel);
        let registry = crate::registry::Registry::default();
        let reg = registry.register(crate::registry::SessionInfo::for_test(1, "test", "people", "poller"), &cancel);
        let (_session, consumer_side) = spawn_session(&dir, (req, reg, params));
        let (consumer_reads, _consumer_writes) = tokio::io::split(consumer_side);
        let mut reader = MessageReader::new(consumer_reads);
        let refreshed = tokio::time::timeout(Duration::from_secs(30), async {
            while !matches!(reader.recv().await.unwrap(), Some(Message::RefreshDone { .. }) | None) {}
        });
        assert!(refreshed.await.is_ok(), "the refresh ends, and persisting begins");
        // The consumer reads no more: past the pipe's 64 KiB, the changes queue.
        for i in 0..100 {
            dir.write(&describe_suffix(&dir, format!("{i} {}", "x".repeat(4096)))).unwrap();
        }
        let queued = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let queue_len = registry.snapshot()[0].queue_len;
                if queue_len > 0 {
                    return queue_len;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let queued = queued.await.expect("the queue shown in status");
        assert!(queued <= params.queue_len, "{queued} queued of at most {}", params.queue_len);
        cancel.cancel();
    }
}
