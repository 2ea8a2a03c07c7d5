//! The LDIF reader and writer against OpenLDAP's own test data (`tests/data/openldap`,
//! under the OpenLDAP Public License, see LICENSE and COPYRIGHT there): every file is
//! read, with record counts and specific values checked, and what we refuse is refused
//! with the line and reason we promise.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tether_protocol::ldif::{write_entries, write_record, LdifError, LdifErrorKind, LdifReader, LdifRecord};
use tether_protocol::{Attributes, Change, Csn, Dn, Entry, EntryUuid, ModOp};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openldap")
}

/// Every record of a file, streamed from disk, errors included.
fn read(name: &str) -> Vec<Result<LdifRecord, LdifError>> {
    let file = File::open(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    LdifReader::new(BufReader::new(file)).collect()
}

/// Every record of a file that must read without error.
fn read_ok(name: &str) -> Vec<LdifRecord> {
    read(name).into_iter().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn entry<'a>(records: &'a [LdifRecord], dn: &str) -> &'a Attributes {
    let wanted = Dn::parse(dn).unwrap_or_else(|e| panic!("{dn}: {e}"));
    records
        .iter()
        .find_map(|r| match r {
            LdifRecord::Content { dn, attrs, .. } if *dn == wanted => Some(attrs),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no entry {dn}"))
}

fn texts(attrs: &Attributes, name: &str) -> Vec<String> {
    attrs.values(name).iter().map(|v| v.as_str().unwrap_or_else(|| panic!("{name} not UTF-8")).to_owned()).collect()
}

fn changes(records: &[LdifRecord]) -> Vec<&Change> {
    records
        .iter()
        .map(|r| match r {
            LdifRecord::Change { change, .. } => change,
            other => panic!("expected a change record, got {other:?}"),
        })
        .collect()
}

#[test]
fn every_file_reads_with_the_expected_counts() {
    // file -> (records read, records refused)
    let expected: BTreeMap<&str, (usize, usize)> = [
        ("nis_sample.ldif", (1234, 31)),
        ("referrals.ldif", (5, 0)),
        ("test-dn.ldif", (35, 0)),
        ("test-lang.ldif", (1, 0)),
        ("test-modify.ldif", (8, 0)),
        ("test-ordered.ldif", (19, 0)),
        ("test-refint.ldif", (9, 0)),
        ("test-unordered.ldif", (11, 0)),
        ("test-whoami.ldif", (21, 1)),
        ("test.ldif", (19, 0)),
    ]
    .into_iter()
    .collect();
    let mut seen = Vec::new();
    for dir_entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = dir_entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("ldif") {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap().to_owned();
        let results = read(&name);
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let refused = results.len() - ok;
        assert_eq!(Some(&(ok, refused)), expected.get(name.as_str()), "{name}");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, expected.keys().copied().collect::<Vec<_>>(), "every data file is covered");
    for kept in ["LICENSE", "COPYRIGHT"] {
        assert!(data_dir().join(kept).is_file(), "{kept} stays beside the data");
    }
}

#[test]
fn test_ldif_base64_and_folded_values_decode() {
    let records = read_ok("test.ldif");
    assert_eq!(records[0].line(), 2, "the record starts at its dn:, after the lead comment");
    let babs = entry(&records, "cn=Barbara Jensen,ou=Information Technology Division,ou=People,dc=example,dc=com");
    assert_eq!(texts(babs, "sn"), [" Jensen "], "sn:: IEplbnNlbiA=");
    assert_eq!(texts(babs, "userPassword"), ["bjensen"]);
    assert_eq!(
        texts(babs, "postalAddress"),
        ["ITD Prod Dev & Deployment $ 535 W. William St. Room 4212 $ Anytown, MI 48103-4943"]
    );
    assert_eq!(texts(babs, "cn"), ["Barbara Jensen", "Babs Jensen"]);
    let babs_line = records.iter().find(|r| r.dn().to_string().starts_with("cn=Barbara")).map(LdifRecord::line);
    assert_eq!(babs_line, Some(41));

    let all_staff = entry(&records, "cn=All Staff,ou=Groups,dc=example,dc=com");
    let members = texts(all_staff, "member");
    assert_eq!(members.len(), 11);
    assert_eq!(members[1], "cn=Barbara Jensen,ou=Information Technology Division,ou=People,dc=example,dc=com");
    assert_eq!(members[3], "cn=John Doe,ou=Information Technology Division,ou=People,dc=example,dc=com");

    let itd = entry(&records, "ou=Information Technology Division,ou=People,dc=example,dc=com");
    let descriptions = texts(itd, "description");
    assert_eq!(descriptions.len(), 2);
    assert_eq!(descriptions[0].len(), 4976, "a 67-line folded base64 value");
    assert!(descriptions[0].starts_with("hÃ\u{83}Â\u{82}Ã\u{82}Â\u{8b}EVVP"), "{:?}", &descriptions[0][..20]);
    assert_eq!(descriptions[1].len(), 2983);
    assert!(descriptions[1].starts_with("P^Ã"));

    let example = entry(&records, "dc=example,dc=com");
    assert_eq!(texts(example, "o"), ["Example, Inc.", "EX", "Ex."]);
    assert_eq!(texts(example, "objectClass").len(), 4);
}

#[test]
fn test_modify_change_records_of_every_kind_with_its_increments() {
    let records = read_ok("test-modify.ldif");
    let lines: Vec<usize> = records.iter().map(LdifRecord::line).collect();
    assert_eq!(lines, [5, 23, 34, 58, 77, 95, 99, 107]);
    let changes = changes(&records);

    let Change::Modify { dn, mods } = changes[0] else { panic!("{:?}", changes[0]) };
    assert_eq!(dn.to_string(), "cn=James A Jones 1,ou=Alumni Association,ou=People,dc=example,dc=com");
    let summary: Vec<(ModOp, &str, Vec<&str>)> =
        mods.iter().map(|m| (m.op, m.attr.as_str(), m.values.iter().filter_map(|v| v.as_str()).collect())).collect();
    assert_eq!(
        summary,
        [
            (ModOp::Add, "drink", vec!["Pils"]),
            (ModOp::Add, "drink", vec!["Orange Juice"]),
            (ModOp::Delete, "drink", vec!["Pils"]),
            (ModOp::Delete, "sn", vec!["Jones"]),
            (ModOp::Add, "sn", vec!["Jones"]),
        ],
        "the last section has no closing '-'"
    );

    // The embedded comment and its folded continuation are skipped.
    let Change::Modify { mods, .. } = changes[1] else { panic!("{:?}", changes[1]) };
    assert_eq!(mods.len(), 2);
    assert_eq!(
        (mods[0].op, mods[0].values[0].as_str()),
        (ModOp::Replace, Some("The replaced multiLineDescription $ Blah Woof."))
    );
    assert_eq!(mods[1].values.len(), 2);

    let Change::Modify { mods, .. } = changes[2] else { panic!("{:?}", changes[2]) };
    assert_eq!(mods.len(), 4);
    assert_eq!(
        mods[0].values[0].as_str(),
        Some("cn=James A Jones 2,ou=Information Technology Division,ou=People,dc=example,dc=com"),
        "a folded value"
    );

    let Change::Modify { mods, .. } = changes[3] else { panic!("{:?}", changes[3]) };
    assert_eq!((mods[0].op, mods[0].attr.as_str(), mods[0].values.len()), (ModOp::Delete, "member", 0));

    let Change::Add { dn, attrs } = changes[4] else { panic!("{:?}", changes[4]) };
    assert_eq!(dn.to_string(), "cn=Gern Jensen,ou=Information Technology Division,ou=People,dc=example,dc=com");
    assert_eq!(attrs.len(), 15);
    assert_eq!(texts(attrs, "testTime"), ["20050304001801.234Z"]);

    assert!(matches!(changes[5], Change::Delete { dn } if dn.to_string().starts_with("cn=James A Jones 2,")));
    // RFC 4525 increments, one up and one down, the last section without its '-'.
    let Change::Modify { dn, mods } = changes[6] else { panic!("{:?}", changes[6]) };
    assert_eq!(dn.to_string(), "ou=People,dc=example,dc=com");
    let summary: Vec<(ModOp, &str, Vec<&str>)> =
        mods.iter().map(|m| (m.op, m.attr.as_str(), m.values.iter().filter_map(|v| v.as_str()).collect())).collect();
    assert_eq!(summary, [(ModOp::Increment, "uidNumber", vec!["1"]), (ModOp::Increment, "gidNumber", vec!["-1"])]);

    assert!(
        matches!(changes[7], Change::Modify { dn, mods } if mods.is_empty() && dn.to_string() == "dc=example,dc=com")
    );
}

#[test]
fn test_dn_escaped_dns_are_values_and_parse_as_openldap_says() {
    let records = read_ok("test-dn.ldif");
    let succeed = entry(&records, "cn=Must Succeed,ou=LDAPv3,dc=example,dc=com");
    let members = texts(succeed, "member");
    assert_eq!(members.len(), 10);
    assert_eq!(members[1], "", "an empty value");
    assert_eq!(members[4], "CN=John Smith\\, III,DC=example,DC=net");
    assert_eq!(members[8], "CN=Lu\\C4\\8Di\\C4\\87");
    assert_eq!(texts(succeed, "seeAlso")[2], "CN=\\#John Smith\\ ,DC=example,DC=net");
    assert_eq!(texts(succeed, "description").len(), 17);
    for member in &members {
        let parsed = Dn::parse(member).unwrap_or_else(|e| panic!("{member:?}: {e}"));
        assert_eq!(Dn::parse(&parsed.to_string()).as_ref(), Ok(&parsed));
    }
    let lucic = Dn::parse(&members[8]).unwrap();
    assert_eq!(lucic.rdn().and_then(|r| r.avas()[0].value_str()), Some("Lučić"));

    // The "Must Fail" member values are read as values, and refused as DNs.
    let mut must_fail = 0;
    for record in &records {
        let LdifRecord::Content { dn, attrs, .. } = record else { panic!("{record:?}") };
        let cn = texts(attrs, "cn").first().cloned().unwrap_or_default();
        if cn.starts_with("Must Fail") {
            must_fail += 1;
            assert!(dn.to_string().ends_with(",ou=Groups,dc=example,dc=com"));
            for member in texts(attrs, "member") {
                assert!(Dn::parse(&member).is_err(), "{cn}: {member:?} should not be a DN");
            }
        }
    }
    assert_eq!(must_fail, 18);

    let may_succeed_1 = entry(&records, "cn=May Succeed 1,ou=LDAPv2,dc=example,dc=com");
    assert_eq!(texts(may_succeed_1, "member"), [""], "`member:  ` is only fill");
    let uid = entry(&records, "cn=Name and Optional UID,ou=Related Syntaxes,dc=example,dc=com");
    assert_eq!(texts(uid, "uniqueMember")[1], "#'1'B");
}

#[test]
fn test_lang_options_are_kept() {
    let records = read_ok("test-lang.ldif");
    let attrs = entry(&records, "dc=example,dc=com");
    assert_eq!(texts(attrs, "o"), ["Example, Inc."]);
    assert_eq!(texts(attrs, "o;lang-zz;lang-y;lang-yy;lang-xx;lang-x;lang-z"), ["Example, Inc."]);
    assert_eq!(texts(attrs, "name;lang-en-us"), ["Billy Ray", "Billy Bob"]);
    assert_eq!(texts(attrs, "cn;lang-en-US"), ["Billy Ray"]);
    assert_eq!(texts(attrs, "sn;lang-en-us;lang-en-gb"), ["Billy Ray"]);
    assert_eq!(texts(attrs, "name"), ["Billy Ray"]);
    let names: Vec<&str> = attrs.canonical_order().map(|a| a.name.as_str()).collect();
    assert_eq!(names[0], "objectClass");
    // As written, but with its options in order: RFC 4512 §2.5 makes their order
    // insignificant, and one attribute has one key.
    assert!(names.contains(&"SN;lang-en-GB;lang-en-US"), "names as written: {names:?}");
}

#[test]
fn duplicate_values_are_refused_like_ldap_does() {
    let whoami = read("test-whoami.ldif");
    let errors: Vec<String> = whoami.iter().filter_map(|r| r.as_ref().err()).map(ToString::to_string).collect();
    assert_eq!(errors, ["line 328: attribute \"userpassword\" has value \"(3 bytes, not shown)\" twice"]);
    let records: Vec<LdifRecord> = whoami.into_iter().filter_map(Result::ok).collect();
    let example = entry(&records, "dc=example,dc=com");
    assert_eq!(texts(example, "objectClass").len(), 5, "objectclass and objectClass are one attribute");
    assert_eq!(texts(example, "authzTo"), ["dn:"]);

    let nis = read("nis_sample.ldif");
    let errors: Vec<&LdifError> = nis.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 31);
    assert!(errors.iter().all(|e| matches!(&e.kind, LdifErrorKind::DuplicateValue { attr, .. } if attr == "cn")));
    assert_eq!(errors[0].to_string(), "line 137: attribute \"cn\" has value \"mt-everest\" twice");
    assert!(
        errors.iter().any(|e| e.to_string() == "line 6774: attribute \"cn\" has value \"HMP\" twice"),
        "cn is case-insensitive: hmp and HMP are one value"
    );
}

#[test]
fn nis_sample_and_referrals_values() {
    let records: Vec<LdifRecord> = read("nis_sample.ldif").into_iter().filter_map(Result::ok).collect();
    let sys = entry(&records, "cn=sys,o=sgi,c=us");
    assert_eq!(texts(sys, "userPassword"), [""]);
    assert_eq!(texts(sys, "memberUid"), ["root", "bin", "sys", "adm"]);
    assert_eq!(records[1].dn().to_string(), "cn=sys,o=SGI,c=US", "spaces after commas are not kept");

    let referrals = read_ok("referrals.ldif");
    let manager = entry(&referrals, "cn=Manager,o=Example,c=US");
    assert_eq!(texts(manager, "userpassword"), ["secret"]);
    assert_eq!(texts(entry(&referrals, "o=ABC,c=US"), "ref"), ["ldap://hostA/o=abc,c=us HostA", "ldap://hostB HostB"]);
}

#[test]
fn unordered_input_is_written_in_tree_order() {
    let records = read_ok("test-unordered.ldif");
    let entries: Vec<Entry> = records
        .into_iter()
        .map(|r| match r {
            LdifRecord::Content { dn, attrs, .. } => Entry { dn, uuid: EntryUuid::default(), csn: Csn::ZERO, attrs },
            other => panic!("{other:?}"),
        })
        .collect();
    let mut out = Vec::new();
    write_entries(&mut out, &entries).unwrap();
    let text = String::from_utf8(out).unwrap();
    let written: Vec<Dn> = LdifReader::new(text.as_bytes()).map(|r| r.unwrap().dn().clone()).collect();
    assert_eq!(written.len(), 11);
    for (i, dn) in written.iter().enumerate() {
        if let Some(parent) = dn.parent().filter(|p| written.contains(p)) {
            let parent_at = written.iter().position(|d| *d == parent);
            assert!(parent_at < Some(i), "{parent} must come before {dn}");
        }
    }
    assert_eq!(written[0].to_string(), "ou=test,dc=example,dc=com");
    assert!(text.starts_with("dn: ou=test,dc=example,dc=com\nobjectClass: organizationalUnit\nou: test\n\n"));
    let michael = text.find("dn: uid=michael").unwrap();
    assert!(text[michael..].starts_with("dn: uid=michael,ou=Users,ou=test,dc=example,dc=com\nobjectClass: account\n"));
}

#[test]
fn every_readable_file_round_trips_through_canonical_output() {
    for name in [
        "nis_sample.ldif",
        "referrals.ldif",
        "test-dn.ldif",
        "test-lang.ldif",
        "test-modify.ldif",
        "test-ordered.ldif",
        "test-refint.ldif",
        "test-unordered.ldif",
        "test-whoami.ldif",
        "test.ldif",
    ] {
        let records: Vec<LdifRecord> = read(name).into_iter().filter_map(Result::ok).collect();
        let mut first = Vec::new();
        for record in &records {
            write_record(&mut first, record).unwrap();
        }
        let again: Vec<LdifRecord> =
            LdifReader::new(first.as_slice()).collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again.len(), records.len(), "{name}");
        for (a, b) in again.iter().zip(&records) {
            assert_eq!(a.clone().into_change(), b.clone().into_change(), "{name}");
            assert_eq!(a.dn().to_string(), b.dn().to_string(), "{name}");
        }
        let mut second = Vec::new();
        for record in &again {
            write_record(&mut second, record).unwrap();
        }
        assert_eq!(first, second, "{name}: canonical output is a fixed point");
        let text = String::from_utf8(first).unwrap();
        assert!(text.lines().all(|l| l.len() <= tether_protocol::ldif::FOLD_COLUMNS), "{name}");
    }
}
