//! The codec: how any serde value becomes bytes and back. It sits between framing
//! (`frame`, which moves opaque payloads) and messages (`message`, which says what the
//! payloads mean); the store uses the same two functions for its on-disk records.
//!
//! This is the only module that names bincode. The format is bincode 2 with its
//! `standard` configuration (little-endian, variable-length integers), decoding with a
//! byte limit so a hostile length prefix can never make us allocate more than a frame's
//! worth, and with a nesting limit so a hostile recursive value can never overflow the
//! stack. Keeping bincode behind these few functions means it can be swapped for another
//! serde format (postcard, say) by rewriting this file and [`crate::encoded`], which
//! lays out `Batch` and `Change` by hand as this format does.
//!
//! Compatibility rule for every type that passes through here: enums only ever grow at
//! the end. bincode writes an enum variant as its index, so inserting, removing or
//! reordering variants silently changes the meaning of bytes already on the wire or on
//! disk; adding a variant at the end only makes old peers refuse the new one.

mod depth;

use std::cell::Cell;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};

use crate::frame::MAX_FRAME;

/// The most bytes an encoded value may take: a value that fits no frame can be neither
/// sent nor received, so the limit is the frame's.
pub const MAX_DECODE: usize = MAX_FRAME;

/// The most a decoded value may claim: the bytes it reads and the memory of the
/// sequences it builds (bincode counts both against one limit). A value of many small
/// parts claims more than its encoding takes (a group's members: about 13% more), so a
/// limit of one frame made an entry within [`crate::MAX_ENTRY`] unreadable once written
/// (found by a walkthrough at 286,000 members of 51 bytes). Twice the frame still keeps
/// a hostile length prefix from allocating more than that; a write that would make an
/// entry claim more is refused (see `tether-store`'s rules), so every entry stored reads
/// back.
pub const MAX_CLAIM: usize = 2 * MAX_FRAME;

/// The deepest nesting a decoded value may have, counting each struct, sequence, map,
/// enum, option and newtype level. Real messages nest about a dozen levels (an entry's
/// value inside an attribute inside a batch); the rest is headroom for search filters.
/// The bound keeps decoding's recursion far inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 128;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized (a serde impl refused it).
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// The encoded value would exceed [`MAX_DECODE`], so no peer could decode it; the
    /// caller should split it (for example into smaller batches).
    #[error("encoded value is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// The input ended before the value did.
    #[error("input ends in the middle of a value")]
    Truncated,
    /// The input claims more bytes (a string or sequence length) than the limit allows.
    #[error("input claims more than the decode limit of {max} bytes")]
    LimitExceeded {
        /// The limit it exceeded.
        max: usize,
    },
    /// The input nests deeper than [`MAX_DEPTH`].
    #[error("input nests deeper than the decode limit of {max} levels")]
    TooDeep {
        /// The limit it exceeded.
        max: usize,
    },
    /// A whole value was decoded but bytes remain: the input is not one value.
    #[error("{extra} unexpected bytes after the value")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The input is not a valid encoding of the expected type (unknown enum variant,
    /// invalid UTF-8, a DN that does not parse, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// The one bincode configuration Tether uses.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CLAIM>()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf` and returns how many bytes it took. On error
/// `buf` is left as it was. Lets a caller reuse one buffer, or put a header before the
/// value without copying it.
pub fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = buf.len();
    let written = match bincode::serde::encode_into_std_write(value, buf, config()) {
        Ok(written) => written,
        Err(err) => {
            buf.truncate(start);
            return Err(CodecError::Encode(err.to_string()));
        }
    };
    if written > MAX_DECODE {
        buf.truncate(start);
        return Err(CodecError::TooLarge { len: written, max: MAX_DECODE });
    }
    Ok(written)
}

/// How many bytes `value` encodes to, without building the encoding: lets a sender fill
/// a batch up to a size budget.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, config())
        .map_err(|err| CodecError::Encode(err.to_string()))?;
    Ok(counter.bytes_written)
}

/// Decodes exactly one `T` from `bytes`: trailing bytes, claims over [`MAX_CLAIM`] and
/// nesting over [`MAX_DEPTH`] are errors, never allocations or stack overflows.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let tripped = Cell::new(false);
    let seed = depth::LimitedSeed { seed: PhantomData::<T>, budget: depth::Budget::new(MAX_DEPTH, &tripped) };
    let (value, consumed) = bincode::serde::seed_decode_from_slice(seed, bytes, config()).map_err(|err| {
        if tripped.get() {
            CodecError::TooDeep { max: MAX_DEPTH }
        } else {
            decode_error(err)
        }
    })?;
    match bytes.len() - consumed {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes { extra }),
    }
}

/// Decodes one `T` from the start of `bytes`, ignoring whatever follows, and says how
/// many bytes it took. `T` may borrow from `bytes`: this is how a reader takes the leading
/// fields of a record (see [`EntryHead`](crate::entry::EntryHead)) without decoding or
/// allocating the rest. The same limits as [`decode`] apply.
pub fn decode_prefix<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<(T, usize), CodecError> {
    decode_prefix_seed(PhantomData::<T>, bytes)
}

/// [`decode_prefix`] driven by a seed, for a reader that walks an encoding piece by
/// piece with state of its own (a buffer reused across pieces, say).
pub(crate) fn decode_prefix_seed<'de, S: DeserializeSeed<'de>>(
    seed: S,
    bytes: &'de [u8],
) -> Result<(S::Value, usize), CodecError> {
    let tripped = Cell::new(false);
    let seed = depth::LimitedSeed { seed, budget: depth::Budget::new(MAX_DEPTH, &tripped) };
    bincode::serde::seed_decode_from_slice(seed, bytes, config()).map_err(|err| {
        if tripped.get() {
            CodecError::TooDeep { max: MAX_DEPTH }
        } else {
            decode_error(err)
        }
    })
}

/// Maps bincode's error onto ours, keeping the distinctions a caller can act on.
fn decode_error(err: bincode::error::DecodeError) -> CodecError {
    use bincode::error::DecodeError;
    match err {
        DecodeError::UnexpectedEnd { .. } => CodecError::Truncated,
        DecodeError::LimitExceeded => CodecError::LimitExceeded { max: MAX_CLAIM },
        // A type's own refusal (a DN that does not parse, attributes that break an
        // invariant): its message as it wrote it, not bincode's debug rendering of it.
        DecodeError::OtherString(reason) => CodecError::Invalid(reason),
        other => CodecError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::filter::Filter;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        name: String,
        tags: Vec<String>,
        n: u64,
    }

    fn record() -> Record {
        Record { name: "x".into(), tags: vec!["a".into(), "bc".into()], n: 300 }
    }

    #[test]
    fn round_trips_and_uses_varints() {
        let bytes = encode(&record()).unwrap();
        assert_eq!(decode::<Record>(&bytes).unwrap(), record());
        // 1+1 (name) + 1 + 2 + 3 (tags) + 3 (300 as a varint: 251 marker + u16)
        assert_eq!(bytes.len(), 11);
        assert_eq!(encoded_len(&record()).unwrap(), bytes.len());
    }

    #[test]
    fn encode_into_appends_and_reports_its_length() {
        let mut buf = vec![0xAA; 4];
        let n = encode_into(&record(), &mut buf).unwrap();
        assert_eq!(buf.len(), 4 + n);
        assert_eq!(decode::<Record>(&buf[4..]).unwrap(), record());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&record()).unwrap();
        bytes.push(0);
        assert_eq!(decode::<Record>(&bytes), Err(CodecError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn truncated_input_is_refused() {
        let bytes = encode(&record()).unwrap();
        assert_eq!(decode::<Record>(&bytes[..bytes.len() - 1]), Err(CodecError::Truncated));
    }

    #[test]
    fn huge_length_claims_fail_without_allocating() {
        // A string claiming u64::MAX bytes: varint marker 253 then 8 bytes.
        let mut hostile = vec![253];
        hostile.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<String>(&hostile), Err(CodecError::LimitExceeded { .. } | CodecError::Invalid(_))));
        // Just over the limit, followed by nothing.
        let mut over = vec![253];
        over.extend_from_slice(&(MAX_CLAIM as u64 + 1).to_le_bytes());
        assert_eq!(decode::<String>(&over), Err(CodecError::LimitExceeded { max: MAX_CLAIM }));
    }

    #[test]
    fn a_types_own_refusal_keeps_its_message() {
        let bytes = encode(&"cn=a,,dc=x").unwrap();
        assert_eq!(
            decode::<crate::dn::Dn>(&bytes),
            Err(CodecError::Invalid("empty RDN at byte 5 of DN".into())),
            "the DN parser's words, not bincode's debug rendering of them"
        );
    }

    #[test]
    fn oversized_values_are_refused_at_encode() {
        let big = vec![0u8; MAX_DECODE + 1];
        let mut buf = vec![1, 2, 3];
        assert!(matches!(encode_into(&big, &mut buf), Err(CodecError::TooLarge { .. })));
        assert_eq!(buf, [1, 2, 3], "a refused encode leaves the buffer as it was");
    }

    /// The limit is the largest encoding allowed, not the first refused: a value of
    /// exactly [`MAX_DECODE`] bytes fills a frame, which the frame reader takes, so it
    /// encodes and decodes. (The test above goes one byte past it.)
    #[test]
    fn a_value_of_exactly_the_limit_encodes_and_decodes() {
        // A byte string is its length (over 65,535: the marker 252 and 4 bytes), then its octets.
        let value = crate::entry::Value::from_bytes(vec![7u8; MAX_DECODE - 5]);
        let bytes = encode(&value).unwrap();
        assert_eq!((bytes.len(), encoded_len(&value)), (MAX_DECODE, Ok(MAX_DECODE)));
        assert_eq!(decode::<crate::entry::Value>(&bytes), Ok(value));
    }

    /// A recursive type, like any a future message might carry. (Filters cross the wire
    /// as their string form, re-parsed under the parser's own depth limit.)
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Nest {
        Leaf,
        Node(Box<Nest>),
    }

    /// `Nest::Node` nested `levels` deep, encoded by hand: variant index 1, repeated,
    /// then the leaf (variant 0).
    fn nested(levels: usize) -> Vec<u8> {
        let mut bytes = vec![1u8; levels];
        bytes.push(0);
        bytes
    }

    #[test]
    fn deep_nesting_is_refused_instead_of_overflowing_the_stack() {
        // Without the depth limit this recursion overflows the stack and aborts.
        let hostile = nested(1_000_000);
        assert_eq!(decode::<Nest>(&hostile), Err(CodecError::TooDeep { max: MAX_DEPTH }));
    }

    #[test]
    fn nesting_up_to_the_limit_decodes_on_a_normal_thread_stack() {
        let limit = (0..MAX_DEPTH + 2).rfind(|&n| decode::<Nest>(&nested(n)).is_ok()).unwrap();
        assert!(limit + 2 >= MAX_DEPTH, "nesting close to the limit decodes (got {limit})");
        let value: Nest = decode(&nested(limit)).unwrap();
        assert_eq!(encode(&value).unwrap(), nested(limit));
        assert_eq!(decode::<Nest>(&nested(limit + 1)), Err(CodecError::TooDeep { max: MAX_DEPTH }));
    }

    /// A type recursive through a struct and a sequence rather than an enum.
    #[derive(serde::Deserialize)]
    struct Tree {
        children: Vec<Tree>,
    }

    /// Every kind of container counts against the limit, not only enums: a struct is
    /// read as a sequence of its fields, so a limit that skipped sequences would let a
    /// type recursive through them (`Tree`, each level a struct holding a list) nest
    /// without bound. `MAX_DEPTH` trees are twice that many levels, refused; a little
    /// under half as many decode.
    #[test]
    fn nesting_through_structs_and_sequences_counts_against_the_limit() {
        // Each tree is its list's length, 1, down to a leaf with none.
        let trees = |n: usize| [vec![1u8; n], vec![0]].concat();
        assert_eq!(decode::<Tree>(&trees(MAX_DEPTH / 2 - 1)).unwrap().children.len(), 1);
        assert_eq!(decode::<Tree>(&trees(MAX_DEPTH)).map(drop), Err(CodecError::TooDeep { max: MAX_DEPTH }));
    }

    #[test]
    fn a_deeply_nested_filter_string_is_refused_by_the_parser() {
        let deep = format!("{}(cn=x){}", "(!".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(decode::<Filter>(&encode(&deep).unwrap()), Err(CodecError::Invalid(_))));
    }
}
