//! Services answered inside the connector: `http_status:NNN` and `hello_world`.

use std::fmt::Write as _;

use bytes::Bytes;

use super::request::path_and_query;
use super::{OriginRequest, OriginResponse, ProxyError, RequestBody, ResponseSink};

/// `http_status:NNN`: the status with an empty body. The request body is not read: nothing
/// consumes it, and the caller ends the stream either way.
pub(crate) async fn http_status(
    status: u16,
    sink: &mut impl ResponseSink,
) -> Result<(), ProxyError> {
    sink.send_head(OriginResponse {
        status,
        headers: vec![("Content-Length".to_owned(), Bytes::from_static(b"0"))],
    })
    .await
    .map_err(|source| ProxyError::Sink {
        source,
        head_sent: false,
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The hello-world page for a request whose body was `body_len` bytes.
pub(crate) fn hello_world_page(req: &OriginRequest, body_len: u64) -> String {
    let mut page = String::with_capacity(1024);
    // Writing into a String cannot fail.
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ringway hello world</title></head>\n\
         <body>\n<h1>ringway hello world</h1>\n<p>The tunnel works: this page comes from the connector.</p>\n\
         <ul>\n<li>method: {}</li>\n<li>host: {}</li>\n<li>path: {}</li>\n<li>body: {body_len} bytes</li>\n</ul>\n\
         <h2>Headers</h2>\n<ul>\n",
        escape(&req.method),
        escape(&req.host),
        escape(&path_and_query(&req.dest)),
    );
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value);
        let _ = writeln!(page, "<li>{}: {}</li>", escape(name), escape(&value));
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

/// `hello_world`: reads and counts the request body, then answers 200 with the page.
pub(crate) async fn hello_world(
    req: &OriginRequest,
    body: &mut impl RequestBody,
    has_body: bool,
    sink: &mut impl ResponseSink,
) -> Result<(), ProxyError> {
    let mut body_len = 0u64;
    if has_body {
        // Bound: the request body's length (the edge enforces its limits); it ends with None.
        while let Some(chunk) = body
            .next_chunk()
            .await
            .map_err(|source| ProxyError::RequestBody { source })?
        {
            body_len += chunk.len() as u64;
        }
    }
    let page = Bytes::from(hello_world_page(req, body_len));
    sink.send_head(OriginResponse {
        status: 200,
        headers: vec![
            (
                "Content-Type".to_owned(),
                Bytes::from_static(b"text/html; charset=utf-8"),
            ),
            (
                "Content-Length".to_owned(),
                Bytes::from(page.len().to_string()),
            ),
        ],
    })
    .await
    .map_err(|source| ProxyError::Sink {
        source,
        head_sent: false,
    })?;
    sink.send_body(page)
        .await
        .map_err(|source| ProxyError::Sink {
            source,
            head_sent: true,
        })
}
