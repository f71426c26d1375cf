//! What some tests need of the machine beyond Rust: socat, IPv6 loopback, network namespaces.
//!
//! Such a test is `#[ignore = "needs ..."]` and its name starts with the need
//! (`socat_...`, `ipv6_...`, `netns_...`), so a plain `cargo test` lists it as ignored.
//! `tests/run-rust.sh` (what `make test` runs) then runs the ignored tests whose needs are
//! met and names the others as skipped; under `CI=true` it runs them all, and a missing need
//! fails the test with the message below.

use std::net::UdpSocket;
use std::process::{Command, Stdio};

/// Something a test needs of the machine.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// `socat` on PATH.
    Socat,
    /// A bindable `::1`.
    Ipv6,
    /// Root and `ip` (iproute2), to create network namespaces and veth pairs.
    Netns,
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why `need` is not met, or None when it is.
pub fn missing(need: Need) -> Option<String> {
    match need {
        Need::Socat => (!runs("socat", &["-V"])).then(|| {
            "socat is not on PATH (apt-get install socat; `make test` installs it when run \
             as root)"
                .to_string()
        }),
        Need::Ipv6 => UdpSocket::bind("[::1]:0")
            .err()
            .map(|e| format!("cannot bind [::1]: {e} (no IPv6 loopback)")),
        Need::Netns => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                Some("network namespaces need root".to_string())
            } else if !runs("ip", &["-V"]) {
                Some(
                    "ip is not on PATH (apt-get install iproute2; `make test` installs it \
                     when run as root)"
                        .to_string(),
                )
            } else {
                None
            }
        }
    }
}

/// Fails the test, naming what is missing, unless `need` is met.
pub fn require(need: Need) {
    if let Some(why) = missing(need) {
        panic!("this test needs {need:?}: {why}");
    }
}
