//! Connection IDs that name the worker owning the connection.
//!
//! On the edge every worker has its own `SO_REUSEPORT` socket, and the kernel picks the
//! socket by hashing the 4-tuple. That keeps one peer on one worker until its address
//! changes (NAT rebinding, migration), so the connection ID (CID) must say which worker
//! owns a connection: the receiving worker reads the destination CID of a datagram with
//! [`WorkerCidGenerator::owner`] and hands the datagram to the owner when it is not
//! itself.
//!
//! # Layout (12 bytes, [`CID_LEN`])
//!
//! ```text
//! 0        6          8          12
//! | nonce  | worker^m | tag      |
//! ```
//!
//! - `nonce`: 48 random bits. It makes every CID unlinkable to its siblings (RFC 9000
//!   §5.1 forbids CIDs that let an observer correlate them).
//! - `worker^m`: the owning worker index (big-endian `u16`) XOR a 16-bit mask
//!   `m = SipHash-1-3(mask_key, nonce)`. Without the mask the index would sit in the clear
//!   and group connections by worker for any observer.
//! - `tag`: the low 32 bits of `SipHash-1-3(tag_key, bytes 0..8)`. It authenticates the
//!   nonce and the masked index, so a forged or corrupted CID fails
//!   [`ConnectionIdGenerator::validate`] and [`WorkerCidGenerator::owner`] with
//!   probability `1 - 2^-32`.
//!
//! All workers of one endpoint group share one [`CidKey`], so any worker can route any
//! datagram. The key lives only in memory: after a restart old CIDs simply stop validating,
//! which is what we want (their connections are gone).

use std::fmt;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::RngCore;
use siphasher::sip::SipHasher13;

/// Length of every CID this module issues. Fixed because short-header packets carry no
/// length: the receiver must know it up front (quinn's `FixedLengthConnectionIdParser`).
pub const CID_LEN: usize = 12;

const NONCE_LEN: usize = 6;
const WORKER_OFFSET: usize = NONCE_LEN;
const TAG_OFFSET: usize = NONCE_LEN + 2;
const TAG_LEN: usize = CID_LEN - TAG_OFFSET;

/// Offset of the DCID-length byte in a long-header packet: 1 flags byte + 4 version bytes.
const LONG_HEADER_DCID_LEN_OFFSET: usize = 5;
/// Bit 7 of the first byte marks a long header (RFC 9000 §17.2).
const LONG_HEADER_BIT: u8 = 0x80;

/// The secret shared by the workers of one endpoint group. Its `Debug` output hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct CidKey {
    mask: [u64; 2],
    tag: [u64; 2],
}

impl CidKey {
    /// A fresh key from the thread-local CSPRNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// A key from explicit bytes (tests, or several processes that must agree).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Self {
            mask: [word(0), word(1)],
            tag: [word(2), word(3)],
        }
    }

    fn mask(&self, nonce: &[u8]) -> u16 {
        // Truncation is the point: 16 bits of keyed PRF output mask the 16-bit index.
        SipHasher13::new_with_keys(self.mask[0], self.mask[1]).hash(nonce) as u16
    }

    fn tag(&self, authenticated: &[u8]) -> [u8; TAG_LEN] {
        let h = SipHasher13::new_with_keys(self.tag[0], self.tag[1]).hash(authenticated);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&h.to_le_bytes()[..TAG_LEN]);
        tag
    }

    /// Builds the CID for `worker` around `nonce`.
    fn encode(&self, worker: u16, nonce: [u8; NONCE_LEN]) -> [u8; CID_LEN] {
        let mut cid = [0u8; CID_LEN];
        cid[..NONCE_LEN].copy_from_slice(&nonce);
        let masked = worker ^ self.mask(&nonce);
        cid[WORKER_OFFSET..TAG_OFFSET].copy_from_slice(&masked.to_be_bytes());
        let tag = self.tag(&cid[..TAG_OFFSET]);
        cid[TAG_OFFSET..].copy_from_slice(&tag);
        cid
    }

    /// The worker that issued `cid`, or `None` when `cid` was not issued with this key
    /// (wrong length, forged, corrupted, or chosen by a peer such as a client's first
    /// Initial DCID).
    pub fn cid_owner(&self, cid: &[u8]) -> Option<usize> {
        if cid.len() != CID_LEN {
            return None;
        }
        let expected = self.tag(&cid[..TAG_OFFSET]);
        // Not constant-time: the tag only filters garbage; it guards no secret whose
        // bytes a timing side channel could reveal usefully (the key stays inside SipHash).
        if expected[..] != cid[TAG_OFFSET..] {
            return None;
        }
        let masked = u16::from_be_bytes([cid[WORKER_OFFSET], cid[WORKER_OFFSET + 1]]);
        Some(usize::from(masked ^ self.mask(&cid[..NONCE_LEN])))
    }

    /// The worker that owns the QUIC packet at the start of `datagram`, judged by its
    /// destination CID.
    ///
    /// Parses a long header (first byte has bit 0x80: DCID length at offset 5, DCID
    /// from offset 6) or a short header (DCID of [`CID_LEN`] bytes right after the first
    /// byte). Coalesced packets in one datagram share a DCID (RFC 9000 §12.2), so the
    /// first packet decides.
    ///
    /// `None` means "not routable by CID": a client's first Initial (its DCID is the
    /// client's random choice), a CID from another key, or garbage. The receiving worker
    /// handles those itself; quinn then opens a connection for an Initial or drops the
    /// rest.
    pub fn owner(&self, datagram: &[u8]) -> Option<usize> {
        let first = *datagram.first()?;
        let dcid = if first & LONG_HEADER_BIT != 0 {
            let len = usize::from(*datagram.get(LONG_HEADER_DCID_LEN_OFFSET)?);
            let start = LONG_HEADER_DCID_LEN_OFFSET + 1;
            datagram.get(start..start + len)?
        } else {
            datagram.get(1..1 + CID_LEN)?
        };
        self.cid_owner(dcid)
    }
}

impl fmt::Debug for CidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CidKey(..)")
    }
}

/// Errors building a [`WorkerCidGenerator`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CidError {
    /// The CID has 16 bits for the worker index.
    #[error("worker index {0} does not fit the 16 bits a connection ID has for it")]
    WorkerOutOfRange(usize),
}

/// quinn's CID generator for one worker: every CID it issues names `worker` (see the
/// module docs for the layout).
///
/// Clone it freely; each clone issues CIDs for the same worker with the same key.
#[derive(Clone, Debug)]
pub struct WorkerCidGenerator {
    key: CidKey,
    worker: u16,
}

impl WorkerCidGenerator {
    /// A generator for `worker` in the group that shares `key`.
    pub fn new(key: CidKey, worker: usize) -> Result<Self, CidError> {
        let worker = u16::try_from(worker).map_err(|_| CidError::WorkerOutOfRange(worker))?;
        Ok(Self { key, worker })
    }

    /// The worker this generator issues CIDs for.
    pub fn worker(&self) -> usize {
        usize::from(self.worker)
    }

    /// The group key.
    pub fn key(&self) -> &CidKey {
        &self.key
    }

    /// See [`CidKey::owner`]: which worker owns `datagram`, by its destination CID.
    pub fn owner(&self, datagram: &[u8]) -> Option<usize> {
        self.key.owner(datagram)
    }

    /// See [`CidKey::cid_owner`].
    pub fn cid_owner(&self, cid: &[u8]) -> Option<usize> {
        self.key.cid_owner(cid)
    }

    /// The factory [`quinn_proto::EndpointConfig::cid_generator`] wants: one boxed clone
    /// of this generator per endpoint.
    pub(crate) fn factory(
        &self,
    ) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + 'static {
        let this = self.clone();
        move || Box::new(this.clone())
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        ConnectionId::new(&self.key.encode(self.worker, nonce))
    }

    /// Accepts only CIDs of this key *and this worker*. quinn calls this for short-header
    /// packets that match no connection, and answers a valid one with a stateless reset.
    /// A datagram that reached the wrong worker must not make that worker reset a healthy
    /// connection owned by another, so other workers' CIDs are rejected too: quinn then
    /// drops the packet silently.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match self.key.cid_owner(cid) {
            Some(owner) if owner == usize::from(self.worker) => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    /// CIDs are never retired by age: a connection keeps its IDs for its whole life.
    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short-header packet: flags byte (fixed bit set), DCID, some payload.
    fn short_header(dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x40];
        p.extend_from_slice(dcid);
        p.extend_from_slice(&[0xAA; 24]);
        p
    }

    /// A long-header Handshake packet: flags, version 1, DCID len + DCID, SCID len + SCID.
    fn long_header(dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0xE0, 0, 0, 0, 1, dcid.len() as u8];
        p.extend_from_slice(dcid);
        p.push(8);
        p.extend_from_slice(&[7; 8]);
        p.extend_from_slice(&[0xAA; 24]);
        p
    }

    #[test]
    fn cid_owner_recovers_worker_for_long_and_short_headers() {
        let key = CidKey::random();
        // Bound: a few representative workers, including both ends of the u16 range.
        for worker in [0usize, 1, 7, 255, 256, 65_535] {
            let mut cid_gen = WorkerCidGenerator::new(key.clone(), worker).unwrap();
            // Bound: enough CIDs to exercise many nonces/masks.
            for _ in 0..64 {
                let cid = cid_gen.generate_cid();
                assert_eq!(cid.len(), CID_LEN);
                assert_eq!(cid_gen.cid_owner(&cid), Some(worker));
                assert_eq!(cid_gen.owner(&short_header(&cid)), Some(worker));
                assert_eq!(cid_gen.owner(&long_header(&cid)), Some(worker));
                cid_gen.validate(&cid).unwrap();
            }
        }
    }

    #[test]
    fn validate_rejects_tampered_and_foreign_cids() {
        let key = CidKey::random();
        let mut g0 = WorkerCidGenerator::new(key.clone(), 0).unwrap();
        let g1 = WorkerCidGenerator::new(key, 1).unwrap();
        let cid = g0.generate_cid();
        g0.validate(&cid).unwrap();

        // Every single-bit flip anywhere in the CID is caught.
        for byte in 0..CID_LEN {
            for bit in 0..8 {
                let mut bytes = cid.to_vec();
                bytes[byte] ^= 1 << bit;
                let tampered = ConnectionId::new(&bytes);
                assert!(g0.validate(&tampered).is_err(), "byte {byte} bit {bit}");
                assert_eq!(g0.owner(&short_header(&tampered)), None);
            }
        }

        // A valid CID of another worker: owner() routes it, validate() of the wrong
        // worker refuses it (so that worker never answers it with a stateless reset).
        assert!(g1.validate(&cid).is_err());
        assert_eq!(g1.owner(&short_header(&cid)), Some(0));

        // Another key's CIDs and garbage are not ours.
        let mut other = WorkerCidGenerator::new(CidKey::random(), 0).unwrap();
        let foreign = other.generate_cid();
        assert!(g0.validate(&foreign).is_err());
        assert_eq!(g0.owner(&short_header(&foreign)), None);
        assert_eq!(g0.owner(&[]), None);
        assert_eq!(g0.owner(&[0x40, 1, 2]), None);
        assert_eq!(g0.owner(&[0xC0, 0, 0, 0, 1]), None);
        // A client's first Initial carries a 20-byte random DCID: not routable by CID.
        assert_eq!(g0.owner(&long_header(&[9; 20])), None);
    }

    #[test]
    fn masked_worker_index_is_not_in_the_clear() {
        // With the mask, the two index bytes of CIDs for the same worker differ between
        // CIDs; without it they would all read 0x0001.
        let mut cid_gen = WorkerCidGenerator::new(CidKey::random(), 1).unwrap();
        let distinct: std::collections::HashSet<[u8; 2]> = (0..32)
            .map(|_| {
                let cid = cid_gen.generate_cid();
                [cid[WORKER_OFFSET], cid[WORKER_OFFSET + 1]]
            })
            .collect();
        assert!(distinct.len() > 16, "{distinct:?}");
    }

    #[test]
    fn worker_index_must_fit_u16() {
        assert_eq!(
            WorkerCidGenerator::new(CidKey::random(), 65_536).unwrap_err(),
            CidError::WorkerOutOfRange(65_536)
        );
    }
}
