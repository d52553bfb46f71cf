//! Child processes for the benches: spawning with logs in files, waiting for "ready" lines,
//! and a guard that stops every child when the bench ends, fails or is interrupted.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long any process gets to print its ready line or start answering.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT/SIGTERM into a flag that every wait loop polls, so Ctrl-C unwinds through the
/// guards (children stopped, temp dir removed) instead of killing the bench on the spot.
fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// A bench binary's `main`: with the signal handlers installed, runs `run` and prints the
/// line it returns; on error prints `<bench>: error: <cause chain>` and exits 1.
pub fn run_main(bench: &str, run: impl FnOnce() -> Result<String>) {
    install_signal_handlers();
    match run() {
        Ok(last) => println!("{last}"),
        Err(e) => {
            eprintln!("{bench}: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Fails once Ctrl-C (or SIGTERM) arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps in small steps so an interrupt is noticed quickly.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// One started child: its name for messages and where its output goes.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its stderr (or stdout when stderr is empty), for error messages.
    pub fn tail(&self) -> String {
        let err = log_tail(&self.stderr, 6);
        if err.is_empty() {
            log_tail(&self.stdout, 6)
        } else {
            err
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> Result<String> {
        let stdout = self.stdout.clone();
        self.poll(
            &format!("printing '{prefix}'"),
            Duration::from_millis(50),
            || {
                let text = std::fs::read_to_string(&stdout).unwrap_or_default();
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(|rest| rest.trim().to_string())
            },
        )
    }

    /// Polls `ok` until it holds; fails with the log tail if the process dies or time runs out.
    pub fn wait_until(&mut self, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
        self.poll(what, Duration::from_millis(100), || ok().then_some(()))
    }

    /// Calls `found` every `interval` until it gives a value; fails with the log tail if the
    /// process exits first or [`READY_LIMIT`] passes.
    fn poll<T>(
        &mut self,
        what: &str,
        interval: Duration,
        mut found: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            check_interrupted()?;
            if let Some(value) = found() {
                return Ok(value);
            }
            if let Some(st) = self.exited() {
                bail!(
                    "{} exited ({st}) before {what}; log {}:\n{}",
                    self.name,
                    self.stderr.display(),
                    self.tail()
                );
            }
            if start.elapsed() > READY_LIMIT {
                bail!(
                    "{what}: not within {}s; {} log {}:\n{}",
                    READY_LIMIT.as_secs(),
                    self.name,
                    self.stderr.display(),
                    self.tail()
                );
            }
            std::thread::sleep(interval);
        }
    }
}

/// Every long-lived child of a bench run. Dropping it stops them in reverse start order.
#[derive(Debug)]
pub struct Procs {
    logs: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    pub fn new(logs: &Path) -> Result<Procs> {
        std::fs::create_dir_all(logs).with_context(|| format!("create {}", logs.display()))?;
        Ok(Procs {
            logs: logs.to_path_buf(),
            procs: Vec::new(),
        })
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// Starts `cmd` with stdout in `LOGS/name.out` and stderr in `LOGS/name.log`; returns its
    /// index for [`Procs::get`].
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<usize> {
        let p = spawn_logged(&self.logs, name, &mut cmd)?;
        self.procs.push(p);
        Ok(self.procs.len() - 1)
    }

    pub fn get(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// Fails naming the first child that died, so a crash mid-bench is not mistaken for a
    /// slow scenario.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(st) = p.exited() {
                bail!(
                    "{} exited ({st}); log {}:\n{}",
                    p.name,
                    p.stderr.display(),
                    p.tail()
                );
            }
        }
        Ok(())
    }

    pub fn stop_all(&mut self) {
        for p in self.procs.iter().rev() {
            // SAFETY: plain kill(2) on a child we started and have not reaped yet.
            unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in self.procs.iter_mut().rev() {
            while p.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if p.exited().is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        self.procs.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Spawns with output in `dir/name.{out,log}` and a parent-death signal, so that even a
/// bench killed with SIGKILL leaves no tunnel or nginx behind.
pub fn spawn_logged(dir: &Path, name: &str, cmd: &mut Command) -> Result<Proc> {
    let stdout = dir.join(format!("{name}.out"));
    let stderr = dir.join(format!("{name}.log"));
    let out = File::create(&stdout).with_context(|| format!("create {}", stdout.display()))?;
    let err = File::create(&stderr).with_context(|| format!("create {}", stderr.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name} ({program})"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
        stdout,
        stderr,
    })
}

/// The last `n` non-empty lines of a file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loopback TCP port that was free a moment ago (for tools that cannot bind port 0 and
/// report it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

/// A one-shot HTTP/1.1 request (Connection: close) for readiness checks; returns the status
/// and the raw body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let host = host.map(str::to_string).unwrap_or_else(|| addr.to_string());
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    Ok((status, resp[body_at..].to_vec()))
}

/// True when `GET path` answers 200 (through `host` when given).
pub fn get_ok(addr: SocketAddr, path: &str, host: Option<&str>) -> bool {
    matches!(http_request(addr, "GET", path, host, b""), Ok((200, _)))
}
