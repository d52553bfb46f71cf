//! Request and response bodies for data-path tests: deterministic pseudo-random bytes, their
//! SHA-256, and where two byte strings first differ.

/// Where two byte strings first differ, for failure messages: lengths, the first differing
/// offset and a few bytes of each from there.
pub fn describe_difference(got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let at = first.unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| hex::encode(&b[at.min(b.len())..(at + 16).min(b.len())]);
    format!(
        "got {} bytes, want {}; first difference at offset {at}: got {}…, want {}…",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), so big bodies are not trivially compressible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
