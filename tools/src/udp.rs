//! Addresses and UDP sockets for mpbridge and mpperf: the same address rules as mpclient and
//! mpserver, and sockets with large buffers.

use std::io;
use std::net::SocketAddr;

/// Parses a local address: `PORT` (all IPv4 interfaces) or `HOST:PORT`, with the same
/// rules as mpclient and mpserver.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let normalized = mptunnel::config::normalize_listen(s.trim()).map_err(|e| e.to_string())?;
    mptunnel::driver::resolve::resolve(&normalized).map_err(|e| e.to_string())
}

/// Parses a destination `HOST:PORT`; names are resolved now, IPv4 preferred.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr = mptunnel::driver::resolve::resolve(s.trim()).map_err(|e| e.to_string())?;
    if addr.port() == 0 {
        return Err("port 0 is not a valid destination".to_string());
    }
    if addr.ip().is_unspecified() {
        return Err("the unspecified address is not a valid destination".to_string());
    }
    Ok(addr)
}

/// The wildcard address of the same family as `addr`, port 0.
pub fn any_addr_like(addr: &SocketAddr) -> SocketAddr {
    SocketAddr::new(mptunnel::driver::net::unspecified_for(addr), 0)
}

/// A non-blocking UDP socket bound to `addr`, with large kernel buffers so bursts are not dropped.
pub fn udp_socket(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    mptunnel::driver::net::bind_udp(addr, None, None)
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
}
