//! End-to-end replication with the real binaries (issue: provider and consumer
//! processes): refresh, live changes, delta / present catch-up, scopes, rejections,
//! bad input, the provider's goodbye, and writes pipelined through the write API.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use replication_tests::harness::{
    wait_until, Agreement, Consumer, Grant, Provider, ProviderOptions, PEOPLE_SECRET, WRITER_SECRET,
};
use replication_tests::proxy::Proxy;
use replication_tests::workload::{Workload, OTHERS, PEOPLE, SUFFIX};

const CONVERGE: Duration = Duration::from_secs(90);
const ALL: &str = "(objectClass=*)";

fn count(ldif: &str) -> usize {
    ldif.lines().filter(|l| l.starts_with("dn:")).count()
}

/// A provider loaded with `n` generated people, running.
fn provider_with(root: &Path, n: usize, seed: u64, opts: ProviderOptions) -> Result<(Provider, Workload)> {
    Provider::loaded(root, n, seed, &opts)
}

fn same(p: &Provider, c: &Consumer, agreement: &str, base: &str, filter: &str) -> Result<bool> {
    Ok(p.search(base, "subtree", filter)? == c.search(agreement, base, "subtree", filter)?)
}

fn wait_converged(p: &Provider, c: &Consumer, agreement: &str, base: &str) -> Result<()> {
    wait_until(CONVERGE, &format!("{agreement} to converge"), || same(p, c, agreement, base, ALL))
}

/// A persist consumer of `people` from `p`, started and converged.
fn people_consumer(root: &Path, p: &Provider) -> Result<Consumer> {
    people_consumer_in(&root.join("c"), p)
}

/// [`people_consumer`] in the folder `dir`.
fn people_consumer_in(dir: &Path, p: &Provider) -> Result<Consumer> {
    let mut c = Consumer::configure(dir, p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    wait_converged(p, &c, "people", PEOPLE)?;
    Ok(c)
}

/// The provider's newest CSN and its `known consumers` entry for `agreement` (null if
/// it has none), as `{"csn", "consumer"}`.
fn known_position(p: &Provider, agreement: &str) -> Result<serde_json::Value> {
    let status = p.status()?;
    let known = status["consumers"].as_array().and_then(|c| c.iter().find(|x| x["agreement"] == agreement));
    Ok(serde_json::json!({ "csn": status["csn"], "consumer": known }))
}

/// Whether the consumer warned of the provider's goodbye `reason` (one an operator must
/// act on), and of the disconnect it made, as the monitoring table of operations.md has
/// both.
fn warned_of_goodbye(c: &Consumer, reason: &str) -> bool {
    let said = format!("provider said goodbye reason=\"{reason}\"");
    let log = c.log_text();
    let warned = |what: &[&str]| log.lines().any(|l| l.contains(" WARN ") && what.iter().all(|w| l.contains(w)));
    warned(&[&said]) && warned(&[": disconnected session=", "reason=\"provider-goodbye\""])
}

fn last_refresh(c: &Consumer, agreement: &str) -> Result<String> {
    Ok(c.agreement_status(agreement)?["last_refresh"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn persist_consumer_converges_on_5000_entries_and_500_writes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 5000, 1, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    assert!(count(&c.search("people", PEOPLE, "subtree", ALL)?) > 3500);
    assert_eq!(last_refresh(&c, "people")?, "full");
    p.write_ok(&w.changes(500))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let status = c.agreement_status("people")?;
    assert_eq!(status["state"], "persisting");
    assert_eq!(status["last_refresh"], "full", "live changes arrived without another refresh");
    // Both sides show the protocol version their handshake chose (this build's newest).
    let newest = *tether_protocol::message::SUPPORTED_VERSIONS.iter().max().context("versions")?;
    assert_eq!(status["protocol_version"], newest, "{status}");
    let sessions = p.status()?["sessions"].clone();
    assert_eq!(sessions[0]["protocol_version"], newest, "{sessions}");
    // The provider's session shows what the consumer acknowledged: converged, it lags
    // by nothing (a session that recorded no ack showed a lag of every change made).
    wait_until(CONVERGE, "the provider's session to show the consumer's acknowledgements", || {
        Ok(p.status()?["sessions"][0]["lag_changes"] == 0)
    })?;
    // The consumer shows the id the provider knows it by, so its rows there can be found.
    let id = c.status()?["consumer_id"].clone();
    assert!(id.as_str().is_some_and(|id| !id.is_empty()), "{id}");
    assert_eq!(sessions[0]["client"], id, "{sessions}");
    // Both stores were made in folders only their user can enter.
    for data in [p.dir.join("data"), c.dir.join("data")] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&data)?.permissions());
        assert_eq!(mode & 0o777, 0o700, "{}", data.display());
    }
    Ok(())
}

/// A refresh-only consumer of `people` from `p` polling every 300 ms, started and
/// converged.
fn polling_consumer(root: &Path, p: &Provider) -> Result<Consumer> {
    let a = Agreement {
        mode: "refresh-only".into(),
        extra: "interval = \"300ms\"\nretry = [\"200ms x1000\"]\n".into(),
        ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET)
    };
    let mut c = Consumer::configure(&root.join("c"), p.port, &[a])?;
    c.start()?;
    wait_converged(p, &c, "people", PEOPLE)?;
    Ok(c)
}

#[test]
fn refresh_only_consumer_converges_by_polling() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 2000, 2, ProviderOptions::default())?;
    let mut c = polling_consumer(tmp.path(), &p)?;
    p.write_ok(&w.changes(300))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    wait_until(CONVERGE, "a delta poll", || Ok(last_refresh(&c, "people")? == "delta"))?;
    let status = c.agreement_status("people")?;
    assert!(status["refreshes"]["delta"].as_u64().unwrap_or(0) >= 1);
    // Between polls, status says when the next one is.
    let idle = c.wait_status("people", CONVERGE, "an idle agreement", |s| s["state"] == "idle")?;
    assert!(idle["next_attempt_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{idle}");
    assert!(status["disconnects"].as_object().is_none_or(|d| d.is_empty()), "polls are not disconnects: {status}");
    assert_eq!(status["reconnects"], 0, "nor reconnects: {status}");
    // A poll that brings nothing logs nothing at INFO on either side; one that changes
    // the replica leaves one line on each. (Not checked when a log level was chosen.)
    if std::env::var_os("TETHER_CHILD_LOG").is_none() {
        let polls = |c: &Consumer| -> Result<u64> {
            Ok(c.agreement_status("people")?["refreshes"]["delta"].as_u64().unwrap_or(0))
        };
        // One poll first, so that no line of the polls before is still being written.
        let first = polls(&c)?;
        wait_until(CONVERGE, "one more poll", || Ok(polls(&c)? > first))?;
        let (c_from, p_from, before) = (c.log_text().len(), p.log_text().len(), polls(&c)?);
        wait_until(CONVERGE, "three more polls", || Ok(polls(&c)? >= before + 3))?;
        let (c_log, p_log) = (c.log_text()[c_from..].to_owned(), p.log_text()[p_from..].to_owned());
        assert!(c_log.is_empty(), "empty polls logged on the consumer:\n{c_log}");
        assert!(p_log.is_empty(), "empty polls logged on the provider:\n{p_log}");
        let (c_from, p_from) = (c.log_text().len(), p.log_text().len());
        p.write_ok(&w.changes(1))?;
        wait_converged(&p, &c, "people", PEOPLE)?;
        let since = |log: String, from: usize| log[from..].to_owned();
        wait_until(CONVERGE, "the poll's log lines", || {
            Ok(since(c.log_text(), c_from).contains("refresh complete")
                && since(p.log_text(), p_from).contains("refresh sent"))
        })?;
        let (c_log, p_log) = (since(c.log_text(), c_from), since(p.log_text(), p_from));
        let lines = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
        assert_eq!(lines(&c_log, "refresh complete"), 1, "{c_log}");
        assert!(c_log.contains("applied=1"), "{c_log}");
        assert_eq!(lines(&p_log, "refresh sent"), 1, "{p_log}");
        assert!(p_log.contains("sent=1"), "{p_log}");
        assert_eq!(lines(&c_log, "connected") + lines(&p_log, "consumer session"), 0, "{c_log}{p_log}");
        // The first poll after an operator's start is logged at INFO whatever it
        // brings, as after the process's start (it was as quiet as any other poll).
        let c_from = c.log_text().len();
        c.admin("stop", Some("people"))?;
        c.admin("start", Some("people"))?;
        wait_until(CONVERGE, "the started agreement's poll, at INFO", || {
            Ok(since(c.log_text(), c_from).lines().any(|l| l.contains(" INFO ") && l.contains(" connected history=")))
        })?;
    }
    // Between polls no session is open, yet the provider's status says when the
    // consumer last polled and where it stands.
    let known = |p: &Provider| known_position(p, "people");
    wait_until(CONVERGE, "the provider to record the polled position", || {
        let k = known(&p)?;
        Ok(k["consumer"]["csn"] == k["csn"] && k["consumer"]["lag_changes"] == 0)
    })?;
    assert!(c.stop()?.success());
    let k = known(&p)?;
    assert_eq!((&k["consumer"]["connected"], &k["consumer"]["csn"]), (&false.into(), &k["csn"]), "{k}");
    assert!(k["consumer"]["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')), "{k}");
    Ok(())
}

/// A poller acknowledges each refresh (protocol version 2), so the position the
/// provider keeps for it, which holds back trimming and which `status` lists with its
/// lag, is what its last poll brought it. It used to be the cookie the poll came with:
/// a whole poll behind, and nothing at all after the first.
#[test]
fn a_poller_s_known_position_is_what_its_last_poll_brought_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 300, 21, ProviderOptions::default())?;
    let a = Agreement {
        mode: "refresh-only".into(),
        extra: "interval = \"1h\"\n".into(),
        ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET)
    };
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[a])?;
    for round in 0..2 {
        if round == 0 {
            c.start()?;
        } else {
            // Changes since, and the next poll now rather than in an hour.
            p.write_ok(&w.changes(40))?;
            c.admin("restart", Some("people"))?;
        }
        wait_converged(&p, &c, "people", PEOPLE)?;
        c.wait_status("people", CONVERGE, "the poll to end", |s| s["state"] == "idle")?;
        let k = known_position(&p, "people")?;
        assert_eq!(k["consumer"]["csn"], k["csn"], "round {round}: the poller's position: {k}");
    }
    assert!(c.stop()?.success());
    Ok(())
}

/// Acknowledgements arrive faster than the provider writes positions down (once a
/// second), and the last of a burst used to wait for the next change to be written: the
/// known position of an up-to-date consumer showed a lag until then. It is now written
/// at the next keepalive tick.
#[test]
fn a_persist_consumer_s_known_position_catches_up_after_a_burst() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 300, 22, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    p.write_ok(&w.changes(200))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    wait_until(CONVERGE, "the known position to reach the provider's csn", || {
        let k = known_position(&p, "people")?;
        Ok(k["consumer"]["csn"] == k["csn"] && k["consumer"]["lag_changes"] == 0)
    })?;
    // Its `last_seen` counts from when it left, not from its last acknowledgement: an
    // absence is what `hold_for_consumers` measures. Idle past a whole second first, so
    // a time taken before the stop is after every earlier record.
    let seen = || -> Result<std::time::SystemTime> {
        let k = known_position(&p, "people")?;
        Ok(humantime::parse_rfc3339(k["consumer"]["last_seen"].as_str().context("last_seen")?)?)
    };
    let acked = seen()?;
    wait_until(CONVERGE, "a second to pass", || Ok(std::time::SystemTime::now() >= acked + Duration::from_secs(2)))?;
    let stopping = std::time::SystemTime::now() - Duration::from_secs(1);
    assert!(c.stop()?.success());
    wait_until(CONVERGE, "the provider to see the session end", || {
        Ok(known_position(&p, "people")?["consumer"]["connected"] == false)
    })?;
    assert!(seen()? >= stopping, "last_seen {:?} is from before the consumer left ({stopping:?})", seen()?);
    Ok(())
}

/// A consumer gone for good is forgotten on the operator's word, running provider or
/// stopped: listed no more, holding nothing back. One connected now is not gone and is
/// refused; one that comes back after all is recorded again and resumes by delta.
#[test]
fn a_consumer_gone_for_good_is_forgotten_whether_the_provider_runs_or_not() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 30, 23, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let id = c.status()?["consumer_id"].as_str().context("consumer_id")?.to_owned();
    let forget = |p: &Provider| p.command_output("forget", &["people", &id]);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let refused = forget(&p)?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("is connected now"), "{}", text(&refused.stderr));
    assert!(known_position(&p, "people")?["consumer"].is_object(), "kept");

    assert!(c.stop()?.success());
    wait_until(CONVERGE, "the provider to see the consumer gone", || {
        Ok(known_position(&p, "people")?["consumer"]["connected"] == false)
    })?;
    let forgot = forget(&p)?;
    assert!(forgot.status.success(), "{}", text(&forgot.stderr));
    assert!(text(&forgot.stdout).starts_with(&format!("forgot consumer {id} of agreement people (at csn ")));
    assert!(known_position(&p, "people")?["consumer"].is_null(), "listed no more");

    // It came back after all: a delta from its cookie, and a position again.
    p.write_ok(&w.changes(3))?;
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "delta");
    assert!(known_position(&p, "people")?["consumer"].is_object(), "recorded again");

    // With both stopped, the provider's store is changed directly, once.
    assert!(c.stop()?.success());
    assert!(p.stop()?.success());
    let forgot = forget(&p)?;
    assert!(forgot.status.success(), "{}", text(&forgot.stderr));
    let again = forget(&p)?;
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("the agreement has none"), "{}", text(&again.stderr));
    p.start()?;
    assert!(known_position(&p, "people")?["consumer"].is_null(), "forgotten for good");
    Ok(())
}

/// `backup` copies a running provider's store while it serves, through its control
/// socket, and a stopped one's directly: the copy, restored in place of the store after
/// writes it does not hold, is the directory as it was at the copy, and a consumer that
/// had replicated no further resumes from it by delta, where an LDIF backup would have
/// reloaded it in full. A destination in use, or inside the store's folder, is refused.
/// `verify` finds the copy, the stopped store and the consumer's replica sound.
#[test]
fn a_backup_made_while_the_provider_runs_restores_the_directory_and_its_consumers_resume_by_delta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 1000, 24, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    p.write_ok(&w.changes(40))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let backup = tmp.path().join("backup");
    let shown = backup.display().to_string();

    let made = p.command_output("backup", &[&shown])?;
    assert!(made.status.success(), "{}", text(&made.stderr));
    let said = text(&made.stdout);
    let entries = p.status()?["entries"].as_u64().context("entries")?;
    let csn = p.status()?["csn"].as_u64().context("csn")?;
    assert!(said.starts_with(&format!("backed up the store to {shown}: {entries} entries and ")), "{said}");
    assert!(said.contains(&format!("every change up to csn {csn} of history ")), "{said}");
    let directory = p.search(SUFFIX, "subtree", ALL)?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let running = c.command_output("verify", &[])?;
    assert_eq!(running.status.code(), Some(1));
    assert!(text(&running.stderr).contains("the consumer is running (it answers on "), "{}", text(&running.stderr));
    assert!(c.stop()?.success());
    // The consumer's replica checks whole too.
    let replica = c.command_output("verify", &[])?;
    assert!(replica.status.success(), "{}", text(&replica.stderr));
    let held = c.search("people", PEOPLE, "subtree", ALL)?.lines().filter(|l| l.starts_with("dn: ")).count();
    let said = text(&replica.stdout);
    assert!(said.contains(&format!("\npeople: sound, {held} entries, as of csn ")), "{said}");

    // The copy checks whole; the running store is not checked under its writes.
    let checked = p.command_output("verify", &["--store", &shown])?;
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let sound = format!("the store at {shown} is sound: {entries} entries and ");
    assert!(text(&checked.stdout).starts_with(&sound), "{}", text(&checked.stdout));
    let running = p.command_output("verify", &[])?;
    assert_eq!(running.status.code(), Some(1));
    let refused = text(&running.stderr);
    assert!(refused.contains("the provider is running (it answers on "), "{refused}");
    assert!(refused.contains("check a copy of it (`tether-provider backup -c "), "{refused}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;
    let none = p.command_output("verify", &["--store", &empty.display().to_string()])?;
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none.stderr).contains("holds no store"), "{}", text(&none.stderr));
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0, "nothing made there");

    let again = p.command_output("backup", &[&shown])?;
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("is not empty"), "{}", text(&again.stderr));
    let inside = p.dir.join("data").join("copy");
    let refused = p.command_output("backup", &[&inside.display().to_string()])?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("is inside the store's folder"), "{}", text(&refused.stderr));
    assert!(!inside.exists());

    // Writes the copy does not hold, then the restore.
    p.write_ok(&w.changes(30))?;
    assert!(p.stop()?.success());
    let offline = tmp.path().join("offline");
    let made = p.command_output("backup", &[&offline.display().to_string()])?;
    assert!(made.status.success(), "a stopped provider's store: {}", text(&made.stderr));
    let checked = p.command_output("verify", &[])?;
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(text(&checked.stdout).contains(" is sound: "), "{}", text(&checked.stdout));
    p.restore_store(&backup)?;
    p.start()?;
    assert_eq!(p.search(SUFFIX, "subtree", ALL)?, directory, "the directory as it was at the copy");
    assert_eq!(p.status()?["csn"].as_u64(), Some(csn));
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "delta", "the copy knows the consumer's position");

    // The stopped provider's copy holds the writes made after the first.
    assert!(p.stop()?.success());
    p.restore_store(&offline)?;
    p.start()?;
    assert_eq!(p.status()?["csn"].as_u64(), Some(csn + 30));
    Ok(())
}

/// A destination typed relative to the folder `backup` runs in is made in that
/// folder, as any command's path is (not in the running provider's, which refuses a
/// relative one, nor in its data_dir), the command saying where it put the copy.
#[test]
fn a_backup_destination_typed_relative_is_made_in_the_commands_folder() -> Result<()> {
    use replication_tests::harness::bin;
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 20, 24, ProviderOptions::default())?;
    let here = tmp.path().join("here");
    std::fs::create_dir(&here)?;
    let made = std::process::Command::new(bin("tether-provider")?)
        .args(["backup", "-c"])
        .arg(&p.config)
        .arg("copy")
        .current_dir(&here)
        .output()?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let copy = here.canonicalize()?.join("copy");
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(said.starts_with(&format!("backed up the store to {}: ", copy.display())), "{said}");
    assert!(copy.join("db").is_file());
    Ok(())
}

/// With the provider stopped, `forget` changes its store itself and answers as the
/// running provider would: where the consumer stood, on standard output, which the
/// operator (or the log of a decommissioning script) keeps as the record of what was
/// dropped.
#[test]
fn forget_with_the_provider_stopped_says_where_the_consumer_stood() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 10, 29, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let id = c.status()?["consumer_id"].as_str().context("consumer_id")?.to_owned();
    wait_until(CONVERGE, "the provider to record the consumer's position", || {
        Ok(known_position(&p, "people")?["consumer"].is_object())
    })?;
    assert!(c.stop()?.success());
    assert!(p.stop()?.success());
    let forgot = p.command_output("forget", &["people", &id])?;
    let (stdout, stderr) = (String::from_utf8_lossy(&forgot.stdout), String::from_utf8_lossy(&forgot.stderr));
    assert!(forgot.status.success(), "{stderr}");
    assert!(stdout.starts_with(&format!("forgot consumer {id} of agreement people (at csn ")), "{stdout}");
    assert!(stdout.contains("resumes by delta if the changelog still holds its position"), "{stdout}");
    Ok(())
}

/// `forget` with no provider running and no store in `data_dir` (a mistyped folder, a
/// host where the provider never ran) is refused naming the folder, and leaves nothing
/// behind: no new, empty store owned by whoever ran the command.
#[test]
fn forget_where_no_store_was_made_is_refused_and_makes_none() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let out = p.command_output("forget", &["people", "gone"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("there is no store in {}", p.dir.join("data").display())), "{stderr}");
    assert!(!p.dir.join("data").exists(), "a store was made");
    Ok(())
}

/// After a provider restart that brings nothing new, a refresh-only consumer keeps its
/// cookie in the older history (the same position, which a backup taken before the
/// restart also knows), and its polls still end as soon as they are acknowledged: the
/// acknowledgement names the provider's cookie, which the provider reads. Found by a
/// walkthrough: acknowledging the older cookie, which the provider ignores, held every
/// poll after a restart for the consumer's 10 s fallback, with a warning blaming an
/// older provider.
#[test]
fn polls_after_a_provider_restart_with_nothing_new_end_when_acknowledged() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 200, 5, ProviderOptions::default())?;
    let c = polling_consumer(tmp.path(), &p)?;
    let polls =
        |c: &Consumer| -> Result<u64> { Ok(c.agreement_status("people")?["refreshes"]["delta"].as_u64().unwrap_or(0)) };
    let first = polls(&c)?;
    wait_until(CONVERGE, "a delta poll", || Ok(polls(&c)? > first))?;
    let cookie = c.agreement_status("people")?["cookie"].clone();

    assert!(p.stop()?.success());
    p.start()?;
    let history = p.status()?["history"].as_str().context("provider history")?.to_owned();
    assert!(!cookie.as_str().unwrap_or_default().starts_with(&history), "a new history: {cookie} {history}");
    let before = polls(&c)?;
    wait_until(CONVERGE, "three polls after the restart", || Ok(polls(&c)? >= before + 3))?;
    assert!(
        !c.log_text().contains("did not end the poll"),
        "every poll was ended by the provider on its acknowledgement:\n{}",
        c.log_text()
    );
    assert_eq!(c.agreement_status("people")?["cookie"], cookie, "the same position, in the older history");
    wait_converged(&p, &c, "people", PEOPLE)?;
    Ok(())
}

#[test]
fn consumer_stopped_with_sigterm_catches_up_by_delta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 2000, 3, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let live = c.status()?;
    assert_eq!(live["running"], true);
    let persisting = &live["agreements"][0];
    assert_eq!(persisting["state"], "persisting", "{live}");
    assert!(persisting.get("next_attempt_at").is_none(), "absent unless idle or in backoff: {live}");
    assert!(c.stop()?.success(), "SIGTERM exits 0");
    // While it is down, `status --json` is still JSON, read from its store.
    let down = c.status()?;
    assert_eq!(down["running"], false, "{down}");
    let people = &down["agreements"][0];
    assert_eq!(people["name"], "people");
    assert_eq!(people["state"], "not running");
    assert_eq!(people["mode"], "refresh-and-persist");
    assert_eq!(people["cookie"], live["agreements"][0]["cookie"], "the position the next start resumes from");
    assert_eq!(people["entries"], live["agreements"][0]["entries"]);
    assert_eq!(down["consumer_id"], live["consumer_id"], "the id it is known by, read from its folder");
    assert!(people["lag_seconds"].as_u64().is_some_and(|s| s <= 2), "current when it stopped: {down}");
    wait_until(CONVERGE, "the provider to log the goodbye", || Ok(p.log_text().contains("consumer said goodbye")))?;
    p.write_ok(&w.changes(1000))?;
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "delta");
    Ok(())
}

/// The two halves of a control connection, as the command-line clients hold them.
type ControlConnection = (
    tether_protocol::frame::FrameReader<tokio::io::ReadHalf<tokio::net::UnixStream>>,
    tether_protocol::frame::FrameWriter<tokio::io::WriteHalf<tokio::net::UnixStream>>,
);

/// Sends `request` on a new connection to the control socket at `socket`, reading nothing
/// back yet: the test reads the reply at its own pace, or not at all.
fn send_control(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    request: &tether_protocol::control::ControlRequest,
) -> Result<ControlConnection> {
    use tether_protocol::{codec, frame};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_nonblocking(true)?;
    let (reader, mut writer) =
        rt.block_on(async { anyhow::Ok(frame::split(tokio::net::UnixStream::from_std(stream)?)) })?;
    rt.block_on(writer.write_frame(&codec::encode(request)?))?;
    Ok((reader, writer))
}

/// Neither process waits at its shutdown for a control request whose client stopped
/// reading, as a `search` into a pager does (one held that consumer up for good, past its
/// `shutdown_timeout`), and a `wait` open at the consumer's shutdown is answered with
/// where the agreement stands.
#[test]
fn open_control_requests_do_not_hold_up_either_process_at_shutdown() -> Result<()> {
    use tether_protocol::control::{ControlRequest, ControlResponse};
    use tether_protocol::{codec, scope::SearchSpec, Dn};
    let tmp = tempfile::tempdir()?;
    // Enough entries that a search's output fills the socket's buffer.
    let (mut p, _w) = provider_with(tmp.path(), 3000, 23, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let send = |socket: &Path, request: &ControlRequest| send_control(&rt, socket, request);
    let search = ControlRequest::Search { agreement: None, spec: SearchSpec::subtree(Dn::parse(SUFFIX)?) };
    let unread = [send(&c.dir.join("ctl.sock"), &search)?, send(&p.dir.join("ctl.sock"), &search)?];
    let wait =
        ControlRequest::WaitCsn { name: "people".into(), csn: tether_protocol::Csn(1 << 40), timeout_ms: 60_000 };
    let (mut waiting, _w) = send(&c.dir.join("ctl.sock"), &wait)?;
    // Connections are accepted in order: once a later request is answered, these three
    // are being served, not queued.
    c.status()?;
    p.status()?;

    assert!(c.stop()?.success(), "SIGTERM exits 0");
    let answer = rt.block_on(waiting.read_frame())?.context("an answer")?;
    let answer: ControlResponse = codec::decode(&answer)?;
    let ControlResponse::Error(answer) = answer else { anyhow::bail!("the csn was never written: {answer:?}") };
    assert!(answer.contains("not durable before the consumer shut down; the agreement is"), "{answer}");
    assert!(c.log_text().contains("were cut off requests=1"), "the stalled search was cut off");
    assert!(p.stop()?.success(), "SIGTERM exits 0");
    assert!(p.log_text().contains("were cut off requests=1"), "the stalled search was cut off");
    drop(unread);
    Ok(())
}

#[test]
fn trimmed_changelog_gives_a_present_refresh_without_shrinking_the_replica() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = ProviderOptions {
        changelog: "max_changes = 20\ntrim_interval = \"100ms\"\nhold_for_consumers = \"1s\"".into(),
        ..ProviderOptions::default()
    };
    let (p, mut w) = provider_with(tmp.path(), 3000, 4, opts)?;
    let mut c = people_consumer(tmp.path(), &p)?;
    c.stop()?;
    // The consumer's position: the store's CSN before the writes.
    let position = p.status()?["csn"].as_u64().unwrap_or(u64::MAX);
    p.write_ok(&w.changes(400))?;
    // Make sure the trimmer has passed it.
    wait_until(CONVERGE, "the changelog to be trimmed", || {
        let s = p.status()?;
        Ok(s["changelog"]["oldest"].as_u64().unwrap_or(0) > position + 1)
    })?;
    let before = count(&c.search("people", PEOPLE, "subtree", ALL)?);
    c.start()?;
    let mut min_seen = usize::MAX;
    wait_until(CONVERGE, "present refresh to converge", || {
        let n = count(&c.search("people", PEOPLE, "subtree", ALL)?);
        min_seen = min_seen.min(n);
        same(&p, &c, "people", PEOPLE, ALL)
    })?;
    assert_eq!(last_refresh(&c, "people")?, "present");
    // The provider's log says why, so an operator knows to raise the retention.
    let log = p.log_text();
    assert!(log.lines().any(|l| l.contains("refresh=\"present\"") && l.contains("retention trimmed past it")), "{log}");
    // At the trim, at the level operations.md's monitoring table gives it (an alert on
    // warnings missed it at INFO).
    let trimmed = log.lines().find(|l| l.contains("changelog trimmed past the positions of consumers"));
    assert!(trimmed.is_some_and(|l| l.contains(" WARN ") && l.contains("forgotten=people/")), "{trimmed:?}");
    let after = count(&c.search("people", PEOPLE, "subtree", ALL)?);
    // The replica only ever switched from the old generation to the new one.
    assert!(min_seen >= before.min(after), "saw {min_seen} entries mid-reload; before {before}, after {after}");
    Ok(())
}

/// An offline load is not logged (the changelog floor rises past it), so a consumer
/// that replicated the directory before it catches up by a present refresh, and live
/// writes after it reach the consumer as before.
#[test]
fn an_offline_load_into_a_replicated_directory_reaches_the_consumer_by_a_present_refresh() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 1000, 7, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    p.write_ok(&w.changes(100))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert!(c.stop()?.success(), "consumer SIGTERM exits 0");
    assert!(p.stop()?.success(), "provider SIGTERM exits 0");
    let file = tmp.path().join("more.ldif");
    std::fs::write(&file, w.more_people(500))?;
    p.load(&file)?;
    p.start()?;
    let status = p.status()?;
    assert_eq!(
        status["changelog"]["oldest"],
        serde_json::Value::Null,
        "the load and the writes before it are not in the changelog: {status}"
    );
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "present");
    // The log names the load as the cause, not retention (an operator told so would
    // raise retention for nothing).
    let log = p.log_text();
    let planned = log.lines().find(|l| l.contains("refresh=\"present\"")).map(str::to_owned);
    assert!(
        planned.as_deref().is_some_and(
            |l| l.contains("an offline load (not logged) raised the floor to ") && !l.contains("retention")
        ),
        "{planned:?}"
    );
    p.write_ok(&w.changes(100))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["state"], "persisting");
    Ok(())
}

/// `a` differs from the default region by its scope (`one`: the people below
/// `ou=people`, not the branch's own entry), `b` by its filter. Both used to be
/// `subtree`, so an agreement's scope could be ignored without this test noticing.
#[test]
fn two_consumers_with_different_scopes_and_filters_hold_exactly_their_regions() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = ProviderOptions {
        grants: vec![
            Grant { agreement: "people".into(), secret: "s1".into(), base: PEOPLE.into() },
            Grant { agreement: "others".into(), secret: "s2".into(), base: SUFFIX.into() },
        ],
        ..ProviderOptions::default()
    };
    let (p, mut w) = provider_with(tmp.path(), 1500, 5, opts)?;
    let filter = "(&(objectClass=inetOrgPerson)(employeeNumber>=500))";
    let one_level = Agreement { scope: "one".into(), ..Agreement::persist("people", PEOPLE, "s1") };
    let mut a = Consumer::configure(&tmp.path().join("a"), p.port, &[one_level])?;
    let mut b = Consumer::configure(
        &tmp.path().join("b"),
        p.port,
        &[Agreement { filter: filter.into(), ..Agreement::persist("others", OTHERS, "s2") }],
    )?;
    a.start()?;
    b.start()?;
    p.write_ok(&w.changes(300))?;
    wait_until(CONVERGE, "one-level consumer", || {
        Ok(p.search(PEOPLE, "one", ALL)? == a.search("people", PEOPLE, "subtree", ALL)?)
    })?;
    wait_until(CONVERGE, "filtered consumer", || same(&p, &b, "others", OTHERS, filter))?;
    // Exactly the region: nothing outside the filter or the base.
    let b_all = b.search("others", SUFFIX, "subtree", ALL)?;
    assert_eq!(b_all, p.search(OTHERS, "subtree", filter)?);
    assert!(!b_all.contains(PEOPLE));
    // Nothing outside the scope or the base: the base entry itself is one level up.
    let a_all = a.search("people", SUFFIX, "subtree", ALL)?;
    assert_eq!(a_all, p.search(PEOPLE, "one", ALL)?);
    assert!(count(&a_all) > 100, "the people below the base: {}", count(&a_all));
    assert!(!a_all.contains(&format!("dn: {PEOPLE}\n")), "the base entry is outside scope one");
    assert!(!a_all.contains(OTHERS));
    Ok(())
}

/// The region an agreement replicates (base, scope, filter, attrs) changed in the config
/// while the consumer was stopped: the replica must be reloaded in full. It used to
/// resume by delta from its cookie, which brings only changes, so it kept the old region
/// and never received the new one's unchanged entries, and nothing said so.
#[test]
fn an_agreement_whose_region_changed_while_the_consumer_was_stopped_is_reloaded_in_full() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 1000, 23, ProviderOptions::default())?;
    let dir = tmp.path().join("c");
    let mut c = people_consumer_in(&dir, &p)?;
    let replicated = c.search("people", PEOPLE, "subtree", ALL)?;
    assert!(c.stop()?.success());
    p.write_ok(&w.changes(100))?;
    // The same agreement, now on the whole suffix.
    drop(Consumer::configure(&dir, p.port, &[Agreement::persist("people", SUFFIX, PEOPLE_SECRET)])?);
    // Until the start reloads it, `--as-is` reads what the replica holds, from the base
    // it recorded: from the file's new base it printed nothing, exit status 0, the
    // recovery path the refusal points to giving an empty copy.
    assert_eq!(c.search_args(&["--agreement", "people", "--as-is"])?, replicated);
    let beside = c.search_args(&["--agreement", "people", "--as-is", "--base", OTHERS]).expect_err("beside it");
    assert!(format!("{beside:#}").contains("is outside the region of agreement \"people\""), "{beside:#}");
    let nothing = format!("uid=nobody,{PEOPLE}");
    let missing = c.search_args(&["--agreement", "people", "--as-is", "--base", &nothing]).expect_err("no entry");
    assert!(format!("{missing:#}").contains("in the replica of \"people\""), "{missing:#}");
    c.start()?;
    wait_converged(&p, &c, "people", SUFFIX)?;
    assert_eq!(last_refresh(&c, "people")?, "full");
    assert!(c.log_text().contains("the replica was made for another region"), "{}", c.log_text());
    assert!(count(&c.search("people", OTHERS, "subtree", ALL)?) > 0, "the new region's unchanged entries arrived");

    // Restarted with the same region: an ordinary delta.
    assert!(c.stop()?.success());
    p.write_ok(&w.changes(100))?;
    c.start()?;
    wait_converged(&p, &c, "people", SUFFIX)?;
    assert_eq!(last_refresh(&c, "people")?, "delta");

    // Narrowed by a filter while stopped: the entries it leaves out go.
    assert!(c.stop()?.success());
    let filtered = "(employeeNumber>=500)";
    drop(Consumer::configure(
        &dir,
        p.port,
        &[Agreement { filter: filtered.into(), ..Agreement::persist("people", SUFFIX, PEOPLE_SECRET) }],
    )?);
    // Until then the replica holds the wider region, and a search says so rather than
    // show it, exit status 0, as the narrowed one.
    let refused = c.search("people", SUFFIX, "subtree", ALL).unwrap_err();
    assert!(format!("{refused:#}").contains("was made for another region"), "{refused:#}");
    // `--as-is` prints it all the same (the last copy there is, if the provider is lost).
    let held = c.search_args(&["--agreement", "people", "--base", SUFFIX, "--as-is"])?;
    assert_eq!(held, p.search(SUFFIX, "subtree", ALL)?, "the wider region, as it was replicated");
    c.start()?;
    // The whole replica, not its filtered view: the replica made for the wider region is
    // refused until the full refresh replaces it (its cookie is gone), and its filtered
    // view already matched (waiting on that raced the refresh on a loaded machine).
    wait_until(CONVERGE, "the filtered replica and nothing else", || {
        Ok(c.search("people", SUFFIX, "subtree", ALL)? == p.search(SUFFIX, "subtree", filtered)?)
    })?;
    assert_eq!(last_refresh(&c, "people")?, "full");
    assert_eq!(c.agreement_status("people")?["duplicates"], 0);
    Ok(())
}

#[test]
fn an_attribute_list_keeps_only_those_attributes_through_live_changes_and_a_delta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 1500, 21, ProviderOptions::default())?;
    // The filter reads `sn`, which the replica does not keep: the workload's modifications
    // of `sn` move entries into and out of the region, and the provider alone can tell.
    let filter = "(sn=Family1*)";
    let attrs = "uid,mail";
    let mut agreement = Agreement { filter: filter.into(), ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET) };
    agreement.extra.push_str("attrs = [\"uid\", \"mail\"]\n");
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[agreement])?;
    let trimmed_alike = |c: &Consumer, what: &str| {
        wait_until(CONVERGE, what, || {
            Ok(p.search_attrs(PEOPLE, "subtree", filter, attrs)? == c.search("people", PEOPLE, "subtree", ALL)?)
        })
    };
    c.start()?;
    trimmed_alike(&c, "the trimmed replica")?;
    p.write_ok(&w.changes(300))?;
    trimmed_alike(&c, "live changes on the trimmed replica")?;
    assert!(c.stop()?.success(), "SIGTERM exits 0");
    p.write_ok(&w.changes(300))?;
    c.start()?;
    trimmed_alike(&c, "the trimmed replica after a delta")?;
    assert_eq!(last_refresh(&c, "people")?, "delta");
    let replica = c.search("people", PEOPLE, "subtree", ALL)?;
    assert!(count(&replica) > 10, "the region is not empty:\n{replica}");
    let names: std::collections::BTreeSet<&str> =
        replica.lines().filter_map(|l| l.split_once(": ")).map(|(name, _)| name).collect();
    assert_eq!(names, ["dn", "mail", "objectClass", "uid"].into(), "only the listed attributes, and objectClass");
    // The consumer's --attrs trims what it prints further.
    let uids = c.search_attrs("people", PEOPLE, "subtree", ALL, "uid")?;
    assert_eq!(uids, p.search_attrs(PEOPLE, "subtree", filter, "uid")?);
    assert!(!uids.contains("mail:"));
    // entryUUID named in the list prints as --uuids prints it, on both sides (the
    // consumer's as a copy to restore from: the agreement stopped, as for --uuids).
    let refused = c.search_attrs("people", PEOPLE, "subtree", ALL, "uid,entryUUID").unwrap_err();
    assert!(format!("{refused:#}").contains("(or entryUUID in --attrs) prints a copy"), "{refused:#}");
    c.admin("stop", Some("people"))?;
    let with_uuids = c.search_args(&["--agreement", "people", "--attrs", "uid", "--uuids"])?;
    assert!(with_uuids.contains("\nentryUUID: "), "{with_uuids}");
    assert_eq!(c.search_attrs("people", PEOPLE, "subtree", ALL, "uid,entryUUID")?, with_uuids);
    assert_eq!(p.search_attrs(PEOPLE, "subtree", filter, "entryuuid,uid")?, with_uuids);
    // A filter on an attribute the replica does not keep matches nothing, and is warned of.
    let unkept = c.search_output(&["--agreement", "people", "--filter", "(sn=*)"])?;
    let warning = String::from_utf8_lossy(&unkept.stderr);
    assert!(unkept.status.success() && unkept.stdout.is_empty(), "{unkept:?}");
    assert!(warning.contains("keeps only the attributes uid, mail (its `attrs`), so a filter on sn"), "{warning}");
    // A malformed name is refused, naming it.
    let refused = p.search_attrs(PEOPLE, "subtree", filter, "uid,no such").unwrap_err();
    assert!(format!("{refused:#}").contains("invalid attribute name \"no such\""), "{refused:#}");
    Ok(())
}

/// Every session id a log names (`session=N`, in the spans of both sides).
fn session_ids(log: &str) -> std::collections::BTreeSet<u64> {
    log.split("session=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[test]
fn provider_sigterm_is_a_goodbye_and_the_consumer_resumes_by_delta() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 1000, 6, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    // Write sessions too, each with an id of its own.
    p.write_ok(&w.changes(10))?;
    p.write_ok(&w.changes(10))?;
    let live = p.status()?;
    assert_eq!(live["running"], true);
    assert!(p.stop()?.success(), "provider SIGTERM exits 0");
    let given_before = session_ids(&p.log_text());
    assert!(given_before.len() >= 3, "{given_before:?}");
    // Stopped, `status --json` reads the store and says so.
    let down = p.status()?;
    assert_eq!(down["running"], false, "{down}");
    assert_eq!((&down["store_id"], &down["csn"]), (&live["store_id"], &live["csn"]));
    assert_eq!(down["sessions"], serde_json::json!([]));
    // Counted, not read from `last_disconnect`: the reconnects the provider refuses
    // while it is down are each a `connection-lost` that overwrites it.
    c.wait_status("people", CONVERGE, "provider-goodbye", |s| s["disconnects"]["provider-goodbye"] == 1)?;
    // The log is written through a queue: its line may follow what status shows.
    wait_until(CONVERGE, "the goodbye in the consumer's log", || {
        Ok(c.log_text().contains("provider said goodbye reason=\"shutdown\""))
    })
    .with_context(|| c.log_text())?;
    let log = c.log_text();
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("reason=\"connection-lost\"")).collect();
    assert!(
        lost.iter().all(|l| l.contains("detail=connect ")),
        "only refused reconnects are lost connections: {lost:?}"
    );
    p.start()?;
    p.write_ok(&w.changes(100))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "delta");
    // The restarted provider gives no session an id a session before the restart had:
    // both sides' logs name sessions by it.
    let after: Vec<u64> =
        p.status()?["sessions"].as_array().into_iter().flatten().filter_map(|s| s["session_id"].as_u64()).collect();
    assert!(!after.is_empty() && after.iter().all(|id| !given_before.contains(id)), "{given_before:?} then {after:?}");
    // Logged as the session began, but through a queue: the replica converging does not
    // wait for the line to be written.
    wait_until(CONVERGE, &format!("the consumer's log to name {after:?}"), || {
        let named = session_ids(&c.log_text());
        Ok(after.iter().all(|id| named.contains(id)))
    })
    .with_context(|| format!("the consumer's log names {:?}", session_ids(&c.log_text())))?;
    Ok(())
}

/// A provider started on a folder with no store (its volume not mounted, `data_dir`
/// mistyped, the store lost) creates an empty one. Every consumer used to take a full
/// refresh from it at once and empty its replica, the only copy left if the store was
/// lost. Now the provider ends those sessions with `empty-store`; the consumers keep
/// their replicas, and once the real store is back they resume by delta.
#[test]
fn a_provider_started_without_its_store_empties_no_replica() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 200, 24, ProviderOptions::default())?;
    p.write_ok(&w.changes(20))?;
    let c = people_consumer(tmp.path(), &p)?;
    let held = c.search("people", PEOPLE, "subtree", ALL)?;
    assert!(count(&held) > 100);

    assert!(p.stop()?.success());
    let (data, aside) = (p.dir.join("data"), p.dir.join("data.aside"));
    std::fs::rename(&data, &aside)?;
    p.start()?;
    assert_eq!(p.status()?["entries"], 0, "a new, empty store");
    c.admin("restart", Some("people"))?;
    // Each attempt gets the goodbye again and backs off again; between them the state
    // reads `connecting` for a moment, so the wait is for the backoff that follows one.
    let s = c.wait_status("people", CONVERGE, "backing off after an empty-store goodbye", |s| {
        s["state"] == "backoff" && s["last_error"].as_str().is_some_and(|e| e.contains("empty-store"))
    })?;
    // Backing off at the longest delay (the default schedule's 200ms): the next attempt
    // is not before the error.
    let (next, error) = (s["next_attempt_at"].as_str(), s["last_error_at"].as_str());
    assert!(next.zip(error).is_some_and(|(next, error)| next.ends_with('Z') && next >= error), "{s}");
    // The log is written through a queue: its lines may follow what status shows.
    wait_until(CONVERGE, "the log to say when", || Ok(c.log_text().contains("state=\"backoff\" retry_in=")))
        .with_context(|| format!("the log says when: {}", c.log_text()))?;
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("is the provider's data_dir mistyped")), "{s}");
    assert_eq!(c.search("people", PEOPLE, "subtree", ALL)?, held, "the replica is as it was");
    wait_until(CONVERGE, "the provider to say why", || Ok(p.log_text().contains("not emptying it")))?;
    wait_until(CONVERGE, "the consumer's warning", || Ok(warned_of_goodbye(&c, "empty-store")))
        .with_context(|| format!("the consumer warns: {}", c.log_text()))?;
    // And it warned at its start, where an operator looks after starting it.
    let created = |p: &Provider| {
        p.log_text().lines().filter(|l| l.contains(" WARN ") && l.contains("created a new, empty store")).count()
    };
    assert_eq!(created(&p), 1, "only the start on the new store: {}", p.log_text());

    assert!(p.stop()?.success());
    p.restore_store(&aside)?;
    p.start()?;
    p.write_ok(&w.changes(10))?;
    c.admin("restart", Some("people"))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "delta", "the real store is back: no reload");
    assert_eq!(created(&p), 1, "not at the start on the store restored");
    Ok(())
}

/// A region whose base names no entry (a mistyped `base`, a branch not created yet)
/// used to replicate as an empty region without a word. Its full refresh is refused with
/// `no-such-base`, naming the nearest entry, until the base is an entry. A consumer that
/// follows a region by delta still gets the deletes that empty it, the base's own too,
/// and one that held the region gets the full refresh that empties it when it needs one
/// (the provider restored from a copy made before the base was: it used to be refused,
/// and kept the branch the directory no longer had; found by a walkthrough).
#[test]
fn a_region_whose_base_names_no_entry_gets_no_full_refresh_but_gets_its_deletes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 20, 25, ProviderOptions::default())?;
    // The documented backup routine, before the branch exists.
    assert!(p.stop()?.success());
    let backup = tmp.path().join("backup");
    p.back_up_store(&backup)?;
    p.start()?;
    let later = format!("ou=later,{SUFFIX}");
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", &later, PEOPLE_SECRET)])?;
    c.start()?;
    let s = c.wait_status("people", CONVERGE, "a no-such-base goodbye", |s| {
        s["last_error"].as_str().is_some_and(|e| e.contains("no-such-base"))
    })?;
    let err = s["last_error"].as_str().unwrap_or_default();
    assert!(err.contains(&format!("no entry {later} (the nearest entry above it is {SUFFIX})")), "{s}");
    assert!(s["cookie"].is_null() && s["refreshes"]["full"].as_u64().unwrap_or(0) == 0, "no refresh: {s}");
    assert!(warned_of_goodbye(&c, "no-such-base"), "the consumer warns: {}", c.log_text());

    p.write_ok(&format!(
        "dn: {later}\nchangetype: add\nobjectClass: organizationalUnit\nou: later\n\n\
         dn: uid=x,{later}\nchangetype: add\nobjectClass: person\nuid: x\ncn: x\nsn: X\n"
    ))?;
    wait_converged(&p, &c, "people", &later)?;
    assert_eq!(count(&c.search("people", &later, "subtree", ALL)?), 2);

    // Emptied while the consumer is away, base and all: the delta brings the deletes.
    assert!(c.stop()?.success());
    p.write_ok(&format!("dn: uid=x,{later}\nchangetype: delete\n\ndn: {later}\nchangetype: delete\n"))?;
    c.start()?;
    c.wait_status("people", CONVERGE, "the deletes", |s| s["state"] == "persisting" && s["entries"] == 0)?;
    assert_eq!(last_refresh(&c, "people")?, "delta");
    assert_eq!(c.search("people", SUFFIX, "subtree", ALL)?, "", "the replica holds nothing");

    // Made again, replicated, then the provider restored from the copy made before
    // it: the replica, past anything the copy knows, is reloaded in full, to nothing.
    p.write_ok(&format!("dn: {later}\nchangetype: add\nobjectClass: organizationalUnit\nou: later\n"))?;
    wait_converged(&p, &c, "people", &later)?;
    assert_eq!(count(&c.search("people", &later, "subtree", ALL)?), 1);
    let fulls = |s: &serde_json::Value| s["refreshes"]["full"].as_u64().unwrap_or(0);
    let before = fulls(&c.agreement_status("people")?);
    assert!(p.stop()?.success());
    p.restore_store(&backup)?;
    p.start()?;
    c.wait_status("people", CONVERGE, "the reload", |s| {
        s["state"] == "persisting" && s["entries"] == 0 && fulls(s) > before
    })?;
    assert_eq!(c.search("people", SUFFIX, "subtree", ALL)?, "", "the replica follows the restored directory");
    Ok(())
}

/// Stops the provider, puts the copy at `backup` in place of its store, starts it and
/// adds `n` people the lost history never had; returns its CSN then.
fn restore_and_write_others(p: &mut Provider, backup: &Path, n: usize) -> Result<u64> {
    assert!(p.stop()?.success());
    p.restore_store(backup)?;
    p.start()?;
    let other: String = (0..n)
        .map(|i| {
            format!("dn: uid=restored{i},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: restored{i}\ncn: R {i}\nsn: R\n\n")
        })
        .collect();
    p.write_ok(&other)?;
    p.status()?["csn"].as_u64().context("provider csn")
}

/// A provider restored from a cold copy of its store, which then takes new writes, has a
/// history that forks from the one its consumers may have followed. A consumer that saw
/// changes made after the copy must reload in full (a delta from its position would skip
/// the new history's first changes and keep the lost ones forever); one that stopped
/// before the copy still resumes by delta, and so does one that reconnected to the
/// provider started after the copy but saw nothing new there.
#[test]
fn a_provider_restored_from_a_copy_of_its_store_reloads_only_the_consumers_that_saw_the_lost_changes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 1000, 21, ProviderOptions::default())?;
    let mut ahead = people_consumer(tmp.path(), &p)?;
    let mut behind = people_consumer_in(&tmp.path().join("behind"), &p)?;
    assert!(behind.stop()?.success());
    let mut idle = people_consumer_in(&tmp.path().join("idle"), &p)?;
    p.write_ok(&w.changes(50))?;
    wait_converged(&p, &ahead, "people", PEOPLE)?;
    wait_converged(&p, &idle, "people", PEOPLE)?;
    let deltas = |s: &serde_json::Value| s["refreshes"]["delta"].as_u64().unwrap_or(0);
    let before = deltas(&idle.agreement_status("people")?);

    // The backup (the documented routine: stop, copy, start), then changes that only
    // the `ahead` consumer sees. `idle` reconnects to the restarted provider, by an
    // empty delta, and stops before the changes.
    assert!(p.stop()?.success());
    let backup = tmp.path().join("backup");
    p.back_up_store(&backup)?;
    p.start()?;
    idle.wait_status("people", CONVERGE, "the reconnection to the restarted provider", |s| {
        s["state"] == "persisting" && deltas(s) > before
    })?;
    assert!(idle.stop()?.success());
    p.write_ok(&w.changes(200))?;
    wait_converged(&p, &ahead, "people", PEOPLE)?;
    let lost = p.status()?["csn"].as_u64().context("provider csn")?;
    assert!(ahead.stop()?.success());

    // Restored, the provider takes other writes, past the position `ahead` stopped at.
    let now = restore_and_write_others(&mut p, &backup, 300)?;
    assert!(now > lost, "the new history ({now}) passed the lost one ({lost})");
    let status = p.status()?;
    // Each of the three starts began a history of its own; cookies name the last.
    let histories = p.histories();
    assert_eq!(histories.len(), 3, "{histories:?}");
    assert!(histories[0] != histories[1] && histories[1] != histories[2] && histories[0] != histories[2]);
    assert_eq!(status["history"].as_str(), Some(histories[2].as_str()));

    ahead.start()?;
    behind.start()?;
    idle.start()?;
    wait_converged(&p, &ahead, "people", PEOPLE)?;
    wait_converged(&p, &behind, "people", PEOPLE)?;
    wait_converged(&p, &idle, "people", PEOPLE)?;
    assert_eq!(last_refresh(&ahead, "people")?, "full", "its position is in a history the provider no longer has");
    // Said on the consumer, where its operator looks, and only there.
    let unknown = "the provider does not know the replica's cookie";
    let warned = |c: &Consumer| c.log_text().lines().any(|l| l.contains("WARN") && l.contains(unknown));
    assert!(warned(&ahead), "{}", ahead.log_text());
    assert_eq!(last_refresh(&behind, "people")?, "delta", "its position is in the restored history");
    assert!(!warned(&behind) && !warned(&idle));
    assert_eq!(
        last_refresh(&idle, "people")?,
        "delta",
        "the restarted provider gave it nothing new: its position is the copy's too"
    );
    Ok(())
}

/// A delta refresh cut short leaves the replica past its cookie (a coalesced delta is
/// not in CSN order, so its cookie moves only at its end). If the changes it applied are
/// then lost to a restore, a delta from the cookie, which the restored provider does
/// recognize, would keep them for good: the consumer says how far past its cookie it is,
/// and in which history, and the restored provider, not recognizing that, reloads it.
#[test]
fn a_delta_cut_short_by_an_exception_is_reloaded_when_its_changes_were_lost_to_a_restore() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 1000, 22, ProviderOptions::default())?;
    let slow_retry =
        Agreement { extra: "retry = [\"30s x100\"]\n".into(), ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET) };
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[slow_retry])?;
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert!(c.stop()?.success());
    assert!(p.stop()?.success());
    let backup = tmp.path().join("backup");
    p.back_up_store(&backup)?;
    p.start()?;
    p.write_ok(&w.changes(600))?;
    let lost = p.status()?["csn"].as_u64().context("provider csn")?;

    // Its delta's second batch panics: the first is applied, the cookie has not moved.
    c.env.push(("TETHER_FAILPOINTS".into(), "apply-panic=2".into()));
    c.start()?;
    c.wait_status("people", CONVERGE, "an exception", |s| s["disconnects"]["exception"].as_u64().unwrap_or(0) >= 1)?;
    assert!(c.stop()?.success());
    c.env.clear();

    assert!(restore_and_write_others(&mut p, &backup, 700)? > lost);
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(last_refresh(&c, "people")?, "full", "what it applied past its cookie is in no history of this store");
    Ok(())
}

#[test]
fn refusals_are_reported_and_the_provider_keeps_serving_others() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = ProviderOptions {
        grants: vec![
            Grant { agreement: "people".into(), secret: "right".into(), base: PEOPLE.into() },
            Grant { agreement: "narrow".into(), secret: "n".into(), base: OTHERS.into() },
        ],
        ..ProviderOptions::default()
    };
    let (p, mut w) = provider_with(tmp.path(), 300, 7, opts)?;
    let mut good =
        Consumer::configure(&tmp.path().join("good"), p.port, &[Agreement::persist("people", PEOPLE, "right")])?;
    good.start()?;
    let mut bad = Consumer::configure(
        &tmp.path().join("bad"),
        p.port,
        &[
            Agreement::persist("people", PEOPLE, "wrong"),
            Agreement::persist("nosuch", PEOPLE, "x"),
            Agreement::persist("narrow", SUFFIX, "n"),
        ],
    )?;
    bad.start()?;
    for (name, reason) in
        [("people", "bad-credentials"), ("nosuch", "unknown-agreement"), ("narrow", "scope-not-allowed")]
    {
        wait_until(CONVERGE, &format!("{name} rejected"), || {
            let s = bad.agreement_status(name)?;
            Ok(s["last_disconnect"] == "rejected" && s["last_error"].as_str().is_some_and(|e| e.contains(reason)))
        })?;
        // The log is written through a queue: its line may follow what status shows.
        wait_until(CONVERGE, &format!("log names {reason}"), || Ok(bad.log_text().contains(reason)))?;
    }
    let wrong = bad.agreement_status("people")?;
    assert!(wrong["last_error"].as_str().is_some_and(|e| e.contains("must hold the same bytes")), "{wrong}");
    // The provider's warnings name the configured agreement as a field, so a search of
    // its log by agreement finds them; a made-up name is only quoted in the refusal.
    let warned =
        |reason: &str| p.log_text().lines().filter(|l| l.contains("handshake failed") && l.contains(reason)).count();
    wait_until(CONVERGE, "the provider's warnings", || {
        Ok(warned("bad-credentials") > 0 && warned("scope-not-allowed") > 0)
    })?;
    let said = p.log_text();
    for (agreement, reason) in [("people", "bad-credentials"), ("narrow", "scope-not-allowed")] {
        assert!(
            said.lines().any(|l| l.contains("handshake failed")
                && l.contains(reason)
                && l.contains(&format!("agreement={agreement} "))),
            "{reason} names agreement={agreement}:\n{said}"
        );
    }
    assert!(
        said.lines().filter(|l| l.contains("unknown-agreement")).all(|l| !l.contains("agreement=nosuch")),
        "{said}"
    );
    // A writer whose secret file changed without a reload: refused, and told where to look.
    let writer_key = p.dir.join("secrets/writer.key");
    let key = std::fs::read(&writer_key)?;
    std::fs::write(&writer_key, "not the running secret\n")?;
    let out = p.write(&format!("dn: uid=nobody,{PEOPLE}\nchangetype: delete\n"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad-credentials"), "{err}");
    assert!(err.contains(&format!("differs from the one {} names now", writer_key.display())), "{err}");
    std::fs::write(&writer_key, key)?;
    // A protocol version the provider does not speak, straight through the library.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rejection = rt.block_on(async {
        use tether_protocol::auth::Secret;
        use tether_protocol::handshake::{client_handshake, HandshakeError, ProviderProof};
        use tether_protocol::message::{Hello, Mode, Role};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await?;
        let (mut r, mut wr) = tether_protocol::connection::from_tcp(stream)?;
        let hello = Hello {
            versions: vec![999],
            client_id: "future".into(),
            role: Role::Consumer {
                agreement: "people".into(),
                mode: Mode::RefreshOnly,
                cookie: None,
                spec: tether_protocol::SearchSpec::subtree(tether_protocol::Dn::parse(PEOPLE)?),
                resume: None,
            },
        };
        let secret = Secret::new(b"right".to_vec())?;
        match client_handshake(&mut r, &mut wr, &hello, &secret, ProviderProof::Required, Duration::from_secs(10)).await
        {
            Err(HandshakeError::Rejected(reject)) => Ok::<_, anyhow::Error>(reject.reason.as_str().to_owned()),
            other => anyhow::bail!("expected a rejection, got {other:?}"),
        }
    })?;
    assert_eq!(rejection, "version-mismatch");
    // The good consumer kept replicating throughout.
    p.write_ok(&w.changes(50))?;
    wait_converged(&p, &good, "people", PEOPLE)?;
    assert_eq!(good.agreement_status("people")?["state"], "persisting");
    Ok(())
}

#[test]
fn malformed_config_and_ldif_are_refused_with_location_and_change_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut c = Consumer::configure(&tmp.path().join("c"), 1, &[Agreement::persist("people", PEOPLE, "s")])?;
    let text = std::fs::read_to_string(&c.config)?.replace("scope = \"subtree\"", "scope = \"deep\"");
    std::fs::write(&c.config, &text)?;
    let err = refused("tether-consumer", "run", &c.config, &[])?;
    assert!(err.contains("consumer.toml") && err.contains("agreement[0].scope") && err.contains("deep"), "{err}");
    assert!(!c.dir.join("data").exists(), "nothing written");
    // A region a handshake cannot carry: the provider would refuse every attempt as a
    // protocol violation without saying why, so the file is refused, naming it.
    let uids: String = (0..3000).map(|i| format!("(uid=u{i:07})")).collect();
    let text: String = text
        .replace("scope = \"deep\"", "scope = \"subtree\"")
        .lines()
        .map(
            |line| {
                if line.starts_with("filter = ") {
                    format!("filter = \"(|{uids})\"\n")
                } else {
                    format!("{line}\n")
                }
            },
        )
        .collect();
    std::fs::write(&c.config, text)?;
    let err = refused("tether-consumer", "run", &c.config, &[])?;
    assert!(
        err.contains("key 'agreement[0]': the region of \"people\"")
            && err.contains("more than the 32768 one may carry"),
        "{err}"
    );
    assert!(!c.dir.join("data").exists(), "nothing written");
    c.child = None;

    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let bad = tmp.path().join("bad.ldif");
    std::fs::write(
        &bad,
        "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\ndn: cn=x,,dc=example,dc=com\nobjectClass: top\n",
    )?;
    let err = refused("tether-provider", "load", &p.config, &[&bad])?;
    assert!(err.contains("bad.ldif:5: invalid DN"), "{err}");
    // Nor is a store left behind where there was none (it would read as an empty
    // directory, a mistyped `data_dir` as a real one).
    let err = p.search(SUFFIX, "subtree", ALL).expect_err("nothing was loaded").to_string();
    assert!(err.contains(", and there is no store in"), "{err}");
    // Into a store that exists, a refused file changes nothing and the store stays.
    let good = tmp.path().join("good.ldif");
    std::fs::write(&good, "dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n")?;
    let (mut load, _) =
        run_cli("tether-provider", "load", &p.config, &[&good.display().to_string()], std::process::Stdio::null())?;
    assert!(replication_tests::harness::wait_exit(&mut load, Duration::from_secs(30))?.success());
    let before = p.search(SUFFIX, "subtree", ALL)?;
    let err = refused("tether-provider", "load", &p.config, &[&bad])?;
    assert!(err.contains("bad.ldif:1: dc=example,dc=com: entry already exists"), "{err}");
    assert_eq!(p.search(SUFFIX, "subtree", ALL)?, before);
    Ok(())
}

/// A load killed while it writes (`kill -9`, the OOM killer, a power cut) leaves part
/// of its file in the store, which nothing told from a whole directory: `serve` started
/// on it, and its consumers would have replicated part of the directory as the whole
/// (found by a walkthrough: a quarter of it, 104,000 of 400,002 entries). The store is
/// marked before the first entry is written: `status` shows the load, `serve` refuses
/// the store naming the ways on, and the same load with `--skip-existing` finishes it.
#[test]
fn a_load_killed_while_it_writes_is_not_served_until_a_load_finishes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let file = tmp.path().join("big.ldif");
    let mut text = String::from("dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n");
    text += &format!("dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n");
    let entries = 20_000;
    for i in 0..entries {
        text += &format!("dn: uid=u{i},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: U {i}\nsn: U\n");
        text += &format!("description: {}\n\n", "x".repeat(200));
    }
    std::fs::write(&file, text)?;
    let shown = file.to_str().context("path")?;
    let (mut load, _) = run_cli("tether-provider", "load", &p.config, &[shown], std::process::Stdio::null())?;
    // Checking the file reads the new store; writing it grows the store's log past a
    // MiB within its first batch (of about 2 MiB), long before the last.
    let log = p.dir.join("data").join("db");
    wait_until(CONVERGE, "the load to write", || Ok(std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20)))?;
    load.kill()?;
    let status = load.wait()?;
    assert!(!status.success(), "the load was killed before it finished: {status}");

    let offline = p.status()?;
    let held = offline["entries"].as_u64().context("entries")?;
    assert!(held < entries + 2, "part of the file: {offline}");
    assert_eq!(offline["unfinished_load"]["file"], shown, "{offline}");
    let err = refused("tether-provider", "serve", &p.config, &[])?;
    assert!(err.contains("the store holds a load that did not finish") && err.contains(shown), "{err}");
    // Commands to copy, with this provider's file.
    let load = format!("`tether-provider load -c {} --skip-existing", p.config.display());
    assert!(err.contains(&format!("{load} {shown}`")) && err.contains(&format!("{load} /dev/null`")), "{err}");
    let after = p.status()?;
    let kept = |s: &serde_json::Value| (s["entries"].clone(), s["history"].clone());
    assert_eq!(kept(&after), kept(&offline), "the refused start changed nothing (nor began a history)");

    let (mut rerun, _) =
        run_cli("tether-provider", "load", &p.config, &["--skip-existing", shown], std::process::Stdio::null())?;
    assert!(replication_tests::harness::wait_exit(&mut rerun, Duration::from_secs(120))?.success());
    let finished = p.status()?;
    assert!(finished["unfinished_load"].is_null(), "{finished}");
    p.start()?;
    assert_eq!(p.status()?["entries"].as_u64(), Some(entries + 2));
    Ok(())
}

/// A consumer's data_dir cloned with its host (a VM or container image started twice:
/// the same path and host name) keeps its consumer id, and the twins overwrite each
/// other's position, so trimming passed the stopped one despite the hold (found by a
/// walkthrough). The provider warns of one id in sessions from two addresses at once;
/// a consumer reconnecting from its own address (a restart) is not warned of.
#[test]
fn a_consumer_cloned_with_its_host_is_warned_of_and_a_restart_is_not() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 20, 31, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    c.admin("restart", Some("people"))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let warning = "this consumer id is that of a session of this agreement open from another host";
    assert!(!p.log_text().contains(warning), "a restart from the same address: {}", p.log_text());

    // The clone: the same id, recorded as made where it now is, as an image keeps it. It
    // reaches the provider from 127.0.0.2, another address of this host, as a second
    // machine would: through a proxy that connects from there.
    let from_elsewhere =
        Proxy::start_from(SocketAddr::from((Ipv4Addr::LOCALHOST, p.port)), Ipv4Addr::new(127, 0, 0, 2))?;
    let twin_dir = tmp.path().join("twin");
    let twin_config = [Agreement::persist("people", PEOPLE, PEOPLE_SECRET)];
    let mut twin = Consumer::configure(&twin_dir, from_elsewhere.port(), &twin_config)?;
    let data = twin_dir.join("data");
    std::fs::create_dir_all(&data)?;
    let id = std::fs::read_to_string(c.dir.join("data").join("consumer.id"))?.trim().to_owned();
    std::fs::write(data.join("consumer.id"), &id)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned();
    std::fs::write(data.join("consumer.origin"), format!("{host}:{}", std::fs::canonicalize(&data)?.display()))?;
    twin.start()?;
    wait_converged(&p, &twin, "people", PEOPLE)?;
    let log = p.log_text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains(warning)).collect();
    assert!(!warned.is_empty() && warned.iter().all(|l| l.contains(" WARN ") && l.contains(&id)), "{log}");
    // The session connecting (its span) and the other one open (by id and address).
    let both = |l: &&str| l.contains("open=session ") && l.contains("127.0.0.2:") && l.contains("127.0.0.1:");
    assert!(warned.iter().any(both), "names the other: {log}");
    Ok(())
}

/// Runs `binary verb -c config args...` and returns its stderr once it has failed (a
/// process that starts serving instead is killed, and the test fails).
fn refused(binary: &str, verb: &str, config: &Path, args: &[&Path]) -> Result<String> {
    let mut child = std::process::Command::new(replication_tests::harness::bin(binary)?)
        .args([verb, "-c"])
        .arg(config)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(30))?;
    assert!(!status.success(), "{binary} {verb} -c {} succeeded", config.display());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut err)?;
    Ok(err)
}

/// A value a search flag cannot take is a wrong command line: exit status 2, naming the
/// flag, before the configuration is read (the file named here does not exist), as
/// operations.md's exit statuses say. They exited 1 after reading the configuration.
#[test]
fn a_search_flag_value_that_cannot_be_read_is_a_usage_error_before_anything_is_read() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("no-such.toml");
    for binary in ["tether-provider", "tether-consumer"] {
        for (flag, value, says) in [
            ("--scope", "deep", "invalid scope \"deep\": expected base, one (or onelevel) or subtree (or sub)"),
            ("--filter", "(cn=", "--filter"),
            ("--base", "not a dn", "--base"),
        ] {
            let out = std::process::Command::new(replication_tests::harness::bin(binary)?)
                .args(["search", "-c"])
                .arg(&missing)
                .args([flag, value])
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{binary} {flag} {value}: {err}");
            assert!(err.contains(says) && err.contains(&format!("'{value}'")), "{binary} {flag} {value}: {err}");
            assert!(!err.contains("no-such.toml"), "{binary} {flag}: the configuration is not read first: {err}");
        }
    }
    Ok(())
}

/// A second process whose config names the `control` socket of a running one (a
/// config copied for a second instance, the same one started twice) is refused before
/// it creates or opens anything: taking the socket over would steer the first one's
/// commands to it. Nor is anything but a socket ever deleted to make room for one.
#[test]
fn a_process_whose_control_path_is_taken_refuses_to_start_and_changes_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 50, 22, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    // The status counts an apply just after its searches see it: wait for the count.
    let held = count(&c.search("people", PEOPLE, "subtree", ALL)?) as u64;
    let counted =
        c.wait_status("people", CONVERGE, "the status to count the replica", |s| s["entries"].as_u64() == Some(held))?;
    let (provider_id, entries) = (p.status()?["store_id"].clone(), counted["entries"].clone());
    let in_use = "is the control socket of a running process";

    // A second instance: its own store and port, the first one's socket.
    let second = p.dir.join("second.toml");
    let port = replication_tests::harness::free_port()?;
    let text = std::fs::read_to_string(&p.config)?
        .replace("data_dir = \"data\"", "data_dir = \"second\"")
        .replace(&format!(":{}\"", p.port), &format!(":{port}\""));
    std::fs::write(&second, text)?;
    let err = refused("tether-provider", "serve", &second, &[])?;
    assert!(err.contains(in_use), "{err}");
    assert!(!p.dir.join("second").exists(), "no store was created");
    // Its own socket and store, the first one's port.
    let third = p.dir.join("third.toml");
    std::fs::write(
        &third,
        std::fs::read_to_string(&p.config)?
            .replace("data_dir = \"data\"", "data_dir = \"third\"")
            .replace("control = \"ctl.sock\"", "control = \"third.sock\""),
    )?;
    let err = refused("tether-provider", "serve", &third, &[])?;
    assert!(err.contains(&format!("binding 127.0.0.1:{}", p.port)) && err.contains("in use"), "{err}");
    assert!(err.contains("third.toml: key 'listen'") && err.contains("give `listen` another port"), "{err}");
    assert!(!p.dir.join("third").exists() && !p.dir.join("third.sock").exists(), "no store was created");
    // The same config started twice.
    assert!(refused("tether-provider", "serve", &p.config, &[])?.contains(in_use));
    let c_second = c.dir.join("second.toml");
    std::fs::write(
        &c_second,
        std::fs::read_to_string(&c.config)?.replace("data_dir = \"data\"", "data_dir = \"second\""),
    )?;
    assert!(refused("tether-consumer", "run", &c_second, &[])?.contains(in_use));
    assert!(!c.dir.join("second").exists(), "no store was created");
    assert!(refused("tether-consumer", "run", &c.config, &[])?.contains(in_use));
    // The running ones still answer on their sockets, and keep them.
    assert_eq!(p.status()?["store_id"], provider_id);
    let s = c.agreement_status("people")?;
    assert_eq!((&s["state"], &s["entries"]), (&"persisting".into(), &entries), "{s}");

    // `control` naming a file that is not a socket: its own config, say.
    let own = p.dir.join("own.toml");
    let text = std::fs::read_to_string(&second)?.replace("control = \"ctl.sock\"", "control = \"own.toml\"");
    std::fs::write(&own, &text)?;
    let err = refused("tether-provider", "serve", &own, &[])?;
    assert!(err.contains("own.toml exists and is not a socket; it is left as it is"), "{err}");
    assert_eq!(std::fs::read_to_string(&own)?, text, "the file is untouched");

    // A command whose file names the other process's socket: the process there does
    // nothing (a consumer's `reload` used to reload the provider, and its `status` to
    // print the provider's as its own), and the error names the socket and both kinds.
    let p_socket = p.dir.join("ctl.sock").display().to_string();
    let c_socket = c.dir.join("ctl.sock").display().to_string();
    let c_wrong = c.dir.join("wrong.toml");
    std::fs::write(
        &c_wrong,
        std::fs::read_to_string(&c.config)?
            .replace("control = \"ctl.sock\"", &format!("control = {p_socket:?}"))
            .replace("data_dir = \"data\"", "data_dir = \"wrong\""),
    )?;
    let p_wrong = p.dir.join("wrong.toml");
    std::fs::write(
        &p_wrong,
        std::fs::read_to_string(&second)?.replace("control = \"ctl.sock\"", &format!("control = {c_socket:?}")),
    )?;
    let people = [Path::new("people")];
    for (binary, config, verb, args) in [
        ("tether-consumer", &c_wrong, "reload", &[][..]),
        ("tether-consumer", &c_wrong, "status", &[][..]),
        ("tether-consumer", &c_wrong, "stop", &people[..]),
        ("tether-provider", &p_wrong, "reload", &[][..]),
        ("tether-provider", &p_wrong, "search", &[][..]),
    ] {
        let err = refused(binary, verb, config, args)?;
        let (socket, is, wanted) = if binary == "tether-consumer" {
            (&p_socket, "tether-provider", "tether-consumer")
        } else {
            (&c_socket, "tether-consumer", "tether-provider")
        };
        assert!(
            err.contains(&format!("{socket} is the control socket of a running {is}, not of a {wanted}"))
                && err.contains("nothing was done"),
            "{binary} {verb}: {err}"
        );
    }
    assert!(!p.log_text().contains("reloaded") && !c.log_text().contains("reloaded"), "neither process reloaded");
    assert_eq!(c.agreement_status("people")?["state"], "persisting", "nor was the agreement stopped");
    assert!(!c.dir.join("wrong").exists() && !p.dir.join("second").exists(), "no store was created");
    Ok(())
}

/// `status`, `search` and `wait` read a stopped process's store and change nothing.
/// Before the first start, or with a mistyped `data_dir`, they used to create an empty
/// store there (owned by whoever ran them, so a service user may then be unable to open
/// it) and report it as the real one (`csn 0  entries 0`). A store held by a process that
/// does not answer on the configured socket, and a `load` into a running provider, say
/// what to do.
#[test]
fn commands_that_read_a_stopped_process_create_nothing_and_say_where_they_looked() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let fresh = Provider::configure(&tmp.path().join("fresh"), &ProviderOptions::default())?;
    let no_store = ", and there is no store in";
    for verb in ["status", "search"] {
        let err = refused("tether-provider", verb, &fresh.config, &[])?;
        assert!(err.contains(no_store) && err.contains("check `data_dir` in"), "{verb}: {err}");
    }
    let c_fresh =
        Consumer::configure(&tmp.path().join("c-fresh"), fresh.port, &[Agreement::persist("people", PEOPLE, "s")])?;
    let people = [Path::new("--agreement"), Path::new("people")];
    for (verb, args) in [
        ("status", &[][..]),
        ("search", &people[..]),
        ("wait", &[people[0], people[1], Path::new("--csn"), Path::new("1")][..]),
        ("start", &people[1..]),
    ] {
        let err = refused("tether-consumer", verb, &c_fresh.config, args)?;
        assert!(err.contains(no_store), "{verb}: {err}");
    }
    assert!(!fresh.dir.join("data").exists() && !c_fresh.dir.join("data").exists(), "no store was created");
    // `stop` before the first run must make the store that keeps the flag, and says so.
    let (mut stop, _) = run_cli("tether-consumer", "stop", &c_fresh.config, &["people"], std::process::Stdio::piped())?;
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stop.stdout.take().context("stdout")?, &mut said)?;
    assert!(replication_tests::harness::wait_exit(&mut stop, Duration::from_secs(30))?.success());
    assert!(
        said.starts_with("people: stopped (takes effect when the consumer runs); no consumer had run with data_dir")
            && said.contains("a new store was made there"),
        "{said}"
    );
    assert_eq!(c_fresh.agreement_status("people")?["state"], "stopped");
    let again = c_fresh.admin("stop", Some("people"))?;
    assert_eq!(again, "people: already stopped; nothing changed\n");

    // A consumer that ran, stopped, with an agreement added to its file since.
    let (mut p, _w) = provider_with(tmp.path(), 20, 23, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    assert!(c.stop()?.success());
    let text = std::fs::read_to_string(&c.config)?;
    std::fs::write(
        &c.config,
        text.clone() + &text[text.find("[[agreement]]").context("agreement")?..].replace("\"people\"", "\"added\""),
    )?;
    let added = c.agreement_status("added")?;
    assert_eq!(
        (&added["state"], &added["entries"], &added["cookie"]),
        (&"not running".into(), &0.into(), &serde_json::Value::Null),
        "{added}"
    );
    assert!(added.get("lag_seconds").is_none(), "never current, so no lag recorded: {added}");
    let err = refused("tether-consumer", "search", &c.config, &[Path::new("--agreement"), Path::new("added")])?;
    assert!(err.contains("agreement \"added\" has no replica yet"), "{err}");
    // Its `start` has nothing to record, and makes no replica (it made an empty one).
    let said = c.admin("start", Some("added"))?;
    assert_eq!(said, "added: not stopped, so it runs when the consumer runs; nothing changed\n");
    let err = refused("tether-consumer", "search", &c.config, &[Path::new("--agreement"), Path::new("added")])?;
    assert!(err.contains("agreement \"added\" has no replica yet"), "after start: {err}");
    // Nor does the `start` of one that ran and was never stopped: "started" read as if a
    // stop had been taken back.
    let said = c.admin("start", Some("people"))?;
    assert_eq!(said, "people: not stopped, so it runs when the consumer runs; nothing changed\n");
    // And with the agreement that ran taken out of the file: its replica, which the
    // next start deletes, is listed as such.
    std::fs::write(&c.config, text.replace("\"people\"", "\"renamed\""))?;
    let removed = c.agreement_status("people")?;
    assert_eq!(removed["state"], "removed", "{removed}");
    assert!(removed.get("provider").is_none() && removed.get("mode").is_none(), "{removed}");
    assert!(removed["entries"].as_u64() > Some(0) && removed["cookie"].is_string(), "{removed}");
    // As stale as it is, as the agreements still in the file are: it ran, and was current.
    assert!(removed["lag_seconds"].is_u64(), "{removed}");
    std::fs::write(&c.config, &text)?;
    for verb in ["reload", "restart"] {
        let args = if verb == "restart" { &[Path::new("people")][..] } else { &[] };
        let err = refused("tether-consumer", verb, &c.config, args)?;
        let socket = c.dir.join("ctl.sock").display().to_string();
        assert!(err.contains(&format!("the consumer is not running (nothing answers on {socket})")), "{verb}: {err}");
        assert_eq!(verb == "restart", err.contains("`restart` reconnects a running agreement"), "{verb}: {err}");
    }
    assert!(c.agreement_status("people")?["entries"].as_u64() > Some(0), "the replica that ran is read");

    // The running provider's store, through a copy of its file naming another socket.
    let other = p.dir.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&p.config)?.replace("control = \"ctl.sock\"", "control = \"other.sock\""),
    )?;
    let pid = p.child.as_ref().context("running")?.id();
    for verb in ["status", "reload"] {
        let err = refused("tether-provider", verb, &other, &[])?;
        assert!(
            err.contains("nothing answers on")
                && err.contains("other.sock")
                && err.contains("in use by another process"),
            "{verb}: {err}"
        );
        assert!(!err.contains("not running"), "{verb}: it runs: {err}");
        // And which process holds it, as the docs promise (a start named it, a command
        // asked whether a `load` was under way).
        assert!(err.contains(&format!("held by process {pid} (")) && err.contains(" serve -c "), "{verb}: {err}");
    }
    // Served through that copy too, on a port of its own: the error names the process
    // to stop (it said to wait for a `load` to end, and this one never ends).
    let port = std::fs::read_to_string(&p.config)?
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"").map(|rest| rest.trim_end_matches('"').to_owned()))
        .context("listen")?;
    std::fs::write(&other, std::fs::read_to_string(&other)?.replace(&port, "127.0.0.1:0"))?;
    let err = refused("tether-provider", "serve", &other, &[])?;
    assert!(err.contains(&format!("held by process {pid} (")) && err.contains(" serve -c "), "{err}");
    // The provider's file given to the consumer: the file's errors, and whose socket it
    // names, without a warning that claims the consumer answered.
    let err = refused("tether-consumer", "status", &p.config, &[])?;
    assert!(err.contains("unknown key") && err.contains("of a running tether-provider, not of a tether-consumer"));
    assert!(!err.contains("this is the status of the running"), "{err}");
    let ldif = p.dir.join("more.ldif");
    std::fs::write(&ldif, format!("dn: uid=late,{PEOPLE}\nobjectClass: person\nuid: late\ncn: late\nsn: Late\n"))?;
    let err = refused("tether-provider", "load", &p.config, &[&ldif])?;
    assert!(err.contains("stop the provider first"), "{err}");
    assert!(p.stop()?.success());
    Ok(())
}

/// A `write` whose records all applied but whose CSN cannot be printed (a full disk)
/// fails saying every record applied and not to run the file again: a script retrying
/// on exit status 1 would get already-exists, or a second increment.
#[test]
fn a_write_whose_csn_cannot_be_printed_says_not_to_run_the_file_again() -> Result<()> {
    use std::io::Read;
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 10, 16, ProviderOptions::default())?;
    let file = tmp.path().join("changes.ldif");
    std::fs::write(&file, w.changes(3))?;
    let before = p.status()?["csn"].as_u64().context("provider csn")?;
    let full = std::process::Stdio::from(std::fs::File::create("/dev/full")?);
    let (mut child, what) = run_cli("tether-provider", "write", &p.config, &[file.to_str().context("path")?], full)?;
    let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(60))?;
    let mut err = String::new();
    child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
    assert_eq!(status.code(), Some(1), "{what}: {err}");
    assert!(err.contains("every record applied (do not run the file again)"), "{what}: {err}");
    assert!(p.status()?["csn"].as_u64().context("provider csn")? > before, "the records applied");
    Ok(())
}

/// Runs `binary verb -c config args` with its standard output on `stdout`; its exit
/// status and standard error.
fn run_cli(
    binary: &str,
    verb: &str,
    config: &Path,
    args: &[&str],
    stdout: std::process::Stdio,
) -> Result<(std::process::Child, String)> {
    let child = std::process::Command::new(replication_tests::harness::bin(binary)?)
        .args([verb, "-c"])
        .arg(config)
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    Ok((child, format!("{binary} {verb} {}", args.join(" "))))
}

/// Standard output is a command's result: `search > backup.ldif` on a full disk must
/// fail the command, never leave a cut file behind exit status 0 (as it did through a
/// running process), and a reader that stops early (`search | head`) must end it with
/// success and nothing on stderr (offline, it failed with "Broken pipe"). Both through
/// the running processes and offline, for each command that prints a result.
#[test]
fn output_that_cannot_be_written_fails_the_command_and_a_reader_that_stops_early_does_not() -> Result<()> {
    use std::io::Read;
    use std::process::Stdio;
    let tmp = tempfile::tempdir()?;
    // Enough entries that a search outgrows a pipe's buffer (64 KiB), so its writer
    // meets the closed end instead of finishing into the buffer.
    let (mut p, _w) = provider_with(tmp.path(), 2_000, 24, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let (pc, cc) = (p.config.clone(), c.config.clone());
    let commands: [(&str, &str, &Path, &[&str]); 4] = [
        ("tether-provider", "search", &pc, &[]),
        ("tether-consumer", "search", &cc, &["--agreement", "people"]),
        ("tether-provider", "status", &pc, &[]),
        ("tether-consumer", "status", &cc, &["--json"]),
    ];
    for running in [true, false] {
        for (binary, verb, config, args) in commands {
            let (mut child, what) =
                run_cli(binary, verb, config, args, Stdio::from(std::fs::File::create("/dev/full")?))?;
            let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(30))?;
            let mut err = String::new();
            child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
            assert!(!status.success(), "{what} (running: {running}) succeeded writing to a full disk");
            assert!(err.contains("standard output: No space left on device"), "{what} (running: {running}): {err}");

            if verb == "search" {
                let (mut child, what) = run_cli(binary, verb, config, args, Stdio::piped())?;
                let mut head = [0u8; 100];
                child.stdout.take().context("stdout")?.read_exact(&mut head)?;
                // The read end is dropped here: the command's next write finds it closed.
                let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(30))?;
                let mut err = String::new();
                child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
                assert!(status.success() && err.is_empty(), "{what} (running: {running}): {status}: {err}");
                assert!(head.starts_with(b"dn: "), "{what}");
            }
        }
        if running {
            assert!(c.stop()?.success());
            assert!(p.stop()?.success());
        }
    }
    Ok(())
}

/// A control socket whose file is taken away while the process runs (an `rm`, a cleaner
/// of `/run`, its folder deleted) is made again within seconds, and commands reach the
/// process once more. Every command used to find nothing to talk to until a restart,
/// and blamed "a load under way" or a changed `control`.
#[test]
fn a_control_socket_taken_away_is_made_again() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _) = provider_with(tmp.path(), 10, 16, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    type Status<'a> = &'a dyn Fn() -> Result<serde_json::Value>;
    let status_of: [(&str, &Path, Status<'_>); 2] =
        [("provider", &p.dir, &|| p.status()), ("consumer", &c.dir, &|| c.status())];
    for (what, dir, status) in status_of {
        let socket = dir.join("ctl.sock");
        std::fs::remove_file(&socket)?;
        // A command finding nothing on the socket, and then the store held, asks the
        // socket again once it answers (within 2 s; the store's lock is waited for 5 s):
        // the window a command run just as a server starts meets (its socket bound, its
        // store opened, its socket not yet answering), where `status` failed saying
        // nothing answers and hinting at a `load` under way.
        let first = status()?;
        assert_eq!(first["running"], true, "the {what}'s own answer: {first}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket)?.permissions());
        assert_eq!(mode & 0o777, 0o600, "the {what}'s socket is its user's alone");
    }
    // Logged once the socket is bound again, which a command may reach first.
    wait_until(Duration::from_secs(30), "both processes to say they made it again", || {
        Ok(p.log_text().contains("made it again") && c.log_text().contains("made it again"))
    })?;
    // Something else put in its place is left as it is, and said; taken away, the
    // socket comes back.
    let socket = p.dir.join("ctl.sock");
    // Put in its place at once (a rename replaces it), so no check finds the path empty.
    let file = p.dir.join("not-a-socket");
    std::fs::write(&file, "not a socket")?;
    std::fs::rename(&file, &socket)?;
    replication_tests::harness::wait_until(Duration::from_secs(30), "the warning", || {
        Ok(p.log_text().contains("now holds something other than a socket"))
    })?;
    assert_eq!(std::fs::read_to_string(&socket)?, "not a socket", "the file was left as it is");
    std::fs::remove_file(&socket)?;
    replication_tests::harness::wait_until(Duration::from_secs(30), "the socket made again", || {
        Ok(p.status().is_ok_and(|s| s["running"] != false))
    })?;
    Ok(())
}

/// A `search` or `wait` run just as a server's control socket is taken away gets the
/// server's own answer, as `status` does above: each finds nothing on the socket, then
/// the store held, and asks the socket again once it answers (made again within 2 s;
/// the store's lock is waited for 5 s), rather than fail saying the store is in use.
#[test]
fn a_search_or_wait_finding_the_store_held_asks_the_socket_again() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 10, 16, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    p.write_ok(&w.changes(5))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let csn = p.status()?["csn"].as_u64().context("provider csn")?;
    let wait = || -> Result<String> {
        let out = c.wait_csn("people", csn, "30s")?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    };
    type Command<'a> = &'a dyn Fn() -> Result<String>;
    let commands: [(&str, &Path, Command<'_>); 3] = [
        ("provider's search", &p.dir, &|| p.search(PEOPLE, "subtree", ALL)),
        ("consumer's search", &c.dir, &|| c.search("people", PEOPLE, "subtree", ALL)),
        ("consumer's wait", &c.dir, &wait),
    ];
    for (what, dir, command) in commands {
        let answer = command()?;
        std::fs::remove_file(dir.join("ctl.sock"))?;
        assert_eq!(command()?, answer, "the {what} answer, through its socket made again");
    }
    Ok(())
}

/// A consumer's status lists its agreements by name, running or stopped, whatever their
/// order in the file: stopped, it listed them in file order (a script read two orders).
/// Stopped, the replicas of agreements gone from the file come after them.
#[test]
fn a_consumer_s_status_lists_its_agreements_by_name_running_or_stopped() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // No provider: agreements that cannot connect are all a status needs.
    let port = replication_tests::harness::free_port()?;
    let in_file_order =
        [Agreement::persist("zeta", PEOPLE, "zeta-secret"), Agreement::persist("alpha", OTHERS, "alpha-secret")];
    let mut c = Consumer::configure(&tmp.path().join("c"), port, &in_file_order)?;
    let names = |status: &serde_json::Value| -> Result<Vec<String>> {
        let agreements = status["agreements"].as_array().context("agreements")?;
        Ok(agreements.iter().map(|a| a["name"].as_str().unwrap_or_default().to_owned()).collect())
    };
    c.start()?;
    let running = c.status()?;
    assert_eq!(running["running"], true, "{running}");
    assert_eq!(names(&running)?, ["alpha", "zeta"], "{running}");
    assert!(c.stop()?.success());
    let stopped = c.status()?;
    assert_eq!(stopped["running"], false, "{stopped}");
    assert_eq!(names(&stopped)?, ["alpha", "zeta"], "the order the running consumer gave: {stopped}");
    // A replica whose agreement left the file is listed after them, whatever its name.
    let c = Consumer::configure(&c.dir, port, &in_file_order[..1])?;
    let edited = c.status()?;
    assert_eq!(names(&edited)?, ["zeta", "alpha"], "{edited}");
    assert_eq!(edited["agreements"][1]["state"], "removed", "{edited}");
    Ok(())
}

/// A `wait` on an agreement in backoff says it is "in backoff" (it read "is backoff").
#[test]
fn a_wait_on_an_agreement_in_backoff_says_so_in_words() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Nothing listens on its provider's port, and the next attempt is an hour away.
    let held_back =
        Agreement { extra: "retry = [\"1h x100\"]\n".into(), ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET) };
    let mut c = Consumer::unreachable(&tmp.path().join("c"), &[held_back])?;
    c.start()?;
    c.wait_status("people", CONVERGE, "backoff", |s| s["state"] == "backoff")?;
    let out = c.wait_csn("people", 1, "1s")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("; the agreement is in backoff with nothing replicated yet"), "{err}");
    Ok(())
}

/// `wait --csn 0` is refused before anything is asked: every replica is past CSN 0, so
/// it answered at once, and a script whose CSN came out 0 (its `write` failed) went on
/// as if its change had arrived.
#[test]
fn a_wait_for_csn_0_is_refused() -> Result<()> {
    let out = std::process::Command::new(replication_tests::harness::bin("tether-consumer")?)
        .args(["wait", "-c", "/nonexistent/consumer.toml", "--csn", "0"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("0 is before every change"), "{err}");
    Ok(())
}

/// `wait --timeout` longer than a wait may be is refused, naming the limit: it was cut
/// to 60 s without a word, so a script's `--timeout 5m` gave up after one minute.
#[test]
fn a_wait_longer_than_the_limit_is_refused_naming_it() -> Result<()> {
    let out = std::process::Command::new(replication_tests::harness::bin("tether-consumer")?)
        .args(["wait", "-c", "/nonexistent/consumer.toml", "--csn", "1", "--timeout", "5m"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("5m is longer than a wait may be (1m)"), "{err}");
    // The limit itself is a wait that may be: refused, it sent a script's `--timeout 60s`
    // back with a usage error. (It goes on to read the file, which is not there.)
    let out = std::process::Command::new(replication_tests::harness::bin("tether-consumer")?)
        .args(["wait", "-c", "/nonexistent/consumer.toml", "--csn", "1", "--timeout", "60s"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/consumer.toml") && !err.contains("longer than"), "{err}");
    Ok(())
}

/// A first start whose port is taken changes nothing: no store, and no empty `data_dir`
/// either (made for the control socket inside it), which was left behind, mode 0755.
#[test]
fn a_first_start_whose_port_is_taken_leaves_no_folder() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let file = tmp.path().join("provider.toml");
    let port = taken.local_addr()?.port();
    std::fs::write(
        &file,
        format!("data_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\nsuffix = \"dc=example,dc=com\"\n"),
    )?;
    let out = std::process::Command::new(replication_tests::harness::bin("tether-provider")?)
        .args(["serve", "-c"])
        .arg(&file)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("binding 127.0.0.1:{port}")), "{err}");
    assert!(!tmp.path().join("data").exists(), "a folder was left behind: {err}");
    Ok(())
}

/// What a command says on standard error is for whoever reads it: a reader gone from
/// it (`status 2>&1 | head -2` closed before a warning after the table) must not turn
/// the command into a crash (`eprintln!` panicked, exit 101), whatever the command's
/// own outcome. Here, a refusal to read a file that does not exist (exit 1).
#[test]
fn a_command_whose_standard_error_is_gone_ends_as_it_would_have() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("missing.toml");
    for binary in ["tether-provider", "tether-consumer"] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let status = std::process::Command::new(replication_tests::harness::bin(binary)?)
            .args(["status", "-c"])
            .arg(&missing)
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .status()?;
        assert_eq!(status.code(), Some(1), "{binary} status: {status}");
    }
    Ok(())
}

/// Under an open files limit too low for the async runtime, a command and a server
/// say so and exit 1: tokio panicked (exit 101) building its runtime or its signal
/// handlers, naming neither the limit nor how to raise it. The hard limit is lowered
/// too, so that the process cannot raise its soft one past it.
#[test]
fn too_low_an_open_files_limit_is_named_not_a_panic() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    for (binary, verb) in [("tether-provider", "status"), ("tether-provider", "serve"), ("tether-consumer", "status")] {
        for limit in [6, 8, 12] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" {verb} -c \"$1\""))
                .arg(replication_tests::harness::bin(binary)?)
                .arg(&p.config)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{binary} {verb} at {limit}: {stderr}");
            assert!(
                stderr.contains(&format!("the open files limit is {limit}, and {binary} needs at least 16")),
                "{binary} {verb} at {limit}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{binary} {verb} at {limit}: {stderr}");
        }
    }
    // The least the processes need is enough: a command at exactly that limit is not
    // refused for it (the store it is asked about may still fail it).
    let least = 16; // the least the processes need (MIN_OPEN_FILES), as said above
    for binary in ["tether-provider", "tether-consumer"] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {least} && exec \"$0\" status -c \"$1\""))
            .arg(replication_tests::harness::bin(binary)?)
            .arg(&p.config)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("the open files limit is"), "{binary} status at {least}: {stderr}");
        assert!(!stderr.contains("panicked"), "{binary} status at {least}: {stderr}");
    }
    Ok(())
}

/// Gives `path` and everything below it to nobody (65534), links as themselves.
fn give_to_nobody(path: &Path) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to_nobody(&entry?.path())?;
        }
    }
    Ok(())
}

/// Root's command on a stopped process's store that another user owns runs as that
/// user: sled opens its files by path, and a link the store's user put at `db` had
/// root's `status` write half a megabyte of sled's log over the file it named (found by
/// a security audit's verification). Run as the store's user, the command is refused
/// that file, and reads a sound store as before.
#[test]
fn root_reads_a_store_another_user_owns_as_that_user() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(()); // only root runs a command as another user
    }
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut work = Workload::new(5, 49);
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let file = tmp.path().join("initial.ldif");
    std::fs::write(&file, work.initial_ldif())?;
    p.load(&file)?;
    give_to_nobody(&p.dir)?;
    let status = p.status()?;
    assert_eq!(status["running"], false, "{status}");
    assert!(status["entries"].as_u64() > Some(0), "{status}");
    let data = p.dir.join("data");
    for entry in std::fs::read_dir(&data)? {
        let entry = entry?;
        assert_eq!(entry.metadata()?.uid(), 65534, "{} is left to root", entry.path().display());
    }
    // Without a snapshot, sled takes whatever `db` holds for a log to recover, and writes
    // it out whole: as root, over the file the link names.
    let passwd = "root:x:0:0:root:/root:/bin/bash\n";
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, passwd)?;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600))?;
    for entry in std::fs::read_dir(&data)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap.")) {
            std::fs::remove_file(path)?;
        }
    }
    std::fs::remove_file(data.join("db"))?;
    std::os::unix::fs::symlink(&victim, data.join("db"))?;
    std::os::unix::fs::lchown(data.join("db"), Some(65534), Some(65534))?;
    let refused = p.status();
    assert!(refused.is_err(), "the store's user may not open root's file: {refused:?}");
    assert_eq!(std::fs::read_to_string(&victim)?, passwd, "written through the link");
    Ok(())
}

/// Under a limit on the user's threads too low for the threads a process needs (`ulimit
/// -u`, systemd's `TasksMax=`), a command and a server say so and exit 1: tokio panicked
/// starting its workers and hung in the unwinding. Root is not held to that limit, so
/// root runs them as nobody (whose threads it counts).
#[test]
fn too_low_a_thread_limit_is_named_not_a_hang() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
    for (binary, verb) in [("tether-provider", "status"), ("tether-provider", "serve"), ("tether-consumer", "status")] {
        let mut command = std::process::Command::new(if root { "setpriv" } else { "prlimit" });
        if root {
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "prlimit"]);
        }
        let mut child = command
            .args(["--nproc=4", "--"])
            .arg(replication_tests::harness::bin(binary)?)
            .args([verb, "-c"])
            .arg(&p.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(30))?;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
        assert_eq!(status.code(), Some(1), "{binary} {verb}: {stderr}");
        assert!(stderr.contains(&format!("{binary}: cannot start the ")), "{binary} {verb}: {stderr}");
        assert!(stderr.contains("threads it needs") && stderr.contains("TasksMax="), "{binary} {verb}: {stderr}");
    }
    Ok(())
}

/// A server whose standard output nobody reads any more (started into a pipe whose
/// reader exited: a log shipper gone, `serve | head -1`) keeps running and serving: both
/// panicked at start printing their readiness line into it.
#[test]
fn a_server_whose_standard_output_is_gone_keeps_running() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    runs_without_its_stdout("tether-provider", "serve", &p.config, &|| p.status())?;
    let c = Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, "s")])?;
    runs_without_its_stdout("tether-consumer", "run", &c.config, &|| c.status())
}

/// Starts `binary verb -c config` into a pipe whose reader is gone, waits until
/// `status` says it runs, and stops it with SIGTERM.
fn runs_without_its_stdout(
    binary: &str,
    verb: &str,
    config: &Path,
    status: &dyn Fn() -> Result<serde_json::Value>,
) -> Result<()> {
    use replication_tests::harness::{bin, signal, wait_exit};
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin(binary)?)
        .args([verb, "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // The reader goes before the server has opened its store, let alone printed.
    drop(child.stdout.take());
    wait_until(CONVERGE, &format!("{binary} to answer on its control socket, or exit"), || {
        Ok(child.try_wait()?.is_some() || status().is_ok_and(|s| s["running"] == true))
    })?;
    assert!(child.try_wait()?.is_none(), "{binary} exited: {:?}", child.try_wait());
    signal(&child, "TERM")?;
    assert!(wait_exit(&mut child, Duration::from_secs(30))?.success(), "{binary} stops cleanly");
    Ok(())
}

/// Servers whose standard error nobody reads any more (a log shipper that died,
/// `serve 2>&1 | head -1`) keep replicating and stop cleanly. Every log line was then a
/// write error, which the log formatter reported with `eprintln!`: a panic in the task
/// logging, so sessions died at their first line (writes failed, consumers looped in
/// backoff) while `status` said running, and SIGTERM ended in exit status 101.
#[test]
fn servers_whose_standard_error_is_gone_keep_replicating() -> Result<()> {
    use replication_tests::harness::{bin, signal, wait_exit};
    use std::process::{Child, Command, Stdio};
    let without_stderr = |binary: &str, verb: &str, config: &Path| -> Result<Child> {
        let mut child = Command::new(bin(binary)?)
            .args([verb, "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // The reader goes before the server has logged a line.
        drop(child.stderr.take());
        Ok(child)
    };
    let stops_cleanly = |mut child: Child, binary: &str| -> Result<()> {
        assert!(child.try_wait()?.is_none(), "{binary} exited: {:?}", child.try_wait());
        signal(&child, "TERM")?;
        let status = wait_exit(&mut child, Duration::from_secs(30))?;
        assert!(status.success(), "{binary} stops cleanly: {status:?}");
        Ok(())
    };
    let tmp = tempfile::tempdir()?;

    // The provider without its stderr, serving a consumer as usual.
    let mut work = Workload::new(60, 46);
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let file = tmp.path().join("initial.ldif");
    std::fs::write(&file, work.initial_ldif())?;
    p.load(&file)?;
    let mut server = without_stderr("tether-provider", "serve", &p.config)?;
    wait_until(CONVERGE, "the provider to answer on its control socket, or exit", || {
        Ok(server.try_wait()?.is_some() || p.status().is_ok_and(|s| s["running"] == true))
    })?;
    let c = people_consumer(tmp.path(), &p)?;
    p.write_ok(&work.changes(20))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["reconnects"], 0, "one session throughout");
    stops_cleanly(server, "tether-provider")?;

    // A consumer without its stderr, of a provider as usual.
    let (p, mut work) = provider_with(&tmp.path().join("p2"), 60, 47, ProviderOptions::default())?;
    let c =
        Consumer::configure(&tmp.path().join("c2"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    let consumer = without_stderr("tether-consumer", "run", &c.config)?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    p.write_ok(&work.changes(20))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(c.agreement_status("people")?["state"], "persisting");
    assert_eq!(c.agreement_status("people")?["reconnects"], 0, "one session throughout");
    stops_cleanly(consumer, "tether-consumer")
}

/// Runs `tether-provider verb -c config -` with `text` on its standard input; its exit
/// status, stdout and stderr.
fn provider_from_stdin(config: &Path, verb: &str, text: &str) -> Result<(bool, String, String)> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let mut child = std::process::Command::new(replication_tests::harness::bin("tether-provider")?)
        .args([verb, "-c"])
        .arg(config)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Dropped at the end of the statement: the command reads to the end of its input.
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let status = replication_tests::harness::wait_exit(&mut child, Duration::from_secs(60))?;
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().context("stdout")?.read_to_string(&mut out)?;
    child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
    Ok((status.success(), out, err))
}

/// `-` names standard input for `load` and `write`, as it does for slapadd and
/// ldapmodify (`slapcat | tether-provider load -c F -`, a script's here-document into
/// `write`); it was taken for a file named `-`. Messages name it `<stdin>`, with the line.
#[test]
fn load_and_write_read_standard_input_when_the_file_is_a_dash() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut p = Provider::configure(&tmp.path().join("provider"), &ProviderOptions::default())?;
    let initial = Workload::new(40, 25).initial_ldif();
    let orphan = format!("dn: uid=x,ou=nowhere,{SUFFIX}\nobjectClass: person\nuid: x\ncn: x\nsn: x\n");
    let (ok, _, err) = provider_from_stdin(&p.config, "load", &format!("{initial}\n{orphan}"))?;
    let line = initial.lines().count() + 2;
    assert!(!ok && err.contains(&format!("<stdin>:{line}: uid=x,ou=nowhere,{SUFFIX}: parent")), "{err}");
    let (ok, _, err) = provider_from_stdin(&p.config, "load", &initial)?;
    assert!(ok && err.contains(&format!("loaded {} entries", count(&initial))), "{err}");
    p.start()?;
    assert_eq!(count(&p.search(SUFFIX, "subtree", ALL)?), count(&initial), "a refused file loaded nothing");

    let dn = initial.lines().find(|l| l.starts_with("dn: uid=")).context("a person")?.trim_start_matches("dn: ");
    let change = format!("dn: {dn}\nchangetype: modify\nreplace: description\ndescription: from stdin\n");
    let (ok, csn, err) = provider_from_stdin(&p.config, "write", &change)?;
    assert!(ok && csn.trim().parse::<u64>().is_ok() && err.contains("1 record applied"), "{csn} {err}");
    // The provider's access log line names the write client, as its session's do. The
    // log is written through a queue: the line may follow the write's answer.
    wait_until(CONVERGE, "the write in the provider's log", || Ok(p.log_text().contains("write committed")))?;
    let log = p.log_text();
    let committed = log.lines().find(|l| l.contains("write committed")).context("a logged write")?;
    assert!(committed.contains("session{agreement=writer ") && committed.contains("client="), "{committed}");
    let uid = dn.split(',').next().context("rdn")?;
    assert!(p.search(SUFFIX, "subtree", &format!("({uid})"))?.contains("description: from stdin"));
    // A malformed record anywhere sends nothing: the input is read through once first.
    let malformed =
        format!("{}\ndn: uid=nobody,{PEOPLE}\nchangetype: frob\n", change.replace("from stdin", "never sent"));
    let (ok, _, err) = provider_from_stdin(&p.config, "write", &malformed)?;
    assert!(!ok && err.contains("<stdin>:7: changetype \"frob\" unknown"), "{err}");
    assert!(p.search(SUFFIX, "subtree", &format!("({uid})"))?.contains("description: from stdin"), "nothing sent");
    let refused = format!("{change}\ndn: uid=nobody,{PEOPLE}\nchangetype: delete\n");
    let (ok, _, err) = provider_from_stdin(&p.config, "write", &refused)?;
    assert!(!ok && err.contains("<stdin>:6: refused (no-such-object)") && err.contains("1 record applied"), "{err}");
    assert!(p.stop()?.success());
    Ok(())
}

/// `search --uuids` prints each entry's entryUUID, as slapcat does, and `load` keeps it:
/// a backup printed from the running provider restores every entry as the same entry
/// (identical output from the restored store), and a consumer's replica prints the same
/// identities, so a provider whose store is lost for good can be rebuilt from a replica
/// with them. Neither passes off as a copy to restore from what may not be one: the
/// provider's search fails if entries were added, deleted or renamed while it printed
/// (with `--uuids` or without), and the consumer's refuses a replica its agreement is
/// still changing.
#[test]
fn a_backup_printed_with_uuids_restores_every_entry_as_the_same_entry() -> Result<()> {
    use tether_protocol::control::{ControlRequest, ControlResponse};
    use tether_protocol::{codec, scope::SearchSpec, Dn};
    let tmp = tempfile::tempdir()?;
    // Enough entries that a search's output outgrows the control socket's buffers.
    let (p, mut w) = provider_with(tmp.path(), 3000, 26, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    // Entries written through the provider, not only loaded, get their UUIDs there.
    p.write_ok(&w.changes(50))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let backup = p.search_args(&["--uuids"])?;
    let dns = backup.lines().filter(|l| l.starts_with("dn:")).count();
    let uuids = |ldif: &str| -> Vec<(String, String)> {
        ldif.split("\n\n")
            .filter_map(|r| {
                let dn = r.lines().find_map(|l| l.strip_prefix("dn: "))?;
                let uuid = r.lines().last()?.strip_prefix("entryUUID: ")?;
                Some((dn.to_owned(), uuid.to_owned()))
            })
            .collect()
    };
    assert_eq!(uuids(&backup).len(), dns, "each entry ends with its entryUUID");
    assert!(!p.search(SUFFIX, "subtree", ALL)?.contains("entryUUID"), "only with --uuids");

    let restored = Provider::configure(&tmp.path().join("restored"), &ProviderOptions::default())?;
    let (ok, _, report) = provider_from_stdin(&restored.config, "load", &backup)?;
    assert!(ok && report.contains(&format!("{dns} kept the entryUUID the file gave them")), "{report}");
    assert_eq!(restored.search_args(&["--uuids"])?, backup, "the restored store prints the backup");

    let err = c.search_args(&["--agreement", "people", "--uuids"]).expect_err("persisting").to_string();
    assert!(err.contains("changes while it runs (persisting): stop the agreement first"), "{err}");
    assert!(err.contains(&format!("(tether-consumer stop -c {} people, then start)", c.config.display())), "{err}");
    c.admin("stop", Some("people"))?;
    let replica = c.search_args(&["--agreement", "people", "--uuids"])?;
    let of_provider: std::collections::HashMap<_, _> = uuids(&backup).into_iter().collect();
    let of_replica = uuids(&replica);
    assert_eq!(of_replica.len(), replica.lines().filter(|l| l.starts_with("dn:")).count());
    assert!(of_replica.len() > 100, "{}", of_replica.len());
    for (dn, uuid) in &of_replica {
        assert_eq!(of_provider.get(dn), Some(uuid), "{dn}");
    }
    assert!(c.stop()?.success());
    assert_eq!(c.search_args(&["--agreement", "people", "--uuids"])?, replica, "offline, the same");

    // An entry added while the provider's search is under way (its reader holds back,
    // so the provider waits on a full socket): the output ends in an error, a backup's
    // and a plain search's alike (either may be loaded or compared as a whole).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for uuids in [true, false] {
        let request = ControlRequest::search(None, SearchSpec::subtree(Dn::parse(SUFFIX)?), uuids);
        let (mut reader, _writer) = send_control(&rt, &p.dir.join("ctl.sock"), &request)?;
        let first = rt.block_on(reader.read_frame())?.context("a first page")?;
        assert!(matches!(codec::decode(&first)?, ControlResponse::Output(_)));
        let uid = format!("during-search-{uuids}");
        p.write_ok(&format!("dn: uid={uid},{PEOPLE}\nobjectClass: person\nuid: {uid}\ncn: d\nsn: d\n"))?;
        let last = loop {
            let frame = rt.block_on(reader.read_frame())?.context("the end of the reply")?;
            match codec::decode(&frame)? {
                ControlResponse::Output(_) => continue,
                other => break other,
            }
        };
        let ControlResponse::Error(last) = last else {
            anyhow::bail!("a search that may be torn succeeded (uuids {uuids}): {last:?}")
        };
        assert!(last.contains("1 entry of this region was added, deleted or renamed while it was printed"), "{last}");
        assert!(last.contains("it is not a whole copy"), "{last}");
    }
    Ok(())
}

#[test]
fn a_search_whose_base_names_no_entry_says_so_and_where_the_name_went_wrong() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 50, 21, ProviderOptions::default())?;
    let missing = format!("ou=nowhere,{PEOPLE}");
    let below_missing = format!("uid=x,{missing}");
    let provider_refuses = |p: &Provider, base: &str, want: &str| -> Result<()> {
        let err = p.search(base, "subtree", ALL).expect_err("a base naming no entry is an error").to_string();
        assert!(err.contains(want), "{base}: {err}");
        Ok(())
    };
    // Through the running provider, and offline from its store: the same answers.
    for running in [true, false] {
        if !running {
            p.stop()?;
        }
        provider_refuses(
            &p,
            &below_missing,
            &format!("no entry {below_missing} (the nearest entry above it is {PEOPLE})"),
        )?;
        provider_refuses(
            &p,
            "dc=example,dc=org",
            "--base dc=example,dc=org is outside this directory, whose suffix is dc=example,dc=com",
        )?;
        assert_eq!(count(&p.search(PEOPLE, "base", ALL)?), 1, "an existing base is searched as before");
    }
    p.start()?;

    let mut c = people_consumer(tmp.path(), &p)?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let err = c.search("people", OTHERS, "subtree", ALL).expect_err("beside the region").to_string();
    assert!(
        err.contains(&format!("--base {OTHERS} is outside the region of agreement \"people\", based at {PEOPLE}")),
        "{err}"
    );
    let whole = c.search("people", PEOPLE, "subtree", ALL)?;
    assert_eq!(c.search("people", SUFFIX, "subtree", ALL)?, whole, "above the region: the whole replica");
    let err = c.search("people", &missing, "subtree", ALL).expect_err("not in the replica").to_string();
    assert!(
        err.contains(&format!(
            "no entry {missing} (the nearest entry above it is {PEOPLE}) in the replica of \"people\""
        )),
        "{err}"
    );
    c.stop()?;
    let err = c.search("people", &missing, "subtree", ALL).expect_err("offline too").to_string();
    assert!(err.contains(&format!("no entry {missing}")), "{err}");
    Ok(())
}

#[test]
fn write_stops_at_the_first_refused_record_naming_its_line_and_what_applied() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _) = provider_with(tmp.path(), 50, 11, ProviderOptions::default())?;
    let present =
        |uid: &str| -> Result<bool> { Ok(count(&p.search(SUFFIX, "subtree", &format!("(uid={uid})"))?) == 1) };

    // Records 1 and 2 apply, record 3 (line 14) has no parent, record 4 is never sent.
    let out = p.write(&format!(
        "dn: uid=w1,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: w1\ncn: W One\nsn: One\n\n\
         dn: uid=w1,{PEOPLE}\nchangetype: modify\nadd: description\ndescription: second record\n-\n\n\
         dn: uid=orphan,ou=nowhere,{SUFFIX}\nchangetype: add\nobjectClass: person\ncn: orphan\nsn: x\n\n\
         dn: uid=w2,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: w2\ncn: W Two\nsn: Two\n"
    ))?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".ldif:14: refused (no-parent): parent of uid=orphan"), "{err}");
    assert!(err.contains("; 2 records applied"), "{err}");
    assert!(!err.contains("refused: "), "the reason is said once: {err}");
    assert!(p.search(PEOPLE, "subtree", "(description=second record)")?.contains("dn: uid=w1,"));
    assert!(!present("orphan")? && !present("w2")?, "nothing after the refused record applied");

    // The file is parsed whole first: a syntax error in its last record sends nothing.
    let out = p.write(&format!(
        "dn: uid=w3,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: w3\ncn: W Three\nsn: Three\n\n\
         dn: uid=w4,{PEOPLE}\nchangetype: frobnicate\n"
    ))?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".ldif:9: changetype \"frobnicate\" unknown"), "{err}");
    assert!(!present("w3")?, "a file that does not parse applies nothing");
    Ok(())
}

/// `max_frame` was read, checked and then never applied: every connection took frames
/// up to the protocol's 16 MiB. Now the provider holds its clients to it, and tells a
/// write client that sent more why it closed; `write` checks its records against the
/// same key first and refuses the file before sending any of it.
#[test]
fn max_frame_holds_clients_to_it_and_write_refuses_a_record_over_it_before_sending() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w) = provider_with(tmp.path(), 20, 26, ProviderOptions::default())?;
    assert!(p.stop()?.success());
    let text = std::fs::read_to_string(&p.config)?;
    std::fs::write(&p.config, format!("max_frame = 65536\n{text}"))?;
    p.start()?;
    let csn = p.status()?["csn"].clone();
    let big = format!(
        "dn: uid=big,{PEOPLE}\nchangetype: add\nobjectClass: person\nuid: big\ncn: big\nsn: {}\n",
        "x".repeat(100_000)
    );

    let out = p.write(&big)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("over the provider's max_frame of 65536 bytes"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    // A client that does not know the limit (its copy of the file has the default).
    let other = p.dir.join("unlimited.toml");
    std::fs::write(&other, &text)?;
    let file = p.dir.join("big.ldif");
    std::fs::write(&file, &big)?;
    let out = std::process::Command::new(replication_tests::harness::bin("tether-provider")?)
        .args(["write", "-c"])
        .arg(&other)
        .arg(&file)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("protocol-error: frame of") && err.contains("exceeds the limit of 65536"), "{err}");
    assert_eq!(p.status()?["csn"], csn, "nothing was written, and the provider still serves");
    p.write_ok(&format!("dn: uid=small,{PEOPLE}\nchangetype: add\nobjectClass: person\nuid: small\ncn: s\nsn: S\n"))?;
    Ok(())
}

#[test]
fn write_prints_the_csn_that_wait_takes_to_read_the_writes_on_a_replica() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _) = provider_with(tmp.path(), 50, 13, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let out = p.write(&format!(
        "dn: uid=ryw,{PEOPLE}\nchangetype: add\nobjectClass: person\nuid: ryw\ncn: ryw\nsn: Writer\n\n\
         dn: uid=ryw,{PEOPLE}\nchangetype: modify\nreplace: sn\nsn: Reader\n-\n"
    ))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csn: u64 = String::from_utf8(out.stdout)?.trim().parse()?;
    assert_eq!(Some(csn), p.status()?["csn"].as_u64(), "stdout is the last write's CSN");

    // `--visible` answers once the replica's searches return the writes, without
    // waiting for its flush: no polling either.
    let out = c.wait_visible("people", csn, "30s")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let visible: u64 = String::from_utf8(out.stdout)?.trim().parse()?;
    assert!(visible >= csn, "waited for {csn}, visible {visible}");
    assert_eq!(count(&c.search("people", PEOPLE, "subtree", "(sn=Reader)")?), 1);

    let out = c.wait_csn("people", csn, "30s")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let durable: u64 = String::from_utf8(out.stdout)?.trim().parse()?;
    assert!(durable >= csn, "waited for {csn}, durable {durable}");
    // Once `wait` returned, the replica answers with both writes: no polling.
    assert_eq!(count(&c.search("people", PEOPLE, "subtree", "(sn=Reader)")?), 1);
    let out = c.wait_visible("people", csn + 1000, "1s")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("csn {} not visible within", csn + 1000)), "{err}");

    let out = c.wait_csn("people", csn + 1000, "1s")?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not durable within"), "{err}");
    assert!(err.contains(&format!("the agreement is persisting at csn {durable}")), "where it stands: {err}");
    // A waiting client killed (a `timeout` wrapper giving up) frees its connection in
    // the consumer at once, not at the end of the wait it asked for.
    let before = c.open_files()?;
    let mut waits = (0..20).map(|_| c.spawn_wait("people", csn + 1000, "60s")).collect::<Result<Vec<_>>>()?;
    wait_until(CONVERGE, "the waits to connect", || Ok(c.open_files()? >= before + 20))?;
    for w in &mut waits {
        w.kill()?;
        w.wait()?;
    }
    wait_until(Duration::from_secs(10), "the waits' connections to close", || Ok(c.open_files()? <= before))?;
    // The usual reason a wait fails is named.
    c.admin("stop", Some("people"))?;
    c.wait_status("people", CONVERGE, "stopped", |s| s["state"] == "stopped")?;
    // At once, not after the timeout: nothing moves it until it is started.
    let asked = std::time::Instant::now();
    let out = c.wait_csn("people", csn + 1, "60s")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the agreement is stopped"), "{err}");
    assert!(err.contains(&format!("stays there until it is started (tether-consumer start -c {}", c.config.display())));
    assert!(asked.elapsed() < Duration::from_secs(30), "answered after {:?}", asked.elapsed());
    assert!(!err.contains("within"), "it did not wait for its timeout: {err}");
    // With the consumer down, its store answers: what it holds is on disk.
    assert!(c.stop()?.success());
    let out = c.wait_csn("people", csn, "1s")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout)?.trim(), durable.to_string());
    let out = c.wait_visible("people", csn, "1s")?;
    assert_eq!(String::from_utf8(out.stdout)?.trim(), durable.to_string(), "what is on disk is visible");
    let out = c.wait_csn("people", durable + 1, "1s")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("the consumer is not running, and the replica of people is at csn {durable}")),
        "{err}"
    );
    Ok(())
}

/// A `wait` under way follows its agreement: a reload that restarts it does not leave
/// the wait on a status no one updates (it sat out its timeout, then reported a CSN
/// status had passed), a stop answers it at once, as it answers a wait asked after the
/// stop, and a reload that removes the agreement says so.
#[test]
fn a_pending_wait_follows_its_agreement_through_a_restart_a_stop_and_a_removal() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 50, 14, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    let csn = || -> Result<u64> { p.status()?["csn"].as_u64().context("status has a csn") };
    // Each wait is under way (its connection open in the consumer) before what it
    // must see happens.
    let pending = |target: u64| -> Result<std::process::Child> {
        let before = c.open_files()?;
        let child = c.wait_child("people", target, "60s")?;
        wait_until(CONVERGE, "the wait to connect", || Ok(c.open_files()? > before))?;
        Ok(child)
    };
    // How the wait ended, and how long after `since`.
    let answer = |child: std::process::Child, since: std::time::Instant| -> Result<(bool, String, String, Duration)> {
        let out = child.wait_with_output()?;
        let said = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((out.status.success(), said(&out.stdout), said(&out.stderr), since.elapsed()))
    };

    // Restarted by a reload (a setting changed), then the change it waits for comes.
    let target = csn()? + 1;
    let waiting = pending(target)?;
    let config = std::fs::read_to_string(&c.config)?;
    std::fs::write(&c.config, config.replacen("mode = ", "give_up_after = \"1h\"\nmode = ", 1))?;
    assert!(c.admin("reload", None)?.contains("restarted people"));
    p.write_ok(&w.changes(1))?;
    let (ok, out, err, _) = answer(waiting, std::time::Instant::now())?;
    assert!(ok, "answered once the restarted agreement reached it: {err}");
    assert!(out.trim().parse::<u64>()? >= target, "{out}");

    // Stopped while it waits: answered at once, not at the end of its 60 s.
    let waiting = pending(csn()? + 1000)?;
    let since = std::time::Instant::now();
    c.admin("stop", Some("people"))?;
    let (ok, _, err, took) = answer(waiting, since)?;
    assert!(
        !ok && err.contains("the agreement is stopped") && err.contains("stays there until it is started"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    c.admin("start", Some("people"))?;

    // Removed by a reload while it waits.
    let waiting = pending(csn()? + 1000)?;
    let since = std::time::Instant::now();
    Consumer::configure(&c.dir, p.port, &[Agreement::persist("others", OTHERS, "s2")])?;
    assert!(c.admin("reload", None)?.contains("removed people"));
    let (ok, _, err, took) = answer(waiting, since)?;
    assert!(!ok && err.contains("no agreement named \"people\" any more: a reload of "), "{err}");
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    Ok(())
}

/// `n` adds of people `uid=PREFIXi` with `sn: SN`, seven lines each (the record of
/// index `i` starts at line `7 i + 1`).
fn people_adds(prefix: &str, sn: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "dn: uid={prefix}{i},{PEOPLE}\nchangetype: add\nobjectClass: person\nuid: {prefix}{i}\n\
                 cn: {prefix}{i}\nsn: {sn}\n\n"
            )
        })
        .collect()
}

/// `write` of `text` started on `p`, once 20 of its records applied.
fn write_under_way(p: &Provider, text: &str) -> Result<std::process::Child> {
    let csn = || -> Result<u64> { p.status()?["csn"].as_u64().context("status has a csn") };
    let before = csn()?;
    let write = p.write_child(text)?;
    wait_until(CONVERGE, "some records to apply", || Ok(csn()? >= before + 20))?;
    Ok(write)
}

/// How `write` ended: its exit status and standard error.
fn ended(write: &mut std::process::Child) -> Result<(std::process::ExitStatus, String)> {
    use std::io::Read as _;
    let status = replication_tests::harness::wait_exit(write, CONVERGE)?;
    let mut err = String::new();
    write.stderr.take().context("stderr is piped")?.read_to_string(&mut err)?;
    Ok((status, err))
}

#[test]
fn a_write_cut_short_by_a_provider_crash_says_what_applied_and_loses_none_of_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _) = provider_with(tmp.path(), 10, 12, ProviderOptions::default())?;
    // Far more records than apply before the kill, each durable before the next is sent.
    let mut write = write_under_way(&p, &people_adds("k", "Crash", 20_000))?;
    p.kill()?;
    let (status, err) = ended(&mut write)?;
    assert!(!status.success(), "the write finished before the kill: {err}");
    assert!(err.contains("the outcome of this record is unknown"), "{err}");
    let applied = replication_tests::harness::applied_count(&err).with_context(|| format!("no count in: {err}"))?;
    assert!(applied >= 20, "{err}");

    // Every record reported applied survived the SIGKILL; at most the one in flight
    // committed besides them.
    p.start()?;
    let present = count(&p.search(PEOPLE, "one", "(sn=Crash)")?) as u64;
    assert!(present == applied || present == applied + 1, "{applied} reported applied, {present} present");
    assert_eq!(count(&p.search(PEOPLE, "one", &format!("(uid=k{})", applied - 1))?), 1);
    Ok(())
}

/// Ctrl-C (or SIGTERM, or SIGHUP: a terminal closed, an SSH session dropped) stops
/// `write` before its next record, once the one being applied has its answer: the
/// error names the line to go on from and the count, which is exact, and writing the
/// file from that line applies the rest. `write` used to die silently, leaving the
/// operator to count the provider's log lines (under SIGHUP until this test had it).
#[test]
fn an_interrupted_write_names_the_line_to_go_on_from_and_resuming_there_applies_the_rest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _) = provider_with(tmp.path(), 10, 13, ProviderOptions::default())?;
    let total = 2_000;
    for (signal, prefix, sn) in [("INT", "i", "Int"), ("HUP", "h", "Hup")] {
        let text = people_adds(prefix, sn, total);
        let mut write = write_under_way(&p, &text)?;
        replication_tests::harness::signal(&write, signal)?;
        let (status, err) = ended(&mut write)?;
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(": interrupted (SIG{signal}) before this record was sent; "))
                && err.contains("were not applied"),
            "{err}"
        );
        let applied = replication_tests::harness::applied_count(&err).with_context(|| format!("no count in: {err}"))?;
        let applied = usize::try_from(applied)?;
        assert!(applied >= 20 && applied < total, "{err}");
        let filter = format!("(sn={sn})");
        assert_eq!(count(&p.search(PEOPLE, "one", &filter)?), applied, "the count is exact: {err}");
        let line: usize = err
            .split(": interrupted")
            .next()
            .and_then(|head| head.rsplit(':').next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no line in: {err}"))?;
        assert_eq!(line, applied * 7 + 1, "the first record not sent: {err}");

        let rest: String = text.lines().skip(line - 1).map(|l| format!("{l}\n")).collect();
        p.write_ok(&rest)?;
        assert_eq!(count(&p.search(PEOPLE, "one", &filter)?), total);
    }
    Ok(())
}

/// A reload that changes the `[writer]` secret revokes a running `write`: it is told
/// `credentials-revoked` (it used to be told the provider was shutting down, which it
/// was not), and, since a provider answers every write it takes before its goodbye,
/// that the record it waited on was not applied. The count is exact, and the rest
/// goes in from the line named with the new secret.
#[test]
fn a_write_revoked_by_a_reload_is_told_so_and_what_was_not_applied() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _) = provider_with(tmp.path(), 10, 14, ProviderOptions::default())?;
    let total = 2_000;
    let text = people_adds("r", "Rev", total);
    let mut write = write_under_way(&p, &text)?;
    p.reconfigure(&ProviderOptions { writer_secret: "the next writer secret".into(), ..ProviderOptions::default() })?;
    let reload = p.reload_command()?;
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    let (status, err) = ended(&mut write)?;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("the provider closed the session before applying this record (credentials-revoked: ")
            && err.contains("this record and those after it were not applied"),
        "{err}"
    );
    let applied = replication_tests::harness::applied_count(&err).with_context(|| format!("no count in: {err}"))?;
    let applied = usize::try_from(applied)?;
    assert_eq!(count(&p.search(PEOPLE, "one", "(sn=Rev)")?), applied, "the count is exact: {err}");
    wait_until(CONVERGE, "the provider runs on and says why", || {
        Ok(p.log_text().contains("write client's grant revoked"))
    })?;

    let rest: String = text.lines().skip(applied * 7).map(|l| format!("{l}\n")).collect();
    p.write_ok(&rest)?;
    assert_eq!(count(&p.search(PEOPLE, "one", "(sn=Rev)")?), total);
    Ok(())
}

#[test]
fn pipelined_writes_are_decided_in_order_and_replicate() -> Result<()> {
    use replication_tests::bench::client::Writer;
    use tether_protocol::ldif::reader::parse_str;

    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 2000, 9, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    // The workload's changes build on one another (adds then changes and renames of the
    // same entries, deletes, moves): with 64 in flight, the provider groups them, and a
    // write planned without seeing an earlier one in its group would be refused.
    let changes: Vec<_> = parse_str(&w.changes(1000))?.into_iter().map(|r| r.into_change()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let csns = rt.block_on(async {
        let mut writer = Writer::connect(p.port, WRITER_SECRET).await?;
        let mut csns = Vec::new();
        writer.apply(changes, 64, |_, csn, _| csns.push(csn.0)).await?;
        writer.close().await;
        anyhow::Ok(csns)
    })?;
    assert_eq!(csns.len(), 1000, "every write committed");
    assert!(csns.windows(2).all(|pair| pair[1] == pair[0] + 1), "CSNs in the order written");
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert_eq!(p.status()?["csn"].as_u64(), csns.last().copied(), "nothing else was written");
    let status = c.agreement_status("people")?;
    assert_eq!(status["duplicates"], 0, "a change applied twice: {status}");
    Ok(())
}

/// sled locks a store whole, reads too, so a command reading a stopped consumer's store
/// holds it while it runs. A start that meets one waits it out, and so does another
/// command (found by a walkthrough: `run` started beside a loop of `wait` commands
/// failed one time in two, leaving the consumer down, and concurrent readers failed at
/// once).
#[test]
fn a_start_and_a_command_wait_out_a_command_reading_the_store() -> Result<()> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 2000, 31, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    assert!(c.stop()?.success());
    let held = c.search("people", PEOPLE, "subtree", ALL)?;
    let consumer = replication_tests::harness::bin("tether-consumer")?;
    // A search into a pipe nobody reads holds the store from its first byte out.
    let hold = || -> Result<(std::process::Child, std::process::ChildStdout)> {
        let mut reader = Command::new(&consumer)
            .args(["search", "--agreement", "people", "--as-is", "-c"])
            .arg(&c.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut out = reader.stdout.take().context("the reader's output")?;
        out.read_exact(&mut [0u8; 1])?;
        Ok((reader, out))
    };
    // Lets the reader go once `log` (from `from` on) says its holder is waited for.
    let release = |log: std::path::PathBuf, from: usize, mut out: std::process::ChildStdout| {
        std::thread::spawn(move || -> Result<u64> {
            wait_until(Duration::from_secs(30), "a wait for the store", || {
                let text = std::fs::read_to_string(&log)?;
                Ok(text[from.min(text.len())..].contains("the store is held by another process: waiting for it"))
            })?;
            Ok(std::io::copy(&mut out, &mut std::io::sink())?)
        })
    };
    let joined = |h: std::thread::JoinHandle<Result<u64>>| h.join().map_err(|_| anyhow::anyhow!("panicked"))?;

    // Another command waits for it instead of failing.
    let (mut reader, out) = hold()?;
    let stderr = tmp.path().join("search.err");
    let search = Command::new(&consumer)
        .args(["search", "--agreement", "people", "-c"])
        .arg(&c.config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let released = release(stderr.clone(), 0, out);
    let searched = search.wait_with_output()?;
    assert!(searched.status.success(), "{}", std::fs::read_to_string(&stderr)?);
    assert_eq!(String::from_utf8_lossy(&searched.stdout), held);
    assert!(joined(released)? > 0 && reader.wait()?.success());

    // So does the start.
    let (mut reader, out) = hold()?;
    let released = release(c.log.clone(), c.log_text().len(), out);
    c.start()?;
    assert!(joined(released)? > 0 && reader.wait()?.success());
    p.write_ok(&w.changes(10))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    Ok(())
}

/// A running consumer holds its store for as long as it runs, so a command that reads the
/// store while it answers on its socket (`search --as-is`; `search` of a name the file
/// does not hold, which looks for a removed agreement's replica) has nothing to wait
/// for. They used to wait out the 5 s meant for another command reading the store,
/// logging that they waited for it, before saying the consumer holds it.
#[test]
fn a_command_meeting_the_store_of_the_running_consumer_says_so_without_waiting_for_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 200, 37, ProviderOptions::default())?;
    let c = people_consumer(tmp.path(), &p)?;
    let waited = "the store is held by another process: waiting for it";
    for (args, says) in [
        (&["--agreement", "nosuch"][..], "the running consumer holds no replica of an agreement removed"),
        (&["--agreement", "people", "--as-is"][..], "a running consumer holds it: stop the consumer first"),
    ] {
        let out = c.search_output(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "search {args:?}: {stderr}");
        assert!(stderr.contains(says), "search {args:?}: {stderr}");
        assert!(!stderr.contains(waited), "search {args:?} waited for the running consumer's store: {stderr}");
    }
    Ok(())
}

/// `TETHER_LOG_FORMAT=json` makes every log line one JSON object, for log shippers: the
/// text form quotes no value and writes spans as `agreement{agreement=people ...}:`,
/// which a logfmt parser splits wrongly. The agreement and session a line belongs to
/// are in its `spans`.
#[test]
fn json_logs_are_one_object_a_line_naming_the_agreement_and_session() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w) = provider_with(tmp.path(), 50, 43, ProviderOptions::default())?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.env.push(("TETHER_LOG_FORMAT".into(), "json".into()));
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    p.write_ok(&w.changes(5))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    c.stop()?;
    let log = c.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON object: {l}")))
        .collect::<Result<_>>()?;
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let connected =
        lines.iter().find(|l| l["message"] == "connected").with_context(|| format!("no `connected` line in\n{log}"))?;
    let spans = connected["spans"].as_array().context("spans")?;
    assert!(spans.iter().any(|s| s["agreement"] == "people"), "{connected}");
    assert!(spans.iter().any(|s| s["session"].is_u64()), "{connected}");
    // The last line of a process that fails is JSON too: the line that matters most.
    let failed = std::process::Command::new(replication_tests::harness::bin("tether-consumer")?)
        .args(["run", "-c"])
        .arg(tmp.path().join("no-such.toml"))
        .env("TETHER_LOG_FORMAT", "json")
        .output()?;
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let last: serde_json::Value =
        serde_json::from_str(stderr.lines().last().context("a last line")?).with_context(|| stderr.to_string())?;
    assert_eq!((last["level"].as_str(), last["fatal"].as_bool()), (Some("ERROR"), Some(true)), "{last}");
    assert!(last["message"].as_str().is_some_and(|m| m.contains("no-such.toml")), "{last}");
    Ok(())
}

/// Both statuses say when their process started (`started_at`, RFC 3339), since every
/// counter there counts from it and a monitor must tell a restart from a fault; a
/// stopped provider's status, read from its store, has none. The provider's says the
/// address it listens on (`listen`), which its configuration need not say.
#[test]
fn status_says_when_each_process_started_and_where_the_provider_listens() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let whole_second = || -> Result<std::time::SystemTime> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        Ok(std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs()))
    };
    let started = |status: &serde_json::Value| -> Result<std::time::SystemTime> {
        let at = status["started_at"].as_str().with_context(|| format!("no started_at in {status}"))?;
        Ok(humantime::parse_rfc3339(at)?)
    };
    let before = whole_second()?;
    let (mut p, _w) = provider_with(tmp.path(), 20, 44, ProviderOptions::default())?;
    let mut c = people_consumer(tmp.path(), &p)?;
    let (provider_at, consumer_at) = (started(&p.status()?)?, started(&c.status()?)?);
    assert_eq!(p.status()?["listen"], format!("127.0.0.1:{}", p.port));
    assert!(before <= provider_at && provider_at <= consumer_at, "{provider_at:?} {consumer_at:?}");
    assert!(consumer_at <= std::time::SystemTime::now());
    c.stop()?;
    let again = whole_second()?;
    c.start()?;
    let restarted = started(&c.status()?)?;
    assert!(again <= restarted && restarted >= consumer_at, "a restart starts the count again: {restarted:?}");
    p.stop()?;
    assert_eq!(p.status()?["started_at"], serde_json::Value::Null);
    assert_eq!(p.status()?["listen"], serde_json::Value::Null);
    // A stopped consumer's too: the key is there, as null, for a script that reads it.
    c.stop()?;
    let stopped = c.status()?;
    assert!(stopped.get("started_at").is_some_and(serde_json::Value::is_null), "{stopped}");
    Ok(())
}

/// `started_at` is when the process started, not when its status was first asked for:
/// asked seconds into the run, it is no later than the process's first log line.
#[test]
fn started_at_is_the_processs_start_not_its_first_status() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let agreement =
        Agreement { extra: "retry = [\"1s forever\"]\n".into(), ..Agreement::persist("people", PEOPLE, "s") };
    let mut c = Consumer::unreachable(&tmp.path().join("c"), &[agreement])?;
    c.start()?;
    // Its start's lines reach the log through a queue, the readiness line last.
    wait_until(CONVERGE, "the start in the consumer's log", || Ok(c.log_text().contains("consumer running")))?;
    let at = |line: &str| -> Result<std::time::SystemTime> {
        Ok(humantime::parse_rfc3339(line.split_whitespace().next().context("a timestamp")?)?)
    };
    let first = c.log_text().lines().find_map(|l| at(l).ok()).context("a first log line")?;
    // Attempts a second apart, until two seconds of the run have passed by the log's clock.
    wait_until(CONVERGE, "two seconds of attempts", || {
        let log = c.log_text();
        let last = log.lines().rfind(|l| l.contains(" disconnected ")).map(at).transpose()?;
        Ok(last.is_some_and(|t| t >= first + Duration::from_secs(2)))
    })?;
    let status = c.status()?;
    let started = humantime::parse_rfc3339(status["started_at"].as_str().context("started_at")?)?;
    assert!(started <= first, "started_at {started:?} is after the first log line, {first:?}: {status}");
    Ok(())
}

/// A writer's refused handshake is warned of as `agreement=writer`, the name its
/// sessions are listed under, so a search of the log by agreement finds it too.
#[test]
fn a_refused_writer_is_warned_of_as_agreement_writer() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = provider_with(tmp.path(), 5, 47, ProviderOptions::default())?;
    std::fs::write(p.dir.join("secrets/writer.key"), "not the running secret\n")?;
    let out = p.write(&format!("dn: uid=nobody,{PEOPLE}\nchangetype: delete\n"))?;
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = |l: &&str| l.contains("handshake failed") && l.contains("bad-credentials");
    wait_until(CONVERGE, "the warning of the refusal", || Ok(p.log_text().lines().any(|l| refused(&l))))?;
    let said = p.log_text();
    assert!(said.lines().filter(refused).all(|l| l.contains("agreement=writer ")), "{said}");
    Ok(())
}

/// A `TETHER_LOG_FORMAT` that is neither text nor json is said, as a warning, and the
/// log stays text: an operator's typo must not pass unseen.
#[test]
fn a_log_format_of_neither_kind_is_warned_of() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut c = Consumer::unreachable(&tmp.path().join("c"), &[Agreement::persist("people", PEOPLE, "s")])?;
    c.env.push(("TETHER_LOG_FORMAT".into(), "logfmt".into()));
    c.start()?;
    wait_until(CONVERGE, "the consumer's first attempt", || Ok(c.log_text().contains(" disconnected ")))?;
    let log = c.log_text();
    let warned =
        log.lines().find(|l| l.contains("TETHER_LOG_FORMAT")).with_context(|| format!("no warning in\n{log}"))?;
    assert!(warned.contains(" WARN ") && warned.contains("\"logfmt\" is not a log format"), "{warned}");
    assert!(warned.contains("logging as text"), "{warned}");
    Ok(())
}

/// Runs `binary sub -c config args` as user 65534 in group 4242 alone, as a monitoring
/// agent's own user in the status group would.
fn as_monitor(binary: &str, sub: &str, config: &Path, args: &[&str]) -> Result<std::process::Output> {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=4242", "--clear-groups", "--bounding-set=-all", "--inh-caps=-all"]);
    c.arg(replication_tests::harness::bin(binary)?).arg(sub).arg("-c").arg(config).args(args);
    c.output().with_context(|| format!("running {c:?}"))
}

/// With `status_group`, a monitoring agent run as a user of its own, in that group,
/// reads both processes' `status` (with no word about the secrets it may not read) and
/// can do nothing else there: a `stop` or `reload` is refused, naming who may, and
/// changes nothing. A process whose socket's folder keeps the group out warns at start.
/// Only root can run a command as another user; elsewhere this test has nothing to check.
#[test]
fn a_member_of_the_status_group_reads_status_and_does_nothing_else() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let with_group = |config: &Path| -> Result<()> {
        let text = std::fs::read_to_string(config)?;
        Ok(std::fs::write(config, format!("status_group = \"4242\"\n{text}"))?)
    };
    let (mut p, _w) = provider_with(tmp.path(), 20, 57, ProviderOptions::default())?;
    p.stop()?;
    with_group(&p.config)?;
    // The folder above the provider's made its user's alone.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    p.start()?;
    let closed = format!(
        "the members of status_group 4242 cannot reach the control socket {}: the folder {} (mode 0700",
        p.dir.join("ctl.sock").display(),
        tmp.path().display()
    );
    wait_until(Duration::from_secs(10), &format!("{closed} in the provider's log"), || {
        Ok(p.log_text().contains(&closed))
    })
    .with_context(|| p.log_text())?;
    let refused = as_monitor("tether-provider", "status", &p.config, &["--json"])?;
    assert!(!refused.status.success(), "the folder keeps the monitor out");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;

    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    with_group(&c.config)?;
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    assert!(!c.log_text().contains("cannot reach the control socket"), "{}", c.log_text());

    let read = as_monitor("tether-consumer", "status", &c.config, &["--json"])?;
    let said = String::from_utf8_lossy(&read.stderr);
    assert!(read.status.success() && said.is_empty(), "{said}");
    let status: serde_json::Value = serde_json::from_slice(&read.stdout)?;
    assert_eq!(status["agreements"][0]["state"], "persisting", "{status}");
    let read = as_monitor("tether-provider", "status", &p.config, &["--json"])?;
    let said = String::from_utf8_lossy(&read.stderr);
    assert!(read.status.success() && said.is_empty(), "{said}");
    let status: serde_json::Value = serde_json::from_slice(&read.stdout)?;
    assert_eq!(status["sessions"].as_array().map(Vec::len), Some(1), "{status}");

    for (binary, config, sub, args) in [
        ("tether-consumer", &c.config, "stop", &["people"][..]),
        ("tether-consumer", &c.config, "reload", &[][..]),
        ("tether-consumer", &c.config, "search", &["--agreement", "people"][..]),
        ("tether-provider", &p.config, "reload", &[][..]),
    ] {
        let out = as_monitor(binary, sub, config, args)?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains(&format!(
                    "members of group 4242 may run only `status` on this control socket; `{sub}` is for its process's \
                     user and root; nothing was done"
                ))
                && out.stdout.is_empty(),
            "{binary} {sub}: {said}"
        );
    }
    assert_eq!(c.agreement_status("people")?["state"], "persisting", "the stop was refused");
    // Stopped, it answers no one, and its store is its user's alone: the monitor is told
    // so, not that no consumer ever ran there.
    c.stop()?;
    let out = as_monitor("tether-consumer", "status", &c.config, &["--json"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("the consumer is not running (or runs with another `control`), and its store in")
            && said.contains("is not for this user (uid 65534) to read"),
        "{said}"
    );
    Ok(())
}

/// The configuration `config` with a metrics endpoint on a free loopback port.
fn with_metrics(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    Ok(std::fs::write(config, format!("metrics_listen = \"127.0.0.1:0\"\n{text}"))?)
}

/// `GET /metrics` of the endpoint at `address`: the status line and the page.
fn scrape(address: &str) -> Result<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

/// Both processes serve their status as Prometheus metrics on `metrics_listen` (port 0
/// here: `status` says which port it took), the figures those of `status`, a change
/// counted as it is applied; a port taken stops a start, naming the key; a stopped
/// process serves nothing.
#[test]
fn both_processes_serve_their_status_as_metrics() -> Result<()> {
    use tether_config::metrics::{parse, value as metric};
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = provider_with(tmp.path(), 30, 58, ProviderOptions::default())?;
    p.stop()?;
    with_metrics(&p.config)?;
    p.start()?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    with_metrics(&c.config)?;
    c.start()?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let address = |status: &serde_json::Value| -> Result<String> {
        let at = status["metrics_listen"].as_str().with_context(|| format!("metrics_listen in {status}"))?;
        anyhow::ensure!(at.starts_with("127.0.0.1:") && !at.ends_with(":0"), "{at}");
        Ok(at.to_owned())
    };
    let (p_at, c_at) = (address(&p.status()?)?, address(&c.status()?)?);
    let consumer_id = c.status()?["consumer_id"].as_str().context("consumer_id")?.to_owned();
    let people = [("agreement", "people")];
    let session = [("agreement", "people"), ("consumer", consumer_id.as_str())];

    // Each figure as status has it, once the consumer has acknowledged what it applied.
    let csn = p.status()?["csn"].as_f64().context("csn")?;
    wait_until(CONVERGE, "the provider's session to show no lag", || {
        let (line, body) = scrape(&p_at)?;
        anyhow::ensure!(line == "HTTP/1.1 200 OK", "{line}");
        Ok(metric(&parse(&body).map_err(anyhow::Error::msg)?, "tether_provider_session_lag_changes", &session)
            == Some(0.0))
    })?;
    let page = parse(&scrape(&p_at)?.1).map_err(anyhow::Error::msg)?;
    let status = p.status()?;
    assert_eq!(metric(&page, "tether_provider_csn", &[]), Some(csn));
    assert_eq!(metric(&page, "tether_provider_entries", &[]), status["entries"].as_f64());
    assert_eq!(metric(&page, "tether_provider_sessions", &session), Some(1.0));
    assert_eq!(metric(&page, "tether_provider_consumer_connected", &session), Some(1.0));
    // Current, so dated as current: 0 seconds behind, not left out as unknown.
    assert_eq!(metric(&page, "tether_provider_session_lag_seconds", &session), Some(0.0));
    assert_eq!(metric(&page, "tether_provider_consumer_lag_seconds", &session), Some(0.0));
    let page = parse(&scrape(&c_at)?.1).map_err(anyhow::Error::msg)?;
    let status = c.agreement_status("people")?;
    assert_eq!(
        metric(&page, "tether_consumer_agreement_state", &[("agreement", "people"), ("state", "persisting")]),
        Some(1.0)
    );
    assert_eq!(metric(&page, "tether_consumer_entries", &people), status["entries"].as_f64());
    assert_eq!(
        metric(&page, "tether_consumer_refreshes_total", &[("agreement", "people"), ("kind", "full")]),
        Some(1.0)
    );
    assert_eq!(metric(&page, "tether_consumer_replica_csn", &people), Some(csn));
    let applied = metric(&page, "tether_consumer_applied_total", &people).context("applied")?;

    // A change: counted as applied, the replica's CSN the provider's.
    p.write_ok(&w.changes(1))?;
    wait_converged(&p, &c, "people", PEOPLE)?;
    let csn = p.status()?["csn"].as_f64().context("csn")?;
    wait_until(CONVERGE, "the consumer's metrics to show the change", || {
        let page = parse(&scrape(&c_at)?.1).map_err(anyhow::Error::msg)?;
        Ok(metric(&page, "tether_consumer_replica_csn", &people) == Some(csn))
    })?;
    let page = parse(&scrape(&c_at)?.1).map_err(anyhow::Error::msg)?;
    assert_eq!(metric(&page, "tether_consumer_applied_total", &people), Some(applied + 1.0));
    let table = String::from_utf8(c.command_output("status", &[])?.stdout)?;
    assert!(table.ends_with(&format!("metrics at http://{c_at}/metrics\n")), "{table}");

    // A second consumer given the first one's port does not start, and says why.
    let mut taken =
        Consumer::configure(&tmp.path().join("c2"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    let text = std::fs::read_to_string(&taken.config)?;
    std::fs::write(&taken.config, format!("metrics_listen = \"{c_at}\"\n{text}"))?;
    assert!(taken.start().is_err(), "a start on a port in use");
    let said = taken.log_text();
    assert!(said.contains(&format!("cannot listen on {c_at} for metrics_listen")), "{said}");
    assert!(!tether_store_exists(&taken.dir.join("data")), "nothing made");

    // Nor does a provider, which leaves no folder behind.
    let mut other = Provider::configure(&tmp.path().join("p2"), &ProviderOptions::default())?;
    let text = std::fs::read_to_string(&other.config)?;
    std::fs::write(&other.config, format!("metrics_listen = \"{p_at}\"\n{text}"))?;
    assert!(other.start().is_err(), "a start on a port in use");
    let said = other.log_text();
    assert!(said.contains(&format!("cannot listen on {p_at} for metrics_listen")), "{said}");
    assert!(!other.dir.join("data").exists(), "nothing made");

    // A consumer away while a change is written is behind by it, in changes and in
    // seconds since it was written, which the provider dates (a second or so here).
    c.stop()?;
    let known = |status: &serde_json::Value| -> Result<serde_json::Value> {
        let all = status["consumers"].as_array().with_context(|| format!("consumers in {status}"))?;
        let found = all.iter().find(|k| k["client"] == consumer_id.as_str());
        Ok(found.with_context(|| format!("{consumer_id} in {status}"))?.clone())
    };
    // Its session over, its last position recorded.
    wait_until(CONVERGE, "the provider to see the consumer gone", || Ok(known(&p.status()?)?["connected"] == false))?;
    p.write_ok(&w.changes(1))?;
    let away = known(&p.status()?)?;
    assert_eq!(away["lag_changes"], 1, "{away}");
    assert!(away["lag_seconds"].as_u64().is_some_and(|s| s < 60), "{away}");
    let page = parse(&scrape(&p_at)?.1).map_err(anyhow::Error::msg)?;
    assert_eq!(metric(&page, "tether_provider_consumer_lag_seconds", &session), away["lag_seconds"].as_f64());

    // Stopped, a process serves nothing.
    p.stop()?;
    for at in [&c_at, &p_at] {
        assert!(scrape(at).is_err(), "{at} still answers");
    }
    Ok(())
}

/// Whether a store was made in `data_dir` (a failed start must not make one).
fn tether_store_exists(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// A provider whose metrics port is taken leaves no empty `data_dir` behind when the
/// control socket's default place (in `data_dir`) made it: a later start would take the
/// folder for one an operator made.
#[test]
fn a_provider_whose_metrics_port_is_taken_leaves_no_data_dir_behind() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let at = held.local_addr()?;
    let mut p = Provider::configure(tmp.path(), &ProviderOptions::default())?;
    let text = std::fs::read_to_string(&p.config)?;
    anyhow::ensure!(text.contains("control = \"ctl.sock\"\n"), "{text}");
    // The control socket in its default place, data_dir, which the start makes.
    let text = text.replace("control = \"ctl.sock\"\n", "");
    std::fs::write(&p.config, format!("metrics_listen = \"{at}\"\n{text}"))?;
    assert!(p.start().is_err(), "a start on a port in use");
    let said = p.log_text();
    assert!(said.contains(&format!("cannot listen on {at} for metrics_listen")), "{said}");
    assert!(!tmp.path().join("data").exists(), "data_dir left behind");
    Ok(())
}

/// A stop ends the metrics endpoint with the rest of the process: neither process waits
/// out its shutdown limit for it and then exits anyway, which would make every stop
/// (and every restart for an upgrade) that much longer and log a warning each time.
#[test]
fn a_stop_is_not_held_up_by_the_metrics_endpoint() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    with_metrics(&p.config)?;
    p.start()?;
    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    with_metrics(&c.config)?;
    c.start()?;
    for status in [c.status()?, p.status()?] {
        anyhow::ensure!(status["metrics_listen"].is_string(), "serving metrics: {status}");
    }
    assert!(c.stop()?.success());
    assert!(p.stop()?.success());
    let said = c.log_text();
    assert!(!said.contains("did not stop in time"), "{said}");
    let said = p.log_text();
    assert!(!said.contains("did not finish within"), "{said}");
    Ok(())
}
