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
use super::packet::{
    Announce, Challenge, Header, PacketType, Probe, ProbeAck, Response, Sender, ANNOUNCE_MAX,
};
use super::params::Params;
use super::path::{ClientPath, PathState};
use super::peer::{Admit, Peer, Refusal};
use super::scheduler::{self, Mode, PathView, Plan, Scheduler};
use super::secure_rng::Seed;
use super::session::{idle_sessions, Session};
use super::stats::Stats;
use super::timer::Timer;
use super::transmit::{ClientDest, PathMask, MAX_PATHS};

/// Idle sessions are looked for at most this often.
const SWEEP_MIN: Duration = Duration::from_secs(1);
/// A plan is made again at least this often while data flows.
const PLAN_EVERY: Duration = Duration::from_millis(1);
/// Balance shares are measured again this often.
const SHARES_EVERY: Duration = Duration::from_millis(250);
/// The announcement is repeated this often (it may be lost), and sent at most this often.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
const ANNOUNCE_MIN: Duration = Duration::from_millis(5);
/// Data from the server this recent means a two-way flow runs (for doubt).
const TWO_WAY: Duration = Duration::from_secs(1);

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
    /// The current plan and when it was made.
    plan: Plan,
    plan_at: Option<Instant>,
    /// Balance shares for the server's direction, and when they were measured.
    down_shares: Vec<f64>,
    shares_at: Option<Instant>,
    /// Paths in doubt when the shares were last made (a change makes them again at once).
    shares_doubt: PathMask,
    /// The announcement last sent, and when.
    announced: Option<(Announce, Instant)>,
    /// The server epoch whose DATA was last delivered: a new one (the server just admitted
    /// this client, or restarted) may have missed the announcement.
    announced_to: Option<u64>,
    /// Announce again as soon as the 5 ms spacing allows.
    reannounce: bool,
    /// The last DATA from the server (a two-way flow runs).
    last_peer_data: Option<Instant>,
}

/// Description of one path for [`Client::new`].
#[derive(Clone, Debug)]
pub struct PathSpec {
    /// Name for logs and stats.
    pub name: String,
    /// Remote address as text, for stats.
    pub remote: String,
    /// A backup path: data only while every other path is down.
    pub backup: bool,
    /// Weight in `balance` (at least 1).
    pub weight: u32,
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
            .map(|p| {
                let mut path = ClientPath::new(p.name, p.remote, now);
                path.set_options(p.backup, p.weight);
                path
            })
            .collect();
        let window = params.window_size;
        Client {
            core: Core::new(params, Sender::Client, seed, now),
            paths,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            server: Peer::new(window),
            scheduler: Scheduler::new(mode),
            plan: Plan::default(),
            plan_at: None,
            down_shares: Vec::new(),
            shares_at: None,
            shares_doubt: 0,
            announced: None,
            announced_to: None,
            reannounce: false,
            last_peer_data: None,
        }
    }

    /// The scheduling mode.
    pub fn mode(&self) -> Mode {
        self.scheduler.mode()
    }

    /// Switches the scheduling mode on the running tunnel; the server hears of it at once.
    pub fn set_mode(&mut self, now: Instant, mode: Mode) {
        if mode != self.scheduler.mode() {
            log::info!(
                "event=mode mode={} was={}",
                mode.name(),
                self.scheduler.mode().name()
            );
            self.scheduler.set_mode(mode);
            self.replan(now);
        }
    }

    /// Sets path `i`'s options (a reloaded config).
    pub fn set_path_options(&mut self, i: usize, name: String, backup: bool, weight: u32) {
        if let Some(p) = self.paths.get_mut(i) {
            p.set_name(name);
            p.set_options(backup, weight);
            self.plan_at = None;
        }
    }

    /// Adds a path (a reloaded config): at the end, or in the slot of a removed one once
    /// [`MAX_PATHS`] are taken; returns its index, or None when all are live.
    pub fn add_path(&mut self, now: Instant, spec: PathSpec) -> Option<usize> {
        let mut path = ClientPath::new(spec.name, spec.remote, now);
        path.set_options(spec.backup, spec.weight);
        self.plan_at = None;
        if self.paths.len() < MAX_PATHS {
            self.paths.push(path);
            return Some(self.paths.len() - 1);
        }
        let i = self.paths.iter().position(ClientPath::is_retired)?;
        self.paths[i] = path;
        Some(i)
    }

    /// Removes path `i` (a reloaded config). Its index is not reused while others are free.
    pub fn remove_path(&mut self, i: usize) {
        if let Some(p) = self.paths.get_mut(i) {
            p.retire();
            self.plan_at = None;
        }
    }

    /// Takes new protocol knobs (a reloaded config); the key and the window size stay.
    pub fn set_params(&mut self, mut params: Params) {
        params.key = self.core.params.key.clone();
        params.window_size = self.core.params.window_size;
        self.core.params = params;
    }

    /// The active path in failover, once chosen.
    pub fn active_path(&self) -> Option<usize> {
        self.scheduler.active()
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
        self.send_on_scheduled(now, &header, payload);
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

    fn two_way(&self, now: Instant) -> bool {
        self.last_peer_data
            .is_some_and(|t| now.saturating_duration_since(t) < TWO_WAY)
    }

    fn views(&self, now: Instant, down: bool) -> Vec<PathView> {
        let two_way = self.two_way(now);
        self.paths
            .iter()
            .map(|p| {
                let (o, i) = p.loss();
                let (cap_out, cap_in) = p.capacity();
                PathView {
                    state: p.state(),
                    backup: p.is_backup(),
                    weight: p.weight(),
                    rtt_ms: p.srtt().map(|d| d.as_secs_f64() * 1000.0),
                    loss: match (o, i) {
                        (None, None) => None,
                        (a, b) => Some(a.unwrap_or(0.0).max(b.unwrap_or(0.0))),
                    },
                    in_doubt: p.in_doubt(now, two_way),
                    capacity: if down { cap_in } else { cap_out },
                    gone: p.is_retired(),
                }
            })
            .collect()
    }

    /// Makes the plan again from the paths' figures; tells the server when it changed.
    fn replan(&mut self, now: Instant) {
        let views = self.views(now, false);
        if self.scheduler.mode() != Mode::Redundant {
            // A path in doubt is asked at once: one RTT clears a false doubt (a gap in
            // the replies), rather than the next regular probe.
            for (p, v) in self.paths.iter_mut().zip(&views) {
                if v.in_doubt {
                    p.probe_soon(now);
                }
            }
        }
        self.plan = self.scheduler.plan(now, &views);
        self.plan_at = Some(now);
        if let Some(sw) = self.scheduler.take_switch() {
            let name = |i: usize| self.paths.get(i).map_or("-", |p| p.name());
            log::info!(
                "event=active path={} was={} reason={}",
                name(sw.to),
                sw.from.map_or("-", name),
                sw.reason
            );
        }
        let carrying = self.plan.mask;
        for (i, p) in self.paths.iter_mut().enumerate() {
            p.set_carrying(carrying & (1 << i) != 0);
        }
        if self.scheduler.mode() == Mode::Balance {
            let doubt = views
                .iter()
                .enumerate()
                .take(64)
                .filter(|(_, v)| v.in_doubt)
                .fold(0, |m, (i, _)| m | 1 << i);
            if doubt != self.shares_doubt
                || self
                    .shares_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= SHARES_EVERY)
            {
                let down = self.views(now, true);
                self.down_shares = scheduler::balance_shares(&down, self.plan.mask);
                self.shares_at = Some(now);
                self.shares_doubt = doubt;
            }
        }
        self.maybe_announce(now);
    }

    /// What the server should do with this client's replies now.
    fn announcement(&self) -> Announce {
        let mode = self.scheduler.mode();
        let (m, k) = mode.wire();
        let mut an = Announce {
            mode: m,
            k,
            mask: if mode == Mode::Redundant {
                0
            } else {
                self.plan.mask
            },
            ..Announce::default()
        };
        if mode == Mode::Balance {
            scheduler::shares_to_weights(&self.down_shares, &mut an);
        }
        an
    }

    /// DATA of server epoch `epoch` arrived: the first of an epoch means that server holds
    /// this client now, and an announcement sent before it did was dropped there (the server
    /// keeps announcements per client epoch it holds). Announce again at once rather than at
    /// the next repeat.
    /// Only the current server epoch counts, once: copies of an older epoch held back and
    /// released by a bridge change nothing.
    fn heard_from_server(&mut self, now: Instant, epoch: u64) {
        if self.announced_to == Some(epoch) || self.server.windows.current_epoch() != Some(epoch) {
            return;
        }
        self.announced_to = Some(epoch);
        if self.scheduler.mode() != Mode::Redundant {
            self.reannounce = true;
            self.core.timers.set_earliest(Timer::Schedule, now);
        }
    }

    /// Sends the announcement on every path that is not down when it changed (at most
    /// every 5 ms) or once a second.
    fn maybe_announce(&mut self, now: Instant) {
        let an = self.announcement();
        let due = match &self.announced {
            None => true,
            Some((last, at)) => {
                let age = now.saturating_duration_since(*at);
                ((*last != an || self.reannounce) && age >= ANNOUNCE_MIN) || age >= ANNOUNCE_EVERY
            }
        };
        if !due {
            if self.reannounce || self.announced.as_ref().is_some_and(|(last, _)| *last != an) {
                self.core
                    .timers
                    .set_earliest(Timer::Schedule, now + ANNOUNCE_MIN);
            }
            return;
        }
        self.announced = Some((an, now));
        self.reannounce = false;
        let mut buf = [0u8; ANNOUNCE_MAX];
        let n = an.write(&mut buf);
        let h = self.core.control_header(PacketType::Announce);
        let alive = self
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state() != PathState::Down)
            .fold(0, |m, (i, _)| m | 1 << i);
        let mask = if alive == 0 {
            self.plan.mask
        } else {
            alive | self.plan.mask
        };
        self.send_on(now, mask, &h, &buf[..n], false);
    }

    /// The paths for the next datagram.
    fn scheduled(&mut self, now: Instant) -> PathMask {
        if self
            .plan_at
            .is_none_or(|t| now.saturating_duration_since(t) >= PLAN_EVERY)
        {
            self.replan(now);
        }
        if self.scheduler.mode() == Mode::Balance {
            let one = self.scheduler.pick(&self.plan);
            if one != 0 {
                return one;
            }
        }
        self.plan.mask
    }

    fn send_on_scheduled(&mut self, now: Instant, header: &Header, payload: &[u8]) {
        let mask = self.scheduled(now);
        self.send_on(now, mask, header, payload, header.ptype == PacketType::Data);
    }

    /// Sends one copy on each path of `mask`: sealed once, each copy with its path index.
    fn send_on(
        &mut self,
        now: Instant,
        mask: PathMask,
        header: &Header,
        payload: &[u8],
        data: bool,
    ) {
        if mask == 0 {
            return;
        }
        let template = self.core.prepare(header, payload);
        for i in 0..self.paths.len() {
            if mask & (1 << i) != 0 {
                let copy = self.core.copy(&template, i as u8);
                if data {
                    self.paths[i].on_send_data(now, copy.len());
                } else {
                    self.paths[i].on_send(copy.len());
                }
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
            self.plan_at = None;
        }
        if header.session == super::packet::CONTROL_SESSION {
            if let Err(r) = self.paths[path].accept_control(header.epoch, header.seq) {
                self.core.counters.count_reject(r);
                return;
            }
        }
        match header.ptype {
            PacketType::Data => self.on_data(now, path, header, payload),
            PacketType::Probe => self.on_probe(now, path, header, payload),
            PacketType::ProbeAck => self.on_probe_ack(now, path, header, payload),
            PacketType::Close => self.on_close(header),
            PacketType::Challenge => self.on_challenge(now, path, header, payload),
            PacketType::Response => self.on_response(now, header, payload),
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
                self.last_peer_data = Some(now);
                self.heard_from_server(now, header.epoch);
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
                let mask = self.scheduled(now) | (1 << path);
                self.send_challenge(now, mask, ch);
            }
            Admit::Drop(r) => self.core.count_refusal(r),
        }
    }

    fn send_challenge(&mut self, now: Instant, mask: PathMask, ch: Challenge) {
        let (h, p) = self.core.challenge_packet(&ch);
        self.send_on(now, mask, &h, &p, false);
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
        self.send_on(now, 1 << path, &h, &p, false);
    }

    fn on_response(&mut self, now: Instant, header: &Header, payload: &[u8]) {
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
        self.heard_from_server(now, epoch);
        self.core.counters.stale_epoch += released.refused;
        for (data, session) in released.deliver {
            match self.by_id.get(&session) {
                Some(&app) => self.core.deliver(ClientDest::App(app), &data),
                None => self.core.counters.unknown_session += 1,
            }
        }
    }

    fn on_probe(&mut self, now: Instant, path: usize, header: &Header, payload: &[u8]) {
        let Some(probe) = self.core.parse_probe(header, payload) else {
            return;
        };
        let counts = self.paths[path].on_peer_probe(header.epoch);
        let (h, ack) = self.core.probe_ack(header, probe, counts);
        self.send_on(now, 1 << path, &h, &ack, false);
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
            self.plan_at = None;
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
                self.plan_at = None;
            }
            if let Some(token) = self.paths[i].poll_probe(now, &self.core.params) {
                let h = self.core.control_header(PacketType::Probe);
                let figures = self.paths[i].figures();
                self.send_on(now, 1 << i, &h, &Probe { token, figures }.to_bytes(), false);
            }
        }
        for t in self.core.timers.take_all_expired(now) {
            match t {
                Timer::Challenge => self.retry_challenge(now),
                Timer::Sweep => self.sweep(now),
                Timer::Validation | Timer::Schedule => {}
            }
        }
        // Paths may have changed, or fallen in doubt: plan again, announce if it changed.
        self.replan(now);
        if self.scheduler.mode() != Mode::Redundant {
            let two_way = self.two_way(now);
            if let Some(t) = self
                .plan_mask_paths()
                .filter_map(|i| self.paths[i].doubt_deadline(two_way))
                .filter(|&t| t > now)
                .min()
            {
                self.core.timers.set_earliest(Timer::Schedule, t);
            }
        }
        if let Some((_, at)) = self.announced {
            self.core
                .timers
                .set_earliest(Timer::Schedule, at + ANNOUNCE_EVERY);
        }
    }

    fn plan_mask_paths(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.paths.len()).filter(|&i| self.plan.mask & (1 << i) != 0)
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
                let mask = self.scheduled(now);
                self.send_challenge(now, mask, ch);
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
            self.send_on_scheduled(now, &h, &[]);
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
            .filter_map(|p| p.next_deadline(&self.core.params))
            .min();
        [self.core.timers.next(), paths].into_iter().flatten().min()
    }

    /// A stats snapshot.
    pub fn stats(&self, now: Instant) -> Stats {
        let paths = self
            .paths
            .iter()
            .filter(|p| !p.is_retired())
            .map(|p| p.stats(now))
            .collect();
        let mode = self.scheduler.mode().name();
        self.core
            .stats(now, "client", &mode, self.sessions.len(), paths)
    }
}

super::endpoint::endpoint_of!(Client, ClientDest);
