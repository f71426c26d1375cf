//! Deterministic simulator: a client and a server endpoint driven in virtual time over
//! paths with loss, delay, jitter, duplication and corruption. No sockets, no sleeping:
//! seconds of traffic run in milliseconds, and every run with the same seed is identical.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mptunnel::protocol::client::{Client, PathSpec};
use mptunnel::protocol::endpoint::Endpoint as _;
use mptunnel::protocol::event::Event as EndpointEvent;
use mptunnel::protocol::params::Params;
use mptunnel::protocol::path::PathState;
use mptunnel::protocol::rng::Rng;
use mptunnel::protocol::scheduler::Mode;
use mptunnel::protocol::server::Server;
use mptunnel::protocol::transmit::{ClientDest, ServerDest};

#[derive(Clone, Copy, Debug, Default)]
struct Link {
    loss: f64,
    delay_ms: f64,
    jitter_ms: f64,
    duplicate: f64,
    corrupt: f64,
    down: bool,
}

#[derive(Clone, Debug)]
enum Event {
    Server { path: usize, bytes: Vec<u8> },
    Client { path: usize, bytes: Vec<u8> },
    Target { session: u64, bytes: Vec<u8> },
}

struct Sim {
    t0: Instant,
    now: Instant,
    rng: Rng,
    client: Client,
    server: Server,
    params: Params,
    up: Vec<Link>,
    down: Vec<Link>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: HashMap<usize, Event>,
    next_id: usize,
    tie: u64,
    /// Per app: how many times each counter was delivered back to it.
    delivered: HashMap<SocketAddr, HashMap<u64, u32>>,
    corrupt_deliveries: u64,
    cross_talk: u64,
    target_sessions: usize,
    /// Every packet the client sent, for replay attacks.
    recorded_up: Vec<(usize, Vec<u8>)>,
    record: bool,
    seed_counter: u64,
    /// Times the server's timers ran.
    server_wakeups: u64,
}

fn bridge_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, i as u8 + 1), 40_000 + i as u16))
}

fn path_of(addr: &SocketAddr) -> usize {
    (addr.port() - 40_000) as usize
}

fn app_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 50_000 + i as u16))
}

fn payload(app: usize, n: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&(app as u32).to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    while p.len() < size {
        p.push((n as u8).wrapping_add(p.len() as u8).wrapping_mul(31));
    }
    p
}

fn specs(n: usize) -> Vec<PathSpec> {
    (0..n)
        .map(|i| PathSpec {
            name: format!("p{i}"),
            remote: bridge_addr(i).to_string(),
        })
        .collect()
}

impl Sim {
    fn new(paths: usize, link: Link, params: Params, seed: u64) -> Sim {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            rng: Rng::new(seed),
            client: Client::new(params.clone(), Mode::Redundant, specs(paths), seed ^ 1, t0),
            server: Server::new(params.clone(), seed ^ 2, t0),
            params,
            up: vec![link; paths],
            down: vec![link; paths],
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_id: 0,
            tie: 0,
            delivered: HashMap::new(),
            corrupt_deliveries: 0,
            cross_talk: 0,
            target_sessions: 0,
            recorded_up: Vec::new(),
            record: false,
            seed_counter: seed,
            server_wakeups: 0,
        }
    }

    fn schedule(&mut self, at: Instant, ev: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.tie += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, self.tie, id)));
    }

    fn send_over(&mut self, link: Link, bytes: &[u8], make: impl Fn(Vec<u8>) -> Event) {
        if link.down || self.rng.unit_f64() < link.loss {
            return;
        }
        let copies = if self.rng.unit_f64() < link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut b = bytes.to_vec();
            if self.rng.unit_f64() < link.corrupt && !b.is_empty() {
                let i = (self.rng.next_u64() as usize) % b.len();
                b[i] ^= 1 << (self.rng.next_u64() % 8);
            }
            let d = link.delay_ms + link.jitter_ms * self.rng.unit_f64();
            let at = self.now + Duration::from_secs_f64(d / 1000.0);
            self.schedule(at, make(b));
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            match t.dest {
                ClientDest::Paths(mask) => {
                    for i in 0..self.up.len() {
                        if mask & (1 << i) != 0 {
                            if self.record {
                                self.recorded_up.push((i, t.data.clone()));
                            }
                            let link = self.up[i];
                            self.send_over(link, &t.data, |bytes| Event::Server { path: i, bytes });
                        }
                    }
                }
                ClientDest::App(app) => self.deliver_to_app(app, &t.data),
            }
            self.client.recycle(t.data);
        }
        while self.client.poll_event().is_some() {}
        while let Some(ev) = self.server.poll_event() {
            match ev {
                EndpointEvent::SessionOpened { .. } => self.target_sessions += 1,
                EndpointEvent::SessionClosed { .. } => self.target_sessions -= 1,
                _ => {}
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            match t.dest {
                ServerDest::Bridges(set) => {
                    for a in set.as_slice() {
                        let i = path_of(a);
                        let link = self.down[i];
                        self.send_over(link, &t.data, |bytes| Event::Client { path: i, bytes });
                    }
                }
                ServerDest::Target(session) => {
                    // The target echoes after 1 ms.
                    let at = self.now + Duration::from_millis(1);
                    self.schedule(
                        at,
                        Event::Target {
                            session,
                            bytes: t.data.clone(),
                        },
                    );
                }
            }
            self.server.recycle(t.data);
        }
    }

    fn deliver_to_app(&mut self, app: SocketAddr, data: &[u8]) {
        if data.len() < 12 {
            self.corrupt_deliveries += 1;
            return;
        }
        let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[4..12]);
        let n = u64::from_be_bytes(n);
        if data != payload(id, n, data.len()).as_slice() {
            self.corrupt_deliveries += 1;
            return;
        }
        if app_addr(id) != app {
            self.cross_talk += 1;
        }
        *self.delivered.entry(app).or_default().entry(n).or_default() += 1;
    }

    /// Runs until `until` (virtual), with apps sending per `traffic(now) -> list of (app, n)`.
    fn run(
        &mut self,
        until: Duration,
        rate_per_app: f64,
        apps: usize,
        size: usize,
        counters: &mut [u64],
    ) {
        let end = self.t0 + until;
        let interval = Duration::from_secs_f64(1.0 / rate_per_app);
        let mut next_send = self.now;
        loop {
            let mut t = end;
            if apps > 0 {
                t = t.min(next_send);
            }
            if let Some(Reverse((at, _, _))) = self.queue.peek() {
                t = t.min(*at);
            }
            if let Some(ct) = self.client.poll_timeout() {
                t = t.min(ct);
            }
            if let Some(st) = self.server.poll_timeout() {
                t = t.min(st);
            }
            if t >= end {
                self.now = end;
                break;
            }
            self.now = self.now.max(t);
            let now = self.now;
            if apps > 0 && now >= next_send {
                for (a, c) in counters.iter_mut().enumerate().take(apps) {
                    *c += 1;
                    let p = payload(a, *c, size);
                    self.client.handle_local(now, app_addr(a), &p);
                }
                next_send += interval;
            }
            while let Some(Reverse((at, _, id))) = self.queue.peek().copied() {
                if at > now {
                    break;
                }
                self.queue.pop();
                let Some(ev) = self.events.remove(&id) else {
                    continue;
                };
                match ev {
                    Event::Server { path, bytes } => {
                        self.server.handle_datagram(now, bridge_addr(path), &bytes)
                    }
                    Event::Client { path, bytes } => self.client.handle_datagram(now, path, &bytes),
                    Event::Target { session, bytes } => {
                        self.server.handle_target(now, session, &bytes)
                    }
                }
                self.flush();
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
                self.server_wakeups += 1;
            }
            self.flush();
        }
    }

    fn restart_server(&mut self) {
        self.seed_counter += 100;
        self.server = Server::new(self.params.clone(), self.seed_counter, self.now);
        self.target_sessions = 0;
    }

    fn restart_client(&mut self) {
        self.seed_counter += 100;
        let n = self.up.len();
        self.client = Client::new(
            self.params.clone(),
            Mode::Redundant,
            specs(n),
            self.seed_counter,
            self.now,
        );
    }

    fn received(&self, app: usize) -> &HashMap<u64, u32> {
        static EMPTY: std::sync::OnceLock<HashMap<u64, u32>> = std::sync::OnceLock::new();
        self.delivered
            .get(&app_addr(app))
            .unwrap_or_else(|| EMPTY.get_or_init(HashMap::new))
    }

    fn assert_clean(&self) {
        assert_eq!(
            self.corrupt_deliveries, 0,
            "an app got bytes it did not send"
        );
        assert_eq!(self.cross_talk, 0, "an app got another app's datagram");
        for (app, m) in &self.delivered {
            for (n, c) in m {
                assert_eq!(*c, 1, "app {app} got datagram {n} {c} times");
            }
        }
    }
}

fn lossless() -> Link {
    Link {
        delay_ms: 5.0,
        jitter_ms: 1.0,
        ..Link::default()
    }
}

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

fn keyed(key: u8) -> Params {
    Params {
        key: Some(mptunnel::protocol::crypto::Key::from_bytes([key; 32])),
        ..Params::default()
    }
}

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
    // Fresh sessions on the server are admitted after one challenge each.
    assert_eq!(sim.server.counters().challenges_answered, 2);
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
    sim.server = Server::new(keyed(4), 99, sim.now);
    let mut c = vec![0u64; 1];
    sim.run(Duration::from_secs(2), 200.0, 1, 100, &mut c);
    assert!(sim.received(0).is_empty());
    assert_eq!(sim.server.session_count(), 0);
    assert_eq!(sim.target_sessions, 0);
    assert!(sim.server.counters().auth_failures > 300);
    // Plaintext against keyed is refused the same way.
    let mut sim = Sim::new(3, lossless(), keyed(3), 23);
    sim.server = Server::new(Params::default(), 99, sim.now);
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
    let fresh = Server::new(Params::default(), 1, t0);
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
    // the session expires once; nothing else is due on the server.
    let mut none = vec![];
    sim.run(Duration::from_secs(11), 1.0, 0, 0, &mut none);
    assert_eq!(sim.server.session_count(), 0, "expired");
    let idle = sim.server_wakeups - busy;
    assert!(idle <= 4, "the server woke {idle} times in 10 idle seconds");
}
