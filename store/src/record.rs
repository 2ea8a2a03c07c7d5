//! Encoding of stored records through the protocol's codec, with errors that say which
//! tree held a bad record. Keys are built here too, so their layout is in one place.

use serde::{de::DeserializeOwned, Serialize};
use tether_protocol::codec;

use crate::error::{Result, StoreError};

/// Encodes a record for `tree`.
pub(crate) fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>> {
    codec::encode(value).map_err(|source| StoreError::Codec { tree, source })
}

/// Decodes a record read from `tree`.
pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|source| StoreError::Codec { tree, source })
}

/// Reads a big-endian u64 stored under a meta key.
pub(crate) fn u64_from(tree: &'static str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{tree}: expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Milliseconds since the Unix epoch, the timestamp format of stored records.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
