//! The server's table of bridge addresses: which answered their validation probe, what an
//! unvalidated one may still be sent (anti-amplification), what arrived from each (for the
//! acks) and its counters.
//!
//! Validated addresses and unvalidated ones are bounded apart: a flood of new source ports
//! fills only the unvalidated tier, whose oldest entry goes first (in constant time), and
//! never evicts an address that answered.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::packet::Header;
use crate::protocol::path::{AckCounts, PathStats, PeerCounts, CONTROL_WINDOW};
use crate::protocol::peer::{PeerReject, PeerWindows};

/// An unvalidated address gets at most this many times the bytes it sent us (as in QUIC).
const AMPLIFICATION_FACTOR: u64 = 3;
/// Interval between validation probes to an address that has not answered.
pub(super) const VALIDATION_RETRY: Duration = Duration::from_millis(250);
/// Most unvalidated addresses held at once.
const UNVALIDATED_MAX: usize = 4096;

/// One bridge address.
#[derive(Debug)]
pub(super) struct Bridge {
    pub(super) validated: bool,
    /// The token its validation probe carries (unpredictable).
    token: u64,
    next_validation: Instant,
    pub(super) last_rx: Instant,
    rx_bytes_total: u64,
    tx_bytes_unvalidated: u64,
    /// What arrived from the client's epoch over this address, for the acks.
    peer_counts: PeerCounts,
    /// Dedup of control packets from this address, for epochs the server keeps no state of.
    control: PeerWindows,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

/// The bridge addresses heard from.
#[derive(Debug)]
pub(super) struct Bridges {
    map: HashMap<SocketAddr, Bridge>,
    /// Unvalidated addresses, oldest first (an entry validated or forgotten since is
    /// skipped when its turn comes).
    unvalidated: VecDeque<SocketAddr>,
    validated: usize,
    max_validated: usize,
}

impl Bridges {
    pub(super) fn new(max_validated: usize) -> Self {
        Bridges {
            map: HashMap::new(),
            unvalidated: VecDeque::new(),
            validated: 0,
            max_validated,
        }
    }

    pub(super) fn get(&self, a: &SocketAddr) -> Option<&Bridge> {
        self.map.get(a)
    }

    /// True once `a` answered its validation probe.
    pub(super) fn is_validated(&self, a: &SocketAddr) -> bool {
        self.map.get(a).is_some_and(|b| b.validated)
    }

    /// An authenticated packet of `len` bytes arrived from `from`; a new address gets an
    /// entry (with a `token` drawn for its validation probe) in the unvalidated tier. True
    /// if the address is new.
    pub(super) fn touch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        token: impl FnOnce() -> u64,
    ) -> bool {
        let new = !self.map.contains_key(&from);
        if new {
            self.make_room();
            self.map.insert(
                from,
                Bridge {
                    validated: false,
                    token: token(),
                    next_validation: now,
                    last_rx: now,
                    rx_bytes_total: 0,
                    tx_bytes_unvalidated: 0,
                    peer_counts: PeerCounts::default(),
                    control: PeerWindows::new(CONTROL_WINDOW),
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                },
            );
            self.unvalidated.push_back(from);
        }
        if let Some(p) = self.map.get_mut(&from) {
            p.last_rx = now;
            p.rx_packets += 1;
            p.rx_bytes += len as u64;
            p.rx_bytes_total += len as u64;
        }
        new
    }

    /// Makes room for one more unvalidated address: the oldest unvalidated one goes.
    fn make_room(&mut self) {
        while self.unvalidated.len() >= UNVALIDATED_MAX {
            let Some(old) = self.unvalidated.pop_front() else {
                return;
            };
            if self.map.get(&old).is_some_and(|b| !b.validated) {
                self.map.remove(&old);
                return;
            }
        }
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
        for a in &self.unvalidated {
            let Some(p) = self.map.get(a) else { continue };
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

    /// A probe ack from `from` echoing `token`: the address answered, so it is validated
    /// (while the validated tier has room).
    pub(super) fn on_ack_token(&mut self, from: SocketAddr, token: u64) -> bool {
        if self.validated >= self.max_validated {
            return false;
        }
        match self.map.get_mut(&from) {
            Some(p) if !p.validated && token == p.token => {
                p.validated = true;
                self.validated += 1;
                true
            }
            _ => false,
        }
    }

    /// Dedup of a control packet from `from`, for an epoch the server keeps no state of.
    pub(super) fn control_fresh(
        &mut self,
        from: SocketAddr,
        header: &Header,
    ) -> Result<(), PeerReject> {
        match self.map.get_mut(&from) {
            Some(p) => p.control.accept(header.epoch, header.seq).map(|_| ()),
            None => Ok(()),
        }
    }

    /// A DATA copy of the client's `epoch` arrived from `from`; `duplicate` is its length
    /// if it will not be acted on (another path delivered it first), which counts toward
    /// the address's anti-amplification budget only.
    pub(super) fn on_data(&mut self, from: &SocketAddr, epoch: u64, duplicate: usize) {
        if let Some(p) = self.map.get_mut(from) {
            p.peer_counts.on_data(epoch);
            if !p.validated {
                p.rx_bytes_total += duplicate as u64;
            }
        }
    }

    /// The client probed us from `from`: (probes, DATA copies) of its `epoch` that came this
    /// way, for the ack.
    pub(super) fn peer_probe(&mut self, from: &SocketAddr, epoch: u64) -> Option<AckCounts> {
        Some(self.map.get_mut(from)?.peer_counts.on_probe(epoch))
    }

    /// A DATA copy for client epoch `epoch` goes to `addr` (for the acks' `data_sent`).
    pub(super) fn on_data_sent(&mut self, addr: &SocketAddr, epoch: u64) {
        if let Some(p) = self.map.get_mut(addr) {
            p.peer_counts.on_data_sent(epoch);
        }
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
        let before = self.map.len();
        let mut validated_gone = 0;
        self.map.retain(|_, p| {
            let keep = now.saturating_duration_since(p.last_rx) < forget;
            if !keep && p.validated {
                validated_gone += 1;
            }
            keep
        });
        if self.map.len() != before {
            self.validated -= validated_gone;
            let map = &self.map;
            self.unvalidated
                .retain(|a| map.get(a).is_some_and(|b| !b.validated));
        }
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
                    // Until it answers a validation probe, replies to it are capped at 3×
                    // what it sent (anti-amplification).
                    flags: if p.validated { "" } else { "unvalidated" }.to_string(),
                    ..PathStats::default()
                }
            })
            .collect();
        paths.sort_by(|a, b| a.name.cmp(&b.name));
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_flood_of_new_ports_never_evicts_a_validated_address() {
        let t0 = Instant::now();
        let mut b = Bridges::new(16);
        b.touch(t0, addr(1), 100, || 7);
        assert!(!b.is_validated(&addr(1)));
        assert!(!b.on_ack_token(addr(1), 8), "wrong token");
        assert!(b.on_ack_token(addr(1), 7));
        for port in 2..20_000u16 {
            b.touch(t0, addr(port), 40, || u64::from(port));
        }
        assert!(b.is_validated(&addr(1)));
        assert!(b.map.len() <= UNVALIDATED_MAX + 1, "{}", b.map.len());
        // The newest unvalidated ones are there, the oldest went.
        assert!(b.get(&addr(19_999)).is_some());
        assert!(b.get(&addr(2)).is_none());
    }

    #[test]
    fn unvalidated_addresses_get_at_most_three_times_what_they_sent() {
        let t0 = Instant::now();
        let mut b = Bridges::new(16);
        b.touch(t0, addr(1), 100, || 7);
        assert!(b.within_budget(&addr(1), 300));
        b.on_send(&addr(1), 250);
        assert!(!b.within_budget(&addr(1), 100));
        b.on_ack_token(addr(1), 7);
        assert!(b.within_budget(&addr(1), 1 << 20));
        assert!(!b.within_budget(&addr(2), 1), "unknown address");
    }
}
