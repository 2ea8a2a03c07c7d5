//! The fault-injecting proxy against a tiny echo server on loopback: every fault, healing,
//! refusal, counters and shutdown, seen from a plain blocking client as a consumer sees them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::time::{Duration, Instant};

use replication_tests::proxy::{Direction, Fault, Proxy, CORRUPT_MASK};

/// Bound on every blocking client operation and on every wait.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client listens to prove that nothing (no data, no EOF) arrives.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on 127.0.0.1:0, on its own runtime; dropping it stops it.
struct Echo {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn echo() -> Echo {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                // Ends at EOF or on an error; dropping the socket then closes it.
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Echo { addr, _runtime: runtime }
}

fn proxy_to_echo() -> (Echo, Proxy) {
    let echo = echo();
    let proxy = Proxy::start(echo.addr).unwrap();
    (echo, proxy)
}

fn connect(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect_timeout(&proxy.local_addr(), IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Connects expecting the proxy to reset the connection right after accepting it. The
/// reset shows on the connect itself when it arrives before the client has seen the
/// handshake complete, else on the first read.
fn assert_reset_on_connect(proxy: &Proxy) {
    let err = match TcpStream::connect_timeout(&proxy.local_addr(), IO_TIMEOUT) {
        Err(e) => e,
        Ok(mut stream) => {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.read(&mut [0; 8]).expect_err("the proxy must reset this connection")
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    stream.read_exact(&mut got).unwrap();
    got
}

fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    read_n(stream, data.len())
}

/// Reads until EOF or error (bounded by the read timeout); returns what arrived and how it ended.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<usize>) {
    let mut got = Vec::new();
    let end = stream.read_to_end(&mut got);
    (got, end)
}

/// Asserts that for [`QUIET`] neither data nor EOF nor an error arrives.
fn assert_quiet(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence on a stalled connection, got {other:?}"),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn passes_bytes_through_both_ways() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    let data = pattern(100_000);
    client.write_all(&data).unwrap();
    assert_eq!(read_n(&mut client, data.len()), data);
    assert_eq!(proxy.fault(Direction::ToUpstream), Fault::Pass);
}

#[test]
fn counters_count_connections_and_bytes() {
    let (_echo, proxy) = proxy_to_echo();
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    proxy.wait_for_connections(2, IO_TIMEOUT).unwrap();
    assert_eq!(round_trip(&mut a, b"hello"), b"hello");
    assert_eq!(round_trip(&mut b, b"world!"), b"world!");
    proxy.wait_for_bytes(Direction::ToClient, 11, IO_TIMEOUT).unwrap();
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.open, stats.refused, stats.upstream_failures), (2, 2, 0, 0));
    assert_eq!((stats.bytes_to_upstream, stats.bytes_to_client), (11, 11));
    drop(a);
    proxy.wait_for_open(1, IO_TIMEOUT).unwrap();
    drop(b);
    proxy.wait_for_open(0, IO_TIMEOUT).unwrap();
    assert_eq!(proxy.stats().accepted, 2);
}

#[test]
fn stall_both_ways_then_heal_delivers_everything() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"before"), b"before");
    proxy.set_fault(Fault::Stall);
    let data = pattern(50_000);
    client.write_all(&data).unwrap();
    assert_quiet(&mut client);
    assert_eq!(proxy.stats().bytes_to_upstream, 6, "a stalled direction forwards nothing");
    proxy.heal();
    assert_eq!(read_n(&mut client, data.len()), data);
}

#[test]
fn stall_keeps_the_connection_open_without_eof() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    proxy.wait_for_connections(1, IO_TIMEOUT).unwrap();
    proxy.set_fault(Fault::Stall);
    client.write_all(b"into the void").unwrap();
    assert_quiet(&mut client);
    assert_eq!(proxy.stats().open, 1);
    // New connections are black-holed too.
    let mut late = connect(&proxy);
    late.write_all(b"late").unwrap();
    assert_quiet(&mut late);
    proxy.heal();
    assert_eq!(read_n(&mut client, 13), b"into the void");
    assert_eq!(read_n(&mut late, 4), b"late");
}

#[test]
fn bytes_held_in_the_proxy_survive_a_stall() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    // Replies are read into the proxy's queue and held there by the delay ...
    proxy.set_fault_on(Direction::ToClient, Fault::Delay(Duration::from_secs(3600)));
    let data = pattern(10_000);
    client.write_all(&data).unwrap();
    proxy.wait_for_bytes(Direction::ToUpstream, data.len() as u64, IO_TIMEOUT).unwrap();
    assert_quiet(&mut client);
    // ... then stalled, then healed: all of them arrive, in order.
    proxy.set_fault_on(Direction::ToClient, Fault::Stall);
    assert_quiet(&mut client);
    proxy.heal();
    assert_eq!(read_n(&mut client, data.len()), data);
}

#[test]
fn a_stall_on_one_direction_leaves_the_other_forwarding() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    proxy.wait_for_connections(1, IO_TIMEOUT).unwrap();
    proxy.set_fault_on(Direction::ToClient, Fault::Stall);
    client.write_all(b"one way").unwrap();
    // The request still reaches the upstream; only its echo is held.
    proxy.wait_for_bytes(Direction::ToUpstream, 7, IO_TIMEOUT).unwrap();
    assert_quiet(&mut client);
    proxy.heal();
    assert_eq!(read_n(&mut client, 7), b"one way");
    // The other way round: a reply held in the proxy (by a delay) reaches the client
    // while its requests are stalled.
    proxy.set_fault_on(Direction::ToClient, Fault::Delay(Duration::from_secs(3600)));
    client.write_all(b"held reply").unwrap();
    proxy.wait_for_bytes(Direction::ToUpstream, 7 + 10, IO_TIMEOUT).unwrap();
    proxy.set_fault_on(Direction::ToUpstream, Fault::Stall);
    proxy.set_fault_on(Direction::ToClient, Fault::Pass);
    assert_eq!(read_n(&mut client, 10), b"held reply");
}

#[test]
fn reset_gives_the_client_a_connection_reset() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    proxy.set_fault(Fault::Reset);
    let err = client.read(&mut [0; 8]).expect_err("a reset connection must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    proxy.wait_for_open(0, IO_TIMEOUT).unwrap();

    // While set, new connections are reset too; healing lets them through.
    assert_reset_on_connect(&proxy);
    proxy.heal();
    let mut healed = connect(&proxy);
    assert_eq!(round_trip(&mut healed, b"pong"), b"pong");
}

#[test]
fn reset_on_one_direction_resets_the_whole_connection() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    proxy.set_fault_on(Direction::ToUpstream, Fault::Reset);
    let err = client.read(&mut [0; 8]).expect_err("a reset connection must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[test]
fn close_cleanly_gives_eof() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    proxy.set_fault(Fault::CloseCleanly);
    let (rest, end) = read_to_end(&mut client);
    assert!(rest.is_empty());
    assert_eq!(end.unwrap(), 0, "a clean close is an EOF, not an error");
    drop(client);
    proxy.wait_for_open(0, IO_TIMEOUT).unwrap();
}

#[test]
fn close_cleanly_on_one_direction_is_a_half_close() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    proxy.set_fault_on(Direction::ToClient, Fault::CloseCleanly);
    assert_eq!(read_to_end(&mut client).1.unwrap(), 0);
    // The other direction still forwards.
    client.write_all(b"still heard").unwrap();
    proxy.wait_for_bytes(Direction::ToUpstream, 4 + 11, IO_TIMEOUT).unwrap();
}

#[test]
fn corrupt_flips_exactly_one_byte_once() {
    let (_echo, proxy) = proxy_to_echo();
    proxy.set_fault_on(Direction::ToUpstream, Fault::Corrupt { after_bytes: 10 });
    let mut client = connect(&proxy);
    let data = pattern(64);
    let got = round_trip(&mut client, &data);
    let differing: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(differing, vec![10]);
    assert_eq!(got[10], data[10] ^ CORRUPT_MASK);
    assert_eq!(round_trip(&mut client, &data), data, "only one byte per connection");
}

#[test]
fn corrupt_counts_from_when_it_is_set_and_setting_it_again_rearms_it() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    // Bytes forwarded before the fault was set do not count toward it.
    assert_eq!(round_trip(&mut client, b"before"), b"before");
    let corrupt = Fault::Corrupt { after_bytes: 10 };
    proxy.set_fault_on(Direction::ToUpstream, corrupt);
    let data = pattern(64);
    let differing = |got: Vec<u8>| -> Vec<usize> { (0..data.len()).filter(|&i| got[i] != data[i]).collect() };
    assert_eq!(differing(round_trip(&mut client, &data)), vec![10]);
    proxy.set_fault_on(Direction::ToUpstream, corrupt);
    assert_eq!(differing(round_trip(&mut client, &data)), vec![10], "set again, it flips one byte again");
}

#[test]
fn drop_after_closes_after_exactly_n_bytes() {
    let (_echo, proxy) = proxy_to_echo();
    proxy.set_fault_on(Direction::ToClient, Fault::DropAfter { bytes: 10 });
    let mut client = connect(&proxy);
    let data = pattern(100);
    client.write_all(&data).unwrap();
    let (got, end) = read_to_end(&mut client);
    assert_eq!(end.unwrap(), 10);
    assert_eq!(got, &data[..10]);
    drop(client);
    proxy.wait_for_open(0, IO_TIMEOUT).unwrap();
}

#[test]
fn drop_after_forwards_exactly_n_bytes_that_come_in_pieces() {
    let (_echo, proxy) = proxy_to_echo();
    proxy.set_fault_on(Direction::ToClient, Fault::DropAfter { bytes: 10 });
    let mut client = connect(&proxy);
    let data = pattern(100);
    // One short of the count: forwarded, and the connection stays up ...
    assert_eq!(round_trip(&mut client, &data[..9]), &data[..9]);
    // ... for exactly one byte more.
    client.write_all(&data[9..]).unwrap();
    let (got, end) = read_to_end(&mut client);
    assert_eq!(end.unwrap(), 1);
    assert_eq!(got, &data[9..10]);
}

#[test]
fn drop_after_closes_with_a_fin_even_with_bytes_unread() {
    let (_echo, proxy) = proxy_to_echo();
    let mut client = connect(&proxy);
    // An echo held in the proxy, and bytes from the client it has not read: closing a
    // socket with bytes unread is a RST, which can cost the client the bytes it is owed.
    proxy.set_fault_on(Direction::ToClient, Fault::Delay(Duration::from_secs(3600)));
    let data = pattern(20);
    client.write_all(&data).unwrap();
    proxy.wait_for_bytes(Direction::ToUpstream, 20, IO_TIMEOUT).unwrap();
    proxy.set_fault_on(Direction::ToUpstream, Fault::Stall);
    client.write_all(&pattern(32 * 1024)).unwrap();
    proxy.set_fault_on(Direction::ToClient, Fault::DropAfter { bytes: 10 });
    let (got, end) = read_to_end(&mut client);
    assert_eq!(end.unwrap(), 10, "a FIN after the bytes, not a reset");
    assert_eq!(got, &data[..10]);
}

#[test]
fn throttle_limits_the_rate() {
    let (_echo, proxy) = proxy_to_echo();
    const RATE: u64 = 20_000;
    const SIZE: usize = 20_000;
    proxy.set_fault_on(Direction::ToUpstream, Fault::Throttle { bytes_per_sec: RATE });
    let mut client = connect(&proxy);
    let data = pattern(SIZE);
    let start = Instant::now();
    assert_eq!(round_trip(&mut client, &data), data);
    // One second at full rate; the first slice goes at once, so allow a generous margin.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(750), "20 kB at 20 kB/s took only {elapsed:?}");
}

#[test]
fn delay_holds_each_chunk() {
    let (_echo, proxy) = proxy_to_echo();
    const DELAY: Duration = Duration::from_millis(200);
    proxy.set_fault(Fault::Delay(DELAY));
    let mut client = connect(&proxy);
    let start = Instant::now();
    assert_eq!(round_trip(&mut client, b"slow"), b"slow");
    let elapsed = start.elapsed();
    assert!(elapsed >= 2 * DELAY, "a delayed round trip took only {elapsed:?}");
}

#[test]
fn refusing_resets_new_connections_until_accepting_again() {
    let (_echo, proxy) = proxy_to_echo();
    let mut served = connect(&proxy);
    assert_eq!(round_trip(&mut served, b"before"), b"before");
    proxy.set_accepting(false);
    assert!(!proxy.is_accepting());
    assert_reset_on_connect(&proxy);
    proxy.wait_until(IO_TIMEOUT, "one refusal", |s| s.refused == 1).unwrap();
    assert_eq!(round_trip(&mut served, b"existing"), b"existing", "existing connections are untouched");
    proxy.set_accepting(true);
    let mut again = connect(&proxy);
    assert_eq!(round_trip(&mut again, b"after"), b"after");
    assert_eq!(proxy.stats().accepted, 2);
}

#[test]
fn an_upstream_that_is_down_resets_the_client() {
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    assert_reset_on_connect(&proxy);
    proxy.wait_until(IO_TIMEOUT, "an upstream failure", |s| s.upstream_failures == 1).unwrap();
}

#[test]
fn a_non_loopback_upstream_is_refused() {
    let err = Proxy::start(SocketAddr::from(([192, 0, 2, 1], 389))).unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err:#}");
}

#[test]
fn listens_on_a_given_port() {
    let echo = echo();
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy = Proxy::start_on(port, echo.addr).unwrap();
    assert_eq!(proxy.port(), port);
    assert_eq!(proxy.upstream(), echo.addr);
    assert_eq!(round_trip(&mut connect(&proxy), b"hi"), b"hi");
}

#[test]
fn shutdown_closes_the_listener_and_every_connection() {
    let (_echo, proxy) = proxy_to_echo();
    let addr = proxy.local_addr();
    let mut client = connect(&proxy);
    assert_eq!(round_trip(&mut client, b"ping"), b"ping");
    proxy.set_fault(Fault::Stall);
    proxy.shutdown().unwrap();
    match client.read(&mut [0; 8]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed by shutdown, got {other:?}"),
    }
    let refused = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect_err("the listener must be closed");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}
