//! Socket setup shared by the drivers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for; the kernel may cap it (net.core.rmem_max).
pub(crate) const BUFFER_BYTES: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`, with large buffers, optionally pinned to a
/// network interface (Linux only).
pub fn bind_udp(
    addr: SocketAddr,
    dev: Option<&str>,
    buffer: Option<usize>,
) -> io::Result<mio::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let size = buffer.unwrap_or(BUFFER_BYTES);
    // Best effort: small buffers only cost throughput under bursts.
    let _ = sock.set_recv_buffer_size(size);
    let _ = sock.set_send_buffer_size(size);
    if let Some(dev) = dev {
        bind_device(&sock, dev)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(sock.into()))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_device(sock: &Socket, dev: &str) -> io::Result<()> {
    sock.bind_device(Some(dev.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface '{dev}': {e}")))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bind_device(_sock: &Socket, dev: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("binding to interface '{dev}' is only supported on Linux; use bind=ADDRESS"),
    ))
}

/// The unspecified address of the same family as `peer`.
pub fn unspecified_for(peer: &SocketAddr) -> IpAddr {
    match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Raises the open-file limit to the hard limit; returns the limit now in force.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let mut want = rl;
            want.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}

/// Raises the open-file limit to the hard limit; returns the limit now in force.
#[cfg(not(unix))]
pub fn raise_nofile_limit() -> u64 {
    u64::MAX
}

/// True for errors that say "this datagram could not be sent/received" rather than "the
/// socket is broken": the tunnel counts them and carries on.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc_emsgsize())
}

fn libc_emsgsize() -> i32 {
    #[cfg(unix)]
    {
        libc::EMSGSIZE
    }
    #[cfg(not(unix))]
    {
        10040 // WSAEMSGSIZE
    }
}

/// Blocks every signal on the calling thread while it lives and restores the previous mask
/// when dropped; threads spawned meanwhile inherit the blocked mask.
pub(crate) struct SignalsBlocked {
    #[cfg(unix)]
    previous: Option<libc::sigset_t>,
}

impl SignalsBlocked {
    #[cfg(unix)]
    pub(crate) fn new() -> SignalsBlocked {
        // SAFETY: plain libc calls on local sigset_t values.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let ok = libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous) == 0;
            SignalsBlocked {
                previous: ok.then_some(previous),
            }
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn new() -> SignalsBlocked {
        SignalsBlocked {}
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(previous) = &self.previous {
            // SAFETY: restores the mask saved by `new` on this same thread.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, previous, std::ptr::null_mut());
            }
        }
    }
}
