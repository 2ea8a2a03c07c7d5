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
use crate::entry::{CheckedEntry, EntryUuid};
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
        /// The CSN of the change that removed it, or one after it: a provider that finds
        /// the entry gone since the change it sends knows only that the removal is at
        /// or before its newest write.
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

/// A [`ReplOp`] received: a delete, or an upserted entry as the bytes that arrived
/// (exactly the codec's encoding of the entry) with its name, UUID and CSN. The bytes
/// passed every check a decode makes ([`CheckedEntry`]) but the entry was not built: a
/// consumer stores the bytes as they are and needs nothing else to place them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceivedOp {
    /// [`ReplOp::Upsert`].
    Upsert {
        /// What placing the entry needs.
        entry: CheckedEntry,
        /// The entry's encoding, as received.
        encoded: Vec<u8>,
    },
    /// [`ReplOp::Delete`].
    Delete {
        /// Which entry.
        uuid: EntryUuid,
        /// The CSN of the change that removed it.
        csn: Csn,
    },
}

impl ReceivedOp {
    /// The op as it would have arrived, for a caller holding it decoded.
    pub fn from_op(op: &ReplOp) -> Result<Self, CodecError> {
        Ok(match op {
            ReplOp::Upsert(e) => ReceivedOp::Upsert {
                entry: CheckedEntry { dn: e.dn.clone(), uuid: e.uuid, csn: e.csn },
                encoded: codec::encode(e)?,
            },
            ReplOp::Delete { uuid, csn } => ReceivedOp::Delete { uuid: *uuid, csn: *csn },
        })
    }

    /// The entry it is about.
    pub fn uuid(&self) -> EntryUuid {
        match self {
            ReceivedOp::Upsert { entry, .. } => entry.uuid,
            ReceivedOp::Delete { uuid, .. } => *uuid,
        }
    }

    /// The CSN of the state it carries.
    pub fn csn(&self) -> Csn {
        match self {
            ReceivedOp::Upsert { entry, .. } => entry.csn,
            ReceivedOp::Delete { csn, .. } => *csn,
        }
    }

    /// The whole op, the entry built from its bytes.
    pub fn decode(&self) -> Result<ReplOp, CodecError> {
        Ok(match self {
            ReceivedOp::Upsert { encoded, .. } => ReplOp::Upsert(codec::decode(encoded)?),
            ReceivedOp::Delete { uuid, csn } => ReplOp::Delete { uuid: *uuid, csn: *csn },
        })
    }
}

/// A message received, with the entries of `Batch` and `Change` kept encoded as well.
// As large as the `Message` it stands for, like the channel slots it replaces: boxing
// would cost an allocation per message received.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// `Message::Batch`.
    Batch(Vec<ReceivedOp>),
    /// `Message::Change`.
    Change {
        /// The change.
        op: ReceivedOp,
        /// The position it brings the consumer to.
        cookie: Cookie,
    },
    /// Any other message.
    Message(Message),
}

impl Received {
    /// Decodes a frame's payload: the same checks and errors as decoding a [`Message`],
    /// keeping each upserted entry's bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        let (tag, mut at) = codec::decode_prefix::<u32>(payload)?;
        let received = match tag {
            BATCH => {
                let (count, n) = codec::decode_prefix::<u64>(&payload[at..])?;
                at += n;
                // Every op takes at least a byte: a count beyond the bytes left is a lie,
                // refused before it sizes an allocation.
                if count > (payload.len() - at) as u64 {
                    return Err(CodecError::Truncated);
                }
                let mut ops = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (op, n) = received_op(&payload[at..])?;
                    at += n;
                    ops.push(op);
                }
                Received::Batch(ops)
            }
            CHANGE => {
                let (op, n) = received_op(&payload[at..])?;
                at += n;
                let (cookie, n) = codec::decode_prefix::<Cookie>(&payload[at..])?;
                at += n;
                Received::Change { op, cookie }
            }
            _ => return codec::decode(payload).map(Received::Message),
        };
        match payload.len() - at {
            0 => Ok(received),
            extra => Err(CodecError::TrailingBytes { extra }),
        }
    }

    /// The message it is, each entry built from its bytes.
    pub fn into_message(self) -> Result<Message, CodecError> {
        Ok(match self {
            Received::Batch(ops) => {
                Message::Batch { ops: ops.iter().map(ReceivedOp::decode).collect::<Result<_, _>>()? }
            }
            Received::Change { op, cookie } => Message::Change { op: op.decode()?, cookie },
            Received::Message(m) => m,
        })
    }
}

/// One op at the start of `bytes`, and how many bytes it took.
fn received_op(bytes: &[u8]) -> Result<(ReceivedOp, usize), CodecError> {
    let (tag, at) = codec::decode_prefix::<u32>(bytes)?;
    if tag != UPSERT {
        // Not an upsert: nothing to keep, so the op decodes as usual (a delete, or an
        // unknown variant refused with the codec's own error).
        let (op, n) = codec::decode_prefix::<ReplOp>(bytes)?;
        return Ok((ReceivedOp::from_op(&op)?, n));
    }
    let (entry, n) = CheckedEntry::decode_prefix(&bytes[at..])?;
    let encoded = bytes[at..at + n].to_vec();
    Ok((ReceivedOp::Upsert { entry, encoded }, at + n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cookie::HistoryId;
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
    fn received_messages_decode_as_messages_and_keep_each_entrys_bytes() {
        let cookie = Cookie { history: HistoryId::new_random(), csn: Csn(300_000) };
        let mut messages: Vec<Message> = [0, 1, 7].iter().map(|&n| Message::Batch { ops: ops(n) }).collect();
        messages.extend(ops(3).into_iter().map(|op| Message::Change { op, cookie }));
        messages.push(Message::Ping { seq: 9 });
        for msg in messages {
            let bytes = codec::encode(&msg).unwrap();
            let received = Received::decode(&bytes).unwrap();
            let kept: Vec<ReceivedOp> = match &received {
                Received::Batch(ops) => ops.clone(),
                Received::Change { op, .. } => vec![op.clone()],
                Received::Message(_) => vec![],
            };
            for r in kept {
                let op = r.decode().unwrap();
                assert_eq!(ReceivedOp::from_op(&op).unwrap(), r, "each op keeps the entry's encoding and its head");
                assert_eq!((r.uuid(), r.csn()), (op.uuid(), op.csn()));
            }
            assert_eq!(received.into_message().unwrap(), msg);
            // Whatever decoding a message refuses, this refuses too.
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert_eq!(Received::decode(&trailing).err(), codec::decode::<Message>(&trailing).err());
            for cut in [1, bytes.len() / 2, bytes.len() - 1] {
                assert!(Received::decode(&bytes[..cut]).is_err(), "{} cut at {cut}", msg.name());
            }
        }
        // A batch claiming more ops than it has bytes for.
        let mut lying = Vec::new();
        codec::encode_into(&BATCH, &mut lying).unwrap();
        codec::encode_into(&u64::MAX, &mut lying).unwrap();
        assert!(Received::decode(&lying).is_err());
        // An entry that fails its checks is refused as in a message.
        let mut bad = codec::encode(&Message::Batch { ops: ops(1) }).unwrap();
        let at = bad.windows(3).position(|w| w == b"uid").unwrap();
        bad[at] = b'!';
        assert_eq!(Received::decode(&bad).err(), codec::decode::<Message>(&bad).err());
        assert!(Received::decode(&bad).is_err());
    }

    #[test]
    fn a_change_is_byte_for_byte_the_message() {
        let cookie = Cookie { history: HistoryId::new_random(), csn: Csn(300_000) };
        for op in ops(6) {
            let built = EncodedMessage::change(&EncodedOp::from_op(&op).unwrap(), &cookie).unwrap();
            let expected = Message::Change { op: op.clone(), cookie };
            assert_eq!(built.as_bytes(), codec::encode(&expected).unwrap());
            assert_eq!(built.name(), expected.name());
            assert_eq!(EncodedOp::from_op(&op).unwrap().decode().unwrap(), op);
        }
    }
}
