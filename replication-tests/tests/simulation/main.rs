//! Deterministic simulation of Tether under faults (turmoil).
//!
//! The real provider server and session, the real consumer supervisor and session, and
//! real sled stores run over turmoil's simulated network and clock on one thread; the
//! nemesis ([`nemesis`]) draws partitions, holds, link drops, consumer and provider
//! crashes and a write workload of every kind from the seed; [`check`] holds the
//! invariants. A seed replays identically, so a failing one is a reproducible bug report.
//!
//! Knobs (environment):
//! - `TETHER_SIM_SEED=N` runs seed N only; `TETHER_SIM_SEEDS=a..b` runs seeds a to b-1;
//!   default `0..200`.
//! - `TETHER_SIM_THREADS` (default 2): OS threads, each running seeds one after another.
//! - `TETHER_SIM_LOG=1` prints every run's trace.
//! - `TETHER_SIM_DIR=path` keeps the stores of each seed under `path/seed-N`.

mod check;
mod nemesis;
mod trace;
mod world;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tether_store::RetentionPolicy;

use check::Checker;
use nemesis::{Action, Fault, Nemesis};
use trace::Trace;
use world::{changes, World, PROVIDER};

/// Simulated time during which the nemesis acts.
const CHAOS_MS: u64 = 20_000;
/// After healing, the run must converge within this much simulated time.
const CONVERGE_WITHIN_MS: u64 = 120_000;
/// The checker samples the replicas this often (simulated).
const OBSERVE_EVERY_MS: u64 = 10;
/// ... and reads their whole content this often, or whenever a reload is in progress.
const CONTENT_EVERY_MS: u64 = 500;
/// Entries loaded before the run.
const INITIAL_ENTRIES: usize = 60;

/// What a passing run did.
#[derive(Debug)]
struct Report {
    trace: Trace,
    writes: u64,
    faults: u64,
    converged_after_heal_ms: u64,
}

/// A failing run.
#[derive(Debug)]
struct Failure {
    message: String,
    trace: Trace,
}

fn fault_name(world: &World, f: Fault) -> String {
    match f {
        Fault::Partition(i) => format!("partition {PROVIDER} <-> {}", world.name(i)),
        Fault::Hold(i) => format!("hold {PROVIDER} <-> {}", world.name(i)),
        Fault::LinkDrop(i) => format!("drop the links of {}", world.name(i)),
        Fault::CrashConsumer(i) => format!("crash {}", world.name(i)),
        Fault::CrashProvider => format!("crash {PROVIDER}"),
        Fault::Trim(n) => format!("trim the changelog to its newest {n} records"),
        Fault::TrimMidReload(n) => {
            format!(
                "trim the changelog to its newest {n} records, and to none at the next write while a consumer reloads"
            )
        }
    }
}

/// Undoes `fault`.
fn heal(world: &mut World, fault: Fault, link_busy: &mut [bool]) {
    match fault {
        Fault::Partition(i) => {
            world.sim.repair(PROVIDER, world.consumers[i].plan.name.as_str());
            link_busy[i] = false;
        }
        Fault::Hold(i) => {
            world.sim.release(PROVIDER, world.consumers[i].plan.name.as_str());
            link_busy[i] = false;
        }
        Fault::LinkDrop(_) | Fault::Trim(_) | Fault::TrimMidReload(_) => {}
        Fault::CrashConsumer(i) => world.restart_consumer(i),
        Fault::CrashProvider => world.restart_provider(),
    }
}

/// Injects `fault` unless it cannot apply now (that link already faulty, host already
/// down); returns whether it was injected.
fn inject(world: &mut World, fault: Fault, link_busy: &mut [bool]) -> bool {
    match fault {
        Fault::Partition(i) | Fault::Hold(i) if link_busy[i] => false,
        Fault::Partition(i) => {
            world.sim.partition(PROVIDER, world.consumers[i].plan.name.as_str());
            link_busy[i] = true;
            true
        }
        Fault::Hold(i) => {
            world.sim.hold(PROVIDER, world.consumers[i].plan.name.as_str());
            link_busy[i] = true;
            true
        }
        Fault::LinkDrop(i) => {
            world.consumers[i].links.drop_links();
            true
        }
        Fault::CrashConsumer(i) if world.consumers[i].up => {
            world.crash_consumer(i);
            true
        }
        Fault::CrashProvider if world.provider_up => {
            world.crash_provider();
            true
        }
        Fault::Trim(n) => trim(world, n),
        Fault::TrimMidReload(n) => {
            world.armed_trim = Some(None);
            trim(world, n)
        }
        Fault::CrashConsumer(_) | Fault::CrashProvider => false,
    }
}

/// Trims the provider's changelog to its newest `n` records; whether it was up to do so.
fn trim(world: &World, n: u64) -> bool {
    match world.provider.get() {
        Some(dir) => {
            let policy = RetentionPolicy {
                max_changes: Some(n),
                max_age: None,
                hold_for_consumers: Duration::ZERO,
                up_since_ms: 0,
            };
            dir.trim(&policy, 0).unwrap_or_else(|e| panic!("trim: {e}"));
            true
        }
        None => false,
    }
}

/// Runs one seed to convergence (or a violation).
fn run_seed(seed: u64, root: &std::path::Path) -> Result<Report, Failure> {
    let mut trace = Trace::default();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| drive(seed, root, &mut trace)));
    match outcome {
        Ok(Ok(report)) => Ok(Report { trace, ..report }),
        Ok(Err(message)) => Err(Failure { message, trace }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            Err(Failure { message: format!("panicked: {what}"), trace })
        }
    }
}

fn drive(seed: u64, root: &std::path::Path, trace: &mut Trace) -> Result<Report, String> {
    let mut world = World::new(seed, root, INITIAL_ENTRIES);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7e7e_5eed);
    let mut checker = Checker::default();
    for e in &world.initial {
        checker.record(e);
    }
    let mut nemesis = Nemesis::new(world.consumers.len(), CHAOS_MS, &mut rng);
    let mut heals: Vec<(u64, Fault)> = Vec::new();
    let mut link_busy = vec![false; world.consumers.len()];
    let (mut writes, mut faults) = (0u64, 0u64);
    let mut healed = false;
    loop {
        world.sim.step().map_err(|e| format!("a host failed: {e}"))?;
        let now = world.now_ms();
        for action in nemesis.due(now, &mut rng) {
            match action {
                Action::Write => {
                    let Some(dir) = world.provider.get() else { continue };
                    for change in changes(&world.workload.changes(1)) {
                        let committed = dir.write(&change).map_err(|e| format!("write {}: {e}", change.dn()))?;
                        match dir.entries().get_by_uuid(&committed.uuid).map_err(|e| e.to_string())? {
                            Some(entry) => checker.record(&entry),
                            None => checker.record_delete(committed.uuid, committed.csn),
                        }
                        writes += 1;
                        trace.event(
                            now.into(),
                            format!("write {} {} -> csn {}", change.kind(), change.dn(), committed.csn),
                        );
                    }
                }
                Action::Inject(fault, heal_at) => {
                    if inject(&mut world, fault, &mut link_busy) {
                        faults += 1;
                        trace.event(now.into(), fault_name(&world, fault));
                        if !matches!(fault, Fault::LinkDrop(_) | Fault::Trim(_) | Fault::TrimMidReload(_)) {
                            heals.push((heal_at, fault));
                        }
                    }
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = heals.drain(..).partition(|(at, _)| *at <= now || now >= CHAOS_MS);
        heals = later;
        for (_, fault) in due {
            heal(&mut world, fault, &mut link_busy);
            trace.event(now.into(), format!("heal: {}", fault_name(&world, fault)));
        }
        // An armed trim goes at the first write while a consumer reloads, which takes it
        // past where the reload's scan began (one at a reload's first moment left the
        // catch-up nothing to lose).
        if let (Some(seen), false) = (world.armed_trim, healed) {
            match (world.provider.get().map(|dir| dir.durable_csn()), world.reloading()) {
                (Some(newest), true) => match seen {
                    None => world.armed_trim = Some(Some(newest)),
                    Some(at) if newest > at => {
                        trim(&world, 0);
                        world.armed_trim = None;
                        trace.event(now.into(), "trim the changelog to none during a reload");
                    }
                    Some(_) => {}
                },
                _ => world.armed_trim = Some(None),
            }
        }
        if now >= CHAOS_MS && !healed {
            healed = true;
            world.armed_trim = None;
            trace.event(now.into(), "all faults healed; waiting for convergence");
        }
        if now % OBSERVE_EVERY_MS == 0 {
            for event in checker.observe(&world, now % CONTENT_EVERY_MS == 0)? {
                trace.event(now.into(), event);
            }
        }
        if healed && now % 100 == 0 {
            match Checker::converged(&world) {
                Ok(()) => {
                    let after = now - CHAOS_MS;
                    trace.event(now.into(), format!("converged {after} ms after healing"));
                    return Ok(Report { trace: Trace::default(), writes, faults, converged_after_heal_ms: after });
                }
                Err(why) if now >= CHAOS_MS + CONVERGE_WITHIN_MS => {
                    return Err(format!("no convergence within {CONVERGE_WITHIN_MS} ms of healing: {why}"));
                }
                Err(_) => {}
            }
        }
    }
}

/// The seeds to run, from the environment.
fn seeds() -> Vec<u64> {
    if let Ok(one) = std::env::var("TETHER_SIM_SEED") {
        return vec![one.trim().parse().unwrap_or_else(|e| panic!("TETHER_SIM_SEED={one}: {e}"))];
    }
    let range = std::env::var("TETHER_SIM_SEEDS").unwrap_or_else(|_| "0..200".to_owned());
    let (a, b) = range.split_once("..").unwrap_or_else(|| panic!("TETHER_SIM_SEEDS={range}: expected a..b"));
    let parse = |s: &str| -> u64 { s.trim().parse().unwrap_or_else(|e| panic!("TETHER_SIM_SEEDS={range}: {e}")) };
    (parse(a)..parse(b)).collect()
}

fn log_traces() -> bool {
    std::env::var("TETHER_SIM_LOG").is_ok_and(|v| v == "1")
}

/// Where seed `seed` keeps its stores, and the guard that deletes them (unless kept).
fn store_root(seed: u64) -> (PathBuf, Option<tempfile::TempDir>) {
    if let Ok(keep) = std::env::var("TETHER_SIM_DIR") {
        let path = PathBuf::from(keep).join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return (path, None);
    }
    // Memory-backed when available: the stores flush often and the disk is not under test.
    let shm = std::path::Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("tether-sim-");
    let dir = if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() };
    let dir = dir.unwrap_or_else(|e| panic!("temp dir: {e}"));
    (dir.path().to_path_buf(), Some(dir))
}

fn replay_hint(seed: u64) -> String {
    format!("replay: TETHER_SIM_SEED={seed} TETHER_SIM_LOG=1 cargo test -p replication-tests --test simulation -- seeds_keep_every_invariant")
}

#[test]
fn seeds_keep_every_invariant() {
    let seeds = seeds();
    let threads: usize = std::env::var("TETHER_SIM_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let totals = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64)));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (seeds, next, failures, totals) = (seeds.clone(), next.clone(), failures.clone(), totals.clone());
            std::thread::spawn(move || loop {
                let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::SeqCst)) else { return };
                let (root, _guard) = store_root(seed);
                match run_seed(seed, &root) {
                    Ok(report) => {
                        if log_traces() {
                            eprintln!("--- seed {seed} trace ---\n{}", report.trace.render());
                        }
                        let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                        t.0 += 1;
                        t.1 += report.writes;
                        t.2 += report.faults;
                        t.3 = t.3.max(report.converged_after_heal_ms);
                    }
                    Err(failure) => {
                        let message = format!("seed {seed} failed: {}\n{}", failure.message, replay_hint(seed));
                        eprintln!("--- seed {seed} trace ---\n{}{message}", failure.trace.render());
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(message);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap_or_else(|_| panic!("a simulation thread died"));
    }
    let (passed, writes, faults, slowest) = *totals.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "simulation: {passed}/{} seeds passed; {writes} writes, {faults} faults; slowest convergence {slowest} ms after healing",
        seeds.len()
    );
    let failures = failures.lock().unwrap_or_else(|p| p.into_inner());
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_seed_replays_identically() {
    let seed = std::env::var("TETHER_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let run = || {
        let (root, _guard) = store_root(seed);
        match run_seed(seed, &root) {
            Ok(report) => report.trace,
            Err(f) => panic!("seed {seed} failed: {}\n{}\n{}", f.message, f.trace.render(), replay_hint(seed)),
        }
    };
    let (first, second) = (run(), run());
    assert!(first.len() > 10, "the run did too little to compare:\n{}", first.render());
    assert!(
        first.render().contains("crash") || first.render().contains("partition"),
        "no fault in:\n{}",
        first.render()
    );
    let (a, b) = (first.render(), second.render());
    if let Some((n, (x, y))) = a.lines().zip(b.lines()).enumerate().find(|(_, (x, y))| x != y) {
        panic!("seed {seed} did not replay identically; first difference at line {}:\n  first run:  {x}\n  second run: {y}", n + 1);
    }
    assert_eq!(
        a.lines().count(),
        b.lines().count(),
        "seed {seed} did not replay identically: the traces differ in length"
    );
}
