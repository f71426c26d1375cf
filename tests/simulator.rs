//! Simulator tests: sessions, restarts, loss, replays and keyed mode, in virtual time.

mod sim;

use std::time::{Duration, Instant};

use mptunnel::protocol::endpoint::Endpoint as _;
use mptunnel::protocol::params::Params;
use mptunnel::protocol::path::PathState;
use mptunnel::protocol::rng::Rng;
use mptunnel::protocol::secure_rng::Seed;
use mptunnel::protocol::server::Server;
use sim::*;

#[test]
fn lossless_paths_deliver_everything_exactly_once() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 1);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(5), 1000.0, 1, 1200, &mut c);
    sim.assert_clean();
    // Everything but what is still in flight at the end: no gap before the last 20.
    let missing: Vec<u64> = (1..=c[0] - 20)
        .filter(|n| !sim.received(0).contains_key(n))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} of {}", c[0]);
    let s = sim.server.counters();
    assert!(
        s.duplicates >= 2 * (c[0] - 20),
        "server dropped {} duplicate copies",
        s.duplicates
    );
    for i in 0..3 {
        assert_eq!(sim.client.path_state(i), Some(PathState::Up));
    }
}

#[test]
fn three_lossy_paths_give_product_loss() {
    let link = Link {
        loss: 0.3,
        delay_ms: 10.0,
        jitter_ms: 5.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, Params::default(), 2);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(20), 2000.0, 1, 200, &mut c);
    sim.assert_clean();
    let sent = c[0] - 100; // ignore the tail still in flight
    let got = (1..=sent)
        .filter(|n| sim.received(0).contains_key(n))
        .count() as f64;
    let loss = 1.0 - got / sent as f64;
    let theory = 1.0 - (1.0f64 - 0.3f64.powi(3)).powi(2);
    assert!(
        (loss - theory).abs() < 0.01,
        "loss {loss:.4} vs theory {theory:.4}"
    );
    // 30 % loss must not make paths flap down.
    for i in 0..3 {
        assert_ne!(sim.client.path_state(i), Some(PathState::Down));
    }
}

#[test]
fn idle_lossy_path_does_not_flap_down() {
    // Only probes on the wire: 30 % loss each way for 10 virtual minutes.
    let link = Link {
        loss: 0.3,
        delay_ms: 20.0,
        jitter_ms: 5.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, Params::default(), 3);
    let mut c = vec![];
    sim.run(Duration::from_secs(600), 1.0, 0, 0, &mut c);
    let downs: u64 = sim
        .client
        .stats(sim.now)
        .paths
        .iter()
        .map(|p| p.downs)
        .sum();
    // 30 minutes of path-time; the expected false-down rate here is about 1e-4 per hour.
    assert!(downs <= 1, "{downs} false downs in 30 path-minutes");
}

#[test]
fn server_restart_resumes_at_once() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 4);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 1000.0, 1, 100, &mut c);
    let before = c[0];
    sim.restart_server();
    sim.run(Duration::from_secs(4), 1000.0, 1, 100, &mut c);
    sim.assert_clean();
    let lost: Vec<u64> = (1..c[0] - 20)
        .filter(|n| !sim.received(0).contains_key(n))
        .collect();
    // Only what was in flight at the moment of the restart may be lost (~10 ms at 1000/s).
    assert!(
        lost.len() <= 15,
        "lost {} datagrams: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(lost.iter().all(|n| n.abs_diff(before) <= 15));
    assert_eq!(sim.server.session_count(), 1);
    assert_eq!(sim.client.counters().peer_restarts, 1);
}

#[test]
fn client_restart_resumes_at_once_and_old_session_expires() {
    let params = Params {
        idle_timeout: Duration::from_secs(3),
        ..Params::default()
    };
    let mut sim = Sim::new(3, lossless(), params, 5);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 1000.0, 1, 100, &mut c);
    let before = c[0];
    sim.restart_client();
    sim.run(Duration::from_secs(4), 1000.0, 1, 100, &mut c);
    sim.assert_clean();
    let lost: Vec<u64> = (1..c[0] - 20)
        .filter(|n| !sim.received(0).contains_key(n))
        .collect();
    assert!(lost.len() <= 15, "lost {}", lost.len());
    assert!(lost.iter().all(|n| n.abs_diff(before) <= 15));
    assert_eq!(sim.server.session_count(), 2);
    sim.run(Duration::from_secs(8), 1000.0, 1, 100, &mut c);
    assert_eq!(
        sim.server.session_count(),
        1,
        "the dead client's session expires"
    );
    assert_eq!(sim.target_sessions, 1, "and its target socket is closed");
}

#[test]
fn path_death_and_return() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 6);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 500.0, 1, 100, &mut c);
    sim.up[1].down = true;
    sim.down[1].down = true;
    sim.run(Duration::from_millis(2900), 500.0, 1, 100, &mut c);
    assert_eq!(
        sim.client.path_state(1),
        Some(PathState::Up),
        "not down before ~1 s"
    );
    sim.run(Duration::from_millis(3200), 500.0, 1, 100, &mut c);
    assert_eq!(
        sim.client.path_state(1),
        Some(PathState::Down),
        "down within ~1.2 s"
    );
    let sent_on_1 = sim.client.stats(sim.now).paths[1].tx_packets;
    sim.run(Duration::from_secs(5), 500.0, 1, 100, &mut c);
    let while_down = sim.client.stats(sim.now).paths[1].tx_packets - sent_on_1;
    assert!(
        while_down < 100,
        "a down path carries probes, not data ({while_down} packets)"
    );
    sim.up[1].down = false;
    sim.down[1].down = false;
    sim.run(Duration::from_millis(5300), 500.0, 1, 100, &mut c);
    assert_eq!(
        sim.client.path_state(1),
        Some(PathState::Up),
        "back up within ~0.3 s"
    );
    sim.assert_clean();
    let lost = (1..c[0] - 10)
        .filter(|n| !sim.received(0).contains_key(n))
        .count();
    assert_eq!(lost, 0, "the other paths carried everything");
}

#[test]
fn many_sessions_without_cross_talk() {
    let link = Link {
        loss: 0.2,
        delay_ms: 5.0,
        jitter_ms: 3.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, Params::default(), 7);
    let mut c = vec![0u64; 300];
    sim.run(Duration::from_secs(3), 20.0, 300, 64, &mut c);
    sim.assert_clean();
    assert_eq!(sim.server.session_count(), 300);
    assert_eq!(sim.target_sessions, 300);
    for (a, sent) in c.iter().enumerate() {
        assert!(
            sim.received(a).len() as u64 >= sent * 8 / 10,
            "app {a} starved"
        );
    }
}

#[test]
fn corrupted_and_duplicated_copies_never_reach_the_app() {
    let link = Link {
        corrupt: 0.3,
        duplicate: 0.5,
        delay_ms: 5.0,
        jitter_ms: 5.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, Params::default(), 8);
    let mut c = vec![0u64; 2];
    sim.run(Duration::from_secs(5), 500.0, 2, 300, &mut c);
    sim.assert_clean();
    assert!(sim.server.counters().checksum_errors > 100);
    assert!(sim.client.counters().checksum_errors > 100);
    // A corrupted first copy must not shadow a good later one: a round trip is lost only
    // when every copy in one direction is corrupted (at most ~5.3 % here, less with duplicates).
    let got = sim.received(0).len() as f64;
    assert!(got >= (c[0] - 20) as f64 * 0.94, "got {got} of {}", c[0]);
}

#[test]
fn replays_are_dropped_even_much_later() {
    let mut sim = Sim::new(2, lossless(), Params::default(), 9);
    sim.record = true;
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 200.0, 1, 100, &mut c);
    sim.record = false;
    let recorded = std::mem::take(&mut sim.recorded_up);
    let delivered_before = sim.server.counters().local_tx_datagrams;
    sim.run(Duration::from_secs(3), 200.0, 1, 100, &mut c);
    let delivered_mid = sim.server.counters().local_tx_datagrams;
    // Replay every recorded packet now, on its own path and crossed over.
    let now = sim.now;
    let refused_before = {
        let s = sim.server.counters();
        s.duplicates + s.too_old
    };
    for (i, bytes) in &recorded {
        sim.server.handle_datagram(now, bridge_addr(*i), bytes);
        sim.server.handle_datagram(now, bridge_addr(1 - *i), bytes);
    }
    sim.flush();
    assert_eq!(
        sim.server.counters().local_tx_datagrams,
        delivered_mid,
        "a replay reached the target"
    );
    assert!(delivered_mid > delivered_before);
    // Every replayed DATA packet (two copies each) was refused as a duplicate or as too old.
    let s = sim.server.counters();
    let refused = s.duplicates + s.too_old - refused_before;
    let replayed_data = 2 * (delivered_before as usize) as u64;
    assert!(
        refused >= replayed_data,
        "{refused} refused of {replayed_data} replayed data packets"
    );
}

#[test]
fn session_cap_refuses_new_sessions_and_counts() {
    let params = Params {
        max_sessions: 10,
        ..Params::default()
    };
    let mut sim = Sim::new(2, lossless(), params, 10);
    let mut c = vec![0u64; 20];
    sim.run(Duration::from_secs(1), 50.0, 20, 50, &mut c);
    sim.assert_clean();
    assert_eq!(sim.server.session_count(), 10);
    assert_eq!(sim.client.session_count(), 10);
    assert!(sim.client.counters().session_cap_drops > 0);
}

#[test]
fn clean_client_shutdown_closes_server_sessions() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 11);
    let mut c = vec![0u64; 3];
    sim.run(Duration::from_secs(1), 100.0, 3, 50, &mut c);
    assert_eq!(sim.server.session_count(), 3);
    let now = sim.now;
    sim.client.close(now);
    sim.flush();
    let mut none = vec![];
    sim.run(Duration::from_secs(2), 1.0, 0, 0, &mut none);
    assert_eq!(sim.server.session_count(), 0);
    assert_eq!(sim.target_sessions, 0);
    assert_eq!(sim.server.counters().close_received, 3);
}

#[test]
fn server_shutdown_close_keeps_client_sessions() {
    let mut sim = Sim::new(3, lossless(), Params::default(), 12);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 100.0, 1, 50, &mut c);
    let now = sim.now;
    sim.server.close(now);
    sim.flush();
    let mut none = vec![];
    sim.run(Duration::from_millis(1100), 1.0, 0, 0, &mut none);
    assert_eq!(sim.client.session_count(), 1);
    assert_eq!(sim.client.counters().close_received, 1);
    sim.restart_server();
    sim.run(Duration::from_secs(2), 100.0, 1, 50, &mut c);
    sim.assert_clean();
    let recent = (c[0] - 80..c[0] - 5)
        .filter(|n| sim.received(0).contains_key(n))
        .count();
    assert_eq!(recent, 75, "traffic resumed with the new server");
}

#[test]
fn oversized_and_garbage_are_counted() {
    let mut sim = Sim::new(1, lossless(), Params::default(), 13);
    let now = sim.now;
    sim.client
        .handle_local(now, app_addr(0), &vec![0u8; 70_000]);
    assert_eq!(sim.client.counters().oversized, 1);
    let mut r = Rng::new(5);
    for len in 0..200usize {
        let g: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
        sim.server.handle_datagram(now, bridge_addr(0), &g);
        sim.client.handle_datagram(now, 0, &g);
        sim.client.handle_datagram(now, 99, &g);
    }
    sim.flush();
    assert_eq!(sim.server.session_count(), 0);
    assert!(sim.server.counters().malformed >= 150);
    // The client counts both copies of each (on a path of its own and on an unknown path).
    assert!(
        sim.client.counters().malformed >= 350,
        "{:?}",
        sim.client.counters()
    );
}

// ---- Keyed mode -------------------------------------------------------------------------

#[test]
fn keyed_round_trip_is_sealed_and_exact() {
    let mut sim = Sim::new(3, lossless(), keyed(1), 20);
    sim.record = true;
    let mut c = vec![0u64; 2];
    sim.run(Duration::from_secs(3), 500.0, 2, 300, &mut c);
    sim.assert_clean();
    for (a, sent) in c.iter().enumerate() {
        assert!(sim.received(a).len() as u64 >= sent - 10);
    }
    // Every packet on the wire is sealed, and the payload pattern never shows in clear.
    let needle = &payload(0, 5, 300)[12..40];
    for (_, b) in &sim.recorded_up {
        assert_eq!(b[2] & 1, 1, "SEALED flag");
        assert!(!b.windows(needle.len()).any(|w| w == needle));
    }
    // The client's epoch is admitted after one challenge, for both its sessions.
    assert_eq!(sim.server.counters().challenges_answered, 1);
    assert_eq!(
        sim.client.counters().challenges_sent,
        0,
        "first server epoch needs none"
    );
}

#[test]
fn keyed_product_loss() {
    let link = Link {
        loss: 0.3,
        delay_ms: 10.0,
        jitter_ms: 5.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, keyed(2), 21);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(20), 2000.0, 1, 200, &mut c);
    sim.assert_clean();
    let sent = c[0] - 100;
    let got = (1..=sent)
        .filter(|n| sim.received(0).contains_key(n))
        .count() as f64;
    let loss = 1.0 - got / sent as f64;
    let theory = 1.0 - (1.0f64 - 0.3f64.powi(3)).powi(2);
    assert!(
        (loss - theory).abs() < 0.01,
        "loss {loss:.4} vs theory {theory:.4}"
    );
}

#[test]
fn wrong_key_gets_nothing_through_and_is_counted() {
    let mut sim = Sim::new(3, lossless(), keyed(3), 22);
    sim.server = Server::new(keyed(4), &Seed::from_u64(99), sim.now);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 200.0, 1, 100, &mut c);
    assert!(sim.received(0).is_empty());
    assert_eq!(sim.server.session_count(), 0);
    assert_eq!(sim.target_sessions, 0);
    assert!(sim.server.counters().auth_failures > 300);
    // Plaintext against keyed is refused the same way.
    let mut sim = Sim::new(3, lossless(), keyed(3), 23);
    sim.server = Server::new(Params::default(), &Seed::from_u64(99), sim.now);
    sim.run(Duration::from_secs(1), 200.0, 1, 100, &mut c);
    assert!(sim.received(0).is_empty());
    assert!(sim.server.counters().auth_failures > 100);
}

#[test]
fn keyed_restarts_of_either_side_resume() {
    let mut sim = Sim::new(3, lossless(), keyed(5), 24);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 1000.0, 1, 100, &mut c);
    let at_server_restart = c[0];
    sim.restart_server();
    sim.run(Duration::from_secs(4), 1000.0, 1, 100, &mut c);
    let at_client_restart = c[0];
    // The client confirmed the restarted server's epoch with a challenge of its own.
    let client_answered = sim.client.counters().challenges_answered;
    sim.restart_client();
    sim.run(Duration::from_secs(6), 1000.0, 1, 100, &mut c);
    sim.assert_clean();
    let lost: Vec<u64> = (1..c[0] - 30)
        .filter(|n| !sim.received(0).contains_key(n))
        .collect();
    // A restart costs the packets in flight plus about one challenge round trip (~11 ms).
    assert!(
        lost.len() <= 50,
        "lost {}: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    // (Also the first few: the server starts with the traffic, so the client cannot tell them
    // from packets a previous server instance might have seen.)
    assert!(
        lost.iter().all(|n| *n <= 15
            || n.abs_diff(at_server_restart) <= 25
            || n.abs_diff(at_client_restart) <= 25),
        "{lost:?}"
    );
    assert!(
        client_answered >= 1,
        "the client never challenged the new server"
    );
    // The server confirmed its first client and then the restarted one.
    assert!(
        sim.server.counters().challenges_answered >= 2,
        "{:?}",
        sim.server.counters()
    );
}

#[test]
fn keyed_replays_after_a_server_restart_are_refused() {
    let mut sim = Sim::new(2, lossless(), keyed(6), 25);
    sim.record = true;
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 200.0, 1, 100, &mut c);
    sim.record = false;
    let recorded = std::mem::take(&mut sim.recorded_up);
    sim.run(Duration::from_secs(5), 200.0, 1, 100, &mut c);
    // The server restarts; then an attacker replays everything recorded 3-5 s ago while the
    // real client, which still runs under the same epoch, keeps answering challenges.
    sim.restart_server();
    let now = sim.now;
    for (i, bytes) in &recorded {
        sim.server.handle_datagram(now, bridge_addr(*i), bytes);
    }
    sim.flush();
    sim.run(Duration::from_secs(7), 200.0, 1, 100, &mut c);
    sim.assert_clean();
    // The tunnel still works after the attack.
    let recent = (c[0] - 150..c[0] - 10)
        .filter(|n| sim.received(0).contains_key(n))
        .count();
    assert_eq!(recent, 140);
}

#[test]
fn keyed_replays_after_expiry_are_refused() {
    let params = Params {
        idle_timeout: Duration::from_secs(2),
        ..keyed(7)
    };
    let mut sim = Sim::new(2, lossless(), params, 26);
    sim.record = true;
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 200.0, 1, 100, &mut c);
    sim.record = false;
    let recorded = std::mem::take(&mut sim.recorded_up);
    let mut none = vec![];
    sim.run(Duration::from_secs(5), 1.0, 0, 0, &mut none);
    assert_eq!(sim.server.session_count(), 0, "expired");
    let delivered = sim.server.counters().local_tx_datagrams;
    assert!(delivered >= c[0] - 5, "{delivered} of {}", c[0]);
    // The client still holds its session (its own idle timer is the same, but it also
    // refreshed on replies); replay everything.
    let now = sim.now;
    for (i, bytes) in &recorded {
        sim.server.handle_datagram(now, bridge_addr(*i), bytes);
    }
    sim.flush();
    sim.run(Duration::from_secs(7), 1.0, 0, 0, &mut none);
    sim.assert_clean();
    assert_eq!(
        sim.server.counters().local_tx_datagrams,
        delivered,
        "no replay reached the target"
    );
}

#[test]
fn keyed_corruption_is_an_auth_failure_never_a_delivery() {
    let link = Link {
        corrupt: 0.3,
        delay_ms: 5.0,
        jitter_ms: 5.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, keyed(8), 27);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(3), 500.0, 1, 300, &mut c);
    sim.assert_clean();
    assert!(sim.server.counters().auth_failures > 100);
    assert_eq!(sim.server.counters().checksum_errors, 0);
}

#[test]
fn duplicating_paths_do_not_skew_path_figures() {
    // Every packet arrives twice: probe counts must not double, or a clean path would
    // look 50 % lossy (each ack is matched once, each probe counted twice).
    let link = Link {
        duplicate: 1.0,
        delay_ms: 5.0,
        jitter_ms: 2.0,
        ..Link::default()
    };
    let mut sim = Sim::new(3, link, Params::default(), 30);
    let mut none = vec![];
    sim.run(Duration::from_secs(10), 1.0, 0, 0, &mut none);
    for p in sim.client.stats(sim.now).paths {
        assert_eq!(p.state, "up", "{p:?}");
        assert!(
            p.loss_in.unwrap_or(1.0) < 0.05 && p.loss_out.unwrap_or(1.0) < 0.05,
            "{p:?}"
        );
    }
    assert!(sim.server.counters().duplicates > 50);
}

#[test]
fn an_idle_server_sleeps_until_a_real_deadline() {
    let t0 = Instant::now();
    let fresh = Server::new(Params::default(), &Seed::from_u64(1), t0);
    assert_eq!(fresh.poll_timeout(), None, "nothing to do: no deadline");
    let params = Params {
        idle_timeout: Duration::from_secs(2),
        ..Params::default()
    };
    let mut sim = Sim::new(3, lossless(), params, 40);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(1), 100.0, 1, 50, &mut c);
    let busy = sim.server_wakeups;
    // Ten seconds without traffic: the client still probes every path (validated long ago),
    // the session expires once, and the client's epoch (kept alive by its probes) is looked
    // at once per idle timeout; nothing else is due on the server. (A 100 ms tick woke it
    // a hundred times.)
    let mut none = vec![];
    sim.run(Duration::from_secs(11), 1.0, 0, 0, &mut none);
    assert_eq!(sim.server.session_count(), 0, "expired");
    let idle = sim.server_wakeups - busy;
    assert!(idle <= 8, "the server woke {idle} times in 10 idle seconds");
}
