//! Attributes a directory server maintains itself, as `slapcat` prints them with every
//! entry (RFC 4512 section 3.4, RFC 4530, and OpenLDAP's own). Tether keeps none of them
//! as attributes: an entry's identity is its [`EntryUuid`] and its version its CSN, and a
//! creator, a timestamp or an OpenLDAP CSN copied from another server would go stale at
//! the first change made here while still reading as current.

use super::{Attributes, EntryUuid};

/// `entryUUID` (RFC 4530), lower-cased: the entry's identity, which a load keeps.
pub const ENTRY_UUID: &str = "entryuuid";

/// The other server-maintained attributes, lower-cased.
pub const MAINTAINED: &[&str] = &[
    "createtimestamp",
    "modifytimestamp",
    "creatorsname",
    "modifiersname",
    "structuralobjectclass",
    "entrycsn",
    "contextcsn",
    "entrydn",
    "hassubordinates",
    "numsubordinates",
    "subschemasubentry",
];

/// The OIDs of [`ENTRY_UUID`] and [`MAINTAINED`], by which LDAP also names them: an
/// attribute written `2.5.18.2:` is `modifyTimestamp` to any LDAP tool.
const OIDS: &[(&str, &str)] = &[
    ("1.3.6.1.1.16.4", ENTRY_UUID),
    ("2.5.18.1", "createtimestamp"),
    ("2.5.18.2", "modifytimestamp"),
    ("2.5.18.3", "creatorsname"),
    ("2.5.18.4", "modifiersname"),
    ("2.5.21.9", "structuralobjectclass"),
    ("1.3.6.1.4.1.4203.666.1.7", "entrycsn"),
    ("1.3.6.1.4.1.4203.666.1.25", "contextcsn"),
    ("1.3.6.1.1.20", "entrydn"),
    ("2.5.18.9", "hassubordinates"),
    ("1.3.6.1.4.1.453.16.2.103", "numsubordinates"),
    ("2.5.18.10", "subschemasubentry"),
];

/// The lower-cased name of the server-maintained attribute `name` names, by its name or
/// its OID (`OID.` prefix allowed), with or without `;options`.
pub fn operational_name(name: &str) -> Option<&'static str> {
    let base = name.split(';').next().unwrap_or_default().to_ascii_lowercase();
    let base = base.strip_prefix("oid.").unwrap_or(&base);
    if base == ENTRY_UUID {
        return Some(ENTRY_UUID);
    }
    MAINTAINED
        .iter()
        .copied()
        .find(|m| *m == base)
        .or_else(|| OIDS.iter().find(|(oid, _)| *oid == base).map(|(_, name)| *name))
}

/// Whether `name` names a server-maintained attribute, `entryUUID` included (see
/// [`operational_name`]).
pub fn is_operational(name: &str) -> bool {
    operational_name(name).is_some()
}

/// Whether `name` names an attribute a server maintains that Tether does not keep: one
/// of [`MAINTAINED`], by name or OID, but not `entryUUID`, which it keeps as the entry's
/// identity. No entry has a value of it, so a filter on it matches none and an attribute
/// list naming it keeps nothing: an agreement carried over from syncrepl with
/// `(modifyTimestamp>=...)` in its filter replicated nothing and looked healthy.
pub fn is_not_kept(name: &str) -> bool {
    operational_name(name).is_some_and(|n| n != ENTRY_UUID)
}

/// What [`Attributes::take_operational`] took out of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Operational {
    /// The entry's `entryUUID`, if it had one.
    pub uuid: Option<EntryUuid>,
    /// Values of the other server-maintained attributes, dropped.
    pub dropped: usize,
}

/// Why an entry's `entryUUID` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationalError {
    /// A value that is not a UUID in its text form.
    #[error("entryUUID {0:?} is not a UUID")]
    NotAUuid(String),
    /// The nil UUID (all zeros), which RFC 4122 reserves as naming nothing: a tool that
    /// wrote it had no UUID to give, and every entry it wrote that way would claim the
    /// same identity.
    #[error(
        "entryUUID {0:?} is the nil UUID, which names no entry: leave entryUUID out and the load gives the entry one"
    )]
    NilUuid(String),
    /// More than one value: an entry has one identity.
    #[error("entryUUID has {0} values; an entry has one")]
    SeveralUuids(usize),
}

impl Attributes {
    /// Takes the server-maintained attributes out: `entryUUID` is returned (an entry
    /// exported from another server keeps its identity), the others are dropped and
    /// counted. Nothing is removed if the `entryUUID` is refused.
    pub fn take_operational(&mut self) -> Result<Operational, OperationalError> {
        let keys: Vec<String> = self.map.keys().filter(|k| is_operational(k)).cloned().collect();
        let mut taken = Operational::default();
        for key in keys.iter().filter(|k| operational_name(k) == Some(ENTRY_UUID)) {
            let values = self.map.get(key).map(|a| a.values.as_slice()).unwrap_or_default();
            match values {
                [one] => {
                    let text = String::from_utf8_lossy(one.as_bytes());
                    let uuid: EntryUuid =
                        text.trim().parse().map_err(|_| OperationalError::NotAUuid(text.clone().into_owned()))?;
                    if uuid.as_bytes() == &[0; 16] {
                        return Err(OperationalError::NilUuid(text.into_owned()));
                    }
                    if taken.uuid.replace(uuid).is_some() {
                        return Err(OperationalError::SeveralUuids(2));
                    }
                }
                many => return Err(OperationalError::SeveralUuids(many.len())),
            }
        }
        for key in keys {
            if let Some(attr) = self.map.remove(&key) {
                if operational_name(&key) != Some(ENTRY_UUID) {
                    taken.dropped += attr.values.len();
                }
            }
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Value;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in pairs {
            a.add(k, [Value::from(*v)]).unwrap();
        }
        a
    }

    #[test]
    fn server_maintained_attributes_are_known_by_their_oids_too() {
        for name in ["1.3.6.1.1.16.4", "OID.1.3.6.1.1.16.4", "1.3.6.1.1.16.4;binary", "entryUUID", "ENTRYUUID;x"] {
            assert_eq!(operational_name(name), Some(ENTRY_UUID), "{name}");
        }
        assert_eq!(operational_name("2.5.18.2"), Some("modifytimestamp"));
        assert_eq!(operational_name("1.3.6.1.4.1.4203.666.1.7"), Some("entrycsn"));
        for ordinary in ["2.5.4.3", "cn", "1.3.6.1.1.16", "oid.cn"] {
            assert!(!is_operational(ordinary), "{ordinary}");
        }
        // An exported entry's UUID under its OID is its identity all the same.
        let mut a = attrs(&[("objectClass", "person"), ("1.3.6.1.1.16.4", "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00")]);
        let taken = a.take_operational().unwrap();
        assert_eq!(taken.uuid.unwrap().to_string(), "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00");
        assert_eq!((taken.dropped, a.len()), (0, 1));
    }

    #[test]
    fn a_slapcat_entry_keeps_its_uuid_and_loses_what_the_server_maintained() {
        let mut a = attrs(&[
            ("objectClass", "person"),
            ("cn", "ann"),
            ("sn", "Ann"),
            ("structuralObjectClass", "person"),
            ("entryUUID", "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00"),
            ("creatorsName", "cn=admin,dc=example,dc=com"),
            ("createTimestamp", "20240101000000Z"),
            ("entryCSN", "20240101000000.000000Z#000000#000#000000"),
            ("modifiersName", "cn=admin,dc=example,dc=com"),
            ("ModifyTimestamp", "20240101000000Z"),
        ]);
        let taken = a.take_operational().unwrap();
        assert_eq!(taken.uuid.unwrap().to_string(), "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00");
        assert_eq!(taken.dropped, 6);
        let left: Vec<&str> = a.canonical_order().map(|a| a.name.as_str()).collect();
        assert_eq!(left, ["objectClass", "cn", "sn"]);
        assert_eq!(a.take_operational().unwrap(), Operational::default(), "nothing left to take");
    }

    /// docs/ldif.md names the attributes a load leaves out as `slapcat` and LDAP servers
    /// spell them: each is left out and counted, none kept as an ordinary attribute.
    #[test]
    fn every_attribute_the_docs_name_as_server_maintained_is_left_out() {
        let documented = [
            "entryCSN",
            "contextCSN",
            "createTimestamp",
            "modifyTimestamp",
            "creatorsName",
            "modifiersName",
            "structuralObjectClass",
            "entryDN",
            "hasSubordinates",
            "numSubordinates",
            "subschemaSubentry",
        ];
        let mut a = attrs(&[("objectClass", "person")]);
        for name in documented {
            assert!(is_not_kept(name), "{name}");
            a.add(name, [Value::from("x")]).unwrap();
        }
        let taken = a.take_operational().unwrap();
        let left: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!((taken.dropped, left), (documented.len(), vec!["objectClass"]));
    }

    /// `1.3.6.1.1.16.4` is `entryUUID` by its OID: an entry giving both has two
    /// identities, refused as two values of one are, not settled by which sorts last.
    #[test]
    fn an_entry_uuid_given_by_its_name_and_by_its_oid_is_refused_as_two() {
        let mut a = attrs(&[
            ("objectClass", "person"),
            ("entryUUID", "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00"),
            ("1.3.6.1.1.16.4", "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f01"),
        ]);
        let before = a.clone();
        assert_eq!(a.take_operational(), Err(OperationalError::SeveralUuids(2)));
        assert_eq!(a, before, "nothing is taken");
    }

    #[test]
    fn a_bad_uuid_is_refused_and_nothing_is_taken() {
        for (values, err) in [
            (vec!["not-a-uuid"], OperationalError::NotAUuid("not-a-uuid".into())),
            (
                vec!["00000000-0000-0000-0000-000000000000"],
                OperationalError::NilUuid("00000000-0000-0000-0000-000000000000".into()),
            ),
            (
                vec!["00000000000000000000000000000000"],
                OperationalError::NilUuid("00000000000000000000000000000000".into()),
            ),
            (
                vec!["6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f00", "6bd5c4e4-1a2b-103c-8f4a-0b2c7b1a1f01"],
                OperationalError::SeveralUuids(2),
            ),
        ] {
            let mut a = attrs(&[("objectClass", "person"), ("entryCSN", "x")]);
            a.add("entryUUID", values.into_iter().map(Value::from)).unwrap();
            let before = a.clone();
            assert_eq!(a.take_operational(), Err(err));
            assert_eq!(a, before);
        }
        assert!(is_operational("entryUUID") && is_operational("createTimestamp;x") && !is_operational("cn"));
    }
}
