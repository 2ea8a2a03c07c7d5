//! The connections still in their handshake, by where they come from, so that a
//! connection the limit would refuse can take the slot of one from the source holding
//! the most.
//!
//! Why: `max_connections` counts handshakes too, and a handshake may take the whole
//! `handshake_timeout` (10 s). Anyone who reaches the port, without credentials, could
//! hold every slot by opening connections and sending nothing, reopening each as it
//! timed out: a consumer reconnecting meanwhile was refused `too-many-connections` at
//! every attempt, for as long as the flood went on (found by a walkthrough: 29 refusals
//! in a row, sessions already running untouched).
//!
//! Now a connection over the limit from a source holding fewer handshakes than the
//! source holding the most ends that source's oldest handshake and takes its slot; one
//! from that source itself (or one as busy) is refused as before. So a flood from one
//! host takes the slots only of itself, and its reconnects, refused, take nothing from
//! the consumer that got in: taking from the oldest regardless of source would let
//! a flood's reconnects, each taking the next oldest, cycle through every handshake
//! within a few of their own round trips, the consumer's among them. A slot held by a
//! session is never taken: the limit still bounds what the provider serves. A source is
//! an IPv4 address, or an IPv6 /64 (what one host is usually given).
//!
//! What it does not stop: a flood from as many sources as there are slots, one
//! connection each. Every source then holds one, ties go to the oldest handshake, and
//! a client whose handshake takes longer than the flood takes to cycle through the
//! slots (TLS over a distant link) is taken in its turn, as it was refused before (a
//! re-walk found it: 32 sources against 16 slots, the consumer 40 ms away). A fast one
//! still gets in after a few tries. That flood is for a firewall in front of the port.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The handshakes under way, in the order they started.
#[derive(Debug, Default)]
pub struct Handshakes {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Oldest first: the id each was registered under, its source, and what ends it.
    pending: VecDeque<(u64, Source, CancellationToken)>,
}

/// Where a connection comes from, as far as sharing the slots goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The /64.
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl Handshakes {
    /// Registers a handshake from `peer` that holds a slot; it stays listed until the
    /// returned guard is dropped (its handshake done, failed or given up).
    pub fn begin(self: &Arc<Self>, peer: IpAddr) -> Pending {
        let token = CancellationToken::new();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.pending.push_back((id, Source::of(peer), token.clone()));
        Pending { handshakes: self.clone(), id, token }
    }

    /// For a connection from `peer` over the limit: ends the oldest handshake of the
    /// source holding the most, which then gives up its slot, if `peer`'s source holds
    /// fewer; `false` if not (nothing is ended, and the connection is refused).
    pub fn take_for(&self, peer: IpAddr) -> bool {
        let mut inner = self.lock();
        let mut held: HashMap<Source, usize> = HashMap::new();
        for (_, source, _) in &inner.pending {
            *held.entry(*source).or_default() += 1;
        }
        let ours = held.get(&Source::of(peer)).copied().unwrap_or(0);
        // Of sources as busy, the one whose oldest handshake is oldest.
        let most = held.values().copied().max().unwrap_or(0);
        let busiest = inner.pending.iter().map(|(_, source, _)| *source).find(|source| held[source] == most);
        let Some(busiest) = busiest.filter(|_| most > ours) else { return false };
        let Some(at) = inner.pending.iter().position(|(_, source, _)| *source == busiest) else { return false };
        match inner.pending.remove(at) {
            Some((_, _, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One handshake under way; listed until dropped.
#[derive(Debug)]
pub struct Pending {
    handshakes: Arc<Handshakes>,
    id: u64,
    token: CancellationToken,
}

impl Pending {
    /// Cancelled when a connection over the limit took this handshake's slot.
    pub fn taken(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut inner = self.handshakes.lock();
        if let Some(at) = inner.pending.iter().position(|(id, _, _)| *id == self.id) {
            inner.pending.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_connection_takes_the_oldest_handshake_of_the_busiest_source_and_never_its_own_sources() {
        let handshakes = Arc::new(Handshakes::default());
        let flood = ip("192.0.2.7");
        let first = handshakes.begin(flood);
        let consumer = handshakes.begin(ip("198.51.100.1"));
        let second = handshakes.begin(flood);
        let third = handshakes.begin(flood);
        // The flood's own reconnect takes nothing: it holds the most.
        assert!(!handshakes.take_for(flood));
        assert!(!first.taken().is_cancelled());
        // Another host's connection takes the flood's oldest handshake under way.
        drop(first);
        assert!(handshakes.take_for(ip("203.0.113.9")));
        assert!(second.taken().is_cancelled(), "the flood's oldest still under way");
        assert!(!third.taken().is_cancelled() && !consumer.taken().is_cancelled());
        // One handshake each: a source as busy as the busiest takes nothing.
        assert!(!handshakes.take_for(ip("198.51.100.1")));
        assert!(!handshakes.take_for(flood));
        drop((second, third, consumer));
        assert!(!handshakes.take_for(ip("203.0.113.9")), "none left: every slot is a session's");
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(Source::of(ip("192.0.2.7")), Source::of(ip("::ffff:192.0.2.7")));
        assert_eq!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_ne!(Source::of(ip("0.0.0.1")), Source::of(ip("::1")));
    }
}
