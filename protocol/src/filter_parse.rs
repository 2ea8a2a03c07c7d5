//! Parsing RFC 4515 filter strings into a [`Filter`]: the inverse of the `Display` in
//! `filter`, used wherever a filter arrives as text (configuration, agreement requests,
//! command lines).
//!
//! The grammar (RFC 4515 §3, with the RFC 4526 absolute true and false filters):
//!
//! ```text
//! filter     = "(" filtercomp ")"
//! filtercomp = "&" *filter / "|" *filter / "!" filter / item
//! item       = attr "=*"                                   ; presence
//!            / attr ("=" / "~=" / ">=" / "<=") value       ; "=" value may hold "*"
//! attr       = descr / numericoid, then *(";" option)
//! value      = *(any octet but NUL "(" ")" "*" "\" / "\" HEX HEX)
//! ```
//!
//! Beyond the RFC, as OpenLDAP's tools do, a bare `filtercomp` without the outer
//! parentheses is accepted (`objectClass=*`), and whitespace around the whole string is
//! ignored; anywhere else whitespace is part of a value or an error. Extensible match
//! (`(cn:dn:=x)`) is refused: Tether has no matching rules to run it with.
//!
//! Every error names the byte offset in the string as given, so a caller can point at
//! it. [`MAX_FILTER_LEN`] and [`MAX_FILTER_DEPTH`] bound the work and the recursion a
//! hostile filter can cause.

use std::str::FromStr;

use crate::entry::{check_attribute_name, Value};
use crate::filter::Filter;

/// Longest filter string accepted, in bytes. Filters arrive from peers' agreement
/// requests as well as from configuration; real ones are well under a kilobyte, and this
/// bound keeps the parse of a hostile one, and the filter it builds, small.
pub const MAX_FILTER_LEN: usize = 64 * 1024;

/// Deepest nesting of parenthesized filters accepted (`(a=b)` is depth 1, `(!(a=b))`
/// depth 2). Parsing, evaluation and rendering each recurse once per level, so this
/// bounds their stack use; real filters rarely nest beyond four or five levels.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Why a filter string was refused. Each variant with a `pos` names the byte offset (from
/// 0, in the string as given to [`Filter::parse`]) where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The string is empty or only whitespace. A caller meaning "every entry" should say
    /// `(objectClass=*)`; an empty string is more likely a missing setting.
    #[error("empty filter")]
    Empty,
    /// The string is longer than [`MAX_FILTER_LEN`].
    #[error("filter is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Length of the string given.
        len: usize,
        /// The limit, [`MAX_FILTER_LEN`].
        max: usize,
    },
    /// A `(` opens a level deeper than [`MAX_FILTER_DEPTH`].
    #[error("filter nests deeper than {max} levels at byte {pos}")]
    TooDeep {
        /// Offset of the `(` that went too deep.
        pos: usize,
        /// The limit, [`MAX_FILTER_DEPTH`].
        max: usize,
    },
    /// A `(` that is never closed, or a `)` that closes nothing.
    #[error("unbalanced parenthesis at byte {pos}")]
    UnbalancedParenthesis {
        /// Offset of the unmatched parenthesis.
        pos: usize,
    },
    /// `()`: parentheses with no filter inside.
    #[error("empty parentheses at byte {pos}")]
    EmptyParentheses {
        /// Offset of the `(`.
        pos: usize,
    },
    /// An attribute description that is not a descriptor or numeric OID with optional
    /// `;options` (this is also what stray whitespace around a name produces).
    #[error("invalid attribute description {attr:?} at byte {pos}")]
    InvalidAttribute {
        /// The description as written.
        attr: String,
        /// Offset of its first byte.
        pos: usize,
    },
    /// An attribute description not followed by `=`, `~=`, `>=` or `<=`.
    #[error("missing filter type ('=', '~=', '>=' or '<=') after {attr:?} at byte {pos}")]
    MissingOperator {
        /// The attribute description before it.
        attr: String,
        /// Offset where the filter type was expected.
        pos: usize,
    },
    /// An extensible match (`attr:dn:rule:=value`), which Tether cannot evaluate.
    #[error("extensible match is not supported (':' at byte {pos})")]
    ExtensibleMatch {
        /// Offset of the first `:`.
        pos: usize,
    },
    /// A `\` in a value not followed by two hex digits.
    #[error("invalid escape {text} at byte {pos}")]
    InvalidEscape {
        /// The backslash and up to two characters after it.
        text: String,
        /// Offset of the backslash.
        pos: usize,
    },
    /// A character a value must escape (`(` or NUL) written as is.
    #[error("unescaped {ch:?} in value at byte {pos}")]
    UnescapedInValue {
        /// The character.
        ch: char,
        /// Its offset.
        pos: usize,
    },
    /// An unescaped `*` in a `~=`, `>=` or `<=` value: only `=` takes substrings.
    #[error("'*' is only allowed after '=', not in a '{op}' value (byte {pos}); write \\2a for a literal '*'")]
    WildcardNotAllowed {
        /// The filter type the value belongs to.
        op: &'static str,
        /// Offset of the `*`.
        pos: usize,
    },
    /// Some other character where the grammar wants a particular one.
    #[error("expected {expected} at byte {pos}, found {}", describe(.found))]
    Unexpected {
        /// What the grammar allows here.
        expected: &'static str,
        /// What was there; `None` for the end of the filter.
        found: Option<char>,
        /// Its offset.
        pos: usize,
    },
    /// A complete filter followed by more text, as in `(a=b)(c=d)`.
    #[error("trailing characters after filter at byte {pos}")]
    TrailingCharacters {
        /// Offset of the first byte after the filter.
        pos: usize,
    },
    /// The filter parses, but its canonical form (what `Display` writes, and what
    /// crosses the wire to be parsed again) is longer than [`MAX_FILTER_LEN`]: a control
    /// character takes three bytes there (`\01`) and a bare filter gains its
    /// parentheses. Accepting it would hand a peer a filter it must refuse.
    #[error(
        "filter's canonical form is {len} bytes long, more than the limit of {max} (escapes take 3 bytes per octet)"
    )]
    CanonicalTooLong {
        /// Length of the canonical form.
        len: usize,
        /// The limit, [`MAX_FILTER_LEN`].
        max: usize,
    },
}

impl FilterError {
    /// The byte offset the error points at, for callers that underline it; `None` for
    /// errors about the string as a whole.
    pub fn position(&self) -> Option<usize> {
        match self {
            FilterError::Empty | FilterError::TooLong { .. } | FilterError::CanonicalTooLong { .. } => None,
            FilterError::TooDeep { pos, .. }
            | FilterError::UnbalancedParenthesis { pos }
            | FilterError::EmptyParentheses { pos }
            | FilterError::InvalidAttribute { pos, .. }
            | FilterError::MissingOperator { pos, .. }
            | FilterError::ExtensibleMatch { pos }
            | FilterError::InvalidEscape { pos, .. }
            | FilterError::UnescapedInValue { pos, .. }
            | FilterError::WildcardNotAllowed { pos, .. }
            | FilterError::Unexpected { pos, .. }
            | FilterError::TrailingCharacters { pos } => Some(*pos),
        }
    }
}

/// How `Unexpected` names what it found: the character, or the end of the filter.
fn describe(found: &Option<char>) -> String {
    match found {
        Some(c) => format!("{c:?}"),
        None => "end of filter".to_owned(),
    }
}

impl Filter {
    /// Parses an RFC 4515 filter string (see the module docs for the grammar and what is
    /// accepted beyond it). Values are unescaped to octets: a value that is not UTF-8
    /// after unescaping becomes a binary [`Value`].
    ///
    /// ```
    /// use tether_protocol::Filter;
    /// let f = Filter::parse("(&(objectClass=person)(cn=Ann*))")?;
    /// assert_eq!(f.to_string(), "(&(objectClass=person)(cn=Ann*))");
    /// assert_eq!(Filter::parse("objectClass=*")?, Filter::match_all());
    /// # Ok::<(), tether_protocol::FilterError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        if s.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { len: s.len(), max: MAX_FILTER_LEN });
        }
        let is_space = |c: char| c.is_ascii_whitespace();
        let start = s.len() - s.trim_start_matches(is_space).len();
        let end = s.trim_end_matches(is_space).len();
        if start >= end {
            return Err(FilterError::Empty);
        }
        let mut parser = Parser { src: s, pos: start, end };
        let filter = if parser.peek() == Some(b'(') { parser.parenthesized(1)? } else { parser.component(None, 1)? };
        match parser.peek() {
            None => {}
            Some(b')') => return Err(FilterError::UnbalancedParenthesis { pos: parser.pos }),
            Some(_) => return Err(FilterError::TrailingCharacters { pos: parser.pos }),
        }
        // What is accepted must parse again from its canonical form, which is what a
        // peer receives: the length limit holds for that form too.
        let canonical = filter.to_string().len();
        if canonical > MAX_FILTER_LEN {
            return Err(FilterError::CanonicalTooLong { len: canonical, max: MAX_FILTER_LEN });
        }
        Ok(filter)
    }
}

/// Same as [`Filter::parse`], so filters can be read with `str::parse` and by clap.
impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

/// The comparison an item makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `=`: equality, presence or substrings, depending on the `*`s in the value.
    Equal,
    /// `~=`.
    Approx,
    /// `>=`.
    GreaterOrEqual,
    /// `<=`.
    LessOrEqual,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::Approx => "~=",
            Op::GreaterOrEqual => ">=",
            Op::LessOrEqual => "<=",
        }
    }
}

/// Recursive-descent parser over the filter's bytes; recursion depth is bounded by
/// [`MAX_FILTER_DEPTH`].
struct Parser<'a> {
    /// The whole string as given, so offsets in errors are offsets into it.
    src: &'a str,
    /// Offset of the next byte to read.
    pos: usize,
    /// Offset just past the filter proper (trailing whitespace excluded).
    end: usize,
}

impl Parser<'_> {
    /// The byte at `at`, or `None` at or past the end of the filter.
    fn byte_at(&self, at: usize) -> Option<u8> {
        if at < self.end {
            self.src.as_bytes().get(at).copied()
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.byte_at(self.pos)
    }

    /// Text between two offsets; they always fall on ASCII bytes or the ends, so on
    /// character boundaries, but a slip yields an empty string rather than a panic.
    fn text(&self, from: usize, to: usize) -> &str {
        self.src.get(from..to).unwrap_or_default()
    }

    fn unexpected(&self, expected: &'static str) -> FilterError {
        let found = if self.pos < self.end {
            Some(self.text(self.pos, self.end).chars().next().unwrap_or(char::REPLACEMENT_CHARACTER))
        } else {
            None
        };
        FilterError::Unexpected { expected, found, pos: self.pos }
    }

    /// `"(" filtercomp ")"` with the `(` at the current position, opening level `depth`.
    fn parenthesized(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let open = self.pos;
        if depth > MAX_FILTER_DEPTH {
            return Err(FilterError::TooDeep { pos: open, max: MAX_FILTER_DEPTH });
        }
        self.pos += 1;
        let filter = self.component(Some(open), depth)?;
        match self.peek() {
            Some(b')') => {
                self.pos += 1;
                Ok(filter)
            }
            None => Err(FilterError::UnbalancedParenthesis { pos: open }),
            Some(_) => Err(self.unexpected("')'")),
        }
    }

    /// `filtercomp` at level `depth`; `open` is the offset of the enclosing `(`, or
    /// `None` for a bare filter, which ends at the end of the string instead of at `)`.
    fn component(&mut self, open: Option<usize>, depth: usize) -> Result<Filter, FilterError> {
        match self.peek() {
            Some(b'&') => {
                self.pos += 1;
                Ok(Filter::And(self.list(open, depth)?))
            }
            Some(b'|') => {
                self.pos += 1;
                Ok(Filter::Or(self.list(open, depth)?))
            }
            Some(b'!') => {
                self.pos += 1;
                if self.peek() != Some(b'(') {
                    return Err(self.unexpected("'(' after '!'"));
                }
                Ok(Filter::Not(Box::new(self.parenthesized(depth + 1)?)))
            }
            Some(b')') => Err(match open {
                Some(open) => FilterError::EmptyParentheses { pos: open },
                None => FilterError::UnbalancedParenthesis { pos: self.pos },
            }),
            Some(b'(') => Err(self.unexpected("an attribute description, '&', '|' or '!'")),
            None => Err(match open {
                Some(open) => FilterError::UnbalancedParenthesis { pos: open },
                None => FilterError::Empty,
            }),
            Some(_) => self.item(),
        }
    }

    /// The `*filter` of `&` and `|`, each sub-filter one level below `depth`.
    fn list(&mut self, open: Option<usize>, depth: usize) -> Result<Vec<Filter>, FilterError> {
        let mut filters = Vec::new();
        while self.peek() == Some(b'(') {
            filters.push(self.parenthesized(depth + 1)?);
        }
        match self.peek() {
            Some(c) if c != b')' && open.is_some() => Err(self.unexpected("'(' or ')'")),
            _ => Ok(filters),
        }
    }

    /// `attr op value`: presence, equality, substrings, ordering or approximate match.
    fn item(&mut self) -> Result<Filter, FilterError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b'=' | b'~' | b'>' | b'<' | b':' | b'(' | b')') {
                break;
            }
            self.pos += 1;
        }
        if self.peek() == Some(b':') {
            return Err(FilterError::ExtensibleMatch { pos: self.pos });
        }
        let attr = self.text(start, self.pos).to_owned();
        if check_attribute_name(&attr).is_err() {
            return Err(FilterError::InvalidAttribute { attr, pos: start });
        }
        let op = match (self.peek(), self.byte_at(self.pos + 1)) {
            (Some(b'='), _) => Op::Equal,
            (Some(b'~'), Some(b'=')) => Op::Approx,
            (Some(b'>'), Some(b'=')) => Op::GreaterOrEqual,
            (Some(b'<'), Some(b'=')) => Op::LessOrEqual,
            _ => return Err(FilterError::MissingOperator { attr, pos: self.pos }),
        };
        self.pos += op.symbol().len();
        let (mut parts, first_star) = self.value()?;
        if op != Op::Equal {
            if let Some(pos) = first_star {
                return Err(FilterError::WildcardNotAllowed { op: op.symbol(), pos });
            }
            let value = Value::from_bytes(parts.pop().unwrap_or_default());
            return Ok(match op {
                Op::Approx => Filter::Approx { attr, value },
                Op::GreaterOrEqual => Filter::GreaterOrEqual { attr, value },
                _ => Filter::LessOrEqual { attr, value },
            });
        }
        if parts.len() == 1 {
            let value = Value::from_bytes(parts.pop().unwrap_or_default());
            return Ok(Filter::Equality { attr, value });
        }
        if parts.len() == 2 && parts.iter().all(Vec::is_empty) {
            return Ok(Filter::Present { attr });
        }
        // At least two parts: initial before the first `*`, final after the last.
        let non_empty = |part: Vec<u8>| (!part.is_empty()).then(|| Value::from_bytes(part));
        let final_ = parts.pop().and_then(non_empty);
        let mut parts = parts.into_iter();
        let initial = parts.next().and_then(non_empty);
        let any = parts.map(Value::from_bytes).collect();
        Ok(Filter::Substring { attr, initial, any, final_ })
    }

    /// A value up to the closing `)` (or the end of a bare filter), unescaped and split
    /// at each unescaped `*`; also the offset of the first such `*`.
    fn value(&mut self) -> Result<(Vec<Vec<u8>>, Option<usize>), FilterError> {
        let mut parts = Vec::new();
        let mut current = Vec::new();
        let mut first_star = None;
        loop {
            match self.peek() {
                None | Some(b')') => break,
                Some(b'*') => {
                    first_star.get_or_insert(self.pos);
                    parts.push(std::mem::take(&mut current));
                    self.pos += 1;
                }
                Some(b'\\') => current.push(self.escape()?),
                Some(c @ (b'(' | b'\0')) => return Err(FilterError::UnescapedInValue { ch: c.into(), pos: self.pos }),
                Some(c) => {
                    current.push(c);
                    self.pos += 1;
                }
            }
        }
        parts.push(current);
        Ok((parts, first_star))
    }

    /// `\XX` at the current position, decoded to its octet.
    fn escape(&mut self) -> Result<u8, FilterError> {
        let at = self.pos;
        let digit = |offset| self.byte_at(at + offset).and_then(hex_digit);
        match (digit(1), digit(2)) {
            (Some(high), Some(low)) => {
                self.pos += 3;
                Ok((high << 4) | low)
            }
            _ => {
                let after: String =
                    self.text(at + 1, self.end).chars().take(ESCAPE_DIGITS).take_while(|&c| c != ')').collect();
                Err(FilterError::InvalidEscape { text: format!("\\{after}"), pos: at })
            }
        }
    }
}

/// Hex digits after the `\` of an escape.
const ESCAPE_DIGITS: usize = 2;

/// The value of one hex digit, either case.
fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::csn::Csn;
    use crate::dn::Dn;
    use crate::entry::{Attributes, Entry, EntryUuid};

    fn parse(s: &str) -> Filter {
        Filter::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn eq(attr: &str, value: &str) -> Filter {
        Filter::Equality { attr: attr.into(), value: value.into() }
    }

    fn eq_bytes(attr: &str, value: &[u8]) -> Filter {
        Filter::Equality { attr: attr.into(), value: Value::from_bytes(value) }
    }

    fn present(attr: &str) -> Filter {
        Filter::Present { attr: attr.into() }
    }

    fn sub(attr: &str, initial: Option<&str>, any: &[&str], final_: Option<&str>) -> Filter {
        Filter::Substring {
            attr: attr.into(),
            initial: initial.map(Value::from),
            any: any.iter().map(|&v| Value::from(v)).collect(),
            final_: final_.map(Value::from),
        }
    }

    fn ge(attr: &str, value: &str) -> Filter {
        Filter::GreaterOrEqual { attr: attr.into(), value: value.into() }
    }

    fn le(attr: &str, value: &str) -> Filter {
        Filter::LessOrEqual { attr: attr.into(), value: value.into() }
    }

    fn approx(attr: &str, value: &str) -> Filter {
        Filter::Approx { attr: attr.into(), value: value.into() }
    }

    fn not(f: Filter) -> Filter {
        Filter::Not(Box::new(f))
    }

    #[test]
    fn parse_table() {
        let table: Vec<(&str, Filter)> = vec![
            // RFC 4515 §4 examples.
            ("(cn=Babs Jensen)", eq("cn", "Babs Jensen")),
            ("(!(cn=Tim Howes))", not(eq("cn", "Tim Howes"))),
            (
                "(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))",
                Filter::And(vec![
                    eq("objectClass", "Person"),
                    Filter::Or(vec![eq("sn", "Jensen"), sub("cn", Some("Babs J"), &[], None)]),
                ]),
            ),
            ("(o=univ*of*mich*)", sub("o", Some("univ"), &["of", "mich"], None)),
            ("(seeAlso=)", eq("seeAlso", "")),
            (
                "(o=Parens R Us \\28for all your parenthetical needs\\29)",
                eq("o", "Parens R Us (for all your parenthetical needs)"),
            ),
            ("(cn=*\\2A*)", sub("cn", None, &["*"], None)),
            ("(filename=C:\\5cMyFile)", eq("filename", "C:\\MyFile")),
            ("(bin=\\00\\00\\00\\04)", eq_bytes("bin", &[0, 0, 0, 4])),
            ("(sn=Lu\\c4\\8di\\c4\\87)", eq("sn", "Lučić")),
            ("(1.3.6.1.4.1.1466.0=\\04\\02\\48\\69)", eq_bytes("1.3.6.1.4.1.1466.0", &[4, 2, 0x48, 0x69])),
            // Every item form.
            ("(cn=*)", present("cn")),
            ("(cn=a*)", sub("cn", Some("a"), &[], None)),
            ("(cn=*z)", sub("cn", None, &[], Some("z"))),
            ("(cn=*m*)", sub("cn", None, &["m"], None)),
            ("(cn=ab*c*d)", sub("cn", Some("ab"), &["c"], Some("d"))),
            ("(cn=**)", sub("cn", None, &[""], None)),
            ("(cn=a**b)", sub("cn", Some("a"), &[""], Some("b"))),
            ("(uidNumber>=1000)", ge("uidNumber", "1000")),
            ("(uidNumber<=1000)", le("uidNumber", "1000")),
            ("(cn~=jensen)", approx("cn", "jensen")),
            ("(cn>=)", ge("cn", "")),
            // Absolute true and false (RFC 4526), and nesting.
            ("(&)", Filter::And(vec![])),
            ("(|)", Filter::Or(vec![])),
            ("(!(&))", not(Filter::And(vec![]))),
            (
                "(&(|(!(a=1))(b>=2))(&(c~=3)(d=*)))",
                Filter::And(vec![
                    Filter::Or(vec![not(eq("a", "1")), ge("b", "2")]),
                    Filter::And(vec![approx("c", "3"), present("d")]),
                ]),
            ),
            // Attribute descriptions: options and OIDs.
            ("(cn;lang-en=x)", eq("cn;lang-en", "x")),
            ("(cn;lang-en;x-nick=x)", eq("cn;lang-en;x-nick", "x")),
            ("(2.5.4.3=x)", eq("2.5.4.3", "x")),
            ("(2.5.4.3;binary=*)", present("2.5.4.3;binary")),
            ("(x-custom-1=y)", eq("x-custom-1", "y")),
            // Escapes: either case, escaped specials, non-UTF-8 octets.
            ("(cn=\\2a)", eq("cn", "*")),
            ("(cn=a\\2A*)", sub("cn", Some("a*"), &[], None)),
            ("(cn=\\5c\\00)", eq_bytes("cn", b"\\\0")),
            ("(jpegPhoto=\\ff\\D8\\fF)", eq_bytes("jpegPhoto", &[0xff, 0xd8, 0xff])),
            (
                "(jpegPhoto=*\\ff*)",
                Filter::Substring {
                    attr: "jpegPhoto".into(),
                    initial: None,
                    any: vec![Value::from_bytes([0xff])],
                    final_: None,
                },
            ),
            // Unescaped text: UTF-8, spaces and operator characters inside values.
            ("(cn=Lučić)", eq("cn", "Lučić")),
            ("(cn= spaced  value )", eq("cn", " spaced  value ")),
            ("(description=a:b=c~d>e<f&g|h!i;j)", eq("description", "a:b=c~d>e<f&g|h!i;j")),
            ("(cn=\t)", eq("cn", "\t")),
            // Bare filters, and whitespace around the whole string.
            ("objectClass=*", present("objectClass")),
            ("cn=a*b", sub("cn", Some("a"), &[], Some("b"))),
            ("uidNumber>=5", ge("uidNumber", "5")),
            ("&(a=1)(b=2)", Filter::And(vec![eq("a", "1"), eq("b", "2")])),
            ("|", Filter::Or(vec![])),
            ("!(a=1)", not(eq("a", "1"))),
            ("  (cn=x)\t\n", eq("cn", "x")),
            ("  cn=x  ", eq("cn", "x")),
        ];
        for (s, want) in table {
            assert_eq!(parse(s), want, "{s:?}");
            assert_eq!(s.parse::<Filter>().as_ref(), Ok(&want), "FromStr agrees for {s:?}");
        }
    }

    #[test]
    fn canonical_strings_render_back_unchanged() {
        for s in [
            "(cn=Babs Jensen)",
            "(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))",
            "(o=univ*of*mich*)",
            "(cn=ab*c*d)",
            "(cn=**)",
            "(cn=a\\2a*)",
            "(o=Parens R Us \\28for all your parenthetical needs\\29)",
            "(bin=\\00\\00\\00\\04)",
            "(jpegPhoto=\\ff\\d8)",
            "(description=line\\0aline\\09tab\\c2\\85nel)",
            "(&)",
            "(|)",
            "(!(uidNumber>=1000))",
            "(cn~=x)",
            "(cn<=x)",
            "(2.5.4.3;binary=*)",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn error_table() {
        use FilterError::*;
        let unexpected = |pos, expected, found| Unexpected { expected, found, pos };
        let deep_ok = format!("{}(a=b){}", "(!".repeat(MAX_FILTER_DEPTH - 1), ")".repeat(MAX_FILTER_DEPTH - 1));
        assert!(Filter::parse(&deep_ok).is_ok(), "exactly MAX_FILTER_DEPTH levels are fine");
        let too_deep = format!("{}(a=b){}", "(!".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH));
        let too_long = format!("(cn={})", "a".repeat(MAX_FILTER_LEN));
        let table: Vec<(&str, FilterError)> = vec![
            ("", Empty),
            (" \t\n", Empty),
            ("(", UnbalancedParenthesis { pos: 0 }),
            (")", UnbalancedParenthesis { pos: 0 }),
            ("(cn=x", UnbalancedParenthesis { pos: 0 }),
            ("   (cn=x", UnbalancedParenthesis { pos: 3 }),
            ("(&(a=b)(c=d)", UnbalancedParenthesis { pos: 0 }),
            ("(&(a=b)(c=d)))", UnbalancedParenthesis { pos: 13 }),
            ("(&(a=b)(c=d)", UnbalancedParenthesis { pos: 0 }),
            ("(|(a=b)(c=d", UnbalancedParenthesis { pos: 7 }),
            ("(cn=x))", UnbalancedParenthesis { pos: 6 }),
            ("cn=x)", UnbalancedParenthesis { pos: 4 }),
            ("()", EmptyParentheses { pos: 0 }),
            ("(&())", EmptyParentheses { pos: 2 }),
            ("(c n=x)", InvalidAttribute { attr: "c n".into(), pos: 1 }),
            ("( cn=x)", InvalidAttribute { attr: " cn".into(), pos: 1 }),
            ("(cn =x)", InvalidAttribute { attr: "cn ".into(), pos: 1 }),
            ("(=x)", InvalidAttribute { attr: "".into(), pos: 1 }),
            ("(c_n=x)", InvalidAttribute { attr: "c_n".into(), pos: 1 }),
            ("(cn;=x)", InvalidAttribute { attr: "cn;".into(), pos: 1 }),
            ("(1cn=x)", InvalidAttribute { attr: "1cn".into(), pos: 1 }),
            ("(c*n=x)", InvalidAttribute { attr: "c*n".into(), pos: 1 }),
            ("(cn)", MissingOperator { attr: "cn".into(), pos: 3 }),
            ("(cn~x)", MissingOperator { attr: "cn".into(), pos: 3 }),
            ("(cn>x)", MissingOperator { attr: "cn".into(), pos: 3 }),
            ("cn", MissingOperator { attr: "cn".into(), pos: 2 }),
            ("(cn:dn:=x)", ExtensibleMatch { pos: 3 }),
            ("(cn:=x)", ExtensibleMatch { pos: 3 }),
            ("(:2.5.13.5:=x)", ExtensibleMatch { pos: 1 }),
            ("(cn=a\\zz)", InvalidEscape { text: "\\zz".into(), pos: 5 }),
            ("(cn=x)(ou=\\zz)", TrailingCharacters { pos: 6 }),
            ("(cn=\\4)", InvalidEscape { text: "\\4".into(), pos: 4 }),
            ("(cn=\\4g)", InvalidEscape { text: "\\4g".into(), pos: 4 }),
            ("(cn=\\", InvalidEscape { text: "\\".into(), pos: 4 }),
            ("(cn=\\é1)", InvalidEscape { text: "\\é1".into(), pos: 4 }),
            ("(cn=a(b)", UnescapedInValue { ch: '(', pos: 5 }),
            ("(cn=a\0)", UnescapedInValue { ch: '\0', pos: 5 }),
            ("(cn>=a*)", WildcardNotAllowed { op: ">=", pos: 6 }),
            ("(cn<=*)", WildcardNotAllowed { op: "<=", pos: 5 }),
            ("(cn~=*)", WildcardNotAllowed { op: "~=", pos: 5 }),
            ("((cn=x))", unexpected(1, "an attribute description, '&', '|' or '!'", Some('('))),
            ("(& (cn=x))", unexpected(2, "'(' or ')'", Some(' '))),
            ("(&(cn=x) )", unexpected(8, "'(' or ')'", Some(' '))),
            ("(&(cn=x)é)", unexpected(8, "'(' or ')'", Some('é'))),
            ("(!)", unexpected(2, "'(' after '!'", Some(')'))),
            ("(!", unexpected(2, "'(' after '!'", None)),
            ("(! (a=b))", unexpected(2, "'(' after '!'", Some(' '))),
            ("(!(a=b)(c=d))", unexpected(7, "')'", Some('('))),
            ("(cn=x)y", TrailingCharacters { pos: 6 }),
            ("(cn=x) (sn=y)", TrailingCharacters { pos: 6 }),
            ("&(a=b)x", TrailingCharacters { pos: 6 }),
            (&too_deep, TooDeep { pos: 2 * MAX_FILTER_DEPTH, max: MAX_FILTER_DEPTH }),
            (&too_long, TooLong { len: MAX_FILTER_LEN + 5, max: MAX_FILTER_LEN }),
        ];
        for (s, want) in table {
            let got = Filter::parse(s);
            assert_eq!(got.as_ref(), Err(&want), "{s:?}");
        }
    }

    /// Found while writing the `filter` fuzz target's round-trip property (its inputs,
    /// at most 4 KiB, are too short to reach it): a filter of raw control characters, or
    /// a bare one, parsed within the length limit but rendered beyond it, so the string
    /// sent to a peer (a filter crosses the wire as its canonical form) was refused there.
    #[test]
    fn a_filter_whose_canonical_form_is_too_long_is_refused() {
        let controls = format!("(cn={})", "\u{1}".repeat(MAX_FILTER_LEN - 5));
        let bare = format!("cn={}", "x".repeat(MAX_FILTER_LEN - 3));
        for (s, canonical) in [(&controls, 5 + 3 * (MAX_FILTER_LEN - 5)), (&bare, MAX_FILTER_LEN + 2)] {
            assert_eq!(s.len(), MAX_FILTER_LEN);
            assert_eq!(Filter::parse(s), Err(FilterError::CanonicalTooLong { len: canonical, max: MAX_FILTER_LEN }));
            crate::properties::filter(s);
        }
        let fits = format!("cn={}", "x".repeat(MAX_FILTER_LEN - 5));
        assert_eq!(Filter::parse(&Filter::parse(&fits).unwrap().to_string()), Filter::parse(&fits));
        assert_eq!(
            FilterError::CanonicalTooLong { len: 70_000, max: MAX_FILTER_LEN }.to_string(),
            "filter's canonical form is 70000 bytes long, more than the limit of 65536 (escapes take 3 bytes per octet)"
        );
    }

    #[test]
    fn error_messages_name_position_and_reason() {
        let message = |s: &str| Filter::parse(s).map_err(|e| e.to_string()).err();
        let cases = [
            ("(&(cn=a)(sn=b)", "unbalanced parenthesis at byte 0"),
            ("(cn=a))", "unbalanced parenthesis at byte 6"),
            ("(c n=x)", "invalid attribute description \"c n\" at byte 1"),
            ("(cn=ab\\zz)", "invalid escape \\zz at byte 6"),
            ("", "empty filter"),
            ("(cn=x)(sn=y)", "trailing characters after filter at byte 6"),
            ("(cn:dn:=x)", "extensible match is not supported (':' at byte 3)"),
            ("(!x)", "expected '(' after '!' at byte 2, found 'x'"),
            ("(!", "expected '(' after '!' at byte 2, found end of filter"),
        ];
        for (s, want) in cases {
            assert_eq!(message(s).as_deref(), Some(want), "{s:?}");
        }
        assert_eq!(Filter::parse("(cn=\\zz)").err().and_then(|e| e.position()), Some(4));
        assert_eq!(FilterError::Empty.position(), None);
    }

    #[test]
    fn hostile_nesting_is_refused_without_deep_recursion() {
        // Far deeper than any stack could recurse, yet within the length limit.
        let depth = MAX_FILTER_LEN / 2 - 1;
        for s in ["(&".repeat(depth), "(!".repeat(depth), "(|".repeat(depth)] {
            assert_eq!(
                Filter::parse(&s),
                Err(FilterError::TooDeep { pos: 2 * MAX_FILTER_DEPTH, max: MAX_FILTER_DEPTH })
            );
        }
    }

    /// A directory of three people to evaluate filters against.
    fn directory() -> Vec<(&'static str, Entry)> {
        let entry = |uid: &str, attrs: &[(&str, &[&[u8]])]| {
            let mut a = Attributes::new();
            for (name, values) in attrs {
                a.add(name, values.iter().map(|v| Value::from_bytes(*v))).unwrap();
            }
            Entry {
                dn: Dn::parse(&format!("uid={uid},ou=people,dc=example,dc=com")).unwrap(),
                uuid: EntryUuid::new_random(),
                csn: Csn(1),
                attrs: a,
            }
        };
        vec![
            (
                "ann",
                entry(
                    "ann",
                    &[
                        ("objectClass", &[b"top", b"person", b"posixAccount"]),
                        ("uid", &[b"ann"]),
                        ("cn", &[b"Ann  Lee"]),
                        ("CN;lang-EN;x-nick", &[b"Annie"]),
                        ("sn", &[b"Lee"]),
                        ("uidNumber", &[b"1000"]),
                        ("mail", &[b"ann@example.com"]),
                    ],
                ),
            ),
            (
                "bob",
                entry(
                    "bob",
                    &[
                        ("objectClass", &[b"top", b"person"]),
                        ("uid", &[b"bob"]),
                        ("cn", &[b"Bob Smith"]),
                        ("sn", &[b"Smith"]),
                        ("uidNumber", &[b"999"]),
                        ("jpegPhoto", &[&[0xff, 0xd8, 0x00]]),
                    ],
                ),
            ),
            (
                "carl",
                entry(
                    "carl",
                    &[
                        ("objectClass", &[b"top", b"account"]),
                        ("uid", &[b"carl"]),
                        ("cn", &[b"Carl"]),
                        ("sn", &[b"O'Neil"]),
                        ("uidNumber", &[b"10000"]),
                        ("description", &[b"a*b (c)", b"aba"]),
                    ],
                ),
            ),
        ]
    }

    #[test]
    fn evaluate_table() {
        let dir = directory();
        let all: &[&str] = &["ann", "bob", "carl"];
        let table: &[(&str, &[&str])] = &[
            ("(objectClass=*)", all),
            ("objectClass=*", all),
            ("(OBJECTCLASS=PERSON)", &["ann", "bob"]),
            // Values compare case-folded with insignificant spaces removed.
            ("(cn=ann lee)", &["ann"]),
            ("(CN=  ANN   LEE )", &["ann"]),
            ("(cn=ann)", &[]),
            // A subtype with options is matched by its base name...
            ("(cn=annie)", &["ann"]),
            ("(cn=*)", all),
            // ...and by any subset of its options, in any order and case.
            ("(cn;lang-en=annie)", &["ann"]),
            ("(cn;X-NICK;lang-en=annie)", &["ann"]),
            ("(cn;lang-fr=annie)", &[]),
            ("(cn;lang-en=ann lee)", &[]),
            // Substrings: initial, any, final, in order and without overlap.
            ("(cn=ann*)", &["ann"]),
            ("(cn=*smith)", &["bob"]),
            ("(cn=*o*)", &["bob"]),
            ("(cn=b*b*h)", &["bob"]),
            ("(cn=b*o*o*)", &[]),
            ("(cn=c*r*l)", &["carl"]),
            ("(description=ab*ba)", &[]),
            ("(description=a*a)", &["carl"]),
            ("(description=*\\2a*)", &["carl"]),
            ("(description=a\\2ab \\28c\\29)", &["carl"]),
            ("(description=A\\2AB*)", &["carl"]),
            // Spaces at the edge of a substring part match only at a word boundary.
            ("(cn=ann *)", &["ann"]),
            ("(cn=* lee)", &["ann"]),
            ("(cn=*n l*)", &["ann"]),
            ("(sn=*lee)", &["ann"]),
            // Ordering: numeric when both sides are integers, else by text.
            ("(uidNumber>=1000)", &["ann", "carl"]),
            ("(uidNumber<=999)", &["bob"]),
            ("(uidNumber>=-5)", all),
            ("(uidNumber<=100000000000000000000000000000000000000000)", all),
            ("(uidNumber>=100000000000000000000000000000000000000000)", &[]),
            ("(sn>=m)", &["bob", "carl"]),
            ("(sn<=LEE)", &["ann"]),
            ("(uid>=b)", &["bob", "carl"]),
            // Approximate match is equality without a phonetic rule.
            ("(mail~=ANN@EXAMPLE.COM)", &["ann"]),
            // Binary values compare as octets.
            ("(jpegPhoto=\\ff\\d8\\00)", &["bob"]),
            ("(jpegPhoto=\\FF\\D8\\00)", &["bob"]),
            ("(jpegPhoto=\\ff\\d8)", &[]),
            ("(jpegPhoto=\\ff*)", &["bob"]),
            // Boolean combinations and the absolute filters.
            ("(&(objectClass=person)(uidNumber>=1000))", &["ann"]),
            ("(|(uid=ann)(cn=carl))", &["ann", "carl"]),
            ("(!(objectClass=posixAccount))", &["bob", "carl"]),
            ("(&(!(uid=ann))(|(sn=smith)(sn=o'neil)))", &["bob", "carl"]),
            ("(&)", all),
            ("(|)", &[]),
            ("(!(&))", &[]),
            ("(!(|))", all),
            // An absent attribute is false; its negation true.
            ("(missing=*)", &[]),
            ("(missing=x)", &[]),
            ("(!(missing=x))", all),
        ];
        for (s, want) in table {
            let filter = parse(s);
            let got: Vec<&str> = dir.iter().filter(|(_, e)| filter.matches(e)).map(|(name, _)| *name).collect();
            assert_eq!(got, *want, "{s}");
        }
        assert!(dir.iter().all(|(_, e)| Filter::And(vec![]).matches(e)), "empty AND is absolute true");
        assert!(!dir.iter().any(|(_, e)| Filter::Or(vec![]).matches(e)), "empty OR is absolute false");
    }

    fn attr_strategy() -> BoxedStrategy<String> {
        prop_oneof![
            "[a-zA-Z][a-zA-Z0-9-]{0,6}(;[a-zA-Z0-9-]{1,5}){0,2}",
            "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(;[a-z]{1,5})?",
        ]
        // `dn` names the entry, not an attribute, and is refused in a filter.
        .prop_filter("dn is not an attribute name", |a| {
            !a.split(';').next().is_some_and(|b| b.eq_ignore_ascii_case("dn"))
        })
        .boxed()
    }

    fn value_strategy() -> BoxedStrategy<Value> {
        prop_oneof![
            "[a-zA-Z0-9 *()\\\\\u{0}é:=~<>&|!;]{0,8}".prop_map(Value::from),
            ".{0,6}".prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::from_bytes),
        ]
        .boxed()
    }

    fn non_empty_value_strategy() -> impl Strategy<Value = Value> {
        value_strategy().prop_filter("substring parts other than `any` are never empty", |v| !v.as_bytes().is_empty())
    }

    /// Filters as the parser produces them: a `Substring` has at least one part and no
    /// empty initial or final part (`(a=*)` is presence, `(a=*x)` has no initial).
    fn filter_strategy() -> impl Strategy<Value = Filter> {
        let item = (attr_strategy(), value_strategy());
        let leaf = prop_oneof![
            item.clone().prop_map(|(attr, value)| Filter::Equality { attr, value }),
            item.clone().prop_map(|(attr, value)| Filter::Approx { attr, value }),
            item.clone().prop_map(|(attr, value)| Filter::GreaterOrEqual { attr, value }),
            item.prop_map(|(attr, value)| Filter::LessOrEqual { attr, value }),
            attr_strategy().prop_map(|attr| Filter::Present { attr }),
            (
                attr_strategy(),
                proptest::option::of(non_empty_value_strategy()),
                proptest::collection::vec(value_strategy(), 0..3),
                proptest::option::of(non_empty_value_strategy()),
            )
                .prop_filter("a substring with no parts is a presence filter", |(_, i, a, f)| {
                    i.is_some() || !a.is_empty() || f.is_some()
                })
                .prop_map(|(attr, initial, any, final_)| Filter::Substring { attr, initial, any, final_ }),
        ];
        leaf.prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::Or),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(f in filter_strategy()) {
            let s = f.to_string();
            prop_assert_eq!(Filter::parse(&s), Ok(f), "{}", s);
        }

        #[test]
        fn arbitrary_strings_keep_the_filter_properties(
            s in prop_oneof![any::<String>(), "[()&|!=*~<>:;\\\\a-c0-9 .\u{0}é-]{0,40}"],
        ) {
            // Whatever is accepted renders to a string that parses back the same (the
            // `filter` fuzz target's properties).
            crate::properties::filter(&s);
        }

        #[test]
        fn damaged_filters_keep_the_filter_properties(
            f in filter_strategy(),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec!["", "(", ")", "*", "\\", "\\4", "=", ":", " ", "é", "&", "!"]),
            drop in 0usize..3,
        ) {
            let s = f.to_string();
            let mut at = cut.index(s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let rest: String = s[at..].chars().skip(drop).collect();
            let damaged = format!("{}{insert}{rest}", &s[..at]);
            crate::properties::filter(&damaged);
        }
    }
}
