//! The release binaries the benches run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The release binaries the benches run, built on demand.
#[derive(Debug, Clone)]
pub struct Bins {
    pub root: PathBuf,
    pub ringway: PathBuf,
    pub loadgen: PathBuf,
    pub origin: PathBuf,
}

impl Bins {
    /// Finds `target/release/{ringway,loadgen,loadgen-origin}`, building them when missing,
    /// and checks that loadgen (or `loadgen`, when given, e.g. an older build to compare)
    /// answers `--help`.
    pub fn locate(loadgen: Option<&Path>) -> Result<Bins> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let rel = target.join("release");
        let mut bins = Bins {
            ringway: rel.join("ringway"),
            loadgen: rel.join("loadgen"),
            origin: rel.join("loadgen-origin"),
            root,
        };
        if [&bins.ringway, &bins.loadgen, &bins.origin]
            .iter()
            .any(|p| !p.exists())
        {
            println!("building release binaries: cargo build --release -p control -p loadgen");
            let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "-p", "control", "-p", "loadgen"])
                .current_dir(&bins.root)
                .status()
                .context("build: run cargo")?;
            if !st.success() {
                bail!("build: cargo build --release -p control -p loadgen failed ({st})");
            }
        }
        if let Some(l) = loadgen {
            bins.loadgen = l.to_path_buf();
        }
        let help = Command::new(&bins.loadgen).arg("--help").output();
        match help {
            Ok(o) if o.status.success() => Ok(bins),
            Ok(o) => bail!(
                "loadgen: {} --help failed ({}): {}",
                bins.loadgen.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => bail!("loadgen: cannot run {}: {e}", bins.loadgen.display()),
        }
    }
}
