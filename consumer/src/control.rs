//! The consumer's control endpoint: a Unix socket (mode 0600) answering `status`,
//! `search`, `stop`/`start`/`restart NAME`, `reload` and `wait` (until a CSN is durable,
//! or with `--visible` until it is applied) while the process runs.

use tether_protocol::control::{
    read_request, respond, respond_done, respond_paged, ControlError, ControlRequest, ControlResponse, Process,
};
use tether_protocol::{frame, ldif, Csn, Dn, SearchSpec};
use tether_store::entry_set::DnKey;
use tether_store::{Replica, ReplicaStore};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::daemon::Agreements;
use crate::reason::State;
use crate::status::{ConsumerStatus, Reach};
use crate::supervisor::Command;

/// Longest a `WaitCsn` request may wait: a client that wants longer asks again, and
/// learns in between where the agreement stands.
const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    pub reload: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
    /// Cancelled when the consumer begins to shut down: an open `WaitCsn` then answers
    /// where the agreement stands instead of waiting on.
    pub shutdown: CancellationToken,
    /// The configuration file the consumer runs with, for commands a reply suggests.
    pub config_file: std::path::PathBuf,
}

/// Serves control connections until `ctx.shutdown`.
pub async fn serve(listener: UnixListener, ctx: ControlContext) {
    let shutdown = ctx.shutdown.clone();
    let handler = move |stream: UnixStream| {
        let ctx = ctx.clone();
        async move {
            if let Err(e) = handle(stream, ctx).await {
                debug!(error = %e, "control connection ended");
            }
        }
    };
    tether_config::shell::serve_control(listener, shutdown.cancelled_owned(), handler).await;
}

/// The canonical LDIF of the entries of a replica in a region, a page of
/// `SEARCH_PAGE` entries at a time: a search holds one page, not the replica (the whole
/// LDIF of a million entries took the consumer to 3 GiB). Each page is read from the
/// generation active at that moment, after the last DN returned, as a provider's search
/// reads through concurrent writes; a reload swapped in mid-search continues in the new
/// generation.
#[derive(Debug)]
pub struct SearchPages {
    replica: Replica,
    spec: SearchSpec,
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
    /// or if a base below the region's own names no entry of the replica. The region's
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
        let region = region.filter(|region| !region.is_descendant_of(&spec.base));
        if let Some(region) = region.filter(|region| !spec.base.is_descendant_of(region)) {
            return Err(format!("--base {} is outside the region of agreement {name:?}, based at {region}", spec.base));
        }
        if region.is_some() {
            let missing = replica.read_active(|entries| entries.missing_base(&spec.base)).map_err(|e| e.to_string())?;
            if let Some(missing) = missing {
                return Err(format!("{missing} in the replica of {name:?}"));
            }
        }
        Ok(Self { replica, spec, after: None, done: false, uuids: false })
    }

    /// Prints each entry's `entryUUID` too (`search --uuids`).
    pub fn with_uuids(self, uuids: bool) -> Self {
        Self { uuids, ..self }
    }

    /// The LDIF of the next page, `None` once the region is exhausted. Reads the store:
    /// call it off the async threads.
    pub fn next_page(&mut self) -> Result<Option<String>, String> {
        if self.done {
            return Ok(None);
        }
        let (spec, after) = (&self.spec, self.after.as_deref());
        let (page, next) = self
            .replica
            .read_active(|entries| entries.search_page(spec, after, SEARCH_PAGE))
            .map_err(|e| e.to_string())?;
        self.done = next.is_none();
        self.after = next;
        let mut out = Vec::new();
        for e in &page {
            ldif::writer::write_search_result(&mut out, e, self.uuids).map_err(|e| e.to_string())?;
        }
        String::from_utf8(out).map(Some).map_err(|e| e.to_string())
    }
}

/// `wait`: answers with where the replica stands once it reaches `csn` by the measure
/// of `reach`, or says where it stands instead.
async fn wait(ctx: &ControlContext, name: &str, csn: Csn, reach: Reach, timeout_ms: u64) -> Result<String, String> {
    let Some(status) = ctx.agreements.lock().await.get(name).map(|r| r.status.clone()) else {
        return Err(format!("no agreement named {name:?}"));
    };
    let limit = std::time::Duration::from_millis(timeout_ms).min(WAIT_LIMIT);
    // Where the agreement stands, for an answer that is not the CSN: a stopped or closed
    // agreement, or one in backoff after an error, is the usual reason.
    let stands = || {
        let now = status.snapshot();
        let at = status.csn(reach).map_or("none".to_owned(), |c| c.to_string());
        let why = now.last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
        (now.state, format!("the agreement is {} at csn {at}{why}", now.state))
    };
    // A stopped or closed agreement cannot move until an operator starts it: say so at
    // once, as a stopped consumer's store does, rather than after the whole timeout.
    let (state, stand) = stands();
    if matches!(state, State::Stopped | State::Closed) && status.csn(reach).is_none_or(|c| c < csn) {
        return Err(format!(
            "{name}: csn {csn} not {}; {stand}, and stays there until it is started (tether-consumer start -c {} \
             {name})",
            reach.as_str(),
            ctx.config_file.display()
        ));
    }
    let reached = tokio::select! {
        reached = status.wait_csn(csn, reach, limit) => Some(reached),
        _ = ctx.shutdown.cancelled() => status.csn(reach).is_some_and(|c| c >= csn).then_some(true),
    };
    if reached == Some(true) {
        return Ok(format!("{}\n", status.csn(reach).unwrap_or(csn)));
    }
    let within = if reached.is_none() { "before the consumer shut down".into() } else { format!("within {limit:?}") };
    Err(format!("{name}: csn {csn} not {} {within}; {}", reach.as_str(), stands().1))
}

async fn handle(stream: UnixStream, ctx: ControlContext) -> Result<(), ControlError> {
    let (mut reader, mut writer) = frame::split(stream);
    let request = read_request(&mut reader, &mut writer, Process::Consumer).await?;
    let uuids = matches!(request, ControlRequest::SearchWithUuids { .. });
    let reply: Result<String, String> = match request {
        ControlRequest::Status { json } => {
            let agreements = ctx.agreements.lock().await;
            let status = ConsumerStatus {
                running: true,
                store_error: ctx.store.failure().latched().map(|f| f.to_string()),
                agreements: agreements.values().map(|r| r.status.snapshot()).collect(),
            };
            if json {
                serde_json::to_string_pretty(&status).map(|s| s + "\n").map_err(|e| e.to_string())
            } else {
                Ok(status.to_text())
            }
        }
        ControlRequest::Search { agreement, spec } | ControlRequest::SearchWithUuids { agreement, spec } => {
            let name = match agreement {
                Some(n) => Ok(n),
                None => {
                    let agreements = ctx.agreements.lock().await;
                    match agreements.keys().collect::<Vec<_>>().as_slice() {
                        [only] => Ok((*only).clone()),
                        _ => Err("several agreements: name one with --agreement".to_owned()),
                    }
                }
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
                    "--uuids prints a copy to restore from, and the replica of {name:?} changes while it is {}: \
                     stop the agreement first (tether-consumer stop -c {} {name}, then start), or stop the consumer",
                    state.as_str(),
                    ctx.config_file.display()
                )),
                _ => Ok(name),
            });
            match name.and_then(|name| SearchPages::open(&ctx.store, &name, region.as_ref(), spec)) {
                Ok(pages) => {
                    let mut pages = pages.with_uuids(uuids);
                    return respond_paged(&mut writer, move || pages.next_page()).await;
                }
                Err(e) => Err(e),
            }
        }
        ControlRequest::Stop { name } => command(&ctx, &name, Command::Stop).await,
        ControlRequest::Start { name } => command(&ctx, &name, Command::Start).await,
        ControlRequest::Restart { name } => command(&ctx, &name, Command::Restart).await,
        ControlRequest::WaitCsn { name, csn, timeout_ms } => wait(&ctx, &name, csn, Reach::Durable, timeout_ms).await,
        ControlRequest::WaitVisible { name, csn, timeout_ms } => {
            wait(&ctx, &name, csn, Reach::Visible, timeout_ms).await
        }
        ControlRequest::Reload => {
            let (tx, rx) = oneshot::channel();
            if ctx.reload.send(tx).await.is_err() {
                Err("consumer is shutting down".to_owned())
            } else {
                // A line of its own, like every other reply the shell prints.
                rx.await.unwrap_or_else(|_| Err("reload was abandoned".to_owned())).map(|report| format!("{report}\n"))
            }
        }
        ControlRequest::For { .. } => Err("a request addressed twice; the command-line tools send none".to_owned()),
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
    let Some(running) = agreements.get(name) else { return Err(format!("no agreement named {name:?}")) };
    running.commands.send(cmd).await.map_err(|_| format!("agreement {name:?} is shutting down"))?;
    Ok(format!("{name}: {cmd:?}\n").to_lowercase())
}

#[cfg(test)]
mod tests {
    use tether_protocol::{Attributes, Cookie, Csn, Dn, Entry, EntryUuid, HistoryId, RefreshKind, ReplOp, Value};

    use super::*;

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
    }
}
