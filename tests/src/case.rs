//! [`OriginCase`]: the usual shape of a connector-flag test. One tunnel named NAME routed at
//! `NAME.ZONE` on a fresh [`TunnelSetup`], and a [`HashOrigin`] tagged NAME behind it, so a test
//! runs `tunnel run` with the flag under test and checks that a request through the edge
//! reaches that origin (or, with the flag's opposite, does not).

use std::time::Duration;

use crate::connector::Connector;
use crate::edge::TunnelSetup;
use crate::origins::HashOrigin;

/// A tunnel routed at `host` and the origin it should serve (see the module docs).
#[derive(Debug)]
pub struct OriginCase {
    pub t: TunnelSetup,
    pub origin: HashOrigin,
    /// `NAME.ZONE`, routed to the tunnel.
    pub host: String,
    /// The tunnel's id (empty when the test lets the connector create the tunnel).
    pub id: String,
}

impl OriginCase {
    /// Tunnel `name` routed at `name.zone`, a plain [`HashOrigin`] tagged `name`.
    pub fn new(zone: &str, name: &str) -> Self {
        Self::with_origin(zone, name, HashOrigin::start(name))
    }

    /// Like [`OriginCase::new`] with a given origin (e.g. [`HashOrigin::start_tls`]); its tag
    /// should be `name`, which [`OriginCase::assert_served`] expects in the answer.
    pub fn with_origin(zone: &str, name: &str, origin: HashOrigin) -> Self {
        let t = TunnelSetup::new(zone);
        let host = format!("{name}.{zone}");
        let id = t.tunnel(name, &[&host]);
        Self {
            t,
            origin,
            host,
            id,
        }
    }

    /// The arguments of `tunnel run --credentials-file … --url ORIGIN`, then `edge_args`, then
    /// `extra`, then the tunnel's id.
    pub fn run_args(&self, edge_args: &[String], extra: &[&str]) -> Vec<String> {
        self.t
            .run_args(&self.id, &self.id, &self.origin.url(), edge_args, extra)
    }

    /// Runs the tunnel (arguments as [`OriginCase::run_args`]) and waits for a registered
    /// connection.
    pub fn run(&self, edge_args: &[String], extra: &[&str]) -> Connector {
        Connector::start(self.t.cli(), &self.run_args(edge_args, extra))
    }

    /// Like [`OriginCase::run`], dialing this case's edge.
    pub fn run_with(&self, extra: &[&str]) -> Connector {
        self.run(&self.t.edge.connector_args(), extra)
    }

    /// A request through the edge reaches this case's origin: `GET /x` answers the origin's
    /// `tag=NAME path=/x`. Fails with the connector's output `c`.
    pub fn assert_served(&self, c: &Connector) {
        self.t.wait_served(&self.host);
        let r = self.t.edge.get(&self.host, "/x");
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), c.logs());
        assert_eq!(r.text(), format!("tag={} path=/x", self.origin.tag));
    }
}

/// Stops a connector the way an operator does (SIGTERM) and waits for its clean exit. Its
/// connections are unregistered, so the edge stops routing to them at once; a connector
/// killed with SIGKILL (its drop) stays routable until the edge finds it silent, and a new
/// connector's test requests could meet the dead one.
pub fn stop(mut conn: Connector) {
    conn.terminate(Duration::from_secs(60));
}
