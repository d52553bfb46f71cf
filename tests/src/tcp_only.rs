//! [`TcpOnlyEdge`]: an address where the edge answers over TCP only, as on a network that drops
//! UDP. Its UDP port is bound and never read (QUIC packets vanish, as they do behind a firewall
//! that drops them), and TCP connections to the same port are relayed byte for byte to the
//! edge's tunnel address (the HTTP/2 transport passes). No root or network namespace needed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// See the module docs. Stops relaying on drop.
#[derive(Debug)]
pub struct TcpOnlyEdge {
    addr: SocketAddr,
    _udp: UdpSocket,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl TcpOnlyEdge {
    /// Relays TCP from a fresh loopback port to `edge`; UDP to that port goes unanswered.
    pub fn start(edge: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
        let addr = listener.local_addr().expect("addr");
        let udp = UdpSocket::bind(addr).expect("bind UDP on the same port");
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicUsize::new(0));
        let (stop2, relayed2) = (stop.clone(), relayed.clone());
        let accept = std::thread::spawn(move || {
            // Bound: one turn per connection; drop wakes it with a last connect.
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(upstream) = TcpStream::connect(edge) else {
                    continue;
                };
                relayed2.fetch_add(1, Ordering::SeqCst);
                pipe(&client, &upstream);
                pipe(&upstream, &client);
            }
        });
        Self {
            addr,
            _udp: udp,
            stop,
            relayed,
            accept: Some(accept),
        }
    }

    /// The address to give the connector as `--edge`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections relayed so far.
    pub fn relayed(&self) -> usize {
        self.relayed.load(Ordering::SeqCst)
    }
}

/// Copies `from` → `to` on a thread until EOF or an error, then half-closes `to`.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        // Bound: ends at the peer's EOF or the first error.
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for TcpOnlyEdge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
