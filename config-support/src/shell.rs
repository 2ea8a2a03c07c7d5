//! The process shell both binaries share: logging to stderr, the Unix signals that
//! steer a running process (SIGTERM/SIGINT shut it down, SIGHUP reloads its config), the
//! open files limit a server needs raised, and serving the control socket.

use std::process::ExitCode;

use tether_protocol::control::StatusGroup;
use tokio::signal::unix::{signal, SignalKind};

use crate::log_pipe;

/// Environment variable holding the log filter (`info`, `debug`, `info,tether_consumer=debug`).
pub const LOG_ENV: &str = "TETHER_LOG";
/// The log filter when [`LOG_ENV`] is unset or invalid.
pub const DEFAULT_LOG: &str = "info";
/// Environment variable choosing the log lines' form: `text` (the default) or `json`.
pub const LOG_FORMAT_ENV: &str = "TETHER_LOG_FORMAT";

/// The form of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: `2026-12-05T05:46:54Z  WARN agreement{agreement=people ...}: ...`,
    /// whose values are not quoted and whose spans are not `key=value`, so a log
    /// shipper cannot split them reliably.
    Text,
    /// One JSON object a line, for a log shipper: `timestamp`, `level`, `message`,
    /// the event's fields beside them, and `spans`, the agreement's, the session's
    /// and the connection's fields, outermost first.
    Json,
}

impl LogFormat {
    /// `text` or `json` (any case); `Err` names what was given.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{text:?} is not a log format (text or json)")),
        }
    }
}

/// The form of the log lines, once logging started: the last line a failing process
/// writes ([`finish`]) takes it too, so that a log shipper reading JSON can read the
/// line that matters most.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The failure a process ends with, as its last line on stderr: `process: error: cause`,
/// or, with JSON logs, an object as the log's (`level` `ERROR`, `fatal` `true`).
fn last_words(process: &str, error: &str, format: LogFormat) -> String {
    match format {
        LogFormat::Text => format!("{process}: {error}"),
        LogFormat::Json => serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "ERROR",
            "message": format!("{process}: {error}"),
            "fatal": true,
        })
        .to_string(),
    }
}

/// When this process started (its logging did, the first thing `main` does): `status`
/// shows it as `started_at`, since every counter there counts from it, and a monitor
/// that sees them fall must tell a restart from a fault.
pub fn started_at() -> std::time::SystemTime {
    static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::SystemTime::now)
}

/// Logs to stderr, filtered by [`LOG_ENV`], through the [`log_pipe`], so a reader of
/// stderr that stalls or goes away costs log lines, never the server; colour only on a
/// terminal, so logs written to files stay greppable. The process must [`end_logging`]
/// before it exits, or its last lines may be lost.
pub fn init_logging() {
    started_at();
    // Unset is the default; set but unreadable is an operator's typo, said once it can
    // be (the logger is what would say it), rather than run quietly at the default.
    let (filter, refused) = match std::env::var(LOG_ENV) {
        Ok(text) => match tracing_subscriber::EnvFilter::try_new(with_store_quiet(&text)) {
            Ok(filter) => (filter, None),
            Err(e) => (tracing_subscriber::EnvFilter::new(DEFAULT_LOG), Some(format!("{text:?}: {e}"))),
        },
        Err(_) => (tracing_subscriber::EnvFilter::new(DEFAULT_LOG), None),
    };
    let (format, bad_format) = match std::env::var(LOG_FORMAT_ENV) {
        Ok(text) => LogFormat::parse(&text).map_or_else(|why| (LogFormat::Text, Some(why)), |f| (f, None)),
        Err(_) => (LogFormat::Text, None),
    };
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_target(false);
    // Without a thread of its own (the system refused one), logging writes from the
    // task that logs, as it did before the log pipe: what it cannot write is dropped.
    let _ = LOG_FORMAT.set(format);
    let pipe = log_pipe::start(format);
    match (format, pipe) {
        (LogFormat::Text, Ok(writers)) => builder.with_writer(writers).log_internal_errors(false).init(),
        (LogFormat::Text, Err(_)) => builder.with_writer(std::io::stderr).log_internal_errors(false).init(),
        (LogFormat::Json, pipe) => {
            let json = builder.json().flatten_event(true).with_current_span(false).with_span_list(true);
            match pipe {
                Ok(writers) => json.with_writer(writers).log_internal_errors(false).init(),
                Err(_) => json.with_writer(std::io::stderr).log_internal_errors(false).init(),
            }
        }
    }
    if let Some(why) = refused {
        tracing::warn!("{LOG_ENV} is not a log filter, logging at {DEFAULT_LOG:?} instead: {why}");
    }
    if let Some(why) = bad_format {
        tracing::warn!("{LOG_FORMAT_ENV}: {why}; logging as text");
    }
}

/// Writes the log lines still queued (waiting [`log_pipe::DRAIN_WAIT`] at most for a
/// stalled reader): for the end of `main`, and [`exit_now`] calls it.
pub fn end_logging() {
    log_pipe::drain();
}

/// `filter` with sled's own lines at `warn` unless it names sled: at `debug`, sled logs
/// every write of its log from its own threads (54,000 lines for a burst of 5,000
/// writes), with no session to say whose, burying the lines `debug` is asked for.
/// `TETHER_LOG=debug,sled=debug` still shows them.
fn with_store_quiet(filter: &str) -> String {
    if filter.contains("sled") {
        filter.to_owned()
    } else {
        format!("{filter},sled=warn")
    }
}

/// An event at INFO, or at DEBUG when `$quiet` holds. A tracing event's level is fixed
/// where it is written, and the routine lines of a refresh-only poll that brings nothing
/// go at DEBUG: a consumer polling every few seconds would otherwise fill both logs with
/// the same five lines forever.
#[macro_export]
macro_rules! info_or_debug {
    ($quiet:expr, $($event:tt)+) => {
        if $quiet {
            ::tracing::debug!($($event)+)
        } else {
            ::tracing::info!($($event)+)
        }
    };
}

/// An error and its causes on one line, each said once. Our error types print their
/// cause in their own message, so that a log line's `%error` is whole, and also return
/// it as their `source()`; anyhow's `{:#}` would then print every cause twice
/// ("storage error: IO error: X: IO error: X"). A cause whose text already ends the
/// line is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Logs and returns a reload's report `msg`, naming the keys it could not apply
/// (`not_applied`: those only a restart of `process` applies), as a warning then, so
/// that an operator does not take them for applied.
pub fn reload_report(mut msg: String, not_applied: &[&str], process: &str) -> String {
    if not_applied.is_empty() {
        tracing::info!("{msg}");
    } else {
        msg.push_str(&format!("; not applied until the {process} restarts: {}", not_applied.join(", ")));
        tracing::warn!("{msg}");
    }
    msg
}

/// How a control request asks the daemon's main loop to reload: the reply comes back
/// on the enclosed channel.
pub type ReloadRequests = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>;

/// Asks the main loop of `process` to re-read its configuration file, for a control
/// request: its report as a line of its own (like every other reply the shell prints),
/// or why nothing changed.
pub async fn ask_reload(requests: &ReloadRequests, process: &str) -> Result<String, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if requests.send(tx).await.is_err() {
        return Err(format!("{process} is shutting down"));
    }
    rx.await.unwrap_or_else(|_| Err("reload was abandoned".to_owned())).map(|report| format!("{report}\n"))
}

/// The exit status of a command or server whose `main` ended with `failure` (none:
/// success), the failure said on stderr as `process: error: cause: ...`. A reader of
/// standard output that stopped early (`search | head`) read what it asked for: that
/// is success. A failure ends the process at once ([`exit_now`]).
pub fn finish(process: &str, failure: Option<&(dyn std::error::Error + Send + Sync + 'static)>) -> ExitCode {
    match failure {
        Some(e) if !crate::output::reader_gone(e) => {
            // After the log lines, through their queue: the error is the last line said,
            // and a reader of stderr that stopped reading delays the exit, as it does
            // the log lines', by the drain's wait at most.
            let format = LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text);
            log_pipe::say_last(&last_words(process, &error_chain(e), format));
            exit_now(1)
        }
        _ => {
            end_logging();
            ExitCode::SUCCESS
        }
    }
}

/// Ends the process with `code` at once, standard output flushed: not by returning
/// from `main`, whose runtime would wait for blocking work still under way, which a
/// failed store can hold for ever (a flush sled never finishes), nor by running the
/// destructors left, which flush the store again.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    end_logging();
    std::process::exit(code)
}

/// Why [`config_or_running`] could not give the configuration or the running
/// process's answer.
#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    /// The file failed to load, and no process answered at the control socket it names.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The process there failed to answer, or refused the request.
    #[error(transparent)]
    Control(#[from] tether_protocol::control::ControlError),
}

/// The configuration a command for a running `process` runs with: `loaded`, or, when
/// `file` failed to load, `None` after `request` was answered by the running process all
/// the same, if the file's `data_dir` and `control` reach one
/// ([`crate::source::control_path`]), with the error as a warning on standard error.
/// The process runs on the configuration it read, and answers by it: a file being
/// edited must neither turn a monitoring check red (`status`) nor keep an operator
/// from stopping, starting or reading an agreement meanwhile; the warning says the
/// next start or reload would fail. The process checks what the request names (an
/// agreement unknown to it is refused there). If no process answers there, the
/// file's error is returned as it is.
pub async fn config_or_running<T>(
    loaded: Result<T, crate::ConfigError>,
    file: &std::path::Path,
    default_data_dir: &str,
    process: tether_protocol::control::Process,
    request: &tether_protocol::control::ControlRequest,
) -> Result<Option<T>, RunningError> {
    let error = match loaded {
        Ok(config) => return Ok(Some(config)),
        Err(error) => error,
    };
    let Some(control) = crate::source::control_path(file, default_data_dir) else {
        return Err(error.into());
    };
    // A socket path too long to connect to: no process can be listening on it, and the
    // file's error says why (the connect's own words name neither key nor limit).
    if crate::source::check_socket_path(file, "control", &control).is_err() {
        return Err(error.into());
    }
    // Given with the file, so that a copy being edited (of another process's file,
    // naming its socket) does not act on that process as its own.
    let mut out = crate::output::Stdout::lock();
    let answered = tether_protocol::control::call_from(&control, process, file, request, &mut out).await;
    drop(out);
    match answered {
        Ok(false) => return Err(error.into()),
        // What the file says is wrong comes first, without claiming that the process
        // asked for answered.
        Err(call) if !answered_by_process(&call) => {
            crate::say!("warning: {error}");
            return Err(call.into());
        }
        Err(_) | Ok(true) => {}
    }
    let command = process.command();
    let what = match request {
        tether_protocol::control::ControlRequest::Status { .. } => {
            format!("this is the status of the running {command}")
        }
        _ => format!("the running {command} answered"),
    };
    crate::say!(
        "warning: {error}; {what}, which keeps the configuration it last read (its next start or reload would refuse \
         this file)"
    );
    answered?;
    Ok(None)
}

/// Whether the process asked took part in the exchange that failed with `call` (it
/// refused the request, or cut its reply short), so that a command may say the running
/// process answered. Not so for a socket of the other kind, one this user may not reach,
/// or a process that said nothing: as `nobody`, a secret file unreadable to it was
/// warned of as "this is the status of the running tether-provider", and then the
/// socket refused it.
fn answered_by_process(call: &tether_protocol::control::ControlError) -> bool {
    use tether_protocol::control::ControlError;
    !matches!(
        call,
        ControlError::WrongProcess { .. }
            | ControlError::Connect { .. }
            | ControlError::NoAnswer(_)
            | ControlError::Unanswered
    )
}

/// Set in the environment of a command run again as the owner of its store (see
/// [`as_store_owner`]): that run must not run itself again, nor say again what the first
/// said before it.
pub const AS_STORE_OWNER: &str = "TETHER_AS_STORE_OWNER";

/// Whether this process is a command run again as the owner of its store.
pub fn is_store_owners_run() -> bool {
    std::env::var_os(AS_STORE_OWNER).is_some()
}

/// Runs this command again as the owner of `data_dir` when root runs it on a store
/// another user owns, and gives its exit status; `None` when this process is the one to
/// open the store (not root, a store of root's or none yet, or already the run again).
/// The caller ends with that status ([`exit_now`]): the run again said all there is.
///
/// The store's user may be a compromised service, and sled opens its files by path:
/// root's `status` of a stopped service followed a link its user put at `db` and wrote
/// half a megabyte of sled's log over the file the link named (found by an audit and
/// its verification: any file of the system). Run as the store's user, the command can
/// do there no more than that user could; it runs with the user's group and no other,
/// in the same folder and with the same arguments, standard streams and environment.
pub fn as_store_owner(data_dir: &std::path::Path) -> std::io::Result<Option<i32>> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    if is_store_owners_run() {
        return Ok(None);
    }
    let Some((uid, gid)) = anothers_store(data_dir) else { return Ok(None) };
    let exe = std::env::current_exe()?;
    // std drops root's supplementary groups when it sets the user.
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .uid(uid)
        .gid(gid)
        .env(AS_STORE_OWNER, "1")
        .status()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "running this command as the owner of {} (uid {uid}), as root does on another user's store: {e}",
                    data_dir.display(),
                ),
            )
        })?;
    Ok(Some(status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)))
}

/// A warning for a server that root starts on a store another user owns: a command does
/// its work there as that user ([`as_store_owner`]), but a server stays root, and sled
/// follows whatever links the store's user puts in the folder.
pub fn root_on_anothers_store(data_dir: &std::path::Path) -> Option<String> {
    let (owner, _) = anothers_store(data_dir)?;
    Some(format!(
        "running as root on a store that uid {owner} owns ({}): the store's files are opened as root, and a link its \
         user put among them would have root write where it points; run the service as that user",
        data_dir.display()
    ))
}

/// The user and group owning `data_dir`, when this process is root and they are another
/// user's: the one case in which the store's files are opened with more rights than
/// their owner has.
fn anothers_store(data_dir: &std::path::Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let folder = std::fs::metadata(data_dir).ok()?;
    (folder.uid() != 0).then(|| (folder.uid(), folder.gid()))
}

/// Makes `data_dir` (creating it) for a store that is about to be opened, and keeps it
/// to its user: the store's files are created under the umask (0644 under 022), and
/// any local user could copy them and read every entry, `userPassword` values too. A
/// folder about to hold a new store (`new`) is restricted to 0700 silently; one that
/// holds a store already is left as the operator set it, with a warning to log, and so
/// is one that holds files of its own: a `data_dir` naming a shared folder (`/var/lib`
/// for `/var/lib/tether`) was restricted, and every other user lost what it held.
pub fn private_data_dir(data_dir: &std::path::Path, new: bool) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)?;
    let mode = std::fs::metadata(data_dir)?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let shared = new && holds_files_of_its_own(data_dir)?;
    if new && !shared {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode & 0o700))?;
        return Ok(None);
    }
    let (what, way) = if shared {
        (" and holds files that are not a store's", "give the store a folder of its own, or restrict this one")
    } else {
        ("", "restrict it")
    };
    Ok(Some(format!(
        "data_dir {} is accessible by group or others (mode {mode:o}){what}: any local user can copy the store and \
         read every entry; {way} with chmod 700",
        data_dir.display()
    )))
}

/// Whether `dir` holds anything but sockets, and the `lost+found` of a volume mounted
/// there for the store: the control socket a server binds there before it makes its
/// store is the folder's own, anything else was there before.
fn holds_files_of_its_own(dir: &std::path::Path) -> std::io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let a_volumes_own = kind.is_dir() && entry.file_name() == "lost+found";
        if !kind.is_socket() && !a_volumes_own {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What is wrong with a PEM file, in words: the parser's own text shows the markers it
/// missed as lists of byte values (`[67, 69, 82, ...]` for `CERTIFICATE`), and a file
/// cut short (a renewal copied halfway) is the usual case.
pub fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match e {
        // The marker is the section's label.
        Error::MissingSectionEnd { end_marker } => {
            let label = text(end_marker);
            format!("the {label} section has no line -----END {label}-----: is the file cut short?")
        }
        Error::IllegalSectionStart { line } => format!("a section starts with the malformed line {:?}", text(line)),
        other => other.to_string(),
    }
}

/// Whether a failed TLS handshake met a peer answering in plain TCP (rustls reads its
/// bytes as a malformed record): a provider without `[tls]`, whatever the client's
/// file says. The consumer and `write` both say so in words.
pub fn answered_in_plain_tcp(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::InvalidMessage(_)))
}

/// Why a process could not take its place: its `data_dir` or its control socket.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// `data_dir` names something that is not a folder.
    #[error("{file}: key 'data_dir': {path} is not a folder")]
    NotAFolder {
        /// The configuration file.
        file: String,
        /// The path.
        path: String,
    },
    /// `data_dir` could not be made.
    #[error("{file}: key 'data_dir': creating {path}: {source}")]
    DataDir {
        /// The configuration file.
        file: String,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The control socket could not be bound. (Its cause is said in the message, and
    /// not given as its `source`, which the hint after it would have repeated.)
    #[error("binding the control socket: {error}{hint}")]
    Control {
        /// Why.
        error: tether_protocol::control::BindError,
        /// What the configuration has to do with it.
        hint: String,
    },
}

/// Binds the control socket at `control`, before the store is opened: a process that
/// cannot take its socket (another process answers on it) changes nothing. `data_dir`
/// is checked first, so that one naming a file, or a folder that cannot be made, is
/// reported as that, not as a failure to bind the socket inside it (the default
/// `control` is in `data_dir`, which binding it makes); and a socket in use inside
/// `data_dir` says that `data_dir` may name another running process's folder.
///
/// With a `status_group`, the socket is that group's to use (see
/// [`tether_protocol::control::bind`]), and a folder on the way to it that the group may
/// not pass through is warned of: its members would be refused by the file system
/// before the socket could let them in.
pub async fn take_place(
    data_dir: &std::path::Path,
    control: &std::path::Path,
    status_group: Option<&StatusGroup>,
    file: &std::path::Path,
) -> Result<(tokio::net::UnixListener, tether_protocol::control::SocketFile), PlaceError> {
    let (file_shown, path) = (file.display().to_string(), data_dir.display().to_string());
    let in_data_dir = control.parent() == Some(data_dir);
    match std::fs::metadata(data_dir) {
        Ok(meta) if !meta.is_dir() => return Err(PlaceError::NotAFolder { file: file_shown, path }),
        Ok(_) => {}
        // Made here only where binding the socket would make it anyway.
        Err(_) if in_data_dir => std::fs::create_dir_all(data_dir).map_err(|source| PlaceError::DataDir {
            file: file_shown.clone(),
            path: path.clone(),
            source,
        })?,
        Err(_) => {
            let above = data_dir.ancestors().skip(1).find(|a| a.exists());
            if let Some(above) = above.filter(|a| !a.as_os_str().is_empty() && !a.is_dir()) {
                let path = above.display().to_string();
                return Err(PlaceError::NotAFolder { file: file_shown, path });
            }
        }
    }
    let bound = tether_protocol::control::bind(control, status_group).await.map_err(|source| {
        let hint = match &source {
            tether_protocol::control::BindError::InUse { .. } if in_data_dir => format!(
                " (it is in data_dir {path}: does `data_dir` in {file_shown} name the folder of another process, \
                 which is running?)"
            ),
            _ => String::new(),
        };
        PlaceError::Control { error: source, hint }
    })?;
    if let Some(warning) = status_group.and_then(|group| kept_from(group, control, in_data_dir, &file_shown)) {
        tracing::warn!("{warning}");
    }
    Ok(bound)
}

/// Why the members of `group` cannot reach the control socket at `control` (which is
/// in `data_dir` when `in_data_dir`; `file` is the configuration naming it), if they
/// cannot: the warning a start gives, since the file system refuses them before the
/// socket can let them in.
fn kept_from(group: &StatusGroup, control: &std::path::Path, in_data_dir: bool, file: &str) -> Option<String> {
    // `data_dir` is made, and kept, its user's alone (0700), whatever it is now.
    let why = if in_data_dir {
        format!(
            "it is in data_dir, which is this process's user's alone (0700); set `control` in {file} to a path in a \
             folder they can pass (one of its own under /run: see \"Running under systemd\" in docs/operations.md)"
        )
    } else {
        let (folder, mode, gid) = closed_to(control, group.gid)?;
        let folder = folder.display();
        format!(
            "the folder {folder} (mode {mode:04o}, group {gid}) does not let them pass; give it to the group (`chgrp \
             {} {folder}; chmod g+x {folder}`), or set `control` in {file} to a path in a folder they can pass",
            group.name
        )
    };
    Some(format!(
        "the members of status_group {} cannot reach the control socket {}: {why}",
        group.name,
        control.display()
    ))
}

/// The first folder on the way to `path` that members of group `gid` may not pass
/// through (its mode and group), judged by the mode bits alone: other users' search bit,
/// or the group's where the folder is the group's. An access control list may let them
/// through all the same; this warns, it does not refuse.
fn closed_to(path: &std::path::Path, gid: u32) -> Option<(std::path::PathBuf, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut folders: Vec<_> = path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).collect();
    folders.reverse();
    folders.into_iter().find_map(|folder| {
        let meta = std::fs::metadata(folder).ok()?;
        let (mode, owner_gid) = (meta.mode() & 0o7777, meta.gid());
        let passes = mode & 0o001 != 0 || (owner_gid == gid && mode & 0o010 != 0);
        (!passes).then(|| (folder.to_owned(), mode, owner_gid))
    })
}

/// Why a command that reads a stopped `process`'s store (`status`, `search`, `wait`)
/// found none in `data_dir`: opening would create one, empty, and report it as the real
/// store, so a mistyped `data_dir` must say where it looked instead. Nothing answered on
/// `control` either, which does not mean no such process runs: one started before
/// `data_dir` was changed in the file keeps its own, and with the default `control`
/// answers on the socket in that folder.
pub fn no_store(
    process: &str,
    data_dir: &std::path::Path,
    control: &std::path::Path,
    config: &std::path::Path,
) -> String {
    // A member of the status group, whose user may not look into `data_dir`, cannot
    // tell a store from none: "no store" would send it after a mistyped folder.
    let hidden =
        std::fs::metadata(data_dir.join("db")).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    if hidden {
        return format!(
            "nothing answers on {}: the {process} is not running (or runs with another `control`), and its store in \
             {}, which this command reads then, is not for this user (uid {}) to read; run it as the {process}'s user \
             or root to see what the store holds",
            control.display(),
            data_dir.display(),
            rustix::process::geteuid().as_raw()
        );
    }
    format!(
        "nothing answers on {}, and there is no store in {}: no {process} has run with this data_dir (check \
         `data_dir` in {}; a running {process} keeps the data_dir it started with, and the control socket, until \
         it restarts)",
        control.display(),
        data_dir.display(),
        config.display()
    )
}

/// Whether this command runs as neither root nor the user whose process made the
/// socket at `control` (or, with none there, whose `data_dir` it is): a member of its
/// `status_group` reading `status`. The files the configuration names (secrets, keys)
/// are that user's, kept from others, so `status` does not check them as it does for
/// the operator: it would tell the monitor of a file it may not read at every check.
pub fn runs_as_a_monitor(control: &std::path::Path, data_dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid();
    let owner = std::fs::metadata(control).or_else(|_| std::fs::metadata(data_dir)).map(|m| m.uid());
    !me.is_root() && owner.is_ok_and(|owner| owner != me.as_raw())
}

/// The store a command's `--store DIR` (`verify`) names for it to read instead of its
/// `data_dir`: `None` without one, or when `DIR` is the `data_dir` by another path (a
/// link, `..`), which the command then treats as its own, a running process's included;
/// else `DIR` made absolute. A folder where `holds_store` finds no store is refused,
/// naming it, and nothing is made there.
pub fn other_store(
    dir: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    holds_store: impl Fn(&std::path::Path) -> bool,
) -> std::io::Result<Option<std::path::PathBuf>> {
    let Some(dir) = dir else { return Ok(None) };
    if matches!((dir.canonicalize(), data_dir.canonicalize()), (Ok(a), Ok(b)) if a == b) {
        return Ok(None);
    }
    let dir = std::path::absolute(dir)?;
    if !holds_store(&dir) {
        return Err(std::io::Error::other(format!(
            "{} holds no store (no sled `conf` and `db` there): nothing was checked",
            dir.display()
        )));
    }
    Ok(Some(dir))
}

/// Whether a process listens on `control` now: for a command that found nothing there
/// and then found the store held. A server binds its socket before it opens its store,
/// so a command run just after `serve &` or `run &` could find neither, and then the
/// store held by the server that started meanwhile: it asks the socket again rather
/// than fail, telling of a socket that answers elsewhere.
pub fn answers(control: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(control).is_ok()
}

/// What to add to "the store is in use by another process" when the command asked the
/// process on `control` first and nothing answered: the usual cause is a `control`
/// edited in the file since that process started.
///
/// Something other than a socket at `control` (a file, a folder, a link to one) is named
/// first: the running process leaves it as it is and warns in its log, and the usual
/// cause would send the operator after a changed `control` that is not there. Otherwise
/// the processes holding `data_dir` are named when /proc shows them, as a start names
/// them: the docs promise it, and "a `load`, or a changed `control`?" left the operator
/// to find which.
pub fn held_store_hint(data_dir: &std::path::Path, control: &std::path::Path, offline: &str) -> String {
    use std::os::unix::fs::FileTypeExt;
    let shown = control.display();
    match std::fs::metadata(control) {
        Ok(meta) if !meta.file_type().is_socket() => {
            let what = if meta.is_dir() { "a folder" } else { "a file" };
            format!(
                " (a process holds it, and {shown} holds {what}, not its socket: the process warned of it in its log; \
                 remove it, and the process makes its socket again within 2 s)"
            )
        }
        _ => match store_holders(data_dir) {
            holders if holders.is_empty() => format!(
                " (a process holds it but nothing answers on {shown}: {offline}, or was `control` changed since it \
                 started?)"
            ),
            holders => format!(
                " (held by {}, and nothing answers on {shown}: a command ends by itself; a server there runs with a \
                 `control` changed since it started)",
                holders.join(", ")
            ),
        },
    }
}

/// How long a starting provider or consumer waits for its store to be let go of by
/// another process: a command reading it while the process was stopped holds it for a
/// moment, and a start that failed on it left the service down. A process that holds it
/// for good (another server naming the same `data_dir`) is named after that.
pub const START_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The same for a command that opens a stopped process's store: several at once (a
/// script polling `wait` or `search`) take turns instead of failing.
pub const COMMAND_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a store is locked, for a process that wanted it: the processes holding files
/// in `data_dir` open, by pid and command line, so the operator is told which process
/// to stop instead of guessing between a `load` that ends by itself and a server that
/// never does; `otherwise` when /proc shows none (another user's process).
pub fn store_holders_hint(data_dir: &std::path::Path, otherwise: &str) -> String {
    let holders = store_holders(data_dir);
    if holders.is_empty() {
        return otherwise.to_owned();
    }
    format!(" (held by {}: stop it, or give this configuration a `data_dir` of its own)", holders.join(", "))
}

/// Why a starting provider or consumer found its store locked past
/// [`START_LOCK_WAIT`]: no command reading it takes that long, so the holder is a
/// server of another configuration file naming this `data_dir`, named if /proc shows
/// it (it does not show another user's processes).
pub fn held_at_start_hint(data_dir: &std::path::Path) -> String {
    store_holders_hint(
        data_dir,
        &format!(
            " (held for over {} s by a process of another user: a server of another configuration file naming \
             this `data_dir`, most likely)",
            START_LOCK_WAIT.as_secs()
        ),
    )
}

/// Processes other than this one with a file under `dir` open, as `process PID
/// (COMMAND LINE)`, at most four.
fn store_holders(dir: &std::path::Path) -> Vec<String> {
    const SHOWN: usize = 4;
    let mut found = Vec::new();
    let (Ok(dir), Ok(procs)) = (dir.canonicalize(), std::fs::read_dir("/proc")) else {
        return found;
    };
    let me = std::process::id();
    for process in procs.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        if pid == me || !fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(&dir))) {
            continue;
        }
        let cmdline = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
        let words: Vec<_> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).map(String::from_utf8_lossy).collect();
        found.push(format!("process {pid} ({})", words.join(" ")));
        if found.len() == SHOWN {
            break;
        }
    }
    found
}

/// Raises this process's soft limit on open files to its hard limit, and returns the
/// limit now in force (`None`: unlimited). A server holds a descriptor for each
/// connection besides its store's, and the usual soft default (1024) is what
/// `max_connections` allows by default: past it, connections fail at `accept` instead
/// of being refused with a reason, and the store could not open a file. The hard limit
/// is the administrator's word; the soft one is a default for shells. Go's runtime and
/// most servers raise it the same way at start.
///
/// # Errors
/// The limit could not be read or set.
pub fn raise_open_files_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// The fewest open files any command runs with: the runtime's own (an epoll instance
/// and its waker), the signal handlers' pipe, the three standard streams, a socket and
/// a file or two. Below it, tokio panics wherever it first runs short (building the
/// runtime, or installing a signal handler), so the limit is checked before any of it.
pub const MIN_OPEN_FILES: u64 = 16;

/// Threads a command may run at once besides tokio's workers (one per core): the main
/// thread, the log writer, tokio's blocking threads, and a store's (sled's seven I/O
/// threads and its flusher, the store's watchdog and reaper, an agreement's apply
/// thread); a running provider had 14 threads in all on 2 cores, a consumer with one
/// agreement 15.
pub const THREADS_BESIDES_WORKERS: usize = 14;

/// The stack tokio and `std` give a thread, with which each is tried: a memory limit
/// refuses stacks as it would refuse the real threads'.
const THREAD_STACK: usize = 2 << 20;

/// Starts `count` threads of `stack` bytes, all alive at once, then ends them: whether
/// the process may have that many. Tokio panics when it cannot start a worker (and,
/// having started some, hangs in the unwinding), and sled, refused its I/O threads,
/// queues its work for threads that never come, so a store's first flush hangs: a
/// limit on threads or memory too low to start would otherwise read as a hung process.
fn start_threads(count: usize, stack: usize) -> std::io::Result<()> {
    let mut started = Vec::with_capacity(count);
    let mut outcome = Ok(());
    for _ in 0..count {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("thread check".into()).stack_size(stack).spawn(move || {
            // Ends when its sender is dropped.
            let _ = released.recv();
        });
        match spawned {
            Ok(thread) => started.push((release, thread)),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    for (release, thread) in started {
        drop(release);
        let _ = thread.join();
    }
    outcome
}

/// The async runtime of the binary `process`, with its soft open files limit raised to
/// the hard one ([`raise_open_files_limit`]); or, when the limit is below
/// [`MIN_OPEN_FILES`], the process cannot start the threads it needs
/// ([`THREADS_BESIDES_WORKERS`] and a worker per core), or the runtime cannot be built,
/// an error on stderr and exit status 1 (a panic's exit status is 101, and its text
/// names tokio, not the limit).
pub fn runtime(process: &str) -> tokio::runtime::Runtime {
    match raise_open_files_limit() {
        Ok(Some(limit)) if limit < MIN_OPEN_FILES => {
            crate::say!(
                "{process}: the open files limit is {limit}, and {process} needs at least {MIN_OPEN_FILES}: \
                 raise it (`ulimit -n`, or `LimitNOFILE=` in a systemd unit)"
            );
            exit_now(1)
        }
        // A limit that cannot be read is tried as it is: building the runtime says.
        Ok(_) | Err(_) => {}
    }
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let needed = workers + THREADS_BESIDES_WORKERS;
    // This thread is one of them.
    if let Err(e) = start_threads(needed - 1, THREAD_STACK) {
        crate::say!(
            "{process}: cannot start the {needed} threads it needs ({e}): the limit on this user's processes and \
             threads (`ulimit -u`, or `TasksMax=` in a systemd unit) or on memory (`ulimit -v`, `MemoryMax=`) is \
             too low, or the machine is out of either"
        );
        exit_now(1)
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            crate::say!("{process}: cannot start its async runtime: {e}");
            exit_now(1)
        }
    }
}

/// This machine's host name (`uname`'s node name), for telling one machine from another
/// in ids and logs; empty if it is not valid UTF-8.
pub fn host_name() -> String {
    rustix::system::uname().nodename().to_str().unwrap_or_default().to_owned()
}

/// What a signal asks of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (named): say goodbye, flush, exit 0.
    Shutdown(&'static str),
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// The signals a running process listens to, installed once at start.
#[derive(Debug)]
pub struct Signals {
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
    /// SIGINT.
    int: tokio::signal::unix::Signal,
    /// SIGHUP.
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancellation-safe, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Shutdown("SIGTERM"),
            _ = self.int.recv() => Signal::Shutdown("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Serves a process's control socket until `shutdown` (see
/// [`tether_protocol::control::serve`]), and logs the requests it had to cut off then.
pub async fn serve_control<F, Fut>(
    listener: tokio::net::UnixListener,
    status_group: Option<StatusGroup>,
    shutdown: impl std::future::Future<Output = ()>,
    handle: F,
) where
    F: Fn(tokio::net::UnixStream, tether_protocol::control::Peer) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cut = tether_protocol::control::serve(listener, status_group, shutdown, handle).await;
    if cut > 0 {
        tracing::warn!(
            requests = cut,
            "control requests still running {:?} after shutdown began were cut off",
            tether_protocol::control::SHUTDOWN_GRACE
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary run again for the test `name` alone, with `env` set to `value`
    /// (which the child's half of the test reads), its standard error piped and its
    /// standard output `stdout`: for what ends a process, which a test cannot do to its
    /// own.
    fn this_test_again(
        name: &str,
        env: &str,
        value: impl AsRef<std::ffi::OsStr>,
        stdout: std::process::Stdio,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--exact", name]).env(env, value).stdout(stdout).stderr(std::process::Stdio::piped());
        command
    }

    /// A failing process's last line is in the log's form: a JSON object among JSON
    /// lines, quotes and newlines of the error escaped.
    /// The first folder on the way to a status group's socket that keeps the group out
    /// is named, with its mode and group: one others may pass, or the group's with its
    /// search bit, lets it through.
    /// `--store` naming the data_dir, however spelled, is the command's own store; another
    /// folder is taken, made absolute, only if it holds a store.
    #[test]
    fn another_store_is_taken_only_where_one_is_and_the_data_dir_is_ones_own() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let copy = tmp.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        let holds = |p: &std::path::Path| p.ends_with("copy");
        assert_eq!(other_store(None, &data, holds).unwrap(), None);
        assert_eq!(other_store(Some(&tmp.path().join("copy/../data")), &data, holds).unwrap(), None);
        assert_eq!(other_store(Some(&copy), &data, holds).unwrap(), Some(copy.clone()));
        let empty = tmp.path().join("empty");
        let e = other_store(Some(&empty), &data, holds).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{} holds no store (no sled `conf` and `db` there): nothing was checked", empty.display())
        );
        assert!(!empty.exists());
    }

    #[test]
    fn the_folder_that_keeps_a_status_group_from_its_socket_is_named() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let (outer, inner) = (tmp.path().join("run"), tmp.path().join("run/tether"));
        std::fs::create_dir_all(&inner).unwrap();
        let socket = inner.join("control.sock");
        let mode = |folder: &std::path::Path, mode: u32| {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for folder in [tmp.path(), &outer, &inner] {
            mode(folder, 0o755);
        }
        let gid = std::fs::metadata(&inner).unwrap().gid();
        let other = gid.wrapping_add(1);
        assert_eq!(closed_to(&socket, other), None, "others may pass");
        mode(&outer, 0o750);
        mode(&inner, 0o700);
        assert_eq!(closed_to(&socket, gid), Some((inner.clone(), 0o700, gid)), "the group's, without its bit");
        assert_eq!(closed_to(&socket, other), Some((outer.clone(), 0o750, gid)), "the first on the way");
        mode(&inner, 0o710);
        assert_eq!(closed_to(&socket, gid), None, "the group's, with its search bit");

        // The start's warning names the folder, or data_dir, which is always closed.
        let group = StatusGroup { name: "monitors".into(), gid: other };
        let said = kept_from(&group, &socket, false, "/etc/p.toml").expect("closed");
        assert_eq!(
            said,
            format!(
                "the members of status_group monitors cannot reach the control socket {}: the folder {} (mode 0750, \
                 group {gid}) does not let them pass; give it to the group (`chgrp monitors {}; chmod g+x {}`), or set \
                 `control` in /etc/p.toml to a path in a folder they can pass",
                socket.display(),
                outer.display(),
                outer.display(),
                outer.display()
            )
        );
        mode(&outer, 0o755);
        mode(&inner, 0o755);
        assert_eq!(kept_from(&group, &socket, false, "/etc/p.toml"), None);
        let said = kept_from(&group, &socket, true, "/etc/p.toml").expect("data_dir");
        assert!(said.contains("it is in data_dir, which is this process's user's alone (0700)"), "{said}");
    }

    #[test]
    fn the_last_words_of_a_failing_process_take_the_log_s_form() {
        let error = "key 'listen': \"127.0.0.1:x\" is not an address\nsee the docs";
        assert_eq!(last_words("tether-provider", error, LogFormat::Text), format!("tether-provider: {error}"));
        let json: serde_json::Value =
            serde_json::from_str(&last_words("tether-provider", error, LogFormat::Json)).unwrap();
        assert_eq!(json["level"], "ERROR");
        assert_eq!(json["fatal"], true);
        assert_eq!(json["message"], format!("tether-provider: {error}"));
        assert!(json["timestamp"].is_string());
    }

    /// Root serving a store another user owns is warned of, naming the owner; its own
    /// store, or anyone else's start, is not.
    #[test]
    fn root_serving_another_users_store_is_warned_of() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(root_on_anothers_store(tmp.path()), None, "this process's own folder");
        if std::os::unix::fs::chown(tmp.path(), Some(65534), Some(65534)).is_err() {
            return; // not root: nothing to warn of
        }
        let said = root_on_anothers_store(tmp.path()).expect("a warning");
        assert!(said.contains("uid 65534 owns") && said.contains("run the service as that user"), "{said}");
    }

    #[test]
    fn the_log_format_is_text_or_json_and_anything_else_is_named() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(" JSON "), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(""), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse("logfmt"), Err("\"logfmt\" is not a log format (text or json)".to_owned()));
    }

    /// A file or folder at the control socket's path is named, not taken for a changed
    /// `control`; a path with nothing there keeps the usual hint.
    #[test]
    fn a_held_store_with_something_else_at_the_socket_path_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let usual = held_store_hint(dir.path(), &control, "is another command reading it");
        assert!(usual.contains("is another command reading it, or was `control` changed"), "{usual}");
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("notes.txt"), &control).unwrap();
        let file = held_store_hint(dir.path(), &control, "is another command reading it");
        assert!(file.contains("holds a file, not its socket") && file.contains("remove it"), "{file}");
        std::fs::remove_file(&control).unwrap();
        std::fs::create_dir(&control).unwrap();
        assert!(held_store_hint(dir.path(), &control, "x").contains("holds a folder"));
    }

    /// Threads the process may have pass; a refused one is reported. A stack larger
    /// than the address space stands in for a limit (as root, `ulimit -u` does not
    /// bind, and a memory limit would bind the test process itself).
    #[test]
    fn threads_that_cannot_start_are_reported() {
        assert!(start_threads(4, THREAD_STACK).is_ok());
        assert!(start_threads(0, 1 << 46).is_ok(), "none asked for, none refused");
        assert!(start_threads(4, 1 << 46).is_err());
    }

    #[test]
    fn sled_is_kept_to_warnings_unless_the_filter_names_it() {
        assert_eq!(with_store_quiet("debug"), "debug,sled=warn");
        assert_eq!(with_store_quiet("info,tether_provider=debug"), "info,tether_provider=debug,sled=warn");
        assert_eq!(with_store_quiet("debug,sled=debug"), "debug,sled=debug");
        assert!(tracing_subscriber::EnvFilter::try_new(with_store_quiet("debug")).is_ok());
    }

    /// A `data_dir` that is a file, or below one, is named as the key at fault; a
    /// socket in use inside `data_dir` says the folder may be another process's.
    #[tokio::test]
    async fn a_bad_data_dir_is_named_before_the_control_socket_is_bound() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("consumer.toml");
        let afile = root.path().join("afile");
        std::fs::write(&afile, "").unwrap();
        let err = take_place(&afile, &afile.join("control.sock"), None, &file).await.unwrap_err().to_string();
        assert_eq!(err, format!("{}: key 'data_dir': {} is not a folder", file.display(), afile.display()));
        let below = afile.join("data");
        let err = take_place(&below, &below.join("control.sock"), None, &file).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: key 'data_dir': creating {}: ", file.display(), below.display())),
            "{err}"
        );

        let data = root.path().join("data");
        let (_listener, _socket) = take_place(&data, &data.join("control.sock"), None, &file).await.unwrap();
        let err = error_chain(&take_place(&data, &data.join("control.sock"), None, &file).await.unwrap_err());
        assert_eq!(err.matches("is the control socket of a running").count(), 1, "said once: {err}");
        assert!(
            err.starts_with("binding the control socket: ") && err.contains("is the control socket of a running"),
            "{err}"
        );
        assert!(
            err.contains(&format!("does `data_dir` in {} name the folder of another process", file.display())),
            "{err}"
        );
        // A `control` of its own elsewhere: the folder is not suspected, nor made.
        let elsewhere = root.path().join("elsewhere");
        let err = take_place(&elsewhere, &data.join("control.sock"), None, &file).await.unwrap_err().to_string();
        assert!(!err.contains("data_dir"), "{err}");
        assert!(!elsewhere.exists(), "a refused start makes nothing");
        // Below a file, with the socket elsewhere: the file is named.
        let err =
            take_place(&afile.join("x/y"), &root.path().join("c.sock"), None, &file).await.unwrap_err().to_string();
        assert_eq!(err, format!("{}: key 'data_dir': {} is not a folder", file.display(), afile.display()));
    }

    /// A file naming a socket too long to connect to is refused by `status` with the
    /// file's own error (naming the key and the limit), not the connect's words.
    #[tokio::test]
    async fn status_of_a_file_whose_socket_path_is_too_long_says_the_file_s_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("consumer.toml");
        let long = root.path().join("d".repeat(120));
        std::fs::write(&file, format!("data_dir = {:?}\n", long.display().to_string())).unwrap();
        let loaded = crate::source::check_socket_path(&file, "control", &long.join("control.sock"));
        let process = tether_protocol::control::Process::Consumer;
        let err = config_or_running(
            loaded,
            &file,
            "data",
            process,
            &tether_protocol::control::ControlRequest::Status { json: false },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("key 'control': socket path ") && err.contains("Unix sockets allow at most 107"), "{err}");
    }

    /// A command whose file has an error says the running process answered only if it
    /// took part: it refused the request or cut its reply short.
    #[test]
    fn only_a_process_that_took_part_is_said_to_have_answered() {
        use tether_protocol::control::{ControlError, Process};
        let refused = std::io::Error::from_raw_os_error(13);
        let silent = [
            ControlError::WrongProcess { path: "c.sock".into(), is: Process::Provider, wanted: Process::Consumer },
            ControlError::Connect { path: "c.sock".into(), cause: refused, hint: String::new() },
            ControlError::NoAnswer(std::time::Duration::from_secs(30)),
            ControlError::Unanswered,
        ];
        for call in &silent {
            assert!(!answered_by_process(call), "{call}");
        }
        for call in [ControlError::Remote("no agreement named \"x\"".into()), ControlError::Truncated] {
            assert!(answered_by_process(&call), "{call}");
        }
    }

    /// A folder for a new store is kept to its user; one holding a store already is
    /// left as it is, with a warning.
    #[test]
    fn a_data_dir_is_kept_to_its_user() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = root.path().join("a/data");
        assert_eq!(private_data_dir(&fresh, true).unwrap(), None);
        assert_eq!(mode(&fresh), 0o700);
        let held = root.path().join("held");
        std::fs::create_dir(&held).unwrap();
        std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = private_data_dir(&held, false).unwrap().expect("a warning");
        assert!(warning.contains("(mode 755)") && warning.contains("chmod 700"), "{warning}");
        assert_eq!(mode(&held), 0o755, "left as the operator set it");
        std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(private_data_dir(&held, false).unwrap(), None);
    }

    /// A folder that holds files of its own is no new store's (a `data_dir` naming a
    /// shared folder, `/var/lib` for `/var/lib/tether`): it is left as it is, with a
    /// warning, where it was restricted to 0700 and every other user lost what it held.
    /// The control socket, which a server binds there before it makes its store, is no
    /// such file, nor the `lost+found` of a volume mounted there.
    #[test]
    fn a_data_dir_holding_files_of_its_own_is_left_as_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(shared.join("other-service.conf"), "x").unwrap();
        let warning = private_data_dir(&shared, true).unwrap().expect("a warning");
        assert!(warning.contains("(mode 755)") && warning.contains("a folder of its own"), "{warning}");
        assert_eq!(mode(&shared), 0o755, "left as it was");

        let own = root.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(own.join("control.sock")).unwrap();
        std::fs::create_dir(own.join("lost+found")).unwrap();
        assert_eq!(private_data_dir(&own, true).unwrap(), None);
        assert_eq!(mode(&own), 0o700);
    }

    /// A folder its group alone may enter is as open as one anyone may: its group can
    /// copy the store and read every entry. A new store's is restricted to 0700, and one
    /// that holds a store is warned of and left as it is.
    #[test]
    fn a_data_dir_its_group_alone_may_enter_is_restricted_or_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = root.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(private_data_dir(&fresh, true).unwrap(), None);
        assert_eq!(mode(&fresh), 0o700, "mode {:o}", mode(&fresh));
        let held = root.path().join("held");
        std::fs::create_dir(&held).unwrap();
        std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o750)).unwrap();
        let warning = private_data_dir(&held, false).unwrap().expect("a warning");
        assert!(warning.contains("(mode 750)") && warning.contains("chmod 700"), "{warning}");
        assert_eq!(mode(&held), 0o750, "left as the operator set it");
    }

    /// A folder that holds a store already is the store's: the files in it are the
    /// store's own, not another user's, and the warning says to restrict the folder, as
    /// the docs give it, not to give the store a folder of its own.
    #[test]
    fn a_data_dir_holding_a_store_is_warned_of_as_the_store_s_own() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let held = root.path().join("held");
        std::fs::create_dir(&held).unwrap();
        for file in ["conf", "db", "snap.0000000000000060"] {
            std::fs::write(held.join(file), b"x").unwrap();
        }
        std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = private_data_dir(&held, false).unwrap().expect("a warning");
        assert!(
            warning.ends_with(
                "(mode 755): any local user can copy the store and read every entry; restrict it with chmod 700"
            ),
            "{warning}"
        );
    }

    /// A shared folder that holds only folders (`/var/lib` holds little else: one for
    /// each service) is no new store's either: of the folders in it, only a volume's
    /// `lost+found` is the store's own, and restricting the folder would lock every
    /// other service out of its own.
    #[test]
    fn a_data_dir_holding_only_folders_of_other_services_is_left_as_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("lib");
        std::fs::create_dir_all(shared.join("postgresql")).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = private_data_dir(&shared, true).unwrap().expect("a warning");
        assert!(warning.contains("(mode 755)") && warning.contains("a folder of its own"), "{warning}");
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "left as it was");
    }

    /// Root's command on a store another user owns runs again as that user, and in that
    /// user's group, not root's: it can do there no more than the store's user could.
    /// The user and group differ here, so that one taken for the other shows. This test
    /// runs itself in a child of this test binary (as root, and alone, so that the run
    /// again runs this test alone too); the run again says the ids it has by its exit
    /// status and on standard error, which the child passes on.
    #[test]
    fn root_runs_a_command_again_as_the_store_s_user_and_in_its_group() {
        use std::os::unix::fs::chown;
        const NAME: &str = "shell::tests::root_runs_a_command_again_as_the_store_s_user_and_in_its_group";
        const CHILD: &str = "TETHER_AS_OWNER_CHILD";
        let (user, group) = (65534, 65533);
        if is_store_owners_run() {
            let uid = rustix::process::geteuid().as_raw();
            let gid = rustix::process::getegid().as_raw();
            crate::say!("run again as uid {uid}, gid {gid}");
            std::process::exit(if (uid, gid) == (user, group) { 0 } else { 3 });
        }
        if let Some(store) = std::env::var_os(CHILD) {
            let code = as_store_owner(std::path::Path::new(&store)).unwrap().expect("run again");
            std::process::exit(code);
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir(&store).unwrap();
        if chown(&store, Some(user), Some(group)).is_err() {
            return; // not root: nothing is run again
        }
        let child = this_test_again(NAME, CHILD, &store, std::process::Stdio::null()).output().unwrap();
        let said = String::from_utf8_lossy(&child.stderr);
        assert!(said.contains("run again as uid"), "{said}");
        assert_eq!(child.status.code(), Some(0), "{said}");
    }

    /// A process that ends with success writes every log line queued before it ends (its
    /// last, "provider stopped", above all), though the writer thread is behind: more
    /// lines than a pipe holds, which the writer writes only as this test reads them.
    /// Run in a child process of this test binary, whose standard error the test reads.
    #[test]
    fn a_process_ending_with_success_writes_every_log_line_queued_first() {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        const LINES: usize = 5_000;
        if std::env::var_os("TETHER_CLEAN_EXIT_CHILD").is_some() {
            let writers = log_pipe::start(LogFormat::Text).unwrap();
            for i in 0..LINES {
                writeln!(writers.make_writer(), "line {i} {}", "x".repeat(100)).unwrap();
            }
            writeln!(writers.make_writer(), "provider stopped").unwrap();
            let _ = finish("tether-test", None);
            // As `main` returning `finish`'s status does.
            std::process::exit(0);
        }
        let child = this_test_again(
            "shell::tests::a_process_ending_with_success_writes_every_log_line_queued_first",
            "TETHER_CLEAN_EXIT_CHILD",
            "1",
            std::process::Stdio::null(),
        )
        .output()
        .unwrap();
        assert!(child.status.success(), "{}", child.status);
        let said = String::from_utf8(child.stderr).unwrap();
        let lines: Vec<&str> = said.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(lines.len(), LINES, "log lines written before the exit");
        assert!(said.ends_with("provider stopped\n"), "{:?}", &said[said.len().saturating_sub(200)..]);
    }

    /// A failing process whose log lines were dropped (its standard error read too
    /// slowly) says so before its last words, the count of the gap with them: the lines
    /// lost are those that led up to the failure. The child, a run of this test binary,
    /// queues more lines than the queue holds while this test does not read its standard
    /// error yet, says on standard output that it did, and fails; only then is its
    /// standard error read.
    #[test]
    fn lines_dropped_before_a_failing_process_s_last_words_are_said_with_them() {
        use std::io::{BufRead as _, Read as _, Write as _};
        use tracing_subscriber::fmt::MakeWriter as _;
        if std::env::var_os("TETHER_DROPPED_BEFORE_LAST_CHILD").is_some() {
            let writers = log_pipe::start(LogFormat::Text).unwrap();
            for i in 0..log_pipe::QUEUE_LINES * 2 {
                writeln!(writers.make_writer(), "line {i} {}", "x".repeat(100)).unwrap();
            }
            // Past the test harness's capture, which `println!` would go to.
            let mut stdout = std::io::stdout();
            stdout.write_all(b"queued\n").and_then(|()| stdout.flush()).unwrap();
            finish("tether-test", Some(&std::io::Error::other("the store failed")));
            unreachable!("finish exits on a failure");
        }
        let mut child = this_test_again(
            "shell::tests::lines_dropped_before_a_failing_process_s_last_words_are_said_with_them",
            "TETHER_DROPPED_BEFORE_LAST_CHILD",
            "1",
            std::process::Stdio::piped(),
        )
        .spawn()
        .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("queued") {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended before it queued its lines");
        }
        let mut said = String::new();
        child.stderr.take().unwrap().read_to_string(&mut said).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(1));
        let last: Vec<&str> = said.lines().rev().take(2).collect();
        assert_eq!(last[0], "tether-test: the store failed", "{last:?}");
        assert!(
            last[1].starts_with('[')
                && last[1].ends_with(" log lines dropped: standard error was not read fast enough]"),
            "{last:?}"
        );
    }

    /// An error that prints its cause and also returns it, as ours do.
    #[derive(Debug, thiserror::Error)]
    #[error("storage error: {0}")]
    struct Storage(#[source] std::io::Error);

    /// A context line that does not print its cause, as anyhow's `context` does not.
    #[derive(Debug, thiserror::Error)]
    #[error("final flush")]
    struct Context(#[source] Storage);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device");
        assert_eq!(error_chain(&Storage(io())), "storage error: no space left on device");
        assert_eq!(error_chain(&Context(Storage(io()))), "final flush: storage error: no space left on device");
        assert_eq!(error_chain(&io()), "no space left on device");
    }

    /// A server that fails while the reader of its standard error has stopped reading (a
    /// hung log shipper) still exits, with status 1, within the log pipe's drain waits:
    /// its last words, written straight to stderr, waited for ever behind the log
    /// writer's own blocked write. Run in a child process of this test binary, whose
    /// standard error is a pipe nobody reads.
    #[test]
    fn a_failing_server_exits_though_its_standard_error_is_not_read() {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        if std::env::var_os("TETHER_STALLED_STDERR_CHILD").is_some() {
            let writers = log_pipe::start(LogFormat::Text).unwrap();
            // More than a pipe holds: the log writer blocks in its write, as under a
            // reader that stopped.
            for i in 0..2_000 {
                let mut line = writers.make_writer();
                writeln!(line, "line {i} {}", "x".repeat(100)).unwrap();
            }
            let failure = std::io::Error::other("the store failed");
            finish("tether-test", Some(&failure));
            unreachable!("finish exits on a failure");
        }
        let mut child = this_test_again(
            "shell::tests::a_failing_server_exits_though_its_standard_error_is_not_read",
            "TETHER_STALLED_STDERR_CHILD",
            "1",
            std::process::Stdio::null(),
        )
        .spawn()
        .unwrap();
        // Two drains of `DRAIN_WAIT` at most, and the start of a test binary.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let status = status.expect("the failing process did not exit within 30 s");
        assert_eq!(status.code(), Some(1));
    }
}
