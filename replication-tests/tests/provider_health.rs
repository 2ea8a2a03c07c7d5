//! Provider-side session health: many idle sessions and one consumer that stops reading
//! cost bounded memory (measured as the provider's RSS), the stuck session (which still
//! pings, so it is kept) holds at most its bounded queue, and the provider keeps serving
//! everyone else.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, Result};
use replication_tests::harness::{
    probe_port, probe_then_warnings, wait_until, Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET,
};
use replication_tests::workload::{Workload, PEOPLE};
use tether_protocol::auth::Secret;
use tether_protocol::encoded::Received;
use tether_protocol::handshake::{client_handshake, ProviderProof};
use tether_protocol::message::{Hello, Message, Mode, Role, SUPPORTED_VERSIONS};
use tether_protocol::{Dn, SearchSpec};

const LIMIT: Duration = Duration::from_secs(120);
const IDLE_SESSIONS: usize = 50;
/// Growth of the provider's resident memory allowed while a stuck consumer falls behind
/// by thousands of changes: its queue is bounded, so this is far below what buffering
/// the changes would take.
const RSS_GROWTH_LIMIT_KB: u64 = 64 * 1024;
/// The per-session queue length (messages) the memory test gives its provider: well
/// under what the stuck consumer falls behind by once its socket is full, so that the
/// bound is reached (at the default 1,024, the kernel's buffers took every change the
/// test wrote and the queue held none, so a queue without a bound passed too).
const QUEUE_LEN: u64 = 256;

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn hello(i: usize) -> Result<Hello> {
    Ok(Hello {
        versions: SUPPORTED_VERSIONS.to_vec(),
        client_id: format!("idle-{i}"),
        role: Role::Consumer {
            agreement: "people".into(),
            mode: Mode::RefreshAndPersist,
            cookie: None,
            spec: SearchSpec::subtree(Dn::parse(PEOPLE)?),
            resume: None,
        },
    })
}

/// A session that reads everything, pings like a real consumer's keepalive poller and
/// answers pings (idle once refreshed).
async fn idle_session(port: u16, i: usize, stop: tokio_util_like::Stop) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut r, mut w) = tether_protocol::connection::from_tcp(stream)?;
    let secret = Secret::new(PEOPLE_SECRET.as_bytes().to_vec())?;
    client_handshake(&mut r, &mut w, &hello(i)?, &secret, ProviderProof::Required, Duration::from_secs(30)).await?;
    let mut ping = tokio::time::interval(Duration::from_millis(500));
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = ping.tick() => {
                seq += 1;
                w.send(&Message::Ping { seq }).await?;
            }
            // Changes are checked, not decoded whole, as a consumer's reader does: fifty
            // clients decoding every entry in one test process starved their own pings
            // past the provider's keepalive timeout on a loaded machine.
            msg = r.recv_received() => match msg? {
                Some(Received::Message(Message::Ping { seq })) => w.send(&Message::Pong { seq }).await?,
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// A tiny stop signal (the tests crate does not depend on tokio-util).
mod tokio_util_like {
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Stop(Arc<tokio::sync::Notify>, Arc<std::sync::atomic::AtomicBool>);

    impl Stop {
        pub fn fire(&self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            self.0.notify_waiters();
        }
        pub async fn wait(&self) {
            while !self.1.load(std::sync::atomic::Ordering::SeqCst) {
                let notified = self.0.notified();
                if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        }
    }
}

#[test]
fn idle_sessions_and_a_consumer_that_stops_reading_keep_provider_memory_bounded() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut w = Workload::new(3000, 21);
    let opts = ProviderOptions { keepalive: ("1s".into(), "6s".into()), ..ProviderOptions::default() };
    let mut p = Provider::configure(&tmp.path().join("provider"), &opts)?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(&p.config, format!("queue_len = {QUEUE_LEN}\n{config}"))?;
    let file = tmp.path().join("initial.ldif");
    std::fs::write(&file, w.initial_ldif())?;
    p.load(&file)?;
    p.start()?;
    let pid = p.child.as_ref().unwrap().id();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stop = tokio_util_like::Stop::default();
    let port = p.port;
    let idle: Vec<_> = (0..IDLE_SESSIONS).map(|i| rt.spawn(idle_session(port, i, stop.clone()))).collect();
    // The stuck consumer: handshakes, then never reads again, but keeps pinging, so it
    // is alive as far as keepalive goes and only its reading has stopped. Its receive
    // buffer is small (and so not grown by the kernel as the refresh is read), so that
    // what it falls behind by waits in the provider rather than in its socket.
    let stuck_stop = stop.clone();
    let stuck = rt.spawn(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(16 * 1024)?;
        let stream = socket.connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let (mut r, mut wr) = tether_protocol::connection::from_tcp(stream)?;
        let secret = Secret::new(PEOPLE_SECRET.as_bytes().to_vec())?;
        client_handshake(&mut r, &mut wr, &hello(999)?, &secret, ProviderProof::Required, Duration::from_secs(30))
            .await?;
        // Take the refresh like anyone, then stop reading for good.
        let mut seq = 0;
        loop {
            match r.recv().await? {
                Some(Message::RefreshDone { .. }) | None => break,
                Some(Message::Ping { seq: s }) => wr.send(&Message::Pong { seq: s }).await?,
                Some(_) => {}
            }
        }
        loop {
            tokio::select! {
                _ = stuck_stop.wait() => return Ok::<_, anyhow::Error>(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    seq += 1;
                    if wr.send(&Message::Ping { seq }).await.is_err() {
                        // The provider dropped us.
                        return Ok(());
                    }
                }
            }
        }
    });
    let mut seen = 0;
    wait_until(LIMIT, "all sessions registered", || {
        seen = p.status()?["sessions"].as_array().map_or(0, Vec::len);
        Ok(seen > IDLE_SESSIONS)
    })
    .with_context(|| {
        format!("{seen} sessions; finished idle tasks: {}", idle.iter().filter(|h| h.is_finished()).count())
    })?;
    // A real consumer too, which must keep converging throughout.
    let mut c =
        Consumer::configure(&tmp.path().join("c"), port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    wait_until(LIMIT, "consumer converged", || {
        Ok(p.search(PEOPLE, "subtree", "(objectClass=*)")?
            == c.search("people", PEOPLE, "subtree", "(objectClass=*)")?)
    })?;
    let before = rss_kb(pid)?;
    let mut peak = before;
    for _ in 0..4 {
        p.write_ok(&w.changes(750))?;
        peak = peak.max(rss_kb(pid)?);
    }
    // Then a change of 2 KB to every person under people: megabytes more than the
    // stuck consumer's socket holds, so its queue fills.
    let dns: Vec<String> = p
        .search(PEOPLE, "one", "(objectClass=*)")?
        .lines()
        .filter_map(|l| l.strip_prefix("dn: "))
        .map(str::to_owned)
        .collect();
    let big: String = dns
        .iter()
        .map(|dn| {
            format!("dn: {dn}\nchangetype: modify\nreplace: description\ndescription: {}\n-\n\n", "x".repeat(2000))
        })
        .collect();
    p.write_ok(&big)?;
    peak = peak.max(rss_kb(pid)?);
    wait_until(LIMIT, "consumer converged after the writes", || {
        peak = peak.max(rss_kb(pid)?);
        Ok(p.search(PEOPLE, "subtree", "(objectClass=*)")?
            == c.search("people", PEOPLE, "subtree", "(objectClass=*)")?)
    })?;
    eprintln!("provider RSS: {before} kB before the writes, peak {peak} kB");
    // Everyone is still served; the stuck session holds at most its bounded queue.
    let sessions = p.status()?["sessions"].as_array().cloned().unwrap_or_default();
    assert!(sessions.len() > IDLE_SESSIONS, "the idle sessions are still up: {}", sessions.len());
    // The stuck session is still there (it pings), and holds what it fell behind by in
    // a full queue, no more.
    let stuck_row = sessions.iter().find(|s| s["client"] == "idle-999").context("the stuck session is still up")?;
    let queued = stuck_row["queue_len"].as_u64().context("queue_len")?;
    assert!(queued <= QUEUE_LEN, "bounded queue: {stuck_row}");
    assert!(queued >= QUEUE_LEN / 2, "the stuck consumer fell behind by more than its socket holds: {stuck_row}");
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_LIMIT_KB,
        "provider RSS grew from {before} kB to {peak} kB with a stuck consumer"
    );
    stop.fire();
    let _ = rt.block_on(stuck);
    for h in idle {
        let _ = rt.block_on(h);
    }
    Ok(())
}

/// Connections that send nothing, opened from one host as fast as the provider closes
/// them, hold no slot a client from another host needs: its connection over the limit
/// takes the slot of one of theirs still in its handshake, and their reconnects take
/// nothing back (found by a walkthrough: such a flood, without credentials, had a
/// consumer refused `too-many-connections` at every attempt for as long as it lasted).
#[test]
fn a_flood_of_silent_connections_from_one_host_locks_out_no_client_of_another() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut w = Workload::new(200, 23);
    let mut p = Provider::configure(&tmp.path().join("provider"), &ProviderOptions::default())?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(&p.config, format!("max_connections = 4\n{config}"))?;
    let file = tmp.path().join("initial.ldif");
    std::fs::write(&file, w.initial_ldif())?;
    p.load(&file)?;
    p.start()?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stop = tokio_util_like::Stop::default();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], p.port));
    // Eight loops from 127.0.0.2 against four slots: each connects, sends nothing, and
    // reconnects as soon as the provider closes its connection (refused, taken, or
    // timed out), so the flood keeps every slot it can.
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(async move {
                use tokio::io::AsyncReadExt;
                // Whether a connection of this loop was told its slot was taken.
                let mut told = false;
                loop {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))?;
                    let mut stream = socket.connect(to).await?;
                    let mut heard = Vec::new();
                    let closed = stream.read_to_end(&mut heard);
                    tokio::select! {
                        _ = stop.wait() => return Ok::<_, anyhow::Error>(told),
                        _ = closed => {}
                    }
                    told |= heard.windows(TAKEN.len()).any(|w| w == TAKEN.as_bytes());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    wait_until(LIMIT, "the flood holding every slot", || {
        Ok(p.log_text().contains("connection limit reached; refusing"))
    })?;

    let mut c =
        Consumer::configure(&tmp.path().join("c"), p.port, &[Agreement::persist("people", PEOPLE, PEOPLE_SECRET)])?;
    c.start()?;
    let s = c.wait_status("people", Duration::from_secs(8), "persisting", |s| s["state"] == "persisting")?;
    assert_eq!(s["disconnects"], serde_json::json!({}), "in at the first attempt: {s}");
    // A write client gets in the same way, and its change reaches the consumer.
    p.write_ok(&w.changes(20))?;
    wait_until(LIMIT, "consumer converged", || {
        Ok(p.search(PEOPLE, "subtree", "(objectClass=*)")?
            == c.search("people", PEOPLE, "subtree", "(objectClass=*)")?)
    })?;
    assert!(p.log_text().contains("ended a handshake of the source holding the most to admit this connection"));
    assert!(flood.iter().all(|f| !f.is_finished()), "the flood ran throughout");
    stop.fire();
    let mut told = 0;
    for f in flood {
        told += usize::from(rt.block_on(f)??);
    }
    assert!(told > 0, "a connection whose slot was taken is told why");
    Ok(())
}

/// What a connection whose handshake's slot another took is told.
const TAKEN: &str = "a connection from a source holding fewer handshakes took this one's slot";

/// A process the test started, killed when the test ends, passed or failed.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin sub -c config` under `prlimit --nofile=nofile`, its log in `log`, and
/// waits until it says it is ready: the process, and whether it did (it may have exited
/// first). Its standard output is read on for as long as it runs.
fn start_limited(
    nofile: &str,
    bin: &str,
    sub: &str,
    config: &std::path::Path,
    log: &std::path::Path,
) -> Result<(Started, bool)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new("prlimit")
        .arg(format!("--nofile={nofile}"))
        .arg("--")
        .arg(replication_tests::harness::bin(bin)?)
        .args([sub, "-c"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = false;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // Both processes announce readiness on standard output.
            if !ready && (line.starts_with("listening on") || line.starts_with("consumer running")) {
                ready = true;
                let _ = tx.send(true);
            }
        }
        if !ready {
            let _ = tx.send(false);
        }
    });
    let child = Started(child);
    let ready = rx.recv_timeout(LIMIT).unwrap_or(false);
    Ok((child, ready))
}

/// Starts `bin sub -c config` as [`start_limited`] does and reads its open files limit
/// once it says it is ready: whether it did, and the `Max open files` line of its
/// limits.
fn open_files_limit(
    nofile: &str,
    bin: &str,
    sub: &str,
    config: &std::path::Path,
    log: &std::path::Path,
) -> Result<(bool, String)> {
    let (child, ready) = start_limited(nofile, bin, sub, config, log)?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.0.id()))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open files limit")?;
    Ok((ready, line.to_owned()))
}

/// A provider started with a soft open files limit below its hard one (the usual 1024
/// of a shell or a service manager) raises it, since each connection holds a
/// descriptor; and when even the hard limit is too low for `max_connections`, it says so
/// at start rather than failing connections at `accept` later.
#[test]
fn the_provider_raises_its_open_files_limit_and_warns_when_max_connections_exceeds_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    for (hard, warned) in [(512, true), (4096, false)] {
        let log = tmp.path().join(format!("serve-{hard}.log"));
        let (ready, line) = open_files_limit(&format!("256:{hard}"), "tether-provider", "serve", &p.config, &log)?;
        assert!(ready, "the provider started");
        let soft_hard: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
        assert_eq!(soft_hard, [hard.to_string(), hard.to_string()], "raised to the hard limit: {line}");
        let text = std::fs::read_to_string(&log)?;
        assert_eq!(
            text.contains("the open files limit is too low for max_connections: the provider may need 1088 files"),
            warned,
            "{text}"
        );
    }
    Ok(())
}

/// The consumer raises its soft limit the same way: at the usual soft default, its
/// agreements' connections and commands could fail, and reading a secret file did.
#[test]
fn the_consumer_raises_its_open_files_limit() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // No provider: the agreement retries meanwhile, which is all this needs.
    let c = Consumer::configure(&tmp.path().join("c"), 1, &[Agreement::persist("people", PEOPLE, "s")])?;
    let log = tmp.path().join("run.log");
    let (ready, line) = open_files_limit("20:4096", "tether-consumer", "run", &c.config, &log)?;
    assert!(ready, "the consumer started: {}", std::fs::read_to_string(&log)?);
    let soft_hard: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(soft_hard, ["4096", "4096"], "raised to the hard limit: {line}");
    Ok(())
}

/// A reload that adds agreements past what the open files limit holds says so, in its
/// reply and its log, as a start with that many agreements does: the start checked the
/// limit against the agreements it had, and the operator adding more reads the reload's
/// answer (which said only `added`).
#[test]
fn a_reload_adding_agreements_past_the_open_files_limit_says_so() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("c");
    let agreements = |n: usize| -> Vec<Agreement> {
        (0..n).map(|i| Agreement::persist(&format!("a{i}"), PEOPLE, PEOPLE_SECRET)).collect()
    };
    // No provider: the agreements retry meanwhile. The consumer counts 64 files besides
    // its agreements and 2 for each, so 70 holds one agreement and not five.
    let port = replication_tests::harness::free_port()?;
    let c = Consumer::configure(&dir, port, &agreements(1))?;
    let log = tmp.path().join("run.log");
    let (_child, ready) = start_limited("70:70", "tether-consumer", "run", &c.config, &log)?;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "the consumer started: {}", text());
    assert!(!text().contains("open files limit"), "one agreement fits: {}", text());
    Consumer::configure(&dir, port, &agreements(5))?;
    let out = c.command_output("reload", &[])?;
    let reply = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{reply}");
    let warning = "the open files limit of 70 is low for 5 agreements: the consumer may need 74 files";
    assert!(reply.contains("added a1") && reply.contains(warning), "{reply}");
    wait_until(LIMIT, "the warning in the log", || Ok(text().contains(warning)))
}

/// A TCP health check (connect, close, nothing sent) is no failed handshake: the provider
/// warned of each, so a check a minute was a warning a minute; one that closes with a
/// reset (HAProxy's) as well (`Connection reset by peer`, until the reset was taken for
/// a close). A client that sends bytes of another protocol still is one.
#[test]
fn a_port_probe_that_sends_nothing_is_not_warned_of() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 10, 41, &ProviderOptions::default())?;
    let warnings = probe_then_warnings(&p, "handshake failed")?;
    assert_eq!(warnings.len(), 1, "only the web client is warned of: {warnings:#?}");
    let log = p.log_text();
    assert!(!log.contains("closed during the handshake") && !log.contains("reset"), "{log}");
    Ok(())
}

/// A burst of failed handshakes is warned of once a second, and what each second held
/// back is told with its count, the burst's last second's too once that second is over:
/// the counts add up to every failure (the last second's were lost when nothing of the
/// kind followed, so a log read after a flood undercounted it).
#[test]
fn a_burst_of_failed_handshakes_is_counted_whole_in_the_warnings() -> Result<()> {
    const BURST: u64 = 20;
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 10, 47, &ProviderOptions::default())?;
    for _ in 0..BURST {
        probe_port(p.port, b"GET / HTTP/1.0\r\n\r\n")?;
    }
    // Each warning line stands for itself and the `held_back` it says; a line of only
    // what was held back, for those.
    let told = || {
        let log = p.log_text();
        let mut told = 0;
        for line in log.lines() {
            let held_back = || -> u64 {
                let at = line.find("held_back=").map(|at| at + "held_back=".len());
                at.and_then(|at| line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0)
            };
            if line.contains("handshake failed") {
                told += 1 + held_back();
            } else if line.contains("warnings held back since the last line of this kind") {
                told += held_back();
            }
        }
        told
    };
    wait_until(LIMIT, "every failure told", || Ok(told() >= BURST))?;
    assert_eq!(told(), BURST, "{}", p.log_text());
    Ok(())
}

/// A client that closes after its hello (a consumer stopped mid-handshake) is still
/// warned of: only one that sent nothing at all is a port probe.
#[test]
fn a_client_that_closes_after_its_hello_is_warned_of() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 10, 45, &ProviderOptions::default())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await?;
        let (mut r, mut w) = tether_protocol::connection::from_tcp(stream)?;
        w.send(&Message::Hello(hello(0)?)).await?;
        r.recv().await?.context("the provider's challenge")?;
        // Closes its side without an answer, and waits for the provider to close its own.
        drop(w);
        while let Ok(Some(_)) = r.recv().await {}
        anyhow::Ok(())
    })?;
    probe_port(p.port, b"GET / HTTP/1.0\r\n\r\n")?;
    wait_until(LIMIT, "the warning of the web client", || {
        Ok(p.log_text().lines().any(|l| l.contains("handshake failed") && !l.contains("closed during")))
    })?;
    let log = p.log_text();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("handshake failed")).collect();
    assert!(failed[0].contains("closed during the handshake"), "the client heard from is warned of: {failed:#?}");
    Ok(())
}

/// A client that reaches a provider on an IPv6 socket over IPv4 is named by its IPv4
/// address: a listener on `[::]` hands it over IPv4-mapped, and the log (and `status`)
/// read `[::ffff:127.0.0.1]:55350`, which a search for the client's address did not find.
/// The provider listens on the IPv4-mapped loopback address, an IPv6 socket that takes
/// IPv4 clients as `[::]` does while staying on loopback.
#[test]
fn an_ipv4_client_of_a_provider_listening_on_an_ipv6_socket_is_named_by_its_ipv4_address() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut p = Provider::configure(&tmp.path().join("p"), &ProviderOptions::default())?;
    let config = std::fs::read_to_string(&p.config)?;
    let loopback = format!("listen = \"127.0.0.1:{}\"", p.port);
    assert!(config.contains(&loopback), "{config}");
    std::fs::write(&p.config, config.replace(&loopback, &format!("listen = \"[::ffff:127.0.0.1]:{}\"", p.port)))?;
    p.start()?;
    probe_port(p.port, b"GET / HTTP/1.0\r\n\r\n")?;
    wait_until(LIMIT, "the warning of the web client", || Ok(p.log_text().contains("handshake failed")))?;
    let log = p.log_text();
    let warned = log.lines().find(|l| l.contains("handshake failed")).context("the warning")?;
    assert!(warned.contains("connection{peer=127.0.0.1:"), "{warned}");
    assert!(log.lines().filter(|l| l.contains("peer=")).all(|l| !l.contains("::ffff:")), "{log}");
    Ok(())
}

/// A reload whose `listen` waits for the restart tries the new address now, and says if
/// it cannot be bound (an address not on this host): it was found only at the next
/// start, after the running provider had been stopped. One that can be is not warned of.
#[test]
fn a_reload_says_when_the_new_listen_cannot_be_bound() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (p, _w) = Provider::loaded(tmp.path(), 5, 50, &ProviderOptions::default())?;
    let first = std::fs::read_to_string(&p.config)?;
    let listen_at = |addr: &str| first.replace(&format!("127.0.0.1:{}", p.port), addr);
    // TEST-NET-1: on no host.
    std::fs::write(&p.config, listen_at(&format!("192.0.2.77:{}", p.port)))?;
    let out = p.reload_command()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not applied until the provider restarts: listen"), "{said}");
    assert!(said.contains(&format!("warning: the new listen 192.0.2.77:{} cannot be bound (", p.port)), "{said}");
    assert!(said.contains("the next start will fail on it"), "{said}");
    let free = replication_tests::harness::free_port()?;
    std::fs::write(&p.config, listen_at(&format!("127.0.0.1:{free}")))?;
    let out = p.reload_command()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("restarts: listen") && !said.contains("cannot be bound"), "{said}");
    Ok(())
}
