//! A hostile bridge beside honest ones, with real processes: one that sends the server's
//! packets back to it (`mpbridge --reflect`), one that replays every client packet from
//! fresh source ports, and sessions of one datagram each over lossy bridges. Plaintext and
//! keyed alike, the target receives what the app sent and nothing more, and the app gets no
//! duplicate.
#![cfg(unix)] // signals and process control via libc

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn ends(keyed: bool) -> (End, End) {
    if keyed {
        let e = End::key_env(&genkey());
        (e.clone(), e)
    } else {
        (End::default(), End::default())
    }
}

/// Datagrams mpserver delivered to its target so far (its next report).
fn to_target(server: &mut Proc) -> f64 {
    num(&server.next_report(), "totals.local_tx_datagrams")
}

#[test]
fn a_reflecting_bridge_delivers_nothing_twice() {
    let _g = serial();
    for keyed in [false, true] {
        let (server, client) = ends(keyed);
        let mut t = Topo::with(
            V4,
            Setup {
                bridges: &[&[], &[], &["--reflect"]],
                server,
                client,
                ..Setup::default()
            },
        );
        let before = to_target(&mut t.server);
        let r = load(
            t.client_addr,
            &["--rate", "500", "--size", "300", "--duration", "4"],
        );
        // Let whatever is still bouncing settle, then count.
        thread::sleep(Duration::from_millis(700));
        let report: Value = t.server.next_report();
        let delivered = num(&report, "totals.local_tx_datagrams") - before;
        let label = if keyed { "keyed" } else { "plain" };
        println!(
            "{}; target got {delivered}, server refused {} reflected packets",
            summary(label, &r),
            num(&report, "totals.reflected")
        );
        let ctx = || format!("{label}: {}\n{}", summary(label, &r), t.diag());
        assert_clean(&r, &ctx);
        assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
        assert_eq!(
            delivered,
            num(&r, "sent"),
            "the target got more than was sent\n{}",
            ctx()
        );
        assert!(
            num(&report, "totals.reflected") > 0.0,
            "no reflection happened\n{}",
            ctx()
        );
    }
}

#[test]
fn a_port_hopping_replayer_steals_no_path() {
    let _g = serial();
    for keyed in [false, true] {
        let (server, client) = ends(keyed);
        let mut t = Topo::with(
            V4,
            Setup {
                bridges: &[&[], &[]],
                relays: vec![RelayKind::PortHop(8)],
                server,
                client,
                ..Setup::default()
            },
        );
        let before = to_target(&mut t.server);
        let r = load(
            t.client_addr,
            &["--rate", "500", "--size", "300", "--duration", "4"],
        );
        thread::sleep(Duration::from_millis(300));
        let delivered = to_target(&mut t.server) - before;
        let label = if keyed { "keyed" } else { "plain" };
        let replayed = t.relays[0]
            .replayed
            .load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "{}; target got {delivered}, relay replayed {replayed}",
            summary(label, &r)
        );
        let ctx = || format!("{label}: {}\n{}", summary(label, &r), t.diag());
        assert_clean(&r, &ctx);
        assert!(replayed as f64 > 4.0 * num(&r, "sent"), "{}", ctx());
        // Two honest lossless bridges: nothing may be lost to the replays.
        assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
        assert_eq!(delivered, num(&r, "sent"), "{}", ctx());
    }
}

/// `n` requests, each from a new socket (a new session), `spacing` apart, then `wait` for
/// the replies: how many were answered with their own bytes.
fn one_shot_sessions(to: SocketAddr, n: usize, spacing: Duration, wait: Duration) -> usize {
    let mut open: HashMap<usize, UdpSocket> = HashMap::new();
    let mut answered = 0;
    let mut buf = [0u8; 64];
    let mut poll = |open: &mut HashMap<usize, UdpSocket>| {
        open.retain(|i, s| match s.recv(&mut buf) {
            Ok(len) if buf[..len] == format!("request {i}").into_bytes()[..] => {
                answered += 1;
                false
            }
            _ => true,
        });
    };
    for i in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.send_to(format!("request {i}").as_bytes(), to);
        open.insert(i, s);
        let next = Instant::now() + spacing;
        while Instant::now() < next {
            poll(&mut open);
            thread::sleep(Duration::from_micros(500));
        }
    }
    let end = Instant::now() + wait;
    while Instant::now() < end && !open.is_empty() {
        poll(&mut open);
        thread::sleep(Duration::from_millis(1));
    }
    answered
}

/// Sessions of one datagram each (DNS-like) over three bridges losing 30 % each way: a round
/// trip fails only when all three copies die in one direction, 1 - (1 - 0.3³)² = 5.3 %, since
/// every reply goes on all of the client's paths from the first one, and with a key only
/// the client's first session pays a challenge.
#[test]
fn one_datagram_sessions_get_all_paths() {
    let _g = serial();
    for keyed in [false, true] {
        let (server, client) = ends(keyed);
        // More sessions than the default cap of 1,024 (each request is one).
        let cap = ["--max-sessions", "4096"];
        let (server, client) = (server.with(&cap), client.with(&cap));
        let t = Topo::with(
            V4,
            Setup {
                bridges: &[
                    &["--loss", "30", "--seed", "71"],
                    &["--loss", "30", "--seed", "72"],
                    &["--loss", "30", "--seed", "73"],
                ],
                server,
                client,
                ..Setup::default()
            },
        );
        let n = 1500;
        let ok = one_shot_sessions(
            t.client_addr,
            n,
            Duration::from_millis(2),
            Duration::from_secs(1),
        );
        let rate = ok as f64 / n as f64;
        let label = if keyed { "keyed" } else { "plain" };
        println!(
            "{label}: {ok} of {n} one-datagram sessions answered ({:.1} %)",
            100.0 * rate
        );
        assert!(
            rate >= 0.925,
            "{label}: {:.1} % answered (expected about 94.7 %)\n{}",
            100.0 * rate,
            t.diag()
        );
    }
}
