//! Warnings a stranger can cause, held to one a second.
//!
//! A connection over `max_connections`, or a handshake that fails (a wrong secret, bytes
//! that are not the protocol), each deserve a warning; but anyone who can reach the port
//! can cause them by the hundred thousand (a reconnect loop wrote 50 MB of log in 45 s),
//! burying everything else and filling the disk. So each kind logs at most once a
//! second, saying how many like it were held back since; what a flood's last second
//! held back is said a second later ([`Throttle::overdue`]), not left to the next
//! warning of its kind, which may come hours later or never.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled warning may be logged.
pub const EVERY: Duration = Duration::from_secs(1);

/// How many kinds of warning are told apart at once; past it, new kinds share one
/// allowance, so that a stranger varying its failures cannot grow the table without
/// bound. A full table first forgets the kinds that owe nothing (none held back) and
/// were last logged over [`EVERY`] ago, which would be logged at once anyway: the
/// table fills only while that many kinds are active, and recovers after.
const KINDS: usize = 256;

/// The kind the kinds past [`KINDS`] share.
const OTHER_KINDS: &str = "(other kinds)";

/// Throttled warnings, each kind on its own: a flood of one kind must not hide the
/// first of another. A kind is the whole text of the warning's cause (a handshake
/// failed with a bad secret for one agreement, an HTTP probe, a dropped connection), not
/// only its message ("handshake failed"): keyed on the message alone, a stranger's
/// probes hid a consumer's bad credentials, and a count held back from one kind was
/// printed on a line of another.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Per kind: when it was last logged, and how many were held back since.
    state: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    /// Whether to log a warning of kind `kind` at `now`: `Some(n)` with the number held
    /// back since it was last logged, or `None` to hold this one back too.
    pub fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.contains_key(kind) && state.len() >= KINDS {
            state.retain(|_, (last, held)| *held > 0 || now.duration_since(*last) < EVERY);
        }
        let kind = if state.contains_key(kind) || state.len() < KINDS { kind } else { OTHER_KINDS };
        match state.get_mut(kind) {
            Some((last, held)) if now.duration_since(*last) < EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                state.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }

    /// The kinds with warnings held back whose second is over at `now`, with their
    /// counts, each as if logged now: the caller logs them, so that a burst's count is
    /// told once it ends rather than with the next warning of its kind (or never). Call
    /// it every [`EVERY`].
    pub fn overdue(&self, now: Instant) -> Vec<(String, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<(String, u64)> = state
            .iter_mut()
            .filter(|(_, (last, held))| *held > 0 && now.duration_since(*last) >= EVERY)
            .map(|(kind, (last, held))| {
                *last = now;
                (kind.clone(), std::mem::take(held))
            })
            .collect();
        due.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_second_with_the_count_of_those_held_back() {
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit("a", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.admit("a", t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(t.admit("b", t0 + Duration::from_millis(600)), Some(0), "another message is its own");
        assert_eq!(t.admit("a", t0 + EVERY), Some(5));
        assert_eq!(t.admit("a", t0 + EVERY + Duration::from_millis(1)), None);
        assert_eq!(t.admit("a", t0 + EVERY * 3), Some(1));
    }

    /// The count a burst's last second held back is told a second later, once; the next
    /// warning of its kind then starts a count of its own.
    #[test]
    fn what_a_burst_held_back_is_told_when_its_second_is_over() {
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit("a", t0), Some(0));
        assert_eq!(t.admit("b", t0), Some(0));
        for i in 1..=3 {
            assert_eq!(t.admit("a", t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(t.overdue(t0 + Duration::from_millis(900)), vec![], "its second is not over");
        assert_eq!(t.overdue(t0 + EVERY), vec![("a".to_owned(), 3)], "b held nothing back");
        assert_eq!(t.overdue(t0 + EVERY * 3), vec![], "told once");
        assert_eq!(t.admit("a", t0 + EVERY + Duration::from_millis(500)), None, "told as if logged then");
        assert_eq!(t.admit("a", t0 + EVERY * 2), Some(1));
    }

    /// Kinds past the table's size share one allowance.
    #[test]
    fn kinds_past_the_limit_share_one_allowance() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..KINDS {
            assert_eq!(t.admit(&format!("kind {i}"), t0), Some(0));
        }
        assert_eq!(t.admit("one more", t0), Some(0));
        assert_eq!(t.admit("and another", t0), None, "shares the allowance of the one before");
        assert_eq!(t.admit("kind 7", t0 + EVERY), Some(0), "known kinds keep their own");
    }

    /// A flood of kinds seen once fills the table only while it lasts: a second later
    /// those that owe nothing are forgotten, and a new kind is its own again (it used to
    /// share the one allowance for the rest of the process's life).
    #[test]
    fn a_full_table_forgets_the_kinds_that_owe_nothing_once_their_second_is_over() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..KINDS {
            assert_eq!(t.admit(&format!("junk {i}"), t0), Some(0));
        }
        assert_eq!(t.admit("junk 3", t0), None, "held back: owes one");
        assert_eq!(t.admit("bad credentials", t0), Some(0), "the table is full: shares the other kinds' allowance");
        assert_eq!(t.admit("bad credentials again", t0), None);
        let later = t0 + EVERY;
        assert_eq!(t.admit("bad credentials", later), Some(0), "its own kind again");
        assert_eq!(t.admit("junk 3", later), Some(1), "a kind that owed a count kept it");
    }
}
