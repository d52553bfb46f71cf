//! `cert.pem`, the origin certificate that `login` writes.
//!
//! Despite the name it holds no certificate any more: one PEM block of type
//! `ARGO TUNNEL TOKEN` whose bytes are the JSON
//! `{"zoneID","accountID","apiToken","endpoint"?}`. ringway adds
//! `"ringwayControlURL"` so its CLI knows which control plane issued the
//! token; stock cloudflared ignores unknown JSON fields, so it still reads
//! the file (it drops the field if it ever rewrites it).

use std::path::Path;

use pem::{EncodeConfig, LineEnding, Pem};

use super::{FileKind, FilesError, JsonFields, Overwrite, Problem, go_json_object};
use crate::secret::ApiToken;

/// The PEM block type holding the JSON.
pub const PEM_TAG: &str = "ARGO TUNNEL TOKEN";

/// cloudflared's `login` writes cert.pem with `os.WriteFile(path, data, 0600)`.
pub const FILE_MODE: u32 = 0o600;

/// Block types that certificates from before 2020 carried next to the token
/// (an origin key and certificate). cloudflared skips them rather than
/// rejecting old files; so does ringway. Any other block type is an error.
const LEGACY_TAGS: [&str; 2] = ["PRIVATE KEY", "CERTIFICATE"];

/// The content of cert.pem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginCert {
    /// `zoneID`: the zone the token may manage DNS and load balancers in.
    pub zone_id: String,
    /// `accountID`: the account the token may manage tunnels in.
    pub account_id: String,
    /// `apiToken`: the bearer token for the v4 API.
    pub api_token: ApiToken,
    /// `endpoint`: `"fed"` for FedRAMP, otherwise absent. cloudflared lower-cases
    /// it on read; so does this type.
    pub endpoint: Option<String>,
    /// `ringwayControlURL`: ringway only; the control plane that issued the
    /// token.
    pub control_url: Option<String>,
}

impl OriginCert {
    /// Parses the text of a cert.pem (the tests' entry to the decoder).
    #[cfg(test)]
    fn decode_pem(text: &str) -> Result<Self, FilesError> {
        Self::decode_pem_bytes(text.as_bytes())
    }

    /// Parses the bytes of a cert.pem. Text outside PEM blocks is ignored, as
    /// Go's `pem.Decode` does.
    fn decode_pem_bytes(data: &[u8]) -> Result<Self, FilesError> {
        decode(data).map_err(|problem| FilesError::Invalid {
            kind: FileKind::OriginCert,
            problem,
        })
    }

    /// The cert.pem text, byte for byte what cloudflared's `EncodeOriginCert`
    /// writes for the same values (`json.Marshal` field order and escaping, PEM
    /// lines of 64 characters, `\n` line ends), plus `ringwayControlURL` last
    /// when set.
    fn encode_pem(&self) -> String {
        let mut fields = vec![
            ("zoneID", self.zone_id.as_str()),
            ("accountID", self.account_id.as_str()),
            ("apiToken", self.api_token.expose()),
        ];
        // Go's `omitempty`: an empty endpoint is not written.
        if let Some(endpoint) = self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            fields.push(("endpoint", endpoint));
        }
        if let Some(url) = self.control_url.as_deref().filter(|u| !u.is_empty()) {
            fields.push(("ringwayControlURL", url));
        }
        let json = go_json_object(&fields);
        pem::encode_config(
            &Pem::new(PEM_TAG, json.into_bytes()),
            EncodeConfig::new().set_line_ending(LineEnding::LF),
        )
    }

    /// Reads and parses the cert.pem at `path`.
    pub fn load(path: &Path) -> Result<Self, FilesError> {
        let data = super::read_file(FileKind::OriginCert, path)?;
        Self::decode_pem_bytes(&data).map_err(|e| e.at(path))
    }

    /// Writes cert.pem to `path` with mode 0600, replacing any existing file
    /// as cloudflared's `os.WriteFile` does. (cloudflared's `login` itself
    /// refuses when a non-empty cert.pem is already there; that check is the
    /// caller's.) Unlike `os.WriteFile`, an existing file's looser mode is
    /// tightened to 0600, since the file holds an API token.
    pub fn write(&self, path: &Path) -> Result<(), FilesError> {
        super::write_file(
            FileKind::OriginCert,
            path,
            self.encode_pem().as_bytes(),
            FILE_MODE,
            Overwrite::Replace,
        )
    }
}

fn decode(data: &[u8]) -> Result<OriginCert, Problem> {
    if data.is_empty() {
        return Err(Problem::Empty);
    }
    let blocks = pem::parse_many(data).map_err(pem_problem)?;
    if blocks.is_empty() {
        return Err(Problem::NotPem);
    }
    let mut token_json = None;
    for block in &blocks {
        match block.tag() {
            PEM_TAG => {
                if token_json.is_some() {
                    return Err(Problem::MultipleTokens);
                }
                token_json = Some(block.contents());
            }
            tag if LEGACY_TAGS.contains(&tag) => {}
            tag => return Err(Problem::UnknownPemBlock(tag.to_string())),
        }
    }
    let json = token_json.ok_or(Problem::NoTokenBlock)?;
    let fields = JsonFields::parse(json)?;
    // cloudflared's decoder requires zoneID and apiToken; its `credentials.Read`,
    // which every command that uses the token goes through, also requires
    // accountID. Check in that order so the message matches the first gap.
    let zone_id = fields.required("zoneID")?.to_string();
    let api_token = ApiToken::new(fields.required("apiToken")?.to_string());
    let account_id = match fields.string("accountID")? {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => return Err(Problem::NeedsRefresh),
    };
    let endpoint = fields
        .string("endpoint")?
        .filter(|e| !e.is_empty())
        .map(str::to_lowercase);
    let control_url = fields
        .string("ringwayControlURL")?
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    Ok(OriginCert {
        zone_id,
        account_id,
        api_token,
        endpoint,
        control_url,
    })
}

/// Describes a PEM failure without quoting the block (it may be the token).
fn pem_problem(error: pem::PemError) -> Problem {
    Problem::BadPem(match error {
        pem::PemError::InvalidData(_) => "a block's body is not valid base64",
        pem::PemError::MismatchedTags(..) => "a block's BEGIN and END types differ",
        pem::PemError::InvalidHeader(_) => "a block has an invalid header line",
        pem::PemError::NotUtf8(_) => "a block is not UTF-8 text",
        _ => "broken BEGIN/END framing",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::problem_of;

    const TOKEN: &str = "test-service-key";

    /// Built with Python from the JSON
    /// `{"zoneID":"7b0a4d77dfb881c1a3b7d61ea9443e19","accountID":"abcdabcdabcdabcd1234567890abcdef","apiToken":"test-service-key"}`
    /// (base64, 64-character lines), independently of this code.
    const FIXTURE: &str = "-----BEGIN ARGO TUNNEL TOKEN-----
eyJ6b25lSUQiOiI3YjBhNGQ3N2RmYjg4MWMxYTNiN2Q2MWVhOTQ0M2UxOSIsImFj
Y291bnRJRCI6ImFiY2RhYmNkYWJjZGFiY2QxMjM0NTY3ODkwYWJjZGVmIiwiYXBp
VG9rZW4iOiJ0ZXN0LXNlcnZpY2Uta2V5In0=
-----END ARGO TUNNEL TOKEN-----
";

    /// Same method, JSON
    /// `{"zoneID":"zone","accountID":"account","apiToken":"token","endpoint":"fed","ringwayControlURL":"https://cp.example:8443"}`.
    const FIXTURE_FULL: &str = "-----BEGIN ARGO TUNNEL TOKEN-----
eyJ6b25lSUQiOiJ6b25lIiwiYWNjb3VudElEIjoiYWNjb3VudCIsImFwaVRva2Vu
IjoidG9rZW4iLCJlbmRwb2ludCI6ImZlZCIsInJpbmd3YXlDb250cm9sVVJMIjoi
aHR0cHM6Ly9jcC5leGFtcGxlOjg0NDMifQ==
-----END ARGO TUNNEL TOKEN-----
";

    /// The token block of cloudflared's own test fixture
    /// (`credentials/test-cloudflare-tunnel-cert-json.pem`): JSON with spaces
    /// and a different key order, behind legacy key and certificate blocks.
    const CLOUDFLARED_STYLE: &str = "-----BEGIN PRIVATE KEY-----
AAECAwQ=
-----END PRIVATE KEY-----
-----BEGIN CERTIFICATE-----
BQYHCAk=
-----END CERTIFICATE-----
-----BEGIN ARGO TUNNEL TOKEN-----
eyJ6b25lSUQiOiAiN2IwYTRkNzdkZmI4ODFjMWEzYjdkNjFlYTk0NDNlMTkiLCAiYXBpVG9rZW4i
OiAidGVzdC1zZXJ2aWNlLWtleSIsICJhY2NvdW50SUQiOiAiYWJjZGFiY2RhYmNkYWJjZDEyMzQ1
Njc4OTBhYmNkZWYifQ==
-----END ARGO TUNNEL TOKEN-----
";

    fn known() -> OriginCert {
        OriginCert {
            zone_id: "7b0a4d77dfb881c1a3b7d61ea9443e19".into(),
            account_id: "abcdabcdabcdabcd1234567890abcdef".into(),
            api_token: ApiToken::new(TOKEN.into()),
            endpoint: None,
            control_url: None,
        }
    }

    fn pem_of(json: &str) -> String {
        pem::encode_config(
            &Pem::new(PEM_TAG, json.as_bytes().to_vec()),
            EncodeConfig::new().set_line_ending(LineEnding::LF),
        )
    }

    fn problem(text: &str) -> Problem {
        problem_of(OriginCert::decode_pem(text))
    }

    #[test]
    fn encodes_byte_exact() {
        assert_eq!(known().encode_pem(), FIXTURE);
        let full = OriginCert {
            zone_id: "zone".into(),
            account_id: "account".into(),
            api_token: ApiToken::new("token".into()),
            endpoint: Some("fed".into()),
            control_url: Some("https://cp.example:8443".into()),
        };
        assert_eq!(full.encode_pem(), FIXTURE_FULL);
        assert_eq!(OriginCert::decode_pem(FIXTURE_FULL).unwrap(), full);
    }

    #[test]
    fn decodes_fixture_and_round_trips() {
        assert_eq!(OriginCert::decode_pem(FIXTURE).unwrap(), known());
        let generated = OriginCert {
            api_token: ApiToken::generate(),
            endpoint: Some("fed".into()),
            ..known()
        };
        let back = OriginCert::decode_pem(&generated.encode_pem()).unwrap();
        assert_eq!(back, generated);
    }

    #[test]
    fn decodes_cloudflared_fixture_with_legacy_blocks() {
        let cert = OriginCert::decode_pem(CLOUDFLARED_STYLE).unwrap();
        assert_eq!(cert, known());
        // Text around blocks is ignored, as by Go's pem.Decode.
        let noisy = format!("saved by a browser\n{FIXTURE}\ntrailing notes\n");
        assert_eq!(OriginCert::decode_pem(&noisy).unwrap(), known());
    }

    #[test]
    fn endpoint_is_lowercased_and_unknown_fields_ignored() {
        let cert = OriginCert::decode_pem(&pem_of(
            r#"{"ZONEID":"z","accountid":"a","apiToken":"t","endpoint":"FED","future":{"x":1}}"#,
        ))
        .unwrap();
        assert_eq!(cert.zone_id, "z");
        assert_eq!(cert.account_id, "a");
        assert_eq!(cert.endpoint.as_deref(), Some("fed"));
        assert_eq!(cert.control_url, None);
        let cert = OriginCert::decode_pem(&pem_of(
            r#"{"zoneID":"z","accountID":"a","apiToken":"t","endpoint":""}"#,
        ))
        .unwrap();
        assert_eq!(cert.endpoint, None);
    }

    #[test]
    fn escapes_like_go() {
        let cert = OriginCert {
            api_token: ApiToken::new("a<b>&c".into()),
            ..known()
        };
        let pem = pem::parse(cert.encode_pem()).unwrap();
        let json = String::from_utf8(pem.contents().to_vec()).unwrap();
        assert!(
            json.contains(r#""apiToken":"a\u003cb\u003e\u0026c""#),
            "{json}"
        );
        assert_eq!(OriginCert::decode_pem(&cert.encode_pem()).unwrap(), cert);
    }

    #[test]
    fn every_bad_input_has_its_own_error() {
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem("just some text\n"), Problem::NotPem);
        assert_eq!(
            problem("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
            Problem::UnknownPemBlock("RSA PRIVATE KEY".into())
        );
        assert_eq!(
            problem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Problem::NoTokenBlock
        );
        assert_eq!(
            problem(&format!("{FIXTURE}{FIXTURE}")),
            Problem::MultipleTokens
        );
        assert!(matches!(
            problem("-----BEGIN ARGO TUNNEL TOKEN-----\n!!!!\n-----END ARGO TUNNEL TOKEN-----\n"),
            Problem::BadPem(_)
        ));
        assert!(matches!(
            problem(&pem_of("zone\nv1.0-legacy-key")),
            Problem::Json(_)
        ));
        assert_eq!(
            problem(&pem_of(r#"{"accountID":"a","apiToken":"t"}"#)),
            Problem::MissingField("zoneID")
        );
        assert_eq!(
            problem(&pem_of(r#"{"zoneID":"z","accountID":"a","apiToken":""}"#)),
            Problem::MissingField("apiToken")
        );
        assert_eq!(
            problem(&pem_of(r#"{"zoneID":"z","apiToken":"t"}"#)),
            Problem::NeedsRefresh
        );
        assert_eq!(
            problem(&pem_of(r#"{"zoneID":"z","accountID":"a","apiToken":7}"#)),
            Problem::NotAString("apiToken")
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let secret = "SUPER-SECRET-TOKEN-VALUE";
        let inputs = [
            pem_of(&format!(r#"{{"accountID":"a","apiToken":"{secret}"}}"#)),
            pem_of(&format!(r#"{{"zoneID":"z","apiToken":"{secret}"}}"#)),
            pem_of(&format!(r#"{{"zoneID":"z","apiToken":"{secret}""#)),
            pem_of(&format!(r#""{secret}""#)),
            format!(
                "-----BEGIN ARGO TUNNEL TOKEN-----\n{secret}!\n-----END ARGO TUNNEL TOKEN-----\n"
            ),
        ];
        for input in inputs {
            let msg = OriginCert::decode_pem(&input).unwrap_err().to_string();
            assert!(!msg.contains(secret), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let cert = OriginCert {
            api_token: ApiToken::new(secret.into()),
            ..known()
        };
        let dbg = format!("{cert:?} {cert:#?}");
        assert!(!dbg.contains(secret), "{dbg}");
        assert!(dbg.contains("MASKED"));
    }

    #[cfg(unix)]
    #[test]
    fn write_load_and_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        known().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FIXTURE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(OriginCert::load(&path).unwrap(), known());

        // Rewriting replaces the content and tightens a loose mode.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other = OriginCert {
            zone_id: "other".into(),
            ..known()
        };
        other.write(&path).unwrap();
        assert_eq!(OriginCert::load(&path).unwrap(), other);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cert.pem");
        let err = OriginCert::load(&missing).unwrap_err();
        assert!(matches!(err, FilesError::NotFound { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));
        // A directory is "not a file", as in cloudflared.
        let err = OriginCert::load(dir.path()).unwrap_err();
        assert!(matches!(err, FilesError::NotFound { .. }));

        std::fs::write(&missing, "garbage").unwrap();
        let err = OriginCert::load(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid origin certificate {}: it contains no PEM block",
                missing.display()
            )
        );
    }
}
