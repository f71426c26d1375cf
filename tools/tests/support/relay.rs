//! A relay inside the test: forwards like a bridge, and can replay or corrupt.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::garbage::Rng;
use super::{lock, STARTUP};

/// What an in-test relay does besides forwarding every datagram at once (both directions).
#[derive(Clone, Debug)]
pub enum RelayKind {
    /// Sends every datagram again after each of these delays.
    Replay(Vec<Duration>),
    /// Sends, before each datagram, a copy with one random bit flipped (xorshift seed).
    Flip(u64),
    /// Sends every client datagram to the server again from this many other source ports,
    /// which it replaces with fresh ones every 100 datagrams (a port-hopping replayer).
    PortHop(usize),
}

/// A UDP relay on two sockets (front for the client, back connected to the server) run by two
/// threads, doing what its [`RelayKind`] says.
pub struct Relay {
    pub addr: SocketAddr,
    front: UdpSocket,
    back: UdpSocket,
    client: Arc<Mutex<Option<SocketAddr>>>,
    /// Copies replayed or bit-flipped copies sent.
    pub replayed: Arc<AtomicU64>,
    /// Forwarded datagrams that were not SEALED mptunnel v2 packets (flags bit 0 clear).
    pub plain: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Relay {
    pub fn start(ip: IpAddr, upstream: SocketAddr, kind: &RelayKind) -> Relay {
        let (replays, flip, hop) = match kind {
            RelayKind::Replay(d) => (d.clone(), None, 0),
            RelayKind::Flip(seed) => (vec![], Some(*seed), 0),
            RelayKind::PortHop(n) => (vec![], None, *n),
        };
        let front = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind relay front");
        let back = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind relay back");
        back.connect(upstream).expect("connect relay back");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
        }
        let addr = front.local_addr().expect("local_addr");
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let replayed = Arc::new(AtomicU64::new(0));
        let plain = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for up in [true, false] {
            let front = front.try_clone().expect("clone");
            let back = back.try_clone().expect("clone");
            let client = Arc::clone(&client);
            let replayed = Arc::clone(&replayed);
            let plain = Arc::clone(&plain);
            let stop = Arc::clone(&stop);
            let replays = replays.clone();
            // Each direction its own stream (a zero xorshift state would stay zero).
            let mut flipper = flip.map(|seed| Rng((seed ^ u64::from(up)).max(1)));
            let fresh_ports = move || -> Vec<UdpSocket> {
                (0..if up { hop } else { 0 })
                    .map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind hopper"))
                    .collect()
            };
            threads.push(thread::spawn(move || {
                let mut hoppers = fresh_ports();
                let mut hopped = 0u64;
                let mut queues: Vec<VecDeque<(Instant, Vec<u8>)>> =
                    replays.iter().map(|_| VecDeque::new()).collect();
                let mut buf = vec![0u8; 65_536];
                let forward = |data: &[u8]| {
                    if up {
                        let _ = back.send(data);
                    } else if let Some(to) = *lock(&client) {
                        let _ = front.send_to(data, to);
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let got = if up {
                        front.recv_from(&mut buf).map(|(n, from)| {
                            *lock(&client) = Some(from);
                            n
                        })
                    } else {
                        back.recv(&mut buf)
                    };
                    if let Ok(n) = got {
                        if let Some(rng) = flipper.as_mut().filter(|_| n > 0) {
                            let mut copy = buf[..n].to_vec();
                            let bit = rng.below(n as u64 * 8) as usize;
                            copy[bit / 8] ^= 1 << (bit % 8);
                            forward(&copy);
                            replayed.fetch_add(1, Ordering::Relaxed);
                        }
                        if n < 3 || buf[0] != 0xD2 || buf[2] & 1 == 0 {
                            plain.fetch_add(1, Ordering::Relaxed);
                        }
                        forward(&buf[..n]);
                        if !hoppers.is_empty() {
                            for h in &hoppers {
                                let _ = h.send_to(&buf[..n], upstream);
                                replayed.fetch_add(1, Ordering::Relaxed);
                            }
                            hopped += 1;
                            if hopped % 100 == 0 {
                                hoppers = fresh_ports();
                            }
                        }
                        let now = Instant::now();
                        for (q, d) in queues.iter_mut().zip(&replays) {
                            q.push_back((now + *d, buf[..n].to_vec()));
                        }
                    }
                    let now = Instant::now();
                    for q in &mut queues {
                        while q.front().is_some_and(|(t, _)| *t <= now) {
                            let (_, data) = q.pop_front().expect("front");
                            forward(&data);
                            replayed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Relay {
            addr,
            front,
            back,
            client,
            replayed,
            plain,
            stop,
            threads,
        }
    }

    /// Sends `data` to the client's path socket from the address it is connected to.
    pub fn inject_to_client(&self, data: &[u8]) {
        let deadline = Instant::now() + STARTUP;
        let to = loop {
            if let Some(to) = *lock(&self.client) {
                break to;
            }
            assert!(
                Instant::now() < deadline,
                "the relay never heard from mpclient"
            );
            thread::sleep(Duration::from_millis(5));
        };
        let _ = self.front.send_to(data, to);
    }

    /// Sends `data` to the server from the address it knows as this path.
    pub fn inject_to_server(&self, data: &[u8]) {
        let _ = self.back.send(data);
    }
}
