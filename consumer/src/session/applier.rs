//! The applier: applies each message to the replica on the session's store thread,
//! flushes, acknowledges.

use std::sync::Arc;

use tether_config::info_or_debug;
use tether_protocol::connection::{BoxedWrite, MessageWriter};
use tether_protocol::encoded::{Received, ReceivedOp};
use tether_protocol::liveness;
use tether_protocol::message::{GoodbyeReason, Message, Mode, POLL_ACK_VERSION};
use tether_protocol::{Cookie, Csn, HistoryId, RefreshKind};
use tether_store::{ApplyStats, Replica, ReplicaStore, Shadow, StoreError};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::executor::{Runner, TaskError};
use crate::failpoint;
use crate::reason::{Reason, State};
use crate::status::StatusHandle;

use super::keepalive::Silence;
use super::reader::{inbound, Queued};
use super::{
    Ended, SessionConfig, StopSignal, ACK_INTERVAL, CHANGES_PER_APPLY, GOODBYE_LOOKUP, POLL_GOODBYE_WAIT, SEND_LIMIT,
};

/// The applier's state.
pub(super) struct Applier<'a> {
    pub(super) cfg: &'a SessionConfig,
    pub(super) store: &'a ReplicaStore,
    pub(super) replica: &'a Replica,
    pub(super) status: &'a StatusHandle,
    pub(super) writer: Arc<Mutex<MessageWriter<BoxedWrite>>>,
    /// The provider history this session's changes belong to (from the `Welcome`).
    pub(super) history: HistoryId,
    /// The CSN of the cookie the hello offered, if any: a full refresh in answer to one
    /// means the provider does not know it, and a delta from it ends at or past it.
    pub(super) offered_cookie: Option<Csn>,
    /// The newest CSN a cookie of this session named: the provider's cookies never go
    /// back ([`Applier::take_cookie`]).
    pub(super) newest_cookie: Option<Csn>,
    /// The session's protocol version (from the `Welcome`).
    pub(super) version: u16,
    /// Where the session's store calls run, one after another.
    pub(super) runner: Runner,
    /// The shadow of a full or present refresh in progress.
    pub(super) shadow: Option<Shadow>,
    /// Between `RefreshBegin` and `RefreshDone`.
    pub(super) refreshing: bool,
    /// A full or present refresh's scan is under way: its batches go into the shadow
    /// unchecked ([`Shadow::apply_scan`]) until the `RefreshProgress` that ends it.
    pub(super) scanning: bool,
    /// `RefreshDone` seen.
    pub(super) refresh_done: bool,
    /// A poll's refresh is durable and acknowledged: the session ends by then even
    /// without the provider's goodbye ([`POLL_GOODBYE_WAIT`]).
    pub(super) goodbye_due: Option<tokio::time::Instant>,
    /// A refresh-only poll following one that completed (see [`super::run`]).
    pub(super) routine: bool,
    /// Operations the refresh changed the replica with (a delta's; a reload's are its
    /// entries).
    pub(super) refresh_applied: u64,
    /// The newest cookie applied but not yet flushed and acknowledged.
    pub(super) pending_cookie: Option<Cookie>,
    /// Changes applied since the last ack.
    pub(super) unacked: u64,
}

impl Applier<'_> {
    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Queued>,
        stop: &StopSignal,
        keepalive_timed_out: &CancellationToken,
        silence: &Silence,
    ) -> Ended {
        let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A provider plans its refresh at once after the `Welcome`. One that only answers
        // pings would keep the agreement `connecting` for good, its lag growing unseen:
        // the refresh must begin within `idle_timeout`, pings or not.
        let begin_by = tokio::time::Instant::now() + self.cfg.idle_timeout;
        loop {
            let idle_left = self.cfg.idle_timeout.saturating_sub(silence.silent_for());
            let goodbye_due = self.goodbye_due;
            tokio::select! {
                biased;
                _ = stop.token.cancelled() => {
                    let _ = self.flush_and_ack().await;
                    return stop.ended("");
                }
                _ = keepalive_timed_out.cancelled() => {
                    return Ended::new(Reason::KeepaliveTimeout, "nothing from the provider within keepalive.timeout");
                }
                _ = tokio::time::sleep(idle_left) => {
                    if silence.silent_for() >= self.cfg.idle_timeout {
                        return Ended::new(Reason::IdleTimeout, format!("nothing received for {}", humantime::format_duration(self.cfg.idle_timeout)));
                    }
                }
                _ = tokio::time::sleep_until(begin_by), if !self.refreshing && !self.refresh_done => {
                    return Ended::new(
                        Reason::IdleTimeout,
                        format!(
                            "the provider welcomed the session and began no refresh within {}",
                            humantime::format_duration(self.cfg.idle_timeout)
                        ),
                    );
                }
                _ = tokio::time::sleep_until(goodbye_due.unwrap_or_else(tokio::time::Instant::now)), if goodbye_due.is_some() => {
                    warn!(
                        wait = ?POLL_GOODBYE_WAIT,
                        "the provider did not end the poll after its refresh, which is durable and acknowledged: ending \
                         it here (an older provider can lose a poll's ack; upgrade it)"
                    );
                    return Ended {
                        refresh_complete: true,
                        ..Ended::new(Reason::ConnectionLost, "refresh complete; the provider's goodbye did not follow")
                    };
                }
                _ = ack_tick.tick() => {
                    if let Err(e) = self.flush_and_ack().await {
                        return self.goodbye_behind(e, &mut rx).await;
                    }
                }
                msg = rx.recv() => {
                    let handled = match inbound(msg) {
                        Ok(Received::Change { op, cookie }) => self.on_changes(op, cookie, &mut rx).await,
                        Ok(other) => self.on_other(other).await,
                        Err(ended) => Err(ended),
                    };
                    if let Err(ended) = handled {
                        return self.goodbye_behind(ended, &mut rx).await;
                    }
                    // Nothing more queued: make it durable and ack now, not at the next
                    // tick (a lone change is visible in one flush; a burst still shares one).
                    if rx.is_empty() {
                        if let Err(ended) = self.flush_and_ack().await {
                            return self.goodbye_behind(ended, &mut rx).await;
                        }
                    }
                }
            }
        }
    }

    /// Names a lost connection for what ended it. A provider that says goodbye and
    /// closes resets the connection under an ack then in flight: the send fails while
    /// the goodbye, read before the reset, still waits in the queue behind the changes
    /// not yet applied. Those are left (the cookie has not passed them) and the goodbye
    /// ends the session as it would have, so status says `provider-goodbye` with the
    /// provider's reason rather than `connection-lost`. A read error is queued behind
    /// anything read before it, so only a failed send can leave a goodbye unread.
    async fn goodbye_behind(&mut self, ended: Ended, rx: &mut mpsc::Receiver<Queued>) -> Ended {
        if ended.reason != Reason::ConnectionLost {
            return ended;
        }
        let deadline = tokio::time::Instant::now() + GOODBYE_LOOKUP;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Queued { msg: Ok(Some(Received::Message(bye @ Message::Goodbye { .. }))), .. })) => {
                    debug!(failed = %ended.detail, "the provider's goodbye was queued behind a failed send");
                    return self.on_message(bye).await.err().unwrap_or(ended);
                }
                Ok(Some(Queued { msg: Ok(Some(_)), .. })) => {}
                // The end of the stream, a read error, or nothing more in time.
                _ => return ended,
            }
        }
    }

    /// Applies a live change together with the changes queued right behind it, then
    /// handles the first other message found behind them.
    async fn on_changes(
        &mut self,
        op: ReceivedOp,
        cookie: Cookie,
        rx: &mut mpsc::Receiver<Queued>,
    ) -> Result<(), Ended> {
        self.expect_persisting("Change")?;
        self.take_cookie(&cookie, "Change", None)?;
        let mut ops = vec![op];
        let mut last = cookie;
        let mut behind = None;
        while ops.len() < CHANGES_PER_APPLY {
            match rx.try_recv() {
                Ok(Queued { msg: Ok(Some(Received::Change { op, cookie })), .. }) => {
                    self.take_cookie(&cookie, "Change", None)?;
                    ops.push(op);
                    last = cookie;
                }
                Ok(other) => {
                    behind = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.within_region(&ops)?;
        let count = ops.len() as u64;
        let replica = self.replica.clone();
        // Nothing else queued: make the changes durable in the same trip to the store
        // thread, saving a thread handoff on the path from the provider's ack to ours.
        let flush_now = behind.is_none() && rx.is_empty();
        let store = self.store.clone();
        let status = self.status.clone();
        let stats = self
            .blocking("applying changes", move || {
                for _ in 0..count {
                    failpoint::on_apply()?;
                }
                let stats = replica.apply(&ops, Some(last))?;
                // Searches return the changes from here on: `wait --visible` answers
                // now, while the flush below runs.
                status.update(|s| s.applied_csn = Some(last.csn));
                if flush_now {
                    store.flush()?;
                }
                Ok(stats)
            })
            .await?;
        self.record(stats, true);
        self.pending_cookie = Some(last);
        self.unacked += count;
        self.status.update(|s| s.lag_changes = self.unacked);
        if flush_now {
            return self.acknowledge().await;
        }
        match behind {
            Some(next) => self.on_other(inbound(Some(next))?).await,
            None => Ok(()),
        }
    }

    /// Runs `f` on the session's store thread (see [`crate::executor`]); a panic or store error
    /// becomes an `exception`, fatal when retrying cannot fix it.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Ended> {
        match self.runner.run(f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.replica.failure().note(&e);
                Err(Ended { fatal: e.is_fatal(), ..Ended::new(Reason::Exception, format!("{what}: {e}")) })
            }
            Err(TaskError::Panicked) => Err(Ended::new(Reason::Exception, format!("{what}: apply task panicked"))),
            Err(e @ TaskError::StoreFailed(_)) => {
                Err(Ended { fatal: true, ..Ended::new(Reason::Exception, format!("{what}: {e}")) })
            }
            Err(e) => Err(Ended::new(Reason::Exception, format!("{what}: {e}"))),
        }
    }

    async fn send(&self, msg: &Message) -> Result<(), Ended> {
        let mut w = self.writer.lock().await;
        // A stop of this process does not use the limit up: the provider may have read on.
        match liveness::within(SEND_LIMIT, w.send(msg)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Ended::new(Reason::ConnectionLost, format!("sending {}: {e}", msg.name()))),
            None => Err(Ended::new(Reason::ConnectionLost, format!("sending {}: timed out", msg.name()))),
        }
    }

    /// Counts what an apply did; `live` when it went to the active replica (a delta or
    /// live changes), whose entry count then moves with it instead of being recounted.
    fn record(&mut self, stats: ApplyStats, live: bool) {
        if self.refreshing {
            self.refresh_applied += stats.applied;
        }
        self.status.update(|s| {
            s.applied += stats.applied;
            s.skipped += stats.skipped;
            s.duplicates += stats.duplicates;
            if live {
                s.entries = s.entries.saturating_add_signed(stats.entries_delta() as isize);
            }
        });
    }

    /// Flushes applied changes and acknowledges the newest cookie.
    async fn flush_and_ack(&mut self) -> Result<(), Ended> {
        if self.pending_cookie.is_none() {
            return Ok(());
        }
        let store = self.store.clone();
        self.blocking("flush", move || store.flush()).await?;
        self.acknowledge().await
    }

    /// Publishes and acknowledges the newest applied cookie; only once it is durable.
    async fn acknowledge(&mut self) -> Result<(), Ended> {
        let Some(cookie) = self.pending_cookie.take() else { return Ok(()) };
        self.status.update(|s| {
            s.cookie = Some(cookie.to_string());
            s.lag_changes = 0;
        });
        self.status.mark_current();
        self.unacked = 0;
        self.send(&Message::Ack { cookie }).await
    }

    /// Anything but a live change.
    async fn on_other(&mut self, received: Received) -> Result<(), Ended> {
        match received {
            Received::Batch(ops) => self.on_batch(ops).await,
            Received::Message(msg) => self.on_message(msg).await,
            Received::Change { .. } => {
                Err(Ended::new(Reason::Exception, "protocol error: a change handled out of turn"))
            }
        }
    }

    /// Applies a refresh batch: to the shadow of a full or present refresh (unchecked
    /// while its scan lasts), or straight to the replica for a delta.
    /// Refuses an entry outside the agreement's base and scope: a provider sends none
    /// (one that leaves the region is a delete), and the replica would keep it unseen,
    /// counted in its entries but never printed by a search. Such an entry comes from a
    /// peer that is not a Tether provider doing its work, and ends the session as any
    /// protocol error does, before anything of its message is applied.
    fn within_region(&self, ops: &[ReceivedOp]) -> Result<(), Ended> {
        let spec = &self.cfg.spec;
        let outside = ops.iter().find_map(|op| match op {
            ReceivedOp::Upsert { entry, .. } if !spec.scope.contains(&spec.base, &entry.dn) => Some(&entry.dn),
            _ => None,
        });
        match outside {
            None => Ok(()),
            Some(dn) => Err(Ended::new(
                Reason::Exception,
                format!("protocol error: the provider sent {dn}, outside the region ({} of {})", spec.scope, spec.base),
            )),
        }
    }

    async fn on_batch(&mut self, ops: Vec<ReceivedOp>) -> Result<(), Ended> {
        self.expect_refreshing("Batch")?;
        self.within_region(&ops)?;
        let live = self.shadow.is_none();
        let stats = match self.shadow.take() {
            Some(mut shadow) => {
                let scanning = self.scanning;
                let (shadow, stats) = self
                    .blocking("applying a refresh batch", move || {
                        failpoint::on_apply()?;
                        let stats = if scanning { shadow.apply_scan(&ops)? } else { shadow.apply(&ops)? };
                        Ok((shadow, stats))
                    })
                    .await?;
                self.shadow = Some(shadow);
                stats
            }
            None => {
                let (replica, history) = (self.replica.clone(), self.history);
                self.blocking("applying a delta batch", move || {
                    failpoint::on_apply()?;
                    replica.apply_delta_batch(&ops, history)
                })
                .await?
            }
        };
        self.record(stats, live);
        Ok(())
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), Ended> {
        match msg {
            Message::RefreshBegin { kind, resumed } => {
                if self.refreshing || self.refresh_done {
                    return Err(Ended::new(Reason::Exception, "protocol error: a second RefreshBegin"));
                }
                if resumed && !kind.replaces_replica() {
                    return Err(Ended::new(Reason::Exception, "protocol error: a resumed delta refresh"));
                }
                info_or_debug!(
                    self.routine && kind == RefreshKind::Delta,
                    refresh = kind.as_str(),
                    resumed,
                    "refresh started"
                );
                if kind == RefreshKind::Full && !resumed && self.offered_cookie.is_some() {
                    // The provider takes a cookie it knows by delta, or by a present
                    // refresh past its retention: a full one says the replica came from
                    // another store, or a history this one never made. Said here, where
                    // the replica's operator looks: a provider address that changes hands
                    // (a restore, a proxy over two providers) reloads every time.
                    warn!(
                        "the provider does not know the replica's cookie (a position of another store, or of a history of \
                         this one it never made, such as a copy restored, one that took other writes, or the \
                         provider's build rolled back or forward across histories): the replica is reloaded in full"
                    );
                }
                self.refreshing = true;
                let replica = self.replica.clone();
                self.shadow = match (kind.replaces_replica(), resumed) {
                    (true, true) => {
                        Some(self.blocking("resuming a shadow reload", move || replica.resume_shadow()).await?)
                    }
                    (true, false) => {
                        Some(self.blocking("starting a shadow reload", move || replica.begin_shadow(kind)).await?)
                    }
                    (false, _) => {
                        // A shadow left by an interrupted reload will not be continued.
                        self.blocking("dropping an unfinished shadow", move || replica.abandon_shadow()).await?;
                        None
                    }
                };
                let received = self.shadow.as_ref().map_or(0, Shadow::received);
                self.scanning = self.shadow.is_some();
                self.status.update(|s| {
                    s.state = State::Refreshing;
                    s.last_refresh = Some(kind.as_str().to_owned());
                    if resumed {
                        s.resumed_refreshes += 1;
                    } else {
                        *s.refreshes.entry(kind.as_str().to_owned()).or_default() += 1;
                    }
                    if kind.replaces_replica() {
                        s.refresh_received = received;
                    }
                });
                Ok(())
            }
            Message::RefreshProgress { resume } => {
                self.expect_refreshing("RefreshProgress")?;
                let Some(mut shadow) = self.shadow.take() else {
                    return Err(Ended::new(
                        Reason::Exception,
                        "protocol error: RefreshProgress outside a full or present refresh",
                    ));
                };
                if resume.cursor.is_none() {
                    self.scanning = false;
                }
                let spec = self.cfg.spec.clone();
                let shadow = self
                    .blocking("recording refresh progress", move || {
                        shadow.record_progress(&spec, resume)?;
                        Ok(shadow)
                    })
                    .await?;
                let received = shadow.received();
                self.shadow = Some(shadow);
                self.status.update(|s| s.refresh_received = received);
                Ok(())
            }
            Message::Batch { ops } => {
                let ops = ops.iter().map(ReceivedOp::from_op).collect::<Result<Vec<_>, _>>();
                let ops = ops.map_err(|e| Ended::new(Reason::Exception, format!("re-encoding a batch: {e}")))?;
                self.on_batch(ops).await
            }
            Message::PresentBatch { uuids } => {
                self.expect_refreshing("PresentBatch")?;
                let Some(shadow) = self.shadow.take() else {
                    return Err(Ended::new(
                        Reason::Exception,
                        "protocol error: PresentBatch outside a present refresh",
                    ));
                };
                let result = self
                    .runner
                    .run(move || {
                        let mut shadow = shadow;
                        let r = shadow.copy_present(&uuids);
                        (shadow, r)
                    })
                    .await;
                match result {
                    Ok((shadow, Ok(()))) => {
                        self.shadow = Some(shadow);
                        Ok(())
                    }
                    Ok((shadow, Err(StoreError::MissingPresentEntries(n)))) => {
                        // Local state failed its check: the next session reloads in full.
                        let replica = self.replica.clone();
                        let _ = self
                            .runner
                            .run(move || {
                                let _ = shadow.abort();
                                replica.forget_cookie()
                            })
                            .await;
                        Err(Ended::new(
                            Reason::Exception,
                            format!("replica lacks {n} entries named present; reloading in full"),
                        ))
                    }
                    Ok((shadow, Err(e))) => {
                        self.shadow = Some(shadow);
                        Err(Ended::new(Reason::Exception, format!("present batch: {e}")))
                    }
                    Err(e) => Err(Ended::new(Reason::Exception, format!("present batch: {e}"))),
                }
            }
            Message::RefreshDone { cookie } => {
                self.expect_refreshing("RefreshDone")?;
                // A delta starts from the cookie offered, which the provider knew; a
                // reload replaces the replica, whatever it held.
                let from = if self.shadow.is_some() { None } else { self.offered_cookie };
                self.take_cookie(&cookie, "RefreshDone", from)?;
                // A reload is counted once, as it is swapped in; a delta moved the count
                // batch by batch already.
                let (reloaded, kept) = match self.shadow.take() {
                    Some(shadow) => {
                        let n =
                            self.blocking("swapping in the reloaded replica", move || shadow.finish(cookie)).await?;
                        (Some(n), cookie)
                    }
                    None => {
                        // The cookie kept may be the one held, in an older history of the
                        // provider, when the delta brought nothing (see the store's
                        // `kept_cookie`): that is the replica's position, and status shows
                        // it. The acknowledgement names the provider's cookie, the same
                        // position: a provider reads acknowledgements in its current
                        // history only, and ends a poll at the one of its `RefreshDone`
                        // (acknowledging the older one held every poll after a provider
                        // restart for the 10 s fallback below).
                        let (replica, store) = (self.replica.clone(), self.store.clone());
                        let kept = self
                            .blocking("recording the refresh cookie", move || {
                                replica.advance(cookie)?;
                                store.flush()?;
                                replica.cookie()
                            })
                            .await?;
                        (None, kept.unwrap_or(cookie))
                    }
                };
                self.refreshing = false;
                self.refresh_done = true;
                self.status.mark_current();
                let persisting = self.cfg.mode == Mode::RefreshAndPersist;
                let mut entries = 0;
                self.status.update(|s| {
                    s.cookie = Some(kept.to_string());
                    s.applied_csn = None;
                    if let Some(n) = reloaded {
                        s.entries = n;
                    }
                    entries = s.entries;
                    if persisting {
                        s.state = State::Persisting;
                    }
                });
                let applied = self.refresh_applied;
                let quiet = self.routine && reloaded.is_none() && applied == 0;
                info_or_debug!(quiet, cookie = %kept, entries, applied, "refresh complete");
                // The cookie is durable: acknowledged, it tells the provider where this
                // replica is. A refresh-only provider of protocol version 1 says goodbye
                // right after `RefreshDone` and may already be gone (our next `Hello`
                // carries the cookie anyway); from version 2 it waits for this.
                if persisting || self.version >= POLL_ACK_VERSION {
                    self.send(&Message::Ack { cookie }).await?;
                }
                if !persisting {
                    self.goodbye_due = Some(tokio::time::Instant::now() + POLL_GOODBYE_WAIT);
                }
                Ok(())
            }
            Message::Advance { cookie } => {
                self.expect_persisting("Advance")?;
                self.take_cookie(&cookie, "Advance", None)?;
                let replica = self.replica.clone();
                self.blocking("advancing the cookie", move || replica.advance(cookie)).await?;
                // Nothing in the region changed up to it: the replica shows that state.
                self.status.update(|s| s.applied_csn = Some(cookie.csn));
                self.pending_cookie = Some(cookie);
                Ok(())
            }
            Message::Ping { seq } => self.send(&Message::Pong { seq }).await,
            Message::Pong { .. } => Ok(()),
            Message::Goodbye { reason: GoodbyeReason::RefreshComplete, .. }
                if self.refresh_done && self.cfg.mode == Mode::RefreshOnly =>
            {
                Err(Ended { refresh_complete: true, ..Ended::new(Reason::ProviderGoodbye, "refresh complete") })
            }
            Message::Goodbye { reason, detail } => {
                let detail = tether_protocol::message::shown(detail);
                if reason.awaits_operator() {
                    warn!(reason = reason.as_str(), detail = %detail, "provider said goodbye");
                } else {
                    info!(reason = reason.as_str(), detail = %detail, "provider said goodbye");
                }
                let _ = self.flush_and_ack().await;
                Err(Ended {
                    goodbye: Some(reason),
                    ..Ended::new(Reason::ProviderGoodbye, format!("{}: {detail}", reason.as_str()))
                })
            }
            Message::RefreshRequired { reason } => Err(Ended {
                goodbye: Some(GoodbyeReason::RefreshRequired),
                ..Ended::new(
                    Reason::ProviderGoodbye,
                    format!("refresh-required: {}", tether_protocol::message::shown(reason)),
                )
            }),
            other => Err(Ended::new(
                Reason::Exception,
                format!("protocol error: unexpected {} from the provider", other.name()),
            )),
        }
    }

    /// Checks a cookie `what` brings before anything of it is applied: of the session's
    /// history (a provider issues cookies of its current history only, fixed while it
    /// serves), and not behind any this session brought, nor behind `from` (a delta's
    /// start). A cookie that fails came from a peer that is not a Tether provider doing
    /// its work: stored, one of another history made the next session reload the
    /// replica in full, and one that went back moved the durable position back without
    /// a word. It ends the session as any protocol error does.
    fn take_cookie(&mut self, cookie: &Cookie, what: &str, from: Option<Csn>) -> Result<(), Ended> {
        if cookie.history != self.history {
            return Err(Ended::new(
                Reason::Exception,
                format!(
                    "protocol error: {what} names cookie {cookie}, not of the history {} it welcomed us into",
                    self.history
                ),
            ));
        }
        if let Some(floor) = self.newest_cookie.max(from).filter(|floor| cookie.csn < *floor) {
            return Err(Ended::new(
                Reason::Exception,
                format!("protocol error: {what} names cookie {cookie}, behind csn {floor} this session had reached"),
            ));
        }
        self.newest_cookie = Some(cookie.csn);
        Ok(())
    }

    fn expect_refreshing(&self, what: &str) -> Result<(), Ended> {
        if self.refreshing {
            Ok(())
        } else {
            debug!(what, "message outside a refresh");
            Err(Ended::new(Reason::Exception, format!("protocol error: {what} outside a refresh")))
        }
    }

    fn expect_persisting(&self, what: &str) -> Result<(), Ended> {
        if self.refresh_done && self.cfg.mode == Mode::RefreshAndPersist {
            Ok(())
        } else {
            Err(Ended::new(Reason::Exception, format!("protocol error: {what} before the refresh finished")))
        }
    }
}
