//! End-to-end tests: mpclient, mpserver, bridges (mpbridge, socat or a relay in this file)
//! and mpperf as real processes on the loopback interface.
//!
//! The topology is the seed's sample:
//!
//! ```text
//! mpperf load -> mpclient -> 3 bridges -> mpserver -> mpperf echo
//! ```
//!
//! Tests hold a global lock for their whole run, so topologies never compete for the CPU.
//! Every tool binds port 0 where it can and reports its address in its "listening on" log
//! line; the few fixed ports (restarts, socat) come from the kernel a moment earlier.
#![cfg(unix)] // signals and process control via libc

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const CLIENT: &str = env!("CARGO_BIN_EXE_mpclient");
const SERVER: &str = env!("CARGO_BIN_EXE_mpserver");
const BRIDGE: &str = env!("CARGO_BIN_EXE_mpbridge");
const PERF: &str = env!("CARGO_BIN_EXE_mpperf");

/// Generous, because a loaded 2-core machine can be slow to start a process.
const STARTUP: Duration = Duration::from_secs(15);
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

static LOCK: Mutex<()> = Mutex::new(());

/// Serializes the tests; a failed (poisoned) test does not stop the others.
fn serial() -> MutexGuard<'static, ()> {
    lock(&LOCK)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A running tool with its stderr collected line by line; killed and reaped when dropped.
struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &str, bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(name, bin, args, &[])
    }

    /// Same with `env` added to an environment cleared of the key variables.
    fn spawn_env(name: &str, bin: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env_remove("MPTUNNEL_KEY")
            .env_remove("MPTUNNEL_ENCRYPT")
            .env_remove("MPTUNNELENCRYPT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({bin} {args:?}): {e}"));
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lock(&sink).push(line);
            }
        });
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// The last `n` stderr lines, for assertion messages.
    fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- {} stderr ---\n{}",
            self.name,
            lines[start..].join("\n")
        )
    }

    /// Waits for a stderr line containing `needle` (skipping the first `skip` lines).
    fn wait_for_line(&mut self, needle: &str, skip: usize) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(l) = self.lines().iter().skip(skip).find(|l| l.contains(needle)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50)); // let the reader catch the last lines
                panic!(
                    "{} exited ({status}) before logging '{needle}'\n{}",
                    self.name,
                    self.tail(30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log '{needle}' within {STARTUP:?}\n{}",
                self.name,
                self.tail(30)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet (we hold it).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) of {}", self.name);
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(20)); // let the reader catch the last lines
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, expecting exit status 0 within 2 s.
    fn terminate_cleanly(&mut self) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(2));
        let name = &self.name;
        match status {
            Some(s) => assert!(
                s.success(),
                "{name} exited with {s} on SIGTERM\n{}",
                self.tail(20)
            ),
            None => panic!("{name} still running 2 s after SIGTERM\n{}", self.tail(20)),
        }
        println!("{name}: exit 0 {:?} after SIGTERM", t0.elapsed());
    }
}

/// Starts a tool at log level info and waits for its "listening on ADDR" line.
fn start(name: &str, bin: &str, args: &[&str]) -> (Proc, SocketAddr) {
    start_env(name, bin, args, &[])
}

/// Same with `env` in its environment.
fn start_env(name: &str, bin: &str, args: &[&str], env: &[(String, String)]) -> (Proc, SocketAddr) {
    let mut all = args.to_vec();
    all.extend(["--log-level", "info"]);
    let mut p = Proc::spawn_env(name, bin, &all, env);
    let line = p.wait_for_line("listening on ", 0);
    let rest = line.split("listening on ").nth(1).unwrap_or_default();
    let word = rest.split([',', ' ']).next().unwrap_or_default();
    let addr = word
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?} of {name}"));
    (p, addr)
}

fn any_port(ip: IpAddr) -> String {
    SocketAddr::new(ip, 0).to_string()
}

fn start_echo(ip: IpAddr) -> (Proc, SocketAddr) {
    start("echo", PERF, &["echo", &any_port(ip)])
}

/// Extra arguments and environment of mpclient or mpserver (a key, a stats interval).
#[derive(Clone, Debug, Default)]
struct End {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl End {
    /// `--key-file FILE`.
    fn key_file(f: &TempFile) -> End {
        End::default().with(&["--key-file", f.0.to_str().expect("utf-8 temp path")])
    }

    /// `MPTUNNEL_KEY=<key>` in the environment.
    fn key_env(key: &str) -> End {
        End {
            args: vec![],
            env: vec![("MPTUNNEL_KEY".into(), key.into())],
        }
    }

    fn with(mut self, args: &[&str]) -> End {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

fn start_server(listen: &str, target: SocketAddr, end: &End) -> (Proc, SocketAddr) {
    let target = target.to_string();
    let mut args = vec!["--listen", listen, "--target", &target];
    args.extend(end.args.iter().map(String::as_str));
    start_env("mpserver", SERVER, &args, &end.env)
}

fn start_bridge(
    name: &str,
    ip: IpAddr,
    upstream: SocketAddr,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let up = upstream.to_string();
    let mut args = vec![];
    args.extend_from_slice(extra);
    let listen = any_port(ip);
    args.extend([listen.as_str(), up.as_str()]);
    start(name, BRIDGE, &args)
}

fn start_client(listen: &str, conf: &Path, end: &End) -> (Proc, SocketAddr) {
    let conf = conf.to_str().expect("utf-8 temp path");
    let mut args = vec!["--listen", listen, conf];
    args.extend(end.args.iter().map(String::as_str));
    start_env("mpclient", CLIENT, &args, &end.env)
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mptunnel-e2e-{}-{n}-{name}", std::process::id()));
        fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The client config for the given bridges: the seed's `HOST PORT` lines (IPv6 bare).
fn client_conf(paths: &[SocketAddr]) -> TempFile {
    let mut text = String::from("# written by tests/e2e.rs\n");
    for p in paths {
        text.push_str(&format!("{} {}\n", p.ip(), p.port()));
    }
    TempFile::new("client.conf", &text)
}

/// A port that was free a moment ago (on all IPv4 addresses, as the seed's bare ports bind).
fn free_port() -> u16 {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.local_addr().expect("local_addr").port()
}

/// True when some process has a UDP socket bound to `port` (IPv4 or IPv6).
fn udp_port_bound(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&hex))
            })
        })
    })
}

/// Sends probe datagrams to `target` until one comes back: the whole chain is up.
fn wait_roundtrip(target: SocketAddr, diag: &dyn Fn() -> String) {
    let sock = UdpSocket::bind(SocketAddr::new(target.ip(), 0)).expect("bind probe socket");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + STARTUP;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = sock.send_to(b"e2e-probe", target);
        let t = Instant::now() + Duration::from_millis(50);
        while Instant::now() < t {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"e2e-probe" {
                    return;
                }
            }
        }
    }
    panic!(
        "no probe came back through {target} within {STARTUP:?}\n{}",
        diag()
    );
}

// ---------------------------------------------------------------------------------------------
// mpperf load

/// A running `mpperf load --json`; killed if dropped before [`Load::finish`].
struct Load {
    child: Option<Child>,
    what: String,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Load {
    fn spawn(target: SocketAddr, args: &[&str]) -> Load {
        let what = format!("mpperf load --target {target} {}", args.join(" "));
        let child = Command::new(PERF)
            .args(["load", "--json", "--target", &target.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Load {
            child: Some(child),
            what,
        }
    }

    fn finish(mut self) -> Value {
        let child = self.child.take().expect("finish once");
        let out = child.wait_with_output().expect("wait for mpperf load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{} failed: {stderr}", self.what);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: bad JSON ({e}): {}",
                self.what,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

fn load(target: SocketAddr, args: &[&str]) -> Value {
    Load::spawn(target, args).finish()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Datagrams that did not come back, counting sends refused while nothing listened.
fn lost(v: &Value) -> f64 {
    num(v, "sent") + num(v, "send_errors") - num(v, "received")
}

fn summary(label: &str, r: &Value) -> String {
    let rtt = &r["rtt_ms"];
    let ms = |k: &str| rtt[k].as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    format!(
        "{label:<8} sent {} (+{} refused) received {} dup {} corrupt {} foreign {} loss {:.3}% \
         rtt ms p50 {} p99 {} max {}",
        r["sent"],
        r["send_errors"],
        r["received"],
        r["duplicates"],
        r["corrupt"],
        r["foreign"],
        num(r, "loss_pct"),
        ms("p50"),
        ms("p99"),
        ms("max"),
    )
}

/// No duplicate, no corrupt and no foreign datagram reached the app.
fn assert_clean(r: &Value, ctx: &dyn Fn() -> String) {
    for key in ["duplicates", "corrupt", "foreign"] {
        assert_eq!(num(r, key), 0.0, "{key} in {r}\n{}", ctx());
    }
}

// ---------------------------------------------------------------------------------------------
// A relay inside the test: forwards like a bridge, can replay and inject

/// What an in-test relay does besides forwarding every datagram at once (both directions).
#[derive(Clone, Debug)]
enum RelayKind {
    /// Sends every datagram again after each of these delays.
    Replay(Vec<Duration>),
    /// Sends, before each datagram, a copy with one random bit flipped (xorshift seed).
    Flip(u64),
}

/// A UDP relay on two sockets (front for the client, back connected to the server) run by two
/// threads, doing what its [`RelayKind`] says.
struct Relay {
    addr: SocketAddr,
    front: UdpSocket,
    back: UdpSocket,
    client: Arc<Mutex<Option<SocketAddr>>>,
    /// Copies replayed or bit-flipped copies sent.
    replayed: Arc<AtomicU64>,
    /// Forwarded datagrams that were not SEALED mptunnel packets (flags bit 0 clear).
    plain: Arc<AtomicU64>,
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
    fn start(ip: IpAddr, upstream: SocketAddr, kind: &RelayKind) -> Relay {
        let (replays, flip) = match kind {
            RelayKind::Replay(d) => (d.clone(), None),
            RelayKind::Flip(seed) => (vec![], Some(*seed)),
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
            threads.push(thread::spawn(move || {
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
                        if n < 3 || buf[0] != 0xD1 || buf[2] & 1 == 0 {
                            plain.fetch_add(1, Ordering::Relaxed);
                        }
                        forward(&buf[..n]);
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
    fn inject_to_client(&self, data: &[u8]) {
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
    fn inject_to_server(&self, data: &[u8]) {
        let _ = self.back.send(data);
    }
}

// ---------------------------------------------------------------------------------------------
// Topology

/// How to build a [`Topo`] beyond the plain one.
#[derive(Default)]
struct Setup<'a> {
    /// One mpbridge per entry (its extra arguments).
    bridges: &'a [&'a [&'a str]],
    /// In-test relays, after the bridges in the client's config.
    relays: Vec<RelayKind>,
    server: End,
    client: End,
    /// Do not wait for a probe to come back through the tunnel (it is not meant to).
    no_wait: bool,
}

/// echo <- mpserver <- bridges (and maybe in-test relays) <- mpclient, all on `ip`.
/// Fields drop (and so die) client first.
struct Topo {
    ip: IpAddr,
    client: Proc,
    client_addr: SocketAddr,
    client_end: End,
    relays: Vec<Relay>,
    bridges: Vec<Proc>,
    bridge_addrs: Vec<SocketAddr>,
    server: Proc,
    server_addr: SocketAddr,
    server_end: End,
    echo: Proc,
    echo_addr: SocketAddr,
    conf: TempFile,
}

impl Topo {
    /// One mpbridge per entry of `bridges` (its extra arguments), then the in-test relay if
    /// `relay` is given (its replay delays).
    fn start(ip: IpAddr, bridges: &[&[&str]], relay: Option<&[Duration]>) -> Topo {
        let relays = relay.map(|d| RelayKind::Replay(d.to_vec()));
        Topo::with(
            ip,
            Setup {
                bridges,
                relays: relays.into_iter().collect(),
                ..Setup::default()
            },
        )
    }

    fn with(ip: IpAddr, setup: Setup) -> Topo {
        let (echo, echo_addr) = start_echo(ip);
        let (server, server_addr) = start_server(&any_port(ip), echo_addr, &setup.server);
        let mut procs = Vec::new();
        let mut paths = Vec::new();
        for (i, extra) in setup.bridges.iter().enumerate() {
            let (p, a) = start_bridge(&format!("mpbridge{}", i + 1), ip, server_addr, extra);
            procs.push(p);
            paths.push(a);
        }
        let bridge_addrs = paths.clone();
        let relays: Vec<Relay> = setup
            .relays
            .iter()
            .map(|kind| Relay::start(ip, server_addr, kind))
            .collect();
        paths.extend(relays.iter().map(|r| r.addr));
        let conf = client_conf(&paths);
        let (client, client_addr) = start_client(&any_port(ip), &conf.0, &setup.client);
        let t = Topo {
            ip,
            client,
            client_addr,
            client_end: setup.client,
            relays,
            bridges: procs,
            bridge_addrs,
            server,
            server_addr,
            server_end: setup.server,
            echo,
            echo_addr,
            conf,
        };
        if !setup.no_wait {
            wait_roundtrip(t.client_addr, &|| t.diag());
        }
        t
    }

    /// Recent stderr of the tunnel's processes.
    fn diag(&self) -> String {
        let mut s = format!("{}\n{}", self.client.tail(15), self.server.tail(15));
        for b in &self.bridges {
            s.push('\n');
            s.push_str(&b.tail(5));
        }
        s.push('\n');
        s.push_str(&self.echo.tail(5));
        s
    }

    /// Stops mpserver with `sig`, restarts it on the same address after `pause`, and
    /// returns the time from the signal until the new one listened.
    fn restart_server(&mut self, sig: libc::c_int, pause: Duration) -> Duration {
        let t0 = Instant::now();
        self.server.signal(sig);
        let st = self.server.wait_exit(Duration::from_secs(5));
        assert!(
            st.is_some(),
            "mpserver survived signal {sig}\n{}",
            self.diag()
        );
        thread::sleep(pause);
        let (p, addr) = start_server(
            &self.server_addr.to_string(),
            self.echo_addr,
            &self.server_end,
        );
        let downtime = t0.elapsed();
        assert_eq!(addr, self.server_addr);
        self.server = p;
        downtime
    }

    /// Same for mpclient, with the same listen address and config file.
    fn restart_client(&mut self, sig: libc::c_int, pause: Duration) -> Duration {
        let t0 = Instant::now();
        self.client.signal(sig);
        let st = self.client.wait_exit(Duration::from_secs(5));
        assert!(
            st.is_some(),
            "mpclient survived signal {sig}\n{}",
            self.diag()
        );
        thread::sleep(pause);
        let (p, addr) = start_client(
            &self.client_addr.to_string(),
            &self.conf.0,
            &self.client_end,
        );
        let downtime = t0.elapsed();
        assert_eq!(addr, self.client_addr);
        self.client = p;
        downtime
    }

    fn all_alive(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        let procs = [&mut self.client, &mut self.server, &mut self.echo]
            .into_iter()
            .chain(self.bridges.iter_mut());
        for p in procs {
            if !p.alive() {
                dead.push(format!("{} died\n{}", p.name, p.tail(20)));
            }
        }
        dead
    }
}

/// Counters from the stats text of an endpoint (`dropped: 1 dup, 2 old, 3 malformed, ...`):
/// the last line of `p`'s stderr that has them.
fn dropped_counter(p: &Proc, what: &str) -> u64 {
    let lines = p.lines();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("dropped:"))
        .unwrap_or_else(|| panic!("no stats line\n{}", p.tail(20)));
    let rest = line.split("dropped:").nth(1).unwrap_or_default();
    rest.split(',')
        .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no '{what}' counter in {line:?}"))
}

// ---------------------------------------------------------------------------------------------
// Garbage

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A packet laid out as in docs/PROTOCOL.md, with a right or wrong CRC.
#[allow(clippy::too_many_arguments)]
fn packet(
    ty: u8,
    flags: u8,
    reserved: u8,
    session: u64,
    epoch: u64,
    seq: u64,
    payload: &[u8],
    good_crc: bool,
) -> Vec<u8> {
    let mut p = vec![0xD1, ty, flags, reserved];
    p.extend(session.to_be_bytes());
    p.extend(epoch.to_be_bytes());
    p.extend(seq.to_be_bytes());
    p.extend(payload);
    let crc = crc32(&p) ^ u32::from(!good_crc);
    p.extend(crc.to_be_bytes());
    p
}

/// Random bytes, 0xD1-prefixed noise, every type/flag/reserved combination with right and
/// wrong CRCs, well-formed packets of unknown sessions, and truncated and bit-flipped copies.
fn garbage(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..300 {
        let n = rng.below(2000) as usize;
        out.push(rng.bytes(n));
    }
    for _ in 0..100 {
        let n = 1 + rng.below(200) as usize;
        let mut d = rng.bytes(n);
        d[0] = 0xD1;
        out.push(d);
    }
    let mut valid = Vec::new();
    for ty in 0..=9u8 {
        for flags in [0u8, 1, 2, 0x80] {
            for reserved in [0u8, 7] {
                for good in [true, false] {
                    let session = if rng.below(4) == 0 { 0 } else { rng.next() };
                    let n = rng.below(64) as usize;
                    let payload = rng.bytes(n);
                    let p = packet(
                        ty,
                        flags,
                        reserved,
                        session,
                        rng.next(),
                        rng.next(),
                        &payload,
                        good,
                    );
                    if good && flags == 0 && reserved == 0 {
                        valid.push(p.clone());
                    }
                    out.push(p);
                }
            }
        }
    }
    // Well-formed packets that belong to nobody: new sessions, closes, probes and acks.
    for _ in 0..10 {
        let n = rng.below(1500) as usize;
        let data = rng.bytes(n);
        valid.push(packet(
            1,
            0,
            0,
            rng.next(),
            rng.next(),
            1 + rng.below(100),
            &data,
            true,
        ));
        valid.push(packet(
            4,
            0,
            0,
            rng.next(),
            rng.next(),
            rng.next(),
            &[],
            true,
        ));
        let token = rng.bytes(8);
        valid.push(packet(2, 0, 0, 0, rng.next(), rng.next(), &token, true));
        let ack = rng.bytes(24);
        valid.push(packet(3, 0, 0, 0, rng.next(), rng.next(), &ack, true));
    }
    for p in &valid {
        for _ in 0..3 {
            let cut = rng.below(p.len() as u64) as usize;
            out.push(p[..cut].to_vec());
            let mut flipped = p.clone();
            let bit = rng.below(p.len() as u64 * 8) as usize;
            flipped[bit / 8] ^= 1 << (bit % 8);
            out.push(flipped);
        }
    }
    out.extend(valid);
    let mut big = rng.bytes(65_507);
    big[..4].copy_from_slice(&[0xD1, 1, 0, 0]);
    out.push(big);
    out
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 1. The seed's sample with lossless bridges: nothing lost, duplicated or damaged at
///    5000 datagrams/s of 1200 bytes.
#[test]
fn seed_topology_lossless() {
    let _g = serial();
    let t = Topo::start(V4, &[&[], &[], &[]], None);
    let args = [
        "--rate",
        "5000",
        "--size",
        "1200",
        "--duration",
        "3",
        "--label",
        "tunnel",
    ];
    let r = load(t.client_addr, &args);
    let ctx = || format!("{}\n{}", summary("tunnel", &r), t.diag());
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "send_errors"), 0.0, "{}", ctx());
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
    let d = load(t.echo_addr, &args);
    println!("{}", summary("direct", &d));
    println!("{}", summary("tunnel", &r));
}

/// 2. Three bridges losing 30 % each way: a datagram survives a direction if one of three
///    copies does, so the round trip loses 1 - (1 - 0.3^3)^2 = 5.33 %.
#[test]
fn lossy_bridges_loss_is_product() {
    let _g = serial();
    let t = Topo::start(
        V4,
        &[
            &["--loss", "30", "--seed", "11"],
            &["--loss", "30", "--seed", "22"],
            &["--loss", "30", "--seed", "33"],
        ],
        None,
    );
    let r = load(
        t.client_addr,
        &["--rate", "2500", "--size", "200", "--duration", "8"],
    );
    let ctx = || format!("{}\n{}", summary("lossy", &r), t.diag());
    println!("{}", summary("lossy", &r));
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "sent"), 20_000.0, "{}", ctx());
    let expected = 100.0 * (1.0 - (1.0 - 0.3f64.powi(3)).powi(2));
    let loss = num(&r, "loss_pct");
    assert!(
        (loss - expected).abs() <= 1.0,
        "loss {loss:.3}% vs expected {expected:.2}%\n{}",
        ctx()
    );
    // A 30 %-loss path must not flap down (PROTOCOL.md: about 1e-8 per silent episode).
    let downs: Vec<String> = t
        .client
        .lines()
        .into_iter()
        .filter(|l| l.contains(" is down"))
        .collect();
    assert!(downs.is_empty(), "paths went down: {downs:?}");
}

/// 3. The seed's exact commands with socat bridges.
#[test]
fn socat_bridges_seed_commands() {
    let _g = serial();
    let found = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("NOTE: socat not on PATH; socat_bridges_seed_commands skipped");
        return;
    }
    let (echo, echo_addr) = start_echo(V4);
    let server_port = free_port().to_string();
    let echo_port = echo_addr.port().to_string();
    let mut server = Proc::spawn(
        "mpserver",
        SERVER,
        &[&server_port, "localhost", &echo_port, "--log-level", "info"],
    );
    server.wait_for_line("listening on", 0);
    let mut socats = Vec::new();
    let mut conf_text = String::new();
    for i in 0..3 {
        let port = free_port();
        let p = Proc::spawn(
            &format!("socat{}", i + 1),
            "socat",
            &[
                &format!("udp-listen:{port}"),
                &format!("udp4:localhost:{server_port}"),
            ],
        );
        let deadline = Instant::now() + STARTUP;
        while !udp_port_bound(port) {
            assert!(Instant::now() < deadline, "socat did not bind {port}");
            thread::sleep(Duration::from_millis(5));
        }
        socats.push(p);
        conf_text.push_str(&format!("localhost {port}\n"));
    }
    let conf = TempFile::new("client.conf", &conf_text);
    let client_port = free_port().to_string();
    let conf_path = conf.0.to_str().expect("utf-8").to_string();
    let mut client = Proc::spawn(
        "mpclient",
        CLIENT,
        &[&client_port, &conf_path, "--log-level", "info"],
    );
    client.wait_for_line("listening on", 0);
    let client_addr: SocketAddr = format!("127.0.0.1:{client_port}").parse().expect("addr");
    let diag = || {
        let mut s = format!("{}\n{}\n{}", client.tail(15), server.tail(15), echo.tail(5));
        for p in &socats {
            s.push('\n');
            s.push_str(&p.tail(5));
        }
        s
    };
    wait_roundtrip(client_addr, &diag);
    let r = load(
        client_addr,
        &["--rate", "1000", "--size", "1000", "--duration", "3"],
    );
    println!("{}", summary("socat", &r));
    let ctx = || format!("{}\n{}", summary("socat", &r), diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
}

/// Shared body of the server-restart tests.
fn server_restart_mid_stream(sig: libc::c_int, secs: f64) {
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let secs_s = secs.to_string();
    let run = Load::spawn(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            &secs_s,
            "--wait",
            "2",
        ],
    );
    thread::sleep(Duration::from_secs_f64(secs / 3.0));
    let downtime = t.restart_server(sig, Duration::from_millis(200));
    let r = run.finish();
    let lost = lost(&r);
    let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
    let label = format!("srv-{sig}");
    println!(
        "{}; server down {downtime:.2?}, {lost} lost",
        summary(&label, &r)
    );
    let ctx = || {
        format!(
            "{}\ndowntime {downtime:?}\n{}",
            summary(&label, &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(
        lost <= allowed,
        "{lost} lost, more than {allowed} the downtime explains\n{}",
        ctx()
    );
    assert!(num(&r, "loss_pct") < 15.0, "{}", ctx());
    // The tunnel carries on without a hitch afterwards.
    let after = load(t.client_addr, &["--rate", "1000", "--duration", "1"]);
    assert_clean(&after, &ctx);
    assert!(num(&after, "loss_pct") < 1.0, "after: {after}\n{}", ctx());
}

/// 4. mpserver killed hard and restarted on the same port; mpclient keeps running.
#[test]
fn server_restart_sigkill() {
    let _g = serial();
    server_restart_mid_stream(libc::SIGKILL, 6.0);
}

/// 4b. Same with a clean stop (the server sends CLOSE for its sessions).
#[test]
fn server_restart_sigterm() {
    let _g = serial();
    server_restart_mid_stream(libc::SIGTERM, 4.0);
}

/// 5. mpclient killed hard and restarted on the same port; mpserver keeps running.
#[test]
fn client_restart_sigkill() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let run = Load::spawn(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            "6",
            "--wait",
            "2",
        ],
    );
    thread::sleep(Duration::from_secs(2));
    let downtime = t.restart_client(libc::SIGKILL, Duration::from_millis(200));
    let r = run.finish();
    let lost = lost(&r);
    let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
    println!(
        "{}; client down {downtime:.2?}, {lost} lost",
        summary("cli-kill", &r)
    );
    let ctx = || {
        format!(
            "{}\ndowntime {downtime:?}\n{}",
            summary("cli-kill", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(
        lost <= allowed,
        "{lost} lost, more than {allowed} the downtime explains\n{}",
        ctx()
    );
    assert!(
        lost / (num(&r, "sent") + num(&r, "send_errors")) < 0.15,
        "{}",
        ctx()
    );
}

/// 6. Two apps on one mpclient at once: each is its own session and gets only its own replies.
#[test]
fn two_apps_one_client() {
    let _g = serial();
    let t = Topo::start(V4, &[&[], &[], &[]], None);
    let args = ["--rate", "1000", "--size", "800", "--duration", "3"];
    let a = Load::spawn(t.client_addr, &args);
    let b = Load::spawn(t.client_addr, &args);
    let (ra, rb) = (a.finish(), b.finish());
    println!("{}\n{}", summary("app A", &ra), summary("app B", &rb));
    for (name, r) in [("A", &ra), ("B", &rb)] {
        let ctx = || format!("app {name}: {}\n{}", summary(name, r), t.diag());
        assert_clean(r, &ctx);
        assert_eq!(num(r, "sent"), 3000.0, "{}", ctx());
        assert!(num(r, "loss_pct") < 1.0, "{}", ctx());
    }
}

/// 7. Bridges that duplicate every datagram and reorder some: the app never sees a copy twice.
#[test]
fn duplicating_bridges_never_duplicate() {
    let _g = serial();
    let imp: &[&str] = &["--duplicate", "100", "--reorder", "30"];
    let t = Topo::start(V4, &[imp, imp, imp], None);
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "2"],
    );
    println!("{}", summary("dup+reo", &r));
    let ctx = || format!("{}\n{}", summary("dup+reo", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
}

/// 7b. A relay that replays every datagram 300 ms and 2 s later (both directions): still no
///     duplicate reaches the app.
#[test]
fn replaying_relay_never_duplicates() {
    let _g = serial();
    let replays = [Duration::from_millis(300), Duration::from_secs(2)];
    let t = Topo::start(V4, &[&[], &[]], Some(&replays));
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "4"],
    );
    let relay = t.relays.first().expect("relay");
    let replayed = relay.replayed.load(Ordering::Relaxed);
    println!("{}; relay replayed {replayed}", summary("replay", &r));
    let ctx = || {
        format!(
            "{}\nreplayed {replayed}\n{}",
            summary("replay", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
    // Most of the run was replayed (in both directions) while mpperf listened.
    assert!(replayed as f64 > 1.5 * num(&r, "sent"), "{}", ctx());
}

/// 8. Garbage at every port that can be reached (mpserver, each bridge, the client's path
///    sockets through the in-test relay, and the app port): no harm, and it is counted.
#[test]
fn garbage_is_dropped_and_counted() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[]], Some(&[]));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("garbage seed {seed}");
    let mut rng = Rng(seed);
    let junk = garbage(&mut rng);
    let during = Load::spawn(
        t.client_addr,
        &["--rate", "1000", "--size", "700", "--duration", "3"],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let relay = t.relays.first().expect("relay");
    let mut dests = vec![t.server_addr];
    dests.extend(&t.bridge_addrs);
    dests.push(relay.addr);
    for (i, d) in junk.iter().enumerate() {
        for to in &dests {
            let _ = sock.send_to(d, to);
        }
        relay.inject_to_client(d);
        relay.inject_to_server(d);
        // The app port takes any datagram; these travel the tunnel to the echo and back.
        if i % 4 == 0 {
            let _ = sock.send_to(&d[..d.len().min(2000)], t.client_addr);
        }
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = sock.send_to(&[], t.client_addr);
    let _ = sock.send_to(&rng.bytes(65_507), t.client_addr); // too big to tunnel: dropped
    let r1 = during.finish();
    let r2 = load(
        t.client_addr,
        &["--rate", "1000", "--size", "700", "--duration", "2"],
    );
    println!("{}\n{}", summary("during", &r1), summary("after", &r2));
    let ctx = || {
        format!(
            "seed {seed}\n{}\n{}\n{}",
            summary("during", &r1),
            summary("after", &r2),
            t.diag()
        )
    };
    assert_clean(&r1, &ctx);
    assert_clean(&r2, &ctx);
    assert!(num(&r1, "loss_pct") < 2.0, "{}", ctx());
    assert!(num(&r2, "loss_pct") < 0.5, "{}", ctx());
    let dead = t.all_alive();
    assert!(dead.is_empty(), "seed {seed}: {}", dead.join("\n"));
    // The garbage really arrived, and was classified rather than ignored.
    t.client.terminate_cleanly();
    t.server.terminate_cleanly();
    for p in [&t.client, &t.server] {
        let bad = dropped_counter(p, "malformed") + dropped_counter(p, "checksum");
        assert!(
            bad > 0,
            "{} counted no malformed packets\n{}",
            p.name,
            p.tail(5)
        );
        println!("{}: {bad} malformed or checksum errors counted", p.name);
    }
}

/// 9. The whole topology on ::1.
#[test]
fn ipv6_topology() {
    let _g = serial();
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("NOTE: cannot bind [::1]; ipv6_topology skipped");
        return;
    }
    let t = Topo::start(V6, &[&[], &[], &[]], None);
    assert!(t.ip.is_ipv6() && t.server_addr.is_ipv6() && t.echo_addr.is_ipv6());
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "1000", "--duration", "2"],
    );
    println!("{}", summary("ipv6", &r));
    let ctx = || format!("{}\n{}", summary("ipv6", &r), t.diag());
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
}

/// Runs a tool that should exit by itself; kills it after 10 s.
fn run_briefly(bin: &str, args: &[&str]) -> Output {
    run_briefly_env(bin, args, &[])
}

/// Same with `env` added to an environment cleared of the key variables.
fn run_briefly_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(bin)
        .args(args)
        .env_remove("MPTUNNEL_KEY")
        .env_remove("MPTUNNEL_ENCRYPT")
        .env_remove("MPTUNNELENCRYPT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let watchdog = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                // SAFETY: our own child, not yet reaped (wait_with_output is still waiting).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    out
}

fn usage_error(bin: &str, args: &[&str]) -> String {
    let out = run_briefly(bin, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
    stderr
}

/// 10. Bad arguments and config files: exit 2 naming the value and where it is.
#[test]
fn cli_errors() {
    let _g = serial();
    let conf = TempFile::new(
        "bad.conf",
        "# bridges\n127.0.0.1 4001\nlocalhost 99999\n127.0.0.1 4003\n",
    );
    let conf_s = conf.0.to_str().expect("utf-8");
    let err = usage_error(CLIENT, &["127.0.0.1:0", conf_s]);
    assert!(err.contains(&format!("{conf_s}:3")), "{err}");
    assert!(err.contains("99999"), "{err}");

    let missing =
        std::env::temp_dir().join(format!("mptunnel-e2e-{}-missing.conf", std::process::id()));
    let missing = missing.to_str().expect("utf-8");
    let err = usage_error(CLIENT, &["127.0.0.1:0", missing]);
    assert!(err.contains(missing), "{err}");

    let err = usage_error(SERVER, &["2000", "localhost", "notaport"]);
    assert!(err.contains("notaport"), "{err}");

    let out = run_briefly(CLIENT, &["--help"]);
    assert!(out.status.success(), "mpclient --help: {}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONFIG_FILE"));
    for bin in [CLIENT, SERVER] {
        let out = run_briefly(bin, &["--version"]);
        assert!(out.status.success(), "{bin} --version: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(env!("CARGO_PKG_VERSION")),
            "{bin} --version: {text}"
        );
    }
}

/// 11. SIGTERM stops both ends cleanly; the client's CLOSE removes its sessions on the server.
#[test]
fn clean_shutdown_on_sigterm() {
    let _g = serial();
    let mut t = Topo::start(V4, &[&[], &[], &[]], None);
    let r = load(t.client_addr, &["--rate", "1000", "--count", "300"]);
    let ctx = || format!("{}\n{}", summary("pre", &r), t.diag());
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
    t.client.terminate_cleanly();
    thread::sleep(Duration::from_millis(300));
    t.server.terminate_cleanly();
    let stopping = t.server.wait_for_line("stopping:", 0);
    assert!(
        stopping.contains("closing 0 sessions"),
        "the client's CLOSE did not remove its sessions: {stopping}\n{}",
        t.diag()
    );
}

// ---------------------------------------------------------------------------------------------
// Encryption (pre-shared key)

/// A fresh key from `mpclient genkey`, checked for its form (44 base64 characters + newline).
fn genkey() -> String {
    let out = run_briefly(CLIENT, &["genkey"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mpclient genkey: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let key = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline after the key: {stdout:?}"));
    assert_eq!(key.len(), 44, "{stdout:?}");
    assert!(
        key.ends_with('=')
            && key[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "not 32 bytes of standard base64: {stdout:?}"
    );
    key.to_string()
}

/// A key file with the given permission bits.
fn key_file(key: &str, mode: u32) -> TempFile {
    use std::os::unix::fs::PermissionsExt;
    let f = TempFile::new("mptunnel.key", &format!("{key}\n"));
    fs::set_permissions(&f.0, fs::Permissions::from_mode(mode)).expect("chmod key file");
    f
}

/// `local in X / out Y datagrams` of the last stats line of `p`: (X, Y).
fn local_counters(p: &Proc) -> (u64, u64) {
    let lines = p.lines();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("local in "))
        .unwrap_or_else(|| panic!("no stats line\n{}", p.tail(20)));
    let rest = line.split("local in ").nth(1).unwrap_or_default();
    let parsed = rest.split_once(" / out ").and_then(|(a, b)| {
        let b = b.split_whitespace().next()?;
        Some((a.trim().parse().ok()?, b.parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("no local counters in {line:?}"))
}

/// 12. The seed's sample, sealed with a key file on both ends: as clean as without.
#[test]
fn encrypted_seed_topology() {
    let _g = serial();
    let kf = key_file(&genkey(), 0o600);
    let end = End::key_file(&kf);
    let t = Topo::with(
        V4,
        Setup {
            bridges: &[&[], &[], &[]],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    let args = [
        "--rate",
        "5000",
        "--size",
        "1200",
        "--duration",
        "3",
        "--label",
        "sealed",
    ];
    let r = load(t.client_addr, &args);
    println!("{}", summary("sealed", &r));
    let ctx = || format!("{}\n{}", summary("sealed", &r), t.diag());
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "send_errors"), 0.0, "{}", ctx());
    assert!(num(&r, "loss_pct") < 0.5, "{}", ctx());
    let warned: Vec<String> = [&t.client, &t.server]
        .iter()
        .flat_map(|p| p.lines())
        .filter(|l| l.contains("chmod") || l.contains("fail authentication"))
        .collect();
    assert!(warned.is_empty(), "unexpected warnings: {warned:?}");
}

/// 13. Three 30 %-loss bridges, sealed (the key from MPTUNNEL_KEY this time): still the
///     product, 1 - (1 - 0.3^3)^2 = 5.33 %.
#[test]
fn encrypted_lossy_product() {
    let _g = serial();
    let end = End::key_env(&genkey());
    let t = Topo::with(
        V4,
        Setup {
            bridges: &[
                &["--loss", "30", "--seed", "44"],
                &["--loss", "30", "--seed", "55"],
                &["--loss", "30", "--seed", "66"],
            ],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    // A fresh session: its admission (a challenge over lossy paths) is part of the run.
    let bind = format!("127.0.0.1:{}", free_port());
    let r = load(
        t.client_addr,
        &[
            "--bind",
            &bind,
            "--rate",
            "3000",
            "--size",
            "200",
            "--duration",
            "5",
        ],
    );
    let ctx = || format!("{}\n{}", summary("s-lossy", &r), t.diag());
    println!("{}", summary("s-lossy", &r));
    assert_clean(&r, &ctx);
    assert_eq!(num(&r, "sent"), 15_000.0, "{}", ctx());
    let expected = 100.0 * (1.0 - (1.0 - 0.3f64.powi(3)).powi(2));
    let loss = num(&r, "loss_pct");
    assert!(
        (loss - expected).abs() <= 1.0,
        "loss {loss:.3}% vs expected {expected:.2}%\n{}",
        ctx()
    );
    let downs: Vec<String> = t
        .client
        .lines()
        .into_iter()
        .filter(|l| l.contains(" is down"))
        .collect();
    assert!(downs.is_empty(), "paths went down: {downs:?}");
}

/// One wrong-key case of test 14: nothing gets through, and mpserver says why.
fn wrong_key_case(label: &str, server: End, client: End) {
    let stats = ["--stats-interval", "1"];
    let mut t = Topo::with(
        V4,
        Setup {
            bridges: &[&[], &[]],
            server: server.with(&stats),
            client: client.with(&stats),
            no_wait: true,
            ..Setup::default()
        },
    );
    let r = load(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            "1",
            "--wait",
            "0.5",
        ],
    );
    // A stats line written after the whole load was sent.
    let skip = t.server.lines().len();
    t.server.wait_for_line("dropped:", skip);
    let auth = dropped_counter(&t.server, "auth");
    let (net_in, to_target) = local_counters(&t.server);
    println!(
        "{}; mpserver: {auth} auth failures, {to_target} datagrams to the target",
        summary(label, &r)
    );
    let ctx = || format!("{label}: {}\n{}", summary(label, &r), t.diag());
    assert!(num(&r, "sent") >= 1000.0, "{}", ctx());
    assert_eq!(num(&r, "received"), 0.0, "{}", ctx());
    assert_eq!(
        to_target,
        0,
        "datagrams reached the echo service\n{}",
        ctx()
    );
    assert_eq!(net_in, 0, "{}", ctx());
    // Every data packet and probe of the client failed, on both paths.
    assert!(auth as f64 >= num(&r, "sent"), "{}", ctx());
    assert!(
        t.server
            .lines()
            .iter()
            .any(|l| l.contains("fail authentication")),
        "no 'fail authentication' warning\n{}",
        ctx()
    );
}

/// 14. A peer with another key, or none, gets nothing through; mpserver counts and warns.
#[test]
fn wrong_key_gets_nothing() {
    let _g = serial();
    let (a, b) = (genkey(), genkey());
    assert_ne!(a, b);
    let (fa, fb) = (key_file(&a, 0o600), key_file(&b, 0o600));
    wrong_key_case("2-keys", End::key_file(&fa), End::key_file(&fb));
    wrong_key_case("srv-key", End::key_file(&fa), End::default());
    wrong_key_case("cli-key", End::default(), End::key_env(&b));
}

/// 15. Sealed, over a relay replaying everything at +300 ms and +2 s and a relay sending a
///     one-bit-flipped copy ahead of every datagram: no replay or flipped copy gets through,
///     and none of them shadows the intact copy behind it.
#[test]
fn encrypted_replays_and_flips_never_get_through() {
    let _g = serial();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("flip seed {seed}");
    let kf = key_file(&genkey(), 0o600);
    let end = End::key_file(&kf);
    let mut t = Topo::with(
        V4,
        Setup {
            relays: vec![
                RelayKind::Replay(vec![Duration::from_millis(300), Duration::from_secs(2)]),
                RelayKind::Flip(seed),
            ],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    let r = load(
        t.client_addr,
        &["--rate", "1000", "--size", "500", "--duration", "4"],
    );
    let replayed = t.relays[0].replayed.load(Ordering::Relaxed);
    let flipped = t.relays[1].replayed.load(Ordering::Relaxed);
    let plain: u64 = t
        .relays
        .iter()
        .map(|r| r.plain.load(Ordering::Relaxed))
        .sum();
    println!(
        "{}; replayed {replayed}, flipped {flipped}, unsealed {plain}",
        summary("rep+flip", &r)
    );
    let ctx = || {
        format!(
            "seed {seed}\n{}\nreplayed {replayed} flipped {flipped}\n{}",
            summary("rep+flip", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    assert!(num(&r, "loss_pct") < 1.0, "{}", ctx());
    assert!(replayed as f64 > 1.5 * num(&r, "sent"), "{}", ctx());
    assert!(flipped as f64 > 2.0 * num(&r, "sent"), "{}", ctx());
    assert_eq!(plain, 0, "unsealed packets on the wire\n{}", ctx());
    // The flipped copies arrived and were refused, on both ends.
    let sent = num(&r, "sent");
    t.client.terminate_cleanly();
    t.server.terminate_cleanly();
    for p in [&t.client, &t.server] {
        let bad = dropped_counter(p, "auth") + dropped_counter(p, "malformed");
        println!("{}: {bad} auth failures or malformed", p.name);
        // A flipped copy of a sequence already accepted is refused by the window before it
        // is verified (counted as a duplicate), unless the flip hit the header.
        assert!(
            bad as f64 >= 0.02 * sent,
            "seed {seed}: {} refused only {bad} flipped copies\n{}",
            p.name,
            p.tail(10)
        );
    }
}

/// 16. Sealed: mpserver killed and restarted, then mpclient: each restart costs at most its
///     downtime plus 0.5 s of traffic (the new epochs are challenged), and nothing is
///     duplicated.
#[test]
fn encrypted_restart_server_and_client() {
    let _g = serial();
    let kf = key_file(&genkey(), 0o600);
    let end = End::key_file(&kf);
    let mut t = Topo::with(
        V4,
        Setup {
            bridges: &[&[], &[], &[]],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    let args = [
        "--rate",
        "1000",
        "--size",
        "500",
        "--duration",
        "4",
        "--wait",
        "1",
    ];
    for who in ["server", "client"] {
        let run = Load::spawn(t.client_addr, &args);
        thread::sleep(Duration::from_millis(1300));
        let downtime = if who == "server" {
            t.restart_server(libc::SIGKILL, Duration::from_millis(200))
        } else {
            t.restart_client(libc::SIGKILL, Duration::from_millis(200))
        };
        let r = run.finish();
        let lost = lost(&r);
        let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
        let label = format!("s-{who}");
        println!(
            "{}; {who} down {downtime:.2?}, {lost} lost",
            summary(&label, &r)
        );
        let ctx = || {
            format!(
                "{}\ndowntime {downtime:?}\n{}",
                summary(&label, &r),
                t.diag()
            )
        };
        assert_clean(&r, &ctx);
        assert!(
            lost <= allowed,
            "{lost} lost, more than {allowed} the downtime explains\n{}",
            ctx()
        );
    }
    let after = load(t.client_addr, &["--rate", "1000", "--duration", "1"]);
    println!("{}", summary("s-after", &after));
    let ctx = || format!("{}\n{}", summary("s-after", &after), t.diag());
    assert_clean(&after, &ctx);
    assert!(num(&after, "loss_pct") < 1.0, "{}", ctx());
}

/// 17. MPTUNNEL_ENCRYPT=1 without a key is a usage error that says how to make one.
#[test]
fn encrypt_switch_without_key_fails() {
    let _g = serial();
    for var in ["MPTUNNEL_ENCRYPT", "MPTUNNELENCRYPT"] {
        let out = run_briefly_env(SERVER, &["2000", "localhost", "6666"], &[(var, "1")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}=1 mpserver: {stderr}");
        assert!(stderr.contains("genkey"), "{stderr}");
    }
    let conf = client_conf(&["127.0.0.1:9".parse().expect("addr")]);
    let conf_s = conf.0.to_str().expect("utf-8");
    let out = run_briefly_env(
        CLIENT,
        &["127.0.0.1:0", conf_s],
        &[("MPTUNNEL_ENCRYPT", "1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "mpclient: {stderr}");
    assert!(stderr.contains("genkey"), "{stderr}");
}

/// 18. `genkey` prints a new key each time; a key file others can read is warned about.
#[test]
fn genkey_prints_a_key() {
    let _g = serial();
    let (a, b) = (genkey(), genkey());
    assert_ne!(a, b, "two runs of genkey printed the same key");
    let out = run_briefly(SERVER, &["genkey"]);
    assert!(out.status.success(), "mpserver genkey: {}", out.status);
    assert_eq!(
        out.stdout.len(),
        45,
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    let conf = client_conf(&["127.0.0.1:9".parse().expect("addr")]);
    let conf_s = conf.0.to_str().expect("utf-8");
    let open = key_file(&a, 0o644);
    let open_s = open.0.to_str().expect("utf-8");
    // The switch is satisfied by the key, which is read (and warned about) before listening.
    let mut client = Proc::spawn_env(
        "mpclient",
        CLIENT,
        &["127.0.0.1:0", conf_s, "--key-file", open_s],
        &[("MPTUNNEL_ENCRYPT".into(), "1".into())],
    );
    thread::sleep(Duration::from_millis(300));
    let warning = client.wait_for_line("chmod 600", 0);
    assert!(
        warning.contains("warn") && warning.contains(open_s),
        "{warning}"
    );
    assert!(client.alive(), "{}", client.tail(10));
    client.terminate_cleanly();

    let closed = key_file(&b, 0o600);
    let closed_s = closed.0.to_str().expect("utf-8");
    let (mut client, _) = start(
        "mpclient",
        CLIENT,
        &["127.0.0.1:0", conf_s, "--key-file", closed_s],
    );
    let chmod: Vec<String> = client
        .lines()
        .into_iter()
        .filter(|l| l.contains("chmod"))
        .collect();
    assert!(chmod.is_empty(), "warned about a 0600 key file: {chmod:?}");
    client.terminate_cleanly();
}

/// 13b. Sealed, a new session's start over lossy paths costs no more than the paths' loss:
///      mpserver challenges an unknown session on every path its copies come by, retries
///      every 50 ms, and holds what arrives meanwhile.
#[test]
fn encrypted_lossy_new_sessions_start_cleanly() {
    let _g = serial();
    let end = End::key_env(&genkey());
    let t = Topo::with(
        V4,
        Setup {
            bridges: &[&["--loss", "30"], &["--loss", "30"], &["--loss", "30"]],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    let mut runs = Vec::new();
    for _ in 0..8 {
        // Each run is a new app port, so a new session.
        let r = load(
            t.client_addr,
            &[
                "--rate",
                "2000",
                "--size",
                "200",
                "--duration",
                "1",
                "--wait",
                "0.4",
            ],
        );
        println!("{}", summary("new-sess", &r));
        runs.push(r);
    }
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| num(r, "loss_pct") > 10.0)
        .map(|r| summary("new-sess", r))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} new sessions lost more than 10 % (expected 5.33 %):\n{}",
        bad.len(),
        runs.len(),
        bad.join("\n")
    );
}

/// 16b. Sealed, after mpserver restarts, replays of client packets that the previous instance
///      already delivered are not delivered again: the client answers the new instance's
///      challenge with the first sequence it sent after that instance started.
#[test]
fn encrypted_replays_across_server_restart() {
    let _g = serial();
    let kf = key_file(&genkey(), 0o600);
    let end = End::key_file(&kf);
    let mut t = Topo::with(
        V4,
        Setup {
            bridges: &[&[]],
            relays: vec![RelayKind::Replay(vec![
                Duration::from_millis(300),
                Duration::from_secs(2),
            ])],
            server: end.clone(),
            client: end,
            ..Setup::default()
        },
    );
    let run = Load::spawn(
        t.client_addr,
        &[
            "--rate",
            "1000",
            "--size",
            "500",
            "--duration",
            "4",
            "--wait",
            "1",
        ],
    );
    thread::sleep(Duration::from_millis(1500));
    let downtime = t.restart_server(libc::SIGKILL, Duration::from_millis(100));
    let r = run.finish();
    let replayed = t.relays[0].replayed.load(Ordering::Relaxed);
    let lost = lost(&r);
    println!(
        "{}; server down {downtime:.2?}, relay replayed {replayed}, {lost} lost",
        summary("rep-rst", &r)
    );
    let ctx = || {
        format!(
            "{}\nreplayed {replayed}\n{}",
            summary("rep-rst", &r),
            t.diag()
        )
    };
    assert_clean(&r, &ctx);
    // The replays really came (across the restart), and the tunnel carried the traffic
    // apart from what the downtime explains.
    assert!(replayed as f64 > num(&r, "sent"), "{}", ctx());
    let allowed = 1000.0 * (downtime.as_secs_f64() + 0.5);
    assert!(
        lost <= allowed,
        "{lost} lost, more than {allowed} the downtime explains\n{}",
        ctx()
    );
}

// ---------------------------------------------------------------------------------------------
// The seed's performance scenario in network namespaces

/// A network namespace with a veth pair to this one; deleted (with the pair) when dropped.
struct NetNs {
    name: String,
    /// This side of the veth pair.
    veth: String,
}

/// Runs `ip ARGS`; Err with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// `remote` (the namespace's address) and `local` (ours) on a /30 between them.
    fn create(local: &str, remote: &str) -> Result<NetNs, String> {
        let id = std::process::id() % 100_000;
        let ns = NetNs {
            name: format!("mpt-e2e-{id}"),
            veth: format!("mpt{id}a"),
        };
        let peer = format!("mpt{id}b");
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{local}/30"), "dev", &ns.veth])?;
        ip(&["link", "set", &ns.veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{remote}/30"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.veth, if up { "up" } else { "down" }]).expect("ip link set");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.veth]);
    }
}

/// 19. The seed's performance scenario, on real interfaces: three bridges in a
///     "remote" network namespace reached over a veth pair, a fourth bridge local. Cutting
///     the veth link mid-stream takes the three remote paths away; the traffic carries on
///     over the local one without losing a datagram, the client reports the three paths down,
///     and they come back up when the link does. Skipped (with a message) where network
///     namespaces cannot be created (not root, no `ip`).
#[test]
fn netns_remote_bridges_cut_mid_stream() {
    let _g = serial();
    let (local_ip, remote_ip) = ("10.213.47.1", "10.213.47.2");
    let ns = match NetNs::create(local_ip, remote_ip) {
        Ok(ns) => ns,
        Err(e) => {
            println!("SKIPPED: cannot create a network namespace here: {e}");
            return;
        }
    };
    let (_echo, echo_addr) = start_echo(V4);
    let (server, server_addr) = start_server("0.0.0.0:0", echo_addr, &End::default());
    let upstream = |ip: &str| format!("{ip}:{}", server_addr.port());
    let mut remote = Vec::new();
    let mut paths = Vec::new();
    for i in 1..=3 {
        let listen = format!("{remote_ip}:0");
        let up = upstream(local_ip);
        let args = ["netns", "exec", &ns.name, BRIDGE, &listen, &up];
        let (p, addr) = start(&format!("remote-bridge{i}"), "ip", &args);
        remote.push(p);
        paths.push(addr);
    }
    let (_local, local_addr) = start_bridge(
        "local-bridge",
        V4,
        upstream("127.0.0.1").parse().unwrap(),
        &[],
    );
    paths.push(local_addr);
    let conf = client_conf(&paths);
    let fast = End::default().with(&["--probe-interval", "100", "--down-after", "600"]);
    let (mut client, client_addr) = start_client("127.0.0.1:0", &conf.0, &fast);
    let diag = || format!("{}\n{}", client.tail(20), server.tail(10));
    wait_roundtrip(client_addr, &diag);

    let before = client.lines().len();
    let run = Load::spawn(
        client_addr,
        &["--rate", "2000", "--size", "1000", "--duration", "5"],
    );
    thread::sleep(Duration::from_millis(1500));
    ns.set_link(false);
    for addr in &paths[..3] {
        // "(was up)" or "(was lossy)": the path carried traffic before the cut.
        client.wait_for_line(&format!("path {addr} is down (was "), before);
    }
    thread::sleep(Duration::from_millis(1000));
    ns.set_link(true);
    for addr in &paths[..3] {
        client.wait_for_line(&format!("path {addr} is up again"), before);
    }
    let r = run.finish();
    let ctx = || format!("{}\n{}", summary("cut", &r), client.tail(20));
    println!("{}", summary("cut", &r));
    assert_clean(&r, &ctx);
    assert_eq!(
        lost(&r),
        0.0,
        "datagrams lost while the local path stayed up\n{}",
        ctx()
    );
    assert!(num(&r, "sent") >= 9000.0, "{}", ctx());
}
