//! Watches what consumers expose while the nemesis works: every [`PERIOD`] it searches
//! each agreement's replica for the anchor entries and records each consumer's status.
//!
//! ## Why anchors prove a replica was never half-loaded
//! The provider is loaded with anchor entries in every region, spread over the tree
//! order, that the workload never deletes, renames or moves; it only raises their
//! `employeeNumber` counter. So every state the provider ever had contains all anchors
//! of a region, and every complete replica (the region at some CSN) does too. A
//! replica showing some but not all of them exposes a partial load; one showing none
//! after it showed them all lost its data, unless the run emptied it on purpose (store
//! wiped, agreement removed: the node's epoch for the agreement changes, and only an
//! empty replica that never loaded since is allowed). And since counters only rise on
//! the provider, a counter lower than one seen earlier on the same agreement of the same
//! consumer means a replica went back in time, whatever happened in between (a full
//! reload after a wipe can only bring a newer state).
//!
//! The one exception is the provider restored from a backup: its counters go back to
//! the backup's, and a consumer that had replicated further must follow them back, once.
//! So after each restore, and while a replica's cookie names a history begun before it
//! (it has not refreshed from the restored provider yet, and may hold lost changes in
//! that history or past its cookie in a delta cut short), it is not held to the counters
//! it showed; the first sample after that starts them afresh. A replica's cookie is
//! committed with its data and its history only moves forward, so reading the status
//! both before and after the search brackets the history of what the search saw, and the
//! restore count is read after it (the count moves before the restored provider starts).
//!
//! ## Why anchors prove that nothing below a cookie was lost
//! The writer learns the CSN of each anchor bump (`write` prints its last record's, and
//! the bump is each batch's last), so a sample whose anchor shows a lower counter than
//! the newest bump of it at or below the agreement's cookie lacks a change its cookie
//! covers: [`anchor_below_cookie`]. Seen when it happens, before a reload puts the
//! replica right and hides it from the end's checks. Bumps are compared only with
//! samples taken in the same restore count, and a replica in a history begun before the
//! last restore is not held to them (a restore gives the CSNs after its backup to other
//! changes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::{region, Bump, Cluster, ANCHOR};
use crate::harness::agreement_in;

/// Time between two sampling rounds.
pub const PERIOD: Duration = Duration::from_millis(500);

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct SamplerStats {
    /// Replica searches checked.
    pub samples: u64,
    /// Searches that failed (agreement mid-reload and the like); not violations.
    pub failed: u64,
    /// Violations found, with their time since the run started.
    pub violations: Vec<String>,
}

/// The anchors a search shows: DN -> counter.
pub fn anchors_in(ldif: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for record in ldif.split("\n\n") {
        let mut dn = None;
        let mut counter = None;
        for line in record.lines() {
            if let Some(v) = line.strip_prefix("dn: ") {
                dn = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("employeeNumber: ") {
                counter = v.trim().parse::<u64>().ok();
            }
        }
        if let (Some(dn), Some(counter)) = (dn, counter) {
            out.insert(dn, counter);
        }
    }
    out
}

/// The state the checks keep per (consumer, agreement).
#[derive(Debug, Default)]
pub struct Watch {
    /// The epoch in which a complete replica was last seen.
    loaded_in: Option<u64>,
    /// Highest counter seen per anchor.
    highest: BTreeMap<String, u64>,
    /// Seen holding a history begun before the last restore, or one happened since the last
    /// sample: the counters start afresh at the next sample that holds none.
    forked: bool,
    /// Restores counted at the last sample.
    restores: u64,
}

impl Watch {
    /// Checks one sample taken in `epoch` against what was seen before: `forked` if the
    /// replica's cookie named a history begun before the last restore when the sample was taken,
    /// `restores` the restores so far. Returns a violation, if any.
    pub fn check(
        &mut self,
        expected: usize,
        epoch: u64,
        anchors: &BTreeMap<String, u64>,
        forked: bool,
        restores: u64,
    ) -> Option<String> {
        let mut problem = None;
        if anchors.is_empty() {
            if self.loaded_in == Some(epoch) {
                problem = Some("a loaded replica went empty".to_owned());
            }
        } else if anchors.len() != expected {
            problem = Some(format!("half-loaded replica: {} of {expected} anchors", anchors.len()));
        } else {
            self.loaded_in = Some(epoch);
        }
        if restores != self.restores {
            // The replica may still show the lost counters, higher than any to come.
            self.restores = restores;
            self.forked = true;
        }
        if forked {
            self.forked = true;
            return problem;
        }
        if std::mem::take(&mut self.forked) {
            self.highest.clear();
        }
        for (dn, &value) in anchors {
            let seen = self.highest.entry(dn.clone()).or_insert(value);
            if value < *seen {
                problem.get_or_insert(format!("{dn} went backwards: counter {value} after {seen}"));
            }
            *seen = (*seen).max(value);
        }
        problem
    }
}

/// The first anchor of a sample (`anchors`, DN -> counter) lower than the newest bump
/// of it at or below `cookie` (the agreement's CSN) that the provider acknowledged in
/// `restores` (the restores counted so far): a change below the cookie the replica lacks.
/// The writer bumps one anchor per batch and learns its CSN, so whatever happens to a
/// replica afterwards (a reload that would put it right, more changes), the moment it
/// lacks a bump its cookie covers is a lost change, seen when it happens.
pub fn anchor_below_cookie(
    bumps: &[Bump],
    anchors: &BTreeMap<String, u64>,
    cookie: u64,
    restores: u64,
) -> Option<String> {
    for (dn, &value) in anchors {
        let newest =
            bumps.iter().filter(|b| b.restores == restores && b.csn <= cookie && &b.dn == dn).max_by_key(|b| b.csn);
        if let Some(b) = newest.filter(|b| b.counter > value) {
            return Some(format!(
                "a change below the cookie is lost: {dn} shows counter {value} under cookie csn {cookie}, where the \
                 provider acknowledged {} at csn {}",
                b.counter, b.csn
            ));
        }
    }
    None
}

/// The longest a refresh may stay under way. A refresh of the run's few thousand entries
/// takes well under a second, and the nemesis's faults end a session within seconds
/// (keepalive 3 s) or slow it for 6 s at most; a session still refreshing after this is
/// stuck, as a poll whose ack the provider had lost was (both sides pinging, for good).
/// Faults free a stuck session too, within seconds while they come, so the check
/// speaks mostly once they stop, naming the agreement, where the end's checks would see
/// only a replica that did not converge.
pub const STUCK_REFRESH: Duration = Duration::from_secs(30);

/// Watches one agreement for a refresh that never ends: `refreshing` in every sample,
/// with no refresh begun since (the refresh counters unchanged).
#[derive(Debug, Default)]
pub struct Progress {
    /// When the current refresh was first seen, and the counters then.
    refreshing_since: Option<(Instant, u64)>,
}

impl Progress {
    /// Checks one sample: the agreement's `state` and the refreshes it counts (begun,
    /// resumed included), at `now`. Returns a violation once per stuck refresh.
    pub fn check(&mut self, state: &str, begun: u64, now: Instant) -> Option<String> {
        if state != "refreshing" {
            self.refreshing_since = None;
            return None;
        }
        match self.refreshing_since {
            Some((since, counted)) if counted == begun => {
                let stuck = now.duration_since(since);
                (stuck >= STUCK_REFRESH).then(|| {
                    self.refreshing_since = None;
                    format!(
                        "a refresh has not ended in {:.0} s (state refreshing, no refresh begun since)",
                        stuck.as_secs_f64()
                    )
                })
            }
            _ => {
                self.refreshing_since = Some((now, begun));
                None
            }
        }
    }
}

/// The refreshes agreement `a` of a `status --json` counts as begun, resumed included.
fn refreshes_begun(a: &serde_json::Value) -> u64 {
    let kinds = a["refreshes"].as_object().map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum());
    kinds + a["resumed_refreshes"].as_u64().unwrap_or(0)
}

/// Agreement `name`'s cookie in a consumer's `status --json` (empty if none).
fn cookie_of(status: &serde_json::Value, name: &str) -> String {
    agreement_in(status, name).ok().and_then(|a| a["cookie"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// Samples until `stop` is set.
pub fn run(cluster: &Cluster, started: Instant, stop: &AtomicBool) -> SamplerStats {
    let mut stats = SamplerStats::default();
    let mut watches: BTreeMap<(usize, String), Watch> = BTreeMap::new();
    let mut progress: BTreeMap<(usize, String), Progress> = BTreeMap::new();
    let filter = format!("(description={ANCHOR})");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(PERIOD);
        for node in &cluster.nodes {
            let mut state = node.lock();
            if state.consumer.child.is_none() {
                continue;
            }
            // Fresh, or not at all: a stale cookie could hide that a replica is about to
            // follow a restored provider back.
            let Ok(status) = state.consumer.status() else {
                stats.failed += 1;
                continue;
            };
            let names: Vec<String> = state.agreements.iter().map(|a| a.name.clone()).collect();
            let mut searched = Vec::new();
            for name in names {
                let Some(region) = region(&name) else { continue };
                match state.consumer.search(&name, region.base, region.scope, &filter) {
                    Ok(text) => searched.push((name, region, text)),
                    Err(_) => stats.failed += 1,
                }
            }
            let Ok(after) = state.consumer.status() else {
                stats.failed += 1;
                continue;
            };
            let restores = cluster.restores.load(Ordering::SeqCst);
            state.last_status = Some(after.clone());
            for a in after["agreements"].as_array().into_iter().flatten() {
                let Some(name) = a["name"].as_str() else { continue };
                let agreement_state = a["state"].as_str().unwrap_or_default();
                let watch = progress.entry((node.index, name.to_owned())).or_default();
                if let Some(problem) = watch.check(agreement_state, refreshes_begun(a), Instant::now()) {
                    stats.violations.push(format!(
                        "at {:.1}s consumer{} agreement {name}: {problem}",
                        started.elapsed().as_secs_f64(),
                        node.index
                    ));
                }
            }
            for (name, region, text) in searched {
                let epoch = state.epochs.get(&name).copied().unwrap_or(0);
                stats.samples += 1;
                let forked = [&status, &after].iter().any(|s| cluster.before_restore(&cookie_of(s, &name)));
                let anchors = anchors_in(&text);
                // The cookie before the search, which the replica searched had reached.
                let before = cookie_of(&status, &name);
                let csn = before.rsplit_once('#').and_then(|(_, c)| c.parse::<u64>().ok());
                if let Some(csn) = csn.filter(|_| !forked) {
                    let bumps = cluster.bumps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(problem) = anchor_below_cookie(&bumps, &anchors, csn, restores) {
                        stats.violations.push(format!(
                            "at {:.1}s consumer{} agreement {name}: {problem}",
                            started.elapsed().as_secs_f64(),
                            node.index
                        ));
                    }
                }
                let watch = watches.entry((node.index, name.clone())).or_default();
                if let Some(problem) = watch.check(region.anchors, epoch, &anchors, forked, restores) {
                    stats.violations.push(format!(
                        "at {:.1}s consumer{} agreement {name}: {problem}",
                        started.elapsed().as_secs_f64(),
                        node.index
                    ));
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect()
    }

    #[test]
    fn partial_empty_and_backwards_samples_are_violations() {
        let mut w = Watch::default();
        assert_eq!(w.check(2, 0, &sample(&[]), false, 0), None, "never loaded yet");
        assert_eq!(w.check(2, 0, &sample(&[("a", 1), ("b", 1)]), false, 0), None);
        assert!(w.check(2, 0, &sample(&[("a", 1)]), false, 0).unwrap().contains("half-loaded"));
        assert!(w.check(2, 0, &sample(&[]), false, 0).unwrap().contains("went empty"));
        assert_eq!(w.check(2, 1, &sample(&[]), false, 0), None, "emptied on purpose");
        assert!(w.check(2, 1, &sample(&[("a", 0), ("b", 1)]), false, 0).unwrap().contains("backwards"));
        assert_eq!(w.check(2, 1, &sample(&[("a", 3), ("b", 2)]), false, 0), None);
    }

    #[test]
    fn a_counter_below_the_highest_seen_is_backwards_even_above_the_first() {
        let mut w = Watch::default();
        assert_eq!(w.check(2, 0, &sample(&[("a", 1), ("b", 1)]), false, 0), None);
        assert_eq!(w.check(2, 0, &sample(&[("a", 5), ("b", 1)]), false, 0), None);
        // Above what the first sample showed, below what the second did: back in time.
        let back = w.check(2, 0, &sample(&[("a", 3), ("b", 1)]), false, 0).unwrap();
        assert!(back.contains("a went backwards: counter 3 after 5"), "{back}");
    }

    #[test]
    fn a_replica_loaded_again_after_being_emptied_on_purpose_may_not_go_empty() {
        let mut w = Watch::default();
        assert_eq!(w.check(2, 0, &sample(&[("a", 1), ("b", 1)]), false, 0), None);
        assert_eq!(w.check(2, 1, &sample(&[]), false, 0), None, "emptied on purpose");
        // Loaded again in the new epoch: from now on an empty replica lost its data,
        // as after the first load.
        assert_eq!(w.check(2, 1, &sample(&[("a", 2), ("b", 2)]), false, 0), None);
        let lost = w.check(2, 1, &sample(&[]), false, 0).unwrap();
        assert!(lost.contains("a loaded replica went empty"), "{lost}");
    }

    #[test]
    fn a_replica_follows_a_restored_provider_back_once_and_only_then() {
        let mut w = Watch::default();
        assert_eq!(w.check(2, 0, &sample(&[("a", 5), ("b", 6)]), false, 0), None);
        // Its cookie names a history the restore took away: it may still show the lost
        // counters, and then the restored ones.
        assert_eq!(w.check(2, 0, &sample(&[("a", 7), ("b", 6)]), true, 0), None);
        assert!(w.check(2, 0, &sample(&[("a", 1)]), true, 0).unwrap().contains("half-loaded"), "a reload is whole");
        // Reloaded: the restored line's counters, lower than the lost ones, are the new start.
        assert_eq!(w.check(2, 0, &sample(&[("a", 2), ("b", 3)]), false, 0), None);
        assert!(w.check(2, 0, &sample(&[("a", 1), ("b", 3)]), false, 0).unwrap().contains("backwards"));
        // A restore between two samples, the reload done before the second.
        assert_eq!(w.check(2, 0, &sample(&[("a", 0), ("b", 1)]), false, 1), None);
        assert!(w.check(2, 0, &sample(&[("a", 0), ("b", 0)]), false, 1).unwrap().contains("backwards"));
    }

    #[test]
    fn a_refresh_that_never_ends_is_a_violation_once() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        assert_eq!(p.check("refreshing", 3, t0), None);
        assert_eq!(p.check("refreshing", 3, t0 + STUCK_REFRESH / 2), None);
        assert!(p.check("refreshing", 3, t0 + STUCK_REFRESH).unwrap().contains("has not ended"));
        assert_eq!(p.check("refreshing", 3, t0 + STUCK_REFRESH * 2), None, "said once, then watched afresh");
        // Polls that follow one another, each refreshing when sampled, are progress.
        let mut p = Progress::default();
        for i in 0..10 {
            assert_eq!(p.check("refreshing", 3 + i, t0 + STUCK_REFRESH * i as u32 / 2), None);
        }
        // So is any other state in between.
        let mut p = Progress::default();
        assert_eq!(p.check("refreshing", 3, t0), None);
        assert_eq!(p.check("idle", 3, t0 + STUCK_REFRESH / 2), None);
        assert_eq!(p.check("refreshing", 3, t0 + STUCK_REFRESH), None);
    }

    #[test]
    fn an_anchor_behind_a_bump_its_cookie_covers_is_a_lost_change() {
        let bump = |dn: &str, counter, csn, restores| Bump { dn: dn.into(), counter, csn, restores };
        let bumps = [bump("a", 4, 10, 0), bump("b", 5, 12, 0), bump("a", 6, 20, 0), bump("a", 9, 30, 1)];
        // At or past every bump its cookie covers; one past the cookie may be missing.
        assert_eq!(anchor_below_cookie(&bumps, &sample(&[("a", 4), ("b", 5)]), 19, 0), None);
        assert_eq!(anchor_below_cookie(&bumps, &sample(&[("a", 6), ("b", 5)]), 19, 0), None);
        let lost = anchor_below_cookie(&bumps, &sample(&[("a", 4), ("b", 5)]), 20, 0).unwrap();
        assert!(
            lost.contains("a shows counter 4 under cookie csn 20") && lost.contains("acknowledged 6 at csn 20"),
            "{lost}"
        );
        assert!(anchor_below_cookie(&bumps, &sample(&[("a", 6), ("b", 1)]), 25, 0).unwrap().contains("b shows"));
        // Bumps of another restore count say nothing: the CSNs went to other changes.
        assert_eq!(anchor_below_cookie(&bumps, &sample(&[("a", 1)]), 40, 2), None);
        assert!(anchor_below_cookie(&bumps, &sample(&[("a", 8)]), 40, 1).is_some());
    }

    #[test]
    fn anchors_are_read_from_canonical_ldif() {
        let ldif = "dn: uid=a,ou=x\nuid: a\nemployeeNumber: 7\n\ndn: uid=b,ou=x\nemployeeNumber: 9\n\n";
        assert_eq!(anchors_in(ldif), sample(&[("uid=a,ou=x", 7), ("uid=b,ou=x", 9)]));
    }
}
