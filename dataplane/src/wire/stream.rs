//! Data-stream headers: preamble, version and the `ConnectRequest` / `ConnectResponse` message.
//!
//! Every stream the edge opens to a connector starts with a 6-byte signature. A data stream
//! ([`DATA_STREAM_SIGNATURE`]) continues with [`VERSION`] and one unpacked Cap'n Proto message
//! in standard segment framing; the body follows raw. An RPC stream ([`RPC_STREAM_SIGNATURE`])
//! continues directly with Cap'n Proto RPC (see [`super::rpc`]).
//!
//! Encoding returns one buffer (signature + version + message), because the stock cloudflared
//! reads the version with a single `read` and must find both bytes in it. Decoding is
//! incremental ([`StreamHeaderDecoder`]): feed it whatever the stream delivered; it answers
//! [`Decoded::NeedMore`], or the message plus the bytes after it (the start of the body), or an
//! error. It checks the segment table against limits before buffering, so hostile input fails
//! fast instead of allocating.
//!
//! The HTTP conventions on top of the metadata list (`HttpMethod`, `HttpHost`, `HttpStatus`,
//! `HttpHeader:<Name>` once per value) are in [`http_request_metadata`],
//! [`parse_request_metadata`], [`http_response_metadata`] and [`parse_response_metadata`].

use std::fmt;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use capnp::message::ReaderOptions;
use capnp::serialize::OwnedSegments;

use super::generated::quic_metadata_protocol_capnp as schema;

/// First bytes of a data stream (one request).
pub const DATA_STREAM_SIGNATURE: [u8; 6] = [0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E];
/// First bytes of an edge → connector RPC stream (`CloudflaredServer`); no version follows.
pub const RPC_STREAM_SIGNATURE: [u8; 6] = [0x52, 0xBB, 0x82, 0x5C, 0xDB, 0x65];
/// Protocol version written after the data-stream signature.
pub const VERSION: &[u8; 2] = b"01";
/// Length of signature + version.
pub const PREAMBLE_LEN: usize = DATA_STREAM_SIGNATURE.len() + VERSION.len();

/// Default limit on one framed header message (segment table + segments).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most segments accepted in one header message (our encoder and Go's always write one).
pub const MAX_SEGMENTS: u32 = 64;
/// Most metadata entries accepted in one header message.
pub const MAX_METADATA_ENTRIES: u32 = 8192;

/// Metadata key: the request method.
pub const META_HTTP_METHOD: &str = "HttpMethod";
/// Metadata key: the request's Host.
pub const META_HTTP_HOST: &str = "HttpHost";
/// Metadata key: the response status code, in decimal.
pub const META_HTTP_STATUS: &str = "HttpStatus";
/// Metadata key prefix: one `HttpHeader:<Name>` entry per header value.
pub const META_HTTP_HEADER_PREFIX: &str = "HttpHeader:";
/// Metadata key: the flow id (used for logging/tracing by cloudflared).
pub const META_FLOW_ID: &str = "FlowID";

/// What a data stream carries (`ConnectionType` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// A plain HTTP request; the body is the rest of the stream.
    Http,
    /// An HTTP request that upgrades to a WebSocket; after the 101 both halves are raw bytes.
    Websocket,
    /// A raw TCP stream to `dest`.
    Tcp,
}

impl ConnectionType {
    fn to_schema(self) -> schema::ConnectionType {
        match self {
            Self::Http => schema::ConnectionType::Http,
            Self::Websocket => schema::ConnectionType::Websocket,
            Self::Tcp => schema::ConnectionType::Tcp,
        }
    }

    fn from_schema(t: schema::ConnectionType) -> Self {
        match t {
            schema::ConnectionType::Http => Self::Http,
            schema::ConnectionType::Websocket => Self::Websocket,
            schema::ConnectionType::Tcp => Self::Tcp,
        }
    }
}

/// The edge's request header on a data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Full URL for HTTP/WebSocket; the origin address for TCP.
    pub dest: String,
    /// What the stream carries.
    pub kind: ConnectionType,
    /// Ordered key/value pairs; keys may repeat.
    pub metadata: Vec<MetadataEntry>,
}

/// One metadata pair. Keys are protocol names (UTF-8); values are raw bytes, because a header
/// value may carry obs-text (bytes >= 0x80, RFC 9110 §5.5) that must reach the other side
/// unchanged. Cap'n Proto `Text` is a byte string on the wire and Go (cloudflared) treats it
/// as one, so nothing is lost or replaced in transit.
pub type MetadataEntry = (String, Bytes);

/// The connector's response header on a data stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// Empty on success; a description of the failure otherwise.
    pub error: String,
    /// Ordered key/value pairs; keys may repeat.
    pub metadata: Vec<MetadataEntry>,
}

/// Why a stream header could not be decoded (or a metadata list interpreted).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The first 6 bytes are neither signature.
    #[error("unknown stream signature {0:02x?}")]
    BadSignature([u8; 6]),
    /// An RPC-stream signature where only a data stream is acceptable.
    #[error("RPC stream signature where a data stream was expected")]
    UnexpectedRpcStream,
    /// The version after the signature is not `"01"`.
    #[error("unsupported protocol version {0:02x?}")]
    BadVersion([u8; 2]),
    /// The segment table announces more segments than [`MAX_SEGMENTS`].
    #[error("header message has {0} segments, more than {MAX_SEGMENTS}")]
    TooManySegments(u64),
    /// The segment table announces a message larger than the decoder's limit.
    #[error("header message of at least {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Bytes announced so far.
        size: u64,
        /// The decoder's limit.
        limit: usize,
    },
    /// More metadata entries than [`MAX_METADATA_ENTRIES`].
    #[error("{0} metadata entries, more than {MAX_METADATA_ENTRIES}")]
    TooManyMetadata(u32),
    /// The Cap'n Proto message is malformed.
    #[error("malformed header message: {0}")]
    Capnp(#[from] capnp::Error),
    /// A field holds a value the protocol does not allow.
    #[error("invalid header: {0}")]
    Invalid(String),
    /// `push`/`feed` called after the decoder returned a result or an error.
    #[error("stream header decoder already finished")]
    Finished,
}

/// A message that can follow the data-stream preamble.
pub trait HeaderMessage: Sized {
    /// Builds the Cap'n Proto message.
    fn build(&self) -> capnp::message::Builder<capnp::message::HeapAllocator>;
    /// Reads the message back.
    fn read(message: &capnp::message::Reader<OwnedSegments>) -> Result<Self, WireError>;
}

impl HeaderMessage for ConnectRequest {
    fn build(&self) -> capnp::message::Builder<capnp::message::HeapAllocator> {
        let mut message = capnp::message::Builder::new_default();
        {
            let mut root = message.init_root::<schema::connect_request::Builder>();
            root.set_dest(self.dest.as_str());
            root.set_type(self.kind.to_schema());
            if !self.metadata.is_empty() {
                write_metadata(root.init_metadata(list_len(&self.metadata)), &self.metadata);
            }
        }
        message
    }

    fn read(message: &capnp::message::Reader<OwnedSegments>) -> Result<Self, WireError> {
        let root = message.get_root::<schema::connect_request::Reader>()?;
        let dest = root
            .get_dest()?
            .to_string()
            .map_err(|_| WireError::Invalid("dest is not UTF-8".into()))?;
        let kind = root
            .get_type()
            .map_err(|e| WireError::Invalid(format!("unknown connection type {}", e.0)))?;
        let metadata = read_metadata(root.get_metadata()?)?;
        Ok(Self {
            dest,
            kind: ConnectionType::from_schema(kind),
            metadata,
        })
    }
}

impl HeaderMessage for ConnectResponse {
    fn build(&self) -> capnp::message::Builder<capnp::message::HeapAllocator> {
        let mut message = capnp::message::Builder::new_default();
        {
            let mut root = message.init_root::<schema::connect_response::Builder>();
            if !self.error.is_empty() {
                root.set_error(self.error.as_str());
            }
            if !self.metadata.is_empty() {
                write_metadata(root.init_metadata(list_len(&self.metadata)), &self.metadata);
            }
        }
        message
    }

    fn read(message: &capnp::message::Reader<OwnedSegments>) -> Result<Self, WireError> {
        let root = message.get_root::<schema::connect_response::Reader>()?;
        let error = lossy(root.get_error()?);
        let metadata = read_metadata(root.get_metadata()?)?;
        Ok(Self { error, metadata })
    }
}

fn list_len(metadata: &[MetadataEntry]) -> u32 {
    // A list longer than u32::MAX could not be encoded anyway; the decoder's limits are far lower.
    u32::try_from(metadata.len()).unwrap_or(u32::MAX)
}

fn write_metadata(
    mut list: capnp::struct_list::Builder<'_, schema::metadata::Owned>,
    metadata: &[MetadataEntry],
) {
    for (i, (key, val)) in metadata.iter().enumerate().take(list.len() as usize) {
        let mut entry = list.reborrow().get(i as u32);
        entry.set_key(key.as_str());
        entry.set_val(capnp::text::Reader(val));
    }
}

/// The error text is for people, so bytes that are not UTF-8 are replaced; metadata values stay
/// bytes ([`MetadataEntry`]); keys and `dest` must be UTF-8.
fn lossy(text: capnp::text::Reader<'_>) -> String {
    String::from_utf8_lossy(text.as_bytes()).into_owned()
}

fn read_metadata(
    list: capnp::struct_list::Reader<'_, schema::metadata::Owned>,
) -> Result<Vec<MetadataEntry>, WireError> {
    if list.len() > MAX_METADATA_ENTRIES {
        return Err(WireError::TooManyMetadata(list.len()));
    }
    let mut out = Vec::with_capacity(list.len() as usize);
    for entry in list.iter() {
        let key = entry
            .get_key()?
            .to_string()
            .map_err(|_| WireError::Invalid("metadata key is not UTF-8".into()))?;
        let val = Bytes::copy_from_slice(entry.get_val()?.as_bytes());
        out.push((key, val));
    }
    Ok(out)
}

fn encode<M: HeaderMessage>(msg: &M) -> Bytes {
    let message = msg.build();
    let words = capnp::serialize::compute_serialized_size_in_words(&message);
    let mut out = BytesMut::with_capacity(PREAMBLE_LEN + words * 8);
    out.put_slice(&DATA_STREAM_SIGNATURE);
    out.put_slice(VERSION);
    let segments = message.get_segments_for_output();
    out.put_u32_le(segments.len() as u32 - 1);
    for segment in segments.iter() {
        out.put_u32_le((segment.len() / 8) as u32);
    }
    if segments.len().is_multiple_of(2) {
        out.put_u32_le(0);
    }
    for segment in segments.iter() {
        out.put_slice(segment);
    }
    out.freeze()
}

/// Signature + version + the `ConnectRequest`, in one buffer (write it with one write).
pub fn encode_request(req: &ConnectRequest) -> Bytes {
    encode(req)
}

/// Signature + version + the `ConnectResponse`, in one buffer.
pub fn encode_response(resp: &ConnectResponse) -> Bytes {
    encode(resp)
}

/// What [`StreamHeaderDecoder`] has so far.
#[derive(Debug)]
pub enum Decoded<M> {
    /// The header is incomplete; feed more bytes.
    NeedMore,
    /// A data stream: its header message, and the bytes after it (the start of the body).
    Done(M, Bytes),
    /// An RPC stream (only if the decoder accepts them): the bytes after the signature, which
    /// start the Cap'n Proto RPC conversation.
    Rpc(Bytes),
}

/// Incremental decoder for a stream header carrying `M` ([`ConnectRequest`] on the connector,
/// [`ConnectResponse`] on the edge).
///
/// After it returns [`Decoded::Done`], [`Decoded::Rpc`] or an error, it is finished and further
/// input returns [`WireError::Finished`].
pub struct StreamHeaderDecoder<M> {
    buf: BytesMut,
    accept_rpc: bool,
    max_message_bytes: usize,
    finished: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for StreamHeaderDecoder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHeaderDecoder")
            .field("buffered", &self.buf.len())
            .field("accept_rpc", &self.accept_rpc)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("finished", &self.finished)
            .finish()
    }
}

impl<M: HeaderMessage> Default for StreamHeaderDecoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// How far [`parse`] got.
enum Parsed {
    NeedMore,
    /// A data stream header: the framed message is `buf[PREAMBLE_LEN..end]`.
    Data {
        end: usize,
    },
    Rpc,
}

impl<M: HeaderMessage> StreamHeaderDecoder<M> {
    /// A decoder that accepts only data streams, with [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            accept_rpc: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            finished: false,
            _message: PhantomData,
        }
    }

    /// Also accept RPC streams (the connector serves both kinds on edge-opened streams).
    pub(crate) fn accepting_rpc(mut self) -> Self {
        self.accept_rpc = true;
        self
    }

    /// Sets the limit on the framed message (segment table + segments).
    pub fn with_max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Bytes buffered while waiting for the rest of the header.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes by reference (copied into the decoder's buffer).
    pub fn push(&mut self, data: &[u8]) -> Result<Decoded<M>, WireError> {
        if self.finished {
            return Err(WireError::Finished);
        }
        self.buf.extend_from_slice(data);
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.step(&buf);
        match result {
            Ok(Some((parsed, consumed))) => {
                let leftover = buf.split_off(consumed).freeze();
                Ok(parsed.with_leftover(leftover))
            }
            Ok(None) => {
                self.buf = buf;
                Ok(Decoded::NeedMore)
            }
            Err(e) => Err(e),
        }
    }

    /// Feeds an owned chunk; when the header completes inside it and nothing was buffered
    /// before, the leftover is a zero-copy slice of `data`.
    pub fn feed(&mut self, data: Bytes) -> Result<Decoded<M>, WireError> {
        if self.finished {
            return Err(WireError::Finished);
        }
        if !self.buf.is_empty() {
            return self.push(&data);
        }
        match self.step(&data)? {
            Some((parsed, consumed)) => Ok(parsed.with_leftover(data.slice(consumed..))),
            None => {
                self.buf.extend_from_slice(&data);
                Ok(Decoded::NeedMore)
            }
        }
    }

    /// Parses everything buffered; on a result or an error marks the decoder finished.
    fn step(&mut self, data: &[u8]) -> Result<Option<(Complete<M>, usize)>, WireError> {
        let outcome = self.parse(data).and_then(|parsed| match parsed {
            Parsed::NeedMore => Ok(None),
            Parsed::Rpc => Ok(Some((Complete::Rpc, RPC_STREAM_SIGNATURE.len()))),
            Parsed::Data { end } => {
                let message = read_framed(&data[PREAMBLE_LEN..end])?;
                Ok(Some((Complete::Data(M::read(&message)?), end)))
            }
        });
        if !matches!(outcome, Ok(None)) {
            self.finished = true;
            self.buf = BytesMut::new();
        }
        outcome
    }

    fn parse(&self, data: &[u8]) -> Result<Parsed, WireError> {
        let Some(signature) = data.get(..6) else {
            return Ok(Parsed::NeedMore);
        };
        let mut sig = [0u8; 6];
        sig.copy_from_slice(signature);
        if sig == RPC_STREAM_SIGNATURE {
            return if self.accept_rpc {
                Ok(Parsed::Rpc)
            } else {
                Err(WireError::UnexpectedRpcStream)
            };
        }
        if sig != DATA_STREAM_SIGNATURE {
            return Err(WireError::BadSignature(sig));
        }
        let Some(version) = data.get(6..PREAMBLE_LEN) else {
            return Ok(Parsed::NeedMore);
        };
        if version != VERSION {
            return Err(WireError::BadVersion([version[0], version[1]]));
        }
        match framed_len(&data[PREAMBLE_LEN..], self.max_message_bytes)? {
            Some(len) => Ok(Parsed::Data {
                end: PREAMBLE_LEN + len,
            }),
            None => Ok(Parsed::NeedMore),
        }
    }
}

enum Complete<M> {
    Data(M),
    Rpc,
}

impl<M> Complete<M> {
    fn with_leftover(self, leftover: Bytes) -> Decoded<M> {
        match self {
            Self::Data(m) => Decoded::Done(m, leftover),
            Self::Rpc => Decoded::Rpc(leftover),
        }
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Length of the framed message at the start of `data` (segment table + segments), once the
/// whole message is there; checks the limits as soon as the table announces them.
fn framed_len(data: &[u8], limit: usize) -> Result<Option<usize>, WireError> {
    let Some(count_minus_one) = read_u32(data, 0) else {
        return Ok(None);
    };
    let segments = u64::from(count_minus_one) + 1;
    if segments > u64::from(MAX_SEGMENTS) {
        return Err(WireError::TooManySegments(segments));
    }
    // 4 bytes of count + 4 per segment, padded to a word.
    let table = (4 + 4 * segments).next_multiple_of(8);
    let mut size = table;
    let too_large = |size: u64| WireError::MessageTooLarge { size, limit };
    if size > limit as u64 {
        return Err(too_large(size));
    }
    for i in 0..segments {
        let Some(words) = read_u32(data, 4 + 4 * i as usize) else {
            return Ok(None);
        };
        size += u64::from(words) * 8;
        if size > limit as u64 {
            return Err(too_large(size));
        }
    }
    let size = size as usize;
    Ok((data.len() >= size).then_some(size))
}

/// Reads one framed message whose length [`framed_len`] has checked.
fn read_framed(framed: &[u8]) -> Result<capnp::message::Reader<OwnedSegments>, WireError> {
    let words = (framed.len() / 8) as u64;
    let options = ReaderOptions {
        // Each object is read once; the slack covers the root and empty lists. Twice the
        // message is a generous bound that still stops amplification through shared pointers.
        traversal_limit_in_words: Some(2 * words as usize + 64),
        nesting_limit: 16,
    };
    let mut slice = framed;
    Ok(capnp::serialize::read_message(&mut slice, options)?)
}

/// Request metadata for an HTTP request: `HttpMethod`, `HttpHost`, then one
/// `HttpHeader:<Name>` per header value, in the given order.
pub fn http_request_metadata<K, V>(
    method: &str,
    host: &str,
    headers: impl IntoIterator<Item = (K, V)>,
) -> Vec<MetadataEntry>
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let mut out = vec![
        (
            META_HTTP_METHOD.to_owned(),
            Bytes::copy_from_slice(method.as_bytes()),
        ),
        (
            META_HTTP_HOST.to_owned(),
            Bytes::copy_from_slice(host.as_bytes()),
        ),
    ];
    push_headers(&mut out, headers);
    out
}

/// Response metadata for an HTTP response: `HttpStatus`, then one `HttpHeader:<Name>` per
/// header value, in the given order.
pub fn http_response_metadata<K, V>(
    status: u16,
    headers: impl IntoIterator<Item = (K, V)>,
) -> Vec<MetadataEntry>
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let mut out = vec![(META_HTTP_STATUS.to_owned(), Bytes::from(status.to_string()))];
    push_headers(&mut out, headers);
    out
}

fn push_headers<K, V>(out: &mut Vec<MetadataEntry>, headers: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    for (name, value) in headers {
        out.push((
            format!("{META_HTTP_HEADER_PREFIX}{}", name.as_ref()),
            Bytes::copy_from_slice(value.as_ref()),
        ));
    }
}

/// An HTTP request head recovered from request metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequestMeta {
    /// `HttpMethod`.
    pub method: String,
    /// `HttpHost` (may be empty).
    pub host: String,
    /// `HttpHeader:<Name>` entries, in order, one per value, values as sent.
    pub headers: Vec<(String, Bytes)>,
}

/// Splits `HttpHeader:<Name>` keys; `Ok(None)` for keys that are not headers.
fn header_name(key: &str) -> Result<Option<&str>, WireError> {
    match key.strip_prefix(META_HTTP_HEADER_PREFIX) {
        None => Ok(None),
        Some("") => Err(WireError::Invalid(format!(
            "metadata key {key:?} names no header"
        ))),
        Some(name) if name.contains(':') => Err(WireError::Invalid(format!(
            "metadata key {key:?} is malformed"
        ))),
        Some(name) => Ok(Some(name)),
    }
}

/// A metadata value that must be text (method, host).
fn utf8(key: &str, val: &Bytes) -> Result<String, WireError> {
    String::from_utf8(val.to_vec())
        .map_err(|_| WireError::Invalid(format!("metadata {key} is not UTF-8")))
}

/// Reads `HttpMethod`, `HttpHost` and the headers from request metadata; other keys are ignored.
pub fn parse_request_metadata(metadata: &[MetadataEntry]) -> Result<HttpRequestMeta, WireError> {
    let mut method = None;
    let mut out = HttpRequestMeta::default();
    for (key, val) in metadata {
        match key.as_str() {
            META_HTTP_METHOD => method = Some(utf8(key, val)?),
            META_HTTP_HOST => out.host = utf8(key, val)?,
            _ => {
                if let Some(name) = header_name(key)? {
                    out.headers.push((name.to_owned(), val.clone()));
                }
            }
        }
    }
    out.method = method
        .filter(|m| !m.is_empty())
        .ok_or_else(|| WireError::Invalid("request metadata has no HttpMethod".into()))?;
    Ok(out)
}

/// Reads `HttpStatus` and the headers (in order, one per value) from response metadata; other
/// keys are ignored.
pub fn parse_response_metadata(
    metadata: &[MetadataEntry],
) -> Result<(u16, Vec<(String, Bytes)>), WireError> {
    let mut status = None;
    let mut headers = Vec::new();
    for (key, val) in metadata {
        if key == META_HTTP_STATUS {
            let code = std::str::from_utf8(val)
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| WireError::Invalid(format!("bad HttpStatus {val:?}")))?;
            status = Some(code);
        } else if let Some(name) = header_name(key)? {
            headers.push((name.to_owned(), val.clone()));
        }
    }
    let status =
        status.ok_or_else(|| WireError::Invalid("response metadata has no HttpStatus".into()))?;
    Ok((status, headers))
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
