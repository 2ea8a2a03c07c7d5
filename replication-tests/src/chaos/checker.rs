//! The final invariants, checked once the nemesis healed everything and the writer
//! stopped: every agreement converges to the provider's view of its region, and no
//! change was applied twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::cluster::{region, Cluster, Totals};

/// Time between two convergence checks.
const POLL: Duration = Duration::from_millis(500);

/// The first difference between two canonical LDIF texts, for the report.
fn first_difference(provider: &str, consumer: &str) -> String {
    let count = |t: &str| t.lines().filter(|l| l.starts_with("dn:")).count();
    let first = provider
        .lines()
        .zip(consumer.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("provider has {a:?} where the consumer has {b:?}"))
        .unwrap_or_else(|| "one is a prefix of the other".into());
    format!("provider {} entries, consumer {} entries; {first}", count(provider), count(consumer))
}

/// The CSN of a status `cookie` (`<store id>#<csn>`).
fn cookie_csn(agreement_status: &serde_json::Value) -> Option<u64> {
    agreement_status["cookie"].as_str()?.rsplit_once('#')?.1.parse().ok()
}

/// The agreements that differ from the provider right now, with why: their `search`
/// output, or their cookie (a replica equal to the provider's must also know it is
/// current, or its next session would replay changes it already holds).
fn differences(cluster: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    let mut expected: BTreeMap<&str, String> = BTreeMap::new();
    let provider_csn = match cluster.provider().provider.status() {
        Ok(s) => s["csn"].as_u64(),
        Err(e) => return vec![format!("provider status: {e:#}")],
    };
    for node in &cluster.nodes {
        let status = node.lock().consumer.status();
        let state = node.lock();
        for a in &state.agreements {
            let Some(r) = region(&a.name) else { continue };
            let want = match expected.get(r.agreement) {
                Some(w) => w.clone(),
                None => match cluster.provider().provider.search(r.base, r.scope, r.filter) {
                    Ok(w) => {
                        expected.insert(r.agreement, w.clone());
                        w
                    }
                    Err(e) => {
                        out.push(format!("provider search of {}: {e:#}", r.agreement));
                        continue;
                    }
                },
            };
            match state.consumer.search(&a.name, r.base, r.scope, r.filter) {
                Ok(got) if got == want => {
                    let csn = status.as_ref().ok().and_then(|s| {
                        s["agreements"].as_array()?.iter().find(|x| x["name"] == a.name.as_str()).and_then(cookie_csn)
                    });
                    if csn != provider_csn {
                        out.push(format!(
                            "consumer{} {}: replica equal, cookie at {csn:?}, provider at {provider_csn:?}",
                            node.index, a.name
                        ));
                    }
                }
                Ok(got) => out.push(format!("consumer{} {}: {}", node.index, a.name, first_difference(&want, &got))),
                Err(e) => out.push(format!("consumer{} {}: search failed: {e:#}", node.index, a.name)),
            }
        }
    }
    out
}

/// Waits until every agreement's `search` equals the provider's over the same region;
/// `Ok(time)` or `Err(what still differs)` after `limit`.
pub fn converge(cluster: &Cluster, limit: Duration) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let diff = differences(cluster);
        if diff.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= limit {
            return Err(diff);
        }
        std::thread::sleep(POLL);
    }
}

/// Every consumer's counters over all its lives, folding in its current status.
pub fn totals(cluster: &Cluster) -> Vec<Totals> {
    cluster
        .nodes
        .iter()
        .map(|node| {
            let mut state = node.lock();
            state.refresh_status();
            let mut t = state.totals.clone();
            if let Some(s) = &state.last_status {
                t.fold(s, None);
            }
            t
        })
        .collect()
}

/// Exactly once: the apply audit never saw a change applied twice.
pub fn exactly_once(totals: &[Totals]) -> Vec<String> {
    totals
        .iter()
        .enumerate()
        .filter(|(_, t)| t.duplicates > 0)
        .map(|(i, t)| format!("consumer{i}: {} changes applied twice (apply audit)", t.duplicates))
        .collect()
}

/// After convergence: stops every consumer cleanly and reads each replica's *durable*
/// cookie from its store. A replica equal to the provider's must have made that position
/// durable with the data (same transaction), or its next start replays changes it holds:
/// the status cookie is the in-memory one, so only this catches a cookie never written.
pub fn durable_cookies(cluster: &Cluster) -> Vec<String> {
    let provider_csn = match cluster.provider().provider.status() {
        Ok(s) => s["csn"].as_u64(),
        Err(e) => return vec![format!("provider status: {e:#}")],
    };
    let mut out = Vec::new();
    for node in &cluster.nodes {
        let mut state = node.lock();
        state.fold_before_restart();
        match state.consumer.stop() {
            Ok(status) if status.success() => {}
            Ok(status) => out.push(format!("consumer{} exited with {status} on SIGTERM", node.index)),
            Err(e) => out.push(format!("consumer{}: stopping: {e:#}", node.index)),
        }
        // The consumer is down: its status is read from the store.
        let status = match state.consumer.status() {
            Ok(s) => s,
            Err(e) => {
                out.push(format!("consumer{}: offline status: {e:#}", node.index));
                continue;
            }
        };
        for a in status["agreements"].as_array().into_iter().flatten() {
            let (name, cookie) = (a["name"].as_str().unwrap_or("?"), a["cookie"].as_str().unwrap_or("-"));
            let csn = cookie.rsplit_once('#').and_then(|(_, c)| c.parse::<u64>().ok());
            if csn != provider_csn {
                out.push(format!(
                    "consumer{} {name}: durable cookie {cookie} after a clean stop, provider at {provider_csn:?}",
                    node.index
                ));
            }
        }
    }
    out
}

/// Log lines no run may produce: a panic anywhere, a provider reload that failed (the
/// nemesis only ever writes valid configs, atomically), or a consumer that lacked entries
/// its provider named as unchanged in a present refresh. A provider names an entry so
/// only if it was in the region at the consumer's cookie and unchanged since, which a
/// replica holds once every change up to its cookie is applied; lacking one, a change
/// was lost on the way (the consumer then reloads in full, and converges, so only this
/// line shows it).
pub fn log_findings(cluster: &Cluster) -> Vec<String> {
    let mut logs = vec![("provider".to_owned(), cluster.provider().provider.log_text())];
    for node in &cluster.nodes {
        logs.push((format!("consumer{}", node.index), node.lock().consumer.log_text()));
    }
    let mut out = Vec::new();
    for (who, text) in logs {
        let found =
            |l: &&str| l.contains("panicked at") || l.contains("reload failed") || l.contains("entries named present");
        for line in text.lines().filter(found) {
            out.push(format!("{who} log: {}", line.chars().take(300).collect::<String>()));
        }
    }
    out
}
