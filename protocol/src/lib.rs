//! `tether-protocol`: the language every Tether process speaks.
//!
//! Nothing here touches a disk or a socket directly; the store and the processes build
//! on these types. Read it bottom-up:
//!
//! ## Layout
//! - [`dn`]: distinguished names, their normalized form and tree order.
//! - [`entry`]: entries, attributes and values, with the matching rules.
//! - [`csn`], [`cookie`]: change sequence numbers and a consumer's position.
//! - [`change`]: write requests (add, modify, delete, modify-DN).
//! - [`filter`], [`scope`]: RFC 4515 filters and search/agreement regions.
//! - [`repl`]: replication operations (entry states by UUID) and refresh kinds.
//! - [`codec`]: the one module that names the binary serialization (bincode).
//! - [`filter_parse`]: reading filter strings into a [`Filter`], with bounded length and depth.
//! - [`ldif`]: RFC 2849 LDIF: a streaming reader of content and change records and the
//!   canonical writer `search` prints with.

pub mod change;
pub mod codec;
pub mod cookie;
pub mod csn;
pub mod dn;
pub mod entry;
pub mod filter;
pub mod repl;
pub mod filter_parse;
pub mod ldif;
pub mod scope;

pub use change::{Change, ModOp, Modification};
pub use cookie::{Cookie, StoreId};
pub use csn::Csn;
pub use dn::{Dn, DnError, Rdn};
pub use entry::{Attribute, AttributeError, Attributes, Entry, EntryUuid, Value};
pub use filter::Filter;
pub use repl::{RefreshKind, ReplOp};
pub use filter_parse::FilterError;
pub use ldif::{LdifError, LdifReader, LdifRecord};
pub use scope::{Scope, SearchSpec};
