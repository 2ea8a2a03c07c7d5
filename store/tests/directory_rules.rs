//! Directory rules: every refusal leaves the store exactly as it was.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tether_protocol::{Csn, ModOp, SearchSpec};
use tether_store::{Directory, Refusal, StoreError};

fn open() -> (tempfile::TempDir, Directory) {
    let (dir, d) = directory_with_base_tree();
    d.write(&add_person("uid=ann,ou=people,dc=example,dc=com")).unwrap();
    (dir, d)
}

/// Everything observable: all entries (with CSNs), the last CSN and the changelog.
fn snapshot(d: &Directory) -> (Vec<String>, Csn, Option<Csn>) {
    let all: Vec<String> = d
        .search(&SearchSpec::subtree(dn(SUFFIX)))
        .map(|e| {
            let e = e.unwrap();
            format!("{}|{}|{:?}", e.dn, e.csn, e.attrs)
        })
        .collect();
    (all, d.durable_csn(), d.changelog().newest().unwrap())
}

fn refused(d: &Directory, change: tether_protocol::Change) -> Refusal {
    let before = snapshot(d);
    let err = d.write(&change).expect_err("write should be refused");
    assert_eq!(snapshot(d), before, "a refused write changed something");
    match err {
        StoreError::Refused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn every_rule_refuses_and_changes_nothing() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    assert!(matches!(refused(&d, add_person(ann)), Refusal::AlreadyExists(_)));
    assert!(matches!(refused(&d, add_person("UID=ANN, ou=People,dc=example,dc=com")), Refusal::AlreadyExists(_)));
    assert!(matches!(refused(&d, add_person("uid=x,ou=missing,dc=example,dc=com")), Refusal::NoParent(_)));
    assert!(matches!(refused(&d, add_person("uid=x,dc=other,dc=com")), Refusal::OutsideSuffix { .. }));
    assert!(matches!(
        refused(&d, add("uid=y,ou=people,dc=example,dc=com", &[("uid", "y")])),
        Refusal::InvalidChange { .. }
    ));
    assert!(matches!(refused(&d, delete("ou=people,dc=example,dc=com")), Refusal::NotAllowedOnNonLeaf(_)));
    assert!(matches!(refused(&d, delete("uid=nobody,ou=people,dc=example,dc=com")), Refusal::NoSuchObject(_)));
    assert!(matches!(
        refused(&d, modify("uid=nobody,ou=people,dc=example,dc=com", ModOp::Add, "cn", &["x"])),
        Refusal::NoSuchObject(_)
    ));
    assert!(
        matches!(refused(&d, modify(ann, ModOp::Add, "cn", &["ANN"])), Refusal::InvalidChange { .. }),
        "duplicate value"
    );
    assert!(
        matches!(refused(&d, modify(ann, ModOp::Delete, "mail", &[])), Refusal::InvalidChange { .. }),
        "no such attribute"
    );
    assert!(
        matches!(refused(&d, modify(ann, ModOp::Delete, "uid", &["ann"])), Refusal::InvalidChange { .. }),
        "RDN value"
    );
    assert!(matches!(refused(&d, modify(ann, ModOp::Replace, "objectClass", &[])), Refusal::InvalidChange { .. }));
    assert!(matches!(
        refused(&d, moddn("ou=people,dc=example,dc=com", "ou=staff", None)),
        Refusal::NotAllowedOnNonLeaf(_)
    ));
    assert!(matches!(refused(&d, moddn(ann, "uid=ann", Some("ou=missing,dc=example,dc=com"))), Refusal::NoParent(_)));
    // Below itself: the entry would take its own name as its parent, and be left with
    // none (spelled otherwise, too).
    for superior in [ann, "UID=Ann , ou=people,dc=example,dc=com", "cn=x,uid=ann,ou=people,dc=example,dc=com"] {
        let refusal = refused(&d, moddn(ann, "cn=child", Some(superior)));
        assert!(
            matches!(&refusal, Refusal::InvalidChange { reason, .. } if reason.contains("is the entry itself or below it")),
            "{superior}: {refusal}"
        );
    }
    // A name's RDN value in hex (RFC 4514's BER form), which only a schema could read
    // as the value it encodes: refused for new names, by add and by rename.
    for change in [add_person("uid=#414E4E32,ou=people,dc=example,dc=com"), moddn(ann, "uid=#414E4E32", None)] {
        let refusal = refused(&d, change);
        assert!(
            matches!(&refusal, Refusal::InvalidChange { reason, .. }
                if reason.contains("is in hex") && reason.contains("write uid=ANN2")),
            "{refusal}"
        );
    }
    d.write(&add_person("uid=bob,ou=people,dc=example,dc=com")).unwrap();
    assert!(matches!(refused(&d, moddn(ann, "uid=bob", None)), Refusal::AlreadyExists(_)));
    assert!(matches!(
        refused(&d, moddn("uid=zed,ou=people,dc=example,dc=com", "uid=z", None)),
        Refusal::NoSuchObject(_)
    ));
}

/// A request may spell the parent of a new or moved entry otherwise than the parent is
/// stored (case, spaces); the entry's DN takes the parent's stored spelling, so a
/// search prints one tree, not `uid=x,OU=People,DC=EXAMPLE,DC=COM` under
/// `ou=people,dc=example,dc=com`. Its own RDN stays as the request wrote it.
#[test]
fn a_new_or_moved_entry_is_named_below_its_parent_as_the_parent_is_stored() {
    let (_tmp, d) = open();
    let stored = |name: &str| d.entries().get(&dn(name)).unwrap().unwrap().dn.to_string();
    d.write(&add_person("UID=Zoe,OU=People , DC=EXAMPLE,dc=Com")).unwrap();
    assert_eq!(stored("uid=zoe,ou=people,dc=example,dc=com"), "UID=Zoe,ou=people,dc=example,dc=com");
    d.write(&moddn("uid=ann,OU=PEOPLE,dc=example,dc=com", "uid=Anne", None)).unwrap();
    assert_eq!(stored("uid=anne,ou=people,dc=example,dc=com"), "uid=Anne,ou=people,dc=example,dc=com");
    d.write(&moddn("uid=anne,ou=people,dc=example,dc=com", "uid=Anne", Some("OU=Groups,DC=Example,DC=COM"))).unwrap();
    assert_eq!(stored("uid=anne,ou=groups,dc=example,dc=com"), "uid=Anne,ou=groups,dc=example,dc=com");
    // The bulk loader does the same, below a parent in the store and below one earlier
    // in the same batch (which used to keep the child's own spelling of it).
    let person = |name: &str| match add_person(name) {
        tether_protocol::Change::Add { attrs, .. } => (dn(name), attrs, None),
        other => panic!("{other:?}"),
    };
    d.bulk_add(&[
        (dn("OU=Staff,dc=example,dc=com"), attrs(&[("objectClass", "organizationalUnit"), ("ou", "Staff")]), None),
        person("cn=Kid,ou=STAFF,DC=EXAMPLE,DC=COM"),
        person("cn=Grandkid,CN=KID,OU=staff,dc=example,dc=com"),
        person("cn=Lou,OU=PEOPLE,dc=example,dc=com"),
    ])
    .unwrap();
    assert_eq!(stored("cn=kid,ou=staff,dc=example,dc=com"), "cn=Kid,OU=Staff,dc=example,dc=com");
    assert_eq!(
        stored("cn=grandkid,cn=kid,ou=staff,dc=example,dc=com"),
        "cn=Grandkid,cn=Kid,OU=Staff,dc=example,dc=com"
    );
    assert_eq!(stored("cn=lou,ou=people,dc=example,dc=com"), "cn=Lou,ou=people,dc=example,dc=com");
}

/// RFC 4512 §2.5: options in another order name the same attribute, in every kind of
/// modification, so a value cannot be added twice under two spellings.
#[test]
fn a_modification_names_an_attribute_s_options_in_any_order() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    d.write(&modify(ann, ModOp::Add, "description;x-b;x-a", &["one"])).unwrap();
    assert!(matches!(
        refused(&d, modify(ann, ModOp::Add, "description;X-A;x-b", &["ONE"])),
        Refusal::InvalidChange { .. }
    ));
    d.write(&modify(ann, ModOp::Add, "description;x-a;x-b", &["two"])).unwrap();
    d.write(&modify(ann, ModOp::Delete, "description;X-A;X-B", &["one"])).unwrap();
    let entry = d.entries().get(&dn(ann)).unwrap().unwrap();
    let described: Vec<_> = entry.attrs.iter().filter(|a| a.name.starts_with("description")).collect();
    assert_eq!(described.len(), 1, "{described:?}");
    assert_eq!((described[0].name.as_str(), described[0].values.len()), ("description;x-a;x-b", 1));
}

/// An attribute whose last value a modification deletes by value is gone, as one
/// deleted whole is: an entry never holds an attribute without values, which no reader
/// of it would accept (found by a mutation audit: an attribute left empty passed the
/// store's and the protocol's tests, and the entry could then not be read back).
#[test]
fn deleting_an_attribute_s_last_value_removes_the_attribute() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    d.write(&modify(ann, ModOp::Add, "mail", &["ann@example.com", "a@example.com"])).unwrap();
    d.write(&modify(ann, ModOp::Delete, "mail", &["A@EXAMPLE.COM"])).unwrap();
    let entry = d.entries().get(&dn(ann)).unwrap().unwrap();
    assert_eq!(entry.attrs.values("mail"), &["ann@example.com".into()]);
    d.write(&modify(ann, ModOp::Delete, "MAIL", &["Ann@Example.com"])).unwrap();
    let entry = d.entries().get(&dn(ann)).expect("the entry reads back").unwrap();
    assert!(entry.attrs.get("mail").is_none(), "{:?}", entry.attrs);
    // Gone, not empty: deleting it again is refused, and it can be added again.
    assert!(matches!(refused(&d, modify(ann, ModOp::Delete, "mail", &[])), Refusal::InvalidChange { .. }));
    d.write(&modify(ann, ModOp::Add, "mail", &["new@example.com"])).unwrap();
    assert_eq!(d.entries().get(&dn(ann)).unwrap().unwrap().attrs.values("mail"), &["new@example.com".into()]);
}

#[test]
fn a_multi_step_modify_is_all_or_nothing() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    let change = tether_protocol::Change::Modify {
        dn: dn(ann),
        mods: vec![
            tether_protocol::Modification { op: ModOp::Add, attr: "mail".into(), values: vec!["a@x".into()] },
            tether_protocol::Modification { op: ModOp::Delete, attr: "telephoneNumber".into(), values: vec![] },
        ],
    };
    refused(&d, change);
    assert!(d.entries().get(&dn(ann)).unwrap().unwrap().attrs.get("mail").is_none());
}

/// RFC 4525: a counter read and advanced in one write, so two clients allocating
/// numbers from it never take the same one.
#[test]
fn an_increment_advances_every_value_in_one_write_or_is_refused_whole() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    d.write(&modify(ann, ModOp::Add, "uidNumber", &["1000"])).unwrap();
    let csn = d.write(&modify(ann, ModOp::Increment, "UIDNUMBER", &["1"])).unwrap().csn;
    let stored = d.entries().get(&dn(ann)).unwrap().unwrap();
    assert_eq!(stored.attrs.values("uidNumber"), &[tether_protocol::Value::from("1001")]);
    assert_eq!(stored.csn, csn, "an increment is a change like any other, replicated as the entry's new state");
    d.write(&modify(ann, ModOp::Increment, "uidNumber", &["-1001"])).unwrap();
    assert_eq!(d.entries().get(&dn(ann)).unwrap().unwrap().attrs.values("uidNumber"), &["0".into()]);

    let reason = |r: Refusal| match r {
        Refusal::InvalidChange { reason, .. } => reason,
        other => panic!("expected an invalid change, got {other}"),
    };
    let cases = [
        (modify(ann, ModOp::Increment, "cn", &["1"]), r#"cannot increment "cn": "ann" is not an integer"#),
        (modify(ann, ModOp::Increment, "gidNumber", &["1"]), r#"no such attribute "gidNumber""#),
        (
            modify(ann, ModOp::Increment, "uidNumber", &["1", "2"]),
            r#"increment of "uidNumber" takes exactly one value, the amount"#,
        ),
        (
            modify(ann, ModOp::Increment, "uidNumber", &[]),
            r#"increment of "uidNumber" takes exactly one value, the amount"#,
        ),
    ];
    for (change, expected) in cases {
        assert_eq!(reason(refused(&d, change)), expected);
    }
    assert!(
        reason(refused(&d, modify(ann, ModOp::Increment, "entryUUID", &["1"]))).contains("maintained by the server")
    );
    // Deleting one the entry does not hold says why it holds none.
    for attr in ["entryUUID", "modifyTimestamp"] {
        let why = reason(refused(&d, modify(ann, ModOp::Delete, attr, &[])));
        assert!(
            why.starts_with(&format!(
                "no such attribute {attr:?}: Tether keeps server-maintained attributes out of entries"
            )),
            "{why}"
        );
    }
    // A counter that names its entry cannot move: the entry would lose its name.
    let numbered = "employeeNumber=7,ou=people,dc=example,dc=com";
    d.write(&add(numbered, &[("objectClass", "extensibleObject")])).unwrap();
    assert_eq!(
        reason(refused(&d, modify(numbered, ModOp::Increment, "employeeNumber", &["1"]))),
        "RDN value employeeNumber=7 may not be removed"
    );
}

#[test]
fn writes_assign_increasing_csns_and_keep_uuid_across_renames() {
    let (_tmp, d) = open();
    let ann = dn("uid=ann,ou=people,dc=example,dc=com");
    let before = d.entries().get(&ann).unwrap().unwrap();
    let c1 = d.write(&modify("uid=ann,ou=people,dc=example,dc=com", ModOp::Add, "mail", &["ann@x"])).unwrap();
    let c2 = d
        .write(&moddn("uid=ann,ou=people,dc=example,dc=com", "uid=anna", Some("ou=groups,dc=example,dc=com")))
        .unwrap();
    assert!(c2.csn > c1.csn && c1.csn > before.csn);
    assert_eq!(c2.uuid, before.uuid);
    assert!(d.entries().get(&ann).unwrap().is_none());
    let moved = d.entries().get(&dn("uid=anna,ou=groups,dc=example,dc=com")).unwrap().unwrap();
    assert_eq!(moved.uuid, before.uuid);
    assert_eq!(moved.csn, c2.csn);
    assert_eq!(moved.attrs.values("uid"), &["anna".into()], "deleteoldrdn removed the old RDN value");
    assert_eq!(d.entries().get_by_uuid(&before.uuid).unwrap().unwrap().dn, moved.dn);
    assert_eq!(d.durable_csn(), c2.csn);

    // A rename that only changes the RDN's case changes the value's spelling with it.
    d.write(&moddn("uid=anna,ou=groups,dc=example,dc=com", "uid=ANNA", None)).unwrap();
    let recased = d.entries().get(&dn("uid=anna,ou=groups,dc=example,dc=com")).unwrap().unwrap();
    assert_eq!(recased.dn.to_string(), "uid=ANNA,ou=groups,dc=example,dc=com");
    assert_eq!(recased.attrs.values("uid"), &["ANNA".into()], "the value is spelled as the new RDN");
    assert_eq!(recased.uuid, before.uuid);
}

/// A rename with `deleteoldrdn: 0` keeps the old RDN's value beside the new one, as
/// RFC 4511 §4.9 says (found by a mutation audit: the old value removed whatever the
/// flag said passed every store test, which all rename with `deleteoldrdn: 1`).
#[test]
fn a_rename_that_keeps_the_old_rdn_keeps_its_value() {
    let (_tmp, d) = open();
    let keep = |d: &str, new_rdn: &str, superior: Option<&str>| match moddn(d, new_rdn, superior) {
        tether_protocol::Change::ModDn { dn, new_rdn, new_superior, .. } => {
            tether_protocol::Change::ModDn { dn, new_rdn, delete_old_rdn: false, new_superior }
        }
        other => panic!("{other:?}"),
    };
    d.write(&keep("uid=ann,ou=people,dc=example,dc=com", "uid=anna", Some("ou=groups,dc=example,dc=com"))).unwrap();
    let moved = d.entries().get(&dn("uid=anna,ou=groups,dc=example,dc=com")).unwrap().unwrap();
    assert_eq!(moved.attrs.values("uid"), &["ann".into(), "anna".into()], "the old value kept, the new one added");
    // Back to the old name: its value is there already, and the other one stays.
    d.write(&keep("uid=anna,ou=groups,dc=example,dc=com", "uid=ann", None)).unwrap();
    let back = d.entries().get(&dn("uid=ann,ou=groups,dc=example,dc=com")).unwrap().unwrap();
    assert_eq!(back.attrs.values("uid"), &["ann".into(), "anna".into()]);
}

/// Entries added together must sit together in the UUID index (see
/// `EntryUuid::new_time_ordered`): in both write paths each new entry's UUID sorts after
/// those of the entries added before it.
#[test]
fn added_entries_get_uuids_in_the_order_they_were_added() {
    let dir = tempfile::tempdir().unwrap();
    let d = Directory::open(dir.path(), &dn(SUFFIX)).unwrap();
    let mut names = vec!["dc=example,dc=com".to_owned(), "ou=people,dc=example,dc=com".to_owned()];
    names.extend((0..200).map(|i| format!("uid=p{i:03},ou=people,dc=example,dc=com")));
    let bulk: Vec<_> = names.iter().map(|s| (dn(s), common::attrs(&[("objectClass", "top")]), None)).collect();
    d.bulk_add(&bulk).unwrap();
    let mut uuids: Vec<_> = names.iter().map(|s| d.entries().get(&dn(s)).unwrap().unwrap().uuid).collect();
    for i in 0..200 {
        uuids.push(d.write(&add_person(&format!("uid=w{i:03},ou=people,dc=example,dc=com"))).unwrap().uuid);
    }
    assert!(uuids.windows(2).all(|w| w[0] < w[1]), "UUIDs not in the order the entries were added");
}

#[test]
fn state_survives_reopen_and_csns_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (id, last) = {
        let d = Directory::open(dir.path(), &dn(SUFFIX)).unwrap();
        for c in base_tree() {
            d.write(&c).unwrap();
        }
        (d.store_id(), d.durable_csn())
    };
    let d = reopen_directory(dir.path(), &dn(SUFFIX));
    assert_eq!(d.store_id(), id);
    assert_eq!(d.durable_csn(), last);
    let next = d.write(&add_person("uid=c,ou=people,dc=example,dc=com")).unwrap();
    assert_eq!(next.csn, last.next());
    drop(d);
    let other = open_outcome(|| Directory::open(dir.path(), &dn("dc=other")));
    assert!(matches!(other, Err(StoreError::SuffixMismatch { .. })));
}

#[test]
fn bulk_add_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Directory::open(dir.path(), &dn(SUFFIX)).unwrap();
    let good: Vec<_> = ["dc=example,dc=com", "ou=people,dc=example,dc=com", "uid=a,ou=people,dc=example,dc=com"]
        .iter()
        .map(|s| (dn(s), common::attrs(&[("objectClass", "top")]), None))
        .collect();
    let mut bad = good.clone();
    bad.push((dn("uid=b,ou=nowhere,dc=example,dc=com"), common::attrs(&[("objectClass", "top")]), None));
    assert!(matches!(d.bulk_add(&bad), Err(StoreError::Refused(Refusal::NoParent(_)))));
    // An exported entry's UUID, given twice.
    let uuid: tether_protocol::EntryUuid = "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00".parse().unwrap();
    let mut twice = good.clone();
    twice[1].2 = Some(uuid);
    twice[2].2 = Some(uuid);
    let err = d.bulk_add(&twice).unwrap_err().to_string();
    assert!(err.contains("is given to another entry earlier in the same load"), "{err}");
    assert_eq!(d.entries().len(), 0);
    assert_eq!(d.durable_csn(), Csn::ZERO);
    let mut kept = good.clone();
    kept[2].2 = Some(uuid);
    let last = d.bulk_add(&kept).unwrap();
    assert_eq!(d.uuid_holder(&uuid).unwrap(), Some(dn("uid=a,ou=people,dc=example,dc=com")), "the UUID given is kept");
    let taken = [(dn("uid=c,ou=people,dc=example,dc=com"), common::attrs(&[("objectClass", "top")]), Some(uuid))];
    let err = d.bulk_add(&taken).unwrap_err().to_string();
    assert!(err.contains("is already the UUID of uid=a,ou=people,dc=example,dc=com"), "{err}");
    assert_eq!(last, Csn(3));
    assert_eq!(d.entries().len(), 3);
    // Not logged: the floor rises past the load instead (see the replication tests).
    assert_eq!(d.changelog().records(Csn::ZERO, last).count(), 0);
    assert_eq!(d.floor().unwrap(), last);
}

/// A bulk batch naming one entry twice, in any spelling, is refused whole, as the
/// second add of it would be one write at a time (found by a mutation audit: without
/// the batch's own check of names, the second record replaced the first under the same
/// key, both were counted, and the first's entryUUID was left indexed to the second).
#[test]
fn a_bulk_batch_naming_an_entry_twice_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = Directory::open(dir.path(), &dn(SUFFIX)).unwrap();
    let batch: Vec<_> = [
        "dc=example,dc=com",
        "ou=people,dc=example,dc=com",
        "uid=a,ou=people,dc=example,dc=com",
        "UID=A, ou=People,dc=example,dc=com",
    ]
    .iter()
    .map(|s| (dn(s), common::attrs(&[("objectClass", "top")]), None))
    .collect();
    let refused = d.bulk_add(&batch);
    assert!(matches!(refused, Err(StoreError::Refused(Refusal::AlreadyExists(_)))), "{refused:?}");
    assert_eq!((d.entries().len(), d.entry_count().unwrap()), (0, 0), "nothing written");
    assert_eq!(d.durable_csn(), Csn::ZERO);
}

#[test]
fn group_commit_publishes_durable_csn() {
    let (_tmp, d) = open();
    let mut rx = d.subscribe();
    let start = *rx.borrow_and_update();
    let c = d.write_nowait(&add_person("uid=g,ou=people,dc=example,dc=com")).unwrap();
    assert_eq!(d.durable_csn(), start, "not durable until synced");
    assert!(!rx.has_changed().unwrap());
    d.sync(c.csn).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), c.csn);
}

#[test]
fn concurrent_writers_share_flushes() {
    let (_tmp, d) = open();
    let d = std::sync::Arc::new(d);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    d.write(&add_person(&format!("uid=t{t}-{i},ou=people,dc=example,dc=com"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.entries().len(), 4 + 200);
    let csns: Vec<Csn> = d.changelog().records(Csn::ZERO, d.durable_csn()).map(|r| r.unwrap().csn).collect();
    assert_eq!(csns.len() as u64, d.durable_csn().0, "one record per CSN, none lost");
    assert!(csns.windows(2).all(|w| w[1] == w[0].next()));
}

/// The entry count the directory keeps follows adds (single and bulk), deletes, renames
/// and refused writes, survives a reopen, and a store from before it was kept is counted
/// when opened.
#[test]
fn the_entry_count_follows_every_write_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = dn(SUFFIX);
    let d = Directory::open(dir.path(), &suffix).unwrap();
    let checked = |d: &Directory| {
        let kept = d.entry_count().unwrap();
        assert_eq!(kept, d.entries().len() as u64, "kept count against a scan");
        kept
    };
    assert_eq!(checked(&d), 0);
    let bulk: Vec<_> = ["dc=example,dc=com", "ou=people,dc=example,dc=com", "ou=groups,dc=example,dc=com"]
        .iter()
        .map(|s| (dn(s), common::attrs(&[("objectClass", "top")]), None))
        .collect();
    d.bulk_add(&bulk).unwrap();
    assert_eq!(checked(&d), 3);
    for name in ["a", "b", "c"] {
        d.write(&add_person(&format!("uid={name},ou=people,dc=example,dc=com"))).unwrap();
    }
    assert_eq!(checked(&d), 6);
    d.write(&moddn("uid=a,ou=people,dc=example,dc=com", "uid=z", Some("ou=groups,dc=example,dc=com"))).unwrap();
    d.write(&modify("uid=b,ou=people,dc=example,dc=com", ModOp::Add, "mail", &["b@x"])).unwrap();
    assert_eq!(checked(&d), 6);
    d.write(&delete("uid=c,ou=people,dc=example,dc=com")).unwrap();
    refused(&d, delete("uid=c,ou=people,dc=example,dc=com"));
    refused(&d, add_person("uid=b,ou=people,dc=example,dc=com"));
    assert_eq!(checked(&d), 5);
    drop(d);
    let d = reopen_directory(dir.path(), &suffix);
    assert_eq!(checked(&d), 5, "after a reopen");
    drop(d);
    {
        let db = reopen_sled(dir.path());
        assert!(db.open_tree("meta").unwrap().remove("entry_count").unwrap().is_some());
        db.flush().unwrap();
    }
    let d = reopen_directory(dir.path(), &suffix);
    d.write(&add_person("uid=d,ou=people,dc=example,dc=com")).unwrap();
    assert_eq!(checked(&d), 6, "counted on open, then kept");
    drop(d);
    let db = reopen_sled(dir.path());
    let kept = db.open_tree("meta").unwrap().get("entry_count").unwrap().expect("the count was recorded");
    assert_eq!(kept.as_ref(), 6u64.to_be_bytes());
}

/// Each process refuses the other's store (a `data_dir` naming the other's folder)
/// before it opens a tree in it: a provider would otherwise serve an empty directory
/// from a consumer's folder, and every consumer would reload to nothing. Both stores
/// then open as their own kind with what they held.
#[test]
fn a_store_of_the_other_kind_is_refused_and_left_as_it_was() {
    let (provider_dir, d) = directory_with_base_tree();
    let (id, last, entries) = (d.store_id(), d.durable_csn(), d.entries().len());
    drop(d);
    let consumer_dir = tempfile::tempdir().unwrap();
    tether_store::ReplicaStore::open(consumer_dir.path()).unwrap().replica("people").unwrap();

    let as_replicas = open_outcome(|| tether_store::ReplicaStore::open(provider_dir.path()));
    assert!(
        matches!(&as_replicas, Err(StoreError::WrongKind { holds: "a provider's directory", .. })),
        "{as_replicas:?}"
    );
    let as_directory = open_outcome(|| Directory::open(consumer_dir.path(), &dn(SUFFIX)));
    assert!(
        matches!(&as_directory, Err(StoreError::WrongKind { holds: "a consumer's replicas", .. })),
        "{as_directory:?}"
    );

    let d = reopen_directory(provider_dir.path(), &dn(SUFFIX));
    assert_eq!((d.store_id(), d.durable_csn(), d.entries().len()), (id, last, entries));
    assert_eq!(reopen_replicas(consumer_dir.path()).names().unwrap(), vec!["people".to_owned()]);
}

/// What a paged read of a region (`search --uuids`) must be told of: adds, deletes and
/// renames touching the region after a CSN, a rename out of it included; neither a
/// modification nor a change elsewhere; and that it cannot be told once retention
/// trimmed the changelog past that CSN.
#[test]
fn reshaped_since_counts_adds_deletes_and_renames_touching_the_region() {
    let (_tmp, d) = open();
    let people = SearchSpec::subtree(dn("ou=people,dc=example,dc=com"));
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    let since = d.durable_csn();
    d.write(&modify(ann, ModOp::Replace, "cn", &["Ann"])).unwrap();
    d.write(&add_person("uid=gus,ou=groups,dc=example,dc=com")).unwrap();
    assert_eq!(d.reshaped_since(since, &people).unwrap(), Some(0), "a modification, and an add elsewhere");
    d.write(&add_person("uid=bob,ou=people,dc=example,dc=com")).unwrap();
    d.write(&delete("uid=bob,ou=people,dc=example,dc=com")).unwrap();
    assert_eq!(d.reshaped_since(since, &people).unwrap(), Some(2));
    d.write(&moddn(ann, "uid=ann", Some("ou=groups,dc=example,dc=com"))).unwrap();
    assert_eq!(d.reshaped_since(since, &people).unwrap(), Some(3), "a move out of the region");
    let groups = SearchSpec::subtree(dn("ou=groups,dc=example,dc=com"));
    assert_eq!(d.reshaped_since(since, &groups).unwrap(), Some(2), "an add and a move into the region");
    assert_eq!(d.reshaped_since(d.durable_csn(), &people).unwrap(), Some(0), "nothing after the last change");
    // Retention trimmed past the start: whether the region changed cannot be told.
    let policy = tether_store::RetentionPolicy {
        max_changes: Some(1),
        max_age: None,
        hold_for_consumers: std::time::Duration::from_secs(60),
        up_since_ms: 0,
    };
    d.trim(&policy, u64::MAX / 2).unwrap();
    assert_eq!(d.reshaped_since(since, &people).unwrap(), None);
}

/// A search begun with the durable CSN at the changelog's floor, as on a provider
/// started after a load (which raises the floor to its last CSN) and not written to
/// since, can still tell whether its region changed while it was printed: every change
/// after the floor is kept.
#[test]
fn reshaped_since_the_changelog_s_floor_is_still_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = Directory::open(dir.path(), &dn(SUFFIX)).unwrap();
    let names = ["dc=example,dc=com", "ou=people,dc=example,dc=com", "uid=ann,ou=people,dc=example,dc=com"];
    let bulk: Vec<_> = names.iter().map(|s| (dn(s), common::attrs(&[("objectClass", "top")]), None)).collect();
    d.bulk_add(&bulk).unwrap();
    let since = d.durable_csn();
    assert_eq!(d.floor().unwrap(), since, "the load raised the floor to its last CSN");
    let people = SearchSpec::subtree(dn("ou=people,dc=example,dc=com"));
    assert_eq!(d.reshaped_since(since, &people).unwrap(), Some(0), "nothing written since the load");
    d.write(&add_person("uid=bob,ou=people,dc=example,dc=com")).unwrap();
    assert_eq!(d.reshaped_since(since, &people).unwrap(), Some(1), "an add after the floor");
}

/// A server-maintained attribute cannot get into an entry by its OID, nor through the
/// DN (an entry holds its RDN's values): an entry named `entryUUID=...` would hold a
/// second entryUUID, and every `search --uuids` backup would then be refused by `load`.
/// The writer's check of a whole file (`refused_anywhere`) refuses the same records.
#[test]
fn server_maintained_attributes_are_refused_by_oid_and_in_rdns() {
    let (_tmp, d) = open();
    let ann = "uid=ann,ou=people,dc=example,dc=com";
    let by_uuid = "entryUUID=11111111-2222-3333-4444-555555555555,ou=people,dc=example,dc=com";
    let cases = [
        (add(by_uuid, &[("objectClass", "person"), ("cn", "u1"), ("sn", "x")]), "an RDN cannot name entryUUID"),
        (
            add("modifyTimestamp=20240101000000Z,ou=people,dc=example,dc=com", &[("objectClass", "extensibleObject")]),
            "an RDN cannot name modifyTimestamp",
        ),
        // A rename's refusal names the entry renamed, and the new name it would have.
        (
            moddn(ann, "entryCSN=123", None),
            "invalid change to uid=ann,ou=people,dc=example,dc=com: its new name entryCSN=123,ou=people,dc=example,\
             dc=com: an RDN cannot name entryCSN",
        ),
        (moddn(ann, "1.3.6.1.1.16.4=x", Some("ou=groups,dc=example,dc=com")), "an RDN cannot name 1.3.6.1.1.16.4"),
        (
            add(
                "uid=bo,ou=people,dc=example,dc=com",
                &[("objectClass", "person"), ("cn", "b"), ("sn", "b"), ("2.5.18.2", "x")],
            ),
            "2.5.18.2 is maintained by the server",
        ),
        (modify(ann, ModOp::Replace, "OID.1.3.6.1.1.16.4", &["x"]), "OID.1.3.6.1.1.16.4 is maintained by the server"),
    ];
    for (change, says) in cases {
        let before = tether_store::refused_anywhere(&change).map(|r| r.to_string());
        let refusal = refused(&d, change).to_string();
        assert!(refusal.contains(says), "{refusal}");
        assert_eq!(before, Some(refusal), "the writer's check refuses it the same way");
    }
    // The same attributes by name in an RDN are ordinary values elsewhere: a rename to
    // an ordinary RDN still goes through the check.
    assert_eq!(tether_store::refused_anywhere(&moddn(ann, "uid=anna", None)), None);
}
