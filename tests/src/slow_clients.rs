//! Helpers of the public-listener limit tests (`tests/edge_limits.rs`): an origin that serves
//! large bodies and counts the connections its peer (the connector) abandoned, clients that
//! never read, and a slowloris client that dribbles a head.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http1::{content_length, read_head_lines};

/// What [`BulkOrigin`] has seen.
#[derive(Debug, Default)]
pub struct BulkOriginStats {
    /// Requests whose head was read.
    pub requests: AtomicUsize,
    /// `GET /bulk/N` responses started.
    pub bulk_started: AtomicUsize,
    /// Body bytes written into `/bulk` responses so far (the kernel took them).
    pub bulk_bytes_written: AtomicU64,
    /// Connections the peer closed or reset in the middle of a request: while the origin
    /// was still reading the request body, or still writing the response body.
    pub abandoned_mid_request: AtomicUsize,
    /// Connections open now.
    pub open: AtomicUsize,
    /// `/sink` requests parked without reading their bodies.
    pub sinks_parked: AtomicUsize,
}

/// A keep-alive HTTP/1.1 origin, one thread per connection:
/// - `GET /bulk/N`: `200` with `Content-Length: N` and N bytes, written 64 KiB at a time as
///   the peer takes them;
/// - `POST /sink/...`: the head is read and the body never is (an origin that stalls an
///   upload), until the origin is dropped;
/// - a request with a `Content-Length` body: the body is read whole, then `200` `got N`;
/// - anything else: `200` `ok PATH`.
///
/// Closed on drop.
#[derive(Debug)]
pub struct BulkOrigin {
    pub addr: SocketAddr,
    pub stats: Arc<BulkOriginStats>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl BulkOrigin {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let stats = Arc::new(BulkOriginStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stats, stop, conns) = (stats.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(c) = stream.try_clone() {
                        conns.lock().expect("conns").push(c);
                    }
                    let (stats, stop) = (stats.clone(), stop.clone());
                    std::thread::spawn(move || {
                        stats.open.fetch_add(1, Ordering::SeqCst);
                        serve_bulk_conn(stream, &stats, &stop);
                        stats.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Self {
            addr,
            stats,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn abandoned(&self) -> usize {
        self.stats.abandoned_mid_request.load(Ordering::SeqCst)
    }

    pub fn bulk_started(&self) -> usize {
        self.stats.bulk_started.load(Ordering::SeqCst)
    }

    pub fn bulk_bytes_written(&self) -> u64 {
        self.stats.bulk_bytes_written.load(Ordering::SeqCst)
    }
}

impl Drop for BulkOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Serves one origin connection until the peer closes it; counts a close in the middle of a
/// request as abandoned.
fn serve_bulk_conn(stream: TcpStream, stats: &BulkOriginStats, stop: &AtomicBool) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // One request per turn, until EOF or an error.
    loop {
        let (line, headers) = match read_head_lines(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let body_len = match content_length(&headers) {
            Ok(n) => n.unwrap_or(0),
            Err(_) => return,
        };
        if path.starts_with("/sink/") {
            stats.sinks_parked.fetch_add(1, Ordering::SeqCst);
            // Bounded by the origin's life: it is dropped at the end of the test.
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if body_len > 0 {
            let mut left = body_len;
            let mut buf = vec![0u8; 64 * 1024];
            // Bounded by the body length; EOF or an error ends it early.
            while left > 0 {
                match reader.read(&mut buf[..left.min(64 * 1024)]) {
                    Ok(0) | Err(_) => {
                        stats.abandoned_mid_request.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Ok(n) => left -= n,
                }
            }
            let body = format!("got {body_len}");
            if write_answer(&mut writer, &body).is_err() {
                return;
            }
            continue;
        }
        if let Some(n) = path
            .strip_prefix("/bulk/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            stats.bulk_started.fetch_add(1, Ordering::SeqCst);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            if writer.write_all(head.as_bytes()).is_err() {
                stats.abandoned_mid_request.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = n;
            // Bounded by N bytes; a write error (the peer went away) ends it.
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if writer.write_all(&chunk[..k]).is_err() {
                    stats.abandoned_mid_request.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                stats
                    .bulk_bytes_written
                    .fetch_add(k as u64, Ordering::SeqCst);
                left -= k as u64;
            }
            continue;
        }
        if write_answer(&mut writer, &format!("ok {path}")).is_err() {
            return;
        }
    }
}

fn write_answer(w: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(r.as_bytes())
}

/// A client that sends `GET /bulk/N` and then never reads: its socket stays open (so the
/// edge's stream stays open) until dropped.
#[derive(Debug)]
pub struct StalledDownload {
    pub stream: TcpStream,
}

impl StalledDownload {
    /// Connects to `edge`, asks for `bytes` from `host`, and reads nothing (the kernel's
    /// receive buffer does not grow for a socket that is never read).
    pub fn start(edge: SocketAddr, host: &str, bytes: u64) -> Self {
        let stream = TcpStream::connect(edge).expect("connect to the edge");
        let req = format!("GET /bulk/{bytes} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        (&stream)
            .write_all(req.as_bytes())
            .expect("send the bulk request");
        Self { stream }
    }

    /// Whether the edge closed (or reset) this connection: reads the stalled bytes away and
    /// looks for EOF within `wait`. Reading here ends the stall, so call it only to check
    /// that the edge gave up.
    pub fn closed_by_edge(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 256 * 1024];
        // Bounded by the deadline: each read waits at most the time left.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return true;
                }
                Err(_) => return false,
            }
        }
    }
}

/// A client uploading `bytes` to `POST /sink/N` from its own thread, as fast as the edge takes
/// them; the origin never reads, so the upload stalls once every buffer on the way is full.
#[derive(Debug)]
pub struct StalledUpload {
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StalledUpload {
    pub fn start(edge: SocketAddr, host: &str, n: usize, bytes: u64) -> Self {
        let mut stream = TcpStream::connect(edge).expect("connect to the edge");
        let head =
            format!("POST /sink/{n} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {bytes}\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .expect("send the upload head");
        // Short write timeouts so the thread sees `stop`; a timed-out write is just retried.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let chunk = vec![b'u'; 64 * 1024];
                // Bounded by `bytes` and by `stop`.
                while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < bytes {
                    match stream.write(&chunk) {
                        Ok(n) => {
                            sent.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        Self {
            sent,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StalledUpload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `bytes` one byte every `gap` from a thread, stopping at the first write error (the
/// server closed). Returns how many bytes were written.
pub fn dribble(stream: TcpStream, bytes: Vec<u8>, gap: Duration) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut s = stream;
        let mut sent = 0;
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(gap);
        }
        sent
    })
}

/// Reads from `stream` until EOF (or reset) or `limit`; returns what arrived and whether the
/// server closed.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded by the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The status code of the first response in `raw`, if a status line is there.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..raw.len().min(64))?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Polls `f` every 20 ms until it holds; fails after `limit` with `what`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    crate::process::wait_for(what, limit, || f().then_some(()));
}
