//! [`RawClient`]: an HTTP/1.1 client on one TCP connection that sends exact bytes and reads
//! whole responses, plus the request bytes it sends ([`request_bytes`], [`chunked_body`]).
//!
//! Responses are read with the harness's own parser ([`crate::http1`]), independent of
//! `dataplane::http` on purpose: it is the oracle the product's HTTP/1.1 codec is tested
//! against, so a bug in the codec cannot hide itself.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http1::{content_length, header_in, is_chunked, read_chunked, read_head_lines};

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
}

impl HttpResponse {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of this header, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status, headers and (a prefix of) the body, for failure messages.
    pub fn summary(&self) -> String {
        let body = self.text();
        let body: String = body.chars().take(500).collect();
        format!(
            "{} {} {:?} body({} bytes): {body:?}",
            self.status,
            self.reason,
            self.headers,
            self.body.len()
        )
    }
}

/// An HTTP/1.1 client on one TCP connection that sends exact bytes and reads whole responses
/// (Content-Length, chunked, or delimited by close). Several requests may share the socket.
#[derive(Debug)]
pub struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawClient {
    /// Connects with a 60 s read/write failure limit.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_timeout(addr, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects with `timeout` as the connect and per-read/write limit.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// The socket, e.g. to write a body in pieces.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// Reads one response (1xx interim answers other than 101 are skipped). `head` says the
    /// request was HEAD, so no body follows whatever the headers say.
    pub fn read_response(&mut self, head: bool) -> std::io::Result<HttpResponse> {
        loop {
            let Some((line, headers)) = read_head_lines(&mut self.reader)? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            };
            let mut parts = line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            if !version.starts_with("HTTP/1.") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                ));
            }
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
            let reason = parts.next().unwrap_or("").to_string();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let chunked = is_chunked(&headers);
            let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
                Vec::new()
            } else if chunked {
                read_chunked(&mut self.reader)?
            } else if let Some(n) = content_length(&headers)? {
                let mut b = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match self.reader.read(&mut b[got..]) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("{status} response: EOF after {got} of {n} body bytes"),
                            ));
                        }
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(std::io::Error::new(
                                e.kind(),
                                format!("{status} response: {e} after {got} of {n} body bytes"),
                            ));
                        }
                    }
                }
                b
            } else {
                let mut b = Vec::new();
                self.reader.read_to_end(&mut b)?;
                b
            };
            return Ok(HttpResponse {
                status,
                reason,
                headers,
                body,
                chunked,
            });
        }
    }

    /// Sends `bytes` and reads the response.
    pub fn request(&mut self, bytes: &[u8], head: bool) -> std::io::Result<HttpResponse> {
        self.send(bytes)?;
        self.read_response(head)
    }

    /// Whether the peer has closed the connection (reads EOF within `wait`).
    pub fn peer_closed(&mut self, wait: Duration) -> bool {
        let _ = self.writer.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// The bytes of a simple HTTP/1.1 request: request line, `Host`, `extra` headers, then
/// `Content-Length` if there is a body (and no framing header in `extra`), `Connection: close`
/// if `close`.
pub fn request_bytes(
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = extra.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if let Some(b) = body
        && !framed
    {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// `GET path` with `Host: host` on a fresh connection to `addr`, `Connection: close`.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> HttpResponse {
    let mut c = RawClient::connect(addr);
    c.request(&request_bytes("GET", host, path, &[], None, true), false)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} (Host: {host}): {e}"))
}

/// The encoding of `body` in chunks of `chunk` bytes, with the final zero chunk.
pub fn chunked_body(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 10 + 8);
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

impl RawClient {
    /// Sends `method path` with `Authorization: authorization` (and `Content-Type:
    /// application/json` when there is a body), keeping the connection open unless `close`,
    /// and reads the answer; an I/O error fails the test.
    pub fn authorized(
        &mut self,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<&[u8]>,
        close: bool,
    ) -> HttpResponse {
        let mut headers = vec![("Authorization", authorization)];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let bytes = request_bytes(method, "x", path, &headers, body, close);
        self.request(&bytes, method == "HEAD")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}
