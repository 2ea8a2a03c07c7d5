//! Helpers shared by the store's integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use tether_protocol::{Attributes, Change, Dn, ModOp, Modification, Rdn, Value};

pub fn dn(s: &str) -> Dn {
    Dn::parse(s).unwrap()
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in pairs {
        a.add(k, [Value::from(*v)]).unwrap();
    }
    a
}

pub fn add(d: &str, pairs: &[(&str, &str)]) -> Change {
    Change::Add { dn: dn(d), attrs: attrs(pairs) }
}

pub fn add_ou(d: &str) -> Change {
    let ou = d.split(',').next().unwrap().split('=').nth(1).unwrap();
    add(d, &[("objectClass", "organizationalUnit"), ("ou", ou)])
}

pub fn add_person(d: &str) -> Change {
    let uid = d.split(',').next().unwrap().split('=').nth(1).unwrap();
    add(d, &[("objectClass", "inetOrgPerson"), ("uid", uid), ("cn", uid), ("sn", "Tester")])
}

pub fn modify(d: &str, op: ModOp, attr: &str, values: &[&str]) -> Change {
    Change::Modify {
        dn: dn(d),
        mods: vec![Modification { op, attr: attr.into(), values: values.iter().map(|v| Value::from(*v)).collect() }],
    }
}

pub fn moddn(d: &str, new_rdn: &str, superior: Option<&str>) -> Change {
    Change::ModDn {
        dn: dn(d),
        new_rdn: Rdn::parse(new_rdn).unwrap(),
        delete_old_rdn: true,
        new_superior: superior.map(dn),
    }
}

pub fn delete(d: &str) -> Change {
    Change::Delete { dn: dn(d) }
}

pub const SUFFIX: &str = "dc=example,dc=com";

pub fn base_tree() -> Vec<Change> {
    vec![
        add("dc=example,dc=com", &[("objectClass", "domain"), ("dc", "example")]),
        add_ou("ou=people,dc=example,dc=com"),
        add_ou("ou=groups,dc=example,dc=com"),
    ]
}

/// A new provider store in a temporary folder holding [`base_tree`].
pub fn directory_with_base_tree() -> (tempfile::TempDir, tether_store::Directory) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tether_store::Directory::open(tmp.path(), &dn(SUFFIX)).unwrap();
    for c in base_tree() {
        d.write(&c).unwrap();
    }
    (tmp, d)
}

/// Opens a store that was just closed. sled lets go of its folder lock when its
/// background I/O drops the last reference to the file, a moment after the last handle
/// is dropped, so an open at once can still find the folder locked: `locked` says which
/// errors mean that. Polls until the open succeeds, for at most ten seconds.
pub fn reopen<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>, locked: impl Fn(&E) -> bool) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(store) => return store,
            Err(e) if locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("reopening the store: {e:?}"),
        }
    }
}

/// What opening a store gives once no dropped handle holds its folder any more: `Ok`
/// or the error, for tests of the opens that must be refused.
pub fn open_outcome<T>(
    mut open: impl FnMut() -> Result<T, tether_store::StoreError>,
) -> Result<(), tether_store::StoreError> {
    reopen(
        || match open() {
            Err(tether_store::StoreError::Locked(path)) => Err(path),
            other => Ok(other.map(drop)),
        },
        |_| true,
    )
}

/// [`reopen`] for a consumer store.
pub fn reopen_replicas(path: &std::path::Path) -> tether_store::ReplicaStore {
    reopen(|| tether_store::ReplicaStore::open(path), |e| matches!(e, tether_store::StoreError::Locked(_)))
}

/// [`reopen`] for a provider store.
pub fn reopen_directory(path: &std::path::Path, suffix: &Dn) -> tether_store::Directory {
    reopen(|| tether_store::Directory::open(path, suffix), |e| matches!(e, tether_store::StoreError::Locked(_)))
}

/// [`reopen`] for the sled database underneath, to look at or alter it as an older
/// version would have left it.
pub fn reopen_sled(path: &std::path::Path) -> sled::Db {
    reopen(
        || sled::open(path),
        |e| matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")),
    )
}

/// Copies the folder `from`, such as a closed store's, to `to`: a cold backup.
pub fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_dir() {
            copy_folder(&item.path(), &to.join(item.file_name()));
        } else {
            std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}
