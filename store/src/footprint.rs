//! What a run of planned writes has changed, so that a group of writes can share one
//! transaction and still be decided as if each were committed before the next.
//!
//! The directory rules read the store: whether a name is taken, whether a parent
//! exists, an entry's current attributes, whether an entry has children. A write
//! planned against the store cannot see the uncommitted writes before it in the same
//! run, so a run is committed before any write that reads what the run changed: a name
//! the run added, changed, removed or renamed, or the children of an entry that gained
//! or lost one. Writes to unrelated entries, the usual pipelined burst, share one
//! transaction; a write that depends on an earlier one costs an extra commit, never a
//! different answer.

use std::collections::HashSet;

use tether_protocol::{Change, Dn};

use crate::rules::Planned;

/// The names a run of planned writes touched, by tree key.
#[derive(Debug, Default)]
pub(crate) struct Footprint {
    /// Entries added, changed, removed or renamed (old and new names).
    names: HashSet<Vec<u8>>,
    /// Entries whose set of children changed.
    parents: HashSet<Vec<u8>>,
}

impl Footprint {
    /// Adds what `planned` changes.
    pub fn record(&mut self, planned: &Planned) {
        for dn in std::iter::once(&planned.dn).chain(planned.old_dn.as_ref()) {
            self.names.insert(dn.tree_key());
            if let Some(parent) = dn.parent() {
                self.parents.insert(parent.tree_key());
            }
        }
    }

    /// Whether planning `change` would read something this run changed.
    pub fn conflicts(&self, change: &Change) -> bool {
        let named = |dn: &Dn| self.names.contains(&dn.tree_key());
        let parent_named = |dn: &Dn| dn.parent().is_some_and(|p| named(&p));
        let has_changed_children = |dn: &Dn| self.parents.contains(&dn.tree_key());
        match change {
            Change::Add { dn, .. } => named(dn) || parent_named(dn),
            Change::Modify { dn, .. } => named(dn),
            Change::Delete { dn } => named(dn) || has_changed_children(dn),
            Change::ModDn { dn, new_rdn, new_superior, .. } => {
                let target = Change::moddn_target(dn, new_rdn, new_superior.as_ref());
                named(dn) || has_changed_children(dn) || named(&target) || parent_named(&target)
            }
        }
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Forgets everything, after the run was committed.
    pub fn clear(&mut self) {
        self.names.clear();
        self.parents.clear();
    }
}
