//! Messages built from entries that are already encoded, as a store keeps them.
//!
//! A provider's store holds each entry as the codec encodes it, and `Batch` and
//! `Change` carry entries in exactly that form (an op is its variant index followed by
//! the entry's bytes). So a provider can forward the stored bytes into a message instead
//! of decoding every entry only to encode it again, which was most of its cost per entry
//! in a refresh and per consumer in the persist phase. The bytes built here are exactly
//! those of the equivalent [`Message`]: a consumer cannot tell, and decodes and checks
//! every entry as before. The tests pin that equivalence.

use crate::codec::{self, CodecError, MAX_DECODE};
use crate::cookie::Cookie;
use crate::csn::Csn;
use crate::entry::EntryUuid;
use crate::message::Message;
use crate::repl::ReplOp;

/// Wire index of [`Message::Batch`] (the codec writes an enum variant as its index).
const BATCH: u32 = 6;
/// Wire index of [`Message::Change`].
const CHANGE: u32 = 9;
/// Wire index of [`ReplOp::Upsert`].
const UPSERT: u32 = 0;

/// A [`ReplOp`] whose entry is in encoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedOp {
    /// [`ReplOp::Upsert`] of the entry these bytes encode.
    Upsert(Vec<u8>),
    /// [`ReplOp::Delete`].
    Delete {
        /// Which entry.
        uuid: EntryUuid,
        /// The CSN of the change that removed it.
        csn: Csn,
    },
}

impl EncodedOp {
    /// Encodes `op`'s entry (for a caller that has it decoded anyway).
    pub fn from_op(op: &ReplOp) -> Result<Self, CodecError> {
        Ok(match op {
            ReplOp::Upsert(entry) => EncodedOp::Upsert(codec::encode(entry)?),
            ReplOp::Delete { uuid, csn } => EncodedOp::Delete { uuid: *uuid, csn: *csn },
        })
    }

    /// Decodes it back into a [`ReplOp`], checking the entry as any decode does.
    pub fn decode(&self) -> Result<ReplOp, CodecError> {
        Ok(match self {
            EncodedOp::Upsert(bytes) => ReplOp::Upsert(codec::decode(bytes)?),
            EncodedOp::Delete { uuid, csn } => ReplOp::Delete { uuid: *uuid, csn: *csn },
        })
    }

    /// Roughly how many bytes it adds to a message, for batch budgets.
    pub fn size(&self) -> usize {
        match self {
            EncodedOp::Upsert(bytes) => bytes.len() + 1,
            EncodedOp::Delete { .. } => 27,
        }
    }

    fn append(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            EncodedOp::Upsert(bytes) => {
                codec::encode_into(&UPSERT, buf)?;
                buf.extend_from_slice(bytes);
            }
            EncodedOp::Delete { uuid, csn } => {
                codec::encode_into(&ReplOp::Delete { uuid: *uuid, csn: *csn }, buf)?;
            }
        }
        Ok(())
    }
}

/// A message already encoded: the payload of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The message's name, for logs (as [`Message::name`]).
    name: &'static str,
    /// The payload.
    bytes: Vec<u8>,
}

impl EncodedMessage {
    /// `Message::Batch { ops }`.
    pub fn batch(ops: &[EncodedOp]) -> Result<Self, CodecError> {
        let mut bytes = Vec::with_capacity(ops.iter().map(EncodedOp::size).sum::<usize>() + 8);
        codec::encode_into(&BATCH, &mut bytes)?;
        // A sequence is its length (as a u64) and then its elements.
        codec::encode_into(&(ops.len() as u64), &mut bytes)?;
        for op in ops {
            op.append(&mut bytes)?;
        }
        Self::checked("batch", bytes)
    }

    /// `Message::Change { op, cookie }`.
    pub fn change(op: &EncodedOp, cookie: &Cookie) -> Result<Self, CodecError> {
        let mut bytes = Vec::with_capacity(op.size() + 40);
        codec::encode_into(&CHANGE, &mut bytes)?;
        op.append(&mut bytes)?;
        codec::encode_into(cookie, &mut bytes)?;
        Self::checked("change", bytes)
    }

    fn checked(name: &'static str, bytes: Vec<u8>) -> Result<Self, CodecError> {
        if bytes.len() > MAX_DECODE {
            return Err(CodecError::TooLarge { len: bytes.len(), max: MAX_DECODE });
        }
        Ok(Self { name, bytes })
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The encoded payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes it into the [`Message`] it is.
    pub fn decode(&self) -> Result<Message, CodecError> {
        codec::decode(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cookie::StoreId;
    use crate::dn::Dn;
    use crate::entry::{Attributes, Entry};

    fn entry(uid: &str, big: bool) -> Entry {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", ["top".into(), "inetOrgPerson".into()]).unwrap();
        attrs.add("uid", [uid.into()]).unwrap();
        // Long enough that lengths need the codec's multi-byte form.
        let size = if big { 70_000 } else { 10 };
        attrs.add("description", ["x".repeat(size).into()]).unwrap();
        Entry {
            dn: Dn::parse(&format!("uid={uid},ou=people,dc=example,dc=com")).unwrap(),
            uuid: EntryUuid::new_random(),
            csn: Csn(70_000),
            attrs,
        }
    }

    fn ops(n: usize) -> Vec<ReplOp> {
        (0..n)
            .map(|i| match i % 3 {
                2 => ReplOp::Delete { uuid: EntryUuid::new_random(), csn: Csn(i as u64 * 1000) },
                _ => ReplOp::Upsert(entry(&format!("u{i}"), i == 4)),
            })
            .collect()
    }

    #[test]
    fn a_batch_is_byte_for_byte_the_message() {
        for n in [0, 1, 2, 6, 300] {
            let ops = ops(n);
            let encoded: Vec<EncodedOp> = ops.iter().map(|op| EncodedOp::from_op(op).unwrap()).collect();
            let built = EncodedMessage::batch(&encoded).unwrap();
            let expected = Message::Batch { ops: ops.clone() };
            assert_eq!(built.as_bytes(), codec::encode(&expected).unwrap(), "{n} ops");
            assert_eq!(built.decode().unwrap(), expected);
            assert_eq!(built.name(), expected.name());
        }
    }

    #[test]
    fn a_change_is_byte_for_byte_the_message() {
        let cookie = Cookie { store_id: StoreId::new_random(), csn: Csn(300_000) };
        for op in ops(6) {
            let built = EncodedMessage::change(&EncodedOp::from_op(&op).unwrap(), &cookie).unwrap();
            let expected = Message::Change { op: op.clone(), cookie };
            assert_eq!(built.as_bytes(), codec::encode(&expected).unwrap());
            assert_eq!(built.name(), expected.name());
            assert_eq!(EncodedOp::from_op(&op).unwrap().decode().unwrap(), op);
        }
    }
}
