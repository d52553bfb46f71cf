//! The harness's own HTTP/1.1 message reader: head lines, header lookup, Content-Length and
//! chunked bodies, and the reason phrases [`crate::origins::HashOrigin`] sends.
//!
//! It is independent of `dataplane::http` on purpose. The end-to-end tests check the product's
//! codec (the edge's and the connector's parsing and framing) against what this reader sees on
//! the wire; if the harness used the product's codec, a bug in that codec would read its own
//! wrong output back as right and hide itself. Keep it separate, small and strict, and do not
//! make the harness call `dataplane::http`.

use std::io::BufRead;

/// The first value of header `name` (case-insensitive).
pub(crate) fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A start line and its header fields.
pub type Head = (String, Vec<(String, String)>);

/// Reads header lines up to the blank line. `None` on a clean EOF before the first byte.
pub fn read_head_lines(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    // Tolerate stray blank lines between messages (RFC 9112 §2.2).
    loop {
        first.clear();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        if !first.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside a message head",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad header line {line:?}"),
            )
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some((
        first.trim_end_matches(['\r', '\n']).to_string(),
        headers,
    )))
}

/// Reads a chunked body (trailers are read and dropped).
pub(crate) fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match read_chunks_into(r, &mut body) {
        Ok(()) => Ok(body),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{e} after {} decoded body bytes", body.len()),
        )),
    }
}

fn read_chunks_into(r: &mut impl BufRead, body: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside a chunked body",
            ));
        }
        let size_text = line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
    }
}

/// Whether `Transfer-Encoding` names `chunked`.
pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

/// The `Content-Length`, if any; a value that is not a number is an error.
pub(crate) fn content_length(headers: &[(String, String)]) -> std::io::Result<Option<usize>> {
    match header_in(headers, "content-length") {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad Content-Length {v:?}"),
            )
        }),
    }
}

/// The reason phrase [`crate::origins::HashOrigin`] sends with `status`.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
