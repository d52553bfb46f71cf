//! `ringway tunnel run`: flags → [`crate::connector::RunOptions`].

use anyhow::bail;

use super::args::{RunArgs, TunnelCmd};
use crate::connector::{self, RunOptions};

pub fn run(t: &TunnelCmd, a: &RunArgs) -> anyhow::Result<()> {
    if !matches!(a.protocol.as_str(), "quic" | "auto") {
        bail!("--protocol {}: ringway connects over quic only", a.protocol);
    }
    connector::run(RunOptions {
        tunnel: a.tunnel.clone(),
        config: t.config.clone(),
        search_config: true,
        origincert: t.origincert.clone(),
        api_url: t.api_url.clone(),
        credentials_file: a.credentials_file.clone(),
        token: a.token.as_ref().map(|s| s.expose().clone()),
        url: a.url.clone(),
        hello_world: a.hello_world,
        edges: a.edge.clone(),
        cacert: a.cacert.clone(),
        ha_connections: a.ha_connections,
        workers: a.workers,
        metrics: a.metrics.clone(),
        retries: a.retries,
        grace_period: crate::config::parse_go_duration(&a.grace_period)
            .map_err(|e| anyhow::anyhow!("--grace-period: {e}"))?,
        max_failures: a.max_failures,
        ..RunOptions::default()
    })?;
    Ok(())
}
