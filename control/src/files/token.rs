//! The tunnel token: the credentials as one string (`tunnel token`,
//! `tunnel run --token`, `--token-file`, `TUNNEL_TOKEN`).
//!
//! It is standard padded base64 of the compact JSON `{"a","s","t","e"?}`:
//! account tag, secret (itself base64), tunnel id, and the endpoint only when
//! set. The key order is the Go struct's (`a`, `s`, `t`, `e`), not the order
//! one might write by hand.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use super::{FileKind, FilesError, JsonFields, Problem, go_json_object};
use crate::files::credentials::Credentials;
use crate::secret::{TunnelSecret, decode_go_std_base64};

/// The credentials a token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelToken {
    /// `a`: the account id.
    pub account_tag: String,
    /// `s`: the tunnel secret.
    pub tunnel_secret: TunnelSecret,
    /// `t`: the tunnel id.
    pub tunnel_id: Uuid,
    /// `e`: `"fed"` for FedRAMP; omitted when `None` or empty.
    pub endpoint: Option<String>,
}

impl TunnelToken {
    /// The token string, byte for byte what cloudflared's
    /// `TunnelToken.Encode` produces.
    pub fn encode(&self) -> String {
        let secret = self.tunnel_secret.to_base64();
        let id = self.tunnel_id.hyphenated().to_string();
        let mut fields = vec![
            ("a", self.account_tag.as_str()),
            ("s", secret.as_str()),
            ("t", id.as_str()),
        ];
        if let Some(endpoint) = self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            fields.push(("e", endpoint));
        }
        STANDARD.encode(go_json_object(&fields))
    }

    /// Parses a token string. Accepts what cloudflared's `ParseToken` accepts
    /// (Go's `base64.StdEncoding`, which skips line breaks) and additionally
    /// ignores surrounding whitespace: cloudflared trims `--token-file`
    /// content, and a pasted `--token` often carries a stray space.
    pub fn decode(text: &str) -> Result<Self, FilesError> {
        parse(text.trim()).map_err(|problem| FilesError::Invalid {
            kind: FileKind::Token,
            problem,
        })
    }

    /// The same credentials in credentials-file form.
    pub fn to_credentials(&self) -> Credentials {
        Credentials {
            account_tag: self.account_tag.clone(),
            tunnel_secret: self.tunnel_secret.clone(),
            tunnel_id: self.tunnel_id,
            endpoint: self.endpoint.clone().unwrap_or_default(),
        }
    }

    /// The token form of a credentials file.
    fn from_credentials(credentials: &Credentials) -> Self {
        Self {
            account_tag: credentials.account_tag.clone(),
            tunnel_secret: credentials.tunnel_secret.clone(),
            tunnel_id: credentials.tunnel_id,
            endpoint: Some(credentials.endpoint.clone()).filter(|e| !e.is_empty()),
        }
    }
}

impl From<TunnelToken> for Credentials {
    fn from(token: TunnelToken) -> Self {
        token.to_credentials()
    }
}

impl From<Credentials> for TunnelToken {
    fn from(credentials: Credentials) -> Self {
        Self::from_credentials(&credentials)
    }
}

fn parse(text: &str) -> Result<TunnelToken, Problem> {
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    let json = decode_go_std_base64(text).map_err(Problem::Base64)?;
    let fields = JsonFields::parse(&json)?;
    let account_tag = fields.required("a")?.to_string();
    let tunnel_secret = TunnelSecret::from_base64(fields.required("s")?)
        .map_err(|error| Problem::BadSecret { field: "s", error })?;
    let tunnel_id = Uuid::parse_str(fields.required("t")?).map_err(|_| Problem::BadUuid("t"))?;
    let endpoint = fields
        .string("e")?
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    Ok(TunnelToken {
        account_tag,
        tunnel_secret,
        tunnel_id,
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;

    /// Built with Python: base64 of
    /// `{"a":"0000d4d14e84bd4ae5a6a02e0000ac63","s":"AAEC...Hh8=","t":"df5ed608-b8b4-4109-89f3-9f2cf199df64"}`.
    const TOKEN: &str = "eyJhIjoiMDAwMGQ0ZDE0ZTg0YmQ0YWU1YTZhMDJlMDAwMGFjNjMiLCJzIjoiQUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOD0iLCJ0IjoiZGY1ZWQ2MDgtYjhiNC00MTA5LTg5ZjMtOWYyY2YxOTlkZjY0In0=";
    /// The same with `,"e":"fed"` appended.
    const TOKEN_FED: &str = "eyJhIjoiMDAwMGQ0ZDE0ZTg0YmQ0YWU1YTZhMDJlMDAwMGFjNjMiLCJzIjoiQUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOD0iLCJ0IjoiZGY1ZWQ2MDgtYjhiNC00MTA5LTg5ZjMtOWYyY2YxOTlkZjY0IiwiZSI6ImZlZCJ9";

    fn known() -> TunnelToken {
        TunnelToken {
            account_tag: ACCOUNT.into(),
            tunnel_secret: TunnelSecret::from_base64(SECRET_B64).unwrap(),
            tunnel_id: Uuid::parse_str(ID).unwrap(),
            endpoint: None,
        }
    }

    fn b64(json: &str) -> String {
        STANDARD.encode(json)
    }

    fn problem(text: &str) -> Problem {
        problem_of(TunnelToken::decode(text))
    }

    #[test]
    fn known_token_decodes_and_encodes_byte_exact() {
        assert_eq!(TunnelToken::decode(TOKEN).unwrap(), known());
        assert_eq!(known().encode(), TOKEN);
        let fed = TunnelToken {
            endpoint: Some("fed".into()),
            ..known()
        };
        assert_eq!(fed.encode(), TOKEN_FED);
        assert_eq!(TunnelToken::decode(TOKEN_FED).unwrap(), fed);
        let empty_endpoint = TunnelToken {
            endpoint: Some(String::new()),
            ..known()
        };
        assert_eq!(empty_endpoint.encode(), TOKEN);
    }

    #[test]
    fn round_trips_and_tolerates_whitespace() {
        let t = TunnelToken {
            tunnel_secret: TunnelSecret::generate(),
            tunnel_id: Uuid::new_v4(),
            ..known()
        };
        assert_eq!(TunnelToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(
            TunnelToken::decode(&format!(" {TOKEN}\n")).unwrap(),
            known()
        );
        let wrapped = format!("{}\n{}", &TOKEN[..60], &TOKEN[60..]);
        assert_eq!(TunnelToken::decode(&wrapped).unwrap(), known());
    }

    #[test]
    fn converts_to_and_from_credentials() {
        let creds = known().to_credentials();
        assert_eq!(creds.account_tag, ACCOUNT);
        assert_eq!(creds.endpoint, "");
        assert_eq!(creds.tunnel_id.to_string(), ID);
        assert_eq!(TunnelToken::from(creds.clone()), known());
        let fed = TunnelToken {
            endpoint: Some("fed".into()),
            ..known()
        };
        let fed_creds = Credentials::from(fed.clone());
        assert_eq!(fed_creds.endpoint, "fed");
        assert_eq!(TunnelToken::from_credentials(&fed_creds), fed);
    }

    #[test]
    fn every_bad_input_has_its_own_error() {
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem("   "), Problem::Empty);
        assert!(matches!(problem("aabc"), Problem::Json(_)));
        assert!(matches!(problem("not a token!"), Problem::Base64(_)));
        // Unpadded and URL-safe forms are rejected by Go's StdEncoding too.
        assert!(matches!(
            problem(TOKEN.trim_end_matches('=')),
            Problem::Base64(_)
        ));
        assert!(matches!(problem(&b64("[]")), Problem::Json(_)));
        let s = SECRET_B64;
        assert_eq!(
            problem(&b64(&format!(r#"{{"s":"{s}","t":"{ID}"}}"#))),
            Problem::MissingField("a")
        );
        assert_eq!(
            problem(&b64(&format!(r#"{{"a":"x","t":"{ID}"}}"#))),
            Problem::MissingField("s")
        );
        assert_eq!(
            problem(&b64(&format!(r#"{{"a":"x","s":"{s}"}}"#))),
            Problem::MissingField("t")
        );
        assert_eq!(
            problem(&b64(&format!(r#"{{"a":"x","s":"{s}","t":"zzz"}}"#))),
            Problem::BadUuid("t")
        );
        assert!(matches!(
            problem(&b64(&format!(r#"{{"a":"x","s":"c2VjcmV0","t":"{ID}"}}"#))),
            Problem::BadSecret { field: "s", .. }
        ));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let dbg = format!("{:?} {:#?}", known(), known());
        assert!(!dbg.contains(SECRET_B64) && !dbg.contains(TOKEN), "{dbg}");
        let broken = &TOKEN[..TOKEN.len() - 8];
        for bad in [
            broken.to_string(),
            format!("{TOKEN}!"),
            b64(&format!(r#""{SECRET_B64}""#)),
        ] {
            let msg = TunnelToken::decode(&bad).unwrap_err().to_string();
            assert!(msg.starts_with("invalid tunnel token: "), "{msg}");
            assert!(!msg.contains(SECRET_B64) && !msg.contains(&bad), "{msg}");
        }
    }
}
