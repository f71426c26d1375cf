//! Sliding replay/duplicate window: one mechanism for dedup and anti-replay.
//!
//! Accepts a sequence number iff it was not accepted before and it is within `size` of the
//! highest sequence accepted so far. O(1) amortized per packet, fixed memory.

/// Why the window refused a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Already seen (a duplicate copy or a replay).
    Duplicate,
    /// Too far behind the highest sequence seen to tell.
    TooOld,
}

/// Ring bitmap of the last `size` sequence numbers.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    bits: Box<[u64]>,
    /// Highest sequence accepted; meaningless while `empty`.
    highest: u64,
    empty: bool,
}

/// Default window size in packets.
pub const DEFAULT_WINDOW: usize = 8192;

impl ReplayWindow {
    /// A window of `size` packets, rounded up to a multiple of 64 (at least 64).
    pub fn new(size: usize) -> Self {
        let words = size.div_ceil(64).max(1);
        ReplayWindow {
            bits: vec![0u64; words].into_boxed_slice(),
            highest: 0,
            empty: true,
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u64 {
        (self.bits.len() * 64) as u64
    }

    /// Highest sequence accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        (!self.empty).then_some(self.highest)
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let bit = seq % self.size();
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Forgets everything: the next sequence starts the window anew.
    pub fn reset(&mut self) {
        self.empty = true;
        self.highest = 0;
    }

    /// Starts over with every sequence below `floor` counted as seen: used when a peer
    /// epoch is admitted after a challenge, so nothing older than the peer's recent sends
    /// can get in.
    pub fn reset_to_floor(&mut self, floor: u64) {
        if floor == 0 {
            self.reset();
            return;
        }
        self.bits.fill(u64::MAX);
        self.highest = floor - 1;
        self.empty = false;
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), Reject> {
        if self.empty || seq > self.highest {
            return Ok(());
        }
        if self.highest - seq >= self.size() {
            return Err(Reject::TooOld);
        }
        let (w, m) = self.slot(seq);
        if self.bits[w] & m != 0 {
            Err(Reject::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as seen. Call only after [`check`](Self::check) said yes (and, with a key,
    /// after the packet authenticated).
    pub fn commit(&mut self, seq: u64) {
        if self.empty {
            self.bits.fill(0);
            self.empty = false;
            self.highest = seq;
        } else if seq > self.highest {
            self.clear_range(self.highest + 1, seq);
            self.highest = seq;
        }
        let (w, m) = self.slot(seq);
        self.bits[w] |= m;
    }

    /// `check` then `commit`.
    pub fn accept(&mut self, seq: u64) -> Result<(), Reject> {
        self.check(seq)?;
        self.commit(seq);
        Ok(())
    }

    /// Clears the bits of sequences `from..=to` (which are all above `highest`).
    fn clear_range(&mut self, from: u64, to: u64) {
        let size = self.size();
        if to - from + 1 >= size {
            self.bits.fill(0);
            return;
        }
        let mut s = from;
        let mut remaining = to - from + 1;
        while remaining > 0 {
            let bit = s % size;
            let in_word = bit % 64;
            let word = (bit / 64) as usize;
            // How many bits of this word belong to the range (without wrapping past the word).
            let n = (64 - in_word).min(remaining);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << in_word
            };
            self.bits[word] &= !mask;
            remaining -= n;
            s = s.wrapping_add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The obvious model: a set of everything ever accepted plus the highest.
    struct Model {
        seen: BTreeSet<u64>,
        highest: Option<u64>,
        size: u64,
    }

    impl Model {
        fn accept(&mut self, seq: u64) -> Result<(), Reject> {
            if let Some(h) = self.highest {
                if seq <= h && h - seq >= self.size {
                    return Err(Reject::TooOld);
                }
            }
            if !self.seen.insert(seq) {
                return Err(Reject::Duplicate);
            }
            self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
            Ok(())
        }
    }

    #[test]
    fn basics() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.accept(1000), Ok(()));
        assert_eq!(w.accept(1000), Err(Reject::Duplicate));
        assert_eq!(w.accept(999), Ok(()));
        assert_eq!(w.accept(1000 - 127), Ok(()));
        assert_eq!(w.accept(1000 - 128), Err(Reject::TooOld));
        assert_eq!(w.accept(1200), Ok(()));
        assert_eq!(w.accept(1000), Err(Reject::TooOld));
        assert_eq!(w.accept(1100), Ok(()));
        assert_eq!(w.accept(1100), Err(Reject::Duplicate));
        assert_eq!(w.highest(), Some(1200));
    }

    #[test]
    fn floor_refuses_everything_below() {
        let mut w = ReplayWindow::new(64);
        w.reset_to_floor(1000);
        assert_eq!(w.check(999), Err(Reject::Duplicate));
        assert_eq!(w.check(900), Err(Reject::TooOld));
        assert_eq!(w.accept(1000), Ok(()));
        assert_eq!(w.accept(1003), Ok(()));
        assert_eq!(w.accept(1001), Ok(()));
        assert_eq!(w.accept(999), Err(Reject::Duplicate));
        w.reset_to_floor(u64::MAX);
        assert!(w.check(5).is_err());
    }

    #[test]
    fn big_jump_clears_everything() {
        let mut w = ReplayWindow::new(64);
        for s in 0..64 {
            w.accept(s).unwrap();
        }
        w.accept(10_000).unwrap();
        for s in 10_000 - 63..10_000 {
            assert_eq!(w.check(s), Ok(()), "seq {s}");
        }
    }

    #[test]
    fn starts_anywhere_including_zero_and_max() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.accept(u64::MAX - 1), Ok(()));
        assert_eq!(w.accept(u64::MAX), Ok(()));
        assert_eq!(w.accept(u64::MAX), Err(Reject::Duplicate));
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(0), Err(Reject::Duplicate));
    }

    proptest! {
        #[test]
        fn matches_reference_model(
            size_words in 1usize..4,
            start in 0u64..1_000_000,
            steps in proptest::collection::vec((-300i64..300, any::<bool>()), 1..600),
        ) {
            let size = size_words * 64;
            let mut w = ReplayWindow::new(size);
            let mut m = Model { seen: BTreeSet::new(), highest: None, size: size as u64 };
            let mut cursor = start as i64;
            for (delta, jump) in steps {
                // Mostly small moves around a cursor that drifts forward, sometimes big jumps.
                cursor += if jump { delta * 7 } else { delta / 10 + 1 };
                let seq = cursor.max(0) as u64;
                prop_assert_eq!(w.accept(seq), m.accept(seq), "seq {}", seq);
            }
        }
    }
}
