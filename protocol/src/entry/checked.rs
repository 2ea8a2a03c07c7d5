//! An encoded entry checked without being built.
//!
//! A consumer stores each entry it receives as the bytes it received (the codec's
//! encoding is also the store's), and placing it needs only its name, UUID and CSN. Yet
//! the bytes must hold a valid entry before they are stored, since every later read
//! trusts them. Decoding a whole [`super::Entry`] checks them but also builds every attribute
//! (a string and a vector per attribute, a map, then freeing all of it): most of the
//! 5 microseconds a typical entry took, paid for every entry of every refresh and every
//! live change. [`CheckedEntry`] walks the same encoding with the same checks, shared
//! with the full decode, borrowing names and values where they lie, and keeps only what
//! placing the entry needs. Whatever bytes one refuses the other refuses with the same
//! error; the tests hold it to that on damaged encodings.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{check_decoded_attribute, EntryUuid};
use crate::codec::{self, CodecError};
use crate::csn::Csn;
use crate::dn::Dn;

/// An encoded [`Entry`](super::Entry) that passed every check decoding it would make:
/// its name, UUID and CSN, without its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEntry {
    /// Its name, parsed.
    pub dn: Dn,
    /// Its identity.
    pub uuid: EntryUuid,
    /// The CSN of its last change.
    pub csn: Csn,
}

impl CheckedEntry {
    /// Checks the entry at the start of `bytes`, saying how many bytes it took.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        codec::decode_prefix(bytes)
    }
}

/// The field names of the derived `Deserialize` of `Entry`, handed to the format as it
/// does (bincode ignores them; a self-describing format would not).
const ENTRY_FIELDS: &[&str] = &["dn", "uuid", "csn", "attrs"];

impl<'de> Deserialize<'de> for CheckedEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Entry", ENTRY_FIELDS, EntryVisitor)
    }
}

/// Reads an entry's four fields in order, as the derived visitor of `Entry` does.
struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = CheckedEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Entry")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CheckedEntry, A::Error> {
        let missing = |i| A::Error::invalid_length(i, &"struct Entry with 4 elements");
        let dn: Dn = seq.next_element()?.ok_or_else(|| missing(0))?;
        let uuid: EntryUuid = seq.next_element()?.ok_or_else(|| missing(1))?;
        let csn: Csn = seq.next_element()?.ok_or_else(|| missing(2))?;
        seq.next_element_seed(AttributesCheck)?.ok_or_else(|| missing(3))?;
        Ok(CheckedEntry { dn, uuid, csn })
    }
}

/// `Attributes`: a struct of one field, the map.
struct AttributesCheck;

impl<'de> DeserializeSeed<'de> for AttributesCheck {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("Attributes", &["map"], self)
    }
}

impl<'de> Visitor<'de> for AttributesCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Attributes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        seq.next_element_seed(MapCheck)?.ok_or_else(|| A::Error::invalid_length(0, &"struct Attributes with 1 field"))
    }
}

/// The attribute map, each attribute checked as it comes.
struct MapCheck;

impl<'de> DeserializeSeed<'de> for MapCheck {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // One buffer for every attribute's values, where the full decode allocates a
        // vector (and a copy of each value) per attribute.
        let mut values: Vec<&'de [u8]> = Vec::new();
        let mut last: Option<&'de str> = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            values.clear();
            let name = map.next_value_seed(AttributeCheck { values: &mut values })?;
            check_decoded_attribute(last, key, name, &values).map_err(A::Error::custom)?;
            last = Some(key);
        }
        Ok(())
    }
}

/// One `Attribute { name, values }`: gives its name and leaves its values in `values`.
pub(super) struct AttributeCheck<'a, 'de> {
    pub(super) values: &'a mut Vec<&'de [u8]>,
}

impl<'de> DeserializeSeed<'de> for AttributeCheck<'_, 'de> {
    type Value = &'de str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<&'de str, D::Error> {
        deserializer.deserialize_struct("Attribute", &["name", "values"], self)
    }
}

impl<'de> Visitor<'de> for AttributeCheck<'_, 'de> {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Attribute")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<&'de str, A::Error> {
        let missing = |i| A::Error::invalid_length(i, &"struct Attribute with 2 elements");
        let name: &'de str = seq.next_element()?.ok_or_else(|| missing(0))?;
        seq.next_element_seed(ValuesInto { values: self.values })?.ok_or_else(|| missing(1))?;
        Ok(name)
    }
}

/// A sequence of values, each borrowed where it lies.
struct ValuesInto<'a, 'de> {
    values: &'a mut Vec<&'de [u8]>,
}

impl<'de> DeserializeSeed<'de> for ValuesInto<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ValuesInto<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<ValueBytes<'de>>()? {
            self.values.push(value.0);
        }
        Ok(())
    }
}

/// One value's octets, borrowed.
struct ValueBytes<'de>(&'de [u8]);

impl<'de> Deserialize<'de> for ValueBytes<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(deserializer).map(ValueBytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::entry::fixtures::{raw_entry, RawEntry};
    use crate::entry::Entry;

    /// What a full decode keeps of what the check keeps.
    fn checked_part(bytes: &[u8]) -> Result<CheckedEntry, CodecError> {
        codec::decode::<Entry>(bytes).map(|e| CheckedEntry { dn: e.dn, uuid: e.uuid, csn: e.csn })
    }

    fn check_all(bytes: &[u8]) -> Result<CheckedEntry, CodecError> {
        match CheckedEntry::decode_prefix(bytes)? {
            (entry, n) if n == bytes.len() => Ok(entry),
            (_, n) => Err(CodecError::TrailingBytes { extra: bytes.len() - n }),
        }
    }

    #[test]
    fn a_valid_entry_checks_as_it_decodes() {
        let mut attrs = crate::entry::Attributes::new();
        attrs.add("objectClass", ["top".into(), "person".into(), "inetOrgPerson".into()]).unwrap();
        attrs.add("cn", ["John  Smith".into(), "Johnny".into()]).unwrap();
        attrs.add("jpegPhoto", [crate::entry::Value::from_bytes(vec![0xff, 0xd8, 0x00])]).unwrap();
        let entry = Entry {
            dn: Dn::parse("cn=John Smith,ou=People,dc=example,dc=com").unwrap(),
            uuid: EntryUuid::new_random(),
            csn: Csn(99),
            attrs,
        };
        let bytes = codec::encode(&entry).unwrap();
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"next");
        let (checked, n) = CheckedEntry::decode_prefix(&longer).unwrap();
        assert_eq!(n, bytes.len(), "it takes exactly the entry");
        assert_eq!(checked, CheckedEntry { dn: entry.dn, uuid: entry.uuid, csn: entry.csn });
    }

    #[test]
    fn each_broken_invariant_is_refused_as_decoding_refuses_it() {
        let good = |key: &str, name: &str, values: &[&str]| {
            (key.to_owned(), (name.to_owned(), values.iter().map(|v| v.as_bytes().to_vec()).collect::<Vec<_>>()))
        };
        let cases = [
            vec![good("Cn", "Cn", &["a"])],
            vec![good("cn", "cn", &["a"]), good("cn", "cn", &["b"])],
            vec![good("sn", "sn", &["a"]), good("cn", "cn", &["b"])],
            vec![good("c n", "c n", &["a"])],
            vec![good("cn", "cn", &[])],
            vec![good("cn", "cn", &["A b", "a  B"])],
            vec![good("cn", "cn", &["top", "TOP"])],
        ];
        for attrs in cases {
            let raw = RawEntry { dn: "cn=a".into(), uuid: [7; 16], csn: 1, attrs };
            let bytes = codec::encode(&raw).unwrap();
            let refused = checked_part(&bytes).unwrap_err();
            assert_eq!(check_all(&bytes).unwrap_err(), refused, "{raw:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// On entries with every kind of flaw, and on damaged encodings of them, the
        /// check accepts exactly what a full decode accepts, with the same error, and
        /// keeps the same name, UUID and CSN.
        #[test]
        fn the_check_agrees_with_the_full_decode(
            raw in raw_entry(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = codec::encode(&raw).unwrap();
            prop_assert_eq!(check_all(&bytes), checked_part(&bytes));
            let cut = cut.index(bytes.len());
            prop_assert_eq!(check_all(&bytes[..cut]), checked_part(&bytes[..cut]));
            let mut flipped = bytes.clone();
            flipped[flip.index(bytes.len())] = byte;
            prop_assert_eq!(check_all(&flipped), checked_part(&flipped));
        }
    }
}
