//! The one place that names bincode (interim version; the wire branch replaces it).

use serde::{de::DeserializeOwned, Serialize};

/// Largest value `decode` will materialize.
pub const MAX_DECODE: usize = 16 * 1024 * 1024;

/// Why encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Encoding failed.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Decoding failed.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// Bytes were left over after the value.
    #[error("decode: {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, bincode::config::standard())?)
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, n) = bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<MAX_DECODE>())?;
    if n != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - n));
    }
    Ok(v)
}
