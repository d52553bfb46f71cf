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

/// The tunnel secret's bytes as `TunnelAuth` carries them, unchecked (the edge compares them
/// with the stored hash; control's `secret::TunnelSecret` is the validated form). Its `Debug`
/// prints `MASKED`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RawTunnelSecret(Vec<u8>);

impl RawTunnelSecret {
    /// Wraps the raw secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The raw bytes (to hash or send; never log them).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for RawTunnelSecret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for RawTunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawTunnelSecret(MASKED)")
    }
}

/// `TunnelAuth`: the account and the tunnel secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelAuth {
    /// The account tag (`AccountTag` in the credentials file).
    pub account_tag: String,
    /// The tunnel secret (`TunnelSecret` in the credentials file, decoded from base64).
    pub tunnel_secret: RawTunnelSecret,
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
    pub(crate) fn retry_after(cause: impl Into<String>, delay: Duration) -> Self {
        Self {
            cause: cause.into(),
            retry_after: delay,
            should_retry: true,
        }
    }

    /// The refusal for an index that is already registered (`EDUPCONN`).
    pub(crate) fn duplicate_connection() -> Self {
        Self::permanent(DUPLICATE_CONNECTION_CAUSE)
    }

    /// Whether this is the duplicate-index refusal.
    pub fn is_duplicate_connection(&self) -> bool {
        self.cause == DUPLICATE_CONNECTION_CAUSE
    }
}

/// Why the edge did not take a connector's `updateLocalConfiguration`. It reaches the connector
/// as an RPC exception whose kind carries the retry decision: `failed` for a configuration the
/// edge will never take, `overloaded` for one it cannot take now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalConfigError {
    /// The configuration itself is unacceptable (empty, malformed, too large); sending it
    /// again unchanged fails again.
    #[error("local configuration rejected: {reason}")]
    Rejected { reason: String },
    /// The edge cannot take it at the moment; the connector may send it again later.
    #[error("local configuration not taken now: {reason}")]
    Unavailable { reason: String },
}

impl LocalConfigError {
    /// Whether sending the same configuration again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

impl From<LocalConfigError> for capnp::Error {
    fn from(e: LocalConfigError) -> Self {
        if e.retryable() {
            capnp::Error::overloaded(e.to_string())
        } else {
            capnp::Error::failed(e.to_string())
        }
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
        tunnel_secret: RawTunnelSecret::new(r.get_tunnel_secret()?),
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
pub(crate) fn registration_client<R, W>(reader: R, writer: W) -> (RegistrationClient, RpcConnection)
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
    pub(crate) async fn update_local_configuration(
        &self,
        config: &[u8],
    ) -> Result<(), capnp::Error> {
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
    /// exception ([`LocalConfigError`] says of which kind).
    fn update_local_configuration(
        &self,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<(), LocalConfigError>> {
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
            .map_err(capnp::Error::from)
    }
}

/// Serves `RegistrationServer` for `handler` on the control stream (the edge's side). The
/// returned future ends when the connector closes the stream, or fails on bad input.
pub(crate) fn serve_registration<H, R, W>(handler: H, reader: R, writer: W) -> RpcConnection
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
pub(crate) fn serve_configuration<H, R, W>(handler: H, reader: R, writer: W) -> RpcConnection
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
#[path = "rpc_tests.rs"]
mod tests;
