//! A store whose storage fails under a running process. Each process runs under a file
//! size limit (the harness's `file_size_limit`), so sled's log write fails with EFBIG
//! exactly where a full disk fails it with ENOSPC, and sled keeps that error for the open
//! store: nothing but a new process goes on.
//!
//! - The provider says goodbye to its consumers, exits 1 with the failure, and reports
//!   the write in flight as of unknown outcome; restarted, it holds every acknowledged
//!   write and its consumers resume by delta.
//! - A consumer's agreements stop with the failure in status, `start`, `restart` and
//!   `reload` are refused with the way out, and a restart of the process resumes from
//!   the durable cookie, with nothing lost or applied twice.
//! - A value large enough for sled to keep in a blob file of its own, whose write
//!   fails: sled then never finishes a flush again, and either process still stops, exit
//!   status 1, rather than waiting for ever on the flush sled runs as a store is dropped.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use replication_tests::harness::{
    applied_count, largest_file, wait_exit, wait_until, Agreement, Consumer, Grant, Provider, ProviderOptions,
    PEOPLE_SECRET,
};
use replication_tests::workload::PEOPLE;

const LIMIT: Duration = Duration::from_secs(120);
const ALL: &str = "(objectClass=*)";
/// Room left in the store's files past their size at start: a few hundred of the adds
/// below, so the failure comes soon but only after some of them were acknowledged.
const HEADROOM: u64 = 2 << 20;

/// `n` adds under `ou=people` of about 2 KiB each, with uids `big<i>`.
fn big_adds(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let _ = write!(
            out,
            "dn: uid=big{i},{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: big{i}\ncn: Big {i}\nsn: Big\n\
             description: {}\n\n",
            format!("{i:06}").repeat(340)
        );
    }
    out
}

fn same(p: &Provider, c: &Consumer) -> Result<bool> {
    Ok(p.search(PEOPLE, "subtree", ALL)? == c.search("people", PEOPLE, "subtree", ALL)?)
}

/// The refreshes the consumer process has made of its `people` replica.
fn refreshes(c: &Consumer) -> Result<u64> {
    let s = c.agreement_status("people")?;
    Ok(s["refreshes"].as_object().map_or(0, |kinds| kinds.values().filter_map(serde_json::Value::as_u64).sum()))
}

/// Waits until the consumer's `people` replica is the provider's again after a refresh
/// past the `before` its process had made until the restart, and checks that it got
/// there from its durable cookie (a delta), applying nothing twice. (A replica that held
/// every acknowledged write already is the provider's before it reconnects.)
fn resumed_by_delta(p: &Provider, c: &Consumer, before: u64) -> Result<()> {
    wait_until(LIMIT, "the consumer to refresh and converge after the restart", || {
        Ok(refreshes(c)? > before && same(p, c)?)
    })?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["last_refresh"], "delta", "resumed from its cookie: {s}");
    assert_eq!(s["duplicates"], 0, "exactly once: {s}");
    Ok(())
}

#[test]
fn a_provider_whose_store_fails_says_goodbye_exits_1_and_loses_no_acknowledged_write() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = Provider::loaded(tmp.path(), 300, 41, &Default::default())?;
    p.stop()?;
    p.file_size_limit = Some(largest_file(&p.dir.join("data"))? + HEADROOM);
    p.start()?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;
    let before = refreshes(&c)?;

    let out = p.write(&big_adds(5000))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "5000 adds of 2 KiB cannot fit: {stderr}");
    assert!(stderr.contains("the provider's store failed"), "{stderr}");
    assert!(stderr.contains("the outcome of this record is unknown"), "{stderr}");
    let applied = applied_count(&stderr).context("the failed write names how many applied")?;
    assert!(applied > 0, "the limit leaves room for some adds: {stderr}");

    // The provider stops by itself, with the failure and exit status 1.
    let status = wait_exit(p.child.as_mut().context("provider running")?, LIMIT)?;
    p.child = None;
    assert_eq!(status.code(), Some(1), "a provider whose store failed exits 1");
    let log = p.log_text();
    assert!(log.contains("the store failed; stopping"), "{log}");
    assert!(log.contains("every acknowledged write is on disk"), "{log}");
    // Its consumers were told, rather than finding a dropped connection: sent before the
    // provider exited, the goodbye may still be on its way to the consumer.
    c.wait_status("people", LIMIT, "the provider's goodbye", |s| {
        s["disconnects"]["provider-goodbye"].as_u64() >= Some(1)
    })?;
    // ... and why: not a routine restart. The log is written through a queue: its line
    // may follow what status shows.
    wait_until(LIMIT, "the goodbye names the failure", || {
        Ok(c.log_text().contains("provider stopping: its store failed"))
    })
    .with_context(|| c.log_text())?;

    // Restarted without the limit: every acknowledged add, and at most the one in flight.
    p.file_size_limit = None;
    p.start()?;
    let found = p.search(PEOPLE, "subtree", "(uid=big*)")?.lines().filter(|l| l.starts_with("dn:")).count() as u64;
    assert!(found == applied || found == applied + 1, "{applied} acknowledged, {found} present");
    resumed_by_delta(&p, &c, before)?;
    Ok(())
}

#[test]
fn a_consumer_whose_store_fails_stops_its_agreements_and_a_restart_resumes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 300, 42, &Default::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;
    let converged = c.search("people", PEOPLE, "subtree", ALL)?;
    c.stop()?;
    c.file_size_limit = Some(largest_file(&c.dir.join("data"))? + HEADROOM);
    c.start()?;
    wait_until(LIMIT, "the consumer to resume", || Ok(c.agreement_status("people")?["state"] == "persisting"))?;

    // The provider takes every add; the consumer's store fails applying them.
    p.write_ok(&big_adds(3000))?;
    let s = c.wait_status("people", LIMIT, "closed", |s| s["state"] == "closed")?;
    assert_eq!(s["last_disconnect"], "exception", "{s}");
    assert!(s["last_error"].as_str().unwrap_or_default().contains("storage error"), "{s}");
    let status = c.status()?;
    let failure = status["store_error"].as_str().unwrap_or_default().to_owned();
    assert!(failure.contains("File too large"), "status names the store's failure: {status}");
    // The process says it once at ERROR, with the way on, for an alert on the log's errors.
    wait_until(LIMIT, "the store's failure at ERROR", || {
        Ok(c.log_text()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("the store failed") && l.contains("restart the consumer")))
    })?;
    // What sled still serves from its cache may never have reached the disk, and the
    // replica follows its provider no more: a search is refused, naming the way to read
    // what the disk holds.
    let refused = c.search("people", PEOPLE, "subtree", ALL).err().context("a search of the failed store")?;
    let refused = format!("{refused:#}");
    assert!(refused.contains("File too large") && refused.contains("searches are refused"), "{refused}");
    assert!(refused.contains("stop the consumer and search with --as-is"), "{refused}");
    // Starting again on the failed store is refused with the way out, not retried.
    for command in ["start", "restart", "reload"] {
        let name = (command != "reload").then_some("people");
        let refused = c.admin(command, name).err().with_context(|| format!("{command} on a failed store"))?;
        assert!(refused.to_string().contains("restart the consumer"), "{command}: {refused:#}");
    }
    assert_eq!(c.agreement_status("people")?["state"], "closed");
    // Said once, not again at each wake of the process's loop (the refused reload's
    // ERROR quotes it after words of its own).
    let told = |l: &&str| l.contains(" ERROR the store failed") && l.contains("restart the consumer");
    let log = c.log_text();
    assert_eq!(log.lines().filter(told).count(), 1, "{log}");

    // A failed store is no clean stop, for a service manager either.
    assert_eq!(c.stop()?.code(), Some(1), "a consumer whose store failed exits 1");
    // The way the refusal names: the stopped consumer's store, read afresh, holds at
    // least the replica it had converged to.
    let held = c.search_args(&["--agreement", "people", "--as-is", "--base", PEOPLE, "--filter", ALL])?;
    for dn in converged.lines().filter(|l| l.starts_with("dn: ")) {
        assert!(held.lines().any(|l| l == dn), "{dn} is on disk");
    }
    // Once the limit is lifted, a new process resumes from the durable cookie.
    c.file_size_limit = None;
    c.start()?;
    resumed_by_delta(&p, &c, 0)?;
    assert_eq!(c.status()?["store_error"], serde_json::Value::Null);
    Ok(())
}

/// A value sled keeps in a blob file of its own (a few hundred KiB and more) whose
/// write fails: sled 0.34 leaves its log buffer waiting for that writer for ever, so
/// every later flush never returns, sled's own flush as the store is dropped included.
/// The consumer used to hang at its SIGTERM (in the drop's flush, after "exiting
/// anyway"), and, when sled's background thread met the failure first, to show the
/// agreement persisting while its apply waited for good. Now the failure closes the
/// agreement, the stop exits 1 without flushing again, and a restart resumes.
#[test]
fn a_consumer_whose_store_fails_writing_a_large_value_exits_when_stopped_and_a_restart_resumes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 300, 43, &Default::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;
    c.stop()?;
    let limit = largest_file(&c.dir.join("data"))? + HEADROOM;
    c.file_size_limit = Some(limit);
    c.start()?;
    wait_until(LIMIT, "the consumer to resume", || Ok(c.agreement_status("people")?["state"] == "persisting"))?;

    // One value larger than any file the consumer may write: its blob file fails.
    let uid = p.search(PEOPLE, "one", "(uid=*)")?;
    let dn = uid.lines().find_map(|l| l.strip_prefix("dn: ")).context("an entry under people")?.to_owned();
    let size = usize::try_from(limit)? + (1 << 20);
    p.write_ok(&format!("dn: {dn}\nchangetype: modify\nadd: description\ndescription: {}\n-\n\n", "x".repeat(size)))?;
    let s = c.wait_status("people", LIMIT, "closed", |s| s["state"] == "closed")?;
    assert_eq!(s["last_disconnect"], "exception", "{s}");
    let status = c.status()?;
    assert!(status["store_error"].as_str().is_some_and(|e| !e.is_empty()), "status names the failure: {status}");

    // The stop ends, exit status 1, instead of waiting for ever on sled's flush.
    assert_eq!(c.stop()?.code(), Some(1), "a consumer whose store failed exits 1");
    c.file_size_limit = None;
    c.start()?;
    resumed_by_delta(&p, &c, 0)?;
    Ok(())
}

/// The provider's side of the same: a write of a value sled must keep in a blob file it
/// cannot write. The provider stops with the failure and exits 1 (sled's flush as the
/// store is dropped would never return), and holds every acknowledged write after.
#[test]
fn a_provider_whose_store_fails_writing_a_large_value_exits_1() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = Provider::loaded(tmp.path(), 300, 44, &Default::default())?;
    p.stop()?;
    let limit = largest_file(&p.dir.join("data"))? + HEADROOM;
    p.file_size_limit = Some(limit);
    p.start()?;
    p.write_ok(&big_adds(3))?;
    let size = usize::try_from(limit)? + (1 << 20);
    let out = p.write(&format!(
        "dn: uid=big0,{PEOPLE}\nchangetype: modify\nadd: description\ndescription: {}\n-\n\n",
        "x".repeat(size)
    ))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the provider's store failed"), "{stderr}");
    let status = wait_exit(p.child.as_mut().context("provider running")?, LIMIT)?;
    p.child = None;
    assert_eq!(status.code(), Some(1), "a provider whose store failed exits 1: {}", p.log_text());
    p.file_size_limit = None;
    p.start()?;
    let found = p.search(PEOPLE, "subtree", "(uid=big*)")?.lines().filter(|l| l.starts_with("dn:")).count();
    assert_eq!(found, 3, "the acknowledged adds are there");
    Ok(())
}

/// A backup restored without stopping the provider first: sled wrote on into the
/// unlinked files, the provider acknowledged writes that vanished at its exit, and
/// `status` showed the copy as a stopped store. Now the provider takes its files gone
/// as its store's failure: it acknowledges nothing more, exits 1 naming the cause, and
/// started again serves the copy, which its consumer converges to.
#[test]
fn a_store_restored_under_a_running_provider_stops_it_before_it_acknowledges_a_write() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = Provider::loaded(tmp.path(), 300, 45, &Default::default())?;
    p.stop()?;
    let backup = tmp.path().join("backup");
    p.back_up_store(&backup)?;
    p.start()?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    p.write_ok(&w.changes(10))?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;

    p.restore_store_under_it(&backup)?;
    let out = p.write(&big_adds(1))?;
    assert!(!out.status.success(), "acknowledged into a store no one will read: {out:?}");
    let status = wait_exit(p.child.as_mut().context("provider running")?, LIMIT)?;
    p.child = None;
    assert_eq!(status.code(), Some(1), "{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("the store's files were taken away while the process ran"), "{log}");
    assert!(log.contains("data/db was removed or moved") || log.contains("data/db was replaced"), "{log}");

    p.start()?;
    assert!(p.search(PEOPLE, "subtree", "(uid=big0)")?.is_empty(), "the add was not acknowledged, nor kept");
    wait_until(LIMIT, "the consumer to converge to the restored copy", || same(&p, &c))?;
    Ok(())
}

/// A consumer whose store's log is taken away under it, with the provider quiet: its
/// agreement stayed `persisting`, nothing logged, until the provider's next change, and
/// a refresh-only agreement between polls stayed `idle` until its next poll, an hour on
/// here. Now both close within seconds with the cause, and the process says it at exit.
#[test]
fn a_consumer_whose_store_is_taken_away_closes_its_agreements_without_waiting_for_a_change() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut opts = ProviderOptions::default();
    let polled = Grant { agreement: "polled".into(), ..opts.grants[0].clone() };
    opts.grants.push(polled);
    let (p, _w) = Provider::loaded(tmp.path(), 300, 46, &opts)?;
    let hourly = Agreement {
        mode: "refresh-only".into(),
        extra: "interval = \"1h\"\nretry = [\"200ms x1000\"]\n".into(),
        ..Agreement::persist("polled", PEOPLE, PEOPLE_SECRET)
    };
    let mut c = Consumer::configure(
        &tmp.path().join("c"),
        p.port,
        &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET), hourly],
    )?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;
    c.wait_status("polled", LIMIT, "the hourly poll done", |s| s["state"] == "idle")?;
    let data = c.dir.join("data");
    std::fs::rename(data.join("db"), data.join("db.aside"))?;
    let s =
        c.wait_status("people", LIMIT, "the agreement closed by the store's failure", |s| s["state"] == "closed")?;
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("the store's files were taken away")), "{s}");
    let s =
        c.wait_status("polled", LIMIT, "the idle agreement closed by the store's failure", |s| s["state"] == "closed")?;
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("the store's files were taken away")), "{s}");
    assert!(s.get("next_attempt_at").is_none_or(serde_json::Value::is_null), "no poll is promised: {s}");
    // A wait for a change it will not see is answered at once, with the way out that
    // works: `start` is refused on a failed store.
    let waited = c.wait_csn("polled", 1_000_000, "30s")?;
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(!waited.status.success() && said.contains("until a new consumer process opens the store"), "{said}");
    assert!(!said.contains("tether-consumer start"), "{said}");
    let status = c.status()?;
    assert!(status["store_error"].as_str().is_some_and(|e| e.contains("was removed or moved")), "{status}");
    let exit = c.stop()?;
    assert_eq!(exit.code(), Some(1), "{}", c.log_text());
    assert!(c.log_text().contains("restart the consumer: it opens what data_dir holds now"), "{}", c.log_text());
    Ok(())
}

/// An offline `load` whose store fails on a large value's blob file: it used to end
/// without latching the failure, and the store's drop then waited for ever on sled's
/// flush, with nothing printed. Now it exits 1 naming the way out and how many entries
/// went in before (the store's watchdog, reporting the failure first, gave no count),
/// and running the same load again with `--skip-existing` once the limit is lifted
/// finishes it, its entry count what the store holds.
#[test]
fn a_load_whose_store_fails_writing_a_large_value_exits_and_a_rerun_finishes_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut p = Provider::configure(&tmp.path().join("p"), &Default::default())?;
    let top = tmp.path().join("top.ldif");
    std::fs::write(
        &top,
        format!(
            "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
        ),
    )?;
    p.load(&top)?;
    let limit = largest_file(&p.dir.join("data"))? + HEADROOM;
    let size = usize::try_from(limit)? + (1 << 20);
    let mut file = String::new();
    // Two transactions of 2,000 entries go in before the one that fails.
    let entries = 5_000;
    for i in 0..entries {
        let _ = write!(file, "dn: uid=p{i},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: p{i}\ncn: P {i}\nsn: P\n");
        if i == 4_500 {
            let _ = writeln!(file, "description: {}", "x".repeat(size));
        }
        file.push('\n');
    }
    let people = tmp.path().join("people.ldif");
    std::fs::write(&people, file)?;

    p.file_size_limit = Some(limit);
    let mut load = p.spawn_load(&people, &[])?;
    let status = wait_exit(&mut load, LIMIT)?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut load.stderr.take().context("stderr")?, &mut stderr)?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run the same load again with --skip-existing"), "{stderr}");
    let said: u64 = stderr
        .split("; the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .with_context(|| format!("no count of the entries loaded before the failure: {stderr}"))?;
    let cut = p.status()?;
    let held = cut["entries"].as_u64().context("entries")?;
    assert!(said >= 2_000 && said + 2 <= held, "said {said} loaded, the store holds {held}: {stderr}");
    assert!(cut["unfinished_load"]["file"].as_str().is_some_and(|f| f.ends_with("people.ldif")), "{cut}");

    p.file_size_limit = None;
    // Nor is it served: the refusal says what the store holds.
    let err = p.start().expect_err("serve refuses a load that did not finish").to_string();
    assert!(err.contains(&format!("the load of {} begun at", people.display())), "{err}");
    assert!(err.contains(&format!(", {held} entries in all")), "{err}");
    let said = {
        let mut rerun = p.spawn_load(&people, &["--skip-existing"])?;
        let status = wait_exit(&mut rerun, LIMIT)?;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut rerun.stderr.take().context("stderr")?, &mut stderr)?;
        assert!(status.success(), "{stderr}");
        stderr
    };
    assert!(said.lines().any(|l| l.starts_with("loaded ")), "{said}");
    let found = p.search(PEOPLE, "subtree", "(uid=p*)")?.lines().filter(|l| l.starts_with("dn:")).count();
    assert_eq!(found, entries, "every entry of the file: {said}");
    let finished = p.status()?;
    assert_eq!(finished["entries"], entries + 2, "the count is what the store holds: {said}");
    assert!(finished["unfinished_load"].is_null(), "{finished}");
    Ok(())
}
