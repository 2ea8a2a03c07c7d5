//! The supervisor's tokio shell: runs the sessions and timers that the
//! [`Supervision`] state machine asks for, feeds it what
//! happened, and keeps the agreement's status (states, disconnect counters, last error).
//! All decisions live in the state machine; this file only moves events.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tether_config::{certificate_watch, info_or_debug};
use tether_store::{Replica, ReplicaStore};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::reason::{Reason, State};
use crate::retry::{Jitter, RetrySchedule};
use crate::session::{self, Ended, SessionConfig, StopSignal};
use crate::status::StatusHandle;
pub use crate::supervision::Command;
use crate::supervision::{Input, Output, Supervision};

/// What the supervisor needs to run an agreement.
#[derive(Debug)]
pub struct Supervisor {
    /// Session settings.
    pub session: SessionConfig,
    /// Refresh-only poll interval.
    pub interval: Duration,
    /// Reconnect delays.
    pub retry: RetrySchedule,
    /// Give up after failing this long.
    pub give_up_after: Option<Duration>,
    /// The consumer store.
    pub store: ReplicaStore,
    /// This agreement's replica.
    pub replica: Replica,
    /// Published status.
    pub status: StatusHandle,
    /// Commands from the daemon.
    pub commands: mpsc::Receiver<Command>,
    /// Source of the retry jitter ([`Jitter::Entropy`] outside the simulation).
    pub jitter: Jitter,
}

/// The current time on tokio's clock, so a simulated clock drives the state machine too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

type SessionFuture<'a> = Pin<Box<dyn std::future::Future<Output = Ended> + Send + 'a>>;

/// How long sessions in a row must have failed to reach the provider before their ends
/// are logged as warnings: a provider restarted (an upgrade, a setting that waits for a
/// restart) is back within seconds, one down, unreachable or refused (a certificate, a
/// TLS setting) stays so. Counted in attempts (three), a planned restart of 12 s wrote
/// three warnings on every consumer, and an alert on warnings fired at each.
const UNREACHED_WARN_AFTER: Duration = Duration::from_secs(30);

/// How often a running agreement records when its replica was last current (see
/// [`Replica::record_current_at`]), besides at each session's end and at shutdown: a
/// crash loses at most this much of it (and sled's flush interval), which the next
/// start then counts as stale.
const CURRENT_RECORD_EVERY: Duration = Duration::from_secs(5);

/// Records in the store when the replica was last current, as its status tells it;
/// nothing once the store has failed (a write to it may never return, and this runs on
/// the agreement's task).
fn record_current(replica: &Replica, status: &StatusHandle) {
    if replica.failure().latched().is_some() {
        return;
    }
    if let Err(e) = replica.record_current_at(status.current_at_ms()) {
        // The store's failure is reported where it stops the agreement.
        tracing::debug!(error = %e, "could not record when the replica was last current");
    }
}

impl Supervisor {
    /// Runs the agreement until shutdown, recording when its replica was last current
    /// every 5 s meanwhile and once more at the end.
    pub async fn run(self) {
        let (replica, status) = (self.replica.clone(), self.status.clone());
        let recording = async {
            let mut every = tokio::time::interval(CURRENT_RECORD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                record_current(&replica, &status);
            }
        };
        tokio::select! {
            () = self.run_watched() => {}
            () = recording => {}
        }
        record_current(&replica, &status);
    }

    /// Runs the agreement until shutdown, and with TLS the watch on the provider's
    /// certificate beside it, which ends with it.
    async fn run_watched(self) {
        if self.session.tls.is_none() {
            return self.supervise().await;
        }
        let presented = self.status.presented();
        let watch = async {
            certificate_watch::watch(presented, SystemTime::now, |w| warn!("{w}")).await;
            // It ends only when the status does, which the supervisor holds: never
            // before the supervisor, which the select must not end sooner.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = self.supervise() => {}
            () = watch => {}
        }
    }

    /// The agreement's sessions and timers, until shutdown.
    async fn supervise(mut self) {
        let mut machine = Supervision::new(self.retry.clone(), self.give_up_after, self.interval);
        let stopped = self.replica.is_admin_stopped().unwrap_or_else(|e| {
            error!(error = %e, "could not read the stopped flag; starting");
            false
        });
        let mut pending = machine.step(now(), Input::Begin { stopped }, self.jitter.sample());
        let mut stop = StopSignal::default();
        let mut session: Option<SessionFuture<'_>> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut started_once = false;
        // The last session was a refresh-only poll that completed: the next poll's
        // routine lines (idle, connecting, connected) go at DEBUG.
        let mut routine = false;
        // The delay of the last timer set, for the log.
        let mut waiting: Option<Duration> = None;
        // Since when sessions in a row have ended before the handshake did (the provider
        // down or unreachable, its certificate refused): the first one's end.
        let mut unreached_since: Option<std::time::Instant> = None;
        // The store's failure was handed to the state machine (once is enough: it is
        // latched for the process's life).
        let mut failure_told = false;
        let (cfg, store, replica, status) = (&self.session, &self.store, &self.replica, &self.status);
        let mut stopping = false;
        // A session ended: when the replica was last current is recorded once the state
        // it ended in is set (a session that ended persisting counts as current until
        // then), so that a crash before the next periodic record does not lose it.
        let mut record_due = false;
        loop {
            for output in pending.drain(..) {
                match output {
                    Output::StartSession => {
                        // A poll after a completed one is the mode working, not a
                        // reconnect: counted, a healthy poller's `reconnects` grew with
                        // every poll and told a monitor nothing.
                        if started_once && !routine {
                            status.update(|s| s.reconnects += 1);
                        }
                        started_once = true;
                        stop = StopSignal::default();
                        let signal = stop.clone();
                        session =
                            Some(Box::pin(
                                async move { session::run(cfg, store, replica, status, &signal, routine).await },
                            ));
                    }
                    Output::StopSession(reason, detail) => stop.stop(reason, detail),
                    Output::SetState(state) => {
                        let from = status.state();
                        if state == State::Backoff {
                            // The timer was set just before: say when the next attempt is.
                            let retry_in = Duration::from_millis(waiting.map_or(0, |d| d.as_millis() as u64));
                            info!(state = state.as_str(), retry_in = ?retry_in, "agreement state");
                        } else if from != state {
                            // A poll's idle and reconnect are routine, and so is the
                            // reconnect a backoff announced.
                            let quiet = match state {
                                State::Idle => routine,
                                State::Connecting => from == State::Backoff || (routine && from == State::Idle),
                                _ => false,
                            };
                            info_or_debug!(quiet, state = state.as_str(), "agreement state");
                        }
                        // Leaving the waiting states ends the wait, in the same update:
                        // status never shows a waiting state without its time.
                        let waits = matches!(state, State::Idle | State::Backoff);
                        status.update(|s| {
                            s.state = state;
                            if !waits {
                                s.next_attempt_at = None;
                            }
                        });
                    }
                    Output::Wait(d) => {
                        waiting = d;
                        deadline = d.map(|d| tokio::time::Instant::now() + d);
                        if let Some(d) = d {
                            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + d).to_string();
                            status.update(|s| s.next_attempt_at = Some(at));
                        }
                    }
                    Output::PersistStopped(flag) => {
                        if let Err(e) = replica.set_admin_stopped(flag) {
                            error!(error = %e, "could not record the agreement's stopped flag");
                        }
                        info!(stopped = flag, "operator flag recorded");
                    }
                    Output::GaveUp(why) => {
                        warn!(reason = %why, "agreement closed");
                        status.update(|s| s.set_error(why.clone()));
                    }
                    Output::Exit => return,
                }
            }
            if std::mem::take(&mut record_due) {
                record_current(replica, status);
            }
            if machine.stopping() != stopping {
                stopping = machine.stopping();
                status.update(|s| s.stopping = stopping);
            }
            let input = tokio::select! {
                biased;
                ended = async {
                    match session.as_mut() {
                        Some(running) => running.await,
                        None => std::future::pending().await,
                    }
                }, if session.is_some() => {
                    session = None;
                    Input::SessionEnded(ended)
                }
                cmd = self.commands.recv() => Input::Command(cmd.unwrap_or(Command::Shutdown)),
                _ = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if deadline.is_some() && session.is_none() => {
                    deadline = None;
                    Input::TimerFired
                }
                // A session meets the failure itself; this is for an agreement waiting.
                failure = replica.failure().failed(), if !failure_told && session.is_none() => {
                    failure_told = true;
                    Input::StoreFailed(session::store_failed(&failure))
                }
            };
            // An operator's start is no routine poll: its session is logged as after
            // the process's start, so the operator sees what it found.
            if let Input::Command(Command::Start | Command::Restart) = &input {
                routine = false;
            }
            if let Input::SessionEnded(ended) = &input {
                unreached_since = if ended.connected { None } else { unreached_since.or_else(|| Some(now())) };
                Self::record_with(replica, status, ended, unreached_since.map(|since| now().duration_since(since)));
                record_due = true;
                routine = ended.refresh_complete;
            }
            pending = machine.step(now(), input, self.jitter.sample());
        }
    }

    /// Records how a session ended; `unreached_for` how long sessions in a row, this one
    /// included, have not got past the handshake (from the first one's end).
    fn record_with(replica: &Replica, status: &StatusHandle, ended: &Ended, unreached_for: Option<Duration>) {
        status.session_ended();
        let entries = replica.len().unwrap_or(0);
        status.update(|s| s.entries = entries);
        if ended.refresh_complete {
            return;
        }
        // A refusal (wrong secret, an agreement the provider does not know) or an
        // exception needs the operator: a warning, so a log filtered to warnings shows
        // it. So does a provider not reached for UNREACHED_WARN_AFTER (down, or its
        // certificate refused): a log filtered to warnings said nothing of an agreement
        // that never connected. The rest retries on its own, and is the network's or an
        // operator's doing.
        // So does a goodbye that waits for one (a store emptied, a base gone), whose
        // `provider said goodbye` line is a warning already: the monitoring table's
        // alert on a WARN `disconnected` missed it.
        let needs_operator = matches!(ended.reason, Reason::Rejected | Reason::Exception)
            || (ended.reason == Reason::ConnectionLost && unreached_for.is_some_and(|d| d >= UNREACHED_WARN_AFTER))
            || ended.goodbye.is_some_and(|g| g.awaits_operator());
        if needs_operator {
            warn!(session = ended.session, reason = ended.reason.as_str(), detail = %ended.detail, "disconnected");
        } else {
            info!(session = ended.session, reason = ended.reason.as_str(), detail = %ended.detail, "disconnected");
        }
        status.update(|s| {
            s.last_disconnect = Some(ended.reason);
            *s.disconnects.entry(ended.reason).or_default() += 1;
            if !matches!(ended.reason, Reason::Shutdown | Reason::AdminStop) {
                s.set_error(format!("{}: {}", ended.reason.as_str(), ended.detail));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tether_protocol::liveness::Progress;

    use super::*;
    use crate::status::Heard;

    /// A session that ends caught up, its provider heard from to its end (a provider
    /// restarted), leaves the replica current as of the end: `lag_seconds` reads 0 while
    /// the agreement reconnects, not the time since the replica was last marked current.
    #[test]
    fn a_session_ended_caught_up_on_a_live_link_leaves_the_replica_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("people").unwrap();
        let status = StatusHandle::new("people", "p", "refresh-and-persist");
        status.update(|s| {
            s.state = State::Persisting;
            s.current_at = Instant::now() - Duration::from_secs(42);
            s.heard = Some(Heard::new(Arc::new(Progress::new()), Duration::from_secs(5)));
        });
        Supervisor::record_with(&replica, &status, &Ended::new(Reason::ConnectionLost, "closed"), None);
        status.update(|s| s.state = State::Backoff);
        assert_eq!(status.snapshot().lag_seconds, 0);
    }

    /// When a replica was last current is recorded in its store, and nothing is once
    /// the store has failed: a write to a failed store may never return, and this runs
    /// on the agreement's task.
    #[test]
    fn when_the_replica_was_current_is_recorded_until_its_store_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("people").unwrap();
        let status = StatusHandle::new("people", "p", "refresh-and-persist");
        status.update(|s| s.current_at = Instant::now() - Duration::from_secs(42));
        record_current(&replica, &status);
        let recorded = replica.current_at().unwrap().expect("a record");
        assert!(recorded.abs_diff(status.current_at_ms()) <= 1_000, "{recorded} against {}", status.current_at_ms());

        let failed =
            tether_store::StoreError::Sync { path: "db".into(), error: std::io::Error::other("the device failed") };
        let _ = replica.failure().observe::<()>(Err(failed));
        assert!(replica.failure().latched().is_some());
        status.update(|s| s.current_at = Instant::now());
        record_current(&replica, &status);
        assert_eq!(replica.current_at().unwrap(), Some(recorded), "recorded into a failed store");
    }
}
