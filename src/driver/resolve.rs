//! Name resolution: `HOST:PORT` to a socket address, done by the driver when it builds its
//! sockets (the config only checks the text).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::config::{split_host_port_or_zero, ConfigError};

/// Resolves `HOST:PORT` (port 0 allowed, for listen addresses), preferring IPv4 when a name
/// has both (e.g. `localhost`), since the services and bridges it points at are most often
/// IPv4-only.
pub fn resolve(addr: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = split_host_port_or_zero(addr)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::new(format!("cannot resolve host '{host}': {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ConfigError::new(format!("host '{host}' has no addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names() {
        assert_eq!(
            resolve("127.0.0.1:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert!(resolve("localhost:5").unwrap().is_ipv4());
        assert_eq!(resolve("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        let e = resolve("no-such-host.invalid:1").unwrap_err().to_string();
        assert!(e.contains("no-such-host.invalid"), "{e}");
    }
}
