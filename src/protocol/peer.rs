//! Receive state for one session and direction: the peer's epochs and their windows.

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

#[cfg(test)]
mod tests {
    use super::*;

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
