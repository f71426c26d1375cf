//! Freshness in the keyed mode. A packet recorded earlier still authenticates later, so a
//! new peer epoch (or, on the server, an unknown session) is admitted only after the peer
//! answers a CHALLENGE, proving it holds the key now under that epoch. Packets that arrive
//! meanwhile wait in a small queue and are released when the answer comes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most packets held per pending epoch.
pub const HOLD_MAX: usize = 64;
/// Interval between challenge retries.
pub const CHALLENGE_RETRY: Duration = Duration::from_millis(200);
/// Challenges sent before the held packets are given up.
pub const CHALLENGE_TRIES: u32 = 5;
/// How far back a responder counts its sends as possibly still in flight.
pub const FRESH_HORIZON: Duration = Duration::from_secs(2);
const HISTORY: usize = 8;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A peer epoch waiting for its challenge to be answered.
#[derive(Debug)]
pub struct Pending {
    /// The epoch being checked.
    pub epoch: u64,
    /// The random value the response must echo.
    pub nonce: u128,
    /// Authenticated packets waiting: (sequence, payload, where it came from).
    pub held: Vec<(u64, Vec<u8>, SocketAddr)>,
    /// When to send the challenge again.
    pub next_try: Instant,
    /// Challenges sent so far.
    pub tries: u32,
}

impl Pending {
    /// A new pending epoch; the caller sends the first challenge now.
    pub fn new(epoch: u64, nonce: u128, now: Instant) -> Pending {
        Pending {
            epoch,
            nonce,
            held: Vec::new(),
            next_try: now + CHALLENGE_RETRY,
            tries: 1,
        }
    }

    /// True if a packet with `seq` is already held (a duplicate copy).
    pub fn holds(&self, seq: u64) -> bool {
        self.held.iter().any(|(s, _, _)| *s == seq)
    }

    /// Holds a packet; false (dropped) when the queue is full.
    pub fn hold(&mut self, seq: u64, payload: &[u8], from: SocketAddr) -> bool {
        if self.held.len() >= HOLD_MAX {
            return false;
        }
        self.held.push((seq, payload.to_vec(), from));
        true
    }
}

/// Coarse record of which sequence numbers were sent when, to answer "which of my packets
/// could still be in flight" in a RESPONSE.
#[derive(Clone, Debug, Default)]
pub struct SendHistory {
    samples: [Option<(Instant, u64)>; HISTORY],
    next: usize,
}

impl SendHistory {
    /// Records that `seq` is being sent at `now` (sampled every 250 ms).
    pub fn on_send(&mut self, now: Instant, seq: u64) {
        let last = self.samples[(self.next + HISTORY - 1) % HISTORY];
        if last.is_some_and(|(t, _)| now.saturating_duration_since(t) < SAMPLE_EVERY) {
            return;
        }
        self.samples[self.next] = Some((now, seq));
        self.next = (self.next + 1) % HISTORY;
    }

    /// The lowest sequence sent within the horizon, or `next_seq` if nothing was.
    pub fn fresh_from(&self, now: Instant, next_seq: u64) -> u64 {
        self.samples
            .iter()
            .flatten()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= FRESH_HORIZON)
            .map(|(_, s)| *s)
            .min()
            .unwrap_or(next_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reports_the_oldest_recent_send() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        assert_eq!(h.fresh_from(t0, 1), 1);
        for i in 0..40u64 {
            h.on_send(t0 + Duration::from_millis(100 * i), 10 + i);
        }
        let now = t0 + Duration::from_millis(3900);
        let f = h.fresh_from(now, 50);
        // Sends from the last ~2 s (3.9 s - 2 s = 1.9 s, i.e. seq ~29), sampled every 250 ms.
        assert!((29..=32).contains(&f), "{f}");
        assert_eq!(h.fresh_from(now + Duration::from_secs(10), 50), 50);
    }

    #[test]
    fn hold_is_bounded_and_dedups() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut p = Pending::new(1, 2, Instant::now());
        for s in 0..HOLD_MAX as u64 {
            assert!(p.hold(s, b"x", a));
        }
        assert!(!p.hold(999, b"x", a));
        assert!(p.holds(3));
        assert!(!p.holds(999));
    }
}
