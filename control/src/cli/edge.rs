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
            retry: a.quic_retry,
            retry_threshold: a.quic_retry_threshold,
            max_handshakes: a.max_handshakes,
            handshake_timeout: a.handshake_timeout,
        },
    })
}
