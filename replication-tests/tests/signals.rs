//! Signals to the real processes: found by `tether-chaos`, which sends them at random
//! moments, including right after a process announced it was ready.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::Result;
use replication_tests::harness::{
    bin, signal, wait_until, Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET,
};
use replication_tests::workload::SUFFIX;

const LIMIT: Duration = Duration::from_secs(30);

/// The handlers used to be installed after "listening" was printed, so a SIGHUP sent
/// as soon as a supervisor saw the line took the default action and killed the process.
///
/// The provider's SIGHUP is sent while it writes that line: its standard output is a
/// pipe filled beforehand, so the write waits until the test reads the pipe. Sent once
/// the line had been read (as a supervisor would), it came a millisecond or more after
/// it, and handlers installed right after the line (provider/src/daemon.rs) passed
/// three runs of three.
#[test]
fn a_sighup_right_after_readiness_reloads_both_processes_instead_of_killing_them() -> Result<()> {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir()?;
    let (mut provider, _) = Provider::loaded(tmp.path(), 20, 1, &ProviderOptions::default())?;
    assert!(provider.stop()?.success());
    let listening = |p: &Provider| p.log_text().matches("provider listening").count();
    let (mut stdout, mut full) = std::io::pipe()?;
    // A pipe holds 64 KiB unless made larger: the line announcing readiness waits.
    full.write_all(&[b'\n'; 64 * 1024])?;
    let log = std::fs::OpenOptions::new().append(true).open(&provider.log)?;
    let child = std::process::Command::new(bin("tether-provider")?)
        .args(["serve", "-c"])
        .arg(&provider.config)
        .env("TETHER_LOG", "info")
        .stdout(full)
        .stderr(log)
        .spawn()?;
    provider.child = Some(child);
    // Logged just before the line is written: the process is at the line, or about to be.
    wait_until(LIMIT, "the provider to log that it listens", || Ok(listening(&provider) == 2))?;
    provider.reload()?;
    let drained = std::thread::spawn(move || stdout.read_to_end(&mut Vec::new()));
    wait_until(LIMIT, "the provider to log the reload, or to die", || {
        let reloaded = std::fs::read_to_string(&provider.log)?.contains("SIGHUP: reloading");
        Ok(reloaded || provider.child.as_mut().unwrap().try_wait()?.is_some())
    })?;
    let exited = provider.child.as_mut().unwrap().try_wait()?;
    assert!(exited.is_none(), "provider died of the SIGHUP ({exited:?}):\n{}", provider.log_text());
    provider.status()?;
    drop(drained);

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
    // Its start's lines reach the log through a queue, the readiness line after the warning.
    wait_until(LIMIT, "the start in the consumer's log", || Ok(consumer.log_text().contains("consumer running")))?;
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
    // Logged before the trim, it reaches the log through a queue: it may follow it.
    wait_until(LIMIT, "the retention's line in the provider's log", || {
        Ok(provider.log_text().contains("changelog retention changed"))
    })?;
    let log = provider.log_text();
    let line = log.lines().find(|l| l.contains("changelog retention changed")).unwrap_or_default();
    assert!(line.contains("max_changes=5 "), "the reload's retention line: {line:?}\n{log}");
    Ok(())
}

/// The copies a backup to `dest` is writing or left: `DEST.partial.*` beside it.
fn partial_copies(dest: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let prefix = format!("{}.partial.", dest.file_name().unwrap().to_string_lossy());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dest.parent().unwrap())? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Sets the modification time of `path` and all it holds to `ago` before now.
fn written_ago(path: &std::path::Path, ago: Duration) -> Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            written_ago(&entry?.path(), ago)?;
        }
    }
    std::fs::File::open(path)?.set_modified(std::time::SystemTime::now() - ago)?;
    Ok(())
}

/// A stopped provider's store is copied by the `backup` command itself, for tens of
/// seconds at a million entries. Interrupted (SIGINT, or SIGTERM, SIGHUP), it used to
/// die the default way, leaving beside the destination a folder holding every entry
/// (`userPassword` values too) that no tool reads or removes: it now abandons the copy,
/// removes it, and says nothing was made. A backup killed outright (SIGKILL, a power
/// cut) cannot: the next backup to the same destination removes what it left, once no
/// process of its pid runs and nothing wrote to it for a minute, and says so.
#[test]
fn a_backup_stopped_by_a_signal_removes_its_copy_and_one_killed_is_removed_by_the_next() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut provider, _) = Provider::loaded(tmp.path(), 5_000, 3, &ProviderOptions::default())?;
    assert!(provider.stop()?.success());
    let dest = tmp.path().join("backup");
    let shown = dest.display().to_string();
    let began = |sig: &str| -> Result<std::process::Output> {
        let mut backup = provider.spawn_command("backup", &[&shown])?;
        // Looked for more often than `wait_until` does: the copy takes a few hundred
        // milliseconds, and the signal must come while it runs.
        let deadline = std::time::Instant::now() + LIMIT;
        while partial_copies(&dest)?.is_empty() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "no copy begun within {LIMIT:?}");
            anyhow::ensure!(backup.try_wait()?.is_none(), "the backup ended before its copy was seen");
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(&backup, sig)?;
        let deadline = std::time::Instant::now() + LIMIT;
        while backup.try_wait()?.is_none() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "backup still running {LIMIT:?} after SIG{sig}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(backup.wait_with_output()?)
    };

    let stopped = began("INT")?;
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGINT: stopping the copy (its files are removed first"), "{stderr}");
    assert!(stderr.contains(&format!("the backup was stopped by a signal; nothing was made at {shown}")), "{stderr}");
    assert_eq!(partial_copies(&dest)?, Vec::<std::path::PathBuf>::new(), "the copy's files are removed");
    assert!(!dest.exists());

    let killed = began("KILL")?;
    assert_eq!(killed.status.code(), None, "killed");
    let left = partial_copies(&dest)?;
    assert_eq!(left.len(), 1, "{left:?}");
    // Written to within the minute, it may be a copy under way that this host cannot
    // see (another container's): kept.
    let made = provider.command_output("backup", &[&shown])?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(left[0].exists());
    assert!(!String::from_utf8_lossy(&made.stdout).contains("removed"));

    std::fs::remove_dir_all(&dest)?;
    written_ago(&left[0], Duration::from_secs(120))?;
    let made = provider.command_output("backup", &[&shown])?;
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let removed = format!(
        "removed the copy left beside it by a backup whose process died (killed, or the machine down): {}\n",
        left[0].display()
    );
    assert!(stdout.ends_with(&removed), "{stdout}");
    assert!(!left[0].exists());
    assert_eq!(partial_copies(&dest)?, Vec::<std::path::PathBuf>::new());
    assert!(dest.join("db").is_file());
    Ok(())
}

/// Whether process `pid` is gone (a zombie counts as gone: it wrote its last).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

/// A running provider's backup copy is written by a process of its own (the provider's
/// memory is not the copy's: docs/operations.md, Backup and restore), which stop
/// signals leave to its provider. Killed (the OOM killer, say), the backup fails saying so, its copy is removed and the provider goes
/// on; the provider killed instead, its writer finds its requests ended, removes the
/// copy and exits (and the command, cut off, copies the stopped store itself); and the
/// restarted provider's backup to the same folder is made.
#[test]
fn a_backup_whose_writer_or_provider_is_killed_leaves_no_copy_and_no_process() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut provider, _) = Provider::loaded(tmp.path(), 20_000, 3, &ProviderOptions::default())?;
    let dest = tmp.path().join("backup");
    let shown = dest.display().to_string();
    let entries = provider.status()?["entries"].clone();
    let writer_of = |provider: &Provider, backup: &mut std::process::Child| -> Result<u32> {
        // Looked for more often than `wait_until` does: the copy takes a second or two.
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let (Some(pid), false) = (provider.backup_writer()?, partial_copies(&dest)?.is_empty()) {
                return Ok(pid);
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "no backup writer within {LIMIT:?}");
            anyhow::ensure!(backup.try_wait()?.is_none(), "the backup ended before its writer was seen");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let kill = |pid: u32| -> Result<()> {
        anyhow::ensure!(std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status()?.success());
        Ok(())
    };

    // The writer is the one the kernel kills out of memory, and a stop signal to the
    // whole group (Ctrl-C at a terminal, systemd's stop) leaves it to the provider.
    let mut backup = provider.spawn_command("backup", &[&shown])?;
    let writer = writer_of(&provider, &mut backup)?;
    wait_until(LIMIT, "the writer to put itself first for the OOM killer", || {
        Ok(std::fs::read_to_string(format!("/proc/{writer}/oom_score_adj"))?.trim() == "1000")
    })?;
    for sig in ["TERM", "INT", "HUP"] {
        anyhow::ensure!(std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(writer.to_string())
            .status()?
            .success());
    }
    let made = backup.wait_with_output()?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::remove_dir_all(&dest)?;

    let mut backup = provider.spawn_command("backup", &[&shown])?;
    let writer = writer_of(&provider, &mut backup)?;
    kill(writer)?;
    let failed = backup.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("backing up the store to {shown}: writing the copy: ")), "{stderr}");
    assert!(stderr.contains(&format!("(its process {writer} was killed by signal 9)")), "{stderr}");
    assert!(!dest.exists());
    assert_eq!(partial_copies(&dest)?, Vec::<std::path::PathBuf>::new(), "the copy's files are removed");
    assert_eq!(provider.status()?["entries"], entries, "the provider goes on");

    let mut backup = provider.spawn_command("backup", &[&shown])?;
    let writer = writer_of(&provider, &mut backup)?;
    let orphaned = partial_copies(&dest)?;
    provider.kill()?;
    wait_until(LIMIT, "the writer to remove its copy and end", || {
        Ok(gone(writer) && orphaned.iter().all(|copy| !copy.exists()))
    })?;
    // The command, cut off, copies the stopped store itself.
    let made = backup.wait_with_output()?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(dest.join("db").is_file());
    assert_eq!(partial_copies(&dest)?, Vec::<std::path::PathBuf>::new());

    provider.start()?;
    std::fs::remove_dir_all(&dest)?;
    let made = provider.command_output("backup", &[&shown])?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(dest.join("db").is_file());
    assert_eq!(provider.backup_writer()?, None, "the writer ended with its copy");
    Ok(())
}

/// The writer's own end, as its provider sees it: requests that end before the finish
/// (the provider gone, or the backup abandoned) leave no copy, the last answer says why
/// and the process exits with a failure, which the provider's error names; a finish
/// with nothing asked before answers the counts of an empty copy, kept, and exits 0.
#[test]
fn a_backup_writer_whose_requests_end_early_removes_its_copy_and_exits_failed() -> Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let tmp = tempfile::tempdir()?;
    let writer = |folder: &std::path::Path, requests: &[u8]| -> Result<std::process::Output> {
        std::fs::create_dir(folder)?;
        let mut child = std::process::Command::new(bin("tether-provider")?)
            .arg("backup-writer")
            .arg(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().expect("piped");
        input.write_all(requests)?;
        drop(input);
        Ok(child.wait_with_output()?)
    };

    let cut = tmp.path().join("cut");
    let ended = writer(&cut, b"")?;
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(1), "{stderr}");
    assert_eq!(ended.stdout.first(), Some(&b'X'), "the last answer says it failed: {:?}", ended.stdout);
    let why = String::from_utf8_lossy(ended.stdout.get(5..).unwrap_or_default());
    assert!(why.starts_with("the requests ended before the copy was finished"), "{why}");
    assert!(!cut.exists(), "the copy is removed");

    let finished = tmp.path().join("finished");
    let made = writer(&finished, b"E")?;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(made.stdout, [&b"D"[..], &[0; 24]].concat(), "no entries, entryUUIDs or changelog records");
    assert!(finished.join("db").is_file(), "the copy is kept");
    Ok(())
}
