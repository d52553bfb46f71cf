//! `DIR/cloudflared.log` rotated by size, with lumberjack's backup names, so tools written for
//! cloudflared's log directory find the same files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::macros::format_description;

/// lumberjack's MaxSize (1 MB) as cloudflared configures it.
pub const MAX_SIZE: u64 = 1024 * 1024;
/// cloudflared's MaxBackups.
pub const MAX_BACKUPS: usize = 5;
/// The live file's name inside the log directory.
pub const FILE_NAME: &str = "cloudflared.log";

/// Opens `path` for appending (created 0644, parent directories created).
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

/// The clock that names backups; a parameter so tests can make every rotation distinct.
pub type Clock = Box<dyn FnMut() -> OffsetDateTime + Send>;

/// An appending writer that moves the file aside once the next write would pass `max_size`,
/// keeping the newest `max_backups` backups.
pub struct RotatingFile {
    dir: PathBuf,
    max_size: u64,
    max_backups: usize,
    file: File,
    size: u64,
    now: Clock,
}

impl RotatingFile {
    /// `DIR/cloudflared.log` with cloudflared's limits.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::with_limits(
            dir,
            MAX_SIZE,
            MAX_BACKUPS,
            Box::new(OffsetDateTime::now_utc),
        )
    }

    pub fn with_limits(
        dir: &Path,
        max_size: u64,
        max_backups: usize,
        now: Clock,
    ) -> io::Result<Self> {
        let file = open_append(&dir.join(FILE_NAME))?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_owned(),
            max_size,
            max_backups,
            file,
            size,
            now,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let stamp = (self.now)()
            .to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[year]-[month]-[day]T[hour]-[minute]-[second].[subsecond digits:3]"
            ))
            .map_err(io::Error::other)?;
        let live = self.dir.join(FILE_NAME);
        std::fs::rename(&live, self.dir.join(format!("cloudflared-{stamp}.log")))?;
        self.file = open_append(&live)?;
        self.size = 0;
        self.prune()
    }

    /// Deletes the oldest backups beyond `max_backups`. The names sort by time.
    fn prune(&self) -> io::Result<()> {
        let mut backups = backups(&self.dir)?;
        backups.sort();
        let excess = backups.len().saturating_sub(self.max_backups);
        for old in &backups[..excess] {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// The backups in `dir`: `cloudflared-<timestamp>.log`, not the live file.
pub fn backups(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("cloudflared-") && name.ends_with(".log") {
            found.push(path);
        }
    }
    Ok(found)
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFile")
            .field("dir", &self.dir)
            .field("max_size", &self.max_size)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A line is never split across files: the subscriber writes one event per call.
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod tests;
