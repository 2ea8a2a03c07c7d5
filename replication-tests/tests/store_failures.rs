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

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use replication_tests::harness::{applied_count, largest_file, wait_exit, wait_until, Agreement, Consumer, Provider};
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

#[test]
fn a_provider_whose_store_fails_says_goodbye_exits_1_and_loses_no_acknowledged_write() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = Provider::loaded(tmp.path(), 300, 41, &Default::default())?;
    p.stop()?;
    p.file_size_limit = Some(largest_file(&p.dir.join("data"))? + HEADROOM);
    p.start()?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, "people-secret")])?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;

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
    // Its consumers were told, rather than finding a dropped connection.
    let s = c.agreement_status("people")?;
    assert!(s["disconnects"]["provider-goodbye"].as_u64() >= Some(1), "{s}");
    // ... and why: not a routine restart.
    let said = c.log_text();
    assert!(said.contains("provider stopping: its store failed"), "the goodbye names the failure: {said}");

    // Restarted without the limit: every acknowledged add, and at most the one in flight.
    p.file_size_limit = None;
    p.start()?;
    let found = p.search(PEOPLE, "subtree", "(uid=big*)")?.lines().filter(|l| l.starts_with("dn:")).count() as u64;
    assert!(found == applied || found == applied + 1, "{applied} acknowledged, {found} present");
    wait_until(LIMIT, "the consumer to converge after the restart", || same(&p, &c))?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["last_refresh"], "delta", "resumed from its cookie: {s}");
    assert_eq!(s["duplicates"], 0, "exactly once: {s}");
    Ok(())
}

#[test]
fn a_consumer_whose_store_fails_stops_its_agreements_and_a_restart_resumes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 300, 42, &Default::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, "people-secret")])?;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge", || same(&p, &c))?;
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
    // Starting again on the failed store is refused with the way out, not retried.
    for command in ["start", "restart", "reload"] {
        let name = (command != "reload").then_some("people");
        let refused = c.admin(command, name).err().with_context(|| format!("{command} on a failed store"))?;
        assert!(refused.to_string().contains("restart the consumer"), "{command}: {refused:#}");
    }
    assert_eq!(c.agreement_status("people")?["state"], "closed");

    // A failed store is no clean stop, for a service manager either.
    assert_eq!(c.stop()?.code(), Some(1), "a consumer whose store failed exits 1");
    // Once the limit is lifted, a new process resumes from the durable cookie.
    c.file_size_limit = None;
    c.start()?;
    wait_until(LIMIT, "the consumer to converge after its restart", || same(&p, &c))?;
    let s = c.agreement_status("people")?;
    assert_eq!(s["last_refresh"], "delta", "resumed from its cookie: {s}");
    assert_eq!(s["duplicates"], 0, "exactly once: {s}");
    assert_eq!(c.status()?["store_error"], serde_json::Value::Null);
    Ok(())
}
