//! [`NetNs`]: a network namespace joined to the host by a veth pair, to run a connector where
//! the test controls the network (e.g. UDP to the edge dropped by nftables while TCP passes).
//! Needs root and `ip` (iproute2) and `nft` (nftables), as CI runs the tests.
//!
//! Each namespace gets a random name and a random /30 out of 10.128.0.0/9, so tests running in
//! parallel (in one process or several) do not collide. Dropping a [`NetNs`] deletes the
//! namespace, which also removes both ends of the veth pair and every nftables rule in it; it
//! runs on a panic too, as the test unwinds.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

/// The nftables table [`NetNs::block_udp_to`] adds (and [`NetNs::unblock_udp`] deletes).
const TABLE: &str = "ringway_test";

/// A network namespace with a veth pair to the host: [`NetNs::host_ip`] on the host side,
/// [`NetNs::ns_ip`] inside. Deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

/// Runs `program args`, failing with its stderr unless it succeeds.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (needs iproute2 and nftables): {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates the namespace (loopback up), the veth pair with a fresh /30, and checks the
    /// host can reach the namespace side.
    pub fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let tag = &tag[..8];
        let name = format!("ringway-{tag}");
        let host_if = format!("rwh{tag}");
        let ns_if = format!("rwn{tag}");
        let (host_ip, ns_ip) = free_subnet();
        // Built up step by step; `ns` is in place before the first fallible step, so a
        // failure below still deletes what was made.
        run("ip", &["netns", "add", &name]);
        let ns = Self {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
                "netns",
                &ns.name,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if],
        );
        run("ip", &["link", "set", &ns.host_if, "up"]);
        ns.run_inside(
            "ip",
            &["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if],
        );
        ns.run_inside("ip", &["link", "set", &ns_if, "up"]);
        ns.run_inside("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// The host side of the veth pair: where the namespace reaches the host (e.g. the edge's
    /// `--tunnel-listen`).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace side: where the host reaches the namespace (e.g. a connector's
    /// `--metrics`).
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Runs `program args` inside the namespace, failing with its stderr unless it succeeds.
    pub fn run_inside(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `cmd` (program, arguments, environment, working directory) run inside the namespace
    /// by `ip netns exec`, which execs the program in place: the child's pid is the program's,
    /// so signals reach it directly.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut inner = Command::new("ip");
        inner
            .args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inner.env(k, v),
                None => inner.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        inner.stdin(Stdio::null());
        inner
    }

    /// Drops every UDP datagram the namespace sends to `to` (nftables, output hook), as a
    /// firewall that blocks QUIC does; TCP to the same address still passes.
    pub fn block_udp_to(&self, to: SocketAddr) {
        let ip = match to.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(ip) => panic!("block_udp_to: IPv4 only, got {ip}"),
        };
        let script = format!(
            "table inet {TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {ip} udp dport {} drop\n  }}\n}}\n",
            to.port()
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (needs nftables)");
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(script.as_bytes())
            .expect("write the nft script");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft -f: {}\n{script}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes what [`NetNs::block_udp_to`] added.
    pub fn unblock_udp(&self) {
        self.run_inside("nft", &["delete", "table", "inet", TABLE]);
    }

    /// The namespace's nftables ruleset, for failure messages.
    pub fn ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "ruleset"])
            .output()
            .expect("nft list ruleset");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth end, and with it the host end; the explicit
        // delete covers a pair whose namespace end never got moved in. Errors are ignored: a
        // drop must not panic while a failed test unwinds.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// A random /30 in 10.128.0.0/9 that no interface on the host uses yet: (host side, namespace
/// side). Another test could take the same one between the check and `ip addr add`; with 2^21
/// subnets to draw from that is left to chance.
fn free_subnet() -> (Ipv4Addr, Ipv4Addr) {
    let used = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for _ in 0..100 {
        let r = uuid::Uuid::new_v4().as_u128() as u32;
        // 10.128.0.0 + a random multiple of 4 below 2^23.
        let base = 0x0a80_0000 | (r & 0x007f_fffc);
        let net = Ipv4Addr::from(base);
        let (host, ns) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let taken = [net, host, ns]
            .iter()
            .any(|a| used.contains(&format!(" {a}/")));
        if !taken {
            return (host, ns);
        }
    }
    panic!("no free 10.128.0.0/9 subnet after 100 draws:\n{used}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_slash_30s_in_10_128() {
        for _ in 0..50 {
            let (host, ns) = free_subnet();
            let (h, n) = (u32::from(host), u32::from(ns));
            assert_eq!(h & 3, 1, "{host}");
            assert_eq!(n, h + 1);
            assert_eq!(h >> 23, 0x0a80_0000 >> 23, "{host} outside 10.128.0.0/9");
        }
    }
}
