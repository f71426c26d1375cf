//! mpbridge and mpperf as real processes on the loopback interface.
#![cfg(unix)] // signals and process control via libc

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BRIDGE: &str = env!("CARGO_BIN_EXE_mpbridge");
const PERF: &str = env!("CARGO_BIN_EXE_mpperf");
/// Generous, because a loaded 2-core machine can be slow to start a process.
const STARTUP: Duration = Duration::from_secs(15);
/// Time for a signal to be handled before traffic that depends on it is sent.
const SIGNAL_SETTLE: Duration = Duration::from_millis(300);

/// A running tool; killed when dropped so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and returns the exit status, stdout and the remaining stderr lines.
    fn terminate(mut self) -> (ExitStatus, String, Vec<String>) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "process ignored SIGTERM");
            thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).expect("read stdout");
        }
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            lines.push(line);
        }
        (status, stdout, lines)
    }
}

/// Starts a tool at info level and waits for its "listening on ADDR" log line, so tools
/// can bind port 0 and no port is ever guessed.
fn start(bin: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let proc = Proc { child, stderr: rx };
    let deadline = Instant::now() + STARTUP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proc
            .stderr
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{bin} {args:?}: no 'listening on' line ({e})"));
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split([',', ' ']).next().unwrap_or_default();
            let addr = addr
                .parse()
                .unwrap_or_else(|_| panic!("bad address in {line:?}"));
            return (proc, addr);
        }
    }
}

fn echo() -> (Proc, SocketAddr) {
    start(PERF, &["echo", "127.0.0.1:0"])
}

fn bridge(upstream: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    let up = upstream.to_string();
    let mut args = vec!["127.0.0.1:0", up.as_str()];
    args.extend_from_slice(extra);
    start(BRIDGE, &args)
}

/// Runs `mpperf load --json` against `target` and returns the parsed report.
fn load(target: SocketAddr, extra: &[&str]) -> Value {
    let out = Command::new(PERF)
        .args(["load", "--json", "--target", &target.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run mpperf load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpperf load failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A port that was free a moment ago, for the one test that needs a silent address.
fn free_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("local_addr").port()
}

fn assert_complete(report: &Value) {
    assert_eq!(num(report, "corrupt"), 0.0, "{report}");
    assert_eq!(num(report, "received"), num(report, "sent"), "{report}");
    assert_eq!(num(report, "loss_pct"), 0.0, "{report}");
}

#[test]
fn echo_direct_no_loss() {
    let (_echo, addr) = echo();
    let r = load(
        addr,
        &[
            "--rate", "1000", "--count", "1000", "--wait", "3", "--label", "direct",
        ],
    );
    assert_eq!(num(&r, "sent"), 1000.0);
    assert_complete(&r);
    assert_eq!(num(&r, "duplicates"), 0.0);
    assert_eq!(r["label"], "direct");
    assert_eq!(r["target"], addr.to_string());
    assert_eq!(num(&r, "size"), 1200.0);
    assert_eq!(num(&r, "rate_pps"), 1000.0);
    for key in ["min", "p50", "p90", "p99", "max"] {
        assert!(r["rtt_ms"][key].as_f64().is_some(), "rtt_ms.{key}: {r}");
    }
    assert!(num(&r["rtt_ms"], "min") <= num(&r["rtt_ms"], "max"));
    // 1000 datagrams at 1000 pps take about a second even on a slow machine.
    let duration = num(&r, "duration_s");
    assert!((0.9..5.0).contains(&duration), "duration {duration}");
    assert!(num(&r, "throughput_pps") > 0.0 && num(&r, "throughput_mbps") > 0.0);
}

#[test]
fn table_output_is_readable() {
    let (_echo, addr) = echo();
    let out = Command::new(PERF)
        .args(["load", "-t", &addr.to_string(), "-n", "50", "-r", "500"])
        .args(["--size", "32", "--label", "tbl"])
        .output()
        .expect("run mpperf load");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "label",
        "target",
        "sent",
        "received",
        "loss",
        "rtt ms",
        "throughput",
        "duration",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(key)),
            "no '{key}' line in:\n{text}"
        );
    }
    assert!(text.contains("loss        0.000 %"), "{text}");
}

#[test]
fn bridge_relays_without_loss_and_exits_cleanly() {
    let (_echo, echo_addr) = echo();
    let (bridge, addr) = bridge(echo_addr, &[]);
    let r = load(addr, &["--rate", "1000", "--count", "1000", "--wait", "3"]);
    assert_complete(&r);
    assert_eq!(num(&r, "duplicates"), 0.0);

    let (status, stdout, stderr) = bridge.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(stdout.is_empty(), "unexpected stdout: {stdout}");
    let summary = stderr
        .iter()
        .find(|l| l.contains("final:"))
        .unwrap_or_else(|| panic!("no final summary in {stderr:?}"));
    assert!(summary.contains("up: rx 1000 "), "{summary}");
}

#[test]
fn bridge_loss_is_in_expected_band() {
    let (_echo, echo_addr) = echo();
    let (_bridge, addr) = bridge(echo_addr, &["--loss", "30", "--seed", "1"]);
    let r = load(addr, &["--rate", "2000", "--count", "2000", "--wait", "1"]);
    assert_eq!(num(&r, "sent"), 2000.0);
    assert_eq!(num(&r, "corrupt"), 0.0);
    // Survival is 0.7 each way, so about 51% of round trips are lost.
    let loss = num(&r, "loss_pct");
    assert!((35.0..=65.0).contains(&loss), "loss {loss}%: {r}");
}

#[test]
fn bridge_duplicates_are_counted() {
    let (_echo, echo_addr) = echo();
    let (_bridge, addr) = bridge(echo_addr, &["--duplicate", "100"]);
    let r = load(addr, &["--rate", "1000", "--count", "500", "--wait", "3"]);
    assert!(num(&r, "duplicates") > 0.0, "{r}");
    assert!(num(&r, "received") <= num(&r, "sent"), "{r}");
    assert_complete(&r);
}

#[test]
fn bridge_delay_shows_in_rtt() {
    let (_echo, echo_addr) = echo();
    let (_bridge, addr) = bridge(
        echo_addr,
        &[
            "--delay",
            "20",
            "--jitter",
            "5",
            "--reorder",
            "20",
            "--seed",
            "3",
        ],
    );
    let r = load(addr, &["--rate", "1000", "--count", "300", "--wait", "3"]);
    assert_complete(&r);
    // 20 ms each way is a floor; timers only ever fire late.
    let min = num(&r["rtt_ms"], "min");
    assert!(min >= 40.0, "rtt min {min} ms: {r}");
}

#[test]
fn bridge_survives_absent_upstream() {
    let upstream_port = free_port();
    let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    let (mut bridge, addr) = bridge(upstream, &[]);
    // The same client address both times, so the same upstream mapping is reused.
    let client = format!("127.0.0.1:{}", free_port());
    let args = [
        "--rate", "1000", "--count", "200", "--wait", "0.3", "--bind", &client,
    ];
    let r = load(addr, &args);
    assert_eq!(num(&r, "received"), 0.0, "{r}");
    assert!(bridge.is_running());

    let (_echo, echo_addr) = start(PERF, &["echo", &upstream.to_string()]);
    assert_eq!(echo_addr, upstream);
    let args = [
        "--rate", "1000", "--count", "200", "--wait", "3", "--bind", &client,
    ];
    let r = load(addr, &args);
    assert_complete(&r);
    assert!(bridge.is_running());
}

#[test]
fn bridge_blackhole_on_sigusr1_until_sigusr2() {
    let (_echo, echo_addr) = echo();
    let (bridge, addr) = bridge(echo_addr, &[]);
    let ok = ["--rate", "1000", "--count", "200", "--wait", "3"];
    assert_complete(&load(addr, &ok));

    bridge.signal(libc::SIGUSR1);
    thread::sleep(SIGNAL_SETTLE);
    let r = load(addr, &["--rate", "1000", "--count", "200", "--wait", "0.3"]);
    assert_eq!(num(&r, "sent"), 200.0);
    assert_eq!(num(&r, "received"), 0.0, "{r}");
    assert!(r["rtt_ms"].is_null());

    bridge.signal(libc::SIGUSR2);
    thread::sleep(SIGNAL_SETTLE);
    assert_complete(&load(addr, &ok));
}

/// Runs a tool expecting a usage error; returns its stderr.
fn usage_error(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    stderr
}

#[test]
fn bad_arguments_exit_2_naming_the_value() {
    let cases: &[(&str, &[&str], &str)] = &[
        (BRIDGE, &["--loss", "150", "4000", "127.0.0.1:5000"], "150"),
        (BRIDGE, &["notaport", "x"], "notaport"),
        (BRIDGE, &["4000", "nowhere"], "nowhere"),
        (BRIDGE, &["4000", "127.0.0.1:99999"], "99999"),
        (
            BRIDGE,
            &["--delay", "soon", "4000", "127.0.0.1:5000"],
            "soon",
        ),
        (BRIDGE, &["--jitter", "-3", "4000", "127.0.0.1:5000"], "-3"),
        (BRIDGE, &["--seed", "abc", "4000", "127.0.0.1:5000"], "abc"),
        (
            BRIDGE,
            &["--log-level", "loud", "4000", "127.0.0.1:5000"],
            "loud",
        ),
        (BRIDGE, &["4000"], "UPSTREAM"),
        (PERF, &["load", "--target", "nohost"], "nohost"),
        (
            PERF,
            &["load", "--target", "127.0.0.1:9", "--size", "10"],
            "10",
        ),
        (
            PERF,
            &["load", "--target", "127.0.0.1:9", "--rate", "fast"],
            "fast",
        ),
        (PERF, &["echo", "notaport"], "notaport"),
        (PERF, &["bogus"], "bogus"),
    ];
    for (bin, args, needle) in cases {
        let stderr = usage_error(bin, args);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn help_and_version() {
    let out = Command::new(BRIDGE).arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--loss",
        "--delay",
        "--jitter",
        "--duplicate",
        "--reorder",
        "--seed",
        "--idle-timeout",
        "--stats-interval",
        "--log-level",
        "SIGUSR1",
        "SIGUSR2",
    ] {
        assert!(help.contains(opt), "mpbridge --help lacks {opt}");
    }
    let out = Command::new(PERF)
        .args(["load", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--target",
        "--rate",
        "--size",
        "--duration",
        "--count",
        "--wait",
        "--bind",
        "--json",
        "--label",
    ] {
        assert!(help.contains(opt), "mpperf load --help lacks {opt}");
    }
    for bin in [BRIDGE, PERF] {
        let out = Command::new(bin).arg("--version").output().expect("run");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn mpperf_load_bind_failure_exits_1() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let out = Command::new(PERF)
        .args([
            "load",
            "--target",
            "127.0.0.1:9",
            "--count",
            "1",
            "--bind",
            &addr,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}
