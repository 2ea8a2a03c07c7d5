//! The simulated world: one provider and its consumers as turmoil hosts running the
//! real server, session, supervisor and store code, plus the levers the nemesis pulls.
//!
//! Each host's store lives in a folder of the run (real sled). The orchestrator reaches
//! a running host's store through a [`Slot`] the host fills when it starts; a crash
//! empties the slot and drops the host's tasks, so a restart reopens the store from
//! disk exactly as a restarted process would.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use replication_tests::workload::{Workload, PEOPLE, SUFFIX};
use tether_consumer::config::ProofPolicy;
use tether_consumer::executor::{self, Executor};
use tether_consumer::retry::{Jitter, RetrySchedule};
use tether_consumer::session::SessionConfig;
use tether_consumer::status::StatusHandle;
use tether_consumer::supervisor::Supervisor;
use tether_consumer::transport::{BoxedStream, ConnectFuture, Connector, Network};
use tether_protocol::ldif::reader::parse_str;
use tether_protocol::message::Mode;
use tether_protocol::{Change, Dn, Filter, Scope, SearchSpec, Secret};
use tether_provider::server::{Grants, Server, ServerParams};
use tether_provider::session::SessionParams;
use tether_store::{Directory, Replica, ReplicaStore, StoreError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The provider's port.
const PORT: u16 = 3890;
/// The provider's host name.
pub const PROVIDER: &str = "provider";

/// A value a host publishes to the orchestrator while it runs.
#[derive(Debug)]
pub struct Slot<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> Slot<T> {
    fn set(&self, v: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
    /// The published value, if the host is up.
    pub fn get(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A running consumer's replica and status.
#[derive(Debug, Clone)]
pub struct ConsumerLive {
    /// Its one agreement's replica.
    pub replica: Replica,
    /// Its agreement's status (counts `duplicates` from the apply audit).
    pub status: StatusHandle,
}

/// What one consumer replicates, and how.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    /// Host (and agreement) name.
    pub name: String,
    /// Persist or refresh-only.
    pub mode: Mode,
    /// Its region.
    pub spec: SearchSpec,
}

/// Resets every connection a consumer opened before [`LinkSwitch::drop_links`].
#[derive(Debug, Clone, Default)]
pub struct LinkSwitch(Arc<AtomicU64>);

impl LinkSwitch {
    /// Fails the consumer's current connections with a reset.
    pub fn drop_links(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A turmoil stream that fails once its [`LinkSwitch`] moved on.
struct Droppable<S> {
    inner: S,
    switch: LinkSwitch,
    epoch: u64,
}

impl<S> Droppable<S> {
    fn check(&self) -> io::Result<()> {
        if self.switch.0.load(Ordering::SeqCst) == self.epoch {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "link dropped by the nemesis"))
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Droppable<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Droppable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects over turmoil's simulated network.
#[derive(Debug)]
struct TurmoilConnector {
    switch: LinkSwitch,
}

impl Connector for TurmoilConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let epoch = self.switch.0.load(Ordering::SeqCst);
            let inner = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(Droppable { inner, switch: self.switch.clone(), epoch }) as BoxedStream)
        })
    }
}

/// One consumer host.
#[derive(Debug)]
pub struct ConsumerHost {
    /// What it replicates.
    pub plan: ConsumerPlan,
    /// Its running store.
    pub live: Slot<ConsumerLive>,
    /// Whether its software runs.
    pub up: bool,
    /// Resets its connections.
    pub links: LinkSwitch,
    /// `duplicates` counted by lifetimes that crashed.
    pub past_duplicates: u64,
}

/// The simulated deployment.
pub struct World {
    /// The turmoil simulation.
    pub sim: turmoil::Sim<'static>,
    /// The provider's store while it runs.
    pub provider: Slot<Arc<Directory>>,
    /// Whether the provider runs.
    pub provider_up: bool,
    /// The consumers.
    pub consumers: Vec<ConsumerHost>,
    /// The write workload (tracks the directory so every change is valid).
    pub workload: Workload,
    /// The provider's entries after the initial load.
    pub initial: Vec<tether_protocol::Entry>,
    /// A trim of the whole changelog armed to happen at the next write during a reload,
    /// with the provider's newest CSN when that reload was first seen.
    pub armed_trim: Option<Option<tether_protocol::Csn>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("provider_up", &self.provider_up).field("consumers", &self.consumers).finish()
    }
}

/// Opens a store a crashed incarnation just let go of. sled finishes the dropped
/// handle's last writes on its own background threads, which hold the folder's lock for a
/// moment of real time; waiting for them does not move the simulated clock.
fn reopen<T>(open: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut attempts = 0;
    loop {
        match open() {
            Err(StoreError::Locked(_)) if attempts < 1_000 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn dn(s: &str) -> Dn {
    Dn::parse(s).unwrap_or_else(|e| panic!("bad DN {s}: {e}"))
}

/// The consumers of every run: overlapping scopes, both modes, and a filtered region
/// (about half the people: the workload's `sn` replacements move entries in and out of
/// it, which the provider must send as upserts and deletes).
pub fn plans() -> Vec<ConsumerPlan> {
    let filtered = SearchSpec {
        base: dn(PEOPLE),
        scope: Scope::Subtree,
        filter: Filter::parse("(|(sn=Family1*)(sn=Family2*)(sn=Family3*)(sn=Family4*))")
            .unwrap_or_else(|e| panic!("filter: {e}")),
        attrs: Vec::new(),
    };
    vec![
        ConsumerPlan { name: "c-all".into(), mode: Mode::RefreshAndPersist, spec: SearchSpec::subtree(dn(SUFFIX)) },
        ConsumerPlan { name: "c-people".into(), mode: Mode::RefreshAndPersist, spec: SearchSpec::subtree(dn(PEOPLE)) },
        ConsumerPlan { name: "c-poll".into(), mode: Mode::RefreshOnly, spec: filtered },
    ]
}

/// Parses workload LDIF into changes.
pub fn changes(ldif: &str) -> Vec<Change> {
    parse_str(ldif).unwrap_or_else(|e| panic!("workload LDIF: {e}")).into_iter().map(|r| r.into_change()).collect()
}

impl World {
    /// Builds the world for `seed` with stores under `root`; the provider starts with
    /// `initial` entries.
    pub fn new(seed: u64, root: &std::path::Path, initial: usize) -> Self {
        let secret = || Secret::new(b"simulated-agreement-secret".to_vec()).unwrap_or_else(|e| panic!("secret: {e}"));
        let mut workload = Workload::new(initial, seed);
        let provider_dir = root.join("provider");
        let initial = {
            let dir = Directory::open(&provider_dir, &dn(SUFFIX)).unwrap_or_else(|e| panic!("provider store: {e}"));
            for change in changes(&workload.initial_ldif()) {
                dir.write(&change).unwrap_or_else(|e| panic!("initial load: {e}"));
            }
            dir.entries().iter().collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("initial read: {e}"))
        };
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(24 * 3600))
            .tick_duration(Duration::from_millis(5))
            // Fixed per-link latencies (set below): a random latency per message would be
            // drawn in the order tasks happen to send, and tokio wakes a watch's waiters
            // in an order it randomizes, so replays would drift.
            .min_message_latency(Duration::from_millis(2))
            .max_message_latency(Duration::from_millis(2))
            // A small TCP window: a refresh then streams over many round trips, as over a
            // real link, and the checker sees reloads in progress (with a large one a
            // whole reload lands within one tick).
            .tcp_capacity(4)
            .rng_seed(seed)
            .build();
        let mut grants = Grants::default();
        for plan in plans() {
            grants.agreements.insert(plan.name.clone(), (secret(), dn(SUFFIX)));
        }
        let params = ServerParams {
            max_connections: 16,
            handshake_timeout: Duration::from_secs(5),
            max_frame: tether_protocol::frame::MAX_FRAME,
            session: SessionParams {
                batch_size: 4,
                queue_len: 8,
                keepalive_interval: Duration::from_millis(500),
                keepalive_timeout: Duration::from_secs(2),
                keepalive_enabled: true,
            },
        };
        let provider: Slot<Arc<Directory>> = Slot::default();
        {
            let slot = provider.clone();
            sim.host(PROVIDER, move || {
                let (slot, path, grants) = (slot.clone(), provider_dir.clone(), grants.clone());
                async move {
                    let dir = Arc::new(reopen(|| Directory::open(&path, &dn(SUFFIX)))?);
                    // As the provider daemon does at every start: cookies from before
                    // the crash name the history it ends here.
                    dir.begin_history()?;
                    slot.set(dir.clone());
                    let server = Server::new(dir, grants, None, params, CancellationToken::new());
                    let listener =
                        turmoil::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT))
                            .await?;
                    loop {
                        let (stream, peer) = listener.accept().await?;
                        tokio::spawn(server.clone().handle_stream(stream, peer));
                    }
                }
            });
        }
        let mut consumers = Vec::new();
        for (i, plan) in plans().into_iter().enumerate() {
            let live: Slot<ConsumerLive> = Slot::default();
            let links = LinkSwitch::default();
            let cfg = SessionConfig {
                name: plan.name.clone(),
                provider: format!("{PROVIDER}:{PORT}"),
                mode: plan.mode,
                spec: plan.spec.clone(),
                secret: secret(),
                client_id: format!("{}-id", plan.name),
                idle_timeout: Duration::from_secs(30),
                keepalive: Some((Duration::from_millis(500), Duration::from_secs(2))),
                tls: None,
                network: Network::Custom(Arc::new(TurmoilConnector { switch: links.clone() })),
                provider_proof: ProofPolicy::OnceProved,
                failed_addresses: Default::default(),
            };
            let path: PathBuf = root.join(&plan.name);
            let slot = live.clone();
            let jitter_seed = seed.wrapping_mul(31).wrapping_add(i as u64);
            sim.host(plan.name.as_str(), move || {
                let (cfg, path, slot) = (cfg.clone(), path.clone(), slot.clone());
                async move {
                    let store = reopen(|| ReplicaStore::open(&path))?;
                    store.set_audit(true);
                    let replica = store.replica(&cfg.name)?;
                    let status = StatusHandle::new(&cfg.name, &cfg.provider, cfg.mode.as_str());
                    slot.set(ConsumerLive { replica: replica.clone(), status: status.clone() });
                    let (commands_tx, commands) = tokio::sync::mpsc::channel(1);
                    let supervisor = Supervisor {
                        session: cfg,
                        interval: Duration::from_secs(2),
                        retry: RetrySchedule::parse(&["200ms x3", "1s forever"])?,
                        give_up_after: None,
                        store,
                        replica,
                        status,
                        commands,
                        jitter: Jitter::Seeded(jitter_seed),
                    };
                    executor::scope(Executor::Inline, supervisor.run()).await;
                    drop(commands_tx);
                    Ok(())
                }
            });
            consumers.push(ConsumerHost { plan, live, up: true, links, past_duplicates: 0 });
        }
        let mut latencies = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1a7e_9c1e);
        for c in &consumers {
            sim.set_link_latency(PROVIDER, c.plan.name.as_str(), Duration::from_millis(latencies.gen_range(1..15)));
        }
        Self { sim, provider, provider_up: true, consumers, workload, initial, armed_trim: None }
    }

    /// Whether a running consumer is reloading its replica (filling a shadow).
    pub fn reloading(&self) -> bool {
        self.consumers
            .iter()
            .filter_map(|c| c.live.get())
            .any(|live| live.replica.state().is_ok_and(|s| s.shadow.is_some()))
    }

    /// Simulated time since the start, in ms.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The consumer host's name.
    pub fn name(&self, i: usize) -> &str {
        &self.consumers[i].plan.name
    }

    /// Crashes consumer `i`: its tasks are dropped mid-whatever; its store stays on disk.
    pub fn crash_consumer(&mut self, i: usize) {
        let c = &mut self.consumers[i];
        if let Some(live) = c.live.get() {
            c.past_duplicates += live.status.snapshot().duplicates;
        }
        c.live.clear();
        c.up = false;
        let name = c.plan.name.clone();
        self.sim.crash(name.as_str());
    }

    /// Restarts consumer `i` from its store on disk.
    pub fn restart_consumer(&mut self, i: usize) {
        self.consumers[i].up = true;
        let name = self.consumers[i].plan.name.clone();
        self.sim.bounce(name.as_str());
    }

    /// Crashes the provider.
    pub fn crash_provider(&mut self) {
        self.provider.clear();
        self.provider_up = false;
        self.sim.crash(PROVIDER);
    }

    /// Restarts the provider from its store on disk.
    pub fn restart_provider(&mut self) {
        self.provider_up = true;
        self.sim.bounce(PROVIDER);
    }
}
