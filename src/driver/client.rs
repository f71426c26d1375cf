//! mio loop around the client endpoint: one listen socket for local apps, one connected
//! socket per path shared by all sessions (a socat bridge serves a single peer address).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Interest, Poll, Token};

use super::event_loop::{self, Driver};
use super::inproc::Inproc;
use super::net::{bind_udp, is_transient, unspecified_for};
use super::{io_err, Error, RateLimit, Shared, DRAIN_BUDGET};
use crate::config::{resolve, Config};
use crate::protocol::client::{Client, PathSpec};
use crate::protocol::stats::Stats;
use crate::protocol::transmit::Dest;

const LISTEN: Token = Token(0);
const PATH_BASE: usize = 1;
/// The one "application address" of an in-process socket.
const INPROC_APP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

pub(super) struct ClientDriver {
    poll: Poll,
    /// Local apps' socket; None for an in-process socket.
    listen: Option<mio::net::UdpSocket>,
    inproc: Option<Arc<Inproc>>,
    local_addr: SocketAddr,
    paths: Vec<mio::net::UdpSocket>,
    endpoint: Client,
    buf: Vec<u8>,
    send_err_log: RateLimit,
}

impl ClientDriver {
    pub(super) fn new(
        config: &Config,
        poll: Poll,
        seed: u64,
        now: Instant,
        inproc: Option<Arc<Inproc>>,
    ) -> Result<Self, Error> {
        let (listen, local_addr) = if inproc.is_some() {
            (None, SocketAddr::from(([0, 0, 0, 0], 0)))
        } else {
            let listen_s = config.listen.as_deref().unwrap_or("0.0.0.0:0");
            let listen_addr = resolve(listen_s)?;
            let mut listen = bind_udp(listen_addr, None, None)
                .map_err(io_err(format!("cannot listen on {listen_addr}")))?;
            let local_addr = listen
                .local_addr()
                .map_err(io_err("cannot read listen address"))?;
            poll.registry()
                .register(&mut listen, LISTEN, Interest::READABLE)
                .map_err(io_err("cannot register"))?;
            (Some(listen), local_addr)
        };
        let mut paths = Vec::new();
        let mut specs = Vec::new();
        for (i, p) in config.paths.iter().enumerate() {
            let remote = resolve(&p.remote())?;
            let local = SocketAddr::new(p.bind.unwrap_or_else(|| unspecified_for(&remote)), 0);
            let mut sock = bind_udp(local, p.dev.as_deref(), None).map_err(io_err(format!(
                "cannot open a socket for path {}",
                p.display_name()
            )))?;
            sock.connect(remote)
                .map_err(io_err(format!("cannot connect path socket to {remote}")))?;
            poll.registry()
                .register(&mut sock, Token(PATH_BASE + i), Interest::READABLE)
                .map_err(io_err("cannot register"))?;
            info!("path {} -> {remote}", p.display_name());
            paths.push(sock);
            specs.push(PathSpec {
                name: p.display_name(),
                remote: remote.to_string(),
            });
        }
        let endpoint = Client::new(config.params.clone(), config.mode, specs, seed, now);
        info!(
            "mpclient listening on {local_addr} with {} paths, epoch {:016x}",
            paths.len(),
            endpoint.epoch()
        );
        Ok(ClientDriver {
            poll,
            listen,
            inproc,
            local_addr,
            paths,
            endpoint,
            buf: vec![0u8; 65_536],
            send_err_log: RateLimit::default(),
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

    /// Takes what an in-process application queued.
    fn drain_inproc(&mut self) {
        let Some(inproc) = &self.inproc else { return };
        let batch = std::mem::take(&mut *inproc.outgoing.lock());
        for (_, data) in batch {
            self.endpoint
                .handle_local(Instant::now(), INPROC_APP, &data);
            self.flush();
        }
    }

    /// Reads app datagrams; returns true if the budget ran out before the socket was empty.
    fn drain_listen(&mut self) -> bool {
        for _ in 0..DRAIN_BUDGET {
            let r = match &self.listen {
                Some(l) => l.recv_from(&mut self.buf),
                None => return false,
            };
            match r {
                Ok((n, from)) => {
                    self.endpoint
                        .handle_local(Instant::now(), from, &self.buf[..n]);
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

    fn drain_path(&mut self, i: usize) -> bool {
        if i >= self.paths.len() {
            return false;
        }
        for _ in 0..DRAIN_BUDGET {
            match self.paths[i].recv(&mut self.buf) {
                Ok(n) => {
                    self.endpoint
                        .handle_datagram(Instant::now(), i, &self.buf[..n]);
                    self.flush();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors (bridge not running) surface here on connected sockets.
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    warn!("path socket {i}: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            let mut errors = 0u64;
            let mut last_err = None;
            match t.dest {
                Dest::Paths(mask) => {
                    for (i, sock) in self.paths.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            if let Err(e) = sock.send(&t.data) {
                                errors += 1;
                                last_err = Some((i, e));
                            }
                        }
                    }
                }
                Dest::Local(app) => match (&self.listen, &self.inproc) {
                    (_, Some(inproc)) => inproc.deliver(0, &t.data),
                    (Some(listen), None) => {
                        if let Err(e) = listen.send_to(&t.data, app) {
                            errors += 1;
                            debug!("cannot deliver to {app}: {e}");
                        }
                    }
                    (None, None) => {}
                },
                Dest::Addrs(_) | Dest::Session(_) => {}
            }
            if errors > 0 {
                self.endpoint.count_send_errors(errors);
                if let Some((i, e)) = last_err {
                    if self
                        .send_err_log
                        .ready(Instant::now(), Duration::from_secs(10))
                    {
                        debug!("send on path {i} failed: {e} (counted; further errors are not logged for 10 s)");
                    }
                }
            }
            self.endpoint.recycle(t.data);
        }
    }
}

impl Driver for ClientDriver {
    fn poller(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn service(&mut self, token: Token) -> bool {
        if token == LISTEN {
            self.drain_listen()
        } else {
            self.drain_path(token.0 - PATH_BASE)
        }
    }

    fn drain_inproc(&mut self) {
        ClientDriver::drain_inproc(self)
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
        self.endpoint.close();
        self.flush();
    }
}
