//! The consumer's control endpoint: a Unix socket (mode 0600) answering `status`,
//! `search`, `stop`/`start`/`restart NAME`, `reload` and `wait` (until a CSN is durable,
//! or with `--visible` until it is applied) while the process runs; with a
//! `status_group`, 0660, its members getting `status` alone.

use std::path::{Path, PathBuf};

use tether_protocol::control::{
    from_file, read_request, reload_elsewhere, respond, respond_done, respond_paged, ControlError, ControlRequest,
    ControlResponse, Peer, Process, StatusGroup,
};
use tether_protocol::{frame, ldif, Csn, Dn, SearchSpec};
use tether_store::entry_set::DnKey;
use tether_store::{Replica, ReplicaStore, ReshapeWatch};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::daemon::Agreements;
use crate::reason::State;
use crate::status::{ConsumerStatus, Reach, Waited};
use crate::supervisor::Command;

/// Longest a `WaitCsn` request may wait: a client that wants longer asks again, and
/// learns in between where the agreement stands.
pub const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Entries per page of a search's output.
const SEARCH_PAGE: usize = 500;

/// What the control endpoint can reach.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The store (for searches).
    pub store: ReplicaStore,
    /// The running agreements.
    pub agreements: Agreements,
    /// Asks the daemon to reload.
    pub reload: tether_config::shell::ReloadRequests,
    /// Cancelled when the consumer begins to shut down: an open `WaitCsn` then answers
    /// where the agreement stands instead of waiting on.
    pub shutdown: CancellationToken,
    /// The configuration file the consumer runs with, for commands a reply suggests.
    pub config_file: tether_protocol::control::StartedWith,
    /// This consumer's id, as providers show it in their status.
    pub consumer_id: String,
    /// The address the metrics endpoint listens on, if it does.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl ControlContext {
    /// The status of the process and every agreement, as of now: what `status` prints
    /// and the metrics endpoint serves.
    pub async fn status(&self) -> ConsumerStatus {
        let agreements = self.agreements.lock().await;
        ConsumerStatus {
            running: true,
            started_at: humantime::format_rfc3339_seconds(tether_config::shell::started_at()).to_string(),
            consumer_id: self.consumer_id.clone(),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()),
            store_error: self.store.failure().latched(),
            trees_to_free: self.store.trees_to_free(),
            agreements: agreements.values().map(|r| r.status.snapshot()).collect(),
        }
    }
}

/// Serves control connections until `ctx.shutdown`.
pub async fn serve(listener: UnixListener, status_group: Option<StatusGroup>, ctx: ControlContext) {
    let shutdown = ctx.shutdown.clone();
    let handler = move |stream: UnixStream, peer: Peer| {
        let ctx = ctx.clone();
        async move {
            if let Err(e) = handle(stream, peer, ctx).await {
                debug!(error = %e, "control connection ended");
            }
        }
    };
    tether_config::shell::serve_control(listener, status_group, shutdown.cancelled_owned(), handler).await;
}

/// The canonical LDIF of the entries of a replica in a region, a page of
/// `SEARCH_PAGE` entries at a time: a search holds one page, not the replica (the whole
/// LDIF of a million entries took the consumer to 3 GiB). Each page is read from the
/// generation active at that moment, after the last DN returned, as a provider's search
/// reads through concurrent writes; a reload swapped in mid-search continues in the new
/// generation. Should an entry be added, deleted or renamed meanwhile, or a reload be
/// swapped in, the output could miss an entry or hold one twice, so the search then ends
/// in an error after its last page: exit status 0 means the output is whole.
#[derive(Debug)]
pub struct SearchPages {
    replica: Replica,
    spec: SearchSpec,
    /// Begun as the first page was read: which entries were added, removed or renamed
    /// since.
    watch: Option<ReshapeWatch>,
    /// Where the agreement can be stopped, for the error of a search that was not whole.
    config_file: Option<PathBuf>,
    /// Where the next page starts; `None` at the start.
    after: Option<DnKey>,
    /// The last page was read.
    done: bool,
    /// Print each entry's `entryUUID` too.
    uuids: bool,
}

impl SearchPages {
    /// A search of agreement `name`'s replica, whose region starts at `region` when the
    /// agreement's configuration is known. Fails, as LDAP would, if there is no such
    /// agreement, if the base is beside the region (where the replica can hold nothing),
    /// or if a base below the region's own names no entry of the replica and has none
    /// below it. The region's
    /// base and those above it need not be entries of the replica (a one-level region
    /// leaves its base out); searching them shows everything the replica holds, which
    /// is how one checks that it holds nothing outside its region.
    pub fn open(store: &ReplicaStore, name: &str, region: Option<&Dn>, spec: SearchSpec) -> Result<Self, String> {
        let Some(replica) = store.existing_replica(name).map_err(|e| e.to_string())? else {
            return Err(match region {
                // Configured, but added since the consumer last ran (read offline).
                Some(_) => format!("agreement {name:?} has no replica yet: the consumer has not run it"),
                None => format!("no agreement named {name:?}"),
            });
        };
        // Without a cookie a replica is no state of its region: it has not finished its
        // first refresh, or it awaits a full one (its region changed, or it failed a
        // check) and still holds what it held before. Shown, it read as whole.
        if replica.cookie().map_err(|e| e.to_string())?.is_none() {
            let held = replica.len().map_err(|e| e.to_string())?;
            return Err(match held {
                0 => format!("the replica of {name:?} has not finished its first refresh: nothing to show yet"),
                n => format!(
                    "the replica of {name:?} awaits a full refresh (its region changed, or it failed a check), so the \
                     {n} entries it still holds are not its region; its next session reloads it (to read them as they \
                     are, stop the consumer and search with --as-is)"
                ),
            });
        }
        check_base(&replica, name, region, &spec)?;
        Ok(Self::of(replica, spec))
    }

    /// A search of what agreement `name`'s replica holds, whatever state it is in (`search
    /// --as-is`, the consumer stopped): a replica awaiting a full refresh is refused to
    /// [`SearchPages::open`], and when the provider is lost it is the last copy there is.
    /// `region` is the base the replica holds: a base beside it, or naming nothing in
    /// it, is refused as [`SearchPages::open`] refuses it, since an empty output with
    /// exit status 0 would pass for an empty copy.
    pub fn open_as_is(store: &ReplicaStore, name: &str, region: Option<&Dn>, spec: SearchSpec) -> Result<Self, String> {
        match store.existing_replica(name).map_err(|e| e.to_string())? {
            Some(replica) => {
                check_base(&replica, name, region, &spec)?;
                Ok(Self::of(replica, spec))
            }
            None => Err(format!("agreement {name:?} has no replica: the consumer has not run it")),
        }
    }

    fn of(replica: Replica, spec: SearchSpec) -> Self {
        Self { replica, spec, watch: None, config_file: None, after: None, done: false, uuids: false }
    }

    /// Names the configuration file in the hint of a search that was not whole.
    pub fn with_config_file(self, config_file: &Path) -> Self {
        Self { config_file: Some(config_file.to_owned()), ..self }
    }

    /// Prints each entry's `entryUUID` too (`search --uuids`).
    pub fn with_uuids(self, uuids: bool) -> Self {
        Self { uuids, ..self }
    }

    /// The LDIF of the next page, `None` once the region is exhausted. Reads the store:
    /// call it off the async threads.
    pub fn next_page(&mut self) -> Result<Option<String>, String> {
        if self.done {
            return match self.watch.take() {
                Some(watch) => self.whole_since(&watch).map(|()| None),
                None => Ok(None),
            };
        }
        // sled serves what it has cached after it failed, the changes that never
        // reached the disk included, and the replica no longer follows its provider:
        // printed with exit status 0, that passed for a whole replica.
        if let Some(failure) = self.replica.failure().latched() {
            return Err(search_refused(&failure));
        }
        if self.watch.is_none() {
            self.watch = Some(self.replica.watch_reshapes());
        }
        let (spec, after) = (&self.spec, self.after.as_deref());
        let (page, next) =
            self.replica.read_active(|entries| entries.search_page(spec, after, SEARCH_PAGE)).map_err(|e| {
                // A search may be the first to meet a failed or damaged store; it is
                // said with the way out, as `status` and `start` say it.
                self.replica.failure().note(&e);
                match self.replica.failure().latched() {
                    Some(failure) => crate::daemon::store_failed(&failure),
                    None => e.to_string(),
                }
            })?;
        self.done = next.is_none();
        self.after = next;
        let mut out = Vec::new();
        for e in &page {
            ldif::writer::write_search_result(&mut out, e, self.uuids).map_err(|e| e.to_string())?;
        }
        String::from_utf8(out).map(Some).map_err(|e| e.to_string())
    }

    /// Fails if entries within the search's base and scope were added, removed or
    /// renamed, or a refresh swapped in, since `watch` began (as the first page was
    /// read): the pages then may miss an entry, hold one twice or hold one without its
    /// parent. (A modification leaves each entry printed once, as it was at some moment.)
    fn whole_since(&self, watch: &ReshapeWatch) -> Result<(), String> {
        let since = watch.since(&self.spec);
        if since.is_whole() {
            return Ok(());
        }
        let name = self.replica.name();
        let mut what = Vec::new();
        let (one, many) = match since.scoped {
            true => ("1 entry within the search's scope added, deleted or renamed", "entries within the search's scope added, deleted or renamed"),
            false => (
                "1 entry added, deleted or renamed",
                "entries added, deleted or renamed in the replica, too many to tell which were within the search's scope",
            ),
        };
        match since.entries {
            0 => {}
            1 => what.push(one.to_owned()),
            n => what.push(format!("{n} {many}")),
        }
        match since.swaps {
            0 => {}
            1 => what.push("a refresh swapped in a new copy".to_owned()),
            n => what.push(format!("{n} refreshes swapped in new copies")),
        }
        let stop = match &self.config_file {
            Some(file) => format!("tether-consumer stop -c {} {name}", file.display()),
            None => format!("tether-consumer stop -c FILE {name}"),
        };
        Err(format!(
            "the replica of {name:?} changed while it was printed ({}), so the output may miss an entry or hold \
             one twice: it is not a whole copy. Run it again when fewer changes come, or stop the agreement while \
             it is printed ({stop}, then start)",
            what.join(", and ")
        ))
    }
}

/// Why a search of a failed store is refused, with the way out and the way to read
/// what the disk holds meanwhile (the store read afresh, by a process of its own).
fn search_refused(failure: &tether_store::StoreFailure) -> String {
    format!(
        "{}. Until then its replicas stay as they were when it failed, and may show changes that never reached the \
         disk, so searches are refused; to read what the disk holds, stop the consumer and search with --as-is",
        crate::daemon::store_failed(failure)
    )
}

/// Refuses a search base beside `region` (the replica's base), or one naming no entry of
/// the replica with none of it below either: such a search would print nothing, which
/// reads as an empty region.
fn check_base(replica: &Replica, name: &str, region: Option<&Dn>, spec: &SearchSpec) -> Result<(), String> {
    let region = region.filter(|region| !region.is_descendant_of(&spec.base));
    if let Some(region) = region.filter(|region| !spec.base.is_descendant_of(region)) {
        return Err(format!("--base {} is outside the region of agreement {name:?}, based at {region}", spec.base));
    }
    if region.is_some() {
        // An agreement's filter or attribute list can leave out an entry whose
        // descendants it holds (a filter on people leaves out their `ou`), so a
        // base is missing only when nothing of the replica lies below it either.
        let missing = replica
            .read_active(|entries| match entries.missing_base(&spec.base)? {
                Some(missing) if !entries.has_children(&spec.base)? => Ok(Some(missing)),
                _ => Ok(None),
            })
            .map_err(|e| e.to_string())?;
        if let Some(missing) = missing {
            return Err(format!("{missing} in the replica of {name:?}"));
        }
    }
    Ok(())
}

/// `wait`: answers with where the replica stands once it reaches `csn` by the measure
/// of `reach`, or says where it stands instead. The agreement is looked up again
/// whenever it cannot move towards `csn` (stopped or closed meanwhile: said at once) or
/// a reload retired the status it was waited on by (restarted: waited for again, in the
/// time left; removed: said), since a status no one updates any more would hold the
/// wait to its timeout and then describe an agreement that is gone.
async fn wait(ctx: &ControlContext, name: &str, csn: Csn, reach: Reach, timeout_ms: u64) -> Result<String, String> {
    let limit = std::time::Duration::from_millis(timeout_ms).min(WAIT_LIMIT);
    let deadline = tokio::time::Instant::now() + limit;
    let mut looked = false;
    loop {
        let agreements = ctx.agreements.lock().await;
        let Some(status) = agreements.get(name).map(|r| r.status.clone()) else {
            if !looked {
                return Err(no_agreement(name, agreements.keys().map(String::as_str)));
            }
            let file = ctx.config_file.path().display();
            return Err(format!(
                "no agreement named {name:?} any more: a reload of {file} removed it (and deleted its replica) while \
                 this waited for csn {csn}"
            ));
        };
        // Not held while waiting: a reload, a command, another wait take it.
        drop(agreements);
        looked = true;
        // Where the agreement stands, for an answer that is not the CSN: a stopped or
        // closed agreement, or one in backoff after an error, is the usual reason.
        let stands = || {
            let now = status.snapshot();
            // No position, yet entries: a replica reloaded for a changed region, or after
            // failing a check, holds what it held until the full refresh swaps it.
            let at = match (status.csn(reach), now.entries) {
                (Some(c), _) => format!("at csn {c}"),
                (None, 0) => "with nothing replicated yet".to_owned(),
                (None, n) => format!("with no position: its replica of {n} entries awaits a full refresh"),
            };
            // With its time: the last error stays after the agreement recovers, and
            // without one it read as the reason a persisting agreement was behind.
            let why = now
                .last_error
                .map(|e| format!(" (its last error, at {}: {e})", now.last_error_at.as_deref().unwrap_or("-")))
                .unwrap_or_default();
            // Each state reads as an adjective but one.
            let state = match now.state {
                State::Backoff => "in backoff".to_owned(),
                other => other.to_string(),
            };
            (now.state, format!("the agreement is {state} {at}{why}"))
        };
        // A stopped or closed agreement cannot move until an operator starts it: say so
        // at once, as a stopped consumer's store does, rather than after the whole timeout.
        let (state, stand) = stands();
        if matches!(state, State::Stopped | State::Closed) && status.csn(reach).is_none_or(|c| c < csn) {
            let file = ctx.config_file.path().display();
            // Started again with the secret it has, a revoked agreement is only refused.
            let revoked = status.snapshot().last_error.is_some_and(|e| e.starts_with(crate::supervision::REVOKED));
            // A failed store refuses `start`: only a new process goes on.
            let until = match (ctx.store.failure().latched(), revoked) {
                (Some(failure), _) => {
                    format!("a new consumer process opens the store: {}", crate::daemon::store_failed(&failure))
                }
                (None, true) => format!(
                    "the provider grants it again: once the grant is back on the provider, tether-consumer start -c \
                     {file} {name}; for a new secret, update secret_file and tether-consumer reload -c {file}"
                ),
                (None, false) => format!("it is started (tether-consumer start -c {file} {name})"),
            };
            return Err(format!("{name}: csn {csn} not {}; {stand}, and stays there until {until}", reach.as_str()));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let waited = tokio::select! {
            waited = status.wait_csn(csn, reach, left) => waited,
            _ = ctx.shutdown.cancelled() => {
                if status.csn(reach).is_some_and(|c| c >= csn) {
                    Waited::Reached
                } else {
                    let stand = stands().1;
                    return Err(format!("{name}: csn {csn} not {} before the consumer shut down; {stand}", reach.as_str()));
                }
            }
        };
        match waited {
            Waited::Reached => return Ok(format!("{}\n", status.csn(reach).unwrap_or(csn))),
            // Looked at again: the check above answers a halt, the lookup a retirement.
            Waited::Halted | Waited::Retired => continue,
            Waited::TimedOut => {
                return Err(format!("{name}: csn {csn} not {} within {limit:?}; {}", reach.as_str(), stands().1))
            }
        }
    }
}

/// `work`, unless the client goes first (`None`: nobody to answer). A client sends
/// nothing after its request, so a read ends only when it goes (killed, or a `timeout`
/// wrapper that gave up): a `wait` then holds this task and a descriptor no longer,
/// rather than until its own timeout.
async fn unless_gone<R: tokio::io::AsyncRead + Unpin, T>(
    reader: &mut tether_protocol::frame::FrameReader<R>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = reader.read_frame() => None,
    }
}

async fn handle(stream: UnixStream, peer: Peer, ctx: ControlContext) -> Result<(), ControlError> {
    let (mut reader, mut writer) = frame::split(stream);
    let request = read_request(&mut reader, &mut writer, Process::Consumer, &peer).await?;
    let request = match from_file(Process::Consumer, &ctx.config_file, request) {
        Ok(request) => request,
        Err(elsewhere) => return respond(&mut writer, &ControlResponse::Error(elsewhere)).await,
    };
    let uuids = matches!(request, ControlRequest::SearchWithUuids { .. });
    let reply: Result<String, String> = match request {
        ControlRequest::Status { json } => {
            let status = ctx.status().await;
            if json {
                serde_json::to_string_pretty(&status).map(|s| s + "\n").map_err(|e| e.to_string())
            } else {
                Ok(status.to_text())
            }
        }
        ControlRequest::Search { agreement, spec } | ControlRequest::SearchWithUuids { agreement, spec } => {
            let name = match agreement {
                Some(n) => Ok(n),
                None => only_agreement(ctx.agreements.lock().await.keys().map(String::as_str)),
            };
            let (region, state) = match &name {
                Ok(name) => ctx
                    .agreements
                    .lock()
                    .await
                    .get(name)
                    .map_or((None, None), |r| (Some(r.config.base.clone()), Some(r.status.state()))),
                Err(_) => (None, None),
            };
            // A copy to restore from (`--uuids`) must not change while it is printed; a
            // replica has no changelog to tell afterwards whether it did.
            let name = name.and_then(|name| match state {
                Some(state) if uuids && !matches!(state, State::Stopped | State::Closed) => Err(format!(
                    "--uuids (or entryUUID in --attrs) prints a copy to restore from, and the replica of {name:?} changes while it runs ({}): \
                     stop the agreement first (tether-consumer stop -c {} {name}, then start), or stop the consumer",
                    state.as_str(),
                    ctx.config_file.path().display()
                )),
                _ => Ok(name),
            });
            match name.and_then(|name| SearchPages::open(&ctx.store, &name, region.as_ref(), spec)) {
                Ok(pages) => {
                    let mut pages = pages.with_uuids(uuids).with_config_file(ctx.config_file.path());
                    return respond_paged(&mut writer, move || pages.next_page()).await;
                }
                Err(e) => Err(e),
            }
        }
        ControlRequest::Stop { name } => command(&ctx, &name, Command::Stop).await,
        ControlRequest::Start { name } => command(&ctx, &name, Command::Start).await,
        ControlRequest::Restart { name } => command(&ctx, &name, Command::Restart).await,
        ControlRequest::WaitCsn { name, csn, timeout_ms } => {
            match unless_gone(&mut reader, wait(&ctx, &name, csn, Reach::Durable, timeout_ms)).await {
                Some(waited) => waited,
                None => return Ok(()),
            }
        }
        ControlRequest::WaitVisible { name, csn, timeout_ms } => {
            match unless_gone(&mut reader, wait(&ctx, &name, csn, Reach::Visible, timeout_ms)).await {
                Some(waited) => waited,
                None => return Ok(()),
            }
        }
        ControlRequest::ReloadFile { file } => match reload_elsewhere(Process::Consumer, &ctx.config_file, &file) {
            Some(elsewhere) => Err(elsewhere),
            None => tether_config::shell::ask_reload(&ctx.reload, "consumer").await,
        },
        ControlRequest::Reload => tether_config::shell::ask_reload(&ctx.reload, "consumer").await,
        ControlRequest::Forget { .. } => {
            Err("the consumer keeps no other consumers: forget is the provider's".to_owned())
        }
        ControlRequest::Backup { .. } => {
            Err("backup copies a provider's store: a replica is rebuilt by its refresh, or copied with the consumer \
             stopped"
                .to_owned())
        }
        ControlRequest::For { .. } => Err("a request addressed twice; the command-line tools send none".to_owned()),
        ControlRequest::FromFile { .. } => {
            Err("a request from two configuration files; the command-line tools send none".to_owned())
        }
    };
    match reply {
        Ok(text) => respond_done(&mut writer, &text).await,
        Err(e) => respond(&mut writer, &ControlResponse::Error(e)).await,
    }
}

async fn command(ctx: &ControlContext, name: &str, cmd: Command) -> Result<String, String> {
    // Starting an agreement on a failed store would only fail again.
    if let (Command::Start | Command::Restart, Some(failure)) = (cmd, ctx.store.failure().latched()) {
        return Err(crate::daemon::store_failed(&failure));
    }
    let agreements = ctx.agreements.lock().await;
    let Some(running) = agreements.get(name) else {
        return Err(no_agreement(name, agreements.keys().map(String::as_str)));
    };
    // Read before the command is sent, so the reply says what the command found. Only a
    // session ending on its own in between can make it stale, and then the command still
    // does what its reply says, bar the "already".
    let before = running.status.state();
    let stopping = running.status.stopping();
    running.commands.send(cmd).await.map_err(|_| format!("agreement {name:?} is shutting down"))?;
    let mut status = running.status.clone();
    drop(agreements);
    // `stop`, then `search --uuids` (what the docs say to do for a copy): the reply waits
    // until the session has ended and the stop is on disk, so the next command finds the
    // agreement stopped, not persisting still.
    if cmd == Command::Stop && before != State::Stopped {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while status.state() != State::Stopped {
            // A reload that restarted the agreement while its session ended took the stop
            // with it (recorded, and the exit won): the status watched is left as the
            // session left it, and the agreement started in its place, stopped, has
            // another. Watched on, the stop answered after 20 s that it had not ended.
            if status.is_retired() {
                match ctx.agreements.lock().await.get(name) {
                    Some(now) => status = now.status.clone(),
                    None => {
                        return Ok(format!("{name}: a reload removed it (and deleted its replica) while it stopped\n"))
                    }
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(format!(
                    "{name}: stop asked, and its session has not ended within {}s (it is {}): `status` shows when it \
                     is stopped\n",
                    STOP_WAIT.as_secs(),
                    status.state()
                ));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }
    Ok(admin_reply(name, cmd, before, stopping))
}

/// How long a `stop` waits for the agreement's session to end before it answers: well
/// inside the client's wait for an answer (`control::ANSWER_WAIT`).
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// How often a `stop` looks whether the agreement has stopped.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// What `stop`, `start` or `restart` did to an agreement that was in state `before`, as
/// the supervisor decides it: a `stop` of a stopped agreement and a `start` of one with a
/// session change nothing, and the operator who typed them is told so, not that they
/// acted; a `start` from backoff or idle connects now. `stopping`: a `stop` was ending the
/// session, which a `start` takes back.
fn admin_reply(name: &str, cmd: Command, before: State, stopping: bool) -> String {
    let running = matches!(before, State::Connecting | State::Refreshing | State::Persisting);
    let did = match (cmd, before) {
        (Command::Start, _) if running && stopping => format!(
            "the stop under way is taken back: it reconnects once the session the stop is ending is over (it was \
             {before})"
        ),
        (Command::Stop, State::Stopped) => "already stopped; nothing changed".to_owned(),
        (Command::Stop, _) => format!("stopped (it was {before}); it stays stopped until `start`, across restarts too"),
        (Command::Start | Command::Restart, State::Stopped | State::Closed) => format!("started (it was {before})"),
        (Command::Start, _) if running => {
            format!("already running ({before}); nothing changed (`restart` ends its session and reconnects)")
        }
        (Command::Start | Command::Restart, State::Idle) => {
            "connecting now (it was idle, waiting for its next poll; the wait was cut short)".to_owned()
        }
        (Command::Start | Command::Restart, State::Backoff) => {
            "connecting now (it was in backoff, waiting to retry; the wait was cut short)".to_owned()
        }
        (Command::Restart, _) => format!("restarting (it was {before}): its session ends and it reconnects now"),
        (Command::Start | Command::Shutdown | Command::Reload { .. }, _) => format!("{cmd:?}").to_lowercase(),
    };
    format!("{name}: {did}\n")
}

/// Why a command names no agreement: `name` is none of `names`, which it lists (a few
/// of them), so a typo is seen for one without opening the file.
pub fn no_agreement<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> String {
    const LISTED: usize = 10;
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    let listed = names[..names.len().min(LISTED)].join(", ");
    match names.len() {
        0 => format!("no agreement named {name:?} (none is configured)"),
        n if n > LISTED => format!("no agreement named {name:?} (there are {n}: {listed} and {} more)", n - LISTED),
        _ => format!("no agreement named {name:?} (there are {listed})"),
    }
}

/// The agreement a command that names none is about: the only one, or an error that
/// lists those to choose from.
pub fn only_agreement<'a>(names: impl Iterator<Item = &'a str>) -> Result<String, String> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    match names.as_slice() {
        [only] => Ok((*only).to_owned()),
        [] => Err("no agreements are configured".to_owned()),
        several => Err(format!("several agreements ({}): name one with --agreement", several.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use tether_protocol::{
        Attributes, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, Scope, Value,
    };

    use super::*;
    use crate::status::StatusHandle;

    fn person(i: usize) -> Entry {
        let mut attrs = Attributes::new();
        attrs.add("objectClass", [Value::from("person")]).unwrap();
        attrs.add("cn", [Value::from(format!("Person {i}"))]).unwrap();
        attrs.add("sn", [Value::from(if i % 2 == 0 { "even" } else { "odd" })]).unwrap();
        let dn = Dn::parse(&format!("cn=Person {i},dc=example,dc=com")).unwrap();
        Entry { dn, uuid: EntryUuid::new_random(), csn: Csn(1), attrs }
    }

    fn dns(ldif: &str) -> usize {
        ldif.lines().filter(|l| l.starts_with("dn:")).count()
    }

    /// A store holding replica `people` of `n` people, filled by a full refresh.
    fn people(n: usize) -> (tempfile::TempDir, ReplicaStore, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let replica = store.replica("people").unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        shadow.apply_scan(&(0..n).map(|i| ReplOp::Upsert(person(i))).collect::<Vec<_>>()).unwrap();
        shadow.finish(Cookie { history: HistoryId::new_random(), csn: Csn(1) }).unwrap();
        (dir, store, replica)
    }

    /// A running agreement whose supervisor is the test: `commands` receives its commands.
    fn running(status: StatusHandle, commands: tokio::sync::mpsc::Sender<Command>) -> crate::daemon::Running {
        crate::daemon::Running {
            config: crate::config::ConsumerConfig::from_toml_str(
                "[[agreement]]\nname = \"people\"\nprovider = \"127.0.0.1:1\"\nbase = \"dc=example,dc=com\"\n\
                 secret_file = \"people.key\"\n",
                Path::new("consumer.toml"),
            )
            .unwrap()
            .agreements
            .remove(0),
            files: crate::daemon::FileContents::for_tests(),
            commands,
            status,
            task: tokio::spawn(async {}),
        }
    }

    /// A `stop` whose agreement a reload restarts before the stop's session has ended:
    /// the supervisor records the stop and exits for the reload (the exit wins), leaving
    /// its status as the session left it, and the agreement started in its place comes
    /// up stopped. The stop answers for the agreement, not for the status the reload
    /// retired, which never reads `stopped`.
    #[tokio::test(start_paused = true)]
    async fn a_stop_answers_for_the_agreement_a_reload_started_in_its_place() {
        let agreements: Agreements = std::sync::Arc::default();
        let (commands, mut received) = tokio::sync::mpsc::channel(8);
        let old = StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist");
        old.update(|s| s.state = State::Persisting);
        agreements.lock().await.insert("people".to_owned(), running(old, commands));
        let (_dir, ctx) = context(agreements.clone());
        let reloaded = tokio::spawn(async move {
            assert_eq!(received.recv().await, Some(Command::Stop));
            let mut running_now = agreements.lock().await;
            let old = running_now.remove("people").unwrap();
            old.status.retire();
            let new = StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist");
            new.update(|s| s.state = State::Stopped);
            let (commands, _) = tokio::sync::mpsc::channel(8);
            running_now.insert("people".to_owned(), running(new, commands));
        });
        let reply = command(&ctx, "people", Command::Stop).await;
        reloaded.await.unwrap();
        assert_eq!(reply, Ok(admin_reply("people", Command::Stop, State::Persisting, false)));
    }

    /// A `wait` on a stopped agreement whose replica is already at the CSN asked
    /// answers with it: only one below the CSN cannot move until it is started.
    #[tokio::test]
    async fn a_wait_on_a_stopped_agreement_already_at_the_csn_is_answered_with_it() {
        let agreements: Agreements = std::sync::Arc::default();
        let status = StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist");
        status.update(|s| {
            s.state = State::Stopped;
            s.cookie = Some(Cookie { history: HistoryId::new_random(), csn: Csn(5) }.to_string());
        });
        let (commands, _received) = tokio::sync::mpsc::channel(8);
        agreements.lock().await.insert("people".to_owned(), running(status, commands));
        let (_dir, ctx) = context(agreements);
        for reach in [Reach::Durable, Reach::Visible] {
            assert_eq!(wait(&ctx, "people", Csn(5), reach, 1_000).await, Ok("5\n".to_owned()), "{}", reach.as_str());
            let beyond = wait(&ctx, "people", Csn(6), reach, 1_000).await.unwrap_err();
            assert!(beyond.contains("the agreement is stopped at csn 5"), "{beyond}");
        }
    }

    /// A control context whose agreements are `agreements`, on a store of its own.
    fn context(agreements: Agreements) -> (tempfile::TempDir, ControlContext) {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let (reload, _requests) = tokio::sync::mpsc::channel(1);
        let ctx = ControlContext {
            store,
            agreements,
            reload,
            shutdown: CancellationToken::new(),
            config_file: tether_protocol::control::StartedWith::new(Path::new("consumer.toml")),
            consumer_id: "c".to_owned(),
            metrics_listen: None,
        };
        (dir, ctx)
    }

    /// Agreement `people`, persisting at `durable` on disk and `applied` in its replica.
    async fn persisting_at(durable: u64, applied: u64) -> Agreements {
        let agreements: Agreements = std::sync::Arc::default();
        let status = StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist");
        status.update(|s| {
            s.state = State::Persisting;
            s.cookie = Some(Cookie { history: HistoryId::new_random(), csn: Csn(durable) }.to_string());
            s.applied_csn = Some(Csn(applied));
        });
        let (commands, _received) = tokio::sync::mpsc::channel(8);
        agreements.lock().await.insert("people".to_owned(), running(status, commands));
        agreements
    }

    /// `wait` prints where the replica stands, which may be past the CSN asked (what a
    /// script reads back to wait on the next replica), not the CSN it was given.
    #[tokio::test]
    async fn a_wait_answers_with_the_csn_the_replica_has_reached_not_the_one_asked() {
        let (_dir, ctx) = context(persisting_at(7, 9).await);
        assert_eq!(wait(&ctx, "people", Csn(5), Reach::Durable, 1_000).await, Ok("7\n".to_owned()));
        assert_eq!(wait(&ctx, "people", Csn(5), Reach::Visible, 1_000).await, Ok("9\n".to_owned()));
    }

    /// `wait --visible` is answered once the change is applied, ahead of the replica's
    /// flush; a plain `wait` only once it is on disk. Asked over the socket, as the
    /// command asks.
    #[tokio::test]
    async fn a_visible_wait_is_answered_by_the_applied_csn_and_a_durable_one_by_the_cookie() {
        let (_dir, ctx) = context(persisting_at(5, 8).await);
        let ask = |visible: bool| {
            let ctx = ctx.clone();
            async move {
                let (client, server) = UnixStream::pair().unwrap();
                let served = tokio::spawn(handle(server, Peer::Operator, ctx));
                let request = ControlRequest::For {
                    to: Process::Consumer,
                    request: Box::new(ControlRequest::wait("people".into(), Csn(8), 100, visible)),
                };
                let mut out = String::new();
                let answer = tether_protocol::control::call(client, &request, |t| {
                    out.push_str(t);
                    Ok(())
                })
                .await;
                served.await.unwrap().unwrap();
                answer.map(|()| out).map_err(|e| e.to_string())
            }
        };
        assert_eq!(ask(true).await, Ok("8\n".to_owned()));
        let durable = ask(false).await.unwrap_err();
        assert!(durable.contains("people: csn 8 not durable within"), "{durable}");
        assert!(durable.contains("the agreement is persisting at csn 5"), "{durable}");
    }

    /// A wait whose CSN is reached as the consumer shuts down (its last flush makes it
    /// durable) is answered with it, not told that the consumer shut down first: both
    /// are ready at once, and either may be taken, so the wait is asked many times.
    #[tokio::test]
    async fn a_wait_reached_as_the_consumer_shuts_down_is_answered_with_its_csn() {
        let (_dir, ctx) = context(persisting_at(5, 5).await);
        ctx.shutdown.cancel();
        for _ in 0..32 {
            assert_eq!(wait(&ctx, "people", Csn(5), Reach::Durable, 1_000).await, Ok("5\n".to_owned()));
        }
    }

    /// A wait for an agreement the consumer does not run names those it runs: only one
    /// that was there when the wait began can have been removed by a reload since.
    #[tokio::test]
    async fn a_wait_for_an_agreement_there_is_not_names_those_there_are() {
        let (_dir, ctx) = context(persisting_at(5, 5).await);
        let refused = wait(&ctx, "groups", Csn(5), Reach::Durable, 1_000).await;
        assert_eq!(refused, Err(no_agreement("groups", ["people"].into_iter())));
    }

    /// A wait on a closed agreement (its grant revoked, its store failed) is answered at
    /// once with where it stands, as one on a stopped agreement is: it cannot move until
    /// an operator acts, and waiting on its status, which never changes, spun.
    #[tokio::test]
    async fn a_wait_on_a_closed_agreement_is_answered_at_once() {
        let agreements = persisting_at(5, 5).await;
        agreements.lock().await["people"].status.update(|s| s.state = State::Closed);
        let (_dir, ctx) = context(agreements);
        // Far past the answer, which comes at once: a spinning wait never gives it.
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            wait(&ctx, "people", Csn(6), Reach::Durable, 60_000),
        );
        let refused = waited.await.expect("answered").unwrap_err();
        assert!(refused.contains("the agreement is closed at csn 5, and stays there until it is started"), "{refused}");
    }

    /// A `stop` answers once the agreement's session has ended and it is stopped, so the
    /// command that follows (`search --uuids`, which a running agreement refuses) finds it
    /// stopped.
    #[tokio::test]
    async fn a_stop_answers_once_the_agreement_is_stopped() {
        let agreements: Agreements = std::sync::Arc::default();
        let status = StatusHandle::new("people", "127.0.0.1:1", "refresh-and-persist");
        status.update(|s| s.state = State::Persisting);
        let (commands, mut received) = tokio::sync::mpsc::channel(8);
        agreements.lock().await.insert("people".to_owned(), running(status.clone(), commands));
        let (_dir, ctx) = context(agreements);
        // The supervisor: the session ends as the stop asks.
        let supervisor = {
            let status = status.clone();
            tokio::spawn(async move {
                assert_eq!(received.recv().await, Some(Command::Stop));
                status.update(|s| s.state = State::Stopped);
            })
        };
        let reply = command(&ctx, "people", Command::Stop).await;
        assert_eq!(status.state(), State::Stopped, "answered before the agreement stopped");
        assert_eq!(reply, Ok(admin_reply("people", Command::Stop, State::Persisting, false)));
        supervisor.await.unwrap();
    }

    #[test]
    fn a_command_naming_no_agreement_is_about_the_only_one_or_lists_them() {
        assert_eq!(super::only_agreement(["people"].into_iter()), Ok("people".to_owned()));
        assert_eq!(
            super::only_agreement(["people", "groups"].into_iter()),
            Err("several agreements (groups, people): name one with --agreement".to_owned())
        );
        assert_eq!(super::only_agreement([].into_iter()), Err("no agreements are configured".to_owned()));
    }

    #[test]
    fn admin_commands_say_when_they_found_nothing_to_do() {
        let reply = |cmd, before| admin_reply("people", cmd, before, false);
        assert_eq!(reply(Command::Stop, State::Stopped), "people: already stopped; nothing changed\n");
        assert!(reply(Command::Stop, State::Persisting).starts_with("people: stopped (it was persisting)"));
        for state in [State::Connecting, State::Refreshing, State::Persisting] {
            let said = reply(Command::Start, state);
            assert!(said.starts_with(&format!("people: already running ({state}); nothing changed")), "{said}");
            assert!(reply(Command::Restart, state).starts_with("people: restarting"), "{state}");
            // A start while a stop is ending the session takes the stop back.
            let said = admin_reply("people", Command::Start, state, true);
            assert!(said.starts_with("people: the stop under way is taken back"), "{said}");
        }
        for state in [State::Stopped, State::Closed] {
            assert_eq!(reply(Command::Start, state), format!("people: started (it was {state})\n"));
            assert_eq!(reply(Command::Restart, state), format!("people: started (it was {state})\n"));
        }
        for state in [State::Backoff, State::Idle] {
            assert!(reply(Command::Start, state).starts_with("people: connecting now"), "{state}");
            assert!(reply(Command::Restart, state).starts_with("people: connecting now"), "{state}");
        }
    }

    #[test]
    fn an_unknown_agreement_s_error_lists_a_few_of_those_there_are() {
        assert_eq!(
            no_agreement("peple", ["people", "groups"].into_iter()),
            "no agreement named \"peple\" (there are groups, people)"
        );
        assert_eq!(no_agreement("x", std::iter::empty()), "no agreement named \"x\" (none is configured)");
        let many: Vec<String> = (0..200).map(|i| format!("a{i:03}")).collect();
        let said = no_agreement("x", many.iter().map(String::as_str));
        assert_eq!(said, "no agreement named \"x\" (there are 200: a000, a001, a002, a003, a004, a005, a006, a007, a008, a009 and 190 more)");
        // Exactly as many as are listed: all of them, with no "and 0 more".
        let said = no_agreement("x", many[..10].iter().map(String::as_str));
        assert_eq!(
            said,
            "no agreement named \"x\" (there are a000, a001, a002, a003, a004, a005, a006, a007, a008, a009)"
        );
    }

    #[test]
    fn a_search_comes_a_page_at_a_time_and_adds_up_to_the_replica() {
        let (_dir, store, replica) = people(1_200);

        for (filter, sizes) in [("(objectClass=*)", vec![500, 500, 200]), ("(sn=odd)", vec![500, 100])] {
            let spec = SearchSpec {
                filter: filter.parse().unwrap(),
                ..SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())
            };
            let mut pages = SearchPages::open(&store, "people", Some(&spec.base), spec.clone()).unwrap();
            let (mut got, mut all) = (Vec::new(), String::new());
            while let Some(page) = pages.next_page().unwrap() {
                got.push(dns(&page));
                all.push_str(&page);
            }
            assert_eq!(got, sizes, "{filter}: entries per page");
            assert_eq!(pages.next_page().unwrap(), None, "{filter}: and nothing after the end");
            let mut whole = Vec::new();
            for e in replica.search(&spec).unwrap() {
                ldif::writer::write_entry(&mut whole, &e.dn, &e.attrs).unwrap();
            }
            assert_eq!(all, String::from_utf8(whole).unwrap(), "{filter}: the pages add up to the search");
        }
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        let err = SearchPages::open(&store, "nobody", None, spec).unwrap_err();
        assert!(err.contains("no agreement named \"nobody\""), "{err}");
    }

    #[test]
    fn a_base_outside_the_region_or_naming_no_entry_of_the_replica_is_an_error() {
        let (_dir, store, _replica) = people(3);
        let dn = |s: &str| Dn::parse(s).unwrap();
        let region = dn("dc=example,dc=com");
        let open = |base: &str, region: Option<&Dn>| {
            SearchPages::open(&store, "people", region, SearchSpec::subtree(dn(base)))
        };

        // The region's base is not in this replica (no such entry was replicated), and
        // searching it, or above it, is how the whole replica is printed.
        assert!(open("dc=example,dc=com", Some(&region)).is_ok());
        assert!(open("dc=com", Some(&region)).is_ok());
        assert!(open("cn=Person 1,dc=example,dc=com", Some(&region)).is_ok());
        let err = open("dc=example,dc=org", Some(&region)).unwrap_err();
        assert_eq!(
            err,
            "--base dc=example,dc=org is outside the region of agreement \"people\", based at dc=example,dc=com"
        );
        let err = open("ou=x,cn=Person 1,dc=example,dc=com", Some(&region)).unwrap_err();
        assert_eq!(
            err,
            "no entry ou=x,cn=Person 1,dc=example,dc=com (the nearest entry above it is cn=Person 1,dc=example,dc=com) \
             in the replica of \"people\""
        );
        let err = open("cn=Person 9,dc=example,dc=com", Some(&region)).unwrap_err();
        assert!(err.starts_with("no entry cn=Person 9,dc=example,dc=com (nor any entry above it)"), "{err}");
        // Without the agreement's configuration nothing is judged.
        assert!(open("dc=example,dc=org", None).is_ok());
        // Below a wider region, a base the replica does not hold but holds entries
        // below (a filter left it out) is searched, not refused.
        assert!(open("dc=example,dc=com", Some(&dn("dc=com"))).is_ok());
        let err = open("dc=example,dc=org", Some(&dn("dc=org"))).unwrap_err();
        assert!(err.starts_with("no entry dc=example,dc=org (nor any entry above it)"), "{err}");
    }

    /// A replica without a cookie is no state of its region, empty or not: a search of it
    /// is refused, saying which case it is, rather than printed as whole.
    #[test]
    fn a_replica_without_a_cookie_is_not_shown_as_its_region() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaStore::open(dir.path()).unwrap();
        let fresh = store.replica("people").unwrap();
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        let open = |store: &ReplicaStore| SearchPages::open(store, "people", Some(&spec.base), spec.clone());
        let err = open(&store).unwrap_err();
        assert_eq!(err, "the replica of \"people\" has not finished its first refresh: nothing to show yet");
        drop((fresh, store));

        let (_dir, store, replica) = people(3);
        assert!(open(&store).is_ok());
        replica.forget_cookie().unwrap();
        let err = open(&store).unwrap_err();
        assert!(err.starts_with("the replica of \"people\" awaits a full refresh"), "{err}");
        assert!(err.contains("the 3 entries it still holds are not its region"), "{err}");
    }

    /// Reads every page of `spec`, with `between` run after the first: the pages and
    /// what the call after the last one said.
    fn search_around(store: &ReplicaStore, between: impl FnOnce()) -> (String, Result<Option<String>, String>) {
        search_of(store, SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap()), between)
    }

    /// [`search_around`] of `spec`.
    fn search_of(
        store: &ReplicaStore,
        spec: SearchSpec,
        between: impl FnOnce(),
    ) -> (String, Result<Option<String>, String>) {
        let mut pages = SearchPages::open(store, "people", Some(&spec.base.clone()), spec).unwrap();
        let mut all = pages.next_page().unwrap().unwrap();
        between();
        loop {
            match pages.next_page() {
                Ok(Some(page)) => all.push_str(&page),
                end => return (all, end),
            }
        }
    }

    #[test]
    fn a_search_during_which_entries_were_added_or_renamed_ends_in_an_error_but_not_for_modifications() {
        let (_dir, store, replica) = people(1_200);
        let csn = std::cell::Cell::new(10);
        let apply = |op: ReplOp| {
            csn.set(csn.get() + 1);
            replica.apply(&[op], Some(Cookie { history: HistoryId::new_random(), csn: Csn(csn.get()) })).unwrap();
        };
        let held = |i: usize| replica.search(&SearchSpec::subtree(person(i).dn)).unwrap().remove(0);

        // A modification: each entry once, as it was at some moment; the search is whole.
        let (out, end) = search_around(&store, || {
            let mut e = held(1_100);
            e.attrs.add("description", [Value::from("changed")]).unwrap();
            e.csn = Csn(csn.get() + 1);
            apply(ReplOp::Upsert(e));
        });
        assert_eq!(end, Ok(None), "a modification leaves the search whole");
        assert_eq!(dns(&out), 1_200);

        // A rename of an entry already printed to a DN still to come: printed twice.
        let (out, end) = search_around(&store, || {
            let mut e = held(0);
            e.dn = Dn::parse("cn=Person 999999,dc=example,dc=com").unwrap();
            e.csn = Csn(csn.get() + 1);
            apply(ReplOp::Upsert(e));
        });
        assert_eq!(dns(&out), 1_201, "the renamed entry was printed under both names");
        let err = end.unwrap_err();
        assert!(
            err.starts_with(
                "the replica of \"people\" changed while it was printed (1 entry within the search's scope added, \
                 deleted or renamed), so the output may miss an entry or hold one twice"
            ),
            "{err}"
        );

        // An add and a delete.
        let (_, end) = search_around(&store, || {
            let mut e = person(5_000);
            e.csn = Csn(csn.get() + 1);
            apply(ReplOp::Upsert(e));
            let gone = held(7);
            apply(ReplOp::Delete { uuid: gone.uuid, csn: Csn(csn.get() + 1) });
        });
        assert!(end.unwrap_err().contains("(2 entries within the search's scope added, deleted or renamed)"));

        // Only changes within the search's base and scope count: a search of one entry
        // (or of a quiet branch) is whole whatever is added, deleted or renamed beside it.
        let one = || SearchSpec { scope: Scope::Base, ..SearchSpec::subtree(person(1_100).dn) };
        let (out, end) = search_of(&store, one(), || {
            let mut e = person(5_001);
            e.csn = Csn(csn.get() + 1);
            apply(ReplOp::Upsert(e));
            let gone = held(8);
            apply(ReplOp::Delete { uuid: gone.uuid, csn: Csn(csn.get() + 1) });
        });
        assert_eq!((dns(&out), end), (1, Ok(None)), "changes beside the searched entry leave its search whole");
        let (_, end) = search_of(&store, one(), || {
            let mut e = held(1_100);
            e.dn = Dn::parse("cn=Person 1100 moved,dc=example,dc=com").unwrap();
            e.csn = Csn(csn.get() + 1);
            apply(ReplOp::Upsert(e));
        });
        assert!(end.unwrap_err().contains("(1 entry within the search's scope added, deleted or renamed)"));

        // A refresh swapped in meanwhile.
        let (_, end) = search_around(&store, || {
            let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
            shadow.apply_scan(&(0..1_200).map(|i| ReplOp::Upsert(person(i))).collect::<Vec<_>>()).unwrap();
            shadow.finish(Cookie { history: HistoryId::new_random(), csn: Csn(1) }).unwrap();
        });
        assert!(end.unwrap_err().contains("(a refresh swapped in a new copy)"));

        // And with nothing meanwhile, whole again.
        assert_eq!(search_around(&store, || {}).1, Ok(None));
    }

    /// A rename into a search's scope from outside it counts, as a rename out of it does.
    #[test]
    fn an_entry_renamed_into_a_search_s_scope_from_outside_it_counts() {
        let (_dir, store, replica) = people(3);
        let held = |i: usize| replica.search(&SearchSpec::subtree(person(i).dn)).unwrap().remove(0);
        let branch = SearchSpec::subtree(person(1).dn);
        let (_, end) = search_of(&store, branch, || {
            let mut e = held(2);
            e.dn = Dn::parse("cn=Moved,cn=Person 1,dc=example,dc=com").unwrap();
            e.csn = Csn(20);
            replica
                .apply(&[ReplOp::Upsert(e)], Some(Cookie { history: HistoryId::new_random(), csn: Csn(20) }))
                .unwrap();
        });
        let err = end.unwrap_err();
        assert!(err.contains("(1 entry within the search's scope added, deleted or renamed)"), "{err}");
    }

    /// An entry that takes the DN of another removes it and is added there: two changes,
    /// each noted, as they are counted.
    #[test]
    fn an_entry_displacing_another_at_its_dn_counts_as_a_delete_and_an_add() {
        let (_dir, store, replica) = people(3);
        let one = SearchSpec { scope: Scope::Base, ..SearchSpec::subtree(person(1).dn) };
        let (_, end) = search_of(&store, one, || {
            let mut e = person(1); // a new entry (new UUID) at Person 1's DN
            e.csn = Csn(20);
            replica
                .apply(&[ReplOp::Upsert(e)], Some(Cookie { history: HistoryId::new_random(), csn: Csn(20) }))
                .unwrap();
        });
        let err = end.unwrap_err();
        assert!(err.contains("(2 entries within the search's scope added, deleted or renamed)"), "{err}");
    }
}
