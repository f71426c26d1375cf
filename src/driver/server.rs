//! The server endpoint on sockets: one socket for the bridges, and the target's side: a
//! connected socket per session towards the target (so the target sees one source port per
//! client flow), or an in-process queue.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::event_loop::{Driver, Sockets};
use super::inproc::Inproc;
use super::net::{bind_udp, raise_nofile_limit, unspecified_for};
use super::pump::{drain, flush, Failures, Scratch};
use super::resolve::resolve;
use super::{bind_listen, needs_restart, Command, Error, Local, Setup};
use crate::config::Config;
use crate::protocol::endpoint::Endpoint as _;
use crate::protocol::event::Event;
use crate::protocol::server::Server;
use crate::protocol::transmit::ServerDest;
use crate::protocol::RateLimit;

const LISTEN: Token = Token(0);
const SESSION_BASE: usize = 1;
/// File descriptors kept free for everything that is not a session socket.
const FD_RESERVE: u64 = 64;
/// Session sockets carry one flow each: smaller buffers than the shared sockets.
const SESSION_BUFFER: usize = 1 << 20;

/// One socket per session towards the target, in slots that tokens index.
struct SessionSockets {
    target: SocketAddr,
    slots: Vec<Option<(u64, UdpSocket)>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    open_err_log: RateLimit,
}

impl SessionSockets {
    fn open(&mut self, registry: &Registry, id: u64) -> io::Result<()> {
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
        registry.register(&mut sock, Token(SESSION_BASE + slot), Interest::READABLE)?;
        self.slots[slot] = Some((id, sock));
        self.by_id.insert(id, slot);
        Ok(())
    }

    fn close(&mut self, registry: &Registry, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            if let Some((_, mut sock)) = self.slots[slot].take() {
                let _ = registry.deregister(&mut sock);
            }
            self.free.push(slot);
        }
    }

    fn send(&self, id: u64, data: &[u8], failed: &mut Failures) {
        match self.by_id.get(&id).and_then(|&s| self.slots[s].as_ref()) {
            Some((_, sock)) => failed.note(sock.send(data), &self.target),
            None => failed.missing(format!("no socket to the target for session {id:016x}")),
        }
    }
}

/// Where sessions are delivered.
enum Target {
    /// A UDP service, one socket per session.
    Udp(SessionSockets),
    /// A program in this process, through queues; the session id tells the peers apart.
    InProcess(Arc<Inproc>),
}

impl Target {
    /// Follows the endpoint's session events: open and close target sockets.
    fn on_event(&mut self, registry: &Registry, server: &mut Server, ev: &Event) {
        let Target::Udp(socks) = self else {
            return;
        };
        match *ev {
            Event::SessionOpened { session } => {
                if let Err(e) = socks.open(registry, session) {
                    if socks
                        .open_err_log
                        .ready(Instant::now(), Duration::from_secs(10))
                    {
                        warn!(
                            "cannot open a socket to {} for a new session: {e}",
                            socks.target
                        );
                    }
                    server.drop_session(session);
                }
            }
            Event::SessionClosed { session, .. } => socks.close(registry, session),
            Event::Path(_) | Event::PeerRestarted { .. } => {}
        }
    }

    fn deliver(&self, session: u64, data: &[u8], failed: &mut Failures) {
        match self {
            Target::Udp(socks) => socks.send(session, data, failed),
            Target::InProcess(q) => q.deliver(session, data),
        }
    }
}

/// The server's sockets: one for the bridges, and the target's side.
pub(super) struct ServerSockets {
    listen: UdpSocket,
    target: Target,
    /// The configuration running now (a reload is compared with it).
    config: Config,
    /// The session cap in force (the open-file limit may have lowered the configured one).
    max_sessions: usize,
}

/// The server endpoint on its sockets.
pub(super) type ServerDriver = Driver<Server, ServerSockets>;

/// Binds the bridges' socket and prepares the target's side.
pub(super) fn build(setup: Setup) -> Result<ServerDriver, Error> {
    let config = setup.config;
    let poll = setup.poll;
    let (listen, local_addr) = bind_listen(config, &poll, LISTEN)?;
    let mut params = config.params.clone();
    let (target, shown) = match setup.local {
        Local::InProcess(q) => (Target::InProcess(q), "this process".to_string()),
        Local::Network => {
            let addr = resolve(config.target.as_deref().unwrap_or_default())?;
            // Each session holds a socket: stay within the open-file limit.
            let nofile = raise_nofile_limit();
            let allowed = nofile.saturating_sub(FD_RESERVE).max(1) as usize;
            if params.max_sessions > allowed {
                warn!(
                    "max-sessions {} is above what the open-file limit ({nofile}) allows; using {allowed}",
                    params.max_sessions
                );
                params.max_sessions = allowed;
            }
            let socks = SessionSockets {
                target: addr,
                slots: Vec::new(),
                free: Vec::new(),
                by_id: HashMap::new(),
                open_err_log: RateLimit::default(),
            };
            (Target::Udp(socks), addr.to_string())
        }
    };
    let max_sessions = params.max_sessions;
    let endpoint = Server::new(params, &setup.seed, setup.now);
    info!(
        "mpserver listening on {local_addr}, forwarding to {shown}, epoch {:016x}",
        endpoint.epoch()
    );
    Ok(Driver {
        poll,
        endpoint,
        sockets: ServerSockets {
            listen,
            target,
            config: config.clone(),
            max_sessions,
        },
        local_addr,
        scratch: Scratch::default(),
    })
}

impl ServerSockets {
    /// Everything the endpoint produced: session sockets opened and closed first, then the
    /// packets onto the bridges and the datagrams to the target.
    fn flush_to(
        listen: &UdpSocket,
        target: &mut Target,
        e: &mut Server,
        log: &mut RateLimit,
        reg: &Registry,
    ) {
        // The event handler changes the target side, the sender reads it: they take turns.
        let target = std::cell::RefCell::new(target);
        flush(
            e,
            log,
            |server, ev| target.borrow_mut().on_event(reg, server, ev),
            |dest, data| {
                let mut failed = Failures::default();
                match *dest {
                    ServerDest::Bridge(addr) => failed.note(listen.send_to(data, addr), &addr),
                    ServerDest::Target(id) => target.borrow().deliver(id, data, &mut failed),
                }
                failed
            },
        );
    }
}

impl Sockets<Server> for ServerSockets {
    fn command(&mut self, e: &mut Server, cmd: Command, _: &Registry) -> Result<String, String> {
        match cmd {
            Command::SetMode(_) => Err("the mode is the client's to set; the server follows \
                                        what each client announces"
                .into()),
            Command::Reload(new, _) => {
                if let Some(why) = needs_restart(&self.config, &new) {
                    return Err(why);
                }
                let mut params = new.params.clone();
                params.max_sessions = self.max_sessions;
                e.set_params(params);
                self.config = *new;
                Ok("timing and limits applied".into())
            }
        }
    }

    fn service(
        &mut self,
        token: Token,
        e: &mut Server,
        scratch: &mut Scratch,
        reg: &Registry,
    ) -> bool {
        let Scratch {
            buf,
            send_err_log: log,
        } = scratch;
        let ServerSockets { listen, target, .. } = self;
        if token == LISTEN {
            return drain(listen, buf, &"listen socket", |data, from| {
                e.handle_datagram(Instant::now(), from, data);
                Self::flush_to(listen, target, e, log, reg);
            });
        }
        let slot = token.0 - SESSION_BASE;
        // The socket leaves its slot while it is drained, since flushing may open and close
        // other sessions' sockets.
        let Target::Udp(socks) = target else {
            return false;
        };
        let Some((id, sock)) = socks.slots.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        let more = drain(&sock, buf, &"session socket", |data, _| {
            e.handle_target(Instant::now(), id, data);
            Self::flush_to(listen, target, e, log, reg);
        });
        match target {
            Target::Udp(socks) if socks.by_id.get(&id) == Some(&slot) => {
                socks.slots[slot] = Some((id, sock));
                more
            }
            // The session ended meanwhile.
            _ => {
                let mut sock = sock;
                let _ = reg.deregister(&mut sock);
                false
            }
        }
    }

    fn on_wake(&mut self, e: &mut Server, log: &mut RateLimit, reg: &Registry) {
        if let Target::InProcess(q) = &self.target {
            for (peer, data) in q.take_outgoing() {
                e.handle_target(Instant::now(), peer, &data);
                Self::flush_to(&self.listen, &mut self.target, e, log, reg);
            }
        }
    }

    fn flush(&mut self, e: &mut Server, log: &mut RateLimit, reg: &Registry) {
        Self::flush_to(&self.listen, &mut self.target, e, log, reg);
    }
}
