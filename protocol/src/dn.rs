//! Distinguished names: parsing RFC 4514 strings, rendering them, and the normalized
//! form every comparison, index key and tree-order sort in Tether is built on.
//!
//! A [`Dn`] keeps its RDNs leaf first, exactly as written, so that what a user wrote is
//! what a user reads back; equality, hashing and ordering go through the normalized form
//! (attribute types lower-cased, values case-folded with insignificant spaces removed,
//! multi-valued RDNs sorted), computed once at parse time.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Separator between RDNs in a [`Dn::tree_key`]; it sorts below every byte a normalized
/// RDN can contain (normalization escapes control characters), so a parent's key is a
/// prefix of, and sorts before, every descendant's key.
pub const TREE_KEY_SEPARATOR: u8 = 0;

/// Why a DN string was refused; every variant names the offending position or text so
/// that an LDIF error can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// An attribute type that is neither a descriptor (`cn`) nor a numeric OID (`2.5.4.3`).
    #[error("invalid attribute type {0:?} in DN")]
    InvalidAttributeType(String),
    /// An RDN component without the `=` between type and value.
    #[error("missing '=' after attribute type {0:?} in DN")]
    MissingEquals(String),
    /// An empty RDN, as in `cn=a,,dc=b` or a trailing comma.
    #[error("empty RDN at byte {0} of DN")]
    EmptyRdn(usize),
    /// A backslash not followed by a special character or two hex digits.
    #[error("invalid escape sequence at byte {0} of DN")]
    InvalidEscape(usize),
    /// A `#` value that is not an even number (at least two) of hex digits.
    #[error("invalid hex value {0:?} in DN")]
    InvalidHexValue(String),
    /// A special character (`+`, `,`, `;`, `<`, `>`, `"`) that should have been escaped.
    #[error("unescaped {ch:?} at byte {pos} of DN")]
    UnescapedSpecial { ch: char, pos: usize },
    /// An unterminated quoted value (RFC 1779 form).
    #[error("unterminated quoted value in DN")]
    UnterminatedQuote,
    /// Escapes that decode to bytes which are not UTF-8 in a string value.
    #[error("DN value is not valid UTF-8 after unescaping")]
    InvalidUtf8,
    /// An RDN carries the same attribute type twice.
    #[error("attribute type {0:?} appears twice in one RDN")]
    DuplicateAttributeInRdn(String),
}

/// One `type=value` pair of an RDN.
#[derive(Clone)]
pub struct Ava {
    /// The attribute type as written (minus any RFC 1779 `OID.` prefix), kept for display,
    /// then a string value's text, then possibly the normalized form of an RDN whose only
    /// AVA this is (meaningful only inside that RDN; copies carry it along unused): one
    /// allocation for all, since every replicated entry's DN is parsed on decode.
    text: String,
    /// Where the attribute type ends in `text`.
    attr_len: usize,
    /// Where the value's text ends in `text` (`attr_len` for a `#hex` value).
    value_end: usize,
    /// The octets of a value given in `#hex` (BER) form; such values are compared and
    /// rendered as octets, never case-folded.
    hex: Option<Box<[u8]>>,
}

impl Ava {
    /// Builds a string-valued AVA, e.g. for the RDN of an entry made from an attribute.
    pub fn new(attr: &str, value: &str) -> Result<Self, DnError> {
        check_attribute_type(attr)?;
        Ok(Self::text(attr, value))
    }

    /// A string-valued AVA from a checked attribute type.
    fn text(attr: &str, value: &str) -> Self {
        Self::from_parts(attr, Value::Text(Cow::Borrowed(value)))
    }

    /// An AVA from a checked attribute type and a parsed value.
    fn from_parts(attr: &str, value: Value<'_>) -> Self {
        let value_text = match &value {
            Value::Text(text) => text.as_ref(),
            Value::Hex(_) => "",
        };
        let mut text = String::with_capacity(attr.len() + value_text.len());
        text.push_str(attr);
        text.push_str(value_text);
        let value_end = text.len();
        let hex = match value {
            Value::Text(_) => None,
            Value::Hex(octets) => Some(octets.into_boxed_slice()),
        };
        Self { text, attr_len: attr.len(), value_end, hex }
    }

    /// The attribute type as written.
    pub fn attr(&self) -> &str {
        // `attr_len` is where the (ASCII) type ends, so the fallback is never taken.
        self.text.get(..self.attr_len).unwrap_or_default()
    }

    /// The value as text, if it is a string value (not `#hex`) holding UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        match self.hex {
            Some(_) => None,
            None => Some(self.value_text()),
        }
    }

    /// The decoded value octets.
    pub fn value_bytes(&self) -> &[u8] {
        match &self.hex {
            Some(octets) => octets,
            None => self.value_text().as_bytes(),
        }
    }

    /// A string value's text (empty for a `#hex` value).
    fn value_text(&self) -> &str {
        self.text.get(self.attr_len..self.value_end).unwrap_or_default()
    }

    /// The normalized form stored after the value (see `text`), empty if there is none.
    fn stored_norm(&self) -> &str {
        // `value_end` was `text.len()` once, so it is a character boundary; indexing
        // (rather than `get`) keeps `tree_key` and comparisons cheap.
        &self.text[self.value_end..]
    }

    /// The normalized form on its own (the slow path of multi-valued RDNs that need
    /// sorting).
    fn normalized(&self) -> String {
        let mut out = String::with_capacity(self.len_hint());
        self.push_normalized(&mut out);
        out
    }

    /// Appends the normalized form (see [`push_normalized_ava`]).
    fn push_normalized(&self, out: &mut String) {
        push_normalized_ava(self.attr(), self.value_text(), self.hex.as_deref(), out);
    }

    /// Appends the display form: as written, escaped, upper-case hex for `#hex` values.
    fn render(&self, out: &mut String) {
        out.push_str(self.attr());
        out.push('=');
        if let Some(octets) = &self.hex {
            out.push('#');
            push_hex(octets, b"0123456789ABCDEF", out);
        } else {
            escape_value(self.value_text(), out);
        }
    }

    /// The length of the rendered or normalized form when nothing needs escaping, to
    /// size buffers in one allocation.
    fn len_hint(&self) -> usize {
        let value = match &self.hex {
            Some(octets) => 1 + 2 * octets.len(),
            None => self.value_end - self.attr_len,
        };
        self.attr_len + 1 + value
    }
}

/// Appends an AVA's normalized form: type lower-cased, `=`, then the value case-folded,
/// spaces squeezed and escaped, or `#` and lower-case hex for a `#hex` value.
fn push_normalized_ava(attr: &str, value: &str, hex: Option<&[u8]>, out: &mut String) {
    let start = out.len();
    out.push_str(attr);
    out[start..].make_ascii_lowercase();
    out.push('=');
    if let Some(octets) = hex {
        out.push('#');
        push_hex(octets, b"0123456789abcdef", out);
    } else {
        let value_start = out.len();
        let classes = classes(value.as_bytes());
        if classes & (SPACE | NON_ASCII) == 0 {
            // No spaces to squeeze and ASCII only: lower-casing is all of it.
            out.push_str(value);
            if classes & UPPER != 0 {
                out[value_start..].make_ascii_lowercase();
            }
            if classes & ESCAPED != 0 || value.starts_with('#') {
                let plain = out.split_off(value_start);
                escape_value(&plain, out);
            }
            return;
        }
        push_normalized_text(value, out);
        // Escaping is rare, so the folded text is written plainly and escaped
        // afterwards only if it holds something to escape.
        if needs_escape(&out.as_bytes()[value_start..]) {
            let plain = out.split_off(value_start);
            escape_value(&plain, out);
        }
    }
}

/// Appends `bytes` as hex digits taken from `digits` (upper- or lower-case).
fn push_hex(bytes: &[u8], digits: &[u8; 16], out: &mut String) {
    for b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0x0f)]));
    }
}

/// Case-folds a text value and removes insignificant spaces (leading, trailing, and runs
/// inside collapsed to one), the `caseIgnoreMatch` preparation applied to every value
/// since Tether has no schema to say otherwise.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_normalized_text(text, &mut out);
    out
}

/// Appends [`normalize_text`]'s result to `out`. Each word is lower-cased as
/// `str::to_lowercase` would, without a string per word: ASCII words in place, others
/// char by char, and a word holding a capital sigma through `str::to_lowercase` itself,
/// since only there does a character's lower case depend on its neighbours.
fn push_normalized_text(text: &str, out: &mut String) {
    if is_plain_ascii(text.as_bytes()) {
        let start = out.len();
        out.push_str(text);
        out[start..].make_ascii_lowercase();
        return;
    }
    let mut first = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !first {
            out.push(' ');
        }
        first = false;
        if word.is_ascii() {
            let start = out.len();
            out.push_str(word);
            out[start..].make_ascii_lowercase();
        } else if word.contains('\u{3a3}') {
            out.push_str(&word.to_lowercase());
        } else {
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
    }
}

/// Whether `text` is non-empty ASCII without spaces to remove (leading, trailing or
/// doubled), the usual case, where normalizing is lower-casing alone.
pub(crate) fn is_plain_ascii(text: &[u8]) -> bool {
    // Starting as if after a space refuses a leading one; ending on one refuses a
    // trailing one (and the empty text).
    let mut previous = b' ';
    for &b in text {
        if !b.is_ascii() || (b == b' ' && previous == b' ') {
            return false;
        }
        previous = b;
    }
    previous != b' '
}

/// A relative distinguished name: one or more AVAs joined by `+`.
#[derive(Clone)]
pub struct Rdn {
    /// The AVAs in the order written (display order), and the normalized form with AVAs
    /// sorted, so `cn=a+sn=b` equals `SN=B+CN=A`.
    avas: Avas,
}

/// An RDN's AVAs and normalized form. Almost every RDN has one AVA, which is then kept
/// without a list around it and holds the normalized form in its own text.
#[derive(Clone)]
enum Avas {
    One(Ava),
    Many(Vec<Ava>, String),
}

impl Rdn {
    /// Builds an RDN from its AVAs; refuses an empty list and repeated types.
    pub fn new(mut avas: Vec<Ava>) -> Result<Self, DnError> {
        match avas.len() {
            0 => Err(DnError::EmptyRdn(0)),
            1 => match avas.pop() {
                Some(ava) => Ok(Self::single(ava)),
                None => Err(DnError::EmptyRdn(0)),
            },
            _ => {
                if let Some(repeated) = repeated_type(&avas) {
                    return Err(DnError::DuplicateAttributeInRdn(repeated));
                }
                for ava in &mut avas {
                    ava.text.truncate(ava.value_end);
                }
                let norm = sorted_normal_form(&avas);
                Ok(Self { avas: Avas::Many(avas, norm) })
            }
        }
    }

    /// The RDN of one AVA, given as one.
    fn single(mut ava: Ava) -> Self {
        ava.text.truncate(ava.value_end);
        let norm = ava.normalized();
        ava.text.push_str(&norm);
        Self { avas: Avas::One(ava) }
    }

    /// The RDN of one AVA, given as the parser found it: the AVA's text and the
    /// normalized form are written into one string.
    fn single_from_parts(attr: &str, value: Value<'_>) -> Self {
        let (value_text, octets) = match &value {
            Value::Text(text) => (text.as_ref(), None),
            Value::Hex(octets) => ("", Some(octets.as_slice())),
        };
        let norm_hint = attr.len() + 1 + octets.map_or(value_text.len(), |o| 1 + 2 * o.len());
        let mut text = String::with_capacity(attr.len() + value_text.len() + norm_hint);
        text.push_str(attr);
        text.push_str(value_text);
        let value_end = text.len();
        push_normalized_ava(attr, value_text, octets, &mut text);
        let hex = match value {
            Value::Text(_) => None,
            Value::Hex(octets) => Some(octets.into_boxed_slice()),
        };
        Self { avas: Avas::One(Ava { text, attr_len: attr.len(), value_end, hex }) }
    }

    /// Parses a single RDN such as the `newrdn` of a modrdn record. A second RDN is
    /// refused at the separator that starts it, `,` or `;`.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        let mut parser = Parser::new(s);
        parser.skip_spaces();
        if parser.peek().is_none() {
            return Err(DnError::EmptyRdn(parser.pos));
        }
        let rdn = parser.rdn()?;
        match parser.peek() {
            None => Ok(rdn),
            Some(_) => Err(parser.unescaped_here()),
        }
    }

    /// The AVAs as written.
    pub fn avas(&self) -> &[Ava] {
        match &self.avas {
            Avas::One(ava) => std::slice::from_ref(ava),
            Avas::Many(avas, _) => avas,
        }
    }

    /// The normalized text of this RDN.
    pub fn normalized(&self) -> &str {
        match &self.avas {
            Avas::One(ava) => ava.stored_norm(),
            Avas::Many(_, norm) => norm,
        }
    }
}

/// The smallest attribute type (lower-cased) that appears more than once among `avas`.
fn repeated_type(avas: &[Ava]) -> Option<String> {
    let mut smallest: Option<String> = None;
    for (i, a) in avas.iter().enumerate() {
        if avas[i + 1..].iter().any(|b| a.attr().eq_ignore_ascii_case(b.attr())) {
            let lower = a.attr().to_ascii_lowercase();
            if smallest.as_ref().is_none_or(|s| lower < *s) {
                smallest = Some(lower);
            }
        }
    }
    smallest
}

/// The normalized AVAs sorted and joined by `+`. They are written in order into one
/// string, which is the answer when they were already sorted (as people usually write
/// them); otherwise they are sorted one string each.
fn sorted_normal_form(avas: &[Ava]) -> String {
    let mut norm = String::with_capacity(avas.iter().map(|a| a.len_hint() + 1).sum());
    let mut sorted = true;
    let mut previous = 0;
    for (i, ava) in avas.iter().enumerate() {
        if i > 0 {
            norm.push('+');
        }
        let start = norm.len();
        ava.push_normalized(&mut norm);
        if i > 0 && norm[previous..start - 1] > norm[start..] {
            sorted = false;
        }
        previous = start;
    }
    if sorted {
        return norm;
    }
    let mut parts: Vec<String> = avas.iter().map(Ava::normalized).collect();
    parts.sort();
    parts.join("+")
}

impl PartialEq for Rdn {
    fn eq(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }
}
impl Eq for Rdn {}

impl Rdn {
    /// Appends the display form (AVAs as written, joined by `+`).
    fn render(&self, out: &mut String) {
        for (i, ava) in self.avas().iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            ava.render(out);
        }
    }

    /// The display form's length when nothing needs escaping.
    fn len_hint(&self) -> usize {
        self.avas().iter().map(|a| a.len_hint() + 1).sum::<usize>().saturating_sub(1)
    }

    /// The display form in a string allocated once (unless escapes lengthen it).
    fn rendered(&self) -> String {
        let mut out = String::with_capacity(self.len_hint());
        self.render(&mut out);
        out
    }
}

/// Written out as the derived form of the plain fields would be, so logs and test
/// output keep their shape.
impl fmt::Debug for Ava {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ava")
            .field("attr", &self.attr())
            .field("value", &self.value_bytes())
            .field("hex", &self.hex.is_some())
            .finish()
    }
}

impl fmt::Debug for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rdn").field("avas", &self.avas()).field("norm", &self.normalized()).finish()
    }
}

impl fmt::Display for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered())
    }
}

/// A distinguished name. The empty DN (no RDNs) is the root of the tree.
#[derive(Debug, Clone, Default)]
pub struct Dn {
    /// RDNs leaf first, as in the string form.
    rdns: Vec<Rdn>,
    /// Normalized string form (RDN normal forms joined by `,`), the identity of the DN.
    norm: String,
}

impl Dn {
    /// The root DN (no RDNs).
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses an RFC 4514 string, also accepting the lenient forms real tools emit:
    /// spaces around separators, `;` between RDNs, `OID.` prefixes and quoted values.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        Parser::new(s).dn()
    }

    /// Builds a DN from RDNs given leaf first.
    pub fn from_rdns(rdns: Vec<Rdn>) -> Self {
        let mut norm = String::with_capacity(rdns.iter().map(|r| r.normalized().len() + 1).sum());
        for (i, rdn) in rdns.iter().enumerate() {
            if i > 0 {
                norm.push(',');
            }
            norm.push_str(rdn.normalized());
        }
        Self { rdns, norm }
    }

    /// RDNs leaf first.
    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    /// The leaf RDN, or `None` for the root DN.
    pub fn rdn(&self) -> Option<&Rdn> {
        self.rdns.first()
    }

    /// The parent DN, or `None` for the root DN.
    pub fn parent(&self) -> Option<Dn> {
        if self.rdns.is_empty() {
            None
        } else {
            Some(Dn::from_rdns(self.rdns[1..].to_vec()))
        }
    }

    /// `rdn` placed under `self`.
    pub fn child(&self, rdn: Rdn) -> Dn {
        let mut rdns = Vec::with_capacity(self.rdns.len() + 1);
        rdns.push(rdn);
        rdns.extend(self.rdns.iter().cloned());
        Dn::from_rdns(rdns)
    }

    /// Whether this is the root DN.
    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// The DN as a message names it: the root's text is empty, and a message naming it
    /// read `: : outside the suffix`.
    pub fn described(&self) -> String {
        match self.is_root() {
            true => "the empty DN (the root)".to_owned(),
            false => self.to_string(),
        }
    }

    /// Number of RDNs.
    pub fn depth(&self) -> usize {
        self.rdns.len()
    }

    /// Whether `self` is `ancestor` or lies below it.
    pub fn is_descendant_of(&self, ancestor: &Dn) -> bool {
        let n = ancestor.rdns.len();
        self.rdns.len() >= n && self.rdns[self.rdns.len() - n..].iter().zip(&ancestor.rdns).all(|(a, b)| a == b)
    }

    /// Whether `self` is the immediate child of `parent`.
    pub fn is_child_of(&self, parent: &Dn) -> bool {
        self.rdns.len() == parent.rdns.len() + 1 && self.is_descendant_of(parent)
    }

    /// The normalized string, e.g. `cn=john smith,dc=example,dc=com`.
    pub fn normalized(&self) -> &str {
        &self.norm
    }

    /// The tree-order key: normalized RDNs from the root down, each followed by
    /// [`TREE_KEY_SEPARATOR`]. Sorting by it puts every parent before its children and a
    /// subtree in one contiguous key range, which is what the store's DN index and
    /// canonical LDIF output rely on.
    pub fn tree_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.norm.len() + self.rdns.len());
        for rdn in self.rdns.iter().rev() {
            key.extend_from_slice(rdn.normalized().as_bytes());
            key.push(TREE_KEY_SEPARATOR);
        }
        key
    }

    /// Re-parents `self` from `old_base` to `new_base` (for subtree renames); `None` if
    /// `self` is not under `old_base`.
    pub fn rebase(&self, old_base: &Dn, new_base: &Dn) -> Option<Dn> {
        if !self.is_descendant_of(old_base) {
            return None;
        }
        let keep = self.rdns.len() - old_base.rdns.len();
        let mut rdns = self.rdns[..keep].to_vec();
        rdns.extend(new_base.rdns.iter().cloned());
        Some(Dn::from_rdns(rdns))
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Self) -> bool {
        self.norm == other.norm
    }
}
impl Eq for Dn {}

impl Hash for Dn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.norm.hash(state);
    }
}

impl PartialOrd for Dn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Tree order: parents before children, siblings by normalized RDN.
impl Ord for Dn {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rdns.iter().rev().map(|r| r.normalized()).cmp(other.rdns.iter().rev().map(|r| r.normalized()))
    }
}

impl Dn {
    /// The display form in a string allocated once (unless escapes lengthen it): what
    /// `to_string` gives, without going through the formatter piece by piece.
    fn rendered(&self) -> String {
        let mut out = String::with_capacity(self.rdns.iter().map(|r| r.len_hint() + 1).sum());
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            rdn.render(&mut out);
        }
        out
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered())
    }
}

impl FromStr for Dn {
    type Err = DnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dn::parse(s)
    }
}

/// DNs cross the wire and the store as their RFC 4514 string and are re-parsed (and so
/// re-validated) on the way in: a hostile peer cannot smuggle in an unnormalized DN.
impl Serialize for Dn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rendered())
    }
}

impl<'de> Deserialize<'de> for Dn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParsedStr(Dn::parse))
    }
}

impl Serialize for Rdn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rendered())
    }
}

impl<'de> Deserialize<'de> for Rdn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParsedStr(Rdn::parse))
    }
}

/// Deserializes a string and parses it where it lies (in the decoder's input when the
/// format can lend it), instead of copying it into a `String` first. Accepts what
/// `String`'s own deserializer accepts, with the same complaint about anything else.
struct ParsedStr<F>(F);

impl<T, F: FnOnce(&str) -> Result<T, DnError>> serde::de::Visitor<'_> for ParsedStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        match std::str::from_utf8(v) {
            Ok(text) => self.visit_str(text),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
        }
    }
}

/// RFC 4514 §2.4 escaping: specials anywhere, `#` and space at the start, space at the
/// end, and control characters as `\XX` (so normalized values never hold a separator).
fn escape_value(value: &str, out: &mut String) {
    if !needs_escape(value.as_bytes()) {
        out.push_str(value);
        return;
    }
    for (i, c) in value.char_indices() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            // A space is one byte, so it is the last character when it ends the text.
            ' ' if i == 0 || i + 1 == value.len() => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push('\\');
                push_hex(&[c as u8], b"0123456789ABCDEF", out);
            }
            c => out.push(c),
        }
    }
}

/// Whether [`escape_value`] would change `value`. Everything it escapes is ASCII, so
/// the UTF-8 bytes can be checked directly (multi-byte characters never match).
fn needs_escape(value: &[u8]) -> bool {
    matches!(value.first(), Some(b'#' | b' ')) || value.last() == Some(&b' ') || classes(value) & ESCAPED != 0
}

/// Byte class: an ASCII capital letter.
const UPPER: u8 = 1;
/// Byte class: a space.
const SPACE: u8 = 2;
/// Byte class: escaped wherever it is in a value (specials and control characters).
const ESCAPED: u8 = 4;
/// Byte class: part of a multi-byte character.
const NON_ASCII: u8 = 8;
/// Byte class: ends the unescaped run of a string value in the parser (a separator, an
/// escape, or a special that is an error there).
const STOPS_VALUE: u8 = 16;
/// Byte class: ends an attribute type in the parser.
const STOPS_TYPE: u8 = 32;

/// The classes of every byte, so the scans over values test one table entry per byte.
static BYTE_CLASSES: [u8; 256] = byte_classes();

const fn byte_classes() -> [u8; 256] {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_uppercase() {
            class |= UPPER;
        }
        if b == b' ' {
            class |= SPACE;
        }
        if matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b'=' | 0..=0x1f | 0x7f) {
            class |= ESCAPED;
        }
        if !b.is_ascii() {
            class |= NON_ASCII;
        }
        if matches!(b, b',' | b';' | b'+' | b'\\' | b'"' | b'<' | b'>') {
            class |= STOPS_VALUE;
        }
        if matches!(b, b'=' | b',' | b'+' | b';') {
            class |= STOPS_TYPE;
        }
        table[i] = class;
        i += 1;
    }
    table
}

/// The union of the classes of `bytes`.
fn classes(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, &b| acc | BYTE_CLASSES[usize::from(b)])
}

/// How many bytes at the start of `bytes` are not of class `stop`.
fn run_without(bytes: &[u8], stop: u8) -> usize {
    bytes.iter().position(|&b| BYTE_CLASSES[usize::from(b)] & stop != 0).unwrap_or(bytes.len())
}

/// Checks a descriptor (`ALPHA *(ALPHA / DIGIT / "-")`) or numeric OID without
/// leading zeros.
fn check_attribute_type(attr: &str) -> Result<(), DnError> {
    let bad = || DnError::InvalidAttributeType(attr.to_owned());
    let bytes = attr.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() => {
            if bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
                Ok(())
            } else {
                Err(bad())
            }
        }
        Some(b) if b.is_ascii_digit() => {
            for number in attr.split('.') {
                let ok = !number.is_empty()
                    && number.bytes().all(|b| b.is_ascii_digit())
                    && !(number.len() > 1 && number.starts_with('0'));
                if !ok {
                    return Err(bad());
                }
            }
            Ok(())
        }
        _ => Err(bad()),
    }
}

/// A parsed AVA value: text (borrowed from the input unless escapes had to be decoded)
/// or the octets of a `#hex` value.
enum Value<'a> {
    Text(Cow<'a, str>),
    Hex(Vec<u8>),
}

/// Recursive-descent parser over the DN's bytes. Types and values without escapes are
/// copied out of the input in one piece.
struct Parser<'a> {
    /// The input, for slicing out text.
    text: &'a str,
    /// The same input as bytes, which the grammar works on.
    src: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, src: text.as_bytes(), pos: 0 }
    }

    /// The input between two byte positions as text. The grammar only cuts at ASCII
    /// bytes, so this borrows; the lossy conversion is what any other cut would get.
    fn text_between(&self, start: usize, end: usize) -> Cow<'a, str> {
        match self.text.get(start..end) {
            Some(text) => Cow::Borrowed(text),
            None => String::from_utf8_lossy(self.src.get(start..end).unwrap_or_default()),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn dn(mut self) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        self.skip_spaces();
        if self.peek().is_none() {
            return Ok(Dn::root());
        }
        loop {
            rdns.push(self.rdn()?);
            match self.peek() {
                None => break,
                Some(b',') | Some(b';') => {
                    self.pos += 1;
                    self.skip_spaces();
                    if self.peek().is_none() {
                        return Err(DnError::EmptyRdn(self.pos));
                    }
                }
                Some(_) => return Err(self.unescaped_here()),
            }
        }
        Ok(Dn::from_rdns(rdns))
    }

    /// The character at the current position, which ends an RDN where the grammar wants
    /// a separator or the end, as an [`DnError::UnescapedSpecial`].
    fn unescaped_here(&self) -> DnError {
        let rest = self.src.get(self.pos..).unwrap_or_default();
        let ch = String::from_utf8_lossy(rest).chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
        DnError::UnescapedSpecial { ch, pos: self.pos }
    }

    fn rdn(&mut self) -> Result<Rdn, DnError> {
        let (attr, value) = self.ava()?;
        if self.peek() != Some(b'+') {
            return Ok(Rdn::single_from_parts(&attr, value));
        }
        let mut avas = Vec::with_capacity(4);
        avas.push(Ava::from_parts(&attr, value));
        while self.peek() == Some(b'+') {
            self.pos += 1;
            self.skip_spaces();
            let (attr, value) = self.ava()?;
            avas.push(Ava::from_parts(&attr, value));
        }
        Rdn::new(avas)
    }

    /// An AVA's checked type and its value, borrowed from the input where possible.
    fn ava(&mut self) -> Result<(Cow<'a, str>, Value<'a>), DnError> {
        self.skip_spaces();
        let start = self.pos;
        self.pos += run_without(&self.src[start..], STOPS_TYPE);
        let attr = match self.text_between(start, self.pos) {
            Cow::Borrowed(text) => Cow::Borrowed(self.attribute_type(text, start)?),
            Cow::Owned(text) => Cow::Owned(self.attribute_type(&text, start)?.to_owned()),
        };
        self.pos += 1;
        self.skip_spaces();
        let value = match self.peek() {
            Some(b'#') => self.hex_value()?,
            Some(b'"') => self.quoted_value()?,
            _ => self.string_value()?,
        };
        Ok((attr, value))
    }

    /// The attribute type in `text` (what precedes the `=` that should be at the current
    /// position, from byte `start`), checked and without any `OID.` prefix.
    fn attribute_type<'t>(&self, text: &'t str, start: usize) -> Result<&'t str, DnError> {
        let raw = text.trim_end();
        if raw.is_empty() {
            return Err(DnError::EmptyRdn(start));
        }
        if self.peek() != Some(b'=') {
            return Err(DnError::MissingEquals(raw.to_owned()));
        }
        let attr = match raw.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("oid.") => &raw[4..],
            _ => raw,
        };
        check_attribute_type(attr)?;
        Ok(attr)
    }

    fn hex_value(&mut self) -> Result<Value<'a>, DnError> {
        self.pos += 1;
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let digits = &self.src[start..self.pos];
        let end = self.pos;
        self.skip_spaces();
        let terminated = matches!(self.peek(), None | Some(b',' | b';' | b'+'));
        if digits.is_empty() || digits.len() % 2 != 0 || !terminated {
            let text = String::from_utf8_lossy(&self.src[start - 1..end.max(self.pos)]).into_owned();
            return Err(DnError::InvalidHexValue(text));
        }
        Ok(Value::Hex(digits.chunks(2).map(|p| (hex_digit(p[0]) << 4) | hex_digit(p[1])).collect()))
    }

    fn quoted_value(&mut self) -> Result<Value<'a>, DnError> {
        self.pos += 1;
        let start = self.pos;
        // Without escapes the value is the input up to the closing quote, which is text
        // as the input is.
        loop {
            match self.peek() {
                None => return Err(DnError::UnterminatedQuote),
                Some(b'"') => {
                    let value = self.text_between(start, self.pos);
                    self.pos += 1;
                    self.skip_spaces();
                    return Ok(Value::Text(value));
                }
                Some(b'\\') => break,
                Some(_) => self.pos += 1,
            }
        }
        // Room for the rest of the input, so decoding escapes never grows the buffer.
        let mut value = Vec::with_capacity(self.src.len() - start);
        value.extend_from_slice(&self.src[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(DnError::UnterminatedQuote),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => value.push(self.escape()?),
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
        self.skip_spaces();
        String::from_utf8(value).map(|text| Value::Text(Cow::Owned(text))).map_err(|_| DnError::InvalidUtf8)
    }

    fn string_value(&mut self) -> Result<Value<'a>, DnError> {
        let start = self.pos;
        // Without escapes the value is the input up to the separator minus trailing
        // spaces, which is text as the input is.
        loop {
            self.pos += run_without(&self.src[self.pos..], STOPS_VALUE);
            match self.peek() {
                None | Some(b',' | b';' | b'+') => {
                    let mut end = self.pos;
                    while end > start && self.src[end - 1] == b' ' {
                        end -= 1;
                    }
                    return Ok(Value::Text(self.text_between(start, end)));
                }
                Some(b'\\') => break,
                Some(c @ (b'"' | b'<' | b'>')) => {
                    return Err(DnError::UnescapedSpecial { ch: c as char, pos: self.pos })
                }
                Some(_) => self.pos += 1,
            }
        }
        // Room for the rest of the input, so decoding escapes never grows the buffer.
        let mut value = Vec::with_capacity(self.src.len() - start);
        value.extend_from_slice(&self.src[start..self.pos]);
        // Length of `value` up to its last escaped byte: trailing spaces after it were
        // written as `\ ` and are significant, unescaped ones are not.
        let mut keep = 0;
        loop {
            match self.peek() {
                None | Some(b',' | b';' | b'+') => break,
                Some(b'\\') => {
                    value.push(self.escape()?);
                    keep = value.len();
                }
                Some(c @ (b'"' | b'<' | b'>')) => {
                    return Err(DnError::UnescapedSpecial { ch: c as char, pos: self.pos })
                }
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
        while value.len() > keep && value.last() == Some(&b' ') {
            value.pop();
        }
        String::from_utf8(value).map(|text| Value::Text(Cow::Owned(text))).map_err(|_| DnError::InvalidUtf8)
    }

    fn escape(&mut self) -> Result<u8, DnError> {
        let at = self.pos;
        self.pos += 1;
        match self.peek() {
            Some(c @ (b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b' ' | b'#' | b'=' | b'*')) => {
                self.pos += 1;
                Ok(c)
            }
            Some(h) if h.is_ascii_hexdigit() => match self.src.get(self.pos + 1) {
                Some(l) if l.is_ascii_hexdigit() => {
                    self.pos += 2;
                    Ok((hex_digit(h) << 4) | hex_digit(*l))
                }
                _ => Err(DnError::InvalidEscape(at)),
            },
            _ => Err(DnError::InvalidEscape(at)),
        }
    }
}

fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn openldap_must_succeed_forms_parse() {
        for s in [
            "",
            "UID=jsmith,DC=example,DC=net",
            "OU=Sales+CN=J. Smith,DC=example,DC=net",
            "CN=John Smith\\, III,DC=example,DC=net",
            "OU=Sales\\; Data\\+Algorithms,DC=example,DC=net",
            "CN=Before\\0dAfter,DC=example,DC=net",
            "CN=\\23John Smith\\20,DC=example,DC=net",
            "CN=Lu\\C4\\8Di\\C4\\87",
            "testUUID=597ae2f6-16a6-1027-98f4-abcdefABCDEF,DC=Example",
            "1.3.6.1.4.1.1466.0=#04024869,DC=example,DC=com",
            "1.1.1=",
            "cn=A*x=b is a linear algebra problem,ou=LDAPv3,dc=example,dc=com",
        ] {
            dn(s);
        }
    }

    #[test]
    fn openldap_must_fail_forms_are_refused() {
        for s in [
            "uid;x-option=jsmith",
            "at_tr=jsmith",
            "-attr=jsmith",
            "1..1=jsmith",
            "1.1.=jsmith",
            "01.1=jsmith",
            "1.ff=jsmith",
            "1.1.1=#GG",
            "1.1.1=#000",
            "1.1.1=#F",
            "1.1.1=#",
            "UID=jsmith,,DC=example,DC=net",
            "UID=john,smith",
            "UID=john+smith",
            "UID=john\\?smith",
            "UID=john\\Fsmith",
            "UID=john\\GGsmith",
            "<UID=jsmith,O=example,C=US>",
            "cn=a,",
        ] {
            assert!(Dn::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn equivalent_spellings_normalize_equal() {
        let pairs = [
            ("CN=John Smith\\, III,DC=example,DC=net", "CN=John Smith\\2C III,DC=example,DC=net"),
            ("OU=Sales\\; Data\\+Algorithms,DC=example,DC=net", "OU=Sales\\3B Data\\2BAlgorithms,DC=example,DC=net"),
            ("CN=\\23John Smith\\20,DC=example,DC=net", "CN=\\#John Smith\\ ,DC=example,DC=net"),
            ("UID=jsmith, O=example, C=US", "uid=JSMITH,o=Example,c=us"),
            ("UID=jsmith;O=example;C=US", "uid=jsmith,o=example,c=us"),
            ("CN=\"John Smith\",O=example", "cn=john smith,o=example"),
            ("OID.0.9.2342.19200300.100.1.1=jsmith", "0.9.2342.19200300.100.1.1=jsmith"),
            ("cn = a  b ,dc=x", "cn=A B,dc=x"),
            ("OU=Sales+CN=J. Smith,DC=x", "cn=j. smith+ou=sales,dc=x"),
        ];
        for (a, b) in pairs {
            assert_eq!(dn(a), dn(b), "{a:?} vs {b:?}");
        }
        // RFC 4518: spaces are insignificant for matching, but an escaped one is kept.
        assert_eq!(dn("cn=a\\ ,dc=x").rdn().map(|r| r.avas()[0].value_bytes().to_vec()), Some(b"a ".to_vec()));
        assert_eq!(dn("cn=a   ,dc=x").rdn().map(|r| r.avas()[0].value_bytes().to_vec()), Some(b"a".to_vec()));
        assert_ne!(dn("cn=a,dc=x"), dn("cn=b,dc=x"));
    }

    #[test]
    fn escaped_values_decode_and_render_back() {
        let d = dn("CN=John Smith\\2C III,DC=example,DC=net");
        assert_eq!(d.rdn().and_then(|r| r.avas()[0].value_str()), Some("John Smith, III"));
        assert_eq!(d.to_string(), "CN=John Smith\\, III,DC=example,DC=net");
        let d = dn("CN=Lu\\C4\\8Di\\C4\\87");
        assert_eq!(d.rdn().and_then(|r| r.avas()[0].value_str()), Some("Lučić"));
        let d = dn("CN=\\23John Smith\\20,DC=x");
        assert_eq!(d.to_string(), "CN=\\#John Smith\\ ,DC=x");
        assert_eq!(dn(&d.to_string()), d, "rendered form parses to the same DN");
        let d = dn("CN=Before\\0dAfter,DC=x");
        assert_eq!(d.to_string(), "CN=Before\\0DAfter,DC=x");
        assert_eq!(dn("1.1.1=#04024869").to_string(), "1.1.1=#04024869");
    }

    #[test]
    fn hierarchy_helpers() {
        let base = dn("dc=example,dc=com");
        let person = dn("uid=a,ou=People,dc=Example,dc=com");
        assert!(person.is_descendant_of(&base));
        assert!(base.is_descendant_of(&base));
        assert!(!base.is_descendant_of(&person));
        assert!(person.is_descendant_of(&Dn::root()));
        assert!(!dn("dc=com").is_descendant_of(&base));
        assert!(!dn("uid=a,ou=people,dc=example,dc=org").is_descendant_of(&base));
        assert_eq!(person.parent(), Some(dn("ou=people,dc=example,dc=com")));
        assert!(person.is_child_of(&dn("ou=people,dc=example,dc=com")));
        assert!(!person.is_child_of(&base));
        assert_eq!(Dn::root().parent(), None);
        assert_eq!(person.rdn().map(Rdn::normalized), Some("uid=a"));
        let moved = person.rebase(&dn("ou=people,dc=example,dc=com"), &dn("ou=staff,dc=example,dc=com"));
        assert_eq!(moved, Some(dn("uid=a,ou=staff,dc=example,dc=com")));
    }

    #[test]
    fn tree_order_puts_parents_first_and_subtrees_contiguous() {
        let mut dns: Vec<Dn> = [
            "uid=b,ou=people,dc=example,dc=com",
            "ou=people,dc=example,dc=com",
            "dc=example,dc=com",
            "ou=groups,dc=example,dc=com",
            "uid=a,ou=people,dc=example,dc=com",
            "ou=peoplex,dc=example,dc=com",
            "cn=x,ou=groups,dc=example,dc=com",
        ]
        .iter()
        .map(|s| dn(s))
        .collect();
        dns.sort();
        let order: Vec<String> = dns.iter().map(|d| d.normalized().to_owned()).collect();
        assert_eq!(
            order,
            [
                "dc=example,dc=com",
                "ou=groups,dc=example,dc=com",
                "cn=x,ou=groups,dc=example,dc=com",
                "ou=people,dc=example,dc=com",
                "uid=a,ou=people,dc=example,dc=com",
                "uid=b,ou=people,dc=example,dc=com",
                "ou=peoplex,dc=example,dc=com",
            ]
        );
        let mut keys: Vec<Vec<u8>> = dns.iter().map(Dn::tree_key).collect();
        let sorted = keys.clone();
        keys.sort();
        assert_eq!(keys, sorted, "byte order of tree keys equals tree order");
        let people = dn("ou=people,dc=example,dc=com").tree_key();
        let peoplex = dn("ou=peoplex,dc=example,dc=com").tree_key();
        assert!(!peoplex.starts_with(&people), "a sibling with a longer name is not in the subtree");
    }

    #[test]
    fn a_second_rdn_is_refused_at_its_separator() {
        assert_eq!(Rdn::parse("cn=a;dc=b"), Err(DnError::UnescapedSpecial { ch: ';', pos: 4 }));
        assert_eq!(Rdn::parse("cn=a\\,b,dc=c"), Err(DnError::UnescapedSpecial { ch: ',', pos: 7 }));
        assert_eq!(Rdn::parse("cn=a,"), Err(DnError::UnescapedSpecial { ch: ',', pos: 4 }));
        assert_eq!(Rdn::parse("  "), Err(DnError::EmptyRdn(2)));
        assert_eq!(Rdn::parse(" cn=a+sn=b ").map(|r| r.normalized().to_owned()), Ok("cn=a+sn=b".to_owned()));
        assert_eq!(Dn::parse("cn=\"a\"é,dc=b"), Err(DnError::UnescapedSpecial { ch: 'é', pos: 6 }));
    }

    #[test]
    fn duplicate_type_in_rdn_is_refused() {
        assert!(matches!(Dn::parse("cn=a+CN=b,dc=x"), Err(DnError::DuplicateAttributeInRdn(_))));
    }

    /// Pieces of DN syntax (a newline separates the pair the property checks), so random
    /// strings reach deep into the parser.
    fn dn_soup() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "cn", "CN", "dc", "OID.", "oid.1.2", "2.5.4.3", "=", ",", ";", "+", " ", "  ", "\\", "\\2C", "\\ ", "\\#",
            "\\=", "#", "04", "#0402", "\"", "é", "Σ", "İ", "a", "B", "x y", "\n", "<", "\\C4\\8D", "\\00", "\u{7f}",
        ]);
        let token = prop_oneof![6 => piece.prop_map(str::to_owned), 1 => "\\PC{0,3}"];
        proptest::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        /// The `dn` fuzz target's properties: a parsed DN renders to one that parses the
        /// same, its normalized form is a fixed point, and tree keys order and nest DNs
        /// as `Ord` and `is_descendant_of` do.
        #[test]
        fn dn_like_strings_keep_the_dn_properties(s in dn_soup()) {
            crate::properties::dn_pair(&s);
        }

        #[test]
        fn arbitrary_strings_keep_the_dn_properties(s in any::<String>()) {
            crate::properties::dn_pair(&s);
        }
    }

    proptest! {
        // About half the structured DNs parse; enough cases that every path is taken
        // by many that do.
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The fast paths against the reference copy of the old code, on DNs built from
        /// the forms that take each path: escapes, hex and quoted values, multi-valued
        /// RDNs, non-ASCII text with context-dependent lower case, spaces everywhere.
        #[test]
        fn structured_dns_match_the_reference(a in dn_text(), b in dn_text()) {
            same_as_reference(&a);
            same_pair_as_reference(&a, &b);
        }

        #[test]
        fn dn_soup_matches_the_reference(a in dn_soup(), b in dn_soup()) {
            same_as_reference(&a);
            same_pair_as_reference(&a, &b);
        }

        #[test]
        fn arbitrary_strings_match_the_reference(s in any::<String>()) {
            same_as_reference(&s);
        }

        #[test]
        fn normalize_text_matches_the_reference(s in text_value()) {
            prop_assert_eq!(normalize_text(&s), reference::normalize_text(&s));
        }

        #[test]
        fn rdn_new_matches_the_reference(pairs in prop::collection::vec((attr_type(), text_value()), 0..5)) {
            let new: Result<Vec<Ava>, DnError> = pairs.iter().map(|(a, v)| Ava::new(a, v)).collect();
            let old: Result<Vec<reference::Ava>, DnError> =
                pairs.iter().map(|(a, v)| reference::Ava::new(a, v)).collect();
            match (new, old) {
                (Ok(new), Ok(old)) => {
                    let (new, old) = (Rdn::new(new), reference::Rdn::new(old));
                    prop_assert_eq!(format!("{new:?}"), format!("{old:?}"));
                    if let (Ok(new), Ok(old)) = (new, old) {
                        prop_assert_eq!(new.to_string(), old.to_string());
                    }
                }
                (new, old) => prop_assert_eq!(new.err(), old.err()),
            }
        }
    }

    /// One string through the new parser and the reference: the same DN (down to its
    /// Debug form) or the same error, and the same rendering, normal form and tree key;
    /// the same for the string as one RDN.
    fn same_as_reference(s: &str) {
        match (Dn::parse(s), reference::Dn::parse(s)) {
            (Ok(new), Ok(old)) => {
                assert_eq!(format!("{new:?}"), format!("{old:?}"), "{s:?}");
                assert_eq!(new.normalized(), old.normalized(), "{s:?}");
                assert_eq!(new.to_string(), old.to_string(), "{s:?}");
                assert_eq!(new.tree_key(), old.tree_key(), "{s:?}");
                let wire = crate::codec::encode(&new).unwrap_or_else(|e| panic!("{s:?}: {e}"));
                let old_wire = crate::codec::encode(&old.to_string()).unwrap_or_else(|e| panic!("{s:?}: {e}"));
                assert_eq!(wire, old_wire, "{s:?} is sent as the reference sends it");
                let decoded: Dn = crate::codec::decode(&wire).unwrap_or_else(|e| panic!("{s:?}: {e}"));
                assert_eq!(format!("{decoded:?}"), format!("{old:?}"), "{s:?}");
                for (rdn, old_rdn) in new.rdns().iter().zip(old.rdns()) {
                    assert_eq!(rdn.to_string(), old_rdn.to_string(), "{s:?}");
                    let rebuilt = Rdn::new(rdn.avas().to_vec());
                    let old_rebuilt = reference::Rdn::new(old_rdn.avas().to_vec());
                    assert_eq!(format!("{rebuilt:?}"), format!("{old_rebuilt:?}"), "{s:?}");
                }
            }
            (new, old) => assert_eq!(new.err(), old.err(), "{s:?}"),
        }
        match (Rdn::parse(s), reference::Rdn::parse(s)) {
            (Ok(new), Ok(old)) => {
                assert_eq!(format!("{new:?}"), format!("{old:?}"), "{s:?}");
                assert_eq!(new.to_string(), old.to_string(), "{s:?}");
            }
            (new, old) => assert_eq!(new.err(), old.err(), "{s:?}"),
        }
    }

    /// Equality and tree order of two DNs as the reference has them.
    fn same_pair_as_reference(a: &str, b: &str) {
        let (Ok(new_a), Ok(new_b), Ok(old_a), Ok(old_b)) =
            (Dn::parse(a), Dn::parse(b), reference::Dn::parse(a), reference::Dn::parse(b))
        else {
            return;
        };
        assert_eq!(new_a == new_b, old_a == old_b, "{a:?} vs {b:?}");
        assert_eq!(new_a.cmp(&new_b), old_a.cmp(&old_b), "{a:?} vs {b:?}");
        assert_eq!(new_a.is_descendant_of(&new_b), old_a.is_descendant_of(&old_b), "{a:?} vs {b:?}");
    }

    fn attr_type() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "cn",
            "CN",
            "sn",
            "SN",
            "ou",
            "dc",
            "uid",
            "c-n",
            "x1",
            "2.5.4.3",
            "0.9.2342.19200300.100.1.1",
        ])
        .prop_map(str::to_owned)
    }

    /// Unescaped text: words in several scripts (with capital sigmas in every position
    /// a word can have them, and characters whose lower case is longer), spaces, control
    /// characters and specials that need escaping when rendered.
    fn text_value() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "John",
            "SMITH",
            "ÉLODIE",
            "ŞAHİN",
            "ΟΔΥΣΣΕΥΣ",
            "ΣΑΣ",
            "Σ",
            "ΑΣ",
            "Σ.",
            "σς",
            "İ",
            "ß",
            "ǅ",
            "Ω",
            "x\u{301}",
            " ",
            "  ",
            "#",
            ",",
            "+",
            "=",
            "\\",
            "\"",
            "<",
            ";",
            "\u{1}",
            "\t",
            "\u{7f}",
            "\u{85}",
            "😀",
        ]);
        let token = prop_oneof![8 => piece.prop_map(str::to_owned), 1 => "\\PC{0,3}"];
        proptest::collection::vec(token, 0..8).prop_map(|tokens| tokens.concat())
    }

    /// A value as a DN writes it: plain text with escapes, quoted, or `#hex`.
    fn value_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "John",
            "SMITH",
            "ÉLODIE",
            "ŞAHİN",
            "ΟΔΥΣΣΕΥΣ",
            "ΣΑΣ",
            "Σ",
            "σς",
            "İ",
            "ß",
            " ",
            "  ",
            "#",
            "\\,",
            "\\2C",
            "\\2b",
            "\\ ",
            "\\#",
            "\\=",
            "\\3D",
            "\\C4\\8D",
            "\\CE\\A3",
            "\\00",
            "\\7F",
            "\\5C",
            "\\\"",
            "\\\\",
            "=",
            "\u{1}",
            "\t",
            "\u{7f}",
            "*",
            "\\*",
            "\\E2\\82\\AC",
            "\\FF",
        ]);
        let plain = proptest::collection::vec(piece, 0..7).prop_map(|pieces| pieces.concat());
        let quoted_piece = prop::sample::select(vec![
            "a",
            "Smith, John",
            "+",
            ";",
            "<>",
            " ",
            "  ",
            "\\\"",
            "\\,",
            "\\C4\\8D",
            "Σ",
            "ΑΣ",
            "#",
            "=",
        ]);
        let quoted =
            proptest::collection::vec(quoted_piece, 0..5).prop_map(|pieces| format!("\"{}\"", pieces.concat()));
        let hex = "#([0-9a-fA-F]{2}){0,5}[0-9a-fA-F]?";
        prop_oneof![6 => plain, 1 => quoted, 1 => hex]
    }

    /// An RDN's text: one to three AVAs joined by `+`, spaces around every part.
    fn rdn_text() -> impl Strategy<Value = String> {
        let attr = prop::sample::select(vec!["cn", "CN", "sn", "ou", "uid", "OID.2.5.4.3", "oid.1.2", "2.5.4.3"]);
        let ava = (" {0,2}", attr, " {0,2}", " {0,2}", value_text(), " {0,2}")
            .prop_map(|(s1, attr, s2, s3, value, s4)| format!("{s1}{attr}{s2}={s3}{value}{s4}"));
        proptest::collection::vec(ava, 1..4).prop_map(|avas| avas.join("+"))
    }

    /// A DN's text: up to five RDNs separated by `,` or `;`.
    fn dn_text() -> impl Strategy<Value = String> {
        let separator = prop::sample::select(vec![",", ";", " , "]);
        proptest::collection::vec((rdn_text(), separator), 0..5).prop_map(|rdns| {
            let mut out = String::new();
            for (i, (rdn, separator)) in rdns.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                out.push_str(rdn);
            }
            out
        })
    }
}
