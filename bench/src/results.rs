//! Where the benches write their results: one folder per UTC date.

use std::path::{Path, PathBuf};

/// `<bench_dir>/results/<UTC date, YYYY-MM-DD>/`, where `bench_dir` is this crate's folder
/// (`bench/` in the workspace).
fn todays_dir(bench_dir: &Path) -> PathBuf {
    let date = time::OffsetDateTime::now_utc().date();
    bench_dir.join("results").join(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month() as u8,
        date.day()
    ))
}

/// [`todays_dir`] of the bench crate this binary was built from.
pub fn todays_dir_here() -> PathBuf {
    todays_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Now, in UTC, as `YYYY-MM-DDTHH:MM:SSZ`: when a run started, for its report.
pub fn utc_timestamp() -> String {
    let d = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}
