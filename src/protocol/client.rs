//! The client endpoint: one session per local application address, every datagram sent on
//! the paths the scheduler picks, replies deduplicated and handed back to the right app.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::crypto::Codec;
use super::fresh::{Pending, SendHistory, CHALLENGE_RETRY, CHALLENGE_TRIES};
use super::packet::{
    Challenge, DecodeError, Header, PacketType, Probe, ProbeAck, Response, CONTROL_SESSION,
};
use super::params::Params;
use super::path::{ClientPath, PathState};
use super::peer::{EpochSlot, PeerReject, PeerWindows};
use super::rng::Rng;
use super::scheduler::{Mode, Scheduler};
use super::stats::{Counters, Stats};
use super::transmit::{BufPool, Dest, PathMask, Transmit, MAX_PATHS};
use super::RateLimit;

const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Session {
    id: u64,
    next_seq: u64,
    last_active: Instant,
    peer: PeerWindows,
    history: SendHistory,
    /// Keyed mode: a new server epoch waiting for its challenge to be answered.
    pending: Option<Pending>,
}

/// The client side of the tunnel, sans IO.
#[derive(Debug)]
pub struct Client {
    params: Params,
    codec: Codec,
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
    scratch: Vec<u8>,
    counters: Counters,
    next_sweep: Instant,
    /// Sessions with a pending challenge (few; checked on every timeout).
    pending: Vec<SocketAddr>,
    last_cap_warn: RateLimit,
    last_auth_warn: RateLimit,
}

/// Description of one path for [`Client::new`].
#[derive(Clone, Debug)]
pub struct PathSpec {
    /// Name for logs and stats.
    pub name: String,
    /// Remote address as text, for stats.
    pub remote: String,
}

/// Where held packets "came from" on the client: the path index, for logs only.
fn path_tag(path: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, path as u16))
}

/// Logs a path's change of state as one line with stable keys, for operators' greps and
/// scripts (documented in docs/STATS.md, "Path events"):
/// `event=path_down path=NAME remote=ADDR was=up reason=silent silent_ms=1000`.
/// Down is a warning; up and lossy are info.
fn log_path_change(p: &ClientPath, old: PathState, reason: &str) {
    let new = p.state();
    let mut line = format!(
        "event=path_{} path={} remote={} was={} reason={reason}",
        new.name(),
        p.name(),
        p.remote(),
        old.name()
    );
    let (out, inn) = p.loss();
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}", x * 100.0));
    match new {
        PathState::Down => line.push_str(&format!(" silent_ms={}", p.silent_ms())),
        PathState::Up | PathState::Lossy => line.push_str(&format!(
            " loss_out_pct={} loss_in_pct={}",
            pct(out),
            pct(inn)
        )),
    }
    if new == PathState::Down {
        warn!("{line}");
    } else {
        info!("{line}");
    }
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
        let codec = Codec::new(params.key.as_ref());
        Client {
            params,
            codec,
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
            scratch: Vec::with_capacity(2048),
            counters: Counters::default(),
            next_sweep: now + SWEEP_INTERVAL,
            pending: Vec::new(),
            last_cap_warn: RateLimit::default(),
            last_auth_warn: RateLimit::default(),
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
        let max = self.codec.max_payload();
        if payload.len() > max {
            self.counters.oversized += 1;
            debug!(
                "dropped a {}-byte datagram from {from}: larger than {max}",
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
        session.history.on_send(now, session.next_seq);
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
            if self.last_cap_warn.ready(now, WARN_EVERY) {
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
                history: SendHistory::default(),
                pending: None,
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
        // Encoded (and sealed) once; the same bytes go on every path.
        self.codec.encode(&mut buf, header, payload);
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

    /// A datagram that arrived on path `path`.
    pub fn handle_datagram(&mut self, now: Instant, path: usize, bytes: &[u8]) {
        self.counters.net_rx_packets += 1;
        self.counters.net_rx_bytes += bytes.len() as u64;
        if path >= self.paths.len() {
            // Not a path of ours (a caller's mistake): dropped, and counted like any bad packet.
            self.counters.malformed += 1;
            return;
        }
        let header = match self.codec.parse(bytes) {
            Ok(h) => h,
            Err(e) => return self.count_decode_error(now, path, e),
        };
        // Duplicates are refused before paying for verification.
        if header.ptype == PacketType::Data && !self.precheck_data(&header) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        match self.codec.open(bytes, &mut scratch) {
            Ok(payload) => {
                if let Some(old) = self.paths[path].on_receive(now, bytes.len(), &self.params) {
                    log_path_change(&self.paths[path], old, "heard");
                }
                if header.session == CONTROL_SESSION {
                    if let Err(r) = self.paths[path].accept_control(header.epoch, header.seq) {
                        self.count_reject(r);
                        self.scratch = scratch;
                        return;
                    }
                }
                match header.ptype {
                    PacketType::Data => self.on_data(now, path, &header, payload),
                    PacketType::Probe => self.on_probe(path, &header, payload),
                    PacketType::ProbeAck => self.on_probe_ack(now, path, &header, payload),
                    PacketType::Close => self.on_close(&header),
                    PacketType::Challenge => self.on_challenge(now, path, &header, payload),
                    PacketType::Response => self.on_response(&header, payload),
                    PacketType::TargetRequest | PacketType::TargetDeny => {
                        self.counters.malformed += 1
                    }
                }
            }
            Err(e) => self.count_decode_error(now, path, e),
        }
        self.scratch = scratch;
    }

    fn count_decode_error(&mut self, now: Instant, path: usize, e: DecodeError) {
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
                        "packets on path {} fail authentication: {why} ({} so far; next report in 10 s)",
                        self.paths.get(path).map_or("?", |p| p.name()),
                        self.counters.auth_failures
                    );
                }
            }
            _ => self.counters.malformed += 1,
        }
    }

    fn count_reject(&mut self, r: PeerReject) {
        self.counters.count_reject(r);
    }

    /// Window (and hold queue) check for DATA before verification; false = dropped.
    fn precheck_data(&mut self, header: &Header) -> bool {
        let Some(session) = self
            .by_id
            .get(&header.session)
            .and_then(|a| self.sessions.get(a))
        else {
            self.counters.unknown_session += 1;
            return false;
        };
        match session.peer.check(header.epoch, header.seq) {
            Err(r) => {
                self.count_reject(r);
                false
            }
            Ok(_) => match &session.pending {
                Some(p) if p.epoch == header.epoch && p.holds(header.seq) => {
                    self.counters.duplicates += 1;
                    false
                }
                _ => true,
            },
        }
    }

    fn deliver(&mut self, app: SocketAddr, payload: &[u8]) {
        let mut buf = self.pool.get();
        buf.extend_from_slice(payload);
        self.counters.local_tx_datagrams += 1;
        self.counters.local_tx_bytes += payload.len() as u64;
        self.out.push_back(Transmit {
            dest: Dest::Local(app),
            data: buf,
        });
    }

    fn on_data(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Some(&app) = self.by_id.get(&header.session) else {
            return;
        };
        let sealed = self.codec.sealed();
        let Some(session) = self.sessions.get_mut(&app) else {
            return;
        };
        let slot = match session.peer.check(header.epoch, header.seq) {
            Ok(s) => s,
            Err(r) => return self.count_reject(r),
        };
        // The first server epoch of a session needs no challenge: the session id is new, so
        // no packet for it can predate this session. Any later epoch must prove itself.
        let known_before = session.peer.current_epoch().is_some() || session.peer.has_previous();
        if slot == EpochSlot::New && sealed && known_before {
            // A new server epoch: admit it only once the server proves it holds the key now.
            match &mut session.pending {
                Some(p) if p.epoch != header.epoch => {
                    self.counters.stale_epoch += 1;
                }
                Some(p) => {
                    if !p.hold(header.seq, payload, path_tag(path)) {
                        self.counters.held_dropped += 1;
                    }
                }
                None => {
                    let nonce = self.rng.next_u128();
                    let mut p = Pending::new(header.epoch, nonce, now);
                    p.hold(header.seq, payload, path_tag(path));
                    session.pending = Some(p);
                    self.pending.push(app);
                    let ch = Challenge {
                        session: header.session,
                        epoch: header.epoch,
                        nonce,
                        uptime_us: now.saturating_duration_since(self.start).as_micros() as u64,
                    };
                    // On every path: one lost challenge would stall the session.
                    let mask = self.scheduler.select(self.paths.iter().map(|p| p.state()));
                    self.send_challenge(mask | (1 << path), ch);
                }
            }
            return;
        }
        session.peer.commit(slot, header.epoch, header.seq);
        if slot == EpochSlot::New && session.peer.has_previous() {
            self.counters.peer_restarts += 1;
        }
        session.last_active = now;
        self.deliver(app, payload);
    }

    fn send_challenge(&mut self, mask: PathMask, ch: Challenge) {
        let h = self.control_header(PacketType::Challenge);
        self.counters.challenges_sent += 1;
        self.send_on(mask, &h, &ch.to_bytes());
    }

    fn on_challenge(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Ok(ch) = Challenge::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        if header.session != CONTROL_SESSION || ch.epoch != self.epoch {
            // Not about us as we are now (an old challenge, or for another instance).
            return;
        }
        let fresh_from = match self
            .by_id
            .get(&ch.session)
            .and_then(|a| self.sessions.get(a))
        {
            Some(s) => {
                // What we sent before the challenger started may have reached its previous
                // instance: only later packets are fresh to it.
                // The challenge took about half a round trip to come, and a packet needs about
                // as long to arrive: subtract the fastest path's RTT (0 while unmeasured).
                let rtt = self
                    .paths
                    .iter()
                    .filter_map(|p| p.srtt())
                    .min()
                    .unwrap_or_default();
                let back = Duration::from_micros(ch.uptime_us) + rtt;
                let since = now.checked_sub(back).unwrap_or(self.start);
                s.history.first_sent_since(since, s.next_seq)
            }
            // We sent nothing in this session under this epoch: nothing of it is fresh.
            None => u64::MAX,
        };
        let h = self.control_header(PacketType::Response);
        self.send_on(
            1 << path,
            &h,
            &Response {
                challenge: ch,
                fresh_from,
            }
            .to_bytes(),
        );
    }

    fn on_response(&mut self, header: &Header, payload: &[u8]) {
        let Ok(r) = Response::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let Some(&app) = self.by_id.get(&r.challenge.session) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&app) else {
            return;
        };
        let matches = session.pending.as_ref().is_some_and(|p| {
            p.nonce == r.challenge.nonce && p.epoch == r.challenge.epoch && header.epoch == p.epoch
        });
        if !matches {
            return;
        }
        let Some(p) = session.pending.take() else {
            return;
        };
        self.pending.retain(|a| *a != app);
        self.counters.challenges_answered += 1;
        let restarted = session.peer.current_epoch().is_some() || session.peer.has_previous();
        session.peer.admit_epoch(p.epoch, r.fresh_from);
        if restarted {
            self.counters.peer_restarts += 1;
        }
        let mut released = Vec::new();
        for (seq, data, _) in p.held {
            match session.peer.accept(p.epoch, seq) {
                Ok(_) => released.push(data),
                Err(_) => self.counters.stale_epoch += 1,
            }
        }
        for data in released {
            self.deliver(app, &data);
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
        let h = self.control_header(PacketType::ProbeAck);
        self.send_on(1 << path, &h, &ack.to_bytes());
    }

    fn on_probe_ack(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Ok(ack) = ProbeAck::parse(payload) else {
            self.counters.malformed += 1;
            return;
        };
        let p = &mut self.paths[path];
        if let Some(old) = p.on_ack(now, &ack, header.epoch, &self.params) {
            log_path_change(p, old, "loss");
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
        // Only the current epoch may close: a CLOSE never admits an epoch.
        if session.peer.current_epoch() != Some(header.epoch) {
            self.counters.stale_epoch += 1;
            return;
        }
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

    /// Timers: probes, path health, challenges, idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.paths.len() {
            if let Some(old) = self.paths[i].check_down(now, &self.params) {
                let p = &self.paths[i];
                let reason = if p.ever_heard() {
                    "silent"
                } else {
                    // Nothing ever came back: most likely the bridge or the server is not
                    // running, or the address is wrong.
                    "never_heard"
                };
                log_path_change(p, old, reason);
            }
            if let Some(token) = self.paths[i].poll_probe(now, &self.params) {
                let h = self.control_header(PacketType::Probe);
                self.send_on(1 << i, &h, &Probe { token }.to_bytes());
            }
        }
        self.retry_challenges(now);
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

    fn retry_challenges(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let app = self.pending[i];
            let Some(session) = self.sessions.get_mut(&app) else {
                self.pending.swap_remove(i);
                continue;
            };
            let Some(p) = &mut session.pending else {
                self.pending.swap_remove(i);
                continue;
            };
            if now < p.next_try {
                i += 1;
                continue;
            }
            if p.tries >= CHALLENGE_TRIES {
                debug!(
                    "session {:016x}: server epoch {:016x} never answered",
                    session.id, p.epoch
                );
                self.counters.held_dropped += p.held.len() as u64;
                session.pending = None;
                self.pending.swap_remove(i);
                continue;
            }
            p.tries += 1;
            p.next_try = now + CHALLENGE_RETRY;
            let ch = Challenge {
                session: session.id,
                epoch: p.epoch,
                nonce: p.nonce,
                uptime_us: now.saturating_duration_since(self.start).as_micros() as u64,
            };
            let mask = self.scheduler.select(self.paths.iter().map(|p| p.state()));
            self.send_challenge(mask, ch);
            i += 1;
        }
    }

    fn remove_session(&mut self, app: SocketAddr) {
        if let Some(s) = self.sessions.remove(&app) {
            self.by_id.remove(&s.id);
            self.pending.retain(|a| *a != app);
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
        for app in &self.pending {
            if let Some(p) = self.sessions.get(app).and_then(|s| s.pending.as_ref()) {
                t = t.min(p.next_try);
            }
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
            encrypted: self.codec.sealed(),
            sessions: self.sessions.len(),
            totals: self.counters.clone(),
            paths: self.paths.iter().map(|p| p.stats(now)).collect(),
        }
    }
}
