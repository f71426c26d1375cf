//! In-process datagrams: [`MultipathSocket`] (client side) and [`MultipathListener`] (server
//! side) run the same endpoints as mpclient/mpserver on a background thread, but the
//! application exchanges datagrams with them directly instead of through a local UDP port.
//! They speak the same protocol: a socket talks to any mpserver or listener, a listener
//! accepts any mpclient or socket.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Error, Local, RunningTunnel, Tunnel, TunnelHandle};
use crate::config::{Config, Role};
use crate::protocol::stats::Stats;

/// Most datagrams queued in each direction; beyond that, send fails with `WouldBlock` and
/// arrivals are dropped (and counted), as a full socket buffer would.
const QUEUE_MAX: usize = 8192;
/// Most bytes waiting for the application, like a UDP socket's receive buffer.
const INCOMING_BYTES_MAX: usize = super::net::BUFFER_BYTES;

/// What `recv_into` found: a datagram copied into the buffer, or one too large for it (left
/// queued, so the caller can retry with a buffer of `needed` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvInto {
    /// `len` bytes were copied; `peer` is the session id (0 on the client side).
    Datagram { len: usize, peer: u64 },
    /// The next datagram has `needed` bytes; nothing was consumed.
    TooSmall { needed: usize },
}

/// Datagrams waiting for the application, and their total size.
#[derive(Default)]
struct Incoming {
    items: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
}

/// Queues between the application and the loop thread. The notification descriptor is
/// signalled and cleared only under the `incoming` lock, so it is readable exactly while a
/// datagram waits (or once closed).
pub(crate) struct Inproc {
    /// Application → loop: (peer session id, or 0 on the client side; datagram).
    outgoing: Mutex<VecDeque<(u64, Vec<u8>)>>,
    incoming: Mutex<Incoming>,
    arrived: Condvar,
    closed: AtomicBool,
    pub(crate) dropped: AtomicU64,
    notify: Notify,
}

/// What `notify_fd` returns: a file descriptor on Unix, a SOCKET on Windows.
#[cfg(unix)]
pub type NotifyFd = std::os::unix::io::RawFd;
/// What `notify_fd` returns: a file descriptor on Unix, a SOCKET on Windows.
#[cfg(windows)]
pub type NotifyFd = std::os::windows::io::RawSocket;

/// A descriptor that is readable while datagrams wait for the application: the read end of
/// a socket pair that holds a byte while the incoming queue is not empty. A Unix socket pair
/// on Unix; elsewhere (Windows) two connected loopback UDP sockets, which `select`/`WSAPoll`
/// understand.
struct Notify {
    #[cfg(unix)]
    r: std::os::unix::net::UnixStream,
    #[cfg(unix)]
    w: std::os::unix::net::UnixStream,
    #[cfg(not(unix))]
    r: std::net::UdpSocket,
    #[cfg(not(unix))]
    w: std::net::UdpSocket,
}

impl Notify {
    #[cfg(unix)]
    fn new() -> io::Result<Notify> {
        let (r, w) = std::os::unix::net::UnixStream::pair()?;
        r.set_nonblocking(true)?;
        w.set_nonblocking(true)?;
        Ok(Notify { r, w })
    }

    #[cfg(not(unix))]
    fn new() -> io::Result<Notify> {
        let r = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let w = std::net::UdpSocket::bind("127.0.0.1:0")?;
        w.connect(r.local_addr()?)?;
        r.connect(w.local_addr()?)?;
        r.set_nonblocking(true)?;
        w.set_nonblocking(true)?;
        Ok(Notify { r, w })
    }

    fn signal(&self) {
        #[cfg(unix)]
        {
            use std::io::Write;
            let _ = (&self.w).write(&[1]);
        }
        #[cfg(not(unix))]
        let _ = self.w.send(&[1]);
    }

    fn clear(&self) {
        let mut b = [0u8; 64];
        #[cfg(unix)]
        {
            use std::io::Read;
            while matches!((&self.r).read(&mut b), Ok(n) if n > 0) {}
        }
        #[cfg(not(unix))]
        while self.r.recv(&mut b).is_ok() {}
    }

    #[cfg(unix)]
    fn raw(&self) -> NotifyFd {
        use std::os::unix::io::AsRawFd;
        self.r.as_raw_fd()
    }

    #[cfg(windows)]
    fn raw(&self) -> NotifyFd {
        use std::os::windows::io::AsRawSocket;
        self.r.as_raw_socket()
    }
}

impl Inproc {
    fn new() -> io::Result<Arc<Inproc>> {
        Ok(Arc::new(Inproc {
            outgoing: Mutex::new(VecDeque::new()),
            incoming: Mutex::new(Incoming::default()),
            arrived: Condvar::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            notify: Notify::new()?,
        }))
    }

    /// Called by the loop: everything the application queued, oldest first.
    pub(crate) fn take_outgoing(&self) -> VecDeque<(u64, Vec<u8>)> {
        std::mem::take(&mut *self.outgoing.lock())
    }

    /// Called by the loop: a datagram for the application.
    pub(crate) fn deliver(&self, peer: u64, data: &[u8]) {
        let mut q = self.incoming.lock();
        if q.items.len() >= QUEUE_MAX || q.bytes + data.len() > INCOMING_BYTES_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if q.items.is_empty() {
            self.signal();
        }
        q.bytes += data.len();
        q.items.push_back((peer, data.to_vec()));
        drop(q);
        self.arrived.notify_one();
    }

    fn signal(&self) {
        self.notify.signal();
    }

    fn unsignal(&self) {
        self.notify.clear();
    }

    /// Queues a datagram for the loop; true when the queue was empty (the loop, which takes
    /// the whole queue at once, then needs a wake-up; otherwise one is already on its way).
    fn push_outgoing(&self, peer: u64, data: &[u8]) -> io::Result<bool> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "closed"));
        }
        let mut q = self.outgoing.lock();
        if q.len() >= QUEUE_MAX {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "send queue full"));
        }
        let was_empty = q.is_empty();
        q.push_back((peer, data.to_vec()));
        Ok(was_empty)
    }

    fn recv(&self, timeout: Option<Duration>) -> io::Result<(u64, Vec<u8>)> {
        // The datagram moves out of the queue: no copy.
        self.recv_with(timeout, |q| q.pop_front().unwrap_or_default())
    }

    /// Copies the next datagram into `buf`; one that does not fit stays queued.
    fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<RecvInto> {
        self.recv_with(timeout, |q| {
            let Some((peer, data)) = q.front() else {
                return RecvInto::TooSmall { needed: 0 }; // not reached: q is not empty
            };
            let (peer, len) = (*peer, data.len());
            if len > buf.len() {
                return RecvInto::TooSmall { needed: len };
            }
            buf[..len].copy_from_slice(data);
            q.pop_front();
            RecvInto::Datagram { len, peer }
        })
    }

    /// Waits until a datagram is queued, then lets `f` take it (or leave it) from the queue.
    fn recv_with<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&mut VecDeque<(u64, Vec<u8>)>) -> R,
    ) -> io::Result<R> {
        // A deadline too far to represent is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut q = self.incoming.lock();
        loop {
            if let Some((_, front)) = q.items.front() {
                let front_len = front.len();
                let before = q.items.len();
                let r = f(&mut q.items);
                if q.items.len() < before {
                    q.bytes -= front_len;
                }
                if q.items.is_empty() {
                    if !self.closed.load(Ordering::SeqCst) {
                        self.unsignal();
                    }
                } else {
                    // Another receiver may be waiting (for instance with a larger buffer).
                    self.arrived.notify_one();
                }
                return Ok(r);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "closed"));
            }
            match deadline {
                None => {
                    self.arrived.wait(&mut q);
                }
                Some(d) => {
                    if Instant::now() >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no datagram in time",
                        ));
                    }
                    self.arrived.wait_until(&mut q, d);
                }
            }
        }
    }

    /// Wakes every blocked receiver for good; the descriptor stays readable. Idempotent.
    pub(crate) fn close(&self) {
        let _q = self.incoming.lock();
        self.closed.store(true, Ordering::SeqCst);
        self.signal();
        self.arrived.notify_all();
    }
}

/// Shared part of socket and listener: the running endpoint and its queues.
struct Runner {
    running: RunningTunnel,
    max_datagram: usize,
    inproc: Arc<Inproc>,
}

impl Runner {
    fn start(config: &Config) -> Result<Runner, Error> {
        let inproc =
            Inproc::new().map_err(|e| Error::Io("cannot create notification pipe".into(), e))?;
        let tunnel = Tunnel::build(config, Local::InProcess(Arc::clone(&inproc)))?;
        let max_datagram = crate::protocol::crypto::Codec::new(
            config.params.key.as_ref(),
            crate::protocol::packet::Sender::Client,
        )
        .max_payload();
        Ok(Runner {
            running: tunnel.start()?,
            max_datagram,
            inproc,
        })
    }

    fn handle(&self) -> &TunnelHandle {
        self.running.handle()
    }

    fn send(&self, peer: u64, data: &[u8]) -> io::Result<()> {
        if self.inproc.push_outgoing(peer, data)? {
            self.handle().wake();
        }
        Ok(())
    }

    /// Wakes blocked receivers, stops the endpoint (CLOSE to its peers) and waits for it,
    /// unless called on the loop's own thread (a log callback), where it only asks.
    fn close(&self) {
        self.inproc.close();
        let _ = self.running.stop();
    }

    fn stats(&self) -> Stats {
        let mut s = self.handle().stats();
        s.totals.app_queue_drops = self.inproc.dropped.load(Ordering::Relaxed);
        s
    }
}

/// Client side: sends datagrams over every path to an mpserver or [`MultipathListener`].
pub struct MultipathSocket {
    runner: Runner,
}

impl MultipathSocket {
    /// Starts a client endpoint with the config's paths (its `listen` is not used).
    pub fn connect(config: &Config) -> Result<MultipathSocket, Error> {
        if config.role != Role::Client {
            return Err(Error::Config(crate::config::ConfigError {
                location: String::new(),
                message: "a socket needs a client configuration".into(),
            }));
        }
        Ok(MultipathSocket {
            runner: Runner::start(config)?,
        })
    }

    /// Queues a datagram; fails with `WouldBlock` when the queue is full and `NotConnected`
    /// after [`close`](Self::close). Too-large datagrams are dropped and counted, as in the tools.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        self.runner.send(0, data)
    }

    /// Next datagram from the server; `None` waits until one arrives or the socket closes.
    /// `TimedOut` when nothing came in time, `NotConnected` once closed.
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.runner.inproc.recv(timeout).map(|(_, d)| d)
    }

    /// Like [`recv`](Self::recv), but copies into `buf`; a datagram larger than `buf` is
    /// left queued and reported as [`RecvInto::TooSmall`].
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<RecvInto> {
        self.runner.inproc.recv_into(buf, timeout)
    }

    /// Largest datagram the tunnel carries with this configuration (larger ones are dropped
    /// and counted as `oversized`).
    pub fn max_datagram(&self) -> usize {
        self.runner.max_datagram
    }

    /// A descriptor that is readable while a datagram waits: for poll/epoll/select on Unix,
    /// a SOCKET for select/WSAPoll on Windows. It belongs to this object.
    pub fn notify_fd(&self) -> NotifyFd {
        self.runner.inproc.notify.raw()
    }

    /// Stats of the underlying client endpoint.
    pub fn stats(&self) -> Stats {
        self.runner.stats()
    }

    /// Datagrams dropped because the application did not read them fast enough.
    pub fn dropped(&self) -> u64 {
        self.runner.inproc.dropped.load(Ordering::Relaxed)
    }

    /// Stops the endpoint (sending CLOSE) and wakes blocked `recv` calls. Idempotent; any thread.
    pub fn close(&self) {
        self.runner.close();
    }
}

impl Drop for MultipathSocket {
    fn drop(&mut self) {
        self.runner.close();
    }
}

/// Server side: accepts sessions from mpclients or [`MultipathSocket`]s; each session is a
/// peer identified by its 64-bit session id.
pub struct MultipathListener {
    runner: Runner,
}

impl MultipathListener {
    /// Binds the config's `listen` address and starts a server endpoint (`target` unused).
    pub fn bind(config: &Config) -> Result<MultipathListener, Error> {
        if config.role != Role::Server {
            return Err(Error::Config(crate::config::ConfigError {
                location: String::new(),
                message: "a listener needs a server configuration".into(),
            }));
        }
        Ok(MultipathListener {
            runner: Runner::start(config)?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.runner.handle().local_addr()
    }

    /// Next datagram and the peer (session id) it came from.
    pub fn recv_from(&self, timeout: Option<Duration>) -> io::Result<(Vec<u8>, u64)> {
        self.runner.inproc.recv(timeout).map(|(p, d)| (d, p))
    }

    /// Like [`recv_from`](Self::recv_from), but copies into `buf`; a datagram larger than
    /// `buf` is left queued and reported as [`RecvInto::TooSmall`].
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<RecvInto> {
        self.runner.inproc.recv_into(buf, timeout)
    }

    /// Largest datagram the tunnel carries with this configuration.
    pub fn max_datagram(&self) -> usize {
        self.runner.max_datagram
    }

    /// Sends a datagram to a peer (session id from `recv_from`). A peer that is gone is
    /// counted as `unknown_session` in the stats.
    pub fn send_to(&self, data: &[u8], peer: u64) -> io::Result<()> {
        self.runner.send(peer, data)
    }

    /// A descriptor that is readable while a datagram waits: for poll/epoll/select on Unix,
    /// a SOCKET for select/WSAPoll on Windows. It belongs to this object.
    pub fn notify_fd(&self) -> NotifyFd {
        self.runner.inproc.notify.raw()
    }

    /// Stats of the underlying server endpoint.
    pub fn stats(&self) -> Stats {
        self.runner.stats()
    }

    /// Stops the endpoint (sending CLOSE) and wakes blocked calls. Idempotent; any thread.
    pub fn close(&self) {
        self.runner.close();
    }
}

impl Drop for MultipathListener {
    fn drop(&mut self) {
        self.runner.close();
    }
}
