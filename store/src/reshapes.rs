//! What a consumer's search printed page by page must check at its end: whether
//! entries it could have missed or printed twice were added, deleted or renamed
//! meanwhile, or a refresh swapped in a new copy.
//!
//! Every replica counts such changes ([`Reshapes`]). A count alone is replica-wide,
//! though: a search of a quiet branch of a replica busy elsewhere ended with exit status
//! 1 for nothing (41 of 150 in a walkthrough, against 0 of the provider's, which reads
//! its changelog). So while a search is being printed, it is a [`ReshapeWatch`], and
//! applies also note the DN keys they reshaped, a bounded number of them: at its end the
//! search counts only those within its base and scope ([`ReshapeWatch::since`]). With
//! no search running nothing is noted, so the apply path pays one comparison for it;
//! past [`MAX_NOTED`] changes the oldest go and a search they would have reached falls
//! back to the count, which errs only towards exit status 1.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tether_protocol::SearchSpec;

use crate::entry_set::DnKey;

/// How many reshaped keys a replica keeps while a search of it is printed: enough for
/// a search of a large replica under a steady stream of adds and deletes (a page of 500
/// entries is read in milliseconds), few enough that a replica bursting with changes
/// under a slow reader holds about a megabyte for it.
pub const MAX_NOTED: usize = 10_000;

/// How often a replica's active entries changed shape since the store was opened, as
/// [`crate::Replica::reshapes`] reads it: a search printed page by page between two
/// equal readings holds each entry once, as it was at some moment of the search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reshapes {
    /// Entries added, removed or renamed by applies ([`crate::ApplyStats::reshaped`]).
    pub entries: u64,
    /// Refreshes that swapped in a new generation.
    pub swaps: u64,
}

/// Where one change moved an entry from or to, as one of
/// [`crate::ApplyStats::reshaped`]'s counts: the key of an entry added or removed, or
/// both keys of one renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reshaped {
    /// Added at, or removed from, this key.
    At(DnKey),
    /// Renamed from the first key to the second.
    Moved(DnKey, DnKey),
}

impl Reshaped {
    /// Whether a search of `spec` could have missed the entry or printed it twice.
    fn within(&self, base_key: &[u8], spec: &SearchSpec) -> bool {
        let inside = |key: &DnKey| spec.scope.contains_key(base_key, key);
        match self {
            Reshaped::At(key) => inside(key),
            Reshaped::Moved(from, to) => inside(from) || inside(to),
        }
    }
}

/// One replica's record of its reshapes, shared by every handle on it in this process.
#[derive(Debug, Default)]
pub(crate) struct ReshapeLog {
    /// The counts.
    count: Reshapes,
    /// Searches being printed now: only then do applies note their keys.
    watchers: usize,
    /// The latest changes noted while watched, oldest first, each with the value of
    /// `count.entries` it was counted as.
    noted: VecDeque<(u64, Reshaped)>,
}

impl ReshapeLog {
    /// The counts.
    pub(crate) fn count(&self) -> Reshapes {
        self.count
    }

    /// Whether an apply should note the keys it reshapes ([`ReshapeLog::entries`]).
    pub(crate) fn watched(&self) -> bool {
        self.watchers > 0
    }

    /// Counts `n` entries reshaped, with the keys of those noted: as many as `n` when
    /// the apply was [`ReshapeLog::watched`] as it began, none otherwise.
    pub(crate) fn entries(&mut self, n: u64, noted: Vec<Reshaped>) {
        let first = self.count.entries + 1;
        self.count.entries += n;
        if !self.watched() {
            return;
        }
        for (i, change) in noted.into_iter().enumerate() {
            self.noted.push_back((first + i as u64, change));
        }
        while self.noted.len() > MAX_NOTED {
            self.noted.pop_front();
        }
    }

    /// Counts a refresh swapped in.
    pub(crate) fn swap(&mut self) {
        self.count.swaps += 1;
    }
}

/// A replica's [`ReshapeLog`], locked by each change to its active entries from before
/// it commits until it is counted, so a reading never misses a change its search could
/// already see.
pub(crate) type SharedLog = Arc<Mutex<ReshapeLog>>;

/// Locks a replica's log; a panic elsewhere while it was held left counts that can only
/// be higher than the truth, which errs towards a search's exit status 1.
pub(crate) fn lock(log: &SharedLog) -> MutexGuard<'_, ReshapeLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A search of a replica being printed: from its start until it is dropped, applies to
/// the replica note the keys they reshape, for [`ReshapeWatch::since`].
#[derive(Debug)]
pub struct ReshapeWatch {
    log: SharedLog,
    /// The counts as the watch began.
    before: Reshapes,
}

/// What changed a search's output since its [`ReshapeWatch`] began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReshapedSince {
    /// Entries added, removed or renamed: within the search's base and scope when
    /// `scoped`, anywhere in the replica otherwise.
    pub entries: u64,
    /// Refreshes swapped in.
    pub swaps: u64,
    /// Whether `entries` counts only the search's scope: false when more changes came
    /// than the replica keeps ([`MAX_NOTED`]), and the count is all that is left.
    pub scoped: bool,
}

impl ReshapedSince {
    /// Whether the search's output holds each entry of its scope once, as it was at
    /// some moment of the search.
    pub fn is_whole(&self) -> bool {
        self.entries == 0 && self.swaps == 0
    }
}

impl ReshapeWatch {
    /// Begins watching `log`.
    pub(crate) fn begin(log: &SharedLog) -> Self {
        let mut held = lock(log);
        held.watchers += 1;
        ReshapeWatch { log: log.clone(), before: held.count }
    }

    /// What was reshaped within `spec`'s base and scope since the watch began.
    pub fn since(&self, spec: &SearchSpec) -> ReshapedSince {
        let log = lock(&self.log);
        let now = log.count;
        let swaps = now.swaps - self.before.swaps;
        let all = now.entries - self.before.entries;
        if all == 0 {
            return ReshapedSince { entries: 0, swaps, scoped: true };
        }
        // Every change counted since the watch began is noted, unless the oldest were
        // let go.
        let reaches_back = log.noted.front().is_some_and(|(at, _)| *at <= self.before.entries + 1);
        if !reaches_back {
            return ReshapedSince { entries: all, swaps, scoped: false };
        }
        let base_key = spec.base.tree_key();
        let entries =
            log.noted.iter().filter(|(at, change)| *at > self.before.entries && change.within(&base_key, spec)).count()
                as u64;
        ReshapedSince { entries, swaps, scoped: true }
    }
}

impl Drop for ReshapeWatch {
    fn drop(&mut self) {
        let mut log = lock(&self.log);
        log.watchers = log.watchers.saturating_sub(1);
        if log.watchers == 0 {
            log.noted = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::{Dn, Filter, Scope};

    fn key(dn: &str) -> DnKey {
        Dn::parse(dn).expect("dn").tree_key()
    }

    fn spec(base: &str, scope: Scope) -> SearchSpec {
        SearchSpec { base: Dn::parse(base).expect("base"), scope, filter: Filter::match_all(), attrs: Vec::new() }
    }

    /// Counts `changes` as one apply would, noting their keys if it is watched.
    fn apply(log: &SharedLog, changes: Vec<Reshaped>) {
        let mut held = lock(log);
        let noted = if held.watched() { changes.clone() } else { Vec::new() };
        held.entries(changes.len() as u64, noted);
    }

    #[test]
    fn a_search_counts_only_the_changes_within_its_base_and_scope() {
        let log = SharedLog::default();
        apply(&log, vec![Reshaped::At(key("uid=before,ou=quiet,dc=example,dc=com"))]);
        let watch = ReshapeWatch::begin(&log);
        apply(&log, vec![Reshaped::At(key("uid=a,ou=busy,dc=example,dc=com"))]);
        apply(&log, vec![Reshaped::At(key("uid=b,ou=busy,dc=example,dc=com"))]);
        let quiet = spec("ou=quiet,dc=example,dc=com", Scope::Subtree);
        assert_eq!(watch.since(&quiet), ReshapedSince { entries: 0, swaps: 0, scoped: true });
        assert!(watch.since(&quiet).is_whole());
        let busy = spec("ou=busy,dc=example,dc=com", Scope::One);
        assert_eq!(watch.since(&busy), ReshapedSince { entries: 2, swaps: 0, scoped: true });

        // A rename counts where it came from and where it went.
        apply(
            &log,
            vec![Reshaped::Moved(key("uid=c,ou=busy,dc=example,dc=com"), key("uid=c,ou=quiet,dc=example,dc=com"))],
        );
        assert_eq!(watch.since(&quiet).entries, 1);
        assert_eq!(watch.since(&busy).entries, 3);
        // A base search sees its entry only; a one-level one, not its base.
        assert_eq!(watch.since(&spec("uid=c,ou=quiet,dc=example,dc=com", Scope::Base)).entries, 1);
        assert_eq!(watch.since(&spec("uid=a,ou=busy,dc=example,dc=com", Scope::Base)).entries, 1);
        assert_eq!(watch.since(&spec("uid=c,ou=busy,dc=example,dc=com", Scope::One)).entries, 0);
        assert_eq!(watch.since(&spec("dc=example,dc=com", Scope::Subtree)).entries, 3);

        // A swap is a new copy whatever the scope.
        lock(&log).swap();
        assert_eq!(watch.since(&spec("ou=nothing,dc=example,dc=com", Scope::Subtree)).swaps, 1);
    }

    #[test]
    fn changes_are_noted_only_while_a_search_is_printed() {
        let log = SharedLog::default();
        let busy = Reshaped::At(key("uid=a,ou=busy,dc=example,dc=com"));
        apply(&log, vec![busy.clone()]);
        assert!(lock(&log).noted.is_empty());
        let first = ReshapeWatch::begin(&log);
        let second = ReshapeWatch::begin(&log);
        apply(&log, vec![busy.clone()]);
        drop(first);
        apply(&log, vec![busy.clone()]);
        assert_eq!(lock(&log).noted.len(), 2, "one search still printed");
        assert_eq!(second.since(&spec("ou=busy,dc=example,dc=com", Scope::Subtree)).entries, 2);
        drop(second);
        assert!(lock(&log).noted.is_empty(), "kept after the last search ended");
        apply(&log, vec![busy]);
        assert!(lock(&log).noted.is_empty());
        assert_eq!(lock(&log).count().entries, 4);
    }

    #[test]
    fn past_what_is_kept_a_search_falls_back_to_the_whole_replica_s_count() {
        let log = SharedLog::default();
        let watch = ReshapeWatch::begin(&log);
        let elsewhere = Reshaped::At(key("uid=a,ou=busy,dc=example,dc=com"));
        for _ in 0..MAX_NOTED {
            apply(&log, vec![elsewhere.clone()]);
        }
        let quiet = spec("ou=quiet,dc=example,dc=com", Scope::Subtree);
        assert_eq!(watch.since(&quiet), ReshapedSince { entries: 0, swaps: 0, scoped: true });
        apply(&log, vec![elsewhere]);
        assert_eq!(lock(&log).noted.len(), MAX_NOTED);
        assert_eq!(watch.since(&quiet), ReshapedSince { entries: MAX_NOTED as u64 + 1, swaps: 0, scoped: false });
        // A search that began after the first let go still reaches back to its start.
        let later = ReshapeWatch::begin(&log);
        apply(&log, vec![Reshaped::At(key("uid=q,ou=quiet,dc=example,dc=com"))]);
        assert_eq!(later.since(&quiet), ReshapedSince { entries: 1, swaps: 0, scoped: true });
    }

    #[test]
    fn a_search_does_not_count_what_was_noted_before_it_began() {
        let log = SharedLog::default();
        let first = ReshapeWatch::begin(&log);
        // Noted (a search is printed) but counted before `later` began.
        apply(&log, vec![Reshaped::At(key("uid=q,ou=quiet,dc=example,dc=com"))]);
        let later = ReshapeWatch::begin(&log);
        let quiet = spec("ou=quiet,dc=example,dc=com", Scope::Subtree);
        assert_eq!(first.since(&quiet).entries, 1);
        apply(&log, vec![Reshaped::At(key("uid=a,ou=busy,dc=example,dc=com"))]);
        assert_eq!(later.since(&quiet), ReshapedSince { entries: 0, swaps: 0, scoped: true });
        assert_eq!(first.since(&quiet).entries, 1);
    }
}
