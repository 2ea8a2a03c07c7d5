//! What a consumer pays to apply a delta to a large replica, without the network: fills a
//! replica of N entries of about 500 bytes the way a full refresh does, then applies M
//! modifications or deletions in batches of 500 and flushes, as a resync does. Used to
//! profile the `resync` benchmark's consumer side (`perf record` on this binary).
//!
//! `cargo run --release -p tether-store --example replica_delta -- [N] [M] [mods|deletes] [cache MiB] [rounds]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use tether_protocol::{Attributes, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, Value};
use tether_store::{ReplicaStore, StoreOptions};

/// The binaries' allocator, so the profile is theirs (glibc's malloc would be a quarter of it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Entries per apply, as the provider's delta batches.
const BATCH: usize = 500;

fn person(i: usize, uuid: EntryUuid, csn: Csn, phone: usize) -> Entry {
    let mut attrs = Attributes::new();
    let given = ["Ada", "Brage", "Cecilie", "Dagny"][i % 4];
    let family = i.wrapping_mul(7919) % 10_000;
    attrs.add("objectClass", [Value::from("inetOrgPerson")]).unwrap();
    attrs.add("uid", [Value::from(format!("u{i:07}"))]).unwrap();
    attrs.add("cn", [Value::from(format!("{given} Family{family}"))]).unwrap();
    attrs.add("sn", [Value::from(format!("Family{family}"))]).unwrap();
    attrs.add("givenName", [Value::from(given)]).unwrap();
    attrs.add("mail", [Value::from(format!("u{i:07}@example.com"))]).unwrap();
    attrs.add("telephoneNumber", [Value::from(format!("+47 2{phone:07}"))]).unwrap();
    attrs.add("title", [Value::from(format!("Engineer grade {}", i % 7))]).unwrap();
    attrs.add("employeeNumber", [Value::from(i.to_string())]).unwrap();
    attrs
        .add(
            "description",
            [Value::from(format!(
                "Generated benchmark person {i}; member of team {} at site {}, reachable by mail or \
                 telephone during office hours, with a description long enough to make the entry \
                 about five hundred bytes like a real directory entry.",
                i % 97,
                i % 13
            ))],
        )
        .unwrap();
    let dn = Dn::parse(&format!("uid=u{i:07},ou=people,dc=example,dc=com")).unwrap();
    Entry { dn, uuid, csn, attrs }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(100_000, |s| s.parse().unwrap());
    let m: usize = args.get(2).map_or(1_000, |s| s.parse().unwrap());
    let deletes = args.get(3).is_some_and(|s| s == "deletes");
    let cache_mib: u64 = args.get(4).map_or(64, |s| s.parse().unwrap());
    let rounds: usize = args.get(5).map_or(1, |s| s.parse().unwrap());
    assert!(m * rounds <= n, "M x rounds must not exceed N");

    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { cache_bytes: cache_mib << 20, ..StoreOptions::default() };
    let store = ReplicaStore::open_with(dir.path(), &options).unwrap();
    let replica = store.replica("people").unwrap();
    let history = HistoryId::new_random();
    // As the provider assigns them (see `EntryUuid::new_time_ordered`).
    let uuids: Vec<EntryUuid> = (0..n).map(|_| EntryUuid::new_time_ordered()).collect();

    let started = Instant::now();
    let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
    for (b, chunk) in uuids.chunks(BATCH).enumerate() {
        let ops: Vec<ReplOp> =
            chunk.iter().enumerate().map(|(j, u)| ReplOp::Upsert(person(b * BATCH + j, *u, Csn(1), 0))).collect();
        shadow.apply_scan(&ops).unwrap();
    }
    shadow.finish(Cookie { history, csn: Csn(1) }).unwrap();
    println!("fill {n}: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    // As the consumer does when a session ends: the count the store keeps, and the scan
    // it replaced.
    let started = Instant::now();
    assert_eq!(replica.len().unwrap(), n);
    let kept = started.elapsed();
    let started = Instant::now();
    assert_eq!(replica.entries().unwrap().len(), n);
    println!(
        "count {n}: {:.3} ms kept, {:.1} ms scanning",
        kept.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );

    let mut csn = 1;
    for round in 0..rounds {
        let ops: Vec<ReplOp> = (round * m..(round + 1) * m)
            .map(|i| {
                csn += 1;
                if deletes {
                    ReplOp::Delete { uuid: uuids[i], csn: Csn(csn) }
                } else {
                    ReplOp::Upsert(person(i, uuids[i], Csn(csn), i + 1))
                }
            })
            .collect();
        let started = Instant::now();
        for chunk in ops.chunks(BATCH) {
            let last = chunk.last().map_or(Csn(csn), |op| op.csn());
            replica.apply(chunk, Some(Cookie { history, csn: last })).unwrap();
            store.flush().unwrap();
        }
        let what = if deletes { "deletes" } else { "modifications" };
        println!("round {round}: apply {m} {what}: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    }
}
