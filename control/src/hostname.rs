//! Hostname rules shared by the API (DNS records, routes) and the CLI (checking before any
//! request is sent), so both refuse the same names with the same words.

/// Why a hostname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("{0} is not a valid hostname")]
    Invalid(String),
    #[error("hostname {host} is not in zone {zone}")]
    OutsideZone { host: String, zone: String },
}

/// Checks `host` the way cloudflared does before it routes DNS (letters, digits, `-`, `_`,
/// `.`, a leading `*` for wildcards) plus the DNS length limits, and returns it lowercased
/// without a trailing dot.
pub fn normalize_hostname(host: &str) -> Result<String, HostnameError> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let invalid = || HostnameError::Invalid(host.to_string());
    if h.is_empty() || h.len() > 253 {
        return Err(invalid());
    }
    let mut chars = h.chars();
    let first = chars.next().ok_or_else(invalid)?;
    if !(first == '*' || first == '_' || first.is_ascii_alphanumeric()) {
        return Err(invalid());
    }
    if !chars.all(|c| c == '-' || c == '_' || c == '.' || c.is_ascii_alphanumeric()) {
        return Err(invalid());
    }
    for (i, label) in h.split('.').enumerate() {
        if label.is_empty() || label.len() > 63 || (label == "*" && i != 0) {
            return Err(invalid());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid());
        }
        if label.contains('*') && label != "*" {
            return Err(invalid());
        }
    }
    Ok(h)
}

/// Is `host` (already normalized) the zone apex or a name under it?
fn in_zone(host: &str, zone: &str) -> bool {
    host == zone
        || host
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// Normalizes `host` and checks it lies inside `zone`.
pub fn hostname_in_zone(host: &str, zone: &str) -> Result<String, HostnameError> {
    let h = normalize_hostname(host)?;
    if in_zone(&h, zone) {
        Ok(h)
    } else {
        Err(HostnameError::OutsideZone {
            host: h,
            zone: zone.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            normalize_hostname("App.Example.com.").unwrap(),
            "app.example.com"
        );
        assert_eq!(
            normalize_hostname("*.example.com").unwrap(),
            "*.example.com"
        );
        assert_eq!(
            normalize_hostname("_dmarc.example.com").unwrap(),
            "_dmarc.example.com"
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "exa mple.com",
            "a..b",
            "-a.com",
            "a-.com",
            "a.*.com",
            "a*.com",
            "bad/host",
            "host:8080",
            &"a".repeat(64),
        ] {
            assert!(normalize_hostname(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn zone_membership() {
        assert!(in_zone("example.com", "example.com"));
        assert!(in_zone("a.b.example.com", "example.com"));
        assert!(!in_zone("badexample.com", "example.com"));
        assert!(!in_zone("example.org", "example.com"));
        assert_eq!(
            hostname_in_zone("x.example.org", "example.com"),
            Err(HostnameError::OutsideZone {
                host: "x.example.org".into(),
                zone: "example.com".into()
            })
        );
    }
}
