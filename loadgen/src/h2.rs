//! HTTP/2 connections (the `h2` crate): prior-knowledge h2c for http://, ALPN `h2` for
//! https://. One connection carries `--streams` lanes, each with one stream in flight.
//!
//! `h2` is runtime-agnostic but speaks tokio's I/O traits, so the socket runs in monoio's
//! poll-io mode (`dataplane::pollio`); its connection task runs on the same worker thread (monoio tasks
//! need not be `Send`).

use std::{cell::RefCell, rc::Rc};

use bytes::Bytes;
use futures::future::join_all;
use h2::client::SendRequest;
use monoio::net::TcpStream;

use crate::{
    clock::now_ns,
    lane::{Lane, RunShared},
    stats::{ErrorKind, Recorder},
    target::Scheme,
};

/// Stream and connection receive windows: large enough that a 1 MiB response is not held
/// back by WINDOW_UPDATE round trips, as a browser or curl would configure.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

type Failure = (ErrorKind, String);

fn classify(e: &h2::Error) -> ErrorKind {
    if e.is_io() || e.is_go_away() || e.is_reset() {
        ErrorKind::Reset
    } else {
        ErrorKind::Parse
    }
}

/// Dials and handshakes one HTTP/2 connection; the connection task is spawned.
async fn connect(shared: &RunShared) -> Result<SendRequest<Bytes>, Failure> {
    let fail = |e: String| (ErrorKind::Connect, e);
    let tcp = TcpStream::connect_addr(shared.dialer.addr)
        .await
        .map_err(|e| fail(format!("connect {}: {e}", shared.dialer.addr)))?;
    tcp.set_nodelay(true)
        .map_err(|e| fail(format!("set TCP_NODELAY: {e}")))?;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    match &shared.dialer.tls {
        None => {
            let io = dataplane::pollio::tcp(tcp)
                .map_err(|e| fail(format!("switch the socket to poll-io: {e}")))?;
            handshake(&builder, io).await
        }
        Some(tls) => {
            let io = tls
                .handshake(tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake: {e}")))?;
            if io.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(fail("the server did not agree to HTTP/2 (ALPN h2)".into()));
            }
            handshake(&builder, io).await
        }
    }
}

/// The HTTP/2 handshake on an established (plain or TLS) stream; spawns the connection task.
async fn handshake<T>(builder: &h2::client::Builder, io: T) -> Result<SendRequest<Bytes>, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (send, conn) = builder
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| (ErrorKind::Connect, format!("HTTP/2 handshake: {e}")))?;
    monoio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Runs one connection's lanes until all are finished, redialling when the connection
/// breaks.
pub async fn run_connection(
    shared: &RunShared,
    mut lanes: Vec<Lane>,
    recorder: Rc<RefCell<Recorder>>,
) {
    let mut connect_failures = 0u32;
    // Bounded: every turn either finishes all lanes or follows a failure, and lanes finish at
    // the window's end whatever happens.
    loop {
        let send = match monoio::time::timeout(shared.timeout, connect(shared)).await {
            Ok(Ok(send)) => {
                connect_failures = 0;
                send
            }
            result => {
                let (kind, why) = match result {
                    Ok(Err(f)) => f,
                    _ => (ErrorKind::Connect, "connect timed out".to_owned()),
                };
                // A failed dial consumes one slot of the first lane's schedule, so it is
                // counted (or not) like a request and the lane still ends on time.
                match lanes[0].next(shared).await {
                    None => return,
                    Some(start) if start.counted => recorder.borrow_mut().error(kind, || why),
                    Some(_) => {}
                }
                lanes[0].backoff(connect_failures).await;
                connect_failures += 1;
                continue;
            }
        };
        let ends = join_all(
            lanes
                .iter_mut()
                .map(|lane| run_lane(shared, lane, send.clone(), &recorder)),
        )
        .await;
        if ends.iter().all(|broken| !broken) {
            return;
        }
    }
}

/// Runs one lane on `send` until its schedule ends (`false`) or the connection breaks
/// (`true`).
async fn run_lane(
    shared: &RunShared,
    lane: &mut Lane,
    send: SendRequest<Bytes>,
    recorder: &RefCell<Recorder>,
) -> bool {
    let target = &shared.target;
    let scheme = match target.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    while let Some(start) = lane.next(shared).await {
        let path = &target.paths[lane.url_index(target.paths.len())];
        let mut builder = http::Request::builder()
            .method(target.method.as_str())
            .uri(format!("{scheme}://{}{path}", target.authority));
        for (name, value) in &target.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = match builder.body(()) {
            Ok(r) => r,
            Err(e) => {
                if start.counted {
                    recorder
                        .borrow_mut()
                        .error(ErrorKind::Parse, || format!("building the request: {e}"));
                }
                continue;
            }
        };
        let result = monoio::time::timeout(
            shared.timeout,
            exchange(send.clone(), request, &target.body),
        )
        .await;
        let done_ns = now_ns();
        let outcome = result.unwrap_or_else(|_| {
            Err((
                ErrorKind::Timeout,
                format!("no complete response within {:?}", shared.timeout),
            ))
        });
        match outcome {
            Ok((status, rx, tx)) => {
                if start.counted {
                    recorder
                        .borrow_mut()
                        .response(start.from_ns, done_ns, status, rx, tx);
                } else {
                    recorder.borrow().uncounted_response();
                }
            }
            Err((kind, why)) => {
                if start.counted {
                    recorder.borrow_mut().error(kind, || why);
                }
                if kind == ErrorKind::Reset || kind == ErrorKind::Parse {
                    return true;
                }
            }
        }
    }
    false
}

/// One request on its own stream; returns status, body bytes received and sent.
async fn exchange(
    send: SendRequest<Bytes>,
    request: http::Request<()>,
    body: &Bytes,
) -> Result<(u16, u64, u64), Failure> {
    let h2err = |what: &str, e: h2::Error| (classify(&e), format!("{what}: {e}"));
    let mut send = send
        .ready()
        .await
        .map_err(|e| h2err("opening a stream", e))?;
    let (response, mut stream) = send
        .send_request(request, body.is_empty())
        .map_err(|e| h2err("sending the request", e))?;
    if !body.is_empty() {
        // h2 queues what the peer's window does not admit yet and sends it as WINDOW_UPDATEs
        // arrive; the response future completes only after the server read it.
        stream
            .send_data(body.clone(), true)
            .map_err(|e| h2err("sending the body", e))?;
    }
    let response = response
        .await
        .map_err(|e| h2err("reading the response", e))?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut rx = 0u64;
    // Bounded by the response body; the timeout around it ends a trickling server.
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| h2err("reading the body", e))?;
        rx += chunk.len() as u64;
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    Ok((status, rx, body.len() as u64))
}
