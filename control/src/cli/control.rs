//! `ringway control serve`: bootstrap the data directory, then serve the API until SIGTERM or
//! SIGINT.
//!
//! First start creates the default account, the `--zone`s, and two tokens written 0600 beside
//! the database: `admin-token` (the operator) and `edge-token` (what edges present). Later starts
//! reuse both and add any new `--zone`. A token's hash reaches the database before its file is
//! written, so a crash in between leaves at worst an unused hash, never a file that does not
//! authenticate.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::args::{ControlCmd, ControlVerb, ServeArgs};
use crate::api::server::ServerLimits;
use crate::api::{self, AppState};
use crate::hostname::normalize_hostname;
use crate::secret::ApiToken;
use crate::store::{SqliteStore, Store, TokenScope};

pub const DEFAULT_ACCOUNT: &str = "default";
pub const DB_FILE: &str = "ringway.db";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const EDGE_TOKEN_FILE: &str = "edge-token";

pub fn run(cmd: ControlCmd) -> anyhow::Result<()> {
    match cmd.verb {
        ControlVerb::Serve(args) => serve(args),
    }
}

/// Writes `contents` to `path` with mode 0600 via a temp file and rename, so a reader never
/// sees a half-written token.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    crate::files::replace_atomically(path, contents.as_bytes(), 0o600)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Reads the token file at `path`, or creates one; either way its hash is in the store.
fn ensure_token(store: &dyn Store, path: &Path, scope: TokenScope) -> anyhow::Result<()> {
    let token = match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => ApiToken::new(s.trim().to_string()),
        Ok(_) => bail!("{} is empty; delete it to mint a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = ApiToken::generate();
            store.insert_token(&t.sha256_hex(), &scope)?;
            write_private(path, &format!("{}\n", t.expose()))?;
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Tighten a file someone loosened by hand: it is a bearer credential.
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    store.insert_token(&token.sha256_hex(), &scope)?;
    Ok(())
}

/// Opens the store in `dir` and makes sure the account, zones and tokens exist.
pub fn bootstrap(dir: &Path, zones: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let store = SqliteStore::open(&dir.join(DB_FILE))
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let account = match store.account_by_name(DEFAULT_ACCOUNT)? {
        Some(a) => a,
        None => store.create_account(DEFAULT_ACCOUNT)?,
    };
    for z in zones {
        let name = normalize_hostname(z).map_err(|e| anyhow::anyhow!("--zone {z}: {e}"))?;
        if name.starts_with('*') {
            bail!("--zone {z}: a zone cannot be a wildcard");
        }
        if store.zone_by_name(&name)?.is_none() {
            store.create_zone(&account.id, &name)?;
            tracing::info!(zone = %name, "zone created");
        }
    }
    ensure_token(&store, &dir.join(ADMIN_TOKEN_FILE), TokenScope::Operator)?;
    ensure_token(&store, &dir.join(EDGE_TOKEN_FILE), TokenScope::Edge)?;
    Ok(Arc::new(store))
}

/// The server limits from `serve`'s flags; a zero is refused (it would close everything).
fn limits(args: &ServeArgs) -> anyhow::Result<ServerLimits> {
    for (flag, d) in [
        ("--header-timeout", args.header_timeout),
        ("--idle-timeout", args.idle_timeout),
        ("--request-timeout", args.request_timeout),
        ("--long-poll-max", args.long_poll_max),
    ] {
        if d.is_zero() {
            bail!("{flag} must be longer than 0");
        }
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    if args.max_body == 0 {
        bail!("--max-body must be at least 1 byte");
    }
    Ok(ServerLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        request_timeout: args.request_timeout,
        max_connections: args.max_connections,
    })
}

/// `--quick-zone`'s zone (in the quick account, created if missing) and the quick limits.
fn quick_tunnels(
    store: &dyn Store,
    zone: &str,
    args: &ServeArgs,
) -> anyhow::Result<api::quick::QuickTunnels> {
    let name = normalize_hostname(zone).map_err(|e| anyhow::anyhow!("--quick-zone {zone}: {e}"))?;
    if name.starts_with('*') {
        bail!("--quick-zone {zone}: a zone cannot be a wildcard");
    }
    if args.quick_lease.is_zero() {
        bail!("--quick-lease must be longer than 0");
    }
    if args.quick_max_tunnels == 0 {
        bail!("--quick-max-tunnels must be at least 1");
    }
    api::quick::QuickTunnels::open(store, &name, args.quick_lease, args.quick_max_tunnels)
        .map_err(|e| anyhow::anyhow!("--quick-zone {zone}: {e}"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let limits = limits(&args)?;
    let suffix = normalize_hostname(&args.tunnel_suffix)
        .map_err(|e| anyhow::anyhow!("--tunnel-suffix: {e}"))?;
    if suffix.starts_with('*') {
        bail!(
            "--tunnel-suffix {}: a suffix cannot be a wildcard",
            args.tunnel_suffix
        );
    }
    let store = bootstrap(&args.data_dir, &args.zones)?;
    let mut state = AppState::new(store, suffix)?;
    state.max_poll = args.long_poll_max;
    state.max_body = args.max_body;
    if let Some(zone) = &args.quick_zone {
        state.quick = Some(Arc::new(quick_tunnels(&*state.store, zone, &args)?));
    }
    // Routes stored before the isolation rule (or behind the API's back) that break it are
    // named now; they are not served to edges.
    let broken = api::isolation::audit(&state)?;
    if broken > 0 {
        tracing::warn!(routes = broken, "routes that cross accounts do not route");
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = bind(&args.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %args.data_dir.display(), "control plane listening");
        // Tests and scripts read this line to learn the port when --listen used port 0.
        println!("ringway control plane listening on http://{addr}");
        serve_with(listener, state, limits, crate::signal::shutdown_signal()).await
    })
}

/// The control plane's runtime: two threads are plenty for an API that is off the data path.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Serves the API (and expires leases) with the default limits until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, state, ServerLimits::default(), shutdown).await
}

/// Serves the API (and expires leases) within `limits` until `shutdown` resolves.
async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let expiry = tokio::spawn(api::expire_leases(state.clone()));
    let quick_expiry = tokio::spawn(api::quick::expire(state.clone()));
    let res = api::server::serve(listener, state, limits, shutdown)
        .await
        .context("control plane server failed");
    expiry.abort();
    quick_expiry.abort();
    res
}
