//! Tests of the registration RPC and `updateConfiguration` over capnp-rpc.

use super::*;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::task::Waker;

/// One direction of an in-memory byte pipe.
#[derive(Default)]
struct PipeState {
    buf: VecDeque<u8>,
    closed: bool,
    waker: Option<Waker>,
}

struct PipeReader(Rc<RefCell<PipeState>>);
struct PipeWriter(Rc<RefCell<PipeState>>);

fn pipe() -> (PipeReader, PipeWriter) {
    let state = Rc::new(RefCell::new(PipeState::default()));
    (PipeReader(state.clone()), PipeWriter(state))
}

/// Two pipes: (client reader, client writer), (server reader, server writer).
fn duplex() -> ((PipeReader, PipeWriter), (PipeReader, PipeWriter)) {
    let (a_r, a_w) = pipe();
    let (b_r, b_w) = pipe();
    ((a_r, b_w), (b_r, a_w))
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        if s.buf.is_empty() {
            if s.closed {
                return Poll::Ready(Ok(0));
            }
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.len().min(s.buf.len());
        for (slot, b) in out.iter_mut().zip(s.buf.drain(..n)) {
            *slot = b;
        }
        Poll::Ready(Ok(n))
    }
}

impl PipeWriter {
    fn wake(s: &mut PipeState) {
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        if s.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        s.buf.extend(data);
        Self::wake(&mut s);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        s.closed = true;
        Self::wake(&mut s);
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.closed = true;
        Self::wake(&mut s);
    }
}

const TUNNEL: Uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788);
const CONN: Uuid = Uuid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111);

#[derive(Default)]
struct EdgeState {
    registered: BTreeSet<u8>,
    requests: Vec<RegisterRequest>,
    unregistered: usize,
    configs: Vec<Vec<u8>>,
}

/// What an edge does: tunnel id + SHA-256 of the secret, EDUPCONN on a duplicate index.
struct TestEdge {
    tunnel_id: Uuid,
    secret_sha256: [u8; 32],
    state: Rc<RefCell<EdgeState>>,
}

impl RegistrationHandler for TestEdge {
    async fn register_connection(
        &self,
        request: RegisterRequest,
    ) -> Result<ConnectionDetails, RegistrationError> {
        let hash: [u8; 32] = Sha256::digest(request.auth.tunnel_secret.expose()).into();
        if request.tunnel_id != self.tunnel_id || hash != self.secret_sha256 {
            return Err(RegistrationError::permanent(
                "Unauthorized: invalid tunnel secret",
            ));
        }
        let mut state = self.state.borrow_mut();
        if !state.registered.insert(request.conn_index) {
            return Err(RegistrationError::duplicate_connection());
        }
        state.requests.push(request);
        Ok(ConnectionDetails {
            uuid: CONN,
            location_name: "LOC1".into(),
            tunnel_is_remotely_managed: false,
        })
    }

    async fn unregister_connection(&self) {
        self.state.borrow_mut().unregistered += 1;
    }

    async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), LocalConfigError> {
        if config.is_empty() {
            return Err(LocalConfigError::Rejected {
                reason: "empty configuration".into(),
            });
        }
        if config == b"busy" {
            return Err(LocalConfigError::Unavailable {
                reason: "busy".into(),
            });
        }
        self.state.borrow_mut().configs.push(config);
        Ok(())
    }
}

fn secret() -> RawTunnelSecret {
    RawTunnelSecret::new((0u8..32).collect::<Vec<_>>())
}

fn auth() -> TunnelAuth {
    TunnelAuth {
        account_tag: "acct".into(),
        tunnel_secret: secret(),
    }
}

fn options() -> ConnectionOptions {
    ConnectionOptions {
        client_id: Uuid::from_u128(42),
        features: vec!["serialized_headers".into(), "support_datagram_v3".into()],
        version: "2026.8.0".into(),
        arch: "linux_amd64".into(),
        origin_local_ip: Some("192.168.1.5".parse().unwrap()),
        replace_existing: false,
        compression_quality: 0,
        num_previous_attempts: 2,
    }
}

/// The test edge for tunnel `TUNNEL` and `secret()`, recording into `state`.
fn test_edge(state: Rc<RefCell<EdgeState>>) -> TestEdge {
    TestEdge {
        tunnel_id: TUNNEL,
        secret_sha256: Sha256::digest(secret().expose()).into(),
        state,
    }
}

/// `handler` serving on one end of a duplex, a client on the other, both spawned on `pool`.
fn spawn_registration(
    pool: &LocalPool,
    handler: impl RegistrationHandler + 'static,
) -> RegistrationClient {
    let ((cr, cw), (sr, sw)) = duplex();
    let server = serve_registration(handler, sr, sw);
    let (client, conn) = registration_client(cr, cw);
    spawn_both_ends(pool, server, conn);
    client
}

/// Runs both ends of an RPC duplex on `pool` until they end.
fn spawn_both_ends(pool: &LocalPool, server: RpcConnection, client: RpcConnection) {
    let spawner = pool.spawner();
    spawner
        .spawn_local(async move { drop(server.await) })
        .unwrap();
    spawner
        .spawn_local(async move { drop(client.await) })
        .unwrap();
}

/// The test edge and a client, both spawned on `pool`.
fn setup(pool: &LocalPool) -> (RegistrationClient, Rc<RefCell<EdgeState>>) {
    let state = Rc::new(RefCell::new(EdgeState::default()));
    (spawn_registration(pool, test_edge(state.clone())), state)
}

#[test]
fn wire_rpc_secret_debug_is_masked() {
    let a = auth();
    let printed = format!("{a:?}");
    assert!(printed.contains("MASKED"), "{printed}");
    assert!(!printed.contains("31"), "{printed}");
}

#[test]
fn wire_rpc_register_success_returns_details() {
    let mut pool = LocalPool::new();
    let (client, state) = setup(&pool);
    let details = pool
        .run_until(client.register_connection(&auth(), TUNNEL, 0, &options()))
        .unwrap();
    assert_eq!(
        details,
        ConnectionDetails {
            uuid: CONN,
            location_name: "LOC1".into(),
            tunnel_is_remotely_managed: false
        }
    );
    let state = state.borrow();
    let req = &state.requests[0];
    assert_eq!(req.auth, auth());
    assert_eq!(req.tunnel_id, TUNNEL);
    assert_eq!(req.conn_index, 0);
    assert_eq!(req.options, options());
}

#[test]
fn wire_rpc_wrong_secret_is_refused_with_cause() {
    let mut pool = LocalPool::new();
    let (client, state) = setup(&pool);
    let mut bad = auth();
    bad.tunnel_secret = RawTunnelSecret::new(vec![9u8; 32]);
    match pool.run_until(client.register_connection(&bad, TUNNEL, 0, &options())) {
        Err(RegisterError::Refused(e)) => {
            assert!(e.cause.contains("Unauthorized"), "{e:?}");
            assert!(!e.should_retry);
        }
        other => panic!("{other:?}"),
    }
    // Wrong tunnel id too.
    let other_tunnel = Uuid::from_u128(7);
    assert!(matches!(
        pool.run_until(client.register_connection(&auth(), other_tunnel, 0, &options())),
        Err(RegisterError::Refused(_))
    ));
    assert!(state.borrow().registered.is_empty());
}

#[test]
fn wire_rpc_duplicate_index_is_edupconn() {
    let mut pool = LocalPool::new();
    let (client, _) = setup(&pool);
    pool.run_until(client.register_connection(&auth(), TUNNEL, 3, &options()))
        .unwrap();
    match pool.run_until(client.register_connection(&auth(), TUNNEL, 3, &options())) {
        Err(RegisterError::Refused(e)) => {
            assert_eq!(e.cause, "EDUPCONN");
            assert!(e.is_duplicate_connection());
        }
        other => panic!("{other:?}"),
    }
    pool.run_until(client.register_connection(&auth(), TUNNEL, 4, &options()))
        .unwrap();
}

#[test]
fn wire_rpc_retry_after_round_trips() {
    struct Busy;
    impl RegistrationHandler for Busy {
        async fn register_connection(
            &self,
            _: RegisterRequest,
        ) -> Result<ConnectionDetails, RegistrationError> {
            Err(RegistrationError::retry_after(
                "busy",
                Duration::from_millis(1500),
            ))
        }
    }
    let mut pool = LocalPool::new();
    let client = spawn_registration(&pool, Busy);
    let opts = ConnectionOptions {
        origin_local_ip: Some("::1".parse().unwrap()),
        ..options()
    };
    match pool.run_until(client.register_connection(&auth(), TUNNEL, 1, &opts)) {
        Err(RegisterError::Refused(e)) => {
            assert_eq!(
                e,
                RegistrationError::retry_after("busy", Duration::from_millis(1500))
            );
        }
        other => panic!("{other:?}"),
    }
    // The default hooks accept unregister and configuration.
    pool.run_until(client.unregister_connection()).unwrap();
    pool.run_until(client.update_local_configuration(b"{}"))
        .unwrap();
}

#[test]
fn wire_rpc_unregister_reaches_handler() {
    let mut pool = LocalPool::new();
    let (client, state) = setup(&pool);
    pool.run_until(client.register_connection(&auth(), TUNNEL, 0, &options()))
        .unwrap();
    pool.run_until(client.unregister_connection()).unwrap();
    assert_eq!(state.borrow().unregistered, 1);
}

#[test]
fn wire_rpc_update_local_configuration_delivers_bytes() {
    let mut pool = LocalPool::new();
    let (client, state) = setup(&pool);
    let config = br#"{"ingress":[{"service":"http_status:404"}]}"#;
    pool.run_until(client.update_local_configuration(config))
        .unwrap();
    assert_eq!(state.borrow().configs, vec![config.to_vec()]);
    // A handler error is an RPC exception whose kind says whether to send it again.
    let e = pool
        .run_until(client.update_local_configuration(b""))
        .unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Failed);
    assert!(e.extra.contains("empty configuration"), "{e}");
    let e = pool
        .run_until(client.update_local_configuration(b"busy"))
        .unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Overloaded);
}

#[test]
fn wire_rpc_clean_shutdown_when_client_goes_away() {
    let mut pool = LocalPool::new();
    let state = Rc::new(RefCell::new(EdgeState::default()));
    let ((cr, cw), (sr, sw)) = duplex();
    let server = serve_registration(test_edge(state.clone()), sr, sw);
    let (client, conn) = registration_client(cr, cw);
    let disconnect = conn.disconnector();
    pool.spawner()
        .spawn_local(async move { drop(conn.await) })
        .unwrap();
    let result = pool.run_until(async move {
        let calls = async move {
            client
                .register_connection(&auth(), TUNNEL, 0, &options())
                .await
                .unwrap();
            client.unregister_connection().await.unwrap();
            drop(client);
            disconnect.await.unwrap();
        };
        let (server, ()) = futures::join!(server, calls);
        server
    });
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(state.borrow().unregistered, 1);
}

fn run_server_on(bytes: Vec<u8>) -> Result<(), capnp::Error> {
    let mut pool = LocalPool::new();
    let (sr, mut feed) = pipe();
    let (_out_r, sw) = pipe();
    let edge = TestEdge {
        tunnel_id: TUNNEL,
        secret_sha256: [0; 32],
        state: Rc::default(),
    };
    let server = serve_registration(edge, sr, sw);
    {
        let mut s = feed.0.borrow_mut();
        s.buf.extend(bytes);
    }
    let _ = Pin::new(&mut feed).poll_close(&mut Context::from_waker(Waker::noop()));
    pool.run_until(server)
}

#[test]
fn wire_rpc_server_fed_garbage_errors_without_panic() {
    // A segment table announcing 4 GiB: refused before allocating.
    let mut huge = 0u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(run_server_on(huge).is_err());
    // Too many segments.
    assert!(run_server_on(u32::MAX.to_le_bytes().to_vec()).is_err());
    // A well-framed message that is not an RPC message.
    let mut msg = 0u32.to_le_bytes().to_vec();
    msg.extend_from_slice(&2u32.to_le_bytes());
    msg.extend_from_slice(&[0xFF; 16]);
    assert!(run_server_on(msg).is_err());
    // Seeded random garbage: any outcome but a panic or a hang.
    let mut x: u64 = 0x0123_4567_89AB_CDEF;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 200) as usize;
        let mut buf = Vec::with_capacity(len);
        let mut y = x;
        for _ in 0..len {
            y = y
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            buf.push((y >> 56) as u8);
        }
        if len >= 8 && x.is_multiple_of(2) {
            // One plausible segment so the RPC layer, not just the framing, sees garbage.
            buf[..4].copy_from_slice(&0u32.to_le_bytes());
            buf[4..8].copy_from_slice(&(((len - 8) / 8) as u32).to_le_bytes());
        }
        let _ = run_server_on(buf);
    }
}

#[test]
fn wire_rpc_update_configuration_round_trip() {
    type Seen = Rc<RefCell<Vec<(i32, Vec<u8>)>>>;
    struct Connector(Seen);
    impl ConfigurationHandler for Connector {
        async fn update_configuration(
            &self,
            version: i32,
            config: Vec<u8>,
        ) -> UpdateConfigurationResponse {
            self.0.borrow_mut().push((version, config));
            UpdateConfigurationResponse {
                latest_applied_version: version,
                err: String::new(),
            }
        }
    }
    let mut pool = LocalPool::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let ((cr, cw), (sr, sw)) = duplex();
    let server = serve_configuration(Connector(seen.clone()), sr, sw);
    let (client, conn) = configuration_client(cr, cw);
    spawn_both_ends(&pool, server, conn);
    let answer = pool
        .run_until(client.update_configuration(7, b"{\"a\":1}"))
        .unwrap();
    assert_eq!(answer.latest_applied_version, 7);
    assert_eq!(*seen.borrow(), vec![(7, b"{\"a\":1}".to_vec())]);
}
