//! Store commit throughput: one flush per write, group commit with concurrent writers,
//! batches of writes sharing one sync, and the same batch as one write group (shared
//! transactions). Then sled alone, for the floor under a durable write: two trees
//! written in a transaction and flushed, against the same two inserts made singly. A
//! sled transaction (or batch) rolls its log buffer to write its batch manifest in a
//! buffer of its own, so it costs a second synced write. Run: `cargo bench -p
//! tether-store --bench commit`.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use tether_protocol::{Attributes, Change, Dn, Value};
use tether_store::Directory;

const SUFFIX: &str = "dc=example,dc=com";
const WRITERS: u64 = 8;

fn person(n: u64) -> Change {
    let mut attrs = Attributes::new();
    attrs.add("objectClass", [Value::from("inetOrgPerson")]).unwrap();
    attrs.add("cn", [Value::from(format!("Person {n}"))]).unwrap();
    attrs.add("sn", [Value::from("Bench")]).unwrap();
    attrs.add("mail", [Value::from(format!("p{n}@example.com"))]).unwrap();
    Change::Add { dn: Dn::parse(&format!("uid=p{n},ou=people,{SUFFIX}")).unwrap(), attrs }
}

fn directory() -> (tempfile::TempDir, Arc<Directory>) {
    let tmp = tempfile::tempdir().unwrap();
    let d = Directory::open(tmp.path(), &Dn::parse(SUFFIX).unwrap()).unwrap();
    let mut top = Attributes::new();
    top.add("objectClass", [Value::from("domain")]).unwrap();
    d.write(&Change::Add { dn: Dn::parse(SUFFIX).unwrap(), attrs: top }).unwrap();
    let mut ou = Attributes::new();
    ou.add("objectClass", [Value::from("organizationalUnit")]).unwrap();
    d.write(&Change::Add { dn: Dn::parse(&format!("ou=people,{SUFFIX}")).unwrap(), attrs: ou }).unwrap();
    (tmp, Arc::new(d))
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let next = Arc::new(AtomicU64::new(0));

    group.throughput(Throughput::Elements(1));
    let (_t1, d) = directory();
    group.bench_function("durable write, one writer", |b| {
        b.iter(|| d.write(&person(next.fetch_add(1, Ordering::Relaxed))).unwrap())
    });

    group.throughput(Throughput::Elements(WRITERS));
    let (_t2, d) = directory();
    group.bench_function("durable write, 8 writers (group commit)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..WRITERS)
                .map(|_| {
                    let (d, next) = (d.clone(), next.clone());
                    std::thread::spawn(move || {
                        for _ in 0..iters {
                            d.write(&person(next.fetch_add(1, Ordering::Relaxed))).unwrap();
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            start.elapsed()
        })
    });

    const BATCH: u64 = 100;
    group.throughput(Throughput::Elements(BATCH));
    let (_t3, d) = directory();
    group.bench_function("100 writes, one sync", |b| {
        b.iter(|| {
            let mut last = None;
            for _ in 0..BATCH {
                last = Some(d.write_nowait(&person(next.fetch_add(1, Ordering::Relaxed))).unwrap().csn);
            }
            d.sync(last.unwrap()).unwrap();
        })
    });
    let (_t4, d) = directory();
    group.bench_function("100 writes, one group", |b| {
        b.iter(|| {
            let writes: Vec<Change> = (0..BATCH).map(|_| person(next.fetch_add(1, Ordering::Relaxed))).collect();
            let last = d.write_group(&writes).into_iter().map(|r| r.unwrap().csn).max().unwrap();
            d.sync(last).unwrap();
        })
    });
    group.finish();
}

/// Two trees of one sled database, as a write touches an entry and an index.
fn sled_trees() -> (tempfile::TempDir, sled::Db, sled::Tree, sled::Tree) {
    let tmp = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(tmp.path()).open().unwrap();
    let (a, b) = (db.open_tree("entries").unwrap(), db.open_tree("index").unwrap());
    (tmp, db, a, b)
}

fn sled_alone(c: &mut Criterion) {
    let mut group = c.benchmark_group("sled");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let value = vec![7u8; 580];
    let next = AtomicU64::new(0);

    let (_t1, db, entries, index) = sled_trees();
    group.bench_function("two trees in a transaction, flushed", |b| {
        b.iter(|| {
            let key = next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            (&entries, &index)
                .transaction(|(e, i)| {
                    e.insert(&key, value.as_slice())?;
                    i.insert(&key, &key)?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .unwrap();
            db.flush().unwrap();
        })
    });

    let (_t2, db, entries, index) = sled_trees();
    group.bench_function("two single inserts, flushed", |b| {
        b.iter(|| {
            let key = next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            entries.insert(key, value.as_slice()).unwrap();
            index.insert(key, &key).unwrap();
            db.flush().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, commit, sled_alone);
criterion_main!(benches);
