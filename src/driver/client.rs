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
use super::{bind_listen, io_err, Error, Local, Setup};
use crate::protocol::client::{Client, PathSpec};
use crate::protocol::endpoint::Endpoint as _;
use crate::protocol::transmit::ClientDest;
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

/// The client's sockets: the apps' side and one connected socket per path.
pub(super) struct ClientSockets {
    apps: Apps,
    paths: Vec<UdpSocket>,
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
            backup: p.backup,
            weight: p.weight,
        });
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
        sockets: ClientSockets { apps, paths },
        local_addr,
        scratch: Scratch::default(),
    })
}

impl Sockets<Client> for ClientSockets {
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
                flush_to(&self.paths, &self.apps, e, send_err_log);
            })
        } else {
            let i = token.0 - PATH_BASE;
            let Some(sock) = self.paths.get(i) else {
                return false;
            };
            drain(sock, buf, &format_args!("path socket {i}"), |data, _| {
                e.handle_datagram(Instant::now(), i, data);
                flush_to(&self.paths, &self.apps, e, send_err_log);
            })
        }
    }

    fn on_wake(&mut self, e: &mut Client, log: &mut RateLimit, _: &Registry) {
        if let Apps::InProcess(q) = &self.apps {
            for (_, data) in q.take_outgoing() {
                e.handle_local(Instant::now(), IN_PROCESS_APP, &data);
                flush_to(&self.paths, &self.apps, e, log);
            }
        }
    }

    fn flush(&mut self, e: &mut Client, log: &mut RateLimit, _: &Registry) {
        flush_to(&self.paths, &self.apps, e, log);
    }
}

/// Everything the endpoint produced, onto the paths and to the apps.
fn flush_to(paths: &[UdpSocket], apps: &Apps, e: &mut Client, log: &mut RateLimit) {
    flush(
        e,
        log,
        |_, _| {},
        |dest, data| {
            let mut failed = Failures::default();
            match *dest {
                ClientDest::Path(i) => match paths.get(i) {
                    Some(sock) => failed.note(sock.send(data), &format_args!("path {i}")),
                    None => failed.missing(format!("no path {i}")),
                },
                ClientDest::App(app) => apps.deliver(app, data, &mut failed),
            }
            failed
        },
    );
}
