//! The raw socket-level pieces both backends share: socket options, control-message encoding
//! and decoding, and socket-address decoding.
//!
//! Control messages and socket addresses are encoded and decoded as plain bytes (native-endian
//! integers at the offsets the Linux ABI defines), so this module needs `unsafe` only for the
//! `setsockopt`/`getsockopt` calls and for the all-zero `msghdr`.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, BorrowedFd},
};

/// `UDP_SEGMENT` (linux/udp.h): per-send GSO segment size, a `u16` cmsg or an `int` option.
pub(crate) const UDP_SEGMENT: libc::c_int = libc::UDP_SEGMENT;
/// `UDP_GRO` (linux/udp.h): enables GRO as an option; carries the stride as an `int` cmsg.
pub(crate) const UDP_GRO: libc::c_int = libc::UDP_GRO;

// The byte layout below assumes Linux's `struct cmsghdr { size_t cmsg_len; int cmsg_level;
// int cmsg_type; }` with no padding.
const _: () = assert!(size_of::<libc::cmsghdr>() == size_of::<usize>() + 8);

/// `CMSG_ALIGN`: control messages are aligned to `sizeof(size_t)` on Linux.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_LEN(0)`: where a control message's data starts.
const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());

/// `CMSG_SPACE(len)`.
const fn cmsg_space(len: usize) -> usize {
    CMSG_HDR + cmsg_align(len)
}

/// Bytes of control-message space per send or receive.
///
/// The most a datagram carries: send = TOS/TCLASS (`int`, 24) + `UDP_SEGMENT` (`u16`, 24) +
/// `in6_pktinfo` (40) = 88; receive = TOS (24) + `in6_pktinfo` (40) + `UDP_GRO` (24) = 88. 128
/// leaves room for a message we did not ask for without the kernel setting `MSG_CTRUNC`.
pub(crate) const CMSG_BUF_LEN: usize = 128;
const _: () = assert!(cmsg_space(4) + cmsg_space(2) + cmsg_space(20) <= CMSG_BUF_LEN);

/// Control-message buffer, aligned like `struct cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; CMSG_BUF_LEN]);

impl CmsgBuf {
    pub(crate) const fn new() -> Self {
        Self([0; CMSG_BUF_LEN])
    }
}

/// Socket-address buffer, as large and aligned as `struct sockaddr_storage`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct NameBuf(pub(crate) [u8; size_of::<libc::sockaddr_storage>()]);

impl NameBuf {
    pub(crate) const fn new() -> Self {
        Self([0; size_of::<libc::sockaddr_storage>()])
    }
}

/// An all-zero `msghdr`: null pointers and zero lengths, which is a valid empty header.
pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is a C struct of integers and raw pointers (plus padding on some libcs);
    // all-zero bytes are a valid value for every field.
    unsafe { std::mem::zeroed() }
}

/// Sets an `int` socket option.
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; the value pointer and
    // length describe a live `c_int` on our stack, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an `int` socket option.
pub(crate) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is live; `value`/`len` are live locals the kernel writes at most
    // `len` (= sizeof(int)) bytes into.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Appends control messages to a buffer, the way `CMSG_NXTHDR` walks it.
pub(crate) struct CmsgWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> CmsgWriter<'a> {
    pub(crate) fn new(buf: &'a mut CmsgBuf) -> Self {
        Self {
            buf: &mut buf.0,
            len: 0,
        }
    }

    /// Appends one message. Panics if it does not fit: the buffer is sized for every message
    /// this module writes (see [`CMSG_BUF_LEN`]), so overflowing it is a bug.
    pub(crate) fn push(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) {
        let space = cmsg_space(data.len());
        let msg = &mut self.buf[self.len..self.len + space];
        msg.fill(0);
        let cmsg_len = CMSG_HDR + data.len();
        msg[..size_of::<usize>()].copy_from_slice(&cmsg_len.to_ne_bytes());
        msg[size_of::<usize>()..size_of::<usize>() + 4].copy_from_slice(&level.to_ne_bytes());
        msg[size_of::<usize>() + 4..size_of::<usize>() + 8].copy_from_slice(&ty.to_ne_bytes());
        msg[CMSG_HDR..CMSG_HDR + data.len()].copy_from_slice(data);
        self.len += space;
    }

    /// Total length, for `msg_controllen`.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// What the send-side control messages say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendCmsgs {
    /// Destination is IPv4 or IPv4-mapped, so ECN goes in `IP_TOS` rather than `IPV6_TCLASS`.
    pub(crate) dest_v4: bool,
    pub(crate) ecn: Option<u8>,
    pub(crate) segment: Option<u16>,
    pub(crate) src_ip: Option<IpAddr>,
}

/// Writes the send-side control messages; returns `msg_controllen`.
pub(crate) fn encode_send_cmsgs(buf: &mut CmsgBuf, c: &SendCmsgs) -> usize {
    let mut w = CmsgWriter::new(buf);
    if let Some(ecn) = c.ecn {
        let tos = libc::c_int::from(ecn & 0b11);
        if c.dest_v4 {
            w.push(libc::IPPROTO_IP, libc::IP_TOS, &tos.to_ne_bytes());
        } else {
            w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos.to_ne_bytes());
        }
    }
    if let Some(seg) = c.segment {
        w.push(libc::SOL_UDP, UDP_SEGMENT, &seg.to_ne_bytes());
    }
    match c.src_ip {
        Some(IpAddr::V4(ip)) => {
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }:
            // the source address to use goes in ipi_spec_dst.
            let mut info = [0u8; 12];
            info[4..8].copy_from_slice(&ip.octets());
            w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        }
        Some(IpAddr::V6(ip)) => {
            // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }.
            let mut info = [0u8; 20];
            info[..16].copy_from_slice(&ip.octets());
            w.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
        }
        None => {}
    }
    w.len()
}

/// What the receive-side control messages said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvCmsgs {
    /// ECN codepoint, `None` for Not-ECT or when the kernel sent none.
    pub(crate) ecn: Option<u8>,
    pub(crate) dst_ip: Option<IpAddr>,
    /// GRO segment size, when the datagram was coalesced.
    pub(crate) stride: Option<usize>,
}

fn int_at(data: &[u8]) -> Option<libc::c_int> {
    Some(libc::c_int::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// Decodes the receive-side control messages in `ctrl[..controllen]`.
pub(crate) fn decode_recv_cmsgs(ctrl: &[u8]) -> RecvCmsgs {
    let mut out = RecvCmsgs::default();
    let mut off = 0;
    // Bound: every message advances `off` by at least CMSG_HDR (16) bytes, so at most
    // CMSG_BUF_LEN / 16 = 8 turns.
    while off + CMSG_HDR <= ctrl.len() {
        let hdr = &ctrl[off..];
        let cmsg_len =
            usize::from_ne_bytes(hdr[..size_of::<usize>()].try_into().unwrap_or_default());
        let level = libc::c_int::from_ne_bytes(
            hdr[size_of::<usize>()..size_of::<usize>() + 4]
                .try_into()
                .unwrap_or_default(),
        );
        let ty = libc::c_int::from_ne_bytes(
            hdr[size_of::<usize>() + 4..size_of::<usize>() + 8]
                .try_into()
                .unwrap_or_default(),
        );
        if cmsg_len < CMSG_HDR || off + cmsg_len > ctrl.len() {
            break;
        }
        let data = &ctrl[off + CMSG_HDR..off + cmsg_len];
        match (level, ty) {
            // Linux reports the received TOS byte as a single byte.
            (libc::IPPROTO_IP, libc::IP_TOS) | (libc::IPPROTO_IP, libc::IP_RECVTOS) => {
                if let Some(&tos) = data.first() {
                    out.ecn = Some(tos & 0b11).filter(|&e| e != 0);
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                let tclass = int_at(data).or_else(|| data.first().map(|&b| b.into()));
                if let Some(tc) = tclass {
                    out.ecn = Some((tc & 0b11) as u8).filter(|&e| e != 0);
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // struct in_pktinfo: the header's destination address is ipi_addr, bytes 8..12.
                if let Some(a) = data.get(8..12) {
                    out.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                if let Some(a) = data.get(..16) {
                    let octets: [u8; 16] = a.try_into().unwrap_or_default();
                    out.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(octets)));
                }
            }
            (libc::SOL_UDP, UDP_GRO) => {
                if let Some(s) = int_at(data).filter(|&s| s > 0) {
                    out.stride = Some(s as usize);
                }
            }
            _ => {}
        }
        off += cmsg_align(cmsg_len);
    }
    out
}

/// Decodes a `sockaddr_in` / `sockaddr_in6` the kernel wrote into `name[..len]`.
pub(crate) fn decode_sockaddr(name: &[u8], len: usize) -> Option<SocketAddr> {
    let name = name.get(..len)?;
    let family = libc::sa_family_t::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            // struct sockaddr_in { sa_family_t; in_port_t (BE); in_addr (BE); zero[8] }.
            let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
            let a = name.get(4..8)?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                port,
            )))
        }
        libc::AF_INET6 => {
            // struct sockaddr_in6 { sa_family_t; in_port_t (BE); u32 flowinfo (BE);
            // in6_addr; u32 scope_id (host order) }.
            let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
            // Kept as stored, like std's own `SocketAddrV6` <-> `sockaddr_in6` conversion.
            let flow = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let addr: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(addr),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sys_cmsg_roundtrip() {
        let mut buf = CmsgBuf::new();
        let len = {
            let mut w = CmsgWriter::new(&mut buf);
            w.push(libc::IPPROTO_IP, libc::IP_TOS, &[0b10]);
            let mut info = [0u8; 12];
            info[8..12].copy_from_slice(&[127, 0, 0, 1]);
            w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
            w.push(libc::SOL_UDP, UDP_GRO, &1200i32.to_ne_bytes());
            w.len()
        };
        let got = decode_recv_cmsgs(&buf.0[..len]);
        assert_eq!(
            got,
            RecvCmsgs {
                ecn: Some(2),
                dst_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                stride: Some(1200),
            }
        );
        // Truncated or garbage input must not panic.
        let _ = decode_recv_cmsgs(&buf.0[..len - 3]);
        let _ = decode_recv_cmsgs(&[0xff; 40]);
    }

    #[test]
    fn udp_sys_sockaddr_decode() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
        v4[2..4].copy_from_slice(&4433u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            decode_sockaddr(&v4, 16),
            Some("127.0.0.1:4433".parse().unwrap())
        );

        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(decode_sockaddr(&v6, 28), Some("[::1]:443".parse().unwrap()));
        assert_eq!(decode_sockaddr(&v6, 1), None);
        assert_eq!(decode_sockaddr(&[0xff; 28], 28), None);
    }
}
