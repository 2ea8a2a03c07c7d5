//! Test fixtures shared by the entry codecs' tests: entries encoded field by field, with
//! the flaws only hand-written bytes can have, and valid entries built as the directory
//! builds them.

use proptest::prelude::*;
use serde::Serialize;

use super::{Attributes, Entry, EntryUuid, Value};
use crate::csn::Csn;
use crate::dn::Dn;

/// An entry's encoding written field by field, so a test can write what `Attributes`
/// never would: misfiled, repeated or unordered keys, bad names, no values,
/// duplicate values, a DN that does not parse. Encodes as `Entry` does: bincode
/// writes a map as its length then its pairs, and a value as its length then its
/// octets, as it writes these sequences.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RawEntry {
    pub(crate) dn: String,
    pub(crate) uuid: [u8; 16],
    pub(crate) csn: u64,
    pub(crate) attrs: Vec<(String, RawAttribute)>,
}

/// `Attribute { name, values }`, each value as raw octets.
pub(crate) type RawAttribute = (String, Vec<Vec<u8>>);

/// Entries with every kind of flaw a peer or a damaged disk could give, and many
/// without one.
pub(crate) fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let name = prop_oneof![
        4 => prop::sample::select(vec!["cn", "CN", "objectClass", "mail", "cn;lang-en", "2.5.4.3", "sn"]),
        1 => prop::sample::select(vec!["", "dn", "1cn", "c n", "cn;", "é"]),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec!["a", "A", "b", "x y", "X  Y", " x y", "top", "TOP", "ÉLODIE", "élodie"])
            .prop_map(|v| v.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..4),
    ];
    let attr = (name, any::<bool>(), prop::collection::vec(value, 0..5)).prop_map(|(name, keyed_right, values)| {
        let key = if keyed_right { name.to_ascii_lowercase() } else { name.to_owned() };
        (key, (name.to_owned(), values))
    });
    let dn = prop_oneof![
        4 => prop::sample::select(vec!["cn=a,dc=example", "CN = A , DC=Example", "uid=x+cn=y,ou=p", ""]),
        1 => prop::sample::select(vec!["cn", "=x", "cn=a,,dc=b", "cn=\\zz"]),
    ];
    let sorted = prop::collection::vec(attr.clone(), 0..6).prop_map(|mut attrs| {
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        attrs
    });
    let attrs = prop_oneof![4 => sorted, 1 => prop::collection::vec(attr, 0..6)];
    (dn, any::<[u8; 16]>(), any::<u64>(), attrs).prop_map(|(dn, uuid, csn, attrs)| RawEntry {
        dn: dn.to_owned(),
        uuid,
        csn,
        attrs,
    })
}

/// Valid entries: a few attributes, some with several values, named as directories
/// name them, under a DN whose RDN value they hold.
pub(crate) fn valid_entry() -> impl Strategy<Value = Entry> {
    let names =
        prop::sample::subsequence(vec!["cn", "objectClass", "mail", "sn", "telephoneNumber", "Description"], 1..6);
    let values = prop::collection::vec("[a-zA-Z ]{1,8}", 1..4);
    (names, prop::collection::vec(values, 6), any::<[u8; 16]>(), any::<u64>()).prop_map(|(names, values, uuid, csn)| {
        let mut attrs = Attributes::new();
        for (name, values) in names.iter().zip(values) {
            // Values equal under the matching rule are refused; keep the distinct ones.
            for value in values {
                let _refused_if_already_held = attrs.add(name, [Value::from(value.as_str())]);
            }
        }
        attrs.add_if_absent("uid", Value::from("x1")).expect("a fresh attribute takes a value");
        Entry {
            dn: Dn::parse("uid=x1,ou=People,dc=example").expect("the DN parses"),
            uuid: EntryUuid(uuid),
            csn: Csn(csn),
            attrs,
        }
    })
}
