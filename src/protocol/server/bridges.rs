//! The server's table of bridge addresses: which answered their validation probe, what an
//! unvalidated one may still be sent (anti-amplification), the dedup of their control
//! packets and their counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::packet::{Header, CONTROL_SESSION};
use crate::protocol::path::{PathStats, CONTROL_WINDOW};
use crate::protocol::peer::{PeerReject, PeerWindows};

/// An unvalidated address gets at most this many times the bytes it sent us (as in QUIC).
const AMPLIFICATION_FACTOR: u64 = 3;
/// Interval between validation probes to an address that has not answered.
pub(super) const VALIDATION_RETRY: Duration = Duration::from_millis(250);

/// One bridge address.
#[derive(Debug)]
pub(super) struct Bridge {
    pub(super) validated: bool,
    /// The token its validation probe carries.
    pub(super) token: u64,
    pub(super) next_validation: Instant,
    pub(super) last_rx: Instant,
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

/// The bridge addresses heard from, at most `max` of them.
#[derive(Debug)]
pub(super) struct Bridges {
    map: HashMap<SocketAddr, Bridge>,
    max: usize,
}

impl Bridges {
    pub(super) fn new(max: usize) -> Self {
        Bridges {
            map: HashMap::new(),
            max,
        }
    }

    pub(super) fn get(&self, a: &SocketAddr) -> Option<&Bridge> {
        self.map.get(a)
    }

    /// A packet of `len` bytes arrived from `from`; a new address gets an entry (with a
    /// `token` drawn for its validation probe), evicting the one heard from least recently
    /// when the table is full. True if the address is new.
    pub(super) fn touch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        token: impl FnOnce() -> u64,
    ) -> bool {
        let new = !self.map.contains_key(&from);
        if new {
            if self.map.len() >= self.max {
                if let Some(old) = self
                    .map
                    .iter()
                    .min_by_key(|(_, p)| p.last_rx)
                    .map(|(a, _)| *a)
                {
                    self.map.remove(&old);
                }
            }
            self.map.insert(
                from,
                Bridge {
                    validated: false,
                    token: token(),
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
        }
        if let Some(p) = self.map.get_mut(&from) {
            p.last_rx = now;
            p.rx_packets += 1;
            p.rx_bytes += len as u64;
            p.rx_bytes_total += len as u64;
        }
        new
    }

    /// If `addr` needs a validation probe now, schedules the next one and returns its token.
    pub(super) fn validation_due(&mut self, now: Instant, addr: SocketAddr) -> Option<u64> {
        let p = self.map.get_mut(&addr)?;
        if p.validated || now < p.next_validation {
            return None;
        }
        p.next_validation = now + VALIDATION_RETRY;
        Some(p.token)
    }

    /// Unvalidated addresses heard from within `recent` whose next probe is due by `now`,
    /// and the earliest next probe among the others still waiting.
    pub(super) fn validations(
        &self,
        now: Instant,
        recent: Duration,
    ) -> (Vec<SocketAddr>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (a, p) in &self.map {
            if p.validated || now.saturating_duration_since(p.last_rx) >= recent {
                continue;
            }
            if now >= p.next_validation {
                due.push(*a);
            } else {
                next = Some(next.map_or(p.next_validation, |t| t.min(p.next_validation)));
            }
        }
        (due, next)
    }

    /// A probe ack from `from` echoing `token`: the address answered, so it is validated.
    pub(super) fn on_ack_token(&mut self, from: SocketAddr, token: u64) -> bool {
        match self.map.get_mut(&from) {
            Some(p) if !p.validated && token == p.token => {
                p.validated = true;
                true
            }
            _ => false,
        }
    }

    /// Control packets (session 0) count once per address; duplicates and replays would
    /// skew probe counts and trigger extra answers.
    pub(super) fn control_fresh(
        &mut self,
        from: SocketAddr,
        header: &Header,
    ) -> Result<(), PeerReject> {
        if header.session != CONTROL_SESSION {
            return Ok(());
        }
        match self.map.get_mut(&from) {
            Some(p) => p.control.accept(header.epoch, header.seq).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The peer probed us from `from`: how many of its probes (from `epoch`) came this way.
    pub(super) fn peer_probe(&mut self, from: SocketAddr, epoch: u64) -> Option<u64> {
        let p = self.map.get_mut(&from)?;
        if p.peer_probe_epoch != epoch {
            p.peer_probe_epoch = epoch;
            p.peer_probes_rx = 0;
        }
        p.peer_probes_rx += 1;
        Some(p.peer_probes_rx)
    }

    /// True when `len` more bytes to `addr` stay within its budget (always, once validated).
    pub(super) fn within_budget(&self, addr: &SocketAddr, len: u64) -> bool {
        self.map.get(addr).is_some_and(|p| {
            p.validated || p.tx_bytes_unvalidated + len <= AMPLIFICATION_FACTOR * p.rx_bytes_total
        })
    }

    /// Counts `len` bytes sent to `addr`.
    pub(super) fn on_send(&mut self, addr: &SocketAddr, len: u64) {
        if let Some(p) = self.map.get_mut(addr) {
            if !p.validated {
                p.tx_bytes_unvalidated += len;
            }
            p.tx_packets += 1;
            p.tx_bytes += len;
        }
    }

    /// Forgets addresses silent for `forget`; returns when the next one could be forgotten.
    pub(super) fn forget_silent(&mut self, now: Instant, forget: Duration) -> Option<Instant> {
        self.map
            .retain(|_, p| now.saturating_duration_since(p.last_rx) < forget);
        self.map.values().map(|p| p.last_rx + forget).min()
    }

    /// Stats of the addresses heard from in the last minute, by address; an address is up
    /// while it was heard from within `fresh`.
    pub(super) fn stats(&self, now: Instant, fresh: Duration) -> Vec<PathStats> {
        let mut paths: Vec<PathStats> = self
            .map
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
        paths
    }
}
