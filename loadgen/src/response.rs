//! Reading an HTTP/1.1 response, sans-IO: the connection driver appends received bytes to a
//! buffer and calls [`ResponseReader::advance`] until it reports [`Progress::Done`].
//!
//! Nothing is allocated per response: the head is parsed in place (httparse, header slots on
//! the stack) and only status, framing and keep-alive are kept; body bytes are counted and
//! dropped. Chunked bodies go through the dataplane's [`ChunkedDecoder`], the same decoder the
//! edge trusts with public traffic.

use bytes::{Buf, BytesMut};
use dataplane::http::{ChunkedDecoder, ChunkedLimits, DecodeEvent};

/// Largest response head accepted; more is a broken or hostile server.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// A response that did not parse. The connection cannot be reused after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed response: {0}")]
pub struct ParseError(pub String);

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    /// The connection may carry the next request.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Progress {
    /// Append more bytes and call again.
    NeedMore,
    Done(Done),
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Ends when the server closes.
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body { done: Done, body: Body },
}

/// One response at a time on one connection.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    head_request: bool,
}

impl ResponseReader {
    /// `head_request`: the request was HEAD, so the response has no body.
    pub fn new(head_request: bool) -> Self {
        Self {
            state: State::Head,
            head_request,
        }
    }

    /// Whether any part of a response (beyond interim ones) has been consumed.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// Consumes response bytes from the front of `buf`; bytes after the response stay.
    pub fn advance(&mut self, buf: &mut BytesMut) -> Result<Progress, ParseError> {
        // Bounded: each turn consumes a head (interim ones are capped by the head size limit
        // of the buffer the caller keeps) or body bytes, or returns.
        loop {
            match &mut self.state {
                State::Head => match parse_head(buf, self.head_request)? {
                    HeadOutcome::NeedMore => {
                        if buf.len() > MAX_HEAD_BYTES {
                            return Err(ParseError(format!(
                                "response head larger than {MAX_HEAD_BYTES} bytes"
                            )));
                        }
                        return Ok(Progress::NeedMore);
                    }
                    HeadOutcome::Interim => continue,
                    HeadOutcome::Final { done, body } => match body {
                        None => return Ok(Progress::Done(done)),
                        Some(body) => self.state = State::Body { done, body },
                    },
                },
                State::Body { done, body } => {
                    let done = *done;
                    let finished = match body {
                        Body::Length(remaining) => {
                            let n = (*remaining).min(buf.len() as u64);
                            buf.advance(n as usize);
                            *remaining -= n;
                            *remaining == 0
                        }
                        Body::Chunked(dec) => loop {
                            match dec.decode(buf) {
                                Ok(DecodeEvent::Data(_)) => {}
                                Ok(DecodeEvent::NeedMore) => break false,
                                Ok(DecodeEvent::End) => break true,
                                Err(e) => return Err(ParseError(e.to_string())),
                            }
                        },
                        Body::UntilClose => {
                            buf.clear();
                            false
                        }
                    };
                    if finished {
                        self.state = State::Head;
                        return Ok(Progress::Done(done));
                    }
                    return Ok(Progress::NeedMore);
                }
            }
        }
    }

    /// The server closed the connection. A body that runs until close is complete now;
    /// anything else was cut short (`None`).
    pub fn eof(&mut self) -> Option<Done> {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Body {
                done,
                body: Body::UntilClose,
            } => Some(Done {
                keep_alive: false,
                ..done
            }),
            _ => None,
        }
    }
}

enum HeadOutcome {
    NeedMore,
    /// A 1xx response was consumed; the final one follows.
    Interim,
    Final {
        done: Done,
        body: Option<Body>,
    },
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<HeadOutcome, ParseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut slots);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(HeadOutcome::NeedMore),
        Err(e) => return Err(ParseError(e.to_string())),
    };
    let status = res.code.unwrap_or(0);
    let minor = res.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = minor == 0;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ParseError("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != v) {
                return Err(ParseError("conflicting Content-Length".into()));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` frames the body; any other coding runs until close.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                close = true;
            } else if minor == 0 && has_token(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    buf.advance(len);
    if (100..200).contains(&status) && status != 101 {
        return Ok(HeadOutcome::Interim);
    }
    let mut done = Done {
        status,
        keep_alive: !close && status != 101,
    };
    let body = if head_request || status == 204 || status == 304 || status == 101 {
        None
    } else if chunked {
        Some(Body::Chunked(ChunkedDecoder::new(ChunkedLimits::default())))
    } else if other_coding {
        Some(Body::UntilClose)
    } else {
        match length {
            Some(0) => None,
            Some(n) => Some(Body::Length(n)),
            None => Some(Body::UntilClose),
        }
    };
    if matches!(body, Some(Body::UntilClose)) {
        done.keep_alive = false;
    }
    Ok(HeadOutcome::Final { done, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut ResponseReader, input: &[u8], step: usize) -> Vec<Done> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Progress::Done(d) = reader.advance(&mut buf).unwrap() {
                out.push(d);
            }
        }
        out
    }

    #[test]
    fn length_chunked_and_interim_responses_at_every_split() {
        let input: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        for step in 1..input.len() {
            let got = read_all(&mut ResponseReader::new(false), input, step);
            let statuses: Vec<u16> = got.iter().map(|d| d.status).collect();
            assert_eq!(statuses, [200, 404, 204, 500], "step {step}");
            assert!(got[..3].iter().all(|d| d.keep_alive));
            assert!(!got[3].keep_alive);
        }
    }

    #[test]
    fn head_response_has_no_body_and_close_delimited_ends_at_eof() {
        let mut r = ResponseReader::new(true);
        let got = read_all(&mut r, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 7);
        assert_eq!(got.len(), 1);

        let mut r = ResponseReader::new(false);
        let got = read_all(&mut r, b"HTTP/1.0 200 OK\r\n\r\nsome body", 4);
        assert!(got.is_empty());
        assert_eq!(
            r.eof(),
            Some(Done {
                status: 200,
                keep_alive: false
            })
        );
    }

    #[test]
    fn truncated_and_garbage_responses_are_errors() {
        let mut r = ResponseReader::new(false);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..]);
        assert_eq!(r.advance(&mut buf).unwrap(), Progress::NeedMore);
        assert_eq!(r.eof(), None, "a body cut short is not a response");

        let mut r = ResponseReader::new(false);
        let mut buf = BytesMut::from(&b"garbage garbage\r\n\r\n"[..]);
        assert!(r.advance(&mut buf).is_err());

        let mut r = ResponseReader::new(false);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..]);
        assert!(r.advance(&mut buf).is_err());

        let mut r = ResponseReader::new(false);
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..]);
        assert!(r.advance(&mut buf).is_err());

        let mut r = ResponseReader::new(false);
        let mut buf = BytesMut::from(&vec![b'a'; MAX_HEAD_BYTES + 1][..]);
        // A head with no line end yet: either a parse error or "too large", never NeedMore.
        assert!(r.advance(&mut buf).is_err());
    }
}
