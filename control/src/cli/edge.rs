//! `ringway edge run`: flags → [`crate::edge::EdgeOptions`].

use super::args::EdgeRunArgs;
use crate::edge::{self, EdgeOptions};
use crate::secret::ApiToken;

pub fn run(a: EdgeRunArgs) -> anyhow::Result<()> {
    edge::run(EdgeOptions {
        control: a.control,
        edge_token: ApiToken::new(a.edge_token.into_inner()),
        state_dir: crate::files::search::expand_home(&a.state_dir),
        tunnel_listen: a.tunnel_listen,
        http_listen: a.http_listen,
        location: a.location,
        workers: a.workers,
    })
}
