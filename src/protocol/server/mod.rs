//! The server endpoint's routing. Each session of a client (a client epoch and the
//! client's session id) gets its own target socket in the driver; replies go on every live
//! path of that client (`clients`: one address per client path index, one replay window
//! per client epoch); client epochs are admitted (after a challenge, with a key) once, not
//! per session; bridge addresses are validated and bounded (`bridges`).

mod bridges;
mod clients;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use super::endpoint::Core;
use super::event::{CloseReason, Event};
use super::fresh::{Pending, Retry};
use super::packet::{Announce, Challenge, Header, PacketType, Probe, ProbeAck, Response, Sender};
use super::params::Params;
use super::secure_rng::Seed;
use super::session::{idle_sessions, Session};
use super::stats::{ClientStats, Stats};
use super::timer::Timer;
use super::transmit::ServerDest;
use super::window::Reject;
use bridges::Bridges;
use clients::{ClientEpoch, Origin, PendingEpochs, Tombstones};

/// Idle sessions and silent addresses are looked for at most this often.
const SWEEP_MIN: Duration = Duration::from_secs(1);
/// A bridge address not heard from for this long is forgotten entirely.
const PATH_FORGET: Duration = Duration::from_secs(300);
/// A dropped client epoch's tombstone is kept this long beyond the idle timeout.
const TOMBSTONE_MARGIN: Duration = Duration::from_secs(60);
/// Challenges to one address are at least this far apart (retries excepted).
const CHALLENGE_SPACING: Duration = Duration::from_millis(10);

/// A session of one client epoch.
#[derive(Debug)]
struct Served {
    session: Session,
    epoch: u64,
}

/// The server side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Server {
    core: Core<ServerDest>,
    /// Sessions by the server's handle (what the driver and the target side know).
    sessions: HashMap<u64, Served>,
    /// Handle by (client epoch, client session id).
    by_key: HashMap<(u64, u64), u64>,
    clients: HashMap<u64, ClientEpoch>,
    /// Keyed mode: client epochs waiting for their challenge to be answered.
    pending: PendingEpochs,
    /// Keyed mode: client epochs dropped while idle.
    tombstones: Tombstones,
    bridges: Bridges,
    /// When each address was last challenged, for the spacing (bounded with `bridges`).
    last_challenge: HashMap<SocketAddr, Instant>,
}

impl Server {
    /// A server; `seed` drives its epoch, handles, tokens and nonces.
    pub fn new(params: Params, seed: &Seed, now: Instant) -> Self {
        let max_paths = params.max_sessions.saturating_mul(4).max(64);
        Server {
            core: Core::new(params, Sender::Server, seed, now),
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            clients: HashMap::new(),
            pending: PendingEpochs::default(),
            tombstones: Tombstones::default(),
            bridges: Bridges::new(max_paths),
            last_challenge: HashMap::new(),
        }
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// True if the session (a handle) exists.
    pub fn has_session(&self, handle: u64) -> bool {
        self.sessions.contains_key(&handle)
    }

    /// Number of client epochs held (plus those waiting for a challenge answer, and
    /// tombstones), for tests of bounded state.
    pub fn client_epochs(&self) -> (usize, usize, usize) {
        (
            self.clients.len(),
            self.pending.len(),
            self.tombstones.len(),
        )
    }

    /// True once `addr` answered its validation probe.
    pub fn bridge_validated(&self, addr: &SocketAddr) -> bool {
        self.bridges.is_validated(addr)
    }

    /// Takes new protocol knobs (a reloaded config); the key and the window size stay.
    pub fn set_params(&mut self, mut params: Params) {
        params.key = self.core.params.key.clone();
        params.window_size = self.core.params.window_size;
        self.core.params = params;
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
        if !self.core.verify_path(now, bytes, &origin) {
            return;
        }
        if header.ptype == PacketType::Data {
            // Duplicates and replays of known epochs are refused before decryption.
            let fresh = self.precheck_data(&header);
            // A copy that another path delivered first still came from this address (its
            // path MAC checked, with a key): it counts toward the address's
            // anti-amplification budget, as the copies it was first with do.
            let duplicate = if fresh { 0 } else { bytes.len() };
            self.bridges.on_data(&from, header.epoch, duplicate);
            if !fresh {
                return;
            }
        }
        let mut scratch = self.core.take_scratch();
        let origin = format_args!("from {from}");
        if let Some(payload) = self.core.open(now, bytes, &mut scratch, &origin) {
            self.dispatch(now, from, bytes.len(), &header, payload);
        }
        self.core.put_scratch(scratch);
    }

    /// The window check of a known (or buried) client epoch; unknown epochs pass (they are
    /// authenticated, then held).
    fn precheck_data(&mut self, header: &Header) -> bool {
        let verdict = match self.clients.get(&header.epoch) {
            Some(c) => c.window.check(header.seq),
            None => match self.tombstones.highest(header.epoch) {
                Some((h, _)) if header.seq <= h => Err(Reject::TooOld),
                _ => Ok(()),
            },
        };
        match verdict {
            Ok(()) => true,
            Err(r) => {
                self.core
                    .counters
                    .count_reject(super::peer::PeerReject::Window(r));
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
        if header.ptype.reserved() {
            self.core.counters.unsupported += 1;
            return;
        }
        let control = header.session == super::packet::CONTROL_SESSION;
        if control == matches!(header.ptype, PacketType::Data | PacketType::Close) {
            // Data on the control session, or control off it.
            self.core.counters.malformed += 1;
            return;
        }
        // Authenticated (with a key): the address is worth knowing now.
        self.touch_path(now, from, len);
        match header.ptype {
            PacketType::Data => self.on_data(now, from, header, payload),
            PacketType::Close => self.on_close(now, header),
            _ if !self.control_fresh(now, from, header) => {}
            PacketType::Probe => self.on_probe(from, header, payload),
            PacketType::Announce => self.on_announce(header, payload),
            PacketType::ProbeAck => match ProbeAck::parse(payload) {
                Ok(ack) => {
                    if self.bridges.on_ack_token(from, ack.echo_token) {
                        debug!("bridge address {from} validated");
                    }
                }
                Err(_) => self.core.counters.malformed += 1,
            },
            PacketType::Challenge => self.on_challenge(now, from, header, payload),
            PacketType::Response => self.on_response(now, header, payload),
            _ => self.core.counters.malformed += 1,
        }
    }

    /// Control packets count once: per client epoch when it is known (a fresh probe then
    /// also says where that path is), per address otherwise.
    fn control_fresh(&mut self, now: Instant, from: SocketAddr, header: &Header) -> bool {
        let verdict = match self.clients.get_mut(&header.epoch) {
            Some(c) => {
                // Newer than every control packet of that epoch so far: not a replay of
                // one, even of one that came before the epoch was admitted.
                let newest = c.control.highest().is_none_or(|h| header.seq > h);
                match c.control.accept(header.seq) {
                    Ok(()) => {
                        if header.ptype == PacketType::Probe && newest {
                            c.learn(header.path, from, &self.bridges);
                        }
                        if header.ptype == PacketType::Probe {
                            c.last_active = now;
                        }
                        Ok(())
                    }
                    Err(r) => Err(super::peer::PeerReject::Window(r)),
                }
            }
            None => self.bridges.control_fresh(from, header),
        };
        match verdict {
            Ok(()) => true,
            Err(r) => {
                self.core.counters.count_reject(r);
                false
            }
        }
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
        self.send_to_one(addr, 0, &h, &Probe::token(token).to_bytes());
    }

    /// One copy to one address (within its budget), as path `path` of the client.
    fn send_to_one(&mut self, addr: SocketAddr, path: u8, h: &Header, payload: &[u8]) {
        let template = self.core.prepare(h, payload);
        let copy = self.core.copy(&template, path);
        self.core.discard(template);
        let len = copy.len() as u64;
        if !self.bridges.within_budget(&addr, len) {
            self.core.counters.amplification_drops += 1;
            return self.core.discard(copy);
        }
        self.bridges.on_send(&addr, len);
        self.core.queue(ServerDest::Bridge(addr), copy);
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let epoch = header.epoch;
        if !self.clients.contains_key(&epoch) {
            if let Some((h, ch)) = self.tombstones.highest(epoch) {
                // A client epoch dropped while idle speaks again, past what it had sent:
                // admitted at once, from there on.
                self.tombstones.raise(epoch);
                if !self.admit_client(now, epoch, (h.saturating_add(1), ch.saturating_add(1))) {
                    return;
                }
            } else if self.core.codec.sealed() {
                return self.hold_unknown(now, from, header, payload);
            } else if !self.admit_client(now, epoch, (0, 0)) {
                return;
            }
        }
        let origin = Origin {
            from,
            path: header.path,
            session: header.session,
        };
        self.accept_data(now, epoch, header.seq, origin, payload);
    }

    /// A packet of a known client epoch: the window, then where that path is, the session
    /// (created on its first packet), and the target.
    fn accept_data(&mut self, now: Instant, epoch: u64, seq: u64, o: Origin, payload: &[u8]) {
        let Some(client) = self.clients.get_mut(&epoch) else {
            return;
        };
        if let Err(r) = client.window.accept(seq) {
            return self
                .core
                .counters
                .count_reject(super::peer::PeerReject::Window(r));
        }
        client.last_active = now;
        client.learn(o.path, o.from, &self.bridges);
        let Some(handle) = self.session_for(now, epoch, o.session, o.from) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&handle) {
            s.session.last_active = now;
        }
        self.core.deliver(ServerDest::Target(handle), payload);
    }

    /// The handle of session `id` of client `epoch`, created if new (within the cap).
    fn session_for(&mut self, now: Instant, epoch: u64, id: u64, from: SocketAddr) -> Option<u64> {
        if let Some(&h) = self.by_key.get(&(epoch, id)) {
            return Some(h);
        }
        if self.sessions.len() >= self.core.params.max_sessions {
            self.core.refuse_over_cap(now, &"new sessions are refused");
            return None;
        }
        let mut handle = self.core.rng.nonzero_u64();
        while self.sessions.contains_key(&handle) {
            handle = self.core.rng.nonzero_u64();
        }
        let session = Session {
            id,
            last_active: now,
        };
        self.sessions.insert(handle, Served { session, epoch });
        self.by_key.insert((epoch, id), handle);
        if let Some(c) = self.clients.get_mut(&epoch) {
            c.sessions += 1;
        }
        self.core
            .push_event(Event::SessionOpened { session: handle });
        let idle = self.core.params.idle_timeout;
        self.core.timers.set_earliest(Timer::Sweep, now + idle);
        debug!("new session {id:016x} of client {epoch:016x} via {from}");
        Some(handle)
    }

    /// A new client epoch, its DATA and control packets below `floors` refused; false when
    /// over the cap.
    fn admit_client(&mut self, now: Instant, epoch: u64, floors: (u64, u64)) -> bool {
        if self.clients.len() >= self.core.params.max_sessions {
            self.core.refuse_over_cap(now, &"new clients are refused");
            return false;
        }
        let window = self.core.params.window_size;
        self.clients
            .insert(epoch, ClientEpoch::new(window, floors, now));
        let idle = self.core.params.idle_timeout;
        self.core.timers.set_earliest(Timer::Sweep, now + idle);
        true
    }

    fn send_challenge(&mut self, now: Instant, to: SocketAddr, path: u8, ch: Challenge) {
        let (h, p) = self.core.challenge_packet(&ch);
        self.last_challenge.insert(to, now);
        self.send_to_one(to, path, &h, &p);
    }

    /// Challenges `to`, unless it had one within the spacing (the retries cover it).
    fn challenge_spaced(&mut self, now: Instant, to: SocketAddr, path: u8, ch: Challenge) {
        let recent = self
            .last_challenge
            .get(&to)
            .is_some_and(|t| now.saturating_duration_since(*t) < CHALLENGE_SPACING);
        if recent {
            self.core.counters.challenges_limited += 1;
        } else {
            self.send_challenge(now, to, path, ch);
        }
    }

    /// Keyed mode, unknown client epoch: hold the (authenticated) packet and challenge its
    /// sender, since a recorded packet would authenticate just as well as a fresh one.
    fn hold_unknown(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let age = self.tombstones.age_us(now, self.core.start);
        let origin = Origin {
            from,
            path: header.path,
            session: header.session,
        };
        if let Some(p) = self.pending.get_mut(header.epoch) {
            if p.holds(header.seq) {
                self.core.counters.duplicates += 1;
                return;
            }
            if !p.hold(header.seq, payload, origin) {
                self.core.counters.held_dropped += 1;
            }
            if p.note_origin(origin_key(origin)) {
                let ch = p.challenge(header.session, age);
                self.challenge_spaced(now, from, header.path, ch);
            }
            return;
        }
        if !self.pending.has_room(from.ip()) {
            self.core.counters.held_dropped += 1;
            return;
        }
        let mut p = Pending::new(header.epoch, self.core.rng.next_u128(), now);
        p.hold(header.seq, payload, origin);
        p.note_origin(origin_key(origin));
        self.core.timers.set_earliest(Timer::Challenge, p.next_try);
        let ch = p.challenge(header.session, age);
        self.pending.insert(header.epoch, p, from.ip());
        self.challenge_spaced(now, from, header.path, ch);
    }

    fn on_challenge(&mut self, now: Instant, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Some(ch) = self.core.parse_challenge(header, payload) else {
            return;
        };
        // The server measures no round-trip time to the client: zero.
        let fresh_from = self.core.fresh_from(now, ch.age_us, Duration::ZERO);
        let (h, p) = self.core.response_packet(ch, fresh_from);
        self.send_to_one(from, header.path, &h, &p);
    }

    fn on_response(&mut self, now: Instant, header: &Header, payload: &[u8]) {
        let Ok(r) = Response::parse(payload) else {
            self.core.counters.malformed += 1;
            return;
        };
        let epoch = header.epoch;
        if !self
            .pending
            .get(epoch)
            .is_some_and(|p| p.answered_by(&r, epoch))
        {
            return;
        }
        let Some(p) = self.pending.remove(epoch) else {
            return;
        };
        self.core.counters.challenges_answered += 1;
        // Every control packet it sent before this answer is old from now on.
        let floors = (r.fresh_from, header.seq.saturating_add(1));
        if !self.admit_client(now, epoch, floors) {
            self.core.counters.held_dropped += p.held.len() as u64;
            return;
        }
        for (seq, data, origin) in p.held {
            self.accept_data(now, epoch, seq, origin, &data);
        }
    }

    /// Removes a session; its client epoch goes with its last session when idle (sweep).
    fn remove_session(&mut self, handle: u64, reason: CloseReason) -> bool {
        let Some(s) = self.sessions.remove(&handle) else {
            return false;
        };
        self.by_key.remove(&(s.epoch, s.session.id));
        if let Some(c) = self.clients.get_mut(&s.epoch) {
            c.sessions = c.sessions.saturating_sub(1);
        }
        self.core.push_event(Event::SessionClosed {
            session: handle,
            reason,
        });
        true
    }

    /// The client's mode and choice of paths for its replies.
    fn on_announce(&mut self, header: &Header, payload: &[u8]) {
        let Ok(an) = Announce::parse(payload) else {
            self.core.counters.malformed += 1;
            return;
        };
        if let Some(c) = self.clients.get_mut(&header.epoch) {
            c.announce(header.seq, an);
        }
    }

    fn on_probe(&mut self, from: SocketAddr, header: &Header, payload: &[u8]) {
        let Some(probe) = self.core.parse_probe(header, payload) else {
            return;
        };
        if let Some(c) = self.clients.get_mut(&header.epoch) {
            c.figures(header.path, probe.figures);
        }
        let Some(counts) = self.bridges.peer_probe(&from, header.epoch) else {
            return;
        };
        let (h, ack) = self.core.probe_ack(header, probe, counts);
        self.send_to_one(from, header.path, &h, &ack);
    }

    fn on_close(&mut self, now: Instant, header: &Header) {
        let Some(client) = self.clients.get_mut(&header.epoch) else {
            // Copies of a CLOSE for a client already gone: nothing to do.
            return;
        };
        if let Err(r) = client.window.accept(header.seq) {
            return self
                .core
                .counters
                .count_reject(super::peer::PeerReject::Window(r));
        }
        client.last_active = now;
        let Some(&handle) = self.by_key.get(&(header.epoch, header.session)) else {
            return;
        };
        self.core.counters.close_received += 1;
        self.core.counters.sessions_closed += 1;
        self.remove_session(handle, CloseReason::PeerClosed);
        debug!("client closed session {:016x}", header.session);
    }

    /// A datagram from the target, for the session with handle `handle`.
    pub fn handle_target(&mut self, now: Instant, handle: u64, payload: &[u8]) {
        if !self.core.accept_local(payload.len()) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&handle) else {
            self.core.counters.unknown_session += 1;
            return;
        };
        s.session.last_active = now;
        let (id, epoch) = (s.session.id, s.epoch);
        let seq = self.core.next_seq(now);
        let header = self.core.header(PacketType::Data, id, seq);
        self.send_to_client(now, epoch, &header, payload);
    }

    /// Sends a packet to every live path of client `epoch`: sealed once, one copy per
    /// address with that path's index.
    fn send_to_client(&mut self, now: Instant, epoch: u64, header: &Header, payload: &[u8]) {
        let fresh = self.path_fresh();
        let template = self.core.prepare(header, payload);
        // Each copy adds its trailer (a checksum or a path MAC) to the template.
        let len = (template.len() + super::packet::PATH_MAC_LEN) as u64;
        let Some(client) = self.clients.get_mut(&epoch) else {
            return self.core.discard(template);
        };
        let (to, over_budget) = client.destinations(&self.bridges, now, fresh, len);
        self.core.counters.amplification_drops += over_budget;
        for (path, addr) in to {
            let copy = self.core.copy(&template, path);
            self.bridges.on_send(&addr, copy.len() as u64);
            if header.ptype == PacketType::Data {
                self.bridges.on_data_sent(&addr, epoch);
            }
            self.core.queue(ServerDest::Bridge(addr), copy);
        }
        self.core.discard(template);
    }

    /// The driver could not open a target socket for a session: drop the session.
    pub fn drop_session(&mut self, handle: u64) {
        if self.remove_session(handle, CloseReason::NoResources) {
            self.core.counters.sessions_closed += 1;
        }
    }

    /// Timers: validation retries, challenges, idle sessions and clients, forgotten
    /// addresses and tombstones.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.core.timers.take_all_expired(now) {
            match t {
                Timer::Validation => self.retry_validations(now),
                Timer::Schedule => {}
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

    /// Expires idle sessions, then idle client epochs with no session left (leaving a
    /// tombstone with a key), silent addresses and old tombstones; then sleeps until the
    /// next one could go.
    fn sweep(&mut self, now: Instant) {
        let idle = self.core.params.idle_timeout;
        let sessions = self.sessions.iter().map(|(h, s)| (h, &s.session));
        let (expired, next_session) = idle_sessions(sessions, now, idle);
        for handle in expired {
            self.remove_session(handle, CloseReason::Expired);
            self.core.counters.sessions_expired += 1;
            debug!("session {handle:016x} expired");
        }
        let sealed = self.core.codec.sealed();
        let mut next_client: Option<Instant> = None;
        let mut dropped = Vec::new();
        for (&epoch, c) in &self.clients {
            if c.sessions == 0 && now.saturating_duration_since(c.last_active) >= idle {
                let highest = (
                    c.window.highest().unwrap_or(0),
                    c.control.highest().unwrap_or(0),
                );
                dropped.push((epoch, highest, c.last_active));
            } else {
                let at = c.last_active + idle;
                next_client = Some(next_client.map_or(at, |t| t.min(at)));
            }
        }
        for (epoch, highest, last) in dropped {
            self.clients.remove(&epoch);
            if sealed {
                self.tombstones.bury(epoch, highest, last, now);
            }
        }
        let next_tomb = self.tombstones.expire(now, idle + TOMBSTONE_MARGIN);
        let forget = PATH_FORGET.max(idle);
        let next_path = self.bridges.forget_silent(now, forget);
        let bridges = &self.bridges;
        self.last_challenge
            .retain(|a, t| bridges.get(a).is_some() && now.saturating_duration_since(*t) < forget);
        let next = [next_path, next_session, next_client, next_tomb]
            .into_iter()
            .flatten()
            .min();
        if let Some(next) = next {
            self.core
                .timers
                .set(Timer::Sweep, next.max(now + SWEEP_MIN));
        }
    }

    /// Resends unanswered challenges to every address the pending packets came from; gives
    /// up (dropping the held packets) after about a second.
    fn retry_challenges(&mut self, now: Instant) {
        let age = self.tombstones.age_us(now, self.core.start);
        let mut due: Vec<(Origin, Challenge)> = Vec::new();
        let mut dropped = 0u64;
        let mut next: Option<Instant> = None;
        self.pending.retain(|_, p| match p.poll_retry(now) {
            Retry::GiveUp => {
                dropped += p.held.len() as u64;
                false
            }
            r => {
                if r == Retry::Resend {
                    let session = p.held.first().map_or(0, |(_, _, o)| o.session);
                    let ch = p.challenge(session, age);
                    due.extend(p.origins.iter().map(|o| (*o, ch)));
                }
                next = Some(next.map_or(p.next_try, |t| t.min(p.next_try)));
                true
            }
        });
        if let Some(t) = next {
            self.core.timers.set(Timer::Challenge, t);
        }
        self.core.counters.held_dropped += dropped;
        for (o, ch) in due {
            self.send_challenge(now, o.from, o.path, ch);
        }
    }

    /// Clean shutdown: CLOSE every session so clients reset their view of us at once.
    pub fn close(&mut self, now: Instant) {
        let handles: Vec<u64> = self.sessions.keys().copied().collect();
        for handle in handles {
            let Some(s) = self.sessions.get(&handle) else {
                continue;
            };
            let (id, epoch) = (s.session.id, s.epoch);
            let seq = self.core.next_seq(now);
            let h = self.core.header(PacketType::Close, id, seq);
            self.send_to_client(now, epoch, &h, &[]);
            self.remove_session(handle, CloseReason::Shutdown);
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
        let fresh = self.path_fresh();
        let paths = self.bridges.stats(now, fresh);
        let mut s = self
            .core
            .stats(now, "server", "-", self.sessions.len(), paths);
        let mut clients: Vec<_> = self
            .clients
            .iter()
            .map(|(epoch, c)| ClientStats {
                epoch: format!("{epoch:016x}"),
                mode: c.mode().name(),
                sessions: c.sessions,
                last_rx_ms: now.saturating_duration_since(c.last_active).as_millis() as u64,
                paths: c.path_stats(&self.bridges, now, fresh),
            })
            .collect();
        clients.sort_by(|a, b| a.epoch.cmp(&b.epoch));
        s.clients = clients;
        s
    }
}

/// A pending epoch's origins are challenged once each: by address and path.
fn origin_key(o: Origin) -> Origin {
    Origin { session: 0, ..o }
}

super::endpoint::endpoint_of!(Server, ServerDest);
