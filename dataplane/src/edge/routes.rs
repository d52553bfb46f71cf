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

/// Host → tunnel (or load balancer), and tunnel → credential check.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Snapshot version this table was built from.
    pub version: u64,
    /// Lower-case host name → tunnel.
    hosts: HashMap<String, Uuid>,
    /// Lower-case host name → load balancer; wins over a DNS record of the same name.
    balancers: HashMap<String, std::sync::Arc<LoadBalancerRoute>>,
    tunnels: HashMap<Uuid, TunnelCredentialCheck>,
}

impl RouteTable {
    pub fn new(version: u64) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    pub fn add_tunnel(&mut self, id: Uuid, check: TunnelCredentialCheck) {
        self.tunnels.insert(id, check);
    }

    /// Adds a DNS record. Only proxied CNAMEs whose target's first label is a tunnel UUID
    /// (`<uuid>.cfargotunnel.com`, whatever the suffix) route to a tunnel; other records are
    /// not the edge's business. Returns whether the record routes somewhere.
    pub fn add_dns_record(&mut self, record_type: &str, name: &str, content: &str) -> bool {
        if !record_type.eq_ignore_ascii_case("CNAME") {
            return false;
        }
        let Some(id) = Self::tunnel_of_address(content) else {
            return false;
        };
        self.hosts.insert(name.to_ascii_lowercase(), id);
        true
    }

    /// Adds a load balancer answering for `name`.
    pub fn add_load_balancer(&mut self, name: &str, route: LoadBalancerRoute) {
        self.balancers
            .insert(name.to_ascii_lowercase(), std::sync::Arc::new(route));
    }

    /// The tunnel id an origin address names (`<uuid>.cfargotunnel.com`), if any.
    pub fn tunnel_of_address(address: &str) -> Option<Uuid> {
        address
            .split('.')
            .next()
            .and_then(|l| Uuid::parse_str(l).ok())
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

    fn table() -> (RouteTable, Uuid) {
        let id = Uuid::new_v4();
        let mut t = RouteTable::new(3);
        t.add_tunnel(
            id,
            TunnelCredentialCheck {
                account_tag: "acct".into(),
                secret_sha256: Sha256::digest(b"s3cret").into(),
            },
        );
        assert!(t.add_dns_record(
            "CNAME",
            "App.Example.com",
            &format!("{id}.cfargotunnel.com")
        ));
        assert!(!t.add_dns_record("A", "a.example.com", "192.0.2.1"));
        assert!(!t.add_dns_record("CNAME", "b.example.com", "elsewhere.example.net"));
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

        let mut t = RouteTable::new(1);
        t.add_dns_record("CNAME", "lb.example.com", &format!("{a}.cfargotunnel.com"));
        t.add_load_balancer("LB.example.com", lb.clone());
        assert!(matches!(
            t.route_for_host("lb.example.com"),
            Some(HostRoute::LoadBalancer(_))
        ));
        assert_eq!(
            RouteTable::tunnel_of_address(&format!("{c}.cfargotunnel.com")),
            Some(c)
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
