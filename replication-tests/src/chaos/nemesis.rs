//! The nemesis: injects faults on a schedule drawn from the seed until the deadline,
//! then heals everything.
//!
//! Each step waits a random gap, then injects one fault of a random kind on a random
//! target. Faults that last (a black hole, a stopped agreement, a lowered changelog
//! retention) are healed by a later step at a random time, so faults of different kinds
//! overlap. Kills land at arbitrary moments: during refreshes (some kinds force one
//! first and kill while it runs) and during the writer's batches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::cluster::{Cluster, Node, CHANGELOG, CHANGELOG_TRIMMED, EXTRA};
use crate::harness::signal;
use crate::proxy::{Direction, Fault};
use crate::workload::OTHERS;

/// Ballast entries one `provider-store-fails` writes, and the size of each one's
/// description: 2.5 MiB in all, past the most room the limit leaves.
const BALLAST_ENTRIES: usize = 40;
const BALLAST_BYTES: usize = 64 << 10;

/// Every kind of fault, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL the provider, restart it.
    KillProvider,
    /// SIGKILL a consumer, restart it.
    KillConsumer,
    /// SIGTERM the provider, restart it.
    TermProvider,
    /// SIGTERM a consumer, restart it.
    TermConsumer,
    /// Force a consumer's full refresh, SIGKILL it while it runs, restart.
    KillConsumerMidRefresh,
    /// Force a consumer's full refresh, SIGKILL the provider while it runs, restart.
    KillProviderMidRefresh,
    /// Stall both directions of a consumer's link, heal later.
    BlackHole,
    /// Stall one direction.
    StallOneWay,
    /// Reset the connection.
    Reset,
    /// Close the connection cleanly.
    CloseCleanly,
    /// Flip one byte.
    Corrupt,
    /// Cut the connection after some bytes.
    DropAfter,
    /// Add latency.
    Delay,
    /// Limit the bandwidth.
    Throttle,
    /// Lower the provider's changelog retention (config + SIGHUP), restore later.
    TrimChangelog,
    /// `stop` an agreement, `start` it later.
    StopStartAgreement,
    /// Add or remove an agreement in a consumer's config, `reload`.
    ReloadConsumerConfig,
    /// Delete a consumer's store while it is down: it reloads in full.
    WipeConsumerStore,
    /// Restart the provider under a file-size limit a little past its store's largest
    /// file, so that its store fails under the writer's load as on a full disk (it says
    /// goodbye and exits 1); restart it without the limit later.
    ProviderStoreFails,
    /// Back the provider's store up, restore the copy 2 to 10 s later (stopped,
    /// replaced, started): the writes in between are gone, and consumers that replicated
    /// them must reload while the others resume. Every other backup (the first, the
    /// third, ...) is made while the provider runs and the writer writes, by
    /// `tether-provider backup`; the others stop the provider, copy its folder and
    /// start it again. Each copy is checked with `tether-provider verify` first.
    RestoreProvider,
    /// SIGSTOP the provider for 0.5 to 6 s, then SIGCONT: a frozen VM, a debugger, a
    /// `^Z`. Its sockets stay open and silent, and its clocks jump on waking.
    PauseProvider,
    /// SIGSTOP a consumer for 0.5 to 6 s, then SIGCONT.
    PauseConsumer,
    /// Stall a consumer's link past the keepalive timeout while the writer goes on, then
    /// cut every connection a few KB toward it for 1 to 4 s: the deltas that would catch
    /// it up are cut short, part applied.
    CutDelta,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 23] = [
        Kind::KillProvider,
        Kind::KillConsumer,
        Kind::TermProvider,
        Kind::TermConsumer,
        Kind::KillConsumerMidRefresh,
        Kind::KillProviderMidRefresh,
        Kind::BlackHole,
        Kind::StallOneWay,
        Kind::Reset,
        Kind::CloseCleanly,
        Kind::Corrupt,
        Kind::DropAfter,
        Kind::Delay,
        Kind::Throttle,
        Kind::TrimChangelog,
        Kind::StopStartAgreement,
        Kind::ReloadConsumerConfig,
        Kind::WipeConsumerStore,
        Kind::ProviderStoreFails,
        Kind::RestoreProvider,
        Kind::PauseProvider,
        Kind::PauseConsumer,
        Kind::CutDelta,
    ];

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KillProvider => "kill9-provider",
            Kind::KillConsumer => "kill9-consumer",
            Kind::TermProvider => "sigterm-provider",
            Kind::TermConsumer => "sigterm-consumer",
            Kind::KillConsumerMidRefresh => "kill9-consumer-mid-refresh",
            Kind::KillProviderMidRefresh => "kill9-provider-mid-refresh",
            Kind::BlackHole => "black-hole",
            Kind::StallOneWay => "stall-one-way",
            Kind::Reset => "reset",
            Kind::CloseCleanly => "close-cleanly",
            Kind::Corrupt => "corrupt-byte",
            Kind::DropAfter => "drop-after-bytes",
            Kind::Delay => "delay",
            Kind::Throttle => "throttle",
            Kind::TrimChangelog => "trim-changelog",
            Kind::StopStartAgreement => "stop-start-agreement",
            Kind::ReloadConsumerConfig => "reload-consumer-config",
            Kind::WipeConsumerStore => "wipe-consumer-store",
            Kind::ProviderStoreFails => "provider-store-fails",
            Kind::RestoreProvider => "restore-provider-backup",
            Kind::PauseProvider => "sigstop-provider",
            Kind::PauseConsumer => "sigstop-consumer",
            Kind::CutDelta => "cut-delta",
        }
    }
}

/// A fault to undo later.
#[derive(Debug, Clone)]
enum Heal {
    /// Heal a node's proxy.
    Proxy(usize),
    /// Restore the provider's changelog retention.
    Retention,
    /// `start` an agreement.
    Start(usize, String),
    /// Lift the provider's file-size limit: restart it without one.
    LiftLimit,
    /// Restore the provider's store from the backup.
    Restore,
}

/// What the nemesis did.
#[derive(Debug, Clone, Default)]
pub struct NemesisStats {
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Faults whose injection itself went wrong (a process that did not come back, an
    /// unclean exit on SIGTERM): violations.
    pub violations: Vec<String>,
    /// Times the provider's store did fail under a `provider-store-fails` limit (the
    /// rest had no room to open the store, and ran without the limit).
    pub stores_failed: u64,
    /// Backups of `restore-provider-backup` made by `tether-provider backup` while the
    /// provider ran.
    pub online_backups: u64,
    /// Online backups whose writer process was SIGKILLed while it wrote the copy (each
    /// failed, naming it, and left nothing; another was made).
    pub backup_writers_killed: u64,
}

/// The fault injector.
#[derive(Debug)]
pub struct Nemesis<'a> {
    cluster: &'a Cluster,
    rng: StdRng,
    pending: Vec<(Instant, Heal)>,
    /// The report.
    pub stats: NemesisStats,
    started: Instant,
    /// Ballast entries written so far (see `provider-store-fails`), naming the next.
    ballast: usize,
    /// Backups `restore-provider-backup` made so far: the odd ones online.
    backups: u64,
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..hi))
}

impl<'a> Nemesis<'a> {
    /// A nemesis drawing from `rng`.
    pub fn new(cluster: &'a Cluster, rng: StdRng, started: Instant) -> Self {
        let mut stats = NemesisStats::default();
        for k in Kind::ALL {
            stats.faults.insert(k.as_str(), 0);
        }
        Self { cluster, rng, pending: Vec::new(), stats, started, ballast: 0, backups: 0 }
    }

    /// Injects faults until `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            let gap = ms(&mut self.rng, 300, 2500);
            std::thread::sleep(gap.min(deadline.saturating_duration_since(Instant::now())));
            self.heal_due(false);
            if Instant::now() >= deadline {
                break;
            }
            let kind = *Kind::ALL.choose(&mut self.rng).unwrap_or(&Kind::Reset);
            let node = self.rng.gen_range(0..self.cluster.nodes.len());
            *self.stats.faults.entry(kind.as_str()).or_default() += 1;
            if let Err(e) = self.inject(kind, node) {
                self.stats.violations.push(format!(
                    "at {:.1}s {} on consumer{node}: {e:#}",
                    self.started.elapsed().as_secs_f64(),
                    kind.as_str()
                ));
            }
        }
    }

    fn heal_due(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| all || *t <= now);
        self.pending = later;
        for (_, heal) in due {
            if let Err(e) = self.heal(&heal) {
                self.stats.violations.push(format!("healing {heal:?}: {e:#}"));
            }
        }
    }

    fn heal(&mut self, heal: &Heal) -> Result<()> {
        match heal {
            Heal::Proxy(i) => self.cluster.nodes[*i].proxy.heal(),
            Heal::Retention => {
                self.cluster.provider().set_changelog(CHANGELOG)?;
            }
            Heal::Start(i, name) => {
                let mut state = self.cluster.nodes[*i].lock();
                if state.stopped.remove(name) && state.agreements.iter().any(|a| &a.name == name) {
                    state.consumer.admin("start", Some(name))?;
                }
            }
            Heal::LiftLimit => {
                let mut p = self.cluster.provider();
                let exited = match p.provider.child.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => None,
                };
                let status = match exited {
                    // Its store failed and it stopped by itself.
                    Some(status) => {
                        p.provider.child = None;
                        Some(status)
                    }
                    None if p.provider.child.is_some() => Some(p.provider.stop()?),
                    None => None,
                };
                let failed = status.is_some_and(|s| !s.success());
                p.provider.file_size_limit = None;
                p.provider.start().context("restarting the provider without the limit")?;
                if failed {
                    self.stats.stores_failed += 1;
                    store_failure_only(&p.provider, status)?;
                }
            }
            Heal::Restore => {
                let mut p = self.cluster.provider();
                if p.provider.child.is_some() {
                    stop_provider(&mut p.provider)?;
                }
                // The histories begun since the backup are gone with the restore, and a
                // consumer still in any history begun so far may hold some of them.
                let histories = p.provider.histories();
                self.cluster.before_restore.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(histories);
                self.cluster.restores.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let restored = p.provider.restore_store(&self.backup_dir());
                start_provider(&mut p.provider)?;
                restored?;
            }
        }
        Ok(())
    }

    fn backup_dir(&self) -> std::path::PathBuf {
        self.cluster.root.join("provider-backup")
    }

    fn later(&mut self, lo: u64, hi: u64, heal: Heal) {
        let at = Instant::now() + ms(&mut self.rng, lo, hi);
        self.pending.push((at, heal));
    }

    fn inject(&mut self, kind: Kind, i: usize) -> Result<()> {
        let node = &self.cluster.nodes[i];
        match kind {
            Kind::KillProvider => {
                let pause = ms(&mut self.rng, 0, 2000);
                self.restart_provider(true, pause)
            }
            Kind::TermProvider => {
                let pause = ms(&mut self.rng, 0, 1000);
                self.restart_provider(false, pause)
            }
            Kind::KillConsumer => {
                let pause = ms(&mut self.rng, 0, 2000);
                restart_consumer(node, true, false, pause)
            }
            Kind::TermConsumer => {
                let pause = ms(&mut self.rng, 0, 1000);
                restart_consumer(node, false, false, pause)
            }
            Kind::WipeConsumerStore => restart_consumer(node, true, true, Duration::ZERO),
            Kind::KillConsumerMidRefresh => {
                restart_consumer(node, true, true, Duration::ZERO)?;
                let during = ms(&mut self.rng, 0, 1500);
                let mut state = node.lock();
                std::thread::sleep(during);
                state.fold_before_restart();
                state.consumer.kill()?;
                std::thread::sleep(ms(&mut self.rng, 0, 500));
                state.consumer.start()
            }
            Kind::KillProviderMidRefresh => {
                restart_consumer(node, true, true, Duration::ZERO)?;
                std::thread::sleep(ms(&mut self.rng, 50, 1500));
                let pause = ms(&mut self.rng, 0, 1000);
                self.restart_provider(true, pause)
            }
            Kind::BlackHole => {
                node.proxy.set_fault(Fault::Stall);
                self.later(1000, 8000, Heal::Proxy(i));
                Ok(())
            }
            Kind::StallOneWay => {
                let dir = *Direction::BOTH.choose(&mut self.rng).unwrap_or(&Direction::ToClient);
                node.proxy.set_fault_on(dir, Fault::Stall);
                self.later(1000, 8000, Heal::Proxy(i));
                Ok(())
            }
            Kind::Reset => self.proxy_fault(i, None, Fault::Reset, 100, 1500),
            Kind::CloseCleanly => self.proxy_fault(i, None, Fault::CloseCleanly, 100, 1500),
            Kind::Corrupt => {
                let after_bytes = self.rng.gen_range(0..20_000);
                self.proxy_fault(i, Some(()), Fault::Corrupt { after_bytes }, 500, 4000)
            }
            Kind::DropAfter => {
                let bytes = self.rng.gen_range(0..50_000);
                self.proxy_fault(i, Some(()), Fault::DropAfter { bytes }, 500, 4000)
            }
            Kind::Delay => {
                let delay = ms(&mut self.rng, 10, 400);
                self.proxy_fault(i, Some(()), Fault::Delay(delay), 1000, 6000)
            }
            Kind::Throttle => {
                let bytes_per_sec = self.rng.gen_range(2_000..200_000);
                self.proxy_fault(i, Some(()), Fault::Throttle { bytes_per_sec }, 1000, 6000)
            }
            Kind::TrimChangelog => {
                self.cluster.provider().set_changelog(CHANGELOG_TRIMMED)?;
                self.later(1000, 6000, Heal::Retention);
                Ok(())
            }
            Kind::StopStartAgreement => {
                let mut state = node.lock();
                let Some(name) = state.agreements.choose(&mut self.rng).map(|a| a.name.clone()) else {
                    return Ok(());
                };
                state.consumer.admin("stop", Some(&name))?;
                state.stopped.insert(name.clone());
                drop(state);
                self.later(500, 5000, Heal::Start(i, name));
                Ok(())
            }
            Kind::ProviderStoreFails => {
                if self.pending.iter().any(|(_, h)| matches!(h, Heal::LiftLimit)) {
                    return Ok(());
                }
                let mut p = self.cluster.provider();
                stop_provider(&mut p.provider)?;
                let largest = crate::harness::largest_file(&p.provider.dir.join("data"))?;
                p.provider.file_size_limit = Some(largest + self.rng.gen_range(16 << 10..768 << 10));
                start_provider(&mut p.provider)?;
                let limited = p.provider.file_size_limit.is_some();
                drop(p);
                if limited {
                    // sled reuses its file's segments, so the writer's churn alone does
                    // not grow it: ballast does, and the store fails while the writer's
                    // writes race it. The ballast write fails with it, as it should.
                    self.write_ballast(BALLAST_ENTRIES)?;
                }
                self.later(3000, 12_000, Heal::LiftLimit);
                Ok(())
            }
            Kind::RestoreProvider => {
                if self.pending.iter().any(|(_, h)| matches!(h, Heal::LiftLimit | Heal::Restore)) {
                    return Ok(());
                }
                let backup = self.backup_dir();
                if backup.exists() {
                    std::fs::remove_dir_all(&backup)?;
                }
                let mut p = self.cluster.provider();
                self.backups += 1;
                if self.backups % 2 == 1 && p.provider.child.is_some() {
                    // One in three is first tried with its writer killed (the OOM
                    // killer, say): that backup fails, naming it, and leaves nothing.
                    if self.rng.gen_ratio(1, 3) && kill_backup_writer(&p.provider, &backup)? {
                        self.stats.backup_writers_killed += 1;
                    }
                    // Made all the same when the copy was done before its writer was seen.
                    if !backup.exists() {
                        let made = p.provider.command_output("backup", &[&backup.display().to_string()])?;
                        ensure!(
                            made.status.success(),
                            "tether-provider backup of the running provider failed ({}): {}",
                            made.status,
                            String::from_utf8_lossy(&made.stderr)
                        );
                    }
                    self.stats.online_backups += 1;
                } else {
                    stop_provider(&mut p.provider)?;
                    let copied = p.provider.back_up_store(&backup);
                    start_provider(&mut p.provider)?;
                    copied?;
                }
                // Whichever way it was made, the copy's trees agree with each other.
                let checked = p.provider.command_output("verify", &["--store", &backup.display().to_string()])?;
                ensure!(
                    checked.status.success(),
                    "tether-provider verify of the backup failed ({}): {}",
                    checked.status,
                    String::from_utf8_lossy(&checked.stderr)
                );
                drop(p);
                self.later(2000, 10_000, Heal::Restore);
                Ok(())
            }
            Kind::PauseProvider => {
                // Under the lock, so no other fault restarts it while it is stopped (a
                // SIGTERM would wait for the SIGCONT).
                let p = self.cluster.provider();
                match p.provider.child.as_ref() {
                    Some(child) => self.pause(child),
                    None => Ok(()),
                }
            }
            Kind::CutDelta => {
                // Behind by 3.5 to 5 s of writes, its session ended by the keepalive
                // timeout (3 s): the next session's delta spans several batches. Cut a
                // few batches in, it leaves the replica past its cookie, and the next
                // delta sends again what was applied (the apply audit counts a change
                // applied twice), until the heal lets one through.
                let proxy = &self.cluster.nodes[i].proxy;
                proxy.set_fault(Fault::Stall);
                std::thread::sleep(ms(&mut self.rng, 3500, 5000));
                let bytes = self.rng.gen_range(2_000..20_000);
                proxy.set_fault_on(Direction::ToClient, Fault::DropAfter { bytes });
                proxy.set_fault_on(Direction::ToUpstream, Fault::Pass);
                self.later(1000, 4000, Heal::Proxy(i));
                Ok(())
            }
            Kind::PauseConsumer => {
                // The sampler waits for the lock too: it would only wait for the process.
                let state = node.lock();
                match state.consumer.child.as_ref() {
                    Some(child) => self.pause(child),
                    None => Ok(()),
                }
            }
            Kind::ReloadConsumerConfig => {
                let mut state = node.lock();
                state.refresh_status();
                if state.agreements.iter().any(|a| a.name == EXTRA) {
                    state.fold_removed(EXTRA);
                    state.agreements.retain(|a| a.name != EXTRA);
                    state.stopped.remove(EXTRA);
                } else {
                    state.agreements.push(self.cluster.extra_agreement());
                }
                *state.epochs.entry(EXTRA.into()).or_default() += 1;
                state.write_config()?;
                state.consumer.admin("reload", None)?;
                Ok(())
            }
        }
    }

    /// Adds `n` ballast entries of [`BALLAST_BYTES`] each under `ou=others` through
    /// `tether-provider write`; its outcome is not checked (the store is meant to fail
    /// under it). They are ordinary entries: replicated, and the writer's to change
    /// once it has re-read the directory.
    fn write_ballast(&mut self, n: usize) -> Result<()> {
        let mut ldif = String::new();
        for i in self.ballast..self.ballast + n {
            ldif.push_str(&format!(
                "dn: uid=ballast{i},{OTHERS}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: ballast{i}\n\
                 cn: Ballast {i}\nsn: Ballast\ndescription: {}\n\n",
                "b".repeat(BALLAST_BYTES)
            ));
        }
        self.ballast += n;
        let file = self.cluster.root.join("ballast.ldif");
        std::fs::write(&file, ldif)?;
        std::process::Command::new(crate::harness::bin("tether-provider")?)
            .arg("write")
            .arg("-c")
            .arg(&self.cluster.provider_config)
            .arg(&file)
            .env("TETHER_LOG", "warn")
            .output()
            .context("running tether-provider write")?;
        Ok(())
    }

    /// SIGSTOPs `child`, leaves it stopped 0.5 to 6 s (across the keepalive timeout of
    /// 3 s or not), SIGCONTs it.
    fn pause(&mut self, child: &std::process::Child) -> Result<()> {
        let pause = ms(&mut self.rng, 500, 6000);
        signal(child, "STOP")?;
        std::thread::sleep(pause);
        signal(child, "CONT")
    }

    /// Sets `fault` on one random direction (`one_way`) or both, heals it later.
    fn proxy_fault(&mut self, i: usize, one_way: Option<()>, fault: Fault, lo: u64, hi: u64) -> Result<()> {
        let proxy = &self.cluster.nodes[i].proxy;
        match one_way {
            Some(()) => {
                let dir = *Direction::BOTH.choose(&mut self.rng).unwrap_or(&Direction::ToClient);
                proxy.set_fault_on(dir, fault);
            }
            None => proxy.set_fault(fault),
        }
        self.later(lo, hi, Heal::Proxy(i));
        Ok(())
    }

    fn restart_provider(&self, kill: bool, pause: Duration) -> Result<()> {
        let mut p = self.cluster.provider();
        if kill {
            p.provider.kill()?;
        } else {
            stop_provider(&mut p.provider)?;
        }
        std::thread::sleep(pause);
        start_provider(&mut p.provider)
    }

    /// Heals every fault, restores every config and makes sure every process runs.
    pub fn heal_all(&mut self) -> Result<()> {
        self.heal_due(true);
        for node in &self.cluster.nodes {
            node.proxy.heal();
        }
        {
            let mut p = self.cluster.provider();
            if p.provider.child.is_none() {
                p.provider.start()?;
            }
            // Always: a reload that failed earlier may have left any retention in force.
            p.set_changelog(CHANGELOG)?;
        }
        for node in &self.cluster.nodes {
            let mut state = node.lock();
            if state.consumer.child.is_none() {
                state.consumer.start()?;
            }
            let names = |a: &[crate::harness::Agreement]| a.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
            if names(&state.agreements) != names(&node.base_agreements) {
                state.refresh_status();
                state.fold_removed(EXTRA);
                state.agreements = node.base_agreements.clone();
                *state.epochs.entry(EXTRA.into()).or_default() += 1;
                state.write_config()?;
                state.consumer.admin("reload", None)?;
            }
            for a in node.base_agreements.clone() {
                if state.stopped.remove(&a.name) {
                    state.consumer.admin("start", Some(&a.name))?;
                }
            }
        }
        Ok(())
    }
}

/// SIGTERMs the provider, which must exit 0, or 1 for its store's failure while under a
/// `provider-store-fails` limit. Anything else is a violation, and the provider is
/// started again before it is reported.
/// Backs the running `provider` up to `dest` and SIGKILLs the process writing the copy
/// as soon as it is seen: the backup must fail, saying so, leaving nothing at `dest`
/// or beside it, and the provider must go on. `false` when the backup was made before
/// its writer could be killed (it is then at `dest`).
fn kill_backup_writer(provider: &crate::harness::Provider, dest: &std::path::Path) -> Result<bool> {
    let mut backup = provider.spawn_command("backup", &[&dest.display().to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let writer = loop {
        if let Some(pid) = provider.backup_writer()? {
            break Some(pid);
        }
        if backup.try_wait()?.is_some() {
            break None;
        }
        ensure!(Instant::now() < deadline, "no backup writer within 30 s of the backup's start");
        std::thread::sleep(Duration::from_millis(1));
    };
    if let Some(pid) = writer {
        // Gone already if it finished meanwhile.
        let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
    let done = backup.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&done.stderr);
    if done.status.success() {
        ensure!(dest.join("db").is_file(), "the backup said it was made, but {} holds no store", dest.display());
        return Ok(false);
    }
    ensure!(
        done.status.code() == Some(1) && stderr.contains("writing the copy: ") && stderr.contains("killed by signal 9"),
        "a backup whose writer was killed ended {}: {stderr}",
        done.status
    );
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let beside = dest.parent().map(std::fs::read_dir).transpose()?;
    let left: Vec<_> = beside
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(&format!("{name}.partial.")))
        .collect();
    ensure!(
        !dest.exists() && left.is_empty(),
        "a backup whose writer was killed left {left:?} (or {})",
        dest.display()
    );
    Ok(true)
}

fn stop_provider(provider: &mut crate::harness::Provider) -> Result<()> {
    let status = provider.stop()?;
    let failed_store = provider.file_size_limit.is_some() && store_failure_only(provider, Some(status)).is_ok();
    if !status.success() && !failed_store {
        provider.start().context("restarting the provider")?;
        bail!("the provider exited with {status} on SIGTERM");
    }
    Ok(())
}

/// Starts the provider. Under a `provider-store-fails` limit its store may have no room
/// left even to open (a full disk met at start, its store having failed already): then
/// the limit is lifted and it starts without.
fn start_provider(provider: &mut crate::harness::Provider) -> Result<()> {
    if provider.start().is_ok() {
        return Ok(());
    }
    if provider.file_size_limit.is_none() {
        bail!("the provider did not restart; log:\n{}", provider.log_text());
    }
    provider.kill()?;
    provider.file_size_limit = None;
    provider.start().context("restarting the provider without the limit")
}

/// Checks that a provider that exited with `status` stopped because its store failed
/// (exit 1, and the log says so), not for any other reason.
fn store_failure_only(provider: &crate::harness::Provider, status: Option<std::process::ExitStatus>) -> Result<()> {
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) if s.code() == Some(1) && provider.log_text().contains("the store failed; stopping") => Ok(()),
        Some(s) => bail!("the provider exited with {s}, not for its store's failure"),
        None => Ok(()),
    }
}

/// Stops a consumer (SIGKILL or SIGTERM), optionally wipes its store, waits `pause`,
/// starts it again.
fn restart_consumer(node: &Node, kill: bool, wipe: bool, pause: Duration) -> Result<()> {
    let mut state = node.lock();
    state.fold_before_restart();
    if kill {
        state.consumer.kill()?;
    } else {
        let status = state.consumer.stop()?;
        if !status.success() {
            state.consumer.start()?;
            bail!("consumer{} exited with {status} on SIGTERM", node.index);
        }
    }
    if wipe {
        state.wipe_store()?;
    }
    std::thread::sleep(pause);
    state.consumer.start()
}

#[cfg(test)]
mod tests {
    //! Each fault kind seen to do what docs/testing.md's table says it does, and its heal
    //! to undo it: a fault that silently did nothing would leave every chaos run passing.

    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::Path;
    use std::sync::Mutex;

    use rand::SeedableRng;

    use super::*;
    use crate::chaos::checker;
    use crate::chaos::cluster::{agreements_of, provider_options, NodeState, ProviderState, Totals};
    use crate::harness::{assert_holds, wait_until, Consumer, Provider};
    use crate::proxy::Proxy;
    use crate::workload::Workload;

    /// Time a healthy cluster gets to converge, and a process to reach a state.
    const CONVERGE: Duration = Duration::from_secs(60);

    /// A cluster of one consumer whose processes never run: the proxy faults need only
    /// its proxy.
    fn paper_cluster(root: &Path) -> Result<Cluster> {
        let opts = provider_options();
        let provider = Provider::configure(&root.join("provider"), &opts)?;
        let proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, provider.port)))?;
        let base_agreements = agreements_of(0, None);
        let consumer = Consumer::configure(&root.join("consumer0"), proxy.port(), &base_agreements)?;
        let state = NodeState {
            consumer,
            agreements: base_agreements.clone(),
            epochs: BTreeMap::new(),
            stopped: std::collections::BTreeSet::new(),
            last_status: None,
            totals: Totals::default(),
            proxy_port: proxy.port(),
        };
        Ok(Cluster {
            root: root.to_owned(),
            provider_config: provider.config.clone(),
            provider: Mutex::new(ProviderState { provider, opts }),
            nodes: vec![Node { index: 0, proxy, base_agreements, state: Mutex::new(state) }],
            before_restore: Mutex::default(),
            restores: std::sync::atomic::AtomicU64::new(0),
            tls: None,
            bumps: Mutex::default(),
        })
    }

    /// A chaos cluster of one consumer (agreements `people` and `all`), converged.
    fn real_cluster(root: &Path) -> Result<Cluster> {
        let mut work = Workload::new(60, 1);
        let cluster = Cluster::start(root, &mut work, 1, false)?;
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("a fresh cluster did not converge: {diff:#?}");
        }
        Ok(cluster)
    }

    fn nemesis(cluster: &Cluster, seed: u64) -> Nemesis<'_> {
        Nemesis::new(cluster, StdRng::seed_from_u64(seed), Instant::now())
    }

    /// Injects `kind` on consumer 0; the one heal it left pending, and the bounds of when
    /// it is due, measured from before and after the injection.
    fn inject_one(n: &mut Nemesis<'_>, kind: Kind) -> (Heal, Duration, Duration) {
        let before = Instant::now();
        n.inject(kind, 0).unwrap_or_else(|e| panic!("{}: {e:#}", kind.as_str()));
        let after = Instant::now();
        assert_eq!(n.pending.len(), 1, "{}: {:?}", kind.as_str(), n.pending);
        let (at, heal) = n.pending[0].clone();
        (heal, at.saturating_duration_since(after), at.saturating_duration_since(before))
    }

    /// What consumer 0's proxy does to each direction.
    fn faults(cluster: &Cluster) -> [Fault; 2] {
        let proxy = &cluster.nodes[0].proxy;
        [proxy.fault(Direction::ToUpstream), proxy.fault(Direction::ToClient)]
    }

    /// The fault on the one broken direction of a one-way fault (the other passes), and
    /// which direction it is.
    fn one_way(kind: Kind, f: [Fault; 2]) -> (Fault, usize) {
        match f {
            [Fault::Pass, x] if x != Fault::Pass => (x, 1),
            [x, Fault::Pass] if x != Fault::Pass => (x, 0),
            _ => panic!("{}: not one direction broken: {f:?}", kind.as_str()),
        }
    }

    /// The proxy faults: each breaks both directions or one as the table says, with a
    /// parameter in its range, and leaves one heal of that proxy due within its range,
    /// not before; the heal passes both directions again.
    #[test]
    fn each_proxy_fault_breaks_its_directions_with_its_parameters_until_its_heal() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = paper_cluster(tmp.path())?;
        let mut directions: BTreeMap<&str, [bool; 2]> = BTreeMap::new();
        for seed in 0..40 {
            let mut n = nemesis(&cluster, seed);
            for (kind, lo, hi) in [
                (Kind::BlackHole, 1000, 8000),
                (Kind::StallOneWay, 1000, 8000),
                (Kind::Reset, 100, 1500),
                (Kind::CloseCleanly, 100, 1500),
                (Kind::Corrupt, 500, 4000),
                (Kind::DropAfter, 500, 4000),
                (Kind::Delay, 1000, 6000),
                (Kind::Throttle, 1000, 6000),
            ] {
                let name = kind.as_str();
                let (heal, least, most) = inject_one(&mut n, kind);
                assert!(matches!(heal, Heal::Proxy(0)), "{name}: {heal:?}");
                assert!(
                    most >= Duration::from_millis(lo) && least < Duration::from_millis(hi),
                    "{name}: heal due in {least:?}..{most:?}, not in {lo}..{hi} ms"
                );
                let f = faults(&cluster);
                match kind {
                    Kind::BlackHole => assert_eq!(f, [Fault::Stall; 2], "{name}"),
                    Kind::Reset => assert_eq!(f, [Fault::Reset; 2], "{name}"),
                    Kind::CloseCleanly => assert_eq!(f, [Fault::CloseCleanly; 2], "{name}"),
                    _ => {
                        let (fault, dir) = one_way(kind, f);
                        directions.entry(name).or_default()[dir] = true;
                        match fault {
                            Fault::Stall => assert_eq!(kind, Kind::StallOneWay),
                            Fault::Corrupt { after_bytes } => {
                                assert!(kind == Kind::Corrupt && after_bytes < 20_000, "{name}: {fault:?}");
                            }
                            Fault::DropAfter { bytes } => {
                                assert!(kind == Kind::DropAfter && bytes < 50_000, "{name}: {fault:?}");
                            }
                            Fault::Delay(d) => assert!(
                                kind == Kind::Delay && d >= Duration::from_millis(10) && d < Duration::from_millis(400),
                                "{name}: {fault:?}"
                            ),
                            Fault::Throttle { bytes_per_sec } => assert!(
                                kind == Kind::Throttle && (2_000..200_000).contains(&bytes_per_sec),
                                "{name}: {fault:?}"
                            ),
                            _ => panic!("{name}: {fault:?}"),
                        }
                    }
                }
                // Not due yet: a heal of what is due leaves it in place.
                n.heal_due(false);
                assert_eq!(faults(&cluster), f, "{name} healed before it was due");
                assert_eq!(n.pending.len(), 1, "{name}");
                n.heal_due(true);
                assert!(n.pending.is_empty(), "{name}");
                assert_eq!(faults(&cluster), [Fault::Pass; 2], "{name} not healed");
            }
            assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        }
        // The one-way faults pick either direction.
        for (name, seen) in directions {
            assert_eq!(seen, [true, true], "{name} broke only one direction in 40 seeds");
        }
        Ok(())
    }

    /// `cut-delta` stalls both directions for 3.5 to 5 s, then cuts every connection
    /// 2 to 20 KB toward the consumer while the other direction passes, for 1 to 4 s.
    #[test]
    fn cut_delta_stalls_past_the_keepalive_timeout_then_cuts_toward_the_consumer() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = paper_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 3);
        let stalled = std::sync::atomic::AtomicBool::new(false);
        let started = Instant::now();
        let (watched, (heal, least, most)) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                // Both directions stalled from the start to 3.5 s in.
                while started.elapsed() < Duration::from_millis(3400) {
                    if faults(&cluster) == [Fault::Stall; 2] {
                        stalled.store(true, std::sync::atomic::Ordering::SeqCst);
                    } else if stalled.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(format!("the stall ended after {:?}", started.elapsed()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            });
            let injected = inject_one(&mut n, Kind::CutDelta);
            (watcher.join().unwrap_or_else(|_| Err("the watcher panicked".into())), injected)
        });
        if let Err(e) = watched {
            panic!("{e}");
        }
        let took = started.elapsed();
        assert!(stalled.into_inner(), "both directions were never stalled");
        assert!(took >= Duration::from_millis(3500) && took < Duration::from_millis(5500), "stalled {took:?}");
        match faults(&cluster) {
            [Fault::Pass, Fault::DropAfter { bytes }] => assert!((2_000..20_000).contains(&bytes), "{bytes}"),
            f => panic!("after the stall: {f:?}"),
        }
        assert!(matches!(heal, Heal::Proxy(0)), "{heal:?}");
        assert!(most >= Duration::from_millis(1000) && least < Duration::from_millis(4000), "{least:?}..{most:?}");
        n.heal_due(true);
        assert_eq!(faults(&cluster), [Fault::Pass; 2]);
        Ok(())
    }

    /// The pid of a running child.
    fn pid(child: Option<&std::process::Child>) -> u32 {
        child.expect("running").id()
    }

    /// How many clean stops `log` records.
    fn clean_stops(log: &str, line: &str) -> usize {
        log.matches(line).count()
    }

    /// Whether process `pid` is stopped (SIGSTOP): state `T` in `/proc/PID/stat`.
    fn stopped(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    }

    /// Runs `inject` while a watcher polls whether `pid` is stopped; whether it ever was.
    fn watch_stopped(pid: u32, inject: impl FnOnce()) -> bool {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut seen = false;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    seen |= stopped(pid);
                    std::thread::sleep(Duration::from_millis(20));
                }
                seen
            });
            inject();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            watcher.join().unwrap_or(false)
        })
    }

    /// The process faults on a real cluster: the kills SIGKILL (no clean stop logged),
    /// the SIGTERMs stop cleanly, each restarts what it stopped, the consumer restarts
    /// fold the counters of the life they end, the wipes delete the store and mark its
    /// replicas emptied on purpose, and the pauses SIGSTOP the process, then SIGCONT it.
    #[test]
    fn the_process_faults_kill_stop_wipe_and_pause_what_they_name_and_restart_it() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 5);
        let provider_pid = || pid(cluster.provider().provider.child.as_ref());
        let consumer_pid = || pid(cluster.nodes[0].lock().consumer.child.as_ref());
        let provider_stops = || clean_stops(&cluster.provider().provider.log_text(), "provider stopped");
        let consumer_stops = || clean_stops(&cluster.nodes[0].lock().consumer.log_text(), "consumer stopped");
        let refreshes = || cluster.nodes[0].lock().totals.refreshes.values().sum::<u64>();
        let epoch = || cluster.nodes[0].lock().epochs.get("people").copied().unwrap_or(0);
        let marker = cluster.nodes[0].lock().consumer.dir.join("data").join("marker");

        for (kind, term) in [(Kind::KillProvider, false), (Kind::TermProvider, true)] {
            let (before, stops) = (provider_pid(), provider_stops());
            n.inject(kind, 0)?;
            assert_ne!(provider_pid(), before, "{}: the provider was not restarted", kind.as_str());
            assert_eq!(provider_stops(), stops + usize::from(term), "{}: clean stops", kind.as_str());
            cluster.provider().provider.status()?;
        }
        for (kind, term, wipe) in [
            (Kind::KillConsumer, false, false),
            (Kind::TermConsumer, true, false),
            (Kind::WipeConsumerStore, false, true),
            (Kind::KillConsumerMidRefresh, false, true),
        ] {
            let name = kind.as_str();
            if let Err(diff) = checker::converge(&cluster, CONVERGE) {
                panic!("before {name}: {diff:#?}");
            }
            std::fs::write(&marker, "")?;
            let (before, stops, folded, epoch_before) = (consumer_pid(), consumer_stops(), refreshes(), epoch());
            n.inject(kind, 0)?;
            assert_ne!(consumer_pid(), before, "{name}: the consumer was not restarted");
            assert_eq!(consumer_stops(), stops + usize::from(term), "{name}: clean stops");
            assert!(refreshes() > folded, "{name}: the ended life's counters were not folded");
            assert_eq!(!marker.exists(), wipe, "{name}: store wiped");
            assert_eq!(epoch(), epoch_before + u64::from(wipe), "{name}: epoch");
            cluster.nodes[0].lock().consumer.status()?;
        }
        // The provider killed while a wiped consumer refreshes from it.
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("before kill9-provider-mid-refresh: {diff:#?}");
        }
        std::fs::write(&marker, "")?;
        let (provider_before, consumer_before, stops) = (provider_pid(), consumer_pid(), provider_stops());
        n.inject(Kind::KillProviderMidRefresh, 0)?;
        assert_ne!(provider_pid(), provider_before, "the provider was not restarted");
        assert_ne!(consumer_pid(), consumer_before, "the consumer was not restarted");
        assert_eq!(provider_stops(), stops, "the provider stopped cleanly: not a kill");
        assert!(!marker.exists(), "the consumer's store was not wiped");

        // The pauses: stopped while the fault lasts, running again after it.
        let before = provider_pid();
        assert!(watch_stopped(before, || n.inject(Kind::PauseProvider, 0).unwrap()), "the provider never stopped");
        assert!(!stopped(before), "the provider was not continued");
        assert_eq!(provider_pid(), before);
        let before = consumer_pid();
        assert!(watch_stopped(before, || n.inject(Kind::PauseConsumer, 0).unwrap()), "the consumer never stopped");
        assert!(!stopped(before), "the consumer was not continued");
        assert_eq!(consumer_pid(), before);

        assert!(n.pending.is_empty(), "{:?}", n.pending);
        assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("after the faults: {diff:#?}");
        }
        Ok(())
    }

    /// The provider's changelog extent: newest - oldest + 1, 0 when empty.
    fn changelog_len(cluster: &Cluster) -> Result<u64> {
        let status = cluster.provider().provider.status()?;
        let c = &status["changelog"];
        Ok(match (c["oldest"].as_u64(), c["newest"].as_u64()) {
            (Some(o), Some(n)) => n + 1 - o,
            _ => 0,
        })
    }

    /// `n` writes of anchor `m0anchor`'s counter through the provider.
    fn bump(cluster: &Cluster, n: u64) -> Result<()> {
        let mut ldif = String::new();
        for i in 0..n {
            ldif.push_str(&format!(
                "dn: uid=m0anchor,{OTHERS}\nchangetype: modify\nreplace: employeeNumber\nemployeeNumber: {}\n-\n\n",
                1000 + i
            ));
        }
        cluster.provider().provider.write_ok(&ldif)
    }

    /// `trim-changelog` has the provider keep almost nothing, until its heal restores the
    /// retention; `stop-start-agreement` stops an agreement until its heal starts it.
    #[test]
    fn the_retention_and_agreement_faults_hold_until_their_heals() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 11);

        bump(&cluster, 10)?;
        let (heal, least, most) = inject_one(&mut n, Kind::TrimChangelog);
        assert!(matches!(heal, Heal::Retention), "{heal:?}");
        assert!(most >= Duration::from_millis(1000) && least < Duration::from_millis(6000), "{least:?}..{most:?}");
        wait_until(CONVERGE, "the changelog trimmed to 3 changes", || Ok(changelog_len(&cluster)? <= 3))?;
        n.heal_due(true);
        assert!(!std::fs::read_to_string(&cluster.provider_config)?.contains("max_changes"));
        bump(&cluster, 10)?;
        assert_holds(Duration::from_millis(2500), "the changelog keeps 10 changes", || {
            Ok(changelog_len(&cluster)? >= 10)
        })?;

        for seed in [0, 1, 2, 3] {
            let mut n = nemesis(&cluster, seed);
            let (heal, least, most) = inject_one(&mut n, Kind::StopStartAgreement);
            let Heal::Start(0, name) = heal else { panic!("{heal:?}") };
            assert!(most >= Duration::from_millis(500) && least < Duration::from_millis(5000), "{least:?}..{most:?}");
            let state = |name: &str| -> Result<String> {
                let status = cluster.nodes[0].lock().consumer.agreement_status(name)?;
                Ok(status["state"].as_str().unwrap_or_default().to_owned())
            };
            assert!(cluster.nodes[0].lock().stopped.contains(&name));
            wait_until(CONVERGE, "the agreement stopped", || Ok(state(&name)? == "stopped"))?;
            n.heal_due(true);
            assert!(cluster.nodes[0].lock().stopped.is_empty());
            wait_until(CONVERGE, "the agreement started", || Ok(state(&name)? != "stopped"))?;
        }
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("after the faults: {diff:#?}");
        }
        Ok(())
    }

    /// The agreements consumer 0's status lists.
    fn listed(cluster: &Cluster) -> Result<Vec<String>> {
        let status = cluster.nodes[0].lock().consumer.status()?;
        let mut names: Vec<String> = status["agreements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// `reload-consumer-config` adds the `extra` agreement, then removes it, each time
    /// marking its replica emptied on purpose; the final heal puts back every process,
    /// proxy, retention, config and agreement the faults left broken, and the cluster
    /// converges.
    #[test]
    fn a_config_reload_adds_and_removes_extra_and_the_final_heal_undoes_every_fault() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 2);
        let base = listed(&cluster)?;
        let extra_epoch = || cluster.nodes[0].lock().epochs.get(EXTRA).copied().unwrap_or(0);

        let epoch = extra_epoch();
        n.inject(Kind::ReloadConsumerConfig, 0)?;
        let mut with_extra = base.clone();
        with_extra.push(EXTRA.to_owned());
        with_extra.sort();
        wait_until(CONVERGE, "extra added", || Ok(listed(&cluster)? == with_extra))?;
        assert_eq!(extra_epoch(), epoch + 1);
        n.inject(Kind::ReloadConsumerConfig, 0)?;
        wait_until(CONVERGE, "extra removed", || Ok(listed(&cluster)? == base))?;
        assert_eq!(extra_epoch(), epoch + 2);

        // Everything broken at once: extra added, an agreement stopped, the retention
        // lowered, the link black-holed, both processes down.
        n.inject(Kind::ReloadConsumerConfig, 0)?;
        n.inject(Kind::StopStartAgreement, 0)?;
        n.inject(Kind::TrimChangelog, 0)?;
        n.inject(Kind::BlackHole, 0)?;
        n.pending.clear();
        cluster.provider().provider.kill()?;
        cluster.nodes[0].lock().consumer.kill()?;
        n.heal_all()?;
        assert_eq!(faults(&cluster), [Fault::Pass; 2]);
        assert!(cluster.provider().provider.child.is_some());
        assert!(!std::fs::read_to_string(&cluster.provider_config)?.contains("max_changes"));
        assert!(cluster.nodes[0].lock().stopped.is_empty());
        assert_eq!(listed(&cluster)?, base);
        for name in &base {
            let status = cluster.nodes[0].lock().consumer.agreement_status(name)?;
            assert_ne!(status["state"], "stopped", "{name}: {status}");
        }
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("after the heal: {diff:#?}");
        }
        assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        Ok(())
    }

    /// `restore-provider-backup` backs the store up, the first time while the provider
    /// runs and the next with it stopped; its heal puts the copy back, so a write made
    /// in between is gone, and counts the restore and the histories it ended.
    #[test]
    fn a_restored_backup_takes_back_the_writes_made_since_it_and_is_counted() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 4);
        let started = cluster.provider().provider.histories().len();
        let (heal, least, most) = inject_one(&mut n, Kind::RestoreProvider);
        assert_eq!(n.stats.online_backups, 1);
        assert_eq!(cluster.provider().provider.histories().len(), started, "backed up without a restart");
        assert!(matches!(heal, Heal::Restore), "{heal:?}");
        assert!(most >= Duration::from_millis(2000) && least < Duration::from_millis(10_000), "{least:?}..{most:?}");
        assert!(n.backup_dir().exists());
        let dn = format!("uid=after-backup,{OTHERS}");
        cluster.provider().provider.write_ok(&format!(
            "dn: {dn}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: after-backup\ncn: A\nsn: B\n"
        ))?;
        let search = || cluster.provider().provider.search(OTHERS, "subtree", "(uid=after-backup)");
        assert!(search()?.contains(&dn));
        assert_eq!(cluster.restores.load(std::sync::atomic::Ordering::SeqCst), 0);
        n.heal_due(true);
        assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        assert_eq!(cluster.restores.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!search()?.contains(&dn), "the write after the backup survived its restore");
        let histories = cluster.provider().provider.histories();
        let before = cluster.before_restore.lock().unwrap().clone();
        assert!(!before.is_empty() && before.iter().all(|h| histories.contains(h)), "{before:?} {histories:?}");
        assert!(!before.contains(histories.last().unwrap()), "the restored provider's own history");
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("after the restore: {diff:#?}");
        }
        let restarts = cluster.provider().provider.histories().len();
        inject_one(&mut n, Kind::RestoreProvider);
        assert_eq!(n.stats.online_backups, 1, "the second backup is a stopped provider's");
        assert_eq!(cluster.provider().provider.histories().len(), restarts + 1, "stopped and started again");
        assert!(n.backup_dir().exists());
        n.heal_due(true);
        assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        assert_eq!(cluster.restores.load(std::sync::atomic::Ordering::SeqCst), 2);
        Ok(())
    }

    /// An online backup whose writer process is killed fails, naming it, and leaves
    /// nothing at its destination or beside it; the provider goes on, and the next
    /// backup is made. (A small store's copy may be done before its writer is seen:
    /// tried until one is killed.)
    #[test]
    fn a_backup_whose_writer_is_killed_fails_and_leaves_nothing() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let dest = tmp.path().join("backup");
        let p = cluster.provider();
        let killed = (0..20).try_fold(false, |killed, _| -> Result<bool> {
            if killed {
                return Ok(true);
            }
            let _ = std::fs::remove_dir_all(&dest);
            kill_backup_writer(&p.provider, &dest)
        })?;
        assert!(killed, "no writer seen in 20 backups");
        assert!(!dest.exists());
        p.provider.status()?;
        let made = p.provider.command_output("backup", &[&dest.display().to_string()])?;
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        Ok(())
    }

    /// `provider-store-fails` restarts the provider under a file-size limit and writes
    /// ballast past it: the store fails and the provider exits 1 for it; the heal
    /// restarts it without the limit and counts the failure.
    #[test]
    fn a_provider_under_a_file_size_limit_fails_and_the_heal_lifts_the_limit_and_counts_it() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let cluster = real_cluster(tmp.path())?;
        let mut n = nemesis(&cluster, 6);
        let (heal, least, most) = inject_one(&mut n, Kind::ProviderStoreFails);
        assert!(matches!(heal, Heal::LiftLimit), "{heal:?}");
        assert!(most >= Duration::from_millis(3000) && least < Duration::from_millis(12_000), "{least:?}..{most:?}");
        let limited = cluster.provider().provider.file_size_limit.is_some();
        assert!(limited, "the limit left no room to open the store: pick another seed");
        wait_until(CONVERGE, "the provider's store failed", || {
            let mut p = cluster.provider();
            Ok(p.provider.child.as_mut().map(std::process::Child::try_wait).transpose()?.flatten().is_some())
        })?;
        assert_eq!(n.stats.stores_failed, 0);
        n.heal_due(true);
        assert!(n.stats.violations.is_empty(), "{:?}", n.stats.violations);
        assert_eq!(n.stats.stores_failed, 1);
        assert_eq!(cluster.provider().provider.file_size_limit, None);
        assert!(cluster.provider().provider.log_text().contains("the store failed; stopping"));
        cluster.provider().provider.status()?;
        if let Err(diff) = checker::converge(&cluster, CONVERGE) {
            panic!("after the store's failure: {diff:#?}");
        }
        Ok(())
    }
}
