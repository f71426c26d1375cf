//! The client endpoint: one session per local application address, every datagram sent on
//! the paths the scheduler picks, replies deduplicated and handed back to the right app.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::packet::{
    self, DecodeError, Header, PacketType, Probe, ProbeAck, CONTROL_SESSION, MAX_DATAGRAM,
};
use super::params::Params;
use super::path::{ClientPath, PathState};
use super::peer::{PeerReject, PeerWindows};
use super::rng::Rng;
use super::scheduler::{Mode, Scheduler};
use super::stats::{Counters, Stats};
use super::transmit::{BufPool, Dest, PathMask, Transmit, MAX_PATHS};
use super::window::Reject;

const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Session {
    id: u64,
    next_seq: u64,
    last_active: Instant,
    peer: PeerWindows,
}

/// The client side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Client {
    params: Params,
    epoch: u64,
    rng: Rng,
    start: Instant,
    paths: Vec<ClientPath>,
    sessions: HashMap<SocketAddr, Session>,
    by_id: HashMap<u64, SocketAddr>,
    control_seq: u64,
    scheduler: Scheduler,
    out: VecDeque<Transmit>,
    pool: BufPool,
    counters: Counters,
    next_sweep: Instant,
    last_cap_warn: Option<Instant>,
}

/// Description of one path for [`Client::new`].
#[derive(Clone, Debug)]
pub struct PathSpec {
    /// Name for logs and stats.
    pub name: String,
    /// Remote address as text, for stats.
    pub remote: String,
}

impl Client {
    /// A client with the given paths (at most [`MAX_PATHS`]); `seed` drives its epoch and ids.
    pub fn new(params: Params, mode: Mode, paths: Vec<PathSpec>, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let epoch = rng.nonzero_u64();
        let paths = paths
            .into_iter()
            .take(MAX_PATHS)
            .map(|p| ClientPath::new(p.name, p.remote, now))
            .collect();
        Client {
            params,
            epoch,
            rng,
            start: now,
            paths,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            control_seq: 0,
            scheduler: Scheduler::new(mode),
            out: VecDeque::new(),
            pool: BufPool::default(),
            counters: Counters::default(),
            next_sweep: now + SWEEP_INTERVAL,
            last_cap_warn: None,
        }
    }

    /// This endpoint's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of paths.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// State of path `i`.
    pub fn path_state(&self, i: usize) -> Option<PathState> {
        self.paths.get(i).map(|p| p.state())
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Updates the remote address shown for path `i` (after re-resolution).
    pub fn set_path_remote(&mut self, i: usize, remote: String) {
        if let Some(p) = self.paths.get_mut(i) {
            p.set_remote(remote);
        }
    }

    /// A datagram from a local application at `from`.
    pub fn handle_local(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) {
        self.counters.local_rx_datagrams += 1;
        self.counters.local_rx_bytes += payload.len() as u64;
        if payload.len() > MAX_DATAGRAM {
            self.counters.oversized += 1;
            debug!(
                "dropped a {}-byte datagram from {from}: larger than {MAX_DATAGRAM}",
                payload.len()
            );
            return;
        }
        if !self.sessions.contains_key(&from) && !self.open_session(now, from) {
            return;
        }
        let Some(session) = self.sessions.get_mut(&from) else {
            return;
        };
        session.last_active = now;
        let header = Header {
            ptype: PacketType::Data,
            flags: 0,
            session: session.id,
            epoch: self.epoch,
            seq: session.next_seq,
        };
        session.next_seq += 1;
        self.send_on_scheduled(&header, payload);
    }

    fn open_session(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.sessions.len() >= self.params.max_sessions {
            self.counters.session_cap_drops += 1;
            if self
                .last_cap_warn
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
            {
                self.last_cap_warn = Some(now);
                warn!(
                    "session cap ({}) reached: datagrams from new source {from} are dropped",
                    self.params.max_sessions
                );
            }
            return false;
        }
        let mut id = self.rng.nonzero_u64();
        while self.by_id.contains_key(&id) {
            id = self.rng.nonzero_u64();
        }
        self.sessions.insert(
            from,
            Session {
                id,
                next_seq: 1,
                last_active: now,
                peer: PeerWindows::new(self.params.window_size),
            },
        );
        self.by_id.insert(id, from);
        self.counters.sessions_opened += 1;
        debug!("new session {id:016x} for {from}");
        true
    }

    fn send_on_scheduled(&mut self, header: &Header, payload: &[u8]) {
        let mask = self.scheduler.select(self.paths.iter().map(|p| p.state()));
        self.send_on(mask, header, payload);
    }

    fn send_on(&mut self, mask: PathMask, header: &Header, payload: &[u8]) {
        if mask == 0 {
            return;
        }
        let mut buf = self.pool.get();
        packet::encode(&mut buf, header, payload);
        for (i, p) in self.paths.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                p.on_send(buf.len());
                self.counters.net_tx_packets += 1;
                self.counters.net_tx_bytes += buf.len() as u64;
            }
        }
        self.out.push_back(Transmit {
            dest: Dest::Paths(mask),
            data: buf,
        });
    }

    fn next_control_seq(&mut self) -> u64 {
        self.control_seq += 1;
        self.control_seq
    }

    /// A datagram that arrived on path `path`.
    pub fn handle_datagram(&mut self, now: Instant, path: usize, bytes: &[u8]) {
        self.counters.net_rx_packets += 1;
        self.counters.net_rx_bytes += bytes.len() as u64;
        if path >= self.paths.len() {
            return;
        }
        let (header, payload) = match packet::decode(bytes) {
            Ok(v) => v,
            Err(e) => {
                self.count_decode_error(e);
                return;
            }
        };
        if let Some(old) = self.paths[path].on_receive(now, bytes.len(), &self.params) {
            let p = &self.paths[path];
            info!(
                "path {} is {} again (was {})",
                p.name(),
                p.state().name(),
                old.name()
            );
        }
        match header.ptype {
            PacketType::Data => self.on_data(now, &header, payload),
            PacketType::Probe => self.on_probe(path, &header, payload),
            PacketType::ProbeAck => self.on_probe_ack(now, path, &header, payload),
            PacketType::Close => self.on_close(&header),
            _ => self.counters.malformed += 1,
        }
    }

    fn count_decode_error(&mut self, e: DecodeError) {
        match e {
            DecodeError::Checksum => self.counters.checksum_errors += 1,
            _ => self.counters.malformed += 1,
        }
    }

    fn count_reject(&mut self, r: PeerReject) {
        match r {
            PeerReject::Window(Reject::Duplicate) => self.counters.duplicates += 1,
            PeerReject::Window(Reject::TooOld) => self.counters.too_old += 1,
            PeerReject::RetiredEpoch => self.counters.stale_epoch += 1,
        }
    }

    fn on_data(&mut self, now: Instant, header: &Header, payload: &[u8]) {
        let Some(&app) = self.by_id.get(&header.session) else {
            self.counters.unknown_session += 1;
            return;
        };
        let Some(session) = self.sessions.get_mut(&app) else {
            return;
        };
        match session.peer.accept(header.epoch, header.seq) {
            Ok(slot) => {
                if slot == super::peer::EpochSlot::New && session.peer_seen_before() {
                    self.counters.peer_restarts += 1;
                }
                session.last_active = now;
                let mut buf = self.pool.get();
                buf.extend_from_slice(payload);
                self.counters.local_tx_datagrams += 1;
                self.counters.local_tx_bytes += payload.len() as u64;
                self.out.push_back(Transmit {
                    dest: Dest::Local(app),
                    data: buf,
                });
            }
            Err(r) => self.count_reject(r),
        }
    }

    fn on_probe(&mut self, path: usize, header: &Header, payload: &[u8]) {
        if header.session != CONTROL_SESSION {
            self.counters.malformed += 1;
            return;
        }
        let Ok(probe) = Probe::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let received = self.paths[path].on_peer_probe(header.epoch);
        let ack = ProbeAck {
            echo_seq: header.seq,
            echo_token: probe.token,
            probes_received: received,
        };
        let h = Header {
            ptype: PacketType::ProbeAck,
            flags: 0,
            session: CONTROL_SESSION,
            epoch: self.epoch,
            seq: self.next_control_seq(),
        };
        self.send_on(1 << path, &h, &ack.to_bytes());
    }

    fn on_probe_ack(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Ok(ack) = ProbeAck::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let p = &mut self.paths[path];
        if let Some(old) = p.on_ack(now, &ack, header.epoch, &self.params) {
            info!(
                "path {} is {} (was {})",
                p.name(),
                p.state().name(),
                old.name()
            );
        }
    }

    fn on_close(&mut self, header: &Header) {
        let Some(&app) = self.by_id.get(&header.session) else {
            self.counters.unknown_session += 1;
            return;
        };
        let Some(session) = self.sessions.get_mut(&app) else {
            return;
        };
        match session.peer.accept(header.epoch, header.seq) {
            Ok(_) => {
                // The server dropped its state for this session. Keep ours: the app's next
                // datagram opens it again on the server, under the server's next epoch.
                session.peer.close_current();
                self.counters.close_received += 1;
                debug!("server closed session {:016x}", header.session);
            }
            Err(r) => self.count_reject(r),
        }
    }

    /// Timers: probes, path health, idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.paths.len() {
            if let Some(old) = self.paths[i].check_down(now, &self.params) {
                let p = &self.paths[i];
                warn!(
                    "path {} is down (was {}): nothing heard for {:?}",
                    p.name(),
                    old.name(),
                    self.params.down_after
                );
            }
            if let Some(token) = self.paths[i].poll_probe(now, &self.params) {
                let h = Header {
                    ptype: PacketType::Probe,
                    flags: 0,
                    session: CONTROL_SESSION,
                    epoch: self.epoch,
                    seq: self.next_control_seq(),
                };
                self.send_on(1 << i, &h, &Probe { token }.to_bytes());
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            let idle = self.params.idle_timeout;
            let expired: Vec<SocketAddr> = self
                .sessions
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.last_active) >= idle)
                .map(|(a, _)| *a)
                .collect();
            for app in expired {
                debug!("session for {app} expired");
                self.remove_session(app);
                self.counters.sessions_expired += 1;
            }
        }
    }

    fn remove_session(&mut self, app: SocketAddr) {
        if let Some(s) = self.sessions.remove(&app) {
            self.by_id.remove(&s.id);
            // Tell the server it can free the session's socket now.
            let h = Header {
                ptype: PacketType::Close,
                flags: 0,
                session: s.id,
                epoch: self.epoch,
                seq: s.next_seq,
            };
            self.send_on_scheduled(&h, &[]);
        }
    }

    /// Clean shutdown: CLOSE every session so the server frees them at once.
    pub fn close(&mut self) {
        let apps: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for app in apps {
            self.remove_session(app);
            self.counters.sessions_closed += 1;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_sweep;
        for p in &self.paths {
            t = t.min(p.next_deadline(&self.params));
        }
        Some(t)
    }

    /// Next packet or delivery for the driver.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Gives a transmit's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// The driver could not send `n` packets.
    pub fn count_send_errors(&mut self, n: u64) {
        self.counters.send_errors += n;
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A stats snapshot.
    pub fn stats(&self, now: Instant) -> Stats {
        Stats {
            role: "client".into(),
            epoch: format!("{:016x}", self.epoch),
            uptime_s: now.saturating_duration_since(self.start).as_secs_f64(),
            mode: self.scheduler.mode().name().into(),
            sessions: self.sessions.len(),
            totals: self.counters.clone(),
            paths: self.paths.iter().map(|p| p.stats(now)).collect(),
        }
    }
}

impl Session {
    fn peer_seen_before(&self) -> bool {
        // Called after a New epoch was committed: a previous epoch means a restart.
        self.peer.has_previous()
    }
}
