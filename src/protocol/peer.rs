//! Receive state for a peer: its epochs and their replay windows, and (for a client's view
//! of its server) admission of a new epoch after a challenge.

use std::time::Instant;

use super::fresh::Pending;
use super::packet::{Header, Response};
use super::window::{Reject, ReplayWindow};

/// Which window a packet falls into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochSlot {
    /// The peer's current epoch.
    Current,
    /// The epoch before it: copies still in flight on slower paths.
    Previous,
    /// An epoch we have not seen: the peer restarted (or this is the first packet).
    New,
}

/// Why a packet was refused by the epoch/window check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerReject {
    /// Window said no.
    Window(Reject),
    /// From an epoch older than the previous one: never go back.
    RetiredEpoch,
}

const RETIRED: usize = 4;

/// Current and previous peer epoch with one replay window each, plus a few retired epochs
/// that are refused outright so an old epoch's stragglers can never flip the state back.
#[derive(Clone, Debug)]
pub struct PeerWindows {
    current: Option<(u64, ReplayWindow)>,
    previous: Option<(u64, ReplayWindow)>,
    retired: [u64; RETIRED],
    retired_next: usize,
    window_size: usize,
}

impl PeerWindows {
    /// No epoch seen yet; windows of `window_size` packets.
    pub fn new(window_size: usize) -> Self {
        PeerWindows {
            current: None,
            previous: None,
            retired: [0; RETIRED],
            retired_next: 0,
            window_size,
        }
    }

    /// The peer's current epoch, if any packet was accepted.
    pub fn current_epoch(&self) -> Option<u64> {
        self.current.as_ref().map(|(e, _)| *e)
    }

    /// True when an epoch before the current one is remembered (the peer restarted).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some() || self.retired.iter().any(|&e| e != 0)
    }

    /// Checks a packet without changing state.
    pub fn check(&self, epoch: u64, seq: u64) -> Result<EpochSlot, PeerReject> {
        if let Some((e, w)) = &self.current {
            if *e == epoch {
                return w
                    .check(seq)
                    .map(|_| EpochSlot::Current)
                    .map_err(PeerReject::Window);
            }
        }
        if let Some((e, w)) = &self.previous {
            if *e == epoch {
                return w
                    .check(seq)
                    .map(|_| EpochSlot::Previous)
                    .map_err(PeerReject::Window);
            }
        }
        if epoch == 0 || self.retired.contains(&epoch) {
            return Err(PeerReject::RetiredEpoch);
        }
        Ok(EpochSlot::New)
    }

    /// Records a packet that passed [`check`](Self::check) (and authenticated).
    pub fn commit(&mut self, slot: EpochSlot, epoch: u64, seq: u64) {
        match slot {
            EpochSlot::Current => {
                if let Some((_, w)) = &mut self.current {
                    w.commit(seq);
                }
            }
            EpochSlot::Previous => {
                if let Some((_, w)) = &mut self.previous {
                    w.commit(seq);
                }
            }
            EpochSlot::New => {
                // Reuse the oldest window's memory for the new epoch.
                let recycled = self.previous.take();
                if let Some((old, _)) = &recycled {
                    self.retire(*old);
                }
                self.previous = self.current.take();
                let mut w = match recycled {
                    Some((_, w)) => {
                        let mut w = w;
                        w.reset();
                        w
                    }
                    None => ReplayWindow::new(self.window_size),
                };
                w.commit(seq);
                self.current = Some((epoch, w));
            }
        }
    }

    /// Admits a new epoch (after a challenge) with a window that refuses every sequence below
    /// `floor`; the previous epoch's window is kept as with any new epoch.
    pub fn admit_epoch(&mut self, epoch: u64, floor: u64) {
        let recycled = self.previous.take();
        if let Some((old, _)) = &recycled {
            self.retire(*old);
        }
        self.previous = self.current.take();
        let mut w = match recycled {
            Some((_, w)) => w,
            None => ReplayWindow::new(self.window_size),
        };
        w.reset_to_floor(floor);
        self.current = Some((epoch, w));
    }

    /// The current epoch and the highest sequence accepted in it.
    pub fn current(&self) -> Option<(u64, u64)> {
        self.current
            .as_ref()
            .and_then(|(e, w)| w.highest().map(|h| (*e, h)))
    }

    /// `check` then `commit`.
    pub fn accept(&mut self, epoch: u64, seq: u64) -> Result<EpochSlot, PeerReject> {
        let slot = self.check(epoch, seq)?;
        self.commit(slot, epoch, seq);
        Ok(slot)
    }

    /// The peer told us (CLOSE) it dropped its state: its next epoch will be new anyway, and
    /// the current one must not come back.
    pub fn close_current(&mut self) {
        if let Some((e, _)) = self.current.take() {
            self.retire(e);
        }
        if let Some((e, _)) = self.previous.take() {
            self.retire(e);
        }
    }

    fn retire(&mut self, epoch: u64) {
        self.retired[self.retired_next] = epoch;
        self.retired_next = (self.retired_next + 1) % RETIRED;
    }
}

/// Why a packet was refused by admission.
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

/// A peer as a client sees its server: the server's epochs and their windows, and a new
/// server epoch waiting for its challenge to be answered. `O` is what a held packet needs to
/// be delivered later (the session it belongs to).
#[derive(Debug)]
pub struct Peer<O> {
    /// The peer's epochs and windows.
    pub windows: PeerWindows,
    /// A new peer epoch waiting for its challenge to be answered.
    pub pending: Option<Pending<O>>,
}

impl<O: Copy + PartialEq> Peer<O> {
    /// No epoch seen yet; windows of `window` packets.
    pub fn new(window: usize) -> Self {
        Peer {
            windows: PeerWindows::new(window),
            pending: None,
        }
    }

    /// The check made before paying for verification: refused copies cost no decryption.
    pub fn precheck(&self, header: &Header) -> Result<(), Refusal> {
        self.windows
            .check(header.epoch, header.seq)
            .map_err(Refusal::Window)?;
        match &self.pending {
            Some(p) if p.epoch == header.epoch && p.holds(header.seq) => {
                Err(Refusal::HeldDuplicate)
            }
            _ => Ok(()),
        }
    }

    /// Admission of an authenticated packet. The first epoch is admitted at once: the
    /// packets are for sessions of ours, which no packet can predate. A later epoch (the
    /// peer restarted) must answer a challenge first: with a key, because a recorded packet
    /// authenticates as well as a fresh one; without, so that an epoch forged by someone who
    /// cannot receive the answer never replaces the real one. `nonce` draws the challenge's
    /// random value when one is needed.
    pub fn admit(
        &mut self,
        header: &Header,
        payload: &[u8],
        origin: O,
        now: Instant,
        nonce: impl FnOnce() -> u128,
    ) -> Admit {
        let slot = match self.windows.check(header.epoch, header.seq) {
            Ok(s) => s,
            Err(r) => return Admit::Drop(Refusal::Window(r)),
        };
        let known_before = self.windows.current_epoch().is_some() || self.windows.has_previous();
        if slot == EpochSlot::New && known_before {
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
        self.windows.commit(slot, header.epoch, header.seq);
        Admit::Deliver {
            restarted: slot == EpochSlot::New && self.windows.has_previous(),
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
        let restarted = self.windows.current_epoch().is_some() || self.windows.has_previous();
        self.windows.admit_epoch(p.epoch, floor);
        let mut out = Released {
            deliver: Vec::new(),
            refused: 0,
        };
        for (seq, data, origin) in p.held {
            match self.windows.accept(p.epoch, seq) {
                Ok(_) => out.deliver.push((data, origin)),
                Err(_) => out.refused += 1,
            }
        }
        (restarted, out)
    }

    /// A CLOSE: accepted only from the current epoch, once.
    pub fn accept_close(&mut self, header: &Header) -> Result<(), Refusal> {
        if self.windows.current_epoch() != Some(header.epoch) {
            return Err(Refusal::StaleEpoch);
        }
        self.windows
            .accept(header.epoch, header.seq)
            .map(|_| ())
            .map_err(Refusal::Window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::{Challenge, PacketType};

    fn data(epoch: u64, seq: u64) -> Header {
        Header {
            ptype: PacketType::Data,
            flags: 0,
            path: 0,
            session: 5,
            epoch,
            seq,
        }
    }

    #[test]
    fn first_epoch_is_free_a_later_one_is_challenged() {
        let t0 = Instant::now();
        let mut s: Peer<usize> = Peer::new(64);
        let d = s.admit(&data(10, 1), b"a", 0, t0, || 7);
        assert_eq!(d, Admit::Deliver { restarted: false });
        assert_eq!(
            s.admit(&data(10, 1), b"a", 1, t0, || 7),
            Admit::Drop(Refusal::Window(PeerReject::Window(
                crate::protocol::window::Reject::Duplicate
            )))
        );
        // The peer restarted: held and challenged, further copies held, then answered.
        assert_eq!(s.admit(&data(20, 1), b"b", 0, t0, || 7), Admit::Challenge);
        assert_eq!(s.precheck(&data(20, 1)), Err(Refusal::HeldDuplicate));
        assert_eq!(
            s.admit(&data(20, 2), b"c", 1, t0, || 8),
            Admit::Hold {
                held: true,
                new_origin: true
            }
        );
        assert_eq!(
            s.admit(&data(30, 1), b"x", 1, t0, || 9),
            Admit::Drop(Refusal::StaleEpoch)
        );
        let r = Response {
            challenge: Challenge {
                session: 5,
                epoch: 20,
                nonce: 7,
                age_us: 0,
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
    fn a_new_epoch_is_challenged_with_or_without_a_key() {
        let t0 = Instant::now();
        let mut s: Peer<usize> = Peer::new(64);
        s.admit(&data(10, 1), b"a", 0, t0, || 0);
        assert_eq!(s.admit(&data(20, 1), b"b", 0, t0, || 0), Admit::Challenge);
        // The real epoch goes on meanwhile.
        assert_eq!(
            s.admit(&data(10, 2), b"c", 0, t0, || 0),
            Admit::Deliver { restarted: false }
        );
    }

    #[test]
    fn close_only_from_the_current_epoch() {
        let t0 = Instant::now();
        let mut s: Peer<usize> = Peer::new(64);
        s.admit(&data(10, 1), b"a", 0, t0, || 0);
        assert_eq!(s.accept_close(&data(11, 2)), Err(Refusal::StaleEpoch));
        assert_eq!(s.accept_close(&data(10, 2)), Ok(()));
        assert!(s.accept_close(&data(10, 2)).is_err());
    }

    #[test]
    fn new_epoch_starts_fresh_and_old_copies_still_dedup() {
        let mut p = PeerWindows::new(64);
        assert_eq!(p.accept(10, 500), Ok(EpochSlot::New));
        assert_eq!(p.accept(10, 501), Ok(EpochSlot::Current));
        assert_eq!(
            p.accept(10, 501),
            Err(PeerReject::Window(Reject::Duplicate))
        );
        // Peer restarts: sequence numbers start low again.
        assert_eq!(p.accept(20, 1), Ok(EpochSlot::New));
        assert_eq!(p.current_epoch(), Some(20));
        // A straggler of the old epoch on a slow path: accepted once, deduped, no flip back.
        assert_eq!(p.accept(10, 502), Ok(EpochSlot::Previous));
        assert_eq!(
            p.accept(10, 502),
            Err(PeerReject::Window(Reject::Duplicate))
        );
        assert_eq!(
            p.accept(10, 501),
            Err(PeerReject::Window(Reject::Duplicate))
        );
        assert_eq!(p.current_epoch(), Some(20));
        // Two restarts later the first epoch is refused outright.
        assert_eq!(p.accept(30, 1), Ok(EpochSlot::New));
        assert_eq!(p.accept(10, 503), Err(PeerReject::RetiredEpoch));
        assert_eq!(p.accept(20, 2), Ok(EpochSlot::Previous));
    }

    #[test]
    fn close_retires_epochs() {
        let mut p = PeerWindows::new(64);
        p.accept(10, 1).unwrap();
        p.close_current();
        assert_eq!(p.current_epoch(), None);
        assert_eq!(p.accept(10, 2), Err(PeerReject::RetiredEpoch));
        assert_eq!(p.accept(11, 1), Ok(EpochSlot::New));
        assert_eq!(p.accept(0, 1), Err(PeerReject::RetiredEpoch));
    }
}
