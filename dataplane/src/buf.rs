//! Buffers for io_uring writes that keep payload `Bytes` as they are.
//!
//! A response body chunk arrives from quinn-proto as `Bytes` pointing into the received
//! datagram; chunked framing adds a small header and a CRLF around it. [`BytesVec`] hands all
//! of them to one `writev` (one SQE) without copying the payload, and owns them for as long as
//! the kernel may read them (monoio's ownership-passing rule).

use bytes::Bytes;

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

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::AsyncWriteRentExt;

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
            let (r, _) = a.write_vectored_all(v).await;
            assert_eq!(r.unwrap(), 10);
            // Exactly what was written; `read_to_end` would wait for a close that io_uring
            // completes only when this runtime runs again.
            let mut out = [0u8; 10];
            std::io::Read::read_exact(&mut &b, &mut out).unwrap();
            assert_eq!(&out, b"5\r\nhello\r\n");
        });
    }
}
