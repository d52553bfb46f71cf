//! `ringway edge run`: flags → [`crate::edge::EdgeOptions`].

use super::args::EdgeRunArgs;
use crate::edge::{self, EdgeOptions};
use crate::secret::ApiToken;

pub fn run(a: EdgeRunArgs) -> anyhow::Result<()> {
    if a.max_handshakes == 0 {
        anyhow::bail!("--max-handshakes must be at least 1");
    }
    if a.handshake_timeout.is_zero() {
        anyhow::bail!("--handshake-timeout must be longer than 0");
    }
    for (flag, zero) in [
        ("--http-head-timeout", a.http_head_timeout.is_zero()),
        (
            "--http-keepalive-timeout",
            a.http_keepalive_timeout.is_zero(),
        ),
        ("--http-body-timeout", a.http_body_timeout.is_zero()),
        ("--http-max-connections", a.http_max_connections == 0),
        ("--tunnel-max-streams", a.tunnel_max_streams == 0),
    ] {
        if zero {
            anyhow::bail!("{flag} must be greater than 0");
        }
    }
    // Resolved before anything starts, so a missing token is one clear line.
    edge::run(EdgeOptions {
        control: a.control,
        edge_token: edge_token(a.edge_token, a.edge_token_file.as_deref())?,
        state_dir: crate::files::search::expand_home(&a.state_dir),
        tunnel_listen: a.tunnel_listen,
        http_listen: a.http_listen,
        location: a.location,
        workers: a.workers,
        public: dataplane::edge::PublicLimits {
            head_timeout: a.http_head_timeout,
            keep_alive_timeout: a.http_keepalive_timeout,
            body_idle_timeout: a.http_body_timeout,
            request_timeout: (!a.http_request_timeout.is_zero()).then_some(a.http_request_timeout),
            max_connections_per_worker: a.http_max_connections,
            max_tunnel_streams: a.tunnel_max_streams,
            ..dataplane::edge::PublicLimits::default()
        },
        handshakes: edge::HandshakeLimits {
            retry: a.quic_retry,
            retry_threshold: a.quic_retry_threshold,
            max_handshakes: a.max_handshakes,
            handshake_timeout: a.handshake_timeout,
        },
    })
}

/// The environment variable that may hold the edge token.
pub const EDGE_TOKEN_ENV: &str = "RINGWAY_EDGE_TOKEN";

/// The edge token from exactly one of `--edge-token-file`, `RINGWAY_EDGE_TOKEN` and
/// `--edge-token`. Two sources are refused rather than ranked: a stale variable silently
/// winning over a rotated file is worse than an error.
fn edge_token(
    flag: Option<crate::secret::Secret<String>>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<ApiToken> {
    let env = std::env::var(EDGE_TOKEN_ENV).ok().filter(|v| !v.is_empty());
    let given = [file.is_some(), env.is_some(), flag.is_some()];
    match given.iter().filter(|g| **g).count() {
        0 => anyhow::bail!(
            "the edge token is required: pass --edge-token-file PATH (the control plane's \
             edge-token file), or set {EDGE_TOKEN_ENV}, or pass --edge-token"
        ),
        1 => {}
        _ => anyhow::bail!(
            "the edge token was given more than once: use exactly one of --edge-token-file, \
             {EDGE_TOKEN_ENV} and --edge-token"
        ),
    }
    let token = match (file, env, flag) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --edge-token-file {}: {e}", path.display())
            })?;
            let token = text.trim_end_matches(['\n', '\r']).to_string();
            if token.trim().is_empty() {
                anyhow::bail!("--edge-token-file {} is empty", path.display());
            }
            token
        }
        (None, Some(env), _) => env,
        (None, None, Some(flag)) => flag.into_inner(),
        (None, None, None) => unreachable!("counted above"),
    };
    if token.trim() != token || token.contains(char::is_whitespace) {
        anyhow::bail!("the edge token contains whitespace; check where it was copied from");
    }
    Ok(ApiToken::new(token))
}
