//! LDIF (RFC 2849): the text form of entries and changes that Tether reads (`load`,
//! `write`) and prints (`search`), and that other directories' tools read and write.
//!
//! - [`reader`]: [`LdifReader`], a streaming parser over any `BufRead`, and [`parse_str`].
//! - [`writer`]: canonical output ([`write_entries`], [`write_entry`], [`write_change`]):
//!   the same data always gives byte-identical text that `slapadd`/`ldapadd` load.
//! - [`error`]: [`LdifError`], which always names the 1-based line and the reason.
//!
//! What is read, what is written and what is refused (and why) is described in
//! `docs/ldif.md`. In short: `:<` URL values and `control:` lines are refused;
//! everything else in RFC 2849 is read, and so is the RFC 4525 `increment:` modify
//! operation.
//!
//! ```
//! use tether_protocol::ldif::{parse_str, write_entry, LdifRecord};
//!
//! let records = parse_str("dn: cn=a,dc=example\nobjectClass: person\ncn: a\nsn:: IEplbnNlbiA=\n")?;
//! let [LdifRecord::Content { dn, attrs, line }] = records.as_slice() else {
//!     return Err("expected one content record".into());
//! };
//! assert_eq!(*line, 1);
//! assert_eq!(attrs.values("sn")[0].as_str(), Some(" Jensen "));
//! let mut out = Vec::new();
//! write_entry(&mut out, dn, attrs)?;
//! assert_eq!(out, b"dn: cn=a,dc=example\nobjectClass: person\ncn: a\nsn:: IEplbnNlbiA=\n\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod reader;
pub mod writer;

pub(crate) use error::shorten;
pub use error::{LdifError, LdifErrorKind};
pub use reader::{parse_str, LdifReader};
pub use writer::{is_safe_string, write_change, write_changes, write_entries, write_entry, write_record, FOLD_COLUMNS};

use crate::change::Change;
use crate::dn::Dn;
use crate::entry::Attributes;

/// Largest record the reader holds in memory: the sum of a record's unfolded lines,
/// comments excluded. A longer record (or a single physical line longer than this) is
/// refused with [`LdifErrorKind::RecordTooLarge`]; the reader then skips the rest of that
/// record without storing it. Each line also counts a small fixed overhead, so a record
/// of millions of tiny lines is bounded too. A reader's memory is therefore a small
/// multiple of this limit (the record, one read-ahead line, the parsed values),
/// whatever the size of the input.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// The only LDIF version there is (RFC 2849 `version: 1`).
pub const LDIF_VERSION: &str = "1";

/// The RFC 2849 keywords (line names), matched without regard to case when read and
/// written in these spellings.
pub(crate) mod keyword {
    /// Names the record's entry.
    pub const DN: &str = "dn";
    /// Optional first line of a file.
    pub const VERSION: &str = "version";
    /// Makes a record a change record.
    pub const CHANGETYPE: &str = "changetype";
    /// An LDAP control in a change record (refused).
    pub const CONTROL: &str = "control";
    /// `changetype:` values.
    pub const ADD: &str = "add";
    /// `changetype:` value, and a modify section.
    pub const DELETE: &str = "delete";
    /// `changetype:` value.
    pub const MODIFY: &str = "modify";
    /// `changetype:` value for a rename/move (the one Tether writes).
    pub const MODRDN: &str = "modrdn";
    /// `changetype:` value, synonym of `modrdn`.
    pub const MODDN: &str = "moddn";
    /// A modify section.
    pub const REPLACE: &str = "replace";
    /// RFC 4525 modify section (refused).
    pub const INCREMENT: &str = "increment";
    /// The new RDN of a modrdn record.
    pub const NEWRDN: &str = "newrdn";
    /// Whether a modrdn record removes the old RDN values.
    pub const DELETEOLDRDN: &str = "deleteoldrdn";
    /// The new parent of a modrdn record.
    pub const NEWSUPERIOR: &str = "newsuperior";
    /// The line that ends a modify section.
    pub const SECTION_END: &str = "-";
}

/// One record of an LDIF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdifRecord {
    /// An entry as it is (RFC 2849 `ldif-attrval-record`): what `search` prints and
    /// `load` reads.
    Content {
        /// The entry's name.
        dn: Dn,
        /// Its attributes, names checked and values distinct.
        attrs: Attributes,
        /// The 1-based line of its `dn:`, so a later refusal (by the store) can point at it.
        line: usize,
    },
    /// A change request (RFC 2849 `ldif-change-record`, a `changetype:` record): what
    /// `write` sends to the provider.
    Change {
        /// The request.
        change: Change,
        /// The 1-based line of its `dn:`, so a refusal can point at it.
        line: usize,
    },
}

impl LdifRecord {
    /// The 1-based line where the record's `dn:` is.
    pub fn line(&self) -> usize {
        match self {
            LdifRecord::Content { line, .. } | LdifRecord::Change { line, .. } => *line,
        }
    }

    /// The DN the record is about.
    pub fn dn(&self) -> &Dn {
        match self {
            LdifRecord::Content { dn, .. } => dn,
            LdifRecord::Change { change, .. } => change.dn(),
        }
    }

    /// The record as a write request: a content record is an add, as `ldapadd` reads it.
    pub fn into_change(self) -> Change {
        match self {
            LdifRecord::Content { dn, attrs, .. } => Change::Add { dn, attrs },
            LdifRecord::Change { change, .. } => change,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use proptest::prelude::*;

    use super::*;
    use crate::change::{ModOp, Modification};
    use crate::dn::{Ava, Rdn};
    use crate::entry::Value;

    /// What a record says, without its line number: kind plus the full `Debug` of the
    /// change (which shows DNs as written, attribute names as written and value octets).
    fn meaning(record: &LdifRecord) -> (bool, String) {
        (matches!(record, LdifRecord::Content { .. }), format!("{:?}", record.clone().into_change()))
    }

    fn write_all(records: &[LdifRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            write_record(&mut out, record).unwrap();
        }
        out
    }

    fn read_all(bytes: &[u8], buffer: usize) -> Vec<LdifRecord> {
        LdifReader::new(BufReader::with_capacity(buffer, bytes))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("own output must read back: {e}\n{}", String::from_utf8_lossy(bytes)))
    }

    fn assert_round_trip(records: &[LdifRecord]) {
        let written = write_all(records);
        let read = read_all(&written, written.len().max(1));
        assert_eq!(read.iter().map(meaning).collect::<Vec<_>>(), records.iter().map(meaning).collect::<Vec<_>>());
        for (a, b) in read.iter().zip(records) {
            assert_eq!(a.dn().to_string(), b.dn().to_string());
        }
        assert_eq!(write_all(&read), written, "writing what was read gives the same bytes");
    }

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap()
    }

    fn content(d: &str, pairs: &[(&str, &[u8])]) -> LdifRecord {
        let mut attrs = Attributes::new();
        for (name, value) in pairs {
            attrs.add(name, [Value::from_bytes(value.to_vec())]).unwrap();
        }
        LdifRecord::Content { dn: dn(d), attrs, line: 0 }
    }

    /// A run of spaces folded onto a line by itself would read as the blank line that
    /// ends a record: a `search --uuids` backup holding one was refused by `load`
    /// (found by a walkthrough: 300 spaces in a description, 160 in a DN). Every run
    /// length around a line's width, at every fold offset, must come back.
    #[test]
    fn round_trip_runs_of_spaces_at_every_fold_offset() {
        let mut records = Vec::new();
        for run in [74, 75, 76, 150, 151, 300] {
            for offset in 0..76 {
                let value = format!("{}{}y", "x".repeat(offset + 1), " ".repeat(run));
                let d = format!("cn=a{} b{offset}x{run},dc=example,dc=com", " ".repeat(run));
                records.push(content(&d, &[("objectClass", b"person"), ("description", value.as_bytes())]));
            }
        }
        assert_round_trip(&records);
    }

    #[test]
    fn round_trip_folded_base64_binary_and_options() {
        let long = "x".repeat(300);
        let binary: Vec<u8> = (0..=255u8).rev().collect();
        assert_round_trip(&[
            content("dc=example,dc=com", &[("objectClass", b"domain"), ("dc", b"example")]),
            content(
                "cn=Lučić\\, Ivan+uid=\\#1,ou=Ljudi,dc=example,dc=com",
                &[
                    ("objectClass", b"person"),
                    ("cn", "Lučić, Ivan".as_bytes()),
                    ("description", long.as_bytes()),
                    ("description", b" leading and trailing "),
                    ("jpegPhoto", &binary),
                    ("cn;lang-hr", "Ivan Lučić".as_bytes()),
                    ("o;lang-zz;lang-y", b"Example, Inc."),
                    ("userPassword", b"\0secret\r\n"),
                    ("title", b""),
                    ("seeAlso", b":colon first"),
                    ("member", b"<angle first"),
                ],
            ),
            content(&format!("cn={long},dc=example,dc=com"), &[("cn", long.as_bytes())]),
        ]);
    }

    #[test]
    fn round_trip_every_change_kind() {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["person".into()]).unwrap();
        attrs.add("cn", ["a".into(), Value::from_bytes(vec![0xc3, 0x28])]).unwrap();
        let records: Vec<LdifRecord> = [
            Change::Add { dn: dn("cn=a,dc=x"), attrs },
            Change::Modify {
                dn: dn("cn=a,dc=x"),
                mods: vec![
                    Modification { op: ModOp::Add, attr: "mail;x-home".into(), values: vec!["a@x".into()] },
                    Modification { op: ModOp::Delete, attr: "phone".into(), values: vec![] },
                    Modification { op: ModOp::Delete, attr: "mail".into(), values: vec![" b@x ".into()] },
                    Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![] },
                    Modification {
                        op: ModOp::Replace,
                        attr: "photo".into(),
                        values: vec![Value::from_bytes(vec![0; 90])],
                    },
                ],
            },
            Change::Modify { dn: dn("cn=a,dc=x"), mods: vec![] },
            Change::ModDn {
                dn: dn("cn=a,dc=x"),
                new_rdn: Rdn::parse("cn=Ärger+sn=b").unwrap(),
                delete_old_rdn: true,
                new_superior: Some(dn("ou=neu,dc=x")),
            },
            Change::ModDn {
                dn: dn("cn=b,dc=x"),
                new_rdn: Rdn::parse("cn=c").unwrap(),
                delete_old_rdn: false,
                new_superior: None,
            },
            Change::ModDn {
                dn: dn("cn=c,dc=x"),
                new_rdn: Rdn::parse("cn=d").unwrap(),
                delete_old_rdn: false,
                new_superior: Some(Dn::root()),
            },
            Change::Delete { dn: dn("cn=d") },
        ]
        .into_iter()
        .map(|change| LdifRecord::Change { change, line: 0 })
        .collect();
        assert_round_trip(&records);
    }

    #[test]
    fn foreign_ldif_rewrites_canonically() {
        let foreign = "version: 1\r\n\r\n# comment\r\ndn: CN=John Smith\\2C III,dc=example\r\nsn: Smith\r\n\
                       objectclass: person\r\ncn: John Smith, III\r\ndescription: fol\r\n ded\r\n";
        let records = parse_str(foreign).unwrap();
        let text = String::from_utf8(write_all(&records)).unwrap();
        assert_eq!(
            text,
            "dn: CN=John Smith\\, III,dc=example\nobjectclass: person\ncn: John Smith, III\ndescription: folded\nsn: Smith\n\n"
        );
        assert_eq!(
            parse_str(&text).unwrap().iter().map(meaning).collect::<Vec<_>>(),
            records.iter().map(meaning).collect::<Vec<_>>()
        );
    }

    fn attr_name() -> impl Strategy<Value = String> {
        // `dn` is not an attribute. `changetype` and `control` are, but the writer must
        // not put them first in a content record, where they read as LDIF keywords.
        let plain = "[a-zA-Z][a-zA-Z0-9-]{0,8}(;[a-zA-Z0-9-]{1,6}){0,2}"
            .prop_filter("not the dn", |n| !n.split(';').next().unwrap_or_default().eq_ignore_ascii_case("dn"));
        prop_oneof![
            8 => plain,
            1 => prop::sample::select(vec!["changetype".to_owned(), "ChangeType".to_owned(), "control".to_owned()]),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[ -~]{0,40}".prop_map(Value::from),
            "[a-z ]{60,200}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..120).prop_map(Value::from_bytes),
        ]
    }

    fn rdn() -> impl Strategy<Value = Rdn> {
        let ava = ("[a-zA-Z][a-zA-Z0-9-]{0,5}", prop_oneof!["[ -~]{0,12}", any::<String>()]);
        proptest::collection::vec(ava, 1..3).prop_filter_map("an RDN names each type once", |avas| {
            let avas: Vec<Ava> =
                avas.iter().map(|(attr, value)| Ava::new(attr, value)).collect::<Result<_, _>>().ok()?;
            Rdn::new(avas).ok()
        })
    }

    fn any_dn() -> impl Strategy<Value = Dn> {
        proptest::collection::vec(rdn(), 0..4).prop_map(Dn::from_rdns)
    }

    fn attributes() -> impl Strategy<Value = Attributes> {
        proptest::collection::vec((attr_name(), proptest::collection::vec(value(), 1..4)), 1..6)
            .prop_map(|list| {
                let mut attrs = Attributes::new();
                for (name, values) in list {
                    for value in values {
                        // A value equal to one already there is simply not added.
                        let _ = attrs.add(&name, [value]);
                    }
                }
                attrs
            })
            .prop_filter("an entry LDIF can hold: not only keyword-named attributes with a changetype", |attrs| {
                attrs.iter().any(|a| !["changetype", "control"].iter().any(|k| a.name.eq_ignore_ascii_case(k)))
                    || attrs.get("changetype").is_none()
            })
    }

    fn modification() -> impl Strategy<Value = Modification> {
        // An add adds at least one value (the reader refuses one without); a delete or
        // replace of none is the whole attribute. A section names each value once: the
        // reader refuses one twice (the store would refuse the second), and two values
        // drawn alike (two empty ones) failed the round trip now and then.
        let values = |least| {
            proptest::collection::vec(value(), least..3).prop_filter("a section names each value once", |values| {
                values.iter().enumerate().all(|(i, v)| !values[..i].contains(v))
            })
        };
        let op_and_values = prop_oneof![
            (Just(ModOp::Add), values(1)),
            (Just(ModOp::Delete), values(0)),
            (Just(ModOp::Replace), values(0)),
        ];
        (op_and_values, attr_name()).prop_map(|((op, values), attr)| Modification { op, attr, values })
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any_dn(), attributes()).prop_map(|(dn, attrs)| Change::Add { dn, attrs }),
            any_dn().prop_map(|dn| Change::Delete { dn }),
            (any_dn(), proptest::collection::vec(modification(), 0..4))
                .prop_map(|(dn, mods)| Change::Modify { dn, mods }),
            (any_dn(), rdn(), any::<bool>(), proptest::option::of(any_dn())).prop_map(
                |(dn, new_rdn, delete_old_rdn, new_superior)| Change::ModDn {
                    dn,
                    new_rdn,
                    delete_old_rdn,
                    new_superior
                }
            ),
        ]
    }

    fn record() -> impl Strategy<Value = LdifRecord> {
        prop_oneof![
            (any_dn(), attributes()).prop_map(|(dn, attrs)| LdifRecord::Content { dn, attrs, line: 0 }),
            change().prop_map(|change| LdifRecord::Change { change, line: 0 }),
        ]
    }

    /// Fragments that make up LDIF, so random input reaches deep into the parser.
    fn ldif_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just("dn: ".to_owned()),
            Just("dn:: ".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\n\n".to_owned()),
            Just(" ".to_owned()),
            Just("#".to_owned()),
            Just(":".to_owned()),
            Just("::".to_owned()),
            Just(":<".to_owned()),
            Just("-\n".to_owned()),
            Just("version: 1\n".to_owned()),
            Just("changetype: ".to_owned()),
            Just("control: 1.2.3 true\n".to_owned()),
            Just("add".to_owned()),
            Just("delete".to_owned()),
            Just("modify".to_owned()),
            Just("modrdn".to_owned()),
            Just("moddn".to_owned()),
            Just("replace: ".to_owned()),
            Just("increment: ".to_owned()),
            Just("newrdn: ".to_owned()),
            Just("deleteoldrdn: ".to_owned()),
            Just("newsuperior: ".to_owned()),
            Just("cn=a,dc=x".to_owned()),
            Just("cn".to_owned()),
            Just("=".to_owned()),
            Just(",".to_owned()),
            Just("+".to_owned()),
            Just("\\".to_owned()),
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("YWJj".to_owned()),
            Just("w4k=".to_owned()),
            "[ -~]{0,8}",
            any::<String>(),
        ];
        proptest::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat().into_bytes())
    }

    proptest! {
        #[test]
        fn written_records_read_back_equal(
            records in proptest::collection::vec(record(), 0..6),
            buffer in 1usize..32,
        ) {
            let written = write_all(&records);
            let read = read_all(&written, buffer);
            prop_assert_eq!(read.iter().map(meaning).collect::<Vec<_>>(), records.iter().map(meaning).collect::<Vec<_>>());
            for (a, b) in read.iter().zip(&records) {
                prop_assert_eq!(a.dn().to_string(), b.dn().to_string());
            }
            prop_assert_eq!(write_all(&read), written);
            let text = String::from_utf8(write_all(&records)).unwrap_or_default();
            prop_assert!(text.is_ascii());
            prop_assert!(text.lines().all(|l| l.len() <= FOLD_COLUMNS));
        }

        /// The `ldif` fuzz target's properties on random bytes: no panic, errors name
        /// existing lines, buffering changes nothing, and what is read is written and
        /// reads back the same.
        #[test]
        fn arbitrary_bytes_keep_the_ldif_properties(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            crate::properties::ldif(&bytes);
        }

        /// The same properties on LDIF-like text, which reaches far deeper.
        #[test]
        fn ldif_like_garbage_keeps_the_ldif_properties(bytes in ldif_soup()) {
            crate::properties::ldif(&bytes);
        }
    }
}
