//! Timing and sizing knobs of the protocol, with the defaults the tools use.

use std::time::Duration;

use super::crypto::Key;
use super::window::DEFAULT_WINDOW;

/// Protocol parameters shared by both endpoint kinds.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// How often each path is probed while it answers.
    pub probe_interval: Duration,
    /// Silence on a path after which it is probed fast.
    pub suspect_after: Duration,
    /// Probe interval while a path is silent.
    pub fast_probe_interval: Duration,
    /// Silence after which a path is down.
    pub down_after: Duration,
    /// Loss (either direction) above which a path is "lossy".
    pub lossy_threshold: f64,
    /// Idle time after which a session is dropped.
    pub idle_timeout: Duration,
    /// Most sessions an endpoint holds.
    pub max_sessions: usize,
    /// Replay window size in packets.
    pub window_size: usize,
    /// Pre-shared key: with one, every packet is sealed and new peer epochs are challenged.
    pub key: Option<Key>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            probe_interval: Duration::from_millis(250),
            suspect_after: Duration::from_millis(300),
            fast_probe_interval: Duration::from_millis(25),
            down_after: Duration::from_millis(1000),
            lossy_threshold: 0.10,
            idle_timeout: Duration::from_secs(120),
            max_sessions: 1024,
            window_size: DEFAULT_WINDOW,
            key: None,
        }
    }
}
