//! What an endpoint asks its driver to send (one transmit per copy), and a pool that
//! recycles packet buffers so the steady state allocates nothing per datagram.

use std::net::SocketAddr;

/// Bit `i` set = client path `i`. Hence at most [`MAX_PATHS`] paths per client.
pub type PathMask = u64;

/// Most paths a client may have.
pub const MAX_PATHS: usize = 64;

/// Where a client's [`Transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientDest {
    /// A copy of a packet for this path (each copy carries its path index).
    Path(usize),
    /// A payload for the local application at this address.
    App(SocketAddr),
}

/// Where a server's [`Transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDest {
    /// A copy of a packet for this bridge address.
    Bridge(SocketAddr),
    /// A payload for the target, on behalf of this session (the server's handle of it).
    Target(u64),
}

/// One packet (or delivered payload) and where it goes: `D` is the role's destination type
/// ([`ClientDest`] or [`ServerDest`]).
#[derive(Debug)]
pub struct Transmit<D> {
    /// Destination(s).
    pub dest: D,
    /// Whole packet for network destinations; the bare payload for local deliveries.
    pub data: Vec<u8>,
}

/// Free list of buffers.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
}

const POOL_MAX: usize = 512;

impl BufPool {
    /// An empty buffer, reused when possible.
    pub fn get(&mut self) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_else(|| Vec::with_capacity(2048));
        b.clear();
        b
    }

    /// Gives a buffer back.
    pub fn put(&mut self, b: Vec<u8>) {
        if self.free.len() < POOL_MAX && b.capacity() <= 70_000 {
            self.free.push(b);
        }
    }
}
