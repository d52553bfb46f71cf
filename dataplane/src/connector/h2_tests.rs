//! The connector on the HTTP/2 transport against a test edge on loopback that plays the edge's
//! part as cloudflare's does: TLS server, HTTP/2 client, the control stream with a
//! `RegistrationServer`, then requests of each kind; and `auto`'s fallback when QUIC cannot
//! connect. The connector is the real one ([`Connector::start`], its workers, its origin client).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::origin::{OriginOptions, OriginService, OriginTarget};
use super::*;
use crate::h2stream::{H2Reader, H2Writer, send_all};
use crate::quic::tls::{EDGE_SERVER_NAMES, TlsMaterial, client_crypto};
use crate::wire::http2::{
    META_CLOUDFLARED, META_ORIGIN, RESPONSE_HEADERS, RESPONSE_META, SNI, UPGRADE,
    decode_response_headers,
};
use crate::wire::rpc::{
    ConnectionDetails, LocalConfigError, RawTunnelSecret, RegisterRequest, RegistrationError,
    RegistrationHandler, serve_registration,
};

const TUNNEL: Uuid = Uuid::from_u128(0x7e57);
const CONN: Uuid = Uuid::from_u128(0xc0);
/// A failure limit, never a pass condition.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct EdgeLog {
    /// Never answer `registerConnection` (the call is recorded, the answer never comes).
    silent: bool,
    registered: Vec<RegisterRequest>,
    unregistered: usize,
    local_configs: usize,
}

struct FakeEdge(Arc<Mutex<EdgeLog>>);

impl RegistrationHandler for FakeEdge {
    async fn register_connection(
        &self,
        request: RegisterRequest,
    ) -> Result<ConnectionDetails, RegistrationError> {
        let silent = {
            let mut log = self.0.lock().unwrap();
            log.registered.push(request);
            log.silent
        };
        if silent {
            futures::future::pending::<()>().await;
        }
        Ok(ConnectionDetails {
            uuid: CONN,
            location_name: "TST".into(),
            tunnel_is_remotely_managed: false,
        })
    }
    async fn unregister_connection(&self) {
        self.0.lock().unwrap().unregistered += 1;
    }
    async fn update_local_configuration(&self, _: Vec<u8>) -> Result<(), LocalConfigError> {
        self.0.lock().unwrap().local_configs += 1;
        Ok(())
    }
}

#[derive(Default)]
struct TestHooks {
    registered: Mutex<Vec<(u8, Protocol)>>,
    switches: Mutex<Vec<Switch>>,
    failures: Mutex<Vec<ConnectionError>>,
}

impl ConnectorHooks for TestHooks {
    fn registered(&self, index: u8, _: SocketAddr, protocol: Protocol, d: &ConnectionDetails) {
        assert_eq!(d.uuid, CONN);
        self.registered.lock().unwrap().push((index, protocol));
    }
    fn protocol_changed(&self, _: u8, switch: &Switch) {
        self.switches.lock().unwrap().push(switch.clone());
    }
    fn attempt_failed(&self, _: u8, _: SocketAddr, error: &ConnectionError, _: Duration) {
        self.failures.lock().unwrap().push(error.clone());
    }
}

/// Routes `dead.example.com` to a closed port, everything else to `live`.
struct Routes {
    live: Arc<OriginTarget>,
    dead: Arc<OriginTarget>,
}

impl IngressRouter for Routes {
    fn route(&self, host: &str, _: &str) -> Arc<OriginTarget> {
        if host == "dead.example.com" {
            self.dead.clone()
        } else {
            self.live.clone()
        }
    }
}

fn http_target(port: u16) -> Arc<OriginTarget> {
    Arc::new(OriginTarget {
        service: OriginService::Http {
            https: false,
            host: "127.0.0.1".into(),
            port,
        },
        options: OriginOptions::default(),
    })
}

/// An HTTP/1.1 origin answering 201 with two Set-Cookie fields and, as the body, the request
/// head it received followed by the request body.
fn echo_origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Bounded by the client: read the head, then Content-Length bytes.
                let head_end = loop {
                    let n = conn.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while got.len() < head_end + len {
                    let n = conn.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let answer = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    got.len()
                );
                let _ = conn.write_all(answer.as_bytes());
                let _ = conn.write_all(&got);
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Answer {
    status: u16,
    meta: Option<String>,
    fields: Vec<(String, Bytes)>,
    content_length: Option<String>,
    body: Vec<u8>,
}

/// What the test edge saw.
#[derive(Default)]
struct Observed {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    control_status: u16,
    http: Option<Answer>,
    config: Option<Answer>,
    websocket: Option<Answer>,
    dead: Option<Answer>,
}

async fn exchange(
    send: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: &'static [u8],
) -> Answer {
    let mut send = send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, body.is_empty()).unwrap();
    if !body.is_empty() {
        send_all(&mut stream, Bytes::from_static(body))
            .await
            .unwrap();
        stream.send_data(Bytes::new(), true).unwrap();
    }
    let response = response.await.unwrap();
    let field = |n: &str| {
        response
            .headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status().as_u16();
    let meta = field(RESPONSE_META);
    let fields = field(RESPONSE_HEADERS)
        .map(|v| decode_response_headers(v.as_bytes()).unwrap())
        .unwrap_or_default();
    let content_length = field("content-length");
    let mut recv = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Answer {
        status,
        meta,
        fields,
        content_length,
        body: out,
    }
}

fn request(method: &str, uri: &str, fields: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in fields {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "gave up waiting");
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The edge: accepts one TLS connection, registers it over the control stream, sends the
/// requests when `requests`, then waits for the unregistration.
fn run_edge(
    listener: TcpListener,
    material: TlsMaterial,
    log: Arc<Mutex<EdgeLog>>,
    requests: bool,
    observed: mpsc::Sender<Observed>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        crate::runtime::block_on(async move {
            let mut seen = Observed::default();
            let server =
                rustls::ServerConfig::builder_with_provider(crate::tls::default_provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(material.cert_chain.clone(), material.key.clone_key())
                    .unwrap();
            listener.set_nonblocking(true).unwrap();
            let listener = monoio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let tls = acceptor
                .accept(crate::pollio::tcp(tcp).unwrap())
                .await
                .unwrap();
            seen.sni = tls.get_ref().1.server_name().map(str::to_owned);
            seen.alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let (mut send, conn) = h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .handshake::<_, Bytes>(tls)
                .await
                .unwrap();
            monoio::spawn(async move {
                let _ = conn.await;
            });
            // The control stream: request body left open, the RPC on both bodies.
            let mut ready = send.clone().ready().await.unwrap();
            let (response, control_send) = ready
                .send_request(
                    request(
                        "GET",
                        "http://localhost:8080/",
                        &[(UPGRADE, "control-stream")],
                    ),
                    false,
                )
                .unwrap();
            let response = response.await.unwrap();
            seen.control_status = response.status().as_u16();
            let rpc = serve_registration(
                FakeEdge(log.clone()),
                H2Reader::new(response.into_body()),
                H2Writer::new(control_send),
            );
            monoio::spawn(async move {
                let _ = rpc.await;
            });
            wait_until(|| !log.lock().unwrap().registered.is_empty()).await;
            if requests {
                seen.http = Some(
                    exchange(
                        &mut send,
                        request(
                            "POST",
                            "http://app.example.com/echo?x=1",
                            &[("x-test", "1"), ("content-length", "5")],
                        ),
                        b"hello",
                    )
                    .await,
                );
                seen.config = Some(
                    exchange(
                        &mut send,
                        request(
                            "PUT",
                            "http://localhost:8080/ok",
                            &[(UPGRADE, "update-configuration")],
                        ),
                        br#"{"version":3,"config":{"ingress":[]}}"#,
                    )
                    .await,
                );
                seen.websocket = Some(
                    exchange(
                        &mut send,
                        request(
                            "GET",
                            "http://app.example.com/ws",
                            &[(UPGRADE, "websocket")],
                        ),
                        b"",
                    )
                    .await,
                );
                seen.dead = Some(
                    exchange(
                        &mut send,
                        request("GET", "http://dead.example.com/", &[]),
                        b"",
                    )
                    .await,
                );
            }
            observed.send(seen).unwrap();
            wait_until(|| log.lock().unwrap().unregistered > 0).await;
        });
    })
}

fn setup(
    edge: SocketAddr,
    protocol: ProtocolChoice,
    ca_pem: &[u8],
    ingress: Arc<dyn IngressRouter>,
    metrics: Arc<TunnelMetrics>,
    hooks: Arc<TestHooks>,
) -> ConnectorSetup {
    let quic = QuicConfig::default();
    let client_config = quic
        .client_config(client_crypto(ca_pem, &quic.alpn).unwrap())
        .unwrap();
    ConnectorSetup {
        quic,
        client_config,
        udp: UdpConfig::default(),
        udp_backend: UdpBackend::default(),
        bind_address: None,
        edges: vec![edge],
        server_name: crate::quic::DEFAULT_SERVER_NAME.to_owned(),
        protocol,
        fallback_after: protocol::FALLBACK_AFTER,
        h2_tls: edge_tls_config(ca_pem, false).unwrap(),
        ha_connections: 1,
        tunnel_id: TUNNEL,
        auth: TunnelAuth {
            account_tag: "acct".into(),
            tunnel_secret: RawTunnelSecret::new(vec![7u8; 32]),
        },
        options: ConnectionOptions {
            client_id: Uuid::from_u128(42),
            ..ConnectionOptions::default()
        },
        local_config: Some(b"{}".to_vec()),
        ingress,
        metrics,
        hooks,
        retries: 5,
        grace_period: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(5),
        write_stream_timeout: None,
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        workers: WorkersConfig {
            threads: 1,
            pin: false,
            name: "h2-test".into(),
            ..WorkersConfig::default()
        },
    }
}

fn material() -> (String, TlsMaterial) {
    let ca = TlsMaterial::generate_ca().unwrap();
    let m = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).unwrap();
    (ca.cert_pem(), m)
}

#[test]
fn connector_http2_registers_and_serves_each_request_kind() {
    http2_registers_and_serves_each_request_kind(false);
}

/// The same on monoio's legacy (epoll) driver: poll-io mode works on both drivers.
#[test]
fn connector_http2_on_the_legacy_driver_registers_and_serves_each_request_kind() {
    http2_registers_and_serves_each_request_kind(true);
}

fn http2_registers_and_serves_each_request_kind(force_legacy: bool) {
    let (ca, material) = material();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(EdgeLog::default()));
    let (tx, rx) = mpsc::channel();
    let edge_thread = run_edge(listener, material, log.clone(), true, tx);
    let metrics = Arc::new(TunnelMetrics::new());
    let hooks = Arc::new(TestHooks::default());
    let routes = Arc::new(Routes {
        live: http_target(echo_origin()),
        dead: http_target(closed_port()),
    });
    let mut connector_setup = setup(
        edge,
        ProtocolChoice::Only(Protocol::Http2),
        ca.as_bytes(),
        routes,
        metrics.clone(),
        hooks.clone(),
    );
    connector_setup.workers.force_legacy = force_legacy;
    let connector = Connector::start(connector_setup).unwrap();
    let seen = rx
        .recv_timeout(LIMIT)
        .expect("the edge finished its script");

    // TLS as cloudflared dials it: SNI h2.cftunnel.com, no ALPN.
    assert_eq!(seen.sni.as_deref(), Some(SNI));
    assert_eq!(seen.alpn, None);
    assert_eq!(seen.control_status, 200);
    {
        let log = log.lock().unwrap();
        let r = &log.registered[0];
        assert_eq!((r.tunnel_id, r.conn_index), (TUNNEL, 0));
        assert!(!r.options.replace_existing);
        assert_eq!(log.local_configs, 1);
    }
    // The edge saw the registration; the connector's hook runs once the answer arrives.
    crate::runtime::block_on(wait_until(|| !hooks.registered.lock().unwrap().is_empty()));
    assert_eq!(*hooks.registered.lock().unwrap(), [(0, Protocol::Http2)]);

    let http = seen.http.unwrap();
    assert_eq!(http.status, 201);
    assert_eq!(http.meta.as_deref(), Some(META_ORIGIN));
    let fields: Vec<(&str, &[u8])> = http
        .fields
        .iter()
        .map(|(n, v)| (n.as_str(), &v[..]))
        .collect();
    for want in [
        ("Content-Type", &b"text/plain"[..]),
        ("Set-Cookie", b"a=1"),
        ("Set-Cookie", b"b=2"),
    ] {
        assert!(fields.contains(&want), "{want:?} in {fields:?}");
    }
    let echoed = String::from_utf8(http.body).unwrap();
    assert!(
        echoed.starts_with("POST /echo?x=1 HTTP/1.1\r\n"),
        "{echoed}"
    );
    let lower = echoed.to_lowercase();
    assert!(lower.contains("\r\nhost: app.example.com\r\n"), "{echoed}");
    assert!(lower.contains("\r\nx-test: 1\r\n"), "{echoed}");
    assert!(!lower.contains(UPGRADE), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nhello"), "{echoed}");

    let config = seen.config.unwrap();
    assert_eq!(config.status, 200);
    assert_eq!(config.body, br#"{"lastAppliedVersion":3,"err":null}"#);

    // A WebSocket request reaches the origin with the upgrade restored; this origin declines
    // it with its ordinary answer (201 from this echo origin), which is passed on.
    let websocket = seen.websocket.unwrap();
    assert_eq!(websocket.status, 201);
    let echoed = String::from_utf8(websocket.body).unwrap().to_lowercase();
    assert!(echoed.starts_with("get /ws http/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("\r\nupgrade: websocket\r\n"), "{echoed}");
    assert!(echoed.contains("\r\nconnection: upgrade\r\n"), "{echoed}");
    assert!(
        echoed.contains("\r\nsec-websocket-version: 13\r\n"),
        "{echoed}"
    );
    let refused = seen.dead.unwrap();
    assert_eq!(refused.status, 502);
    assert_eq!(refused.meta.as_deref(), Some(META_CLOUDFLARED));
    assert_eq!(refused.content_length.as_deref(), Some("0"));
    assert!(refused.body.is_empty());

    assert_eq!(metrics.connection_protocol(0), Some(Protocol::Http2));
    let text = metrics.render_prometheus(&[]);
    assert!(
        text.contains("ringway_tunnel_connection_protocol{conn_index=\"0\",protocol=\"http2\"} 1"),
        "{text}"
    );
    assert!(metrics.total_requests() >= 2);
    assert_eq!(metrics.ha_connections(), 1);

    // Graceful shutdown unregisters over the control stream, then the connector ends.
    connector.shutdown();
    edge_thread.join().unwrap();
    connector.join().unwrap();
    assert_eq!(log.lock().unwrap().unregistered, 1);
    assert_eq!(metrics.ha_connections(), 0);
    assert_eq!(metrics.connection_protocol(0), None);
}

#[test]
fn connector_auto_falls_back_to_http2_when_quic_cannot_connect() {
    let (ca, material) = material();
    // Only TCP listens on this port: QUIC to it gets no answer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(EdgeLog::default()));
    let (tx, rx) = mpsc::channel();
    let edge_thread = run_edge(listener, material, log.clone(), false, tx);
    let metrics = Arc::new(TunnelMetrics::new());
    let hooks = Arc::new(TestHooks::default());
    let connector = Connector::start(setup(
        edge,
        ProtocolChoice::Auto,
        ca.as_bytes(),
        Arc::new(SingleOrigin(http_target(closed_port()))),
        metrics.clone(),
        hooks.clone(),
    ))
    .unwrap();
    let seen = rx.recv_timeout(LIMIT).expect("registered over HTTP/2");
    assert_eq!(seen.control_status, 200);
    let switches = hooks.switches.lock().unwrap().clone();
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0].to, Protocol::Http2);
    assert_eq!(switches[0].attempts, protocol::FALLBACK_AFTER);
    eprintln!(
        "fell back to http2 after {:.2}s: {}",
        switches[0].after.as_secs_f64(),
        switches[0].reason
    );
    // The edge saw the registration; the connector's hook runs once the answer arrives.
    crate::runtime::block_on(wait_until(|| !hooks.registered.lock().unwrap().is_empty()));
    assert_eq!(*hooks.registered.lock().unwrap(), [(0, Protocol::Http2)]);
    assert_eq!(metrics.connection_protocol(0), Some(Protocol::Http2));
    connector.shutdown();
    edge_thread.join().unwrap();
    connector.join().unwrap();
}

#[test]
fn an_edge_that_never_answers_the_registration_fails_the_attempt_after_the_rpc_timeout() {
    let (ca, material) = material();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(EdgeLog {
        silent: true,
        ..EdgeLog::default()
    }));
    let (tx, _rx) = mpsc::channel();
    let _edge_thread = run_edge(listener, material, log.clone(), false, tx);
    let metrics = Arc::new(TunnelMetrics::new());
    let hooks = Arc::new(TestHooks::default());
    let mut s = setup(
        edge,
        ProtocolChoice::Only(Protocol::Http2),
        ca.as_bytes(),
        Arc::new(SingleOrigin(http_target(closed_port()))),
        metrics,
        hooks.clone(),
    );
    s.rpc_timeout = Duration::from_millis(300);
    let connector = Connector::start(s).unwrap();
    crate::runtime::block_on(wait_until(|| !hooks.failures.lock().unwrap().is_empty()));
    let failure = hooks.failures.lock().unwrap()[0].clone();
    assert!(
        matches!(failure, ConnectionError::RegistrationTimeout { after, .. } if after == Duration::from_millis(300)),
        "{failure}"
    );
    assert!(hooks.registered.lock().unwrap().is_empty());
    assert_eq!(
        log.lock().unwrap().registered.len(),
        1,
        "the call reached the edge"
    );
    connector.shutdown();
    connector.join().unwrap();
}
