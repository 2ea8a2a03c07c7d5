//! Directory rules (SPEC §2): whether a write is allowed, and the entry state it leads
//! to. Pure decisions over reads of the entry set; the caller holds the writer lock, so
//! nothing changes between these checks and the commit.

use tether_protocol::{Attributes, Change, Csn, Dn, Entry, EntryUuid, ModOp, Modification, Rdn, Value};

use crate::changelog::ChangeKind;
use crate::entry_set::EntrySet;
use crate::error::{Refusal, Result};

/// The effect of an allowed write, ready to commit.
#[derive(Debug)]
pub(crate) struct Planned {
    /// What kind of change it is, for the changelog.
    pub kind: ChangeKind,
    /// The entry's UUID.
    pub uuid: EntryUuid,
    /// The entry's DN key before the change (None for an add).
    pub old_key: Option<Vec<u8>>,
    /// The DN before a rename.
    pub old_dn: Option<Dn>,
    /// The new state (None for a delete), with `csn` already set.
    pub after: Option<Entry>,
    /// The DN the changelog records (after, or the deleted one).
    pub dn: Dn,
}

fn invalid(dn: &Dn, reason: impl Into<String>) -> Refusal {
    Refusal::InvalidChange { dn: dn.clone(), reason: reason.into() }
}

/// Checks `change` against the directory and computes its effect at `csn`.
pub(crate) fn plan(set: &EntrySet, suffix: &Dn, change: &Change, csn: Csn) -> Result<Planned> {
    match change {
        Change::Add { dn, attrs } => plan_add(set, suffix, dn, attrs, EntryUuid::new_time_ordered(), csn, false),
        Change::Modify { dn, mods } => plan_modify(set, dn, mods, csn),
        Change::Delete { dn } => {
            let entry = set.get(dn)?.ok_or_else(|| Refusal::NoSuchObject(dn.clone()))?;
            if set.has_children(dn)? {
                return Err(Refusal::NotAllowedOnNonLeaf(dn.clone()).into());
            }
            Ok(Planned {
                kind: ChangeKind::Delete,
                uuid: entry.uuid,
                old_key: Some(dn.tree_key()),
                old_dn: None,
                after: None,
                dn: entry.dn,
            })
        }
        Change::ModDn { dn, new_rdn, delete_old_rdn, new_superior } => {
            plan_moddn(set, suffix, dn, new_rdn, *delete_old_rdn, new_superior.as_ref(), csn)
        }
    }
}

/// Checks that `dn` may hold an entry: under the suffix, parent present (unless the
/// caller already knows it will be), name free.
fn check_new_name(set: &EntrySet, suffix: &Dn, dn: &Dn, parent_known: bool) -> Result<()> {
    if !dn.is_descendant_of(suffix) {
        return Err(Refusal::OutsideSuffix { dn: dn.clone(), suffix: suffix.clone() }.into());
    }
    if set.contains(dn)? {
        return Err(Refusal::AlreadyExists(dn.clone()).into());
    }
    if dn != suffix && !parent_known {
        let parent = dn.parent().unwrap_or_default();
        if !set.contains(&parent)? {
            return Err(Refusal::NoParent(dn.clone()).into());
        }
    }
    Ok(())
}

/// Rules every stored entry satisfies: an objectClass, and its RDN values present.
fn check_entry(entry: &Entry) -> Result<()> {
    if entry.attrs.values("objectClass").is_empty() {
        return Err(invalid(&entry.dn, "an entry must have an objectClass").into());
    }
    if let Some(rdn) = entry.dn.rdn() {
        for ava in rdn.avas() {
            if !entry.attrs.has_value(ava.attr(), &Value::from_bytes(ava.value_bytes())) {
                return Err(invalid(
                    &entry.dn,
                    format!(
                        "RDN value {}={} may not be removed",
                        ava.attr(),
                        String::from_utf8_lossy(ava.value_bytes())
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Plans an add; also used by the bulk loader, which passes `parent_known` when the
/// parent comes earlier in the same batch.
pub(crate) fn plan_add(
    set: &EntrySet,
    suffix: &Dn,
    dn: &Dn,
    attrs: &Attributes,
    uuid: EntryUuid,
    csn: Csn,
    parent_known: bool,
) -> Result<Planned> {
    check_new_name(set, suffix, dn, parent_known)?;
    let mut entry = Entry { dn: dn.clone(), uuid, csn, attrs: attrs.clone() };
    entry.ensure_rdn_values().map_err(|e| invalid(dn, e.to_string()))?;
    check_entry(&entry)?;
    Ok(Planned { kind: ChangeKind::Add, uuid, old_key: None, old_dn: None, dn: dn.clone(), after: Some(entry) })
}

fn plan_modify(set: &EntrySet, dn: &Dn, mods: &[Modification], csn: Csn) -> Result<Planned> {
    let mut entry = set.get(dn)?.ok_or_else(|| Refusal::NoSuchObject(dn.clone()))?;
    for m in mods {
        let result = match m.op {
            ModOp::Add => entry.attrs.add(&m.attr, m.values.iter().cloned()),
            ModOp::Delete => entry.attrs.delete(&m.attr, &m.values),
            ModOp::Replace => entry.attrs.replace(&m.attr, m.values.clone()),
        };
        result.map_err(|e| invalid(dn, e.to_string()))?;
    }
    check_entry(&entry)?;
    entry.csn = csn;
    Ok(Planned {
        kind: ChangeKind::Modify,
        uuid: entry.uuid,
        old_key: Some(dn.tree_key()),
        old_dn: None,
        dn: entry.dn.clone(),
        after: Some(entry),
    })
}

fn plan_moddn(
    set: &EntrySet,
    suffix: &Dn,
    dn: &Dn,
    new_rdn: &Rdn,
    delete_old_rdn: bool,
    new_superior: Option<&Dn>,
    csn: Csn,
) -> Result<Planned> {
    let mut entry = set.get(dn)?.ok_or_else(|| Refusal::NoSuchObject(dn.clone()))?;
    // Subtree renames would rewrite every descendant in one commit; Tether refuses them
    // (as back-bdb did) so one change is always one entry. See docs/architecture.md.
    if set.has_children(dn)? {
        return Err(Refusal::NotAllowedOnNonLeaf(dn.clone()).into());
    }
    if dn == suffix {
        return Err(invalid(dn, "the suffix entry cannot be renamed").into());
    }
    let new_dn = Change::moddn_target(dn, new_rdn, new_superior);
    if new_dn != *dn {
        check_new_name(set, suffix, &new_dn, false)?;
    }
    if delete_old_rdn {
        if let Some(old_rdn) = dn.rdn() {
            for ava in old_rdn.avas() {
                let value = Value::from_bytes(ava.value_bytes());
                let kept = new_rdn.avas().iter().any(|n| {
                    n.attr().eq_ignore_ascii_case(ava.attr()) && Value::from_bytes(n.value_bytes()).matches(&value)
                });
                if !kept && entry.attrs.has_value(ava.attr(), &value) {
                    entry.attrs.delete(ava.attr(), &[value]).map_err(|e| invalid(dn, e.to_string()))?;
                }
            }
        }
    }
    entry.dn = new_dn.clone();
    entry.ensure_rdn_values().map_err(|e| invalid(dn, e.to_string()))?;
    check_entry(&entry)?;
    entry.csn = csn;
    Ok(Planned {
        kind: ChangeKind::ModDn,
        uuid: entry.uuid,
        old_key: Some(dn.tree_key()),
        old_dn: Some(dn.clone()),
        dn: new_dn,
        after: Some(entry),
    })
}
