//! The control protocol: how the `status`, `search`, `stop`/`start`/`restart`, `reload`
//! and `wait` commands talk to a running process over its Unix control socket.
//!
//! Same framing and codec as replication, different messages: one request per
//! connection, answered by zero or more `Output` chunks and one `Done` or `Error`.
//! Output is text (JSON for status, LDIF for search), so the command-line client just
//! prints it and a long search streams instead of being held whole.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};

use crate::codec::{self, CodecError};
use crate::frame::{FrameError, FrameReader, FrameWriter};
use crate::scope::SearchSpec;

/// A command for a running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Status; `json` selects machine-readable output.
    Status {
        /// JSON instead of the human table.
        json: bool,
    },
    /// Canonical LDIF of a region (of one agreement's replica, on a consumer).
    Search {
        /// Consumer only: which agreement's replica (all when `None`).
        agreement: Option<String>,
        /// The region.
        spec: SearchSpec,
    },
    /// Consumer: stop an agreement (persisted until `Start`).
    Stop {
        /// Agreement name.
        name: String,
    },
    /// Consumer: start a stopped agreement.
    Start {
        /// Agreement name.
        name: String,
    },
    /// Consumer: restart an agreement's session now.
    Restart {
        /// Agreement name.
        name: String,
    },
    /// Re-read the configuration file.
    Reload,
    /// Consumer: answer once agreement `name`'s durable cookie has reached `csn` (read
    /// your writes: a client that wrote through the provider learns when a replica has
    /// the change on disk), or fail after `timeout_ms`. Added last so older peers still
    /// decode every earlier request.
    WaitCsn {
        /// Agreement name.
        name: String,
        /// The CSN to wait for (a provider write's acknowledgement names it).
        csn: crate::csn::Csn,
        /// Give up after this many milliseconds.
        timeout_ms: u64,
    },
    /// [`ControlRequest::Search`], printing each entry's `entryUUID` too
    /// (`search --uuids`): a backup that `load` restores with every entry's identity.
    /// Its own request, added last, so that a process older than it refuses it instead
    /// of misreading it.
    SearchWithUuids {
        /// Consumer only: which agreement's replica (all when `None`).
        agreement: Option<String>,
        /// The region.
        spec: SearchSpec,
    },
    /// [`ControlRequest::WaitCsn`], answered as soon as the change is visible: applied
    /// to the replica, so its searches return it, though perhaps not yet on disk
    /// (`wait --visible`). Read-your-writes needs no more, and it answers without the
    /// replica's flush; a consumer that crashes before that flush takes the change again
    /// from its durable cookie. Its own request, added last, so that a process older
    /// than it refuses it instead of waiting for something else.
    WaitVisible {
        /// Agreement name.
        name: String,
        /// The CSN to wait for.
        csn: crate::csn::Csn,
        /// Give up after this many milliseconds.
        timeout_ms: u64,
    },
    /// `request`, for a process of the kind `to` only. Both processes' sockets answer
    /// the same requests, so a command whose configuration names the other process's
    /// socket (a consumer's `control` or `data_dir` copied from the provider's) would
    /// otherwise reload, or show as its own, the wrong process. The command-line tools
    /// send every request so; a process answers one for the other kind with
    /// [`ControlResponse::WrongProcess`] and does nothing. Added last, so that a
    /// process older than it refuses it instead of misreading it.
    For {
        /// Which kind of process may carry the request out.
        to: Process,
        /// The request.
        request: Box<ControlRequest>,
    },
    /// [`ControlRequest::Reload`], from a command given the configuration file `file`
    /// (its canonical path). A process re-reads the file it was started with; a command
    /// given another file naming the same socket (an edited copy) was told "reloaded"
    /// while that copy was never read. The process reloads only if `file` is its own,
    /// and otherwise says which file it reads. Added last, so that a process older than
    /// it refuses it instead of misreading it ([`reload_at`] then asks as before).
    ReloadFile {
        /// The file the command was given, canonical.
        file: String,
    },
    /// `request`, from a command given the configuration file `file` (its canonical
    /// path). A copy of a configuration whose `control` (or `data_dir`) names another
    /// process's socket made `stop`, `start`, `status` and `search` act on, or show, that
    /// process while the operator believed it theirs. The process carries the request
    /// out only if `file` is the one it was started with ([`from_file`]). Added last, so
    /// that a process older than it refuses it ([`call_from`] then asks as before).
    FromFile {
        /// The file the command was given, canonical.
        file: String,
        /// The request.
        request: Box<ControlRequest>,
    },
    /// Provider: drop the position kept for consumer `consumer` of agreement
    /// `agreement`, so that it holds back no trimming and is no longer listed: a
    /// consumer decommissioned for good otherwise stayed in `status` and its metrics,
    /// lagging further behind, until a trim passed its position. Added last, so that a
    /// process older than it refuses it instead of misreading it.
    Forget {
        /// The agreement it replicated.
        agreement: String,
        /// Its consumer id (the `CONSUMER` column of `status`).
        consumer: String,
    },
    /// Provider: copy the store, consistent at one CSN, into the folder `dest` (absolute,
    /// new or empty) while it runs, so that it is backed up without a stop or a volume
    /// snapshot, and restored without its consumers reloading. Added last, so that a
    /// process older than it refuses it instead of misreading it.
    Backup {
        /// The folder to make the copy in, as an absolute path.
        dest: String,
    },
}

/// The request a process started with the file `started` carries out for `request`:
/// the request inside a [`ControlRequest::FromFile`] given that file (however it is
/// spelled), any other request as it is; `Err` naming both files for a command given
/// another one.
pub fn from_file(me: Process, started: &StartedWith, request: ControlRequest) -> Result<ControlRequest, String> {
    let ControlRequest::FromFile { file, request } = request else { return Ok(request) };
    let Some(given) = started.other(Path::new(&file)) else { return Ok(*request) };
    Err(format!(
        "this {process} was started with {started}{gone}, not {given}, whose `control` (or `data_dir`) names its \
         control socket: give -c {started} to act on it, or give {given} a `control` of its own; nothing was done",
        process = me.command(),
        started = started.path.display(),
        gone = started.gone(),
        given = given.display(),
    ))
}

/// [`call_at`] with `request` from a command given the configuration file `file`
/// ([`ControlRequest::FromFile`]), or `request` alone for a process older than it (or a
/// path that is not UTF-8, which the request cannot carry).
pub async fn call_from(
    path: &Path,
    to: Process,
    file: &Path,
    request: &ControlRequest,
    out: &mut impl std::io::Write,
) -> Result<bool, ControlError> {
    let Some(file) = canonical_text(file) else { return call_at(path, to, request, out).await };
    let from = ControlRequest::FromFile { file, request: Box::new(request.clone()) };
    call_or_older(path, to, &from, request, out).await
}

/// The configuration file a process was started with, as it tells it from the file a
/// command was given ([`ControlRequest::FromFile`], [`ControlRequest::ReloadFile`]).
#[derive(Debug, Clone)]
pub struct StartedWith {
    /// Its canonical path at start: messages name it so whatever the command's working
    /// folder, and it stays true when the file is later replaced (`sed -i`).
    path: PathBuf,
    /// Its device and inode at start, which a file moved away keeps.
    id: Option<(u64, u64)>,
}

impl StartedWith {
    /// The file `file`, as the process starts with it.
    pub fn new(file: &Path) -> Self {
        let path = std::fs::canonicalize(file).unwrap_or_else(|_| std::path::absolute(file).unwrap_or(file.into()));
        Self { id: file_id(&path), path }
    }

    /// Its canonical path at start.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `given`'s canonical path if it is another file: not this path, nor a hard link to
    /// the file there, nor (that path gone) the file itself moved elsewhere.
    fn other(&self, given: &Path) -> Option<PathBuf> {
        let given = std::fs::canonicalize(given).unwrap_or_else(|_| given.to_owned());
        if given == self.path {
            return None;
        }
        let same = match (file_id(&given), file_id(&self.path)) {
            (Some(g), Some(now)) => g == now,
            // Moved: its inode at start. Only then, since a file replaced in place frees
            // its old inode for any new file, a copy included.
            (Some(g), None) => Some(g) == self.id,
            (None, _) => false,
        };
        (!same).then_some(given)
    }

    /// What to add to its name when it is no longer at its path.
    fn gone(&self) -> &'static str {
        if self.path.exists() {
            ""
        } else {
            " (no longer there: moved or deleted since)"
        }
    }
}

/// A file's device and inode.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// `file`'s canonical path as a request carries it; `None` if it is not UTF-8.
fn canonical_text(file: &Path) -> Option<String> {
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    file.to_str().map(str::to_owned)
}

/// [`call_at`] with `newer`, or with `older` for a process of a build before `newer`'s
/// request, which says it cannot read it (builds before that message close without a
/// word).
async fn call_or_older(
    path: &Path,
    to: Process,
    newer: &ControlRequest,
    older: &ControlRequest,
    out: &mut impl std::io::Write,
) -> Result<bool, ControlError> {
    match call_at(path, to, newer, out).await {
        Err(ControlError::Remote(m)) if m.starts_with(CANNOT_READ) => call_at(path, to, older, out).await,
        Err(ControlError::Unanswered) => call_at(path, to, older, out).await,
        other => other,
    }
}

/// Why a process started with the file `started` does not reload for a command given
/// `given` ([`ControlRequest::ReloadFile`]), or `None` when they are one file.
pub fn reload_elsewhere(me: Process, started: &StartedWith, given: &str) -> Option<String> {
    started.other(Path::new(given)).map(|given| {
        format!(
            "this {process} was started with {started}{gone}, and reload re-reads that file, not {given}: edit \
             {started}, or stop the process and start it with {given}; nothing was reloaded",
            process = me.command(),
            started = started.path.display(),
            gone = started.gone(),
            given = given.display(),
        )
    })
}

/// [`call_at`] with the reload of a command given the configuration file `file`:
/// [`ControlRequest::ReloadFile`], or [`ControlRequest::Reload`] for a process older
/// than it (or a path that is not UTF-8, which the request cannot carry).
pub async fn reload_at(
    path: &Path,
    to: Process,
    file: &Path,
    out: &mut impl std::io::Write,
) -> Result<bool, ControlError> {
    let Some(file) = canonical_text(file) else { return call_at(path, to, &ControlRequest::Reload, out).await };
    call_or_older(path, to, &ControlRequest::ReloadFile { file }, &ControlRequest::Reload, out).await
}

/// The kinds of process with a control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Process {
    /// `tether-provider serve`.
    Provider,
    /// `tether-consumer run`.
    Consumer,
}

impl Process {
    /// The process's command, as operators know it.
    pub fn command(self) -> &'static str {
        match self {
            Process::Provider => "tether-provider",
            Process::Consumer => "tether-consumer",
        }
    }
}

impl ControlRequest {
    /// The command that sent the request, as its user typed it.
    pub fn command(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Search { .. } | Self::SearchWithUuids { .. } => "search",
            Self::Stop { .. } => "stop",
            Self::Start { .. } => "start",
            Self::Restart { .. } => "restart",
            Self::Reload | Self::ReloadFile { .. } => "reload",
            Self::WaitCsn { .. } | Self::WaitVisible { .. } => "wait",
            Self::Forget { .. } => "forget",
            Self::Backup { .. } => "backup",
            Self::For { request, .. } | Self::FromFile { request, .. } => request.command(),
        }
    }

    /// The request that waits for `csn` in agreement `name`: until it is visible in the
    /// replica when `visible`, else until it is durable.
    pub fn wait(name: String, csn: crate::csn::Csn, timeout_ms: u64, visible: bool) -> Self {
        if visible {
            Self::WaitVisible { name, csn, timeout_ms }
        } else {
            Self::WaitCsn { name, csn, timeout_ms }
        }
    }

    /// The search request for `spec`, with the entries' UUIDs when `uuids`.
    pub fn search(agreement: Option<String>, spec: SearchSpec, uuids: bool) -> Self {
        if uuids {
            Self::SearchWithUuids { agreement, spec }
        } else {
            Self::Search { agreement, spec }
        }
    }
}

/// The group whose members may read `status` through a process's control socket, and
/// do nothing else there (`status_group` in either process's file): a monitoring agent
/// then runs as a user of its own, where the service's user (or a sudoers rule for it)
/// could also stop agreements, reload, and read the whole directory with `search`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusGroup {
    /// The group's name, as the file gave it (or its number, for a group without one).
    pub name: String,
    /// Its id.
    pub gid: u32,
}

/// Who is at the other end of a control connection, as far as the socket lets them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The process's own user or root: every command.
    Operator,
    /// A member of the [`StatusGroup`]: `status` alone.
    Monitor(StatusGroup),
}

/// One piece of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Text to print, in order.
    Output(String),
    /// The command succeeded; nothing follows.
    Done,
    /// The command failed with this message; nothing follows.
    Error(String),
    /// The request was for another kind of process ([`ControlRequest::For`]); this one
    /// is a `Process` and did nothing. Nothing follows.
    WrongProcess(Process),
    /// How far a long command has come (`backup`'s copy), said while it runs so that the
    /// client, which waits at most [`ANSWER_WAIT`] for each part of a reply, knows it is
    /// alive. Not part of the command's output: the command-line tools print it on
    /// standard error, so a script reading the output reads the result alone. Added
    /// last, so every earlier part keeps its encoding; only requests added with it
    /// (`backup`) are answered with it, which a build that cannot decode it never sends.
    Progress(String),
}

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Framing or I/O failed.
    #[error("control connection: {0}")]
    Frame(#[from] FrameError),
    /// A message did not decode.
    #[error("control message: {0}")]
    Codec(#[from] CodecError),
    /// The process closed the connection before `Done`/`Error`.
    #[error(
        "the process closed the control connection before its reply ended, so the output is incomplete (is it \
         shutting down? it cuts off requests still running 2 s after it begins to)"
    )]
    Truncated,
    /// The process closed the connection without a word of reply: it is shutting
    /// down, or it runs a build from before the request was added (one that old
    /// cannot say so; later ones answer with an error).
    #[error(
        "the process closed the control connection without answering: it is shutting down, or it runs an older \
         build than this command, which cannot read this request"
    )]
    Unanswered,
    /// The client sent no request in time.
    #[error("no request within {0:?}")]
    NoRequest(Duration),
    /// The process said nothing for this long after the request (or never took it).
    #[error(
        "the process did not answer the request within {0:?}: it is stopped (SIGSTOP, a debugger), hung, \
         overloaded, or out of open files (its log then says `accept failed`)"
    )]
    NoAnswer(Duration),
    /// The process reported a failure.
    #[error("{0}")]
    Remote(String),
    /// A member of the status group asked for another command than `status`; it was
    /// refused, naming who may.
    #[error("{0}")]
    NotAllowed(String),
    /// The reply could not be written out (the command's standard output is on a full
    /// disk, or its reader went away).
    #[error("writing the reply to standard output: {0}")]
    Output(#[source] std::io::Error),
    /// The socket belongs to another kind of process, which did nothing.
    #[error(
        "{path} is the control socket of a running {}, not of a {}: the configuration's `control` (or \
         `data_dir`) names the other process's; nothing was done",
        is.command(),
        wanted.command()
    )]
    WrongProcess {
        /// The socket's path.
        path: String,
        /// What answered there.
        is: Process,
        /// What the command is for.
        wanted: Process,
    },
    /// The control socket exists but could not be reached.
    #[error("connecting to the control socket {path}: {cause}{hint}")]
    Connect {
        /// The socket's path.
        path: String,
        /// Why: said here, not as the error's source, which an error chain would say
        /// again after the hint.
        cause: std::io::Error,
        /// What the path holds, when that explains the refusal (a file or folder there, a
        /// socket of another user, a folder this user cannot enter).
        hint: String,
    },
}

/// Runs `request` against the process of kind `to` whose control socket is at `path`,
/// writing each output chunk to `out` (a command's standard output) and flushing it at
/// the end; `Ok(false)` when no process is listening there, so a command can fall back
/// to opening the store itself. A failed write ends the call at once with
/// [`ControlError::Output`], so the process stops producing what nobody reads. A process
/// of the other kind does nothing ([`ControlError::WrongProcess`]).
pub async fn call_at(
    path: &Path,
    to: Process,
    request: &ControlRequest,
    out: &mut impl std::io::Write,
) -> Result<bool, ControlError> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(false)
        }
        Err(cause) => {
            let hint = unreachable_hint(path, &cause);
            return Err(ControlError::Connect { path: path.display().to_string(), cause, hint });
        }
    };
    let addressed = ControlRequest::For { to, request: Box::new(request.clone()) };
    let first = call_with_progress(stream, &addressed, |text| out.write_all(text.as_bytes()), say_progress).await;
    // A process of a build from before addressing (binaries upgraded, the process not
    // restarted yet) cannot read it, and says so before any output (builds before that
    // message close without a word): ask again as such a build did, so every command it
    // knows still works on it.
    let older = match &first {
        Err(ControlError::Remote(m)) => m.starts_with(CANNOT_READ),
        Err(ControlError::Unanswered) => true,
        _ => false,
    };
    // Such a build cannot refuse a request meant for the other kind of process either:
    // its status says which kind it is.
    if older {
        if let Some(is) = older_kind(path).await.filter(|is| *is != to) {
            return Err(ControlError::WrongProcess { path: path.display().to_string(), is, wanted: to });
        }
    }
    let answered = match older {
        true => match UnixStream::connect(path).await {
            Ok(stream) => {
                call_with_progress(stream, request, |text| out.write_all(text.as_bytes()), say_progress).await
            }
            // Gone meanwhile (it was shutting down): what the first answer said.
            Err(_) => first,
        },
        false => first,
    };
    answered.map_err(|e| match e {
        ControlError::WrongProcess { is, wanted, .. } => {
            ControlError::WrongProcess { path: path.display().to_string(), is, wanted }
        }
        other => other,
    })?;
    out.flush().map_err(ControlError::Output)?;
    Ok(true)
}

/// Prints a long command's progress on standard error. A failure to is not the
/// command's: the progress only says it is alive.
fn say_progress(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Why a command may not connect to `path`, when the refusal is the kernel's (a bare
/// "Permission denied" named neither cause): something other than a socket there (a
/// file or folder another user left, which a process does not replace), or a socket of
/// another user's process (connecting needs write permission on it).
fn unreachable_hint(path: &Path, error: &std::io::Error) -> String {
    if error.kind() != std::io::ErrorKind::PermissionDenied {
        return String::new();
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => format!(
            " (the path holds a {}, not a socket: remove it; a running process makes its socket again within 2 s)",
            if meta.is_dir() { "folder" } else { "file" }
        ),
        Ok(meta) => format!(
            " (the socket belongs to user id {} and allows its owner only: run the command as the user the process \
             runs as)",
            meta.uid()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            " (this user cannot enter the socket's folder)".to_owned()
        }
        Err(_) => String::new(),
    }
}

/// Which kind of process of a build older than addressing answers at `path`, read from
/// its JSON status: only a consumer's has `"agreements":` and only a provider's
/// `"store_id":` (a key, unescaped, so no value can spell it). `None` if it cannot tell.
async fn older_kind(path: &Path) -> Option<Process> {
    let stream = UnixStream::connect(path).await.ok()?;
    let mut status = String::new();
    let request = ControlRequest::Status { json: true };
    call(stream, &request, |text| {
        status.push_str(text);
        Ok(())
    })
    .await
    .ok()?;
    if status.contains("\"agreements\":") {
        Some(Process::Consumer)
    } else if status.contains("\"store_id\":") {
        Some(Process::Provider)
    } else {
        None
    }
}

/// Pause after a failed `accept` (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning of failed `accept`s per this long: they come every
/// [`ACCEPT_BACKOFF`] for as long as the cause lasts.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a failed `accept` means for whoever waits on the socket, in words: out of file
/// descriptors (the usual cause), connections wait in the kernel's queue, and a client
/// sees only a request or handshake that times out, so the log must say why.
pub fn accept_failure(e: &std::io::Error) -> String {
    // EMFILE and ENFILE, the process's and the system's limits (Linux numbering).
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    match e.raw_os_error() {
        Some(EMFILE) => format!(
            "{e}: the process has as many files open as its limit allows; new connections wait (and time out) \
             until some close: raise the open files limit (LimitNOFILE= in a systemd unit, ulimit -Hn)"
        ),
        Some(ENFILE) => format!("{e}: the system's open files table is full; new connections wait until it is not"),
        _ => e.to_string(),
    }
}

/// How often [`serve`] looks whether its socket file is still there. An operator's
/// `rm`, a cleaner of `/tmp` or `/run`, or a `data_dir` deleted whole takes it away,
/// and every command then found nothing to talk to (and a second process would start
/// beside this one), while this process ran on out of reach.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// How long [`bind`] waits to learn whether a process answers on an existing socket.
const IN_USE_PROBE: Duration = Duration::from_secs(2);

/// Why a process could not take its control socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something other than a socket is at the path: a mistyped `control` may name a
    /// config file or a secret, which the process must never delete to make room.
    #[error("{path} exists and is not a socket; it is left as it is: does `control` name the right path?")]
    NotASocket {
        /// The path.
        path: String,
    },
    /// A live process answers there. Replacing its socket would steer that process's
    /// commands to this one (and leave it unreachable once this one exits and removes
    /// the file), so a second process copied from the same configuration is refused.
    #[error(
        "{path} is the control socket of a running process: another process's configuration names the same \
         `control` path, or this one is already running"
    )]
    InUse {
        /// The path.
        path: String,
    },
    /// The socket could not be given to the `status_group`: only root, or a member of
    /// the group, may give a file to it.
    #[error(
        "{path}: cannot give the control socket to status_group {} (gid {}): {source}; the process's user must be a \
         member of that group",
        group.name,
        group.gid
    )]
    Group {
        /// The path.
        path: String,
        /// The group.
        group: StatusGroup,
        /// Why.
        source: std::io::Error,
    },
    /// Creating the folder or the socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The socket file a process bound, removed when dropped (at the process's exit, or
/// when its start fails after the bind) if it is still that file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the socket bound.
    id: (u64, u64),
    /// A handle on the bound socket, which keeps its inode from being reused (by a
    /// socket another process binds at the path after an operator deleted this one)
    /// until the drop has compared it.
    _held: std::os::unix::net::UnixListener,
}

impl Drop for SocketFile {
    /// Removes the socket file, unless another has taken its place since.
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a process's control socket at `path` with mode 0600 (only its owner may steer
/// it), or 0660 in the `status_group`'s hands when there is one (its members may read
/// `status`: [`serve`] holds them to it), creating the folder. A socket file that a
/// previous run left behind, which no process answers on, is replaced; anything else at
/// the path is refused (see [`BindError`]).
pub async fn bind(path: &Path, status_group: Option<&StatusGroup>) -> Result<(UnixListener, SocketFile), BindError> {
    let io = |source| BindError::Io { path: path.display().to_string(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket { path: path.display().to_string() })
        }
        // Not connecting, as to a process that is stopped (SIGSTOP) with its queue of
        // waiting connections full, is a process that is there too.
        Ok(_) => match tokio::time::timeout(IN_USE_PROBE, UnixStream::connect(path)).await {
            Ok(Ok(_)) | Err(_) => return Err(BindError::InUse { path: path.display().to_string() }),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(BindError::InUse { path: path.display().to_string() })
            }
            // Left by a process that is gone.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            },
            Ok(Err(e)) => return Err(io(e)),
        },
    }
    bind_new(path, status_group)
}

/// Binds a socket at `path`, where there is none, with mode 0600, or 0660 and the
/// `status_group`'s. The file is made as the process's user and group, then handed on:
/// until then only its owner may use it.
fn bind_new(path: &Path, status_group: Option<&StatusGroup>) -> Result<(UnixListener, SocketFile), BindError> {
    let io = |source| BindError::Io { path: path.display().to_string(), source };
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    if let Some(group) = status_group {
        let given = std::os::unix::fs::chown(path, None, Some(group.gid))
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)));
        if let Err(source) = given {
            let _ = std::fs::remove_file(path);
            return Err(BindError::Group { path: path.display().to_string(), group: group.clone(), source });
        }
    }
    let made = || -> std::io::Result<_> {
        let meta = std::fs::symlink_metadata(path)?;
        let held = listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        Ok((listener, SocketFile { path: path.to_owned(), id: (meta.dev(), meta.ino()), _held: held }))
    };
    made().map_err(io)
}

/// The socket of `path` made again if its file was taken away while the process ran
/// (see [`SOCKET_CHECK`]), its folder too; `None` while it is there (`ours`, its device
/// and inode), or if it cannot be made. Something else in its place (a file, a folder,
/// another socket) is left as it is, and said, as a failure to make it is: once, by
/// `said`, until the path is the process's own again.
fn remade(
    path: &Path,
    status_group: Option<&StatusGroup>,
    ours: &mut Option<(u64, u64)>,
    said: &mut bool,
) -> Option<(UnixListener, SocketFile)> {
    let other = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Ok(meta) if Some((meta.dev(), meta.ino())) == *ours => {
            *said = false;
            return None;
        }
        // A link to this process's own socket (moved, and linked back to its path)
        // reaches it, as commands follow links: nothing to say.
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) if Some((target.dev(), target.ino())) == *ours => {
                *said = false;
                return None;
            }
            Ok(target) => Some(target.file_type().is_socket()),
            Err(_) => Some(false),
        },
        Ok(meta) => Some(meta.file_type().is_socket()),
        Err(_) => return None,
    };
    if let Some(socket) = other {
        if !std::mem::replace(said, true) {
            let what = match socket {
                true => "another socket (another process's, or one moved there)",
                false => "something other than a socket (a file, a folder, or a link to neither put there)",
            };
            tracing::warn!(
                path = %path.display(),
                "the control socket's path now holds {what}, left as it is: commands cannot reach this process \
                 there (remove it, and this process makes its socket again within 2 s)"
            );
        }
        return None;
    }
    let folder = path.parent().map_or(Ok(()), std::fs::create_dir_all);
    let made = folder
        .map_err(|source| BindError::Io { path: path.display().to_string(), source })
        .and_then(|()| bind_new(path, status_group));
    match made {
        Ok(made) => {
            *said = false;
            *ours = Some(made.1.id);
            tracing::warn!(
                path = %path.display(),
                "the control socket's file was taken away while this process ran (an rm, a cleaner, its folder \
                 deleted): made it again"
            );
            Some(made)
        }
        Err(e) => {
            if !std::mem::replace(said, true) {
                tracing::warn!(path = %path.display(), error = %e, "the control socket's file was taken away while this process ran, and it cannot be made again for now: commands cannot reach this process until it can (it tries every 2 s, and says when it made it)");
            }
            None
        }
    }
}

/// How long requests still running when shutdown begins may take to finish before they
/// are cut off. A client that sends nothing, a `search` into a pager that stopped
/// reading, a client stopped with ^Z: none of them may hold the process past its own
/// shutdown limit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accepts control connections until `shutdown` completes, running `handle` for each
/// on its own task, then gives the running ones [`SHUTDOWN_GRACE`] to finish and cuts
/// off the rest, whose clients see the connection close before the reply ends: the
/// server side every process shares; what a request does is the process's `handle`.
/// Returns how many requests were cut off, for the process to log. `handle` is told
/// who the peer is: a member of `status_group` may have `status` alone
/// ([`read_request`] holds it to that).
pub async fn serve<F, Fut>(
    listener: UnixListener,
    status_group: Option<StatusGroup>,
    shutdown: impl Future<Output = ()>,
    handle: F,
) -> usize
where
    F: Fn(UnixStream, Peer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    // When a failed `accept` was last warned of, and how many failed since.
    let mut accept_failed: (Option<std::time::Instant>, u64) = (None, 0);
    // The socket file is made by this process, so it is owned by the process's user.
    let owner = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().and_then(|path| std::fs::metadata(path).ok()))
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta));
    let mut listener = listener;
    let path = listener.local_addr().ok().and_then(|addr| addr.as_pathname().map(Path::to_owned));
    let mut ours = path.as_deref().and_then(|p| std::fs::symlink_metadata(p).ok()).map(|m| (m.dev(), m.ino()));
    // A socket made again after its file was taken away, removed when this ends.
    let mut _remade: Option<SocketFile> = None;
    let mut said = false;
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + SOCKET_CHECK, SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = check.tick(), if path.is_some() => {
                let again = path.as_deref().and_then(|path| remade(path, status_group.as_ref(), &mut ours, &mut said));
                if let Some((again, file)) = again {
                    listener = again;
                    _remade = Some(file);
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match peer(&stream, owner, status_group.as_ref()) {
                    Ok(peer) => {
                        running.spawn(handle(stream, peer));
                    }
                    Err(refusal) => {
                        running.spawn(refuse(stream, refusal));
                    }
                },
                Err(e) => {
                    let (last, failed) = &mut accept_failed;
                    *failed += 1;
                    if last.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(failed = *failed, "control socket: accept failed: {}", accept_failure(&e));
                        (*last, *failed) = (Some(std::time::Instant::now()), 0);
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    drop(listener);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async { while running.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        return 0;
    }
    let cut = running.len();
    running.shutdown().await;
    cut
}

/// Who the peer of `stream` is, or why it may not use the control socket: the socket's
/// mode (0600, or 0660 in the status group's hands) is the first guard, and a `chmod`
/// or a copied folder undoes it, so the peer's user and groups are checked too. Only the
/// process's own user (`owner`) and root may steer it; members of `status_group` may
/// read its `status`.
fn peer(stream: &UnixStream, owner: Option<u32>, status_group: Option<&StatusGroup>) -> Result<Peer, String> {
    let (Ok(cred), Some(owner)) = (stream.peer_cred(), owner) else {
        // Unknown (never on Linux): the mode alone decides, and with a status group it
        // lets its members in.
        return Ok(status_group.map_or(Peer::Operator, |g| Peer::Monitor(g.clone())));
    };
    let member = |group: &StatusGroup| {
        cred.gid() == group.gid || cred.pid().is_some_and(|pid| in_group(pid, cred.uid(), group.gid))
    };
    peer_of(cred.uid(), owner, status_group.filter(|g| member(g)), status_group)
}

/// [`peer`]'s rule, for a peer of user `uid` (a member of `member_of`, the status group,
/// when that is given) and a socket of user `owner`.
fn peer_of(
    uid: u32,
    owner: u32,
    member_of: Option<&StatusGroup>,
    status_group: Option<&StatusGroup>,
) -> Result<Peer, String> {
    if uid == owner || uid == 0 {
        return Ok(Peer::Operator);
    }
    if let Some(group) = member_of {
        return Ok(Peer::Monitor(group.clone()));
    }
    let monitors = status_group
        .map(|g| format!(", and `status` to members of group {} (gid {})", g.name, g.gid))
        .unwrap_or_default();
    Err(format!(
        "this control socket serves only its process's user (uid {owner}) and root{monitors}, not uid {uid}; nothing \
         was done"
    ))
}

/// Whether process `pid`, of user `uid`, has `gid` among its supplementary groups
/// (`/proc/PID/status`, as at the time of the call: the kernel's `SO_PEERGROUPS` has no
/// safe call). The user is checked too, so a process of another user that took the
/// peer's id after it exited is not taken for it.
fn in_group(pid: i32, uid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let field = |name: &str| {
        status.lines().find_map(|line| line.strip_prefix(name)).map(|rest| rest.split_whitespace().collect::<Vec<_>>())
    };
    // Real, effective, saved and file-system uid: the effective one connected.
    let same_user = field("Uid:").is_some_and(|ids| ids.get(1) == Some(&uid.to_string().as_str()));
    same_user && field("Groups:").is_some_and(|ids| ids.iter().any(|id| *id == gid.to_string()))
}

/// Answers a refused peer with why, after taking its request (unread: a client whose
/// request met a closed socket would see only a broken pipe).
async fn refuse(stream: UnixStream, why: String) {
    let (mut reader, mut writer) = crate::frame::split(stream);
    reader.set_max_frame(REFUSED_REQUEST);
    let answer = async {
        let _ = reader.read_frame().await;
        respond(&mut writer, &ControlResponse::Error(why)).await
    };
    let _ = tokio::time::timeout(REQUEST_WAIT, answer).await;
}

/// The most a refused peer's request may take before it is answered anyway.
const REFUSED_REQUEST: usize = 64 * 1024;

/// How long a client waits for each part of a reply: a process that accepted the
/// connection (the kernel does that for a stopped one too) but says nothing this long is
/// reported, not waited for, so a monitoring check run by cron fails instead of piling
/// up. Every reply comes in well under it: a status at once, a search a page at a time,
/// a reload once the file is read. A `wait` gets its own timeout on top.
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// How long [`call`] waits for each part of the reply to `request`.
fn answer_wait(request: &ControlRequest) -> Duration {
    match request {
        ControlRequest::For { request, .. } | ControlRequest::FromFile { request, .. } => answer_wait(request),
        ControlRequest::WaitCsn { timeout_ms, .. } | ControlRequest::WaitVisible { timeout_ms, .. } => {
            ANSWER_WAIT + Duration::from_millis(*timeout_ms)
        }
        _ => ANSWER_WAIT,
    }
}

/// Sends `request` and passes each output chunk to `on_output` until the reply ends, or
/// until `on_output` fails ([`ControlError::Output`]: the connection is dropped then).
/// A process silent for longer than [`ANSWER_WAIT`] (and a `wait`'s own timeout) ends
/// it with [`ControlError::NoAnswer`]. Progress ([`ControlResponse::Progress`]) is
/// passed over: see [`call_with_progress`].
pub async fn call<S, F>(stream: S, request: &ControlRequest, on_output: F) -> Result<(), ControlError>
where
    S: AsyncRead + AsyncWrite,
    F: FnMut(&str) -> std::io::Result<()>,
{
    call_with_progress(stream, request, on_output, |_| {}).await
}

/// [`call`], passing each line of progress the process says while it works to
/// `on_progress`.
pub async fn call_with_progress<S, F, P>(
    stream: S,
    request: &ControlRequest,
    mut on_output: F,
    mut on_progress: P,
) -> Result<(), ControlError>
where
    S: AsyncRead + AsyncWrite,
    F: FnMut(&str) -> std::io::Result<()>,
    P: FnMut(&str),
{
    let limit = answer_wait(request);
    let (mut reader, mut writer) = crate::frame::split(stream);
    tokio::time::timeout(limit, writer.write_frame(&codec::encode(request)?))
        .await
        .map_err(|_| ControlError::NoAnswer(limit))??;
    let mut answered = false;
    loop {
        let read = tokio::time::timeout(limit, reader.read_frame()).await;
        let frame = match read.map_err(|_| ControlError::NoAnswer(limit))? {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(if answered { ControlError::Truncated } else { ControlError::Unanswered }),
            // Cut off in the middle of a frame or reset: a process that stops cuts off
            // the requests still running 2 s after it began to, a long search's among
            // them, and the output printed so far is all there will be.
            Err(FrameError::Truncated { .. }) => return Err(ControlError::Truncated),
            Err(FrameError::Io(e)) if answered && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ControlError::Truncated)
            }
            Err(e) => return Err(e.into()),
        };
        answered = true;
        match codec::decode::<ControlResponse>(&frame)? {
            ControlResponse::Output(text) => on_output(&text).map_err(ControlError::Output)?,
            ControlResponse::Progress(text) => on_progress(&text),
            ControlResponse::Done => return Ok(()),
            ControlResponse::Error(message) => return Err(ControlError::Remote(message)),
            ControlResponse::WrongProcess(is) => {
                let wanted = match request {
                    ControlRequest::For { to, .. } => *to,
                    _ => is,
                };
                return Err(ControlError::WrongProcess { path: String::new(), is, wanted });
            }
        }
    }
}

/// How every build answers a request it cannot decode (one added after it), so a client
/// can tell that from any other error and fall back to what that build reads.
const CANNOT_READ: &str = "the running process cannot read this request";

/// How long a control connection may stay open without its request. The command-line
/// tools send theirs at once; a client that sends nothing would otherwise hold a task
/// and a descriptor of the process for as long as it stays connected.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// Server side: reads the one request of a control connection for process `me`, within
/// [`REQUEST_WAIT`]. A request that does not decode is answered with an error before
/// the connection closes: it is usually a command of a newer build than the running
/// process, whose user would otherwise see only a connection closed early. A request
/// for the other kind of process is answered with [`ControlResponse::WrongProcess`] and
/// returned as that error; the process does nothing with it.
pub async fn read_request<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    me: Process,
    peer: &Peer,
) -> Result<ControlRequest, ControlError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read = tokio::time::timeout(REQUEST_WAIT, reader.read_frame()).await;
    let Some(frame) = read.map_err(|_| ControlError::NoRequest(REQUEST_WAIT))?? else {
        return Err(ControlError::Truncated);
    };
    let decoded = codec::decode::<ControlRequest>(&frame);
    if let (Peer::Monitor(group), Ok(request)) = (peer, &decoded) {
        if request.command() != "status" {
            let refusal = format!(
                "members of group {} may run only `status` on this control socket; `{}` is for its process's user \
                 and root; nothing was done",
                group.name,
                request.command()
            );
            respond(writer, &ControlResponse::Error(refusal.clone())).await?;
            return Err(ControlError::NotAllowed(refusal));
        }
    }
    match decoded {
        Ok(ControlRequest::For { to, request }) if to == me => Ok(*request),
        Ok(ControlRequest::For { to, .. }) => {
            respond(writer, &ControlResponse::WrongProcess(me)).await?;
            Err(ControlError::WrongProcess { path: String::new(), is: me, wanted: to })
        }
        Ok(request) => Ok(request),
        Err(e) => {
            let message = format!(
                "{CANNOT_READ} ({e}): it probably runs an older build than this command; \
                 use the command of its build, or restart it on this one"
            );
            respond(writer, &ControlResponse::Error(message)).await?;
            Err(e.into())
        }
    }
}

/// Server side: sends one piece of the reply.
pub async fn respond<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    response: &ControlResponse,
) -> Result<(), ControlError> {
    writer.write_frame(&codec::encode(response)?).await?;
    Ok(())
}

/// Largest `Output` chunk: far under the frame limit, so an answer of any size (the LDIF
/// of a 100 000-entry replica is about 50 MiB, a page of large entries can pass the
/// frame limit too) streams instead of failing.
const OUTPUT_CHUNK: usize = 1 << 20;

/// `text` in pieces of at most `max` bytes (more only for a single longer line), cut
/// after a newline where there is one.
fn output_chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max.max(1));
        if end < rest.len() {
            // Bytes, not `str` slicing: `end` may fall inside a character; a newline
            // byte never does.
            end = match rest.as_bytes()[..end].iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => rest.find('\n').map_or(rest.len(), |nl| nl + 1),
            };
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

/// Server side: sends `text` as `Output` chunks (none when it is empty).
async fn respond_text<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, text: &str) -> Result<(), ControlError> {
    for chunk in output_chunks(text, OUTPUT_CHUNK) {
        respond(writer, &ControlResponse::Output(chunk.to_owned())).await?;
    }
    Ok(())
}

/// Server side: the whole reply of a command that succeeded, `text` then `Done`. A
/// short one leaves in one write, so a client timing the answer (`wait`) reads it in
/// one wake-up rather than two.
pub async fn respond_done<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, text: &str) -> Result<(), ControlError> {
    for chunk in output_chunks(text, OUTPUT_CHUNK) {
        writer.feed_frame(&codec::encode(&ControlResponse::Output(chunk.to_owned()))?).await?;
    }
    writer.feed_frame(&codec::encode(&ControlResponse::Done)?).await?;
    writer.flush().await?;
    Ok(())
}

/// Server side: answers with the pages `next_page` returns, each sent as it is read,
/// then `Done` when it returns `None`, or `Error` where it fails (after the pages before
/// it). So a long answer (a search of a large store) is never held whole. `next_page`
/// reads a store: it runs on a blocking thread, not on the async workers that carry
/// replication sessions.
pub async fn respond_paged<W, F>(writer: &mut FrameWriter<W>, mut next_page: F) -> Result<(), ControlError>
where
    W: AsyncWrite + Unpin,
    F: FnMut() -> Result<Option<String>, String> + Send + 'static,
{
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let page = next_page();
            (next_page, page)
        })
        .await;
        let page = match read {
            Ok((f, page)) => {
                next_page = f;
                page
            }
            Err(e) => return respond(writer, &ControlResponse::Error(format!("reading a page: {e}"))).await,
        };
        match page {
            Ok(Some(text)) => respond_text(writer, &text).await?,
            Ok(None) => return respond(writer, &ControlResponse::Done).await,
            Err(e) => return respond(writer, &ControlResponse::Error(e)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection refused by the kernel says what the path holds: a file or folder
    /// (which no process replaces), a socket of another user, or a folder this user
    /// cannot enter. Root is refused nothing, so the refusal is made up; the path is real.
    #[test]
    fn a_socket_path_that_refuses_a_connection_says_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"").unwrap();
        assert!(unreachable_hint(&file, &denied).contains("holds a file, not a socket: remove it"));
        assert!(unreachable_hint(dir.path(), &denied).contains("holds a folder, not a socket"));
        let socket = dir.path().join("real.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let hint = unreachable_hint(&socket, &denied);
        assert!(hint.contains("belongs to user id") && hint.contains("run the command as the user"), "{hint}");
        assert_eq!(unreachable_hint(&dir.path().join("gone/x.sock"), &denied), "", "nothing there to explain it");
        let other = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(unreachable_hint(&file, &other), "", "only the kernel's refusal is explained");
    }

    /// A command the kernel refuses its socket says why in the error it prints: a socket
    /// it may not write to, or a folder it cannot enter. Root is refused nothing, so the
    /// command is a child process of this test binary, which root starts without its
    /// capabilities.
    #[tokio::test]
    async fn a_connection_the_kernel_refuses_says_why_in_the_error() {
        let name = "control::tests::a_connection_the_kernel_refuses_says_why_in_the_error";
        if let Some(dir) = std::env::var_os("TETHER_REFUSED_CONNECT_CHILD") {
            let dir = Path::new(&dir);
            let cases =
                [(dir.join("closed.sock"), "the socket belongs to user id"), (dir.join("shut/x.sock"), "cannot enter")];
            for (path, says) in cases {
                let err =
                    call_at(&path, Process::Provider, &ControlRequest::Reload, &mut Vec::new()).await.unwrap_err();
                let shown = err.to_string();
                assert!(shown.contains("Permission denied") && shown.contains(says), "{shown}");
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (socket, shut) = (dir.path().join("closed.sock"), dir.path().join("shut"));
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::create_dir(&shut).unwrap();
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o000)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut child = if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--bounding-set=-all", "--inh-caps=-all"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let out = child.args(["--exact", name]).env("TETHER_REFUSED_CONNECT_CHILD", dir.path()).output().unwrap();
        std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o700)).unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.contains("1 passed"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn an_accept_out_of_files_says_what_it_means_and_what_to_do() {
        let said = accept_failure(&std::io::Error::from_raw_os_error(24));
        assert!(said.contains("as many files open as its limit allows") && said.contains("raise the open files limit"));
        let other = std::io::Error::from_raw_os_error(103);
        assert_eq!(accept_failure(&other), other.to_string());
    }

    /// Serves one paged answer over an in-memory stream; what the client got.
    async fn paged(pages: Vec<Result<Option<String>, String>>) -> (String, Result<(), ControlError>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let (mut reader, mut writer) = crate::frame::split(server);
            read_request(&mut reader, &mut writer, Process::Provider, &Peer::Operator).await.unwrap();
            let mut pages = pages.into_iter();
            respond_paged(&mut writer, move || pages.next().unwrap_or(Ok(None))).await.unwrap();
        });
        let mut out = String::new();
        let result = call(client, &ControlRequest::Reload, |text| {
            out.push_str(text);
            Ok(())
        })
        .await;
        serve.await.unwrap();
        (out, result)
    }

    /// A link at the socket's path to the process's own socket (moved aside and linked
    /// back) is its socket still, and not warned of; a link to a file is something else.
    #[tokio::test]
    async fn a_link_to_the_processs_own_socket_is_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (_listener, file) = bind_new(&path, None).unwrap();
        let (mut ours, mut said) = (Some(file.id), false);
        let moved = dir.path().join("moved.sock");
        std::fs::rename(&path, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &path).unwrap();
        assert!(remade(&path, None, &mut ours, &mut said).is_none());
        assert!(!said, "a link to the process's own socket was warned of");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.path().join("a-file"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a-file"), &path).unwrap();
        assert!(remade(&path, None, &mut ours, &mut said).is_none());
        assert!(said, "a link to a file was taken for the socket");
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink(), "the link was left as it is");
    }

    #[tokio::test]
    async fn bind_replaces_only_a_socket_no_process_answers_on_and_removes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        // A file a mistyped `control` names is neither replaced nor removed.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "precious").unwrap();
        let refused = bind(&path, None).await.unwrap_err();
        assert!(matches!(refused, BindError::NotASocket { .. }), "{refused}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();

        let (live, file) = bind(&path, None).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner may steer the process");
        // A second process with the same `control` is refused while the first answers.
        let refused = bind(&path, None).await.unwrap_err();
        assert!(refused.to_string().contains("is the control socket of a running process"), "{refused}");
        // An operator deleted the socket of a process still running, and another took
        // the path: the first one's clean-up at its exit leaves the new socket alone.
        std::fs::remove_file(&path).unwrap();
        let (_second, second_file) = bind(&path, None).await.unwrap();
        drop((live, file));
        assert!(std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()));
        drop((_second, second_file));
        assert!(!path.exists(), "a process removes its own socket");
        // A process gone without removing its socket (a crash): the next one takes the path.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        drop(bind(&path, None).await.unwrap());
        assert!(!path.exists());

        // A process that accepts nothing (stopped) and whose queue of waiting
        // connections is full still holds its socket, and the probe does not hang on it.
        let stopped = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut waiting = Vec::new();
        while let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(&path)).await {
            waiting.push(stream);
            assert!(waiting.len() < 100_000, "the queue never filled");
        }
        let refused = bind(&path, None).await.unwrap_err();
        assert!(matches!(refused, BindError::InUse { .. }), "{refused}");
        drop((stopped, waiting));
    }

    /// A command whose configuration names the other process's socket is refused by
    /// that process, which does nothing with it, and the error names the path and both
    /// processes; the right process carries it out, and a request not addressed (from a
    /// client older than addressing) is still served.
    #[tokio::test]
    async fn a_request_for_the_other_kind_of_process_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let server = tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..3 {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = crate::frame::split(stream);
                match read_request(&mut reader, &mut writer, Process::Consumer, &Peer::Operator).await {
                    Ok(request) => {
                        served.push(request);
                        respond_done(&mut writer, "done\n").await.unwrap();
                    }
                    Err(e) => assert!(matches!(e, ControlError::WrongProcess { .. }), "{e}"),
                }
            }
            served
        });
        let mut out = Vec::new();
        let refused = call_at(&path, Process::Provider, &ControlRequest::Reload, &mut out).await.unwrap_err();
        assert!(
            matches!(&refused, ControlError::WrongProcess { path: p, is: Process::Consumer, wanted: Process::Provider }
                if *p == path.display().to_string()),
            "{refused:?}"
        );
        let text = refused.to_string();
        assert!(text.contains("running tether-consumer, not of a tether-provider"), "{text}");
        assert!(text.contains("nothing was done"), "{text}");
        assert!(out.is_empty());

        assert!(call_at(&path, Process::Consumer, &ControlRequest::Reload, &mut out).await.unwrap());
        assert_eq!(out, b"done\n");
        let stream = UnixStream::connect(&path).await.unwrap();
        call(stream, &ControlRequest::Status { json: true }, |_| Ok(())).await.unwrap();
        assert_eq!(server.await.unwrap(), [ControlRequest::Reload, ControlRequest::Status { json: true }]);
    }

    /// A control socket at `path` in a folder anyone may pass through, served until the
    /// sender is dropped: each request read as [`read_request`] reads it for its peer
    /// is answered `done`.
    async fn served_to_anyone(
        path: &Path,
        status_group: Option<StatusGroup>,
    ) -> (SocketFile, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<usize>) {
        std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (listener, file) = bind(path, status_group.as_ref()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            status_group,
            async {
                let _ = stopped.await;
            },
            |stream, peer| async move {
                let (mut reader, mut writer) = crate::frame::split(stream);
                if read_request(&mut reader, &mut writer, Process::Provider, &peer).await.is_ok() {
                    let _ = respond_done(&mut writer, "done\n").await;
                }
            },
        ));
        (file, stop, server)
    }

    /// Runs the test `name` of this binary again as user 65534 with `setpriv` and the
    /// group arguments `groups`, `path` in its environment as `TETHER_PEER_CHILD`
    /// (`TETHER_PEER_OUTSIDE` too when `outside`), and checks that it passed.
    async fn passes_as_another_user(name: &str, path: &Path, groups: &[&str], outside: bool) {
        let mut command = std::process::Command::new("setpriv");
        if outside {
            command.env("TETHER_PEER_OUTSIDE", "1");
        }
        command.arg("--reuid=65534").args(groups).args(["--bounding-set=-all", "--inh-caps=-all"]);
        command.arg(std::env::current_exe().unwrap()).args(["--exact", name]).env("TETHER_PEER_CHILD", path);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("1 passed"),
            "{groups:?}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether this process is root, which alone can start a peer of another user; where
    /// it is not, the tests that need one have nothing to check.
    fn root() -> bool {
        std::fs::metadata("/proc/self").unwrap().uid() == 0
    }

    /// A peer of another user is a stranger whatever group it runs in: one in the group
    /// whose id is the owner's user id (root's group 0, the owner being root) is refused
    /// as any other.
    #[tokio::test]
    async fn a_peer_of_another_user_is_refused_whatever_its_group() {
        let name = "control::tests::a_peer_of_another_user_is_refused_whatever_its_group";
        if let Some(path) = std::env::var_os("TETHER_PEER_CHILD") {
            let err = call_at(Path::new(&path), Process::Provider, &ControlRequest::Reload, &mut Vec::new())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("serves only its process's user (uid 0) and root, not uid 65534"), "{err}");
            return;
        }
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (_file, stop, server) = served_to_anyone(&path, None).await;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        passes_as_another_user(name, &path, &["--regid=0", "--clear-groups"], false).await;
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// The group of a status group's socket (gid 4242, which needs no name).
    fn monitors() -> StatusGroup {
        StatusGroup { name: "monitors".into(), gid: 4242 }
    }

    /// A member of the status group, whether it is the peer's own group or one of its
    /// supplementary groups, reads `status` and nothing else; the socket is its group's
    /// to use (0660), and another user outside the group is refused, told who may.
    #[tokio::test]
    async fn a_member_of_the_status_group_may_read_status_and_nothing_else() {
        let name = "control::tests::a_member_of_the_status_group_may_read_status_and_nothing_else";
        if let Some(path) = std::env::var_os("TETHER_PEER_CHILD") {
            let path = Path::new(&path);
            let ask = |request: ControlRequest| async move {
                let mut out = Vec::new();
                let addressed = ControlRequest::For { to: Process::Provider, request: Box::new(request) };
                call_at(path, Process::Provider, &addressed, &mut out).await.map(|_| String::from_utf8(out).unwrap())
            };
            if std::env::var_os("TETHER_PEER_OUTSIDE").is_some() {
                let err = ask(ControlRequest::Status { json: true }).await.unwrap_err().to_string();
                assert!(
                    err.contains(
                        "its process's user (uid 0) and root, and `status` to members of group monitors (gid \
                                  4242), not uid 65534; nothing was done"
                    ),
                    "{err}"
                );
                return;
            }
            assert_eq!(ask(ControlRequest::Status { json: false }).await.unwrap(), "done\n");
            let wrapped = ControlRequest::FromFile {
                file: "/etc/p.toml".into(),
                request: Box::new(ControlRequest::Status { json: true }),
            };
            assert_eq!(ask(wrapped).await.unwrap(), "done\n");
            for refused in [
                ControlRequest::Reload,
                ControlRequest::Stop { name: "people".into() },
                ControlRequest::search(None, SearchSpec::subtree("dc=example,dc=com".parse().unwrap()), false),
                ControlRequest::wait("people".into(), crate::csn::Csn(1), 1, false),
                ControlRequest::Backup { dest: "/var/backups/tether".into() },
            ] {
                let command = refused.command();
                let err = ask(refused).await.unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!(
                        "members of group monitors may run only `status` on this control socket; `{command}` is for \
                         its process's user and root; nothing was done"
                    )
                );
            }
            return;
        }
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (_file, stop, server) = served_to_anyone(&path, Some(monitors())).await;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o660, 4242), "the group's to use");
        passes_as_another_user(name, &path, &["--regid=4242", "--clear-groups"], false).await;
        passes_as_another_user(name, &path, &["--regid=65534", "--groups=4242"], false).await;
        // Let in by the mode, which a `chmod` opened up: the check refuses it all the same.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        passes_as_another_user(name, &path, &["--regid=65534", "--groups=4243"], true).await;
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// A process whose user is not in its status group cannot give its socket to the
    /// group: the bind is refused saying so, and leaves no socket behind; a bind refused
    /// for its folder is not blamed on the group.
    #[tokio::test]
    async fn a_socket_cannot_be_given_to_a_group_its_process_is_not_in() {
        let name = "control::tests::a_socket_cannot_be_given_to_a_group_its_process_is_not_in";
        if let Some(path) = std::env::var_os("TETHER_PEER_CHILD") {
            let path = Path::new(&path);
            let err = bind(path, Some(&monitors())).await.unwrap_err().to_string();
            assert!(
                err.contains("cannot give the control socket to status_group monitors (gid 4242)")
                    && err.contains("the process's user must be a member of that group"),
                "{err}"
            );
            assert!(!path.exists(), "no socket left behind");
            // A folder it may not write in is that, not the group's refusal.
            let err = bind(Path::new("/tether-test-control.sock"), Some(&monitors())).await.unwrap_err().to_string();
            assert_eq!(err, "/tether-test-control.sock: Permission denied (os error 13)");
            return;
        }
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("control.sock");
        passes_as_another_user(name, &path, &["--regid=65534", "--clear-groups"], false).await;
    }

    /// Only the socket's own user and root may use it, whatever its mode says, and
    /// members of the status group may read `status`.
    #[tokio::test]
    async fn the_control_socket_serves_its_user_and_root_and_the_status_group_its_status() {
        assert_eq!(peer_of(1000, 1000, None, None), Ok(Peer::Operator));
        assert_eq!(peer_of(0, 1000, None, None), Ok(Peer::Operator), "root");
        let refused = peer_of(65534, 1000, None, None).expect_err("another user");
        assert!(refused.contains("(uid 1000) and root, not uid 65534"), "{refused}");
        let group = monitors();
        assert_eq!(peer_of(65534, 1000, Some(&group), Some(&group)), Ok(Peer::Monitor(group.clone())));
        assert_eq!(peer_of(1000, 1000, Some(&group), Some(&group)), Ok(Peer::Operator), "the owner in the group");
        let refused = peer_of(65534, 1000, None, Some(&group)).expect_err("outside the group");
        assert!(refused.contains("and `status` to members of group monitors (gid 4242), not uid 65534"), "{refused}");
        // A real peer: this process's own user, as the socket's owner; with a status
        // group of its own, still an operator.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap());
        let client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(peer(&server, Some(owner), None), Ok(Peer::Operator));
        assert_eq!(peer(&server, Some(owner), Some(&group)), Ok(Peer::Operator));
        drop(client);
    }

    /// A process's own supplementary groups are read from `/proc`, and a process of
    /// another user (one that took the peer's id) is not taken for the peer.
    #[test]
    fn a_process_s_groups_are_read_for_its_user_only() {
        let me = std::process::id() as i32;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let groups: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        let absent = (1..).find(|g| !groups.contains(g)).unwrap();
        assert!(!in_group(me, uid, absent));
        if let Some(&group) = groups.first() {
            assert!(in_group(me, uid, group));
            assert!(!in_group(me, uid + 1, group), "another user's process");
        }
    }

    /// A process of a build from before requests were addressed answers an addressed one
    /// as it answers any request it cannot decode; the command asks it again unaddressed,
    /// so upgrading the binaries does not take the commands away from a process still
    /// running the old one.
    #[tokio::test]
    async fn a_process_older_than_addressing_is_asked_again_unaddressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let server = tokio::spawn(older_process(listener, "{\"agreements\":[]}", 6));
        for _ in 0..2 {
            let mut out = Vec::new();
            assert!(call_at(&path, Process::Consumer, &ControlRequest::Status { json: false }, &mut out)
                .await
                .unwrap());
            assert_eq!(out, b"status\n");
        }
        let got = server.await.unwrap();
        for asked in got.chunks(3) {
            assert!(matches!(&asked[0], ControlRequest::For { to: Process::Consumer, .. }), "{got:?}");
            assert_eq!(asked[1], ControlRequest::Status { json: true }, "which kind it is");
            assert_eq!(asked[2], ControlRequest::Status { json: false });
        }
    }

    /// A process of a build older than addressing, answering `connections` requests: an
    /// addressed one as such a build does (an error the first time, a close without a
    /// word after, as the builds before that message did), a JSON status with `json`,
    /// anything else with "status". Returns the requests.
    async fn older_process(listener: UnixListener, json: &'static str, connections: usize) -> Vec<ControlRequest> {
        let mut got = Vec::new();
        for i in 0..connections {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut reader, mut writer) = crate::frame::split(stream);
            let request: ControlRequest = codec::decode(&reader.read_frame().await.unwrap().unwrap()).unwrap();
            match request {
                ControlRequest::For { .. } if i == 0 => {
                    let e = format!("{CANNOT_READ} (invalid input: invalid value: integer `9`): it probably runs ...");
                    respond(&mut writer, &ControlResponse::Error(e)).await.unwrap();
                }
                ControlRequest::For { .. } => {}
                ControlRequest::Status { json: true } => respond_done(&mut writer, json).await.unwrap(),
                _ => respond_done(&mut writer, "status\n").await.unwrap(),
            }
            got.push(request);
        }
        got
    }

    /// Such a process cannot refuse a request meant for the other kind either: its
    /// status tells the client, which then sends nothing more.
    #[tokio::test]
    async fn a_process_older_than_addressing_of_the_other_kind_is_not_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let provider = "{\"running\":true,\"store_id\":\"x\",\"sessions\":[]}";
        let server = tokio::spawn(older_process(listener, provider, 2));
        let stop = ControlRequest::Stop { name: "people".into() };
        let refused = call_at(&path, Process::Consumer, &stop, &mut Vec::new()).await.unwrap_err();
        assert!(
            matches!(&refused, ControlError::WrongProcess { is: Process::Provider, wanted: Process::Consumer, .. }),
            "{refused}"
        );
        let got = server.await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], ControlRequest::Status { json: true });
    }

    /// A process that took the request and says nothing (stopped with SIGSTOP, hung) is
    /// reported after `ANSWER_WAIT`, and a `wait` gets its own timeout on top.
    #[tokio::test(start_paused = true)]
    async fn a_process_that_does_not_answer_is_reported_not_waited_for() {
        for (request, limit) in [
            (ControlRequest::Status { json: true }, ANSWER_WAIT),
            (
                ControlRequest::WaitCsn { name: "people".into(), csn: crate::Csn(5), timeout_ms: 60_000 },
                ANSWER_WAIT + Duration::from_secs(60),
            ),
            // As `wait` sends it, addressed and with its file: its timeout still counts.
            (
                ControlRequest::For {
                    to: Process::Consumer,
                    request: Box::new(ControlRequest::FromFile {
                        file: "/etc/tether/consumer.toml".into(),
                        request: Box::new(ControlRequest::wait("people".into(), crate::Csn(5), 45_000, true)),
                    }),
                },
                ANSWER_WAIT + Duration::from_secs(45),
            ),
        ] {
            let (client, server) = tokio::io::duplex(1 << 10);
            let silent = tokio::spawn(async move {
                let (mut reader, writer) = crate::frame::split(server);
                reader.read_frame().await.unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(writer);
            });
            let started = tokio::time::Instant::now();
            let refused = call(client, &request, |_| Ok(())).await.unwrap_err();
            assert!(matches!(refused, ControlError::NoAnswer(l) if l == limit), "{refused}");
            assert_eq!(started.elapsed(), limit);
            silent.abort();
        }
    }

    /// A command names its configuration file to the process by its canonical path: the
    /// process, which judges whether it is its own, runs in another working folder (`/`
    /// under systemd), where a relative `-c consumer.toml` names another file or none,
    /// and a link is the file it points to.
    #[tokio::test]
    async fn a_command_names_its_configuration_file_by_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let config = dir.path().join("consumer.toml");
        std::fs::write(&config, "").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&config, &link).unwrap();
        // Unit tests run in the crate's folder, which holds this relative path.
        let relative = Path::new("Cargo.toml");
        let absolute = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
        let server = tokio::spawn(async move {
            let mut named = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = crate::frame::split(stream);
                match read_request(&mut reader, &mut writer, Process::Consumer, &Peer::Operator).await.unwrap() {
                    ControlRequest::FromFile { file, .. } => named.push(file),
                    other => panic!("not from a file: {other:?}"),
                }
                respond_done(&mut writer, "done\n").await.unwrap();
            }
            named
        });
        let status = ControlRequest::Status { json: true };
        for file in [relative, &link] {
            assert!(call_from(&path, Process::Consumer, file, &status, &mut Vec::new()).await.unwrap());
        }
        let canonical = std::fs::canonicalize(&config).unwrap();
        assert_eq!(server.await.unwrap(), [absolute.to_str().unwrap(), canonical.to_str().unwrap()]);
    }

    /// A process older than `ReloadFile` (one that reads `For` but not it, here) is
    /// asked the plain `Reload` it knows, so `reload` keeps working across an upgrade.
    #[tokio::test]
    async fn a_reload_a_process_cannot_read_with_its_file_is_asked_without() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = crate::frame::split(stream);
                let request: ControlRequest = codec::decode(&reader.read_frame().await.unwrap().unwrap()).unwrap();
                let inner = match &request {
                    ControlRequest::For { request, .. } => (**request).clone(),
                    other => other.clone(),
                };
                got.push(request);
                if inner == ControlRequest::Reload {
                    respond_done(&mut writer, "reloaded\n").await.unwrap();
                    return got;
                }
                let e = format!("{CANNOT_READ} (invalid input: invalid value: integer `12`): it probably runs ...");
                respond(&mut writer, &ControlResponse::Error(e)).await.unwrap();
            }
        });
        let mut out = Vec::new();
        let config = dir.path().join("consumer.toml");
        assert!(reload_at(&path, Process::Consumer, &config, &mut out).await.unwrap());
        assert_eq!(out, b"reloaded\n");
        let got = server.await.unwrap();
        let file = config.display().to_string();
        let with_file = ControlRequest::ReloadFile { file };
        assert_eq!(
            got,
            [
                ControlRequest::For { to: Process::Consumer, request: Box::new(with_file.clone()) },
                // Which kind it is (this one cannot tell).
                ControlRequest::Status { json: true },
                with_file,
                ControlRequest::For { to: Process::Consumer, request: Box::new(ControlRequest::Reload) },
            ]
        );
    }

    #[test]
    fn a_reload_for_another_file_than_the_process_s_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let (own, copy) = (dir.path().join("provider.toml"), dir.path().join("copy.toml"));
        std::fs::write(&own, "").unwrap();
        std::fs::write(&copy, "").unwrap();
        // The same file, however it is spelled.
        let spelled = dir.path().join(".").join("provider.toml");
        assert_eq!(reload_elsewhere(Process::Provider, &StartedWith::new(&own), spelled.to_str().unwrap()), None);
        let own = std::fs::canonicalize(&own).unwrap();
        let copy = std::fs::canonicalize(&copy).unwrap();
        let why = reload_elsewhere(Process::Provider, &StartedWith::new(&own), copy.to_str().unwrap()).unwrap();
        assert_eq!(
            why,
            format!(
                "this tether-provider was started with {0}, and reload re-reads that file, not {1}: edit {0}, or stop \
                 the process and start it with {1}; nothing was reloaded",
                own.display(),
                copy.display()
            )
        );
    }

    #[test]
    fn a_request_from_another_file_than_the_process_s_names_both_and_is_not_carried_out() {
        let dir = tempfile::tempdir().unwrap();
        let (own, copy) = (dir.path().join("consumer.toml"), dir.path().join("copy.toml"));
        std::fs::write(&own, "").unwrap();
        std::fs::write(&copy, "").unwrap();
        let stop = ControlRequest::Stop { name: "people".into() };
        let from = |file: &Path| ControlRequest::FromFile {
            file: file.display().to_string(),
            request: Box::new(stop.clone()),
        };
        let started = StartedWith::new(&own);
        // The same file, however it is spelled, a hard link to it, or it replaced in
        // place; a request without a file as it is.
        let spelled = dir.path().join(".").join("consumer.toml");
        assert_eq!(from_file(Process::Consumer, &started, from(&spelled)), Ok(stop.clone()));
        assert_eq!(from_file(Process::Consumer, &started, stop.clone()), Ok(stop.clone()));
        let link = dir.path().join("link.toml");
        std::fs::hard_link(&own, &link).unwrap();
        assert_eq!(from_file(Process::Consumer, &started, from(&link)), Ok(stop.clone()));
        std::fs::remove_file(&link).unwrap();
        let (own, copy) = (std::fs::canonicalize(&own).unwrap(), std::fs::canonicalize(&copy).unwrap());
        let refused = |gone: &str| {
            Err(format!(
                "this tether-consumer was started with {0}{gone}, not {1}, whose `control` (or `data_dir`) names \
                 its control socket: give -c {0} to act on it, or give {1} a `control` of its own; nothing was done",
                own.display(),
                copy.display()
            ))
        };
        assert_eq!(from_file(Process::Consumer, &started, from(&copy)), refused(""));
        std::fs::write(dir.path().join("new.toml"), "edited").unwrap();
        std::fs::rename(dir.path().join("new.toml"), &own).unwrap();
        assert_eq!(from_file(Process::Consumer, &started, from(&own)), Ok(stop.clone()), "replaced in place");
        assert_eq!(from_file(Process::Consumer, &started, from(&copy)), refused(""));
        // Moved elsewhere: the file itself is still its own; a copy still is not.
        let moved = dir.path().join("moved.toml");
        let started = StartedWith::new(&own);
        std::fs::rename(&own, &moved).unwrap();
        assert_eq!(from_file(Process::Consumer, &started, from(&moved)), Ok(stop.clone()), "moved");
        assert_eq!(
            from_file(Process::Consumer, &started, from(&copy)),
            refused(" (no longer there: moved or deleted since)")
        );
        // Started with a relative path: named by its canonical one.
        assert!(StartedWith::new(Path::new("no/such.toml")).path().is_absolute());
    }

    /// A process older than `FromFile` is asked the request alone, so every command
    /// keeps working across an upgrade; a `wait` inside one keeps its own timeout.
    #[tokio::test]
    async fn a_request_a_process_cannot_read_with_its_file_is_asked_without() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, _file) = bind(&path, None).await.unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = crate::frame::split(stream);
                let request: ControlRequest = codec::decode(&reader.read_frame().await.unwrap().unwrap()).unwrap();
                let inner = match &request {
                    ControlRequest::For { request, .. } => (**request).clone(),
                    other => other.clone(),
                };
                if matches!(inner, ControlRequest::Stop { .. }) {
                    return respond_done(&mut writer, "stopped\n").await.unwrap();
                }
                let e = format!("{CANNOT_READ} (invalid input: invalid value: integer `13`): it probably runs ...");
                respond(&mut writer, &ControlResponse::Error(e)).await.unwrap();
            }
        });
        let mut out = Vec::new();
        let stop = ControlRequest::Stop { name: "people".into() };
        let config = dir.path().join("consumer.toml");
        assert!(call_from(&path, Process::Consumer, &config, &stop, &mut out).await.unwrap());
        assert_eq!(out, b"stopped\n");
        server.await.unwrap();
        let wait = ControlRequest::wait("people".into(), crate::csn::Csn(1), 5_000, true);
        let from = ControlRequest::FromFile { file: "consumer.toml".into(), request: Box::new(wait) };
        assert_eq!(answer_wait(&from), ANSWER_WAIT + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_request_is_let_go() {
        let (_client, server) = tokio::io::duplex(1 << 10);
        let (mut reader, mut writer) = crate::frame::split(server);
        let started = tokio::time::Instant::now();
        let refused = read_request(&mut reader, &mut writer, Process::Provider, &Peer::Operator).await.unwrap_err();
        assert!(matches!(refused, ControlError::NoRequest(REQUEST_WAIT)), "{refused}");
        assert_eq!(started.elapsed(), REQUEST_WAIT);
    }

    /// Requests keep the numbers they go on the wire as (bincode writes a variant as its
    /// index): `backup`, added last, comes after every request the builds before it
    /// know, which then refuse it as unknown (the test below) rather than misread it,
    /// and its own build reads their requests as they meant them.
    #[test]
    fn a_backup_request_goes_on_the_wire_after_every_request_older_builds_know() {
        let index = |request: &ControlRequest| codec::encode(request).unwrap()[0];
        assert_eq!(index(&ControlRequest::Forget { agreement: "people".into(), consumer: "host-a".into() }), 12);
        assert_eq!(index(&ControlRequest::Backup { dest: "/var/backups/tether".into() }), 13);
    }

    /// A request added after the running build (here: a variant it has not heard of) is
    /// answered with an error saying so, not a connection closed without a word.
    #[tokio::test]
    async fn a_request_the_process_does_not_know_is_answered_with_an_error_naming_the_build() {
        let (client, server) = tokio::io::duplex(1 << 10);
        let serve = tokio::spawn(async move {
            let (mut reader, mut writer) = crate::frame::split(server);
            read_request(&mut reader, &mut writer, Process::Provider, &Peer::Operator).await
        });
        let (mut reader, mut writer) = crate::frame::split(client);
        // The variant index after every request this build knows.
        writer.write_frame(&[200]).await.unwrap();
        let refused = serve.await.unwrap().unwrap_err();
        assert!(matches!(refused, ControlError::Codec(_)), "{refused}");
        let frame = reader.read_frame().await.unwrap().expect("an answer");
        match codec::decode::<ControlResponse>(&frame).unwrap() {
            ControlResponse::Error(message) => {
                assert!(message.contains("probably runs an older build than this command"), "{message}")
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A process of a build from before `read_request` answered unknown requests closes
    /// the connection without a frame: the client says what that can mean, rather than
    /// "before its reply ended", which suggests a reply was under way.
    #[tokio::test]
    async fn a_connection_closed_without_a_reply_says_the_process_may_be_older() {
        let (client, server) = tokio::io::duplex(1 << 10);
        let serve = tokio::spawn(async move {
            let (mut reader, _writer) = crate::frame::split(server);
            reader.read_frame().await.unwrap();
        });
        let refused = call(client, &ControlRequest::Reload, |_| Ok(())).await.unwrap_err();
        serve.await.unwrap();
        assert!(matches!(refused, ControlError::Unanswered), "{refused}");
        assert!(refused.to_string().contains("runs an older build than this command"), "{refused}");
    }

    /// A long command's progress is not its output: the client hands it apart (the
    /// command-line tools print it on standard error, so a script reading a backup's
    /// output reads its result alone), in order with the output around it, and a client
    /// that does not ask for it passes over it.
    #[tokio::test]
    async fn progress_is_handed_apart_from_the_output() {
        let serve = |server: tokio::io::DuplexStream| async move {
            let (mut reader, mut writer) = crate::frame::split(server);
            reader.read_frame().await.unwrap();
            respond(&mut writer, &ControlResponse::Progress("copying: 10 keys so far\n".into())).await.unwrap();
            respond(&mut writer, &ControlResponse::Output("made\n".into())).await.unwrap();
            respond(&mut writer, &ControlResponse::Progress("copying: 20 keys so far\n".into())).await.unwrap();
            respond_done(&mut writer, "csn 7\n").await.unwrap();
        };
        let request = ControlRequest::Backup { dest: "/var/backups/tether".into() };
        let (client, server) = tokio::io::duplex(1 << 10);
        let served = tokio::spawn(serve(server));
        let said = std::cell::RefCell::new(Vec::new());
        let on_output = |t: &str| {
            said.borrow_mut().push(format!("out {t}"));
            Ok(())
        };
        call_with_progress(client, &request, on_output, |t| said.borrow_mut().push(format!("progress {t}")))
            .await
            .unwrap();
        served.await.unwrap();
        assert_eq!(
            said.into_inner(),
            ["progress copying: 10 keys so far\n", "out made\n", "progress copying: 20 keys so far\n", "out csn 7\n"]
        );

        let (client, server) = tokio::io::duplex(1 << 10);
        let served = tokio::spawn(serve(server));
        let mut out = String::new();
        call(client, &request, |t| {
            out.push_str(t);
            Ok(())
        })
        .await
        .unwrap();
        served.await.unwrap();
        assert_eq!(out, "made\ncsn 7\n");
    }

    /// Asks `status` on `client`, whose process (`serve`) sends a page "dn: a" and cuts
    /// off its answer: the command keeps the page and fails saying the output is
    /// incomplete.
    async fn said_incomplete_after_its_first_page(client: tokio::io::DuplexStream, serve: tokio::task::JoinHandle<()>) {
        let mut out = String::new();
        let cut = call(client, &ControlRequest::Status { json: false }, |t| {
            out.push_str(t);
            Ok(())
        })
        .await
        .unwrap_err();
        serve.await.unwrap();
        assert_eq!(out, "dn: a\n", "the output before the cut");
        assert!(matches!(cut, ControlError::Truncated), "{cut}");
        assert!(cut.to_string().contains("the output is incomplete"), "{cut}");
    }

    /// A process that stops cuts off a long answer (a search into a slow pipe) in the
    /// middle of a frame: the client says the output is incomplete and why it may be,
    /// not "stream ended in the middle of a frame (73088 bytes buffered)" (found by a
    /// walkthrough).
    #[tokio::test]
    async fn an_answer_cut_off_in_the_middle_of_a_frame_says_the_output_is_incomplete() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let (mut reader, mut writer) = crate::frame::split(server);
            reader.read_frame().await.unwrap();
            let page = codec::encode(&ControlResponse::Output("dn: a\n".into())).unwrap();
            writer.write_frame(&page).await.unwrap();
            // The next frame's length prefix and part of it, then the end.
            let mut raw = writer.into_inner();
            raw.write_all(&[0, 0, 1, 0, 9, 9]).await.unwrap();
            raw.shutdown().await.unwrap();
        });
        said_incomplete_after_its_first_page(client, serve).await;
    }

    /// A process cut off between two frames of its answer (after a whole page, before
    /// `Done`) leaves the output incomplete as surely as one cut off inside a frame: the
    /// command fails, rather than exiting 0 with part of a search that reads as whole.
    #[tokio::test]
    async fn an_answer_cut_off_between_frames_says_the_output_is_incomplete() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let (mut reader, mut writer) = crate::frame::split(server);
            reader.read_frame().await.unwrap();
            respond(&mut writer, &ControlResponse::Output("dn: a\n".into())).await.unwrap();
            // The end, where the next page or `Done` should be.
        });
        said_incomplete_after_its_first_page(client, serve).await;
    }

    #[tokio::test]
    async fn a_paged_answer_sends_each_page_then_ends_or_fails_where_a_page_fails() {
        let (out, result) =
            paged(vec![Ok(Some("dn: a\n".into())), Ok(Some(String::new())), Ok(Some("dn: b\n".into()))]).await;
        assert_eq!(out, "dn: a\ndn: b\n");
        assert!(result.is_ok(), "{result:?}");

        let (out, result) =
            paged(vec![Ok(Some("dn: a\n".into())), Err("store broke".into()), Ok(Some("dn: b\n".into()))]).await;
        assert_eq!(out, "dn: a\n", "the pages before the failure, none after");
        assert!(matches!(result, Err(ControlError::Remote(ref m)) if m == "store broke"), "{result:?}");
    }

    #[test]
    fn output_is_cut_after_newlines_and_keeps_every_byte() {
        let text = "dn: a\ncn: æøå\n\ndn: b\n";
        for max in [1, 3, 7, 12, 100] {
            let parts: Vec<&str> = output_chunks(text, max).collect();
            assert_eq!(parts.concat(), text, "max {max}");
            assert!(parts.iter().all(|p| p.ends_with('\n')), "max {max}: {parts:?}");
        }
        assert_eq!(output_chunks(text, 100).count(), 1);
        assert_eq!(output_chunks("", 10).count(), 0);
    }
}
