//! WebSocket through the tunnel, on both transports: a tungstenite echo origin behind the
//! connector, tungstenite clients at the edge's public port. The origin checks what arrives
//! (the upgrade fields cloudflared restores, the client's key passed through), and the client
//! checks every echo byte for byte: text, binary, a 16 MiB message, a fragmented message,
//! ping/pong, the close handshake with its code, 1,000 sockets open at once, and a connector
//! killed under an open socket.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use ringway_tests::connector::{Connector, Transport};
use ringway_tests::http1::read_head_lines;
use ringway_tests::per_transport;
use ringway_tests::prelude::*;
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{Message, WebSocket};

const ZONE: &str = "ws.test";
/// A failure limit per step: far above a healthy hop.
const LIMIT: Duration = Duration::from_secs(30);

per_transport!(
    websocket_messages_echo_byte_exact,
    websocket_thousand_sockets_at_once,
    websocket_closes_when_the_connector_dies,
);

/// An echo origin: every upgrade request gets 101 and its messages echoed (tungstenite answers
/// pings and the close handshake itself); a plain request (readiness probes) gets `ok`. Sends
/// each upgrade request's head lines on `heads`.
fn echo_origin(heads: mpsc::Sender<Vec<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Bound: the test's connections; the thread ends with the process.
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let heads = heads.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || serve_echo(conn, heads))
                .unwrap();
        }
    });
    url
}

fn serve_echo(mut conn: TcpStream, heads: mpsc::Sender<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Ok(Some((line, fields))) = read_head_lines(&mut reader) else {
        return;
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let Some(key) = field("sec-websocket-key") else {
        let _ =
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return;
    };
    let mut head = vec![line];
    head.extend(fields.iter().map(|(n, v)| format!("{n}: {v}")));
    let _ = heads.send(head);
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Origin: echo\r\n\r\n"
    );
    if conn.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let buffered = reader.buffer().to_vec();
    let mut ws = WebSocket::from_partially_read(conn, buffered, Role::Server, None);
    // Bound: the client's messages; ends on close or error.
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A WebSocket client through the edge for `host`.
fn connect(t: &TunnelSetup, host: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(t.edge.http_addr()).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, resp) = tungstenite::client::client(format!("ws://{host}/echo"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake through the edge failed: {e}"));
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["x-origin"],
        "echo",
        "the origin's fields pass"
    );
    ws
}

/// A tunnel for `name` with `ha` connections to an echo origin.
fn setup(
    transport: Transport,
    name: &str,
    ha: usize,
) -> (TunnelSetup, String, Connector, mpsc::Receiver<Vec<String>>) {
    let t = TunnelSetup::new(ZONE);
    let host = format!("{name}.{ZONE}");
    let id = t.tunnel(name, &[&host]);
    let (heads_tx, heads_rx) = mpsc::channel();
    let url = echo_origin(heads_tx);
    let ha_arg = ha.to_string();
    let conn = t.run_over(
        transport,
        name,
        &id,
        &url,
        &["--ha-connections", &ha_arg],
        ha,
    );
    t.wait_served(&host);
    (t, host, conn, heads_rx)
}

fn echo(ws: &mut WebSocket<TcpStream>, m: Message) {
    ws.send(m.clone()).unwrap();
    // Bound: one echo, skipping control frames.
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            got => {
                assert!(
                    got == m,
                    "echo differs: {} bytes back for {}",
                    got.len(),
                    m.len()
                );
                return;
            }
        }
    }
}

fn websocket_messages_echo_byte_exact(transport: Transport) {
    let (t, host, _conn, heads) = setup(transport, "echo", 1);
    let mut ws = connect(&t, &host);
    let head = heads.recv_timeout(LIMIT).unwrap();
    let has = |name: &str, value: &str| {
        head.iter().any(|f| {
            f.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    };
    assert!(head[0].starts_with("GET /echo HTTP/1.1"), "{head:?}");
    assert!(has("upgrade", "websocket"), "{head:?}");
    assert!(has("connection", "upgrade"), "{head:?}");
    assert!(has("sec-websocket-version", "13"), "{head:?}");

    echo(&mut ws, Message::text("hello through the tunnel"));
    echo(&mut ws, Message::binary((0..=255u8).collect::<Vec<u8>>()));
    let big: Vec<u8> = (0..16 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    echo(&mut ws, Message::binary(big));

    // A text message in three frames: the origin sees one message.
    for (part, op, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("ment", OpCode::Data(Data::Continue), false),
        ("ed", OpCode::Data(Data::Continue), true),
    ] {
        ws.write(Message::Frame(Frame::message(
            part.as_bytes().to_vec(),
            op,
            fin,
        )))
        .unwrap();
    }
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    // Bound: the pong is the next message.
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }

    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "done".into(),
    }))
    .unwrap();
    // Bound: the close handshake answer, then the end.
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Away),
            Ok(Message::Close(None)) => panic!("the close code was lost"),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake failed: {e}"),
        }
    }
    // The connection stays usable for other requests.
    assert_eq!(t.edge.get(&host, "/").status, 200);
}

fn websocket_thousand_sockets_at_once(transport: Transport) {
    // An HTTP/2 connection carries 250 streams at once (the stock cloudflared's limit too), so
    // 1,000 sockets need more than four connections; QUIC gets the same five.
    let (t, host, _conn, _heads) = setup(transport, "many", 5);
    let mut sockets: Vec<_> = (0..1000).map(|_| connect(&t, &host)).collect();
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Message::text(format!("socket {i}"))).unwrap();
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(ws.read().unwrap(), Message::text(format!("socket {i}")));
    }
}

fn websocket_closes_when_the_connector_dies(transport: Transport) {
    let (t, host, mut conn, _heads) = setup(transport, "dies", 1);
    let mut ws = connect(&t, &host);
    echo(&mut ws, Message::text("before"));
    conn.kill9();
    // The edge ends the client's connection once the tunnel connection is gone.
    let mut raw = ws.into_inner();
    let mut rest = Vec::new();
    match raw.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the client was not closed after the connector died: {e}"),
    }
}
