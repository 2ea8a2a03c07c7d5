//! Retry schedules: how long an agreement's supervisor waits before each reconnect
//! (SPEC §4). A schedule is a list of steps, each a delay and how many times it is used,
//! the last of which may repeat forever, written as in OpenLDAP's syncrepl `retry`:
//!
//! ```
//! use std::time::Duration;
//! use tether_consumer::retry::RetrySchedule;
//!
//! let schedule = RetrySchedule::parse(&["1s x5", "10s x10", "1m forever"]).unwrap();
//! assert_eq!(schedule.delay_for(0), Some(Duration::from_secs(1))); // first retry
//! assert_eq!(schedule.delay_for(5), Some(Duration::from_secs(10)));
//! assert_eq!(schedule.delay_for(1_000), Some(Duration::from_secs(60)));
//! assert_eq!(schedule.longest_delay(), Duration::from_secs(60));
//! ```
//!
//! The schedule is pure: it maps an attempt number to a delay. The supervisor keeps the
//! attempt count (and resets it after a healthy minute), draws the randomness for
//! [`jitter`], and owns the timer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The default schedule, in config syntax: quick retries for a blip, slower ones for an
/// outage, then once a minute for as long as it takes.
pub const DEFAULT_RETRY: [&str; 3] = ["1s x5", "10s x10", "1m forever"];

/// Jitter spreads each delay uniformly over ±this fraction, so consumers that lost the
/// same provider at the same moment do not reconnect in lockstep.
pub const JITTER_FRACTION: f64 = 0.2;

/// The shortest delay of a step: each attempt is a connection and a handshake, on both
/// sides. `"1ns forever"`, taken as greater than zero, reconnected in a tight loop (some
/// 900 attempts a second against a provider that was down, each logged), as fast
/// against one refusing the credentials; the same floor as a poll's `interval`.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// How many times a step's delay is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repeat {
    /// This many times (at least 1), then the next step.
    Times(u32),
    /// For every remaining attempt; only the last step may say so.
    Forever,
}

/// One step of a schedule: `"10s x5"` or `"1m forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryStep {
    /// Wait before each attempt of this step; at least [`MIN_RETRY_DELAY`].
    delay: Duration,
    /// How many attempts use this delay.
    repeat: Repeat,
}

/// Why one step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Not `<delay> x<count>` nor `<delay> forever`.
    #[error("expected \"<delay> x<count>\" or \"<delay> forever\", as \"10s x5\"")]
    Syntax,
    /// The delay is not a humantime duration of at most 100 years (the reason names it).
    #[error("{reason}")]
    Delay {
        /// The delay as written.
        text: String,
        /// What humantime said.
        reason: String,
    },
    /// A delay below [`MIN_RETRY_DELAY`] (zero among them) would reconnect in a tight loop.
    #[error(
        "delay {} is below the minimum of {}: each attempt is a connection and a handshake",
        humantime::format_duration(*.0),
        humantime::format_duration(MIN_RETRY_DELAY)
    )]
    TooShort(Duration),
    /// The count is not `x` followed by a whole number.
    #[error("invalid count {0:?}: expected x followed by a whole number, as x5")]
    Count(String),
    /// `x0`: a step that is never used.
    #[error("count must be at least 1")]
    ZeroCount,
    /// A `forever` step followed by another step, which could never be reached.
    #[error("only the last step may repeat forever")]
    ForeverNotLast,
}

/// Why a schedule was refused; a step error names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// No steps at all: the agreement could never retry.
    #[error("retry schedule is empty: give at least one step, as [\"1m forever\"]")]
    Empty,
    /// Step `index` (0-based) is refused.
    #[error("retry step {index} ({text:?}): {reason}")]
    Step {
        /// 0-based position of the step in the list.
        index: usize,
        /// The step as written.
        text: String,
        /// What is wrong with it.
        reason: StepError,
    },
}

impl RetryStep {
    /// A step of `delay` used as `repeat` says; refuses a delay below [`MIN_RETRY_DELAY`]
    /// or `Times(0)`.
    pub fn new(delay: Duration, repeat: Repeat) -> Result<Self, StepError> {
        if delay < MIN_RETRY_DELAY {
            return Err(StepError::TooShort(delay));
        }
        if repeat == Repeat::Times(0) {
            return Err(StepError::ZeroCount);
        }
        Ok(Self { delay, repeat })
    }

    /// The wait before each attempt of this step.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// How many attempts use this delay.
    pub fn repeat(&self) -> Repeat {
        self.repeat
    }

    /// Whether this step repeats forever.
    pub fn is_forever(&self) -> bool {
        self.repeat == Repeat::Forever
    }
}

impl FromStr for RetryStep {
    type Err = StepError;

    /// `<delay> x<count>` or `<delay> forever`; the delay is humantime and may itself
    /// contain spaces (`"1m 30s x3"`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (delay_text, count_text) = text.trim().rsplit_once(char::is_whitespace).ok_or(StepError::Syntax)?;
        let delay_text = delay_text.trim();
        let delay = tether_config::parse_duration(delay_text)
            .map_err(|reason| StepError::Delay { text: delay_text.to_owned(), reason })?;
        let repeat = if count_text == "forever" {
            Repeat::Forever
        } else {
            let count = count_text
                .strip_prefix('x')
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| StepError::Count(count_text.to_owned()))?;
            Repeat::Times(count)
        };
        Self::new(delay, repeat)
    }
}

impl fmt::Display for RetryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.repeat {
            Repeat::Times(n) => write!(f, "{} x{n}", humantime::format_duration(self.delay)),
            Repeat::Forever => write!(f, "{} forever", humantime::format_duration(self.delay)),
        }
    }
}

/// A validated retry schedule: at least one step, `forever` only on the last.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetrySchedule {
    /// The steps in order; never empty.
    steps: Vec<RetryStep>,
}

impl RetrySchedule {
    /// A schedule of `steps`; refuses an empty list and a `forever` step that is not last.
    pub fn new(steps: Vec<RetryStep>) -> Result<Self, RetryError> {
        if steps.is_empty() {
            return Err(RetryError::Empty);
        }
        if let Some(index) = steps.iter().position(RetryStep::is_forever).filter(|&i| i + 1 < steps.len()) {
            return Err(RetryError::Step { index, text: steps[index].to_string(), reason: StepError::ForeverNotLast });
        }
        Ok(Self { steps })
    }

    /// Parses steps written as in the config file.
    pub fn parse<S: AsRef<str>>(steps: &[S]) -> Result<Self, RetryError> {
        let steps = steps
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.as_ref();
                text.parse().map_err(|reason| RetryError::Step { index, text: text.to_owned(), reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(steps)
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[RetryStep] {
        &self.steps
    }

    /// The delay before retry number `attempt`, counted from 0 (the first retry after
    /// a failure), or `None` when a schedule without a `forever` step is used up and
    /// the agreement should stop retrying.
    pub fn delay_for(&self, attempt: u32) -> Option<Duration> {
        let mut remaining = attempt;
        for step in &self.steps {
            match step.repeat {
                Repeat::Forever => return Some(step.delay),
                Repeat::Times(n) if remaining < n => return Some(step.delay),
                Repeat::Times(n) => remaining -= n,
            }
        }
        None
    }

    /// [`delay_for`](Self::delay_for) with [`jitter`] applied using `sample`.
    pub fn jittered_delay_for(&self, attempt: u32, sample: f64) -> Option<Duration> {
        self.delay_for(attempt).map(|delay| jitter(delay, sample))
    }

    /// The longest delay of any step: what a rejection that retrying soon cannot fix
    /// (bad credentials, version mismatch) waits.
    pub fn longest_delay(&self) -> Duration {
        self.steps.iter().map(|s| s.delay).max().unwrap_or_default()
    }

    /// How many retries the schedule allows in all, or `None` if it ends with `forever`.
    pub fn max_attempts(&self) -> Option<u64> {
        self.steps.iter().try_fold(0u64, |sum, step| match step.repeat {
            Repeat::Times(n) => Some(sum + u64::from(n)),
            Repeat::Forever => None,
        })
    }
}

/// `delay` scaled by a factor spread uniformly over `1 ± JITTER_FRACTION`: `sample` is
/// a uniform random number in `[0, 1]` supplied by the caller (the supervisor passes
/// `rand::random()`; tests pass fixed values). `0` gives the shortest delay, `1` the
/// longest; values outside `[0, 1]` are clamped and NaN counts as `0.5`.
pub fn jitter(delay: Duration, sample: f64) -> Duration {
    let sample = if sample.is_nan() { 0.5 } else { sample.clamp(0.0, 1.0) };
    let factor = 1.0 - JITTER_FRACTION + 2.0 * JITTER_FRACTION * sample;
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Where the supervisor's jitter samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The thread's random generator (production: consumers restarted together spread
    /// out).
    #[default]
    Entropy,
    /// A fixed sequence from this seed (the deterministic simulation: a seed replays
    /// the same delays).
    Seeded(u64),
}

impl Jitter {
    /// The next uniform sample in `[0, 1)` for [`jitter`].
    pub fn sample(&mut self) -> f64 {
        match self {
            Jitter::Entropy => rand::random(),
            Jitter::Seeded(state) => {
                // splitmix64: tiny, and good enough to spread delays.
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 11) as f64 / (1u64 << 53) as f64
            }
        }
    }
}

impl Default for RetrySchedule {
    /// [`DEFAULT_RETRY`]: `["1s x5", "10s x10", "1m forever"]`.
    fn default() -> Self {
        Self {
            steps: vec![
                RetryStep { delay: Duration::from_secs(1), repeat: Repeat::Times(5) },
                RetryStep { delay: Duration::from_secs(10), repeat: Repeat::Times(10) },
                RetryStep { delay: Duration::from_secs(60), repeat: Repeat::Forever },
            ],
        }
    }
}

impl fmt::Display for RetrySchedule {
    /// The config form: `["1s x5", "10s x10", "1m forever"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{step}\"")?;
        }
        f.write_str("]")
    }
}

/// Deserializes from a list of step strings. Each step's error is raised while that
/// element is read, so a config error names it exactly (`agreement[1].retry[2]`),
/// including a step that follows a `forever` step.
impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ScheduleVisitor)
    }
}

/// Reads the list of steps.
struct ScheduleVisitor;

impl<'de> Visitor<'de> for ScheduleVisitor {
    type Value = RetrySchedule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of retry steps, as [\"1s x5\", \"1m forever\"]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut steps: Vec<RetryStep> = Vec::new();
        loop {
            let previous = steps.last().copied();
            match seq.next_element_seed(StepSeed { previous })? {
                Some(step) => steps.push(step),
                None => break,
            }
        }
        RetrySchedule::new(steps).map_err(de::Error::custom)
    }
}

/// Reads one step, knowing the step before it.
struct StepSeed {
    /// The previous step, to refuse anything after a `forever`.
    previous: Option<RetryStep>,
}

impl<'de> DeserializeSeed<'de> for StepSeed {
    type Value = RetryStep;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for StepSeed {
    type Value = RetryStep;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a retry step, as \"10s x5\" or \"1m forever\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let step: RetryStep = v.parse().map_err(|e| E::custom(format!("invalid retry step {v:?}: {e}")))?;
        match self.previous {
            Some(previous) if previous.is_forever() => {
                Err(E::custom(format!("retry step {v:?} follows \"{previous}\": {}", StepError::ForeverNotLast)))
            }
            _ => Ok(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn step_parsing_table() {
        let good: [(&str, u64, Repeat); 6] = [
            ("1s x5", 1, Repeat::Times(5)),
            ("10s x10", 10, Repeat::Times(10)),
            ("1m forever", 60, Repeat::Forever),
            ("1m 30s x3", 90, Repeat::Times(3)),
            ("  2h   x1 ", 7200, Repeat::Times(1)),
            ("1d forever", 86_400, Repeat::Forever),
        ];
        for (text, secs, repeat) in good {
            let step: RetryStep = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!((step.delay(), step.repeat()), (S(secs), repeat), "{text:?}");
        }
        let bad: [(&str, StepError); 10] = [
            ("", StepError::Syntax),
            ("1s", StepError::Syntax),
            ("1s x0", StepError::ZeroCount),
            ("0s x5", StepError::TooShort(Duration::ZERO)),
            ("1s 5", StepError::Count("5".into())),
            ("1s x-1", StepError::Count("x-1".into())),
            ("1s x99999999999", StepError::Count("x99999999999".into())),
            ("1s always", StepError::Count("always".into())),
            (
                "soon x5",
                StepError::Delay {
                    text: "soon".into(),
                    reason: "invalid duration \"soon\": expected number at 0".into(),
                },
            ),
            (
                "1000000y x1",
                StepError::Delay {
                    text: "1000000y".into(),
                    reason: "invalid duration \"1000000y\": longer than 100 years".into(),
                },
            ),
        ];
        for (text, want) in bad {
            assert_eq!(text.parse::<RetryStep>(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn schedule_errors_name_the_step() {
        let e = RetrySchedule::parse(&["1s x5", "1m forever", "10s x3"]).unwrap_err();
        assert_eq!(e.to_string(), "retry step 1 (\"1m forever\"): only the last step may repeat forever");
        let e = RetrySchedule::parse(&["1s x5", "10s x10", "1m forevr"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "retry step 2 (\"1m forevr\"): invalid count \"forevr\": expected x followed by a whole number, as x5"
        );
        assert_eq!(RetrySchedule::parse::<&str>(&[]), Err(RetryError::Empty));
    }

    #[test]
    fn delay_sequence() {
        let schedule = RetrySchedule::parse(&DEFAULT_RETRY).unwrap();
        assert_eq!(schedule, RetrySchedule::default());
        let delays: Vec<_> = (0..17).map(|a| schedule.delay_for(a)).collect();
        let mut want = vec![Some(S(1)); 5];
        want.extend([Some(S(10)); 10]);
        want.extend([Some(S(60)); 2]);
        assert_eq!(delays, want);
        assert_eq!(schedule.delay_for(u32::MAX), Some(S(60)));
        assert_eq!(schedule.longest_delay(), S(60));
        assert_eq!(schedule.max_attempts(), None);
        assert_eq!(schedule.to_string(), "[\"1s x5\", \"10s x10\", \"1m forever\"]");
    }

    #[test]
    fn finite_schedule_is_exhausted() {
        let schedule = RetrySchedule::parse(&["30s x2", "5s x1"]).unwrap();
        let delays: Vec<_> = (0..5).map(|a| schedule.delay_for(a)).collect();
        assert_eq!(delays, [Some(S(30)), Some(S(30)), Some(S(5)), None, None]);
        assert_eq!(schedule.delay_for(u32::MAX), None);
        assert_eq!(schedule.longest_delay(), S(30));
        assert_eq!(schedule.max_attempts(), Some(3));
        assert_eq!(schedule.jittered_delay_for(3, 0.5), None);
    }

    #[test]
    fn seeded_jitter_replays_and_stays_in_range() {
        let (mut a, mut b) = (Jitter::Seeded(7), Jitter::Seeded(7));
        let xs: Vec<f64> = (0..100).map(|_| a.sample()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.sample()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(xs[0], xs[1]);
        assert_ne!(Jitter::Seeded(8).sample(), xs[0]);
    }

    #[test]
    fn jitter_bounds() {
        let base = S(10);
        assert_eq!(jitter(base, 0.0), Duration::from_millis(8_000));
        assert_eq!(jitter(base, 0.5), base);
        assert_eq!(jitter(base, 1.0), Duration::from_millis(12_000));
        assert_eq!(jitter(base, -3.0), jitter(base, 0.0));
        assert_eq!(jitter(base, 7.0), jitter(base, 1.0));
        assert_eq!(jitter(base, f64::NAN), base);
        assert_eq!(jitter(Duration::MAX, 1.0), Duration::MAX);
        let low = base.mul_f64(1.0 - JITTER_FRACTION);
        let high = base.mul_f64(1.0 + JITTER_FRACTION);
        for i in 0..=1000 {
            let d = jitter(base, f64::from(i) / 1000.0);
            assert!(low <= d && d <= high, "{d:?} out of [{low:?}, {high:?}]");
        }
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.jittered_delay_for(0, 1.0), Some(Duration::from_millis(1_200)));
    }
}
