//! The disconnection cases of SPEC §4 that need no network fault, each triggered for
//! real, observed in status, followed by more changes, and checked for convergence and
//! exactly-once application (the consumer runs with the apply audit on, and
//! `duplicates` must stay 0). Network faults are in `network_faults.rs`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use replication_tests::harness::{
    assert_holds, wait_until, Agreement, Consumer, Grant, Provider, ProviderOptions, PEOPLE_SECRET,
};
use replication_tests::workload::{Workload, OTHERS, PEOPLE, SUFFIX};

const LIMIT: Duration = Duration::from_secs(90);
const ALL: &str = "(objectClass=*)";
/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_secs(3);

fn provider_with(root: &Path, n: usize, seed: u64, opts: ProviderOptions) -> Result<(Provider, Workload)> {
    Provider::loaded(root, n, seed, &opts)
}

fn converged(p: &Provider, c: &Consumer, name: &str, base: &str) -> Result<()> {
    wait_until(LIMIT, &format!("{name} to converge"), || {
        Ok(p.search(base, "subtree", ALL)? == c.search(name, base, "subtree", ALL)?)
    })
}

/// A provider of `n` entries and a consumer of `people` that retries every `retry`
/// ("500ms"), converged.
fn converged_pair(root: &Path, n: usize, seed: u64, retry: &str) -> Result<(Provider, Workload, Consumer)> {
    let (p, w) = provider_with(root, n, seed, ProviderOptions::default())?;
    let a = Agreement {
        extra: format!("retry = [\"{retry} forever\"]\n"),
        ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET)
    };
    let mut c = Consumer::configure(&root.join("c"), p.port, &[a])?;
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    Ok((p, w, c))
}

fn no_duplicates(c: &Consumer, name: &str) -> Result<()> {
    let s = c.agreement_status(name)?;
    assert_eq!(s["duplicates"], 0, "exactly-once violated: {s}");
    Ok(())
}

/// The names of the consumer's store threads ("apply <agreement>", one per session).
fn store_threads(c: &Consumer) -> Result<Vec<String>> {
    let pid = c.child.as_ref().map(std::process::Child::id).ok_or_else(|| anyhow::anyhow!("consumer not running"))?;
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let comm = std::fs::read_to_string(task?.path().join("comm"))?;
        if let Some(name) = comm.trim_end().strip_prefix("apply ") {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The secret of `people` in [`two_grants`]: 16 bytes or more, as a secret must be to
/// be taken without a warning, which every reload's reply would carry.
const S1: &str = "s1-secret-for-tests";
/// The secret of `others` in [`two_grants`], as long for the same reason.
const S2: &str = "s2-secret-for-tests";

fn two_grants() -> ProviderOptions {
    grants_of(S1, PEOPLE, OTHERS)
}

/// The grants of [`two_grants`] with `people`'s secret and base and `others`' base
/// changed, as a reload would bring them.
fn grants_of(people_secret: &str, people_base: &str, others_base: &str) -> ProviderOptions {
    ProviderOptions {
        grants: vec![
            Grant { agreement: "people".into(), secret: people_secret.into(), base: people_base.into() },
            Grant { agreement: "others".into(), secret: S2.into(), base: others_base.into() },
        ],
        ..ProviderOptions::default()
    }
}

/// A consumer of both grants of [`two_grants`] from `p`, started, and converged on both.
fn both_agreements(root: &Path, p: &Provider) -> Result<Consumer> {
    let mut c = Consumer::configure(
        &root.join("c"),
        p.port,
        &[Agreement::persist("people", PEOPLE, S1), Agreement::persist("others", OTHERS, S2)],
    )?;
    c.start()?;
    converged(p, &c, "people", PEOPLE)?;
    converged(p, &c, "others", OTHERS)?;
    Ok(c)
}

#[test]
fn sigkill_during_persist_resumes_by_delta_exactly_once() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 1500, 11, ProviderOptions::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    let changes = w.changes(600);
    std::thread::scope(|s| -> Result<()> {
        let writer = s.spawn(|| p.write_ok(&changes));
        // Kill the consumer while changes are streaming in.
        wait_until(LIMIT, "changes to flow", || {
            Ok(c.agreement_status("people")?["applied"].as_u64().unwrap_or(0) > 1600)
        })?;
        c.kill()?;
        writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        Ok(())
    })?;
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["last_refresh"], "delta", "resumed from the durable cookie: {s}");
    no_duplicates(&c, "people")
}

#[test]
fn sigkill_during_a_large_delta_refresh_resumes_without_a_full_reload() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 2000, 12, ProviderOptions::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    c.stop()?;
    // Killed with part of the delta applied, so that the replica is past its cookie (a
    // delta's cookie moves only at its end): the provider must take it back by a delta.
    // Killed as soon as it was `refreshing`, it was mostly killed before anything was
    // applied, and a provider that reloaded every replica past its cookie passed. A
    // delta may also end between two looks at the status: then the replica catches up
    // and the kill is tried again on the next delta, up to five times.
    for attempt in 1.. {
        p.write_ok(&w.changes(3000))?;
        c.start()?;
        let s = c.wait_status("people", LIMIT, "the delta refresh to apply changes", |s| {
            s["applied"].as_u64().unwrap_or(0) > 0
        })?;
        c.kill()?;
        if s["state"] == "refreshing" {
            break;
        }
        assert!(attempt < 5, "in five deltas of 3,000 changes, none was seen part applied: {s}");
        c.start()?;
        converged(&p, &c, "people", PEOPLE)?;
        c.stop()?;
    }
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["last_refresh"], "delta", "{s}");
    assert!(s["refreshes"]["full"].is_null(), "no full reload after the kill: {s}");
    no_duplicates(&c, "people")
}

#[test]
fn sigkill_during_a_large_full_refresh_resumes_where_it_stopped() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 8_000, 13, ProviderOptions::default())?;
    let region = p.search(PEOPLE, "subtree", ALL)?.matches("\ndn: ").count() + 1;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    // Kill the consumer a good way into its first full refresh, with writes going on.
    let changes = w.changes(300);
    let received_at_kill = std::thread::scope(|s| -> Result<u64> {
        let writer = s.spawn(|| p.write_ok(&changes));
        let at_kill = c.wait_status("people", LIMIT, "the full refresh to be well under way", |s| {
            s["refresh_received"].as_u64().unwrap_or(0) >= 2_000
        })?;
        c.kill()?;
        writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        Ok(at_kill["refresh_received"].as_u64().unwrap_or(0))
    })?;
    // Readers never saw the half-loaded shadow: the replica holds nothing, and says
    // that it has not finished its first refresh rather than show an empty region.
    assert_eq!(c.agreement_status("people")?["entries"], 0, "readers never saw the half-loaded shadow");
    let refused = c.search("people", PEOPLE, "subtree", ALL).unwrap_err();
    assert!(format!("{refused:#}").contains("has not finished its first refresh"), "{refused:#}");
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    let s = c.agreement_status("people")?;
    // At least once: on a loaded machine a later interruption may be resumed as well.
    assert!(s["resumed_refreshes"].as_u64().unwrap_or(0) >= 1, "the refresh was continued: {s}");
    assert!(s["refreshes"]["full"].is_null(), "no new full refresh after the kill: {s}");
    // Entries the first process stored before its last resume point are not sent again.
    let resent = s["applied"].as_u64().unwrap_or(0) + s["skipped"].as_u64().unwrap_or(0);
    assert!(
        resent + 1_000 < region as u64,
        "the second process received {resent} of {region} entries (first had {received_at_kill}): {s}"
    );
    p.write_ok(&w.changes(200))?;
    converged(&p, &c, "people", PEOPLE)?;
    no_duplicates(&c, "people")
}

#[test]
fn admin_stop_persists_across_restarts_and_start_catches_up() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 800, 13, two_grants())?;
    let mut c = both_agreements(tmp.path(), &p)?;
    assert_eq!(store_threads(&c)?, ["others", "people"], "one store thread per session");
    let said = c.admin("stop", Some("people"))?;
    assert!(said.starts_with("people: stopped (it was "), "{said}");
    let s = c.wait_status("people", LIMIT, "stopped", |s| s["state"] == "stopped")?;
    assert_eq!(s["last_disconnect"], "admin-stop");
    // The operator's own stop is no failure: an alert on `last_error` must not fire.
    assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
    // Connection attempts after the first: the session the start opened is none, and
    // neither is the stop that ended it.
    assert_eq!(s["reconnects"], 0, "{s}");
    // A second stop finds nothing to do, and says so rather than that it stopped it.
    assert_eq!(c.admin("stop", Some("people"))?, "people: already stopped; nothing changed\n");
    // The session's end stopped its store thread.
    wait_until(LIMIT, "the stopped session's store thread to end", || Ok(store_threads(&c)? == ["others"]))?;
    wait_until(LIMIT, "the provider to drop the session", || {
        Ok(!p.status()?["sessions"].as_array().unwrap().iter().any(|x| x["agreement"] == "people"))
    })?;
    let reconnects = s["reconnects"].clone();
    p.write_ok(&w.changes(200))?;
    assert_holds(QUIET, "no reconnects while stopped", || {
        Ok(c.agreement_status("people")?["reconnects"] == reconnects)
    })?;
    // The other agreement keeps replicating while this one is stopped.
    converged(&p, &c, "others", OTHERS)?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["reconnects"], reconnects, "no reconnect attempts while stopped");
    assert!(!p.status()?["sessions"].as_array().unwrap().iter().any(|x| x["agreement"] == "people"));
    // Stays stopped across a process restart.
    let held = s["entries"].clone();
    assert!(held.as_u64().is_some_and(|n| n > 0), "{s}");
    c.stop()?;
    c.start()?;
    let s = c.wait_status("people", LIMIT, "still stopped after restart", |s| s["state"] == "stopped")?;
    // Read from its replica at the start: a stopped agreement runs no session to count them.
    assert_eq!(s["entries"], held, "{s}");
    converged(&p, &c, "others", OTHERS)?;
    assert_eq!(c.admin("start", Some("people"))?, "people: started (it was stopped)\n");
    converged(&p, &c, "people", PEOPLE)?;
    c.wait_status("people", LIMIT, "persisting", |s| s["state"] == "persisting")?;
    let said = c.admin("start", Some("people"))?;
    assert!(said.starts_with("people: already running (persisting); nothing changed"), "{said}");
    assert_eq!(store_threads(&c)?, ["others", "people"]);
    assert_eq!(c.agreement_status("people")?["last_refresh"], "delta");
    // The start is persisted as the stop was: the next process runs the agreement.
    c.stop()?;
    c.start()?;
    c.wait_status("people", LIMIT, "persisting after a restart", |s| s["state"] == "persisting")?;
    no_duplicates(&c, "people")?;
    no_duplicates(&c, "others")
}

#[test]
fn provider_sigterm_puts_the_consumer_in_backoff_and_it_resumes_by_delta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w, c) = converged_pair(tmp.path(), 800, 14, "500ms")?;
    assert!(p.stop()?.success());
    // Counted: each reconnect the stopped provider refuses is a `connection-lost` that
    // overwrites `last_disconnect` and `last_error`, so the log shows the provider's reason.
    c.wait_status("people", LIMIT, "the goodbye", |s| s["disconnects"]["provider-goodbye"] == 1)?;
    let log = c.log_text();
    // The provider's first session, named as every line of it is.
    assert!(
        log.contains("disconnected session=1 reason=\"provider-goodbye\" detail=shutdown: provider shutting down"),
        "{log}"
    );
    p.start()?;
    p.write_ok(&w.changes(150))?;
    converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["last_refresh"], "delta");
    no_duplicates(&c, "people")
}

#[test]
fn a_panic_in_apply_is_an_exception_and_the_agreement_recovers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 500, 15, ProviderOptions::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    // The 3rd apply panics: inside the initial refresh.
    c.env.push(("TETHER_FAILPOINTS".into(), "apply-panic=3".into()));
    c.start()?;
    let s =
        c.wait_status("people", LIMIT, "an exception", |s| s["disconnects"]["exception"].as_u64().unwrap_or(0) >= 1)?;
    assert!(s["last_error"].as_str().unwrap_or_default().contains("panicked"), "{s}");
    converged(&p, &c, "people", PEOPLE)?;
    p.write_ok(&w.changes(100))?;
    converged(&p, &c, "people", PEOPLE)?;
    assert!(c.child.is_some(), "the process survived the panic");
    // The failed session's store thread ended with it; only the new session's is left.
    assert_eq!(store_threads(&c)?, ["people"]);
    no_duplicates(&c, "people")
}

#[test]
fn a_store_error_retrying_cannot_fix_closes_the_agreement_with_the_error() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 200, 16, ProviderOptions::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.env.push(("TETHER_FAILPOINTS".into(), "apply-error=always".into()));
    c.start()?;
    let s = c.wait_status("people", LIMIT, "closed", |s| s["state"] == "closed")?;
    assert_eq!(s["last_disconnect"], "exception");
    assert!(s["last_error"].as_str().unwrap_or_default().contains("no space left"), "{s}");
    assert!(s["last_error_at"].as_str().is_some_and(|t| humantime::parse_rfc3339(t).is_ok()), "{s}");
    let reconnects = s["reconnects"].clone();
    assert_holds(QUIET, "no retry loop", || Ok(c.agreement_status("people")?["reconnects"] == reconnects))?;
    Ok(())
}

#[test]
fn agreements_are_added_and_removed_live_by_reload_and_while_stopped_by_the_next_start() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 500, 17, two_grants())?;
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, S1)])?;
    c.start()?;
    converged(&p, &c, "people", PEOPLE)?;
    let before = c.agreement_status("people")?;
    // Add `others`.
    let both = Consumer::configure(
        &tmp.path().join("c"),
        p.port,
        &[Agreement::persist("people", PEOPLE, S1), Agreement::persist("others", OTHERS, S2)],
    )?;
    drop(both);
    assert_eq!(c.admin("reload", None)?, "reloaded: added others\n");
    converged(&p, &c, "others", OTHERS)?;
    let after = c.agreement_status("people")?;
    assert_eq!(after["reconnects"], before["reconnects"], "the unchanged agreement was not touched");
    // Remove `people`.
    let only = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("others", OTHERS, S2)])?;
    drop(only);
    // The reply says what went with it, and so does the log, at WARN: a file cut short
    // shows there.
    let held = c.agreement_status("people")?["entries"].as_u64().context("entries")?;
    assert!(held > 0);
    assert_eq!(c.admin("reload", None)?, format!("reloaded: removed people (its replica of {held} entries deleted)\n"));
    // Deleted: the refusal of a search does not point at a copy that is gone.
    let refused = c.search_args(&["--agreement", "people"]).expect_err("removed");
    assert!(format!("{refused:#}").contains("the running consumer holds no replica"), "{refused:#}");
    assert!(!format!("{refused:#}").contains("--as-is"), "{refused:#}");
    // The log is written through a queue: the line may follow the command's answer.
    let removed = "removed the replica of an agreement the configuration no longer names";
    wait_until(LIMIT, "the removal in the consumer's log", || Ok(c.log_text().contains(removed)))?;
    let log = c.log_text();
    let warned = log.lines().find(|l| l.contains(removed));
    assert!(
        warned.is_some_and(|l| l.contains("WARN") && l.contains(&format!("agreement=people entries={held}"))),
        "{log}"
    );
    wait_until(LIMIT, "people to be removed", || {
        Ok(!c.status()?["agreements"].as_array().unwrap().iter().any(|a| a["name"] == "people"))
    })?;
    // The provider learns why the session ended: not a consumer shutting down.
    let why =
        "consumer said goodbye reason=\"shutdown\" detail=the agreement was removed from the configuration (reload)";
    wait_until(LIMIT, "the provider to log the goodbye", || Ok(p.log_text().contains(why)))?;
    p.write_ok(&w.changes(100))?;
    converged(&p, &c, "others", OTHERS)?;
    no_duplicates(&c, "others")?;
    // A changed region (a filter spelled anew, the same entries) restarts the agreement
    // with a full refresh, and the reply says so.
    let filtered = |filter: &str| Agreement { filter: filter.into(), ..Agreement::persist("others", OTHERS, S2) };
    drop(Consumer::configure(&tmp.path().join("c"), p.port, &[filtered("(|(objectClass=*)(cn=Anne Lee))")])?);
    // With the provider away, the reload's full refresh waits: a `wait` meanwhile says
    // the replica still holds entries (it said "nothing replicated yet").
    let held = c.agreement_status("others")?["entries"].as_u64().unwrap_or(0);
    assert!(p.stop()?.success());
    assert_eq!(c.admin("reload", None)?, "reloaded: restarted others (its region changed: reloaded in full)\n");
    let out = c.command_output("wait", &["--agreement", "others", "--csn", "1", "--timeout", "1s"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("with no position: its replica of {held} entries awaits a full refresh")), "{said}");
    p.start()?;
    converged(&p, &c, "others", OTHERS)?;
    assert_eq!(c.agreement_status("others")?["refreshes"]["full"], 1, "the restarted agreement's first refresh");
    // The filter's names and values in another case, with other spaces: the same
    // region as matching reads it, so the agreement restarts (its settings changed)
    // and resumes by delta.
    drop(Consumer::configure(&tmp.path().join("c"), p.port, &[filtered("(|(OBJECTCLASS=*)(CN= anne  LEE))")])?);
    assert_eq!(c.admin("reload", None)?, "reloaded: restarted others\n");
    p.write_ok(&w.changes(20))?;
    converged(&p, &c, "others", OTHERS)?;
    let st = c.agreement_status("others")?;
    assert!(st["refreshes"]["full"].is_null() && st["last_refresh"] == "delta", "{st}");

    // Removed while the consumer is stopped: its replica goes at the next start, as on
    // a reload, instead of staying on disk where no command would see it.
    assert!(c.stop()?.success());
    drop(Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, S1)])?);
    // Until then `search --as-is` reads it, from the base its replica recorded: it may be
    // the last copy of its region, and the agreement gone from the file must not hide it.
    let whole = p.search(OTHERS, "subtree", ALL)?;
    assert_eq!(c.search_args(&["--agreement", "others", "--as-is"])?, whole);
    let refused = c.search_args(&["--agreement", "never", "--as-is"]).expect_err("no such replica");
    assert!(
        format!("{refused:#}").contains("no agreement named \"never\", and the store holds no replica of that name"),
        "{refused:#}"
    );
    // Without --as-is, the refusal says where such a replica is read; of a name with no
    // replica it says so, and does not point at --as-is.
    let refused = c.search_args(&["--agreement", "others"]).expect_err("not in the file");
    let kept = "still holds the replica of an agreement of that name removed from the file";
    assert!(format!("{refused:#}").contains(kept), "{refused:#}");
    assert!(format!("{refused:#}").contains("search --as-is reads it"), "{refused:#}");
    let refused = c.search_args(&["--agreement", "never"]).expect_err("never in the file");
    assert!(format!("{refused:#}").contains("the store holds no replica of that name"), "{refused:#}");
    c.start()?;
    // The running consumer holds its store: --as-is says so, not that its socket
    // answers elsewhere.
    let refused = c.search_args(&["--agreement", "people", "--as-is"]).expect_err("the consumer runs");
    assert!(format!("{refused:#}").contains("a running consumer holds it: stop the consumer first"), "{refused:#}");
    converged(&p, &c, "people", PEOPLE)?;
    // Logged before the start's readiness, but through a queue: nothing the test saw
    // since waited for the line to be written.
    wait_until(LIMIT, "the removal in the consumer's log", || {
        Ok(c.log_text()
            .contains("removed the replica of an agreement the configuration no longer names agreement=others"))
    })
    .with_context(|| c.log_text())?;
    assert!(c.stop()?.success());
    drop(Consumer::configure(
        &tmp.path().join("c"),
        p.port,
        &[Agreement::persist("people", PEOPLE, S1), Agreement::persist("others", OTHERS, S2)],
    )?);
    c.start()?;
    converged(&p, &c, "others", OTHERS)?;
    assert_eq!(c.agreement_status("others")?["last_refresh"], "full", "added back, it starts afresh");

    // An agreement an operator stopped is not restarted by a reload that changes it:
    // the reply says what waits for its start.
    c.admin("stop", Some("others"))?;
    let respelled = Agreement { filter: "(|(objectClass=*))".into(), ..Agreement::persist("others", OTHERS, S2) };
    drop(Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, S1), respelled])?);
    assert_eq!(
        c.admin("reload", None)?,
        "reloaded: changed others (stopped; its region changed: reloaded in full when started)\n"
    );
    assert_eq!(c.agreement_status("others")?["state"], "stopped");
    c.admin("start", Some("others"))?;
    converged(&p, &c, "others", OTHERS)?;
    Ok(())
}

/// Rotating an agreement's secret: the provider's SIGHUP revokes the old one (the
/// agreement closes), and the consumer's `reload` after its file was rewritten in place
/// restarts the agreement with the new one. The config did not change, only the file's
/// contents, which `reload` used to ignore ("nothing changed"), leaving it closed until
/// the consumer process was restarted.
#[test]
fn a_secret_rotated_in_place_takes_effect_on_reload() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 300, 19, two_grants())?;
    let c = both_agreements(tmp.path(), &p)?;
    assert_eq!(c.admin("reload", None)?, "reloaded: nothing changed\n");

    let rotated = ProviderOptions {
        // Changed too, but a reload cannot apply it: the provider says so.
        keepalive: ("2s".into(), "6s".into()),
        ..grants_of("s1-rotated-for-tests", PEOPLE, OTHERS)
    };
    p.reconfigure(&rotated)?;
    p.reload()?;
    c.wait_status("people", LIMIT, "closed", |s| s["state"] == "closed")?;
    wait_until(LIMIT, "the reload's report", || Ok(p.log_text().contains("1 session revoked")))?;
    assert!(p.log_text().contains("1 session revoked; not applied until the provider restarts: keepalive"));
    // Caught mid-rotation, the secret gone: the reload fails whole, in the command's
    // output and in the consumer's log, which is where its operator looks.
    std::fs::remove_file(c.dir.join("secrets/people.key"))?;
    let failed = c.admin("reload", None).expect_err("a reload with a secret file missing");
    // Named as at start: the file, the key, the secret file (it used to name only the last).
    let key = format!("{}: key 'agreement[0].secret_file': ", c.config.display());
    assert!(
        format!("{failed:#}").contains(&format!("{key}{}", c.dir.join("secrets/people.key").display())),
        "{failed:#}"
    );
    assert!(format!("{failed:#}").contains("people.key: cannot read secret file"), "{failed:#}");
    assert!(format!("{failed:#}").contains("; nothing changed: the consumer keeps the configuration it last read"));
    // The log is written through a queue: the line may follow the command's answer.
    wait_until(LIMIT, "the failed reload in the consumer's log", || {
        Ok(c.log_text().contains("reload requested on the control socket failed, keeping the running agreements: "))
    })
    .with_context(|| c.log_text())?;
    // `status` warns of it, as of any file the next start would refuse (a start would
    // stop on it, every agreement with it), and shows the running consumer.
    let out = c.status_command()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout)?["running"], true);
    assert!(
        stderr.starts_with(&format!("warning: {key}"))
            && stderr.contains("its next start or reload would refuse this file"),
        "{stderr}"
    );
    // A file that does not load (an edit under way): the commands an operator runs
    // meanwhile are answered by the running consumer, by what it last read, with the
    // same warning (they were refused with the file's error, so an agreement could not
    // be stopped while its file was being edited).
    let file = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, format!("cache_size = \"5 parsecs\"\n{file}"))?;
    let key = format!("{}: key 'cache_size': ", c.config.display());
    let warned = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.starts_with(&format!("warning: {key}"))
                && stderr.contains("the running tether-consumer answered, which keeps the configuration it last read"),
            "{stderr}"
        );
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (code, stdout, stderr) = warned(&c.command_output("stop", &["others"])?);
    assert!(code == Some(0) && stdout.starts_with("others: stopped (it was persisting)"), "{stdout} {stderr}");
    assert_eq!(c.agreement_status("others")?["state"], "stopped");
    let (code, held, stderr) = warned(&c.search_output(&["--agreement", "others"])?);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(held, p.search(OTHERS, "sub", "(objectClass=*)")?, "the whole replica, from the root");
    // Its base the file's to give, a narrower scope cannot do without the file.
    let out = c.search_output(&["--agreement", "others", "--scope", "one"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("tether-consumer: {key}")) && !stderr.contains("warning"), "{stderr}");
    let (code, stdout, stderr) = warned(&c.command_output("start", &["others"])?);
    assert!(code == Some(0) && stdout.starts_with("others: started (it was stopped)"), "{stdout} {stderr}");
    c.wait_status("others", LIMIT, "persisting", |s| s["state"] == "persisting")?;
    let (code, _, stderr) = warned(&c.command_output("wait", &["--agreement", "others", "--csn", "1"])?);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = warned(&c.command_output("restart", &["others"])?);
    assert_eq!(code, Some(0), "{stderr}");
    // The running consumer checks the name, as the file would have.
    let (code, _, stderr) = warned(&c.command_output("stop", &["nosuch"])?);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no agreement named \"nosuch\" (there are others, people)"), "{stderr}");
    std::fs::write(&c.config, file)?;
    // And from the file, once it loads: the names to choose from, so a typo shows.
    let out = c.command_output("start", &["peple"])?;
    let (code, stderr) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no agreement named \"peple\" (there are others, people)"), "{stderr}");
    let key_file = c.dir.join("secrets/people.key");
    std::fs::write(&key_file, "s1-rotated-for-tests\n")?;
    // Left readable by others, as a file written under a usual umask is: the reply says
    // so, where the operator who wrote it looks, not only the log.
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let said = c.admin("reload", None)?;
    assert!(
        said.starts_with("reloaded: restarted people; warning: secret file "),
        "only the changed agreement: {said}"
    );
    assert!(said.contains("is accessible by group or others"), "{said}");
    c.wait_status("people", LIMIT, "persisting", |s| s["state"] == "persisting")?;
    p.write_ok(&w.changes(100))?;
    converged(&p, &c, "people", PEOPLE)?;
    converged(&p, &c, "others", OTHERS)?;
    assert_eq!(c.agreement_status("people")?["last_refresh"], "delta", "the replica was kept");
    Ok(())
}

/// A provider reload that changes an agreement's grant ends only the sessions it no
/// longer covers. Widening `people` used to end its sessions as revoked, which closed
/// the consumer's agreement until an operator started it again.
#[test]
fn a_widened_grant_keeps_its_sessions_and_one_narrowed_below_a_session_ends_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 300, 20, two_grants())?;
    let c = both_agreements(tmp.path(), &p)?;
    let reconnects = c.agreement_status("people")?["reconnects"].clone();
    p.reconfigure(&grants_of(S1, SUFFIX, OTHERS))?;
    p.reload()?;
    wait_until(LIMIT, "the reload", || Ok(p.log_text().contains("0 sessions revoked")))?;
    p.write_ok(&w.changes(50))?;
    converged(&p, &c, "people", PEOPLE)?;
    let s = c.agreement_status("people")?;
    assert_eq!((s["state"].as_str(), &s["reconnects"]), (Some("persisting"), &reconnects), "{s}");

    // `others` now covers only a branch below the session's base.
    p.reconfigure(&grants_of(S1, SUFFIX, &format!("ou=branch,{OTHERS}")))?;
    p.reload()?;
    let s = c.wait_status("others", LIMIT, "closed", |s| s["state"] == "closed")?;
    assert!(s["last_error"].as_str().unwrap_or_default().contains("does not cover this session's"), "{s}");
    assert_eq!(c.agreement_status("people")?["reconnects"], reconnects, "people is untouched");
    Ok(())
}

/// `tether-provider reload` says what SIGHUP only logs: the reload's report, or why it
/// changed nothing (exit status 1), for a file that does not parse and for one naming a
/// secret file that is not there; and that no provider is running, when none is.
#[test]
fn the_provider_s_reload_command_reports_what_it_did_and_a_broken_file_changes_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 300, 21, two_grants())?;
    let c = both_agreements(tmp.path(), &p)?;
    let reconnects = c.agreement_status("people")?["reconnects"].clone();
    let said = |out: &std::process::Output| {
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, _) = said(&p.reload_command()?);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("reloaded ") && stdout.ends_with(": 2 agreements, 0 sessions revoked\n"), "{stdout:?}");
    // A retention change applies at once, and the reply says so.
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(&p.config, config.replacen("[changelog]\n", "[changelog]\nmax_changes = 123456\n", 1))?;
    let (code, stdout, _) = said(&p.reload_command()?);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("0 sessions revoked; changelog retention now max_changes 123456, max_age "), "{stdout:?}");
    assert!(stdout.contains(", trim_interval ") && stdout.contains(" (trimming now)"), "{stdout:?}");
    std::fs::write(&p.config, &config)?;
    let (code, _, _) = said(&p.reload_command()?);
    assert_eq!(code, Some(0));

    // A file the provider would refuse: the command refuses it the same way, naming the key.
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(&p.config, config.replacen("interval = ", "interval = \"5 parsecs\"\n# was ", 1))?;
    let (code, stdout, stderr) = said(&p.reload_command()?);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(stderr.contains("key 'keepalive.interval': invalid duration \"5 parsecs\""), "{stderr}");
    assert!(stderr.contains("; nothing was reloaded: the provider keeps the configuration it last read"), "{stderr}");
    // Meanwhile `status` still reads the running provider, and warns of the file.
    let (code, stdout, stderr) = said(&p.status_command()?);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout)?["running"], true, "{stdout}");
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("invalid duration \"5 parsecs\"")
            && stderr.contains("this is the status of the running tether-provider"),
        "{stderr}"
    );
    // So does `search` given its base (the default is the file's suffix), with the warning.
    let out = p.search_output(&["--base", OTHERS])?;
    let (code, stdout, stderr) = said(&out);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.starts_with("warning: ") && stderr.contains("the running tether-provider answered"), "{stderr}");
    std::fs::write(&p.config, &config)?;
    assert_eq!(stdout, p.search(OTHERS, "sub", "(objectClass=*)")?);
    std::fs::write(&p.config, config.replacen("interval = ", "interval = \"5 parsecs\"\n# was ", 1))?;
    let (code, stdout, stderr) = said(&p.search_output(&[])?);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(stderr.contains("invalid duration \"5 parsecs\"") && !stderr.contains("warning"), "{stderr}");
    std::fs::write(&p.config, &config)?;

    // A file that parses, but whose grant cannot be read: the provider's own reload fails,
    // and the command prints its error; the running grant stays.
    let secret = p.dir.join("secrets/people.key");
    let kept = std::fs::read(&secret)?;
    std::fs::remove_file(&secret)?;
    let (code, stdout, stderr) = said(&p.reload_command()?);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(stderr.contains("people.key"), "{stderr}");
    assert!(stderr.contains("; nothing changed: the provider keeps the configuration it last read"), "{stderr}");
    // The log is written through a queue: the line may follow the command's answer.
    wait_until(LIMIT, "the failed reload in the provider's log", || {
        Ok(p.log_text().contains("reload requested on the control socket failed, keeping the old configuration"))
    })?;
    // `status` warns of it as of any file the next start would refuse: a secret lost
    // is found by the monitoring that runs `status`, not by a restart that fails.
    let (code, stdout, stderr) = said(&p.status_command()?);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout)?["running"], true, "{stdout}");
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains(".secret_file'")
            && stderr.contains("people.key")
            && stderr.contains("its next start or reload would refuse this file"),
        "{stderr}"
    );
    std::fs::write(&secret, kept)?;
    // Put back readable by others: the reload's reply warns of it, not only the log.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let (code, stdout, stderr) = said(&p.reload_command()?);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("; warning: secret file ") && stdout.contains("people.key is accessible by group"),
        "{stdout}"
    );
    // And `status` warns of it as the reload did: monitoring that runs it sees it too.
    let (code, stdout, stderr) = said(&p.status_command()?);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout)?["running"], true, "{stdout}");
    assert!(
        stderr.starts_with("warning: secret file ") && stderr.contains("people.key is accessible by group"),
        "{stderr}"
    );
    // `write` reads the writer's secret, and warns of it the same way, then writes.
    let writer = p.dir.join("secrets/writer.key");
    std::fs::set_permissions(&writer, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let ldif = "dn: ou=people,dc=example,dc=com\nchangetype: modify\nreplace: description\ndescription: mode\n";
    let (code, _, stderr) = said(&p.write(ldif)?);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.starts_with("warning: secret file ")
            && stderr.contains("writer.key is accessible by group")
            && stderr.ends_with("1 record applied\n"),
        "{stderr}"
    );
    std::fs::set_permissions(&writer, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;

    // An edited copy of the file, naming the same socket: the provider reads its own
    // file, so the command says so and nothing is reloaded (it answered "reloaded", for
    // the file the provider was started with, and the copy was never read).
    let copy = p.dir.join("copy.toml");
    std::fs::write(&copy, config.replacen("interval = ", "interval = \"2s\"\n# was ", 1))?;
    let reloads =
        |p: &Provider| p.log_text().matches("reloaded ").count() + p.log_text().matches("reload requ").count();
    // Lines reach the log through a queue, in order: once the write's is there, so is
    // every reload's before it, and none lands between the two counts.
    wait_until(LIMIT, "the write in the provider's log", || Ok(p.log_text().contains("write committed")))?;
    let before = reloads(&p);
    let out = std::process::Command::new(replication_tests::harness::bin("tether-provider")?)
        .args(["reload", "-c"])
        .arg(&copy)
        .output()?;
    let (code, stdout, stderr) = said(&out);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    let (own, copy) = (std::fs::canonicalize(&p.config)?, std::fs::canonicalize(&copy)?);
    assert!(
        stderr.contains(&format!(
            "this tether-provider was started with {}, and reload re-reads that file, not {}",
            own.display(),
            copy.display()
        )) && stderr.contains("nothing was reloaded"),
        "{stderr}"
    );
    assert_eq!(reloads(&p), before, "nothing was reloaded");
    // The copy given to `status`: refused the same way, naming both files, rather than
    // showing the running provider as the copy's.
    let status_of = |file: &Path| -> Result<std::process::Output> {
        let provider = replication_tests::harness::bin("tether-provider")?;
        Ok(std::process::Command::new(provider).args(["status", "--json", "-c"]).arg(file).output()?)
    };
    let (code, stdout, stderr) = said(&status_of(&copy)?);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    let elsewhere = |own: &Path, copy: &Path, process: &str| {
        format!("this {process} was started with {}, not {}, whose `control`", own.display(), copy.display())
    };
    assert!(
        stderr.contains(&elsewhere(&own, &copy, "tether-provider")) && stderr.contains("nothing was done"),
        "{stderr}"
    );
    // And a copy being edited, with an error in it: not shown the running provider's
    // status as its own (a file of the provider's own with an error is, above).
    let broken = p.dir.join("broken-copy.toml");
    std::fs::write(&broken, format!("{config}\nbogus_key = 1\n"))?;
    let (code, stdout, stderr) = said(&status_of(&broken)?);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(stderr.contains(&elsewhere(&own, &std::fs::canonicalize(&broken)?, "tether-provider")), "{stderr}");
    // A copy of the consumer's file beside it names the same socket: `stop` through it
    // stops nothing.
    let consumer_copy = c.dir.join("copy.toml");
    std::fs::copy(&c.config, &consumer_copy)?;
    let out = std::process::Command::new(replication_tests::harness::bin("tether-consumer")?)
        .args(["stop", "-c"])
        .arg(&consumer_copy)
        .arg("people")
        .output()?;
    let (code, stdout, stderr) = said(&out);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    let (own, copy) = (std::fs::canonicalize(&c.config)?, std::fs::canonicalize(&consumer_copy)?);
    assert!(stderr.contains(&elsewhere(&own, &copy, "tether-consumer")), "{stderr}");
    assert_eq!(c.agreement_status("people")?["state"], "persisting", "nothing was stopped");
    p.write_ok(&w.changes(50))?;
    converged(&p, &c, "people", PEOPLE)?;
    let s = c.agreement_status("people")?;
    assert_eq!((s["state"].as_str(), &s["reconnects"]), (Some("persisting"), &reconnects), "{s}");

    p.stop()?;
    let (code, _, stderr) = said(&p.reload_command()?);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("the provider is not running"), "{stderr}");
    Ok(())
}

#[test]
fn revoked_credentials_end_in_closed_without_a_retry_storm() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 300, 18, two_grants())?;
    let c = both_agreements(tmp.path(), &p)?;
    let only_others = ProviderOptions {
        grants: vec![Grant { agreement: "others".into(), secret: S2.into(), base: OTHERS.into() }],
        ..ProviderOptions::default()
    };
    p.reconfigure(&only_others)?;
    p.reload()?;
    let s = c.wait_status("people", LIMIT, "closed", |s| s["state"] == "closed")?;
    assert_eq!(s["last_disconnect"], "provider-goodbye");
    assert!(s["last_error"].as_str().unwrap_or_default().contains("revoked"), "{s}");
    let reconnects = s["reconnects"].clone();
    assert_holds(QUIET, "no retry storm", || Ok(c.agreement_status("people")?["reconnects"] == reconnects))?;
    assert_eq!(c.agreement_status("others")?["state"], "persisting", "the other agreement is untouched");
    assert!(p.log_text().contains("1 session revoked"));
    // A `wait` on it says what brings it back: not a bare `start`, which the provider
    // would refuse.
    let out = c.wait_csn("people", u64::MAX, "1s")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("stays there until the provider grants it again"), "{err}");
    Ok(())
}

/// What the impostor of [`an_impostor_on_the_provider_s_address_is_refused_and_the_replica_kept`]
/// was sent.
#[derive(Debug, Default)]
struct ImpostorSaw {
    /// Hellos read.
    hellos: std::sync::atomic::AtomicU64,
    /// MACs the consumer sent to it: it believed the impostor.
    auths: std::sync::atomic::AtomicU64,
    /// Goodbyes the consumer sent it instead.
    goodbyes: std::sync::atomic::AtomicU64,
}

/// The reading half of a fake provider's connection.
type FakeReader = tether_protocol::connection::MessageReader<tokio::net::tcp::OwnedReadHalf>;
/// The writing half of a fake provider's connection.
type FakeWriter = tether_protocol::connection::MessageWriter<tokio::net::tcp::OwnedWriteHalf>;

/// Serves each connection to `listener` with `serve`, a provider written by hand, on a
/// task of its own, until `stop`.
async fn fake_provider<F, Fut>(listener: tokio::net::TcpListener, stop: tokio_util::sync::CancellationToken, serve: F)
where
    F: Fn(FakeReader, FakeWriter) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
        };
        if let Ok((r, w)) = tether_protocol::connection::from_tcp(stream) {
            tokio::spawn(serve(r, w));
        }
    }
}

/// Plays a provider of protocol version 2 without the secret on `listener` until `stop`:
/// it takes any answer to its challenge and refreshes the consumer to nothing.
async fn impostor(
    listener: tokio::net::TcpListener,
    saw: std::sync::Arc<ImpostorSaw>,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use tether_protocol::message::{Message, RefreshKind, Welcome};
    use tether_protocol::{Cookie, Csn, HistoryId};
    fake_provider(listener, stop, move |mut r, mut w| {
        let saw = saw.clone();
        async move {
            if !matches!(r.recv().await, Ok(Some(Message::Hello(_)))) {
                return;
            }
            saw.hellos.fetch_add(1, Relaxed);
            if w.send(&Message::Challenge { nonce: [1; 32] }).await.is_err() {
                return;
            }
            match r.recv().await {
                Ok(Some(Message::Auth { .. })) => {
                    saw.auths.fetch_add(1, Relaxed);
                    let history = HistoryId::new_random();
                    let welcome = Welcome {
                        version: 2,
                        history,
                        session_id: 666,
                        keepalive_interval_ms: 5_000,
                        keepalive_timeout_ms: 20_000,
                    };
                    let _ = w.send(&Message::Welcome(welcome)).await;
                    let _ = w.send(&Message::RefreshBegin { kind: RefreshKind::Full, resumed: false }).await;
                    let _ = w.send(&Message::RefreshDone { cookie: Cookie { history, csn: Csn(1) } }).await;
                    while let Ok(Some(_)) = r.recv().await {}
                }
                Ok(Some(Message::Goodbye { .. })) => {
                    saw.goodbyes.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    })
    .await
}

/// The provider stops, and something else takes its port: a peer that speaks the
/// protocol but does not know the agreement's secret, pretending to be a provider of an
/// older build. The consumer, whose provider proved itself before, refuses it before
/// sending anything of the secret, keeps its replica whole, says why in status, and
/// resumes by delta when the provider is back.
#[test]
fn an_impostor_on_the_provider_s_address_is_refused_and_the_replica_kept() -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w, c) = converged_pair(tmp.path(), 300, 19, "300ms")?;
    let before = c.agreement_status("people")?;
    assert_eq!(before["protocol_version"], 3, "{before}");
    assert!(before["provider_proved_at"].is_string(), "{before}");
    let replica = c.search("people", PEOPLE, "subtree", ALL)?;
    assert!(p.stop()?.success());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", p.port)))?;
    let saw = std::sync::Arc::new(ImpostorSaw::default());
    let stop = tokio_util::sync::CancellationToken::new();
    rt.spawn(impostor(listener, saw.clone(), stop.clone()));
    let s = c.wait_status("people", LIMIT, "the impostor refused twice", |s| {
        s["last_disconnect"] == "exception" && saw.goodbyes.load(Relaxed) >= 2
    })?;
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("did not prove it knows the agreement's secret"), "{s}");
    assert_eq!(saw.auths.load(Relaxed), 0, "no MAC went to the impostor");
    assert_eq!(c.search("people", PEOPLE, "subtree", ALL)?, replica, "the replica is whole");
    assert_eq!(c.agreement_status("people")?["cookie"], before["cookie"]);
    stop.cancel();
    drop(rt);

    p.start()?;
    p.write_ok(&w.changes(40))?;
    converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["last_refresh"], "delta");
    no_duplicates(&c, "people")
}

/// Answers every `Hello` on `listener` with a goodbye for `reason` (what a stranger
/// without the secret can say), counting the hellos, until `stop`.
async fn goodbye_sayer(
    listener: tokio::net::TcpListener,
    reason: tether_protocol::message::GoodbyeReason,
    hellos: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tether_protocol::message::Message;
    fake_provider(listener, stop, move |mut r, mut w| {
        let hellos = hellos.clone();
        async move {
            if matches!(r.recv().await, Ok(Some(Message::Hello(_)))) {
                hellos.lock().unwrap_or_else(|p| p.into_inner()).push(std::time::Instant::now());
                let _ = w.send(&Message::Goodbye { reason, detail: "said by a stranger".into() }).await;
            }
        }
    })
    .await
}

/// A goodbye said before the provider proved itself is a stranger's word: neither
/// `credentials-revoked` (which used to close the agreement until `start`) nor
/// `refresh-required` (which used to make the consumer reconnect at once, thousands of
/// times a second) is acted on; the consumer retries on its schedule, keeps its replica,
/// and resumes by delta when the provider is back.
#[test]
fn a_goodbye_before_the_provider_proved_itself_is_not_acted_on() -> Result<()> {
    use tether_protocol::message::GoodbyeReason;
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w, mut c) = converged_pair(tmp.path(), 200, 23, "300ms")?;
    let replica = c.search("people", PEOPLE, "subtree", ALL)?;
    assert!(p.stop()?.success());

    for reason in [GoodbyeReason::CredentialsRevoked, GoodbyeReason::RefreshRequired] {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", p.port)))?;
        let hellos = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        rt.spawn(goodbye_sayer(listener, reason, hellos.clone(), stop.clone()));
        let count = || hellos.lock().unwrap_or_else(|e| e.into_inner()).len();
        wait_until(LIMIT, "five connections to the stranger", || Ok(count() >= 5))?;
        let s = c.agreement_status("people")?;
        assert_ne!(s["state"], "closed", "{reason:?}: {s}");
        assert_eq!(s["last_disconnect"], "provider-goodbye", "{s}");
        assert!(s["last_error"].as_str().unwrap_or_default().contains("before the provider proved itself"), "{s}");
        // Each retry waits the schedule's 300 ms (less its 20% jitter): four gaps take
        // at least 0.96 s, where reconnecting at once would take a few milliseconds.
        let seen = hellos.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let span = seen[4].duration_since(seen[0]);
        assert!(span >= Duration::from_millis(900), "{reason:?}: five connections in {span:?}");
        stop.cancel();
        drop(rt);
    }
    assert_eq!(c.search("people", PEOPLE, "subtree", ALL)?, replica, "the replica is whole");

    p.start()?;
    p.write_ok(&w.changes(20))?;
    converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["last_refresh"], "delta");
    no_duplicates(&c, "people")?;
    // What the store keeps of the proof shows while the consumer is down too.
    let proved = c.agreement_status("people")?["provider_proved_at"].clone();
    assert!(proved.is_string(), "{proved}");
    assert!(c.stop()?.success());
    let offline = c.status()?;
    assert_eq!(offline["agreements"][0]["provider_proved_at"], proved, "{offline}");
    // ... and in a consumer started while the provider is down, before any connect.
    assert!(p.stop()?.success());
    c.start()?;
    c.wait_status("people", LIMIT, "the proof on record", |s| s["provider_proved_at"] == proved)?;
    Ok(())
}

/// An agreement an operator stopped runs no session, and so never reads the proof on
/// record: started stopped, the running consumer's status showed no
/// `provider_proved_at`, although the store keeps one (the consumer's status while it
/// was down showed it) and it still decides whether a provider is refused.
#[test]
fn a_stopped_agreement_shows_the_proof_on_record_after_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_p, _w, mut c) = converged_pair(tmp.path(), 50, 23, "300ms")?;
    let proved = c.agreement_status("people")?["provider_proved_at"].clone();
    assert!(proved.is_string(), "{proved}");
    c.admin("stop", Some("people"))?;
    assert!(c.stop()?.success());
    assert_eq!(c.status()?["agreements"][0]["provider_proved_at"], proved, "offline, from the store");
    c.start()?;
    let s = c.wait_status("people", LIMIT, "stopped", |s| s["state"] == "stopped")?;
    assert_eq!(s["provider_proved_at"], proved, "{s}");
    Ok(())
}
