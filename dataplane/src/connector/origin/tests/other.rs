//! Unix sockets, TLS origins, built-in services, and the pure helpers.

use crate::quic::CertificateAuthority;

use super::super::request::path_and_query;
use super::*;

#[test]
fn unix_socket_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("origin.sock");
    let origin = Origin::unix(&path, |r| Action::Reply(ok(&r.target, "")));
    let target = OriginTarget {
        service: OriginService::Unix { path, tls: false },
        options: OriginOptions::default(),
    };
    let client = OriginClient::new();
    run(async {
        for p in ["/u1", "/u2"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), p);
        }
    });
    assert_eq!(origin.accepts(), 1);
    assert_eq!(origin.seen()[0].header("host"), Some("app.example.com"));
}

#[test]
fn unix_socket_missing_is_a_connect_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.sock");
    let target = OriginTarget {
        service: OriginService::Unix {
            path: path.clone(),
            tls: false,
        },
        options: OriginOptions::default(),
    };
    let (res, _) = run(call(
        &OriginClient::new(),
        &target,
        get("/"),
        VecBody::empty(),
    ));
    let err = res.expect_err("absent");
    assert!(
        err.to_string()
            .contains(&format!("unix:{}", path.display())),
        "{err}"
    );
}

/// A TLS origin whose certificate (for `names`) is signed by a fresh CA; returns the CA PEM
/// in a temp file too.
fn tls_origin(names: &[&str]) -> (Origin, CertificateAuthority, tempfile::NamedTempFile) {
    let (config, ca, pem) = tls_server(names);
    let origin = Origin::tcp_tls(Some(Arc::new(config)), |r| {
        Action::Reply(ok(&format!("secure {}", r.target), ""))
    });
    (origin, ca, pem)
}

pub(super) fn https_target(host: &str, port: u16) -> OriginTarget {
    OriginTarget {
        service: OriginService::Http {
            https: true,
            host: host.to_owned(),
            port,
        },
        options: OriginOptions::default(),
    }
}

#[test]
fn https_with_ca_pool() {
    let (origin, _ca, pem) = tls_origin(&["127.0.0.1"]);
    let mut target = https_target("127.0.0.1", origin.port());
    target.options.ca_pool = Some(pem.path().to_owned());
    target.validate().expect("valid config");
    let client = OriginClient::new();
    run(async {
        for p in ["/s1", "/s2"] {
            let (res, rec) = call(&client, &target, get(p), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), format!("secure {p}"));
        }
        // A large body through the TLS adapter (several records each way).
        let payload = vec![b'z'; 300_000];
        let r = req("POST", "/big", vec![("Transfer-Encoding", "chunked")]);
        let body = VecBody::new(payload.chunks(50_000).map(Bytes::copy_from_slice).collect());
        let (res, _) = call(&client, &target, r, body).await;
        res.expect("post");
    });
    assert_eq!(origin.accepts(), 1, "TLS connection reused");
    assert_eq!(origin.seen()[2].body.len(), 300_000);
}

#[test]
fn https_server_name_override() {
    let (origin, _ca, pem) = tls_origin(&["origin.internal"]);
    let mut target = https_target("127.0.0.1", origin.port());
    target.options.ca_pool = Some(pem.path().to_owned());
    target.options.origin_server_name = Some("origin.internal".to_owned());
    let (res, rec) = run(call(
        &OriginClient::new(),
        &target,
        get("/n"),
        VecBody::empty(),
    ));
    res.expect("proxy");
    assert_eq!(rec.text(), "secure /n");

    // matchSNIToHost: the name is the request's Host.
    target.options.origin_server_name = None;
    target.options.match_sni_to_host = true;
    target.options.http_host_header = Some("origin.internal".to_owned());
    let (res, _) = run(call(
        &OriginClient::new(),
        &target,
        get("/n"),
        VecBody::empty(),
    ));
    res.expect("sni from host");
}

#[test]
fn https_no_tls_verify() {
    let (origin, _ca, _pem) = tls_origin(&["somewhere.else"]);
    let mut target = https_target("127.0.0.1", origin.port());
    target.options.no_tls_verify = true;
    let (res, rec) = run(call(
        &OriginClient::new(),
        &target,
        get("/v"),
        VecBody::empty(),
    ));
    res.expect("proxy");
    assert_eq!(rec.text(), "secure /v");
}

#[test]
fn https_verification_fails_without_trust() {
    let (origin, _ca, pem) = tls_origin(&["127.0.0.1"]);
    let target = https_target("127.0.0.1", origin.port());
    let (res, rec) = run(call(
        &OriginClient::new(),
        &target,
        get("/"),
        VecBody::empty(),
    ));
    let err = res.expect_err("untrusted");
    assert!(matches!(err, ProxyError::Tls { .. }), "{err:?}");
    assert!(!err.head_sent());
    assert!(err.to_string().starts_with("origin 127.0.0.1:"), "{err}");
    assert!(rec.head.is_none());

    // Trusted CA but the wrong name.
    let mut target = https_target("127.0.0.1", origin.port());
    target.options.ca_pool = Some(pem.path().to_owned());
    target.options.origin_server_name = Some("other.name".to_owned());
    let (res, _) = run(call(
        &OriginClient::new(),
        &target,
        get("/"),
        VecBody::empty(),
    ));
    assert!(matches!(res, Err(ProxyError::Tls { .. })), "{res:?}");
}

#[test]
fn bad_ca_pool_is_a_config_error() {
    let mut target = https_target("127.0.0.1", 443);
    target.options.ca_pool = Some("/nonexistent/ca.pem".into());
    let err = target.validate().expect_err("missing file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"));
    let mut empty = tempfile::NamedTempFile::new().expect("file");
    empty.write_all(b"not a pem").expect("write");
    target.options.ca_pool = Some(empty.path().to_owned());
    assert!(target.validate().is_err());
    // Plain HTTP needs no TLS material.
    target.service = OriginService::Http {
        https: false,
        host: "h".into(),
        port: 80,
    };
    target.validate().expect("http ignores caPool");
}

#[test]
fn http_status_service() {
    let target = OriginTarget {
        service: OriginService::HttpStatus(418),
        options: OriginOptions::default(),
    };
    let body = VecBody::new(vec![Bytes::from_static(b"ignored")]);
    let polls = body.polls.clone();
    let r = req("POST", "/", vec![("Content-Length", "7")]);
    let (res, rec) = run(call(&OriginClient::new(), &target, r, body));
    res.expect("status");
    assert_eq!(rec.status(), 418);
    assert!(rec.body.is_empty());
    assert_eq!(polls.get(), 0);
}

#[test]
fn hello_world_shows_the_request() {
    let target = OriginTarget {
        service: OriginService::HelloWorld,
        options: OriginOptions::default(),
    };
    let r = req(
        "POST",
        "/ready?x=<y>",
        vec![("X-Custom", "a<b>&\"c\""), ("Content-Length", "11")],
    );
    let body = VecBody::new(vec![
        Bytes::from_static(b"hello"),
        Bytes::from_static(b" world"),
    ]);
    let (res, rec) = run(call(&OriginClient::new(), &target, r, body));
    res.expect("hello");
    assert_eq!(rec.status(), 200);
    assert_eq!(rec.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        rec.header("content-length"),
        Some(rec.body.len().to_string().as_str())
    );
    let page = rec.text();
    assert!(page.contains("<title>ringway hello world</title>"));
    assert!(page.contains("method: POST"));
    assert!(page.contains("host: app.example.com"));
    assert!(page.contains("path: /ready?x=&lt;y&gt;"));
    assert!(page.contains("X-Custom: a&lt;b&gt;&amp;&quot;c&quot;"));
    assert!(page.contains("body: 11 bytes"));
}

#[test]
fn dest_path_and_query() {
    for (dest, want) in [
        ("https://app.example.com/a/b?x=1", "/a/b?x=1"),
        ("https://app.example.com", "/"),
        ("https://app.example.com?q=1", "/?q=1"),
        ("http://h:8080/p#frag", "/p"),
        ("/already/a/path?z", "/already/a/path?z"),
    ] {
        assert_eq!(path_and_query(dest), want, "{dest}");
    }
}

#[test]
fn service_parsing() {
    let http = |https, host: &str, port| OriginService::Http {
        https,
        host: host.to_owned(),
        port,
    };
    for (s, want) in [
        ("http://localhost:8080", http(false, "localhost", 8080)),
        ("http://localhost", http(false, "localhost", 80)),
        (
            "https://origin.example/path",
            http(true, "origin.example", 443),
        ),
        ("https://[::1]:8443", http(true, "::1", 8443)),
        ("http_status:404", OriginService::HttpStatus(404)),
        ("hello_world", OriginService::HelloWorld),
        (
            "unix:/run/app.sock",
            OriginService::Unix {
                path: "/run/app.sock".into(),
                tls: false,
            },
        ),
        (
            "unix+tls:/run/app.sock",
            OriginService::Unix {
                path: "/run/app.sock".into(),
                tls: true,
            },
        ),
    ] {
        assert_eq!(OriginService::parse(s).expect(s), want, "{s}");
    }
    for bad in [
        "ftp://x",
        "http_status:abc",
        "http_status:42",
        "http://:80",
        "unix:",
        "http://h:99999",
    ] {
        assert!(OriginService::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn errors_are_one_line_and_name_the_side() {
    let errs = [
        ProxyError::ConnectTimeout {
            addr: "10.0.0.1:80".into(),
            timeout: Duration::from_millis(1500),
        },
        ProxyError::RequestBody {
            source: io::Error::other("stream reset"),
        },
        ProxyError::Sink {
            source: io::Error::other("stream reset"),
            head_sent: true,
        },
    ];
    assert_eq!(
        errs[0].to_string(),
        "origin 10.0.0.1:80 connect timed out after 1.5s"
    );
    assert!(errs[1].to_string().starts_with("client "));
    assert!(errs[2].head_sent() && errs[2].to_string().starts_with("client "));
}

/// The suite runs on io_uring where the kernel has it; this covers the epoll fallback for
/// the paths with the most I/O (keep-alive, chunked upload, TLS, close-delimited).
#[test]
fn legacy_driver_round_trip() {
    let plain = Origin::tcp(|r| Action::Reply(ok(&format!("{} bytes", r.body.len()), "")));
    let (tls, _ca, pem) = tls_origin(&["127.0.0.1"]);
    let mut secure = https_target("127.0.0.1", tls.port());
    secure.options.ca_pool = Some(pem.path().to_owned());
    let target = plain.target();
    let client = OriginClient::new();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    rt.block_on(async {
        for _ in 0..2 {
            let r = req("POST", "/", vec![("Transfer-Encoding", "chunked")]);
            let body = VecBody::new(vec![Bytes::from(vec![1u8; 200_000]); 3]);
            let (res, rec) = call(&client, &target, r, body).await;
            res.expect("plain");
            assert_eq!(rec.text(), "600000 bytes");
            let (res, rec) = call(&client, &secure, get("/t"), VecBody::empty()).await;
            res.expect("tls");
            assert_eq!(rec.text(), "secure /t");
        }
    });
    assert_eq!((plain.accepts(), tls.accepts()), (1, 1));
}
