//! `tether-protocol`: the language every Tether process speaks.
//!
//! Nothing here opens a file or a network socket: the store and the processes build on
//! these types, and the wire code works over any async byte stream. The one exception is
//! the control socket ([`control`]): both processes and their commands bind and connect
//! it the same way, so that is kept here with its messages. Read it bottom-up:
//!
//! ## Layout
//! The data model:
//! - [`dn`]: distinguished names, their normalized form and tree order.
//! - [`entry`]: entries, attributes and values, with the matching rules; `CheckedEntry`
//!   checks an encoded entry as decoding it would, without building it, and
//!   `PartialEntry` decodes only the attributes a change touches and keeps the rest as
//!   encoded.
//! - [`csn`], [`cookie`]: change sequence numbers and a consumer's position.
//! - [`change`]: write requests (add, modify, delete, modify-DN).
//! - [`filter`], [`filter_parse`], [`scope`]: RFC 4515 filters (bounded length and
//!   depth) and search/agreement regions.
//! - [`repl`]: replication operations (entry states by UUID) and refresh kinds.
//! - [`ldif`]: RFC 2849 LDIF: a streaming reader of content and change records and the
//!   canonical writer `search` prints with.
//!
//! The wire, bottom-up (normative description: `docs/protocol.md`):
//! - [`frame`]: frames over any async byte stream: a 4-byte length, the payload and a
//!   CRC-32 of it, size-limited before anything is allocated.
//! - [`codec`]: the one place bincode is named; `encode`/`decode` for the wire and the store.
//! - [`encoded`]: `Batch` and `Change` messages built from entries already encoded, as
//!   the store holds them, byte for byte the messages the codec would make.
//! - [`message`]: every wire message, the protocol version and the reason words.
//! - [`connection`]: message reader and writer halves over frames and the codec.
//! - [`auth`]: shared secrets, challenge nonces and the HMAC-SHA256 proof.
//! - [`handshake`]: Hello / Challenge / Auth / Welcome-or-Reject, under a deadline.
//! - [`liveness`]: when a peer's silence convicts it, on both sides, even after this
//!   process was itself stopped.
//! - [`foreign`]: naming a peer whose first bytes are not Tether (HTTP, LDAP, TLS).
//! - [`control`]: the control-socket commands of the command-line tools.
//!
//! Testing only (unit tests and the `fuzzing` feature):
//! - `properties`: what the parsers promise on hostile input, checked by the fuzz
//!   targets in `fuzz/` and by the proptests alike.

pub mod auth;
pub mod change;
pub mod codec;
pub mod connection;
pub mod control;
pub mod cookie;
pub mod csn;
pub mod dn;
pub mod encoded;
pub mod entry;
pub mod filter;
pub mod filter_parse;
pub mod foreign;
pub mod frame;
pub mod handshake;
pub mod ldif;
pub mod liveness;
pub mod message;
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;
pub mod repl;
pub mod scope;

pub use auth::Secret;
pub use change::{Change, ModOp, Modification};
pub use codec::CodecError;
pub use connection::{MessageReader, MessageWriter, WireError};
pub use cookie::{Cookie, HistoryId, StoreId};
pub use csn::Csn;
pub use dn::{Dn, DnError, Rdn};
pub use entry::{
    Attribute, AttributeError, Attributes, CheckedEntry, Entry, EntryHead, EntryUuid, PartialEntry, Value, MAX_ENTRY,
};
pub use filter::Filter;
pub use filter_parse::FilterError;
pub use frame::{FrameError, FrameReader, FrameWriter, MAX_FRAME};
pub use handshake::{
    client_handshake, server_handshake, Accepted, Admission, HandshakeError, ProviderProof, HANDSHAKE_TIMEOUT,
};
pub use ldif::{LdifError, LdifReader, LdifRecord};
pub use message::{
    GoodbyeReason, Hello, Message, Mode, Reject, RejectReason, Role, Welcome, WriteErrorKind, WriteOutcome,
    INCREMENT_VERSION, MUTUAL_AUTH_VERSION, POLL_ACK_VERSION, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
pub use repl::{RefreshKind, ReplOp, ResumePoint};
pub use scope::{Scope, SearchSpec};
