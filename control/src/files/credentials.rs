//! The tunnel credentials file, `<UUID>.json`, that `tunnel create` writes.
//!
//! cloudflared marshals a Go struct without JSON tags, so the keys are the Go
//! field names: `{"AccountTag","TunnelSecret","TunnelID","Endpoint"}`, in that
//! order, with `Endpoint` always present (`""` when unset) and the secret as
//! standard base64. The file has mode 0400 and is never overwritten.

use std::path::Path;

use uuid::Uuid;

use super::{FileKind, FilesError, JsonFields, Overwrite, Problem, go_json_object};
use crate::secret::TunnelSecret;

/// cloudflared writes credentials with `os.WriteFile(path, body, 0400)`.
pub const FILE_MODE: u32 = 0o400;

/// What a connector needs to register a tunnel with the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AccountTag`: the account id.
    pub account_tag: String,
    /// `TunnelSecret`: at least 32 bytes, base64 in the file.
    pub tunnel_secret: TunnelSecret,
    /// `TunnelID`. Files written before cloudflared 2020.10 (TUN-3581) lack it;
    /// those load with the nil UUID, and the caller fills in the id it
    /// resolved from the command line ([`Credentials::with_tunnel_id`]), as
    /// cloudflared does.
    pub tunnel_id: Uuid,
    /// `Endpoint`: `"fed"` for FedRAMP, otherwise empty.
    pub endpoint: String,
}

impl Credentials {
    /// The file content, byte for byte what cloudflared's `json.Marshal`
    /// writes: compact, Go field order, no trailing newline.
    pub fn to_json(&self) -> String {
        let secret = self.tunnel_secret.to_base64();
        let id = self.tunnel_id.hyphenated().to_string();
        go_json_object(&[
            ("AccountTag", &self.account_tag),
            ("TunnelSecret", &secret),
            ("TunnelID", &id),
            ("Endpoint", &self.endpoint),
        ])
    }

    /// Parses credentials JSON text (`--credentials-contents`), as [`Credentials::load`] does a
    /// file's. Keys match case-insensitively and unknown keys (old files carry `"TunnelName"`)
    /// are ignored, as with Go's `encoding/json`.
    pub fn from_json(text: &str) -> Result<Self, FilesError> {
        parse(text.as_bytes()).map_err(|problem| FilesError::Invalid {
            kind: FileKind::Credentials,
            problem,
        })
    }

    /// Reads and parses the credentials file at `path`.
    pub fn load(path: &Path) -> Result<Self, FilesError> {
        let data = super::read_file(FileKind::Credentials, path)?;
        parse(&data).map_err(|problem| {
            // cloudflared's hint for the usual mistake of passing cert.pem.
            let is_pem = path.extension().is_some_and(|e| e == "pem");
            let problem = match problem {
                Problem::Json(_) if is_pem => Problem::PemGivenAsCredentials,
                other => other,
            };
            FilesError::InvalidFile {
                kind: FileKind::Credentials,
                path: path.to_path_buf(),
                problem,
            }
        })
    }

    /// Creates the file at `path` with mode 0400. An existing file (or
    /// symlink) at `path` is an error and is left untouched: cloudflared
    /// refuses too, because overwriting would lose the only copy of another
    /// tunnel's secret.
    pub fn write_new(&self, path: &Path) -> Result<(), FilesError> {
        super::write_file(
            FileKind::Credentials,
            path,
            self.to_json().as_bytes(),
            FILE_MODE,
            Overwrite::Refuse,
        )
    }

    /// Whether the file named its tunnel (see [`Credentials::tunnel_id`]).
    pub fn has_tunnel_id(&self) -> bool {
        !self.tunnel_id.is_nil()
    }

    /// Sets the tunnel id. cloudflared's `tunnel run` always replaces the
    /// file's id with the one it resolved, which is what makes pre-2020 files
    /// without `TunnelID` usable.
    pub fn with_tunnel_id(mut self, id: Uuid) -> Self {
        self.tunnel_id = id;
        self
    }
}

fn parse(data: &[u8]) -> Result<Credentials, Problem> {
    let fields = JsonFields::parse(data)?;
    let account_tag = fields.required("AccountTag")?.to_string();
    let tunnel_secret =
        TunnelSecret::from_base64(fields.required("TunnelSecret")?).map_err(|error| {
            Problem::BadSecret {
                field: "TunnelSecret",
                error,
            }
        })?;
    let tunnel_id = match fields.string("TunnelID")? {
        None => Uuid::nil(),
        Some(text) => Uuid::parse_str(text).map_err(|_| Problem::BadUuid("TunnelID"))?,
    };
    let endpoint = fields.string("Endpoint")?.unwrap_or_default().to_string();
    Ok(Credentials {
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
    use crate::secret::SecretError;

    /// What cloudflared's `json.Marshal(&connection.Credentials{...})` gives
    /// for these values: Go field names and order, `Endpoint` not omitted.
    const FIXTURE: &str = r#"{"AccountTag":"0000d4d14e84bd4ae5a6a02e0000ac63","TunnelSecret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","TunnelID":"df5ed608-b8b4-4109-89f3-9f2cf199df64","Endpoint":""}"#;

    fn known() -> Credentials {
        Credentials {
            account_tag: ACCOUNT.into(),
            tunnel_secret: TunnelSecret::from_base64(SECRET_B64).unwrap(),
            tunnel_id: Uuid::parse_str(ID).unwrap(),
            endpoint: String::new(),
        }
    }

    fn problem(json: &str) -> Problem {
        problem_of(Credentials::from_json(json))
    }

    #[test]
    fn encodes_byte_exact() {
        assert_eq!(known().to_json(), FIXTURE);
        let fed = Credentials {
            endpoint: "fed".into(),
            ..known()
        };
        assert!(fed.to_json().ends_with(r#","Endpoint":"fed"}"#));
    }

    #[test]
    fn decodes_and_round_trips() {
        assert_eq!(Credentials::from_json(FIXTURE).unwrap(), known());
        let fresh = Credentials {
            tunnel_secret: TunnelSecret::generate(),
            tunnel_id: Uuid::new_v4(),
            ..known()
        };
        assert_eq!(Credentials::from_json(&fresh.to_json()).unwrap(), fresh);
    }

    #[test]
    fn reads_old_and_variant_files() {
        // Pre-TUN-3581: no TunnelID, no Endpoint.
        let old = format!(r#"{{"AccountTag":"{ACCOUNT}","TunnelSecret":"{SECRET_B64}"}}"#);
        let creds = Credentials::from_json(&old).unwrap();
        assert!(!creds.has_tunnel_id());
        assert_eq!(creds.endpoint, "");
        let creds = creds.with_tunnel_id(Uuid::parse_str(ID).unwrap());
        assert_eq!(creds, known());
        // An intermediate format also carried TunnelName; upper-case UUIDs
        // and other key cases parse as in Go.
        let variant = format!(
            r#"{{"accounttag":"{ACCOUNT}","TunnelSecret":"{SECRET_B64}","TunnelID":"{}","TunnelName":"mytunnel"}}"#,
            ID.to_uppercase()
        );
        assert_eq!(Credentials::from_json(&variant).unwrap(), known());
    }

    #[test]
    fn every_bad_input_has_its_own_error() {
        assert!(matches!(problem(""), Problem::Json(_)));
        assert!(matches!(problem("not json"), Problem::Json(_)));
        assert!(matches!(problem("[1,2]"), Problem::Json(_)));
        assert_eq!(
            problem(&format!(r#"{{"TunnelSecret":"{SECRET_B64}"}}"#)),
            Problem::MissingField("AccountTag")
        );
        assert_eq!(
            problem(r#"{"AccountTag":"a"}"#),
            Problem::MissingField("TunnelSecret")
        );
        assert_eq!(
            problem(r#"{"AccountTag":"a","TunnelSecret":"%%%%"}"#),
            Problem::BadSecret {
                field: "TunnelSecret",
                error: SecretError::Base64("invalid character")
            }
        );
        assert_eq!(
            problem(r#"{"AccountTag":"a","TunnelSecret":"c2VjcmV0"}"#),
            Problem::BadSecret {
                field: "TunnelSecret",
                error: SecretError::TooShort { len: 6 }
            }
        );
        assert_eq!(
            problem(&format!(
                r#"{{"AccountTag":"a","TunnelSecret":"{SECRET_B64}","TunnelID":"nope"}}"#
            )),
            Problem::BadUuid("TunnelID")
        );
        assert_eq!(
            problem(&format!(
                r#"{{"AccountTag":"a","TunnelSecret":"{SECRET_B64}","TunnelID":7}}"#
            )),
            Problem::NotAString("TunnelID")
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let short = "c2VjcmV0c2VjcmV0";
        let msg =
            Credentials::from_json(&format!(r#"{{"AccountTag":"a","TunnelSecret":"{short}"}}"#))
                .unwrap_err()
                .to_string();
        assert_eq!(
            msg,
            "invalid tunnel credentials file: \"TunnelSecret\": tunnel secret must be at least 32 bytes, got 12"
        );
        let msg = Credentials::from_json(&format!(r#"{{"TunnelSecret":"{SECRET_B64}""#))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains(SECRET_B64), "{msg}");
        let dbg = format!("{:?} {:#?}", known(), known());
        assert!(!dbg.contains(SECRET_B64), "{dbg}");
        assert!(dbg.contains(ACCOUNT) && dbg.contains("MASKED"));
    }

    #[cfg(unix)]
    #[test]
    fn write_new_is_0400_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{ID}.json"));
        known().write_new(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FIXTURE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert_eq!(Credentials::load(&path).unwrap(), known());

        let other = Credentials {
            tunnel_secret: TunnelSecret::generate(),
            ..known()
        };
        let err = other.write_new(&path).unwrap_err();
        assert!(matches!(err, FilesError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FIXTURE);

        // A dangling symlink is not followed to create its target.
        let link = dir.path().join("link.json");
        let target = dir.path().join("target.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(known().write_new(&link).is_err());
        assert!(!target.exists());

        let err = known()
            .write_new(&dir.path().join("no-such-dir").join("x.json"))
            .unwrap_err();
        assert!(matches!(err, FilesError::Write { .. }), "{err}");
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = Credentials::load(&missing).unwrap_err();
        assert!(matches!(err, FilesError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "tunnel credentials file {} does not exist or is not a file",
                missing.display()
            )
        );

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{{{").unwrap();
        let err = Credentials::load(&garbage).unwrap_err();
        assert!(err.to_string().contains(&garbage.display().to_string()));
        assert!(matches!(err.problem(), Some(Problem::Json(_))));

        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "-----BEGIN ARGO TUNNEL TOKEN-----\n").unwrap();
        let err = Credentials::load(&cert).unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::PemGivenAsCredentials));
    }
}
