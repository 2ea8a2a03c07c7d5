//! Judging a peer dead by its silence, when the judge may itself have stopped running.
//!
//! Both sides end a session whose peer has sent nothing for `keepalive.timeout`. That
//! silence is evidence only while this process could have read. A process that was
//! stopped (SIGSTOP, a `^Z`, a frozen or migrated VM, a swap storm) wakes with its
//! check long overdue and the peer's frames waiting unread in the socket: Linux's
//! `epoll_wait` even returns EINTR with no events after a stop and SIGCONT, so the
//! runtime fires the overdue timer before it learns the socket is readable. Judged as
//! it stood, every frozen consumer blamed a live provider, and a frozen provider
//! dropped every consumer at once (five of five 5-second SIGSTOPs of either, with
//! pings every second and a 3-second timeout).
//!
//! So a check that runs [`LATE_CHECK`] or more past its due time does not convict: it
//! counts the silence afresh from now, once. The caller pings, and the peer's frames
//! already queued are read within the next turn of the runtime. If nothing comes
//! within another timeout the next check convicts, late or not, so a link that died
//! while this process was stopped is still detected, one timeout after it woke.
//!
//! A write blocked on a full socket meets the same: its time limit runs out during the
//! stop, and the peer, which read on meanwhile, would be dropped for not reading.
//! [`within`] gives such a write one more limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A check this far past its due time ran in a process that was not running (timers
/// are due to the millisecond; the busiest benchmark runs them tens of milliseconds
/// late, not hundreds).
pub const LATE_CHECK: Duration = Duration::from_millis(500);

/// How long a task that checks silence apart from the one that reads (the consumer's
/// keepalive poller) waits, once it finds the peer silent, before it convicts: a
/// process stopped until just past its deadline (less than [`LATE_CHECK`] late) wakes
/// with the peer's frames waiting in the socket, and the checking task may run before
/// the reading one has stamped them (four of five 3.15-second stops of a consumer with
/// a 3-second timeout blamed a live provider). A link that is dead is convicted this
/// much later, well inside the bound of timeout plus interval. The provider reads and
/// checks in one task, reading first, and kept its sessions through the same stops.
pub const SILENCE_GRACE: Duration = Duration::from_millis(100);

/// What a silence check concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The peer was heard from within the timeout.
    Alive,
    /// Silent past the timeout, but the check ran `late` past its due time: this
    /// process was not running to hear the peer. Count the silence from now (the
    /// caller stamps now as its last sign of life) and ping.
    Excused {
        /// How far past its due time the check ran.
        late: Duration,
    },
    /// Silent for `silent`, past the timeout, while this process could have heard it.
    Silent {
        /// How long nothing has come.
        silent: Duration,
    },
}

/// One session's silence checks: remembers the excuse it gave, so that a silence is
/// excused at most once until the peer is heard from again.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout: Duration,
    /// When the last excuse was given; a frame after it earns the next one.
    excused_at: Option<Instant>,
}

impl Liveness {
    /// Checks against `timeout` of silence.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, excused_at: None }
    }

    /// Judges at `now` a check that was due at `due`, the peer last heard from at
    /// `last_heard`.
    pub fn check(&mut self, last_heard: Instant, due: Instant, now: Instant) -> Verdict {
        let silent = now.saturating_duration_since(last_heard);
        if silent < self.timeout {
            return Verdict::Alive;
        }
        let late = now.saturating_duration_since(due);
        let heard_since_excuse = self.excused_at.is_none_or(|at| last_heard > at);
        if late >= LATE_CHECK && heard_since_excuse {
            self.excused_at = Some(now);
            return Verdict::Excused { late };
        }
        Verdict::Silent { silent }
    }
}

/// When bytes last moved on one direction of a connection: stamped by the frame reader
/// or writer as each read or write moves any ([`crate::frame::FrameReader::report_progress`]),
/// read by whoever judges the peer's silence. A frame is the unit of meaning but not of
/// life: a batch of a refresh is one frame of up to 16 MiB, which a link of a few KB/s
/// takes longer than `keepalive.timeout` to carry, and judged by whole frames such a
/// link was a dead one. Both sides dropped the session again and again (a consumer
/// 50,000 entries behind at 20 KB/s never filled), each blaming the other.
#[derive(Debug)]
pub struct Progress {
    /// What the stamp counts from.
    epoch: Instant,
    /// Milliseconds from `epoch` to the last stamp.
    ms: AtomicU64,
}

impl Progress {
    /// Stamped now.
    pub fn new() -> Self {
        Self { epoch: Instant::now(), ms: AtomicU64::new(0) }
    }

    /// Stamps now: bytes moved, or the peer otherwise showed it is alive.
    pub fn mark(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The last stamp.
    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }

    /// How long since the last stamp.
    pub fn silent_for(&self) -> Duration {
        self.last().elapsed()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `work` for at most `limit`, a limit that a stop of this process does not use
/// up: a deadline met [`LATE_CHECK`] or more overdue gives `work` one more `limit`,
/// since the peer may have done its part while this process was not running. `None`
/// if the time ran out.
pub async fn within<F: std::future::Future>(limit: Duration, work: F) -> Option<F::Output> {
    within_moving(limit, &[], work).await
}

/// [`within`], for work that moves bytes and stamps one of `progress` as it does (a
/// frame written to a slow link), or whose peer shows otherwise that it is there: the
/// limit counts from the latest stamp, so the time runs out only once none has moved
/// for `limit`, however long the whole work takes.
pub async fn within_moving<F: std::future::Future>(
    limit: Duration,
    progress: &[&Progress],
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    // The same rule as a silence check, with the work's start (or the excuse, or the
    // last bytes moved) standing for the last sign of life.
    let mut liveness = Liveness::new(limit);
    let mut since = Instant::now();
    let last = |since: Instant| progress.iter().map(|p| p.last()).fold(since, Instant::max);
    loop {
        let deadline = last(since) + limit;
        tokio::select! {
            biased;
            out = &mut work => return Some(out),
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                match liveness.check(last(since), deadline, now) {
                    Verdict::Alive => {}
                    Verdict::Excused { .. } => since = now,
                    Verdict::Silent { .. } => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn at(ms: u64) -> Instant {
        // A fixed origin: only differences matter.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn a_check_on_time_convicts_a_silent_peer_and_spares_a_heard_one() {
        let mut l = Liveness::new(TIMEOUT);
        assert_eq!(l.check(at(1_000), at(4_000), at(3_500)), Verdict::Alive);
        assert_eq!(l.check(at(1_000), at(4_000), at(4_010)), Verdict::Silent { silent: Duration::from_millis(3_010) });
        // Late by less than LATE_CHECK is scheduling, not a stopped process.
        assert_eq!(l.check(at(1_000), at(4_000), at(4_400)), Verdict::Silent { silent: Duration::from_millis(3_400) });
    }

    #[test]
    fn a_late_check_excuses_the_silence_once_until_the_peer_is_heard_again() {
        let mut l = Liveness::new(TIMEOUT);
        // Stopped from 2 s to 9 s: the check due at 4 s runs at 9 s.
        assert_eq!(l.check(at(1_000), at(4_000), at(9_000)), Verdict::Excused { late: Duration::from_secs(5) });
        // The caller counted from 9 s: nothing came, and a check even later convicts.
        assert_eq!(l.check(at(9_000), at(12_000), at(13_000)), Verdict::Silent { silent: Duration::from_secs(4) });
        // A frame at 9.5 s: the next stop is excused again.
        assert_eq!(l.check(at(9_500), at(12_500), at(20_000)), Verdict::Excused { late: Duration::from_millis(7_500) });
    }

    /// The paused clock stands for a stopped process: `advance` moves it past a
    /// deadline in one step, and the timer fires late by the difference, as on waking.
    #[tokio::test(start_paused = true)]
    async fn a_limit_met_long_overdue_gives_the_work_one_more_limit() {
        let limit = Duration::from_secs(5);
        // Met on time (the paused clock moves to the deadline itself): the limit holds.
        assert_eq!(within(limit, std::future::pending::<()>()).await, None);

        // Met 3 s overdue: the work gets another limit, and finishes within it.
        let (done, finished) = tokio::sync::oneshot::channel::<u8>();
        let task = tokio::spawn(within(limit, finished));
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(8)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!task.is_finished(), "excused, still waiting");
        done.send(7).unwrap();
        assert_eq!(task.await.unwrap().map(Result::unwrap), Some(7));

        // Excused once: overdue again, it runs out.
        let task = tokio::spawn(within(limit, std::future::pending::<()>()));
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(8)).await;
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(task.await.unwrap(), None);
    }

    /// Work whose bytes keep moving is never out of time, however long it takes; work
    /// that stops moving runs out one limit after its last bytes.
    #[tokio::test(start_paused = true)]
    async fn moving_work_has_no_deadline_and_stopped_work_has_one_limit() {
        let progress = std::sync::Arc::new(Progress::new());
        let moving = progress.clone();
        let work = async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                moving.mark();
            }
            "done"
        };
        let limit = Duration::from_millis(500);
        assert_eq!(within_moving(limit, &[&progress], work).await, Some("done"), "4 s of moving work");
        let started = Instant::now();
        let stops = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            progress.mark();
            std::future::pending::<()>().await
        };
        assert_eq!(within_moving(limit, &[&progress], stops).await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(700), "one limit after the last bytes");
    }
}
