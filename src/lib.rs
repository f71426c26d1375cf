//! mptunnel: a multipath UDP tunnel.
//!
//! Every datagram goes over several paths at once; the receiver keeps the first copy.
//! The [`protocol`] module is the sans-IO core; the driver runs it on real sockets.

pub mod config;
pub mod driver;
pub mod protocol;

pub use config::{Config, ConfigError, Role};
pub use driver::{Error, MultipathListener, MultipathSocket, RecvInto, Tunnel, TunnelHandle};
pub use protocol::stats::Stats;

/// The library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
