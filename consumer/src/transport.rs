//! How a session reaches its provider: real TCP, or a caller-supplied connector.
//!
//! Production always uses [`Network::Tcp`]. The deterministic simulation supplies a
//! [`Connector`] over turmoil's simulated network, so the real session and supervisor
//! code runs unchanged against simulated partitions, holds and crashes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Limit on establishing the TCP connection, and on the TLS handshake, which counts
/// against the session's handshake limit too (it shares one with the Tether handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an attempt at one of a name's addresses goes on alone before the next
/// address is tried beside it (RFC 8305's connection attempt delay, at its recommended
/// value).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Why no connection to the provider was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name did not resolve.
    #[error("the name does not resolve ({0}): is `provider` right?")]
    Lookup(#[source] std::io::Error),
    /// The resolver did not answer within the limit.
    #[error("the name did not resolve within {}", humantime::format_duration(CONNECT_TIMEOUT))]
    LookupTimedOut,
    /// The name resolved to no address.
    #[error("the name resolves to no address: is `provider` right?")]
    NoAddress,
    /// Every address was tried, and failed or did not answer in time: each with why.
    #[error("{}", Failures(.0))]
    Failed(Vec<(SocketAddr, String)>),
}

/// Each address tried and why it failed; a lone address is not named again, since the
/// caller names what it connected to.
struct Failures<'a>(&'a [(SocketAddr, String)]);

impl std::fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            [(_, why)] => f.write_str(why),
            all => {
                for (i, (addr, why)) in all.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{addr}: {why}")?;
                }
                Ok(())
            }
        }
    }
}

/// Connects to `provider` (`host:port`, looked up afresh at each attempt) over the OS's
/// TCP, within [`CONNECT_TIMEOUT`] for the lookup and the connection together.
///
/// A name may have several addresses, typically IPv6 and IPv4 on a dual-stack host,
/// and one may be unreachable, its packets dropped without an answer (an AAAA record
/// and no working IPv6 route). Tried one after another within one time limit, the
/// first such address used the whole limit, and the agreement never connected though
/// the next address answered at once (found by a walkthrough: every attempt `timed
/// out`, for good). So the addresses are raced as RFC 8305 ("Happy Eyeballs") has it:
/// the families alternate, each address gets [`ATTEMPT_DELAY`] alone before the next is
/// tried beside it (at once when it fails), and the first to connect wins.
///
/// Addresses in `failed` (where an earlier attempt connected and then failed) come after
/// the others.
pub async fn connect(provider: &str, failed: &FailedAddresses) -> Result<TcpStream, ConnectError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let addrs = match tokio::time::timeout_at(deadline, tokio::net::lookup_host(provider)).await {
        Err(_) => return Err(ConnectError::LookupTimedOut),
        Ok(Err(e)) => return Err(ConnectError::Lookup(e)),
        Ok(Ok(addrs)) => failed.last(alternate_families(addrs.collect())),
    };
    connect_any(addrs, deadline).await
}

/// The addresses of an agreement's provider where the last attempt connected and then
/// failed before the provider welcomed it, most recent last.
///
/// Racing the connections finds an address that answers, not one where the provider
/// is: something else may accept there (a proxy or a port forward with nothing behind
/// it, a hung process, an old provider left on IPv6 beside the real one on IPv4). Such
/// an address connects at once, first every time, and the session fails in its
/// handshake (closed, a timeout, a refusal); retried in the same order, the agreement
/// never reached the name's address that works. So the next attempt tries the others
/// first, and an address leaves the list when a provider welcomes a session there.
/// Shared by the agreement's sessions; a name of one address is unaffected.
#[derive(Debug, Clone, Default)]
pub struct FailedAddresses(Arc<std::sync::Mutex<Vec<SocketAddr>>>);

/// More than a name has addresses in practice; the oldest is forgotten past it.
const FAILED_ADDRESSES_KEPT: usize = 16;

impl FailedAddresses {
    /// An attempt at `addr` connected and then failed before the welcome.
    pub fn failed(&self, addr: SocketAddr) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|a| *a != addr);
        if list.len() == FAILED_ADDRESSES_KEPT {
            list.remove(0);
        }
        list.push(addr);
    }

    /// A provider welcomed a session at `addr`.
    pub fn welcomed(&self, addr: SocketAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|a| *a != addr);
    }

    /// `addrs` with the failed ones moved after the others, the most recent failure
    /// last; the order is otherwise kept.
    pub(crate) fn last(&self, mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        addrs.sort_by_key(|a| list.iter().position(|f| f == a).map_or(0, |at| at + 1));
        addrs
    }
}

/// Orders `addrs` as RFC 8305 (section 4) does: the family of the resolver's first
/// choice first, then the other, alternately, each family in the resolver's order.
fn alternate_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else { return addrs };
    let preferred_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6() == preferred_v6);
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    preferred.reverse();
    other.reverse();
    while let Some(a) = preferred.pop() {
        out.push(a);
        if let Some(b) = other.pop() {
            out.push(b);
        }
    }
    out.extend(other.into_iter().rev());
    out
}

/// Races connections to `addrs` in order (see [`connect`]) until one connects or
/// `deadline`: the winner, or every address with why it failed.
pub async fn connect_any(addrs: Vec<SocketAddr>, deadline: Instant) -> Result<TcpStream, ConnectError> {
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress);
    }
    let mut waiting = addrs.into_iter();
    // Dropped on return, which aborts the attempts still under way.
    let mut attempts = JoinSet::new();
    // The attempts under way, in the order they began.
    let mut trying: Vec<(tokio::task::Id, SocketAddr)> = Vec::new();
    let mut failed: Vec<(SocketAddr, String)> = Vec::new();
    let mut start_next = true;
    loop {
        if start_next {
            if let Some(addr) = waiting.next() {
                let id = attempts.spawn(TcpStream::connect(addr)).id();
                trying.push((id, addr));
            }
        }
        if attempts.is_empty() {
            return Err(ConnectError::Failed(failed));
        }
        let more = waiting.len() > 0;
        tokio::select! {
            Some(joined) = attempts.join_next_with_id() => {
                let (id, result) = match joined {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(std::io::Error::other(e.to_string()))),
                };
                let addr = trying.iter().position(|(i, _)| *i == id).map(|at| trying.remove(at).1);
                match (result, addr) {
                    (Ok(stream), _) => return Ok(stream),
                    (Err(e), Some(addr)) => failed.push((addr, e.to_string())),
                    (Err(_), None) => {}
                }
                start_next = true;
            }
            () = tokio::time::sleep(ATTEMPT_DELAY), if more => start_next = true,
            () = tokio::time::sleep_until(deadline) => {
                failed.extend(trying.into_iter().map(|(_, addr)| (addr, "timed out".to_owned())));
                return Err(ConnectError::Failed(failed));
            }
        }
    }
}

/// A connected byte stream from a [`Connector`].
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed stream.
pub type BoxedStream = Box<dyn Stream>;

/// What [`Connector::connect`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<BoxedStream>> + Send + 'a>>;

/// Opens connections to `host:port` addresses on some other network than the OS's.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects to `addr`.
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a>;
}

/// The network a session connects over.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// The operating system's TCP (production).
    #[default]
    Tcp,
    /// A custom connector (the simulation). TLS and TCP tuning do not apply.
    Custom(Arc<dyn Connector>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
    }

    /// A loopback address whose connections hang, their SYNs dropped unanswered, as an
    /// unreachable address's are: a listener whose queue of unaccepted connections is
    /// full. Kept open as long as the returned values live.
    async fn hanging() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.bind(&v4(0).into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("connecting to fill the queue: {e}"),
                Err(_) => return (listener, queued, addr),
            }
        }
        panic!("the queue of {addr} did not fill");
    }

    #[test]
    fn the_families_alternate_from_the_resolvers_first_choice() {
        assert_eq!(alternate_families(vec![v6(1), v6(2), v6(3), v4(4)]), [v6(1), v4(4), v6(2), v6(3)]);
        assert_eq!(alternate_families(vec![v4(1), v6(2), v6(3), v6(4), v4(5)]), [v4(1), v6(2), v4(5), v6(3), v6(4)]);
        // The other family's addresses left over once the first's are used keep the
        // resolver's order too.
        assert_eq!(alternate_families(vec![v4(1), v6(2), v6(3), v6(4), v6(5)]), [v4(1), v6(2), v6(3), v6(4), v6(5)]);
        assert_eq!(alternate_families(vec![v4(1), v4(2)]), [v4(1), v4(2)]);
        assert_eq!(alternate_families(Vec::new()), []);
    }

    /// An address that never answers does not keep the connection from the next one:
    /// tried in turn within one limit, it took the whole limit, and a name whose IPv6
    /// address is unreachable never connected.
    #[tokio::test]
    async fn an_address_that_never_answers_does_not_hold_up_the_next() {
        let (_listener, _queued, silent) = hanging().await;
        let live = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let stream = connect_any(vec![silent, live_addr], Instant::now() + CONNECT_TIMEOUT).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live_addr);
    }

    /// When none connects, each address is named with why, in the order tried.
    #[tokio::test]
    async fn each_address_that_failed_is_named_with_why() {
        let (_listener, _queued, silent) = hanging().await;
        let refused = tokio::net::TcpListener::bind(v4(0)).await.unwrap().local_addr().unwrap();
        let err = connect_any(vec![refused, silent], Instant::now() + Duration::from_secs(1)).await.unwrap_err();
        let said = err.to_string();
        assert!(said.starts_with(&format!("{refused}: ")), "{said}");
        assert!(said.contains("refused"), "{said}");
        assert!(said.ends_with(&format!("; {silent}: timed out")), "{said}");
        // A lone address is not named again: the caller names what it connected to.
        let err = connect_any(vec![refused], Instant::now() + Duration::from_secs(1)).await.unwrap_err();
        assert!(!err.to_string().contains(&refused.to_string()), "{err}");
    }

    /// An address where an attempt connected and then failed comes after the name's
    /// others until a provider welcomes a session there: tried first every time, a
    /// proxy with nothing behind it kept the agreement from the address that works.
    #[test]
    fn an_address_that_failed_after_connecting_is_tried_after_the_others() {
        let failed = FailedAddresses::default();
        let all = vec![v6(1), v4(2), v6(3), v4(4)];
        assert_eq!(failed.last(all.clone()), all);
        failed.failed(v6(1));
        assert_eq!(failed.last(all.clone()), [v4(2), v6(3), v4(4), v6(1)]);
        failed.failed(v4(2));
        assert_eq!(failed.last(all.clone()), [v6(3), v4(4), v6(1), v4(2)]);
        // Failing again makes it the most recent.
        failed.failed(v6(1));
        assert_eq!(failed.last(all.clone()), [v6(3), v4(4), v4(2), v6(1)]);
        failed.welcomed(v6(1));
        failed.welcomed(v4(2));
        assert_eq!(failed.last(all.clone()), all);
        for port in 100..100 + FAILED_ADDRESSES_KEPT as u16 + 1 {
            failed.failed(v4(port));
        }
        // The list is bounded: the oldest failure is forgotten.
        assert_eq!(failed.last(vec![v4(100), v4(101), v4(5)]), [v4(100), v4(5), v4(101)]);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_says_so() {
        let err = connect("no-such-host.invalid:7389", &FailedAddresses::default()).await.unwrap_err();
        assert!(matches!(err, ConnectError::Lookup(_)), "{err:?}");
        assert!(err.to_string().starts_with("the name does not resolve ("), "{err}");
    }
}
