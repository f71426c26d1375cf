//! The endpoint-level timers, one slot each, and the earliest of them. A timer is armed only
//! while it has something to do, so an idle endpoint sleeps until its next real deadline.

use std::time::Instant;

/// The timers an endpoint may arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Expire idle sessions (and, on a server, forget silent bridge addresses).
    Sweep,
    /// Resend unanswered challenges (keyed mode).
    Challenge,
    /// Re-probe bridge addresses that have not answered their validation probe (server).
    Validation,
    /// Look at the paths again: a path falling in doubt, an announcement due (client).
    Schedule,
}

const COUNT: usize = 4;
const ALL: [Timer; COUNT] = [
    Timer::Sweep,
    Timer::Challenge,
    Timer::Validation,
    Timer::Schedule,
];

impl Timer {
    fn index(self) -> usize {
        match self {
            Timer::Sweep => 0,
            Timer::Challenge => 1,
            Timer::Validation => 2,
            Timer::Schedule => 3,
        }
    }
}

/// One deadline per [`Timer`].
#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    at: [Option<Instant>; COUNT],
}

impl TimerTable {
    /// Arms `t` for `at` (replacing any earlier setting).
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.at[t.index()] = Some(at);
    }

    /// Arms `t` for `at` unless it is already armed earlier.
    pub fn set_earliest(&mut self, t: Timer, at: Instant) {
        let slot = &mut self.at[t.index()];
        *slot = Some(slot.map_or(at, |cur| cur.min(at)));
    }

    /// Disarms `t`.
    pub fn stop(&mut self, t: Timer) {
        self.at[t.index()] = None;
    }

    /// When `t` fires, if armed.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t.index()]
    }

    /// True (and `t` is disarmed) when `t` is due at `now`; the handler re-arms it.
    pub fn take_expired(&mut self, t: Timer, now: Instant) -> bool {
        let slot = &mut self.at[t.index()];
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// Every timer due at `now`, each disarmed (its handler re-arms it), in a fixed order.
    pub fn take_all_expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut due = [None; COUNT];
        for (slot, t) in due.iter_mut().zip(ALL) {
            if self.take_expired(t, now) {
                *slot = Some(t);
            }
        }
        due.into_iter().flatten()
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_and_expiry() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Sweep, t0 + Duration::from_secs(2));
        t.set_earliest(Timer::Challenge, t0 + Duration::from_secs(3));
        t.set_earliest(Timer::Challenge, t0 + Duration::from_secs(1));
        t.set_earliest(Timer::Challenge, t0 + Duration::from_secs(5));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.take_expired(Timer::Sweep, t0 + Duration::from_secs(1)));
        assert!(t.take_expired(Timer::Challenge, t0 + Duration::from_secs(1)));
        assert_eq!(t.get(Timer::Challenge), None);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        t.stop(Timer::Sweep);
        assert_eq!(t.next(), None);
        t.set(Timer::Validation, t0);
        t.set(Timer::Sweep, t0);
        t.set(Timer::Challenge, t0 + Duration::from_secs(1));
        let due: Vec<Timer> = t.take_all_expired(t0).collect();
        assert_eq!(due, [Timer::Sweep, Timer::Validation]);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
    }
}
