//! Addresses, ports, temp files and the "is the tunnel up" check.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::STARTUP;

pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

pub fn any_port(ip: IpAddr) -> String {
    SocketAddr::new(ip, 0).to_string()
}

/// A file in the temp directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mptunnel-test-{}-{n}-{name}", std::process::id()));
        fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The client config for the given bridges: the seed's `HOST PORT` lines (IPv6 bare).
pub fn client_conf(paths: &[SocketAddr]) -> TempFile {
    let mut text = String::from("# written by the tools' tests\n");
    for p in paths {
        text.push_str(&format!("{} {}\n", p.ip(), p.port()));
    }
    TempFile::new("client.conf", &text)
}

/// A port that was free a moment ago (on all IPv4 addresses, as the seed's bare ports bind).
pub fn free_port() -> u16 {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.local_addr().expect("local_addr").port()
}

/// True when some process has a UDP socket bound to `port` (IPv4 or IPv6).
pub fn udp_port_bound(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&hex))
            })
        })
    })
}

/// Sends probe datagrams to `target` until one comes back: the whole chain is up.
pub fn wait_roundtrip(target: SocketAddr, diag: &dyn Fn() -> String) {
    let sock = UdpSocket::bind(SocketAddr::new(target.ip(), 0)).expect("bind probe socket");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + STARTUP;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = sock.send_to(b"e2e-probe", target);
        let t = Instant::now() + Duration::from_millis(50);
        while Instant::now() < t {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"e2e-probe" {
                    return;
                }
            }
        }
    }
    panic!(
        "no probe came back through {target} within {STARTUP:?}\n{}",
        diag()
    );
}
