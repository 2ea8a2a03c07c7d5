//! Files sled writes into a store that another user owns, given back to that user.
//!
//! sled writes as it opens a store, even to read it: every open writes a snapshot of its
//! log (`snap.<lsn>`). Root running `status`, `search` or `load` on the stopped store of a
//! service that runs as its own user therefore left a file that root owns in the
//! service's `data_dir`, and with root's umask at 077 (a common hardening) the service
//! could no longer read it and did not start (`Permission denied`), until someone found
//! and chowned the file. After opening, the store gives every file and folder in it
//! that another user owns back to the owner of the `data_dir`. Only root can, and only
//! root could have written there as another user; for anyone else nothing differs (a
//! refused `chown` is left as it is).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;

/// Folders below the store's own that are looked into (sled's `blobs/`).
const DEPTH: usize = 1;

/// Gives what another user owns in `store` back to `store`'s owner, and says how many
/// files and folders it changed. Sockets and links are left alone: a control socket in
/// the folder belongs to the process that made it.
pub(crate) fn give_back(store: &Path) -> usize {
    let Ok(top) = fs::metadata(store) else { return 0 };
    give_back_in(store, top.uid(), top.gid(), DEPTH)
}

fn give_back_in(folder: &Path, uid: u32, gid: u32, depth: usize) -> usize {
    let Ok(entries) = fs::read_dir(folder) else { return 0 };
    let mut given = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        if meta.uid() != uid || meta.gid() != gid {
            match chown(&path, Some(uid), Some(gid)) {
                Ok(()) => {
                    tracing::debug!(file = %path.display(), uid, gid, "gave a file another user wrote back to the store's owner");
                    given += 1;
                }
                // Not root: this process could not have written it as another user.
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "could not give a file of the store back to the store's owner: chown it by hand, or the store's own user may not be able to open the store"
                ),
            }
        }
        if kind.is_dir() && depth > 0 {
            given += give_back_in(&path, uid, gid, depth - 1);
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root (the tests run as root here, and in CI), a file another user's command
    /// wrote is given back; run as anyone else, the refused `chown` changes nothing and
    /// is not an error.
    #[test]
    fn what_another_user_wrote_into_a_store_goes_back_to_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(store.join("blobs")).unwrap();
        fs::write(store.join("db"), b"x").unwrap();
        fs::write(store.join("snap.0000"), b"x").unwrap();
        fs::write(store.join("blobs").join("7"), b"x").unwrap();
        let me = fs::metadata(&store).unwrap();
        // The store belongs to nobody (65534); this process wrote its files.
        let (owner, group) = (65534, 65534);
        let root = chown(&store, Some(owner), Some(group)).is_ok();
        let given = give_back(&store);
        if !root {
            assert_eq!(given, 0, "as another user nothing can be given back");
            assert_eq!(fs::metadata(store.join("db")).unwrap().uid(), me.uid());
            return;
        }
        // Run again, nothing is left to give.
        assert_eq!(given, 4, "db, snap, blobs/ and the blob in it");
        assert_eq!(give_back(&store), 0);
        for file in ["db", "snap.0000", "blobs", "blobs/7"] {
            let meta = fs::metadata(store.join(file)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (owner, group), "{file}");
        }
    }

    /// The open itself gives back: sled wrote a snapshot as root opened the store.
    #[test]
    fn a_store_opened_by_root_is_left_wholly_its_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("provider");
        let suffix = tether_protocol::Dn::parse("dc=example,dc=com").unwrap();
        drop(crate::Directory::open(&path, &suffix).unwrap());
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        if chown(&path, Some(65534), Some(65534)).is_err() {
            return; // not root: no other user's store to open
        }
        for file in fs::read_dir(&path).unwrap() {
            let file = file.unwrap().path();
            chown(&file, Some(65534), Some(65534)).unwrap();
        }
        // sled lets go of the first open's lock from a background thread.
        drop(crate::test_changes::unlocked(|| crate::Directory::open(&path, &suffix)).unwrap());
        let roots: Vec<String> = fs::read_dir(&path)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|f| fs::symlink_metadata(f).unwrap().uid() != 65534)
            .map(|f| f.display().to_string())
            .collect();
        assert!(roots.is_empty(), "left to root by the open: {roots:?}");
    }

    /// A file whose user is the owner's but whose group is not is given back too, and
    /// the owner's user and group are each given their own: a service's user and group
    /// need not share a number.
    #[test]
    fn a_file_of_another_group_goes_back_to_the_owners_user_and_group() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(&store).unwrap();
        fs::write(store.join("db"), b"x").unwrap();
        fs::write(store.join("snap.0000"), b"x").unwrap();
        let (owner, group) = (65534, 65533);
        if chown(&store, Some(owner), Some(group)).is_err() {
            return; // not root: nothing to show
        }
        // Only its group differs; the snap is root's, user and group.
        chown(store.join("db"), Some(owner), Some(0)).unwrap();
        assert_eq!(give_back(&store), 2);
        for file in ["db", "snap.0000"] {
            let meta = fs::metadata(store.join(file)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (owner, group), "{file}");
        }
    }

    #[test]
    fn a_socket_in_the_store_stays_its_makers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(&store).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(store.join("control.sock")).unwrap();
        let mine = fs::symlink_metadata(store.join("control.sock")).unwrap().uid();
        if chown(&store, Some(65534), Some(65534)).is_err() {
            return; // not root: nothing to show
        }
        assert_eq!(give_back(&store), 0);
        assert_eq!(fs::symlink_metadata(store.join("control.sock")).unwrap().uid(), mine);
    }
}
