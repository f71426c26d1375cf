//! The one event loop both endpoint drivers run: poll with the endpoint's deadline, drain
//! ready sockets fairly, run timers, publish stats for other threads, stop on request.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::info;
use mio::{Events, Poll, Token};

use super::{timeout_until, Error, Shared, STATS_EVERY, WAKER};
use crate::protocol::stats::Stats;

/// What the loop needs from a driver.
pub(super) trait Driver {
    /// The driver's poller.
    fn poller(&mut self) -> &mut Poll;
    /// Reads from the socket behind `token`; true if its budget ran out before it was empty.
    fn service(&mut self, token: Token) -> bool;
    /// Takes datagrams queued by an in-process application, if any.
    fn drain_inproc(&mut self);
    /// The endpoint's next timer deadline.
    fn deadline(&self) -> Option<Instant>;
    /// Runs the endpoint's timers and sends what they produced.
    fn on_timeout(&mut self, now: Instant);
    /// A stats snapshot.
    fn stats(&self, now: Instant) -> Stats;
    /// Clean shutdown: CLOSE to peers, flushed.
    fn shutdown(&mut self);
}

/// Runs `d` until `shared.stop` is set.
pub(super) fn run<D: Driver>(d: &mut D, shared: &Shared) -> Result<(), Error> {
    let mut events = Events::with_capacity(256);
    // Sockets whose drain hit the budget: serviced again without waiting for readiness.
    let mut again: VecDeque<Token> = VecDeque::new();
    let mut next_stats = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let deadline = d.deadline().map_or(next_stats, |t| t.min(next_stats));
        let timeout = if again.is_empty() {
            timeout_until(Some(deadline), now)
        } else {
            Some(Duration::ZERO)
        };
        match d.poller().poll(&mut events, timeout) {
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
        d.drain_inproc();
        let now = Instant::now();
        if d.deadline().is_some_and(|t| t <= now) {
            d.on_timeout(now);
        }
        if now >= next_stats || shared.stats_requested() {
            next_stats = now + STATS_EVERY;
            shared.publish(d.stats(now));
        }
    }
    // Datagrams an in-process application queued before closing still go out, ahead of CLOSE.
    d.drain_inproc();
    info!(
        "stopping: closing {} sessions",
        d.stats(Instant::now()).sessions
    );
    d.shutdown();
    shared.publish(d.stats(Instant::now()));
    Ok(())
}
