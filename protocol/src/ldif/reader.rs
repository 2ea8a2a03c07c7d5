//! Reading LDIF: [`LdifReader`] turns any `BufRead` into a stream of [`LdifRecord`]s,
//! one record in memory at a time, so a file of any size is read in bounded memory.
//!
//! Reading goes in three steps, each a function below:
//! 1. physical lines, each bounded by the record limit (`read_physical`);
//! 2. logical lines: folded continuations joined, comments recognised
//!    (`next_logical`), gathered into a record up to the next blank line;
//! 3. the record's lines parsed into a content or change record (`parse_record`).
//!
//! After an error in a record the reader skips to the next blank line and goes on, so a
//! caller can stop at the first error (`tether-provider write`) or list them all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::error::{shorten, shorten_bytes, LdifError, LdifErrorKind};
use super::{keyword, LdifRecord, LDIF_VERSION, MAX_RECORD_BYTES};
use crate::change::{Change, ModOp, Modification};
use crate::dn::{Dn, Rdn};
use crate::entry::{check_attribute_name, parse_integer, AttributeError, Attributes, Value};

/// Ends a physical line (a CR right before it is dropped too, for CRLF files).
const LF: u8 = b'\n';
/// Dropped when it comes right before [`LF`].
const CR: u8 = b'\r';
/// Starts a folded continuation line; exactly this one byte is removed when joining.
const CONTINUATION: u8 = b' ';
/// The UTF-8 byte order mark that Windows editors put at the start of a file they save:
/// a mark of the encoding, not content. No LDIF line can start with it, so it is dropped
/// wherever a line starts with it (files saved that way and then concatenated).
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
/// The byte order marks that start a UTF-16 file (little-, then big-endian).
const UTF16_BOMS: [&[u8]; 2] = [b"\xff\xfe", b"\xfe\xff"];
/// Whether a physical line holds only spaces: a blank line to the eye, and to the reader.
fn is_spaces(line: &[u8]) -> bool {
    line.iter().all(|&b| b == CONTINUATION)
}

/// Whether a line read in pieces, its ending included, held only spaces: a carriage
/// return only right before the line feed.
#[derive(Debug)]
struct Spaces {
    only: bool,
    after_cr: bool,
}

impl Default for Spaces {
    fn default() -> Self {
        Self { only: true, after_cr: false }
    }
}

impl Spaces {
    fn see(&mut self, piece: &[u8]) {
        for &b in piece {
            match b {
                LF => {}
                CONTINUATION | CR if !self.after_cr => self.after_cr = b == CR,
                _ => self.only = false,
            }
        }
    }
}

/// Starts a comment line.
const COMMENT: u8 = b'#';
/// Separates a line's name from its value.
const SEPARATOR: u8 = b':';
/// After [`SEPARATOR`]: the value is base64.
const BASE64_MARK: u8 = b':';
/// After [`SEPARATOR`]: the value is a URL (refused).
const URL_MARK: u8 = b'<';
/// The `FILL` between separator and value (RFC 2849: any number of spaces).
const FILL: u8 = b' ';
/// What each line costs against the record limit beyond its bytes: roughly the memory
/// a parsed line takes besides its octets (a `Vec` header and bookkeeping), so a record
/// of millions of empty lines is bounded like one of a few long ones.
const LINE_OVERHEAD_BYTES: usize = 32;
/// The line ending a physical line may carry beyond the content the limit counts.
const MAX_LINE_ENDING_BYTES: usize = 2;
/// `deleteoldrdn:` values.
const DELETE_OLD_RDN_NO: &str = "0";
/// See [`DELETE_OLD_RDN_NO`].
const DELETE_OLD_RDN_YES: &str = "1";

/// Parses a whole LDIF text, stopping at the first error.
pub fn parse_str(text: &str) -> Result<Vec<LdifRecord>, LdifError> {
    LdifReader::new(text.as_bytes()).collect()
}

/// A streaming LDIF parser: an iterator of records over a `BufRead`.
///
/// Contract: records come out in file order; each carries the line of its `dn:`. An
/// `Err` names its line; after it the reader continues with the next record, except
/// after a read failure ([`LdifError::is_fatal`]), which ends the iteration. Memory use
/// is bounded by the record limit ([`MAX_RECORD_BYTES`] unless set otherwise), never by
/// the size of the input.
#[derive(Debug)]
pub struct LdifReader<R> {
    /// Where the text comes from.
    input: R,
    /// Number of the last physical line read (1-based; 0 before the first).
    line_no: usize,
    /// Physical lines read ahead to see whether they continue the line before (a run of
    /// lines of spaces, then the line after them); the first is the next line to use.
    lookahead: VecDeque<Physical>,
    /// Largest record (and line) accepted, in bytes.
    max_record_bytes: usize,
    /// Whether no record has been read yet, so a `version:` line is still allowed.
    at_start: bool,
    /// Set after an error in the middle of a record: the rest of it is skipped first.
    skip_record: bool,
    /// Set at the end of input or after a read failure: nothing more comes out.
    finished: bool,
}

/// One physical line as read.
#[derive(Debug)]
enum Physical {
    /// No more input.
    Eof,
    /// A line (number, content without its line ending).
    Line(usize, Vec<u8>),
    /// A line longer than the limit, dropped unread: its number, whether it was a
    /// continuation line (so it belongs to the line before it), and whether it held only
    /// spaces (so it is blank, as a shorter line of spaces is, unless the value it would
    /// continue goes on after it).
    TooLong(usize, bool, bool),
}

/// One logical line: its physical lines joined.
#[derive(Debug)]
struct Line {
    /// The physical line it starts on.
    number: usize,
    /// The unfolded content.
    bytes: Vec<u8>,
}

/// What the next logical line is.
#[derive(Debug)]
enum Logical {
    /// No more input.
    Eof,
    /// An empty line: the end of a record.
    Blank,
    /// A line dropped unread: a comment (with its continuations), or any line of a
    /// record being skipped.
    Dropped,
    /// A line of the record.
    Line(Line),
}

impl<R: BufRead> LdifReader<R> {
    /// A reader with the default record limit [`MAX_RECORD_BYTES`].
    pub fn new(input: R) -> Self {
        Self::with_max_record_bytes(input, MAX_RECORD_BYTES)
    }

    /// A reader refusing records (and lines) larger than `max_record_bytes`; each line
    /// counts its length plus a small fixed overhead.
    pub fn with_max_record_bytes(input: R, max_record_bytes: usize) -> Self {
        Self {
            input,
            line_no: 0,
            lookahead: VecDeque::new(),
            max_record_bytes,
            at_start: true,
            skip_record: false,
            finished: false,
        }
    }

    /// Reads one physical line without ever holding more than the limit of it.
    fn read_physical(&mut self) -> Result<Physical, LdifError> {
        if let Some(line) = self.lookahead.pop_front() {
            return Ok(line);
        }
        let number = self.line_no + 1;
        let cap = self.max_record_bytes.saturating_add(MAX_LINE_ENDING_BYTES);
        let mut buf = Vec::new();
        let mut read_any = false;
        let mut overflow = false;
        let mut first_byte = None;
        let mut ended = false;
        // Of a line past the limit, only whether it held nothing but spaces is kept.
        let mut spaces = Spaces::default();
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(chunk) => chunk,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let kind = LdifErrorKind::Io { kind: err.kind(), message: err.to_string() };
                    return Err(LdifError::new(number, kind));
                }
            };
            if chunk.is_empty() {
                break;
            }
            first_byte = first_byte.or(chunk.first().copied());
            read_any = true;
            let (take, found) = match chunk.iter().position(|&b| b == LF) {
                Some(end) => (end + 1, true),
                None => (chunk.len(), false),
            };
            if !overflow {
                if buf.len() + take > cap {
                    overflow = true;
                    spaces.see(&buf);
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            if overflow {
                spaces.see(&chunk[..take]);
            }
            self.input.consume(take);
            if found {
                ended = true;
                break;
            }
        }
        if !read_any {
            return Ok(Physical::Eof);
        }
        self.line_no = number;
        if ended {
            buf.pop();
            if buf.last() == Some(&CR) {
                buf.pop();
            }
        }
        if overflow || buf.len() > self.max_record_bytes {
            let only_spaces = if overflow { spaces.only } else { is_spaces(&buf) };
            return Ok(Physical::TooLong(number, first_byte == Some(CONTINUATION), only_spaces));
        }
        if buf.starts_with(UTF8_BOM) {
            buf.drain(..UTF8_BOM.len());
        }
        if number == 1 && UTF16_BOMS.iter().any(|bom| buf.starts_with(bom)) {
            return Err(LdifError::new(number, LdifErrorKind::Utf16));
        }
        Ok(Physical::Line(number, buf))
    }

    /// Reads one logical line: a physical line and its continuations. `used` is what the
    /// record holds so far (checked against the limit); with `keep` false the content is
    /// dropped (skipping a bad record) and only the kind of line is returned.
    fn next_logical(&mut self, used: usize, keep: bool) -> Result<Logical, LdifError> {
        let (number, mut bytes) = match self.read_physical()? {
            Physical::Eof => return Ok(Logical::Eof),
            // Between records a line of only spaces is blank however long; while skipping
            // a bad record, it is that record's if the value goes on after it.
            Physical::TooLong(_, true, true) if keep => return Ok(Logical::Blank),
            Physical::TooLong(_, true, true) => {
                return Ok(if self.value_goes_on()? { Logical::Dropped } else { Logical::Blank });
            }
            Physical::TooLong(number, ..) => return Err(self.too_large(number)),
            Physical::Line(number, bytes) => (number, bytes),
        };
        match bytes.first() {
            None => return Ok(Logical::Blank),
            // Between records, a line of spaces counts as blank; while skipping a bad
            // record a continuation line is one of that record's (orphaned) ones.
            Some(&CONTINUATION) if keep && is_spaces(&bytes) => return Ok(Logical::Blank),
            Some(&CONTINUATION) if keep => return Err(LdifError::new(number, LdifErrorKind::OrphanContinuation)),
            // A line of spaces there too, only if a continuation holding more comes right
            // after the run of them (the value goes on past them, as after a kept line);
            // otherwise it is blank and ends the skipped record: taken for a continuation,
            // it made the skipping go on through the next record, lost without an error.
            Some(&CONTINUATION) if is_spaces(&bytes) => {
                return Ok(match self.spaces_continued(number, bytes)? {
                    Some(_) => Logical::Dropped,
                    None => {
                        // The line itself, put back first with those after it.
                        self.lookahead.pop_front();
                        Logical::Blank
                    }
                });
            }
            Some(&CONTINUATION) => return Ok(Logical::Dropped),
            _ => {}
        }
        let is_comment = bytes.first() == Some(&COMMENT);
        let store = keep && !is_comment;
        if store && bytes.contains(&CR) {
            return Err(LdifError::new(number, LdifErrorKind::BareCarriageReturn));
        }
        if !store {
            bytes = Vec::new();
        }
        let mut size = used.saturating_add(bytes.len()).saturating_add(LINE_OVERHEAD_BYTES);
        if store && size > self.max_record_bytes {
            return Err(self.too_large(number));
        }
        loop {
            match self.read_physical()? {
                Physical::Line(at, more) if more.first() == Some(&CONTINUATION) => {
                    // A line of only spaces is blank, here too, not a continuation adding
                    // spaces to the value (a line that looks blank must not change a value
                    // unseen, nor join the next record to this one), unless a continuation
                    // with more than spaces comes right after the run of them: then the
                    // value goes on past them, and they are part of it. OpenLDAP writes a
                    // value with a run of 75 spaces or more plainly, folding some onto
                    // lines of their own; read as blank, its next line had nothing to
                    // continue.
                    let run = match is_spaces(&more) {
                        true => match self.spaces_continued(at, more)? {
                            Some(run) => run,
                            None => break,
                        },
                        false => vec![more],
                    };
                    for more in run {
                        if store && more.contains(&CR) {
                            return Err(LdifError::new(number, LdifErrorKind::BareCarriageReturn));
                        }
                        if store {
                            size = size.saturating_add(more.len() - 1);
                            if size > self.max_record_bytes {
                                return Err(self.too_large(number));
                            }
                            bytes.extend_from_slice(&more[1..]);
                        }
                    }
                }
                // Past the limit and only spaces: blank, ending the record, as a shorter
                // run of spaces does, unless the value goes on after it (then the record
                // holds it, and is too large). Taken for a continuation, it blamed this
                // record, and the skipping of it ran on through the next one, lost
                // without an error.
                Physical::TooLong(at, true, true) if !self.value_goes_on()? => {
                    self.lookahead.push_front(Physical::Line(at, Vec::new()));
                    break;
                }
                Physical::TooLong(_, true, _) => {
                    if store {
                        return Err(self.too_large(number));
                    }
                }
                other => {
                    self.lookahead.push_front(other);
                    break;
                }
            }
        }
        Ok(if store { Logical::Line(Line { number, bytes }) } else { Logical::Dropped })
    }

    /// `first`, a continuation line of only spaces, and the lines of only spaces after
    /// it, with the continuation holding more that ends the run: `Some` of those lines
    /// if there is one, or `None` with every line read put back to be read again (as
    /// blank lines, then whatever follows). A run longer than the record limit is not
    /// held: it is taken for blank lines.
    fn spaces_continued(&mut self, at: usize, first: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, LdifError> {
        let mut held = first.len();
        let mut run = vec![Physical::Line(at, first)];
        let ends_run = loop {
            let next = self.read_physical()?;
            let continues = match &next {
                Physical::Line(_, more) if more.first() == Some(&CONTINUATION) => Some(is_spaces(more)),
                _ => None,
            };
            match continues {
                Some(true) if held <= self.max_record_bytes => {
                    if let Physical::Line(_, more) = &next {
                        held = held.saturating_add(more.len() + LINE_OVERHEAD_BYTES);
                    }
                    run.push(next);
                }
                Some(false) => {
                    run.push(next);
                    break true;
                }
                _ => {
                    run.push(next);
                    break false;
                }
            }
        };
        if !ends_run {
            // Ahead of any read ahead before them, in their order.
            for line in run.into_iter().rev() {
                self.lookahead.push_front(line);
            }
            return Ok(None);
        }
        Ok(Some(
            run.into_iter()
                .filter_map(|line| match line {
                    Physical::Line(_, bytes) => Some(bytes),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// Whether the next line is a continuation holding more than spaces, after a line of
    /// only spaces too long to keep: the value goes on past the run of them. The line is
    /// put back to be read again.
    fn value_goes_on(&mut self) -> Result<bool, LdifError> {
        let next = self.read_physical()?;
        let goes_on = match &next {
            Physical::Line(_, more) => more.first() == Some(&CONTINUATION) && !is_spaces(more),
            Physical::TooLong(_, continuation, spaces) => *continuation && !*spaces,
            Physical::Eof => false,
        };
        self.lookahead.push_front(next);
        Ok(goes_on)
    }

    fn too_large(&self, line: usize) -> LdifError {
        LdifError::new(line, LdifErrorKind::RecordTooLarge { limit: self.max_record_bytes })
    }

    /// The logical lines of the next record (comments dropped), or `None` at the end.
    fn read_record_lines(&mut self) -> Result<Option<Vec<Line>>, LdifError> {
        let mut lines = Vec::new();
        let mut used = 0;
        loop {
            match self.next_logical(used, true)? {
                Logical::Eof => break,
                Logical::Blank if lines.is_empty() => continue,
                Logical::Blank => break,
                Logical::Dropped => continue,
                Logical::Line(line) => {
                    used += line.bytes.len() + LINE_OVERHEAD_BYTES;
                    lines.push(line);
                }
            }
        }
        Ok(if lines.is_empty() { None } else { Some(lines) })
    }

    /// Drops lines up to the next blank line (the rest of a record that failed).
    fn skip_rest_of_record(&mut self) -> Result<(), LdifError> {
        loop {
            match self.next_logical(0, false) {
                Ok(Logical::Eof | Logical::Blank) => return Ok(()),
                Ok(Logical::Dropped | Logical::Line(_)) => {}
                Err(err) if err.is_fatal() => return Err(err),
                Err(_) => {}
            }
        }
    }
}

impl<R: BufRead> Iterator for LdifReader<R> {
    type Item = Result<LdifRecord, LdifError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            if self.skip_record {
                self.skip_record = false;
                if let Err(err) = self.skip_rest_of_record() {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
            let lines = match self.read_record_lines() {
                Ok(Some(lines)) => lines,
                Ok(None) => {
                    self.finished = true;
                    return None;
                }
                Err(err) => {
                    if err.is_fatal() {
                        self.finished = true;
                    } else {
                        self.skip_record = true;
                    }
                    return Some(Err(err));
                }
            };
            let allow_version = std::mem::replace(&mut self.at_start, false);
            match parse_record(lines, allow_version) {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// A logical line split into name and decoded value.
#[derive(Debug)]
struct Spec {
    /// The physical line it starts on.
    number: usize,
    /// The name before the `:`, as written.
    name: String,
    /// The value: plain text with the leading fill removed, or decoded base64.
    value: Vec<u8>,
}

impl Spec {
    fn is(&self, word: &str) -> bool {
        self.name.eq_ignore_ascii_case(word)
    }

    fn error(&self, kind: LdifErrorKind) -> LdifError {
        LdifError::new(self.number, kind)
    }

    /// The value as text (for DNs and keywords).
    fn text(&self) -> Result<&str, LdifError> {
        std::str::from_utf8(&self.value).map_err(|_| self.error(LdifErrorKind::NotUtf8 { attr: shorten(&self.name) }))
    }

    /// The value as a keyword: text without trailing whitespace.
    fn keyword(&self) -> Result<&str, LdifError> {
        Ok(self.text()?.trim_end())
    }

    fn dn(&self) -> Result<Dn, LdifError> {
        let text = self.text()?;
        Dn::parse(text).map_err(|source| self.error(LdifErrorKind::InvalidDn { dn: shorten(text), source }))
    }
}

/// The name part of a line (before the first `:`), without splitting it.
fn line_name(line: &Line) -> &[u8] {
    let end = line.bytes.iter().position(|&b| b == SEPARATOR).unwrap_or(line.bytes.len());
    &line.bytes[..end]
}

fn name_is(line: &Line, word: &str) -> bool {
    line_name(line).eq_ignore_ascii_case(word.as_bytes())
}

/// Whether a line is the `-` ending a modify section (trailing spaces tolerated).
fn is_section_end(line: &Line) -> bool {
    trim_spaces_end(&line.bytes) == keyword::SECTION_END.as_bytes()
}

fn trim_spaces_end(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != FILL).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Splits `name: value`, `name:: base64` (decoded) and refuses `name:< url`.
fn split(line: Line) -> Result<Spec, LdifError> {
    let Line { number, mut bytes } = line;
    let error = |kind| LdifError::new(number, kind);
    let Some(colon) = bytes.iter().position(|&b| b == SEPARATOR) else {
        // `userPassword secret` (a colon forgotten) holds a password all the same: only
        // its first word is shown then.
        let first = bytes.split(|b| b.is_ascii_whitespace()).next().unwrap_or_default();
        let line = match crate::entry::is_password(&String::from_utf8_lossy(first)) {
            true => format!("{} ... ({} bytes, not shown)", String::from_utf8_lossy(first), bytes.len()),
            false => shorten_bytes(&bytes),
        };
        return Err(error(LdifErrorKind::MissingColon { line }));
    };
    let name = String::from_utf8_lossy(&bytes[..colon]).into_owned();
    let value = match bytes.get(colon + 1) {
        Some(&BASE64_MARK) => {
            let text = bytes[colon + 2..].trim_ascii();
            BASE64.decode(text).map_err(|_| error(LdifErrorKind::InvalidBase64 { attr: shorten(&name) }))?
        }
        Some(&URL_MARK) => {
            let url = shorten_bytes(bytes[colon + 2..].trim_ascii());
            return Err(error(LdifErrorKind::UrlValueRefused { attr: shorten(&name), url }));
        }
        _ => {
            let fill = bytes[colon + 1..].iter().take_while(|&&b| b == FILL).count();
            bytes.drain(..colon + 1 + fill);
            bytes
        }
    };
    Ok(Spec { number, name, value })
}

/// Parses one record's lines; `Ok(None)` for a record that was only `version: 1`.
fn parse_record(lines: Vec<Line>, allow_version: bool) -> Result<Option<LdifRecord>, LdifError> {
    let mut rest = VecDeque::from(lines);
    let Some(first) = rest.pop_front() else { return Ok(None) };
    let mut first = split(first)?;
    if first.is(keyword::VERSION) {
        if !allow_version {
            return Err(first.error(LdifErrorKind::MisplacedVersion));
        }
        let version = first.keyword()?;
        if version != LDIF_VERSION {
            return Err(first.error(LdifErrorKind::UnsupportedVersion { version: shorten(version) }));
        }
        match rest.pop_front() {
            None => return Ok(None),
            Some(line) => first = split(line)?,
        }
    }
    if !first.is(keyword::DN) {
        if first.is(keyword::VERSION) {
            return Err(first.error(LdifErrorKind::MisplacedVersion));
        }
        return Err(first.error(LdifErrorKind::MissingDn { found: shorten(&first.name) }));
    }
    let line = first.number;
    let dn = first.dn()?;
    let controls = rest.iter().take_while(|l| name_is(l, keyword::CONTROL)).count();
    if controls > 0 && rest.get(controls).is_some_and(|l| name_is(l, keyword::CHANGETYPE)) {
        if let Some(control) = rest.pop_front() {
            let control = split(control)?;
            let text = shorten_bytes(&control.value);
            return Err(control.error(LdifErrorKind::ControlRefused { control: text }));
        }
    }
    let changetype = match rest.front() {
        Some(l) if name_is(l, keyword::CHANGETYPE) => rest.pop_front(),
        _ => None,
    };
    if let Some(changetype) = changetype {
        let change = parse_change(dn, &split(changetype)?, rest)?;
        return Ok(Some(LdifRecord::Change { change, line }));
    }
    let attrs = parse_attributes(rest)?;
    if attrs.is_empty() {
        return Err(LdifError::new(line, LdifErrorKind::NoAttributes { dn: shorten(&dn.to_string()) }));
    }
    Ok(Some(LdifRecord::Content { dn, attrs, line }))
}

/// The attribute lines of a content or add record, names checked and duplicate values
/// refused with the line of the duplicate. Values are grouped per attribute first and
/// added in one call each, so the check is linear in the number of values.
fn parse_attributes(lines: VecDeque<Line>) -> Result<Attributes, LdifError> {
    /// The values of one attribute, in file order.
    struct Group {
        /// The line the attribute first appears on.
        line: usize,
        /// The name as first written.
        name: String,
        /// The values in order.
        values: Vec<Value>,
        /// Their normalized forms, to refuse a duplicate at its own line.
        seen: HashSet<Vec<u8>>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for line in lines {
        let spec = split(line)?;
        if spec.is(keyword::DN) {
            return Err(spec.error(LdifErrorKind::SecondDn));
        }
        let key = spec.name.to_ascii_lowercase();
        let slot = match index.get(&key) {
            Some(&slot) => slot,
            None => {
                check_attribute_name(&spec.name).map_err(|e| spec.error(e.into()))?;
                groups.push(Group {
                    line: spec.number,
                    name: spec.name.clone(),
                    values: Vec::new(),
                    seen: HashSet::new(),
                });
                index.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        let group = &mut groups[slot];
        let value = Value::from_bytes(spec.value);
        if !group.seen.insert(value.normalized()) {
            // Cut when long, and only measured when binary or a secret.
            let value = crate::entry::shown_value(&group.name, value.as_bytes());
            let kind = LdifErrorKind::DuplicateValue { attr: group.name.clone(), value };
            return Err(LdifError::new(spec.number, kind));
        }
        group.values.push(value);
    }
    let mut attrs = Attributes::new();
    for group in groups {
        attrs.add(&group.name, group.values).map_err(|e| LdifError::new(group.line, e.into()))?;
    }
    Ok(attrs)
}

/// The body of a change record after its `changetype:` line.
fn parse_change(dn: Dn, changetype: &Spec, rest: VecDeque<Line>) -> Result<Change, LdifError> {
    let kind = changetype.keyword()?;
    if kind.eq_ignore_ascii_case(keyword::ADD) {
        let attrs = parse_attributes(rest)?;
        if attrs.is_empty() {
            return Err(changetype.error(LdifErrorKind::NoAttributes { dn: shorten(&dn.to_string()) }));
        }
        Ok(Change::Add { dn, attrs })
    } else if kind.eq_ignore_ascii_case(keyword::DELETE) {
        match rest.front() {
            Some(line) => Err(unexpected(line, "the end of the record after changetype: delete")),
            None => Ok(Change::Delete { dn }),
        }
    } else if kind.eq_ignore_ascii_case(keyword::MODIFY) {
        Ok(Change::Modify { dn, mods: parse_mods(rest)? })
    } else if kind.eq_ignore_ascii_case(keyword::MODRDN) {
        parse_moddn(dn, changetype, keyword::MODRDN, rest)
    } else if kind.eq_ignore_ascii_case(keyword::MODDN) {
        parse_moddn(dn, changetype, keyword::MODDN, rest)
    } else {
        Err(changetype.error(LdifErrorKind::UnknownChangeType { changetype: shorten(kind) }))
    }
}

fn unexpected(line: &Line, expected: &'static str) -> LdifError {
    let found = shorten_bytes(line_name(line));
    LdifError::new(line.number, LdifErrorKind::UnexpectedLine { found, expected })
}

/// The `add:`/`delete:`/`replace:`/`increment:` sections of a modify record. The `-` after the last
/// section may be left out, as OpenLDAP's tools allow.
fn parse_mods(rest: VecDeque<Line>) -> Result<Vec<Modification>, LdifError> {
    let mut mods = Vec::new();
    let mut lines = rest.into_iter();
    while let Some(line) = lines.next() {
        if is_section_end(&line) {
            return Err(LdifError::new(
                line.number,
                LdifErrorKind::ExpectedModifyOp { found: keyword::SECTION_END.to_owned() },
            ));
        }
        let spec = split(line)?;
        let (op, op_word) = if spec.is(keyword::ADD) {
            (ModOp::Add, keyword::ADD)
        } else if spec.is(keyword::DELETE) {
            (ModOp::Delete, keyword::DELETE)
        } else if spec.is(keyword::REPLACE) {
            (ModOp::Replace, keyword::REPLACE)
        } else if spec.is(keyword::INCREMENT) {
            (ModOp::Increment, keyword::INCREMENT)
        } else {
            return Err(spec.error(LdifErrorKind::ExpectedModifyOp { found: shorten(&spec.name) }));
        };
        let attr = spec.keyword()?.to_owned();
        check_attribute_name(&attr).map_err(|e| spec.error(e.into()))?;
        let mut values = Vec::new();
        // A value twice in one section, as in an add record, is refused here at its line:
        // the store would refuse the second as one the entry "already has".
        let mut seen = HashSet::new();
        for line in lines.by_ref() {
            if is_section_end(&line) {
                break;
            }
            let value = split(line)?;
            if !value.name.eq_ignore_ascii_case(&attr) {
                let found = shorten(&value.name);
                return Err(value.error(LdifErrorKind::ModifyValueMismatch { op: op_word, attr, found }));
            }
            if op == ModOp::Increment && parse_integer(&value.value).is_none() {
                let err = AttributeError::not_an_integer(&attr, &value.value);
                return Err(value.error(err.into()));
            }
            let number = value.number;
            let parsed = Value::from_bytes(value.value);
            if !seen.insert(parsed.normalized()) {
                let shown = crate::entry::shown_value(&attr, parsed.as_bytes());
                return Err(LdifError::new(number, LdifErrorKind::DuplicateValue { attr, value: shown }));
            }
            values.push(parsed);
        }
        if op == ModOp::Add && values.is_empty() {
            return Err(spec.error(LdifErrorKind::AddWithoutValues { attr }));
        }
        if op == ModOp::Increment && values.len() != 1 {
            return Err(spec.error(LdifErrorKind::IncrementValues { attr, found: values.len() }));
        }
        mods.push(Modification { op, attr, values });
    }
    Ok(mods)
}

/// The `newrdn:`, `deleteoldrdn:` and optional `newsuperior:` of a modrdn/moddn record.
fn parse_moddn(dn: Dn, changetype: &Spec, kind: &'static str, rest: VecDeque<Line>) -> Result<Change, LdifError> {
    let mut lines = rest.into_iter();
    let missing = |at: usize, field| LdifError::new(at, LdifErrorKind::MissingField { changetype: kind, field });

    let line = lines.next().ok_or_else(|| missing(changetype.number, keyword::NEWRDN))?;
    if !name_is(&line, keyword::NEWRDN) {
        return Err(unexpected(&line, "newrdn:"));
    }
    let spec = split(line)?;
    let text = spec.text()?;
    let new_rdn =
        Rdn::parse(text).map_err(|source| spec.error(LdifErrorKind::InvalidRdn { rdn: shorten(text), source }))?;

    let line = lines.next().ok_or_else(|| missing(spec.number, keyword::DELETEOLDRDN))?;
    if !name_is(&line, keyword::DELETEOLDRDN) {
        return Err(unexpected(&line, "deleteoldrdn:"));
    }
    let spec = split(line)?;
    let delete_old_rdn = match spec.keyword()? {
        DELETE_OLD_RDN_NO => false,
        DELETE_OLD_RDN_YES => true,
        other => return Err(spec.error(LdifErrorKind::InvalidDeleteOldRdn { value: shorten(other) })),
    };

    let new_superior = match lines.next() {
        None => None,
        Some(line) if name_is(&line, keyword::NEWSUPERIOR) => Some(split(line)?.dn()?),
        Some(line) => return Err(unexpected(&line, "newsuperior: or the end of the record")),
    };
    if let Some(line) = lines.next() {
        return Err(unexpected(&line, "the end of the record"));
    }
    Ok(Change::ModDn { dn, new_rdn, delete_old_rdn, new_superior })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<LdifRecord> {
        parse_str(text).unwrap_or_else(|e| panic!("should parse: {e}\n{text}"))
    }

    fn content(record: &LdifRecord) -> (&Dn, &Attributes) {
        match record {
            LdifRecord::Content { dn, attrs, .. } => (dn, attrs),
            other => panic!("expected a content record, got {other:?}"),
        }
    }

    fn change(record: &LdifRecord) -> &Change {
        match record {
            LdifRecord::Change { change, .. } => change,
            other => panic!("expected a change record, got {other:?}"),
        }
    }

    fn vals(attrs: &Attributes, name: &str) -> Vec<String> {
        attrs.values(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }

    fn error(text: &str) -> LdifError {
        match parse_str(text) {
            Err(err) => err,
            Ok(records) => panic!("should be refused, got {records:?}"),
        }
    }

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap()
    }

    #[test]
    fn content_records_with_comments_blank_lines_and_line_numbers() {
        let text = "\n\n# leading comment\n\ndn: dc=example,dc=com\nobjectClass: domain\n# embedded\ndc: example\n\n\n\
                    dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\n";
        let recs = records(text);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].line(), 5);
        assert_eq!(recs[1].line(), 11);
        let (d, attrs) = content(&recs[0]);
        assert_eq!(*d, dn("dc=example,dc=com"));
        assert_eq!(text_of(attrs), vec!["objectClass: domain", "dc: example"]);
        assert_eq!(recs[1].dn(), &dn("ou=People,dc=Example,dc=com"));
    }

    fn text_of(attrs: &Attributes) -> Vec<String> {
        attrs
            .canonical_order()
            .flat_map(|a| {
                a.values.iter().map(move |v| format!("{}: {}", a.name, String::from_utf8_lossy(v.as_bytes())))
            })
            .collect()
    }

    /// A value twice in one section of a modify record is refused at the line of the
    /// second, as in an add record; the same value in two sections is not this reader's
    /// to judge.
    #[test]
    fn a_value_twice_in_one_modify_section_is_refused_at_its_line() {
        let text = "dn: cn=a,dc=example,dc=com\nchangetype: modify\nadd: description\ndescription: Q\n\
                    description: q\n-\n";
        let err = error(text);
        assert_eq!(err.line, 5);
        assert_eq!(err.to_string(), "line 5: attribute \"description\" has value \"q\" twice");
        let apart = "dn: cn=a,dc=example,dc=com\nchangetype: modify\nadd: description\ndescription: Q\n-\n\
                     delete: description\ndescription: q\n-\n";
        assert_eq!(records(apart).len(), 1);
    }

    /// A value given twice is quoted as ldif.md says: cut to 64 characters with its
    /// length when longer, and a binary one only measured (found by a walkthrough: a
    /// JPEG's first bytes were printed as mojibake, and a long value lost its length).
    #[test]
    fn a_value_twice_is_shown_cut_with_its_length_or_measured_when_binary() {
        let long = "x".repeat(3000);
        let add = format!("dn: cn=a,dc=example,dc=com\ncn: a\ndescription: {long}\ndescription: {long}\n");
        let said = error(&add).to_string();
        assert!(said.len() < 200 && said.ends_with("x… (3000 bytes)\" twice"), "{said}");
        let photo = "jpegPhoto:: /9j/4AAQSkZJRgABAQ==\n";
        let add = format!("dn: cn=a,dc=example,dc=com\ncn: a\n{photo}{photo}");
        assert_eq!(error(&add).to_string(), "line 4: attribute \"jpegPhoto\" has value \"(13 bytes, not text)\" twice");
        let modify = format!("dn: cn=a,dc=example,dc=com\nchangetype: modify\nadd: jpegPhoto\n{photo}{photo}-\n");
        assert_eq!(
            error(&modify).to_string(),
            "line 5: attribute \"jpegPhoto\" has value \"(13 bytes, not text)\" twice"
        );
    }

    #[test]
    fn folded_lines_and_folded_comments_are_joined() {
        let text = "dn: cn=Barbara Jensen,ou=Information Technology Division,ou=People,dc=example,\n dc=com\n\
                    # a comment\n  that continues: here\ncn: Barbara Jensen\npostalAddress: ITD Prod $ Anyt\n own, MI\n\
                    description: two\n  spaces\n";
        let recs = records(text);
        assert_eq!(recs.len(), 1);
        let (d, attrs) = content(&recs[0]);
        assert_eq!(d.to_string(), "cn=Barbara Jensen,ou=Information Technology Division,ou=People,dc=example,dc=com");
        assert_eq!(vals(attrs, "postaladdress"), ["ITD Prod $ Anytown, MI"]);
        assert_eq!(vals(attrs, "description"), ["two spaces"], "only the first space of a continuation goes");
        assert!(attrs.get("that continues").is_none(), "a folded comment line is still a comment");
    }

    #[test]
    fn a_line_of_only_spaces_is_blank_after_a_value_too() {
        // Right after a record's last value: it ends the record, and adds no spaces.
        let text = "dn: cn=s1,dc=x\ncn: s1\ndescription: hello\n   \ndn: cn=s2,dc=x\ncn: s2\n  \n";
        let recs = records(text);
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(vals(content(&recs[0]).1, "description"), ["hello"]);
        assert_eq!(recs[1].line(), 5);
        assert_eq!(vals(content(&recs[1]).1, "cn"), ["s2"], "nor at the end of the file");
        // A continuation holding more than spaces still continues its value.
        let recs = records("dn: cn=s1,dc=x\ncn: s1\ndescription: two\n   spaces\n");
        assert_eq!(vals(content(&recs[0]).1, "description"), ["two  spaces"]);
        // Lines of spaces and then blank: still blank, with the next record after them.
        let recs = records("dn: cn=s1,dc=x\ncn: s1\n   \n  \n\ndn: cn=s2,dc=x\ncn: s2\n");
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(recs[1].line(), 6);
    }

    #[test]
    fn lines_of_spaces_a_continuation_goes_on_past_are_part_of_the_value() {
        // OpenLDAP's ldif_sput_wrap writes a value with a run of spaces plainly, folded
        // at 76 columns: lines of spaces alone, then the rest of the value.
        let value = format!("Name:{}Value", " ".repeat(300));
        let line = format!("description: {value}");
        let (first, rest) = line.split_at(76);
        let mut folded = first.to_owned();
        for chunk in rest.as_bytes().chunks(75) {
            folded.push_str("\n ");
            folded.push_str(std::str::from_utf8(chunk).unwrap());
        }
        assert!(folded.lines().filter(|l| l.trim().is_empty()).count() >= 2, "{folded}");
        let text = format!("dn: cn=s1,dc=x\ncn: s1\n{folded}\nsn: after\n\ndn: cn=s2,dc=x\ncn: s2\n");
        let recs = records(&text);
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(vals(content(&recs[0]).1, "description"), [value]);
        assert_eq!(vals(content(&recs[0]).1, "sn"), ["after"]);
        assert_eq!(recs[1].line(), text.lines().position(|l| l == "dn: cn=s2,dc=x").unwrap() + 1);
        // A comment's continuation goes on past them too.
        let recs = records("# a comment\n   \n continued\ndn: cn=s1,dc=x\ncn: s1\n");
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].line(), 4);
    }

    #[test]
    fn crlf_reads_like_lf() {
        let lf = "version: 1\n\ndn: cn=a,dc=x\ncn: a\ndescription: folded\n  value\n\ndn: cn=b,dc=x\ncn: b\n";
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(records(lf), records(&crlf));
        let recs = records(&crlf);
        let (_, attrs) = content(&recs[0]);
        assert_eq!(vals(attrs, "description"), ["folded value"]);
    }

    #[test]
    fn base64_values_and_dns_decode() {
        let recs = records("dn:: Y249THXEjWnEhyxkYz1leGFtcGxl\nsn:: IEplbnNlbiA=\njpegPhoto:: /9j/AA==\ncn:: \n");
        let (d, attrs) = content(&recs[0]);
        assert_eq!(d.rdn().and_then(|r| r.avas()[0].value_str()), Some("Lučić"));
        assert_eq!(vals(attrs, "sn"), [" Jensen "]);
        assert_eq!(attrs.values("jpegphoto")[0].as_bytes(), [0xff, 0xd8, 0xff, 0x00]);
        assert_eq!(attrs.values("cn")[0].as_bytes(), b"", "empty base64 is the empty value");
    }

    /// Spaces after a base64 value are not part of it (base64 has no spaces): a file
    /// whose editor left some there, after a `dn::` or a value, reads as without them,
    /// where refusing it would stop a `load` over nothing.
    #[test]
    fn spaces_after_a_base64_value_are_dropped_not_refused() {
        let recs = records("dn:: Y249YSxkYz14  \ncn: a\nsn:: IEplbnNlbiA= \n");
        let (d, attrs) = content(&recs[0]);
        assert_eq!(*d, dn("cn=a,dc=x"));
        assert_eq!(vals(attrs, "sn"), [" Jensen "]);
    }

    /// A modify record as people write it by hand: the section's value lines spelled in
    /// another case than its `add:`/`delete:`/`replace:` line, spaces left after that
    /// line's attribute and after the `-`. Each reads as `ldapmodify` reads it, where a
    /// refusal would name a mistake the author did not make.
    #[test]
    fn a_modify_record_reads_whatever_the_case_and_trailing_spaces_of_its_lines() {
        let text = "dn: cn=a,dc=x\nchangetype: modify\nadd: mail  \nMail: a@x\nMAIL: b@x\n-  \n\
                    replace: sn \nsn: b\n- \n";
        assert_eq!(
            change(&records(text)[0]),
            &Change::Modify {
                dn: dn("cn=a,dc=x"),
                mods: vec![
                    Modification { op: ModOp::Add, attr: "mail".into(), values: vec!["a@x".into(), "b@x".into()] },
                    Modification { op: ModOp::Replace, attr: "sn".into(), values: vec!["b".into()] },
                ]
            }
        );
    }

    #[test]
    fn fill_is_stripped_and_trailing_spaces_kept() {
        let recs = records("dn: cn=a,dc=x\ncn:a\nsn:    b\ndescription: c  \nmember:\ntitle:   \n");
        let (_, attrs) = content(&recs[0]);
        assert_eq!(vals(attrs, "cn"), ["a"], "FILL may be empty");
        assert_eq!(vals(attrs, "sn"), ["b"]);
        assert_eq!(vals(attrs, "description"), ["c  "], "RFC 2849 keeps trailing spaces");
        assert_eq!(vals(attrs, "member"), [""]);
        assert_eq!(vals(attrs, "title"), [""], "fill only is the empty value");
    }

    #[test]
    fn options_are_part_of_the_name() {
        let recs = records("dn: dc=x\no: plain\no;lang-en: english\nCN;lang-en-US: Billy\ncn;LANG-EN-us: Bob\n");
        let (_, attrs) = content(&recs[0]);
        assert_eq!(vals(attrs, "o"), ["plain"]);
        assert_eq!(vals(attrs, "o;lang-en"), ["english"]);
        assert_eq!(vals(attrs, "cn;lang-en-us"), ["Billy", "Bob"]);
        assert_eq!(attrs.get("cn;lang-en-us").map(|a| a.name.as_str()), Some("CN;lang-en-US"), "first spelling kept");
    }

    /// A carriage return inside a folded continuation line is refused as one in the
    /// line's first: LDIF puts a CR in a value only in base64, so a CR there is a file
    /// with mixed line endings, and read on it would hide a CR in the value unseen. The
    /// error names the line the folded line starts on, as every error does.
    #[test]
    fn a_carriage_return_in_a_continuation_line_is_refused_too() {
        let err = error("dn: cn=a\ncn: a\ndescription: one\n two\r three\n");
        assert_eq!((err.line, err.kind), (3, LdifErrorKind::BareCarriageReturn));
    }

    /// Two `version:` lines at the start: the second is named for what it is (a version
    /// line out of place), not taken for an attribute line missing its `dn:`.
    #[test]
    fn a_second_version_line_is_named_misplaced() {
        let err = error("version: 1\nversion: 1\ndn: dc=x\ndc: x\n");
        assert_eq!(err.to_string(), "line 2: version: is only allowed at the start of the file");
    }

    /// Spaces after `version: 1` are not part of the version, as after every keyword:
    /// refused, the file was said to be of an LDIF version "1 " that does not exist.
    #[test]
    fn spaces_after_the_version_are_not_part_of_it() {
        let recs = records("version: 1  \r\ndn: dc=x\ndc: x\n");
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].line(), 2);
    }

    #[test]
    fn version_line_is_optional_and_only_first() {
        assert_eq!(records("version: 1\ndn: dc=x\ndc: x\n").len(), 1);
        assert_eq!(records("# c\n\nversion: 1\n\n\ndn: dc=x\ndc: x\n")[0].line(), 6);
        assert_eq!(records("version: 1\n").len(), 0);
        let err = error("version: 2\n\ndn: dc=x\ndc: x\n");
        assert_eq!(err.to_string(), "line 1: LDIF version \"2\" unsupported (only version 1 exists)");
        let err = error("dn: dc=x\ndc: x\n\nversion: 1\n");
        assert_eq!(err.to_string(), "line 4: version: is only allowed at the start of the file");
    }

    #[test]
    fn change_records_of_every_kind() {
        let text = "version: 1\n\n\
            dn: cn=a,dc=x\nchangetype: add\nobjectClass: person\ncn: a\n\n\
            dn: cn=a,dc=x\ncontrol-free: no\n\n\
            dn: cn=a,dc=x\nchangetype: modify\nadd: mail\nmail: a@x\nmail: b@x\n-\ndelete: phone\n-\n\
            replace: sn\nsn: A\n-\ndelete: mail\nmail: b@x\n-\nincrement: uidNumber\nuidNumber: -2\n\n\
            dn: cn=a,dc=x\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\n\n\
            dn: cn=b,dc=x\nchangetype: moddn\nnewrdn: cn=c\ndeleteoldrdn: 0\nnewsuperior: ou=new,dc=x\n\n\
            dn: cn=c,ou=new,dc=x\nchangetype: delete\n\n\
            dn: dc=x\nchangetype: modify\n";
        let recs = records(text);
        assert_eq!(recs.len(), 7);
        match change(&recs[0]) {
            Change::Add { dn: d, attrs } => {
                assert_eq!(*d, dn("cn=a,dc=x"));
                assert_eq!(vals(attrs, "objectclass"), ["person"]);
            }
            other => panic!("{other:?}"),
        }
        let (_, attrs) = content(&recs[1]);
        assert_eq!(vals(attrs, "control-free"), ["no"], "a content record, not a change");
        match change(&recs[2]) {
            Change::Modify { mods, .. } => {
                let summary: Vec<(ModOp, &str, usize)> =
                    mods.iter().map(|m| (m.op, m.attr.as_str(), m.values.len())).collect();
                assert_eq!(
                    summary,
                    [
                        (ModOp::Add, "mail", 2),
                        (ModOp::Delete, "phone", 0),
                        (ModOp::Replace, "sn", 1),
                        (ModOp::Delete, "mail", 1),
                        (ModOp::Increment, "uidNumber", 1)
                    ]
                );
                assert_eq!(mods[4].values, [Value::from("-2")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            change(&recs[3]),
            &Change::ModDn {
                dn: dn("cn=a,dc=x"),
                new_rdn: Rdn::parse("cn=b").unwrap(),
                delete_old_rdn: true,
                new_superior: None
            }
        );
        assert_eq!(
            change(&recs[4]),
            &Change::ModDn {
                dn: dn("cn=b,dc=x"),
                new_rdn: Rdn::parse("cn=c").unwrap(),
                delete_old_rdn: false,
                new_superior: Some(dn("ou=new,dc=x"))
            }
        );
        assert_eq!(change(&recs[5]), &Change::Delete { dn: dn("cn=c,ou=new,dc=x") });
        assert_eq!(change(&recs[6]), &Change::Modify { dn: dn("dc=x"), mods: vec![] });
        assert_eq!(recs[6].line(), 42);
    }

    #[test]
    fn a_byte_order_mark_starting_a_line_is_not_content() {
        let plain = "version: 1\ndn: dc=x\ndc: x\n\ndn: cn=a,dc=x\ncn: a\n";
        let marked = "\u{feff}version: 1\r\ndn: dc=x\r\ndc: x\r\n\r\n\u{feff}dn: cn=a,dc=x\r\ncn: a\r\n";
        assert_eq!(records(marked), records(plain), "Notepad's files, concatenated");
        // Inside a value it is content.
        let inside = records("dn: dc=x\ndc: x\ndescription: a\u{feff}b\n");
        let LdifRecord::Content { attrs, .. } = &inside[0] else { panic!("a content record") };
        assert_eq!(attrs.get("description").unwrap().values[0].as_bytes(), "a\u{feff}b".as_bytes());
    }

    #[test]
    fn a_utf16_file_is_named_as_such_once() {
        let text = "dn: dc=x\ndc: x\n\ndn: cn=a,dc=x\ncn: a\n";
        for bom in UTF16_BOMS {
            let mut bytes = bom.to_vec();
            for unit in text.encode_utf16() {
                let pair = if bom == b"\xff\xfe" { unit.to_le_bytes() } else { unit.to_be_bytes() };
                bytes.extend_from_slice(&pair);
            }
            let results: Vec<_> = LdifReader::new(bytes.as_slice()).collect();
            assert_eq!(results.len(), 1, "one error, then nothing: {results:?}");
            let err = results[0].as_ref().unwrap_err();
            assert!(err.is_fatal() && err.to_string().starts_with("line 1: the file is UTF-16"), "{err}");
        }
    }

    #[test]
    fn keywords_ignore_case_and_trailing_spaces() {
        let recs = records("DN: cn=a,dc=x\nChangeType: MODRDN \nNewRDN: cn=b\nDeleteOldRDN: 1  \n");
        assert!(matches!(change(&recs[0]), Change::ModDn { delete_old_rdn: true, .. }));
    }

    /// A modify record's `add:`, `delete:`, `replace:` and `increment:` are keywords like
    /// the others, read whatever their case, as every LDIF keyword is.
    #[test]
    fn modify_operation_names_ignore_case() {
        let text = "dn: cn=a\nchangetype: modify\nADD: mail\nmail: a@x\n-\nDelete: phone\n-\nRePlace: sn\nsn: b\n-\n\
                    INCREMENT: uidNumber\nuidNumber: 1\n-\n";
        let recs = records(text);
        let Change::Modify { mods, .. } = change(&recs[0]) else { panic!("a modify") };
        let ops: Vec<ModOp> = mods.iter().map(|m| m.op).collect();
        assert_eq!(ops, [ModOp::Add, ModOp::Delete, ModOp::Replace, ModOp::Increment]);
    }

    /// Every `changetype:` value is read whatever its case, not only `modrdn`: `Add`,
    /// `DELETE`, `Modify` and `ModDN` are the records they name.
    #[test]
    fn every_changetype_ignores_case() {
        let text = "dn: cn=a\nchangetype: Add\ncn: a\n\ndn: cn=a\nchangetype: Modify\n\n\
                    dn: cn=a\nchangetype: ModDN\nnewrdn: cn=b\ndeleteoldrdn: 0\n\ndn: cn=b\nchangetype: DELETE\n";
        let kinds: Vec<&str> = records(text).iter().map(|r| change(r).kind()).collect();
        assert_eq!(kinds, ["add", "modify", "modrdn", "delete"]);
    }

    #[test]
    fn errors_name_line_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("dn: dc=x\ndc: x\n\ncn: a\n", "line 4: attribute line \"cn\" before any dn:"),
            (
                "dn: dc=x\ndc: x\n\n# search result\nsearch: 2\nresult: 0 Success\n",
                "line 5: attribute line \"search\" before any dn: (the result summary ldapsearch prints without \
                 -LLL: delete it, or export with ldapsearch -LLL)",
            ),
            ("# c\ndn: cn=a,,dc=b\ncn: a\n", "line 2: invalid DN \"cn=a,,dc=b\": empty RDN at byte 5 of DN"),
            ("dn: cn=a\ncn: a\nsn:: !!notbase64\n", "line 3: base64 value of \"sn\" is not valid"),
            ("dn: cn=a\ncn: a\nsn:: YQ\n", "line 3: base64 value of \"sn\" is not valid"),
            ("dn:: /w==\ncn: a\n", "line 1: value of \"dn\" is not valid UTF-8"),
            ("dn: cn=a\nchangetype: frob\n", "line 2: changetype \"frob\" unknown"),
            (
                "dn: cn=a\nchangetype: modify\nadd: sn\nsn: x\n-\nadd: cn\n-\n",
                "line 6: add: of \"cn\" has no values (an add adds at least one; a section's values follow its add: \
                 line)",
            ),
            (
                "dn: cn=a\ncn: a\njpegPhoto:< file:///etc/shadow\n",
                "line 3: URL value (\":<\") of \"jpegPhoto\" refused: Tether never reads files or URLs named in LDIF \
                 (\"file:///etc/shadow\")",
            ),
            (
                "dn: cn=a\ncontrol: 1.2.840.113556.1.4.805 true\nchangetype: delete\n",
                "line 2: control: lines are refused: Tether implements no LDAP controls \
                 (control \"1.2.840.113556.1.4.805 true\")",
            ),
            ("dn: cn=a\ncn: a\nmail: x@y\ncn: A\n", "line 4: attribute \"cn\" has value \"A\" twice"),
            ("dn: cn=a\nchangetype: add\ncn: a\ncn: a\n", "line 4: attribute \"cn\" has value \"a\" twice"),
            ("dn: cn=a\ncn: a\nc_n: b\n", "line 3: invalid attribute name \"c_n\""),
            (
                "dn: cn=a,dc=x\robjectClass: person\rcn: a\r\rdn: cn=b,dc=x\r",
                "line 1: a carriage return (CR) inside the line: LDIF lines end in LF or CRLF, and a value holding a \
                 CR is written in base64 (`name:: ...`); a file whose lines end in CR alone converts with \
                 `tr '\\r' '\\n'`",
            ),
            (
                "dn: cn=a\ncn: a\ndescription: one\r two\r\n",
                "line 3: a carriage return (CR) inside the line: LDIF lines end in LF or CRLF, and a value holding a \
                 CR is written in base64 (`name:: ...`); a file whose lines end in CR alone converts with \
                 `tr '\\r' '\\n'`",
            ),
            ("dn: cn=a\ncn: a\nno colon here\n", "line 3: no ':' after the attribute name in \"no colon here\""),
            (
                "dn: cn=a\ncn: a\nuserPassword TOPSECRET\n",
                "line 3: no ':' after the attribute name in \"userPassword ... (22 bytes, not shown)\"",
            ),
            (
                "dn: ou=p\nchangetype: modify\nincrement: uidNumber\nuidNumber: 1\nuidNumber: 2\n-\n",
                "line 3: increment: of \"uidNumber\" takes exactly one value, the amount, found 2",
            ),
            (
                "dn: ou=p\nchangetype: modify\nincrement: uidNumber\n-\n",
                "line 3: increment: of \"uidNumber\" takes exactly one value, the amount, found 0",
            ),
            (
                "dn: ou=p\nchangetype: modify\nincrement: uidNumber\nuidNumber: +1\n",
                "line 4: cannot increment \"uidNumber\": \"+1\" is not an integer",
            ),
            (
                "dn: ou=p\nchangetype: modify\nadd: mail\nmail: a\nreplace: sn\n",
                "line 5: \"replace\" line inside the add: of \"mail\" (end that section with \"-\" first)",
            ),
            (
                "dn: ou=p\nchangetype: modify\n-\n",
                "line 3: expected add:, delete:, replace: or increment: in a modify record, found \"-\"",
            ),
            (
                "dn: ou=p\nchangetype: modify\nmail: a\n",
                "line 3: expected add:, delete:, replace: or increment: in a modify record, found \"mail\"",
            ),
            (
                "dn: cn=a\nchangetype: delete\ncn: a\n",
                "line 3: \"cn\" line unexpected here; expected the end of the record after changetype: delete",
            ),
            ("dn: cn=a\nchangetype: modrdn\n", "line 2: modrdn record is missing its newrdn: line"),
            ("dn: cn=a\nchangetype: moddn\nnewrdn: cn=b\n", "line 3: moddn record is missing its deleteoldrdn: line"),
            (
                "dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: yes\n",
                "line 4: deleteoldrdn must be 0 or 1, found \"yes\"",
            ),
            (
                "dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b,dc=x\ndeleteoldrdn: 1\n",
                "line 3: invalid newrdn \"cn=b,dc=x\": unescaped ',' at byte 4 of DN",
            ),
            (
                "dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\nnewsuperior: dc=x\ncn: b\n",
                "line 6: \"cn\" line unexpected here; expected the end of the record",
            ),
            (
                "dn: cn=a\nchangetype: modrdn\ndeleteoldrdn: 1\n",
                "line 3: \"deleteoldrdn\" line unexpected here; expected newrdn:",
            ),
            (
                "dn: cn=a\ncn: a\ndn: cn=b\ncn: b\n",
                "line 3: second dn: line in one record (records are separated by a blank line)",
            ),
            ("dn: cn=a\n\n", "line 1: record for \"cn=a\" has no attributes"),
            ("dn: cn=a\nchangetype: add\n", "line 2: record for \"cn=a\" has no attributes"),
            (
                " orphan\ndn: cn=a\n",
                "line 1: continuation line (starting with a space) has no line before it to continue",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text).to_string(), *expected, "input:\n{text}");
        }
    }

    /// A change record with several `control:` lines is refused at the first, as one with
    /// a single control is: let through, it read as a content record whose attributes
    /// were `control` and `changetype`, so a `delete` became the add of an entry.
    #[test]
    fn several_control_lines_are_refused_at_the_first() {
        let err = error("dn: cn=a\ncontrol: 1.2.3 true\ncontrol: 1.2.4\nchangetype: delete\n");
        assert_eq!(err.line, 2);
        assert_eq!(err.kind, LdifErrorKind::ControlRefused { control: "1.2.3 true".into() });
    }

    /// After `deleteoldrdn:` only `newsuperior:` may follow: another line holding a DN is
    /// refused, not taken for the new parent, which would move the entry where its
    /// author never said.
    #[test]
    fn only_newsuperior_names_the_new_parent_of_a_modrdn() {
        let err = error("dn: cn=a,dc=x\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\nseeAlso: ou=other,dc=x\n");
        assert_eq!(
            err.to_string(),
            "line 5: \"seeAlso\" line unexpected here; expected newsuperior: or the end of the record"
        );
    }

    /// The line after `newrdn:` must be `deleteoldrdn:` by name: a misspelt one is
    /// refused, not read for its value, which would apply a rename its author never
    /// finished writing.
    #[test]
    fn a_misspelt_deleteoldrdn_is_refused_not_read_for_its_value() {
        let err = error("dn: cn=a,dc=x\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrn: 1\n");
        assert_eq!(err.to_string(), "line 4: \"deleteoldrn\" line unexpected here; expected deleteoldrdn:");
    }

    /// A `control:` line refused is one of a change record, before its `changetype:`; a
    /// content record's first attribute may be named `control`, and the writer prints
    /// such an entry so: it reads back as that entry.
    #[test]
    fn a_control_attribute_of_a_content_record_is_an_attribute() {
        let recs = records("dn: cn=a\ncontrol: x\n");
        assert_eq!(vals(content(&recs[0]).1, "control"), ["x"]);
    }

    /// The attribute a modify section names is checked at its `add:`/`delete:`/
    /// `replace:` line, as a content record's are: let through, the change went on with
    /// a name no directory accepts, and the writer refuses to print the record read.
    #[test]
    fn a_modify_section_naming_an_invalid_attribute_is_refused_at_its_line() {
        let err = error("dn: cn=a\nchangetype: modify\nadd: c_n\nc_n: x\n-\n");
        assert_eq!(err.to_string(), "line 3: invalid attribute name \"c_n\"");
    }

    /// Whatever an error quotes of the input is cut to 64 characters, as docs/ldif.md
    /// says: a DN, a changetype, a name or a value of megabytes would otherwise fill the
    /// operator's terminal and the log with one error.
    #[test]
    fn every_piece_of_input_an_error_quotes_is_cut() {
        let long = "x".repeat(10_000);
        let cases = [
            format!("dn: cn={long},,dc=x\ncn: a\n"),
            format!("dn: cn=a\nchangetype: {long}\n"),
            format!("dn: cn=a\nchangetype: modrdn\nnewrdn: cn={long},dc=x\ndeleteoldrdn: 1\n"),
            format!("dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: {long}\n"),
            format!("dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\n{long}: b\n"),
            format!("dn: cn=a\nchangetype: modify\n{long}: b\n"),
            format!("{long}: a\n"),
            format!("version: {long}\n"),
        ];
        for text in cases {
            let said = error(&text).to_string();
            assert!(said.len() < 300 && said.contains('…'), "{said}");
        }
    }

    #[test]
    fn the_reader_goes_on_after_a_bad_record() {
        let text = "dn: cn=a,dc=x\ncn: a\n\ndn: cn=b,,dc=x\ncn: b\nmore: lines\n\ndn: cn=c,dc=x\ncn: c\n";
        let results: Vec<Result<LdifRecord, LdifError>> = LdifReader::new(text.as_bytes()).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().map_err(|e| e.line), Err(4));
        assert_eq!(results[2].as_ref().map(LdifRecord::line), Ok(8));
    }

    /// A line of only spaces past the record limit is blank, as a shorter one is: it ends
    /// the record before it, which is not blamed for it, and the record after it is read.
    /// Taken for a continuation, the record before was refused as too large and the
    /// skipping of it ran on through the next record, lost without an error. Unless the
    /// value goes on after the spaces: then they are part of it, and it is too large.
    #[test]
    fn a_line_of_only_spaces_past_the_limit_is_blank_unless_the_value_goes_on() {
        let limit = 100;
        let spaces = " ".repeat(110);
        for ending in ["\n", "\r\n"] {
            let text = format!("dn: cn=a{ending}cn: a{ending}{spaces}{ending}dn: cn=b{ending}cn: b{ending}");
            let lines: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), limit)
                .map(|r| r.map(|r| r.line()).map_err(|e| e.to_string()))
                .collect();
            assert_eq!(lines, [Ok(1), Ok(4)], "ending {ending:?}");
        }
        // Between records, and after a record refused for another reason.
        let text = format!("{spaces}\ndn: cn=a\ncn: a\n\ndn: cn=a\nfoo bar\n{spaces}\ndn: cn=b\ncn: b\n");
        let read: Vec<_> =
            LdifReader::with_max_record_bytes(text.as_bytes(), limit).map(|r| r.map(|r| r.line())).collect();
        assert_eq!(read.len(), 3, "{read:?}");
        assert_eq!(read[0].as_ref().ok(), Some(&2));
        assert!(read[1].is_err(), "{read:?}");
        assert_eq!(read[2].as_ref().ok(), Some(&8), "{read:?}");
        // The value goes on after the spaces: they are part of it.
        let text = format!("dn: cn=a\ncn: a\ndescription: x\n{spaces}\n more\n\ndn: cn=b\ncn: b\n");
        let read: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), limit)
            .map(|r| r.map(|r| r.line()).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(read, [Err("line 3: record is larger than the 100-byte limit".to_owned()), Ok(7)]);
        // Spaces and then something else, past the limit, is a line too long.
        let text = format!("dn: cn=a\ncn: a\ndescription: x\n{spaces}x\n\ndn: cn=b\ncn: b\n");
        let read: Vec<_> =
            LdifReader::with_max_record_bytes(text.as_bytes(), limit).map(|r| r.map(|r| r.line())).collect();
        assert!(read[0].is_err() && read[1].as_ref().ok() == Some(&6), "{read:?}");
    }

    #[test]
    fn oversized_records_and_lines_are_refused_then_skipped() {
        let limit = 100;
        let long_line = format!("dn: cn=a\ncn: {}\n\ndn: cn=b\ncn: b\n", "x".repeat(200));
        let results: Vec<_> = LdifReader::with_max_record_bytes(long_line.as_bytes(), limit).collect();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0].as_ref().map_err(ToString::to_string),
            Err("line 2: record is larger than the 100-byte limit".to_owned())
        );
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(4));

        let folded = format!("dn: cn=a\ncn: a\ndescription: x\n{}\ndn: cn=b\ncn: b\n", " yyyyyyyyyy\n".repeat(20));
        let results: Vec<_> = LdifReader::with_max_record_bytes(folded.as_bytes(), limit).collect();
        assert_eq!(results[0].as_ref().map_err(|e| e.line), Err(3));
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(25));
        assert_eq!(results.len(), 2);

        // A continuation of only spaces in the skipped part does not end the skipping.
        let spaced = format!(
            "dn: cn=a
cn: a
description: x
{} 
 more

dn: cn=b
cn: b
",
            " yyyyyyyyyy
"
            .repeat(20)
        );
        let results: Vec<_> = LdifReader::with_max_record_bytes(spaced.as_bytes(), limit).collect();
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(27));

        let many = format!("dn: cn=a\n{}\ndn: cn=b\ncn: b\n", "a:\n".repeat(10));
        let results: Vec<_> = LdifReader::with_max_record_bytes(many.as_bytes(), limit).collect();
        assert!(matches!(results[0], Err(LdifError { kind: LdifErrorKind::RecordTooLarge { .. }, .. })));
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(13));
    }

    /// A line of only spaces ends a record being skipped after an error as it ends any
    /// other (unless a continuation holding more comes right after it): the skipping
    /// took it for a continuation of the bad record and went on through the next
    /// record, which was lost without an error, so a caller listing every error (`load`)
    /// never heard of it.
    #[test]
    fn a_line_of_spaces_ends_a_skipped_record_and_the_next_one_is_read() {
        let limit = 100;
        let oversized = format!("dn: cn=a\ncn: {}\n   \ndn: cn=b\ncn: b\n", "x".repeat(200));
        let bare_cr = "dn: cn=a\ncn: a\rb\n \ndn: cn=b\ncn: b\n".to_owned();
        for text in [oversized, bare_cr] {
            let results: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), limit).collect();
            assert_eq!(results.len(), 2, "{results:?}");
            assert_eq!(results[0].as_ref().map_err(|e| e.line), Err(2));
            assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(4));
        }
    }

    /// An oversized line in a record already being skipped after an error is skipped
    /// with the rest of it: the skipping stopped there, and the record's lines after it
    /// were read as a record of their own, one more error pointing inside a record the
    /// operator had already been told about.
    #[test]
    fn an_oversized_line_in_a_skipped_record_is_skipped_with_it() {
        let text = format!("dn: cn=a\ncn: a\rb\ncn: {}\nsn: b\n\ndn: cn=b\ncn: b\n", "x".repeat(200));
        let results: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), 100).collect();
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(
            results[0].as_ref().map_err(|e| (e.line, e.kind.clone())),
            Err((2, LdifErrorKind::BareCarriageReturn))
        );
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(6));
    }

    /// A continuation line over the limit is refused at the line its folded line starts
    /// on, like every error in a folded line (so the operator finds the attribute it
    /// belongs to), and the rest of its record is skipped.
    #[test]
    fn an_oversized_continuation_is_refused_at_the_line_its_folded_line_starts_on() {
        let limit = 200;
        let text = format!("dn: cn=a\ncn: a\ndescription: x\n {}\nsn: b\n\ndn: cn=b\ncn: b\n", "y".repeat(2 * limit));
        let results: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), limit).collect();
        assert_eq!(results.len(), 2, "{results:?}");
        let said = results[0].as_ref().map_err(ToString::to_string);
        assert_eq!(said, Err(format!("line 3: record is larger than the {limit}-byte limit")));
        assert_eq!(results[1].as_ref().map(LdifRecord::line), Ok(7));
    }

    /// What a record costs against the limit is its unfolded lines plus 32 bytes each,
    /// as docs/ldif.md says: a record exactly at the limit reads, folded or not (the
    /// space starting a continuation is not content), and one byte more is refused.
    #[test]
    fn a_record_exactly_at_the_limit_reads_folded_or_not_and_one_byte_more_does_not() {
        let limit = 200;
        let read = |text: &str| LdifReader::with_max_record_bytes(text.as_bytes(), limit).collect::<Vec<_>>();
        // "dn: cn=a" and "cn: " and the value, each line with its 32 bytes.
        let fits = limit - "dn: cn=a".len() - "cn: ".len() - 2 * LINE_OVERHEAD_BYTES;
        let value = "x".repeat(fits);
        let (head, tail) = value.split_at(50);
        let folded = format!("dn: cn=a\ncn: {head}\n {}\n {}\n", &tail[..37], &tail[37..]);
        for text in [format!("dn: cn=a\ncn: {value}\n"), folded] {
            let results = read(&text);
            assert!(matches!(results.as_slice(), [Ok(_)]), "{results:?}\n{text}");
            let over = text.replace("cn: ", "cn: x");
            assert!(matches!(
                read(&over).as_slice(),
                [Err(LdifError { line: 2, kind: LdifErrorKind::RecordTooLarge { .. } })]
            ));
        }
    }

    /// Whether an oversized line continues the line before it is told by its first byte
    /// however the input arrives: read a few bytes at a time (a pipe), the byte that
    /// starts its last piece was taken instead, and the same file was refused at
    /// another line.
    #[test]
    fn an_oversized_line_is_told_a_continuation_by_its_first_byte_however_it_is_buffered() {
        let limit = 200;
        let text = format!("dn: cn=a\ncn: a\ndescription: x\n {}\n\ndn: cn=b\ncn: b\n", "y".repeat(2 * limit));
        for capacity in [1, 7, text.len()] {
            let input = io::BufReader::with_capacity(capacity, text.as_bytes());
            let results: Vec<_> = LdifReader::with_max_record_bytes(input, limit).collect();
            let lines: Vec<_> = results.iter().map(|r| r.as_ref().map(LdifRecord::line).map_err(|e| e.line)).collect();
            assert_eq!(lines, [Err(3), Ok(6)], "read {capacity} bytes at a time");
        }
    }

    /// A line's ending (LF or CRLF) does not count against the limit: a line of only
    /// spaces as long as the limit, in a CRLF file, is the blank line it looks like, not
    /// a line too long that refuses the record before it.
    #[test]
    fn a_line_ending_does_not_count_against_the_limit() {
        let limit = 100;
        let text = format!("dn: cn=a\r\ncn: a\r\n{}\r\ndn: cn=b\r\ncn: b\r\n", " ".repeat(limit));
        let results: Vec<_> = LdifReader::with_max_record_bytes(text.as_bytes(), limit).collect();
        let lines: Vec<_> =
            results.iter().map(|r| r.as_ref().map(LdifRecord::line).map_err(ToString::to_string)).collect();
        assert_eq!(lines, [Ok(1), Ok(4)]);
    }

    /// The default limit is the 16 MiB docs/ldif.md promises: a record of exactly
    /// 16 MiB, counted as the limit counts, reads.
    #[test]
    fn a_record_of_16_mib_reads_with_the_default_limit() {
        let value = "x".repeat(16 * 1024 * 1024 - "dn: cn=a".len() - "cn: ".len() - 2 * LINE_OVERHEAD_BYTES);
        let recs = records(&format!("dn: cn=a\ncn: {value}\n"));
        assert_eq!(content(&recs[0]).1.values("cn")[0].as_bytes().len(), value.len());
    }

    #[test]
    fn a_line_beyond_the_default_limit_is_refused_without_holding_it() {
        use std::io::Read;
        let head = b"dn: cn=a\ncn: ".as_slice();
        let endless = io::repeat(b'x').take((MAX_RECORD_BYTES + 1) as u64);
        let mut reader = LdifReader::new(io::BufReader::new(head.chain(endless)));
        let err = reader.next().and_then(Result::err).map(|e| e.to_string());
        assert_eq!(err, Some(format!("line 2: record is larger than the {MAX_RECORD_BYTES}-byte limit")));
        assert!(reader.next().is_none());
    }

    /// A read interrupted by a signal (`EINTR`, which `BufReader::fill_buf` passes on)
    /// is tried again, not taken for a failure: `load` reading a pipe would otherwise
    /// stop with "read failed" whenever the process got a signal.
    #[test]
    fn an_interrupted_read_is_tried_again() {
        struct InterruptedOnce<R> {
            interrupted: bool,
            inner: R,
        }
        impl<R: io::Read> io::Read for InterruptedOnce<R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if !std::mem::replace(&mut self.interrupted, true) {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                self.inner.read(buf)
            }
        }
        let input = InterruptedOnce { interrupted: false, inner: b"dn: cn=a\ncn: a\n".as_slice() };
        let results: Vec<_> = LdifReader::new(io::BufReader::new(input)).collect();
        assert_eq!(results, [parse_str("dn: cn=a\ncn: a\n").unwrap().remove(0)].map(Ok));
    }

    #[test]
    fn a_read_failure_ends_the_stream() {
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let input = io::BufReader::new(io::Read::chain(b"dn: cn=a\ncn: a\n".as_slice(), Failing));
        let mut reader = LdifReader::new(input);
        let err = reader.next().and_then(Result::err);
        assert_eq!(err.as_ref().map(ToString::to_string), Some("line 3: read failed: disk on fire".to_owned()));
        assert!(err.is_some_and(|e| e.is_fatal()));
        assert!(reader.next().is_none());
        // Also when it comes while the rest of a bad record is skipped: said once, then
        // nothing more (a failing disk is not one error per record left unread).
        let input = io::BufReader::new(io::Read::chain(b"dn: cn=a\ncn: a\rb\nsn: b\n".as_slice(), Failing));
        let results: Vec<_> = LdifReader::new(input).map(|r| r.map_err(|e| e.to_string())).collect();
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[1], Err("line 4: read failed: disk on fire".to_owned()));
    }

    #[test]
    fn a_large_group_is_read_in_linear_time() {
        const MEMBERS: usize = 50_000;
        let mut text = String::from("dn: cn=big,dc=x\nobjectClass: groupOfNames\n");
        for i in 0..MEMBERS {
            text.push_str(&format!("member: uid=user{i},ou=people,dc=x\n"));
        }
        let recs = records(&text);
        let (_, attrs) = content(&recs[0]);
        assert_eq!(attrs.values("member").len(), MEMBERS);
    }

    #[test]
    fn a_missing_final_newline_and_a_missing_final_dash_are_fine() {
        let recs = records("dn: cn=a\nchangetype: modify\nreplace: sn\nsn: b");
        assert_eq!(
            change(&recs[0]),
            &Change::Modify {
                dn: dn("cn=a"),
                mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec!["b".into()] }]
            }
        );
    }
}
