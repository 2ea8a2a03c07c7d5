//! The refresh planner (SPEC §3): turns a consumer's cookie into the stream of messages
//! that brings its replica up to date, one bounded batch at a time.
//!
//! - **full**: every entry of the region, paged in tree order.
//! - **present**: the same scan, but entries unchanged since the cookie go as UUIDs only.
//! - **delta**: the coalesced changelog since the cookie.
//!
//! sled has no snapshots, so a scan sees writes that happen while it runs. The planner
//! therefore notes the durable CSN before scanning and follows every scan with a delta
//! from that CSN (the catch-up); the `RefreshDone` cookie is where that delta ended.
//! The scan skips every entry changed after that CSN, so it sends each entry at most
//! once, and whatever it skipped or missed is settled by the catch-up.
//!
//! The same argument makes a scan resumable: after each page the consumer is handed a
//! [`ResumePoint`] (the scan cursor and the catch-up's start). A consumer interrupted
//! mid-scan presents it on reconnect and the scan continues after the cursor, as long as
//! the changelog still reaches back to the start: whatever changed behind the cursor
//! meanwhile is in the catch-up delta, exactly as for an uninterrupted scan.
//!
//! The catch-up (and a delta) needs the changelog from its start on, so a refresh pins
//! it there ([`tether_store::pins`]) from planning until `RefreshDone`: a trim running
//! meanwhile stops at the pin instead of removing changes the refresh is about to read.

use std::collections::VecDeque;

use tether_protocol::encoded::{EncodedMessage, EncodedOp};
use tether_protocol::message::Message;
use tether_protocol::{Cookie, Csn, EntryHead, RefreshKind, ResumePoint, SearchSpec};
use tether_store::{Delta, Directory, Pin, StoreError};

use crate::outbound::{runs_within, Outbound, BATCH_BYTES};

/// Most UUIDs in one `PresentBatch`: [`BATCH_BYTES`] of them, 16 bytes each. A page
/// holds `batch_size` entries, which the configuration does not bound, and a million
/// UUIDs no longer fit a frame.
const PRESENT_PER_MESSAGE: usize = BATCH_BYTES / 16;

/// Where the planner is.
#[derive(Debug)]
enum Phase {
    /// Paging through the region; `cursor` is the last DN key sent.
    Scan {
        /// Resume after this key.
        cursor: Option<Vec<u8>>,
    },
    /// Sending the coalesced changes since `from`.
    Changes {
        /// The delta being drained.
        delta: Delta,
    },
    /// `RefreshDone` sent.
    Done,
}

/// A refresh in progress for one session.
#[derive(Debug)]
pub struct Refresh {
    /// Which refresh was chosen.
    kind: RefreshKind,
    /// The consumer's region.
    spec: SearchSpec,
    /// The consumer's position (present: entries at or below it go as UUIDs).
    since: Csn,
    /// The durable CSN when the data phase started; the catch-up starts here.
    start: Csn,
    /// Where the refresh ends; set when the final delta is planned.
    end: Csn,
    /// Maximum operations (or UUIDs) per message.
    batch_size: usize,
    /// Whether this continues an interrupted refresh.
    resumed: bool,
    /// Current phase.
    phase: Phase,
    /// Messages produced but not yet handed out (a present page yields two).
    pending: VecDeque<Outbound>,
    /// Keeps the changelog above the CSN this refresh reads from (`since` for a delta,
    /// `start` for a scan's catch-up) until `RefreshDone` is queued.
    pin: Option<Pin>,
    /// Operations and UUIDs queued so far, for the log.
    sent: u64,
}

impl Refresh {
    /// Plans the refresh for a consumer presenting `cookie` and, if it was interrupted
    /// in a full or present refresh, `resume`.
    pub fn plan(
        dir: &Directory,
        spec: SearchSpec,
        cookie: Option<&Cookie>,
        resume: Option<&ResumePoint>,
        batch_size: usize,
    ) -> Result<Self, StoreError> {
        let batch_size = batch_size.max(1);
        // A delta cut short left the consumer's replica past its cookie, with data of the
        // history and up to the CSN this names (`Replica::apply_delta_batch`). Only if
        // that is a position of ours can a delta from the cookie put it right; otherwise
        // nothing it holds can be trusted.
        let (cookie, resume) = match resume {
            Some(beyond) if beyond.kind == RefreshKind::Delta => {
                let ours = dir.recognizes(&beyond.start)?;
                (cookie.filter(|_| ours), None)
            }
            other => (cookie, other),
        };
        if let Some(resume) = resume {
            let pin = if Self::can_resume(dir, &spec, resume)? { dir.pin(resume.start.csn)? } else { None };
            if let Some(pin) = pin {
                let start = resume.start.csn;
                let (phase, end) = match &resume.cursor {
                    Some(cursor) => (Phase::Scan { cursor: Some(cursor.clone()) }, start),
                    None => {
                        let end = dir.durable_csn();
                        (Phase::Changes { delta: dir.changelog().delta(start, end, &spec)? }, end)
                    }
                };
                let kind = resume.kind;
                let mut pending = VecDeque::from([Message::RefreshBegin { kind, resumed: true }.into()]);
                if resume.cursor.is_none() {
                    // The scan was over: say so again, as the consumer applies the
                    // catch-up with the checks a scan's batches do not need.
                    pending.push_back(Message::RefreshProgress { resume: resume.clone() }.into());
                }
                return Ok(Self {
                    kind,
                    spec,
                    since: resume.since,
                    start,
                    end,
                    batch_size,
                    resumed: true,
                    phase,
                    pending,
                    pin: Some(pin),
                    sent: 0,
                });
            }
        }
        Self::fresh(dir, spec, cookie, dir.plan_refresh(cookie)?, batch_size)
    }

    /// Plans a refresh that does not resume one, of the `kind` [`Directory::plan_refresh`]
    /// chose from the cookie. A separate step because a trim can run between that choice
    /// and the pin, which is what decides: the tests place one there.
    fn fresh(
        dir: &Directory,
        spec: SearchSpec,
        cookie: Option<&Cookie>,
        mut kind: RefreshKind,
        batch_size: usize,
    ) -> Result<Self, StoreError> {
        let mut since = cookie.filter(|_| kind != RefreshKind::Full).map_or(Csn::ZERO, |c| c.csn);
        let pin = match kind {
            RefreshKind::Delta => match dir.pin(since)? {
                Some(pin) => pin,
                // Trimmed past the cookie since `plan_refresh` looked: the consumer's
                // entries are still ours, so a present refresh, pinned at its start.
                None => {
                    kind = RefreshKind::Present;
                    dir.pin_current()
                }
            },
            RefreshKind::Full | RefreshKind::Present => dir.pin_current(),
        };
        if kind == RefreshKind::Full {
            since = Csn::ZERO;
        }
        let start = if kind == RefreshKind::Delta { dir.durable_csn() } else { pin.csn() };
        let phase = match kind {
            RefreshKind::Delta => Phase::Changes { delta: dir.changelog().delta(since, start, &spec)? },
            RefreshKind::Full | RefreshKind::Present => Phase::Scan { cursor: None },
        };
        let pending = VecDeque::from([Message::RefreshBegin { kind, resumed: false }.into()]);
        Ok(Self {
            kind,
            spec,
            since,
            start,
            end: start,
            batch_size,
            resumed: false,
            phase,
            pending,
            pin: Some(pin),
            sent: 0,
        })
    }

    /// Whether `resume` continues a refresh of this store's own history and of this
    /// region; the changelog floor is checked when it is pinned.
    fn can_resume(dir: &Directory, spec: &SearchSpec, resume: &ResumePoint) -> Result<bool, StoreError> {
        let scan = resume.kind.replaces_replica();
        let in_region = resume.cursor.as_ref().is_none_or(|c| c.starts_with(&spec.base.tree_key()));
        Ok(scan && in_region && dir.recognizes(&resume.start)?)
    }

    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The refresh kind chosen.
    pub fn kind(&self) -> RefreshKind {
        self.kind
    }

    /// Operations (entries, deletes, renames) and present UUIDs queued so far: 0 for a
    /// delta that found nothing to send.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Where the scan's catch-up begins: the start a consumer interrupted in a full or
    /// present refresh presents to resume it.
    pub fn start(&self) -> Csn {
        self.start
    }

    /// The position the consumer will be at after `RefreshDone`.
    pub fn end(&self) -> Csn {
        self.end
    }

    /// The next message to send, or `None` after `RefreshDone`.
    pub fn next_message(&mut self, dir: &Directory) -> Result<Option<Outbound>, StoreError> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Ok(Some(msg));
            }
            match &mut self.phase {
                Phase::Done => return Ok(None),
                Phase::Scan { cursor } => {
                    // Bounded in bytes too: the page is held whole while it is split
                    // into messages, and `batch_size` entries near the frame limit
                    // were gigabytes.
                    let (page, next) =
                        dir.entries().encoded_page(&self.spec, cursor.as_deref(), self.batch_size, BATCH_BYTES)?;
                    // Asked after the read: at or after every write whose effect the page
                    // saw, an entry changed or one gone (deleted, or moved elsewhere).
                    let seen = dir.newest_committed();
                    let left_to_catch_up = self.queue_page(page)?;
                    // The scan reads the tree, which holds writes not yet durable. An
                    // entry it left to the catch-up must be in it, and so must the write
                    // that removed one it did not find: durable before the progress that
                    // covers its place (a crash must not take back a change a resumed
                    // scan relies on) and so at or below the catch-up's end. Only the
                    // changed entries' CSNs show in the page; a removal does not, so
                    // everything committed when it was read is made durable.
                    let relied_on = seen.max(left_to_catch_up);
                    if relied_on > dir.durable_csn() {
                        dir.sync(relied_on)?;
                    }
                    let progress = Message::RefreshProgress { resume: self.resume_point(dir, next.clone()) };
                    self.pending.push_back(progress.into());
                    match next {
                        Some(key) => self.phase = Phase::Scan { cursor: Some(key) },
                        None => {
                            // Catch up on what was written while scanning.
                            self.end = dir.durable_csn();
                            let delta = dir.changelog().delta(self.start, self.end, &self.spec)?;
                            self.phase = Phase::Changes { delta };
                        }
                    }
                }
                Phase::Changes { delta } => {
                    let ops =
                        delta.next_encoded(dir.entries(), self.batch_size, BATCH_BYTES, &|| dir.newest_committed())?;
                    // An entry read may hold a later write not yet durable: it must be
                    // before the entry is sent (as in the scan).
                    dir.sync(delta.newest_read())?;
                    if ops.is_empty() {
                        let done = Message::RefreshDone { cookie: Cookie { history: dir.history(), csn: self.end } };
                        self.pending.push_back(done.into());
                        self.phase = Phase::Done;
                        // Everything this refresh reads from the changelog is read: the
                        // session's persist phase re-checks the floor on its own.
                        self.pin = None;
                    } else {
                        self.queue_ops(ops)?;
                    }
                }
            }
        }
    }

    /// The resume point after the page just queued; `cursor: None` once the scan is done.
    fn resume_point(&self, dir: &Directory, cursor: Option<Vec<u8>>) -> ResumePoint {
        ResumePoint {
            kind: self.kind,
            since: self.since,
            start: Cookie { history: dir.history(), csn: self.start },
            cursor,
        }
    }

    /// Queues a scan page, entries as stored (their heads read, not the rest): a
    /// present refresh names the unchanged ones by UUID only, and an entry changed since
    /// the scan began is left to the catch-up, which sends its latest state anyway. So a
    /// scan sends each entry at most once, under a DN no other entry of the scan has (a
    /// rename while scanning could otherwise show one entry under two DNs), and the
    /// consumer writes scan batches without looking for earlier copies (SPEC §3,
    /// `docs/protocol.md`).
    /// Returns the highest CSN it left to the catch-up.
    fn queue_page(&mut self, page: Vec<Vec<u8>>) -> Result<Csn, StoreError> {
        let mut ops = Vec::with_capacity(page.len());
        let mut present = Vec::new();
        let mut left = Csn::ZERO;
        for bytes in page {
            let head = EntryHead::decode(&bytes).map_err(codec_error)?;
            if head.csn > self.start {
                left = left.max(head.csn);
                continue;
            }
            if self.kind == RefreshKind::Present && head.csn <= self.since {
                present.push(head.uuid);
                continue;
            }
            ops.push(EncodedOp::Upsert(bytes));
        }
        self.queue_ops(ops)?;
        self.sent += present.len() as u64;
        for uuids in present.chunks(PRESENT_PER_MESSAGE) {
            self.pending.push_back(Message::PresentBatch { uuids: uuids.to_vec() }.into());
        }
        Ok(left)
    }

    /// Queues `ops` as batches of at most [`BATCH_BYTES`] each (one op may exceed it on
    /// its own): a page of large entries must still fit the consumer's frame limit.
    fn queue_ops(&mut self, ops: Vec<EncodedOp>) -> Result<(), StoreError> {
        self.sent += ops.len() as u64;
        let mut rest = &ops[..];
        for len in runs_within(ops.iter().map(EncodedOp::size), BATCH_BYTES) {
            let (run, after) = rest.split_at(len);
            self.pending.push_back(EncodedMessage::batch(run).map_err(codec_error)?.into());
            rest = after;
        }
        Ok(())
    }
}

/// A batch that cannot be encoded (an entry over the frame limit).
fn codec_error(source: tether_protocol::CodecError) -> StoreError {
    StoreError::Codec { tree: "entries", source }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_protocol::{Attributes, Change, Dn, ModOp, Modification, Rdn, ReplOp, Value};
    use tether_store::{ReplicaStore, RetentionPolicy, Shadow};

    use super::*;
    use std::time::Duration;

    const PEOPLE: usize = 120;
    const BATCH: usize = 10;

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap()
    }

    fn add(d: &str, pairs: &[(&str, &str)]) -> Change {
        let mut attrs = Attributes::new();
        for (k, v) in pairs {
            attrs.add(k, [Value::from(*v)]).unwrap();
        }
        Change::Add { dn: dn(d), attrs }
    }

    fn person(i: usize) -> String {
        format!("uid=p{i:03},ou=people,dc=example,dc=com")
    }

    fn directory(path: &std::path::Path) -> Directory {
        let dir = Directory::open(path, &dn("dc=example,dc=com")).unwrap();
        dir.write(&add("dc=example,dc=com", &[("objectClass", "domain"), ("dc", "example")])).unwrap();
        for ou in ["people", "staff"] {
            dir.write(&add(
                &format!("ou={ou},dc=example,dc=com"),
                &[("objectClass", "organizationalUnit"), ("ou", ou)],
            ))
            .unwrap();
        }
        for i in 0..PEOPLE {
            let uid = format!("p{i:03}");
            dir.write(&add(&person(i), &[("objectClass", "inetOrgPerson"), ("uid", &uid), ("cn", &uid), ("sn", "T")]))
                .unwrap();
        }
        dir
    }

    /// A retention policy that trims every change no pin holds.
    const TRIM_ALL: RetentionPolicy =
        RetentionPolicy { max_changes: Some(0), max_age: None, hold_for_consumers: Duration::ZERO, up_since_ms: 0 };

    /// A provider's [`directory`] and a consumer's empty replica `people`, in one folder.
    fn provider_and_consumer() -> (tempfile::TempDir, Directory, ReplicaStore, tether_store::Replica) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let replicas = ReplicaStore::open(&tmp.path().join("c")).unwrap();
        let replica = replicas.replica("people").unwrap();
        (tmp, dir, replicas, replica)
    }

    fn spec() -> SearchSpec {
        SearchSpec::subtree(dn("ou=people,dc=example,dc=com"))
    }

    /// Feeds `refresh` into the consumer until `RefreshDone` or until `stop_after`
    /// progress messages; returns the last resume point seen and the final cookie.
    fn drive(
        dir: &Directory,
        refresh: &mut Refresh,
        shadow: &mut Shadow,
        stop_after: Option<usize>,
    ) -> (Option<ResumePoint>, Option<Cookie>, usize) {
        let (mut last, mut progress, mut upserts) = (None, 0, 0);
        // As the consumer does: scan batches unchecked until the scan's last progress
        // (the callers stop, if at all, well inside the scan).
        let mut scanning = true;
        while let Some(msg) = refresh.next_message(dir).unwrap() {
            match msg.into_message().unwrap() {
                Message::RefreshBegin { .. } => {}
                Message::Batch { ops } => {
                    upserts += ops.iter().filter(|op| matches!(op, ReplOp::Upsert(_))).count();
                    if scanning {
                        shadow.apply_scan(&ops).unwrap();
                    } else {
                        shadow.apply(&ops).unwrap();
                    }
                }
                Message::PresentBatch { uuids } => shadow.copy_present(&uuids).unwrap(),
                Message::RefreshProgress { resume } => {
                    scanning &= resume.cursor.is_some();
                    shadow.record_progress(&spec(), resume.clone()).unwrap();
                    last = Some(resume);
                    progress += 1;
                    if Some(progress) == stop_after {
                        return (last, None, upserts);
                    }
                }
                Message::RefreshDone { cookie } => return (last, Some(cookie), upserts),
                other => panic!("unexpected {}", other.name()),
            }
        }
        panic!("refresh ended without RefreshDone")
    }

    fn view(entries: impl Iterator<Item = tether_store::Result<tether_protocol::Entry>>) -> Vec<(String, Csn)> {
        entries.map(|e| e.unwrap()).map(|e| (e.dn.to_string(), e.csn)).collect()
    }

    #[test]
    fn an_interrupted_full_refresh_resumes_after_its_cursor_and_converges() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();

        let mut first = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        assert!(!first.resumed());
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (resume, done, sent_before) = drive(&dir, &mut first, &mut shadow, Some(4));
        assert!(done.is_none());
        let resume = resume.unwrap();
        assert_eq!(sent_before, 4 * BATCH);

        // Meanwhile: changes behind the cursor, ahead of it, and across it.
        dir.write(&Change::Modify {
            dn: dn(&person(1)),
            mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from("Changed")] }],
        })
        .unwrap();
        dir.write(&Change::Delete { dn: dn(&person(2)) }).unwrap();
        dir.write(&Change::Delete { dn: dn(&person(100)) }).unwrap();
        dir.write(&Change::ModDn {
            dn: dn(&person(110)),
            new_rdn: Rdn::parse("uid=a-moved").unwrap(),
            delete_old_rdn: true,
            new_superior: None,
        })
        .unwrap();
        dir.write(&add(
            "uid=zz-new,ou=people,dc=example,dc=com",
            &[("objectClass", "inetOrgPerson"), ("uid", "zz-new"), ("cn", "zz"), ("sn", "T")],
        ))
        .unwrap();

        let mut second = Refresh::plan(&dir, spec(), None, Some(&resume), BATCH).unwrap();
        assert!(second.resumed());
        assert_eq!(second.kind(), RefreshKind::Full);
        assert_eq!(
            second.next_message(&dir).unwrap().map(|m| m.into_message().unwrap()),
            Some(Message::RefreshBegin { kind: RefreshKind::Full, resumed: true })
        );
        let mut shadow = replica.resume_shadow().unwrap();
        let (_, done, sent_after) = drive(&dir, &mut second, &mut shadow, None);
        assert!(sent_after < PEOPLE, "the resumed scan does not start over ({sent_after} entries re-sent)");
        shadow.finish(done.unwrap()).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
    }

    #[test]
    fn a_resume_point_past_the_changelog_floor_or_from_another_store_plans_afresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let replicas = ReplicaStore::open(&tmp.path().join("c")).unwrap();
        let mut shadow = replicas.replica("people").unwrap().begin_shadow(RefreshKind::Full).unwrap();
        let mut refresh = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        let (resume, _, _) = drive(&dir, &mut refresh, &mut shadow, Some(2));
        let resume = resume.unwrap();
        // The session that ran it is gone, and with it the refresh's changelog pin.
        drop(refresh);

        let other_store = ResumePoint {
            start: Cookie { history: tether_protocol::HistoryId([1; 16]), ..resume.start },
            ..resume.clone()
        };
        assert!(!Refresh::plan(&dir, spec(), None, Some(&other_store), BATCH).unwrap().resumed());
        let foreign_cursor = ResumePoint { cursor: Some(b"elsewhere".to_vec()), ..resume.clone() };
        assert!(!Refresh::plan(&dir, spec(), None, Some(&foreign_cursor), BATCH).unwrap().resumed());

        dir.write(&Change::Delete { dn: dn(&person(3)) }).unwrap();
        let policy = TRIM_ALL;
        dir.trim(&policy, u64::MAX).unwrap();
        let planned = Refresh::plan(&dir, spec(), None, Some(&resume), BATCH).unwrap();
        assert!(!planned.resumed(), "the catch-up from the resume point's start is gone");
        assert_eq!(planned.kind(), RefreshKind::Full);
    }

    /// A consumer whose delta was cut short presents, beside its cookie, how far past it
    /// its replica went and in which history. A delta from the cookie is planned only if
    /// that is a position of this store's own; otherwise the replica is reloaded.
    #[test]
    fn a_replica_past_its_cookie_gets_a_delta_only_if_what_it_applied_is_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let cookie = dir.cookie();
        dir.write(&Change::Delete { dn: dn(&person(3)) }).unwrap();
        let beyond = |start: Cookie| ResumePoint { kind: RefreshKind::Delta, since: cookie.csn, start, cursor: None };
        let plan = |start: Cookie| Refresh::plan(&dir, spec(), Some(&cookie), Some(&beyond(start)), BATCH).unwrap();

        let ours = plan(dir.cookie());
        assert_eq!((ours.kind(), ours.resumed()), (RefreshKind::Delta, false));
        let foreign = Cookie { history: tether_protocol::HistoryId([1; 16]), csn: dir.durable_csn() };
        assert_eq!(plan(foreign).kind(), RefreshKind::Full, "data of a history this store did not make");
        let ahead = Cookie { csn: dir.durable_csn().next(), ..dir.cookie() };
        assert_eq!(plan(ahead).kind(), RefreshKind::Full, "data this store never made durable");
    }

    /// Found by `tether-chaos`: a trim by the `max_changes` cap while a full refresh was
    /// scanning removed the changes its catch-up needed (deletes of entries already
    /// sent), and the replica kept them forever. The refresh's pin holds the floor.
    #[test]
    fn a_trim_during_a_refresh_cannot_remove_what_its_catch_up_needs() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let cap = TRIM_ALL;

        let mut refresh = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (_, done, _) = drive(&dir, &mut refresh, &mut shadow, Some(4));
        assert!(done.is_none());
        // Entries already sent are deleted, then the cap trims everything it may.
        dir.write(&Change::Delete { dn: dn(&person(1)) }).unwrap();
        dir.write(&Change::Delete { dn: dn(&person(2)) }).unwrap();
        let report = dir.trim(&cap, u64::MAX).unwrap();
        assert_eq!(report.floor, refresh.start, "the running refresh's pin holds the floor at its start");
        let (_, done, _) = drive(&dir, &mut refresh, &mut shadow, None);
        shadow.finish(done.unwrap()).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
        // Done: the pin is released and the cap applies again.
        assert_eq!(dir.trim(&cap, u64::MAX).unwrap().floor, dir.durable_csn());
    }

    /// Runs a full refresh into a fresh replica, calls `midway` after `pages` pages of
    /// its scan, finishes it, and checks the replica holds exactly the region; what
    /// `midway` returned, and the cookie the refresh ended at.
    fn refresh_with_a_write_midway<T>(pages: usize, midway: impl FnOnce(&Directory) -> T) -> (T, Cookie) {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let mut refresh = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (_, done, _) = drive(&dir, &mut refresh, &mut shadow, Some(pages));
        assert!(done.is_none());
        let made = midway(&dir);
        let (_, done, _) = drive(&dir, &mut refresh, &mut shadow, None);
        let done = done.unwrap();
        shadow.finish(done).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
        (made, done)
    }

    /// A rename during a scan, from behind its cursor to ahead of it, would show the
    /// entry under both DNs; the scan leaves it to the catch-up instead, so the shadow,
    /// written without lookups, still holds it once.
    #[test]
    fn an_entry_renamed_during_a_scan_is_sent_once_and_the_replica_converges() {
        refresh_with_a_write_midway(3, |dir| {
            dir.write(&Change::ModDn {
                dn: dn(&person(1)),
                new_rdn: Rdn::parse("uid=zz-moved").unwrap(),
                delete_old_rdn: false,
                new_superior: None,
            })
            .unwrap();
        });
    }

    /// A write the scan sees before it is durable (committed, flush pending) is left to
    /// the catch-up like any change since the scan began, so the refresh makes it
    /// durable first: otherwise the catch-up would end below it and the entry, which
    /// existed all along, would be missing from the replica.
    #[test]
    fn an_entry_changed_but_not_yet_durable_during_a_scan_is_not_lost() {
        refresh_with_a_write_midway(2, |dir| {
            let change = Change::Modify {
                dn: dn(&person(PEOPLE - 1)),
                mods: vec![Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from("Later")] }],
            };
            let committed = dir.write_nowait(&change).unwrap();
            assert!(dir.durable_csn() < committed.csn, "committed, not yet durable");
        });
    }

    /// The scan reads the tree, which holds committed writes whose flush is pending: an
    /// entry such a write removed is missing from the page as surely as a changed one is
    /// left out of it, and the consumer relies on its absence from then on. The removal
    /// must be durable before that: otherwise the catch-up ends below it, and a crash
    /// that takes it back (or a restore of a copy from before it) leaves the entry, which
    /// still exists, missing from the replica for good, under a cookie the provider
    /// recognizes and serves by delta, and nothing in the changelog after the cookie
    /// names it.
    #[test]
    fn an_entry_removed_by_a_write_not_yet_durable_during_a_scan_is_covered_by_the_cookie() {
        let (removed, done) = refresh_with_a_write_midway(2, |dir| {
            let removed = dir.write_nowait(&Change::Delete { dn: dn(&person(PEOPLE - 1)) }).unwrap().csn;
            assert!(dir.durable_csn() < removed, "committed, not yet durable");
            removed
        });
        assert!(
            done.csn >= removed,
            "the replica lacks {} under a cookie at {}, before its removal at {removed}",
            person(PEOPLE - 1),
            done.csn
        );
    }

    /// A delta reads each entry as it is now, which may hold a later write another
    /// client committed but has not yet made durable: that write is made durable before
    /// the entry goes out.
    #[test]
    fn a_delta_entry_holding_a_write_not_yet_durable_makes_it_durable_before_sending() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(tmp.path());
        let cookie = dir.cookie();
        let sn = |v: &str| Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from(v)] };
        dir.write(&Change::Modify { dn: dn(&person(0)), mods: vec![sn("Durable")] }).unwrap();
        let mut refresh = Refresh::plan(&dir, spec(), Some(&cookie), None, BATCH).unwrap();
        assert_eq!(refresh.kind(), RefreshKind::Delta);
        let later = dir.write_nowait(&Change::Modify { dn: dn(&person(0)), mods: vec![sn("Later")] }).unwrap().csn;
        assert!(dir.durable_csn() < later);
        let mut sent = None;
        while let Some(msg) = refresh.next_message(&dir).unwrap() {
            if let Message::Batch { ops } = msg.into_message().unwrap() {
                sent = ops.into_iter().find_map(|op| match op {
                    ReplOp::Upsert(e) if e.dn == dn(&person(0)) => Some(e.csn),
                    _ => None,
                });
                assert!(dir.durable_csn() >= later, "durable before the batch is handed out");
            }
        }
        assert_eq!(sent, Some(later), "the entry as it is now");
    }

    /// Large entries are split over several batches, each within the batch byte budget
    /// (one entry over it goes alone), so no message outgrows a frame.
    #[test]
    fn batches_of_large_entries_stay_within_the_byte_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let big = "x".repeat(BATCH_BYTES / 3);
        for i in 0..5 {
            let uid = format!("big{i}");
            dir.write(&add(
                &format!("uid={uid},ou=people,dc=example,dc=com"),
                &[("objectClass", "inetOrgPerson"), ("uid", &uid), ("cn", &uid), ("sn", "T"), ("description", &big)],
            ))
            .unwrap();
        }
        let mut refresh = Refresh::plan(&dir, spec(), None, None, PEOPLE + 10).unwrap();
        let (mut upserts, mut batches) = (0, 0);
        while let Some(msg) = refresh.next_message(&dir).unwrap() {
            if let Outbound::Encoded(m) = &msg {
                assert!(m.as_bytes().len() <= BATCH_BYTES + 64, "a batch of {} bytes", m.as_bytes().len());
            }
            if let Message::Batch { ops } = msg.into_message().unwrap() {
                upserts += ops.len();
                batches += 1;
            }
        }
        assert_eq!(upserts, PEOPLE + 5 + 1, "every person, big or not, and the ou");
        assert!(batches >= 2, "the big entries did not fit one batch");
    }

    /// A refresh reads no more than about a batch's bytes of entries at a time, however
    /// large `batch_size` is: a scan page and a delta's batch are held whole while they
    /// are split into messages, and counted in entries alone they held `batch_size`
    /// entries of up to 16 MiB each (500 of them: 8 GiB for one session).
    #[test]
    fn a_refresh_holds_about_a_batch_s_bytes_of_large_entries_at_a_time_whatever_the_batch_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let before = dir.cookie();
        let big = "x".repeat(BATCH_BYTES / 2);
        for i in 0..4 {
            let uid = format!("big{i}");
            dir.write(&add(
                &format!("uid={uid},ou=people,dc=example,dc=com"),
                &[("objectClass", "inetOrgPerson"), ("uid", &uid), ("cn", &uid), ("sn", "T"), ("description", &big)],
            ))
            .unwrap();
        }
        let bytes = |msg: &Outbound| match msg {
            Outbound::Encoded(m) => m.as_bytes().len(),
            Outbound::Message(m) => tether_protocol::codec::encode(m).unwrap().len(),
        };
        for (kind, cookie) in [(RefreshKind::Full, None), (RefreshKind::Delta, Some(&before))] {
            let mut refresh = Refresh::plan(&dir, spec(), cookie, None, 10_000).unwrap();
            assert_eq!(refresh.kind(), kind);
            let (mut most, mut upserts) = (0, 0);
            while let Some(msg) = refresh.next_message(&dir).unwrap() {
                // What this step read: the message handed out and those it left queued.
                let held = bytes(&msg) + refresh.pending.iter().map(bytes).sum::<usize>();
                most = most.max(held);
                if let Message::Batch { ops } = msg.into_message().unwrap() {
                    upserts += ops.iter().filter(|op| matches!(op, ReplOp::Upsert(_))).count();
                }
            }
            let expected = if kind == RefreshKind::Full { PEOPLE + 4 + 1 } else { 4 };
            assert_eq!(upserts, expected, "every entry of the {kind:?} refresh is sent");
            assert!(
                most <= BATCH_BYTES + BATCH_BYTES / 2 + 64 * 1024,
                "a step of the {kind:?} refresh held {most} bytes of entries: a batch's {BATCH_BYTES} and one \
                 entry of {} at most",
                BATCH_BYTES / 2
            );
        }
    }

    /// A present page names its unchanged entries by UUID, 16 bytes each, all of them in
    /// one message: with a `batch_size` of a million or more (the configuration sets no
    /// upper bound), a page of a region that large outgrew a frame, and every present
    /// refresh of it failed at the same message, for good.
    #[test]
    fn a_present_page_of_many_unchanged_entries_goes_in_messages_that_fit_a_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let cookie = dir.cookie();
        dir.write(&Change::Delete { dn: dn(&person(3)) }).unwrap();
        let cap = TRIM_ALL;
        dir.trim(&cap, u64::MAX).unwrap();
        let mut refresh = Refresh::plan(&dir, spec(), Some(&cookie), None, 2_000_000).unwrap();
        assert_eq!(refresh.kind(), RefreshKind::Present);
        // A page as the scan of a region of that many unchanged entries reads it.
        let (mut first, _) = dir.entries().encoded_page(&spec(), None, 1, usize::MAX).unwrap();
        let unchanged = first.remove(0);
        refresh.queue_page(vec![unchanged; 1_100_000]).unwrap();
        let mut named = 0;
        for msg in std::mem::take(&mut refresh.pending) {
            let msg = msg.into_message().unwrap();
            if let Message::PresentBatch { uuids } = &msg {
                named += uuids.len();
            }
            let len = tether_protocol::codec::encode(&msg).map(|bytes| bytes.len());
            let max = tether_protocol::frame::MAX_FRAME;
            assert!(len.as_ref().is_ok_and(|len| *len <= max), "a {} of {len:?} bytes", msg.name());
        }
        assert_eq!(named, 1_100_000, "each unchanged entry named");
    }

    #[test]
    fn a_running_delta_holds_its_cookie_through_a_trim_and_a_cookie_trimmed_past_plans_a_present_refresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = directory(&tmp.path().join("p"));
        let cookie = dir.cookie();
        assert_eq!(dir.plan_refresh(Some(&cookie)).unwrap(), RefreshKind::Delta);
        // A pinned delta keeps its changes through a trim by the cap.
        let delta = Refresh::plan(&dir, spec(), Some(&cookie), None, BATCH).unwrap();
        assert_eq!(delta.kind(), RefreshKind::Delta);
        dir.write(&Change::Delete { dn: dn(&person(5)) }).unwrap();
        let cap = TRIM_ALL;
        assert_eq!(dir.trim(&cap, u64::MAX).unwrap().floor, cookie.csn);
        drop(delta);
        assert!(dir.trim(&cap, u64::MAX).unwrap().removed > 0);
        // Pinning a trimmed position is refused, so planning falls back to present.
        assert!(dir.pin(cookie.csn).unwrap().is_none());
        let planned = Refresh::plan(&dir, spec(), Some(&cookie), None, BATCH).unwrap();
        assert_eq!(planned.kind(), RefreshKind::Present);
    }

    /// Feeds a delta refresh into `replica` as a consumer applies one, ending at its
    /// `RefreshDone`; returns that cookie.
    fn apply_delta(dir: &Directory, refresh: &mut Refresh, replica: &tether_store::Replica) -> Cookie {
        while let Some(msg) = refresh.next_message(dir).unwrap() {
            match msg.into_message().unwrap() {
                Message::RefreshBegin { kind, .. } => assert_eq!(kind, RefreshKind::Delta),
                Message::Batch { ops } => {
                    replica.apply(&ops, None).unwrap();
                }
                Message::RefreshDone { cookie } => {
                    replica.advance(cookie).unwrap();
                    return cookie;
                }
                other => panic!("unexpected {} in a delta", other.name()),
            }
        }
        panic!("refresh ended without RefreshDone")
    }

    /// A write made while a delta runs, after it was planned, is not in it: its
    /// `RefreshDone` names where the delta was planned to end, so the persist phase (or
    /// the next poll) sends the write. Named at the newest CSN when it was sent instead,
    /// the cookie covered a change the replica never received, and nothing ever sent it.
    #[test]
    fn a_write_made_while_a_delta_runs_reaches_the_replica_through_what_follows_its_refresh_done() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let mut full = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (_, done, _) = drive(&dir, &mut full, &mut shadow, None);
        shadow.finish(done.unwrap()).unwrap();
        let cookie = replica.cookie().unwrap().unwrap();

        let mut delta = Refresh::plan(&dir, spec(), Some(&cookie), None, BATCH).unwrap();
        assert_eq!(delta.kind(), RefreshKind::Delta);
        let during = dir.write(&Change::Delete { dn: dn(&person(7)) }).unwrap().csn;
        let done = apply_delta(&dir, &mut delta, &replica);
        assert!(
            done.csn < during || replica.entries().unwrap().iter().all(|e| e.unwrap().dn != dn(&person(7))),
            "the replica holds {} under a cookie at {}, past its deletion at {during}",
            person(7),
            done.csn
        );
        // What follows the refresh: the changes after its cookie.
        let mut next = Refresh::plan(&dir, spec(), Some(&done), None, BATCH).unwrap();
        apply_delta(&dir, &mut next, &replica);
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
    }

    /// A replica at `cookie` after a full refresh of the region, and a later one whose
    /// changelog no longer reaches back to it: the entries changed since go in full,
    /// the others as UUIDs.
    fn replica_below_the_floor(dir: &Directory, replica: &tether_store::Replica) -> Cookie {
        let cookie = replica_behind(dir, replica);
        let cap = TRIM_ALL;
        dir.trim(&cap, u64::MAX).unwrap();
        cookie
    }

    /// A replica at `cookie` after a full refresh of the region, and three changes to the
    /// region since: two entries modified, one deleted.
    fn replica_behind(dir: &Directory, replica: &tether_store::Replica) -> Cookie {
        let mut full = Refresh::plan(dir, spec(), None, None, BATCH).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (_, done, _) = drive(dir, &mut full, &mut shadow, None);
        let cookie = done.unwrap();
        shadow.finish(cookie).unwrap();
        drop(full);
        let sn = |v: &str| Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from(v)] };
        // Ahead of the cut the test makes, and behind it.
        for i in [1, PEOPLE - 2] {
            dir.write(&Change::Modify { dn: dn(&person(i)), mods: vec![sn("Changed")] }).unwrap();
        }
        dir.write(&Change::Delete { dn: dn(&person(PEOPLE - 3)) }).unwrap();
        cookie
    }

    /// A trim can land between planning's look at the floor and its pin (the trimmer
    /// runs on its own task): the delta planned from the cookie then cannot be pinned,
    /// and the consumer, whose entries are still ours, gets a present refresh from its
    /// cookie: the two entries modified since in full, the rest by UUID, the deleted one
    /// gone. Not a full reload, and not an error that would fail the session at every
    /// retry in the same race.
    #[test]
    fn a_trim_between_planning_a_delta_and_pinning_it_makes_a_present_refresh_from_the_cookie() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let cookie = replica_behind(&dir, &replica);
        let kind = dir.plan_refresh(Some(&cookie)).unwrap();
        assert_eq!(kind, RefreshKind::Delta, "the changelog still reaches the cookie when planning looks");
        let cap = TRIM_ALL;
        assert!(dir.trim(&cap, u64::MAX).unwrap().floor > cookie.csn);

        let mut refresh = Refresh::fresh(&dir, spec(), Some(&cookie), kind, BATCH).unwrap();
        assert_eq!(refresh.kind(), RefreshKind::Present);
        let mut shadow = replica.begin_shadow(RefreshKind::Present).unwrap();
        let (_, done, upserts) = drive(&dir, &mut refresh, &mut shadow, None);
        assert_eq!(upserts, 2, "only the entries modified since the cookie go in full");
        shadow.finish(done.unwrap()).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
    }

    /// A present refresh names by UUID only the entries unchanged since the consumer's
    /// cookie; one changed since goes in full, or the replica keeps its old version under
    /// the new cookie. Resumed after a cut, it still compares with the cookie, not with
    /// where the interrupted refresh began.
    #[test]
    fn a_present_refresh_resumed_after_a_cut_sends_every_entry_changed_since_the_cookie() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let cookie = replica_below_the_floor(&dir, &replica);

        let mut first = Refresh::plan(&dir, spec(), Some(&cookie), None, BATCH).unwrap();
        assert_eq!(first.kind(), RefreshKind::Present);
        let mut shadow = replica.begin_shadow(RefreshKind::Present).unwrap();
        let (resume, done, _) = drive(&dir, &mut first, &mut shadow, Some(3));
        assert!(done.is_none());
        let resume = resume.unwrap();
        let mut second = Refresh::plan(&dir, spec(), Some(&cookie), Some(&resume), BATCH).unwrap();
        assert!(second.resumed());
        let mut shadow = replica.resume_shadow().unwrap();
        let (_, done, _) = drive(&dir, &mut second, &mut shadow, None);
        shadow.finish(done.unwrap()).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
    }

    /// A refresh cut short after its scan, before its catch-up was sent, resumes with the
    /// catch-up alone, from where the scan began to the newest change: an entry the scan
    /// left to it (changed while the scan ran) must still arrive, or the replica lacks
    /// an entry that existed all along under the cookie the refresh ends with.
    #[test]
    fn a_refresh_cut_short_between_its_scan_and_its_catch_up_resumes_with_the_whole_catch_up() {
        let (_tmp, dir, _replicas, replica) = provider_and_consumer();
        let mut first = Refresh::plan(&dir, spec(), None, None, BATCH).unwrap();
        let mut shadow = replica.begin_shadow(RefreshKind::Full).unwrap();
        let (_, done, _) = drive(&dir, &mut first, &mut shadow, Some(2));
        assert!(done.is_none());
        let sn = Modification { op: ModOp::Replace, attr: "sn".into(), values: vec![Value::from("Changed")] };
        dir.write(&Change::Modify { dn: dn(&person(PEOPLE - 5)), mods: vec![sn] }).unwrap();
        dir.write(&Change::Delete { dn: dn(&person(1)) }).unwrap();
        let resume = loop {
            let (resume, done, _) = drive(&dir, &mut first, &mut shadow, Some(1));
            assert!(done.is_none(), "cut short before the catch-up");
            let resume = resume.unwrap();
            if resume.cursor.is_none() {
                break resume;
            }
        };
        drop(first);

        let mut second = Refresh::plan(&dir, spec(), None, Some(&resume), BATCH).unwrap();
        assert!(second.resumed());
        let mut shadow = replica.resume_shadow().unwrap();
        let (_, done, _) = drive(&dir, &mut second, &mut shadow, None);
        shadow.finish(done.unwrap()).unwrap();
        assert_eq!(view(replica.entries().unwrap().iter()), view(dir.search(&spec())));
    }
}
