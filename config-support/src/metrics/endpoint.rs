//! The metrics endpoint (`metrics_listen`): HTTP/1.1 on its own TCP listener, answering
//! `GET /metrics` with the page its process renders at that moment from the same
//! snapshot `status` reads, so a scraper and an operator never see two accounts.
//!
//! It serves a scraper, not the world: one request per connection, a few connections at
//! once (more are closed at accept), a deadline on the request's headers and on the
//! whole exchange, and nothing but `GET` and `HEAD` of one path. It is the process's
//! task: it stops taking connections when the process begins to shut down and gives
//! those open a short grace.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// The one path served.
pub const PATH: &str = "/metrics";

/// The media type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; one more is closed as it is accepted. A scraper or two
/// and an operator's `curl` need a handful; a flood must not cost the process more.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may last in all, a response read slowly included.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// How long the connections open when shutdown begins may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for metrics_listen: {source}{hint}")]
pub struct BindError {
    /// The address as configured.
    address: String,
    /// What the system said.
    source: std::io::Error,
    /// What to do about the usual cause.
    hint: &'static str,
}

/// Takes the listener for `address` (`metrics_listen`), at start, before the process
/// changes anything: a port another process holds stops the start, naming the key.
pub async fn bind(address: &crate::HostPort) -> Result<TcpListener, BindError> {
    TcpListener::bind(address.addr()).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there: `ss -ltnp` names it; choose another port)"
            }
            std::io::ErrorKind::AddrNotAvailable => " (no interface of this host has that address)",
            std::io::ErrorKind::PermissionDenied => " (a port below 1024 needs privileges: choose one above)",
            _ => "",
        };
        BindError { address: address.to_string(), source, hint }
    })
}

/// Serves `listener` until `shutdown`, each scrape answered with what `render` returns:
/// the page, or an error's text (answered 500, so the scrape fails rather than shows a
/// page with families missing).
pub async fn serve<R, Fut>(listener: TcpListener, shutdown: CancellationToken, render: R)
where
    R: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    if let Ok(address) = listener.local_addr() {
        info!(%address, "metrics endpoint listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    // Refused connections are told at the first, then at most once a minute with the
    // count since: a flood's every connection must not become a log line.
    let mut refused = 0u64;
    let mut told: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to be given back
                    // rather than spin on the error.
                    warn!(error = %e, "metrics endpoint: accepting a connection failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if told.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                warn!(refused, limit = MAX_CONNECTIONS, "metrics endpoint: connections over the limit were closed");
                (refused, told) = (0, Some(tokio::time::Instant::now()));
            }
            drop(stream);
            continue;
        };
        let (render, shutdown) = (render.clone(), shutdown.clone());
        let span = tracing::info_span!("metrics", peer = %peer);
        connections.spawn(
            async move {
                exchange(stream, shutdown, render).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        debug!("metrics endpoint: connections still open at shutdown were cut off");
    }
}

/// One connection: one request and its answer, within [`EXCHANGE_LIMIT`].
async fn exchange<R, Fut>(stream: TcpStream, shutdown: CancellationToken, render: R)
where
    R: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let render = render.clone();
        async move { Ok::<_, Infallible>(answer(request.method(), request.uri().path(), render).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(false).max_buf_size(16 * 1024);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::time::timeout(EXCHANGE_LIMIT, async {
        tokio::select! {
            served = connection.as_mut() => served,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
        }
    })
    .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "metrics endpoint: connection ended"),
        Err(_) => debug!(limit = ?EXCHANGE_LIMIT, "metrics endpoint: connection cut off at its time limit"),
    }
}

/// The answer to `method` on `path`.
async fn answer<R, Fut>(method: &Method, path: &str, render: R) -> Response<Full<Bytes>>
where
    R: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
        response
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if path != PATH {
        return reply(StatusCode::NOT_FOUND, PLAIN, format!("not found: the metrics are at {PATH}\n"));
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            format!("{method} is not served: {PATH} answers GET and HEAD\n"),
        );
        response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match render().await {
        Ok(page) => reply(StatusCode::OK, CONTENT_TYPE, page),
        Err(e) => {
            warn!(error = %e, "metrics endpoint: the metrics could not be read");
            reply(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("the metrics could not be read: {e}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An endpoint on a loopback port, its page `page` (or the error).
    async fn endpoint(
        page: Result<&'static str, &'static str>,
    ) -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shutdown.clone(), move || async move {
            page.map(str::to_owned).map_err(str::to_owned)
        }));
        (addr, shutdown, task)
    }

    /// `request` sent whole, and the whole answer read to the server's close.
    async fn ask(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        answer
    }

    fn head_and_body(answer: &str) -> (&str, &str) {
        answer.split_once("\r\n\r\n").unwrap()
    }

    /// A port another process holds is refused naming the key, the address as
    /// configured and what to do: the message a failed start shows an operator.
    #[tokio::test]
    async fn a_port_taken_is_refused_naming_the_key_and_what_to_do() {
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = held.local_addr().unwrap().to_string();
        let err = bind(&at.parse().unwrap()).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot listen on {at} for metrics_listen: ")), "{err}");
        assert!(err.ends_with("(another process listens there: `ss -ltnp` names it; choose another port)"), "{err}");
        let free = bind(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(free.local_addr().unwrap().port(), 0);
    }

    #[tokio::test]
    async fn a_scrape_gets_the_page_in_the_text_format_and_the_connection_closes() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let answer = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n").await;
        let (head, body) = head_and_body(&answer);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("content-type: {CONTENT_TYPE}\r\n")), "{head}");
        assert!(head.contains("content-length: 11\r\n"), "{head}");
        assert_eq!(body, "tether_x 1\n");
        // A query string is the same page.
        let answer = ask(addr, "GET /metrics?name[]=tether_x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(head_and_body(&answer).1, "tether_x 1\n");
        // HEAD: the head alone.
        let answer = ask(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = head_and_body(&answer);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && body.is_empty(), "{answer}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn another_path_or_method_is_refused_naming_what_is_served() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let answer = ask(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = head_and_body(&answer);
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert_eq!(body, "not found: the metrics are at /metrics\n");
        let answer = ask(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").await;
        let (head, body) = head_and_body(&answer);
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{head}");
        assert!(head.contains("allow: GET, HEAD\r\n"), "{head}");
        assert_eq!(body, "POST is not served: /metrics answers GET and HEAD\n");
        // Not HTTP at all: closed with a 400, the endpoint still serving.
        let answer = ask(addr, "\x16\x03\x01 hello\r\n\r\n").await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert_eq!(head_and_body(&ask(addr, "GET /metrics HTTP/1.0\r\n\r\n").await).1, "tether_x 1\n");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// Only `/metrics` itself is the page: a path that merely begins with it is another
    /// path, refused, so no other URL comes to be relied upon.
    #[tokio::test]
    async fn a_path_that_only_begins_with_the_metrics_path_is_not_found() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        for path in ["/metricsx", "/metrics/", "/metrics/x"] {
            let answer = ask(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert!(head_and_body(&answer).0.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {answer}");
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// One request per connection: the answer is followed by the close at once, not
    /// by an idle connection held to the header deadline, so a scraper's connections
    /// do not fill the slots between scrapes.
    #[tokio::test(start_paused = true)]
    async fn the_connection_closes_after_its_one_answer() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let began = tokio::time::Instant::now();
        let mut answer = String::new();
        tokio::time::timeout(HEADER_TIMEOUT * 2, stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert_eq!(head_and_body(&answer).1, "tether_x 1\n");
        assert!(began.elapsed() < HEADER_TIMEOUT, "closed after {:?}", began.elapsed());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// A render that never ends (a status waiting on a lock held elsewhere) must not
    /// hold its connection, and its slot, for ever: the exchange is cut off at
    /// [`EXCHANGE_LIMIT`].
    #[tokio::test(start_paused = true)]
    async fn an_exchange_is_cut_off_at_its_time_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shutdown.clone(), std::future::pending::<Result<String, String>>));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let began = tokio::time::Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(EXCHANGE_LIMIT * 2, stream.read_to_end(&mut answer)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "cut off without an answer: {read:?} {answer:?}");
        assert!(began.elapsed() >= EXCHANGE_LIMIT, "cut off after {:?}", began.elapsed());
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 3, task).await.unwrap().unwrap();
    }

    /// At shutdown a connection that has sent nothing yet is closed at once, and the
    /// endpoint stops without using up its grace: the process's stop is not held up by
    /// an idle client.
    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_an_idle_connection_at_once() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Accepted in order: once a later connection is answered, the idle one is served.
        assert_eq!(head_and_body(&ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await).1, "tether_x 1\n");
        let began = tokio::time::Instant::now();
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 3, task).await.unwrap().unwrap();
        assert!(began.elapsed() < SHUTDOWN_GRACE, "stopped after {:?}", began.elapsed());
        let mut buf = Vec::new();
        let read = tokio::time::timeout(SHUTDOWN_GRACE, idle.read_to_end(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?} {buf:?}");
    }

    /// The media type is the text format's, version 0.0.4, spelt out here rather than
    /// read from the constant the code uses: a scraper reads another version's page by
    /// another parser, or refuses it.
    #[tokio::test]
    async fn the_page_is_served_as_the_text_format_version_0_0_4() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let answer = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = head_and_body(&answer).0;
        assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{head}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// A request's headers are read into a bounded buffer: a client sending more is
    /// refused rather than costing the process what it sends.
    #[tokio::test]
    async fn a_request_with_oversized_headers_is_refused() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let big = "a".repeat(64 * 1024);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close before it has read all of it: the write, and the read
        // after it, may then fail; what matters is that no page is answered.
        let _ = stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
        assert_eq!(head_and_body(&ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await).1, "tether_x 1\n");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// A page that cannot be read fails the scrape (a scraper then marks the target
    /// down) rather than answering a page with families missing.
    #[tokio::test]
    async fn a_page_that_cannot_be_read_is_a_500_with_the_reason() {
        let (addr, shutdown, task) = endpoint(Err("the store failed")).await;
        let answer = ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = head_and_body(&answer);
        assert!(head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{head}");
        assert_eq!(body, "the metrics could not be read: the store failed\n");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// Connections past the limit are closed at once, and the ones held open do not
    /// keep the endpoint from stopping; a client that never sends its headers is cut
    /// off at [`HEADER_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_bounded_in_number_and_time() {
        let (addr, shutdown, task) = endpoint(Ok("tether_x 1\n")).await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /metr").await.unwrap();
            held.push(stream);
        }
        // Each accepted and holding its slot before the next: the server answers none
        // of them, so the 17th is the one over the limit.
        tokio::task::yield_now().await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), over.read_to_end(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed at accept: {read:?} {buf:?}");
        // The held ones time out at the header deadline, with a 408 or a bare close.
        let mut first = held.remove(0);
        let read = tokio::time::timeout(HEADER_TIMEOUT * 2, first.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "cut off at the header deadline");
        // A slot is free again.
        assert_eq!(head_and_body(&ask(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await).1, "tether_x 1\n");
        shutdown.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 3, task).await.expect("stopped within its grace").unwrap();
    }
}
