//! Store commit throughput: one flush per write, group commit with concurrent writers,
//! batches of writes sharing one sync, and the same batch as one write group (shared
//! transactions). Run: `cargo bench -p tether-store --bench commit`.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

criterion_group!(benches, commit);
criterion_main!(benches);
