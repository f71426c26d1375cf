//! A session as both roles route it: its id and when it was last active. What the peer may
//! send (windows, freshness) is per peer epoch, not per session.

use std::time::{Duration, Instant};

/// One session.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// The session id (the client's, on the wire).
    pub id: u64,
    /// Last time anything was sent or delivered.
    pub last_active: Instant,
}

/// The keys of the sessions idle at `now`, and when the first of the others could expire
/// (the next sweep is due then: `last_active` only moves forward).
pub fn idle_sessions<'a, K: Copy + 'a>(
    sessions: impl Iterator<Item = (&'a K, &'a Session)>,
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
