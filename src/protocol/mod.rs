//! The sans-IO protocol layer: codec, replay window, sessions, paths, scheduling.
//! Nothing here touches a socket or the clock; time is always an argument.

pub mod client;
pub mod crypto;
pub mod endpoint;
pub mod event;
pub mod fresh;
pub mod packet;
pub mod params;
pub mod path;
pub mod peer;
pub mod rng;
pub mod scheduler;
pub mod secure_rng;
pub mod server;
pub mod session;
pub mod stats;
pub mod timer;
pub mod transmit;
pub mod window;

use std::time::{Duration, Instant};

/// Lets something (a log line) happen at most once per interval; time is an argument.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    /// True (and the interval restarts) when `every` has passed since the last `true`.
    pub fn ready(&mut self, now: Instant, every: Duration) -> bool {
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}
