//! Commands and getters on one of a [`Driver`]'s connections and its streams: open, write,
//! read, finish, reset, stop, datagrams, close, statistics.

use super::*;

impl Driver {
    /// Opens a bidirectional stream. `None` when the peer's stream limit is reached
    /// (wait for `StreamsAvailable`) or the connection is gone or closing. Nothing is sent
    /// until the first write or finish.
    pub fn open_bi(&mut self, id: ConnId) -> Option<StreamId> {
        let slot = self.slot(id)?;
        let stream = slot.conn.streams().open(Dir::Bi)?;
        Some(stream)
    }

    /// Queues `data` on a stream without copying it (quinn keeps slices of the same
    /// buffer) and advances `data` past what was taken; what is left did not fit (flow
    /// control or the send window), so retry it on `StreamWritable`. Returns the bytes
    /// taken.
    pub fn write(
        &mut self,
        id: ConnId,
        stream: StreamId,
        data: &mut Bytes,
    ) -> Result<usize, WriteError> {
        self.write_chunks(id, stream, std::slice::from_mut(data))
            .map(|w| w.bytes)
    }

    /// [`write`](Self::write) for several buffers at once (one call, one flow-control
    /// check). Fully taken chunks are left empty, a partly taken one is advanced.
    pub(crate) fn write_chunks(
        &mut self,
        id: ConnId,
        stream: StreamId,
        data: &mut [Bytes],
    ) -> Result<Written, WriteError> {
        let slot = self.slot(id).ok_or(WriteError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(WriteError::NotWritable);
        }
        let result = slot.conn.send_stream(stream).write_chunks(data);
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::WriteError::Blocked => WriteError::Blocked,
            quinn_proto::WriteError::Stopped(code) => WriteError::Stopped(code),
            quinn_proto::WriteError::ClosedStream => WriteError::ClosedStream,
        })
    }

    /// Reads the next in-order chunk of a stream, at most `max` bytes. `Ok(None)` is the
    /// end (FIN), after which the stream's receive side is gone.
    ///
    /// Zero-copy: the `Bytes` is the decrypted payload of the packet that carried it,
    /// a slice of the buffer given to [`handle_datagram`](Self::handle_datagram). quinn
    /// copies only when it defragments a stream's buffer, which it does when many tiny
    /// or overlapping frames pin much more memory than they carry (over-allocation above
    /// max(32 KiB, 1.5 × buffered) or too many chunks): a peer sending pathological
    /// frames, not the normal path.
    pub fn read(
        &mut self,
        id: ConnId,
        stream: StreamId,
        max: usize,
    ) -> Result<Option<Bytes>, ReadError> {
        let slot = self.slot(id).ok_or(ReadError::UnknownConnection)?;
        if !can_recv(slot.conn.side(), stream) {
            return Err(ReadError::NotReadable);
        }
        let mut recv = slot.conn.recv_stream(stream);
        let result = match recv.read(true) {
            Ok(mut chunks) => {
                let result = chunks.next(max);
                // Whether it asks to transmit (new flow-control credit) or not, the
                // connection is queued for sending below, so the flag is not needed.
                let _ = chunks.finalize();
                match result {
                    Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
                    Err(quinn_proto::ReadError::Blocked) => Err(ReadError::Blocked),
                    Err(quinn_proto::ReadError::Reset(code)) => Err(ReadError::Reset(code)),
                }
            }
            // We only ever read in order, so `IllegalOrderedRead` cannot happen.
            Err(_) => Err(ReadError::ClosedStream),
        };
        self.after_input(id.index);
        result
    }

    /// Sends FIN after the data written so far. `StreamFinished` follows once the peer
    /// has acknowledged everything.
    pub fn finish(&mut self, id: ConnId, stream: StreamId) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.send_stream(stream).finish();
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::FinishError::Stopped(code) => StreamError::Stopped(code),
            quinn_proto::FinishError::ClosedStream => StreamError::ClosedStream,
        })
    }

    /// Abandons sending on a stream (RESET_STREAM with `code`); unsent data is dropped.
    pub fn reset(&mut self, id: ConnId, stream: StreamId, code: VarInt) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.send_stream(stream).reset(code);
        self.after_input(id.index);
        result.map_err(|_| StreamError::ClosedStream)
    }

    /// Stops receiving on a stream (STOP_SENDING with `code`); buffered data is dropped.
    pub fn stop(&mut self, id: ConnId, stream: StreamId, code: VarInt) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_recv(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.recv_stream(stream).stop(code);
        self.after_input(id.index);
        result.map_err(|_| StreamError::ClosedStream)
    }

    /// Queues an unreliable datagram. When the send buffer is full the oldest queued
    /// datagrams are dropped to make room: fresh data is worth more than stale.
    pub fn send_datagram(&mut self, id: ConnId, data: Bytes) -> Result<(), DatagramError> {
        let slot = self.slot(id).ok_or(DatagramError::UnknownConnection)?;
        let result = slot.conn.datagrams().send(data, true);
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::SendDatagramError::Disabled => DatagramError::Disabled,
            quinn_proto::SendDatagramError::UnsupportedByPeer => DatagramError::UnsupportedByPeer,
            // `Blocked` only happens with `drop = false`.
            quinn_proto::SendDatagramError::TooLarge
            | quinn_proto::SendDatagramError::Blocked(_) => DatagramError::TooLarge,
        })
    }

    /// The largest datagram [`send_datagram`](Self::send_datagram) accepts now (it varies
    /// with the path MTU); `None` when datagrams are off on either side.
    pub fn max_datagram_size(&mut self, id: ConnId) -> Option<usize> {
        self.slot(id)?.conn.datagrams().max_size()
    }

    /// Closes a connection with an application error `code` and `reason`. Unsent stream
    /// data is abandoned; `ConnectionDrained` follows after the draining period.
    pub fn close(&mut self, now: Instant, id: ConnId, code: VarInt, reason: Bytes) {
        if let Some(slot) = self.slot(id) {
            slot.conn.close(now, code, reason);
            self.after_input(id.index);
        }
    }

    /// Closes every connection (shutdown) and stops accepting new ones.
    pub(crate) fn close_all(&mut self, now: Instant, code: VarInt, reason: Bytes) {
        self.accepting = false;
        // Bound: the connection table's length.
        for index in 0..self.conns.len() {
            if let Some(slot) = self.conns[index].as_mut() {
                slot.conn.close(now, code, reason.clone());
                self.after_input(index);
            }
        }
    }

    /// quinn's statistics for a connection (RTT, congestion window, bytes, frames, ...).
    pub fn stats(&mut self, id: ConnId) -> Option<ConnectionStats> {
        Some(self.slot(id)?.conn.stats())
    }

    /// When the last datagram from the peer arrived (`None` before the first).
    pub(crate) fn last_received(&mut self, id: ConnId) -> Option<Instant> {
        self.slot(id)?.last_rx
    }

    /// The peer's address.
    pub(crate) fn remote_address(&mut self, id: ConnId) -> Option<SocketAddr> {
        Some(self.slot(id)?.conn.remote_address())
    }

    /// ALPN and SNI, once the handshake has got that far.
    pub fn handshake_info(&mut self, id: ConnId) -> Option<HandshakeInfo> {
        let data = self.slot(id)?.conn.crypto_session().handshake_data()?;
        let data = data
            .downcast::<quinn_proto::crypto::rustls::HandshakeData>()
            .ok()?;
        Some(HandshakeInfo {
            alpn: data.protocol,
            server_name: data.server_name,
        })
    }

    /// Whether the connection exists and completed its handshake.
    pub fn is_connected(&mut self, id: ConnId) -> bool {
        self.slot(id)
            .is_some_and(|s| s.connected && !s.conn.is_closed())
    }
}

/// Whether `side` may write `stream`: any bidirectional stream, or our own unidirectional.
fn can_send(side: Side, stream: StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() == side
}

/// Whether `side` may read `stream`: any bidirectional stream, or the peer's
/// unidirectional. (quinn panics on the other cases; the driver returns errors instead.)
fn can_recv(side: Side, stream: StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() != side
}
