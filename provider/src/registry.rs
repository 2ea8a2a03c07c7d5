//! The registry of live sessions: what `status` reports about each consumer, and the
//! handle through which a config reload revokes a session.
//!
//! Sessions publish here rather than being asked: a session is busy in its own task
//! (a refresh, a blocked write), so `status` reads a snapshot without waiting on any of
//! them, and a reload revokes one by cancelling its token, which the session notices at
//! its next turn and answers with its goodbye.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tether_protocol::message::GoodbyeReason;
use tether_protocol::{Cookie, Dn};
use tokio_util::sync::CancellationToken;

/// What a session publishes about itself.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The session id sent in `Welcome`.
    pub session_id: u64,
    /// The consumer's address.
    pub peer: String,
    /// The agreement it replicates (`writer` for write clients).
    pub agreement: String,
    /// The id the client gave in its `Hello` (a consumer's is stable per data_dir).
    pub client: String,
    /// `refresh-only`, `refresh-and-persist` or `writer`.
    pub mode: String,
    /// The consumer's last acknowledged (durable) position.
    pub cookie: Option<String>,
    /// Changes committed on the provider beyond the acknowledged position.
    pub lag_changes: u64,
    /// Seconds since the oldest change the consumer has not acknowledged was committed,
    /// by the provider's own clock (see [`crate::status::lag_seconds`]); filled in by
    /// `status`, `None` for a writer and where the changelog no longer dates it.
    pub lag_seconds: Option<u64>,
    /// Messages waiting in the session's outbound queue.
    pub queue_len: usize,
    /// When the session was accepted (RFC 3339).
    pub connected_since: String,
    /// The refresh the session ran (`full`, `delta`, `present`), once chosen.
    pub refresh: Option<String>,
    /// Whether the connection is TLS. A reload that turns `[tls]` on leaves the plain
    /// sessions open (a consumer reloaded with `[tls]` reconnects over it, so the change
    /// can roll through the consumers), and this shows which are left.
    pub tls: bool,
    /// The protocol version the handshake chose: during a rolling upgrade, which
    /// consumers still run an older build.
    pub protocol_version: u16,
    /// The base of the region it replicates (`None` for a write client): a reload that
    /// changes the agreement's grant ends only the sessions it no longer covers.
    #[serde(skip)]
    pub base: Option<Dn>,
}

/// A registered session: its published info and the means to end it.
#[derive(Debug)]
struct Slot {
    /// Published info.
    info: SessionInfo,
    /// Cancelled to end the session; the reason says which goodbye to send.
    cancel: CancellationToken,
    /// The goodbye reason for a cancellation from outside (revocation).
    reason: Arc<Mutex<Option<GoodbyeReason>>>,
}

/// All live sessions.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Session id -> slot.
    slots: Arc<Mutex<BTreeMap<u64, Slot>>>,
}

/// A session's handle on its registry slot; deregisters on drop.
#[derive(Debug)]
pub struct Registration {
    /// The registry.
    registry: Registry,
    /// This session's id.
    id: u64,
    /// Cancelled when the session must end from outside.
    pub cancel: CancellationToken,
    /// Why it was cancelled from outside.
    reason: Arc<Mutex<Option<GoodbyeReason>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session whose lifetime is bounded by `parent` (server shutdown).
    pub fn register(&self, info: SessionInfo, parent: &CancellationToken) -> Registration {
        let cancel = parent.child_token();
        let reason = Arc::new(Mutex::new(None));
        let id = info.session_id;
        self.lock().insert(id, Slot { info, cancel: cancel.clone(), reason: reason.clone() });
        Registration { registry: self.clone(), id, cancel, reason }
    }

    /// The sessions open now of `agreement` presenting consumer id `client` from
    /// another host than `peer`'s, as `session N from PEER`: two consumers sharing one
    /// identity (the server warns of it). From the same host, it is one consumer
    /// reconnecting before its old session ended (a restart, a reconnect after a
    /// keepalive timeout), which is routine.
    pub fn same_consumer_elsewhere(&self, agreement: &str, client: &str, peer: std::net::SocketAddr) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.info.agreement == agreement && s.info.client == client)
            .filter(|s| s.info.peer.parse::<std::net::SocketAddr>().is_ok_and(|other| other.ip() != peer.ip()))
            .map(|s| format!("session {} from {}", s.info.session_id, s.info.peer))
            .collect()
    }

    /// A snapshot of every session, by id.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        self.lock().values().map(|s| s.info.clone()).collect()
    }

    /// The position ids (`agreement/client`) of the sessions connected now, writers
    /// included (no consumer position bears their id): a connected consumer is seen now,
    /// whenever its position was last written (see `Directory::trim_connected`).
    pub fn connected_positions(&self) -> HashSet<String> {
        self.lock().values().map(|s| crate::session::position_id(&s.info.agreement, &s.info.client)).collect()
    }

    /// Ends every session of an agreement for which `revoke` says so, with `reason`;
    /// returns how many were ended.
    pub fn revoke(&self, mut revoke: impl FnMut(&SessionInfo) -> bool, reason: GoodbyeReason) -> usize {
        let mut n = 0;
        for slot in self.lock().values() {
            if revoke(&slot.info) {
                *slot.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                slot.cancel.cancel();
                n += 1;
            }
        }
        n
    }
}

impl Registration {
    /// Updates the published info.
    pub fn update(&self, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(slot) = self.registry.lock().get_mut(&self.id) {
            f(&mut slot.info);
        }
    }

    /// Takes the session out of the registry before it is dropped: a session that has
    /// ended still says its goodbye, which a consumer that stopped reading holds up for
    /// the grace periods (seconds), and `status` listed it all that time beside the
    /// session the consumer may have opened since.
    pub fn withdraw(&self) {
        self.registry.lock().remove(&self.id);
    }

    /// Why the session was cancelled from outside; `None` means server shutdown.
    pub fn revocation(&self) -> Option<GoodbyeReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the acknowledged position.
    pub fn acked(&self, cookie: &Cookie, durable: tether_protocol::Csn) {
        self.update(|i| {
            i.cookie = Some(cookie.to_string());
            i.lag_changes = durable.0.saturating_sub(cookie.csn.0);
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// Formats a time as RFC 3339 for status output.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
impl SessionInfo {
    /// A persist session of `agreement` by consumer `client` from `peer`, for tests;
    /// the other fields as a session just started has them.
    pub(crate) fn for_test(session_id: u64, peer: &str, agreement: &str, client: &str) -> Self {
        SessionInfo {
            session_id,
            peer: peer.into(),
            agreement: agreement.into(),
            client: client.into(),
            mode: "refresh-and-persist".into(),
            cookie: None,
            lag_changes: 0,
            lag_seconds: None,
            queue_len: 0,
            connected_since: String::new(),
            refresh: None,
            tls: false,
            protocol_version: 3,
            base: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(session_id: u64, peer: &str, agreement: &str, client: &str) -> SessionInfo {
        SessionInfo::for_test(session_id, peer, agreement, client)
    }

    /// The sessions open with an agreement's consumer id from another host are found,
    /// and only while they are open: from the same host (a reconnect), of another
    /// agreement, or of another consumer, they are not that one's twin.
    #[test]
    fn the_sessions_presenting_a_consumer_id_from_another_host_are_found_while_open() {
        let registry = Registry::default();
        let parent = CancellationToken::new();
        let (clone, same_host) = ("10.0.0.9:50000".parse().unwrap(), "10.0.0.1:50000".parse().unwrap());
        assert!(registry.same_consumer_elsewhere("people", "c1", clone).is_empty());
        let first = registry.register(session(1, "10.0.0.1:40000", "people", "c1"), &parent);
        let _other_agreement = registry.register(session(2, "10.0.0.3:40001", "groups", "c1"), &parent);
        let _other_consumer = registry.register(session(3, "10.0.0.2:40000", "people", "c2"), &parent);
        assert_eq!(registry.same_consumer_elsewhere("people", "c1", clone), ["session 1 from 10.0.0.1:40000"]);
        assert!(registry.same_consumer_elsewhere("people", "c1", same_host).is_empty(), "a reconnect");
        drop(first);
        assert!(registry.same_consumer_elsewhere("people", "c1", clone).is_empty(), "ended with its session");
    }
}
