//! Changes for the crate's unit tests.

use tether_protocol::{Attributes, Change, Dn, ModOp, Modification, Value};

/// An add of `dn` with one value per attribute.
pub(crate) fn add(dn: &str, attrs: &[(&str, &str)]) -> Change {
    let mut a = Attributes::new();
    for (k, v) in attrs {
        a.add(k, [Value::from(*v)]).unwrap();
    }
    Change::Add { dn: Dn::parse(dn).unwrap(), attrs: a }
}

/// The add of the tests' suffix entry, `dc=example,dc=com`.
pub(crate) fn suffix() -> Change {
    add("dc=example,dc=com", &[("objectClass", "domain"), ("dc", "example")])
}

/// The add of person `uid` below the suffix.
pub(crate) fn person(uid: &str) -> Change {
    add(&format!("uid={uid},dc=example,dc=com"), &[("objectClass", "person"), ("sn", uid), ("cn", uid)])
}

/// A modification replacing person `uid`'s `sn` with `sn`.
pub(crate) fn modify_sn(uid: &str, sn: &str) -> Change {
    Change::Modify {
        dn: Dn::parse(&format!("uid={uid},dc=example,dc=com")).unwrap(),
        mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from(sn)] }],
    }
}

/// `open`'s result once it is not [`crate::StoreError::Locked`], within 30 s: sled lets
/// go of a dropped store's lock from a background thread, so an open right after a
/// drop may find it still held.
pub(crate) fn unlocked<T>(mut open: impl FnMut() -> crate::Result<T>) -> crate::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open() {
            Err(crate::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
