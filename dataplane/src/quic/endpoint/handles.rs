//! The handles application tasks hold: a [`Connection`] and its streams. Each is a view of
//! the endpoint's shared state on this worker; dropping one tells the I/O task.

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionError, StreamId, VarInt};

use super::{ConnectionFailed, State, StreamReadError, StreamWriteError};
use crate::quic::driver::{
    ConnId, DatagramError, HandshakeInfo, ReadError, StreamError, WriteError,
};

/// One QUIC connection, owned by this worker's endpoint.
#[derive(Debug)]
pub struct Connection {
    pub(super) state: Rc<RefCell<State>>,
    pub(super) id: ConnId,
}

impl Connection {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub(crate) fn remote_address(&self) -> Option<SocketAddr> {
        self.state.borrow_mut().driver.remote_address(self.id)
    }

    pub fn handshake_info(&self) -> Option<HandshakeInfo> {
        self.state.borrow_mut().driver.handshake_info(self.id)
    }

    /// When the last datagram from the peer arrived.
    pub(crate) fn last_received(&self) -> Option<Instant> {
        self.state.borrow_mut().driver.last_received(self.id)
    }

    pub fn stats(&self) -> Option<quinn_proto::ConnectionStats> {
        self.state.borrow_mut().driver.stats(self.id)
    }

    fn streams(&self, sid: StreamId) -> (SendStream, RecvStream) {
        {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            c.streams.entry(sid).or_default();
            c.handles += 2;
        }
        (
            SendStream {
                state: self.state.clone(),
                conn: self.id,
                id: sid,
                done: false,
            },
            RecvStream {
                state: self.state.clone(),
                conn: self.id,
                id: sid,
                done: false,
            },
        )
    }

    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionFailed> {
        let sid = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if let Some(e) = st.conn(self.id).failure() {
                return Poll::Ready(Err(e));
            }
            if let Some(s) = st.driver.open_bi(self.id) {
                return Poll::Ready(Ok(s));
            }
            st.conn(self.id).wait_to_open(cx.waker());
            Poll::Pending
        })
        .await?;
        Ok(self.streams(sid))
    }

    /// Waits for the next stream the peer opens.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionFailed> {
        let sid = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            if let Some(s) = c.incoming.pop_front() {
                return Poll::Ready(Ok(s));
            }
            if let Some(e) = c.failure() {
                return Poll::Ready(Err(e));
            }
            c.incoming_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(self.streams(sid))
    }

    pub fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        let mut st = self.state.borrow_mut();
        let r = st.driver.send_datagram(self.id, data);
        st.kick();
        r
    }

    /// Closes the connection with an application error code.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.state.borrow_mut();
        st.driver.close(
            Instant::now(),
            self.id,
            code,
            Bytes::copy_from_slice(reason),
        );
        st.kick();
    }

    /// Waits until the connection is closed or lost and returns why.
    pub async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            if let Some(e) = &c.error {
                return Poll::Ready(e.clone());
            }
            if c.drained {
                return Poll::Ready(ConnectionError::LocallyClosed);
            }
            c.state_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The sending half of a stream. Dropping it without `finish` or `reset` finishes it, as
/// quinn does, so a forgotten handle never leaves the peer waiting forever.
#[derive(Debug)]
pub struct SendStream {
    state: Rc<RefCell<State>>,
    conn: ConnId,
    id: StreamId,
    done: bool,
}

impl SendStream {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Writes all of `data`, waiting on flow control. The bytes go to quinn-proto as they
    /// are (no copy).
    pub async fn write_all(&mut self, mut data: Bytes) -> Result<(), StreamWriteError> {
        while !data.is_empty() {
            self.write_some(&mut data).await?;
        }
        Ok(())
    }

    /// Writes as much of `data` as flow control allows right now (at least one byte),
    /// advancing `data` past what was taken.
    pub(crate) async fn write_some(&mut self, data: &mut Bytes) -> Result<usize, StreamWriteError> {
        poll_fn(|cx| self.poll_write_some(cx, data)).await
    }

    /// Poll form of [`SendStream::write_some`], for adapters that implement `AsyncWrite`.
    pub(crate) fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<Result<usize, StreamWriteError>> {
        let mut st = self.state.borrow_mut();
        match st.driver.write(self.conn, self.id, data) {
            Ok(n) => {
                st.kick();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                let c = st.conn(self.conn);
                if let Some(e) = c.failure() {
                    return Poll::Ready(Err(e.into()));
                }
                c.streams.entry(self.id).or_default().write_waker = Some(cx.waker().clone());
                // No kick: a blocked write queued nothing new, and waking the I/O task
                // for each of many blocked streams would make it spin.
                Poll::Pending
            }
            Err(WriteError::Stopped(code)) => Poll::Ready(Err(StreamWriteError::Stopped(code))),
            Err(WriteError::UnknownConnection) => Poll::Ready(Err(st.lost(self.conn).into())),
            Err(WriteError::ClosedStream | WriteError::NotWritable) => {
                Poll::Ready(Err(StreamWriteError::ClosedStream))
            }
        }
    }

    /// Ends the stream (FIN) once everything written is sent.
    pub fn finish(&mut self) -> Result<(), StreamWriteError> {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let r = st.driver.finish(self.conn, self.id);
        st.kick();
        match r {
            Ok(()) => Ok(()),
            Err(StreamError::Stopped(code)) => Err(StreamWriteError::Stopped(code)),
            Err(StreamError::UnknownConnection) => Err(st.lost(self.conn).into()),
            Err(_) => Err(StreamWriteError::ClosedStream),
        }
    }

    /// Abandons the stream with an error code.
    pub fn reset(&mut self, code: VarInt) {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let _ = st.driver.reset(self.conn, self.id, code);
        st.kick();
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if !self.done {
                let _ = st.driver.finish(self.conn, self.id);
                st.kick();
            }
            st.release(self.conn);
        }
    }
}

/// The receiving half of a stream. Dropping it before the end sends STOP_SENDING(0).
#[derive(Debug)]
pub struct RecvStream {
    state: Rc<RefCell<State>>,
    conn: ConnId,
    id: StreamId,
    done: bool,
}

impl RecvStream {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The next chunk (at most `max` bytes), or `None` at the end of the stream. The
    /// `Bytes` is quinn-proto's own, pointing into the received datagram.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamReadError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Poll form of [`RecvStream::read_chunk`], for adapters that implement `AsyncRead`.
    pub(crate) fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamReadError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let r = {
            let mut st = self.state.borrow_mut();
            match st.driver.read(self.conn, self.id, max) {
                Ok(chunk) => {
                    // Reading frees receive window; the I/O task sends the credit.
                    st.kick();
                    Ok(chunk)
                }
                Err(ReadError::Blocked) => {
                    let c = st.conn(self.conn);
                    if let Some(e) = c.failure() {
                        Err(e.into())
                    } else {
                        c.streams.entry(self.id).or_default().read_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
                Err(ReadError::Reset(code)) => Err(StreamReadError::Reset(code)),
                Err(ReadError::UnknownConnection) => Err(st.lost(self.conn).into()),
                Err(ReadError::ClosedStream | ReadError::NotReadable) => {
                    Err(StreamReadError::ClosedStream)
                }
            }
        };
        if matches!(r, Ok(None) | Err(_)) {
            self.done = true;
        }
        Poll::Ready(r)
    }

    /// Reads to the end, at most `limit` bytes in total.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamReadError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                self.stop(VarInt::from_u32(0));
                return Err(StreamReadError::ClosedStream);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending.
    pub fn stop(&mut self, code: VarInt) {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let _ = st.driver.stop(self.conn, self.id, code);
        st.kick();
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if !self.done {
                let _ = st.driver.stop(self.conn, self.id, VarInt::from_u32(0));
                st.kick();
            }
            st.release(self.conn);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.release(self.id);
        }
    }
}
