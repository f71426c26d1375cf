//! Tools as child processes: stdout and stderr collected line by line, signals, exit codes.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::lock;

/// Generous, because a loaded 2-core machine can be slow to start a process.
pub const STARTUP: Duration = Duration::from_secs(15);
/// How long a tool may take to exit after SIGTERM.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The environment variables that carry keys; cleared for every child so that a developer's
/// own settings never leak into a test.
const KEY_VARS: [&str; 3] = ["MPTUNNEL_KEY", "MPTUNNEL_ENCRYPT", "MPTUNNELENCRYPT"];

type Lines = Arc<Mutex<Vec<String>>>;

/// A running tool with its output collected line by line; killed and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl Read + Send + 'static, sink: Lines) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lock(&sink).push(line);
        }
    })
}

impl Proc {
    pub fn spawn(name: &str, bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(name, bin, args, &[])
    }

    /// Same with `env` added to an environment cleared of the key variables.
    pub fn spawn_env(name: &str, bin: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for var in KEY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({bin} {args:?}): {e}"));
        let stdout = Lines::default();
        let stderr = Lines::default();
        let readers = vec![
            collect(
                child.stdout.take().expect("stdout pipe"),
                Arc::clone(&stdout),
            ),
            collect(
                child.stderr.take().expect("stderr pipe"),
                Arc::clone(&stderr),
            ),
        ];
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Its stderr so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Its stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Its stderr lines at level warn (`PROG: warn: ...`, the tools' log format).
    pub fn warnings(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(": warn: "))
            .collect()
    }

    /// The last `n` stderr lines, for assertion messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- {} stderr ---\n{}",
            self.name,
            lines[start..].join("\n")
        )
    }

    /// Waits for a stderr line containing `needle` (skipping the first `skip` lines).
    pub fn wait_for_line(&mut self, needle: &str, skip: usize) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(l) = self.lines().iter().skip(skip).find(|l| l.contains(needle)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                panic!(
                    "{} exited ({status}) before logging '{needle}'\n{}",
                    self.name,
                    self.tail(30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log '{needle}' within {STARTUP:?}\n{}",
                self.name,
                self.tail(30)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The address of its startup line `listening on ADDR` (all four tools print it at log
    /// level info; docs/STATS.md documents it).
    pub fn wait_listening(&mut self) -> SocketAddr {
        let line = self.wait_for_line("listening on ", 0);
        let rest = line.split("listening on ").nth(1).unwrap_or_default();
        let word = rest.split([',', ' ']).next().unwrap_or_default();
        word.parse()
            .unwrap_or_else(|_| panic!("no address in {line:?} of {}", self.name))
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet (we hold it).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) of {}", self.name);
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Once the child has exited, its pipes close: wait for every line it wrote.
    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Waits at most `timeout` for the process to exit; all its output is collected then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_readers();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM; the exit status, within [`EXIT_GRACE`].
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(EXIT_GRACE).unwrap_or_else(|| {
            panic!(
                "{} still running {EXIT_GRACE:?} after SIGTERM\n{}",
                self.name,
                self.tail(20)
            )
        })
    }

    /// SIGTERM, expecting exit status 0.
    pub fn terminate_cleanly(&mut self) {
        let t0 = Instant::now();
        let status = self.terminate();
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM\n{}",
            self.name,
            self.tail(20)
        );
        println!("{}: exit 0 {:?} after SIGTERM", self.name, t0.elapsed());
    }

    /// Every JSON stats report it printed so far (`--stats-json`: one document per stdout
    /// line).
    pub fn reports(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: bad JSON report ({e}): {l}", self.name))
            })
            .collect()
    }

    /// Its last JSON report (after it exited: the final one).
    pub fn last_report(&self) -> Value {
        self.reports()
            .pop()
            .unwrap_or_else(|| panic!("{} printed no JSON report\n{}", self.name, self.tail(20)))
    }

    /// The first JSON report printed after this call (needs `--stats-interval`).
    pub fn next_report(&mut self) -> Value {
        let seen = self.reports().len();
        self.wait_report(seen, |_| true)
    }

    /// Waits (up to [`STARTUP`]) for a report, from the `from`-th on, that `pred` accepts.
    pub fn wait_report(&mut self, from: usize, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(r) = self.reports().into_iter().skip(from).find(|r| pred(r)) {
                return r;
            }
            assert!(
                self.alive(),
                "{} exited while a report was awaited\n{}",
                self.name,
                self.tail(20)
            );
            assert!(
                Instant::now() < deadline,
                "{}: no matching report within {STARTUP:?}; last: {}\n{}",
                self.name,
                self.reports()
                    .last()
                    .map_or("none".into(), |r| r.to_string()),
                self.tail(20)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts a tool at log level info and waits for its "listening on ADDR" line.
pub fn start(name: &str, bin: &str, args: &[&str]) -> (Proc, SocketAddr) {
    start_env(name, bin, args, &[])
}

/// Same with `env` in its environment.
pub fn start_env(
    name: &str,
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
) -> (Proc, SocketAddr) {
    let mut all = args.to_vec();
    all.extend(["--log-level", "info"]);
    let mut p = Proc::spawn_env(name, bin, &all, env);
    let addr = p.wait_listening();
    (p, addr)
}

/// Runs a tool that should exit by itself; kills it after 10 s.
pub fn run_briefly(bin: &str, args: &[&str]) -> Output {
    run_briefly_env(bin, args, &[])
}

/// Same with `env` added to an environment cleared of the key variables.
pub fn run_briefly_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for var in KEY_VARS {
        cmd.env_remove(var);
    }
    let child = cmd
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let watchdog = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                // SAFETY: our own child, not yet reaped (wait_with_output is still waiting).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    out
}

/// Runs a tool expecting a usage error (exit 2, nothing on stdout); returns its stderr.
pub fn usage_error(bin: &str, args: &[&str]) -> String {
    let out = run_briefly(bin, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{bin} {args:?} printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}
