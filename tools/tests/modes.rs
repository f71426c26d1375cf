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
/// the next path carries copies); `k-best=2` keeps the other member.
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
            // Balance sends a third of the flow on the dark path until it is down (1 s).
            _ => assert!(gap_ms <= 800.0, "{}", ctx()),
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
