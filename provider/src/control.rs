//! The provider's control endpoint: a Unix socket (mode 0600) that answers `status`,
//! `search`, `reload`, `forget` and `backup` for the command-line tools, which cannot
//! open the store while the provider holds it; with a `status_group`, 0660, its members
//! getting `status` alone.

use std::sync::Arc;

use tether_protocol::control::{
    from_file, read_request, reload_elsewhere, respond, respond_done, respond_paged, ControlRequest, ControlResponse,
    Peer, Process, StatusGroup,
};
use tether_protocol::frame;
use tether_protocol::{ldif, Csn, SearchSpec};
use tether_store::Directory;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::registry::Registry;
use crate::status::ProviderStatus;

/// Entries per search output chunk.
const SEARCH_CHUNK: usize = 500;

/// What the control endpoint can reach.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The store.
    pub dir: Arc<Directory>,
    /// Live sessions.
    pub registry: Registry,
    /// Asked to reload the configuration.
    pub reload: tether_config::shell::ReloadRequests,
    /// The configuration file the provider was started with, which a reload re-reads.
    pub config_file: tether_protocol::control::StartedWith,
    /// The address it listens on.
    pub listen: std::net::SocketAddr,
    /// The certificate it serves (start and reload set it), whose end `status` shows.
    pub served: tokio::sync::watch::Receiver<Option<crate::validity::Served>>,
    /// The address the metrics endpoint listens on, if it does.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Who writes a backup's copy.
    pub backup_writer: crate::backup::writer::Writer,
}

impl ControlContext {
    /// The running provider's status as of now: what `status` prints and the metrics
    /// endpoint serves. A store error is noted as the store's failure, as every read's.
    pub fn status(&self) -> Result<ProviderStatus, tether_store::StoreError> {
        let status = ProviderStatus::collect(&self.dir, &self.registry, Some(self.listen)).inspect_err(|e| {
            self.dir.failure().note(e);
        })?;
        Ok(ProviderStatus {
            certificate_expires_at: self.served.borrow().as_ref().map(expiry),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()),
            ..status
        })
    }
}

/// When the certificate `served` expires, as `status` shows it (RFC 3339).
fn expiry(served: &crate::validity::Served) -> String {
    humantime::format_rfc3339_seconds(served.validity.not_after).to_string()
}

/// Serves control connections until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    status_group: Option<StatusGroup>,
    ctx: ControlContext,
    shutdown: CancellationToken,
) {
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

/// Why `spec` cannot be searched in `dir`, as LDAP would refuse it: a base outside the
/// suffix, or one that names no entry (with the nearest entry above it). A search that
/// printed nothing for a mistyped base looked exactly like one that matched nothing.
pub fn check_search(dir: &Directory, spec: &SearchSpec) -> Result<(), String> {
    let suffix = dir.suffix();
    if !spec.base.is_descendant_of(suffix) {
        return Err(format!("--base {} is outside this directory, whose suffix is {suffix}", spec.base));
    }
    match dir.failure().observe(dir.entries().missing_base(&spec.base)) {
        Ok(None) => Ok(()),
        Ok(Some(missing)) => Err(missing.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `forget`: drops the position `dir` keeps for consumer `consumer` of `agreement`, and
/// says what it was and what follows. Refused while a session of that consumer is open
/// in `registry` (it would record the position again at once, and is plainly not gone),
/// and for a consumer not known, naming the known ones of the agreement.
pub fn forget(dir: &Directory, registry: &Registry, agreement: &str, consumer: &str) -> Result<String, String> {
    if let Some(open) = registry.snapshot().iter().find(|s| s.agreement == agreement && s.client == consumer) {
        return Err(format!(
            "consumer {consumer} of agreement {agreement} is connected now (session {} from {}), and would be \
             recorded again at once: stop it first (`tether-consumer stop` of {agreement} on its host), then forget it; \
             nothing was done",
            open.session_id, open.peer
        ));
    }
    let id = crate::session::position_id(agreement, consumer);
    match dir.forget_consumer(&id).map_err(|e| e.to_string())? {
        Some(position) => Ok(format!(
            "forgot consumer {consumer} of agreement {agreement} (at csn {}, last seen {}): the changelog is no longer \
             held for it; should it come back, it resumes by delta if the changelog still holds its position, and \
             takes a present refresh if not\n",
            position.csn,
            crate::registry::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(position.seen_ms)),
        )),
        None => {
            let known: Vec<String> = dir
                .consumer_positions()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|(key, _)| {
                    let (a, c) = crate::session::split_position_id(&key);
                    (a == agreement).then(|| c.to_owned())
                })
                .collect();
            Err(format!(
                "no consumer {consumer} of agreement {agreement} is known ({}); nothing was done",
                match known.as_slice() {
                    [] => "the agreement has none".to_owned(),
                    known if known.len() > 10 => {
                        format!("its known consumers: {} and {} more", known[..10].join(", "), known.len() - 10)
                    }
                    known => format!("its known consumers: {}", known.join(", ")),
                }
            ))
        }
    }
}

/// Fails if entries of `spec`'s region were added, deleted or renamed after `since`,
/// while the region was printed page by page: the output may then miss an entry, hold
/// one twice or hold one without its parent, and a backup must not look whole when it
/// may not be. (A modification leaves each entry printed once, as it was at some moment
/// of the run.)
fn reshaped_while_printed(dir: &Directory, spec: &SearchSpec, since: Csn) -> Result<(), String> {
    match dir.reshaped_since(since, spec) {
        Ok(Some(0)) => Ok(()),
        Ok(None) => Err(format!(
            "the changelog was trimmed past csn {since} while this region was printed, so whether entries were \
             added, deleted or renamed meanwhile cannot be told: run it again, or with the provider stopped"
        )),
        Ok(Some(n)) => Err(format!(
            "{} of this region {} added, deleted or renamed while it was printed (after csn {since}), so \
             the output may miss an entry or hold one twice: it is not a whole copy. Run it again when \
             fewer writes come, or with the provider stopped (it then reads the store as it is)",
            if n == 1 { "1 entry".to_owned() } else { format!("{n} entries") },
            if n == 1 { "was" } else { "were" },
        )),
        Err(e) => Err(format!("checking the changes made while printing: {e}")),
    }
}

/// The LDIF of the page of `spec` after the DN key `after` (with each entry's UUID when
/// `uuids`), and the key the next page starts after (`None` at the end). Reads the store
/// and renders up to [`SEARCH_CHUNK`] entries ([`respond_paged`] runs it off the async
/// threads).
fn search_page_text(
    dir: &Directory,
    spec: &SearchSpec,
    after: Option<&[u8]>,
    uuids: bool,
) -> Result<(String, Option<Vec<u8>>), String> {
    let (page, next) =
        dir.failure().observe(dir.entries().search_page(spec, after, SEARCH_CHUNK)).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    for e in &page {
        // Writing to a Vec cannot fail.
        let _ = ldif::writer::write_search_result(&mut text, e, uuids);
    }
    Ok((String::from_utf8_lossy(&text).into_owned(), next))
}

async fn handle(
    stream: UnixStream,
    peer: Peer,
    ctx: ControlContext,
) -> Result<(), tether_protocol::control::ControlError> {
    let (mut reader, mut writer) = frame::split(stream);
    let request = read_request(&mut reader, &mut writer, Process::Provider, &peer).await?;
    let request = match from_file(Process::Provider, &ctx.config_file, request) {
        Ok(request) => request,
        Err(elsewhere) => return respond(&mut writer, &ControlResponse::Error(elsewhere)).await,
    };
    let uuids = matches!(request, ControlRequest::SearchWithUuids { .. });
    let reply = match request {
        ControlRequest::Status { json } => match ctx.status() {
            Ok(status) if json => {
                Ok(serde_json::to_string_pretty(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n")
            }
            Ok(status) => Ok(status.to_text()),
            Err(e) => Err(e.to_string()),
        },
        ControlRequest::Search { spec, .. } | ControlRequest::SearchWithUuids { spec, .. } => {
            if let Err(e) = check_search(&ctx.dir, &spec) {
                return respond(&mut writer, &ControlResponse::Error(e)).await;
            }
            let (dir, mut after, mut done) = (ctx.dir.clone(), None, false);
            // Output that may miss an entry or hold one twice must not look whole (a
            // backup with `--uuids` is restored with `load`; a plain search is compared
            // or loaded elsewhere): the changes made while it is printed are checked
            // after, in the changelog.
            let mut since = Some(ctx.dir.durable_csn());
            let next_page = move || {
                if done {
                    return match since.take() {
                        Some(since) => reshaped_while_printed(&dir, &spec, since).map(|()| None),
                        None => Ok(None),
                    };
                }
                let (text, next) = search_page_text(&dir, &spec, after.as_deref(), uuids)?;
                done = next.is_none();
                after = next;
                Ok(Some(text))
            };
            return respond_paged(&mut writer, next_page).await;
        }
        ControlRequest::ReloadFile { file } => match reload_elsewhere(Process::Provider, &ctx.config_file, &file) {
            Some(elsewhere) => Err(elsewhere),
            None => tether_config::shell::ask_reload(&ctx.reload, "provider").await,
        },
        ControlRequest::Reload => tether_config::shell::ask_reload(&ctx.reload, "provider").await,
        ControlRequest::Backup { dest } => {
            return crate::backup::serve(&mut writer, ctx.dir.clone(), dest, ctx.backup_writer.clone()).await
        }
        ControlRequest::Forget { agreement, consumer } => {
            let (dir, registry) = (ctx.dir.clone(), ctx.registry.clone());
            tokio::task::spawn_blocking(move || forget(&dir, &registry, &agreement, &consumer))
                .await
                .unwrap_or_else(|e| Err(format!("forgetting the consumer: {e}")))
        }
        ControlRequest::Stop { .. }
        | ControlRequest::Start { .. }
        | ControlRequest::Restart { .. }
        | ControlRequest::WaitCsn { .. }
        | ControlRequest::WaitVisible { .. } => {
            Err("the provider takes no agreement commands: stop, start, restart and wait are the consumer's".to_owned())
        }
        ControlRequest::For { .. } => Err("a request addressed twice; the command-line tools send none".to_owned()),
        ControlRequest::FromFile { .. } => {
            Err("a request from two configuration files; the command-line tools send none".to_owned())
        }
    };
    match reply {
        Ok(text) => {
            respond_done(&mut writer, &text).await?;
        }
        Err(e) => respond(&mut writer, &ControlResponse::Error(e)).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SessionInfo;
    use crate::session::position_id;

    fn store() -> (tempfile::TempDir, Directory) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &tether_protocol::Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        (tmp, dir)
    }

    /// A consumer gone for good is dropped, and the answer says where it stood and what
    /// happens should it come back; only that consumer of that agreement goes.
    #[test]
    fn forget_drops_the_position_and_says_where_it_stood() {
        let (_tmp, dir) = store();
        dir.record_consumer(&position_id("people", "gone"), Csn(7)).unwrap();
        dir.record_consumer(&position_id("groups", "gone"), Csn(7)).unwrap();
        dir.record_consumer(&position_id("people", "here"), Csn(9)).unwrap();
        let said = forget(&dir, &Registry::default(), "people", "gone").unwrap();
        assert!(said.starts_with("forgot consumer gone of agreement people (at csn 7, last seen "), "{said}");
        assert!(said.contains("resumes by delta if the changelog still holds its position"), "{said}");
        let left: Vec<String> = dir.consumer_positions().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(left, [position_id("groups", "gone"), position_id("people", "here")]);
    }

    /// A consumer connected now is not gone, and its session would record it again at
    /// once: refused, naming the session, and the position stays.
    #[test]
    fn forget_refuses_a_consumer_that_is_connected() {
        let (_tmp, dir) = store();
        dir.record_consumer(&position_id("people", "host-a"), Csn(3)).unwrap();
        let registry = Registry::default();
        let session = SessionInfo::for_test(41, "127.0.0.1:40000", "people", "host-a");
        let _open = registry.register(session, &CancellationToken::new());
        let refused = forget(&dir, &registry, "people", "host-a").unwrap_err();
        assert!(refused.contains("is connected now (session 41 from 127.0.0.1:40000)"), "{refused}");
        assert!(refused.ends_with("nothing was done"), "{refused}");
        assert_eq!(dir.consumer_positions().unwrap().len(), 1);
        // The same id under another agreement is another consumer.
        dir.record_consumer(&position_id("groups", "host-a"), Csn(3)).unwrap();
        assert!(forget(&dir, &registry, "groups", "host-a").is_ok());
    }

    /// A consumer id mistyped is refused with the ones the agreement has, so the operator
    /// can copy the right one; the list is cut at ten.
    #[test]
    fn forget_of_an_unknown_consumer_names_the_agreement_s_known_ones() {
        let (_tmp, dir) = store();
        let refused = forget(&dir, &Registry::default(), "people", "nobody").unwrap_err();
        assert_eq!(
            refused,
            "no consumer nobody of agreement people is known (the agreement has none); nothing was done"
        );
        for i in 0..12 {
            dir.record_consumer(&position_id("people", &format!("c{i:02}")), Csn(1)).unwrap();
        }
        let refused = forget(&dir, &Registry::default(), "people", "c1").unwrap_err();
        assert!(
            refused.contains("(its known consumers: c00, c01, c02, c03, c04, c05, c06, c07, c08, c09 and 2 more)"),
            "{refused}"
        );
        assert_eq!(dir.consumer_positions().unwrap().len(), 12, "nothing was done");
    }

    /// Ten known consumers are all named, with no "and 0 more"; the eleventh is the
    /// first left out: the list is cut at ten, not at nine, and says how many it leaves.
    #[test]
    fn ten_known_consumers_are_all_named_and_an_eleventh_is_counted() {
        let (_tmp, dir) = store();
        for i in 0..10 {
            dir.record_consumer(&position_id("people", &format!("c{i:02}")), Csn(1)).unwrap();
        }
        let refused = forget(&dir, &Registry::default(), "people", "c1").unwrap_err();
        assert!(
            refused
                .contains("(its known consumers: c00, c01, c02, c03, c04, c05, c06, c07, c08, c09); nothing was done"),
            "{refused}"
        );
        dir.record_consumer(&position_id("people", "c10"), Csn(1)).unwrap();
        let refused = forget(&dir, &Registry::default(), "people", "c1").unwrap_err();
        assert!(refused.contains(": c00, c01, c02, c03, c04, c05, c06, c07, c08, c09 and 1 more)"), "{refused}");
    }

    /// The known consumers named for an id not known are the agreement's only: a
    /// consumer of another agreement is no candidate for the one mistyped (forgetting it
    /// under this agreement would fail again), and listing it would mislead.
    #[test]
    fn an_unknown_consumer_is_answered_with_its_agreement_s_known_ones_only() {
        let (_tmp, dir) = store();
        dir.record_consumer(&position_id("groups", "g-host"), Csn(1)).unwrap();
        dir.record_consumer(&position_id("people", "p-host"), Csn(1)).unwrap();
        let refused = forget(&dir, &Registry::default(), "people", "nobody").unwrap_err();
        assert_eq!(
            refused,
            "no consumer nobody of agreement people is known (its known consumers: p-host); nothing was done"
        );
        let refused = forget(&dir, &Registry::default(), "other", "nobody").unwrap_err();
        assert!(refused.contains("(the agreement has none)"), "{refused}");
    }

    /// The answer says when the consumer forgotten was last seen, as the store recorded
    /// it: the operator's check that it is the one gone for good (a consumer seen a
    /// minute ago is not), so it must be that time, not another.
    #[test]
    fn forget_says_when_the_consumer_was_last_seen() {
        let (_tmp, dir) = store();
        let before = std::time::SystemTime::now();
        dir.record_consumer(&position_id("people", "gone"), Csn(7)).unwrap();
        let after = std::time::SystemTime::now();
        let said = forget(&dir, &Registry::default(), "people", "gone").unwrap();
        let seen = said.split("last seen ").nth(1).and_then(|rest| rest.split(')').next()).unwrap();
        let seen = humantime::parse_rfc3339(seen).unwrap();
        let second = std::time::Duration::from_secs(1);
        assert!(
            before - second <= seen && seen <= after,
            "last seen {seen:?}, recorded between {before:?} and {after:?}: {said}"
        );
    }
}
