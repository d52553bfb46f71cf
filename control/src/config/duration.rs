//! Durations as cloudflared's config.yml spells them.
//!
//! cloudflared decodes YAML durations with Go's `time.ParseDuration`, so a
//! config written for it uses strings such as `"30s"`, `"1m30s"` or `"1.5h"`.
//! Its remote (JSON) configuration carries plain integers counting seconds,
//! so we accept those too: a config copied from the dashboard keeps working.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Why a duration string was rejected. The messages follow Go's wording so a
/// user who searches for them finds cloudflared's documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Go refuses durations that do not fit an `int64` of nanoseconds; matching
/// that limit means both programs accept exactly the same set of values.
const MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the micro sign and the Greek mu as well as "us".
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string (`"300ms"`, `"1h30m"`, `"1.5s"`, `"0"`).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut rest = input;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    // Go special-cases a bare zero because "0" is unambiguous without a unit.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;

        let overflow = || DurationError::Overflow(input.to_owned());
        let mut value: u128 = 0;
        for b in int_part.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(b - b'0')))
                .filter(|&v| v <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        let mut nanos = value.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions are truncated to whole nanoseconds; digits past the
        // 19th cannot change the result, so they are ignored rather than
        // risking an overflow of the denominator.
        let mut num: u128 = 0;
        let mut den: u128 = 1;
        for b in frac_part.bytes().take(19) {
            num = num * 10 + u128::from(b - b'0');
            den *= 10;
        }
        nanos += num * scale / den;
        total = total
            .checked_add(nanos)
            .filter(|&t| t <= MAX_NANOS)
            .ok_or_else(overflow)?;
        rest = after;
    }

    if negative && total != 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    // The bound above keeps `total` within u64.
    Ok(Duration::from_nanos(total as u64))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\" or \"1m30s\", or a whole number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_go_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        let d = Duration::from_secs(v);
        if d.as_nanos() > MAX_NANOS {
            return Err(E::custom(format!("duration {v}s is too large")));
        }
        Ok(d)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("negative duration {v} is not allowed"))),
        }
    }
}

/// Optional duration field: absent or `null` is `None`.
pub(super) fn deserialize_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct Wrapped(Duration);
    impl<'de> serde::Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(DurationVisitor).map(Wrapped)
        }
    }
    Ok(<Option<Wrapped> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_duration_forms() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("2us"), Duration::from_micros(2));
        assert_eq!(ok("2µs"), Duration::from_micros(2));
        assert_eq!(ok("2μs"), Duration::from_micros(2));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("+10s"), Duration::from_secs(10));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1.000000001s"), Duration::from_nanos(1_000_000_001));
    }

    #[test]
    fn go_duration_errors() {
        assert_eq!(
            parse_go_duration("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert_eq!(
            parse_go_duration("1d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "1d".into()
            })
        );
        assert_eq!(
            parse_go_duration(""),
            Err(DurationError::Invalid("".into()))
        );
        assert_eq!(
            parse_go_duration("."),
            Err(DurationError::Invalid(".".into()))
        );
        assert_eq!(
            parse_go_duration("s"),
            Err(DurationError::Invalid("s".into()))
        );
        assert_eq!(
            parse_go_duration("-5s"),
            Err(DurationError::Negative("-5s".into()))
        );
        assert_eq!(
            parse_go_duration("3000000h"),
            Err(DurationError::Overflow("3000000h".into()))
        );
        assert_eq!(
            parse_go_duration("1m 30s"),
            Err(DurationError::UnknownUnit {
                unit: "m ".into(),
                input: "1m 30s".into()
            })
        );
    }

    #[test]
    fn deserializes_strings_and_integer_seconds() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "deserialize_opt")]
            d: Option<Duration>,
        }
        let t: T = serde_yaml::from_str("d: 1m30s").unwrap();
        assert_eq!(t.d, Some(Duration::from_secs(90)));
        let t: T = serde_yaml::from_str("d: 45").unwrap();
        assert_eq!(t.d, Some(Duration::from_secs(45)));
        let t: T = serde_yaml::from_str("d: null").unwrap();
        assert_eq!(t.d, None);
        let t: T = serde_yaml::from_str("{}").unwrap();
        assert_eq!(t.d, None);
        let e = serde_yaml::from_str::<T>("d: -3")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("negative duration -3"), "{e}");
        let e = serde_yaml::from_str::<T>("d: \"30\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing unit in duration \"30\""), "{e}");
        let e = serde_yaml::from_str::<T>("d: 1.5")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid type: floating point"), "{e}");
    }
}
