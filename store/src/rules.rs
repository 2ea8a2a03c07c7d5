//! Directory rules (SPEC §2): whether a write is allowed, and the entry state it leads
//! to. Pure decisions over reads of the entry set; the caller holds the writer lock, so
//! nothing changes between these checks and the commit.

use tether_protocol::entry::operational::is_operational;
use tether_protocol::{
    Attributes, Change, CodecError, Csn, Dn, Entry, EntryUuid, ModOp, Modification, PartialEntry, Rdn, Value, MAX_ENTRY,
};

use crate::changelog::ChangeKind;
use crate::entry_set::{EntrySet, Located, Spelling, ENTRIES};
use crate::error::{Refusal, Result, StoreError};

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
    /// The new state (None for a delete), with `csn` already set, encoded as it is to
    /// be stored: outside the transaction, which sled may run more than once, and once
    /// for the store and the persist feed.
    pub after: Option<Located>,
    /// The DN the changelog records (after, or the deleted one).
    pub dn: Dn,
}

fn invalid(dn: &Dn, reason: impl Into<String>) -> Refusal {
    Refusal::InvalidChange { dn: dn.clone(), reason: reason.into() }
}

/// An entryUUID given for `dn` that `holder` in the store has already, or (`None`) an
/// earlier entry of the same batch.
pub(crate) fn uuid_taken(dn: &Dn, uuid: &EntryUuid, holder: Option<&Dn>) -> Refusal {
    match holder {
        Some(holder) => invalid(dn, format!("entryUUID {uuid} is already the UUID of {holder}")),
        None => invalid(dn, format!("entryUUID {uuid} is given to another entry earlier in the same load")),
    }
}

/// The encoding of a planned state, refused if the entry would be too large to
/// replicate ([`MAX_ENTRY`]): a modification adding a value can grow an entry past what
/// a message carries, and an add or a load can bring one in.
fn within_limit(dn: &Dn, encoded: Result<Located>) -> Result<Located> {
    let too_large = |len: usize| {
        invalid(dn, format!("the entry would take {len} bytes encoded, over the limit of {MAX_ENTRY} bytes an entry may take to be replicated"))
    };
    match encoded {
        Ok(located) if located.bytes.len() > MAX_ENTRY => Err(too_large(located.bytes.len()).into()),
        // Reading an entry back claims its sequences' memory too, more than its bytes:
        // one of very many small values can fit the bytes and not the reading, and
        // stored, it could be neither read, replicated, changed nor deleted. Read back
        // here when its size allows that at all.
        Ok(located) if located.bytes.len() > tether_protocol::codec::MAX_CLAIM / 16 => {
            match tether_protocol::codec::decode::<Entry>(&located.bytes) {
                Err(CodecError::LimitExceeded { max }) => Err(invalid(
                    dn,
                    format!(
                        "the entry would take {} bytes encoded, and more than {max} bytes to read back, the limit \
                         for one entry: its values are too many for their size",
                        located.bytes.len()
                    ),
                )
                .into()),
                _ => Ok(located),
            }
        }
        Err(StoreError::Codec { source: CodecError::TooLarge { len, .. }, .. }) => Err(too_large(len).into()),
        other => other,
    }
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
/// Checks that `dn` may be made, and returns it spelled below its parent as the parent
/// is stored (`uid=x,OU=B099,DC=EXAMPLE` would print under `ou=b099,dc=example`), as
/// LDAP servers do: `None` when it is spelled so already, or its parent was not looked
/// up (`parent_known`: earlier in the same bulk batch).
fn check_new_name(set: &EntrySet, suffix: &Dn, dn: &Dn, parent_known: bool) -> Result<Option<Dn>> {
    if !dn.is_descendant_of(suffix) {
        return Err(Refusal::OutsideSuffix { dn: dn.clone(), suffix: suffix.clone() }.into());
    }
    if set.contains(dn)? {
        return Err(Refusal::AlreadyExists(dn.clone()).into());
    }
    if dn == suffix || parent_known {
        return Ok(None);
    }
    let parent = dn.parent().unwrap_or_default();
    match set.spelling(&parent)? {
        Spelling::Absent => Err(Refusal::NoParent(dn.clone()).into()),
        Spelling::AsGiven => Ok(None),
        Spelling::Otherwise(stored) => Ok(dn.rdn().map(|rdn| stored.child(rdn.clone()))),
    }
}

/// Refuses an RDN naming a server-maintained attribute, or one in hex.
///
/// A server-maintained attribute in the RDN would become an attribute of the entry (an
/// entry holds its RDN's values), past the check of its attributes: an entry named
/// `entryUUID=...` would hold a second `entryUUID`, and every `search --uuids` backup
/// of the directory would then be refused by `load`.
///
/// A new name's RDN values must be text. RFC 4514 writes `cn=#0C03414243` for the BER
/// encoding of a value, which only a schema can read back into `ABC`; Tether has none,
/// and took the octets as the value, so `cn=#414243` held `cn: ABC` beside a sibling
/// `cn=ABC` whose value matched it, under another name. Names already stored keep
/// working; only new ones are refused, naming the text form.
fn check_rdn(dn: &Dn) -> Result<(), Refusal> {
    if let Some(ava) = dn.rdn().and_then(|rdn| rdn.avas().iter().find(|a| is_operational(a.attr()))) {
        return Err(invalid(
            dn,
            format!("an RDN cannot name {}: it is maintained by the server, not written", ava.attr()),
        ));
    }
    let Some(ava) = dn.rdn().and_then(|rdn| rdn.avas().iter().find(|a| a.value_str().is_none())) else {
        return Ok(());
    };
    let text = std::str::from_utf8(ava.value_bytes())
        .ok()
        .filter(|t| !t.chars().any(char::is_control))
        .and_then(|t| tether_protocol::dn::Ava::new(ava.attr(), t).ok())
        .and_then(|text| tether_protocol::Rdn::new(vec![text]).ok())
        .map(|rdn| format!(" (if its octets are the value, write {rdn})"))
        .unwrap_or_default();
    Err(invalid(
        dn,
        format!(
            "RDN value {}=#... is in hex (RFC 4514's BER form), which Tether, without a schema, cannot read as \
             the value it encodes: name entries with text values{text}",
            ava.attr()
        ),
    ))
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
    let respelled = check_new_name(set, suffix, dn, parent_known)?;
    let dn = respelled.as_ref().unwrap_or(dn);
    let after = Some(new_entry(dn, attrs, uuid, csn)?);
    Ok(Planned { kind: ChangeKind::Add, uuid, old_key: None, old_dn: None, dn: dn.clone(), after })
}

/// The state an add of `dn` with `attrs` stores, encoded: its RDN values added where
/// missing, the entry rules checked, its size within [`MAX_ENTRY`]. It does not depend
/// on what the store holds, so the bulk loader checks every record of a file with it
/// before writing any.
pub(crate) fn new_entry(dn: &Dn, attrs: &Attributes, uuid: EntryUuid, csn: Csn) -> Result<Located> {
    if let Some(attr) = attrs.iter().find(|a| is_operational(&a.name)) {
        return Err(server_maintained(dn, &attr.name).into());
    }
    check_rdn(dn)?;
    let mut entry = Entry { dn: dn.clone(), uuid, csn, attrs: attrs.clone() };
    entry.ensure_rdn_values().map_err(|e| invalid(dn, e.to_string()))?;
    check_entry(&entry)?;
    within_limit(dn, Located::encode(&entry))
}

/// Plans a modification on the stored bytes: only the attributes it names and those the
/// rules read (objectClass and the RDN's) are decoded, and the rest are written back as
/// they were stored ([`PartialEntry`]). The result is byte for byte what decoding,
/// modifying and encoding the whole entry would give; a modification names one or two
/// attributes of ten, and the whole decode was most of planning one.
fn plan_modify(set: &EntrySet, dn: &Dn, mods: &[Modification], csn: Csn) -> Result<Planned> {
    let stored = set.get_encoded(dn)?.ok_or_else(|| Refusal::NoSuchObject(dn.clone()))?;
    // The stored DN has the same key as `dn`, so its RDN names the same attributes.
    let rdn = dn.rdn();
    let read = |key: &str| {
        key == "objectclass"
            || mods.iter().any(|m| tether_protocol::entry::key_names(key, &m.attr))
            || rdn.is_some_and(|rdn| rdn.avas().iter().any(|ava| ava.attr().eq_ignore_ascii_case(key)))
    };
    let mut partial =
        PartialEntry::decode(&stored, read).map_err(|source| StoreError::Codec { tree: ENTRIES, source })?;
    apply_modifications(&mut partial.entry.attrs, dn, mods)?;
    check_entry(&partial.entry)?;
    partial.entry.csn = csn;
    Ok(Planned {
        kind: ChangeKind::Modify,
        uuid: partial.entry.uuid,
        old_key: Some(dn.tree_key()),
        old_dn: None,
        after: Some(within_limit(dn, Located::encode_partial(&partial))?),
        dn: partial.entry.dn,
    })
}

/// The refusal `change` gets whatever the store holds, if it gets one for that reason:
/// a value for a server-maintained attribute. A writer checks a whole file with it
/// before sending any record, so such a record does not stop a run halfway.
pub fn refused_anywhere(change: &Change) -> Option<Refusal> {
    match change {
        Change::Add { dn, attrs } => attrs
            .iter()
            .find(|a| is_operational(&a.name))
            .map(|a| server_maintained(dn, &a.name))
            .or_else(|| check_rdn(dn).err()),
        Change::Modify { dn, mods } => mods
            .iter()
            .find(|m| m.op != ModOp::Delete && !m.values.is_empty() && is_operational(&m.attr))
            .map(|m| server_maintained(dn, &m.attr)),
        Change::ModDn { dn, new_rdn, new_superior, .. } => {
            let parent = new_superior.clone().or_else(|| dn.parent()).unwrap_or_default();
            check_new_rdn(dn, &parent.child(new_rdn.clone())).err()
        }
        Change::Delete { .. } => None,
    }
}

/// [`check_rdn`] of `new_dn`, the new name a rename gives `dn`, its refusal naming the
/// entry renamed (the record's `dn:`, what a writer looks for), not a name that does
/// not exist.
fn check_new_rdn(dn: &Dn, new_dn: &Dn) -> Result<(), Refusal> {
    check_rdn(new_dn).map_err(|refusal| match refusal {
        Refusal::InvalidChange { reason, .. } => invalid(dn, format!("its new name {new_dn}: {reason}")),
        other => other,
    })
}

/// A write giving values to a server-maintained attribute (see
/// [`tether_protocol::entry::operational`]). Removing one is allowed: an entry loaded
/// before the loader left them out may still carry some.
fn server_maintained(dn: &Dn, attr: &str) -> Refusal {
    invalid(
        dn,
        format!(
            "{attr} is maintained by the server, not written: an entry's entryUUID is the provider's to give \
             (`load` keeps the one of an exported entry), and Tether keeps no timestamps, creators or CSNs of \
             another server"
        ),
    )
}

/// Applies `mods` in order, refusing the write at the first that cannot apply.
fn apply_modifications(attrs: &mut Attributes, dn: &Dn, mods: &[Modification]) -> Result<()> {
    for m in mods {
        if m.op != ModOp::Delete && !m.values.is_empty() && is_operational(&m.attr) {
            return Err(server_maintained(dn, &m.attr).into());
        }
        if m.op == ModOp::Delete && is_operational(&m.attr) && attrs.get(&m.attr).is_none() {
            let reason = format!(
                "no such attribute {:?}: Tether keeps server-maintained attributes out of entries (an entry's \
                 entryUUID is its identity, not an attribute), so there is none to delete",
                m.attr
            );
            return Err(invalid(dn, reason).into());
        }
        let result = match m.op {
            ModOp::Add => attrs.add(&m.attr, m.values.iter().cloned()),
            ModOp::Delete => attrs.delete(&m.attr, &m.values),
            ModOp::Replace => attrs.replace(&m.attr, m.values.clone()),
            ModOp::Increment => match m.values.as_slice() {
                [by] => attrs.increment(&m.attr, by),
                _ => {
                    let reason = format!("increment of {:?} takes exactly one value, the amount", m.attr);
                    return Err(invalid(dn, reason).into());
                }
            },
        };
        result.map_err(|e| invalid(dn, e.to_string()))?;
    }
    Ok(())
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
    // Below itself, its new parent would be the name it leaves: the entry would end up
    // with no parent (RFC 4511 §4.9: the new superior is an existing entry, another one).
    if let Some(superior) = new_superior.filter(|s| s.is_descendant_of(dn)) {
        return Err(invalid(dn, format!("newsuperior {superior} is the entry itself or below it")).into());
    }
    // Below the stored spelling of its parent (see `check_new_name`): the entry's own,
    // or the new superior's, which `check_new_name` looks up.
    let new_dn = match new_superior {
        Some(superior) => superior.child(new_rdn.clone()),
        None => entry.dn.parent().unwrap_or_default().child(new_rdn.clone()),
    };
    check_new_rdn(dn, &new_dn)?;
    let new_dn = if new_dn == *dn { new_dn } else { check_new_name(set, suffix, &new_dn, false)?.unwrap_or(new_dn) };
    if delete_old_rdn {
        if let Some(old_rdn) = dn.rdn() {
            for ava in old_rdn.avas() {
                let value = Value::from_bytes(ava.value_bytes());
                // Kept only if the new RDN has it as written: a rename that only changes
                // its case (`cn=Jgern` to `cn=JGERN`) replaces the value's spelling too,
                // as LDAP servers do, rather than leave the entry naming itself one way
                // and holding the value another (the old value goes, and the new RDN's
                // is added below).
                let kept = new_rdn
                    .avas()
                    .iter()
                    .any(|n| n.attr().eq_ignore_ascii_case(ava.attr()) && n.value_bytes() == ava.value_bytes());
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
        after: Some(within_limit(&new_dn, Located::encode(&entry))?),
        dn: new_dn,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{ModOp, Modification, Value};

    use super::*;
    use crate::test_changes::{add, suffix};
    use crate::Directory;

    /// How a modification was planned before [`PartialEntry`]: the whole entry decoded,
    /// modified, checked and encoded.
    fn plan_whole(set: &EntrySet, dn: &Dn, mods: &[Modification], csn: Csn) -> Result<Located> {
        let mut entry = set.get(dn)?.ok_or_else(|| Refusal::NoSuchObject(dn.clone()))?;
        apply_modifications(&mut entry.attrs, dn, mods)?;
        check_entry(&entry)?;
        entry.csn = csn;
        Located::encode(&entry)
    }

    fn m(op: ModOp, attr: &str, values: &[&str]) -> Modification {
        Modification { op, attr: attr.into(), values: values.iter().map(|v| Value::from(*v)).collect() }
    }

    /// Every kind of modification, allowed and refused, on entries with single and
    /// multi-valued RDNs, planned on the stored bytes, gives the bytes, CSN and refusal
    /// the whole entry gives.
    /// An entry must fit in a replication message: a write that would make one larger
    /// is refused as an invalid change naming the size, however it would grow (add,
    /// modification, rename to a longer name), and leaves the entry as it was.
    #[test]
    fn a_write_that_would_make_an_entry_too_large_to_replicate_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        let too_large = |result: Result<crate::Committed>| match result {
            Err(StoreError::Refused(Refusal::InvalidChange { reason, .. })) => {
                assert!(reason.contains(&format!("over the limit of {MAX_ENTRY} bytes")), "{reason}");
            }
            other => panic!("expected a refusal for size, got {other:?}"),
        };
        let big = "x".repeat(MAX_ENTRY);
        too_large(d.write(&add("cn=big,dc=example,dc=com", &[("objectClass", "person"), ("cn", "big"), ("sn", &big)])));

        // Just under the limit is fine; a value more is not.
        let dn = "cn=near,dc=example,dc=com";
        let near = "y".repeat(MAX_ENTRY - 1024);
        d.write(&add(dn, &[("objectClass", "person"), ("cn", "near"), ("sn", &near)])).unwrap();
        let grow = Change::Modify {
            dn: Dn::parse(dn).unwrap(),
            mods: vec![m(ModOp::Add, "description", &[&"z".repeat(2048)])],
        };
        too_large(d.write(&grow));
        let rename = Change::ModDn {
            dn: Dn::parse(dn).unwrap(),
            new_rdn: Rdn::parse(&format!("cn={}", "n".repeat(2048))).unwrap(),
            delete_old_rdn: false,
            new_superior: None,
        };
        too_large(d.write(&rename));
        let entry = d.entries().get(&Dn::parse(dn).unwrap()).unwrap().unwrap();
        assert_eq!(entry.attrs.values("sn"), [Value::from(near.as_str())]);
        assert!(entry.attrs.values("description").is_empty(), "the refused write changed nothing");
        // A modification that keeps it under the limit still applies.
        let small = Change::Modify { dn: Dn::parse(dn).unwrap(), mods: vec![m(ModOp::Add, "description", &["fits"])] };
        d.write(&small).unwrap();
    }

    /// Every entry written reads back: a group as large as the entry limit allows is
    /// written and read, and an entry of so many small values that reading it would
    /// claim more than the codec allows is refused, saying so (found by a walkthrough:
    /// a group of 287,000 members was written and could then be neither read,
    /// replicated, modified nor deleted).
    #[test]
    fn every_entry_written_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        let member = |i: usize| Value::from(format!("uid=member{i:07},ou=people,dc=example,dc=com,o=corp"));
        let per_member = member(0).as_bytes().len() + 1;
        let mut attrs = Attributes::new();
        attrs.add("objectClass", [Value::from("groupOfNames")]).unwrap();
        attrs.add("cn", [Value::from("big")]).unwrap();
        attrs.add("member", (0..(MAX_ENTRY - 4096) / per_member).map(member)).unwrap();
        let big = Dn::parse("cn=big,dc=example,dc=com").unwrap();
        d.write(&Change::Add { dn: big.clone(), attrs }).unwrap();
        let more = Change::Modify { dn: big.clone(), mods: vec![m(ModOp::Add, "member", &["uid=one,o=more"])] };
        d.write(&more).unwrap();
        assert!(d.entries().get(&big).unwrap().unwrap().attrs.has_value("member", &Value::from("uid=one,o=more")));
        d.write(&Change::Delete { dn: big }).unwrap();

        // Four-byte values: each claims about three times its encoding.
        let tiny = |i: usize| Value::from_bytes([0xff, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let mut attrs = Attributes::new();
        attrs.add("objectClass", [Value::from("device")]).unwrap();
        attrs.add("cn", [Value::from("tiny")]).unwrap();
        attrs.add("x", (0..(MAX_ENTRY - 4096) / 5).map(tiny)).unwrap();
        let dn = Dn::parse("cn=tiny,dc=example,dc=com").unwrap();
        match d.write(&Change::Add { dn: dn.clone(), attrs }) {
            Err(StoreError::Refused(Refusal::InvalidChange { reason, .. })) => {
                assert!(reason.contains("bytes to read back, the limit for one entry"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(d.entries().get(&dn).unwrap().is_none(), "nothing written");
    }

    #[test]
    fn a_modification_planned_on_the_stored_bytes_is_the_one_planned_on_the_whole_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        d.write(&suffix()).unwrap();
        let ann = "uid=ann,dc=example,dc=com";
        let lee = "cn=Lee+sn=Park,dc=example,dc=com";
        d.write(&add(
            ann,
            &[
                ("objectClass", "inetOrgPerson"),
                ("cn", "Ann"),
                ("sn", "Lee"),
                ("mail", "ann@example.com"),
                ("telephoneNumber", "+47 1"),
                ("cn;lang-en", "Ann"),
            ],
        ))
        .unwrap();
        d.write(&add(lee, &[("objectClass", "person"), ("description", "x")])).unwrap();
        use ModOp::{Add, Delete, Replace};
        let cases: Vec<(&str, Vec<Modification>)> = vec![
            (ann, vec![m(Replace, "telephoneNumber", &["+47 2"])]),
            (ann, vec![m(Replace, "TELEPHONENUMBER", &["+47 2", "+47 3"])]),
            (ann, vec![m(Add, "mail", &["ann2@example.com"])]),
            (ann, vec![m(Add, "mail", &["ANN@example.com"])]),
            (ann, vec![m(Delete, "mail", &["ANN@EXAMPLE.COM"])]),
            (ann, vec![m(Delete, "mail", &[])]),
            (ann, vec![m(Delete, "mail", &["nobody@example.com"])]),
            (ann, vec![m(Delete, "description", &[])]),
            (ann, vec![m(Add, "description", &["new"]), m(Add, "zz-last", &["z"]), m(Add, "a-first", &["a"])]),
            (ann, vec![m(Replace, "cn", &[])]),
            (ann, vec![m(Replace, "cn;lang-en", &["Anne"]), m(Delete, "sn", &[])]),
            (ann, vec![m(Delete, "objectClass", &[])]),
            (ann, vec![m(Replace, "objectClass", &["person", "top"])]),
            (ann, vec![m(Delete, "uid", &["ann"])]),
            (ann, vec![m(Delete, "uid", &[]), m(Add, "uid", &["ANN"])]),
            (ann, vec![m(Add, "c n", &["x"])]),
            (ann, vec![m(Replace, "mail", &[]), m(Add, "mail", &["back@example.com"])]),
            (lee, vec![m(Delete, "sn", &[])]),
            (lee, vec![m(Replace, "cn", &["Lee", "Li"])]),
            (lee, vec![m(Replace, "description", &["y"])]),
            ("uid=nobody,dc=example,dc=com", vec![m(Replace, "cn", &["x"])]),
        ];
        for (dn, mods) in cases {
            let dn = Dn::parse(dn).unwrap();
            let planned =
                plan(d.entries(), d.suffix(), &Change::Modify { dn: dn.clone(), mods: mods.clone() }, Csn(77));
            let whole = plan_whole(d.entries(), &dn, &mods, Csn(77));
            match (planned, whole) {
                (Ok(planned), Ok(whole)) => {
                    let after = planned.after.unwrap();
                    assert_eq!(after.bytes, whole.bytes, "{mods:?}");
                    assert_eq!((&after.key, after.csn), (&whole.key, whole.csn), "{mods:?}");
                    assert_eq!(planned.dn, dn);
                }
                (Err(planned), Err(whole)) => assert_eq!(planned.to_string(), whole.to_string(), "{mods:?}"),
                (planned, whole) => panic!("{mods:?}: planned {planned:?}, whole {whole:?}"),
            }
        }
    }
}
