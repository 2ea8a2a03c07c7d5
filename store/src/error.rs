//! The store's error type: infrastructure failures, corruption, and refusals by the
//! directory rules, kept apart so callers can tell "your write is wrong" from "the disk is".

use tether_protocol::codec::CodecError;
use tether_protocol::Dn;

/// Why a write was refused by the directory rules. A refused write changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The addressed entry does not exist.
    #[error("no such entry: {}", .0.described())]
    NoSuchObject(Dn),
    /// An entry with that DN exists already.
    #[error("entry already exists: {0}")]
    AlreadyExists(Dn),
    /// The parent of the new DN does not exist.
    #[error("parent of {0} does not exist")]
    NoParent(Dn),
    /// Deleting or renaming an entry that has children.
    #[error("{0} has children")]
    NotAllowedOnNonLeaf(Dn),
    /// The DN is not under the store's suffix.
    #[error("{} is outside the suffix {suffix}", dn.described())]
    OutsideSuffix {
        /// The DN written to.
        dn: Dn,
        /// The store's suffix.
        suffix: Dn,
    },
    /// The request itself is invalid (attribute rules, missing objectClass, RDN values).
    #[error("invalid change to {}: {reason}", dn.described())]
    InvalidChange {
        /// The DN written to.
        dn: Dn,
        /// What is wrong.
        reason: String,
    },
}

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory rules refused a write; nothing changed, and retrying won't help.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// sled failed (I/O, or a corrupted log). The operation did not take effect.
    #[error("{}", storage_error(.0))]
    Sled(#[from] sled::Error),
    /// A stored record did not decode: the store is damaged or from another version.
    #[error("corrupt record in {tree}: {source}")]
    Codec {
        /// Which tree held it.
        tree: &'static str,
        /// The decoding failure.
        source: CodecError,
    },
    /// A stored invariant does not hold (e.g. an index points at nothing).
    #[error("store inconsistency: {0}")]
    Corrupt(String),
    /// The store on disk was created for another suffix than the configuration names.
    #[error("store was created for suffix {stored}, but the configuration says {configured}")]
    SuffixMismatch {
        /// What the store holds.
        stored: String,
        /// What the configuration asks for.
        configured: String,
    },
    /// The folder holds the other process's kind of store: a `data_dir` pointing at the
    /// other process's folder.
    #[error("{path} holds {holds}, not {wanted}: does `data_dir` name the other process's folder?")]
    WrongKind {
        /// The store's folder.
        path: String,
        /// What it holds.
        holds: &'static str,
        /// What the process opening it keeps.
        wanted: &'static str,
    },
    /// The store was written in a newer layout than this build reads: a newer Tether
    /// ran on it (see [`crate::format`]). Nothing was read or changed.
    #[error(
        "{path} holds a store of format {found}, written by a newer Tether; this build reads format {supported} \
         only and would misread it: run the newer build again, or restore a backup taken before the upgrade"
    )]
    NewerFormat {
        /// The store's folder.
        path: String,
        /// The layout the store is in.
        found: u32,
        /// The layout this build reads.
        supported: u32,
    },
    /// sled could not recover the store's files at open (it found damage, or panicked in
    /// its recovery): no open of them as they are will succeed.
    #[error("{}", unrecoverable(detail, snapshot.as_deref()))]
    Unrecoverable {
        /// What sled said when it gave up.
        detail: String,
        /// sled's snapshot file, when the damage may be in it (sled's report carries no
        /// offset in its log): it is the one file sled can do without.
        snapshot: Option<String>,
    },
    /// sled panicked at open because the process was refused a thread or memory (a
    /// limit on the user's threads, systemd's `TasksMax=`, a memory limit): the same
    /// panic as damage, from a cause that has nothing to do with the files, and that
    /// must not send an operator to a backup older than the writes the store holds.
    #[error(
        "sled could not open the store: it was refused a thread or memory ({detail}), by a limit on this \
         process (threads: `ulimit -u`, systemd `TasksMax=`; memory: `ulimit -v`, `MemoryMax=`) or a machine out \
         of either. Nothing points at the store's files: raise the limit, or free the machine, and start again"
    )]
    Resources {
        /// What sled said when it gave up.
        detail: String,
    },
    /// The folder holds sled's `conf` but its log (`db`) is missing or empty: an
    /// incomplete copy. Nothing was opened or changed.
    #[error(
        "{path} holds a store whose log {path}/db {missing}: an incomplete copy? Nothing was opened or changed: \
         restore the whole folder from the backup (or, if no store was ever used there, move the folder aside)"
    )]
    Incomplete {
        /// The store's folder.
        path: String,
        /// What is wrong with the log.
        missing: &'static str,
    },
    /// The store is held by another process (sled's file lock).
    #[error("store at {0} is in use by another process")]
    Locked(String),
    /// A replica asked for does not exist.
    #[error("no replica named {0:?}")]
    NoSuchReplica(String),
    /// A present refresh named entries this replica does not hold: it must reload in full.
    #[error("replica lacks {0} entries the provider named as unchanged")]
    MissingPresentEntries(usize),
    /// A provider sent one entry twice in a reload's scan (one entryUUID at two DNs, or
    /// one DN under two): the reload was discarded, the replica is as it was.
    #[error("the provider sent {0} in one reload; the reload is discarded and the replica kept as it was")]
    RefreshFault(String),
    /// A write grouped with others was not committed because the group's commit failed
    /// (the first write of the failed commit carries the storage error itself).
    #[error("not committed: the commit of the writes grouped with it failed ({0})")]
    GroupFailed(String),
    /// The store's files were removed, moved or replaced while the process had them open
    /// (see [`crate::failure`]): what it writes from then on is lost at its exit.
    #[error(
        "the store's files were taken away while the process ran ({0}; a restore with the process still running?): \
         what it writes now goes to a file no one will read, so it stops; start it again to open what the folder \
         holds now"
    )]
    FilesMoved(String),
    /// Syncing what sled's flush wrote to the device failed (see `crate::disk_sync`):
    /// it may not survive a power cut, and Linux may have dropped the pages it could not
    /// write, so a second sync could succeed over writes that are gone. Fatal, as sled's
    /// own I/O errors are.
    #[error("storage error: syncing {path} to the device: {error}")]
    Sync {
        /// The file or folder whose sync failed.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// A shadow reload was finished or aborted twice, or after another began.
    #[error("shadow reload of {0:?} is no longer current")]
    StaleShadow(String),
    /// A backup's destination cannot take the copy; nothing was written.
    #[error("backup destination {path} {reason}; nothing was written")]
    BackupDestination {
        /// The destination as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backup's copy could not be written (see `directory::backup::copy`): what its
    /// writer said, or how it went. What it wrote is removed.
    #[error("writing the copy: {0}")]
    CopyWriter(String),
    /// A backup was abandoned before it ended (the process is stopping); what it wrote
    /// is removed.
    #[error("the backup was abandoned before it ended (the provider is stopping); what it wrote is removed")]
    Abandoned,
}

/// What [`StoreError::Sled`] says: sled's words for a corrupt page ("Read corrupted
/// data at file offset ...") do not say that the store's files are damaged.
fn storage_error(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { .. } => {
            format!("storage error: the store's files are damaged (sled read a page that is not what it wrote: {e})")
        }
        other => format!("storage error: {other}"),
    }
}

/// What [`StoreError::Unrecoverable`] says: what failed, and the ways out, the cheap one
/// first when there is a snapshot to try it on. The path is the caller's to name
/// ("opening store PATH: ...").
fn unrecoverable(detail: &str, snapshot: Option<&str>) -> String {
    let snapshot = snapshot.map_or_else(String::new, |file| {
        format!(
            " If sled warned `corrupt snapshot file found`, move {file} out of the folder and try again: sled keeps \
             it only to open faster and rebuilds it from its log (then check `status` and `search`)."
        )
    });
    format!(
        "sled could not recover the store's files ({detail}): they are damaged. Copy the folder aside first (every \
         open lets sled rewrite it).{snapshot} Otherwise restore it from a backup (a consumer's: move it aside, and \
         each replica reloads in full)"
    )
}

impl StoreError {
    /// The kind of the I/O error the storage met (in sled, or syncing after it), when
    /// that is what this is.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            StoreError::Sled(sled::Error::Io(io)) | StoreError::Sync { error: io, .. } => Some(io.kind()),
            _ => None,
        }
    }

    /// Why opening a store failed on its file system, and what to do, when that is the
    /// cause: every open writes (sled recovers its log and writes a snapshot), reading
    /// commands' too, which the operator of a read-only or full file system does not
    /// expect. Empty otherwise.
    pub fn open_hint(&self) -> &'static str {
        use std::io::ErrorKind;
        match self.io_kind() {
            Some(ErrorKind::PermissionDenied) => {
                " (sled writes to a store as it opens it, even to read it: data_dir and every file in it must be \
                 writable by the user this runs as; a restore copied by another user, root's `cp -r` say, leaves \
                 them its own: `chown -R` them, or copy with `cp -a`)"
            }
            Some(ErrorKind::ReadOnlyFilesystem) => {
                " (sled writes to a store as it opens it, even to read it: copy the folder somewhere writable and \
                 point a copy of the configuration's data_dir at it)"
            }
            Some(ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge) => {
                " (sled writes to a store as it opens it, even to read it: free space first)"
            }
            _ => "",
        }
    }

    /// Whether retrying cannot fix this: the storage itself failed (a full disk, a file
    /// size limit, a read-only, forbidden or failing device). sled keeps such an error
    /// for the open database and returns it from every later operation (see
    /// [`crate::failure`]), so only reopening the store, in a new process once the cause
    /// is fixed, goes on. An agreement that hits it stops with the error in status
    /// instead of looping; a provider stops.
    ///
    /// sled's report of a corrupt page is fatal too ([`StoreError::is_damage`]): every
    /// read of the page fails again, and nothing but a backup brings it back.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Io(_) | sled::Error::Corruption { .. })
                | StoreError::FilesMoved(_)
                | StoreError::Sync { .. }
        )
    }

    /// Whether sled found the store's files damaged (a checksum that does not match
    /// what it read): a fault on disk, where [`StoreError::Codec`] and
    /// [`StoreError::Corrupt`] are one record's, and keep the store going.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Corruption { .. }) | StoreError::Unrecoverable { .. })
    }

    /// Whether this is a refusal by the directory rules.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            StoreError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An open that fails on a read-only or full file system says why a command that
    /// only reads met it, and the way out.
    #[test]
    fn an_open_failing_on_its_file_system_names_the_way_out() {
        let io = |kind| StoreError::Sled(sled::Error::Io(std::io::Error::from(kind)));
        assert!(io(std::io::ErrorKind::ReadOnlyFilesystem).open_hint().contains("copy the folder somewhere writable"));
        assert!(io(std::io::ErrorKind::PermissionDenied).open_hint().contains("chown -R"));
        assert!(io(std::io::ErrorKind::StorageFull).open_hint().contains("free space first"));
        assert_eq!(io(std::io::ErrorKind::ConnectionReset).open_hint(), "");
        assert_eq!(StoreError::Locked("/srv".into()).open_hint(), "");
    }

    /// A write to the empty DN (`dn:` with nothing after it) is refused naming it in
    /// words: it read "no such entry: ", as if the message were cut short.
    #[test]
    fn a_refusal_of_the_empty_dn_names_it() {
        let no_such = Refusal::NoSuchObject(Dn::root()).to_string();
        assert_eq!(no_such, "no such entry: the empty DN (the root)");
        let named = Refusal::NoSuchObject(Dn::parse("cn=a,dc=example").unwrap()).to_string();
        assert_eq!(named, "no such entry: cn=a,dc=example");
    }
}
