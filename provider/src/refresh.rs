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
//! Anything the scan saw twice or not at all is settled by the catch-up, and replays are
//! no-ops on the consumer.

use std::collections::VecDeque;

use tether_protocol::message::Message;
use tether_protocol::{Cookie, Csn, RefreshKind, ReplOp, SearchSpec};
use tether_store::{Delta, Directory, StoreError};

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
    /// Current phase.
    phase: Phase,
    /// Messages produced but not yet handed out (a present page yields two).
    pending: VecDeque<Message>,
}

impl Refresh {
    /// Plans the refresh for a consumer presenting `cookie`.
    pub fn plan(
        dir: &Directory,
        spec: SearchSpec,
        cookie: Option<&Cookie>,
        batch_size: usize,
    ) -> Result<Self, StoreError> {
        let kind = dir.plan_refresh(cookie)?;
        let since = cookie.filter(|_| kind != RefreshKind::Full).map_or(Csn::ZERO, |c| c.csn);
        let start = dir.durable_csn();
        let phase = match kind {
            RefreshKind::Delta => Phase::Changes { delta: dir.changelog().delta(since, start, &spec)? },
            RefreshKind::Full | RefreshKind::Present => Phase::Scan { cursor: None },
        };
        let mut pending = VecDeque::new();
        pending.push_back(Message::RefreshBegin { kind });
        Ok(Self { kind, spec, since, start, end: start, batch_size: batch_size.max(1), phase, pending })
    }

    /// The refresh kind chosen.
    pub fn kind(&self) -> RefreshKind {
        self.kind
    }

    /// The position the consumer will be at after `RefreshDone`.
    pub fn end(&self) -> Csn {
        self.end
    }

    /// The next message to send, or `None` after `RefreshDone`.
    pub fn next_message(&mut self, dir: &Directory) -> Result<Option<Message>, StoreError> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Ok(Some(msg));
            }
            match &mut self.phase {
                Phase::Done => return Ok(None),
                Phase::Scan { cursor } => {
                    let (page, next) = dir.entries().search_page(&self.spec, cursor.as_deref(), self.batch_size)?;
                    self.queue_page(page);
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
                    let ops = delta.next_batch(dir.entries(), self.batch_size)?;
                    if ops.is_empty() {
                        self.pending.push_back(Message::RefreshDone {
                            cookie: Cookie { store_id: dir.store_id(), csn: self.end },
                        });
                        self.phase = Phase::Done;
                    } else {
                        self.pending.push_back(Message::Batch { ops });
                    }
                }
            }
        }
    }

    fn queue_page(&mut self, page: Vec<tether_protocol::Entry>) {
        let mut ops = Vec::new();
        let mut present = Vec::new();
        for entry in page {
            if self.kind == RefreshKind::Present && entry.csn <= self.since {
                present.push(entry.uuid);
            } else {
                ops.push(ReplOp::Upsert(entry));
            }
        }
        if !ops.is_empty() {
            self.pending.push_back(Message::Batch { ops });
        }
        if !present.is_empty() {
            self.pending.push_back(Message::PresentBatch { uuids: present });
        }
    }
}
