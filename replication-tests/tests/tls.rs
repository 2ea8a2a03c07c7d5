//! TLS between consumers, write clients and the provider, with the real binaries: a CA
//! and a provider certificate are generated for each test (no key is committed), a TLS
//! consumer converges, `write` reaches its TLS provider, and a consumer that trusts
//! another CA (or speaks plain TCP to the TLS port, or TLS to a plain one, or reaches a
//! web server instead) fails with an error naming the mismatch while the provider keeps
//! serving everyone else. Then the life of a deployment: a peer killed mid-session, a
//! certificate renewed (and a renewal gone wrong), consumers moved to a new CA, and the
//! IPv6 loopback.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use replication_tests::harness::{
    probe_port, probe_then_warnings, wait_until, Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET,
};
use replication_tests::pki::Ca;
use replication_tests::workload::{Workload, PEOPLE};

const CONVERGE: Duration = Duration::from_secs(90);
const ALL: &str = "(objectClass=*)";
/// Entries loaded before the consumers start.
const ENTRIES: usize = 500;
/// Changes written over TLS while consumers run.
const CHANGES: usize = 100;

/// A TLS provider loaded with generated people, running, and the CA file consumers
/// should trust.
fn tls_provider(root: &Path, seed: u64) -> Result<(Provider, Workload, PathBuf)> {
    let ca = Ca::new("Tether test CA")?;
    let tls = ca.issue(&root.join("pki"), &["127.0.0.1", "provider.test"])?;
    let ca_file = ca.write(&root.join("pki/ca.pem"))?;
    let (p, w) = Provider::loaded(root, ENTRIES, seed, &ProviderOptions { tls: Some(tls), ..Default::default() })?;
    Ok((p, w, ca_file))
}

/// A persist agreement on the people region, over TLS with `tls` as its section body.
fn tls_agreement(tls: String) -> Agreement {
    Agreement { tls: Some(tls), ..Agreement::persist("people", PEOPLE, PEOPLE_SECRET) }
}

/// A consumer under `dir` of the people region over plain TCP, configured, not started.
fn plain_consumer(dir: &Path, port: u16) -> Result<Consumer> {
    Consumer::configure(dir, port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])
}

fn wait_converged(p: &Provider, c: &Consumer) -> Result<()> {
    wait_until(CONVERGE, "the TLS consumer to converge", || {
        Ok(p.search(PEOPLE, "subtree", ALL)? == c.search("people", PEOPLE, "subtree", ALL)?)
    })
}

#[test]
fn tls_consumer_converges_and_write_goes_over_tls() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w, ca_file) = tls_provider(tmp.path(), 11)?;
    // The default server name is the provider's host, 127.0.0.1, which the certificate
    // carries as an IP address; the second consumer names a DNS name explicitly.
    let by_address = tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()));
    let by_name = tls_agreement(format!("ca_file = \"{}\"\nserver_name = \"provider.test\"\n", ca_file.display()));
    let mut a = Consumer::configure(&tmp.path().join("a"), p.port, &[by_address])?;
    let mut b = Consumer::configure(&tmp.path().join("b"), p.port, &[by_name])?;
    a.start()?;
    b.start()?;
    wait_converged(&p, &a)?;
    wait_converged(&p, &b)?;
    // `write` speaks TLS to its own provider, expecting the certificate of `[tls]`.
    p.write_ok(&w.changes(CHANGES))?;
    wait_converged(&p, &a)?;
    wait_converged(&p, &b)?;
    for c in [&a, &b] {
        let status = c.agreement_status("people")?;
        assert_eq!(status["state"], "persisting", "{status}");
        assert_eq!(status["last_refresh"], "full", "live changes arrived without another refresh: {status}");
        assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
        assert_eq!(status["tls"], true, "the consumer's status says the agreement is encrypted: {status}");
    }
    assert!(!p.log_text().contains("TLS handshake failed"), "{}", p.log_text());
    // `status` warns of a key others may read, as a start and a reload do.
    let key = tmp.path().join("pki/provider.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let out = p.status_command()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("warning: TLS key file ") && stderr.contains("mode 644"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_consumer_trusting_another_ca_fails_with_a_tls_error_and_the_provider_keeps_serving() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, mut w, ca_file) = tls_provider(tmp.path(), 12)?;
    let wrong_ca = Ca::new("Some other CA")?.write(&tmp.path().join("wrong-ca.pem"))?;
    let mut good = Consumer::configure(
        &tmp.path().join("good"),
        p.port,
        &[tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()))],
    )?;
    let mut bad = Consumer::configure(
        &tmp.path().join("bad"),
        p.port,
        &[tls_agreement(format!("ca_file = \"{}\"\n", wrong_ca.display()))],
    )?;
    let mut plain = plain_consumer(&tmp.path().join("plain"), p.port)?;
    good.start()?;
    bad.start()?;
    plain.start()?;

    wait_until(CONVERGE, "the wrong-CA consumer to report the TLS failure", || {
        let s = bad.agreement_status("people")?;
        Ok(s["last_disconnect"] == "connection-lost"
            && s["last_error"].as_str().is_some_and(|e| e.contains("TLS handshake") && e.contains("UnknownIssuer")))
    })?;
    let status = bad.agreement_status("people")?;
    assert_ne!(status["state"], "persisting", "{status}");
    assert_eq!(status["entries"], 0, "nothing was replicated from an untrusted provider: {status}");
    // The log is written through a queue: its lines may follow what status shows.
    wait_until(CONVERGE, "the TLS failure in the consumer's log", || {
        Ok(bad.log_text().contains("invalid peer certificate"))
    })?;
    let log = bad.log_text();
    assert!(log.contains("connection-lost") && log.contains("TLS handshake with 127.0.0.1"), "{log}");
    assert!(log.contains("invalid peer certificate"), "{log}");

    // Plain TCP to the TLS port never gets to the Tether handshake.
    wait_until(CONVERGE, "the plain-TCP consumer to fail", || {
        let s = plain.agreement_status("people")?;
        Ok(s["last_disconnect"] == "connection-lost"
            && s["last_error"].as_str().is_some_and(|e| e.contains("the provider answered with TLS")))
    })?;
    assert_eq!(plain.agreement_status("people")?["entries"], 0);
    assert_eq!(plain.agreement_status("people")?["tls"], false);

    // The provider logged each refused handshake and went on serving the good consumer.
    wait_until(CONVERGE, "the provider to log the TLS failures", || Ok(p.log_text().contains("TLS handshake failed")))?;
    wait_converged(&p, &good)?;
    p.write_ok(&w.changes(CHANGES))?;
    wait_converged(&p, &good)?;
    assert_eq!(good.agreement_status("people")?["state"], "persisting");
    wait_until(CONVERGE, "only the trusted consumer to hold a session", || {
        Ok(p.status()?["sessions"].as_array().map(Vec::len) == Some(1))
    })?;
    Ok(())
}

#[test]
fn a_consumer_speaking_tls_to_a_plain_provider_or_to_a_web_server_is_told_what_is_on_the_other_end() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca_file = Ca::new("Tether test CA")?.write(&tmp.path().join("ca.pem"))?;
    let (p, mut w) = Provider::loaded(tmp.path(), ENTRIES, 13, &ProviderOptions::default())?;
    let mut tls = Consumer::configure(
        &tmp.path().join("tls"),
        p.port,
        &[tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()))],
    )?;

    // A web server where the provider should be: it answers whatever arrives with an
    // HTTP error page, as real ones do, for the first few connections.
    let web = std::net::TcpListener::bind("127.0.0.1:0")?;
    let web_port = web.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in web.incoming().take(3).flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.0 400 Bad Request\r\n\r\n");
        }
    });
    let mut lost = plain_consumer(&tmp.path().join("lost"), web_port)?;
    tls.start()?;
    lost.start()?;

    wait_until(CONVERGE, "the TLS consumer to say the provider does not serve TLS", || {
        let s = tls.agreement_status("people")?;
        Ok(s["last_error"].as_str().is_some_and(|e| e.contains("does not seem to serve TLS")))
    })?;
    wait_until(CONVERGE, "the provider to name the TLS client", || {
        Ok(p.log_text().contains("handshake failed: the client speaks TLS and this provider has no [tls]"))
    })?;
    wait_until(CONVERGE, "the web server's consumer to name what answered", || {
        let s = lost.agreement_status("people")?;
        Ok(s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not speak the Tether protocol: its first bytes are \"HTTP\" (HTTP)")))
    })?;
    for c in [&tls, &lost] {
        let status = c.agreement_status("people")?;
        assert_eq!(
            (status["entries"].as_u64(), status["last_disconnect"].as_str()),
            (Some(0), Some("connection-lost"))
        );
    }
    // The provider went on serving: a plain consumer converges.
    let mut plain = plain_consumer(&tmp.path().join("plain"), p.port)?;
    plain.start()?;
    p.write_ok(&w.changes(CHANGES))?;
    wait_converged(&p, &plain)?;
    Ok(())
}

/// A TLS peer that dies sends no close_notify; rustls reports that as an error of its
/// own, with a link to its manual. Both sides must read it as the plain connection's
/// end it is: the consumer's status and the provider's log say the peer closed the
/// connection, and nothing about TLS internals.
#[test]
fn a_tls_peer_killed_mid_session_reads_as_a_closed_connection() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, _w, ca_file) = tls_provider(tmp.path(), 14)?;
    let mut c = Consumer::configure(
        &tmp.path().join("c"),
        p.port,
        &[tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()))],
    )?;
    c.start()?;
    wait_converged(&p, &c)?;

    c.kill()?;
    wait_until(CONVERGE, "the provider to end the killed consumer's session", || {
        Ok(p.log_text().contains("connection lost: consumer closed the connection"))
    })?;
    c.start()?;
    wait_converged(&p, &c)?;
    wait_until(CONVERGE, "the consumer to persist again", || {
        Ok(c.agreement_status("people")?["state"] == "persisting")
    })?;

    p.kill()?;
    wait_until(CONVERGE, "the consumer to see the provider's connection end", || {
        let s = c.agreement_status("people")?;
        Ok(s["disconnects"]["connection-lost"].as_u64().unwrap_or(0) > 0)
    })?;
    // The log is written through a queue: its line may follow what status shows.
    wait_until(CONVERGE, "the lost connection in the consumer's log", || {
        Ok(c.log_text().contains("provider closed the connection without goodbye"))
    })?;
    let log = c.log_text();
    assert!(log.contains("provider closed the connection without goodbye"), "{log}");
    assert!(!log.contains("close_notify"), "{log}");
    assert!(!p.log_text().contains("close_notify"), "{}", p.log_text());
    Ok(())
}

/// Renewing the provider's certificate is: replace its files, SIGHUP (operations.md,
/// TLS). New connections must get the new certificate, running sessions keep theirs,
/// `write` follows the files, a renewal whose files do not match changes nothing, and a
/// consumer whose `ca_file` is rewritten in place takes the new CA on `reload`.
/// The renewed certificate here comes from another CA, so which one a consumer was
/// shown is visible in whether it could connect.
#[test]
fn a_renewed_certificate_serves_new_connections_after_sighup_a_broken_one_changes_nothing_and_consumers_move_to_the_new_ca(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = tmp.path().join("pki");
    let (first, second) = (Ca::new("First CA")?, Ca::new("Second CA")?);
    let tls = first.issue(&pki, &["127.0.0.1"])?;
    let (p, mut w) =
        Provider::loaded(tmp.path(), ENTRIES, 15, &ProviderOptions { tls: Some(tls), ..Default::default() })?;
    let trusting = |ca: &Ca, name: &str| -> Result<Agreement> {
        Ok(tls_agreement(format!("ca_file = \"{}\"\n", ca.write(&tmp.path().join(name))?.display())))
    };
    let mut old = Consumer::configure(&tmp.path().join("old"), p.port, &[trusting(&first, "first.pem")?])?;
    old.start()?;
    wait_converged(&p, &old)?;

    // Renew in place with the second CA's certificate, then reload.
    second.issue(&pki, &["127.0.0.1"])?;
    // Before the reload, `write` pins the new file and meets the old certificate: it
    // says what to run (it named only the file).
    let out = p.write(&w.changes(1))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("`tether-provider reload` makes it present the new one"));
    p.reload()?;
    wait_until(CONVERGE, "the provider to reload", || Ok(p.log_text().contains("reloaded ")))?;
    // `write` pins the certificate in the files: it reaches the renewed listener.
    p.write_ok(&w.changes(CHANGES))?;
    // The running session kept the old certificate: no new connection was needed.
    wait_converged(&p, &old)?;
    let status = old.agreement_status("people")?;
    assert_eq!((status["state"].as_str(), status["reconnects"].as_u64()), (Some("persisting"), Some(0)), "{status}");
    // A new connection is shown the renewed one.
    let mut new = Consumer::configure(&tmp.path().join("new"), p.port, &[trusting(&second, "second.pem")?])?;
    new.start()?;
    wait_converged(&p, &new)?;

    // A renewal that went wrong: the second CA's certificate beside another key. The
    // reload fails, naming the files, and the provider keeps serving the last good pair.
    let stray = tmp.path().join("stray");
    second.issue(&stray, &["127.0.0.1"])?;
    std::fs::copy(stray.join("provider.key"), pki.join("provider.key"))?;
    p.reload()?;
    wait_until(CONVERGE, "the provider to refuse the mismatched pair", || {
        Ok(p.log_text().contains("reload failed, keeping the old configuration")
            && p.log_text().contains("does not match the certificate"))
    })?;
    new.stop()?;
    new.start()?;
    wait_until(CONVERGE, "the consumer trusting the second CA to reconnect", || {
        Ok(new.agreement_status("people")?["state"] == "persisting")
    })?;

    // Asked to reconnect, the first consumer meets the renewed certificate, which it does
    // not trust yet: the version of a handshake that failed is not known, so its status
    // no longer says the provider proved itself.
    assert_eq!(old.agreement_status("people")?["protocol_version"], 3);
    old.admin("restart", Some("people"))?;
    wait_until(CONVERGE, "the restarted session to fail its TLS handshake", || {
        let s = old.agreement_status("people")?;
        Ok(s["last_error"].as_str().is_some_and(|e| e.contains("TLS handshake")))
    })?;
    assert_eq!(old.agreement_status("people")?["protocol_version"], serde_json::Value::Null);

    // Moving the first consumer to the new CA: its file rewritten in place, then
    // `reload`, which compares what the file holds and restarts the agreement. It
    // reconnects, and is shown the renewed certificate, which it now trusts.
    second.write(&tmp.path().join("first.pem"))?;
    assert_eq!(old.admin("reload", None)?, "reloaded: restarted people\n");
    // A restarted agreement's counters start again: its first session is a delta.
    wait_until(CONVERGE, "the moved consumer to reconnect", || {
        let s = old.agreement_status("people")?;
        Ok(s["state"] == "persisting" && s["refreshes"]["delta"] == 1)
    })?;
    p.write_ok(&w.changes(CHANGES))?;
    wait_converged(&p, &new)?;
    wait_converged(&p, &old)?;
    assert_eq!(old.agreement_status("people")?["last_error"], serde_json::Value::Null);
    Ok(())
}

/// The IPv6 loopback, over TLS: a provider listening on `[::1]:PORT` with a certificate
/// for the address `::1`, a consumer naming it so, which checks the certificate against
/// the address (the default server name), and `write` reaching the provider there.
#[test]
fn a_provider_on_the_ipv6_loopback_serves_tls_by_its_address() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = Ca::new("Tether test CA")?;
    let tls = ca.issue(&tmp.path().join("pki"), &["::1"])?;
    let ca_file = ca.write(&tmp.path().join("ca.pem"))?;
    let mut work = Workload::new(ENTRIES, 16);
    let mut p =
        Provider::configure(&tmp.path().join("provider"), &ProviderOptions { tls: Some(tls), ..Default::default() })?;
    let v6 = |path: &Path, from: &str, to: &str| -> Result<()> {
        let text = std::fs::read_to_string(path)?;
        anyhow::ensure!(text.contains(from), "{} has no {from:?}", path.display());
        Ok(std::fs::write(path, text.replace(from, to))?)
    };
    v6(&p.config, "listen = \"127.0.0.1:", "listen = \"[::1]:")?;
    let initial = tmp.path().join("initial.ldif");
    std::fs::write(&initial, work.initial_ldif())?;
    p.load(&initial)?;
    p.start()?;
    let c_agreement = tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()));
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[c_agreement])?;
    v6(&c.config, "provider = \"127.0.0.1:", "provider = \"[::1]:")?;
    c.start()?;
    wait_converged(&p, &c)?;
    p.write_ok(&work.changes(CHANGES))?;
    wait_converged(&p, &c)?;
    let status = c.agreement_status("people")?;
    assert_eq!(status["provider"], format!("[::1]:{}", p.port), "{status}");
    let sessions = p.status()?["sessions"].clone();
    assert!(sessions[0]["peer"].as_str().is_some_and(|peer| peer.starts_with("[::1]:")), "{sessions}");
    Ok(())
}

/// A reload that turns TLS on or off changes what every new connection must speak, so
/// its reply says so (it said only the agreements and sessions), and then `write`,
/// reading the same file, follows it. Sessions connected in plain TCP stay open, so
/// that consumers can be moved to TLS one reload at a time: the reply says how many,
/// and `status` shows each session's transport.
#[test]
fn a_reload_that_turns_tls_on_or_off_says_so() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut p, mut w) = Provider::loaded(tmp.path(), ENTRIES, 13, &ProviderOptions::default())?;
    let mut c = plain_consumer(&tmp.path().join("c"), p.port)?;
    c.start()?;
    wait_converged(&p, &c)?;
    let ca = Ca::new("Tether test CA")?;
    let tls = ca.issue(&tmp.path().join("pki"), &["127.0.0.1"])?;
    for (opts, said) in [
        (
            ProviderOptions { tls: Some(tls), ..Default::default() },
            "; TLS on: new connections must use TLS, and the 1 session connected in plain TCP stays so until it \
             reconnects\n",
        ),
        (
            ProviderOptions::default(),
            "; TLS off: new connections are plain TCP (entries cross the network unencrypted)\n",
        ),
    ] {
        p.reconfigure(&opts)?;
        let out = p.reload_command()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.ends_with(said), "{stdout:?} {}", String::from_utf8_lossy(&out.stderr));
        let sessions = p.status()?["sessions"].clone();
        assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
        assert_eq!(sessions[0]["tls"], false, "the consumer's session is still the plain one: {sessions}");
        p.write_ok(&w.changes(10))?;
        wait_converged(&p, &c)?;
    }
    // The downgrade is logged as a warning, for alerting that reads the log.
    let off = p.log_text().lines().find(|l| l.contains("TLS off")).map(str::to_owned);
    assert!(off.as_deref().is_some_and(|l| l.contains(" WARN ")), "{off:?}");
    let out = p.reload_command()?;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("TLS"), "no change, no word of TLS");
    Ok(())
}

/// A provider whose certificate comes to expire while it runs says so in its log as
/// the certificate it serves enters its notice and as it expires, for alerting on the
/// log; and so does a TLS consumer of it, of the certificate its provider presented,
/// while its session goes on (TLS checks the certificate once, in the handshake), and its
/// `status` shows the expiry and warns of it. The provider is renewed (and reloaded) with
/// a certificate of 60 s, valid from 20 s before: its notice, a third of its life, begins
/// 20 s after, and it expires 40 s after, which a reload and a consumer's reconnection
/// however slow leave to the running processes to say.
#[test]
fn a_running_provider_and_its_consumer_warn_in_their_logs_as_its_certificate_comes_to_expire() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = tmp.path().join("pki");
    let ca = Ca::new("Tether test CA")?;
    let tls = ca.issue(&pki, &["127.0.0.1"])?;
    let ca_file = ca.write(&pki.join("ca.pem"))?;
    let (p, _) = Provider::loaded(tmp.path(), 10, 19, &ProviderOptions { tls: Some(tls), ..Default::default() })?;
    let agreement = tls_agreement(format!("ca_file = \"{}\"\n", ca_file.display()));
    let mut c = Consumer::configure(&tmp.path().join("c"), p.port, &[agreement])?;
    c.start()?;
    wait_converged(&p, &c)?;
    // rcgen's default end, as both processes' `status` show it.
    assert_eq!(c.agreement_status("people")?["provider_certificate_expires_at"], "4096-01-01T00:00:00Z");
    assert_eq!(p.status()?["certificate_expires_at"], "4096-01-01T00:00:00Z");

    let now = std::time::SystemTime::now();
    let valid = (now - Duration::from_secs(20), now + Duration::from_secs(40));
    ca.issue_valid(&pki, &["127.0.0.1"], Some(valid))?;
    p.reload()?;
    wait_until(CONVERGE, "the provider to reload", || Ok(p.log_text().contains("reloaded ")))?;
    // The session under way keeps the old certificate; the next one meets the new.
    c.admin("restart", Some("people"))?;
    let of_provider = format!("the certificate of provider 127.0.0.1:{}", p.port);
    wait_until(Duration::from_secs(90), "the provider and the consumer to say the certificate expired", || {
        Ok(p.log_text().contains("provider.crt expired at")
            && c.log_text().contains(&format!("{of_provider} expired at ")))
    })
    .with_context(|| format!("provider's log:\n{}\nconsumer's log:\n{}", p.log_text(), c.log_text()))?;
    let log = p.log_text();
    let warned = |log: &str, what: &str| log.lines().position(|l| l.contains(what) && l.contains(" WARN "));
    let reloaded = log.lines().position(|l| l.contains("reloaded "));
    let expired = warned(&log, "provider.crt expired at");
    assert!(reloaded.is_some() && reloaded < expired, "said by the reload, not by the running provider:\n{log}");
    let expiring = warned(&log, "provider.crt expires at");
    assert!(expiring.is_some() && expiring < expired, "the notice was not said before the expiry:\n{log}");

    // The consumer: the notice, then the expiry with its session still running on it.
    let log = c.log_text();
    let expiring = warned(&log, &format!("{of_provider} expires at "));
    let expired = warned(&log, &format!("{of_provider} expired at "));
    assert!(expiring.is_some() && expiring < expired, "the notice was not said before the expiry:\n{log}");
    let status = c.agreement_status("people")?;
    assert_eq!(status["state"], "persisting", "the session under way goes on past the end: {status}");
    let expires_at = humantime::parse_rfc3339(status["provider_certificate_expires_at"].as_str().unwrap_or("-"))?;
    let off = expires_at.duration_since(valid.1).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(1), "expires at {expires_at:?}, the certificate's end {:?}: {status}", valid.1);
    assert_eq!(p.status()?["certificate_expires_at"], status["provider_certificate_expires_at"], "the one served");
    let table = String::from_utf8_lossy(&c.command_output("status", &[])?.stdout).into_owned();
    assert!(table.contains(&format!("  warning: {of_provider} expired at ")), "{table}");
    Ok(())
}

/// A TCP health check on the TLS port (connect, close, nothing sent), with a FIN or a
/// reset, is not warned of as a TLS handshake cut short; bytes that are not TLS still are.
#[test]
fn a_port_probe_of_the_tls_port_is_not_warned_of() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w, _ca) = tls_provider(tmp.path(), 42)?;
    let warnings = probe_then_warnings(&p, "TLS handshake failed")?;
    assert_eq!(warnings.len(), 1, "only the web client is warned of: {warnings:#?}");
    let log = p.log_text();
    assert!(!log.contains("closed the connection during it") && !log.contains("reset"), "{log}");
    Ok(())
}

/// A TLS client that closes within the handshake having sent something (the start of a
/// record) is still warned of: only one that sent nothing is a port probe.
#[test]
fn a_tls_client_that_closes_after_sending_is_warned_of() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w, _ca) = tls_provider(tmp.path(), 46)?;
    // The header of a handshake record whose body never comes.
    probe_port(p.port, &[0x16, 0x03, 0x01, 0x00, 0x40])?;
    probe_port(p.port, b"GET / HTTP/1.0\r\n\r\n")?;
    // Each connection is handled on a task of its own, so the two warnings may come in
    // either order: the wait is for both.
    let warned = |during: bool| {
        p.log_text().lines().any(|l| l.contains("TLS handshake failed") && l.contains("during it") == during)
    };
    wait_until(CONVERGE, "the warning of the web client", || Ok(warned(false)))?;
    wait_until(CONVERGE, "the warning of the client that closed after sending", || Ok(warned(true)))
        .with_context(|| p.log_text())?;
    let log = p.log_text();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("TLS handshake failed")).collect();
    assert_eq!(failed.len(), 2, "each client warned of once: {failed:#?}");
    assert!(
        failed.iter().any(|l| l.contains("closed the connection during it")),
        "the client heard from is warned of: {failed:#?}"
    );
    Ok(())
}
