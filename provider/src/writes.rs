//! Write-client sessions: `WriteRequest`s applied in order, each durable before its
//! `WriteResult` (pipelined ones share a transaction where they can, and a flush), and
//! `SearchRequest`s answered in bounded pages. This is how
//! `tether-provider write` reaches a running provider (which alone holds the store).

use std::sync::Arc;
use std::time::Duration;

use crate::outbound::{runs_within, BATCH_BYTES};
use tether_protocol::connection::{MessageReader, MessageWriter};
use tether_protocol::message::{GoodbyeReason, Message, WriteErrorKind, WriteOutcome};
use tether_protocol::Change;
use tether_store::{Directory, Refusal, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Entries read per page of a search.
const SEARCH_PAGE: usize = 500;
/// Limit on one blocked write to a client.
const WRITE_LIMIT: Duration = Duration::from_secs(30);

/// Maps a store error to what the client is told.
fn outcome_for(err: &StoreError) -> WriteOutcome {
    let kind = match err.refusal() {
        Some(Refusal::NoSuchObject(_)) => WriteErrorKind::NoSuchObject,
        Some(Refusal::AlreadyExists(_)) => WriteErrorKind::AlreadyExists,
        Some(Refusal::NoParent(_)) => WriteErrorKind::NoParent,
        Some(Refusal::NotAllowedOnNonLeaf(_)) => WriteErrorKind::NotAllowedOnNonLeaf,
        Some(Refusal::OutsideSuffix { .. } | Refusal::InvalidChange { .. }) => WriteErrorKind::InvalidChange,
        None if err.is_fatal() => WriteErrorKind::StoreFailed,
        None => WriteErrorKind::Internal,
    };
    // The client names the outcome itself ("refused (no-parent): ..."), so a refusal
    // travels as its own text, without the store error's "refused:" prefix.
    let message = err.refusal().map_or_else(|| err.to_string(), ToString::to_string);
    WriteOutcome::Refused { kind, message }
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut MessageWriter<W>, msg: &Message) -> bool {
    matches!(tokio::time::timeout(WRITE_LIMIT, writer.send(msg)).await, Ok(Ok(())))
}

/// Sends a group's results in one write: a pipelining client then reads them together
/// and refills its window at once, instead of one system call and one wake-up per ack.
async fn send_results<W: AsyncWrite + Unpin>(writer: &mut MessageWriter<W>, results: Vec<(u64, WriteOutcome)>) -> bool {
    let all = async {
        for (id, outcome) in results {
            writer.feed(&Message::WriteResult { id, outcome }).await?;
        }
        writer.flush().await
    };
    matches!(tokio::time::timeout(WRITE_LIMIT, all).await, Ok(Ok(())))
}

/// Most writes applied under one flush. A client may keep many writes in flight on one
/// connection (pipelining); those already received when one is taken are applied
/// together, made durable by one flush, then acknowledged in order. Each is still
/// durable before its `WriteResult`.
const GROUP_LIMIT: usize = 256;
/// Messages read ahead of the one being handled.
const READ_AHEAD: usize = GROUP_LIMIT;

/// Applies a group of writes in order, committing runs of them in one transaction
/// ([`Directory::write_group`]), then makes them durable with one flush.
fn apply_group(dir: &Directory, group: Vec<(u64, Change)>) -> Vec<(u64, WriteOutcome)> {
    let (ids, changes): (Vec<u64>, Vec<Change>) = group.into_iter().unzip();
    let committed = dir.write_group(&changes);
    let mut results = Vec::with_capacity(changes.len());
    let mut last = None;
    for ((id, change), result) in ids.into_iter().zip(changes).zip(committed) {
        let kind = change.kind();
        let outcome = match result {
            Ok(c) => {
                last = Some(c.csn);
                debug!(csn = %c.csn, kind, dn = %change.dn(), "write committed, not yet durable");
                Ok(c)
            }
            Err(e) => {
                info!(kind, dn = %change.dn(), error = %e, "write refused");
                Err(outcome_for(&e))
            }
        };
        results.push((id, kind, change, outcome));
    }
    let synced = match last {
        Some(csn) => dir.sync(csn).map_err(|e| {
            warn!(error = %e, "flushing a group of writes failed");
            outcome_for(&e)
        }),
        None => Ok(()),
    };
    results
        .into_iter()
        .map(|(id, kind, change, outcome)| {
            let outcome = match (outcome, &synced) {
                (Ok(c), Ok(())) => {
                    info!(csn = %c.csn, kind, dn = %change.dn(), "write committed");
                    WriteOutcome::Committed { csn: c.csn, uuid: c.uuid }
                }
                (Ok(_), Err(failed)) => failed.clone(),
                (Err(refused), _) => refused,
            };
            (id, outcome)
        })
        .collect()
}

/// Serves one write client until it leaves, the provider shuts down, or a reload revokes
/// the writer (`revoked` then says so: the client must not read it as a shutdown). Every
/// write taken is answered before any goodbye, so a client told goodbye while waiting
/// for an answer knows that write was not applied.
pub async fn run<R, W>(
    dir: Arc<Directory>,
    mut reader: MessageReader<R>,
    mut writer: MessageWriter<W>,
    cancel: CancellationToken,
    revoked: impl Fn() -> Option<GoodbyeReason>,
    idle_timeout: Duration,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // Reading runs ahead on its own task so pipelined writes can be taken as a group.
    let (tx, mut inbound) = mpsc::channel(READ_AHEAD);
    let read_task = tokio::spawn(async move {
        loop {
            let msg = reader.recv().await;
            let end = !matches!(msg, Ok(Some(_)));
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(read_task);
    let mut held: Option<Message> = None;
    loop {
        // A request held back when a group was taken (a search or a ping pipelined behind
        // writes) is answered only if the grant still stands once the group is: a reload
        // that revoked it meanwhile ends the session here, as it does before a request
        // read now.
        let msg = match held.take().filter(|_| !cancel.is_cancelled()) {
            Some(m) => Ok(Ok(Some(m))),
            // Biased: once the grant is revoked or the provider stops, no write that
            // arrived beside the cancel is applied (an unbiased select picks a ready
            // branch at random, and a client that pipelines always has one ready).
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let bye = match revoked() {
                        Some(reason) => {
                            info!("write client's grant revoked: the [writer] secret was changed or removed");
                            let detail = "the [writer] secret was changed or removed by a reload".to_owned();
                            Message::Goodbye { reason, detail }
                        }
                        None => Message::Goodbye {
                            reason: GoodbyeReason::Shutdown,
                            detail: crate::session::shutdown_detail(&dir),
                        },
                    };
                    let _ = send(&mut writer, &bye).await;
                    return;
                }
                msg = tokio::time::timeout(idle_timeout, inbound.recv()) => msg.map(|m| m.unwrap_or(Ok(None))),
            },
        };
        let msg = match msg {
            Err(_) => {
                // Said, since "left" alone reads as the client's doing: a stopped or
                // stranded `write` is dropped here.
                info!(after = ?idle_timeout, "write client sent nothing for the keepalive timeout; dropping it");
                let bye = Message::Goodbye { reason: GoodbyeReason::IdleTimeout, detail: "write client idle".into() };
                let _ = send(&mut writer, &bye).await;
                return;
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return,
            // A frame over `max_frame`, or one that does not decode: the client is told
            // why, since it cannot tell it from a provider that went away.
            Ok(Err(e)) if e.is_protocol_violation() => {
                warn!(error = %e, "write client broke the protocol");
                let bye = Message::Goodbye { reason: GoodbyeReason::ProtocolError, detail: e.to_string() };
                let _ = send(&mut writer, &bye).await;
                return;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "write client connection failed");
                return;
            }
        };
        let reply_ok = match msg {
            Message::WriteRequest { id, change } => {
                let mut group = vec![(id, change)];
                while group.len() < GROUP_LIMIT {
                    match inbound.try_recv() {
                        Ok(Ok(Some(Message::WriteRequest { id, change }))) => group.push((id, change)),
                        Ok(Ok(Some(other))) => {
                            held = Some(other);
                            break;
                        }
                        // The end of the stream or an error: answer the group first; the
                        // next receive sees the closed channel.
                        Ok(_) | Err(_) => break,
                    }
                }
                let d = dir.clone();
                let n = group.len();
                let ids: Vec<u64> = group.iter().map(|(id, _)| *id).collect();
                // The group's log lines name the client, as the session's do.
                let span = tracing::Span::current();
                let results = match tokio::task::spawn_blocking(move || span.in_scope(|| apply_group(&d, group))).await
                {
                    Ok(results) => results,
                    Err(e) => {
                        warn!(error = %e, writes = n, "write task failed");
                        let outcome = WriteOutcome::Refused { kind: WriteErrorKind::Internal, message: e.to_string() };
                        ids.into_iter().map(|id| (id, outcome.clone())).collect()
                    }
                };
                send_results(&mut writer, results).await
            }
            Message::SearchRequest { id, spec } => search(&dir, &mut writer, id, &spec, &cancel).await,
            Message::Ping { seq } => send(&mut writer, &Message::Pong { seq }).await,
            Message::Goodbye { .. } => return,
            other => {
                let detail = format!("unexpected {} from a write client", other.name());
                warn!(error = %detail, "write client broke the protocol");
                let bye = Message::Goodbye { reason: GoodbyeReason::ProtocolError, detail };
                let _ = send(&mut writer, &bye).await;
                return;
            }
        };
        if !reply_ok {
            // Said, as for an idle client: "left" alone reads as the client's doing.
            info!(
                limit = ?WRITE_LIMIT,
                "a reply to the write client failed or was not taken within the limit (it went away, or stopped \
                 reading); dropping it"
            );
            return;
        }
    }
}

/// Stops the read-ahead task when the session ends, which closes the connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers a search page by page until the region is read, or the grant is revoked or
/// the provider stops (`cancel`): the answer then ends without its `SearchDone`, and the
/// caller says goodbye. Read to the end, a region of a million entries went on to a
/// client whose grant a reload had taken away, and held up the provider's shutdown.
async fn search<W: AsyncWrite + Unpin>(
    dir: &Directory,
    writer: &mut MessageWriter<W>,
    id: u64,
    spec: &tether_protocol::SearchSpec,
    cancel: &CancellationToken,
) -> bool {
    let mut cursor: Option<Vec<u8>> = None;
    let mut count = 0u64;
    loop {
        if cancel.is_cancelled() {
            return true;
        }
        let (entries, next) =
            match dir.failure().observe(dir.entries().search_page(spec, cursor.as_deref(), SEARCH_PAGE)) {
                Ok(page) => page,
                Err(e) => {
                    let outcome = WriteOutcome::Refused { kind: WriteErrorKind::Internal, message: e.to_string() };
                    return send(writer, &Message::WriteResult { id, outcome }).await;
                }
            };
        count += entries.len() as u64;
        for entries in within_bytes(entries, BATCH_BYTES) {
            if !send(writer, &Message::SearchEntries { id, entries }).await {
                return false;
            }
        }
        match next {
            Some(key) => cursor = Some(key),
            None => return send(writer, &Message::SearchDone { id, count }).await,
        }
    }
}

/// `entries` in order, in runs of at most `budget` bytes encoded (one entry over it on
/// its own, as is one whose size cannot be told), none empty.
fn within_bytes(entries: Vec<tether_protocol::Entry>, budget: usize) -> Vec<Vec<tether_protocol::Entry>> {
    let sizes: Vec<usize> =
        entries.iter().map(|e| tether_protocol::codec::encoded_len(e).unwrap_or(usize::MAX)).collect();
    let mut entries = entries.into_iter();
    runs_within(sizes, budget).into_iter().map(|len| entries.by_ref().take(len).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::ldif::reader::parse_str;
    use tether_protocol::Dn;

    fn changes(text: &str) -> Vec<Change> {
        parse_str(text).unwrap().into_iter().map(|r| r.into_change()).collect()
    }

    /// A write client's session reading `reads` and answering on `writes`, whose grant
    /// `cancel` revokes as a reload taking `[writer]` away does.
    fn revocable_session(
        dir: &Arc<Directory>,
        reads: tokio::io::DuplexStream,
        writes: tokio::io::DuplexStream,
        cancel: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (reader, writer) = (MessageReader::new(reads), MessageWriter::new(writes));
        let revoked = || Some(GoodbyeReason::CredentialsRevoked);
        tokio::spawn(run(dir.clone(), reader, writer, cancel.clone(), revoked, Duration::from_secs(60)))
    }

    /// A message as the tests list what a client received: its name, a goodbye's with
    /// its reason.
    fn named(msg: Message) -> String {
        match msg {
            Message::Goodbye { reason, .. } => format!("goodbye {}", reason.as_str()),
            other => other.name().to_owned(),
        }
    }

    /// A page of large entries (each within what one message carries) is more than one
    /// message can carry: a write client's search must still get every entry and its
    /// `SearchDone`, each message within a frame.
    #[tokio::test]
    async fn a_search_of_large_entries_answers_in_messages_that_fit_a_frame() {
        use tether_protocol::connection;
        use tether_protocol::{Attributes, Filter, Scope, SearchSpec, Value};

        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        for change in changes("dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n") {
            dir.write(&change).unwrap();
        }
        // Three entries of 6 MiB: each fits a message of its own, two do not.
        let big = "x".repeat(6 << 20);
        for i in 0..3 {
            let mut attrs = Attributes::new();
            attrs.add("objectClass", [Value::from("device")]).unwrap();
            attrs.add("description", [Value::from(big.as_str())]).unwrap();
            let dn = Dn::parse(&format!("cn=big{i},dc=example,dc=com")).unwrap();
            dir.write(&Change::Add { dn, attrs }).unwrap();
        }
        let spec = SearchSpec {
            base: Dn::parse("dc=example,dc=com").unwrap(),
            scope: Scope::Subtree,
            filter: Filter::parse("(objectClass=*)").unwrap(),
            attrs: Vec::new(),
        };
        let (client, provider) = tokio::io::duplex(1 << 20);
        let (mut reader, _client_writer) = connection::split(client);
        let (provider_reader, mut writer) = connection::split(provider);
        let read = tokio::spawn(async move {
            let mut entries = 0;
            loop {
                match reader.recv().await {
                    Ok(Some(Message::SearchEntries { entries: page, .. })) => entries += page.len(),
                    Ok(Some(Message::SearchDone { count, .. })) => return Ok((entries, count)),
                    other => return Err(format!("{other:?}")),
                }
            }
        });
        let answered = search(&dir, &mut writer, 7, &spec, &CancellationToken::new()).await;
        drop((provider_reader, writer));
        let got = tokio::time::timeout(Duration::from_secs(30), read).await.unwrap().unwrap();
        assert!(answered, "the search's answer could not be sent");
        assert_eq!(got, Ok((4, 4)), "every entry and the count");
    }

    /// A search a client pipelined behind its writes is not answered once a reload has
    /// revoked the writer's grant while those writes were applied: the client gets
    /// their results, then the goodbye. The search, held back when the group was taken,
    /// was answered without a look at the revocation, and a client whose grant was
    /// gone read the directory (the writes before the revocation are answered, as
    /// every write taken is).
    #[tokio::test]
    async fn a_search_pipelined_behind_writes_is_not_answered_once_the_grant_is_revoked() {
        use tether_protocol::SearchSpec;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        for change in changes("dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n") {
            dir.write(&change).unwrap();
        }
        let before = dir.durable_csn();
        // Both requests are on the wire before the session reads; its answers go through
        // a pipe narrower than one of them, so none is sent whole before the client reads.
        let (mut client_sends, provider_reads) = tokio::io::duplex(64 * 1024);
        let (provider_writes, client_reads) = tokio::io::duplex(16);
        let mut to_provider = MessageWriter::new(&mut client_sends);
        let [write] =
            changes("dn: ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: people\n")
                .try_into()
                .unwrap();
        to_provider.send(&Message::WriteRequest { id: 1, change: write }).await.unwrap();
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        to_provider.send(&Message::SearchRequest { id: 2, spec }).await.unwrap();
        let cancel = CancellationToken::new();
        let session = revocable_session(&dir, provider_reads, provider_writes, &cancel);
        // The write is applied (its answer waits for the client to read): the reload
        // revokes the grant now.
        let applied = tokio::time::timeout(Duration::from_secs(10), async {
            while dir.durable_csn() == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        applied.await.expect("the write to be applied");
        cancel.cancel();
        let mut reader = MessageReader::new(client_reads);
        let mut seen = Vec::new();
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await.unwrap().unwrap() {
            seen.push(named(msg));
        }
        tokio::time::timeout(Duration::from_secs(10), session).await.unwrap().unwrap();
        assert_eq!(seen, ["write-result", "goodbye credentials-revoked"]);
    }

    /// A search under way when a reload revokes the writer's grant stops at its next
    /// page, and the client is told goodbye: it went on to the end of the region,
    /// however large, for a client whose grant was gone.
    #[tokio::test]
    async fn a_search_under_way_stops_at_its_next_page_once_the_grant_is_revoked() {
        use tether_protocol::SearchSpec;

        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        let mut text = String::from("dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n");
        for i in 0..3 * SEARCH_PAGE {
            text += &format!(
                "\ndn: ou=u{i},dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: u{i}\n"
            );
        }
        let written = dir.write_group(&changes(&text));
        assert!(written.iter().all(Result::is_ok));
        dir.sync(dir.newest_committed()).unwrap();
        let (mut client_sends, provider_reads) = tokio::io::duplex(64 * 1024);
        let (provider_writes, client_reads) = tokio::io::duplex(16);
        let spec = SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap());
        MessageWriter::new(&mut client_sends).send(&Message::SearchRequest { id: 2, spec }).await.unwrap();
        let cancel = CancellationToken::new();
        let session = revocable_session(&dir, provider_reads, provider_writes, &cancel);
        let mut reader = MessageReader::new(client_reads);
        async fn next(reader: &mut MessageReader<tokio::io::DuplexStream>) -> Option<Message> {
            tokio::time::timeout(Duration::from_secs(10), reader.recv()).await.unwrap().unwrap()
        }
        let first = next(&mut reader).await;
        assert!(matches!(first, Some(Message::SearchEntries { .. })), "{first:?}");
        // The reload revokes the grant while the answer streams.
        cancel.cancel();
        let mut seen = vec!["search-entries".to_owned()];
        while let Some(msg) = next(&mut reader).await {
            seen.push(named(msg));
        }
        tokio::time::timeout(Duration::from_secs(10), session).await.unwrap().unwrap();
        assert_eq!(seen.last().map(String::as_str), Some("goodbye credentials-revoked"), "{seen:?}");
        let pages = seen.iter().filter(|m| *m == "search-entries").count();
        assert!(
            pages <= 2 && !seen.iter().any(|m| m == "search-done"),
            "the search went on after the revocation: {seen:?}"
        );
    }

    /// Pings pipelined between writes are answered where they stand among them, each in
    /// its turn: the one met when a group of writes is taken (a search is held the same
    /// way) waits for the group's answers, and is not lost; a client waiting on it sees
    /// the session go silent and drops it as dead.
    #[tokio::test]
    async fn pings_pipelined_between_writes_are_each_answered_in_the_order_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap());
        // Everything is on the wire before the session reads, so that its reader runs
        // ahead and groups are taken with a ping behind them.
        let (mut client_sends, provider_reads) = tokio::io::duplex(1 << 20);
        let (provider_writes, client_reads) = tokio::io::duplex(1 << 20);
        let mut to_provider = MessageWriter::new(&mut client_sends);
        let mut text = String::from("dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n");
        for i in 0..50 {
            text += &format!(
                "\ndn: ou=u{i},dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: u{i}\n"
            );
        }
        let mut expected = Vec::new();
        for (i, change) in changes(&text).into_iter().enumerate() {
            let id = i as u64;
            to_provider.feed(&Message::WriteRequest { id, change }).await.unwrap();
            to_provider.feed(&Message::Ping { seq: 1000 + id }).await.unwrap();
            expected.extend([format!("write-result {id}"), format!("pong {}", 1000 + id)]);
        }
        let bye = Message::Goodbye { reason: GoodbyeReason::Shutdown, detail: "write finished".into() };
        to_provider.send(&bye).await.unwrap();
        let session = revocable_session(&dir, provider_reads, provider_writes, &CancellationToken::new());
        let mut reader = MessageReader::new(client_reads);
        let mut seen = Vec::new();
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await.unwrap().unwrap() {
            seen.push(match msg {
                Message::WriteResult { id, outcome: WriteOutcome::Committed { .. } } => format!("write-result {id}"),
                Message::Pong { seq } => format!("pong {seq}"),
                other => format!("{other:?}"),
            });
        }
        tokio::time::timeout(Duration::from_secs(10), session).await.unwrap().unwrap();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_group_answers_each_write_in_order_and_is_durable_when_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let group = changes(
            "dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n\n\
             dn: dc=example,dc=com\nchangetype: add\nobjectClass: domain\ndc: example\n\n\
             dn: ou=people,dc=example,dc=com\nchangetype: add\nobjectClass: organizationalUnit\nou: people\n",
        );
        let results = apply_group(&dir, group.into_iter().enumerate().map(|(i, c)| (i as u64 + 10, c)).collect());
        let ids: Vec<u64> = results.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [10, 11, 12]);
        let csns: Vec<Option<u64>> = results
            .iter()
            .map(|(_, o)| match o {
                WriteOutcome::Committed { csn, .. } => Some(csn.0),
                WriteOutcome::Refused { .. } => None,
            })
            .collect();
        assert!(csns[0].is_some() && csns[2].is_some(), "{results:?}");
        assert!(
            matches!(&results[1].1, WriteOutcome::Refused { kind: WriteErrorKind::AlreadyExists, .. }),
            "a refusal does not stop the writes after it: {results:?}"
        );
        assert!(csns[2] > csns[0]);
        assert_eq!(dir.durable_csn().0, csns[2].unwrap_or_default(), "durable before answering");
        assert_eq!(dir.entries().len(), 2);
    }
}
