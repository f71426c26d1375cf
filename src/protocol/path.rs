//! A client path: liveness, probing, RTT and loss in each direction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::{PathChange, PathReason};
use super::packet::ProbeAck;
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
/// Fewest acks before a loss figure is trusted.
const MIN_LOSS_SAMPLES: usize = 5;

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
    /// Fraction of our packets the peer did not get (probe-measured), once measured.
    pub loss_out: Option<f64>,
    /// Fraction of the peer's packets we did not get (probe-measured), once measured.
    pub loss_in: Option<f64>,
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

/// What arrived on one path from one peer epoch: its probes and its DATA copies (the
/// counts a PROBE_ACK reports). A new peer epoch starts them again.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCounts {
    epoch: u64,
    probes: u64,
    data: u64,
}

impl PeerCounts {
    fn follow(&mut self, epoch: u64) {
        if epoch != self.epoch {
            *self = PeerCounts {
                epoch,
                ..PeerCounts::default()
            };
        }
    }

    /// A probe of `epoch` arrived; returns (probes, data) so far, for the ack.
    pub fn on_probe(&mut self, epoch: u64) -> (u64, u64) {
        self.follow(epoch);
        self.probes += 1;
        (self.probes, self.data)
    }

    /// A DATA copy of `epoch` arrived.
    pub fn on_data(&mut self, epoch: u64) {
        self.follow(epoch);
        self.data += 1;
    }
}

/// One client path.
#[derive(Debug)]
pub struct ClientPath {
    name: String,
    remote: String,
    state: PathState,
    created: Instant,
    last_rx: Option<Instant>,
    next_probe: Instant,
    probes_sent: u64,
    sent: [(u64, Option<Instant>); SENT_RING],
    acks_received: u64,
    ack_peer_epoch: u64,
    /// (probes sent up to the acked one, peer's probes received, acks we received).
    samples: VecDeque<(u64, u64, u64)>,
    srtt: Option<Duration>,
    /// What arrived here from the peer, for our acks.
    peer_counts: PeerCounts,
    /// Dedup of the peer's control packets on this path (duplicating or replaying bridges
    /// must not skew the probe counts that loss figures come from).
    control: PeerWindows,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
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
            created: now,
            last_rx: None,
            next_probe: now,
            probes_sent: 0,
            sent: [(u64::MAX, None); SENT_RING],
            acks_received: 0,
            ack_peer_epoch: 0,
            samples: VecDeque::with_capacity(LOSS_SAMPLES),
            srtt: None,
            peer_counts: PeerCounts::default(),
            control: PeerWindows::new(CONTROL_WINDOW),
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            downs: 0,
            down_at: now,
        }
    }

    /// Current state.
    pub fn state(&self) -> PathState {
        self.state
    }

    /// Name for logs and stats.
    pub fn name(&self) -> &str {
        &self.name
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

    /// Counts a packet sent on this path.
    pub fn on_send(&mut self, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
    }

    /// Anything valid arrived: the path is alive. Returns the old state if it changed.
    pub fn on_receive(&mut self, now: Instant, len: usize, params: &Params) -> Option<PathState> {
        self.rx_packets += 1;
        self.rx_bytes += len as u64;
        self.last_rx = Some(now);
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

    /// The peer probed us on this path; returns how many of its probes and DATA copies
    /// (from `peer_epoch`) we have received here, for the ack.
    pub fn on_peer_probe(&mut self, peer_epoch: u64) -> (u64, u64) {
        self.peer_counts.on_probe(peer_epoch)
    }

    /// A DATA copy of the peer's (epoch `peer_epoch`) arrived on this path.
    pub fn on_peer_data(&mut self, peer_epoch: u64) {
        self.peer_counts.on_data(peer_epoch);
    }

    /// If a probe is due, returns its token and schedules the next one.
    pub fn poll_probe(&mut self, now: Instant, params: &Params) -> Option<u64> {
        if now < self.next_probe {
            return None;
        }
        let token = self.probes_sent;
        self.probes_sent += 1;
        self.sent[(token % SENT_RING as u64) as usize] = (token, Some(now));
        let silent_for = now.saturating_duration_since(self.last_rx.unwrap_or(self.created));
        let interval = if silent_for >= params.suspect_after {
            params.fast_probe_interval
        } else {
            params.probe_interval
        };
        self.next_probe = now + interval;
        Some(token)
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
        let sent_at = match self.sent[slot] {
            (t, Some(at)) if t == ack.echo_token && ack.echo_token < self.probes_sent => at,
            // Not a probe we sent recently (forged, or very late): ignore.
            _ => return None,
        };
        self.sent[slot].1 = None;
        let rtt = now.saturating_duration_since(sent_at);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        if peer_epoch != self.ack_peer_epoch {
            // The peer restarted: its counts started again.
            self.ack_peer_epoch = peer_epoch;
            self.acks_received = 0;
            self.samples.clear();
        }
        self.acks_received += 1;
        if self.samples.len() == LOSS_SAMPLES {
            self.samples.pop_front();
        }
        self.samples
            .push_back((ack.echo_token + 1, ack.probes_received, self.acks_received));
        let old = self.state;
        if old != PathState::Down {
            self.state = self.health(params);
        }
        (self.state != old).then_some(old)
    }

    /// Probe-measured loss (out, in) over the recent acks.
    pub fn loss(&self) -> (Option<f64>, Option<f64>) {
        if self.samples.len() < MIN_LOSS_SAMPLES {
            return (None, None);
        }
        let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) else {
            return (None, None);
        };
        let sent = b.0.saturating_sub(a.0);
        let peer_rx = b.1.saturating_sub(a.1);
        let acks = b.2.saturating_sub(a.2);
        let out = (sent > 0).then(|| (1.0 - peer_rx as f64 / sent as f64).clamp(0.0, 1.0));
        let inn = (peer_rx > 0).then(|| (1.0 - acks as f64 / peer_rx as f64).clamp(0.0, 1.0));
        (out, inn)
    }

    fn health(&self, params: &Params) -> PathState {
        let (o, i) = self.loss();
        if o.unwrap_or(0.0) > params.lossy_threshold || i.unwrap_or(0.0) > params.lossy_threshold {
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
        if now.saturating_duration_since(since) >= params.down_after {
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

    /// When this path next needs attention.
    pub fn next_deadline(&self, params: &Params) -> Instant {
        let mut t = self.next_probe;
        if self.state != PathState::Down {
            t = t.min(self.last_rx.unwrap_or(self.created) + params.down_after);
        }
        t
    }

    /// Counters and health for stats.
    pub fn stats(&self, now: Instant) -> PathStats {
        let (o, i) = self.loss();
        PathStats {
            name: self.name.clone(),
            remote: self.remote.clone(),
            state: self.state.name().to_string(),
            rtt_ms: self.srtt.map(|d| d.as_secs_f64() * 1000.0),
            loss_out: o,
            loss_in: i,
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
    fn unknown_ack_tokens_are_ignored() {
        let params = Params::default();
        let t0 = Instant::now();
        let mut p = ClientPath::new("a".into(), "x".into(), t0);
        let ack = ProbeAck {
            echo_seq: 0,
            echo_token: 5,
            probes_received: 1,
            data_received: 0,
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
