//! The relay loop: one listening socket, one upstream socket per client address (like a NAT).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::impair::{Impairment, Rng};
use crate::udp::{any_addr_like, udp_socket};

const LISTEN: Token = Token(0);
/// Largest UDP payload plus one, so nothing is ever truncated.
const BUF_SIZE: usize = 65_536;
/// Datagrams handled per socket before others get a turn.
const BATCH: usize = 512;
/// Bounds the wait for signal flags when a signal lands just before `poll`.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Delayed datagrams beyond this many bytes are dropped rather than exhausting memory.
const MAX_QUEUED_BYTES: usize = 256 << 20;

pub struct Config {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub up: Impairment,
    pub down: Impairment,
    pub seed: u64,
    pub idle_timeout: Duration,
    pub max_clients: usize,
    pub stats_interval: Option<Duration>,
    /// Reports as JSON lines on stdout instead of info log lines.
    pub stats_json: bool,
    /// A hostile bridge for tests: everything from upstream is also sent back upstream.
    pub reflect: bool,
    /// Capacity of each direction (datagrams over it are dropped).
    pub rate_up: Option<super::impair::Rate>,
    pub rate_down: Option<super::impair::Rate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

#[derive(Default, Clone, Copy, serde::Serialize)]
struct DirStats {
    rx: u64,
    rx_bytes: u64,
    tx: u64,
    tx_bytes: u64,
    lost: u64,
    blackholed: u64,
    duplicated: u64,
    reordered: u64,
    delayed: u64,
    queue_full: u64,
    send_errors: u64,
    /// Datagrams from upstream sent back upstream (`--reflect`).
    reflected: u64,
    /// Datagrams over the rate (`--rate`), dropped.
    over_rate: u64,
}

impl fmt::Display for DirStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx {} ({} B) tx {} ({} B) lost {} blackholed {} over-rate {} dup {} reordered {} delayed {} queue-full {} send-err {} reflected {}",
            self.rx,
            self.rx_bytes,
            self.tx,
            self.tx_bytes,
            self.lost,
            self.blackholed,
            self.over_rate,
            self.duplicated,
            self.reordered,
            self.delayed,
            self.queue_full,
            self.send_errors,
            self.reflected
        )
    }
}

#[derive(Default, serde::Serialize)]
struct Stats {
    up: DirStats,
    down: DirStats,
    clients_new: u64,
    clients_expired: u64,
    clients_evicted: u64,
    client_errors: u64,
    /// Datagrams on an upstream socket from somewhere other than UPSTREAM.
    foreign: u64,
    recv_errors: u64,
}

impl Stats {
    fn dir(&mut self, dir: Dir) -> &mut DirStats {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }
}

struct Client {
    sock: UdpSocket,
    token: Token,
    last_active: Instant,
}

struct Delayed {
    release: Instant,
    /// Insertion order, so equal release times keep arrival order.
    order: u64,
    dir: Dir,
    client: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // Reversed so the std max-heap pops the earliest release first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.release, other.order).cmp(&(self.release, self.order))
    }
}

/// Signal-driven state read by the loop.
pub struct Flags {
    pub terminate: Arc<AtomicBool>,
    /// 1 while blackholed (SIGUSR1), 0 after SIGUSR2.
    pub blackhole: Arc<AtomicUsize>,
}

struct Relay {
    cfg: Config,
    poll: Poll,
    listen: UdpSocket,
    clients: HashMap<SocketAddr, Client>,
    by_token: HashMap<Token, SocketAddr>,
    next_token: usize,
    queue: BinaryHeap<Delayed>,
    queued_bytes: usize,
    next_order: u64,
    rng: Rng,
    blackhole: bool,
    stats: Stats,
    bucket_up: Option<super::impair::Bucket>,
    bucket_down: Option<super::impair::Bucket>,
}

/// The final report of a run.
pub struct Report {
    /// One line for the log.
    pub text: String,
    /// The same figures as one JSON document.
    pub json: String,
}

/// Runs until the terminate flag is set; returns the final counters.
pub fn run(cfg: Config, flags: &Flags) -> io::Result<Report> {
    let poll = Poll::new()?;
    let mut listen = udp_socket(cfg.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", cfg.listen)))?;
    poll.registry()
        .register(&mut listen, LISTEN, Interest::READABLE)?;
    let local = listen.local_addr()?;
    log::info!(
        "listening on {local}, upstream {}, seed {}",
        cfg.upstream,
        cfg.seed
    );
    if !cfg.up.is_none() || !cfg.down.is_none() {
        log::info!("impairment up: {}", cfg.up.describe());
        log::info!("impairment down: {}", cfg.down.describe());
    }
    for (dir, r) in [("up", cfg.rate_up), ("down", cfg.rate_down)] {
        if let Some(r) = r {
            log::info!("rate {dir}: {}", r.describe());
        }
    }
    let t0 = Instant::now();
    let bucket = |r: Option<super::impair::Rate>| r.map(|r| super::impair::Bucket::new(r, t0));
    let mut relay = Relay {
        rng: Rng::new(cfg.seed),
        poll,
        listen,
        clients: HashMap::new(),
        by_token: HashMap::new(),
        next_token: 1,
        queue: BinaryHeap::new(),
        queued_bytes: 0,
        next_order: 0,
        blackhole: false,
        stats: Stats::default(),
        bucket_up: bucket(cfg.rate_up),
        bucket_down: bucket(cfg.rate_down),
        cfg,
    };
    relay.event_loop(flags)?;
    Ok(Report {
        text: relay.summary(),
        json: relay.json(),
    })
}

impl Relay {
    fn event_loop(&mut self, flags: &Flags) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; BUF_SIZE];
        let mut ready: Vec<Token> = Vec::new();
        let mut again: Vec<Token> = Vec::new();
        let sweep_every =
            (self.cfg.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut next_sweep = Instant::now() + sweep_every;
        let mut next_stats = self.cfg.stats_interval.map(|d| Instant::now() + d);

        while !crate::is_set(&flags.terminate) {
            let blackhole = flags.blackhole.load(Ordering::Relaxed) != 0;
            if blackhole != self.blackhole {
                self.blackhole = blackhole;
                log::info!("blackhole {}", if blackhole { "on" } else { "off" });
            }

            let now = Instant::now();
            self.release_due(now);
            if now >= next_sweep {
                self.expire_idle(now);
                next_sweep = now + sweep_every;
            }
            if let (Some(at), Some(every)) = (next_stats, self.cfg.stats_interval) {
                if now >= at {
                    if self.cfg.stats_json {
                        crate::print_json_line(&self.json());
                    } else {
                        log::info!("{}", self.summary());
                    }
                    next_stats = Some(now + every);
                }
            }

            let timeout = if !again.is_empty() {
                Duration::ZERO
            } else {
                match self.queue.peek() {
                    Some(d) => d.release.saturating_duration_since(now).min(IDLE_WAIT),
                    None => IDLE_WAIT,
                }
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                // A signal arrived; the flags are checked at the top of the loop.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }

            ready.clear();
            ready.append(&mut again);
            ready.extend(events.iter().map(|e| e.token()));
            ready.sort_unstable();
            ready.dedup();
            for &token in &ready {
                let drained = if token == LISTEN {
                    self.drain_listen(&mut buf)
                } else {
                    self.drain_upstream(token, &mut buf)
                };
                if !drained {
                    again.push(token);
                }
            }
        }
        Ok(())
    }

    /// Reads client datagrams; false if more may be pending.
    fn drain_listen(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..BATCH {
            match self.listen.recv_from(buf) {
                Ok((n, from)) => self.on_client_datagram(&buf[..n], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    self.stats.recv_errors += 1;
                    log::debug!("receive on listening socket: {e}");
                }
            }
        }
        false
    }

    /// Reads upstream replies for one client; false if more may be pending.
    fn drain_upstream(&mut self, token: Token, buf: &mut [u8]) -> bool {
        let Some(&client) = self.by_token.get(&token) else {
            return true;
        };
        for _ in 0..BATCH {
            let Some(c) = self.clients.get(&client) else {
                return true;
            };
            match c.sock.recv_from(buf) {
                Ok((n, from)) => {
                    // IP and port only: flow labels on IPv6 replies must not matter.
                    if from.ip() != self.cfg.upstream.ip()
                        || from.port() != self.cfg.upstream.port()
                    {
                        self.stats.foreign += 1;
                        log::debug!("ignoring datagram from {from} for client {client}");
                        continue;
                    }
                    self.on_upstream_datagram(&buf[..n], client);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    // Includes ICMP-reported errors: the upstream may come back later.
                    self.stats.recv_errors += 1;
                    log::debug!("receive for client {client}: {e}");
                }
            }
        }
        false
    }

    fn on_client_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let now = Instant::now();
        let st = &mut self.stats.up;
        st.rx += 1;
        st.rx_bytes += data.len() as u64;
        if let Some(c) = self.clients.get_mut(&from) {
            c.last_active = now;
        }
        if self.blackhole {
            st.blackholed += 1;
            return;
        }
        if let Some(b) = &mut self.bucket_up {
            if !b.admit(data.len(), now) {
                st.over_rate += 1;
                return;
            }
        }
        let decision = self.cfg.up.decide(&mut self.rng);
        if decision.copies == 0 {
            st.lost += 1;
            return;
        }
        if !self.clients.contains_key(&from) && !self.add_client(from, now) {
            return;
        }
        self.dispatch(Dir::Up, from, data, now, decision);
    }

    fn on_upstream_datagram(&mut self, data: &[u8], client: SocketAddr) {
        let now = Instant::now();
        let st = &mut self.stats.down;
        st.rx += 1;
        st.rx_bytes += data.len() as u64;
        if let Some(c) = self.clients.get_mut(&client) {
            c.last_active = now;
        }
        if self.blackhole {
            st.blackholed += 1;
            return;
        }
        if self.cfg.reflect {
            // The upstream's own datagram, back to it, as if the client had sent it.
            st.reflected += 1;
            self.send(Dir::Up, client, data);
        }
        if let Some(b) = &mut self.bucket_down {
            if !b.admit(data.len(), now) {
                self.stats.down.over_rate += 1;
                return;
            }
        }
        let decision = self.cfg.down.decide(&mut self.rng);
        if decision.copies == 0 {
            self.stats.down.lost += 1;
            return;
        }
        self.dispatch(Dir::Down, client, data, now, decision);
    }

    fn dispatch(
        &mut self,
        dir: Dir,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
        decision: super::impair::Decision,
    ) {
        let st = self.stats.dir(dir);
        st.duplicated += (decision.copies - 1) as u64;
        st.reordered += u64::from(decision.reordered);
        for &delay in decision.delays() {
            if delay.is_zero() {
                self.send(dir, client, data);
            } else if self.queued_bytes + data.len() > MAX_QUEUED_BYTES {
                self.stats.dir(dir).queue_full += 1;
            } else {
                self.stats.dir(dir).delayed += 1;
                self.queued_bytes += data.len();
                self.queue.push(Delayed {
                    release: now + delay,
                    order: self.next_order,
                    dir,
                    client,
                    data: data.to_vec(),
                });
                self.next_order += 1;
            }
        }
    }

    fn send(&mut self, dir: Dir, client: SocketAddr, data: &[u8]) {
        let result = match dir {
            Dir::Up => match self.clients.get(&client) {
                Some(c) => c.sock.send_to(data, self.cfg.upstream),
                // The mapping was evicted while the datagram was delayed.
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "client mapping gone",
                )),
            },
            Dir::Down => self.listen.send_to(data, client),
        };
        let st = self.stats.dir(dir);
        match result {
            Ok(_) => {
                st.tx += 1;
                st.tx_bytes += data.len() as u64;
            }
            Err(e) => {
                // Refused, unreachable or a full buffer: count it, the next datagram may get through.
                st.send_errors += 1;
                log::debug!("send {dir:?} for client {client}: {e}");
            }
        }
    }

    fn release_due(&mut self, now: Instant) {
        while self.queue.peek().is_some_and(|d| d.release <= now) {
            let Some(d) = self.queue.pop() else { break };
            self.queued_bytes -= d.data.len();
            if self.blackhole {
                self.stats.dir(d.dir).blackholed += 1;
                continue;
            }
            self.send(d.dir, d.client, &d.data);
        }
    }

    fn add_client(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.clients.len() >= self.cfg.max_clients {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.last_active)
                .map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                log::debug!("client limit reached, evicting {oldest}");
                self.remove_client(oldest);
                self.stats.clients_evicted += 1;
            }
        }
        let mut sock = match udp_socket(any_addr_like(&self.cfg.upstream)) {
            Ok(s) => s,
            Err(e) => {
                self.stats.client_errors += 1;
                log::warn!("cannot create upstream socket for client {addr}: {e}");
                return false;
            }
        };
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(1);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, token, Interest::READABLE)
        {
            self.stats.client_errors += 1;
            log::warn!("cannot register upstream socket for client {addr}: {e}");
            return false;
        }
        match sock.local_addr() {
            Ok(local) => log::debug!("new client {addr} via {local}"),
            Err(_) => log::debug!("new client {addr}"),
        }
        self.clients.insert(
            addr,
            Client {
                sock,
                token,
                last_active: now,
            },
        );
        self.by_token.insert(token, addr);
        self.stats.clients_new += 1;
        true
    }

    fn remove_client(&mut self, addr: SocketAddr) {
        if let Some(mut c) = self.clients.remove(&addr) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.by_token.remove(&c.token);
        }
    }

    fn expire_idle(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let expired: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_active) >= idle)
            .map(|(a, _)| *a)
            .collect();
        for addr in expired {
            log::debug!("client {addr} idle, mapping removed");
            self.remove_client(addr);
            self.stats.clients_expired += 1;
        }
    }

    /// The counters as one JSON document (fields as in `summary`, documented in mpbridge's
    /// help).
    fn json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            listen: String,
            upstream: String,
            clients: usize,
            queued: usize,
            blackhole: bool,
            #[serde(flatten)]
            stats: &'a Stats,
        }
        let doc = Doc {
            listen: self
                .listen
                .local_addr()
                .map_or_else(|_| self.cfg.listen.to_string(), |a| a.to_string()),
            upstream: self.cfg.upstream.to_string(),
            clients: self.clients.len(),
            queued: self.queue.len(),
            blackhole: self.blackhole,
            stats: &self.stats,
        };
        serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_string())
    }

    fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "up: {} | down: {} | clients {} (new {}, expired {}, evicted {}, errors {}) queued {} foreign {} recv-err {}{}",
            s.up,
            s.down,
            self.clients.len(),
            s.clients_new,
            s.clients_expired,
            s.clients_evicted,
            s.client_errors,
            self.queue.len(),
            s.foreign,
            s.recv_errors,
            if self.blackhole { " [blackhole]" } else { "" }
        )
    }
}
