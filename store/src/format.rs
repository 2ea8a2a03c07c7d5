//! The layout version of a store on disk, so a build never reads records it would
//! misread.
//!
//! Records are encoded structs (see `record`): a build whose structs differ reads
//! another build's bytes as garbage, or worse, as different valid values. The usual way
//! to meet that is a downgrade: a newer build ran, wrote its layout, and the operator
//! rolled the binary back. So every store carries the layout it was written in, in
//! sled's default tree, and opening one in a layout this build does not read is refused
//! before anything is read or written. Stores made before the marker existed are in
//! layout 1, the one this build writes, and are stamped on their next open.

use sled::Db;

use crate::error::{Result, StoreError};

/// The layout this build reads and writes. A build that changes how records are encoded
/// raises it, and migrates the layouts below it on open.
pub const FORMAT: u32 = 1;

/// The default tree's key for the layout. (The default tree holds nothing else, so the
/// key cannot clash with data.)
const KEY: &[u8] = b"tether_store_format";

/// Refuses a store in a layout this build does not read, and stamps one without a
/// marker (new, or made before markers) with [`FORMAT`].
pub(crate) fn check(db: &Db, path: &std::path::Path) -> Result<()> {
    let Some(stored) = db.get(KEY)? else {
        db.insert(KEY, &FORMAT.to_be_bytes())?;
        return Ok(());
    };
    let found = <[u8; 4]>::try_from(stored.as_ref())
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("the store format marker is {} bytes, not 4", stored.len())))?;
    match found {
        FORMAT => Ok(()),
        newer if newer > FORMAT => {
            Err(StoreError::NewerFormat { path: path.display().to_string(), found: newer, supported: FORMAT })
        }
        older => Err(StoreError::Corrupt(format!("store format {older}: no build wrote a format below 1"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_store_is_stamped_once_and_its_own_format_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        check(&db, dir.path()).unwrap();
        assert_eq!(db.get(KEY).unwrap().as_deref(), Some(&FORMAT.to_be_bytes()[..]));
        check(&db, dir.path()).unwrap();
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(KEY, &(FORMAT + 1).to_be_bytes()).unwrap();
        let e = check(&db, dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::NewerFormat { found, supported: FORMAT, .. } if found == FORMAT + 1), "{e}");
        let said = e.to_string();
        // Both, each where it belongs: the operator picks the build to run by them.
        let both = format!(
            "a store of format {}, written by a newer Tether; this build reads format {FORMAT} only",
            FORMAT + 1
        );
        assert!(said.contains(&both), "{said}");
        assert_eq!(db.get(KEY).unwrap().as_deref(), Some(&(FORMAT + 1).to_be_bytes()[..]), "the marker is kept");
    }

    /// Both kinds of store go through the check, before anything of theirs is read; the
    /// refused store is as it was, and opens again under the build that wrote it
    /// (played here by putting its marker back).
    #[test]
    fn both_stores_refuse_a_newer_format_and_keep_their_data() {
        let suffix = tether_protocol::Dn::parse("dc=example,dc=com").unwrap();
        let set_marker = |path: &std::path::Path, format: u32| {
            // sled lets go of a dropped store's lock from a background thread: wait for
            // it, with a deadline.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let db = loop {
                match sled::open(path) {
                    Ok(db) => break db,
                    Err(e) if std::time::Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            db.insert(KEY, &format.to_be_bytes()).unwrap();
            db.flush().unwrap();
        };
        // The same wait for the opens under test: each follows a drop.
        use crate::test_changes::unlocked;

        let provider = tempfile::tempdir().unwrap();
        let d = crate::Directory::open(provider.path(), &suffix).unwrap();
        d.write(&crate::test_changes::suffix()).unwrap();
        drop(d);
        set_marker(provider.path(), FORMAT + 1);
        let refused = unlocked(|| crate::Directory::open(provider.path(), &suffix)).map(|_| ()).unwrap_err();
        assert!(matches!(refused, StoreError::NewerFormat { .. }), "{refused}");
        set_marker(provider.path(), FORMAT);
        assert_eq!(unlocked(|| crate::Directory::open(provider.path(), &suffix)).unwrap().durable_csn().0, 1);

        let consumer = tempfile::tempdir().unwrap();
        crate::ReplicaStore::open(consumer.path()).unwrap().replica("people").unwrap();
        set_marker(consumer.path(), FORMAT + 1);
        let refused = unlocked(|| crate::ReplicaStore::open(consumer.path())).map(|_| ()).unwrap_err();
        assert!(matches!(refused, StoreError::NewerFormat { .. }), "{refused}");
        set_marker(consumer.path(), FORMAT);
        assert_eq!(unlocked(|| crate::ReplicaStore::open(consumer.path())).unwrap().names().unwrap(), ["people"]);
    }

    #[test]
    fn a_damaged_marker_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(KEY, b"x").unwrap();
        assert!(matches!(check(&db, dir.path()), Err(StoreError::Corrupt(_))));
        db.insert(KEY, &0u32.to_be_bytes()).unwrap();
        assert!(matches!(check(&db, dir.path()), Err(StoreError::Corrupt(_))));
    }
}
