use super::*;

fn ticking_clock() -> Clock {
    let mut t = time::macros::datetime!(2026-01-02 15:04:05.000 UTC);
    Box::new(move || {
        t += time::Duration::milliseconds(1);
        t
    })
}

#[test]
fn rotates_by_size_keeps_five_backups_with_lumberjack_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RotatingFile::with_limits(dir.path(), 100, MAX_BACKUPS, ticking_clock()).unwrap();
    let line = [b'x'; 39];
    // Two 40-byte lines fit in 100 bytes; the third rotates. 20 lines make 9 rotations.
    for _ in 0..20 {
        w.write_all(&line).unwrap();
        w.write_all(b"\n").unwrap_or(());
    }
    let mut names: Vec<String> = backups(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("cloudflared-2026-01-02T15-04-05."))
    );
    assert_eq!(
        names.last().unwrap().len(),
        "cloudflared-2026-01-02T15-04-05.000.log".len()
    );
    let live = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    assert!(live <= 100, "live file {live} bytes");
    for name in &names {
        assert!(std::fs::metadata(dir.path().join(name)).unwrap().len() <= 100);
    }
}

#[test]
fn logfile_is_created_0644_with_its_parent_and_appended() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cloudflared.log");
    open_append(&path).unwrap().write_all(b"one\n").unwrap();
    open_append(&path).unwrap().write_all(b"two\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o022, 0o644 & !0o022);
}
