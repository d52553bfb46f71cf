//! `ringway service install [TOKEN]` and `service uninstall`: the connector as a systemd
//! service, with cloudflared's file layout and unit name (`cloudflared.service`, files in
//! `/etc/cloudflared/`), so scripts that run `systemctl restart cloudflared` keep working.
//!
//! The unit is `Type=simple` where cloudflared's is `Type=notify`: ringway does not send
//! sd_notify readiness, and a notify unit would be killed at `TimeoutStartSec`. No update
//! timer is installed (`--no-update-service` is accepted and changes nothing): ringway is
//! updated through the package or build that installed it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where the service's files live, relative to the root.
const CONFIG_DIR: &str = "etc/cloudflared";
const TOKEN_FILE: &str = "token";
const CONFIG_FILE: &str = "config.yml";
const UNIT_NAME: &str = "cloudflared.service";
const UNIT_DIR: &str = "etc/systemd/system";

/// `service install`.
#[derive(Debug, Clone)]
pub struct ServiceInstall {
    /// The filesystem root the files go under (`/`; another root for images and tests).
    pub root: PathBuf,
    /// A tunnel token: written to `/etc/cloudflared/token` and run with `--token-file`.
    pub token: Option<String>,
    /// cloudflared's switch for its update timer; ringway installs none.
    pub no_update_service: bool,
    /// The binary the unit runs (the running executable).
    pub binary: PathBuf,
    /// The user's `--config`, if given; otherwise cloudflared's search directories.
    pub config: Option<PathBuf>,
}

/// `service uninstall`.
#[derive(Debug, Clone)]
pub struct ServiceUninstall {
    pub root: PathBuf,
}

pub fn install(opts: &ServiceInstall) -> anyhow::Result<()> {
    require_root(&opts.root, "install")?;
    let unit_path = opts.root.join(UNIT_DIR).join(UNIT_NAME);
    if unit_path.exists() {
        bail!(
            "{} already exists: run `ringway service uninstall` first",
            unit_path.display()
        );
    }
    let config_dir = opts.root.join(CONFIG_DIR);
    let args = match &opts.token {
        Some(token) => {
            write_token(&config_dir, token)?;
            format!("tunnel run --token-file /{CONFIG_DIR}/{TOKEN_FILE}")
        }
        None => {
            install_config(opts, &config_dir)?;
            format!("--config /{CONFIG_DIR}/{CONFIG_FILE} tunnel run")
        }
    };
    fs::create_dir_all(unit_path.parent().unwrap_or(&opts.root))
        .with_context(|| format!("creating {}", opts.root.join(UNIT_DIR).display()))?;
    fs::write(&unit_path, unit_text(&opts.binary, &args))
        .with_context(|| format!("writing {}", unit_path.display()))?;
    println!("installed {}", unit_path.display());
    systemctl(
        &opts.root,
        &[&["daemon-reload"], &["enable", "--now", UNIT_NAME]],
    )
}

pub fn uninstall(opts: &ServiceUninstall) -> anyhow::Result<()> {
    require_root(&opts.root, "uninstall")?;
    let unit_path = opts.root.join(UNIT_DIR).join(UNIT_NAME);
    if !unit_path.exists() {
        bail!("{} is not installed", unit_path.display());
    }
    systemctl(&opts.root, &[&["disable", "--now", UNIT_NAME]])?;
    fs::remove_file(&unit_path).with_context(|| format!("removing {}", unit_path.display()))?;
    // The token belongs to the service; a config.yml may be the user's own, so it stays.
    let token = opts.root.join(CONFIG_DIR).join(TOKEN_FILE);
    if token.exists() {
        fs::remove_file(&token).with_context(|| format!("removing {}", token.display()))?;
    }
    println!("removed {}", unit_path.display());
    systemctl(&opts.root, &[&["daemon-reload"]])
}

/// Writing under `/` needs root; another root (an image being built, a test) does not.
fn require_root(root: &Path, verb: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user: no libc call needed.
    let euid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if root == Path::new("/") && euid != 0 {
        bail!("service {verb} needs root: run it with sudo (or give --root DIR)");
    }
    Ok(())
}

/// cloudflared's unit, with `Type=simple` (see the module docs).
fn unit_text(binary: &Path, args: &str) -> String {
    format!(
        "[Unit]\n\
         Description=Cloudflare Tunnel client (ringway)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         TimeoutStartSec=15\n\
         Type=simple\n\
         ExecStart={} --no-autoupdate {args}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        binary.display()
    )
}

/// Writes the token readable by its owner only (0600, also when the file existed).
fn write_token(dir: &Path, token: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(TOKEN_FILE);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    f.write_all(token.trim().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copies the user's config.yml to `/etc/cloudflared/config.yml`, as cloudflared does; it
/// must name the tunnel and its credentials file.
fn install_config(opts: &ServiceInstall, dir: &Path) -> anyhow::Result<()> {
    let target = dir.join(CONFIG_FILE);
    let source = match &opts.config {
        Some(p) => p.clone(),
        None => crate::files::search::find_config_file(&crate::files::search::default_search_dirs())
            .with_context(|| {
                format!(
                    "no token given and no config.yml found: pass a token (`service install TOKEN`) or create {}",
                    target.display()
                )
            })?,
    };
    let text =
        fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let has = |key: &str| {
        text.lines().any(|l| {
            l.trim_start()
                .strip_prefix(key)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .is_some_and(|v| !v.trim().is_empty())
        })
    };
    if !has("tunnel") || !has("credentials-file") {
        bail!(
            "{} must name the tunnel and its credentials (tunnel: TUNNEL-UUID, credentials-file: CREDENTIALS-FILE)",
            source.display()
        );
    }
    if source != target {
        if target.exists() {
            bail!(
                "possible conflicting configuration in {} and {}: remove the second or run `ringway --config {} service install`",
                source.display(),
                target.display(),
                target.display()
            );
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::copy(&source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}

/// Runs `systemctl` for each argument list when the root is `/` and systemd is running;
/// otherwise prints what to run.
fn systemctl(root: &Path, calls: &[&[&str]]) -> anyhow::Result<()> {
    let live = root == Path::new("/") && Path::new("/run/systemd/system").exists();
    for args in calls {
        if !live {
            println!("run: systemctl {}", args.join(" "));
            continue;
        }
        let status = Command::new("systemctl")
            .args(*args)
            .status()
            .context("running systemctl")?;
        if !status.success() {
            bail!("systemctl {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &Path, token: Option<&str>, config: Option<PathBuf>) -> ServiceInstall {
        ServiceInstall {
            root: root.to_path_buf(),
            token: token.map(str::to_string),
            no_update_service: false,
            binary: PathBuf::from("/usr/local/bin/ringway"),
            config,
        }
    }

    #[test]
    fn service_install_with_a_token_writes_a_private_token_and_the_unit() {
        let root = tempfile::tempdir().unwrap();
        install(&opts(root.path(), Some("eyJhIjoi"), None)).unwrap();
        let token = root.path().join("etc/cloudflared/token");
        assert_eq!(fs::read_to_string(&token).unwrap(), "eyJhIjoi");
        let mode = fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let unit =
            fs::read_to_string(root.path().join("etc/systemd/system/cloudflared.service")).unwrap();
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/ringway --no-autoupdate tunnel run --token-file /etc/cloudflared/token\n"
        ));
        verify_unit(root.path(), "tunnel run --token-file");
        let again = install(&opts(root.path(), Some("x"), None)).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        uninstall(&ServiceUninstall {
            root: root.path().to_path_buf(),
        })
        .unwrap();
        assert!(!token.exists());
        assert!(
            !root
                .path()
                .join("etc/systemd/system/cloudflared.service")
                .exists()
        );
    }

    /// `systemd-analyze verify` on the installed unit, rewritten to run this test binary (verify
    /// checks that ExecStart's program exists). Skips, saying so, where systemd-analyze is absent
    /// (Debian: package `systemd`).
    fn verify_unit(root: &Path, expect: &str) {
        let unit = root.join("etc/systemd/system/cloudflared.service");
        let text = fs::read_to_string(&unit).unwrap();
        assert!(text.contains(expect), "{text}");
        let exe = std::env::current_exe().unwrap();
        let checked = root.join("cloudflared.service");
        fs::write(
            &checked,
            text.replace("/usr/local/bin/ringway", &exe.display().to_string()),
        )
        .unwrap();
        // Units the service names but a bare test root lacks (sysinit.target...) are not its errors.
        let out = match Command::new("systemd-analyze")
            .args(["verify", "--recursive-errors=no"])
            .arg(&checked)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping systemd-analyze verify: {e} (install the systemd package)");
                return;
            }
        };
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn service_install_with_a_config_copies_it_and_checks_its_keys() {
        let root = tempfile::tempdir().unwrap();
        let user = root.path().join("user.yml");
        fs::write(&user, "url: http://127.0.0.1:8000\n").unwrap();
        let e = install(&opts(root.path(), None, Some(user.clone()))).unwrap_err();
        assert!(e.to_string().contains("must name the tunnel"), "{e}");
        fs::write(
            &user,
            "tunnel: abc\ncredentials-file: /root/.cloudflared/abc.json\n",
        )
        .unwrap();
        install(&opts(root.path(), None, Some(user.clone()))).unwrap();
        let copied = fs::read_to_string(root.path().join("etc/cloudflared/config.yml")).unwrap();
        assert!(copied.starts_with("tunnel: abc"));
        let unit =
            fs::read_to_string(root.path().join("etc/systemd/system/cloudflared.service")).unwrap();
        assert!(unit.contains("--no-autoupdate --config /etc/cloudflared/config.yml tunnel run\n"));
        verify_unit(root.path(), "--config /etc/cloudflared/config.yml");
    }
}
