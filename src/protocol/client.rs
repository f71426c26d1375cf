//! The client endpoint's routing: one session per local application address, every datagram
//! sent on the paths the scheduler picks (one copy per path, each with its path index),
//! replies handed back to the right app. The server's epochs are tracked once for all
//! sessions (`Peer`): its DATA sequence is one counter per server epoch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use super::endpoint::Core;
use super::event::{CloseReason, Event, PathReason};
use super::packet::{Challenge, Header, PacketType, Probe, ProbeAck, Response, Sender};
use super::params::Params;
use super::path::{ClientPath, PathState};
use super::peer::{Admit, Peer, Refusal};
use super::scheduler::{Mode, Scheduler};
use super::secure_rng::Seed;
use super::session::{idle_sessions, Session};
use super::stats::Stats;
use super::timer::Timer;
use super::transmit::{ClientDest, PathMask, MAX_PATHS};

/// Idle sessions are looked for at most this often.
const SWEEP_MIN: Duration = Duration::from_secs(1);

/// The client side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Client {
    core: Core<ClientDest>,
    paths: Vec<ClientPath>,
    /// Sessions by application address.
    sessions: HashMap<SocketAddr, Session>,
    by_id: HashMap<u64, SocketAddr>,
    /// The server's epochs; held packets wait with their session's id.
    server: Peer<u64>,
    scheduler: Scheduler,
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
    /// A client with the given paths (at most [`MAX_PATHS`]); `seed` drives its epoch, ids
    /// and nonces.
    pub fn new(
        params: Params,
        mode: Mode,
        paths: Vec<PathSpec>,
        seed: &Seed,
        now: Instant,
    ) -> Self {
        let paths = paths
            .into_iter()
            .take(MAX_PATHS)
            .map(|p| ClientPath::new(p.name, p.remote, now))
            .collect();
        let window = params.window_size;
        Client {
            core: Core::new(params, Sender::Client, seed, now),
            paths,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            server: Peer::new(window),
            scheduler: Scheduler::new(mode),
        }
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
        if !self.core.accept_local(payload.len()) {
            debug!(
                "dropped a {}-byte datagram from {from}: larger than {}",
                payload.len(),
                self.core.codec.max_payload()
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
        let id = session.id;
        let seq = self.core.next_seq(now);
        let header = self.core.header(PacketType::Data, id, seq);
        self.send_on_scheduled(&header, payload);
    }

    fn open_session(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.sessions.len() >= self.core.params.max_sessions {
            let what = format_args!("datagrams from new source {from} are dropped");
            self.core.refuse_over_cap(now, &what);
            return false;
        }
        let mut id = self.core.rng.nonzero_u64();
        while self.by_id.contains_key(&id) {
            id = self.core.rng.nonzero_u64();
        }
        let session = Session {
            id,
            last_active: now,
        };
        self.sessions.insert(from, session);
        self.by_id.insert(id, from);
        self.core.push_event(Event::SessionOpened { session: id });
        let idle = self.core.params.idle_timeout;
        self.core.timers.set_earliest(Timer::Sweep, now + idle);
        debug!("new session {id:016x} for {from}");
        true
    }

    fn scheduled(&mut self) -> PathMask {
        self.scheduler.select(self.paths.iter().map(|p| p.state()))
    }

    fn send_on_scheduled(&mut self, header: &Header, payload: &[u8]) {
        let mask = self.scheduled();
        self.send_on(mask, header, payload);
    }

    /// Sends one copy on each path of `mask`: sealed once, each copy with its path index.
    fn send_on(&mut self, mask: PathMask, header: &Header, payload: &[u8]) {
        if mask == 0 {
            return;
        }
        let template = self.core.prepare(header, payload);
        for i in 0..self.paths.len() {
            if mask & (1 << i) != 0 {
                let copy = self.core.copy(&template, i as u8);
                self.paths[i].on_send(copy.len());
                self.core.queue(ClientDest::Path(i), copy);
            }
        }
        self.core.discard(template);
    }

    /// A datagram that arrived on path `path`.
    pub fn handle_datagram(&mut self, now: Instant, path: usize, bytes: &[u8]) {
        if path >= self.paths.len() {
            // Not a path of ours (a caller's mistake): dropped, and counted like any bad packet.
            self.core.counters.net_rx_packets += 1;
            self.core.counters.net_rx_bytes += bytes.len() as u64;
            self.core.counters.malformed += 1;
            return;
        }
        let origin = format_args!("on path {}", self.paths[path].name());
        let Some(header) = self.core.parse(now, bytes, &origin) else {
            return;
        };
        if !self.core.verify_path(now, bytes, &origin) {
            return;
        }
        if header.ptype == PacketType::Data {
            self.paths[path].on_peer_data(header.epoch);
            // Duplicates are refused before paying for decryption.
            if !self.precheck_data(&header) {
                return;
            }
        }
        let mut scratch = self.core.take_scratch();
        let origin = format_args!("on path {}", self.paths[path].name());
        if let Some(payload) = self.core.open(now, bytes, &mut scratch, &origin) {
            self.dispatch(now, path, bytes.len(), &header, payload);
        }
        self.core.put_scratch(scratch);
    }

    fn dispatch(&mut self, now: Instant, path: usize, len: usize, header: &Header, payload: &[u8]) {
        if let Some(old) = self.paths[path].on_receive(now, len, &self.core.params) {
            let change = self.paths[path].change(path, old, PathReason::Heard);
            self.core.push_event(Event::Path(change));
        }
        if header.session == super::packet::CONTROL_SESSION {
            if let Err(r) = self.paths[path].accept_control(header.epoch, header.seq) {
                self.core.counters.count_reject(r);
                return;
            }
        }
        match header.ptype {
            PacketType::Data => self.on_data(now, path, header, payload),
            PacketType::Probe => self.on_probe(path, header, payload),
            PacketType::ProbeAck => self.on_probe_ack(now, path, header, payload),
            PacketType::Close => self.on_close(header),
            PacketType::Challenge => self.on_challenge(now, path, header, payload),
            PacketType::Response => self.on_response(header, payload),
            t if t.reserved() => self.core.counters.unsupported += 1,
            _ => self.core.counters.malformed += 1,
        }
    }

    /// Window (and hold queue) check for DATA before decryption; false = dropped.
    fn precheck_data(&mut self, header: &Header) -> bool {
        if !self.by_id.contains_key(&header.session) {
            self.core.counters.unknown_session += 1;
            return false;
        }
        match self.server.precheck(header) {
            Ok(()) => true,
            Err(r) => {
                self.core.count_refusal(r);
                false
            }
        }
    }

    fn on_data(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Some(&app) = self.by_id.get(&header.session) else {
            return;
        };
        let rng = &mut self.core.rng;
        match self
            .server
            .admit(header, payload, header.session, now, || rng.next_u128())
        {
            Admit::Deliver { restarted } => {
                if restarted {
                    self.core.push_event(Event::PeerRestarted {
                        epoch: header.epoch,
                    });
                }
                if let Some(s) = self.sessions.get_mut(&app) {
                    s.last_active = now;
                }
                self.core.deliver(ClientDest::App(app), payload);
            }
            Admit::Hold { held, .. } => {
                if !held {
                    self.core.counters.held_dropped += 1;
                }
            }
            Admit::Challenge => {
                // A new server epoch (it restarted): it answers before its packets count.
                let Some(p) = &self.server.pending else {
                    return;
                };
                let ch = p.challenge(header.session, self.core.uptime_us(now));
                self.core.timers.set_earliest(Timer::Challenge, p.next_try);
                // On every path: one lost challenge would stall the tunnel.
                let mask = self.scheduled() | (1 << path);
                self.send_challenge(mask, ch);
            }
            Admit::Drop(r) => self.core.count_refusal(r),
        }
    }

    fn send_challenge(&mut self, mask: PathMask, ch: Challenge) {
        let (h, p) = self.core.challenge_packet(&ch);
        self.send_on(mask, &h, &p);
    }

    fn on_challenge(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Some(ch) = self.core.parse_challenge(header, payload) else {
            return;
        };
        // The fastest path's RTT (0 while unmeasured): the client measures it.
        let rtt = self
            .paths
            .iter()
            .filter_map(|p| p.srtt())
            .min()
            .unwrap_or_default();
        let fresh_from = self.core.fresh_from(now, ch.age_us, rtt);
        let (h, p) = self.core.response_packet(ch, fresh_from);
        self.send_on(1 << path, &h, &p);
    }

    fn on_response(&mut self, header: &Header, payload: &[u8]) {
        let Ok(r) = Response::parse(payload) else {
            self.core.counters.malformed += 1;
            return;
        };
        let Some(p) = self.server.take_answered(&r, header.epoch) else {
            return;
        };
        let epoch = p.epoch;
        self.core.counters.challenges_answered += 1;
        let (restarted, released) = self.server.admit_answered(p, r.fresh_from);
        if restarted {
            self.core.push_event(Event::PeerRestarted { epoch });
        }
        self.core.counters.stale_epoch += released.refused;
        for (data, session) in released.deliver {
            match self.by_id.get(&session) {
                Some(&app) => self.core.deliver(ClientDest::App(app), &data),
                None => self.core.counters.unknown_session += 1,
            }
        }
    }

    fn on_probe(&mut self, path: usize, header: &Header, payload: &[u8]) {
        let Some(probe) = self.core.parse_probe(header, payload) else {
            return;
        };
        let counts = self.paths[path].on_peer_probe(header.epoch);
        let (h, ack) = self.core.probe_ack(header, probe, counts);
        self.send_on(1 << path, &h, &ack);
    }

    fn on_probe_ack(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Ok(ack) = ProbeAck::parse(payload) else {
            self.core.counters.malformed += 1;
            return;
        };
        let p = &mut self.paths[path];
        if let Some(old) = p.on_ack(now, &ack, header.epoch, &self.core.params) {
            let change = p.change(path, old, PathReason::Loss);
            self.core.push_event(Event::Path(change));
        }
    }

    /// A server sends CLOSE when it shuts down: its epoch ends for every session. The
    /// sessions stay; the next server epoch is admitted after a challenge.
    fn on_close(&mut self, header: &Header) {
        if !self.by_id.contains_key(&header.session) {
            self.core.counters.unknown_session += 1;
            return;
        }
        match self.server.accept_close(header) {
            Ok(()) => {
                self.server.windows.close_current();
                self.core.counters.close_received += 1;
                debug!("server epoch {:016x} closed", header.epoch);
            }
            // The first CLOSE of a shutdown ended the epoch; the others are expected.
            Err(Refusal::StaleEpoch) => {}
            Err(r) => self.core.count_refusal(r),
        }
    }

    /// Timers: probes, path health, challenges, idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.paths.len() {
            if let Some(old) = self.paths[i].check_down(now, &self.core.params) {
                let reason = if self.paths[i].ever_heard() {
                    PathReason::Silent
                } else {
                    PathReason::NeverHeard
                };
                let change = self.paths[i].change(i, old, reason);
                self.core.push_event(Event::Path(change));
            }
            if let Some(token) = self.paths[i].poll_probe(now, &self.core.params) {
                let h = self.core.control_header(PacketType::Probe);
                self.send_on(1 << i, &h, &Probe { token }.to_bytes());
            }
        }
        for t in self.core.timers.take_all_expired(now) {
            match t {
                Timer::Challenge => self.retry_challenge(now),
                Timer::Sweep => self.sweep(now),
                Timer::Validation => {}
            }
        }
    }

    /// Expires idle sessions, then sleeps until the next one could expire.
    fn sweep(&mut self, now: Instant) {
        let idle = self.core.params.idle_timeout;
        let (expired, next) = idle_sessions(self.sessions.iter(), now, idle);
        for app in expired {
            debug!("session for {app} expired");
            self.remove_session(now, app, CloseReason::Expired);
            self.core.counters.sessions_expired += 1;
        }
        if let Some(next) = next {
            self.core
                .timers
                .set(Timer::Sweep, next.max(now + SWEEP_MIN));
        }
    }

    fn retry_challenge(&mut self, now: Instant) {
        use super::fresh::Retry;
        let age = self.core.uptime_us(now);
        let Some(p) = &mut self.server.pending else {
            return;
        };
        match p.poll_retry(now) {
            Retry::Wait => self.core.timers.set(Timer::Challenge, p.next_try),
            Retry::GiveUp => {
                debug!("server epoch {:016x} never answered", p.epoch);
                self.core.counters.held_dropped += p.held.len() as u64;
                self.server.pending = None;
            }
            Retry::Resend => {
                let session = p.held.first().map_or(0, |(_, _, s)| *s);
                let ch = p.challenge(session, age);
                self.core.timers.set(Timer::Challenge, p.next_try);
                let mask = self.scheduled();
                self.send_challenge(mask, ch);
            }
        }
    }

    fn remove_session(&mut self, now: Instant, app: SocketAddr, reason: CloseReason) {
        if let Some(s) = self.sessions.remove(&app) {
            self.by_id.remove(&s.id);
            self.core.push_event(Event::SessionClosed {
                session: s.id,
                reason,
            });
            // Tell the server it can free the session's socket now.
            let seq = self.core.next_seq(now);
            let h = self.core.header(PacketType::Close, s.id, seq);
            self.send_on_scheduled(&h, &[]);
        }
    }

    /// Clean shutdown: CLOSE every session so the server frees them at once.
    pub fn close(&mut self, now: Instant) {
        let apps: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for app in apps {
            self.remove_session(now, app, CloseReason::Shutdown);
            self.core.counters.sessions_closed += 1;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let paths = self
            .paths
            .iter()
            .map(|p| p.next_deadline(&self.core.params))
            .min();
        [self.core.timers.next(), paths].into_iter().flatten().min()
    }

    /// A stats snapshot.
    pub fn stats(&self, now: Instant) -> Stats {
        let paths = self.paths.iter().map(|p| p.stats(now)).collect();
        let mode = self.scheduler.mode().name();
        self.core
            .stats(now, "client", mode, self.sessions.len(), paths)
    }
}

super::endpoint::endpoint_of!(Client, ClientDest);
