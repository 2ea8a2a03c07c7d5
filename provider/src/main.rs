//! `tether-provider`: serve a directory to consumers, load and write it, inspect it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tether_config::output::Stdout;
use tether_config::shell;
use tether_protocol::control::ControlRequest;
use tether_protocol::entry::{parse_attribute_name, take_entry_uuid};
use tether_protocol::handshake::ProviderProof;
use tether_protocol::{Dn, Filter, Scope, SearchSpec};
use tether_provider::config::ProviderConfig;
use tether_provider::input::Input;
use tether_provider::{client, daemon, load, status::ProviderStatus};
use tether_store::Directory;

/// mimalloc (without transparent huge pages) instead of glibc's malloc, in both
/// binaries: why, and what it changed, in docs/architecture.md and docs/benchmarks-history.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tether-provider", version, about = "Tether provider: serves a directory to consumers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the provider.
    Serve {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Bulk-load an LDIF file into a stopped provider's store.
    Load {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// LDIF content records (`-`: standard input).
        file: PathBuf,
        /// Leave entries whose DN is already in the store as they are, instead of
        /// refusing the file: to finish a load that a storage failure (a full disk) cut
        /// short, by running the same load again.
        #[arg(long)]
        skip_existing: bool,
    },
    /// Apply LDIF change records through a running provider.
    ///
    /// The whole file is read through first; nothing is sent if any record is malformed.
    /// Records then apply in order, each durably before the next. The first refused
    /// record stops the run with its line, the reason and how many records applied
    /// (exit status 1); if the session fails instead, the record in flight may or may
    /// not have committed, and the error says so. When every record applied, the last
    /// one's CSN is printed alone on stdout, for `tether-consumer wait --csn`.
    Write {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// LDIF change records (content records are adds; `-`: standard input).
        file: PathBuf,
        /// Write to a provider that does not prove it knows the [writer] secret: one
        /// still running a build older than protocol version 3 during an upgrade.
        /// Without it such a provider is refused before any record is sent, as is
        /// anything else answering on its address.
        #[arg(long)]
        allow_unproven: bool,
    },
    /// Print entries as canonical LDIF.
    Search {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Base DN (default: the suffix).
        #[arg(long)]
        base: Option<Dn>,
        /// base, one (or onelevel) or subtree (or sub).
        #[arg(long, default_value = "subtree")]
        scope: Scope,
        /// LDAP filter.
        #[arg(long, default_value = "(objectClass=*)")]
        filter: Filter,
        /// Attributes to print, comma-separated (objectClass always; default: all; entryUUID
        /// as --uuids prints it). The
        /// same list as an agreement's `attrs` prints what its replica should hold.
        #[arg(long, value_delimiter = ',', value_parser = parse_attribute_name)]
        attrs: Vec<String>,
        /// Print each entry's entryUUID too, as slapcat does: `load` keeps it, so a
        /// backup printed with it restores every entry with the same identity.
        #[arg(long)]
        uuids: bool,
    },
    /// Re-read the configuration of the running provider, as SIGHUP does, and print
    /// what the reload did, or why it changed nothing (exit status 1).
    ///
    /// SIGHUP's outcome is only in the log; this says it to whoever asked.
    Reload {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Forget a consumer gone for good: drop the position the store keeps for it.
    ///
    /// It then holds back no changelog trimming and is no longer listed by `status` or
    /// its metrics (a consumer decommissioned stays there, ever further behind, until a
    /// trim passes its position). Refused while a session of it is open. Should it come
    /// back, it resumes by delta if the changelog still holds its position. Works on a
    /// stopped provider's store too.
    Forget {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// The agreement it replicated.
        agreement: String,
        /// Its consumer id: the CONSUMER column of `status`.
        consumer: String,
    },
    /// Copy the store into a new folder while the provider runs, as one moment of it.
    ///
    /// The copy is the store itself (entries, changelog, histories, consumers'
    /// positions): put in place of a stopped provider's data_dir, its consumers resume
    /// by delta. Writes go on while it is made, held only while the last few of the
    /// changes made meanwhile are brought in. DEST must not exist or be an empty folder,
    /// outside the data_dir. Works on a stopped provider's store too.
    Backup {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// The folder to make the copy in.
        dest: PathBuf,
    },
    /// Check that a stopped provider's store, or a backup's copy, is whole.
    ///
    /// Reads every record: each entry stored under its own name, below the suffix and
    /// its parent, in the UUID index, as of its last change in the changelog, and the
    /// entry count. Run it on a backup before trusting it. Exit status 1 lists what is
    /// wrong. A running provider's store is not checked (it changes under the check):
    /// back it up and check the copy.
    Verify {
        /// Configuration file (its suffix and cache size; its data_dir unless --store).
        #[arg(short, long)]
        config: PathBuf,
        /// The store to check instead of the data_dir: a backup's copy.
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Write a running provider's backup copy as it asks on standard input (started by
    /// the provider itself, never by hand: see `backup::writer`).
    #[command(name = "backup-writer", hide = true)]
    BackupWriter {
        /// The folder the copy is written in.
        folder: PathBuf,
    },
    /// Check a configuration file as a start would, without starting anything.
    ///
    /// Reads the file and every file it names (each secret, the TLS certificate and
    /// key), prints the warnings a start would log (a secret others may read, a
    /// certificate about to expire) and what the file sets up; opens no store, binds
    /// nothing and asks no process. Exit status 1 if a start would refuse the file. Run
    /// by root on a store another user owns, it reads the files as that user, as the
    /// service does.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show the provider's state and its consumers.
    Status {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// The search of `base` (the suffix when none is given), `scope` and `filter`.
fn spec(config: &ProviderConfig, base: Option<Dn>, scope: Scope, filter: Filter, attrs: Vec<String>) -> SearchSpec {
    SearchSpec { base: base.unwrap_or_else(|| config.suffix.clone()), scope, filter, attrs }
}

/// `backup`'s destination as an absolute path (the running provider resolves no path
/// against the command's folder), refused inside the store's folder: a copy there would
/// go with the store it is to replace.
fn backup_destination(config: &ProviderConfig, dest: &Path) -> Result<PathBuf> {
    let dest = std::path::absolute(dest).with_context(|| format!("backup destination {}", dest.display()))?;
    let parent = dest.parent().with_context(|| format!("backup destination {} names no folder", dest.display()))?;
    let parent = parent
        .canonicalize()
        .with_context(|| format!("backup destination {}: its folder {}", dest.display(), parent.display()))?;
    // Refused here before the process is asked; the store refuses it too, to any client.
    if tether_store::inside_store(&dest, &config.data_dir) {
        bail!(
            "backup destination {} is inside the store's folder {}: a copy there would go with the store it is to \
             replace; nothing was written",
            dest.display(),
            config.data_dir.display()
        );
    }
    Ok(parent.join(dest.file_name().with_context(|| format!("backup destination {} names no folder", dest.display()))?))
}

/// What a command run while the provider is stopped does with its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offline {
    /// `status`, `search`, `forget`: open a store that exists, and create nothing. A
    /// store that was never made is an error naming the folder, so a mistyped
    /// `data_dir` is not reported as an empty directory, nor left behind as a new store
    /// owned by whoever ran the command.
    Read,
    /// `load`: the first step of a deployment, creating the store.
    Load,
}

fn open_offline(config: &ProviderConfig, use_: Offline) -> Result<Directory> {
    run_as_store_owner(config)?;
    let dir = config.data_dir.display();
    if use_ == Offline::Read && !tether_store::store_exists(&config.data_dir) {
        bail!(shell::no_store("provider", &config.data_dir, &config.control, &config.file));
    }
    // A command that only reads leaves the folder as it is; the running process warns of
    // loose permissions.
    if use_ == Offline::Load {
        let new = !tether_store::store_exists(&config.data_dir);
        let loose = shell::private_data_dir(&config.data_dir, new).with_context(|| format!("creating {dir}"))?;
        if let Some(warning) = loose {
            tether_config::say!("warning: {warning}");
        }
    }
    // A running provider holds its store for good: waiting would only delay saying so.
    let running = std::os::unix::net::UnixStream::connect(&config.control).is_ok();
    let lock_wait = if running { std::time::Duration::ZERO } else { shell::COMMAND_LOCK_WAIT };
    let options = tether_store::StoreOptions { cache_bytes: config.cache_size, lock_wait };
    Directory::open_with(&config.data_dir, &config.suffix, &options).map_err(|e| {
        let hint = match (&e, use_) {
            // A provider answers on its socket; another `load` (or a command reading
            // the store) does not, and telling it to stop a provider that is not
            // running sent the operator looking for one.
            (tether_store::StoreError::Locked(_), Offline::Load) if running => {
                " (stop the provider first: `load` writes to the store itself, and `write` adds entries to a running one)"
                    .to_owned()
            }
            (tether_store::StoreError::Locked(_), Offline::Load) => shell::store_holders_hint(
                &config.data_dir,
                " (another `load` into it, or a command reading it, is under way: wait for it to end)",
            ),
            (tether_store::StoreError::Locked(_), Offline::Read) => {
                shell::held_store_hint(&config.data_dir, &config.control, "is a `load` into it under way")
            }
            _ => e.open_hint().to_owned(),
        };
        anyhow::Error::new(e).context(format!("opening store {dir}{hint}"))
    })
}

/// Runs the command again as the owner of the store, and ends with its status, when
/// root runs it on a store another user owns (see [`shell::as_store_owner`]).
fn run_as_store_owner(config: &ProviderConfig) -> Result<()> {
    match shell::as_store_owner(&config.data_dir)? {
        Some(code) => shell::exit_now(code),
        None => Ok(()),
    }
}

/// The store of a stopped provider, for a command that asked its socket first and found
/// nothing there; `None` when a provider started meanwhile (it holds the store, and its
/// socket answers now: [`shell::answers`]) and answered `request` instead. A first start
/// makes its store after it binds its socket: until then the command finds no store.
async fn offline_or_answered(config: &ProviderConfig, request: &ControlRequest) -> Result<Option<Directory>> {
    match open_offline(config, Offline::Read) {
        Err(e)
            if (is_locked(&e) || !tether_store::store_exists(&config.data_dir)) && shell::answers(&config.control) =>
        {
            match client::control_call(config, request).await? {
                Some(()) => Ok(None),
                None => Err(e),
            }
        }
        opened => opened.map(Some),
    }
}

/// The store at `path` (a backup's copy, absolute, holding a store:
/// [`shell::other_store`]), opened for `verify` as the configuration's store would be,
/// as its owner when root runs the command.
fn open_to_verify(config: &ProviderConfig, path: PathBuf) -> Result<(Directory, PathBuf)> {
    if let Some(code) = shell::as_store_owner(&path)? {
        shell::exit_now(code);
    }
    let options = tether_store::StoreOptions { cache_bytes: config.cache_size, lock_wait: shell::COMMAND_LOCK_WAIT };
    let dir = Directory::open_with(&path, &config.suffix, &options).map_err(|e| {
        let hint = match &e {
            tether_store::StoreError::Locked(_) => {
                " (a process holds it: a provider running on it, a `load` or another command; a running provider's \
                 store is checked through a backup of it)"
            }
            _ => e.open_hint(),
        };
        anyhow::Error::new(e).context(format!("opening store {}{hint}", path.display()))
    })?;
    Ok((dir, path))
}

/// Whether opening the store failed because a running provider (or a `load`) holds it.
fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref(), Some(tether_store::StoreError::Locked(_))))
}

/// Why a command for the running provider found none: nothing answers on the control
/// socket, and the store is free (no provider runs) or held (one runs, but answers
/// elsewhere: `control` was changed since it started), as opening it says.
fn not_running(config: &ProviderConfig) -> anyhow::Error {
    match open_offline(config, Offline::Read) {
        Ok(_) => anyhow::anyhow!("the provider is not running (nothing answers on {})", config.control.display()),
        Err(e) => e,
    }
}

/// How often a long `load` says how far it is.
const LOAD_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The signals that stop a long offline command (`load`, `backup`), taken before it
/// opens (and perhaps makes) what it writes: taken by the task that waits for them, they
/// were not yet when a load began, and a SIGINT then killed the process the default
/// way, leaving the new store a stopped load removes. `None` if they cannot be taken
/// (the default action then).
type StopSignals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// Takes the signals that stop a long command ([`StopSignals`]).
fn stop_signals() -> Option<StopSignals> {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(int), Ok(term), Ok(hup)) => Some((int, term, hup)),
        _ => None,
    }
}

/// SIGINT, SIGTERM or SIGHUP during a long command: the first sets `stop`, which the
/// command reads between batches, saying `first` after the signal's name; a second ends
/// the process at once, saying `second`. SIGHUP is a terminal closed or an SSH session
/// dropped under it.
async fn stop_on_signal(signals: Option<StopSignals>, stop: Arc<AtomicBool>, first: &str, second: &str) {
    let Some((mut int, mut term, mut hup)) = signals else { return };
    let mut next = async || {
        tokio::select! { _ = int.recv() => "SIGINT", _ = term.recv() => "SIGTERM", _ = hup.recv() => "SIGHUP" }
    };
    let signal = next().await;
    tether_config::say!("{signal}: {first}");
    stop.store(true, Ordering::SeqCst);
    let signal = next().await;
    tether_config::say!("{signal}: {second}");
    shell::exit_now(130);
}

/// [`stop_on_signal`] for `load`: the first signal stops it once the batch being
/// written is in the store (the error then says how many entries that is and how to
/// finish), a second at once. Killed at once, it said nothing and left part of the file
/// loaded.
async fn stop_load_on_signal(signals: Option<StopSignals>, stop: Arc<AtomicBool>) {
    stop_on_signal(
        signals,
        stop,
        "stopping (a batch being written is finished first; again to stop at once)",
        "stopped; the entries of batches written before are in the store",
    )
    .await
}

/// [`stop_on_signal`] for an offline `backup`: the first signal abandons the copy,
/// whose files are removed (killed the default way, it left them beside the
/// destination); a second ends the process at once, leaving them for the next backup
/// to the destination to remove.
async fn stop_backup_on_signal(signals: Option<StopSignals>, stop: Arc<AtomicBool>) {
    stop_on_signal(
        signals,
        stop,
        "stopping the copy (its files are removed first; again to stop at once)",
        "stopped; the next backup to the same destination removes the copy's files",
    )
    .await
}

/// The topmost of `data_dir` and the folders above it that does not exist yet: what a
/// load into it makes (the store is opened with all its missing parents).
fn first_missing(data_dir: &Path) -> Option<PathBuf> {
    let data_dir = std::path::absolute(data_dir).ok()?;
    data_dir.ancestors().take_while(|folder| !folder.exists()).last().map(Path::to_path_buf)
}

/// Removes the store a refused `load` made: the whole folder if the load made it, and
/// the folders above it the load made too (`made`, from [`first_missing`]) while they
/// are empty; else only what sled writes there (`conf`, `db`, `blobs`, `snap.*`),
/// leaving whatever else the folder held. The folders above were left behind, so a
/// load into a mistyped `/var/lib/tehter/provider` left `/var/lib/tehter`.
fn remove_new_store(data_dir: &Path, made: Option<&Path>) -> std::io::Result<()> {
    if let Some(made) = made {
        std::fs::remove_dir_all(data_dir)?;
        let data_dir = std::path::absolute(data_dir)?;
        for folder in data_dir.ancestors().skip(1).take_while(|folder| folder.starts_with(made)) {
            // One holding anything is someone else's by now: left as it is.
            if std::fs::remove_dir(folder).is_err() {
                break;
            }
        }
        return Ok(());
    }
    for item in std::fs::read_dir(data_dir)? {
        let item = item?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name == "blobs" {
            std::fs::remove_dir_all(item.path())?;
        } else if name == "conf" || name == "db" || name == tether_store::INSTANCE_MARK || name.starts_with("snap.") {
            std::fs::remove_file(item.path())?;
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => daemon::serve(&config).await,
        Command::BackupWriter { folder } => {
            // Stopped by its input's end alone, which its provider owns: a signal to the
            // whole group (Ctrl-C at a terminal, systemd's stop) would otherwise kill it
            // before the provider, stopping, abandons the copy, leaving its files.
            use tokio::signal::unix::{signal, SignalKind};
            let kinds = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()];
            let _taken = kinds.map(signal).into_iter().collect::<std::io::Result<Vec<_>>>()?;
            let written = tokio::task::spawn_blocking(move || tether_provider::backup::writer::run(&folder)).await?;
            written.map(drop).context("writing a backup's copy")
        }
        Command::Load { config, file, skip_existing } => {
            let config = ProviderConfig::load(&config)?;
            // Before standard input is read (`load -`), which the run again reads.
            run_as_store_owner(&config)?;
            // A file that cannot be opened makes no store.
            let input = Input::open(&file)?;
            // After standard input is copied (a SIGINT must still end a `load -` waiting
            // on a terminal), before the store is opened.
            let signals = stop_signals();
            let (fresh, made) = (!tether_store::store_exists(&config.data_dir), first_missing(&config.data_dir));
            let dir = open_offline(&config, Offline::Load)?;
            let existing = if skip_existing { load::Existing::Skip } else { load::Existing::Refuse };
            let failure = dir.failure().clone();
            let stop = Arc::new(AtomicBool::new(false));
            let _signals = tokio::spawn(stop_load_on_signal(signals, stop.clone()));
            // How many entries are written, for the error of a store that fails under
            // the load, which its watchdog reports without the load's own count.
            let loaded_so_far = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counting = loaded_so_far.clone();
            let loading = tokio::task::spawn_blocking(move || {
                let (begun, mut said) = (Instant::now(), Instant::now());
                let mut progress = |written: usize| {
                    counting.store(written, Ordering::SeqCst);
                    if said.elapsed() >= LOAD_PROGRESS_EVERY {
                        said = Instant::now();
                        tether_config::say!("{written} entries loaded ({}s)", begun.elapsed().as_secs());
                    }
                };
                let loaded = load::load_watched(&dir, &input, existing, &stop, &mut progress);
                (dir, loaded)
            });
            // A flush stuck in sled (see `tether_store::failure`) ends the wait when the
            // store's watchdog takes it as failed; the process exits without it.
            let (dir, loaded) = failure.unless_failed(loading).await.map_err(|failure| {
                let loaded = loaded_so_far.load(Ordering::SeqCst);
                anyhow::anyhow!(
                    "the store failed ({failure}); the {loaded} entries loaded before it may be in the store: fix the \
                     cause, then run the same load again with --skip-existing to add the rest"
                )
            })??;
            let report = match loaded {
                Ok(report) => report,
                // A refused file writes nothing, and leaves no store where there was
                // none: else a load into a mistyped `data_dir` would leave an empty
                // store there, which `status` and `search` then report as the real one.
                Err(e) if fresh && dir.entry_count().is_ok_and(|n| n == 0) => {
                    drop(dir);
                    if let Err(left) = remove_new_store(&config.data_dir, made.as_deref()) {
                        return Err(e.context(format!(
                            "the empty store made for the load could not be removed from {}: {left}",
                            config.data_dir.display()
                        )));
                    }
                    return Err(e);
                }
                Err(e) => {
                    if dir.failure().latched().is_some() {
                        // Not flushed again as it goes: it cannot succeed, and after a
                        // write sled could not finish it never returns.
                        std::mem::forget(dir);
                    }
                    return Err(e);
                }
            };
            let n = |count: usize, one: &str, many: &str| format!("{count} {}", if count == 1 { one } else { many });
            let mut said = format!("loaded {}", n(report.entries, "entry", "entries"));
            if report.skipped > 0 {
                said += &format!(", skipped {} already in the store", n(report.skipped, "entry", "entries"));
            }
            if report.reordered > 0 {
                said += &format!(
                    " ({} waited for {} parent, listed later in the file or waiting itself, and {} written after it)",
                    report.reordered,
                    if report.reordered == 1 { "its" } else { "their" },
                    if report.reordered == 1 { "was" } else { "were" }
                );
            }
            if report.kept_uuids > 0 {
                said += &format!(
                    "; {} kept the entryUUID the file gave {}",
                    report.kept_uuids,
                    if report.kept_uuids == 1 { "it" } else { "them" }
                );
            }
            if report.dropped > 0 {
                said += &format!(
                    "; left out {} of attributes their server maintained (entryCSN, timestamps, creators: Tether \
                     keeps none of them)",
                    n(report.dropped, "value", "values")
                );
            }
            if let Some(kept) = report.miscounted {
                said += &format!(
                    "; the store's entry count said {kept}, and is now what it holds, {} (a load cut short by a \
                     failing disk can leave it wrong)",
                    dir.entry_count()?
                );
            }
            tether_config::say!("{said}");
            Ok(())
        }
        Command::Write { config, file, allow_unproven } => {
            let config = ProviderConfig::load(&config)?;
            let proof = if allow_unproven { ProviderProof::Optional } else { ProviderProof::Required };
            // The writer's secret others may read, warned of as the provider's start and
            // reload warn of theirs (an unreadable one is write's error, below).
            if let Some(writer) = &config.writer {
                let loaded = tether_provider::config::load_secret(&writer.secret_file);
                for warning in loaded.map(|s| s.warnings).unwrap_or_default() {
                    tether_config::say!("warning: {warning}");
                }
            }
            let report = client::write(&config, &Input::open(&file)?, proof).await?;
            tether_config::say!("{}", client::records_applied(report.applied));
            // The last write's CSN alone on stdout, for a script to hand to
            // `tether-consumer wait --csn` (read your writes on a replica).
            if let Some(csn) = report.last_csn {
                // Every record applied: a script that retries on exit status 1 must
                // learn that the file is not to be run again.
                Stdout::print(&format!("{csn}\n")).with_context(|| {
                    format!(
                        "every record applied (do not run the file again), but writing the last one's CSN, {csn}, to \
                         standard output failed"
                    )
                })?;
            }
            Ok(())
        }
        Command::Search { config: file, base, scope, filter, attrs, uuids } => {
            let (attrs, uuid_named) = take_entry_uuid(attrs);
            let uuids = uuids || uuid_named;
            // While the file holds an error, the running provider answers all the same
            // (see `status`), if the command names its base: the default is the file's.
            let loaded = ProviderConfig::load(&file);
            let config = match base.clone().filter(|_| loaded.is_err()) {
                Some(base) => {
                    let spec = SearchSpec { base, scope, filter: filter.clone(), attrs: attrs.clone() };
                    let (data_dir, process) =
                        (tether_provider::config::DEFAULT_DATA_DIR, tether_protocol::control::Process::Provider);
                    let request = ControlRequest::search(None, spec, uuids);
                    match shell::config_or_running(loaded, &file, data_dir, process, &request).await? {
                        Some(config) => config,
                        None => return Ok(()),
                    }
                }
                None => loaded?,
            };
            let spec = spec(&config, base, scope, filter, attrs);
            tether_config::output::warn_not_kept(&spec);
            let request = ControlRequest::search(None, spec.clone(), uuids);
            if client::control_call(&config, &request).await?.is_some() {
                return Ok(());
            }
            let Some(dir) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            print_search(&dir, &spec, uuids)
        }
        Command::Reload { config } => {
            // A file the provider could not read stops here with the same error: the
            // provider is not asked, and keeps its configuration.
            let config = ProviderConfig::load(&config)
                .map_err(|e| anyhow::anyhow!("{e}; nothing was reloaded: {}", tether_provider::daemon::KEPT_AS_READ))?;
            if client::control_reload(&config.control, &config.file).await?.is_none() {
                return Err(not_running(&config));
            }
            Ok(())
        }
        Command::Forget { config, agreement, consumer } => {
            let config = ProviderConfig::load(&config)?;
            let request = ControlRequest::Forget { agreement: agreement.clone(), consumer: consumer.clone() };
            if client::control_call(&config, &request).await?.is_some() {
                return Ok(());
            }
            let Some(dir) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            let said = tether_provider::control::forget(&dir, &Default::default(), &agreement, &consumer)
                .map_err(anyhow::Error::msg)?;
            dir.flush().context("flushing the store")?;
            Stdout::print(&said).context("writing to standard output")
        }
        Command::Backup { config, dest } => {
            let config = ProviderConfig::load(&config)?;
            let dest = backup_destination(&config, &dest)?;
            let shown = dest.display().to_string();
            let request = ControlRequest::Backup { dest: shown.clone() };
            if client::control_call(&config, &request).await?.is_some() {
                return Ok(());
            }
            let Some(dir) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            // Taken only now: while the running provider copied, a signal ended the
            // command the default way, and the provider abandoned the copy it no longer
            // had a client for.
            let stop = Arc::new(AtomicBool::new(false));
            let _signals = tokio::spawn(stop_backup_on_signal(stop_signals(), stop.clone()));
            let copying = tokio::task::spawn_blocking({
                let (dest, stop) = (dest.clone(), stop.clone());
                move || {
                    // Stopped, the provider is not there to say how far its copy has
                    // come: the command says it itself, as the provider's answer would.
                    let mut said = Instant::now();
                    let mut watch = |p: tether_store::BackupProgress| {
                        if said.elapsed() >= tether_provider::backup::PROGRESS_EVERY {
                            tether_config::say!("{}", tether_provider::backup::progress_said(&p).trim_end());
                            said = Instant::now();
                        }
                        !stop.load(Ordering::SeqCst)
                    };
                    dir.backup(&dest, &mut watch)
                }
            });
            let report = copying.await.context("the copy's thread")?.map_err(|e| match e {
                tether_store::StoreError::Abandoned if stop.load(Ordering::SeqCst) => {
                    anyhow::anyhow!("the backup was stopped by a signal; nothing was made at {shown}")
                }
                e @ tether_store::StoreError::BackupDestination { .. } => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context(format!("backing up the store to {shown}")),
            })?;
            Stdout::print(&tether_provider::backup::said(&report, &shown)).context("writing to standard output")
        }
        Command::Verify { config, store } => {
            let config = ProviderConfig::load(&config)?;
            let dir = match shell::other_store(store.as_deref(), &config.data_dir, tether_store::store_exists)? {
                Some(path) => open_to_verify(&config, path)?,
                None if shell::answers(&config.control) => bail!(
                    "the provider is running (it answers on {}): its store changes under a check; check a copy of \
                     it (`tether-provider backup -c {} DEST`, then `tether-provider verify -c {} --store DEST`), or \
                     stop it first",
                    config.control.display(),
                    config.file.display(),
                    config.file.display()
                ),
                None => (open_offline(&config, Offline::Read)?, config.data_dir.clone()),
            };
            let (dir, path) = dir;
            let shown = path.display().to_string();
            let mut said = Instant::now();
            let found = dir
                .verify(&mut |read| {
                    if said.elapsed() >= tether_provider::backup::PROGRESS_EVERY {
                        tether_config::say!("checking: {read} records read so far");
                        said = Instant::now();
                    }
                })
                .with_context(|| format!("reading the store at {shown}"))?;
            match tether_provider::verify::said(&found, &shown) {
                Ok(sound) => Stdout::print(&sound).context("writing to standard output"),
                Err(problems) => Err(anyhow::Error::msg(problems)),
            }
        }
        Command::Check { config } => {
            let config = ProviderConfig::load(&config)?;
            run_as_store_owner(&config)?;
            let mut warnings = config.check_files()?;
            warnings.extend(shell::root_on_anothers_store(&config.data_dir));
            for w in warnings {
                tether_config::say!("warning: {w}");
            }
            Stdout::print(&config.summary()).context("writing to standard output")
        }
        Command::Status { config: file, json } => {
            // Held to what a start needs, the files it names too: a secret lost is
            // warned of now, not found when a restart fails.
            // Warned of as a start or reload would (a secret others may read).
            // Not by a member of the status group, whose user may not read them.
            let loaded =
                ProviderConfig::load(&file).and_then(|c| match shell::runs_as_a_monitor(&c.control, &c.data_dir) {
                    true => Ok((c, Vec::new())),
                    false => c.check_files().map(|warnings| (c, warnings)),
                });
            let process = tether_protocol::control::Process::Provider;
            let data_dir = tether_provider::config::DEFAULT_DATA_DIR;
            let Some((config, warnings)) =
                shell::config_or_running(loaded, &file, data_dir, process, &ControlRequest::Status { json }).await?
            else {
                return Ok(());
            };
            // The run as the store's owner says them again.
            if !shell::is_store_owners_run() {
                for w in warnings {
                    tether_config::say!("warning: {w}");
                }
            }
            let request = ControlRequest::Status { json };
            if client::control_call(&config, &request).await?.is_some() {
                return Ok(());
            }
            let Some(dir) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            let status = ProviderStatus::collect(&dir, &Default::default(), None)?;
            let text = if json { format!("{}\n", serde_json::to_string_pretty(&status)?) } else { status.to_text() };
            Stdout::print(&text).context("writing to standard output")
        }
    }
}

fn print_search(dir: &Directory, spec: &SearchSpec, uuids: bool) -> Result<()> {
    use std::io::Write;
    tether_provider::control::check_search(dir, spec).map_err(anyhow::Error::msg)?;
    let mut out = Stdout::lock();
    for entry in dir.search(spec) {
        let entry = entry?;
        tether_protocol::ldif::writer::write_search_result(&mut out, &entry, uuids)
            .context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")
}

fn main() -> ExitCode {
    shell::init_logging();
    let cli = Cli::parse();
    let outcome = shell::runtime("tether-provider").block_on(run(cli));
    shell::finish("tether-provider", outcome.err().as_deref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tether_protocol::control::{read_request, respond_done, Peer, Process};

    /// A refused first load into a folder whose parents it made takes those away too,
    /// up to the first that existed, and keeps a parent something else was put in.
    #[test]
    fn a_refused_first_load_removes_the_folders_it_made_for_its_store() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("tehter/provider/data");
        let made = first_missing(&data_dir).unwrap();
        assert_eq!(made, tmp.path().join("tehter"));
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(data_dir.join("db"), "").unwrap();
        remove_new_store(&data_dir, Some(&made)).unwrap();
        assert!(!made.exists() && tmp.path().exists());

        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(made.join("notes"), "another's").unwrap();
        remove_new_store(&data_dir, Some(&made)).unwrap();
        assert!(!data_dir.exists() && !data_dir.parent().unwrap().exists());
        assert!(made.join("notes").exists(), "a folder holding anything else is left");
        assert_eq!(first_missing(tmp.path()), None, "nothing to make");
    }

    /// A stand-in for a provider on its first start, its control socket at `socket`
    /// bound and its store not made yet: answers each request with nothing, and hands
    /// it to the test.
    fn first_start(socket: &Path) -> tokio::sync::mpsc::UnboundedReceiver<ControlRequest> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = tether_protocol::frame::split(stream);
                // A connection that sends nothing (a probe whether anything listens) ends here.
                if let Ok(request) = read_request(&mut reader, &mut writer, Process::Provider, &Peer::Operator).await {
                    respond_done(&mut writer, "").await.unwrap();
                    let _ = tx.send(request);
                }
            }
        });
        rx
    }

    /// A provider's configuration in `folder`: its store in `data`, its socket beside.
    fn config_in(folder: &Path) -> ProviderConfig {
        let file = folder.join("provider.toml");
        std::fs::write(
            &file,
            "data_dir = \"data\"\ncontrol = \"ctl.sock\"\nlisten = \"127.0.0.1:0\"\nsuffix = \"dc=example,dc=com\"\n",
        )
        .unwrap();
        ProviderConfig::load(&file).unwrap()
    }

    /// A command that found nothing on the socket and then no store, while a first start
    /// has bound its socket meanwhile (it makes its store after), asks the socket again
    /// and takes its answer, rather than fail saying no provider has run here.
    #[tokio::test]
    async fn a_command_finding_no_store_asks_a_socket_that_answers_now() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        let request = ControlRequest::Status { json: true };
        // Nothing on the socket: the store's absence is the answer.
        let Err(err) = offline_or_answered(&config, &request).await else { panic!("no store, nothing answering") };
        assert!(format!("{err:#}").contains("there is no store in"), "{err:#}");
        let mut asked = first_start(&config.control);
        assert!(offline_or_answered(&config, &request).await.unwrap().is_none(), "answered by the socket");
        let Some(ControlRequest::FromFile { request: got, .. }) = asked.recv().await else { panic!("a request") };
        assert_eq!(*got, request);
    }

    /// A destination is held out of the store's folder however it is spelled: one
    /// reached through a symbolic link to that folder is refused (the copy would go with
    /// the store it is to replace), and one that goes into the folder and back out of it
    /// (`data/../copy`) is not.
    #[test]
    fn a_destination_in_the_data_dir_is_refused_however_it_is_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        std::fs::create_dir(&config.data_dir).unwrap();
        std::os::unix::fs::symlink(&config.data_dir, tmp.path().join("link")).unwrap();

        let err = backup_destination(&config, &tmp.path().join("link/copy")).unwrap_err().to_string();
        assert!(err.contains("is inside the store's folder"), "{err}");
        let out = backup_destination(&config, &tmp.path().join("data/../copy")).unwrap();
        assert_eq!(out, tmp.path().canonicalize().unwrap().join("copy"));
    }
}
