//! The properties the parsers promise on hostile input, written once: the coverage-guided
//! fuzz targets (`fuzz/`, outside the workspace) and this crate's proptests both call
//! these functions, so CI checks exactly what the fuzzers check. Compiled for tests and
//! for the `fuzzing` feature only; it is not part of the crate's API.
//!
//! Each function takes raw input, runs one parser over it and panics (an assertion
//! naming the property) if a property fails: a panic is a finding, returning is a pass.
//! The properties, per target:
//! - [`frames_and_messages`]: the frame reader never panics, returns nothing over its
//!   limit, reads the same frames however the bytes arrive and however often a read is
//!   cancelled, and writing the frames back gives the bytes it read; every frame runs
//!   through [`message`].
//! - [`message`]: a payload that decodes re-encodes within the codec limit and decodes
//!   to the same value (down to how each DN was written), the encoding is a fixed
//!   point, and decoded attributes hold the invariants their checked constructor keeps.
//!   The consumer's decoding ([`Received`], entries checked but not built) accepts
//!   exactly the payloads the full decode accepts, and means the same message.
//! - [`ldif`]: the reader never panics, every error names a line of the input, the
//!   result does not depend on how the input is buffered, and every record read is
//!   written by the writer and reads back to the same record and the same bytes.
//! - [`dn_pair`]: a parsed DN renders to a string that parses to the same DN, its
//!   normalized form parses to itself (idempotent), and tree keys order and nest DNs
//!   exactly as `Ord` and `is_descendant_of` do.
//! - [`filter`]: a parsed filter renders to a string that parses to an equal filter
//!   (that string is what crosses the wire), and evaluating it never panics.

use std::future::Future;
use std::io::{self, BufReader};
use std::pin::{pin, Pin};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::change::Change;
use crate::codec;
use crate::csn::Csn;
use crate::dn::{Dn, Rdn};
use crate::encoded::Received;
use crate::entry::{Attributes, Entry, EntryUuid, Value};
use crate::filter::Filter;
use crate::frame::{FrameReader, FrameWriter, CHECKSUM, LENGTH_PREFIX, MAX_FRAME};
use crate::ldif::{write_record, LdifError, LdifReader, LdifRecord};
use crate::message::Message;
use crate::repl::ReplOp;

/// Bytes of a frame-target input taken as the case's settings before the stream.
pub const FRAME_HEADER: usize = 2;

/// The frame limits a case can pick (its first byte modulo this list's length): tiny
/// limits reach the refusal paths with short inputs; [`MAX_FRAME`] is the real one.
const FRAME_LIMITS: [usize; 4] = [MAX_FRAME, 0, 16, 300];

/// One run of the frame reader: the stream and how it is delivered.
#[derive(Debug, Clone)]
pub struct FrameCase {
    /// The largest payload the reader accepts.
    pub max_frame: usize,
    /// The most bytes one read of the trickling stream delivers (at least 1).
    pub chunk: usize,
    /// Whether each frame's checksum is made valid before reading: random bytes almost
    /// never carry a valid CRC-32, and without this no payload would reach the decoder.
    pub repair_checksums: bool,
    /// The bytes on the wire.
    pub stream: Vec<u8>,
}

impl FrameCase {
    /// A case from fuzz input: byte 0 picks the limit and checksum repair, byte 1 the
    /// chunk size, the rest is the stream.
    pub fn from_fuzz_input(input: &[u8]) -> Self {
        let (header, stream) = input.split_at(input.len().min(FRAME_HEADER));
        let flags = header.first().copied().unwrap_or(0);
        let chunk = header.get(1).copied().unwrap_or(0);
        Self {
            max_frame: FRAME_LIMITS[usize::from(flags >> 1) % FRAME_LIMITS.len()],
            chunk: usize::from(chunk) + 1,
            repair_checksums: flags & 1 == 0,
            stream: stream.to_vec(),
        }
    }
}

/// Frames the payloads (prefix, payload, valid checksum) into one stream: the bytes a
/// well-behaved peer sends, for building seeds and test cases.
pub fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        let len = u32::try_from(payload.len()).expect("test payloads fit a frame");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    }
    out
}

/// The frame target: see the module docs.
pub fn frames_and_messages(case: &FrameCase) {
    let stream = if case.repair_checksums { with_valid_checksums(&case.stream) } else { case.stream.clone() };
    let (frames, end) = read_frames(FrameReader::with_max_frame(&stream[..], case.max_frame), stream.len());
    let trickle = Trickle { data: &stream, chunk: case.chunk.max(1), pending_next: true };
    let (trickled, trickled_end) = read_frames(FrameReader::with_max_frame(trickle, case.max_frame), stream.len());
    assert_eq!(frames, trickled, "the same frames whatever the chunking and cancellations");
    assert_eq!(end, trickled_end, "the same ending whatever the chunking and cancellations");
    for frame in &frames {
        assert!(frame.len() <= case.max_frame, "a frame of {} bytes passed a limit of {}", frame.len(), case.max_frame);
    }
    let mut written = Vec::new();
    let mut writer = FrameWriter::new(&mut written);
    for frame in &frames {
        poll_ready(writer.write_frame(frame)).expect("writing to memory cannot fail");
    }
    assert_eq!(written[..], stream[..written.len()], "frames written back are the bytes they were read from");
    for frame in &frames {
        message(frame);
    }
}

/// Overwrites the checksum of every complete frame in `stream` with the right one.
fn with_valid_checksums(stream: &[u8]) -> Vec<u8> {
    let mut out = stream.to_vec();
    let mut at = 0;
    while let Some(prefix) = out.get(at..at + LENGTH_PREFIX) {
        let mut len = [0u8; LENGTH_PREFIX];
        len.copy_from_slice(prefix);
        let start = at + LENGTH_PREFIX;
        let end = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX).saturating_add(start);
        if end.saturating_add(CHECKSUM) > out.len() {
            break;
        }
        let sum = crc32fast::hash(&out[start..end]).to_be_bytes();
        out[end..end + CHECKSUM].copy_from_slice(&sum);
        at = end + CHECKSUM;
    }
    out
}

/// Every frame a reader returns and how reading ended (`end` or the error), each
/// `read_frame` future polled once and dropped if it is not ready, as a `select!` arm
/// that loses to a timer would be.
fn read_frames<R: AsyncRead + Unpin>(mut reader: FrameReader<R>, stream_len: usize) -> (Vec<Bytes>, String) {
    // Each ready read takes at least one byte or ends the stream, and the trickle is
    // pending at most every other poll: more polls than this is a reader going round
    // in circles.
    let max_polls = 4 * (stream_len + 8);
    let mut polls = 0;
    let mut frames = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let result = loop {
            polls += 1;
            assert!(polls <= max_polls, "the frame reader makes no progress");
            let future = pin!(reader.read_frame());
            if let Poll::Ready(result) = future.poll(&mut cx) {
                break result;
            }
        };
        match result {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, "end".to_owned()),
            Err(err) => return (frames, format!("{err:?}")),
        }
    }
}

/// Polls a future that cannot wait (it only touches memory) to its result.
fn poll_ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory write never waits"),
    }
}

/// A stream that delivers at most `chunk` bytes per read and is not ready on every
/// other poll, like a socket whose data arrives in pieces.
struct Trickle<'a> {
    /// What is still to come.
    data: &'a [u8],
    /// The most bytes one read delivers.
    chunk: usize,
    /// Whether the next poll reports `Pending`.
    pending_next: bool,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.pending_next = !self.pending_next;
        if !self.pending_next {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// The message decoder's properties for one payload: see the module docs.
pub fn message(payload: &[u8]) {
    let received = Received::decode(payload);
    let Ok(msg) = codec::decode::<Message>(payload) else {
        assert!(received.is_err(), "the consumer's decoding accepts a payload the full decode refuses");
        return;
    };
    let received = received.unwrap_or_else(|e| panic!("the consumer's decoding refuses a {}: {e}", msg.name()));
    let rebuilt = received.into_message().unwrap_or_else(|e| panic!("received entries do not decode: {e}"));
    assert_eq!(format!("{rebuilt:?}"), format!("{msg:?}"), "the consumer's decoding means the same message");
    let bytes = codec::encode(&msg).unwrap_or_else(|e| panic!("decoded {} does not re-encode: {e}", msg.name()));
    assert_eq!(codec::encoded_len(&msg), Ok(bytes.len()), "encoded_len agrees with encode");
    let again: Message =
        codec::decode(&bytes).unwrap_or_else(|e| panic!("re-encoded {} does not decode: {e}", msg.name()));
    assert_eq!(format!("{again:?}"), format!("{msg:?}"), "a decoded message round-trips exactly");
    assert_eq!(codec::encode(&again).ok(), Some(bytes), "the encoding of a decoded message is a fixed point");
    for attrs in attributes_in(&msg) {
        assert_well_formed(attrs);
    }
}

/// The attributes of an upsert.
fn entry_attrs(op: &ReplOp) -> Option<&Attributes> {
    match op {
        ReplOp::Upsert(entry) => Some(&entry.attrs),
        ReplOp::Delete { .. } => None,
    }
}

/// Every set of attributes a message carries.
fn attributes_in(msg: &Message) -> Vec<&Attributes> {
    match msg {
        Message::Batch { ops } => ops.iter().filter_map(entry_attrs).collect(),
        Message::Change { op, .. } => entry_attrs(op).into_iter().collect(),
        Message::SearchEntries { entries, .. } => entries.iter().map(|e| &e.attrs).collect(),
        Message::WriteRequest { change: Change::Add { attrs, .. }, .. } => vec![attrs],
        _ => Vec::new(),
    }
}

/// Attributes are what [`Attributes::add`] builds: valid names, keyed by the lower-cased
/// name, never empty, values distinct under the matching rule.
fn assert_well_formed(attrs: &Attributes) {
    let mut rebuilt = Attributes::new();
    for attr in attrs.iter() {
        rebuilt
            .add(&attr.name, attr.values.iter().cloned())
            .unwrap_or_else(|e| panic!("decoded attributes break an invariant: {e}"));
    }
    assert_eq!(&rebuilt, attrs, "decoded attributes are keyed and filled as add() keeps them");
}

/// The LDIF reader's properties for one input: see the module docs.
pub fn ldif(input: &[u8]) {
    let lines = input.iter().filter(|&&b| b == b'\n').count() + 1;
    for limit in [crate::ldif::MAX_RECORD_BYTES, 64] {
        let whole: Vec<Result<LdifRecord, LdifError>> = LdifReader::with_max_record_bytes(input, limit).collect();
        let bytewise: Vec<Result<LdifRecord, LdifError>> =
            LdifReader::with_max_record_bytes(BufReader::with_capacity(1, input), limit).collect();
        assert_eq!(format!("{bytewise:?}"), format!("{whole:?}"), "the result does not depend on buffering");
        for result in &whole {
            let line = match result {
                Ok(record) => record.line(),
                Err(err) => {
                    assert!(err.to_string().starts_with(&format!("line {}: ", err.line)), "{err}");
                    err.line
                }
            };
            assert!((1..=lines).contains(&line), "line {line} named in an input of {lines} lines");
        }
        let records: Vec<&LdifRecord> = whole.iter().filter_map(|r| r.as_ref().ok()).collect();
        ldif_records_round_trip(&records);
    }
}

/// What a record says, without its line: its kind and the full `Debug` of the change
/// (DNs as written, attribute names as written, value octets).
fn ldif_meaning(record: &LdifRecord) -> (bool, String) {
    (matches!(record, LdifRecord::Content { .. }), format!("{:?}", record.clone().into_change()))
}

/// Records read are written, and what is written reads back the same, byte-stable.
fn ldif_records_round_trip(records: &[&LdifRecord]) {
    let mut written = Vec::new();
    for record in records {
        write_record(&mut written, record).unwrap_or_else(|e| panic!("a record read is refused by the writer: {e}"));
    }
    let read: Vec<LdifRecord> = LdifReader::new(&written[..])
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("written LDIF does not read back: {e}\n{}", String::from_utf8_lossy(&written)));
    let meanings = |rs: &mut dyn Iterator<Item = &LdifRecord>| rs.map(ldif_meaning).collect::<Vec<_>>();
    assert_eq!(
        meanings(&mut read.iter()),
        meanings(&mut records.iter().copied()),
        "records read back as written:\n{}",
        String::from_utf8_lossy(&written)
    );
    let mut rewritten = Vec::new();
    for record in &read {
        write_record(&mut rewritten, record).unwrap_or_else(|e| panic!("a record read back is refused: {e}"));
    }
    assert_eq!(rewritten, written, "writing what was read gives the same bytes");
}

/// The DN parser's properties for one input: each line up to the first newline and the
/// rest is parsed, checked alone, and the two are checked as a pair.
pub fn dn_pair(input: &str) {
    let (a, b) = input.split_once('\n').unwrap_or((input, ""));
    let (Ok(a), Ok(b)) = (Dn::parse(a).map(|d| dn_alone(&d)), Dn::parse(b).map(|d| dn_alone(&d))) else { return };
    let (ka, kb) = (a.tree_key(), b.tree_key());
    assert_eq!(a.cmp(&b), ka.cmp(&kb), "tree keys sort as DNs do: {a:?} vs {b:?}");
    assert_eq!(a == b, ka == kb, "equal tree keys exactly for equal DNs");
    assert_eq!(a == b, a.normalized() == b.normalized(), "equal normalized forms exactly for equal DNs");
    assert_eq!(a.is_descendant_of(&b), ka.starts_with(&kb), "a subtree is its key prefix");
    assert_eq!(b.is_descendant_of(&a), kb.starts_with(&ka), "a subtree is its key prefix");
}

/// One DN's properties; gives the DN back for the pair checks.
fn dn_alone(dn: &Dn) -> Dn {
    let shown = dn.to_string();
    let reparsed = Dn::parse(&shown).unwrap_or_else(|e| panic!("{dn:?} renders as {shown:?}, which fails: {e}"));
    assert_eq!(format!("{reparsed:?}"), format!("{dn:?}"), "the rendered form parses to the same RDNs");
    assert_eq!(reparsed.to_string(), shown, "rendering is a fixed point");
    let norm = dn.normalized();
    let renormalized = Dn::parse(norm).unwrap_or_else(|e| panic!("normalized form {norm:?} fails to parse: {e}"));
    assert_eq!(renormalized.normalized(), norm, "normalization is idempotent");
    assert_eq!(renormalized.tree_key(), dn.tree_key(), "the normalized form keeps the tree key");
    let decoded: Dn = codec::encode(dn).and_then(|b| codec::decode(&b)).unwrap_or_else(|e| panic!("{dn:?}: {e}"));
    assert_eq!(format!("{decoded:?}"), format!("{dn:?}"), "a DN crosses the wire unchanged");
    for rdn in dn.rdns() {
        let shown = rdn.to_string();
        let again = Rdn::parse(&shown).unwrap_or_else(|e| panic!("RDN {rdn:?} renders as {shown:?}: {e}"));
        assert_eq!(format!("{again:?}"), format!("{rdn:?}"), "an RDN renders and parses back the same");
    }
    if let Some(parent) = dn.parent() {
        assert!(dn.is_child_of(&parent) && dn.tree_key().starts_with(&parent.tree_key()));
        assert!(parent < *dn, "a parent sorts before its children");
    }
    dn.clone()
}

/// The filter parser's properties for one input: see the module docs.
pub fn filter(input: &str) {
    let Ok(parsed) = Filter::parse(input) else { return };
    let shown = parsed.to_string();
    assert_eq!(Filter::parse(&shown), Ok(parsed.clone()), "{input:?} renders as {shown:?}, which parses differently");
    assert_eq!(Filter::parse(&shown).map(|f| f.to_string()), Ok(shown.clone()), "rendering is a fixed point");
    let decoded: Filter = codec::encode(&parsed)
        .and_then(|b| codec::decode(&b))
        .unwrap_or_else(|e| panic!("{shown:?} does not cross the wire: {e}"));
    assert_eq!(decoded, parsed, "a filter crosses the wire unchanged");
    let entry = sample_entry();
    let matched = parsed.matches(entry);
    assert_eq!(Filter::Not(Box::new(parsed.clone())).matches(entry), !matched, "negation negates");
    assert_eq!(Filter::And(vec![parsed.clone()]).matches(entry), matched, "a one-filter AND is the filter");
    assert_eq!(Filter::Or(vec![parsed]).matches(entry), matched, "a one-filter OR is the filter");
}

/// An entry with text, subtyped, numeric and binary values to evaluate filters on.
fn sample_entry() -> &'static Entry {
    static ENTRY: OnceLock<Entry> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let mut attrs = Attributes::new();
        let text: [(&str, &[&str]); 6] = [
            ("objectClass", &["top", "person"]),
            ("cn", &["Ann  Lee", "a*b (c)"]),
            ("CN;lang-EN;x-nick", &["Annie"]),
            ("sn", &["Lee"]),
            ("uidNumber", &["1000", "-0010"]),
            ("description", &[" spaced  out ", ""]),
        ];
        for (name, values) in text {
            let _ = attrs.add(name, values.iter().map(|&v| Value::from(v)));
        }
        let _ = attrs.add("jpegPhoto", [Value::from_bytes([0xff, 0xd8, 0x00])]);
        let dn = Dn::parse("cn=Ann Lee,ou=people,dc=example,dc=com").unwrap_or_default();
        Entry { dn, uuid: EntryUuid::default(), csn: Csn(1), attrs }
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::message::tests::samples;

    /// Where the fuzz targets' committed seed corpora live.
    fn seeds_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
    }

    /// The OpenLDAP test files the LDIF and DN seeds are cut from.
    fn openldap_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openldap")
    }

    /// Largest LDIF seed: libFuzzer's default input size is 4 KiB, and small seeds make
    /// fast runs; a seed is whole records up to this size.
    const LDIF_SEED_BYTES: usize = 1024;

    /// LDIF seeds taken per OpenLDAP file, enough to carry every kind of record.
    const LDIF_SEEDS_PER_FILE: usize = 4;

    /// Filters of every kind, as written in configurations and on command lines.
    const FILTER_SEEDS: &[&str] = &[
        "(objectClass=*)",
        "objectClass=*",
        "(&(objectClass=person)(uidNumber>=1000))",
        "(|(uid=ann)(cn=carl))",
        "(&(!(uid=ann))(|(sn=smith)(sn=o'neil)))",
        "(cn=b*o*o*)",
        "(description=a\\2ab \\28c\\29)",
        "(jpegPhoto=\\ff\\d8\\00)",
        "(cn;X-NICK;lang-en=annie)",
        "(2.5.4.3~=ann)",
        "(uidNumber<=-100000000000000000000000)",
        "(cn=* lee)",
        "(&)",
        "(!(|))",
    ];

    /// Writes `seeds` as files `<prefix>-<n>` under `fuzz/seeds/<target>/`.
    fn write_seeds(target: &str, prefix: &str, seeds: &[Vec<u8>]) {
        let dir = seeds_dir().join(target);
        fs::create_dir_all(&dir).unwrap();
        for (n, seed) in seeds.iter().enumerate() {
            fs::write(dir.join(format!("{prefix}-{n}")), seed).unwrap();
        }
    }

    /// Whole records of `text`, grouped into pieces of at most [`LDIF_SEED_BYTES`].
    fn ldif_pieces(text: &str) -> Vec<Vec<u8>> {
        let mut pieces = vec![String::new()];
        for record in text.split("\n\n").filter(|r| r.len() < LDIF_SEED_BYTES) {
            let last = pieces.last_mut().unwrap();
            if last.len() + record.len() + 2 > LDIF_SEED_BYTES {
                pieces.push(String::new());
            }
            let last = pieces.last_mut().unwrap();
            last.push_str(record);
            last.push_str("\n\n");
        }
        pieces.into_iter().filter(|p| !p.is_empty()).take(LDIF_SEEDS_PER_FILE).map(String::into_bytes).collect()
    }

    /// Refreshes `fuzz/seeds/`: encoded messages in frames, pieces of OpenLDAP's LDIF test
    /// files, the DNs of its DN test file in pairs, and filters of every kind. Run by hand
    /// after a wire or LDIF change:
    /// `cargo test -p tether-protocol --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes files; run by hand to refresh fuzz/seeds"]
    fn write_fuzz_seeds() {
        let payloads: Vec<Vec<u8>> = samples().iter().map(|m| codec::encode(m).unwrap()).collect();
        // Header: the real limit with checksum repair, reads of 7 bytes.
        let header = [0u8, 6];
        let mut frames: Vec<Vec<u8>> =
            payloads.iter().map(|p| [&header[..], &framed(std::slice::from_ref(p))].concat()).collect();
        frames.push([&header[..], &framed(&payloads)].concat());
        write_seeds("frame_message", "samples", &frames);

        let mut names: Vec<PathBuf> = fs::read_dir(openldap_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ldif"))
            .collect();
        names.sort();
        for path in &names {
            let text = fs::read_to_string(path).unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy();
            write_seeds("ldif", &format!("openldap-{stem}"), &ldif_pieces(&text));
        }

        let dn_text = fs::read_to_string(openldap_dir().join("test-dn.ldif")).unwrap();
        let dns: Vec<&str> = dn_text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, value)| ["dn", "member", "seeAlso", "description"].contains(name) && value.contains('='))
            .map(|(_, value)| value)
            .collect();
        let pairs: Vec<Vec<u8>> = dns.chunks(2).map(|pair| pair.join("\n").into_bytes()).collect();
        write_seeds("dn", "openldap-test-dn", &pairs);

        let filters: Vec<Vec<u8>> = FILTER_SEEDS.iter().map(|f| f.as_bytes().to_vec()).collect();
        write_seeds("filter", "kinds", &filters);
    }

    /// Found by the `frame_message` fuzz target (minimized): a `SearchEntries` whose
    /// entry files an attribute named `obje\tClass` under the key `objectclass`. It
    /// decoded and re-encoded, but broke the invariants of [`Attributes::add`]; the
    /// decoder now refuses it (`entry::tests::decoded_attributes_hold_the_invariants_of_add`).
    #[test]
    fn regression_frame_message_attribute_bypassing_add() {
        const INPUT: &[u8] =
            b"\x00\x06\x00\x00\x00\x80\x12\x02\x01\"cn=Ann,ou=people,dc=example,dc=com2[\xba\x94\xd1\xe9L\x05\
          \xb6\xb5\xe3j\xfc|z\x04*\x03\x02cn\x02cn\x01\x03Ann\x09jpegphoto\x09jpegPhoto\x01\x03\xff\xd8\
          \x00\x0bobjectclass\x0bobje\\tClass\x02\x06person\x03t\x02pon\x09\x09\x07\x8a\x89\x82";
        let case = FrameCase::from_fuzz_input(INPUT);
        let payload = &with_valid_checksums(&case.stream)[LENGTH_PREFIX..case.stream.len() - CHECKSUM];
        assert!(matches!(codec::decode::<Message>(payload), Err(codec::CodecError::Invalid(_))));
        frames_and_messages(&case);
    }

    /// Found by the `ldif` fuzz target (minimized): a content record holding a
    /// `changetype` attribute after another was written with `changetype` first and read
    /// back as a change record (`ldif::writer::tests::keyword_named_attributes_never_start_a_content_record`).
    #[test]
    fn regression_ldif_changetype_attribute_written_first() {
        ldif(b"dn:\nn:\nchangetype:");
    }

    /// Every committed seed passes its target's properties: the seeds are the fuzzers'
    /// starting points, and each is also a regression case here.
    #[test]
    fn committed_seeds_keep_their_properties() {
        let read = |target: &str| -> Vec<Vec<u8>> {
            let Ok(dir) = fs::read_dir(seeds_dir().join(target)) else { return Vec::new() };
            dir.map(|e| fs::read(e.unwrap().path()).unwrap()).collect()
        };
        for seed in read("frame_message") {
            frames_and_messages(&FrameCase::from_fuzz_input(&seed));
        }
        for seed in read("ldif") {
            ldif(&seed);
        }
        for seed in read("dn") {
            dn_pair(&String::from_utf8_lossy(&seed));
        }
        for seed in read("filter") {
            filter(&String::from_utf8_lossy(&seed));
        }
    }
}
