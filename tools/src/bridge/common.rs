//! Address parsing, UDP socket setup and seeding, shared by mpbridge and mpperf.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Socket buffer size asked for; the kernel may grant less (net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;

/// Parses a local address: `PORT` (all IPv4 interfaces) or `HOST:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port = s
            .parse::<u16>()
            .map_err(|_| "port out of range (0-65535)".to_string())?;
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    }
    resolve(s)
}

/// Parses a destination `HOST:PORT`; names are resolved now, IPv4 preferred.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr = resolve(s.trim())?;
    if addr.port() == 0 {
        return Err("port 0 is not a valid destination".to_string());
    }
    if addr.ip().is_unspecified() {
        return Err("the unspecified address is not a valid destination".to_string());
    }
    Ok(addr)
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected PORT or HOST:PORT".to_string());
    };
    if host.is_empty() {
        return Err("missing host before ':'".to_string());
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err("IPv6 addresses must be in brackets, e.g. [::1]:4001".to_string());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port '{port}' (expected 0-65535)"))?;
    let host = if bracketed {
        &host[1..host.len() - 1]
    } else {
        host
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .collect();
    // localhost and dual-stack names: IPv4 is the more common bridge setup.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("host '{host}' has no addresses"))
}

/// The wildcard address of the same family as `addr`, port 0.
pub fn any_addr_like(addr: &SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

/// A non-blocking UDP socket bound to `addr`, with large kernel buffers so bursts are not dropped.
pub fn udp_socket(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only costs drops under bursts.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(sock.into()))
}

/// One step of splitmix64: a fast, well-mixed 64-bit sequence.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between runs and processes (time, pid, stack address).
pub fn entropy_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let mut state =
        nanos ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as usize as u64);
    splitmix64(&mut state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("4000").unwrap(),
            "0.0.0.0:4000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:4001").unwrap(),
            "[::1]:4001".parse().unwrap()
        );
        assert!(parse_listen("notaport").is_err());
        assert!(parse_listen("70000").is_err());
        assert!(parse_listen("").is_err());
        assert!(parse_listen("::1:4000").is_err());
        assert!(parse_listen(":4000").is_err());
        assert!(parse_listen("127.0.0.1:x").is_err());
    }

    #[test]
    fn target_forms() {
        assert!(parse_target("localhost:9").unwrap().is_ipv4());
        assert!(parse_target("127.0.0.1:0").is_err());
        assert!(parse_target("0.0.0.0:9").is_err());
        assert!(parse_target("x").is_err());
    }

    #[test]
    fn splitmix_reference() {
        // First outputs for seed 0 from the reference implementation.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
    }
}
