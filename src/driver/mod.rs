//! The driver: runs a protocol endpoint on real sockets with one synchronous `mio` loop.
//!
//! [`Tunnel`] is a forwarding endpoint (what mpclient and mpserver run). Build it, take a
//! [`TunnelHandle`] to stop it or read stats from any thread, then `run()` it (blocking) or
//! `spawn()` it on a thread of its own.

mod client;
mod event_loop;
mod inproc;
mod lifecycle;
mod metrics;
pub mod net;
mod pump;
pub mod resolve;
mod server;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::{Config, ConfigError, Role};
use crate::protocol::secure_rng::Seed;
use crate::protocol::stats::Stats;
pub use inproc::{MultipathListener, MultipathSocket, NotifyFd, RecvInto};
pub use lifecycle::{RunningTunnel, SharedTunnel};

const WAKER: mio::Token = mio::Token(usize::MAX - 1);

/// Why a tunnel could not start or stopped with an error.
#[derive(Debug)]
pub enum Error {
    /// The configuration is incomplete or invalid.
    Config(ConfigError),
    /// An OS call failed; the string says what was being done.
    Io(String, io::Error),
    /// The call does not fit the tunnel's state (starting it twice).
    State(&'static str),
    /// The tunnel was stopped; it cannot run again.
    Closed,
    /// The loop panicked (a bug; please report it).
    Panicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::State(what) => write!(f, "{what}"),
            Error::Closed => write!(f, "the tunnel was stopped; create a new one to run again"),
            Error::Panicked => write!(f, "the tunnel loop panicked (please report this)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(_, e) => Some(e),
            Error::State(_) | Error::Closed | Error::Panicked => None,
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

/// A change asked of a running loop.
pub(crate) enum Command {
    /// Switch the scheduling mode (client).
    SetMode(crate::protocol::scheduler::Mode),
    /// Apply a re-read config; path addresses resolved already, in config order.
    Reload(Box<Config>, Vec<SocketAddr>),
}

type Reply = std::sync::mpsc::SyncSender<Result<String, String>>;

/// What a reload cannot change without a restart, if `new` changes it.
fn needs_restart(old: &Config, new: &Config) -> Option<String> {
    let what = if old.role != new.role {
        "the role"
    } else if old.listen != new.listen {
        "listen"
    } else if old.target != new.target {
        "target"
    } else if old.metrics != new.metrics {
        "metrics"
    } else if old.params.key != new.params.key {
        "the key"
    } else if old.params.window_size != new.params.window_size {
        "window"
    } else if old.role == Role::Server && old.params.max_sessions != new.params.max_sessions {
        "max-sessions (on a server)"
    } else {
        return None;
    };
    Some(format!(
        "{what} changed, which needs a restart; the running configuration stays"
    ))
}

struct Shared {
    stop: AtomicBool,
    /// Changes asked by other threads, with where the answer goes.
    commands: Mutex<Vec<(Command, Reply)>>,
    running: AtomicBool,
    waker: mio::Waker,
    stats: Mutex<(u64, Stats)>,
    stats_fresh: Condvar,
    stats_wanted: AtomicBool,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

impl Shared {
    /// Called by the loop: publish a snapshot and wake whoever waits for one.
    fn publish(&self, stats: Stats) {
        let mut g = self.stats.lock();
        g.0 += 1;
        g.1 = stats;
        self.stats_fresh.notify_all();
    }

    /// Called by the loop each turn: true when another thread asked for fresh stats.
    fn stats_requested(&self) -> bool {
        self.stats_wanted.swap(false, Ordering::SeqCst)
    }
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

    pub(crate) fn wake(&self) {
        let _ = self.shared.waker.wake();
    }

    /// A stats snapshot: asks the running loop for a fresh one (waiting at most 250 ms for
    /// it); once stopped, the final figures.
    pub fn stats(&self) -> Stats {
        let mut g = self.shared.stats.lock();
        if self.is_running() {
            let gen = g.0;
            self.shared.stats_wanted.store(true, Ordering::SeqCst);
            let _ = self.shared.waker.wake();
            let deadline = Instant::now() + Duration::from_millis(250);
            while g.0 == gen && self.is_running() {
                if self
                    .shared
                    .stats_fresh
                    .wait_until(&mut g, deadline)
                    .timed_out()
                {
                    break;
                }
            }
        }
        g.1.clone()
    }

    /// Switches the scheduling mode of a running client tunnel; the server hears of it in
    /// band. `Error::State` on a server or a tunnel not running.
    pub fn set_mode(&self, mode: crate::protocol::scheduler::Mode) -> Result<(), Error> {
        self.command(Command::SetMode(mode)).map(|_| ())
    }

    /// Applies a re-read configuration to the running tunnel: paths added and removed
    /// (unchanged ones keep their index and figures), mode and timing knobs changed;
    /// sessions go on. Host names are resolved here, on the caller's thread. A config that
    /// cannot apply (an error, or a change that needs a restart: listen, target, key,
    /// window) is refused as a whole and the running one stays. Returns a summary of what
    /// changed.
    pub fn reload(&self, config: &Config) -> Result<String, Error> {
        config.validate()?;
        if config.role == Role::Client {
            let mut remotes = Vec::new();
            for p in &config.paths {
                remotes.push(resolve::resolve(&p.remote())?);
            }
            return self.command(Command::Reload(Box::new(config.clone()), remotes));
        }
        self.command(Command::Reload(Box::new(config.clone()), Vec::new()))
    }

    fn command(&self, cmd: Command) -> Result<String, Error> {
        if !self.is_running() {
            return Err(Error::State("the tunnel is not running"));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.shared.commands.lock().push((cmd, tx));
        let _ = self.shared.waker.wake();
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(why)) => Err(Error::Config(ConfigError::new(why))),
            Err(_) => Err(Error::State("the tunnel did not answer")),
        }
    }

    /// True while the loop runs.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Where the metrics endpoint listens (`metrics` option), if it was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared.metrics_addr
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
    Client(Box<client::ClientDriver>),
    Server(Box<server::ServerDriver>),
}

/// A forwarding endpoint bound to its sockets, ready to run.
pub struct Tunnel {
    endpoint: Endpoint,
    handle: TunnelHandle,
    /// The in-process queues, for a socket or listener.
    inproc: Option<Arc<inproc::Inproc>>,
    /// The metrics endpoint, bound, served while the loop runs.
    metrics: Option<metrics::Metrics>,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("handle", &self.handle)
            .finish()
    }
}

/// What an endpoint's local side is: its applications (client) or target (server).
pub(crate) enum Local {
    /// UDP: the client's listen socket for apps, the server's sockets towards its target.
    Network,
    /// Queues to a program in this process (a socket or a listener).
    InProcess(Arc<inproc::Inproc>),
}

/// What a driver is built from.
pub(crate) struct Setup<'a> {
    config: &'a Config,
    poll: mio::Poll,
    /// Seeds the endpoint's epoch, ids, tokens and nonces.
    seed: Seed,
    now: Instant,
    local: Local,
}

/// Binds the endpoint's listen socket (apps for a client, bridges for a server).
fn bind_listen(
    config: &Config,
    poll: &mio::Poll,
    token: mio::Token,
) -> Result<(mio::net::UdpSocket, SocketAddr), Error> {
    let addr = resolve::resolve(config.listen.as_deref().unwrap_or("0.0.0.0:0"))?;
    let mut sock =
        net::bind_udp(addr, None, None).map_err(io_err(format!("cannot listen on {addr}")))?;
    let local = sock
        .local_addr()
        .map_err(io_err("cannot read listen address"))?;
    poll.registry()
        .register(&mut sock, token, mio::Interest::READABLE)
        .map_err(io_err("cannot register"))?;
    Ok((sock, local))
}

impl Tunnel {
    /// Validates the config, resolves addresses and binds every socket. Errors here are the
    /// user's to fix (bad address, port in use, unknown host).
    pub fn new(config: &Config) -> Result<Tunnel, Error> {
        Self::build(config, Local::Network)
    }

    /// A tunnel whose local side is `local`: UDP sockets, or in-process queues.
    pub(crate) fn build(config: &Config, local: Local) -> Result<Tunnel, Error> {
        config.validate_for(matches!(local, Local::Network))?;
        let inproc = match &local {
            Local::InProcess(q) => Some(Arc::clone(q)),
            Local::Network => None,
        };
        let metrics = config
            .metrics
            .as_deref()
            .map(metrics::Metrics::bind)
            .transpose()?;
        let poll = mio::Poll::new().map_err(io_err("cannot create poller"))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create waker"))?;
        let now = Instant::now();
        // Epochs, ids, tokens and nonces come from the OS CSPRNG; without one, no start.
        let seed =
            Seed::from_os().map_err(|e| Error::Io("cannot start".into(), io::Error::other(e)))?;
        let setup = Setup {
            config,
            poll,
            seed,
            now,
            local,
        };
        let (endpoint, local_addr, stats) = match config.role {
            Role::Client => {
                let d = client::build(setup)?;
                let (addr, stats) = (d.local_addr, d.stats(now));
                (Endpoint::Client(Box::new(d)), addr, stats)
            }
            Role::Server => {
                let d = server::build(setup)?;
                let (addr, stats) = (d.local_addr, d.stats(now));
                (Endpoint::Server(Box::new(d)), addr, stats)
            }
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            commands: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            waker,
            stats: Mutex::new((0, stats)),
            stats_fresh: Condvar::new(),
            stats_wanted: AtomicBool::new(false),
            local_addr,
            metrics_addr: metrics.as_ref().map(metrics::Metrics::addr),
        });
        Ok(Tunnel {
            endpoint,
            handle: TunnelHandle { shared },
            inproc,
            metrics,
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
        // However the loop ends (stopped, failed or panicked), others hear of it.
        let _finish = Finish {
            shared: Arc::clone(&shared),
            inproc: self.inproc,
        };
        let _metrics = match self.metrics {
            Some(m) => {
                // Its thread leaves signals to the application, like the loop's.
                let _mask = net::SignalsBlocked::new();
                Some(
                    m.spawn(self.handle.clone())
                        .map_err(io_err("cannot start the metrics thread"))?,
                )
            }
            None => None,
        };
        match self.endpoint {
            Endpoint::Client(mut d) => event_loop::run(&mut *d, &shared),
            Endpoint::Server(mut d) => event_loop::run(&mut *d, &shared),
        }
    }

    /// Runs the loop on a thread of its own; the returned tunnel stops it (or waits for it).
    pub fn start(self) -> Result<RunningTunnel, Error> {
        let handle = self.handle();
        handle.shared.running.store(true, Ordering::SeqCst);
        let name = match self.endpoint {
            Endpoint::Client(_) => "mptunnel-client",
            Endpoint::Server(_) => "mptunnel-server",
        };
        // The loop thread starts with every signal blocked, so that signals meant for the
        // application (SIGINT, SIGTERM, ...) reach the application's own threads.
        let _mask = net::SignalsBlocked::new();
        let join = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || self.run())
            .map_err(|e| {
                handle.shared.running.store(false, Ordering::SeqCst);
                Error::Io("cannot start tunnel thread".into(), e)
            })?;
        Ok(RunningTunnel::new(handle, join))
    }
}

/// Marks a tunnel's loop as ended when dropped: not running, a last snapshot for anyone
/// waiting for stats, and an in-process application's blocked calls woken (closed).
struct Finish {
    shared: Arc<Shared>,
    inproc: Option<Arc<inproc::Inproc>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.shared.running.store(false, Ordering::SeqCst);
        let last = self.shared.stats.lock().1.clone();
        self.shared.publish(last);
        if let Some(inproc) = &self.inproc {
            inproc.close();
        }
    }
}
