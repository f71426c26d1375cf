//! The sans-IO protocol layer: codec, replay window, sessions, paths, scheduling.
//! Nothing here touches a socket or the clock; time is always an argument.

pub mod client;
pub mod crypto;
pub mod fresh;
pub mod packet;
pub mod params;
pub mod path;
pub mod peer;
pub mod rng;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod transmit;
pub mod window;
