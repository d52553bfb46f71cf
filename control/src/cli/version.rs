//! `ringway version`, `--version` and `update`, in cloudflared's formats.

/// The version number alone (`version --short`).
pub fn short() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// cloudflared's `cloudflared version X (built DATE)` line, with ringway's name. The build
/// description is the target triple's parts, since a reproducible build has no date.
pub fn long() -> String {
    format!(
        "ringway version {} (built for {}_{})",
        short(),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// What `update` prints: a self-hosted build is updated by whoever installed it.
pub const UPDATE_MESSAGE: &str = "ringway does not update itself: update it the way you installed it (package manager, container image or a new build)";
