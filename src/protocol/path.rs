//! A client path: liveness, probing, RTT and loss in each direction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::{PathChange, PathReason};
use super::packet::{PathFigures, ProbeAck, LOSS_UNKNOWN};
use super::params::Params;
use super::peer::{PeerReject, PeerWindows};

/// Health of a path as seen by its prober.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    /// Answering, low loss.
    Up,
    /// Answering, but loss in some direction is above the threshold.
    Lossy,
    /// Nothing heard for longer than the down threshold.
    Down,
}

impl PathState {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            PathState::Up => "up",
            PathState::Lossy => "lossy",
            PathState::Down => "down",
        }
    }
}

const SENT_RING: usize = 64;
/// Window for the peer's control packets on one path.
pub const CONTROL_WINDOW: usize = 1024;
/// Acks kept for the loss estimate (about 4 s at the default probe rate).
const LOSS_SAMPLES: usize = 17;
/// Fewest acks before a loss figure is trusted (probes only)...
const MIN_LOSS_SAMPLES: usize = 5;
/// ... or, with data, fewest packets counted (and at least two acks).
const MIN_LOSS_PACKETS: u64 = 100;
/// A lossy path is up again once its loss is below this fraction of the threshold.
const LOSSY_RECOVER: f64 = 0.8;
/// A backup path that carries no data is probed this many times less often.
const BACKUP_PROBE_FACTOR: u32 = 4;
/// Shortest and longest time without an answer before a path is in doubt.
const DOUBT_MIN: Duration = Duration::from_millis(30);
const DOUBT_MAX: Duration = Duration::from_millis(1000);
/// Doubt threshold while the RTT is not measured yet.
const DOUBT_UNMEASURED: Duration = Duration::from_millis(200);
/// Fewest data copies in an ack interval for a capacity figure.
const CAPACITY_MIN_SENT: u64 = 20;
/// Loss above a path's own base loss that means it is full (congested).
const CONGESTION_LOSS: f64 = 0.03;
/// How much more than it delivered a path that is not full is assumed able to carry.
const CAPACITY_GROWTH: f64 = 1.25;

/// Snapshot of a path's counters and health, for stats.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PathStats {
    /// Path name (from config, or `HOST:PORT`).
    pub name: String,
    /// Remote address the path sends to.
    pub remote: String,
    /// `up`, `lossy` or `down`.
    pub state: String,
    /// Smoothed round-trip time in ms, once measured.
    pub rtt_ms: Option<f64>,
    /// Round-trip time variation (jitter) in ms, once measured.
    pub jitter_ms: Option<f64>,
    /// Fraction of our packets the peer did not get (probes and data), once measured.
    pub loss_out: Option<f64>,
    /// Fraction of the peer's packets we did not get (acks and data), once measured.
    pub loss_in: Option<f64>,
    /// `backup` for a backup path (client), `unvalidated` for a bridge address that has not
    /// answered its validation probe (server); empty otherwise.
    pub flags: String,
    /// True while the scheduler sends data on this path.
    pub active: bool,
    /// Packets sent on this path.
    pub tx_packets: u64,
    /// Bytes sent on this path.
    pub tx_bytes: u64,
    /// Packets accepted on this path (a copy refused because another path delivered it
    /// first is not counted here but in `totals.duplicates`).
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probe acks received.
    pub probe_acks: u64,
    /// Milliseconds since anything arrived on this path.
    pub last_rx_ms: Option<u64>,
    /// Times the path went down.
    pub downs: u64,
}

/// What arrived on one path from one peer epoch, and what was sent there to it: its probes
/// and DATA copies (the counts a PROBE_ACK reports). A new peer epoch starts them again.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCounts {
    epoch: u64,
    probes: u64,
    data: u64,
    data_sent: u64,
}

/// The counts a PROBE_ACK reports: (probes received, DATA copies received, DATA copies sent).
pub type AckCounts = (u64, u64, u64);

impl PeerCounts {
    fn follow(&mut self, epoch: u64) {
        if epoch != self.epoch {
            *self = PeerCounts {
                epoch,
                ..PeerCounts::default()
            };
        }
    }

    /// A probe of `epoch` arrived; returns the counts so far, for the ack.
    pub fn on_probe(&mut self, epoch: u64) -> AckCounts {
        self.follow(epoch);
        self.probes += 1;
        (self.probes, self.data, self.data_sent)
    }

    /// A DATA copy of `epoch` arrived.
    pub fn on_data(&mut self, epoch: u64) {
        self.follow(epoch);
        self.data += 1;
    }

    /// A DATA copy was sent to `epoch`.
    pub fn on_data_sent(&mut self, epoch: u64) {
        self.follow(epoch);
        self.data_sent += 1;
    }
}

/// One loss sample, taken when an ack arrives.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    /// Probes we had sent up to the acked one, and DATA copies we had sent before it.
    probes_sent: u64,
    data_sent: u64,
    /// The peer's counts in the ack.
    peer_probes: u64,
    peer_data: u64,
    peer_data_sent: u64,
    /// Acks and DATA copies we had received on this path.
    acks: u64,
    data_rx: u64,
}

/// Estimated delivery capacity of a path in each direction, in datagrams per second.
#[derive(Clone, Copy, Debug, Default)]
struct Capacity {
    out: Option<f64>,
    inn: Option<f64>,
    /// Lowest interval loss seen lately (a path's loss that is not congestion).
    base_out: Option<f64>,
    base_in: Option<f64>,
}

/// One capacity step: `sent` copies went in `secs` and `got` arrived.
fn capacity_step(cap: &mut Option<f64>, base: &mut Option<f64>, sent: u64, got: u64, secs: f64) {
    if sent < CAPACITY_MIN_SENT || secs <= 0.0 {
        return;
    }
    let loss = (1.0 - got as f64 / sent as f64).clamp(0.0, 1.0);
    // The base loss follows the lowest figures, and creeps up slowly.
    let b = base.map_or(loss, |b| {
        if loss < b {
            loss
        } else {
            b + (loss - b) * 0.02
        }
    });
    *base = Some(b);
    let rate = got as f64 / secs;
    *cap = Some(if loss > b + CONGESTION_LOSS {
        rate
    } else {
        cap.unwrap_or(0.0).max(rate * CAPACITY_GROWTH)
    });
}

/// One client path.
#[derive(Debug)]
pub struct ClientPath {
    name: String,
    remote: String,
    state: PathState,
    /// A backup path: data only while every other path is down; probed sparingly.
    backup: bool,
    /// The configured weight (balance).
    weight: u32,
    /// True while the scheduler puts data on it.
    carrying: bool,
    /// Removed from the config: never scheduled, probed or shown again.
    retired: bool,
    created: Instant,
    last_rx: Option<Instant>,
    next_probe: Instant,
    probes_sent: u64,
    /// Per probe: (token, sent at, DATA copies sent before it).
    sent: [(u64, Option<Instant>, u64); SENT_RING],
    /// The oldest probe not answered yet (cleared by an answer to the newest).
    probe_out: Option<Instant>,
    /// When the last probe went out.
    last_probe: Option<Instant>,
    acks_received: u64,
    ack_peer_epoch: u64,
    samples: VecDeque<Sample>,
    srtt: Option<Duration>,
    rttvar: Duration,
    /// First DATA copy sent since anything last arrived here.
    unanswered_since: Option<Instant>,
    capacity: Capacity,
    /// What arrived here from the peer, for our acks.
    peer_counts: PeerCounts,
    /// Dedup of the peer's control packets on this path (duplicating or replaying bridges
    /// must not skew the probe counts that loss figures come from).
    control: PeerWindows,
    tx_packets: u64,
    tx_bytes: u64,
    tx_data: u64,
    rx_packets: u64,
    rx_bytes: u64,
    rx_data: u64,
    downs: u64,
    /// When the path last went down (for the silence figure of its event).
    down_at: Instant,
}

impl ClientPath {
    /// A new path, considered up until it stays silent for the down threshold.
    pub fn new(name: String, remote: String, now: Instant) -> Self {
        ClientPath {
            name,
            remote,
            state: PathState::Up,
            backup: false,
            weight: 1,
            carrying: true,
            retired: false,
            created: now,
            last_rx: None,
            next_probe: now,
            probes_sent: 0,
            sent: [(u64::MAX, None, 0); SENT_RING],
            probe_out: None,
            last_probe: None,
            acks_received: 0,
            ack_peer_epoch: 0,
            samples: VecDeque::with_capacity(LOSS_SAMPLES),
            srtt: None,
            rttvar: Duration::ZERO,
            unanswered_since: None,
            capacity: Capacity::default(),
            peer_counts: PeerCounts::default(),
            control: PeerWindows::new(CONTROL_WINDOW),
            tx_packets: 0,
            tx_bytes: 0,
            tx_data: 0,
            rx_packets: 0,
            rx_bytes: 0,
            rx_data: 0,
            downs: 0,
            down_at: now,
        }
    }

    /// Sets the path's options: a backup path, and its weight in `balance`.
    pub fn set_options(&mut self, backup: bool, weight: u32) {
        self.backup = backup;
        self.weight = weight.max(1);
    }

    /// The path was removed (a reloaded config): it stays down and silent for good, and
    /// keeps its index so no other path takes it.
    pub fn retire(&mut self) {
        self.retired = true;
        self.state = PathState::Down;
        self.carrying = false;
    }

    /// True once removed.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// True for a backup path.
    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The scheduler puts data on this path (or stopped doing so).
    pub fn set_carrying(&mut self, carrying: bool) {
        self.carrying = carrying;
    }

    /// Current state.
    pub fn state(&self) -> PathState {
        self.state
    }

    /// Name for logs and stats.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the path (a reloaded config).
    pub fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// The event for this path (index `index`) having changed from `from` for `reason`.
    pub fn change(&self, index: usize, from: PathState, reason: PathReason) -> PathChange {
        let (loss_out, loss_in) = self.loss();
        PathChange {
            path: index,
            name: self.name.clone(),
            remote: self.remote.clone(),
            from,
            to: self.state,
            reason,
            // How long it had been silent when it last went down.
            silent_ms: self
                .down_at
                .saturating_duration_since(self.last_rx.unwrap_or(self.created))
                .as_millis() as u64,
            loss_out,
            loss_in,
        }
    }

    /// Updates the remote shown in stats (after re-resolution).
    pub fn set_remote(&mut self, remote: String) {
        self.remote = remote;
    }

    /// Smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Counts a control packet sent on this path.
    pub fn on_send(&mut self, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
    }

    /// Counts a DATA copy sent on this path.
    pub fn on_send_data(&mut self, now: Instant, len: usize) {
        self.on_send(len);
        self.tx_data += 1;
        if self.unanswered_since.is_none() {
            self.unanswered_since = Some(now);
        }
    }

    /// Anything valid arrived: the path is alive. Returns the old state if it changed.
    pub fn on_receive(&mut self, now: Instant, len: usize, params: &Params) -> Option<PathState> {
        if self.retired {
            return None;
        }
        self.rx_packets += 1;
        self.rx_bytes += len as u64;
        self.last_rx = Some(now);
        self.unanswered_since = None;
        if self.state == PathState::Down {
            let old = self.state;
            // The outage was not loss: start the loss estimate afresh.
            self.samples.clear();
            self.state = self.health(params);
            // Probe again soon to refresh figures after an outage.
            self.next_probe = self.next_probe.min(now);
            return Some(old);
        }
        None
    }

    /// Admits a control packet (session 0) from the peer once; duplicates and replays are
    /// refused.
    pub fn accept_control(&mut self, epoch: u64, seq: u64) -> Result<(), PeerReject> {
        self.control.accept(epoch, seq).map(|_| ())
    }

    /// The peer probed us on this path; returns the counts for the ack.
    pub fn on_peer_probe(&mut self, peer_epoch: u64) -> AckCounts {
        self.peer_counts.on_probe(peer_epoch)
    }

    /// A DATA copy of the peer's (epoch `peer_epoch`) arrived on this path.
    pub fn on_peer_data(&mut self, peer_epoch: u64) {
        self.peer_counts.on_data(peer_epoch);
        self.rx_data += 1;
    }

    /// A backup path carrying nothing is probed sparingly.
    fn sparse(&self) -> bool {
        self.backup && !self.carrying
    }

    fn probe_interval(&self, params: &Params) -> Duration {
        if self.sparse() {
            params.probe_interval * BACKUP_PROBE_FACTOR
        } else {
            params.probe_interval
        }
    }

    fn down_after(&self, params: &Params) -> Duration {
        if self.sparse() {
            params
                .down_after
                .max(self.probe_interval(params) * 3 + params.probe_interval)
        } else {
            params.down_after
        }
    }

    /// The path carries data and is in doubt: probe it now, unless a probe went out within
    /// the doubt time (its answer would clear the doubt). One round trip then tells a path
    /// that is still there (its replies paused, or a probe was lost to congestion) from one
    /// gone dark. Paths that carry no data (standby, an idle backup: sparse probing) and
    /// down ones (fast probing already) keep their own probe rate.
    pub fn probe_soon(&mut self, now: Instant) {
        if !self.carrying || self.retired || self.state == PathState::Down {
            return;
        }
        let recent = self
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < self.doubt_after());
        if !recent {
            self.next_probe = self.next_probe.min(now);
        }
    }

    /// If a probe is due, returns its token and schedules the next one.
    pub fn poll_probe(&mut self, now: Instant, params: &Params) -> Option<u64> {
        if now < self.next_probe || self.retired {
            return None;
        }
        let token = self.probes_sent;
        self.probes_sent += 1;
        self.sent[(token % SENT_RING as u64) as usize] = (token, Some(now), self.tx_data);
        if self.probe_out.is_none() {
            self.probe_out = Some(now);
        }
        self.last_probe = Some(now);
        let silent_for = now.saturating_duration_since(self.last_rx.unwrap_or(self.created));
        let interval = if silent_for >= params.suspect_after && !self.sparse() {
            params.fast_probe_interval
        } else {
            self.probe_interval(params)
        };
        self.next_probe = now + interval;
        Some(token)
    }

    /// What this end measured of the path, for the peer (carried in each probe).
    pub fn figures(&self) -> PathFigures {
        let (o, i) = self.loss();
        let ten_thousandths =
            |v: Option<f64>| v.map_or(LOSS_UNKNOWN, |x| (x * 10_000.0).round() as u16);
        PathFigures {
            rtt_us: self
                .srtt
                .map_or(0, |d| d.as_micros().clamp(1, u32::MAX as u128) as u32),
            jitter_us: self.rttvar.as_micros().min(u32::MAX as u128) as u32,
            loss_out: ten_thousandths(o),
            loss_in: ten_thousandths(i),
            state: match self.state {
                PathState::Up => 0,
                PathState::Lossy => 1,
                PathState::Down => 2,
            },
            flags: u8::from(self.backup),
        }
    }

    /// A probe ack arrived (from an acker whose epoch is `peer_epoch`).
    /// Returns the old state if the state changed.
    pub fn on_ack(
        &mut self,
        now: Instant,
        ack: &ProbeAck,
        peer_epoch: u64,
        params: &Params,
    ) -> Option<PathState> {
        let slot = (ack.echo_token % SENT_RING as u64) as usize;
        let (sent_at, data_before) = match self.sent[slot] {
            (t, Some(at), d) if t == ack.echo_token && ack.echo_token < self.probes_sent => (at, d),
            // Not a probe we sent recently (forged, or very late): ignore.
            _ => return None,
        };
        self.sent[slot].1 = None;
        if ack.echo_token + 1 == self.probes_sent {
            self.probe_out = None;
        }
        let rtt = now.saturating_duration_since(sent_at);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let dev = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + dev) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        if peer_epoch != self.ack_peer_epoch {
            // The peer restarted: its counts started again.
            self.ack_peer_epoch = peer_epoch;
            self.acks_received = 0;
            self.samples.clear();
        }
        self.acks_received += 1;
        let sample = Sample {
            at: now,
            probes_sent: ack.echo_token + 1,
            data_sent: data_before,
            peer_probes: ack.probes_received,
            peer_data: ack.data_received,
            peer_data_sent: ack.data_sent,
            acks: self.acks_received,
            data_rx: self.rx_data,
        };
        if let Some(prev) = self.samples.back().copied() {
            self.capacity_from(prev, sample);
        }
        if self.samples.len() == LOSS_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        let old = self.state;
        if old != PathState::Down {
            self.state = self.health(params);
        }
        (self.state != old).then_some(old)
    }

    fn capacity_from(&mut self, a: Sample, b: Sample) {
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        let c = &mut self.capacity;
        capacity_step(
            &mut c.out,
            &mut c.base_out,
            b.data_sent.saturating_sub(a.data_sent),
            b.peer_data.saturating_sub(a.peer_data),
            secs,
        );
        capacity_step(
            &mut c.inn,
            &mut c.base_in,
            b.peer_data_sent.saturating_sub(a.peer_data_sent),
            b.data_rx.saturating_sub(a.data_rx),
            secs,
        );
    }

    /// Estimated delivery capacity (out, in) in datagrams per second, once measured under
    /// enough traffic.
    pub fn capacity(&self) -> (Option<f64>, Option<f64>) {
        (self.capacity.out, self.capacity.inn)
    }

    /// Loss (out, in) over the recent acks, from the probes and the DATA copies together:
    /// out = what the peer says it got of what we sent, in = what we got of what the peer
    /// says it sent (one ack per probe it got, and its DATA copies).
    pub fn loss(&self) -> (Option<f64>, Option<f64>) {
        let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) else {
            return (None, None);
        };
        let d = |x: u64, y: u64| y.saturating_sub(x);
        let sent = d(a.probes_sent, b.probes_sent) + d(a.data_sent, b.data_sent);
        let peer_rx = d(a.peer_probes, b.peer_probes) + d(a.peer_data, b.peer_data);
        let peer_tx = d(a.peer_probes, b.peer_probes) + d(a.peer_data_sent, b.peer_data_sent);
        let got = d(a.acks, b.acks) + d(a.data_rx, b.data_rx);
        let enough = |n: u64| {
            self.samples.len() >= MIN_LOSS_SAMPLES
                || (self.samples.len() >= 2 && n >= MIN_LOSS_PACKETS)
        };
        let out = (sent > 0 && enough(sent))
            .then(|| (1.0 - peer_rx as f64 / sent as f64).clamp(0.0, 1.0));
        let inn = (peer_tx > 0 && enough(peer_tx))
            .then(|| (1.0 - got as f64 / peer_tx as f64).clamp(0.0, 1.0));
        (out, inn)
    }

    /// How long a path may stay unanswered before it is in doubt: a few smoothed RTTs (and
    /// enough for its jitter), 30 ms to 1 s.
    pub fn doubt_after(&self) -> Duration {
        match self.srtt {
            None => DOUBT_UNMEASURED,
            Some(s) => ((s * 3).max(s + self.rttvar * 4) + Duration::from_millis(10))
                .clamp(DOUBT_MIN, DOUBT_MAX),
        }
    }

    /// In doubt: DATA went out and nothing came back for [`doubt_after`](Self::doubt_after)
    /// while a two-way flow runs (`two_way`), or a probe is that overdue.
    pub fn in_doubt(&self, now: Instant, two_way: bool) -> bool {
        let d = self.doubt_after();
        let overdue = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) >= d);
        (two_way && overdue(self.unanswered_since)) || overdue(self.probe_out)
    }

    /// When this path would fall in doubt if nothing arrives (for the timer).
    pub fn doubt_deadline(&self, two_way: bool) -> Option<Instant> {
        let d = self.doubt_after();
        let data = self.unanswered_since.filter(|_| two_way);
        [data, self.probe_out]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + d)
    }

    /// Up or lossy from the loss figures, with hysteresis: a lossy path is up again only
    /// once both directions are below 80 % of the threshold, so a path whose loss sits at
    /// the threshold does not flap (nor log a change each probe).
    fn health(&self, params: &Params) -> PathState {
        let (o, i) = self.loss();
        let worst = o.unwrap_or(0.0).max(i.unwrap_or(0.0));
        let limit = if self.state == PathState::Lossy {
            params.lossy_threshold * LOSSY_RECOVER
        } else {
            params.lossy_threshold
        };
        if worst > limit {
            PathState::Lossy
        } else {
            PathState::Up
        }
    }

    /// Marks the path down after the silence threshold. Returns the old state on a change.
    pub fn check_down(&mut self, now: Instant, params: &Params) -> Option<PathState> {
        if self.state == PathState::Down {
            return None;
        }
        let since = self.last_rx.unwrap_or(self.created);
        if now.saturating_duration_since(since) >= self.down_after(params) {
            let old = self.state;
            self.state = PathState::Down;
            self.downs += 1;
            self.down_at = now;
            return Some(old);
        }
        None
    }

    /// True once anything came back over this path.
    pub fn ever_heard(&self) -> bool {
        self.last_rx.is_some()
    }

    /// When this path next needs attention (never, once retired).
    pub fn next_deadline(&self, params: &Params) -> Option<Instant> {
        if self.retired {
            return None;
        }
        let mut t = self.next_probe;
        if self.state != PathState::Down {
            t = t.min(self.last_rx.unwrap_or(self.created) + self.down_after(params));
        }
        Some(t)
    }

    /// Counters and health for stats.
    pub fn stats(&self, now: Instant) -> PathStats {
        let (o, i) = self.loss();
        PathStats {
            name: self.name.clone(),
            remote: self.remote.clone(),
            state: self.state.name().to_string(),
            rtt_ms: self.srtt.map(|d| d.as_secs_f64() * 1000.0),
            jitter_ms: self.srtt.map(|_| self.rttvar.as_secs_f64() * 1000.0),
            loss_out: o,
            loss_in: i,
            flags: if self.backup { "backup" } else { "" }.to_string(),
            active: self.carrying,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            probes_sent: self.probes_sent,
            probe_acks: self.acks_received,
            last_rx_ms: self
                .last_rx
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            downs: self.downs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_brings_it_down_and_any_packet_back_up() {
        let p0 = Params::default();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        assert_eq!(p.state(), PathState::Up);
        assert_eq!(p.check_down(t0 + Duration::from_millis(999), &p0), None);
        assert_eq!(
            p.check_down(t0 + Duration::from_millis(1000), &p0),
            Some(PathState::Up)
        );
        assert_eq!(p.state(), PathState::Down);
        assert_eq!(
            p.on_receive(t0 + Duration::from_millis(1100), 10, &p0),
            Some(PathState::Down)
        );
        assert_eq!(p.state(), PathState::Up);
    }

    #[test]
    fn probes_speed_up_when_silent() {
        let params = Params::default();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        assert_eq!(p.poll_probe(t0, &params), Some(0));
        assert_eq!(p.poll_probe(t0 + Duration::from_millis(100), &params), None);
        assert_eq!(
            p.poll_probe(t0 + Duration::from_millis(250), &params),
            Some(1)
        );
        // 500 ms silent now: next probe comes after the fast interval.
        let t = t0 + Duration::from_millis(500);
        assert_eq!(p.poll_probe(t, &params), Some(2));
        assert_eq!(
            p.poll_probe(t + params.fast_probe_interval, &params),
            Some(3)
        );
    }

    #[test]
    fn loss_each_way_from_counts() {
        let params = Params::default();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        let mut peer_rx = 0;
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(10 * i);
            let tok = p.poll_probe(now, &params.clone_with_interval()).unwrap();
            // Half of our probes arrive; of those acks, every other one comes back.
            if i % 2 == 0 {
                peer_rx += 1;
                if peer_rx % 2 == 0 {
                    let ack = ProbeAck {
                        echo_seq: 0,
                        echo_token: tok,
                        probes_received: peer_rx,
                        data_received: 0,
                        data_sent: 0,
                    };
                    p.on_ack(now, &ack, 9, &params);
                }
            }
        }
        let (o, i) = p.loss();
        assert!((o.unwrap() - 0.5).abs() < 0.05, "{o:?}");
        assert!((i.unwrap() - 0.5).abs() < 0.05, "{i:?}");
        assert_eq!(p.state(), PathState::Lossy);
    }

    #[test]
    fn lossy_has_hysteresis() {
        let params = Params::default();
        let fast = params.clone_with_interval();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        let (mut peer_probes, mut peer_data, mut step) = (0, 0, 0u64);
        // Twenty ack intervals of 100 DATA copies each, of which `loss` do not arrive.
        let mut phase = |p: &mut ClientPath, loss: u64| {
            for _ in 0..20 {
                step += 1;
                let now = t0 + Duration::from_millis(10 * step);
                for _ in 0..100 {
                    p.on_send_data(now, 100);
                }
                let tok = p.poll_probe(now, &fast).unwrap();
                peer_probes += 1;
                peer_data += 100 - loss;
                let ack = ProbeAck {
                    echo_seq: 0,
                    echo_token: tok,
                    probes_received: peer_probes,
                    data_received: peer_data,
                    data_sent: 0,
                };
                p.on_receive(now, 40, &params);
                p.on_ack(now, &ack, 9, &params);
            }
            p.state()
        };
        assert_eq!(phase(&mut p, 12), PathState::Lossy);
        assert_eq!(phase(&mut p, 9), PathState::Lossy, "9 % is not below 8 %");
        assert_eq!(phase(&mut p, 7), PathState::Up);
        assert_eq!(phase(&mut p, 9), PathState::Up, "9 % is not above 10 %");
        assert_eq!(phase(&mut p, 12), PathState::Lossy);
    }

    #[test]
    fn unknown_ack_tokens_are_ignored() {
        let params = Params::default();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        let ack = ProbeAck {
            echo_seq: 0,
            echo_token: 5,
            probes_received: 1,
            data_received: 0,
            data_sent: 0,
        };
        assert_eq!(p.on_ack(t0, &ack, 1, &params), None);
        assert_eq!(p.srtt(), None);
    }

    impl Params {
        fn clone_with_interval(&self) -> Params {
            Params {
                probe_interval: Duration::from_millis(10),
                fast_probe_interval: Duration::from_millis(10),
                ..self.clone()
            }
        }
    }
}
