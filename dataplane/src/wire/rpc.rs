//! The registration RPC on the control stream, and the edge → connector configuration call.
//!
//! The control stream (the first bidirectional stream, opened by the connector) carries plain
//! Cap'n Proto RPC, two-party, with no preamble. The connector is the RPC client and
//! bootstraps `RegistrationServer` (interface `0xf71695ec7fe85497`):
//!
//! - `registerConnection @0 (auth, tunnelId, connIndex, options) -> (result)`: the edge checks
//!   the credentials and answers either `ConnectionDetails` or a `ConnectionError` (a refusal
//!   is a normal result, not an RPC exception; a duplicate index is refused with cause
//!   [`DUPLICATE_CONNECTION_CAUSE`]);
//! - `unregisterConnection @1 ()`: sent on shutdown; the edge then opens no new requests;
//! - `updateLocalConfiguration @2 (config)`: connection 0 of a locally managed tunnel sends
//!   its configuration (JSON).
//!
//! On an RPC stream (signature [`super::stream::RPC_STREAM_SIGNATURE`], written by the caller
//! before handing the stream over) the edge is the client of the connector's
//! `CloudflaredServer`, of which ringway uses `ConfigurationManager.updateConfiguration`.
//!
//! Everything here works over any `futures` `AsyncRead` + `AsyncWrite` pair and returns an
//! [`RpcConnection`] future that drives the connection; spawn it on a single-threaded executor
//! (capnp-rpc is `!Send`) next to the calls. Buffering the streams (`futures::io::BufReader`,
//! `BufWriter`) is the caller's choice.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::{AsyncRead, AsyncWrite};
use uuid::Uuid;

use super::generated::tunnelrpc_capnp::{
    client_info, configuration_manager, connection_details, connection_error, connection_options,
    connection_response, registration_server, tunnel_auth,
};

/// `ConnectionError.cause` for a connection index that is already registered.
pub const DUPLICATE_CONNECTION_CAUSE: &str = "EDUPCONN";

/// Largest RPC message accepted (the segment table is checked before anything is allocated).
pub const MAX_RPC_MESSAGE_BYTES: usize = 8 << 20;

fn reader_options() -> ReaderOptions {
    ReaderOptions {
        traversal_limit_in_words: Some(MAX_RPC_MESSAGE_BYTES / 8),
        nesting_limit: 64,
    }
}

/// The tunnel secret (≥ 32 random bytes). Its `Debug` prints `MASKED`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TunnelSecret(Vec<u8>);

impl TunnelSecret {
    /// Wraps the raw secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The raw bytes (to hash or send; never log them).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for TunnelSecret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for TunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelSecret(MASKED)")
    }
}

/// `TunnelAuth`: the account and the tunnel secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelAuth {
    /// The account tag (`AccountTag` in the credentials file).
    pub account_tag: String,
    /// The tunnel secret (`TunnelSecret` in the credentials file, decoded from base64).
    pub tunnel_secret: TunnelSecret,
}

/// `ConnectionOptions` with its `ClientInfo` flattened in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionOptions {
    /// `ClientInfo.clientId`: identifies one connector process across its connections.
    pub client_id: Uuid,
    /// `ClientInfo.features`.
    pub features: Vec<String>,
    /// `ClientInfo.version`.
    pub version: String,
    /// `ClientInfo.arch` (e.g. `linux_amd64`).
    pub arch: String,
    /// `originLocalIp`: the connector's local address (sent as 16 bytes, read from 4 or 16).
    pub origin_local_ip: Option<IpAddr>,
    /// `replaceExisting`: replace a connection already registered at this index.
    pub replace_existing: bool,
    /// `compressionQuality` (0 off … 3 high; unused by ringway).
    pub compression_quality: u8,
    /// `numPreviousAttempts`.
    pub num_previous_attempts: u8,
}

/// `ConnectionDetails`: the edge's answer to a successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    /// The connection's identifier.
    pub uuid: Uuid,
    /// Where the connection landed (an airport code at Cloudflare).
    pub location_name: String,
    /// Whether the tunnel's configuration is managed remotely.
    pub tunnel_is_remotely_managed: bool,
}

/// `ConnectionError`: the edge refused the registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registration refused: {cause}")]
pub struct RegistrationError {
    /// Why (e.g. [`DUPLICATE_CONNECTION_CAUSE`]).
    pub cause: String,
    /// How long to wait before retrying (sent as nanoseconds).
    pub retry_after: Duration,
    /// Whether the connector should retry at all.
    pub should_retry: bool,
}

impl RegistrationError {
    /// A refusal that retrying will not fix (bad credentials, unknown tunnel).
    pub fn permanent(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            retry_after: Duration::ZERO,
            should_retry: false,
        }
    }

    /// A refusal to retry after `delay`.
    pub fn retry_after(cause: impl Into<String>, delay: Duration) -> Self {
        Self {
            cause: cause.into(),
            retry_after: delay,
            should_retry: true,
        }
    }

    /// The refusal for an index that is already registered (`EDUPCONN`).
    pub fn duplicate_connection() -> Self {
        Self::permanent(DUPLICATE_CONNECTION_CAUSE)
    }

    /// Whether this is the duplicate-index refusal.
    pub fn is_duplicate_connection(&self) -> bool {
        self.cause == DUPLICATE_CONNECTION_CAUSE
    }
}

/// Why `register_connection` failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The edge answered with a `ConnectionError`.
    #[error(transparent)]
    Refused(RegistrationError),
    /// The RPC itself failed (transport, exception, malformed answer).
    #[error("registration RPC failed: {0}")]
    Rpc(#[from] capnp::Error),
}

/// A `registerConnection` call, as the edge's handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The credentials.
    pub auth: TunnelAuth,
    /// The tunnel being connected.
    pub tunnel_id: Uuid,
    /// The connector's HA connection index.
    pub conn_index: u8,
    /// Connector details.
    pub options: ConnectionOptions,
}

/// Drives one RPC connection: spawn it on the local executor. It resolves when the stream
/// ends (`Ok`) or fails (`Err`, e.g. a malformed message).
#[must_use = "the RPC connection does nothing unless polled"]
pub struct RpcConnection {
    system: RpcSystem<Side>,
}

impl RpcConnection {
    /// A future that shuts the connection down cleanly; take it before spawning `self`.
    pub fn disconnector(&self) -> capnp_rpc::Disconnector<Side> {
        self.system.get_disconnector()
    }
}

impl fmt::Debug for RpcConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConnection").finish_non_exhaustive()
    }
}

impl Future for RpcConnection {
    type Output = Result<(), capnp::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.system).poll(cx)
    }
}

fn network<R, W>(reader: R, writer: W, side: Side) -> Box<twoparty::VatNetwork<R>>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    Box::new(twoparty::VatNetwork::new(
        reader,
        writer,
        side,
        reader_options(),
    ))
}

fn uuid_from(bytes: &[u8], what: &str) -> Result<Uuid, capnp::Error> {
    Uuid::from_slice(bytes)
        .map_err(|_| capnp::Error::failed(format!("{what} is {} bytes, not 16", bytes.len())))
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, capnp::Error> {
    reader?
        .to_string()
        .map_err(|e| capnp::Error::failed(format!("text is not UTF-8: {e}")))
}

fn ip_to_bytes(ip: Option<IpAddr>) -> Vec<u8> {
    match ip {
        None => Vec::new(),
        // Go's net.IP keeps IPv4 in its 16-byte form; either length decodes on both sides.
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets().to_vec(),
        Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(b));
    }
    let b = <[u8; 16]>::try_from(bytes).ok()?;
    let v6 = Ipv6Addr::from(b);
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

fn duration_to_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn nanos_to_duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

fn write_auth(mut b: tunnel_auth::Builder<'_>, auth: &TunnelAuth) {
    b.set_account_tag(auth.account_tag.as_str());
    b.set_tunnel_secret(auth.tunnel_secret.expose());
}

fn read_auth(r: tunnel_auth::Reader<'_>) -> Result<TunnelAuth, capnp::Error> {
    Ok(TunnelAuth {
        account_tag: text(r.get_account_tag())?,
        tunnel_secret: TunnelSecret::new(r.get_tunnel_secret()?),
    })
}

fn write_options(mut b: connection_options::Builder<'_>, o: &ConnectionOptions) {
    {
        let mut client: client_info::Builder<'_> = b.reborrow().init_client();
        client.set_client_id(&o.client_id.as_bytes()[..]);
        let len = u32::try_from(o.features.len()).unwrap_or(u32::MAX);
        let mut features = client.reborrow().init_features(len);
        for (i, f) in o.features.iter().enumerate().take(len as usize) {
            features.set(i as u32, f.as_str());
        }
        client.set_version(o.version.as_str());
        client.set_arch(o.arch.as_str());
    }
    b.set_origin_local_ip(&ip_to_bytes(o.origin_local_ip)[..]);
    b.set_replace_existing(o.replace_existing);
    b.set_compression_quality(o.compression_quality);
    b.set_num_previous_attempts(o.num_previous_attempts);
}

fn read_options(r: connection_options::Reader<'_>) -> Result<ConnectionOptions, capnp::Error> {
    let client = r.get_client()?;
    let client_id = client.get_client_id()?;
    // An empty client id reads as nil rather than failing the registration.
    let client_id = if client_id.is_empty() {
        Uuid::nil()
    } else {
        uuid_from(client_id, "clientId")?
    };
    let mut features = Vec::new();
    for f in client.get_features()?.iter() {
        features.push(text(f)?);
    }
    Ok(ConnectionOptions {
        client_id,
        features,
        version: text(client.get_version())?,
        arch: text(client.get_arch())?,
        origin_local_ip: ip_from_bytes(r.get_origin_local_ip()?),
        replace_existing: r.get_replace_existing(),
        compression_quality: r.get_compression_quality(),
        num_previous_attempts: r.get_num_previous_attempts(),
    })
}

fn write_response(
    b: connection_response::Builder<'_>,
    outcome: &Result<ConnectionDetails, RegistrationError>,
) {
    let result = b.init_result();
    match outcome {
        Ok(details) => {
            let mut d: connection_details::Builder<'_> = result.init_connection_details();
            d.set_uuid(&details.uuid.as_bytes()[..]);
            d.set_location_name(details.location_name.as_str());
            d.set_tunnel_is_remotely_managed(details.tunnel_is_remotely_managed);
        }
        Err(err) => {
            let mut e: connection_error::Builder<'_> = result.init_error();
            e.set_cause(err.cause.as_str());
            e.set_retry_after(duration_to_nanos(err.retry_after));
            e.set_should_retry(err.should_retry);
        }
    }
}

fn read_response(
    r: connection_response::Reader<'_>,
) -> Result<Result<ConnectionDetails, RegistrationError>, capnp::Error> {
    use connection_response::result::Which;
    match r.get_result().which()? {
        Which::ConnectionDetails(d) => {
            let d = d?;
            Ok(Ok(ConnectionDetails {
                uuid: uuid_from(d.get_uuid()?, "connection uuid")?,
                location_name: text(d.get_location_name())?,
                tunnel_is_remotely_managed: d.get_tunnel_is_remotely_managed(),
            }))
        }
        Which::Error(e) => {
            let e = e?;
            Ok(Err(RegistrationError {
                cause: text(e.get_cause())?,
                retry_after: nanos_to_duration(e.get_retry_after()),
                should_retry: e.get_should_retry(),
            }))
        }
    }
}

/// The connector's side of the control stream.
#[derive(Clone)]
pub struct RegistrationClient {
    client: registration_server::Client,
}

impl fmt::Debug for RegistrationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationClient").finish_non_exhaustive()
    }
}

/// Starts the connector's side of the control stream: a client for the edge's
/// `RegistrationServer`, and the connection future to spawn.
pub fn registration_client<R, W>(reader: R, writer: W) -> (RegistrationClient, RpcConnection)
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let mut system = RpcSystem::new(network(reader, writer, Side::Client), None);
    let client: registration_server::Client = system.bootstrap(Side::Server);
    (RegistrationClient { client }, RpcConnection { system })
}

impl RegistrationClient {
    /// `registerConnection`. A refusal from the edge is [`RegisterError::Refused`].
    pub async fn register_connection(
        &self,
        auth: &TunnelAuth,
        tunnel_id: Uuid,
        conn_index: u8,
        options: &ConnectionOptions,
    ) -> Result<ConnectionDetails, RegisterError> {
        let mut request = self.client.register_connection_request();
        {
            let mut params = request.get();
            write_auth(params.reborrow().init_auth(), auth);
            params.set_tunnel_id(&tunnel_id.as_bytes()[..]);
            params.set_conn_index(conn_index);
            write_options(params.init_options(), options);
        }
        let response = request.send().promise.await?;
        let outcome = read_response(response.get()?.get_result()?)?;
        outcome.map_err(RegisterError::Refused)
    }

    /// `unregisterConnection`: tells the edge to stop sending new requests here.
    pub async fn unregister_connection(&self) -> Result<(), capnp::Error> {
        self.client
            .unregister_connection_request()
            .send()
            .promise
            .await?;
        Ok(())
    }

    /// `updateLocalConfiguration`: the locally managed configuration (JSON bytes).
    pub async fn update_local_configuration(&self, config: &[u8]) -> Result<(), capnp::Error> {
        let mut request = self.client.update_local_configuration_request();
        request.get().set_config(config);
        request.send().promise.await?;
        Ok(())
    }
}

/// The edge's registration logic. One handler serves one control stream, so it can hold that
/// connection's context. Futures run on the local executor and may borrow `self`.
pub trait RegistrationHandler: 'static {
    /// Decides a `registerConnection`: check the tunnel id and the SHA-256 of the secret, and
    /// refuse an index already in use with [`RegistrationError::duplicate_connection`].
    fn register_connection(
        &self,
        request: RegisterRequest,
    ) -> impl Future<Output = Result<ConnectionDetails, RegistrationError>>;

    /// `unregisterConnection`: the connector is shutting down this connection.
    fn unregister_connection(&self) -> impl Future<Output = ()> {
        async {}
    }

    /// `updateLocalConfiguration`: the connector's local configuration. An `Err` becomes an RPC
    /// exception.
    fn update_local_configuration(
        &self,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> {
        let _ = config;
        async { Ok(()) }
    }
}

struct RegistrationServerImpl<H> {
    handler: H,
}

impl<H: RegistrationHandler> registration_server::Server for RegistrationServerImpl<H> {
    async fn register_connection(
        self: Rc<Self>,
        params: registration_server::RegisterConnectionParams,
        mut results: registration_server::RegisterConnectionResults,
    ) -> Result<(), capnp::Error> {
        let request = {
            let p = params.get()?;
            RegisterRequest {
                auth: read_auth(p.get_auth()?)?,
                tunnel_id: uuid_from(p.get_tunnel_id()?, "tunnelId")?,
                conn_index: p.get_conn_index(),
                options: read_options(p.get_options()?)?,
            }
        };
        let outcome = self.handler.register_connection(request).await;
        write_response(results.get().init_result(), &outcome);
        Ok(())
    }

    async fn unregister_connection(
        self: Rc<Self>,
        _: registration_server::UnregisterConnectionParams,
        _: registration_server::UnregisterConnectionResults,
    ) -> Result<(), capnp::Error> {
        self.handler.unregister_connection().await;
        Ok(())
    }

    async fn update_local_configuration(
        self: Rc<Self>,
        params: registration_server::UpdateLocalConfigurationParams,
        _: registration_server::UpdateLocalConfigurationResults,
    ) -> Result<(), capnp::Error> {
        let config = params.get()?.get_config()?.to_vec();
        self.handler
            .update_local_configuration(config)
            .await
            .map_err(capnp::Error::failed)
    }
}

/// Serves `RegistrationServer` for `handler` on the control stream (the edge's side). The
/// returned future ends when the connector closes the stream, or fails on bad input.
pub fn serve_registration<H, R, W>(handler: H, reader: R, writer: W) -> RpcConnection
where
    H: RegistrationHandler,
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let client: registration_server::Client =
        capnp_rpc::new_client(RegistrationServerImpl { handler });
    RpcConnection {
        system: RpcSystem::new(network(reader, writer, Side::Server), Some(client.client)),
    }
}

/// `UpdateConfigurationResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateConfigurationResponse {
    /// The newest configuration version the connector applied.
    pub latest_applied_version: i32,
    /// Empty, or why the newest version was not applied.
    pub err: String,
}

/// The edge's client for the connector's `ConfigurationManager`, on an RPC stream. The caller
/// writes [`super::stream::RPC_STREAM_SIGNATURE`] on the stream before handing it over.
#[derive(Clone)]
pub struct ConfigurationClient {
    client: configuration_manager::Client,
}

impl fmt::Debug for ConfigurationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigurationClient")
            .finish_non_exhaustive()
    }
}

/// Starts the edge's side of an RPC stream: a client for the connector's bootstrap
/// (`CloudflaredServer`, which extends `ConfigurationManager`).
pub fn configuration_client<R, W>(reader: R, writer: W) -> (ConfigurationClient, RpcConnection)
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let mut system = RpcSystem::new(network(reader, writer, Side::Client), None);
    let client: configuration_manager::Client = system.bootstrap(Side::Server);
    (ConfigurationClient { client }, RpcConnection { system })
}

impl ConfigurationClient {
    /// `updateConfiguration(version, config)`.
    pub async fn update_configuration(
        &self,
        version: i32,
        config: &[u8],
    ) -> Result<UpdateConfigurationResponse, capnp::Error> {
        let mut request = self.client.update_configuration_request();
        request.get().set_version(version);
        request.get().set_config(config);
        let response = request.send().promise.await?;
        let result = response.get()?.get_result()?;
        Ok(UpdateConfigurationResponse {
            latest_applied_version: result.get_latest_applied_version(),
            err: text(result.get_err())?,
        })
    }
}

/// The connector's configuration logic for edge-pushed configuration.
pub trait ConfigurationHandler: 'static {
    /// Applies (or refuses) configuration `version`.
    fn update_configuration(
        &self,
        version: i32,
        config: Vec<u8>,
    ) -> impl Future<Output = UpdateConfigurationResponse>;
}

struct ConfigurationServerImpl<H> {
    handler: H,
}

impl<H: ConfigurationHandler> configuration_manager::Server for ConfigurationServerImpl<H> {
    async fn update_configuration(
        self: Rc<Self>,
        params: configuration_manager::UpdateConfigurationParams,
        mut results: configuration_manager::UpdateConfigurationResults,
    ) -> Result<(), capnp::Error> {
        let (version, config) = {
            let p = params.get()?;
            (p.get_version(), p.get_config()?.to_vec())
        };
        let answer = self.handler.update_configuration(version, config).await;
        let mut r = results.get().init_result();
        r.set_latest_applied_version(answer.latest_applied_version);
        r.set_err(answer.err.as_str());
        Ok(())
    }
}

/// Serves `ConfigurationManager` on an RPC stream whose signature has been consumed (the
/// connector's side).
pub fn serve_configuration<H, R, W>(handler: H, reader: R, writer: W) -> RpcConnection
where
    H: ConfigurationHandler,
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let client: configuration_manager::Client =
        capnp_rpc::new_client(ConfigurationServerImpl { handler });
    RpcConnection {
        system: RpcSystem::new(network(reader, writer, Side::Server), Some(client.client)),
    }
}

#[cfg(test)]
mod tests {
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

        async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), String> {
            if config.is_empty() {
                return Err("empty configuration".into());
            }
            self.state.borrow_mut().configs.push(config);
            Ok(())
        }
    }

    fn secret() -> TunnelSecret {
        TunnelSecret::new((0u8..32).collect::<Vec<_>>())
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

    /// An edge on one end of a duplex, a client on the other, both spawned on `pool`.
    fn setup(pool: &LocalPool) -> (RegistrationClient, Rc<RefCell<EdgeState>>) {
        let spawner = pool.spawner();
        let state = Rc::new(RefCell::new(EdgeState::default()));
        let edge = TestEdge {
            tunnel_id: TUNNEL,
            secret_sha256: Sha256::digest(secret().expose()).into(),
            state: state.clone(),
        };
        let ((cr, cw), (sr, sw)) = duplex();
        let server = serve_registration(edge, sr, sw);
        spawner
            .spawn_local(async move { drop(server.await) })
            .unwrap();
        let (client, conn) = registration_client(cr, cw);
        spawner
            .spawn_local(async move { drop(conn.await) })
            .unwrap();
        (client, state)
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
        bad.tunnel_secret = TunnelSecret::new(vec![9u8; 32]);
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
        let spawner = pool.spawner();
        let ((cr, cw), (sr, sw)) = duplex();
        let server = serve_registration(Busy, sr, sw);
        spawner
            .spawn_local(async move { drop(server.await) })
            .unwrap();
        let (client, conn) = registration_client(cr, cw);
        spawner
            .spawn_local(async move { drop(conn.await) })
            .unwrap();
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
        // A handler error is an RPC exception.
        assert!(
            pool.run_until(client.update_local_configuration(b""))
                .is_err()
        );
    }

    #[test]
    fn wire_rpc_clean_shutdown_when_client_goes_away() {
        let mut pool = LocalPool::new();
        let state = Rc::new(RefCell::new(EdgeState::default()));
        let edge = TestEdge {
            tunnel_id: TUNNEL,
            secret_sha256: Sha256::digest(secret().expose()).into(),
            state: state.clone(),
        };
        let ((cr, cw), (sr, sw)) = duplex();
        let server = serve_registration(edge, sr, sw);
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
        let spawner = pool.spawner();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let ((cr, cw), (sr, sw)) = duplex();
        let server = serve_configuration(Connector(seen.clone()), sr, sw);
        spawner
            .spawn_local(async move { drop(server.await) })
            .unwrap();
        let (client, conn) = configuration_client(cr, cw);
        spawner
            .spawn_local(async move { drop(conn.await) })
            .unwrap();
        let answer = pool
            .run_until(client.update_configuration(7, b"{\"a\":1}"))
            .unwrap();
        assert_eq!(answer.latest_applied_version, 7);
        assert_eq!(*seen.borrow(), vec![(7, b"{\"a\":1}".to_vec())]);
    }
}
