//! CPU time and peak memory of a running process, from `/proc`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Clock ticks per second of the `/proc/PID/stat` times.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pid` (all its threads), in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')', index 0 is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clk_tck())
}

/// CPU seconds (user + system) of all children reaped so far: the delta around a waited-for
/// child is that child's own CPU, since the long-lived children are reaped only at the end.
pub fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage only fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resets the peak-RSS mark (`VmHWM`) to the current RSS; false when the kernel refused.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `(VmHWM, VmRSS)` in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Ok((field("VmHWM:").unwrap_or(0), field("VmRSS:").unwrap_or(0)))
}

/// What one process did during one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcUsage {
    /// `edge`, `connector`, `rathole-server`, `rathole-client` or `origin`.
    pub role: String,
    pub pid: u32,
    /// CPU seconds within loadgen's measured window (after warm-up).
    pub cpu_s: f64,
    /// Length of that window as sampled here, seconds.
    pub window_s: f64,
    /// CPU seconds over the whole loadgen run, warm-up and drain included.
    pub cpu_total_s: f64,
    /// Peak RSS during the scenario (KiB), or the lifetime peak when `peak_rss_reset` is false.
    pub peak_rss_kib: u64,
    pub peak_rss_reset: bool,
    pub rss_end_kib: u64,
    /// CPU per completed request, µs.
    pub us_per_req: Option<f64>,
    /// CPU per MiB moved (received for downloads, sent for uploads), ms.
    pub ms_per_mib: Option<f64>,
    /// Share of one core over the window.
    pub cores: f64,
}

/// Samples for one process: taken at loadgen start, window start, window end, loadgen exit.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub role: String,
    pub pid: u32,
    reset: bool,
    start: f64,
    win_start: Option<(f64, std::time::Instant)>,
    win_end: Option<(f64, std::time::Instant)>,
}

impl Tracker {
    /// Resets the peak mark and takes the first sample.
    pub fn begin(role: &str, pid: u32) -> Result<Tracker> {
        let reset = reset_peak_rss(pid);
        Ok(Tracker {
            role: role.into(),
            pid,
            reset,
            start: cpu_secs(pid)?,
            win_start: None,
            win_end: None,
        })
    }

    pub fn window_start(&mut self) -> Result<()> {
        self.win_start = Some((cpu_secs(self.pid)?, std::time::Instant::now()));
        Ok(())
    }

    pub fn window_end(&mut self) -> Result<()> {
        if self.win_start.is_some() {
            self.win_end = Some((cpu_secs(self.pid)?, std::time::Instant::now()));
        }
        Ok(())
    }

    /// The final sample; `rps` and `mb_per_s` (10^6 B/s) are loadgen's for the same window.
    pub fn finish(&self, rps: f64, mb_per_s: f64) -> Result<ProcUsage> {
        let end = cpu_secs(self.pid)?;
        let (peak, rss) = rss_kib(self.pid)?;
        let (cpu_s, window_s) = match (self.win_start, self.win_end) {
            (Some((c0, t0)), Some((c1, t1))) => (c1 - c0, (t1 - t0).as_secs_f64()),
            _ => (0.0, 0.0),
        };
        let per_s = if window_s > 0.0 {
            cpu_s / window_s
        } else {
            0.0
        };
        let mib_per_s = mb_per_s * 1e6 / (1u64 << 20) as f64;
        Ok(ProcUsage {
            role: self.role.clone(),
            pid: self.pid,
            cpu_s,
            window_s,
            cpu_total_s: end - self.start,
            peak_rss_kib: peak,
            peak_rss_reset: self.reset,
            rss_end_kib: rss,
            // Rates over the same window, so loadgen's exact window edges do not matter.
            us_per_req: (rps > 0.0 && window_s > 0.0).then(|| per_s * 1e6 / rps),
            ms_per_mib: (mib_per_s > 0.0 && window_s > 0.0).then(|| per_s * 1e3 / mib_per_s),
            cores: per_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measurable() {
        let pid = std::process::id();
        let c0 = cpu_secs(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(pid).unwrap() >= c0);
        let (hwm, rss) = rss_kib(pid).unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
