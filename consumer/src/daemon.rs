//! `tether-consumer run`: the running consumer. Owns the store, one supervisor per
//! agreement, and the control endpoint; applies `reload` (and SIGHUP) by diffing the
//! agreements; on SIGTERM/SIGINT tells every supervisor to shut down (each says goodbye
//! `shutdown`), waits up to `shutdown_timeout`, flushes, and exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tether_config::shell::{error_chain, reload_report, Signal, Signals};
use tether_protocol::{Filter, SearchSpec, Secret};
use tether_store::{RegionAdopted, ReplicaStore, StoreFailure};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{load_secret, AgreementConfig, ConfigError, ConsumerConfig};
use crate::control::{self, ControlContext};
use crate::reason::State;
use crate::session::SessionConfig;
use crate::status::StatusHandle;
use crate::supervisor::{Command, Supervisor};
use crate::tls::TlsClient;

/// Commands a supervisor can have queued.
const COMMAND_QUEUE: usize = 8;
/// Environment variable that turns the apply audit on (see `ReplicaStore::set_audit`).
pub const AUDIT_ENV: &str = "TETHER_APPLY_AUDIT";

/// A running agreement.
#[derive(Debug)]
pub struct Running {
    /// Its configuration (compared on reload).
    pub config: AgreementConfig,
    /// What it read from the files its configuration names, which can change while the
    /// configuration does not (compared on reload too).
    pub files: FileContents,
    /// Its command channel.
    pub commands: mpsc::Sender<Command>,
    /// Its status.
    pub status: StatusHandle,
    /// Its task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The contents of an agreement's `secret_file` and TLS `ca_file`, as its sessions use
/// them: a rotated secret or a renewed CA keeps its file name, and must still restart
/// the agreement on `reload` (one closed by the provider for revoked credentials waits
/// for exactly that). Its `Debug` shows no secret (see [`Secret`]).
#[derive(Debug)]
pub struct FileContents {
    secret: Secret,
    tls: Option<TlsClient>,
}

impl FileContents {
    fn of(session: &SessionConfig) -> Self {
        Self { secret: session.secret.clone(), tls: session.tls.clone() }
    }

    fn same_as(&self, other: &FileContents) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (Some(a), Some(b)) => a.same_trust(b),
            (None, None) => true,
            _ => false,
        };
        self.secret == other.secret && same_tls
    }
}

#[cfg(test)]
impl FileContents {
    /// What a test's agreement, which reads no file, holds.
    pub(crate) fn for_tests() -> Self {
        Self { secret: Secret::new(vec![7u8; 32]).unwrap(), tls: None }
    }
}

/// Every running agreement, by name.
pub type Agreements = Arc<Mutex<BTreeMap<String, Running>>>;

/// The region an agreement replicates, with its filter parsed; errors name the key.
pub fn spec_of(config: &ConsumerConfig, index: usize, a: &AgreementConfig) -> Result<SearchSpec> {
    Ok(crate::config::region(&config.file, index, a)?)
}

/// The region of `a`, if its filter parses (a loaded configuration's does).
fn region_of(a: &AgreementConfig) -> Option<SearchSpec> {
    let filter = Filter::parse(&a.filter).ok()?;
    Some(SearchSpec { base: a.base.clone(), scope: a.scope, filter, attrs: a.attrs.clone() })
}

fn session_config(
    config: &ConsumerConfig,
    index: usize,
    a: &AgreementConfig,
    client_id: &str,
) -> Result<SessionConfig> {
    // Its warnings (a file others may read) were logged by `check_files`, once.
    let secret = load_secret(&a.secret_file)
        .map_err(|e| ConfigError::invalid(&config.file, format!("agreement[{index}].secret_file"), e.to_string()))?
        .secret;
    let tls = config.tls_client(index, a)?;
    Ok(SessionConfig {
        name: a.name.clone(),
        provider: a.provider.to_string(),
        mode: a.mode,
        spec: spec_of(config, index, a)?,
        secret,
        client_id: client_id.to_owned(),
        idle_timeout: a.idle_timeout,
        keepalive: a.keepalive.enabled.then_some((a.keepalive.interval, a.keepalive.timeout)),
        tls,
        network: crate::transport::Network::Tcp,
        provider_proof: a.provider_proof,
        failed_addresses: crate::transport::FailedAddresses::default(),
    })
}

/// The session configuration of every agreement of `config`, in its order: its files
/// (secrets, CA files) are all read before any agreement starts, so that one that
/// cannot be read stops the start or reload before anything changed (read as each
/// started, a process out of open files failed at the twentieth agreement's secret,
/// its first nineteen sessions already connecting).
fn session_configs(config: &ConsumerConfig, client_id: &str) -> Result<Vec<SessionConfig>> {
    config.agreements.iter().enumerate().map(|(i, a)| session_config(config, i, a, client_id)).collect()
}

/// Starts the supervisor of agreement `a`, whose session is `session`.
fn start(store: &ReplicaStore, a: &AgreementConfig, session: SessionConfig) -> Result<Running> {
    let files = FileContents::of(&session);
    let replica = store.replica(&a.name).with_context(|| format!("opening the replica of {:?}", a.name))?;
    // Whether it was kept for this region is checked here, where every start and every
    // reload of the agreement passes, whatever changed while the consumer was stopped.
    match replica.adopt_region(&session.spec).with_context(|| format!("recording the region of {:?}", a.name))? {
        RegionAdopted::Kept => {}
        RegionAdopted::Reloads => info!(
            agreement = %a.name,
            "the replica was made for another region (base, scope, filter or attrs): it will be reloaded in full"
        ),
        RegionAdopted::Unrecorded => warn!(
            agreement = %a.name,
            "the replica was made by an older build, which kept no record of its region: it is taken to be the \
             agreement's base, scope, filter and attrs as configured, and resumes from its cookie; if they changed \
             in the same restart, reload it in full: take the agreement out of the file, `reload`, put it back, \
             `reload`"
        ),
        RegionAdopted::Outdated => warn!(
            agreement = %a.name,
            "the replica was reloaded by an older build (a rollback) since this build recorded its region, so what \
             region it holds is unknown: it will be reloaded in full"
        ),
    }
    let status = StatusHandle::new(&a.name, &a.provider.to_string(), &a.mode.to_string());
    status.update(|s| s.tls = a.tls.is_some());
    if let Ok(Some(cookie)) = replica.cookie() {
        status.update(|s| s.cookie = Some(cookie.to_string()));
    }
    // Stale since before this start, if it was: a provider down across a restart of
    // the consumer showed a replica as fresh as the restart.
    if let Ok(Some(at_ms)) = replica.current_at() {
        status.resume_current_at(at_ms);
    }
    let entries = replica.len().unwrap_or(0);
    status.update(|s| s.entries = entries);
    // Read here, not only as a session connects: an agreement started stopped runs no
    // session, and showed none while the store kept the proof that decides refusals.
    if let Ok(Some(ms)) = replica.provider_proved_at() {
        status.update(|s| s.provider_proved_at = Some(crate::status::rfc3339_of_ms(ms)));
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let supervisor = Supervisor {
        session,
        interval: a.interval,
        retry: a.retry.clone(),
        give_up_after: a.give_up_after,
        store: store.clone(),
        replica,
        status: status.clone(),
        commands: rx,
        jitter: crate::retry::Jitter::Entropy,
    };
    let span = info_span!("agreement", agreement = %a.name, provider = %a.provider);
    let supervised = tokio::spawn(supervisor.run().instrument(span.clone()));
    let task = tokio::spawn(owned(supervised, status.clone()).instrument(span));
    Ok(Running { config: a.clone(), files, commands: tx, status, task })
}

/// Waits for an agreement's supervisor, and if it panicked (a bug), says so where an
/// operator looks: status showed the state it panicked in (`refreshing`, the lag
/// growing, no error) for as long as the process ran, and the log had only the panic.
async fn owned(supervised: tokio::task::JoinHandle<()>, status: StatusHandle) {
    let Err(e) = supervised.await else { return };
    if !e.is_panic() {
        return;
    }
    let panic = e.into_panic();
    let what = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    let error = format!(
        "the agreement's task failed ({}): a bug, please report it with the log; it runs again when the consumer \
         restarts",
        what.unwrap_or("a panic")
    );
    error!(error = %error, "agreement stopped");
    status.update(|s| {
        s.state = State::Closed;
        s.set_error(error);
    });
}

/// Stops a running agreement's supervisor, for the reload `why` names, and waits for it.
async fn shut(running: Running, why: Command) {
    let _ = running.commands.send(why).await;
    let _ = running.task.await;
    // A `wait` on it looks again: at the agreement started in its place, or at none.
    running.status.retire();
}

/// What status and refused commands say once the store has failed: sled keeps the error
/// for the open store (see `tether_store::failure`), so only a new process goes on.
pub fn store_failed(failure: &StoreFailure) -> String {
    if failure.damaged() {
        // A replica is a copy: the way out of damage is a new one, not a repair.
        return format!(
            "the store is damaged ({failure}): sled read a page that is not what it wrote, and no agreement can \
             use it any more; stop the consumer, move data_dir aside and start it again: each replica reloads \
             in full from the provider"
        );
    }
    if failure.taken_away() {
        return format!(
            "{failure}. No agreement can use the store any more; restart the consumer: it opens what data_dir \
             holds now, and each replica resumes from the cookie found there"
        );
    }
    format!(
        "the store failed ({failure}): no agreement can write to it any more; fix the cause (free space, lift \
         the limit, repair the disk) and restart the consumer: each replica resumes from its last durable cookie"
    )
}

/// Re-reads the config: starts new agreements, stops removed ones (dropping their
/// replica), restarts changed ones; leaves the rest alone.
pub async fn reload(
    config_path: &Path,
    running_config: &ConsumerConfig,
    store: &ReplicaStore,
    agreements: &Agreements,
    client_id: &str,
) -> Result<String> {
    if let Some(failure) = store.failure().latched() {
        bail!(store_failed(&failure));
    }
    let config = ConsumerConfig::load(config_path)?;
    let mut warnings = config.check_files()?;
    // Agreements added since the start may need more files than the start found, and
    // the operator adding them reads the reload's reply, not the start's log.
    warnings.extend(check_open_files_limit(config.agreements.len()));
    for w in &warnings {
        warn!("{w}");
    }
    // Validate every agreement before touching any.
    let sessions = session_configs(&config, client_id)?;
    let files: BTreeMap<_, _> = config
        .agreements
        .iter()
        .zip(&sessions)
        .map(|(a, session)| (a.name.clone(), FileContents::of(session)))
        .collect();
    let mut running = agreements.lock().await;
    let mut report = Vec::new();
    let mut restarted = std::collections::BTreeSet::new();
    // From the first agreement stopped on, a failure leaves the running set neither
    // the configuration last read nor the new one, and its error says what was done.
    let mut done = Changed::default();
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        let Some(new) = config.agreement(&name) else {
            if let Some(r) = running.remove(&name) {
                shut(r, Command::Reload { removed: true }).await;
                done.stopped.push(name.clone());
            }
            let entries = remove_replica(store, &name).map_err(|e| done.failed(&e))?;
            report.push(format!("removed {name} (its replica of {entries} entries deleted)"));
            continue;
        };
        let changed = running
            .get(&name)
            .is_some_and(|r| &r.config != new || files.get(&name).is_some_and(|f| !f.same_as(&r.files)));
        if changed {
            let mut region_changed = false;
            if let Some(old) = running.remove(&name) {
                region_changed = match (region_of(&old.config), region_of(new)) {
                    (Some(was), Some(now)) => !was.same_region(&now),
                    _ => true,
                };
                // `start` below reloads the replica in full if its region changed.
                shut(old, Command::Reload { removed: false }).await;
                done.stopped.push(name.clone());
            }
            // What the operator must expect: a full refresh, and the replica refused to
            // searches until it is done; for an agreement an operator stopped, nothing
            // until it is started.
            let stopped = store
                .existing_replica(&name)
                .and_then(|r| r.map(|r| r.is_admin_stopped()).transpose())
                .map_err(|e| done.failed(&e.into()))?
                .unwrap_or(false);
            report.push(match (stopped, region_changed) {
                (false, false) => format!("restarted {name}"),
                (false, true) => format!("restarted {name} (its region changed: reloaded in full)"),
                (true, false) => format!("changed {name} (stopped: the change applies when it is started)"),
                (true, true) => format!("changed {name} (stopped; its region changed: reloaded in full when started)"),
            });
            restarted.insert(name);
        }
    }
    for (a, session) in config.agreements.iter().zip(sessions) {
        if !running.contains_key(&a.name) {
            let r = start(store, a, session).map_err(|e| done.failed(&e))?;
            running.insert(a.name.clone(), r);
            done.started.push(a.name.clone());
            if !restarted.contains(&a.name) {
                report.push(format!("added {}", a.name));
            }
        }
    }
    let msg = if report.is_empty() {
        "reloaded: nothing changed".to_owned()
    } else {
        format!("reloaded: {}", report.join(", "))
    };
    let mut reply = reload_report(msg, &running_config.restart_only_changes(&config), "consumer");
    // A secret file others may read, or too few open files for the agreements added,
    // said where the operator who wrote the file looks (the log has it already, once).
    for w in warnings {
        reply += &format!("; warning: {w}");
    }
    Ok(reply)
}

/// The agreements a reload had stopped and started when it failed.
#[derive(Debug, Default)]
struct Changed {
    stopped: Vec<String>,
    started: Vec<String>,
}

impl Changed {
    /// `error`, or, once an agreement was stopped, [`PartlyReloaded`] with it.
    fn failed(&self, error: &anyhow::Error) -> anyhow::Error {
        let reason = error_chain(&**error);
        if self.stopped.is_empty() && self.started.is_empty() {
            return anyhow::anyhow!(reason);
        }
        let list = |names: &[String]| if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        PartlyReloaded { reason, stopped: list(&self.stopped), started: list(&self.started) }.into()
    }
}

/// A reload that failed after it had stopped agreements: the running set is then
/// neither the configuration last read nor the new one, which its reply and log say,
/// rather than that nothing changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{reason}; the reload failed part-way: it had stopped {stopped} and started {started}, so the consumer runs \
     neither the configuration it last read nor the new one (status lists what runs): fix the cause and reload \
     again, or restart the consumer"
)]
pub struct PartlyReloaded {
    reason: String,
    stopped: String,
    started: String,
}

/// Deletes the replica of `name`, an agreement the configuration no longer names, and
/// says so at WARN with what it held: whether by a reload or at a start, this is where
/// a file cut short or an agreement removed by mistake shows, and the entries are gone.
/// Returns how many entries it held.
fn remove_replica(store: &ReplicaStore, name: &str) -> Result<usize> {
    let entries = store.existing_replica(name)?.map(|r| r.len()).transpose()?.unwrap_or(0);
    store.remove(name).with_context(|| format!("removing the replica of {name:?}"))?;
    warn!(agreement = %name, entries, "removed the replica of an agreement the configuration no longer names");
    Ok(entries)
}

/// What a reload that failed did, for the reply and the command's error.
pub const KEPT_AS_READ: &str = "the consumer keeps the configuration it last read";

/// The reply to a `reload` asked on the control socket: its report, or its error, also
/// logged, since the log is where an operator looks for what the process did.
fn reload_reply(result: Result<String>) -> Result<String, String> {
    result.map_err(|e| {
        let partly = e.downcast_ref::<PartlyReloaded>().is_some();
        let e = error_chain(&*e);
        if partly {
            error!("reload requested on the control socket failed: {e}");
            return e;
        }
        error!("reload requested on the control socket failed, keeping the running agreements: {e}");
        format!("{e}; nothing changed: {KEPT_AS_READ}")
    })
}

/// Descriptors a consumer may hold besides its agreements' connections: the store's
/// files, the control socket and its clients, the runtime's own (about 15 at rest).
const FILES_BESIDES_AGREEMENTS: u64 = 64;

/// Raises the open files limit as far as the hard limit allows (a no-op once it is
/// there), and returns a warning when it is still low for `agreements`: past it,
/// connections fail and commands time out, each separately and later.
fn check_open_files_limit(agreements: usize) -> Option<String> {
    let needed = FILES_BESIDES_AGREEMENTS.saturating_add(2 * agreements as u64);
    match tether_config::shell::raise_open_files_limit() {
        Ok(Some(limit)) if limit < needed => Some(format!(
            "the open files limit of {limit} is low for {agreements} agreements: the consumer may need {needed} \
             files (each agreement holds a connection, and the store and commands use up to \
             {FILES_BESIDES_AGREEMENTS} besides), and past it connections fail and commands time out; raise the \
             hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn)"
        )),
        Ok(_) => None,
        Err(e) => Some(format!("could not raise the open files limit: {e}")),
    }
}

/// Runs the consumer until a shutdown signal.
pub async fn run(config_path: &Path) -> Result<()> {
    // Before anything can announce readiness: a SIGHUP that arrives right after
    // "consumer running" must reload, not take the default action (terminate).
    let mut signals = Signals::install().context("installing signal handlers")?;
    let config = ConsumerConfig::load(config_path)?;
    // Before the files are read: a low soft limit would fail them for want of
    // descriptors, and the agreements' connections and commands after them.
    if let Some(w) = check_open_files_limit(config.agreements.len()) {
        warn!("{w}");
    }
    for w in config.check_files()? {
        warn!("{w}");
    }
    // Before the store is created or opened: a process that cannot take its control
    // socket (another process answers on it) changes nothing.
    let (listener, control_file) =
        tether_config::shell::take_place(&config.data_dir, &config.control, config.status_group.as_ref(), &config.file)
            .await?;
    // So is one that cannot take its metrics port.
    let metrics = match &config.metrics_listen {
        Some(addr) => Some(tether_config::metrics::endpoint::bind(addr).await?),
        None => None,
    };
    let new = !tether_store::store_exists(&config.data_dir);
    let loose = tether_config::shell::private_data_dir(&config.data_dir, new)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    if let Some(warning) = loose {
        warn!("{warning}");
    }
    if let Some(warning) = tether_config::shell::root_on_anothers_store(&config.data_dir) {
        warn!("{warning}");
    }
    let store = ReplicaStore::open_with(
        &config.data_dir,
        &tether_store::StoreOptions {
            cache_bytes: config.cache_size,
            lock_wait: tether_config::shell::START_LOCK_WAIT,
        },
    )
    .map_err(|e| {
        let hint = match e {
            // Not a consumer of this file (that one holds the control socket), and
            // held past the wait.
            tether_store::StoreError::Locked(_) => tether_config::shell::held_at_start_hint(&config.data_dir),
            _ => e.open_hint().to_owned(),
        };
        anyhow::Error::new(e).context(format!("opening store {}{hint}", config.data_dir.display()))
    })?;
    let client_id = crate::identity::client_id(&config.data_dir)?;
    if std::env::var(AUDIT_ENV).is_ok_and(|v| v == "1") {
        info!("apply audit on: every incremental apply is logged to prove exactly-once");
        store.set_audit(true);
    }
    // A replica whose agreement left the configuration while the consumer was stopped
    // goes as it would on a reload: kept, it would hold its disk space for good, seen by
    // no command (they all go by the configuration).
    for name in store.names().context("listing the replicas")? {
        if config.agreement(&name).is_none() {
            remove_replica(&store, &name)?;
        }
    }
    let agreements: Agreements = Arc::default();
    {
        let mut running = agreements.lock().await;
        for (a, session) in config.agreements.iter().zip(session_configs(&config, &client_id)?) {
            running.insert(a.name.clone(), start(&store, a, session)?);
        }
    }
    let shutdown = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let ctx = ControlContext {
        store: store.clone(),
        agreements: agreements.clone(),
        reload: reload_tx,
        shutdown: shutdown.clone(),
        config_file: tether_protocol::control::StartedWith::new(&config.file),
        consumer_id: client_id.clone(),
        metrics_listen: metrics.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let metrics_task = metrics.map(|listener| {
        let ctx = ctx.clone();
        tokio::spawn(tether_config::metrics::endpoint::serve(listener, shutdown.clone(), move || {
            let ctx = ctx.clone();
            async move { Ok(crate::metrics::render(&ctx.status().await)) }
        }))
    });
    let control_task = tokio::spawn(control::serve(listener, config.status_group.clone(), ctx));
    info!(agreements = config.agreements.len(), "consumer running");
    tether_config::output::announce("consumer running");

    // The store's failure closes every agreement, each with a warning of its own; the
    // process says it once at ERROR, as the provider does, naming the way on, so an
    // alert on the log's errors sees it.
    let mut failure_told = false;
    loop {
        tokio::select! {
            failure = store.failure().failed(), if !failure_told => {
                failure_told = true;
                error!("{}", store_failed(&failure));
            }
            sig = signals.next() => match sig {
                Signal::Shutdown(name) => {
                    info!("{name}: shutting down");
                    break;
                }
                Signal::Reload => {
                    info!("SIGHUP: reloading configuration");
                    match reload(config_path, &config, &store, &agreements, &client_id).await {
                        Ok(_) => {}
                        Err(e) if e.downcast_ref::<PartlyReloaded>().is_some() => {
                            error!("reload failed: {}", error_chain(&*e));
                        }
                        Err(e) => error!("reload failed, keeping the running agreements: {}", error_chain(&*e)),
                    }
                }
            },
            Some(reply) = reload_rx.recv() => {
                let result = reload(config_path, &config, &store, &agreements, &client_id).await;
                let _ = reply.send(reload_reply(result));
            }
        }
    }
    // The control server takes no more requests and gives the open ones a short grace,
    // while the agreements stop: an idle client, a search into a stopped pager or a
    // `wait` must not hold the process past `shutdown_timeout` either.
    shutdown.cancel();
    let stopping = async {
        let all: Vec<Running> = std::mem::take(&mut *agreements.lock().await).into_values().collect();
        for r in &all {
            let _ = r.commands.send(Command::Shutdown).await;
        }
        for r in all {
            let _ = r.task.await;
        }
        let _ = control_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(config.shutdown_timeout, stopping).await.is_err() {
        warn!(limit = ?config.shutdown_timeout, "agreements or control requests did not stop in time; exiting anyway");
    }
    drop(control_file);
    // A failed store is no clean stop: a service manager must see it, and the flush could
    // not make the store whole (a damaged one would even succeed).
    let failure = match store.failure().latched() {
        Some(failure) => Some(failure),
        None => final_flush(&store).await?,
    };
    if let Some(failure) = failure {
        // Nor is sled's own flush run as the last handle goes: it cannot succeed, and
        // after a write sled could not finish it never returns (see
        // `tether_store::failure`). `main` exits without waiting for work still stuck.
        std::mem::forget(store);
        bail!(store_failed(&failure));
    }
    info!("consumer stopped");
    Ok(())
}

/// Flushes the store at a clean stop: `None` once flushed, or the store's failure if it
/// fails first (a flush stuck in sled ends there, when the watchdog latches it).
async fn final_flush(store: &ReplicaStore) -> Result<Option<StoreFailure>> {
    let flush = store.clone();
    match store.failure().unless_failed(tokio::task::spawn_blocking(move || flush.flush())).await {
        Ok(flushed) => match flushed.context("flush task")? {
            Ok(()) => Ok(None),
            Err(e) => store.failure().latched().map(Some).ok_or(e).context("final flush"),
        },
        Err(failure) => Ok(Some(failure)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A reload that fails after it has stopped an agreement does not reply that nothing
    /// changed: the agreement is no longer running. Here the store's files are taken
    /// away as the removed agreement's session ends, so deleting its replica fails (a
    /// full disk fails that flush the same way).
    #[tokio::test]
    async fn a_reload_that_fails_after_stopping_an_agreement_does_not_say_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = ReplicaStore::open(&data).unwrap();
        store.replica("gone").unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, "data_dir = \"data\"\n").unwrap();
        let running_config = ConsumerConfig::load(&file).unwrap();
        let config = gone_agreement(&file);
        let (commands, mut received) = mpsc::channel(COMMAND_QUEUE);
        let db = data.join("db");
        let task = tokio::spawn(async move {
            assert_eq!(received.recv().await, Some(Command::Reload { removed: true }));
            std::fs::rename(&db, db.with_extension("moved")).unwrap();
        });
        let status = StatusHandle::new("gone", "127.0.0.1:1", "refresh-and-persist");
        let agreements: Agreements = Arc::default();
        let running = Running { config, files: FileContents::for_tests(), commands, status, task };
        agreements.lock().await.insert("gone".to_owned(), running);

        let reply = reload_reply(reload(&file, &running_config, &store, &agreements, "c").await).unwrap_err();
        assert!(!agreements.lock().await.contains_key("gone"), "the agreement was stopped");
        assert!(!reply.contains("nothing changed") && !reply.contains(KEPT_AS_READ), "{reply}");
        assert!(reply.contains("it had stopped gone and started none"), "the reply names what it stopped: {reply}");
    }

    /// A reload names the keys it cannot apply that changed since the start: the
    /// consumer keeps running on the values it started with, and an operator who was
    /// told only "nothing changed" takes the new ones for applied.
    #[tokio::test]
    async fn a_reload_names_the_keys_that_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, "data_dir = \"data\"\nshutdown_timeout = \"10s\"\n").unwrap();
        let running_config = ConsumerConfig::load(&file).unwrap();
        let store = ReplicaStore::open(&running_config.data_dir).unwrap();
        std::fs::write(&file, "data_dir = \"data\"\nshutdown_timeout = \"20s\"\n").unwrap();

        let agreements: Agreements = Arc::default();
        let reply = reload(&file, &running_config, &store, &agreements, "c").await.unwrap();
        assert_eq!(reply, "reloaded: nothing changed; not applied until the consumer restarts: shutdown_timeout");
    }

    /// A consumer file under `dir` of one agreement, `people`, whose provider is nowhere
    /// (port 1), with `extra` keys in its section, its secret kept as an operator keeps
    /// it.
    fn people_file(dir: &Path, extra: &str) -> std::path::PathBuf {
        let key = dir.join("people.key");
        std::fs::write(&key, "the people agreement's secret\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let file = dir.join("consumer.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"data\"\n[[agreement]]\nname = \"people\"\nprovider = \"127.0.0.1:1\"\n\
                 base = \"dc=example,dc=com\"\nsecret_file = \"people.key\"\n{extra}"
            ),
        )
        .unwrap();
        file
    }

    /// Waits until `done` holds, looking every 5 ms, for 5 s at most (the caller's
    /// assertion then says what did not happen).
    async fn within_5s(mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// An agreement an operator stopped, changed outside its region, is started again
    /// stopped, and the reply says the change waits for its start: "restarted" told
    /// the operator it ran with the change already.
    #[tokio::test]
    async fn a_reload_that_changes_a_stopped_agreement_keeps_it_stopped_and_says_the_change_waits_for_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let written = |idle: &str| people_file(dir.path(), &format!("idle_timeout = \"{idle}\"\n"));
        let file = written("5m");
        let running_config = ConsumerConfig::load(&file).unwrap();
        let store = ReplicaStore::open(&running_config.data_dir).unwrap();
        store.replica("people").unwrap().set_admin_stopped(true).unwrap();
        // Running as read at the start, its files the same, so only the configuration
        // differs below.
        let session = session_configs(&running_config, "c").unwrap().remove(0);
        let (commands, mut received) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(async move {
            assert_eq!(received.recv().await, Some(Command::Reload { removed: false }));
        });
        let running = Running {
            config: running_config.agreements[0].clone(),
            files: FileContents::of(&session),
            commands,
            status: StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist"),
            task,
        };
        let agreements: Agreements = Arc::default();
        agreements.lock().await.insert("people".to_owned(), running);
        written("7m");

        let reply = reload(&file, &running_config, &store, &agreements, "c").await.unwrap();
        assert_eq!(reply, "reloaded: changed people (stopped: the change applies when it is started)");
        // And it is: the agreement started in its place reads the stop its store keeps
        // (started running, it would connect, and the operator's stop was undone).
        let started = agreements.lock().await.remove("people").unwrap();
        within_5s(|| started.status.state() == State::Stopped).await;
        assert_eq!(started.status.state(), State::Stopped, "{:?}", started.status.snapshot());
        shut(started, Command::Shutdown).await;
    }

    /// Agreement `gone`, as a running consumer read it from a file that names it no more.
    fn gone_agreement(file: &Path) -> crate::config::AgreementConfig {
        ConsumerConfig::from_toml_str(
            "[[agreement]]\nname = \"gone\"\nprovider = \"127.0.0.1:1\"\nbase = \"dc=example,dc=com\"\n\
             secret_file = \"gone.key\"\n",
            file,
        )
        .unwrap()
        .agreements
        .remove(0)
    }

    /// A reload that removes an agreement answers the `wait`s on it at once: nothing
    /// will move its replica again, and a wait left on its old status ran out its whole
    /// `--timeout` to say only that it timed out.
    #[tokio::test]
    async fn a_reload_that_removes_an_agreement_answers_the_waits_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, "data_dir = \"data\"\n").unwrap();
        let running_config = ConsumerConfig::load(&file).unwrap();
        let store = ReplicaStore::open(&running_config.data_dir).unwrap();
        store.replica("gone").unwrap();
        let config = gone_agreement(&file);
        let (commands, mut received) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(async move {
            assert_eq!(received.recv().await, Some(Command::Reload { removed: true }));
        });
        let status = StatusHandle::new("gone", "127.0.0.1:1", "refresh-and-persist");
        let agreements: Agreements = Arc::default();
        let running = Running { config, files: FileContents::for_tests(), commands, status: status.clone(), task };
        agreements.lock().await.insert("gone".to_owned(), running);

        let reply = reload(&file, &running_config, &store, &agreements, "c").await.unwrap();
        assert_eq!(reply, "reloaded: removed gone (its replica of 0 entries deleted)");
        let waited =
            status.wait_csn(tether_protocol::Csn(5), crate::status::Reach::Durable, std::time::Duration::from_secs(5));
        assert_eq!(waited.await, crate::status::Waited::Retired);
    }

    /// An operator's `start` of a stopped agreement is recorded in its replica: kept as
    /// stopped there, the agreement ran until the consumer's next start, and was then
    /// stopped again with no one asking.
    #[tokio::test]
    async fn an_operator_s_start_is_recorded_in_the_replica() {
        let dir = tempfile::tempdir().unwrap();
        let file = people_file(dir.path(), "");
        let config = ConsumerConfig::load(&file).unwrap();
        let store = ReplicaStore::open(&config.data_dir).unwrap();
        let replica = store.replica("people").unwrap();
        replica.set_admin_stopped(true).unwrap();
        let session = session_configs(&config, "c").unwrap().remove(0);
        let running = start(&store, &config.agreements[0], session).unwrap();

        running.commands.send(Command::Start).await.unwrap();
        within_5s(|| !replica.is_admin_stopped().unwrap()).await;
        assert!(!replica.is_admin_stopped().unwrap(), "the start was not recorded");
        shut(running, Command::Shutdown).await;
    }

    /// An agreement waiting out its backoff is closed by the store's failure when it
    /// comes, naming it: left waiting, it showed `backoff` and a next attempt (an hour
    /// on here) that could only fail, and a `wait` on it was not answered.
    #[tokio::test]
    async fn an_agreement_waiting_to_retry_is_closed_by_the_store_s_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = people_file(dir.path(), "retry = [\"1h forever\"]\n");
        let config = ConsumerConfig::load(&file).unwrap();
        let store = ReplicaStore::open(&config.data_dir).unwrap();
        let session = session_configs(&config, "c").unwrap().remove(0);
        let running = start(&store, &config.agreements[0], session).unwrap();
        let state_within = |wanted: State| {
            let status = running.status.clone();
            async move {
                within_5s(|| status.state() == wanted).await;
                status.snapshot()
            }
        };
        // Nothing listens on port 1: refused, it waits an hour.
        assert_eq!(state_within(State::Backoff).await.state, State::Backoff);

        // Its files taken away: the next flush finds it, and latches the failure.
        std::fs::rename(config.data_dir.join("db"), config.data_dir.join("db.aside")).unwrap();
        assert!(store.flush().is_err());
        let s = state_within(State::Closed).await;
        assert_eq!(s.state, State::Closed, "{s:?}");
        assert!(s.last_error.as_deref().is_some_and(|e| e.contains("taken away")), "{s:?}");
        shut(running, Command::Shutdown).await;
    }

    /// A supervisor that panics leaves its agreement `closed` with the panic in
    /// `last_error`, not in the state it panicked in.
    #[tokio::test]
    async fn a_panicking_supervisor_closes_its_agreement_with_the_error_in_status() {
        let status = StatusHandle::new("people", "127.0.0.1:1", "refresh-only");
        status.update(|s| s.state = State::Refreshing);
        let supervised = tokio::spawn(async { panic!("overflow when adding duration to instant") });
        owned(supervised, status.clone()).await;
        let s = status.snapshot();
        assert_eq!(s.state, State::Closed);
        let error = s.last_error.unwrap();
        assert!(error.contains("overflow when adding duration to instant") && error.contains("a bug"), "{error}");

        let fine = StatusHandle::new("people", "127.0.0.1:1", "refresh-only");
        owned(tokio::spawn(async {}), fine.clone()).await;
        assert_eq!(fine.snapshot().last_error, None, "an ending supervisor is no failure");
    }
}
