//! mio loop around the server endpoint: one socket for bridges, one connected socket per
//! session towards the target (so the target sees one source port per client flow).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Interest, Poll, Token};

use super::event_loop::{self, Driver};
use super::inproc::Inproc;
use super::net::{bind_udp, is_transient, raise_nofile_limit, unspecified_for};
use super::{io_err, Error, RateLimit, Shared, DRAIN_BUDGET};
use crate::config::{resolve, Config};
use crate::protocol::server::{Server, SessionEvent};
use crate::protocol::stats::Stats;
use crate::protocol::transmit::Dest;

const LISTEN: Token = Token(0);
const SESSION_BASE: usize = 1;
/// File descriptors kept free for everything that is not a session socket.
const FD_RESERVE: u64 = 64;
/// Session sockets carry one flow each: smaller buffers than the shared sockets.
const SESSION_BUFFER: usize = 1 << 20;

pub(super) struct ServerDriver {
    poll: Poll,
    listen: mio::net::UdpSocket,
    local_addr: SocketAddr,
    target: SocketAddr,
    slots: Vec<Option<(u64, mio::net::UdpSocket)>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    endpoint: Server,
    /// In-process listener: sessions deliver here instead of to target sockets.
    inproc: Option<Arc<Inproc>>,
    buf: Vec<u8>,
    open_err_log: RateLimit,
}

impl ServerDriver {
    pub(super) fn new(
        config: &Config,
        poll: Poll,
        seed: u64,
        now: Instant,
        inproc: Option<Arc<Inproc>>,
    ) -> Result<Self, Error> {
        let listen_s = config.listen.as_deref().unwrap_or("0.0.0.0:0");
        let listen_addr = resolve(listen_s)?;
        let target = match (&inproc, config.target.as_deref()) {
            (None, Some(t)) => resolve(t)?,
            // An in-process listener has no target; the address is never used.
            _ => SocketAddr::from(([127, 0, 0, 1], 9)),
        };
        let mut listen = bind_udp(listen_addr, None, None)
            .map_err(io_err(format!("cannot listen on {listen_addr}")))?;
        let local_addr = listen
            .local_addr()
            .map_err(io_err("cannot read listen address"))?;
        poll.registry()
            .register(&mut listen, LISTEN, Interest::READABLE)
            .map_err(io_err("cannot register"))?;
        let mut params = config.params.clone();
        let nofile = raise_nofile_limit();
        let allowed = nofile.saturating_sub(FD_RESERVE).max(1) as usize;
        if params.max_sessions > allowed {
            warn!(
                "max-sessions {} is above what the open-file limit ({nofile}) allows; using {allowed}",
                params.max_sessions
            );
            params.max_sessions = allowed;
        }
        let endpoint = Server::new(params, seed, now);
        info!(
            "mpserver listening on {local_addr}, forwarding to {target}, epoch {:016x}",
            endpoint.epoch()
        );
        Ok(ServerDriver {
            poll,
            listen,
            local_addr,
            target,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            endpoint,
            inproc,
            buf: vec![0u8; 65_536],
            open_err_log: RateLimit::default(),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(super) fn stats(&self, now: Instant) -> Stats {
        self.endpoint.stats(now)
    }

    pub(super) fn run(mut self, shared: &Shared) -> Result<(), Error> {
        event_loop::run(&mut self, shared)
    }

    /// Takes what an in-process application queued for its peers.
    fn drain_inproc(&mut self) {
        let Some(inproc) = &self.inproc else { return };
        let batch = std::mem::take(&mut *inproc.outgoing.lock());
        for (peer, data) in batch {
            self.endpoint.handle_target(Instant::now(), peer, &data);
            self.flush();
        }
    }

    fn drain_listen(&mut self) -> bool {
        for _ in 0..DRAIN_BUDGET {
            match self.listen.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    self.endpoint
                        .handle_datagram(Instant::now(), from, &self.buf[..n]);
                    self.flush();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    warn!("listen socket: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn drain_session(&mut self, slot: usize) -> bool {
        for _ in 0..DRAIN_BUDGET {
            let Some(Some((id, sock))) = self.slots.get(slot) else {
                return false;
            };
            let id = *id;
            match sock.recv(&mut self.buf) {
                Ok(n) => {
                    self.endpoint
                        .handle_target(Instant::now(), id, &self.buf[..n]);
                    self.flush();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // The target is down (ICMP port unreachable): keep the session, count nothing
                // here; sends to it are counted as send errors.
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    warn!("session socket: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn open_session(&mut self, id: u64) -> io::Result<()> {
        let local = SocketAddr::new(unspecified_for(&self.target), 0);
        let mut sock = bind_udp(local, None, Some(SESSION_BUFFER))?;
        sock.connect(self.target)?;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.poll
            .registry()
            .register(&mut sock, Token(SESSION_BASE + slot), Interest::READABLE)?;
        self.slots[slot] = Some((id, sock));
        self.by_id.insert(id, slot);
        Ok(())
    }

    fn close_session(&mut self, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            if let Some((_, mut sock)) = self.slots[slot].take() {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            self.free.push(slot);
        }
    }

    fn flush(&mut self) {
        // Events first: a new session's socket must exist before its first datagram. (A
        // session dropped here queues its Closed event, which this same loop then takes.)
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                SessionEvent::Opened(_) | SessionEvent::Closed(_) if self.inproc.is_some() => {}
                SessionEvent::Opened(id) => {
                    if let Err(e) = self.open_session(id) {
                        if self
                            .open_err_log
                            .ready(Instant::now(), Duration::from_secs(10))
                        {
                            warn!(
                                "cannot open a socket to {} for a new session: {e}",
                                self.target
                            );
                        }
                        self.endpoint.drop_session(id);
                    }
                }
                SessionEvent::Closed(id) => self.close_session(id),
            }
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            let mut errors = 0u64;
            match t.dest {
                Dest::Addrs(set) => {
                    for addr in set.as_slice() {
                        if let Err(e) = self.listen.send_to(&t.data, *addr) {
                            errors += 1;
                            debug!("send to bridge {addr} failed: {e}");
                        }
                    }
                }
                Dest::Session(id) if self.inproc.is_some() => {
                    if let Some(inproc) = &self.inproc {
                        inproc.deliver(id, &t.data);
                    }
                }
                Dest::Session(id) => {
                    let sock = self
                        .by_id
                        .get(&id)
                        .and_then(|&s| self.slots[s].as_ref())
                        .map(|(_, s)| s);
                    match sock {
                        Some(sock) => {
                            if let Err(e) = sock.send(&t.data) {
                                errors += 1;
                                debug!("send to target {} failed: {e}", self.target);
                            }
                        }
                        None => errors += 1,
                    }
                }
                Dest::Paths(_) | Dest::Local(_) => {}
            }
            if errors > 0 {
                self.endpoint.count_send_errors(errors);
            }
            self.endpoint.recycle(t.data);
        }
    }
}

impl Driver for ServerDriver {
    fn poller(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn service(&mut self, token: Token) -> bool {
        if token == LISTEN {
            self.drain_listen()
        } else {
            self.drain_session(token.0 - SESSION_BASE)
        }
    }

    fn drain_inproc(&mut self) {
        ServerDriver::drain_inproc(self)
    }

    fn deadline(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.flush();
    }

    fn stats(&self, now: Instant) -> Stats {
        self.endpoint.stats(now)
    }

    fn shutdown(&mut self) {
        self.endpoint.close(Instant::now());
        self.flush();
    }
}
