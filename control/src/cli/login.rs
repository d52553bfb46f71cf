//! `ringway tunnel login`: get a zone-scoped cert.pem from the control plane.
//!
//! Interactive: print (and try to open) `/login?session=ID`, then poll `/login/poll` until a
//! person has signed in with the admin token and picked a zone. Non-interactive:
//! `--api-token TOKEN --zone ZONE` asks `/login/cert` directly. Either way cert.pem is written
//! where cloudflared writes it (`~/.cloudflared/cert.pem`, mode 0600) and records the control
//! URL so later commands need no `--api-url`.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use super::args::LoginArgs;
use crate::client::ApiClient;
use crate::files::{self, OriginCert};
use crate::secret::ApiToken;

/// How long the CLI waits for a person to finish in the browser.
const LOGIN_WAIT: Duration = Duration::from_secs(600);
const POLL_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: &LoginArgs) -> anyhow::Result<()> {
    let control = args
        .control
        .as_deref()
        .ok_or_else(|| {
            anyhow!("login needs the control-plane URL: pass --control http://HOST:PORT")
        })?
        .trim_end_matches('/')
        .to_string();
    url::Url::parse(&control).with_context(|| format!("--control {control} is not a valid URL"))?;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => files::default_search_dirs()
            .first()
            .map(|d| d.join("cert.pem"))
            .ok_or_else(|| anyhow!("cannot find a home directory; pass --out PATH"))?,
    };
    if std::fs::metadata(&out).is_ok_and(|m| m.len() > 0) {
        bail!(
            "You have an existing certificate at {} which login would overwrite. If this is \
             intentional, please move or delete that file then run this command again.",
            out.display()
        );
    }
    let issued = match (&args.api_token, &args.zone) {
        (Some(token), Some(zone)) => {
            let client = ApiClient::new(&control, ApiToken::new(token.expose().clone()));
            client.post("/login/cert", &json!({"zone": zone}))?.result
        }
        (None, None) => browser_login(&control, args.no_browser)?,
        _ => bail!("non-interactive login needs both --api-token and --zone"),
    };
    let field = |k: &str| -> anyhow::Result<String> {
        issued[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the control plane's login answer has no {k}"))
    };
    let cert = OriginCert {
        zone_id: field("zoneID")?,
        account_id: field("accountID")?,
        api_token: ApiToken::new(field("apiToken")?),
        endpoint: None,
        control_url: Some(control),
    };
    if let Some(dir) = out.parent() {
        create_private_dir(dir)?;
    }
    cert.write(&out)?;
    eprintln!(
        "You have successfully logged in to zone {}.\nIf you wish to copy your credentials to a \
         server, they have been saved to:\n{}",
        issued["zoneName"].as_str().unwrap_or(&cert.zone_id),
        out.display()
    );
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn browser_login(control: &str, no_browser: bool) -> anyhow::Result<Value> {
    let session = hex::encode(rand::random::<[u8; 16]>());
    let url = format!("{control}/login?session={session}");
    let opened = !no_browser
        && std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if opened {
        eprintln!(
            "A browser window should have opened at the following URL:\n\n{url}\n\nIf the browser failed to open, please visit the URL above directly in your browser."
        );
    } else {
        eprintln!(
            "Please open the following URL and log in with the control plane's admin token:\n\n{url}\n\nLeave ringway running to download the cert automatically."
        );
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let poll = format!("{control}/login/poll?session={session}");
    let start = Instant::now();
    while start.elapsed() < LOGIN_WAIT {
        let mut resp = agent
            .get(&poll)
            .call()
            .map_err(|e| anyhow!("cannot reach the control plane at {control}: {e}"))?;
        match resp.status().as_u16() {
            200 => {
                let body: Value = resp.body_mut().read_json()?;
                return Ok(body["result"].clone());
            }
            202 => std::thread::sleep(POLL_EVERY),
            s => bail!("login failed: the control plane answered HTTP {s}"),
        }
    }
    bail!(
        "login timed out after {} s: nobody signed in",
        LOGIN_WAIT.as_secs()
    )
}
