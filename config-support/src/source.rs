//! Config-file mechanics shared by both Tether processes: reading a TOML file, turning
//! every refusal into a [`ConfigError`] that names the file, the dotted key and the
//! reason, the value parsers the config structs deserialize with, relative-path
//! resolution, and secret files.
//!
//! It is its own crate because both processes need it and neither may depend on the
//! other, while `tether-protocol` stays free of config files. Each process's `config`
//! module imports it as `source`.
//!
//! How a key is named: serde reports *what* is wrong and toml_edit reports *where* (a
//! byte span). [`parse_toml`] indexes the span of every key, table and value of the
//! document by its dotted path (`agreement[1].retry[2]`), then looks the error's span up
//! in that index. The value parsers below therefore raise their errors while the value
//! is being deserialized, so that toml_edit attaches that value's span.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use tether_protocol::control::StatusGroup;
use tether_protocol::{Dn, Scope, Secret};
use toml_edit::{ImDocument, Item, Table, Value};

/// Largest secret file accepted, in bytes. HMAC keys are 32 to 64 bytes; a bigger file
/// is almost surely the wrong file (a certificate, `/dev/zero`), so reading stops here.
pub const MAX_SECRET_LEN: u64 = 4096;

/// Shortest secret taken without a warning, in bytes. The handshake's MACs are over
/// public nonces, so whoever captures one handshake can try secrets offline as fast as
/// HMAC-SHA256 runs: a short or typed secret falls to that, 32 random bytes do not.
/// Shorter ones are warned of, not refused, so that deployments running on them still
/// start after an upgrade.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest control-socket path accepted, in bytes: `sun_path` is 108 bytes on Linux,
/// including the terminating NUL. Binding a longer path fails late and obscurely, so it
/// is refused at load.
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// Longest agreement name accepted. Names appear in status lines, log fields and
/// command lines, and key the agreement's replica in the store.
pub const MAX_AGREEMENT_NAME_LEN: usize = 64;

/// The agreement name a provider lists the sessions of `tether-provider write` under,
/// which no agreement may have: a provider refuses a `[[consumer]]` of that name, and
/// so serves no consumer asking for it.
pub const WRITER_AGREEMENT: &str = "writer";

/// File name of the control socket inside `data_dir` when `control` is not set.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

/// Default `keepalive.interval`: a ping on an idle session every 5 seconds.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Default `keepalive.timeout`: a peer silent for 20 seconds (four missed pings) is gone.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The shortest `keepalive.interval`: an idle session is pinged every interval, and
/// answers. `"1ns"`, taken as greater than zero, pinged at every tick of the timer, a
/// thousand times a second each way on every session; the same floor as a poll's
/// `interval` and a retry's delay.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);

/// Key shown for an error that belongs to no key (the document as a whole).
const TOP_LEVEL: &str = "(top level)";

/// Why a config file, or a secret file it names, was refused. Every variant names the
/// file; [`ConfigError::Invalid`] also names the dotted key. Secret contents never
/// appear in any variant.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        /// The file that could not be read.
        file: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// The file is not well-formed TOML; there is no key to name yet, so the position.
    #[error("{}: line {line}, column {column}: invalid TOML: {reason}", file.display())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML parser expected.
        reason: String,
    },
    /// A key is unknown, missing, or holds a value that is refused.
    #[error("{}: key '{key}': {reason}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the key, with array indices: `agreement[1].retry[2]`.
        key: String,
        /// Why it was refused, naming the offending value.
        reason: String,
    },
    /// A secret file is missing, unreadable, too large or empty.
    #[error("{}: {reason}", file.display())]
    Secret {
        /// The secret file.
        file: PathBuf,
        /// Why it was refused (never its contents).
        reason: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for `key` of `file`.
    pub fn invalid(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { file: file.to_owned(), key: key.into(), reason: reason.into() }
    }

    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            Self::Read { file, .. }
            | Self::Syntax { file, .. }
            | Self::Invalid { file, .. }
            | Self::Secret { file, .. } => file,
        }
    }

    /// The dotted key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Reads `file` as UTF-8 text.
pub fn read_file(file: &Path) -> Result<String, ConfigError> {
    let bytes = read_regular(file).map_err(|error| ConfigError::Read { file: file.to_owned(), error })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        file: file.to_owned(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// Reads a file the configuration names (itself, a secret, a certificate or key),
/// refusing anything but a regular file first: opening a FIFO blocks until a writer
/// comes, and a process starting or reloading would hang there, deaf to SIGTERM.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() && !kind.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device): name the file itself",
        ));
    }
    std::fs::read(path)
}

/// The folder relative paths in `file` are resolved against: the file's folder, made
/// absolute (without touching the file system) so that the result does not depend on
/// a later change of working directory.
pub fn config_dir(file: &Path) -> Result<PathBuf, ConfigError> {
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(dir).map_err(|error| ConfigError::Read { file: file.to_owned(), error })
}

/// `path` if absolute, otherwise `path` below `dir`.
pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// [`resolve`] for the value of `key`, refusing one a shell would have expanded: no
/// shell reads this file, so `~/store` would be a folder called `~` beside it (made
/// there by a start, without a word), and `$HOME/store` one called `$HOME`.
/// Blank space at either end is refused too: it is a slip, never part of a folder's
/// name (`" ~/x"` made a folder called ` ~`), and so is a part of the path that starts
/// with `~` or `$` anywhere in it (`./~/store`, `data/$USER`).
pub fn resolve_key(file: &Path, dir: &Path, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    let text = path.to_string_lossy();
    let refuse = |why: String| Err(ConfigError::invalid(file, key, why));
    if text.trim() != text {
        return refuse(format!(
            "path \"{text}\" starts or ends with blank space, which no folder's name should: write it without"
        ));
    }
    let expanded = |part: &str| {
        if part.starts_with('~') {
            Some("~ (a home folder)")
        } else if part.starts_with('$') {
            Some("an environment variable")
        } else {
            None
        }
    };
    if let Some(what) = expanded(&text) {
        return refuse(format!(
            "path \"{text}\" starts with {what}, which only a shell expands: this file is read as written; write \
             the full path"
        ));
    }
    if let Some(what) = path.components().find_map(|c| expanded(&c.as_os_str().to_string_lossy())) {
        return refuse(format!(
            "path \"{text}\" has a part starting with {what}, which only a shell expands: this file is read as \
             written; write the full path"
        ));
    }
    Ok(resolve(dir, path))
}

/// The control socket `file` names, read from its `data_dir` and `control` keys alone
/// (`default_data_dir` if absent), every other key unread: how `status` still reaches
/// the running process while the file holds an error elsewhere, being edited say (the
/// process runs on the configuration it read). `None` if the file cannot be read, is
/// not TOML, or those two keys are not strings. Read as the load reads it
/// ([`read_regular`]): a FIFO the load refused would block this read until a writer came.
pub fn control_path(file: &Path, default_data_dir: &str) -> Option<PathBuf> {
    let text = String::from_utf8(read_regular(file).ok()?).ok()?;
    let table = past_errors(text)?;
    let string = |key: &str| match table.get(key) {
        None => Some(None),
        Some(item) => item.as_str().map(|s| Some(PathBuf::from(s))),
    };
    let dir = config_dir(file).ok()?;
    let data_dir = resolve(&dir, &string("data_dir")?.unwrap_or_else(|| PathBuf::from(default_data_dir)));
    Some(match string("control")? {
        Some(control) if !control.as_os_str().is_empty() => resolve(&dir, &control),
        _ => data_dir.join(CONTROL_SOCKET_NAME),
    })
}

/// The top-level table of `text`, read past its syntax errors (the likeliest state of a
/// file mid-edit) by parsing it again with each line an error is on left out, a table
/// header kept as one of a table of its own, so the keys under it stay out of the top
/// level. The whole file is parsed each time, so a line inside a multi-line string is
/// never read as a key. `None` if an error is on a line of `data_dir` or `control` (a
/// key given twice is one), which then cannot be known, or if the errors do not end.
fn past_errors(mut text: String) -> Option<Table> {
    /// More errors than a file being edited has (a half-pasted block of a few hundred
    /// lines still reads).
    const MAX_ERRORS: usize = 1_000;
    /// Larger than any configuration file: each error costs a parse of the whole file,
    /// and `status` must stay quick (31 errors in a 6.5 MB file took 4.6 s).
    const MAX_TEXT: usize = 256 * 1024;
    if text.len() > MAX_TEXT {
        return None;
    }
    for left_out in 0..=MAX_ERRORS {
        let error = match ImDocument::parse(text.clone()) {
            Ok(doc) => return Some(doc.as_table().clone()),
            Err(error) => error,
        };
        // An error at the end (a string never closed) is on the last line with
        // anything on it.
        let at = error.span()?.start.min(text.len());
        let at = if text[at..].trim().is_empty() { text[..at].trim_end().len() } else { at };
        let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        let line = &text[start..end];
        let key = line.split('=').next().unwrap_or_default().trim().trim_matches(['"', '\'']);
        if key == "data_dir" || key == "control" {
            return None;
        }
        if line.trim().is_empty() {
            return None;
        }
        let instead = match line.trim_start().starts_with('[') {
            true => format!("[tether_unparsed_line_{left_out}]"),
            false => String::new(),
        };
        text.replace_range(start..end, &instead);
    }
    None
}

/// Parses `text`, the contents of `file`, into `T`. Syntax errors name the line and
/// column; every other refusal names the dotted key (see the module docs).
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let doc = ImDocument::parse(text.to_owned()).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Syntax { file: file.to_owned(), line, column, reason: one_line(e.message()) }
    })?;
    let index = KeyIndex::of(doc.as_table());
    toml_edit::de::from_document(doc).map_err(|e| {
        let message = one_line(e.message());
        if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            // The span is the table that lacks it: only a table's own span names it, and
            // the top level's is in no table (the key nearest its start, the file's first,
            // was named as the missing key's parent: `listen.suffix`).
            let table = e.span().and_then(|span| index.exact(&span)).unwrap_or_default();
            return ConfigError::invalid(file, join_key(&table, field), "required key is missing");
        }
        let path = e.span().and_then(|span| index.locate(&span)).unwrap_or_default();
        let key = if path.is_empty() { TOP_LEVEL.to_owned() } else { path };
        ConfigError::invalid(file, key, plain_types(&message.replacen("unknown field", "unknown key", 1)))
    })
}

/// serde names the Rust type a value should have had (`expected usize`); an operator
/// editing a config file knows numbers, not Rust types. A number written in quotes is
/// the usual slip, so it is named.
fn plain_types(message: &str) -> String {
    const PLAIN: [(&str, &str); 9] = [
        ("usize", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u16", "a whole number from 0 to 65535"),
        ("u8", "a whole number from 0 to 255"),
        ("isize", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
    ];
    for (name, plain) in PLAIN {
        if let Some(rest) = message.strip_suffix(&format!("expected {name}")) {
            let quoted = rest.starts_with("invalid type: string ");
            return format!("{rest}expected {plain}{}", if quoted { " (write numbers without quotes)" } else { "" });
        }
    }
    message.to_owned()
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A parser message on one line, as a log line or status field wants it.
fn one_line(message: &str) -> String {
    message.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// `parent.child`, or `child` at the top level.
fn join_key(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// The byte span of every key, table and value of a document, with its dotted path.
struct KeyIndex {
    /// `(dotted path, span)`, in document walk order.
    spans: Vec<(String, Range<usize>)>,
}

impl KeyIndex {
    /// Indexes every node below `root`.
    fn of(root: &Table) -> Self {
        let mut index = Self { spans: Vec::new() };
        index.table("", root);
        index
    }

    /// The path of the node whose span is exactly `span`; the deepest path wins a tie.
    fn exact(&self, span: &Range<usize>) -> Option<String> {
        self.spans.iter().filter(|(_, s)| s == span).max_by_key(|(path, _)| path.len()).map(|(path, _)| path.clone())
    }

    /// The path of the node whose span is exactly `span`, or else of the smallest node
    /// containing its start; the deepest path wins a tie.
    fn locate(&self, span: &Range<usize>) -> Option<String> {
        let exact = self.spans.iter().filter(|(_, s)| s == span).max_by_key(|(path, _)| path.len());
        let found = exact.or_else(|| {
            self.spans
                .iter()
                .filter(|(_, s)| s.start <= span.start && span.start < s.end.max(s.start + 1))
                .min_by_key(|(path, s)| (s.end - s.start, usize::MAX - path.len()))
        });
        found.map(|(path, _)| path.clone())
    }

    fn push(&mut self, path: &str, span: Option<Range<usize>>) {
        if let Some(span) = span.filter(|_| !path.is_empty()) {
            self.spans.push((path.to_owned(), span));
        }
    }

    fn table(&mut self, path: &str, table: &Table) {
        self.push(path, table.span());
        for (name, item) in table.iter() {
            let child = join_key(path, name);
            self.push(&child, table.key(name).and_then(|k| k.span()));
            self.item(&child, item);
        }
    }

    fn item(&mut self, path: &str, item: &Item) {
        match item {
            Item::None => {}
            Item::Value(value) => self.value(path, value),
            Item::Table(table) => self.table(path, table),
            Item::ArrayOfTables(array) => {
                self.push(path, array.span());
                for (i, table) in array.iter().enumerate() {
                    self.table(&format!("{path}[{i}]"), table);
                }
            }
        }
    }

    fn value(&mut self, path: &str, value: &Value) {
        self.push(path, value.span());
        match value {
            Value::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    self.value(&format!("{path}[{i}]"), element);
                }
            }
            Value::InlineTable(table) => {
                for (name, element) in table.iter() {
                    let child = join_key(path, name);
                    self.push(&child, table.key(name).and_then(|k| k.span()));
                    self.value(&child, element);
                }
            }
            _ => {}
        }
    }
}

/// A visitor that parses one string value with `parse`; its error is raised while the
/// value is deserialized, so it carries the value's span (and so its key).
struct StrVisitor<F> {
    /// What the value should look like, for serde's "invalid type" message.
    expecting: &'static str,
    /// Turns the text into the value, or says why not.
    parse: F,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

/// Deserializes a string with `parse`, for `#[serde(deserialize_with)]` helpers.
pub fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_str(StrVisitor { expecting, parse })
}

/// The longest duration a configuration takes, 100 years as humantime counts them
/// (365.25 days each, so `"100y"` is allowed): far past any interval, timeout or age
/// anyone means, and short enough that adding it to the clock cannot overflow (a poll
/// `interval` of `"18446744073709551615s"` panicked the agreement's task, which then sat
/// in `refreshing` for ever, and some longer ones broke humantime's own printing).
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// Parses a humantime duration (`"5s"`, `"1m 30s"`, `"7d"`), at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime's own words for it are "expected number at 0".
    if text.trim_start().starts_with('-') {
        return Err(format!("invalid duration {text:?}: a duration cannot be negative"));
    }
    let value = humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    if value > MAX_DURATION {
        return Err(format!("invalid duration {text:?}: longer than 100 years"));
    }
    Ok(value)
}

/// [`parse_duration`], refusing less than `min` (saying so, with `why` after it): a
/// duration that paces a loop (pings, trims) and was taken as long as it was above zero
/// ran that loop at every tick of the timer when written as `"1ns"`.
pub fn parse_duration_at_least(text: &str, min: Duration, why: &str) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value < min {
        return Err(format!("invalid duration {text:?}: must be at least {}{why}", humantime::format_duration(min)));
    }
    Ok(value)
}

/// What a duration key expects, for the error of a value of another type.
const DURATION_EXPECTED: &str = "a duration such as \"5s\" or \"1m\"";

/// A humantime duration, zero allowed.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_str(d, DURATION_EXPECTED, parse_duration)
}

/// A humantime duration of at least `min` ([`parse_duration_at_least`]), for a key's
/// `deserialize_with` function to call with its floor and the reason for it.
pub fn duration_at_least<'de, D: Deserializer<'de>>(d: D, min: Duration, why: &str) -> Result<Duration, D::Error> {
    parse_str(d, DURATION_EXPECTED, |text| parse_duration_at_least(text, min, why))
}

/// A humantime duration greater than zero (intervals and timeouts: zero would spin).
pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_str(d, DURATION_EXPECTED, |text| {
        let value = parse_duration(text)?;
        if value.is_zero() {
            Err(format!("invalid duration {text:?}: must be greater than zero"))
        } else {
            Ok(value)
        }
    })
}

/// An optional [`positive_duration`]; pair with `#[serde(default)]`.
pub fn optional_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    positive_duration(d).map(Some)
}

/// A whole number of at least 1 (sizes and counts: zero would stall or refuse all).
pub fn positive<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    // The type's own refusal of a negative number says "0 or more" (see
    // `plain_types`), which is wrong for these keys.
    let value = T::deserialize(d)
        .map_err(|e| de::Error::custom(plain_types(e.to_string().trim_end()).replacen("0 or more", "1 or more", 1)))?;
    if value == T::default() {
        Err(de::Error::custom("must be at least 1"))
    } else {
        Ok(value)
    }
}

/// Parses a size in bytes written with a binary unit: `"64MiB"`, `"1GiB"`, `"512KiB"`,
/// `"1048576B"` (spaces between number and unit allowed). Units are required, so a bare
/// number is never read in a unit the writer did not mean.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {text:?}: {why}");
    let trimmed = text.trim();
    let split =
        trimmed.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| bad("a unit is required (B, KiB, MiB, GiB)"))?;
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad("expected a whole number then a unit"))?;
    let scale: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(bad(&format!("unknown unit {other:?} (B, KiB, MiB, GiB)"))),
    };
    number.checked_mul(scale).ok_or_else(|| bad("too large"))
}

/// A store's cache size: a [`parse_byte_size`] size of at least 1 MiB (below that sled
/// would read nearly every page back from disk).
pub fn cache_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_str(d, "a size such as \"64MiB\" or \"1GiB\"", |text| {
        let bytes = parse_byte_size(text)?;
        if bytes < 1 << 20 {
            Err(format!("invalid size {text:?}: must be at least 1MiB"))
        } else {
            Ok(bytes)
        }
    })
}

/// A distinguished name, checked with [`Dn::parse`].
pub fn dn<'de, D: Deserializer<'de>>(d: D) -> Result<Dn, D::Error> {
    parse_str(d, "a DN such as \"dc=example,dc=com\"", |text| {
        Dn::parse(text).map_err(|e| format!("invalid DN {text:?}: {e}"))
    })
}

/// An optional [`dn`]; pair with `#[serde(default)]`.
pub fn optional_dn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dn>, D::Error> {
    dn(d).map(Some)
}

/// A search scope word: `base`, `one` or `subtree`.
pub fn scope<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
    parse_str(d, "a scope: base, one or subtree", |text| Scope::from_str(text).map_err(|e| e.to_string()))
}

/// A `host:port` address.
pub fn host_port<'de, D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
    parse_str(d, "an address such as \"127.0.0.1:7389\"", |text| HostPort::from_str(text).map_err(|e| e.to_string()))
}

/// An optional `host:port` address: a key that is off unless given.
pub fn optional_host_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HostPort>, D::Error> {
    host_port(d).map(Some)
}

/// A file or folder path; an empty string is refused (it would silently mean the
/// config file's own folder). Resolution against that folder happens after parsing.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    parse_str(
        d,
        "a path",
        |text| {
            if text.is_empty() {
                Err("path is empty".to_owned())
            } else {
                Ok(PathBuf::from(text))
            }
        },
    )
}

/// `status_group`: a group by name, looked up on this host (through its name service,
/// so a group of a directory the host uses is found too), or by number. Looked up when
/// the file is read, so a misspelt group stops a start, naming it, rather than leaving
/// the monitoring it was for refused at its first check.
pub fn status_group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StatusGroup>, D::Error> {
    parse_str(d, "a group's name, or its number", |text| {
        let lookup = |found: nix::Result<Option<nix::unistd::Group>>| {
            found.map_err(|e| format!("looking up group {text:?}: {e}"))
        };
        if let Ok(gid) = text.parse::<u32>() {
            // A number names a group whether or not it has a name here.
            let name = lookup(nix::unistd::Group::from_gid(gid.into()))?.map_or_else(|| text.to_owned(), |g| g.name);
            return Ok(Some(StatusGroup { name, gid }));
        }
        match lookup(nix::unistd::Group::from_name(text))? {
            Some(group) => Ok(Some(StatusGroup { name: group.name, gid: group.gid.as_raw() })),
            None => Err(format!("no group named {text:?} on this host (`getent group` lists them)")),
        }
    })
}

/// Keepalive settings of a session: how often to ping while idle and when silence
/// means the peer is gone (SPEC §4 `keepalive-timeout`). Detection takes at most
/// `timeout + interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Whether the keepalive poller runs at all. Default `true`. With `false` a silent
    /// peer is only noticed by `idle_timeout` (consumer) or TCP itself: for tests and for
    /// links where pings are unwelcome, not for production.
    #[serde(default = "default_keepalive_enabled")]
    pub enabled: bool,
    /// How often a ping goes out on a session that has sent nothing else, so a healthy
    /// but quiet peer is never mistaken for a dead one. Default `"5s"`, at least
    /// [`MIN_KEEPALIVE_INTERVAL`].
    #[serde(default = "default_keepalive_interval", deserialize_with = "keepalive_interval")]
    pub interval: Duration,
    /// Silence after which the peer is declared gone (host died, black hole, half-open
    /// socket) and the session torn down. Default `"20s"`; must exceed `interval`.
    #[serde(default = "default_keepalive_timeout", deserialize_with = "positive_duration")]
    pub timeout: Duration,
}

/// A `keepalive.interval`: a duration of at least [`MIN_KEEPALIVE_INTERVAL`].
fn keepalive_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_at_least(d, MIN_KEEPALIVE_INTERVAL, " (an idle session is pinged every interval)")
}

fn default_keepalive_enabled() -> bool {
    true
}

fn default_keepalive_interval() -> Duration {
    DEFAULT_KEEPALIVE_INTERVAL
}

fn default_keepalive_timeout() -> Duration {
    DEFAULT_KEEPALIVE_TIMEOUT
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self { enabled: true, interval: DEFAULT_KEEPALIVE_INTERVAL, timeout: DEFAULT_KEEPALIVE_TIMEOUT }
    }
}

impl KeepaliveConfig {
    /// Refuses a timeout that does not exceed the interval: the peer would be declared
    /// gone before its next ping could arrive. `prefix` is the section's dotted key.
    pub fn check(&self, file: &Path, prefix: &str) -> Result<(), ConfigError> {
        if self.timeout <= self.interval {
            return Err(ConfigError::invalid(
                file,
                join_key(prefix, "timeout"),
                format!(
                    "timeout {} must be longer than interval {}",
                    humantime::format_duration(self.timeout),
                    humantime::format_duration(self.interval)
                ),
            ));
        }
        Ok(())
    }
}

/// A network address as `host:port`, checked for shape at load and resolved only when
/// used (a name that does not resolve yet is a connection failure, not a config error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address, IPv6 without its brackets.
    host: String,
    /// TCP port; 0 asks the system for a free port when listening.
    port: u16,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {text:?}: {why}")]
pub struct AddressError {
    /// The address as written.
    text: String,
    /// What is wrong with it.
    why: &'static str,
}

impl HostPort {
    /// `127.0.0.1:port`.
    pub fn loopback(port: u16) -> Self {
        Self { host: "127.0.0.1".to_owned(), port }
    }

    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `(host, port)`, which `tokio::net::TcpStream::connect`, `TcpListener::bind` and
    /// `lookup_host` accept as is.
    pub fn addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| AddressError { text: text.to_owned(), why };
        if text.contains("://") {
            return Err(err("a host:port, not a URL: leave out the scheme, as 127.0.0.1:7389"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or_else(|| err("expected [ipv6]:port, as [::1]:7389"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| err("invalid IPv6 address between the brackets"))?;
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| err("expected host:port, as 127.0.0.1:7389"))?;
            if host.contains(':') {
                return Err(err("an IPv6 address needs brackets, as [::1]:7389"));
            }
            if host.is_empty() {
                return Err(err("the host is missing"));
            }
            if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
                return Err(err("the host must be a name or an IP address"));
            }
            if looks_numeric(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(err(
                    "the host is not an IPv4 address: write four numbers from 0 to 255 without leading zeros, as \
                     127.0.0.1 (the system reads a shorter, octal or hexadecimal form as some other address: \
                     \"0\" as 0.0.0.0, every interface)",
                ));
            }
            (host, port)
        };
        let port = port.parse::<u16>().map_err(|_| err("the port must be a number from 0 to 65535"))?;
        Ok(Self { host: host.to_owned(), port })
    }
}

/// Whether `host` is made of numbers alone (decimal, or hexadecimal as `0x7f`) between
/// dots: no name is, and the system's resolver reads any such host as an IPv4 address
/// in the old loose forms (`inet_aton`), so `0` listened on every interface, `127.1`
/// and `0x7f000001` meant 127.0.0.1 and `010.0.0.1` meant 8.0.0.1, while `999.1.1.1`
/// failed with `Name or service not known`.
fn looks_numeric(host: &str) -> bool {
    host.split('.').all(|part| {
        let hex = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X"));
        match hex {
            Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
            None => part.bytes().all(|b| b.is_ascii_digit()),
        }
    })
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Checks an agreement name: 1 to [`MAX_AGREEMENT_NAME_LEN`] ASCII letters, digits,
/// `-`, `_` or `.`, starting with a letter or digit (so it never reads as a command-line
/// flag, and is safe in paths, log fields and store keys).
pub fn check_agreement_name(name: &str) -> Result<(), String> {
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let chars_ok = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if name.is_empty() {
        Err("agreement name is empty".to_owned())
    } else if name.len() > MAX_AGREEMENT_NAME_LEN {
        Err(format!("agreement name {name:?} is longer than {MAX_AGREEMENT_NAME_LEN} characters"))
    } else if !starts_ok || !chars_ok {
        Err(format!(
            "invalid agreement name {name:?}: use ASCII letters and digits, '-', '_' and '.', starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

/// Refuses a control-socket path the operating system could not bind: one too long,
/// and one ending in `/`, which names a folder (the start failed with "No such file or
/// directory", naming neither the key nor what was wrong).
pub fn check_socket_path(file: &Path, key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(ConfigError::invalid(
            file,
            key,
            format!(
                "socket path {} ends with /, which names a folder: name the socket's file, as {}",
                path.display(),
                path.join(CONTROL_SOCKET_NAME).display()
            ),
        ));
    }
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_LEN {
        return Err(ConfigError::invalid(
            file,
            key,
            format!(
                "socket path {} is {len} bytes long; Unix sockets allow at most {MAX_SOCKET_PATH_LEN}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses a `control` the process could not bind ([`check_socket_path`]), and one
/// naming `data_dir` itself: the socket took the folder's place, and the start failed
/// with "creating data_dir ...: File exists", naming neither the key nor what was wrong.
pub fn check_control(file: &Path, data_dir: &Path, control: &Path) -> Result<(), ConfigError> {
    check_socket_path(file, "control", control)?;
    if control == data_dir {
        return Err(ConfigError::invalid(
            file,
            "control",
            format!(
                "socket path {} is data_dir itself: name the socket's file, as {} (the default)",
                control.display(),
                data_dir.join(CONTROL_SOCKET_NAME).display()
            ),
        ));
    }
    Ok(())
}

/// A secret read from its file, with the warnings the file deserves.
#[derive(Debug)]
pub struct SecretFile {
    /// The secret, one trailing newline removed.
    pub secret: Secret,
    /// Problems that do not stop the process but that an operator should fix, such as
    /// a file readable by group or others; log each at `warn`.
    pub warnings: Vec<String>,
}

/// What to say after an error that is the process's (or the machine's) open files
/// running out, not the file's: read alone, "Too many open files" under a secret's key
/// sent an operator to the secret.
pub fn out_of_files(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() => {
            " (the process is out of open files, the file is not at fault: raise its limit, `ulimit -n` or \
             `LimitNOFILE=` in a systemd unit)"
        }
        Some(code) if code == rustix::io::Errno::NFILE.raw_os_error() => {
            " (the machine is out of open files, the file is not at fault)"
        }
        _ => "",
    }
}

/// Reads a secret file: at most [`MAX_SECRET_LEN`] bytes, one trailing newline (`\n` or
/// `\r\n`) removed, refused when empty. On Unix, a file readable or writable by group
/// or others yields a warning rather than an error; so does a secret that begins with a
/// byte order mark or ends in blank space, which are part of it (the two sides'
/// files must hold the same bytes) but are usually an editor's, and invisible in it,
/// and one shorter than [`MIN_SECRET_LEN`].
pub fn load_secret(path: &Path) -> Result<SecretFile, ConfigError> {
    let refuse = |reason: String| ConfigError::Secret { file: path.to_owned(), reason };
    let unread = |e: std::io::Error| refuse(format!("cannot read secret file: {e}{}", out_of_files(&e)));
    // Not a FIFO, which would block the open (see `read_regular`).
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            return Err(refuse("cannot read secret file: not a regular file (a FIFO, socket or device)".to_owned()))
        }
        _ => {}
    }
    let file = File::open(path).map_err(unread)?;
    let mut warnings = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(unread)?.permissions().mode();
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "secret file {} is accessible by group or others (mode {:o}); restrict it with chmod 600",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_LEN + 1).read_to_end(&mut bytes).map_err(unread)?;
    if bytes.len() as u64 > MAX_SECRET_LEN {
        return Err(refuse(format!("secret file is larger than {MAX_SECRET_LEN} bytes; is it the right file?")));
    }
    // Blank lines (an editor's, or a copy that lost its text) would be taken as the
    // secret: both sides "agree" on a guessable one, or disagree without a clue.
    let body = bytes.strip_suffix(b"\r\n").or_else(|| bytes.strip_suffix(b"\n")).unwrap_or(&bytes);
    let blank = |c: char| c.is_whitespace() || c.is_control();
    if !body.is_empty() && String::from_utf8_lossy(body).chars().all(blank) {
        return Err(refuse("secret file holds only blank space".to_owned()));
    }
    if body.starts_with(b"\xef\xbb\xbf") {
        warnings.push(format!(
            "secret file {} begins with a byte order mark (bytes EF BB BF, as a Windows editor saves one), which is \
             part of the secret: the other side's file must begin with it too; remove it from both if an editor added it",
            path.display()
        ));
    }
    if body.last().is_some_and(|&b| b == b' ' || b == b'\t' || b == b'\r' || b == b'\n') {
        warnings.push(format!(
            "secret file {} ends in blank space (after one newline is taken off), which is part of the secret: the \
             other side's file must end the same way",
            path.display()
        ));
    }
    if !body.is_empty() && body.len() < MIN_SECRET_LEN {
        warnings.push(format!(
            "secret file {} holds a secret of {} bytes, under {MIN_SECRET_LEN}: whoever captures a handshake can \
             guess it offline; use 32 random bytes, as `head -c 32 /dev/urandom | base64` writes (in both sides' \
             files)",
            path.display(),
            body.len()
        ));
    }
    let secret = Secret::from_file_contents(bytes).map_err(|_| refuse("secret file is empty".to_owned()))?;
    Ok(SecretFile { secret, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO (named pipe) made in `dir`, its owner's alone.
    fn fifo_in(dir: &Path) -> std::path::PathBuf {
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg("-m").arg("600").arg(&fifo).status().unwrap();
        assert!(made.success());
        fifo
    }

    /// A FIFO named as a secret or a configuration file is refused at once: opening it
    /// would block until a writer came, and the process would hang deaf to SIGTERM.
    #[test]
    fn a_fifo_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let secret = load_secret(&fifo).map(|_| ()).unwrap_err().to_string();
        assert!(secret.contains("not a regular file"), "{secret}");
        let config = read_file(&fifo).unwrap_err().to_string();
        assert!(config.contains("not a regular file"), "{config}");
        let dir_is_not = read_regular(dir.path()).unwrap_err();
        assert_ne!(dir_is_not.kind(), std::io::ErrorKind::InvalidInput, "a folder fails as reading one does");
    }

    /// A device or a socket named as a configuration file is refused as a FIFO is, for
    /// what it is: `/dev/zero` would be read for ever, `/dev/null` read as an empty file
    /// and refused for a key it never had, and a socket fails to open with words that
    /// name no cause.
    #[test]
    fn a_device_or_a_socket_is_refused_as_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for path in [Path::new("/dev/null"), &socket] {
            let e = read_file(path).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    /// A command given a FIFO as its file (`status -c fifo`) has the load refuse it, and
    /// then reads the file again for the control socket's path, past its errors
    /// ([`control_path`]): that read must refuse the FIFO too, not wait for a writer,
    /// which left the command hanging where the load had said why it could not go on.
    #[test]
    fn the_control_path_of_a_fifo_is_not_waited_on() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let reading = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(control_path(&reading, "data/consumer"));
        });
        let answered = rx.recv_timeout(Duration::from_secs(10));
        if answered.is_err() {
            // Lets the stuck reader go: a writer that opens and closes at once.
            let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
            let _ = std::fs::OpenOptions::new().write(true).custom_flags(nonblock).open(&fifo);
        }
        assert_eq!(answered.expect("control_path waited for a writer of the FIFO"), None);
    }

    #[test]
    fn the_control_path_is_read_past_errors_elsewhere_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let at = |text: &str| {
            std::fs::write(&file, text).unwrap();
            control_path(&file, "data/consumer")
        };
        let base = std::path::absolute(dir.path()).unwrap();
        assert_eq!(at("bogus_key = 1\n[[agreement]]\n"), Some(base.join("data/consumer/control.sock")));
        assert_eq!(at("data_dir = \"store\"\nbogus = 1"), Some(base.join("store/control.sock")));
        assert_eq!(at("control = \"/run/t.sock\"\ndata_dir = 5"), None, "data_dir is not a string");
        assert_eq!(at("control = \"/run/t.sock\"\n"), Some(PathBuf::from("/run/t.sock")));
        assert_eq!(at("control = [unclosed"), None, "not TOML");
        // A syntax error past the top-level keys (a table header being typed), or on a
        // line of its own among them, hides neither.
        let edited = "data_dir = \"store\"\nshutdown_timeout = \"5s\n[[agreement]\nname = \"a\"\n";
        assert_eq!(at(edited), Some(base.join("store/control.sock")));
        assert_eq!(
            at("control = \"/run/t.sock\"\n[[agreement]\ncontrol = \"/elsewhere\"\n"),
            Some(PathBuf::from("/run/t.sock"))
        );
        // A line inside a multi-line string is not a key, whatever it reads like.
        let in_string = "data_dir = \"store\"\nnote = \"\"\"\ncontrol = \"/elsewhere\"\n[x]\n\"\"\"\nfoo =\n";
        assert_eq!(at(in_string), Some(base.join("store/control.sock")));
        let after_string = "note = '''\n[x]\n'''\nfoo =\ncontrol = \"/run/t.sock\"\n";
        assert_eq!(at(after_string), Some(PathBuf::from("/run/t.sock")));
        // Nor is one of a string never closed, the error the file ends in; such a line
        // that reads like one of the two keys leaves them unknown.
        let unclosed = "data_dir = \"store\"\nnote = \"\"\"\nlisten = \"x\"\n\n";
        assert_eq!(at(unclosed), Some(base.join("store/control.sock")));
        assert_eq!(at("data_dir = \"store\"\nnote = \"\"\"\ncontrol = \"/elsewhere\"\n"), None);
        // A key given twice cannot be known.
        assert_eq!(at("data_dir = \"store\"\ndata_dir = \"other\"\n"), None);
        assert_eq!(at("control = \"/a.sock\"\ncontrol = \"/b.sock\"\n"), None);
        assert_eq!(at("control = \"/a.sock\"\n'control' = \"/b.sock\"\n"), None);
        let after_twice = "data_dir = \"store\"\nlisten = 1\nlisten = 2\nx = 3\n";
        assert_eq!(at(after_twice), Some(base.join("store/control.sock")), "another key twice hides neither");
        // A block pasted half-way: hundreds of errors.
        let pasted = format!("data_dir = \"store\"\n{}", "bad = = 1\n".repeat(500));
        assert_eq!(at(&pasted), Some(base.join("store/control.sock")));
        // Several errors, before and after the keys.
        let many = "a =\ndata_dir = \"store\"\nc = }\n[t\nd = 1\nb = [\n";
        assert_eq!(at(many), Some(base.join("store/control.sock")));
        // In an array left open, the keys are unknown.
        assert_eq!(at("b = [\ndata_dir = \"store\"\n"), None);
    }

    /// A document exercising tables, arrays of tables and inline tables.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default, deserialize_with = "duration")]
        wait: Duration,
        #[serde(default)]
        count: usize,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        inline: Option<Inner>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(deserialize_with = "host_port")]
        addr: HostPort,
    }

    fn err(text: &str) -> String {
        parse_toml::<Doc>(Path::new("t.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("wait = \"5 parsecs\"");
        assert!(e.starts_with("t.toml: key 'wait': invalid duration \"5 parsecs\": unknown time unit"), "{e}");
        let e = err("wait = \"-5s\"");
        assert_eq!(e, "t.toml: key 'wait': invalid duration \"-5s\": a duration cannot be negative");
        // One past which adding it to the clock overflowed (an agreement's task panicked).
        let e = err("wait = \"18446744073709551615s\"");
        assert_eq!(e, "t.toml: key 'wait': invalid duration \"18446744073709551615s\": longer than 100 years");
        assert!(err("wait = \"100000000000d\"").ends_with("longer than 100 years"));
        assert_eq!(parse_duration("36500d"), Ok(Duration::from_secs(36500 * 24 * 3600)));
        assert_eq!(parse_duration("100y"), Ok(MAX_DURATION), "humantime's years are 365.25 days");
        assert!(parse_duration("100y 1s").is_err());
        assert_eq!(
            err("[[list]]\naddr = \"a:1\"\n[[list]]\naddr = \"b\""),
            "t.toml: key 'list[1].addr': invalid address \"b\": expected host:port, as 127.0.0.1:7389"
        );
        assert_eq!(
            err("inline = { addr = \"x:99999\" }"),
            "t.toml: key 'inline.addr': invalid address \"x:99999\": the port must be a number from 0 to 65535"
        );
        assert!(err("[[list]]\nadr = \"a:1\"").starts_with("t.toml: key 'list[0].adr': unknown key `adr`"));
        assert_eq!(err("[[list]]\n"), "t.toml: key 'list[0].addr': required key is missing");
        assert!(err("wait = 5").starts_with("t.toml: key 'wait': invalid type: integer `5`, expected a duration"));
        // Numbers in an operator's words, not Rust's (`expected usize`).
        assert_eq!(
            err("count = \"500\""),
            "t.toml: key 'count': invalid type: string \"500\", expected a whole number, 0 or more (write numbers \
             without quotes)"
        );
        assert_eq!(
            err("count = -3"),
            "t.toml: key 'count': invalid value: integer `-3`, expected a whole number, 0 or more"
        );
        assert_eq!(
            err("count = 1.5"),
            "t.toml: key 'count': invalid type: floating point `1.5`, expected a whole number, 0 or more"
        );
    }

    /// A keepalive interval of a few nanoseconds is refused as zero is: `"1ns"` passed as
    /// greater than zero and pinged at every tick of the timer, a thousand times a
    /// second each way on every session (an idle session held a fifth of a core on the
    /// provider and a third on the consumer).
    #[test]
    fn a_keepalive_interval_of_a_few_nanoseconds_is_refused_as_zero_is() {
        let refused = |text: &str| parse_toml::<KeepaliveConfig>(Path::new("t.toml"), text).unwrap_err().to_string();
        assert_eq!(
            refused("interval = \"1ns\"\ntimeout = \"20s\""),
            "t.toml: key 'interval': invalid duration \"1ns\": must be at least 100ms (an idle session is pinged \
             every interval)"
        );
        assert!(
            refused("interval = \"0s\"").ends_with("must be at least 100ms (an idle session is pinged every interval)")
        );
        let shortest = parse_toml::<KeepaliveConfig>(Path::new("t.toml"), "interval = \"100ms\"").unwrap();
        assert_eq!(shortest.interval, Duration::from_millis(100));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = err("wait = \"5s\"\nlist = [\n");
        assert!(e.starts_with("t.toml: line 3, column 1: invalid TOML: "), "{e}");
        let e = err("wait = \"5s\"\nwait = \"6s\"\n");
        assert!(e.starts_with("t.toml: line 2, column 1: invalid TOML: duplicate key"), "{e}");
    }

    /// The column counts characters, as an editor shows them, not bytes: a letter of
    /// two bytes before the error (a name with an accent) put it one column past it.
    #[test]
    fn a_syntax_error_s_column_counts_characters_not_bytes() {
        let e = err("wait = \"5s\"\nname = \"Zoë\" x\n");
        assert!(e.starts_with("t.toml: line 2, column 14: invalid TOML: "), "{e}");
    }

    #[test]
    fn host_port_forms() {
        let hp: HostPort = "[::1]:7389".parse().unwrap();
        assert_eq!((hp.host(), hp.port()), ("::1", 7389));
        assert_eq!(hp.to_string(), "[::1]:7389");
        let hp: HostPort = "provider.example.com:0".parse().unwrap();
        assert_eq!(hp.addr(), ("provider.example.com", 0));
        for bad in ["", "host", ":7389", "::1:7389", "[::1]7389", "[zz]:1", "a b:1", "h:-1", "h:65536", "h:"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?} accepted");
        }
        // A URL is not taken for an IPv6 address without brackets.
        let e = "tether://provider:7389".parse::<HostPort>().unwrap_err().to_string();
        assert!(e.ends_with("a host:port, not a URL: leave out the scheme, as 127.0.0.1:7389"), "{e}");
    }

    /// A host of numbers alone that is no dotted quad is refused as no IPv4 address:
    /// the system would read it as one in a loose form, and `0` listened on every
    /// interface.
    #[test]
    fn a_numeric_host_that_is_no_dotted_quad_is_refused_as_no_ipv4_address() {
        let loose =
            ["0", "127.1", "0x7f000001", "0X7F.1", "999.1.1.1", "010.0.0.1", "1.2.3.4.5", "1.2.3.", "4294967295"];
        for bad in loose {
            let e = format!("{bad}:48071").parse::<HostPort>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid address \"{bad}:48071\": the host is not an IPv4 address")), "{e}");
        }
        for good in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.0.0.1"] {
            let hp = format!("{good}:48071").parse::<HostPort>().unwrap();
            assert_eq!(hp.host(), good);
        }
        // Names with digits in them are names.
        for name in ["1e100.net", "0xfe.example.com", "host0", "123-4.example", "x0"] {
            assert!(format!("{name}:48071").parse::<HostPort>().is_ok(), "{name:?} refused");
        }
        // The key is named, as for any address.
        assert_eq!(
            err("inline = { addr = \"0:48071\" }"),
            "t.toml: key 'inline.addr': invalid address \"0:48071\": the host is not an IPv4 address: write four \
             numbers from 0 to 255 without leading zeros, as 127.0.0.1 (the system reads a shorter, octal or \
             hexadecimal form as some other address: \"0\" as 0.0.0.0, every interface)"
        );
    }

    #[test]
    fn agreement_names() {
        for good in ["people", "a", "x-1.y_2", "0day"] {
            assert_eq!(check_agreement_name(good), Ok(()));
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(MAX_AGREEMENT_NAME_LEN + 1)] {
            assert!(check_agreement_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A name of 64 characters, the most an agreement may have, is taken, and one of 65
    /// refused: the limit is the name's length, not one short of it.
    #[test]
    fn an_agreement_name_of_64_characters_is_taken_and_one_of_65_refused() {
        let longest = "a".repeat(MAX_AGREEMENT_NAME_LEN);
        assert_eq!(check_agreement_name(&longest), Ok(()));
        let e = check_agreement_name(&format!("{longest}b")).unwrap_err();
        assert!(e.ends_with("is longer than 64 characters"), "{e}");
    }

    /// A control socket path of 107 bytes, the most a Unix socket address holds with its
    /// terminating NUL, is taken (and binds), and one of 108 refused naming the key.
    #[test]
    fn a_socket_path_of_107_bytes_is_taken_and_one_of_108_refused() {
        let dir = tempfile::tempdir().unwrap();
        let named = |len: usize| {
            let folder = dir.path().as_os_str().len() + 1;
            dir.path().join("s".repeat(len - folder))
        };
        let file = Path::new("/etc/tether/c.toml");
        let longest = named(MAX_SOCKET_PATH_LEN);
        assert_eq!(longest.as_os_str().len(), 107);
        check_socket_path(file, "control", &longest).unwrap();
        std::os::unix::net::UnixListener::bind(&longest).unwrap();
        let e = check_socket_path(file, "control", &named(MAX_SOCKET_PATH_LEN + 1)).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/tether/c.toml: key 'control': socket path ")
                && e.ends_with(" is 108 bytes long; Unix sockets allow at most 107"),
            "{e}"
        );
    }

    /// Sizes are read in the binary units they are written in: a KiB is 1024 bytes, a
    /// MiB 1024 KiB, a GiB 1024 MiB, so `"1024KiB"` is the cache's least, `"1MiB"`.
    #[test]
    fn sizes_are_read_in_binary_units() {
        assert_eq!(parse_byte_size("1048576B"), Ok(1 << 20));
        assert_eq!(parse_byte_size("1KiB"), Ok(1024));
        assert_eq!(parse_byte_size("1024KiB"), Ok(1 << 20));
        assert_eq!(parse_byte_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size("3GiB"), Ok(3 << 30));
    }

    #[test]
    fn relative_paths_resolve_against_the_file_folder() {
        let dir = config_dir(Path::new("/etc/tether/c.toml")).unwrap();
        assert_eq!(dir, Path::new("/etc/tether"));
        assert_eq!(resolve(&dir, Path::new("data")), Path::new("/etc/tether/data"));
        assert_eq!(resolve(&dir, Path::new("/var/lib/t")), Path::new("/var/lib/t"));
        let file = Path::new("/etc/tether/c.toml");
        assert_eq!(resolve_key(file, &dir, "data_dir", Path::new("data")).unwrap(), Path::new("/etc/tether/data"));
        assert_eq!(
            resolve_key(file, &dir, "data_dir", Path::new("~/data")).unwrap_err().to_string(),
            "/etc/tether/c.toml: key 'data_dir': path \"~/data\" starts with ~ (a home folder), which only a shell \
             expands: this file is read as written; write the full path"
        );
        let e = resolve_key(file, &dir, "tls.ca_file", Path::new("$HOME/ca.pem")).unwrap_err().to_string();
        assert!(e.contains("key 'tls.ca_file': path \"$HOME/ca.pem\" starts with an environment variable"), "{e}");
        for (path, says) in [
            (" ~/x", "starts or ends with blank space"),
            ("data ", "starts or ends with blank space"),
            ("./~", "has a part starting with ~ (a home folder)"),
            ("a/~/b", "has a part starting with ~ (a home folder)"),
            ("/srv/$USER/data", "has a part starting with an environment variable"),
        ] {
            let e = resolve_key(file, &dir, "data_dir", Path::new(path)).unwrap_err().to_string();
            assert!(e.contains(says), "{path:?}: {e}");
        }
        // Inside a name, and spaces inside a path, are the folder's own.
        for path in ["a$b", "data dir", "/srv/x~y"] {
            assert!(resolve_key(file, &dir, "data_dir", Path::new(path)).is_ok(), "{path:?}");
        }
        assert!(config_dir(Path::new("c.toml")).unwrap().is_absolute());
    }

    fn write_secret(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    }

    #[test]
    fn secrets_trim_one_newline_and_refuse_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &[u8]); 3] = [
            (b"s3cret-of-16-bytes\n", b"s3cret-of-16-bytes"),
            (b"s3cret-of-16-bytes\r\n", b"s3cret-of-16-bytes"),
            (b"raw-secret-of-16-bytes", b"raw-secret-of-16-bytes"),
        ];
        for (i, (contents, want)) in cases.into_iter().enumerate() {
            let loaded = load_secret(&write_secret(&dir, &format!("k{i}"), contents)).unwrap();
            assert!(loaded.secret == Secret::new(want.to_vec()).unwrap());
            assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        }
        // What an editor adds unseen is kept (both sides must hold the same bytes), and
        // warned of: the reason a bad-credentials rejection can otherwise not be found.
        let unseen: [(&[u8], &[u8], &str); 4] = [
            (b"s3cret-of-16-bytes\n\n", b"s3cret-of-16-bytes\n", "ends in blank space"),
            (b"s3cret-of-16-bytes \n", b"s3cret-of-16-bytes ", "ends in blank space"),
            (b"\xef\xbb\xbfs3cret-of-16-bytes\r\n", b"\xef\xbb\xbfs3cret-of-16-bytes", "begins with a byte order mark"),
            (b"\xef\xbb\xbfs3cret-of-16-bytes\t", b"\xef\xbb\xbfs3cret-of-16-bytes\t", "begins with a byte order mark"),
        ];
        for (i, (contents, want, said)) in unseen.into_iter().enumerate() {
            let path = write_secret(&dir, &format!("u{i}"), contents);
            let loaded = load_secret(&path).unwrap();
            assert!(loaded.secret == Secret::new(want.to_vec()).unwrap());
            assert!(
                loaded.warnings[0].starts_with(&format!("secret file {} {said}", path.display())),
                "{:?}",
                loaded.warnings
            );
        }
        let both = load_secret(&write_secret(&dir, "both", b"\xef\xbb\xbfs3cret-of-16-bytes \n")).unwrap();
        assert_eq!(both.warnings.len(), 2, "{:?}", both.warnings);
        for (name, contents) in [("empty", &b""[..]), ("newline", &b"\n"[..])] {
            let path = write_secret(&dir, name, contents);
            let e = load_secret(&path).unwrap_err();
            assert_eq!(e.to_string(), format!("{}: secret file is empty", path.display()));
        }
        let blanks = [
            ("blank", &b"\r\n\r\n"[..]),
            ("spaces", &b"   \n"[..]),
            ("tab", &b"\t"[..]),
            ("vtab", &b"\x0b"[..]),
            ("nbsp", "\u{a0}".as_bytes()),
            ("ideographic", "\u{3000}\n".as_bytes()),
            ("nul", &b"\0"[..]),
        ];
        for (name, contents) in blanks {
            let path = write_secret(&dir, name, contents);
            let e = load_secret(&path).unwrap_err();
            assert_eq!(e.to_string(), format!("{}: secret file holds only blank space", path.display()));
        }
        let big = write_secret(&dir, "big", &vec![b'a'; MAX_SECRET_LEN as usize + 1]);
        assert!(load_secret(&big).unwrap_err().to_string().contains("larger than 4096 bytes"));
        let missing = dir.path().join("missing.key");
        let e = load_secret(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: cannot read secret file: ", missing.display())), "{e}");
        assert!(!e.contains("out of open files"), "a missing file is the file's fault: {e}");
    }

    /// A secret file of 4096 bytes, the most a secret file may hold, is taken whole, and
    /// one a byte longer refused: the limit is the file's size, not one short of it.
    #[test]
    fn a_secret_file_of_4096_bytes_is_taken_and_one_of_4097_refused() {
        let dir = tempfile::tempdir().unwrap();
        let most = vec![b'a'; MAX_SECRET_LEN as usize];
        let loaded = load_secret(&write_secret(&dir, "most", &most)).unwrap();
        assert!(loaded.secret == Secret::new(most.clone()).unwrap());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let over = write_secret(&dir, "over", &[most.as_slice(), b"a"].concat());
        assert_eq!(
            load_secret(&over).unwrap_err().to_string(),
            format!("{}: secret file is larger than 4096 bytes; is it the right file?", over.display())
        );
    }

    /// A secret ending in a tab or a carriage return (once one newline is taken off) is
    /// warned of, as one ending in a space or a second newline is: both are part of the
    /// secret, invisible in an editor, and the usual reason two sides' files differ (a
    /// `\r` is what is left of `\r\r\n`, a file's line ends converted twice).
    #[test]
    fn a_secret_ending_in_a_tab_or_a_carriage_return_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &[u8]); 3] = [
            ("tab", b"s3cret-of-16-bytes\t\n", b"s3cret-of-16-bytes\t"),
            ("cr", b"s3cret-of-16-bytes\r", b"s3cret-of-16-bytes\r"),
            ("crcrlf", b"s3cret-of-16-bytes\r\r\n", b"s3cret-of-16-bytes\r"),
        ];
        for (name, contents, want) in cases {
            let path = write_secret(&dir, name, contents);
            let loaded = load_secret(&path).unwrap();
            assert!(loaded.secret == Secret::new(want.to_vec()).unwrap(), "{name}");
            assert_eq!(
                loaded.warnings,
                [format!(
                    "secret file {} ends in blank space (after one newline is taken off), which is part of the \
                     secret: the other side's file must end the same way",
                    path.display()
                )],
                "{name}"
            );
        }
    }

    /// A secret that cannot be opened for want of open files says the process is out of
    /// them. Run in a child process of this test binary, which lowers its open files
    /// limit and uses it up.
    #[test]
    fn a_secret_unopened_for_want_of_open_files_says_the_process_is_out_of_them() {
        if let Some(path) = std::env::var_os("TETHER_OUT_OF_FILES_CHILD") {
            use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
            setrlimit(Resource::Nofile, Rlimit { current: Some(64), maximum: getrlimit(Resource::Nofile).maximum })
                .unwrap();
            let mut held = Vec::new();
            while let Ok(file) = File::open("/dev/null") {
                held.push(file);
            }
            let e = load_secret(Path::new(&path)).unwrap_err().to_string();
            drop(held);
            assert!(e.contains("cannot read secret file: ") && e.contains("the process is out of open files"), "{e}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(&dir, "s.key", b"a secret of enough length\n");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "source::tests::a_secret_unopened_for_want_of_open_files_says_the_process_is_out_of_them",
            ])
            .env("TETHER_OUT_OF_FILES_CHILD", &path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.contains("1 passed"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Open files running out is said to be the process's or the machine's, not the
    /// file's; other errors are left as they are.
    #[test]
    fn open_files_running_out_is_not_blamed_on_the_file() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(
            out_of_files(&emfile).contains("the process is out of open files")
                && out_of_files(&emfile).contains("ulimit -n")
        );
        let enfile = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(out_of_files(&enfile).contains("the machine is out of open files"));
        assert_eq!(out_of_files(&std::io::Error::from(std::io::ErrorKind::NotFound)), "");
        assert_eq!(out_of_files(&std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error())), "");
    }

    #[test]
    fn secrets_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_secret(&write_secret(&dir, "k", b"hunter2-very-secret\n")).unwrap();
        let shown = format!("{loaded:?} {:?} {:#?}", loaded.secret, loaded);
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[cfg(unix)]
    #[test]
    fn lax_secret_permissions_warn() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(&dir, "k", b"a secret of enough length\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load_secret(&path).unwrap();
        assert!(loaded.secret == Secret::new(b"a secret of enough length".to_vec()).unwrap());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("mode 644"), "{:?}", loaded.warnings);
    }

    /// A secret file that group alone, or others alone, may read or write is warned of
    /// as one both may read is: each of those bits lets someone other than its owner at
    /// the secret (a group `ssl-cert` reading it, say).
    #[cfg(unix)]
    #[test]
    fn a_secret_file_group_alone_or_others_alone_may_read_or_write_is_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(&dir, "k", b"a secret of enough length\n");
        for mode in [0o640, 0o620, 0o604, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = load_secret(&path).unwrap();
            assert_eq!(
                loaded.warnings,
                [format!(
                    "secret file {} is accessible by group or others (mode {mode:o}); restrict it with chmod 600",
                    path.display()
                )],
                "mode {mode:o}"
            );
        }
    }

    /// A secret shorter than 16 bytes is taken, as deployments run on them, but warned
    /// of with the file and the way to make a good one: a captured handshake lets anyone
    /// guess a short secret offline.
    #[test]
    fn a_secret_shorter_than_16_bytes_is_taken_and_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(&dir, "short", b"abc\n");
        let loaded = load_secret(&path).unwrap();
        assert!(loaded.secret == Secret::new(b"abc".to_vec()).unwrap());
        assert_eq!(
            loaded.warnings,
            [format!(
                "secret file {} holds a secret of 3 bytes, under 16: whoever captures a handshake can guess it \
                 offline; use 32 random bytes, as `head -c 32 /dev/urandom | base64` writes (in both sides' files)",
                path.display()
            )]
        );
        // Counted without the newline taken off; 16 bytes are enough.
        let fifteen = load_secret(&write_secret(&dir, "fifteen", b"0123456789abcde\r\n")).unwrap();
        assert!(fifteen.warnings[0].contains("holds a secret of 15 bytes"), "{:?}", fifteen.warnings);
        let sixteen = load_secret(&write_secret(&dir, "sixteen", b"0123456789abcdef\n")).unwrap();
        assert!(sixteen.warnings.is_empty(), "{:?}", sixteen.warnings);
        let base64 =
            load_secret(&write_secret(&dir, "b64", b"q0Jz1Ow8yVdC5r0sZl0vH3uQeXk9b2pT1mN4aS6cY7E=\n")).unwrap();
        assert!(base64.warnings.is_empty(), "{:?}", base64.warnings);
    }
}
