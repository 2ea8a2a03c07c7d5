//! Codec benchmark: encoding and decoding one refresh `Batch` of 1,000 typical person
//! entries (10 attributes each), the unit a full refresh streams. Run with
//! `cargo bench -p tether-protocol --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether_protocol::codec;
use tether_protocol::{Attributes, CheckedEntry, Csn, Dn, Entry, EntryUuid, Message, ReplOp, Value};

/// Entries per batch.
const ENTRIES: usize = 1_000;

/// One `inetOrgPerson` with 10 attributes, as a directory of people holds them.
fn person(i: usize) -> Entry {
    let uid = format!("user{i:05}");
    let mut attrs = Attributes::new();
    let values: [(&str, Vec<Value>); 10] = [
        ("objectClass", vec!["top".into(), "person".into(), "organizationalPerson".into(), "inetOrgPerson".into()]),
        ("uid", vec![uid.clone().into()]),
        ("cn", vec![format!("User Number {i}").into()]),
        ("sn", vec!["Number".into()]),
        ("givenName", vec![format!("User{i}").into()]),
        ("mail", vec![format!("{uid}@example.com").into()]),
        ("telephoneNumber", vec![format!("+1 555 {:04}", i % 10_000).into()]),
        ("title", vec!["Software Engineer".into()]),
        ("employeeNumber", vec![i.to_string().into()]),
        ("description", vec!["A typical entry of a typical directory, with a line of free text.".into()]),
    ];
    for (name, vals) in values {
        attrs.add(name, vals).expect("benchmark attributes are valid");
    }
    Entry {
        dn: Dn::parse(&format!("uid={uid},ou=people,dc=example,dc=com")).expect("benchmark DN is valid"),
        uuid: EntryUuid::new_random(),
        csn: Csn(u64::try_from(i).unwrap_or(u64::MAX) + 1_000_000),
        attrs,
    }
}

fn batch() -> Message {
    Message::Batch { ops: (0..ENTRIES).map(|i| ReplOp::Upsert(person(i))).collect() }
}

fn bench_codec(c: &mut Criterion) {
    let msg = batch();
    let bytes = codec::encode(&msg).expect("batch encodes");
    println!("batch of {ENTRIES} entries: {} bytes encoded ({} bytes per entry)", bytes.len(), bytes.len() / ENTRIES);

    let mut group = c.benchmark_group("batch_1000_entries");
    group.throughput(Throughput::Bytes(u64::try_from(bytes.len()).unwrap_or(u64::MAX)));
    group.bench_function("encode", |b| b.iter(|| codec::encode(black_box(&msg)).expect("batch encodes")));
    let mut buf = Vec::with_capacity(bytes.len());
    group.bench_function("encode_into_reused_buffer", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&msg), &mut buf).expect("batch encodes")
        })
    });
    group.bench_function("decode", |b| b.iter(|| codec::decode::<Message>(black_box(&bytes)).expect("batch decodes")));
    group.finish();

    // What a consumer does with each received entry: check it and keep its bytes. The
    // full decode builds the attributes too; the check only walks them.
    let entries: Vec<Vec<u8>> = (0..ENTRIES).map(|i| codec::encode(&person(i)).expect("entry encodes")).collect();
    let mut group = c.benchmark_group("entries_1000");
    group.throughput(Throughput::Elements(u64::try_from(ENTRIES).unwrap_or(u64::MAX)));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(codec::decode::<Entry>(black_box(e)).expect("entry decodes"));
            }
        })
    });
    group.bench_function("check", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(CheckedEntry::decode_prefix(black_box(e)).expect("entry checks"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
