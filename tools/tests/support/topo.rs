//! The seed's topology on loopback: echo <- mpserver <- bridges <- mpclient, and its parts.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{any_port, client_conf, wait_roundtrip, TempFile};
use super::proc::{run_briefly, start, start_env, Proc};
use super::relay::{Relay, RelayKind};
use super::{BRIDGE, CLIENT, PERF, SERVER};

/// How often mpclient and mpserver started here print a JSON stats report (`--stats-json`).
pub const REPORT_EVERY: &str = "0.5";

pub fn start_echo(ip: IpAddr) -> (Proc, SocketAddr) {
    start("echo", PERF, &["echo", &any_port(ip)])
}

/// Extra arguments and environment of mpclient or mpserver (a key, timing options).
#[derive(Clone, Debug, Default)]
pub struct End {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl End {
    /// `--key-file FILE`.
    pub fn key_file(f: &TempFile) -> End {
        End::default().with(&["--key-file", f.path()])
    }

    /// `MPTUNNEL_KEY=<key>` in the environment.
    pub fn key_env(key: &str) -> End {
        End {
            args: vec![],
            env: vec![("MPTUNNEL_KEY".into(), key.into())],
        }
    }

    pub fn with(mut self, args: &[&str]) -> End {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// mpclient or mpserver with `args`, then `end`, reporting JSON stats twice a second.
fn start_end(name: &str, bin: &str, args: &[&str], end: &End) -> (Proc, SocketAddr) {
    let mut all = args.to_vec();
    all.extend(["--stats-json", "--stats-interval", REPORT_EVERY]);
    all.extend(end.args.iter().map(String::as_str));
    start_env(name, bin, &all, &end.env)
}

pub fn start_server(listen: &str, target: SocketAddr, end: &End) -> (Proc, SocketAddr) {
    let target = target.to_string();
    start_end(
        "mpserver",
        SERVER,
        &["--listen", listen, "--target", &target],
        end,
    )
}

pub fn start_client(listen: &str, conf: &Path, end: &End) -> (Proc, SocketAddr) {
    let conf = conf.to_str().expect("utf-8 temp path");
    start_end("mpclient", CLIENT, &["--listen", listen, conf], end)
}

pub fn start_bridge(
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

/// A fresh key from `mpclient genkey`, checked for its form (44 base64 characters + newline).
pub fn genkey() -> String {
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
pub fn key_file(key: &str, mode: u32) -> TempFile {
    use std::os::unix::fs::PermissionsExt;
    let f = TempFile::new("mptunnel.key", &format!("{key}\n"));
    fs::set_permissions(&f.0, fs::Permissions::from_mode(mode)).expect("chmod key file");
    f
}

/// How to build a [`Topo`] beyond the plain one.
#[derive(Default)]
pub struct Setup<'a> {
    /// One mpbridge per entry (its extra arguments).
    pub bridges: &'a [&'a [&'a str]],
    /// In-test relays, after the bridges in the client's config.
    pub relays: Vec<RelayKind>,
    pub server: End,
    pub client: End,
    /// Do not wait for a probe to come back through the tunnel (it is not meant to).
    pub no_wait: bool,
}

/// echo <- mpserver <- bridges (and maybe in-test relays) <- mpclient, all on `ip`.
/// Fields drop (and so die) client first.
pub struct Topo {
    pub ip: IpAddr,
    pub client: Proc,
    pub client_addr: SocketAddr,
    pub client_end: End,
    pub relays: Vec<Relay>,
    pub bridges: Vec<Proc>,
    pub bridge_addrs: Vec<SocketAddr>,
    pub server: Proc,
    pub server_addr: SocketAddr,
    pub server_end: End,
    pub echo: Proc,
    pub echo_addr: SocketAddr,
    pub conf: TempFile,
}

impl Topo {
    /// One mpbridge per entry of `bridges` (its extra arguments), then the in-test relay if
    /// `relay` is given (its replay delays).
    pub fn start(ip: IpAddr, bridges: &[&[&str]], relay: Option<&[Duration]>) -> Topo {
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

    pub fn with(ip: IpAddr, setup: Setup) -> Topo {
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
    pub fn diag(&self) -> String {
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
    pub fn restart_server(&mut self, sig: libc::c_int, pause: Duration) -> Duration {
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
    pub fn restart_client(&mut self, sig: libc::c_int, pause: Duration) -> Duration {
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

    /// The processes that died, with their last words.
    pub fn dead(&mut self) -> Vec<String> {
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

/// No path of this mpclient went down so far (its next JSON report).
pub fn assert_no_path_went_down(client: &mut Proc) {
    let r = client.next_report();
    let paths = r["paths"].as_array().expect("paths");
    assert!(!paths.is_empty(), "{r}");
    for p in paths {
        assert_eq!(super::num(p, "downs"), 0.0, "path went down: {p}");
    }
}
