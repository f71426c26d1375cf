//! End-to-end tests: mpclient, mpserver, bridges (mpbridge, socat or a relay of the
//! harness) and mpperf as real processes on the loopback interface, without a key.
//!
//! The topology is the seed's sample:
//!
//! ```text
//! mpperf load -> mpclient -> 3 bridges -> mpserver -> mpperf echo
//! ```
//!
//! Tests hold a lock for their whole run, so topologies never compete for the CPU. They read
//! what the tools report as JSON (`--stats-json`) and their exit codes, never log wording.
#![cfg(unix)] // signals and process control via libc

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use support::garbage::{garbage, Rng};
use support::need::{self, Need};
use support::*;

/// 1. The seed's sample with lossless bridges: nothing lost, duplicated or damaged at
///    5000 datagrams/s of 1200 bytes.
#[test]
fn seed_topology_lossless() {
    let _g = serial();
    let t = Topo::start(V4, &[&[], &[], &[]], None);
    let args = [
        "--rate",
        "5000",
        "--size",
        "1200",
        "--duration",
        "3",
        "--label",
        "tunnel",
    ];
    let r = load(t.client_addr, &args);
    let ctx = || format!("{}\n{}", summary("tunnel", &r), t.diag());
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "send_errors"), 0.0, "{}", ctx());
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
    let d = load(t.echo_addr, &args);
    println!("{}", summary("direct", &d));
    println!("{}", summary("tunnel", &r));
}

/// 2. Three bridges losing 30 % each way: a datagram survives a direction if one of three
///    copies does, so the round trip loses 1 - (1 - 0.3^3)^2 = 5.33 %.
#[test]
fn lossy_bridges_loss_is_product() {
    let _g = serial();
    let mut t = Topo::start(
        V4,
        &[
            &["--loss", "30", "--seed", "11"],
            &["--loss", "30", "--seed", "22"],
            &["--loss", "30", "--seed", "33"],
        ],
        None,
    );
    let r = load(
        t.client_addr,
        &["--rate", "2500", "--size", "200", "--duration", "8"],
    );
    let ctx = || format!("{}\n{}", summary("lossy", &r), t.diag());
    println!("{}", summary("lossy", &r));
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "sent"), 20_000.0, "{}", ctx());
    let expected = 100.0 * (1.0 - (1.0 - 0.3f64.powi(3)).powi(2));
    let loss = num(&r, "loss_pct");
    assert!(
        (loss - expected).abs() <= 1.0,
        "loss {loss:.3}% vs expected {expected:.2}%\n{}",
        ctx()
    );
    // A 30 %-loss path must not flap down (PROTOCOL.md: about 1e-8 per silent episode).
    assert_no_path_went_down(&mut t.client);
}

/// 3. The seed's exact commands with socat bridges.
#[test]
#[ignore = "needs socat"]
fn socat_bridges_seed_commands() {
    let _g = serial();
    need::require(Need::Socat);
    let (echo, echo_addr) = start_echo(V4);
    let server_port = free_port().to_string();
    let echo_port = echo_addr.port().to_string();
    let mut server = Proc::spawn(
        "mpserver",
        SERVER,
        &[&server_port, "localhost", &echo_port, "--log-level", "info"],
    );
    server.wait_for_line("listening on", 0);
    let mut socats = Vec::new();
    let mut conf_text = String::new();
    for i in 0..3 {
        let port = free_port();
        let p = Proc::spawn(
            &format!("socat{}", i + 1),
            "socat",
            &[
                &format!("udp-listen:{port}"),
                &format!("udp4:localhost:{server_port}"),
            ],
        );
        let deadline = Instant::now() + STARTUP;
        while !udp_port_bound(port) {
            assert!(Instant::now() < deadline, "socat did not bind {port}");
            thread::sleep(Duration::from_millis(5));
        }
        socats.push(p);
        conf_text.push_str(&format!("localhost {port}\n"));
    }
    let conf = TempFile::new("client.conf", &conf_text);
    let client_port = free_port().to_string();
    let conf_path = conf.path().to_string();
    let mut client = Proc::spawn(
        "mpclient",
        CLIENT,
        &[&client_port, &conf_path, "--log-level", "info"],
    );
    client.wait_for_line("listening on", 0);
    let client_addr: SocketAddr = format!("127.0.0.1:{client_port}").parse().expect("addr");
    let diag = || {
        let mut s = format!("{}\n{}\n{}", client.tail(15), server.tail(15), echo.tail(5));
        for p in &socats {
            s.push('\n');
            s.push_str(&p.tail(5));
        }
        s
    };
    wait_roundtrip(client_addr, &diag);
    let r = load(
        client_addr,
        &["--rate", "1000", "--size", "1000", "--duration", "3"],
    );
    println!("{}", summary("socat", &r));
    let ctx = || format!("{}\n{}", summary("socat", &r), diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
}

/// Shared body of the server-restart tests.
fn server_restart_mid_stream(sig: libc::c_int, secs: f64) {
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let secs_s = secs.to_string();
    let run = Load::spawn(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            &secs_s,
            "--wait",
            "2",
        ],
    );
    thread::sleep(Duration::from_secs_f64(secs / 3.0));
    let downtime = t.restart_server(sig, Duration::from_millis(200));
    let r = run.finish();
    let lost = lost(&r);
    let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
    let label = format!("srv-{sig}");
    println!(
        "{}; server down {downtime:.2?}, {lost} lost",
        summary(&label, &r)
    );
    let ctx = || {
        format!(
            "{}\ndowntime {downtime:?}\n{}",
            summary(&label, &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(
        lost <= allowed,
        "{lost} lost, more than {allowed} the downtime explains\n{}",
        ctx()
    );
    assert!(num(&r, "loss_pct") < 15.0, "{}", ctx());
    // The tunnel carries on without a hitch afterwards.
    let after = load(t.client_addr, &["--rate", "1000", "--duration", "1"]);
    assert_clean(&after, &ctx);
    assert!(num(&after, "loss_pct") < 1.0, "after: {after}\n{}", ctx());
}

/// 4. mpserver killed hard and restarted on the same port; mpclient keeps running.
#[test]
fn server_restart_sigkill() {
    let _g = serial();
    server_restart_mid_stream(libc::SIGKILL, 6.0);
}

/// 4b. Same with a clean stop (the server sends CLOSE for its sessions).
#[test]
fn server_restart_sigterm() {
    let _g = serial();
    server_restart_mid_stream(libc::SIGTERM, 4.0);
}

/// 5. mpclient killed hard and restarted on the same port; mpserver keeps running.
#[test]
fn client_restart_sigkill() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let run = Load::spawn(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            "6",
            "--wait",
            "2",
        ],
    );
    thread::sleep(Duration::from_secs(2));
    let downtime = t.restart_client(libc::SIGKILL, Duration::from_millis(200));
    let r = run.finish();
    let lost = lost(&r);
    let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
    println!(
        "{}; client down {downtime:.2?}, {lost} lost",
        summary("cli-kill", &r)
    );
    let ctx = || {
        format!(
            "{}\ndowntime {downtime:?}\n{}",
            summary("cli-kill", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(
        lost <= allowed,
        "{lost} lost, more than {allowed} the downtime explains\n{}",
        ctx()
    );
    assert!(
        lost / (num(&r, "sent") + num(&r, "send_errors")) < 0.15,
        "{}",
        ctx()
    );
}

/// 6. Two apps on one mpclient at once: each is its own session and gets only its own replies.
#[test]
fn two_apps_one_client() {
    let _g = serial();
    let t = Topo::start(V4, &[&[], &[], &[]], None);
    let args = ["--rate", "1000", "--size", "800", "--duration", "3"];
    let a = Load::spawn(t.client_addr, &args);
    let b = Load::spawn(t.client_addr, &args);
    let (ra, rb) = (a.finish(), b.finish());
    println!("{}\n{}", summary("app A", &ra), summary("app B", &rb));
    for (name, r) in [("A", &ra), ("B", &rb)] {
        let ctx = || format!("app {name}: {}\n{}", summary(name, r), t.diag());
        assert_clean(r, &ctx);
        assert_eq!(num(r, "sent"), 3000.0, "{}", ctx());
        assert!(num(r, "loss_pct") < 1.0, "{}", ctx());
    }
}

/// 6b. Three mpclients on one mpserver at once, each over bridges of its own with its own
///     loss: no datagram crosses to another client's app, and each client's loss is that of
///     its own bridges.
#[test]
fn several_clients_one_server() {
    let _g = serial();
    let (_echo, echo_addr) = start_echo(V4);
    let (mut server, server_addr) = start_server("127.0.0.1:0", echo_addr, &End::default());
    // Each way, per bridge: a round trip is lost when all three copies die in either direction.
    let losses = [0.0, 10.0, 40.0];
    let mut clients = Vec::new();
    let mut bridges = Vec::new();
    let mut confs = Vec::new();
    for (c, loss) in losses.iter().enumerate() {
        let mut paths = Vec::new();
        for b in 0..3 {
            let seed = (100 + 10 * c + b).to_string();
            let loss = loss.to_string();
            let (p, a) = start_bridge(
                &format!("bridge{c}.{b}"),
                V4,
                server_addr,
                &["--loss", &loss, "--seed", &seed],
            );
            bridges.push(p);
            paths.push(a);
        }
        let conf = client_conf(&paths);
        let (p, addr) = start_client("127.0.0.1:0", &conf.0, &End::default());
        wait_roundtrip(addr, &|| p.tail(10));
        clients.push((p, addr));
        confs.push(conf);
    }
    let args = ["--rate", "1000", "--size", "300", "--duration", "6"];
    let runs: Vec<Load> = clients
        .iter()
        .map(|(_, a)| Load::spawn(*a, &args))
        .collect();
    let reports: Vec<_> = runs.into_iter().map(Load::finish).collect();
    let server_report = server.next_report();
    for ((r, loss), (client, _)) in reports.iter().zip(losses).zip(&clients) {
        let label = format!("{loss}%x3");
        println!("{}", summary(&label, r));
        let ctx = || {
            format!(
                "{}\n{}\n{}",
                summary(&label, r),
                client.tail(10),
                server.tail(10)
            )
        };
        // A reply for another client's app would be "foreign" to this run's mpperf.
        assert_clean(r, &ctx);
        assert_eq!(num(r, "sent"), 6000.0, "{}", ctx());
        let p = loss / 100.0;
        let expected = 100.0 * (1.0 - (1.0 - f64::powi(p, 3)).powi(2));
        let got = num(r, "loss_pct");
        assert!(
            (got - expected).abs() <= 2.0,
            "loss {got:.2}% vs {expected:.2}% expected of this client's bridges\n{}",
            ctx()
        );
    }
    // One session per app plus one per wait_roundtrip probe, from three client epochs.
    assert!(num(&server_report, "sessions") >= 6.0, "{server_report}");
}

/// 7. Bridges that duplicate every datagram and reorder some: the app never sees a copy twice.
#[test]
fn duplicating_bridges_never_duplicate() {
    let _g = serial();
    let imp: &[&str] = &["--duplicate", "100", "--reorder", "30"];
    let t = Topo::start(V4, &[imp, imp, imp], None);
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "2"],
    );
    println!("{}", summary("dup+reo", &r));
    let ctx = || format!("{}\n{}", summary("dup+reo", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
}

/// 7b. A relay that replays every datagram 300 ms and 2 s later (both directions): still no
///     duplicate reaches the app.
#[test]
fn replaying_relay_never_duplicates() {
    let _g = serial();
    let replays = [Duration::from_millis(300), Duration::from_secs(2)];
    let t = Topo::start(V4, &[&[], &[]], Some(&replays));
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "4"],
    );
    let relay = t.relays.first().expect("relay");
    let replayed = relay.replayed.load(Ordering::Relaxed);
    println!("{}; relay replayed {replayed}", summary("replay", &r));
    let ctx = || {
        format!(
            "{}\nreplayed {replayed}\n{}",
            summary("replay", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
    // Most of the run was replayed (in both directions) while mpperf listened.
    assert!(replayed as f64 > 1.5 * num(&r, "sent"), "{}", ctx());
}

/// 8. Garbage at every port that can be reached (mpserver, each bridge, the client's path
///    sockets through the in-test relay, and the app port): no harm, and it is counted.
#[test]
fn garbage_is_dropped_and_counted() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[]], Some(&[]));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("garbage seed {seed}");
    let mut rng = Rng(seed);
    let junk = garbage(&mut rng);
    let during = Load::spawn(
        t.client_addr,
        &["--rate", "1000", "--size", "700", "--duration", "3"],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let relay = t.relays.first().expect("relay");
    let mut dests = vec![t.server_addr];
    dests.extend(&t.bridge_addrs);
    dests.push(relay.addr);
    for (i, d) in junk.iter().enumerate() {
        for to in &dests {
            let _ = sock.send_to(d, to);
        }
        relay.inject_to_client(d);
        relay.inject_to_server(d);
        // The app port takes any datagram; these travel the tunnel to the echo and back.
        if i % 4 == 0 {
            let _ = sock.send_to(&d[..d.len().min(2000)], t.client_addr);
        }
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = sock.send_to(&[], t.client_addr);
    let _ = sock.send_to(&rng.bytes(65_507), t.client_addr); // too big to tunnel: dropped
    let r1 = during.finish();
    let r2 = load(
        t.client_addr,
        &["--rate", "1000", "--size", "700", "--duration", "2"],
    );
    println!("{}\n{}", summary("during", &r1), summary("after", &r2));
    let ctx = || {
        format!(
            "seed {seed}\n{}\n{}\n{}",
            summary("during", &r1),
            summary("after", &r2),
            t.diag()
        )
    };
    assert_clean(&r1, &ctx);
    assert_clean(&r2, &ctx);
    assert!(num(&r1, "loss_pct") < 2.0, "{}", ctx());
    assert!(num(&r2, "loss_pct") < 0.5, "{}", ctx());
    let dead = t.dead();
    assert!(dead.is_empty(), "seed {seed}: {}", dead.join("\n"));
    // The garbage really arrived, and was classified rather than ignored (the final report).
    t.client.terminate_cleanly();
    t.server.terminate_cleanly();
    for p in [&t.client, &t.server] {
        let last = p.last_report();
        let bad = num(&last, "totals.malformed") + num(&last, "totals.checksum_errors");
        assert!(
            bad > 0.0,
            "{} counted no malformed packets\n{}",
            p.name,
            p.tail(5)
        );
        println!("{}: {bad} malformed or checksum errors counted", p.name);
    }
}

/// 9. The whole topology on ::1.
#[test]
#[ignore = "needs IPv6 loopback"]
fn ipv6_topology() {
    let _g = serial();
    need::require(Need::Ipv6);
    let t = Topo::start(V6, &[&[], &[], &[]], None);
    assert!(t.ip.is_ipv6() && t.server_addr.is_ipv6() && t.echo_addr.is_ipv6());
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "1000", "--duration", "2"],
    );
    println!("{}", summary("ipv6", &r));
    let ctx = || format!("{}\n{}", summary("ipv6", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
}

/// A mixed path set: one bridge reached over IPv4 and one over IPv6, to an mpserver
/// listening on both (`[::]`, where IPv4 bridges arrive as v4-mapped addresses). Both paths
/// are up and carry the traffic, and nothing is lost.
#[test]
#[ignore = "needs IPv6 loopback"]
fn ipv6_mixed_with_ipv4_paths() {
    let _g = serial();
    need::require(Need::Ipv6);
    let (_echo, echo_addr) = start_echo(V4);
    let (server, server_addr) = start_server("[::]:0", echo_addr, &End::default());
    let port = server_addr.port();
    let (_b4, via4) = start_bridge(
        "bridge-v4",
        V4,
        SocketAddr::from(([127, 0, 0, 1], port)),
        &[],
    );
    let (_b6, via6) = start_bridge(
        "bridge-v6",
        V6,
        format!("[::1]:{port}").parse().unwrap(),
        &[],
    );
    let conf = client_conf(&[via4, via6]);
    let (mut client, client_addr) = start_client("127.0.0.1:0", &conf.0, &End::default());
    wait_roundtrip(client_addr, &|| {
        format!("{}\n{}", client.tail(20), server.tail(10))
    });
    let r = load(
        client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "2"],
    );
    let report = client.next_report();
    let ctx = || format!("{}\n{report}\n{}", summary("mixed", &r), server.tail(10));
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
    for via in [via4, via6] {
        let p = report_path(&report, "remote", &via.to_string());
        assert_eq!(p["state"], "up", "{}", ctx());
        // Every datagram went out on it, and its probes came back (both ways work).
        assert!(num(p, "tx_packets") >= 2000.0, "{via}\n{}", ctx());
        assert!(
            num(p, "probe_acks") >= 3.0,
            "{via} answered no probe\n{}",
            ctx()
        );
    }
    println!("{}", summary("mixed v4/v6", &r));
}

/// 11. SIGTERM stops both ends cleanly; the client's CLOSE removes its sessions on the server.
#[test]
fn clean_shutdown_on_sigterm() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let r = load(t.client_addr, &["--rate", "1000", "--count", "300"]);
    let ctx = || format!("{}\n{}", summary("pre", &r), t.diag());
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
    let before = t.server.next_report();
    let opened = num(&before, "totals.sessions_opened");
    assert!(
        opened >= 2.0,
        "the probe and the load are sessions: {before}"
    );
    t.client.terminate_cleanly();
    // Every session the client had is closed by its CLOSE: none left, none merely expired.
    let seen = t.server.reports().len();
    let after = t.server.wait_report(seen, |r| num(r, "sessions") == 0.0);
    assert_eq!(
        num(&after, "totals.close_received"),
        opened,
        "{after}\n{}",
        t.diag()
    );
    assert_eq!(num(&after, "totals.sessions_closed"), opened, "{after}");
    assert_eq!(num(&after, "totals.sessions_expired"), 0.0, "{after}");
    t.server.terminate_cleanly();
}

// ---------------------------------------------------------------------------------------------
// Encryption (pre-shared key)
