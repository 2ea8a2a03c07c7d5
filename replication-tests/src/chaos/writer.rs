//! The write workload: changes of every kind (add, modify, delete, rename, moves across
//! branches) at `--rate` operations per second through `tether-provider write`, the
//! provider's own write API, plus a bump of one anchor's counter per write so the
//! sampler can tell a replica that went backwards.
//!
//! The writer does not take the provider's lock, so its writes race with kills and
//! restarts like a real client's would. A write the provider refused or lost (killed
//! mid-write) leaves the generator's model of the directory unsure, so the writer
//! rebuilds it from a provider search before writing again.

use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::{anchor_dns, Bump, Cluster, ANCHOR};
use crate::harness::{applied_count, bin};
use crate::workload::{Workload, OTHERS, PEOPLE, SUFFIX};

/// How often the writer sends a batch.
const TICK: Duration = Duration::from_millis(250);

/// What the writer did.
#[derive(Debug, Clone, Default)]
pub struct WriterStats {
    /// Records the provider acknowledged.
    pub changes: u64,
    /// `write` runs that failed (provider down, killed mid-write).
    pub failed_writes: u64,
    /// Times the model was rebuilt from the provider.
    pub resyncs: u64,
    /// The highest anchor counter written.
    pub last_counter: u64,
}

/// Writes until `stop` is set.
pub fn run(cluster: &Cluster, mut work: Workload, rate: u32, stop: &AtomicBool) -> Result<WriterStats> {
    let mut stats = WriterStats::default();
    let anchors = anchor_dns();
    let started = Instant::now();
    let mut attempted: u64 = 0;
    let mut needs_resync = false;
    let file = cluster.root.join("writer.ldif");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        if needs_resync {
            match resync(cluster, &mut work)? {
                true => {
                    needs_resync = false;
                    stats.resyncs += 1;
                }
                false => continue,
            }
        }
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let n = due.saturating_sub(attempted).max(1);
        attempted += n;
        stats.last_counter += 1;
        let anchor = &anchors[(stats.last_counter as usize) % anchors.len()];
        let mut ldif = work.changes(n as usize);
        ldif.push_str(&format!(
            "dn: {anchor}\nchangetype: modify\nreplace: employeeNumber\nemployeeNumber: {}\n-\n\n",
            stats.last_counter
        ));
        let records = n + 1;
        fs::write(&file, &ldif)?;
        let restores = cluster.restores.load(Ordering::SeqCst);
        let out = Command::new(bin("tether-provider")?)
            .arg("write")
            .arg("-c")
            .arg(&cluster.provider_config)
            .arg(&file)
            .env("TETHER_LOG", "warn")
            .output()
            .context("running tether-provider write")?;
        if out.status.success() {
            stats.changes += records;
            // The anchor bump is the batch's last record, whose CSN `write` prints.
            let csn = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().ok();
            if let Some(csn) = csn.filter(|_| cluster.restores.load(Ordering::SeqCst) == restores) {
                let bump = Bump { dn: anchor.clone(), counter: stats.last_counter, csn, restores };
                cluster.bumps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(bump);
            }
        } else {
            stats.failed_writes += 1;
            stats.changes += applied_count(&String::from_utf8_lossy(&out.stderr)).unwrap_or(0);
            needs_resync = true;
        }
    }
    Ok(stats)
}

/// Rebuilds the model from the provider's entries; `false` if the provider is down.
fn resync(cluster: &Cluster, work: &mut Workload) -> Result<bool> {
    let ldif = {
        let p = cluster.provider();
        if p.provider.child.is_none() {
            return Ok(false);
        }
        match p.provider.search(SUFFIX, "subtree", "(objectClass=*)") {
            Ok(text) => text,
            Err(_) => return Ok(false),
        }
    };
    let mut live = Vec::new();
    for line in ldif.lines() {
        let Some(dn) = line.strip_prefix("dn: uid=") else { continue };
        let Some((uid, parent)) = dn.split_once(',') else { continue };
        if uid.ends_with(ANCHOR) {
            continue;
        }
        if parent == PEOPLE || parent == OTHERS {
            live.push((uid.to_owned(), parent == PEOPLE));
        }
    }
    work.resync(live);
    Ok(true)
}
