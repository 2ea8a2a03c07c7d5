//! `tether-provider serve`: the running provider. Owns the store, the replication
//! server, the control endpoint and the changelog trimmer, and shuts them down in order:
//! SIGTERM/SIGINT cancels one token; every session sends goodbye `shutdown`; the server
//! waits for them; the store is flushed; exit 0. SIGHUP (or `reload`) re-reads the
//! consumer list and revokes sessions whose credentials were removed, re-reads the
//! `[tls]` files for new connections, and applies `[changelog]` retention. A store that
//! fails (see `tether_store::failure`) stops the provider the same way, but with an
//! error and exit status 1, since no write can commit on it any more.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use tether_config::certificate_watch;
use tether_config::shell::{error_chain, reload_report, Signal, Signals};
use tether_store::{Directory, RetentionPolicy};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{load_secret, ChangelogConfig, ProviderConfig};
use crate::control::{self, ControlContext};
use crate::registry::Registry;
use crate::server::{Grants, Server, ServerParams};
use crate::session::SessionParams;
use crate::tls;
use crate::validity::Served;

/// Upper bound on the whole shutdown (sessions saying goodbye, flushing).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Builds the grants table from the config, reading every secret file; the warnings
/// of those files (one others may read) are logged and returned, for a reload's reply.
pub fn grants(config: &ProviderConfig) -> Result<(Grants, Vec<String>)> {
    let mut grants = Grants::default();
    let mut warnings = Vec::new();
    for (i, c) in config.consumers.iter().enumerate() {
        let loaded = load_secret(&c.secret_file)
            .with_context(|| format!("{}: key 'consumer[{i}].secret_file'", config.file.display()))?;
        for w in loaded.warnings {
            warn!("{w}");
            warnings.push(w);
        }
        grants.agreements.insert(c.agreement.clone(), (loaded.secret, c.allowed_base(&config.suffix).clone()));
    }
    if let Some(w) = &config.writer {
        let loaded = load_secret(&w.secret_file)
            .with_context(|| format!("{}: key 'writer.secret_file'", config.file.display()))?;
        for w in loaded.warnings {
            warn!("{w}");
            warnings.push(w);
        }
        grants.writer = Some(loaded.secret);
    }
    Ok((grants, warnings))
}

/// Descriptors a provider may hold besides its connections: the store's files, the
/// listeners, the control connections, the runtime's own (about 16 at rest), with room.
const FILES_BESIDES_CONNECTIONS: u64 = 64;

/// Raises the open files limit as far as the hard limit allows, and warns when it is
/// still too low for `max_connections`: the connections past it would fail at `accept`,
/// logged every time, instead of being refused with a reason.
fn check_open_files_limit(max_connections: usize) {
    let needed = (max_connections as u64).saturating_add(FILES_BESIDES_CONNECTIONS);
    match tether_config::shell::raise_open_files_limit() {
        Ok(Some(limit)) if limit < needed => warn!(
            max_connections,
            open_files_limit = limit,
            "the open files limit is too low for max_connections: the provider may need {needed} files (a \
             connection each, and up to {FILES_BESIDES_CONNECTIONS} besides), and connections past the limit wait \
             and time out at accept, as do commands; raise the hard limit (LimitNOFILE= in a systemd unit, \
             ulimit -Hn) or lower max_connections"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not raise the open files limit"),
    }
}

/// What a reload that failed did, for the reply and the command's error.
pub const KEPT_AS_READ: &str = "the provider keeps the configuration it last read";

/// Runs the provider until a shutdown signal.
pub async fn serve(config_path: &Path) -> Result<()> {
    // Before anything can announce readiness: a SIGHUP that arrives right after
    // "listening" must reload, not take the default action (terminate).
    let mut signals = Signals::install().context("installing signal handlers")?;
    let config = ProviderConfig::load(config_path)?;
    let (grants, _) = grants(&config)?;
    let tls = tls::server_config_of(&config)?;
    for warning in config.tls.as_ref().map(tls::warnings).unwrap_or_default() {
        warn!("{warning}");
    }
    check_open_files_limit(config.max_connections);
    // Before the store is created or opened: a process that cannot take its control
    // socket (another process answers on it) changes nothing.
    let made_data_dir = !config.data_dir.exists();
    let (control_listener, control_file) =
        tether_config::shell::take_place(&config.data_dir, &config.control, config.status_group.as_ref(), &config.file)
            .await?;
    // So is one whose port is taken: a first start would otherwise leave an empty store
    // behind, and every start a history begun for nothing. Nor an empty folder (the
    // socket's, made above), which a later start would take for one an operator made.
    let listener = match tokio::net::TcpListener::bind(config.listen.addr()).await {
        Ok(listener) => listener,
        Err(e) => {
            drop(control_file);
            if made_data_dir {
                // Only if empty: `remove_dir` refuses a folder that holds anything.
                let _ = std::fs::remove_dir(&config.data_dir);
            }
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    " (another process listens there: a provider of another configuration file, or another \
                     service; stop it, or give `listen` another port)"
                }
                _ => "",
            };
            return Err(anyhow::Error::new(e).context(format!(
                "{}: key 'listen': binding {}{hint}",
                config.file.display(),
                config.listen
            )));
        }
    };
    // And one whose metrics port is taken, the same way.
    let metrics = match &config.metrics_listen {
        Some(addr) => match tether_config::metrics::endpoint::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                drop(control_file);
                if made_data_dir {
                    let _ = std::fs::remove_dir(&config.data_dir);
                }
                return Err(anyhow::Error::new(e).context(config.file.display().to_string()));
            }
        },
        None => None,
    };
    // A name binds one of its addresses, the first that binds: said, since the others
    // (IPv4 `127.0.0.1` beside the `::1` that `localhost` gave first) then refuse the
    // consumers configured with them, and nothing else says why.
    if config.listen.host().parse::<std::net::IpAddr>().is_err() {
        let mut all: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host(config.listen.addr()).await.map(Iterator::collect).unwrap_or_default();
        all.sort_unstable();
        all.dedup();
        if all.len() > 1 {
            let bound = listener.local_addr().map_or_else(|_| "one of them".to_owned(), |a| a.to_string());
            let all = all.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            warn!(
                listen = %config.listen,
                "`listen` names a host of several addresses ({all}): listening on {bound} only; give `listen` one \
                 address, or 0.0.0.0 or [::] for all"
            );
        }
    }
    let new = !tether_store::store_exists(&config.data_dir);
    let loose = tether_config::shell::private_data_dir(&config.data_dir, new)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    if let Some(warning) = loose {
        warn!("{warning}");
    }
    if let Some(warning) = tether_config::shell::root_on_anothers_store(&config.data_dir) {
        warn!("{warning}");
    }
    let dir = Arc::new(
        Directory::open_with(
            &config.data_dir,
            &config.suffix,
            &tether_store::StoreOptions {
                cache_bytes: config.cache_size,
                lock_wait: tether_config::shell::START_LOCK_WAIT,
            },
        )
        .map_err(|e| {
            // Not a `serve` of this file (that one holds the control socket, refused
            // above), and held past the wait.
            let hint = match e {
                tether_store::StoreError::Locked(_) => tether_config::shell::held_at_start_hint(&config.data_dir),
                _ => e.open_hint().to_owned(),
            };
            anyhow::Error::new(e).context(format!("opening store {}{hint}", config.data_dir.display()))
        })?,
    );
    if new {
        // A first start is one way here; a mistyped or changed `data_dir` is the other,
        // and then nothing else says so: consumers are told `empty-store` and wait.
        warn!(
            data_dir = %config.data_dir.display(),
            "created a new, empty store: if this provider served a directory before, `data_dir` names the wrong \
             folder (its consumers keep their replicas and wait, told empty-store); otherwise load one with \
             `tether-provider load` or write to it"
        );
    }
    if let Some(load) = dir.unfinished_load().context("reading whether a load is under way in the store")? {
        let status = crate::status::UnfinishedLoadStatus::of(&load);
        let entries = dir.entry_count().unwrap_or(0) as usize;
        bail!("{}: {}; nothing was changed", config.data_dir.display(), status.advice(&config.file, entries));
    }
    // Before any cookie goes out: from here on this store's history may part from that
    // of a copy of it, and consumers must be able to tell the two apart.
    let history = dir.begin_history().context("beginning a new history in the store")?;
    let local = listener.local_addr().context("reading the bound address")?;
    let shutdown = CancellationToken::new();
    let params = ServerParams {
        max_connections: config.max_connections,
        handshake_timeout: config.handshake_timeout,
        max_frame: config.max_frame as usize,
        session: SessionParams {
            batch_size: config.batch_size,
            queue_len: config.queue_len,
            keepalive_interval: config.keepalive.interval,
            keepalive_timeout: config.keepalive.timeout,
            keepalive_enabled: config.keepalive.enabled,
        },
    };
    let server = Server::new(dir.clone(), grants, tls.clone(), params, shutdown.clone());
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let (served_tx, served_rx) = watch::channel(config.tls.as_ref().and_then(tls::served));
    let ctx = ControlContext {
        dir: dir.clone(),
        registry: server.registry().clone(),
        reload: reload_tx,
        config_file: tether_protocol::control::StartedWith::new(config_path),
        listen: local,
        served: served_rx.clone(),
        metrics_listen: metrics.as_ref().and_then(|l| l.local_addr().ok()),
        backup_writer: crate::backup::writer::Writer::this_program(),
    };
    let metrics_task = metrics.map(|listener| {
        let ctx = ctx.clone();
        tokio::spawn(tether_config::metrics::endpoint::serve(listener, shutdown.clone(), move || {
            let ctx = ctx.clone();
            // The store reads of a status are short; off the runtime's workers anyway,
            // as a scrape must not hold up sessions behind a slow disk.
            async move {
                match tokio::task::spawn_blocking(move || ctx.status()).await {
                    Ok(Ok(status)) => Ok(crate::metrics::render(&status)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }))
    });
    // The line tests and the demo wait for: the provider is ready and where.
    info!(listen = %local, tls = tls.is_some(), store_id = %dir.store_id(), %history, csn = %dir.durable_csn(), "provider listening");
    tether_config::output::announce(&format!("listening on {local}"));

    let control_task =
        tokio::spawn(control::serve(control_listener, config.status_group.clone(), ctx, shutdown.clone()));
    let certificate_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = certificate_watch::watch(served_rx, SystemTime::now, |w| warn!("{w}")) => {}
            }
        })
    };
    let (retention_tx, retention_rx) = watch::channel(config.changelog);
    let trim_task = tokio::spawn(trim_loop(dir.clone(), server.registry().clone(), retention_rx, shutdown.clone()));
    let server_task = {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await })
    };

    // Set when the store fails: the provider then stops as on SIGTERM, except that it
    // cannot flush, and exits with the failure.
    let mut store_failure = None;
    loop {
        tokio::select! {
            failure = dir.failure().failed() => {
                if failure.damaged() {
                    error!(error = %failure, "the store is damaged; stopping");
                } else if failure.taken_away() {
                    error!(error = %failure, "the store's files were taken away; stopping");
                } else {
                    error!(error = %failure, "the store failed; stopping (every acknowledged write is on disk)");
                }
                store_failure = Some(failure);
                break;
            }
            sig = signals.next() => match sig {
                Signal::Shutdown(name) => {
                    info!("{name}: shutting down");
                    break;
                }
                Signal::Reload => {
                    info!("SIGHUP: reloading configuration");
                    if let Err(e) = reload(config_path, &config, &server, &retention_tx, &served_tx) {
                        error!("reload failed, keeping the old configuration: {}", error_chain(&*e));
                    }
                }
            },
            Some(reply) = reload_rx.recv() => {
                let result = reload(config_path, &config, &server, &retention_tx, &served_tx).map_err(|e| error_chain(&*e));
                // The command prints the error too, but the log is where an operator
                // looks for what the process did.
                if let Err(e) = &result {
                    error!("reload requested on the control socket failed, keeping the old configuration: {e}");
                }
                let _ = reply.send(result.map_err(|e| format!("{e}; nothing changed: {KEPT_AS_READ}")));
            }
        }
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_LIMIT, async {
        let _ = server_task.await;
        let _ = control_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        let _ = trim_task.await;
        let _ = certificate_task.await;
    })
    .await;
    if drained.is_err() {
        warn!("sessions did not finish within {SHUTDOWN_LIMIT:?}; closing anyway");
    }
    drop(control_file);
    let failure = match store_failure {
        // sled returns the failure from every operation now, the final flush included.
        Some(failure) => Some(failure),
        None => final_flush(&dir).await?,
    };
    if let Some(failure) = failure {
        // Nor is sled's own flush run as the last handle goes: it cannot succeed, and
        // after a write sled could not finish it never returns (see
        // `tether_store::failure`). `main` exits without waiting for work still stuck.
        std::mem::forget(dir);
        if failure.damaged() {
            // A page sled wrote is not what it reads back: what else the damage took
            // cannot be known from here, so neither "every acknowledged write" holds.
            bail!(
                "the store is damaged ({failure}): sled read a page that is not what it wrote; restore data_dir \
                 from a backup, or rebuild it from a replica (operations.md, Backup and restore), then start the \
                 provider again"
            );
        }
        if failure.taken_away() {
            // Acknowledged writes went into the files taken away, not what is there now.
            bail!(
                "{failure}. The writes acknowledged since the files were taken went with them; started again, \
                 the provider serves what data_dir holds now, and consumers that replicated those writes reload \
                 in full"
            );
        }
        bail!(
            "the store failed ({failure}); every acknowledged write is on disk: fix the cause (free space, lift \
             the limit, repair the disk) and start the provider again, and consumers resume by delta"
        );
    }
    info!(csn = %dir.durable_csn(), "provider stopped");
    Ok(())
}

/// Flushes the store at a clean stop: `None` once flushed, or the store's failure if it
/// fails first (a flush stuck in sled ends there, when the watchdog latches it).
async fn final_flush(dir: &Arc<Directory>) -> Result<Option<tether_store::StoreFailure>> {
    let flush_dir = dir.clone();
    match dir.failure().unless_failed(tokio::task::spawn_blocking(move || flush_dir.flush())).await {
        Ok(flushed) => match flushed.context("flush task")? {
            Ok(()) => Ok(None),
            Err(e) => dir.failure().latched().map(Some).ok_or(e).context("final flush"),
        },
        Err(failure) => Ok(Some(failure)),
    }
}

/// Re-reads the config and applies the consumer list, the writer secret and the TLS
/// files (for new connections). Everything is read and checked before anything changes.
fn reload(
    config_path: &Path,
    running: &ProviderConfig,
    server: &Server,
    retention: &watch::Sender<ChangelogConfig>,
    served: &watch::Sender<Option<Served>>,
) -> Result<String> {
    let config = ProviderConfig::load(config_path)?;
    let restart_only = running.restart_only_changes(&config);
    let config = config.for_running_suffix(&running.suffix)?;
    let (grants, secret_warnings) = grants(&config)?;
    let tls = tls::server_config_of(&config)?;
    let tls_now = tls.is_some();
    let tls_before = server.replace_tls(tls);
    served.send_replace(config.tls.as_ref().and_then(tls::served));
    let revoked = server.replace_grants(grants);
    let retention_changed = retention.send_if_modified(|r| std::mem::replace(r, config.changelog) != config.changelog);
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    // Turning TLS on or off changes what every new connection must speak, consumers'
    // and writers' alike: said, not left to be found in their errors.
    let tls_change = match (tls_before, tls_now) {
        (false, true) => {
            let plain = server.registry().snapshot().iter().filter(|s| !s.tls).count();
            let left = match plain {
                0 => String::new(),
                1 => ", and the 1 session connected in plain TCP stays so until it reconnects".to_owned(),
                n => format!(", and the {n} sessions connected in plain TCP stay so until they reconnect"),
            };
            format!("; TLS on: new connections must use TLS{left}")
        }
        (true, false) => {
            // A downgrade: entries and secrets' proofs go in clear from now on. Logged
            // as a warning, so that alerting on the log sees it, and kept in the reply.
            let off = "TLS off: new connections are plain TCP (entries cross the network unencrypted)";
            warn!("{off}");
            format!("; {off}")
        }
        _ => String::new(),
    };
    // A certificate past its end (or before its start) loads like any other: said here,
    // where the operator who replaced the files looks.
    let mut expiry = String::new();
    for warning in config.tls.as_ref().map(tls::warnings).unwrap_or_default() {
        warn!("{warning}");
        expiry += &format!("; warning: {warning}");
    }

    // Applied at once, and the trim it starts may reload consumers: said where the
    // operator who changed it looks.
    let retention_change = if retention_changed {
        let c = &config.changelog;
        format!(
            "; changelog retention now max_changes {}, max_age {}, hold_for_consumers {}, trim_interval {} (trimming \
             now)",
            c.max_changes,
            humantime::format_duration(c.max_age),
            humantime::format_duration(c.hold_for_consumers),
            humantime::format_duration(c.trim_interval)
        )
    } else {
        String::new()
    };
    let msg = format!(
        "reloaded {}: {}, {} revoked{retention_change}{tls_change}{expiry}",
        config_path.display(),
        plural(config.consumers.len(), "agreement", "agreements"),
        plural(revoked, "session", "sessions")
    );
    let mut reply = reload_report(msg, &restart_only, "provider");
    // A `listen` that waits for the restart is tried now: one that cannot be bound (an
    // address not on this host, a port below 1024) was found only at the next start,
    // after the running provider had been stopped. In use is no proof (the running
    // provider holds its own address, perhaps under another name): the start says so.
    // An address only: a name's lookup could hold the reload, and is done at the start.
    let listen_ip = config.listen.host().parse::<std::net::IpAddr>().ok();
    if let Some(ip) = listen_ip.filter(|_| restart_only.contains(&"listen")) {
        if let Err(e) = std::net::TcpListener::bind((ip, config.listen.addr().1)) {
            if e.kind() != std::io::ErrorKind::AddrInUse {
                let warning =
                    format!("the new listen {} cannot be bound ({e}): the next start will fail on it", config.listen);
                warn!("{warning}");
                reply += &format!("; warning: {warning}");
            }
        }
    }
    // A secret file others may read, said where the operator who wrote it looks (the
    // log has it already, once).
    for warning in secret_warnings {
        reply += &format!("; warning: {warning}");
    }
    Ok(reply)
}

/// Trims the changelog every `trim_interval`, under the retention the config holds now:
/// a reload that changes `[changelog]` takes effect at once (and trims at once), so an
/// operator lowering retention to free space does not have to restart the provider.
async fn trim_loop(
    dir: Arc<Directory>,
    registry: Registry,
    mut retention: watch::Receiver<ChangelogConfig>,
    shutdown: CancellationToken,
) {
    // Consumers' absence counts from the start at the earliest (`up_since_ms`).
    let started = now_ms();
    loop {
        let current = *retention.borrow_and_update();
        trim_once(&dir, &registry, &current, started).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(current.trim_interval) => {}
            changed = retention.changed() => {
                if changed.is_err() {
                    return;
                }
                // Name the retention the reload set, the one this trim runs under.
                let new = *retention.borrow();
                info!(
                    max_changes = new.max_changes,
                    max_age = %humantime::format_duration(new.max_age),
                    hold_for_consumers = %humantime::format_duration(new.hold_for_consumers),
                    trim_interval = %humantime::format_duration(new.trim_interval),
                    "changelog retention changed by reload: trimming now"
                );
            }
        }
    }
}

/// Milliseconds since the epoch, as the store's records keep time.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How many of the consumers a trim forgot its log line names.
const SHOWN_FORGOTTEN: usize = 8;

/// The forgotten consumers as `agreement/consumer-id`, at most [`SHOWN_FORGOTTEN`] of
/// them and how many more: a provider that served thousands of short-lived consumer
/// stores (containers started fresh) forgets them by the thousand.
fn forgotten_names(ids: &[String]) -> String {
    let mut shown = ids.iter().take(SHOWN_FORGOTTEN).map(String::as_str).collect::<Vec<_>>().join(", ");
    if ids.len() > SHOWN_FORGOTTEN {
        shown.push_str(&format!(" and {} more", ids.len() - SHOWN_FORGOTTEN));
    }
    shown
}

async fn trim_once(dir: &Arc<Directory>, registry: &Registry, retention: &ChangelogConfig, started_ms: u64) {
    let policy = RetentionPolicy {
        max_changes: Some(retention.max_changes),
        max_age: Some(retention.max_age),
        hold_for_consumers: retention.hold_for_consumers,
        up_since_ms: started_ms,
    };
    let d = dir.clone();
    let now = now_ms();
    let connected = registry.connected_positions();
    match tokio::task::spawn_blocking(move || d.trim_connected(&policy, now, &connected)).await {
        Ok(Ok(r)) if r.removed > 0 && r.forgotten.is_empty() => {
            info!(removed = r.removed, floor = %r.floor, "changelog trimmed")
        }
        // A warning, as operations.md's monitoring table has it: those consumers cost a
        // present refresh each, which a longer hold or retention would have spared.
        Ok(Ok(r)) if r.removed > 0 => warn!(
            removed = r.removed,
            floor = %r.floor,
            forgotten_consumers = r.forgotten.len(),
            forgotten = %forgotten_names(&r.forgotten),
            "changelog trimmed past the positions of consumers: each gets a present refresh when it next connects"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(error = %e, "changelog trim failed"),
        Err(e) => error!(error = %e, "changelog trim task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload refused for its `[tls]` files changes nothing, the grants it read before
    /// them included: a session whose agreement got another secret in the same edit runs
    /// on under the grant the provider keeps, and is revoked once the file loads whole.
    #[tokio::test]
    async fn a_reload_refused_for_its_tls_files_revokes_no_session() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("provider.toml");
        let config = |secret_file: &str, tls: &str| {
            format!(
                "suffix = \"dc=example,dc=com\"\n{tls}[[consumer]]\nagreement = \"people\"\nsecret_file = \"{secret_file}\"\n"
            )
        };
        std::fs::write(tmp.path().join("old.key"), "the secret people had").unwrap();
        std::fs::write(tmp.path().join("new.key"), "the secret people has now").unwrap();
        std::fs::write(&file, config("old.key", "")).unwrap();
        let running = ProviderConfig::load(&file).unwrap();
        let dir = Arc::new(Directory::open(&tmp.path().join("data"), &running.suffix).unwrap());
        let server =
            Server::new(dir, grants(&running).unwrap().0, None, crate::server::test_params(), CancellationToken::new());
        let mut info = crate::registry::SessionInfo::for_test(1, "127.0.0.1:40000", "people", "c1");
        info.base = Some(running.suffix.clone());
        let session = server.registry().register(info, &CancellationToken::new());
        let (retention, _) = watch::channel(running.changelog);
        let (served, _) = watch::channel(None);

        let missing = "[tls]\ncert_file = \"missing.pem\"\nkey_file = \"missing.key\"\n";
        std::fs::write(&file, config("new.key", missing)).unwrap();
        let refused = reload(&file, &running, &server, &retention, &served).unwrap_err();
        assert!(format!("{refused:#}").contains("missing.pem"), "{refused:#}");
        assert!(!session.cancel.is_cancelled(), "a refused reload revoked a session");

        std::fs::write(&file, config("new.key", "")).unwrap();
        let reply = reload(&file, &running, &server, &retention, &served).unwrap();
        assert!(reply.contains("1 agreement, 1 session revoked"), "{reply}");
        assert!(session.cancel.is_cancelled());
    }

    /// A reload says "TLS on" when it turns TLS on, not at every reload that finds it on:
    /// renewing a certificate (replace the files, reload) is routine, and the reply of
    /// each would read as a change of what every client must speak.
    #[tokio::test]
    async fn a_reload_says_tls_on_only_when_it_turns_tls_on() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("provider.toml");
        let generated = rcgen::generate_simple_self_signed(vec!["provider.test".to_owned()]).unwrap();
        std::fs::write(tmp.path().join("provider.crt"), generated.cert.pem()).unwrap();
        std::fs::write(tmp.path().join("provider.key"), generated.key_pair.serialize_pem()).unwrap();
        let tls = "[tls]\ncert_file = \"provider.crt\"\nkey_file = \"provider.key\"\n";
        std::fs::write(tmp.path().join("people.key"), "the secret people have").unwrap();
        // Kept as an operator keeps them, so that the reply holds no warning of them.
        for key in ["provider.key", "people.key"] {
            std::fs::set_permissions(tmp.path().join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = |tls: &str| {
            format!("suffix = \"dc=example,dc=com\"\n{tls}[[consumer]]\nagreement = \"people\"\nsecret_file = \"people.key\"\n")
        };
        std::fs::write(&file, config("")).unwrap();
        let running = ProviderConfig::load(&file).unwrap();
        let dir = Arc::new(Directory::open(&tmp.path().join("data"), &running.suffix).unwrap());
        let server =
            Server::new(dir, grants(&running).unwrap().0, None, crate::server::test_params(), CancellationToken::new());
        let (retention, _) = watch::channel(running.changelog);
        let (served, watched) = watch::channel(None);

        std::fs::write(&file, config(tls)).unwrap();
        let on = reload(&file, &running, &server, &retention, &served).unwrap();
        assert!(on.ends_with("; TLS on: new connections must use TLS"), "{on}");
        // The files renewed (here: the same ones), and reloaded: TLS was on already.
        let again = reload(&file, &running, &server, &retention, &served).unwrap();
        assert!(again.ends_with("1 agreement, 0 sessions revoked"), "{again}");
        // The certificate the reload serves is the one whose expiry is watched.
        let certificate = watched.borrow().clone().expect("a served certificate watched");
        assert_eq!(certificate.file, tmp.path().join("provider.crt"));
        std::fs::write(&file, config("")).unwrap();
        let off = reload(&file, &running, &server, &retention, &served).unwrap();
        assert!(off.contains("TLS off"), "{off}");
        assert_eq!(*watched.borrow(), None, "a certificate no longer served still watched");
    }

    /// A store holding its suffix entry (one changelog record), and the position id of
    /// the consumer `people/c1`.
    fn directory_with_one_change() -> (tempfile::TempDir, Arc<Directory>, String) {
        let tmp = tempfile::tempdir().unwrap();
        let suffix = tether_protocol::Dn::parse("dc=example,dc=com").unwrap();
        let dir = Arc::new(Directory::open(&tmp.path().join("data"), &suffix).unwrap());
        let mut attrs = tether_protocol::Attributes::new();
        attrs.add("objectClass", [tether_protocol::Value::from("domain")]).unwrap();
        attrs.add("dc", [tether_protocol::Value::from("example")]).unwrap();
        dir.write(&tether_protocol::Change::Add { dn: suffix, attrs }).unwrap();
        (tmp, dir, crate::session::position_id("people", "c1"))
    }

    /// Waits for the clock to pass `ms`: a record or position of then is older than a
    /// millisecond-long `max_age` or hold once it has.
    fn wait_past(ms: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while now_ms() <= ms {
            assert!(std::time::Instant::now() < deadline, "the clock did not pass {ms}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The trimmer trims by `max_age`, not by another of `[changelog]`'s durations: with
    /// the default week, a change made just now stays, however short the hold.
    #[tokio::test]
    async fn the_trimmer_keeps_a_change_younger_than_max_age_however_short_the_hold() {
        let (_tmp, dir, _) = directory_with_one_change();
        let written = dir.changelog().get(dir.durable_csn()).unwrap().unwrap().time_ms;
        let retention = ChangelogConfig { hold_for_consumers: Duration::from_millis(1), ..ChangelogConfig::default() };
        wait_past(written + 1);
        trim_once(&dir, &Registry::default(), &retention, 0).await;
        assert_eq!(dir.floor().unwrap(), tether_protocol::Csn::ZERO, "a week has not passed");
        assert_eq!(dir.changelog().oldest().unwrap(), Some(dir.durable_csn()));
    }

    /// After a start every known consumer is held again for the hold's length, however
    /// long ago it was seen: while the provider was down no consumer could connect. The
    /// same trim with no start within the hold passes the consumer's position.
    #[tokio::test]
    async fn after_a_start_the_trimmer_holds_every_known_consumer_for_the_hold_again() {
        let (_tmp, dir, id) = directory_with_one_change();
        dir.record_consumer(&id, tether_protocol::Csn::ZERO).unwrap();
        let seen = dir.consumer_positions().unwrap()[0].1.seen_ms;
        let retention = ChangelogConfig {
            max_age: Duration::from_millis(1),
            hold_for_consumers: Duration::from_secs(2),
            ..ChangelogConfig::default()
        };
        // Seen longer ago than the hold, and the change older than `max_age`. The start
        // below is within the hold unless the test stalls for the hold's length between
        // reading the clock and the trim doing so: long enough for a loaded machine.
        wait_past(seen + 2000);
        trim_once(&dir, &Registry::default(), &retention, now_ms()).await;
        assert_eq!(dir.floor().unwrap(), tether_protocol::Csn::ZERO, "held since the start");
        trim_once(&dir, &Registry::default(), &retention, 0).await;
        assert_eq!(dir.floor().unwrap(), dir.durable_csn(), "no start within the hold: nothing holds");
        assert!(dir.consumer_positions().unwrap().is_empty(), "and its position was forgotten");
    }

    /// The trimmer counts a consumer connected now as seen now, whenever its session last
    /// wrote its position (every minute or so while nothing moves): with a shorter hold a
    /// paused consumer was trimmed past and reloaded. Once its session is gone, it is not.
    #[tokio::test]
    async fn the_trimmer_holds_a_connected_consumer_whenever_its_position_was_written() {
        let (_tmp, dir, id) = directory_with_one_change();
        dir.record_consumer(&id, tether_protocol::Csn::ZERO).unwrap();
        let seen = dir.consumer_positions().unwrap()[0].1.seen_ms;
        let retention = ChangelogConfig {
            max_age: Duration::from_millis(1),
            hold_for_consumers: Duration::from_millis(1),
            ..ChangelogConfig::default()
        };
        let registry = Registry::default();
        let session = registry.register(
            crate::registry::SessionInfo::for_test(1, "127.0.0.1:40000", "people", "c1"),
            &CancellationToken::new(),
        );
        wait_past(seen + 1);
        trim_once(&dir, &registry, &retention, 0).await;
        assert_eq!(dir.floor().unwrap(), tether_protocol::Csn::ZERO, "held while connected");
        drop(session);
        trim_once(&dir, &registry, &retention, 0).await;
        assert_eq!(dir.floor().unwrap(), dir.durable_csn(), "not once its session ended");
    }

    /// The trimmer counts a consumer's absence from the provider's start at the earliest,
    /// not from each of its trims: once the hold has passed since both, age trimming
    /// passes the position of a consumer that did not come back.
    #[tokio::test]
    async fn the_trimmer_counts_an_absence_from_the_start_not_from_each_trim() {
        let (_tmp, dir, id) = directory_with_one_change();
        dir.record_consumer(&id, tether_protocol::Csn::ZERO).unwrap();
        let retention = ChangelogConfig {
            max_age: Duration::from_millis(1),
            hold_for_consumers: Duration::from_millis(100),
            trim_interval: Duration::from_millis(10),
            ..ChangelogConfig::default()
        };
        let (_retention, retention_rx) = watch::channel(retention);
        let shutdown = CancellationToken::new();
        let trimmer = tokio::spawn(trim_loop(dir.clone(), Registry::default(), retention_rx, shutdown.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while dir.floor().unwrap() != dir.durable_csn() {
            assert!(std::time::Instant::now() < deadline, "the trimmer held the consumer gone since before its start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        trimmer.await.unwrap();
    }

    #[test]
    fn a_trim_names_a_few_forgotten_consumers_and_counts_the_rest() {
        let few: Vec<String> = vec!["people/a".into(), "groups/b".into()];
        assert_eq!(forgotten_names(&few), "people/a, groups/b");
        let many: Vec<String> = (0..20).map(|i| format!("people/c{i}")).collect();
        let shown = forgotten_names(&many);
        assert!(shown.starts_with("people/c0, people/c1, ") && shown.ends_with("people/c7 and 12 more"), "{shown}");
    }
}
