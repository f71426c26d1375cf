//! A tunnel's life after it is bound: started once on a thread of its own, stopped from any
//! thread, waited for. [`RunningTunnel`] is the owned form (what `Tunnel::start` returns);
//! [`SharedTunnel`] is the form a handle held by other languages needs, where any thread
//! may start, run, stop or wait, in any order.

use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;

use super::{Error, Tunnel, TunnelHandle};

type Join = JoinHandle<Result<(), Error>>;

/// A tunnel whose loop runs on its own thread. Dropping it stops it (sending CLOSE first).
pub struct RunningTunnel {
    handle: TunnelHandle,
    loop_thread: ThreadId,
    join: Mutex<Option<Join>>,
}

impl std::fmt::Debug for RunningTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTunnel")
            .field("handle", &self.handle)
            .finish()
    }
}

impl RunningTunnel {
    pub(super) fn new(handle: TunnelHandle, join: Join) -> RunningTunnel {
        RunningTunnel {
            handle,
            loop_thread: join.thread().id(),
            join: Mutex::new(Some(join)),
        }
    }

    /// Stats, stop requests and the address, from any thread.
    pub fn handle(&self) -> &TunnelHandle {
        &self.handle
    }

    /// True on the loop's own thread (in a log record written by the loop, for instance).
    pub fn is_loop_thread(&self) -> bool {
        std::thread::current().id() == self.loop_thread
    }

    /// Asks the loop to stop (it sends CLOSE to its peers) and waits until it has. On the
    /// loop's own thread it only asks: the loop stops when the current call returns.
    /// Idempotent; the loop's error goes to the first caller that waits for it.
    pub fn stop(&self) -> Result<(), Error> {
        self.handle.stop();
        self.join()
    }

    /// Waits until the loop has ended (stopped from elsewhere, or failed); on the loop's own
    /// thread it returns at once. The loop's error goes to the first caller that waits.
    pub fn join(&self) -> Result<(), Error> {
        if self.is_loop_thread() {
            return Ok(());
        }
        // Held while joining: a second waiter waits here, then finds the loop gone.
        let mut slot = self.join.lock();
        match slot.take() {
            Some(j) => j.join().unwrap_or(Err(Error::Panicked)),
            None => Ok(()),
        }
    }
}

impl Drop for RunningTunnel {
    fn drop(&mut self) {
        if self.is_loop_thread() {
            // Dropped by the loop itself (from a log callback): it stops when that returns.
            self.handle.stop();
        } else if let Err(e) = self.stop() {
            log::warn!("the tunnel stopped with an error: {e}");
        }
    }
}

/// A bound tunnel that any thread may start (once), run (start if needed, then wait), stop
/// (idempotent; a stopped tunnel cannot start again) or wait for.
pub struct SharedTunnel {
    handle: TunnelHandle,
    state: Mutex<State>,
}

enum State {
    Ready(Box<Tunnel>),
    Running(std::sync::Arc<RunningTunnel>),
    Stopped(Option<std::sync::Arc<RunningTunnel>>),
}

impl SharedTunnel {
    /// Wraps a bound tunnel, not started.
    pub fn new(tunnel: Tunnel) -> SharedTunnel {
        SharedTunnel {
            handle: tunnel.handle(),
            state: Mutex::new(State::Ready(Box::new(tunnel))),
        }
    }

    /// Stats, stop requests and the address, from any thread.
    pub fn handle(&self) -> &TunnelHandle {
        &self.handle
    }

    /// Starts the loop on a thread of its own. `Error::State` when it already runs,
    /// `Error::Closed` once stopped.
    pub fn start(&self) -> Result<(), Error> {
        self.started().map(|_| ())
    }

    fn started(&self) -> Result<std::sync::Arc<RunningTunnel>, Error> {
        let mut st = self.state.lock();
        match std::mem::replace(&mut *st, State::Stopped(None)) {
            State::Ready(t) => match t.start() {
                Ok(r) => {
                    let r = std::sync::Arc::new(r);
                    *st = State::Running(std::sync::Arc::clone(&r));
                    Ok(r)
                }
                Err(e) => Err(e),
            },
            State::Running(r) => {
                *st = State::Running(r);
                Err(Error::State("the tunnel is already running"))
            }
            State::Stopped(r) => {
                *st = State::Stopped(r);
                Err(Error::Closed)
            }
        }
    }

    /// Starts the loop unless it runs already, then waits until it stops (from another
    /// thread, or because it failed). `Error::Closed` once stopped.
    pub fn run(&self) -> Result<(), Error> {
        let running = match self.started() {
            Ok(r) => r,
            Err(Error::State(_)) => match &*self.state.lock() {
                State::Running(r) => std::sync::Arc::clone(r),
                _ => return Err(Error::Closed),
            },
            Err(e) => return Err(e),
        };
        running.join()
    }

    /// Waits until a started loop stops; at once when it is not running.
    pub fn join(&self) -> Result<(), Error> {
        let running = match &*self.state.lock() {
            State::Running(r) | State::Stopped(Some(r)) => std::sync::Arc::clone(r),
            _ => return Ok(()),
        };
        running.join()
    }

    /// Stops the tunnel (CLOSE to its peers) and waits until it has, except on the loop's
    /// own thread, where it only asks. Idempotent; a stopped tunnel cannot start again. The
    /// loop's error, if it failed, is returned once.
    pub fn stop(&self) -> Result<(), Error> {
        self.handle.stop();
        let running = {
            let mut st = self.state.lock();
            match std::mem::replace(&mut *st, State::Stopped(None)) {
                State::Running(r) | State::Stopped(Some(r)) => {
                    *st = State::Stopped(Some(std::sync::Arc::clone(&r)));
                    r
                }
                State::Ready(_) | State::Stopped(None) => return Ok(()),
            }
        };
        running.stop()
    }

    /// True on the loop's own thread.
    pub fn is_loop_thread(&self) -> bool {
        match &*self.state.lock() {
            State::Running(r) | State::Stopped(Some(r)) => r.is_loop_thread(),
            _ => false,
        }
    }
}
