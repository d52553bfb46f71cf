//! The one reading of an authority (`Host` value, absolute-form authority, CONNECT target):
//! where the host ends and the port begins.
//!
//! The edge routes on [`Authority::host`], the connector matches ingress rules against it,
//! and `ringway tunnel ingress rule` prints the rule it picks, so all three see one host for
//! one request. Meaning, value by value:
//!
//! | value | host | port |
//! |---|---|---|
//! | `example.com` | `example.com` | none |
//! | `example.com:8080` | `example.com` | `8080` |
//! | `example.com:` | `example.com` | `""` (RFC 3986 allows an empty port) |
//! | `[::1]` | `::1` | none |
//! | `[::1]:8080` | `::1` | `8080` |
//! | `::1`, `fe80::1:80` | the whole value | none |
//! | `example.com.`, `example.com.:443` | `example.com` | as above |
//! | `Example.COM` | `Example.COM` | none |
//!
//! - Brackets are syntax, not part of the host: `[::1]` and `[::1]:443` name the same host,
//!   and that host is written `::1`, as in an ingress rule or Go's `URL.Hostname()`.
//! - A bare IPv6 literal (two or more colons, no brackets) is not valid in a Host (RFC 3986
//!   §3.2.2 requires the brackets), but clients send it. Splitting at the last colon would turn
//!   `fe80::1:80` into host `fe80::1` and port `80`, or `::1` into `:` and `1`; there is no way
//!   to tell an address digit from a port digit, so the whole value is the host and no digit
//!   is lost.
//! - One final dot is dropped: `example.com.` is the absolute form of the DNS name
//!   `example.com`, so a client that sends it reaches the same route. Only one: `a..` stays
//!   `a.`, which matches nothing.
//! - Case is kept as written (no allocation on the request path); every comparison of hosts
//!   is ASCII case-insensitive, as DNS names are.
//! - The port is what follows the colon, unchecked: routing never depends on it, and the
//!   request parser has already limited the value to authority characters. Use
//!   [`Authority::port_number`] where a number is needed.
//! - A value that is none of the forms above (`[::1`, `[::1]x`) is returned whole as the host,
//!   so it matches no rule a well-formed value would.

/// An authority split into host and port; see the module docs for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// The host to route on: no brackets, no port, no final dot; case as written.
    pub host: &'a str,
    /// What follows the port colon, if there is one (possibly empty).
    pub port: Option<&'a str>,
}

impl<'a> Authority<'a> {
    /// Splits `value` into host and port.
    pub fn parse(value: &'a str) -> Self {
        let (host, port) = split(value);
        Self {
            host: host.strip_suffix('.').unwrap_or(host),
            port,
        }
    }

    /// The port as a number: `None` when there is no port, or it is empty, not all digits,
    /// or above 65535.
    pub fn port_number(&self) -> Option<u16> {
        let p = self.port?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    }
}

/// The host of an authority, without port, brackets or final dot ([`Authority::host`]).
pub fn host_without_port(value: &str) -> &str {
    Authority::parse(value).host
}

fn split(value: &str) -> (&str, Option<&str>) {
    if let Some(rest) = value.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((inner, "")) => (inner, None),
            Some((inner, tail)) => match tail.strip_prefix(':') {
                Some(port) => (inner, Some(port)),
                None => (value, None),
            },
            None => (value, None),
        };
    }
    match value.split_once(':') {
        // A second colon: a bare IPv6 literal, all host.
        Some((_, after)) if after.contains(':') => (value, None),
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &str) -> (&str, Option<&str>) {
        let a = Authority::parse(v);
        (a.host, a.port)
    }

    #[test]
    fn authority_names_and_ports() {
        assert_eq!(parts("example.com"), ("example.com", None));
        assert_eq!(parts("example.com:8080"), ("example.com", Some("8080")));
        assert_eq!(parts("example.com:"), ("example.com", Some("")));
        assert_eq!(parts("127.0.0.1:80"), ("127.0.0.1", Some("80")));
        assert_eq!(parts("127.0.0.1"), ("127.0.0.1", None));
        assert_eq!(parts(":80"), ("", Some("80")));
        assert_eq!(parts(""), ("", None));
    }

    #[test]
    fn authority_bracketed_ipv6() {
        assert_eq!(parts("[::1]"), ("::1", None));
        assert_eq!(parts("[::1]:8080"), ("::1", Some("8080")));
        assert_eq!(parts("[::1]:"), ("::1", Some("")));
        assert_eq!(parts("[2001:db8::1]:443"), ("2001:db8::1", Some("443")));
        assert_eq!(
            parts("[::ffff:192.0.2.1]:80"),
            ("::ffff:192.0.2.1", Some("80"))
        );
        // The same host with and without a port.
        assert_eq!(host_without_port("[::1]"), host_without_port("[::1]:80"));
    }

    #[test]
    fn authority_bare_ipv6_keeps_every_digit() {
        assert_eq!(parts("::1"), ("::1", None));
        assert_eq!(parts("fe80::1:80"), ("fe80::1:80", None));
        assert_eq!(parts("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(parts("::ffff:192.0.2.1"), ("::ffff:192.0.2.1", None));
    }

    #[test]
    fn authority_malformed_is_kept_whole() {
        assert_eq!(parts("[::1"), ("[::1", None));
        assert_eq!(parts("[::1]x"), ("[::1]x", None));
        assert_eq!(parts("[::1]x:80"), ("[::1]x:80", None));
        assert_eq!(parts("[::1]]:80"), ("[::1]]:80", None));
    }

    #[test]
    fn authority_final_dot_and_case() {
        assert_eq!(parts("example.com."), ("example.com", None));
        assert_eq!(parts("example.com.:443"), ("example.com", Some("443")));
        assert_eq!(parts("example.com.."), ("example.com.", None));
        assert_eq!(parts("."), ("", None));
        assert_eq!(parts("Example.COM:80"), ("Example.COM", Some("80")));
    }

    #[test]
    fn authority_port_number() {
        let n = |v| Authority::parse(v).port_number();
        assert_eq!(n("a:8080"), Some(8080));
        assert_eq!(n("[::1]:65535"), Some(65535));
        assert_eq!(n("a:65536"), None);
        assert_eq!(n("a:"), None);
        assert_eq!(n("a:+80"), None);
        assert_eq!(n("a:8o"), None);
        assert_eq!(n("a"), None);
        assert_eq!(n("::1"), None);
    }

    #[test]
    fn authority_never_panics_and_host_is_a_substring() {
        let alphabet = b"a.:[]1%";
        let mut rng = crate::http::test_util::Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = rng.below(9);
            let v: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())] as char)
                .collect();
            let a = Authority::parse(&v);
            assert!(v.contains(a.host), "{v:?} -> {a:?}");
            if let Some(p) = a.port {
                assert!(v.ends_with(p), "{v:?} -> {a:?}");
                assert!(!p.contains(':') || v.starts_with('['), "{v:?} -> {a:?}");
            }
        }
    }
}
