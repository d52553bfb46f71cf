//! `ringway tunnel <verb>`: each verb makes the same requests cloudflared makes and prints what
//! cloudflared prints, so scripts written for one work with the other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::args::{OutputFormat, RouteVerb, TunnelCmd, TunnelVerb};
use super::flags::Flags;
use super::output::{render, table};
use crate::api::tunnels::{check_tunnel_name, escape_name, is_unsafe_char};
use crate::context::{ContextError, Ctx};
use crate::files::{self, Credentials, TunnelToken};
use crate::hostname::normalize_hostname;
use crate::secret::TunnelSecret;

pub fn run(t: TunnelCmd, flags: &Flags) -> anyhow::Result<()> {
    let Some(verb) = &t.verb else {
        return super::run::bare_tunnel(&t, flags);
    };
    match verb {
        TunnelVerb::Login(args) => super::login::run(args),
        TunnelVerb::Ingress(v) => super::ingress::run(&t, v),
        TunnelVerb::Run(a) => super::run::run(&t, a, flags),
        TunnelVerb::Ready => super::run::ready(flags),
        TunnelVerb::Create {
            name,
            output,
            credentials_file,
            secret,
        } => create(
            &t,
            name,
            *output,
            credentials_file.clone(),
            secret.as_ref().map(|s| s.expose().as_str()),
        ),
        TunnelVerb::List {
            output,
            name,
            name_prefix,
            exclude_name_prefix,
            id,
            show_deleted,
            when,
        } => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if !show_deleted {
                q.append_pair("is_deleted", "false");
            }
            if let Some(n) = name {
                q.append_pair("name", n);
            }
            if let Some(p) = name_prefix {
                q.append_pair("name_prefix", p);
            }
            if let Some(p) = exclude_name_prefix {
                q.append_pair("exclude_prefix", p);
            }
            if let Some(i) = id {
                let u =
                    Uuid::parse_str(i).map_err(|e| anyhow!("{i} is not a valid tunnel ID: {e}"))?;
                q.append_pair("uuid", &u.to_string());
            }
            if let Some(w) = when {
                OffsetDateTime::parse(w, &Rfc3339)
                    .map_err(|_| anyhow!("--when {w} is not an RFC 3339 time"))?;
                q.append_pair("existed_at", w);
            }
            list(&t, &q.finish(), *output)
        }
        TunnelVerb::Info { tunnel, output } => info(&t, tunnel, *output),
        TunnelVerb::Delete {
            tunnels,
            force,
            credentials_file,
        } => delete(&t, tunnels, *force, credentials_file.as_ref()),
        TunnelVerb::Cleanup {
            tunnels,
            connector_id,
        } => cleanup(&t, tunnels, connector_id.as_deref()),
        TunnelVerb::Token { tunnel, cred_file } => token(&t, tunnel, cred_file.as_ref()),
        TunnelVerb::Route(r) => route(&t, r),
    }
}

fn create(
    t: &TunnelCmd,
    name: &str,
    output: Option<OutputFormat>,
    credentials_file: Option<PathBuf>,
    secret: Option<&str>,
) -> anyhow::Result<()> {
    // The same rule the API applies, checked before anything is sent.
    check_tunnel_name(name.trim()).map_err(|e| anyhow!("failed to create tunnel: {e}"))?;
    let secret = match secret {
        Some(s) => {
            let secret = TunnelSecret::from_base64(s).context("failed to create tunnel")?;
            TunnelSecret::check_unpredictable(secret.expose())
                .context("failed to create tunnel")?;
            secret
        }
        None => TunnelSecret::generate(),
    };
    let ctx = load_ctx(t)?;
    let default_path = credentials_file.is_none();
    let body = json!({"name": name, "tunnel_secret": secret.to_base64()});
    let created = ctx
        .client
        .post(&ctx.tunnels_path(""), &body)
        .map_err(|e| match e.status() {
            Some(409) => {
                anyhow!(
                    "failed to create tunnel: tunnel with name already exists: {}",
                    escape_name(name)
                )
            }
            _ => anyhow!("failed to create tunnel: {e}"),
        })?
        .result;
    let id = created["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow!("failed to create tunnel: the control plane returned no id"))?;
    let path =
        credentials_file.unwrap_or_else(|| files::credentials_path_next_to(&ctx.cert_path, id));
    let creds = Credentials {
        account_tag: ctx.cert.account_id.clone(),
        tunnel_secret: secret,
        tunnel_id: id,
        endpoint: ctx.cert.endpoint.clone().unwrap_or_default(),
    };
    if let Err(write_err) = creds.write_new(&path) {
        // A tunnel nobody can run is worse than none: take it back.
        let undo = ctx
            .client
            .delete(&ctx.tunnels_path(&format!("/{id}?cascade=true")));
        return Err(match undo {
            Ok(_) => anyhow!(
                "tunnel '{name}' was created with ID {id}, but its credentials could not be \
                 written ({write_err}); the tunnel was deleted, because it can't be run \
                 without the credentials file"
            ),
            Err(e) => anyhow!(
                "tunnel '{name}' was created with ID {id}, but its credentials could not be \
                 written ({write_err}), and deleting it failed too ({e}); delete it with \
                 `ringway tunnel delete {id}`"
            ),
        });
    }
    match output {
        Some(f) => {
            let v = if f == OutputFormat::Yaml {
                let mut tunnel = created.clone();
                let token = tunnel
                    .as_object_mut()
                    .and_then(|m| m.remove("token"))
                    .unwrap_or(Value::Null);
                json!({"tunnel": tunnel, "token": token})
            } else {
                created
            };
            print!("{}", terminal_safe(render(f, &v)?));
        }
        None => {
            print!("Tunnel credentials written to {}.", path.display());
            if default_path {
                print!(
                    " ringway chose this file based on where your origin certificate was found."
                );
            }
            println!(" Keep this file secret. To revoke these credentials, delete the tunnel.");
            println!("\nCreated tunnel {} with id {id}", escape_name(name));
        }
    }
    Ok(())
}

/// `-o json|yaml` output with every control or bidi character that is not layout (a name
/// stored before the name rule) written as a `\uXXXX` escape: JSON escapes only C0 controls
/// itself, YAML none of the bidi ones, and a terminal acts on them. In JSON the escape reads
/// back as the same character; in YAML it stays the escape's text, which beats a terminal
/// that reorders the rest of the line.
fn terminal_safe(out: String) -> String {
    if !out.chars().any(|c| c != '\n' && is_unsafe_char(c)) {
        return out;
    }
    out.chars()
        .map(|c| {
            if c != '\n' && is_unsafe_char(c) {
                format!("\\u{:04X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// cert.pem and the API client from the `tunnel` command's `--origincert` and `--api-url`.
fn load_ctx(t: &TunnelCmd) -> Result<Ctx, ContextError> {
    Ctx::from_flags(t.origincert.as_deref(), t.api_url.as_deref())
}

/// Fetches every page of a tunnel list, the way cloudflared pages.
fn list_all(ctx: &Ctx, query: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    // A hard bound on pages: a misbehaving server cannot make the CLI loop forever.
    for page in 1..=10_000 {
        let sep = if query.is_empty() { "" } else { "&" };
        let ans = ctx
            .client
            .get(&ctx.tunnels_path(&format!("?{query}{sep}page={page}")))?;
        let items = ans.result.as_array().cloned().unwrap_or_default();
        let n = items.len();
        out.extend(items);
        let info = ans.result_info.unwrap_or(Value::Null);
        let per_page = info["per_page"].as_u64().unwrap_or(0) as usize;
        let total = info["total_count"].as_u64().unwrap_or(0) as usize;
        if n == 0 || n < per_page || out.len() >= total {
            break;
        }
    }
    Ok(out)
}

fn colo_counts(conns: &[Value]) -> String {
    let mut by_colo: BTreeMap<&str, usize> = BTreeMap::new();
    for c in conns {
        if !c["is_pending_reconnect"].as_bool().unwrap_or(false) {
            *by_colo
                .entry(c["colo_name"].as_str().unwrap_or(""))
                .or_default() += 1;
        }
    }
    by_colo
        .iter()
        .map(|(colo, n)| format!("{n}x{colo}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(t: &TunnelCmd, query: &str, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let ctx = load_ctx(t)?;
    let mut tunnels = list_all(&ctx, query)?;
    tunnels.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if let Some(f) = output {
        print!("{}", terminal_safe(render(f, &Value::Array(tunnels))?));
        return Ok(());
    }
    if tunnels.is_empty() {
        println!(
            "No tunnels were found for the given filter flags. You can use 'ringway tunnel create' to create a tunnel."
        );
        return Ok(());
    }
    println!(
        "You can obtain more detailed information for each tunnel with `ringway tunnel info <name/uuid>`"
    );
    let mut rows = vec![vec![
        "ID".to_string(),
        "NAME".into(),
        "CREATED".into(),
        "CONNECTIONS".into(),
    ]];
    for tn in &tunnels {
        let conns = tn["connections"].as_array().cloned().unwrap_or_default();
        rows.push(vec![
            tn["id"].as_str().unwrap_or("").to_string(),
            escape_name(tn["name"].as_str().unwrap_or("")),
            tn["created_at"].as_str().unwrap_or("").to_string(),
            colo_counts(&conns),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Go's `time.Time.String()` for a UTC time at second resolution.
fn go_time(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"
            );
            t.to_offset(time::UtcOffset::UTC)
                .format(&fmt)
                .unwrap_or_else(|_| s.to_string())
        }
        Err(_) => s.to_string(),
    }
}

fn info(t: &TunnelCmd, input: &str, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let ctx = load_ctx(t)?;
    let id = ctx.find_id(input)?;
    let clients = ctx
        .client
        .get(&ctx.tunnels_path(&format!("/{id}/connections")))?
        .result;
    let clients = clients.as_array().cloned().unwrap_or_default();
    let found = ctx
        .client
        .get(&ctx.tunnels_path(&format!("?page=1&uuid={id}")))?
        .result;
    let tunnel = match found.as_array().map(Vec::as_slice) {
        Some([one]) => one.clone(),
        other => bail!(
            "Expected to find a single tunnel with uuid {id} but found {} tunnels.",
            other.map_or(0, <[Value]>::len)
        ),
    };
    if let Some(f) = output {
        let clients: Vec<Value> = clients.into_iter().map(with_label_and_tags).collect();
        let v = json!({
            "id": tunnel["id"],
            "name": tunnel["name"],
            "createdAt": tunnel["created_at"],
            "conns": clients,
        });
        print!("{}", terminal_safe(render(f, &v)?));
        return Ok(());
    }
    if clients.is_empty() {
        println!("Your tunnel {id} does not have any active connection.");
        return Ok(());
    }
    println!(
        "NAME:     {}",
        escape_name(tunnel["name"].as_str().unwrap_or(""))
    );
    println!("ID:       {id}");
    println!(
        "CREATED:  {}",
        go_time(tunnel["created_at"].as_str().unwrap_or(""))
    );
    println!();
    let mut rows = vec![vec![
        "CONNECTOR ID".to_string(),
        "CREATED".into(),
        "ARCHITECTURE".into(),
        "VERSION".into(),
        "ORIGIN IP".into(),
        "EDGE".into(),
    ]];
    for c in &clients {
        let conns = c["conns"].as_array().cloned().unwrap_or_default();
        let edge = colo_counts(&conns);
        if edge.is_empty() {
            continue;
        }
        rows.push(vec![
            c["id"].as_str().unwrap_or("").to_string(),
            c["run_at"].as_str().unwrap_or("").to_string(),
            c["arch"].as_str().unwrap_or("").to_string(),
            c["version"].as_str().unwrap_or("").to_string(),
            conns
                .first()
                .and_then(|x| x["origin_ip"].as_str())
                .unwrap_or("")
                .to_string(),
            edge,
        ]);
    }
    if rows.len() == 1 {
        println!("This tunnel has no active connectors.");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// A connector's `--label` and `--tag`s, read back from the features it registered with
/// (`ringway-label=…`, `ringway-tag=K=V`), as `label` and `tags` next to them.
fn with_label_and_tags(mut client: Value) -> Value {
    use crate::connector::{LABEL_FEATURE, TAG_FEATURE};
    let features: Vec<String> = client["features"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let label = features
        .iter()
        .find_map(|f| f.strip_prefix(LABEL_FEATURE))
        .map(str::to_owned);
    let tags: serde_json::Map<String, Value> = features
        .iter()
        .filter_map(|f| f.strip_prefix(TAG_FEATURE)?.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    if let Some(obj) = client.as_object_mut() {
        obj.insert("label".into(), label.map_or(Value::Null, Value::String));
        obj.insert("tags".into(), Value::Object(tags));
    }
    client
}

/// Resolves many NAME|UUID arguments: UUIDs first, then names, as cloudflared orders them.
fn find_ids(ctx: &Ctx, inputs: &[String]) -> anyhow::Result<Vec<Uuid>> {
    let (ids, names): (Vec<_>, Vec<_>) = inputs.iter().partition(|s| Uuid::parse_str(s).is_ok());
    let mut out: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
    for n in names {
        out.push(ctx.find_id(n)?);
    }
    Ok(out)
}

fn delete(
    t: &TunnelCmd,
    inputs: &[String],
    force: bool,
    credentials_file: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let ctx = load_ctx(t)?;
    for id in find_ids(&ctx, inputs)? {
        let tn = ctx
            .client
            .get(&ctx.tunnels_path(&format!("/{id}")))
            .with_context(|| format!("Can't get tunnel information. Please check tunnel id: {id}"))?
            .result;
        if !tn["deleted_at"].is_null() {
            bail!("Tunnel {id} has already been deleted");
        }
        let q = if force { "?cascade=true" } else { "" };
        ctx.client
            .delete(&ctx.tunnels_path(&format!("/{id}{q}")))
            .with_context(|| format!("Error deleting tunnel {id}"))?;
        let creds = match credentials_file {
            Some(p) => Some(p.clone()),
            None => files::find_credentials(
                id,
                &files::credentials_search_dirs(
                    Some(&ctx.cert_path),
                    &files::default_search_dirs(),
                ),
            )
            .ok(),
        };
        if let Some(p) = creds.filter(|p| p.exists())
            && let Err(e) = std::fs::remove_file(&p)
        {
            tracing::warn!(
                "Tunnel {id} was deleted, but we could not remove its credentials file {}: {e}. \
                 Consider deleting this file manually.",
                p.display()
            );
        }
    }
    Ok(())
}

fn cleanup(t: &TunnelCmd, inputs: &[String], connector: Option<&str>) -> anyhow::Result<()> {
    let client_q = match connector {
        Some(c) => {
            let u = Uuid::parse_str(c)
                .map_err(|e| anyhow!("{c} is not a valid client ID (must be a UUID): {e}"))?;
            format!("?client_id={u}")
        }
        None => String::new(),
    };
    let ctx = load_ctx(t)?;
    for id in find_ids(&ctx, inputs)? {
        tracing::info!("Cleanup connection for tunnel {id}");
        ctx.client
            .delete(&ctx.tunnels_path(&format!("/{id}/connections{client_q}")))
            .with_context(|| format!("Error cleaning up connections for tunnel {id}"))?;
    }
    Ok(())
}

fn token(t: &TunnelCmd, input: &str, cred_file: Option<&PathBuf>) -> anyhow::Result<()> {
    let ctx = load_ctx(t)?;
    let id = ctx.find_id(input)?;
    let ans = ctx
        .client
        .get(&ctx.tunnels_path(&format!("/{id}/token")))
        .with_context(|| format!("Could not get the Token for the given Tunnel {id}"))?;
    let raw = ans
        .result
        .as_str()
        .ok_or_else(|| anyhow!("the control plane's token answer is not a string"))?;
    let token = TunnelToken::decode(raw)?;
    match cred_file {
        Some(p) => token
            .to_credentials()
            .write_new(p)
            .with_context(|| "error writing token credentials to JSON file".to_string())?,
        None => println!("{}", token.encode()),
    }
    Ok(())
}

fn route(t: &TunnelCmd, r: &RouteVerb) -> anyhow::Result<()> {
    let ctx = load_ctx(t)?;
    match r {
        RouteVerb::Dns {
            tunnel,
            hostname,
            overwrite_dns,
        } => {
            let id = ctx.find_id(tunnel)?;
            let host = normalize_hostname(hostname)?;
            if host.contains(':') {
                bail!("{hostname} is not a valid hostname");
            }
            let body =
                json!({"type": "dns", "user_hostname": host, "overwrite_existing": overwrite_dns});
            let res = ctx
                .client
                .put(&ctx.routes_path(id), &body)
                .context("Failed to add route")?
                .result;
            let name = res["name"].as_str().unwrap_or(&host).to_string();
            match res["cname"].as_str() {
                Some("new") => {
                    tracing::info!(tunnelID = %id, "Added CNAME {name} which will route to this tunnel")
                }
                Some("updated") => {
                    tracing::info!(tunnelID = %id, "{name} updated to route to your tunnel")
                }
                Some("unchanged") => {
                    tracing::info!(tunnelID = %id, "{name} is already configured to route to your tunnel")
                }
                other => bail!("unexpected route answer: {other:?}"),
            }
        }
        RouteVerb::Lb { tunnel, lb, pool } => {
            let id = ctx.find_id(tunnel)?;
            let lb_host = normalize_hostname(lb)
                .map_err(|_| anyhow!("{lb} is not a valid load balancer name"))?;
            let body = json!({"type": "lb", "lb_name": lb_host, "lb_pool": pool});
            let res = ctx
                .client
                .put(&ctx.routes_path(id), &body)
                .context("Failed to add route")?
                .result;
            let msg = match (res["load_balancer"].as_str(), res["pool"].as_str()) {
                (Some("new"), Some("new")) => format!(
                    "Created load balancer {lb_host} and added a new pool {pool} with this tunnel as an origin"
                ),
                (Some("new"), Some("updated")) => format!(
                    "Created load balancer {lb_host} with an existing pool {pool} which was updated to use this tunnel as an origin"
                ),
                (Some("new"), Some("unchanged")) => format!(
                    "Created load balancer {lb_host} with an existing pool {pool} which already has this tunnel as an origin"
                ),
                (Some("updated"), Some("new")) => format!(
                    "Added new pool {pool} with this tunnel as an origin to load balancer {lb_host}"
                ),
                (Some("updated"), Some("updated")) => format!(
                    "Updated pool {pool} to use this tunnel as an origin and added it to load balancer {lb_host}"
                ),
                (Some("updated"), Some("unchanged")) => format!(
                    "Added pool {pool}, which already has this tunnel as an origin, to load balancer {lb_host}"
                ),
                (Some("unchanged"), Some("updated")) => format!(
                    "Added this tunnel as an origin in pool {pool} which is already used by load balancer {lb_host}"
                ),
                (Some("unchanged"), Some("unchanged")) => format!(
                    "Load balancer {lb_host} already uses pool {pool} which has this tunnel as an origin"
                ),
                _ => bail!(
                    "Something went wrong: failed to modify load balancer {lb_host} with pool {pool}"
                ),
            };
            tracing::info!(tunnelID = %id, "{msg}");
        }
    }
    Ok(())
}
