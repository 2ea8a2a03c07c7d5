//! Writing canonical LDIF: one spelling for one content, so two replicas that converged
//! print byte-identical text, and every other directory's tools (`slapadd`, `ldapadd`,
//! `ldapmodify`) read it.
//!
//! The rules (also in `docs/ldif.md`):
//! - a record is its `dn:` line, its other lines, then one blank line;
//! - [`write_entries`] puts entries in tree order (parents first, [`Dn`]'s `Ord`);
//! - attributes in [`Attributes::canonical_order`] (`objectClass` first, then by name),
//!   names as stored, values in stored order; except that in a content record the
//!   attributes named like LDIF keywords (`changetype`, `control`) come last, because
//!   first after `dn:` they would make a reader take the record for a change record;
//! - a value that is not printable ASCII safe to write plainly ([`is_safe_string`]) is
//!   written in base64 after `::`; an empty value is `name:` with nothing after it;
//! - lines longer than [`FOLD_COLUMNS`] are folded (continuations start with one space);
//! - no `version:` line, as `slapcat` and `ldapsearch -LLL` print it.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::{keyword, LdifRecord};
use crate::change::{Change, ModOp};
use crate::dn::Dn;
use crate::entry::{check_attribute_name, Attribute, Attributes, Entry, EntryUuid};

/// Widest line written, in bytes (all output is ASCII, so also in columns); longer lines
/// are folded. 76 is what OpenLDAP's tools write.
pub const FOLD_COLUMNS: usize = 76;

/// Starts each folded continuation line.
const CONTINUATION_PREFIX: &str = " ";
/// Ends every line (LF, not CRLF, as OpenLDAP writes).
const NEWLINE: &str = "\n";
/// Lowest byte written plainly (the space).
const FIRST_PRINTABLE: u8 = b' ';
/// Highest byte written plainly (`~`); DEL and everything above go to base64.
const LAST_PRINTABLE: u8 = b'~';
/// Bytes a value may not start with when written plainly (RFC 2849 SAFE-INIT-CHAR):
/// a space would be taken for fill, `:` and `<` for the base64 and URL markers.
const UNSAFE_FIRST: [u8; 3] = [b' ', b':', b'<'];
/// A value may not end with a space when written plainly: readers (OpenLDAP's among
/// them) strip trailing spaces, so it would not come back the same.
const UNSAFE_LAST: u8 = b' ';
/// `deleteoldrdn:` values.
const DELETE_OLD_RDN: [&str; 2] = ["0", "1"];
/// Line names that, first after `dn:`, make a reader take the record for a change
/// record (`changetype:`, possibly after `control:` lines), so a content record must not
/// start with an attribute so named.
const KEYWORD_NAMES: [&str; 2] = [keyword::CHANGETYPE, keyword::CONTROL];

/// The shortest run of spaces that could fill a whole continuation line when folded:
/// a line of spaces alone reads as the blank line that ends a record (readers take
/// trailing fill for nothing), so the value would not come back.
const SPACES_FILLING_A_LINE: usize = FOLD_COLUMNS - CONTINUATION_PREFIX.len();

/// Whether `value` can be written plainly after `name: `. Stricter than RFC 2849's
/// SAFE-STRING on purpose: only printable ASCII (no control characters, no DEL, no
/// UTF-8), not starting with space, `:` or `<`, not ending with a space, and without a
/// run of spaces long enough to fill a folded line by itself. Everything else is
/// written in base64, which every reader decodes to the same octets.
pub fn is_safe_string(value: &[u8]) -> bool {
    let (Some(first), Some(last)) = (value.first(), value.last()) else { return true };
    !UNSAFE_FIRST.contains(first)
        && *last != UNSAFE_LAST
        && value.iter().all(|b| (FIRST_PRINTABLE..=LAST_PRINTABLE).contains(b))
        && !value.split(|&b| b != b' ').any(|run| run.len() >= SPACES_FILLING_A_LINE)
}

/// Writes one entry as a content record (its lines and the blank line after them).
/// Refuses (`InvalidInput`) an entry with no attributes, and one whose only attributes
/// are named like LDIF keywords with a `changetype` among them: no reader can take
/// either for an entry.
pub fn write_entry<W: Write + ?Sized>(out: &mut W, dn: &Dn, attrs: &Attributes) -> io::Result<()> {
    write_entry_record(out, dn, attrs, None)
}

/// What `search` prints for one entry: [`write_entry`], and with `uuids` the entry's
/// `entryUUID` as its last line, where `slapcat` puts the attributes its server
/// maintains. `tether-provider load` keeps that as the entry's identity, so a backup
/// printed with it restores every entry as the same entry.
pub fn write_search_result<W: Write + ?Sized>(out: &mut W, entry: &Entry, uuids: bool) -> io::Result<()> {
    write_entry_record(out, &entry.dn, &entry.attrs, uuids.then_some(&entry.uuid))
}

fn write_entry_record<W: Write + ?Sized>(
    out: &mut W,
    dn: &Dn,
    attrs: &Attributes,
    uuid: Option<&EntryUuid>,
) -> io::Result<()> {
    no_attributes_check(dn, attrs)?;
    let is_keyword = |name: &str| KEYWORD_NAMES.iter().any(|k| name.eq_ignore_ascii_case(k));
    let (keywords, others): (Vec<&Attribute>, Vec<&Attribute>) =
        attrs.canonical_order().partition(|a| is_keyword(&a.name));
    if others.is_empty() && keywords.iter().any(|a| a.name.eq_ignore_ascii_case(keyword::CHANGETYPE)) {
        let message = format!(
            "entry \"{dn}\" has only LDIF keyword attributes (changetype, control): it would read as a change record"
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    let mut record = Record::new(dn);
    record.attributes(others.into_iter().chain(keywords));
    if let Some(uuid) = uuid {
        record.line(ENTRY_UUID_NAME, uuid.to_string().as_bytes());
    }
    record.finish(out)
}

/// How `entryUUID` is spelled in what `search --uuids` prints (RFC 4530's spelling).
const ENTRY_UUID_NAME: &str = "entryUUID";

/// Writes entries as content records in tree order (whatever order they are given in),
/// the canonical form `search` prints. Only DN and attributes are written.
pub fn write_entries<W: Write + ?Sized>(out: &mut W, entries: &[Entry]) -> io::Result<()> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.dn.cmp(&b.dn));
    for entry in sorted {
        write_entry(out, &entry.dn, &entry.attrs)?;
    }
    Ok(())
}

/// Writes one change as a change record (`changetype: add|delete|modify|modrdn`).
/// Refuses (`InvalidInput`) an add with no attributes and a modification whose
/// attribute name is invalid, which would not read back.
pub fn write_change<W: Write + ?Sized>(out: &mut W, change: &Change) -> io::Result<()> {
    let mut record = Record::new(change.dn());
    record.line(keyword::CHANGETYPE, change.kind().as_bytes());
    match change {
        Change::Add { dn, attrs } => {
            no_attributes_check(dn, attrs)?;
            record.attributes(attrs.canonical_order());
        }
        Change::Delete { .. } => {}
        Change::Modify { mods, .. } => {
            for m in mods {
                check_attribute_name(&m.attr).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let op = match m.op {
                    ModOp::Add => keyword::ADD,
                    ModOp::Delete => keyword::DELETE,
                    ModOp::Replace => keyword::REPLACE,
                    ModOp::Increment => keyword::INCREMENT,
                };
                record.line(op, m.attr.as_bytes());
                for value in &m.values {
                    record.line(&m.attr, value.as_bytes());
                }
                record.raw(keyword::SECTION_END);
            }
        }
        Change::ModDn { new_rdn, delete_old_rdn, new_superior, .. } => {
            record.line(keyword::NEWRDN, new_rdn.to_string().as_bytes());
            record.line(keyword::DELETEOLDRDN, DELETE_OLD_RDN[usize::from(*delete_old_rdn)].as_bytes());
            if let Some(parent) = new_superior {
                record.line(keyword::NEWSUPERIOR, parent.to_string().as_bytes());
            }
        }
    }
    record.finish(out)
}

/// Writes changes as change records, in the order given (order is meaning here).
pub fn write_changes<W: Write + ?Sized>(out: &mut W, changes: &[Change]) -> io::Result<()> {
    changes.iter().try_for_each(|change| write_change(out, change))
}

/// Writes a record as read: a content record with [`write_entry`], a change record with
/// [`write_change`].
pub fn write_record<W: Write + ?Sized>(out: &mut W, record: &LdifRecord) -> io::Result<()> {
    match record {
        LdifRecord::Content { dn, attrs, .. } => write_entry(out, dn, attrs),
        LdifRecord::Change { change, .. } => write_change(out, change),
    }
}

fn no_attributes_check(dn: &Dn, attrs: &Attributes) -> io::Result<()> {
    if attrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("entry \"{dn}\" has no attributes")));
    }
    Ok(())
}

/// One record being built; written in one `write_all` so records never interleave.
struct Record {
    /// The record's text so far, every line folded and ended.
    text: String,
}

impl Record {
    /// A record starting with its `dn:` line.
    fn new(dn: &Dn) -> Self {
        let mut record = Self { text: String::new() };
        record.line(keyword::DN, dn.to_string().as_bytes());
        record
    }

    /// Appends `name: value`, `name:: base64` or `name:` (empty value), folded.
    fn line(&mut self, name: &str, value: &[u8]) {
        let mut line = String::with_capacity(name.len() + value.len() + 2);
        line.push_str(name);
        line.push(':');
        if value.is_empty() {
            // `name:` alone: no trailing fill for readers to strip or keep.
        } else if is_safe_string(value) {
            line.push(' ');
            line.extend(value.iter().map(|&b| char::from(b)));
        } else {
            line.push_str(": ");
            BASE64.encode_string(value, &mut line);
        }
        self.raw(&line);
    }

    /// Appends a line as is, folded at [`FOLD_COLUMNS`] without splitting a character.
    fn raw(&mut self, line: &str) {
        let mut rest = line;
        let mut width = FOLD_COLUMNS;
        while rest.len() > width {
            let mut cut = width;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&rest[..cut]);
            self.text.push_str(NEWLINE);
            self.text.push_str(CONTINUATION_PREFIX);
            rest = &rest[cut..];
            width = FOLD_COLUMNS - CONTINUATION_PREFIX.len();
        }
        self.text.push_str(rest);
        self.text.push_str(NEWLINE);
    }

    fn attributes<'a>(&mut self, attrs: impl Iterator<Item = &'a Attribute>) {
        for attr in attrs {
            for value in &attr.values {
                self.line(&attr.name, value.as_bytes());
            }
        }
    }

    /// Ends the record with its blank line and writes it.
    fn finish<W: Write + ?Sized>(mut self, out: &mut W) -> io::Result<()> {
        self.text.push_str(NEWLINE);
        out.write_all(self.text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Modification;
    use crate::csn::Csn;
    use crate::dn::Rdn;
    use crate::entry::{EntryUuid, Value};

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap()
    }

    fn attrs(pairs: &[(&str, &[u8])]) -> Attributes {
        let mut attrs = Attributes::new();
        for (name, value) in pairs {
            attrs.add(name, [Value::from_bytes(value.to_vec())]).unwrap();
        }
        attrs
    }

    fn entry_text(d: &Dn, a: &Attributes) -> String {
        let mut out = Vec::new();
        write_entry(&mut out, d, a).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn change_text(change: &Change) -> String {
        let mut out = Vec::new();
        write_change(&mut out, change).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn safe_strings_are_printable_ascii_without_unsafe_ends() {
        for safe in [&b""[..], b"a", b"John Smith", b"a b", b"#x", b"x:y", b"a<b", b"~tilde", b"-"] {
            assert!(is_safe_string(safe), "{safe:?}");
        }
        for unsafe_ in
            [&b" a"[..], b":a", b"<a", b"a ", b" ", b"a\nb", b"a\rb", b"a\0b", b"tab\t", b"\x7f", "é".as_bytes()]
        {
            assert!(!is_safe_string(unsafe_), "{unsafe_:?}");
        }
    }

    /// `search --uuids`: the entryUUID comes last, as slapcat prints it, and reads back
    /// as the entry's identity (what `load` keeps).
    #[test]
    fn a_search_result_with_its_uuid_reads_back_with_that_identity() {
        let uuid: crate::entry::EntryUuid = "0190b5a2-6c1e-7d3a-9f2b-4c8d1e2f3a4b".parse().unwrap();
        let entry = Entry {
            dn: dn("cn=Babs,dc=example,dc=com"),
            uuid,
            csn: crate::csn::Csn(7),
            attrs: attrs(&[("sn", b"Jensen"), ("objectClass", b"person"), ("cn", b"Babs")]),
        };
        let text = |uuids| {
            let mut out = Vec::new();
            write_search_result(&mut out, &entry, uuids).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(false), entry_text(&entry.dn, &entry.attrs));
        let with = text(true);
        assert_eq!(
            with,
            "dn: cn=Babs,dc=example,dc=com\n\
             objectClass: person\n\
             cn: Babs\n\
             sn: Jensen\n\
             entryUUID: 0190b5a2-6c1e-7d3a-9f2b-4c8d1e2f3a4b\n\
             \n"
        );
        let [record] = crate::ldif::reader::parse_str(&with).unwrap().try_into().unwrap();
        let Change::Add { mut attrs, .. } = record.into_change() else { panic!("a content record") };
        assert_eq!(attrs.take_operational().unwrap().uuid, Some(uuid));
        assert_eq!(attrs, entry.attrs);
    }

    #[test]
    fn entries_are_canonical_objectclass_first_base64_when_unsafe() {
        let a = attrs(&[
            ("sn", b"Jensen"),
            ("cn", b"Babs"),
            ("description", b" leading space"),
            ("objectClass", b"person"),
            ("jpegPhoto", &[0xff, 0xd8, 0x00]),
            ("title", b""),
            ("cn", b"Barbara"),
            ("o;lang-de", "Müller".as_bytes()),
        ]);
        assert_eq!(
            entry_text(&dn("cn=Babs,dc=example,dc=com"), &a),
            "dn: cn=Babs,dc=example,dc=com\n\
             objectClass: person\n\
             cn: Babs\n\
             cn: Barbara\n\
             description:: IGxlYWRpbmcgc3BhY2U=\n\
             jpegPhoto:: /9gA\n\
             o;lang-de:: TcO8bGxlcg==\n\
             sn: Jensen\n\
             title:\n\
             \n"
        );
    }

    #[test]
    fn non_ascii_dns_are_base64_and_the_root_dn_is_empty() {
        let text = entry_text(&dn("cn=Lučić,dc=x"), &attrs(&[("cn", "Lučić".as_bytes())]));
        assert_eq!(text, "dn:: Y249THXEjWnEhyxkYz14\ncn:: THXEjWnEhw==\n\n");
        assert_eq!(entry_text(&Dn::root(), &attrs(&[("objectClass", b"top")])), "dn:\nobjectClass: top\n\n");
    }

    #[test]
    fn long_lines_fold_at_76_columns() {
        let value = "a".repeat(100);
        let text = entry_text(&dn("cn=x"), &attrs(&[("description", value.as_bytes())]));
        let expected = format!("dn: cn=x\ndescription: {}\n {}\n\n", "a".repeat(63), "a".repeat(37));
        assert_eq!(text, expected);
        let binary: Vec<u8> = (0..=255u8).collect();
        let text = entry_text(&dn("cn=x"), &attrs(&[("jpegPhoto", &binary)]));
        for line in text.lines() {
            assert!(line.len() <= FOLD_COLUMNS, "{line:?}");
        }
        assert!(text.lines().skip(2).all(|l| l.is_empty() || l.starts_with(' ')));
    }

    /// Every folded line is exactly 76 columns wide, continuations included (their one
    /// space and 75 of the line), and a line of exactly 76 is not folded: the canonical
    /// form is OpenLDAP's, so two replicas (and `slapcat`) print the same bytes.
    #[test]
    fn folded_lines_fill_76_columns_continuations_included() {
        let fits = "a".repeat(FOLD_COLUMNS - "description: ".len());
        let text = entry_text(&dn("cn=x"), &attrs(&[("description", fits.as_bytes())]));
        assert_eq!(text, format!("dn: cn=x\ndescription: {fits}\n\n"), "76 columns fit on one line");
        let value = format!("{fits}{}{}", "b".repeat(75), "c".repeat(10));
        let text = entry_text(&dn("cn=x"), &attrs(&[("description", value.as_bytes())]));
        let expected = format!("dn: cn=x\ndescription: {fits}\n {}\n {}\n\n", "b".repeat(75), "c".repeat(10));
        assert_eq!(text, expected);
    }

    /// A run of spaces exactly as long as a continuation line, placed where folding would
    /// give it a line to itself: written plainly, it would be a line of spaces alone,
    /// which readers that take such a line for blank read as the end of the record. It
    /// is base64, as docs/ldif.md promises for a run of 75 spaces or more.
    #[test]
    fn a_run_of_spaces_as_long_as_a_continuation_line_is_base64_never_a_line_alone() {
        let first_line = "a".repeat(FOLD_COLUMNS - "description: ".len());
        let value = format!("{first_line}{}b", " ".repeat(SPACES_FILLING_A_LINE));
        let a = attrs(&[("objectClass", b"document"), ("description", value.as_bytes())]);
        let text = entry_text(&dn("cn=x"), &a);
        assert!(text.lines().all(|l| l.is_empty() || !l.trim().is_empty()), "a line of spaces alone: {text:?}");
        assert!(text.contains("\ndescription:: "), "{text:?}");
        let [record] = crate::ldif::reader::parse_str(&text).unwrap().try_into().unwrap();
        let Change::Add { attrs: read, .. } = record.into_change() else { panic!("a content record") };
        assert_eq!(read, a, "{text:?}");
    }

    #[test]
    fn entries_come_out_in_tree_order_byte_identically() {
        let make = |d: &str, pairs: &[(&str, &[u8])]| Entry {
            dn: dn(d),
            uuid: EntryUuid::new_random(),
            csn: Csn::ZERO,
            attrs: attrs(pairs),
        };
        let entries = vec![
            make("uid=b,ou=people,dc=x", &[("uid", b"b"), ("objectClass", b"account")]),
            make("ou=people,dc=x", &[("ou", b"people"), ("objectClass", b"organizationalUnit")]),
            make("dc=x", &[("objectClass", b"domain"), ("dc", b"x")]),
            make("uid=a,ou=people,dc=x", &[("objectClass", b"account"), ("uid", b"a")]),
        ];
        let mut first = Vec::new();
        write_entries(&mut first, &entries).unwrap();
        let mut reversed_entries = entries.clone();
        reversed_entries.reverse();
        let mut second = Vec::new();
        write_entries(&mut second, &reversed_entries).unwrap();
        assert_eq!(first, second);
        let text = String::from_utf8(first).unwrap();
        let dns: Vec<&str> = text.lines().filter(|l| l.starts_with("dn:")).collect();
        assert_eq!(dns, ["dn: dc=x", "dn: ou=people,dc=x", "dn: uid=a,ou=people,dc=x", "dn: uid=b,ou=people,dc=x"]);
        assert_eq!(text.matches("\n\n").count(), 4, "one blank line after each record");
    }

    #[test]
    fn change_records_of_every_kind() {
        let add = Change::Add { dn: dn("cn=a,dc=x"), attrs: attrs(&[("cn", b"a"), ("objectClass", b"person")]) };
        assert_eq!(change_text(&add), "dn: cn=a,dc=x\nchangetype: add\nobjectClass: person\ncn: a\n\n");
        let modify = Change::Modify {
            dn: dn("cn=a,dc=x"),
            mods: vec![
                Modification { op: ModOp::Add, attr: "mail".into(), values: vec!["a@x".into(), "b@x".into()] },
                Modification { op: ModOp::Delete, attr: "phone".into(), values: vec![] },
                Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from_bytes(vec![0u8])] },
            ],
        };
        assert_eq!(
            change_text(&modify),
            "dn: cn=a,dc=x\nchangetype: modify\nadd: mail\nmail: a@x\nmail: b@x\n-\ndelete: phone\n-\n\
             replace: sn\nsn:: AA==\n-\n\n"
        );
        let moddn = Change::ModDn {
            dn: dn("cn=a,dc=x"),
            new_rdn: Rdn::parse("cn=b").unwrap(),
            delete_old_rdn: true,
            new_superior: Some(dn("ou=new,dc=x")),
        };
        assert_eq!(
            change_text(&moddn),
            "dn: cn=a,dc=x\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\nnewsuperior: ou=new,dc=x\n\n"
        );
        let rename = Change::ModDn {
            dn: dn("cn=a,dc=x"),
            new_rdn: Rdn::parse("cn=b").unwrap(),
            delete_old_rdn: false,
            new_superior: None,
        };
        assert_eq!(change_text(&rename), "dn: cn=a,dc=x\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 0\n\n");
        assert_eq!(change_text(&Change::Delete { dn: dn("cn=a,dc=x") }), "dn: cn=a,dc=x\nchangetype: delete\n\n");
    }

    /// Found by the `ldif` fuzz target ("dn:\nn:\nchangetype:"): a content record with
    /// a `changetype` attribute after another one was written with `changetype` first,
    /// which reads back as a change record (here an unknown changetype).
    #[test]
    fn keyword_named_attributes_never_start_a_content_record() {
        let text = entry_text(&Dn::root(), &attrs(&[("n", b""), ("changetype", b""), ("Control", b"x")]));
        assert_eq!(text, "dn:\nn:\nchangetype:\nControl: x\n\n");
        let add = Change::Add { dn: Dn::root(), attrs: attrs(&[("n", b""), ("changetype", b"")]) };
        assert_eq!(change_text(&add), "dn:\nchangetype: add\nchangetype:\nn:\n\n", "an add has its changetype first");
        // A `control` alone reads back as an attribute; with a `changetype` it cannot.
        assert_eq!(entry_text(&dn("cn=a"), &attrs(&[("control", b"x")])), "dn: cn=a\ncontrol: x\n\n");
        let mut out = Vec::new();
        let err = write_entry(&mut out, &dn("cn=a"), &attrs(&[("control", b"x"), ("changeType", b"add")])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty());
    }

    /// Changes are written in the order given, never sorted: a delete before the add of
    /// the same DN means something else than after it.
    #[test]
    fn changes_are_written_in_the_order_given() {
        let add = Change::Add { dn: dn("cn=a,dc=x"), attrs: attrs(&[("cn", b"a")]) };
        let delete = Change::Delete { dn: dn("cn=a,dc=x") };
        let mut out = Vec::new();
        write_changes(&mut out, &[delete.clone(), add.clone()]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), change_text(&delete) + &change_text(&add));
    }

    /// Only a run of spaces that could fill a continuation line alone (75) makes a value
    /// base64: one space shorter, no fold can leave it a line to itself, and it is
    /// written plainly, as docs/ldif.md's canonical form says.
    #[test]
    fn a_run_of_spaces_one_short_of_a_continuation_line_is_written_plainly() {
        let value = format!("a{}b", " ".repeat(74));
        assert!(is_safe_string(value.as_bytes()));
        let text = entry_text(&dn("cn=x"), &attrs(&[("description", value.as_bytes())]));
        assert!(text.starts_with("dn: cn=x\ndescription: a "), "{text:?}");
    }

    /// `search --uuids` puts the entryUUID last in every entry, keyword-named attributes
    /// (which go after the others) included, as `write_search_result` says and slapcat
    /// does.
    #[test]
    fn the_entry_uuid_comes_after_keyword_named_attributes_too() {
        let entry = Entry {
            dn: dn("cn=a"),
            uuid: "0190b5a2-6c1e-7d3a-9f2b-4c8d1e2f3a4b".parse().unwrap(),
            csn: Csn::ZERO,
            attrs: attrs(&[("control", b"x"), ("cn", b"a")]),
        };
        let mut out = Vec::new();
        write_search_result(&mut out, &entry, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "dn: cn=a\ncn: a\ncontrol: x\nentryUUID: 0190b5a2-6c1e-7d3a-9f2b-4c8d1e2f3a4b\n\n"
        );
    }

    #[test]
    fn unloadable_input_is_refused() {
        let mut out = Vec::new();
        let err = write_entry(&mut out, &dn("cn=a"), &Attributes::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "entry \"cn=a\" has no attributes");
        let bad = Change::Modify {
            dn: dn("cn=a"),
            mods: vec![Modification { op: ModOp::Add, attr: "bad name:".into(), values: vec![] }],
        };
        assert_eq!(write_change(&mut out, &bad).map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));
        let empty_add = Change::Add { dn: dn("cn=a"), attrs: Attributes::new() };
        assert!(write_change(&mut out, &empty_add).is_err());
        assert!(out.is_empty(), "nothing written for a refused record");
    }
}
