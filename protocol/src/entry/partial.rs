//! An encoded entry with only the attributes a change touches decoded.
//!
//! A modification usually changes one attribute of ten, yet the provider decoded the
//! whole stored entry to plan it (its DN parsed, every attribute and value allocated into
//! a map) and encoded it whole again to store it: under a pipelined burst of
//! modifications the decode alone was an eighth of the provider's CPU. [`PartialEntry`]
//! decodes the entry's head and the attributes the caller chooses, and keeps every other
//! attribute as the bytes it was stored as, checked as a full decode checks it but not
//! built. Encoding it writes those bytes back where they were: the result is, byte for
//! byte, what encoding the whole entry with the same change would give, so a reader
//! cannot tell which way it was written. The tests pin that equivalence.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};

use super::checked::AttributeCheck;
use super::{check_decoded_attribute, Attribute, Attributes, Entry, EntryUuid};
use crate::codec::{self, CodecError, MAX_DECODE};
use crate::csn::Csn;
use crate::dn::Dn;

/// An encoded [`Entry`] split into the attributes chosen when it was decoded, which
/// [`PartialEntry::entry`] holds and the caller may change, and the rest, kept encoded.
#[derive(Debug, Clone)]
pub struct PartialEntry<'a> {
    /// Its DN, UUID and CSN, and only the chosen attributes. Changing these attributes,
    /// adding attributes that were chosen but absent, and changing the CSN are what
    /// [`PartialEntry::encode`] carries; an attribute that was not chosen must not be
    /// added here (it would be in the entry twice), and encoding refuses it.
    pub entry: Entry,
    /// Every attribute not chosen, in key order: its key and its encoding as the map
    /// wrote it (the key, then the attribute).
    kept: Vec<(&'a str, &'a [u8])>,
    /// The length of the encoding it came from, to size the new one.
    encoded_len: usize,
}

impl<'a> PartialEntry<'a> {
    /// Splits the encoded entry `bytes`, decoding the attributes whose lower-cased key
    /// `chosen` accepts. Refuses exactly the bytes decoding the whole entry refuses,
    /// with the same error.
    pub fn decode(bytes: &'a [u8], chosen: impl Fn(&str) -> bool) -> Result<Self, CodecError> {
        let ((dn, uuid, csn), mut at) = codec::decode_prefix::<(Dn, EntryUuid, Csn)>(bytes)?;
        // `Attributes` is a struct of one field, its map: the map's length, then its pairs.
        let (pairs, n) = codec::decode_prefix_seed(MapLen, &bytes[at..])?;
        at += n;
        let mut map = BTreeMap::new();
        let mut kept = Vec::new();
        let mut values: Vec<&'a [u8]> = Vec::new();
        let mut last: Option<&'a str> = None;
        for _ in 0..pairs {
            let start = at;
            let (key, n) = codec::decode_prefix::<&'a str>(&bytes[at..])?;
            at += n;
            if chosen(key) {
                let (attr, n) = codec::decode_prefix::<Attribute>(&bytes[at..])?;
                at += n;
                check_decoded_attribute(last, key, &attr.name, &attr.values).map_err(invalid)?;
                map.insert(key.to_owned(), attr);
            } else {
                values.clear();
                let (name, n) = codec::decode_prefix_seed(AttributeCheck { values: &mut values }, &bytes[at..])?;
                at += n;
                check_decoded_attribute(last, key, name, &values).map_err(invalid)?;
                kept.push((key, &bytes[start..at]));
            }
            last = Some(key);
        }
        if at < bytes.len() {
            return Err(CodecError::TrailingBytes { extra: bytes.len() - at });
        }
        let entry = Entry { dn, uuid, csn, attrs: Attributes { map } };
        Ok(Self { entry, kept, encoded_len: bytes.len() })
    }

    /// The entry's encoding, with the chosen attributes as [`PartialEntry::entry`] now
    /// holds them and the kept ones as they were: what [`codec::encode`] of the whole
    /// entry would give.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let entry = &self.entry;
        let mut out = Vec::with_capacity(self.encoded_len + 64);
        codec::encode_into(&(&entry.dn, &entry.uuid, &entry.csn), &mut out)?;
        let pairs = self.kept.len() + entry.attrs.map.len();
        codec::encode_into(&(pairs as u64), &mut out)?;
        let mut kept = self.kept.iter().peekable();
        for (key, attr) in &entry.attrs.map {
            while let Some((_, raw)) = kept.next_if(|(k, _)| *k < key.as_str()) {
                out.extend_from_slice(raw);
            }
            if kept.peek().is_some_and(|(k, _)| *k == key.as_str()) {
                return Err(CodecError::Encode(format!(
                    "attribute {:?} was not chosen when the entry was decoded, so it cannot be changed",
                    attr.name
                )));
            }
            codec::encode_into(&(key, attr), &mut out)?;
        }
        for (_, raw) in kept {
            out.extend_from_slice(raw);
        }
        if out.len() > MAX_DECODE {
            return Err(CodecError::TooLarge { len: out.len(), max: MAX_DECODE });
        }
        Ok(out)
    }
}

/// Reads the length that opens an encoded map and none of its pairs, as the format's
/// own map reader reads it (so a damaged length is refused in the same words).
struct MapLen;

impl<'de> DeserializeSeed<'de> for MapLen {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapLen {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<usize, A::Error> {
        map.size_hint().ok_or_else(|| A::Error::custom("a map of attributes must give its length"))
    }
}

/// A decoded attribute's refusal, as the full decode reports it.
fn invalid(e: super::AttributeError) -> CodecError {
    CodecError::Invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::entry::fixtures::{raw_entry, valid_entry};
    use crate::entry::Value;

    fn lower(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    }

    #[test]
    fn a_changed_attribute_is_encoded_among_the_kept_ones_as_a_whole_encode_would() {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["top".into(), "person".into()]).unwrap();
        attrs.add("cn", ["Ann".into()]).unwrap();
        attrs.add("mail", ["ann@example.com".into()]).unwrap();
        attrs.add("sn", ["Lee".into()]).unwrap();
        let entry = Entry { dn: Dn::parse("cn=Ann,dc=example").unwrap(), uuid: EntryUuid([3; 16]), csn: Csn(7), attrs };
        let bytes = codec::encode(&entry).unwrap();

        let mut partial = PartialEntry::decode(&bytes, |k| k == "mail" || k == "description").unwrap();
        assert_eq!(partial.entry.attrs.len(), 1, "only the chosen attributes present are decoded");
        assert_eq!(partial.encode().unwrap(), bytes, "unchanged, it encodes to what it was");

        partial.entry.attrs.replace("mail", vec!["lee@example.com".into()]).unwrap();
        partial.entry.attrs.add("description", ["new".into()]).unwrap();
        partial.entry.csn = Csn(8);
        let mut whole = entry.clone();
        whole.attrs.replace("mail", vec!["lee@example.com".into()]).unwrap();
        whole.attrs.add("description", ["new".into()]).unwrap();
        whole.csn = Csn(8);
        assert_eq!(partial.encode().unwrap(), codec::encode(&whole).unwrap());

        partial.entry.attrs.delete("mail", &[]).unwrap();
        whole.attrs.delete("mail", &[]).unwrap();
        assert_eq!(partial.encode().unwrap(), codec::encode(&whole).unwrap(), "a removed attribute is gone");

        partial.entry.attrs.add("sn", ["Other".into()]).unwrap();
        let refused = partial.encode().unwrap_err();
        assert!(refused.to_string().contains("\"sn\" was not chosen"), "{refused}");
    }

    /// Bytes after the entry are refused as a full decode refuses them, whichever
    /// attributes are chosen: the split accepting them would write the entry back
    /// without them, and a damaged record would be rewritten as sound without a word.
    /// (The property below cuts and damages the entry's own bytes, never adds any.)
    #[test]
    fn bytes_after_the_entry_are_refused_as_a_full_decode_refuses_them() {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["top".into()]).unwrap();
        attrs.add("cn", ["Ann".into()]).unwrap();
        let entry = Entry { dn: Dn::parse("cn=Ann,dc=example").unwrap(), uuid: EntryUuid([3; 16]), csn: Csn(7), attrs };
        let mut bytes = codec::encode(&entry).unwrap();
        bytes.extend_from_slice(b"xy");
        assert_eq!(codec::decode::<Entry>(&bytes).unwrap_err(), CodecError::TrailingBytes { extra: 2 });
        for cn_chosen in [false, true] {
            let split = PartialEntry::decode(&bytes, |k| cn_chosen && k == "cn").map(|p| p.entry);
            assert_eq!(split, Err(CodecError::TrailingBytes { extra: 2 }), "cn chosen: {cn_chosen}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// On entries with every kind of flaw, and on damaged encodings of them, the
        /// split accepts exactly what a full decode accepts, with the same error; what it
        /// accepts encodes back to the very bytes, whatever was chosen.
        #[test]
        fn the_split_agrees_with_the_full_decode(
            raw in raw_entry(),
            chosen in prop::sample::subsequence(vec!["cn", "objectclass", "mail", "sn", "2.5.4.3", "cn;lang-en"], 0..4),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = codec::encode(&raw).unwrap();
            let mut flipped = bytes.clone();
            flipped[flip.index(bytes.len())] = byte;
            let cut = &bytes[..cut.index(bytes.len())];
            for input in [&bytes[..], cut, &flipped] {
                let whole = codec::decode::<Entry>(input);
                let partial = PartialEntry::decode(input, |k| chosen.contains(&k));
                match (&whole, &partial) {
                    (Ok(whole), Ok(partial)) => {
                        prop_assert_eq!(&partial.entry.dn, &whole.dn);
                        prop_assert_eq!(partial.entry.csn, whole.csn);
                        prop_assert_eq!(partial.encode().unwrap(), codec::encode(whole).unwrap());
                    }
                    (Err(whole), Err(partial)) => prop_assert_eq!(partial, whole),
                    _ => prop_assert!(false, "full decode {:?} but split {:?}", whole.as_ref().err(), partial.as_ref().err()),
                }
            }
        }

        /// Whatever is done to the chosen attributes of a valid entry, the encoding is
        /// the one of the whole entry with the same done to it.
        #[test]
        fn a_change_to_chosen_attributes_encodes_as_the_whole_entry_changed(
            entry in valid_entry(),
            chosen in prop::sample::subsequence(vec!["cn", "objectClass", "mail", "sn", "description"], 1..4),
            replace_with in prop::collection::vec("[a-z]{1,6}", 0..3),
            csn in any::<u64>(),
        ) {
            let bytes = codec::encode(&entry).unwrap();
            let keys = lower(&chosen);
            let mut partial = PartialEntry::decode(&bytes, |k| keys.iter().any(|c| c == k)).unwrap();
            let mut whole = entry.clone();
            let values: Vec<Value> = replace_with.iter().map(|v| Value::from(v.as_str())).collect();
            for (i, name) in chosen.iter().enumerate() {
                // Replace one, delete another, add to the next: all three kinds of edit.
                let (p, w) = (&mut partial.entry.attrs, &mut whole.attrs);
                match i % 3 {
                    0 => prop_assert_eq!(p.replace(name, values.clone()), w.replace(name, values.clone())),
                    1 => prop_assert_eq!(p.delete(name, &[]), w.delete(name, &[])),
                    _ => prop_assert_eq!(p.add(name, values.clone()), w.add(name, values.clone())),
                }
            }
            partial.entry.csn = Csn(csn);
            whole.csn = Csn(csn);
            prop_assert_eq!(partial.encode().unwrap(), codec::encode(&whole).unwrap());
        }
    }
}
