//! `http2Origin`: HTTP/2 to a TLS origin that offers it (the `h2` crate's server over
//! tokio-rustls, on its own monoio thread), HTTP/1.1 to one that does not.

use std::net::TcpListener as StdListener;

use super::other::https_target;
use super::*;

/// A request as the HTTP/2 origin saw it.
#[derive(Debug, Clone)]
struct SeenH2 {
    method: String,
    path: String,
    authority: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    version: ::http::Version,
}

impl SeenH2 {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.0 == name)
            .map(|h| h.1.as_str())
    }
}

/// What the origin answers: status, body, and whether to set Content-Length.
struct Reply {
    status: u16,
    body: Vec<u8>,
    content_length: bool,
    trailers: bool,
}

type RespondH2 = dyn Fn(&SeenH2) -> Reply + Send + Sync;

/// An HTTP/2-only TLS origin (ALPN `h2`). Its thread lives until the test process ends.
struct H2Origin {
    port: u16,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenH2>>>,
    pem: tempfile::NamedTempFile,
}

impl H2Origin {
    fn start(respond: impl Fn(&SeenH2) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(usize::MAX, respond)
    }

    /// Each connection serves `per_conn` requests, then shuts down gracefully (GOAWAY).
    fn start_with(
        per_conn: usize,
        respond: impl Fn(&SeenH2) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_inner(per_conn, true, respond)
    }

    /// Cleartext HTTP/2 with prior knowledge (h2c) only.
    fn start_h2c(respond: impl Fn(&SeenH2) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_inner(usize::MAX, false, respond)
    }

    fn start_inner(
        per_conn: usize,
        tls: bool,
        respond: impl Fn(&SeenH2) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let (mut config, _ca, pem) = tls_server(&["127.0.0.1"]);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<RespondH2> = Arc::new(respond);
        let (a, s) = (accepts.clone(), seen.clone());
        std::thread::spawn(move || {
            run(async move {
                let listener = monoio::net::TcpListener::from_std(listener).expect("listener");
                // Bound: a test makes a handful of connections.
                while let Ok((tcp, _)) = listener.accept().await {
                    a.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, respond, seen) = (acceptor.clone(), respond.clone(), s.clone());
                    monoio::spawn(async move {
                        let io: Box<dyn crate::connector::origin::conn::PollIo> = if tls {
                            let polled = crate::pollio::tcp(tcp).unwrap();
                            let Ok(tls) = acceptor.accept(polled).await else {
                                return;
                            };
                            Box::new(tls)
                        } else {
                            Box::new(crate::pollio::tcp(tcp).unwrap())
                        };
                        let Ok(mut conn) = h2::server::handshake(io).await else {
                            return;
                        };
                        let mut served = 0;
                        while let Some(Ok((req, send))) = conn.accept().await {
                            let (respond, seen) = (respond.clone(), seen.clone());
                            monoio::spawn(answer(req, send, respond, seen));
                            served += 1;
                            if served == per_conn {
                                conn.graceful_shutdown();
                            }
                        }
                    });
                }
            })
        });
        Self {
            port,
            accepts,
            seen,
            pem,
        }
    }

    fn target(&self) -> OriginTarget {
        let mut t = https_target("127.0.0.1", self.port);
        t.options.ca_pool = Some(self.pem.path().to_owned());
        t.options.http2_origin = true;
        t
    }

    fn seen(&self) -> Vec<SeenH2> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn answer(
    req: ::http::Request<h2::RecvStream>,
    mut send: h2::server::SendResponse<Bytes>,
    respond: Arc<RespondH2>,
    seen: Arc<Mutex<Vec<SeenH2>>>,
) {
    let (parts, mut recv) = req.into_parts();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = recv.data().await {
        body.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let s = SeenH2 {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authority: parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
        body,
        version: parts.version,
    };
    let reply = respond(&s);
    seen.lock().expect("seen").push(s);
    let mut head = ::http::Response::builder().status(reply.status);
    if reply.content_length {
        head = head.header("content-length", reply.body.len());
    }
    let head = head.body(()).expect("response");
    let empty = reply.body.is_empty() && !reply.trailers;
    let Ok(mut stream) = send.send_response(head, empty) else {
        return;
    };
    if empty {
        return;
    }
    // h2 queues what the window does not admit yet; the test bodies are small enough.
    let _ = stream.send_data(Bytes::from(reply.body), !reply.trailers);
    if reply.trailers {
        let mut t = ::http::HeaderMap::new();
        t.insert("grpc-status", ::http::HeaderValue::from_static("0"));
        let _ = stream.send_trailers(t);
    }
}

fn echo_path(r: &SeenH2) -> Reply {
    Reply {
        status: 200,
        body: format!("h2 {} {}", r.method, r.path).into_bytes(),
        content_length: true,
        trailers: false,
    }
}

#[test]
fn requests_go_over_one_http2_connection() {
    let origin = H2Origin::start(echo_path);
    let target = origin.target();
    target.validate().expect("valid");
    let client = OriginClient::new();
    run(async {
        for p in ["/a?x=1", "/b"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.status(), 200);
            assert_eq!(rec.text(), format!("h2 GET {p}"));
        }
    });
    assert_eq!(origin.accepts(), 1, "one multiplexed connection");
    assert_eq!(client.http2_connections(), 1);
    assert_eq!(client.idle_connections(), 0, "nothing in the HTTP/1.1 pool");
    let seen = origin.seen();
    assert_eq!(seen[0].version, ::http::Version::HTTP_2);
    assert_eq!(
        seen[0].authority, "app.example.com",
        ":authority is the Host"
    );
}

impl H2Origin {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

#[test]
fn concurrent_requests_share_the_connection() {
    let origin = H2Origin::start(echo_path);
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        // The first request dials; the rest find its connection in the pool.
        let (res, _) = call(&client, &target, get("/first"), VecBody::empty()).await;
        res.expect("first");
        let calls = (0..8).map(|i| {
            let (client, target) = (&client, &target);
            async move { call(client, target, get(&format!("/c{i}")), VecBody::empty()).await }
        });
        for (i, (res, rec)) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            res.expect("concurrent");
            assert_eq!(rec.text(), format!("h2 GET /c{i}"));
        }
    });
    assert_eq!(origin.accepts(), 1);
}

#[test]
fn request_bodies_keep_their_length_or_stream_without_one() {
    let origin = H2Origin::start(|r| Reply {
        status: 201,
        body: format!(
            "got {} cl={}",
            r.body.len(),
            r.header("content-length").unwrap_or("none")
        )
        .into_bytes(),
        content_length: true,
        trailers: false,
    });
    let target = origin.target();
    let client = OriginClient::new();
    // Larger than HTTP/2's default 64 KiB windows: the upload waits for WINDOW_UPDATEs.
    let payload = vec![b'q'; 300_000];
    let chunks = || VecBody::new(payload.chunks(40_000).map(Bytes::copy_from_slice).collect());
    run(async {
        let r = req("POST", "/len", vec![("Content-Length", "300000")]);
        let (res, rec) = call(&client, &target, r, chunks()).await;
        res.expect("content-length body");
        assert_eq!(rec.status(), 201);
        assert_eq!(rec.text(), "got 300000 cl=300000");

        let r = req("POST", "/chunked", vec![("Transfer-Encoding", "chunked")]);
        let (res, rec) = call(&client, &target, r, chunks()).await;
        res.expect("chunked body");
        assert_eq!(rec.text(), "got 300000 cl=none", "HTTP/2 needs no chunking");
    });
    let seen = origin.seen();
    assert!(seen.iter().all(|s| s.body == payload));
    assert!(
        seen.iter().all(|s| s.header("transfer-encoding").is_none()),
        "{seen:?}"
    );
}

#[test]
fn a_body_shorter_than_its_content_length_is_the_clients_fault() {
    let origin = H2Origin::start(echo_path);
    let target = origin.target();
    let r = req("POST", "/short", vec![("Content-Length", "10")]);
    let (res, rec) = run(call(
        &OriginClient::new(),
        &target,
        r,
        VecBody::new(vec![Bytes::from_static(b"abc")]),
    ));
    let err = res.expect_err("short body");
    assert!(matches!(err, ProxyError::BadRequest { .. }), "{err}");
    assert!(!err.head_sent());
    assert!(rec.head.is_none());
}

#[test]
fn hop_by_hop_fields_are_dropped_and_te_trailers_kept() {
    let origin = H2Origin::start(echo_path);
    let target = origin.target();
    let r = req(
        "GET",
        "/h",
        vec![
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Hop", "1"),
            ("Upgrade", "websocket"),
            ("TE", "trailers"),
            ("X-End", "kept"),
        ],
    );
    let (res, _) = run(call(&OriginClient::new(), &target, r, VecBody::empty()));
    res.expect("proxy");
    let seen = &origin.seen()[0];
    let names: Vec<&str> = seen.headers.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(names, ["x-end", "te"], "{seen:?}");
    assert_eq!(seen.header("te"), Some("trailers"));
}

#[test]
fn responses_without_length_and_with_trailers_arrive_whole() {
    let origin = H2Origin::start(|_| Reply {
        status: 200,
        body: vec![b'r'; 200_000],
        content_length: false,
        trailers: true,
    });
    let (res, rec) = run(call(
        &OriginClient::new(),
        &origin.target(),
        get("/stream"),
        VecBody::empty(),
    ));
    res.expect("proxy");
    assert_eq!(rec.body.len(), 200_000);
    assert_eq!(rec.header("content-length"), None);
}

#[test]
fn an_origin_that_declines_http2_is_spoken_to_in_http1() {
    let (config, _ca, pem) = tls_server(&["127.0.0.1"]);
    // No ALPN on the server: it answers in HTTP/1.1 whatever the client offered.
    let origin = Origin::tcp_tls(Some(Arc::new(config)), |r| {
        Action::Reply(ok(&format!("h1 {}", r.target), ""))
    });
    let mut target = https_target("127.0.0.1", origin.port());
    target.options.ca_pool = Some(pem.path().to_owned());
    target.options.http2_origin = true;
    let client = OriginClient::new();
    run(async {
        for p in ["/one", "/two"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), format!("h1 {p}"));
        }
        let payload = vec![b'p'; 100_000];
        let r = req("POST", "/up", vec![("Transfer-Encoding", "chunked")]);
        let body = VecBody::new(payload.chunks(30_000).map(Bytes::copy_from_slice).collect());
        let (res, _) = call(&client, &target, r, body).await;
        res.expect("post");
    });
    assert_eq!(
        origin.accepts(),
        1,
        "the HTTP/1.1 connection is pooled and reused"
    );
    assert_eq!(client.http2_connections(), 0);
    assert_eq!(origin.seen()[2].body.len(), 100_000);
}

#[test]
fn a_cleartext_origin_that_speaks_h2c_gets_http2() {
    let origin = H2Origin::start_h2c(echo_path);
    let mut target = https_target("127.0.0.1", origin.port);
    target.service = OriginService::Http {
        https: false,
        host: "127.0.0.1".to_owned(),
        port: origin.port,
    };
    target.options.http2_origin = true;
    target.validate().expect("valid");
    let client = OriginClient::new();
    run(async {
        for p in ["/a", "/b"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.status(), 200);
            assert_eq!(rec.text(), format!("h2 GET {p}"));
        }
    });
    assert_eq!(origin.accepts(), 1, "one multiplexed h2c connection");
    assert_eq!(client.http2_connections(), 1);
    assert_eq!(origin.seen()[0].version, ::http::Version::HTTP_2);
}

#[test]
fn a_cleartext_origin_without_h2c_is_spoken_to_in_http1_and_remembered() {
    let origin = Origin::tcp(|r| Action::Reply(ok(&format!("plain {}", r.target), "")));
    let mut target = origin.target();
    target.options.http2_origin = true;
    let client = OriginClient::new();
    run(async {
        for p in ["/p", "/q"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), format!("plain {p}"));
        }
    });
    assert_eq!(client.http2_connections(), 0);
    // One connection carried the h2c preface and failed; the second request went straight to
    // HTTP/1.1 on the connection the first one pooled.
    assert_eq!(origin.accepts(), 2);
}

#[test]
fn without_http2_origin_an_http2_only_origin_is_refused_by_alpn() {
    let origin = H2Origin::start(echo_path);
    let mut target = origin.target();
    target.options.http2_origin = false;
    let (res, _) = run(call(
        &OriginClient::new(),
        &target,
        get("/x"),
        VecBody::empty(),
    ));
    let err = res.expect_err("no common protocol");
    assert!(matches!(err, ProxyError::Tls { .. }), "{err}");
}

#[test]
fn a_connection_the_origin_shut_down_is_replaced() {
    let origin = H2Origin::start_with(1, echo_path);
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        for p in ["/1", "/2", "/3"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy after GOAWAY");
            assert_eq!(rec.text(), format!("h2 GET {p}"));
        }
    });
    assert_eq!(
        origin.accepts(),
        3,
        "one connection per request, as the origin wants"
    );
}
