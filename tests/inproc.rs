//! The in-process socket/listener pair and the Tunnel API, over real loopback sockets.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mptunnel::{Config, MultipathListener, MultipathSocket, Role, Tunnel};

fn listener() -> MultipathListener {
    let mut c = Config::new(Role::Server);
    c.set("listen", "127.0.0.1:0").unwrap();
    MultipathListener::bind(&c).unwrap()
}

fn socket_to(addr: std::net::SocketAddr, paths: usize) -> MultipathSocket {
    let mut c = Config::new(Role::Client);
    for _ in 0..paths {
        c.set("path", &addr.to_string()).unwrap();
    }
    MultipathSocket::connect(&c).unwrap()
}

#[test]
fn hello_counter_in_process() {
    let l = listener();
    let s = socket_to(l.local_addr(), 3);
    let mut n = 0u64;
    for _ in 0..200 {
        s.send(format!("{n} hello").as_bytes()).unwrap();
        let (msg, peer) = l.recv_from(Some(Duration::from_secs(5))).unwrap();
        let text = String::from_utf8(msg).unwrap();
        let got: u64 = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(got, n);
        l.send_to(format!("{} hello", got + 1).as_bytes(), peer)
            .unwrap();
        let back = String::from_utf8(s.recv(Some(Duration::from_secs(5))).unwrap()).unwrap();
        n = back.split(' ').next().unwrap().parse().unwrap();
    }
    assert_eq!(n, 200);
    // Three copies of each datagram went out; the listener delivered each once.
    assert!(l.stats().totals.duplicates >= 300, "{:?}", l.stats().totals);
    assert!(s.stats().totals.duplicates >= 300);
}

#[test]
fn close_wakes_a_blocked_recv_and_is_idempotent() {
    let l = listener();
    let s = Arc::new(socket_to(l.local_addr(), 1));
    let s2 = Arc::clone(&s);
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        let r = s2.recv(None);
        (r.map_err(|e| e.kind()), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    s.close();
    s.close();
    let (r, waited) = t.join().unwrap();
    assert_eq!(r, Err(ErrorKind::NotConnected));
    assert!(waited < Duration::from_secs(5));
    assert_eq!(
        s.send(b"x").map_err(|e| e.kind()),
        Err(ErrorKind::NotConnected)
    );
    assert_eq!(
        l.recv_from(Some(Duration::from_millis(50)))
            .map_err(|e| e.kind()),
        Err(ErrorKind::TimedOut)
    );
}

#[cfg(unix)]
#[test]
fn notify_fd_is_readable_when_a_datagram_waits() {
    let l = listener();
    let s = socket_to(l.local_addr(), 2);
    let fd = s.notify_fd();
    let readable = |ms: i32| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    };
    assert!(!readable(0));
    s.send(b"ping").unwrap();
    let (_, peer) = l.recv_from(Some(Duration::from_secs(5))).unwrap();
    l.send_to(b"pong", peer).unwrap();
    assert!(readable(5000));
    assert_eq!(s.recv(Some(Duration::ZERO)).unwrap(), b"pong");
    assert!(!readable(0), "drained queue leaves the fd quiet");
    // Closed with a datagram still queued: it is handed out, and the fd stays readable
    // (a poll loop then learns of the close from recv).
    l.send_to(b"last", peer).unwrap();
    assert!(readable(5000));
    s.close();
    assert_eq!(s.recv(Some(Duration::ZERO)).unwrap(), b"last");
    assert!(readable(0), "a closed socket's fd is readable");
    let e = s.recv(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotConnected);
}

#[test]
fn a_receiver_with_a_small_buffer_does_not_swallow_the_wake_up() {
    let l = Arc::new(listener());
    let s = socket_to(l.local_addr(), 1);
    // The small receiver waits first, so it is the one a single wake-up reaches.
    let l3 = Arc::clone(&l);
    let small = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        l3.recv_into(&mut buf, Some(Duration::from_secs(1)))
    });
    std::thread::sleep(Duration::from_millis(50));
    let l2 = Arc::clone(&l);
    let big = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let r = l2.recv_into(&mut buf, Some(Duration::from_secs(5)));
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100)); // both wait
    let sent = Instant::now();
    s.send(&[7u8; 1000]).unwrap();
    let (got, at) = big.join().unwrap();
    let got = got.unwrap();
    assert!(
        matches!(got, mptunnel::RecvInto::Datagram { len: 1000, .. }),
        "{got:?}"
    );
    let waited = at - sent;
    assert!(
        waited < Duration::from_secs(1),
        "the big receiver slept {waited:?}"
    );
    // The small one either saw it first (TooSmall) or timed out after the big one took it.
    match small.join().unwrap() {
        Ok(r) => assert_eq!(r, mptunnel::RecvInto::TooSmall { needed: 1000 }),
        Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut),
    }
}

#[test]
fn socket_through_a_tunnel_server_to_a_udp_service() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut b) {
            let _ = echo.send_to(&b[..n], from);
        }
    });
    let mut c = Config::new(Role::Server);
    c.set("listen", "127.0.0.1:0").unwrap();
    c.set("target", &echo_addr.to_string()).unwrap();
    let server = Tunnel::new(&c).unwrap();
    let addr = server.local_addr();
    let running = server.start().unwrap();
    let handle = running.handle().clone();
    let s = socket_to(addr, 2);
    for i in 0..50u32 {
        s.send(&i.to_be_bytes()).unwrap();
        assert_eq!(
            s.recv(Some(Duration::from_secs(5))).unwrap(),
            i.to_be_bytes()
        );
    }
    let st = handle.stats(); // a fresh snapshot from the loop
    assert_eq!(st.sessions, 1);
    assert_eq!(st.totals.local_tx_datagrams, 50);
    assert!(st.to_json().contains("\"role\":\"server\""));
    drop(s); // sends CLOSE
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(handle.stats().sessions, 0, "CLOSE freed the session");
    running.stop().unwrap();
    assert!(!handle.is_running());
}

#[test]
fn config_errors_from_the_api() {
    let mut c = Config::new(Role::Client);
    assert!(c
        .set("path", "nowhere")
        .unwrap_err()
        .to_string()
        .contains("nowhere"));
    c.set("listen", "127.0.0.1:0").unwrap();
    let e = Tunnel::new(&c).unwrap_err().to_string();
    assert!(e.contains("no paths"), "{e}");
    // A socket is a client and a listener a server: the other role is refused for that
    // reason (the configs are otherwise complete for their own role).
    let mut s = Config::new(Role::Server);
    s.set("listen", "127.0.0.1:0").unwrap();
    match MultipathSocket::connect(&s) {
        Err(mptunnel::Error::Config(e)) => {
            assert!(e.to_string().contains("client configuration"), "{e}")
        }
        Err(e) => panic!("a socket from a server config: {e}"),
        Ok(_) => panic!("a socket from a server config connected"),
    }
    let mut cl = Config::new(Role::Client);
    cl.set("path", "127.0.0.1:9").unwrap();
    match MultipathListener::bind(&cl) {
        Err(mptunnel::Error::Config(e)) => {
            assert!(e.to_string().contains("server configuration"), "{e}")
        }
        Err(e) => panic!("a listener from a client config: {e}"),
        Ok(_) => panic!("a listener from a client config bound"),
    }
    let mut bad = Config::new(Role::Server);
    bad.set("listen", "127.0.0.1:0").unwrap();
    bad.set("target", "no-such-host.invalid:1").unwrap();
    let e = Tunnel::new(&bad).unwrap_err().to_string();
    assert!(e.contains("no-such-host.invalid"), "{e}");
}

#[test]
fn recv_into_keeps_a_datagram_that_does_not_fit() {
    use mptunnel::RecvInto;
    let l = listener();
    let s = socket_to(l.local_addr(), 2);
    assert_eq!(s.max_datagram(), mptunnel::protocol::packet::MAX_DATAGRAM);
    s.send(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    let r = l
        .recv_into(&mut small, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(r, RecvInto::TooSmall { needed: 10 });
    assert_eq!(small, [0; 4], "nothing written");
    let mut big = [0u8; 64];
    let r = l.recv_into(&mut big, Some(Duration::ZERO)).unwrap();
    let RecvInto::Datagram { len, peer } = r else {
        panic!("{r:?}")
    };
    assert_eq!(&big[..len], b"0123456789");
    assert_ne!(peer, 0);
    let e = l.recv_into(&mut big, Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    l.send_to(b"", peer).unwrap();
    let r = s.recv_into(&mut [], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(r, RecvInto::Datagram { len: 0, peer: 0 });
}

#[test]
fn datagrams_queued_before_close_still_go_out() {
    let l = listener();
    for round in 0..20 {
        let s = socket_to(l.local_addr(), 2);
        for i in 0..50 {
            s.send(format!("{round} {i}").as_bytes()).unwrap();
        }
        drop(s); // close at once: the queue is flushed before CLOSE
        for i in 0..50 {
            let (msg, _) = l.recv_from(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(msg, format!("{round} {i}").as_bytes());
        }
    }
}
