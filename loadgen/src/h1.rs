//! HTTP/1.1 lanes: one connection, one request in flight, keep-alive unless the server or
//! `--conn-per-request` says otherwise.
//!
//! Per request the hot path is one send of a pre-serialised request (a reference-count
//! increment, no formatting), reads into a reused buffer, and an in-place head parse with the
//! dataplane's codec ([`ResponseHeadReader::read_summary`]: header slots on the stack, only
//! status, framing and keep-alive kept); body bytes are counted and dropped. Nothing is
//! allocated per response except the chunk handles of a chunked body.

use std::{cell::RefCell, rc::Rc};

use bytes::{Bytes, BytesMut};
use dataplane::http::{BodyDecoder, ChunkedLimits, Limits, ResponseHeadReader, ResponseSummary};

use crate::{
    clock::now_ns,
    lane::{Lane, RunShared},
    stats::{ErrorKind, Recorder},
    transport::Stream,
    watchdog::Watch,
};

/// Read size while waiting for a head; a small answer fits in one read.
const HEAD_READ: usize = 16 * 1024;
/// Read size inside a body: fewer syscalls for bulk responses.
const BODY_READ: usize = 128 * 1024;

/// A failed exchange: what kind, and the first words of why.
type Failure = (ErrorKind, String);

/// Where one connection is in the current response: reading its head, or skipping its body.
struct ResponseState {
    head: ResponseHeadReader,
    body: Option<(ResponseSummary, BodyDecoder)>,
}

impl ResponseState {
    /// `head_request`: the requests are HEAD, so responses have no body.
    fn new(head_request: bool) -> Self {
        Self {
            head: ResponseHeadReader::new(head_request, Limits::default()),
            body: None,
        }
    }

    /// Whether the current response's head has been read.
    fn in_body(&self) -> bool {
        self.body.is_some()
    }

    /// Consumes response bytes from the front of `buf`; `Some` once a response is complete
    /// (bytes after it stay in `buf`).
    fn advance(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseSummary>, Failure> {
        let malformed =
            |e: &dyn std::fmt::Display| (ErrorKind::Parse, format!("malformed response: {e}"));
        let (summary, body) = match &mut self.body {
            Some(in_body) => in_body,
            None => {
                let Some(summary) = self.head.read_summary(buf).map_err(|e| malformed(&e))? else {
                    return Ok(None);
                };
                let body = BodyDecoder::for_response(summary.framing, ChunkedLimits::default());
                self.body.insert((summary, body))
            }
        };
        if !body.skip(buf).map_err(|e| malformed(&e))? {
            return Ok(None);
        }
        let done = *summary;
        self.body = None;
        Ok(Some(done))
    }

    /// The server closed the connection: a body that runs until the close is complete now;
    /// anything else was cut short (`None`).
    fn eof(&mut self) -> Option<ResponseSummary> {
        let (summary, body) = self.body.take()?;
        body.complete_at_eof().then_some(summary)
    }
}

/// Runs one lane until its schedule ends.
pub async fn run_lane(
    shared: &RunShared,
    mut lane: Lane,
    recorder: Rc<RefCell<Recorder>>,
    watch: Rc<Watch>,
) {
    let mut stream: Option<Stream> = None;
    let mut reader = ResponseState::new(shared.target.is_head());
    let mut buf = BytesMut::with_capacity(HEAD_READ);
    let mut connect_failures = 0u32;
    let timeout_ns = shared.timeout.as_nanos() as u64;

    // Dial before the start so the first requests do not pay for it (their latency would
    // otherwise include a connect that later requests do not have).
    if !shared.conn_per_request
        && let Ok(Ok(s)) = monoio::time::timeout(shared.timeout, shared.dialer.connect()).await
    {
        stream = Some(s);
    }

    // Bounded by the schedule: `next` returns `None` at the window's end, on `-n`
    // exhaustion, or on stop.
    while let Some(start) = lane.next(shared).await {
        let request =
            shared.target.h1_requests[lane.url_index(shared.target.h1_requests.len())].clone();
        watch.arm(start.now_ns + timeout_ns);
        let outcome = exchange(shared, &watch, &mut stream, request, &mut reader, &mut buf).await;
        let done_ns = now_ns();
        let outcome = if watch.disarm() {
            Err((
                ErrorKind::Timeout,
                format!("no complete response within {:?}", shared.timeout),
            ))
        } else {
            outcome
        };
        match outcome {
            Ok((done, rx, tx)) => {
                connect_failures = 0;
                if start.counted {
                    recorder
                        .borrow_mut()
                        .response(start.from_ns, done_ns, done.status, rx, tx);
                } else {
                    recorder.borrow().uncounted_response();
                }
                if !done.keep_alive || shared.conn_per_request {
                    stream = None;
                }
            }
            Err((kind, why)) => {
                if start.counted {
                    recorder.borrow_mut().error(kind, || why);
                }
                // The connection's state is unknown after any failure: start clean.
                stream = None;
                reader = ResponseState::new(shared.target.is_head());
                buf.clear();
                if kind == ErrorKind::Connect {
                    lane.backoff(connect_failures).await;
                    connect_failures += 1;
                }
            }
        }
    }
}

/// Sends one request and reads its response; returns it with the bytes received and sent.
///
/// The watch's deadline covers it all; a connect (which the watchdog cannot interrupt) gets
/// a timer of its own.
async fn exchange(
    shared: &RunShared,
    watch: &Watch,
    stream: &mut Option<Stream>,
    request: Bytes,
    reader: &mut ResponseState,
    buf: &mut BytesMut,
) -> Result<(ResponseSummary, u64, u64), Failure> {
    if stream.is_none() {
        let s = match monoio::time::timeout(shared.timeout, shared.dialer.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err((
                    ErrorKind::Connect,
                    format!("connect {}: {e}", shared.dialer.addr),
                ));
            }
            Err(_) => return Err((ErrorKind::Timeout, "connect timed out".to_owned())),
        };
        *stream = Some(s);
        buf.clear();
    }
    let Some(s) = stream.as_mut() else {
        unreachable!("connected above")
    };
    if watch.fired() {
        return Err((
            ErrorKind::Timeout,
            "connect took the whole timeout".to_owned(),
        ));
    }
    watch.set_fd(s.raw_fd());
    let tx = request.len() as u64;
    let mut rx = buf.len() as u64;
    let mut n = s
        .send_then_read(request, buf, HEAD_READ)
        .await
        .map_err(|(what, e)| (ErrorKind::Reset, format!("{what}: {e}")))?;
    // Bounded: each turn consumes the bytes one read returned, or ends the exchange; the
    // watchdog ends a server that trickles forever.
    loop {
        if n == 0 {
            return match reader.eof() {
                Some(done) => Ok((done, rx, tx)),
                None => Err((
                    ErrorKind::Reset,
                    "the server closed the connection before the response was complete".into(),
                )),
            };
        }
        rx += n as u64;
        if let Some(done) = reader.advance(buf)? {
            return Ok((done, rx, tx));
        }
        let want = if reader.in_body() {
            BODY_READ
        } else {
            HEAD_READ
        };
        n = s
            .read_append(buf, want)
            .await
            .map_err(|e| (ErrorKind::Reset, format!("reading the response: {e}")))?;
    }
}
