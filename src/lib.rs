//! mptunnel: a multipath UDP tunnel.
//!
//! Every datagram goes over several paths at once; the receiver keeps the first copy.
//! The [`protocol`] module is the sans-IO core; the driver runs it on real sockets.

pub mod protocol;
