//! The one event loop both endpoint drivers run: poll with the endpoint's deadline, drain
//! ready sockets fairly, run timers, publish stats when another thread asks, stop on request.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::info;
use mio::{Events, Poll, Registry, Token};

use super::pump::Scratch;
use super::{Command, Error, Shared, WAKER};
use crate::protocol::endpoint::Endpoint;
use crate::protocol::stats::Stats;
use crate::protocol::RateLimit;

/// An endpoint on its sockets: the poller, the endpoint, and the role's sockets `S`.
pub(super) struct Driver<E, S> {
    pub(super) poll: Poll,
    pub(super) endpoint: E,
    pub(super) sockets: S,
    pub(super) local_addr: std::net::SocketAddr,
    pub(super) scratch: Scratch,
}

/// A role's sockets, as the loop drives them.
pub(super) trait Sockets<E: Endpoint> {
    /// Reads from the socket behind `token`; true if its budget ran out before it was empty.
    fn service(&mut self, token: Token, e: &mut E, scratch: &mut Scratch, reg: &Registry) -> bool;
    /// The loop was woken (or polled): take what the local side queued, if it queues.
    fn on_wake(&mut self, e: &mut E, log: &mut RateLimit, reg: &Registry);
    /// Hands everything the endpoint produced to the sockets.
    fn flush(&mut self, e: &mut E, log: &mut RateLimit, reg: &Registry);
    /// Applies a change asked by another thread; `Ok` says what changed.
    fn command(&mut self, e: &mut E, cmd: Command, reg: &Registry) -> Result<String, String>;
}

impl<E: Endpoint, S: Sockets<E>> Driver<E, S> {
    fn service(&mut self, token: Token) -> bool {
        let reg = self.poll.registry();
        self.sockets
            .service(token, &mut self.endpoint, &mut self.scratch, reg)
    }

    fn on_wake(&mut self) {
        let reg = self.poll.registry();
        let log = &mut self.scratch.send_err_log;
        self.sockets.on_wake(&mut self.endpoint, log, reg);
    }

    fn flush(&mut self) {
        let reg = self.poll.registry();
        let log = &mut self.scratch.send_err_log;
        self.sockets.flush(&mut self.endpoint, log, reg);
    }

    /// A stats snapshot.
    pub(super) fn stats(&self, now: Instant) -> Stats {
        self.endpoint.stats(now)
    }
}

/// Runs `d` until `shared.stop` is set. It sleeps until a socket is readable, the waker
/// rings (stop, stats wanted, in-process datagrams) or the endpoint's next deadline: an
/// idle endpoint with nothing due does not wake.
pub(super) fn run<E: Endpoint, S: Sockets<E>>(
    d: &mut Driver<E, S>,
    shared: &Shared,
) -> Result<(), Error> {
    let mut events = Events::with_capacity(256);
    // Sockets whose drain hit the budget: serviced again without waiting for readiness.
    let mut again: VecDeque<Token> = VecDeque::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let timeout = if again.is_empty() {
            d.endpoint
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        match d.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io("poll failed".into(), e)),
        }
        for ev in events.iter() {
            if ev.token() != WAKER && !again.contains(&ev.token()) {
                again.push_back(ev.token());
            }
        }
        for _ in 0..again.len() {
            let Some(token) = again.pop_front() else {
                break;
            };
            if d.service(token) {
                again.push_back(token);
            }
        }
        d.on_wake();
        let commands = std::mem::take(&mut *shared.commands.lock());
        for (cmd, reply) in commands {
            let reg = d.poll.registry();
            let answer = d.sockets.command(&mut d.endpoint, cmd, reg);
            let _ = reply.try_send(answer);
            d.flush();
        }
        let now = Instant::now();
        if d.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            d.endpoint.handle_timeout(now);
            d.flush();
        }
        if shared.stats_requested() {
            shared.publish(d.stats(now));
        }
    }
    // Datagrams an in-process application queued before closing still go out, ahead of CLOSE.
    d.on_wake();
    info!(
        "stopping: closing {} sessions",
        d.stats(Instant::now()).sessions
    );
    d.endpoint.close(Instant::now());
    d.flush();
    shared.publish(d.stats(Instant::now()));
    Ok(())
}
