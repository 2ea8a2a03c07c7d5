//! The keepalive poller: pings the provider while idle and declares
//! `keepalive-timeout` when it has been silent too long, whatever the reader or the
//! applier is doing.

use std::sync::Arc;
use std::time::Duration;

use tether_protocol::connection::{BoxedWrite, MessageWriter};
use tether_protocol::liveness::{Liveness, Progress, Verdict};
use tether_protocol::message::Message;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The provider's silence as this session's checks count it (the keepalive poller's
/// and the idle timeout's): from the last bytes it sent, or from the moment a late check
/// excused the silence, this process having been stopped. The excuse is kept apart from
/// the bytes because the status reads those too: a provider excused is not a provider
/// heard, and stamped as one, a replica whose link died while this process was stopped
/// read `lag_seconds` 0 after it woke, and its staleness counted from the wake-up once
/// the session had ended.
pub(super) struct Silence {
    /// Stamped as bytes arrive from the provider (shared with the status).
    inbound: Arc<Progress>,
    /// Stamped when a late check counts the silence afresh.
    excused: Progress,
}

impl Silence {
    pub(super) fn new(inbound: Arc<Progress>) -> Self {
        Self { inbound, excused: Progress::new() }
    }

    /// What the silence counts from.
    pub(super) fn last(&self) -> Instant {
        self.inbound.last().max(self.excused.last())
    }

    pub(super) fn silent_for(&self) -> Duration {
        self.last().elapsed()
    }
}

/// Pings every `interval`; cancels `timed_out` once `timeout` has passed without
/// inbound bytes. The silence is checked when it would reach `timeout`, not at the next
/// ping: a dead link is declared at `timeout` after the last frame, which came at most
/// `interval` (and a round trip) before the link died, instead of up to a whole
/// `interval` later. At the ping ticks alone, the benchmark's black hole was detected
/// at 5.99 to 6.00 s against a bound of 6. A check that runs long after it was due
/// (this process was stopped) counts the silence afresh and pings instead, once (see
/// [`tether_protocol::liveness`]).
pub(super) async fn keepalive_poller(
    writer: Arc<Mutex<MessageWriter<BoxedWrite>>>,
    silence: Arc<Silence>,
    interval: Duration,
    timeout: Duration,
    timed_out: CancellationToken,
    done: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // The ping being written, polled alongside the deadline so that the check is never
    // late for it, and never cut short by it (a frame cut in half would garble the
    // stream of a link that is merely slow).
    let mut ping: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = None;
    let mut liveness = Liveness::new(timeout);
    loop {
        let deadline = silence.last() + timeout;
        tokio::select! {
            biased;
            _ = done.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                let last_heard = silence.last();
                match liveness.check(last_heard, deadline, Instant::now()) {
                    Verdict::Alive => {}
                    Verdict::Excused { late } => {
                        info!(late_ms = late.as_millis() as u64, "keepalive check ran late: this process was not running, so the provider's silence is counted afresh");
                        silence.excused.mark();
                        tick.reset_immediately();
                    }
                    Verdict::Silent { silent } => {
                        // The reader may not have run since this process last did: one
                        // look after it has had the chance (see `SILENCE_GRACE`).
                        tokio::select! {
                            _ = done.cancelled() => return,
                            () = tokio::time::sleep(tether_protocol::liveness::SILENCE_GRACE) => {}
                        }
                        if silence.last() > last_heard {
                            continue;
                        }
                        warn!(silent_ms = silent.as_millis() as u64, "provider silent past keepalive timeout");
                        timed_out.cancel();
                        return;
                    }
                }
            }
            () = async {
                if let Some(p) = ping.as_mut() {
                    p.await;
                }
            }, if ping.is_some() => ping = None,
            _ = tick.tick(), if ping.is_none() => {
                seq += 1;
                // Skipped while the applier writes; a blocked write is itself a sign of
                // a dead path, and the silence check decides.
                if let Ok(mut w) = writer.clone().try_lock_owned() {
                    ping = Some(Box::pin(async move {
                        let _ = tokio::time::timeout(interval, w.send(&Message::Ping { seq })).await;
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tether_protocol::connection;
    use tether_protocol::liveness::SILENCE_GRACE;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(3);

    /// A poller pinging over an in-memory pipe and judging the silence stamped on the
    /// returned progress (as the reader stamps it); the first token is cancelled when it
    /// convicts the provider, the second ends it. The pipe's other end keeps it open.
    fn polling() -> (Arc<Progress>, CancellationToken, CancellationToken, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (_, writer) = connection::boxed(ours);
        let inbound = Arc::new(Progress::new());
        let silence = Arc::new(Silence::new(inbound.clone()));
        let (timed_out, done) = (CancellationToken::new(), CancellationToken::new());
        let poller =
            keepalive_poller(Arc::new(Mutex::new(writer)), silence, INTERVAL, TIMEOUT, timed_out.clone(), done.clone());
        tokio::spawn(poller);
        (inbound, timed_out, done, theirs)
    }

    /// A check that finds the provider silent looks once more, `SILENCE_GRACE` later,
    /// before it convicts: a consumer stopped until just past its deadline wakes with the
    /// provider's frames in its socket, and the poller may run before the reader stamps
    /// them. Convicted at once, a live provider was blamed after four of five such stops.
    #[tokio::test(start_paused = true)]
    async fn a_provider_heard_just_after_its_deadline_is_not_convicted() {
        let start = Instant::now();
        let (inbound, timed_out, done, _theirs) = polling();
        // The reader stamps a frame after the check found the provider silent.
        tokio::time::sleep_until(start + TIMEOUT + SILENCE_GRACE / 2).await;
        inbound.mark();
        tokio::time::sleep(SILENCE_GRACE * 2).await;
        assert!(
            !timed_out.is_cancelled(),
            "convicted by {:?}, though heard at {:?}",
            start.elapsed(),
            TIMEOUT + SILENCE_GRACE / 2
        );
        // Silent from then on: convicted one timeout (and the second look) after that frame.
        timed_out.cancelled().await;
        assert_eq!(start.elapsed(), TIMEOUT + SILENCE_GRACE / 2 + TIMEOUT + SILENCE_GRACE);
        done.cancel();
    }

    /// A check that runs long overdue (this process was stopped) counts the silence afresh
    /// from now, once: a provider that answers within a timeout of the wake-up is not
    /// blamed, and one that stays silent is convicted a timeout after it. The paused
    /// clock's `advance` stands for the stop: the poller's timer fires late by the gap.
    #[tokio::test(start_paused = true)]
    async fn a_provider_silent_while_this_process_was_stopped_is_heard_out_for_a_timeout_after_the_wake() {
        let start = Instant::now();
        let (inbound, timed_out, done, _theirs) = polling();
        tokio::task::yield_now().await;
        let stopped = Duration::from_secs(10);
        tokio::time::advance(stopped).await;
        // The provider's answer to the ping sent on waking comes well within a timeout.
        tokio::time::sleep(SILENCE_GRACE * 2).await;
        assert!(
            !timed_out.is_cancelled(),
            "convicted within {:?} of waking, before the provider could answer",
            start.elapsed() - stopped
        );
        inbound.mark();
        let answered = start.elapsed();
        tokio::time::sleep(TIMEOUT / 2).await;
        assert!(!timed_out.is_cancelled(), "convicted though heard {:?} before", start.elapsed() - answered);
        // Silent from then on: convicted one timeout after that answer, late or not.
        timed_out.cancelled().await;
        assert_eq!(start.elapsed(), answered + TIMEOUT + SILENCE_GRACE);
        done.cancel();
    }
}
