//! What the server keeps per client epoch: one replay window for all of that client's
//! sessions, the address of each of its paths, and, for epochs it forgot, a tombstone; and
//! the epochs waiting for their challenge to be answered, bounded and shared fairly.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::bridges::Bridges;
use crate::protocol::fresh::Pending;
use crate::protocol::packet::{Announce, PathFigures, LOSS_UNKNOWN, MAX_PATH_INDEX};
use crate::protocol::path::CONTROL_WINDOW;
use crate::protocol::scheduler::{pick_weighted, Mode};
use crate::protocol::stats::ClientPathStats;
use crate::protocol::window::ReplayWindow;

/// The address of one of a client's paths, and the one before while the new one has not
/// answered its validation probe (so a NAT rebinding loses nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) addr: SocketAddr,
    pub(super) fallback: Option<SocketAddr>,
    /// What the client measured of this path (from its latest fresh probe).
    pub(super) figures: Option<PathFigures>,
}

/// One client epoch (one run of one mpclient).
#[derive(Debug)]
pub(super) struct ClientEpoch {
    /// Its DATA and CLOSE sequences: one counter for all its sessions.
    pub(super) window: ReplayWindow,
    /// Its control sequences (probes, challenges, responses).
    pub(super) control: ReplayWindow,
    /// Its paths, by the client's path index.
    slots: Vec<Option<Slot>>,
    /// Sessions of this epoch held now.
    pub(super) sessions: usize,
    /// Last time a packet of it was accepted.
    pub(super) last_active: Instant,
    /// The client's latest announcement (its control sequence, and what it said).
    announced: Option<(u64, Announce)>,
    /// Balance: round-robin credits per path.
    credit: Vec<f64>,
}

impl ClientEpoch {
    /// A client epoch whose DATA below `floor` and control packets below `control_floor`
    /// are refused.
    pub(super) fn new(window: usize, (floor, control_floor): (u64, u64), now: Instant) -> Self {
        let mut w = ReplayWindow::new(window);
        w.reset_to_floor(floor);
        let mut control = ReplayWindow::new(CONTROL_WINDOW);
        control.reset_to_floor(control_floor);
        ClientEpoch {
            window: w,
            control,
            slots: Vec::new(),
            sessions: 0,
            last_active: now,
            announced: None,
            credit: Vec::new(),
        }
    }

    /// The client announced its mode and paths (control sequence `seq`, fresh); an older
    /// announcement arriving late changes nothing.
    pub(super) fn announce(&mut self, seq: u64, an: Announce) {
        if self.announced.is_none_or(|(s, _)| seq > s) {
            self.announced = Some((seq, an));
        }
    }

    /// The client's mode, as it announced it (redundant until it does).
    pub(super) fn mode(&self) -> Mode {
        self.announced
            .map_or(Mode::Redundant, |(_, a)| Mode::from_wire(a.mode, a.k))
    }

    /// The client's figures for path `path`, from its probe.
    pub(super) fn figures(&mut self, path: u8, f: PathFigures) {
        if let Some(Some(s)) = self.slots.get_mut(usize::from(path)) {
            s.figures = Some(f);
        }
    }

    /// The client's paths as stats rows: index, address (and fallback), the client's figures.
    pub(super) fn path_stats(
        &self,
        bridges: &Bridges,
        now: Instant,
        fresh: Duration,
    ) -> Vec<ClientPathStats> {
        let mask = self.announced.map_or(0, |(_, a)| a.mask);
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
            .map(|(i, s)| {
                let heard = bridges
                    .get(&s.addr)
                    .map(|b| now.saturating_duration_since(b.last_rx));
                let f = s.figures.unwrap_or_default();
                let loss = |v: u16| {
                    (s.figures.is_some() && v != LOSS_UNKNOWN).then(|| f64::from(v) / 10_000.0)
                };
                let state = match (heard, f.state) {
                    (Some(h), _) if h > fresh => "down",
                    (None, _) => "down",
                    (_, 1) => "lossy",
                    (_, 2) => "down",
                    _ => "up",
                };
                ClientPathStats {
                    index: i,
                    remote: s.addr.to_string(),
                    fallback: s.fallback.map(|a| a.to_string()),
                    state: state.to_string(),
                    rtt_ms: (f.rtt_us > 0).then(|| f64::from(f.rtt_us) / 1000.0),
                    jitter_ms: (f.rtt_us > 0).then(|| f64::from(f.jitter_us) / 1000.0),
                    loss_out: loss(f.loss_out),
                    loss_in: loss(f.loss_in),
                    backup: f.flags & 1 != 0,
                    active: mask == 0 || mask & (1 << i) != 0,
                    last_rx_ms: heard.map(|h| h.as_millis() as u64),
                }
            })
            .collect()
    }

    /// Path `path` of this client was heard at `from`, by the first copy of a packet (or a
    /// fresh probe): that is its address from now on. A different address replaces the one
    /// before, which stays as a fallback until the new one answers its validation probe.
    /// Duplicates and replays never come here, so they change nothing.
    pub(super) fn learn(&mut self, path: u8, from: SocketAddr, bridges: &Bridges) {
        if path > MAX_PATH_INDEX {
            return;
        }
        let i = usize::from(path);
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let slot = &mut self.slots[i];
        match slot {
            Some(s) if s.addr == from => {}
            Some(s) => {
                // Keep the last address that answered as the fallback.
                let fallback = if bridges.is_validated(&s.addr) {
                    Some(s.addr)
                } else {
                    s.fallback
                }
                .filter(|f| *f != from);
                *slot = Some(Slot {
                    addr: from,
                    fallback,
                    figures: s.figures,
                });
            }
            None => {
                *slot = Some(Slot {
                    addr: from,
                    fallback: None,
                    figures: None,
                })
            }
        }
    }

    /// Where a reply goes: each path's address (path index, address) within its budget and
    /// heard from within `fresh`, and its fallback while the address has not answered yet.
    /// When no path looks alive, every address within budget rather than none.
    pub(super) fn destinations(
        &mut self,
        bridges: &Bridges,
        now: Instant,
        fresh: Duration,
        len: u64,
    ) -> (Vec<(u8, SocketAddr)>, u64) {
        let mut live = Vec::new();
        let mut any = Vec::new();
        let mut over_budget = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if s.fallback.is_some() && bridges.is_validated(&s.addr) {
                s.fallback = None;
            }
            for a in std::iter::once(s.addr).chain(s.fallback) {
                let Some(b) = bridges.get(&a) else { continue };
                if !bridges.within_budget(&a, len) {
                    over_budget += 1;
                    continue;
                }
                any.push((i as u8, a));
                if now.saturating_duration_since(b.last_rx) <= fresh {
                    live.push((i as u8, a));
                }
            }
        }
        let to = if live.is_empty() {
            any
        } else {
            self.scheduled(live)
        };
        (to, over_budget)
    }

    /// The live destinations narrowed as the client announced: its chosen paths (all of
    /// them when none of those is live), or in balance one path by the announced shares.
    fn scheduled(&mut self, live: Vec<(u8, SocketAddr)>) -> Vec<(u8, SocketAddr)> {
        let Some((_, an)) = self.announced else {
            return live;
        };
        let mode = Mode::from_wire(an.mode, an.k);
        if mode == Mode::Redundant {
            return live;
        }
        let chosen: Vec<_> = live
            .iter()
            .copied()
            .filter(|(p, _)| an.mask == 0 || an.mask & (1 << p) != 0)
            .collect();
        if chosen.is_empty() {
            return live;
        }
        if mode != Mode::Balance {
            return chosen;
        }
        let mut shares = vec![0.0; 64];
        for (p, _) in &chosen {
            let i = usize::from(*p);
            let w = if i < usize::from(an.weights_len) {
                an.weights[i]
            } else {
                0
            };
            // A path the client chose without a share still gets a little.
            shares[i] = f64::from(w.max(1));
        }
        let one = pick_weighted(&mut self.credit, &shares);
        let picked: Vec<_> = chosen
            .iter()
            .copied()
            .filter(|(p, _)| one & (1 << p) != 0)
            .collect();
        if picked.is_empty() {
            chosen
        } else {
            picked
        }
    }

    /// The client's paths, for tests and stats.
    #[cfg(test)]
    pub(super) fn slot(&self, path: u8) -> Option<Slot> {
        self.slots.get(usize::from(path)).copied().flatten()
    }
}

/// What the server remembers of client epochs it dropped (idle, no sessions left): the
/// highest DATA and control sequences it accepted, so that replays are refused and the live
/// client's next packets are admitted without a round trip. Each is kept `keep` after it was dropped;
/// then it goes, and `forgotten_before` remembers when the latest forgotten epoch was last
/// heard, which is how far back a challenge must reach.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// Epoch -> ((highest DATA sequence, highest control sequence), last heard, buried at).
    map: HashMap<u64, ((u64, u64), Instant, Instant)>,
    /// (epoch, buried at), oldest first.
    order: VecDeque<(u64, Instant)>,
    forgotten_before: Option<Instant>,
}

impl Tombstones {
    /// Epoch `epoch` is dropped now; it accepted up to `highest` (DATA, control), last at
    /// `last_active`.
    pub(super) fn bury(
        &mut self,
        epoch: u64,
        highest: (u64, u64),
        last_active: Instant,
        now: Instant,
    ) {
        self.map.insert(epoch, (highest, last_active, now));
        self.order.push_back((epoch, now));
    }

    /// The highest sequences (DATA, control) accepted from a dropped epoch.
    pub(super) fn highest(&self, epoch: u64) -> Option<(u64, u64)> {
        self.map.get(&epoch).map(|(h, _, _)| *h)
    }

    /// The epoch came back (its next packets were admitted): its tombstone goes.
    pub(super) fn raise(&mut self, epoch: u64) {
        self.map.remove(&epoch);
    }

    /// Forgets the tombstones older than `keep`; returns when the next one is due.
    pub(super) fn expire(&mut self, now: Instant, keep: Duration) -> Option<Instant> {
        while let Some(&(epoch, at)) = self.order.front() {
            if now.saturating_duration_since(at) < keep {
                return Some(at + keep);
            }
            self.order.pop_front();
            // A tombstone raised meanwhile (or buried again later) is not this one.
            if let Some(&(_, last, buried)) = self.map.get(&epoch) {
                if buried == at {
                    self.map.remove(&epoch);
                    self.forgotten_before =
                        Some(self.forgotten_before.map_or(last, |f| f.max(last)));
                }
            }
        }
        None
    }

    /// How far back, in µs, this server may have accepted packets of an epoch it knows
    /// nothing of: since the latest forgotten epoch was last heard, or since it started.
    pub(super) fn age_us(&self, now: Instant, start: Instant) -> u64 {
        let since = self.forgotten_before.map_or(start, |f| f.max(start));
        now.saturating_duration_since(since).as_micros() as u64
    }

    /// Tombstones held.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Where a held packet came from, to be admitted once its epoch answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub(super) from: SocketAddr,
    pub(super) path: u8,
    pub(super) session: u64,
}

/// Client epochs waiting for their challenge to be answered, with their packets held. At
/// most `max` in all and `per_source` per source IP address, so a source that floods it
/// (replaying recorded packets of many old epochs) takes its share only.
#[derive(Debug, Default)]
pub(super) struct PendingEpochs {
    map: HashMap<u64, (Pending<Origin>, IpAddr)>,
    per_source: HashMap<IpAddr, usize>,
}

/// Most epochs pending at once.
pub(super) const PENDING_MAX: usize = 1024;
/// Most epochs pending from one source IP address.
pub(super) const PENDING_PER_SOURCE: usize = 64;

impl PendingEpochs {
    pub(super) fn get_mut(&mut self, epoch: u64) -> Option<&mut Pending<Origin>> {
        self.map.get_mut(&epoch).map(|(p, _)| p)
    }

    pub(super) fn get(&self, epoch: u64) -> Option<&Pending<Origin>> {
        self.map.get(&epoch).map(|(p, _)| p)
    }

    /// Room for a new pending epoch from `source`.
    pub(super) fn has_room(&self, source: IpAddr) -> bool {
        self.map.len() < PENDING_MAX
            && self.per_source.get(&source).copied().unwrap_or(0) < PENDING_PER_SOURCE
    }

    pub(super) fn insert(&mut self, epoch: u64, p: Pending<Origin>, source: IpAddr) {
        *self.per_source.entry(source).or_default() += 1;
        if let Some((_, old)) = self.map.insert(epoch, (p, source)) {
            self.release_source(old);
        }
    }

    pub(super) fn remove(&mut self, epoch: u64) -> Option<Pending<Origin>> {
        let (p, source) = self.map.remove(&epoch)?;
        self.release_source(source);
        Some(p)
    }

    fn release_source(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Runs `step` on each; removes those it returns false for.
    pub(super) fn retain(&mut self, mut step: impl FnMut(u64, &mut Pending<Origin>) -> bool) {
        let mut gone = Vec::new();
        self.map.retain(|&epoch, (p, source)| {
            let keep = step(epoch, p);
            if !keep {
                gone.push(*source);
            }
            keep
        });
        for s in gone {
            self.release_source(s);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_new_address_keeps_the_validated_one_as_fallback() {
        let t0 = Instant::now();
        let mut bridges = Bridges::new(16);
        bridges.touch(t0, a(1), 100, || 5);
        bridges.on_ack_token(a(1), 5);
        let mut c = ClientEpoch::new(64, (1, 0), t0);
        c.learn(0, a(1), &bridges);
        bridges.touch(t0, a(2), 100, || 6);
        c.learn(0, a(2), &bridges);
        assert_eq!(
            c.slot(0),
            Some(Slot {
                addr: a(2),
                fallback: Some(a(1)),
                figures: None,
            })
        );
        let (to, _) = c.destinations(&bridges, t0, Duration::from_secs(2), 40);
        assert_eq!(to, [(0, a(2)), (0, a(1))]);
        // Once the new one answers, the old one is dropped.
        bridges.on_ack_token(a(2), 6);
        let (to, _) = c.destinations(&bridges, t0, Duration::from_secs(2), 40);
        assert_eq!(to, [(0, a(2))]);
    }

    #[test]
    fn tombstones_expire_by_time_and_move_the_horizon() {
        let t0 = Instant::now();
        let mut t = Tombstones::default();
        let start = t0;
        let now = t0 + Duration::from_secs(100);
        t.bury(7, (500, 9), t0 + Duration::from_secs(10), now);
        assert_eq!(t.highest(7), Some((500, 9)));
        assert_eq!(t.age_us(now, start), 100_000_000, "since the start");
        let keep = Duration::from_secs(30);
        assert!(t.expire(now + Duration::from_secs(29), keep).is_some());
        assert_eq!(t.highest(7), Some((500, 9)));
        assert_eq!(t.expire(now + keep, keep), None);
        assert_eq!(t.highest(7), None);
        // It was last heard at 10 s: a challenge must reach back to then, no further.
        assert_eq!(t.age_us(now + keep, start), 120_000_000);
    }

    #[test]
    fn one_source_takes_its_share_only() {
        let mut p = PendingEpochs::default();
        let t0 = Instant::now();
        let bad: IpAddr = [10, 0, 0, 9].into();
        let good: IpAddr = [10, 0, 0, 1].into();
        let mut e = 1u64;
        while p.has_room(bad) {
            p.insert(e, Pending::new(e, 0, t0), bad);
            e += 1;
        }
        assert_eq!(p.len(), PENDING_PER_SOURCE);
        assert!(p.has_room(good));
        p.remove(1);
        assert!(p.has_room(bad));
    }
}
