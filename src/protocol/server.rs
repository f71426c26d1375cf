//! The server endpoint: one session per session id (each with its own target socket in the
//! driver), replies on every bridge address that session was seen on recently.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::crypto::Codec;
use super::fresh::{Pending, SendHistory, CHALLENGE_RETRY, CHALLENGE_TRIES};
use super::packet::{
    Challenge, DecodeError, Header, PacketType, Probe, ProbeAck, Response, CONTROL_SESSION,
};
use super::params::Params;
use super::path::{PathStats, CONTROL_WINDOW};
use super::peer::{EpochSlot, PeerReject, PeerWindows};
use super::rng::Rng;
use super::stats::{Counters, Stats};
use super::transmit::{AddrSet, BufPool, Dest, Transmit, MAX_SESSION_PATHS};
use super::window::Reject;
use super::RateLimit;

const TICK: Duration = Duration::from_millis(100);
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const VALIDATION_RETRY: Duration = Duration::from_millis(250);
/// An unvalidated address gets at most this many times the bytes it sent us (as in QUIC).
const AMPLIFICATION_FACTOR: u64 = 3;
/// A bridge address not heard from for this long is forgotten entirely.
const PATH_FORGET: Duration = Duration::from_secs(300);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Most unknown sessions waiting for a challenge answer at once (keyed mode).
const PENDING_MAX: usize = 1024;
/// Most tombstones of removed sessions kept (keyed mode).
const TOMBSTONES_MAX: usize = 16_384;

/// Session lifecycle events for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new session: open its target socket.
    Opened(u64),
    /// A session ended (CLOSE, expiry, shutdown): close its target socket.
    Closed(u64),
}

#[derive(Debug)]
struct Session {
    next_seq: u64,
    last_active: Instant,
    peer: PeerWindows,
    paths: [Option<SocketAddr>; MAX_SESSION_PATHS],
    history: SendHistory,
    /// Keyed mode: a new client epoch waiting for its challenge to be answered.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct BridgePath {
    validated: bool,
    token: u64,
    next_validation: Instant,
    last_rx: Instant,
    rx_bytes_total: u64,
    tx_bytes_unvalidated: u64,
    peer_probe_epoch: u64,
    peer_probes_rx: u64,
    /// Dedup of control packets from this address (see `ClientPath::accept_control`).
    control: PeerWindows,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

/// The server side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Server {
    params: Params,
    codec: Codec,
    epoch: u64,
    rng: Rng,
    start: Instant,
    sessions: HashMap<u64, Session>,
    /// Keyed mode: unknown sessions waiting for their challenge to be answered.
    pending_new: HashMap<u64, Pending>,
    /// Keyed mode: (client epoch, highest sequence) of removed sessions, so their replays are
    /// refused even after a successful challenge; oldest first in `tomb_order`.
    tombstones: HashMap<u64, (u64, u64)>,
    tomb_order: VecDeque<u64>,
    scratch: Vec<u8>,
    last_auth_warn: RateLimit,
    /// Earliest challenge retry due (keyed mode), if any is pending.
    next_challenge: Option<Instant>,
    paths: HashMap<SocketAddr, BridgePath>,
    max_paths: usize,
    control_seq: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    pool: BufPool,
    counters: Counters,
    next_tick: Instant,
    next_sweep: Instant,
    last_cap_warn: RateLimit,
}

impl Server {
    /// A server; `seed` drives its epoch and tokens.
    pub fn new(params: Params, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let epoch = rng.nonzero_u64();
        let max_paths = params.max_sessions.saturating_mul(4).max(64);
        let codec = Codec::new(params.key.as_ref());
        Server {
            params,
            codec,
            epoch,
            rng,
            start: now,
            sessions: HashMap::new(),
            pending_new: HashMap::new(),
            tombstones: HashMap::new(),
            tomb_order: VecDeque::new(),
            scratch: Vec::with_capacity(2048),
            last_auth_warn: RateLimit::default(),
            next_challenge: None,
            paths: HashMap::new(),
            max_paths,
            control_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            pool: BufPool::default(),
            counters: Counters::default(),
            next_tick: now + TICK,
            next_sweep: now + SWEEP_INTERVAL,
            last_cap_warn: RateLimit::default(),
        }
    }

    /// This endpoint's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// True if the session exists.
    pub fn has_session(&self, id: u64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// How long a bridge address may stay silent and still get replies.
    fn path_fresh(&self) -> Duration {
        self.params.down_after * 2
    }

    /// A datagram from the network, from bridge address `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.counters.net_rx_packets += 1;
        self.counters.net_rx_bytes += bytes.len() as u64;
        let header = match self.codec.parse(bytes) {
            Ok(h) => h,
            Err(e) => return self.count_decode_error(now, from, e),
        };
        // Duplicates and replays are refused before paying for verification.
        if header.ptype == PacketType::Data && !self.precheck_data(now, from, &header) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        match self.codec.open(bytes, &mut scratch) {
            Ok(payload) => self.dispatch(now, from, bytes.len(), &header, payload),
            Err(e) => self.count_decode_error(now, from, e),
        }
        self.scratch = scratch;
    }

    /// Control packets (session 0) count once per address; duplicates and replays would
    /// skew probe counts and trigger extra answers.
    fn control_fresh(&mut self, from: SocketAddr, header: &Header) -> bool {
        if header.session != CONTROL_SESSION {
            return true;
        }
        let r = match self.paths.get_mut(&from) {
            Some(p) => p.control.accept(header.epoch, header.seq),
            None => return true,
        };
        match r {
            Ok(_) => true,
            Err(r) => {
                self.count_reject(r);
                false
            }
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        header: &Header,
        payload: &[u8],
    ) {
        match header.ptype {
            PacketType::Data => {
                if header.session == CONTROL_SESSION {
                    self.counters.malformed += 1;
                    return;
                }
                self.touch_path(now, from, len);
                self.on_data(now, from, header, payload);
            }
            PacketType::Probe => {
                self.touch_path(now, from, len);
                if self.control_fresh(from, header) {
                    self.on_probe(from, header, payload);
                }
            }
            PacketType::ProbeAck => {
                self.touch_path(now, from, len);
                if !self.control_fresh(from, header) {
                    return;
                }
                if let Ok(ack) = ProbeAck::parse(payload) {
                    if let Some(p) = self.paths.get_mut(&from) {
                        if !p.validated && ack.echo_token == p.token {
                            p.validated = true;
                            debug!("bridge address {from} validated");
                        }
                    }
                } else {
                    self.counters.malformed += 1;
                }
            }
            PacketType::Close => {
                self.touch_path(now, from, len);
                self.on_close(header);
            }
            PacketType::Challenge => {
                self.touch_path(now, from, len);
                if self.control_fresh(from, header) {
                    self.on_challenge(now, from, header, payload);
                }
            }
            PacketType::Response => {
                self.touch_path(now, from, len);
                if self.control_fresh(from, header) {
                    self.on_response(now, from, header, payload);
                }
            }
            PacketType::TargetRequest | PacketType::TargetDeny => self.counters.malformed += 1,
        }
    }

    fn count_decode_error(&mut self, now: Instant, from: SocketAddr, e: DecodeError) {
        match e {
            DecodeError::Checksum => self.counters.checksum_errors += 1,
            DecodeError::Auth | DecodeError::SealMismatch => {
                self.counters.auth_failures += 1;
                if self.last_auth_warn.ready(now, WARN_EVERY) {
                    let why = match (e, self.codec.sealed()) {
                        (DecodeError::Auth, _) => "the peer uses another key",
                        (_, true) => "the peer sends plaintext: it has no key",
                        (_, false) => "the peer encrypts: this side has no key",
                    };
                    warn!(
                        "packets from {from} fail authentication: {why} ({} so far; next report in 10 s)",
                        self.counters.auth_failures
                    );
                }
            }
            _ => self.counters.malformed += 1,
        }
    }

    /// Window, hold-queue and tombstone checks for DATA before verification; false = dropped.
    fn precheck_data(&mut self, now: Instant, from: SocketAddr, header: &Header) -> bool {
        let uptime_us = self.uptime_us(now);
        let mut challenge_to = None;
        let keep = self.precheck_inner(from, header, uptime_us, &mut challenge_to);
        if let Some(ch) = challenge_to {
            // A copy from another path: challenge that path too, in case the first is lossy.
            self.send_challenge(from, ch);
        }
        keep
    }

    fn uptime_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }

    fn precheck_inner(
        &mut self,
        from: SocketAddr,
        header: &Header,
        uptime_us: u64,
        challenge_to: &mut Option<Challenge>,
    ) -> bool {
        let held_dup = |p: &mut Pending, out: &mut Option<Challenge>| {
            if p.note_addr(from) {
                *out = Some(Challenge {
                    session: header.session,
                    epoch: p.epoch,
                    nonce: p.nonce,
                    uptime_us,
                });
            }
        };
        if let Some(session) = self.sessions.get_mut(&header.session) {
            return match session.peer.check(header.epoch, header.seq) {
                Err(r) => {
                    // A duplicate from an address the session does not use yet names a new
                    // path: verify it (in on_data) before trusting that. From a known path it
                    // is just another copy: no decryption.
                    if matches!(r, PeerReject::Window(Reject::Duplicate))
                        && !session.paths.contains(&Some(from))
                    {
                        return true;
                    }
                    self.count_reject(r);
                    false
                }
                Ok(_) => match &mut session.pending {
                    Some(p) if p.epoch == header.epoch && p.holds(header.seq) => {
                        held_dup(p, challenge_to);
                        self.counters.duplicates += 1;
                        false
                    }
                    _ => true,
                },
            };
        }
        if self.is_tombstoned(header) {
            self.counters.stale_epoch += 1;
            return false;
        }
        if let Some(p) = self.pending_new.get_mut(&header.session) {
            if p.epoch == header.epoch && p.holds(header.seq) {
                held_dup(p, challenge_to);
                self.counters.duplicates += 1;
                return false;
            }
        }
        true
    }

    fn is_tombstoned(&self, header: &Header) -> bool {
        self.tombstones
            .get(&header.session)
            .is_some_and(|&(e, h)| e == header.epoch && header.seq <= h)
    }

    fn touch_path(&mut self, now: Instant, from: SocketAddr, len: usize) {
        if !self.paths.contains_key(&from) {
            if self.paths.len() >= self.max_paths {
                // Forget the address heard from least recently.
                if let Some(old) = self
                    .paths
                    .iter()
                    .min_by_key(|(_, p)| p.last_rx)
                    .map(|(a, _)| *a)
                {
                    self.paths.remove(&old);
                }
            }
            let token = self.rng.nonzero_u64();
            self.paths.insert(
                from,
                BridgePath {
                    validated: false,
                    token,
                    next_validation: now,
                    last_rx: now,
                    rx_bytes_total: 0,
                    tx_bytes_unvalidated: 0,
                    peer_probe_epoch: 0,
                    peer_probes_rx: 0,
                    control: PeerWindows::new(CONTROL_WINDOW),
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                },
            );
            debug!("new bridge address {from}");
        }
        if let Some(p) = self.paths.get_mut(&from) {
            p.last_rx = now;
            p.rx_packets += 1;
            p.rx_bytes += len as u64;
            p.rx_bytes_total += len as u64;
        }
        self.maybe_validate(now, from);
    }

    /// Sends a validation probe to an unvalidated address if one is due.
    fn maybe_validate(&mut self, now: Instant, addr: SocketAddr) {
        let Some(p) = self.paths.get_mut(&addr) else {
            return;
        };
        if p.validated || now < p.next_validation {
            return;
        }
        p.next_validation = now + VALIDATION_RETRY;
        let token = p.token;
        let h = self.control_header(PacketType::Probe);
        self.send_to_one(addr, &h, &Probe { token }.to_bytes());
    }

    fn send_to_one(&mut self, addr: SocketAddr, h: &Header, payload: &[u8]) {
        let mut buf = self.pool.get();
        self.codec.encode(&mut buf, h, payload);
        let Some(p) = self.paths.get_mut(&addr) else {
            self.pool.put(buf);
            return;
        };
        if !p.validated {
            if p.tx_bytes_unvalidated + buf.len() as u64 > AMPLIFICATION_FACTOR * p.rx_bytes_total {
                self.counters.amplification_drops += 1;
                self.pool.put(buf);
                return;
            }
            p.tx_bytes_unvalidated += buf.len() as u64;
        }
        p.tx_packets += 1;
        p.tx_bytes += buf.len() as u64;
        self.counters.net_tx_packets += 1;
        self.counters.net_tx_bytes += buf.len() as u64;
        let mut set = AddrSet::default();
        set.push(addr);
        self.out.push_back(Transmit {
            dest: Dest::Addrs(set),
            data: buf,
        });
    }

    fn count_reject(&mut self, r: PeerReject) {
        self.counters.count_reject(r);
    }

    fn create_session(&mut self, now: Instant, id: u64, from: SocketAddr) -> bool {
        if self.sessions.len() >= self.params.max_sessions {
            self.counters.session_cap_drops += 1;
            if self.last_cap_warn.ready(now, WARN_EVERY) {
                warn!(
                    "session cap ({}) reached: new sessions are refused",
                    self.params.max_sessions
                );
            }
            return false;
        }
        self.sessions.insert(
            id,
            Session {
                next_seq: 1,
                last_active: now,
                peer: PeerWindows::new(self.params.window_size),
                paths: [None; MAX_SESSION_PATHS],
                history: SendHistory::default(),
                pending: None,
            },
        );
        self.counters.sessions_opened += 1;
        self.events.push_back(SessionEvent::Opened(id));
        debug!("new session {id:016x} via {from}");
        true
    }

    fn send_challenge(&mut self, to: SocketAddr, ch: Challenge) {
        let h = self.control_header(PacketType::Challenge);
        self.counters.challenges_sent += 1;
        self.send_to_one(to, &h, &ch.to_bytes());
    }

    /// The header of this endpoint's next control packet (its own sequence, session 0).
    fn control_header(&mut self, ptype: PacketType) -> Header {
        self.control_seq += 1;
        Header {
            ptype,
            flags: 0,
            session: CONTROL_SESSION,
            epoch: self.epoch,
            seq: self.control_seq,
        }
    }

    /// Keyed mode, unknown session: hold the packet and challenge its sender, since a
    /// recorded packet would authenticate just as well as a fresh one.
    fn hold_unknown(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let uptime_us = self.uptime_us(now);
        if let Some(p) = self.pending_new.get_mut(&header.session) {
            if p.epoch != header.epoch {
                self.counters.stale_epoch += 1;
                return;
            }
            if !p.hold(header.seq, payload, from) {
                self.counters.held_dropped += 1;
            }
            if p.note_addr(from) {
                let ch = Challenge {
                    session: header.session,
                    epoch: p.epoch,
                    nonce: p.nonce,
                    uptime_us,
                };
                self.send_challenge(from, ch);
            }
            return;
        }
        if self.pending_new.len() >= PENDING_MAX {
            self.counters.held_dropped += 1;
            return;
        }
        let nonce = self.rng.next_u128();
        let mut p = Pending::new(header.epoch, nonce, now);
        p.hold(header.seq, payload, from);
        p.note_addr(from);
        self.next_challenge = Some(
            self.next_challenge
                .map_or(p.next_try, |t| t.min(p.next_try)),
        );
        self.pending_new.insert(header.session, p);
        let ch = Challenge {
            session: header.session,
            epoch: header.epoch,
            nonce,
            uptime_us,
        };
        self.send_challenge(from, ch);
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let sealed = self.codec.sealed();
        if !self.sessions.contains_key(&header.session) {
            if sealed {
                return self.hold_unknown(now, from, header, payload);
            }
            if !self.create_session(now, header.session, from) {
                return;
            }
        }
        let uptime_us = self.uptime_us(now);
        let Some(session) = self.sessions.get_mut(&header.session) else {
            return;
        };
        let slot = match session.peer.check(header.epoch, header.seq) {
            Ok(s) => s,
            Err(r) => {
                // A duplicate still shows the address is one of the session's paths.
                if matches!(r, PeerReject::Window(Reject::Duplicate)) {
                    Self::remember_path(session, from, &self.paths);
                }
                return self.count_reject(r);
            }
        };
        if slot == EpochSlot::New && sealed {
            // A session admitted under one client epoch now sees another: prove it first.
            match &mut session.pending {
                Some(p) if p.epoch != header.epoch => self.counters.stale_epoch += 1,
                Some(p) => {
                    if !p.hold(header.seq, payload, from) {
                        self.counters.held_dropped += 1;
                    }
                    if p.note_addr(from) {
                        let ch = Challenge {
                            session: header.session,
                            epoch: p.epoch,
                            nonce: p.nonce,
                            uptime_us,
                        };
                        self.send_challenge(from, ch);
                    }
                }
                None => {
                    let nonce = self.rng.next_u128();
                    let mut p = Pending::new(header.epoch, nonce, now);
                    p.hold(header.seq, payload, from);
                    // Challenge every path this session uses, not only the one that spoke.
                    p.note_addr(from);
                    for a in session.paths.iter().flatten() {
                        p.note_addr(*a);
                    }
                    let targets = p.addrs.clone();
                    self.next_challenge = Some(
                        self.next_challenge
                            .map_or(p.next_try, |t| t.min(p.next_try)),
                    );
                    session.pending = Some(p);
                    let ch = Challenge {
                        session: header.session,
                        epoch: header.epoch,
                        nonce,
                        uptime_us,
                    };
                    for to in targets {
                        self.send_challenge(to, ch);
                    }
                }
            }
            return;
        }
        session.peer.commit(slot, header.epoch, header.seq);
        if slot == EpochSlot::New && session.peer.has_previous() {
            self.counters.peer_restarts += 1;
        }
        session.last_active = now;
        Self::remember_path(session, from, &self.paths);
        self.deliver(header.session, payload);
    }

    fn deliver(&mut self, session: u64, payload: &[u8]) {
        let mut buf = self.pool.get();
        buf.extend_from_slice(payload);
        self.counters.local_tx_datagrams += 1;
        self.counters.local_tx_bytes += payload.len() as u64;
        self.out.push_back(Transmit {
            dest: Dest::Session(session),
            data: buf,
        });
    }

    fn on_challenge(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Ok(ch) = Challenge::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        if header.session != CONTROL_SESSION || ch.epoch != self.epoch {
            return;
        }
        let fresh_from = match self.sessions.get(&ch.session) {
            Some(s) => {
                // What we sent before the challenger started may have reached its previous
                // instance: only later packets are fresh to it.
                let since = now
                    .checked_sub(Duration::from_micros(ch.uptime_us))
                    .unwrap_or(self.start);
                s.history.first_sent_since(since, s.next_seq)
            }
            // Nothing sent in this session under this epoch: nothing of it is fresh.
            None => u64::MAX,
        };
        let h = self.control_header(PacketType::Response);
        self.send_to_one(
            from,
            &h,
            &Response {
                challenge: ch,
                fresh_from,
            }
            .to_bytes(),
        );
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Ok(r) = Response::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let id = r.challenge.session;
        let answers = |p: &Pending| {
            p.nonce == r.challenge.nonce && p.epoch == r.challenge.epoch && header.epoch == p.epoch
        };
        let pending = if self.pending_new.get(&id).is_some_and(answers) {
            let Some(p) = self.pending_new.remove(&id) else {
                return;
            };
            if !self.create_session(now, id, from) {
                self.counters.held_dropped += p.held.len() as u64;
                return;
            }
            p
        } else {
            match self.sessions.get_mut(&id) {
                Some(s) if s.pending.as_ref().is_some_and(answers) => match s.pending.take() {
                    Some(p) => {
                        self.counters.peer_restarts += 1;
                        p
                    }
                    None => return,
                },
                _ => return,
            }
        };
        self.counters.challenges_answered += 1;
        // Never below what a removed incarnation of this session already delivered.
        let mut floor = r.fresh_from;
        if let Some(&(e, h)) = self.tombstones.get(&id) {
            if e == pending.epoch {
                floor = floor.max(h.saturating_add(1));
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.peer.admit_epoch(pending.epoch, floor);
        session.last_active = now;
        let mut released = Vec::new();
        for (seq, data, src) in pending.held {
            match session.peer.accept(pending.epoch, seq) {
                Ok(_) => {
                    Self::remember_path(session, src, &self.paths);
                    released.push(data);
                }
                Err(_) => self.counters.stale_epoch += 1,
            }
        }
        Self::remember_path(session, from, &self.paths);
        for data in released {
            self.deliver(id, &data);
        }
    }

    /// Removes a session, leaving a tombstone in the keyed mode.
    fn remove_session(&mut self, id: u64) -> bool {
        let Some(s) = self.sessions.remove(&id) else {
            return false;
        };
        if self.codec.sealed() {
            if let Some(cur) = s.peer.current() {
                if self.tombstones.insert(id, cur).is_none() {
                    self.tomb_order.push_back(id);
                }
                while self.tomb_order.len() > TOMBSTONES_MAX {
                    if let Some(old) = self.tomb_order.pop_front() {
                        self.tombstones.remove(&old);
                    }
                }
            }
        }
        self.events.push_back(SessionEvent::Closed(id));
        true
    }

    fn remember_path(
        session: &mut Session,
        from: SocketAddr,
        paths: &HashMap<SocketAddr, BridgePath>,
    ) {
        if session.paths.contains(&Some(from)) {
            return;
        }
        if let Some(slot) = session.paths.iter_mut().find(|p| p.is_none()) {
            *slot = Some(from);
            return;
        }
        // Full: replace the address heard from least recently (or one already forgotten).
        let last = |a: &Option<SocketAddr>| a.and_then(|a| paths.get(&a)).map(|p| p.last_rx);
        if let Some(slot) = session.paths.iter_mut().min_by_key(|a| last(a)) {
            *slot = Some(from);
        }
    }

    fn on_probe(&mut self, from: SocketAddr, header: &Header, payload: &[u8]) {
        if header.session != CONTROL_SESSION {
            self.counters.malformed += 1;
            return;
        }
        let Ok(probe) = Probe::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let Some(p) = self.paths.get_mut(&from) else {
            return;
        };
        if p.peer_probe_epoch != header.epoch {
            p.peer_probe_epoch = header.epoch;
            p.peer_probes_rx = 0;
        }
        p.peer_probes_rx += 1;
        let ack = ProbeAck {
            echo_seq: header.seq,
            echo_token: probe.token,
            probes_received: p.peer_probes_rx,
        };
        let h = self.control_header(PacketType::ProbeAck);
        self.send_to_one(from, &h, &ack.to_bytes());
    }

    fn on_close(&mut self, header: &Header) {
        let Some(session) = self.sessions.get_mut(&header.session) else {
            // Copies of a CLOSE for a session already gone: nothing to do.
            return;
        };
        // Only the current epoch may close: a CLOSE never admits an epoch.
        if session.peer.current_epoch() != Some(header.epoch) {
            self.counters.stale_epoch += 1;
            return;
        }
        match session.peer.accept(header.epoch, header.seq) {
            Ok(_) => {
                self.counters.close_received += 1;
                self.counters.sessions_closed += 1;
                self.remove_session(header.session);
                debug!("client closed session {:016x}", header.session);
            }
            Err(r) => self.count_reject(r),
        }
    }

    /// A datagram from the target, for `session`.
    pub fn handle_target(&mut self, now: Instant, session: u64, payload: &[u8]) {
        self.counters.local_rx_datagrams += 1;
        self.counters.local_rx_bytes += payload.len() as u64;
        if payload.len() > self.codec.max_payload() {
            self.counters.oversized += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            self.counters.unknown_session += 1;
            return;
        };
        s.last_active = now;
        s.history.on_send(now, s.next_seq);
        let header = Header {
            ptype: PacketType::Data,
            flags: 0,
            session,
            epoch: self.epoch,
            seq: s.next_seq,
        };
        s.next_seq += 1;
        self.send_to_session(now, session, &header, payload);
    }

    fn send_to_session(&mut self, now: Instant, session: u64, header: &Header, payload: &[u8]) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let mut buf = self.pool.get();
        // Encoded (and sealed) once; the same bytes go to every address.
        self.codec.encode(&mut buf, header, payload);
        let len = buf.len() as u64;
        let fresh = self.path_fresh();
        let mut set = AddrSet::default();
        let mut fallback = AddrSet::default();
        for addr in s.paths.iter().flatten() {
            let Some(p) = self.paths.get(addr) else {
                continue;
            };
            let within_budget = p.validated
                || p.tx_bytes_unvalidated + len <= AMPLIFICATION_FACTOR * p.rx_bytes_total;
            if !within_budget {
                self.counters.amplification_drops += 1;
                continue;
            }
            fallback.push(*addr);
            if now.saturating_duration_since(p.last_rx) <= fresh {
                set.push(*addr);
            }
        }
        // If every path looks stale, try them all rather than none.
        let set = if set.is_empty() { fallback } else { set };
        if set.is_empty() {
            self.pool.put(buf);
            return;
        }
        for addr in set.as_slice() {
            if let Some(p) = self.paths.get_mut(addr) {
                if !p.validated {
                    p.tx_bytes_unvalidated += len;
                }
                p.tx_packets += 1;
                p.tx_bytes += len;
            }
        }
        self.counters.net_tx_packets += set.len() as u64;
        self.counters.net_tx_bytes += len * set.len() as u64;
        self.out.push_back(Transmit {
            dest: Dest::Addrs(set),
            data: buf,
        });
    }

    /// The driver could not open a target socket for a session: drop the session.
    pub fn drop_session(&mut self, session: u64) {
        if self.remove_session(session) {
            self.counters.sessions_closed += 1;
        }
    }

    /// Timers: validation retries, idle sessions, forgotten addresses.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let due: Vec<SocketAddr> = self
                .paths
                .iter()
                .filter(|(_, p)| {
                    !p.validated
                        && now >= p.next_validation
                        && now.saturating_duration_since(p.last_rx) < self.params.down_after
                })
                .map(|(a, _)| *a)
                .collect();
            for a in due {
                self.maybe_validate(now, a);
            }
        }
        self.retry_challenges(now);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            let idle = self.params.idle_timeout;
            let expired: Vec<u64> = self
                .sessions
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.last_active) >= idle)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.remove_session(id);
                self.counters.sessions_expired += 1;
                debug!("session {id:016x} expired");
            }
            let forget = PATH_FORGET.max(idle);
            self.paths
                .retain(|_, p| now.saturating_duration_since(p.last_rx) < forget);
        }
    }

    /// Resends unanswered challenges to every address the pending packets came from; gives
    /// up (dropping the held packets) after about a second.
    fn retry_challenges(&mut self, now: Instant) {
        if self.next_challenge.is_none_or(|t| now < t) {
            return;
        }
        let uptime_us = self.uptime_us(now);
        let mut due: Vec<(SocketAddr, Challenge)> = Vec::new();
        let mut dropped = 0u64;
        let mut next: Option<Instant> = None;
        let mut step = |id: u64, p: &mut Pending| -> bool {
            if now >= p.next_try {
                if p.tries >= CHALLENGE_TRIES {
                    dropped += p.held.len() as u64;
                    return false;
                }
                p.tries += 1;
                p.next_try = now + CHALLENGE_RETRY;
                let ch = Challenge {
                    session: id,
                    epoch: p.epoch,
                    nonce: p.nonce,
                    uptime_us,
                };
                due.extend(p.addrs.iter().map(|a| (*a, ch)));
            }
            next = Some(next.map_or(p.next_try, |t| t.min(p.next_try)));
            true
        };
        self.pending_new.retain(|&id, p| step(id, p));
        for (&id, s) in self.sessions.iter_mut() {
            if let Some(p) = &mut s.pending {
                if !step(id, p) {
                    s.pending = None;
                }
            }
        }
        self.next_challenge = next;
        self.counters.held_dropped += dropped;
        for (to, ch) in due {
            self.send_challenge(to, ch);
        }
    }

    /// Clean shutdown: CLOSE every session so clients reset their view of us at once.
    pub fn close(&mut self, now: Instant) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let h = Header {
                ptype: PacketType::Close,
                flags: 0,
                session: id,
                epoch: self.epoch,
                seq: s.next_seq,
            };
            s.next_seq += 1;
            self.send_to_session(now, id, &h, &[]);
            self.remove_session(id);
            self.counters.sessions_closed += 1;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.next_tick.min(self.next_sweep);
        Some(self.next_challenge.map_or(t, |c| c.min(t)))
    }

    /// Next packet or delivery for the driver.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next session event for the driver.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
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

    /// A stats snapshot; paths are the bridge addresses heard from recently.
    pub fn stats(&self, now: Instant) -> Stats {
        let fresh = self.path_fresh();
        let mut paths: Vec<PathStats> = self
            .paths
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_rx) < Duration::from_secs(60))
            .map(|(a, p)| {
                let silent = now.saturating_duration_since(p.last_rx);
                PathStats {
                    name: a.to_string(),
                    remote: a.to_string(),
                    state: if silent <= fresh { "up" } else { "down" }.to_string(),
                    tx_packets: p.tx_packets,
                    tx_bytes: p.tx_bytes,
                    rx_packets: p.rx_packets,
                    rx_bytes: p.rx_bytes,
                    last_rx_ms: Some(silent.as_millis() as u64),
                    ..PathStats::default()
                }
            })
            .collect();
        paths.sort_by(|a, b| a.name.cmp(&b.name));
        Stats {
            role: "server".into(),
            epoch: format!("{:016x}", self.epoch),
            uptime_s: now.saturating_duration_since(self.start).as_secs_f64(),
            mode: "-".into(),
            encrypted: self.codec.sealed(),
            sessions: self.sessions.len(),
            totals: self.counters.clone(),
            paths,
        }
    }
}
