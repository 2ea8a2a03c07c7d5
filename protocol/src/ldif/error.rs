//! Why an LDIF text was refused: [`LdifError`] is the 1-based line plus an
//! [`LdifErrorKind`], and its message always reads `line N: reason`, which is what
//! `tether-provider load`/`write` print to the operator.

use std::io;

use crate::dn::DnError;
use crate::entry::AttributeError;

/// Longest piece of input quoted in an error message, in characters: hostile input can
/// hold a 16 MiB line, and an error message must stay readable (and small).
pub const MAX_QUOTED_CHARS: usize = 64;

/// An LDIF parse error: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LdifError {
    /// The 1-based physical line the problem is on (for a folded line, the line it
    /// starts on), so the operator can open the file there.
    pub line: usize,
    /// What is wrong, as a value a caller can match on.
    pub kind: LdifErrorKind,
}

impl LdifError {
    /// An error at `line`.
    pub fn new(line: usize, kind: LdifErrorKind) -> Self {
        Self { line, kind }
    }

    /// Whether the reader stopped for good after this error. Only a read failure does:
    /// after any other error the reader skips the rest of the offending record and
    /// carries on with the next one, so a caller may list every bad record at once.
    pub fn is_fatal(&self) -> bool {
        matches!(self.kind, LdifErrorKind::Io { .. } | LdifErrorKind::Utf16)
    }
}

/// What is wrong with a piece of LDIF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdifErrorKind {
    /// The underlying reader failed; nothing after this point was read.
    #[error("read failed: {message}")]
    Io {
        /// The I/O error's kind, for callers that retry on some kinds.
        kind: io::ErrorKind,
        /// The I/O error's text.
        message: String,
    },
    /// The input starts with a UTF-16 byte order mark: every line of it would be refused
    /// as garbage, so the reader says what the file is once and stops.
    #[error(
        "the file is UTF-16 (Windows PowerShell 5 writes that with `>`), and LDIF is UTF-8: convert it first \
         (`iconv -f UTF-16 -t UTF-8`, or `Out-File -Encoding utf8`)"
    )]
    Utf16,
    /// A record (or one line) is larger than the reader's limit
    /// ([`super::MAX_RECORD_BYTES`] by default); refused so hostile input cannot make
    /// the reader allocate without bound.
    #[error("record is larger than the {limit}-byte limit")]
    RecordTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// A line starting with a space (a folded continuation) with no line before it in
    /// the record to continue.
    #[error("continuation line (starting with a space) has no line before it to continue")]
    OrphanContinuation,
    /// A carriage return inside a line. LDIF lines end in LF or CRLF, and a value holding
    /// a CR is written in base64 (RFC 2849's SAFE-STRING has none), so a CR there is a
    /// file whose lines end in CR alone (classic Mac OS): read on, the whole file would
    /// be one line, refused as a record with no attributes.
    #[error(
        "a carriage return (CR) inside the line: LDIF lines end in LF or CRLF, and a value holding a CR is written \
         in base64 (`name:: ...`); a file whose lines end in CR alone converts with `tr '\\r' '\\n'`"
    )]
    BareCarriageReturn,
    /// A line with no `:` between attribute name and value.
    #[error("no ':' after the attribute name in {line:?}")]
    MissingColon {
        /// The line (shortened).
        line: String,
    },
    /// A `::` value that is not valid (padded, standard-alphabet) base64.
    #[error("base64 value of {attr:?} is not valid")]
    InvalidBase64 {
        /// The attribute (or `dn`, `newrdn`, …) the value belongs to.
        attr: String,
    },
    /// A `:<` URL value. Refused on purpose: a replication tool that opens files or URLs
    /// named inside the data it is fed is a security surprise (`file:///etc/shadow`).
    #[error("URL value (\":<\") of {attr:?} refused: Tether never reads files or URLs named in LDIF ({url:?})")]
    UrlValueRefused {
        /// The attribute the value belongs to.
        attr: String,
        /// The URL (shortened).
        url: String,
    },
    /// A value that must be text (a DN, a keyword such as `changetype`) is not UTF-8.
    #[error("value of {attr:?} is not valid UTF-8")]
    NotUtf8 {
        /// The line's name (`dn`, `changetype`, …).
        attr: String,
    },
    /// A `dn:` or `newsuperior:` value that is not a valid DN.
    #[error("invalid DN {dn:?}: {source}")]
    InvalidDn {
        /// The DN text (shortened).
        dn: String,
        /// Why [`crate::Dn::parse`] refused it.
        source: DnError,
    },
    /// A `newrdn:` value that is not a single valid RDN.
    #[error("invalid newrdn {rdn:?}: {source}")]
    InvalidRdn {
        /// The RDN text (shortened).
        rdn: String,
        /// Why [`crate::Rdn::parse`] refused it.
        source: DnError,
    },
    /// A record whose first line is not `dn:`.
    #[error("attribute line {found:?} before any dn:{}", ldapsearch_trailer_hint(found))]
    MissingDn {
        /// The name of the line found instead (shortened).
        found: String,
    },
    /// A `version:` line anywhere but before the first record.
    #[error("version: is only allowed at the start of the file")]
    MisplacedVersion,
    /// A `version:` other than 1.
    #[error("LDIF version {version:?} unsupported (only version 1 exists)")]
    UnsupportedVersion {
        /// The version given (shortened).
        version: String,
    },
    /// A second `dn:` inside one record, almost always a missing blank line.
    #[error("second dn: line in one record (records are separated by a blank line)")]
    SecondDn,
    /// A content or add record with no attributes; no directory accepts such an entry.
    #[error("record for {dn:?} has no attributes")]
    NoAttributes {
        /// The record's DN.
        dn: String,
    },
    /// An attribute name that is not a descriptor or numeric OID with optional `;options`.
    #[error("invalid attribute name {name:?}")]
    InvalidAttributeName {
        /// The name (shortened).
        name: String,
    },
    /// The same value twice for one attribute of a content/add record, or in one section
    /// of a modify record (compared with the attribute's matching rule); LDAP refuses
    /// such an add or modification.
    #[error("attribute {attr:?} has value {value:?} twice")]
    DuplicateValue {
        /// The attribute.
        attr: String,
        /// The repeated value (shortened).
        value: String,
    },
    /// Another refusal from the attribute model.
    #[error(transparent)]
    Attribute(AttributeError),
    /// A `control:` line. Refused rather than skipped: Tether implements no LDAP
    /// controls, and silently dropping one (possibly marked critical) would apply the
    /// change with a meaning its author did not intend.
    #[error("control: lines are refused: Tether implements no LDAP controls (control {control:?})")]
    ControlRefused {
        /// The control's value (shortened).
        control: String,
    },
    /// A `changetype:` other than add, delete, modify, modrdn and moddn.
    #[error("changetype {changetype:?} unknown")]
    UnknownChangeType {
        /// The value given (shortened).
        changetype: String,
    },
    /// An `increment:` section without exactly one value (RFC 4525: the amount).
    #[error("increment: of {attr:?} takes exactly one value, the amount, found {found}")]
    IncrementValues {
        /// The section's attribute.
        attr: String,
        /// How many values it had.
        found: usize,
    },
    /// An `add:` section without values: it changes nothing, yet made a change (a CSN,
    /// a change every consumer applies), and it is a slip, the values left out. OpenLDAP
    /// refuses it ("modify/add operation requires values").
    #[error("add: of {attr:?} has no values (an add adds at least one; a section's values follow its add: line)")]
    AddWithoutValues {
        /// The section's attribute.
        attr: String,
    },
    /// A line in a modify record where `add:`, `delete:`, `replace:` or `increment:` was
    /// expected.
    #[error("expected add:, delete:, replace: or increment: in a modify record, found {found:?}")]
    ExpectedModifyOp {
        /// The line's name found instead (shortened).
        found: String,
    },
    /// A value line for another attribute inside an `add:`/`delete:`/`replace:` section.
    #[error("{found:?} line inside the {op}: of {attr:?} (end that section with \"-\" first)")]
    ModifyValueMismatch {
        /// The section's operation (`add`, `delete`, `replace`).
        op: &'static str,
        /// The section's attribute.
        attr: String,
        /// The name found on the line (shortened).
        found: String,
    },
    /// A modrdn/moddn record that ends before a required line.
    #[error("{changetype} record is missing its {field}: line")]
    MissingField {
        /// The record kind (`modrdn`).
        changetype: &'static str,
        /// The missing line's name (`newrdn`, `deleteoldrdn`).
        field: &'static str,
    },
    /// A line that does not belong where it is (e.g. anything after `changetype: delete`).
    #[error("{found:?} line unexpected here; expected {expected}")]
    UnexpectedLine {
        /// The line's name (shortened).
        found: String,
        /// What may appear at this point.
        expected: &'static str,
    },
    /// A `deleteoldrdn:` other than 0 or 1.
    #[error("deleteoldrdn must be 0 or 1, found {value:?}")]
    InvalidDeleteOldRdn {
        /// The value given (shortened).
        value: String,
    },
}

impl From<AttributeError> for LdifErrorKind {
    fn from(err: AttributeError) -> Self {
        match err {
            AttributeError::InvalidName(name) => LdifErrorKind::InvalidAttributeName { name: shorten(&name) },
            // Shown already ([`crate::entry::shown_value`]), its length with it when cut,
            // which cutting again would lose; a value not shown so is cut here.
            AttributeError::DuplicateValue { attr, value } => LdifErrorKind::DuplicateValue {
                value: if value.chars().count() > 2 * MAX_QUOTED_CHARS { shorten(&value) } else { value },
                attr,
            },
            other => LdifErrorKind::Attribute(other),
        }
    }
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters (with `…` when cut), for quoting input
/// in an error message.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Like [`shorten`] for octets that may not be UTF-8.
pub(crate) fn shorten_bytes(bytes: &[u8]) -> String {
    // Four bytes per character at most: this bounds the lossy conversion's work.
    let head = &bytes[..bytes.len().min(MAX_QUOTED_CHARS * 4 + 1)];
    let text = String::from_utf8_lossy(head);
    let short = shorten(&text);
    if head.len() < bytes.len() && !short.ends_with('…') {
        format!("{short}…")
    } else {
        short
    }
}

/// `ldapsearch` without `-LLL` ends its output with a record of its own (`search: 2`,
/// `result: 0 Success`): the likeliest reason a file saved from it is refused there.
fn ldapsearch_trailer_hint(found: &str) -> &'static str {
    if found.eq_ignore_ascii_case("search") || found.eq_ignore_ascii_case("result") {
        " (the result summary ldapsearch prints without -LLL: delete it, or export with ldapsearch -LLL)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_line_and_reason() {
        let err = LdifError::new(3, LdifErrorKind::UnknownChangeType { changetype: "frob".into() });
        assert_eq!(err.to_string(), "line 3: changetype \"frob\" unknown");
        assert!(!err.is_fatal());
        let io = LdifError::new(1, LdifErrorKind::Io { kind: io::ErrorKind::Other, message: "boom".into() });
        assert!(io.is_fatal());
    }

    /// Input quoted from octets is cut at 64 characters, not 64 bytes: a line of
    /// non-ASCII text (a URL with a Cyrillic path, four-byte emoji) that fits is quoted
    /// whole, and one that does not is cut on a character, never inside one.
    #[test]
    fn quoted_octets_are_cut_at_64_characters_not_bytes() {
        let fits = "😀".repeat(MAX_QUOTED_CHARS);
        assert_eq!(shorten_bytes(fits.as_bytes()), fits);
        let cyrillic = "ж".repeat(40);
        assert_eq!(shorten_bytes(cyrillic.as_bytes()), cyrillic);
        let longer = "😀".repeat(MAX_QUOTED_CHARS + 1);
        assert_eq!(shorten_bytes(longer.as_bytes()), format!("{fits}…"));
    }

    /// The hint about ldapsearch's result summary is given whatever the case its
    /// `search:` or `result:` line is written in, as every LDIF name is read.
    #[test]
    fn the_ldapsearch_hint_ignores_case() {
        for found in ["search", "Result", "SEARCH"] {
            let said = LdifErrorKind::MissingDn { found: found.into() }.to_string();
            assert!(said.ends_with("or export with ldapsearch -LLL)"), "{said}");
        }
        let said = LdifErrorKind::MissingDn { found: "cn".into() }.to_string();
        assert_eq!(said, "attribute line \"cn\" before any dn:");
    }

    /// A duplicate value the attribute model already shows cut, with its length, keeps
    /// that length: cut a second time at 64 characters, the message lost how long the
    /// value was, which is what tells two long values apart.
    #[test]
    fn a_duplicate_value_already_shown_cut_keeps_its_length() {
        let shown = crate::entry::shown_value("description", "x".repeat(3000).as_bytes());
        assert!(shown.ends_with("… (3000 bytes)"), "{shown}");
        let err =
            LdifErrorKind::from(AttributeError::DuplicateValue { attr: "description".into(), value: shown.clone() });
        assert_eq!(err.to_string(), format!("attribute \"description\" has value {shown:?} twice"));
    }

    #[test]
    fn quoted_input_is_shortened() {
        let long = "x".repeat(1000);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(shorten("abc"), "abc");
        let bytes = vec![0xffu8; 1000];
        assert!(shorten_bytes(&bytes).chars().count() <= MAX_QUOTED_CHARS + 1);
        assert_eq!(shorten_bytes(b"ok"), "ok");
        let err = LdifErrorKind::from(AttributeError::DuplicateValue { attr: "cn".into(), value: long });
        assert!(err.to_string().len() < 200, "{err}");
    }
}
