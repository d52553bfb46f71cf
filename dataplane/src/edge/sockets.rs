//! Binding the edge's listening sockets before any worker starts: `n` SO_REUSEPORT sockets
//! per address, one per worker, sharing the port the first one got (port 0 picks one).

use std::io;
use std::net::SocketAddr;

/// Binds `n` UDP sockets to `addr` with SO_REUSEPORT. With port 0 the first socket picks the
/// port and the others join it.
pub fn bind_reuseport_udp(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let socks = bind_reuseport(
        addr,
        n,
        socket2::Type::DGRAM,
        socket2::Protocol::UDP,
        |s, at| s.bind(&at.into()),
    )?;
    Ok(socks.into_iter().map(Into::into).collect())
}

/// Binds `n` TCP listeners to `addr` with SO_REUSEPORT (port 0: the first picks it).
pub fn bind_reuseport_tcp(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let socks = bind_reuseport(
        addr,
        n,
        socket2::Type::STREAM,
        socket2::Protocol::TCP,
        |s, at| {
            s.set_reuse_address(true)?;
            s.bind(&at.into())?;
            s.listen(4096)
        },
    )?;
    Ok(socks.into_iter().map(Into::into).collect())
}

/// `n` non-blocking SO_REUSEPORT sockets, each set up and bound to `at` by `bind`, where `at`
/// is `addr` for the first and the port it got for the rest.
fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    kind: socket2::Type,
    protocol: socket2::Protocol,
    bind: impl Fn(&socket2::Socket, SocketAddr) -> io::Result<()>,
) -> io::Result<Vec<socket2::Socket>> {
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let s = socket2::Socket::new(socket2::Domain::for_address(at), kind, Some(protocol))?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        bind(&s, at)?;
        at = crate::udp::socket_local_addr(&s)?;
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    #[test]
    fn reuseport_sockets_share_the_port_the_first_one_picked() {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let udp = bind_reuseport_udp(any_port, 3).unwrap();
        let port = udp[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for s in &udp {
            assert_eq!(s.local_addr().unwrap().port(), port);
        }
        let tcp = bind_reuseport_tcp(any_port, 3).unwrap();
        let port = tcp[0].local_addr().unwrap().port();
        for l in &tcp {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // They listen: a connect to the shared port is accepted by one of them.
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let accepted = (0..200).find_map(|_| {
            let hit = tcp.iter().find_map(|l| l.accept().ok());
            if hit.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            hit
        });
        assert!(accepted.is_some(), "no listener accepted the connection");
    }
}
