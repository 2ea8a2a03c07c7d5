//! Changes as clients request them: add, modify, delete and modify-DN, addressed by DN.
//! The store turns each into a committed state change with a CSN; replication then
//! moves entry states (see `repl`), not these requests.

use serde::{Deserialize, Serialize};

use crate::dn::{Dn, Rdn};
use crate::entry::{Attributes, Value};

/// What a modification does to one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModOp {
    /// Add values (the attribute is created if absent).
    Add,
    /// Delete the listed values, or the whole attribute if none are listed.
    Delete,
    /// Replace all values; no values removes the attribute.
    Replace,
    /// Add the one value, an integer, to every value of the attribute, which must exist
    /// and hold integers (RFC 4525). Last, so the other variants keep their encoding.
    Increment,
}

/// One step of a modify request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modification {
    /// What to do.
    pub op: ModOp,
    /// Which attribute.
    pub attr: String,
    /// The values it applies to.
    pub values: Vec<Value>,
}

/// A write request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Create an entry; the provider assigns its UUID and CSN.
    Add {
        /// The new entry's DN.
        dn: Dn,
        /// Its attributes.
        attrs: Attributes,
    },
    /// Modify an entry's attributes; all modifications apply, or none.
    Modify {
        /// The entry.
        dn: Dn,
        /// The steps, applied in order.
        mods: Vec<Modification>,
    },
    /// Delete a leaf entry.
    Delete {
        /// The entry.
        dn: Dn,
    },
    /// Rename and/or move an entry.
    ModDn {
        /// The entry.
        dn: Dn,
        /// Its new RDN.
        new_rdn: Rdn,
        /// Whether the old RDN's values are removed from the entry.
        delete_old_rdn: bool,
        /// The new parent, if the entry moves.
        new_superior: Option<Dn>,
    },
}

impl Change {
    /// The DN the change is addressed to.
    pub fn dn(&self) -> &Dn {
        match self {
            Change::Add { dn, .. } | Change::Modify { dn, .. } | Change::Delete { dn } | Change::ModDn { dn, .. } => dn,
        }
    }

    /// The LDIF `changetype` word for the change.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Add { .. } => "add",
            Change::Modify { .. } => "modify",
            Change::Delete { .. } => "delete",
            Change::ModDn { .. } => "modrdn",
        }
    }

    /// The oldest protocol version a writer request may carry this change at: the
    /// negotiated version of a session must be at least this (see
    /// [`crate::message::SUPPORTED_VERSIONS`]).
    pub fn min_version(&self) -> u16 {
        match self {
            Change::Modify { mods, .. } if mods.iter().any(|m| m.op == ModOp::Increment) => {
                crate::message::INCREMENT_VERSION
            }
            _ => 1,
        }
    }

    /// The DN the entry has after a modify-DN.
    pub fn moddn_target(dn: &Dn, new_rdn: &Rdn, new_superior: Option<&Dn>) -> Dn {
        let parent = match new_superior {
            Some(p) => p.clone(),
            None => dn.parent().unwrap_or_default(),
        };
        parent.child(new_rdn.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// A variant's index is its wire tag (docs/protocol.md, section 3): `Increment`
    /// came in version 2, last, so the three before it kept theirs.
    #[test]
    fn modify_operations_keep_their_pinned_tags() {
        for (op, tag) in [(ModOp::Add, 0u8), (ModOp::Delete, 1), (ModOp::Replace, 2), (ModOp::Increment, 3)] {
            let bytes = codec::encode(&op).unwrap();
            assert_eq!(bytes, [tag], "{op:?}");
            assert_eq!(codec::decode::<ModOp>(&bytes).unwrap(), op);
        }
        assert!(codec::decode::<ModOp>(&[4]).is_err(), "an operation from a later version is refused");
    }

    #[test]
    fn only_a_modify_with_an_increment_needs_version_2() {
        let dn = Dn::parse("ou=counters,dc=example,dc=com").unwrap();
        let step = |op| Modification { op, attr: "uidNumber".into(), values: vec![Value::from("1")] };
        let modify = |ops: &[ModOp]| Change::Modify { dn: dn.clone(), mods: ops.iter().map(|&op| step(op)).collect() };
        assert_eq!(modify(&[ModOp::Replace, ModOp::Add]).min_version(), 1);
        assert_eq!(modify(&[ModOp::Replace, ModOp::Increment]).min_version(), crate::message::INCREMENT_VERSION);
        assert_eq!(Change::Delete { dn: dn.clone() }.min_version(), 1);
    }
}
