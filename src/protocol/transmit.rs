//! What an endpoint asks its driver to send, and a pool that recycles packet buffers so the
//! steady state allocates nothing per datagram.

use std::net::{Ipv4Addr, SocketAddr};

/// Bit `i` set = client path `i`. Hence at most [`MAX_PATHS`] paths per client.
pub type PathMask = u64;

/// Most paths a client may have.
pub const MAX_PATHS: usize = 64;

/// Most bridge addresses a server session sends to (bounds reflection through a session).
pub const MAX_SESSION_PATHS: usize = 8;

/// A small fixed set of addresses (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrSet {
    addrs: [SocketAddr; MAX_SESSION_PATHS],
    len: usize,
}

impl Default for AddrSet {
    fn default() -> Self {
        AddrSet {
            addrs: [SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); MAX_SESSION_PATHS],
            len: 0,
        }
    }
}

impl AddrSet {
    /// Adds an address; ignored when full.
    pub fn push(&mut self, a: SocketAddr) {
        if self.len < MAX_SESSION_PATHS {
            self.addrs[self.len] = a;
            self.len += 1;
        }
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Where a client's [`Transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientDest {
    /// The same packet on each of these paths.
    Paths(PathMask),
    /// A payload for the local application at this address.
    App(SocketAddr),
}

/// Where a server's [`Transmit`] goes.
// Kept inline (no Box) so that queueing a packet allocates nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDest {
    /// The same packet to each of these bridge addresses.
    Bridges(AddrSet),
    /// A payload for the target, on behalf of this session.
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
