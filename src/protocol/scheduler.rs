//! Which paths carry a datagram, from each path's measurements.
//!
//! - `redundant`: every path that is not down (all of them when all look down).
//! - `failover`: one active path, the best of those not lossy; switched when it goes down or
//!   lossy, or when another is clearly better (30 % lower score) and the last switch is 5 s
//!   old. While the active path is *in doubt* (see [`ClientPath::in_doubt`]) the next best
//!   path carries a copy too. When every path is lossy, the two least lossy carry each
//!   datagram.
//! - `k-best=K`: the K best paths by score; a member keeps its place until a non-member's
//!   score beats its own by 20 %.
//! - `balance`: each datagram on one path, spread in proportion to each path's measured
//!   delivery capacity times its `weight=` (smooth weighted round robin). A path in doubt
//!   gets no share while another is not in doubt.
//!
//! Backup paths (`backup` on a path's line) are left out in every mode while any other
//! path is not down.
//!
//! The **score** of a path (lower is better) is its smoothed RTT in ms (1,000 while not
//! measured) plus 10 per point of loss in its worse direction: 20 ms and 2 % loss score 40.
//!
//! [`ClientPath::in_doubt`]: super::path::ClientPath::in_doubt

use std::time::{Duration, Instant};

use super::packet::Announce;
use super::path::PathState;
use super::transmit::PathMask;

/// Scheduling mode of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every datagram on every path that is not down (on all paths if all look down).
    #[default]
    Redundant,
    /// One active path; the next best one too while the active one is in doubt.
    Failover,
    /// The K best paths.
    KBest(u8),
    /// Each datagram on one path, in proportion to the paths' capacities.
    Balance,
}

/// The modes, for help texts and errors.
pub const MODES: &str = "redundant, failover, k-best=K, balance";

impl Mode {
    /// Parses a mode name (`k-best=2`, `k-best:2` and `k-best 2` are the same).
    pub fn parse(s: &str) -> Result<Mode, String> {
        let s = s.trim();
        match s {
            "redundant" => return Ok(Mode::Redundant),
            "failover" => return Ok(Mode::Failover),
            "balance" => return Ok(Mode::Balance),
            _ => {}
        }
        if let Some(k) = s
            .strip_prefix("k-best")
            .map(|r| r.trim_start_matches(['=', ':', ' ']))
        {
            return match k.parse::<u8>() {
                Ok(k) if (1..=64).contains(&k) => Ok(Mode::KBest(k)),
                _ => Err(format!(
                    "mode '{s}': k-best needs a number of paths from 1 to 64 (k-best=2)"
                )),
            };
        }
        if s.starts_with("fec") || s == "auto" {
            return Err(format!(
                "mode '{s}' is not available in this version (available: {MODES})"
            ));
        }
        Err(format!("unknown mode '{s}' (available: {MODES})"))
    }

    /// The mode's name as `parse` takes it.
    pub fn name(self) -> String {
        match self {
            Mode::Redundant => "redundant".into(),
            Mode::Failover => "failover".into(),
            Mode::KBest(k) => format!("k-best={k}"),
            Mode::Balance => "balance".into(),
        }
    }

    /// The mode number and parameter in an ANNOUNCE.
    pub fn wire(self) -> (u8, u8) {
        match self {
            Mode::Redundant => (0, 0),
            Mode::Failover => (1, 0),
            Mode::KBest(k) => (2, k),
            Mode::Balance => (3, 0),
        }
    }

    /// The mode an ANNOUNCE names (unknown numbers are taken as redundant).
    pub fn from_wire(mode: u8, k: u8) -> Mode {
        match mode {
            1 => Mode::Failover,
            2 if k >= 1 => Mode::KBest(k.min(64)),
            3 => Mode::Balance,
            _ => Mode::Redundant,
        }
    }
}

/// What the scheduler knows of one path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathView {
    /// Its state.
    pub state: PathState,
    /// A backup path.
    pub backup: bool,
    /// Configured weight (balance).
    pub weight: u32,
    /// Smoothed RTT in ms, once measured.
    pub rtt_ms: Option<f64>,
    /// Loss in its worse direction, once measured.
    pub loss: Option<f64>,
    /// The active path has gone unanswered too long (failover).
    pub in_doubt: bool,
    /// Measured delivery capacity (datagrams/s) in the direction being scheduled.
    pub capacity: Option<f64>,
    /// Removed from the config: never chosen.
    pub gone: bool,
}

impl PathView {
    /// The ranking score (lower is better); see the module's documentation.
    pub fn score(&self) -> f64 {
        self.rtt_ms.unwrap_or(1000.0) + 1000.0 * self.loss.unwrap_or(0.0)
    }
}

/// A failover switch worth a log line: the new active path, the old one and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The new active path.
    pub to: usize,
    /// The one before, if any.
    pub from: Option<usize>,
    /// `down`, `lossy`, `better` or `start`.
    pub reason: &'static str,
}

/// The paths chosen for the next datagrams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Every datagram goes on these (all modes but balance).
    pub mask: PathMask,
    /// Balance: each datagram goes on one path, with these shares (index order).
    pub shares: Vec<f64>,
}

/// A failover switch away from a path that is still good needs this much improvement...
const SWITCH_RATIO: f64 = 0.7;
/// ... and this long since the last switch.
const SWITCH_HOLD: Duration = Duration::from_secs(5);
/// A k-best member keeps its place until beaten by this factor.
const KBEST_KEEP: f64 = 0.8;

/// Picks the paths for each outgoing datagram.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    mode: Mode,
    active: Option<usize>,
    switched_at: Option<Instant>,
    members: PathMask,
    /// Smooth weighted round robin credits (balance).
    credit: Vec<f64>,
    /// The last switch, for the caller to log.
    switch: Option<Switch>,
}

/// Paths that may carry data: those not down and not backup; else backups not down; else
/// every path (they may all just look down).
fn eligible(views: &[PathView]) -> PathMask {
    let pick = |f: &dyn Fn(&PathView) -> bool| {
        views
            .iter()
            .enumerate()
            .take(64)
            .filter(|(_, v)| f(v))
            .fold(0u64, |m, (i, _)| m | 1 << i)
    };
    let primary = pick(&|v| v.state != PathState::Down && !v.backup && !v.gone);
    if primary != 0 {
        return primary;
    }
    let backups = pick(&|v| v.state != PathState::Down && !v.gone);
    if backups != 0 {
        return backups;
    }
    pick(&|v| !v.gone)
}

fn members(mask: PathMask) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

/// The best path of `mask` by score, lowest index on ties.
fn best_of(views: &[PathView], mask: PathMask) -> Option<usize> {
    members(mask).min_by(|&a, &b| views[a].score().total_cmp(&views[b].score()))
}

impl Scheduler {
    /// A scheduler in `mode`.
    pub fn new(mode: Mode) -> Self {
        Scheduler {
            mode,
            ..Scheduler::default()
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches mode (a running tunnel); the next plan follows it.
    pub fn set_mode(&mut self, mode: Mode) {
        if mode != self.mode {
            *self = Scheduler::new(mode);
        }
    }

    /// The active path in failover, if one is chosen.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// The last failover switch, once (for the log).
    pub fn take_switch(&mut self) -> Option<Switch> {
        self.switch.take()
    }

    /// The plan for the next datagrams, from each path's view (index = path id).
    pub fn plan(&mut self, now: Instant, views: &[PathView]) -> Plan {
        let elig = eligible(views);
        let mask = match self.mode {
            Mode::Redundant => elig,
            Mode::Failover => self.failover(now, views, elig),
            Mode::KBest(k) => self.k_best(views, elig, usize::from(k)),
            Mode::Balance => {
                return Plan {
                    mask: elig,
                    shares: balance_shares(views, elig),
                }
            }
        };
        Plan {
            mask,
            shares: Vec::new(),
        }
    }

    fn failover(&mut self, now: Instant, views: &[PathView], elig: PathMask) -> PathMask {
        let good: PathMask = members(elig)
            .filter(|&i| views[i].state == PathState::Up)
            .fold(0, |m, i| m | 1 << i);
        if good == 0 {
            // Every usable path is lossy (or all are down): the two least lossy carry it.
            let mut by_loss: Vec<usize> = members(elig).collect();
            by_loss.sort_by(|&a, &b| {
                let l = |i: usize| views[i].loss.unwrap_or(0.0);
                l(a).total_cmp(&l(b))
                    .then(views[a].score().total_cmp(&views[b].score()))
            });
            let mask = by_loss.iter().take(2).fold(0, |m, &i| m | 1 << i);
            if let Some(&first) = by_loss.first() {
                if self.active != Some(first) {
                    self.set_active(now, first, "lossy");
                }
            }
            return mask;
        }
        let Some(best) = best_of(views, good) else {
            return elig;
        };
        match self.active {
            Some(a) if good & (1 << a) != 0 => {
                let held = self
                    .switched_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= SWITCH_HOLD);
                if best != a && held && views[best].score() < views[a].score() * SWITCH_RATIO {
                    self.set_active(now, best, "better");
                }
            }
            Some(a) => {
                let reason = if views.get(a).is_some_and(|v| v.state == PathState::Lossy) {
                    "lossy"
                } else {
                    "down"
                };
                self.set_active(now, best, reason);
            }
            None => self.set_active(now, best, "start"),
        }
        let a = self.active.unwrap_or(best);
        let mut mask = 1 << a;
        if views[a].in_doubt {
            // The next best path carries a copy until the doubt clears.
            let others = elig & !(1 << a);
            let next = best_of(views, good & !(1 << a)).or_else(|| best_of(views, others));
            if let Some(n) = next {
                mask |= 1 << n;
            }
        }
        mask
    }

    fn set_active(&mut self, now: Instant, to: usize, reason: &'static str) {
        self.switch = Some(Switch {
            to,
            from: self.active,
            reason,
        });
        self.active = Some(to);
        self.switched_at = Some(now);
    }

    fn k_best(&mut self, views: &[PathView], elig: PathMask, k: usize) -> PathMask {
        let mut ranked: Vec<usize> = members(elig).collect();
        let score = |i: usize| {
            let s = views[i].score();
            if self.members & (1 << i) != 0 {
                s * KBEST_KEEP
            } else {
                s
            }
        };
        ranked.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
        self.members = ranked.iter().take(k).fold(0, |m, &i| m | 1 << i);
        self.members
    }

    /// Balance: the one path for the next datagram (smooth weighted round robin over the
    /// plan's shares).
    pub fn pick(&mut self, plan: &Plan) -> PathMask {
        pick_weighted(&mut self.credit, &plan.shares)
    }
}

/// One path by smooth weighted round robin: each path gains its share, the richest is
/// picked and pays the total. Over n picks each path gets its share of n, evenly spread.
pub fn pick_weighted(credit: &mut Vec<f64>, shares: &[f64]) -> PathMask {
    credit.resize(shares.len(), 0.0);
    let total: f64 = shares.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut best = None;
    for (i, (c, s)) in credit.iter_mut().zip(shares).enumerate() {
        *c += s;
        if *s > 0.0 && best.is_none_or(|(_, bc)| *c > bc) {
            best = Some((i, *c));
        }
    }
    match best {
        Some((i, _)) => {
            credit[i] -= total;
            1 << i
        }
        None => 0,
    }
}

/// Balance shares: capacity × weight over the eligible paths; a path not measured yet gets
/// the largest measured capacity (so it is tried), or all get 1 while none is measured.
/// A path in doubt gets no share while another eligible path is not in doubt: a path going
/// dark costs its share for the doubt time, not for the whole down threshold.
pub fn balance_shares(views: &[PathView], elig: PathMask) -> Vec<f64> {
    let sure = members(elig)
        .filter(|&i| !views[i].in_doubt)
        .fold(0, |m, i| m | 1 << i);
    let elig = if sure != 0 { sure } else { elig };
    let known = members(elig)
        .filter_map(|i| views[i].capacity)
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i >= 64 || elig & (1 << i) == 0 {
                return 0.0;
            }
            let cap = v.capacity.or(known).unwrap_or(1.0).max(1e-3);
            cap * f64::from(v.weight.max(1))
        })
        .collect()
}

/// The shares as ANNOUNCE weights (0-255, the largest 255; at least 1 for any path with a
/// share).
pub fn shares_to_weights(shares: &[f64], an: &mut Announce) {
    let max = shares.iter().copied().fold(0.0, f64::max);
    let n = shares.len().min(64);
    for (i, s) in shares.iter().take(n).enumerate() {
        an.weights[i] = if max <= 0.0 || *s <= 0.0 {
            0
        } else {
            ((s / max) * 255.0).round().clamp(1.0, 255.0) as u8
        };
    }
    an.weights_len = n as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathState::*;

    fn v(state: PathState, rtt: f64, loss: f64) -> PathView {
        PathView {
            state,
            backup: false,
            weight: 1,
            rtt_ms: Some(rtt),
            loss: Some(loss),
            in_doubt: false,
            capacity: None,
            gone: false,
        }
    }

    #[test]
    fn redundant_skips_down_paths_unless_all_are_down() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Redundant);
        let p = |s: &mut Scheduler, st: &[PathState]| {
            let views: Vec<_> = st.iter().map(|&x| v(x, 10.0, 0.0)).collect();
            s.plan(t, &views).mask
        };
        assert_eq!(p(&mut s, &[Up, Down, Lossy]), 0b101);
        assert_eq!(p(&mut s, &[Down, Down]), 0b11);
        assert_eq!(p(&mut s, &[]), 0);
    }

    #[test]
    fn backup_paths_only_when_the_others_are_down() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Redundant);
        let mut views = vec![v(Up, 10.0, 0.0), v(Up, 5.0, 0.0)];
        views[1].backup = true;
        assert_eq!(s.plan(t, &views).mask, 0b01);
        views[0].state = Down;
        assert_eq!(s.plan(t, &views).mask, 0b10);
    }

    #[test]
    fn failover_keeps_one_path_adds_the_next_in_doubt_and_does_not_flap() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Failover);
        let mut views = vec![v(Up, 30.0, 0.0), v(Up, 10.0, 0.0), v(Up, 20.0, 0.0)];
        assert_eq!(s.plan(t, &views).mask, 0b010);
        assert_eq!(s.take_switch().map(|w| w.reason), Some("start"));
        views[1].in_doubt = true;
        assert_eq!(s.plan(t, &views).mask, 0b110, "the next best joins");
        views[1].in_doubt = false;
        views[1].state = Down;
        assert_eq!(s.plan(t, &views).mask, 0b100);
        // Back up and a little better: no switch back.
        views[1].state = Up;
        views[1].rtt_ms = Some(18.0);
        let later = t + Duration::from_secs(60);
        assert_eq!(s.plan(later, &views).mask, 0b100);
        // Much better, but only just after a switch: still held.
        let mut s2 = Scheduler::new(Mode::Failover);
        let mut w = vec![v(Up, 20.0, 0.0), v(Up, 30.0, 0.0)];
        s2.plan(t, &w);
        w[1].rtt_ms = Some(5.0);
        assert_eq!(s2.plan(t + Duration::from_secs(1), &w).mask, 0b01);
        assert_eq!(s2.plan(t + Duration::from_secs(6), &w).mask, 0b10);
        // A lossy active path is left at once.
        w[1].state = Lossy;
        assert_eq!(s2.plan(t + Duration::from_secs(7), &w).mask, 0b01);
    }

    #[test]
    fn failover_when_every_path_is_lossy_uses_the_two_least_lossy() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Failover);
        let views = vec![
            v(Lossy, 10.0, 0.4),
            v(Lossy, 10.0, 0.2),
            v(Lossy, 10.0, 0.3),
        ];
        assert_eq!(s.plan(t, &views).mask, 0b110);
    }

    #[test]
    fn k_best_picks_by_score_with_hysteresis() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::KBest(2));
        let mut views = vec![
            v(Up, 10.0, 0.0),
            v(Up, 50.0, 0.0),
            v(Up, 20.0, 0.05),
            v(Down, 1.0, 0.0),
        ];
        // Scores 10, 50, 70, (down).
        assert_eq!(s.plan(t, &views).mask, 0b011);
        views[2].loss = Some(0.0);
        assert_eq!(s.plan(t, &views).mask, 0b101);
        // 45 does not beat a member at 50 x 0.8 = 40.
        views[1].rtt_ms = Some(50.0);
        views[2].rtt_ms = Some(45.0);
        assert_eq!(s.plan(t, &views).mask, 0b101);
    }

    #[test]
    fn balance_spreads_by_capacity_and_weight() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Balance);
        let mut views = vec![v(Up, 10.0, 0.0), v(Up, 10.0, 0.0), v(Down, 10.0, 0.0)];
        views[0].capacity = Some(3000.0);
        views[1].capacity = Some(1000.0);
        let plan = s.plan(t, &views);
        let mut counts = [0; 3];
        for _ in 0..4000 {
            let m = s.pick(&plan);
            counts[m.trailing_zeros() as usize] += 1;
        }
        assert_eq!(counts, [3000, 1000, 0]);
        views[1].weight = 3;
        let plan = s.plan(t, &views);
        assert_eq!(plan.shares[0], plan.shares[1]);
    }

    #[test]
    fn balance_gives_no_share_to_a_path_in_doubt_unless_all_are() {
        let t = Instant::now();
        let mut s = Scheduler::new(Mode::Balance);
        let mut views = vec![v(Up, 10.0, 0.0), v(Up, 10.0, 0.0), v(Up, 10.0, 0.0)];
        views[1].in_doubt = true;
        let plan = s.plan(t, &views);
        assert_eq!(plan.shares, [1.0, 0.0, 1.0]);
        for _ in 0..10 {
            assert_ne!(s.pick(&plan), 0b010);
        }
        for v in &mut views {
            v.in_doubt = true;
        }
        assert_eq!(s.plan(t, &views).shares, [1.0, 1.0, 1.0]);
    }

    #[test]
    fn parse_names() {
        assert_eq!(Mode::parse("redundant"), Ok(Mode::Redundant));
        assert_eq!(Mode::parse("k-best=2"), Ok(Mode::KBest(2)));
        assert_eq!(Mode::parse("failover"), Ok(Mode::Failover));
        for m in [
            Mode::Redundant,
            Mode::Failover,
            Mode::KBest(3),
            Mode::Balance,
        ] {
            assert_eq!(Mode::parse(&m.name()), Ok(m));
            let (n, k) = m.wire();
            assert_eq!(Mode::from_wire(n, k), m);
        }
        assert!(Mode::parse("k-best=0").unwrap_err().contains("1 to 64"));
        assert!(Mode::parse("fec=4+2")
            .unwrap_err()
            .contains("not available"));
        assert!(Mode::parse("bogus").unwrap_err().contains("bogus"));
    }
}
