//! Where cloudflared looks for its files when no path is given.
//!
//! The directories and their order are cloudflared's
//! (`config.DefaultConfigSearchDirectories`), so an existing install keeps
//! working unchanged. Every function takes the directory list as a slice so
//! callers (and tests) can search elsewhere; [`default_search_dirs`] gives the
//! real list.

use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{FileKind, FilesError};

/// Config file names tried in each directory, in this order.
pub const CONFIG_FILE_NAMES: [&str; 2] = ["config.yml", "config.yaml"];

/// cert.pem's default file name (`credentials.DefaultCredentialFile`).
pub const ORIGIN_CERT_FILE_NAME: &str = "cert.pem";

/// Home-relative directories first (`~/.cloudflare-warp` and
/// `~/cloudflare-warp` are kept from older releases), then the system ones.
const USER_DIRS: [&str; 3] = [".cloudflared", ".cloudflare-warp", "cloudflare-warp"];
const SYSTEM_DIRS: [&str; 2] = ["/etc/cloudflared", "/usr/local/etc/cloudflared"];

/// `~/.cloudflared`, `~/.cloudflare-warp`, `~/cloudflare-warp`,
/// `/etc/cloudflared`, `/usr/local/etc/cloudflared`, with `~` taken from
/// `$HOME`. Without a usable `$HOME` the `~` entries are left out, which is
/// what cloudflared's searches amount to when it cannot expand them.
pub fn default_search_dirs() -> Vec<PathBuf> {
    search_dirs_for_home(home_dir().as_deref())
}

/// [`default_search_dirs`] for a given home directory.
fn search_dirs_for_home(home: Option<&Path>) -> Vec<PathBuf> {
    let user = home
        .into_iter()
        .flat_map(|h| USER_DIRS.iter().map(move |d| h.join(d)));
    user.chain(SYSTEM_DIRS.iter().map(PathBuf::from)).collect()
}

/// `$HOME`, when set and not empty.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expands a leading `~` or `~/` from `$HOME`, as cloudflared does (via
/// go-homedir) for `--origincert` and `--credentials-file`. `~user` forms and
/// paths without `~` are returned unchanged.
pub fn expand_home(path: &Path) -> PathBuf {
    expand_home_with(path, home_dir().as_deref())
}

fn expand_home_with(path: &Path, home: Option<&Path>) -> PathBuf {
    let Some(home) = home else {
        return path.to_path_buf();
    };
    match path.strip_prefix("~") {
        Ok(rest) if rest.as_os_str().is_empty() => home.to_path_buf(),
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// cloudflared's `fileExists`: stat succeeds (following symlinks) and the
/// target is not a directory.
fn is_present_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_dir())
}

/// The first `config.yml`, then `config.yaml`, in each directory in order:
/// `~/.cloudflared/config.yaml` wins over `/etc/cloudflared/config.yml`.
pub fn find_config_file(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|dir| CONFIG_FILE_NAMES.iter().map(move |name| dir.join(name)))
        .find(|path| is_present_file(path))
}

/// The origin certificate to use: `explicit` (after `~` expansion) when given,
/// which must then exist; otherwise the first `cert.pem` in `dirs`.
///
/// `TUNNEL_ORIGIN_CERT` and the config file's `origincert` arrive as
/// `explicit` through the CLI layer.
pub fn find_origin_cert(explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf, FilesError> {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        let path = expand_home(path);
        return if is_present_file(&path) {
            Ok(path)
        } else {
            Err(FilesError::NotFound {
                kind: FileKind::OriginCert,
                path,
            })
        };
    }
    dirs.iter()
        .map(|dir| dir.join(ORIGIN_CERT_FILE_NAME))
        .find(|path| is_present_file(path))
        .ok_or_else(|| FilesError::NotInSearchDirs {
            kind: FileKind::OriginCert,
            file_name: ORIGIN_CERT_FILE_NAME.to_string(),
            dirs: dirs.to_vec(),
        })
}

/// `<UUID>.json`, lower-case and hyphenated as Go's `uuid.UUID` prints.
fn credentials_file_name(tunnel_id: Uuid) -> String {
    format!("{}.json", tunnel_id.hyphenated())
}

/// Where `tunnel create` puts the credentials: next to cert.pem.
pub fn credentials_path_next_to(cert_path: &Path, tunnel_id: Uuid) -> PathBuf {
    let dir = cert_path.parent().unwrap_or_else(|| Path::new(""));
    dir.join(credentials_file_name(tunnel_id))
}

/// The directories cloudflared searches for `<UUID>.json`: the origin
/// certificate's directory first (when a cert path is known, given or found),
/// then `dirs`.
pub fn credentials_search_dirs(origin_cert: Option<&Path>, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let cert_dir = origin_cert
        .filter(|p| is_present_file(p))
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    cert_dir.into_iter().chain(dirs.iter().cloned()).collect()
}

/// The first `<UUID>.json` in `dirs`. To search like cloudflared's
/// `tunnel run`, pass [`credentials_search_dirs`].
pub fn find_credentials(tunnel_id: Uuid, dirs: &[PathBuf]) -> Result<PathBuf, FilesError> {
    let name = credentials_file_name(tunnel_id);
    dirs.iter()
        .map(|dir| dir.join(&name))
        .find(|path| is_present_file(path))
        .ok_or(FilesError::NotInSearchDirs {
            kind: FileKind::Credentials,
            file_name: name,
            dirs: dirs.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "x").unwrap();
    }

    #[test]
    fn default_dirs_in_cloudflared_order() {
        let dirs = search_dirs_for_home(Some(Path::new("/home/u")));
        let expected: Vec<PathBuf> = [
            "/home/u/.cloudflared",
            "/home/u/.cloudflare-warp",
            "/home/u/cloudflare-warp",
            "/etc/cloudflared",
            "/usr/local/etc/cloudflared",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, expected);
        assert_eq!(search_dirs_for_home(None), expected[3..].to_vec());
        // The real list has the same tail whatever $HOME is.
        assert!(default_search_dirs().ends_with(&expected[3..]));
    }

    #[test]
    fn expands_tilde() {
        let home = Some(Path::new("/home/u"));
        assert_eq!(
            expand_home_with(Path::new("~"), home),
            PathBuf::from("/home/u")
        );
        assert_eq!(
            expand_home_with(Path::new("~/.cloudflared/cert.pem"), home),
            PathBuf::from("/home/u/.cloudflared/cert.pem")
        );
        assert_eq!(
            expand_home_with(Path::new("~bob/x"), home),
            PathBuf::from("~bob/x")
        );
        assert_eq!(
            expand_home_with(Path::new("/a/~/b"), home),
            PathBuf::from("/a/~/b")
        );
        assert_eq!(
            expand_home_with(Path::new("~/x"), None),
            PathBuf::from("~/x")
        );
    }

    #[test]
    fn config_yml_before_yaml_and_dir_order_first() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let dirs = vec![a.clone(), b.clone()];
        assert_eq!(find_config_file(&dirs), None);
        touch(&b.join("config.yml"));
        assert_eq!(find_config_file(&dirs), Some(b.join("config.yml")));
        touch(&a.join("config.yaml"));
        assert_eq!(find_config_file(&dirs), Some(a.join("config.yaml")));
        touch(&a.join("config.yml"));
        assert_eq!(find_config_file(&dirs), Some(a.join("config.yml")));
    }

    #[test]
    fn directories_are_not_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("config.yml")).unwrap();
        fs::create_dir_all(tmp.path().join("cert.pem")).unwrap();
        let dirs = vec![tmp.path().to_path_buf()];
        assert_eq!(find_config_file(&dirs), None);
        assert!(find_origin_cert(None, &dirs).is_err());
    }

    #[test]
    fn origin_cert_explicit_wins_then_search() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let dirs = vec![a.clone(), b.clone()];

        let err = find_origin_cert(None, &dirs).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("no cert.pem found in any of ["), "{msg}");
        assert!(msg.contains(&a.display().to_string()) && msg.contains("--origincert"));

        touch(&b.join("cert.pem"));
        assert_eq!(find_origin_cert(None, &dirs).unwrap(), b.join("cert.pem"));
        touch(&a.join("cert.pem"));
        assert_eq!(find_origin_cert(None, &dirs).unwrap(), a.join("cert.pem"));

        let explicit = tmp.path().join("elsewhere.pem");
        let err = find_origin_cert(Some(&explicit), &dirs).unwrap_err();
        assert!(matches!(err, FilesError::NotFound { .. }));
        assert!(err.to_string().contains(&explicit.display().to_string()));
        touch(&explicit);
        assert_eq!(find_origin_cert(Some(&explicit), &dirs).unwrap(), explicit);
        // An empty flag value means "not given", as in cloudflared.
        assert_eq!(
            find_origin_cert(Some(Path::new("")), &dirs).unwrap(),
            a.join("cert.pem")
        );
    }

    #[test]
    fn credentials_paths() {
        let id = Uuid::parse_str("DF5ED608-B8B4-4109-89F3-9F2CF199DF64").unwrap();
        assert_eq!(
            credentials_path_next_to(Path::new("/home/u/.cloudflared/cert.pem"), id),
            PathBuf::from("/home/u/.cloudflared/df5ed608-b8b4-4109-89f3-9f2cf199df64.json")
        );
        assert_eq!(
            credentials_path_next_to(Path::new("cert.pem"), id),
            PathBuf::from("df5ed608-b8b4-4109-89f3-9f2cf199df64.json")
        );
    }

    #[test]
    fn find_credentials_searches_cert_dir_first() {
        let tmp = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let (certdir, a) = (tmp.path().join("certdir"), tmp.path().join("a"));
        let cert = certdir.join("cert.pem");
        let dirs = vec![a.clone()];

        let err = find_credentials(id, &dirs).unwrap_err();
        assert!(
            err.to_string().contains(&credentials_file_name(id)),
            "{err}"
        );

        touch(&a.join(credentials_file_name(id)));
        // A cert path that does not exist adds nothing.
        assert_eq!(credentials_search_dirs(Some(&cert), &dirs), dirs);
        touch(&cert);
        let search = credentials_search_dirs(Some(&cert), &dirs);
        assert_eq!(search, vec![certdir.clone(), a.clone()]);
        assert_eq!(
            find_credentials(id, &search).unwrap(),
            a.join(credentials_file_name(id))
        );
        touch(&certdir.join(credentials_file_name(id)));
        assert_eq!(
            find_credentials(id, &search).unwrap(),
            certdir.join(credentials_file_name(id))
        );
    }
}
