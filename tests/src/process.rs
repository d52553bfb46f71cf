//! Processes and waits: the `ringway` binary (built once), child processes killed on drop
//! ([`Proc`], and [`LoggedProc`] whose output an [`OutputLog`] collects so a failing test
//! prints what each process said), free loopback ports, and [`wait_for`].
//!
//! Waits use deadlines only as failure limits: a test polls until the condition holds and fails
//! if the deadline passes first, so a slow machine makes a test slower, never red.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `ringway` binary of this workspace, built once per test process.
pub fn ringway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> → target/<profile>/ringway
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let bin = profile_dir.join("ringway");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "control", "--bin", "ringway"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of ringway failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A child process that is killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }
    /// Waits for exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, failing with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A URL on loopback where nothing listens (a port that was free a moment ago).
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Reads lines from `r` on a thread, so a test can wait for one with a failure limit.
pub fn line_reader(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The stdout and stderr lines of a child process, collected on reader threads so a test can
/// wait for a line with a failure limit and print everything the process said when it fails.
#[derive(Debug, Clone, Default)]
pub struct OutputLog {
    inner: Arc<Mutex<LogLines>>,
}

#[derive(Debug, Default)]
struct LogLines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Reader threads that reached EOF (two once both pipes closed).
    closed: u8,
}

impl OutputLog {
    /// Starts collecting the piped stdout and stderr of `child`.
    pub fn capture(child: &mut Child) -> Self {
        let log = Self::default();
        if let Some(out) = child.stdout.take() {
            log.collect(out, true);
        } else {
            log.inner.lock().expect("log lock").closed += 1;
        }
        if let Some(err) = child.stderr.take() {
            log.collect(err, false);
        } else {
            log.inner.lock().expect("log lock").closed += 1;
        }
        log
    }

    fn collect(&self, r: impl Read + Send + 'static, is_stdout: bool) {
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        let mut g = inner.lock().expect("log lock");
                        if is_stdout {
                            g.stdout.push(line);
                        } else {
                            g.stderr.push(line);
                        }
                    }
                }
            }
            inner.lock().expect("log lock").closed += 1;
        });
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").stdout.clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").stderr.clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout_lines().join("\n")
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Whether both pipes reached EOF (everything the process wrote is here).
    pub fn closed(&self) -> bool {
        self.inner.lock().expect("log lock").closed >= 2
    }

    /// Everything so far, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.stdout(),
            self.stderr()
        )
    }
}

/// A child process with its output collected; killed (SIGKILL) and reaped on drop. When it is
/// dropped by a failing test, its output goes to the test's stderr (shown with the failure), so
/// every process of a failed test tells its side.
#[derive(Debug)]
pub struct LoggedProc {
    pub name: String,
    pub proc: Proc,
    pub log: OutputLog,
    /// Set once a failure message already carried the output.
    dumped: AtomicBool,
}

impl Drop for LoggedProc {
    fn drop(&mut self) {
        self.proc.kill9();
        if std::thread::panicking() && !self.dumped.load(Ordering::Relaxed) {
            let drained = Instant::now() + Duration::from_secs(2);
            while !self.log.closed() && Instant::now() < drained {
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "==== output of {} (pid {}) ====\n{}",
                self.name,
                self.proc.pid(),
                self.log.dump()
            );
        }
    }
}

impl LoggedProc {
    /// Spawns `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = OutputLog::capture(&mut child);
        Self {
            name: name.to_string(),
            proc: Proc { child },
            log,
            dumped: AtomicBool::new(false),
        }
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.child.try_wait().expect("try_wait")
    }

    /// Panics with the process output.
    pub fn fail(&self, why: &str) -> ! {
        self.dumped.store(true, Ordering::Relaxed);
        panic!("{} {why}\n{}", self.name, self.log.dump())
    }

    /// Polls `f` over the collected output until it returns `Some`. Fails with the output after
    /// `limit`, or as soon as the process has exited and its output is complete.
    pub fn wait_output<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&OutputLog) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f(&self.log) {
                return v;
            }
            if let Some(status) = self.exited() {
                // Let the readers drain what the process wrote before it died.
                let drained = Instant::now() + Duration::from_secs(5);
                while !self.log.closed() && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Some(v) = f(&self.log) {
                    return v;
                }
                self.fail(&format!("exited ({status}) while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {limit:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a stdout line for which `f` returns `Some`.
    pub fn wait_stdout<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        self.wait_output(what, limit, |log| {
            log.stdout_lines().iter().find_map(|l| f(l))
        })
    }

    /// Waits for exit, failing with the output after `limit`; returns the status once the
    /// output is complete.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let drained = Instant::now() + Duration::from_secs(5);
        while !self.log.closed() && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, drop the socket).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
