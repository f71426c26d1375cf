//! The echo service: every datagram goes back to its sender unchanged.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::udp::udp_socket;

/// Longest sleep, so SIGINT/SIGTERM are noticed even if they race with `poll`.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Datagrams handled before the termination flag is looked at again.
const BATCH: usize = 4096;

#[derive(Default)]
struct Counters {
    echoed: u64,
    bytes: u64,
    send_errors: u64,
    recv_errors: u64,
}

/// Echoes until `terminate` is set.
pub fn run(listen: SocketAddr, terminate: &AtomicBool) -> io::Result<()> {
    let mut sock = udp_socket(listen)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {listen}: {e}")))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)?;
    log::info!("echo listening on {}", sock.local_addr()?);
    let mut events = Events::with_capacity(16);
    let mut buf = vec![0u8; 65_536];
    let mut c = Counters::default();
    // True when the last drain stopped early, so readiness may not be signalled again.
    let mut pending = false;

    while !crate::is_set(terminate) {
        let timeout = if pending { Duration::ZERO } else { MAX_SLEEP };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        pending = true;
        for _ in 0..BATCH {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => match sock.send_to(&buf[..n], from) {
                    Ok(_) => {
                        c.echoed += 1;
                        c.bytes += n as u64;
                    }
                    // A full send buffer or an unreachable sender: drop this one, keep serving.
                    Err(e) => {
                        c.send_errors += 1;
                        log::debug!("echo to {from}: {e}");
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pending = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.recv_errors += 1;
                    log::debug!("receive: {e}");
                }
            }
        }
    }
    log::info!(
        "final: echoed {} datagrams ({} bytes), send errors {}, receive errors {}",
        c.echoed,
        c.bytes,
        c.send_errors,
        c.recv_errors
    );
    Ok(())
}
