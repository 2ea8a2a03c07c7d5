//! Entries: the unit the store keeps and replication moves. An [`Entry`] is a DN, a
//! stable [`EntryUuid`], the [`Csn`] of its last change, and [`Attributes`].
//!
//! Attribute names are case-insensitive (kept as first written, keyed lower-cased) and
//! values are octet strings compared case-insensitively when they are text: Tether has
//! no schema, so every attribute gets `caseIgnoreMatch`, the rule most directory
//! attributes use, and binary values compare exactly.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::csn::Csn;
use crate::dn::{is_plain_ascii, normalize_text, Dn};

mod checked;
#[cfg(test)]
mod fixtures;
pub mod operational;
mod partial;
pub use checked::CheckedEntry;
pub use partial::PartialEntry;

/// The entryUUID: assigned by the provider when an entry is added and never changed, so
/// replication can follow an entry through renames and moves by identity, not by name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct EntryUuid(pub [u8; 16]);

impl EntryUuid {
    /// A fresh random (v4) UUID.
    pub fn new_random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// A fresh time-ordered (v7) UUID, later than any made before in this process: what
    /// the provider assigns. Entries added together then sit together in the UUID index
    /// (a store key), so a bulk load appends to the index instead of inserting at random
    /// places, and a replica applying changes to entries created together (deleting a
    /// branch, say) reads a few index pages instead of one per entry: 1,000 deletes on a
    /// 100,000-entry replica took 44 ms instead of 71 to 81 (docs/benchmarks.md).
    pub fn new_time_ordered() -> Self {
        Self(*uuid::Uuid::now_v7().as_bytes())
    }

    /// The 16 raw bytes, used as the store key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for EntryUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for EntryUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryUuid({self})")
    }
}

impl FromStr for EntryUuid {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(*uuid::Uuid::parse_str(s)?.as_bytes()))
    }
}

/// One attribute value: an octet string, text when it is UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value(Vec<u8>);

/// Serialized as one byte string (length, then the octets), not as a sequence of
/// one-byte elements: the codec copies it in one go instead of byte by byte.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute value (bytes)")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Value(out))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

impl Value {
    /// Wraps raw octets (binary values such as `jpegPhoto` or `userPassword`).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The raw octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The comparison form: case-folded with insignificant spaces removed for text, the
    /// octets themselves for binary.
    pub fn normalized(&self) -> Vec<u8> {
        normalized(&self.0)
    }

    /// Equality under the matching rule (see the module docs).
    pub fn matches(&self, other: &Value) -> bool {
        self.0 == other.0 || self.normalized() == other.normalized()
    }
}

/// The comparison form of a value's octets (see [`Value::normalized`]).
fn normalized(bytes: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(text) => normalize_text(text).into_bytes(),
        Err(_) => bytes.to_vec(),
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self(s.into_bytes())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

/// One attribute: its name as first written and its values in insertion order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The name as written (`objectClass`, `cn;lang-en`); lookups ignore case.
    pub name: String,
    /// The values, distinct under [`Value::matches`].
    pub values: Vec<Value>,
}

/// Why a set of attribute values was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// An attribute name that is not a descriptor or OID, optionally with `;options`.
    #[error("invalid attribute name {0:?}")]
    InvalidName(String),
    /// An LDAP attribute-selection keyword (`*`, `+`) in a list of attributes: LDAP
    /// tools take them, so they are named for what they are, not "invalid". (`1.1`,
    /// "no attributes", is a valid OID, and naming no attribute Tether holds, keeps
    /// objectClass alone, which comes closest.)
    #[error(
        "{keyword:?} is LDAP's selection of {selects} in a search, not an attribute name: leave the list out to keep \
         every attribute (Tether keeps no operational ones)",
        selects = if keyword == "+" { "operational attributes" } else { "all user attributes" }
    )]
    SelectionKeyword {
        /// `*` or `+`.
        keyword: String,
    },
    /// The same value given twice for one attribute. Values of a password attribute are
    /// not shown ([`shown_value`]).
    #[error("attribute {attr:?} already has value {value:?}")]
    DuplicateValue { attr: String, value: String },
    /// A modify/delete of a value the attribute does not hold.
    #[error("attribute {attr:?} has no value {value:?}")]
    NoSuchValue { attr: String, value: String },
    /// A modify/delete of an attribute the entry does not hold.
    #[error("no such attribute {0:?}")]
    NoSuchAttribute(String),
    /// Decoded attributes with one filed under a key that is not its lower-cased name:
    /// the bytes were not written by [`Attributes`] (damaged, or a hostile peer), and
    /// lookups by name would miss it.
    #[error("attribute {name:?} is filed under the key {key:?}, not its lower-cased name")]
    MisfiledAttribute {
        /// The attribute's name.
        name: String,
        /// The key it came under.
        key: String,
    },
    /// Decoded attributes naming one attribute twice (or out of order): the bytes were
    /// not written by [`Attributes`].
    #[error("attribute {0:?} is repeated or out of key order")]
    DuplicateAttribute(String),
    /// Decoded attributes with one that has no values; an attribute always has one.
    #[error("attribute {0:?} has no values")]
    NoValues(String),
    /// An increment (or a value it would change) that is not an INTEGER (RFC 4517
    /// 3.3.16: an optional `-`, then digits without a leading zero). Made by
    /// [`AttributeError::not_an_integer`], which hides a password's value.
    #[error("cannot increment {attr:?}: {value:?} is not an integer")]
    NotAnInteger {
        /// The attribute.
        attr: String,
        /// The value (shortened, or only its length for a password).
        value: String,
    },
    /// An increment (or a value it would change) that is an integer, but one longer
    /// than the 128 bits Tether computes in.
    #[error("cannot increment {attr:?}: {value:?} is an integer beyond the 128 bits Tether computes in")]
    IntegerTooLarge {
        /// The attribute.
        attr: String,
        /// The value (shortened, or only its length for a password).
        value: String,
    },
    /// An increment whose result does not fit the 128 bits Tether computes in.
    #[error("cannot increment {attr:?}: {value} + {by} is out of range")]
    IncrementOverflow {
        /// The attribute.
        attr: String,
        /// The value held.
        value: i128,
        /// The increment.
        by: i128,
    },
}

/// The INTEGER syntax (RFC 4517 3.3.16), strictly: `0`, or an optional `-` and digits
/// not starting with `0`. Strict so that a value an increment wrote is the one form a
/// filter or another server compares it as (`007` and `7` would be two values to an
/// equality match here, which compares text). `None` for anything else, and for an
/// integer beyond 128 bits.
pub fn parse_integer(bytes: &[u8]) -> Option<i128> {
    if !is_integer(bytes) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Whether `bytes` has the INTEGER syntax of [`parse_integer`], of any length.
fn is_integer(bytes: &[u8]) -> bool {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    match digits {
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
        [] => false,
    }
}

impl AttributeError {
    /// Why `value` of `attr` cannot be incremented or be an increment, when
    /// [`parse_integer`] refused it: not an integer, or one too large. A password's
    /// value is not shown ([`shown_value`]): anyone who may write could otherwise read
    /// a stored password back from the refusal.
    pub fn not_an_integer(attr: &str, value: &[u8]) -> Self {
        let shown = shown_value(attr, value);
        let attr = attr.to_owned();
        if is_integer(value) {
            Self::IntegerTooLarge { attr, value: shown }
        } else {
            Self::NotAnInteger { attr, value: shown }
        }
    }
}

/// [`check_attribute_name`] as a parser of an attribute list's item (the commands'
/// `--attrs`, an agreement's `attrs`): the name itself if it is one. LDAP's selection
/// keywords are refused naming what they select.
pub fn parse_attribute_name(name: &str) -> Result<String, AttributeError> {
    if matches!(name, "*" | "+") {
        return Err(AttributeError::SelectionKeyword { keyword: name.to_owned() });
    }
    check_attribute_name(name).map(|()| name.to_owned())
}

/// A command's `--attrs` as the search keeps them, and whether they name `entryUUID`.
/// An entry's UUID is kept beside its attributes, not among them, so a list naming it
/// printed none, without a word; named, it is printed as `--uuids` prints it (a list
/// of it alone keeps `objectClass`, as every list does, and nothing else).
pub fn take_entry_uuid(attrs: Vec<String>) -> (Vec<String>, bool) {
    let is_uuid = |a: &String| a.eq_ignore_ascii_case("entryUUID");
    if !attrs.iter().any(is_uuid) {
        return (attrs, false);
    }
    let rest: Vec<String> = attrs.into_iter().filter(|a| !is_uuid(a)).collect();
    (if rest.is_empty() { vec!["objectClass".to_owned()] } else { rest }, true)
}

/// Checks `descr` or numeric OID, optionally followed by `;option` parts.
pub fn check_attribute_name(name: &str) -> Result<(), AttributeError> {
    let bad = || AttributeError::InvalidName(name.to_owned());
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let base_ok = match base.as_bytes().first() {
        Some(b) if b.is_ascii_alphabetic() => base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        Some(b) if b.is_ascii_digit() => {
            base.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    };
    // `dn` names the entry; it is never one of its attributes (LDIF would read it as a
    // second name).
    if !base_ok || base.eq_ignore_ascii_case("dn") {
        return Err(bad());
    }
    for option in parts {
        if option.is_empty() || !option.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad());
        }
    }
    Ok(())
}

/// The key an attribute description is filed under: lower-cased, its options sorted.
/// RFC 4512 §2.5 makes option order insignificant, so `sn;x-a;lang-en` and
/// `sn;lang-en;x-a` name one attribute, and must not be filed as two.
pub fn attribute_key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.matches(';').count() < 2 {
        return lower;
    }
    let mut parts: Vec<&str> = lower.split(';').collect();
    parts[1..].sort_unstable();
    parts.join(";")
}

/// `name` with its options in the order of its key, each spelled as first written: the
/// name an attribute is stored and printed under. Its key stays its lower-cased name, as
/// every decoder checks, an older one too (a consumer not yet upgraded refuses an entry
/// with an attribute filed otherwise).
fn in_key_order(name: &str) -> std::borrow::Cow<'_, str> {
    if name.matches(';').count() < 2 {
        return name.into();
    }
    let mut parts: Vec<&str> = name.split(';').collect();
    let options = &mut parts[1..];
    if options.windows(2).all(|w| w[0].to_ascii_lowercase() <= w[1].to_ascii_lowercase()) {
        return name.into();
    }
    options.sort_by_key(|o| o.to_ascii_lowercase());
    parts.join(";").into()
}

/// Whether the stored attribute filed under `key` is the one `name` describes: under
/// [`attribute_key`], or as it was filed before options were put in order (a store
/// written earlier keeps `sn;x-b;x-a` so, and a change may name it `sn;x-a;x-b`).
pub fn key_names(key: &str, name: &str) -> bool {
    key.eq_ignore_ascii_case(name) || (name.matches(';').count() >= 2 && attribute_key(key) == attribute_key(name))
}

/// Whether the attribute description `held` is `wanted` or one of its subtypes: the same
/// type with at least the same options, in any order and case (RFC 4512 §2.5). A filter
/// on `wanted` reads the values of its subtypes, and an attribute list naming it keeps
/// them (RFC 4511 §4.5.1.8), so a replica holds what its own filter matches.
pub fn is_subtype(held: &str, wanted: &str) -> bool {
    let mut held_parts = held.split(';');
    let mut wanted_parts = wanted.split(';');
    let same_type = match (held_parts.next(), wanted_parts.next()) {
        (Some(h), Some(w)) => h.eq_ignore_ascii_case(w),
        _ => false,
    };
    same_type && wanted_parts.all(|option| held.split(';').skip(1).any(|o| o.eq_ignore_ascii_case(option)))
}

/// The attributes of an entry, keyed by lower-cased name (options sorted, see
/// [`attribute_key`]) so iteration is in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Attributes {
    /// Key -> attribute. Never holds an attribute with no values.
    map: BTreeMap<String, Attribute>,
}

/// Attributes arrive from peers and from disk, so a decoded set is checked to hold the
/// invariants of one built by [`Attributes::add`] (valid names, keyed by lower-cased
/// name, no attribute without values, values distinct), or refused naming what is
/// wrong, like a DN that does not parse. The encoding is the derived one, unchanged: the
/// map in key order. The check runs as the map is read, in one pass and without a second
/// map, since every replicated entry and every stored record read goes through it.
impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> serde::de::Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct Attributes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Attributes, A::Error> {
                let map = seq
                    .next_element_seed(CheckedMap)?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &"struct Attributes with 1 field"))?;
                Ok(Attributes { map })
            }
        }
        deserializer.deserialize_struct("Attributes", &["map"], AttributesVisitor)
    }
}

/// Reads the attribute map of an encoded [`Attributes`], checking each attribute as it
/// comes (see the `Deserialize` impl).
struct CheckedMap;

impl<'de> serde::de::DeserializeSeed<'de> for CheckedMap {
    type Value = BTreeMap<String, Attribute>;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CheckedMap {
    type Value = BTreeMap<String, Attribute>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attributes")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut sorted: Vec<(String, Attribute)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<String>()? {
            let attr: Attribute = map.next_value()?;
            let last = sorted.last().map(|(k, _)| k.as_str());
            check_decoded_attribute(last, &key, &attr.name, &attr.values).map_err(serde::de::Error::custom)?;
            sorted.push((key, attr));
        }
        // Already in order, so this builds the tree without sorting.
        Ok(sorted.into_iter().collect())
    }
}

/// The invariants of one decoded attribute, filed under `key` after `last`: what
/// [`Attributes::add`] guarantees of a set it built. Shared by the full decode and by
/// [`CheckedEntry`], so both refuse the same bytes with the same error.
fn check_decoded_attribute<V: AsRef<[u8]>>(
    last: Option<&str>,
    key: &str,
    name: &str,
    values: &[V],
) -> Result<(), AttributeError> {
    let filed_right =
        key.len() == name.len() && key.bytes().zip(name.bytes()).all(|(k, n)| k == n.to_ascii_lowercase());
    if !filed_right {
        return Err(AttributeError::MisfiledAttribute { name: name.to_owned(), key: key.to_owned() });
    }
    // Keys come in order, each once, as the map writes them: a repeated key would
    // silently replace an attribute.
    if last.is_some_and(|last| last >= key) {
        return Err(AttributeError::DuplicateAttribute(name.to_owned()));
    }
    check_attribute_name(name)?;
    match values.len() {
        0 => Err(AttributeError::NoValues(name.to_owned())),
        1 => Ok(()),
        n => {
            let at = |i: usize| values[i].as_ref();
            let dup = if n <= FEW_VALUES && (0..n).all(|i| is_plain_ascii(at(i))) {
                // A few values needing no space removed (objectClass, say): their
                // normalized forms are equal exactly when they are equal ignoring ASCII
                // case, so compare pairs instead of building each form.
                (1..n).find(|&j| (0..j).any(|i| at(i).eq_ignore_ascii_case(at(j)))).map(at)
            } else {
                let mut held = HashSet::with_capacity(n);
                (0..n).map(at).find(|v| !held.insert(normalized(v)))
            };
            match dup {
                Some(dup) => {
                    Err(AttributeError::DuplicateValue { attr: name.to_owned(), value: shown_value(name, dup) })
                }
                None => Ok(()),
            }
        }
    }
}

/// Up to how many values [`check_decoded_attribute`] compares pairwise.
const FEW_VALUES: usize = 8;

impl Attributes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key `name` is filed under here: [`attribute_key`], unless this set holds the
    /// attribute under the key it had before options were put in order (its lower-cased
    /// name as written, read from a store written earlier), so that one is found,
    /// changed and removed in whatever order a change names its options, not shadowed.
    fn key(&self, name: &str) -> String {
        let key = attribute_key(name);
        if name.matches(';').count() < 2 || self.map.contains_key(&key) {
            return key;
        }
        self.map.keys().find(|held| attribute_key(held) == key).cloned().unwrap_or(key)
    }

    /// Looks an attribute up by name, ignoring case and the order of options.
    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.map.get(&self.key(name))
    }

    /// The values of `name`, empty if absent.
    pub fn values(&self, name: &str) -> &[Value] {
        self.get(name).map(|a| a.values.as_slice()).unwrap_or(&[])
    }

    /// Whether `name` holds a value matching `value`.
    pub fn has_value(&self, name: &str, value: &Value) -> bool {
        self.values(name).iter().any(|v| v.matches(value))
    }

    /// Adds values to `name` (creating it), refusing values it already has.
    ///
    /// Takes time linear in the number of values held and added (one hash set of
    /// normalized values per call), so a 100 000-member group is built in one call
    /// instead of in quadratic time.
    pub fn add(&mut self, name: &str, values: impl IntoIterator<Item = Value>) -> Result<(), AttributeError> {
        check_attribute_name(name)?;
        let key = self.key(name);
        let attr = self
            .map
            .entry(key)
            .or_insert_with(|| Attribute { name: in_key_order(name).into_owned(), values: Vec::new() });
        let mut values = values.into_iter().peekable();
        // One value and none held cannot duplicate: skip normalizing it (most attributes
        // of most entries, on every decode).
        if attr.values.is_empty() {
            if let Some(first) = values.next() {
                if values.peek().is_none() {
                    attr.values.push(first);
                    return Ok(());
                }
                attr.values.push(first);
            }
        }
        // `a.matches(b)` holds exactly when their normalized forms are equal.
        let mut held: HashSet<Vec<u8>> = attr.values.iter().map(Value::normalized).collect();
        let mut result = Ok(());
        for value in values {
            let normal = value.normalized();
            if held.contains(&normal) {
                // The value held, as the error says, not the one given: `memberUid: Alice`
                // beside `alice` was refused as already having "Alice".
                let stored = attr.values.iter().find(|v| v.normalized() == normal).unwrap_or(&value);
                result = Err(AttributeError::DuplicateValue {
                    attr: attr.name.clone(),
                    value: shown_value(&attr.name, stored.as_bytes()),
                });
                break;
            }
            held.insert(normal);
            attr.values.push(value);
        }
        if attr.values.is_empty() {
            let key = self.key(name);
            self.map.remove(&key);
        }
        result
    }

    /// Adds one value unless an equal one is there already (used when building an
    /// entry from its RDN, where the value may already be listed).
    pub fn add_if_absent(&mut self, name: &str, value: Value) -> Result<(), AttributeError> {
        if self.has_value(name, &value) {
            return Ok(());
        }
        self.add(name, [value])
    }

    /// Replaces all values of `name`; an empty list removes the attribute.
    pub fn replace(&mut self, name: &str, values: Vec<Value>) -> Result<(), AttributeError> {
        check_attribute_name(name)?;
        let key = self.key(name);
        self.map.remove(&key);
        if values.is_empty() {
            return Ok(());
        }
        self.add(name, values)
    }

    /// Deletes the listed values of `name`, or the whole attribute when `values` is empty.
    pub fn delete(&mut self, name: &str, values: &[Value]) -> Result<(), AttributeError> {
        let key = self.key(name);
        let Some(attr) = self.map.get_mut(&key) else {
            return Err(AttributeError::NoSuchAttribute(name.to_owned()));
        };
        for value in values {
            let Some(pos) = attr.values.iter().position(|v| v.matches(value)) else {
                return Err(AttributeError::NoSuchValue {
                    attr: attr.name.clone(),
                    value: shown_value(&attr.name, value.as_bytes()),
                });
            };
            attr.values.remove(pos);
        }
        if values.is_empty() || attr.values.is_empty() {
            self.map.remove(&key);
        }
        Ok(())
    }

    /// Adds `by` to every value of `name` (RFC 4525's increment). It exists so that a
    /// counter (the next free `uidNumber`) is read and advanced in one atomic write:
    /// two clients each reading it and writing it back plus one could both take the
    /// same number. Every value must be an integer; nothing changes if one is not.
    pub fn increment(&mut self, name: &str, by: &Value) -> Result<(), AttributeError> {
        let key = self.key(name);
        let Some(attr) = self.map.get_mut(&key) else {
            return Err(AttributeError::NoSuchAttribute(name.to_owned()));
        };
        let not_an_integer = |value: &Value| AttributeError::not_an_integer(&attr.name, value.as_bytes());
        let step = parse_integer(by.as_bytes()).ok_or_else(|| not_an_integer(by))?;
        let mut incremented = Vec::with_capacity(attr.values.len());
        for value in &attr.values {
            let held = parse_integer(value.as_bytes()).ok_or_else(|| not_an_integer(value))?;
            let sum = held.checked_add(step).ok_or_else(|| AttributeError::IncrementOverflow {
                attr: attr.name.clone(),
                value: held,
                by: step,
            })?;
            incremented.push(Value::from(sum.to_string()));
        }
        // Adding one number to distinct integers keeps them distinct: no value can
        // collide with another.
        attr.values = incremented;
        Ok(())
    }

    /// Attributes in key order (lower-cased name).
    pub fn iter(&self) -> impl Iterator<Item = &Attribute> {
        self.map.values()
    }

    /// Attributes in canonical LDIF order: `objectClass` first, then by lower-cased name.
    pub fn canonical_order(&self) -> impl Iterator<Item = &Attribute> {
        self.map
            .get("objectclass")
            .into_iter()
            .chain(self.map.iter().filter(|(k, _)| *k != "objectclass").map(|(_, a)| a))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keeps only the named attributes (an agreement's attribute list) and their
    /// subtypes ([`is_subtype`]: `description;lang-en` keeps `description;lang-en;x-draft`
    /// too, as `description` keeps both); `objectClass` is always kept so a partial entry
    /// is still a valid entry.
    pub fn retain_named(&mut self, names: &[String]) {
        self.map.retain(|k, _| k == "objectclass" || names.iter().any(|w| is_subtype(k, w)));
    }
}

/// The most bytes an encoded entry may take: a frame less room for the message that
/// carries it (a change with its cookie, a batch of one). The provider refuses a write
/// that would make an entry larger, since no message could replicate it: every consumer
/// would fail on that change, and on every retry, forever.
pub const MAX_ENTRY: usize = crate::frame::MAX_FRAME - 64 * 1024;

/// A directory entry as stored and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its current name.
    pub dn: Dn,
    /// Its identity, stable across renames.
    pub uuid: EntryUuid,
    /// The CSN of its last change; replication applies a state only if it is newer.
    pub csn: Csn,
    /// Its attributes, including the RDN's values.
    pub attrs: Attributes,
}

/// The leading fields of an encoded [`Entry`]: its DN as encoded (not parsed), UUID and
/// CSN. Deciding whether an incoming state is newer than the one stored, or whether the
/// record at a DN is the entry being looked for, needs only these; reading them skips
/// parsing the DN and rebuilding the attributes, most of the cost of a full decode. Only
/// for records this process wrote itself: nothing after the CSN is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EntryHead<'a> {
    /// The DN's string form, as [`Dn`] serializes it.
    pub dn: &'a str,
    /// The entry's UUID.
    pub uuid: EntryUuid,
    /// The CSN of its last change.
    pub csn: Csn,
}

impl<'a> EntryHead<'a> {
    /// Reads the head of an entry encoded by the codec.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, crate::codec::CodecError> {
        crate::codec::decode_prefix(bytes).map(|(head, _)| head)
    }
}

impl Entry {
    /// Ensures each AVA of the entry's RDN is among its attribute values, as directory
    /// rules require (an entry named `cn=x` holds `cn: x`).
    pub fn ensure_rdn_values(&mut self) -> Result<(), AttributeError> {
        let Some(rdn) = self.dn.rdn() else { return Ok(()) };
        for ava in rdn.avas() {
            self.attrs.add_if_absent(ava.attr(), Value::from_bytes(ava.value_bytes()))?;
        }
        Ok(())
    }
}

/// Whether `attr` names a password attribute, whose values messages do not show: its
/// name holds `password`, `pwd` or `secret`, ends in `pw` (OpenLDAP's `olcRootPW`,
/// which a migrated `cn=config` holds), or is Kerberos's key (options aside).
pub fn is_password(attr: &str) -> bool {
    let name = attr.split(';').next().unwrap_or_default().to_ascii_lowercase();
    ["password", "pwd", "secret", "krbprincipalkey"].iter().any(|word| name.contains(word)) || name.ends_with("pw")
}

/// A value as an error message may show it. A password attribute's (any name holding
/// "password", "pwd" or "secret": `userPassword`, `unicodePwd`, ...), hashed or not,
/// must not reach a log or a terminal: only its length is said. Binary octets (a photo,
/// a certificate) would print as mangled text: their length is said too. Text is cut to
/// 64 characters: a refusal naming a value of megabytes filled the terminal, the log
/// line, and the reply, which no longer fitted a frame, so the writer read the refusal
/// as a closed connection with its outcome unknown.
pub fn shown_value(attr: &str, value: &[u8]) -> String {
    if is_password(attr) {
        let unit = if value.len() == 1 { "byte" } else { "bytes" };
        return format!("({} {unit}, not shown)", value.len());
    }
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\t') => {
            let short = crate::ldif::shorten(text);
            if short.len() < text.len() {
                format!("{short} ({} bytes)", value.len())
            } else {
                short
            }
        }
        _ => format!("({} bytes, not text)", value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group with as many members as the entry limit holds reads back, whole and by
    /// its parts (found by a walkthrough: past about 286,000 members of 51 bytes, 14.9
    /// MB encoded, reading counted each value's memory against a limit of the frame's
    /// size, so the entry written could no longer be read, replicated, searched,
    /// modified or deleted).
    #[test]
    fn a_group_at_the_entry_limit_reads_back() {
        let member = |i: usize| Value::from(format!("uid=member{i:07},ou=people,dc=example,dc=com,o=corp"));
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["groupOfNames".into()]).unwrap();
        attrs.add("cn", ["big".into()]).unwrap();
        let per_value = member(0).as_bytes().len() + 1;
        attrs.add("member", (0..(MAX_ENTRY - 1024) / per_value).map(member)).unwrap();
        let dn = crate::dn::Dn::parse("cn=big,dc=example,dc=com").unwrap();
        let entry = Entry { dn, uuid: EntryUuid::new_random(), csn: crate::csn::Csn(1), attrs };
        let bytes = crate::codec::encode(&entry).unwrap();
        assert!(bytes.len() <= MAX_ENTRY && bytes.len() > MAX_ENTRY - 4096, "{}", bytes.len());
        assert_eq!(crate::codec::decode::<Entry>(&bytes).unwrap(), entry);
        let (checked, _) = CheckedEntry::decode_prefix(&bytes).unwrap();
        assert_eq!(checked.uuid, entry.uuid);
    }

    #[test]
    fn entry_uuid_named_in_an_attribute_list_is_printed_as_uuids_prints_it() {
        let list = |l: &[&str]| l.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(super::take_entry_uuid(list(&["cn", "sn"])), (list(&["cn", "sn"]), false));
        assert_eq!(super::take_entry_uuid(list(&["cn", "entryuuid"])), (list(&["cn"]), true));
        assert_eq!(super::take_entry_uuid(list(&["entryUUID"])), (list(&["objectClass"]), true));
        assert_eq!(super::take_entry_uuid(Vec::new()), (Vec::new(), false), "all attributes, no UUID");
    }

    #[test]
    fn password_attributes_are_known_by_their_names() {
        for name in ["userPassword", "authPassword;x", "unicodePwd", "sambaNTPassword", "olcRootPW", "rootpw;binary"] {
            assert!(is_password(name), "{name}");
            assert_eq!(shown_value(name, b"topsecret"), "(9 bytes, not shown)");
            assert_eq!(shown_value(name, b"1"), "(1 byte, not shown)");
        }
        assert!(is_password("krbPrincipalKey") && is_password("olcDbSecret"));
        for name in ["cn", "description", "pwmHistory", "sn;lang-pw"] {
            assert!(!is_password(name), "{name}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_values_match_ignoring_case() {
        let mut a = Attributes::new();
        a.add("objectClass", ["person".into(), "top".into()]).unwrap();
        a.add("CN", ["John  Smith".into()]).unwrap();
        assert!(a.has_value("cn", &"john smith".into()));
        assert!(a.has_value("OBJECTCLASS", &"PERSON".into()));
        let refused = a.add("cn", ["JOHN SMITH".into()]).unwrap_err().to_string();
        assert_eq!(refused, "attribute \"CN\" already has value \"John  Smith\"", "the value held, not the one given");
        a.add("userPassword", ["secret".into()]).unwrap();
        let refused = a.add("userPassword", ["secret".into()]).unwrap_err().to_string();
        assert_eq!(refused, "attribute \"userPassword\" already has value \"(6 bytes, not shown)\"");
        let refused = a.delete("userpassword", &["guess".into()]).unwrap_err().to_string();
        assert!(!refused.contains("guess"), "{refused}");
        assert_eq!(a.values("cn").len(), 1, "a refused add leaves the values as they were");
    }

    /// A refusal naming a value stays a line: long text is cut, binary octets and
    /// secrets are only measured (a 9 MiB value made a reply too large for a frame).
    #[test]
    fn a_refusal_shows_a_value_short_and_never_a_secret_or_binary() {
        let mut a = Attributes::new();
        let text = "x".repeat(5 * 1024 * 1024);
        let photo: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024).collect();
        a.add("description", [Value::from(text.as_str())]).unwrap();
        a.add("jpegPhoto", [Value::from_bytes(photo.clone())]).unwrap();
        a.add("unicodePwd", [Value::from("secretplain1")]).unwrap();
        let refused = a.add("description", [Value::from(text.as_str())]).unwrap_err().to_string();
        assert!(refused.len() < 200 && refused.ends_with(&format!("x… ({} bytes)\"", text.len())), "{refused}");
        let refused = a.add("jpegPhoto", [Value::from_bytes(photo)]).unwrap_err().to_string();
        assert!(refused.ends_with("\"(3145728 bytes, not text)\""), "{refused}");
        let refused = a.delete("unicodePwd", &["secretplain2".into()]).unwrap_err().to_string();
        assert!(!refused.contains("secretplain") && refused.contains("not shown"), "{refused}");
        assert_eq!(shown_value("cn", b"Ann\tLee"), "Ann\tLee");
    }

    #[test]
    fn an_attribute_list_names_ldap_s_selection_keywords_for_what_they_are() {
        for (keyword, says) in [("*", "all user attributes"), ("+", "operational")] {
            let refused = parse_attribute_name(keyword).unwrap_err().to_string();
            assert!(refused.contains(says), "{refused}");
        }
        assert_eq!(parse_attribute_name("cn;lang-en").unwrap(), "cn;lang-en");
        assert_eq!(parse_attribute_name("1.1").unwrap(), "1.1", "keeps objectClass alone, LDAP's nearest");
    }

    /// RFC 4512 §2.5: the order of options is not significant. One attribute, whichever
    /// order a change names its options in; it keeps the name it was first written with.
    #[test]
    fn options_in_another_order_name_the_same_attribute() {
        let mut a = Attributes::new();
        a.add("description;X-B;x-a", ["one".into()]).unwrap();
        assert!(matches!(a.add("description;x-a;x-b", ["ONE".into()]), Err(AttributeError::DuplicateValue { .. })));
        a.add("Description;x-a;X-B", ["two".into()]).unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        let attr = a.get("DESCRIPTION;x-a;x-b").unwrap();
        assert_eq!((attr.name.as_str(), attr.values.len()), ("description;x-a;X-B", 2), "options in key order");
        a.delete("description;x-a;x-b", &["one".into()]).unwrap();
        a.increment("description;x-b;x-a", &"1".into()).unwrap_err();
        let mut kept = a.clone();
        kept.retain_named(&["description;x-a;x-b".to_owned()]);
        assert_eq!(kept, a, "an attribute list names it in either order");
        let mut kept = a.clone();
        kept.retain_named(&["DESCRIPTION;X-B".to_owned()]);
        assert_eq!(kept, a, "an attribute list naming fewer options keeps it, a subtype");
        // It encodes and decodes under its key, not its name.
        let entry = Entry { dn: Dn::parse("cn=x").unwrap(), uuid: EntryUuid([1; 16]), csn: Csn(1), attrs: a.clone() };
        let decoded: Entry = crate::codec::decode(&crate::codec::encode(&entry).unwrap()).unwrap();
        assert_eq!(decoded.attrs, a);
        a.replace("description;x-a;x-b", vec![]).unwrap();
        assert!(a.is_empty(), "{a:?}");
    }

    /// A store written before options were put in order files an attribute under its
    /// lower-cased name as written: it still decodes, and a change naming it in any
    /// order finds it instead of adding a second attribute beside it.
    #[test]
    fn an_attribute_filed_before_options_were_ordered_is_found_in_any_order() {
        use crate::entry::fixtures::RawEntry;
        let raw = RawEntry {
            dn: "cn=x".into(),
            uuid: [1; 16],
            csn: 1,
            attrs: vec![("sn;x-b;x-a".into(), ("sn;x-b;x-a".into(), vec![b"one".to_vec()]))],
        };
        let mut entry: Entry = crate::codec::decode(&crate::codec::encode(&raw).unwrap()).unwrap();
        for name in ["sn;x-b;x-a", "SN;x-a;x-b"] {
            assert_eq!(entry.attrs.values(name).len(), 1, "{name}");
        }
        entry.attrs.add("sn;x-a;x-b", ["two".into()]).unwrap();
        assert_eq!(entry.attrs.len(), 1, "{:?}", entry.attrs);
        entry.attrs.delete("sn;X-A;x-b", &[]).unwrap();
        assert!(entry.attrs.is_empty());
    }

    #[test]
    fn the_head_of_an_encoded_entry_is_its_dn_uuid_and_csn() {
        let mut attrs = Attributes::new();
        attrs.add("cn", ["John Smith".into()]).unwrap();
        let entry = Entry {
            dn: Dn::parse("cn=John Smith , ou=People,dc=example,dc=com").unwrap(),
            uuid: EntryUuid::new_random(),
            csn: Csn(4242),
            attrs,
        };
        let bytes = crate::codec::encode(&entry).unwrap();
        let head = EntryHead::decode(&bytes).unwrap();
        assert_eq!((head.uuid, head.csn), (entry.uuid, entry.csn));
        assert_eq!(Dn::parse(head.dn).unwrap(), entry.dn);
        assert!(EntryHead::decode(&bytes[..5]).is_err(), "a truncated head is refused");
    }

    #[test]
    fn delete_and_replace() {
        let mut a = Attributes::new();
        a.add("mail", ["a@x".into(), "b@x".into()]).unwrap();
        a.delete("MAIL", &["A@X".into()]).unwrap();
        assert_eq!(a.values("mail"), &[Value::from("b@x")]);
        assert!(matches!(a.delete("mail", &["zz".into()]), Err(AttributeError::NoSuchValue { .. })));
        assert!(matches!(a.delete("sn", &[]), Err(AttributeError::NoSuchAttribute(_))));
        a.replace("mail", vec![]).unwrap();
        assert!(a.get("mail").is_none());
        a.delete("x-none", &[]).unwrap_err();
    }

    #[test]
    fn integers_are_read_in_their_one_canonical_form() {
        for (text, n) in
            [("0", 0), ("7", 7), ("-7", -7), ("1000", 1000), ("170141183460469231731687303715884105727", i128::MAX)]
        {
            assert_eq!(parse_integer(text.as_bytes()), Some(n), "{text}");
        }
        for text in
            ["", "-", "-0", "007", "+7", " 7", "7 ", "1e3", "0x10", "٣", "170141183460469231731687303715884105728"]
        {
            assert_eq!(parse_integer(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn increment_adds_to_every_value_and_changes_nothing_when_it_cannot() {
        let mut a = Attributes::new();
        a.add("uidNumber", ["1000".into()]).unwrap();
        a.add("x-counters", ["5".into(), "-2".into()]).unwrap();
        a.increment("UIDNUMBER", &"1".into()).unwrap();
        assert_eq!(a.values("uidnumber"), &[Value::from("1001")]);
        a.increment("x-counters", &"-3".into()).unwrap();
        assert_eq!(a.values("x-counters"), &[Value::from("2"), Value::from("-5")]);

        assert!(matches!(a.increment("gidNumber", &"1".into()), Err(AttributeError::NoSuchAttribute(_))));
        let err = a.increment("uidNumber", &"one".into()).unwrap_err();
        assert_eq!(err.to_string(), r#"cannot increment "uidNumber": "one" is not an integer"#);
        a.add("x-counters", ["seven".into()]).unwrap();
        let held = a.clone();
        let err = a.increment("x-counters", &"1".into()).unwrap_err();
        assert_eq!(err.to_string(), r#"cannot increment "x-counters": "seven" is not an integer"#);
        assert_eq!(a, held, "a refused increment leaves every value as it was");
        a.replace("uidNumber", vec![i128::MAX.to_string().into()]).unwrap();
        assert!(matches!(a.increment("uidNumber", &"1".into()), Err(AttributeError::IncrementOverflow { .. })));
        assert_eq!(a.values("uidNumber"), &[Value::from(i128::MAX.to_string())]);
        let huge = "99999999999999999999999999999999999999999999";
        let err = a.increment("uidNumber", &huge.into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(r#"cannot increment "uidNumber": "{huge}" is an integer beyond the 128 bits Tether computes in"#)
        );
        // A password's value is not shown, held or given.
        a.add("userPassword", ["hunter2".into()]).unwrap();
        let err = a.increment("userPassword", &"1".into()).unwrap_err();
        assert_eq!(err.to_string(), r#"cannot increment "userPassword": "(7 bytes, not shown)" is not an integer"#);
        a.replace("userPassword;x-hist", vec!["12".into()]).unwrap();
        let err = a.increment("userPassword;x-hist", &"secret".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot increment "userPassword;x-hist": "(6 bytes, not shown)" is not an integer"#
        );
    }

    #[test]
    fn canonical_order_is_objectclass_then_by_name() {
        let mut a = Attributes::new();
        a.add("sn", ["s".into()]).unwrap();
        a.add("cn", ["c".into()]).unwrap();
        a.add("objectClass", ["top".into()]).unwrap();
        a.add("Mail", ["m".into()]).unwrap();
        let names: Vec<&str> = a.canonical_order().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["objectClass", "cn", "Mail", "sn"]);
    }

    #[test]
    fn attribute_names_are_checked() {
        for ok in ["cn", "cn;lang-en", "2.5.4.3", "x-custom-1"] {
            check_attribute_name(ok).unwrap();
        }
        for bad in ["", "1cn", "c_n", "cn;", "-cn", "c n", "dn", "DN;x"] {
            assert!(check_attribute_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A numeric OID is numbers joined by dots (RFC 4512 `numericoid`): a dot at its
    /// end or two together leave an arc empty, which no LDAP server takes, so a file or
    /// an attribute list holding one is refused here rather than by the next server.
    #[test]
    fn an_oid_with_an_empty_arc_is_not_an_attribute_name() {
        for bad in ["2.5.4.", "2..5.4.3", "2.5.4.3.;lang-en"] {
            assert_eq!(check_attribute_name(bad), Err(AttributeError::InvalidName(bad.to_owned())), "{bad}");
        }
        check_attribute_name("2.5.4.3;lang-en").unwrap();
    }

    #[test]
    fn binary_values_compare_exactly() {
        let a = Value::from_bytes(vec![0xff, 0x41]);
        assert!(a.as_str().is_none());
        assert!(a.matches(&Value::from_bytes(vec![0xff, 0x41])));
        assert!(!a.matches(&Value::from_bytes(vec![0xff, 0x61])));
    }

    /// Attributes as bytes can carry them, bypassing [`Attributes::add`]: the same
    /// encoding as [`Attributes`], with nothing checked.
    #[derive(Serialize)]
    struct Unchecked {
        map: BTreeMap<String, Attribute>,
    }

    fn unchecked(entries: &[(&str, &str, &[&str])]) -> Vec<u8> {
        let map = entries
            .iter()
            .map(|(key, name, values)| {
                let values = values.iter().map(|&v| Value::from(v)).collect();
                ((*key).to_owned(), Attribute { name: (*name).to_owned(), values })
            })
            .collect();
        crate::codec::encode(&Unchecked { map }).unwrap()
    }

    /// Found by the `frame_message` fuzz target: a message decoded with an attribute
    /// named "obje\\tClass" (not a valid name), which `add` would never have built.
    #[test]
    fn decoded_attributes_hold_the_invariants_of_add() {
        use crate::codec::{decode, CodecError};
        let refused = |bytes: Vec<u8>| match decode::<Attributes>(&bytes) {
            Err(CodecError::Invalid(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(unchecked(&[("obje\\tclass", "obje\\tClass", &["x"])])),
            "invalid attribute name \"obje\\\\tClass\""
        );
        assert_eq!(
            refused(unchecked(&[("sn", "cn", &["x"])])),
            "attribute \"cn\" is filed under the key \"sn\", not its lower-cased name"
        );
        assert_eq!(refused(unchecked(&[("cn", "cn", &[])])), "attribute \"cn\" has no values");
        assert_eq!(refused(unchecked(&[("cn", "cn", &["Ann", "ANN"])])), "attribute \"cn\" already has value \"ANN\"");
        // A map is its length and then its pairs, so pairs written as a list encode the
        // same map, repeated or out of order as a hostile peer might send it.
        #[derive(Serialize)]
        struct Pairs {
            map: Vec<(String, Attribute)>,
        }
        let attr = |name: &str, value: &str| Attribute { name: name.into(), values: vec![value.into()] };
        let pairs = |p: &[(&str, &str)]| {
            let map = p.iter().map(|(k, n)| ((*k).to_owned(), attr(n, "x"))).collect();
            crate::codec::encode(&Pairs { map }).unwrap()
        };
        assert_eq!(refused(pairs(&[("cn", "cn"), ("cn", "CN")])), "attribute \"CN\" is repeated or out of key order");
        assert_eq!(refused(pairs(&[("sn", "sn"), ("cn", "cn")])), "attribute \"cn\" is repeated or out of key order");
        assert_eq!(pairs(&[("cn", "cn"), ("sn", "sn")]), unchecked(&[("cn", "cn", &["x"]), ("sn", "sn", &["x"])]));
        let good = unchecked(&[("cn", "CN", &["Ann", "Bob"]), ("objectclass", "objectClass", &["top"])]);
        let attrs: Attributes = decode(&good).unwrap();
        assert_eq!(attrs.values("cn"), [Value::from("Ann"), Value::from("Bob")]);
        assert_eq!(crate::codec::encode(&attrs).unwrap(), good, "the encoding is unchanged");
    }

    #[test]
    fn rdn_values_are_added() {
        let mut e = Entry {
            dn: Dn::parse("cn=Ann+sn=Lee,dc=x").unwrap(),
            uuid: EntryUuid::new_random(),
            csn: Csn::ZERO,
            attrs: Attributes::new(),
        };
        e.attrs.add("cn", ["ann".into()]).unwrap();
        e.ensure_rdn_values().unwrap();
        assert_eq!(e.attrs.values("cn").len(), 1);
        assert_eq!(e.attrs.values("sn"), &[Value::from("Lee")]);
    }

    /// A subtype has the same type: `c` (the country) is not `cn`, whose name begins with it.
    #[test]
    fn a_subtype_is_of_the_same_type_not_one_whose_name_begins_with_it() {
        assert!(is_subtype("description;lang-en", "Description"));
        assert!(!is_subtype("cn", "c"));
        assert!(!is_subtype("descriptionx;lang-en", "description;lang-en"));
        let mut a = Attributes::new();
        a.add("objectClass", ["person".into()]).unwrap();
        a.add("cn", ["x".into()]).unwrap();
        a.add("c", ["DE".into()]).unwrap();
        a.retain_named(&["c".to_owned()]);
        let names: Vec<&str> = a.iter().map(|at| at.name.as_str()).collect();
        assert_eq!(names, ["c", "objectClass"]);
    }

    /// Two equal values given in one call are refused as two held ones are, naming the
    /// one kept first.
    #[test]
    fn values_equal_to_one_another_in_one_add_are_refused() {
        let mut a = Attributes::new();
        let refused = a.add("cn", ["John Smith".into(), "Jane Doe".into(), "JOHN  SMITH".into()]).unwrap_err();
        assert_eq!(refused.to_string(), "attribute \"cn\" already has value \"John Smith\"");
        let mut a = Attributes::new();
        a.add("cn", ["held".into()]).unwrap();
        let refused = a.add("cn", ["b".into(), "B".into()]).unwrap_err();
        assert_eq!(refused.to_string(), "attribute \"cn\" already has value \"b\"");
    }
}
