//! `ringway tunnel ingress validate|rule`: local checks of config.yml, no control plane needed.

use std::path::PathBuf;

use anyhow::anyhow;

use super::args::{IngressVerb, TunnelCmd};
use crate::config::{self, ConfigFile, Ingress};
use crate::files;

/// `--config`, else the first config.yml/config.yaml in cloudflared's search directories.
pub fn config_path(t: &TunnelCmd) -> anyhow::Result<PathBuf> {
    match &t.config {
        Some(p) => Ok(files::search::expand_home(p)),
        None => files::find_config_file(&files::default_search_dirs()).ok_or_else(|| {
            anyhow!(
                "No configuration file was found. Please create one, or use the --config flag \
                 to specify its filepath."
            )
        }),
    }
}

pub fn run(t: &TunnelCmd, verb: &IngressVerb) -> anyhow::Result<()> {
    let path = config_path(t)?;
    let cfg = ConfigFile::load(&path)?;
    match verb {
        IngressVerb::Validate => {
            let report = config::validate_report(&cfg, &path);
            print!("{}", report.stdout);
            report.result.map_err(|e| anyhow!("{e}"))
        }
        IngressVerb::Rule { url } => {
            println!("Using rules from {}", path.display());
            let ingress =
                Ingress::from_config(&cfg).map_err(|e| anyhow!("Validation failed: {e}"))?;
            print!("{}", ingress.describe_match(url)?);
            Ok(())
        }
    }
}
