//! `ringway service install [TOKEN]` / `service uninstall` on the real binary, under a temporary
//! `--root`: the token file (0600), the unit `cloudflared.service`, and the one-line errors.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use ringway_tests::process::ringway_bin;

fn ringway(args: &[&str]) -> Output {
    Command::new(ringway_bin())
        .args(args)
        .env_remove("RINGWAY_SERVICE_ROOT")
        .output()
        .expect("run ringway")
}

#[test]
fn service_install_with_a_token_then_uninstall() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = ringway(&["service", "install", "eyJhIjoiYWNjdCJ9", "--root", r]);
    assert!(out.status.success(), "install: {out:?}");
    let token = root.path().join("etc/cloudflared/token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "eyJhIjoiYWNjdCJ9");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let unit_path = root.path().join("etc/systemd/system/cloudflared.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains("--no-autoupdate tunnel run --token-file /etc/cloudflared/token\n"),
        "{unit}"
    );
    // Outside a live `/`, it prints the systemctl steps instead of running them.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl enable --now cloudflared.service"),
        "{stdout}"
    );
    // The token never reaches the output.
    assert!(
        !stdout.contains("eyJhIjoi") && !String::from_utf8_lossy(&out.stderr).contains("eyJhIjoi")
    );

    let again = ringway(&["service", "install", "x", "--root", r]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");

    let out = ringway(&["service", "uninstall", "--root", r]);
    assert!(out.status.success(), "uninstall: {out:?}");
    assert!(!unit_path.exists() && !token.exists());
}

#[test]
fn service_install_without_token_or_config_is_one_line_error() {
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(ringway_bin())
        .args([
            "service",
            "install",
            "--root",
            root.path().to_str().unwrap(),
        ])
        .env("HOME", home.path())
        .env_remove("TUNNEL_ORIGIN_CERT")
        .current_dir(home.path())
        .output()
        .expect("run ringway");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no token given and no config.yml found"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
}
