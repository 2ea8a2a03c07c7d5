//! The agreement supervisor: runs sessions one after another and decides, from how each
//! ended, what comes next: reconnect now, back off per the retry schedule, poll again
//! after `interval`, stay stopped, or give up (`closed`). Operator commands (stop,
//! start, restart, shutdown) arrive on a channel and take effect at once, also mid-session
//! and mid-backoff.

use std::time::{Duration, Instant};

use tether_protocol::message::{GoodbyeReason, RejectReason};
use tether_store::{Replica, ReplicaStore};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::reason::{Reason, State};
use crate::retry::RetrySchedule;
use crate::session::{self, Ended, SessionConfig, StopSignal};
use crate::status::StatusHandle;

/// A session that stays up this long resets the retry schedule (SPEC §4).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Operator and process commands for one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop replicating and stay stopped (persisted) until `Start`.
    Stop,
    /// Start a stopped or closed agreement.
    Start,
    /// End the current session and reconnect now.
    Restart,
    /// The process is exiting: goodbye and return.
    Shutdown,
}

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
}

/// What to do after waiting for commands.
enum Next {
    Run,
    Exit,
}

impl Supervisor {
    fn set_state(&self, state: State) {
        if self.status.state() != state {
            info!(state = state.as_str(), "agreement state");
        }
        self.status.update(|s| s.state = state);
    }

    fn persist_stopped(&self, stopped: bool) {
        if let Err(e) = self.replica.set_admin_stopped(stopped) {
            error!(error = %e, "could not record the agreement's stopped flag");
        }
    }

    /// Waits (at most `limit`, forever if `None`) for a command that changes course.
    async fn wait(&mut self, limit: Option<Duration>) -> Next {
        let cmd = match limit {
            Some(l) => match tokio::time::timeout(l, self.commands.recv()).await {
                Ok(cmd) => cmd,
                Err(_) => return Next::Run,
            },
            None => self.commands.recv().await,
        };
        match cmd {
            None | Some(Command::Shutdown) => Next::Exit,
            Some(Command::Stop) => {
                self.persist_stopped(true);
                self.set_state(State::Stopped);
                info!(reason = Reason::AdminStop.as_str(), "agreement stopped");
                self.wait_stopped().await
            }
            Some(Command::Start | Command::Restart) => Next::Run,
        }
    }

    async fn wait_stopped(&mut self) -> Next {
        loop {
            match self.commands.recv().await {
                None | Some(Command::Shutdown) => return Next::Exit,
                Some(Command::Start | Command::Restart) => {
                    self.persist_stopped(false);
                    info!("agreement started");
                    return Next::Run;
                }
                Some(Command::Stop) => {}
            }
        }
    }

    /// Runs the agreement until shutdown.
    pub async fn run(mut self) {
        if self.replica.is_admin_stopped().unwrap_or(false) {
            self.set_state(State::Stopped);
            if let Next::Exit = self.wait_stopped().await {
                return;
            }
        }
        let mut attempt: u32 = 0;
        let mut failing_since: Option<Instant> = None;
        let mut first = true;
        loop {
            if !first {
                self.status.update(|s| s.reconnects += 1);
            }
            first = false;
            let started = Instant::now();
            let stop = StopSignal::default();
            let (ended, command) = self.run_session(&stop).await;
            let entries = self.replica.entries().map(|e| e.len()).unwrap_or(0);
            self.status.update(|s| s.entries = entries);
            if !ended.refresh_complete {
                info!(reason = ended.reason.as_str(), detail = %ended.detail, "disconnected");
                self.status.update(|s| {
                    s.last_disconnect = Some(ended.reason);
                    *s.disconnects.entry(ended.reason).or_default() += 1;
                    if !matches!(ended.reason, Reason::Shutdown | Reason::AdminStop) {
                        s.last_error = Some(format!("{}: {}", ended.reason.as_str(), ended.detail));
                    }
                });
            }
            match command {
                Some(Command::Shutdown) => return,
                Some(Command::Stop) => {
                    self.persist_stopped(true);
                    self.set_state(State::Stopped);
                    match self.wait_stopped().await {
                        Next::Exit => return,
                        Next::Run => {
                            attempt = 0;
                            continue;
                        }
                    }
                }
                Some(Command::Restart | Command::Start) => {
                    attempt = 0;
                    continue;
                }
                None => {}
            }
            if ended.reason == Reason::Shutdown {
                return;
            }
            if ended.connected && started.elapsed() >= HEALTHY_AFTER {
                attempt = 0;
                failing_since = None;
            }
            if ended.refresh_complete {
                attempt = 0;
                failing_since = None;
                self.set_state(State::Idle);
                match self.wait(Some(self.interval)).await {
                    Next::Exit => return,
                    Next::Run => continue,
                }
            }
            if ended.goodbye == Some(GoodbyeReason::CredentialsRevoked) {
                warn!("credentials revoked by the provider; not retrying until started again");
                self.set_state(State::Closed);
                match self.wait(None).await {
                    Next::Exit => return,
                    Next::Run => {
                        attempt = 0;
                        continue;
                    }
                }
            }
            let failing = *failing_since.get_or_insert_with(Instant::now);
            let delay = match ended.rejection {
                // Retrying soon cannot fix these; do not hammer the provider.
                Some(RejectReason::BadCredentials | RejectReason::VersionMismatch) => Some(self.retry.longest_delay()),
                _ => self.retry.jittered_delay_for(attempt, rand::random()),
            };
            attempt = attempt.saturating_add(1);
            let gave_up = self.give_up_after.is_some_and(|limit| failing.elapsed() >= limit);
            let Some(delay) = delay.filter(|_| !gave_up) else {
                warn!("retry schedule exhausted; giving up");
                self.status.update(|s| s.last_error = Some(format!("gave up after: {}", ended.detail)));
                self.set_state(State::Closed);
                match self.wait(None).await {
                    Next::Exit => return,
                    Next::Run => {
                        attempt = 0;
                        failing_since = None;
                        continue;
                    }
                }
            };
            self.set_state(State::Backoff);
            info!(delay = ?delay, attempt, "backing off");
            if let Next::Exit = self.wait(Some(delay)).await {
                return;
            }
        }
    }

    /// Runs one session, relaying commands that arrive meanwhile; returns how it ended
    /// and the command that ended it, if any.
    async fn run_session(&mut self, stop: &StopSignal) -> (Ended, Option<Command>) {
        let session = session::run(&self.session, &self.store, &self.replica, &self.status, stop);
        tokio::pin!(session);
        let mut command = None;
        loop {
            tokio::select! {
                ended = &mut session => return (ended, command),
                cmd = self.commands.recv(), if command.is_none() => {
                    let cmd = cmd.unwrap_or(Command::Shutdown);
                    let reason = match cmd {
                        Command::Shutdown => Reason::Shutdown,
                        Command::Stop | Command::Restart => Reason::AdminStop,
                        Command::Start => continue,
                    };
                    command = Some(cmd);
                    stop.stop(reason);
                }
            }
        }
    }
}
