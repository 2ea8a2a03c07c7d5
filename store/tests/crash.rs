//! Crash safety of replica apply: a child process applies a long stream of batches (each
//! with the cookie that covers it) and is killed with SIGKILL part-way; the reopened
//! store must hold exactly the batches its cookie claims, no more and no less.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_protocol::{Attributes, Cookie, Csn, Dn, Entry, EntryUuid, ReplOp, StoreId, Value};
use tether_store::ReplicaStore;

/// Set in the child's environment: the store folder to write to.
const CHILD_ENV: &str = "TETHER_STORE_CRASH_CHILD";
/// Entries per batch, besides the counter entry every batch updates.
const PER_BATCH: u64 = 40;
/// Batches the child must have reported before it is killed, per round.
const BATCHES_BEFORE_KILL: u64 = 25;
/// Bound on how long a round may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
const STORE_ID: StoreId = StoreId([7; 16]);
const COUNTER: EntryUuid = EntryUuid([0xcc; 16]);

fn entry(uuid: EntryUuid, dn: &str, csn: u64, value: String) -> Entry {
    let mut attrs = Attributes::new();
    attrs.add("objectClass", [Value::from("device")]).unwrap();
    attrs.add("description", [Value::from(value)]).unwrap();
    Entry { dn: Dn::parse(dn).unwrap(), uuid, csn: Csn(csn), attrs }
}

fn batch(k: u64) -> Vec<ReplOp> {
    let mut ops: Vec<ReplOp> = (0..PER_BATCH)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&k.to_be_bytes());
            id[8..].copy_from_slice(&i.to_be_bytes());
            ReplOp::Upsert(entry(EntryUuid(id), &format!("cn=e{k}-{i},ou=x"), k, format!("batch {k}")))
        })
        .collect();
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
        replica.apply(&batch(k), Some(Cookie { store_id: STORE_ID, csn: Csn(k) })).unwrap();
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

#[test]
fn store_killed_mid_apply_reopens_with_cookie_matching_data() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for round in 0..3 {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_applier", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(k) = line.strip_prefix("applied ") {
                seen += 1;
                let k: u64 = k.trim().parse().unwrap();
                assert!(k > last || round == 0, "resumed from the durable cookie");
                if seen >= BATCHES_BEFORE_KILL {
                    break;
                }
            }
            assert!(started.elapsed() < ROUND_DEADLINE, "child too slow");
        }
        child.kill().unwrap(); // SIGKILL, mid-way through the next apply
        child.wait().unwrap();
        let c = check_consistent(dir.path());
        assert!(c >= last, "the durable cookie never goes back (round {round}: {c} < {last})");
        last = c;
    }
    assert!(last > 0, "some batches became durable");
}
