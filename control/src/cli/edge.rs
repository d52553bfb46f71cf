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
    edge::run(EdgeOptions {
        control: a.control,
        edge_token: ApiToken::new(a.edge_token.into_inner()),
        state_dir: crate::files::search::expand_home(&a.state_dir),
        tunnel_listen: a.tunnel_listen,
        http_listen: a.http_listen,
        location: a.location,
        workers: a.workers,
        handshakes: edge::HandshakeLimits {
        public: dataplane::edge::PublicLimits {
            head_timeout: a.http_head_timeout,
            keep_alive_timeout: a.http_keepalive_timeout,
            body_idle_timeout: a.http_body_timeout,
            request_timeout: (!a.http_request_timeout.is_zero()).then_some(a.http_request_timeout),
            max_connections_per_worker: a.http_max_connections,
            max_tunnel_streams: a.tunnel_max_streams,
            ..dataplane::edge::PublicLimits::default()
        },
            retry: a.quic_retry,
            retry_threshold: a.quic_retry_threshold,
            max_handshakes: a.max_handshakes,
            handshake_timeout: a.handshake_timeout,
        },
    })
}
