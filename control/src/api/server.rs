//! The control plane's HTTP/1.1 server: an accept loop over hyper with the limits axum::serve
//! cannot set: without them, idle and slow clients would hold connections forever.
//!
//! - **Connection cap**: a semaphore of `max_connections` slots taken at accept. A client over
//!   the cap gets an immediate `503` in the v4 envelope and a close, instead of piling up until
//!   the process runs out of descriptors; the answers themselves are bounded too
//!   ([`MAX_REFUSALS_IN_FLIGHT`]), past that an over-cap socket is closed at once.
//! - **Head timeout** (slowloris): a request head must be complete within `header_timeout` of
//!   its first byte (or of accept, for the first request).
//! - **Idle timeout**: a keep-alive connection with no request for `idle_timeout` is closed.
//! - **Request timeout**: a request (body included) must be answered within `request_timeout`,
//!   else `503` in the envelope; the snapshot long-poll, which waits up to `max_poll` by
//!   design, gets `max_poll + request_timeout`.
//!
//! hyper's own header timer also runs while a keep-alive connection waits for its next
//! request, which would tie the idle timeout to the head timeout; it is off, and one watchdog
//! per connection applies both from what the socket and the service report.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

use super::envelope::ApiError;
use super::{AppState, router};

/// At most this many over-cap clients are being answered `503` at once; more are closed
/// without an answer (each answer holds a descriptor for up to [`REFUSAL_LINGER`]). 64 was
/// measured too few: 56 over-cap keep-alive clients reconnecting at ~18,000/s saw 0.8% resets;
/// 256 none. With the default 512 connections the total stays under a 1024 descriptor limit.
pub const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refusal waits for the client's request bytes before closing, so the close does
/// not reset the connection before the client has read the `503`.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight requests (a long-poll is cut short after this).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The path of the snapshot long-poll, whose own limit is `max_poll + request_timeout`.
const LONG_POLL_PATH: &str = "/edge/v1/snapshot";

/// The server's limits; `ringway control serve` has a flag for each.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// What one connection's socket and service report to its watchdog. Times are milliseconds
/// since `epoch`, plus one so that 0 means "not set".
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the first byte of the next request head arrived (0: none since the last answer).
    head_started: AtomicU64,
    /// When the connection last became idle (accepted, or answered its last request).
    idle_since: AtomicU64,
    wake: Notify,
}

impl Activity {
    fn new() -> Self {
        // A new connection owes its first head at once: the head timeout runs from accept.
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(1),
            idle_since: AtomicU64::new(1),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn on_bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The deadline moved from idle to head: the watchdog must look again.
            self.wake.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
    }

    fn request_done(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// When the connection must be closed if nothing changes; `None` while a request runs
    /// (its own timeout applies).
    fn deadline(&self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, limit: Duration| self.epoch + Duration::from_millis(ms - 1) + limit;
        match self.head_started.load(Ordering::Acquire) {
            0 => Some((
                at(self.idle_since.load(Ordering::Acquire), limits.idle_timeout),
                "idle keep-alive connection closed",
            )),
            t => Some((
                at(t, limits.header_timeout),
                "request head not received in time; connection closed",
            )),
        }
    }
}

/// A socket that tells its [`Activity`] when bytes arrive.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_bytes_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The bytes of the over-cap answer.
fn over_cap_response(max: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "success": false,
        "errors": [{"code": 1000, "message": format!(
            "the control plane is serving its maximum of {max} connections; retry shortly"
        )}],
        "messages": [],
        "result": null,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers an over-cap client `503` and closes, reading (and dropping) what it sent for a
/// moment first so the close is not a reset that destroys the answer.
async fn refuse(mut stream: TcpStream, answer: Arc<Vec<u8>>) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => return Ok::<_, io::Error>(()),
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Serves one accepted connection until it ends, breaks a limit, or shutdown finishes it.
async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    limits: Arc<ServerLimits>,
    max_poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io: stream,
        activity: activity.clone(),
    });
    let svc_activity = activity.clone();
    let svc_limits = limits.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let activity = svc_activity.clone();
        let limit = if req.uri().path() == LONG_POLL_PATH {
            max_poll + svc_limits.request_timeout
        } else {
            svc_limits.request_timeout
        };
        async move {
            activity.request_started();
            let answer = tokio::time::timeout(limit, app.oneshot(req)).await;
            activity.request_done();
            Ok::<_, Infallible>(match answer {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::debug!(?limit, "request timed out");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        1000,
                        format!("the request was not answered within {limit:?}"),
                    )
                    .into_response()
                }
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&limits);
        let sleep_until = deadline.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            |(at, _)| at.into(),
        );
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "control-plane connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                if let Some((at, why)) = activity.deadline(&limits)
                    && at <= Instant::now()
                {
                    tracing::debug!("{why}");
                    return;
                }
            }
            _ = activity.wake.notified() => {}
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    // Finishes the request in flight, if any, then closes.
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Serves `state`'s API on `listener` within `limits` until `shutdown` resolves, then lets
/// requests in flight finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let answer = Arc::new(over_cap_response(max));
    let max_poll = state.max_poll;
    let app = router(state);
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: not fatal; a pause
                // keeps a persistent EMFILE from spinning the loop.
                tracing::warn!(error = %e, "control plane accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, limits, stop) = (app.clone(), limits.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    serve_connection(stream, app, limits, max_poll, stop).await;
                    drop(slot);
                });
            }
            Err(_) => match refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        refuse(stream, answer).await;
                        drop(permit);
                    });
                }
                Err(_) => drop(stream),
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(max as u32)).await;
    Ok(())
}
