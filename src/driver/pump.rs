//! What both drivers do with sockets and endpoints: drain a readable socket, and hand
//! everything an endpoint produced (events, then packets) to the sockets.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::UdpSocket;

use super::net::is_transient;
use crate::protocol::endpoint::Endpoint;
use crate::protocol::event::Event;
use crate::protocol::RateLimit;

/// How many datagrams one socket may deliver in a row before others get a turn.
pub(super) const DRAIN_BUDGET: usize = 64;
/// A driver's receive buffer (the largest datagram) and its send-error log limit.
pub(super) struct Scratch {
    pub(super) buf: Vec<u8>,
    pub(super) send_err_log: RateLimit,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            buf: vec![0u8; 65_536],
            send_err_log: RateLimit::default(),
        }
    }
}

/// Send errors are logged (at debug) at most this often.
const SEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Reads datagrams from `sock` (edge-triggered: until it would block) and passes each, with
/// its sender, to `each`. Returns true when the budget ran out first (more may wait).
/// ICMP-reported errors (a bridge or target not running) are skipped; any other error ends
/// the drain with a warning naming `what`.
pub(super) fn drain(
    sock: &UdpSocket,
    buf: &mut [u8],
    what: &dyn fmt::Display,
    mut each: impl FnMut(&[u8], SocketAddr),
) -> bool {
    for _ in 0..DRAIN_BUDGET {
        match sock.recv_from(buf) {
            Ok((n, from)) => each(&buf[..n], from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                warn!("{what}: {e}");
                return false;
            }
        }
    }
    true
}

/// The sends of one transmit that failed: how many, and the last error.
#[derive(Default)]
pub(super) struct Failures {
    count: u64,
    last: Option<String>,
}

impl Failures {
    /// Notes the result of one send to `to`.
    pub(super) fn note(&mut self, r: io::Result<usize>, to: &dyn fmt::Display) {
        if let Err(e) = r {
            self.count += 1;
            self.last = Some(format!("send to {to} failed: {e}"));
        }
    }

    /// A send that could not even be tried.
    pub(super) fn missing(&mut self, what: String) {
        self.count += 1;
        self.last = Some(what);
    }
}

/// Takes everything `e` produced: each event is logged (at its level, with stable keys)
/// and given to `on_event`, before any packet, since a server opens a session's target
/// socket on its event; then each packet goes to `send`, whose failures are counted and
/// logged at most every 10 s.
pub(super) fn flush<E: Endpoint>(
    e: &mut E,
    errors_log: &mut RateLimit,
    mut on_event: impl FnMut(&mut E, &Event),
    mut send: impl FnMut(&E::Dest, &[u8]) -> Failures,
) {
    loop {
        while let Some(ev) = e.poll_event() {
            log::log!(ev.level(), "{ev}");
            on_event(e, &ev);
        }
        let Some(t) = e.poll_transmit() else {
            return;
        };
        let failed = send(&t.dest, &t.data);
        if failed.count > 0 {
            e.count_send_errors(failed.count);
            if let Some(last) = failed.last {
                if errors_log.ready(Instant::now(), SEND_ERROR_LOG_EVERY) {
                    debug!("{last} (counted; further errors are not logged for 10 s)");
                }
            }
        }
        e.recycle(t.data);
    }
}
