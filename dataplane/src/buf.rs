//! Buffers for io_uring writes that keep payload `Bytes` as they are.
//!
//! A response body chunk arrives from quinn-proto as `Bytes` pointing into the received
//! datagram; chunked framing adds a small header and a CRLF around it. [`BytesVec`] hands all
//! of them to one `writev` (one SQE) without copying the payload, and owns them for as long as
//! the kernel may read them (monoio's ownership-passing rule).
//!
//! [`write_all_vectored`] is the only way this crate writes a `BytesVec`: monoio 0.2.4's
//! `write_vectored_all` mishandles a short write that ends inside a buffer (it re-sends that
//! buffer from its start, and its iovec count ignores what was consumed, which can panic with
//! "try to consume more than owned"). Short writes are normal on a TCP socket whose send
//! buffer is full, so large bodies hit it.

use std::io;

use bytes::{Buf, Bytes};
use monoio::io::AsyncWriteRent;

/// An owned list of `Bytes` written with one vectored write.
#[derive(Debug, Default)]
pub struct BytesVec {
    parts: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
}

// SAFETY: `iovecs` points into `parts`, whose `Bytes` are never mutated or dropped while the
// value is alive; `Bytes` data does not move when the `Bytes` handle moves.
unsafe impl Send for BytesVec {}

impl BytesVec {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            parts: Vec::with_capacity(n),
            iovecs: Vec::with_capacity(n),
        }
    }

    /// Appends a part; empty parts are skipped (an empty iovec is legal but useless).
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.iovecs.push(libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        });
        self.parts.push(b);
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.iovecs.iter().map(|v| v.iov_len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Number of parts.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Drops the first `n` bytes (what a short write took).
    pub fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        // Bound: the parts, once each.
        for part in self.parts.iter_mut() {
            if n == 0 {
                break;
            }
            if n >= part.len() {
                n -= part.len();
                done += 1;
            } else {
                part.advance(n);
                n = 0;
            }
        }
        self.parts.drain(..done);
        self.iovecs.clear();
        for b in &self.parts {
            self.iovecs.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
    }

    /// Empties the list for reuse, keeping its allocations.
    pub fn clear(&mut self) {
        self.iovecs.clear();
        self.parts.clear();
    }
}

// SAFETY: the iovec array lives in `self.iovecs`, which is not touched while the runtime owns
// the value, and each entry describes a live `Bytes` in `self.parts`.
unsafe impl monoio::buf::IoVecBuf for BytesVec {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

/// Writes every byte of `v` with vectored writes, resuming after short writes. Returns the
/// (emptied) list for reuse.
pub(crate) async fn write_all_vectored<W: AsyncWriteRent>(
    w: &mut W,
    mut v: BytesVec,
) -> (io::Result<()>, BytesVec) {
    // Bounded by the bytes to write: every turn writes at least one byte or returns.
    while !v.is_empty() {
        let (r, back) = w.writev(v).await;
        v = back;
        match r {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    )),
                    v,
                );
            }
            Ok(n) => v.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), v),
        }
    }
    (Ok(()), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buf_bytes_vec_writes_every_part_in_order() {
        crate::runtime::block_on(async {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut a = monoio::net::UnixStream::from_std(a).unwrap();
            let mut v = BytesVec::new();
            v.push(Bytes::from_static(b"5\r\n"));
            v.push(Bytes::new());
            v.push(Bytes::from_static(b"hello"));
            v.push(Bytes::from_static(b"\r\n"));
            assert_eq!((v.len(), v.parts()), (10, 3));
            let (r, _) = write_all_vectored(&mut a, v).await;
            r.unwrap();
            // Exactly what was written; `read_to_end` would wait for a close that io_uring
            // completes only when this runtime runs again.
            let mut out = [0u8; 10];
            std::io::Read::read_exact(&mut &b, &mut out).unwrap();
            assert_eq!(&out, b"5\r\nhello\r\n");
        });
    }

    #[test]
    fn buf_short_writes_resume_inside_a_part() {
        // A small socket buffer and a slow reader force many short writes that end inside a
        // part; the reader must see every byte once, in order.
        let parts: Vec<Vec<u8>> = (0..64u32)
            .map(|i| {
                (0..(8192 + i as usize * 977))
                    .map(|j| (j as u32 ^ i) as u8)
                    .collect()
            })
            .collect();
        let expected: Vec<u8> = parts.concat();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        socket2::SockRef::from(&a)
            .set_send_buffer_size(4096)
            .unwrap();
        let want = expected.len();
        let reader = std::thread::spawn(move || {
            let mut out = vec![0u8; want];
            let mut got = 0;
            while got < want {
                let n =
                    std::io::Read::read(&mut &b, &mut out[got..(got + 3000).min(want)]).unwrap();
                assert!(n > 0, "early EOF at {got}");
                got += n;
            }
            out
        });
        crate::runtime::block_on(async move {
            let mut a = monoio::net::UnixStream::from_std(a).unwrap();
            let mut v = BytesVec::new();
            for p in parts {
                v.push(Bytes::from(p));
            }
            let (r, v) = write_all_vectored(&mut a, v).await;
            r.unwrap();
            assert!(v.is_empty());
        });
        assert_eq!(reader.join().unwrap(), expected);
    }
}
