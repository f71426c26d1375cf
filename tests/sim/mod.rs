#![allow(dead_code)] // each test binary uses a different part of the harness
//! The deterministic simulator the protocol tests share: a client and a server endpoint
//! driven in virtual time over paths with loss, delay, jitter, duplication and corruption.
//! No sockets, no sleeping:
//! seconds of traffic run in milliseconds, and every run with the same seed is identical.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mptunnel::protocol::client::{Client, PathSpec};
use mptunnel::protocol::endpoint::Endpoint as _;
use mptunnel::protocol::event::Event as EndpointEvent;
use mptunnel::protocol::params::Params;
use mptunnel::protocol::rng::Rng;
use mptunnel::protocol::scheduler::Mode;
use mptunnel::protocol::secure_rng::Seed;
use mptunnel::protocol::server::Server;
use mptunnel::protocol::transmit::{ClientDest, ServerDest};

#[derive(Clone, Copy, Debug, Default)]
pub struct Link {
    pub loss: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    pub down: bool,
    /// Capacity in packets per second (0: unlimited): a token bucket holding 20 ms of it;
    /// packets over it are dropped, like a congested link.
    pub rate_pps: f64,
}

/// A link's token bucket: (tokens, last refill).
#[derive(Clone, Copy, Debug)]
pub struct Bucket(f64, Instant);

impl Bucket {
    /// Takes a token if there is one.
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let depth = (rate * 0.02).max(1.0);
        self.0 = (self.0 + rate * now.saturating_duration_since(self.1).as_secs_f64()).min(depth);
        self.1 = now;
        if self.0 >= 1.0 {
            self.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    Server { path: usize, bytes: Vec<u8> },
    Client { path: usize, bytes: Vec<u8> },
    Target { session: u64, bytes: Vec<u8> },
}

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub client: Client,
    pub server: Server,
    pub params: Params,
    pub up: Vec<Link>,
    pub down: Vec<Link>,
    pub up_bucket: Vec<Bucket>,
    pub down_bucket: Vec<Bucket>,
    pub queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pub events: HashMap<usize, Event>,
    pub next_id: usize,
    pub tie: u64,
    /// Per app: how many times each counter was delivered back to it.
    pub delivered: HashMap<SocketAddr, HashMap<u64, u32>>,
    pub corrupt_deliveries: u64,
    pub cross_talk: u64,
    pub target_sessions: usize,
    /// Every packet the client sent, for replay attacks.
    pub recorded_up: Vec<(usize, Vec<u8>)>,
    pub record: bool,
    /// Every packet the server sent to a bridge, when `record_down` is set.
    pub recorded_down: Vec<(usize, Vec<u8>)>,
    pub record_down: bool,
    /// Packets the server sent to addresses that are not bridges (an attacker's ports).
    pub to_strangers: Vec<(SocketAddr, Vec<u8>)>,
    pub seed_counter: u64,
    /// Times the server's timers ran.
    pub server_wakeups: u64,
}

pub fn bridge_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, i as u8 + 1), 40_000 + i as u16))
}

/// The bridge (path) an address is, if it is one of the `n` bridges.
pub fn bridge_index(addr: &SocketAddr, n: usize) -> Option<usize> {
    (0..n).find(|&i| bridge_addr(i) == *addr)
}

pub fn app_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 50_000 + i as u16))
}

pub fn payload(app: usize, n: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&(app as u32).to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    while p.len() < size {
        p.push((n as u8).wrapping_add(p.len() as u8).wrapping_mul(31));
    }
    p
}

pub fn specs(n: usize) -> Vec<PathSpec> {
    (0..n)
        .map(|i| PathSpec {
            name: format!("p{i}"),
            remote: bridge_addr(i).to_string(),
            backup: false,
            weight: 1,
        })
        .collect()
}

impl Sim {
    pub fn new(paths: usize, link: Link, params: Params, seed: u64) -> Sim {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            rng: Rng::new(seed),
            client: Client::new(
                params.clone(),
                Mode::Redundant,
                specs(paths),
                &Seed::from_u64(seed ^ 1),
                t0,
            ),
            server: Server::new(params.clone(), &Seed::from_u64(seed ^ 2), t0),
            params,
            up: vec![link; paths],
            down: vec![link; paths],
            up_bucket: vec![Bucket(0.0, t0); paths],
            down_bucket: vec![Bucket(0.0, t0); paths],
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
            recorded_down: Vec::new(),
            record_down: false,
            to_strangers: Vec::new(),
            seed_counter: seed,
            server_wakeups: 0,
        }
    }

    pub fn schedule(&mut self, at: Instant, ev: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.tie += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, self.tie, id)));
    }

    pub fn send_over(&mut self, link: Link, bytes: &[u8], make: impl Fn(Vec<u8>) -> Event) {
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

    pub fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            match t.dest {
                ClientDest::Path(i) => {
                    if self.record {
                        self.recorded_up.push((i, t.data.clone()));
                    }
                    let link = self.up[i];
                    if self.up_bucket[i].take(link.rate_pps, self.now) {
                        self.send_over(link, &t.data, |bytes| Event::Server { path: i, bytes });
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
                ServerDest::Bridge(a) => match bridge_index(&a, self.down.len()) {
                    Some(i) => {
                        if self.record_down {
                            self.recorded_down.push((i, t.data.clone()));
                        }
                        let link = self.down[i];
                        if self.down_bucket[i].take(link.rate_pps, self.now) {
                            self.send_over(link, &t.data, |bytes| Event::Client { path: i, bytes });
                        }
                    }
                    None => self.to_strangers.push((a, t.data.clone())),
                },
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

    pub fn deliver_to_app(&mut self, app: SocketAddr, data: &[u8]) {
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
    pub fn run(
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
                if std::env::var("SIM_DEBUG").is_ok() {
                    eprintln!("server woke at {:?}", now - self.t0);
                }
            }
            self.flush();
        }
    }

    pub fn restart_server(&mut self) {
        self.seed_counter += 100;
        self.server = Server::new(
            self.params.clone(),
            &Seed::from_u64(self.seed_counter),
            self.now,
        );
        self.target_sessions = 0;
    }

    pub fn restart_client(&mut self) {
        self.restart_client_as(Mode::Redundant, specs(self.up.len()));
    }

    /// A new client (a restart, or the first one of a test) in `mode` with these paths.
    pub fn restart_client_as(&mut self, mode: Mode, specs: Vec<PathSpec>) {
        self.seed_counter += 100;
        self.client = Client::new(
            self.params.clone(),
            mode,
            specs,
            &Seed::from_u64(self.seed_counter),
            self.now,
        );
    }

    pub fn received(&self, app: usize) -> &HashMap<u64, u32> {
        static EMPTY: std::sync::OnceLock<HashMap<u64, u32>> = std::sync::OnceLock::new();
        self.delivered
            .get(&app_addr(app))
            .unwrap_or_else(|| EMPTY.get_or_init(HashMap::new))
    }

    pub fn assert_clean(&self) {
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

pub fn lossless() -> Link {
    Link {
        delay_ms: 5.0,
        jitter_ms: 1.0,
        ..Link::default()
    }
}

pub fn keyed(key: u8) -> Params {
    Params {
        key: Some(mptunnel::protocol::crypto::Key::from_bytes([key; 32])),
        ..Params::default()
    }
}
