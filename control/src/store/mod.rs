//! The persistent half of named tunnels: accounts, zones, API tokens, tunnels, DNS records,
//! load-balancer pools and the ephemeral connection records with their leases.
//!
//! Everything goes through the [`Store`] trait so that the SQLite implementation
//! ([`sqlite::SqliteStore`], the default, one file per control plane) can be joined by a
//! PostgreSQL one for control planes that outgrow a machine. The trait is synchronous: both
//! backends have good blocking drivers and the control plane's write rate is tiny.
//!
//! Every write that changes what an edge must know (tunnels, DNS records, pools, load
//! balancers) bumps the snapshot version in the same transaction, so an edge that long-polls
//! `since=V` never misses a change and never sees half of one.

pub mod migrations;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use sqlite::SqliteStore;

/// Why a store call failed. `Conflict` and `NotFound` are the caller's fault and map to 409 and
/// 404; `Backend` is ours and maps to 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store backend failed: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Zone {
    pub id: String,
    pub account_id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
}

/// What a bearer token may do. Tokens are stored only as SHA-256 hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// The control plane's operator (DIR/admin-token): every account, plus minting cert tokens.
    Operator,
    /// An edge (DIR/edge-token): only the edge-facing endpoints.
    Edge,
    /// A cert.pem token: one account and one zone inside it.
    Zone { account_id: String, zone_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tunnel {
    pub id: Uuid,
    pub account_id: String,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub deleted_at: Option<OffsetDateTime>,
    /// Hex SHA-256 of the raw secret bytes: what edges check a connector against.
    pub secret_sha256: String,
}

/// `GET .../cfd_tunnel` filters, as cloudflared sends them.
#[derive(Debug, Clone, Default)]
pub struct TunnelFilter {
    pub name: Option<String>,
    pub id: Option<Uuid>,
    /// `None` lists both live and deleted tunnels.
    pub is_deleted: Option<bool>,
    /// Only tunnels that existed (created and not yet deleted) at this instant.
    pub existed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DnsRecord {
    pub id: String,
    pub zone_id: String,
    pub zone_name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub content: String,
    pub proxied: bool,
    pub ttl: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_on: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewDnsRecord {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub content: String,
    #[serde(default)]
    pub proxied: bool,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}

fn default_ttl() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolOrigin {
    pub name: String,
    pub address: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "one")]
    pub weight: f64,
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    pub id: String,
    /// Carried in the snapshot so the edge can check a pool's origins belong to its account;
    /// empty in an old cached snapshot, which then fails closed.
    #[serde(default)]
    pub account_id: String,
    pub name: String,
    pub enabled: bool,
    pub origins: Vec<PoolOrigin>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_on: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadBalancer {
    pub id: String,
    /// Carried in the snapshot: the load balancer's account is its zone's.
    #[serde(default)]
    pub zone_id: String,
    /// The hostname the load balancer answers for.
    pub name: String,
    /// Pool ids in failover order.
    pub default_pools: Vec<String>,
    pub fallback_pool: String,
    pub proxied: bool,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_on: OffsetDateTime,
}

/// A connector's QUIC connection as an edge registered it. Ephemeral: it lives only while the
/// edge keeps renewing its lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionRecord {
    pub id: Uuid,
    pub tunnel_id: Uuid,
    pub client_id: Uuid,
    pub client_version: String,
    pub arch: String,
    pub features: Vec<String>,
    pub conn_index: u8,
    pub colo_name: String,
    pub origin_ip: String,
    pub edge_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// Unix milliseconds after which the record is gone unless renewed.
    pub lease_expires_ms: i64,
}

/// The snapshot layout this build writes. 2 added the accounts (`zones`, pools'
/// `account_id`, load balancers' `zone_id`) and `tunnel_suffix`; an edge treats anything
/// older as unable to route (it cannot check which account a record belongs to) and fetches
/// a fresh one from version 0.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// What an edge needs to serve without the control plane: routing data plus the secret hashes
/// that let it authenticate connectors itself. Never the secrets.
///
/// Every field added after format 1 has a serde default, so an edge still reads the
/// `snapshot.json` an older build cached (and then routes nothing from it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    #[serde(default)]
    pub format: u32,
    /// Tunnel CNAME targets are `<uuid>.<tunnel_suffix>`; empty routes nothing.
    #[serde(default)]
    pub tunnel_suffix: String,
    pub tunnels: Vec<SnapshotTunnel>,
    /// Zone → account, for the DNS records' and load balancers' accounts.
    #[serde(default)]
    pub zones: Vec<SnapshotZone>,
    pub dns_records: Vec<DnsRecord>,
    pub pools: Vec<Pool>,
    pub load_balancers: Vec<LoadBalancer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotZone {
    pub id: String,
    pub account_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotTunnel {
    pub id: Uuid,
    pub account_tag: String,
    pub secret_sha256: String,
}

/// The persistent store. Implementations must make every acknowledged write durable before
/// returning (the control plane may be `kill -9`ed right after answering).
pub trait Store: Send + Sync + 'static {
    // Accounts, zones, tokens.
    fn create_account(&self, name: &str) -> StoreResult<Account>;
    fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>>;
    fn account(&self, id: &str) -> StoreResult<Option<Account>>;
    fn list_accounts(&self) -> StoreResult<Vec<Account>>;
    fn create_zone(&self, account_id: &str, name: &str) -> StoreResult<Zone>;
    fn zone(&self, id: &str) -> StoreResult<Option<Zone>>;
    fn zone_by_name(&self, name: &str) -> StoreResult<Option<Zone>>;
    fn list_zones(&self, account_id: Option<&str>) -> StoreResult<Vec<Zone>>;
    fn insert_token(&self, token_sha256: &str, scope: &TokenScope) -> StoreResult<()>;
    fn token_scope(&self, token_sha256: &str) -> StoreResult<Option<TokenScope>>;

    // Tunnels.
    fn create_tunnel(&self, account_id: &str, name: &str, secret: &[u8]) -> StoreResult<Tunnel>;
    fn tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Option<Tunnel>>;
    fn list_tunnels(&self, account_id: &str, filter: &TunnelFilter) -> StoreResult<Vec<Tunnel>>;
    /// Marks the tunnel deleted (it stays listable with `is_deleted=true`) and drops its
    /// connection records.
    fn delete_tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Tunnel>;
    fn tunnel_secret(&self, account_id: &str, id: Uuid) -> StoreResult<Vec<u8>>;
    /// A live (not deleted) tunnel by id in any account: what edges ask about.
    fn live_tunnel(&self, id: Uuid) -> StoreResult<Option<Tunnel>>;

    // DNS.
    fn list_dns(&self, zone_id: &str, name: Option<&str>) -> StoreResult<Vec<DnsRecord>>;
    /// Creates a record. Atomically refuses (`Conflict`) a CNAME that would share its name
    /// with any A, AAAA or CNAME record, or an A/AAAA next to a CNAME.
    fn create_dns(&self, zone_id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord>;
    fn update_dns(&self, zone_id: &str, id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord>;
    fn delete_dns(&self, zone_id: &str, id: &str) -> StoreResult<()>;
    /// Points `name` at `target` as a proxied CNAME, atomically: creates it (`New`), leaves
    /// an identical record (`Unchanged`), replaces other address records only when
    /// `overwrite` (`Updated`), else `Conflict`.
    fn route_dns(
        &self,
        zone_id: &str,
        name: &str,
        target: &str,
        overwrite: bool,
    ) -> StoreResult<Change>;

    // Load balancing.
    fn list_pools(&self, account_id: &str) -> StoreResult<Vec<Pool>>;
    fn upsert_pool(
        &self,
        account_id: &str,
        name: &str,
        origins: &[PoolOrigin],
    ) -> StoreResult<Pool>;
    fn delete_pool(&self, account_id: &str, id: &str) -> StoreResult<()>;
    fn list_load_balancers(&self, zone_id: &str) -> StoreResult<Vec<LoadBalancer>>;
    fn upsert_load_balancer(
        &self,
        zone_id: &str,
        name: &str,
        default_pools: &[String],
        fallback_pool: &str,
    ) -> StoreResult<LoadBalancer>;
    fn delete_load_balancer(&self, zone_id: &str, id: &str) -> StoreResult<()>;
    /// `route lb`, atomically: makes `origin` a member of pool `pool_name` (account-wide) and
    /// that pool one of load balancer `lb_name`'s pools. Returns (load balancer, pool)
    /// changes. `Conflict` when `lb_name` is already a plain DNS record.
    fn route_lb(
        &self,
        account_id: &str,
        zone_id: &str,
        lb_name: &str,
        pool_name: &str,
        origin: &PoolOrigin,
    ) -> StoreResult<(Change, Change)>;

    // Connections (ephemeral, leased).
    fn register_connection(&self, rec: &ConnectionRecord) -> StoreResult<()>;
    /// Extends the lease of each listed connection owned by `edge_id`; returns the ids that are
    /// unknown (expired or never registered) so the edge re-registers them.
    fn renew_leases(&self, edge_id: &str, ids: &[Uuid], expires_ms: i64) -> StoreResult<Vec<Uuid>>;
    fn unregister_connection(&self, id: Uuid) -> StoreResult<bool>;
    fn list_connections(&self, tunnel_id: Uuid) -> StoreResult<Vec<ConnectionRecord>>;
    /// Removes connection records of a tunnel, all of them or one client's.
    fn delete_connections(&self, tunnel_id: Uuid, client_id: Option<Uuid>) -> StoreResult<usize>;
    /// Removes every record whose lease ended before `now_ms`.
    fn expire_connections(&self, now_ms: i64) -> StoreResult<usize>;

    // Snapshot.
    fn snapshot_version(&self) -> StoreResult<u64>;
    fn snapshot(&self) -> StoreResult<Snapshot>;
}

/// How a route call changed an object; the words cloudflared turns into its summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    New,
    Updated,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Cloudflare-style object id: 32 lowercase hex characters.
pub fn new_object_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
