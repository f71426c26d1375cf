//! Address parsing, UDP socket setup and seeding, shared by mpbridge and mpperf.

use std::io;
use std::net::SocketAddr;

/// Parses a local address: `PORT` (all IPv4 interfaces) or `HOST:PORT`, with the same
/// rules as mpclient and mpserver.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let normalized = mptunnel::config::normalize_listen(s.trim()).map_err(|e| e.to_string())?;
    mptunnel::config::resolve(&normalized).map_err(|e| e.to_string())
}

/// Parses a destination `HOST:PORT`; names are resolved now, IPv4 preferred.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr = mptunnel::config::resolve(s.trim()).map_err(|e| e.to_string())?;
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
