//! mptunnel: a multipath UDP tunnel.
//!
//! Every datagram goes over several paths at once; the receiver keeps the first copy.
//! The [`protocol`] module is the sans-IO core; the driver runs it on real sockets.

pub mod cli;
pub mod config;
pub mod driver;
pub mod options;
pub mod protocol;

pub use config::{Config, ConfigError, Role};
pub use driver::{
    Error, MultipathListener, MultipathSocket, RecvInto, RunningTunnel, SharedTunnel, Tunnel,
    TunnelHandle,
};
pub use protocol::scheduler::Mode;
pub use protocol::stats::Stats;

/// A new random pre-shared key from the OS generator, in its 44-character base64 form
/// (what `mpclient genkey` prints and the `key` option takes).
pub fn genkey() -> Result<String, String> {
    protocol::crypto::Key::generate().map(|k| k.to_base64())
}

/// The library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
