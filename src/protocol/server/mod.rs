//! The server endpoint's routing: one session per session id (each with its own target
//! socket in the driver), replies on every bridge address that session was seen on
//! recently, new sessions admitted (after a challenge, with a key), and the table of bridge
//! addresses (`bridges`). What both roles share lives in the endpoint core and the session
//! type.

mod bridges;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use super::endpoint::Core;
use super::event::{CloseReason, Event};
use super::fresh::{Pending, Retry};
use super::packet::{Challenge, Header, PacketType, Probe, ProbeAck, Response, CONTROL_SESSION};
use super::params::Params;
use super::peer::PeerReject;
use super::session::{idle_sessions, Admit, Refusal, Session};
use super::stats::Stats;
use super::timer::Timer;
use super::transmit::{AddrSet, ServerDest, MAX_SESSION_PATHS};
use super::window::Reject;
use bridges::Bridges;

/// Idle sessions and silent addresses are looked for at most this often.
const SWEEP_MIN: Duration = Duration::from_secs(1);
/// A bridge address not heard from for this long is forgotten entirely.
const PATH_FORGET: Duration = Duration::from_secs(300);
/// Most unknown sessions waiting for a challenge answer at once (keyed mode).
const PENDING_MAX: usize = 1024;
/// Most tombstones of removed sessions kept (keyed mode).
const TOMBSTONES_MAX: usize = 16_384;

/// A server session: the shared session state plus the bridge addresses it replies to.
#[derive(Debug)]
struct Served {
    session: Session<SocketAddr>,
    paths: [Option<SocketAddr>; MAX_SESSION_PATHS],
}

impl Served {
    /// Adds `from` to the addresses replies go to; when full, it replaces the one heard
    /// from least recently (or one already forgotten).
    fn remember_path(&mut self, from: SocketAddr, bridges: &Bridges) {
        if self.paths.contains(&Some(from)) {
            return;
        }
        if let Some(slot) = self.paths.iter_mut().find(|p| p.is_none()) {
            *slot = Some(from);
            return;
        }
        let last = |a: &Option<SocketAddr>| a.and_then(|a| bridges.get(&a)).map(|p| p.last_rx);
        if let Some(slot) = self.paths.iter_mut().min_by_key(|a| last(a)) {
            *slot = Some(from);
        }
    }
}

/// The server side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Server {
    core: Core<ServerDest>,
    sessions: HashMap<u64, Served>,
    /// Keyed mode: unknown sessions waiting for their challenge to be answered.
    pending_new: HashMap<u64, Pending<SocketAddr>>,
    /// Keyed mode: (client epoch, highest sequence) of removed sessions, so their replays are
    /// refused even after a successful challenge; oldest first in `tomb_order`.
    tombstones: HashMap<u64, (u64, u64)>,
    tomb_order: VecDeque<u64>,
    bridges: Bridges,
}

impl Server {
    /// A server; `seed` drives its epoch and tokens.
    pub fn new(params: Params, seed: u64, now: Instant) -> Self {
        let max_paths = params.max_sessions.saturating_mul(4).max(64);
        Server {
            core: Core::new(params, seed, now),
            sessions: HashMap::new(),
            pending_new: HashMap::new(),
            tombstones: HashMap::new(),
            tomb_order: VecDeque::new(),
            bridges: Bridges::new(max_paths),
        }
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
        self.core.params.down_after * 2
    }

    /// A datagram from the network, from bridge address `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let origin = format_args!("from {from}");
        let Some(header) = self.core.parse(now, bytes, &origin) else {
            return;
        };
        // Duplicates and replays are refused before paying for verification.
        if header.ptype == PacketType::Data && !self.precheck_data(now, from, &header) {
            return;
        }
        let mut scratch = self.core.take_scratch();
        let origin = format_args!("from {from}");
        if let Some(payload) = self.core.open(now, bytes, &mut scratch, &origin) {
            self.dispatch(now, from, bytes.len(), &header, payload);
        }
        self.core.put_scratch(scratch);
    }

    fn control_fresh(&mut self, from: SocketAddr, header: &Header) -> bool {
        match self.bridges.control_fresh(from, header) {
            Ok(()) => true,
            Err(r) => {
                self.core.counters.count_reject(r);
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
        if header.ptype == PacketType::Data && header.session == CONTROL_SESSION {
            self.core.counters.malformed += 1;
            return;
        }
        if matches!(
            header.ptype,
            PacketType::TargetRequest | PacketType::TargetDeny
        ) {
            self.core.counters.malformed += 1;
            return;
        }
        self.touch_path(now, from, len);
        match header.ptype {
            PacketType::Data => self.on_data(now, from, header, payload),
            PacketType::Close => self.on_close(header),
            _ if !self.control_fresh(from, header) => {}
            PacketType::Probe => self.on_probe(from, header, payload),
            PacketType::ProbeAck => match ProbeAck::parse(payload) {
                Ok(ack) => {
                    if self.bridges.on_ack_token(from, ack.echo_token) {
                        debug!("bridge address {from} validated");
                    }
                }
                Err(_) => self.core.counters.malformed += 1,
            },
            PacketType::Challenge => self.on_challenge(now, from, header, payload),
            PacketType::Response => self.on_response(now, from, header, payload),
            PacketType::TargetRequest | PacketType::TargetDeny => {}
        }
    }

    /// Window, hold-queue and tombstone checks for DATA before verification; false = dropped.
    fn precheck_data(&mut self, now: Instant, from: SocketAddr, header: &Header) -> bool {
        let uptime_us = self.core.uptime_us(now);
        let mut challenge_to = None;
        let keep = self.precheck_inner(from, header, uptime_us, &mut challenge_to);
        if let Some(ch) = challenge_to {
            // A copy from another path: challenge that path too, in case the first is lossy.
            self.send_challenge(from, ch);
        }
        keep
    }

    fn precheck_inner(
        &mut self,
        from: SocketAddr,
        header: &Header,
        uptime_us: u64,
        challenge_to: &mut Option<Challenge>,
    ) -> bool {
        let mut held_dup = |p: &mut Pending<SocketAddr>| {
            if p.note_origin(from) {
                *challenge_to = Some(p.challenge(header.session, uptime_us));
            }
        };
        if let Some(served) = self.sessions.get_mut(&header.session) {
            let r = match served.session.precheck(header) {
                Ok(()) => return true,
                Err(r) => r,
            };
            // A duplicate from an address the session does not use yet names a new path:
            // verify it (in on_data) before trusting that. From a known path it is just
            // another copy: no decryption.
            if r == Refusal::Window(PeerReject::Window(Reject::Duplicate))
                && !served.paths.contains(&Some(from))
            {
                return true;
            }
            if r == Refusal::HeldDuplicate {
                if let Some(p) = &mut served.session.pending {
                    held_dup(p);
                }
            }
            self.core.count_refusal(r);
            return false;
        }
        if self.is_tombstoned(header) {
            self.core.counters.stale_epoch += 1;
            return false;
        }
        if let Some(p) = self.pending_new.get_mut(&header.session) {
            if p.epoch == header.epoch && p.holds(header.seq) {
                held_dup(p);
                self.core.counters.duplicates += 1;
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
        let rng = &mut self.core.rng;
        if self.bridges.touch(now, from, len, || rng.nonzero_u64()) {
            debug!("new bridge address {from}");
            let forget = PATH_FORGET.max(self.core.params.idle_timeout);
            self.core.timers.set_earliest(Timer::Sweep, now + forget);
        }
        self.maybe_validate(now, from);
    }

    /// Sends a validation probe to an unvalidated address if one is due.
    fn maybe_validate(&mut self, now: Instant, addr: SocketAddr) {
        let Some(token) = self.bridges.validation_due(now, addr) else {
            return;
        };
        self.core
            .timers
            .set_earliest(Timer::Validation, now + bridges::VALIDATION_RETRY);
        let h = self.core.control_header(PacketType::Probe);
        self.send_to_one(addr, &h, &Probe { token }.to_bytes());
    }

    fn send_to_one(&mut self, addr: SocketAddr, h: &Header, payload: &[u8]) {
        let buf = self.core.encode(h, payload);
        let len = buf.len() as u64;
        if self.bridges.get(&addr).is_none() {
            return self.core.discard(buf);
        }
        if !self.bridges.within_budget(&addr, len) {
            self.core.counters.amplification_drops += 1;
            return self.core.discard(buf);
        }
        self.bridges.on_send(&addr, len);
        let mut set = AddrSet::default();
        set.push(addr);
        self.core.queue(ServerDest::Bridges(set), buf, 1);
    }

    fn create_session(&mut self, now: Instant, id: u64, from: SocketAddr) -> bool {
        if self.sessions.len() >= self.core.params.max_sessions {
            self.core.refuse_over_cap(now, &"new sessions are refused");
            return false;
        }
        let window = self.core.params.window_size;
        self.sessions.insert(
            id,
            Served {
                session: Session::new(id, window, now),
                paths: [None; MAX_SESSION_PATHS],
            },
        );
        self.core.push_event(Event::SessionOpened { session: id });
        let idle = self.core.params.idle_timeout;
        self.core.timers.set_earliest(Timer::Sweep, now + idle);
        debug!("new session {id:016x} via {from}");
        true
    }

    fn send_challenge(&mut self, to: SocketAddr, ch: Challenge) {
        let (h, p) = self.core.challenge_packet(&ch);
        self.send_to_one(to, &h, &p);
    }

    /// Keyed mode, unknown session: hold the packet and challenge its sender, since a
    /// recorded packet would authenticate just as well as a fresh one.
    fn hold_unknown(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let uptime_us = self.core.uptime_us(now);
        if let Some(p) = self.pending_new.get_mut(&header.session) {
            if p.epoch != header.epoch {
                self.core.counters.stale_epoch += 1;
                return;
            }
            if !p.hold(header.seq, payload, from) {
                self.core.counters.held_dropped += 1;
            }
            if p.note_origin(from) {
                let ch = p.challenge(header.session, uptime_us);
                self.send_challenge(from, ch);
            }
            return;
        }
        if self.pending_new.len() >= PENDING_MAX {
            self.core.counters.held_dropped += 1;
            return;
        }
        let mut p = Pending::new(header.epoch, self.core.rng.next_u128(), now);
        p.hold(header.seq, payload, from);
        p.note_origin(from);
        self.core.timers.set_earliest(Timer::Challenge, p.next_try);
        let ch = p.challenge(header.session, uptime_us);
        self.pending_new.insert(header.session, p);
        self.send_challenge(from, ch);
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let sealed = self.core.codec.sealed();
        if !self.sessions.contains_key(&header.session) {
            if sealed {
                return self.hold_unknown(now, from, header, payload);
            }
            if !self.create_session(now, header.session, from) {
                return;
            }
        }
        let Some(served) = self.sessions.get_mut(&header.session) else {
            return;
        };
        let rng = &mut self.core.rng;
        let verdict = served
            .session
            .admit(now, header, payload, from, sealed, || rng.next_u128());
        match verdict {
            Admit::Deliver { restarted } => {
                served.remember_path(from, &self.bridges);
                if restarted {
                    self.core.push_event(Event::PeerRestarted {
                        session: header.session,
                        epoch: header.epoch,
                    });
                }
                self.core
                    .deliver(ServerDest::Target(header.session), payload);
            }
            Admit::Hold { held, new_origin } => {
                if !held {
                    self.core.counters.held_dropped += 1;
                }
                let uptime_us = self.core.uptime_us(now);
                let ch = served.session.pending.as_ref().filter(|_| new_origin);
                if let Some(ch) = ch.map(|p| p.challenge(header.session, uptime_us)) {
                    self.send_challenge(from, ch);
                }
            }
            Admit::Challenge => {
                // A session admitted under one client epoch now sees another: challenge every
                // path this session uses, not only the one that spoke.
                let Some(p) = &mut served.session.pending else {
                    return;
                };
                for a in served.paths.iter().flatten() {
                    p.note_origin(*a);
                }
                let targets = p.origins.clone();
                let ch = p.challenge(header.session, self.core.uptime_us(now));
                self.core.timers.set_earliest(Timer::Challenge, p.next_try);
                for to in targets {
                    self.send_challenge(to, ch);
                }
            }
            Admit::Drop(r) => {
                // A duplicate still shows the address is one of the session's paths.
                if r == Refusal::Window(PeerReject::Window(Reject::Duplicate)) {
                    served.remember_path(from, &self.bridges);
                }
                self.core.count_refusal(r);
            }
        }
    }

    fn on_challenge(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Some(ch) = self.core.parse_challenge(header, payload) else {
            return;
        };
        let fresh_from = match self.sessions.get(&ch.session) {
            // The server measures no round-trip time to the client: zero.
            Some(s) => s
                .session
                .fresh_from(now, ch.uptime_us, Duration::ZERO, self.core.start),
            // Nothing sent in this session under this epoch: nothing of it is fresh.
            None => u64::MAX,
        };
        let (h, p) = self.core.response_packet(ch, fresh_from);
        self.send_to_one(from, &h, &p);
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Ok(r) = Response::parse(payload) else {
            self.core.counters.malformed += 1;
            return;
        };
        let id = r.challenge.session;
        let (pending, restarted) = if self
            .pending_new
            .get(&id)
            .is_some_and(|p| p.answered_by(&r, header.epoch))
        {
            let Some(p) = self.pending_new.remove(&id) else {
                return;
            };
            if !self.create_session(now, id, from) {
                self.core.counters.held_dropped += p.held.len() as u64;
                return;
            }
            (p, false)
        } else {
            match self
                .sessions
                .get_mut(&id)
                .and_then(|s| s.session.take_answered(&r, header.epoch))
            {
                Some(p) => (p, true),
                None => return,
            }
        };
        self.core.counters.challenges_answered += 1;
        if restarted {
            self.core.push_event(Event::PeerRestarted {
                session: id,
                epoch: pending.epoch,
            });
        }
        // Never below what a removed incarnation of this session already delivered.
        let mut floor = r.fresh_from;
        if let Some(&(e, h)) = self.tombstones.get(&id) {
            if e == pending.epoch {
                floor = floor.max(h.saturating_add(1));
            }
        }
        let Some(served) = self.sessions.get_mut(&id) else {
            return;
        };
        let (_, released) = served.session.admit_answered(pending, floor);
        served.session.last_active = now;
        self.core.counters.stale_epoch += released.refused;
        for (_, src) in &released.deliver {
            served.remember_path(*src, &self.bridges);
        }
        served.remember_path(from, &self.bridges);
        for (data, _) in released.deliver {
            self.core.deliver(ServerDest::Target(id), &data);
        }
    }

    /// Removes a session, leaving a tombstone in the keyed mode.
    fn remove_session(&mut self, id: u64, reason: CloseReason) -> bool {
        let Some(s) = self.sessions.remove(&id) else {
            return false;
        };
        if self.core.codec.sealed() {
            if let Some(cur) = s.session.peer.current() {
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
        self.core.push_event(Event::SessionClosed {
            session: id,
            reason,
        });
        true
    }

    fn on_probe(&mut self, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Some(probe) = self.core.parse_probe(header, payload) else {
            return;
        };
        let Some(received) = self.bridges.peer_probe(from, header.epoch) else {
            return;
        };
        let (h, ack) = self.core.probe_ack(header, probe, received);
        self.send_to_one(from, &h, &ack);
    }

    fn on_close(&mut self, header: &Header) {
        let Some(served) = self.sessions.get_mut(&header.session) else {
            // Copies of a CLOSE for a session already gone: nothing to do.
            return;
        };
        match served.session.accept_close(header) {
            Ok(()) => {
                self.core.counters.close_received += 1;
                self.core.counters.sessions_closed += 1;
                self.remove_session(header.session, CloseReason::PeerClosed);
                debug!("client closed session {:016x}", header.session);
            }
            Err(r) => self.core.count_refusal(r),
        }
    }

    /// A datagram from the target, for `session`.
    pub fn handle_target(&mut self, now: Instant, session: u64, payload: &[u8]) {
        if !self.core.accept_local(payload.len()) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            self.core.counters.unknown_session += 1;
            return;
        };
        let seq = s.session.next_send(now);
        let header = self.core.header(PacketType::Data, session, seq);
        self.send_to_session(now, session, &header, payload);
    }

    fn send_to_session(&mut self, now: Instant, session: u64, header: &Header, payload: &[u8]) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let paths = s.paths;
        // Encoded (and sealed) once; the same bytes go to every address.
        let buf = self.core.encode(header, payload);
        let len = buf.len() as u64;
        let fresh = self.path_fresh();
        let mut set = AddrSet::default();
        let mut fallback = AddrSet::default();
        for addr in paths.iter().flatten() {
            let Some(p) = self.bridges.get(addr) else {
                continue;
            };
            if !self.bridges.within_budget(addr, len) {
                self.core.counters.amplification_drops += 1;
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
            return self.core.discard(buf);
        }
        for addr in set.as_slice() {
            self.bridges.on_send(addr, len);
        }
        let copies = set.len();
        self.core.queue(ServerDest::Bridges(set), buf, copies);
    }

    /// The driver could not open a target socket for a session: drop the session.
    pub fn drop_session(&mut self, session: u64) {
        if self.remove_session(session, CloseReason::NoResources) {
            self.core.counters.sessions_closed += 1;
        }
    }

    /// Timers: validation retries, challenges, idle sessions, forgotten addresses.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.core.timers.take_all_expired(now) {
            match t {
                Timer::Validation => self.retry_validations(now),
                Timer::Challenge => self.retry_challenges(now),
                Timer::Sweep => self.sweep(now),
            }
        }
    }

    /// Probes again the unvalidated addresses whose probe is due.
    fn retry_validations(&mut self, now: Instant) {
        // Each probe sent re-arms the timer; so do the addresses still waiting.
        let (due, next) = self.bridges.validations(now, self.core.params.down_after);
        if let Some(next) = next {
            self.core.timers.set_earliest(Timer::Validation, next);
        }
        for a in due {
            self.maybe_validate(now, a);
        }
    }

    /// Expires idle sessions and forgets silent addresses, then sleeps until the next one
    /// could go.
    fn sweep(&mut self, now: Instant) {
        let idle = self.core.params.idle_timeout;
        let sessions = self.sessions.iter().map(|(id, s)| (id, &s.session));
        let (expired, next_session) = idle_sessions(sessions, now, idle);
        for id in expired {
            self.remove_session(id, CloseReason::Expired);
            self.core.counters.sessions_expired += 1;
            debug!("session {id:016x} expired");
        }
        let forget = PATH_FORGET.max(idle);
        let next_path = self.bridges.forget_silent(now, forget);
        if let Some(next) = [next_path, next_session].into_iter().flatten().min() {
            self.core
                .timers
                .set(Timer::Sweep, next.max(now + SWEEP_MIN));
        }
    }

    /// Resends unanswered challenges to every address the pending packets came from; gives
    /// up (dropping the held packets) after about a second.
    fn retry_challenges(&mut self, now: Instant) {
        let uptime_us = self.core.uptime_us(now);
        let mut due: Vec<(SocketAddr, Challenge)> = Vec::new();
        let mut dropped = 0u64;
        let mut next: Option<Instant> = None;
        let mut step = |id: u64, p: &mut Pending<SocketAddr>| -> bool {
            match p.poll_retry(now) {
                Retry::GiveUp => {
                    dropped += p.held.len() as u64;
                    return false;
                }
                Retry::Resend => {
                    let ch = p.challenge(id, uptime_us);
                    due.extend(p.origins.iter().map(|a| (*a, ch)));
                }
                Retry::Wait => {}
            }
            next = Some(next.map_or(p.next_try, |t| t.min(p.next_try)));
            true
        };
        self.pending_new.retain(|&id, p| step(id, p));
        for (&id, s) in self.sessions.iter_mut() {
            if let Some(p) = &mut s.session.pending {
                if !step(id, p) {
                    s.session.pending = None;
                }
            }
        }
        if let Some(t) = next {
            self.core.timers.set(Timer::Challenge, t);
        }
        self.core.counters.held_dropped += dropped;
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
            let seq = s.session.next_seq;
            s.session.next_seq += 1;
            let h = self.core.header(PacketType::Close, id, seq);
            self.send_to_session(now, id, &h, &[]);
            self.remove_session(id, CloseReason::Shutdown);
            self.core.counters.sessions_closed += 1;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run (None: nothing to do
    /// until a packet arrives).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.timers.next()
    }

    /// A stats snapshot; paths are the bridge addresses heard from recently.
    pub fn stats(&self, now: Instant) -> Stats {
        let paths = self.bridges.stats(now, self.path_fresh());
        self.core
            .stats(now, "server", "-", self.sessions.len(), paths)
    }
}

super::endpoint::endpoint_of!(Server, ServerDest);
