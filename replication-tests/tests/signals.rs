//! Signals to the real processes: found by `tether-chaos`, which sends them at random
//! moments, including right after a process announced it was ready.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Result;
use replication_tests::harness::{signal, wait_until, Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET};
use replication_tests::workload::SUFFIX;

const LIMIT: Duration = Duration::from_secs(30);

/// The handlers used to be installed after "listening" was printed, so a SIGHUP sent
/// as soon as a supervisor saw the line took the default action and killed the process.
#[test]
fn a_sighup_right_after_readiness_reloads_both_processes_instead_of_killing_them() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut provider, _) = Provider::loaded(tmp.path(), 20, 1, &ProviderOptions::default())?;
    provider.reload()?;
    wait_until(LIMIT, "the provider to log the reload", || Ok(provider.log_text().contains("SIGHUP: reloading")))?;
    assert!(provider.child.as_mut().unwrap().try_wait()?.is_none(), "provider died:\n{}", provider.log_text());
    provider.status()?;

    let mut consumer = Consumer::configure(
        &tmp.path().join("consumer"),
        provider.port,
        &[Agreement::persist("people", SUFFIX, PEOPLE_SECRET)],
    )?;
    // A secret file others may read is warned of once per start and once per reload
    // (the start used to say it twice, as each reload did).
    let key = consumer.dir.join("secrets/people.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let warned = |c: &Consumer| c.log_text().matches("is accessible by group or others").count();
    consumer.start()?;
    assert_eq!(warned(&consumer), 1, "{}", consumer.log_text());
    signal(consumer.child.as_ref().unwrap(), "HUP")?;
    wait_until(LIMIT, "the consumer to log the reload", || Ok(consumer.log_text().contains("reloaded")))?;
    assert!(consumer.child.as_mut().unwrap().try_wait()?.is_none(), "consumer died:\n{}", consumer.log_text());
    assert_eq!(warned(&consumer), 2, "{}", consumer.log_text());
    consumer.status()?;
    Ok(())
}

/// SIGHUP used to leave the trimmer on the retention read at start, so lowering
/// `[changelog]` limits to free space needed a restart.
#[test]
fn a_sighup_applies_lowered_changelog_retention_at_once() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut opts = ProviderOptions::default();
    let (mut provider, mut work) = Provider::loaded(tmp.path(), 50, 2, &opts)?;
    provider.write_ok(&work.changes(30))?;
    let retained = |p: &Provider| -> Result<u64> {
        let status = p.status()?;
        let (oldest, newest) = (&status["changelog"]["oldest"], &status["changelog"]["newest"]);
        Ok(match (oldest.as_u64(), newest.as_u64()) {
            (Some(o), Some(n)) => n - o + 1,
            _ => 0,
        })
    };
    // The load is not logged; the 30 writes are.
    assert_eq!(retained(&provider)?, 30);
    opts.changelog = "max_changes = 5".into();
    provider.reconfigure(&opts)?;
    provider.reload()?;
    wait_until(LIMIT, "the changelog to be trimmed to 5 records", || Ok(retained(&provider)? <= 5))?;
    // The log line names the retention the reload set (it named the one it replaced).
    let log = provider.log_text();
    let line = log.lines().find(|l| l.contains("changelog retention changed")).unwrap_or_default();
    assert!(line.contains("max_changes=5 "), "the reload's retention line: {line:?}\n{log}");
    Ok(())
}
