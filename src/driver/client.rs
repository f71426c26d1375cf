//! The client endpoint on sockets: the apps' side (a UDP socket, or an in-process queue),
//! and one connected socket per path shared by all sessions (a socat bridge serves a single
//! peer address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::info;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::event_loop::{Driver, Sockets};
use super::inproc::Inproc;
use super::net::{bind_udp, unspecified_for};
use super::pump::{drain, flush, Failures, Scratch};
use super::resolve::resolve;
use super::{bind_listen, io_err, needs_restart, Command, Error, Local, Setup};
use crate::config::{Config, PathConfig};
use crate::protocol::client::{Client, PathSpec};
use crate::protocol::endpoint::Endpoint as _;
use crate::protocol::event::Event;
use crate::protocol::path::PathState;
use crate::protocol::transmit::ClientDest;
use crate::protocol::transmit::MAX_PATHS;
use crate::protocol::RateLimit;

const LISTEN: Token = Token(0);
const PATH_BASE: usize = 1;

/// Where the applications are.
enum Apps {
    /// Local programs sending to a UDP socket; each source address is a session.
    Udp(UdpSocket),
    /// One program in this process, through queues: a single session.
    InProcess(Arc<Inproc>),
}

/// The in-process application's session key (it has no address of its own).
const IN_PROCESS_APP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl Apps {
    /// Hands a payload to the application at `app`.
    fn deliver(&self, app: SocketAddr, data: &[u8], failed: &mut Failures) {
        match self {
            Apps::Udp(sock) => failed.note(sock.send_to(data, app), &app),
            Apps::InProcess(q) => q.deliver(0, data),
        }
    }
}

/// The client's sockets: the apps' side and one connected socket per path (`None` for a
/// path removed by a reload: its index stays taken).
pub(super) struct ClientSockets {
    apps: Apps,
    paths: Vec<Option<UdpSocket>>,
    /// The configuration running now, and each path index's config line (a reload is
    /// compared with them).
    config: Config,
    lines: Vec<Option<PathConfig>>,
    /// Host names of paths being resolved again on a helper thread.
    resolver: Resolver,
}

/// A path's `HOST:PORT` looked up and what it gave (None: the lookup failed).
type Lookup = (usize, String, Option<SocketAddr>);

/// Re-resolution of a path's host name when the path goes down, off the event loop: a
/// helper thread per lookup puts its answer in `done`, which the loop reads each turn.
#[derive(Default)]
struct Resolver {
    /// Paths with a lookup under way.
    busy: std::cell::RefCell<std::collections::HashSet<usize>>,
    done: Arc<std::sync::Mutex<Vec<Lookup>>>,
}

impl Resolver {
    /// Path `i` (config line `line`) went down: if its host is a name, look it up again
    /// (one lookup per path at a time).
    fn on_down(&self, i: usize, line: &PathConfig) {
        if line.host.parse::<std::net::IpAddr>().is_ok() || !self.busy.borrow_mut().insert(i) {
            return;
        }
        let name = line.remote();
        let done = Arc::clone(&self.done);
        let spawned = std::thread::Builder::new()
            .name("mptunnel-resolve".into())
            .spawn(move || {
                let addr = resolve(&name)
                    .map_err(|e| log::debug!("path {i}: {e}"))
                    .ok();
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, name, addr));
            });
        if spawned.is_err() {
            self.busy.borrow_mut().remove(&i);
        }
    }
}

/// Opens, connects and registers the socket of path `i`.
fn open_path(
    p: &PathConfig,
    remote: SocketAddr,
    reg: &Registry,
    i: usize,
) -> Result<UdpSocket, Error> {
    let local = SocketAddr::new(p.bind.unwrap_or_else(|| unspecified_for(&remote)), 0);
    let mut sock = bind_udp(local, p.dev.as_deref(), None).map_err(io_err(format!(
        "cannot open a socket for path {}",
        p.display_name()
    )))?;
    sock.connect(remote)
        .map_err(io_err(format!("cannot connect path socket to {remote}")))?;
    reg.register(&mut sock, Token(PATH_BASE + i), Interest::READABLE)
        .map_err(io_err("cannot register"))?;
    info!("path {} -> {remote}", p.display_name());
    Ok(sock)
}

fn spec_of(p: &PathConfig, remote: SocketAddr) -> PathSpec {
    PathSpec {
        name: p.display_name(),
        remote: remote.to_string(),
        backup: p.backup,
        weight: p.weight,
    }
}

/// A path line is the same path when it sends to the same place the same way.
fn same_path(a: &PathConfig, b: &PathConfig) -> bool {
    (&a.host, a.port, a.bind, &a.dev) == (&b.host, b.port, b.bind, &b.dev)
}

impl ClientSockets {
    /// Answers of the resolver: a path whose name now resolves elsewhere is reconnected.
    fn take_resolved(&mut self, e: &mut Client) {
        let done: Vec<_> = {
            let mut d = self.resolver.done.lock().unwrap_or_else(|p| p.into_inner());
            if d.is_empty() {
                return;
            }
            std::mem::take(&mut *d)
        };
        for (i, name, addr) in done {
            self.resolver.busy.borrow_mut().remove(&i);
            let still = self
                .lines
                .get(i)
                .and_then(|l| l.as_ref())
                .map(PathConfig::remote);
            let Some(Some(sock)) = self.paths.get(i) else {
                continue;
            };
            let Some(addr) = addr.filter(|_| still.as_deref() == Some(name.as_str())) else {
                continue;
            };
            if sock.peer_addr().ok() == Some(addr) {
                continue;
            }
            match sock.connect(addr) {
                Ok(()) => {
                    info!("event=path_resolved path={name} remote={addr}");
                    e.set_path_remote(i, addr.to_string());
                }
                Err(err) => log::warn!("path {name}: cannot connect to {addr}: {err}"),
            }
        }
    }

    /// Everything the endpoint produced, onto the paths and to the apps; a path gone down
    /// has its host name looked up again.
    fn flush_out(&self, e: &mut Client, log: &mut RateLimit) {
        flush(
            e,
            log,
            |_, ev| {
                if let Event::Path(c) = ev {
                    if let (PathState::Down, Some(Some(line))) = (c.to, self.lines.get(c.path)) {
                        self.resolver.on_down(c.path, line);
                    }
                }
            },
            |dest, data| {
                let mut failed = Failures::default();
                match *dest {
                    ClientDest::Path(i) => match self.paths.get(i) {
                        Some(Some(sock)) => failed.note(sock.send(data), &format_args!("path {i}")),
                        Some(None) | None => failed.missing(format!("no path {i}")),
                    },
                    ClientDest::App(app) => self.apps.deliver(app, data, &mut failed),
                }
                failed
            },
        );
    }

    /// A reloaded config: paths kept (by host, port, bind and dev), removed and added; the
    /// mode and timing knobs. Sockets are opened before anything changes, so a path that
    /// cannot open refuses the whole reload.
    fn reload(
        &mut self,
        e: &mut Client,
        new: Config,
        remotes: Vec<SocketAddr>,
        reg: &Registry,
    ) -> Result<String, String> {
        if let Some(why) = needs_restart(&self.config, &new) {
            return Err(why);
        }
        let now = Instant::now();
        let mut kept = vec![false; self.lines.len()];
        let mut added = Vec::new();
        // The old index each kept line of the new config takes.
        let mut keep = Vec::new();
        for (p, remote) in new.paths.iter().zip(&remotes) {
            let old = self
                .lines
                .iter()
                .enumerate()
                .position(|(i, l)| !kept[i] && l.as_ref().is_some_and(|l| same_path(l, p)));
            match old {
                Some(i) => {
                    kept[i] = true;
                    keep.push((i, p.clone()));
                }
                None => added.push((p.clone(), *remote)),
            }
        }
        let live = kept.iter().filter(|k| **k).count();
        if live + added.len() > MAX_PATHS {
            return Err(format!("more than {MAX_PATHS} paths"));
        }
        // Open the new paths' sockets first (their tokens are the indices they will get).
        let mut next_free = self.lines.len();
        let mut free = (0..self.lines.len()).filter(|&i| self.lines[i].is_none() || !kept[i]);
        let mut opened = Vec::new();
        for (p, remote) in &added {
            let i = if next_free < MAX_PATHS {
                next_free += 1;
                next_free - 1
            } else {
                match free.next() {
                    Some(i) => i,
                    None => return Err(format!("more than {MAX_PATHS} paths")),
                }
            };
            match open_path(p, *remote, reg, i) {
                Ok(s) => opened.push((i, s)),
                Err(err) => {
                    for (_, mut s) in opened {
                        let _ = reg.deregister(&mut s);
                    }
                    return Err(err.to_string());
                }
            }
        }
        let mut summary = Vec::new();
        // Removed paths.
        for (i, k) in kept.iter().enumerate() {
            if !*k {
                if let Some(line) = self.lines[i].take() {
                    if let Some(mut s) = self.paths[i].take() {
                        let _ = reg.deregister(&mut s);
                    }
                    e.remove_path(i);
                    info!("event=path_removed path={}", line.display_name());
                    summary.push(format!("removed {}", line.display_name()));
                }
            }
        }
        // Kept paths take their new options.
        for (i, p) in keep {
            e.set_path_options(i, p.display_name(), p.backup, p.weight);
            self.lines[i] = Some(p);
        }
        // Added paths.
        for ((p, remote), (i, sock)) in added.into_iter().zip(opened) {
            let got = e.add_path(now, spec_of(&p, remote));
            debug_assert_eq!(got, Some(i));
            if self.paths.len() <= i {
                self.paths.resize_with(i + 1, || None);
                self.lines.resize(i + 1, None);
            }
            self.paths[i] = Some(sock);
            info!("event=path_added path={} remote={remote}", p.display_name());
            summary.push(format!("added {}", p.display_name()));
            self.lines[i] = Some(p);
        }
        if new.mode != e.mode() {
            summary.push(format!("mode {}", new.mode.name()));
            e.set_mode(now, new.mode);
        }
        e.set_params(new.params.clone());
        self.config = new;
        if summary.is_empty() {
            summary.push("no path or mode changed".into());
        }
        Ok(summary.join(", "))
    }
}

/// The client endpoint on its sockets.
pub(super) type ClientDriver = Driver<Client, ClientSockets>;

/// Binds the apps' socket (unless they are in process) and one socket per path.
pub(super) fn build(setup: Setup) -> Result<ClientDriver, Error> {
    let config = setup.config;
    let poll = setup.poll;
    let (apps, local_addr) = match setup.local {
        Local::Network => {
            let (sock, addr) = bind_listen(config, &poll, LISTEN)?;
            (Apps::Udp(sock), addr)
        }
        Local::InProcess(q) => (Apps::InProcess(q), SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    let mut paths = Vec::new();
    let mut specs = Vec::new();
    for (i, p) in config.paths.iter().enumerate() {
        let remote = resolve(&p.remote())?;
        paths.push(Some(open_path(p, remote, poll.registry(), i)?));
        specs.push(spec_of(p, remote));
    }
    let endpoint = Client::new(
        config.params.clone(),
        config.mode,
        specs,
        &setup.seed,
        setup.now,
    );
    let reach = if local_addr.ip().is_loopback() {
        " (apps on this host only; --listen 0.0.0.0:PORT serves a LAN)"
    } else {
        ""
    };
    info!(
        "mpclient listening on {local_addr}{reach} with {} paths, epoch {:016x}",
        paths.len(),
        endpoint.epoch()
    );
    Ok(Driver {
        poll,
        endpoint,
        sockets: ClientSockets {
            apps,
            paths,
            config: config.clone(),
            lines: config.paths.iter().cloned().map(Some).collect(),
            resolver: Resolver::default(),
        },
        local_addr,
        scratch: Scratch::default(),
    })
}

impl Sockets<Client> for ClientSockets {
    fn command(&mut self, e: &mut Client, cmd: Command, reg: &Registry) -> Result<String, String> {
        match cmd {
            Command::SetMode(mode) => {
                e.set_mode(Instant::now(), mode);
                Ok(format!("mode {}", mode.name()))
            }
            Command::Reload(new, remotes) => self.reload(e, *new, remotes, reg),
        }
    }

    fn service(
        &mut self,
        token: Token,
        e: &mut Client,
        scratch: &mut Scratch,
        _: &Registry,
    ) -> bool {
        let Scratch { buf, send_err_log } = scratch;
        if token == LISTEN {
            let Apps::Udp(sock) = &self.apps else {
                return false;
            };
            drain(sock, buf, &"listen socket", |data, from| {
                e.handle_local(Instant::now(), from, data);
                self.flush_out(e, send_err_log);
            })
        } else {
            let i = token.0 - PATH_BASE;
            let Some(Some(sock)) = self.paths.get(i) else {
                return false;
            };
            drain(sock, buf, &format_args!("path socket {i}"), |data, _| {
                e.handle_datagram(Instant::now(), i, data);
                self.flush_out(e, send_err_log);
            })
        }
    }

    fn on_wake(&mut self, e: &mut Client, log: &mut RateLimit, _: &Registry) {
        self.take_resolved(e);
        if let Apps::InProcess(q) = &self.apps {
            for (_, data) in q.take_outgoing() {
                e.handle_local(Instant::now(), IN_PROCESS_APP, &data);
                self.flush_out(e, log);
            }
        }
    }

    fn flush(&mut self, e: &mut Client, log: &mut RateLimit, _: &Registry) {
        self.flush_out(e, log);
    }
}
