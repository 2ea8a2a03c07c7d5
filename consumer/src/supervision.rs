//! The supervisor's decisions, as a sans-IO state machine: it is fed what happened
//! ([`Input`]: a session ended, an operator command, a timer) with the current time, and
//! answers with what to do ([`Output`]: start or stop a session, set the state, arm a
//! timer, persist the stopped flag, exit). It never sleeps, reads a clock or touches the
//! network, so every path through SPEC §4 (retry schedule, backoff reset, give-up,
//! permanent rejections, revoked credentials, stop/start across restarts) is tested in
//! plain unit tests with a made-up clock; [`crate::supervisor`] is the tokio shell.

use std::time::{Duration, Instant};

use tether_protocol::message::{GoodbyeReason, RejectReason};

use crate::reason::{Reason, State};
use crate::retry::RetrySchedule;
use crate::session::Ended;

/// A session that stays up this long resets the retry schedule (SPEC §4).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// How the error of an agreement closed by `credentials-revoked` begins: what a
/// revoked agreement needs differs from a stopped one's `start`.
pub const REVOKED: &str = "revoked by the provider";

/// Operator and process commands for one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop replicating and stay stopped (persisted) until `Start`.
    Stop,
    /// Start a stopped or closed agreement (or reconnect now from backoff or idle).
    Start,
    /// End the current session and reconnect now.
    Restart,
    /// The process is exiting: goodbye and return.
    Shutdown,
    /// A reload removed the agreement (`removed`) or changed its configuration: goodbye
    /// and return, as for `Shutdown`; the daemon starts a changed one anew. Its own
    /// command so that the goodbye and the log say why the session ended.
    Reload {
        /// The agreement is gone from the configuration, rather than changed.
        removed: bool,
    },
}

impl Command {
    /// Whether the supervisor returns once the session has ended.
    fn exits(self) -> bool {
        matches!(self, Command::Shutdown | Command::Reload { .. })
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The supervisor begins; `stopped` is the persisted operator flag.
    Begin {
        /// Whether an operator left the agreement stopped.
        stopped: bool,
    },
    /// The running session ended.
    SessionEnded(Ended),
    /// An operator or the process said something.
    Command(Command),
    /// The timer armed by the last [`Output::Wait`] fired.
    TimerFired,
    /// The store failed (its text): a running session ends fatally by itself, but an
    /// agreement waiting out its poll interval or a backoff showed `idle` or `backoff`
    /// over a store none of its attempts could use, until its next attempt (an hour's
    /// poll away) found so.
    StoreFailed(String),
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start a session now.
    StartSession,
    /// Ask the running session to end with this reason and detail (it says goodbye
    /// with both, and logs them).
    StopSession(Reason, &'static str),
    /// Publish this state.
    SetState(State),
    /// Arm the timer (replacing any); `None` disarms it.
    Wait(Option<Duration>),
    /// Persist the operator's stopped flag.
    PersistStopped(bool),
    /// Record why the agreement gave up, for status.
    GaveUp(String),
    /// The supervisor is done.
    Exit,
}

/// The supervisor's state machine.
#[derive(Debug)]
pub struct Supervision {
    /// Reconnect delays.
    retry: RetrySchedule,
    /// Give up after failing this long.
    give_up_after: Option<Duration>,
    /// Refresh-only poll interval.
    interval: Duration,
    /// The coarse state (sessions publish connecting/refreshing/persisting themselves).
    state: State,
    /// When the running session started; `None` when none runs.
    session_started: Option<Instant>,
    /// Failed attempts since the last healthy session.
    attempt: u32,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
    /// A command waiting for the running session to end.
    pending: Option<Command>,
    /// A pending stop that an exit (a shutdown, a reload) took the place of: the session
    /// ends for the exit, and the stop is persisted before the supervisor returns, so the
    /// process or supervisor that comes next finds the agreement stopped.
    stop_under_exit: bool,
    /// Whether a `refresh-required` was answered by reconnecting at once since the last
    /// healthy session: the next one waits on the schedule like any failure. A provider
    /// asks once; a relay on the path that injects the goodbye into every session (after
    /// a real handshake, so no proof stops it) would otherwise make the consumer and the
    /// provider handshake as fast as they can, in a loop.
    reconnected_at_once: bool,
}

impl Supervision {
    /// A supervisor for an agreement with these settings.
    pub fn new(retry: RetrySchedule, give_up_after: Option<Duration>, interval: Duration) -> Self {
        Self {
            retry,
            give_up_after,
            interval,
            state: State::Connecting,
            session_started: None,
            attempt: 0,
            failing_since: None,
            pending: None,
            stop_under_exit: false,
            reconnected_at_once: false,
        }
    }

    /// The current coarse state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether an operator's stop is ending the running session.
    pub fn stopping(&self) -> bool {
        self.pending == Some(Command::Stop)
    }

    /// Failed attempts since the last healthy session.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.session_started = Some(now);
        self.state = State::Connecting;
        out.extend([Output::SetState(State::Connecting), Output::Wait(None), Output::StartSession]);
    }

    fn settle(&mut self, state: State, out: &mut Vec<Output>) {
        self.state = state;
        out.push(Output::SetState(state));
    }

    fn reset(&mut self) {
        self.attempt = 0;
        self.failing_since = None;
        self.reconnected_at_once = false;
    }

    /// Feeds one input at time `now`; `sample` is a uniform number in [0, 1] for jitter.
    pub fn step(&mut self, now: Instant, input: Input, sample: f64) -> Vec<Output> {
        let mut out = Vec::new();
        let running = self.session_started.is_some();
        match input {
            Input::Begin { stopped: true } => self.settle(State::Stopped, &mut out),
            Input::Begin { stopped: false } => self.start(now, &mut out),
            Input::Command(cmd) if running => {
                let (reason, detail) = match cmd {
                    Command::Shutdown => (Reason::Shutdown, "the consumer is shutting down"),
                    Command::Reload { removed: false } => {
                        (Reason::Shutdown, "the agreement's configuration changed (reload)")
                    }
                    Command::Reload { removed: true } => {
                        (Reason::Shutdown, "the agreement was removed from the configuration (reload)")
                    }
                    Command::Stop => (Reason::AdminStop, "stopped by the operator"),
                    Command::Restart => (Reason::AdminStop, "restarted by the operator"),
                    // A start of a running agreement changes nothing, unless a stop is
                    // still ending its session: the start is the later command, and once
                    // the session has ended the agreement runs again ([`Supervision::ended`]).
                    Command::Start => {
                        if self.pending == Some(Command::Stop) {
                            self.pending = Some(Command::Start);
                        }
                        return out;
                    }
                };
                // A later command overrides an earlier one, except that an exit wins,
                // and its reason stays the one the session says goodbye with.
                if self.pending.is_some_and(Command::exits) {
                    return out;
                }
                self.stop_under_exit = cmd.exits() && self.pending == Some(Command::Stop);
                self.pending = Some(cmd);
                out.push(Output::StopSession(reason, detail));
            }
            Input::Command(Command::Shutdown | Command::Reload { .. }) => out.push(Output::Exit),
            Input::Command(Command::Stop) => {
                if self.state != State::Stopped {
                    out.extend([Output::Wait(None), Output::PersistStopped(true)]);
                    self.settle(State::Stopped, &mut out);
                }
            }
            Input::Command(Command::Start | Command::Restart) => {
                if self.state == State::Stopped {
                    out.push(Output::PersistStopped(false));
                }
                self.reset();
                self.start(now, &mut out);
            }
            Input::TimerFired => {
                if !running && matches!(self.state, State::Backoff | State::Idle) {
                    self.start(now, &mut out);
                }
            }
            Input::SessionEnded(ended) => self.ended(now, ended, sample, &mut out),
            Input::StoreFailed(failure) => {
                if !running && matches!(self.state, State::Backoff | State::Idle) {
                    out.extend([Output::Wait(None), Output::GaveUp(format!("retrying cannot fix: {failure}"))]);
                    self.settle(State::Closed, &mut out);
                }
            }
        }
        out
    }

    fn ended(&mut self, now: Instant, ended: Ended, sample: f64, out: &mut Vec<Output>) {
        let started = self.session_started.take().unwrap_or(now);
        match self.pending.take() {
            Some(Command::Shutdown | Command::Reload { .. }) => {
                if std::mem::take(&mut self.stop_under_exit) {
                    out.push(Output::PersistStopped(true));
                }
                return out.push(Output::Exit);
            }
            Some(Command::Stop) => {
                out.push(Output::PersistStopped(true));
                return self.settle(State::Stopped, out);
            }
            Some(Command::Restart | Command::Start) => {
                self.reset();
                return self.start(now, out);
            }
            None => {}
        }
        if ended.reason == Reason::Shutdown {
            return out.push(Output::Exit);
        }
        if ended.connected && now.duration_since(started) >= HEALTHY_AFTER {
            self.reset();
        }
        // The timer first: status then never shows a waiting state without the time it
        // waits for.
        if ended.refresh_complete {
            self.reset();
            out.push(Output::Wait(Some(self.interval)));
            return self.settle(State::Idle, out);
        }
        if ended.goodbye == Some(GoodbyeReason::CredentialsRevoked) {
            // The provider's detail says what changed on its side (the grant removed,
            // its secret, its base), which is what the operator must act on.
            out.push(Output::GaveUp(format!("{REVOKED} ({})", ended.detail)));
            return self.settle(State::Closed, out);
        }
        if ended.fatal {
            out.push(Output::GaveUp(format!("retrying cannot fix: {}", ended.detail)));
            return self.settle(State::Closed, out);
        }
        if ended.goodbye == Some(GoodbyeReason::RefreshRequired) && !self.reconnected_at_once {
            // Not a failure: the provider wants a fresh refresh, now.
            self.reconnected_at_once = true;
            return self.start(now, out);
        }
        let failing = *self.failing_since.get_or_insert(now);
        // Retrying soon cannot fix these (an operator must change a secret, a version, or
        // put the provider's store back): do not hammer the provider. Jittered like every
        // delay: these are the failures every consumer meets at once (a rotated secret, a
        // provider restored without its store), and unjittered they retried in step.
        let longest = || Some(crate::retry::jitter(self.retry.longest_delay(), sample));
        let delay = match (ended.rejection, ended.goodbye) {
            (Some(RejectReason::BadCredentials | RejectReason::VersionMismatch), _) => longest(),
            _ if ended.unproven => longest(),
            (_, Some(reason)) if reason.awaits_operator() => longest(),
            _ => self.retry.jittered_delay_for(self.attempt, sample),
        };
        self.attempt = self.attempt.saturating_add(1);
        let gave_up = self.give_up_after.is_some_and(|limit| now.duration_since(failing) >= limit);
        match delay.filter(|_| !gave_up) {
            Some(delay) => {
                out.push(Output::Wait(Some(delay)));
                self.settle(State::Backoff, out);
            }
            None => {
                // Name the setting that closed it: an operator told "schedule exhausted"
                // of a schedule ending in `forever` would look in the wrong place.
                let why = match self.give_up_after.filter(|_| gave_up) {
                    Some(limit) => format!(
                        "gave up after {} without a healthy session (give_up_after)",
                        humantime::format_duration(limit)
                    ),
                    None => "retry schedule exhausted".to_owned(),
                };
                out.push(Output::GaveUp(format!("{why}; last: {}", ended.detail)));
                self.settle(State::Closed, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: Reason) -> Ended {
        Ended::new(reason, "test")
    }

    fn machine(retry: &[&str], give_up: Option<Duration>) -> Supervision {
        Supervision::new(RetrySchedule::parse(retry).unwrap(), give_up, Duration::from_secs(30))
    }

    fn wait_of(out: &[Output]) -> Option<Duration> {
        out.iter().rev().find_map(|o| match o {
            Output::Wait(d) => Some(*d),
            _ => None,
        })?
    }

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x2", "10s x1"], None);
        assert!(m.step(t0, Input::Begin { stopped: false }, 0.5).contains(&Output::StartSession));
        let mut delays = Vec::new();
        for _ in 0..3 {
            let out = m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
            assert_eq!(m.state(), State::Backoff);
            delays.push(wait_of(&out).unwrap());
            assert!(m.step(t0, Input::TimerFired, 0.5).contains(&Output::StartSession));
        }
        assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(10)]);
        let out = m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(m.state(), State::Closed, "a schedule without forever runs out");
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::GaveUp(why) if why.starts_with("retry schedule exhausted; last: "))));
        assert!(m.step(t0, Input::TimerFired, 0.5).is_empty(), "closed ignores timers");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let t0 = Instant::now();
        let mut m = machine(&["10s forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        for sample in [0.0, 0.25, 1.0] {
            let d = wait_of(&m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), sample)).unwrap();
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12), "{d:?}");
            m.step(t0, Input::TimerFired, 0.5);
        }
    }

    #[test]
    fn a_healthy_minute_resets_the_schedule() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x1", "1m forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        m.step(t0, Input::TimerFired, 0.5);
        let out = m.step(t0, Input::SessionEnded(Ended { connected: false, ..ended(Reason::ConnectionLost) }), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(60)));
        let t1 = t0 + Duration::from_secs(70);
        m.step(t1, Input::TimerFired, 0.5);
        let out = m.step(t1 + HEALTHY_AFTER, Input::SessionEnded(ended(Reason::KeepaliveTimeout)), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(1)), "back to the first step");
    }

    /// A session that never got past the handshake is a failure however long it took:
    /// it starts neither the schedule nor the `give_up_after` clock again. Taken for a
    /// healthy minute, a handshake a hung provider held for two (the handshake's limit is
    /// the keepalive `timeout`, which may be minutes) sent every retry back to the first
    /// step, and the agreement never gave up.
    #[test]
    fn a_session_that_never_connected_resets_nothing_however_long_it_took() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x1", "1m forever"], Some(Duration::from_secs(150)));
        let unconnected = || Ended { connected: false, ..ended(Reason::ConnectionLost) };
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(unconnected()), 0.5);
        let hung = HEALTHY_AFTER * 2;
        let t1 = t0 + Duration::from_secs(1);
        m.step(t1, Input::TimerFired, 0.5);
        let out = m.step(t1 + hung, Input::SessionEnded(unconnected()), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(60)), "the second step: {out:?}");
        let t2 = t1 + hung + Duration::from_secs(60);
        m.step(t2, Input::TimerFired, 0.5);
        let out = m.step(t2 + hung, Input::SessionEnded(unconnected()), 0.5);
        assert_eq!(m.state(), State::Closed, "failing since t0, past give_up_after: {out:?}");
    }

    #[test]
    fn give_up_after_closes() {
        let t0 = Instant::now();
        let mut m = machine(&["1s forever"], Some(Duration::from_secs(5)));
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        m.step(t0 + Duration::from_secs(1), Input::TimerFired, 0.5);
        let out = m.step(t0 + Duration::from_secs(6), Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(m.state(), State::Closed);
        // The setting that closed it, not the schedule, which never runs out.
        assert!(
            out.iter().any(|o| matches!(o, Output::GaveUp(why) if why.starts_with("gave up after 5s without a healthy session (give_up_after); last: "))),
            "{out:?}"
        );
    }

    /// The error names the limit as the file gives it (`"1h"`); Debug's `3600s` left the
    /// operator to work out which setting that was.
    #[test]
    fn giving_up_names_the_limit_as_humantime_writes_it() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut m = machine(&["1m forever"], Some(hour));
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        // An attempt a minute, each failing at once, until an hour has passed.
        let mut out = Vec::new();
        for minute in 1..=60 {
            let at = t0 + Duration::from_secs(60 * minute);
            m.step(at, Input::TimerFired, 0.5);
            out = m.step(at, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        }
        assert_eq!(m.state(), State::Closed);
        assert!(
            out.iter().any(
                |o| matches!(o, Output::GaveUp(why) if why.starts_with("gave up after 1h without a healthy session"))
            ),
            "{out:?}"
        );
    }

    #[test]
    fn bad_credentials_and_an_unproven_provider_back_off_at_the_longest_delay_and_revocation_closes() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x5", "10m forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        let rejected = Ended { rejection: Some(RejectReason::BadCredentials), ..ended(Reason::Rejected) };
        let out = m.step(t0, Input::SessionEnded(rejected), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(600)));
        m.step(t0, Input::TimerFired, 0.5);
        // So does a peer that did not prove it is the provider: an operator, or the
        // impostor's going, is what it waits for.
        let unproven = Ended { unproven: true, ..ended(Reason::Exception) };
        let out = m.step(t0, Input::SessionEnded(unproven), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(600)));
        m.step(t0, Input::TimerFired, 0.5);
        // Jittered like every delay: consumers rejected together do not retry in step.
        let again = Ended { rejection: Some(RejectReason::BadCredentials), ..ended(Reason::Rejected) };
        let out = m.step(t0, Input::SessionEnded(again), 0.0);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(480)), "the longest delay less a fifth");
        m.step(t0, Input::TimerFired, 0.5);
        let revoked = Ended {
            goodbye: Some(GoodbyeReason::CredentialsRevoked),
            detail: "credentials-revoked: the grant was removed".into(),
            ..ended(Reason::ProviderGoodbye)
        };
        let out = m.step(t0, Input::SessionEnded(revoked), 0.5);
        assert!(
            out.contains(&Output::GaveUp(
                "revoked by the provider (credentials-revoked: the grant was removed)".into()
            )),
            "{out:?}"
        );
        assert_eq!(m.state(), State::Closed);
        let out = m.step(t0, Input::Command(Command::Start), 0.5);
        assert!(out.contains(&Output::StartSession), "an operator can start a closed agreement");
    }

    #[test]
    fn an_empty_provider_store_or_a_missing_base_is_retried_at_the_longest_delay_and_the_agreement_stays_open() {
        for reason in [GoodbyeReason::EmptyStore, GoodbyeReason::NoSuchBase] {
            let t0 = Instant::now();
            let mut m = machine(&["1s x5", "10m forever"], None);
            m.step(t0, Input::Begin { stopped: false }, 0.5);
            let bye = Ended { goodbye: Some(reason), ..ended(Reason::ProviderGoodbye) };
            let out = m.step(t0, Input::SessionEnded(bye), 0.5);
            assert_eq!(wait_of(&out), Some(Duration::from_secs(600)), "{reason}: {out:?}");
            assert_eq!(m.state(), State::Backoff, "{reason}: the store or the base may come: keep trying");
            let out = m.step(t0, Input::Command(Command::Restart), 0.5);
            assert!(out.contains(&Output::StartSession), "{reason}: an operator can retry at once");
        }
    }

    /// A healthy session starts the `give_up_after` clock again: the next failure is the
    /// first of a new run, not the latest of one that began before it. Counted from the
    /// run of failures before the healthy session, an agreement with `give_up_after =
    /// "1h"` that had once failed, a day of healthy replication ago, closed at its next
    /// disconnection, without one retry.
    #[test]
    fn a_healthy_session_starts_the_give_up_clock_again() {
        let t0 = Instant::now();
        let mut m = machine(&["1s forever"], Some(Duration::from_secs(5)));
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        let t1 = t0 + Duration::from_secs(1);
        m.step(t1, Input::TimerFired, 0.5);
        let t2 = t1 + HEALTHY_AFTER + Duration::from_secs(3600);
        let out = m.step(t2, Input::SessionEnded(ended(Reason::KeepaliveTimeout)), 0.5);
        assert_eq!(m.state(), State::Backoff, "{out:?}");
        assert_eq!(wait_of(&out), Some(Duration::from_secs(1)), "{out:?}");
    }

    /// A refresh-only poll that completed is a success like a healthy minute: the
    /// failure after it waits the schedule's first delay, and its `give_up_after` counts
    /// from it. A poll takes seconds, so a poller's sessions are never up a minute: kept
    /// across completed polls, the attempts of a week's occasional failures added up, and
    /// the clock ran from the first of them.
    #[test]
    fn a_completed_poll_starts_the_schedule_and_the_give_up_clock_again() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x1", "1m forever"], Some(Duration::from_secs(600)));
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        let out = m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        m.step(t1, Input::TimerFired, 0.5);
        let done = Ended { refresh_complete: true, ..ended(Reason::ProviderGoodbye) };
        m.step(t1, Input::SessionEnded(done), 0.5);
        assert_eq!(m.state(), State::Idle);
        let t2 = t1 + Duration::from_secs(3600);
        m.step(t2, Input::TimerFired, 0.5);
        let out = m.step(t2, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(m.state(), State::Backoff, "{out:?}");
        assert_eq!(wait_of(&out), Some(Duration::from_secs(1)), "back to the first step: {out:?}");
    }

    /// A stop that finds no session (the agreement in `backoff` or `idle`) is persisted
    /// as one that ends a session is, and its timer disarmed: the agreement stays
    /// stopped across a restart of the process, and makes no attempt meanwhile.
    #[test]
    fn a_stop_while_waiting_is_persisted_and_disarms_the_timer() {
        let t0 = Instant::now();
        let complete = Ended { refresh_complete: true, ..ended(Reason::ConnectionLost) };
        for (waiting, state) in [(ended(Reason::ConnectionLost), State::Backoff), (complete, State::Idle)] {
            let mut m = machine(&["1s forever"], None);
            m.step(t0, Input::Begin { stopped: false }, 0.5);
            m.step(t0, Input::SessionEnded(waiting), 0.5);
            assert_eq!(m.state(), state);
            let out = m.step(t0, Input::Command(Command::Stop), 0.5);
            assert_eq!(out, [Output::Wait(None), Output::PersistStopped(true), Output::SetState(State::Stopped)]);
            assert!(m.step(t0 + Duration::from_secs(60), Input::TimerFired, 0.5).is_empty(), "{state}");
        }
    }

    /// An operator's start of an agreement that gave up begins a new run: the schedule's
    /// first delay, and a `give_up_after` counted from the start. Counted on from the run
    /// that closed it, the started agreement closed again at its first failure, however
    /// long the limit, and the operator's `start` did nothing but one attempt.
    #[test]
    fn a_start_after_giving_up_begins_a_new_run_of_attempts() {
        let t0 = Instant::now();
        let mut m = machine(&["1s x1", "1m forever"], Some(Duration::from_secs(5)));
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        m.step(t0, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        m.step(t0 + Duration::from_secs(1), Input::TimerFired, 0.5);
        m.step(t0 + Duration::from_secs(6), Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(m.state(), State::Closed);
        let t1 = t0 + Duration::from_secs(600);
        assert!(m.step(t1, Input::Command(Command::Start), 0.5).contains(&Output::StartSession));
        let out = m.step(t1, Input::SessionEnded(ended(Reason::ConnectionLost)), 0.5);
        assert_eq!(m.state(), State::Backoff, "{out:?}");
        assert_eq!(wait_of(&out), Some(Duration::from_secs(1)), "the schedule's first delay: {out:?}");
    }

    /// A running agreement an operator's stop is ending: its session asked to end.
    fn being_stopped(t0: Instant) -> Supervision {
        let mut m = machine(&["1s forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        assert_eq!(
            m.step(t0, Input::Command(Command::Stop), 0.5),
            [Output::StopSession(Reason::AdminStop, "stopped by the operator")]
        );
        m
    }

    #[test]
    fn stop_is_persisted_and_survives_until_start() {
        let t0 = Instant::now();
        let mut m = being_stopped(t0);
        let out = m.step(t0, Input::SessionEnded(ended(Reason::AdminStop)), 0.5);
        assert!(out.contains(&Output::PersistStopped(true)));
        assert_eq!(m.state(), State::Stopped);
        assert!(m.step(t0, Input::TimerFired, 0.5).is_empty(), "no reconnect while stopped");
        // After a process restart the flag is read back.
        let mut again = machine(&["1s forever"], None);
        assert_eq!(again.step(t0, Input::Begin { stopped: true }, 0.5), [Output::SetState(State::Stopped)]);
        let out = again.step(t0, Input::Command(Command::Start), 0.5);
        assert!(out.contains(&Output::PersistStopped(false)) && out.contains(&Output::StartSession));
    }

    /// A `start` that comes while the session a `stop` ended is still ending (the
    /// `stop` gave up waiting after 20 s, or its client was interrupted) is the later
    /// command, and wins: the agreement runs again. It was ignored as a start of a
    /// running agreement, and the stop then left it stopped, persisted across restarts.
    #[test]
    fn a_start_while_a_stop_is_under_way_leaves_the_agreement_running() {
        let t0 = Instant::now();
        let mut m = being_stopped(t0);
        // Said in the start's reply (see `control::admin_reply`).
        assert!(m.stopping());
        m.step(t0, Input::Command(Command::Start), 0.5);
        assert!(!m.stopping());
        let out = m.step(t0, Input::SessionEnded(ended(Reason::AdminStop)), 0.5);
        assert!(!out.contains(&Output::PersistStopped(true)), "{out:?}");
        assert!(out.contains(&Output::StartSession), "{out:?}");
        assert_eq!(m.state(), State::Connecting);
    }

    /// A shutdown or a reload that comes while a `stop` is still ending the session
    /// ends it as it would, but the stop is kept: persisted before the supervisor
    /// returns, so the process started again (or the supervisor the reload starts)
    /// finds the agreement stopped. The exit took the stop's place, and the agreement
    /// the operator stopped replicated again after the restart.
    #[test]
    fn a_stop_under_way_when_the_process_exits_or_reloads_is_persisted() {
        let t0 = Instant::now();
        for exit in [Command::Shutdown, Command::Reload { removed: false }] {
            let mut m = being_stopped(t0);
            m.step(t0, Input::Command(exit), 0.5);
            let out = m.step(t0, Input::SessionEnded(ended(Reason::Shutdown)), 0.5);
            assert_eq!(out, [Output::PersistStopped(true), Output::Exit], "{exit:?}");
        }
        // A stop that a later start took back is not persisted.
        let mut m = being_stopped(t0);
        m.step(t0, Input::Command(Command::Restart), 0.5);
        m.step(t0, Input::Command(Command::Shutdown), 0.5);
        assert_eq!(m.step(t0, Input::SessionEnded(ended(Reason::Shutdown)), 0.5), [Output::Exit]);
    }

    #[test]
    fn refresh_only_polls_and_shutdown_exits() {
        let t0 = Instant::now();
        let mut m = machine(&["1s forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        let done = Ended { refresh_complete: true, ..ended(Reason::ProviderGoodbye) };
        let out = m.step(t0, Input::SessionEnded(done), 0.5);
        assert_eq!(m.state(), State::Idle);
        assert_eq!(wait_of(&out), Some(Duration::from_secs(30)));
        assert!(m.step(t0, Input::TimerFired, 0.5).contains(&Output::StartSession));
        assert_eq!(
            m.step(t0, Input::Command(Command::Shutdown), 0.5),
            [Output::StopSession(Reason::Shutdown, "the consumer is shutting down")]
        );
        assert_eq!(m.step(t0, Input::Command(Command::Stop), 0.5), [], "the goodbye stays the shutdown's");
        assert_eq!(m.step(t0, Input::SessionEnded(ended(Reason::Shutdown)), 0.5), [Output::Exit], "shutdown wins");
    }

    /// A reload ends the session as a shutdown does, saying which reload it was.
    #[test]
    fn a_reload_ends_the_session_saying_why_and_returns() {
        let t0 = Instant::now();
        for (removed, detail) in [
            (false, "the agreement's configuration changed (reload)"),
            (true, "the agreement was removed from the configuration (reload)"),
        ] {
            let mut m = machine(&["1s forever"], None);
            m.step(t0, Input::Begin { stopped: false }, 0.5);
            let reload = Input::Command(Command::Reload { removed });
            assert_eq!(m.step(t0, reload.clone(), 0.5), [Output::StopSession(Reason::Shutdown, detail)]);
            assert_eq!(m.step(t0, Input::Command(Command::Restart), 0.5), [], "the goodbye stays the reload's");
            assert_eq!(
                m.step(t0, Input::SessionEnded(ended(Reason::Shutdown)), 0.5),
                [Output::Exit],
                "the reload wins"
            );
            // With no session running (stopped, in backoff), it returns at once.
            let mut stopped = machine(&["1s forever"], None);
            stopped.step(t0, Input::Begin { stopped: true }, 0.5);
            assert_eq!(stopped.step(t0, reload, 0.5), [Output::Exit]);
        }
    }

    #[test]
    fn fatal_errors_close_and_refresh_required_reconnects_at_once() {
        let t0 = Instant::now();
        let mut m = machine(&["1s forever"], None);
        m.step(t0, Input::Begin { stopped: false }, 0.5);
        let again = || Ended { goodbye: Some(GoodbyeReason::RefreshRequired), ..ended(Reason::ProviderGoodbye) };
        assert!(m.step(t0, Input::SessionEnded(again()), 0.5).contains(&Output::StartSession));
        // Asked again before a healthy session: not at once (a relay injecting it into
        // every session would make a reconnect storm), but on the schedule.
        let out = m.step(t0, Input::SessionEnded(again()), 0.5);
        assert!(out.contains(&Output::Wait(Some(Duration::from_secs(1)))), "{out:?}");
        assert_eq!(m.state(), State::Backoff);
        m.step(t0 + Duration::from_secs(1), Input::TimerFired, 0.5);
        // After a healthy session the provider's next request is honoured at once again.
        let t1 = t0 + Duration::from_secs(1) + HEALTHY_AFTER;
        assert!(m.step(t1, Input::SessionEnded(again()), 0.5).contains(&Output::StartSession));
        let fatal = Ended { fatal: true, ..ended(Reason::Exception) };
        m.step(t0, Input::SessionEnded(fatal), 0.5);
        assert_eq!(m.state(), State::Closed);
    }

    /// A failed store closes an agreement that waits (its poll interval, a backoff) at
    /// once, its timer disarmed; a running session ends by itself, fatally, and a
    /// stopped agreement stays stopped (its `start` is refused with the way out).
    #[test]
    fn a_failed_store_closes_the_agreements_that_wait_and_leaves_the_rest() {
        let t0 = Instant::now();
        let failed = || Input::StoreFailed("the store failed: disk full".into());
        let complete = Ended { refresh_complete: true, ..ended(Reason::ConnectionLost) };
        for (waiting, state) in [(complete, State::Idle), (ended(Reason::ConnectionLost), State::Backoff)] {
            let mut m = machine(&["1s forever"], None);
            m.step(t0, Input::Begin { stopped: false }, 0.5);
            m.step(t0, Input::SessionEnded(waiting), 0.5);
            assert_eq!(m.state(), state);
            let out = m.step(t0, failed(), 0.5);
            assert_eq!(m.state(), State::Closed, "{out:?}");
            assert!(out.contains(&Output::Wait(None)), "{out:?}");
            assert!(
                out.contains(&Output::GaveUp("retrying cannot fix: the store failed: disk full".into())),
                "{out:?}"
            );
            assert!(m.step(t0 + Duration::from_secs(3600), Input::TimerFired, 0.5).is_empty());
        }
        let mut running = machine(&["1s forever"], None);
        running.step(t0, Input::Begin { stopped: false }, 0.5);
        assert!(running.step(t0, failed(), 0.5).is_empty());
        assert_eq!(running.state(), State::Connecting);
        let mut stopped = machine(&["1s forever"], None);
        stopped.step(t0, Input::Begin { stopped: true }, 0.5);
        assert!(stopped.step(t0, failed(), 0.5).is_empty());
        assert_eq!(stopped.state(), State::Stopped);
    }
}
