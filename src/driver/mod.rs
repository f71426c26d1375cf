//! The driver: runs a protocol endpoint on real sockets with one synchronous `mio` loop.
//!
//! [`Tunnel`] is a forwarding endpoint (what mpclient and mpserver run). Build it, take a
//! [`TunnelHandle`] to stop it or read stats from any thread, then `run()` it (blocking) or
//! `spawn()` it on a thread of its own.

mod client;
pub mod net;
mod server;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::{Config, ConfigError, Role};
use crate::protocol::stats::Stats;

const WAKER: mio::Token = mio::Token(usize::MAX - 1);
/// How often the loop publishes a stats snapshot for other threads.
const STATS_EVERY: Duration = Duration::from_millis(200);

/// Why a tunnel could not start or stopped with an error.
#[derive(Debug)]
pub enum Error {
    /// The configuration is incomplete or invalid.
    Config(ConfigError),
    /// An OS call failed; the string says what was being done.
    Io(String, io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(_, e) => Some(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}

struct Shared {
    stop: AtomicBool,
    running: AtomicBool,
    waker: mio::Waker,
    stats: Mutex<Stats>,
    local_addr: SocketAddr,
}

/// Controls a tunnel from any thread. Cheap to clone.
#[derive(Clone)]
pub struct TunnelHandle {
    shared: Arc<Shared>,
}

impl TunnelHandle {
    /// Asks the tunnel to stop (it sends CLOSE to its peers first). Idempotent; any thread.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
    }

    /// The latest stats snapshot (at most ~200 ms old).
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().clone()
    }

    /// True while the loop runs.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// The address the tunnel listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }
}

impl fmt::Debug for TunnelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

enum Endpoint {
    Client(client::ClientDriver),
    Server(server::ServerDriver),
}

/// A forwarding endpoint bound to its sockets, ready to run.
pub struct Tunnel {
    endpoint: Endpoint,
    handle: TunnelHandle,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("handle", &self.handle)
            .finish()
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to time and pid: ids need uniqueness, not secrecy.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(b)
}

impl Tunnel {
    /// Validates the config, resolves addresses and binds every socket. Errors here are the
    /// user's to fix (bad address, port in use, unknown host).
    pub fn new(config: &Config) -> Result<Tunnel, Error> {
        config.validate()?;
        let poll = mio::Poll::new().map_err(io_err("cannot create poller"))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create waker"))?;
        let now = Instant::now();
        let seed = random_seed();
        let (endpoint, local_addr, stats) = match config.role {
            Role::Client => {
                let d = client::ClientDriver::new(config, poll, seed, now)?;
                let addr = d.local_addr();
                let stats = d.stats(now);
                (Endpoint::Client(d), addr, stats)
            }
            Role::Server => {
                let d = server::ServerDriver::new(config, poll, seed, now)?;
                let addr = d.local_addr();
                let stats = d.stats(now);
                (Endpoint::Server(d), addr, stats)
            }
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            running: AtomicBool::new(false),
            waker,
            stats: Mutex::new(stats),
            local_addr,
        });
        Ok(Tunnel {
            endpoint,
            handle: TunnelHandle { shared },
        })
    }

    /// A handle to stop the tunnel or read its stats.
    pub fn handle(&self) -> TunnelHandle {
        self.handle.clone()
    }

    /// The address the tunnel listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// Runs the loop on this thread until [`TunnelHandle::stop`].
    pub fn run(self) -> Result<(), Error> {
        let shared = Arc::clone(&self.handle.shared);
        shared.running.store(true, Ordering::SeqCst);
        let r = match self.endpoint {
            Endpoint::Client(d) => d.run(&shared),
            Endpoint::Server(d) => d.run(&shared),
        };
        shared.running.store(false, Ordering::SeqCst);
        r
    }

    /// Runs the loop on a new thread; returns the handle and the thread's join handle.
    pub fn spawn(self) -> Result<(TunnelHandle, JoinHandle<Result<(), Error>>), Error> {
        let handle = self.handle();
        handle.shared.running.store(true, Ordering::SeqCst);
        let name = match self.endpoint {
            Endpoint::Client(_) => "mptunnel-client",
            Endpoint::Server(_) => "mptunnel-server",
        };
        let join = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || self.run())
            .map_err(io_err("cannot start tunnel thread"))?;
        Ok((handle, join))
    }
}

/// Logs at most once per interval.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    fn ready(&mut self, now: Instant, every: Duration) -> bool {
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Poll timeout until `deadline` (None = no deadline), never negative.
fn timeout_until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

/// How many datagrams one socket may deliver in a row before others get a turn.
const DRAIN_BUDGET: usize = 64;
