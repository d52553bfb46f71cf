//! The connector's origin side: what a request is proxied to ([`OriginTarget`]) and the
//! per-worker HTTP/1.1 and HTTP/2 client that does it ([`OriginClient`]).
//!
//! # Layout
//!
//! - `mod.rs`: the public types ([`OriginTarget`], [`OriginRequest`], [`RequestBody`],
//!   [`ResponseSink`], [`ProxyError`]) and [`OriginClient::proxy`]: choose the service,
//!   plan the request, take a pooled connection or dial one, retry once if a pooled one
//!   turns out dead.
//! - `exchange.rs`: one request/response on one connection and its verdict (reuse, retry,
//!   fail); the response head and body are read with the shared codec
//!   ([`crate::http::ResponseHeadReader`], [`crate::http::BodyDecoder`]) and streamed to the
//!   sink with chunked framing removed.
//! - `request.rs`: request head (hop-by-hop fields dropped, Host chosen, injection
//!   checks), body framing decision, sending the body (Content-Length, chunked, or
//!   buffered for `disableChunkedEncoding`).
//! - `conn.rs`: connect (TCP or unix, connect timeout), the TLS adapter over rustls with
//!   owned buffers (TLS timeout), reads into `BytesMut`, vectored writes of `Bytes`.
//! - `upgrade.rs`: an upgrade's connection after the origin's 101: both directions at once.
//! - `http2.rs`: `http2Origin` towards TLS origins that choose `h2` by ALPN: one multiplexed
//!   connection per origin per worker (the `h2` crate), request mapping, both bodies under
//!   HTTP/2 flow control.
//! - `pool.rs`: keep-alive pools keyed by origin address and TLS identity, LIFO, bounded, expiry
//!   checked on use, dead idle connections detected with a non-blocking peek.
//! - `tls.rs`: rustls client configurations (webpki roots + `caPool`, `noTLSVerify`),
//!   [`OriginConfigError`].
//! - `builtin.rs`: `http_status:NNN` and `hello_world`, answered without a connection.
//! - `tests/`: real local origins (std threads, scripted per test) over TCP, unix and TLS.
//!
//! # Model
//!
//! The connector hands one decoded `ConnectRequest` per QUIC data stream to
//! [`OriginClient::proxy`] along with the stream's halves behind two small traits, so this
//! module never sees QUIC and is tested with in-memory bodies. Everything is
//! single-threaded per worker (monoio): the client uses `RefCell`, its futures are `!Send`,
//! and [`OriginTarget`] (configuration) is the only thing shared across workers.
//!
//! The exchange is sequential: the whole request is sent, then the response is read. That
//! keeps one connection state machine; an origin that answers before reading the body and
//! then closes is handled by reading its answer when the write fails. One that answers
//! early and neither reads nor closes stalls the upload until the caller drops the
//! request (a full-duplex exchange would need the connection split in two halves, which
//! the TLS adapter does not do).

mod builtin;
mod conn;
mod exchange;
mod http2;
mod pool;
mod request;
mod tls;
mod upgrade;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use conn::{Negotiated, OriginAddr, TlsParams};
use exchange::{ExchangeError, Exchanged};
use http2::Http2Pool;
use pool::{Pool, PoolKey};
use request::ReqBody;
use tls::TlsKey;

pub use tls::OriginConfigError;

/// One configured origin: built once per ingress rule by the control crate, shared as
/// `Arc` across workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTarget {
    pub service: OriginService,
    pub options: OriginOptions,
}

/// What an ingress rule's `service` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginService {
    /// `http://` or `https://` origin; `host` is the bare host (SNI, default Host), `port`
    /// always filled (80/443 by default).
    Http {
        https: bool,
        host: String,
        port: u16,
    },
    /// `unix:/path` (`tls` false) or `unix+tls:/path`.
    Unix { path: PathBuf, tls: bool },
    /// `http_status:NNN`: answer NNN with an empty body without contacting anything.
    HttpStatus(u16),
    /// `hello_world`: a built-in page that shows the request.
    HelloWorld,
}

/// Per-rule origin settings (cloudflared's `originRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginOptions {
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    /// Idle pooled connections kept per origin per worker; 0 disables keep-alive.
    pub keep_alive_connections: u32,
    pub keep_alive_timeout: Duration,
    /// Overrides the Host sent to the origin.
    pub http_host_header: Option<String>,
    /// TLS server name (SNI and verification) override.
    pub origin_server_name: Option<String>,
    /// Extra PEM CA file trusted for TLS origins.
    pub ca_pool: Option<PathBuf>,
    pub no_tls_verify: bool,
    /// Send request bodies of unknown length with a Content-Length (buffered, at most
    /// 64 MiB) instead of chunked.
    pub disable_chunked_encoding: bool,
    /// Use the request's Host as the TLS server name.
    pub match_sni_to_host: bool,
    /// Offer HTTP/2 to TLS origins (ALPN `h2`, then `http/1.1`) and speak it when the origin
    /// picks it, as Go's `ForceAttemptHTTP2` does; plain-text origins stay HTTP/1.1.
    pub http2_origin: bool,
}

impl Default for OriginOptions {
    /// cloudflared's defaults.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            tls_timeout: Duration::from_secs(10),
            keep_alive_connections: 100,
            keep_alive_timeout: Duration::from_secs(90),
            http_host_header: None,
            origin_server_name: None,
            ca_pool: None,
            no_tls_verify: false,
            disable_chunked_encoding: false,
            match_sni_to_host: false,
            http2_origin: false,
        }
    }
}

impl OriginService {
    /// Parses an ingress `service` value: `http://host[:port][/…]`, `https://…`,
    /// `unix:/path`, `unix+tls:/path`, `http_status:NNN`, `hello_world`.
    pub fn parse(service: &str) -> Result<Self, OriginConfigError> {
        let invalid = |why: &str| OriginConfigError::InvalidService {
            service: service.to_owned(),
            reason: why.to_owned(),
        };
        if service == "hello_world" {
            return Ok(Self::HelloWorld);
        }
        if let Some(code) = service.strip_prefix("http_status:") {
            let code: u16 = code
                .parse()
                .map_err(|_| invalid("status is not a number"))?;
            if !(100..=999).contains(&code) {
                return Err(invalid("status out of range"));
            }
            return Ok(Self::HttpStatus(code));
        }
        for (prefix, tls) in [("unix+tls:", true), ("unix:", false)] {
            if let Some(path) = service.strip_prefix(prefix) {
                if path.is_empty() {
                    return Err(invalid("empty socket path"));
                }
                return Ok(Self::Unix {
                    path: PathBuf::from(path),
                    tls,
                });
            }
        }
        let (https, rest) = if let Some(r) = service.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = service.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(invalid("unknown scheme"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = crate::http::Authority::parse(authority);
        let port = match authority.port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(_) => authority
                .port_number()
                .ok_or_else(|| invalid("invalid port"))?,
        };
        let host = authority.host;
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        Ok(Self::Http {
            https,
            host: host.to_owned(),
            port,
        })
    }

    fn uses_tls(&self) -> bool {
        matches!(
            self,
            Self::Http { https: true, .. } | Self::Unix { tls: true, .. }
        )
    }
}

impl OriginTarget {
    /// Loads what can fail at configuration time (the TLS trust settings), so a bad
    /// `caPool` is reported when the ingress rules are read, not on the first request.
    pub fn validate(&self) -> Result<(), OriginConfigError> {
        if self.service.uses_tls() {
            self.options.load_tls()?;
        }
        Ok(())
    }
}

/// The request as the edge described it (`ConnectRequest` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    pub method: String,
    /// The full URL from `dest`; the origin gets its path and query.
    pub dest: String,
    /// `HttpHost` metadata.
    pub host: String,
    /// One entry per `HttpHeader:<Name>` value, in order, values as sent (may be obs-text).
    pub headers: Vec<(String, Bytes)>,
    /// The protocol the client asked to switch to (a WebSocket request: `websocket`).
    /// `Connection: Upgrade` and `Upgrade` are sent to the origin, and after its 101 the
    /// stream's bytes move both ways until either side ends.
    pub upgrade: Option<String>,
}

/// The origin's response head, every field as received (hop-by-hop included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginResponse {
    pub status: u16,
    /// Values as the origin sent them (may be obs-text).
    pub headers: Vec<(String, Bytes)>,
}

/// Where request body bytes come from (the QUIC stream in production).
pub trait RequestBody {
    /// The next piece of the body; `Ok(None)` at its end.
    fn next_chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>>;
}

/// Where the answer goes. `send_head` is called exactly once, before any `send_body`.
pub trait ResponseSink {
    fn send_head(&mut self, head: OriginResponse) -> impl Future<Output = io::Result<()>>;
    fn send_body(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>>;
}

/// Why a request could not be proxied. Before the head reached the sink
/// (`!head_sent()`), the caller answers 502 with `to_string()` as the cause; after, it can
/// only reset the stream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("origin {addr} connect failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("origin {addr} connect timed out after {}s", timeout.as_secs_f64())]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("origin {addr} TLS failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{0}")]
    TlsConfig(#[from] OriginConfigError),
    #[error("origin sent a malformed response: {cause}")]
    Malformed {
        cause: MalformedResponse,
        head_sent: bool,
    },
    #[error("origin closed the connection {detail}")]
    OriginClosed { detail: String, head_sent: bool },
    #[error("origin connection failed {what}: {source}")]
    OriginIo {
        what: &'static str,
        source: io::Error,
        head_sent: bool,
    },
    #[error("client request body read failed: {source}")]
    RequestBody { source: io::Error },
    #[error("client request invalid: {reason}")]
    BadRequest { reason: String },
    #[error("client response sink failed: {source}")]
    Sink { source: io::Error, head_sent: bool },
}

/// What was wrong with the origin's answer: its head or its body's framing. Either way the
/// origin connection is closed, and the request is not retried (the origin answered).
#[derive(Debug, thiserror::Error)]
pub enum MalformedResponse {
    #[error("{0}")]
    Head(#[from] crate::http::ResponseHeadError),
    #[error("chunked body: {0}")]
    Body(#[from] crate::http::BodyError),
}

impl ProxyError {
    /// Whether the response head had already reached the sink when this happened.
    pub fn head_sent(&self) -> bool {
        match self {
            Self::Malformed { head_sent, .. }
            | Self::OriginClosed { head_sent, .. }
            | Self::OriginIo { head_sent, .. }
            | Self::Sink { head_sent, .. } => *head_sent,
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Tls { .. }
            | Self::TlsConfig(_)
            | Self::RequestBody { .. }
            | Self::BadRequest { .. } => false,
        }
    }
}

/// Per-worker origin client: keep-alive pools and cached TLS configurations. `!Send`; one
/// per worker thread.
#[derive(Debug, Default)]
pub struct OriginClient {
    pool: RefCell<Pool>,
    /// `http2Origin` origins that chose HTTP/2: one multiplexed connection each.
    http2_pool: RefCell<Http2Pool>,
    /// Cleartext `http2Origin` origins that did not speak h2c: spoken to in HTTP/1.1 from
    /// then on (per worker, for the process's life).
    no_h2c: RefCell<HashSet<OriginAddr>>,
    tls_configs: RefCell<HashMap<TlsKey, Arc<rustls::ClientConfig>>>,
}

/// Whether the request carries a body (cloudflared's rule: a non-zero Content-Length or a
/// chunked Transfer-Encoding).
fn request_has_body(req: &OriginRequest) -> bool {
    req.headers.iter().any(|(n, v)| {
        (n.eq_ignore_ascii_case("content-length") && v.trim_ascii() != b"0")
            || (n.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"))
    })
}

impl OriginClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Idle pooled connections across all origins.
    pub fn idle_connections(&self) -> usize {
        self.pool.borrow().idle_count()
    }

    /// HTTP/2 origin connections kept for reuse.
    pub fn http2_connections(&self) -> usize {
        self.http2_pool.borrow().len()
    }

    fn tls_config(&self, opts: &OriginOptions) -> Result<Arc<rustls::ClientConfig>, ProxyError> {
        let key = TlsKey::of(opts);
        if let Some(c) = self.tls_configs.borrow().get(&key) {
            return Ok(c.clone());
        }
        let config = opts.load_tls()?;
        self.tls_configs.borrow_mut().insert(key, config.clone());
        Ok(config)
    }

    /// Proxies one request. `Ok(())` once the whole response reached `sink`.
    pub async fn proxy(
        &self,
        target: &OriginTarget,
        req: OriginRequest,
        mut body: impl RequestBody,
        mut sink: impl ResponseSink,
    ) -> Result<(), ProxyError> {
        let opts = &target.options;
        let (addr, origin_host) = match &target.service {
            OriginService::HttpStatus(status) => {
                return builtin::http_status(*status, &mut sink).await;
            }
            OriginService::HelloWorld => {
                let has_body = request_has_body(&req);
                return builtin::hello_world(&req, &mut body, has_body, &mut sink).await;
            }
            OriginService::Http { host, port, .. } => (
                OriginAddr::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                Some(host.as_str()),
            ),
            OriginService::Unix { path, .. } => (OriginAddr::Unix(path.clone()), None),
        };
        let mut plan = request::plan(
            &req,
            opts.http_host_header.as_deref(),
            !opts.disable_chunked_encoding,
            opts.keep_alive_connections > 0,
        )?;
        if let ReqBody::Buffered(chunks) = &mut plan.body {
            *chunks = request::buffer_body(&mut body).await?;
        }

        let tls = if target.service.uses_tls() {
            // cloudflared's order: originServerName, else the request's Host when
            // matchSNIToHost, else the origin's own host (unix sockets have none: Host).
            let name = match (&opts.origin_server_name, origin_host) {
                (Some(name), _) => name.clone(),
                (None, Some(host)) if !opts.match_sni_to_host => host.to_owned(),
                _ => plan.host.clone(),
            };
            let server_name = tls::server_name(&name).ok_or_else(|| ProxyError::Tls {
                addr: addr.to_string(),
                reason: format!("invalid server name {name:?}"),
            })?;
            Some((name, server_name, self.tls_config(opts)?))
        } else {
            None
        };
        let key = PoolKey {
            addr,
            tls: tls
                .as_ref()
                .map(|(name, ..)| (name.clone(), TlsKey::of(opts))),
        };

        if plan.upgrade {
            let server_name = tls.map(|(_, server_name, _)| server_name);
            return self
                .proxy_upgrade(target, &key, server_name, &plan, body, sink)
                .await;
        }

        // HTTP/2 over TLS is offered by ALPN, as Go's transport does. A cleartext origin is
        // tried with h2c (prior knowledge), which cloudflared never does; one that turns out
        // to speak only HTTP/1.1 is remembered and spoken to in HTTP/1.1, as cloudflared
        // would have.
        let mut http2 =
            opts.http2_origin && (tls.is_some() || !self.no_h2c.borrow().contains(&key.addr));

        // Bound: two attempts. A pooled connection the origin closed while idle (a race the
        // checkout peek cannot always win) is replaced once by a fresh one; a fresh
        // connection's failure is final.
        for attempt in 0..2 {
            if http2 && attempt == 0 {
                let pooled = self.http2_pool.borrow_mut().checkout(
                    &key,
                    Instant::now(),
                    opts.keep_alive_timeout,
                );
                if let Some(send) = pooled {
                    let request = http2::build_request(&req, &plan)?;
                    match http2::exchange(send, request, &plan.body, &mut body, &mut sink).await {
                        Ok(()) => return Ok(()),
                        Err(ExchangeError::Retryable(e)) => {
                            self.http2_pool.borrow_mut().remove(&key);
                            tracing::debug!(
                                "pooled HTTP/2 origin connection refused the request ({e}); retrying on a new one"
                            );
                            continue;
                        }
                        Err(ExchangeError::Fatal(e)) => return Err(e),
                    }
                }
            }
            let pooled = if attempt == 0 {
                self.pool
                    .borrow_mut()
                    .checkout(&key, Instant::now(), opts.keep_alive_timeout)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let params = tls.as_ref().map(|(_, server_name, config)| TlsParams {
                        config: config.clone(),
                        server_name: server_name.clone(),
                    });
                    match self.dial(&key.addr, params, http2, opts).await? {
                        Negotiated::Http1(c) => c,
                        Negotiated::Http2 { io, h2c } => {
                            let confirm_within = h2c.then_some(opts.tls_timeout);
                            let send =
                                match http2::handshake(io, &key.addr.to_string(), confirm_within)
                                    .await
                                {
                                    Ok(send) => send,
                                    Err(e) if h2c => {
                                        // Nothing of the request was sent: try HTTP/1.1.
                                        tracing::info!(
                                            origin = %key.addr,
                                            "origin does not speak h2c ({e}); using HTTP/1.1"
                                        );
                                        self.no_h2c.borrow_mut().insert(key.addr.clone());
                                        http2 = false;
                                        continue;
                                    }
                                    Err(e) => return Err(e),
                                };
                            if opts.keep_alive_connections > 0 {
                                self.http2_pool.borrow_mut().insert(
                                    key.clone(),
                                    send.clone(),
                                    Instant::now(),
                                );
                            }
                            let request = http2::build_request(&req, &plan)?;
                            return http2::exchange(
                                send, request, &plan.body, &mut body, &mut sink,
                            )
                            .await
                            .map_err(ExchangeError::into_inner);
                        }
                    }
                }
            };
            match exchange::exchange(&mut conn, &plan, &mut body, &mut sink).await {
                Ok(Exchanged::Done { reusable: true }) => {
                    self.pool.borrow_mut().checkin(
                        key,
                        conn,
                        Instant::now(),
                        opts.keep_alive_connections,
                        opts.keep_alive_timeout,
                    );
                    return Ok(());
                }
                Ok(Exchanged::Done { reusable: false }) => return Ok(()),
                // Only upgrade plans switch; they take `proxy_upgrade`.
                Ok(Exchanged::Switched(_)) => return Ok(()),
                Err(ExchangeError::Retryable(e)) if reused => {
                    tracing::debug!("pooled origin connection failed ({e}); retrying on a new one");
                }
                Err(e) => return Err(e.into_inner()),
            }
        }
        Err(ProxyError::OriginClosed {
            detail: "before sending a response".to_owned(),
            head_sent: false,
        })
    }

    /// An upgrade request (a WebSocket) on a new connection of its own, never pooled: HTTP/1.1
    /// (TLS, when `server_name` is given, offers only `http/1.1`), and after the origin's 101
    /// the stream is piped both ways.
    async fn proxy_upgrade(
        &self,
        target: &OriginTarget,
        key: &PoolKey,
        server_name: Option<rustls::pki_types::ServerName<'static>>,
        plan: &request::Plan,
        mut body: impl RequestBody,
        mut sink: impl ResponseSink,
    ) -> Result<(), ProxyError> {
        let opts = &target.options;
        let params = match server_name {
            Some(server_name) => {
                let http1_only = OriginOptions {
                    http2_origin: false,
                    ..opts.clone()
                };
                Some(TlsParams {
                    config: self.tls_config(&http1_only)?,
                    server_name,
                })
            }
            None => None,
        };
        let mut conn =
            conn::connect_poll(&key.addr, params, opts.connect_timeout, opts.tls_timeout).await?;
        match exchange::exchange(&mut conn, plan, &mut body, &mut sink)
            .await
            .map_err(ExchangeError::into_inner)?
        {
            Exchanged::Done { .. } => Ok(()),
            Exchanged::Switched(pending) => {
                upgrade::pipe(conn, pending, &mut body, &mut sink).await
            }
        }
    }

    /// A new connection: HTTP/1.1, or for `http2Origin` origins HTTP/2: over TLS whatever
    /// the origin chose by ALPN, in cleartext a connection to try h2c on.
    async fn dial(
        &self,
        addr: &OriginAddr,
        tls: Option<TlsParams>,
        http2: bool,
        opts: &OriginOptions,
    ) -> Result<Negotiated, ProxyError> {
        match tls {
            Some(params) if http2 => {
                conn::connect_negotiating(addr, params, opts.connect_timeout, opts.tls_timeout)
                    .await
            }
            None if http2 => conn::connect_h2c(addr, opts.connect_timeout).await,
            tls => conn::connect(addr, tls, opts.connect_timeout, opts.tls_timeout)
                .await
                .map(Negotiated::Http1),
        }
    }
}

// Configuration crosses workers; the client does not.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<OriginTarget>();
};
