//! LDAP search filters (RFC 4515): the type, its evaluation against an entry, and its
//! canonical string form. The string parser lives in `filter_parse`.
//!
//! Matching follows the module rule of `entry`: names ignore case, and a name matches
//! its subtypes, the same type with more `;options` (so `(cn=x)` also looks at
//! `cn;lang-en`, and `(cn;lang-en=x)` at `cn;lang-en;x-nick`); text values compare
//! case-folded with insignificant spaces removed (RFC 4518, including its special
//! handling of spaces at the edges of substring parts); ordering compares integers
//! numerically, at any length, when both sides are integers. `entryUUID` reads the
//! entry's UUID, which is not among its attributes.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::entry::{is_subtype, Entry, Value};

/// A search filter.
///
/// On the wire and on disk a filter is its RFC 4515 string, parsed again on the way in:
/// the parser's length and depth limits then hold for filters from peers too, so a
/// hostile message cannot make evaluation recurse without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// All of the sub-filters match (an empty list is true).
    And(Vec<Filter>),
    /// Any of the sub-filters matches (an empty list is false).
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
    /// `(attr=value)`.
    Equality {
        /// Attribute name.
        attr: String,
        /// Value to compare with.
        value: Value,
    },
    /// `(attr=initial*any*...*final)`.
    Substring {
        /// Attribute name.
        attr: String,
        /// Leading part, if the pattern does not start with `*`.
        initial: Option<Value>,
        /// Middle parts, in order.
        any: Vec<Value>,
        /// Trailing part, if the pattern does not end with `*`.
        final_: Option<Value>,
    },
    /// `(attr>=value)`.
    GreaterOrEqual {
        /// Attribute name.
        attr: String,
        /// Lower bound.
        value: Value,
    },
    /// `(attr<=value)`.
    LessOrEqual {
        /// Attribute name.
        attr: String,
        /// Upper bound.
        value: Value,
    },
    /// `(attr=*)`.
    Present {
        /// Attribute name.
        attr: String,
    },
    /// `(attr~=value)`: without a phonetic rule, evaluated as equality.
    Approx {
        /// Attribute name.
        attr: String,
        /// Value to compare with.
        value: Value,
    },
}

impl Filter {
    /// `(objectClass=*)`, which every entry matches.
    pub fn match_all() -> Self {
        Filter::Present { attr: "objectClass".to_owned() }
    }

    /// The filter in the form its matching reads: attribute names in lower case, and
    /// each value as it is compared (equality, approximate and ordering values
    /// normalized, substring parts prepared for their place). Two filters that differ
    /// only in how their names or values are spelled (`objectclass`, `objectClass`;
    /// `(sn=Smith)`, `(SN=smith)`; `(cn=a  b*)`, `(cn=A B*)`) select the same entries
    /// and have the same canonical form, so respelling a region's filter is not taken
    /// for a change of region. Not for evaluating: substring parts keep the spaces their
    /// preparation gives them. Operands' order is kept: `(&(a=1)(b=2))` and
    /// `(&(b=2)(a=1))` select the same entries and still compare unequal.
    pub fn canonical(&self) -> Filter {
        let lower = |attr: &String| attr.to_ascii_lowercase();
        let norm = |value: &Value| Value::from_bytes(folded(value));
        let part = |value: &Value, at: Part| Value::from_bytes(prepare_part(value, at));
        match self {
            Filter::And(fs) => Filter::And(fs.iter().map(Filter::canonical).collect()),
            Filter::Or(fs) => Filter::Or(fs.iter().map(Filter::canonical).collect()),
            Filter::Not(f) => Filter::Not(Box::new(f.canonical())),
            Filter::Equality { attr, value } => Filter::Equality { attr: lower(attr), value: norm(value) },
            Filter::Substring { attr, initial, any, final_ } => Filter::Substring {
                attr: lower(attr),
                initial: initial.as_ref().map(|v| part(v, Part::Initial)),
                any: any.iter().map(|v| part(v, Part::Any)).collect(),
                final_: final_.as_ref().map(|v| part(v, Part::Final)),
            },
            Filter::GreaterOrEqual { attr, value } => Filter::GreaterOrEqual { attr: lower(attr), value: norm(value) },
            Filter::LessOrEqual { attr, value } => Filter::LessOrEqual { attr: lower(attr), value: norm(value) },
            Filter::Present { attr } => Filter::Present { attr: lower(attr) },
            Filter::Approx { attr, value } => Filter::Approx { attr: lower(attr), value: norm(value) },
        }
    }

    /// The attribute names the filter reads, each once, as first written, in order.
    pub fn attributes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let mut stack = vec![self];
        while let Some(f) = stack.pop() {
            match f {
                Filter::And(fs) | Filter::Or(fs) => stack.extend(fs.iter().rev()),
                Filter::Not(f) => stack.push(f),
                Filter::Equality { attr, .. }
                | Filter::Substring { attr, .. }
                | Filter::GreaterOrEqual { attr, .. }
                | Filter::LessOrEqual { attr, .. }
                | Filter::Present { attr }
                | Filter::Approx { attr, .. } => {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(attr)) {
                        names.push(attr);
                    }
                }
            }
        }
        names
    }

    /// Whether `entry` matches the filter.
    pub fn matches(&self, entry: &Entry) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(entry)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(entry)),
            Filter::Not(f) => !f.matches(entry),
            Filter::Present { attr } => any_value(entry, attr, |_| true),
            Filter::Equality { attr, value } | Filter::Approx { attr, value } => {
                let wanted = folded(value);
                any_value(entry, attr, |v| v.as_bytes() == value.as_bytes() || folded(v) == wanted)
            }
            Filter::GreaterOrEqual { attr, value } => any_value(entry, attr, |v| compare(v, value) != Ordering::Less),
            Filter::LessOrEqual { attr, value } => any_value(entry, attr, |v| compare(v, value) != Ordering::Greater),
            Filter::Substring { attr, initial, any, final_ } => {
                any_value(entry, attr, |v| substring_match(v, initial.as_ref(), any, final_.as_ref()))
            }
        }
    }
}

/// Whether a value of `attr` (or of its subtypes, see [`is_subtype`]) satisfies `test`.
/// `entryUUID` is the entry's UUID in its text form, as `search --uuids` prints it and
/// as OpenLDAP answers `(entryUUID=...)`: it is kept beside the attributes, not among
/// them, and a filter naming it would otherwise match nothing, without a word.
fn any_value(entry: &Entry, attr: &str, test: impl Fn(&Value) -> bool) -> bool {
    if attr.eq_ignore_ascii_case(ENTRY_UUID) && test(&Value::from(entry.uuid.to_string())) {
        return true;
    }
    entry.attrs.iter().filter(|a| is_subtype(&a.name, attr)).flat_map(|a| a.values.iter()).any(test)
}

/// The operational attribute a filter reads from [`Entry::uuid`].
const ENTRY_UUID: &str = "entryUUID";

/// A value's form for matching: [`Value::normalized`], with each small final sigma (ς)
/// made σ, as full case folding has it (RFC 4518 §2.2). `to_lowercase` makes a capital
/// sigma ς at a word's end and σ elsewhere, so a part lowered alone disagreed with the
/// value it is part of (`(cn=ΑΣ*)` missed "ΑΣΤΡΟ"), and "ΟΔΟΣ" with "οδοσ". Matching
/// only: what is stored (a DN's normal form, its tree key) keeps plain lower-casing, so
/// stores written before read the same.
fn folded(value: &Value) -> Vec<u8> {
    match String::from_utf8(value.normalized()) {
        Ok(text) => fold_sigma(text).into_bytes(),
        // A binary value compares as its octets.
        Err(binary) => binary.into_bytes(),
    }
}

/// `text` with each ς made σ (see [`folded`]).
fn fold_sigma(text: String) -> String {
    if text.contains('ς') {
        text.replace('ς', "σ")
    } else {
        text
    }
}

/// Ordering match: integers numerically, everything else by normalized bytes.
fn compare(a: &Value, b: &Value) -> Ordering {
    let (na, nb) = (folded(a), folded(b));
    match (integer(&na), integer(&nb)) {
        (Some(x), Some(y)) => compare_integers(x, y),
        _ => na.cmp(&nb),
    }
}

/// An integer of any length (RFC 4517 INTEGER, plus an optional `+`), as its sign and its
/// digits without leading zeros; zero has no digits and is never negative.
fn integer(text: &[u8]) -> Option<(bool, &[u8])> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = digits.iter().position(|&d| d != b'0').map_or(&[][..], |at| &digits[at..]);
    Some((negative && !significant.is_empty(), significant))
}

fn compare_integers((a_negative, a): (bool, &[u8]), (b_negative, b): (bool, &[u8])) -> Ordering {
    let magnitude = a.len().cmp(&b.len()).then_with(|| a.cmp(b));
    match (a_negative, b_negative) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

/// Where a substring part sits, which decides how its edge spaces are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the first `*`: anchored at the value's start.
    Initial,
    /// Between two `*`s.
    Any,
    /// After the last `*`: anchored at the value's end.
    Final,
}

/// RFC 4518 §2.6.1 for an attribute value in a substring match: case-folded words joined
/// by two spaces, with one space at each end, so a part's edge space can match at the
/// value's start or end or at either side of the gap between two words.
fn prepare_value(value: &Value) -> Vec<u8> {
    match value.as_str() {
        Some(text) => format!(" {} ", words(text).join("  ")).into_bytes(),
        None => value.as_bytes().to_vec(),
    }
}

/// RFC 4518 §2.6.1 for a substring part: as for a value, but an edge keeps one space
/// only if the part had one there or is anchored there; so `(cn=ann *)` matches
/// "Ann Lee" and not "Annie". A part of only spaces is one space; an empty part (as in
/// `a**b`) stays empty, matching anywhere, also in binary values.
fn prepare_part(part: &Value, at: Part) -> Vec<u8> {
    let Some(text) = part.as_str() else { return part.as_bytes().to_vec() };
    if text.is_empty() {
        return Vec::new();
    }
    let words = words(text);
    if words.is_empty() {
        return b" ".to_vec();
    }
    let lead = if at == Part::Initial || text.starts_with(' ') { " " } else { "" };
    let trail = if at == Part::Final || text.ends_with(' ') { " " } else { "" };
    format!("{lead}{}{trail}", words.join("  ")).into_bytes()
}

/// The case-folded words of a text, split at runs of spaces (each ς made σ, as
/// [`folded`] does).
fn words(text: &str) -> Vec<String> {
    text.split(' ').filter(|w| !w.is_empty()).map(|w| fold_sigma(w.to_lowercase())).collect()
}

fn substring_match(value: &Value, initial: Option<&Value>, any: &[Value], final_: Option<&Value>) -> bool {
    let hay = prepare_value(value);
    let mut rest: &[u8] = &hay;
    if let Some(init) = initial {
        let init = prepare_part(init, Part::Initial);
        match rest.strip_prefix(init.as_slice()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    for part in any {
        let part = prepare_part(part, Part::Any);
        match find(rest, &part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    match final_ {
        Some(fin) => rest.ends_with(&prepare_part(fin, Part::Final)),
        None => true,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 4515 §3 value escaping: `*`, `(`, `)`, `\` and NUL as the RFC requires, and also
/// control characters, so a filter written to a log or a config file stays on one line
/// and printable; a value that is not UTF-8 is escaped octet by octet.
fn write_value(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    let escape = |f: &mut fmt::Formatter<'_>, bytes: &[u8]| bytes.iter().try_for_each(|b| write!(f, "\\{b:02x}"));
    match value.as_str() {
        Some(s) => {
            for c in s.chars() {
                match c {
                    '*' | '(' | ')' | '\\' => escape(f, &[c as u8])?,
                    c if c.is_control() => escape(f, c.encode_utf8(&mut [0; 4]).as_bytes())?,
                    c => write!(f, "{c}")?,
                }
            }
            Ok(())
        }
        None => escape(f, value.as_bytes()),
    }
}

/// The RFC 4515 string form. [`Filter::parse`] of it gives back an equal filter for every
/// filter the parser produces; a hand-built `Substring` with an empty `initial` or
/// `final_` renders like one with `None` there, and one with no parts at all like
/// `Present`.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(fs) | Filter::Or(fs) => {
                f.write_str(if matches!(self, Filter::And(_)) { "(&" } else { "(|" })?;
                for sub in fs {
                    write!(f, "{sub}")?;
                }
                f.write_str(")")
            }
            Filter::Not(sub) => write!(f, "(!{sub})"),
            Filter::Present { attr } => write!(f, "({attr}=*)"),
            Filter::Equality { attr, value }
            | Filter::Approx { attr, value }
            | Filter::GreaterOrEqual { attr, value }
            | Filter::LessOrEqual { attr, value } => {
                let op = match self {
                    Filter::Equality { .. } => "=",
                    Filter::Approx { .. } => "~=",
                    Filter::GreaterOrEqual { .. } => ">=",
                    _ => "<=",
                };
                write!(f, "({attr}{op}")?;
                write_value(f, value)?;
                f.write_str(")")
            }
            Filter::Substring { attr, initial, any, final_ } => {
                write!(f, "({attr}=")?;
                if let Some(v) = initial {
                    write_value(f, v)?;
                }
                f.write_str("*")?;
                for v in any {
                    write_value(f, v)?;
                    f.write_str("*")?;
                }
                if let Some(v) = final_ {
                    write_value(f, v)?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Filter::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csn::Csn;
    use crate::dn::Dn;
    use crate::entry::{Attributes, EntryUuid};

    fn entry(attrs: &[(&str, &str)]) -> Entry {
        let mut a = Attributes::new();
        for (name, value) in attrs {
            a.add(name, [Value::from(*value)]).unwrap();
        }
        Entry { dn: Dn::parse("cn=x,dc=example").unwrap(), uuid: EntryUuid::new_random(), csn: Csn(1), attrs: a }
    }

    fn eq(attr: &str, value: &str) -> Filter {
        Filter::Equality { attr: attr.into(), value: value.into() }
    }

    fn sub(initial: Option<&str>, any: &[&str], final_: Option<&str>) -> Filter {
        Filter::Substring {
            attr: "cn".into(),
            initial: initial.map(Value::from),
            any: any.iter().map(|&v| Value::from(v)).collect(),
            final_: final_.map(Value::from),
        }
    }

    #[test]
    fn entry_uuid_is_the_entry_s_uuid_in_text() {
        let e = entry(&[("cn", "Ann")]);
        let uuid = e.uuid.to_string();
        assert!(eq("entryUUID", &uuid).matches(&e));
        assert!(eq("ENTRYUUID", &uuid.to_uppercase()).matches(&e), "hex digits in either case");
        assert!(!eq("entryUUID", "00000000-0000-0000-0000-000000000000").matches(&e));
        assert!(Filter::Present { attr: "entryUUID".into() }.matches(&e));
        assert!(Filter::parse(&format!("(&(cn=ann)(entryUUID={}*))", &uuid[..8])).unwrap().matches(&e));
        assert!(!Filter::Present { attr: "entryUUID;x-opt".into() }.matches(&e), "it has no subtypes");
    }

    #[test]
    fn options_are_a_set_matched_by_any_subset() {
        let e = entry(&[("cn;lang-en;x-nick", "Annie"), ("cn", "Ann Lee")]);
        assert!(eq("cn;lang-en", "annie").matches(&e), "a subtype with more options");
        assert!(eq("CN;X-NICK;Lang-En", "annie").matches(&e), "options in another order and case");
        assert!(eq("cn", "annie").matches(&e));
        assert!(!eq("cn;lang-fr", "annie").matches(&e));
        assert!(!eq("cn;lang-en", "ann lee").matches(&e), "the supertype's values are not the subtype's");
        assert!(!eq("cnx", "annie").matches(&e));
    }

    #[test]
    fn integers_order_numerically_at_any_length() {
        let huge = "100000000000000000000000000000000000000000";
        let e = entry(&[("n", "999"), ("m", "-0010"), ("z", "-0")]);
        let ge = |attr: &str, v: &str| Filter::GreaterOrEqual { attr: attr.into(), value: v.into() };
        let le = |attr: &str, v: &str| Filter::LessOrEqual { attr: attr.into(), value: v.into() };
        assert!(le("n", huge).matches(&e), "beyond i128, 999 is still smaller");
        assert!(!ge("n", huge).matches(&e));
        assert!(ge("n", &format!("-{huge}")).matches(&e));
        assert!(le("m", "-9").matches(&e) && !ge("m", "-9").matches(&e), "-10 < -9");
        assert!(ge("m", "-10").matches(&e) && le("m", "-10").matches(&e), "leading zeros do not count");
        assert!(ge("z", "0").matches(&e) && le("z", "+0").matches(&e), "-0 is zero");
        assert!(ge("n", "1000a").matches(&e), "not both integers: text order, \"999\" > \"1000a\"");
    }

    #[test]
    fn substring_edge_spaces_follow_rfc4518() {
        let ann_lee = entry(&[("cn", "Ann  Lee")]);
        let annie = entry(&[("cn", "Annie")]);
        let ann_then_space = sub(Some("ann "), &[], None);
        assert!(ann_then_space.matches(&ann_lee));
        assert!(!ann_then_space.matches(&annie), "a trailing space in the initial part is a word boundary");
        assert!(sub(None, &[], Some(" lee")).matches(&ann_lee));
        assert!(sub(None, &[" lee"], None).matches(&ann_lee));
        assert!(!sub(None, &[" nie"], None).matches(&annie));
        assert!(sub(None, &["n   l"], None).matches(&ann_lee), "inner runs of spaces are one space");
        assert!(sub(Some("ann"), &["", ""], Some("e")).matches(&annie), "empty parts match anywhere");
        assert!(sub(Some("ANN"), &[], Some("LEE")).matches(&ann_lee), "case-folded");
        assert!(!sub(Some("a"), &[], Some("a")).matches(&entry(&[("cn", "a")])), "initial and final do not overlap");
    }

    /// A middle part of spaces alone is one space (RFC 4518 §2.6.1), which must be found
    /// between the parts around it: `(cn=ann* *ie)` is "ann", a word boundary, then a
    /// value ending in "ie", so it matches "Ann Marie" and not "Annie".
    #[test]
    fn a_middle_part_of_spaces_alone_needs_a_space_between_the_parts_around_it() {
        let ann_then_ie = sub(Some("ann"), &[" "], Some("ie"));
        assert!(ann_then_ie.matches(&entry(&[("cn", "Ann Marie")])));
        assert!(!ann_then_ie.matches(&entry(&[("cn", "Annie")])), "no space between \"ann\" and \"ie\"");
    }

    /// A capital sigma lowers to ς at a word's end and σ elsewhere; matching folds both
    /// to σ, so a part ending where its value goes on still matches, and so does a value
    /// spelled with σ where another has ς (found by a walkthrough: `(cn=ΑΣ*)` missed
    /// "ΑΣΤΡΟ", and `(cn=*οσ)` missed "ΟΔΟΣ").
    #[test]
    fn sigma_matches_in_every_position_and_spelling() {
        let astro = entry(&[("cn", "ΑΣΤΡΟ")]);
        let odos = entry(&[("cn", "ΟΔΟΣ")]);
        for f in
            [sub(Some("ΑΣ"), &[], None), sub(Some("ας"), &[], None), sub(None, &["Σ"], Some("ΤΡΟ")), eq("cn", "αστρο")]
        {
            assert!(f.matches(&astro), "{f}");
        }
        for f in
            [sub(None, &[], Some("οσ")), sub(None, &[], Some("ΟΣ")), sub(Some("οδ"), &["ο"], None), eq("cn", "οδοσ")]
        {
            assert!(f.matches(&odos), "{f}");
        }
        assert!(!sub(Some("ΑΣΣ"), &[], None).matches(&astro));
        let le = Filter::LessOrEqual { attr: "cn".into(), value: "οδοσ".into() };
        assert!(le.matches(&odos), "ordering compares the folded forms too");
        assert_eq!(sub(Some("ΑΣ"), &[], None).canonical(), sub(Some("ασ"), &[], None).canonical());
        assert_eq!(eq("cn", "ΟΔΟΣ").canonical(), eq("cn", "οδοσ").canonical());
    }

    #[test]
    fn empty_parts_match_binary_values() {
        let mut attrs = Attributes::new();
        attrs.add("photo", [Value::from_bytes([0xff, 0xd8])]).unwrap();
        let e = Entry { dn: Dn::parse("cn=x").unwrap(), uuid: EntryUuid::new_random(), csn: Csn(1), attrs };
        let f = Filter::Substring {
            attr: "photo".into(),
            initial: Some(Value::from_bytes([0xff])),
            any: vec![Value::from("")],
            final_: None,
        };
        assert!(f.matches(&e));
    }
}
