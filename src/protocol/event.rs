//! What an endpoint tells its driver besides packets: paths changing state, sessions opening
//! and closing, peers restarting. Drivers take them with `poll_event` (as they take packets
//! with `poll_transmit`), act on them (a server opens and closes target sockets) and log
//! them; the counters count them.

use std::fmt;

use super::path::PathState;

/// Why a path changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathReason {
    /// Nothing arrived for the down threshold.
    Silent,
    /// Nothing ever came back: the bridge or the server is likely not running, or the
    /// address is wrong.
    NeverHeard,
    /// A packet arrived on a down path.
    Heard,
    /// The probe-measured loss crossed the lossy threshold (either way).
    Loss,
}

impl PathReason {
    /// The word used in logs.
    pub fn name(self) -> &'static str {
        match self {
            PathReason::Silent => "silent",
            PathReason::NeverHeard => "never_heard",
            PathReason::Heard => "heard",
            PathReason::Loss => "loss",
        }
    }
}

/// A client path's change of state, with the figures behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct PathChange {
    /// The path's index.
    pub path: usize,
    /// Its name (config `name=`, else `HOST:PORT`).
    pub name: String,
    /// The address it sends to.
    pub remote: String,
    /// The state before.
    pub from: PathState,
    /// The state now.
    pub to: PathState,
    /// Why.
    pub reason: PathReason,
    /// How long the path had been silent (for a change to down).
    pub silent_ms: u64,
    /// Loss measured each way, once measured (for changes to up or lossy).
    pub loss_out: Option<f64>,
    /// See `loss_out`.
    pub loss_in: Option<f64>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent CLOSE.
    PeerClosed,
    /// Idle for longer than the idle timeout.
    Expired,
    /// This endpoint is shutting down.
    Shutdown,
    /// The driver could not give it what it needs (a socket towards the target).
    NoResources,
}

impl CloseReason {
    /// The word used in logs.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Expired => "expired",
            CloseReason::Shutdown => "shutdown",
            CloseReason::NoResources => "no_resources",
        }
    }
}

/// Something the driver should know about.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A client path changed state.
    Path(PathChange),
    /// A session was created (a server opens its target socket now, before its first
    /// datagram is delivered).
    SessionOpened {
        /// The session id.
        session: u64,
    },
    /// A session ended (a server closes its target socket).
    SessionClosed {
        /// The session id.
        session: u64,
        /// Why.
        reason: CloseReason,
    },
    /// The peer came back under a new epoch (it restarted).
    PeerRestarted {
        /// The peer's new epoch.
        epoch: u64,
    },
}

impl Event {
    /// How loudly to log it: a path going down is a warning, other path changes are info,
    /// session events debug.
    pub fn level(&self) -> log::Level {
        match self {
            Event::Path(p) if p.to == PathState::Down => log::Level::Warn,
            Event::Path(_) | Event::PeerRestarted { .. } => log::Level::Info,
            Event::SessionOpened { .. } | Event::SessionClosed { .. } => log::Level::Debug,
        }
    }
}

/// One line of `key=value` words with stable keys (docs/STATS.md, "Log lines with stable
/// keys"), e.g. `event=path_down path=bridge1 remote=10.0.0.2:4001 was=up reason=silent
/// silent_ms=1000`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Path(p) => {
                write!(
                    f,
                    "event=path_{} path={} remote={} was={} reason={}",
                    p.to.name(),
                    p.name,
                    p.remote,
                    p.from.name(),
                    p.reason.name()
                )?;
                let pct =
                    |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}", x * 100.0));
                match p.to {
                    PathState::Down => write!(f, " silent_ms={}", p.silent_ms),
                    PathState::Up | PathState::Lossy => write!(
                        f,
                        " loss_out_pct={} loss_in_pct={}",
                        pct(p.loss_out),
                        pct(p.loss_in)
                    ),
                }
            }
            Event::SessionOpened { session } => {
                write!(f, "event=session_opened session={session:016x}")
            }
            Event::SessionClosed { session, reason } => write!(
                f,
                "event=session_closed session={session:016x} reason={}",
                reason.name()
            ),
            Event::PeerRestarted { epoch } => {
                write!(f, "event=peer_restarted epoch={epoch:016x}")
            }
        }
    }
}
