//! One session as both roles hold it: our send sequence, the peer's epochs and windows, what
//! we sent when (to answer challenges), and a peer epoch waiting for its challenge. It owns
//! admission: whether a packet is delivered, held, challenged or dropped.

use std::time::{Duration, Instant};

use super::fresh::{Pending, SendHistory};
use super::packet::{Header, Response};
use super::peer::{EpochSlot, PeerReject, PeerWindows};

/// Why a packet of a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The replay window or the epoch tracking said no.
    Window(PeerReject),
    /// A copy of a packet already held for a pending challenge.
    HeldDuplicate,
    /// From yet another epoch while one is being challenged, or a CLOSE not from the
    /// current epoch.
    StaleEpoch,
}

/// What to do with an authenticated DATA packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it; `restarted` when it opened a new peer epoch after another one.
    Deliver { restarted: bool },
    /// Of the epoch being challenged: held until the answer comes (`held` false when the
    /// hold queue was full and it was dropped); `new_origin` when its origin had not sent
    /// anything of that epoch before.
    Hold { held: bool, new_origin: bool },
    /// A new peer epoch that must prove itself: held, and a challenge must go out now.
    Challenge,
    /// Refused.
    Drop(Refusal),
}

/// Packets a pending epoch held, released by the answer to its challenge.
#[derive(Debug)]
pub struct Released<O> {
    /// (payload, origin) of each packet to deliver, in arrival order.
    pub deliver: Vec<(Vec<u8>, O)>,
    /// Held packets the window refused (under the floor the answer set).
    pub refused: u64,
}

/// A session of either role; `O` is where packets come from (path index or bridge address).
#[derive(Debug)]
pub struct Session<O> {
    /// The session id.
    pub id: u64,
    /// Our next sequence number in this session.
    pub next_seq: u64,
    /// Last time anything was sent or delivered.
    pub last_active: Instant,
    /// The peer's epochs and windows.
    pub peer: PeerWindows,
    /// What we sent when (keyed mode: the answer to a challenge).
    pub history: SendHistory,
    /// Keyed mode: a new peer epoch waiting for its challenge to be answered.
    pub pending: Option<Pending<O>>,
}

impl<O: Copy + PartialEq> Session<O> {
    /// A new session with windows of `window` packets.
    pub fn new(id: u64, window: usize, now: Instant) -> Self {
        Session {
            id,
            next_seq: 1,
            last_active: now,
            peer: PeerWindows::new(window),
            history: SendHistory::default(),
            pending: None,
        }
    }

    /// Takes the next sequence number for a packet sent at `now`.
    pub fn next_send(&mut self, now: Instant) -> u64 {
        self.last_active = now;
        self.history.on_send(now, self.next_seq);
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The check made before paying for verification: refused copies cost no decryption.
    pub fn precheck(&self, header: &Header) -> Result<(), Refusal> {
        self.peer
            .check(header.epoch, header.seq)
            .map_err(Refusal::Window)?;
        match &self.pending {
            Some(p) if p.epoch == header.epoch && p.holds(header.seq) => {
                Err(Refusal::HeldDuplicate)
            }
            _ => Ok(()),
        }
    }

    /// Admission of an authenticated DATA packet from `origin`. With a key (`sealed`), a
    /// new peer epoch after a known one must answer a challenge first (a recorded packet
    /// authenticates as well as a fresh one); the first epoch of a session needs none, since
    /// the session id is new and no packet of it can predate the session. `nonce` draws the
    /// challenge's random value when one is needed.
    pub fn admit(
        &mut self,
        now: Instant,
        header: &Header,
        payload: &[u8],
        origin: O,
        sealed: bool,
        nonce: impl FnOnce() -> u128,
    ) -> Admit {
        let slot = match self.peer.check(header.epoch, header.seq) {
            Ok(s) => s,
            Err(r) => return Admit::Drop(Refusal::Window(r)),
        };
        let known_before = self.peer.current_epoch().is_some() || self.peer.has_previous();
        if slot == EpochSlot::New && sealed && known_before {
            return match &mut self.pending {
                Some(p) if p.epoch != header.epoch => Admit::Drop(Refusal::StaleEpoch),
                Some(p) => Admit::Hold {
                    held: p.hold(header.seq, payload, origin),
                    new_origin: p.note_origin(origin),
                },
                None => {
                    let mut p = Pending::new(header.epoch, nonce(), now);
                    p.hold(header.seq, payload, origin);
                    p.note_origin(origin);
                    self.pending = Some(p);
                    Admit::Challenge
                }
            };
        }
        self.peer.commit(slot, header.epoch, header.seq);
        self.last_active = now;
        Admit::Deliver {
            restarted: slot == EpochSlot::New && self.peer.has_previous(),
        }
    }

    /// Takes the pending epoch if `r`, from a packet of peer epoch `from_epoch`, answers its
    /// challenge.
    pub fn take_answered(&mut self, r: &Response, from_epoch: u64) -> Option<Pending<O>> {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.answered_by(r, from_epoch))
        {
            self.pending.take()
        } else {
            None
        }
    }

    /// Admits the answered epoch of `p` with every sequence below `floor` refused, and
    /// releases what it held. Returns whether an epoch was known before (a restart).
    pub fn admit_answered(&mut self, p: Pending<O>, floor: u64) -> (bool, Released<O>) {
        let restarted = self.peer.current_epoch().is_some() || self.peer.has_previous();
        self.peer.admit_epoch(p.epoch, floor);
        let mut out = Released {
            deliver: Vec::new(),
            refused: 0,
        };
        for (seq, data, origin) in p.held {
            match self.peer.accept(p.epoch, seq) {
                Ok(_) => out.deliver.push((data, origin)),
                Err(_) => out.refused += 1,
            }
        }
        (restarted, out)
    }

    /// The answer to a challenge about this session: the first sequence we sent after the
    /// challenger started (what we sent before may have reached its previous instance).
    /// The challenge says how long the challenger has run (`uptime_us`) when it sent it; it
    /// took about half a round trip to come, and our packets about as long to reach the
    /// challenger, so `rtt` is taken off too. The caller passes the round-trip time it
    /// measured, or zero when it measures none (its floor then sits up to one round trip
    /// late: it refuses a few fresh packets, never admits an old one).
    pub fn fresh_from(&self, now: Instant, uptime_us: u64, rtt: Duration, start: Instant) -> u64 {
        let back = Duration::from_micros(uptime_us) + rtt;
        let since = now.checked_sub(back).unwrap_or(start);
        self.history.first_sent_since(since, self.next_seq)
    }

    /// A CLOSE from the peer: accepted only from its current epoch, once.
    pub fn accept_close(&mut self, header: &Header) -> Result<(), Refusal> {
        if self.peer.current_epoch() != Some(header.epoch) {
            return Err(Refusal::StaleEpoch);
        }
        self.peer
            .accept(header.epoch, header.seq)
            .map(|_| ())
            .map_err(Refusal::Window)
    }
}

/// The keys of the sessions idle at `now`, and when the first of the others could expire
/// (the next sweep is due then: `last_active` only moves forward).
pub fn idle_sessions<'a, K: Copy + 'a, O: 'a>(
    sessions: impl Iterator<Item = (&'a K, &'a Session<O>)>,
    now: Instant,
    idle: Duration,
) -> (Vec<K>, Option<Instant>) {
    let mut expired = Vec::new();
    let mut next: Option<Instant> = None;
    for (k, s) in sessions {
        if now.saturating_duration_since(s.last_active) >= idle {
            expired.push(*k);
        } else {
            let at = s.last_active + idle;
            next = Some(next.map_or(at, |t| t.min(at)));
        }
    }
    (expired, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::{Challenge, PacketType};

    fn data(epoch: u64, seq: u64) -> Header {
        Header {
            ptype: PacketType::Data,
            flags: 0,
            session: 5,
            epoch,
            seq,
        }
    }

    #[test]
    fn first_epoch_is_free_a_later_one_is_challenged() {
        let t0 = Instant::now();
        let mut s: Session<usize> = Session::new(5, 64, t0);
        let d = s.admit(t0, &data(10, 1), b"a", 0, true, || 7);
        assert_eq!(d, Admit::Deliver { restarted: false });
        assert_eq!(
            s.admit(t0, &data(10, 1), b"a", 1, true, || 7),
            Admit::Drop(Refusal::Window(PeerReject::Window(
                crate::protocol::window::Reject::Duplicate
            )))
        );
        // The peer restarted: held and challenged, further copies held, then answered.
        assert_eq!(
            s.admit(t0, &data(20, 1), b"b", 0, true, || 7),
            Admit::Challenge
        );
        assert_eq!(s.precheck(&data(20, 1)), Err(Refusal::HeldDuplicate));
        assert_eq!(
            s.admit(t0, &data(20, 2), b"c", 1, true, || 8),
            Admit::Hold {
                held: true,
                new_origin: true
            }
        );
        assert_eq!(
            s.admit(t0, &data(30, 1), b"x", 1, true, || 9),
            Admit::Drop(Refusal::StaleEpoch)
        );
        let r = Response {
            challenge: Challenge {
                session: 5,
                epoch: 20,
                nonce: 7,
                uptime_us: 0,
            },
            fresh_from: 2,
        };
        assert!(s.take_answered(&r, 21).is_none(), "from another epoch");
        let p = s.take_answered(&r, 20).expect("answers");
        let (restarted, rel) = s.admit_answered(p, r.fresh_from);
        assert!(restarted);
        // Sequence 1 is under the floor the answer set; 2 is released.
        assert_eq!(rel.refused, 1);
        assert_eq!(rel.deliver, vec![(b"c".to_vec(), 1)]);
    }

    #[test]
    fn plaintext_new_epochs_are_delivered_at_once() {
        let t0 = Instant::now();
        let mut s: Session<usize> = Session::new(5, 64, t0);
        s.admit(t0, &data(10, 1), b"a", 0, false, || 0);
        assert_eq!(
            s.admit(t0, &data(20, 1), b"b", 0, false, || 0),
            Admit::Deliver { restarted: true }
        );
    }

    #[test]
    fn close_only_from_the_current_epoch() {
        let t0 = Instant::now();
        let mut s: Session<usize> = Session::new(5, 64, t0);
        s.admit(t0, &data(10, 1), b"a", 0, false, || 0);
        assert_eq!(s.accept_close(&data(11, 2)), Err(Refusal::StaleEpoch));
        assert_eq!(s.accept_close(&data(10, 2)), Ok(()));
        assert!(s.accept_close(&data(10, 2)).is_err());
    }
}
