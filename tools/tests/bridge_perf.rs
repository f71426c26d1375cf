//! mpbridge and mpperf as real processes on the loopback interface.
#![cfg(unix)] // signals and process control via libc

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Time for a signal to be handled before traffic that depends on it is sent.
const SIGNAL_SETTLE: Duration = Duration::from_millis(300);

fn echo() -> (Proc, SocketAddr) {
    start("echo", PERF, &["echo", "127.0.0.1:0"])
}

/// An mpbridge to `upstream` that prints its final report as JSON.
fn bridge(upstream: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    let up = upstream.to_string();
    let mut args = vec!["127.0.0.1:0", up.as_str(), "--stats-json"];
    args.extend_from_slice(extra);
    start("mpbridge", BRIDGE, &args)
}

/// A port that was free a moment ago, for the one test that needs a silent address.
fn free_local_port() -> u16 {
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

    let mut bridge = bridge;
    let status = bridge.terminate();
    assert!(status.success(), "exit status {status}");
    // --stats-json: the final report is the only stdout line.
    let out = bridge.stdout_lines();
    assert_eq!(out.len(), 1, "{out:?}");
    let last = bridge.last_report();
    for dir in ["up", "down"] {
        assert_eq!(num(&last[dir], "rx"), 1000.0, "{last}");
        assert_eq!(num(&last[dir], "tx"), 1000.0, "{last}");
        assert_eq!(num(&last[dir], "lost"), 0.0, "{last}");
    }
    assert_eq!(num(&last, "clients_new"), 1.0, "{last}");
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
    let (mut bridge, addr) = bridge(echo_addr, &["--duplicate", "100"]);
    let r = load(addr, &["--rate", "1000", "--count", "500", "--wait", "3"]);
    assert_complete(&r);
    // Every datagram goes up twice, the echo answers both, and every answer comes down
    // twice: four copies of each, one counted as received and three as duplicates. mpperf
    // stops once every datagram came back, so the copies of the last few (in flight then)
    // may go uncounted; the bridge's own counts below are exact.
    let dups = num(&r, "duplicates");
    let all = 3.0 * num(&r, "sent");
    assert!(
        (all - 12.0..=all).contains(&dups),
        "{dups} duplicates, {all} sent: {r}"
    );
    assert!(bridge.terminate().success());
    let last = bridge.last_report();
    assert_eq!(num(&last["up"], "duplicated"), 500.0, "{last}");
    assert_eq!(num(&last["down"], "duplicated"), 1000.0, "{last}");
    assert_eq!(num(&last["down"], "tx"), 2000.0, "{last}");
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
    let upstream_port = free_local_port();
    let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    let (mut bridge, addr) = bridge(upstream, &[]);
    // The same client address both times, so the same upstream mapping is reused.
    let client = format!("127.0.0.1:{}", free_local_port());
    let args = [
        "--rate", "1000", "--count", "200", "--wait", "0.3", "--bind", &client,
    ];
    let r = load(addr, &args);
    assert_eq!(num(&r, "received"), 0.0, "{r}");
    assert!(bridge.alive());

    let (_echo, echo_addr) = start("echo", PERF, &["echo", &upstream.to_string()]);
    assert_eq!(echo_addr, upstream);
    let args = [
        "--rate", "1000", "--count", "200", "--wait", "3", "--bind", &client,
    ];
    let r = load(addr, &args);
    assert_complete(&r);
    assert!(bridge.alive());
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
