//! The scheduling modes end to end: mpclient, mpserver and mpbridges as real processes on
//! loopback. A bridge is blackholed mid-stream (mpbridge's SIGUSR1) in each mode and the
//! traffic it cost is measured; balance aggregates rate-limited bridges (`--rate`).
#![cfg(unix)]

mod support;

use std::thread;
use std::time::Duration;

use support::*;

const RATE: f64 = 500.0;

/// The active (fastest) bridge of three goes dark 3 s into a 500/s echo flow: what each mode
/// loses. `redundant` loses nothing; `failover` about 3 RTTs plus one (the doubt time, then
/// the next path carries copies); `k-best=2` keeps the other member; `balance` loses the
/// dark path's share of the doubt time.
#[test]
fn blackholing_the_active_bridge_in_each_mode() {
    let _g = serial();
    let mut results = Vec::new();
    for mode in ["redundant", "failover", "k-best=2", "balance"] {
        let t = Topo::with(
            V4,
            Setup {
                bridges: &[&["--delay", "10"], &["--delay", "15"], &["--delay", "20"]],
                client: End::default().with(&["--mode", mode]),
                ..Setup::default()
            },
        );
        // Let the paths be measured and the mode settle.
        thread::sleep(Duration::from_millis(1500));
        let run = Load::spawn(
            t.client_addr,
            &["--rate", "500", "--size", "200", "--duration", "6"],
        );
        thread::sleep(Duration::from_secs(3));
        t.bridges[0].signal(libc::SIGUSR1);
        let r = run.finish();
        let lost = lost(&r);
        let gap_ms = lost * 1000.0 / RATE;
        println!(
            "{mode:<10} {} — blackhole cost {gap_ms:.0} ms",
            summary(mode, &r)
        );
        let ctx = || format!("{mode}: {}\n{}", summary(mode, &r), t.diag());
        assert_clean(&r, &ctx);
        results.push((mode, gap_ms));
        match mode {
            "redundant" | "k-best=2" => assert!(lost <= 2.0, "{}", ctx()),
            "failover" => assert!(gap_ms <= 200.0, "{}", ctx()),
            // Balance moves the dark path's third of the flow once it is in doubt.
            _ => assert!(gap_ms <= 200.0, "{}", ctx()),
        }
    }
    println!("blackhole cost per mode: {results:?}");
}

/// Balance over two lossless bridges of 3,000 and 1,500 datagrams/s carries more than the
/// better one alone could.
#[test]
fn balance_aggregates_two_unequal_paths() {
    let _g = serial();
    let t = Topo::with(
        V4,
        Setup {
            bridges: &[&["--rate", "3000pps"], &["--rate", "1500pps"]],
            client: End::default().with(&["--mode", "balance"]),
            ..Setup::default()
        },
    );
    thread::sleep(Duration::from_millis(500));
    let secs = 6.0;
    let r = load(
        t.client_addr,
        &["--rate", "4000", "--size", "300", "--duration", "6"],
    );
    let per_s = num(&r, "received") / secs;
    println!("balance: {} — {per_s:.0} echoes/s", summary("balance", &r));
    let ctx = || format!("{}\n{}", summary("balance", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(
        per_s > 3300.0,
        "{per_s}/s is not more than the better path's 3000\n{}",
        ctx()
    );
}

/// SIGHUP under traffic: the edited config file adds a path and removes one; the kept path
/// keeps its figures, nothing is lost or duplicated, and a config with an error is refused
/// as a whole (named with file:line) while the tunnel goes on. SIGUSR1 prints the table.
#[test]
fn sighup_adds_and_removes_paths_under_traffic() {
    let _g = serial();
    let mut t = Topo::with(
        V4,
        Setup {
            bridges: &[&[], &[]],
            ..Setup::default()
        },
    );
    let (extra, extra_addr) = start_bridge("mpbridge3", t.ip, t.server_addr, &[]);
    let write_conf = |paths: &[std::net::SocketAddr], tail: &str| {
        let mut text = String::from("# edited while running\n");
        for p in paths {
            text.push_str(&format!("{} {}\n", p.ip(), p.port()));
        }
        text.push_str(tail);
        std::fs::write(&t.conf.0, text).expect("rewrite the config");
    };
    let run = Load::spawn(
        t.client_addr,
        &["--rate", "500", "--size", "200", "--duration", "6"],
    );
    thread::sleep(Duration::from_millis(1500));
    let kept = t.bridge_addrs[1];
    let before = t.client.next_report();
    let kept_tx_before = path_field(&before, &kept.to_string(), "tx_packets");
    // Drop bridge 1, keep bridge 2, add bridge 3.
    write_conf(&[kept, extra_addr], "");
    t.client.signal(libc::SIGHUP);
    t.client.wait_for_line("event=reloaded", 0);
    thread::sleep(Duration::from_millis(1500));
    // An error in the file: refused whole, the running paths stay.
    write_conf(&[t.bridge_addrs[0]], "mode = sideways\n");
    t.client.signal(libc::SIGHUP);
    let refused = t.client.wait_for_line("event=reload_refused", 0);
    assert!(refused.contains("client.conf:3"), "{refused}");
    t.client.signal(libc::SIGUSR1);
    t.client.wait_for_line("path ", 0);
    let r = run.finish();
    let after = t.client.next_report();
    let ctx = || format!("{}\n{}", summary("sighup", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(lost(&r) <= 2.0, "{}", ctx());
    let names: Vec<&str> = after["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [kept.to_string(), extra_addr.to_string()],
        "{}",
        ctx()
    );
    // The kept path kept its counters; the new one carries traffic.
    assert!(path_field(&after, &kept.to_string(), "tx_packets") > kept_tx_before + 1000.0);
    assert!(
        path_field(&after, &extra_addr.to_string(), "tx_packets") > 500.0,
        "{}",
        ctx()
    );
    assert!(t.client.alive(), "SIGUSR1 or SIGHUP killed mpclient");
    drop(extra);
    println!("{}", summary("sighup", &r));
}

fn path_field(report: &serde_json::Value, name: &str, key: &str) -> f64 {
    num(report_path(report, "name", name), key)
}

/// In redundant mode, after 10 s at 1,000 datagrams/s, each path's loss estimate, out and
/// in, is within 3 points of what its bridge really drops (one bridge drops differently
/// each way, so a swapped direction shows).
#[test]
fn loss_estimates_match_the_bridges() {
    let _g = serial();
    // (up, down) loss of each bridge, in percent.
    let real = [(5.0, 10.0), (20.0, 20.0), (30.0, 30.0)];
    let args: Vec<Vec<String>> = real
        .iter()
        .map(|(u, d)| {
            vec![
                "--loss-up".to_string(),
                u.to_string(),
                "--loss-down".to_string(),
                d.to_string(),
            ]
        })
        .collect();
    let args: Vec<Vec<&str>> = args
        .iter()
        .map(|a| a.iter().map(String::as_str).collect())
        .collect();
    let bridges: Vec<&[&str]> = args.iter().map(Vec::as_slice).collect();
    let mut t = Topo::with(
        V4,
        Setup {
            bridges: &bridges,
            ..Setup::default()
        },
    );
    let run = Load::spawn(
        t.client_addr,
        &["--rate", "1000", "--size", "200", "--duration", "11"],
    );
    thread::sleep(Duration::from_secs(10));
    let report = t.client.next_report();
    let r = run.finish();
    let ctx = || format!("{}\n{report}\n{}", summary("loss", &r), t.diag());
    assert_clean(&r, &ctx);
    let mut seen = Vec::new();
    for (addr, (up, down)) in t.bridge_addrs.iter().zip(real) {
        let name = addr.to_string();
        let out = path_field(&report, &name, "loss_out") * 100.0;
        let inn = path_field(&report, &name, "loss_in") * 100.0;
        seen.push(format!("{up}/{down} % read {out:.1}/{inn:.1} %"));
        assert!(
            (out - up).abs() <= 3.0 && (inn - down).abs() <= 3.0,
            "bridge dropping {up} % up and {down} % down read {out:.1} % out and {inn:.1} % in\n{}",
            ctx()
        );
    }
    println!("loss estimates: {}", seen.join(", "));
}
