//! Crash safety of replica apply: a child process applies a long stream of batches (each
//! with the cookie that covers it) and is killed with SIGKILL part-way; the reopened
//! store must hold exactly the batches its cookie claims, no more and no less. Likewise
//! for a shadow reload: after the kill, the resume point never claims a page the shadow
//! does not hold; for a delta cut short: no entry past the cookie its record does not
//! cover; and for the provider's writes: no entry without its changelog record.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_protocol::{
    Attributes, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, ResumePoint, SearchSpec, Value,
};
use tether_store::ReplicaStore;

mod common;

/// Set in the child's environment: the store folder to write to.
const CHILD_ENV: &str = "TETHER_STORE_CRASH_CHILD";
/// Set in the shadow child's environment: the store folder to write to.
const SHADOW_CHILD_ENV: &str = "TETHER_STORE_SHADOW_CRASH_CHILD";
/// Entries per batch, besides the counter entry every batch updates.
const PER_BATCH: u64 = 40;
/// Batches the child must have reported before it is killed, per round.
const BATCHES_BEFORE_KILL: u64 = 25;
/// Bound on how long a round may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
const HISTORY: HistoryId = HistoryId([7; 16]);
const COUNTER: EntryUuid = EntryUuid([0xcc; 16]);

fn entry(uuid: EntryUuid, dn: &str, csn: u64, value: String) -> Entry {
    let mut attrs = Attributes::new();
    attrs.add("objectClass", [Value::from("device")]).unwrap();
    attrs.add("description", [Value::from(value)]).unwrap();
    Entry { dn: Dn::parse(dn).unwrap(), uuid, csn: Csn(csn), attrs }
}

/// Page `k`: `PER_BATCH` entries no other page holds, entry `i` described by `value(i)`.
fn page(k: u64, value: impl Fn(u64) -> String) -> Vec<ReplOp> {
    (0..PER_BATCH)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&k.to_be_bytes());
            id[8..].copy_from_slice(&i.to_be_bytes());
            ReplOp::Upsert(entry(EntryUuid(id), &format!("cn=e{k}-{i},ou=x"), k, value(i)))
        })
        .collect()
}

/// Batch `k`: page `k` and the counter entry every batch updates.
fn batch(k: u64) -> Vec<ReplOp> {
    let mut ops = page(k, |_| format!("batch {k}"));
    ops.push(ReplOp::Upsert(entry(COUNTER, "cn=counter", k, k.to_string())));
    ops
}

/// Runs only as the child: applies batches forever (until killed).
#[test]
fn crash_child_applier() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = ReplicaStore::open(std::path::Path::new(&dir)).unwrap();
    let replica = store.replica("crash").unwrap();
    let start = replica.cookie().unwrap().map_or(0, |c| c.csn.0);
    for k in start + 1.. {
        replica.apply(&batch(k), Some(Cookie { history: HISTORY, csn: Csn(k) })).unwrap();
        if k % 7 == 0 {
            store.flush().unwrap();
        }
        println!("applied {k}");
    }
}

fn check_consistent(dir: &std::path::Path) -> u64 {
    let store = ReplicaStore::open(dir).unwrap();
    let replica = store.replica("crash").unwrap();
    let c = replica.cookie().unwrap().map_or(0, |c| c.csn.0);
    let entries = replica.entries().unwrap();
    assert_eq!(entries.len() as u64, if c == 0 { 0 } else { c * PER_BATCH + 1 }, "entry count matches cookie {c}");
    if c > 0 {
        let counter = entries.get_by_uuid(&COUNTER).unwrap().unwrap();
        assert_eq!(counter.attrs.values("description"), &[Value::from(c.to_string())]);
        assert_eq!(counter.csn, Csn(c));
    }
    for e in entries.iter() {
        let e = e.unwrap();
        assert!(e.csn.0 <= c, "entry {} from batch {} is beyond cookie {c}", e.dn, e.csn);
    }
    c
}

/// Runs the child test `name` on the store at `dir` (named to it through `env`), hands
/// each batch number it reports to `applied`, and SIGKILLs it once it has reported
/// `reports` of them, mid-way through the next.
fn run_child_and_kill(name: &str, env: &str, dir: &std::path::Path, reports: u64, mut applied: impl FnMut(u64)) {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        if let Some(k) = line.unwrap().strip_prefix("applied ") {
            applied(k.trim().parse().unwrap());
            seen += 1;
            if seen >= reports {
                break;
            }
        }
        assert!(started.elapsed() < ROUND_DEADLINE, "child too slow");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn store_killed_mid_apply_reopens_with_cookie_matching_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for round in 0..3 {
        run_child_and_kill("crash_child_applier", CHILD_ENV, dir.path(), BATCHES_BEFORE_KILL, |k| {
            assert!(k > last || round == 0, "resumed from the durable cookie");
        });
        let c = check_consistent(dir.path());
        assert!(c >= last, "the durable cookie never goes back (round {round}: {c} < {last})");
        last = c;
    }
    assert!(last > 0, "some batches became durable");
}

fn shadow_spec() -> SearchSpec {
    SearchSpec::subtree(Dn::parse("ou=x").unwrap())
}

/// The resume point after page `k`: the cursor names the page. Its catch-up starts
/// above every page's entries, as a scan's: the provider leaves entries changed after
/// that start to the catch-up (a shadow whose catch-up applied anything is not resumed).
fn page_point(k: u64) -> ResumePoint {
    ResumePoint {
        kind: RefreshKind::Full,
        since: Csn::ZERO,
        start: Cookie { history: HISTORY, csn: Csn(1 << 40) },
        cursor: Some(k.to_be_bytes().to_vec()),
    }
}

/// Runs only as the child: fills a shadow page by page, recording progress after each
/// page, continuing a shadow left by an earlier round (until killed).
#[test]
fn crash_child_shadow_filler() {
    let Ok(dir) = std::env::var(SHADOW_CHILD_ENV) else { return };
    let store = ReplicaStore::open(std::path::Path::new(&dir)).unwrap();
    let replica = store.replica("shadow").unwrap();
    let (mut shadow, start) = match replica.resume_point(&shadow_spec()).unwrap() {
        Some(p) => {
            let k = u64::from_be_bytes(p.cursor.unwrap().try_into().unwrap());
            (replica.resume_shadow().unwrap(), k)
        }
        None => (replica.begin_shadow(RefreshKind::Full).unwrap(), 0),
    };
    for k in start + 1.. {
        shadow.apply(&batch(k)).unwrap();
        shadow.record_progress(&shadow_spec(), page_point(k)).unwrap();
        if k % 5 == 0 {
            store.flush().unwrap();
        }
        println!("applied {k}");
    }
}

#[test]
fn shadow_killed_mid_fill_keeps_a_resume_point_it_holds_the_data_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for round in 0..3 {
        run_child_and_kill("crash_child_shadow_filler", SHADOW_CHILD_ENV, dir.path(), BATCHES_BEFORE_KILL, |_| {});

        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("shadow").unwrap();
        let Some(point) = replica.resume_point(&shadow_spec()).unwrap() else {
            assert_eq!(last, 0, "a resume point, once durable, is not lost (round {round})");
            continue;
        };
        let k = u64::from_be_bytes(point.cursor.unwrap().try_into().unwrap());
        assert!(k >= last, "the resume point never goes back (round {round}: {k} < {last})");
        let shadow = replica.resume_shadow().unwrap();
        assert!(replica.entries().unwrap().is_empty(), "the shadow is not visible to readers");
        let held = shadow.len() as u64;
        assert!(held > k * PER_BATCH, "the shadow holds {held} entries, its resume point claims page {k}");
        last = k;
    }
    assert!(last > 0, "some progress became durable");
}

/// Set in the scan child's environment: the store folder to write to.
const SCAN_CHILD_ENV: &str = "TETHER_STORE_SCAN_CRASH_CHILD";

/// Page `k` of a refresh's scan: entries no earlier page held, large enough (about 2 KB
/// each) that sled's 512 KiB log buffers fill, and are written, part-way through pages,
/// so a kill can land with a page half on disk.
fn scan_page(k: u64) -> Vec<ReplOp> {
    page(k, |i| format!("page {k} entry {i} ").repeat(100))
}

/// Runs only as the child: fills a new shadow through the scan path, page by page,
/// recording progress after each page (until killed).
#[test]
fn crash_child_scan_filler() {
    let Ok(dir) = std::env::var(SCAN_CHILD_ENV) else { return };
    let store = ReplicaStore::open(std::path::Path::new(&dir)).unwrap();
    let replica = store.replica("scan").unwrap();
    let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
    for k in 1.. {
        shadow.apply_scan(&scan_page(k)).unwrap();
        shadow.record_progress(&shadow_spec(), page_point(k)).unwrap();
        // No flush: what survives the kill ends wherever a full log buffer ended.
        println!("applied {k}");
    }
}

/// The scan path writes a page's index and its entries as two sled batches, with no
/// transaction across them: killed at any point, the store must never hold an entry its
/// index lacks, and must hold every page its resume point claims. Each round kills a new
/// fill and swaps what survived in, so that every entry can be looked up by UUID.
#[test]
fn shadow_killed_mid_scan_never_holds_an_entry_without_its_index() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        run_child_and_kill("crash_child_scan_filler", SCAN_CHILD_ENV, dir.path(), BATCHES_BEFORE_KILL, |_| {});

        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("scan").unwrap();
        let claimed = replica
            .resume_point(&shadow_spec())
            .unwrap()
            .map_or(0, |p| u64::from_be_bytes(p.cursor.unwrap().try_into().unwrap()));
        let Ok(shadow) = replica.resume_shadow() else {
            assert_eq!(claimed, 0, "round {round}: a resume point without its shadow");
            continue;
        };
        shadow.finish(Cookie { history: HISTORY, csn: Csn(1) }).unwrap();
        let entries = replica.entries().unwrap();
        let mut held = 0;
        for e in entries.iter() {
            let e = e.unwrap();
            let by_uuid = entries.get_by_uuid(&e.uuid).unwrap();
            assert_eq!(by_uuid.map(|x| x.dn), Some(e.dn.clone()), "round {round}: {} lacks its index", e.dn);
            held += 1;
        }
        assert!(
            held >= claimed * PER_BATCH,
            "round {round}: {held} entries held, the resume point claims page {claimed}"
        );
    }
}

/// Set in the writer child's environment: the provider store folder to write to.
const WRITER_CHILD_ENV: &str = "TETHER_STORE_WRITER_CRASH_CHILD";
/// Adds per group of writes (several, so that a group is committed as a run of writes).
const PER_GROUP: u64 = 4;
/// Rounds of the writer's kill.
const WRITER_ROUNDS: u64 = 5;

/// Runs only as the child: writes groups of adds to a provider store, with no flush of
/// its own (until killed).
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(WRITER_CHILD_ENV) else { return };
    let d = common::reopen_directory(std::path::Path::new(&dir), &common::dn(common::SUFFIX));
    if d.entry_count().unwrap() == 0 {
        for c in common::base_tree() {
            d.write(&c).unwrap();
        }
    }
    // Names no earlier round used.
    let life = std::process::id();
    for k in 1.. {
        let group: Vec<_> = (0..PER_GROUP)
            .map(|i| common::add_person(&format!("uid=w{life}-{k}-{i},ou=people,dc=example,dc=com")))
            .collect();
        for written in d.write_group(&group) {
            written.unwrap();
        }
        println!("applied {k}");
    }
}

/// A write's entry and its changelog record are committed together: killed at any
/// point, the provider's store holds no entry whose change its changelog lacks (a delta
/// from a cookie below it would never send it, and a consumer's replica would miss it for
/// good) and no record of a change it does not hold. sled writes its log buffer out as
/// each transaction begins, so a kill finds on disk everything before the transaction
/// under way: a write split over two transactions is torn by a kill in the second.
#[test]
fn writer_killed_mid_write_keeps_every_entry_with_its_changelog_record() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..WRITER_ROUNDS {
        run_child_and_kill("crash_child_writer", WRITER_CHILD_ENV, dir.path(), BATCHES_BEFORE_KILL, |_| {});

        let d = common::reopen_directory(dir.path(), &common::dn(common::SUFFIX));
        let mut held = 0;
        for e in d.entries().iter() {
            let e = e.unwrap();
            let record = d.changelog().get(e.csn).unwrap();
            assert_eq!(record.map(|r| r.uuid), Some(e.uuid), "round {round}: {} (csn {}) has no record", e.dn, e.csn);
            held += 1;
        }
        for record in d.changelog().records(Csn::ZERO, d.newest_committed()) {
            let record = record.unwrap();
            let entry = d.entries().get_by_uuid(&record.uuid).unwrap();
            assert!(entry.is_some(), "round {round}: the record of csn {} names an entry not held", record.csn);
        }
        assert!(held > 0, "round {round}: the base tree is held");
    }
}

/// Set in the delta child's environment: the store folder to write to.
const DELTA_CHILD_ENV: &str = "TETHER_STORE_DELTA_CRASH_CHILD";
/// Batches the delta child must have reported before it is killed.
const DELTA_BATCHES_BEFORE_KILL: u64 = 3;

/// Batch `k` of a delta: entries of about 100 KiB, so that each batch is past the
/// bytes after which an apply flushes (4 MiB), as a delta's batch of large entries is.
fn delta_page(k: u64) -> Vec<ReplOp> {
    page(k, |i| format!("delta {k} entry {i} ").repeat(6_000))
}

/// Runs only as the child: applies the batches of a delta that never ends, so the
/// replica's cookie never covers them (until killed).
#[test]
fn crash_child_delta_applier() {
    let Ok(dir) = std::env::var(DELTA_CHILD_ENV) else { return };
    let store = ReplicaStore::open(std::path::Path::new(&dir)).unwrap();
    let replica = store.replica("delta").unwrap();
    for k in 1.. {
        replica.apply_delta_batch(&delta_page(k), HISTORY).unwrap();
        println!("applied {k}");
    }
}

/// A delta's batches take the replica past its cookie, and the record of how far
/// (`beyond_cookie`, which the next session presents so that a provider restored from
/// an older copy reloads the replica instead of resuming it into a fork) is durable
/// whenever the batch is: killed at any point, the replica holds no entry newer than
/// its record says. Each batch here flushes at the end of its apply, so a record written
/// after its batch rather than ahead of it is still in sled's buffer when the batch is
/// on disk.
#[test]
fn replica_killed_mid_delta_holds_nothing_past_its_cookie_unrecorded() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        run_child_and_kill("crash_child_delta_applier", DELTA_CHILD_ENV, dir.path(), DELTA_BATCHES_BEFORE_KILL, |_| {});

        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("delta").unwrap();
        assert_eq!(replica.cookie().unwrap(), None);
        let newest = replica.entries().unwrap().iter().map(|e| e.unwrap().csn).max();
        let recorded = replica.beyond_cookie().unwrap();
        assert!(newest.is_some(), "round {round}: some batches became durable");
        assert!(
            recorded.is_some_and(|r| r.history == HISTORY && Some(r.csn) >= newest),
            "round {round}: the replica holds entries up to csn {newest:?} past its cookie, its record says {recorded:?}"
        );
    }
}
