//! Freshness. With a key, a packet recorded earlier still authenticates later, so a peer
//! epoch the receiver does not know is admitted only after the peer answers a CHALLENGE,
//! proving it holds the key now under that epoch; without one, a client still checks that a
//! new server epoch answers (return routability). Packets that arrive meanwhile wait in a
//! queue bounded in packets and bytes and are released when the answer comes. The answer
//! says which of the peer's packets are fresh, from the record of what it sent when.

use std::time::{Duration, Instant};

use super::packet::{Challenge, Response};

/// Most packets held per pending epoch.
pub const HOLD_MAX: usize = 1024;
/// Most payload bytes held per pending epoch.
pub const HOLD_MAX_BYTES: usize = 1 << 20;
/// Interval between challenge retries (short: a lost challenge delays the whole session).
pub const CHALLENGE_RETRY: Duration = Duration::from_millis(50);
/// Challenges sent (per address) before the held packets are given up (about 1 s).
pub const CHALLENGE_TRIES: u32 = 20;
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Samples kept: at one per 10 ms of sending, at least 163 s of history.
const HISTORY: usize = 16_384;

/// A peer epoch waiting for its challenge to be answered. `O` says where a packet came from:
/// a path index on the client, a bridge address on the server.
#[derive(Debug)]
pub struct Pending<O> {
    /// The epoch being checked.
    pub epoch: u64,
    /// The random value the response must echo.
    pub nonce: u128,
    /// Authenticated packets waiting: (sequence, payload, where it came from).
    pub held: Vec<(u64, Vec<u8>, O)>,
    /// When to send the challenge again.
    pub next_try: Instant,
    /// Challenges sent so far.
    pub tries: u32,
    /// Payload bytes held.
    pub held_bytes: usize,
    /// Where packets of this epoch came from (a server challenges each).
    pub origins: Vec<O>,
}

/// What to do about a pending challenge when its timer comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Not due yet.
    Wait,
    /// Send the challenge again (counted as a try).
    Resend,
    /// Too many tries: give up, dropping what is held.
    GiveUp,
}

/// Most origins noted per pending epoch (a server challenges each of them).
const ORIGINS_MAX: usize = 8;

impl<O: Copy + PartialEq> Pending<O> {
    /// A new pending epoch; the caller sends the first challenge now.
    pub fn new(epoch: u64, nonce: u128, now: Instant) -> Pending<O> {
        Pending {
            epoch,
            nonce,
            held: Vec::new(),
            next_try: now + CHALLENGE_RETRY,
            tries: 1,
            held_bytes: 0,
            origins: Vec::new(),
        }
    }

    /// Notes an origin packets of this epoch came from; true if it is new (challenge it).
    pub fn note_origin(&mut self, o: O) -> bool {
        if self.origins.contains(&o) || self.origins.len() >= ORIGINS_MAX {
            return false;
        }
        self.origins.push(o);
        true
    }

    /// True if a packet with `seq` is already held (a duplicate copy).
    pub fn holds(&self, seq: u64) -> bool {
        self.held.iter().any(|(s, _, _)| *s == seq)
    }

    /// Holds a packet; false (dropped) when the queue is full, in packets or in bytes.
    pub fn hold(&mut self, seq: u64, payload: &[u8], from: O) -> bool {
        if self.held.len() >= HOLD_MAX || self.held_bytes + payload.len() > HOLD_MAX_BYTES {
            return false;
        }
        self.held_bytes += payload.len();
        self.held.push((seq, payload.to_vec(), from));
        true
    }

    /// The challenge about this pending epoch (brought by `session`): `age_us` is how far back
    /// the challenger may have accepted packets of that epoch.
    pub fn challenge(&self, session: u64, age_us: u64) -> Challenge {
        Challenge {
            session,
            epoch: self.epoch,
            nonce: self.nonce,
            age_us,
        }
    }

    /// True when `r` (in a packet from peer epoch `from_epoch`) answers this challenge.
    pub fn answered_by(&self, r: &Response, from_epoch: u64) -> bool {
        self.nonce == r.challenge.nonce
            && self.epoch == r.challenge.epoch
            && from_epoch == self.epoch
    }

    /// Whether the challenge is due again at `now`; a `Resend` counts as a try.
    pub fn poll_retry(&mut self, now: Instant) -> Retry {
        if now < self.next_try {
            return Retry::Wait;
        }
        if self.tries >= CHALLENGE_TRIES {
            return Retry::GiveUp;
        }
        self.tries += 1;
        self.next_try = now + CHALLENGE_RETRY;
        Retry::Resend
    }
}

/// Record of which sequence numbers were sent when (sampled every 10 ms of sending, 16,384
/// samples deep), to answer a challenge with the first sequence sent within its age.
#[derive(Clone, Debug, Default)]
pub struct SendHistory {
    samples: Box<[(Instant, u64)]>,
    len: usize,
    next: usize,
}

impl SendHistory {
    /// Records that `seq` is being sent at `now`.
    pub fn on_send(&mut self, now: Instant, seq: u64) {
        if self.samples.is_empty() {
            self.samples = vec![(now, 0); HISTORY].into_boxed_slice();
        }
        if self.len > 0 {
            let last = self.samples[(self.next + HISTORY - 1) % HISTORY];
            if now.saturating_duration_since(last.0) < SAMPLE_EVERY {
                return;
            }
        }
        self.samples[self.next] = (now, seq);
        self.next = (self.next + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);
    }

    /// The first sequence known to be sent at or after `since` (`next_seq` if none was):
    /// packets below it may have reached the challenger already. It errs toward refusing:
    /// between two samples it rounds up, and when the record does not reach back to
    /// `since` it gives its oldest sample, so a packet sent before that is never called
    /// fresh.
    pub fn first_sent_since(&self, since: Instant, next_seq: u64) -> u64 {
        let oldest = (self.next + HISTORY - self.len) % HISTORY;
        for k in 0..self.len {
            let (t, s) = self.samples[(oldest + k) % HISTORY];
            if t >= since {
                return s;
            }
        }
        next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_answers_first_send_since() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        assert_eq!(h.first_sent_since(t0, 1), 1);
        for i in 0..100u64 {
            h.on_send(t0 + Duration::from_millis(10 * i), 1 + i);
        }
        // Everything since the start.
        assert_eq!(h.first_sent_since(t0, 101), 1);
        assert_eq!(h.first_sent_since(t0 - Duration::from_secs(5), 101), 1);
        // Exactly on a sample, and between samples (rounded up: never a packet sent before).
        assert_eq!(h.first_sent_since(t0 + Duration::from_millis(500), 101), 51);
        assert_eq!(h.first_sent_since(t0 + Duration::from_millis(505), 101), 52);
        // After the last send: nothing sent since.
        assert_eq!(h.first_sent_since(t0 + Duration::from_secs(2), 101), 101);
        // A long run: the record reaches back HISTORY samples only, and answers with the
        // oldest it has (a packet sent before it is never fresh).
        let n = HISTORY as u64 + 1000;
        for i in 100..n {
            h.on_send(t0 + Duration::from_millis(10 * i), 1 + i);
        }
        assert_eq!(h.first_sent_since(t0, n + 1), n - HISTORY as u64 + 1);
    }

    #[test]
    fn hold_is_bounded_and_dedups() {
        let a = 7usize;
        let mut p = Pending::new(1, 2, Instant::now());
        for s in 0..HOLD_MAX as u64 {
            assert!(p.hold(s, b"x", a));
        }
        assert!(!p.hold(99_999, b"x", a));
        let mut p = Pending::new(1, 2, Instant::now());
        let big = vec![0u8; HOLD_MAX_BYTES / 2];
        assert!(p.hold(1, &big, a) && p.hold(2, &big, a));
        assert!(!p.hold(3, b"one more byte", a), "bounded in bytes");
        assert!(p.holds(2));
        assert!(!p.holds(3));
    }

    #[test]
    fn retries_then_gives_up() {
        let t0 = Instant::now();
        let mut p: Pending<usize> = Pending::new(1, 2, t0);
        assert_eq!(p.poll_retry(t0), Retry::Wait);
        let mut t = t0;
        for _ in 1..CHALLENGE_TRIES {
            t += CHALLENGE_RETRY;
            assert_eq!(p.poll_retry(t), Retry::Resend);
        }
        assert_eq!(p.poll_retry(t + CHALLENGE_RETRY), Retry::GiveUp);
        assert_eq!(p.challenge(9, 5).nonce, 2);
    }
}
