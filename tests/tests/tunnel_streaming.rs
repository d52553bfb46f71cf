//! Streaming answers stream: a server-sent-events origin writes one event at a time, and writes
//! event k + 1 only once the public client has read event k through the edge. A hop that held
//! the answer back (buffered it whole, or waited for more bytes before passing a chunk on)
//! would leave the client waiting for an event the origin never sends, and the test would
//! fail at its limit. The arrival time of each event, from the origin's write, is printed.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringway_tests::connector::Transport;
use ringway_tests::http1::read_head_lines;
use ringway_tests::per_transport;
use ringway_tests::prelude::*;

const ZONE: &str = "stream.test";
const EVENTS: usize = 8;
/// A failure limit per event: far above a healthy hop.
const LIMIT: Duration = Duration::from_secs(20);

per_transport!(server_sent_events_arrive_as_the_origin_writes_them);

/// An origin serving `GET /events` as `text/event-stream`, chunked: event k is written once
/// `next` says the client has event k - 1. Answers a plain GET (readiness probes) with `ok`.
/// Sends the instant of each event's write on `written`.
fn sse_origin(next: mpsc::Receiver<()>, written: mpsc::Sender<Instant>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Bound: readiness probes, then the one events request.
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Ok(Some((line, _))) = read_head_lines(&mut reader) else {
                continue;
            };
            if !line.starts_with("GET /events ") {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                continue;
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .unwrap();
            for k in 0..EVENTS {
                if k > 0 && next.recv_timeout(LIMIT * 2).is_err() {
                    return;
                }
                let event = format!("id: {k}\ndata: event {k}\n\n");
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                let _ = written.send(Instant::now());
                if conn.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n");
            return;
        }
    });
    url
}

fn server_sent_events_arrive_as_the_origin_writes_them(transport: Transport) {
    let t = TunnelSetup::new(ZONE);
    let host = format!("sse.{ZONE}");
    let id = t.tunnel("sse", &[&host]);
    let (next_tx, next_rx) = mpsc::channel();
    let (written_tx, written_rx) = mpsc::channel();
    let url = sse_origin(next_rx, written_tx);
    let conn = t.run_over(transport, "sse", &id, &url, &["--ha-connections", "1"], 1);
    t.wait_served(&host);

    let mut client = TcpStream::connect(t.edge.http_addr()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        client,
        "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut delays = Vec::new();
    for k in 0..EVENTS {
        let want = format!("data: event {k}\n");
        // Bound: reads until event k is in, each within LIMIT (the read timeout).
        while !String::from_utf8_lossy(&seen).contains(&want) {
            let n = client.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "event {k} never arrived ({e}); got so far:\n{}\nconnector:\n{}",
                    String::from_utf8_lossy(&seen),
                    conn.logs()
                )
            });
            assert!(n > 0, "the edge closed before event {k}");
            seen.extend_from_slice(&buf[..n]);
        }
        let written = written_rx.recv_timeout(LIMIT).expect("the origin wrote it");
        delays.push(written.elapsed());
        // Only now may the origin write the next event.
        let _ = next_tx.send(());
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{text}"
    );
    eprintln!(
        "sse {}: origin write → client read per event: {:?}",
        transport.name(),
        delays
    );
}
