//! Wrappers that keep secrets out of logs and error messages.
//!
//! `Secret<T>` is the general wrapper: its `Debug` prints `MASKED` and it has no
//! `Display`, so `{:?}` on any struct holding one is safe to log. Getting at the
//! value takes an explicit [`Secret::expose`] call, which is easy to grep for.
//!
//! [`TunnelSecret`] and [`ApiToken`] are the two secrets that cloudflared's file
//! formats carry: the per-tunnel secret (credentials file and token) and the API
//! token (cert.pem).
//!
//! Serialization: `Secret`, `TunnelSecret` and `ApiToken` implement serde so that
//! the code that writes files or API request bodies can emit them. Nothing else
//! should serialize them; in particular never serialize them into logs, metrics
//! or API responses that are not meant to carry the secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rand::TryRngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A value that must not appear in logs. See the module docs.
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Gives access to the secret. Every call site is a place where the secret
    /// leaves the wrapper, so keep them few.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Equality is only offered for byte-like secrets, and it is constant-time in
/// the content: an attacker who can time a comparison (e.g. the edge checking a
/// connector's secret) must not learn how many leading bytes matched. The
/// length is not hidden; every secret of one kind has the same length anyway.
impl<T: AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_ref(), other.0.as_ref())
    }
}

impl<T: AsRef<[u8]>> Eq for Secret<T> {}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box stops the optimiser from turning the fold back into an
    // early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Serialized as the bare inner value. Only file writers and API request
/// builders may serialize secrets (see the module docs).
impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

/// Why a tunnel secret was rejected. No variant carries any part of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text is not standard, padded base64.
    #[error("tunnel secret is not valid standard base64 ({0})")]
    Base64(&'static str),
    /// Fewer than [`TunnelSecret::MIN_LEN`] bytes after decoding.
    #[error("tunnel secret must be at least 32 bytes, got {len}")]
    TooShort {
        /// The decoded length.
        len: usize,
    },
    /// Fewer than [`TunnelSecret::MIN_DISTINCT_BYTES`] different byte values (all zeros, one
    /// byte repeated, a short pattern): guessable, so refused when a tunnel is created.
    #[error(
        "tunnel secret is too predictable: it has only {distinct} different byte values, at \
         least {min} are required (omit the secret to get 32 random bytes, or use \
         `openssl rand -base64 32`)",
        min = TunnelSecret::MIN_DISTINCT_BYTES
    )]
    Predictable {
        /// How many different byte values it has.
        distinct: usize,
    },
}

/// Go's `base64.StdEncoding`, which cloudflared uses for the tunnel secret
/// (`create --secret`, the credentials file and the token) and for the token
/// itself: standard alphabet, `=` padding required, and, unlike base64's
/// `STANDARD` engine, non-zero unused bits in the last symbol are accepted.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decodes base64 the way Go's `base64.StdEncoding.DecodeString` does. Go skips
/// `\r` and `\n` anywhere in the input (but no other whitespace), so a secret
/// pasted with a line break still decodes in cloudflared; match that.
pub(crate) fn decode_go_std_base64(text: &str) -> Result<Vec<u8>, &'static str> {
    let cleaned: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    // Describe the error without the offending byte: it is part of a secret.
    GO_STD.decode(&cleaned).map_err(|e| match e {
        base64::DecodeError::InvalidByte(..) => "invalid character",
        base64::DecodeError::InvalidLength(_) => "invalid length",
        base64::DecodeError::InvalidLastSymbol(..) => "invalid last character",
        base64::DecodeError::InvalidPadding => "invalid padding",
    })
}

/// A tunnel's secret: at least 32 random bytes, shared by the control plane,
/// the edge (as a SHA-256) and the connector (credentials file or token).
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelSecret(Secret<Vec<u8>>);

impl fmt::Debug for TunnelSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TunnelSecret").field(&self.0).finish()
    }
}

impl TunnelSecret {
    /// cloudflared's `tunnel create --secret` rejects shorter secrets and
    /// generates exactly this many bytes.
    pub const MIN_LEN: usize = 32;

    /// The fewest different byte values a new secret may have. 32 random bytes have about
    /// 30; fewer than 8 happens by chance with probability below 10^-30, so this refuses only
    /// secrets a person made up (all zeros, `aaaa…`, `abab…`). Existing secrets are not
    /// re-checked: a tunnel created before the rule keeps running.
    pub const MIN_DISTINCT_BYTES: usize = 8;

    /// Refuses a secret too predictable to protect a new tunnel (see
    /// [`Self::MIN_DISTINCT_BYTES`]); cheap, and never reveals any byte of it.
    pub fn check_unpredictable(bytes: &[u8]) -> Result<(), SecretError> {
        let mut seen = [false; 256];
        for b in bytes {
            seen[usize::from(*b)] = true;
        }
        let distinct = seen.iter().filter(|s| **s).count();
        if distinct < Self::MIN_DISTINCT_BYTES {
            return Err(SecretError::Predictable { distinct });
        }
        Ok(())
    }

    /// Wraps raw bytes, rejecting fewer than [`Self::MIN_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        Ok(Self(Secret::new(bytes)))
    }

    /// Parses standard padded base64, exactly what cloudflared accepts (Go's
    /// `base64.StdEncoding`): URL-safe or unpadded base64 is refused there, so
    /// it is refused here too.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = decode_go_std_base64(text).map_err(SecretError::Base64)?;
        Self::new(bytes)
    }

    /// 32 bytes from the operating system's CSPRNG, like cloudflared's
    /// `generateTunnelSecret`.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; Self::MIN_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        Self(Secret::new(bytes))
    }

    /// Standard padded base64, as Go's `encoding/json` writes a `[]byte`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose())
    }

    /// Lower-case hex SHA-256 of the raw secret bytes (not of the base64). This
    /// is what the edge keeps, so a leaked snapshot does not leak the secret.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.expose()))
    }

    /// The raw bytes, e.g. for `TunnelAuth.tunnelSecret` in registration.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
    /// The bytes as registration sends them in `TunnelAuth.tunnelSecret`.
    pub fn to_wire(&self) -> dataplane::wire::rpc::RawTunnelSecret {
        dataplane::wire::rpc::RawTunnelSecret::new(self.0.expose().clone())
    }
}

impl Drop for TunnelSecret {
    /// Best effort only: earlier copies (decode buffers, reallocations) are not
    /// reached, but the long-lived copy does not linger in freed memory.
    fn drop(&mut self) {
        wipe(&mut self.0.0);
    }
}

/// As a base64 string, the form every cloudflared format uses. Only file
/// writers and API request builders may serialize it.
impl Serialize for TunnelSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for TunnelSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Deserialize into a Secret so a failure path never formats the text.
        let text = Secret::<String>::deserialize(deserializer)?;
        Self::from_base64(text.expose()).map_err(serde::de::Error::custom)
    }
}

/// The API token in cert.pem: a bearer token scoped to one account and zone.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Secret<String>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiToken").field(&self.0).finish()
    }
}

impl ApiToken {
    /// Length of a generated token. Cloudflare's API tokens are 40 characters
    /// of the URL-safe alphabet; matching that keeps them usable anywhere a
    /// real token is (headers, URLs, cert.pem JSON) without escaping.
    pub const GENERATED_LEN: usize = 40;

    /// Wraps an existing token (e.g. one read from cert.pem).
    pub fn new(token: String) -> Self {
        Self(Secret::new(token))
    }

    /// 40 random characters from `A-Z a-z 0-9 - _`.
    pub fn generate() -> Self {
        // Letters and digits only: a token that starts with '-' would be read as a flag by
        // every CLI it is pasted into. 62 symbols; rejection sampling keeps the choice uniform.
        const ALPHABET: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut token = String::with_capacity(Self::GENERATED_LEN);
        let mut bytes = [0u8; 64];
        while token.len() < Self::GENERATED_LEN {
            rand::rngs::OsRng
                .try_fill_bytes(&mut bytes)
                .expect("the operating system's random number generator failed");
            for b in bytes.iter().map(|b| b & 63) {
                if usize::from(b) < ALPHABET.len() && token.len() < Self::GENERATED_LEN {
                    token.push(char::from(ALPHABET[usize::from(b)]));
                }
            }
        }
        wipe_bytes(&mut bytes);
        Self(Secret::new(token))
    }

    /// Lower-case hex SHA-256 of the token's UTF-8 bytes, what the control
    /// plane stores instead of the token.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.expose().as_bytes()))
    }

    /// The token text, e.g. for an `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl Drop for ApiToken {
    /// Best effort, as for [`TunnelSecret`].
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0.0).into_bytes();
        wipe(&mut bytes);
    }
}

/// As the bare string. Only file writers and API request builders may
/// serialize it.
impl Serialize for ApiToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ApiToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Secret::<String>::deserialize(deserializer).map(Self)
    }
}

fn wipe(bytes: &mut Vec<u8>) {
    wipe_bytes(bytes);
    bytes.clear();
}

fn wipe_bytes(bytes: &mut [u8]) {
    bytes.fill(0);
    // Keeps the zeroing from being removed as a dead store.
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn bytes_0_to_31() -> Vec<u8> {
        (0u8..32).collect()
    }

    #[test]
    fn predictable_secrets_are_refused_without_showing_them() {
        for weak in [
            vec![0u8; 32],
            vec![0x41; 48],
            b"abababababababababababababababab".to_vec(),
        ] {
            let e = TunnelSecret::check_unpredictable(&weak).unwrap_err();
            assert!(matches!(e, SecretError::Predictable { .. }), "{e}");
            assert!(!e.to_string().contains("abab"), "{e}");
        }
        assert!(TunnelSecret::check_unpredictable(&bytes_0_to_31()).is_ok());
        for _ in 0..100 {
            assert!(TunnelSecret::check_unpredictable(TunnelSecret::generate().expose()).is_ok());
        }
    }

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(format!("{s:#?}"), "MASKED");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_eq_compares_content_and_length() {
        let a = Secret::new(vec![1u8, 2, 3]);
        assert_eq!(a, Secret::new(vec![1, 2, 3]));
        assert_ne!(a, Secret::new(vec![1, 2, 4]));
        assert_ne!(a, Secret::new(vec![1, 2]));
        assert_eq!(Secret::new("x".to_string()), Secret::new("x".to_string()));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn secret_serde_is_transparent() {
        let s = Secret::new("tok".to_string());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"tok\"");
        let back: Secret<String> = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn tunnel_secret_round_trips_base64() {
        let s = TunnelSecret::from_base64(SECRET_B64).unwrap();
        assert_eq!(s.expose(), bytes_0_to_31().as_slice());
        assert_eq!(s.to_base64(), SECRET_B64);
    }

    #[test]
    fn tunnel_secret_sha256_is_of_raw_bytes() {
        let s = TunnelSecret::new(bytes_0_to_31()).unwrap();
        assert_eq!(
            s.sha256_hex(),
            "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
        );
    }

    #[test]
    fn tunnel_secret_too_short_names_length_only() {
        // "c2VjcmV0" is base64 of "secret".
        let err = TunnelSecret::from_base64("c2VjcmV0").unwrap_err();
        assert_eq!(err, SecretError::TooShort { len: 6 });
        let msg = err.to_string();
        assert_eq!(msg, "tunnel secret must be at least 32 bytes, got 6");
        assert!(!msg.contains("c2VjcmV0") && !msg.contains("secret\""));
        assert!(TunnelSecret::new(vec![7; 31]).is_err());
        assert!(TunnelSecret::new(vec![7; 64]).is_ok());
    }

    #[test]
    fn tunnel_secret_accepts_what_go_std_encoding_accepts() {
        // Line breaks are skipped by Go's decoder.
        let split = format!("{}\r\n{}", &SECRET_B64[..20], &SECRET_B64[20..]);
        assert!(TunnelSecret::from_base64(&split).is_ok());
        // Non-zero unused bits in the last symbol ("...Hh8=" -> "...Hh9="):
        // Go's non-strict decoder accepts this.
        let sloppy = SECRET_B64.replace("Hh8=", "Hh9=");
        assert_eq!(
            TunnelSecret::from_base64(&sloppy).unwrap().expose(),
            bytes_0_to_31().as_slice()
        );
    }

    #[test]
    fn tunnel_secret_rejects_other_encodings_without_echoing() {
        let unpadded = SECRET_B64.trim_end_matches('=');
        let url_safe = "_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-";
        for bad in [unpadded, url_safe, "not base64 at all!", " AAAA"] {
            let err = TunnelSecret::from_base64(bad).unwrap_err();
            assert!(matches!(err, SecretError::Base64(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains(bad));
        }
    }

    #[test]
    fn tunnel_secret_generate_is_32_random_bytes() {
        let a = TunnelSecret::generate();
        let b = TunnelSecret::generate();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
        assert_eq!(TunnelSecret::from_base64(&a.to_base64()).unwrap(), a);
    }

    #[test]
    fn tunnel_secret_debug_and_serde() {
        let s = TunnelSecret::new(bytes_0_to_31()).unwrap();
        let dbg = format!("{s:?}");
        assert_eq!(dbg, "TunnelSecret(MASKED)");
        assert!(!dbg.contains(SECRET_B64));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{SECRET_B64}\""));
        let back: TunnelSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let err = serde_json::from_str::<TunnelSecret>("\"c2VjcmV0\"").unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"));
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn api_token_generate_and_hash() {
        let t = ApiToken::generate();
        assert_eq!(t.expose().len(), 40);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(t, ApiToken::generate());
        let known = ApiToken::new("test-service-key".into());
        assert_eq!(
            known.sha256_hex(),
            "b606c5f8627d02065f5ad082858a7612189f77631976c9a5212f4b5d8aa0466a"
        );
        assert_eq!(format!("{known:?}"), "ApiToken(MASKED)");
        assert_eq!(
            serde_json::to_string(&known).unwrap(),
            "\"test-service-key\""
        );
    }
}
