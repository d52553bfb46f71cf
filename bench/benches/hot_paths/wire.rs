//! argotunnel data-stream headers: what the edge writes at the start of every proxied
//! request and the connector answers with.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use dataplane::wire::stream::{
    ConnectRequest, ConnectResponse, ConnectionType, Decoded, HeaderMessage, StreamHeaderDecoder,
    encode_request, encode_response, http_request_metadata, http_response_metadata,
    parse_request_metadata, parse_response_metadata,
};

/// A browser's request as the edge forwards it: method, host and 8 header values.
pub fn request() -> ConnectRequest {
    let headers = [
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        (
            "Cookie",
            "session=3f2a9c1e8b7d4f60a1b2c3d4e5f60718; theme=dark",
        ),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
        ("Cf-Connecting-IP", "203.0.113.7"),
    ];
    ConnectRequest {
        dest: "http://app.example.com/dashboard/overview?tab=traffic".to_owned(),
        kind: ConnectionType::Http,
        metadata: http_request_metadata("GET", "app.example.com", headers),
    }
}

/// A typical origin response's header fields; the HTTP benchmarks serialise the same ones.
pub const ORIGIN_RESPONSE_HEADERS: [(&str, &str); 6] = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Length", "18734"),
    ("Date", "Thu, 26 Nov 2026 10:00:00 GMT"),
    ("Cache-Control", "private, max-age=0"),
    ("Etag", "\"5f3a-1b2c3d4e\""),
    ("Server", "nginx/1.27.3"),
];

/// An origin's answer as the connector returns it: status and 6 header values.
pub fn response() -> ConnectResponse {
    let headers = ORIGIN_RESPONSE_HEADERS;
    ConnectResponse {
        error: String::new(),
        metadata: http_response_metadata(200, headers),
    }
}

/// Decodes one complete header: the message and the bytes after it.
fn decode_whole<M: HeaderMessage + std::fmt::Debug>(bytes: Bytes) -> (M, Bytes) {
    match StreamHeaderDecoder::<M>::new().feed(bytes) {
        Ok(Decoded::Done(m, rest)) => (m, rest),
        other => panic!("header did not decode: {other:?}"),
    }
}

pub fn bench(c: &mut Criterion) {
    let req = request();
    let resp = response();
    let req_bytes = encode_request(&req);
    let resp_bytes = encode_response(&resp);

    let mut g = c.benchmark_group("wire");

    g.throughput(Throughput::Bytes(req_bytes.len() as u64));
    g.bench_function("connect_request/encode", |b| {
        b.iter(|| encode_request(black_box(&req)))
    });
    g.bench_function("connect_request/decode", |b| {
        b.iter(|| decode_whole::<ConnectRequest>(black_box(req_bytes.clone())))
    });
    // The connector's step after decoding: method, host and headers out of the metadata.
    g.bench_function("connect_request/decode+parse_metadata", |b| {
        b.iter(|| {
            let (m, _) = decode_whole::<ConnectRequest>(black_box(req_bytes.clone()));
            parse_request_metadata(&m.metadata).expect("meta")
        })
    });

    g.throughput(Throughput::Bytes(resp_bytes.len() as u64));
    g.bench_function("connect_response/encode", |b| {
        b.iter(|| encode_response(black_box(&resp)))
    });
    g.bench_function("connect_response/decode", |b| {
        b.iter(|| decode_whole::<ConnectResponse>(black_box(resp_bytes.clone())))
    });
    // The edge's step after decoding: status and headers out of the metadata.
    g.bench_function("connect_response/decode+parse_metadata", |b| {
        b.iter(|| {
            let (m, _) = decode_whole::<ConnectResponse>(black_box(resp_bytes.clone()));
            parse_response_metadata(&m.metadata).expect("meta")
        })
    });
    g.finish();
}
