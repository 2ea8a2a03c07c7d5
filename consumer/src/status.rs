//! What each agreement publishes for `tether-consumer status` (the field names of
//! `docs/operations.md`). Supervisors and sessions write through a [`StatusHandle`]; the
//! control endpoint reads snapshots, so `status` never waits on a busy session.
//!
//! The handle also carries the two positions `wait` answers from, on a `watch`: the
//! CSN applied (`wait --visible`) and the durable cookie's (`wait`). They are published
//! separately because an applied change is visible to searches before the flush that
//! makes it durable, and a waiter for one must not be held up by the other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tether_config::certificate_watch::Watched;
use tether_protocol::liveness::Progress;
use tether_protocol::message::MUTUAL_AUTH_VERSION;
use tether_protocol::{Cookie, Csn};
use tether_store::StoreFailure;

use crate::provider_certificate::Presented;
use crate::reason::{Reason, State};

/// One agreement's status.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementStatus {
    /// Agreement name.
    pub name: String,
    /// Supervisor state.
    pub state: State,
    /// Provider address.
    pub provider: String,
    /// `refresh-only` or `refresh-and-persist`.
    pub mode: String,
    /// Whether the agreement connects with TLS (`[agreement.tls]`): the provider's status
    /// shows it per session, and the consumer's operator should not have to read the
    /// file to know whether entries cross the network in clear.
    pub tls: bool,
    /// Durable position (`<store-uuid>#<csn>`).
    pub cookie: Option<String>,
    /// Entries in the replica.
    pub entries: usize,
    /// Reason of the last disconnect.
    pub last_disconnect: Option<Reason>,
    /// The last error or rejection, with detail (the provider's goodbye text included).
    pub last_error: Option<String>,
    /// When `last_error` happened (RFC 3339, this machine's clock). It stays after the
    /// agreement recovers, as the latest failure; its time tells a failure of a minute
    /// ago from one of last week on an agreement that has been `persisting` since.
    pub last_error_at: Option<String>,
    /// While the agreement waits (`idle` between polls, `backoff` after a failure): when
    /// it connects next (RFC 3339, this machine's clock). An operator looking at a
    /// `backoff` otherwise cannot tell a retry in a second from one in a minute.
    /// Absent from the JSON in every other state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Connections attempted after the first.
    pub reconnects: u64,
    /// Disconnects by reason.
    pub disconnects: BTreeMap<Reason, u64>,
    /// Changes received but not yet durable and acknowledged.
    pub lag_changes: u64,
    /// Seconds since the replica was last known current: 0 while persisting with nothing
    /// unacknowledged; otherwise the time since the last completed refresh or the last
    /// moment it was caught up (or since the agreement started, if it never was), as
    /// of before the consumer's last restart too (the store keeps it).
    pub lag_seconds: u64,
    /// The kind of the last refresh (`full`, `delta`, `present`).
    pub last_refresh: Option<String>,
    /// Refreshes received by kind (a resumed one is not counted again).
    pub refreshes: BTreeMap<String, u64>,
    /// Full or present refreshes continued where an interrupted one stood, instead of
    /// starting over.
    pub resumed_refreshes: u64,
    /// Entries received by the current (or last) full or present refresh, across its
    /// resumptions: its progress, next to the provider's entry count.
    pub refresh_received: u64,
    /// Replicated operations that changed the replica.
    pub applied: u64,
    /// Replicated operations already reflected (replays), applied as no-ops.
    pub skipped: u64,
    /// With the apply audit on (`TETHER_APPLY_AUDIT=1`): changes applied a second time.
    /// Exactly-once application means this stays 0.
    pub duplicates: u64,
    /// The protocol version of the current or last session (absent before the first
    /// handshake): during a rolling upgrade, whether its provider runs an older build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u16>,
    /// When a provider of this agreement first proved it knows the secret (RFC 3339,
    /// this machine's clock), as recorded in the store; absent until one has. With
    /// `provider_proof = "once-proved"` a provider that does not prove itself is refused
    /// from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_proved_at: Option<String>,
    /// When the provider's certificate expires, as its last TLS handshake presented it
    /// (RFC 3339), for a monitor to alert on ahead of the day the agreement is refused;
    /// the table warns of it within its notice. Absent without TLS, and until a TLS
    /// session has met the provider.
    #[serde(
        rename = "provider_certificate_expires_at",
        serialize_with = "expiry_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_certificate: Option<Presented>,
    /// When the replica was last known current; `lag_seconds` is computed from it,
    /// except while persisting caught up (see [`AgreementStatus::heard`]).
    #[serde(skip)]
    pub current_at: Instant,
    /// The link of the session that is running, with keepalive on: while the replica is
    /// caught up with what has reached it, it is current as of the provider's last
    /// word, so a link gone silent (a black hole, a provider stopped with SIGSTOP) makes
    /// it stale from then, not from when the keepalive timeout ends the session.
    #[serde(skip)]
    pub heard: Option<Heard>,
    /// The CSN of the newest live change applied to the replica: its searches return
    /// it, though it may not be on disk yet (`wait --visible`). Cleared when a refresh
    /// sets the cookie, which may then belong to another history.
    #[serde(skip)]
    pub applied_csn: Option<Csn>,
    /// The agreement this status belonged to was stopped for good by a reload (removed,
    /// or restarted with a new status of its own): nothing updates it any more, so a
    /// `wait` on it must look again.
    #[serde(skip)]
    pub retired: bool,
    /// An operator's `stop` is ending the session, whose state `state` reads until it
    /// has ended: a `start` now takes the stop back, and its reply says so (it said the
    /// agreement was running and nothing changed).
    #[serde(skip)]
    pub stopping: bool,
}

/// When a session's provider was last heard from, and how long a live one stays quiet:
/// the consumer pings every keepalive interval and the provider answers at once, so a
/// silence longer than that (and a second for the answer) is no longer a quiet link.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Stamped as bytes arrive from the provider.
    pub inbound: Arc<Progress>,
    /// The longest silence of a live link.
    pub quiet: Duration,
}

impl Heard {
    /// The link whose inbound bytes stamp `inbound`, pinged every `interval`.
    pub fn new(inbound: Arc<Progress>, interval: Duration) -> Self {
        Self { inbound, quiet: interval + Duration::from_secs(1) }
    }
}

impl AgreementStatus {
    /// How long the replica has not been known current (`lag_seconds`): since the last
    /// refresh or caught-up moment; while persisting caught up, not at all, unless its
    /// link has been silent past a live link's quiet, and then since the provider's last
    /// word.
    pub fn stale_for(&self) -> Duration {
        if self.state != State::Persisting || self.lag_changes > 0 {
            return self.current_at.elapsed();
        }
        match &self.heard {
            Some(link) if link.inbound.silent_for() > link.quiet => link.inbound.silent_for(),
            _ => Duration::ZERO,
        }
    }

    /// Records `error` as the latest failure, and when it happened.
    pub fn set_error(&mut self, error: String) {
        self.last_error = Some(error);
        self.last_error_at = Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    }
}

/// How a [`StatusHandle::wait_csn`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The replica reached the CSN.
    Reached,
    /// The agreement is `stopped` or `closed` short of it.
    Halted,
    /// A reload removed or restarted the agreement: look it up again.
    Retired,
    /// The limit passed first.
    TimedOut,
}

/// What a `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The change is on disk: acknowledged to the provider, kept across a crash.
    Durable,
    /// The change is applied: the replica's searches return it.
    Visible,
}

impl Reach {
    /// The word for it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Durable => "durable",
            Reach::Visible => "visible",
        }
    }
}

/// How far the replica has come, by each measure of [`Reach`], and whether it can move
/// at all: what wakes a `wait`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reached {
    /// The durable cookie's CSN.
    durable: Option<Csn>,
    /// The newest CSN applied, durable or not.
    visible: Option<Csn>,
    /// `stopped` or `closed`: it does not move until an operator starts it.
    halted: bool,
    /// See [`AgreementStatus::retired`].
    retired: bool,
}

impl Reached {
    fn of(s: &AgreementStatus) -> Self {
        let durable = s.cookie.as_deref().and_then(|c| c.parse::<Cookie>().ok()).map(|c| c.csn);
        let halted = matches!(s.state, State::Stopped | State::Closed);
        Self { durable, visible: durable.max(s.applied_csn), halted, retired: s.retired }
    }

    fn get(self, reach: Reach) -> Option<Csn> {
        match reach {
            Reach::Durable => self.durable,
            Reach::Visible => self.visible,
        }
    }
}

/// Shared, updatable status of one agreement. The control requests waiting on it
/// (`WaitCsn`, `WaitVisible`) watch what it has reached, so they answer when the CSN
/// they wait for is reached instead of polling, and sleep through every other update
/// (a consumer taking a burst updates its status several times per apply run, and a
/// benchmark keeps ten requests waiting on each of fifty consumers).
#[derive(Debug, Clone)]
pub struct StatusHandle(
    Arc<Mutex<AgreementStatus>>,
    Arc<tokio::sync::watch::Sender<Reached>>,
    /// The certificate the provider presented last, for the watch on its expiry.
    Arc<tokio::sync::watch::Sender<Option<Presented>>>,
);

impl StatusHandle {
    /// Initial status of an agreement.
    pub fn new(name: &str, provider: &str, mode: &str) -> Self {
        Self(
            Arc::new(Mutex::new(AgreementStatus {
                name: name.to_owned(),
                state: State::Connecting,
                provider: provider.to_owned(),
                mode: mode.to_owned(),
                tls: false,
                cookie: None,
                entries: 0,
                last_disconnect: None,
                last_error: None,
                last_error_at: None,
                next_attempt_at: None,
                reconnects: 0,
                disconnects: BTreeMap::new(),
                lag_changes: 0,
                lag_seconds: 0,
                last_refresh: None,
                refreshes: BTreeMap::new(),
                resumed_refreshes: 0,
                refresh_received: 0,
                applied: 0,
                skipped: 0,
                duplicates: 0,
                protocol_version: None,
                provider_proved_at: None,
                provider_certificate: None,
                current_at: Instant::now(),
                heard: None,
                applied_csn: None,
                retired: false,
                stopping: false,
            })),
            Arc::new(tokio::sync::watch::Sender::new(Reached::default())),
            Arc::new(tokio::sync::watch::Sender::new(None)),
        )
    }

    /// Records the certificate the provider presented in a session's handshake (`None`
    /// for a session in plain TCP); whether it is another than the one recorded, which
    /// the session then warns of if it must (the watch on its expiry takes it as said).
    pub fn present(&self, presented: Option<Presented>) -> bool {
        self.update(|s| s.provider_certificate = presented.clone());
        self.2.send_if_modified(|watched| {
            let new = *watched != presented;
            if new {
                *watched = presented;
            }
            new
        })
    }

    /// The certificates the provider presents, one after another, for the watch on
    /// their expiry.
    pub fn presented(&self) -> tokio::sync::watch::Receiver<Option<Presented>> {
        self.2.subscribe()
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut AgreementStatus)) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        // Published under the status lock, so two updates racing from two threads (the
        // session's task and its store thread) publish in the order they changed it.
        let reached = Reached::of(&s);
        self.1.send_if_modified(|r| std::mem::replace(r, reached) != reached);
    }

    /// The CSN of the durable cookie (the position acknowledged to the provider).
    pub fn durable_csn(&self) -> Option<Csn> {
        self.1.borrow().durable
    }

    /// The CSN up to which the replica's searches return every change: the durable
    /// cookie's, or a live change applied since and not yet flushed.
    pub fn visible_csn(&self) -> Option<Csn> {
        self.1.borrow().visible
    }

    /// Where the replica stands by the measure of `reach`.
    pub fn csn(&self, reach: Reach) -> Option<Csn> {
        self.1.borrow().get(reach)
    }

    /// Waits until the replica reaches `csn` by the measure of `reach`, or cannot move
    /// towards it (stopped, closed, or its agreement retired by a reload), or `limit`
    /// passes.
    pub async fn wait_csn(&self, csn: Csn, reach: Reach, limit: std::time::Duration) -> Waited {
        let mut reached = self.1.subscribe();
        let outcome = |r: &Reached| {
            if r.get(reach).is_some_and(|c| c >= csn) {
                Some(Waited::Reached)
            } else if r.retired {
                Some(Waited::Retired)
            } else if r.halted {
                Some(Waited::Halted)
            } else {
                None
            }
        };
        // The sender lives as long as `self`: the wait ends by an outcome or the limit.
        let wait = async move { reached.wait_for(|r| outcome(r).is_some()).await.ok().and_then(|r| outcome(&r)) };
        tokio::time::timeout(limit, wait).await.ok().flatten().unwrap_or(Waited::TimedOut)
    }

    /// Marks this status as no longer its agreement's (see [`AgreementStatus::retired`]),
    /// waking every `wait` on it.
    pub fn retire(&self) {
        self.update(|s| s.retired = true);
    }

    /// Records that the replica is current now (a refresh completed, or every received
    /// change is durable and acknowledged).
    pub fn mark_current(&self) {
        self.update(|s| s.current_at = Instant::now());
    }

    /// A session ended: a replica caught up with it was current as of the provider's
    /// last word (now, without keepalive to say otherwise). Before, it counted as
    /// current until the session's end, so the keepalive timeout that ended a silent
    /// session took `lag_seconds` back to 0 and hid the timeout's 20 s of staleness.
    pub fn session_ended(&self) {
        self.update(|s| {
            s.current_at = Instant::now().checked_sub(s.stale_for()).unwrap_or(s.current_at);
            s.heard = None;
        });
    }

    /// When the replica was last known current, in milliseconds since the Unix epoch:
    /// now less `lag_seconds`' measure, for the store to keep across a restart.
    pub fn current_at_ms(&self) -> u64 {
        let stale = self.0.lock().unwrap_or_else(|p| p.into_inner()).stale_for();
        since_epoch().saturating_sub(stale).as_millis() as u64
    }

    /// Takes up the staleness of a replica last current at `at_ms` (milliseconds since
    /// the Unix epoch, as [`StatusHandle::current_at_ms`] gave it before a restart):
    /// `lag_seconds` counts from then, not from this process's start. A time ahead of
    /// the clock (set back since) counts from now.
    pub fn resume_current_at(&self, at_ms: u64) {
        let stale = since_epoch().saturating_sub(Duration::from_millis(at_ms));
        self.update(|s| s.current_at = Instant::now().checked_sub(stale).unwrap_or(s.current_at));
    }

    /// A copy of the status, with `lag_seconds` computed as of now.
    pub fn snapshot(&self) -> AgreementStatus {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.lag_seconds = s.stale_for().as_secs();
        s
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    /// Whether an operator's `stop` is ending the session (see [`AgreementStatus::stopping`]).
    pub fn stopping(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).stopping
    }

    /// Whether a reload retired this status (see [`AgreementStatus::retired`]).
    pub fn is_retired(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retired
    }
}

/// The whole `status --json` object.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    /// Always `true` here: the process answered. While it is not running, `status`
    /// prints an [`OfflineStatus`] instead.
    pub running: bool,
    /// When this process started (RFC 3339): every agreement's counters (`applied`,
    /// `reconnects`, `disconnects`, `refreshes`) count from it, so a monitor that sees
    /// them fall can tell a restart. `lag_seconds` does not: the store keeps when each
    /// replica was last current.
    pub started_at: String,
    /// The id this consumer gives providers: the `CONSUMER` column of their status,
    /// which tells this process's sessions and positions from another's.
    pub consumer_id: String,
    /// The address the metrics endpoint (`metrics_listen`) listens on, as bound (a port
    /// 0 made a real one); `null` without one.
    pub metrics_listen: Option<String>,
    /// The storage failure no agreement can go on after, if the store has failed: the
    /// process must be restarted once its cause is fixed (see `tether_store::failure`).
    #[serde(serialize_with = "failure_text")]
    pub store_error: Option<StoreFailure>,
    /// Trees of discarded replicas (a reload's old copy, a removed agreement's) still
    /// being freed in the background: why the store is busy, and its memory up, for a
    /// while after one, and when that ends.
    pub trees_to_free: usize,
    /// Every agreement, by name.
    pub agreements: Vec<AgreementStatus>,
}

/// The failure as its text: `store_error` in JSON is what the error says.
fn expiry_text<S: serde::Serializer>(p: &Option<Presented>, out: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => out.serialize_str(&humantime::format_rfc3339_seconds(p.validity.not_after).to_string()),
        None => out.serialize_none(),
    }
}

fn failure_text<S: serde::Serializer>(failure: &Option<StoreFailure>, out: S) -> Result<S::Ok, S::Error> {
    match failure {
        Some(f) => out.serialize_str(&f.to_string()),
        None => out.serialize_none(),
    }
}

impl ConsumerStatus {
    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut out = match &self.store_error {
            Some(e) => format!("{}\n", crate::daemon::store_failed(e)),
            None => String::new(),
        };
        // Columns as wide as their longest value, so a long name or host name does not
        // push the rest of its row out of line with the header.
        let name_w = self.agreements.iter().map(|a| a.name.len()).max().unwrap_or(0).max(16);
        let provider_w = self.agreements.iter().map(|a| a.provider.len()).max().unwrap_or(0).max(22);
        out += &format!(
            "{:<name_w$} {:<11} {:<provider_w$} {:<20} {:<3} {:>8} {:<8} {:<18} {}\n",
            "AGREEMENT", "STATE", "PROVIDER", "MODE", "TLS", "ENTRIES", "REFRESH", "LAST DISCONNECT", "COOKIE"
        );
        for a in &self.agreements {
            out.push_str(&format!(
                "{:<name_w$} {:<11} {:<provider_w$} {:<20} {:<3} {:>8} {:<8} {:<18} {}\n",
                a.name,
                a.state.as_str(),
                a.provider,
                a.mode,
                if a.tls { "yes" } else { "no" },
                a.entries,
                a.last_refresh.as_deref().unwrap_or("-"),
                a.last_disconnect.map_or("-", Reason::as_str),
                a.cookie.as_deref().unwrap_or("-"),
            ));
            // The counters a monitor reads, on one line: how stale, how busy, how often
            // the link broke, and why.
            let mut counters = format!(
                "  lag {}s ({} changes), applied {}, skipped {}, duplicates {}, reconnects {}",
                a.lag_seconds, a.lag_changes, a.applied, a.skipped, a.duplicates, a.reconnects
            );
            // ENTRIES is the replica readers see (0, or the old region's, during a
            // reload): the refresh's own progress is the figure to watch then.
            if a.state == State::Refreshing && a.refresh_received > 0 {
                counters += &format!(", refresh received {}", a.refresh_received);
            }
            if !a.disconnects.is_empty() {
                let by: Vec<String> = a.disconnects.iter().map(|(r, n)| format!("{}={n}", r.as_str())).collect();
                counters += &format!(", disconnects {}", by.join(" "));
            }
            out.push_str(&counters);
            out.push('\n');
            // Whom the agreement trusts: during an upgrade, which providers still run an
            // older build; after it, since when one that does not prove itself is refused.
            let first = |at: &str| format!("a provider of this agreement first proved itself at {at}");
            let trust = match (a.protocol_version, &a.provider_proved_at) {
                (Some(v), Some(at)) if v >= MUTUAL_AUTH_VERSION => {
                    Some(format!("protocol version {v}: the provider proved itself ({})", first(at)))
                }
                (Some(v), Some(at)) => {
                    Some(format!("protocol version {v}: the provider did not prove itself ({})", first(at)))
                }
                (Some(v), None) if v >= MUTUAL_AUTH_VERSION => {
                    Some(format!("protocol version {v}: the provider proved itself"))
                }
                (Some(v), None) => {
                    Some(format!("protocol version {v}: the provider did not prove itself; none of this agreement has"))
                }
                (None, Some(at)) => Some(first(at)),
                (None, None) => None,
            };
            if let Some(trust) = trust {
                out.push_str(&format!("  {trust}\n"));
            }
            let now = std::time::SystemTime::now();
            let warning = a.provider_certificate.as_ref().and_then(|p| p.warning(now));
            if let Some(w) = warning {
                out.push_str(&format!("  warning: {w}\n"));
            }
            if let Some(at) = &a.next_attempt_at {
                let next = if a.state == State::Idle { "poll" } else { "attempt" };
                out.push_str(&format!("  next {next} at {at}\n"));
            }
            if let Some(e) = &a.last_error {
                out.push_str(&format!("  last error at {}: {e}\n", a.last_error_at.as_deref().unwrap_or("-")));
            }
        }
        if self.agreements.len() > 1 {
            out.push_str(&self.summary());
        }
        match self.trees_to_free {
            0 => {}
            1 => out.push_str("freeing discarded replicas in the background: 1 tree to go\n"),
            n => out.push_str(&format!("freeing discarded replicas in the background: {n} trees to go\n")),
        }
        out.push_str(&format!("consumer id {} (the CONSUMER column of provider status)\n", self.consumer_id));
        if let Some(at) = &self.metrics_listen {
            out.push_str(&format!("metrics at http://{at}/metrics\n"));
        }
        out
    }
}

impl ConsumerStatus {
    /// One line under the table for a consumer of many agreements, whose table runs to
    /// hundreds of lines: how many are in each state, which is furthest behind, and
    /// which are not replicating (waiting to retry, or given up).
    fn summary(&self) -> String {
        const NAMED: usize = 5;
        let states = [
            State::Persisting,
            State::Idle,
            State::Refreshing,
            State::Connecting,
            State::Backoff,
            State::Stopped,
            State::Closed,
        ];
        let mut line = format!("{} agreements", self.agreements.len());
        for state in states {
            match self.agreements.iter().filter(|a| a.state == state).count() {
                0 => {}
                n => line += &format!(", {n} {}", state.as_str()),
            }
        }
        let behind = self.agreements.iter().max_by_key(|a| (a.lag_seconds, a.lag_changes));
        if let Some(a) = behind.filter(|a| a.lag_seconds > 0 || a.lag_changes > 0) {
            line += &format!("; most behind {} (lag {}s, {} changes)", a.name, a.lag_seconds, a.lag_changes);
        }
        let failing: Vec<&str> = self
            .agreements
            .iter()
            .filter(|a| matches!(a.state, State::Backoff | State::Closed))
            .map(|a| a.name.as_str())
            .collect();
        if !failing.is_empty() {
            line += &format!("; waiting to retry or closed: {}", failing[..failing.len().min(NAMED)].join(", "));
            if failing.len() > NAMED {
                line += &format!(" and {} more", failing.len() - NAMED);
            }
        }
        line + "\n"
    }
}

/// Milliseconds since the Unix epoch as RFC 3339, for status and messages.
pub fn rfc3339_of_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What `status` says while the consumer is not running, read from its config and
/// store, so that a script polling `status --json` gets JSON either way.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineStatus {
    /// Always `false`: nothing is live, so only what the store keeps is shown.
    pub running: bool,
    /// Always `null`: no process started. Present, as in the running consumer's status
    /// and the stopped provider's, so a script reading it finds the key either way.
    pub started_at: Option<String>,
    /// The id recorded in `data_dir`, absent before the consumer first ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_id: Option<String>,
    /// Every agreement of the config, then every replica whose agreement the config no
    /// longer has.
    pub agreements: Vec<OfflineAgreement>,
}

/// One agreement while the consumer is not running.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineAgreement {
    /// Agreement name.
    pub name: String,
    /// `stopped` if an operator stopped it (it stays stopped at the next start),
    /// `removed` if the config no longer has it (the next start deletes its replica),
    /// else `not running`.
    pub state: &'static str,
    /// Provider address (empty, and absent from the JSON, for a removed agreement).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// `refresh-only` or `refresh-and-persist` (empty, and absent from the JSON, for a
    /// removed agreement).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Durable position (`<history-uuid>#<csn>`), where the next start resumes.
    pub cookie: Option<String>,
    /// Entries in the replica.
    pub entries: usize,
    /// When a provider of this agreement first proved it knows the secret, as the
    /// running consumer shows it: from then on, by default, one that does not is refused.
    /// Absent until one has, as in the running consumer's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_proved_at: Option<String>,
    /// Seconds since the replica was last known current, as the running consumer
    /// recorded it (see [`AgreementStatus::lag_seconds`]): how stale a stopped consumer's
    /// replica is. Absent when none was recorded (a consumer that never ran this
    /// agreement, or an older build's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}

/// Seconds from `at_ms` (milliseconds since the Unix epoch) to now; 0 for a time ahead
/// of the clock.
pub fn seconds_since_ms(at_ms: u64) -> u64 {
    since_epoch().saturating_sub(Duration::from_millis(at_ms)).as_secs()
}

/// The wall clock's time since the Unix epoch (zero for a clock before it).
fn since_epoch() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

impl OfflineStatus {
    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for a in &self.agreements {
            let lag = a.lag_seconds.map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
            out.push_str(&format!(
                "{:<16} {:<12} entries {:<8} lag {:<7} cookie {}\n",
                a.name,
                a.state,
                a.entries,
                lag,
                a.cookie.as_deref().unwrap_or("-")
            ));
        }
        if let Some(id) = &self.consumer_id {
            out.push_str(&format!("consumer id {id} (the CONSUMER column of provider status)\n"));
        }
        out
    }
}

#[cfg(test)]
impl ConsumerStatus {
    /// A running consumer's status of `agreements`, the rest empty, for tests.
    pub(crate) fn for_test(agreements: Vec<AgreementStatus>) -> Self {
        ConsumerStatus {
            running: true,
            started_at: String::new(),
            consumer_id: String::new(),
            metrics_listen: None,
            store_error: None,
            trees_to_free: 0,
            agreements,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(agreements: Vec<AgreementStatus>) -> ConsumerStatus {
        ConsumerStatus::for_test(agreements)
    }

    /// `status --json` has `metrics_listen` always, `null` without an endpoint, as its
    /// other keys of what may be absent: a monitor tells "no endpoint" from a build
    /// that does not know the key. The table names the address only when there is one.
    #[test]
    fn the_metrics_address_is_in_json_null_without_one_and_in_the_table_with_one() {
        let json = serde_json::to_value(of(Vec::new())).unwrap();
        assert_eq!(json.get("metrics_listen"), Some(&serde_json::Value::Null), "{json}");
        assert!(!of(Vec::new()).to_text().contains("metrics at"));
        let status = ConsumerStatus { metrics_listen: Some("127.0.0.1:9390".into()), ..of(Vec::new()) };
        assert_eq!(serde_json::to_value(&status).unwrap()["metrics_listen"], "127.0.0.1:9390");
        assert!(status.to_text().ends_with("metrics at http://127.0.0.1:9390/metrics\n"), "{}", status.to_text());
    }

    #[test]
    fn the_table_stays_in_line_with_a_long_provider_name() {
        let short = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist").snapshot();
        let long = StatusHandle::new("groups", "ldap-provider-1.eu-west.example.com:7389", "refresh-only").snapshot();
        let status = of(vec![short, long]);
        let text = status.to_text();
        let mode_at: Vec<usize> = text
            .lines()
            .filter(|l| !l.starts_with("  ") && !l.starts_with("consumer id ") && !l.starts_with("2 agreements, "))
            .map(|l| l.find("MODE").or_else(|| l.find("refresh-")).expect("a mode column"))
            .collect();
        assert!(mode_at.iter().all(|&at| at == mode_at[0]), "{mode_at:?}\n{text}");
    }

    /// While a refresh runs, ENTRIES is what readers see (0 on a first refresh): the
    /// text says how far the refresh is, as the JSON's `refresh_received` does.
    #[test]
    fn a_refresh_under_way_shows_how_far_it_is() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let text = || of(vec![h.snapshot()]).to_text();
        h.update(|s| {
            s.state = State::Refreshing;
            s.refresh_received = 120_000;
        });
        assert!(text().contains(", reconnects 0, refresh received 120000\n"), "{}", text());
        h.update(|s| s.state = State::Persisting);
        assert!(!text().contains("refresh received"), "{}", text());
    }

    /// A consumer of many agreements: the line under the table counts them by state and
    /// names the one furthest behind and those not replicating, a few of them.
    #[test]
    fn many_agreements_are_summed_up_under_the_table() {
        let agreement = |i: usize, state: State, lag: u64| {
            let h = StatusHandle::new(&format!("a{i:03}"), "127.0.0.1:7389", "refresh-and-persist");
            h.update(|s| {
                s.state = state;
                s.lag_changes = lag * 10;
            });
            // As of the snapshot, from when it was last current: set here, not timed.
            AgreementStatus { lag_seconds: lag, ..h.snapshot() }
        };
        let mut all: Vec<_> = (0..190).map(|i| agreement(i, State::Persisting, 0)).collect();
        all.extend((190..197).map(|i| agreement(i, State::Backoff, 0)));
        all.push(agreement(197, State::Persisting, 42));
        all.push(agreement(198, State::Closed, 0));
        all.push(agreement(199, State::Refreshing, 3));
        let text = of(all).to_text();
        let summary = "200 agreements, 191 persisting, 1 refreshing, 7 backoff, 1 closed; most behind a197 (lag 42s, \
                       420 changes); waiting to retry or closed: a190, a191, a192, a193, a194 and 3 more\n";
        assert!(text.contains(summary), "{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));

        let one = of(vec![agreement(0, State::Backoff, 0)]).to_text();
        assert!(!one.contains("1 agreements"), "a table of one needs no sum: {one}");
    }

    #[test]
    fn the_last_error_says_when_it_happened() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        h.update(|s| s.set_error("connection-lost: connect 127.0.0.1:7389: Connection refused".into()));
        let at = h.snapshot().last_error_at.expect("a time");
        assert!(humantime::parse_rfc3339(&at).is_ok(), "{at}");
        let text = of(vec![h.snapshot()]).to_text();
        assert!(text.contains(&format!("  last error at {at}: connection-lost: connect")), "{text}");
        h.update(|s| {
            s.applied = 7;
            *s.disconnects.entry(Reason::ConnectionLost).or_default() += 2;
        });
        let text = of(vec![h.snapshot()]).to_text();
        assert!(
            text.contains(", applied 7, skipped 0, duplicates 0, reconnects 0, disconnects connection-lost=2\n"),
            "{text}"
        );
    }

    #[test]
    fn the_table_says_which_version_the_provider_speaks_and_since_when_it_proves_itself() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let text = || of(vec![h.snapshot()]).to_text();
        assert!(!text().contains("protocol") && !text().contains("proved"), "nothing known yet: {}", text());
        h.update(|s| s.protocol_version = Some(2));
        let line = "\n  protocol version 2: the provider did not prove itself; none of this agreement has\n";
        assert!(text().contains(line), "{}", text());
        let at = "2026-12-01T22:30:00Z";
        h.update(|s| {
            s.protocol_version = Some(3);
            s.provider_proved_at = Some(at.into());
        });
        let first = format!("a provider of this agreement first proved itself at {at}");
        assert!(text().contains(&format!("\n  protocol version 3: the provider proved itself ({first})\n")));
        // Under provider_proof = "optional", a provider rolled back is taken: the line
        // must not read as if this one proved itself.
        h.update(|s| s.protocol_version = Some(2));
        assert!(text().contains(&format!("\n  protocol version 2: the provider did not prove itself ({first})\n")));
        h.update(|s| s.protocol_version = None);
        assert!(text().contains(&format!("\n  {first}\n")), "{}", text());
    }

    #[test]
    fn a_waiting_agreement_says_when_it_connects_next() {
        let h = StatusHandle::new("groups", "127.0.0.1:7389", "refresh-only");
        let at = "2026-12-01T22:30:00Z";
        let table = |state| {
            h.update(|s| {
                s.state = state;
                s.next_attempt_at = Some(at.into());
            });
            of(vec![h.snapshot()]).to_text()
        };
        assert!(table(State::Idle).contains(&format!("\n  next poll at {at}\n")));
        assert!(table(State::Backoff).contains(&format!("\n  next attempt at {at}\n")));
    }

    #[test]
    fn lag_seconds_is_zero_only_while_persisting_and_caught_up() {
        let h = StatusHandle::new("a", "p", "refresh-and-persist");
        h.update(|s| s.current_at = Instant::now() - std::time::Duration::from_secs(42));
        // 42, or a little more on a machine that stalls the test between these lines.
        let stale = |lag: u64| (42..45).contains(&lag);
        let lag = h.snapshot().lag_seconds;
        assert!(stale(lag), "connecting: stale since the last known-current moment, {lag}");
        h.update(|s| s.state = State::Persisting);
        assert_eq!(h.snapshot().lag_seconds, 0);
        h.update(|s| s.lag_changes = 3);
        let lag = h.snapshot().lag_seconds;
        assert!(stale(lag), "changes not yet durable, {lag}");
        h.mark_current();
        h.update(|s| s.state = State::Backoff);
        assert_eq!(h.snapshot().lag_seconds, 0);
    }

    /// A stopped consumer's table says how stale each replica is, as its JSON does, and
    /// `-` for one never recorded current.
    #[test]
    fn a_stopped_consumer_s_table_gives_each_replica_s_lag() {
        let agreement = |name: &str, lag_seconds| OfflineAgreement {
            name: name.to_owned(),
            state: "not running",
            provider: "127.0.0.1:1".to_owned(),
            mode: "refresh-and-persist".to_owned(),
            cookie: None,
            entries: 3,
            provider_proved_at: None,
            lag_seconds,
        };
        let status = OfflineStatus {
            running: false,
            started_at: None,
            consumer_id: None,
            agreements: vec![agreement("people", Some(93)), agreement("groups", None)],
        };
        let text = status.to_text();
        assert!(text.contains("people           not running  entries 3        lag 93s     cookie -\n"), "{text}");
        assert!(text.contains("groups           not running  entries 3        lag -       cookie -\n"), "{text}");
    }

    /// A status taken up after a restart counts `lag_seconds` from when the replica was
    /// last current as the store recorded it (by `current_at_ms`, before the restart),
    /// not from its own start; a recorded time ahead of the clock counts from now.
    #[test]
    fn lag_seconds_resumed_after_a_restart_counts_from_when_the_replica_was_last_current() {
        let before = StatusHandle::new("people", "p", "refresh-and-persist");
        before.update(|s| {
            s.state = State::Backoff;
            s.current_at = Instant::now() - Duration::from_secs(90);
        });
        let recorded = before.current_at_ms();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!((now_ms - recorded).abs_diff(90_000) < 2_000, "{} ms ago", now_ms - recorded);

        let after = StatusHandle::new("people", "p", "refresh-and-persist");
        after.update(|s| s.state = State::Connecting);
        assert_eq!(after.snapshot().lag_seconds, 0, "no record: counts from the start");
        after.resume_current_at(recorded);
        let lag = after.snapshot().lag_seconds;
        assert!((89..=92).contains(&lag), "{lag}");
        after.resume_current_at(now_ms + 3_600_000);
        assert_eq!(after.snapshot().lag_seconds, 0, "a time ahead of the clock counts from now");
    }

    /// What a persisting, caught-up replica records as when it was last current is now,
    /// however long ago it caught up: it is current as long as nothing is outstanding,
    /// and a consumer that crashed after a quiet hour must not show it an hour stale.
    #[test]
    fn a_caught_up_replica_is_recorded_current_now_however_long_ago_it_caught_up() {
        let h = StatusHandle::new("people", "p", "refresh-and-persist");
        h.update(|s| {
            s.state = State::Persisting;
            s.current_at = Instant::now() - Duration::from_secs(600);
        });
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let recorded = h.current_at_ms();
        assert!(recorded.abs_diff(now_ms) < 2_000, "recorded {} ms before now", now_ms.saturating_sub(recorded));
        // Changes outstanding: stale since it last was.
        h.update(|s| s.lag_changes = 3);
        assert!(now_ms.saturating_sub(h.current_at_ms()).abs_diff(600_000) < 2_000);
    }

    /// A caught-up replica whose provider went silent (a black hole, a provider stopped)
    /// is stale from the provider's last word on, once the silence is longer than a
    /// live link's, and stays so after the keepalive timeout ends the session; before,
    /// it read 0 until the timeout and then counted from the session's end.
    #[tokio::test(start_paused = true)]
    async fn lag_seconds_counts_a_silent_link_from_the_providers_last_word() {
        let h = StatusHandle::new("a", "p", "refresh-and-persist");
        let inbound = Arc::new(Progress::new());
        h.update(|s| {
            s.state = State::Persisting;
            s.heard = Some(Heard::new(inbound.clone(), Duration::from_secs(5)));
        });
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.snapshot().lag_seconds, 0, "quiet for a ping interval: a live link");
        inbound.mark();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(h.snapshot().lag_seconds, 0, "heard within the interval and a second");
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(h.snapshot().lag_seconds, 20, "silent for 20 s: stale since the last word");
        // The keepalive timeout ends the session; the staleness runs on from then.
        h.session_ended();
        h.update(|s| s.state = State::Connecting);
        let lag = h.snapshot().lag_seconds;
        assert!((20..=21).contains(&lag), "{lag}: counted from the last word, not from the session's end");
        assert!(h.snapshot().heard.is_none());
    }

    #[test]
    fn a_session_that_ends_caught_up_on_a_live_link_was_current_until_its_end() {
        let h = StatusHandle::new("a", "p", "refresh-and-persist");
        h.update(|s| {
            s.state = State::Persisting;
            s.current_at = Instant::now() - Duration::from_secs(42);
            s.heard = Some(Heard::new(Arc::new(Progress::new()), Duration::from_secs(5)));
        });
        h.session_ended();
        h.update(|s| s.state = State::Backoff);
        assert_eq!(h.snapshot().lag_seconds, 0);
        // One that ends with changes not yet acknowledged was current at its last ack.
        h.update(|s| {
            s.state = State::Persisting;
            s.lag_changes = 2;
            s.current_at = Instant::now() - Duration::from_secs(42);
        });
        h.session_ended();
        h.update(|s| s.state = State::Backoff);
        assert_eq!(h.snapshot().lag_seconds, 42);
    }

    /// A cookie's text at `csn`, of a history of its own.
    fn cookie(csn: u64) -> Option<String> {
        Some(Cookie { history: tether_protocol::HistoryId::new_random(), csn: Csn(csn) }.to_string())
    }

    #[tokio::test]
    async fn wait_csn_answers_once_the_durable_cookie_reaches_it() {
        let h = StatusHandle::new("a", "p", "refresh-and-persist");
        let durable = Reach::Durable;
        assert_eq!(
            h.wait_csn(Csn(5), durable, std::time::Duration::from_millis(10)).await,
            Waited::TimedOut,
            "no cookie yet"
        );
        let waiting = h.clone();
        let waiter =
            tokio::spawn(async move { waiting.wait_csn(Csn(5), durable, std::time::Duration::from_secs(60)).await });
        h.update(|s| s.cookie = cookie(4));
        h.update(|s| s.state = State::Persisting);
        h.update(|s| s.applied_csn = Some(Csn(5)));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "applied is not durable");
        h.update(|s| s.cookie = cookie(6));
        assert_eq!(waiter.await.unwrap(), Waited::Reached);
        assert_eq!(h.durable_csn(), Some(Csn(6)));
        assert_eq!(
            h.wait_csn(Csn(6), durable, std::time::Duration::ZERO).await,
            Waited::Reached,
            "already reached: answers at once"
        );
    }

    #[tokio::test]
    async fn a_visible_wait_answers_once_the_change_is_applied_before_it_is_durable() {
        let h = StatusHandle::new("a", "p", "refresh-and-persist");
        let visible = Reach::Visible;
        assert_eq!(h.wait_csn(Csn(5), visible, std::time::Duration::ZERO).await, Waited::TimedOut, "nothing yet");
        h.update(|s| s.cookie = cookie(4));
        assert_eq!(h.visible_csn(), Some(Csn(4)), "the durable cookie is visible too");
        let waiting = h.clone();
        let waiter =
            tokio::spawn(async move { waiting.wait_csn(Csn(5), visible, std::time::Duration::from_secs(60)).await });
        h.update(|s| s.applied_csn = Some(Csn(5)));
        assert_eq!(waiter.await.unwrap(), Waited::Reached, "answered while the cookie on disk is still 4");
        assert_eq!((h.durable_csn(), h.visible_csn()), (Some(Csn(4)), Some(Csn(5))));
        // A refresh clears what was applied: its cookie may start another history.
        h.update(|s| {
            s.cookie = cookie(3);
            s.applied_csn = None;
        });
        assert_eq!(h.visible_csn(), Some(Csn(3)));
    }

    /// A wait ends when the agreement cannot move towards the CSN any more: stopped or
    /// closed meanwhile, or its status retired by a reload; not at other state changes.
    #[tokio::test]
    async fn a_wait_ends_when_the_agreement_stops_or_is_retired() {
        let long = std::time::Duration::from_secs(60);
        for (halt, want) in [
            (
                Box::new(|h: &StatusHandle| h.update(|s| s.state = State::Stopped)) as Box<dyn Fn(&StatusHandle)>,
                Waited::Halted,
            ),
            (Box::new(|h: &StatusHandle| h.update(|s| s.state = State::Closed)), Waited::Halted),
            (Box::new(|h: &StatusHandle| h.retire()), Waited::Retired),
        ] {
            let h = StatusHandle::new("a", "p", "refresh-and-persist");
            h.update(|s| s.cookie = cookie(4));
            let waiting = h.clone();
            let waiter = tokio::spawn(async move { waiting.wait_csn(Csn(5), Reach::Durable, long).await });
            for state in [State::Persisting, State::Backoff, State::Connecting] {
                h.update(|s| s.state = state);
                tokio::task::yield_now().await;
            }
            assert!(!waiter.is_finished(), "an agreement that can still move is waited for");
            halt(&h);
            assert_eq!(tokio::time::timeout(long, waiter).await.unwrap().unwrap(), want);
        }
    }

    /// The line under an agreement says how stale it is in seconds and how many changes
    /// are not yet acknowledged, each in its place: an operator reads "lag 42s" as time.
    #[test]
    fn the_table_gives_lag_in_seconds_and_changes_each_in_its_place() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        // As of the snapshot: set here, not timed.
        let a = AgreementStatus { lag_seconds: 42, lag_changes: 3, ..h.snapshot() };
        let text = of(vec![a]).to_text();
        assert!(text.contains("\n  lag 42s (3 changes), applied 0,"), "{text}");
    }

    /// `status --json` names an agreement's fields as SPEC section 5 and
    /// docs/operations.md do: a monitor reads them by name, and a name changed is a field
    /// gone for it.
    #[test]
    fn an_agreement_s_json_has_the_fields_the_spec_names() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        h.update(|s| {
            s.state = State::Backoff;
            s.cookie = Some("h#4".into());
            s.entries = 12;
            s.last_disconnect = Some(Reason::ConnectionLost);
            s.set_error("connection-lost: reset".into());
            s.reconnects = 2;
            *s.disconnects.entry(Reason::ConnectionLost).or_default() += 2;
            s.lag_changes = 3;
        });
        // As of the snapshot: set here, not timed.
        let a = AgreementStatus { lag_seconds: 42, ..h.snapshot() };
        let json = serde_json::to_value(of(vec![a])).unwrap();
        let a = &json["agreements"][0];
        let expected = [
            ("name", "people".into()),
            ("state", "backoff".into()),
            ("provider", "127.0.0.1:7389".into()),
            ("mode", "refresh-and-persist".into()),
            ("cookie", "h#4".into()),
            ("entries", 12.into()),
            ("last_disconnect", "connection-lost".into()),
            ("last_error", "connection-lost: reset".into()),
            ("reconnects", 2.into()),
            ("disconnects", serde_json::json!({"connection-lost": 2})),
            ("lag_changes", 3.into()),
            ("lag_seconds", 42.into()),
        ];
        for (field, value) in expected {
            assert_eq!(a.get(field), Some(&value), "{field}: {a}");
        }
    }

    /// When the chain's end is a CA certificate the provider presents (an intermediate
    /// ending before the provider's own), `status` warns of that one by its place in the
    /// chain, as the session's log does: a warning naming the provider's own certificate
    /// would have its operator renew that, and the chain would end on the same day.
    #[test]
    fn status_warns_of_the_certificate_of_the_chain_that_ends_it() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let intermediate = Presented {
            provider: "127.0.0.1:7389".into(),
            validity: tether_config::certificate::Validity { not_before: now - 300 * day, not_after: now + 5 * day },
            position: 1,
        };
        assert!(h.present(Some(intermediate)));
        let text = of(vec![h.snapshot()]).to_text();
        let warning =
            "  warning: the 2nd certificate of the chain provider 127.0.0.1:7389 presents (a CA's, between its \
                       own and this consumer's ca_file) expires at ";
        assert!(text.contains(warning) && text.contains(" (in 5 days): "), "{text}");
    }

    /// The provider's certificate as a TLS session met it: its end in the JSON for a
    /// monitor, and a warning under the agreement's row once its notice has begun; a new
    /// certificate is told apart from one met again, which the session does not warn of
    /// again, and a session in plain TCP forgets it.
    #[test]
    fn the_provider_s_certificate_is_shown_by_its_end_and_warned_of_within_its_notice() {
        let h = StatusHandle::new("people", "127.0.0.1:7389", "refresh-and-persist");
        let mut watched = h.presented();
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let presented = |days: u32| Presented {
            provider: "127.0.0.1:7389".into(),
            validity: tether_config::certificate::Validity { not_before: now - 300 * day, not_after: now + days * day },
            position: 0,
        };
        assert!(h.present(Some(presented(90))), "a certificate met first is new");
        assert!(!h.present(Some(presented(90))), "the same one met again is not");
        assert!(watched.has_changed().unwrap());
        assert_eq!(watched.borrow_and_update().as_ref(), Some(&presented(90)));
        let json = serde_json::to_value(of(vec![h.snapshot()])).unwrap();
        let end = humantime::format_rfc3339_seconds(now + 90 * day).to_string();
        assert_eq!(json["agreements"][0]["provider_certificate_expires_at"], end.as_str());
        let text = of(vec![h.snapshot()]).to_text();
        assert!(!text.contains("warning:"), "a certificate good for 90 days is warned of:\n{text}");

        assert!(h.present(Some(presented(5))), "a renewal (or another provider's) is new");
        let text = of(vec![h.snapshot()]).to_text();
        let warning = "  warning: the certificate of provider 127.0.0.1:7389 expires at ";
        assert!(text.contains(warning) && text.contains(" (in 5 days): "), "{text}");

        assert!(h.present(None), "a session in plain TCP");
        assert_eq!(*watched.borrow_and_update(), None);
        let json = serde_json::to_value(of(vec![h.snapshot()])).unwrap();
        assert_eq!(json["agreements"][0].get("provider_certificate_expires_at"), None, "{json}");
        assert!(!of(vec![h.snapshot()]).to_text().contains("warning:"));
    }
}
