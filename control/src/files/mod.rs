//! cloudflared's on-disk and credential formats, byte for byte.
//!
//! ringway is a drop-in for cloudflared, so an existing install (files made by
//! `cloudflared login` and `cloudflared tunnel create`) must work unchanged, and
//! files ringway writes must work with the stock cloudflared.
//!
//! - [`origin_cert`]: `cert.pem`, written by `login`. It holds the API token the
//!   CLI uses for tunnel and DNS management, and ringway's control-plane URL.
//! - [`credentials`]: `<UUID>.json`, written by `tunnel create`. It holds the
//!   tunnel secret a connector presents to the edge.
//! - [`token`]: the single-string form of the same credentials (`tunnel token`,
//!   `tunnel run --token`), convenient for containers and service managers.
//! - [`search`]: where cloudflared looks for config.yml, cert.pem and
//!   credentials when no path is given.
//!
//! Go's `encoding/json` differs from serde_json in ways that matter for byte
//! equality and for reading files by hand-edited or older tools, so this module
//! has its own small writer (`go_json_object`) and reader (`JsonFields`)
//! for the flat string objects these formats use.
//!
//! Errors never contain a secret: messages name the file, the field and what
//! is wrong with it, never the value.

use std::fmt;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use crate::secret::SecretError;

pub mod credentials;
pub mod origin_cert;
pub mod search;
pub mod token;

pub use credentials::Credentials;
pub use origin_cert::OriginCert;
pub use search::{
    credentials_path_next_to, credentials_search_dirs, default_search_dirs, find_config_file,
    find_credentials, find_origin_cert,
};
pub use token::TunnelToken;

/// Which kind of file or string an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `cert.pem`.
    OriginCert,
    /// `<UUID>.json`.
    Credentials,
    /// The base64 tunnel token.
    Token,
    /// `config.yml`.
    Config,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OriginCert => "origin certificate",
            Self::Credentials => "tunnel credentials file",
            Self::Token => "tunnel token",
            Self::Config => "config file",
        })
    }
}

/// What is wrong with the content of a file or string. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Nothing in it.
    #[error("it is empty")]
    Empty,
    /// No `-----BEGIN ...-----` block at all.
    #[error("it contains no PEM block")]
    NotPem,
    /// PEM framing or a block's base64 body is broken.
    #[error("malformed PEM: {0}")]
    BadPem(&'static str),
    /// A PEM block cloudflared does not accept either.
    #[error(
        "unknown PEM block \"{0}\" (only ARGO TUNNEL TOKEN, PRIVATE KEY and CERTIFICATE are allowed)"
    )]
    UnknownPemBlock(String),
    /// cert.pem without the block that holds the token.
    #[error("it has no ARGO TUNNEL TOKEN block")]
    NoTokenBlock,
    /// Two token blocks; cloudflared refuses to guess.
    #[error("it has more than one ARGO TUNNEL TOKEN block")]
    MultipleTokens,
    /// Not JSON, or not a JSON object.
    #[error("{0}")]
    Json(String),
    /// A required field is absent, null or empty.
    #[error("\"{0}\" is missing or empty")]
    MissingField(&'static str),
    /// A field that must be a string is some other JSON type.
    #[error("\"{0}\" must be a string")]
    NotAString(&'static str),
    /// A UUID field does not parse.
    #[error("\"{0}\" is not a valid UUID")]
    BadUuid(&'static str),
    /// A secret field does not decode or is too short.
    #[error("\"{field}\": {error}")]
    BadSecret {
        /// The JSON field name.
        field: &'static str,
        /// Why; never the secret itself.
        error: SecretError,
    },
    /// The token string is not standard padded base64.
    #[error("it is not valid standard base64 ({0})")]
    Base64(&'static str),
    /// A cert.pem from before named tunnels, which cloudflared also rejects.
    #[error("it has no \"accountID\" and must be refreshed: delete it and log in again")]
    NeedsRefresh,
    /// cloudflared's hint for the commonest mix-up: cert.pem given as the
    /// credentials file.
    #[error(
        "the tunnel credentials file should be the .json written by `tunnel create`, \
         but this is a .pem (probably cert.pem from `login`)"
    )]
    PemGivenAsCredentials,
}

/// Errors of this module. Each says which file (path, or kind when the data
/// did not come from a file) and what went wrong, in one line.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path does not exist or is a directory.
    #[error("{kind} {path} does not exist or is not a file")]
    NotFound {
        /// What was being looked for.
        kind: FileKind,
        /// Where.
        path: PathBuf,
    },
    /// Reading failed for another reason (permissions, I/O).
    #[error("cannot read {kind} {path}: {error}")]
    Read {
        /// What was being read.
        kind: FileKind,
        /// Where.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Creating or writing failed.
    #[error("cannot write {kind} {path}: {error}")]
    Write {
        /// What was being written.
        kind: FileKind,
        /// Where.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A write that must not overwrite found a file already there.
    #[error("{kind} {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// What was being written.
        kind: FileKind,
        /// Where.
        path: PathBuf,
    },
    /// A file's content is wrong.
    #[error("invalid {kind} {path}: {problem}")]
    InvalidFile {
        /// What was being read.
        kind: FileKind,
        /// Where.
        path: PathBuf,
        /// What is wrong.
        problem: Problem,
    },
    /// In-memory content (a token string, `TUNNEL_CRED_CONTENTS`, PEM text) is
    /// wrong.
    #[error("invalid {kind}: {problem}")]
    Invalid {
        /// What was being parsed.
        kind: FileKind,
        /// What is wrong.
        problem: Problem,
    },
    /// A default-location search found nothing.
    #[error("no {file_name} found in any of {}{}", list_dirs(.dirs), search_hint(*.kind))]
    NotInSearchDirs {
        /// What was being looked for.
        kind: FileKind,
        /// The file name tried in each directory.
        file_name: String,
        /// The directories tried, in order.
        dirs: Vec<PathBuf>,
    },
}

impl FilesError {
    /// Attaches a path to an in-memory parse error, for the `load` functions.
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            Self::Invalid { kind, problem } => Self::InvalidFile {
                kind,
                path: path.to_path_buf(),
                problem,
            },
            other => other,
        }
    }

    /// The content problem, if this error is about content.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Invalid { problem, .. } | Self::InvalidFile { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

fn list_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("[{}]", names.join(", "))
}

fn search_hint(kind: FileKind) -> &'static str {
    match kind {
        FileKind::OriginCert => {
            "; pass --origincert, set TUNNEL_ORIGIN_CERT, or set origincert in the config file"
        }
        FileKind::Credentials => {
            "; pass --credentials-file or set credentials-file in the config file"
        }
        FileKind::Token | FileKind::Config => "",
    }
}

/// Writes a flat JSON object of string fields exactly as Go's `json.Marshal`
/// does for a struct with those fields in that order: no spaces, and Go's
/// string escaping, which differs from serde_json by escaping `<`, `>`, `&`,
/// U+2028 and U+2029 (Go's default HTML-safe escaping).
pub(crate) fn go_json_object(fields: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_go_json_string(&mut out, key);
        out.push(':');
        push_go_json_string(&mut out, value);
    }
    out.push('}');
    out
}

fn push_go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Short forms since Go 1.22; cloudflared is built with Go 1.26.
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u00{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The entries of a JSON object in document order, read with Go's
/// `encoding/json` rules for struct fields: key matching is case-insensitive,
/// `null` leaves a field unset, a later duplicate wins, unknown keys are
/// ignored, and a value of the wrong type is an error.
#[derive(Debug)]
pub(crate) struct JsonFields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for JsonFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = JsonFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonFields, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(JsonFields(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl JsonFields {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Problem> {
        serde_json::from_slice(bytes).map_err(|e| {
            // Data errors quote the offending value (which may be a secret),
            // syntax errors only describe the position; keep only the latter.
            Problem::Json(match e.classify() {
                serde_json::error::Category::Data => "it is not a JSON object".to_string(),
                _ => format!("it is not valid JSON ({e})"),
            })
        })
    }

    /// The string value of `name`, `None` when absent or null.
    pub(crate) fn string(&self, name: &'static str) -> Result<Option<&str>, Problem> {
        let folded = go_fold(name);
        let mut found = None;
        for (key, value) in &self.0 {
            if go_fold(key) != folded {
                continue;
            }
            match value {
                Value::Null => {}
                Value::String(s) => found = Some(s.as_str()),
                _ => return Err(Problem::NotAString(name)),
            }
        }
        Ok(found)
    }

    /// Like [`Self::string`], but absent, null and empty are an error. Go
    /// would leave the field empty; every caller here treats that as unusable.
    pub(crate) fn required(&self, name: &'static str) -> Result<&str, Problem> {
        match self.string(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(Problem::MissingField(name)),
        }
    }
}

/// Go folds keys with `unicode.ToUpper(unicode.ToLower(r))`, so e.g. "ACCOUNTTAG"
/// matches `AccountTag`.
fn go_fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
        .collect()
}

/// Reads a whole file, mapping "absent or a directory" to [`FilesError::NotFound`]
/// the way cloudflared's `fileExists` (stat, not a directory) does.
pub(crate) fn read_file(kind: FileKind, path: &Path) -> Result<Vec<u8>, FilesError> {
    let not_found = || FilesError::NotFound {
        kind,
        path: path.to_path_buf(),
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(not_found()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        _ => {}
    }
    fs::read(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => not_found(),
        _ => FilesError::Read {
            kind,
            path: path.to_path_buf(),
            error,
        },
    })
}

/// How [`write_file`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overwrite {
    /// Fail with [`FilesError::AlreadyExists`].
    Refuse,
    /// Truncate and replace the content.
    Replace,
}

/// Writes `data` to `path` with permission bits `mode` (Unix).
///
/// The mode is set explicitly after opening, so the result does not depend on
/// the umask and a pre-existing file with looser bits is tightened.
pub(crate) fn write_file(
    kind: FileKind,
    path: &Path,
    data: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), FilesError> {
    let write_err = |error: io::Error| FilesError::Write {
        kind,
        path: path.to_path_buf(),
        error,
    };
    let mut options = OpenOptions::new();
    options.write(true);
    match overwrite {
        // O_EXCL: unlike cloudflared's stat-then-write, there is no window in
        // which another process can create the file, and a dangling symlink is
        // not followed.
        Overwrite::Refuse => options.create_new(true),
        Overwrite::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(|error| {
        if error.kind() == io::ErrorKind::AlreadyExists {
            FilesError::AlreadyExists {
                kind,
                path: path.to_path_buf(),
            }
        } else {
            write_err(error)
        }
    })?;
    let result = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        file.write_all(data)?;
        file.sync_all()
    })();
    if let Err(error) = result {
        if overwrite == Overwrite::Refuse {
            // We created it, so a half-written file would only block a retry.
            let _ = fs::remove_file(path);
        }
        return Err(write_err(error));
    }
    Ok(())
}

/// Replaces `path` with `data` atomically and durably, with permission bits `mode`: a crash
/// leaves the old file or the new one, never a torn one, and a reader never sees a partial
/// write. The temporary file is made fresh (`O_EXCL`) with `mode`, so a leftover with looser
/// bits cannot be reused, and the directory is synced so that the rename itself survives a
/// power loss. Used for the control plane's token files and the edge's keys and snapshot.
pub(crate) fn replace_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data).and_then(|()| f.sync_all())?;
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// What the credentials-file and token tests share: one tunnel's values, and the content
/// problem a rejected parse reports.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{FilesError, Problem};

    pub const ACCOUNT: &str = "0000d4d14e84bd4ae5a6a02e0000ac63";
    pub const SECRET_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    pub const ID: &str = "df5ed608-b8b4-4109-89f3-9f2cf199df64";

    /// The problem behind a parse that must fail.
    pub fn problem_of<T: std::fmt::Debug>(parsed: Result<T, FilesError>) -> Problem {
        parsed.unwrap_err().problem().cloned().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_object_matches_go_marshal() {
        assert_eq!(go_json_object(&[]), "{}");
        assert_eq!(
            go_json_object(&[("a", "x"), ("b", "")]),
            r#"{"a":"x","b":""}"#
        );
        // Go's HTML-safe escaping plus its short and \u00XX control escapes.
        assert_eq!(
            go_json_object(&[(
                "k",
                "<a&b>\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é\u{2028}\u{2029}"
            )]),
            "{\"k\":\"\\u003ca\\u0026b\\u003e\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}é\\u2028\\u2029\"}"
        );
    }

    #[test]
    fn json_fields_follow_go_rules() {
        let f = JsonFields::parse(
            br#"{"accounttag":"old","Unknown":1,"ACCOUNTTAG":"new","Endpoint":null,"x":{"y":[1]}}"#,
        )
        .unwrap();
        assert_eq!(f.string("AccountTag").unwrap(), Some("new"));
        assert_eq!(f.string("Endpoint").unwrap(), None);
        assert_eq!(f.string("Missing").unwrap(), None);
        assert_eq!(
            f.required("Endpoint"),
            Err(Problem::MissingField("Endpoint"))
        );
        let f = JsonFields::parse(br#"{"a":"x","A":null}"#).unwrap();
        assert_eq!(
            f.string("a").unwrap(),
            Some("x"),
            "null leaves the field unset"
        );
        let f = JsonFields::parse(br#"{"a":""}"#).unwrap();
        assert_eq!(f.required("a"), Err(Problem::MissingField("a")));
        let f = JsonFields::parse(br#"{"a":5}"#).unwrap();
        assert_eq!(f.string("a"), Err(Problem::NotAString("a")));
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let err = JsonFields::parse(br#""top-secret-value""#).unwrap_err();
        assert_eq!(err, Problem::Json("it is not a JSON object".into()));
        let err = JsonFields::parse(br#"{"a":"top-secret-value""#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("it is not valid JSON ("), "{msg}");
        assert!(!msg.contains("top-secret-value"), "{msg}");
        assert!(JsonFields::parse(b"").is_err());
    }

    #[test]
    fn error_messages_are_one_line_and_name_the_file() {
        let e = FilesError::NotInSearchDirs {
            kind: FileKind::OriginCert,
            file_name: "cert.pem".into(),
            dirs: vec![PathBuf::from("/a"), PathBuf::from("/b")],
        };
        let msg = e.to_string();
        assert!(msg.starts_with("no cert.pem found in any of [/a, /b]; pass --origincert"));
        let e = FilesError::Invalid {
            kind: FileKind::Token,
            problem: Problem::MissingField("a"),
        }
        .at(Path::new("/x/t"));
        assert_eq!(
            e.to_string(),
            "invalid tunnel token /x/t: \"a\" is missing or empty"
        );
        assert_eq!(e.problem(), Some(&Problem::MissingField("a")));
        assert!(!msg.contains('\n'));
    }
}
