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
//!
//! The folder is the service user's, and that user may be hostile (a compromised
//! service): walked by path, the walk could be steered, between its look at an entry and
//! its `chown`, onto a link to any file of the system, which root then gave away (found
//! by an audit: a folder swapped with a link to another, back and forth, won within
//! eight `status` runs, and a file only root could read went to the service user). So
//! every entry is opened where it lies without following a link (`O_PATH | O_NOFOLLOW`),
//! and what is checked and what is changed are the one inode that descriptor holds; a
//! file with a second link (a system file linked in, where hard links are not
//! protected) is left alone.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// Folders below the store's own that are looked into (sled's `blobs/`).
const DEPTH: usize = 1;

/// Gives what another user owns in `store` back to `store`'s owner, and says how many
/// files and folders it changed. Sockets and links are left alone: a control socket in
/// the folder belongs to the process that made it.
pub(crate) fn give_back(store: &Path) -> usize {
    let Ok(folder) = open_store(store) else { return 0 };
    let Ok(top) = rustix::fs::fstat(&folder) else { return 0 };
    give_back_in(&folder, store, top.st_uid, top.st_gid, DEPTH)
}

/// The store's folder: a link to it is followed only if root made it (an operator's
/// `/var/lib/tether` on another disk), not one the folder's owner could have put there.
fn open_store(store: &Path) -> rustix::io::Result<OwnedFd> {
    let link = rustix::fs::statat(CWD, store, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(link.st_mode) == FileType::Symlink && link.st_uid == 0 {
        return rustix::fs::openat(CWD, store, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty());
    }
    open_folder(CWD, store)
}

/// The folder at `path` from `dir`, if it is one and not a link to one.
fn open_folder<P: rustix::path::Arg>(dir: impl AsFd, path: P) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn give_back_in(folder: &OwnedFd, at: &Path, uid: u32, gid: u32, depth: usize) -> usize {
    let Ok(entries) = rustix::fs::Dir::read_from(folder) else { return 0 };
    let mut given = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name != c"." && name != c".." {
            given += give_back_entry(folder, name, at, uid, gid, depth);
        }
    }
    given
}

/// Gives back the entry `name` of `folder` (and, a folder, what is in it), if it is a
/// file or a folder another user owns.
fn give_back_entry(folder: &OwnedFd, name: &CStr, at: &Path, uid: u32, gid: u32, depth: usize) -> usize {
    let path = at.join(OsStr::from_bytes(name.to_bytes()));
    // A link is opened as itself, never followed.
    let opened = rustix::fs::openat(folder, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty());
    let Ok(entry) = opened else { return 0 };
    let Ok(meta) = rustix::fs::fstat(&entry) else { return 0 };
    let kind = FileType::from_raw_mode(meta.st_mode);
    match kind {
        FileType::RegularFile if meta.st_nlink == 1 => {}
        FileType::Directory => {}
        // Sockets, links, devices; and a file linked from elsewhere, which is not the
        // store's to give.
        _ => return 0,
    }
    let mut given = 0;
    if meta.st_uid != uid || meta.st_gid != gid {
        let (user, group) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match rustix::fs::chownat(&entry, c"", user, group, AtFlags::EMPTY_PATH) {
            Ok(()) => {
                tracing::debug!(file = %path.display(), uid, gid, "gave a file another user wrote back to the store's owner");
                given += 1;
            }
            // Not root: this process could not have written it as another user.
            Err(Errno::PERM) => {}
            Err(e) => tracing::warn!(
                file = %path.display(),
                error = %e,
                "could not give a file of the store back to the store's owner: chown it by hand, or the store's own user may not be able to open the store"
            ),
        }
    }
    if kind == FileType::Directory && depth > 0 {
        if let Ok(inner) = open_folder(folder, name) {
            given += give_back_in(&inner, &path, uid, gid, depth - 1);
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{chown, MetadataExt};

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

    /// A file linked into the store from elsewhere (a hard link, which its owner may
    /// make where hard links are not protected) is not the store's: given back, root's
    /// file went to the service user.
    #[test]
    fn a_file_linked_in_from_elsewhere_is_not_given_away() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(&store).unwrap();
        let system = tmp.path().join("shadow");
        fs::write(&system, b"root only").unwrap();
        fs::hard_link(&system, store.join("db")).unwrap();
        fs::write(store.join("snap.0000"), b"x").unwrap();
        let mine = fs::metadata(&system).unwrap().uid();
        if chown(&store, Some(65534), Some(65534)).is_err() {
            return; // not root: nothing to show
        }
        assert_eq!(give_back(&store), 1, "the snap only");
        assert_eq!(fs::metadata(&system).unwrap().uid(), mine, "the linked file stays its owner's");
    }

    /// The store's folder reached through a link is looked into only if root made the
    /// link: one its owner made could point anywhere.
    #[test]
    fn a_store_reached_through_a_link_is_looked_into_only_if_root_made_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("snap.0000"), b"x").unwrap();
        let link = tmp.path().join("store");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        if chown(&real, Some(65534), Some(65534)).is_err() {
            return; // not root: nothing to show
        }
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        assert_eq!(give_back(&link), 0, "a link another user made is not followed");
        assert_eq!(fs::metadata(real.join("snap.0000")).unwrap().uid(), 0);
        std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
        assert_eq!(give_back(&link), 1, "root's link is followed");
        assert_eq!(fs::metadata(real.join("snap.0000")).unwrap().uid(), 65534);
    }
}
