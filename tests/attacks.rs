//! An attacker on one bridge, in the simulator: it records, replays, reflects, rewrites and
//! spoofs source ports. Each test says what such a bridge could make an endpoint deliver,
//! send, store or forget, and checks that it cannot.

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use mptunnel::protocol::endpoint::Endpoint as _;
use mptunnel::protocol::packet::{self, Header, PacketType, FLAG_FROM_SERVER, FLAG_SEALED};
use mptunnel::protocol::params::Params;
use mptunnel::protocol::rng::Rng;
use mptunnel::protocol::secure_rng::Seed;
use mptunnel::protocol::server::Server;
use mptunnel::protocol::transmit::ServerDest;
use sim::*;

/// An address of the attacker's (not a bridge).
fn stranger(n: u32) -> SocketAddr {
    SocketAddr::from((
        [10, 9, (n >> 8) as u8, n as u8],
        5_000 + (n % 50_000) as u16,
    ))
}

fn ptype(bytes: &[u8]) -> Option<PacketType> {
    PacketType::from_u8(*bytes.get(1)?)
}

/// App 0 got every datagram it sent after `before` (but the last few, still in flight).
fn assert_all_since(sim: &Sim, before: u64, sent: u64, what: &str) {
    let missing: Vec<u64> = (before + 1..sent - 5)
        .filter(|n| !sim.received(0).contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} lost: {missing:?}",
        missing.len()
    );
}

fn modes() -> [(&'static str, Params); 2] {
    [("plaintext", Params::default()), ("keyed", keyed(9))]
}

/// The server's own packets (DATA, PROBE, PROBE_ACK, CHALLENGE, RESPONSE, CLOSE) sent back
/// to it by a reflecting bridge: it delivers none of them to the target and sends nothing
/// because of them.
#[test]
fn the_server_ignores_its_own_packets() {
    for (mode, params) in modes() {
        let mut sim = Sim::new(3, lossless(), params, 40);
        sim.record_down = true;
        let mut c = vec![0u64; 2];
        sim.run(Duration::from_secs(1), 200.0, 2, 100, &mut c);
        // A server restart makes the client challenge the new one (which answers: RESPONSE).
        sim.restart_server();
        sim.run(Duration::from_secs(2), 200.0, 2, 100, &mut c);
        let now = sim.now;
        sim.server.close(now);
        sim.flush();
        let recorded = std::mem::take(&mut sim.recorded_down);
        let types: std::collections::HashSet<u8> = recorded.iter().map(|(_, b)| b[1]).collect();
        for t in [
            PacketType::Data,
            PacketType::Probe,
            PacketType::ProbeAck,
            PacketType::Close,
        ] {
            assert!(types.contains(&(t as u8)), "{mode}: no {t:?} recorded");
        }
        if mode == "keyed" {
            for t in [PacketType::Challenge, PacketType::Response] {
                assert!(types.contains(&(t as u8)), "{mode}: no {t:?} recorded");
            }
        }
        // A fresh server (the one that sent the latest packets is gone): every packet goes back.
        let to_target = sim.server.counters().local_tx_datagrams;
        let reflected = sim.server.counters().reflected;
        let sent = sim.server.counters().net_tx_packets;
        for (i, bytes) in &recorded {
            sim.server.handle_datagram(now, bridge_addr(*i), bytes);
        }
        sim.flush();
        let s = sim.server.counters();
        assert_eq!(
            s.local_tx_datagrams, to_target,
            "{mode}: reflections reached the target"
        );
        assert_eq!(
            s.net_tx_packets, sent,
            "{mode}: reflections made the server send"
        );
        assert_eq!(
            s.reflected - reflected,
            recorded.len() as u64,
            "{mode}: counted"
        );
    }
}

/// The client's own packets sent back to it: nothing reaches an app.
#[test]
fn the_client_ignores_its_own_packets() {
    for (mode, params) in modes() {
        let mut sim = Sim::new(2, lossless(), params, 41);
        sim.record = true;
        let mut c = vec![0u64; 1];
        sim.run(Duration::from_secs(1), 100.0, 1, 80, &mut c);
        let recorded = std::mem::take(&mut sim.recorded_up);
        let first_data = recorded
            .iter()
            .find(|(_, b)| ptype(b) == Some(PacketType::Data))
            .expect("a DATA copy");
        let delivered = sim.client.counters().local_tx_datagrams;
        let now = sim.now;
        for (i, bytes) in std::iter::once(first_data).chain(&recorded) {
            sim.client.handle_datagram(now, *i, bytes);
        }
        sim.flush();
        let s = sim.client.counters();
        assert_eq!(
            s.local_tx_datagrams, delivered,
            "{mode}: a reflection reached the app"
        );
        assert_eq!(s.reflected, recorded.len() as u64 + 1, "{mode}");
        sim.assert_clean();
    }
}

/// One client packet replayed from eight new source ports (and all of them, later): the
/// server sends the session's replies to the real bridges, and nothing but validation
/// probes and probe acks (within their budget) to the ports.
#[test]
fn replays_from_new_ports_do_not_steal_the_paths() {
    for (mode, params) in modes() {
        let mut sim = Sim::new(3, lossless(), params, 42);
        sim.record = true;
        let mut c = vec![0u64; 1];
        sim.run(Duration::from_secs(1), 200.0, 1, 100, &mut c);
        sim.record = false;
        // Every recorded packet has arrived (a bridge that replays a copy before the
        // genuine one arrives is carrying the path: see docs/PROTOCOL.md).
        sim.run(Duration::from_millis(1100), 1.0, 0, 0, &mut Vec::new());
        let recorded = std::mem::take(&mut sim.recorded_up);
        let one = recorded
            .iter()
            .rev()
            .find(|(_, b)| ptype(b) == Some(PacketType::Data))
            .expect("a DATA copy")
            .1
            .clone();
        let now = sim.now;
        for k in 0..8 {
            sim.server.handle_datagram(now, stranger(k), &one);
        }
        for (k, (_, b)) in recorded.iter().enumerate() {
            sim.server
                .handle_datagram(now, stranger(100 + k as u32 % 8), b);
        }
        sim.flush();
        let before = c[0];
        sim.run(Duration::from_secs(3), 200.0, 1, 100, &mut c);
        sim.assert_clean();
        assert_all_since(&sim, before, c[0], mode);
        let data_to_strangers = sim
            .to_strangers
            .iter()
            .filter(|(_, b)| !matches!(ptype(b), Some(PacketType::Probe | PacketType::ProbeAck)))
            .count();
        let kinds: Vec<_> = sim
            .to_strangers
            .iter()
            .map(|(a, b)| (a, ptype(b)))
            .collect();
        assert_eq!(
            data_to_strangers, 0,
            "{mode}: the server replied to the attacker: {kinds:?}"
        );
    }
}

/// Keyed: a copy whose path index a bridge rewrote fails its MAC and never marks the
/// window, so the genuine copy behind it is still delivered.
#[test]
fn a_forged_path_index_is_dropped_before_the_window() {
    let mut sim = Sim::new(3, lossless(), keyed(10), 43);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 100.0, 1, 80, &mut c);
    let now = sim.now;
    sim.client
        .handle_local(now, app_addr(0), &payload(0, 999_999, 80));
    let mut copies = Vec::new();
    while let Some(t) = sim.client.poll_transmit() {
        copies.push(t);
    }
    let genuine = copies
        .iter()
        .find(|t| {
            t.dest == mptunnel::protocol::transmit::ClientDest::Path(0)
                && ptype(&t.data) == Some(PacketType::Data)
        })
        .expect("a copy on path 0");
    let mut forged = genuine.data.clone();
    forged[packet::PATH_OFFSET] = 1;
    let before = sim.server.counters().clone();
    sim.server.handle_datagram(now, bridge_addr(1), &forged);
    let after = sim.server.counters().clone();
    assert_eq!(after.path_auth_failures, before.path_auth_failures + 1);
    assert_eq!(after.local_tx_datagrams, before.local_tx_datagrams);
    sim.server
        .handle_datagram(now, bridge_addr(0), &genuine.data);
    assert_eq!(
        sim.server.counters().local_tx_datagrams,
        before.local_tx_datagrams + 1,
        "the genuine copy is still new to the window"
    );
}

/// Tokens and nonces are not derived from anything on the wire: the next validation token
/// is none of the fast generator's outputs seeded with the epoch (what an attacker would
/// try), and two servers' tokens differ.
#[test]
fn the_next_token_cannot_be_predicted_from_the_epoch() {
    let t0 = std::time::Instant::now();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let seed = Seed::from_os().expect("OS randomness");
        let mut server = Server::new(Params::default(), &seed, t0);
        let epoch = server.epoch();
        // A plaintext DATA from a new address: the server probes it with a token.
        let h = Header {
            ptype: PacketType::Data,
            flags: 0,
            path: 0,
            session: 7,
            epoch: 12345,
            seq: 1,
        };
        let mut bytes = Vec::new();
        packet::encode(&mut bytes, &h, b"x");
        server.handle_datagram(t0, stranger(1), &bytes);
        let mut token = None;
        while let Some(t) = server.poll_transmit() {
            if let (ServerDest::Bridge(_), Some(PacketType::Probe)) = (t.dest, ptype(&t.data)) {
                let (_, p) = packet::decode(&t.data).expect("a probe");
                token = Some(u64::from_be_bytes(p[..8].try_into().expect("8 bytes")));
            }
        }
        let token = token.expect("a validation probe");
        for seed in [epoch, epoch.wrapping_sub(1), !epoch, 0] {
            let mut guess = Rng::new(seed);
            for _ in 0..64 {
                assert_ne!(guess.next_u64(), token, "token follows from the epoch");
            }
        }
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
}

/// Keyed: 1,100 sessions recorded, the client and the server restart, the attacker replays
/// every recorded packet; a new session of the new client still delivers everything.
#[test]
fn replayed_sessions_after_a_restart_do_not_lock_out_new_ones() {
    let params = Params {
        max_sessions: 4096,
        ..keyed(11)
    };
    let mut sim = Sim::new(3, lossless(), params, 44);
    sim.record = true;
    let mut c = vec![0u64; 1100];
    sim.run(Duration::from_millis(600), 2.0, 1100, 40, &mut c);
    sim.record = false;
    let recorded = std::mem::take(&mut sim.recorded_up);
    assert!(recorded.len() > 3000, "{}", recorded.len());
    sim.restart_server();
    sim.restart_client();
    let now = sim.now;
    for (i, b) in &recorded {
        sim.server.handle_datagram(now, bridge_addr(*i), b);
    }
    sim.flush();
    let (_, pending, _) = sim.server.client_epochs();
    assert!(
        pending <= 1,
        "one recorded epoch holds one pending slot, not {pending}"
    );
    // The new client's app (number 1,100: a new session).
    let start = sim.now - sim.t0;
    let mut sent = 0u64;
    while sim.now - sim.t0 < start + Duration::from_secs(2) {
        sent += 1;
        let now = sim.now;
        sim.client
            .handle_local(now, app_addr(1100), &payload(1100, sent, 40));
        sim.flush();
        let until = sim.now - sim.t0 + Duration::from_millis(5);
        sim.run(until, 1.0, 0, 0, &mut Vec::new());
    }
    let got = sim.received(1100).len() as u64;
    assert!(
        got + 10 >= sent,
        "the new session got {got} of {sent} replies"
    );
    sim.assert_clean();
}

/// 20,000 probes from distinct ports (forged, plaintext): the real bridges stay validated,
/// and the tunnel carries everything.
#[test]
fn a_flood_of_probes_from_new_ports_leaves_the_bridges_validated() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 45);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 200.0, 1, 500, &mut c);
    let now = sim.now;
    for k in 0..20_000u32 {
        let h = Header {
            ptype: PacketType::Probe,
            flags: 0,
            path: 0,
            session: 0,
            epoch: 1 + u64::from(k),
            seq: 1,
        };
        let mut bytes = Vec::new();
        packet::encode(&mut bytes, &h, &u64::from(k).to_be_bytes());
        sim.server.handle_datagram(now, stranger(k), &bytes);
    }
    sim.flush();
    let before = c[0];
    sim.run(Duration::from_secs(3), 200.0, 1, 500, &mut c);
    assert_all_since(&sim, before, c[0], "flood");
    for i in 0..3 {
        assert!(sim.server.bridge_validated(&bridge_addr(i)), "bridge {i}");
    }
    // The strangers got at most three times what they sent (one 40-byte probe each).
    let mut to: std::collections::HashMap<SocketAddr, usize> = Default::default();
    for (a, b) in &sim.to_strangers {
        *to.entry(*a).or_default() += b.len();
    }
    assert!(to.values().all(|n| *n <= 3 * 40), "{:?}", to.values().max());
}

/// Keyed: a client epoch whose challenges are never answered (the way back is cut) holds at
/// most its byte budget of datagrams; the rest are dropped and counted.
#[test]
fn held_bytes_are_bounded() {
    let mut sim = Sim::new(2, lossless(), keyed(12), 46);
    for d in &mut sim.down {
        d.down = true;
    }
    let big = 60_000;
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_millis(400), 500.0, 1, big, &mut c);
    let s = sim.server.counters();
    let fit = (mptunnel::protocol::fresh::HOLD_MAX_BYTES / big) as u64;
    assert!(c[0] > 2 * fit, "{}", c[0]);
    assert_eq!(s.local_tx_datagrams, 0);
    assert!(
        s.held_dropped + fit >= c[0],
        "{} sent, {} dropped, {fit} fit",
        c[0],
        s.held_dropped
    );
}

/// Keyed: forged header-only packets (no valid tag) of unknown epochs make the server send
/// nothing and hold nothing.
#[test]
fn unauthenticated_packets_cause_nothing() {
    let mut sim = Sim::new(2, lossless(), keyed(13), 47);
    let mut r = Rng::new(3);
    let now = sim.now;
    for k in 0..2_000u32 {
        let mut b = vec![0u8; packet::SEALED_OVERHEAD + (k % 64) as usize];
        for x in b.iter_mut() {
            *x = r.next_u64() as u8;
        }
        b[0] = packet::MAGIC_VERSION;
        b[1] = PacketType::Data as u8;
        b[2] = FLAG_SEALED;
        b[3] = 0;
        sim.server.handle_datagram(now, stranger(k), &b);
    }
    sim.flush();
    let s = sim.server.counters();
    assert_eq!(s.net_tx_packets, 0, "the server answered forged packets");
    assert_eq!(s.challenges_sent, 0);
    assert_eq!(sim.server.client_epochs(), (0, 0, 0));
    assert!(s.auth_failures >= 2_000);
}

/// Plaintext: an attacker who can send to the client (on a bridge) forges DATA of new
/// server epochs for the live session; they are challenged, never answered, and the real
/// server's replies go on.
#[test]
fn forged_server_epochs_do_not_retire_the_real_one() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 48);
    sim.record = true;
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 200.0, 1, 100, &mut c);
    sim.record = false;
    let (_, any) = sim
        .recorded_up
        .iter()
        .find(|(_, b)| ptype(b) == Some(PacketType::Data))
        .expect("a DATA copy");
    let session = u64::from_be_bytes(any[4..12].try_into().expect("8 bytes"));
    let now = sim.now;
    for forged_epoch in [111u64, 222, 333, 444, 555, 666] {
        for seq in 1..20 {
            let h = Header {
                ptype: PacketType::Data,
                flags: FLAG_FROM_SERVER,
                path: 0,
                session,
                epoch: forged_epoch,
                seq,
            };
            let mut bytes = Vec::new();
            packet::encode(&mut bytes, &h, &payload(0, 10_000_000 + seq, 100));
            for path in 0..3 {
                sim.client.handle_datagram(now, path, &bytes);
            }
        }
    }
    sim.flush();
    let before = c[0];
    sim.run(Duration::from_secs(3), 200.0, 1, 100, &mut c);
    sim.assert_clean();
    assert_all_since(&sim, before, c[0], "the real server's replies");
    assert!(
        !sim.received(0).keys().any(|n| *n >= 10_000_000),
        "a forged datagram reached the app"
    );
    assert!(sim.client.counters().challenges_sent >= 1);
}

/// One-datagram sessions (a DNS query from a new port each time) over three paths with
/// 30 % loss each way: a round trip fails only if all three copies die in one direction, so
/// about 1 - (1 - 0.3³)² = 5.3 % fail; the replies get all three paths from the first one.
#[test]
fn one_datagram_sessions_get_every_path() {
    for (mode, params) in modes() {
        let link = Link {
            loss: 0.3,
            delay_ms: 10.0,
            jitter_ms: 4.0,
            ..Link::default()
        };
        let params = Params {
            max_sessions: 8192,
            ..params
        };
        let mut sim = Sim::new(3, link, params, 49);
        // The client and server meet (and, with a key, the client's epoch passes its
        // challenge) on one session first.
        let mut warm = vec![0u64; 1];
        sim.run(Duration::from_millis(500), 50.0, 1, 40, &mut warm);
        let apps = 3000;
        for a in 1..=apps {
            let now = sim.now;
            sim.client
                .handle_local(now, app_addr(a), &payload(a, 1, 40));
            sim.flush();
            let until = sim.now - sim.t0 + Duration::from_millis(3);
            sim.run(until, 1.0, 0, 0, &mut Vec::new());
        }
        let until = sim.now - sim.t0 + Duration::from_secs(1);
        sim.run(until, 1.0, 0, 0, &mut Vec::new());
        sim.assert_clean();
        let ok = (1..=apps)
            .filter(|a| sim.received(*a).contains_key(&1))
            .count();
        let rate = ok as f64 / apps as f64;
        println!(
            "{mode}: {ok} of {apps} one-datagram sessions answered ({:.1} %)",
            100.0 * rate
        );
        assert!(rate >= 0.925, "{mode}: only {:.1} % answered", 100.0 * rate);
    }
}

/// A slower bridge's copies are mostly duplicates (the faster one delivers first), yet they
/// came from its address: they earn it the anti-amplification budget, so the server's
/// replies on it are not cut while it has not answered its validation probe (here it never
/// can: its down link is dark).
#[test]
fn duplicates_earn_a_slow_bridge_its_amplification_budget() {
    for (mode, params) in modes() {
        let link = Link {
            delay_ms: 5.0,
            ..Link::default()
        };
        let mut sim = Sim::new(2, link, params, 51);
        sim.up[1].delay_ms = 40.0;
        sim.down[1].down = true;
        let mut c = [0u64];
        sim.run(Duration::from_secs(3), 200.0, 1, 100, &mut c);
        assert!(!sim.server.bridge_validated(&bridge_addr(1)), "{mode}");
        let st = sim.server.stats(sim.now);
        let slow = bridge_addr(1).to_string();
        let tx = st
            .paths
            .iter()
            .find(|p| p.name == slow)
            .map_or(0, |p| p.tx_packets);
        println!(
            "{mode}: {tx} packets to the slow unvalidated bridge, {} cut",
            st.totals.amplification_drops
        );
        assert_eq!(st.totals.amplification_drops, 0, "{mode}");
        assert!(tx > 500, "{mode}: {tx}");
    }
}

/// After a server restart, a bridge releases DATA of the old server epoch that it held back
/// (never delivered), interleaved with the new epoch's traffic: the client announces its
/// mode again only for the new epoch, once, not at each switch between the two.
#[test]
fn held_back_copies_of_an_old_server_epoch_cause_no_announcements() {
    use mptunnel::protocol::scheduler::Mode;
    for (mode, params) in modes() {
        let mut sim = Sim::new(2, lossless(), params, 52);
        sim.restart_client_as(Mode::Failover, specs(2));
        let mut c = [0u64];
        sim.run(Duration::from_secs(2), 500.0, 1, 100, &mut c);
        // 60 ms of the server's packets held back on both links (so never delivered).
        sim.record_down = true;
        for l in &mut sim.down {
            l.down = true;
        }
        sim.run(Duration::from_millis(2060), 500.0, 1, 100, &mut c);
        sim.record_down = false;
        for l in &mut sim.down {
            l.down = false;
        }
        let held: Vec<(usize, Vec<u8>)> = std::mem::take(&mut sim.recorded_down)
            .into_iter()
            .filter(|(_, b)| ptype(b) == Some(PacketType::Data))
            .collect();
        assert!(held.len() >= 20, "{mode}: {} held", held.len());
        sim.restart_server();
        sim.run(Duration::from_secs(4), 500.0, 1, 100, &mut c);
        // Now release them, one every 10 ms, while the new epoch's replies flow.
        sim.record = true;
        sim.recorded_up.clear();
        let mut at = Duration::from_secs(4);
        for (path, bytes) in &held {
            let now = sim.now;
            sim.client.handle_datagram(now, *path, bytes);
            sim.flush();
            at += Duration::from_millis(10);
            sim.run(at, 500.0, 1, 100, &mut c);
        }
        sim.record = false;
        let announces = sim
            .recorded_up
            .iter()
            .filter(|(_, b)| ptype(b) == Some(PacketType::Announce))
            .count();
        let secs = (at - Duration::from_secs(4)).as_secs_f64();
        println!(
            "{mode}: {} held copies released over {secs:.1} s, {announces} announcements",
            held.len()
        );
        // The periodic one (each second, on both paths), and nothing per released copy.
        assert!(
            announces as f64 <= 2.0 * (secs + 1.0),
            "{mode}: {announces} announcements"
        );
    }
}
