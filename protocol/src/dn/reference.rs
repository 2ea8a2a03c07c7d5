//! The DN code as it was before the allocation-free fast paths, kept verbatim (minus
//! serde and docs) as the reference the property tests compare the fast code with:
//! parse results and errors, Debug output, normalized and display forms, tree keys and
//! ordering must all be identical.
// Only what the comparison needs is used; the rest stays to keep the copy verbatim.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use super::{DnError, TREE_KEY_SEPARATOR};

/// One `type=value` pair of an RDN.
#[derive(Debug, Clone)]
pub struct Ava {
    /// The attribute type as written (minus any RFC 1779 `OID.` prefix), kept for display.
    attr: String,
    /// The decoded value: UTF-8 text for string values, the raw octets for `#hex` values.
    value: Vec<u8>,
    /// Whether the value was given in `#hex` (BER) form; such values are compared and
    /// rendered as octets, never case-folded.
    hex: bool,
}

impl Ava {
    /// Builds a string-valued AVA, e.g. for the RDN of an entry made from an attribute.
    pub fn new(attr: &str, value: &str) -> Result<Self, DnError> {
        check_attribute_type(attr)?;
        Ok(Self { attr: attr.to_owned(), value: value.as_bytes().to_vec(), hex: false })
    }

    /// The attribute type as written.
    pub fn attr(&self) -> &str {
        &self.attr
    }

    /// The value as text, if it is a string value (not `#hex`) holding UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        if self.hex {
            None
        } else {
            std::str::from_utf8(&self.value).ok()
        }
    }

    /// The decoded value octets.
    pub fn value_bytes(&self) -> &[u8] {
        &self.value
    }

    fn normalized(&self) -> String {
        let mut out = self.attr.to_ascii_lowercase();
        out.push('=');
        if self.hex {
            out.push('#');
            for b in &self.value {
                out.push_str(&format!("{b:02x}"));
            }
        } else {
            let text = String::from_utf8_lossy(&self.value);
            escape_value(&normalize_text(&text), &mut out);
        }
        out
    }

    fn render(&self, out: &mut String) {
        out.push_str(&self.attr);
        out.push('=');
        if self.hex {
            out.push('#');
            for b in &self.value {
                out.push_str(&format!("{b:02X}"));
            }
        } else {
            escape_value(&String::from_utf8_lossy(&self.value), out);
        }
    }
}

/// Case-folds a text value and removes insignificant spaces (leading, trailing, and runs
/// inside collapsed to one), the `caseIgnoreMatch` preparation applied to every value
/// since Tether has no schema to say otherwise.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_lowercase());
    }
    out
}

/// A relative distinguished name: one or more AVAs joined by `+`.
#[derive(Debug, Clone)]
pub struct Rdn {
    /// The AVAs in the order written (display order).
    avas: Vec<Ava>,
    /// Normalized form with AVAs sorted, so `cn=a+sn=b` equals `SN=B+CN=A`.
    norm: String,
}

impl Rdn {
    /// Builds an RDN from its AVAs; refuses an empty list and repeated types.
    pub fn new(avas: Vec<Ava>) -> Result<Self, DnError> {
        if avas.is_empty() {
            return Err(DnError::EmptyRdn(0));
        }
        let mut parts: Vec<String> = avas.iter().map(Ava::normalized).collect();
        let mut types: Vec<String> = avas.iter().map(|a| a.attr.to_ascii_lowercase()).collect();
        types.sort();
        if let Some(w) = types.windows(2).find(|w| w[0] == w[1]) {
            return Err(DnError::DuplicateAttributeInRdn(w[0].clone()));
        }
        parts.sort();
        Ok(Self { avas, norm: parts.join("+") })
    }

    /// Parses a single RDN such as the `newrdn` of a modrdn record. A second RDN is
    /// refused at the separator that starts it, `,` or `;`.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        let mut parser = Parser { src: s.as_bytes(), pos: 0 };
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
        &self.avas
    }

    /// The normalized text of this RDN.
    pub fn normalized(&self) -> &str {
        &self.norm
    }
}

impl PartialEq for Rdn {
    fn eq(&self, other: &Self) -> bool {
        self.norm == other.norm
    }
}
impl Eq for Rdn {}

impl fmt::Display for Rdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, ava) in self.avas.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            ava.render(&mut out);
        }
        f.write_str(&out)
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
        Parser { src: s.as_bytes(), pos: 0 }.dn()
    }

    /// Builds a DN from RDNs given leaf first.
    pub fn from_rdns(rdns: Vec<Rdn>) -> Self {
        let norm = rdns.iter().map(|r| r.norm.as_str()).collect::<Vec<_>>().join(",");
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
            key.extend_from_slice(rdn.norm.as_bytes());
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
        self.rdns.iter().rev().map(|r| r.norm.as_str()).cmp(other.rdns.iter().rev().map(|r| r.norm.as_str()))
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rdn}")?;
        }
        Ok(())
    }
}

/// RFC 4514 §2.4 escaping: specials anywhere, `#` and space at the start, space at the
/// end, and control characters as `\XX` (so normalized values never hold a separator).
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
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

/// Recursive-descent parser over the DN's bytes.
struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
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
        let mut avas = Vec::new();
        loop {
            avas.push(self.ava()?);
            if self.peek() == Some(b'+') {
                self.pos += 1;
                self.skip_spaces();
            } else {
                break;
            }
        }
        Rdn::new(avas)
    }

    fn ava(&mut self) -> Result<Ava, DnError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b'=' || c == b',' || c == b'+' || c == b';' {
                break;
            }
            self.pos += 1;
        }
        let raw = String::from_utf8_lossy(&self.src[start..self.pos]).trim_end().to_owned();
        if raw.is_empty() {
            return Err(DnError::EmptyRdn(start));
        }
        if self.peek() != Some(b'=') {
            return Err(DnError::MissingEquals(raw));
        }
        self.pos += 1;
        let attr = match raw.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("oid.") => raw[4..].to_owned(),
            _ => raw,
        };
        check_attribute_type(&attr)?;
        self.skip_spaces();
        match self.peek() {
            Some(b'#') => self.hex_value(attr),
            Some(b'"') => self.quoted_value(attr),
            _ => self.string_value(attr),
        }
    }

    fn hex_value(&mut self, attr: String) -> Result<Ava, DnError> {
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
        let value = digits.chunks(2).map(|p| (hex_digit(p[0]) << 4) | hex_digit(p[1])).collect();
        Ok(Ava { attr, value, hex: true })
    }

    fn quoted_value(&mut self, attr: String) -> Result<Ava, DnError> {
        self.pos += 1;
        let mut value = Vec::new();
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
        String::from_utf8(value.clone()).map_err(|_| DnError::InvalidUtf8)?;
        Ok(Ava { attr, value, hex: false })
    }

    fn string_value(&mut self, attr: String) -> Result<Ava, DnError> {
        let mut value = Vec::new();
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
        String::from_utf8(value.clone()).map_err(|_| DnError::InvalidUtf8)?;
        Ok(Ava { attr, value, hex: false })
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
