//! A watch on a certificate in use: a warning in the log when the certificate enters its
//! notice of expiry and when it expires, and again once a day while either lasts.
//!
//! Why: a process runs for months, and a certificate good when it was last looked at
//! passed its notice and its end with nothing said unless someone ran `status`; the
//! first sign was TLS consumers refusing it. Alerting that reads the log now sees it
//! ahead, as it sees the processes' other warnings. The provider watches the certificate
//! it serves (start and reload set it), each consumer agreement the one its provider
//! presented last; what is watched says its own words ([`Watched::warning`]).
//!
//! Whoever sets the certificate watched says its warning then, if it has one (the
//! provider's start and reload, a consumer's session as it meets a new certificate): the
//! watch does not say it again until the next turn or the next day.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::certificate::{Stage, Validity};

/// How often a warning that still holds is said again: a day, so a log rotated or read
/// once a day has it, and an alert that fired once and was silenced fires again.
pub const REMINDER: Duration = Duration::from_secs(86_400);

/// The longest the watch sleeps before it reads the wall clock again: its sleeps run on
/// the monotonic clock, which a suspended machine or a clock set by hand leaves behind.
const LOOK_AGAIN: Duration = Duration::from_secs(3_600);

/// Past each turn of the certificate's stage, so that the watch wakes on the far side
/// of it ([`Validity::stage`] compares strictly at its end).
const PAST_TURN: Duration = Duration::from_secs(1);

/// A certificate watched: its validity, and what to say of it at some instant.
pub trait Watched {
    /// When the certificate is valid.
    fn validity(&self) -> Validity;
    /// The warning of the certificate's stage at `now` ([`Validity::stage`]); `None`
    /// while it is valid for longer than its notice.
    fn warning(&self, now: SystemTime) -> Option<String>;
}

/// Says (through `say`) the warnings of the certificate `served` holds as its stage
/// changes and each [`REMINDER`] while it is not valid, reading the wall clock from
/// `now`, until the sender is gone; its owner drops it to stop it sooner. `None` (TLS
/// off, or a certificate whose dates do not read) says nothing.
pub async fn watch<W: Watched>(
    mut served: watch::Receiver<Option<W>>,
    now: impl Fn() -> SystemTime,
    mut say: impl FnMut(&str),
) {
    let mut said = Said::at(served.borrow_and_update().as_ref(), now());
    loop {
        // A certificate set (a reload's) as the sleep ended: what its setter said is the
        // new certificate's, not a turn of the old one's.
        match served.has_changed() {
            Ok(true) => said = Said::at(served.borrow_and_update().as_ref(), now()),
            Ok(false) => {}
            Err(_) => return,
        }
        let sleep = match served.borrow().as_ref() {
            Some(certificate) => {
                let now = now();
                if let Some(warning) = said.due(certificate, now) {
                    say(&warning);
                }
                said.next_look(certificate, now)
            }
            None => LOOK_AGAIN,
        };
        tokio::select! {
            changed = served.changed() => {
                if changed.is_err() {
                    return;
                }
                // Its setter said its warning, if it had one.
                said = Said::at(served.borrow_and_update().as_ref(), now());
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The stage last said of the certificate watched, and when.
#[derive(Debug)]
struct Said {
    stage: Stage,
    at: SystemTime,
}

impl Said {
    /// What was said of `served` at `now` as it was set.
    fn at(served: Option<&impl Watched>, now: SystemTime) -> Self {
        Self { stage: served.map_or(Stage::Valid, |s| s.validity().stage(now)), at: now }
    }

    /// The warning to say now, if the stage turned since it was last said, or a day has
    /// passed since with the certificate still not valid.
    fn due(&mut self, served: &impl Watched, now: SystemTime) -> Option<String> {
        if now < self.at {
            // The clock was set back: the day counts from here.
            self.at = now;
        }
        let stage = served.validity().stage(now);
        let reminder = stage != Stage::Valid && now.duration_since(self.at).is_ok_and(|d| d >= REMINDER);
        if stage == self.stage && !reminder {
            return None;
        }
        self.stage = stage;
        self.at = now;
        served.warning(now)
    }

    /// How long until the stage may turn or a reminder falls due, at most
    /// [`LOOK_AGAIN`].
    fn next_look(&self, served: &impl Watched, now: SystemTime) -> Duration {
        let turns = served.validity().turns().map(|t| t + PAST_TURN);
        let reminder = (self.stage != Stage::Valid).then(|| self.at + REMINDER);
        turns
            .into_iter()
            .chain(reminder)
            .filter_map(|t| t.duration_since(now).ok())
            .filter(|d| !d.is_zero())
            .fold(LOOK_AGAIN, Duration::min)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// Noon on 2026-12-06, the wall clock's time when a test's tokio clock starts.
    fn epoch() -> SystemTime {
        humantime::parse_rfc3339("2026-12-06T12:00:00Z").unwrap()
    }

    /// A certificate valid from 100 days before the epoch until `ends_after` it: a
    /// lifetime over 42 days, so its notice is the fortnight of [`EXPIRY_NOTICE`].
    ///
    /// [`EXPIRY_NOTICE`]: crate::certificate::EXPIRY_NOTICE
    fn served(ends_after: Duration) -> Served {
        Served(Validity { not_before: epoch() - 100 * DAY, not_after: epoch() + ends_after })
    }

    /// A certificate watched, whose warnings say its stage and dates in a few words.
    #[derive(Debug, Clone, PartialEq)]
    struct Served(Validity);

    impl Watched for Served {
        fn validity(&self) -> Validity {
            self.0
        }

        fn warning(&self, now: SystemTime) -> Option<String> {
            let end = humantime::format_rfc3339_seconds(self.0.not_after);
            match self.0.stage(now) {
                Stage::Valid => None,
                Stage::Expiring => Some(format!("expires at {end} (in {} days)", self.0.days_left(now))),
                Stage::Expired => Some(format!("expired at {end}")),
                other => Some(format!("{other:?}")),
            }
        }
    }

    /// A watch on a paused clock, whose wall clock is the epoch plus the tokio time
    /// elapsed plus whatever the test puts in `jump` (a clock set forward).
    struct Watching {
        /// What start and reloads serve.
        served: watch::Sender<Option<Served>>,
        /// Everything said, with the time on the tokio clock since the start.
        log: Arc<Mutex<Vec<(Duration, String)>>>,
        jump: Arc<Mutex<Duration>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Watching {
        fn start(first: Option<Served>) -> Self {
            let (served, rx) = watch::channel(first);
            let log: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
            let jump = Arc::new(Mutex::new(Duration::ZERO));
            let begun = tokio::time::Instant::now();
            let (said, jumped) = (log.clone(), jump.clone());
            let task = tokio::spawn(watch(
                rx,
                move || epoch() + begun.elapsed() + *jumped.lock().unwrap(),
                move |w| said.lock().unwrap().push((begun.elapsed(), w.to_owned())),
            ));
            Self { served, log, jump, task }
        }

        fn said(&self) -> Vec<(Duration, String)> {
            self.log.lock().unwrap().clone()
        }

        /// Drops the sender, which ends the watch.
        async fn stop(self) {
            drop(self.served);
            self.task.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_served_certificate_is_warned_of_as_its_notice_begins_daily_through_it_and_as_it_expires() {
        // Its notice begins 6 days in, its end is 20 days in.
        let w = Watching::start(Some(served(20 * DAY)));
        tokio::time::sleep(6 * DAY).await;
        assert_eq!(w.said(), [], "said before the notice");
        tokio::time::sleep(DAY / 2).await;
        let first = w.said();
        assert_eq!(first.len(), 1, "{first:?}");
        let (when, warning) = &first[0];
        assert!(*when > 6 * DAY && *when <= 6 * DAY + Duration::from_secs(60), "said {when:?} in, not as it began");
        assert_eq!(warning, "expires at 2026-12-26T12:00:00Z (in 14 days)");

        tokio::time::sleep(15 * DAY).await;
        let all = w.said();
        // The notice's 14 days: the first warning and a reminder each day after it; then
        // the expiry as it happens.
        let (expiring, expired): (Vec<_>, Vec<_>) = all.iter().partition(|(_, said)| said.contains("expires at "));
        assert_eq!(expiring.len(), 14, "{all:#?}");
        for pair in expiring.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, REMINDER, "{all:#?}");
        }
        assert!(expiring[13].1.contains("(in 1 days)"), "{}", expiring[13].1);
        let (when, first_expired) = &expired[0];
        assert!(*when > 20 * DAY && *when <= 20 * DAY + Duration::from_secs(60), "said {when:?} in");
        assert!(first_expired.contains("expired at 2026-12-26T12:00:00Z"), "{first_expired}");
        // And daily while it stays expired.
        assert_eq!(expired.len(), 2, "{all:#?}");
        assert_eq!(expired[1].0 - expired[0].0, REMINDER);
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_set_anew_replaces_the_one_watched_and_what_its_setter_said_is_not_said_again_at_once() {
        // In its notice already: start said so; the watch says it again a day later.
        let w = Watching::start(Some(served(10 * DAY)));
        tokio::time::sleep(DAY / 2).await;
        assert_eq!(w.said(), [], "start's warning said again at once");
        tokio::time::sleep(DAY).await;
        assert_eq!(w.said().len(), 1, "{:?}", w.said());
        assert_eq!(w.said()[0].0, DAY);

        // Renewed for a year and reloaded: nothing more, past the old one's end too.
        w.served.send_replace(Some(served(365 * DAY)));
        tokio::time::sleep(30 * DAY).await;
        assert_eq!(w.said().len(), 1, "{:?}", w.said());

        // A reload to a certificate already expiring, then TLS turned off: the reload
        // said the first warning, and with TLS off there is nothing to watch.
        w.served.send_replace(Some(served(40 * DAY)));
        tokio::time::sleep(DAY / 2).await;
        assert_eq!(w.said().len(), 1, "{:?}", w.said());
        w.served.send_replace(None);
        tokio::time::sleep(30 * DAY).await;
        assert_eq!(w.said().len(), 1, "{:?}", w.said());
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_set_forward_is_noticed_within_the_hour() {
        // A machine resumed after a month, or its clock put right: the monotonic clock
        // the watch sleeps on moved by nothing, and the certificate expired meanwhile.
        let w = Watching::start(Some(served(20 * DAY)));
        tokio::time::sleep(Duration::from_secs(60)).await;
        *w.jump.lock().unwrap() = 30 * DAY;
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        let all = w.said();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].1.contains("expired at"), "{}", all[0].1);
        w.stop().await;
    }
}
