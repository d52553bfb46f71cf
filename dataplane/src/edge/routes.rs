//! The edge's view of the config snapshot: which tunnel serves a host, and how to check a
//! connector's credentials. Built once per snapshot by the control thread, shared read-only
//! (`Arc`) by every worker; a new snapshot replaces the whole table.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What the edge needs to authenticate a tunnel's connectors, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelCredentialCheck {
    pub account_tag: String,
    /// SHA-256 of the raw secret bytes.
    pub secret_sha256: [u8; 32],
}

/// Why a registration's credentials were refused. The text goes back to the connector as the
/// `ConnectionError` cause, so it must be clear and must not contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown tunnel {0}: it does not exist or was deleted")]
    UnknownTunnel(Uuid),
    #[error("tunnel {0} belongs to another account")]
    WrongAccount(Uuid),
    #[error("unauthorized: wrong tunnel secret for tunnel {0}")]
    WrongSecret(Uuid),
}

/// A load balancer whose origins are tunnels: pools in failover order (the default pools, then
/// the fallback pool), each a list of (tunnel, weight).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancerRoute {
    pub pools: Vec<Vec<(Uuid, f64)>>,
}

impl LoadBalancerRoute {
    /// Steering: the first pool with a healthy origin wins (ordered failover); inside it, a
    /// weighted random choice among the healthy origins. An origin is healthy while its tunnel
    /// has a live connection (`healthy`). `roll` is uniform in `[0, 1)`.
    pub fn choose(&self, healthy: impl Fn(&Uuid) -> bool, roll: f64) -> Option<Uuid> {
        // Bound: pools × origins of one load balancer.
        for pool in &self.pools {
            let live: Vec<&(Uuid, f64)> = pool
                .iter()
                .filter(|(t, w)| *w > 0.0 && healthy(t))
                .collect();
            let total: f64 = live.iter().map(|(_, w)| w).sum();
            if live.is_empty() || total <= 0.0 {
                continue;
            }
            let mut at = roll.clamp(0.0, 1.0) * total;
            for (t, w) in &live {
                if at < *w {
                    return Some(*t);
                }
                at -= w;
            }
            return live.last().map(|(t, _)| *t);
        }
        None
    }
}

/// Where a host's requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRoute {
    Tunnel(Uuid),
    LoadBalancer(std::sync::Arc<LoadBalancerRoute>),
}

/// Why a DNS record or pool origin does not route to a tunnel. Tenant isolation: a hostname
/// routes to a tunnel only through a record (or pool) of the tunnel's own account, and only
/// when the target is exactly `<uuid>.<tunnel suffix>`; tunnel UUIDs are not secret, so
/// anything looser lets one account send its traffic into another's tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// Not a proxied CNAME, or a target that does not look like a tunnel at all: an ordinary
    /// record that is not the edge's business.
    #[error("not a tunnel route")]
    NotTunnel,
    #[error("target {target} names a tunnel but is not <uuid>.{suffix}")]
    WrongSuffix { target: String, suffix: String },
    #[error("tunnel {0} is not live in this snapshot")]
    UnknownTunnel(Uuid),
    #[error("tunnel {0} belongs to another account than the record")]
    OtherAccount(Uuid),
    /// The record's account is unknown (a snapshot from before accounts were carried): fail
    /// closed.
    #[error("the record's account is unknown")]
    NoAccount,
}

/// Host → tunnel (or load balancer), and tunnel → credential check.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Snapshot version this table was built from.
    pub version: u64,
    /// Lower-case tunnel CNAME suffix (`cfargotunnel.com`); empty routes nothing.
    suffix: String,
    /// Lower-case host name → tunnel.
    hosts: HashMap<String, Uuid>,
    /// Lower-case host name → load balancer; wins over a DNS record of the same name.
    balancers: HashMap<String, std::sync::Arc<LoadBalancerRoute>>,
    tunnels: HashMap<Uuid, TunnelCredentialCheck>,
}

impl RouteTable {
    /// An empty table for snapshot `version` whose tunnel targets are `<uuid>.<suffix>`. Add
    /// the tunnels first: records are checked against them as they are added.
    pub fn new(version: u64, tunnel_suffix: &str) -> Self {
        Self {
            version,
            suffix: tunnel_suffix.trim_end_matches('.').to_ascii_lowercase(),
            ..Self::default()
        }
    }

    pub fn add_tunnel(&mut self, id: Uuid, check: TunnelCredentialCheck) {
        self.tunnels.insert(id, check);
    }

    /// The tunnel a CNAME target or pool origin address names, when it is exactly
    /// `<uuid>.<suffix>` (ASCII case-insensitive, one trailing dot allowed). `Err(NotTunnel)`
    /// for a target that neither starts with a UUID label nor lies under the suffix (an
    /// ordinary name); `Err(WrongSuffix)` for one that does but is not exact
    /// (`<uuid>.anything.invalid`, `x.<uuid>.<suffix>`, `foo.<suffix>`).
    pub fn tunnel_of_target(target: &str, suffix: &str) -> Result<Uuid, RouteRefusal> {
        let t = target.strip_suffix('.').unwrap_or(target);
        let suffix = suffix.trim_end_matches('.');
        let (first, rest) = t.split_once('.').unwrap_or((t, ""));
        let first_is_uuid = Uuid::parse_str(first).is_ok();
        let under_suffix = !suffix.is_empty()
            && (t.eq_ignore_ascii_case(suffix)
                || (t.len() > suffix.len()
                    && t.as_bytes()[t.len() - suffix.len() - 1] == b'.'
                    && t[t.len() - suffix.len()..].eq_ignore_ascii_case(suffix)));
        if !first_is_uuid && !under_suffix {
            return Err(RouteRefusal::NotTunnel);
        }
        match Uuid::parse_str(first) {
            // A hyphenated UUID only: `Uuid::parse_str` also takes the simple and braced forms.
            Ok(id)
                if first.len() == 36 && !suffix.is_empty() && rest.eq_ignore_ascii_case(suffix) =>
            {
                Ok(id)
            }
            _ => Err(RouteRefusal::WrongSuffix {
                target: target.to_string(),
                suffix: suffix.to_string(),
            }),
        }
    }

    /// The live tunnel that `target` may route to for a record (or pool) of `account`.
    pub fn tunnel_for(&self, target: &str, account: &str) -> Result<Uuid, RouteRefusal> {
        let id = Self::tunnel_of_target(target, &self.suffix)?;
        let check = self
            .tunnels
            .get(&id)
            .ok_or(RouteRefusal::UnknownTunnel(id))?;
        if account.is_empty() {
            return Err(RouteRefusal::NoAccount);
        }
        if check.account_tag != account {
            return Err(RouteRefusal::OtherAccount(id));
        }
        Ok(id)
    }

    /// Adds a DNS record of `account`. Only CNAMEs to `<uuid>.<suffix>` of a live tunnel of
    /// the same account route; other records are not the edge's business (`NotTunnel`), and
    /// the rest are refused. Returns the tunnel the host now routes to.
    pub fn add_dns_record(
        &mut self,
        record_type: &str,
        name: &str,
        content: &str,
        account: &str,
    ) -> Result<Uuid, RouteRefusal> {
        if !record_type.eq_ignore_ascii_case("CNAME") {
            return Err(RouteRefusal::NotTunnel);
        }
        let id = self.tunnel_for(content, account)?;
        self.hosts.insert(name.to_ascii_lowercase(), id);
        Ok(id)
    }

    /// Adds a load balancer answering for `name`. Its origins must already have passed
    /// [`RouteTable::tunnel_for`] with the load balancer's account.
    pub fn add_load_balancer(&mut self, name: &str, route: LoadBalancerRoute) {
        self.balancers
            .insert(name.to_ascii_lowercase(), std::sync::Arc::new(route));
    }

    /// Where requests for `host` go (case-insensitive, without port). A load balancer wins
    /// over a DNS record of the same name.
    pub fn route_for_host(&self, host: &str) -> Option<HostRoute> {
        let lower;
        let key = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(lb) = self.balancers.get(key) {
            return Some(HostRoute::LoadBalancer(lb.clone()));
        }
        self.hosts.get(key).map(|t| HostRoute::Tunnel(*t))
    }

    /// Whether `id` is a live tunnel in this snapshot.
    pub fn has_tunnel(&self, id: &Uuid) -> bool {
        self.tunnels.contains_key(id)
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Checks a connector's credentials against the snapshot. The secret is hashed and
    /// compared in constant time.
    pub fn authenticate(
        &self,
        id: Uuid,
        account_tag: &str,
        secret: &[u8],
    ) -> Result<(), AuthError> {
        let check = self.tunnels.get(&id).ok_or(AuthError::UnknownTunnel(id))?;
        let digest: [u8; 32] = Sha256::digest(secret).into();
        // Compare every byte regardless of where the first difference is.
        let diff = digest
            .iter()
            .zip(check.secret_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(AuthError::WrongSecret(id));
        }
        if check.account_tag != account_tag {
            return Err(AuthError::WrongAccount(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUFFIX: &str = "cfargotunnel.com";

    fn check(account: &str) -> TunnelCredentialCheck {
        TunnelCredentialCheck {
            account_tag: account.into(),
            secret_sha256: Sha256::digest(b"s3cret").into(),
        }
    }

    fn table() -> (RouteTable, Uuid) {
        let id = Uuid::new_v4();
        let mut t = RouteTable::new(3, SUFFIX);
        t.add_tunnel(id, check("acct"));
        assert_eq!(
            t.add_dns_record(
                "CNAME",
                "App.Example.com",
                &format!("{id}.cfargotunnel.com"),
                "acct"
            ),
            Ok(id)
        );
        assert_eq!(
            t.add_dns_record("A", "a.example.com", "192.0.2.1", "acct"),
            Err(RouteRefusal::NotTunnel)
        );
        assert_eq!(
            t.add_dns_record("CNAME", "b.example.com", "elsewhere.example.net", "acct"),
            Err(RouteRefusal::NotTunnel)
        );
        (t, id)
    }

    #[test]
    fn edge_routes_host_lookup_is_case_insensitive() {
        let (t, id) = table();
        assert_eq!(
            t.route_for_host("app.example.com"),
            Some(HostRoute::Tunnel(id))
        );
        assert_eq!(
            t.route_for_host("APP.example.COM"),
            Some(HostRoute::Tunnel(id))
        );
        assert_eq!(t.route_for_host("a.example.com"), None);
        assert_eq!(t.route_for_host("b.example.com"), None);
        assert_eq!(t.host_count(), 1);
    }

    #[test]
    fn edge_routes_a_record_of_another_account_never_routes() {
        let (mut t, id) = table();
        let target = format!("{id}.cfargotunnel.com");
        assert_eq!(
            t.add_dns_record("CNAME", "hijack.b.test", &target, "acct-b"),
            Err(RouteRefusal::OtherAccount(id))
        );
        // A record whose account the snapshot does not carry fails closed.
        assert_eq!(
            t.add_dns_record("CNAME", "old.b.test", &target, ""),
            Err(RouteRefusal::NoAccount)
        );
        let ghost = Uuid::new_v4();
        assert_eq!(
            t.add_dns_record(
                "CNAME",
                "ghost.a.test",
                &format!("{ghost}.cfargotunnel.com"),
                "acct"
            ),
            Err(RouteRefusal::UnknownTunnel(ghost))
        );
        assert_eq!(t.route_for_host("hijack.b.test"), None);
        assert_eq!(t.route_for_host("old.b.test"), None);
        assert_eq!(t.host_count(), 1);
    }

    #[test]
    fn edge_routes_target_must_be_exactly_uuid_dot_suffix() {
        let id = Uuid::new_v4();
        let upper = id.to_string().to_ascii_uppercase();
        for ok in [
            format!("{id}.cfargotunnel.com"),
            format!("{id}.cfargotunnel.com."),
            format!("{upper}.CFARGOTUNNEL.COM"),
        ] {
            assert_eq!(RouteTable::tunnel_of_target(&ok, SUFFIX), Ok(id), "{ok}");
        }
        for bad in [
            format!("{id}.anything.invalid"),
            format!("{id}.cfargotunnel.com.evil.test"),
            format!("{id}.xcfargotunnel.com"),
            format!("x.{id}.cfargotunnel.com"),
            format!("{}.cfargotunnel.com", id.simple()),
            format!("{id}"),
            "foo.cfargotunnel.com".to_string(),
            "cfargotunnel.com".to_string(),
        ] {
            assert!(
                matches!(
                    RouteTable::tunnel_of_target(&bad, SUFFIX),
                    Err(RouteRefusal::WrongSuffix { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            RouteTable::tunnel_of_target("www.example.net", SUFFIX),
            Err(RouteRefusal::NotTunnel)
        );
        // Another suffix configured: the default one no longer routes.
        assert!(
            RouteTable::tunnel_of_target(&format!("{id}.cfargotunnel.com"), "tunnels.lab").is_err()
        );
        assert_eq!(
            RouteTable::tunnel_of_target(&format!("{id}.tunnels.lab"), "tunnels.lab"),
            Ok(id)
        );
        // No suffix (an old snapshot): nothing routes.
        assert!(RouteTable::tunnel_of_target(&format!("{id}.cfargotunnel.com"), "").is_err());
        let mut t = RouteTable::new(1, "");
        t.add_tunnel(id, check("acct"));
        assert!(
            t.add_dns_record("CNAME", "a.test", &format!("{id}.cfargotunnel.com"), "acct")
                .is_err()
        );
        assert_eq!(t.route_for_host("a.test"), None);
    }

    #[test]
    fn edge_routes_load_balancer_fails_over_in_order_and_weighs_inside_a_pool() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let lb = LoadBalancerRoute {
            pools: vec![vec![(a, 1.0), (b, 3.0)], vec![(c, 1.0)]],
        };
        let all = |_: &Uuid| true;
        assert_eq!(lb.choose(all, 0.0), Some(a));
        assert_eq!(lb.choose(all, 0.24), Some(a));
        assert_eq!(lb.choose(all, 0.26), Some(b));
        assert_eq!(lb.choose(all, 0.99), Some(b));
        // Pool 1 entirely down: pool 2 at once.
        assert_eq!(lb.choose(|t| *t == c, 0.5), Some(c));
        // One origin of pool 1 down: the other takes everything.
        assert_eq!(lb.choose(|t| *t != b, 0.9), Some(a));
        assert_eq!(lb.choose(|_| false, 0.5), None);

        let mut t = RouteTable::new(1, SUFFIX);
        t.add_tunnel(a, check("acct"));
        t.add_tunnel(c, check("other"));
        assert!(
            t.add_dns_record(
                "CNAME",
                "lb.example.com",
                &format!("{a}.cfargotunnel.com"),
                "acct"
            )
            .is_ok()
        );
        t.add_load_balancer("LB.example.com", lb.clone());
        assert!(matches!(
            t.route_for_host("lb.example.com"),
            Some(HostRoute::LoadBalancer(_))
        ));
        // Pool origins pass the same account check as records.
        assert_eq!(
            t.tunnel_for(&format!("{a}.cfargotunnel.com"), "acct"),
            Ok(a)
        );
        assert_eq!(
            t.tunnel_for(&format!("{c}.cfargotunnel.com"), "acct"),
            Err(RouteRefusal::OtherAccount(c))
        );
    }

    #[test]
    fn edge_routes_authentication_checks_secret_account_and_tunnel() {
        let (t, id) = table();
        assert_eq!(t.authenticate(id, "acct", b"s3cret"), Ok(()));
        assert_eq!(
            t.authenticate(id, "acct", b"wrong"),
            Err(AuthError::WrongSecret(id))
        );
        assert_eq!(
            t.authenticate(id, "other", b"s3cret"),
            Err(AuthError::WrongAccount(id))
        );
        let other = Uuid::new_v4();
        assert_eq!(
            t.authenticate(other, "acct", b"s3cret"),
            Err(AuthError::UnknownTunnel(other))
        );
        let msg = AuthError::WrongSecret(id).to_string();
        assert!(!msg.contains("s3cret") && msg.contains("secret"), "{msg}");
    }
}
