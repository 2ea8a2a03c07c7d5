//! Fault-injecting TCP proxy: sits between a consumer and its provider on loopback and
//! lets a test break the network between them, for real, while both processes run.
//!
//! ## How tests use it
//! ```no_run
//! # fn demo(provider_port: u16) -> anyhow::Result<()> {
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::time::Duration;
//! use replication_tests::proxy::{Direction, Fault, Proxy};
//!
//! let proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, provider_port)))?;
//! // Point the consumer at `proxy.port()` instead of the provider's port, start it, then:
//! proxy.wait_for_connections(1, Duration::from_secs(30))?;
//! proxy.set_fault(Fault::Stall); // black hole: no FIN, no RST, nothing forwarded
//! // ... assert the consumer reports `keepalive-timeout` ...
//! proxy.heal(); // forwarding resumes; bytes held so far are delivered, none lost
//! proxy.set_fault_on(Direction::ToClient, Fault::Corrupt { after_bytes: 100 });
//! # Ok(()) }
//! ```
//! The integration tests are synchronous `#[test]` functions that drive child processes,
//! so the proxy runs on its own single-threaded tokio runtime in a background thread and
//! [`Proxy`] is a plain `Send + Sync` handle: every setter takes effect while it runs, on
//! existing connections and on new ones. Dropping the handle closes the listener and every
//! connection and joins the thread, within [`SHUTDOWN_TIMEOUT`].
//!
//! ## Design
//! - The fault settings live in one `tokio::sync::watch` channel. The handle writes it
//!   from any thread; each connection's two pumps wait on it alongside their socket I/O,
//!   so a change interrupts a pump blocked in a read, a write or a delay at once.
//! - A connection is two pumps, one per [`Direction`], run concurrently in one task. A pump
//!   reads its source into a bounded queue of chunks (each stamped with its read time) and
//!   writes the queue to its destination. What it does next is decided by [`Fault`] alone,
//!   in a pure function (`plan`), so the I/O loop only moves bytes and timers.
//! - Peers' own closes pass through as they came: a FIN is forwarded as a FIN once the
//!   bytes before it are, and a socket error (usually a peer's RST) resets the other peer.
//! - Reads and writes are single cancel-safe calls, so interrupting a pump never loses a
//!   byte: what was read but not yet written stays queued until forwarding resumes.
//! - A fault takes effect at a pump's next step: any byte a peer sends after a setter
//!   returns is forwarded under the new fault (a chunk read in the same instant may already
//!   sit in the proxy's queue, where it is held, not forwarded). Byte-counting faults
//!   ([`Fault::Corrupt`], [`Fault::DropAfter`]) count from when they took effect on each
//!   connection, so setting one again re-arms it.
//!
//! ## Bounds
//! Connecting upstream has [`CONNECT_TIMEOUT`]; the per-direction queue holds at most
//! [`MAX_QUEUED_BYTES`] (overflow policy: stop reading the source, so TCP pushes back on
//! the sender; nothing is dropped); at most [`MAX_CONNECTIONS`] are served at once (more
//! wait in the listen backlog); a graceful close drains for at most
//! [`CLOSE_DRAIN_TIMEOUT`]; shutdown waits at most [`SHUTDOWN_TIMEOUT`]. Reads and writes
//! on a healthy connection wait as long as the peers do (an idle session is legitimate)
//! but are always interruptible by a fault change or shutdown. The proxy listens on
//! 127.0.0.1 and refuses a non-loopback upstream.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connecting to the upstream may take before the client is reset and the
/// attempt counted in [`ProxyStats::upstream_failures`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful close ([`Fault::DropAfter`]) reads and discards what the peers still
/// send after their FIN, so that closing a socket with unread data does not turn into a RST.
pub const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for connection tasks, and then for the runtime, to finish.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once; the accept loop waits for a free slot beyond that.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most bytes a pump holds read but not yet written. When full it stops reading its
/// source, which is TCP backpressure on the sender; nothing is ever dropped.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Size of one read from a source socket.
pub const READ_CHUNK: usize = 16 * 1024;
/// Longest [`Fault::Delay`] honoured; longer delays are clamped (avoids `Instant` overflow).
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// A throttled pump writes `bytes_per_sec / THROTTLE_SLICES_PER_SEC` bytes at a time, so
/// the rate is smooth at this granularity rather than one burst per second.
pub const THROTTLE_SLICES_PER_SEC: u64 = 20;
/// XOR mask applied by [`Fault::Corrupt`]: every bit of the chosen byte flips, so the
/// corrupted byte always differs from the original.
pub const CORRUPT_MASK: u8 = 0xFF;
/// Pause after a failed `accept` (out of descriptors, aborted handshake) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// One direction of a proxied connection. Faults are set per direction because real
/// failures are often asymmetric: a provider whose replies vanish while it still hears
/// the consumer's pings is a different case from one that hears nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes the client (the consumer) sends to the upstream (the provider): handshake,
    /// requests, acknowledgements, keepalive pings.
    ToUpstream,
    /// Bytes the upstream sends back to the client: refresh data, pushed changes, pongs.
    ToClient,
}

impl Direction {
    /// Both directions, for tests that check each in turn.
    pub const BOTH: [Direction; 2] = [Direction::ToUpstream, Direction::ToClient];
}

/// What the proxy does to one direction of every connection, current and future, until
/// another fault is set. [`Fault::Pass`] heals all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward bytes as they come: the healthy network.
    #[default]
    Pass,
    /// Hold each chunk this long after reading it, then forward it (a slow link: latency
    /// added, throughput kept, since reading continues while chunks wait). Clamped to
    /// [`MAX_DELAY`].
    Delay(Duration),
    /// Forward at most this many bytes per second (a congested link). Zero forwards
    /// nothing, like [`Fault::Stall`].
    Throttle {
        /// The ceiling on the forwarding rate.
        bytes_per_sec: u64,
    },
    /// Forward nothing and read nothing, but keep both sockets open: no FIN, no RST. On
    /// both directions this is a full black hole (a dead host or a silent network), the
    /// case only keepalives detect. Healing delivers everything held, in order.
    Stall,
    /// Abort every connection with a RST (SO_LINGER 0, then close) to both peers: a
    /// crashed peer or a middlebox losing its state. A TCP connection cannot be reset in
    /// one direction only, so this on either direction resets the whole connection; while
    /// set, every new connection is reset as soon as it is accepted.
    Reset,
    /// Close this direction in order: forward what the proxy already holds, send a FIN to
    /// its destination, then read and discard what its source still sends. On both
    /// directions every connection gets a clean close, as from a peer that exits without a
    /// goodbye. A closed direction stays closed after healing; the client reconnects.
    CloseCleanly,
    /// Forward this many bytes unchanged, then flip one byte (XOR [`CORRUPT_MASK`]) and
    /// forward everything after it unchanged: a corrupted frame the codec must reject.
    /// Once per connection, counted from when the fault took effect on it.
    Corrupt {
        /// Bytes forwarded intact before the flipped one (0 flips the very next byte).
        after_bytes: u64,
    },
    /// Forward exactly this many bytes, then close the whole connection with a FIN to both
    /// peers (a FIN rather than a RST so the receiver reliably reads those bytes first): a
    /// connection cut in the middle of a frame. Counted from when the fault took effect.
    DropAfter {
        /// Bytes forwarded before the connection is closed.
        bytes: u64,
    },
}

/// A snapshot of the proxy's counters, for assertions and for waiting on progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted and served since start: proves the consumer (re)connected.
    pub accepted: u64,
    /// Connections refused while not accepting: proves the consumer kept retrying.
    pub refused: u64,
    /// Connections currently open: proves old connections were torn down.
    pub open: u64,
    /// Accepted connections whose upstream connect failed (the client was reset): shows a
    /// test that its provider was down rather than the proxy misbehaving.
    pub upstream_failures: u64,
    /// Bytes written to the upstream, all connections together.
    pub bytes_to_upstream: u64,
    /// Bytes written to clients, all connections together.
    pub bytes_to_client: u64,
}

impl ProxyStats {
    /// Bytes forwarded in one direction.
    pub fn bytes(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ToUpstream => self.bytes_to_upstream,
            Direction::ToClient => self.bytes_to_client,
        }
    }
}

/// A running proxy. Send + Sync: share it by reference with helper threads. Dropping it
/// shuts the proxy down (see [`Proxy::shutdown`]).
#[derive(Debug)]
pub struct Proxy {
    /// The loopback address clients connect to.
    local_addr: SocketAddr,
    /// Fault settings and counters, shared with the runtime thread.
    shared: Arc<Shared>,
    /// The one shutdown signal; every connection holds a child token.
    shutdown: CancellationToken,
    /// The runtime thread, joined on shutdown (None once joined).
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port forwarding to `upstream`, which must be
    /// a loopback address. The upstream need not be up yet: the proxy connects to it anew
    /// for each accepted connection.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        Self::start_on(0, upstream)
    }

    /// Like [`Proxy::start`], listening on 127.0.0.1:`port` (0 picks a free port), for
    /// configs written before the proxy starts.
    pub fn start_on(port: u16, upstream: SocketAddr) -> Result<Self> {
        Self::serve_on(port, upstream, None)
    }

    /// Like [`Proxy::start`], connecting to `upstream` from the loopback address `source`
    /// (any of 127.0.0.0/8 on Linux): the upstream sees its clients arrive from another
    /// address of this host, as from a second machine, without leaving loopback.
    pub fn start_from(upstream: SocketAddr, source: Ipv4Addr) -> Result<Self> {
        Self::serve_on(0, upstream, Some(source))
    }

    fn serve_on(port: u16, upstream: SocketAddr, source: Option<Ipv4Addr>) -> Result<Self> {
        if !upstream.ip().is_loopback() {
            bail!("the fault proxy forwards to loopback only, not {upstream}");
        }
        if let Some(source) = source.filter(|s| !s.is_loopback() || !upstream.is_ipv4()) {
            bail!("the fault proxy connects from an IPv4 loopback address to an IPv4 upstream, not from {source} to {upstream}");
        }
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("binding the proxy on 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true).context("making the proxy listener non-blocking")?;
        let local_addr = listener.local_addr().context("reading the proxy's address")?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the proxy runtime")?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).context("registering the proxy listener")?
        };
        let shared = Arc::new(Shared {
            controls: watch::Sender::new(Controls::default()),
            counters: Counters::default(),
            upstream,
            source,
        });
        let shutdown = CancellationToken::new();
        let thread = std::thread::Builder::new()
            .name(format!("tether-proxy-{}", local_addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                move || {
                    runtime.block_on(serve(listener, shared, shutdown));
                    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
                }
            })
            .context("spawning the proxy thread")?;
        Ok(Self { local_addr, shared, shutdown, thread: Some(thread) })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port clients connect to (what the consumer's config names).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Sets the same fault on both directions at once (the whole proxy).
    pub fn set_fault(&self, fault: Fault) {
        self.shared.controls.send_modify(|c| {
            for direction in Direction::BOTH {
                c.arm(direction, fault);
            }
        });
    }

    /// Sets the fault of one direction; the other keeps its own.
    pub fn set_fault_on(&self, direction: Direction, fault: Fault) {
        self.shared.controls.send_modify(|c| c.arm(direction, fault));
    }

    /// Back to [`Fault::Pass`] on both directions: stalled and delayed bytes flow again.
    pub fn heal(&self) {
        self.set_fault(Fault::Pass);
    }

    /// The fault currently set on a direction.
    pub fn fault(&self, direction: Direction) -> Fault {
        self.shared.controls.borrow().armed(direction).fault
    }

    /// Whether new connections are served. When false the proxy keeps listening but
    /// resets each new connection right after accepting it (counted in
    /// [`ProxyStats::refused`]), so a client sees its connection fail at once, like a
    /// provider that is down. A true refusal (RST to the SYN) would mean closing the
    /// listener and giving up the port, which another process could then take. Existing
    /// connections are not affected; combine with [`Fault::Reset`] to cut them too.
    pub fn set_accepting(&self, accepting: bool) {
        self.shared.controls.send_modify(|c| c.accepting = accepting);
    }

    /// Whether new connections are served (see [`Proxy::set_accepting`]).
    pub fn is_accepting(&self) -> bool {
        self.shared.controls.borrow().accepting
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    /// Polls the counters until `cond` holds, failing after `limit` with `what` and the
    /// last counters in the error.
    pub fn wait_until(&self, limit: Duration, what: &str, mut cond: impl FnMut(&ProxyStats) -> bool) -> Result<()> {
        crate::harness::wait_until(limit, what, || Ok(cond(&self.stats())))
            .with_context(|| format!("proxy on port {}: {:?}", self.port(), self.stats()))
    }

    /// Waits until at least `n` connections have been accepted since start.
    pub fn wait_for_connections(&self, n: u64, limit: Duration) -> Result<()> {
        self.wait_until(limit, &format!("{n} accepted connections"), |s| s.accepted >= n)
    }

    /// Waits until exactly `n` connections are open (e.g. 0 after a reset).
    pub fn wait_for_open(&self, n: u64, limit: Duration) -> Result<()> {
        self.wait_until(limit, &format!("{n} open connections"), |s| s.open == n)
    }

    /// Waits until at least `n` bytes have been forwarded in `direction` since start.
    pub fn wait_for_bytes(&self, direction: Direction, n: u64, limit: Duration) -> Result<()> {
        self.wait_until(limit, &format!("{n} bytes {direction:?}"), |s| s.bytes(direction) >= n)
    }

    /// Stops the proxy: closes the listener and every connection, and joins the thread
    /// (bounded by [`SHUTDOWN_TIMEOUT`], twice). Dropping the handle does the same but
    /// cannot report a panic of the proxy thread; this can.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| anyhow!("the proxy thread on port {} panicked", self.port())),
            None => Ok(()),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // A panic of the proxy thread cannot be raised from drop; `shutdown` reports it.
        let _ = self.stop();
    }
}

/// A connection to the upstream, from [`Shared::source`] if one is set.
async fn connect_upstream(shared: &Shared) -> std::io::Result<TcpStream> {
    let Some(source) = shared.source else { return TcpStream::connect(shared.upstream).await };
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(shared.upstream).await
}

/// State shared by the handle and the runtime thread.
#[derive(Debug)]
struct Shared {
    /// The fault settings; pumps wait on it to react to changes at once.
    controls: watch::Sender<Controls>,
    /// The counters behind [`ProxyStats`].
    counters: Counters,
    /// Where connections are forwarded.
    upstream: SocketAddr,
    /// The address connections to the upstream are made from (the system's choice if
    /// `None`).
    source: Option<Ipv4Addr>,
}

/// A fault together with when it was set, so that pumps can tell a new setting (which
/// re-arms byte counting) from one they have already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Armed {
    /// The fault.
    fault: Fault,
    /// Increases with every setting of any direction.
    generation: u64,
}

/// Everything a test controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Controls {
    /// Fault of [`Direction::ToUpstream`].
    to_upstream: Armed,
    /// Fault of [`Direction::ToClient`].
    to_client: Armed,
    /// Whether new connections are served.
    accepting: bool,
    /// Source of [`Armed::generation`].
    generations: u64,
}

impl Default for Controls {
    fn default() -> Self {
        Self { to_upstream: Armed::default(), to_client: Armed::default(), accepting: true, generations: 0 }
    }
}

impl Controls {
    fn armed(&self, direction: Direction) -> Armed {
        match direction {
            Direction::ToUpstream => self.to_upstream,
            Direction::ToClient => self.to_client,
        }
    }

    fn arm(&mut self, direction: Direction, fault: Fault) {
        self.generations += 1;
        let armed = Armed { fault, generation: self.generations };
        match direction {
            Direction::ToUpstream => self.to_upstream = armed,
            Direction::ToClient => self.to_client = armed,
        }
    }

    /// A reset on either direction resets the whole connection.
    fn any_reset(&self) -> bool {
        self.to_upstream.fault == Fault::Reset || self.to_client.fault == Fault::Reset
    }
}

/// Counters; relaxed atomics, since each is independent and only read for assertions.
#[derive(Debug, Default)]
struct Counters {
    /// See [`ProxyStats::accepted`].
    accepted: AtomicU64,
    /// See [`ProxyStats::refused`].
    refused: AtomicU64,
    /// See [`ProxyStats::open`].
    open: AtomicU64,
    /// See [`ProxyStats::upstream_failures`].
    upstream_failures: AtomicU64,
    /// See [`ProxyStats::bytes_to_upstream`].
    bytes_to_upstream: AtomicU64,
    /// See [`ProxyStats::bytes_to_client`].
    bytes_to_client: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            open: get(&self.open),
            upstream_failures: get(&self.upstream_failures),
            bytes_to_upstream: get(&self.bytes_to_upstream),
            bytes_to_client: get(&self.bytes_to_client),
        }
    }

    fn bytes(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::ToUpstream => &self.bytes_to_upstream,
            Direction::ToClient => &self.bytes_to_client,
        }
    }
}

/// Counts a connection as open for as long as its task (or the task's future) lives.
#[derive(Debug)]
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept loop: serves each connection in a tracked task until shutdown, then waits
/// for the tasks to finish.
async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _peer)) => client,
            Err(_transient) => {
                // EMFILE, ECONNABORTED and the like pass; the listener itself stays valid.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                }
            }
        };
        if !shared.controls.borrow().accepting {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            abort(&client);
            continue;
        }
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard::new(Arc::clone(&shared));
        tracker.spawn(connection(client, Arc::clone(&shared), shutdown.clone(), permit, open));
    }
    drop(listener);
    tracker.close();
    // Tasks still running after the bound are dropped with the runtime, closing their sockets.
    let _ = timeout(SHUTDOWN_TIMEOUT, tracker.wait()).await;
}

/// One proxied connection: connect upstream, run both pumps, then close both sockets the
/// way the pumps' outcome calls for.
async fn connection(
    mut client: TcpStream,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
    _open: OpenGuard,
) {
    let connected = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        connected = timeout(CONNECT_TIMEOUT, connect_upstream(&shared)) => connected,
    };
    let Ok(Ok(mut upstream)) = connected else {
        shared.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
        abort(&client);
        return;
    };
    // Nagle would hold small writes for up to 40 ms and blur delay and throttle timings;
    // failing to disable it only costs latency, so it is not worth failing the connection.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // Cancelled by a pump that ends the whole connection, or by shutdown.
    let end = shutdown.child_token();
    let (up, down) = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        tokio::join!(
            Pump::new(Direction::ToUpstream, client_read, upstream_write, &shared, &end).run(),
            Pump::new(Direction::ToClient, upstream_read, client_write, &shared, &end).run(),
        )
    };
    match Ending::of(up, down) {
        Ending::Abort => {
            abort(&client);
            abort(&upstream);
        }
        Ending::Graceful => graceful_close(&mut client, &mut upstream, &shutdown).await,
        Ending::Release => {}
    }
}

/// Arms a socket to send a RST when it is closed (dropped right after).
fn abort(socket: &TcpStream) {
    // Should SO_LINGER fail, the close is an orderly FIN: still a closed connection.
    let _ = socket.set_zero_linger();
}

/// FIN to both peers, then read and discard until both have closed (bounded), so that
/// closing does not find unread data and send a RST instead.
async fn graceful_close(client: &mut TcpStream, upstream: &mut TcpStream, shutdown: &CancellationToken) {
    // A failed shutdown means that peer is already gone; the drain below then ends at once.
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
    let drain = async {
        tokio::join!(drain(client), drain(upstream));
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = timeout(CLOSE_DRAIN_TIMEOUT, drain) => {}
    }
}

/// Reads and discards until EOF or an error.
async fn drain(socket: &mut TcpStream) {
    let mut buf = vec![0; READ_CHUNK];
    while let Ok(1..) = socket.read(&mut buf).await {}
}

/// How a pump finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    /// Its source sent EOF; everything was forwarded and a FIN passed on.
    Finished,
    /// [`Fault::CloseCleanly`]: FIN sent, then its source closed too.
    Closed,
    /// [`Fault::Reset`] was set.
    Reset,
    /// [`Fault::DropAfter`] reached its count.
    Truncated,
    /// A socket error (usually a peer's RST), passed on as a RST to the other peer.
    Failed,
    /// The other pump ended the connection, or the proxy is shutting down.
    Interrupted,
}

/// What closing a connection takes, from both pumps' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// RST to both peers.
    Abort,
    /// FIN to both peers, then drain.
    Graceful,
    /// Just close: both directions are done already, or the proxy is shutting down.
    Release,
}

impl Ending {
    fn of(a: PumpEnd, b: PumpEnd) -> Self {
        let any = |f: fn(PumpEnd) -> bool| f(a) || f(b);
        if any(|e| matches!(e, PumpEnd::Reset | PumpEnd::Failed)) {
            Ending::Abort
        } else if any(|e| e == PumpEnd::Truncated) {
            Ending::Graceful
        } else {
            Ending::Release
        }
    }
}

/// Bytes read from a source, waiting to be written.
#[derive(Debug)]
struct Chunk {
    /// The bytes as read.
    data: Vec<u8>,
    /// How many of them were written already.
    sent: usize,
    /// When they were read: [`Fault::Delay`] holds them until this plus the delay.
    read_at: Instant,
}

impl Chunk {
    fn rest(&self) -> &[u8] {
        self.data.get(self.sent..).unwrap_or_default()
    }
}

/// What a pump knows about itself, as far as [`plan`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PumpState {
    /// Bytes written since the current fault took effect.
    since_armed: u64,
    /// Whether [`Fault::Corrupt`] has flipped its byte since it took effect.
    corrupted: bool,
    /// Bytes read but not yet written.
    queued: usize,
    /// Whether the source has sent EOF.
    source_done: bool,
    /// The first queued chunk: bytes left in it and when it was read.
    front: Option<(usize, Instant)>,
    /// When a throttled pump may write next.
    next_send: Instant,
}

/// A pump's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Neither read nor write; wait for a fault change.
    Hold,
    /// Reset the connection.
    Reset,
    /// [`Fault::DropAfter`] reached: close the connection.
    Truncate,
    /// Send a FIN to the destination: the source is done and the queue empty, or this
    /// direction is being closed (`closing`).
    Finish {
        /// Whether to keep discarding the source afterwards ([`Fault::CloseCleanly`]).
        closing: bool,
    },
    /// Read from the source (if `read`) and write the front of the queue (if `write`),
    /// whichever can proceed first.
    Move {
        /// Whether there is room to read.
        read: bool,
        /// What to write, if anything.
        write: Option<WritePlan>,
    },
}

/// The next write of a [`Step::Move`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WritePlan {
    /// Most bytes to take from the front chunk.
    len: usize,
    /// Write one byte, XORed with [`CORRUPT_MASK`], instead.
    flip: bool,
    /// Not before this instant (delay or throttle).
    not_before: Option<Instant>,
}

/// Decides a pump's next step from its fault and state alone (no I/O, unit tested).
fn plan(fault: Fault, state: &PumpState) -> Step {
    match fault {
        Fault::Reset => return Step::Reset,
        Fault::Stall | Fault::Throttle { bytes_per_sec: 0 } => return Step::Hold,
        Fault::DropAfter { bytes } if state.since_armed >= bytes => return Step::Truncate,
        Fault::CloseCleanly => {
            return match state.front {
                Some((len, _)) => {
                    Step::Move { read: false, write: Some(WritePlan { len, flip: false, not_before: None }) }
                }
                None => Step::Finish { closing: true },
            };
        }
        _ => {}
    }
    if state.source_done && state.front.is_none() {
        return Step::Finish { closing: false };
    }
    let read = !state.source_done && state.queued < MAX_QUEUED_BYTES;
    let write = state.front.map(|(left, read_at)| {
        let mut plan = WritePlan { len: left, flip: false, not_before: None };
        match fault {
            Fault::Delay(delay) => plan.not_before = Some(read_at + delay.min(MAX_DELAY)),
            Fault::Throttle { bytes_per_sec } => {
                let slice = (bytes_per_sec / THROTTLE_SLICES_PER_SEC).max(1);
                plan.len = plan.len.min(usize::try_from(slice).unwrap_or(usize::MAX));
                plan.not_before = Some(state.next_send);
            }
            Fault::Corrupt { after_bytes } if !state.corrupted => {
                let intact = after_bytes.saturating_sub(state.since_armed);
                if intact == 0 {
                    plan.len = 1;
                    plan.flip = true;
                } else {
                    plan.len = plan.len.min(usize::try_from(intact).unwrap_or(usize::MAX));
                }
            }
            Fault::DropAfter { bytes } => {
                let allowed = bytes.saturating_sub(state.since_armed);
                plan.len = plan.len.min(usize::try_from(allowed).unwrap_or(usize::MAX));
            }
            _ => {}
        }
        plan
    });
    if read || write.is_some() {
        Step::Move { read, write }
    } else {
        Step::Hold
    }
}

/// What happened in one step of a pump's I/O.
#[derive(Debug)]
enum Event {
    /// A read from the source finished.
    Read(std::io::Result<usize>),
    /// A write to the destination finished.
    Wrote(std::io::Result<usize>),
}

/// Moves one direction of a connection, applying that direction's fault.
#[derive(Debug)]
struct Pump<'a> {
    /// Which direction this is (selects the fault and the byte counter).
    direction: Direction,
    /// Where bytes come from.
    source: ReadHalf<'a>,
    /// Where bytes go.
    destination: WriteHalf<'a>,
    /// The fault settings.
    controls: watch::Receiver<Controls>,
    /// Ends the whole connection (set by either pump, or by shutdown).
    end: &'a CancellationToken,
    /// The proxy's counters.
    counters: &'a Counters,
    /// Bytes read but not yet written, oldest first.
    queue: VecDeque<Chunk>,
    /// Total bytes in `queue`, bounded by [`MAX_QUEUED_BYTES`].
    queued: usize,
    /// Whether the source has sent EOF.
    source_done: bool,
    /// The fault in effect and its generation.
    armed: Armed,
    /// Bytes written since `armed` took effect.
    since_armed: u64,
    /// Whether the corrupt byte was written since `armed` took effect.
    corrupted: bool,
    /// When a throttled write may happen next.
    next_send: Instant,
    /// Whether the destination got its FIN from [`Fault::CloseCleanly`]; the pump then
    /// only discards its source until EOF.
    closed: bool,
}

impl<'a> Pump<'a> {
    fn new(
        direction: Direction,
        source: ReadHalf<'a>,
        destination: WriteHalf<'a>,
        shared: &'a Shared,
        end: &'a CancellationToken,
    ) -> Self {
        let controls = shared.controls.subscribe();
        let armed = controls.borrow().armed(direction);
        Self {
            direction,
            source,
            destination,
            controls,
            end,
            counters: &shared.counters,
            queue: VecDeque::new(),
            queued: 0,
            source_done: false,
            armed,
            since_armed: 0,
            corrupted: false,
            next_send: Instant::now(),
            closed: false,
        }
    }

    async fn run(mut self) -> PumpEnd {
        let mut buf = vec![0; READ_CHUNK];
        loop {
            let controls = *self.controls.borrow_and_update();
            if controls.any_reset() {
                return PumpEnd::Reset;
            }
            let armed = controls.armed(self.direction);
            if armed.generation != self.armed.generation {
                self.armed = armed;
                self.since_armed = 0;
                self.corrupted = false;
                self.next_send = Instant::now();
            }
            if self.closed {
                // Discard what the source still sends until it closes too.
                let (source, controls, end) = (&mut self.source, &mut self.controls, self.end);
                tokio::select! {
                    biased;
                    () = end.cancelled() => return PumpEnd::Interrupted,
                    changed = controls.changed() => match changed {
                        Ok(()) => continue,
                        Err(_gone) => return PumpEnd::Interrupted,
                    },
                    read = source.read(&mut buf) => match read {
                        Ok(0) => return PumpEnd::Closed,
                        Ok(_) => continue,
                        Err(_) => return failed(end),
                    },
                }
            }
            let state = PumpState {
                since_armed: self.since_armed,
                corrupted: self.corrupted,
                queued: self.queued,
                source_done: self.source_done,
                front: self.queue.front().map(|c| (c.rest().len(), c.read_at)),
                next_send: self.next_send,
            };
            let (read, write) = match plan(self.armed.fault, &state) {
                Step::Reset => return PumpEnd::Reset,
                Step::Truncate => {
                    self.end.cancel();
                    return PumpEnd::Truncated;
                }
                Step::Finish { closing } => {
                    if self.destination.shutdown().await.is_err() {
                        return failed(self.end);
                    }
                    if !closing {
                        return PumpEnd::Finished;
                    }
                    self.closed = true;
                    continue;
                }
                Step::Hold => (false, None),
                Step::Move { read, write } => (read, write),
            };
            let flipped: [u8; 1];
            let out: &[u8] = match (write, self.queue.front()) {
                (Some(plan), Some(chunk)) if plan.flip => {
                    flipped = [chunk.rest().first().copied().unwrap_or_default() ^ CORRUPT_MASK];
                    &flipped
                }
                (Some(plan), Some(chunk)) => chunk.rest().get(..plan.len).unwrap_or(chunk.rest()),
                _ => &[],
            };
            let not_before = write.and_then(|plan| plan.not_before);
            let (source, destination, controls, end) =
                (&mut self.source, &mut self.destination, &mut self.controls, self.end);
            let event = tokio::select! {
                biased;
                () = end.cancelled() => return PumpEnd::Interrupted,
                changed = controls.changed() => match changed {
                    Ok(()) => continue,
                    Err(_gone) => return PumpEnd::Interrupted,
                },
                wrote = async {
                    if let Some(at) = not_before {
                        sleep_until(at).await;
                    }
                    destination.write(out).await
                }, if !out.is_empty() => Event::Wrote(wrote),
                read = source.read(&mut buf), if read => Event::Read(read),
            };
            match event {
                Event::Read(Ok(0)) => self.source_done = true,
                Event::Read(Ok(n)) => {
                    self.queue.push_back(Chunk { data: buf[..n].to_vec(), sent: 0, read_at: Instant::now() });
                    self.queued += n;
                }
                Event::Wrote(Ok(0)) | Event::Wrote(Err(_)) | Event::Read(Err(_)) => return failed(self.end),
                Event::Wrote(Ok(n)) => self.wrote(n, write.is_some_and(|plan| plan.flip)),
            }
        }
    }

    /// Accounts for `n` bytes written from the front chunk.
    fn wrote(&mut self, n: usize, flipped: bool) {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        self.corrupted |= flipped;
        self.since_armed += n64;
        self.counters.bytes(self.direction).fetch_add(n64, Ordering::Relaxed);
        self.queued -= n;
        if let Some(front) = self.queue.front_mut() {
            front.sent += n;
            if front.sent >= front.data.len() {
                self.queue.pop_front();
            }
        }
        if let Fault::Throttle { bytes_per_sec } = self.armed.fault {
            let nanos = u128::from(n64) * NANOS_PER_SEC / u128::from(bytes_per_sec.max(1));
            self.next_send = Instant::now() + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
    }
}

/// A socket error: end the connection, passing the failure on as a RST.
fn failed(end: &CancellationToken) -> PumpEnd {
    end.cancel();
    PumpEnd::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(since_armed: u64, front: Option<usize>) -> (PumpState, Instant) {
        let now = Instant::now();
        let state = PumpState {
            since_armed,
            corrupted: false,
            queued: front.unwrap_or(0),
            source_done: false,
            front: front.map(|len| (len, now)),
            next_send: now,
        };
        (state, now)
    }

    fn write_of(step: Step) -> WritePlan {
        match step {
            Step::Move { write: Some(write), .. } => write,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn pass_reads_and_writes_everything() {
        let (s, _) = state(0, Some(100));
        assert_eq!(
            plan(Fault::Pass, &s),
            Step::Move { read: true, write: Some(WritePlan { len: 100, flip: false, not_before: None }) }
        );
    }

    #[test]
    fn stall_and_zero_throttle_hold() {
        let (s, _) = state(0, Some(100));
        assert_eq!(plan(Fault::Stall, &s), Step::Hold);
        assert_eq!(plan(Fault::Throttle { bytes_per_sec: 0 }, &s), Step::Hold);
    }

    #[test]
    fn full_queue_stops_reading() {
        let (mut s, _) = state(0, Some(100));
        s.queued = MAX_QUEUED_BYTES;
        assert!(matches!(plan(Fault::Pass, &s), Step::Move { read: false, write: Some(_) }));
    }

    #[test]
    fn delay_holds_each_chunk_from_its_read_time() {
        let (s, read_at) = state(0, Some(10));
        let delay = Duration::from_millis(300);
        assert_eq!(write_of(plan(Fault::Delay(delay), &s)).not_before, Some(read_at + delay));
        assert_eq!(write_of(plan(Fault::Delay(Duration::MAX), &s)).not_before, Some(read_at + MAX_DELAY));
    }

    #[test]
    fn throttle_writes_slices_no_sooner_than_allowed() {
        let (s, now) = state(0, Some(10_000));
        let w = write_of(plan(Fault::Throttle { bytes_per_sec: 2_000 }, &s));
        assert_eq!(w.len, 100);
        assert_eq!(w.not_before, Some(now));
        assert_eq!(write_of(plan(Fault::Throttle { bytes_per_sec: 1 }, &s)).len, 1);
    }

    #[test]
    fn corrupt_writes_up_to_the_byte_then_flips_it_alone_once() {
        let corrupt = Fault::Corrupt { after_bytes: 10 };
        let (s, _) = state(4, Some(100));
        assert_eq!(write_of(plan(corrupt, &s)), WritePlan { len: 6, flip: false, not_before: None });
        let (mut s, _) = state(10, Some(100));
        assert_eq!(write_of(plan(corrupt, &s)), WritePlan { len: 1, flip: true, not_before: None });
        s.corrupted = true;
        s.since_armed = 11;
        assert_eq!(write_of(plan(corrupt, &s)).len, 100);
    }

    #[test]
    fn drop_after_writes_the_budget_then_truncates() {
        let drop_after = Fault::DropAfter { bytes: 10 };
        let (s, _) = state(3, Some(100));
        assert_eq!(write_of(plan(drop_after, &s)).len, 7);
        let (s, _) = state(10, Some(100));
        assert_eq!(plan(drop_after, &s), Step::Truncate);
        let (s, _) = state(0, None);
        assert_eq!(plan(Fault::DropAfter { bytes: 0 }, &s), Step::Truncate);
    }

    #[test]
    fn close_cleanly_flushes_then_finishes() {
        let (s, _) = state(0, Some(5));
        assert_eq!(
            plan(Fault::CloseCleanly, &s),
            Step::Move { read: false, write: Some(WritePlan { len: 5, flip: false, not_before: None }) }
        );
        let (s, _) = state(0, None);
        assert_eq!(plan(Fault::CloseCleanly, &s), Step::Finish { closing: true });
    }

    #[test]
    fn eof_is_passed_on_once_the_queue_is_empty() {
        let (mut s, _) = state(0, Some(5));
        s.source_done = true;
        assert!(matches!(plan(Fault::Pass, &s), Step::Move { read: false, write: Some(_) }));
        s.front = None;
        assert_eq!(plan(Fault::Pass, &s), Step::Finish { closing: false });
        assert_eq!(plan(Fault::Stall, &s), Step::Hold);
    }

    #[test]
    fn reset_or_error_aborts_truncation_closes_gracefully() {
        assert_eq!(Ending::of(PumpEnd::Reset, PumpEnd::Interrupted), Ending::Abort);
        assert_eq!(Ending::of(PumpEnd::Finished, PumpEnd::Failed), Ending::Abort);
        assert_eq!(Ending::of(PumpEnd::Interrupted, PumpEnd::Truncated), Ending::Graceful);
        assert_eq!(Ending::of(PumpEnd::Finished, PumpEnd::Closed), Ending::Release);
    }

    #[test]
    fn proxy_handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Proxy>();
    }
}
