//! The HTTP/1.1 codec: per request the edge parses one request head and writes one response
//! head, and the connector reads one origin response head (loadgen reads its summary).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput};
use dataplane::http::{
    Limits, ResponseContext, ResponseHead, ResponseHeadReader, Version, body_framing,
    parse_request_head, write_response_head,
};

/// A browser-ish navigation request (~400 bytes, 9 fields).
pub const BROWSER_GET: &[u8] = b"GET /dashboard/overview?tab=traffic&range=24h HTTP/1.1\r\n\
Host: app.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f2a9c1e8b7d4f60a1b2c3d4e5f60718; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
\r\n";

/// The smallest useful request.
pub const MINIMAL_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// A typical origin answer (~330 bytes, 9 fields), as the connector reads it.
pub const ORIGIN_200: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.27.3\r\n\
Date: Thu, 26 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 18734\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=0\r\n\
Etag: \"5f3a-1b2c3d4e\"\r\n\
Vary: Accept-Encoding\r\n\
Set-Cookie: session=3f2a9c1e8b7d4f60a1b2c3d4e5f60718; Path=/; HttpOnly\r\n\
\r\n";

fn response_head() -> ResponseHead {
    let headers = crate::wire::ORIGIN_RESPONSE_HEADERS;
    ResponseHead {
        status: 200,
        reason: None,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

pub fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("http1");

    for (name, head) in [
        ("parse_request_head/browser_get", BROWSER_GET),
        ("parse_request_head/minimal_get", MINIMAL_GET),
    ] {
        // Sanity: a complete head that consumes the whole buffer.
        let (_, used) = parse_request_head(head, &limits)
            .expect("valid head")
            .expect("complete head");
        assert_eq!(used, head.len());
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_request_head(black_box(head), &limits))
        });
    }

    // As the connector's origin client does it (fields kept, as slices of one copy of the
    // head) and as loadgen does it (summary only). The receive buffer is filled outside the
    // measurement: in both clients the bytes are already there from the socket read.
    let mut probe = BytesMut::from(ORIGIN_200);
    let parsed = ResponseHeadReader::new(false, limits)
        .read_head(&mut probe)
        .expect("valid head")
        .expect("complete head");
    assert!(probe.is_empty() && parsed.headers.len() == 9);
    g.throughput(Throughput::Bytes(ORIGIN_200.len() as u64));
    g.bench_function("read_response_head/origin_200", |b| {
        b.iter_batched_ref(
            || BytesMut::from(ORIGIN_200),
            |buf| ResponseHeadReader::new(false, limits).read_head(black_box(buf)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("read_response_summary/origin_200", |b| {
        b.iter_batched_ref(
            || BytesMut::from(ORIGIN_200),
            |buf| ResponseHeadReader::new(false, limits).read_summary(black_box(buf)),
            BatchSize::SmallInput,
        )
    });

    // As the edge's proxy does it: choose the framing, allocate the output, serialise.
    let head = response_head();
    let ctx = ResponseContext {
        head_request: false,
        version: Version::Http11,
        keep_alive: true,
    };
    let mut probe = BytesMut::new();
    write_response_head(
        &head,
        body_framing(&ctx, 200, &head.headers),
        &ctx,
        &mut probe,
    )
    .expect("valid head");
    g.throughput(Throughput::Bytes(probe.len() as u64));
    g.bench_function("write_response_head/6_headers", |b| {
        b.iter(|| {
            let head = black_box(&head);
            let framing = body_framing(&ctx, head.status, &head.headers);
            let mut out = BytesMut::with_capacity(256 + head.headers.len() * 48);
            let persist = write_response_head(head, framing, &ctx, &mut out).expect("valid");
            (out, persist)
        })
    });
    g.finish();
}
