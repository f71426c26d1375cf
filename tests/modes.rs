//! The scheduling modes in the simulator: failover's switch time and stability, k-best's
//! choice, balance's proportions, backup paths, and the loss figures the modes decide from.

mod sim;

use std::time::Duration;

use mptunnel::protocol::params::Params;
use mptunnel::protocol::scheduler::Mode;
use sim::*;

fn link(delay_ms: f64) -> Link {
    Link {
        delay_ms,
        jitter_ms: 1.0,
        ..Link::default()
    }
}

/// A simulator whose client runs in `mode` over paths with these links (same both ways).
fn sim_with(mode: Mode, links: &[Link], seed: u64) -> Sim {
    let mut s = Sim::new(links.len(), lossless(), Params::default(), seed);
    s.up = links.to_vec();
    s.down = links.to_vec();
    s.restart_client_as(mode, specs(links.len()));
    s
}

/// Datagrams 1..=sent the app never got back, but for the last 50 ms (still on the way).
fn missing(s: &Sim, sent: u64) -> Vec<u64> {
    let got = s.received(0);
    let settled = sent.saturating_sub((RATE * 0.05) as u64);
    (1..=settled).filter(|n| !got.contains_key(n)).collect()
}

fn data_tx(s: &Sim) -> Vec<u64> {
    s.client
        .stats(s.now)
        .paths
        .iter()
        .map(|p| p.tx_packets)
        .collect()
}

fn delta(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| y - x).collect()
}

const RATE: f64 = 500.0;

/// Blackholes path 0 both ways, keeps the 500/s echo flow going until `until_s` seconds,
/// lets the last replies arrive (1 s more), and returns the datagrams never echoed.
fn blackhole_first_path(s: &mut Sim, c: &mut [u64; 1], until_s: u64) -> Vec<u64> {
    for l in [&mut s.up[0], &mut s.down[0]] {
        l.down = true;
    }
    s.run(Duration::from_secs(until_s), RATE, 1, 100, c);
    s.run(Duration::from_secs(until_s + 1), RATE, 0, 100, c);
    missing(s, c[0])
}

/// The blackholed active path of a 500/s echo flow costs about 150 ms of traffic: a few RTTs
/// to doubt it, while the next best path takes copies, then the switch once it is down.
#[test]
fn failover_blackholing_the_active_path_costs_little() {
    let mut s = sim_with(Mode::Failover, &[link(10.0), link(15.0), link(20.0)], 7);
    let mut c = [0u64];
    s.run(Duration::from_secs(5), RATE, 1, 100, &mut c);
    assert_eq!(
        s.client.active_path(),
        Some(0),
        "the fastest path is active"
    );
    let m = missing(&s, c[0]);
    assert!(
        m.is_empty(),
        "lost before: {} {:?}",
        m.len(),
        &m[..m.len().min(40)]
    );
    // Only the active path carries data (both ways) while it is well.
    let before = data_tx(&s);
    s.run(Duration::from_secs(7), RATE, 1, 100, &mut c);
    let d = delta(&before, &data_tx(&s));
    assert!(d[0] > 900 && d[1] < 30 && d[2] < 30, "tx per path {d:?}");
    let lost = blackhole_first_path(&mut s, &mut c, 12);
    let lost_ms = lost.len() as f64 * 1000.0 / RATE;
    println!(
        "failover: {} datagrams lost ({lost_ms:.0} ms of traffic)",
        lost.len()
    );
    assert!(lost_ms <= 150.0, "lost {lost_ms} ms: {lost:?}");
    assert_eq!(s.client.active_path(), Some(1), "the next best took over");
    s.assert_clean();
}

/// Same without the doubt rule (redundant copies only once the path is down) would lose
/// the whole detection time; with `redundant` nothing is lost at all.
#[test]
fn redundant_blackholing_one_path_loses_nothing() {
    let mut s = sim_with(Mode::Redundant, &[link(10.0), link(15.0), link(20.0)], 8);
    let mut c = [0u64];
    s.run(Duration::from_secs(3), RATE, 1, 100, &mut c);
    assert_eq!(blackhole_first_path(&mut s, &mut c, 8), Vec::<u64>::new());
    s.assert_clean();
}

/// Two clean paths of the same RTT with heavy jitter, and a third at 30 % loss: the active
/// path does not flap, and the lossy one is never chosen.
#[test]
fn failover_does_not_flap_under_jitter_and_loss() {
    let jittery = Link {
        delay_ms: 10.0,
        jitter_ms: 8.0,
        ..Link::default()
    };
    let lossy = Link {
        delay_ms: 2.0,
        loss: 0.3,
        jitter_ms: 8.0,
        ..Link::default()
    };
    let mut s = sim_with(Mode::Failover, &[lossy, jittery, jittery], 9);
    let mut c = [0u64];
    let mut switches = 0;
    let mut last = None;
    let mut on_lossy = 0;
    for step in 1..=300 {
        s.run(Duration::from_millis(100 * step), RATE, 1, 100, &mut c);
        let a = s.client.active_path();
        if step > 20 && a != last {
            switches += 1;
        }
        if step > 20 && a == Some(0) {
            on_lossy += 1;
        }
        last = a;
    }
    println!("failover under jitter and loss: {switches} switches in 28 s");
    assert!(switches <= 1, "{switches} switches");
    assert_eq!(on_lossy, 0, "the lossy path was active");
}

/// k-best=2 of four paths: the two with the best score (RTT plus 10 per point of loss).
#[test]
fn k_best_chooses_the_best_paths() {
    let lossy_fast = Link {
        delay_ms: 2.0,
        loss: 0.2,
        ..Link::default()
    };
    let mut s = sim_with(
        Mode::KBest(2),
        &[link(30.0), lossy_fast, link(5.0), link(12.0)],
        10,
    );
    let mut c = [0u64];
    s.run(Duration::from_secs(4), RATE, 1, 100, &mut c);
    let before = data_tx(&s);
    s.run(Duration::from_secs(10), RATE, 1, 100, &mut c);
    let d = delta(&before, &data_tx(&s));
    println!("k-best=2 tx per path: {d:?}");
    // Paths 2 (5 ms) and 3 (12 ms) carry each datagram; the others only probes.
    assert!(d[2] >= 2900 && d[3] >= 2900, "{d:?}");
    assert!(d[0] < 60 && d[1] < 60, "{d:?}");
}

/// Balance over two paths of 3,000 and 1,000 packets/s under 3,600/s: each path's share of
/// the datagrams is within 10 % of its share of the capacity (75 % / 25 %).
#[test]
fn balance_spreads_in_proportion_to_capacity() {
    let fast = Link {
        rate_pps: 3000.0,
        ..link(5.0)
    };
    let slow = Link {
        rate_pps: 1000.0,
        ..link(5.0)
    };
    let mut s = sim_with(Mode::Balance, &[fast, slow], 11);
    let mut c = [0u64];
    s.run(Duration::from_secs(5), 3600.0, 1, 100, &mut c);
    let before = data_tx(&s);
    let got_before = s.received(0).len();
    s.run(Duration::from_secs(15), 3600.0, 1, 100, &mut c);
    let d = delta(&before, &data_tx(&s));
    let share = d[0] as f64 / (d[0] + d[1]) as f64;
    let delivered = (s.received(0).len() - got_before) as f64 / 10.0;
    println!(
        "balance: shares {:.1} % / {:.1} %, {delivered:.0} echoes/s",
        share * 100.0,
        (1.0 - share) * 100.0
    );
    assert!(
        (share - 0.75).abs() <= 0.075,
        "share of the fast path {share}"
    );
    // More than the better path alone could carry.
    assert!(delivered > 3000.0, "{delivered}/s");
}

/// Balance over three clean paths, the first blackholed mid-stream (500/s echo): the dark
/// path's share moves to the others once it is in doubt (a few RTTs), in both directions,
/// rather than once it is down (1 s, a third of the flow lost meanwhile).
#[test]
fn balance_blackholing_a_path_costs_only_the_doubt_time() {
    let mut s = sim_with(Mode::Balance, &[link(10.0), link(15.0), link(20.0)], 15);
    let mut c = [0u64];
    s.run(Duration::from_secs(5), RATE, 1, 100, &mut c);
    assert!(missing(&s, c[0]).is_empty(), "lost before the blackhole");
    let before = data_tx(&s);
    s.run(Duration::from_secs(8), RATE, 1, 100, &mut c);
    let d = delta(&before, &data_tx(&s));
    assert!(
        d.iter().all(|&n| n > 300),
        "every path carries a share: {d:?}"
    );
    let lost = blackhole_first_path(&mut s, &mut c, 14);
    let lost_ms = lost.len() as f64 * 1000.0 / RATE;
    println!(
        "balance: {} datagrams lost ({lost_ms:.0} ms of traffic)",
        lost.len()
    );
    assert!(lost_ms <= 100.0, "lost {lost_ms} ms: {lost:?}");
    s.assert_clean();
}

/// An idle backup path that never answers (its down link is dark) stays probed sparingly
/// in failover: being in doubt does not speed up a path that carries no data.
#[test]
fn a_silent_idle_backup_path_stays_probed_sparingly() {
    let mut specs = specs(3);
    specs[2].backup = true;
    let mut s = Sim::new(3, link(10.0), Params::default(), 17);
    s.restart_client_as(Mode::Failover, specs);
    s.down[2].down = true;
    let mut c = [0u64];
    s.run(Duration::from_secs(6), RATE, 1, 100, &mut c);
    let st = s.client.stats(s.now);
    println!("idle backup: {} probes in 6 s", st.paths[2].probes_sent);
    assert!(st.paths[2].probes_sent <= 10, "{:?}", st.paths[2]);
    s.assert_clean();
}

/// A backup path carries nothing while another path is up, everything once they are down,
/// and is probed less often meanwhile.
#[test]
fn a_backup_path_carries_data_only_when_the_others_are_down() {
    let mut specs = specs(2);
    specs[1].backup = true;
    let mut s = Sim::new(2, link(10.0), Params::default(), 12);
    s.restart_client_as(Mode::Redundant, specs);
    let mut c = [0u64];
    s.run(Duration::from_secs(4), RATE, 1, 100, &mut c);
    let st = s.client.stats(s.now);
    assert!(st.paths[1].tx_packets < 10, "{:?}", st.paths[1]);
    assert!(st.paths[1].probes_sent < st.paths[0].probes_sent / 2);
    s.up[0].down = true;
    s.down[0].down = true;
    let before = data_tx(&s);
    s.run(Duration::from_secs(8), RATE, 1, 100, &mut c);
    let d = delta(&before, &data_tx(&s));
    assert!(d[1] > 1500, "{d:?}");
    s.assert_clean();
}

/// With data flowing both ways at 1,000/s, each path's loss figures, out and in, are within
/// 3 points of the link's real loss after 10 s.
#[test]
fn loss_figures_follow_the_real_loss() {
    let l = |loss: f64| Link { loss, ..link(10.0) };
    let mut s = sim_with(Mode::Redundant, &[l(0.1), l(0.2), l(0.3)], 13);
    s.up[0].loss = 0.05;
    let mut c = [0u64];
    s.run(Duration::from_secs(10), 1000.0, 1, 100, &mut c);
    let st = s.client.stats(s.now);
    for (i, p) in st.paths.iter().enumerate() {
        let (o, n) = (p.loss_out.unwrap(), p.loss_in.unwrap());
        println!(
            "path {i}: out {:.1} % (real {:.0} %), in {:.1} % (real {:.0} %)",
            o * 100.0,
            s.up[i].loss * 100.0,
            n * 100.0,
            s.down[i].loss * 100.0
        );
        assert!((o - s.up[i].loss).abs() <= 0.03, "path {i} out {o}");
        assert!((n - s.down[i].loss).abs() <= 0.03, "path {i} in {n}");
    }
}

/// The server follows a new client's mode from its first replies on, not from the next
/// repeat of the announcement (the first one reached the server before it held the
/// client, and was dropped there): plaintext and keyed.
#[test]
fn the_server_follows_a_new_clients_mode_at_once() {
    for params in [Params::default(), keyed(4)] {
        let mut s = Sim::new(2, link(10.0), params, 16);
        s.restart_client_as(Mode::Failover, specs(2));
        s.up[1].delay_ms = 20.0;
        s.down[1].delay_ms = 20.0;
        let mut c = [0u64];
        s.run(Duration::from_millis(300), RATE, 1, 100, &mut c);
        let tx = |s: &Sim, i: usize| {
            let a = bridge_addr(i).to_string();
            s.server
                .stats(s.now)
                .paths
                .iter()
                .find(|p| p.name == a)
                .map_or(0, |p| p.tx_packets)
        };
        let before = tx(&s, 1);
        s.run(Duration::from_millis(900), RATE, 1, 100, &mut c);
        let second = tx(&s, 1) - before;
        // 300 datagrams went back meanwhile; the standby path gets its probe acks only.
        assert!(second < 20, "{second} replies on the standby path");
        s.assert_clean();
    }
}

/// The server schedules a client's replies the way the client announced: in failover, on
/// the active path only; after a switch at run time, on every path again.
#[test]
fn the_server_follows_the_clients_mode() {
    let mut s = sim_with(Mode::Failover, &[link(10.0), link(20.0)], 14);
    let mut c = [0u64];
    s.run(Duration::from_secs(3), RATE, 1, 100, &mut c);
    // What the server sent to each bridge.
    let rx = |s: &Sim| -> Vec<u64> {
        let st = s.server.stats(s.now);
        (0..2)
            .map(|i| {
                let a = bridge_addr(i).to_string();
                st.paths
                    .iter()
                    .find(|p| p.name == a)
                    .map_or(0, |p| p.tx_packets)
            })
            .collect()
    };
    let before = rx(&s);
    s.run(Duration::from_secs(6), RATE, 1, 100, &mut c);
    let d = delta(&before, &rx(&s));
    assert!(d[0] > 1400 && d[1] < 40, "replies per path {d:?}");
    let now = s.now;
    s.client.set_mode(now, Mode::Redundant);
    s.run(Duration::from_secs(7), RATE, 1, 100, &mut c);
    let before = rx(&s);
    s.run(Duration::from_secs(9), RATE, 1, 100, &mut c);
    let d = delta(&before, &rx(&s));
    assert!(d[0] > 900 && d[1] > 900, "replies per path {d:?}");
    let srv = s.server.stats(s.now);
    assert_eq!(srv.clients.len(), 1);
    assert_eq!(srv.clients[0].mode, "redundant");
    assert!(
        srv.clients[0].paths.iter().all(|p| p.rtt_ms.is_some()),
        "{:?}",
        srv.clients
    );
    s.assert_clean();
}
