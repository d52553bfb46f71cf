use super::*;

/// A server on an ephemeral loopback port.
fn start_server(limits: Limits) -> (MetricsServer, Arc<TunnelMetrics>, Uuid) {
    let metrics = Arc::new(TunnelMetrics::new());
    let id = Uuid::new_v4();
    let listener = bind(Some("127.0.0.1:0")).unwrap();
    let server =
        MetricsServer::start_with(listener, Arc::clone(&metrics), id, None, limits).unwrap();
    (server, metrics, id)
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw`, reads to the end, splits the answer.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let answer = Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    };
    let length: usize = answer.header("content-length").unwrap().parse().unwrap();
    if !raw.starts_with(b"HEAD ") {
        assert_eq!(length, answer.body.len());
    }
    answer
}

fn get(addr: SocketAddr, target: &str) -> Answer {
    exchange(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

#[test]
fn ready_is_503_until_a_connection_is_up() {
    let (server, metrics, id) = start_server(Limits::default());
    let addr = server.local_addr();

    let answer = get(addr, "/ready");
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.body,
        format!(r#"{{"status":503,"readyConnections":0,"connectorId":"{id}"}}"#)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));

    metrics.ha_connection_up();
    let answer = get(addr, "/ready");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        format!(r#"{{"status":200,"readyConnections":1,"connectorId":"{id}"}}"#)
    );

    metrics.ha_connection_up();
    metrics.ha_connection_up();
    metrics.ha_connection_up();
    let answer = get(addr, "/ready");
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains(r#""readyConnections":4,"#));

    for _ in 0..4 {
        metrics.ha_connection_down();
    }
    assert_eq!(get(addr, "/ready").status, 503);
}

#[test]
fn metrics_serves_the_counters() {
    let (server, metrics, id) = start_server(Limits::default());
    metrics.request_started();
    metrics.request_finished(200);
    metrics.request_started();
    metrics.request_finished(404);
    metrics.ha_connection_up();

    let answer = get(server.local_addr(), "/metrics");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines: Vec<&str> = answer.body.lines().collect();
    for expected in [
        "# TYPE cloudflared_tunnel_total_requests counter",
        "cloudflared_tunnel_total_requests 2",
        "cloudflared_tunnel_ha_connections 1",
        "cloudflared_tunnel_response_by_code{status_code=\"200\"} 1",
        "cloudflared_tunnel_response_by_code{status_code=\"404\"} 1",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in {}", answer.body);
    }
    let build = format!(
        "ringway_build_info{{version=\"{}\",connector_id=\"{id}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(lines.contains(&build.as_str()), "{}", answer.body);

    // A query string does not change the path.
    assert_eq!(get(server.local_addr(), "/metrics?x=1").status, 200);
}

#[test]
fn healthcheck_not_found_and_methods() {
    let (server, _metrics, _id) = start_server(Limits::default());
    let addr = server.local_addr();

    let answer = get(addr, "/healthcheck");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "OK\n");

    for path in ["/", "/nope", "/metricsx", "/metrics/", "/READY"] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }

    let answer = exchange(addr, b"HEAD /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-length"), Some("3"));
    assert_eq!(answer.body, "");

    let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        exchange(addr, b"DELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n").status,
        404
    );

    // HTTP/1.0 and bare newlines are fine.
    assert_eq!(exchange(addr, b"GET /ready HTTP/1.0\n\n").status, 503);
}

#[test]
fn bad_requests() {
    let (server, _metrics, _id) = start_server(Limits::default());
    let addr = server.local_addr();
    for raw in [
        &b"garbage\r\n\r\n"[..],
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"G\xffT /metrics HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
        b"\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        // HTTP/1.1 requires Host (Go's server, and so cloudflared's, answers 400 too).
        b"GET /metrics HTTP/1.1\r\n\r\n",
        b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(
            exchange(addr, raw).status,
            400,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }

    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() <= MAX_HEAD {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(exchange(addr, &big).status, 431);
}

#[test]
fn slow_clients_do_not_block_others() {
    let (server, _metrics, _id) = start_server(Limits {
        max_connections: 4,
        head_timeout: Duration::from_millis(300),
    });
    let addr = server.local_addr();

    // A client that sends half a request and then nothing.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    assert_eq!(get(addr, "/healthcheck").status, 200);

    // The server gives up on it after the head timeout, without an answer.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_secs(9));
}

#[test]
fn connections_over_the_cap_are_closed() {
    let (server, _metrics, _id) = start_server(Limits {
        max_connections: 1,
        head_timeout: Duration::from_secs(30),
    });
    let addr = server.local_addr();

    // Takes the only slot; accepted before the next one (one accept loop, in order).
    let holder = TcpStream::connect(addr).unwrap();
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    // Closed without an answer (EOF, or a reset if our request was already there).
    let _ = over.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = over.read_to_end(&mut bytes);
    assert!(bytes.is_empty());

    // The slot comes back when the holder goes away.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        if bytes.starts_with(b"HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_closes_the_listener() {
    let (server, _metrics, _id) = start_server(Limits::default());
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthcheck").status, 200);
    server.shutdown();
    assert!(TcpStream::connect(addr).is_err());

    // Drop does the same.
    let (server, _metrics, _id) = start_server(Limits::default());
    let addr = server.local_addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn bind_takes_the_first_free_port() {
    let taken_a = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken_a.local_addr().unwrap().port();
    let b = taken_b.local_addr().unwrap().port();
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let err = bind_first(host, [a, b]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{a}")) && message.contains(&format!("127.0.0.1:{b}")),
        "{message}"
    );
    assert!(matches!(err, MetricsError::NoFreePort { .. }));

    // Port 0 stands for "a free one" after the taken ones.
    let listener = bind_first(host, [a, b, 0]).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(port != a && port != b && port != 0);

    assert!(bind_first(host, []).is_err());
}

#[test]
fn bind_an_explicit_address() {
    let listener = bind(Some("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    // Taken: the error names the address.
    let err = bind(Some(&addr.to_string())).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    let err = bind(Some("not an address")).unwrap_err();
    assert!(err.to_string().contains("not an address"), "{err}");
}

#[test]
fn default_bind_lands_in_cloudflareds_range() {
    // Only when some default port is free on this machine; otherwise the error is checked.
    match bind(None) {
        Ok(listener) => {
            let addr = listener.local_addr().unwrap();
            assert_eq!(addr.ip(), DEFAULT_HOST);
            assert!(DEFAULT_PORTS.contains(&addr.port()));
        }
        Err(e) => assert!(e.to_string().contains("127.0.0.1:20241"), "{e}"),
    }
}

#[test]
fn request_heads() {
    let ok = |raw: &[u8]| match parse_request(raw) {
        Ok(Some(r)) => (r.method, r.path),
        Ok(None) => panic!("incomplete: {}", String::from_utf8_lossy(raw)),
        Err(_) => panic!("rejected: {}", String::from_utf8_lossy(raw)),
    };
    let rejected = |raw: &[u8]| match parse_request(raw) {
        Err(ReadError::Rejected(status)) => status,
        _ => panic!("not rejected: {}", String::from_utf8_lossy(raw)),
    };
    assert_eq!(
        ok(b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("GET".into(), "/metrics".into())
    );
    assert_eq!(
        ok(b"HEAD /ready#x HTTP/1.0\n\n"),
        ("HEAD".into(), "/ready".into())
    );
    assert!(matches!(
        parse_request(b"GET / HTTP/1.1\r\nA: b\r\n"),
        Ok(None)
    ));
    assert_eq!(
        rejected(b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        400
    );
    assert_eq!(rejected(b"GET /metrics\r\n\r\n"), 400);
    assert_eq!(rejected(b"GET /a b HTTP/1.1\r\n\r\n"), 400);
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    big.resize(MAX_HEAD, b'a');
    assert_eq!(rejected(&big), 431);
}
